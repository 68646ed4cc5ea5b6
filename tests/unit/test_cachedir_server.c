/*
 * Unit tests for cachedir/server.c, speaking raw protocol frames over
 * loopback TCP to a server on a private loop (port 0): register / store /
 * lookup, every kind of bad input (each answered by an ERROR, the offender
 * closed when fatal, other clients unaffected), sequence gaps and resync,
 * lease expiry, disconnect and resume, superseded registrations, WATCH
 * snapshots and live events, WORKERS, the admin commands and the metrics.
 */
#include "cachedir/cd_proto.h"
#include "cachedir/cd_server.h"
#include "cachedir/kvf_cachedir.h"
#include "common/kvf_admin.h"
#include "common/kvf_buf.h"
#include "common/kvf_err.h"
#include "common/kvf_frame.h"
#include "common/kvf_log.h"
#include "common/kvf_metrics.h"
#include "common/kvf_net.h"
#include "common/kvf_time.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

struct fx {
	kvf_loop *loop;
	cd_server *srv;
	kvf_metrics *metrics;
	kvf_admin *admin;
	char admin_path[64];
	char addr[32];
};

struct tc { /* a test client */
	int fd;
	kvf_frame_reader *rd;
	kvf_wire_writer w;
	cd_msg m;
};

static void fx_init(struct fx *f, uint64_t heartbeat_ms, uint64_t lease_ms)
{
	kvf_log_set_level(KVF_LOG_ERROR);
	memset(f, 0, sizeof(*f));
	assert_int_equal(kvf_loop_new(&f->loop), 0);
	assert_int_equal(kvf_metrics_new(&f->metrics), 0);
	snprintf(f->admin_path, sizeof(f->admin_path), "/tmp/kvf-cd-test-%d.sock", (int)getpid());
	assert_int_equal(kvf_admin_new(f->loop, f->admin_path, &f->admin), 0);
	cd_server_opts o;
	cd_server_opts_default(&o);
	o.listen = "127.0.0.1:0";
	o.heartbeat_ms = heartbeat_ms;
	o.lease_ms = lease_ms;
	o.warmup_ms = 0;
	o.max_frame_bytes = 1u << 20;
	o.max_keys = 4096;
	o.watch_buffer_bytes = 1u << 20;
	assert_int_equal(cd_server_new(f->loop, &o, f->metrics, f->admin, &f->srv), 0);
	snprintf(f->addr, sizeof(f->addr), "127.0.0.1:%u", cd_server_port(f->srv));
}

static void fx_done(struct fx *f)
{
	cd_server_destroy(f->srv);
	kvf_admin_destroy(f->admin);
	kvf_metrics_destroy(f->metrics);
	kvf_loop_destroy(f->loop);
}

static void pump(struct fx *f, int ms)
{
	uint64_t end = kvf_now_ms() + (uint64_t)ms;
	do
		kvf_loop_run_once(f->loop, 1);
	while (kvf_now_ms() < end);
}

static void tc_open(struct fx *f, struct tc *c)
{
	memset(c, 0, sizeof(*c));
	assert_int_equal(kvf_net_connect_tcp(f->addr, 0, &c->fd), 0);
	kvf_frame_decoder d;
	kvf_frame_decoder_init(&d, 1, 1);
	assert_int_equal(kvf_frame_reader_new(&d, &c->rd), 0);
	kvf_wire_writer_init(&c->w, 0);
	pump(f, 2); /* accept */
}

static void tc_close(struct tc *c)
{
	if (c->fd >= 0)
		close(c->fd);
	kvf_frame_reader_free(c->rd);
	kvf_wire_writer_free(&c->w);
}

/* Sends what was encoded into c->w. */
static void tc_send(struct fx *f, struct tc *c)
{
	assert_int_equal(kvf_wire_writer_error(&c->w), 0);
	size_t off = 0;
	while (off < c->w.len) {
		ssize_t n = send(c->fd, c->w.buf + off, c->w.len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0)
			off += (size_t)n;
		else
			pump(f, 1);
	}
	kvf_wire_writer_reset(&c->w);
	/* Let the server handle it before frames of other connections arrive:
	 * it serves ready sockets in any order. */
	pump(f, 2);
}

static void tc_send_raw(struct tc *c, const void *p, size_t n)
{
	assert_int_equal(send(c->fd, p, n, MSG_NOSIGNAL), (ssize_t)n);
}

