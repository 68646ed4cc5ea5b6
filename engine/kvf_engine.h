/*
 * kvf_engine.h: the model runtime the prefill and decode workers embed.
 *
 * One engine = one model (a Hugging Face directory, or a simulated shape for
 * the `sim` backend) + one compute backend + one paged KV pool + a
 * continuous-batching scheduler. Three layers, each usable on its own:
 *
 *   1. KV pool and prefix cache (kvf_engine_kv_*): fixed-size blocks of
 *      block_size tokens, each block ONE contiguous region laid out
 *      [layer][k|v][kv_head][token][head_dim] in the KV dtype, all blocks in
 *      one allocation (kvf_engine_kv_pool) so the fabric registers it once.
 *      Full blocks are cached under kvf_blockkey values the CALLER computes
 *      (common/kvf_blockkey.h), with refcounts and LRU eviction of
 *      unreferenced blocks, and callbacks when a block enters or leaves the
 *      cache (the worker publishes STORED/REMOVED). Blocks can be exported
 *      (address, length) and imported (allocated here, written by someone
 *      else, then attached to a sequence or committed to the cache).
 *   2. Sequences (kvf_seq_*, kvf_engine_eval): a block table per sequence and
 *      one batched forward pass over many sequences of any chunk length.
 *      Tests, kvf-run and the scheduler sit on this.
 *   3. Requests (kvf_engine_submit / kvf_engine_step): sampling, stop
 *      conditions and the scheduler (waiting/running queues, token budget per
 *      step, chunked prefill mixed with decode, preemption by recompute when
 *      blocks run out, cancellation).
 *
 * Threading: an engine belongs to one thread (the worker's engine thread);
 * none of its functions may be called concurrently on the same engine. The
 * CPU backend runs its own compute threads inside kvf_engine_step/eval. The
 * fabric may write into blocks it was given (import) from any thread, as long
 * as the engine is told only after the write completed.
 *
 * Errors: 0 or a negative KVF_E_* (common/kvf_err.h) with a detail in
 * kvf_errmsg(). See docs/engine.md.
 */
#ifndef KVF_ENGINE_H
#define KVF_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "common/kvf_blockkey.h"
#include "common/kvf_config.h"

typedef struct kvf_engine kvf_engine;
typedef struct kvf_seq kvf_seq;

/* Element types of weights and KV blocks. */
typedef enum kvf_dtype {
	KVF_DTYPE_AUTO = 0, /* options only: f32 on cpu, bf16 on sim */
	KVF_DTYPE_F32 = 1,
	KVF_DTYPE_BF16 = 2,
	KVF_DTYPE_F16 = 3,
} kvf_dtype;

/* "f32", "bf16", "f16", "auto". */
const char *kvf_dtype_name(kvf_dtype dt);
/* Parses "f32"/"fp32"/"float32", "bf16"/"bfloat16", "f16"/"fp16"/"float16",
 * "auto". KVF_E_INVAL otherwise. */
int kvf_dtype_parse(const char *s, kvf_dtype *out);
size_t kvf_dtype_size(kvf_dtype dt);

#define KVF_TOKEN_NONE UINT32_MAX
#define KVF_MAX_TOP_LOGPROBS 20
#define KVF_MAX_STOP_IDS 16
#define KVF_MAX_STOP_STRINGS 8

/* ------------------------------------------------------------------------ */
/* Options                                                                  */
/* ------------------------------------------------------------------------ */

/*
 * The sim backend: no weights, time modelled from measured figures of a real
 * deployment, KV blocks of the real byte size filled with a pattern derived
 * from the block key (kvf_sim_pattern_check verifies a transferred block).
 * Zero fields take the preset's value (preset NULL = "llama3-8b-h100").
 */
typedef struct kvf_sim_options {
	const char *preset;      /* "llama3-8b-h100", "llama3-70b-h100x4", "tiny" */
	int n_layers;
	int n_kv_heads;
	int head_dim;
	int vocab_size;
	int max_model_len;
	double prefill_tok_s;      /* prefill throughput, tokens/s */
	double decode_base_ms;     /* decode step time at batch 1 */
	double decode_per_seq_ms;  /* added per sequence in the batch */
	double decode_per_kctx_ms; /* added per 1024 context tokens attended */
	double time_scale;         /* multiplies every modelled time; 0 = 1.0 */
} kvf_sim_options;

/* A block entered (stored) or left (removed) the prefix cache. */
typedef void (*kvf_block_event_fn)(void *user, kvf_blockkey key, int32_t block);

