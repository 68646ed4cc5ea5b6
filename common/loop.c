/*
 * loop.c: epoll + timer heap + signalfd + eventfd task queue.
 *
 * Registered fds live in an array indexed by fd; each registration carries a
 * generation number packed next to the fd in epoll's user data, so an event
 * for an fd that a callback removed (or closed and re-registered) earlier in
 * the same batch is recognized as stale and dropped.
 */
#include "common/kvf_loop.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"
#include "common/kvf_time.h"

#define KVF_LOOP_BATCH 256
#define KVF_LOOP_MAX_SIGNALS 8

struct fd_slot {
	kvf_fd_cb cb;
	void *ud;
	uint32_t gen;
	unsigned events;
	int active;
};

struct sig_slot {
	int signo;
	kvf_signal_cb cb;
	void *ud;
};

struct kvf_loop {
	int epfd;
	int wakefd;  /* eventfd: tasks posted or stop requested */
	int sigfd;   /* -1 until a signal is added */
	sigset_t sigmask;
	struct sig_slot sigs[KVF_LOOP_MAX_SIGNALS];
	int nsigs;

	struct fd_slot *fds;
	size_t nfds;

	kvf_timer **heap;
	size_t heap_len, heap_cap;

	_Atomic(kvf_task *) tasks; /* Treiber stack, newest first */
	atomic_int stop;
	uint64_t now_ms;
};

/* ---- fd registry ---- */

static uint32_t to_epoll(unsigned ev)
{
	uint32_t e = 0;
	if (ev & KVF_EV_READ)
		e |= EPOLLIN | EPOLLRDHUP;
	if (ev & KVF_EV_WRITE)
		e |= EPOLLOUT;
	return e;
}

static int ensure_slot(kvf_loop *loop, int fd)
{
	if ((size_t)fd < loop->nfds)
		return 0;
	size_t n = loop->nfds ? loop->nfds : 64;
	while (n <= (size_t)fd)
		n *= 2;
	struct fd_slot *p = kvf_realloc(loop->fds, n * sizeof(*p));
	if (!p)
		return kvf_errf(KVF_E_NOMEM, "loop: fd table");
	memset(p + loop->nfds, 0, (n - loop->nfds) * sizeof(*p));
	loop->fds = p;
	loop->nfds = n;
	return 0;
}

int kvf_loop_add_fd(kvf_loop *loop, int fd, unsigned events, kvf_fd_cb cb, void *ud)
{
	if (fd < 0 || !cb)
		return kvf_errf(KVF_E_INVAL, "loop: bad fd or callback");
	int rc = ensure_slot(loop, fd);
	if (rc)
		return rc;
	struct fd_slot *s = &loop->fds[fd];
	if (s->active)
		return kvf_errf(KVF_E_EXISTS, "loop: fd %d already registered", fd);
	s->gen++;
	struct epoll_event ev = { .events = to_epoll(events),
				  .data.u64 = ((uint64_t)s->gen << 32) | (uint32_t)fd };
	if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
		return kvf_errf(kvf_err_from_errno(errno), "epoll_ctl add fd %d: %s", fd, strerror(errno));
	s->cb = cb;
	s->ud = ud;
	s->events = events;
	s->active = 1;
	return 0;
}

int kvf_loop_mod_fd(kvf_loop *loop, int fd, unsigned events)
{
	if (fd < 0 || (size_t)fd >= loop->nfds || !loop->fds[fd].active)
		return kvf_errf(KVF_E_NOTFOUND, "loop: fd %d not registered", fd);
	struct fd_slot *s = &loop->fds[fd];
	if (s->events == events)
		return 0;
	struct epoll_event ev = { .events = to_epoll(events),
				  .data.u64 = ((uint64_t)s->gen << 32) | (uint32_t)fd };
	if (epoll_ctl(loop->epfd, EPOLL_CTL_MOD, fd, &ev) != 0)
		return kvf_errf(kvf_err_from_errno(errno), "epoll_ctl mod fd %d: %s", fd, strerror(errno));
	s->events = events;
	return 0;
}

