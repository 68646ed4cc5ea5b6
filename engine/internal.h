/*
 * internal.h: what the engine's files share and nothing outside engine/ sees.
 *
 *   kvf_model     config.json + mmapped safetensors, bound to named tensors
 *   kvf_backend   the compute vtable (ggml-backend style): memory, optional
 *                 whole-step override (sim), and the ops the generic forward
 *                 pass in forward.c is written in. engine/cpu/ is the
 *                 reference implementation; engine/cuda/ slots in beside it.
 *   kvf_kvpool    the paged KV pool, its block metadata and prefix cache
 *   kvf_seq       a block table
 *   kvf_fwd       one batch, flattened: per-token positions and KV slots,
 *                 per-sequence block tables
 *   kvf_engine    all of the above plus the scheduler state (sched.c)
 */
#ifndef KVF_ENGINE_INTERNAL_H
#define KVF_ENGINE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/kvf_engine.h"

/* ------------------------------------------------------------------------ */
/* Model                                                                    */
/* ------------------------------------------------------------------------ */

enum kvf_arch {
	KVF_ARCH_LLAMA = 1,
	KVF_ARCH_MISTRAL,
	KVF_ARCH_QWEN2,
	KVF_ARCH_QWEN3,
	KVF_ARCH_SIM,
};

enum kvf_rope_type {
	KVF_ROPE_DEFAULT = 0,
	KVF_ROPE_LINEAR,
	KVF_ROPE_LLAMA3,
};

typedef struct kvf_model_config {
	char arch_name[64];
	int arch;              /* enum kvf_arch */
	int hidden;
	int ffn;
	int n_layers;
	int n_heads;
	int n_kv_heads;
	int head_dim;
	int vocab;
	int max_pos;           /* max_position_embeddings (or sliding window) */
	float norm_eps;
	int rope_type;         /* enum kvf_rope_type */
	double rope_theta;
	double rope_factor;
	double rope_low_freq_factor;
	double rope_high_freq_factor;
	double rope_orig_max_pos;
	kvf_dtype param_dtype; /* config "dtype"/"torch_dtype"; AUTO if absent */
	bool rope_exact;       /* keep inv_freq in f32 (see kvf_model_rope_init) */
	bool tie_embeddings;
	bool qkv_bias;
	bool o_bias;
	bool qk_norm;
	uint32_t bos_id;
	int n_eos;
	uint32_t eos_ids[8];
} kvf_model_config;

/*
 * A weight as stored in the file: data borrowed from the mmap, row-major
 * [rows][cols] (1-D tensors: rows = 1). be_data belongs to the backend
 * (a converted copy, a device pointer).
 */
typedef struct kvf_tensor {
	const char *name;      /* points into the model's name storage */
	const void *data;
	kvf_dtype dtype;
	int64_t rows, cols;
	void *be_data;
} kvf_tensor;

typedef struct kvf_layer_weights {
	kvf_tensor attn_norm;  /* [hidden] */
	kvf_tensor wq;         /* [n_heads*head_dim][hidden] */
	kvf_tensor wk;         /* [n_kv*head_dim][hidden] */
	kvf_tensor wv;         /* [n_kv*head_dim][hidden] */
	kvf_tensor wo;         /* [hidden][n_heads*head_dim] */
	kvf_tensor bq, bk, bv; /* qkv bias (qwen2, llama attention_bias), data NULL when absent */
	kvf_tensor bo;         /* o_proj bias (llama attention_bias) */
	kvf_tensor q_norm;     /* [head_dim] (qwen3) */
	kvf_tensor k_norm;
	kvf_tensor ffn_norm;   /* [hidden] */
	kvf_tensor w_gate;     /* [ffn][hidden] */
	kvf_tensor w_up;       /* [ffn][hidden] */
	kvf_tensor w_down;     /* [hidden][ffn] */
} kvf_layer_weights;

typedef struct kvf_model {
	kvf_model_config cfg;
	kvf_dtype wdtype;      /* dtype of the big matrices */
	kvf_tensor embed;      /* [vocab][hidden] */
	kvf_tensor final_norm; /* [hidden] */
	kvf_tensor lm_head;    /* [vocab][hidden]; = embed when tied */
	kvf_layer_weights *layers;
	float *rope_inv_freq;  /* [head_dim/2], scaling applied */
	size_t n_params;
	size_t weight_bytes;   /* bytes read by one decode step */
	/* storage: the mapped safetensors files the tensors point into */
	struct kvf_st_file *files;
	int n_files;
} kvf_model;

