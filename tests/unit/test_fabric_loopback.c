/*
 * The running fabric inside one process: two kvf_fabric instances talking
 * over loopback (tcp, shm, ofi when tcp;ofi_rxm is installed), completions
 * consumed from a kvf_loop through the cq's eventfd, notifications, the
 * API's refusals (ranges, overlaps, full tables and queues, busy regions),
 * shm revocation on deregistration, a hung peer, metrics and the admin
 * views.
 *
 * Linked against the normal libraries, not the -ut twins: the fabric's own
 * thread allocates while the test thread does, and cmocka's test allocator
 * is single-threaded. The two-process conformance suite covers the same
 * API across processes (tests/integration/fabric_conformance.sh).
 */
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/kvf_admin.h"
#include "common/kvf_err.h"
#include "common/kvf_log.h"
#include "common/kvf_loop.h"
#include "common/kvf_metrics.h"
#include "common/kvf_net.h"
#include "common/kvf_time.h"
#include "fabric/fabric_int.h"
#include "fabric/kvf_fabric.h"

#include <cmocka.h>

#define RLEN (4u << 20)
#define BS (64u << 10)

struct pair {
	kvf_fabric *a, *b;  /* a: target, b: initiator */
	uint8_t *ra, *rb;   /* their memory */
	kvf_fabric_mr *ma, *mb;
	kvf_fabric_cq *cq;  /* on b */
	kvf_fabric_rdesc *d; /* a's blocks of BS bytes */
	int memfd;
};

static kvf_fabric *open_one(int transport, uint64_t timeout_ms)
{
	kvf_fabric_opts o;
	kvf_fabric_opts_init(&o);
	o.transport = transport;
	o.timeout_ms = timeout_ms;
	o.listen = "127.0.0.1:0";
	if (transport == KVF_FABRIC_OFI)
		o.ofi_provider = "tcp;ofi_rxm";
	kvf_fabric *f = NULL;
	if (kvf_fabric_open(&o, &f) < 0)
		return NULL;
	return f;
}

static uint8_t *mem(int memfd, size_t len)
{
	void *p;
	if (memfd) {
		assert_int_equal(kvf_fabric_mem_alloc(len, &p), 0);
	} else {
		p = aligned_alloc(4096, len);
		assert_non_null(p);
	}
	return p;
}

static void mem_free(int memfd, void *p)
{
	if (memfd)
		kvf_fabric_mem_free(p);
	else
		free(p);
}

static int pair_open(struct pair *p, int transport, int memfd)
{
	memset(p, 0, sizeof(*p));
	p->memfd = memfd;
	p->a = open_one(transport, 2000);
	if (!p->a)
		return -1;
	p->b = open_one(transport, 2000);
	assert_non_null(p->b);
	p->ra = mem(memfd, RLEN);
	p->rb = mem(memfd, RLEN);
	for (size_t i = 0; i < RLEN; i++)
		p->ra[i] = (uint8_t)(i * 131 + 7);
	memset(p->rb, 0, RLEN);
	assert_int_equal(kvf_fabric_reg(p->a, p->ra, RLEN, KVF_FABRIC_MEM_HOST, &p->ma), 0);
	assert_int_equal(kvf_fabric_reg(p->b, p->rb, RLEN, KVF_FABRIC_MEM_HOST, &p->mb), 0);
	assert_int_equal(kvf_fabric_cq_new(p->b, 0, &p->cq), 0);
	kvf_fabric_range rg[RLEN / BS];
	for (uint32_t i = 0; i < RLEN / BS; i++)
		rg[i] = (kvf_fabric_range){ (uint64_t)i * BS, BS };
	kvf_buf b = KVF_BUF_INIT;
	assert_int_equal(kvf_fabric_export(p->a, p->ma, rg, RLEN / BS, &b), 0);
	assert_int_equal(kvf_fabric_desc_parse(b.data, b.len, &p->d), 0);
	kvf_buf_free(&b);
	return 0;
}

