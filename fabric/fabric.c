/*
 * fabric.c: the fabric core: lifetime, the fabric thread, registered
 * regions, completion queues, request bookkeeping, peers, failure handling,
 * metrics and the admin views. Transports (transport_*.c) plug in through
 * struct fab_transport (fabric_int.h).
 *
 * Shape: one thread per kvf_fabric runs a kvf_loop that owns every socket,
 * endpoint, QP and timer, so transports need no locks. Callers' threads only
 * touch their own cq: kvf_fabric_post() validates ops (bounds, registration)
 * and fills a preallocated request slot, then hands it to the fabric thread
 * with kvf_loop_post() (a lock-free push, one eventfd write when the thread
 * may sleep). The fabric thread completes requests by pushing them onto the
 * cq's lock-free stack and writing the cq's eventfd when the stack was
 * empty; kvf_fabric_poll() takes the whole stack at once. No lock and no
 * allocation per op: slots come from the cq, ops of batches larger than
 * FAB_INLINE_OPS are copied into one allocation per request.
 *
 * Hung peers: a peer with work in flight whose transports report no
 * progress for opts.timeout_ms is failed by a periodic tick (armed only while
 * work is in flight): every transport fails its requests and drops its
 * connections; the next request reconnects.
 */
#include <errno.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <unistd.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"
#include "common/kvf_log.h"
#include "common/kvf_net.h"
#include "common/kvf_time.h"
#include "fabric/fabric_int.h"
#include "fabric/tcp_proto.h"

enum {
	M_BYTES, M_OPS, M_ERRORS, M_LAT, M_SERVED, M_PEER_FAILS, M_INFLIGHT, M_N
};

static const kvf_metric_def fab_metric_defs[M_N] = {
	{ "kvf_fabric_bytes_total", KVF_METRIC_COUNTER, "Bytes moved by requests this node posted",
	  "transport,peer,op", NULL, 0 },
	{ "kvf_fabric_ops_total", KVF_METRIC_COUNTER, "Ops (blocks) moved by requests this node posted",
	  "transport,peer,op", NULL, 0 },
	{ "kvf_fabric_errors_total", KVF_METRIC_COUNTER, "Requests that failed", "transport,peer", NULL, 0 },
	{ "kvf_fabric_request_seconds", KVF_METRIC_HISTOGRAM, "Request latency from post to completion",
	  "transport,peer", kvf_buckets_fast_s, KVF_BUCKETS_FAST_S_N },
	{ "kvf_fabric_served_bytes_total", KVF_METRIC_COUNTER,
	  "Bytes of peers' requests served by this node (tcp and shm attach traffic)", "transport,op", NULL, 0 },
	{ "kvf_fabric_peer_failures_total", KVF_METRIC_COUNTER,
	  "Times a peer was declared dead, refused or hung", "peer", NULL, 0 },
	{ "kvf_fabric_requests_inflight", KVF_METRIC_GAUGE, "Requests posted and not completed yet", NULL,
	  NULL, 0 },
};

struct fab_notif {
	struct fab_notif *next;
	uint8_t node[16];
	char name[FAB_NAME_MAX];
	uint32_t len;
	uint8_t msg[KVF_FABRIC_NOTIF_MAX];
};

struct kvf_fabric_cq {
	kvf_fabric *f;
	struct kvf_fabric_cq *next; /* f->cqs, under f->cq_lock */
	unsigned flags;
	int efd;
	uint32_t depth;
	struct fab_req *slots;
	uint32_t *free_stack; /* owner thread */
	uint32_t nfree;
	uint32_t inflight;    /* owner thread: posted, not polled */
	fab_region *hint;     /* owner thread: last region found */
	_Atomic(struct fab_req *) done;   /* pushed by the fabric thread */
	struct fab_req *ready;            /* owner thread, oldest first */
	_Atomic(struct fab_notif *) notifs;
	struct fab_notif *nready;
	kvf_task kick;                    /* cancel requests: scan on the fabric thread */
	_Atomic int kick_pending;
};

struct fab_dereg_wait {
	kvf_task task;
	sem_t sem;
	kvf_fabric *f;
	fab_region *r;
	int force;
	int rc;
};

struct kvf_fabric {
	kvf_fabric_opts opts; /* strings point at the copies below */
	char *s_listen, *s_advertise, *s_node_name, *s_ofi_provider, *s_verbs_devices;
	kvf_loop *loop;
	pthread_t thread;
	int thread_started;
	uint8_t node[16];
	char name[FAB_NAME_MAX];
	char adv_host[KVF_NET_HOST_MAX];
	uint16_t port;
	const struct fab_transport *tr[FAB_NT];
	void *tp[FAB_NT];
	unsigned open_mask;
	char why[FAB_NT][192];

	fab_region *regions;
	uint32_t nregions;
	pthread_mutex_t reg_lock;   /* slot allocation; one dereg at a time */
	struct fab_dereg_wait *dereg_cur;

	struct fab_peer *peers;     /* fabric thread */
	uint32_t npeers;

	pthread_mutex_t cq_lock;
	kvf_fabric_cq *cqs;
	_Atomic(kvf_fabric_cq *) notif_cq;

	kvf_timer tick;
	uint64_t tick_ms;
	uint64_t notif_dropped;
	uint64_t served_bytes[FAB_NT][2], served_ops[FAB_NT][2];

	kvf_metric *m[M_N];
	kvf_series *m_served[FAB_NT][2];
};

static const struct fab_transport *const all_transports[FAB_NT] = {
	NULL, &fab_tcp_transport, &fab_shm_transport, &fab_verbs_transport, &fab_ofi_transport,
	&fab_cuda_ipc_transport,
};

static const char *op_name(int opcode)
{
	return opcode == FAB_OP_READ ? "read" : opcode == FAB_OP_WRITE ? "write" : "notify";
}

/* ---- memfd-backed memory (process-wide) ---- */

struct memblk {
	struct memblk *next;
	uint8_t *p;
	size_t len;
	int fd;
};

static pthread_mutex_t mem_lock = PTHREAD_MUTEX_INITIALIZER;
static struct memblk *mem_list;

int kvf_fabric_mem_alloc(size_t len, void **out)
{
	if (!out || len == 0)
		return kvf_errf(KVF_E_INVAL, "fabric: kvf_fabric_mem_alloc: zero length");
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);
	size_t alen = (len + pg - 1) / pg * pg;
	struct memblk *b = kvf_calloc(1, sizeof(*b));
	if (!b)
		return kvf_errf(KVF_E_NOMEM, "fabric: kvf_fabric_mem_alloc");
	b->fd = memfd_create("kvf-fabric-pool", MFD_CLOEXEC);
	if (b->fd < 0) {
		int e = errno;
		kvf_free(b);
		return kvf_errf(kvf_err_from_errno(e), "fabric: memfd_create: %s", strerror(e));
	}
	if (ftruncate(b->fd, (off_t)alen) != 0) {
		int e = errno;
		close(b->fd);
		kvf_free(b);
		return kvf_errf(KVF_E_NOMEM, "fabric: ftruncate(memfd, %zu): %s", alen, strerror(e));
	}
	void *p = mmap(NULL, alen, PROT_READ | PROT_WRITE, MAP_SHARED, b->fd, 0);
	if (p == MAP_FAILED) {
		int e = errno;
		close(b->fd);
		kvf_free(b);
		return kvf_errf(KVF_E_NOMEM, "fabric: mmap(memfd, %zu): %s", alen, strerror(e));
	}
	b->p = p;
	b->len = alen;
	pthread_mutex_lock(&mem_lock);
	b->next = mem_list;
	mem_list = b;
	pthread_mutex_unlock(&mem_lock);
	*out = p;
	return 0;
}

void kvf_fabric_mem_free(void *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&mem_lock);
	struct memblk **pp = &mem_list, *b = NULL;
	for (; *pp; pp = &(*pp)->next) {
		if ((*pp)->p == p) {
			b = *pp;
			*pp = b->next;
			break;
		}
	}
	pthread_mutex_unlock(&mem_lock);
	if (!b)
		return;
	munmap(b->p, b->len);
	close(b->fd);
	kvf_free(b);
}

int fab_mem_lookup(const void *p, size_t len, int *fd, uint64_t *off)
{
	const uint8_t *q = p;
	int rc = KVF_E_NOTFOUND;
	pthread_mutex_lock(&mem_lock);
	for (struct memblk *b = mem_list; b; b = b->next) {
		if (q >= b->p && len <= b->len && (size_t)(q - b->p) <= b->len - len) {
			*fd = b->fd;
			*off = (uint64_t)(q - b->p);
			rc = 0;
			break;
		}
	}
	pthread_mutex_unlock(&mem_lock);
	return rc;
}

/* ---- small helpers ---- */

kvf_loop *fab_loop(kvf_fabric *f) { return f->loop; }
const kvf_fabric_opts *fab_opts(kvf_fabric *f) { return &f->opts; }
const uint8_t *fab_node(kvf_fabric *f) { return f->node; }
void *fab_tp(kvf_fabric *f, int kind) { return kind > 0 && kind < FAB_NT ? f->tp[kind] : NULL; }
const char *fab_advertise_host(kvf_fabric *f) { return f->adv_host; }
uint16_t kvf_fabric_port(const kvf_fabric *f) { return f->port; }
unsigned kvf_fabric_transports(const kvf_fabric *f) { return f->open_mask; }
void kvf_fabric_node_id(const kvf_fabric *f, uint8_t out[16]) { memcpy(out, f->node, 16); }
const char *kvf_fabric_node_name(const kvf_fabric *f) { return f->name; }
struct fab_dereg_wait *fab_dereg_current(kvf_fabric *f) { return f->dereg_cur; }
void *kvf_fabric_mr_addr(const kvf_fabric_mr *mr) { return mr ? mr->base : NULL; }
size_t kvf_fabric_mr_len(const kvf_fabric_mr *mr) { return mr ? (size_t)mr->len : 0; }