int kvf_loop_del_fd(kvf_loop *loop, int fd)
{
	if (fd < 0 || (size_t)fd >= loop->nfds || !loop->fds[fd].active)
		return kvf_errf(KVF_E_NOTFOUND, "loop: fd %d not registered", fd);
	epoll_ctl(loop->epfd, EPOLL_CTL_DEL, fd, NULL);
	loop->fds[fd].active = 0;
	loop->fds[fd].gen++; /* invalidates events already fetched in this batch */
	return 0;
}

/* ---- timers: binary min-heap on deadline ---- */

static void heap_swap(kvf_loop *loop, size_t a, size_t b)
{
	kvf_timer *t = loop->heap[a];
	loop->heap[a] = loop->heap[b];
	loop->heap[b] = t;
	loop->heap[a]->heap_idx = a + 1;
	loop->heap[b]->heap_idx = b + 1;
}

static void heap_up(kvf_loop *loop, size_t i)
{
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (loop->heap[p]->deadline_ms <= loop->heap[i]->deadline_ms)
			break;
		heap_swap(loop, i, p);
		i = p;
	}
}

static void heap_down(kvf_loop *loop, size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;
		if (l < loop->heap_len && loop->heap[l]->deadline_ms < loop->heap[m]->deadline_ms)
			m = l;
		if (r < loop->heap_len && loop->heap[r]->deadline_ms < loop->heap[m]->deadline_ms)
			m = r;
		if (m == i)
			break;
		heap_swap(loop, i, m);
		i = m;
	}
}

void kvf_loop_timer_stop(kvf_loop *loop, kvf_timer *t)
{
	if (!t->heap_idx)
		return;
	size_t i = t->heap_idx - 1;
	size_t last = loop->heap_len - 1;
	if (i != last) {
		heap_swap(loop, i, last);
		loop->heap_len--;
		heap_down(loop, i);
		heap_up(loop, i);
	} else {
		loop->heap_len--;
	}
	t->heap_idx = 0;
}

int kvf_loop_timer_start(kvf_loop *loop, kvf_timer *t, uint64_t delay_ms, uint64_t period_ms,
			 kvf_timer_cb cb, void *ud)
{
	kvf_loop_timer_stop(loop, t);
	if (kvf_grow((void **)&loop->heap, &loop->heap_cap, loop->heap_len + 1, sizeof(*loop->heap)))
		return kvf_errf(KVF_E_NOMEM, "loop: timer heap");
	t->deadline_ms = kvf_now_ms() + delay_ms;
	t->period_ms = period_ms;
	t->cb = cb;
	t->ud = ud;
	loop->heap[loop->heap_len] = t;
	t->heap_idx = ++loop->heap_len;
	heap_up(loop, loop->heap_len - 1);
	return 0;
}

static int run_timers(kvf_loop *loop)
{
	int n = 0;
	/* Bounded so a periodic timer of 0 ms cannot starve the fds. */
	for (int guard = 0; guard < 1024 && loop->heap_len; guard++) {
		kvf_timer *t = loop->heap[0];
		if (t->deadline_ms > loop->now_ms)
			break;
		kvf_loop_timer_stop(loop, t);
		if (t->period_ms) {
			/* Re-arm before the callback so it may stop or move the timer. */
			t->deadline_ms += t->period_ms;
			if (t->deadline_ms <= loop->now_ms)
				t->deadline_ms = loop->now_ms + t->period_ms;
			loop->heap[loop->heap_len] = t; /* capacity is there: it was just removed */
			t->heap_idx = ++loop->heap_len;
			heap_up(loop, loop->heap_len - 1);
		}
		t->cb(loop, t, t->ud);
		n++;
	}
	return n;
}

/* ---- tasks and wakeups ---- */