/* Writes the UTF-8 text of token id into buf (at most cap bytes) and returns
 * its length, or a negative value. Used for stop strings only. */
typedef int (*kvf_token_piece_fn)(void *user, uint32_t id, char *buf, size_t cap);

/* Key of a full block of tokens whose predecessor's key is parent (the
 * worker wraps kvf_blockkey_next). Lets the engine key blocks past the ones
 * the caller supplied (generated tokens), so they are cached too. */
typedef kvf_blockkey (*kvf_block_key_fn)(void *user, kvf_blockkey parent, const uint32_t *tokens,
					 size_t n_tokens);

typedef struct kvf_engine_options {
	const char *backend;    /* "cpu" (default) or "sim" */
	const char *model_dir;  /* HF model directory (cpu); unused by sim */
	int n_threads;          /* compute threads; 0 = online CPUs */
	int block_size;         /* tokens per KV block; 0 = 16 */
	kvf_dtype kv_dtype;     /* KV element type; AUTO = f32 (cpu), bf16 (sim) */
	int kv_blocks;          /* pool size in blocks; 0 = from kv_pool_bytes */
	size_t kv_pool_bytes;   /* pool size in bytes when kv_blocks is 0;
				   0 = enough for max_seqs * max_model_len / 4 */
	int max_batch_tokens;   /* token budget of one step; 0 = 512 */
	int max_seqs;           /* sequences in one step; 0 = 64 */
	int max_model_len;      /* context limit; 0 = the model's (capped 8192) */
	uint64_t seed;          /* seed of requests that give none; 0 = 1 */
	int rope_exact;         /* RoPE frequencies in f32; default (0) rounds
				   them to the checkpoint dtype as transformers
				   does for a model loaded in that dtype */
	/* prefix-cache callbacks, run inside engine calls on the engine thread */
	kvf_block_event_fn on_block_stored;
	kvf_block_event_fn on_block_removed;
	void *block_event_user;
	kvf_token_piece_fn token_piece; /* needed for stop strings */
	void *token_piece_user;
	kvf_block_key_fn block_key;     /* optional, see kvf_block_key_fn */
	void *block_key_user;
	kvf_sim_options sim;
} kvf_engine_options;

/* Fills *o with the defaults above (all zero = defaults). */
void kvf_engine_options_init(kvf_engine_options *o);

/*
 * The `engine {}` section of kvf.conf (see common/kvf_config.h): a daemon
 * registers kvf_engine_section bound to a zeroed kvf_engine_cfg, then maps it with
 * kvf_engine_options_from_cfg. The options borrow the cfg's strings.
 */
enum { KVF_ENGINE_CFG_CPU = 0, KVF_ENGINE_CFG_SIM = 1, KVF_ENGINE_CFG_CUDA = 2 };

typedef struct kvf_engine_cfg {
	int backend;               /* KVF_ENGINE_CFG_* */
	char *model_dir;
	int64_t threads;
	int kv_dtype;              /* 0 auto, 1 f32, 2 bf16, 3 f16 */
	uint64_t kv_pool_bytes;
	int64_t kv_blocks;
	int64_t max_batch_tokens;
	int64_t max_seqs;
	int64_t max_model_len;
	int64_t seed;
	int rope_exact;
	char *sim_preset;
	double sim_time_scale;
	double sim_prefill_tok_s;
	double sim_decode_base_ms;
	double sim_decode_per_seq_ms;
} kvf_engine_cfg;

extern const kvf_cfg_section kvf_engine_section;

/* block_size: cluster.block_size. */
int kvf_engine_options_from_cfg(const kvf_engine_cfg *c, int block_size, kvf_engine_options *o);

/*
 * Loads the model and allocates the pool. The options struct and its strings
 * are copied. Errors name the file, tensor or config field at fault
 * (KVF_E_MODEL, KVF_E_UNSUPPORTED, KVF_E_IO, KVF_E_CONFIG, KVF_E_NOMEM).
 */
int kvf_engine_create(const kvf_engine_options *opts, kvf_engine **out);

/* Frees everything, including requests still queued. NULL is a no-op. */
void kvf_engine_destroy(kvf_engine *e);

/* What the engine is running; strings borrowed from the engine. */
typedef struct kvf_engine_info {
	const char *backend;      /* "cpu" or "sim" */
	const char *isa;          /* cpu kernel flavour: "avx512", "avx2", "generic" */
	const char *arch;         /* "LlamaForCausalLM", ... or "sim:<preset>" */
	int n_layers, hidden, n_heads, n_kv_heads, head_dim, ffn, vocab_size;
	int max_model_len;
	int n_threads;
	int block_size;
	kvf_dtype kv_dtype;
	kvf_dtype weight_dtype;
	size_t block_bytes;       /* bytes of one KV block */
	int kv_blocks;            /* blocks in the pool */
	size_t n_params;          /* weight elements (0 for sim) */
	size_t weight_bytes;      /* bytes of weights read by one decode step */
	uint32_t bos_id;          /* KVF_TOKEN_NONE when unknown */
	int n_eos;
	uint32_t eos_ids[8];
} kvf_engine_info;