const char *kvf_fabric_unavailable_reason(const kvf_fabric *f, int t)
{
	if (t <= 0 || t >= FAB_NT)
		return "no such transport";
	return f->open_mask & (1u << t) ? "" : f->why[t];
}

static void node_hex(const uint8_t node[16], char out[17])
{
	for (int i = 0; i < 8; i++)
		snprintf(out + 2 * i, 3, "%02x", node[i]);
}

/* Runs fn(f, arg) on the fabric thread and waits for it (directly when the
 * thread is not running). Not for use on the fabric thread itself. */
struct fab_sync {
	kvf_task task;
	sem_t sem;
	kvf_fabric *f;
	void (*fn)(kvf_fabric *f, void *arg);
	void *arg;
};

static void sync_tramp(kvf_loop *loop, kvf_task *t)
{
	struct fab_sync *s = (struct fab_sync *)t;
	s->fn(s->f, s->arg);
	sem_post(&s->sem);
}

static void fab_call(kvf_fabric *f, void (*fn)(kvf_fabric *f, void *arg), void *arg)
{
	if (!f->thread_started) {
		fn(f, arg);
		return;
	}
	struct fab_sync s;
	memset(&s, 0, sizeof(s));
	sem_init(&s.sem, 0, 0);
	s.f = f;
	s.fn = fn;
	s.arg = arg;
	s.task.fn = sync_tramp;
	kvf_loop_post(f->loop, &s.task);
	while (sem_wait(&s.sem) != 0 && errno == EINTR)
		;
	sem_destroy(&s.sem);
}

/* ---- request queues for transports ---- */

void fab_rq_push(struct fab_rq *q, struct fab_req *r)
{
	r->tnext = NULL;
	if (q->tail)
		q->tail->tnext = r;
	else
		q->head = r;
	q->tail = r;
	q->n++;
}

struct fab_req *fab_rq_pop(struct fab_rq *q)
{
	struct fab_req *r = q->head;
	if (!r)
		return NULL;
	q->head = r->tnext;
	if (!q->head)
		q->tail = NULL;
	r->tnext = NULL;
	q->n--;
	return r;
}

int fab_rq_remove(struct fab_rq *q, struct fab_req *r)
{
	struct fab_req *prev = NULL;
	for (struct fab_req *x = q->head; x; prev = x, x = x->tnext) {
		if (x != r)
			continue;
		if (prev)
			prev->tnext = x->tnext;
		else
			q->head = x->tnext;
		if (q->tail == x)
			q->tail = prev;
		x->tnext = NULL;
		q->n--;
		return 1;
	}
	return 0;
}

/* ---- metrics ---- */

static void peer_series(kvf_fabric *f, struct fab_peer *p, int t)
{
	if (!f->m[0] || p->m_lat[t])
		return;
	const char *tn = kvf_fabric_transport_name(t);
	for (int o = 0; o < 2; o++) {
		const char *v[3] = { tn, p->name, o ? "write" : "read" };
		kvf_metric_labels(f->m[M_BYTES], v, &p->m_bytes[t][o]);
		kvf_metric_labels(f->m[M_OPS], v, &p->m_ops[t][o]);
	}
	const char *v2[2] = { tn, p->name };
	kvf_metric_labels(f->m[M_ERRORS], v2, &p->m_err[t]);
	kvf_metric_labels(f->m[M_LAT], v2, &p->m_lat[t]);
}

void fab_served(kvf_fabric *f, int tkind, int opcode, uint64_t bytes)
{
	int o = opcode == FAB_OP_WRITE;
	f->served_bytes[tkind][o] += bytes;
	f->served_ops[tkind][o]++;
	if (!f->m[0])
		return;
	if (!f->m_served[tkind][o]) {
		const char *v[2] = { kvf_fabric_transport_name(tkind), o ? "write" : "read" };
		kvf_metric_labels(f->m[M_SERVED], v, &f->m_served[tkind][o]);
	}
	if (f->m_served[tkind][o])
		kvf_series_add(f->m_served[tkind][o], bytes);
}

/* ---- request completion (fabric thread) ---- */

static void fence_check(struct fab_peer *p);
static void on_tick(kvf_loop *loop, kvf_timer *t, void *ud);
static void att_drop_all(struct fab_peer *p, int err, const char *why);

static void cq_push_done(kvf_fabric_cq *cq, struct fab_req *r)
{
	struct fab_req *head = atomic_load_explicit(&cq->done, memory_order_relaxed);
	do {
		r->cnext = head;
	} while (!atomic_compare_exchange_weak_explicit(&cq->done, &head, r, memory_order_release,
							memory_order_relaxed));
	if (!head) {
		uint64_t one = 1;
		ssize_t w = write(cq->efd, &one, sizeof(one));
		(void)w;
	}
}

static void req_finish(struct fab_req *r)
{
	kvf_fabric *f = r->cq->f;
	struct fab_peer *p = r->peer;
	r->finished = 1;
	if (p && r->opcode != FAB_OP_NOTIFY) {
		if (r->aprev)
			r->aprev->anext = r->anext;
		else
			p->act_head = r->anext;
		if (r->anext)
			r->anext->aprev = r->aprev;
		else
			p->act_tail = r->aprev;
		r->aprev = r->anext = NULL;
		p->n_active--;
	}
	for (uint32_t i = 0; i < r->nlregs; i++)
		atomic_fetch_sub_explicit(&r->lregs[i]->inflight, 1, memory_order_release);
	r->latency_ns = kvf_now_ns() - r->t_post_ns;
	if (p) {
		int t = r->tkind, o = r->opcode == FAB_OP_WRITE;
		peer_series(f, p, t);
		p->used_transports |= 1u << t;
		if (r->status == 0 && r->opcode != FAB_OP_NOTIFY) {
			uint64_t b = atomic_load_explicit(&r->bytes, memory_order_relaxed);
			p->bytes[t][o] += b;
			p->ops[t][o] += r->nops;
			if (p->m_bytes[t][o]) {
				kvf_series_add(p->m_bytes[t][o], b);
				kvf_series_add(p->m_ops[t][o], r->nops);
			}
		} else if (r->status != 0) {
			p->errors++;
			if (p->m_err[t])
				kvf_series_add(p->m_err[t], 1);
		}
		if (p->m_lat[t])
			kvf_series_observe(p->m_lat[t], (double)r->latency_ns / 1e9);
	}
	if (f->m[0])
		kvf_series_gauge_add(kvf_metric_series(f->m[M_INFLIGHT]), -1);
	atomic_store_explicit(&r->state, FAB_REQ_DONE, memory_order_release);
	cq_push_done(r->cq, r); /* r belongs to the cq's owner from here */
	if (p)
		fence_check(p);
}

static void req_maybe_finish(struct fab_req *r)
{
	if (!r->finished && r->issued && r->units == 0)
		req_finish(r);
}

void fab_req_units_add(struct fab_req *r, uint32_t n)
{
	r->units += n;
}

static void set_status(struct fab_req *r, int status, const char *detail)
{
	if (status == 0 || r->status != 0)
		return;
	r->status = status;
	snprintf(r->detail, sizeof(r->detail), "%s", detail ? detail : kvf_strerror(status));
}

void fab_req_unit_done(struct fab_req *r, uint64_t bytes, int status, const char *detail)
{
	if (bytes)
		atomic_fetch_add_explicit(&r->bytes, bytes, memory_order_relaxed);
	set_status(r, status, detail);
	r->units--;
	req_maybe_finish(r);
}

void fab_req_issued(struct fab_req *r)
{
	r->issued = 1;
	req_maybe_finish(r);
}

void fab_req_stop(struct fab_req *r, int err, const char *detail)
{
	set_status(r, err, detail);
	r->issued = 1;
	req_maybe_finish(r);
}

/* ---- peers (fabric thread) ---- */

struct fab_peer *fab_peer_by_node(kvf_fabric *f, const uint8_t node[16])
{
	for (struct fab_peer *p = f->peers; p; p = p->next)
		if (memcmp(p->node, node, 16) == 0)
			return p;
	return NULL;
}

static struct fab_peer *peer_get(kvf_fabric *f, const kvf_fabric_rdesc *d)
{
	struct fab_peer *p = fab_peer_by_node(f, d->node);
	if (!p) {
		p = kvf_calloc(1, sizeof(*p));
		if (!p)
			return NULL;
		p->f = f;
		memcpy(p->node, d->node, 16);
		snprintf(p->name, sizeof(p->name), "%s", d->name[0] ? d->name : "?");
		p->host = d->host;
		p->next = f->peers;
		f->peers = p;
		f->npeers++;
	}
	for (int t = 1; t < FAB_NT; t++) {
		const struct fab_taddr *a = &d->addr[t];
		if (a->len && (a->len != p->addr[t].len || memcmp(a->b, p->addr[t].b, a->len) != 0))
			p->addr[t] = *a;
	}
	return p;
}

void fab_peer_progress(struct fab_peer *p)
{
	p->last_progress_ms = kvf_loop_now_ms(p->f->loop);
}

static void tick_arm(kvf_fabric *f)
{
	if (!kvf_timer_armed(&f->tick))
		kvf_loop_timer_start(f->loop, &f->tick, f->tick_ms, f->tick_ms, on_tick, f);
}

