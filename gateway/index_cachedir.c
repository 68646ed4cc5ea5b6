/*
 * index_cachedir.c: the cluster's KV directory (cachedir/kvf_cachedir.h) as
 * the gateway's index and worker source.
 *
 *   - lookup: one LOOKUP of the whole key chain (one round trip); the
 *     directory answers, per worker, the longest prefix it holds in gpu, in
 *     gpu or host, in any tier; worker ids map to the gateway's worker slots;
 *   - workers: a WATCH of worker events keeps the worker table (id, HTTP
 *     endpoint, model, role, state, load from heartbeats) current; a snapshot
 *     (first connect, failover, resync) replaces every directory worker, and
 *     those missing from it are removed when it ends.
 * The client reconnects and fails over between replicas by itself. While no
 * replica is connected, lookups are answered at once by a local index
 * (index_local.c: where this gateway sent each chain), which is kept up to
 * date all along, so routing degrades to the estimate instead of to load
 * only, and never waits for a timeout.
 */
#include <stdio.h>
#include <string.h>

#include "cachedir/kvf_cachedir.h"
#include "common/kvf_alloc.h"
#include "common/kvf_err.h"
#include "common/kvf_log.h"
#include "gateway/gw_core.h"

struct pending {
	struct pending *next;
	uint64_t req;
	gw_lookup_cb cb;
	void *ud;
	struct cd_state *st;
};

struct cd_state {
	kvf_gateway *gw;
	kvf_cachedir *c;
	struct pending *pending;
	gw_holder *tmp;
	size_t tmp_cap;
	unsigned char *stale; /* per worker slot during a snapshot */
	size_t stale_n;
	int in_snapshot;
	gw_index local;
	uint64_t lookups, lookup_errors, snapshots, worker_events, local_answers;
};

int gw_cachedir_supported(void)
{
	return 1;
}

static void pending_del(struct cd_state *st, struct pending *p)
{
	for (struct pending **pp = &st->pending; *pp; pp = &(*pp)->next)
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	kvf_free(p);
}

static void lookup_cb(void *ud, int status, const kvf_cachedir_lookup_result *r)
{
	struct pending *p = ud;
	struct cd_state *st = p->st;
	gw_workers *ws = &st->gw->workers;
	gw_lookup_cb cb = p->cb;
	void *cud = p->ud;
	pending_del(st, p);
	if (status == KVF_E_NOTFOUND) { /* no worker registered the model */
		cb(cud, 0, NULL, 0);
		return;
	}
	if (status) {
		st->lookup_errors++;
		cb(cud, status, NULL, 0);
		return;
	}
	size_t n = 0;
	if (r->nholders && kvf_grow((void **)&st->tmp, &st->tmp_cap, r->nholders, sizeof(*st->tmp))) {
		cb(cud, KVF_E_NOMEM, NULL, 0);
		return;
	}
	for (size_t i = 0; i < r->nholders; i++) {
		int w = gw_workers_find(ws, r->holders[i].worker_id);
		if (w < 0)
			continue; /* not (yet) in the worker table */
		st->tmp[n++] = (gw_holder){ w, r->holders[i].prefix_gpu, r->holders[i].prefix_host, r->holders[i].prefix_any };
	}
	cb(cud, 0, st->tmp, n);
}

static int cd_lookup(void *ix, const char *model, const kvf_blockkey *keys, size_t n, gw_lookup_cb cb, void *ud,
		     uint64_t *req)
{
	struct cd_state *st = ix;
	st->lookups++;
	kvf_cachedir_stats cs;
	kvf_cachedir_get_stats(st->c, &cs);
	if (!cs.servers_up) {
		st->local_answers++;
		return st->local.ops->lookup(st->local.ix, model, keys, n, cb, ud, req);
	}
	struct pending *p = kvf_calloc(1, sizeof(*p));
	if (!p)
		return KVF_E_NOMEM;
	p->cb = cb;
	p->ud = ud;
	p->st = st;
	p->next = st->pending;
	st->pending = p;
	int rc = kvf_cachedir_lookup(st->c, model, keys, n, lookup_cb, p, &p->req);
	if (rc) {
		pending_del(st, p);
		return rc;
	}
	*req = p->req;
	return 0;
}

static void cd_cancel(void *ix, uint64_t req)
{
	struct cd_state *st = ix;
	if (!req)
		return;
	for (struct pending *p = st->pending; p; p = p->next)
		if (p->req == req) {
			kvf_cachedir_cancel(st->c, req);
			pending_del(st, p);
			return;
		}
}

static void cd_routed(void *ix, int widx, const kvf_blockkey *keys, size_t n)
{
	struct cd_state *st = ix;
	st->local.ops->routed(st->local.ix, widx, keys, n);
}

static void cd_forget(void *ix, int widx)
{
	struct cd_state *st = ix;
	st->local.ops->forget(st->local.ix, widx);
}
static void cd_destroy(void *ix) {}

static void cd_info(void *ix, kvf_buf *out)
{
	struct cd_state *st = ix;
	kvf_cachedir_stats cs;
	kvf_cachedir_get_stats(st->c, &cs);
	kvf_buf_printf(out, "index: cachedir\ncachedir_replicas_up: %zu\ncachedir_lookups: %llu\ncachedir_lookup_errors: %llu\n"
			    "cachedir_timeouts: %llu\ncachedir_failovers: %llu\ncachedir_snapshots: %llu\n"
			    "lookups_answered_locally: %llu\n",
		       cs.servers_up, (unsigned long long)st->lookups, (unsigned long long)st->lookup_errors,
		       (unsigned long long)cs.timeouts, (unsigned long long)cs.failovers, (unsigned long long)st->snapshots,
		       (unsigned long long)st->local_answers);
}

