/*
 * kvf-cachedir-tool: talk to cachedir replicas from the command line, with
 * the client library (cachedir/kvf_cachedir.h) or raw frames.
 *
 *   kvf-cachedir-tool worker  -s HOST:PORT[,...] --id ID --model M --chain SEED:N[:TIER] ...
 *   kvf-cachedir-tool lookup  -s HOST:PORT[,...] --model M --seed S --blocks N
 *   kvf-cachedir-tool workers -s HOST:PORT[,...] [--model M]
 *   kvf-cachedir-tool watch   -s HOST:PORT[,...] [--model M] [--events N]
 *   kvf-cachedir-tool flood   -s HOST:PORT --clients N --lookups L --model M --seed S --blocks B --expect-any X
 *   kvf-cachedir-tool gap     -s HOST:PORT --id ID --model M [--stay-ms MS]
 *   kvf-cachedir-tool raw     -s HOST:PORT --hex HEX
 *
 * Block keys are real chained keys (common/kvf_blockkey.h, no cluster
 * secret) of a synthetic prompt per SEED, so "worker --chain 7:64" holds the
 * first 64 blocks of prompt 7 and "lookup --seed 7 --blocks 80" asks for the
 * first 80. A worker re-announces its chains after every reconnect and runs
 * until SIGINT/SIGTERM, printing one line per connection event; the other
 * commands print their answers one line per item. The integration tests
 * (tests/integration/cachedir_*.sh) drive the daemon with it.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cachedir/cd_proto.h"
#include "cachedir/kvf_cachedir.h"
#include "common/kvf_blockkey.h"
#include "common/kvf_err.h"
#include "common/kvf_frame.h"
#include "common/kvf_log.h"
#include "common/kvf_loop.h"
#include "common/kvf_net.h"
#include "common/kvf_time.h"

#define MAX_SERVERS 16
#define MAX_CHAINS 32

static const char *const tier_names[3] = { "gpu", "host", "disk" };
static const char *const state_names[4] = { "?", "active", "draining", "disconnected" };

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "kvf-cachedir-tool: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	exit(2);
}

/* ---- keys ---- */

/* The first n block keys of synthetic prompt `seed` of model. */
static kvf_blockkey *chain_keys(const char *model, uint64_t seed, uint32_t block_size, size_t n)
{
	kvf_blockkey_ctx *ctx;
	if (kvf_blockkey_ctx_new(NULL, 0, &ctx))
		die("blockkey: %s", kvf_errmsg());
	size_t ntok = n * block_size;
	uint32_t *tok = malloc((ntok ? ntok : 1) * sizeof(*tok));
	kvf_blockkey *keys = malloc((n ? n : 1) * sizeof(*keys));
	if (!tok || !keys)
		die("out of memory");
	for (size_t i = 0; i < ntok; i++)
		tok[i] = (uint32_t)(seed * 1000003u + i * 7u + 1u);
	kvf_blockkey root = kvf_blockkey_root(ctx, model, &seed, sizeof(seed));
	kvf_blockkey_chain(ctx, root, tok, ntok, block_size, keys, n);
	free(tok);
	kvf_blockkey_ctx_free(ctx);
	return keys;
}

static int parse_tier(const char *s)
{
	for (int t = 0; t < 3; t++)
		if (!strcmp(s, tier_names[t]))
			return t;
	die("bad tier '%s' (gpu|host|disk)", s);
}

/* ---- common options ---- */

struct opts {
	const char *servers[MAX_SERVERS];
	size_t nservers;
	char *servers_buf;
	const char *id, *model, *http, *fabric, *hex;
	uint32_t block_size;
	uint64_t seed;
	size_t blocks;
	struct {
		uint64_t seed;
		size_t n;
		int tier;
	} chains[MAX_CHAINS];
	size_t nchains;
	int clients, lookups, events;
	long expect_any;
	uint32_t waiting, running, timeout_ms, stay_ms;
	int role, draining;
};

