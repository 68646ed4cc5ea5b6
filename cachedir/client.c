/*
 * client.c: the cachedir client library (kvf_cachedir.h).
 *
 * One struct sconn per configured replica, each a small state machine:
 *   IDLE -(connect)-> CONNECTING -(writable)-> REGISTERING (worker) -> READY
 *                                          \-> READY (reader)
 * and back to IDLE on any failure, with a reconnect timer. A worker keeps
 * every replica connected; a reader keeps one, the "active" one, and moves to
 * the next on failure.
 *
 * Events: each is encoded once and copied to every READY replica with that
 * replica's own sequence number patched in, so a replica that was away (or
 * whose queue overflowed, dropping events) sees a gap, asks RESYNC, and gets
 * a fresh re-announce without disturbing the others.
 *
 * Requests (LOOKUP, WORKERS) are encoded once and kept until answered: they
 * wait in cl->waiting while no replica is READY, sit in the replica's
 * inflight FIFO once sent (replies come back in order, so matching is O(1)
 * in practice), and go back to waiting, to be re-sent elsewhere, when that
 * replica fails. Each has its own timeout timer.
 *
 * Output is flushed once per loop iteration by a posted task (the same shape
 * as the server), so requests issued together leave in one send().
 */
#include "cachedir/kvf_cachedir.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cachedir/cd_proto.h"
#include "common/kvf_alloc.h"
#include "common/kvf_err.h"
#include "common/kvf_frame.h"
#include "common/kvf_net.h"
#include "common/kvf_time.h"

enum { CS_IDLE, CS_CONNECTING, CS_REGISTERING, CS_READY };
#define REGISTER_RID 0xfffffff0u
#define SYNC_END_RID 0xfffffff1u
#define UNREGISTER_RID 0xfffffff2u
#define WATCH_RID 0xfffffff3u
#define UNWATCH_RID 0xfffffff4u
#define CONTROL_RID_MIN 0xfffffff0u

struct req;
struct rlist {
	struct req *head, *tail;
};

struct sconn {
	kvf_cachedir *cl;
	size_t i;
	char *addr;
	int fd;
	int state;
	unsigned events;
	kvf_timer timer; /* connect / register timeout, or reconnect backoff */
	kvf_timer tick;  /* heartbeat or ping, and the liveness check */
	uint32_t backoff_ms;
	kvf_frame_reader *rd;
	kvf_wire_writer out;
	size_t out_off;
	uint8_t dirty, need_sync, up, watching;
	struct sconn *dnext;
	uint64_t last_rx_ms;
	uint32_t hb_ms, lease_ms;
	uint64_t server_epoch;
	uint64_t seq, sync_seq;
	struct rlist inflight;
};

struct req {
	struct req *prev, *next;
	struct sconn *on; /* NULL: waiting */
	kvf_cachedir *cl;
	uint64_t id;
	uint32_t rid;
	uint8_t type;
	kvf_cachedir_lookup_cb lcb;
	kvf_cachedir_workers_cb wcb;
	void *ud;
	kvf_timer timer;
	uint8_t *frame;
	size_t len;
	unsigned attempts;
};

struct kvf_cachedir_sync {
	struct sconn *sc;
	int err;
	size_t n[KVF_CACHEDIR_NTIERS];
};

struct kvf_cachedir {
	kvf_loop *loop;
	kvf_cachedir_opts o;
	int worker; /* publishing */
	struct sconn *sc;
	size_t nsc;
	size_t active; /* reader mode: the replica in use */
	unsigned fail_streak;
	uint32_t rbackoff_ms; /* reader: backoff after a full round of failures */
	uint64_t next_id;
	struct rlist waiting;
	kvf_task *flush_task;
	int flush_posted;
	struct sconn *dirty;
	kvf_wire_writer ev; /* one event, before fan-out */
	kvf_blockkey *batch; /* [tier][batch_keys] for re-announces */
	/* reply scratch, valid during a callback */
	cd_holder *hbuf;
	kvf_cachedir_holder *holders;
	size_t hcap;
	cd_worker_info *wbuf;
	kvf_cachedir_worker *workers;
	size_t wcap;
	kvf_blockkey *keybuf;
	size_t keycap;
	/* watch */
	int watch_on;
	unsigned watch_flags;
	char watch_model[CD_MODEL_MAX + 1];
	kvf_cachedir_watch_cb watch_cb;
	void *watch_ud;
	kvf_cachedir_stats st;
	uint64_t connects;
};

static void conn_start(struct sconn *sc);
static void conn_down(struct sconn *sc, int err, const char *msg);
static void dispatch_waiting(kvf_cachedir *cl);
static void watch_ensure(kvf_cachedir *cl);

/* ---- small helpers ---- */

static void rl_push_back(struct rlist *l, struct req *r)
{
	r->next = NULL;
	r->prev = l->tail;
	if (l->tail)
		l->tail->next = r;
	else
		l->head = r;
	l->tail = r;
}

static void rl_remove(struct rlist *l, struct req *r)
{
	if (r->prev)
		r->prev->next = r->next;
	else
		l->head = r->next;
	if (r->next)
		r->next->prev = r->prev;
	else
		l->tail = r->prev;
	r->prev = r->next = NULL;
}

static struct rlist *req_list(struct req *r)
{
	return r->on ? &r->on->inflight : &r->cl->waiting;
}

static void status(kvf_cachedir *cl, int type, struct sconn *sc, int err, const char *msg, uint64_t blocks,
		   uint64_t swept)
{
	if (!cl->o.on_status)
		return;
	kvf_cachedir_status st = { .type = type, .server = sc->i, .addr = sc->addr, .err = err,
				   .msg = msg ? msg : "", .blocks = blocks, .swept = swept };
	cl->o.on_status(cl->o.ud, &st);
}

static size_t out_pending(const struct sconn *sc)
{
	return sc->out.len - sc->out_off;
}

/* ---- output ---- */

static void conn_flush(struct sconn *sc);