void fab_peer_fail(struct fab_peer *p, int err, const char *fmt, ...)
{
	kvf_fabric *f = p->f;
	char detail[160];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	int had_work = p->n_active || p->n_fenced;
	if (had_work || err != KVF_E_PEERDEAD) {
		p->fails++;
		snprintf(p->last_err, sizeof(p->last_err), "%s: %s", kvf_errname(err), detail);
		if (f->m[0]) {
			const char *v[1] = { p->name };
			kvf_series *s;
			if (kvf_metric_labels(f->m[M_PEER_FAILS], v, &s) == 0)
				kvf_series_add(s, 1);
		}
		KVF_LOG_RL(KVF_LOG_WARN, 10, 1000, FAB_LOG, "peer failed", "peer=%s err=%s detail=\"%s\" active=%u",
			   p->name, kvf_errname(err), detail, p->n_active);
	}
	p->state = FAB_PEER_IDLE;
	p->failing++;
	for (int t = 1; t < FAB_NT; t++)
		if (f->tp[t] && f->tr[t]->peer_fail)
			f->tr[t]->peer_fail(f->tp[t], p, err, detail);
	p->failing--;
	att_drop_all(p, err, detail);
	while (p->fence_head) {
		struct fab_req *r = p->fence_head;
		p->fence_head = r->anext;
		if (!p->fence_head)
			p->fence_tail = NULL;
		r->anext = NULL;
		p->n_fenced--;
		fab_req_stop(r, err, detail);
	}
}

/* Releases notifies whose earlier data requests have all completed. */
static void fence_check(struct fab_peer *p)
{
	if (p->failing)
		return;
	while (p->fence_head) {
		struct fab_req *r = p->fence_head;
		if (p->act_head && p->act_head->seq < r->seq)
			return;
		p->fence_head = r->anext;
		if (!p->fence_head)
			p->fence_tail = NULL;
		r->anext = NULL;
		p->n_fenced--;
		fab_tcp_send_notify(p->f->tp[KVF_FABRIC_TCP], p, r);
	}
}

void fab_deliver_notif(kvf_fabric *f, const uint8_t node[16], const char *name, const void *msg, size_t len)
{
	kvf_fabric_cq *cq = atomic_load_explicit(&f->notif_cq, memory_order_acquire);
	if (!cq || len > KVF_FABRIC_NOTIF_MAX) {
		f->notif_dropped++;
		KVF_LOG_RL(KVF_LOG_WARN, 5, 1000, FAB_LOG, "notification dropped", "from=%s reason=%s", name,
			   cq ? "too long" : "no cq with KVF_FABRIC_CQ_NOTIFS");
		return;
	}
	struct fab_notif *n = kvf_malloc(sizeof(*n));
	if (!n) {
		f->notif_dropped++;
		return;
	}
	memcpy(n->node, node, 16);
	snprintf(n->name, sizeof(n->name), "%s", name);
	n->len = (uint32_t)len;
	memcpy(n->msg, msg, len);
	struct fab_notif *head = atomic_load_explicit(&cq->notifs, memory_order_relaxed);
	do {
		n->next = head;
	} while (!atomic_compare_exchange_weak_explicit(&cq->notifs, &head, n, memory_order_release,
							memory_order_relaxed));
	if (!head) {
		uint64_t one = 1;
		ssize_t w = write(cq->efd, &one, sizeof(one));
		(void)w;
	}
}

/* ---- attachments ---- */

static struct fab_attach *att_lookup(struct fab_peer *p, uint32_t region)
{
	for (struct fab_attach *a = p->atts; a; a = a->next)
		if (a->region == region)
			return a;
	return NULL;
}

static void att_park(struct fab_attach *a, struct fab_req *r)
{
	r->tnext = NULL;
	if (a->wait_tail)
		a->wait_tail->tnext = r;
	else
		a->wait_head = r;
	a->wait_tail = r;
}

static void att_unlink(struct fab_peer *p, struct fab_attach *a)
{
	for (struct fab_attach **pp = &p->atts; *pp; pp = &(*pp)->next) {
		if (*pp == a) {
			*pp = a->next;
			break;
		}
	}
}

/* Checks r against what the target vouched for; 0 or KVF_E_ACCESS. */
static int att_check(const struct fab_attach *a, const struct fab_req *r, char *why, size_t cap)
{
	const kvf_fabric_rdesc *d = r->rd;
	int t = r->tkind;
	if (d->mem != a->mem) {
		snprintf(why, cap, "%s: descriptor memory kind differs from the region's", d->name);
		return KVF_E_ACCESS;
	}
	if (d->key[t].present != a->key[t].present || d->key[t].key != a->key[t].key ||
	    d->key[t].xlen != a->key[t].xlen || memcmp(d->key[t].x, a->key[t].x, d->key[t].xlen) != 0) {
		snprintf(why, cap, "%s: descriptor's %s key is not the region's", d->name, kvf_fabric_transport_name(t));
		return KVF_E_ACCESS;
	}
	uint32_t last = UINT32_MAX;
	for (uint32_t i = 0; i < r->nops; i++) {
		uint32_t bi = r->ops[i].blk;
		if (bi == last)
			continue;
		last = bi;
		const struct fab_rblock *b = &d->blocks[bi];
		if (b->addr < a->base || b->len > a->len || b->addr - a->base > a->len - b->len) {
			snprintf(why, cap, "%s: block %u outside region %u", d->name, bi, a->region);
			return KVF_E_ACCESS;
		}
		if (fab_token(a->secret, a->region, b->addr, b->len) != b->token) {
			snprintf(why, cap, "%s: bad access token for block %u of region %u", d->name, bi, a->region);
			return KVF_E_ACCESS;
		}
	}
	return 0;
}

static void att_submit(kvf_fabric *f, struct fab_peer *p, struct fab_attach *a, struct fab_req *r)
{
	char why[160];
	if (atomic_load_explicit(&r->cancel, memory_order_acquire)) {
		fab_req_stop(r, KVF_E_CANCELED, "canceled");
		return;
	}
	int rc = att_check(a, r, why, sizeof(why));
	if (rc < 0) {
		fab_req_stop(r, rc, why);
		return;
	}
	f->tr[r->tkind]->submit(f->tp[r->tkind], p, r);
}

static void attach_route(kvf_fabric *f, struct fab_peer *p, struct fab_req *r)
{
	struct fab_attach *a = att_lookup(p, r->rd->region);
	if (a && a->state == FAB_ATT_READY) {
		att_submit(f, p, a, r);
		return;
	}
	if (!a) {
		a = kvf_calloc(1, sizeof(*a));
		if (!a) {
			fab_req_stop(r, KVF_E_NOMEM, "fabric: out of memory for an attachment");
			return;
		}
		a->region = r->rd->region;
		a->blk = r->rd->blocks[r->ops[0].blk];
		a->next = p->atts;
		p->atts = a;
		att_park(a, r);
		fab_tcp_send_attach(f->tp[KVF_FABRIC_TCP], p, a);
		return;
	}
	att_park(a, r);
}

void fab_attach_reply(struct fab_peer *p, struct fab_attach *a, int rc, const char *why,
		      const struct tcp_attach_ok *ok)
{
	kvf_fabric *f = p->f;
	fab_peer_progress(p);
	if (rc == 0 && ok->region != a->region) {
		rc = KVF_E_PROTO;
		why = "ATTACH_OK for another region";
	}
	struct fab_req *w = a->wait_head;
	a->wait_head = a->wait_tail = NULL;
	if (rc == 0) {
		a->state = FAB_ATT_READY;
		a->mem = ok->mem;
		a->base = ok->base;
		a->len = ok->len;
		memcpy(a->secret, ok->secret, 16);
		memcpy(a->key, ok->key, sizeof(a->key));
		while (w) {
			struct fab_req *nx = w->tnext;
			w->tnext = NULL;
			att_submit(f, p, a, w);
			w = nx;
		}
		return;
	}
	/* refused: fail the requests that asked with the same block; the others
	 * ask again with their own token */
	struct fab_rblock asked = a->blk;
	att_unlink(p, a);
	kvf_free(a);
	char det[200];
	snprintf(det, sizeof(det), "%s: %s", p->name, why ? why : kvf_strerror(rc));
	while (w) {
		struct fab_req *nx = w->tnext;
		w->tnext = NULL;
		const struct fab_rblock *b = &w->rd->blocks[w->ops[0].blk];
		if (b->addr == asked.addr && b->len == asked.len && b->token == asked.token)
			fab_req_stop(w, rc, det);
		else
			attach_route(f, p, w);
		w = nx;
	}
}

/* Fails parked requests and forgets every attachment of p. */
static void att_drop_all(struct fab_peer *p, int err, const char *why)
{
	while (p->atts) {
		struct fab_attach *a = p->atts;
		p->atts = a->next;
		struct fab_req *w = a->wait_head;
		kvf_free(a);
		while (w) {
			struct fab_req *nx = w->tnext;
			w->tnext = NULL;
			fab_req_stop(w, err, why);
			w = nx;
		}
	}
}

/* Removes r from an attachment's wait list; 1 if it was parked. */
static int att_unpark(struct fab_peer *p, struct fab_req *r)
{
	for (struct fab_attach *a = p->atts; a; a = a->next) {
		struct fab_req *prev = NULL;
		for (struct fab_req *x = a->wait_head; x; prev = x, x = x->tnext) {
			if (x != r)
				continue;
			if (prev)
				prev->tnext = x->tnext;
			else
				a->wait_head = x->tnext;
			if (a->wait_tail == x)
				a->wait_tail = prev;
			x->tnext = NULL;
			return 1;
		}
	}
	return 0;
}

static int needs_attach(int t)
{
	return t == KVF_FABRIC_OFI || t == KVF_FABRIC_VERBS || t == KVF_FABRIC_CUDA_IPC;
}