/* Loads config.json and the safetensors under dir. */
int kvf_model_load(const char *dir, bool rope_exact, kvf_model **out);
/* Parses a config.json text (exposed for tests). */
int kvf_model_config_parse(const char *json_text, const char *what, kvf_model_config *cfg);
/* Builds rope_inv_freq from cfg (HF's rope_init_fn, llama3/linear included). */
int kvf_model_rope_init(const kvf_model_config *cfg, float *inv_freq);
void kvf_model_free(kvf_model *m);

/* ------------------------------------------------------------------------ */
/* KV pool                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct kvf_kv_layout {
	int n_layers;
	int n_kv_heads;
	int head_dim;
	int block_size;
	kvf_dtype dtype;
	size_t esize;          /* bytes per element */
	size_t block_bytes;
} kvf_kv_layout;

/* Element offset of (layer, k=0|v=1, head, token) inside a block. */
static inline size_t kvf_kv_off(const kvf_kv_layout *l, int layer, int kv, int head, int tok)
{
	return ((((size_t)layer * 2 + (size_t)kv) * (size_t)l->n_kv_heads + (size_t)head) *
			(size_t)l->block_size +
		(size_t)tok) *
	       (size_t)l->head_dim;
}

typedef struct kvf_block_meta {
	int32_t ref;
	int32_t prev, next;    /* idle-LRU links (cached, ref 0) */
	uint8_t cached;
	uint8_t in_lru;
	kvf_blockkey key;
} kvf_block_meta;

typedef struct kvf_kvpool {
	kvf_kv_layout lay;
	uint8_t *base;         /* backend memory */
	size_t bytes;
	int n_blocks;
	kvf_block_meta *meta;
	int32_t *free_stack;
	int n_free;
	int32_t lru_head, lru_tail;
	int n_idle;
	int n_cached;
	int32_t *ht;           /* open addressing on key.lo, -1 = empty */
	uint32_t ht_mask;
	kvf_kv_stats stats;
} kvf_kvpool;

struct kvf_engine;
int kvf_kvpool_init(struct kvf_engine *e, kvf_kvpool *p, const kvf_kv_layout *lay, int n_blocks);
void kvf_kvpool_fini(struct kvf_engine *e, kvf_kvpool *p);
int kvf_kvpool_alloc(struct kvf_engine *e, int n, int32_t *out);
void kvf_kvpool_ref(kvf_kvpool *p, int32_t b);
void kvf_kvpool_release(struct kvf_engine *e, int32_t b);
int32_t kvf_kvpool_find(const kvf_kvpool *p, kvf_blockkey key);
/* Puts block b in the cache under key; KVF_E_EXISTS if key is cached. */
int kvf_kvpool_insert(struct kvf_engine *e, int32_t b, kvf_blockkey key);
int kvf_kvpool_free_blocks(const kvf_kvpool *p); /* free + idle cached */

/* ------------------------------------------------------------------------ */
/* Sequences                                                                */
/* ------------------------------------------------------------------------ */

struct kvf_seq {
	struct kvf_engine *e;
	int32_t *blocks;
	int n_blocks, cap_blocks;
	int len;
	kvf_blockkey *keys;    /* keys of full blocks 0..n_keys-1 */
	int n_keys, cap_keys;
	int n_registered;      /* blocks 0..n_registered-1 dealt with by the cache */
};

/* Makes room (allocating blocks, copying a shared partial block) for n more
 * tokens; on failure nothing changed. */
int kvf_seq_reserve(kvf_seq *s, int n);
/* Caches full blocks that have keys; runs the stored callback. */
void kvf_seq_register(kvf_seq *s);
/* Releases every block (reverse order: later blocks are evicted first). */
void kvf_seq_reset(kvf_seq *s);
int kvf_seq_push_key(kvf_seq *s, kvf_blockkey key);
/* In-place init/fini for sequences embedded in requests. */
void kvf_seq_init(kvf_seq *s, struct kvf_engine *e);
void kvf_seq_fini(kvf_seq *s);

