/*
 * kvf_gateway.h: the gateway library: the OpenAI-compatible front door that
 * authenticates tenants, tokenizes, asks the KV directory who holds the
 * prompt's prefix, scores decode (and prefill) workers, and proxies the
 * request to the chosen worker with its answer streamed back.
 *
 * kvf-gateway (gateway/main.c) wires it into the daemon framework:
 *
 *   kvf_gateway_new(loop, &cfg, cluster, metrics, &gw);
 *   kvf_daemon_set_http_handler(d, <engine entry>, gw);   // gateway/io_*.c
 *   kvf_gateway_register_admin(gw, admin);
 *
 * Client I/O reaches the gateway through an I/O engine (gateway/gw_io.h):
 * gateway/io_epoll.c adapts the kernel-socket HTTP server of common/ and is
 * the default; a DPDK engine plugs in the same way. Upstream I/O uses
 * common/kvf_http_client.h. Everything runs on one loop thread; only
 * tokenization of long prompts runs on helper threads.
 * See docs/gateway.md.
 */
#ifndef KVF_GATEWAY_H
#define KVF_GATEWAY_H

#include <stddef.h>
#include <stdint.h>

#include "common/kvf_admin.h"
#include "common/kvf_buf.h"
#include "common/kvf_cluster.h"
#include "common/kvf_config.h"
#include "common/kvf_daemon.h"
#include "common/kvf_http.h"
#include "common/kvf_loop.h"
#include "common/kvf_metrics.h"

/* The `gateway {}` section; every key is documented in its table
 * (gateway/config.c) and in docs/config.md. */
typedef struct kvf_gateway_cfg {
	kvf_daemon_cfg d;
	int io_engine;                 /* enum: epoll */
	/* model and tokenizer */
	char *model;                   /* served model name */
	char *tokenizer;               /* tokenizer.json or model directory */
	int64_t tokenize_threads;
	uint64_t tokenize_inline_bytes;
	/* workers and the directory */
	kvf_strlist decode_workers;
	kvf_strlist prefill_workers;
	int index;                     /* enum gw_index_kind */
	int64_t local_index_blocks;
	uint64_t lookup_timeout_ms;
	/* routing */
	int policy;                    /* enum gw_policy */
	kvf_strlist scorers;
	double weight_prefix, weight_queue, weight_kv, weight_session;
	double tier_weight_gpu, tier_weight_host, tier_weight_disk;
	int64_t pd_threshold_tokens;
	int64_t worker_max_inflight;
	uint64_t session_ttl_ms;
	int64_t session_slots;
	int64_t routes_history;
	/* tenants */
	int auth;
	kvf_strlist api_keys;
	char *tenants_file;
	double tenant_rps, tenant_burst, tenant_tps;
	int64_t tenant_max_concurrency;
	/* resilience and limits */
	int64_t max_retries;
	int64_t breaker_failures;
	uint64_t breaker_open_ms;
	uint64_t upstream_connect_timeout_ms;
	uint64_t upstream_first_byte_timeout_ms;
	uint64_t upstream_read_timeout_ms;
	int64_t upstream_max_conns;
	uint64_t header_timeout_ms;
	uint64_t body_timeout_ms;
	uint64_t idle_timeout_ms;
	uint64_t max_body_bytes;
	uint64_t max_header_bytes;
	int64_t max_connections;
	uint64_t stream_high_water_bytes;
} kvf_gateway_cfg;

extern const kvf_cfg_section kvf_gateway_section;

typedef struct kvf_gateway kvf_gateway;

/*
 * Creates the gateway on loop: loads the tokenizer and the tenants, starts
 * the tokenizer threads, the upstream client and the worker index (the
 * cachedir client when cluster->cachedir lists replicas and cfg->index
 * allows it). cfg and cluster are borrowed for the gateway's life; metrics
 * may be NULL. 0 and *out, or an error with kvf_errmsg() naming the cause.
 */
int kvf_gateway_new(kvf_loop *loop, const kvf_gateway_cfg *cfg, const kvf_cluster_cfg *cluster,
		    kvf_metrics *metrics, kvf_gateway **out);

/* Stops everything; requests in flight are answered 503 or cut. NULL ok. */
void kvf_gateway_destroy(kvf_gateway *gw);

/* HTTP server options for the client-facing port from the config (limits
 * and timeouts); the daemon applies them with kvf_daemon_set_http_opts(). */
void kvf_gateway_http_opts(const kvf_gateway_cfg *cfg, kvf_http_server_opts *out);

/* `show routes`, `show workers`, `show tenants` on an admin socket. */
int kvf_gateway_register_admin(kvf_gateway *gw, kvf_admin *admin);

/* Daemon hooks: stop taking requests, in-flight count, `show info` lines. */
void kvf_gateway_drain(kvf_gateway *gw);
int kvf_gateway_busy(kvf_gateway *gw);
void kvf_gateway_info(kvf_gateway *gw, kvf_buf *out);

/* The request entry of the epoll engine (gateway/io_epoll.c): pass it with
 * the gateway as ud to kvf_daemon_set_http_handler(). */
void kvf_gateway_io_epoll_handler(kvf_http_req *req, void *gw);

#endif