void kvf_engine_info_get(const kvf_engine *e, kvf_engine_info *out);

/* ------------------------------------------------------------------------ */
/* KV pool and prefix cache                                                 */
/* ------------------------------------------------------------------------ */

/* The pool: one allocation of kv_blocks * block_bytes bytes, block i at
 * base + i * block_bytes. Register it with the fabric once. */
void kvf_engine_kv_pool(const kvf_engine *e, void **base, size_t *len);

/* Address and length of one block (export). KVF_E_RANGE for a bad id. */
int kvf_engine_kv_block(const kvf_engine *e, int32_t block, void **ptr, size_t *len);

typedef struct kvf_kv_stats {
	int total;        /* blocks in the pool */
	int empty;        /* holding nothing: never used, or released uncached */
	int cached_idle;  /* in the prefix cache with no reference (evictable) */
	int used;         /* referenced by a sequence, request or caller */
	int cached;       /* in the prefix cache, referenced or not */
	uint64_t hits;    /* cached blocks found by prefix lookups */
	uint64_t misses;  /* prefix lookups that stopped at an uncached key */
	uint64_t stored, evicted;       /* blocks that entered / left the cache */
} kvf_kv_stats;

void kvf_engine_kv_stats(const kvf_engine *e, kvf_kv_stats *out);

/*
 * Acquires the longest cached prefix of keys[0..n): for each leading key
 * found, takes a reference on its block and writes the id to blocks[].
 * Returns the number acquired (0..n). The caller owns those references:
 * drop them with kvf_engine_kv_release or hand them to a sequence/request.
 * This is what a worker serving cached blocks to a puller calls.
 */
int kvf_engine_kv_acquire(kvf_engine *e, const kvf_blockkey *keys, int n, int32_t *blocks);

/* Whether a key is cached (no reference taken); returns the block or -1. */
int32_t kvf_engine_kv_lookup(const kvf_engine *e, kvf_blockkey key);

/* Takes one more reference on a block the caller already references. */
int kvf_engine_kv_ref(kvf_engine *e, int32_t block);

/* Drops one reference. A cached block with no reference left becomes
 * evictable (LRU); an uncached one returns to the free list. */
void kvf_engine_kv_release(kvf_engine *e, int32_t block);

/*
 * Import, step 1: allocates n blocks (evicting idle cached blocks in LRU
 * order if needed) with one reference each, owned by the caller; their
 * addresses come from kvf_engine_kv_block. KVF_E_FULL (nothing taken) when
 * the pool cannot supply n blocks.
 */
int kvf_engine_kv_alloc(kvf_engine *e, int n, int32_t *blocks);

/*
 * Import, step 2 (one way): declares that block holds the KV of the full
 * block named key (written by the fabric) and puts it in the prefix cache.
 * The caller's reference is kept (release it when done). If key is already
 * cached under another block, nothing changes and KVF_E_EXISTS is returned.
 * The other way is kvf_seq_attach / kvf_request_params.kv_blocks.
 */
int kvf_engine_kv_commit(kvf_engine *e, int32_t block, kvf_blockkey key);

/* Calls fn for every block in the prefix cache (referenced or idle), in
 * block order: a worker re-announces its blocks this way after its
 * directory connection comes back. fn must not call into the engine. */
void kvf_engine_kv_foreach_cached(const kvf_engine *e, kvf_block_event_fn fn, void *user);

/* ------------------------------------------------------------------------ */
/* Sequences and the batched forward pass                                   */
/* ------------------------------------------------------------------------ */

/* A sequence: a block table and a length (tokens whose KV is stored). */
int kvf_seq_create(kvf_engine *e, kvf_seq **out);

/* Releases the sequence's block references. NULL is a no-op. */
void kvf_seq_destroy(kvf_seq *s);

/* Tokens whose KV the sequence holds. */
int kvf_seq_len(const kvf_seq *s);

/* The block table (borrowed until the sequence changes). */
void kvf_seq_blocks(const kvf_seq *s, const int32_t **blocks, int *n);