/* ------------------------------------------------------------------------ */
/* Forward batch                                                            */
/* ------------------------------------------------------------------------ */

typedef struct kvf_fwd {
	int n_tokens;              /* T */
	const uint32_t *tokens;    /* [T] */
	const int32_t *pos;        /* [T] position in its sequence */
	const int32_t *tok_seq;    /* [T] index of its sequence in the batch */
	const int32_t *slot;       /* [T] block * block_size + offset */
	int n_seqs;
	kvf_seq *const *seqs;      /* [n_seqs] (block tables, keys for sim) */
	int n_out;
	const int32_t *out_tok;    /* [n_out] token indexes whose logits are wanted */
	float *logits;             /* [n_out][vocab], host memory */
} kvf_fwd;

/* ------------------------------------------------------------------------ */
/* Backend                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct kvf_backend kvf_backend;

/* One matmul of a fused group: out[n][w->rows] = x[n][w->cols] . w^T (+ bias). */
typedef struct kvf_mm {
	const kvf_tensor *w;
	const kvf_tensor *bias; /* NULL or data NULL: none */
	float *out;
} kvf_mm;

typedef struct kvf_backend_iface {
	const char *name;
	void (*destroy)(kvf_backend *be);
	/* Memory for activations and the KV pool (device memory on a GPU). */
	void *(*alloc)(kvf_backend *be, size_t bytes);
	void (*free)(kvf_backend *be, void *p, size_t bytes);
	/* Optional: called once the engine knows its shapes and limits
	 * (per-thread scratch, streams). */
	int (*setup)(kvf_backend *be, struct kvf_engine *e);
	/* Optional: convert/upload a weight; sets t->be_data. */
	int (*weight_prepare)(kvf_backend *be, kvf_tensor *t);
	void (*weight_release)(kvf_backend *be, kvf_tensor *t);
	/* Optional: runs the whole step itself (the sim backend). */
	int (*forward)(kvf_backend *be, struct kvf_engine *e, const kvf_fwd *f);
	/* Optional: block b was cached under key (the sim rewrites its pattern). */
	void (*block_keyed)(kvf_backend *be, struct kvf_engine *e, int32_t b, kvf_blockkey key);
	/* Copies one KV block inside the pool. */
	void (*block_copy)(kvf_backend *be, const kvf_kvpool *p, int32_t dst, int32_t src);

	/* Ops of the generic transformer step (forward.c). Activations are
	 * float32 buffers from alloc(); index arrays are host memory. */
	void (*embed)(kvf_backend *be, float *out /* [n][hidden] */, const kvf_tensor *emb,
		      const uint32_t *ids, int n);
	void (*rmsnorm)(kvf_backend *be, float *out, const float *x /* [rows][dim] */,
			const kvf_tensor *w /* [dim] */, int rows, int dim, float eps);
	void (*matmul)(kvf_backend *be, const kvf_mm *mm, int count, const float *x, int n);
	void (*rope)(kvf_backend *be, float *x /* [n][heads][head_dim] */, int n, int heads,
		     int head_dim, const int32_t *pos,
		     const float *cos_sin /* [max_model_len][head_dim/2][2] */);
	void (*kv_store)(kvf_backend *be, const kvf_kvpool *p, const kvf_fwd *f, int layer,
			 const float *k, const float *v /* [T][n_kv*head_dim] */);
	void (*attention)(kvf_backend *be, const kvf_kvpool *p, const kvf_fwd *f, int layer,
			  const float *q /* [T][n_heads*head_dim] */, float *out, int n_heads);
	void (*silu_mul)(kvf_backend *be, float *gate /* in/out */, const float *up, size_t n);
	void (*add)(kvf_backend *be, float *x, const float *y, size_t n);
	void (*gather)(kvf_backend *be, float *dst, const float *src, const int32_t *rows, int n,
		       int dim);
	/* Device to host copy (logits). */
	void (*download)(kvf_backend *be, float *host, const float *dev, size_t n);
} kvf_backend_iface;

struct kvf_backend {
	const kvf_backend_iface *iface;
	const char *isa;       /* kernel flavour, for kvf_engine_info */
	bool host_memory;      /* alloc() returns host-addressable memory */
	int n_threads;
};

