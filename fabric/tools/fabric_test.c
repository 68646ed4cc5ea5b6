/*
 * kvf-fabric-test: the fabric conformance suite's two-process driver.
 *
 *   kvf-fabric-test probe -t TRANSPORT
 *       exit 0 when the transport opens here, 3 with the reason otherwise
 *   kvf-fabric-test serve -t TRANSPORT -d DIR [-l LISTEN] [-m MiB] [--seed N]
 *       a target: registers a region (lower half a seeded pattern, upper
 *       half writable, a 4 KiB mailbox after it), writes descriptors for
 *       several block sizes to DIR, answers notifications by checking the
 *       data they follow and posting the verdict in the mailbox
 *   kvf-fabric-test run -t TRANSPORT -d DIR [-d DIR...] -c CASES
 *       the initiator: runs the cases against the targets and prints
 *       PASS:/FAIL:/SKIP: lines (tests/lib.sh protocol)
 *
 * The same cases run over every transport (tests/integration/fabric_conformance.sh):
 * integrity (4 KiB..8 MiB blocks, batches of 1..1024, random data and
 * hashes, unaligned sub-block ranges), outstanding (1024 requests in
 * flight), multipeer (three targets at once), bad (out-of-bounds ops,
 * forged tokens/keys, forged ranges, stale regions: ACCESS and no byte
 * touched), notify (a notification posted right behind its writes sees
 * them landed), cancel, dereg (refused while in flight), hang (SIGSTOP'd
 * target: no hang, TIMEOUT, reconnect after SIGCONT) and kill (SIGKILL'd
 * target mid-transfer: requests fail within the timeout; a restarted
 * target on the same port is reachable again). hang and kill start their
 * own target child so they can signal it.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "common/kvf_err.h"
#include "common/kvf_log.h"
#include "common/kvf_time.h"
#include "fabric/fabric_int.h"
#include "fabric/kvf_fabric.h"
#include "kvf_features.h"

#if KVF_HAVE_CUDA
#include <cuda_runtime.h>
#endif

#define MAILBOX 4096
#define MAX_DIRS 4

static const uint64_t block_sizes[] = { 4096, 16384, 65536, 1u << 20, 8u << 20 };
#define NSIZES (sizeof(block_sizes) / sizeof(block_sizes[0]))

struct opts {
	int transport;
	const char *listen;
	const char *dirs[MAX_DIRS];
	int ndirs;
	const char *cases;
	uint64_t timeout_ms;
	uint64_t region_mb;
	uint64_t seed;
	int no_memfd;
	int cuda;
};

static int fails;
static const char *tname = "?";

static void pass(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void pass(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	printf("PASS: fabric %s ", tname);
	vprintf(fmt, ap);
	printf("\n");
	va_end(ap);
	fflush(stdout);
}

static void failf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void failf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	printf("FAIL: fabric %s ", tname);
	vprintf(fmt, ap);
	printf("\n");
	va_end(ap);
	fflush(stdout);
	fails++;
}

/* ---- pattern ---- */

static uint64_t splitmix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static uint8_t pat_byte(uint64_t seed, uint64_t off)
{
	return (uint8_t)(splitmix(seed ^ (off >> 3)) >> ((off & 7) * 8));
}

static void pat_fill(uint8_t *p, uint64_t off, size_t len, uint64_t seed)
{
	size_t i = 0;
	for (; i < len && ((off + i) & 7); i++)
		p[i] = pat_byte(seed, off + i);
	for (; i + 8 <= len; i += 8) {
		uint64_t w = splitmix(seed ^ ((off + i) >> 3));
		memcpy(p + i, &w, 8);
	}
	for (; i < len; i++)
		p[i] = pat_byte(seed, off + i);
}

/* Offset of the first byte that differs from the pattern, or -1. */
static int64_t pat_check(const uint8_t *p, uint64_t off, size_t len, uint64_t seed)
{
	size_t i = 0;
	for (; i < len && ((off + i) & 7); i++)
		if (p[i] != pat_byte(seed, off + i))
			return (int64_t)i;
	for (; i + 8 <= len; i += 8) {
		uint64_t w = splitmix(seed ^ ((off + i) >> 3)), v;
		memcpy(&v, p + i, 8);
		if (v != w)
			for (size_t j = 0; j < 8; j++)
				if (p[i + j] != pat_byte(seed, off + i + j))
					return (int64_t)(i + j);
	}
	for (; i < len; i++)
		if (p[i] != pat_byte(seed, off + i))
			return (int64_t)i;
	return -1;
}

static uint64_t rng_state = 0x1234567;
static uint64_t rnd(void)
{
	rng_state = splitmix(rng_state);
	return rng_state;
}

/* ---- files ---- */

static int write_file(const char *dir, const char *name, const void *p, size_t n)
{
	char path[512], tmp[520];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	FILE *f = fopen(tmp, "wb");
	if (!f)
		return -1;
	int ok = fwrite(p, 1, n, f) == n;
	ok &= fclose(f) == 0;
	return ok && rename(tmp, path) == 0 ? 0 : -1;
}

static void *read_file(const char *dir, const char *name, size_t *n)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	long len = ftell(f);
	fseek(f, 0, SEEK_SET);
	void *p = malloc(len > 0 ? (size_t)len : 1);
	if (p && fread(p, 1, (size_t)len, f) != (size_t)len) {
		free(p);
		p = NULL;
	}
	fclose(f);
	*n = (size_t)len;
	return p;
}

static kvf_fabric_opts base_opts(const struct opts *o)
{
	kvf_fabric_opts fo;
	kvf_fabric_opts_init(&fo);
	fo.transport = o->transport;
	fo.timeout_ms = o->timeout_ms;
	fo.listen = o->listen;
	if (o->transport == KVF_FABRIC_OFI && !getenv("KVF_OFI_PROVIDER"))
		fo.ofi_provider = "tcp;ofi_rxm";
	else if (getenv("KVF_OFI_PROVIDER"))
		fo.ofi_provider = getenv("KVF_OFI_PROVIDER");
	return fo;
}

/* ---- memory (host or GPU) ---- */

static int mem_alloc(const struct opts *o, size_t len, uint8_t **out)
{
#if KVF_HAVE_CUDA
	if (o->cuda) {
		void *p;
		if (cudaMalloc(&p, len) != cudaSuccess)
			return -1;
		*out = p;
		return 0;
	}
#endif
	if (!o->no_memfd)
		return kvf_fabric_mem_alloc(len, (void **)out);
	*out = aligned_alloc(4096, (len + 4095) / 4096 * 4096);
	if (!*out)
		return -1;
	memset(*out, 0, len);
	return 0;
}

static void mem_free(const struct opts *o, uint8_t *p)
{
#if KVF_HAVE_CUDA
	if (o->cuda) {
		cudaFree(p);
		return;
	}
#endif
	if (!o->no_memfd)
		kvf_fabric_mem_free(p);
	else
		free(p);
}

/* Host view of device memory for filling/checking (identity for host). */
static void mem_to_dev(const struct opts *o, uint8_t *dst, const uint8_t *src, size_t n)
{
#if KVF_HAVE_CUDA
	if (o->cuda) {
		cudaMemcpy(dst, src, n, cudaMemcpyHostToDevice);
		return;
	}
#endif
	memmove(dst, src, n);
}

