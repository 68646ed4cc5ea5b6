/*
 * engine.c: engine construction (model, backend, pool, scratch) and the
 * sequence-level forward API (kvf_engine_eval) the scheduler, the tools and
 * the tests share.
 *
 * Everything the data path needs is allocated here, once: activations sized
 * for max_batch_tokens, batch-assembly arrays, the RoPE table, the pool. A
 * step then allocates nothing but block-table growth.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"
#include "engine/internal.h"

void kvf_engine_options_init(kvf_engine_options *o)
{
	memset(o, 0, sizeof *o);
	o->backend = "cpu";
}

/* ------------------------------------------------------------------------ */

static void prepare_all(kvf_engine *e, int *rc)
{
	kvf_model *m = e->model;
	kvf_backend *be = e->be;
	if (!be->iface->weight_prepare)
		return;
#define P(t)                                                                  \
	do {                                                                  \
		if (!*rc && (t).data)                                         \
			*rc = be->iface->weight_prepare(be, &(t));            \
	} while (0)
	P(m->embed);
	P(m->final_norm);
	if (m->lm_head.data != m->embed.data)
		P(m->lm_head);
	for (int l = 0; l < m->cfg.n_layers; l++) {
		kvf_layer_weights *L = &m->layers[l];
		P(L->attn_norm); P(L->wq); P(L->wk); P(L->wv); P(L->wo);
		P(L->bq); P(L->bk); P(L->bv); P(L->bo); P(L->q_norm); P(L->k_norm);
		P(L->ffn_norm); P(L->w_gate); P(L->w_up); P(L->w_down);
	}
#undef P
	if (m->lm_head.data == m->embed.data)
		m->lm_head = m->embed;
}

static void release_all(kvf_engine *e)
{
	kvf_model *m = e->model;
	kvf_backend *be = e->be;
	if (!m || !be || !be->iface->weight_release)
		return;
#define R(t) be->iface->weight_release(be, &(t))
	R(m->embed);
	R(m->final_norm);
	if (m->lm_head.data != m->embed.data)
		R(m->lm_head);
	for (int l = 0; l < m->cfg.n_layers; l++) {
		kvf_layer_weights *L = &m->layers[l];
		R(L->attn_norm); R(L->wq); R(L->wk); R(L->wv); R(L->wo);
		R(L->bq); R(L->bk); R(L->bv); R(L->bo); R(L->q_norm); R(L->k_norm);
		R(L->ffn_norm); R(L->w_gate); R(L->w_up); R(L->w_down);
	}
#undef R
}

static int rope_table(kvf_engine *e)
{
	const kvf_model_config *c = &e->cfg;
	int half = c->head_dim / 2;
	if (e->be->iface->forward)
		return 0; /* no generic forward, no RoPE */
	float *inv = kvf_malloc((size_t)half * sizeof *inv);
	e->rope_cs = kvf_malloc((size_t)e->max_model_len * half * 2 * sizeof(float));
	if (!inv || !e->rope_cs) {
		kvf_free(inv);
		return KVF_E_NOMEM;
	}
	if (e->model)
		memcpy(inv, e->model->rope_inv_freq, (size_t)half * sizeof *inv);
	else
		kvf_model_rope_init(c, inv);
	for (int p = 0; p < e->max_model_len; p++)
		for (int i = 0; i < half; i++) {
			/* HF: freqs = inv_freq (f32) * position (f32), cos/sin in f32 */
			float ang = (float)p * inv[i];
			e->rope_cs[((size_t)p * half + i) * 2] = (float)cos((double)ang);
			e->rope_cs[((size_t)p * half + i) * 2 + 1] = (float)sin((double)ang);
		}
	kvf_free(inv);
	return 0;
}

