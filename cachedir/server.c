/*
 * server.c: the cachedir service on one event loop.
 *
 * Shape (Redis-like): one thread owns the index and every connection, so
 * nothing is locked and a LOOKUP is a few hash probes plus one reply. Input
 * is read straight into each connection's kvf_frame_reader and handled frame
 * by frame; output is appended to the connection's buffer and written in one
 * send() per connection per loop iteration (a posted task flushes the
 * connections made dirty during the iteration, as Redis's beforeSleep does).
 *
 * Failure handling: a frame the decoder refuses is answered with a fatal
 * ERROR and that connection stops reading, flushes and closes; nothing else
 * is affected. Only conn_flush() and the read path's EOF close sockets;
 * everything else marks a connection `closing`, so no callback ever touches a
 * freed connection.
 *
 * Worker sessions: REGISTER binds a worker to its connection. Events carry
 * per-worker sequence numbers; a gap (or a heartbeat whose seq differs from
 * the last applied one) answers RESYNC and the worker's events are ignored
 * until its SYNC_BEGIN. A closed connection leaves the worker's entries in
 * place (state DISCONNECTED, not listed by LOOKUP) until its lease runs out or
 * it registers again and re-announces (sync, cd_index.h).
 *
 * WATCH subscribers get a snapshot, built one worker at a time as their
 * socket drains, then live events for the workers already dumped; one that
 * falls more than watch_buffer behind loses events (the seq jumps) and gets a
 * fresh snapshot once it has caught up.
 */
#include "cachedir/cd_server.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"
#include "common/kvf_frame.h"
#include "common/kvf_log.h"
#include "common/kvf_net.h"
#include "common/kvf_time.h"

#define MOD "cachedir"
#define READ_CHUNK (256u << 10)
#define READS_PER_EVENT 4
#define WATCH_PUMP_BYTES (256u << 10) /* snapshot: refill below this */
#define WATCH_BATCH 4096              /* keys per snapshot STORED event */
#define CLOSE_LINGER_MS 2000          /* a closing peer that does not read */

/* ---- metrics ---- */

static const double lookup_buckets_s[] = {
	1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 5e-2,
};

enum {
	M_KEYS, M_HOLDERS, M_WORKERS, M_INDEX_BYTES, M_LOOKUPS, M_LOOKUP_KEYS, M_LOOKUP_SECONDS,
	M_LOOKUPS_PS, M_EVENTS, M_EVENT_KEYS, M_EVENTS_PS, M_EXPIRIES, M_RESYNCS, M_SYNCS, M_SWEPT,
	M_CLIENTS, M_ERRORS, M_WATCH_OVERFLOWS, M_REJECTED, M_N
};

static const kvf_metric_def server_metrics[M_N] = {
	[M_KEYS] = { "kvf_cachedir_blocks", KVF_METRIC_GAUGE, "Distinct block keys in the index", NULL, NULL, 0 },
	[M_HOLDERS] = { "kvf_cachedir_holders", KVF_METRIC_GAUGE, "(block, worker) entries holding the tier",
			"tier", NULL, 0 },
	[M_WORKERS] = { "kvf_cachedir_workers", KVF_METRIC_GAUGE, "Registered workers by state", "state", NULL, 0 },
	[M_INDEX_BYTES] = { "kvf_cachedir_index_bytes", KVF_METRIC_GAUGE, "Memory held by the index by part",
			    "part", NULL, 0 },
	[M_LOOKUPS] = { "kvf_cachedir_lookups_total", KVF_METRIC_COUNTER, "LOOKUP requests answered", NULL, NULL, 0 },
	[M_LOOKUP_KEYS] = { "kvf_cachedir_lookup_keys_total", KVF_METRIC_COUNTER, "Keys in LOOKUP requests", NULL,
			    NULL, 0 },
	[M_LOOKUP_SECONDS] = { "kvf_cachedir_lookup_seconds", KVF_METRIC_HISTOGRAM,
			       "Time to answer a LOOKUP inside the server (index walk and reply encoding)", NULL,
			       lookup_buckets_s, sizeof(lookup_buckets_s) / sizeof(lookup_buckets_s[0]) },
	[M_LOOKUPS_PS] = { "kvf_cachedir_lookups_per_second", KVF_METRIC_GAUGE, "LOOKUPs over the last second",
			   NULL, NULL, 0 },
	[M_EVENTS] = { "kvf_cachedir_events_total", KVF_METRIC_COUNTER, "Worker events applied by type", "type",
		       NULL, 0 },
	[M_EVENT_KEYS] = { "kvf_cachedir_event_keys_total", KVF_METRIC_COUNTER, "Keys in STORED and REMOVED events",
			   "type", NULL, 0 },
	[M_EVENTS_PS] = { "kvf_cachedir_events_per_second", KVF_METRIC_GAUGE,
			  "Worker events (all types) over the last second", NULL, NULL, 0 },
	[M_EXPIRIES] = { "kvf_cachedir_lease_expiries_total", KVF_METRIC_COUNTER,
			 "Workers dropped with all their blocks because their lease ran out", NULL, NULL, 0 },
	[M_RESYNCS] = { "kvf_cachedir_resyncs_total", KVF_METRIC_COUNTER,
			"RESYNC requests sent to workers by cause", "reason", NULL, 0 },
	[M_SYNCS] = { "kvf_cachedir_syncs_total", KVF_METRIC_COUNTER, "Completed worker re-announces", NULL, NULL,
		      0 },
	[M_SWEPT] = { "kvf_cachedir_sync_swept_total", KVF_METRIC_COUNTER,
		      "Entries dropped at the end of a re-announce that no longer listed them", NULL, NULL, 0 },
	[M_CLIENTS] = { "kvf_cachedir_clients", KVF_METRIC_GAUGE, "Open protocol connections by kind", "kind",
			NULL, 0 },
	[M_ERRORS] = { "kvf_cachedir_protocol_errors_total", KVF_METRIC_COUNTER,
		       "ERROR frames sent, by error name", "code", NULL, 0 },
	[M_WATCH_OVERFLOWS] = { "kvf_cachedir_watch_overflows_total", KVF_METRIC_COUNTER,
				"WATCH subscribers that fell behind and were resynced", NULL, NULL, 0 },
	[M_REJECTED] = { "kvf_cachedir_rejected_keys_total", KVF_METRIC_COUNTER,
			 "STORED keys not indexed because cachedir.max_blocks was reached", NULL, NULL, 0 },
};

enum { EV_STORED, EV_REMOVED, EV_CLEARED, EV_SYNC_BEGIN, EV_SYNC_END, EV_HEARTBEAT, EV_NTYPES };
static const char *const ev_names[EV_NTYPES] = { "stored", "removed", "cleared", "sync_begin", "sync_end",
						 "heartbeat" };
static const char *const tier_names[CD_NTIERS] = { "gpu", "host", "disk" };
static const char *const state_names[4] = { "?", "active", "draining", "disconnected" };
enum { CK_READER, CK_WORKER, CK_WATCHER, CK_N };
static const char *const kind_names[CK_N] = { "reader", "worker", "watcher" };

/* ---- connections ---- */

typedef struct conn conn;
struct conn {
	conn *prev, *next;   /* all connections */
	conn *dprev, *dnext; /* dirty list */
	conn *wprev, *wnext; /* watchers */
	cd_server *srv;
	int fd;
	char peer[64];
	kvf_frame_reader *rd;
	kvf_wire_writer out;
	size_t out_off;
	unsigned events; /* registered with the loop */
	uint8_t dirty, closing, watching, snapshotting, lagging;
	uint64_t closing_since_ms;
	cd_worker *worker;
	/* WATCH */
	uint32_t watch_rid;
	uint8_t watch_flags;
	char watch_model[CD_MODEL_MAX + 1];
	uint64_t watch_seq;
	uint32_t snap_next;
	/* stats */
	uint64_t created_ms, frames_in, bytes_in, bytes_out, lookups;
};

struct cd_server {
	kvf_loop *loop;
	cd_server_opts o;
	cd_index *ix;
	int lfd;
	uint16_t port;
	uint64_t epoch, start_ms;
	conn *conns, *dirty, *watchers;
	conn *reading; /* conn_read() in progress: its output is flushed at the end */
	size_t nconns;
	kvf_task *flush_task; /* own allocation: may outlive the server in the loop's queue */
	int flush_posted;
	kvf_timer lease_timer, rate_timer;
	kvf_wire_writer scratch; /* event bodies built once for many watchers */
	kvf_blockkey *swept;     /* keys of a sync sweep, for watchers */
	size_t nswept, swept_cap;