static void flush_task_fn(kvf_loop *loop, kvf_task *t)
{
	(void)loop;
	kvf_cachedir *cl = t->arg;
	if (!cl) {
		kvf_free(t);
		return;
	}
	cl->flush_posted = 0;
	while (cl->dirty) {
		struct sconn *sc = cl->dirty;
		cl->dirty = sc->dnext;
		sc->dnext = NULL;
		sc->dirty = 0;
		conn_flush(sc);
	}
}

static void mark_dirty(struct sconn *sc)
{
	kvf_cachedir *cl = sc->cl;
	if (!sc->dirty) {
		sc->dirty = 1;
		sc->dnext = cl->dirty;
		cl->dirty = sc;
	}
	if (!cl->flush_posted) {
		cl->flush_posted = 1;
		kvf_loop_post(cl->loop, cl->flush_task);
	}
}

static void set_events(struct sconn *sc, unsigned ev)
{
	if (sc->fd >= 0 && sc->events != ev && kvf_loop_mod_fd(sc->cl->loop, sc->fd, ev) == 0)
		sc->events = ev;
}

static void do_sync(struct sconn *sc);

static void conn_flush(struct sconn *sc)
{
	if (sc->fd < 0 || sc->state == CS_CONNECTING)
		return;
	while (out_pending(sc)) {
		ssize_t n = send(sc->fd, sc->out.buf + sc->out_off, out_pending(sc), MSG_NOSIGNAL);
		if (n > 0) {
			sc->out_off += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		char msg[128];
		snprintf(msg, sizeof(msg), "send: %s", n < 0 ? strerror(errno) : "closed");
		conn_down(sc, KVF_E_IO, msg);
		return;
	}
	if (!out_pending(sc)) {
		kvf_wire_writer_reset(&sc->out);
		sc->out_off = 0;
	} else if (sc->out_off > (1u << 20) && sc->out_off * 2 > sc->out.len) {
		memmove(sc->out.buf, sc->out.buf + sc->out_off, out_pending(sc));
		sc->out.len -= sc->out_off;
		sc->out_off = 0;
	}
	if (sc->out.err) {
		conn_down(sc, sc->out.err, "out of memory building a frame");
		return;
	}
	if (sc->need_sync && sc->state == CS_READY && out_pending(sc) < sc->cl->o.max_queue_bytes / 2)
		do_sync(sc);
	set_events(sc, KVF_EV_READ | (out_pending(sc) ? KVF_EV_WRITE : 0));
}

/* ---- publishing ---- */

static void sync_flush_tier(kvf_cachedir_sync *s, int t)
{
	struct sconn *sc = s->sc;
	kvf_cachedir *cl = sc->cl;
	if (!s->n[t])
		return;
	sc->seq++;
	cd_enc_stored(&sc->out, sc->seq, (uint8_t)t, NULL, cl->batch + (size_t)t * cl->o.batch_keys, s->n[t]);
	cl->st.events_sent++;
	s->n[t] = 0;
}

int kvf_cachedir_sync_add(kvf_cachedir_sync *s, int tier, const kvf_blockkey *keys, size_t n)
{
	if (tier < 0 || tier >= KVF_CACHEDIR_NTIERS)
		return kvf_errf(KVF_E_INVAL, "cachedir: tier %d out of range", tier);
	kvf_cachedir *cl = s->sc->cl;
	kvf_blockkey *b = cl->batch + (size_t)tier * cl->o.batch_keys;
	for (size_t i = 0; i < n; i++) {
		b[s->n[tier]++] = keys[i];
		if (s->n[tier] == cl->o.batch_keys)
			sync_flush_tier(s, tier);
	}
	return s->sc->out.err;
}

/* Re-announce to one replica: SYNC_BEGIN, the worker's blocks, SYNC_END. */
static void do_sync(struct sconn *sc)
{
	kvf_cachedir *cl = sc->cl;
	sc->need_sync = 0;
	sc->seq++;
	sc->sync_seq = sc->seq;
	cd_enc_seqmsg(&sc->out, CD_SYNC_BEGIN, 0, sc->seq);
	kvf_cachedir_sync s = { .sc = sc };
	if (cl->o.announce)
		cl->o.announce(cl->o.ud, &s);
	for (int t = 0; t < KVF_CACHEDIR_NTIERS; t++)
		sync_flush_tier(&s, t);
	sc->seq++;
	cd_enc_seqmsg(&sc->out, CD_SYNC_END, SYNC_END_RID, sc->seq);
	cl->st.resyncs++;
	mark_dirty(sc);
}

/* Copies the event in cl->ev to every registered replica, patching its seq. */
static void fan_out(kvf_cachedir *cl)
{
	if (kvf_wire_writer_error(&cl->ev))
		return;
	size_t len = cl->ev.len;
	for (size_t i = 0; i < cl->nsc; i++) {
		struct sconn *sc = &cl->sc[i];
		if (sc->state != CS_READY)
			continue; /* the re-announce after registering covers it */
		sc->seq++;
		if (out_pending(sc) + len > cl->o.max_queue_bytes) {
			cl->st.events_dropped++; /* the seq gap makes the replica ask RESYNC */
			continue;
		}
		uint8_t *p = kvf_wire_put_space(&sc->out, len);
		if (!p)
			continue;
		memcpy(p, cl->ev.buf, len);
		for (int b = 0; b < 8; b++)
			p[KVF_FRAME_HDR_LEN + b] = (uint8_t)(sc->seq >> (8 * b));
		cl->st.events_sent++;
		mark_dirty(sc);
	}
}

static int check_publish(kvf_cachedir *cl, int tier, int allow_all)
{
	if (!cl->worker)
		return kvf_errf(KVF_E_STATE, "cachedir: not a worker client (opts.worker_id unset or unregistered)");
	if ((tier < 0 || tier >= KVF_CACHEDIR_NTIERS) && !(allow_all && tier == KVF_CACHEDIR_ALL_TIERS))
		return kvf_errf(KVF_E_INVAL, "cachedir: tier %d out of range", tier);
	return 0;
}

int kvf_cachedir_stored(kvf_cachedir *c, int tier, const kvf_blockkey *keys, size_t n, const kvf_blockkey *parent)
{
	int rc = check_publish(c, tier, 0);
	if (rc)
		return rc;
	for (size_t off = 0; off < n; off += c->o.batch_keys) {
		size_t m = n - off < c->o.batch_keys ? n - off : c->o.batch_keys;
		kvf_wire_writer_reset(&c->ev);
		cd_enc_stored(&c->ev, 0, (uint8_t)tier, off == 0 ? parent : &keys[off - 1], keys + off, m);
		fan_out(c);
	}
	return kvf_wire_writer_error(&c->ev);
}

int kvf_cachedir_removed(kvf_cachedir *c, int tier, const kvf_blockkey *keys, size_t n)
{
	int rc = check_publish(c, tier, 1);
	if (rc)
		return rc;
	for (size_t off = 0; off < n; off += c->o.batch_keys) {
		size_t m = n - off < c->o.batch_keys ? n - off : c->o.batch_keys;
		kvf_wire_writer_reset(&c->ev);
		cd_enc_removed(&c->ev, 0, (uint8_t)tier, keys + off, m);
		fan_out(c);
	}
	return kvf_wire_writer_error(&c->ev);
}

int kvf_cachedir_cleared(kvf_cachedir *c)
{
	int rc = check_publish(c, 0, 0);
	if (rc)
		return rc;
	kvf_wire_writer_reset(&c->ev);
	cd_enc_seqmsg(&c->ev, CD_CLEARED, 0, 0);
	fan_out(c);
	return kvf_wire_writer_error(&c->ev);
}

static void send_heartbeat(struct sconn *sc)
{
	kvf_cachedir *cl = sc->cl;
	cd_heartbeat hb;
	memset(&hb, 0, sizeof(hb));
	hb.seq = sc->seq;
	if (cl->o.load) {
		kvf_cachedir_load l;
		memset(&l, 0, sizeof(l));
		cl->o.load(cl->o.ud, &l);
		hb.load.waiting = l.waiting;
		hb.load.running = l.running;
		hb.load.kv_used = l.kv_used_blocks;
		hb.load.kv_total = l.kv_total_blocks;
		hb.load.flags = l.draining ? CD_LOAD_DRAINING : 0;
	}
	cd_enc_heartbeat(&sc->out, 0, &hb);
	mark_dirty(sc);
}

void kvf_cachedir_heartbeat_now(kvf_cachedir *c)
{
	if (!c->worker)
		return;
	for (size_t i = 0; i < c->nsc; i++)
		if (c->sc[i].state == CS_READY)
			send_heartbeat(&c->sc[i]);
}

int kvf_cachedir_unregister(kvf_cachedir *c)
{
	if (!c->worker)
		return kvf_errf(KVF_E_STATE, "cachedir: not a registered worker client");
	for (size_t i = 0; i < c->nsc; i++) {
		struct sconn *sc = &c->sc[i];
		if (sc->state == CS_READY) {
			cd_enc_empty(&sc->out, CD_UNREGISTER, UNREGISTER_RID);
			mark_dirty(sc);
		}
	}
	c->worker = 0; /* reads go on; reconnects no longer register */
	return 0;
}

/* ---- requests ---- */

static void req_free(struct req *r)
{
	kvf_loop_timer_stop(r->cl->loop, &r->timer);
	kvf_free(r->frame);
	kvf_free(r);
}

static void req_fail(struct req *r, int err)
{
	rl_remove(req_list(r), r);
	if (r->type == CD_LOOKUP)
		r->lcb(r->ud, err, NULL);
	else
		r->wcb(r->ud, err, NULL, 0);
	req_free(r);
}

static void req_timeout(kvf_loop *loop, kvf_timer *t, void *ud)
{
	(void)loop;
	(void)t;
	struct req *r = ud;
	r->cl->st.timeouts++;
	kvf_errf(KVF_E_TIMEOUT, "cachedir: no answer within %u ms", r->cl->o.request_timeout_ms);
	req_fail(r, KVF_E_TIMEOUT);
}

static struct sconn *read_conn(kvf_cachedir *cl)
{
	if (!cl->worker && cl->o.worker_id == NULL)
		return cl->sc[cl->active].state == CS_READY ? &cl->sc[cl->active] : NULL;
	for (size_t i = 0; i < cl->nsc; i++)
		if (cl->sc[i].state == CS_READY)
			return &cl->sc[i];
	return NULL;
}

static void req_send(struct req *r, struct sconn *sc)
{
	uint8_t *p = kvf_wire_put_space(&sc->out, r->len);
	if (p)
		memcpy(p, r->frame, r->len);
	r->on = sc;
	r->attempts++;
	rl_push_back(&sc->inflight, r);
	mark_dirty(sc);
}

static void dispatch_waiting(kvf_cachedir *cl)
{
	struct sconn *sc = read_conn(cl);
	if (!sc)
		return;
	while (cl->waiting.head) {
		struct req *r = cl->waiting.head;
		rl_remove(&cl->waiting, r);
		req_send(r, sc);
	}
}

static int req_new(kvf_cachedir *cl, uint8_t type, void *ud, struct req **out)
{
	struct req *r = kvf_calloc(1, sizeof(*r));
	if (!r)
		return kvf_errf(KVF_E_NOMEM, "cachedir: request");
	r->cl = cl;
	r->type = type;
	r->ud = ud;
	r->id = ++cl->next_id;
	r->rid = (uint32_t)r->id;
	if (r->rid == 0 || r->rid >= CONTROL_RID_MIN) { /* skip the reserved ids on wrap */
		cl->next_id += 32;
		r->id = ++cl->next_id;
		r->rid = (uint32_t)r->id;
	}
	*out = r;
	return 0;
}

/* Takes the frame from w (now owned by r), starts the timer, sends or queues. */
static int req_submit(kvf_cachedir *cl, struct req *r, kvf_wire_writer *w, uint64_t *req_out)
{
	int rc = kvf_wire_writer_error(w);
	if (rc) {
		kvf_wire_writer_free(w);
		kvf_free(r);
		return kvf_errf(rc, "cachedir: request too large or out of memory");
	}
	r->frame = w->buf;
	r->len = w->len;
	rc = kvf_loop_timer_start(cl->loop, &r->timer, cl->o.request_timeout_ms, 0, req_timeout, r);
	if (rc) {
		kvf_free(r->frame);
		kvf_free(r);
		return rc;
	}
	cl->st.requests++;
	rl_push_back(&cl->waiting, r);
	dispatch_waiting(cl);
	if (req_out)
		*req_out = r->id;
	return 0;
}

int kvf_cachedir_lookup(kvf_cachedir *c, const char *model, const kvf_blockkey *keys, size_t n,
			kvf_cachedir_lookup_cb cb, void *ud, uint64_t *req_out)
{
	if (!cb || !model || !model[0] || strlen(model) > CD_MODEL_MAX || (n && !keys) || n > UINT32_MAX)
		return kvf_errf(KVF_E_INVAL, "cachedir: lookup: bad arguments");
	struct req *r;
	int rc = req_new(c, CD_LOOKUP, ud, &r);
	if (rc)
		return rc;
	r->lcb = cb;
	kvf_wire_writer w;
	kvf_wire_writer_init(&w, 0);
	cd_enc_lookup(&w, r->rid, model, keys, n);
	return req_submit(c, r, &w, req_out);
}

int kvf_cachedir_workers(kvf_cachedir *c, const char *model, kvf_cachedir_workers_cb cb, void *ud,
			 uint64_t *req_out)
{
	if (!cb || (model && strlen(model) > CD_MODEL_MAX))
		return kvf_errf(KVF_E_INVAL, "cachedir: workers: bad arguments");
	struct req *r;
	int rc = req_new(c, CD_WORKERS, ud, &r);
	if (rc)
		return rc;
	r->wcb = cb;
	kvf_wire_writer w;
	kvf_wire_writer_init(&w, 0);
	cd_enc_workers(&w, r->rid, model ? model : "");
	return req_submit(c, r, &w, req_out);
}

static struct req *find_req(kvf_cachedir *cl, uint64_t id)
{
	for (struct req *r = cl->waiting.head; r; r = r->next)
		if (r->id == id)
			return r;
	for (size_t i = 0; i < cl->nsc; i++)
		for (struct req *r = cl->sc[i].inflight.head; r; r = r->next)
			if (r->id == id)
				return r;
	return NULL;
}

void kvf_cachedir_cancel(kvf_cachedir *c, uint64_t id)
{
	struct req *r = find_req(c, id);
	if (!r)
		return;
	rl_remove(req_list(r), r);
	req_free(r);
}

/* ---- watch ---- */

static void watch_send(kvf_cachedir *cl, struct sconn *sc)
{
	cd_enc_watch(&sc->out, WATCH_RID, (uint8_t)cl->watch_flags, cl->watch_model);
	sc->watching = 1;
	mark_dirty(sc);
}

static void watch_ensure(kvf_cachedir *cl)
{
	if (!cl->watch_on)
		return;
	for (size_t i = 0; i < cl->nsc; i++)
		if (cl->sc[i].watching)
			return;
	struct sconn *sc = read_conn(cl);
	if (sc)
		watch_send(cl, sc);
}

int kvf_cachedir_watch(kvf_cachedir *c, unsigned flags, const char *model, kvf_cachedir_watch_cb cb, void *ud)
{
	if (c->watch_on)
		return kvf_errf(KVF_E_EXISTS, "cachedir: a watch is already active on this client");
	if (!cb || !flags || (flags & ~3u) || (model && strlen(model) > CD_MODEL_MAX))
		return kvf_errf(KVF_E_INVAL, "cachedir: watch: bad arguments");
	c->watch_on = 1;
	c->watch_flags = flags;
	snprintf(c->watch_model, sizeof(c->watch_model), "%s", model ? model : "");
	c->watch_cb = cb;
	c->watch_ud = ud;
	watch_ensure(c);
	return 0;
}

void kvf_cachedir_unwatch(kvf_cachedir *c)
{
	if (!c->watch_on)
		return;
	c->watch_on = 0;
	for (size_t i = 0; i < c->nsc; i++) {
		struct sconn *sc = &c->sc[i];
		if (sc->watching) {
			cd_enc_empty(&sc->out, CD_UNWATCH, UNWATCH_RID);
			sc->watching = 0;
			mark_dirty(sc);
		}
	}
}

/* ---- replies ---- */

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
	return kvf_grow(p, cap, need, elem) ? kvf_errf(KVF_E_NOMEM, "cachedir: reply buffer") : 0;
}

