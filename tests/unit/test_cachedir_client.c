/*
 * Unit tests for cachedir/client.c against real servers (cachedir/server.c)
 * on one loop over loopback TCP: publishing and lookups, WORKERS with load,
 * re-announce after a server restart, failover between replicas with
 * requests in flight, dropped events -> RESYNC -> re-announce, request
 * timeouts and cancellation, WATCH with a local copy across a restart,
 * unregister, and destroy with requests pending.
 */
#include "cachedir/cd_server.h"
#include "cachedir/kvf_cachedir.h"
#include "common/kvf_err.h"
#include "common/kvf_log.h"
#include "common/kvf_net.h"
#include "common/kvf_time.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#define NK 256

static kvf_blockkey K(uint64_t i)
{
	kvf_blockkey k = { i * 0x9e3779b97f4a7c15ull + 3, i ^ 0x5555 };
	return k;
}

/* A fake worker's block set: tier of key i, or -1. */
struct worker {
	int tier[NK];
	int announces;
	kvf_cachedir_load load;
	kvf_cachedir *c;
	int up, down, synced, resyncs, refused;
};

static void announce(void *ud, kvf_cachedir_sync *s)
{
	struct worker *w = ud;
	w->announces++;
	for (int i = 0; i < NK; i++)
		if (w->tier[i] >= 0) {
			kvf_blockkey k = K((uint64_t)i);
			assert_int_equal(kvf_cachedir_sync_add(s, w->tier[i], &k, 1), 0);
		}
}

static void load_cb(void *ud, kvf_cachedir_load *out)
{
	*out = ((struct worker *)ud)->load;
}

static void status_cb(void *ud, const kvf_cachedir_status *st)
{
	struct worker *w = ud;
	switch (st->type) {
	case KVF_CACHEDIR_UP: w->up++; break;
	case KVF_CACHEDIR_DOWN: w->down++; break;
	case KVF_CACHEDIR_SYNCED: w->synced++; break;
	case KVF_CACHEDIR_RESYNC: w->resyncs++; break;
	case KVF_CACHEDIR_REFUSED: w->refused++; break;
	}
}

static void store(struct worker *w, int from, int to, int tier)
{
	kvf_blockkey k[NK];
	for (int i = from; i < to; i++) {
		w->tier[i] = tier;
		k[i - from] = K((uint64_t)i);
	}
	assert_int_equal(kvf_cachedir_stored(w->c, tier, k, (size_t)(to - from), NULL), 0);
}

static kvf_loop *loop;

static cd_server *server_at(const char *listen)
{
	cd_server_opts o;
	cd_server_opts_default(&o);
	o.listen = (char *)listen;
	o.heartbeat_ms = 50;
	o.lease_ms = 500;
	o.warmup_ms = 0;
	cd_server *s;
	assert_int_equal(cd_server_new(loop, &o, NULL, NULL, &s), 0);
	return s;
}

static void run_ms(int ms)
{
	uint64_t end = kvf_now_ms() + (uint64_t)ms;
	while (kvf_now_ms() < end)
		kvf_loop_run_once(loop, 1);
}

/* Runs the loop until *flag is nonzero; fails after ms. */
static void run_until(const int *flag, int ms)
{
	uint64_t end = kvf_now_ms() + (uint64_t)ms;
	while (!*flag) {
		if (kvf_now_ms() > end)
			fail_msg("condition not reached within %d ms", ms);
		kvf_loop_run_once(loop, 1);
	}
}

static void start_worker(struct worker *w, const char *id, const char *const *servers, size_t n)
{
	memset(w, 0, sizeof(*w));
	for (int i = 0; i < NK; i++)
		w->tier[i] = -1;
	kvf_cachedir_opts o;
	kvf_cachedir_opts_init(&o);
	o.servers = servers;
	o.nservers = n;
	o.worker_id = id;
	o.model = "llama";
	o.block_size = 16;
	o.tiers = 3;
	o.http_endpoint = "127.0.0.1:8200";
	o.fabric_endpoint = "127.0.0.1:7810";
	o.announce = announce;
	o.load = load_cb;
	o.on_status = status_cb;
	o.ud = w;
	o.reconnect_min_ms = 10;
	o.reconnect_max_ms = 100;
	assert_int_equal(kvf_cachedir_new(loop, &o, &w->c), 0);
}