/* A request arrives on the fabric thread. */
static void on_post(kvf_loop *loop, kvf_task *t)
{
	struct fab_req *r = (struct fab_req *)t;
	kvf_fabric *f = r->cq->f;
	if (f->m[0])
		kvf_series_gauge_add(kvf_metric_series(f->m[M_INFLIGHT]), 1);
	struct fab_peer *p = peer_get(f, r->rd);
	if (!p) {
		fab_req_stop(r, KVF_E_NOMEM, "fabric: out of memory for a peer");
		return;
	}
	r->peer = p;
	r->seq = ++p->next_seq;
	uint64_t now = kvf_loop_now_ms(loop);
	p->last_used_ms = now;
	if (!p->n_active && !p->n_fenced)
		p->last_progress_ms = now;
	tick_arm(f);
	if (atomic_load_explicit(&r->cancel, memory_order_acquire)) {
		r->peer = NULL; /* never queued anywhere */
		fab_req_stop(r, KVF_E_CANCELED, "canceled");
		return;
	}
	void *tcp = f->tp[KVF_FABRIC_TCP];
	if (r->opcode == FAB_OP_NOTIFY) {
		r->anext = NULL;
		if (p->fence_tail)
			p->fence_tail->anext = r;
		else
			p->fence_head = r;
		p->fence_tail = r;
		p->n_fenced++;
		fab_tcp_ensure_control(tcp, p);
		fence_check(p);
		return;
	}
	r->aprev = p->act_tail;
	r->anext = NULL;
	if (p->act_tail)
		p->act_tail->anext = r;
	else
		p->act_head = r;
	p->act_tail = r;
	p->n_active++;
	int tk = r->tkind;
	if (tk != KVF_FABRIC_TCP)
		fab_tcp_ensure_control(tcp, p);
	if (needs_attach(tk))
		attach_route(f, p, r);
	else
		f->tr[tk]->submit(f->tp[tk], p, r); /* r may be complete now: do not touch it */
}

static void on_tick(kvf_loop *loop, kvf_timer *t, void *ud)
{
	kvf_fabric *f = ud;
	uint64_t now = kvf_loop_now_ms(loop);
	int busy = 0;
	for (struct fab_peer *p = f->peers; p; p = p->next) {
		if (!p->n_active && !p->n_fenced)
			continue;
		if (now - p->last_progress_ms >= f->opts.timeout_ms) {
			fab_peer_fail(p, KVF_E_TIMEOUT, "no progress from %s for %llu ms", p->name,
				      (unsigned long long)(now - p->last_progress_ms));
		}
		busy |= p->n_active || p->n_fenced;
	}
	if (!busy)
		kvf_loop_timer_stop(loop, &f->tick);
}

/* Cancels flagged requests of a cq (fabric thread). */
static void on_kick(kvf_loop *loop, kvf_task *t)
{
	kvf_fabric_cq *cq = t->arg;
	kvf_fabric *f = cq->f;
	atomic_store(&cq->kick_pending, 0);
	for (uint32_t i = 0; i < cq->depth; i++) {
		struct fab_req *r = &cq->slots[i];
		if (atomic_load_explicit(&r->state, memory_order_acquire) != FAB_REQ_POSTED || r->finished ||
		    !atomic_load(&r->cancel) || !r->peer)
			continue;
		struct fab_peer *p = r->peer;
		if (r->opcode == FAB_OP_NOTIFY) {
			/* still fenced? then it is ours to drop */
			struct fab_req *prev = NULL, *x = p->fence_head;
			for (; x && x != r; prev = x, x = x->anext)
				;
			if (x) {
				if (prev)
					prev->anext = x->anext;
				else
					p->fence_head = x->anext;
				if (p->fence_tail == x)
					p->fence_tail = prev;
				x->anext = NULL;
				p->n_fenced--;
				fab_req_stop(r, KVF_E_CANCELED, "canceled");
				continue;
			}
			f->tr[KVF_FABRIC_TCP]->cancel(f->tp[KVF_FABRIC_TCP], p, r);
			continue;
		}
		set_status(r, KVF_E_CANCELED, "canceled");
		if (att_unpark(p, r))
			fab_req_stop(r, KVF_E_CANCELED, "canceled");
		else
			f->tr[r->tkind]->cancel(f->tp[r->tkind], p, r);
	}
}

/* ---- the fabric thread ---- */

static void *fab_thread(void *arg)
{
	kvf_fabric *f = arg;
	char nm[16];
	snprintf(nm, sizeof(nm), "kvf-fabric");
	pthread_setname_np(pthread_self(), nm);
	kvf_loop_run(f->loop);
	return NULL;
}

/* ---- open / close ---- */

static int pick_advertise(kvf_fabric *f, const char *listen_host)
{
	if (f->opts.advertise && f->opts.advertise[0]) {
		snprintf(f->adv_host, sizeof(f->adv_host), "%s", f->opts.advertise);
		return 0;
	}
	if (listen_host[0] && strcmp(listen_host, "0.0.0.0") != 0 && strcmp(listen_host, "::") != 0 &&
	    strcmp(listen_host, "*") != 0) {
		snprintf(f->adv_host, sizeof(f->adv_host), "%s", listen_host);
		return 0;
	}
	snprintf(f->adv_host, sizeof(f->adv_host), "127.0.0.1");
	struct ifaddrs *ifa = NULL;
	if (getifaddrs(&ifa) != 0)
		return 0;
	for (struct ifaddrs *i = ifa; i; i = i->ifa_next) {
		if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET)
			continue;
		struct sockaddr_in *sin = (struct sockaddr_in *)i->ifa_addr;
		if ((ntohl(sin->sin_addr.s_addr) >> 24) == 127)
			continue;
		inet_ntop(AF_INET, &sin->sin_addr, f->adv_host, sizeof(f->adv_host));
		break;
	}
	freeifaddrs(ifa);
	return 0;
}

static char *dup_opt(const char *s)
{
	return kvf_strdup(s ? s : "");
}

static void free_fabric(kvf_fabric *f)
{
	kvf_free(f->s_listen);
	kvf_free(f->s_advertise);
	kvf_free(f->s_node_name);
	kvf_free(f->s_ofi_provider);
	kvf_free(f->s_verbs_devices);
	kvf_free(f->regions);
	pthread_mutex_destroy(&f->reg_lock);
	pthread_mutex_destroy(&f->cq_lock);
	kvf_free(f);
}

static int fill_random(void *p, size_t n)
{
	uint8_t *b = p;
	while (n) {
		ssize_t r = getrandom(b, n, 0);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return kvf_errf(KVF_E_IO, "fabric: getrandom: %s", strerror(errno));
		}
		b += r;
		n -= (size_t)r;
	}
	return 0;
}

int kvf_fabric_open(const kvf_fabric_opts *opts, kvf_fabric **out)
{
	int rc;
	if (!opts || !out)
		return kvf_errf(KVF_E_INVAL, "fabric: kvf_fabric_open: NULL argument");
	if (opts->transport < 0 || opts->transport >= FAB_NT || opts->timeout_ms == 0 ||
	    opts->conns_per_peer < 1 || opts->cq_depth < 1 || opts->max_regions < 1 ||
	    opts->max_regions > 65535 || opts->tcp_chunk_bytes < 4096 || opts->tcp_window < 1)
		return kvf_errf(KVF_E_INVAL, "fabric: options out of range (start from kvf_fabric_opts_init)");
	kvf_fabric *f = kvf_calloc(1, sizeof(*f));
	if (!f)
		return kvf_errf(KVF_E_NOMEM, "fabric: open");
	pthread_mutex_init(&f->reg_lock, NULL);
	pthread_mutex_init(&f->cq_lock, NULL);
	f->opts = *opts;
	f->s_listen = dup_opt(opts->listen && opts->listen[0] ? opts->listen : "127.0.0.1:0");
	f->s_advertise = dup_opt(opts->advertise);
	f->s_node_name = dup_opt(opts->node_name);
	f->s_ofi_provider = dup_opt(opts->ofi_provider);
	f->s_verbs_devices = dup_opt(opts->verbs_devices);
	f->nregions = (uint32_t)opts->max_regions;
	f->regions = kvf_calloc(f->nregions, sizeof(*f->regions));
	if (!f->s_listen || !f->s_advertise || !f->s_node_name || !f->s_ofi_provider ||
	    !f->s_verbs_devices || !f->regions) {
		free_fabric(f);
		return kvf_errf(KVF_E_NOMEM, "fabric: open");
	}
	f->opts.listen = f->s_listen;
	f->opts.advertise = f->s_advertise;
	f->opts.node_name = f->s_node_name;
	f->opts.ofi_provider = f->s_ofi_provider;
	f->opts.verbs_devices = f->s_verbs_devices;
	for (uint32_t i = 0; i < f->nregions; i++) {
		f->regions[i].slot = i;
		f->regions[i].memfd = -1;
	}
	f->tick_ms = opts->timeout_ms / 8;
	if (f->tick_ms < 5)
		f->tick_ms = 5;
	if (f->tick_ms > 250)
		f->tick_ms = 250;
	f->tick.cb = on_tick;
	f->tick.ud = f;
	if ((rc = fill_random(f->node, 16)) < 0) {
		free_fabric(f);
		return rc;
	}
	if ((rc = kvf_loop_new(&f->loop)) < 0) {
		free_fabric(f);
		return rc;
	}
	/* timer callbacks are given at start; kvf_loop_timer_start stores them */
	if (opts->metrics && (rc = kvf_metrics_register(opts->metrics, fab_metric_defs, M_N, f->m)) < 0)
		goto err_loop;

	char host[KVF_NET_HOST_MAX];
	uint16_t lport;
	if ((rc = kvf_net_parse_hostport(f->s_listen, host, sizeof(host), &lport)) < 0)
		goto err_loop;
	pick_advertise(f, host);

	/* tcp first: it is the control channel and gives the port */
	for (int t = 1; t < FAB_NT; t++) {
		const struct fab_transport *tr = all_transports[t];
		f->tr[t] = tr;
		if (opts->transport != KVF_FABRIC_AUTO && t != opts->transport && t != KVF_FABRIC_TCP) {
			snprintf(f->why[t], sizeof(f->why[t]), "not selected (transport = %s)",
				 kvf_fabric_transport_name(opts->transport));
			continue;
		}
		kvf_err_clear();
		rc = tr->open(f, &f->tp[t]);
		if (rc < 0) {
			snprintf(f->why[t], sizeof(f->why[t]), "%s", kvf_errmsg());
			f->tp[t] = NULL;
			if (t == KVF_FABRIC_TCP || t == opts->transport) {
				rc = kvf_errf(rc, "fabric: transport %s: %s", tr->name, f->why[t]);
				goto err_transports;
			}
			KVF_INFO(FAB_LOG, "transport unavailable", "transport=%s reason=\"%s\"", tr->name, f->why[t]);
			continue;
		}
		f->open_mask |= 1u << t;
		if (t == KVF_FABRIC_TCP) {
			if (f->s_node_name[0])
				snprintf(f->name, sizeof(f->name), "%s", f->s_node_name);
			else
				snprintf(f->name, sizeof(f->name), "%s:%u", f->adv_host, f->port);
		}
	}
	f->thread_started = 1;
	if (pthread_create(&f->thread, NULL, fab_thread, f) != 0) {
		f->thread_started = 0;
		rc = kvf_errf(KVF_E_IO, "fabric: pthread_create failed");
		goto err_transports;
	}
	{
		char tl[96] = "";
		for (int t = 1; t < FAB_NT; t++)
			if (f->open_mask & (1u << t))
				snprintf(tl + strlen(tl), sizeof(tl) - strlen(tl), "%s%s", tl[0] ? "," : "",
					 all_transports[t]->name);
		char nh[17];
		node_hex(f->node, nh);
		KVF_INFO(FAB_LOG, "fabric open", "name=%s node=%s port=%u transports=%s mode=%s", f->name, nh,
			 f->port, tl, kvf_fabric_transport_name(opts->transport));
	}
	*out = f;
	return 0;

err_transports:
	for (int t = FAB_NT - 1; t >= 1; t--)
		if (f->tp[t])
			f->tr[t]->close(f->tp[t]);
err_loop:
	kvf_loop_destroy(f->loop);
	free_fabric(f);
	return rc;
}