/* Next frame into c->m: 0, KVF_E_CLOSED at EOF, KVF_E_TIMEOUT. */
static int tc_recv(struct fx *f, struct tc *c, int timeout_ms)
{
	uint64_t end = kvf_now_ms() + (uint64_t)timeout_ms;
	for (;;) {
		kvf_frame fr;
		int rc = kvf_frame_reader_next(c->rd, &fr);
		if (rc == 0) {
			assert_int_equal(cd_proto_decode(&fr, 0, &c->m), 0);
			return 0;
		}
		assert_int_equal(rc, KVF_E_AGAIN);
		void *buf;
		size_t room;
		assert_int_equal(kvf_frame_reader_space(c->rd, &buf, &room), 0);
		ssize_t n = recv(c->fd, buf, room, MSG_DONTWAIT);
		if (n > 0) {
			kvf_frame_reader_commit(c->rd, (size_t)n);
			continue;
		}
		if (n == 0)
			return KVF_E_CLOSED;
		if (kvf_now_ms() > end)
			return KVF_E_TIMEOUT;
		kvf_loop_run_once(f->loop, 1);
	}
}

/* Receives and checks the type of the next frame. */
static cd_msg *expect(struct fx *f, struct tc *c, uint8_t type)
{
	int rc = tc_recv(f, c, 2000);
	assert_int_equal(rc, 0);
	if (c->m.hdr.type != type)
		fail_msg("expected %s, got %s (%s)", cd_type_name(type), cd_type_name(c->m.hdr.type),
			 c->m.hdr.type == CD_ERROR ? c->m.u.error.msg : "");
	return &c->m;
}

static void expect_silence(struct fx *f, struct tc *c)
{
	assert_int_equal(tc_recv(f, c, 60), KVF_E_TIMEOUT);
}

static kvf_blockkey K(uint64_t i)
{
	kvf_blockkey k = { i * 0x9e3779b97f4a7c15ull + 7, i ^ 0xabcdef };
	return k;
}

static void keys(kvf_blockkey *out, uint64_t from, size_t n)
{
	for (size_t i = 0; i < n; i++)
		out[i] = K(from + i);
}

static void do_register(struct fx *f, struct tc *c, const char *id, const char *model, uint32_t bs, uint64_t epoch,
			int expect_resumed)
{
	cd_register r;
	memset(&r, 0, sizeof(r));
	snprintf(r.worker_id, sizeof(r.worker_id), "%s", id);
	snprintf(r.model, sizeof(r.model), "%s", model);
	r.role = CD_ROLE_DECODE;
	r.block_size = bs;
	r.epoch = epoch;
	r.tiers = 3;
	r.capacity[0] = 1000;
	snprintf(r.http, sizeof(r.http), "127.0.0.1:82%02u", (unsigned)(epoch % 100));
	cd_enc_register(&c->w, 77, &r);
	tc_send(f, c);
	cd_msg *m = expect(f, c, CD_REGISTERED);
	assert_int_equal(m->hdr.request_id, 77);
	assert_int_equal(m->u.registered.resumed, expect_resumed);
}

static void do_stored(struct fx *f, struct tc *c, uint64_t seq, uint8_t tier, uint64_t from, size_t n)
{
	kvf_blockkey k[64];
	assert_true(n <= 64);
	keys(k, from, n);
	cd_enc_stored(&c->w, seq, tier, NULL, k, n);
	tc_send(f, c);
}

/* LOOKUP of K(from..from+n) for model; fills prefix_any per worker id. */
struct lk_res {
	int n;
	char id[8][CD_ID_MAX + 1];
	uint32_t p[8][3];
	uint32_t nmatched;
};

static int do_lookup(struct fx *f, struct tc *c, const char *model, uint64_t from, size_t n, struct lk_res *res)
{
	kvf_blockkey k[64];
	keys(k, from, n);
	cd_enc_lookup(&c->w, 9, model, k, n);
	tc_send(f, c);
	assert_int_equal(tc_recv(f, c, 2000), 0);
	if (c->m.hdr.type == CD_ERROR)
		return c->m.u.error.code;
	assert_int_equal(c->m.hdr.type, CD_LOOKUP_REPLY);
	assert_int_equal(c->m.hdr.request_id, 9);
	cd_lookup_reply *lr = &c->m.u.lookup_reply;
	memset(res, 0, sizeof(*res));
	res->nmatched = lr->nmatched;
	cd_holder h;
	while (cd_lookup_reply_next(lr, &h) && res->n < 8) {
		snprintf(res->id[res->n], sizeof(res->id[0]), "%s", h.worker_id);
		memcpy(res->p[res->n], h.prefix, sizeof(h.prefix));
		res->n++;
	}
	return 0;
}