static kvf_cachedir *start_reader(const char *const *servers, size_t n)
{
	kvf_cachedir_opts o;
	kvf_cachedir_opts_init(&o);
	o.servers = servers;
	o.nservers = n;
	o.reconnect_min_ms = 10;
	o.reconnect_max_ms = 100;
	o.ping_interval_ms = 50;
	kvf_cachedir *c;
	assert_int_equal(kvf_cachedir_new(loop, &o, &c), 0);
	return c;
}

struct lk {
	int done, status;
	size_t n, nmatched;
	char id[4][64];
	uint32_t p[4][3];
	char server[64];
};

static void lookup_cb(void *ud, int status, const kvf_cachedir_lookup_result *r)
{
	struct lk *l = ud;
	l->done++;
	l->status = status;
	if (status)
		return;
	l->n = r->nholders;
	l->nmatched = r->nmatched;
	snprintf(l->server, sizeof(l->server), "%s", r->server);
	for (size_t i = 0; i < r->nholders && i < 4; i++) {
		snprintf(l->id[i], sizeof(l->id[i]), "%s", r->holders[i].worker_id);
		l->p[i][0] = r->holders[i].prefix_gpu;
		l->p[i][1] = r->holders[i].prefix_host;
		l->p[i][2] = r->holders[i].prefix_any;
	}
}

static void lookup(kvf_cachedir *c, int from, int n, struct lk *l)
{
	kvf_blockkey k[NK];
	for (int i = 0; i < n; i++)
		k[i] = K((uint64_t)(from + i));
	memset(l, 0, sizeof(*l));
	assert_int_equal(kvf_cachedir_lookup(c, "llama", k, (size_t)n, lookup_cb, l, NULL), 0);
	run_until(&l->done, 3000);
}

static void test_publish_and_lookup_body(void)
{
	cd_server *s = server_at("127.0.0.1:0");
	char addr[32];
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", cd_server_port(s));
	const char *servers[1] = { addr };
	struct worker w;
	start_worker(&w, "decode-0", servers, 1);
	kvf_cachedir *r = start_reader(servers, 1);
	run_until(&w.synced, 2000);
	assert_int_equal(w.announces, 1);
	store(&w, 0, 8, KVF_CACHEDIR_GPU);
	store(&w, 8, 12, KVF_CACHEDIR_HOST);
	struct lk l;
	lookup(r, 0, 16, &l);
	assert_int_equal(l.status, 0);
	assert_int_equal(l.n, 1);
	assert_string_equal(l.id[0], "decode-0");
	assert_int_equal(l.p[0][0], 8);
	assert_int_equal(l.p[0][1], 12);
	assert_int_equal(l.nmatched, 12);

	kvf_blockkey k[2] = { K(2), K(3) };
	assert_int_equal(kvf_cachedir_removed(w.c, KVF_CACHEDIR_ALL_TIERS, k, 2), 0);
	lookup(r, 0, 16, &l);
	assert_int_equal(l.p[0][2], 2);

	/* Unknown model: the server's error reaches the callback. */
	memset(&l, 0, sizeof(l));
	assert_int_equal(kvf_cachedir_lookup(r, "mistral", k, 2, lookup_cb, &l, NULL), 0);
	run_until(&l.done, 2000);
	assert_int_equal(l.status, KVF_E_NOTFOUND);

	/* A reader cannot publish. */
	assert_int_equal(kvf_cachedir_stored(r, 0, k, 1, NULL), KVF_E_STATE);
	assert_int_equal(kvf_cachedir_stored(w.c, 5, k, 1, NULL), KVF_E_INVAL);

	kvf_cachedir_stats st;
	kvf_cachedir_get_stats(w.c, &st);
	assert_int_equal(st.servers_up, 1);
	assert_int_equal(st.events_dropped, 0);
	kvf_cachedir_destroy(r);
	kvf_cachedir_destroy(w.c);
	cd_server_destroy(s);
}

struct wl {
	int done, status;
	size_t n;
	uint32_t waiting, running;
	uint64_t gpu;
	int draining;
	char http[64];
};

