/*
 * worker_config.c: key tables of the `prefill {}` and `decode {}` sections
 * (the `engine {}` section is engine/config.c). The two worker sections
 * share every key; only the defaults (ports, socket paths) differ, so one
 * macro declares both.
 */
#include "worker/kvf_worker.h"

#include <stddef.h>

#include "common/kvf_err.h"

#define WORKER_KEYS(HTTP, ADMIN, FABRIC)                                                                 \
	KVF_DAEMON_KEYS(kvf_worker_cfg, d, HTTP, ADMIN),                                                 \
	KVF_CFG_KEY(kvf_worker_cfg, fabric_listen, STRING, FABRIC, 0, 0, NULL,                           \
		    "host:port where the fabric serves this worker's KV blocks to pullers"),             \
	KVF_CFG_KEY(kvf_worker_cfg, served_model_name, STRING, "", 0, 0, NULL,                           \
		    "model id clients send in requests (empty: the name of engine.model_dir)"),          \
	KVF_CFG_KEY(kvf_worker_cfg, advertise, STRING, "", 0, 0, NULL,                                   \
		    "host other daemons reach this worker at, published to the cachedir (empty: the "    \
		    "listen host, or the machine's name when listening on every address; in Kubernetes " \
		    "pass the pod IP)"),                                                                 \
	KVF_CFG_KEY(kvf_worker_cfg, max_waiting, INT, "256", 1, 1000000, NULL,                           \
		    "requests queued in the engine before new ones are refused with 503"),               \
	KVF_CFG_KEY(kvf_worker_cfg, lease_ms, DURATION, "30s", 100, 3600000, NULL,                       \
		    "prefill: how long KV computed for a puller stays held (extended while pulled)"),    \
	KVF_CFG_KEY(kvf_worker_cfg, prefill_timeout_ms, DURATION, "30s", 10, 3600000, NULL,              \
		    "decode: a prefill call taking longer falls back to computing locally"),             \
	KVF_CFG_KEY(kvf_worker_cfg, pull_threshold_tokens, INT, "-1", -1, 1048576, NULL,                 \
		    "decode: pull cached prefix blocks from other holders when they cover at least this " \
		    "many tokens (-1: derived at start-up from measured transfer and prefill speeds)")

static const kvf_cfg_key prefill_keys[] = {
	WORKER_KEYS("127.0.0.1:8100", "/tmp/kvf-prefill.sock", "127.0.0.1:7800"),
};

static const kvf_cfg_key decode_keys[] = {
	WORKER_KEYS("127.0.0.1:8200", "/tmp/kvf-decode.sock", "127.0.0.1:7810"),
};

const kvf_cfg_section kvf_prefill_section = {
	"prefill", "Prefill worker daemon (kvf-prefill)", prefill_keys, KVF_CFG_NKEYS(prefill_keys), NULL,
	sizeof(kvf_worker_cfg),
};

const kvf_cfg_section kvf_decode_section = {
	"decode", "Decode worker daemon (kvf-decode)", decode_keys, KVF_CFG_NKEYS(decode_keys), NULL,
	sizeof(kvf_worker_cfg),
};
