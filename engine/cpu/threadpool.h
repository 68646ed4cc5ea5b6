/*
 * threadpool.h: the CPU backend's compute threads (engine-private).
 *
 * kvf_tpool_run(p, fn, ctx) calls fn(ctx, i, n) once on each of the n
 * threads (the caller is thread 0) and returns when all are done: a
 * fork-join region per op, like ggml's graph compute threads. Workers spin
 * briefly between regions (ops follow each other within microseconds during
 * a step) and then sleep on a condition variable, so an idle engine costs no
 * CPU on a machine it shares.
 */
#ifndef KVF_ENGINE_THREADPOOL_H
#define KVF_ENGINE_THREADPOOL_H

typedef void (*kvf_task_fn)(void *ctx, int ith, int nth);
typedef struct kvf_tpool kvf_tpool;

int kvf_tpool_create(int n_threads, kvf_tpool **out);
void kvf_tpool_destroy(kvf_tpool *p);
int kvf_tpool_size(const kvf_tpool *p);
void kvf_tpool_run(kvf_tpool *p, kvf_task_fn fn, void *ctx);

#endif
