/*
 * kvf-fabric-bench: KV block transfer bandwidth and latency between two
 * processes (ib_read_bw / nixlbench in spirit), per transport, with the
 * baselines measured in the same run and printed as ratios:
 *   - tcp READ bandwidth vs iperf3 on loopback (one stream, same machine);
 *   - shm READ bandwidth vs single-thread memcpy of the same sizes;
 *   - posting rate: 16 KiB ops completed per second;
 *   - cuda_ipc READ vs cudaMemcpy device-to-device (GPU machines only).
 *
 *   kvf-fabric-bench [-t tcp,shm,ofi,verbs,cuda_ipc] [-s SECONDS] [--json FILE] [--remote DIR]
 *   kvf-fabric-bench --serve TRANSPORT DIR
 *
 * The target is this program re-executed (--serve), or one started on
 * another host whose DIR (descriptor files) was copied here (--remote DIR,
 * one transport per run): it registers a region
 * (memfd-backed host memory, or GPU memory for cuda_ipc) and exports
 * descriptors for each block size. The initiator keeps `inflight` requests
 * of `batch` ops in flight (READ, then WRITE) for SECONDS per point and
 * waits for completions on the cq's eventfd (no busy polling: two cores are
 * shared). Latency is measured per request, post to poll, one op at a time.
 * Results: a table on stdout and JSON in $BENCH_OUT (or --json).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "common/kvf_err.h"
#include "common/kvf_log.h"
#include "common/kvf_time.h"
#include "fabric/kvf_fabric.h"
#include "kvf_features.h"

#if KVF_HAVE_CUDA
#include <cuda_runtime.h>
#endif

#define REGION (128u << 20)
static const uint64_t sizes[] = { 16u << 10, 64u << 10, 256u << 10, 1u << 20, 4u << 20 };
#define NS (sizeof(sizes) / sizeof(sizes[0]))

static double seconds = 0.4;
static const char *remote_dir; /* --remote: a target started elsewhere with --serve */
static json_t *results;

static int use_cuda(int t)
{
	return t == KVF_FABRIC_CUDA_IPC;
}

static int mem_alloc(int t, size_t len, uint8_t **out)
{
#if KVF_HAVE_CUDA
	if (use_cuda(t)) {
		void *p;
		if (cudaMalloc(&p, len) != cudaSuccess)
			return -1;
		cudaMemset(p, 0x5a, len);
		*out = p;
		return 0;
	}
#endif
	if (kvf_fabric_mem_alloc(len, (void **)out) < 0)
		return -1;
	memset(*out, 0x5a, len); /* fault every page in before measuring */
	return 0;
}

static kvf_fabric *open_fabric(int t, const char *listen)
{
	kvf_fabric_opts o;
	kvf_fabric_opts_init(&o);
	o.transport = t;
	o.listen = listen;
	if (t == KVF_FABRIC_OFI)
		o.ofi_provider = getenv("KVF_OFI_PROVIDER") ? getenv("KVF_OFI_PROVIDER") : "tcp;ofi_rxm";
	kvf_fabric *f = NULL;
	if (kvf_fabric_open(&o, &f) < 0)
		return NULL;
	return f;
}

/* ---- target ---- */

static volatile sig_atomic_t stop;
static void on_term(int s) { stop = 1; }