static void parse(int argc, char **argv, struct opts *o)
{
	static const struct option lo[] = {
		{ "servers", required_argument, NULL, 's' }, { "id", required_argument, NULL, 'i' },
		{ "model", required_argument, NULL, 'm' },   { "block-size", required_argument, NULL, 'b' },
		{ "seed", required_argument, NULL, 'S' },    { "blocks", required_argument, NULL, 'n' },
		{ "chain", required_argument, NULL, 'c' },   { "http", required_argument, NULL, 'H' },
		{ "fabric", required_argument, NULL, 'F' },  { "clients", required_argument, NULL, 'C' },
		{ "lookups", required_argument, NULL, 'L' }, { "expect-any", required_argument, NULL, 'X' },
		{ "waiting", required_argument, NULL, 'w' }, { "running", required_argument, NULL, 'r' },
		{ "timeout", required_argument, NULL, 't' }, { "hex", required_argument, NULL, 'x' },
		{ "events", required_argument, NULL, 'e' },  { "stay-ms", required_argument, NULL, 'y' },
		{ "role", required_argument, NULL, 'R' },    { "draining", no_argument, NULL, 'D' },
		{ NULL, 0, NULL, 0 },
	};
	memset(o, 0, sizeof(*o));
	o->block_size = 16;
	o->expect_any = -1;
	o->timeout_ms = 2000;
	o->clients = 1;
	o->lookups = 1;
	o->role = KVF_CACHEDIR_DECODE;
	int c;
	while ((c = getopt_long(argc, argv, "s:i:m:b:S:n:c:", lo, NULL)) != -1) {
		switch (c) {
		case 's': {
			o->servers_buf = strdup(optarg);
			for (char *save = NULL, *t = strtok_r(o->servers_buf, ",", &save); t;
			     t = strtok_r(NULL, ",", &save))
				if (o->nservers < MAX_SERVERS)
					o->servers[o->nservers++] = t;
			break;
		}
		case 'i': o->id = optarg; break;
		case 'm': o->model = optarg; break;
		case 'b': o->block_size = (uint32_t)strtoul(optarg, NULL, 10); break;
		case 'S': o->seed = strtoull(optarg, NULL, 10); break;
		case 'n': o->blocks = strtoull(optarg, NULL, 10); break;
		case 'c': {
			if (o->nchains == MAX_CHAINS)
				die("too many --chain");
			char tier[16] = "gpu";
			unsigned long long seed, n;
			if (sscanf(optarg, "%llu:%llu:%15s", &seed, &n, tier) < 2)
				die("--chain SEED:N[:TIER], got '%s'", optarg);
			o->chains[o->nchains].seed = seed;
			o->chains[o->nchains].n = n;
			o->chains[o->nchains].tier = parse_tier(tier);
			o->nchains++;
			break;
		}
		case 'H': o->http = optarg; break;
		case 'F': o->fabric = optarg; break;
		case 'C': o->clients = atoi(optarg); break;
		case 'L': o->lookups = atoi(optarg); break;
		case 'X': o->expect_any = atol(optarg); break;
		case 'w': o->waiting = (uint32_t)atoi(optarg); break;
		case 'r': o->running = (uint32_t)atoi(optarg); break;
		case 't': o->timeout_ms = (uint32_t)atoi(optarg); break;
		case 'x': o->hex = optarg; break;
		case 'e': o->events = atoi(optarg); break;
		case 'y': o->stay_ms = (uint32_t)atoi(optarg); break;
		case 'R': o->role = !strcmp(optarg, "prefill") ? 1 : !strcmp(optarg, "both") ? 3 : 2; break;
		case 'D': o->draining = 1; break;
		default: exit(2);
		}
	}
	if (!o->nservers)
		die("-s HOST:PORT[,HOST:PORT...] is required");
}

static kvf_loop *loop;
static volatile int stop_flag;

static void on_signal(kvf_loop *l, int signo, void *ud)
{
	(void)signo;
	(void)ud;
	stop_flag = 1;
	kvf_loop_stop(l);
}

static void run_until(const int *flag, uint32_t timeout_ms)
{
	uint64_t end = kvf_now_ms() + timeout_ms;
	while (!*flag && !stop_flag && kvf_now_ms() < end)
		kvf_loop_run_once(loop, 10);
}

/* ---- worker ---- */

struct worker {
	struct opts *o;
	kvf_blockkey *keys[MAX_CHAINS];
};

static void w_announce(void *ud, kvf_cachedir_sync *s)
{
	struct worker *w = ud;
	for (size_t i = 0; i < w->o->nchains; i++)
		kvf_cachedir_sync_add(s, w->o->chains[i].tier, w->keys[i], w->o->chains[i].n);
}