void fab_set_port(kvf_fabric *f, uint16_t port)
{
	f->port = port;
}

static void cq_free(kvf_fabric_cq *cq);

void kvf_fabric_close(kvf_fabric *f)
{
	if (!f)
		return;
	if (f->thread_started) {
		kvf_loop_stop(f->loop);
		pthread_join(f->thread, NULL);
		f->thread_started = 0;
	}
	/* From here this thread is the fabric thread. Run tasks still queued
	 * (posted requests), then fail everything in flight. */
	kvf_loop_run_once(f->loop, 0);
	for (struct fab_peer *p = f->peers; p; p = p->next)
		if (p->n_active || p->n_fenced)
			fab_peer_fail(p, KVF_E_CANCELED, "fabric closing");
	for (struct fab_peer *p = f->peers; p; p = p->next)
		for (int t = 1; t < FAB_NT; t++)
			if (f->tp[t] && f->tr[t]->peer_free)
				f->tr[t]->peer_free(f->tp[t], p);
	while (f->peers) {
		struct fab_peer *p = f->peers;
		f->peers = p->next;
		att_drop_all(p, KVF_E_CANCELED, "fabric closing");
		kvf_free(p);
	}
	for (uint32_t i = 0; i < f->nregions; i++) {
		fab_region *r = &f->regions[i];
		if (!atomic_load(&r->live))
			continue;
		for (int t = FAB_NT - 1; t >= 1; t--)
			if (f->tp[t] && f->tr[t]->dereg)
				f->tr[t]->dereg(f->tp[t], r, 1);
		atomic_store(&r->live, 0);
	}
	for (int t = FAB_NT - 1; t >= 1; t--)
		if (f->tp[t])
			f->tr[t]->close(f->tp[t]);
	if (kvf_timer_armed(&f->tick))
		kvf_loop_timer_stop(f->loop, &f->tick);
	while (f->cqs) {
		kvf_fabric_cq *cq = f->cqs;
		f->cqs = cq->next;
		cq_free(cq);
	}
	kvf_loop_destroy(f->loop);
	free_fabric(f);
}

/* ---- regions ---- */

fab_region *fab_region_by_id(kvf_fabric *f, uint32_t id)
{
	uint32_t slot = id & 0xffff;
	if (slot >= f->nregions)
		return NULL;
	fab_region *r = &f->regions[slot];
	if (!atomic_load_explicit(&r->live, memory_order_acquire) || r->id != id)
		return NULL;
	return r;
}

struct reg_call {
	fab_region *r;
	int rc;
	char err[192];
};

static void reg_on_thread(kvf_fabric *f, void *arg)
{
	struct reg_call *c = arg;
	int t;
	for (t = 1; t < FAB_NT; t++) {
		if (!f->tp[t] || !f->tr[t]->reg)
			continue;
		kvf_err_clear();
		c->rc = f->tr[t]->reg(f->tp[t], c->r);
		if (c->rc < 0) {
			snprintf(c->err, sizeof(c->err), "%s: %s", f->tr[t]->name, kvf_errmsg());
			break;
		}
	}
	if (c->rc < 0)
		for (t = t - 1; t >= 1; t--)
			if (f->tp[t] && f->tr[t]->dereg)
				f->tr[t]->dereg(f->tp[t], c->r, 1);
}

int kvf_fabric_reg(kvf_fabric *f, void *addr, size_t len, int mem, kvf_fabric_mr **out)
{
	if (!f || !addr || !len || !out || (mem != KVF_FABRIC_MEM_HOST && mem != KVF_FABRIC_MEM_CUDA))
		return kvf_errf(KVF_E_INVAL, "fabric: kvf_fabric_reg: bad argument");
	if ((uintptr_t)addr + len < (uintptr_t)addr)
		return kvf_errf(KVF_E_INVAL, "fabric: kvf_fabric_reg: range wraps");
	pthread_mutex_lock(&f->reg_lock);
	fab_region *r = NULL;
	for (uint32_t i = 0; i < f->nregions; i++) {
		fab_region *x = &f->regions[i];
		if (!atomic_load(&x->live) && atomic_load(&x->inflight) == 0) {
			if (!r)
				r = x;
		} else if (atomic_load(&x->live)) {
			uint8_t *a = addr;
			if (a < x->base + x->len && x->base < a + len) {
				pthread_mutex_unlock(&f->reg_lock);
				return kvf_errf(KVF_E_EXISTS, "fabric: [%p, +%zu) overlaps registered region %u", addr,
						len, x->id);
			}
		}
	}
	if (!r) {
		pthread_mutex_unlock(&f->reg_lock);
		return kvf_errf(KVF_E_FULL, "fabric: %u regions registered already (fabric.max_regions)",
				f->nregions);
	}
	r->gen = (r->gen + 1) & 0xffff;
	if (r->gen == 0)
		r->gen = 1;
	r->id = r->slot | (r->gen << 16);
	r->base = addr;
	r->len = len;
	r->mem = mem;
	r->memfd = -1;
	r->memfd_off = 0;
	memset(r->tpriv, 0, sizeof(r->tpriv));
	memset(r->key, 0, sizeof(r->key));
	int rc = fill_random(r->secret, sizeof(r->secret));
	if (rc == 0 && mem == KVF_FABRIC_MEM_HOST)
		fab_mem_lookup(addr, len, &r->memfd, &r->memfd_off);
	if (rc == 0) {
		struct reg_call c = { r, 0, "" };
		fab_call(f, reg_on_thread, &c);
		rc = c.rc;
		if (rc < 0)
			kvf_errf(rc, "fabric: register [%p, +%zu): %s", addr, len, c.err);
	}
	if (rc == 0) {
		atomic_store_explicit(&r->live, 1, memory_order_release);
		*out = r;
		KVF_DEBUG(FAB_LOG, "region registered", "region=%u base=%p len=%zu mem=%s memfd=%d", r->id, addr,
			  len, mem ? "cuda" : "host", r->memfd >= 0);
	}
	pthread_mutex_unlock(&f->reg_lock);
	return rc;
}

static void dereg_rest(kvf_fabric *f, struct fab_dereg_wait *w)
{
	fab_region *r = w->r;
	if (w->rc == 0) {
		for (int t = FAB_NT - 1; t >= 1; t--)
			if (f->tp[t] && f->tr[t]->dereg && t != KVF_FABRIC_SHM)
				f->tr[t]->dereg(f->tp[t], r, 1);
	} else {
		atomic_store_explicit(&r->live, 1, memory_order_release);
	}
	f->dereg_cur = NULL;
	sem_post(&w->sem);
}

void fab_dereg_done(struct fab_dereg_wait *w, int rc)
{
	w->rc = rc;
	dereg_rest(w->f, w);
}

static void dereg_task(kvf_loop *loop, kvf_task *t)
{
	struct fab_dereg_wait *w = (struct fab_dereg_wait *)t;
	kvf_fabric *f = w->f;
	fab_region *r = w->r;
	atomic_store(&r->live, 0);
	if (atomic_load(&r->inflight) != 0) {
		w->rc = kvf_errf(KVF_E_BUSY, "fabric: region %u has %u transfers in flight", r->id,
				 atomic_load(&r->inflight));
		atomic_store(&r->live, 1);
		sem_post(&w->sem);
		return;
	}
	f->dereg_cur = w;
	w->rc = 0;
	void *shm = f->tp[KVF_FABRIC_SHM];
	if (shm) {
		int rc = f->tr[KVF_FABRIC_SHM]->dereg(shm, r, w->force);
		if (rc == KVF_E_AGAIN)
			return; /* fab_dereg_done() follows */
		w->rc = rc;
	}
	dereg_rest(f, w);
}

