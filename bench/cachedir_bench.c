/*
 * cachedir_bench.c: kvf-cachedir against Redis doing the same directory work
 * the way llm-d-kv-cache's Redis backend does it, both measured in this run,
 * plus the memory scale test.
 *
 * Setup: the bench starts the real daemon ($KVF_BUILD/bin/kvf-cachedir) and
 * redis-server (no persistence) on free loopback ports, and loads both with
 * the same directory: NCHAINS prompts of 256 blocks (real chained block keys),
 * 16 workers, prompt c held whole in gpu by worker c%16 and its first half in
 * host by worker (c+1)%16. Redis holds what llm-d-kv-cache's RedisIndex
 * holds: one hash per block key (the key in hex) whose fields are the holders
 * "worker-NN@tier"; adding is a pipeline of HSET, a chain lookup one
 * pipeline of HKEYS (one per key, one round trip) after which the client
 * computes each worker's longest consecutive prefix, the same answer a
 * cachedir LOOKUP carries (one frame each way).
 *
 * Phases (each cachedir vs Redis, ratio printed):
 *   1. STORED: 64-key batches from 16 connections, keys/s;
 *   2. LOOKUP of 64- and 256-block chains, closed loop, CONNS connections x
 *      DEPTH requests in flight, lookups/s;
 *   3. lookup latency p50/p99/p99.9 at half of each system's own peak, open
 *      loop (Poisson arrivals, latency from the scheduled send time);
 *   4. scale (cachedir only): a fresh daemon loaded with SCALE_BLOCKS blocks x
 *      2 holders from 1000 workers; RSS growth per block and per entry, and
 *      64-block lookup latency on that index.
 * The bench client is one thread on its own core (the daemon and redis-server
 * are single-threaded too). Figures go to stdout and, as JSON, to $BENCH_OUT.
 *
 * Usage: cachedir_bench [--quick] [--scale-blocks N] [--no-scale] [--seconds S]
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cachedir/cd_index.h"
#include "cachedir/cd_proto.h"
#include "common/kvf_blockkey.h"
#include "common/kvf_buf.h"
#include "common/kvf_err.h"
#include "common/kvf_frame.h"
#include "common/kvf_time.h"
#include "common/kvf_wire.h"

#define CHAIN_LEN 256
#define NWORKERS 16
#define CONNS 8
#define DEPTH 8
#define MAX_INFLIGHT 4096

#define MAX_ROUNDS 9
static int rounds = 3;
static int nchains = 4096;
static double seconds = 2.0;
static uint64_t scale_blocks = 10000000;
static int do_scale = 1;
static int verbose;
static kvf_blockkey *chains; /* [nchains][CHAIN_LEN] */
static char (*chain_hex)[CHAIN_LEN][33];

static void die(const char *what)
{
	fprintf(stderr, "cachedir_bench: %s: %s\n", what, errno ? strerror(errno) : "failed");
	exit(1);
}

/* ---- processes and sockets ---- */

static pid_t children[4];
static int nchildren;

static void kill_children(void)
{
	for (int i = 0; i < nchildren; i++)
		if (children[i] > 0) {
			kill(children[i], SIGTERM);
			waitpid(children[i], NULL, 0);
			children[i] = 0;
		}
}

/* Servers on CPU 0, the bench client on the last CPU (when there are two or
 * more): fewer migrations, steadier figures. */
static void pin(int cpu)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	if (n < 2)
		return;
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu < 0 ? (int)n - 1 : cpu, &set);
	sched_setaffinity(0, sizeof(set), &set);
}

static pid_t spawn(char *const argv[])
{
	pid_t p = fork();
	if (p < 0)
		die("fork");
	if (p == 0) {
		pin(0);
		int devnull = open("/dev/null", O_WRONLY);
		dup2(devnull, 1);
		execv(argv[0], argv);
		execvp(argv[0], argv);
		_exit(127);
	}
	children[nchildren++] = p;
	return p;
}

static uint16_t free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) || getsockname(fd, (struct sockaddr *)&a, &len))
		die("free port");
	close(fd);
	return ntohs(a.sin_port);
}

static int connect_port(uint16_t port, int timeout_ms)
{
	uint64_t end = kvf_now_ms() + (uint64_t)timeout_ms;
	for (;;) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port),
					 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0) {
			int one = 1;
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
			return fd;
		}
		close(fd);
		if (kvf_now_ms() > end)
			die("connect");
		usleep(20000);
	}
}

static void send_all(int fd, const void *p, size_t n)
{
	const uint8_t *b = p;
	while (n) {
		ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			die("send");
		b += w;
		n -= (size_t)w;
	}
}

static uint64_t rss_bytes(pid_t pid)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	uint64_t kb = 0;
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %" SCNu64, &kb) == 1)
			break;
	fclose(f);
	return kb * 1024;
}

/* CPU time the process has run, ns (/proc/PID/schedstat). */
static uint64_t cpu_ns(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/schedstat", (int)pid);
	FILE *f = fopen(path, "r");
	unsigned long long ns = 0;
	if (f) {
		if (fscanf(f, "%llu", &ns) != 1)
			ns = 0;
		fclose(f);
	}
	return ns;
}

/* The daemon's lookup-time histogram (kvf_cachedir_lookup_seconds) from
 * GET /metrics: cumulative counts per upper bound. */
#define HB_MAX 32
struct hist {
	int n;
	double le[HB_MAX];
	uint64_t cum[HB_MAX];
};

static void fetch_hist(uint16_t http_port, struct hist *h)
{
	memset(h, 0, sizeof(*h));
	int fd = connect_port(http_port, 2000);
	const char *req = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
	send_all(fd, req, strlen(req));
	kvf_buf b = KVF_BUF_INIT;
	for (;;) {
		char *sp = kvf_buf_space(&b, 65536);
		ssize_t n = recv(fd, sp, 65536, 0);
		if (n <= 0)
			break;
		kvf_buf_commit(&b, (size_t)n);
	}
	close(fd);
	const char *key = "kvf_cachedir_lookup_seconds_bucket{le=\"";
	for (char *p = b.data; p && (p = strstr(p, key)) && h->n < HB_MAX; p++) {
		char *q = p + strlen(key);
		h->le[h->n] = strncmp(q, "+Inf", 4) == 0 ? INFINITY : strtod(q, NULL);
		char *sp = strchr(q, ' ');
		h->cum[h->n] = sp ? strtoull(sp + 1, NULL, 10) : 0;
		h->n++;
	}
	kvf_buf_free(&b);
}

/* Quantile q of the observations between two scrapes, interpolated inside
 * the bucket (as Prometheus' histogram_quantile), in microseconds. */
static double hist_quantile_us(const struct hist *a, const struct hist *b, double q)
{
	if (b->n == 0 || b->n != a->n)
		return NAN;
	uint64_t total = b->cum[b->n - 1] - a->cum[a->n - 1];
	if (!total)
		return NAN;
	double rank = q * (double)total;
	uint64_t prev = 0;
	for (int i = 0; i < b->n; i++) {
		uint64_t c = b->cum[i] - a->cum[i];
		if ((double)c >= rank) {
			double lo = i ? b->le[i - 1] : 0, hi = b->le[i];
			if (isinf(hi))
				return lo * 1e6;
			double frac = c > prev ? (rank - (double)prev) / (double)(c - prev) : 1.0;
			return (lo + (hi - lo) * frac) * 1e6;
		}
		prev = c;
	}
	return NAN;
}

