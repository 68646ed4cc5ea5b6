/*
 * cpu_backend.c: the reference backend: every op of the generic forward pass
 * on the CPU, multithreaded, float32 accumulation.
 *
 * Matmuls split the output rows into chunks the compute threads take
 * dynamically (a fused group such as q/k/v counts as one matrix); a thread
 * widens a tile of weight
 * rows (bf16/fp16 -> f32, a few tens of KiB, stays in L1/L2) and runs the
 * register-blocked kernels of kernels_impl.h over all tokens of the batch,
 * so weights stream from memory once per step whatever the batch size.
 * Attention runs one (token, kv-head) pair per chunk, reading K and V
 * block by block through the sequence's block table: the same arithmetic
 * for a token whether it arrives in a long prefill or alone in a decode
 * step. Scratch is per thread and allocated once in setup().
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"
#include "engine/cpu/kernels.h"
#include "engine/cpu/threadpool.h"
#include "engine/dtype.h"
#include "engine/internal.h"

#define TOKEN_CHUNK 64
#define TILE_MIN_N 32 /* batches from this size widen weight tiles once per chunk */
#define TILE_BYTES (48 * 1024)
#define SMALL_OP (256 * 1024) /* multiply-adds below which an op runs on the caller */

typedef struct cpu_backend {
	kvf_backend base;
	kvf_tpool *tp;
	const kvf_cpu_kernels *k;
	int n_threads;
	/* per-thread scratch */
	float **tile;          /* widened weight rows */
	size_t tile_floats;
	float **att;           /* attention: scores + K/V tile */
	size_t att_floats;
	int max_len;
	int group;             /* q heads per kv head */
} cpu_backend;

static cpu_backend *cpu(kvf_backend *be)
{
	return (cpu_backend *)be;
}

/* ------------------------------------------------------------------------ */
/* memory                                                                   */

/* Big regions (the KV pool) come from mmap: page-aligned, zeroed lazily,
 * and registrable by RDMA NICs as they are. */