static void wake(kvf_loop *loop)
{
	uint64_t one = 1;
	ssize_t w = write(loop->wakefd, &one, sizeof(one));
	(void)w; /* EAGAIN means the counter is already nonzero: awake anyway */
}

void kvf_loop_post(kvf_loop *loop, kvf_task *task)
{
	kvf_task *head = atomic_load_explicit(&loop->tasks, memory_order_relaxed);
	do {
		task->next = head;
	} while (!atomic_compare_exchange_weak_explicit(&loop->tasks, &head, task,
							memory_order_release, memory_order_relaxed));
	if (head == NULL)
		wake(loop); /* first task since the last drain: the loop may sleep */
}

struct call_task {
	kvf_task task;
	void (*fn)(kvf_loop *loop, void *arg);
};

static void call_trampoline(kvf_loop *loop, kvf_task *task)
{
	struct call_task *ct = (struct call_task *)task;
	void (*fn)(kvf_loop *, void *) = ct->fn;
	void *arg = task->arg;
	kvf_free(ct);
	fn(loop, arg);
}

int kvf_loop_call(kvf_loop *loop, void (*fn)(kvf_loop *loop, void *arg), void *arg)
{
	struct call_task *ct = kvf_malloc(sizeof(*ct));
	if (!ct)
		return kvf_errf(KVF_E_NOMEM, "loop: task");
	ct->task.fn = call_trampoline;
	ct->task.arg = arg;
	ct->fn = fn;
	kvf_loop_post(loop, &ct->task);
	return 0;
}

static int run_tasks(kvf_loop *loop)
{
	kvf_task *list = atomic_exchange_explicit(&loop->tasks, NULL, memory_order_acquire);
	/* The stack is newest-first: reverse to run in posting order. */
	kvf_task *rev = NULL;
	while (list) {
		kvf_task *next = list->next;
		list->next = rev;
		rev = list;
		list = next;
	}
	int n = 0;
	while (rev) {
		kvf_task *next = rev->next;
		rev->fn(loop, rev);
		rev = next;
		n++;
	}
	return n;
}

void kvf_loop_stop(kvf_loop *loop)
{
	atomic_store(&loop->stop, 1);
	wake(loop);
}

/* ---- signals ---- */

int kvf_loop_add_signal(kvf_loop *loop, int signo, kvf_signal_cb cb, void *ud)
{
	if (loop->nsigs >= KVF_LOOP_MAX_SIGNALS)
		return kvf_errf(KVF_E_FULL, "loop: too many signals");
	sigaddset(&loop->sigmask, signo);
	if (pthread_sigmask(SIG_BLOCK, &loop->sigmask, NULL) != 0)
		return kvf_errf(KVF_E_IO, "loop: pthread_sigmask failed");
	int fd = signalfd(loop->sigfd, &loop->sigmask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (fd < 0)
		return kvf_errf(kvf_err_from_errno(errno), "signalfd: %s", strerror(errno));
	if (loop->sigfd < 0) {
		loop->sigfd = fd;
		struct epoll_event ev = { .events = EPOLLIN, .data.u64 = UINT64_MAX - 1 };
		if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
			return kvf_errf(kvf_err_from_errno(errno), "epoll_ctl signalfd: %s", strerror(errno));
	}
	loop->sigs[loop->nsigs++] = (struct sig_slot){ signo, cb, ud };
	return 0;
}

static int run_signals(kvf_loop *loop)
{
	struct signalfd_siginfo si;
	int n = 0;
	while (read(loop->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		for (int i = 0; i < loop->nsigs; i++) {
			if (loop->sigs[i].signo == (int)si.ssi_signo) {
				loop->sigs[i].cb(loop, (int)si.ssi_signo, loop->sigs[i].ud);
				n++;
			}
		}
	}
	return n;
}

/* ---- lifecycle ---- */

int kvf_loop_new(kvf_loop **out)
{
	kvf_loop *loop = kvf_calloc(1, sizeof(*loop));
	if (!loop)
		return kvf_errf(KVF_E_NOMEM, "loop: alloc");
	loop->sigfd = -1;
	sigemptyset(&loop->sigmask);
	loop->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (loop->epfd < 0)
		goto err_free;
	loop->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (loop->wakefd < 0)
		goto err_close_ep;
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = UINT64_MAX };
	if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, loop->wakefd, &ev) != 0)
		goto err_close_wake;
	loop->now_ms = kvf_now_ms();
	*out = loop;
	return 0;

