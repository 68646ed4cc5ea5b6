/*
 * transport_cuda_ipc.c: GPU memory between processes of one node through
 * CUDA IPC handles, plus the CUDA helpers other transports need (dma-buf
 * export for GPUDirect RDMA, allocation ranges).
 *
 * A GPU region is registered by exporting an IPC handle of the allocation
 * that contains it (cudaIpcGetMemHandle on the base found with
 * cuMemGetAddressRange); the handle, the allocation's base and the device
 * travel in the descriptor's cuda_ipc key. The initiator opens the handle
 * once per peer allocation (cudaIpcOpenMemHandle, lazily enabling peer
 * access) after the core's attachment check, then every op is a
 * cudaMemcpyAsync on the transport's stream (device-to-device over NVLink
 * or PCIe; a host-memory local side works too: cudaMemcpyDefault). A host
 * function enqueued after a request's copies signals its completion through
 * an eventfd in the fabric loop, so nothing polls.
 *
 * Driver entry points (cuMemGetAddressRange, cuMemGetHandleForAddressRange)
 * come from cudaGetDriverEntryPointByVersion, so binaries link only cudart
 * and start on hosts without a GPU driver. Any cudaGetDeviceCount error
 * counts as zero GPUs: the transport reports why and stays closed.
 * Not run on a GPU in this project's CI; see docs/fabric.md.
 */
#include "kvf_features.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"
#include "common/kvf_log.h"
#include "fabric/fabric_int.h"

#if KVF_HAVE_CUDA

#include <cuda.h>
#include <cuda_runtime.h>

typedef CUresult (*pfn_get_range)(CUdeviceptr *base, size_t *size, CUdeviceptr dptr);
typedef CUresult (*pfn_get_handle)(void *handle, CUdeviceptr dptr, size_t size, CUmemRangeHandleType type,
				   unsigned long long flags);

static void *driver_sym(const char *name)
{
	void *fn = NULL;
	enum cudaDriverEntryPointQueryResult q;
	if (cudaGetDriverEntryPointByVersion(name, &fn, 12000, cudaEnableDefault, &q) != cudaSuccess ||
	    q != cudaDriverEntryPointSuccess)
		return NULL;
	return fn;
}

int fab_cuda_alloc_range(const void *p, uint64_t *base, uint64_t *len)
{
	pfn_get_range fn = (pfn_get_range)driver_sym("cuMemGetAddressRange");
	CUdeviceptr b;
	size_t n;
	if (!fn)
		return kvf_errf(KVF_E_CUDA, "cuMemGetAddressRange unavailable (no CUDA driver?)");
	CUresult rc = fn(&b, &n, (CUdeviceptr)(uintptr_t)p);
	if (rc != CUDA_SUCCESS)
		return kvf_errf(KVF_E_CUDA, "cuMemGetAddressRange: error %d", (int)rc);
	*base = (uint64_t)b;
	*len = n;
	return 0;
}

int fab_cuda_dmabuf_fd(void *base, size_t len, int *fd)
{
	pfn_get_handle fn = (pfn_get_handle)driver_sym("cuMemGetHandleForAddressRange");
	if (!fn)
		return kvf_errf(KVF_E_UNSUPPORTED, "cuMemGetHandleForAddressRange unavailable (driver too old?)");
	int h = -1;
	CUresult rc = fn(&h, (CUdeviceptr)(uintptr_t)base, len, CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD, 0);
	if (rc != CUDA_SUCCESS || h < 0)
		return kvf_errf(KVF_E_CUDA, "cuMemGetHandleForAddressRange(dma-buf): error %d", (int)rc);
	*fd = h;
	return 0;
}

#define CI_KEYX (sizeof(cudaIpcMemHandle_t) + 8 + 8 + 4)

/* A request's completion marker, handed to a CUDA host function. */
struct ci_tp;
struct ci_done {
	struct ci_done *next;
	struct ci_tp *tp;
	struct fab_req *r; /* NULL: orphaned */
	uint64_t bytes;
};

struct ci_open {
	struct ci_open *next;
	uint8_t handle[sizeof(cudaIpcMemHandle_t)];
	uint64_t rbase;
	void *ptr;
};