/* ---- the cachedir side ---- */

/* Reads frames from fd until one of type `want` arrives (blocking). */
static void cd_wait(int fd, kvf_frame_reader *rd, uint8_t want, cd_msg *m)
{
	for (;;) {
		kvf_frame f;
		int rc;
		while ((rc = kvf_frame_reader_next(rd, &f)) == 0) {
			if (cd_proto_decode(&f, 0, m))
				die("decode");
			if (m->hdr.type == CD_ERROR) {
				fprintf(stderr, "cachedir_bench: server error: %s\n", m->u.error.msg);
				exit(1);
			}
			if (m->hdr.type == want)
				return;
		}
		void *buf;
		size_t room;
		if (rc != KVF_E_AGAIN || kvf_frame_reader_space(rd, &buf, &room))
			die("frame reader");
		ssize_t n = recv(fd, buf, room, 0);
		if (n <= 0)
			die("recv");
		kvf_frame_reader_commit(rd, (size_t)n);
	}
}

static kvf_frame_reader *new_reader(void)
{
	kvf_frame_decoder d;
	kvf_frame_decoder_init(&d, 1, 1);
	kvf_frame_reader *rd;
	if (kvf_frame_reader_new(&d, &rd))
		die("reader");
	return rd;
}

static int cd_register_worker(uint16_t port, const char *id, kvf_frame_reader **rd_out)
{
	int fd = connect_port(port, 5000);
	kvf_frame_reader *rd = new_reader();
	kvf_wire_writer w;
	kvf_wire_writer_init(&w, 0);
	cd_register r;
	memset(&r, 0, sizeof(r));
	snprintf(r.worker_id, sizeof(r.worker_id), "%s", id);
	strcpy(r.model, "llama");
	r.role = CD_ROLE_DECODE;
	r.block_size = 16;
	r.epoch = 1;
	r.tiers = 3;
	cd_enc_register(&w, 1, &r); /* last_seq 0: events start at seq 1 */
	send_all(fd, w.buf, w.len);
	kvf_wire_writer_free(&w);
	cd_msg m;
	cd_wait(fd, rd, CD_REGISTERED, &m);
	*rd_out = rd;
	return fd;
}

/* ---- RESP (Redis) ---- */

static void resp_cmd(kvf_buf *b, int argc, const char *const *argv, const size_t *len)
{
	kvf_buf_printf(b, "*%d\r\n", argc);
	for (int i = 0; i < argc; i++) {
		kvf_buf_printf(b, "$%zu\r\n", len[i]);
		kvf_buf_append(b, argv[i], len[i]);
		kvf_buf_puts(b, "\r\n");
	}
}

/* Parses one reply at p[0..n): returns bytes used, 0 if incomplete. For an
 * array of bulk strings, calls fn(ud, str, len) per element. */
static size_t resp_reply(const char *p, size_t n, void (*fn)(void *, const char *, size_t), void *ud)
{
	const char *end = p + n, *q = memchr(p, '\n', n);
	if (!q)
		return 0;
	if (p[0] == ':' || p[0] == '+')
		return (size_t)(q + 1 - p);
	if (p[0] == '-') {
		fprintf(stderr, "cachedir_bench: redis error: %.*s\n", (int)(q - p), p);
		exit(1);
	}
	if (p[0] != '*')
		die("resp: unexpected reply");
	long cnt = strtol(p + 1, NULL, 10);
	const char *c = q + 1;
	for (long i = 0; i < cnt; i++) {
		if (c >= end)
			return 0;
		const char *nl = memchr(c, '\n', (size_t)(end - c));
		if (!nl)
			return 0;
		long blen = strtol(c + 1, NULL, 10);
		const char *s = nl + 1;
		if (s + blen + 2 > end)
			return 0;
		if (fn)
			fn(ud, s, (size_t)blen);
		c = s + blen + 2;
	}
	return (size_t)(c - p);
}

/* ---- driver: pipelined requests over many connections ---- */

enum { SYS_CD, SYS_REDIS, SYS_PING /* PING/PONG to the daemon: the transport's floor */ };

struct conn {
	int fd;
	kvf_frame_reader *rd; /* cachedir */
	kvf_buf in;           /* redis */
	kvf_wire_writer ow;   /* requests not sent yet (cachedir) */
	kvf_buf ob;           /* requests not sent yet (redis) */
	uint64_t sent_ns[MAX_INFLIGHT];
	int chain[MAX_INFLIGHT];
	unsigned head, tail; /* FIFO of requests in flight */
	/* redis: progress of the reply of the oldest lookup */
	int keys_done;
	int run[NWORKERS];   /* per worker: consecutive keys held from key 0 */
	int fresh;           /* the next reply starts a new lookup */
};

struct run {
	int sys;
	int len;          /* keys per lookup */
	struct conn c[CONNS];
	int ep;
	uint64_t done, bad;
	uint64_t *lat;    /* ns */
	size_t nlat, cap_lat;
	int record;
	kvf_wire_writer w;
	kvf_buf rb;
	uint64_t rng;
};

static uint64_t xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void send_lookup(struct run *r, struct conn *c, uint64_t sched_ns)
{
	int ch = (int)(xorshift(&r->rng) % (uint64_t)nchains);
	unsigned slot = c->tail++ % MAX_INFLIGHT;
	c->sent_ns[slot] = sched_ns;
	c->chain[slot] = ch;
	if (r->sys == SYS_CD) {
		cd_enc_lookup(&c->ow, c->tail, "llama", &chains[(size_t)ch * CHAIN_LEN], (size_t)r->len);
	} else if (r->sys == SYS_PING) {
		cd_enc_empty(&c->ow, CD_PING, c->tail);
	} else {
		/* Built with memcpy, not printf: the client's cost must not
		 * be what limits Redis. */
		static const char pre[] = "*2\r\n$5\r\nHKEYS\r\n$32\r\n";
		const size_t one = sizeof(pre) - 1 + 32 + 2;
		char *dst = kvf_buf_space(&c->ob, one * (size_t)r->len);
		for (int i = 0; i < r->len; i++, dst += one) {
			memcpy(dst, pre, sizeof(pre) - 1);
			memcpy(dst + sizeof(pre) - 1, chain_hex[ch][i], 32);
			memcpy(dst + sizeof(pre) - 1 + 32, "\r\n", 2);
		}
		kvf_buf_commit(&c->ob, one * (size_t)r->len);
	}
}

/* Sends the requests queued on c in one write (both systems alike). */
static void flush_conn(struct run *r, struct conn *c)
{
	if (r->sys != SYS_REDIS) {
		if (c->ow.len)
			send_all(c->fd, c->ow.buf, c->ow.len);
		kvf_wire_writer_reset(&c->ow);
	} else {
		if (c->ob.len)
			send_all(c->fd, c->ob.data, c->ob.len);
		kvf_buf_reset(&c->ob);
	}
}