/*
 * Attaches blocks holding the KV of the sequence's next n_tokens tokens
 * (imported over the fabric, acquired from the cache, or exported by another
 * sequence). Only valid when the sequence's length is a multiple of
 * block_size. Takes over one reference per block from the caller (on success
 * only). n_blocks must equal ceil(n_tokens / block_size).
 */
int kvf_seq_attach(kvf_seq *s, const int32_t *blocks, int n_blocks, int n_tokens);

/*
 * Sets the keys of the sequence's full blocks 0..n_keys-1 (the prompt's
 * chain). Then kvf_seq_match_prefix can reuse cached blocks and every full
 * block computed later is put in the prefix cache under its key.
 */
int kvf_seq_set_keys(kvf_seq *s, const kvf_blockkey *keys, int n_keys);

/*
 * On an empty sequence with keys set: acquires the cached blocks of the
 * longest cached key prefix, at most max_tokens tokens' worth (whole blocks).
 * Returns the number of tokens now covered (a multiple of block_size).
 */
int kvf_seq_match_prefix(kvf_seq *s, int max_tokens);

/* Drops the KV of tokens [n, len) (whole trailing blocks are released; a
 * block shared with the cache is copied first if written again). */
int kvf_seq_truncate(kvf_seq *s, int n);

/* What kvf_engine_eval returns logits for. */
typedef enum kvf_logits_mode {
	KVF_LOGITS_NONE = 0,  /* KV only */
	KVF_LOGITS_LAST = 1,  /* one row per sequence: its last new token */
	KVF_LOGITS_ALL = 2,   /* one row per new token */
} kvf_logits_mode;

/*
 * One forward pass: appends tokens[i][0..n_tokens[i]) to seqs[i] (allocating
 * blocks as needed, KVF_E_FULL when the pool runs dry) and writes float32
 * logits rows [vocab] for the requested positions, sequence by sequence, into
 * logits (NULL allowed with KVF_LOGITS_NONE). Work beyond max_batch_tokens or
 * the logits scratch is split into several passes; results do not depend on
 * how the batch is composed or chunked.
 */
int kvf_engine_eval(kvf_engine *e, kvf_seq *const *seqs, const uint32_t *const *tokens,
		    const int *n_tokens, int n_seqs, kvf_logits_mode mode, float *logits);

/* ------------------------------------------------------------------------ */
/* Sampling                                                                 */
/* ------------------------------------------------------------------------ */

/*
 * Sampling parameters with vLLM/OpenAI semantics. kvf_sampling_init sets the
 * neutral values (greedy, no filtering, no penalty).
 * Order (vLLM's): penalties on the raw logits, then temperature, then min-p,
 * top-k, and top-p over what top-k kept, then a draw from the renormalised
 * survivors.
 * temperature 0 (or below 1e-5) is greedy: the lowest id among the maxima.
 */
typedef struct kvf_sampling {
	float temperature;        /* 1.0 default in OpenAI; 0 = greedy */
	int top_k;                /* <= 0: off */
	float top_p;              /* 1: off */
	float min_p;              /* 0: off */
	float repetition_penalty; /* 1: off; HF/vLLM, over prompt + output */
	float presence_penalty;   /* 0: off; OpenAI, over output */
	float frequency_penalty;  /* 0: off; OpenAI, over output */
	uint64_t seed;
	int has_seed;             /* 0: the engine's seed stream */
} kvf_sampling;

void kvf_sampling_init(kvf_sampling *s);

/* ------------------------------------------------------------------------ */
/* Requests and the scheduler                                               */
/* ------------------------------------------------------------------------ */

typedef struct kvf_request_params {
	const uint32_t *prompt;   /* copied */
	int n_prompt;
	const kvf_blockkey *keys; /* keys of the prompt's full blocks (copied);
				     may be fewer than n_prompt / block_size */
	int n_keys;
	/* Root of the key chain (kvf_blockkey_root), used with the engine's
	 * block_key function to key blocks past keys[] (generated tokens, or a
	 * whole prompt given without keys). */
	kvf_blockkey root;
	int has_root;
	kvf_sampling sampling;
	int max_tokens;           /* generated tokens; 0 = up to max_model_len */
	int ignore_eos;           /* don't stop on the model's EOS ids */
	uint32_t stop_ids[KVF_MAX_STOP_IDS];
	int n_stop_ids;
	const char *stop[KVF_MAX_STOP_STRINGS]; /* copied; need token_piece */
	int n_stop;
	int logprobs;             /* report the sampled token's logprob */
	int top_logprobs;         /* and this many alternatives (<= 20) */
	int hold_kv;              /* keep the KV blocks after the request
				     finishes, until kvf_engine_release */
	/* Imported KV: blocks holding the KV of prompt[0..n_kv_tokens), with one
	 * reference each that the request takes over (also on failure). */
	const int32_t *kv_blocks;
	int n_kv_blocks;
	int n_kv_tokens;
	void *user;               /* returned in events */
} kvf_request_params;