struct ci_peer {
	struct ci_open *opens;
};

struct ci_tp {
	kvf_fabric *f;
	int dev;
	cudaStream_t stream;
	int efd;
	_Atomic(struct ci_done *) done; /* pushed by CUDA's callback thread */
	uint32_t inflight;
};

static void CUDART_CB host_done(void *ud)
{
	struct ci_done *d = ud;
	struct ci_tp *tp = d->tp;
	struct ci_done *head = atomic_load(&tp->done);
	do {
		d->next = head;
	} while (!atomic_compare_exchange_weak(&tp->done, &head, d));
	uint64_t one = 1;
	ssize_t w = write(tp->efd, &one, sizeof(one));
	(void)w;
}

static void on_efd(kvf_loop *loop, int fd, unsigned ev, void *ud)
{
	struct ci_tp *tp = ud;
	uint64_t v;
	ssize_t rd = read(fd, &v, sizeof(v));
	(void)rd;
	struct ci_done *l = atomic_exchange(&tp->done, NULL);
	while (l) {
		struct ci_done *nx = l->next;
		tp->inflight--;
		if (l->r) {
			cudaError_t e = cudaStreamQuery(tp->stream);
			int err = e == cudaSuccess || e == cudaErrorNotReady ? 0 : KVF_E_CUDA;
			fab_peer_progress(l->r->peer);
			fab_req_unit_done(l->r, err ? 0 : l->bytes, err, err ? cudaGetErrorString(e) : NULL);
		}
		kvf_free(l);
		l = nx;
	}
}

static int ci_open(kvf_fabric *f, void **out)
{
	int n = 0;
	cudaError_t e = cudaGetDeviceCount(&n);
	if (e != cudaSuccess)
		return kvf_errf(KVF_E_NODEV, "no GPU (cudaGetDeviceCount: %s)", cudaGetErrorString(e));
	if (n == 0)
		return kvf_errf(KVF_E_NODEV, "no GPU (cudaGetDeviceCount found none)");
	struct ci_tp *tp = kvf_calloc(1, sizeof(*tp));
	if (!tp)
		return kvf_errf(KVF_E_NOMEM, "cuda_ipc: open");
	tp->f = f;
	int64_t want = fab_opts(f)->cuda_device;
	if (want >= 0) {
		if ((e = cudaSetDevice((int)want)) != cudaSuccess) {
			kvf_free(tp);
			return kvf_errf(KVF_E_NODEV, "cudaSetDevice(%lld): %s", (long long)want, cudaGetErrorString(e));
		}
	}
	cudaGetDevice(&tp->dev);
	if ((e = cudaStreamCreateWithFlags(&tp->stream, cudaStreamNonBlocking)) != cudaSuccess) {
		kvf_free(tp);
		return kvf_errf(KVF_E_CUDA, "cudaStreamCreate: %s", cudaGetErrorString(e));
	}
	tp->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (tp->efd < 0 || kvf_loop_add_fd(fab_loop(f), tp->efd, KVF_EV_READ, on_efd, tp) < 0) {
		if (tp->efd >= 0)
			close(tp->efd);
		cudaStreamDestroy(tp->stream);
		kvf_free(tp);
		return kvf_errf(KVF_E_IO, "cuda_ipc: eventfd");
	}
	KVF_INFO(FAB_LOG, "cuda_ipc open", "devices=%d device=%d", n, tp->dev);
	*out = tp;
	return 0;
}

static void ci_close(void *v)
{
	struct ci_tp *tp = v;
	cudaStreamSynchronize(tp->stream); /* host functions run before we go */
	on_efd(fab_loop(tp->f), tp->efd, KVF_EV_READ, tp);
	kvf_loop_del_fd(fab_loop(tp->f), tp->efd);
	close(tp->efd);
	cudaStreamDestroy(tp->stream);
	kvf_free(tp);
}

static void ci_export_addr(void *v, kvf_wire_writer *w)
{
	struct ci_tp *tp = v;
	kvf_wire_writer in;
	kvf_wire_writer_init(&in, FAB_ADDR_MAX);
	kvf_wire_put_u32(&in, (uint32_t)tp->dev);
	kvf_wire_put_blob(w, in.buf, in.len);
	kvf_wire_writer_free(&in);
}