static void mem_from_dev(const struct opts *o, uint8_t *dst, const uint8_t *src, size_t n)
{
#if KVF_HAVE_CUDA
	if (o->cuda) {
		cudaMemcpy(dst, src, n, cudaMemcpyDeviceToHost);
		return;
	}
#endif
	memmove(dst, src, n);
}

/* ---- serve ---- */

static volatile sig_atomic_t stop_flag;
static void on_term(int sig) { stop_flag = 1; }

struct mailbox {
	_Atomic uint64_t seq;
	uint64_t status; /* 1 ok, 2 failed */
	char msg[240];
};

static int cmd_serve(const struct opts *o)
{
	kvf_fabric_opts fo = base_opts(o);
	kvf_fabric *f;
	if (kvf_fabric_open(&fo, &f) < 0) {
		fprintf(stderr, "serve: open: %s\n", kvf_errmsg());
		return 1;
	}
	uint64_t main_len = o->region_mb << 20, half = main_len / 2;
	size_t rlen = main_len + MAILBOX;
	uint8_t *region, *host = NULL;
	if (mem_alloc(o, rlen, &region) < 0) {
		fprintf(stderr, "serve: cannot allocate %zu bytes\n", rlen);
		return 1;
	}
	host = calloc(1, rlen);
	if (!host)
		return 1;
	pat_fill(host, 0, half, o->seed);
	mem_to_dev(o, region, host, rlen);
	kvf_fabric_mr *mr;
	if (kvf_fabric_reg(f, region, rlen, o->cuda ? KVF_FABRIC_MEM_CUDA : KVF_FABRIC_MEM_HOST, &mr) < 0) {
		fprintf(stderr, "serve: reg: %s\n", kvf_errmsg());
		return 1;
	}
	kvf_fabric_cq *cq;
	if (kvf_fabric_cq_new(f, KVF_FABRIC_CQ_NOTIFS, &cq) < 0)
		return 1;
	mkdir(o->dirs[0], 0755);
	for (size_t s = 0; s < NSIZES; s++) {
		uint64_t bs = block_sizes[s], n = main_len / bs;
		kvf_fabric_range *rg = calloc(n, sizeof(*rg));
		for (uint64_t i = 0; i < n; i++) {
			rg[i].offset = i * bs;
			rg[i].len = bs;
		}
		kvf_buf b = KVF_BUF_INIT;
		if (kvf_fabric_export(f, mr, rg, n, &b) < 0) {
			fprintf(stderr, "serve: export: %s\n", kvf_errmsg());
			return 1;
		}
		char name[32];
		snprintf(name, sizeof(name), "desc-%" PRIu64, bs);
		write_file(o->dirs[0], name, b.data, b.len);
		kvf_buf_free(&b);
		free(rg);
	}
	kvf_fabric_range mb = { main_len, MAILBOX };
	kvf_buf b = KVF_BUF_INIT;
	kvf_fabric_export(f, mr, &mb, 1, &b);
	write_file(o->dirs[0], "desc-mailbox", b.data, b.len);
	kvf_buf_free(&b);
	char txt[64];
	int n = snprintf(txt, sizeof(txt), "%u\n", kvf_fabric_port(f));
	write_file(o->dirs[0], "port", txt, (size_t)n);
	n = snprintf(txt, sizeof(txt), "%" PRIu64 "\n", o->seed);
	write_file(o->dirs[0], "seed", txt, (size_t)n);
	n = snprintf(txt, sizeof(txt), "%d\n", (int)getpid());
	write_file(o->dirs[0], "pid", txt, (size_t)n);
	write_file(o->dirs[0], "ready", "1\n", 2);
	fprintf(stderr, "serve: ready on port %u (%s)\n", kvf_fabric_port(f), kvf_fabric_transport_name(o->transport));

	signal(SIGTERM, on_term);
	signal(SIGINT, on_term);
	struct {
		uint8_t node[16];
		uint64_t last;
	} seqs[16];
	int nseqs = 0;
	uint8_t *scratch = malloc(main_len);
	while (!stop_flag) {
		struct pollfd pfd = { kvf_fabric_cq_fd(cq), POLLIN, 0 };
		poll(&pfd, 1, 100);
		kvf_fabric_comp c[16];
		int k;
		while ((k = kvf_fabric_poll(cq, c, 16)) > 0) {
			for (int i = 0; i < k; i++) {
				if (c[i].kind != KVF_FABRIC_COMP_NOTIF)
					continue;
				int si;
				for (si = 0; si < nseqs && memcmp(seqs[si].node, c[i].peer_node, 16); si++)
					;
				if (si == nseqs) {
					si = nseqs < 16 ? nseqs++ : 15;
					memcpy(seqs[si].node, c[i].peer_node, 16);
					seqs[si].last = 0;
				}
				uint64_t last_seq = seqs[si].last;
				char msg[KVF_FABRIC_NOTIF_MAX + 1];
				memcpy(msg, c[i].notif, c[i].notif_len);
				msg[c[i].notif_len] = 0;
				uint64_t seq, off, len, want;
				struct mailbox box;
				memset(&box, 0, sizeof(box));
				if (sscanf(msg, "hash %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNx64, &seq, &off, &len,
					   &want) != 4 || off + len > main_len) {
					box.status = 2;
					snprintf(box.msg, sizeof(box.msg), "bad notification [%s]", msg);
					seq = last_seq + 1;
				} else {
					mem_from_dev(o, scratch, region + off, len);
					uint64_t got = XXH3_64bits(scratch, len);
					if (seq != last_seq + 1) {
						box.status = 2;
						snprintf(box.msg, sizeof(box.msg), "notification %" PRIu64 " after %" PRIu64
							 " (out of order)", seq, last_seq);
					} else if (got != want) {
						box.status = 2;
						snprintf(box.msg, sizeof(box.msg),
							 "notification %" PRIu64 " arrived before its data: hash %" PRIx64
							 " want %" PRIx64, seq, got, want);
					} else {
						box.status = 1;
						snprintf(box.msg, sizeof(box.msg), "ok");
					}
				}
				seqs[si].last = seq;
				/* payload first, then the sequence number readers poll */
				struct mailbox *mbx = (struct mailbox *)host;
				memcpy(&mbx->status, &box.status, sizeof(box) - sizeof(box.seq));
				mem_to_dev(o, region + main_len + 8, (uint8_t *)&mbx->status, sizeof(box) - 8);
				atomic_thread_fence(memory_order_release);
				uint64_t s8 = seq;
				mem_to_dev(o, region + main_len, (uint8_t *)&s8, 8);
			}
		}
	}
	free(scratch);
	free(host);
	kvf_fabric_cq_destroy(cq);
	kvf_fabric_close(f);
	mem_free(o, region);
	return 0;
}

/* ---- run: helpers ---- */

struct target {
	char dir[256];
	uint64_t seed;
	kvf_fabric_rdesc *desc[NSIZES];
	kvf_fabric_rdesc *mbox;
	uint8_t *raw[NSIZES];
	size_t rawlen[NSIZES];
};

struct ctx {
	const struct opts *o;
	kvf_fabric *f;
	kvf_fabric_cq *cq;
	kvf_fabric_mr *mr;
	uint8_t *local; /* device or host */
	uint8_t *hbuf;  /* host shadow */
	size_t llen;
	struct target t[MAX_DIRS];
	int nt;
	uint64_t main_len;
	uint64_t notif_seq;
};