static void *cpu_alloc(kvf_backend *be, size_t bytes)
{
	if (bytes == 0)
		bytes = 1;
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

static void cpu_free(kvf_backend *be, void *p, size_t bytes)
{
	if (p)
		munmap(p, bytes ? bytes : 1);
}

static void free_scratch(cpu_backend *cb)
{
	for (int i = 0; i < cb->n_threads; i++) {
		if (cb->tile)
			kvf_free(cb->tile[i]);
		if (cb->att)
			kvf_free(cb->att[i]);
	}
	kvf_free(cb->tile);
	kvf_free(cb->att);
	cb->tile = cb->att = NULL;
}

static void cpu_destroy(kvf_backend *be)
{
	cpu_backend *cb = cpu(be);
	kvf_tpool_destroy(cb->tp);
	free_scratch(cb);
	kvf_free(cb);
}

static int cpu_setup(kvf_backend *be, kvf_engine *e)
{
	cpu_backend *cb = cpu(be);
	const kvf_model_config *c = &e->cfg;
	int kmax = c->hidden;
	if (c->ffn > kmax)
		kmax = c->ffn;
	if (c->n_heads * c->head_dim > kmax)
		kmax = c->n_heads * c->head_dim;
	free_scratch(cb);
	cb->tile_floats = TILE_BYTES / sizeof(float);
	if (cb->tile_floats < (size_t)4 * kmax)
		cb->tile_floats = (size_t)4 * kmax;
	cb->max_len = e->max_model_len;
	cb->group = c->n_heads / c->n_kv_heads;
	cb->att_floats = (size_t)cb->group * (size_t)e->max_model_len +
			 (size_t)e->block_size * (size_t)c->head_dim + 16;
	cb->tile = kvf_calloc((size_t)cb->n_threads, sizeof *cb->tile);
	cb->att = kvf_calloc((size_t)cb->n_threads, sizeof *cb->att);
	if (!cb->tile || !cb->att)
		goto err;
	for (int i = 0; i < cb->n_threads; i++) {
		cb->tile[i] = kvf_malloc(cb->tile_floats * sizeof(float));
		cb->att[i] = kvf_malloc(cb->att_floats * sizeof(float));
		if (!cb->tile[i] || !cb->att[i])
			goto err;
	}
	return 0;
err:
	free_scratch(cb);
	return kvf_errf(KVF_E_NOMEM, "cpu backend: cannot allocate scratch");
}

/* 1-D weights (norms, biases) are widened once; matrices stay mmapped. */
static int cpu_weight_prepare(kvf_backend *be, kvf_tensor *t)
{
	if (!t->data || t->rows != 1)
		return 0;
	float *f = kvf_malloc((size_t)t->cols * sizeof(float));
	if (!f)
		return KVF_E_NOMEM;
	cpu(be)->k->to_f32(f, t->data, t->dtype, (size_t)t->cols);
	t->be_data = f;
	return 0;
}

static void cpu_weight_release(kvf_backend *be, kvf_tensor *t)
{
	if (t->rows == 1 && t->be_data) {
		kvf_free(t->be_data);
		t->be_data = NULL;
	}
}

static const float *vec_f32(const kvf_tensor *t)
{
	return t->be_data ? t->be_data : t->data;
}

static size_t esize(kvf_dtype dt)
{
	return dt == KVF_DTYPE_F32 ? 4 : 2;
}

/* ------------------------------------------------------------------------ */
/* ops                                                                      */

static void cpu_embed(kvf_backend *be, float *out, const kvf_tensor *emb, const uint32_t *ids,
		      int n)
{
	size_t es = esize(emb->dtype), cols = (size_t)emb->cols;
	for (int i = 0; i < n; i++)
		cpu(be)->k->to_f32(out + (size_t)i * cols,
				   (const uint8_t *)emb->data + (size_t)ids[i] * cols * es, emb->dtype,
				   cols);
}

struct rms_task {
	float *out;
	const float *x, *w;
	int rows, dim;
	float eps;
};

#define RMS_ROWS 16

static void rms_worker(void *ctx, int chunk, int ith)
{
	struct rms_task *t = ctx;
	int r0 = chunk * RMS_ROWS, r1 = r0 + RMS_ROWS < t->rows ? r0 + RMS_ROWS : t->rows;
	for (int r = r0; r < r1; r++) {
		const float *x = t->x + (size_t)r * t->dim;
		float *o = t->out + (size_t)r * t->dim;
		double ss = 0;
		for (int i = 0; i < t->dim; i++)
			ss += (double)x[i] * x[i];
		float inv = (float)(1.0 / sqrt(ss / t->dim + (double)t->eps));
		for (int i = 0; i < t->dim; i++)
			o[i] = t->w[i] * (x[i] * inv);
	}
}

static void cpu_rmsnorm(kvf_backend *be, float *out, const float *x, const kvf_tensor *w,
			int rows, int dim, float eps)
{
	struct rms_task t = {out, x, vec_f32(w), rows, dim, eps};
	int chunks = (rows + RMS_ROWS - 1) / RMS_ROWS;
	if ((size_t)rows * dim < 32768)
		for (int c = 0; c < chunks; c++)
			rms_worker(&t, c, 0);
	else
		kvf_tpool_run(cpu(be)->tp, rms_worker, &t, chunks);
}

struct mm_task {
	cpu_backend *cb;
	const kvf_mm *mm;
	int count;
	const float *x;
	int n, k;
	int units;             /* 4-row units over all matrices */
	int per_chunk;         /* units per chunk */
};

static void mm_rows(cpu_backend *cb, int ith, const kvf_mm *m, int r0, int r1, const float *x,
		    int n, int k)
{
	const kvf_tensor *w = m->w;
	int ldy = (int)w->rows;
	float *tile = cb->tile[ith];
	int tr = (int)(cb->tile_floats / (size_t)k) & ~3;
	if (tr < 4)
		tr = 4;
	if (tr > 64)
		tr = 64;
	size_t es = esize(w->dtype);
	if (n < TILE_MIN_N && w->dtype != KVF_DTYPE_F32) {
		/* decode: widen in registers, weights stream from memory once */
		void (*g)(float *, size_t, const float *, size_t, int, const void *, int, int) =
			w->dtype == KVF_DTYPE_BF16 ? cb->k->gemm_bf16 : cb->k->gemm_f16;
		g(m->out + r0, (size_t)ldy, x, (size_t)k, n,
		  (const uint8_t *)w->data + (size_t)r0 * k * es, r1 - r0, k);
	} else {
		for (int t0 = 0; t0 < n; t0 += TOKEN_CHUNK) {
			int nt = n - t0 < TOKEN_CHUNK ? n - t0 : TOKEN_CHUNK;
			for (int r = r0; r < r1; r += tr) {
				int rows = r1 - r < tr ? r1 - r : tr;
				const float *wt;
				if (w->dtype == KVF_DTYPE_F32) {
					wt = (const float *)w->data + (size_t)r * k;
				} else {
					cb->k->to_f32(tile,
						      (const uint8_t *)w->data + (size_t)r * k * es,
						      w->dtype, (size_t)rows * k);
					wt = tile;
				}
				cb->k->gemm(m->out + (size_t)t0 * ldy + r, (size_t)ldy,
					    x + (size_t)t0 * k, (size_t)k, nt, wt, rows, k);
			}
		}
	}
	if (m->bias && m->bias->data) {
		const float *b = vec_f32(m->bias);
		for (int t = 0; t < n; t++)
			for (int r = r0; r < r1; r++)
				m->out[(size_t)t * ldy + r] += b[r];
	}
}

static void mm_worker(void *ctx, int chunk, int ith)
{
	struct mm_task *t = ctx;
	int u0 = chunk * t->per_chunk, u1 = u0 + t->per_chunk < t->units ? u0 + t->per_chunk : t->units;
	int base = 0;
	for (int i = 0; i < t->count && base < u1; i++) {
		int rows = (int)t->mm[i].w->rows;
		int nu = (rows + 3) / 4;
		int a = u0 > base ? u0 - base : 0, b = u1 - base < nu ? u1 - base : nu;
		if (a < b) {
			int r0 = a * 4, r1 = b * 4 < rows ? b * 4 : rows;
			mm_rows(t->cb, ith, &t->mm[i], r0, r1, t->x, t->n, t->k);
		}
		base += nu;
	}
}

static void cpu_matmul(kvf_backend *be, const kvf_mm *mm, int count, const float *x, int n)
{
	struct mm_task t = {cpu(be), mm, count, x, n, (int)mm[0].w->cols, 0, 1};
	size_t macs = 0;
	for (int i = 0; i < count; i++) {
		t.units += (int)(mm[i].w->rows + 3) / 4;
		macs += (size_t)mm[i].w->rows * (size_t)t.k * (size_t)n;
	}
	/* below ~0.25 M multiply-adds a fork-join costs more than it saves */
	if (macs < SMALL_OP) {
		t.per_chunk = t.units;
		mm_worker(&t, 0, 0);
		return;
	}
	/* ~16 chunks per thread so a late thread only delays the end by little,
	 * at least 8 rows each */
	int nth = cpu(be)->n_threads;
	t.per_chunk = t.units / (nth * 16);
	if (t.per_chunk < 2)
		t.per_chunk = 2;
	kvf_tpool_run(cpu(be)->tp, mm_worker, &t, (t.units + t.per_chunk - 1) / t.per_chunk);
}

static void cpu_rope(kvf_backend *be, float *x, int n, int heads, int head_dim,
		     const int32_t *pos, const float *cs)
{
	int half = head_dim / 2;
	for (int t = 0; t < n; t++) {
		const float *c = cs + (size_t)pos[t] * half * 2;
		for (int h = 0; h < heads; h++) {
			float *v = x + ((size_t)t * heads + h) * head_dim;
			for (int i = 0; i < half; i++) {
				float co = c[2 * i], si = c[2 * i + 1];
				float a = v[i], b = v[i + half];
				v[i] = a * co - b * si;
				v[i + half] = b * co + a * si;
			}
		}
	}
}

static void store_row(void *dst, const float *src, kvf_dtype dt, int n)
{
	if (dt == KVF_DTYPE_F32) {
		memcpy(dst, src, (size_t)n * sizeof(float));
	} else if (dt == KVF_DTYPE_BF16) {
		uint16_t *d = dst;
		for (int i = 0; i < n; i++)
			d[i] = kvf_f32_to_bf16(src[i]);
	} else {
		uint16_t *d = dst;
		for (int i = 0; i < n; i++)
			d[i] = kvf_f32_to_f16(src[i]);
	}
}

static void cpu_kv_store(kvf_backend *be, const kvf_kvpool *p, const kvf_fwd *f, int layer,
			 const float *k, const float *v)
{
	const kvf_kv_layout *l = &p->lay;
	int kvd = l->n_kv_heads * l->head_dim;
	for (int t = 0; t < f->n_tokens; t++) {
		int32_t b = f->slot[t] / l->block_size, o = f->slot[t] % l->block_size;
		uint8_t *blk = p->base + (size_t)b * l->block_bytes;
		for (int g = 0; g < l->n_kv_heads; g++) {
			store_row(blk + kvf_kv_off(l, layer, 0, g, o) * l->esize,
				  k + (size_t)t * kvd + (size_t)g * l->head_dim, l->dtype,
				  l->head_dim);
			store_row(blk + kvf_kv_off(l, layer, 1, g, o) * l->esize,
				  v + (size_t)t * kvd + (size_t)g * l->head_dim, l->dtype,
				  l->head_dim);
		}
	}
}

struct att_task {
	cpu_backend *cb;
	const kvf_kvpool *p;
	const kvf_fwd *f;
	int layer;
	const float *q;
	float *out;
	int n_heads;
};

static void att_item(struct att_task *a, int ith, int t, int g)
{
	cpu_backend *cb = a->cb;
	const kvf_kv_layout *l = &a->p->lay;
	const kvf_cpu_kernels *K = cb->k;
	int hd = l->head_dim, bs = l->block_size, G = cb->group;
	int p = a->f->pos[t];
	int n_ctx = p + 1;
	const kvf_seq *s = a->f->seqs[a->f->tok_seq[t]];
	float *scores = cb->att[ith];                   /* [G][max_len] */
	float *tile = scores + (size_t)G * cb->max_len; /* [bs][hd] */
	float scale = 1.0f / sqrtf((float)hd);
	const float *q = a->q + ((size_t)t * a->n_heads + (size_t)g * G) * hd;
	float *out = a->out + ((size_t)t * a->n_heads + (size_t)g * G) * hd;

	for (int b0 = 0; b0 < n_ctx; b0 += bs) {
		int nb = n_ctx - b0 < bs ? n_ctx - b0 : bs;
		const uint8_t *blk = a->p->base + (size_t)s->blocks[b0 / bs] * l->block_bytes;
		const void *kp = blk + kvf_kv_off(l, a->layer, 0, g, 0) * l->esize;
		const float *kt = kp;
		if (l->dtype != KVF_DTYPE_F32) {
			K->to_f32(tile, kp, l->dtype, (size_t)nb * hd);
			kt = tile;
		}
		K->qk(q, kt, G, nb, hd, scale, scores + b0, (size_t)cb->max_len);
	}
	for (int h = 0; h < G; h++) {
		float *sc = scores + (size_t)h * cb->max_len;
		float m = sc[0];
		for (int i = 1; i < n_ctx; i++)
			m = sc[i] > m ? sc[i] : m;
		float sum = 0;
		for (int i = 0; i < n_ctx; i++) {
			sc[i] = expf(sc[i] - m);
			sum += sc[i];
		}
		float inv = 1.0f / sum;
		for (int i = 0; i < n_ctx; i++)
			sc[i] *= inv;
		memset(out + (size_t)h * hd, 0, (size_t)hd * sizeof(float));
	}
	for (int b0 = 0; b0 < n_ctx; b0 += bs) {
		int nb = n_ctx - b0 < bs ? n_ctx - b0 : bs;
		const uint8_t *blk = a->p->base + (size_t)s->blocks[b0 / bs] * l->block_bytes;
		const void *vp = blk + kvf_kv_off(l, a->layer, 1, g, 0) * l->esize;
		const float *vt = vp;
		if (l->dtype != KVF_DTYPE_F32) {
			K->to_f32(tile, vp, l->dtype, (size_t)nb * hd);
			vt = tile;
		}
		K->pv(out, scores + b0, (size_t)cb->max_len, vt, G, nb, hd);
	}
}

static void att_worker(void *ctx, int chunk, int ith)
{
	struct att_task *a = ctx;
	int nkv = a->p->lay.n_kv_heads;
	att_item(a, ith, chunk / nkv, chunk % nkv);
}

static void cpu_attention(kvf_backend *be, const kvf_kvpool *p, const kvf_fwd *f, int layer,
			  const float *q, float *out, int n_heads)
{
	struct att_task a = {cpu(be), p, f, layer, q, out, n_heads};
	size_t work = 0;
	for (int t = 0; t < f->n_tokens; t++)
		work += (size_t)(f->pos[t] + 1);
	work *= (size_t)n_heads * (size_t)p->lay.head_dim * 2;
	int items = f->n_tokens * p->lay.n_kv_heads;
	if (work < SMALL_OP)
		for (int i = 0; i < items; i++)
			att_worker(&a, i, 0);
	else
		kvf_tpool_run(cpu(be)->tp, att_worker, &a, items);
}

struct silu_task {
	float *g;
	const float *u;
	size_t n;
};

#define SILU_CHUNK 8192

static void silu_worker(void *ctx, int chunk, int ith)
{
	struct silu_task *t = ctx;
	size_t i0 = (size_t)chunk * SILU_CHUNK, i1 = i0 + SILU_CHUNK < t->n ? i0 + SILU_CHUNK : t->n;
	for (size_t i = i0; i < i1; i++) {
		float x = t->g[i];
		t->g[i] = x / (1.0f + expf(-x)) * t->u[i];
	}
}

static void cpu_silu_mul(kvf_backend *be, float *gate, const float *up, size_t n)
{
	struct silu_task t = {gate, up, n};
	int chunks = (int)((n + SILU_CHUNK - 1) / SILU_CHUNK);
	if (n < 16384)
		for (int c = 0; c < chunks; c++)
			silu_worker(&t, c, 0);
	else
		kvf_tpool_run(cpu(be)->tp, silu_worker, &t, chunks);
}

static void cpu_add(kvf_backend *be, float *x, const float *y, size_t n)
{
	for (size_t i = 0; i < n; i++)
		x[i] += y[i];
}

static void cpu_gather(kvf_backend *be, float *dst, const float *src, const int32_t *rows, int n,
		       int dim)
{
	for (int i = 0; i < n; i++)
		memcpy(dst + (size_t)i * dim, src + (size_t)rows[i] * dim, (size_t)dim * sizeof(float));
}

static void cpu_download(kvf_backend *be, float *host, const float *dev, size_t n)
{
	if (host != dev)
		memcpy(host, dev, n * sizeof(float));
}

static void cpu_block_copy(kvf_backend *be, const kvf_kvpool *p, int32_t dst, int32_t src)
{
	memcpy(p->base + (size_t)dst * p->lay.block_bytes, p->base + (size_t)src * p->lay.block_bytes,
	       p->lay.block_bytes);
}

static const kvf_backend_iface cpu_iface = {
	.name = "cpu",
	.destroy = cpu_destroy,
	.alloc = cpu_alloc,
	.free = cpu_free,
	.setup = cpu_setup,
	.weight_prepare = cpu_weight_prepare,
	.weight_release = cpu_weight_release,
	.block_copy = cpu_block_copy,
	.embed = cpu_embed,
	.rmsnorm = cpu_rmsnorm,
	.matmul = cpu_matmul,
	.rope = cpu_rope,
	.kv_store = cpu_kv_store,
	.attention = cpu_attention,
	.silu_mul = cpu_silu_mul,
	.add = cpu_add,
	.gather = cpu_gather,
	.download = cpu_download,
};

int kvf_backend_cpu_create(int n_threads, kvf_backend **out)
{
	cpu_backend *cb = kvf_calloc(1, sizeof *cb);
	if (!cb)
		return KVF_E_NOMEM;
	cb->base.iface = &cpu_iface;
	cb->base.host_memory = true;
	cb->k = kvf_cpu_kernels_select();
	cb->base.isa = cb->k->isa;
	cb->n_threads = n_threads;
	cb->base.n_threads = n_threads;
	int rc = kvf_tpool_create(n_threads, &cb->tp);
	if (rc) {
		kvf_free(cb);
		return rc;
	}
	*out = &cb->base;
	return 0;
}