static int ci_reg(void *v, fab_region *r)
{
	struct ci_tp *tp = v;
	if (r->mem != KVF_FABRIC_MEM_CUDA)
		return 0;
	uint64_t base, len;
	int rc = fab_cuda_alloc_range(r->base, &base, &len);
	if (rc < 0)
		return rc;
	cudaIpcMemHandle_t h;
	cudaError_t e = cudaIpcGetMemHandle(&h, (void *)(uintptr_t)base);
	if (e != cudaSuccess)
		return kvf_errf(KVF_E_CUDA, "cudaIpcGetMemHandle: %s", cudaGetErrorString(e));
	struct fab_tkey *k = &r->key[KVF_FABRIC_CUDA_IPC];
	k->present = 1;
	k->key = base;
	memcpy(k->x, &h, sizeof(h));
	for (int i = 0; i < 8; i++) {
		k->x[sizeof(h) + i] = (uint8_t)(base >> (8 * i));
		k->x[sizeof(h) + 8 + i] = (uint8_t)(len >> (8 * i));
	}
	for (int i = 0; i < 4; i++)
		k->x[sizeof(h) + 16 + i] = (uint8_t)((uint32_t)tp->dev >> (8 * i));
	k->xlen = (uint16_t)CI_KEYX;
	return 0;
}

static int ci_reachable(void *v, const kvf_fabric_rdesc *d, int lmem)
{
	return d->mem == KVF_FABRIC_MEM_CUDA && d->addr[KVF_FABRIC_CUDA_IPC].len &&
	       d->key[KVF_FABRIC_CUDA_IPC].present && d->key[KVF_FABRIC_CUDA_IPC].xlen == CI_KEYX &&
	       d->host.boot == fab_hostid_self()->boot;
}

static void *ci_map(struct ci_tp *tp, struct fab_peer *p, const kvf_fabric_rdesc *d, char *why, size_t cap)
{
	struct ci_peer *cp = p->tstate[KVF_FABRIC_CUDA_IPC];
	if (!cp) {
		if (!(cp = kvf_calloc(1, sizeof(*cp)))) {
			snprintf(why, cap, "cuda_ipc: out of memory");
			return NULL;
		}
		p->tstate[KVF_FABRIC_CUDA_IPC] = cp;
	}
	const uint8_t *x = d->key[KVF_FABRIC_CUDA_IPC].x;
	for (struct ci_open *o = cp->opens; o; o = o->next)
		if (!memcmp(o->handle, x, sizeof(o->handle)))
			return o->ptr;
	struct ci_open *o = kvf_calloc(1, sizeof(*o));
	if (!o) {
		snprintf(why, cap, "cuda_ipc: out of memory");
		return NULL;
	}
	memcpy(o->handle, x, sizeof(o->handle));
	for (int i = 7; i >= 0; i--)
		o->rbase = (o->rbase << 8) | x[sizeof(o->handle) + i];
	cudaIpcMemHandle_t h;
	memcpy(&h, x, sizeof(h));
	cudaError_t e = cudaIpcOpenMemHandle(&o->ptr, h, cudaIpcMemLazyEnablePeerAccess);
	if (e != cudaSuccess) {
		snprintf(why, cap, "cudaIpcOpenMemHandle: %s", cudaGetErrorString(e));
		kvf_free(o);
		return NULL;
	}
	o->next = cp->opens;
	cp->opens = o;
	return o->ptr;
}