static void pair_close(struct pair *p)
{
	assert_int_equal(kvf_fabric_cq_destroy(p->cq), 0);
	kvf_fabric_desc_free(p->d);
	kvf_fabric_close(p->b);
	kvf_fabric_close(p->a);
	mem_free(p->memfd, p->ra);
	mem_free(p->memfd, p->rb);
}

/* Waits for one completion of kind on cq. */
static int wait_comp(kvf_fabric_cq *cq, int kind, kvf_fabric_comp *c, int timeout_ms)
{
	uint64_t end = kvf_now_ms() + (uint64_t)timeout_ms;
	while (kvf_now_ms() < end) {
		while (kvf_fabric_poll(cq, c, 1) == 1)
			if (c->kind == kind)
				return 0;
		struct pollfd pfd = { kvf_fabric_cq_fd(cq), POLLIN, 0 };
		poll(&pfd, 1, 50);
	}
	return -1;
}

/* ---- completions through a kvf_loop ---- */

struct loopctx {
	kvf_fabric_cq *cq;
	int got;
	kvf_fabric_comp c;
};

static void on_cq_fd(kvf_loop *loop, int fd, unsigned ev, void *ud)
{
	struct loopctx *x = ud;
	kvf_fabric_comp c;
	while (kvf_fabric_poll(x->cq, &c, 1) == 1) {
		x->c = c;
		x->got++;
	}
	kvf_loop_stop(loop);
}

static void read_write(int transport, int memfd, int expect_transport)
{
	struct pair p;
	if (pair_open(&p, transport, memfd) < 0) {
		print_message("SKIP: transport %d could not open here: %s\n", transport, kvf_errmsg());
		skip();
		return;
	}
	kvf_loop *loop;
	assert_int_equal(kvf_loop_new(&loop), 0);
	struct loopctx x = { p.cq, 0, { 0 } };
	assert_int_equal(kvf_loop_add_fd(loop, kvf_fabric_cq_fd(p.cq), KVF_EV_READ, on_cq_fd, &x), 0);

	/* optional warm-up connect: the peer appears in show peers */
	assert_int_equal(kvf_fabric_connect(p.b, p.d), 0);
	kvf_buf sp = KVF_BUF_INIT;
	assert_int_equal(kvf_fabric_show_peers(p.b, 0, &sp), 0);
	assert_non_null(strstr(sp.data, kvf_fabric_node_name(p.a)));
	kvf_buf_free(&sp);

	/* READ blocks 5, 2, 60 into rb[0..3*BS) */
	kvf_fabric_op ops[3] = { { p.rb, 5, 0, BS }, { p.rb + BS, 2, 0, BS }, { p.rb + 2 * BS, 60, 100, BS - 100 } };
	kvf_fabric_req req;
	assert_int_equal(kvf_fabric_post(p.cq, KVF_FABRIC_READ, p.d, ops, 3, 42, &req), 0);
	for (int i = 0; i < 100 && !x.got; i++)
		kvf_loop_run_once(loop, 100);
	assert_int_equal(x.got, 1);
	assert_int_equal(x.c.kind, KVF_FABRIC_COMP_XFER);
	assert_int_equal(x.c.status, 0);
	assert_true(x.c.cookie == 42 && x.c.req == req);
	assert_true(x.c.bytes == 3 * BS - 100);
	assert_int_equal(x.c.transport, expect_transport);
	assert_memory_equal(p.rb, p.ra + 5 * BS, BS);
	assert_memory_equal(p.rb + BS, p.ra + 2 * BS, BS);
	assert_memory_equal(p.rb + 2 * BS, p.ra + 60 * BS + 100, BS - 100);
	assert_int_equal(kvf_fabric_req_status(p.cq, req, NULL), KVF_E_NOTFOUND);

	/* WRITE two blocks, check a's memory */
	for (size_t i = 0; i < 2 * BS; i++)
		p.rb[i] = (uint8_t)(i ^ 0x5a);
	kvf_fabric_op w[2] = { { p.rb, 10, 0, BS }, { p.rb + BS, 11, 0, BS } };
	x.got = 0;
	assert_int_equal(kvf_fabric_post(p.cq, KVF_FABRIC_WRITE, p.d, w, 2, 43, &req), 0);
	for (int i = 0; i < 100 && !x.got; i++)
		kvf_loop_run_once(loop, 100);
	assert_int_equal(x.got, 1);
	assert_int_equal(x.c.status, 0);
	assert_memory_equal(p.ra + 10 * BS, p.rb, 2 * BS);

	kvf_loop_del_fd(loop, kvf_fabric_cq_fd(p.cq));
	kvf_loop_destroy(loop);
	pair_close(&p);
}

