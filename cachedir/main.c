/*
 * kvf-cachedir: the cluster-wide KV block directory daemon.
 *
 * Only wiring: the daemon framework (common/kvf_daemon.h) parses the
 * `cachedir {}` section and runs the loop, signals, metrics, the admin socket
 * and the HTTP port (/metrics, /health, /ready); the server
 * (cachedir/server.c) serves the protocol on that loop and registers its
 * metrics and admin commands. /ready turns 200 once cachedir.warmup has
 * passed, the time workers get to re-announce to a restarted replica.
 * Operations: docs/cachedir.md. Protocol: docs/protocol-cachedir.md.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cachedir/cd_server.h"
#include "cachedir/kvf_cachedir.h"
#include "common/kvf_daemon.h"
#include "common/kvf_err.h"
#include "common/kvf_http.h"
#include "common/kvf_log.h"

struct cachedir {
	kvf_daemon *d;
	cd_daemon_cfg cfg;
	cd_server *srv;
	kvf_timer warm;
};

static void info(void *ud, kvf_buf *out)
{
	struct cachedir *cd = ud;
	cd_index_stats st;
	cd_index_stats_get(cd_server_index(cd->srv), &st);
	kvf_buf_printf(out,
		       "protocol_port: %u\nworkers: %u\nmodels: %u\nblocks: %" PRIu64 "\nholders: %" PRIu64
		       "\nclients: %zu\n",
		       cd_server_port(cd->srv), st.workers, st.models, st.keys, st.holders,
		       cd_server_clients(cd->srv));
}

static void warmed(kvf_loop *loop, kvf_timer *t, void *ud)
{
	(void)loop;
	(void)t;
	struct cachedir *cd = ud;
	kvf_daemon_set_ready(cd->d, 1);
	KVF_INFO("cachedir", "warmup over: ready", "warmup_ms=%" PRIu64, cd->cfg.srv.warmup_ms);
}

int main(int argc, char **argv)
{
	static struct cachedir cd;
	int code = 1;
	if (kvf_daemon_new("kvf-cachedir", &cd.d)) {
		fprintf(stderr, "kvf-cachedir: %s\n", kvf_errmsg());
		return 1;
	}
	if (kvf_config_add(kvf_daemon_config(cd.d), &kvf_cachedir_section, &cd.cfg)) {
		fprintf(stderr, "kvf-cachedir: %s\n", kvf_errmsg());
		goto out;
	}
	if (kvf_daemon_parse_args(cd.d, argc, argv, &code))
		goto out;
	code = 1;
	if (kvf_daemon_start(cd.d, &cd.cfg.d)) {
		fprintf(stderr, "kvf-cachedir: %s\n", kvf_errmsg());
		goto out;
	}
	kvf_loop *loop = kvf_daemon_loop(cd.d);
	if (cd_server_new(loop, &cd.cfg.srv, kvf_daemon_metrics(cd.d), kvf_daemon_admin(cd.d), &cd.srv)) {
		fprintf(stderr, "kvf-cachedir: %s\n", kvf_errmsg());
		goto out;
	}
	kvf_daemon_hooks hooks = { .info = info, .ud = &cd };
	kvf_daemon_set_hooks(cd.d, &hooks);
	kvf_loop_timer_start(loop, &cd.warm, cd.cfg.srv.warmup_ms, 0, warmed, &cd);
	/* The bound ports on stdout let tests and scripts use port 0. */
	printf("listening protocol=%u http=%u\n", cd_server_port(cd.srv),
	       kvf_http_server_port(kvf_daemon_http(cd.d)));
	fflush(stdout);
	code = kvf_daemon_run(cd.d);
out:
	cd_server_destroy(cd.srv);
	kvf_daemon_destroy(cd.d);
	return code;
}