/* Expected answer for chain ch with n keys: worker ch%16 all of it in gpu,
 * worker (ch+1)%16 the first half in host. */
static int check_cd_reply(struct run *r, int ch, cd_msg *m)
{
	cd_lookup_reply *lr = &m->u.lookup_reply;
	int half = CHAIN_LEN / 2 < r->len ? CHAIN_LEN / 2 : r->len;
	if (lr->nholders != 2 || (int)lr->nmatched != r->len)
		return 0;
	cd_holder h;
	int ok = 0;
	while (cd_lookup_reply_next(lr, &h)) {
		int wn = atoi(h.worker_id + 7);
		if (wn == ch % NWORKERS && (int)h.prefix[0] == r->len)
			ok++;
		else if (wn == (ch + 1) % NWORKERS && (int)h.prefix[1] == half && h.prefix[0] == 0)
			ok++;
	}
	return ok == 2;
}

static void redis_field(void *ud, const char *s, size_t len)
{
	/* "worker-NN@gpu": this worker holds the key; extend its run. */
	struct conn *c = ud;
	if (len < 10)
		return;
	int wn = (s[7] - '0') * 10 + (s[8] - '0');
	/* Idempotent: a reply parsed again after more bytes arrived does not
	 * extend a run twice. */
	if (wn >= 0 && wn < NWORKERS && c->run[wn] == c->keys_done)
		c->run[wn]++;
}

static void complete(struct run *r, struct conn *c, int ok)
{
	unsigned slot = c->head++ % MAX_INFLIGHT;
	r->done++;
	r->bad += !ok;
	if (r->record) {
		if (r->nlat == r->cap_lat) {
			r->cap_lat = r->cap_lat ? r->cap_lat * 2 : 1 << 16;
			r->lat = realloc(r->lat, r->cap_lat * sizeof(*r->lat));
		}
		r->lat[r->nlat++] = kvf_now_ns() - c->sent_ns[slot];
	}
}

/* Reads what arrived on c; completes whole lookups. */
static void on_readable(struct run *r, struct conn *c)
{
	if (r->sys != SYS_REDIS) {
		void *buf;
		size_t room;
		if (kvf_frame_reader_space(c->rd, &buf, &room))
			die("reader");
		ssize_t n = recv(c->fd, buf, room, MSG_DONTWAIT);
		if (n <= 0) {
			if (n < 0 && errno == EAGAIN)
				return;
			die("recv cachedir");
		}
		kvf_frame_reader_commit(c->rd, (size_t)n);
		kvf_frame f;
		cd_msg m;
		while (kvf_frame_reader_next(c->rd, &f) == 0) {
			if (cd_proto_decode(&f, 0, &m) || m.hdr.type != (r->sys == SYS_PING ? CD_PONG : CD_LOOKUP_REPLY))
				die("lookup reply");
			int ch = c->chain[c->head % MAX_INFLIGHT];
			complete(r, c, r->sys == SYS_PING || check_cd_reply(r, ch, &m));
		}
		return;
	}
	char *space = kvf_buf_space(&c->in, 1 << 16);
	ssize_t n = recv(c->fd, space, 1 << 16, MSG_DONTWAIT);
	if (n <= 0) {
		if (n < 0 && errno == EAGAIN)
			return;
		die("recv redis");
	}
	kvf_buf_commit(&c->in, (size_t)n);
	for (;;) {
		if (c->fresh) {
			for (int i = 0; i < NWORKERS; i++)
				c->run[i] = 0;
			c->fresh = 0;
		}
		size_t used = resp_reply(kvf_buf_head(&c->in), kvf_buf_avail(&c->in), redis_field, c);
		if (!used)
			break;
		kvf_buf_consume(&c->in, used);
		if (++c->keys_done == r->len) {
			/* As llm-d: the prefix ends at the first key no pod holds;
			 * per worker, the longest consecutive run from key 0. */
			int ch = c->chain[c->head % MAX_INFLIGHT];
			int half = CHAIN_LEN / 2 < r->len ? CHAIN_LEN / 2 : r->len;
			int ok = c->run[ch % NWORKERS] == r->len && c->run[(ch + 1) % NWORKERS] == half;
			c->keys_done = 0;
			c->fresh = 1;
			complete(r, c, ok);
		}
	}
}

static void run_open(struct run *r, uint16_t port, int sys, int len)
{
	memset(r, 0, sizeof(*r));
	r->sys = sys;
	r->len = len;
	r->rng = 0x9e3779b97f4a7c15ull ^ (uint64_t)len;
	kvf_wire_writer_init(&r->w, 0);
	r->ep = epoll_create1(0);
	for (int i = 0; i < CONNS; i++) {
		struct conn *c = &r->c[i];
		c->fd = connect_port(port, 5000);
		if (sys != SYS_REDIS)
			c->rd = new_reader();
		kvf_buf_init(&c->in);
		kvf_buf_init(&c->ob);
		kvf_wire_writer_init(&c->ow, 0);
		c->fresh = 1;
		struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
		epoll_ctl(r->ep, EPOLL_CTL_ADD, c->fd, &ev);
	}
}

static void run_close(struct run *r)
{
	for (int i = 0; i < CONNS; i++) {
		close(r->c[i].fd);
		kvf_frame_reader_free(r->c[i].rd);
		kvf_buf_free(&r->c[i].in);
		kvf_buf_free(&r->c[i].ob);
		kvf_wire_writer_free(&r->c[i].ow);
	}
	close(r->ep);
	kvf_wire_writer_free(&r->w);
	kvf_buf_free(&r->rb);
	free(r->lat);
}

static void poll_once(struct run *r, int timeout_ms)
{
	struct epoll_event evs[CONNS];
	int n = epoll_wait(r->ep, evs, CONNS, timeout_ms);
	for (int i = 0; i < n; i++)
		on_readable(r, evs[i].data.ptr);
}

static unsigned inflight(const struct conn *c)
{
	return c->tail - c->head;
}

/* Closed loop: DEPTH lookups in flight per connection. Returns lookups/s;
 * *cpu_us gets the server's CPU time per lookup over the measured window. */
