/* Unit tests for common/loop.c: fds, timers, signals, cross-thread tasks. */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "common/kvf_err.h"
#include "common/kvf_loop.h"
#include "common/kvf_time.h"

struct fdctx {
	int reads;
	int writes;
	char got[64];
};

static void on_fd(kvf_loop *loop, int fd, unsigned ev, void *ud)
{
	struct fdctx *c = ud;
	if (ev & KVF_EV_READ) {
		ssize_t n = read(fd, c->got, sizeof(c->got) - 1);
		if (n > 0)
			c->got[n] = 0;
		c->reads++;
	}
	if (ev & KVF_EV_WRITE)
		c->writes++;
}

static void test_fd_events(void **state)
{
	kvf_loop *loop;
	int p[2];
	assert_int_equal(kvf_loop_new(&loop), 0);
	assert_int_equal(pipe(p), 0);
	struct fdctx c = {0};
	assert_int_equal(kvf_loop_add_fd(loop, p[0], KVF_EV_READ, on_fd, &c), 0);
	assert_int_equal(kvf_loop_add_fd(loop, p[0], KVF_EV_READ, on_fd, &c), KVF_E_EXISTS);
	assert_int_equal(kvf_loop_run_once(loop, 0), 0);
	assert_int_equal(write(p[1], "hi", 2), 2);
	assert_int_equal(kvf_loop_run_once(loop, 1000), 1);
	assert_int_equal(c.reads, 1);
	assert_string_equal(c.got, "hi");

	struct fdctx w = {0};
	assert_int_equal(kvf_loop_add_fd(loop, p[1], 0, on_fd, &w), 0);
	kvf_loop_run_once(loop, 0);
	assert_int_equal(w.writes, 0);
	assert_int_equal(kvf_loop_mod_fd(loop, p[1], KVF_EV_WRITE), 0);
	kvf_loop_run_once(loop, 1000);
	assert_int_equal(w.writes, 1);
	assert_int_equal(kvf_loop_del_fd(loop, p[1]), 0);
	assert_int_equal(kvf_loop_del_fd(loop, p[1]), KVF_E_NOTFOUND);
	assert_int_equal(kvf_loop_mod_fd(loop, 999, KVF_EV_READ), KVF_E_NOTFOUND);
	assert_int_equal(kvf_loop_add_fd(loop, -1, KVF_EV_READ, on_fd, &c), KVF_E_INVAL);
	kvf_loop_del_fd(loop, p[0]);
	close(p[0]);
	close(p[1]);
	kvf_loop_destroy(loop);
	kvf_loop_destroy(NULL);
}

/* A callback that removes the other fd: its pending event must be dropped. */
struct pair {
	int fds[2];
	int calls[2];
};

static void on_pair(kvf_loop *loop, int fd, unsigned ev, void *ud)
{
	struct pair *pr = ud;
	int me = fd == pr->fds[0] ? 0 : 1;
	pr->calls[me]++;
	kvf_loop_del_fd(loop, pr->fds[1 - me]);
	kvf_loop_del_fd(loop, fd);
}

static void test_del_in_batch(void **state)
{
	kvf_loop *loop;
	int a[2], b[2];
	assert_int_equal(kvf_loop_new(&loop), 0);
	assert_int_equal(pipe(a), 0);
	assert_int_equal(pipe(b), 0);
	struct pair pr = { { a[0], b[0] }, { 0, 0 } };
	kvf_loop_add_fd(loop, a[0], KVF_EV_READ, on_pair, &pr);
	kvf_loop_add_fd(loop, b[0], KVF_EV_READ, on_pair, &pr);
	assert_int_equal(write(a[1], "x", 1), 1);
	assert_int_equal(write(b[1], "x", 1), 1);
	usleep(1000);
	assert_int_equal(kvf_loop_run_once(loop, 1000), 1);
	assert_int_equal(pr.calls[0] + pr.calls[1], 1);
	close(a[0]); close(a[1]); close(b[0]); close(b[1]);
	kvf_loop_destroy(loop);
}

struct tctx {
	int order[8];
	int n;
};

struct tagged {
	struct tctx *c;
	int tag;
};

static void on_tagged(kvf_loop *loop, kvf_timer *t, void *ud)
{
	struct tagged *tg = ud;
	tg->c->order[tg->c->n++] = tg->tag;
}

static void test_timers_order(void **state)
{
	kvf_loop *loop;
	assert_int_equal(kvf_loop_new(&loop), 0);
	struct tctx c = {0};
	kvf_timer t[3] = {0};
	struct tagged tg[3] = { { &c, 30 }, { &c, 10 }, { &c, 20 } };
	kvf_loop_timer_start(loop, &t[0], 30, 0, on_tagged, &tg[0]);
	kvf_loop_timer_start(loop, &t[1], 10, 0, on_tagged, &tg[1]);
	kvf_loop_timer_start(loop, &t[2], 20, 0, on_tagged, &tg[2]);
	assert_true(kvf_timer_armed(&t[0]));
	uint64_t start = kvf_now_ms();
	while (c.n < 3 && kvf_now_ms() - start < 5000)
		kvf_loop_run_once(loop, -1);
	assert_int_equal(c.n, 3);
	assert_int_equal(c.order[0], 10);
	assert_int_equal(c.order[1], 20);
	assert_int_equal(c.order[2], 30);
	assert_false(kvf_timer_armed(&t[0]));
	/* a stopped timer never fires */
	kvf_loop_timer_start(loop, &t[0], 1, 0, on_tagged, &tg[0]);
	kvf_loop_timer_stop(loop, &t[0]);
	kvf_loop_timer_stop(loop, &t[0]);
	usleep(3000);
	kvf_loop_run_once(loop, 0);
	assert_int_equal(c.n, 3);
	kvf_loop_destroy(loop);
}