static void to_worker(const cd_worker_info *wi, kvf_cachedir_worker *w)
{
	w->worker_id = wi->worker_id;
	w->role = wi->role;
	w->model = wi->model;
	w->block_size = wi->block_size;
	w->epoch = wi->epoch;
	w->state = wi->state;
	w->tiers = wi->tiers;
	memcpy(w->capacity_blocks, wi->capacity, sizeof(w->capacity_blocks));
	w->http_endpoint = wi->http;
	w->fabric_endpoint = wi->fabric;
	w->load.waiting = wi->load.waiting;
	w->load.running = wi->load.running;
	w->load.kv_used_blocks = wi->load.kv_used;
	w->load.kv_total_blocks = wi->load.kv_total;
	w->load.draining = (wi->load.flags & CD_LOAD_DRAINING) != 0;
	memcpy(w->blocks, wi->blocks, sizeof(w->blocks));
	w->heartbeat_age_ms = wi->heartbeat_age_ms;
}

static void deliver_lookup(struct sconn *sc, struct req *r, cd_msg *m)
{
	kvf_cachedir *cl = sc->cl;
	cd_lookup_reply *lr = &m->u.lookup_reply;
	size_t n = lr->nholders;
	size_t cap = cl->hcap, cap2 = cl->hcap;
	if (grow((void **)&cl->hbuf, &cap, n, sizeof(*cl->hbuf)) ||
	    grow((void **)&cl->holders, &cap2, n, sizeof(*cl->holders))) {
		r->lcb(r->ud, KVF_E_NOMEM, NULL);
		return;
	}
	cl->hcap = cap < cap2 ? cap : cap2;
	for (size_t i = 0; i < n; i++) {
		cd_lookup_reply_next(lr, &cl->hbuf[i]);
		kvf_cachedir_holder *h = &cl->holders[i];
		h->worker_id = cl->hbuf[i].worker_id;
		h->state = cl->hbuf[i].state;
		h->prefix_gpu = cl->hbuf[i].prefix[0];
		h->prefix_host = cl->hbuf[i].prefix[1];
		h->prefix_any = cl->hbuf[i].prefix[2];
	}
	kvf_cachedir_lookup_result res = { .nkeys = lr->nkeys, .nmatched = lr->nmatched,
					   .warming = (lr->flags & CD_LOOKUP_WARMING) != 0, .nholders = n,
					   .holders = cl->holders, .server = sc->addr };
	r->lcb(r->ud, 0, &res);
}

