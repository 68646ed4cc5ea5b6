/*
 * daemon.c: the start-up, operations surface and shutdown every kvfabric
 * daemon shares (see kvf_daemon.h). Keeping this in one place is what makes
 * every daemon answer `show stats`, /metrics, /ready and SIGTERM alike.
 */
#include "common/kvf_daemon.h"

#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"
#include "common/kvf_log.h"
#include "common/kvf_time.h"
#include "common/kvf_version.h"
#include "kvf_features.h"

#define DRAIN_POLL_MS 100

enum {
	PM_START, PM_RSS, PM_FDS, PM_UP, PM_BUILD,
	PM_HTTP_REQS, PM_HTTP_RESP, PM_HTTP_ERRS, PM_HTTP_CONNS, PM_HTTP_BYTES_IN, PM_HTTP_BYTES_OUT,
	PM_N
};

static const kvf_metric_def process_metrics[PM_N] = {
	{ "process_start_time_seconds", KVF_METRIC_GAUGE, "Start time of the process since the Unix epoch", NULL, NULL, 0 },
	{ "process_resident_memory_bytes", KVF_METRIC_GAUGE, "Resident memory size", NULL, NULL, 0 },
	{ "process_open_fds", KVF_METRIC_GAUGE, "Open file descriptors", NULL, NULL, 0 },
	{ "kvf_uptime_seconds", KVF_METRIC_GAUGE, "Seconds since the daemon started", NULL, NULL, 0 },
	{ "kvf_build_info", KVF_METRIC_GAUGE, "Always 1; labels say what was built", "daemon,version", NULL, 0 },
	{ "kvf_http_requests_total", KVF_METRIC_COUNTER, "HTTP requests handed to handlers", NULL, NULL, 0 },
	{ "kvf_http_responses_total", KVF_METRIC_COUNTER, "HTTP responses finished, by status class", "class", NULL, 0 },
	{ "kvf_http_rejected_total", KVF_METRIC_COUNTER, "HTTP requests rejected before a handler, by status", "status", NULL, 0 },
	{ "kvf_http_open_connections", KVF_METRIC_GAUGE, "Open HTTP connections", NULL, NULL, 0 },
	{ "kvf_http_received_bytes_total", KVF_METRIC_COUNTER, "Bytes read from HTTP clients", NULL, NULL, 0 },
	{ "kvf_http_sent_bytes_total", KVF_METRIC_COUNTER, "Bytes written to HTTP clients", NULL, NULL, 0 },
};

struct kvf_daemon {
	const char *prog;
	kvf_config *cfg;
	kvf_cluster_cfg cluster;
	const kvf_daemon_cfg *base;
	kvf_loop *loop;
	kvf_metrics *metrics;
	kvf_metric *pm[PM_N];
	kvf_series *http_resp[6];
	kvf_series *http_err[7];
	kvf_http_server_stats http_seen; /* last stats folded into the counters */
	kvf_admin *admin;
	kvf_http_server *http;
	kvf_http_server_opts http_opts;
	kvf_http_handler handler;
	void *handler_ud;
	kvf_daemon_hooks hooks;
	kvf_timer drain_timer;
	uint64_t start_ms, start_wall_s, drain_deadline_ms;
	int ready, draining, stopping;
	int sigint_count;
};

/* ---- admin commands ---- */