void kvf_request_params_init(kvf_request_params *p);

typedef enum kvf_finish {
	KVF_FINISH_NONE = 0,
	KVF_FINISH_LENGTH,   /* max_tokens or the context limit */
	KVF_FINISH_STOP,     /* EOS, a stop id or a stop string */
	KVF_FINISH_CANCEL,
	KVF_FINISH_ERROR,
} kvf_finish;

const char *kvf_finish_name(kvf_finish f); /* "length", "stop", ... */

/* One generated token (or the end of a request). */
typedef struct kvf_event {
	uint64_t req;
	void *user;
	uint32_t token;           /* KVF_TOKEN_NONE on a finish-only event */
	float logprob;            /* of token, when params.logprobs */
	int n_top;
	uint32_t top_ids[KVF_MAX_TOP_LOGPROBS];
	float top_logprobs[KVF_MAX_TOP_LOGPROBS];
	kvf_finish finish;        /* NONE while the request goes on */
	uint32_t stop_token;      /* the EOS/stop id that ended it, or NONE */
	int stop_index;           /* index in params.stop of the matched string, or -1 */
	int stop_trim_bytes;      /* with stop_index: bytes to cut off the end of
				     the text generated so far (this token's
				     piece included) to drop the stop string */
	int error;                /* KVF_E_* with KVF_FINISH_ERROR */
} kvf_event;

/* Per-request accounting. */
typedef struct kvf_request_info {
	int state;                /* 0 waiting, 1 running, 2 finished-holding */
	int n_prompt;
	int n_generated;
	int n_cached_tokens;      /* prompt tokens found in the prefix cache */
	int n_imported_tokens;    /* prompt tokens given as kv_blocks */
	int n_computed_tokens;    /* prompt tokens computed here (recompute included) */
	int n_preemptions;
	int n_blocks;
} kvf_request_info;

/*
 * Queues a request. Returns 0 and *id, or KVF_E_RANGE (prompt or
 * prompt + max_tokens beyond the context, or more blocks than the pool),
 * KVF_E_INVAL (bad parameters, stop strings without token_piece).
 */
int kvf_engine_submit(kvf_engine *e, const kvf_request_params *p, uint64_t *id);

/*
 * Runs one scheduler step: picks the batch (decode first, then chunked
 * prefill, then admissions, within max_batch_tokens and max_seqs), runs the
 * forward pass, samples. *events (borrowed until the next step) holds one
 * event per token produced and per request finished. A finished request is
 * forgotten after its event unless it holds its KV (hold_kv). Returns 0 with
 * *n_events possibly 0 when there was nothing to do.
 */
int kvf_engine_step(kvf_engine *e, const kvf_event **events, int *n_events);

/* Requests waiting and running (not counting finished-holding ones). */
void kvf_engine_load(const kvf_engine *e, int *waiting, int *running);

/* Cancels a request wherever it is; its blocks are released at once. No
 * event follows. KVF_E_NOTFOUND for an unknown id. */
int kvf_engine_cancel(kvf_engine *e, uint64_t id);

int kvf_engine_request_info(const kvf_engine *e, uint64_t id, kvf_request_info *out);

/*
 * The KV blocks of a request (finished with hold_kv, or running), in order,
 * and the number of tokens they hold. Borrowed until the request changes.
 */
int kvf_engine_request_blocks(const kvf_engine *e, uint64_t id, const int32_t **blocks,
			      int *n_blocks, int *n_tokens);

/* The token ids of a request: prompt then generated (borrowed). */
int kvf_engine_request_tokens(const kvf_engine *e, uint64_t id, const uint32_t **tokens,
			      int *n);

/* Releases a finished request held with hold_kv. */
int kvf_engine_release(kvf_engine *e, uint64_t id);

/* ------------------------------------------------------------------------ */
/* Sim backend helpers                                                      */
/* ------------------------------------------------------------------------ */

/* Fills len bytes with the pattern of key (what the sim stores in a block
 * cached under key). */
void kvf_sim_pattern_fill(void *dst, size_t len, kvf_blockkey key);

/* Whether len bytes hold the pattern of key; returns 0 or KVF_E_PROTO with
 * the first differing offset in the message. */
int kvf_sim_pattern_check(const void *src, size_t len, kvf_blockkey key);

#endif