static int load_target(struct target *t, const char *dir)
{
	memset(t, 0, sizeof(*t));
	snprintf(t->dir, sizeof(t->dir), "%s", dir);
	size_t n;
	char *s = read_file(dir, "seed", &n);
	if (!s)
		return -1;
	t->seed = strtoull(s, NULL, 10);
	free(s);
	for (size_t i = 0; i < NSIZES; i++) {
		char name[32];
		snprintf(name, sizeof(name), "desc-%" PRIu64, block_sizes[i]);
		t->raw[i] = read_file(dir, name, &t->rawlen[i]);
		if (!t->raw[i] || kvf_fabric_desc_parse(t->raw[i], t->rawlen[i], &t->desc[i]) < 0) {
			fprintf(stderr, "run: %s/%s: %s\n", dir, name, kvf_errmsg());
			return -1;
		}
	}
	void *m = read_file(dir, "desc-mailbox", &n);
	if (!m || kvf_fabric_desc_parse(m, n, &t->mbox) < 0)
		return -1;
	free(m);
	return 0;
}

static void unload_target(struct target *t)
{
	for (size_t i = 0; i < NSIZES; i++) {
		kvf_fabric_desc_free(t->desc[i]);
		free(t->raw[i]);
	}
	kvf_fabric_desc_free(t->mbox);
	memset(t, 0, sizeof(*t));
}

static int size_index(uint64_t bs)
{
	for (size_t i = 0; i < NSIZES; i++)
		if (block_sizes[i] == bs)
			return (int)i;
	return -1;
}

/* Waits for n completions (any order) on cq; statuses by request order in
 * reqs (if given). Returns the number that completed within limit_ms. */
static int wait_n(struct ctx *c, int n, const kvf_fabric_req *reqs, int *status, uint64_t limit_ms)
{
	uint64_t deadline = kvf_now_ms() + limit_ms;
	int got = 0;
	while (got < n) {
		kvf_fabric_comp cp[64];
		int k = kvf_fabric_poll(c->cq, cp, 64);
		for (int i = 0; i < k; i++) {
			if (cp[i].kind != KVF_FABRIC_COMP_XFER)
				continue;
			got++;
			if (status && reqs) {
				for (int j = 0; j < n; j++)
					if (reqs[j] == cp[i].req)
						status[j] = cp[i].status;
			} else if (status) {
				status[cp[i].cookie] = cp[i].status;
			}
			if (cp[i].status && getenv("KVF_TEST_VERBOSE"))
				fprintf(stderr, "completion %llu: %s: %s\n", (unsigned long long)cp[i].cookie,
					kvf_errname(cp[i].status), cp[i].detail);
		}
		if (k > 0)
			continue;
		uint64_t now = kvf_now_ms();
		if (now >= deadline)
			break;
		struct pollfd pfd = { kvf_fabric_cq_fd(c->cq), POLLIN, 0 };
		poll(&pfd, 1, (int)(deadline - now < 100 ? deadline - now : 100));
	}
	return got;
}

/* One request, waited for. Returns its status, or KVF_E_TIMEOUT+hang note. */
static int xfer(struct ctx *c, int opcode, const kvf_fabric_rdesc *d, const kvf_fabric_op *ops, size_t n,
		char *detail, size_t cap)
{
	kvf_fabric_req req;
	int rc = kvf_fabric_post(c->cq, opcode, d, ops, n, 0, &req);
	if (rc < 0) {
		snprintf(detail, cap, "post: %s", kvf_errmsg());
		return rc;
	}
	uint64_t deadline = kvf_now_ms() + c->o->timeout_ms + 5000;
	for (;;) {
		kvf_fabric_comp cp;
		if (kvf_fabric_poll(c->cq, &cp, 1) == 1) {
			if (cp.kind != KVF_FABRIC_COMP_XFER || cp.req != req) {
				fprintf(stderr, "stray completion (cookie %llu)\n", (unsigned long long)cp.cookie);
				continue;
			}
			snprintf(detail, cap, "%s", cp.detail);
			return cp.status;
		}
		if (kvf_now_ms() > deadline) {
			snprintf(detail, cap, "HANG: no completion within timeout + 5 s");
			return -1000;
		}
		struct pollfd pfd = { kvf_fabric_cq_fd(c->cq), POLLIN, 0 };
		poll(&pfd, 1, 50);
	}
}

static void fill_random(uint8_t *p, size_t n)
{
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		uint64_t w = rnd();
		memcpy(p + i, &w, 8);
	}
	for (; i < n; i++)
		p[i] = (uint8_t)rnd();
}

static void shuffle_prefix(uint32_t *v, uint32_t n, uint32_t k)
{
	for (uint32_t i = 0; i < n; i++)
		v[i] = i;
	for (uint32_t i = 0; i < k && i < n; i++) {
		uint32_t j = i + (uint32_t)(rnd() % (n - i));
		uint32_t t = v[i];
		v[i] = v[j];
		v[j] = t;
	}
}

static void sync_to_dev(struct ctx *c, size_t off, size_t n) { mem_to_dev(c->o, c->local + off, c->hbuf + off, n); }
static void sync_from_dev(struct ctx *c, size_t off, size_t n) { mem_from_dev(c->o, c->hbuf + off, c->local + off, n); }

/* ---- cases ---- */