static void workers_cb(void *ud, int status, const kvf_cachedir_worker *w, size_t n)
{
	struct wl *l = ud;
	l->done++;
	l->status = status;
	l->n = n;
	if (n) {
		l->waiting = w[0].load.waiting;
		l->running = w[0].load.running;
		l->gpu = w[0].blocks[0];
		l->draining = w[0].load.draining;
		snprintf(l->http, sizeof(l->http), "%s", w[0].http_endpoint);
	}
}

static void test_workers_and_load_body(void)
{
	cd_server *s = server_at("127.0.0.1:0");
	char addr[32];
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", cd_server_port(s));
	const char *servers[1] = { addr };
	struct worker w;
	start_worker(&w, "decode-0", servers, 1);
	run_until(&w.synced, 2000);
	store(&w, 0, 5, 0);
	w.load = (kvf_cachedir_load){ .waiting = 7, .running = 3, .kv_used_blocks = 50, .kv_total_blocks = 100,
				      .draining = 1 };
	kvf_cachedir_heartbeat_now(w.c);
	run_ms(20);
	struct wl l = { 0 };
	assert_int_equal(kvf_cachedir_workers(w.c, "llama", workers_cb, &l, NULL), 0);
	run_until(&l.done, 2000);
	assert_int_equal(l.status, 0);
	assert_int_equal(l.n, 1);
	assert_int_equal(l.waiting, 7);
	assert_int_equal(l.running, 3);
	assert_int_equal(l.gpu, 5);
	assert_int_equal(l.draining, 1);
	assert_string_equal(l.http, "127.0.0.1:8200");
	memset(&l, 0, sizeof(l));
	assert_int_equal(kvf_cachedir_workers(w.c, "other", workers_cb, &l, NULL), 0);
	run_until(&l.done, 2000);
	assert_int_equal(l.n, 0);
	kvf_cachedir_destroy(w.c);
	cd_server_destroy(s);
}

static void test_server_restart_reannounce_body(void)
{
	cd_server *s = server_at("127.0.0.1:0");
	char addr[32];
	uint16_t port = cd_server_port(s);
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
	const char *servers[1] = { addr };
	struct worker a, b;
	start_worker(&a, "decode-0", servers, 1);
	start_worker(&b, "decode-1", servers, 1);
	kvf_cachedir *r = start_reader(servers, 1);
	run_until(&a.synced, 2000);
	run_until(&b.synced, 2000);
	store(&a, 0, 20, 0);
	store(&b, 0, 5, 1);
	store(&b, 5, 9, 2);
	struct lk before, after;
	lookup(r, 0, 24, &before);
	assert_int_equal(before.n, 2);

	/* Restart the server: every client reconnects and the workers re-announce. */
	cd_server_destroy(s);
	run_ms(30);
	s = server_at(addr);
	int syn_a = a.synced, syn_b = b.synced;
	uint64_t end = kvf_now_ms() + 3000;
	while ((a.synced == syn_a || b.synced == syn_b) && kvf_now_ms() < end)
		kvf_loop_run_once(loop, 1);
	assert_true(a.synced > syn_a && b.synced > syn_b);
	assert_true(a.announces >= 2);
	lookup(r, 0, 24, &after);
	assert_int_equal(after.status, 0);
	assert_int_equal(after.n, before.n);
	assert_int_equal(after.nmatched, before.nmatched);
	for (size_t i = 0; i < after.n; i++) {
		assert_string_equal(after.id[i], before.id[i]);
		assert_memory_equal(after.p[i], before.p[i], sizeof(after.p[i]));
	}
	assert_true(a.down >= 1);
	kvf_cachedir_destroy(r);
	kvf_cachedir_destroy(a.c);
	kvf_cachedir_destroy(b.c);
	cd_server_destroy(s);
}

