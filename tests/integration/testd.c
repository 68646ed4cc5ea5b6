/*
 * kvf-testd: a minimal daemon built on common/daemon.c, used by the
 * integration tests of the shared daemon surface (admin socket, /metrics,
 * /health, /ready, config errors, drain, graceful SIGTERM) before and
 * independently of the real daemons.
 *
 * Routes: POST /echo answers the body; GET /slow?ms=N answers after N ms
 * (in flight while it waits, so shutdown must wait for it).
 * Admin: `show slow` prints the requests in flight.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/kvf_alloc.h"
#include "common/kvf_daemon.h"
#include "common/kvf_err.h"
#include "common/kvf_log.h"

struct testd_cfg {
	kvf_daemon_cfg d;
	int64_t max_slow;
};

static const kvf_cfg_key testd_keys[] = {
	KVF_DAEMON_KEYS(struct testd_cfg, d, "127.0.0.1:0", ""),
	KVF_CFG_KEY(struct testd_cfg, max_slow, INT, "8", 1, 64, NULL, "slow requests in flight at most"),
};

static const kvf_cfg_section testd_section = {
	"testd", "Test daemon", testd_keys, KVF_CFG_NKEYS(testd_keys), NULL, sizeof(struct testd_cfg),
};

struct slow {
	kvf_timer t;
	kvf_http_req *req;
	int in_use;
};

struct testd {
	kvf_daemon *d;
	struct testd_cfg cfg;
	struct slow slow[64];
	int inflight;
	int draining;
};

static void slow_done(kvf_loop *loop, kvf_timer *t, void *ud)
{
	struct testd *td = ud;
	struct slow *s = (struct slow *)t;
	kvf_http_respond(s->req, 200, "text/plain", NULL, "slow done\n", 10);
	s->in_use = 0;
	td->inflight--;
}

static void on_req(kvf_http_req *req, void *ud)
{
	struct testd *td = ud;
	kvf_http_str path = kvf_http_req_path(req);
	if (kvf_http_str_eq(path, "/echo") && kvf_http_req_method(req) == KVF_HTTP_POST) {
		size_t len;
		const char *body = kvf_http_req_body(req, &len);
		kvf_http_respond(req, 200, "application/octet-stream", NULL, body, len);
		return;
	}
	if (kvf_http_str_eq(path, "/slow")) {
		if (td->draining) {
			kvf_http_respond_error(req, 503, "draining");
			return;
		}
		char ms[16] = "100";
		size_t n;
		kvf_http_query_get(kvf_http_req_query(req), "ms", ms, sizeof(ms), &n);
		for (int i = 0; i < td->cfg.max_slow; i++) {
			struct slow *s = &td->slow[i];
			if (s->in_use)
				continue;
			s->in_use = 1;
			s->req = req;
			td->inflight++;
			kvf_loop_timer_start(kvf_daemon_loop(td->d), &s->t, (uint64_t)atoi(ms), 0, slow_done, td);
			return;
		}
		kvf_http_respond_error(req, 429, "too many slow requests");
		return;
	}
	kvf_http_respond_error(req, 404, "no such route");
}

static int cmd_show_slow(kvf_admin_out *out, int argc, char **argv, void *ud)
{
	struct testd *td = ud;
	kvf_admin_printf(out, "inflight: %d\n", td->inflight);
	return 0;
}

static const kvf_admin_cmd testd_cmds[] = {
	{ { "show", "slow" }, "show slow", "slow requests in flight", cmd_show_slow },
};

static void on_drain(void *ud)
{
	((struct testd *)ud)->draining = 1;
}

static int is_busy(void *ud)
{
	return ((struct testd *)ud)->inflight > 0;
}

static void info(void *ud, kvf_buf *out)
{
	kvf_buf_printf(out, "slow_inflight: %d\n", ((struct testd *)ud)->inflight);
}

int main(int argc, char **argv)
{
	static struct testd td;
	int code = 1;
	if (kvf_daemon_new("kvf-testd", &td.d)) {
		fprintf(stderr, "kvf-testd: %s\n", kvf_errmsg());
		return 1;
	}
	if (kvf_config_add(kvf_daemon_config(td.d), &testd_section, &td.cfg)) {
		fprintf(stderr, "kvf-testd: %s\n", kvf_errmsg());
		goto out;
	}
	if (kvf_daemon_parse_args(td.d, argc, argv, &code))
		goto out;
	if (kvf_daemon_start(td.d, &td.cfg.d)) {
		fprintf(stderr, "kvf-testd: %s\n", kvf_errmsg());
		code = 1;
		goto out;
	}
	kvf_daemon_register_admin(td.d, testd_cmds, 1, &td);
	kvf_daemon_set_http_handler(td.d, on_req, &td);
	kvf_daemon_hooks hooks = { on_drain, is_busy, info, &td };
	kvf_daemon_set_hooks(td.d, &hooks);
	/* The bound port on stdout lets tests use port 0. */
	printf("port %u\n", kvf_http_server_port(kvf_daemon_http(td.d)));
	fflush(stdout);
	kvf_daemon_set_ready(td.d, 1);
	code = kvf_daemon_run(td.d);
out:
	kvf_daemon_destroy(td.d);
	return code;
}
