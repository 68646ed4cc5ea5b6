/*
 * engine_thread.c: the engine's own thread and loop (see engine_thread.h).
 *
 * While requests are queued or running it alternates: drain posted tasks
 * without blocking, run one scheduler step, post the step's events. When the
 * engine is idle it blocks in its loop until a task arrives. Block cache
 * events raised inside engine calls are collected into the current batch so
 * the daemon loop sees them in the same order as the tokens.
 */
#include "worker/engine_thread.h"

#include <pthread.h>
#include <string.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"
#include "common/kvf_log.h"

struct ew {
	kvf_engine *engine;
	kvf_engine_info info;
	void *pool;
	size_t pool_len;
	kvf_loop *loop;       /* the engine thread's */
	kvf_loop *main_loop;  /* the daemon's */
	ew_batch_fn fn;
	void *ud;
	pthread_t thread;
	atomic_int stop;
	int joined;           /* the thread is gone: calls run inline */
	kvf_task wake;        /* posted to wake the thread for stopping */
	ew_load load;
	ew_batch *cur;        /* batch being filled (engine thread) */
	size_t cap_events, cap_blocks;
};

static ew_batch *batch_get(ew *w)
{
	if (!w->cur) {
		w->cur = kvf_calloc(1, sizeof(*w->cur));
		w->cap_events = w->cap_blocks = 0;
		if (w->cur) {
			w->cur->fn = w->fn;
			w->cur->ud = w->ud;
		}
	}
	return w->cur;
}

static void push_event(ew *w, const ew_event *e)
{
	ew_batch *b = batch_get(w);
	if (!b || kvf_grow((void **)&b->events, &w->cap_events, (size_t)b->n_events + 1, sizeof(*b->events))) {
		KVF_LOG_RL(KVF_LOG_ERROR, 5, 10000, "worker", "out of memory: engine event lost", "%s", "");
		return;
	}
	b->events[b->n_events++] = *e;
}

static void on_block(ew *w, kvf_blockkey key, int stored)
{
	ew_batch *b = batch_get(w);
	if (!b || kvf_grow((void **)&b->blocks, &w->cap_blocks, (size_t)b->n_blocks + 1, sizeof(*b->blocks)))
		return;
	b->blocks[b->n_blocks++] = (ew_block_event){ key, stored };
}

static void on_stored(void *user, kvf_blockkey key, int32_t block)
{
	on_block(user, key, 1);
}

static void on_removed(void *user, kvf_blockkey key, int32_t block)
{
	on_block(user, key, 0);
}

/* Daemon loop: deliver and free a batch. */
static void deliver(kvf_loop *loop, kvf_task *t)
{
	ew_batch *b = (ew_batch *)t;
	b->fn(b->ud, b);
	kvf_free(b->events);
	kvf_free(b->blocks);
	kvf_free(b);
}

static void flush_batch(ew *w)
{
	ew_batch *b = w->cur;
	if (!b)
		return;
	w->cur = NULL;
	if (b->n_events == 0 && b->n_blocks == 0) {
		kvf_free(b->events);
		kvf_free(b->blocks);
		kvf_free(b);
		return;
	}
	b->task.fn = deliver;
	kvf_loop_post(w->main_loop, &b->task);
}

static void publish_load(ew *w)
{
	int waiting, running;
	kvf_kv_stats kv;
	kvf_engine_load(w->engine, &waiting, &running);
	kvf_engine_kv_stats(w->engine, &kv);
	atomic_store(&w->load.waiting, waiting);
	atomic_store(&w->load.running, running);
	atomic_store(&w->load.kv_total, kv.total);
	atomic_store(&w->load.kv_used, kv.used);
	atomic_store(&w->load.kv_cached, kv.cached);
	atomic_store(&w->load.prefix_hits, kv.hits);
	atomic_store(&w->load.prefix_misses, kv.misses);
}

/* ---- tasks run on the engine thread ---- */

static ew *owner_of(kvf_task *t)
{
	return t->arg;
}

static void do_submit(kvf_loop *loop, kvf_task *t)
{
	ew_req *r = (ew_req *)((char *)t - offsetof(ew_req, submit));
	ew *w = owner_of(t);
	/* Every request holds its KV past the end so its accounting can be
	 * read with the finish event; step() releases it unless keep_kv. */
	r->params.hold_kv = 1;
	int rc = kvf_engine_submit(w->engine, &r->params, &r->engine_id);
	if (rc) {
		ew_event e = { .kind = EW_TOKEN, .user = r->params.user };
		e.ev.user = r->params.user;
		e.ev.token = KVF_TOKEN_NONE;
		e.ev.finish = KVF_FINISH_ERROR;
		e.ev.error = rc;
		e.ev.stop_index = -1;
		push_event(w, &e);
		return;
	}
	r->submitted = 1;
}

static void do_cancel(kvf_loop *loop, kvf_task *t)
{
	ew_req *r = (ew_req *)((char *)t - offsetof(ew_req, cancel));
	ew *w = owner_of(t);
	if (r->submitted && kvf_engine_cancel(w->engine, r->engine_id) == KVF_E_NOTFOUND && r->keep_kv)
		kvf_engine_release(w->engine, r->engine_id); /* it had finished and held its KV */
	ew_event e = { .kind = EW_CANCEL_ACK, .user = r->params.user };
	push_event(w, &e);
}

static void do_call(kvf_loop *loop, kvf_task *t)
{
	ew_call *c = (ew_call *)t;
	c->fn(c->owner->engine, c->arg);
	kvf_loop_post(c->owner->main_loop, &c->back);
}