int kvf_engine_create(const kvf_engine_options *opts, kvf_engine **out)
{
	int rc;
	kvf_engine *e = kvf_calloc(1, sizeof *e);
	if (!e)
		return KVF_E_NOMEM;
	e->opts = *opts;
	e->backend_name = kvf_strdup(opts->backend && *opts->backend ? opts->backend : "cpu");
	e->model_dir = kvf_strdup(opts->model_dir);
	e->sim_preset = kvf_strdup(opts->sim.preset);
	if (!e->backend_name || (opts->model_dir && !e->model_dir) ||
	    (opts->sim.preset && !e->sim_preset)) {
		rc = KVF_E_NOMEM;
		goto err;
	}
	e->opts.backend = e->backend_name;
	e->opts.model_dir = e->model_dir;
	e->opts.sim.preset = e->sim_preset;

	int n_threads = opts->n_threads > 0 ? opts->n_threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
	if (n_threads < 1)
		n_threads = 1;
	if (n_threads > 256)
		n_threads = 256;
	e->block_size = opts->block_size > 0 ? opts->block_size : 16;
	if (e->block_size > 1024) {
		rc = kvf_errf(KVF_E_CONFIG, "engine: block_size %d too large (max 1024)",
			      e->block_size);
		goto err;
	}
	e->max_batch_tokens = opts->max_batch_tokens > 0 ? opts->max_batch_tokens : 512;
	e->max_seqs = opts->max_seqs > 0 ? opts->max_seqs : 64;
	if (e->max_seqs > e->max_batch_tokens)
		e->max_seqs = e->max_batch_tokens;

	kvf_dtype kvdt = opts->kv_dtype;
	if (!strcmp(e->backend_name, "cpu")) {
		if (!opts->model_dir) {
			rc = kvf_errf(KVF_E_CONFIG, "engine: the cpu backend needs model_dir");
			goto err;
		}
		if ((rc = kvf_model_load(opts->model_dir, opts->rope_exact, &e->model)))
			goto err;
		e->cfg = e->model->cfg;
		if ((rc = kvf_backend_cpu_create(n_threads, &e->be)))
			goto err;
		if (kvdt == KVF_DTYPE_AUTO)
			kvdt = KVF_DTYPE_F32;
	} else if (!strcmp(e->backend_name, "sim")) {
		if ((rc = kvf_backend_sim_create(e, &e->be)))
			goto err;
		if (kvdt == KVF_DTYPE_AUTO)
			kvdt = KVF_DTYPE_BF16;
	} else if (!strcmp(e->backend_name, "cuda")) {
		rc = kvf_errf(KVF_E_UNSUPPORTED,
			      "engine: the cuda backend is not built yet (engine/cuda/); use cpu "
			      "or sim");
		goto err;
	} else {
		rc = kvf_errf(KVF_E_CONFIG, "engine: unknown backend '%s' (cpu, sim)",
			      e->backend_name);
		goto err;
	}
	if (kvdt != KVF_DTYPE_F32 && kvdt != KVF_DTYPE_BF16 && kvdt != KVF_DTYPE_F16) {
		rc = kvf_errf(KVF_E_CONFIG, "engine: bad kv_dtype %d", (int)kvdt);
		goto err;
	}
	e->max_model_len = opts->max_model_len > 0 ? opts->max_model_len : e->cfg.max_pos;
	if (opts->max_model_len <= 0 && e->max_model_len > 8192)
		e->max_model_len = 8192;
	if (e->max_model_len > e->cfg.max_pos) {
		rc = kvf_errf(KVF_E_CONFIG,
			      "engine: max_model_len %d beyond the model's %d positions",
			      e->max_model_len, e->cfg.max_pos);
		goto err;
	}
	e->max_logit_rows = e->max_seqs;

	if (e->model) {
		rc = 0;
		prepare_all(e, &rc);
		if (rc)
			goto err;
	}
	if (e->be->iface->setup && (rc = e->be->iface->setup(e->be, e)))
		goto err;

	kvf_kv_layout lay = {
		.n_layers = e->cfg.n_layers,
		.n_kv_heads = e->cfg.n_kv_heads,
		.head_dim = e->cfg.head_dim,
		.block_size = e->block_size,
		.dtype = kvdt,
		.esize = kvf_dtype_size(kvdt),
	};
	lay.block_bytes = (size_t)lay.n_layers * 2 * lay.n_kv_heads * lay.block_size *
			  lay.head_dim * lay.esize;
	long long n_blocks = opts->kv_blocks;
	if (n_blocks <= 0) {
		size_t bytes = opts->kv_pool_bytes;
		if (!bytes) {
			/* default: 256 MiB, at least two full contexts */
			bytes = 256u << 20;
			size_t two_ctx = (size_t)2 * ((size_t)e->max_model_len / e->block_size + 1) *
					 lay.block_bytes;
			if (bytes < two_ctx)
				bytes = two_ctx;
		}
		n_blocks = (long long)(bytes / lay.block_bytes);
	}
	if (n_blocks < 1 || n_blocks > (1ll << 30)) {
		rc = kvf_errf(KVF_E_CONFIG, "engine: kv pool of %lld blocks (%zu bytes each)",
			      n_blocks, lay.block_bytes);
		goto err;
	}
	if ((rc = kvf_kvpool_init(e, &e->pool, &lay, (int)n_blocks)))
		goto err;
	if ((rc = rope_table(e)) || (rc = kvf_forward_scratch_init(e)) ||
	    (rc = kvf_sampler_init(&e->sampler, e->cfg.vocab)))
		goto err;
	size_t T = (size_t)e->max_batch_tokens;
	e->b_tokens = kvf_malloc(T * sizeof *e->b_tokens);
	e->b_pos = kvf_malloc(T * sizeof *e->b_pos);
	e->b_tok_seq = kvf_malloc(T * sizeof *e->b_tok_seq);
	e->b_slot = kvf_malloc(T * sizeof *e->b_slot);
	e->b_out = kvf_malloc(T * sizeof *e->b_out);
	e->b_seqs = kvf_malloc(T * sizeof *e->b_seqs);
	e->logits_host = kvf_malloc((size_t)e->max_seqs * e->cfg.vocab * sizeof(float));
	e->piece_buf = kvf_malloc(256);
	if (!e->b_tokens || !e->b_pos || !e->b_tok_seq || !e->b_slot || !e->b_out || !e->b_seqs ||
	    !e->logits_host || !e->piece_buf) {
		rc = KVF_E_NOMEM;
		goto err;
	}
	kvf_rng_seed(&e->rng, opts->seed ? opts->seed : 1);
	e->next_req_id = 1;
	*out = e;
	return 0;
err:
	kvf_engine_destroy(e);
	return rc;
}