static int serve(int t, const char *dir)
{
	kvf_fabric *f = open_fabric(t, "127.0.0.1:0");
	if (!f) {
		fprintf(stderr, "serve: %s\n", kvf_errmsg());
		return 1;
	}
	uint8_t *r;
	kvf_fabric_mr *mr;
	if (mem_alloc(t, REGION, &r) < 0 ||
	    kvf_fabric_reg(f, r, REGION, use_cuda(t) ? KVF_FABRIC_MEM_CUDA : KVF_FABRIC_MEM_HOST, &mr) < 0) {
		fprintf(stderr, "serve: region: %s\n", kvf_errmsg());
		return 1;
	}
	for (size_t s = 0; s < NS; s++) {
		uint32_t n = (uint32_t)(REGION / sizes[s]);
		kvf_fabric_range *rg = calloc(n, sizeof(*rg));
		for (uint32_t i = 0; i < n; i++)
			rg[i] = (kvf_fabric_range){ (uint64_t)i * sizes[s], sizes[s] };
		kvf_buf b = KVF_BUF_INIT;
		kvf_fabric_export(f, mr, rg, n, &b);
		char path[512];
		snprintf(path, sizeof(path), "%s/desc-%" PRIu64, dir, sizes[s]);
		FILE *fp = fopen(path, "wb");
		if (!fp || fwrite(b.data, 1, b.len, fp) != b.len || fclose(fp) != 0)
			return 1;
		kvf_buf_free(&b);
		free(rg);
	}
	char path[512];
	snprintf(path, sizeof(path), "%s/ready", dir);
	FILE *fp = fopen(path, "w");
	if (fp)
		fclose(fp);
	signal(SIGTERM, on_term);
	while (!stop)
		pause();
	kvf_fabric_close(f);
	return 0;
}

/* ---- initiator ---- */

struct ctx {
	int t;
	kvf_fabric *f;
	kvf_fabric_cq *cq;
	uint8_t *local;
	kvf_fabric_rdesc *d[NS];
};

