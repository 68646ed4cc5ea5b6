/*
 * config.c: the `engine {}` section of kvf.conf (common/kvf_config.h key
 * table) and its mapping onto kvf_engine_options, so the prefill and decode
 * daemons register one table and get defaults, -o overrides, validation and
 * --print-config for every engine knob. block_size is not here: it is one
 * value per model across the cluster (cluster.block_size).
 */
#include <string.h>

#include "common/kvf_err.h"
#include "engine/kvf_engine.h"

#define ENGINE_BACKENDS "cpu|sim|cuda"
#define ENGINE_DTYPES "auto|f32|bf16|f16"

static const kvf_cfg_key engine_keys[] = {
	KVF_CFG_KEY(kvf_engine_cfg, backend, ENUM, "cpu", 0, 0, ENGINE_BACKENDS,
		    "compute backend: cpu (reference), sim (timing and KV size of a big model, "
		    "no weights), cuda (not built yet)"),
	KVF_CFG_KEY(kvf_engine_cfg, model_dir, STRING, "", 0, 0, NULL,
		    "Hugging Face model directory (config.json + safetensors); needed by cpu"),
	KVF_CFG_KEY(kvf_engine_cfg, threads, INT, "0", 0, 256, NULL,
		    "compute threads of the cpu backend (0: online CPUs)"),
	KVF_CFG_KEY(kvf_engine_cfg, kv_dtype, ENUM, "auto", 0, 0, ENGINE_DTYPES,
		    "KV cache element type (auto: f32 on cpu, bf16 on sim)"),
	KVF_CFG_KEY(kvf_engine_cfg, kv_pool_bytes, SIZE, "256MiB", 0, 0, NULL,
		    "KV pool size (rounded down to whole blocks); ignored when kv_blocks > 0"),
	KVF_CFG_KEY(kvf_engine_cfg, kv_blocks, INT, "0", 0, 1073741824, NULL,
		    "KV pool size in blocks (0: from kv_pool_bytes)"),
	KVF_CFG_KEY(kvf_engine_cfg, max_batch_tokens, INT, "512", 1, 1048576, NULL,
		    "token budget of one scheduler step (prefill chunks + decodes)"),
	KVF_CFG_KEY(kvf_engine_cfg, max_seqs, INT, "64", 1, 65536, NULL,
		    "sequences in one scheduler step"),
	KVF_CFG_KEY(kvf_engine_cfg, max_model_len, INT, "0", 0, 1048576, NULL,
		    "context limit in tokens (0: the model's, capped at 8192)"),
	KVF_CFG_KEY(kvf_engine_cfg, seed, INT, "1", 0, 9007199254740992.0, NULL,
		    "seed of the sampling streams of requests that give none"),
	KVF_CFG_KEY(kvf_engine_cfg, rope_exact, BOOL, "false", 0, 0, NULL,
		    "RoPE frequencies in float32 (vLLM) instead of rounded to the checkpoint "
		    "dtype (transformers)"),
	KVF_CFG_KEY(kvf_engine_cfg, sim_preset, STRING, "llama3-8b-h100", 0, 0, NULL,
		    "sim: llama3-8b-h100, llama3-70b-h100x4 or tiny"),
	KVF_CFG_KEY(kvf_engine_cfg, sim_time_scale, DOUBLE, "1", 0, 1000, NULL,
		    "sim: multiplies every modelled duration (0.1: ten times faster)"),
	KVF_CFG_KEY(kvf_engine_cfg, sim_prefill_tok_s, DOUBLE, "0", 0, 1e9, NULL,
		    "sim: prefill tokens/s (0: the preset's)"),
	KVF_CFG_KEY(kvf_engine_cfg, sim_decode_base_ms, DOUBLE, "0", 0, 1e6, NULL,
		    "sim: decode step time at batch 1 in ms (0: the preset's)"),
	KVF_CFG_KEY(kvf_engine_cfg, sim_decode_per_seq_ms, DOUBLE, "0", 0, 1e6, NULL,
		    "sim: decode step time added per sequence in ms (0: the preset's)"),
};

static int engine_validate(const void *st)
{
	const kvf_engine_cfg *c = st;
	if (c->backend == KVF_ENGINE_CFG_CPU && (!c->model_dir || !c->model_dir[0]))
		return kvf_errf(KVF_E_CONFIG, "engine.model_dir is needed by engine.backend = cpu");
	return 0;
}

const kvf_cfg_section kvf_engine_section = {
	"engine", "The model runtime of the prefill and decode workers (docs/engine.md)",
	engine_keys, KVF_CFG_NKEYS(engine_keys), engine_validate, sizeof(kvf_engine_cfg),
};

int kvf_engine_options_from_cfg(const kvf_engine_cfg *c, int block_size, kvf_engine_options *o)
{
	static const char *const backends[] = {"cpu", "sim", "cuda"};
	static const kvf_dtype dtypes[] = {KVF_DTYPE_AUTO, KVF_DTYPE_F32, KVF_DTYPE_BF16,
					   KVF_DTYPE_F16};
	kvf_engine_options_init(o);
	if (c->backend < 0 || c->backend > 2 || c->kv_dtype < 0 || c->kv_dtype > 3)
		return kvf_errf(KVF_E_CONFIG, "engine: bad backend or kv_dtype");
	o->backend = backends[c->backend];
	o->model_dir = c->model_dir && c->model_dir[0] ? c->model_dir : NULL;
	o->n_threads = (int)c->threads;
	o->block_size = block_size;
	o->kv_dtype = dtypes[c->kv_dtype];
	o->kv_pool_bytes = (size_t)c->kv_pool_bytes;
	o->kv_blocks = (int)c->kv_blocks;
	o->max_batch_tokens = (int)c->max_batch_tokens;
	o->max_seqs = (int)c->max_seqs;
	o->max_model_len = (int)c->max_model_len;
	o->seed = (uint64_t)c->seed;
	o->rope_exact = c->rope_exact;
	o->sim.preset = c->sim_preset && c->sim_preset[0] ? c->sim_preset : NULL;
	o->sim.time_scale = c->sim_time_scale;
	o->sim.prefill_tok_s = c->sim_prefill_tok_s;
	o->sim.decode_base_ms = c->sim_decode_base_ms;
	o->sim.decode_per_seq_ms = c->sim_decode_per_seq_ms;
	return 0;
}