static void test_tcp_loop(void **state)
{
	read_write(KVF_FABRIC_TCP, 0, KVF_FABRIC_TCP);
}

static void test_shm_memfd(void **state)
{
	read_write(KVF_FABRIC_SHM, 1, KVF_FABRIC_SHM);
}

static void test_shm_process_vm(void **state)
{
	read_write(KVF_FABRIC_SHM, 0, KVF_FABRIC_SHM);
}

static void test_auto_picks_shm(void **state)
{
	read_write(KVF_FABRIC_AUTO, 1, KVF_FABRIC_SHM);
}

static void test_ofi_loop(void **state)
{
	read_write(KVF_FABRIC_OFI, 0, KVF_FABRIC_OFI);
}

/* ---- notifications ---- */

static void test_notify_after_write(void **state)
{
	struct pair p;
	assert_int_equal(pair_open(&p, KVF_FABRIC_TCP, 0), 0);
	kvf_fabric_cq *ncq;
	assert_int_equal(kvf_fabric_cq_new(p.a, KVF_FABRIC_CQ_NOTIFS, &ncq), 0);
	memset(p.rb, 0xcd, 8 * BS);
	kvf_fabric_op w[8];
	for (int i = 0; i < 8; i++)
		w[i] = (kvf_fabric_op){ p.rb + (size_t)i * BS, (uint32_t)(20 + i), 0, BS };
	assert_int_equal(kvf_fabric_post(p.cq, KVF_FABRIC_WRITE, p.d, w, 8, 1, NULL), 0);
	assert_int_equal(kvf_fabric_notify(p.cq, p.d, "blocks 20..27 ready", 19, 2, NULL), 0);
	kvf_fabric_comp c;
	assert_int_equal(wait_comp(ncq, KVF_FABRIC_COMP_NOTIF, &c, 5000), 0);
	/* the data it follows has landed */
	for (size_t i = 0; i < 8 * BS; i++)
		if (p.ra[20 * BS + i] != 0xcd)
			fail_msg("byte %zu of the written blocks is not there yet", i);
	assert_int_equal(c.notif_len, 19);
	assert_memory_equal(c.notif, "blocks 20..27 ready", 19);
	uint8_t bnode[16];
	kvf_fabric_node_id(p.b, bnode);
	assert_memory_equal(c.peer_node, bnode, 16);
	assert_string_equal(c.peer, kvf_fabric_node_name(p.b));
	/* both requests complete on b */
	int done = 0;
	for (int k = 0; k < 2; k++)
		if (wait_comp(p.cq, KVF_FABRIC_COMP_XFER, &c, 5000) == 0 && c.status == 0)
			done++;
	assert_int_equal(done, 2);
	assert_int_equal(kvf_fabric_notify(p.cq, p.d, "x", KVF_FABRIC_NOTIF_MAX + 1, 3, NULL), KVF_E_INVAL);
	assert_int_equal(kvf_fabric_cq_destroy(ncq), 0);
	pair_close(&p);
}

/* ---- refusals ---- */