static void w_load(void *ud, kvf_cachedir_load *l)
{
	struct worker *w = ud;
	l->waiting = w->o->waiting;
	l->running = w->o->running;
	l->kv_total_blocks = 1000;
	l->kv_used_blocks = 0;
	for (size_t i = 0; i < w->o->nchains; i++)
		l->kv_used_blocks += w->o->chains[i].n;
	l->draining = w->o->draining;
}

static void w_status(void *ud, const kvf_cachedir_status *st)
{
	(void)ud;
	switch (st->type) {
	case KVF_CACHEDIR_UP: printf("up server=%s\n", st->addr); break;
	case KVF_CACHEDIR_DOWN: printf("down server=%s err=%s msg=\"%s\"\n", st->addr, kvf_errname(st->err), st->msg); break;
	case KVF_CACHEDIR_SYNCED:
		printf("synced server=%s blocks=%" PRIu64 " swept=%" PRIu64 "\n", st->addr, st->blocks, st->swept);
		break;
	case KVF_CACHEDIR_RESYNC: printf("resync server=%s reason=\"%s\"\n", st->addr, st->msg); break;
	case KVF_CACHEDIR_REFUSED: printf("refused server=%s err=%s msg=\"%s\"\n", st->addr, kvf_errname(st->err), st->msg); break;
	}
	fflush(stdout);
}

static int cmd_worker(struct opts *o)
{
	if (!o->id || !o->model)
		die("worker: --id and --model are required");
	struct worker w = { .o = o };
	for (size_t i = 0; i < o->nchains; i++)
		w.keys[i] = chain_keys(o->model, o->chains[i].seed, o->block_size, o->chains[i].n);
	kvf_cachedir_opts co;
	kvf_cachedir_opts_init(&co);
	co.servers = o->servers;
	co.nservers = o->nservers;
	co.worker_id = o->id;
	co.role = o->role;
	co.model = o->model;
	co.block_size = o->block_size;
	co.tiers = 7;
	co.capacity_blocks[0] = 1000;
	co.http_endpoint = o->http;
	co.fabric_endpoint = o->fabric;
	co.announce = w_announce;
	co.load = w_load;
	co.on_status = w_status;
	co.ud = &w;
	co.reconnect_max_ms = 500;
	kvf_cachedir *c;
	if (kvf_cachedir_new(loop, &co, &c))
		die("%s", kvf_errmsg());
	kvf_loop_run(loop);
	kvf_cachedir_unregister(c);
	uint64_t end = kvf_now_ms() + 100; /* let UNREGISTER leave */
	while (kvf_now_ms() < end)
		kvf_loop_run_once(loop, 10);
	kvf_cachedir_destroy(c);
	for (size_t i = 0; i < o->nchains; i++)
		free(w.keys[i]);
	return 0;
}

/* ---- reader commands ---- */

static kvf_cachedir *reader(struct opts *o)
{
	kvf_cachedir_opts co;
	kvf_cachedir_opts_init(&co);
	co.servers = o->servers;
	co.nservers = o->nservers;
	co.request_timeout_ms = o->timeout_ms;
	co.reconnect_max_ms = 200;
	kvf_cachedir *c;
	if (kvf_cachedir_new(loop, &co, &c))
		die("%s", kvf_errmsg());
	return c;
}

struct done {
	int done, status;
};

static void lookup_print(void *ud, int status, const kvf_cachedir_lookup_result *r)
{
	struct done *d = ud;
	d->done = 1;
	d->status = status;
	if (status) {
		printf("error %s msg=\"%s\"\n", kvf_errname(status), kvf_errmsg());
		return;
	}
	for (size_t i = 0; i < r->nholders; i++) {
		const kvf_cachedir_holder *h = &r->holders[i];
		printf("holder %s state=%s gpu=%u host=%u any=%u\n", h->worker_id,
		       state_names[h->state >= 1 && h->state <= 3 ? h->state : 0], h->prefix_gpu, h->prefix_host,
		       h->prefix_any);
	}
	printf("matched=%zu keys=%zu holders=%zu warming=%d server=%s\n", r->nmatched, r->nkeys, r->nholders,
	       r->warming, r->server);
}