static void deliver_workers(struct sconn *sc, struct req *r, cd_msg *m)
{
	kvf_cachedir *cl = sc->cl;
	cd_workers_reply *wr = &m->u.workers_reply;
	size_t n = wr->n;
	size_t cap = cl->wcap, cap2 = cl->wcap;
	if (grow((void **)&cl->wbuf, &cap, n, sizeof(*cl->wbuf)) ||
	    grow((void **)&cl->workers, &cap2, n, sizeof(*cl->workers))) {
		r->wcb(r->ud, KVF_E_NOMEM, NULL, 0);
		return;
	}
	cl->wcap = cap < cap2 ? cap : cap2;
	for (size_t i = 0; i < n; i++) {
		cd_workers_reply_next(wr, &cl->wbuf[i]);
		to_worker(&cl->wbuf[i], &cl->workers[i]);
	}
	r->wcb(r->ud, 0, cl->workers, n);
}

static void deliver_watch(struct sconn *sc, cd_msg *m)
{
	kvf_cachedir *cl = sc->cl;
	if (!cl->watch_on || !sc->watching)
		return;
	cd_watch_event *e = &m->u.ev;
	kvf_cachedir_watch_event ev;
	memset(&ev, 0, sizeof(ev));
	ev.kind = e->kind;
	ev.seq = e->seq;
	kvf_cachedir_worker w;
	switch (e->kind) {
	case CD_EV_SNAPSHOT_BEGIN:
		ev.server_epoch = e->u.snap.server_epoch;
		ev.overflow = e->u.snap.reason == CD_SNAP_OVERFLOW;
		break;
	case CD_EV_WORKER:
		to_worker(&e->u.worker, &w);
		ev.worker = &w;
		ev.worker_id = w.worker_id;
		break;
	case CD_EV_WORKER_GONE:
		ev.worker_id = e->u.gone.worker_id;
		ev.gone_reason = e->u.gone.reason;
		break;
	case CD_EV_STORED:
	case CD_EV_REMOVED: {
		size_t n = e->u.blocks.keys.n;
		if (grow((void **)&cl->keybuf, &cl->keycap, n ? n : 1, sizeof(*cl->keybuf)))
			return;
		for (size_t i = 0; i < n; i++)
			cl->keybuf[i] = cd_keys_get(&e->u.blocks.keys, i);
		ev.worker_id = e->u.blocks.worker_id;
		ev.tier = e->u.blocks.tier;
		ev.keys = cl->keybuf;
		ev.nkeys = n;
		ev.parent = (e->u.blocks.flags & CD_STORED_PARENT) ? &e->u.blocks.parent : NULL;
		break;
	}
	case CD_EV_CLEARED:
		ev.worker_id = e->u.cleared.worker_id;
		break;
	default:
		break;
	}
	cl->watch_cb(cl->watch_ud, &ev);
}