static void test_api_refusals(void **state)
{
	kvf_fabric_opts o;
	kvf_fabric_opts_init(&o);
	o.listen = "127.0.0.1:0";
	o.max_regions = 2;
	o.cq_depth = 2;
	o.transport = KVF_FABRIC_TCP;
	kvf_fabric *f;
	assert_int_equal(kvf_fabric_open(&o, &f), 0);
	uint8_t *m = aligned_alloc(4096, 3 * 65536);
	memset(m, 0, 3 * 65536);
	kvf_fabric_mr *r1, *r2, *r3;
	assert_int_equal(kvf_fabric_reg(f, m, 65536, KVF_FABRIC_MEM_HOST, &r1), 0);
	assert_int_equal(kvf_fabric_reg(f, m + 100, 10, KVF_FABRIC_MEM_HOST, &r3), KVF_E_EXISTS);
	assert_int_equal(kvf_fabric_reg(f, m + 65536, 65536, KVF_FABRIC_MEM_HOST, &r2), 0);
	assert_int_equal(kvf_fabric_reg(f, m + 131072, 65536, KVF_FABRIC_MEM_HOST, &r3), KVF_E_FULL);
	assert_int_equal(kvf_fabric_reg(f, NULL, 10, KVF_FABRIC_MEM_HOST, &r3), KVF_E_INVAL);
	assert_ptr_equal(kvf_fabric_mr_addr(r2), m + 65536);
	assert_int_equal(kvf_fabric_mr_len(r2), 65536);

	kvf_fabric_range bad = { 65000, 1000 };
	kvf_buf b = KVF_BUF_INIT;
	assert_int_equal(kvf_fabric_export(f, r1, &bad, 1, &b), KVF_E_RANGE);
	kvf_fabric_range ok = { 0, 65536 };
	assert_int_equal(kvf_fabric_export(f, r1, &ok, 1, &b), 0);
	kvf_fabric_rdesc *d;
	assert_int_equal(kvf_fabric_desc_parse(b.data, b.len, &d), 0);
	kvf_fabric_rdesc *d2 = NULL;
	assert_int_equal(kvf_fabric_desc_parse(b.data, b.len - 1, &d2), KVF_E_PROTO);
	assert_null(d2);
	kvf_buf_free(&b);

	kvf_fabric_cq *cq;
	assert_int_equal(kvf_fabric_cq_new(f, 0, &cq), 0);
	/* loopback to itself: r2 -> r1 */
	kvf_fabric_op op = { m + 65536, 0, 0, 65536 };
	assert_int_equal(kvf_fabric_post(cq, 7, d, &op, 1, 0, NULL), KVF_E_INVAL);
	assert_int_equal(kvf_fabric_post(cq, KVF_FABRIC_READ, d, &op, 0, 0, NULL), KVF_E_INVAL);
	kvf_fabric_req q1, q2;
	assert_int_equal(kvf_fabric_post(cq, KVF_FABRIC_READ, d, &op, 1, 1, &q1), 0);
	assert_int_equal(kvf_fabric_post(cq, KVF_FABRIC_READ, d, &op, 1, 2, &q2), 0);
	assert_int_equal(kvf_fabric_post(cq, KVF_FABRIC_READ, d, &op, 1, 3, NULL), KVF_E_FULL);
	assert_int_equal(kvf_fabric_cq_destroy(cq), KVF_E_BUSY);
	int rc = kvf_fabric_dereg(f, r2);
	assert_true(rc == KVF_E_BUSY || rc == 0); /* BUSY unless both already finished */
	kvf_fabric_comp c;
	int n = 0;
	while (n < 2 && wait_comp(cq, KVF_FABRIC_COMP_XFER, &c, 5000) == 0) {
		assert_int_equal(c.status, 0);
		n++;
	}
	assert_int_equal(n, 2);
	if (rc == KVF_E_BUSY)
		assert_int_equal(kvf_fabric_dereg(f, r2), 0);
	assert_int_equal(kvf_fabric_dereg(f, r2), KVF_E_NOTFOUND);
	assert_int_equal(kvf_fabric_cancel(cq, q1), KVF_E_NOTFOUND);
	assert_int_equal(kvf_fabric_cq_destroy(cq), 0);
	assert_int_equal(kvf_fabric_cq_destroy(NULL), 0);
	kvf_fabric_desc_free(d);
	kvf_fabric_close(f);
	kvf_fabric_close(NULL);
	free(m);
	o.timeout_ms = 0;
	assert_int_equal(kvf_fabric_open(&o, &f), KVF_E_INVAL);
}