static int cmd_lookup(struct opts *o)
{
	if (!o->model)
		die("lookup: --model is required");
	kvf_cachedir *c = reader(o);
	kvf_blockkey *keys = chain_keys(o->model, o->seed, o->block_size, o->blocks);
	struct done d = { 0, 0 };
	if (kvf_cachedir_lookup(c, o->model, keys, o->blocks, lookup_print, &d, NULL))
		die("%s", kvf_errmsg());
	run_until(&d.done, o->timeout_ms + 1000);
	kvf_cachedir_destroy(c);
	free(keys);
	return d.done && d.status == 0 ? 0 : 1;
}

static void workers_print(void *ud, int status, const kvf_cachedir_worker *w, size_t n)
{
	struct done *d = ud;
	d->done = 1;
	d->status = status;
	if (status) {
		printf("error %s msg=\"%s\"\n", kvf_errname(status), kvf_errmsg());
		return;
	}
	for (size_t i = 0; i < n; i++)
		printf("worker %s model=%s role=%d state=%s gpu=%" PRIu64 " host=%" PRIu64 " disk=%" PRIu64
		       " waiting=%u running=%u kv_used=%" PRIu64 " http=%s hb_age_ms=%u\n",
		       w[i].worker_id, w[i].model, w[i].role, state_names[w[i].state <= 3 ? w[i].state : 0],
		       w[i].blocks[0], w[i].blocks[1], w[i].blocks[2], w[i].load.waiting, w[i].load.running,
		       w[i].load.kv_used_blocks, w[i].http_endpoint, w[i].heartbeat_age_ms);
	printf("workers=%zu\n", n);
}

static int cmd_workers(struct opts *o)
{
	kvf_cachedir *c = reader(o);
	struct done d = { 0, 0 };
	if (kvf_cachedir_workers(c, o->model, workers_print, &d, NULL))
		die("%s", kvf_errmsg());
	run_until(&d.done, o->timeout_ms + 1000);
	kvf_cachedir_destroy(c);
	return d.done && d.status == 0 ? 0 : 1;
}

static int watch_left;
static void watch_print(void *ud, const kvf_cachedir_watch_event *ev)
{
	(void)ud;
	static const char *const kinds[8] = { "?", "snapshot_begin", "snapshot_end", "worker", "worker_gone",
					      "stored", "removed", "cleared" };
	printf("event seq=%" PRIu64 " kind=%s", ev->seq, kinds[ev->kind >= 1 && ev->kind <= 7 ? ev->kind : 0]);
	if (ev->worker_id)
		printf(" worker=%s", ev->worker_id);
	if (ev->kind == KVF_CACHEDIR_EV_STORED || ev->kind == KVF_CACHEDIR_EV_REMOVED)
		printf(" tier=%d keys=%zu", ev->tier, ev->nkeys);
	if (ev->kind == KVF_CACHEDIR_EV_WORKER)
		printf(" state=%s waiting=%u", state_names[ev->worker->state <= 3 ? ev->worker->state : 0],
		       ev->worker->load.waiting);
	printf("\n");
	fflush(stdout);
	if (watch_left > 0 && --watch_left == 0)
		kvf_loop_stop(loop);
}

static int cmd_watch(struct opts *o)
{
	kvf_cachedir *c = reader(o);
	watch_left = o->events;
	if (kvf_cachedir_watch(c, KVF_CACHEDIR_WATCH_WORKERS | KVF_CACHEDIR_WATCH_BLOCKS, o->model, watch_print, NULL))
		die("%s", kvf_errmsg());
	kvf_loop_run(loop);
	kvf_cachedir_destroy(c);
	return 0;
}

/* ---- flood: many clients at once ---- */

struct fclient {
	kvf_cachedir *c;
	int left;
	struct opts *o;
	const kvf_blockkey *keys;
};

static int f_ok, f_err, f_bad, f_running;

static void flood_cb(void *ud, int status, const kvf_cachedir_lookup_result *r)
{
	struct fclient *fc = ud;
	if (status)
		f_err++;
	else if (fc->o->expect_any >= 0 && (r->nholders == 0 || (long)r->holders[0].prefix_any != fc->o->expect_any))
		f_bad++;
	else
		f_ok++;
	if (--fc->left > 0 &&
	    kvf_cachedir_lookup(fc->c, fc->o->model, fc->keys, fc->o->blocks, flood_cb, fc, NULL) == 0)
		return;
	if (--f_running == 0)
		kvf_loop_stop(loop);
}