static void case_integrity(struct ctx *c)
{
	static const uint32_t batches[] = { 1, 16, 1024 };
	struct target *t = &c->t[0];
	uint64_t half = c->main_len / 2;
	uint32_t *perm = malloc(sizeof(uint32_t) * (c->main_len / 4096));
	kvf_fabric_op *ops = malloc(sizeof(*ops) * 1024);
	char det[160];
	for (size_t s = 0; s < NSIZES; s++) {
		uint64_t bs = block_sizes[s];
		uint32_t nhalf = (uint32_t)(half / bs);
		uint32_t bl[4] = { 1, 16, 1024, 0 };
		int nb = 3;
		if (bs * 1024 > half) {
			nb = 2;
			if (bs * 16 > half) {
				bl[1] = nhalf;
			}
		}
		(void)batches;
		for (int bi = 0; bi < nb; bi++) {
			uint32_t batch = bl[bi];
			if (batch > nhalf)
				batch = nhalf;
			/* READ pattern blocks into random order */
			shuffle_prefix(perm, nhalf, batch);
			memset(c->hbuf, 0xa5, bs * batch);
			sync_to_dev(c, 0, bs * batch);
			for (uint32_t j = 0; j < batch; j++)
				ops[j] = (kvf_fabric_op){ c->local + j * bs, perm[j], 0, bs };
			int rc = xfer(c, KVF_FABRIC_READ, t->desc[s], ops, batch, det, sizeof(det));
			int bad = -1;
			if (rc == 0) {
				sync_from_dev(c, 0, bs * batch);
				for (uint32_t j = 0; j < batch && bad < 0; j++)
					if (pat_check(c->hbuf + j * bs, (uint64_t)perm[j] * bs, bs, t->seed) >= 0)
						bad = (int)j;
			}
			if (rc != 0)
				failf("integrity read %" PRIu64 "B x %u: %s: %s", bs, batch, kvf_errname(rc), det);
			else if (bad >= 0)
				failf("integrity read %" PRIu64 "B x %u: block %d differs from the pattern", bs, batch, bad);
			else
				pass("integrity read %" PRIu64 "B x %u", bs, batch);

			/* WRITE random data into the upper half, READ it back elsewhere */
			shuffle_prefix(perm, nhalf, batch);
			fill_random(c->hbuf, bs * batch);
			sync_to_dev(c, 0, bs * batch);
			uint64_t h = XXH3_64bits(c->hbuf, bs * batch);
			for (uint32_t j = 0; j < batch; j++)
				ops[j] = (kvf_fabric_op){ c->local + j * bs, nhalf + perm[j], 0, bs };
			rc = xfer(c, KVF_FABRIC_WRITE, t->desc[s], ops, batch, det, sizeof(det));
			if (rc != 0) {
				failf("integrity write %" PRIu64 "B x %u: %s: %s", bs, batch, kvf_errname(rc), det);
				continue;
			}
			size_t back = c->llen / 2;
			memset(c->hbuf + back, 0, bs * batch);
			sync_to_dev(c, back, bs * batch);
			for (uint32_t j = 0; j < batch; j++)
				ops[j] = (kvf_fabric_op){ c->local + back + j * bs, nhalf + perm[j], 0, bs };
			rc = xfer(c, KVF_FABRIC_READ, t->desc[s], ops, batch, det, sizeof(det));
			sync_from_dev(c, back, bs * batch);
			if (rc != 0)
				failf("integrity write+read %" PRIu64 "B x %u: %s: %s", bs, batch, kvf_errname(rc), det);
			else if (XXH3_64bits(c->hbuf + back, bs * batch) != h)
				failf("integrity write+read %" PRIu64 "B x %u: data read back differs", bs, batch);
			else
				pass("integrity write+read %" PRIu64 "B x %u", bs, batch);
		}
	}
	/* unaligned local addresses, sub-block ranges crossing chunk bounds */
	{
		int s = size_index(8u << 20);
		int ok = 1;
		for (int round = 0; round < 8 && ok; round++) {
			uint32_t blk = (uint32_t)(rnd() % (half / (8u << 20)));
			uint64_t off = rnd() % (4u << 20), len = 1 + rnd() % ((8u << 20) - off);
			size_t loff = 1 + (size_t)(rnd() % 4093);
			memset(c->hbuf, 0, loff + len);
			sync_to_dev(c, 0, loff + len);
			kvf_fabric_op op = { c->local + loff, blk, off, len };
			int rc = xfer(c, KVF_FABRIC_READ, t->desc[s], &op, 1, det, sizeof(det));
			sync_from_dev(c, 0, loff + len);
			if (rc != 0) {
				failf("integrity unaligned read: %s: %s", kvf_errname(rc), det);
				ok = 0;
			} else if (pat_check(c->hbuf + loff, (uint64_t)blk * (8u << 20) + off, len, t->seed) >= 0) {
				failf("integrity unaligned read: [%" PRIu64 ", +%" PRIu64 ") to local+%zu differs", off, len,
				      loff);
				ok = 0;
			}
		}
		if (ok)
			pass("integrity unaligned sub-block reads");
	}
	free(perm);
	free(ops);
}

static void case_outstanding(struct ctx *c)
{
	struct target *t = &c->t[0];
	int s = size_index(4096);
	const int n = 1024;
	kvf_fabric_req *reqs = calloc(n, sizeof(*reqs));
	int *st = malloc(sizeof(int) * n);
	uint32_t *perm = malloc(sizeof(uint32_t) * (c->main_len / 2 / 4096));
	shuffle_prefix(perm, (uint32_t)(c->main_len / 2 / 4096), n);
	memset(c->hbuf, 0, (size_t)n * 4096);
	sync_to_dev(c, 0, (size_t)n * 4096);
	int posted = 0;
	for (int i = 0; i < n; i++) {
		st[i] = 1;
		kvf_fabric_op op = { c->local + (size_t)i * 4096, perm[i], 0, 4096 };
		if (kvf_fabric_post(c->cq, KVF_FABRIC_READ, t->desc[s], &op, 1, (uint64_t)i, &reqs[i]) < 0) {
			failf("outstanding: post %d: %s", i, kvf_errmsg());
			break;
		}
		posted++;
	}
	int inflight_seen = 0;
	for (int i = 0; i < posted; i++)
		inflight_seen += kvf_fabric_req_status(c->cq, reqs[i], NULL) == KVF_E_AGAIN;
	int got = wait_n(c, posted, NULL, st, c->o->timeout_ms + 5000);
	sync_from_dev(c, 0, (size_t)n * 4096);
	int bad = 0;
	for (int i = 0; i < posted; i++)
		if (st[i] != 0 || pat_check(c->hbuf + (size_t)i * 4096, (uint64_t)perm[i] * 4096, 4096, t->seed) >= 0)
			bad++;
	if (got != posted)
		failf("outstanding: %d of %d requests completed", got, posted);
	else if (bad)
		failf("outstanding: %d of %d requests failed or returned wrong data", bad, posted);
	else
		pass("outstanding %d requests in flight (%d seen in flight by req_status)", posted, inflight_seen);
	free(reqs);
	free(st);
	free(perm);
}

static void case_multipeer(struct ctx *c)
{
	if (c->nt < 2) {
		printf("SKIP: fabric %s multipeer: needs several targets (-d DIR more than once)\n", tname);
		return;
	}
	int s = size_index(65536);
	const int per = 48, nops = 8;
	int total = per * c->nt;
	int *st = malloc(sizeof(int) * total);
	uint32_t *blk = malloc(sizeof(uint32_t) * total * nops);
	size_t need = (size_t)total * nops * 65536;
	if (need > c->main_len)
		need = c->main_len;
	int posted = 0;
	uint32_t nhalf = (uint32_t)(c->main_len / 2 / 65536);
	for (int i = 0; i < per; i++) {
		for (int k = 0; k < c->nt; k++) {
			int id = i * c->nt + k;
			kvf_fabric_op ops[8];
			for (int j = 0; j < nops; j++) {
				size_t lo = ((size_t)id * nops + j) * 65536 % c->main_len;
				blk[id * nops + j] = (uint32_t)(rnd() % nhalf);
				ops[j] = (kvf_fabric_op){ c->local + lo, blk[id * nops + j], 0, 65536 };
			}
			st[id] = 1;
			if (kvf_fabric_post(c->cq, KVF_FABRIC_READ, c->t[k].desc[s], ops, nops, (uint64_t)id, NULL) < 0) {
				failf("multipeer: post: %s", kvf_errmsg());
				wait_n(c, posted, NULL, st, c->o->timeout_ms + 5000);
				goto out;
			}
			posted++;
		}
	}
	int got = wait_n(c, posted, NULL, st, c->o->timeout_ms + 5000);
	int bad = 0;
	if (need == (size_t)total * nops * 65536) {
		sync_from_dev(c, 0, need);
		for (int id = 0; id < posted; id++)
			for (int j = 0; j < nops; j++)
				if (st[id] != 0 ||
				    pat_check(c->hbuf + ((size_t)id * nops + j) * 65536, (uint64_t)blk[id * nops + j] * 65536,
					      65536, c->t[id % c->nt].seed) >= 0)
					bad++;
	}
	if (got != posted)
		failf("multipeer: %d of %d requests completed", got, posted);
	else if (bad)
		failf("multipeer: %d ops failed or returned wrong data", bad);
	else
		pass("multipeer %d targets, %d requests of %d ops at once", c->nt, posted, nops);
out:
	free(st);
	free(blk);
}