/* A forced transport the descriptor does not offer: refused at post. */
static void test_unreachable_transport(void **state)
{
	struct pair p;
	assert_int_equal(pair_open(&p, KVF_FABRIC_TCP, 0), 0);
	kvf_fabric *s = open_one(KVF_FABRIC_SHM, 1000);
	assert_non_null(s);
	uint8_t *m = aligned_alloc(4096, BS);
	kvf_fabric_mr *mr;
	assert_int_equal(kvf_fabric_reg(s, m, BS, KVF_FABRIC_MEM_HOST, &mr), 0);
	kvf_fabric_cq *cq;
	assert_int_equal(kvf_fabric_cq_new(s, 0, &cq), 0);
	kvf_fabric_op op = { m, 0, 0, BS };
	/* p.d came from a tcp-only fabric: no shm address */
	assert_int_equal(kvf_fabric_post(cq, KVF_FABRIC_READ, p.d, &op, 1, 0, NULL), KVF_E_UNSUPPORTED);
	assert_non_null(strstr(kvf_errmsg(), "no transport reaches"));
	assert_int_equal(kvf_fabric_cq_destroy(cq), 0);
	kvf_fabric_close(s);
	free(m);
	pair_close(&p);
}

/* ---- shm revocation ---- */

static void test_shm_dereg_revokes(void **state)
{
	struct pair p;
	assert_int_equal(pair_open(&p, KVF_FABRIC_SHM, 1), 0);
	kvf_fabric_op op = { p.rb, 1, 0, BS };
	kvf_fabric_comp c;
	assert_int_equal(kvf_fabric_post(p.cq, KVF_FABRIC_READ, p.d, &op, 1, 0, NULL), 0);
	assert_int_equal(wait_comp(p.cq, KVF_FABRIC_COMP_XFER, &c, 5000), 0);
	assert_int_equal(c.status, 0);
	kvf_buf b = KVF_BUF_INIT;
	kvf_fabric_show_peers(p.b, 0, &b);
	assert_non_null(strstr(b.data, "shm_mapped=1"));
	kvf_buf_free(&b);
	/* a's dereg revokes b's mapping (a round trip) and succeeds */
	assert_int_equal(kvf_fabric_dereg(p.a, p.ma), 0);
	kvf_fabric_show_peers(p.b, 0, &b);
	assert_non_null(strstr(b.data, "shm_mapped=0"));
	kvf_buf_free(&b);
	/* the old descriptor no longer reaches anything */
	memset(p.rb, 0, BS);
	assert_int_equal(kvf_fabric_post(p.cq, KVF_FABRIC_READ, p.d, &op, 1, 0, NULL), 0);
	assert_int_equal(wait_comp(p.cq, KVF_FABRIC_COMP_XFER, &c, 5000), 0);
	assert_int_equal(c.status, KVF_E_ACCESS);
	for (size_t i = 0; i < BS; i++)
		assert_int_equal(p.rb[i], 0);
	pair_close(&p);
}

/* ---- a hung peer ---- */