static int cmd_flood(struct opts *o)
{
	if (!o->model || o->clients < 1 || o->lookups < 1)
		die("flood: --model, --clients, --lookups");
	kvf_blockkey *keys = chain_keys(o->model, o->seed, o->block_size, o->blocks);
	struct fclient *fc = calloc((size_t)o->clients, sizeof(*fc));
	for (int i = 0; i < o->clients; i++) {
		fc[i].c = reader(o);
		fc[i].left = o->lookups;
		fc[i].o = o;
		fc[i].keys = keys;
	}
	/* Every client's first lookup goes out in the same loop iteration. */
	f_running = o->clients;
	for (int i = 0; i < o->clients; i++)
		if (kvf_cachedir_lookup(fc[i].c, o->model, keys, o->blocks, flood_cb, &fc[i], NULL))
			die("%s", kvf_errmsg());
	uint64_t t0 = kvf_now_us();
	kvf_loop_run(loop);
	uint64_t us = kvf_now_us() - t0;
	int peak = 0;
	for (int i = 0; i < o->clients; i++) {
		kvf_cachedir_stats st;
		kvf_cachedir_get_stats(fc[i].c, &st);
		peak += st.servers_up > 0;
		kvf_cachedir_destroy(fc[i].c);
	}
	printf("flood clients=%d connected=%d lookups=%d ok=%d errors=%d mismatched=%d elapsed_ms=%.1f\n",
	       o->clients, peak, o->clients * o->lookups, f_ok, f_err, f_bad, (double)us / 1000.0);
	free(fc);
	free(keys);
	return f_ok == o->clients * o->lookups ? 0 : 1;
}

/* ---- raw frames ---- */