static void test_register_store_lookup(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f, 1000, 5000);
	struct tc a, b, g;
	tc_open(&f, &a);
	tc_open(&f, &b);
	tc_open(&f, &g);
	do_register(&f, &a, "decode-0", "llama", 16, 1, 0);
	do_register(&f, &b, "decode-1", "llama", 16, 2, 0);
	do_stored(&f, &a, 1, CD_TIER_GPU, 0, 10);
	do_stored(&f, &b, 1, CD_TIER_GPU, 0, 3);
	do_stored(&f, &b, 2, CD_TIER_HOST, 3, 4);
	struct lk_res r;
	assert_int_equal(do_lookup(&f, &g, "llama", 0, 12, &r), 0);
	assert_int_equal(r.n, 2);
	assert_int_equal(r.nmatched, 10);
	assert_string_equal(r.id[0], "decode-0");
	assert_int_equal(r.p[0][0], 10);
	assert_string_equal(r.id[1], "decode-1");
	assert_int_equal(r.p[1][0], 3);
	assert_int_equal(r.p[1][1], 7);
	assert_int_equal(r.p[1][2], 7);

	/* Unknown model: a clear, non-fatal error. */
	assert_int_equal(do_lookup(&f, &g, "nope", 0, 3, &r), KVF_E_NOTFOUND);
	assert_non_null(strstr(g.m.u.error.msg, "unknown model 'nope'"));
	assert_int_equal(g.m.u.error.fatal, 0);
	cd_enc_empty(&g.w, CD_PING, 5);
	tc_send(&f, &g);
	assert_int_equal(expect(&f, &g, CD_PONG)->hdr.request_id, 5);

	/* REMOVED then CLEARED. */
	kvf_blockkey k[2] = { K(5), K(6) };
	cd_enc_removed(&a.w, 2, CD_TIER_ALL, k, 1);
	tc_send(&f, &a);
	assert_int_equal(do_lookup(&f, &g, "llama", 0, 12, &r), 0);
	assert_string_equal(r.id[0], "decode-1");
	assert_int_equal(r.p[1][2], 5);
	cd_enc_seqmsg(&b.w, CD_CLEARED, 0, 3);
	tc_send(&f, &b);
	assert_int_equal(do_lookup(&f, &g, "llama", 0, 12, &r), 0);
	assert_int_equal(r.n, 1);

	/* Heartbeat: ack with the server's view. */
	cd_heartbeat hb = { .seq = 2, .load = { .waiting = 3, .running = 4, .kv_used = 10, .kv_total = 100 } };
	cd_enc_heartbeat(&a.w, 11, &hb);
	tc_send(&f, &a);
	cd_msg *m = expect(&f, &a, CD_HEARTBEAT_ACK);
	assert_int_equal(m->u.hb_ack.last_seq, 2);
	assert_int_equal(m->u.hb_ack.blocks, 9);

	/* WORKERS lists both with load. */
	cd_enc_workers(&g.w, 12, "llama");
	tc_send(&f, &g);
	m = expect(&f, &g, CD_WORKERS_REPLY);
	assert_int_equal(m->u.workers_reply.n, 2);
	cd_worker_info wi;
	int seen = 0;
	while (cd_workers_reply_next(&m->u.workers_reply, &wi)) {
		if (!strcmp(wi.worker_id, "decode-0")) {
			assert_int_equal(wi.load.waiting, 3);
			assert_int_equal(wi.load.running, 4);
			assert_int_equal(wi.blocks[0], 9);
			assert_string_equal(wi.http, "127.0.0.1:8201");
			seen++;
		} else {
			assert_string_equal(wi.worker_id, "decode-1");
			assert_int_equal(wi.blocks[0] + wi.blocks[1], 0);
			seen++;
		}
	}
	assert_int_equal(seen, 2);

	/* Block size mismatch for the model: refused, connection stays. */
	struct tc c;
	tc_open(&f, &c);
	cd_register rr;
	memset(&rr, 0, sizeof(rr));
	strcpy(rr.worker_id, "decode-9");
	strcpy(rr.model, "llama");
	rr.role = 2;
	rr.tiers = 1;
	rr.block_size = 32;
	cd_enc_register(&c.w, 3, &rr);
	tc_send(&f, &c);
	m = expect(&f, &c, CD_ERROR);
	assert_int_equal(m->u.error.code, KVF_E_INVAL);
	assert_int_equal(m->u.error.fatal, 0);
	assert_non_null(strstr(m->u.error.msg, "block size 16"));
	cd_enc_empty(&c.w, CD_PING, 6);
	tc_send(&f, &c);
	expect(&f, &c, CD_PONG);

	tc_close(&a);
	tc_close(&b);
	tc_close(&c);
	tc_close(&g);
	fx_done(&f);
}