static int cmd_show_info(kvf_admin_out *out, int argc, char **argv, void *ud)
{
	kvf_daemon *d = ud;
	uint64_t up = (kvf_now_ms() - d->start_ms) / 1000;
	const char *state = d->draining ? "draining" : d->ready ? "ready" : "starting";
	if (kvf_admin_want_json(out)) {
		kvf_buf *b = kvf_admin_buf(out);
		kvf_buf_printf(b, "{\"name\":\"%s\",\"version\":\"%s\",\"pid\":%d,\"uptime_s\":%llu,\"state\":\"%s\","
			       "\"http\":", d->prog, KVF_VERSION, (int)getpid(), (unsigned long long)up, state);
		kvf_buf_put_json_str(b, d->base->http_listen, strlen(d->base->http_listen));
		kvf_buf_printf(b, ",\"http_port\":%u,\"features\":", d->http ? kvf_http_server_port(d->http) : 0);
		kvf_buf_put_json_str(b, KVF_FEATURES_SUMMARY, strlen(KVF_FEATURES_SUMMARY));
		kvf_buf_puts(b, "}\n");
		return 0;
	}
	kvf_admin_printf(out, "name: %s\nversion: %s\npid: %d\nuptime_s: %llu\nstate: %s\n", d->prog, KVF_VERSION,
			 (int)getpid(), (unsigned long long)up, state);
	kvf_admin_printf(out, "http: %s (port %u)\nlog_level: %s\n%s\n", d->base->http_listen,
			 d->http ? kvf_http_server_port(d->http) : 0, kvf_log_level_name(kvf_log_level_cur),
			 KVF_FEATURES_SUMMARY);
	if (d->hooks.info)
		d->hooks.info(d->hooks.ud, kvf_admin_buf(out));
	return 0;
}

static int cmd_show_stats(kvf_admin_out *out, int argc, char **argv, void *ud)
{
	kvf_daemon *d = ud;
	if (argc > 0)
		return kvf_admin_error(out, "usage: show stats [json]");
	if (kvf_admin_want_json(out)) {
		int rc = kvf_metrics_render_json(d->metrics, kvf_admin_buf(out));
		kvf_buf_putc(kvf_admin_buf(out), '\n');
		return rc;
	}
	return kvf_metrics_render_text(d->metrics, kvf_admin_buf(out));
}

static int cmd_show_config(kvf_admin_out *out, int argc, char **argv, void *ud)
{
	kvf_daemon *d = ud;
	return kvf_config_print_redacted(d->cfg, kvf_admin_buf(out), 1);
}

static int cmd_drain(kvf_admin_out *out, int argc, char **argv, void *ud)
{
	kvf_daemon *d = ud;
	kvf_daemon_drain(d);
	int busy = d->hooks.busy ? d->hooks.busy(d->hooks.ud) : 0;
	kvf_admin_printf(out, "draining: not ready, no new work%s\n", busy ? "; work still in flight" : "; idle");
	return 0;
}

static const kvf_admin_cmd daemon_cmds[] = {
	{ { "show", "info" }, "show info [json]", "name, version, uptime, state, features", cmd_show_info },
	{ { "show", "stats" }, "show stats [json]", "every metric of this daemon", cmd_show_stats },
	{ { "show", "config" }, "show config", "the effective configuration", cmd_show_config },
	{ { "drain" }, "drain", "stop taking new work (readiness turns 503), finish what runs", cmd_drain },
};

/* ---- metrics ---- */

static long read_rss_bytes(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	long pages = 0, rss = 0;
	if (!f)
		return 0;
	if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
		rss = 0;
	fclose(f);
	return rss * sysconf(_SC_PAGESIZE);
}

static int count_fds(void)
{
	DIR *dir = opendir("/proc/self/fd");
	int n = 0;
	if (!dir)
		return 0;
	while (readdir(dir))
		n++;
	closedir(dir);
	return n > 3 ? n - 3 : 0; /* ".", ".." and the directory's own fd */
}