static struct req *take_inflight(struct sconn *sc, uint32_t rid)
{
	for (struct req *r = sc->inflight.head; r; r = r->next)
		if (r->rid == rid) {
			rl_remove(&sc->inflight, r);
			r->on = NULL;
			return r;
		}
	return NULL;
}

static void on_up(struct sconn *sc)
{
	kvf_cachedir *cl = sc->cl;
	sc->up = 1;
	sc->backoff_ms = 0;
	cl->fail_streak = 0;
	cl->rbackoff_ms = 0;
	status(cl, KVF_CACHEDIR_UP, sc, 0, NULL, 0, 0);
	dispatch_waiting(cl);
	watch_ensure(cl);
}

static void tick_cb(kvf_loop *loop, kvf_timer *t, void *ud);

/* Handles one frame; returns nonzero when the connection went down. */
static int handle_frame(struct sconn *sc, const kvf_frame *f)
{
	kvf_cachedir *cl = sc->cl;
	cd_msg m;
	int rc = cd_proto_decode(f, 0, &m);
	if (rc) {
		char msg[256];
		snprintf(msg, sizeof(msg), "bad frame from the server: %s", kvf_errmsg());
		conn_down(sc, rc, msg);
		return 1;
	}
	sc->last_rx_ms = kvf_loop_now_ms(cl->loop);
	uint32_t rid = m.hdr.request_id;
	switch (m.hdr.type) {
	case CD_REGISTERED:
		if (sc->state != CS_REGISTERING)
			break;
		sc->hb_ms = m.u.registered.heartbeat_ms;
		sc->lease_ms = m.u.registered.lease_ms;
		sc->server_epoch = m.u.registered.server_epoch;
		sc->state = CS_READY;
		kvf_loop_timer_stop(cl->loop, &sc->timer);
		kvf_loop_timer_start(cl->loop, &sc->tick, sc->hb_ms, sc->hb_ms, tick_cb, sc);
		do_sync(sc);
		send_heartbeat(sc); /* the load, now rather than one interval later */
		on_up(sc);
		break;
	case CD_HEARTBEAT_ACK:
	case CD_PONG:
		break;
	case CD_SYNCED:
		status(cl, KVF_CACHEDIR_SYNCED, sc, 0, NULL, m.u.synced.blocks, m.u.synced.swept);
		break;
	case CD_RESYNC:
		if (!cl->worker || sc->state != CS_READY || m.u.resync.got_seq < sc->sync_seq)
			break; /* older than the re-announce already sent */
		status(cl, KVF_CACHEDIR_RESYNC, sc, 0, m.u.resync.reason, 0, 0);
		if (out_pending(sc) < cl->o.max_queue_bytes / 2)
			do_sync(sc);
		else
			sc->need_sync = 1;
		break;
	case CD_ERROR: {
		struct req *r = rid && rid < CONTROL_RID_MIN ? take_inflight(sc, rid) : NULL;
		kvf_errf(m.u.error.code, "%s", m.u.error.msg);
		if (r) {
			req_fail(r, m.u.error.code);
		} else if (rid == REGISTER_RID || m.u.error.fatal) {
			status(cl, KVF_CACHEDIR_REFUSED, sc, m.u.error.code, m.u.error.msg, 0, 0);
			if (rid == REGISTER_RID)
				sc->backoff_ms = cl->o.reconnect_max_ms; /* retrying soon will not help */
			conn_down(sc, m.u.error.code, m.u.error.msg);
			return 1;
		} else {
			status(cl, KVF_CACHEDIR_REFUSED, sc, m.u.error.code, m.u.error.msg, 0, 0);
		}
		break;
	}
	case CD_LOOKUP_REPLY:
	case CD_WORKERS_REPLY: {
		struct req *r = take_inflight(sc, rid);
		if (!r)
			break; /* canceled or timed out */
		if (r->type != m.hdr.type - 1) {
			rl_push_back(&sc->inflight, r); /* keep it; the reply is not for it */
			r->on = sc;
			break;
		}
		if (m.hdr.type == CD_LOOKUP_REPLY)
			deliver_lookup(sc, r, &m);
		else
			deliver_workers(sc, r, &m);
		req_free(r);
		break;
	}
	case CD_WATCH_EVENT:
		if (rid == WATCH_RID)
			deliver_watch(sc, &m);
		break;
	case CD_OK:
		break;
	default: {
		char msg[96];
		snprintf(msg, sizeof(msg), "unexpected %s from the server", cd_type_name(m.hdr.type));
		conn_down(sc, KVF_E_PROTO, msg);
		return 1;
	}
	}
	return sc->fd < 0;
}

