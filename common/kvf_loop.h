/*
 * kvf_loop.h: one event loop per thread (Redis ae, libuv in spirit).
 *
 * - file descriptors: epoll, level-triggered, a callback per fd;
 * - timers: caller-owned kvf_timer structs in a min-heap (no allocation per
 *   timer start), millisecond resolution, one-shot or periodic;
 * - signals: signalfd, so handlers run as ordinary callbacks on the loop;
 * - cross-thread work: kvf_loop_post() pushes a caller-owned kvf_task onto a
 *   lock-free list and wakes the loop through an eventfd; the task runs on the
 *   loop's thread. This is the only loop function other threads may call,
 *   with kvf_loop_stop().
 * Everything else must be called from the loop's own thread.
 */
#ifndef KVF_LOOP_H
#define KVF_LOOP_H

#include <stddef.h>
#include <stdint.h>

typedef struct kvf_loop kvf_loop;

enum {
	KVF_EV_READ = 1u << 0,
	KVF_EV_WRITE = 1u << 1,
	KVF_EV_ERROR = 1u << 2, /* reported only: error or hang-up on the fd */
};

/* events: KVF_EV_* bits that fired. */
typedef void (*kvf_fd_cb)(kvf_loop *loop, int fd, unsigned events, void *ud);

typedef struct kvf_timer kvf_timer;
typedef void (*kvf_timer_cb)(kvf_loop *loop, kvf_timer *t, void *ud);

/* Caller-owned; fields are private to the loop. Zero-initialize before use. */
struct kvf_timer {
	uint64_t deadline_ms;
	uint64_t period_ms;
	size_t heap_idx; /* position + 1 in the heap; 0 = not armed */
	kvf_timer_cb cb;
	void *ud;
};

typedef struct kvf_task kvf_task;
typedef void (*kvf_task_fn)(kvf_loop *loop, kvf_task *task);

/* Caller-owned work item handed to another thread's loop; the caller keeps it
 * alive until fn runs (fn may free it). */
struct kvf_task {
	kvf_task *next; /* private */
	kvf_task_fn fn;
	void *arg;
};

typedef void (*kvf_signal_cb)(kvf_loop *loop, int signo, void *ud);

int kvf_loop_new(kvf_loop **out);
/* Closes the loop's own fds; registered fds are not closed. NULL ok. */
void kvf_loop_destroy(kvf_loop *loop);

int kvf_loop_add_fd(kvf_loop *loop, int fd, unsigned events, kvf_fd_cb cb, void *ud);
int kvf_loop_mod_fd(kvf_loop *loop, int fd, unsigned events);
/* Safe to call from any callback, also for an fd with an event pending in
 * the current batch: that event is then dropped. */
int kvf_loop_del_fd(kvf_loop *loop, int fd);

/* Arms t to fire after delay_ms, then every period_ms if nonzero. Re-arming
 * an armed timer moves it. */
int kvf_loop_timer_start(kvf_loop *loop, kvf_timer *t, uint64_t delay_ms, uint64_t period_ms,
			 kvf_timer_cb cb, void *ud);
void kvf_loop_timer_stop(kvf_loop *loop, kvf_timer *t);
static inline int kvf_timer_armed(const kvf_timer *t) { return t->heap_idx != 0; }

/* Delivers signo through the loop (blocks it for the calling thread; call
 * before starting other threads so they inherit the mask). */
int kvf_loop_add_signal(kvf_loop *loop, int signo, kvf_signal_cb cb, void *ud);

/* Thread-safe: runs task->fn on the loop's thread, in posting order. */
void kvf_loop_post(kvf_loop *loop, kvf_task *task);
/* Thread-safe convenience that allocates the task (not for hot paths). */
int kvf_loop_call(kvf_loop *loop, void (*fn)(kvf_loop *loop, void *arg), void *arg);

/* Runs until kvf_loop_stop(). Returns 0, or an error if epoll failed. */
int kvf_loop_run(kvf_loop *loop);
/* One iteration waiting at most timeout_ms (-1: until something happens).
 * Returns the number of callbacks run, or a negative error. */
int kvf_loop_run_once(kvf_loop *loop, int timeout_ms);
/* Thread-safe: makes kvf_loop_run() return after the current iteration. */
void kvf_loop_stop(kvf_loop *loop);

/* Monotonic ms cached at the start of the current iteration. */
uint64_t kvf_loop_now_ms(const kvf_loop *loop);

#endif