/* Re-encodes a descriptor with one block changed. */
static int forge(const uint8_t *raw, size_t len, int what, kvf_fabric_rdesc **out)
{
	kvf_fabric_rdesc d;
	if (fab_desc_decode(raw, len, &d) < 0)
		return -1;
	switch (what) {
	case 0: /* tokens */
		for (uint32_t i = 0; i < d.nblocks; i++)
			d.blocks[i].token ^= 0x1;
		break;
	case 1: /* transport keys */
		for (int t = 1; t < FAB_NT; t++) {
			d.key[t].key ^= 0x5a5a5a5a5a5a5a5aull;
			for (uint16_t i = 0; i < d.key[t].xlen; i++)
				d.key[t].x[i] ^= 0x5a;
		}
		break;
	case 2: /* block (and region) reaching past the region's end */
		d.len += 1u << 20;
		d.blocks[d.nblocks - 1].len += 1u << 20;
		break;
	case 3: /* a region id the target never registered */
		d.region ^= 0x7fff0000u;
		break;
	}
	kvf_wire_writer w;
	kvf_wire_writer_init(&w, 0);
	fab_desc_put_head(&w, &d, d.nblocks);
	for (uint32_t i = 0; i < d.nblocks; i++)
		fab_desc_put_block(&w, d.blocks[i].addr, d.blocks[i].len, d.blocks[i].token);
	fab_desc_clear(&d);
	int rc = kvf_fabric_desc_parse(w.buf, w.len, out);
	kvf_wire_writer_free(&w);
	return rc;
}

static void case_bad(struct ctx *c)
{
	struct target *t = &c->t[0];
	int s = size_index(65536);
	uint32_t nblk = (uint32_t)(c->main_len / 65536), nhalf = nblk / 2;
	char det[160];
	/* out of the block: refused at post, nothing moves */
	kvf_fabric_op op = { c->local, 0, 65536 - 100, 200 };
	int rc = kvf_fabric_post(c->cq, KVF_FABRIC_READ, t->desc[s], &op, 1, 0, NULL);
	if (rc == KVF_E_ACCESS)
		pass("bad: op past its block refused with ACCESS at post");
	else
		failf("bad: op past its block: post returned %s", kvf_errname(rc));
	op = (kvf_fabric_op){ c->local, nblk, 0, 100 };
	rc = kvf_fabric_post(c->cq, KVF_FABRIC_READ, t->desc[s], &op, 1, 0, NULL);
	if (rc == KVF_E_ACCESS)
		pass("bad: block index past the descriptor refused with ACCESS");
	else
		failf("bad: block index past the descriptor: post returned %s", kvf_errname(rc));
	uint8_t stackbuf[256];
	op = (kvf_fabric_op){ stackbuf, 0, 0, sizeof(stackbuf) };
	rc = kvf_fabric_post(c->cq, KVF_FABRIC_READ, t->desc[s], &op, 1, 0, NULL);
	if (rc == KVF_E_ACCESS)
		pass("bad: unregistered local memory refused with ACCESS");
	else
		failf("bad: unregistered local memory: post returned %s", kvf_errname(rc));

	/* forged credentials: every transport checks tokens (tcp per op at the
	 * target, the others at attach and per op locally); the one-sided ones
	 * also check their transport key */
	int one_sided = c->o->transport != KVF_FABRIC_TCP && c->o->transport != KVF_FABRIC_SHM;
	struct {
		int what;
		const char *name;
		int applies;
	} forges[] = {
		{ 0, "forged token", 1 },
		{ 1, "forged transport key", one_sided },
		{ 2, "forged range past the region", 1 },
		{ 3, "unknown region id", 1 },
	};
	for (size_t k = 0; k < sizeof(forges) / sizeof(forges[0]); k++) {
		if (!forges[k].applies)
			continue;
		kvf_fabric_rdesc *fd;
		if (forge(t->raw[s], t->rawlen[s], forges[k].what, &fd) < 0) {
			failf("bad: cannot forge (%s)", forges[k].name);
			continue;
		}
		uint32_t rb = forges[k].what == 2 ? nblk - 1 : 0;  /* block 0 is in the pattern half */
		uint64_t roff = forges[k].what == 2 ? 65536 : 0;   /* past the real end */
		uint64_t len = forges[k].what == 2 ? 65536 : 65536;
		/* READ into a sentinel: must stay untouched */
		memset(c->hbuf, 0xee, len);
		sync_to_dev(c, 0, len);
		op = (kvf_fabric_op){ c->local, rb, roff, len };
		rc = xfer(c, KVF_FABRIC_READ, fd, &op, 1, det, sizeof(det));
		sync_from_dev(c, 0, len);
		int touched = 0;
		for (uint64_t i = 0; i < len; i++)
			touched |= c->hbuf[i] != 0xee;
		if (rc == KVF_E_ACCESS && !touched)
			pass("bad: %s: READ fails with ACCESS, local memory untouched", forges[k].name);
		else
			failf("bad: %s: READ returned %s (%s), local memory %s", forges[k].name, kvf_errname(rc), det,
			      touched ? "TOUCHED" : "untouched");
		/* WRITE with the forged credential into a block we can check */
		uint32_t wb = forges[k].what == 2 ? nblk - 1 : nhalf;
		fill_random(c->hbuf, 65536);
		sync_to_dev(c, 0, 65536);
		op = (kvf_fabric_op){ c->local, wb, 0, 65536 };
		int rc0 = xfer(c, KVF_FABRIC_WRITE, t->desc[s], &op, 1, det, sizeof(det)); /* known content */
		uint64_t h = XXH3_64bits(c->hbuf, 65536);
		fill_random(c->hbuf, 65536);
		sync_to_dev(c, 0, 65536);
		op = (kvf_fabric_op){ c->local, wb, forges[k].what == 2 ? 65536 : 0, 65536 };
		rc = xfer(c, KVF_FABRIC_WRITE, fd, &op, 1, det, sizeof(det));
		memset(c->hbuf, 0, 65536);
		sync_to_dev(c, 0, 65536);
		op = (kvf_fabric_op){ c->local, wb, 0, 65536 };
		int rc2 = xfer(c, KVF_FABRIC_READ, t->desc[s], &op, 1, det, sizeof(det));
		sync_from_dev(c, 0, 65536);
		int intact = rc0 == 0 && rc2 == 0 && XXH3_64bits(c->hbuf, 65536) == h;
		if (rc == KVF_E_ACCESS && intact)
			pass("bad: %s: WRITE fails with ACCESS, target memory untouched", forges[k].name);
		else
			failf("bad: %s: WRITE returned %s, target memory %s", forges[k].name, kvf_errname(rc),
			      intact ? "intact" : "CHANGED or unreadable");
		kvf_fabric_desc_free(fd);
	}
}

static int mailbox_wait(struct ctx *c, struct target *t, uint64_t seq, char *msg, size_t cap)
{
	uint64_t deadline = kvf_now_ms() + c->o->timeout_ms + 3000;
	size_t mo = c->llen - MAILBOX;
	char det[160];
	while (kvf_now_ms() < deadline) {
		kvf_fabric_op op = { c->local + mo, 0, 0, MAILBOX };
		int rc = xfer(c, KVF_FABRIC_READ, t->mbox, &op, 1, det, sizeof(det));
		if (rc != 0) {
			snprintf(msg, cap, "mailbox read: %s: %s", kvf_errname(rc), det);
			return -1;
		}
		sync_from_dev(c, mo, MAILBOX);
		struct mailbox box;
		memcpy(&box, c->hbuf + mo, sizeof(box));
		if (box.seq >= seq) {
			snprintf(msg, cap, "%s", box.msg);
			return box.seq == seq && box.status == 1 ? 0 : -1;
		}
		usleep(2000);
	}
	snprintf(msg, cap, "no verdict from the target");
	return -1;
}