static kvf_fabric_rdesc *load(const char *dir, uint64_t bs)
{
	char path[600];
	snprintf(path, sizeof(path), "%s/desc-%" PRIu64, dir, bs);
	FILE *fp = fopen(path, "rb");
	if (!fp)
		return NULL;
	fseek(fp, 0, SEEK_END);
	long n = ftell(fp);
	fseek(fp, 0, SEEK_SET);
	uint8_t *b = malloc((size_t)n);
	kvf_fabric_rdesc *d = NULL;
	if (b && fread(b, 1, (size_t)n, fp) == (size_t)n)
		kvf_fabric_desc_parse(b, (size_t)n, &d);
	free(b);
	fclose(fp);
	return d;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

struct point {
	double gbps;    /* GB/s (1e9 bytes) */
	double ops_s;
	double p50_us, p99_us;
	int errors;
};

/* Keeps `inflight` requests of `batch` ops of size index s in flight for
 * `secs`. Latencies (post to poll) are recorded when lat != NULL. */
static struct point run(struct ctx *c, int opcode, size_t s, uint32_t batch, uint32_t inflight, double secs,
			int want_lat)
{
	struct point pt = { 0, 0, 0, 0, 0 };
	uint64_t bs = sizes[s];
	uint32_t nblk = (uint32_t)(REGION / bs);
	uint64_t span = (uint64_t)batch * bs;
	uint32_t slots = (uint32_t)(REGION / span);
	if (slots > inflight)
		slots = inflight;
	if (slots == 0)
		return pt;
	inflight = slots;
	kvf_fabric_op *ops = calloc((size_t)batch * inflight, sizeof(*ops));
	uint64_t *t_post = calloc(inflight, sizeof(uint64_t));
	size_t lcap = 1 << 20, nlat = 0;
	uint64_t *lat = want_lat ? malloc(lcap * sizeof(uint64_t)) : NULL;
	uint32_t next_blk = 0;
	uint64_t bytes = 0, nops = 0;
	uint64_t t0 = kvf_now_ns(), end = t0 + (uint64_t)(secs * 1e9);
	int outstanding = 0;
	for (uint32_t k = 0; k < inflight; k++) {
		for (uint32_t j = 0; j < batch; j++) {
			ops[k * batch + j] = (kvf_fabric_op){ c->local + k * span + j * bs, next_blk, 0, bs };
			next_blk = (next_blk + 1) % nblk;
		}
		t_post[k] = kvf_now_ns();
		if (kvf_fabric_post(c->cq, opcode, c->d[s], &ops[k * batch], batch, k, NULL) == 0)
			outstanding++;
		else
			pt.errors++;
	}
	while (outstanding > 0) {
		kvf_fabric_comp cp[16];
		int n = kvf_fabric_poll(c->cq, cp, 16);
		if (n == 0) {
			struct pollfd pfd = { kvf_fabric_cq_fd(c->cq), POLLIN, 0 };
			poll(&pfd, 1, 1000);
			continue;
		}
		uint64_t now = kvf_now_ns();
		for (int i = 0; i < n; i++) {
			if (cp[i].kind != KVF_FABRIC_COMP_XFER)
				continue;
			outstanding--;
			uint32_t k = (uint32_t)cp[i].cookie;
			if (cp[i].status) {
				pt.errors++;
				continue;
			}
			bytes += cp[i].bytes;
			nops += batch;
			if (lat && nlat < lcap)
				lat[nlat++] = now - t_post[k];
			if (now < end) {
				for (uint32_t j = 0; j < batch; j++) {
					ops[k * batch + j].block = next_blk;
					next_blk = (next_blk + 1) % nblk;
				}
				t_post[k] = kvf_now_ns();
				if (kvf_fabric_post(c->cq, opcode, c->d[s], &ops[k * batch], batch, k, NULL) == 0)
					outstanding++;
				else
					pt.errors++;
			}
		}
	}
	double el = (double)(kvf_now_ns() - t0) / 1e9;
	pt.gbps = (double)bytes / el / 1e9;
	pt.ops_s = (double)nops / el;
	if (lat && nlat) {
		qsort(lat, nlat, sizeof(uint64_t), cmp_u64);
		pt.p50_us = (double)lat[nlat / 2] / 1e3;
		pt.p99_us = (double)lat[(size_t)((double)nlat * 0.99)] / 1e3;
	}
	free(ops);
	free(t_post);
	free(lat);
	return pt;
}

static void record(const char *tn, const char *kind, const char *op, uint64_t bs, uint32_t batch, uint32_t inflight,
		   struct point p)
{
	json_t *o = json_pack("{s:s,s:s,s:s,s:I,s:i,s:i,s:f,s:f,s:i}", "transport", tn, "kind", kind, "op", op,
			      "block_bytes", (json_int_t)bs, "batch", (int)batch, "inflight", (int)inflight, "GBps",
			      p.gbps, "ops_per_s", p.ops_s, "errors", p.errors);
	if (p.p50_us > 0) {
		json_object_set_new(o, "p50_us", json_real(p.p50_us));
		json_object_set_new(o, "p99_us", json_real(p.p99_us));
	}
	json_array_append_new(results, o);
	printf("%-9s %-8s %-5s %8" PRIu64 "K %5u %4u %9.2f %12.0f", tn, kind, op, bs >> 10, batch, inflight, p.gbps,
	       p.ops_s);
	if (p.p50_us > 0)
		printf(" %9.1f %9.1f", p.p50_us, p.p99_us);
	else
		printf(" %9s %9s", "-", "-");
	printf("%s\n", p.errors ? "  ERRORS" : "");
	fflush(stdout);
}

struct tres {
	double read_1m, read_4m; /* GB/s, measured next to their baseline */
	double base_1m, base_4m; /* that baseline, GB/s (iperf3, memcpy, cudaMemcpy) */
	double post16k;          /* ops/s */
	int ran;
	char base_why[128];
};

static double memcpy_gbps(size_t len, size_t chunk);

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(double), cmp_d);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}
static double iperf3_gbps(char *why, size_t cap);
#if KVF_HAVE_CUDA
static double cuda_d2d_gbps(void);
#endif