static void conn_read(struct sconn *sc)
{
	for (int round = 0; round < 4; round++) {
		void *buf;
		size_t room;
		int rc = kvf_frame_reader_space(sc->rd, &buf, &room);
		if (rc < 0) {
			conn_down(sc, rc, kvf_errmsg());
			return;
		}
		ssize_t n = recv(sc->fd, buf, room, 0);
		if (n == 0) {
			conn_down(sc, KVF_E_CLOSED, "closed by the server");
			return;
		}
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			char msg[128];
			snprintf(msg, sizeof(msg), "recv: %s", strerror(errno));
			conn_down(sc, KVF_E_IO, msg);
			return;
		}
		kvf_frame_reader_commit(sc->rd, (size_t)n);
		kvf_frame f;
		while ((rc = kvf_frame_reader_next(sc->rd, &f)) == 0)
			if (handle_frame(sc, &f))
				return;
		if (rc != KVF_E_AGAIN) {
			conn_down(sc, rc, kvf_errmsg());
			return;
		}
		if ((size_t)n < room)
			return;
	}
}

/* ---- connection life ---- */

static void reconnect_cb(kvf_loop *loop, kvf_timer *t, void *ud)
{
	(void)loop;
	(void)t;
	conn_start(ud);
}

static void io_cb(kvf_loop *loop, int fd, unsigned events, void *ud);

static void register_send(struct sconn *sc)
{
	kvf_cachedir *cl = sc->cl;
	cd_register r;
	memset(&r, 0, sizeof(r));
	snprintf(r.worker_id, sizeof(r.worker_id), "%s", cl->o.worker_id);
	r.role = (uint8_t)cl->o.role;
	snprintf(r.model, sizeof(r.model), "%s", cl->o.model);
	r.block_size = cl->o.block_size;
	r.epoch = cl->o.epoch;
	r.last_seq = sc->seq;
	r.tiers = cl->o.tiers;
	memcpy(r.capacity, cl->o.capacity_blocks, sizeof(r.capacity));
	snprintf(r.http, sizeof(r.http), "%s", cl->o.http_endpoint ? cl->o.http_endpoint : "");
	snprintf(r.fabric, sizeof(r.fabric), "%s", cl->o.fabric_endpoint ? cl->o.fabric_endpoint : "");
	cd_enc_register(&sc->out, REGISTER_RID, &r);
	mark_dirty(sc);
}

static void connect_timeout_cb(kvf_loop *loop, kvf_timer *t, void *ud)
{
	(void)loop;
	(void)t;
	struct sconn *sc = ud;
	conn_down(sc, KVF_E_TIMEOUT, sc->state == CS_CONNECTING ? "connect timed out" : "no REGISTERED in time");
}

static void connected(struct sconn *sc)
{
	kvf_cachedir *cl = sc->cl;
	int rc = kvf_net_connect_result(sc->fd);
	if (rc) {
		conn_down(sc, rc, kvf_errmsg());
		return;
	}
	kvf_net_set_nodelay(sc->fd, 1);
	sc->last_rx_ms = kvf_loop_now_ms(cl->loop);
	if (cl->worker) {
		sc->state = CS_REGISTERING;
		register_send(sc);
		kvf_loop_timer_start(cl->loop, &sc->timer, cl->o.connect_timeout_ms, 0, connect_timeout_cb, sc);
	} else {
		sc->state = CS_READY;
		kvf_loop_timer_stop(cl->loop, &sc->timer);
		kvf_loop_timer_start(cl->loop, &sc->tick, cl->o.ping_interval_ms, cl->o.ping_interval_ms, tick_cb,
				     sc);
		on_up(sc);
	}
	conn_flush(sc);
}

static void io_cb(kvf_loop *loop, int fd, unsigned events, void *ud)
{
	(void)loop;
	(void)fd;
	struct sconn *sc = ud;
	if (sc->state == CS_CONNECTING) {
		if (events & (KVF_EV_WRITE | KVF_EV_ERROR))
			connected(sc);
		return;
	}
	if (events & (KVF_EV_READ | KVF_EV_ERROR)) {
		conn_read(sc);
		if (sc->fd < 0)
			return;
	}
	if (events & KVF_EV_WRITE)
		conn_flush(sc);
}