static void call_back(kvf_loop *loop, kvf_task *t)
{
	ew_call *c = (ew_call *)((char *)t - offsetof(ew_call, back));
	if (c->done)
		c->done(c->arg);
}

/* ---- the thread ---- */

/* One engine step; returns how many events it produced. */
static int step(ew *w)
{
	const kvf_event *evs;
	int n = 0;
	int rc = kvf_engine_step(w->engine, &evs, &n);
	if (rc) {
		KVF_LOG_RL(KVF_LOG_ERROR, 5, 10000, "worker", "engine step failed", "error=\"%s\"", kvf_errmsg());
		return 0;
	}
	for (int i = 0; i < n; i++) {
		ew_event e = { .kind = EW_TOKEN, .user = evs[i].user, .ev = evs[i] };
		kvf_engine_request_info(w->engine, evs[i].req, &e.info);
		push_event(w, &e);
		if (evs[i].finish == KVF_FINISH_NONE)
			continue;
		if (e.info.n_preemptions)
			atomic_fetch_add(&w->load.preemptions, (uint64_t)e.info.n_preemptions);
		ew_req *r = evs[i].user;
		if (!r->keep_kv)
			kvf_engine_release(w->engine, evs[i].req);
	}
	return n;
}

static void *thread_main(void *arg)
{
	ew *w = arg;
	int stalled = 0;
	while (!atomic_load(&w->stop)) {
		int waiting, running;
		kvf_engine_load(w->engine, &waiting, &running);
		/* Block when there is nothing to compute; when requests wait but
		 * the last step could not run any (the pool is held by leases),
		 * wait a little for tasks that free blocks instead of spinning. */
		kvf_loop_run_once(w->loop, !(waiting + running) ? -1 : stalled ? 5 : 0);
		kvf_engine_load(w->engine, &waiting, &running);
		stalled = 0;
		if (waiting + running) {
			int produced = step(w);
			/* A step that produced nothing, with nothing running after
			 * it while some wait: nothing could be admitted. (A step
			 * whose requests all finished produced their last tokens;
			 * the next step admits the waiting ones at once.) */
			kvf_engine_load(w->engine, &waiting, &running);
			stalled = produced == 0 && running == 0 && waiting > 0;
		}
		publish_load(w);
		flush_batch(w);
	}
	return NULL;
}

static void wake_stop(kvf_loop *loop, kvf_task *t)
{
	(void)loop;
	(void)t;
}

int ew_start(const kvf_engine_options *opts, kvf_loop *main_loop, ew_batch_fn fn, void *ud, ew **out)
{
	ew *w = kvf_calloc(1, sizeof(*w));
	if (!w)
		return kvf_errf(KVF_E_NOMEM, "worker: out of memory");
	kvf_engine_options o = *opts;
	o.on_block_stored = on_stored;
	o.on_block_removed = on_removed;
	o.block_event_user = w;
	int rc = kvf_engine_create(&o, &w->engine);
	if (rc)
		goto err_free;
	kvf_engine_info_get(w->engine, &w->info);
	kvf_engine_kv_pool(w->engine, &w->pool, &w->pool_len);
	if ((rc = kvf_loop_new(&w->loop)))
		goto err_engine;
	w->main_loop = main_loop;
	w->fn = fn;
	w->ud = ud;
	publish_load(w);
	if (pthread_create(&w->thread, NULL, thread_main, w) != 0) {
		rc = kvf_errf(KVF_E_INTERNAL, "worker: cannot start the engine thread");
		goto err_loop;
	}
	*out = w;
	return 0;

err_loop:
	kvf_loop_destroy(w->loop);
err_engine:
	kvf_engine_destroy(w->engine);
err_free:
	kvf_free(w);
	return rc;
}

void ew_join(ew *w)
{
	if (!w || w->joined)
		return;
	atomic_store(&w->stop, 1);
	w->wake.fn = wake_stop;
	kvf_loop_post(w->loop, &w->wake);
	pthread_join(w->thread, NULL);
	w->joined = 1;
	/* Tasks still queued run here (they may add events or post call
	 * backs), and what they produced goes to the daemon loop. */
	kvf_loop_run_once(w->loop, 0);
	flush_batch(w);
}

void ew_free(ew *w)
{
	if (!w)
		return;
	ew_join(w);
	kvf_loop_destroy(w->loop);
	if (w->cur) {
		kvf_free(w->cur->events);
		kvf_free(w->cur->blocks);
		kvf_free(w->cur);
	}
	kvf_engine_destroy(w->engine);
	kvf_free(w);
}

const kvf_engine_info *ew_info(const ew *w)
{
	return &w->info;
}

void ew_kv_pool(const ew *w, void **base, size_t *len)
{
	*base = w->pool;
	*len = w->pool_len;
}

const ew_load *ew_loadfig(const ew *w)
{
	return &w->load;
}

void ew_submit(ew *w, ew_req *r)
{
	if (w->joined)
		return; /* shutting down: the daemon side frees r itself */
	r->submit.fn = do_submit;
	r->submit.arg = w;
	kvf_loop_post(w->loop, &r->submit);
}

void ew_cancel(ew *w, ew_req *r)
{
	if (w->joined)
		return;
	r->cancel.fn = do_cancel;
	r->cancel.arg = w;
	kvf_loop_post(w->loop, &r->cancel);
}

void ew_run(ew *w, ew_call *c)
{
	c->owner = w;
	if (w->joined) { /* no thread any more: run it here */
		c->fn(w->engine, c->arg);
		if (c->done)
			c->done(c->arg);
		return;
	}
	c->task.fn = do_call;
	c->back.fn = call_back;
	kvf_loop_post(w->loop, &c->task);
}
