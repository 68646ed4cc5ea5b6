/*
 * config.c: the `gateway {}` configuration section, declared once here; the
 * table drives parsing, validation, --print-config and docs/config.md.
 */
#include <string.h>

#include "common/kvf_err.h"
#include "gateway/gw.h"

#define K(field, kind, def, min, max, choices, help) \
	KVF_CFG_KEY(kvf_gateway_cfg, field, kind, def, min, max, choices, help)

static const kvf_cfg_key gateway_keys[] = {
	KVF_DAEMON_KEYS(kvf_gateway_cfg, d, "127.0.0.1:8080", "/tmp/kvf-gateway.sock"),
	K(io_engine, ENUM, "epoll", 0, 0, "epoll",
	  "client-side I/O engine (epoll: kernel sockets; dpdk comes with the DPDK issue)"),
	/* model */
	K(model, STRING, "", 0, 0, NULL,
	  "served model name; \"\" = the name of the tokenizer's directory; requests name it in \"model\""),
	K(tokenizer, STRING, "", 0, 0, NULL,
	  "tokenizer.json or model directory of the served model; \"\" = no tokenization (routing by load only)"),
	K(tokenize_threads, INT, "1", 1, 64, NULL, "threads that tokenize long prompts off the event loop"),
	K(tokenize_inline_bytes, SIZE, "8KiB", 0, 1073741824, NULL,
	  "prompts up to this size are tokenized on the event loop (the thread handoff costs more)"),
	/* workers and the directory */
	K(decode_workers, STRLIST, NULL, 0, 0, NULL,
	  "static decode workers \"host:port\" (besides those the cachedir knows)"),
	K(prefill_workers, STRLIST, NULL, 0, 0, NULL, "static prefill workers \"host:port\""),
	K(index, ENUM, "auto", 0, 0, "auto|cachedir|local|none",
	  "where prefix hits come from: auto = cachedir when cluster.cachedir lists replicas, else local "
	  "(estimated from this gateway's own routing); none = load only"),
	K(local_index_blocks, INT, "262144", 16, 1073741824, NULL, "keys the local index remembers (LRU)"),
	K(lookup_timeout_ms, DURATION, "50ms", 1, 60000, NULL,
	  "longest wait for a cachedir LOOKUP; on timeout the request routes by load"),
	/* routing */
	K(policy, ENUM, "score", 0, 0, "score|round_robin|random",
	  "score: filters + weighted scorers; round_robin / random: baselines (filters still apply)"),
	K(scorers, STRLIST, "prefix,queue,kv,session", 0, 0, NULL, "scorers in use: prefix, queue, kv, session"),
	K(weight_prefix, DOUBLE, "3", 0, 1000, NULL, "weight of the prefix-hit scorer"),
	K(weight_queue, DOUBLE, "1", 0, 1000, NULL, "weight of the queue-depth scorer"),
	K(weight_kv, DOUBLE, "1", 0, 1000, NULL, "weight of the KV-usage scorer"),
	K(weight_session, DOUBLE, "2", 0, 1000, NULL, "weight of the x-kvf-session affinity scorer"),
	K(tier_weight_gpu, DOUBLE, "1.0", 0, 1, NULL, "value of a cached block in GPU memory"),
	K(tier_weight_host, DOUBLE, "0.8", 0, 1, NULL, "value of a cached block in host memory"),
	K(tier_weight_disk, DOUBLE, "0.5", 0, 1, NULL, "value of a cached block on disk"),
	K(pd_threshold_tokens, INT, "512", 0, 16777216, NULL,
	  "pick a prefill worker too when this many prompt tokens are not cached on the decode worker "
	  "(0: never)"),
	K(worker_max_inflight, INT, "0", 0, 1000000, NULL,
	  "requests in flight per worker from this gateway before it is filtered out (0: no cap)"),
	K(session_ttl_ms, DURATION, "10m", 1000, 86400000, NULL, "x-kvf-session affinity lifetime"),
	K(session_slots, INT, "65536", 16, 67108864, NULL, "sessions remembered"),
	K(routes_history, INT, "64", 1, 4096, NULL, "routing decisions kept for `show routes`"),
	/* tenants */
	K(auth, BOOL, "false", 0, 0, NULL,
	  "require an API key (Authorization: Bearer KEY); false: requests without a key run as tenant "
	  "\"anonymous\" with no cache isolation"),
	K(api_keys, STRLIST, NULL, 0, 0, NULL, "\"tenant:key\" pairs (default limits)"),
	K(tenants_file, STRING, "", 0, 0, NULL,
	  "JSON file of tenants with keys, limits and salts (docs/gateway.md)"),
	K(tenant_rps, DOUBLE, "0", 0, 1e9, NULL, "default requests/s per tenant (0: unlimited)"),
	K(tenant_burst, DOUBLE, "0", 0, 1e9, NULL, "default request burst per tenant (0: max(1, tenant_rps))"),
	K(tenant_tps, DOUBLE, "0", 0, 1e12, NULL, "default tokens/s (prompt + completion) per tenant (0: unlimited)"),
	K(tenant_max_concurrency, INT, "0", 0, 1000000, NULL, "default requests in flight per tenant (0: unlimited)"),
	/* resilience and limits */
	K(max_retries, INT, "2", 0, 16, NULL,
	  "other workers tried after a connect failure, timeout or 5xx before the answer started"),
	K(breaker_failures, INT, "3", 1, 1000, NULL, "consecutive failures that open a worker's circuit breaker"),
	K(breaker_open_ms, DURATION, "5s", 10, 3600000, NULL,
	  "how long an open breaker keeps a worker out before one trial request (doubles per trip, up to 16x)"),
	K(upstream_connect_timeout_ms, DURATION, "1s", 1, 60000, NULL, "connect timeout to workers"),
	K(upstream_first_byte_timeout_ms, DURATION, "300s", 0, 3600000, NULL,
	  "longest wait for a worker's first response byte (0: none)"),
	K(upstream_read_timeout_ms, DURATION, "60s", 0, 3600000, NULL,
	  "longest pause inside a worker's answer (0: none)"),
	K(upstream_max_conns, INT, "256", 1, 65536, NULL, "connections per worker (requests beyond wait)"),
	K(header_timeout_ms, DURATION, "10s", 100, 600000, NULL,
	  "a client must send its request head within this (slowloris): 408 and close"),
	K(body_timeout_ms, DURATION, "30s", 100, 600000, NULL, "longest pause while a request body arrives"),
	K(idle_timeout_ms, DURATION, "60s", 100, 3600000, NULL, "idle keep-alive connections close after this"),
	K(max_body_bytes, SIZE, "16MiB", 1024, 1073741824, NULL, "largest request body (413 beyond)"),
	K(max_header_bytes, SIZE, "32KiB", 1024, 1048576, NULL, "largest request head (431 beyond)"),
	K(max_connections, INT, "4096", 1, 1048576, NULL, "client connections; accepting pauses beyond"),
	K(stream_high_water_bytes, SIZE, "256KiB", 4096, 1073741824, NULL,
	  "reading from a worker pauses while this much of its answer waits for a slow client"),
};

static int gateway_validate(const void *storage)
{
	const kvf_gateway_cfg *c = storage;
	unsigned m;
	if (gw_scorers_parse(&c->scorers, &m))
		return KVF_E_CONFIG;
	if (c->policy == GW_POLICY_SCORE && m == 0)
		return kvf_errf(KVF_E_CONFIG, "gateway.scorers: the score policy needs at least one scorer");
	for (size_t i = 0; i < c->api_keys.n; i++)
		if (!strchr(c->api_keys.v[i], ':'))
			return kvf_errf(KVF_E_CONFIG, "gateway.api_keys[%zu]: expected \"tenant:key\"", i);
	return 0;
}

const kvf_cfg_section kvf_gateway_section = {
	"gateway",
	"OpenAI front door: tenants, cache-aware routing to decode/prefill workers, resilience",
	gateway_keys,
	KVF_CFG_NKEYS(gateway_keys),
	gateway_validate,
	sizeof(kvf_gateway_cfg),
};