	kvf_metrics *metrics;
	kvf_metric *m[M_N];
	kvf_series *s_holders[CD_NTIERS], *s_workers[4], *s_bytes[4], *s_events[EV_NTYPES],
		*s_event_keys[2], *s_resync_gap, *s_resync_hb, *s_clients[CK_N];
	uint64_t n_lookups, n_events, last_lookups, last_events;
	kvf_admin *admin;
};

static void conn_flush(conn *c);
static void watch_start_snapshot(conn *c, uint8_t reason);
static void watch_pump(conn *c);

static size_t out_pending(const conn *c)
{
	return c->out.len - c->out_off;
}

static void flush_task_fn(kvf_loop *loop, kvf_task *t)
{
	(void)loop;
	cd_server *s = t->arg;
	if (!s) { /* the server was destroyed while this task was queued */
		kvf_free(t);
		return;
	}
	s->flush_posted = 0;
	while (s->dirty) {
		conn *c = s->dirty;
		s->dirty = c->dnext;
		if (s->dirty)
			s->dirty->dprev = NULL;
		c->dnext = c->dprev = NULL;
		c->dirty = 0;
		conn_flush(c);
	}
}

static void mark_dirty(conn *c)
{
	cd_server *s = c->srv;
	if (c == s->reading)
		return; /* conn_read() flushes it before returning: no task needed */
	if (!c->dirty) {
		c->dirty = 1;
		c->dprev = NULL;
		c->dnext = s->dirty;
		if (s->dirty)
			s->dirty->dprev = c;
		s->dirty = c;
	}
	if (!s->flush_posted) {
		s->flush_posted = 1;
		kvf_loop_post(s->loop, s->flush_task);
	}
}

static int conn_kind(const conn *c)
{
	return c->watching ? CK_WATCHER : c->worker ? CK_WORKER : CK_READER;
}

static void set_events(conn *c, unsigned ev)
{
	if (c->events != ev && kvf_loop_mod_fd(c->srv->loop, c->fd, ev) == 0)
		c->events = ev;
}

static void watch_stop(conn *c)
{
	cd_server *s = c->srv;
	if (!c->watching)
		return;
	if (c->wprev)
		c->wprev->wnext = c->wnext;
	else
		s->watchers = c->wnext;
	if (c->wnext)
		c->wnext->wprev = c->wprev;
	c->wprev = c->wnext = NULL;
	c->watching = c->snapshotting = c->lagging = 0;
}

static void worker_disconnected(cd_server *s, cd_worker *w);

static void conn_free(conn *c)
{
	cd_server *s = c->srv;
	if (s->reading == c)
		s->reading = NULL;
	if (c->dirty) {
		if (c->dprev)
			c->dprev->dnext = c->dnext;
		else
			s->dirty = c->dnext;
		if (c->dnext)
			c->dnext->dprev = c->dprev;
	}
	watch_stop(c);
	if (c->worker) {
		cd_worker *w = c->worker;
		c->worker = NULL;
		w->conn = NULL;
		worker_disconnected(s, w);
	}
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	s->nconns--;
	kvf_loop_del_fd(s->loop, c->fd);
	close(c->fd);
	kvf_frame_reader_free(c->rd);
	kvf_wire_writer_free(&c->out);
	kvf_free(c);
}

/* Stop reading; close once the output (an ERROR, usually) is written. */
static void conn_close_after_flush(conn *c)
{
	if (c->closing)
		return;
	c->closing = 1;
	c->closing_since_ms = kvf_loop_now_ms(c->srv->loop);
	watch_stop(c);
	mark_dirty(c);
}

/* Output drained below the pump mark: continue a snapshot or leave lagging. */
static void watch_after_flush(conn *c)
{
	if (c->lagging && out_pending(c) < c->srv->o.watch_buffer_bytes / 4)
		watch_start_snapshot(c, CD_SNAP_OVERFLOW);
	else if (c->snapshotting && out_pending(c) < WATCH_PUMP_BYTES)
		watch_pump(c);
}