static void case_notify(struct ctx *c)
{
	struct target *t = &c->t[0];
	int s = size_index(65536);
	uint32_t nhalf = (uint32_t)(c->main_len / 2 / 65536);
	int ok = 1;
	for (int round = 0; round < 16 && ok; round++) {
		uint32_t k = 1 + (uint32_t)(rnd() % 64);
		uint32_t first = nhalf + (uint32_t)(rnd() % (nhalf - k));
		fill_random(c->hbuf, (size_t)k * 65536);
		sync_to_dev(c, 0, (size_t)k * 65536);
		uint64_t h = XXH3_64bits(c->hbuf, (size_t)k * 65536);
		kvf_fabric_op ops[64];
		for (uint32_t j = 0; j < k; j++)
			ops[j] = (kvf_fabric_op){ c->local + (size_t)j * 65536, first + j, 0, 65536 };
		/* split into two requests, notify right behind them without waiting */
		uint32_t k1 = k / 2;
		int st[3] = { 1, 1, 1 };
		int posted = 0;
		if (k1 && kvf_fabric_post(c->cq, KVF_FABRIC_WRITE, t->desc[s], ops, k1, 0, NULL) == 0)
			posted++;
		if (kvf_fabric_post(c->cq, KVF_FABRIC_WRITE, t->desc[s], ops + k1, k - k1, 1, NULL) == 0)
			posted++;
		char msg[KVF_FABRIC_NOTIF_MAX];
		uint64_t seq = ++c->notif_seq;
		int n = snprintf(msg, sizeof(msg), "hash %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIx64, seq,
				 (uint64_t)first * 65536, (uint64_t)k * 65536, h);
		if (kvf_fabric_notify(c->cq, t->mbox, msg, (size_t)n, 2, NULL) == 0)
			posted++;
		int got = wait_n(c, posted, NULL, st, c->o->timeout_ms + 5000);
		char verdict[256];
		if (got != posted || st[1] != 0 || st[2] != 0 || (k1 && st[0] != 0)) {
			failf("notify round %d: completions %d/%d statuses %s/%s/%s", round, got, posted,
			      kvf_errname(st[0]), kvf_errname(st[1]), kvf_errname(st[2]));
			ok = 0;
		} else if (mailbox_wait(c, t, seq, verdict, sizeof(verdict)) < 0) {
			failf("notify round %d: target says: %s", round, verdict);
			ok = 0;
		}
	}
	if (ok)
		pass("notify: 16 notifications posted right behind their writes arrived after the data, in order");
}

static void case_cancel(struct ctx *c)
{
	struct target *t = &c->t[0];
	int s = size_index(1u << 20);
	const int n = 32;
	kvf_fabric_req reqs[32];
	int st[32];
	uint32_t nhalf = (uint32_t)(c->main_len / 2 / (1u << 20));
	int posted = 0;
	for (int i = 0; i < n; i++) {
		kvf_fabric_op ops[8];
		for (int j = 0; j < 8; j++)
			ops[j] = (kvf_fabric_op){ c->local + (size_t)((i * 8 + j) % 32) * (1u << 20),
						  (uint32_t)((i * 8 + j) % nhalf), 0, 1u << 20 };
		st[i] = 1;
		if (kvf_fabric_post(c->cq, KVF_FABRIC_READ, t->desc[s], ops, 8, (uint64_t)i, &reqs[i]) == 0)
			posted++;
	}
	int cancel_rc = 0;
	for (int i = 0; i < posted; i++) {
		int rc = kvf_fabric_cancel(c->cq, reqs[i]);
		if (rc < 0 && rc != KVF_E_NOTFOUND)
			cancel_rc = rc;
	}
	int got = wait_n(c, posted, NULL, st, c->o->timeout_ms + 5000);
	int canceled = 0, okc = 0, other = 0;
	for (int i = 0; i < posted; i++) {
		if (st[i] == KVF_E_CANCELED)
			canceled++;
		else if (st[i] == 0)
			okc++;
		else
			other++;
	}
	if (got == posted && !other && cancel_rc == 0)
		pass("cancel: %d requests: %d canceled, %d finished first", posted, canceled, okc);
	else
		failf("cancel: %d/%d completed, %d with other errors, cancel rc %s", got, posted, other,
		      kvf_errname(cancel_rc));
	/* the peer keeps working after cancels */
	char det[160];
	memset(c->hbuf, 0, 1u << 20);
	sync_to_dev(c, 0, 1u << 20);
	kvf_fabric_op op = { c->local, 3, 0, 1u << 20 };
	int rc = xfer(c, KVF_FABRIC_READ, t->desc[s], &op, 1, det, sizeof(det));
	sync_from_dev(c, 0, 1u << 20);
	if (rc == 0 && pat_check(c->hbuf, 3ull << 20, 1u << 20, t->seed) < 0)
		pass("cancel: the next request succeeds");
	else
		failf("cancel: the next request: %s: %s", kvf_errname(rc), det);
}

static void case_dereg(struct ctx *c)
{
	struct target *t = &c->t[0];
	int s = size_index(1u << 20);
	kvf_fabric_op ops[16];
	for (int j = 0; j < 16; j++)
		ops[j] = (kvf_fabric_op){ c->local + (size_t)j * (1u << 20), (uint32_t)j, 0, 1u << 20 };
	kvf_fabric_req req;
	if (kvf_fabric_post(c->cq, KVF_FABRIC_READ, t->desc[s], ops, 16, 0, &req) < 0) {
		failf("dereg: post: %s", kvf_errmsg());
		return;
	}
	int rc = kvf_fabric_dereg(c->f, c->mr);
	int st[1] = { 1 };
	int got = wait_n(c, 1, &req, st, c->o->timeout_ms + 5000);
	if (rc == KVF_E_BUSY && got == 1 && st[0] == 0)
		pass("dereg: refused with BUSY while a request uses the region");
	else if (rc == 0)
		failf("dereg: deregistered under a request in flight");
	else
		failf("dereg: dereg returned %s, request %s", kvf_errname(rc), got ? kvf_errname(st[0]) : "hung");
	if (rc == 0)
		return;
	rc = kvf_fabric_dereg(c->f, c->mr);
	if (rc != 0) {
		failf("dereg: idle region: %s", kvf_errmsg());
		return;
	}
	kvf_fabric_op op = { c->local, 0, 0, 4096 };
	rc = kvf_fabric_post(c->cq, KVF_FABRIC_READ, t->desc[s], &op, 1, 0, NULL);
	if (rc == KVF_E_ACCESS)
		pass("dereg: idle region deregistered; posting from it is refused");
	else
		failf("dereg: post from a deregistered region returned %s", kvf_errname(rc));
	if (kvf_fabric_reg(c->f, c->local, c->llen, c->o->cuda ? KVF_FABRIC_MEM_CUDA : KVF_FABRIC_MEM_HOST, &c->mr) < 0)
		failf("dereg: re-register: %s", kvf_errmsg());
}

/* ---- a target child for hang/kill ---- */

struct child {
	pid_t pid;
	char dir[256];
	uint16_t port;
};

