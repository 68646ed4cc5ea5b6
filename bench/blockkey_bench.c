/*
 * blockkey_bench.c: block key throughput (keys/s and GB/s of token ids hashed)
 * for several block sizes, with two baselines measured in the same run on the
 * same bytes:
 *   - xxh3_raw: XXH3_128bits_withSecret over prebuilt, independent messages
 *     of the same length (what the hash alone costs, no chaining, no copy);
 *   - xxh3_serial: the same raw hashing where each message's first 16 bytes
 *     are the previous hash, written in place (the dependency a chain has:
 *     key i+1 cannot start before key i is done, so a chain runs at XXH3's
 *     latency, not its throughput); the gap to the chain is the API's cost;
 *   - memcpy: copying the token bytes once (memory bandwidth).
 * Prints a table and writes the figures and ratios as JSON to $BENCH_OUT.
 * Usage: blockkey_bench [n_tokens] (default 4 Mi tokens).
 */
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "common/kvf_blockkey.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static volatile uint64_t sink;

#define REPS 5

int main(int argc, char **argv)
{
	size_t n_tokens = argc > 1 ? strtoull(argv[1], NULL, 0) : (size_t)4 << 20;
	const size_t block_sizes[] = { 16, 64, 256 };
	enum { NBS = 3 };
	uint32_t *tokens = malloc(n_tokens * 4);
	uint32_t *copy = malloc(n_tokens * 4);
	kvf_blockkey *keys = malloc((n_tokens + 1) * sizeof(*keys));
	/* messages for the raw baseline: [16-byte parent][block tokens] each */
	unsigned char *msgs = malloc(n_tokens * 4 + (n_tokens / 16 + 1) * 16);
	if (!tokens || !copy || !keys || !msgs) {
		fprintf(stderr, "blockkey_bench: out of memory\n");
		return 1;
	}
	for (size_t i = 0; i < n_tokens; i++)
		tokens[i] = (uint32_t)(i * 2654435761u + 17) % 152064u;

	kvf_blockkey_ctx *ctx;
	const char secret[] = "bench-cluster-secret";
	if (kvf_blockkey_ctx_new(secret, sizeof(secret) - 1, &ctx) != 0)
		return 1;
	unsigned char raw_secret[192];
	XXH3_generateSecret(raw_secret, sizeof(raw_secret), secret, sizeof(secret) - 1);
	kvf_blockkey root = kvf_blockkey_root(ctx, "bench-model", "tenant", 6);

	double keys_s[NBS], gbs[NBS], raw_keys_s[NBS], ratio_raw[NBS], ser_keys_s[NBS], ratio_ser[NBS];
	double memcpy_gbs = 0;

	for (int r = 0; r < REPS; r++) {
		double t0 = now_s();
		memcpy(copy, tokens, n_tokens * 4);
		double dt = now_s() - t0;
		sink += copy[n_tokens / 2];
		double g = (double)n_tokens * 4 / dt / 1e9;
		if (g > memcpy_gbs)
			memcpy_gbs = g;
	}

	for (int b = 0; b < NBS; b++) {
		size_t bs = block_sizes[b], nblk = n_tokens / bs, mlen = 16 + 4 * bs;
		for (size_t i = 0; i < nblk; i++) {
			memset(msgs + i * mlen, (int)i, 16);
			memcpy(msgs + i * mlen + 16, tokens + i * bs, 4 * bs);
		}
		double best = 1e9, best_raw = 1e9, best_ser = 1e9;
		for (int r = 0; r < REPS; r++) {
			double t0 = now_s();
			size_t n = kvf_blockkey_chain(ctx, root, tokens, n_tokens, bs, keys, nblk);
			double dt = now_s() - t0;
			sink += keys[n - 1].lo;
			if (dt < best)
				best = dt;
			t0 = now_s();
			uint64_t acc = 0;
			for (size_t i = 0; i < nblk; i++)
				acc += XXH3_128bits_withSecret(msgs + i * mlen, mlen, raw_secret, 192).low64;
			dt = now_s() - t0;
			sink += acc;
			if (dt < best_raw)
				best_raw = dt;
			t0 = now_s();
			XXH128_hash_t h = { 0, 0 };
			for (size_t i = 0; i < nblk; i++) {
				memcpy(msgs + i * mlen, &h, 16);
				h = XXH3_128bits_withSecret(msgs + i * mlen, mlen, raw_secret, 192);
			}
			dt = now_s() - t0;
			sink += h.low64;
			if (dt < best_ser)
				best_ser = dt;
		}
		keys_s[b] = (double)nblk / best;
		gbs[b] = (double)nblk * bs * 4 / best / 1e9;
		raw_keys_s[b] = (double)nblk / best_raw;
		ratio_raw[b] = keys_s[b] / raw_keys_s[b];
		ser_keys_s[b] = (double)nblk / best_ser;
		ratio_ser[b] = keys_s[b] / ser_keys_s[b];
	}

	printf("blockkey: %zu tokens, best of %d; memcpy %.2f GB/s\n", n_tokens, REPS, memcpy_gbs);
	printf("%10s %12s %7s %16s %8s %16s %8s %8s\n", "block_size", "keys/s", "GB/s",
	       "xxh3_raw keys/s", "ratio", "xxh3_serial k/s", "ratio", "/memcpy");
	for (int b = 0; b < NBS; b++)
		printf("%10zu %12.0f %7.2f %16.0f %8.3f %16.0f %8.3f %8.3f\n", block_sizes[b], keys_s[b],
		       gbs[b], raw_keys_s[b], ratio_raw[b], ser_keys_s[b], ratio_ser[b],
		       gbs[b] / memcpy_gbs);

	const char *out = getenv("BENCH_OUT");
	if (out) {
		FILE *f = fopen(out, "w");
		if (!f) {
			perror(out);
			return 1;
		}
		fprintf(f, "{\n  \"bench\": \"blockkey\",\n  \"n_tokens\": %zu,\n  \"reps\": %d,\n"
			   "  \"baseline_memcpy_gbps\": %.3f,\n  \"results\": [\n",
			n_tokens, REPS, memcpy_gbs);
		for (int b = 0; b < NBS; b++)
			fprintf(f,
				"    {\"block_size\": %zu, \"keys_per_s\": %.0f, \"tokens_gbps\": %.3f, "
				"\"baseline_xxh3_raw_keys_per_s\": %.0f, \"ratio_vs_xxh3_raw\": %.3f, "
				"\"baseline_xxh3_serial_keys_per_s\": %.0f, \"ratio_vs_xxh3_serial\": %.3f, "
				"\"ratio_vs_memcpy\": %.4f}%s\n",
				block_sizes[b], keys_s[b], gbs[b], raw_keys_s[b], ratio_raw[b],
				ser_keys_s[b], ratio_ser[b],
				gbs[b] / memcpy_gbs, b + 1 < NBS ? "," : "");
		fprintf(f, "  ]\n}\n");
		fclose(f);
	}
	kvf_blockkey_ctx_free(ctx);
	free(tokens);
	free(copy);
	free(keys);
	free(msgs);
	return 0;
}
