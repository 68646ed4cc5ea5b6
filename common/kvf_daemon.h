/*
 * kvf_daemon.h: what every kvfabric daemon does the same way, so a daemon's
 * main.c only declares its config, wires its component and runs:
 *
 *   struct my_cfg { kvf_daemon_cfg d; int64_t lease_ms; };
 *   static const kvf_cfg_key keys[] = {
 *       KVF_DAEMON_KEYS(struct my_cfg, d, "127.0.0.1:7701", "/tmp/kvf-cachedir.sock"),
 *       KVF_CFG_KEY(struct my_cfg, lease_ms, DURATION, "10s", 100, 600000, NULL, "..."),
 *   };
 *   kvf_daemon_new("kvf-cachedir", &d);
 *   kvf_config_add(kvf_daemon_config(d), &my_section, &cfg);
 *   if (kvf_daemon_parse_args(d, argc, argv, &code)) return code;   // -c, -o, ...
 *   kvf_daemon_start(d, &cfg.d);      // loop, signals, metrics, admin, HTTP
 *   ... create the component on kvf_daemon_loop(d), register its metrics and
 *       admin tables, set the HTTP handler, kvf_daemon_set_ready(d, 1) ...
 *   return kvf_daemon_run(d);         // until SIGTERM/SIGINT, then drains
 *
 * Every daemon gets: the `cluster {}` section (kvf_daemon_cluster()), logfmt
 * logs at the configured level, an admin socket with `help`, `show info`,
 * `show stats [json]`, `show config`, `set loglevel`, `drain`, and an HTTP
 * port serving /metrics (Prometheus), /health (200 while the process serves)
 * and /ready (200 when ready and not draining, else 503), other paths going
 * to the component's handler once the component set the daemon ready (503
 * before). SIGTERM/SIGINT drain gracefully: /ready turns
 * 503, the component's drain hook stops new work, the daemon waits until the
 * component reports idle or drain_timeout_ms passes, then stops; a second
 * SIGINT stops at once.
 * All of it runs on the thread that calls kvf_daemon_run().
 */
#ifndef KVF_DAEMON_H
#define KVF_DAEMON_H

#include <stddef.h>
#include <stdint.h>

#include "common/kvf_admin.h"
#include "common/kvf_cluster.h"
#include "common/kvf_config.h"
#include "common/kvf_http.h"
#include "common/kvf_loop.h"
#include "common/kvf_metrics.h"

/* Embedded in each daemon's section struct; declared with KVF_DAEMON_KEYS. */
typedef struct kvf_daemon_cfg {
	char *http_listen;
	char *admin_socket;
	int log_level;
	uint64_t drain_timeout_ms;
} kvf_daemon_cfg;

#define KVF_DAEMON_KEYS(TYPE, FIELD, HTTP_DEFAULT, ADMIN_DEFAULT)                                   \
	{ "http_listen", KVF_CFG_STRING, offsetof(TYPE, FIELD.http_listen), HTTP_DEFAULT, 0, 0, NULL, \
	  "host:port of the HTTP port: the API, /metrics, /health, /ready" },                       \
	{ "admin_socket", KVF_CFG_STRING, offsetof(TYPE, FIELD.admin_socket), ADMIN_DEFAULT, 0, 0,    \
	  NULL, "path of the admin socket (mode 0600); empty disables it" },                        \
	{ "log_level", KVF_CFG_ENUM, offsetof(TYPE, FIELD.log_level), "info", 0, 0,                   \
	  "error|warn|info|debug|trace", "log level (`set loglevel` changes it at run time)" },       \
	{ "drain_timeout_ms", KVF_CFG_DURATION, offsetof(TYPE, FIELD.drain_timeout_ms), "30s", 0,     \
	  3600000, NULL, "on SIGTERM: how long to let in-flight work finish before exiting" }

typedef struct kvf_daemon kvf_daemon;

/* prog: the binary's name ("kvf-cachedir"); borrowed. */
int kvf_daemon_new(const char *prog, kvf_daemon **out);
/* Stops and frees everything the daemon created. NULL ok. */
void kvf_daemon_destroy(kvf_daemon *d);

/* The config to add sections to before kvf_daemon_parse_args(). */
kvf_config *kvf_daemon_config(kvf_daemon *d);
/* The `cluster {}` section (valid after parse_args). */
const kvf_cluster_cfg *kvf_daemon_cluster(kvf_daemon *d);

/* kvf_config_cli(): returns 1 with *exit_code when the process should exit. */
int kvf_daemon_parse_args(kvf_daemon *d, int argc, char **argv, int *exit_code);

/* Options for the HTTP server (limits, timeouts, max_conns, pipelining);
 * listen, listen_fd and server_name stay the daemon's. Call before
 * kvf_daemon_start(); copied. */
void kvf_daemon_set_http_opts(kvf_daemon *d, const kvf_http_server_opts *opts);

/* Sets the log level, creates the loop, signal handling, the metrics registry
 * (with process metrics), the admin socket and the HTTP server. base is
 * borrowed for the daemon's life. */
int kvf_daemon_start(kvf_daemon *d, const kvf_daemon_cfg *base);

kvf_loop *kvf_daemon_loop(kvf_daemon *d);
kvf_metrics *kvf_daemon_metrics(kvf_daemon *d);
/* NULL when admin_socket is empty; kvf_daemon_register_admin() handles that. */
kvf_admin *kvf_daemon_admin(kvf_daemon *d);
kvf_http_server *kvf_daemon_http(kvf_daemon *d);

/* Registers an admin table when the admin socket exists (no-op otherwise). */
int kvf_daemon_register_admin(kvf_daemon *d, const kvf_admin_cmd *cmds, size_t n, void *ud);

/* Requests other than /metrics, /health, /ready go here (404 without one). */
void kvf_daemon_set_http_handler(kvf_daemon *d, kvf_http_handler fn, void *ud);

void kvf_daemon_set_ready(kvf_daemon *d, int ready);
int kvf_daemon_draining(const kvf_daemon *d);

typedef struct kvf_daemon_hooks {
	/* Stop taking new work (drain, SIGTERM). */
	void (*drain)(void *ud);
	/* Nonzero while work is in flight; polled while draining. */
	int (*busy)(void *ud);
	/* Extra `show info` lines ("key: value\n"). */
	void (*info)(void *ud, kvf_buf *out);
	void *ud;
} kvf_daemon_hooks;
void kvf_daemon_set_hooks(kvf_daemon *d, const kvf_daemon_hooks *hooks);

/* Starts draining as `drain` on the admin socket does. */
void kvf_daemon_drain(kvf_daemon *d);

/* Closes the HTTP server now (every open request gets its on_close), so a
 * component can free what its requests point at before the rest of the
 * daemon goes. Part of kvf_daemon_destroy() otherwise. */
void kvf_daemon_close_http(kvf_daemon *d);

/* Runs the loop until the daemon stops; returns the process exit code. */
int kvf_daemon_run(kvf_daemon *d);
/* Thread-safe: stop without draining. */
void kvf_daemon_stop(kvf_daemon *d);

#endif