void kvf_engine_destroy(kvf_engine *e)
{
	if (!e)
		return;
	kvf_sched_fini(e);
	if (e->be) {
		kvf_forward_scratch_fini(e);
		kvf_kvpool_fini(e, &e->pool);
		release_all(e);
		e->be->iface->destroy(e->be);
	}
	kvf_model_free(e->model);
	kvf_sampler_fini(&e->sampler);
	kvf_free(e->rope_cs);
	kvf_free(e->b_tokens);
	kvf_free(e->b_pos);
	kvf_free(e->b_tok_seq);
	kvf_free(e->b_slot);
	kvf_free(e->b_out);
	kvf_free(e->b_seqs);
	kvf_free(e->logits_host);
	kvf_free(e->piece_buf);
	kvf_free(e->events);
	kvf_free(e->backend_name);
	kvf_free(e->model_dir);
	kvf_free(e->sim_preset);
	kvf_free(e);
}

void kvf_engine_info_get(const kvf_engine *e, kvf_engine_info *o)
{
	memset(o, 0, sizeof *o);
	const kvf_model_config *c = &e->cfg;
	o->backend = e->be->iface->name;
	o->isa = e->be->isa;
	o->arch = c->arch_name;
	o->n_layers = c->n_layers;
	o->hidden = c->hidden;
	o->n_heads = c->n_heads;
	o->n_kv_heads = c->n_kv_heads;
	o->head_dim = c->head_dim;
	o->ffn = c->ffn;
	o->vocab_size = c->vocab;
	o->max_model_len = e->max_model_len;
	o->n_threads = e->be->n_threads;
	o->block_size = e->block_size;
	o->kv_dtype = e->pool.lay.dtype;
	o->weight_dtype = e->model ? e->model->wdtype : KVF_DTYPE_AUTO;
	o->block_bytes = e->pool.lay.block_bytes;
	o->kv_blocks = e->pool.n_blocks;
	o->n_params = e->model ? e->model->n_params : 0;
	o->weight_bytes = e->model ? e->model->weight_bytes : 0;
	o->bos_id = c->bos_id;
	o->n_eos = c->n_eos;
	memcpy(o->eos_ids, c->eos_ids, sizeof o->eos_ids);
}

/* ------------------------------------------------------------------------ */
/* one pass                                                                 */