static void collect(void *ud)
{
	kvf_daemon *d = ud;
	kvf_metric_set(d->pm[PM_RSS], (double)read_rss_bytes());
	kvf_metric_set(d->pm[PM_FDS], count_fds());
	kvf_metric_set(d->pm[PM_UP], (double)(kvf_now_ms() - d->start_ms) / 1000.0);
	if (!d->http)
		return;
	/* Fold the server's own counters into the registry. */
	kvf_http_server_stats st;
	kvf_http_server_stats_get(d->http, &st);
	kvf_http_server_stats *old = &d->http_seen;
	kvf_metric_add(d->pm[PM_HTTP_REQS], st.requests - old->requests);
	for (int i = 1; i < 6; i++)
		kvf_series_add(d->http_resp[i], st.responses[i] - old->responses[i]);
	const uint64_t now_e[7] = { st.err_400, st.err_408, st.err_413, st.err_414, st.err_431, st.err_501, st.err_505 };
	const uint64_t old_e[7] = { old->err_400, old->err_408, old->err_413, old->err_414, old->err_431, old->err_501, old->err_505 };
	for (int i = 0; i < 7; i++)
		kvf_series_add(d->http_err[i], now_e[i] - old_e[i]);
	kvf_metric_add(d->pm[PM_HTTP_BYTES_IN], st.bytes_in - old->bytes_in);
	kvf_metric_add(d->pm[PM_HTTP_BYTES_OUT], st.bytes_out - old->bytes_out);
	kvf_metric_set(d->pm[PM_HTTP_CONNS], (double)st.open_conns);
	*old = st;
}

static int metrics_init(kvf_daemon *d)
{
	int rc = kvf_metrics_new(&d->metrics);
	if (rc)
		return rc;
	if ((rc = kvf_metrics_register(d->metrics, process_metrics, PM_N, d->pm)))
		return rc;
	kvf_metric_set(d->pm[PM_START], (double)d->start_wall_s);
	kvf_series *s;
	if ((rc = kvf_metric_labels(d->pm[PM_BUILD], (const char *[]){ d->prog, KVF_VERSION }, &s)))
		return rc;
	kvf_series_set(s, 1);
	static const char *const classes[6] = { "", "1xx", "2xx", "3xx", "4xx", "5xx" };
	for (int i = 1; i < 6; i++)
		if ((rc = kvf_metric_labels(d->pm[PM_HTTP_RESP], (const char *[]){ classes[i] }, &d->http_resp[i])))
			return rc;
	static const char *const codes[7] = { "400", "408", "413", "414", "431", "501", "505" };
	for (int i = 0; i < 7; i++)
		if ((rc = kvf_metric_labels(d->pm[PM_HTTP_ERRS], (const char *[]){ codes[i] }, &d->http_err[i])))
			return rc;
	return kvf_metrics_on_collect(d->metrics, collect, d);
}

/* ---- HTTP ---- */

static int path_is(kvf_http_req *req, const char *p)
{
	return kvf_http_str_eq(kvf_http_req_path(req), p);
}

static void on_http(kvf_http_req *req, void *ud)
{
	kvf_daemon *d = ud;
	int get = kvf_http_req_method(req) == KVF_HTTP_GET || kvf_http_req_method(req) == KVF_HTTP_HEAD;
	if (path_is(req, "/metrics") && get) {
		kvf_buf b = KVF_BUF_INIT;
		kvf_metrics_render_prometheus(d->metrics, &b);
		kvf_http_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, b.data, b.len);
		kvf_buf_free(&b);
	} else if (path_is(req, "/health") && get) {
		kvf_http_respond(req, 200, "text/plain", NULL, "ok\n", 3);
	} else if (path_is(req, "/ready") && get) {
		if (d->ready && !d->draining)
			kvf_http_respond(req, 200, "text/plain", NULL, "ready\n", 6);
		else {
			const char *why = d->draining ? "draining\n" : "starting\n";
			kvf_http_respond(req, 503, "text/plain", NULL, why, strlen(why));
		}
	} else if (!d->ready) {
		/* Still loading (a model, a calibration): the component's routes
		 * answer once it declared itself ready. */
		kvf_http_respond_error(req, 503, "starting: not ready yet");
	} else if (d->handler) {
		d->handler(req, d->handler_ud);
	} else {
		kvf_http_respond_error(req, 404, "not found");
	}
}

/* ---- lifecycle ---- */

int kvf_daemon_new(const char *prog, kvf_daemon **out)
{
	kvf_daemon *d = kvf_calloc(1, sizeof(*d));
	if (!d)
		return kvf_errf(KVF_E_NOMEM, "daemon: out of memory");
	d->prog = prog;
	d->start_ms = kvf_now_ms();
	d->start_wall_s = kvf_wall_s();
	int rc = kvf_config_new(&d->cfg);
	if (!rc)
		rc = kvf_config_add(d->cfg, &kvf_cluster_section, &d->cluster);
	if (rc) {
		kvf_config_destroy(d->cfg);
		kvf_free(d);
		return rc;
	}
	*out = d;
	return 0;
}