err_close_wake:
	close(loop->wakefd);
err_close_ep:
	close(loop->epfd);
err_free: {
	int e = errno;
	kvf_free(loop);
	return kvf_errf(kvf_err_from_errno(e), "loop: %s", strerror(e));
}
}

void kvf_loop_destroy(kvf_loop *loop)
{
	if (!loop)
		return;
	run_tasks(loop); /* posted tasks own memory: let them run and free it */
	close(loop->epfd);
	close(loop->wakefd);
	if (loop->sigfd >= 0)
		close(loop->sigfd);
	kvf_free(loop->fds);
	kvf_free(loop->heap);
	kvf_free(loop);
}

uint64_t kvf_loop_now_ms(const kvf_loop *loop)
{
	return loop->now_ms;
}

int kvf_loop_run_once(kvf_loop *loop, int timeout_ms)
{
	struct epoll_event evs[KVF_LOOP_BATCH];
	loop->now_ms = kvf_now_ms();
	if (loop->heap_len) {
		uint64_t d = loop->heap[0]->deadline_ms;
		int until = d <= loop->now_ms ? 0 : (int)(d - loop->now_ms);
		if (timeout_ms < 0 || until < timeout_ms)
			timeout_ms = until;
	}
	if (atomic_load_explicit(&loop->tasks, memory_order_relaxed))
		timeout_ms = 0;
	int n = epoll_wait(loop->epfd, evs, KVF_LOOP_BATCH, timeout_ms);
	if (n < 0) {
		if (errno == EINTR)
			return 0;
		return kvf_errf(kvf_err_from_errno(errno), "epoll_wait: %s", strerror(errno));
	}
	loop->now_ms = kvf_now_ms();
	int ran = 0;
	for (int i = 0; i < n; i++) {
		uint64_t data = evs[i].data.u64;
		if (data == UINT64_MAX) {
			uint64_t v;
			ssize_t r = read(loop->wakefd, &v, sizeof(v));
			(void)r;
			continue;
		}
		if (data == UINT64_MAX - 1) {
			ran += run_signals(loop);
			continue;
		}
		int fd = (int)(uint32_t)data;
		uint32_t gen = (uint32_t)(data >> 32);
		if ((size_t)fd >= loop->nfds)
			continue;
		struct fd_slot *s = &loop->fds[fd];
		if (!s->active || s->gen != gen)
			continue; /* removed earlier in this batch */
		unsigned ev = 0;
		if (evs[i].events & (EPOLLIN | EPOLLRDHUP))
			ev |= KVF_EV_READ;
		if (evs[i].events & EPOLLOUT)
			ev |= KVF_EV_WRITE;
		if (evs[i].events & (EPOLLERR | EPOLLHUP))
			ev |= KVF_EV_ERROR | (s->events & KVF_EV_READ);
		s->cb(loop, fd, ev, s->ud);
		ran++;
	}
	ran += run_tasks(loop);
	ran += run_timers(loop);
	return ran;
}

int kvf_loop_run(kvf_loop *loop)
{
	int rc = 0;
	while (!atomic_load(&loop->stop)) {
		rc = kvf_loop_run_once(loop, -1);
		if (rc < 0)
			break;
	}
	atomic_store(&loop->stop, 0); /* the loop can be run again */
	return rc < 0 ? rc : 0;
}