static void test_hung_peer_times_out(void **state)
{
	/* a listener that accepts (kernel backlog) but never answers */
	int lfd;
	assert_int_equal(kvf_net_listen_tcp("127.0.0.1:0", 8, &lfd), 0);
	uint16_t port;
	kvf_net_local_port(lfd, &port);
	kvf_fabric *f = open_one(KVF_FABRIC_TCP, 300);
	assert_non_null(f);
	uint8_t *m = aligned_alloc(4096, BS);
	kvf_fabric_mr *mr;
	assert_int_equal(kvf_fabric_reg(f, m, BS, KVF_FABRIC_MEM_HOST, &mr), 0);
	kvf_fabric_cq *cq;
	assert_int_equal(kvf_fabric_cq_new(f, 0, &cq), 0);
	/* a descriptor naming that port */
	kvf_fabric_rdesc d;
	memset(&d, 0, sizeof(d));
	memset(d.node, 0x77, 16);
	strcpy(d.name, "silent");
	char hp[32];
	snprintf(hp, sizeof(hp), "127.0.0.1:%u", port);
	kvf_wire_writer w;
	kvf_wire_writer_init(&w, 0);
	fab_addr_tcp_put(&w, hp);
	d.addr[KVF_FABRIC_TCP].len = (uint16_t)(w.len - 4);
	memcpy(d.addr[KVF_FABRIC_TCP].b, w.buf + 4, w.len - 4);
	kvf_wire_writer_free(&w);
	d.region = 1;
	d.base = 0x100000;
	d.len = BS;
	d.nblocks = 1;
	struct fab_rblock blk = { 0x100000, BS, 1 };
	d.blocks = &blk;
	kvf_fabric_op op = { m, 0, 0, BS };
	uint64_t t0 = kvf_now_ms();
	assert_int_equal(kvf_fabric_post(cq, KVF_FABRIC_READ, &d, &op, 1, 0, NULL), 0);
	kvf_fabric_comp c;
	assert_int_equal(wait_comp(cq, KVF_FABRIC_COMP_XFER, &c, 5000), 0);
	assert_int_equal(c.status, KVF_E_TIMEOUT);
	assert_true(kvf_now_ms() - t0 < 3000);
	assert_non_null(strstr(c.detail, "no progress"));
	/* nobody listening at all: refused */
	close(lfd);
	assert_int_equal(kvf_fabric_post(cq, KVF_FABRIC_READ, &d, &op, 1, 0, NULL), 0);
	assert_int_equal(wait_comp(cq, KVF_FABRIC_COMP_XFER, &c, 5000), 0);
	assert_true(c.status == KVF_E_CONNREFUSED || c.status == KVF_E_PEERDEAD);
	assert_int_equal(kvf_fabric_cq_destroy(cq), 0);
	kvf_fabric_close(f);
	free(m);
}

/* ---- metrics and admin ---- */