static void conn_start(struct sconn *sc)
{
	kvf_cachedir *cl = sc->cl;
	if (cl->connects++)
		cl->st.reconnects++;
	int fd;
	int rc = kvf_net_connect_tcp(sc->addr, 1, &fd);
	if (rc) {
		conn_down(sc, rc, kvf_errmsg());
		return;
	}
	kvf_frame_decoder dec;
	kvf_frame_decoder_init(&dec, CD_PROTO_MIN_VERSION, CD_PROTO_MAX_VERSION);
	if (kvf_frame_reader_new(&dec, &sc->rd) || kvf_loop_add_fd(cl->loop, fd, KVF_EV_WRITE, io_cb, sc)) {
		kvf_frame_reader_free(sc->rd);
		sc->rd = NULL;
		close(fd);
		conn_down(sc, KVF_E_NOMEM, "cannot set up the connection");
		return;
	}
	sc->fd = fd;
	sc->events = KVF_EV_WRITE;
	sc->state = CS_CONNECTING;
	kvf_loop_timer_start(cl->loop, &sc->timer, cl->o.connect_timeout_ms, 0, connect_timeout_cb, sc);
}

static uint32_t next_backoff(kvf_cachedir *cl, uint32_t cur)
{
	uint32_t b = cur ? cur * 2 : cl->o.reconnect_min_ms;
	return b > cl->o.reconnect_max_ms ? cl->o.reconnect_max_ms : b;
}

static void conn_down(struct sconn *sc, int err, const char *msg)
{
	kvf_cachedir *cl = sc->cl;
	int was_up = sc->up;
	if (sc->fd >= 0) {
		kvf_loop_del_fd(cl->loop, sc->fd);
		close(sc->fd);
		sc->fd = -1;
	}
	kvf_frame_reader_free(sc->rd);
	sc->rd = NULL;
	kvf_wire_writer_reset(&sc->out);
	sc->out_off = 0;
	sc->events = 0;
	sc->state = CS_IDLE;
	sc->up = 0;
	sc->need_sync = 0;
	kvf_loop_timer_stop(cl->loop, &sc->tick);
	kvf_loop_timer_stop(cl->loop, &sc->timer);
	/* Requests in flight go back to the front of the queue, in order. */
	while (sc->inflight.tail) {
		struct req *r = sc->inflight.tail;
		rl_remove(&sc->inflight, r);
		r->on = NULL;
		r->next = cl->waiting.head;
		r->prev = NULL;
		if (cl->waiting.head)
			cl->waiting.head->prev = r;
		else
			cl->waiting.tail = r;
		cl->waiting.head = r;
		cl->st.failovers++;
	}
	int had_watch = sc->watching;
	sc->watching = 0;
	if (was_up)
		status(cl, KVF_CACHEDIR_DOWN, sc, err, msg, 0, 0);
	if (cl->worker || cl->o.worker_id) {
		/* Every replica stays wanted. */
		sc->backoff_ms = next_backoff(cl, sc->backoff_ms);
		kvf_loop_timer_start(cl->loop, &sc->timer, sc->backoff_ms, 0, reconnect_cb, sc);
		dispatch_waiting(cl);
		if (had_watch)
			watch_ensure(cl);
		return;
	}
	/* Reader: move to the next replica; back off after a full round of failures. */
	cl->fail_streak++;
	cl->active = (cl->active + 1) % cl->nsc;
	struct sconn *nx = &cl->sc[cl->active];
	uint32_t delay = 0;
	if (cl->fail_streak >= cl->nsc) {
		cl->rbackoff_ms = next_backoff(cl, cl->rbackoff_ms);
		delay = cl->rbackoff_ms;
	}
	kvf_loop_timer_start(cl->loop, &nx->timer, delay, 0, reconnect_cb, nx);
}

static void tick_cb(kvf_loop *loop, kvf_timer *t, void *ud)
{
	(void)t;
	struct sconn *sc = ud;
	kvf_cachedir *cl = sc->cl;
	uint64_t now = kvf_loop_now_ms(loop);
	uint64_t dead_ms = (cl->worker && sc->lease_ms) ? sc->lease_ms : 3ull * cl->o.ping_interval_ms;
	if (now - sc->last_rx_ms > dead_ms) {
		char msg[96];
		snprintf(msg, sizeof(msg), "no frame from the server for %" PRIu64 " ms", now - sc->last_rx_ms);
		conn_down(sc, KVF_E_TIMEOUT, msg);
		return;
	}
	if (cl->worker)
		send_heartbeat(sc);
	else {
		cd_enc_empty(&sc->out, CD_PING, 0);
		mark_dirty(sc);
	}
}

/* ---- lifecycle ---- */

void kvf_cachedir_opts_init(kvf_cachedir_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->role = KVF_CACHEDIR_DECODE;
	o->tiers = 1u << KVF_CACHEDIR_GPU;
	o->connect_timeout_ms = 1000;
	o->reconnect_min_ms = 50;
	o->reconnect_max_ms = 2000;
	o->request_timeout_ms = 1000;
	o->ping_interval_ms = 1000;
	o->batch_keys = 4096;
	o->max_queue_bytes = 16u << 20;
}

static int check_str(const char *s, size_t max, int required, const char *what)
{
	if ((!s || !s[0]) && required)
		return kvf_errf(KVF_E_INVAL, "cachedir: %s is required", what);
	if (s && strlen(s) > max)
		return kvf_errf(KVF_E_INVAL, "cachedir: %s longer than %zu bytes", what, max);
	return 0;
}

