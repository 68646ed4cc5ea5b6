/*
 * forward.c: the transformer step (Llama / Mistral / Qwen2 / Qwen3) written
 * once over the backend's ops, so every backend that implements the ops
 * runs every architecture. A backend with a `forward` slot (the sim) replaces
 * the whole step instead.
 *
 * Per layer: rmsnorm -> fused q/k/v matmul (+bias) -> per-head q/k rmsnorm
 * (qwen3) -> RoPE -> KV store into the paged pool -> paged attention ->
 * o-proj -> residual -> rmsnorm -> fused gate/up -> SiLU*up -> down ->
 * residual. The final norm and lm_head run only on the rows whose logits
 * were asked for.
 */
#include <math.h>
#include <string.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"
#include "engine/internal.h"

int kvf_forward_scratch_init(kvf_engine *e)
{
	const kvf_model_config *c = &e->cfg;
	kvf_backend *be = e->be;
	if (be->iface->forward)
		return 0; /* the backend runs whole steps itself (sim) */
	size_t T = (size_t)e->max_batch_tokens;
	size_t H = (size_t)c->hidden, QD = (size_t)c->n_heads * c->head_dim,
	       KD = (size_t)c->n_kv_heads * c->head_dim, F = (size_t)c->ffn;
	size_t floats = T * (2 * H + 2 * QD + 2 * KD + 2 * F + H);
	if (!be->host_memory)
		floats += (size_t)e->max_logit_rows * c->vocab;
	e->act.bytes = floats * sizeof(float);
	float *p = be->iface->alloc(be, e->act.bytes);
	if (!p)
		return kvf_errf(KVF_E_NOMEM, "engine: cannot allocate %zu bytes of activations",
				e->act.bytes);
	e->act.x = p;
	p += T * H;
	e->act.xn = p;
	p += T * H;
	e->act.q = p;
	p += T * QD;
	e->act.att = p;
	p += T * QD;
	e->act.k = p;
	p += T * KD;
	e->act.v = p;
	p += T * KD;
	e->act.gate = p;
	p += T * F;
	e->act.up = p;
	p += T * F;
	e->act.out_h = p;
	p += T * H;
	e->act.logits = be->host_memory ? NULL : p;
	return 0;
}

void kvf_forward_scratch_fini(kvf_engine *e)
{
	if (e->act.x)
		e->be->iface->free(e->be, e->act.x, e->act.bytes);
	memset(&e->act, 0, sizeof e->act);
}

int kvf_forward(kvf_engine *e, const kvf_fwd *f)
{
	kvf_backend *be = e->be;
	const kvf_backend_iface *I = be->iface;
	if (I->forward)
		return I->forward(be, e, f);
	const kvf_model *m = e->model;
	const kvf_model_config *c = &e->cfg;
	int T = f->n_tokens;
	int H = c->hidden, nh = c->n_heads, nkv = c->n_kv_heads, hd = c->head_dim, F = c->ffn;
	float eps = c->norm_eps;
	float *x = e->act.x, *xn = e->act.xn, *q = e->act.q, *k = e->act.k, *v = e->act.v;
	float *att = e->act.att, *gate = e->act.gate, *up = e->act.up;

	I->embed(be, x, &m->embed, f->tokens, T);
	for (int l = 0; l < c->n_layers; l++) {
		const kvf_layer_weights *L = &m->layers[l];
		I->rmsnorm(be, xn, x, &L->attn_norm, T, H, eps);
		kvf_mm qkv[3] = {{&L->wq, &L->bq, q}, {&L->wk, &L->bk, k}, {&L->wv, &L->bv, v}};
		I->matmul(be, qkv, 3, xn, T);
		if (c->qk_norm) {
			I->rmsnorm(be, q, q, &L->q_norm, T * nh, hd, eps);
			I->rmsnorm(be, k, k, &L->k_norm, T * nkv, hd, eps);
		}
		I->rope(be, q, T, nh, hd, f->pos, e->rope_cs);
		I->rope(be, k, T, nkv, hd, f->pos, e->rope_cs);
		I->kv_store(be, &e->pool, f, l, k, v);
		I->attention(be, &e->pool, f, l, q, att, nh);
		kvf_mm o = {&L->wo, &L->bo, xn};
		I->matmul(be, &o, 1, att, T);
		I->add(be, x, xn, (size_t)T * H);
		I->rmsnorm(be, xn, x, &L->ffn_norm, T, H, eps);
		kvf_mm gu[2] = {{&L->w_gate, NULL, gate}, {&L->w_up, NULL, up}};
		I->matmul(be, gu, 2, xn, T);
		I->silu_mul(be, gate, up, (size_t)T * F);
		kvf_mm d = {&L->w_down, NULL, xn};
		I->matmul(be, &d, 1, gate, T);
		I->add(be, x, xn, (size_t)T * H);
	}
	if (f->n_out > 0) {
		float *h = e->act.out_h;
		I->gather(be, h, x, f->out_tok, f->n_out, H);
		I->rmsnorm(be, h, h, &m->final_norm, f->n_out, H, eps);
		float *lg = be->host_memory ? f->logits : e->act.logits;
		kvf_mm lm = {&m->lm_head, NULL, lg};
		I->matmul(be, &lm, 1, h, f->n_out);
		if (!be->host_memory)
			I->download(be, f->logits, lg, (size_t)f->n_out * c->vocab);
	}
	return 0;
}