int kvf_fabric_dereg(kvf_fabric *f, kvf_fabric_mr *mr)
{
	if (!f || !mr)
		return kvf_errf(KVF_E_INVAL, "fabric: kvf_fabric_dereg: NULL argument");
	if (mr < f->regions || mr >= f->regions + f->nregions || !atomic_load(&mr->live))
		return kvf_errf(KVF_E_NOTFOUND, "fabric: region not registered");
	pthread_mutex_lock(&f->reg_lock);
	struct fab_dereg_wait w;
	memset(&w, 0, sizeof(w));
	sem_init(&w.sem, 0, 0);
	w.f = f;
	w.r = mr;
	w.task.fn = dereg_task;
	if (f->thread_started) {
		kvf_loop_post(f->loop, &w.task);
		while (sem_wait(&w.sem) != 0 && errno == EINTR)
			;
	} else {
		dereg_task(f->loop, &w.task);
	}
	sem_destroy(&w.sem);
	pthread_mutex_unlock(&f->reg_lock);
	if (w.rc == 0)
		KVF_DEBUG(FAB_LOG, "region deregistered", "region=%u", mr->id);
	return w.rc;
}

/* ---- export ---- */

int kvf_fabric_export(kvf_fabric *f, const kvf_fabric_mr *mr, const kvf_fabric_range *blocks, size_t n,
		      kvf_buf *out)
{
	if (!f || !mr || !blocks || !out || n == 0 || n > FAB_DESC_MAX_BLOCKS)
		return kvf_errf(KVF_E_INVAL, "fabric: kvf_fabric_export: bad argument");
	if (!atomic_load(&mr->live))
		return kvf_errf(KVF_E_NOTFOUND, "fabric: export of a deregistered region");
	for (size_t i = 0; i < n; i++) {
		if (blocks[i].len == 0 || blocks[i].offset > mr->len || blocks[i].len > mr->len - blocks[i].offset)
			return kvf_errf(KVF_E_RANGE, "fabric: block %zu [%llu, +%llu) outside region of %llu bytes", i,
					(unsigned long long)blocks[i].offset, (unsigned long long)blocks[i].len,
					(unsigned long long)mr->len);
	}
	kvf_fabric_rdesc *d = kvf_calloc(1, sizeof(*d));
	if (!d)
		return kvf_errf(KVF_E_NOMEM, "fabric: export");
	memcpy(d->node, f->node, 16);
	snprintf(d->name, sizeof(d->name), "%s", f->name);
	d->host = *fab_hostid_self();
	for (int t = 1; t < FAB_NT; t++) {
		if (!f->tp[t] || !f->tr[t]->export_addr)
			continue;
		kvf_wire_writer w;
		kvf_wire_writer_init(&w, FAB_ADDR_MAX + 4);
		f->tr[t]->export_addr(f->tp[t], &w);
		/* the transport wrote one blob: strip its u32 prefix */
		if (!kvf_wire_writer_error(&w) && w.len > 4 && w.len - 4 <= FAB_ADDR_MAX) {
			d->addr[t].len = (uint16_t)(w.len - 4);
			memcpy(d->addr[t].b, w.buf + 4, w.len - 4);
		}
		kvf_wire_writer_free(&w);
	}
	d->region = mr->id;
	d->mem = (uint8_t)mr->mem;
	d->base = (uint64_t)(uintptr_t)mr->base;
	d->len = mr->len;
	memcpy(d->key, mr->key, sizeof(d->key));
	kvf_wire_writer w;
	kvf_wire_writer_init(&w, 0);
	fab_desc_put_head(&w, d, (uint32_t)n);
	for (size_t i = 0; i < n; i++) {
		uint64_t a = d->base + blocks[i].offset;
		fab_desc_put_block(&w, a, blocks[i].len, fab_token(mr->secret, mr->id, a, blocks[i].len));
	}
	int rc = kvf_wire_writer_error(&w);
	if (rc == 0)
		rc = kvf_buf_append(out, w.buf, w.len);
	kvf_wire_writer_free(&w);
	kvf_free(d);
	return rc < 0 ? kvf_errf(rc, "fabric: export: %s", kvf_strerror(rc)) : 0;
}

/* ---- completion queues ---- */

static void cq_free(kvf_fabric_cq *cq)
{
	for (uint32_t i = 0; i < cq->depth; i++)
		if (cq->slots[i].ops && cq->slots[i].ops != cq->slots[i].inl)
			kvf_free(cq->slots[i].ops);
	struct fab_notif *n = atomic_exchange(&cq->notifs, NULL);
	while (n) {
		struct fab_notif *x = n->next;
		kvf_free(n);
		n = x;
	}
	while (cq->nready) {
		struct fab_notif *x = cq->nready->next;
		kvf_free(cq->nready);
		cq->nready = x;
	}
	if (cq->efd >= 0)
		close(cq->efd);
	kvf_free(cq->slots);
	kvf_free(cq->free_stack);
	kvf_free(cq);
}

int kvf_fabric_cq_new(kvf_fabric *f, unsigned flags, kvf_fabric_cq **out)
{
	if (!f || !out)
		return kvf_errf(KVF_E_INVAL, "fabric: kvf_fabric_cq_new: NULL argument");
	kvf_fabric_cq *cq = kvf_calloc(1, sizeof(*cq));
	if (!cq)
		return kvf_errf(KVF_E_NOMEM, "fabric: cq");
	cq->f = f;
	cq->flags = flags;
	cq->depth = (uint32_t)f->opts.cq_depth;
	cq->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	cq->slots = kvf_calloc(cq->depth, sizeof(*cq->slots));
	cq->free_stack = kvf_calloc(cq->depth, sizeof(*cq->free_stack));
	if (cq->efd < 0 || !cq->slots || !cq->free_stack) {
		cq_free(cq);
		return kvf_errf(KVF_E_NOMEM, "fabric: cq of depth %u", (unsigned)f->opts.cq_depth);
	}
	for (uint32_t i = 0; i < cq->depth; i++) {
		cq->slots[i].cq = cq;
		cq->free_stack[i] = cq->depth - 1 - i;
	}
	cq->nfree = cq->depth;
	cq->kick.fn = on_kick;
	cq->kick.arg = cq;
	pthread_mutex_lock(&f->cq_lock);
	cq->next = f->cqs;
	f->cqs = cq;
	pthread_mutex_unlock(&f->cq_lock);
	if (flags & KVF_FABRIC_CQ_NOTIFS) {
		kvf_fabric_cq *expect = NULL;
		atomic_compare_exchange_strong(&f->notif_cq, &expect, cq);
	}
	*out = cq;
	return 0;
}

static void cq_unlink(kvf_fabric *f, void *arg)
{
	kvf_fabric_cq *cq = arg;
	pthread_mutex_lock(&f->cq_lock);
	for (kvf_fabric_cq **pp = &f->cqs; *pp; pp = &(*pp)->next) {
		if (*pp == cq) {
			*pp = cq->next;
			break;
		}
	}
	pthread_mutex_unlock(&f->cq_lock);
	kvf_fabric_cq *expect = cq;
	atomic_compare_exchange_strong(&f->notif_cq, &expect, NULL);
}

int kvf_fabric_cq_destroy(kvf_fabric_cq *cq)
{
	if (!cq)
		return 0;
	if (cq->inflight)
		return kvf_errf(KVF_E_BUSY, "fabric: cq has %u requests not polled", cq->inflight);
	/* unlinking on the fabric thread orders it after every pending task
	 * (a kick) of this cq */
	fab_call(cq->f, cq_unlink, cq);
	cq_free(cq);
	return 0;
}

int kvf_fabric_cq_fd(const kvf_fabric_cq *cq)
{
	return cq ? cq->efd : -1;
}

/* ---- posting (the cq owner's thread) ---- */

static fab_region *find_local(kvf_fabric_cq *cq, const uint8_t *p, uint64_t len)
{
	fab_region *h = cq->hint;
	if (h && atomic_load_explicit(&h->live, memory_order_acquire) && p >= h->base && len <= h->len &&
	    (uint64_t)(p - h->base) <= h->len - len)
		return h;
	kvf_fabric *f = cq->f;
	for (uint32_t i = 0; i < f->nregions; i++) {
		fab_region *r = &f->regions[i];
		if (!atomic_load_explicit(&r->live, memory_order_acquire))
			continue;
		if (p >= r->base && len <= r->len && (uint64_t)(p - r->base) <= r->len - len) {
			cq->hint = r;
			return r;
		}
	}
	return NULL;
}

static int pick_transport(kvf_fabric *f, const kvf_fabric_rdesc *d, int lmem, int *out)
{
	static const int order[] = { KVF_FABRIC_CUDA_IPC, KVF_FABRIC_SHM, KVF_FABRIC_VERBS, KVF_FABRIC_OFI,
				     KVF_FABRIC_TCP };
	int forced = f->opts.transport;
	for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
		int t = order[i];
		if (forced != KVF_FABRIC_AUTO && t != forced)
			continue;
		if (f->tp[t] && f->tr[t]->reachable(f->tp[t], d, lmem)) {
			*out = t;
			return 0;
		}
	}
	char have[96] = "";
	for (int t = 1; t < FAB_NT; t++)
		if (d->addr[t].len)
			snprintf(have + strlen(have), sizeof(have) - strlen(have), "%s%s", have[0] ? "," : "",
				 kvf_fabric_transport_name(t));
	return kvf_errf(KVF_E_UNSUPPORTED,
			"fabric: no transport reaches %s (%s memory; it offers %s; this node: transport = %s)",
			d->name, d->mem == KVF_FABRIC_MEM_CUDA ? "GPU" : "host", have[0] ? have : "nothing",
			kvf_fabric_transport_name(forced));
}