static void conn_flush(conn *c)
{
	while (out_pending(c)) {
		ssize_t n = send(c->fd, c->out.buf + c->out_off, out_pending(c), MSG_NOSIGNAL);
		if (n > 0) {
			c->out_off += (size_t)n;
			c->bytes_out += (uint64_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		KVF_DEBUG(MOD, "send failed", "peer=%s err=\"%s\"", c->peer, strerror(errno));
		conn_free(c);
		return;
	}
	if (!out_pending(c)) {
		kvf_wire_writer_reset(&c->out);
		c->out_off = 0;
		if (c->closing) {
			conn_free(c);
			return;
		}
	} else if (c->out_off > (1u << 20) && c->out_off * 2 > c->out.len) {
		memmove(c->out.buf, c->out.buf + c->out_off, out_pending(c));
		c->out.len -= c->out_off;
		c->out_off = 0;
	}
	if (c->out.err) { /* an encoder ran out of memory: the stream is unusable */
		conn_free(c);
		return;
	}
	if (c->watching && (c->snapshotting || c->lagging))
		watch_after_flush(c);
	set_events(c, (c->closing ? 0 : KVF_EV_READ) | (out_pending(c) ? KVF_EV_WRITE : 0));
}

/* ---- errors ---- */

static void count_error(cd_server *s, int code)
{
	if (!s->metrics)
		return;
	const char *v[1] = { kvf_errname(code) };
	kvf_series *se;
	if (kvf_metric_labels(s->m[M_ERRORS], v, &se) == 0)
		kvf_series_add(se, 1);
}

static void send_error(conn *c, uint32_t rid, int code, int fatal, const char *msg)
{
	count_error(c->srv, code);
	cd_enc_error(&c->out, rid, code, fatal, msg);
	KVF_LOG_RL(fatal ? KVF_LOG_WARN : KVF_LOG_DEBUG, 20, 1000, MOD, "error sent",
		   "peer=%s code=%s fatal=%d detail=\"%s\"", c->peer, kvf_errname(code), fatal, msg);
	if (fatal)
		conn_close_after_flush(c);
	mark_dirty(c);
}

/* ---- watchers ---- */

static void fill_worker_info(const cd_server *s, const cd_worker *w, cd_worker_info *wi)
{
	memset(wi, 0, sizeof(*wi));
	snprintf(wi->worker_id, sizeof(wi->worker_id), "%s", w->id);
	wi->role = w->role;
	snprintf(wi->model, sizeof(wi->model), "%s", w->model->name);
	wi->block_size = w->model->block_size;
	wi->epoch = w->epoch;
	wi->state = w->state;
	wi->tiers = w->tiers;
	memcpy(wi->capacity, w->capacity, sizeof(wi->capacity));
	snprintf(wi->http, sizeof(wi->http), "%s", w->http);
	snprintf(wi->fabric, sizeof(wi->fabric), "%s", w->fabric);
	wi->load = w->load;
	memcpy(wi->blocks, w->blocks, sizeof(wi->blocks));
	uint64_t now = kvf_loop_now_ms(s->loop);
	uint64_t age = now > w->last_heartbeat_ms ? now - w->last_heartbeat_ms : 0;
	wi->heartbeat_age_ms = age > UINT32_MAX ? UINT32_MAX : (uint32_t)age;
}

/* Whether watcher c should get a live event about w (need: CD_WATCH_*). */
static int watch_wants(const conn *c, const cd_worker *w, uint8_t need)
{
	if (!c->watching || c->closing || !(c->watch_flags & need))
		return 0;
	if (c->watch_model[0] && strcmp(c->watch_model, w->model->name) != 0)
		return 0;
	/* Mid-snapshot: workers not dumped yet will be dumped with this state. */
	return !c->snapshotting || w->idx < c->snap_next;
}


/* Appends one event frame to watcher c, or drops it when c is too far behind. */
static void watch_append(conn *c, const uint8_t *frame, size_t len)
{
	cd_server *s = c->srv;
	c->watch_seq++;
	if (c->lagging)
		return;
	if (out_pending(c) + len > s->o.watch_buffer_bytes) {
		c->lagging = 1;
		c->snapshotting = 0;
		if (s->metrics)
			kvf_metric_inc(s->m[M_WATCH_OVERFLOWS]);
		KVF_LOG_RL(KVF_LOG_WARN, 5, 1000, MOD, "watcher fell behind: events dropped, resync follows",
			   "peer=%s pending_bytes=%zu", c->peer, out_pending(c));
		return;
	}
	/* The frame was built with seq 0 and this watcher's rid: patch both. */
	uint8_t *p = kvf_wire_put_space(&c->out, len);
	if (!p)
		return;
	memcpy(p, frame, len);
	for (int i = 0; i < 4; i++)
		p[8 + i] = (uint8_t)(c->watch_rid >> (8 * i));
	for (int i = 0; i < 8; i++)
		p[KVF_FRAME_HDR_LEN + i] = (uint8_t)(c->watch_seq >> (8 * i));
	mark_dirty(c);
}

/* Sends the event in s->scratch to every watcher interested in w. */
static void broadcast(cd_server *s, const cd_worker *w, uint8_t need)
{
	if (kvf_wire_writer_error(&s->scratch))
		return;
	for (conn *c = s->watchers; c; c = c->wnext)
		if (watch_wants(c, w, need))
			watch_append(c, s->scratch.buf, s->scratch.len);
}

static int have_watchers(const cd_server *s)
{
	return s->watchers != NULL;
}

static void bcast_worker(cd_server *s, const cd_worker *w)
{
	if (!have_watchers(s))
		return;
	cd_worker_info wi;
	fill_worker_info(s, w, &wi);
	kvf_wire_writer_reset(&s->scratch);
	cd_enc_ev_worker(&s->scratch, 0, 0, &wi);
	broadcast(s, w, CD_WATCH_WORKERS);
}

static void bcast_gone(cd_server *s, const cd_worker *w, uint8_t reason)
{
	if (!have_watchers(s))
		return;
	kvf_wire_writer_reset(&s->scratch);
	cd_enc_ev_gone(&s->scratch, 0, 0, w->id, reason);
	/* Block-only watchers need it too: every block of w is gone. */
	broadcast(s, w, CD_WATCH_WORKERS | CD_WATCH_BLOCKS);
}

static void bcast_blocks_raw(cd_server *s, const cd_worker *w, uint8_t kind, uint8_t tier,
			     const kvf_blockkey *parent, const cd_keys *keys)
{
	if (!have_watchers(s))
		return;
	kvf_wire_writer_reset(&s->scratch);
	size_t start;
	kvf_frame_hdr h = { .version = CD_PROTO_VERSION, .type = CD_WATCH_EVENT };
	kvf_frame_begin(&s->scratch, &h, &start);
	kvf_wire_put_u64(&s->scratch, 0);
	kvf_wire_put_u8(&s->scratch, kind);
	kvf_wire_put_str(&s->scratch, w->id);
	kvf_wire_put_u8(&s->scratch, tier);
	if (kind == CD_EV_STORED) {
		kvf_wire_put_u8(&s->scratch, parent ? CD_STORED_PARENT : 0);
		if (parent)
			cd_put_key(&s->scratch, *parent);
	}
	kvf_wire_put_u32(&s->scratch, keys->n);
	kvf_wire_put_bytes(&s->scratch, keys->p, (size_t)keys->n * CD_KEY_BYTES);
	if (kvf_frame_end(&s->scratch, start) == 0)
		broadcast(s, w, CD_WATCH_BLOCKS);
}

static void bcast_blocks(cd_server *s, const cd_worker *w, uint8_t kind, uint8_t tier, const kvf_blockkey *keys,
			 size_t n)
{
	if (!have_watchers(s) || n == 0)
		return;
	kvf_wire_writer_reset(&s->scratch);
	if (cd_enc_ev_blocks(&s->scratch, 0, 0, kind, w->id, tier, NULL, keys, n) == 0)
		broadcast(s, w, CD_WATCH_BLOCKS);
}

static void bcast_cleared(cd_server *s, const cd_worker *w)
{
	if (!have_watchers(s))
		return;
	kvf_wire_writer_reset(&s->scratch);
	cd_enc_ev_cleared(&s->scratch, 0, 0, w->id);
	broadcast(s, w, CD_WATCH_BLOCKS);
}

/* Snapshot of one worker's blocks, batched per tier. */
struct dump {
	conn *c;
	const cd_worker *w;
	kvf_blockkey *batch[CD_NTIERS];
	size_t n[CD_NTIERS];
};

static void dump_flush(struct dump *d, int t)
{
	if (!d->n[t])
		return;
	conn *c = d->c;
	c->watch_seq++;
	cd_enc_ev_blocks(&c->out, c->watch_rid, c->watch_seq, CD_EV_STORED, d->w->id, (uint8_t)t, NULL, d->batch[t],
			 d->n[t]);
	d->n[t] = 0;
}

static void dump_key(void *ud, kvf_blockkey key, uint8_t tiers)
{
	struct dump *d = ud;
	for (int t = 0; t < CD_NTIERS; t++)
		if (tiers & (1u << t)) {
			d->batch[t][d->n[t]++] = key;
			if (d->n[t] == WATCH_BATCH)
				dump_flush(d, t);
		}
}

static void watch_pump(conn *c)
{
	cd_server *s = c->srv;
	if (!c->snapshotting)
		return;
	kvf_blockkey *mem = NULL;
	size_t before = c->out.len;
	while (c->snapshotting && out_pending(c) < WATCH_PUMP_BYTES && !c->out.err) {
		uint32_t cap = cd_index_worker_cap(s->ix);
		if (c->snap_next >= cap) {
			c->snapshotting = 0;
			c->watch_seq++;
			cd_enc_ev_snapshot(&c->out, c->watch_rid, c->watch_seq, CD_EV_SNAPSHOT_END, 0, 0);
			break;
		}
		cd_worker *w = cd_index_worker_at(s->ix, c->snap_next++);
		if (!w || (c->watch_model[0] && strcmp(c->watch_model, w->model->name) != 0))
			continue;
		if (c->watch_flags & CD_WATCH_WORKERS) {
			cd_worker_info wi;
			fill_worker_info(s, w, &wi);
			c->watch_seq++;
			cd_enc_ev_worker(&c->out, c->watch_rid, c->watch_seq, &wi);
		}
		if ((c->watch_flags & CD_WATCH_BLOCKS) && w->nheld) {
			if (!mem && !(mem = kvf_malloc(CD_NTIERS * WATCH_BATCH * sizeof(*mem)))) {
				c->out.err = KVF_E_NOMEM;
				break;
			}
			struct dump d = { .c = c, .w = w };
			for (int t = 0; t < CD_NTIERS; t++)
				d.batch[t] = mem + (size_t)t * WATCH_BATCH;
			cd_index_foreach(s->ix, w, dump_key, &d);
			for (int t = 0; t < CD_NTIERS; t++)
				dump_flush(&d, t);
		}
	}
	kvf_free(mem);
	if (c->out.len != before || c->out.err)
		mark_dirty(c);
}

static void watch_start_snapshot(conn *c, uint8_t reason)
{
	c->snapshotting = 1;
	c->lagging = 0;
	c->snap_next = 0;
	c->watch_seq++;
	cd_enc_ev_snapshot(&c->out, c->watch_rid, c->watch_seq, CD_EV_SNAPSHOT_BEGIN, c->srv->epoch, reason);
	watch_pump(c);
}

/* ---- workers ---- */

static void worker_drop(cd_server *s, cd_worker *w, uint8_t reason)
{
	bcast_gone(s, w, reason);
	if (w->conn) {
		conn *c = w->conn;
		c->worker = NULL;
		w->conn = NULL;
	}
	cd_index_worker_remove(s->ix, w);
}

static void worker_disconnected(cd_server *s, cd_worker *w)
{
	w->state = CD_WS_DISCONNECTED;
	KVF_INFO(MOD, "worker disconnected, entries kept until its lease ends", "worker=%s blocks=%" PRIu64
		 " lease_left_ms=%" PRId64, w->id, w->nheld,
		 (int64_t)w->lease_deadline_ms - (int64_t)kvf_loop_now_ms(s->loop));
	bcast_worker(s, w);
}

static void lease_check(kvf_loop *loop, kvf_timer *t, void *ud)
{
	(void)t;
	cd_server *s = ud;
	uint64_t now = kvf_loop_now_ms(loop);
	uint32_t cap = cd_index_worker_cap(s->ix);
	for (uint32_t i = 0; i < cap; i++) {
		cd_worker *w = cd_index_worker_at(s->ix, i);
		if (!w || now < w->lease_deadline_ms)
			continue;
		KVF_WARN(MOD, "lease expired: worker and its blocks dropped", "worker=%s blocks=%" PRIu64
			 " silent_ms=%" PRIu64, w->id, w->nheld, now - w->last_heartbeat_ms);
		if (s->metrics)
			kvf_metric_inc(s->m[M_EXPIRIES]);
		conn *c = w->conn;
		worker_drop(s, w, CD_GONE_EXPIRED);
		if (c)
			send_error(c, 0, KVF_E_TIMEOUT, 1, "cachedir: lease expired: no heartbeat within cachedir.lease");
	}
	/* Peers that never read their final ERROR. */
	for (conn *c = s->conns, *next; c; c = next) {
		next = c->next;
		if (c->closing && now - c->closing_since_ms > CLOSE_LINGER_MS)
			conn_free(c);
	}
}

static void rate_tick(kvf_loop *loop, kvf_timer *t, void *ud)
{
	(void)loop;
	(void)t;
	cd_server *s = ud;
	if (!s->metrics)
		return;
	kvf_metric_set(s->m[M_LOOKUPS_PS], (double)(s->n_lookups - s->last_lookups));
	kvf_metric_set(s->m[M_EVENTS_PS], (double)(s->n_events - s->last_events));
	s->last_lookups = s->n_lookups;
	s->last_events = s->n_events;
}

/* ---- request handlers ---- */

static void count_event(cd_server *s, int type, uint64_t nkeys)
{
	s->n_events++;
	if (!s->metrics)
		return;
	kvf_series_add(s->s_events[type], 1);
	if (type == EV_STORED || type == EV_REMOVED)
		kvf_series_add(s->s_event_keys[type], nkeys);
}

static void on_register(conn *c, const cd_msg *m)
{
	cd_server *s = c->srv;
	const cd_register *r = &m->u.reg;
	uint32_t rid = m->hdr.request_id;
	if (c->worker) {
		send_error(c, rid, KVF_E_STATE, 0, "cachedir: this connection already registered a worker");
		return;
	}
	cd_worker *w = cd_index_worker(s->ix, r->worker_id);
	uint8_t resumed = 0;
	if (w) {
		if (w->conn) {
			conn *old = w->conn;
			old->worker = NULL;
			w->conn = NULL;
			send_error(old, 0, KVF_E_EXISTS, 1,
				   "cachedir: worker registered again from another connection");
		}
		if (w->epoch != r->epoch || strcmp(w->model->name, r->model) != 0 ||
		    w->model->block_size != r->block_size) {
			KVF_INFO(MOD, "worker restarted: previous entries dropped", "worker=%s old_epoch=%" PRIu64
				 " new_epoch=%" PRIu64 " blocks=%" PRIu64, w->id, w->epoch, r->epoch, w->nheld);
			worker_drop(s, w, CD_GONE_REPLACED);
			w = NULL;
		} else if (cd_index_worker_update(s->ix, w, r)) {
			send_error(c, rid, KVF_E_NOMEM, 0, kvf_errmsg());
			return;
		} else {
			resumed = 1;
		}
	}
	if (!w) {
		int rc = cd_index_worker_add(s->ix, r, (uint32_t)s->o.max_workers, &w);
		if (rc) {
			send_error(c, rid, rc, 0, kvf_errmsg());
			return;
		}
	}
	uint64_t now = kvf_loop_now_ms(s->loop);
	w->conn = c;
	c->worker = w;
	w->state = CD_WS_ACTIVE;
	w->last_seq = r->last_seq;
	w->awaiting_sync = 0;
	w->registered_ms = now;
	w->last_heartbeat_ms = now;
	w->lease_deadline_ms = now + s->o.lease_ms;
	cd_registered rep = { .heartbeat_ms = (uint32_t)s->o.heartbeat_ms, .lease_ms = (uint32_t)s->o.lease_ms,
			      .server_epoch = s->epoch, .resumed = resumed };
	cd_enc_registered(&c->out, rid, &rep);
	mark_dirty(c);
	KVF_INFO(MOD, resumed ? "worker re-registered" : "worker registered",
		 "worker=%s model=%s block_size=%u role=%u peer=%s epoch=%" PRIu64 " blocks=%" PRIu64, w->id,
		 w->model->name, w->model->block_size, w->role, c->peer, w->epoch, w->nheld);
	bcast_worker(s, w);
}

static void ask_resync(conn *c, cd_worker *w, uint64_t got, const char *why, kvf_series *counter)
{
	cd_resync r = { .expected_seq = w->last_seq + 1, .got_seq = got };
	snprintf(r.reason, sizeof(r.reason), "%s", why);
	w->awaiting_sync = 1;
	w->n_gaps++;
	if (counter)
		kvf_series_add(counter, 1);
	cd_enc_resync(&c->out, &r);
	mark_dirty(c);
	KVF_INFO(MOD, "event gap: resync asked", "worker=%s expected_seq=%" PRIu64 " got_seq=%" PRIu64
		 " reason=\"%s\"", w->id, r.expected_seq, got, why);
}

/* Sequence check of one event. Returns 1 when it applies. */
static int seq_accept(conn *c, cd_worker *w, uint8_t type, uint64_t seq)
{
	if (type == CD_SYNC_BEGIN) {
		w->last_seq = seq;
		w->awaiting_sync = 0;
		return 1;
	}
	if (w->awaiting_sync)
		return 0;
	if (seq != w->last_seq + 1) {
		ask_resync(c, w, seq, "event sequence gap", c->srv->s_resync_gap);
		return 0;
	}
	w->last_seq = seq;
	return 1;
}

static void collect_swept(void *ud, kvf_blockkey key)
{
	cd_server *s = ud;
	if (s->nswept == s->swept_cap &&
	    kvf_grow((void **)&s->swept, &s->swept_cap, s->nswept + 1, sizeof(*s->swept)))
		return; /* watchers miss these removals only if memory ran out */
	s->swept[s->nswept++] = key;
}

static void on_event(conn *c, const cd_msg *m)
{
	cd_server *s = c->srv;
	cd_worker *w = c->worker;
	uint8_t type = m->hdr.type;
	if (!w) {
		char msg[96];
		snprintf(msg, sizeof(msg), "cachedir: %s before REGISTER", cd_type_name(type));
		send_error(c, m->hdr.request_id, KVF_E_STATE, 1, msg);
		return;
	}
	uint64_t seq = type == CD_STORED ? m->u.stored.seq : type == CD_REMOVED ? m->u.removed.seq : m->u.seq.seq;
	if (!seq_accept(c, w, type, seq))
		return;
	w->n_events++;
	switch (type) {
	case CD_STORED: {
		const cd_stored *st = &m->u.stored;
		uint64_t rejected = 0;
		for (uint32_t i = 0; i < st->keys.n; i++) {
			int rc = cd_index_store(s->ix, w, cd_keys_get(&st->keys, i), st->tier, (uint64_t)s->o.max_blocks);
			if (rc < 0)
				rejected++;
		}
		count_event(s, EV_STORED, st->keys.n);
		bcast_blocks_raw(s, w, CD_EV_STORED, st->tier, (st->flags & CD_STORED_PARENT) ? &st->parent : NULL,
				 &st->keys);
		if (rejected) {
			if (s->metrics)
				kvf_metric_add(s->m[M_REJECTED], rejected);
			char msg[160];
			snprintf(msg, sizeof(msg), "cachedir: index full (cachedir.max_blocks): %" PRIu64
				 " of %u keys not indexed", rejected, st->keys.n);
			send_error(c, 0, KVF_E_FULL, 0, msg);
		}
		break;
	}
	case CD_REMOVED: {
		const cd_removed *rm = &m->u.removed;
		uint8_t mask = rm->tier == CD_TIER_ALL ? 7 : (uint8_t)(1u << rm->tier);
		for (uint32_t i = 0; i < rm->keys.n; i++)
			cd_index_remove(s->ix, w, cd_keys_get(&rm->keys, i), mask);
		count_event(s, EV_REMOVED, rm->keys.n);
		bcast_blocks_raw(s, w, CD_EV_REMOVED, rm->tier, NULL, &rm->keys);
		break;
	}
	case CD_CLEARED:
		cd_index_clear(s->ix, w);
		count_event(s, EV_CLEARED, 0);
		bcast_cleared(s, w);
		break;
	case CD_SYNC_BEGIN:
		cd_index_sync_begin(s->ix, w);
		count_event(s, EV_SYNC_BEGIN, 0);
		break;
	case CD_SYNC_END: {
		s->nswept = 0;
		uint64_t swept = cd_index_sync_end(s->ix, w, have_watchers(s) ? collect_swept : NULL, s);
		w->n_syncs++;
		count_event(s, EV_SYNC_END, 0);
		if (s->metrics) {
			kvf_metric_inc(s->m[M_SYNCS]);
			kvf_metric_add(s->m[M_SWEPT], swept);
		}
		for (size_t i = 0; i < s->nswept; i += WATCH_BATCH) {
			size_t n = s->nswept - i < WATCH_BATCH ? s->nswept - i : WATCH_BATCH;
			bcast_blocks(s, w, CD_EV_REMOVED, CD_TIER_ALL, s->swept + i, n);
		}
		cd_synced y = { .seq = seq, .blocks = w->nheld, .swept = swept };
		cd_enc_synced(&c->out, m->hdr.request_id, &y);
		mark_dirty(c);
		KVF_DEBUG(MOD, "worker synced", "worker=%s blocks=%" PRIu64 " swept=%" PRIu64, w->id, w->nheld, swept);
		break;
	}
	}
}

static void on_heartbeat(conn *c, const cd_msg *m)
{
	cd_server *s = c->srv;
	cd_worker *w = c->worker;
	if (!w) {
		send_error(c, m->hdr.request_id, KVF_E_STATE, 1, "cachedir: HEARTBEAT before REGISTER");
		return;
	}
	const cd_heartbeat *hb = &m->u.hb;
	uint64_t now = kvf_loop_now_ms(s->loop);
	w->last_heartbeat_ms = now;
	w->lease_deadline_ms = now + s->o.lease_ms;
	w->load = hb->load;
	w->state = (hb->load.flags & CD_LOAD_DRAINING) ? CD_WS_DRAINING : CD_WS_ACTIVE;
	count_event(s, EV_HEARTBEAT, 0);
	if (w->awaiting_sync) {
		/* Still waiting for SYNC_BEGIN: repeat the request (the client
		 * ignores a RESYNC older than the sync it already started). */
		cd_resync r = { .expected_seq = w->last_seq + 1, .got_seq = hb->seq };
		snprintf(r.reason, sizeof(r.reason), "still waiting for SYNC_BEGIN");
		cd_enc_resync(&c->out, &r);
	} else if (hb->seq != w->last_seq) {
		ask_resync(c, w, hb->seq, "heartbeat seq differs from the last event applied", s->s_resync_hb);
	}
	cd_heartbeat_ack ack = { .last_seq = w->last_seq, .blocks = w->nheld };
	cd_enc_heartbeat_ack(&c->out, m->hdr.request_id, &ack);
	mark_dirty(c);
	bcast_worker(s, w);
}

static void on_lookup(conn *c, const cd_msg *m)
{
	cd_server *s = c->srv;
	uint64_t t0 = kvf_now_ns();
	const cd_lookup *lk = &m->u.lookup;
	cd_model *md = cd_index_model(s->ix, lk->model);
	if (!md) {
		char msg[CD_MODEL_MAX + 80];
		snprintf(msg, sizeof(msg), "cachedir: unknown model '%s': no worker registered it", lk->model);
		send_error(c, m->hdr.request_id, KVF_E_NOTFOUND, 0, msg);
		return;
	}
	const cd_match *mt;
	size_t n;
	uint32_t nmatched;
	cd_index_lookup_wire(s->ix, md, &lk->keys, 1, &mt, &n, &nmatched);
	uint8_t flags = kvf_loop_now_ms(s->loop) - s->start_ms < s->o.warmup_ms ? CD_LOOKUP_WARMING : 0;
	cd_list_frame lf;
	cd_lookup_reply_begin(&c->out, m->hdr.request_id, lk->keys.n, nmatched, flags, &lf);
	for (size_t i = 0; i < n; i++)
		cd_put_holder(&c->out, mt[i].w->id, mt[i].w->state, mt[i].prefix);
	cd_list_end(&c->out, &lf, (uint32_t)n);
	mark_dirty(c);
	c->lookups++;
	s->n_lookups++;
	if (s->metrics) {
		kvf_metric_inc(s->m[M_LOOKUPS]);
		kvf_metric_add(s->m[M_LOOKUP_KEYS], lk->keys.n);
		kvf_metric_observe(s->m[M_LOOKUP_SECONDS], (double)(kvf_now_ns() - t0) * 1e-9);
	}
}

static void on_workers(conn *c, const cd_msg *m)
{
	cd_server *s = c->srv;
	const char *model = m->u.workers.model;
	cd_list_frame lf;
	cd_workers_reply_begin(&c->out, m->hdr.request_id, &lf);
	uint32_t n = 0, cap = cd_index_worker_cap(s->ix);
	for (uint32_t i = 0; i < cap; i++) {
		cd_worker *w = cd_index_worker_at(s->ix, i);
		if (!w || (model[0] && strcmp(model, w->model->name) != 0))
			continue;
		cd_worker_info wi;
		fill_worker_info(s, w, &wi);
		cd_put_worker_info(&c->out, &wi);
		n++;
	}
	cd_list_end(&c->out, &lf, n);
	mark_dirty(c);
}

static void on_watch(conn *c, const cd_msg *m)
{
	cd_server *s = c->srv;
	if (c->watching) {
		send_error(c, m->hdr.request_id, KVF_E_STATE, 0, "cachedir: this connection already watches");
		return;
	}
	c->watching = 1;
	c->watch_rid = m->hdr.request_id;
	c->watch_flags = m->u.watch.flags;
	snprintf(c->watch_model, sizeof(c->watch_model), "%s", m->u.watch.model);
	c->watch_seq = 0;
	c->wprev = NULL;
	c->wnext = s->watchers;
	if (s->watchers)
		s->watchers->wprev = c;
	s->watchers = c;
	watch_start_snapshot(c, CD_SNAP_NEW);
}

static void handle_frame(conn *c, const kvf_frame *f)
{
	cd_server *s = c->srv;
	cd_msg m;
	c->frames_in++;
	int rc = cd_proto_decode(f, (uint32_t)s->o.max_keys, &m);
	if (rc == KVF_E_UNSUPPORTED || rc == KVF_E_TOOBIG) { /* the frame was whole: skip it */
		send_error(c, f->hdr.request_id, rc, 0, kvf_errmsg());
		return;
	}
	if (rc) {
		send_error(c, f->hdr.request_id, rc, 1, kvf_errmsg());
		return;
	}
	switch (m.hdr.type) {
	case CD_PING:
		cd_enc_empty(&c->out, CD_PONG, m.hdr.request_id);
		mark_dirty(c);
		break;
	case CD_REGISTER:
		on_register(c, &m);
		break;
	case CD_HEARTBEAT:
		on_heartbeat(c, &m);
		break;
	case CD_STORED:
	case CD_REMOVED:
	case CD_CLEARED:
	case CD_SYNC_BEGIN:
	case CD_SYNC_END:
		on_event(c, &m);
		break;
	case CD_UNREGISTER:
		if (c->worker) {
			KVF_INFO(MOD, "worker unregistered", "worker=%s blocks=%" PRIu64, c->worker->id,
				 c->worker->nheld);
			worker_drop(s, c->worker, CD_GONE_UNREGISTERED);
		}
		cd_enc_empty(&c->out, CD_OK, m.hdr.request_id);
		mark_dirty(c);
		break;
	case CD_LOOKUP:
		on_lookup(c, &m);
		break;
	case CD_WORKERS:
		on_workers(c, &m);
		break;
	case CD_WATCH:
		on_watch(c, &m);
		break;
	case CD_UNWATCH:
		watch_stop(c);
		cd_enc_empty(&c->out, CD_OK, m.hdr.request_id);
		mark_dirty(c);
		break;
	default: {
		char msg[96];
		snprintf(msg, sizeof(msg), "cachedir: %s is a server-to-client message", cd_type_name(m.hdr.type));
		send_error(c, m.hdr.request_id, KVF_E_PROTO, 1, msg);
		break;
	}
	}
}

static void conn_read_frames(conn *c);

/* Reads and handles what arrived, then writes the replies in one send():
 * request/response traffic never waits for the flush task. */
static void conn_read(conn *c)
{
	cd_server *s = c->srv;
	s->reading = c;
	conn_read_frames(c);
	if (s->reading != c)
		return; /* c was freed */
	s->reading = NULL;
	if (c->closing || out_pending(c))
		conn_flush(c); /* may free c */
}

static void conn_read_frames(conn *c)
{
	for (int round = 0; round < READS_PER_EVENT && !c->closing; round++) {
		void *buf;
		size_t room;
		int rc = kvf_frame_reader_space(c->rd, &buf, &room);
		if (rc < 0) {
			send_error(c, 0, rc, 1, kvf_errmsg());
			return;
		}
		if (room > READ_CHUNK)
			room = READ_CHUNK;
		ssize_t n = recv(c->fd, buf, room, 0);
		if (n == 0) {
			if (kvf_frame_reader_pending(c->rd))
				KVF_DEBUG(MOD, "peer closed mid-frame", "peer=%s pending=%zu", c->peer,
					  kvf_frame_reader_pending(c->rd));
			conn_free(c);
			return;
		}
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			conn_free(c);
			return;
		}
		c->bytes_in += (uint64_t)n;
		kvf_frame_reader_commit(c->rd, (size_t)n);
		kvf_frame f;
		while (!c->closing && (rc = kvf_frame_reader_next(c->rd, &f)) == 0)
			handle_frame(c, &f);
		if (!c->closing && rc != KVF_E_AGAIN) {
			/* Framing lost (bad magic, version, size): answer with the versions we speak. */
			send_error(c, 0, rc, 1, kvf_errmsg());
			return;
		}
		if (out_pending(c) > c->srv->o.max_output_bytes && !c->watching) {
			KVF_WARN(MOD, "client does not read its replies: closed", "peer=%s pending_bytes=%zu", c->peer,
				 out_pending(c));
			conn_free(c);
			return;
		}
		if ((size_t)n < room)
			return; /* drained */
	}
}

static void conn_cb(kvf_loop *loop, int fd, unsigned events, void *ud)
{
	(void)loop;
	(void)fd;
	conn *c = ud;
	if (events & KVF_EV_WRITE) {
		conn_flush(c); /* may free c */
		return;
	}
	if (events & (KVF_EV_READ | KVF_EV_ERROR))
		conn_read(c);
}

static void accept_cb(kvf_loop *loop, int fd, unsigned events, void *ud)
{
	(void)events;
	cd_server *s = ud;
	for (int i = 0; i < 64; i++) {
		int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (cfd < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
				KVF_LOG_RL(KVF_LOG_WARN, 5, 1000, MOD, "accept failed", "err=\"%s\"", strerror(errno));
			return;
		}
		kvf_net_set_nodelay(cfd, 1);
		conn *c = kvf_calloc(1, sizeof(*c));
		kvf_frame_decoder dec;
		kvf_frame_decoder_init(&dec, CD_PROTO_MIN_VERSION, CD_PROTO_MAX_VERSION);
		dec.max_frame = (uint32_t)s->o.max_frame_bytes;
		if (!c || kvf_frame_reader_new(&dec, &c->rd)) {
			kvf_free(c);
			close(cfd);
			continue;
		}
		c->srv = s;
		c->fd = cfd;
		kvf_wire_writer_init(&c->out, 0);
		kvf_net_peer_name(cfd, c->peer, sizeof(c->peer));
		c->created_ms = kvf_loop_now_ms(loop);
		if (kvf_loop_add_fd(loop, cfd, KVF_EV_READ, conn_cb, c)) {
			kvf_frame_reader_free(c->rd);
			kvf_free(c);
			close(cfd);
			continue;
		}
		c->events = KVF_EV_READ;
		c->next = s->conns;
		if (s->conns)
			s->conns->prev = c;
		s->conns = c;
		s->nconns++;
		if ((int64_t)s->nconns > s->o.max_clients) {
			send_error(c, 0, KVF_E_OVERLOAD, 1, "cachedir: too many clients (cachedir.max_clients)");
			continue;
		}
		KVF_DEBUG(MOD, "client connected", "peer=%s fd=%d", c->peer, cfd);
	}
}

/* ---- metrics collection ---- */

static void collect(void *ud)
{
	cd_server *s = ud;
	cd_index_stats st;
	cd_index_stats_get(s->ix, &st);
	kvf_metric_set(s->m[M_KEYS], (double)st.keys);
	for (int t = 0; t < CD_NTIERS; t++)
		kvf_series_set(s->s_holders[t], (double)st.tier_holders[t]);
	kvf_series_set(s->s_bytes[0], (double)st.bytes_table);
	kvf_series_set(s->s_bytes[1], (double)st.bytes_overflow);
	kvf_series_set(s->s_bytes[2], (double)st.bytes_members);
	kvf_series_set(s->s_bytes[3], (double)st.bytes_other);
	uint64_t by_state[4] = { 0 };
	uint32_t cap = cd_index_worker_cap(s->ix);
	for (uint32_t i = 0; i < cap; i++) {
		cd_worker *w = cd_index_worker_at(s->ix, i);
		if (w && w->state <= 3)
			by_state[w->state]++;
	}
	for (int i = 1; i < 4; i++)
		kvf_series_set(s->s_workers[i], (double)by_state[i]);
	uint64_t kinds[CK_N] = { 0 };
	for (conn *c = s->conns; c; c = c->next)
		kinds[conn_kind(c)]++;
	for (int k = 0; k < CK_N; k++)
		kvf_series_set(s->s_clients[k], (double)kinds[k]);
}

static int setup_metrics(cd_server *s)
{
	int rc = kvf_metrics_register(s->metrics, server_metrics, M_N, s->m);
	if (rc)
		return rc;
	for (int t = 0; t < CD_NTIERS && !rc; t++)
		rc = kvf_metric_labels(s->m[M_HOLDERS], &tier_names[t], &s->s_holders[t]);
	for (int i = 1; i < 4 && !rc; i++)
		rc = kvf_metric_labels(s->m[M_WORKERS], &state_names[i], &s->s_workers[i]);
	static const char *const parts[4] = { "table", "overflow", "members", "other" };
	for (int i = 0; i < 4 && !rc; i++)
		rc = kvf_metric_labels(s->m[M_INDEX_BYTES], &parts[i], &s->s_bytes[i]);
	for (int i = 0; i < EV_NTYPES && !rc; i++)
		rc = kvf_metric_labels(s->m[M_EVENTS], &ev_names[i], &s->s_events[i]);
	for (int i = 0; i < 2 && !rc; i++)
		rc = kvf_metric_labels(s->m[M_EVENT_KEYS], &ev_names[i], &s->s_event_keys[i]);
	static const char *const gap[1] = { "gap" }, *const hb[1] = { "heartbeat" };
	if (!rc)
		rc = kvf_metric_labels(s->m[M_RESYNCS], gap, &s->s_resync_gap);
	if (!rc)
		rc = kvf_metric_labels(s->m[M_RESYNCS], hb, &s->s_resync_hb);
	for (int k = 0; k < CK_N && !rc; k++)
		rc = kvf_metric_labels(s->m[M_CLIENTS], &kind_names[k], &s->s_clients[k]);
	if (!rc)
		rc = kvf_metrics_on_collect(s->metrics, collect, s);
	return rc;
}

/* ---- admin commands ---- */

static const char *wstate(const cd_worker *w)
{
	return w->state <= 3 ? state_names[w->state] : "?";
}

static int cmd_show_workers(kvf_admin_out *out, int argc, char **argv, void *ud)
{
	(void)argc;
	(void)argv;
	cd_server *s = ud;
	int json = kvf_admin_want_json(out);
	kvf_buf *b = kvf_admin_buf(out);
	uint64_t now = kvf_loop_now_ms(s->loop);
	uint32_t cap = cd_index_worker_cap(s->ix);
	if (json)
		kvf_buf_puts(b, "[");
	else
		kvf_buf_printf(b, "%-24s %-20s %-5s %-12s %10s %10s %10s %7s %7s %6s %8s %8s %6s %6s %s\n", "worker",
			       "model", "role", "state", "gpu", "host", "disk", "waiting", "running", "kv%",
			       "hb_age", "seq", "gaps", "syncs", "peer");
	int first = 1;
	for (uint32_t i = 0; i < cap; i++) {
		cd_worker *w = cd_index_worker_at(s->ix, i);
		if (!w)
			continue;
		double kv = w->load.kv_total ? 100.0 * (double)w->load.kv_used / (double)w->load.kv_total : 0.0;
		char peer[64];
		snprintf(peer, sizeof(peer), "%s", w->conn ? ((conn *)w->conn)->peer : "-");
		uint64_t age = now - w->last_heartbeat_ms;
		if (json) {
			kvf_buf_printf(b, "%s{\"worker\":", first ? "" : ",");
			kvf_buf_put_json_str(b, w->id, strlen(w->id));
			kvf_buf_puts(b, ",\"model\":");
			kvf_buf_put_json_str(b, w->model->name, strlen(w->model->name));
			kvf_buf_printf(b, ",\"role\":%u,\"state\":\"%s\",\"epoch\":%" PRIu64 ",\"blocks\":{\"gpu\":%" PRIu64
				       ",\"host\":%" PRIu64 ",\"disk\":%" PRIu64 "},\"held\":%" PRIu64
				       ",\"waiting\":%u,\"running\":%u,\"kv_used\":%" PRIu64 ",\"kv_total\":%" PRIu64
				       ",\"heartbeat_age_ms\":%" PRIu64 ",\"last_seq\":%" PRIu64 ",\"gaps\":%" PRIu64
				       ",\"syncs\":%" PRIu64 ",\"http\":",
				       w->role, wstate(w), w->epoch, w->blocks[0], w->blocks[1], w->blocks[2], w->nheld,
				       w->load.waiting, w->load.running, w->load.kv_used, w->load.kv_total, age,
				       w->last_seq, w->n_gaps, w->n_syncs);
			kvf_buf_put_json_str(b, w->http, strlen(w->http));
			kvf_buf_puts(b, ",\"fabric\":");
			kvf_buf_put_json_str(b, w->fabric, strlen(w->fabric));
			kvf_buf_puts(b, ",\"peer\":");
			kvf_buf_put_json_str(b, peer, strlen(peer));
			kvf_buf_puts(b, "}");
		} else {
			kvf_buf_printf(b, "%-24s %-20s %-5u %-12s %10" PRIu64 " %10" PRIu64 " %10" PRIu64
				       " %7u %7u %6.1f %8" PRIu64 " %8" PRIu64 " %6" PRIu64 " %6" PRIu64 " %s\n",
				       w->id, w->model->name, w->role, wstate(w), w->blocks[0], w->blocks[1],
				       w->blocks[2], w->load.waiting, w->load.running, kv, age, w->last_seq, w->n_gaps,
				       w->n_syncs, peer);
		}
		first = 0;
	}
	if (json)
		kvf_buf_puts(b, "]\n");
	return 0;
}

static int cmd_show_blocks(kvf_admin_out *out, int argc, char **argv, void *ud)
{
	(void)argc;
	(void)argv;
	cd_server *s = ud;
	cd_index_stats st;
	cd_index_stats_get(s->ix, &st);
	kvf_buf *b = kvf_admin_buf(out);
	uint64_t bytes = st.bytes_table + st.bytes_overflow + st.bytes_members + st.bytes_other;
	uint32_t cap = cd_index_worker_cap(s->ix);
	if (kvf_admin_want_json(out)) {
		kvf_buf_printf(b, "{\"keys\":%" PRIu64 ",\"holders\":%" PRIu64 ",\"tiers\":{\"gpu\":%" PRIu64
			       ",\"host\":%" PRIu64 ",\"disk\":%" PRIu64 "},\"table_slots\":%" PRIu64
			       ",\"overflow_arrays\":%" PRIu64 ",\"bytes\":{\"table\":%" PRIu64 ",\"overflow\":%" PRIu64
			       ",\"members\":%" PRIu64 ",\"other\":%" PRIu64 ",\"total\":%" PRIu64 "},\"workers\":[",
			       st.keys, st.holders, st.tier_holders[0], st.tier_holders[1], st.tier_holders[2],
			       st.table_slots, st.overflow_arrays, st.bytes_table, st.bytes_overflow, st.bytes_members,
			       st.bytes_other, bytes);
		int first = 1;
		for (uint32_t i = 0; i < cap; i++) {
			cd_worker *w = cd_index_worker_at(s->ix, i);
			if (!w)
				continue;
			kvf_buf_printf(b, "%s{\"worker\":", first ? "" : ",");
			kvf_buf_put_json_str(b, w->id, strlen(w->id));
			kvf_buf_printf(b, ",\"held\":%" PRIu64 ",\"gpu\":%" PRIu64 ",\"host\":%" PRIu64 ",\"disk\":%" PRIu64
				       "}", w->nheld, w->blocks[0], w->blocks[1], w->blocks[2]);
			first = 0;
		}
		kvf_buf_puts(b, "]}\n");
		return 0;
	}
	kvf_buf_printf(b, "keys %" PRIu64 "\nholders %" PRIu64 " (gpu %" PRIu64 ", host %" PRIu64 ", disk %" PRIu64
		       ")\ntable %" PRIu64 " slots, %.1f%% full\noverflow arrays %" PRIu64
		       "\nbytes table %" PRIu64 " overflow %" PRIu64 " members %" PRIu64 " other %" PRIu64
		       " total %" PRIu64 "\n",
		       st.keys, st.holders, st.tier_holders[0], st.tier_holders[1], st.tier_holders[2], st.table_slots,
		       st.table_slots ? 100.0 * (double)st.keys / (double)st.table_slots : 0.0, st.overflow_arrays,
		       st.bytes_table, st.bytes_overflow, st.bytes_members, st.bytes_other, bytes);
	kvf_buf_printf(b, "%-24s %10s %10s %10s %10s\n", "worker", "held", "gpu", "host", "disk");
	for (uint32_t i = 0; i < cap; i++) {
		cd_worker *w = cd_index_worker_at(s->ix, i);
		if (w)
			kvf_buf_printf(b, "%-24s %10" PRIu64 " %10" PRIu64 " %10" PRIu64 " %10" PRIu64 "\n", w->id,
				       w->nheld, w->blocks[0], w->blocks[1], w->blocks[2]);
	}
	return 0;
}

static int cmd_show_clients(kvf_admin_out *out, int argc, char **argv, void *ud)
{
	(void)argc;
	(void)argv;
	cd_server *s = ud;
	int json = kvf_admin_want_json(out);
	kvf_buf *b = kvf_admin_buf(out);
	uint64_t now = kvf_loop_now_ms(s->loop);
	if (json)
		kvf_buf_puts(b, "[");
	else
		kvf_buf_printf(b, "%-5s %-22s %-8s %-24s %8s %10s %12s %12s %10s %10s\n", "fd", "peer", "kind",
			       "worker", "age_s", "frames_in", "bytes_in", "bytes_out", "lookups", "pending");
	int first = 1;
	for (conn *c = s->conns; c; c = c->next) {
		const char *wid = c->worker ? c->worker->id : "-";
		if (json) {
			kvf_buf_printf(b, "%s{\"fd\":%d,\"peer\":", first ? "" : ",", c->fd);
			kvf_buf_put_json_str(b, c->peer, strlen(c->peer));
			kvf_buf_printf(b, ",\"kind\":\"%s\",\"worker\":", kind_names[conn_kind(c)]);
			kvf_buf_put_json_str(b, wid, strlen(wid));
			kvf_buf_printf(b, ",\"age_ms\":%" PRIu64 ",\"frames_in\":%" PRIu64 ",\"bytes_in\":%" PRIu64
				       ",\"bytes_out\":%" PRIu64 ",\"lookups\":%" PRIu64 ",\"pending_bytes\":%zu}",
				       now - c->created_ms, c->frames_in, c->bytes_in, c->bytes_out, c->lookups,
				       out_pending(c));
		} else {
			kvf_buf_printf(b, "%-5d %-22s %-8s %-24s %8.1f %10" PRIu64 " %12" PRIu64 " %12" PRIu64 " %10" PRIu64
				       " %10zu\n",
				       c->fd, c->peer, kind_names[conn_kind(c)], wid, (double)(now - c->created_ms) / 1000.0,
				       c->frames_in, c->bytes_in, c->bytes_out, c->lookups, out_pending(c));
		}
		first = 0;
	}
	if (json)
		kvf_buf_puts(b, "]\n");
	return 0;
}

static const kvf_admin_cmd server_cmds[] = {
	{ { "show", "workers" }, "show workers [json]",
	  "registered workers: state, blocks per tier, load, heartbeat age, event seq, gaps, syncs", cmd_show_workers },
	{ { "show", "blocks" }, "show blocks [json]",
	  "index size, memory by part, and blocks per worker and tier", cmd_show_blocks },
	{ { "show", "clients" }, "show clients [json]",
	  "protocol connections: peer, kind (reader/worker/watcher), traffic, pending output", cmd_show_clients },
};

/* ---- config ---- */

#define OPT(f) offsetof(cd_daemon_cfg, srv.f)
static const kvf_cfg_key cachedir_keys[] = {
	KVF_DAEMON_KEYS(cd_daemon_cfg, d, "0.0.0.0:7701", "/tmp/kvf-cachedir.sock"),
	{ "listen", KVF_CFG_STRING, OPT(listen), "0.0.0.0:7700", 0, 0, NULL,
	  "host:port of the binary protocol (docs/protocol-cachedir.md)" },
	{ "heartbeat_interval", KVF_CFG_DURATION, OPT(heartbeat_ms), "1s", 10, 60000, NULL,
	  "interval workers are told to send HEARTBEAT at" },
	{ "lease", KVF_CFG_DURATION, OPT(lease_ms), "5s", 20, 600000, NULL,
	  "a worker silent this long is dropped with all its blocks (>= 2 heartbeat intervals)" },
	{ "warmup", KVF_CFG_DURATION, OPT(warmup_ms), "5s", 0, 600000, NULL,
	  "after start, LOOKUP replies carry the WARMING flag and /ready is 503 while workers re-announce" },
	{ "max_frame", KVF_CFG_SIZE, OPT(max_frame_bytes), "4MiB", 65536, 268435456, NULL,
	  "largest protocol frame accepted, header included; larger: ERROR and close" },
	{ "max_keys_per_message", KVF_CFG_INT, OPT(max_keys), "65536", 1, 16777216, NULL,
	  "most keys in one STORED, REMOVED or LOOKUP" },
	{ "max_workers", KVF_CFG_INT, OPT(max_workers), "65536", 1, 67108864, NULL, "most registered workers" },
	{ "max_blocks", KVF_CFG_INT, OPT(max_blocks), "200000000", 1, 4e12, NULL,
	  "most distinct block keys; STORED beyond it is refused with ERROR FULL" },
	{ "max_clients", KVF_CFG_INT, OPT(max_clients), "10000", 1, 1000000, NULL, "most protocol connections" },
	{ "max_client_output", KVF_CFG_SIZE, OPT(max_output_bytes), "64MiB", 65536, 4294967296.0, NULL,
	  "a client with more unread replies than this is disconnected" },
	{ "watch_buffer", KVF_CFG_SIZE, OPT(watch_buffer_bytes), "16MiB", 65536, 4294967296.0, NULL,
	  "a WATCH subscriber this far behind loses events and gets a fresh snapshot" },
	{ "expected_blocks", KVF_CFG_INT, OPT(expected_blocks), "0", 0, 4e12, NULL,
	  "sizes the index table at start (0: grow as needed; doubling briefly needs 1.5x the table)" },
};
#undef OPT

static int cachedir_validate(const void *storage)
{
	return cd_server_opts_validate(&((const cd_daemon_cfg *)storage)->srv);
}

const kvf_cfg_section kvf_cachedir_section = {
	"cachedir", "The KV block directory (kvf-cachedir)", cachedir_keys, KVF_CFG_NKEYS(cachedir_keys),
	cachedir_validate, sizeof(cd_daemon_cfg),
};

int cd_server_opts_validate(const cd_server_opts *o)
{
	if (o->lease_ms < 2 * o->heartbeat_ms)
		return kvf_errf(KVF_E_CONFIG,
				"cachedir.lease (%" PRIu64 " ms) must be at least twice cachedir.heartbeat_interval "
				"(%" PRIu64 " ms)", o->lease_ms, o->heartbeat_ms);
	if ((uint64_t)o->max_keys * CD_KEY_BYTES + 1024 > o->max_frame_bytes)
		return kvf_errf(KVF_E_CONFIG,
				"cachedir.max_keys_per_message (%" PRId64 ") keys do not fit cachedir.max_frame "
				"(%" PRIu64 " bytes)", o->max_keys, o->max_frame_bytes);
	if (!o->listen || !o->listen[0])
		return kvf_errf(KVF_E_CONFIG, "cachedir.listen is empty");
	return 0;
}

void cd_server_opts_default(cd_server_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->listen = NULL;
	o->heartbeat_ms = 1000;
	o->lease_ms = 5000;
	o->warmup_ms = 5000;
	o->max_frame_bytes = 4u << 20;
	o->max_keys = 65536;
	o->max_workers = 65536;
	o->max_blocks = 200000000;
	o->max_clients = 10000;
	o->max_output_bytes = 64u << 20;
	o->watch_buffer_bytes = 16u << 20;
	o->expected_blocks = 0;
}

/* ---- lifecycle ---- */

int cd_server_new(kvf_loop *loop, const cd_server_opts *o, kvf_metrics *metrics, kvf_admin *admin,
		  cd_server **out)
{
	int rc = cd_server_opts_validate(o);
	if (rc)
		return rc;
	cd_server *s = kvf_calloc(1, sizeof(*s));
	if (!s)
		return kvf_errf(KVF_E_NOMEM, "cachedir server");
	s->loop = loop;
	s->o = *o;
	s->o.listen = NULL;
	s->lfd = -1;
	s->flush_task = kvf_calloc(1, sizeof(*s->flush_task));
	if (!s->flush_task) {
		kvf_free(s);
		return kvf_errf(KVF_E_NOMEM, "cachedir server");
	}
	s->flush_task->fn = flush_task_fn;
	s->flush_task->arg = s;
	kvf_wire_writer_init(&s->scratch, 0);
	if (getrandom(&s->epoch, sizeof(s->epoch), GRND_NONBLOCK) != sizeof(s->epoch))
		s->epoch = kvf_now_ns();
	s->start_ms = kvf_now_ms();
	rc = cd_index_new((uint64_t)o->expected_blocks, &s->ix);
	if (rc)
		goto err_free;
	if (metrics) {
		s->metrics = metrics;
		rc = setup_metrics(s);
		if (rc)
			goto err_index;
	}
	if (admin) {
		rc = kvf_admin_register(admin, server_cmds, sizeof(server_cmds) / sizeof(server_cmds[0]), s);
		if (rc)
			goto err_index;
		s->admin = admin;
	}
	rc = kvf_net_listen_tcp(o->listen, 1024, &s->lfd);
	if (rc)
		goto err_index;
	kvf_net_local_port(s->lfd, &s->port);
	rc = kvf_loop_add_fd(loop, s->lfd, KVF_EV_READ, accept_cb, s);
	if (rc)
		goto err_close;
	uint64_t period = s->o.heartbeat_ms / 2;
	if (period > 250)
		period = 250;
	if (period < 5)
		period = 5;
	rc = kvf_loop_timer_start(loop, &s->lease_timer, period, period, lease_check, s);
	if (!rc)
		rc = kvf_loop_timer_start(loop, &s->rate_timer, 1000, 1000, rate_tick, s);
	if (rc)
		goto err_del;
	KVF_INFO(MOD, "listening", "addr=%s port=%u heartbeat_ms=%" PRIu64 " lease_ms=%" PRIu64, o->listen,
		 s->port, s->o.heartbeat_ms, s->o.lease_ms);
	*out = s;
	return 0;

err_del:
	kvf_loop_timer_stop(loop, &s->lease_timer);
	kvf_loop_del_fd(loop, s->lfd);
err_close:
	close(s->lfd);
err_index:
	cd_index_destroy(s->ix);
err_free:
	kvf_wire_writer_free(&s->scratch);
	kvf_free(s->flush_task);
	kvf_free(s);
	return rc;
}

void cd_server_destroy(cd_server *s)
{
	if (!s)
		return;
	while (s->conns) {
		conn *c = s->conns;
		if (c->worker) { /* no "disconnected" broadcast on the way out */
			c->worker->conn = NULL;
			c->worker = NULL;
		}
		conn_free(c);
	}
	kvf_loop_timer_stop(s->loop, &s->lease_timer);
	kvf_loop_timer_stop(s->loop, &s->rate_timer);
	if (s->lfd >= 0) {
		kvf_loop_del_fd(s->loop, s->lfd);
		close(s->lfd);
	}
	if (s->flush_posted)
		s->flush_task->arg = NULL; /* queued: it frees itself when the loop runs it */
	else
		kvf_free(s->flush_task);
	cd_index_destroy(s->ix);
	kvf_wire_writer_free(&s->scratch);
	kvf_free(s->swept);
	kvf_free(s);
}

uint16_t cd_server_port(const cd_server *s)
{
	return s->port;
}

cd_index *cd_server_index(cd_server *s)
{
	return s->ix;
}

size_t cd_server_clients(const cd_server *s)
{
	return s->nconns;
}