int kvf_cachedir_new(kvf_loop *loop, const kvf_cachedir_opts *o, kvf_cachedir **out)
{
	if (!o->servers || o->nservers == 0)
		return kvf_errf(KVF_E_INVAL, "cachedir: no server address given (cluster.cachedir)");
	int worker = o->worker_id != NULL;
	int rc;
	if (worker) {
		if ((rc = check_str(o->worker_id, CD_ID_MAX, 1, "worker id")) ||
		    (rc = check_str(o->model, CD_MODEL_MAX, 1, "model")) ||
		    (rc = check_str(o->http_endpoint, CD_ENDPOINT_MAX, 0, "http endpoint")) ||
		    (rc = check_str(o->fabric_endpoint, CD_ENDPOINT_MAX, 0, "fabric endpoint")))
			return rc;
		if (o->block_size == 0)
			return kvf_errf(KVF_E_INVAL, "cachedir: block size is required");
		if (o->role < KVF_CACHEDIR_PREFILL || o->role > KVF_CACHEDIR_BOTH)
			return kvf_errf(KVF_E_INVAL, "cachedir: bad role %d", o->role);
		if (o->tiers == 0 || (o->tiers & ~7u))
			return kvf_errf(KVF_E_INVAL, "cachedir: bad tier set 0x%x", o->tiers);
	}
	kvf_cachedir *cl = kvf_calloc(1, sizeof(*cl));
	if (!cl)
		return kvf_errf(KVF_E_NOMEM, "cachedir client");
	cl->loop = loop;
	cl->o = *o;
	cl->worker = worker;
	kvf_cachedir_opts d;
	kvf_cachedir_opts_init(&d);
	if (!cl->o.connect_timeout_ms)
		cl->o.connect_timeout_ms = d.connect_timeout_ms;
	if (!cl->o.reconnect_min_ms)
		cl->o.reconnect_min_ms = d.reconnect_min_ms;
	if (cl->o.reconnect_max_ms < cl->o.reconnect_min_ms)
		cl->o.reconnect_max_ms = cl->o.reconnect_min_ms > d.reconnect_max_ms ? cl->o.reconnect_min_ms
										      : d.reconnect_max_ms;
	if (!cl->o.request_timeout_ms)
		cl->o.request_timeout_ms = d.request_timeout_ms;
	if (!cl->o.ping_interval_ms)
		cl->o.ping_interval_ms = d.ping_interval_ms;
	if (!cl->o.batch_keys)
		cl->o.batch_keys = d.batch_keys;
	if (!cl->o.max_queue_bytes)
		cl->o.max_queue_bytes = d.max_queue_bytes;
	if (worker && !cl->o.epoch)
		cl->o.epoch = (kvf_now_ns() ^ ((uint64_t)getpid() << 40)) | 1;
	cl->o.servers = NULL;
	cl->o.worker_id = cl->o.model = cl->o.http_endpoint = cl->o.fabric_endpoint = NULL;
	kvf_wire_writer_init(&cl->ev, 0);
	cl->flush_task = kvf_calloc(1, sizeof(*cl->flush_task));
	cl->sc = kvf_calloc(o->nservers, sizeof(*cl->sc));
	if (!cl->flush_task || !cl->sc)
		goto err_nomem;
	cl->flush_task->fn = flush_task_fn;
	cl->flush_task->arg = cl;
	if (worker && (!(cl->o.worker_id = kvf_strdup(o->worker_id)) || !(cl->o.model = kvf_strdup(o->model)) ||
		       (o->http_endpoint && !(cl->o.http_endpoint = kvf_strdup(o->http_endpoint))) ||
		       (o->fabric_endpoint && !(cl->o.fabric_endpoint = kvf_strdup(o->fabric_endpoint))) ||
		       !(cl->batch = kvf_malloc(KVF_CACHEDIR_NTIERS * cl->o.batch_keys * sizeof(*cl->batch)))))
		goto err_nomem;
	cl->nsc = o->nservers;
	for (size_t i = 0; i < cl->nsc; i++) {
		struct sconn *sc = &cl->sc[i];
		sc->cl = cl;
		sc->i = i;
		sc->fd = -1;
		kvf_wire_writer_init(&sc->out, 0);
		if (!(sc->addr = kvf_strdup(o->servers[i])))
			goto err_nomem;
	}
	if (!worker && o->spread && cl->nsc > 1) {
		uint32_t r;
		if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != sizeof(r))
			r = (uint32_t)kvf_now_ns();
		cl->active = r % cl->nsc;
	}
	*out = cl;
	if (worker)
		for (size_t i = 0; i < cl->nsc; i++)
			conn_start(&cl->sc[i]);
	else
		conn_start(&cl->sc[cl->active]);
	return 0;

err_nomem:
	kvf_cachedir_destroy(cl);
	return kvf_errf(KVF_E_NOMEM, "cachedir client");
}

void kvf_cachedir_destroy(kvf_cachedir *c)
{
	if (!c)
		return;
	kvf_errf(KVF_E_CANCELED, "cachedir: client destroyed");
	while (c->waiting.head)
		req_fail(c->waiting.head, KVF_E_CANCELED);
	for (size_t i = 0; c->sc && i < c->nsc; i++) {
		struct sconn *sc = &c->sc[i];
		while (sc->inflight.head)
			req_fail(sc->inflight.head, KVF_E_CANCELED);
		if (sc->fd >= 0) {
			kvf_loop_del_fd(c->loop, sc->fd);
			close(sc->fd);
		}
		kvf_loop_timer_stop(c->loop, &sc->timer);
		kvf_loop_timer_stop(c->loop, &sc->tick);
		kvf_frame_reader_free(sc->rd);
		kvf_wire_writer_free(&sc->out);
		kvf_free(sc->addr);
	}
	if (c->flush_task) {
		if (c->flush_posted)
			c->flush_task->arg = NULL;
		else
			kvf_free(c->flush_task);
	}
	kvf_free(c->sc);
	kvf_wire_writer_free(&c->ev);
	kvf_free(c->batch);
	kvf_free(c->hbuf);
	kvf_free(c->holders);
	kvf_free(c->wbuf);
	kvf_free(c->workers);
	kvf_free(c->keybuf);
	kvf_free((char *)c->o.worker_id);
	kvf_free((char *)c->o.model);
	kvf_free((char *)c->o.http_endpoint);
	kvf_free((char *)c->o.fabric_endpoint);
	kvf_free(c);
}

void kvf_cachedir_get_stats(const kvf_cachedir *c, kvf_cachedir_stats *st)
{
	*st = c->st;
	st->servers_up = 0;
	for (size_t i = 0; i < c->nsc; i++)
		st->servers_up += c->sc[i].state == CS_READY;
}