/* Bad input on one connection: ERROR (+ close when fatal); others unaffected. */
static void bad_input_case(struct fx *f, struct tc *ok, const void *bytes, size_t n, int code, int fatal)
{
	struct tc x;
	tc_open(f, &x);
	tc_send_raw(&x, bytes, n);
	cd_msg *m = expect(f, &x, CD_ERROR);
	assert_int_equal(m->u.error.code, code);
	assert_int_equal(m->u.error.fatal, fatal);
	if (fatal)
		assert_int_equal(tc_recv(f, &x, 2000), KVF_E_CLOSED);
	else {
		cd_enc_empty(&x.w, CD_PING, 1);
		tc_send(f, &x);
		expect(f, &x, CD_PONG);
	}
	tc_close(&x);
	struct lk_res r;
	assert_int_equal(do_lookup(f, ok, "m", 0, 4, &r), 0);
	assert_int_equal(r.n, 1);
}

static void test_bad_input(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f, 1000, 5000);
	struct tc w, g;
	tc_open(&f, &w);
	tc_open(&f, &g);
	do_register(&f, &w, "w", "m", 16, 1, 0);
	do_stored(&f, &w, 1, 0, 0, 4);

	/* Not our protocol at all (an HTTP client). */
	bad_input_case(&f, &g, "GET / HTTP/1.1\r\n\r\n", 18, KVF_E_PROTO, 1);
	/* Version 2. */
	uint8_t v2[16] = { 'K', 'F', 2, CD_PING, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0 };
	bad_input_case(&f, &g, v2, 16, KVF_E_VERSION, 1);
	/* Over max_frame (1 MiB here). */
	uint8_t big[16] = { 'K', 'F', 1, CD_LOOKUP, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0x10, 0 };
	bad_input_case(&f, &g, big, 16, KVF_E_TOOBIG, 1);
	/* Nonzero flags. */
	uint8_t fl[16] = { 'K', 'F', 1, CD_PING, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0 };
	bad_input_case(&f, &g, fl, 16, KVF_E_PROTO, 1);
	/* Truncated payload inside a well-framed LOOKUP. */
	uint8_t tr[20] = { 'K', 'F', 1, CD_LOOKUP, 0, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 9, 0, 0, 0 };
	bad_input_case(&f, &g, tr, 20, KVF_E_PROTO, 1);
	/* Unknown type: skipped with an error, connection kept. */
	uint8_t un[16] = { 'K', 'F', 1, 0x7f, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0 };
	bad_input_case(&f, &g, un, 16, KVF_E_UNSUPPORTED, 0);
	/* An event before REGISTER. */
	kvf_wire_writer ww;
	kvf_wire_writer_init(&ww, 0);
	kvf_blockkey k = K(1);
	cd_enc_stored(&ww, 1, 0, NULL, &k, 1);
	bad_input_case(&f, &g, ww.buf, ww.len, KVF_E_STATE, 1);
	kvf_wire_writer_reset(&ww);
	/* Too many keys in one LOOKUP (limit 4096 here): refused, connection kept. */
	static kvf_blockkey many[5000];
	cd_enc_lookup(&ww, 1, "m", many, 5000);
	bad_input_case(&f, &g, ww.buf, ww.len, KVF_E_TOOBIG, 0);
	kvf_wire_writer_reset(&ww);
	/* A server-to-client type. */
	cd_enc_empty(&ww, CD_PONG, 1);
	bad_input_case(&f, &g, ww.buf, ww.len, KVF_E_PROTO, 1);
	kvf_wire_writer_free(&ww);

	/* Garbage after a valid frame: the valid one is answered first. */
	struct tc x;
	tc_open(&f, &x);
	cd_enc_empty(&x.w, CD_PING, 42);
	kvf_wire_put_bytes(&x.w, "XXXXXXXXXXXXXXXX", 16);
	tc_send(&f, &x);
	assert_int_equal(expect(&f, &x, CD_PONG)->hdr.request_id, 42);
	expect(&f, &x, CD_ERROR);
	assert_int_equal(tc_recv(&f, &x, 2000), KVF_E_CLOSED);
	tc_close(&x);

	/* The worker was never disturbed. */
	do_stored(&f, &w, 2, 0, 4, 4);
	struct lk_res r;
	assert_int_equal(do_lookup(&f, &g, "m", 0, 8, &r), 0);
	assert_int_equal(r.p[0][2], 8);
	assert_int_equal(cd_server_clients(f.srv), 2);
	tc_close(&w);
	tc_close(&g);
	fx_done(&f);
}