static struct fab_req *slot_take(kvf_fabric_cq *cq)
{
	if (cq->nfree == 0)
		return NULL;
	uint32_t i = cq->free_stack[--cq->nfree];
	struct fab_req *r = &cq->slots[i];
	uint32_t gen = (uint32_t)(r->id >> 32) + 1;
	if (gen == 0)
		gen = 1;
	memset((char *)r + offsetof(struct fab_req, cnext), 0, sizeof(*r) - offsetof(struct fab_req, cnext));
	memset(&r->task, 0, sizeof(r->task));
	r->cq = cq;
	r->id = ((uint64_t)gen << 32) | i;
	return r;
}

static void slot_release(kvf_fabric_cq *cq, struct fab_req *r)
{
	if (r->ops && r->ops != r->inl)
		kvf_free(r->ops);
	r->ops = NULL;
	atomic_store_explicit(&r->state, FAB_REQ_FREE, memory_order_relaxed);
	cq->free_stack[cq->nfree++] = (uint32_t)(r->id & 0xffffffffu);
}

static int post_common(kvf_fabric_cq *cq, struct fab_req *r, const kvf_fabric_rdesc *d, uint64_t cookie,
		       kvf_fabric_req *req)
{
	r->rd = d;
	r->cookie = cookie;
	r->t_post_ns = kvf_now_ns();
	r->task.fn = on_post;
	atomic_store_explicit(&r->state, FAB_REQ_POSTED, memory_order_release);
	cq->inflight++;
	if (req)
		*req = r->id;
	kvf_loop_post(cq->f->loop, &r->task);
	return 0;
}

int kvf_fabric_post(kvf_fabric_cq *cq, int opcode, const kvf_fabric_rdesc *d, const kvf_fabric_op *ops,
		    size_t n, uint64_t cookie, kvf_fabric_req *req)
{
	if (!cq || !d || !ops || n == 0 || n > KVF_FABRIC_MAX_BATCH ||
	    (opcode != KVF_FABRIC_READ && opcode != KVF_FABRIC_WRITE))
		return kvf_errf(KVF_E_INVAL, "fabric: kvf_fabric_post: bad argument");
	kvf_fabric *f = cq->f;
	struct fab_req *r = slot_take(cq);
	if (!r)
		return kvf_errf(KVF_E_FULL, "fabric: %u requests in flight on this cq (fabric.cq_depth): poll first",
				cq->depth);
	int rc;
	if (n <= FAB_INLINE_OPS) {
		r->ops = r->inl;
	} else if (!(r->ops = kvf_malloc(n * sizeof(*r->ops)))) {
		rc = kvf_errf(KVF_E_NOMEM, "fabric: %zu ops", n);
		goto err_slot;
	}
	for (size_t i = 0; i < n; i++) {
		const kvf_fabric_op *o = &ops[i];
		if (o->block >= d->nblocks) {
			rc = kvf_errf(KVF_E_ACCESS, "fabric: op %zu: block %u of a descriptor with %u", i, o->block,
				      d->nblocks);
			goto err_regs;
		}
		const struct fab_rblock *b = &d->blocks[o->block];
		if (o->len == 0 || o->len > b->len || o->offset > b->len - o->len) {
			rc = kvf_errf(KVF_E_ACCESS, "fabric: op %zu: [%llu, +%llu) outside block %u of %llu bytes", i,
				      (unsigned long long)o->offset, (unsigned long long)o->len, o->block,
				      (unsigned long long)b->len);
			goto err_regs;
		}
		fab_region *lr = find_local(cq, o->local, o->len);
		if (!lr) {
			rc = kvf_errf(KVF_E_ACCESS, "fabric: op %zu: local [%p, +%llu) is not inside a registered region",
				      i, o->local, (unsigned long long)o->len);
			goto err_regs;
		}
		uint32_t k;
		for (k = 0; k < r->nlregs && r->lregs[k] != lr; k++)
			;
		if (k == r->nlregs) {
			if (r->nlregs == FAB_REQ_LREGS) {
				rc = kvf_errf(KVF_E_INVAL, "fabric: a request may use at most %d local regions",
					      FAB_REQ_LREGS);
				goto err_regs;
			}
			if (r->nlregs && lr->mem != r->lregs[0]->mem) {
				rc = kvf_errf(KVF_E_INVAL, "fabric: a request mixes host and GPU local memory");
				goto err_regs;
			}
			atomic_fetch_add(&lr->inflight, 1);
			r->lregs[r->nlregs++] = lr;
			if (!atomic_load(&lr->live)) {
				rc = kvf_errf(KVF_E_ACCESS, "fabric: op %zu: local region is being deregistered", i);
				goto err_regs;
			}
		}
		r->ops[i].local = o->local;
		r->ops[i].raddr = b->addr + o->offset;
		r->ops[i].len = o->len;
		r->ops[i].blk = o->block;
	}
	r->nops = (uint32_t)n;
	int t = KVF_FABRIC_TCP;
	if ((rc = pick_transport(f, d, r->lregs[0]->mem, &t)) < 0)
		goto err_regs;
	r->tkind = (uint8_t)t;
	r->opcode = (uint8_t)opcode;
	return post_common(cq, r, d, cookie, req);

err_regs:
	for (uint32_t k = 0; k < r->nlregs; k++)
		atomic_fetch_sub(&r->lregs[k]->inflight, 1);
	r->nlregs = 0;
err_slot:
	slot_release(cq, r);
	return rc;
}

int kvf_fabric_notify(kvf_fabric_cq *cq, const kvf_fabric_rdesc *d, const void *msg, size_t len,
		      uint64_t cookie, kvf_fabric_req *req)
{
	if (!cq || !d || (!msg && len) || len > KVF_FABRIC_NOTIF_MAX)
		return kvf_errf(KVF_E_INVAL, "fabric: kvf_fabric_notify: bad argument (at most %d bytes)",
				KVF_FABRIC_NOTIF_MAX);
	if (!d->addr[KVF_FABRIC_TCP].len)
		return kvf_errf(KVF_E_UNSUPPORTED, "fabric: %s has no tcp address for notifications", d->name);
	struct fab_req *r = slot_take(cq);
	if (!r)
		return kvf_errf(KVF_E_FULL, "fabric: %u requests in flight on this cq: poll first", cq->depth);
	r->ops = r->inl;
	r->opcode = FAB_OP_NOTIFY;
	r->tkind = KVF_FABRIC_TCP;
	if (len)
		memcpy(r->msg, msg, len);
	r->msg_len = (uint32_t)len;
	return post_common(cq, r, d, cookie, req);
}

static struct fab_req *req_lookup(kvf_fabric_cq *cq, kvf_fabric_req id)
{
	uint32_t i = (uint32_t)(id & 0xffffffffu);
	if (!cq || i >= cq->depth)
		return NULL;
	struct fab_req *r = &cq->slots[i];
	if (r->id != id || atomic_load_explicit(&r->state, memory_order_acquire) == FAB_REQ_FREE)
		return NULL;
	return r;
}

int kvf_fabric_cancel(kvf_fabric_cq *cq, kvf_fabric_req id)
{
	struct fab_req *r = req_lookup(cq, id);
	if (!r || atomic_load_explicit(&r->state, memory_order_acquire) != FAB_REQ_POSTED)
		return kvf_errf(KVF_E_NOTFOUND, "fabric: no request %llx in flight", (unsigned long long)id);
	atomic_store_explicit(&r->cancel, 1, memory_order_release);
	if (atomic_exchange(&cq->kick_pending, 1) == 0)
		kvf_loop_post(cq->f->loop, &cq->kick);
	return 0;
}

int kvf_fabric_req_status(kvf_fabric_cq *cq, kvf_fabric_req id, uint64_t *bytes)
{
	struct fab_req *r = req_lookup(cq, id);
	if (!r)
		return kvf_errf(KVF_E_NOTFOUND, "fabric: no request %llx", (unsigned long long)id);
	if (bytes)
		*bytes = atomic_load_explicit(&r->bytes, memory_order_relaxed);
	if (atomic_load_explicit(&r->state, memory_order_acquire) != FAB_REQ_DONE)
		return KVF_E_AGAIN;
	return r->status;
}

int kvf_fabric_poll(kvf_fabric_cq *cq, kvf_fabric_comp *out, size_t max)
{
	if (!cq || !out)
		return kvf_errf(KVF_E_INVAL, "fabric: kvf_fabric_poll: NULL argument");
	if (!cq->ready && !cq->nready) {
		uint64_t v;
		ssize_t rd = read(cq->efd, &v, sizeof(v));
		(void)rd;
		struct fab_req *l = atomic_exchange_explicit(&cq->done, NULL, memory_order_acquire);
		while (l) { /* newest first: reverse */
			struct fab_req *nx = l->cnext;
			l->cnext = cq->ready;
			cq->ready = l;
			l = nx;
		}
		struct fab_notif *nl = atomic_exchange_explicit(&cq->notifs, NULL, memory_order_acquire);
		while (nl) {
			struct fab_notif *nx = nl->next;
			nl->next = cq->nready;
			cq->nready = nl;
			nl = nx;
		}
	}
	size_t n = 0;
	while (n < max && cq->ready) {
		struct fab_req *r = cq->ready;
		cq->ready = r->cnext;
		kvf_fabric_comp *c = &out[n++];
		c->kind = KVF_FABRIC_COMP_XFER;
		c->status = r->status;
		c->req = r->id;
		c->cookie = r->cookie;
		c->bytes = atomic_load_explicit(&r->bytes, memory_order_relaxed);
		c->latency_ns = r->latency_ns;
		c->transport = r->tkind;
		memcpy(c->peer_node, r->rd->node, 16);
		snprintf(c->peer, sizeof(c->peer), "%s", r->rd->name);
		snprintf(c->detail, sizeof(c->detail), "%s", r->status ? r->detail : "");
		c->notif_len = 0;
		cq->inflight--;
		slot_release(cq, r);
	}
	while (n < max && cq->nready) {
		struct fab_notif *x = cq->nready;
		cq->nready = x->next;
		kvf_fabric_comp *c = &out[n++];
		memset(c, 0, offsetof(kvf_fabric_comp, notif));
		c->kind = KVF_FABRIC_COMP_NOTIF;
		c->transport = KVF_FABRIC_TCP;
		memcpy(c->peer_node, x->node, 16);
		snprintf(c->peer, sizeof(c->peer), "%s", x->name);
		c->notif_len = x->len;
		memcpy(c->notif, x->msg, x->len);
		kvf_free(x);
	}
	return (int)n;
}

