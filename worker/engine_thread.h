/*
 * engine_thread.h (private to worker/): the thread that owns the engine.
 *
 * The daemon's loop thread hands it requests and cancellations through tasks
 * embedded in the caller's request object (no allocation per call); it runs
 * scheduler steps while there is work and posts each step's events, in one
 * batch, back to the daemon's loop. Requests are matched by the `user`
 * pointer given at submission.
 *
 * A request object is the caller's until it receives the request's terminal
 * event: a finish (stop, length, error) or, after a cancel, the cancel
 * acknowledgement. Events for one request arrive in order.
 */
#ifndef KVF_WORKER_ENGINE_THREAD_H
#define KVF_WORKER_ENGINE_THREAD_H

#include <stdatomic.h>
#include <stdint.h>

#include "common/kvf_loop.h"
#include "engine/kvf_engine.h"

typedef struct ew ew;

/* One event delivered to the daemon loop. */
typedef enum ew_kind {
	EW_TOKEN,       /* a generated token (finish NONE) or the end (finish set) */
	EW_CANCEL_ACK,  /* the engine dropped the request after a cancel */
} ew_kind;

typedef struct ew_event {
	ew_kind kind;
	void *user;
	kvf_event ev;            /* copy of the engine's event */
	kvf_request_info info;   /* accounting at the time of the event */
} ew_event;

/* A cache change for the cluster directory. */
typedef struct ew_block_event {
	kvf_blockkey key;
	int stored; /* 1 stored, 0 removed */
} ew_block_event;

typedef struct ew_batch ew_batch;

/* Called on the daemon loop for each batch; the batch is freed after. */
typedef void (*ew_batch_fn)(void *ud, const ew_batch *b);

struct ew_batch {
	kvf_task task; /* private */
	ew_batch_fn fn;  /* private: where it goes, so delivery needs no ew */
	void *ud;        /* private */
	int n_events;
	int n_blocks;
	ew_event *events;
	ew_block_event *blocks;
};


/* A request handed to the engine thread: the FIRST member of the caller's
 * object, and params.user must point at it. */
typedef struct ew_req {
	kvf_task submit;        /* private */
	kvf_task cancel;        /* private */
	kvf_request_params params; /* filled by the caller; must stay valid until
				      the terminal event */
	int keep_kv;            /* hold the KV after finishing (prefill leases) */
	uint64_t engine_id;     /* engine thread only */
	int submitted;          /* engine thread only */
} ew_req;

/* Load figures the engine thread publishes after every step. */
typedef struct ew_load {
	atomic_int waiting, running;
	atomic_int kv_total, kv_used, kv_cached;
	_Atomic uint64_t prefix_hits, prefix_misses, preemptions;
} ew_load;

/* Creates the engine (on the calling thread, so load errors surface at
 * start-up) and starts its thread. Batches go to main_loop / fn(ud, ...). */
int ew_start(const kvf_engine_options *opts, kvf_loop *main_loop, ew_batch_fn fn, void *ud, ew **out);

/*
 * Shutdown, in two steps. ew_join stops the thread, runs the tasks still
 * queued for it and posts their results to the daemon loop; from then on
 * ew_submit and ew_cancel do nothing and ew_run runs fn and done at once on
 * the caller's thread. Drain the daemon loop after it (deliveries and call
 * backs still name live objects), then ew_free frees the engine. NULL ok.
 */
void ew_join(ew *w);
void ew_free(ew *w);

/* Engine facts fixed at creation (safe from any thread). */
const kvf_engine_info *ew_info(const ew *w);
/* The KV pool (one allocation; it never moves). */
void ew_kv_pool(const ew *w, void **base, size_t *len);
const ew_load *ew_loadfig(const ew *w);

/* Daemon loop: hand over a request (params filled, user set) / cancel it. */
void ew_submit(ew *w, ew_req *r);
void ew_cancel(ew *w, ew_req *r);

/* Runs fn(engine, arg) on the engine thread, then done(arg) on the daemon
 * loop. For KV operations of the P/D protocol. The task is caller-owned. */
typedef struct ew_call {
	kvf_task task;   /* private */
	kvf_task back;   /* private */
	ew *owner;       /* private */
	void (*fn)(kvf_engine *e, void *arg);
	void (*done)(void *arg);
	void *arg;
} ew_call;
void ew_run(ew *w, ew_call *c);

#endif
