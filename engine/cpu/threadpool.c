/*
 * threadpool.c: fork-join compute threads with dynamic chunks.
 *
 * A region is one 64-bit state word: generation (high 32 bits), a closed
 * bit, and the number of workers that joined it. run() stores fn/ctx,
 * publishes a new generation (workers sleeping on the `wake` futex are
 * woken), and takes chunks itself from the shared counter. A worker joins by
 * CAS (only while the region is open and of the generation it was woken
 * for), takes chunks, and leaves. When the chunks are all handed out the
 * caller closes the region and waits for the joined workers only. A worker
 * that wakes late finds the region closed and goes back to sleep; it never
 * sees a stale fn/ctx, because the caller cannot start the next region
 * while anyone is joined.
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
#define ST_CLOSED (1ull << 31)
#define ST_ACTIVE 0x7fffffffull

struct kvf_tpool {
	int n;
	pthread_t *threads;
	struct worker_arg {
		struct kvf_tpool *p;
		int ith;
	} *args;
	kvf_task_fn fn;
	void *ctx;
	int n_chunks;
	_Atomic int next_chunk;
	_Atomic uint64_t st;         /* gen << 32 | closed | active */
	_Atomic uint32_t wake;       /* futex: the generation to join */
	_Atomic uint32_t done;       /* futex: bumped by the last worker out */
	_Atomic uint32_t stop;
	_Atomic uint32_t sleepers;   /* workers asleep on wake */
	_Atomic uint32_t caller_asleep;
	uint32_t gen;
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

static void take_chunks(struct kvf_tpool *p, int ith)
{
	int c;
	while ((c = atomic_fetch_add(&p->next_chunk, 1)) < p->n_chunks)
		p->fn(p->ctx, c, ith);
}

static void *worker(void *arg)
{
	struct worker_arg *wa = arg;
	struct kvf_tpool *p = wa->p;
	uint32_t seen = 0;
	for (;;) {
		uint32_t w;
		int spins = 0;
		while ((w = atomic_load(&p->wake)) == seen && !atomic_load(&p->stop)) {
			if (++spins < SPIN_ITERS) {
				cpu_relax();
				continue;
			}
			atomic_fetch_add(&p->sleepers, 1);
			/* re-check after announcing ourselves: no lost wake-up */
			if (atomic_load(&p->wake) == seen && !atomic_load(&p->stop))
				futex_wait(&p->wake, seen);
			atomic_fetch_sub(&p->sleepers, 1);
		}
		if (atomic_load(&p->stop))
			break;
		seen = w;
		uint64_t s = atomic_load(&p->st);
		bool joined = false;
		while ((uint32_t)(s >> 32) == w && !(s & ST_CLOSED))
			if (atomic_compare_exchange_weak(&p->st, &s, s + 1)) {
				joined = true;
				break;
			}
		if (!joined)
			continue; /* that region is over */
		take_chunks(p, wa->ith);
		s = atomic_fetch_sub(&p->st, 1) - 1;
		if ((s & ST_CLOSED) && (s & ST_ACTIVE) == 0) {
			atomic_fetch_add(&p->done, 1);
			if (atomic_load(&p->caller_asleep))
				futex_wake(&p->done, 1);
		}
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
	atomic_fetch_add(&p->wake, 1);
	futex_wake(&p->wake, INT_MAX);
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

void kvf_tpool_run(kvf_tpool *p, kvf_task_fn fn, void *ctx, int n_chunks)
{
	if (p->n == 1 || n_chunks <= 1) {
		for (int c = 0; c < n_chunks; c++)
			fn(ctx, c, 0);
		return;
	}
	p->fn = fn;
	p->ctx = ctx;
	p->n_chunks = n_chunks;
	atomic_store(&p->next_chunk, 0);
	uint32_t g = ++p->gen;
	atomic_store(&p->st, (uint64_t)g << 32);
	atomic_store(&p->wake, g);
	if (atomic_load(&p->sleepers))
		futex_wake(&p->wake, INT_MAX);
	take_chunks(p, 0);
	/* every chunk is handed out: close, then wait for who joined */
	uint64_t s = atomic_fetch_or(&p->st, ST_CLOSED) | ST_CLOSED;
	int spins = 0;
	while ((s & ST_ACTIVE) != 0) {
		if (++spins < SPIN_ITERS) {
			cpu_relax();
		} else {
			uint32_t d = atomic_load(&p->done);
			atomic_store(&p->caller_asleep, 1);
			if (atomic_load(&p->st) & ST_ACTIVE)
				futex_wait(&p->done, d);
			atomic_store(&p->caller_asleep, 0);
		}
		s = atomic_load(&p->st);
	}
}