static int child_start(struct ctx *c, struct child *ch, uint16_t port, const char *tag)
{
	snprintf(ch->dir, sizeof(ch->dir), "%s/child-%s", c->o->dirs[0], tag);
	mkdir(ch->dir, 0755);
	char rpath[300];
	snprintf(rpath, sizeof(rpath), "%s/ready", ch->dir);
	unlink(rpath);
	char listen[64], mb[16], to[32];
	snprintf(listen, sizeof(listen), "127.0.0.1:%u", port);
	snprintf(mb, sizeof(mb), "%d", 32);
	snprintf(to, sizeof(to), "%" PRIu64, c->o->timeout_ms);
	char logp[300];
	snprintf(logp, sizeof(logp), "%s/serve.log", ch->dir);
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		int fd = open(logp, O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execl("/proc/self/exe", "kvf-fabric-test", "serve", "-t", tname, "-d", ch->dir, "-l", listen, "-m", mb,
		      "--timeout-ms", to, "--seed", "77", c->o->no_memfd ? "--no-memfd" : "--memfd", (char *)NULL);
		_exit(127);
	}
	ch->pid = pid;
	uint64_t deadline = kvf_now_ms() + 10000;
	struct stat st;
	while (stat(rpath, &st) != 0) {
		if (kvf_now_ms() > deadline || waitpid(pid, NULL, WNOHANG) == pid)
			return -1;
		usleep(10000);
	}
	size_t n;
	char *p = read_file(ch->dir, "port", &n);
	ch->port = p ? (uint16_t)atoi(p) : 0;
	free(p);
	return 0;
}

static void child_stop(struct child *ch)
{
	if (ch->pid > 0) {
		kill(ch->pid, SIGCONT);
		kill(ch->pid, SIGKILL);
		waitpid(ch->pid, NULL, 0);
		ch->pid = 0;
	}
}

static int is_peer_error(int rc)
{
	return rc == KVF_E_PEERDEAD || rc == KVF_E_TIMEOUT || rc == KVF_E_CONNREFUSED;
}

static void case_hang(struct ctx *c)
{
	struct child ch;
	struct target tg;
	char det[160];
	if (child_start(c, &ch, 0, "hang") < 0 || load_target(&tg, ch.dir) < 0) {
		failf("hang: cannot start a target child");
		child_stop(&ch);
		return;
	}
	int s = size_index(1u << 20);
	kvf_fabric_op op = { c->local, 1, 0, 1u << 20 };
	int rc = xfer(c, KVF_FABRIC_READ, tg.desc[s], &op, 1, det, sizeof(det));
	if (rc != 0)
		failf("hang: warm-up read: %s: %s", kvf_errname(rc), det);
	kill(ch.pid, SIGSTOP);
	uint64_t t0 = kvf_now_ms();
	int st[8];
	int posted = 0;
	for (int i = 0; i < 8; i++) {
		kvf_fabric_op o2[4];
		for (int j = 0; j < 4; j++)
			o2[j] = (kvf_fabric_op){ c->local + (size_t)(i * 4 + j) * (1u << 20), (uint32_t)(i * 4 + j) % 16, 0,
						 1u << 20 };
		st[i] = 1;
		if (kvf_fabric_post(c->cq, KVF_FABRIC_READ, tg.desc[s], o2, 4, (uint64_t)i, NULL) == 0)
			posted++;
	}
	int got = wait_n(c, posted, NULL, st, c->o->timeout_ms + 3000);
	uint64_t took = kvf_now_ms() - t0;
	int timeouts = 0, oks = 0;
	for (int i = 0; i < posted; i++) {
		timeouts += st[i] == KVF_E_TIMEOUT;
		oks += st[i] == 0;
	}
	if (got == posted && timeouts + oks == posted)
		pass("hang: stopped target: %d requests ended in %" PRIu64 " ms (timeout %" PRIu64 " ms): %d TIMEOUT, %d ok",
		     posted, took, c->o->timeout_ms, timeouts, oks);
	else
		failf("hang: stopped target: %d/%d requests completed in %" PRIu64 " ms (%d TIMEOUT, %d ok)", got, posted,
		      took, timeouts, oks);
	kill(ch.pid, SIGCONT);
	rc = xfer(c, KVF_FABRIC_READ, tg.desc[s], &op, 1, det, sizeof(det));
	sync_from_dev(c, 0, 1u << 20);
	if (rc == 0 && pat_check(c->hbuf, 1u << 20, 1u << 20, tg.seed) < 0)
		pass("hang: after SIGCONT the next request reconnects and succeeds");
	else
		failf("hang: after SIGCONT: %s: %s", kvf_errname(rc), det);
	unload_target(&tg);
	child_stop(&ch);
}

static void case_kill(struct ctx *c)
{
	struct child ch;
	struct target tg;
	char det[160];
	if (child_start(c, &ch, 0, "kill") < 0 || load_target(&tg, ch.dir) < 0) {
		failf("kill: cannot start a target child");
		child_stop(&ch);
		return;
	}
	int s = size_index(1u << 20);
	uint16_t port = ch.port;
	/* keep requests flowing; kill the target after 100 ms */
	const int maxreq = 4000;
	int *st = malloc(sizeof(int) * maxreq);
	int posted = 0, got = 0;
	uint64_t t0 = kvf_now_ms(), killed_at = 0;
	int peer_errs = 0, oks = 0, others = 0, other_code = 0;
	while (posted < maxreq) {
		uint64_t now = kvf_now_ms();
		if (!killed_at && now - t0 >= 100) {
			kill(ch.pid, SIGKILL);
			killed_at = now;
		}
		if (killed_at && now - killed_at > 300)
			break;
		if (posted - got < 16) {
			kvf_fabric_op o2[8];
			for (int j = 0; j < 8; j++)
				o2[j] = (kvf_fabric_op){ c->local + (size_t)j * (1u << 20), (uint32_t)(posted + j) % 16, 0,
							 1u << 20 };
			st[posted] = 1;
			if (kvf_fabric_post(c->cq, KVF_FABRIC_READ, tg.desc[s], o2, 8, (uint64_t)posted, NULL) == 0)
				posted++;
		}
		kvf_fabric_comp cp[16];
		int k = kvf_fabric_poll(c->cq, cp, 16);
		for (int i = 0; i < k; i++) {
			if (cp[i].kind != KVF_FABRIC_COMP_XFER)
				continue;
			st[cp[i].cookie] = cp[i].status;
			got++;
		}
		if (k == 0 && posted - got >= 16) {
			struct pollfd pfd = { kvf_fabric_cq_fd(c->cq), POLLIN, 0 };
			poll(&pfd, 1, 20);
		}
	}
	got += wait_n(c, posted - got, NULL, st, c->o->timeout_ms + 3000);
	uint64_t took = kvf_now_ms() - killed_at;
	for (int i = 0; i < posted; i++) {
		if (st[i] == 0)
			oks++;
		else if (is_peer_error(st[i]))
			peer_errs++;
		else
			others++, other_code = st[i];
	}
	if (got == posted && peer_errs > 0 && others == 0 && took <= c->o->timeout_ms + 3000)
		pass("kill: SIGKILL mid-transfer: %d requests (%d ok before, %d failed with peer errors) all ended "
		     "%" PRIu64 " ms after the kill", posted, oks, peer_errs, took);
	else
		failf("kill: %d/%d completed, %d ok, %d peer errors, %d other errors (%s), last %" PRIu64
		      " ms after the kill", got, posted, oks, peer_errs, others, kvf_errname(other_code), took);
	free(st);
	waitpid(ch.pid, NULL, 0);
	ch.pid = 0;
	unload_target(&tg);
	/* a new target on the same port: reachable through the same fabric */
	if (child_start(c, &ch, port, "kill2") < 0 || load_target(&tg, ch.dir) < 0) {
		failf("kill: cannot restart the target on port %u", port);
		child_stop(&ch);
		return;
	}
	memset(c->hbuf, 0, 1u << 20);
	sync_to_dev(c, 0, 1u << 20);
	kvf_fabric_op op = { c->local, 2, 0, 1u << 20 };
	int rc = xfer(c, KVF_FABRIC_READ, tg.desc[s], &op, 1, det, sizeof(det));
	sync_from_dev(c, 0, 1u << 20);
	if (rc == 0 && pat_check(c->hbuf, 2u << 20, 1u << 20, tg.seed) < 0)
		pass("kill: a target restarted on port %u is reached again", port);
	else
		failf("kill: restarted target: %s: %s", kvf_errname(rc), det);
	unload_target(&tg);
	child_stop(&ch);
}