/* ---- connect ---- */

struct connect_call {
	const kvf_fabric_rdesc *d;
	int rc;
};

static void connect_on_thread(kvf_fabric *f, void *arg)
{
	struct connect_call *c = arg;
	struct fab_peer *p = peer_get(f, c->d);
	if (!p) {
		c->rc = kvf_errf(KVF_E_NOMEM, "fabric: connect");
		return;
	}
	fab_tcp_ensure_control(f->tp[KVF_FABRIC_TCP], p);
}

int kvf_fabric_connect(kvf_fabric *f, const kvf_fabric_rdesc *d)
{
	if (!f || !d)
		return kvf_errf(KVF_E_INVAL, "fabric: kvf_fabric_connect: NULL argument");
	if (!d->addr[KVF_FABRIC_TCP].len)
		return kvf_errf(KVF_E_UNSUPPORTED, "fabric: %s has no tcp address", d->name);
	struct connect_call c = { d, 0 };
	fab_call(f, connect_on_thread, &c);
	return c.rc;
}

/* ---- show peers / transfers ---- */

struct show_call {
	int json;
	kvf_buf *out;
};

static const char *peer_state_name(int s)
{
	static const char *const n[] = { "idle", "connecting", "ready", "failed" };
	return s >= 0 && s < 4 ? n[s] : "?";
}

static void show_peers_on_thread(kvf_fabric *f, void *arg)
{
	struct show_call *c = arg;
	kvf_buf *o = c->out;
	if (c->json)
		kvf_buf_puts(o, "[");
	int first = 1;
	for (struct fab_peer *p = f->peers; p; p = p->next) {
		char nh[17];
		node_hex(p->node, nh);
		uint64_t br = 0, bw = 0, orr = 0, ow = 0;
		char tl[96] = "";
		for (int t = 1; t < FAB_NT; t++) {
			br += p->bytes[t][0];
			bw += p->bytes[t][1];
			orr += p->ops[t][0];
			ow += p->ops[t][1];
			if (p->used_transports & (1u << t))
				snprintf(tl + strlen(tl), sizeof(tl) - strlen(tl), "%s%s", tl[0] ? "," : "",
					 kvf_fabric_transport_name(t));
		}
		kvf_buf detail = KVF_BUF_INIT;
		for (int t = 1; t < FAB_NT; t++) {
			if (f->tp[t] && f->tr[t]->peer_show && p->tstate[t]) {
				size_t before = detail.len;
				if (before)
					kvf_buf_puts(&detail, " ");
				size_t mark = detail.len;
				f->tr[t]->peer_show(f->tp[t], p, &detail);
				if (detail.len == mark)
					detail.len = before;
			}
		}
		const char *det = detail.data ? detail.data : "";
		if (c->json) {
			kvf_buf_printf(o, "%s{\"peer\":", first ? "" : ",");
			kvf_buf_put_json_str(o, p->name, strlen(p->name));
			kvf_buf_printf(o,
				       ",\"node\":\"%s\",\"state\":\"%s\",\"transports\":\"%s\",\"active\":%u,\"fenced\":%u,"
				       "\"bytes_read\":%llu,\"bytes_written\":%llu,\"ops_read\":%llu,\"ops_written\":%llu,"
				       "\"errors\":%llu,\"failures\":%llu,\"last_error\":",
				       nh, peer_state_name(p->state), tl, p->n_active, p->n_fenced,
				       (unsigned long long)br, (unsigned long long)bw, (unsigned long long)orr,
				       (unsigned long long)ow, (unsigned long long)p->errors, (unsigned long long)p->fails);
			kvf_buf_put_json_str(o, p->last_err, strlen(p->last_err));
			kvf_buf_puts(o, ",\"detail\":");
			kvf_buf_put_json_str(o, det, strlen(det));
			kvf_buf_puts(o, "}");
		} else {
			kvf_buf_printf(o,
				       "peer=%s node=%s state=%s transports=%s active=%u fenced=%u bytes_read=%llu "
				       "bytes_written=%llu ops_read=%llu ops_written=%llu errors=%llu failures=%llu%s%s",
				       p->name, nh, peer_state_name(p->state), tl[0] ? tl : "-", p->n_active, p->n_fenced,
				       (unsigned long long)br, (unsigned long long)bw, (unsigned long long)orr,
				       (unsigned long long)ow, (unsigned long long)p->errors, (unsigned long long)p->fails,
				       det[0] ? " " : "", det);
			if (p->last_err[0])
				kvf_buf_printf(o, " last_error=\"%s\"", p->last_err);
			kvf_buf_puts(o, "\n");
		}
		kvf_buf_free(&detail);
		first = 0;
	}
	if (c->json)
		kvf_buf_puts(o, "]\n");
	else if (first)
		kvf_buf_puts(o, "no peers\n");
}

static void show_transfers_on_thread(kvf_fabric *f, void *arg)
{
	struct show_call *c = arg;
	kvf_buf *o = c->out;
	uint64_t now = kvf_now_ns();
	int first = 1;
	if (c->json)
		kvf_buf_puts(o, "[");
	pthread_mutex_lock(&f->cq_lock);
	for (kvf_fabric_cq *cq = f->cqs; cq; cq = cq->next) {
		for (uint32_t i = 0; i < cq->depth; i++) {
			struct fab_req *r = &cq->slots[i];
			if (atomic_load_explicit(&r->state, memory_order_acquire) != FAB_REQ_POSTED || r->finished ||
			    !r->peer)
				continue;
			uint64_t age_ms = (now - r->t_post_ns) / 1000000u;
			uint64_t b = atomic_load(&r->bytes);
			if (c->json) {
				kvf_buf_printf(o, "%s{\"req\":\"%llx\",\"peer\":", first ? "" : ",", (unsigned long long)r->id);
				kvf_buf_put_json_str(o, r->peer->name, strlen(r->peer->name));
				kvf_buf_printf(o,
					       ",\"transport\":\"%s\",\"op\":\"%s\",\"ops\":%u,\"bytes\":%llu,\"age_ms\":%llu,"
					       "\"cookie\":%llu}",
					       kvf_fabric_transport_name(r->tkind), op_name(r->opcode), r->nops,
					       (unsigned long long)b, (unsigned long long)age_ms, (unsigned long long)r->cookie);
			} else {
				kvf_buf_printf(o, "req=%llx peer=%s transport=%s op=%s ops=%u bytes=%llu age_ms=%llu cookie=%llu\n",
					       (unsigned long long)r->id, r->peer->name, kvf_fabric_transport_name(r->tkind),
					       op_name(r->opcode), r->nops, (unsigned long long)b, (unsigned long long)age_ms,
					       (unsigned long long)r->cookie);
			}
			first = 0;
		}
	}
	pthread_mutex_unlock(&f->cq_lock);
	if (c->json)
		kvf_buf_puts(o, "]\n");
	else if (first)
		kvf_buf_puts(o, "no transfers in flight\n");
}

int kvf_fabric_show_peers(kvf_fabric *f, int json, kvf_buf *out)
{
	struct show_call c = { json, out };
	fab_call(f, show_peers_on_thread, &c);
	return out->oom ? KVF_E_NOMEM : 0;
}

int kvf_fabric_show_transfers(kvf_fabric *f, int json, kvf_buf *out)
{
	struct show_call c = { json, out };
	fab_call(f, show_transfers_on_thread, &c);
	return out->oom ? KVF_E_NOMEM : 0;
}

static int admin_peers(kvf_admin_out *out, int argc, char **argv, void *ud)
{
	if (argc > 0)
		return kvf_admin_error(out, "usage: show peers [json]");
	return kvf_fabric_show_peers(ud, kvf_admin_want_json(out), kvf_admin_buf(out));
}

static int admin_transfers(kvf_admin_out *out, int argc, char **argv, void *ud)
{
	if (argc > 0)
		return kvf_admin_error(out, "usage: show transfers [json]");
	return kvf_fabric_show_transfers(ud, kvf_admin_want_json(out), kvf_admin_buf(out));
}

static const kvf_admin_cmd fab_admin_cmds[] = {
	{ { "show", "peers", NULL }, "show peers [json]",
	  "fabric peers: state, transports, bytes, ops, errors, last failure", admin_peers },
	{ { "show", "transfers", NULL }, "show transfers [json]",
	  "fabric requests in flight: peer, transport, op, ops, bytes, age", admin_transfers },
};

const kvf_admin_cmd *kvf_fabric_admin_cmds(size_t *n)
{
	*n = sizeof(fab_admin_cmds) / sizeof(fab_admin_cmds[0]);
	return fab_admin_cmds;
}