static void test_metrics_and_admin(void **state)
{
	kvf_metrics *reg;
	assert_int_equal(kvf_metrics_new(&reg), 0);
	kvf_fabric_opts o;
	kvf_fabric_opts_init(&o);
	o.listen = "127.0.0.1:0";
	o.transport = KVF_FABRIC_TCP;
	o.node_name = "decode-0";
	o.metrics = reg;
	kvf_fabric *b;
	assert_int_equal(kvf_fabric_open(&o, &b), 0);
	assert_string_equal(kvf_fabric_node_name(b), "decode-0");
	kvf_fabric *a = open_one(KVF_FABRIC_TCP, 2000);
	uint8_t *ra = aligned_alloc(4096, BS * 4), *rb = aligned_alloc(4096, BS * 4);
	memset(ra, 1, BS * 4);
	kvf_fabric_mr *ma, *mb;
	assert_int_equal(kvf_fabric_reg(a, ra, BS * 4, KVF_FABRIC_MEM_HOST, &ma), 0);
	assert_int_equal(kvf_fabric_reg(b, rb, BS * 4, KVF_FABRIC_MEM_HOST, &mb), 0);
	kvf_fabric_range rg[4] = { { 0, BS }, { BS, BS }, { 2 * BS, BS }, { 3 * BS, BS } };
	kvf_buf buf = KVF_BUF_INIT;
	assert_int_equal(kvf_fabric_export(a, ma, rg, 4, &buf), 0);
	kvf_fabric_rdesc *d;
	assert_int_equal(kvf_fabric_desc_parse(buf.data, buf.len, &d), 0);
	kvf_buf_free(&buf);
	kvf_fabric_cq *cq;
	assert_int_equal(kvf_fabric_cq_new(b, 0, &cq), 0);
	kvf_fabric_op ops[4];
	for (int i = 0; i < 4; i++)
		ops[i] = (kvf_fabric_op){ rb + (size_t)i * BS, (uint32_t)i, 0, BS };
	assert_int_equal(kvf_fabric_post(cq, KVF_FABRIC_READ, d, ops, 4, 0, NULL), 0);
	kvf_fabric_comp c;
	assert_int_equal(wait_comp(cq, KVF_FABRIC_COMP_XFER, &c, 5000), 0);
	assert_int_equal(c.status, 0);

	assert_int_equal(kvf_metrics_render_prometheus(reg, &buf), 0);
	char want[256];
	snprintf(want, sizeof(want), "kvf_fabric_bytes_total{transport=\"tcp\",peer=\"%s\",op=\"read\"} %u",
		 kvf_fabric_node_name(a), 4 * BS);
	assert_non_null(strstr(buf.data, want));
	snprintf(want, sizeof(want), "kvf_fabric_ops_total{transport=\"tcp\",peer=\"%s\",op=\"read\"} 4",
		 kvf_fabric_node_name(a));
	assert_non_null(strstr(buf.data, want));
	assert_non_null(strstr(buf.data, "kvf_fabric_request_seconds_bucket{transport=\"tcp\""));
	kvf_buf_free(&buf);

	/* admin keyword tables */
	kvf_loop *loop;
	assert_int_equal(kvf_loop_new(&loop), 0);
	char path[64];
	snprintf(path, sizeof(path), "/tmp/kvf-fabric-test-%d.sock", (int)getpid());
	kvf_admin *adm;
	assert_int_equal(kvf_admin_new(loop, path, &adm), 0);
	size_t n;
	const kvf_admin_cmd *cmds = kvf_fabric_admin_cmds(&n);
	assert_int_equal(n, 2);
	assert_int_equal(kvf_admin_register(adm, cmds, n, b), 0);
	assert_int_equal(kvf_admin_exec(adm, "show peers", &buf), 0);
	assert_non_null(strstr(buf.data, "transports=tcp"));
	assert_non_null(strstr(buf.data, "ops_read=4"));
	kvf_buf_reset(&buf);
	assert_int_equal(kvf_admin_exec(adm, "show peers json", &buf), 0);
	assert_non_null(strstr(buf.data, "\"bytes_read\":262144"));
	kvf_buf_reset(&buf);
	assert_int_equal(kvf_admin_exec(adm, "show transfers", &buf), 0);
	assert_non_null(strstr(buf.data, "no transfers in flight"));
	kvf_buf_reset(&buf);
	assert_int_equal(kvf_admin_exec(adm, "show transfers json", &buf), 0);
	assert_non_null(strstr(buf.data, "[]"));
	kvf_buf_free(&buf);
	kvf_admin_destroy(adm);
	kvf_loop_destroy(loop);

	assert_int_equal(kvf_fabric_cq_destroy(cq), 0);
	kvf_fabric_desc_free(d);
	kvf_fabric_close(a);
	kvf_fabric_close(b);
	kvf_metrics_destroy(reg);
	free(ra);
	free(rb);
}

static void test_unavailable_reasons(void **state)
{
	kvf_fabric *f = open_one(KVF_FABRIC_AUTO, 1000);
	assert_non_null(f);
	unsigned mask = kvf_fabric_transports(f);
	assert_true(mask & (1u << KVF_FABRIC_TCP));
	assert_true(mask & (1u << KVF_FABRIC_SHM));
	assert_string_equal(kvf_fabric_unavailable_reason(f, KVF_FABRIC_TCP), "");
	for (int t = KVF_FABRIC_VERBS; t < KVF_FABRIC_NTRANSPORTS; t++)
		if (!(mask & (1u << t)))
			assert_true(strlen(kvf_fabric_unavailable_reason(f, t)) > 0);
	assert_true(kvf_fabric_port(f) > 0);
	kvf_fabric_close(f);
}

int main(void)
{
	kvf_log_set_level(KVF_LOG_ERROR);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tcp_loop),
		cmocka_unit_test(test_shm_memfd),
		cmocka_unit_test(test_shm_process_vm),
		cmocka_unit_test(test_auto_picks_shm),
		cmocka_unit_test(test_ofi_loop),
		cmocka_unit_test(test_notify_after_write),
		cmocka_unit_test(test_api_refusals),
		cmocka_unit_test(test_unreachable_transport),
		cmocka_unit_test(test_shm_dereg_revokes),
		cmocka_unit_test(test_hung_peer_times_out),
		cmocka_unit_test(test_metrics_and_admin),
		cmocka_unit_test(test_unavailable_reasons),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
