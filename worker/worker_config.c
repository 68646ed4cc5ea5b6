/*
 * worker_config.c: key tables of the `engine {}`, `prefill {}` and
 * `decode {}` sections. The two worker sections share every key; only the
 * defaults (ports, socket paths) differ, so one macro declares both.
 */
#include "worker/kvf_worker.h"

#include <stddef.h>

#include "common/kvf_err.h"

static const kvf_cfg_key engine_keys[] = {
	KVF_CFG_KEY(kvf_engine_cfg, backend, ENUM, "cpu", 0, 0, "cpu|sim|cuda",
		    "compute backend: cpu (reference), sim (modelled timing, no weights), cuda"),
	KVF_CFG_KEY(kvf_engine_cfg, model_dir, STRING, "", 0, 0, NULL,
		    "Hugging Face model directory (config.json, safetensors, tokenizer.json)"),
	KVF_CFG_KEY(kvf_engine_cfg, model_name, STRING, "", 0, 0, NULL,
		    "model id served in the API (empty: the model directory's name)"),
	KVF_CFG_KEY(kvf_engine_cfg, threads, INT, "0", 0, 1024, NULL, "compute threads (0: every online CPU)"),
	KVF_CFG_KEY(kvf_engine_cfg, kv_dtype, ENUM, "auto", 0, 0, "auto|f32|bf16|f16",
		    "KV cache element type (auto: f32 on cpu, bf16 on sim)"),
	KVF_CFG_KEY(kvf_engine_cfg, kv_blocks, INT, "0", 0, 16777216, NULL,
		    "KV pool size in blocks (0: from kv_pool_bytes)"),
	KVF_CFG_KEY(kvf_engine_cfg, kv_pool_bytes, SIZE, "0", 0, 0, NULL,
		    "KV pool size in bytes when kv_blocks is 0 (0: max_seqs x max_model_len / 4 tokens)"),
	KVF_CFG_KEY(kvf_engine_cfg, max_batch_tokens, INT, "512", 1, 1048576, NULL, "token budget of one scheduler step"),
	KVF_CFG_KEY(kvf_engine_cfg, max_seqs, INT, "64", 1, 4096, NULL, "sequences in one scheduler step"),
	KVF_CFG_KEY(kvf_engine_cfg, max_model_len, INT, "0", 0, 1048576, NULL,
		    "context limit in tokens (0: the model's, capped at 8192)"),
	KVF_CFG_KEY(kvf_engine_cfg, seed, INT, "1", 0, 0, NULL, "sampling seed of requests that give none"),
	KVF_CFG_KEY(kvf_engine_cfg, sim_preset, STRING, "llama3-8b-h100", 0, 0, NULL,
		    "sim backend: the modelled deployment (llama3-8b-h100, llama3-70b-h100x4, tiny)"),
	KVF_CFG_KEY(kvf_engine_cfg, sim_time_scale, DOUBLE, "1", 0, 1000, NULL,
		    "sim backend: multiplies every modelled time (0.1: ten times faster)"),
};

static int engine_validate(const void *st)
{
	const kvf_engine_cfg *c = st;
	if (c->backend == KVF_ENGINE_BACKEND_CPU && (!c->model_dir || !c->model_dir[0]))
		return kvf_errf(KVF_E_CONFIG, "engine.model_dir is required with engine.backend = \"cpu\"");
	return 0;
}

const kvf_cfg_section kvf_engine_section = {
	"engine", "The model and how the worker runs it", engine_keys, KVF_CFG_NKEYS(engine_keys),
	engine_validate, sizeof(kvf_engine_cfg),
};

#define WORKER_KEYS(HTTP, ADMIN, FABRIC)                                                                 \
	KVF_DAEMON_KEYS(kvf_worker_cfg, d, HTTP, ADMIN),                                                 \
	KVF_CFG_KEY(kvf_worker_cfg, fabric_listen, STRING, FABRIC, 0, 0, NULL,                           \
		    "host:port where the fabric serves this worker's KV blocks to pullers"),             \
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
