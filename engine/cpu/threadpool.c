/*
 * threadpool.c: fork-join compute threads for the CPU backend.
 *
 * A region is published by storing fn/ctx and bumping the 32-bit `gen` word
 * (release); workers see the new generation (acquire), run their share and
 * decrement `pending`; the caller runs share 0, then waits for pending == 0.
 * Both waits spin briefly (ops of one step follow each other within
 * microseconds) and then sleep on a futex, so threads never burn a core
 * another process needs: this machine's cores are shared, and a waiter that
 * spins while the thread it waits for is descheduled only delays it.
 */
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"
#include "engine/cpu/threadpool.h"

#define SPIN_ITERS 4000

struct kvf_tpool {
	int n;
	pthread_t *threads;
	struct worker_arg {
		struct kvf_tpool *p;
		int ith;
	} *args;
	kvf_task_fn fn;
	void *ctx;
	_Atomic uint32_t gen;
	_Atomic uint32_t pending;
	_Atomic uint32_t stop;
	_Atomic uint32_t sleepers;      /* workers in futex_wait on gen */
	_Atomic uint32_t caller_asleep; /* caller in futex_wait on pending */
};

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

static void futex_wait(_Atomic uint32_t *addr, uint32_t val)
{
	syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *addr, int n)
{
	syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

static void *worker(void *arg)
{
	struct worker_arg *wa = arg;
	struct kvf_tpool *p = wa->p;
	uint32_t seen = 0;
	for (;;) {
		uint32_t g;
		int spins = 0;
		while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen &&
		       !atomic_load_explicit(&p->stop, memory_order_relaxed)) {
			if (++spins < SPIN_ITERS) {
				cpu_relax();
				continue;
			}
			atomic_fetch_add(&p->sleepers, 1);
			/* re-check after announcing ourselves: no lost wake-up */
			if (atomic_load(&p->gen) == seen && !atomic_load(&p->stop))
				futex_wait(&p->gen, seen);
			atomic_fetch_sub(&p->sleepers, 1);
		}
		if (atomic_load(&p->stop))
			break;
		seen = g;
		p->fn(p->ctx, wa->ith, p->n);
		if (atomic_fetch_sub(&p->pending, 1) == 1 &&
		    atomic_load(&p->caller_asleep))
			futex_wake(&p->pending, 1);
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
	atomic_store(&p->stop, 1);
	atomic_fetch_add(&p->gen, 1);
	futex_wake(&p->gen, INT_MAX);
	for (int i = 1; i < p->n; i++)
		pthread_join(p->threads[i], NULL);
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
	atomic_store_explicit(&p->pending, (uint32_t)(p->n - 1), memory_order_relaxed);
	atomic_fetch_add(&p->gen, 1); /* seq_cst: ordered before the sleepers load */
	if (atomic_load(&p->sleepers))
		futex_wake(&p->gen, INT_MAX);
	fn(ctx, 0, p->n);
	int spins = 0;
	uint32_t left;
	while ((left = atomic_load_explicit(&p->pending, memory_order_acquire)) > 0) {
		if (++spins < SPIN_ITERS) {
			cpu_relax();
			continue;
		}
		atomic_store(&p->caller_asleep, 1);
		if ((left = atomic_load(&p->pending)) > 0)
			futex_wait(&p->pending, left);
		atomic_store(&p->caller_asleep, 0);
	}
}
