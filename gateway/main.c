/*
 * kvf-gateway: the OpenAI-compatible front door of a kvfabric cluster.
 * Wiring only: config -> daemon framework (loop, admin socket, /metrics,
 * /health, /ready, signals, drain) -> gateway library on the epoll I/O
 * engine -> run. See docs/gateway.md.
 */
#include <stdio.h>

#include "common/kvf_daemon.h"
#include "common/kvf_err.h"
#include "gateway/kvf_gateway.h"

static void on_drain(void *ud) { kvf_gateway_drain(ud); }
static int on_busy(void *ud) { return kvf_gateway_busy(ud); }
static void on_info(void *ud, kvf_buf *out) { kvf_gateway_info(ud, out); }

int main(int argc, char **argv)
{
	static kvf_gateway_cfg cfg;
	kvf_daemon *d;
	kvf_gateway *gw = NULL;
	int code = 1;
	if (kvf_daemon_new("kvf-gateway", &d)) {
		fprintf(stderr, "kvf-gateway: %s\n", kvf_errmsg());
		return 1;
	}
	if (kvf_config_add(kvf_daemon_config(d), &kvf_gateway_section, &cfg)) {
		fprintf(stderr, "kvf-gateway: %s\n", kvf_errmsg());
		goto out;
	}
	if (kvf_daemon_parse_args(d, argc, argv, &code))
		goto out;
	code = 1;
	kvf_http_server_opts hopts;
	kvf_gateway_http_opts(&cfg, &hopts);
	kvf_daemon_set_http_opts(d, &hopts);
	if (kvf_daemon_start(d, &cfg.d)) {
		fprintf(stderr, "kvf-gateway: %s\n", kvf_errmsg());
		goto out;
	}
	if (kvf_gateway_new(kvf_daemon_loop(d), &cfg, kvf_daemon_cluster(d), kvf_daemon_metrics(d), &gw)) {
		fprintf(stderr, "kvf-gateway: %s\n", kvf_errmsg());
		goto out;
	}
	if (kvf_gateway_register_admin(gw, kvf_daemon_admin(d))) {
		fprintf(stderr, "kvf-gateway: admin: %s\n", kvf_errmsg());
		goto out;
	}
	kvf_daemon_set_http_handler(d, kvf_gateway_io_epoll_handler, gw);
	kvf_daemon_hooks hooks = { on_drain, on_busy, on_info, gw };
	kvf_daemon_set_hooks(d, &hooks);
	/* The bound port on stdout lets scripts use port 0. */
	printf("port %u\n", kvf_http_server_port(kvf_daemon_http(d)));
	fflush(stdout);
	kvf_daemon_set_ready(d, 1);
	code = kvf_daemon_run(d);
out:
	kvf_gateway_destroy(gw);
	kvf_daemon_destroy(d);
	return code;
}