static void test_failover_body(void)
{
	cd_server *s1 = server_at("127.0.0.1:0"), *s2 = server_at("127.0.0.1:0");
	char a1[32], a2[32];
	snprintf(a1, sizeof(a1), "127.0.0.1:%u", cd_server_port(s1));
	snprintf(a2, sizeof(a2), "127.0.0.1:%u", cd_server_port(s2));
	const char *servers[2] = { a1, a2 };
	struct worker w;
	start_worker(&w, "decode-0", servers, 2);
	kvf_cachedir *r = start_reader(servers, 2);
	uint64_t end = kvf_now_ms() + 2000;
	while (w.synced < 2 && kvf_now_ms() < end)
		kvf_loop_run_once(loop, 1);
	assert_int_equal(w.synced, 2); /* one re-announce per replica */
	store(&w, 0, 10, 0);
	struct lk l;
	lookup(r, 0, 12, &l);
	assert_string_equal(l.server, a1);
	assert_int_equal(l.p[0][2], 10);

	/* Both replicas hold the same state. */
	cd_index_stats st1, st2;
	cd_index_stats_get(cd_server_index(s1), &st1);
	cd_index_stats_get(cd_server_index(s2), &st2);
	assert_int_equal(st1.holders, 10);
	assert_int_equal(st2.holders, 10);

	/* Replica 1 dies with a lookup in flight: the lookup is answered by 2. */
	kvf_blockkey k[12];
	for (int i = 0; i < 12; i++)
		k[i] = K((uint64_t)i);
	memset(&l, 0, sizeof(l));
	assert_int_equal(kvf_cachedir_lookup(r, "llama", k, 12, lookup_cb, &l, NULL), 0);
	kvf_loop_run_once(loop, 0); /* the flush task writes the request; no answer yet */
	cd_server_destroy(s1);
	run_until(&l.done, 3000);
	assert_int_equal(l.status, 0);
	assert_string_equal(l.server, a2);
	assert_int_equal(l.p[0][2], 10);
	/* Events keep flowing to the surviving replica. */
	store(&w, 10, 12, 0);
	lookup(r, 0, 12, &l);
	assert_int_equal(l.p[0][2], 12);
	kvf_cachedir_stats st;
	kvf_cachedir_get_stats(r, &st);
	assert_true(st.failovers >= 1);
	kvf_cachedir_destroy(r);
	kvf_cachedir_destroy(w.c);
	cd_server_destroy(s2);
}

static void test_dropped_events_resync_body(void)
{
	cd_server *s = server_at("127.0.0.1:0");
	char addr[32];
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", cd_server_port(s));
	const char *servers[1] = { addr };
	struct worker w;
	memset(&w, 0, sizeof(w));
	for (int i = 0; i < NK; i++)
		w.tier[i] = -1;
	kvf_cachedir_opts o;
	kvf_cachedir_opts_init(&o);
	o.servers = servers;
	o.nservers = 1;
	o.worker_id = "decode-0";
	o.model = "llama";
	o.block_size = 16;
	o.announce = announce;
	o.on_status = status_cb;
	o.ud = &w;
	o.max_queue_bytes = 200; /* about two events queue per loop iteration */
	assert_int_equal(kvf_cachedir_new(loop, &o, &w.c), 0);
	run_until(&w.synced, 2000);
	/* 40 single-key events in one iteration: most are dropped. */
	for (int i = 0; i < 40; i++)
		store(&w, i, i + 1, 0);
	kvf_cachedir_stats st;
	kvf_cachedir_get_stats(w.c, &st);
	assert_true(st.events_dropped > 30);
	run_until(&w.resyncs, 2000);
	int syn = w.synced;
	uint64_t end = kvf_now_ms() + 2000;
	while (w.synced == syn && kvf_now_ms() < end)
		kvf_loop_run_once(loop, 1);
	/* The re-announce restored the whole set. */
	cd_index_stats is;
	cd_index_stats_get(cd_server_index(s), &is);
	assert_int_equal(is.holders, 40);
	kvf_cachedir_destroy(w.c);
	cd_server_destroy(s);
}

static void test_timeout_and_cancel_body(void)
{
	/* A listener nobody serves: connects succeed, requests go unanswered. */
	int lfd;
	assert_int_equal(kvf_net_listen_tcp("127.0.0.1:0", 16, &lfd), 0);
	uint16_t port;
	kvf_net_local_port(lfd, &port);
	char addr[32];
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
	const char *servers[1] = { addr };
	kvf_cachedir_opts o;
	kvf_cachedir_opts_init(&o);
	o.servers = servers;
	o.nservers = 1;
	o.request_timeout_ms = 100;
	o.ping_interval_ms = 1000;
	kvf_cachedir *r;
	assert_int_equal(kvf_cachedir_new(loop, &o, &r), 0);
	kvf_blockkey k = K(1);
	struct lk l1, l2;
	memset(&l1, 0, sizeof(l1));
	memset(&l2, 0, sizeof(l2));
	uint64_t id2;
	assert_int_equal(kvf_cachedir_lookup(r, "llama", &k, 1, lookup_cb, &l1, NULL), 0);
	assert_int_equal(kvf_cachedir_lookup(r, "llama", &k, 1, lookup_cb, &l2, &id2), 0);
	kvf_cachedir_cancel(r, id2);
	run_until(&l1.done, 2000);
	assert_int_equal(l1.status, KVF_E_TIMEOUT);
	run_ms(150);
	assert_int_equal(l2.done, 0);
	/* Destroy with one pending: it is canceled through its callback. */
	struct lk l3;
	memset(&l3, 0, sizeof(l3));
	assert_int_equal(kvf_cachedir_lookup(r, "llama", &k, 1, lookup_cb, &l3, NULL), 0);
	kvf_cachedir_destroy(r);
	assert_int_equal(l3.done, 1);
	assert_int_equal(l3.status, KVF_E_CANCELED);
	close(lfd);
}