kvf_config *kvf_daemon_config(kvf_daemon *d) { return d->cfg; }
const kvf_cluster_cfg *kvf_daemon_cluster(kvf_daemon *d) { return &d->cluster; }
kvf_loop *kvf_daemon_loop(kvf_daemon *d) { return d->loop; }
kvf_metrics *kvf_daemon_metrics(kvf_daemon *d) { return d->metrics; }
kvf_admin *kvf_daemon_admin(kvf_daemon *d) { return d->admin; }
kvf_http_server *kvf_daemon_http(kvf_daemon *d) { return d->http; }
int kvf_daemon_draining(const kvf_daemon *d) { return d->draining; }

int kvf_daemon_parse_args(kvf_daemon *d, int argc, char **argv, int *exit_code)
{
	return kvf_config_cli(d->cfg, d->prog, argc, argv, NULL, exit_code);
}

int kvf_daemon_register_admin(kvf_daemon *d, const kvf_admin_cmd *cmds, size_t n, void *ud)
{
	return d->admin ? kvf_admin_register(d->admin, cmds, n, ud) : 0;
}

void kvf_daemon_set_http_handler(kvf_daemon *d, kvf_http_handler fn, void *ud)
{
	d->handler = fn;
	d->handler_ud = ud;
}

void kvf_daemon_set_http_opts(kvf_daemon *d, const kvf_http_server_opts *opts)
{
	d->http_opts = *opts;
}

void kvf_daemon_set_ready(kvf_daemon *d, int ready)
{
	d->ready = ready;
}

void kvf_daemon_set_hooks(kvf_daemon *d, const kvf_daemon_hooks *hooks)
{
	d->hooks = *hooks;
}

static void on_http_shutdown(kvf_http_server *s, void *ud)
{
	kvf_daemon *d = ud;
	kvf_loop_timer_stop(d->loop, &d->drain_timer);
	kvf_loop_stop(d->loop);
}

/* The drain budget is spent: every open request is closed (its component
 * sees the client leave and stops), and the loop ends. */
static void force_stop(kvf_loop *loop, kvf_timer *t, void *ud)
{
	kvf_daemon *d = ud;
	KVF_WARN("daemon", "drain timeout: closing the requests still open", "timeout_ms=%llu",
		 (unsigned long long)d->base->drain_timeout_ms);
	kvf_daemon_close_http(d);
	kvf_loop_stop(d->loop);
}

/* Graceful end: the HTTP server finishes the responses under way and stops
 * the loop, bounded by what is left of the drain budget. */
static void finish(kvf_daemon *d)
{
	if (d->stopping)
		return;
	d->stopping = 1;
	kvf_loop_timer_stop(d->loop, &d->drain_timer);
	KVF_INFO("daemon", "stopping", "name=%s", d->prog);
	if (!d->http) {
		kvf_loop_stop(d->loop);
		return;
	}
	uint64_t now = kvf_loop_now_ms(d->loop);
	uint64_t left = d->drain_deadline_ms > now ? d->drain_deadline_ms - now : 0;
	kvf_loop_timer_start(d->loop, &d->drain_timer, left, 0, force_stop, d);
	kvf_http_server_shutdown(d->http, on_http_shutdown, d); /* stops the loop when done */
}

static void on_drain_tick(kvf_loop *loop, kvf_timer *t, void *ud)
{
	kvf_daemon *d = ud;
	int busy = d->hooks.busy ? d->hooks.busy(d->hooks.ud) : 0;
	if (!busy) {
		finish(d);
	} else if (kvf_loop_now_ms(loop) >= d->drain_deadline_ms) {
		kvf_loop_timer_stop(loop, &d->drain_timer);
		d->stopping = 1;
		force_stop(loop, t, d);
	}
}