static int bench_transport(int t, const char *self, struct tres *out, json_t *skipped)
{
	const char *tn = kvf_fabric_transport_name(t);
	struct ctx c;
	memset(&c, 0, sizeof(c));
	c.t = t;
	c.f = open_fabric(t, "127.0.0.1:0");
	if (!c.f) {
		printf("%-9s skipped: %s\n", tn, kvf_errmsg());
		json_object_set_new(skipped, tn, json_string(kvf_errmsg()));
		return 0;
	}
	char dir[512] = "/tmp/kvf-fabric-bench.XXXXXX";
	pid_t pid = -1;
	if (remote_dir) {
		snprintf(dir, sizeof(dir), "%s", remote_dir);
	} else {
		if (!mkdtemp(dir))
			return -1;
		pid = fork();
		if (pid == 0) {
			execl(self, self, "--serve", tn, dir, (char *)NULL);
			_exit(127);
		}
	}
	char rp[600];
	snprintf(rp, sizeof(rp), "%s/ready", dir);
	struct stat st;
	uint64_t deadline = kvf_now_ms() + 30000;
	while (stat(rp, &st) != 0 && kvf_now_ms() < deadline && (pid < 0 || waitpid(pid, NULL, WNOHANG) == 0))
		usleep(20000);
	int ok = stat(rp, &st) == 0;
	for (size_t s = 0; ok && s < NS; s++)
		ok = (c.d[s] = load(dir, sizes[s])) != NULL;
	kvf_fabric_mr *mr;
	ok = ok && mem_alloc(t, REGION, &c.local) == 0 &&
	     kvf_fabric_reg(c.f, c.local, REGION, use_cuda(t) ? KVF_FABRIC_MEM_CUDA : KVF_FABRIC_MEM_HOST, &mr) == 0 &&
	     kvf_fabric_cq_new(c.f, 0, &c.cq) == 0;
	if (!ok) {
		fprintf(stderr, "%s: setup failed: %s\n", tn, kvf_errmsg());
		if (pid > 0) {
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
		}
		return -1;
	}
	/* warm-up: connect, attach, fault in */
	run(&c, KVF_FABRIC_READ, NS - 1, 8, 2, 0.05, 0);
	for (size_t s = 0; s < NS; s++) {
		struct point p = run(&c, KVF_FABRIC_READ, s, 16, 4, seconds, 0);
		record(tn, "bw", "read", sizes[s], 16, 4, p);
	}
	for (size_t s = 0; s < NS; s += 2)
		record(tn, "bw", "write", sizes[s], 16, 4, run(&c, KVF_FABRIC_WRITE, s, 16, 4, seconds, 0));
	/* batch depth sweep at 256 KiB */
	static const uint32_t depth[] = { 1, 8, 64 };
	for (size_t i = 0; i < 3; i++)
		record(tn, "batch", "read", 256u << 10, depth[i], 2, run(&c, KVF_FABRIC_READ, 2, depth[i], 2, seconds, 0));
	/* latency: one op per request, one request at a time */
	for (size_t s = 0; s < NS; s += 2)
		record(tn, "lat", "read", sizes[s], 1, 1, run(&c, KVF_FABRIC_READ, s, 1, 1, seconds, 1));
	/* posting rate: 16 KiB ops, batches of 64, 4 requests in flight */
	struct point pr = run(&c, KVF_FABRIC_READ, 0, 64, 4, seconds, 0);
	record(tn, "post", "read", sizes[0], 64, 4, pr);
	out->post16k = pr.ops_s;
	out->ran = 1;
	/* ratio points: baseline and fabric runs alternate (b f b f b f b) and
	 * their medians are compared, so both see the same machine load (two
	 * cores are shared with other jobs) */
	for (int k = 0; k < 2; k++) {
		size_t s = k ? NS - 1 : 3; /* 1 MiB, 4 MiB */
		double b[4], fb[3];
		int nb = 0;
		for (int rep = 0; rep < 4; rep++) {
			double x = -1;
			if (t == KVF_FABRIC_TCP)
				x = iperf3_gbps(out->base_why, sizeof(out->base_why));
			else if (t == KVF_FABRIC_SHM)
				x = memcpy_gbps(64u << 20, sizes[s]);
#if KVF_HAVE_CUDA
			else if (t == KVF_FABRIC_CUDA_IPC)
				x = cuda_d2d_gbps();
#endif
			if (x <= 0)
				break;
			b[nb++] = x;
			if (rep == 3)
				break;
			struct point p = run(&c, KVF_FABRIC_READ, s, 16, 4, seconds * 1.5, 0);
			record(tn, "ratio", "read", sizes[s], 16, 4, p);
			fb[rep] = p.gbps;
		}
		if (nb < 4)
			break;
		double mb = median(b, 4), mf = median(fb, 3);
		if (k) {
			out->read_4m = mf;
			out->base_4m = mb;
		} else {
			out->read_1m = mf;
			out->base_1m = mb;
		}
	}
	kvf_buf b = KVF_BUF_INIT;
	kvf_fabric_show_peers(c.f, 0, &b);
	fprintf(stderr, "%s", b.data ? b.data : "");
	kvf_buf_free(&b);
	if (pid > 0) {
		kill(pid, SIGTERM);
		waitpid(pid, NULL, 0);
	}
	for (size_t s = 0; s < NS; s++)
		kvf_fabric_desc_free(c.d[s]);
	kvf_fabric_cq_destroy(c.cq);
	kvf_fabric_close(c.f);
#if KVF_HAVE_CUDA
	if (use_cuda(t))
		cudaFree(c.local);
	else
#endif
		kvf_fabric_mem_free(c.local);
	if (!remote_dir) {
		char cmd[700];
		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		if (system(cmd) != 0)
			fprintf(stderr, "cannot remove %s\n", dir);
	}
	return 0;
}