/* A local copy kept by WATCH events. */
struct copy {
	int held[2][NK]; /* [worker 0/1][key] tier bits */
	int snaps, ends, workers;
	uint64_t seq;
};

static int key_index(kvf_blockkey k)
{
	for (int i = 0; i < NK; i++)
		if (kvf_blockkey_eq(K((uint64_t)i), k))
			return i;
	return -1;
}

static void watch_cb(void *ud, const kvf_cachedir_watch_event *ev)
{
	struct copy *c = ud;
	c->seq = ev->seq;
	int wi = ev->worker_id ? (strcmp(ev->worker_id, "decode-1") == 0) : 0;
	switch (ev->kind) {
	case KVF_CACHEDIR_EV_SNAPSHOT_BEGIN:
		memset(c->held, 0, sizeof(c->held));
		c->snaps++;
		break;
	case KVF_CACHEDIR_EV_SNAPSHOT_END:
		c->ends++;
		break;
	case KVF_CACHEDIR_EV_WORKER:
		c->workers++;
		break;
	case KVF_CACHEDIR_EV_WORKER_GONE:
	case KVF_CACHEDIR_EV_CLEARED:
		memset(c->held[wi], 0, sizeof(c->held[wi]));
		break;
	case KVF_CACHEDIR_EV_STORED:
		for (size_t i = 0; i < ev->nkeys; i++)
			c->held[wi][key_index(ev->keys[i])] |= 1 << ev->tier;
		break;
	case KVF_CACHEDIR_EV_REMOVED:
		for (size_t i = 0; i < ev->nkeys; i++)
			c->held[wi][key_index(ev->keys[i])] &=
				ev->tier == KVF_CACHEDIR_ALL_TIERS ? 0 : ~(1 << ev->tier);
		break;
	}
}

static void check_copy(const struct copy *c, const struct worker *w, int wi)
{
	for (int i = 0; i < NK; i++)
		assert_int_equal(c->held[wi][i], w->tier[i] < 0 ? 0 : 1 << w->tier[i]);
}

static void test_watch_local_copy_body(void)
{
	cd_server *s = server_at("127.0.0.1:0");
	char addr[32];
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", cd_server_port(s));
	const char *servers[1] = { addr };
	struct worker a, b;
	start_worker(&a, "decode-0", servers, 1);
	start_worker(&b, "decode-1", servers, 1);
	run_until(&a.synced, 2000);
	run_until(&b.synced, 2000);
	store(&a, 0, 30, 0);
	run_ms(10);
	kvf_cachedir *r = start_reader(servers, 1);
	struct copy cp;
	memset(&cp, 0, sizeof(cp));
	assert_int_equal(kvf_cachedir_watch(r, KVF_CACHEDIR_WATCH_BLOCKS | KVF_CACHEDIR_WATCH_WORKERS, "llama",
					    watch_cb, &cp), 0);
	assert_int_equal(kvf_cachedir_watch(r, 1, NULL, watch_cb, &cp), KVF_E_EXISTS);
	run_until(&cp.ends, 2000);
	check_copy(&cp, &a, 0);
	assert_true(cp.workers >= 2);
	/* Live changes. */
	store(&b, 10, 40, 1);
	kvf_blockkey k[3] = { K(1), K(2), K(3) };
	kvf_cachedir_removed(a.c, 0, k, 3);
	a.tier[1] = a.tier[2] = a.tier[3] = -1;
	run_ms(30);
	check_copy(&cp, &a, 0);
	check_copy(&cp, &b, 1);
	/* Server restart: a new snapshot rebuilds the copy once the workers are back. */
	cd_server_destroy(s);
	run_ms(20);
	s = server_at(addr);
	int snaps = cp.snaps;
	run_until(&a.synced, 2000);
	uint64_t end = kvf_now_ms() + 3000;
	while (cp.snaps == snaps && kvf_now_ms() < end)
		kvf_loop_run_once(loop, 1);
	assert_true(cp.snaps > snaps);
	run_ms(300); /* both workers re-announced, their events streamed */
	check_copy(&cp, &a, 0);
	check_copy(&cp, &b, 1);
	kvf_cachedir_unwatch(r);
	kvf_cachedir_destroy(r);
	kvf_cachedir_destroy(a.c);
	kvf_cachedir_destroy(b.c);
	cd_server_destroy(s);
}

