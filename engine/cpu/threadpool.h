/*
 * threadpool.h: the CPU backend's compute threads (engine-private).
 *
 * kvf_tpool_run(p, fn, ctx, n_chunks) calls fn(ctx, chunk, ith) once for
 * every chunk in [0, n_chunks), spread over the caller (ith 0) and the
 * worker threads (ith 1..n-1) by an atomic counter, and returns when all
 * chunks are done. Chunks go to whoever is running: a worker the kernel has
 * descheduled (cores shared with other processes) never holds up the step,
 * because a region is closed once its chunks are handed out and only the
 * workers that joined it are waited for. Waits spin briefly, then sleep on a
 * futex, so an idle engine costs no CPU.
 */
#ifndef KVF_ENGINE_THREADPOOL_H
#define KVF_ENGINE_THREADPOOL_H

typedef void (*kvf_task_fn)(void *ctx, int chunk, int ith);
typedef struct kvf_tpool kvf_tpool;

int kvf_tpool_create(int n_threads, kvf_tpool **out);
void kvf_tpool_destroy(kvf_tpool *p);
int kvf_tpool_size(const kvf_tpool *p);
void kvf_tpool_run(kvf_tpool *p, kvf_task_fn fn, void *ctx, int n_chunks);

#endif