int kvf_backend_cpu_create(int n_threads, kvf_backend **out);
int kvf_backend_sim_create(struct kvf_engine *e, kvf_backend **out);

/*
 * One forward pass over seqs (blocks already reserved, sum of n <=
 * max_batch_tokens, each sequence once): the last want[i] (0, 1 or n[i])
 * tokens of each get a logits row. Advances the sequences and caches the
 * blocks they filled (engine.c).
 */
int kvf_engine_pass(struct kvf_engine *e, kvf_seq *const *seqs, const uint32_t *const *toks,
		    const int *n, const int *want, int n_seqs, float *logits);
void kvf_sched_fini(struct kvf_engine *e);

/* The generic step over a backend's ops (forward.c). */
int kvf_forward(struct kvf_engine *e, const kvf_fwd *f);
int kvf_forward_scratch_init(struct kvf_engine *e);
void kvf_forward_scratch_fini(struct kvf_engine *e);

/* ------------------------------------------------------------------------ */
/* Sampler (sampler.c)                                                      */
/* ------------------------------------------------------------------------ */

typedef struct kvf_rng {
	uint64_t s[4];
} kvf_rng;

void kvf_rng_seed(kvf_rng *r, uint64_t seed);
uint64_t kvf_rng_next(kvf_rng *r);
double kvf_rng_uniform(kvf_rng *r); /* [0, 1) */

typedef struct kvf_sampler {
	int vocab;
	float *probs;          /* [vocab] scratch */
	float *raw;            /* [vocab] raw logits kept for logprobs */
	int32_t *idx;          /* [vocab] scratch */
	int32_t *counts;       /* [vocab] zero between calls */
	uint8_t *seen;         /* [vocab] zero between calls */
} kvf_sampler;

int kvf_sampler_init(kvf_sampler *s, int vocab);
void kvf_sampler_fini(kvf_sampler *s);

/*
 * Samples from logits[vocab] (modified in place: penalties applied).
 * history: prompt then output tokens, n_prompt of them the prompt.
 * Writes the token and, when n_top >= 0, its logprob (raw log-softmax) and the
 * n_top best alternatives. Returns the token.
 */
uint32_t kvf_sampler_sample(kvf_sampler *s, float *logits, const kvf_sampling *sp, kvf_rng *rng,
			    const uint32_t *history, int n_history, int n_prompt, int want_logprob,
			    int n_top, float *logprob, uint32_t *top_ids, float *top_lp);

/* ------------------------------------------------------------------------ */
/* Engine                                                                   */
/* ------------------------------------------------------------------------ */

struct kvf_req;

struct kvf_engine {
	kvf_engine_options opts;
	char *backend_name;
	char *model_dir;
	char *sim_preset;
	kvf_model *model;
	kvf_model_config cfg;  /* model's, or the sim's synthetic shape */
	kvf_backend *be;
	kvf_kvpool pool;
	int block_size;
	int max_batch_tokens;
	int max_seqs;
	int max_model_len;
	int max_logit_rows;    /* rows of the device logits scratch */
	/* forward scratch (backend memory) */
	struct {
		float *x, *xn, *q, *k, *v, *att, *gate, *up, *out_h, *logits;
		size_t bytes;
	} act;
	/* batch assembly scratch (host) */
	uint32_t *b_tokens;
	int32_t *b_pos, *b_tok_seq, *b_slot, *b_out;
	kvf_seq **b_seqs;
	/* scheduler */
	kvf_sampler sampler;
	kvf_rng rng;
	uint64_t next_req_id;
	struct kvf_req *waiting_head, *waiting_tail;
	struct kvf_req *running_head, *running_tail;
	struct kvf_req *held_head;
	int n_waiting, n_running;
	kvf_event *events;
	int n_events, cap_events;
	float *logits_host;    /* [max_seqs][vocab] for sampling */
	struct kvf_req **s_reqs; /* [max_seqs] batch of a step */
	kvf_seq **s_seqs;
	const uint32_t **s_toks;
	int *s_n, *s_want;
	float *rope_cs;        /* [max_model_len][head_dim/2][2], backend memory */
	char *piece_buf;
};

#endif