int kvf_engine_pass(kvf_engine *e, kvf_seq *const *seqs, const uint32_t *const *toks,
		    const int *n, const int *want, int n_seqs, float *logits)
{
	int bs = e->block_size;
	int T = 0, n_out = 0;
	for (int i = 0; i < n_seqs; i++) {
		kvf_seq *s = seqs[i];
		e->b_seqs[i] = s;
		for (int j = 0; j < n[i]; j++) {
			int pos = s->len + j;
			e->b_tokens[T] = toks[i][j];
			e->b_pos[T] = pos;
			e->b_tok_seq[T] = i;
			e->b_slot[T] = s->blocks[pos / bs] * bs + pos % bs;
			if (j >= n[i] - want[i])
				e->b_out[n_out++] = T;
			T++;
		}
	}
	kvf_fwd f = {
		.n_tokens = T,
		.tokens = e->b_tokens,
		.pos = e->b_pos,
		.tok_seq = e->b_tok_seq,
		.slot = e->b_slot,
		.n_seqs = n_seqs,
		.seqs = e->b_seqs,
		.n_out = n_out,
		.out_tok = e->b_out,
		.logits = logits,
	};
	int rc = T ? kvf_forward(e, &f) : 0;
	if (rc)
		return rc;
	for (int i = 0; i < n_seqs; i++) {
		seqs[i]->len += n[i];
		kvf_seq_register(seqs[i]);
	}
	return 0;
}

int kvf_engine_eval(kvf_engine *e, kvf_seq *const *seqs, const uint32_t *const *tokens,
		    const int *n_tokens, int n_seqs, kvf_logits_mode mode, float *logits)
{
	int rc;
	if (n_seqs < 0 || (mode != KVF_LOGITS_NONE && !logits))
		return KVF_E_INVAL;
	for (int i = 0; i < n_seqs; i++) {
		if (n_tokens[i] < 0 || (n_tokens[i] && !tokens[i]) || seqs[i]->e != e ||
		    (mode == KVF_LOGITS_LAST && n_tokens[i] == 0))
			return kvf_errf(KVF_E_INVAL, "eval: bad sequence %d", i);
		for (int j = 0; j < n_tokens[i]; j++)
			if (tokens[i][j] >= (uint32_t)e->cfg.vocab)
				return kvf_errf(KVF_E_RANGE, "eval: token id %u >= vocab size %d",
						tokens[i][j], e->cfg.vocab);
	}
	/* reserve every block first, so a full pool fails before any work */
	for (int i = 0; i < n_seqs; i++) {
		if ((rc = kvf_seq_reserve(seqs[i], n_tokens[i]))) {
			for (int j = 0; j < i; j++)
				kvf_seq_truncate(seqs[j], seqs[j]->len);
			return rc;
		}
	}
	size_t V = (size_t)e->cfg.vocab;
	int maxrows = e->be->host_memory ? e->max_batch_tokens : e->max_logit_rows;
	kvf_seq *ps[256];
	const uint32_t *pt[256];
	int pn[256], pw[256];
	size_t row = 0;
	int i = 0, off = 0;
	while (i < n_seqs) {
		int np = 0, T = 0, rows = 0;
		while (i < n_seqs && np < 256 && np < e->max_seqs && T < e->max_batch_tokens) {
			int rem = n_tokens[i] - off;
			int c = rem;
			if (c > e->max_batch_tokens - T)
				c = e->max_batch_tokens - T;
			int w = 0;
			if (mode == KVF_LOGITS_ALL) {
				if (c > maxrows - rows)
					c = maxrows - rows;
				w = c;
			} else if (mode == KVF_LOGITS_LAST && c == rem && rem > 0) {
				if (rows + 1 > maxrows)
					break;
				w = 1;
			}
			if (c <= 0 && rem > 0)
				break;
			ps[np] = seqs[i];
			pt[np] = tokens[i] + off;
			pn[np] = c;
			pw[np] = w;
			np++;
			T += c;
			rows += w;
			off += c;
			if (off < n_tokens[i])
				break; /* the rest of this sequence goes in the next pass */
			i++;
			off = 0;
		}
		if ((rc = kvf_engine_pass(e, ps, pt, pn, pw, np, logits ? logits + row * V : NULL)))
			return rc;
		row += (size_t)rows;
	}
	return 0;
}