static void test_gap_resync(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f, 1000, 5000);
	struct tc w, g;
	tc_open(&f, &w);
	tc_open(&f, &g);
	do_register(&f, &w, "w", "m", 16, 1, 0);
	do_stored(&f, &w, 1, 0, 0, 4);
	do_stored(&f, &w, 3, 0, 4, 4); /* seq 2 lost */
	cd_msg *m = expect(&f, &w, CD_RESYNC);
	assert_int_equal(m->u.resync.expected_seq, 2);
	assert_int_equal(m->u.resync.got_seq, 3);
	/* Events are ignored until SYNC_BEGIN. */
	do_stored(&f, &w, 4, 0, 8, 4);
	struct lk_res r;
	assert_int_equal(do_lookup(&f, &g, "m", 0, 12, &r), 0);
	assert_int_equal(r.p[0][2], 4);
	/* A heartbeat while waiting repeats the request. */
	cd_heartbeat hb = { .seq = 4 };
	cd_enc_heartbeat(&w.w, 0, &hb);
	tc_send(&f, &w);
	expect(&f, &w, CD_RESYNC);
	expect(&f, &w, CD_HEARTBEAT_ACK);
	/* The re-announce lists K2..K9: K0, K1 are swept. */
	cd_enc_seqmsg(&w.w, CD_SYNC_BEGIN, 0, 10);
	tc_send(&f, &w);
	do_stored(&f, &w, 11, 0, 2, 8);
	cd_enc_seqmsg(&w.w, CD_SYNC_END, 13, 12);
	tc_send(&f, &w);
	m = expect(&f, &w, CD_SYNCED);
	assert_int_equal(m->hdr.request_id, 13);
	assert_int_equal(m->u.synced.seq, 12);
	assert_int_equal(m->u.synced.blocks, 8);
	assert_int_equal(m->u.synced.swept, 2);
	assert_int_equal(do_lookup(&f, &g, "m", 0, 12, &r), 0);
	assert_int_equal(r.n, 0);
	assert_int_equal(do_lookup(&f, &g, "m", 2, 10, &r), 0);
	assert_int_equal(r.p[0][2], 8);
	/* Tail loss seen by a heartbeat: seq 13 never arrived. */
	hb.seq = 13;
	cd_enc_heartbeat(&w.w, 0, &hb);
	tc_send(&f, &w);
	m = expect(&f, &w, CD_RESYNC);
	assert_int_equal(m->u.resync.expected_seq, 13);
	expect(&f, &w, CD_HEARTBEAT_ACK);

	kvf_buf out = KVF_BUF_INIT;
	kvf_metrics_render_prometheus(f.metrics, &out);
	assert_non_null(strstr(out.data, "kvf_cachedir_resyncs_total{reason=\"gap\"} 1"));
	assert_non_null(strstr(out.data, "kvf_cachedir_resyncs_total{reason=\"heartbeat\"} 1"));
	assert_non_null(strstr(out.data, "kvf_cachedir_sync_swept_total 2"));
	kvf_buf_free(&out);
	tc_close(&w);
	tc_close(&g);
	fx_done(&f);
}