static int has_case(const char *list, const char *name)
{
	if (!strcmp(list, "all"))
		return 1;
	size_t n = strlen(name);
	for (const char *p = list; (p = strstr(p, name)); p += n)
		if ((p == list || p[-1] == ',') && (p[n] == 0 || p[n] == ','))
			return 1;
	return 0;
}

static int cmd_run(const struct opts *o)
{
	struct ctx c;
	memset(&c, 0, sizeof(c));
	c.o = o;
	kvf_fabric_opts fo = base_opts(o);
	fo.listen = "127.0.0.1:0";
	if (kvf_fabric_open(&fo, &c.f) < 0) {
		failf("open: %s", kvf_errmsg());
		return 1;
	}
	c.llen = (size_t)(o->region_mb << 20) + MAILBOX;
	c.main_len = o->region_mb << 20;
	if (mem_alloc(o, c.llen, &c.local) < 0 || !(c.hbuf = calloc(1, c.llen))) {
		failf("cannot allocate %zu bytes", c.llen);
		return 1;
	}
	if (kvf_fabric_reg(c.f, c.local, c.llen, o->cuda ? KVF_FABRIC_MEM_CUDA : KVF_FABRIC_MEM_HOST, &c.mr) < 0 ||
	    kvf_fabric_cq_new(c.f, 0, &c.cq) < 0) {
		failf("setup: %s", kvf_errmsg());
		return 1;
	}
	for (int i = 0; i < o->ndirs; i++) {
		if (load_target(&c.t[i], o->dirs[i]) < 0) {
			failf("cannot load target descriptors from %s", o->dirs[i]);
			return 1;
		}
		c.nt++;
	}
	rng_state ^= (uint64_t)getpid();
	struct {
		const char *name;
		void (*fn)(struct ctx *c);
	} cases[] = {
		{ "integrity", case_integrity }, { "outstanding", case_outstanding }, { "multipeer", case_multipeer },
		{ "bad", case_bad },		 { "notify", case_notify },	  { "cancel", case_cancel },
		{ "hang", case_hang },		 { "kill", case_kill },		  { "dereg", case_dereg },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (!has_case(o->cases, cases[i].name))
			continue;
		uint64_t t0 = kvf_now_ms();
		cases[i].fn(&c);
		fprintf(stderr, "case %s: %" PRIu64 " ms\n", cases[i].name, kvf_now_ms() - t0);
	}
	kvf_buf b = KVF_BUF_INIT;
	kvf_fabric_show_peers(c.f, 0, &b);
	fprintf(stderr, "show peers:\n%s", b.data ? b.data : "");
	kvf_buf_free(&b);
	for (int i = 0; i < c.nt; i++)
		unload_target(&c.t[i]);
	kvf_fabric_cq_destroy(c.cq);
	kvf_fabric_close(c.f);
	mem_free(o, c.local);
	free(c.hbuf);
	return fails ? 1 : 0;
}

static int cmd_probe(const struct opts *o)
{
	kvf_fabric_opts fo = base_opts(o);
	fo.listen = "127.0.0.1:0";
	kvf_fabric *f;
	if (kvf_fabric_open(&fo, &f) < 0) {
		printf("unavailable: %s\n", kvf_errmsg());
		return 3;
	}
	printf("available\n");
	kvf_fabric_close(f);
	return 0;
}

static int parse_transport(const char *s)
{
	for (int t = 0; t < KVF_FABRIC_NTRANSPORTS; t++)
		if (!strcmp(s, kvf_fabric_transport_name(t)))
			return t;
	return -1;
}

int main(int argc, char **argv)
{
	struct opts o;
	memset(&o, 0, sizeof(o));
	o.transport = KVF_FABRIC_TCP;
	o.listen = "127.0.0.1:0";
	o.cases = "all";
	o.timeout_ms = 1000;
	o.region_mb = 64;
	o.seed = 42;
	if (argc < 2) {
		fprintf(stderr, "usage: %s probe|serve|run -t TRANSPORT [-d DIR]... [-c CASES] [-l LISTEN] [-m MiB]\n",
			argv[0]);
		return 2;
	}
	const char *cmd = argv[1];
	static const struct option lo[] = {
		{ "transport", required_argument, 0, 't' }, { "dir", required_argument, 0, 'd' },
		{ "cases", required_argument, 0, 'c' },	    { "listen", required_argument, 0, 'l' },
		{ "mb", required_argument, 0, 'm' },	    { "timeout-ms", required_argument, 0, 'T' },
		{ "seed", required_argument, 0, 'S' },	    { "no-memfd", no_argument, 0, 'N' },
		{ "memfd", no_argument, 0, 'M' },	    { 0, 0, 0, 0 },
	};
	int ch;
	optind = 2;
	while ((ch = getopt_long(argc, argv, "t:d:c:l:m:", lo, NULL)) != -1) {
		switch (ch) {
		case 't':
			o.transport = parse_transport(optarg);
			if (o.transport < 0) {
				fprintf(stderr, "unknown transport %s\n", optarg);
				return 2;
			}
			break;
		case 'd':
			if (o.ndirs < MAX_DIRS)
				o.dirs[o.ndirs++] = optarg;
			break;
		case 'c': o.cases = optarg; break;
		case 'l': o.listen = optarg; break;
		case 'm': o.region_mb = strtoull(optarg, NULL, 10); break;
		case 'T': o.timeout_ms = strtoull(optarg, NULL, 10); break;
		case 'S': o.seed = strtoull(optarg, NULL, 10); break;
		case 'N': o.no_memfd = 1; break;
		case 'M': o.no_memfd = 0; break;
		default: return 2;
		}
	}
	tname = kvf_fabric_transport_name(o.transport);
	o.cuda = o.transport == KVF_FABRIC_CUDA_IPC;
	if (getenv("KVF_TEST_LOG"))
		kvf_log_set_level(KVF_LOG_DEBUG);
	else
		kvf_log_set_level(KVF_LOG_WARN);
	if (!strcmp(cmd, "probe"))
		return cmd_probe(&o);
	if (o.ndirs == 0 || o.region_mb < 32) {
		fprintf(stderr, "%s: -d DIR required; -m at least 32\n", cmd);
		return 2;
	}
	if (!strcmp(cmd, "serve"))
		return cmd_serve(&o);
	if (!strcmp(cmd, "run"))
		return cmd_run(&o);
	fprintf(stderr, "unknown command %s\n", cmd);
	return 2;
}