static int hexval(int c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Prints every frame the server sends back until it closes or goes quiet. */
static int print_frames(int fd, uint32_t quiet_ms)
{
	kvf_frame_decoder d;
	kvf_frame_decoder_init(&d, 1, 1);
	kvf_frame_reader *rd;
	kvf_frame_reader_new(&d, &rd);
	struct timeval tv = { quiet_ms / 1000, (quiet_ms % 1000) * 1000 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	int closed = 0;
	for (;;) {
		kvf_frame f;
		int rc;
		while ((rc = kvf_frame_reader_next(rd, &f)) == 0) {
			cd_msg m;
			if (cd_proto_decode(&f, 0, &m)) {
				printf("frame undecodable: %s\n", kvf_errmsg());
				continue;
			}
			printf("frame %s rid=%u", cd_type_name(m.hdr.type), m.hdr.request_id);
			if (m.hdr.type == CD_ERROR)
				printf(" code=%s fatal=%u msg=\"%s\"", kvf_errname(m.u.error.code), m.u.error.fatal,
				       m.u.error.msg);
			if (m.hdr.type == CD_RESYNC)
				printf(" expected=%" PRIu64 " got=%" PRIu64, m.u.resync.expected_seq, m.u.resync.got_seq);
			if (m.hdr.type == CD_SYNCED)
				printf(" blocks=%" PRIu64 " swept=%" PRIu64, m.u.synced.blocks, m.u.synced.swept);
			printf("\n");
		}
		void *buf;
		size_t room;
		if (kvf_frame_reader_space(rd, &buf, &room))
			break;
		ssize_t n = recv(fd, buf, room, 0);
		if (n == 0) {
			closed = 1;
			break;
		}
		if (n < 0)
			break; /* quiet */
		kvf_frame_reader_commit(rd, (size_t)n);
	}
	printf(closed ? "closed\n" : "open\n");
	fflush(stdout);
	kvf_frame_reader_free(rd);
	return closed;
}

static int cmd_raw(struct opts *o)
{
	if (!o->hex)
		die("raw: --hex is required");
	size_t len = strlen(o->hex) / 2;
	uint8_t *b = malloc(len + 1);
	for (size_t i = 0; i < len; i++) {
		int hi = hexval(o->hex[2 * i]), lo = hexval(o->hex[2 * i + 1]);
		if (hi < 0 || lo < 0)
			die("raw: bad hex");
		b[i] = (uint8_t)(hi << 4 | lo);
	}
	int fd;
	if (kvf_net_connect_tcp(o->servers[0], 0, &fd))
		die("%s", kvf_errmsg());
	if (send(fd, b, len, MSG_NOSIGNAL) != (ssize_t)len)
		die("send: %s", strerror(errno));
	print_frames(fd, 1000);
	close(fd);
	free(b);
	return 0;
}

/* gap: a worker over raw frames that loses seq 2, answers RESYNC, stays. */
static void send_w(int fd, kvf_wire_writer *w)
{
	if (send(fd, w->buf, w->len, MSG_NOSIGNAL) != (ssize_t)w->len)
		die("send: %s", strerror(errno));
	kvf_wire_writer_reset(w);
}

static int cmd_gap(struct opts *o)
{
	if (!o->id || !o->model)
		die("gap: --id and --model are required");
	int fd;
	if (kvf_net_connect_tcp(o->servers[0], 0, &fd))
		die("%s", kvf_errmsg());
	kvf_blockkey *keys = chain_keys(o->model, o->seed, o->block_size, 8);
	kvf_wire_writer w;
	kvf_wire_writer_init(&w, 0);
	cd_register r;
	memset(&r, 0, sizeof(r));
	snprintf(r.worker_id, sizeof(r.worker_id), "%s", o->id);
	snprintf(r.model, sizeof(r.model), "%s", o->model);
	r.role = CD_ROLE_DECODE;
	r.block_size = o->block_size;
	r.epoch = (uint64_t)getpid();
	r.tiers = 1;
	cd_enc_register(&w, 1, &r);
	cd_enc_stored(&w, 1, 0, NULL, keys, 4);
	cd_enc_stored(&w, 3, 0, NULL, keys + 4, 4); /* seq 2 never sent */
	send_w(fd, &w);
	print_frames(fd, 300); /* REGISTERED, RESYNC */
	cd_enc_seqmsg(&w, CD_SYNC_BEGIN, 0, 4);
	cd_enc_stored(&w, 5, 0, NULL, keys, 8);
	cd_enc_seqmsg(&w, CD_SYNC_END, 2, 6);
	send_w(fd, &w);
	print_frames(fd, 300); /* SYNCED */
	uint64_t end = kvf_now_ms() + o->stay_ms;
	while (kvf_now_ms() < end && !stop_flag) {
		cd_heartbeat hb = { .seq = 6 };
		cd_enc_heartbeat(&w, 0, &hb);
		send_w(fd, &w);
		kvf_loop_run_once(loop, 200); /* sleeps, and sees SIGTERM */
	}
	close(fd);
	kvf_wire_writer_free(&w);
	free(keys);
	return 0;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: kvf-cachedir-tool COMMAND -s HOST:PORT[,HOST:PORT...] [options]\n"
		"  worker  --id ID --model M --chain SEED:N[:gpu|host|disk]... [--http H] [--fabric F]\n"
		"          [--waiting N] [--running N] [--draining] [--role prefill|decode|both]\n"
		"  lookup  --model M --seed S --blocks N\n"
		"  workers [--model M]\n"
		"  watch   [--model M] [--events N]\n"
		"  flood   --clients N --lookups L --model M --seed S --blocks B [--expect-any X]\n"
		"  gap     --id ID --model M [--stay-ms MS]\n"
		"  raw     --hex HEX\n"
		"common: --block-size N (16), --timeout MS (2000)\n");
}

int main(int argc, char **argv)
{
	if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
		usage();
		return argc < 2 ? 2 : 0;
	}
	const char *cmd = argv[1];
	struct opts o;
	parse(argc - 1, argv + 1, &o);
	setvbuf(stdout, NULL, _IOLBF, 0);
	kvf_log_set_level(KVF_LOG_WARN);
	signal(SIGPIPE, SIG_IGN);
	if (kvf_loop_new(&loop))
		die("%s", kvf_errmsg());
	kvf_loop_add_signal(loop, SIGINT, on_signal, NULL);
	kvf_loop_add_signal(loop, SIGTERM, on_signal, NULL);
	int rc;
	if (!strcmp(cmd, "worker"))
		rc = cmd_worker(&o);
	else if (!strcmp(cmd, "lookup"))
		rc = cmd_lookup(&o);
	else if (!strcmp(cmd, "workers"))
		rc = cmd_workers(&o);
	else if (!strcmp(cmd, "watch"))
		rc = cmd_watch(&o);
	else if (!strcmp(cmd, "flood"))
		rc = cmd_flood(&o);
	else if (!strcmp(cmd, "raw"))
		rc = cmd_raw(&o);
	else if (!strcmp(cmd, "gap"))
		rc = cmd_gap(&o);
	else {
		usage();
		rc = 2;
	}
	kvf_loop_destroy(loop);
	free(o.servers_buf);
	return rc;
}