static void test_lease_expiry_and_resume(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f, 20, 150);
	struct tc a, b, g;
	tc_open(&f, &a);
	tc_open(&f, &b);
	tc_open(&f, &g);
	do_register(&f, &a, "alive", "m", 16, 1, 0);
	do_register(&f, &b, "silent", "m", 16, 2, 0);
	do_stored(&f, &a, 1, 0, 0, 4);
	do_stored(&f, &b, 1, 0, 0, 6);
	/* a heartbeats, b stays silent with its connection open. */
	for (int i = 0; i < 15; i++) {
		cd_heartbeat hb = { .seq = 1 };
		cd_enc_heartbeat(&a.w, 0, &hb);
		tc_send(&f, &a);
		expect(&f, &a, CD_HEARTBEAT_ACK);
		pump(&f, 20);
	}
	struct lk_res r;
	assert_int_equal(do_lookup(&f, &g, "m", 0, 6, &r), 0);
	assert_int_equal(r.n, 1);
	assert_string_equal(r.id[0], "alive");
	/* b was told and closed. */
	cd_msg *m = expect(&f, &b, CD_ERROR);
	assert_int_equal(m->u.error.code, KVF_E_TIMEOUT);
	assert_int_equal(tc_recv(&f, &b, 1000), KVF_E_CLOSED);
	kvf_buf out = KVF_BUF_INIT;
	kvf_metrics_render_prometheus(f.metrics, &out);
	assert_non_null(strstr(out.data, "kvf_cachedir_lease_expiries_total 1"));
	kvf_buf_free(&out);

	/* a's connection drops: entries kept but not listed, until it comes back. */
	tc_close(&a);
	pump(&f, 5);
	assert_int_equal(do_lookup(&f, &g, "m", 0, 6, &r), 0);
	assert_int_equal(r.n, 0);
	tc_open(&f, &a);
	do_register(&f, &a, "alive", "m", 16, 1, 1); /* same epoch: resumed */
	assert_int_equal(do_lookup(&f, &g, "m", 0, 6, &r), 0);
	assert_int_equal(r.n, 1);
	assert_int_equal(r.p[0][2], 4);
	/* Registering from a second connection supersedes the first. */
	struct tc a2;
	tc_open(&f, &a2);
	do_register(&f, &a2, "alive", "m", 16, 7, 0); /* new epoch: old entries dropped */
	m = expect(&f, &a, CD_ERROR);
	assert_int_equal(m->u.error.code, KVF_E_EXISTS);
	assert_int_equal(tc_recv(&f, &a, 1000), KVF_E_CLOSED);
	assert_int_equal(do_lookup(&f, &g, "m", 0, 6, &r), 0);
	assert_int_equal(r.n, 0);
	tc_close(&a);
	tc_close(&a2);
	tc_close(&b);
	tc_close(&g);
	fx_done(&f);
}

struct wstate {
	uint64_t seq;
	int snap_begin, snap_end, workers, gone;
	size_t stored, removed;
};

/* Reads watch events until silence; checks seq continuity. */
static void drain_watch(struct fx *f, struct tc *c, struct wstate *ws)
{
	while (tc_recv(f, c, 80) == 0) {
		assert_int_equal(c->m.hdr.type, CD_WATCH_EVENT);
		assert_int_equal(c->m.hdr.request_id, 55);
		cd_watch_event *e = &c->m.u.ev;
		assert_int_equal(e->seq, ws->seq + 1);
		ws->seq = e->seq;
		switch (e->kind) {
		case CD_EV_SNAPSHOT_BEGIN: ws->snap_begin++; break;
		case CD_EV_SNAPSHOT_END: ws->snap_end++; break;
		case CD_EV_WORKER: ws->workers++; break;
		case CD_EV_WORKER_GONE: ws->gone++; break;
		case CD_EV_STORED: ws->stored += e->u.blocks.keys.n; break;
		case CD_EV_REMOVED: ws->removed += e->u.blocks.keys.n; break;
		default: break;
		}
	}
}

static void test_watch(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f, 1000, 5000);
	struct tc a, b, wt;
	tc_open(&f, &a);
	tc_open(&f, &b);
	tc_open(&f, &wt);
	do_register(&f, &a, "a", "m", 16, 1, 0);
	do_register(&f, &b, "b", "other", 16, 1, 0);
	do_stored(&f, &a, 1, 0, 0, 10);
	do_stored(&f, &a, 2, 1, 0, 5);
	do_stored(&f, &b, 1, 0, 100, 7);

	cd_enc_watch(&wt.w, 55, CD_WATCH_WORKERS | CD_WATCH_BLOCKS, "m");
	tc_send(&f, &wt);
	struct wstate ws = { 0 };
	drain_watch(&f, &wt, &ws);
	assert_int_equal(ws.snap_begin, 1);
	assert_int_equal(ws.snap_end, 1);
	assert_int_equal(ws.workers, 1); /* model filter: only a */
	assert_int_equal(ws.stored, 15); /* 10 gpu + 5 host entries */

	/* Live: stored, removed, a sync sweep, then a's departure. */
	do_stored(&f, &a, 3, 0, 10, 3);
	kvf_blockkey k = K(0);
	cd_enc_removed(&a.w, 4, CD_TIER_ALL, &k, 1);
	tc_send(&f, &a);
	do_stored(&f, &b, 2, 0, 200, 3); /* other model: not seen */
	cd_enc_seqmsg(&a.w, CD_SYNC_BEGIN, 0, 5);
	tc_send(&f, &a);
	do_stored(&f, &a, 6, 0, 1, 4);
	cd_enc_seqmsg(&a.w, CD_SYNC_END, 0, 7);
	tc_send(&f, &a);
	expect(&f, &a, CD_SYNCED);
	drain_watch(&f, &wt, &ws);
	assert_int_equal(ws.stored, 15 + 3 + 4);
	/* 1 removed + swept: K5..K12 = 8 */
	assert_int_equal(ws.removed, 1 + 8);
	cd_enc_empty(&a.w, CD_UNREGISTER, 8);
	tc_send(&f, &a);
	expect(&f, &a, CD_OK);
	drain_watch(&f, &wt, &ws);
	assert_int_equal(ws.gone, 1);

	/* UNWATCH: nothing more. */
	cd_enc_empty(&wt.w, CD_UNWATCH, 56);
	tc_send(&f, &wt);
	expect(&f, &wt, CD_OK);
	do_stored(&f, &b, 3, 0, 300, 3);
	expect_silence(&f, &wt);
	tc_close(&a);
	tc_close(&b);
	tc_close(&wt);
	fx_done(&f);
}