static void ci_submit(void *v, struct fab_peer *p, struct fab_req *r)
{
	struct ci_tp *tp = v;
	char why[160];
	uint8_t *rptr = ci_map(tp, p, r->rd, why, sizeof(why));
	if (!rptr) {
		fab_req_stop(r, KVF_E_CUDA, why);
		return;
	}
	uint64_t rbase = r->rd->key[KVF_FABRIC_CUDA_IPC].key, bytes = 0;
	for (uint32_t i = 0; i < r->nops; i++) {
		const struct fab_op *op = &r->ops[i];
		uint8_t *remote = rptr + (op->raddr - rbase);
		cudaError_t e = r->opcode == FAB_OP_READ
					? cudaMemcpyAsync(op->local, remote, op->len, cudaMemcpyDefault, tp->stream)
					: cudaMemcpyAsync(remote, op->local, op->len, cudaMemcpyDefault, tp->stream);
		if (e != cudaSuccess) {
			snprintf(why, sizeof(why), "cudaMemcpyAsync: %s", cudaGetErrorString(e));
			if (i == 0) { /* nothing queued: fail now */
				fab_req_stop(r, KVF_E_CUDA, why);
				return;
			}
			fab_req_stop(r, KVF_E_CUDA, why); /* copies already queued finish below */
			break;
		}
		bytes += op->len;
	}
	struct ci_done *d = kvf_calloc(1, sizeof(*d));
	if (!d) {
		cudaStreamSynchronize(tp->stream);
		fab_req_stop(r, KVF_E_NOMEM, "cuda_ipc: out of memory");
		return;
	}
	d->r = r;
	d->bytes = bytes;
	d->tp = tp;
	fab_req_units_add(r, 1);
	cudaError_t e = cudaLaunchHostFunc(tp->stream, host_done, d);
	if (e != cudaSuccess) {
		kvf_free(d);
		cudaStreamSynchronize(tp->stream);
		fab_req_unit_done(r, 0, KVF_E_CUDA, cudaGetErrorString(e));
		fab_req_stop(r, KVF_E_CUDA, cudaGetErrorString(e));
		return;
	}
	tp->inflight++;
	fab_req_issued(r);
}

static void ci_cancel(void *v, struct fab_peer *p, struct fab_req *r)
{
	/* copies are queued on the stream at submit: nothing left to drop */
}

static void ci_peer_fail(void *v, struct fab_peer *p, int err, const char *detail)
{
	/* queued copies cannot be recalled from a CUDA stream; they complete
	 * (or report the driver's error) through their host functions */
}

static void ci_peer_free(void *v, struct fab_peer *p)
{
	struct ci_tp *tp = v;
	struct ci_peer *cp = p->tstate[KVF_FABRIC_CUDA_IPC];
	if (!cp)
		return;
	cudaStreamSynchronize(tp->stream);
	while (cp->opens) {
		struct ci_open *o = cp->opens;
		cp->opens = o->next;
		cudaIpcCloseMemHandle(o->ptr);
		kvf_free(o);
	}
	kvf_free(cp);
	p->tstate[KVF_FABRIC_CUDA_IPC] = NULL;
}

static void ci_peer_show(void *v, struct fab_peer *p, kvf_buf *out)
{
	struct ci_tp *tp = v;
	struct ci_peer *cp = p->tstate[KVF_FABRIC_CUDA_IPC];
	if (!cp)
		return;
	int n = 0;
	for (struct ci_open *o = cp->opens; o; o = o->next)
		n++;
	kvf_buf_printf(out, "cuda_ipc_handles=%d cuda_inflight=%u", n, tp->inflight);
}

const struct fab_transport fab_cuda_ipc_transport = {
	.name = "cuda_ipc",
	.kind = KVF_FABRIC_CUDA_IPC,
	.open = ci_open,
	.close = ci_close,
	.export_addr = ci_export_addr,
	.reg = ci_reg,
	.reachable = ci_reachable,
	.submit = ci_submit,
	.cancel = ci_cancel,
	.peer_fail = ci_peer_fail,
	.peer_free = ci_peer_free,
	.peer_show = ci_peer_show,
};

#else /* !KVF_HAVE_CUDA */

int fab_cuda_dmabuf_fd(void *base, size_t len, int *fd)
{
	return kvf_errf(KVF_E_UNSUPPORTED, "built without CUDA");
}

int fab_cuda_alloc_range(const void *p, uint64_t *base, uint64_t *len)
{
	return kvf_errf(KVF_E_UNSUPPORTED, "built without CUDA");
}

static int ci_open(kvf_fabric *f, void **out)
{
	return kvf_errf(KVF_E_UNSUPPORTED, "built without CUDA (CUDA=0, or nvcc not found)");
}

const struct fab_transport fab_cuda_ipc_transport = {
	.name = "cuda_ipc",
	.kind = KVF_FABRIC_CUDA_IPC,
	.open = ci_open,
};

#endif