static void test_unregister_body(void)
{
	cd_server *s = server_at("127.0.0.1:0");
	char addr[32];
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", cd_server_port(s));
	const char *servers[1] = { addr };
	struct worker w;
	start_worker(&w, "decode-0", servers, 1);
	run_until(&w.synced, 2000);
	store(&w, 0, 4, 0);
	struct lk l;
	lookup(w.c, 0, 4, &l); /* a worker client reads too */
	assert_int_equal(l.n, 1);
	assert_int_equal(kvf_cachedir_unregister(w.c), 0);
	assert_int_equal(kvf_cachedir_stored(w.c, 0, &(kvf_blockkey){ 1, 2 }, 1, NULL), KVF_E_STATE);
	lookup(w.c, 0, 4, &l);
	assert_int_equal(l.status, KVF_E_NOTFOUND); /* its model left with it */
	run_ms(120); /* heartbeats stop being sent: no protocol error closes us */
	lookup(w.c, 0, 4, &l);
	assert_int_equal(l.status, KVF_E_NOTFOUND);
	kvf_cachedir_destroy(w.c);
	cd_server_destroy(s);
}

static void test_bad_options_body(void)
{
	kvf_cachedir_opts o;
	kvf_cachedir_opts_init(&o);
	kvf_cachedir *c;
	assert_int_equal(kvf_cachedir_new(loop, &o, &c), KVF_E_INVAL);
	const char *servers[1] = { "127.0.0.1:1" };
	o.servers = servers;
	o.nservers = 1;
	o.worker_id = "w";
	assert_int_equal(kvf_cachedir_new(loop, &o, &c), KVF_E_INVAL); /* no model */
	o.model = "m";
	assert_int_equal(kvf_cachedir_new(loop, &o, &c), KVF_E_INVAL); /* no block size */
	o.block_size = 16;
	o.tiers = 0x10;
	assert_int_equal(kvf_cachedir_new(loop, &o, &c), KVF_E_INVAL);
}

/* Each test builds its loop inside the test function: cmocka checks leaks
 * per test function, fixtures included. */
#define LOOP_TEST(name)                                                        \
	static void name(void **state)                                         \
	{                                                                      \
		(void)state;                                                   \
		kvf_log_set_level(KVF_LOG_ERROR);                              \
		assert_int_equal(kvf_loop_new(&loop), 0);                      \
		name##_body();                                                 \
		kvf_loop_destroy(loop); /* runs queued tasks: they free themselves */ \
		loop = NULL;                                                   \
	}
LOOP_TEST(test_publish_and_lookup)
LOOP_TEST(test_workers_and_load)
LOOP_TEST(test_server_restart_reannounce)
LOOP_TEST(test_failover)
LOOP_TEST(test_dropped_events_resync)
LOOP_TEST(test_timeout_and_cancel)
LOOP_TEST(test_watch_local_copy)
LOOP_TEST(test_unregister)
LOOP_TEST(test_bad_options)

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_publish_and_lookup),
		cmocka_unit_test(test_workers_and_load),
		cmocka_unit_test(test_server_restart_reannounce),
		cmocka_unit_test(test_failover),
		cmocka_unit_test(test_dropped_events_resync),
		cmocka_unit_test(test_timeout_and_cancel),
		cmocka_unit_test(test_watch_local_copy),
		cmocka_unit_test(test_unregister),
		cmocka_unit_test(test_bad_options),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