/* A watcher that does not read falls behind, loses events (seq jumps) and
 * gets a fresh snapshot once it reads again. */
static void test_watch_overflow(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f, 1000, 5000);
	struct tc a, wt;
	tc_open(&f, &a);
	/* The watcher with a small receive buffer, set before connecting so
	 * the window stays small (and window updates prompt). */
	memset(&wt, 0, sizeof(wt));
	wt.fd = socket(AF_INET, SOCK_STREAM, 0);
	int rcv = 65536;
	setsockopt(wt.fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(cd_server_port(f.srv)),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	assert_int_equal(connect(wt.fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	kvf_frame_decoder d;
	kvf_frame_decoder_init(&d, 1, 1);
	assert_int_equal(kvf_frame_reader_new(&d, &wt.rd), 0);
	kvf_wire_writer_init(&wt.w, 0);
	pump(&f, 2);
	do_register(&f, &a, "a", "m", 16, 1, 0);
	cd_enc_watch(&wt.w, 55, CD_WATCH_BLOCKS, "");
	tc_send(&f, &wt);
	pump(&f, 10);
	/* 10 MiB of events against a 1 MiB watch buffer (plus what the
	 * kernel buffers), without reading. */
	static kvf_blockkey k[4096];
	for (uint64_t s = 1; s <= 160; s++) {
		for (int i = 0; i < 4096; i++)
			k[i] = K(s * 10000 + (uint64_t)i);
		cd_enc_stored(&a.w, s, 0, NULL, k, 4096);
		tc_send(&f, &a);
		pump(&f, 1);
	}
	pump(&f, 20);
	uint64_t seq = 0;
	int jumped = 0, snaps = 0, overflow_snap = 0;
	size_t total_after = 0;
	while (tc_recv(&f, &wt, 300) == 0) {
		cd_watch_event *e = &wt.m.u.ev;
		if (e->seq != seq + 1)
			jumped = 1;
		seq = e->seq;
		if (e->kind == CD_EV_SNAPSHOT_BEGIN) {
			snaps++;
			total_after = 0;
			if (e->u.snap.reason == CD_SNAP_OVERFLOW)
				overflow_snap = 1;
		} else if (e->kind == CD_EV_STORED) {
			total_after += e->u.blocks.keys.n;
		}
	}
	assert_true(jumped);
	assert_true(overflow_snap);
	assert_int_equal(snaps, 2);
	/* The last snapshot holds everything. */
	assert_int_equal(total_after, 160 * 4096);
	tc_close(&a);
	tc_close(&wt);
	fx_done(&f);
}

static void test_admin_and_metrics(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f, 1000, 5000);
	struct tc a, g;
	tc_open(&f, &a);
	tc_open(&f, &g);
	do_register(&f, &a, "decode-0", "llama", 16, 1, 0);
	do_stored(&f, &a, 1, 0, 0, 10);
	do_stored(&f, &a, 2, 2, 0, 3);
	struct lk_res r;
	assert_int_equal(do_lookup(&f, &g, "llama", 0, 12, &r), 0);

	kvf_buf out = KVF_BUF_INIT;
	assert_int_equal(kvf_admin_exec(f.admin, "show workers", &out), 0);
	assert_non_null(strstr(out.data, "decode-0"));
	assert_non_null(strstr(out.data, "llama"));
	assert_non_null(strstr(out.data, "active"));
	kvf_buf_reset(&out);
	assert_int_equal(kvf_admin_exec(f.admin, "show workers json", &out), 0);
	assert_non_null(strstr(out.data, "\"blocks\":{\"gpu\":10,\"host\":0,\"disk\":3}"));
	kvf_buf_reset(&out);
	assert_int_equal(kvf_admin_exec(f.admin, "show blocks", &out), 0);
	assert_non_null(strstr(out.data, "keys 10\n"));
	assert_non_null(strstr(out.data, "holders 10 (gpu 10, host 0, disk 3)"));
	kvf_buf_reset(&out);
	assert_int_equal(kvf_admin_exec(f.admin, "show blocks json", &out), 0);
	assert_non_null(strstr(out.data, "{\"worker\":\"decode-0\",\"held\":10,\"gpu\":10,\"host\":0,\"disk\":3}"));
	kvf_buf_reset(&out);
	assert_int_equal(kvf_admin_exec(f.admin, "show clients", &out), 0);
	assert_non_null(strstr(out.data, "worker   decode-0"));
	assert_non_null(strstr(out.data, "reader"));
	kvf_buf_reset(&out);
	assert_int_equal(kvf_admin_exec(f.admin, "show clients json", &out), 0);
	assert_non_null(strstr(out.data, "\"kind\":\"reader\""));
	assert_non_null(strstr(out.data, "\"lookups\":1"));
	kvf_buf_reset(&out);
	kvf_metrics_render_prometheus(f.metrics, &out);
	assert_non_null(strstr(out.data, "kvf_cachedir_lookups_total 1"));
	assert_non_null(strstr(out.data, "kvf_cachedir_lookup_keys_total 12"));
	assert_non_null(strstr(out.data, "kvf_cachedir_blocks 10"));
	assert_non_null(strstr(out.data, "kvf_cachedir_holders{tier=\"disk\"} 3"));
	assert_non_null(strstr(out.data, "kvf_cachedir_workers{state=\"active\"} 1"));
	assert_non_null(strstr(out.data, "kvf_cachedir_events_total{type=\"stored\"} 2"));
	assert_non_null(strstr(out.data, "kvf_cachedir_event_keys_total{type=\"stored\"} 13"));
	assert_non_null(strstr(out.data, "kvf_cachedir_lookup_seconds_count 1"));
	assert_non_null(strstr(out.data, "kvf_cachedir_clients{kind=\"worker\"} 1"));
	assert_non_null(strstr(out.data, "kvf_cachedir_index_bytes{part=\"table\"}"));
	kvf_buf_free(&out);
	tc_close(&a);
	tc_close(&g);
	fx_done(&f);
}

static void test_config_section(void **state)
{
	(void)state;
	static cd_daemon_cfg s;
	kvf_config *cfg;
	assert_int_equal(kvf_config_new(&cfg), 0);
	assert_int_equal(kvf_config_add(cfg, &kvf_cachedir_section, &s), 0);
	assert_string_equal(s.srv.listen, "0.0.0.0:7700");
	assert_string_equal(s.d.http_listen, "0.0.0.0:7701");
	assert_int_equal(s.srv.heartbeat_ms, 1000);
	assert_int_equal(s.srv.lease_ms, 5000);
	assert_int_equal(s.srv.max_keys, 65536);
	assert_int_equal(s.srv.max_frame_bytes, 4u << 20);
	assert_int_equal(kvf_config_set(cfg, "cachedir.lease=3s", "-o"), 0);
	assert_int_equal(s.srv.lease_ms, 3000);
	assert_int_equal(kvf_config_validate(cfg), 0);
	assert_int_equal(kvf_config_set(cfg, "cachedir.heartbeat_interval=2s", "-o"), 0);
	assert_int_equal(kvf_config_validate(cfg), KVF_E_CONFIG);
	assert_non_null(strstr(kvf_errmsg(), "twice"));
	assert_int_equal(kvf_config_set(cfg, "cachedir.heartbeat_interval=1s", "-o"), 0);
	assert_int_equal(kvf_config_set(cfg, "cachedir.max_keys_per_message=1000000", "-o"), 0);
	assert_int_equal(kvf_config_validate(cfg), KVF_E_CONFIG);
	assert_non_null(strstr(kvf_errmsg(), "max_frame"));
	kvf_config_destroy(cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_register_store_lookup),
		cmocka_unit_test(test_bad_input),
		cmocka_unit_test(test_gap_resync),
		cmocka_unit_test(test_lease_expiry_and_resume),
		cmocka_unit_test(test_watch),
		cmocka_unit_test(test_watch_overflow),
		cmocka_unit_test(test_admin_and_metrics),
		cmocka_unit_test(test_config_section),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
