/*
 * kvf_worker.h: the serving core the prefill and decode daemons share.
 *
 * A worker embeds one engine (engine/kvf_engine.h) on its own thread and
 * serves the OpenAI API on the daemon's HTTP port: /v1/completions,
 * /v1/chat/completions (whole and SSE-streamed), /v1/models. Requests are
 * parsed and tokenized on the daemon's loop thread, keyed with the cluster's
 * block keys (so the prefix cache and the cluster directory agree with the
 * gateway), handed to the engine thread, and streamed back as tokens arrive.
 * A single worker is a complete server (aggregated mode); the prefill/decode
 * split adds to it (prefill/ and decode/).
 *
 * Threads: everything here runs on the daemon's loop thread except the
 * engine thread, which talks to it only through kvf_loop_post().
 */
#ifndef KVF_WORKER_H
#define KVF_WORKER_H

#include <stdint.h>

#include "common/kvf_config.h"
#include "common/kvf_daemon.h"
#include "engine/kvf_engine.h"
#include "fabric/kvf_fabric.h"

/* What both worker roles add to their daemon section. */
typedef struct kvf_worker_cfg {
	kvf_daemon_cfg d;
	char *fabric_listen;
	char *served_model_name;    /* model id in the API; empty: the model directory's name */
	int64_t max_waiting;        /* queued requests before new ones get 503 */
	uint64_t lease_ms;          /* prefill: how long computed KV is held for a puller */
	uint64_t prefill_timeout_ms;/* decode: a prefill call slower than this falls back */
	int64_t pull_threshold_tokens; /* decode: pull cached prefix blocks from other holders
					  when at least this many tokens; -1: derive */
} kvf_worker_cfg;

extern const kvf_cfg_section kvf_prefill_section;
extern const kvf_cfg_section kvf_decode_section;

typedef enum kvf_worker_role { KVF_WORKER_PREFILL, KVF_WORKER_DECODE } kvf_worker_role;

typedef struct kvf_worker kvf_worker;

/*
 * Loads the tokenizer and the model, starts the engine thread, registers
 * metrics, admin commands and the HTTP handler on the started daemon d, and
 * marks it ready. Configs are borrowed for the worker's life.
 */
int kvf_worker_new(kvf_daemon *d, kvf_worker_role role, const kvf_engine_cfg *ecfg,
		   kvf_fabric_opts *fopts, const kvf_worker_cfg *wcfg, kvf_worker **out);

/* Stops the engine thread and frees everything. NULL ok. */
void kvf_worker_destroy(kvf_worker *w);

/* The daemon main of both roles: config, daemon, worker, run. */
int kvf_worker_main(kvf_worker_role role, int argc, char **argv);

#endif