static void on_periodic(kvf_loop *loop, kvf_timer *t, void *ud)
{
	int *n = ud;
	if (++*n == 3)
		kvf_loop_timer_stop(loop, t);
}

static void test_periodic(void **state)
{
	kvf_loop *loop;
	assert_int_equal(kvf_loop_new(&loop), 0);
	kvf_timer t = {0};
	int n = 0;
	kvf_loop_timer_start(loop, &t, 1, 1, on_periodic, &n);
	uint64_t start = kvf_now_ms();
	while (kvf_timer_armed(&t) && kvf_now_ms() - start < 5000)
		kvf_loop_run_once(loop, -1);
	assert_int_equal(n, 3);
	assert_false(kvf_timer_armed(&t));
	kvf_loop_destroy(loop);
}

/* Many timers with random deadlines fire in deadline order (heap check). */
static void on_seq(kvf_loop *loop, kvf_timer *t, void *ud)
{
	uint64_t *last = ud;
	assert_true(t->deadline_ms >= *last);
	*last = t->deadline_ms;
}

static void test_timer_heap(void **state)
{
	kvf_loop *loop;
	assert_int_equal(kvf_loop_new(&loop), 0);
	enum { N = 200 };
	static kvf_timer ts[N];
	memset(ts, 0, sizeof(ts));
	uint64_t last = 0;
	unsigned seed = 7;
	for (int i = 0; i < N; i++) {
		seed = seed * 1103515245u + 12345u;
		kvf_loop_timer_start(loop, &ts[i], (seed >> 16) % 20, 0, on_seq, &last);
	}
	for (int i = 0; i < N; i += 3)
		kvf_loop_timer_stop(loop, &ts[i]);
	uint64_t start = kvf_now_ms();
	int armed;
	do {
		kvf_loop_run_once(loop, 5);
		armed = 0;
		for (int i = 0; i < N; i++)
			armed += kvf_timer_armed(&ts[i]);
	} while (armed && kvf_now_ms() - start < 5000);
	assert_int_equal(armed, 0);
	kvf_loop_destroy(loop);
}

struct post_ctx {
	kvf_loop *loop;
	kvf_task tasks[1000];
	int seen[1000];
	int count;
	int in_order;
	int last;
};

static void on_task(kvf_loop *loop, kvf_task *task)
{
	struct post_ctx *pc = task->arg;
	int idx = (int)(task - pc->tasks);
	pc->seen[idx]++;
	if (idx < pc->last)
		pc->in_order = 0;
	pc->last = idx;
	if (++pc->count == 1000)
		kvf_loop_stop(loop);
}

static void *poster(void *arg)
{
	struct post_ctx *pc = arg;
	for (int i = 0; i < 1000; i++) {
		pc->tasks[i].fn = on_task;
		pc->tasks[i].arg = pc;
		kvf_loop_post(pc->loop, &pc->tasks[i]);
		if (i % 100 == 0)
			usleep(100);
	}
	return NULL;
}

static void test_post_from_thread(void **state)
{
	static struct post_ctx pc;
	memset(&pc, 0, sizeof(pc));
	pc.in_order = 1;
	assert_int_equal(kvf_loop_new(&pc.loop), 0);
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, poster, &pc), 0);
	assert_int_equal(kvf_loop_run(pc.loop), 0);
	pthread_join(th, NULL);
	assert_int_equal(pc.count, 1000);
	assert_true(pc.in_order);
	for (int i = 0; i < 1000; i++)
		assert_int_equal(pc.seen[i], 1);
	kvf_loop_destroy(pc.loop);
}

static void on_call(kvf_loop *loop, void *arg)
{
	(*(int *)arg)++;
	kvf_loop_stop(loop);
}

static void test_call_and_stop(void **state)
{
	kvf_loop *loop;
	assert_int_equal(kvf_loop_new(&loop), 0);
	int n = 0;
	assert_int_equal(kvf_loop_call(loop, on_call, &n), 0);
	assert_int_equal(kvf_loop_run(loop), 0);
	assert_int_equal(n, 1);
	/* a stop requested before run makes run return at once */
	kvf_loop_stop(loop);
	assert_int_equal(kvf_loop_run(loop), 0);
	kvf_loop_destroy(loop);
}

static void on_sig(kvf_loop *loop, int signo, void *ud)
{
	*(int *)ud = signo;
	kvf_loop_stop(loop);
}

static void test_signal(void **state)
{
	kvf_loop *loop;
	assert_int_equal(kvf_loop_new(&loop), 0);
	int got = 0;
	assert_int_equal(kvf_loop_add_signal(loop, SIGUSR1, on_sig, &got), 0);
	assert_int_equal(kvf_loop_add_signal(loop, SIGUSR2, on_sig, &got), 0);
	kill(getpid(), SIGUSR2);
	assert_int_equal(kvf_loop_run(loop), 0);
	assert_int_equal(got, SIGUSR2);
	kvf_loop_destroy(loop);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fd_events),
		cmocka_unit_test(test_del_in_batch),
		cmocka_unit_test(test_timers_order),
		cmocka_unit_test(test_periodic),
		cmocka_unit_test(test_timer_heap),
		cmocka_unit_test(test_post_from_thread),
		cmocka_unit_test(test_call_and_stop),
		cmocka_unit_test(test_signal),
	};
	return cmocka_run_group_tests_name("loop", tests, NULL, NULL);
}