static const gw_index_ops cd_ops = { "cachedir", cd_lookup, cd_cancel, cd_routed, cd_forget, cd_destroy, cd_info };

static void watch_cb(void *ud, const kvf_cachedir_watch_event *ev)
{
	struct cd_state *st = ud;
	gw_workers *ws = &st->gw->workers;
	uint64_t now = kvf_loop_now_ms(st->gw->loop);
	switch (ev->kind) {
	case KVF_CACHEDIR_EV_SNAPSHOT_BEGIN:
		st->snapshots++;
		st->in_snapshot = 1;
		kvf_free(st->stale);
		st->stale_n = ws->n;
		st->stale = kvf_calloc(ws->n ? ws->n : 1, 1);
		for (size_t i = 0; st->stale && i < ws->n; i++)
			st->stale[i] = ws->w[i].used && ws->w[i].source == GW_SRC_DIRECTORY;
		break;
	case KVF_CACHEDIR_EV_SNAPSHOT_END:
		st->in_snapshot = 0;
		for (size_t i = 0; st->stale && i < st->stale_n && i < ws->n; i++)
			if (st->stale[i]) {
				KVF_INFO("gateway", "worker left (not in the directory's snapshot)", "worker=%s", ws->w[i].id);
				gw_workers_remove(ws, (int)i);
			}
		kvf_free(st->stale);
		st->stale = NULL;
		st->stale_n = 0;
		break;
	case KVF_CACHEDIR_EV_WORKER: {
		const kvf_cachedir_worker *w = ev->worker;
		st->worker_events++;
		if (!w->http_endpoint || !w->http_endpoint[0])
			break; /* nothing to send requests to */
		int state = w->load.draining ? GW_W_DRAINING : w->state;
		int idx = gw_workers_find(ws, w->worker_id);
		int fresh = idx < 0;
		idx = gw_workers_upsert(ws, w->worker_id, w->http_endpoint, w->model, w->role, state, GW_SRC_DIRECTORY, now);
		if (idx < 0)
			break;
		gw_workers_set_load(ws, idx, w->load.waiting, w->load.running, w->load.kv_used_blocks, w->load.kv_total_blocks);
		if (st->stale && (size_t)idx < st->stale_n)
			st->stale[idx] = 0;
		if (fresh)
			KVF_INFO("gateway", "worker joined", "worker=%s http=%s model=%s role=%d", w->worker_id, w->http_endpoint,
				 w->model, w->role);
		break;
	}
	case KVF_CACHEDIR_EV_WORKER_GONE: {
		int idx = gw_workers_find(ws, ev->worker_id);
		if (idx >= 0 && ws->w[idx].source == GW_SRC_DIRECTORY) {
			KVF_INFO("gateway", "worker left", "worker=%s reason=%d", ev->worker_id, ev->gone_reason);
			gw_workers_remove(ws, idx);
			st->local.ops->forget(st->local.ix, idx);
		}
		break;
	}
	default:
		break;
	}
}

static void on_status(void *ud, const kvf_cachedir_status *s)
{
	if (s->type == KVF_CACHEDIR_UP)
		KVF_INFO("gateway", "cachedir connected", "replica=%s", s->addr);
	else if (s->type == KVF_CACHEDIR_DOWN)
		KVF_LOG_RL(KVF_LOG_WARN, 3, 10000, "gateway", "cachedir connection lost", "replica=%s error=\"%s\"", s->addr,
			   s->msg ? s->msg : "");
}

int gw_cachedir_start(kvf_gateway *gw)
{
	struct cd_state *st = kvf_calloc(1, sizeof(*st));
	if (!st)
		return KVF_E_NOMEM;
	st->gw = gw;
	int rc = gw_index_local_new((size_t)gw->cfg->local_index_blocks, &st->local);
	if (rc) {
		kvf_free(st);
		return rc;
	}
	kvf_cachedir_opts o;
	kvf_cachedir_opts_init(&o);
	o.servers = (const char *const *)gw->cluster->cachedir.v;
	o.nservers = gw->cluster->cachedir.n;
	o.request_timeout_ms = (uint32_t)gw->cfg->lookup_timeout_ms;
	o.spread = 1;
	o.on_status = on_status;
	o.ud = st;
	rc = kvf_cachedir_new(gw->loop, &o, &st->c);
	if (rc) {
		st->local.ops->destroy(st->local.ix);
		kvf_free(st);
		return kvf_errf(rc, "cachedir client: %s", kvf_errmsg());
	}
	rc = kvf_cachedir_watch(st->c, KVF_CACHEDIR_WATCH_WORKERS, "", watch_cb, st);
	if (rc) {
		kvf_cachedir_destroy(st->c);
		st->local.ops->destroy(st->local.ix);
		kvf_free(st);
		return kvf_errf(rc, "cachedir watch: %s", kvf_errmsg());
	}
	gw->cachedir = st;
	gw->index.ops = &cd_ops;
	gw->index.ix = st;
	return 0;
}

void gw_cachedir_stop(kvf_gateway *gw)
{
	struct cd_state *st = gw->cachedir;
	if (!st)
		return;
	kvf_cachedir_destroy(st->c); /* pending lookups run their callbacks with CANCELED */
	while (st->pending)
		pending_del(st, st->pending);
	st->local.ops->destroy(st->local.ix);
	kvf_free(st->tmp);
	kvf_free(st->stale);
	kvf_free(st);
	gw->cachedir = NULL;
}

void gw_cachedir_info(kvf_gateway *gw, kvf_buf *out)
{
	cd_info(gw->cachedir, out);
}