static double closed_loop(uint16_t port, pid_t server, int sys, int len, uint64_t *bad, double *cpu_us)
{
	struct run r;
	run_open(&r, port, sys, len);
	uint64_t start = kvf_now_ns(), warm = start + 200000000ull, end = warm + (uint64_t)(seconds * 1e9);
	uint64_t done0 = 0, cpu0 = 0;
	int warmed = 0;
	for (;;) {
		uint64_t now = kvf_now_ns();
		if (!warmed && now >= warm) {
			warmed = 1;
			done0 = r.done;
			cpu0 = cpu_ns(server);
		}
		if (now >= end)
			break;
		for (int i = 0; i < CONNS; i++) {
			uint64_t t = kvf_now_ns();
			while (inflight(&r.c[i]) < DEPTH)
				send_lookup(&r, &r.c[i], t);
			flush_conn(&r, &r.c[i]);
		}
		poll_once(&r, 10);
	}
	double rate = (double)(r.done - done0) / seconds;
	*cpu_us = (double)(cpu_ns(server) - cpu0) / 1e3 / (double)(r.done - done0);
	*bad = r.bad;
	/* Drain what is in flight so the next phase starts clean. */
	uint64_t drain_end = kvf_now_ms() + 5000;
	for (int i = 0; i < CONNS; i++)
		while (inflight(&r.c[i]) && kvf_now_ms() < drain_end)
			poll_once(&r, 10);
	run_close(&r);
	return rate;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

struct lat {
	double rate, achieved, p50_us, p99_us, p999_us;
	double keepup; /* answered within the run / sent: below 1 when a queue builds */
	double srv_p50_us, srv_p99_us; /* inside the daemon (its histogram) */
};

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double median(const double *v, int n)
{
	double t[MAX_ROUNDS] = { 0 };
	memcpy(t, v, (size_t)n * sizeof(*t));
	qsort(t, (size_t)n, sizeof(*t), cmp_double);
	return n % 2 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2;
}

/* Field-wise medians of several runs. */
static struct lat lat_median(const struct lat *l, int n)
{
	struct lat m = l[0];
	double v[MAX_ROUNDS] = { 0 };
#define MED(f) do { for (int i_ = 0; i_ < n; i_++) v[i_] = l[i_].f; m.f = median(v, n); } while (0)
	MED(achieved);
	MED(p50_us);
	MED(p99_us);
	MED(p999_us);
	MED(srv_p50_us);
	MED(srv_p99_us);
#undef MED
	return m;
}

/* Open loop at `rate` lookups/s with Poisson arrivals. */
static struct lat open_loop(uint16_t port, int sys, int len, double rate, double secs)
{
	struct run r;
	run_open(&r, port, sys, len);
	uint64_t start = kvf_now_ns(), end = start + (uint64_t)(secs * 1e9);
	double next = (double)start;
	int rr = 0;
	r.record = 1;
	while (kvf_now_ns() < end) {
		uint64_t now = kvf_now_ns();
		/* Every request due by now leaves in this round, one write per
		 * connection; each keeps its scheduled time, so coalescing hides
		 * no latency (and the client stays far from saturation). */
		while ((double)now >= next && next < (double)end) {
			struct conn *c = &r.c[rr++ % CONNS];
			if (inflight(c) < MAX_INFLIGHT - 1)
				send_lookup(&r, c, (uint64_t)next);
			double u = (double)(xorshift(&r.rng) >> 11) / 9007199254740992.0;
			next += -log(1.0 - u) / rate * 1e9;
		}
		for (int i = 0; i < CONNS; i++)
			flush_conn(&r, &r.c[i]);
		int wait_ms = (int)((next - (double)kvf_now_ns()) / 1e6);
		poll_once(&r, wait_ms > 0 ? (wait_ms > 10 ? 10 : wait_ms) : 0);
	}
	uint64_t sent = 0, done_in_run = r.done;
	for (int i = 0; i < CONNS; i++)
		sent += r.c[i].tail;
	uint64_t drain_end = kvf_now_ms() + 5000;
	for (int i = 0; i < CONNS; i++)
		while (inflight(&r.c[i]) && kvf_now_ms() < drain_end)
			poll_once(&r, 10);
	struct lat L = { .rate = rate, .achieved = (double)done_in_run / secs,
			 .keepup = sent ? (double)done_in_run / (double)sent : 0 };
	if (r.nlat) {
		qsort(r.lat, r.nlat, sizeof(*r.lat), cmp_u64);
		L.p50_us = (double)r.lat[r.nlat / 2] / 1e3;
		L.p99_us = (double)r.lat[(size_t)((double)r.nlat * 0.99)] / 1e3;
		L.p999_us = (double)r.lat[(size_t)((double)r.nlat * 0.999)] / 1e3;
	}
	run_close(&r);
	return L;
}

/*
 * The open-loop peak: the highest offered rate (doubling from `from`, then
 * one bisection step) that is still served: 95 % of the requests sent during
 * the run answered within it, and a median latency under 1 ms (no queue
 * building up). Requests
 * arrive one by one here, unlike the batches of the closed loop, so this
 * peak is the one "half of peak" refers to.
 */
static int served(uint16_t port, int sys, int len, double rate)
{
	/* A step fails only if it fails twice: one scheduling hiccup of a
	 * shared machine must not end the ramp. */
	for (int attempt = 0; attempt < 2; attempt++) {
		struct lat L = open_loop(port, sys, len, rate, 0.4);
		int ok = L.keepup >= 0.95 && L.p50_us < 1000;
		if (verbose)
			fprintf(stderr, "  ramp sys=%d len=%d rate=%.0f achieved=%.0f keepup=%.3f p50=%.0f us p99=%.0f us%s\n",
				sys, len, rate, L.achieved, L.keepup, L.p50_us, L.p99_us, ok ? "" : " (not served)");
		if (ok)
			return 1;
	}
	return 0;
}

static double open_peak(uint16_t port, int sys, int len, double from)
{
	double ok = 0, bad = 0;
	for (double rate = from; rate < 4e6; rate *= 2) {
		if (served(port, sys, len, rate)) {
			ok = rate;
		} else {
			bad = rate;
			break;
		}
	}
	if (ok && bad && served(port, sys, len, (ok + bad) / 2))
		ok = (ok + bad) / 2;
	return ok ? ok : from;
}

/* ---- loading ---- */

static void make_chains(void)
{
	kvf_blockkey_ctx *ctx;
	kvf_blockkey_ctx_new("bench-secret", 12, &ctx);
	chains = malloc((size_t)nchains * CHAIN_LEN * sizeof(*chains));
	chain_hex = malloc((size_t)nchains * sizeof(*chain_hex));
	uint32_t tok[CHAIN_LEN * 16];
	for (int c = 0; c < nchains; c++) {
		for (int i = 0; i < CHAIN_LEN * 16; i++)
			tok[i] = (uint32_t)(c * 7919 + i * 31 + 5);
		uint64_t salt = (uint64_t)c;
		kvf_blockkey root = kvf_blockkey_root(ctx, "llama", &salt, sizeof(salt));
		kvf_blockkey_chain(ctx, root, tok, CHAIN_LEN * 16, 16, &chains[(size_t)c * CHAIN_LEN], CHAIN_LEN);
		for (int i = 0; i < CHAIN_LEN; i++)
			kvf_blockkey_to_hex(chains[(size_t)c * CHAIN_LEN + i], chain_hex[c][i]);
	}
	kvf_blockkey_ctx_free(ctx);
}

/* Phase 1, cachedir: 64-key STORED batches from NWORKERS registered workers.
 * Returns keys/s; the worker connections stay open (fds out). */
static double cachedir_load(uint16_t port, int *fds, kvf_frame_reader **rds)
{
	for (int w = 0; w < NWORKERS; w++) {
		char id[32];
		snprintf(id, sizeof(id), "worker-%02d", w);
		fds[w] = cd_register_worker(port, id, &rds[w]);
	}
	kvf_wire_writer wr[NWORKERS];
	uint64_t seq[NWORKERS];
	for (int w = 0; w < NWORKERS; w++) {
		kvf_wire_writer_init(&wr[w], 0);
		seq[w] = 0;
	}
	uint64_t keys = 0, t0 = kvf_now_ns();
	for (int c = 0; c < nchains; c++) {
		int a = c % NWORKERS, b = (c + 1) % NWORKERS;
		for (int off = 0; off < CHAIN_LEN; off += 64) {
			const kvf_blockkey *k = &chains[(size_t)c * CHAIN_LEN + off];
			cd_enc_stored(&wr[a], ++seq[a], CD_TIER_GPU, NULL, k, 64);
			keys += 64;
			if (off < CHAIN_LEN / 2) {
				cd_enc_stored(&wr[b], ++seq[b], CD_TIER_HOST, NULL, k, 64);
				keys += 64;
			}
		}
		if (c % 64 == 63 || c == nchains - 1)
			for (int w = 0; w < NWORKERS; w++) {
				send_all(fds[w], wr[w].buf, wr[w].len);
				kvf_wire_writer_reset(&wr[w]);
			}
	}
	/* A PING behind everything: its reply means all was applied. */
	for (int w = 0; w < NWORKERS; w++) {
		cd_enc_empty(&wr[w], CD_PING, 99);
		send_all(fds[w], wr[w].buf, wr[w].len);
		kvf_wire_writer_free(&wr[w]);
	}
	cd_msg m;
	for (int w = 0; w < NWORKERS; w++)
		cd_wait(fds[w], rds[w], CD_PONG, &m);
	return (double)keys / ((double)(kvf_now_ns() - t0) * 1e-9);
}

/* Phase 1, Redis: the same entries as HSET, 64-command pipelines per
 * batch, 16 connections, all batches of a round in flight. */
static double redis_load(uint16_t port)
{
	int fds[NWORKERS];
	kvf_buf out[NWORKERS], in;
	kvf_buf_init(&in);
	for (int w = 0; w < NWORKERS; w++) {
		fds[w] = connect_port(port, 5000);
		kvf_buf_init(&out[w]);
	}
	uint64_t expect[NWORKERS] = { 0 }, keys = 0, t0 = kvf_now_ns();
	char field[2][NWORKERS][24];
	for (int w = 0; w < NWORKERS; w++) {
		snprintf(field[0][w], 24, "worker-%02d@gpu", w);
		snprintf(field[1][w], 24, "worker-%02d@host", w);
	}
	for (int c = 0; c < nchains; c++) {
		int a = c % NWORKERS, b = (c + 1) % NWORKERS;
		for (int i = 0; i < CHAIN_LEN; i++) {
			const char *argv[4] = { "HSET", chain_hex[c][i], field[0][a], "" };
			size_t lens[4] = { 4, 32, strlen(field[0][a]), 0 };
			resp_cmd(&out[a], 4, argv, lens);
			expect[a]++;
			keys++;
			if (i < CHAIN_LEN / 2) {
				argv[2] = field[1][b];
				lens[2] = strlen(field[1][b]);
				resp_cmd(&out[b], 4, argv, lens);
				expect[b]++;
				keys++;
			}
		}
		if (c % 64 == 63 || c == nchains - 1) {
			for (int w = 0; w < NWORKERS; w++) {
				send_all(fds[w], out[w].data, out[w].len);
				kvf_buf_reset(&out[w]);
			}
			/* Read the replies of this round. */
			for (int w = 0; w < NWORKERS; w++) {
				while (expect[w]) {
					size_t used;
					while (expect[w] &&
					       (used = resp_reply(kvf_buf_head(&in), kvf_buf_avail(&in), NULL, NULL))) {
						kvf_buf_consume(&in, used);
						expect[w]--;
					}
					if (!expect[w])
						break;
					char *sp = kvf_buf_space(&in, 1 << 16);
					ssize_t n = recv(fds[w], sp, 1 << 16, 0);
					if (n <= 0)
						die("recv redis");
					kvf_buf_commit(&in, (size_t)n);
				}
			}
		}
	}
	double rate = (double)keys / ((double)(kvf_now_ns() - t0) * 1e-9);
	for (int w = 0; w < NWORKERS; w++) {
		close(fds[w]);
		kvf_buf_free(&out[w]);
	}
	kvf_buf_free(&in);
	return rate;
}

static uint64_t redis_used_memory(uint16_t port)
{
	int fd = connect_port(port, 2000);
	const char *cmd = "*2\r\n$4\r\nINFO\r\n$6\r\nmemory\r\n";
	send_all(fd, cmd, strlen(cmd));
	char buf[8192];
	size_t got = 0;
	uint64_t v = 0;
	while (got < sizeof(buf) - 1) {
		ssize_t n = recv(fd, buf + got, sizeof(buf) - 1 - got, 0);
		if (n <= 0)
			break;
		got += (size_t)n;
		buf[got] = 0;
		char *p = strstr(buf, "used_memory:");
		if (p && strchr(p, '\n')) {
			v = strtoull(p + 12, NULL, 10);
			break;
		}
	}
	close(fd);
	return v;
}

/* ---- scale ---- */

static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

struct scale {
	uint64_t blocks, entries, rss_base, rss_loaded;
	double load_s, per_block, per_entry;
	struct lat lat64;
};

static struct scale scale_test(const char *daemon)
{
	struct scale S;
	memset(&S, 0, sizeof(S));
	const int W = 1000, G = 4096; /* workers, keys per group */
	uint16_t port = free_port(), hport = free_port();
	char listen[64], hl[64];
	snprintf(listen, sizeof(listen), "cachedir.listen=127.0.0.1:%u", port);
	snprintf(hl, sizeof(hl), "cachedir.http_listen=127.0.0.1:%u", hport);
	char *argv[] = { (char *)daemon, "-o", listen, "-o", hl, "-o",
			 "cachedir.admin_socket=", "-o", "cachedir.log_level=warn", "-o", "cachedir.warmup=0",
			 "-o", "cluster.secret=cachedir-bench", "-o", "cachedir.lease=10m", "-o", "cachedir.heartbeat_interval=60s", "-o",
			 "cachedir.max_clients=2000", NULL };
	pid_t pid = spawn(argv);
	int *fds = malloc((size_t)W * sizeof(*fds));
	kvf_frame_reader **rds = malloc((size_t)W * sizeof(*rds));
	for (int w = 0; w < W; w++) {
		char id[32];
		snprintf(id, sizeof(id), "worker-%04d", w);
		fds[w] = cd_register_worker(port, id, &rds[w]);
	}
	S.rss_base = rss_bytes(pid);
	uint64_t groups = (scale_blocks + G - 1) / G;
	kvf_blockkey *k = malloc(G * sizeof(*k));
	kvf_wire_writer wr;
	kvf_wire_writer_init(&wr, 0);
	uint64_t *seq = calloc((size_t)W, sizeof(*seq));
	uint64_t t0 = kvf_now_ns(), rng = 42;
	for (uint64_t g = 0; g < groups; g++) {
		uint64_t n = g == groups - 1 ? scale_blocks - g * G : G;
		for (uint64_t i = 0; i < n; i++) {
			k[i].lo = splitmix(&rng);
			k[i].hi = splitmix(&rng);
		}
		int a = (int)(g % (uint64_t)W), b = (int)((g + 1) % (uint64_t)W);
		kvf_wire_writer_reset(&wr);
		cd_enc_stored(&wr, ++seq[a], CD_TIER_GPU, NULL, k, n);
		send_all(fds[a], wr.buf, wr.len);
		kvf_wire_writer_reset(&wr);
		cd_enc_stored(&wr, ++seq[b], CD_TIER_HOST, NULL, k, n);
		send_all(fds[b], wr.buf, wr.len);
		S.blocks += n;
		S.entries += 2 * n;
	}
	cd_msg m;
	for (int w = 0; w < W; w++) {
		kvf_wire_writer_reset(&wr);
		cd_enc_empty(&wr, CD_PING, 7);
		send_all(fds[w], wr.buf, wr.len);
	}
	for (int w = 0; w < W; w++)
		cd_wait(fds[w], rds[w], CD_PONG, &m);
	S.load_s = (double)(kvf_now_ns() - t0) * 1e-9;
	S.rss_loaded = rss_bytes(pid);
	S.per_block = (double)(S.rss_loaded - S.rss_base) / (double)S.blocks;
	S.per_entry = (double)(S.rss_loaded - S.rss_base) / (double)S.entries;
	kvf_wire_writer_free(&wr);
	free(k);
	free(seq);
	/* Lookup latency on this index: load 256 of the bench's chains too
	 * (16 more workers) and ask for them at a modest open-loop rate. */
	int lfds[NWORKERS];
	kvf_frame_reader *lrds[NWORKERS];
	int saved = nchains;
	nchains = 256;
	cachedir_load(port, lfds, lrds);
	struct hist h0, h1;
	fetch_hist(hport, &h0);
	S.lat64 = open_loop(port, SYS_CD, 64, 2000, 1.0);
	fetch_hist(hport, &h1);
	S.lat64.srv_p50_us = hist_quantile_us(&h0, &h1, 0.5);
	S.lat64.srv_p99_us = hist_quantile_us(&h0, &h1, 0.99);
	nchains = saved;
	for (int w = 0; w < NWORKERS; w++) {
		close(lfds[w]);
		kvf_frame_reader_free(lrds[w]);
	}
	for (int w = 0; w < W; w++) {
		close(fds[w]);
		kvf_frame_reader_free(rds[w]);
	}
	free(fds);
	free(rds);
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	for (int i = 0; i < nchildren; i++)
		if (children[i] == pid)
			children[i] = 0;
	return S;
}

/*
 * Phase 5: the index alone, in this process (no sockets): the cost of one
 * chain lookup by chain length on a 1M- and a 10M-block index, each block
 * held by two workers. Shows the cost follows the chain length, not the
 * index size.
 */
#define IX_LENS 4
static const int ix_lens[IX_LENS] = { 16, 64, 256, 1024 };

struct ixres {
	uint64_t blocks[2];
	double ns[2][IX_LENS];
	uint64_t bytes[2];
};

static void index_bench(struct ixres *R)
{
	const uint64_t sizes[2] = { scale_blocks / 10, scale_blocks };
	const int G = 4096;
	for (int z = 0; z < 2; z++) {
		cd_index *ix;
		if (cd_index_new(0, &ix))
			die("index");
		cd_worker *w[64];
		cd_register reg;
		memset(&reg, 0, sizeof(reg));
		strcpy(reg.model, "llama");
		reg.role = CD_ROLE_DECODE;
		reg.tiers = 3;
		reg.block_size = 16;
		for (int i = 0; i < 64; i++) {
			snprintf(reg.worker_id, sizeof(reg.worker_id), "w%02d", i);
			if (cd_index_worker_add(ix, &reg, 0, &w[i]))
				die("worker");
		}
		uint64_t rng = 7, groups = sizes[z] / (uint64_t)G;
		kvf_blockkey *first = malloc(groups * 1024 * sizeof(*first)); /* first 1024 keys of each group */
		for (uint64_t g = 0; g < groups; g++)
			for (int i = 0; i < G; i++) {
				kvf_blockkey k = { splitmix(&rng), splitmix(&rng) };
				if (i < 1024)
					first[g * 1024 + (uint64_t)i] = k;
				cd_index_store(ix, w[g % 64], k, CD_TIER_GPU, 0);
				cd_index_store(ix, w[(g + 1) % 64], k, CD_TIER_HOST, 0);
			}
		cd_index_stats st;
		cd_index_stats_get(ix, &st);
		R->blocks[z] = st.keys;
		R->bytes[z] = st.bytes_table + st.bytes_overflow + st.bytes_members + st.bytes_other;
		cd_model *m = cd_index_model(ix, "llama");
		for (int l = 0; l < IX_LENS; l++) {
			int n = 200000 / (ix_lens[l] / 16 + 1);
			uint64_t t0 = kvf_now_ns(), sum = 0;
			for (int q = 0; q < n; q++) {
				uint64_t g = splitmix(&rng) % groups;
				const cd_match *mt;
				size_t nm;
				uint32_t matched;
				cd_index_lookup(ix, m, &first[g * 1024], (size_t)ix_lens[l], 1, &mt, &nm, &matched);
				sum += matched + nm;
			}
			R->ns[z][l] = (double)(kvf_now_ns() - t0) / n;
			if (sum != (uint64_t)n * ((uint64_t)ix_lens[l] + 2))
				die("index lookup answered wrong");
		}
		free(first);
		cd_index_destroy(ix);
	}
}

struct thr {
	int lens[2];
	double cd_store, rd_store, cd_mem, rd_mem;
	double cd_rate[2], rd_rate[2], cd_cpu[2], rd_cpu[2];
	struct lat cd_lat[2], rd_lat[2], ping_lat[2];
	double cd_open_peak[2], rd_open_peak[2];
	uint64_t bad;
};

/* Phases 1-3: the daemon and redis-server side by side. */
static void throughput(const char *daemon, struct thr *T)
{
	T->lens[0] = 64;
	T->lens[1] = 256;
	uint16_t cport = free_port(), rport = free_port(), hport = free_port();
	char listen[64], rp[16], hl[64];
	snprintf(listen, sizeof(listen), "cachedir.listen=127.0.0.1:%u", cport);
	snprintf(hl, sizeof(hl), "cachedir.http_listen=127.0.0.1:%u", hport);
	snprintf(rp, sizeof(rp), "%u", rport);
	char *cargv[] = { (char *)daemon, "-o", listen, "-o", hl, "-o",
			  "cachedir.admin_socket=", "-o", "cachedir.log_level=warn", "-o", "cachedir.warmup=0",
			  "-o", "cluster.secret=cachedir-bench", "-o", "cachedir.lease=10m", "-o", "cachedir.heartbeat_interval=60s", NULL };
	char *rargv[] = { "redis-server", "--port", rp, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
			  "--protected-mode", "no", "--loglevel", "warning", NULL };
	pid_t cpid = spawn(cargv), rpid = spawn(rargv);
	close(connect_port(cport, 10000));
	close(connect_port(rport, 10000));
	/* 1. STORED */
	int fds[NWORKERS];
	kvf_frame_reader *rds[NWORKERS];
	uint64_t rss0 = rss_bytes(cpid), rmem0 = redis_used_memory(rport);
	T->cd_store = cachedir_load(cport, fds, rds);
	T->rd_store = redis_load(rport);
	uint64_t entries = (uint64_t)nchains * (CHAIN_LEN + CHAIN_LEN / 2);
	T->cd_mem = (double)(rss_bytes(cpid) - rss0) / (double)entries;
	T->rd_mem = (double)(redis_used_memory(rport) - rmem0) / (double)entries;
	printf("%-34s %14s %14s %8s\n", "", "kvf-cachedir", "redis", "ratio");
	printf("%-34s %14.0f %14.0f %8.2f\n", "STORED keys/s (64-key batches)", T->cd_store, T->rd_store, T->cd_store / T->rd_store);
	printf("%-34s %14.1f %14.1f %8.2f\n", "bytes per (key, holder) entry", T->cd_mem, T->rd_mem, T->rd_mem / T->cd_mem);

	/* 2. closed-loop lookups, 3. latency at half of peak. The machine may
	 * be shared: each point alternates cachedir and Redis over `rounds`
	 * slices and reports the medians, so both see the same conditions. */
	const int *lens = T->lens;
	double *cd_rate = T->cd_rate, *rd_rate = T->rd_rate, *cd_cpu = T->cd_cpu, *rd_cpu = T->rd_cpu;
	struct lat *cd_lat = T->cd_lat, *rd_lat = T->rd_lat, *ping_lat = T->ping_lat;
	uint64_t bad_total = 0;
	for (int i = 0; i < 2; i++) {
		double cr[MAX_ROUNDS], rr_[MAX_ROUNDS], cc[MAX_ROUNDS], rc[MAX_ROUNDS];
		for (int k = 0; k < rounds; k++) {
			uint64_t bad_c = 0, bad_r = 0;
			cr[k] = closed_loop(cport, cpid, SYS_CD, lens[i], &bad_c, &cc[k]);
			rr_[k] = closed_loop(rport, rpid, SYS_REDIS, lens[i], &bad_r, &rc[k]);
			bad_total += bad_c + bad_r;
		}
		cd_rate[i] = median(cr, rounds);
		rd_rate[i] = median(rr_, rounds);
		cd_cpu[i] = median(cc, rounds);
		rd_cpu[i] = median(rc, rounds);
		char label[64];
		snprintf(label, sizeof(label), "LOOKUP %d-block chains/s", lens[i]);
		printf("%-34s %14.0f %14.0f %8.2f\n", label, cd_rate[i], rd_rate[i], cd_rate[i] / rd_rate[i]);
		snprintf(label, sizeof(label), "  server CPU us per lookup, %d", lens[i]);
		printf("%-34s %14.2f %14.2f %8.2f\n", label, cd_cpu[i], rd_cpu[i], rd_cpu[i] / cd_cpu[i]);
	}
	for (int i = 0; i < 2; i++) {
		struct lat cl[MAX_ROUNDS], pl[MAX_ROUNDS], rl[MAX_ROUNDS];
		T->cd_open_peak[i] = open_peak(cport, SYS_CD, lens[i], 5000);
		T->rd_open_peak[i] = open_peak(rport, SYS_REDIS, lens[i], 500);
		for (int k = 0; k < rounds; k++) {
			struct hist h0, h1;
			fetch_hist(hport, &h0);
			cl[k] = open_loop(cport, SYS_CD, lens[i], T->cd_open_peak[i] / 2, seconds);
			fetch_hist(hport, &h1);
			cl[k].srv_p50_us = hist_quantile_us(&h0, &h1, 0.5);
			cl[k].srv_p99_us = hist_quantile_us(&h0, &h1, 0.99);
			pl[k] = open_loop(cport, SYS_PING, lens[i], T->cd_open_peak[i] / 2, seconds);
			rl[k] = open_loop(rport, SYS_REDIS, lens[i], T->rd_open_peak[i] / 2, seconds);
		}
		cd_lat[i] = lat_median(cl, rounds);
		ping_lat[i] = lat_median(pl, rounds);
		rd_lat[i] = lat_median(rl, rounds);
		char label[64];
		snprintf(label, sizeof(label), "p50 / p99 us @ half open peak, %d", lens[i]);
		printf("%-34s %6.0f / %-6.0f %6.0f / %-6.0f\n", label, cd_lat[i].p50_us, cd_lat[i].p99_us,
		       rd_lat[i].p50_us, rd_lat[i].p99_us);
		snprintf(label, sizeof(label), "  inside the daemon p50 / p99 us");
		printf("%-34s %6.1f / %-6.1f\n", label, cd_lat[i].srv_p50_us, cd_lat[i].srv_p99_us);
		snprintf(label, sizeof(label), "  PING at that rate p50 / p99 us");
		printf("%-34s %6.0f / %-6.0f\n", label, ping_lat[i].p50_us, ping_lat[i].p99_us);
	}
	for (int i = 0; i < 2; i++) {
		char label[64];
		snprintf(label, sizeof(label), "  open-loop peak / offered, %d", lens[i]);
		printf("%-34s %7.0f/%-7.0f %7.0f/%-7.0f\n", label, T->cd_open_peak[i], cd_lat[i].rate,
		       T->rd_open_peak[i], rd_lat[i].rate);
	}
	T->bad = bad_total;
	if (bad_total)
		printf("WARNING: %" PRIu64 " answers differed from the expected holders\n", bad_total);
	for (int w = 0; w < NWORKERS; w++) {
		close(fds[w]);
		kvf_frame_reader_free(rds[w]);
	}
	kill(rpid, SIGTERM);
	waitpid(rpid, NULL, 0);
	kill(cpid, SIGTERM);
	waitpid(cpid, NULL, 0);
	children[0] = children[1] = 0;
}

/* ---- main ---- */

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--quick")) {
			nchains = 512;
			seconds = 0.5;
			rounds = 1;
			scale_blocks = 1000000;
		} else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) {
			rounds = atoi(argv[++i]);
			if (rounds < 1 || rounds > MAX_ROUNDS)
				rounds = 3;
		} else if (!strcmp(argv[i], "--no-scale")) {
			do_scale = 0;
		} else if (!strcmp(argv[i], "--verbose")) {
			verbose = 1;
		} else if (!strcmp(argv[i], "--scale-only")) {
			do_scale = 2;
		} else if (!strcmp(argv[i], "--scale-blocks") && i + 1 < argc) {
			scale_blocks = strtoull(argv[++i], NULL, 10);
		} else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) {
			seconds = atof(argv[++i]);
		} else {
			fprintf(stderr, "usage: cachedir_bench [--quick] [--no-scale] [--scale-blocks N] [--seconds S] [--rounds R] [--scale-only] [--verbose]\n");
			return 2;
		}
	}
	signal(SIGPIPE, SIG_IGN);
	atexit(kill_children);
	const char *build = getenv("KVF_BUILD");
	char daemon[4096];
	snprintf(daemon, sizeof(daemon), "%s/bin/kvf-cachedir", build ? build : "build");
	if (access(daemon, X_OK))
		die(daemon);

	make_chains();
	pin(-1);
	char rver[64] = "?";
	FILE *vp = popen("redis-server --version", "r");
	if (vp) {
		if (fgets(rver, sizeof(rver), vp))
			rver[strcspn(rver, "\n")] = 0;
		pclose(vp);
	}
	struct thr T;
	memset(&T, 0, sizeof(T));
	if (do_scale != 2) {
		printf("cachedir bench: %d chains x %d blocks, %d workers, 2 holders per block; %d connections x %d "
		       "in flight; medians of %d x %.1f s per point\nredis: %s\n\n",
		       nchains, CHAIN_LEN, NWORKERS, CONNS, DEPTH, rounds, seconds, rver);
		throughput(daemon, &T);
	}
	struct ixres IX;
	memset(&IX, 0, sizeof(IX));
	if (do_scale) {
		index_bench(&IX);
		printf("\nindex alone (in process): ns per LOOKUP by chain length\n");
		printf("  %-22s", "blocks x 2 holders");
		for (int l = 0; l < IX_LENS; l++)
			printf(" %9d", ix_lens[l]);
		printf("   index MiB\n");
		for (int z = 0; z < 2; z++) {
			printf("  %-22" PRIu64, IX.blocks[z]);
			for (int l = 0; l < IX_LENS; l++)
				printf(" %9.0f", IX.ns[z][l]);
			printf("   %.0f\n", (double)IX.bytes[z] / 1048576.0);
		}
	}
	struct scale S;
	memset(&S, 0, sizeof(S));
	if (do_scale) {
		S = scale_test(daemon);
		printf("\nscale: %" PRIu64 " blocks x 2 holders (%" PRIu64 " entries, 1000 workers) loaded in %.1f s\n",
		       S.blocks, S.entries, S.load_s);
		printf("  daemon RSS %.0f MiB (%.0f MiB before loading): %.1f bytes/block, %.1f bytes/entry\n",
		       (double)S.rss_loaded / 1048576.0, (double)S.rss_base / 1048576.0, S.per_block, S.per_entry);
		printf("  64-block LOOKUP on that index at %.0f/s: p50 %.0f us, p99 %.0f us; inside the daemon "
		       "p50 %.1f us, p99 %.1f us\n",
		       S.lat64.rate, S.lat64.p50_us, S.lat64.p99_us, S.lat64.srv_p50_us, S.lat64.srv_p99_us);
	}

	const char *outp = getenv("BENCH_OUT");
	if (outp) {
		FILE *f = fopen(outp, "w");
		if (!f)
			die(outp);
		fprintf(f, "{\n  \"bench\": \"cachedir\",\n  \"redis\": \"%s\",\n", rver);
		if (do_scale != 2) {
			fprintf(f, "  \"setup\": {\"chains\": %d, \"chain_blocks\": %d, \"workers\": %d, \"connections\": %d, "
				   "\"depth\": %d, \"seconds\": %.2f, \"rounds\": %d},\n",
				nchains, CHAIN_LEN, NWORKERS, CONNS, DEPTH, seconds, rounds);
			fprintf(f, "  \"stored_keys_per_s\": {\"cachedir\": %.0f, \"redis\": %.0f, \"ratio\": %.3f},\n",
				T.cd_store, T.rd_store, T.cd_store / T.rd_store);
			fprintf(f, "  \"bytes_per_entry\": {\"cachedir_rss\": %.1f, \"redis_used_memory\": %.1f},\n",
				T.cd_mem, T.rd_mem);
			for (int i = 0; i < 2; i++)
				fprintf(f, "  \"lookup_%d\": {\"cachedir_per_s\": %.0f, \"redis_per_s\": %.0f, \"ratio\": %.3f, "
					   "\"cachedir_cpu_us\": %.3f, \"redis_cpu_us\": %.3f, \"cpu_ratio\": %.3f, "
					   "\"cachedir_half_peak\": {\"rate\": %.0f, \"p50_us\": %.1f, \"p99_us\": %.1f, "
					   "\"p999_us\": %.1f, \"server_p50_us\": %.1f, \"server_p99_us\": %.1f, "
					   "\"ping_p50_us\": %.1f, \"ping_p99_us\": %.1f}, "
					   "\"redis_half_peak\": {\"rate\": %.0f, \"p50_us\": %.1f, \"p99_us\": %.1f, "
					   "\"p999_us\": %.1f}, \"cachedir_open_peak\": %.0f, \"redis_open_peak\": %.0f},\n",
					T.lens[i], T.cd_rate[i], T.rd_rate[i], T.cd_rate[i] / T.rd_rate[i], T.cd_cpu[i],
					T.rd_cpu[i], T.rd_cpu[i] / T.cd_cpu[i], T.cd_lat[i].rate, T.cd_lat[i].p50_us,
					T.cd_lat[i].p99_us, T.cd_lat[i].p999_us, T.cd_lat[i].srv_p50_us,
					T.cd_lat[i].srv_p99_us, T.ping_lat[i].p50_us, T.ping_lat[i].p99_us,
					T.rd_lat[i].rate, T.rd_lat[i].p50_us, T.rd_lat[i].p99_us, T.rd_lat[i].p999_us,
					T.cd_open_peak[i], T.rd_open_peak[i]);
			fprintf(f, "  \"wrong_answers\": %" PRIu64 ",\n", T.bad);
		}
		fprintf(f, "  \"scale\": {\"blocks\": %" PRIu64 ", \"entries\": %" PRIu64 ", \"load_s\": %.2f, "
			   "\"rss_base_bytes\": %" PRIu64 ", \"rss_loaded_bytes\": %" PRIu64 ", \"bytes_per_block\": %.1f, "
			   "\"bytes_per_entry\": %.1f, \"lookup64_p50_us\": %.1f, \"lookup64_p99_us\": %.1f, "
			   "\"lookup64_server_p50_us\": %.1f, \"lookup64_server_p99_us\": %.1f}",
			S.blocks, S.entries, S.load_s, S.rss_base, S.rss_loaded, S.per_block, S.per_entry, S.lat64.p50_us,
			S.lat64.p99_us, S.lat64.srv_p50_us, S.lat64.srv_p99_us);
		fprintf(f, ",\n  \"index_ns_per_lookup\": {");
		for (int z = 0; z < 2; z++) {
			fprintf(f, "%s\"%" PRIu64 "\": {\"index_bytes\": %" PRIu64, z ? ", " : "", IX.blocks[z], IX.bytes[z]);
			for (int l = 0; l < IX_LENS; l++)
				fprintf(f, ", \"%d\": %.1f", ix_lens[l], IX.ns[z][l]);
			fprintf(f, "}");
		}
		fprintf(f, "}\n}\n");
		fclose(f);
	}
	free(chains);
	free(chain_hex);
	return T.bad ? 1 : 0;
}