/* ---- baselines ---- */

/* Single-thread memcpy over len bytes in chunk-sized copies: the shm
 * transport's work for blocks of that size, done directly. */
static double memcpy_gbps(size_t len, size_t chunk)
{
	uint8_t *a = aligned_alloc(4096, len), *b = aligned_alloc(4096, len);
	memset(a, 1, len);
	memset(b, 2, len);
	uint64_t bytes = 0, t0 = kvf_now_ns(), end = t0 + (uint64_t)(seconds * 1.5e9);
	while (kvf_now_ns() < end) {
		for (size_t off = 0; off + chunk <= len; off += chunk) {
			memcpy(b + off, a + off, chunk);
			bytes += chunk;
		}
	}
	double g = (double)bytes / ((double)(kvf_now_ns() - t0) / 1e9) / 1e9;
	volatile uint8_t sink = b[len - 1];
	(void)sink;
	free(a);
	free(b);
	return g;
}

static int free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t l = sizeof(sa);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || getsockname(fd, (struct sockaddr *)&sa, &l))
		return -1;
	close(fd);
	return ntohs(sa.sin_port);
}

/* iperf3 on loopback, one stream: GB/s, or -1 with why. */
static double iperf3_gbps(char *why, size_t cap)
{
	int port = free_port();
	if (port < 0 || system("command -v iperf3 >/dev/null 2>&1") != 0) {
		snprintf(why, cap, "iperf3 not installed");
		return -1;
	}
	pid_t srv = fork();
	if (srv == 0) {
		int dn = open("/dev/null", O_WRONLY);
		dup2(dn, 1);
		dup2(dn, 2);
		char p[16];
		snprintf(p, sizeof(p), "%d", port);
		execlp("iperf3", "iperf3", "-s", "-1", "-B", "127.0.0.1", "-p", p, (char *)NULL);
		_exit(127);
	}
	usleep(300000);
	char cmd[200];
	snprintf(cmd, sizeof(cmd), "iperf3 -c 127.0.0.1 -p %d -t %.1f -J 2>/dev/null", port,
		 seconds * 1.5 < 1 ? 1.0 : seconds * 1.5);
	FILE *fp = popen(cmd, "r");
	double g = -1;
	if (fp) {
		kvf_buf b = KVF_BUF_INIT;
		char tmp[4096];
		size_t n;
		while ((n = fread(tmp, 1, sizeof(tmp), fp)) > 0)
			kvf_buf_append(&b, tmp, n);
		pclose(fp);
		json_error_t je;
		json_t *j = b.data ? json_loadb(b.data, b.len, 0, &je) : NULL;
		json_t *bps = j ? json_object_get(json_object_get(json_object_get(j, "end"), "sum_received"),
						  "bits_per_second")
				: NULL;
		if (bps && json_is_number(bps))
			g = json_number_value(bps) / 8 / 1e9;
		else
			snprintf(why, cap, "could not read iperf3's JSON");
		json_decref(j);
		kvf_buf_free(&b);
	}
	kill(srv, SIGTERM);
	waitpid(srv, NULL, 0);
	return g;
}