void kvf_daemon_drain(kvf_daemon *d)
{
	if (d->draining)
		return;
	d->draining = 1;
	KVF_INFO("daemon", "draining", "name=%s", d->prog);
	if (d->hooks.drain)
		d->hooks.drain(d->hooks.ud);
}

static void on_signal(kvf_loop *loop, int signo, void *ud)
{
	kvf_daemon *d = ud;
	if (signo == SIGINT && ++d->sigint_count > 1) {
		KVF_WARN("daemon", "second SIGINT: stopping now", "%s", "");
		kvf_loop_stop(loop);
		return;
	}
	KVF_INFO("daemon", "signal: draining then stopping", "signal=%s", signo == SIGINT ? "SIGINT" : "SIGTERM");
	kvf_daemon_drain(d);
	d->drain_deadline_ms = kvf_loop_now_ms(loop) + d->base->drain_timeout_ms;
	if (!kvf_timer_armed(&d->drain_timer))
		kvf_loop_timer_start(loop, &d->drain_timer, 0, DRAIN_POLL_MS, on_drain_tick, d);
}

int kvf_daemon_start(kvf_daemon *d, const kvf_daemon_cfg *base)
{
	int rc;
	d->base = base;
	kvf_log_set_level(base->log_level);
	signal(SIGPIPE, SIG_IGN);
	if (strcmp(d->cluster.secret, "kvfabric-demo-secret") == 0)
		KVF_WARN("daemon", "cluster.secret is the demo default: set your own outside a demo", "%s", "");
	if ((rc = kvf_loop_new(&d->loop)))
		return rc;
	if ((rc = kvf_loop_add_signal(d->loop, SIGTERM, on_signal, d)) ||
	    (rc = kvf_loop_add_signal(d->loop, SIGINT, on_signal, d)))
		return rc;
	if ((rc = metrics_init(d)))
		return rc;
	if (base->admin_socket && base->admin_socket[0]) {
		if ((rc = kvf_admin_new(d->loop, base->admin_socket, &d->admin)))
			return kvf_errf(rc, "admin socket %s: %s", base->admin_socket, kvf_errmsg());
		if ((rc = kvf_admin_register(d->admin, daemon_cmds, sizeof(daemon_cmds) / sizeof(daemon_cmds[0]), d)))
			return rc;
	}
	kvf_http_server_opts hopts = d->http_opts;
	hopts.listen = base->http_listen;
	hopts.listen_fd = 0;
	hopts.server_name = d->prog;
	if ((rc = kvf_http_server_new(d->loop, &hopts, on_http, d, &d->http)))
		return kvf_errf(rc, "HTTP port: %s", kvf_errmsg());
	KVF_INFO("daemon", "started", "name=%s version=%s pid=%d http=%s http_port=%u admin=%s", d->prog,
		 KVF_VERSION, (int)getpid(), base->http_listen, kvf_http_server_port(d->http),
		 d->admin ? base->admin_socket : "-");
	return 0;
}

int kvf_daemon_run(kvf_daemon *d)
{
	int rc = kvf_loop_run(d->loop);
	if (rc) {
		KVF_ERROR("daemon", "event loop failed", "error=\"%s\"", kvf_errmsg());
		return 1;
	}
	KVF_INFO("daemon", "stopped", "name=%s", d->prog);
	return 0;
}

void kvf_daemon_stop(kvf_daemon *d)
{
	kvf_loop_stop(d->loop);
}

void kvf_daemon_close_http(kvf_daemon *d)
{
	kvf_http_server_destroy(d->http);
	d->http = NULL;
}

void kvf_daemon_destroy(kvf_daemon *d)
{
	if (!d)
		return;
	kvf_http_server_destroy(d->http);
	kvf_admin_destroy(d->admin);
	if (d->loop)
		kvf_loop_timer_stop(d->loop, &d->drain_timer);
	kvf_loop_destroy(d->loop);
	kvf_metrics_destroy(d->metrics);
	kvf_config_destroy(d->cfg);
	kvf_free(d);
}
