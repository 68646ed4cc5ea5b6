/*
 * threadpool.c: fork-join compute threads for the CPU backend.
 *
 * A region is published by bumping `gen` (release) after storing fn/ctx;
 * workers observe the new generation (acquire), run their share and
 * decrement `pending`; the caller runs share 0 and waits for pending == 0.
 * Waits spin for a bounded time, then yield (caller) or sleep on the
 * condition variable (workers), since this machine's cores are shared.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"
#include "engine/cpu/threadpool.h"

#define SPIN_ITERS 20000

struct kvf_tpool {
	int n;
	pthread_t *threads;
	struct worker_arg {
		struct kvf_tpool *p;
		int ith;
	} *args;
	kvf_task_fn fn;
	void *ctx;
	_Atomic uint64_t gen;
	_Atomic int pending;
	_Atomic int stop;
	pthread_mutex_t mu;
	pthread_cond_t cv;
};

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

static void *worker(void *arg)
{
	struct worker_arg *wa = arg;
	struct kvf_tpool *p = wa->p;
	uint64_t seen = 0;
	for (;;) {
		uint64_t g;
		int spins = 0;
		while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen &&
		       !atomic_load_explicit(&p->stop, memory_order_acquire) && spins < SPIN_ITERS) {
			cpu_relax();
			spins++;
		}
		if (g == seen && !atomic_load(&p->stop)) {
			pthread_mutex_lock(&p->mu);
			while ((g = atomic_load(&p->gen)) == seen && !atomic_load(&p->stop))
				pthread_cond_wait(&p->cv, &p->mu);
			pthread_mutex_unlock(&p->mu);
		}
		if (atomic_load(&p->stop))
			break;
		seen = g;
		p->fn(p->ctx, wa->ith, p->n);
		atomic_fetch_sub_explicit(&p->pending, 1, memory_order_acq_rel);
	}
	return NULL;
}

int kvf_tpool_create(int n_threads, kvf_tpool **out)
{
	if (n_threads < 1)
		n_threads = 1;
	struct kvf_tpool *p = kvf_calloc(1, sizeof *p);
	if (!p)
		return KVF_E_NOMEM;
	p->n = n_threads;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	p->threads = kvf_calloc((size_t)n_threads, sizeof *p->threads);
	p->args = kvf_calloc((size_t)n_threads, sizeof *p->args);
	if (!p->threads || !p->args) {
		kvf_free(p->threads);
		kvf_free(p->args);
		kvf_free(p);
		return KVF_E_NOMEM;
	}
	for (int i = 1; i < n_threads; i++) {
		p->args[i].p = p;
		p->args[i].ith = i;
		if (pthread_create(&p->threads[i], NULL, worker, &p->args[i])) {
			p->n = i; /* destroy joins the ones started */
			kvf_tpool_destroy(p);
			return kvf_errf(KVF_E_NOMEM, "cpu backend: cannot start thread %d", i);
		}
	}
	*out = p;
	return 0;
}

void kvf_tpool_destroy(kvf_tpool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	atomic_store(&p->stop, 1);
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	for (int i = 1; i < p->n; i++)
		pthread_join(p->threads[i], NULL);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->cv);
	kvf_free(p->threads);
	kvf_free(p->args);
	kvf_free(p);
}

int kvf_tpool_size(const kvf_tpool *p)
{
	return p->n;
}

void kvf_tpool_run(kvf_tpool *p, kvf_task_fn fn, void *ctx)
{
	if (p->n == 1) {
		fn(ctx, 0, 1);
		return;
	}
	p->fn = fn;
	p->ctx = ctx;
	atomic_store_explicit(&p->pending, p->n - 1, memory_order_relaxed);
	pthread_mutex_lock(&p->mu);
	atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	fn(ctx, 0, p->n);
	int spins = 0;
	while (atomic_load_explicit(&p->pending, memory_order_acquire) > 0) {
		if (++spins < SPIN_ITERS)
			cpu_relax();
		else
			sched_yield();
	}
}