#if KVF_HAVE_CUDA
static double cuda_d2d_gbps(void)
{
	int n = 0;
	if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0)
		return -1;
	void *a, *b;
	if (cudaMalloc(&a, 4u << 20) != cudaSuccess || cudaMalloc(&b, 4u << 20) != cudaSuccess)
		return -1;
	uint64_t bytes = 0, t0 = kvf_now_ns(), end = t0 + (uint64_t)(seconds * 1e9);
	while (kvf_now_ns() < end) {
		cudaMemcpy(b, a, 4u << 20, cudaMemcpyDeviceToDevice);
		bytes += 4u << 20;
	}
	cudaDeviceSynchronize();
	double g = (double)bytes / ((double)(kvf_now_ns() - t0) / 1e9) / 1e9;
	cudaFree(a);
	cudaFree(b);
	return g;
}
#endif

int main(int argc, char **argv)
{
	kvf_log_set_level(KVF_LOG_WARN);
	if (argc == 4 && !strcmp(argv[1], "--serve")) {
		for (int t = 1; t < KVF_FABRIC_NTRANSPORTS; t++)
			if (!strcmp(argv[2], kvf_fabric_transport_name(t)))
				return serve(t, argv[3]);
		return 2;
	}
	const char *list = "tcp,shm,ofi,verbs,cuda_ipc", *json_path = getenv("BENCH_OUT");
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-t") && i + 1 < argc)
			list = argv[++i];
		else if (!strcmp(argv[i], "-s") && i + 1 < argc)
			seconds = atof(argv[++i]);
		else if (!strcmp(argv[i], "--json") && i + 1 < argc)
			json_path = argv[++i];
		else if (!strcmp(argv[i], "--remote") && i + 1 < argc)
			remote_dir = argv[++i];
		else {
			fprintf(stderr,
				"usage: %s [-t tcp,shm,ofi,verbs,cuda_ipc] [-s SECONDS_PER_POINT] [--json FILE] [--remote DIR]\n"
				"       %s --serve TRANSPORT DIR   (a target; --remote DIR uses its descriptors)\n",
				argv[0], argv[0]);
			return 2;
		}
	}
	char self[4096];
	ssize_t sl = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (sl <= 0)
		return 1;
	self[sl] = 0;
	results = json_array();
	json_t *skipped = json_object();
	printf("kvf-fabric-bench: %.2f s per point, region %u MiB, %ld cores; %s\n", seconds, REGION >> 20,
	       sysconf(_SC_NPROCESSORS_ONLN), KVF_FEATURES_SUMMARY);
	printf("%-9s %-8s %-5s %9s %5s %4s %9s %12s %9s %9s\n", "transport", "kind", "op", "block", "batch", "infl",
	       "GB/s", "ops/s", "p50_us", "p99_us");
	struct tres tr[KVF_FABRIC_NTRANSPORTS];
	memset(tr, 0, sizeof(tr));
	for (int t = 1; t < KVF_FABRIC_NTRANSPORTS; t++) {
		const char *tn = kvf_fabric_transport_name(t);
		size_t n = strlen(tn);
		const char *p = strstr(list, tn);
		if (!p || (p[n] && p[n] != ','))
			continue;
		if (bench_transport(t, self, &tr[t], skipped) < 0)
			fprintf(stderr, "%s: failed\n", tn);
	}

	/* baselines and ratios (measured next to their fabric points) */
	json_t *base = json_object(), *ratios = json_object();
	printf("\nbaselines (same run, alternating with the ratio points; medians):\n");
	struct {
		int t;
		const char *base_name, *ratio_name, *what;
		double target;
	} rt[] = {
		{ KVF_FABRIC_TCP, "iperf3_loopback_GBps", "tcp_read_%s_vs_iperf3", "iperf3 loopback, 1 stream", 0.8 },
		{ KVF_FABRIC_SHM, "memcpy_1thread_GBps", "shm_read_%s_vs_memcpy", "memcpy, 1 thread", 0.7 },
		{ KVF_FABRIC_CUDA_IPC, "cuda_d2d_GBps", "cuda_ipc_read_%s_vs_d2d", "cudaMemcpy device-to-device", 0.9 },
	};
	for (size_t i = 0; i < sizeof(rt) / sizeof(rt[0]); i++) {
		struct tres *x = &tr[rt[i].t];
		if (!x->ran)
			continue;
		if (x->base_1m <= 0) {
			printf("  %s: %s\n", rt[i].what, x->base_why[0] ? x->base_why : "not measured");
			continue;
		}
		const char *tn = kvf_fabric_transport_name(rt[i].t);
		char key[64];
		double r1 = x->read_1m / x->base_1m, r4 = x->base_4m > 0 ? x->read_4m / x->base_4m : 0;
		printf("  %s: %.2f GB/s (1 MiB), %.2f GB/s (4 MiB)\n", rt[i].what, x->base_1m, x->base_4m);
		printf("  %s READ 1 MiB: %.2f GB/s = %.2f x baseline; 4 MiB: %.2f GB/s = %.2f x (target >= %.1f)\n", tn,
		       x->read_1m, r1, x->read_4m, r4, rt[i].target);
		json_t *b = json_pack("{s:f,s:f}", "1MiB", x->base_1m, "4MiB", x->base_4m);
		json_object_set_new(base, rt[i].base_name, b);
		snprintf(key, sizeof(key), rt[i].ratio_name, "1MiB");
		json_object_set_new(ratios, key, json_real(r1));
		snprintf(key, sizeof(key), rt[i].ratio_name, "4MiB");
		json_object_set_new(ratios, key, json_real(r4));
	}
	json_t *post = json_object();
	for (int t = 1; t < KVF_FABRIC_NTRANSPORTS; t++)
		if (tr[t].ran) {
			printf("  posting rate, 16 KiB ops (batches of 64): %s %.0f ops/s\n", kvf_fabric_transport_name(t),
			       tr[t].post16k);
			json_object_set_new(post, kvf_fabric_transport_name(t), json_real(tr[t].post16k));
		}
	json_t *doc = json_pack("{s:s,s:f,s:I,s:o,s:o,s:o,s:o,s:o}", "bench", "fabric", "seconds_per_point", seconds,
				"cores", (json_int_t)sysconf(_SC_NPROCESSORS_ONLN), "results", results, "baselines", base,
				"ratios", ratios, "posting_rate_16KiB_ops_per_s", post, "skipped", skipped);
	if (json_path && json_dump_file(doc, json_path, JSON_INDENT(2)) == 0)
		printf("\nJSON: %s\n", json_path);
	json_decref(doc);
	return 0;
}
