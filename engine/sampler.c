/*
 * sampler.c: next-token selection with vLLM/OpenAI semantics, and the
 * per-request random streams.
 *
 * Order (as vLLM's V1 sampler): penalties on the raw logits (repetition over
 * prompt + output as HF/vLLM; presence and frequency over the output as
 * OpenAI), then temperature; temperature ~0 is greedy (lowest id among the
 * maxima, like torch.argmax). Otherwise softmax, min-p, top-k, then top-p
 * over the renormalised survivors, and one uniform draw walks the survivors
 * in order. Logprobs are the log-softmax of the RAW logits (vLLM's default),
 * with the n best alternatives.
 *
 * Scratch arrays are vocab-sized and allocated once; the count/seen arrays
 * are zero between calls (every call clears what it set), so a call costs
 * O(vocab + history) with no allocation. top-k uses a k-heap; top-p alone
 * first drops tokens that cannot be in the nucleus (their whole mass is
 * below 1 - top_p) and sorts the rest.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"
#include "engine/internal.h"

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

void kvf_rng_seed(kvf_rng *r, uint64_t seed)
{
	uint64_t x = seed;
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

/* xoshiro256** */
uint64_t kvf_rng_next(kvf_rng *r)
{
	uint64_t *s = r->s;
	uint64_t res = rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return res;
}

double kvf_rng_uniform(kvf_rng *r)
{
	return (double)(kvf_rng_next(r) >> 11) * 0x1.0p-53;
}

void kvf_sampling_init(kvf_sampling *s)
{
	memset(s, 0, sizeof *s);
	s->temperature = 0.0f;
	s->top_p = 1.0f;
	s->repetition_penalty = 1.0f;
}

int kvf_sampler_init(kvf_sampler *s, int vocab)
{
	memset(s, 0, sizeof *s);
	s->vocab = vocab;
	s->probs = kvf_malloc((size_t)vocab * sizeof *s->probs);
	s->raw = kvf_malloc((size_t)vocab * sizeof *s->raw);
	s->idx = kvf_malloc((size_t)vocab * sizeof *s->idx);
	s->counts = kvf_calloc((size_t)vocab, sizeof *s->counts);
	s->seen = kvf_calloc((size_t)vocab, sizeof *s->seen);
	if (!s->probs || !s->raw || !s->idx || !s->counts || !s->seen) {
		kvf_sampler_fini(s);
		return KVF_E_NOMEM;
	}
	return 0;
}

void kvf_sampler_fini(kvf_sampler *s)
{
	kvf_free(s->probs);
	kvf_free(s->raw);
	kvf_free(s->idx);
	kvf_free(s->counts);
	kvf_free(s->seen);
	memset(s, 0, sizeof *s);
}

/* a ranks before b: higher value, then lower id */
static inline bool better(const float *v, int32_t a, int32_t b)
{
	return v[a] > v[b] || (v[a] == v[b] && a < b);
}

static void heap_down(const float *v, int32_t *h, int n, int i)
{
	/* min-heap on "better": the root is the worst kept element */
	for (;;) {
		int l = 2 * i + 1, r = l + 1, w = i;
		if (l < n && better(v, h[w], h[l]))
			w = l;
		if (r < n && better(v, h[w], h[r]))
			w = r;
		if (w == i)
			return;
		int32_t t = h[i];
		h[i] = h[w];
		h[w] = t;
		i = w;
	}
}

/*
 * The k best of cand[0..n) by v (all of them when k >= n), written sorted
 * best-first to out (which may be cand). Returns the count.
 */
static int top_sorted(const float *v, const int32_t *cand, int n, int k, int32_t *out)
{
	if (k > n)
		k = n;
	if (k <= 0)
		return 0;
	int32_t *h = out;
	if (out != cand) {
		memcpy(h, cand, (size_t)k * sizeof *h);
	} else {
		/* in place: the first k already are in h */
	}
	for (int i = k / 2 - 1; i >= 0; i--)
		heap_down(v, h, k, i);
	for (int i = k; i < n; i++)
		if (better(v, cand[i], h[0])) {
			h[0] = cand[i];
			heap_down(v, h, k, 0);
		}
	/* heap sort: repeatedly move the worst to the end */
	for (int m = k - 1; m > 0; m--) {
		int32_t t = h[0];
		h[0] = h[m];
		h[m] = t;
		heap_down(v, h, m, 0);
	}
	return k;
}

static void apply_penalties(kvf_sampler *s, float *logits, const kvf_sampling *sp,
			    const uint32_t *hist, int n_hist, int n_prompt)
{
	int V = s->vocab;
	if (sp->repetition_penalty > 0 && sp->repetition_penalty != 1.0f) {
		float rp = sp->repetition_penalty;
		for (int i = 0; i < n_hist; i++) {
			uint32_t t = hist[i];
			if (t >= (uint32_t)V || s->seen[t])
				continue;
			s->seen[t] = 1;
			logits[t] = logits[t] > 0 ? logits[t] / rp : logits[t] * rp;
		}
		for (int i = 0; i < n_hist; i++)
			if (hist[i] < (uint32_t)V)
				s->seen[hist[i]] = 0;
	}
	if (sp->presence_penalty != 0 || sp->frequency_penalty != 0) {
		for (int i = n_prompt; i < n_hist; i++)
			if (hist[i] < (uint32_t)V)
				s->counts[hist[i]]++;
		for (int i = n_prompt; i < n_hist; i++) {
			uint32_t t = hist[i];
			if (t >= (uint32_t)V || s->counts[t] == 0)
				continue;
			logits[t] -= sp->frequency_penalty * (float)s->counts[t] +
				     sp->presence_penalty;
			s->counts[t] = 0;
		}
	}
}

uint32_t kvf_sampler_sample(kvf_sampler *s, float *logits, const kvf_sampling *sp, kvf_rng *rng,
			    const uint32_t *hist, int n_hist, int n_prompt, int want_logprob,
			    int n_top, float *logprob, uint32_t *top_ids, float *top_lp)
{
	int V = s->vocab;
	bool lp = want_logprob || n_top > 0;
	double lse = 0;
	if (lp) {
		memcpy(s->raw, logits, (size_t)V * sizeof *logits);
		float m = s->raw[0];
		for (int i = 1; i < V; i++)
			m = s->raw[i] > m ? s->raw[i] : m;
		double sum = 0;
		for (int i = 0; i < V; i++)
			sum += exp((double)s->raw[i] - m);
		lse = m + log(sum);
	}
	apply_penalties(s, logits, sp, hist, n_hist, n_prompt);

	uint32_t tok = 0;
	if (!(sp->temperature >= 1e-5f)) {
		int best = 0;
		for (int i = 1; i < V; i++)
			if (logits[i] > logits[best])
				best = i;
		tok = (uint32_t)best;
	} else {
		float inv_t = 1.0f / sp->temperature;
		float m = logits[0] * inv_t;
		for (int i = 0; i < V; i++) {
			s->probs[i] = logits[i] * inv_t;
			m = s->probs[i] > m ? s->probs[i] : m;
		}
		double z = 0;
		for (int i = 0; i < V; i++) {
			s->probs[i] = expf(s->probs[i] - m);
			z += s->probs[i];
		}
		/* survivors of min-p (pmax is exp(0) = 1 before normalisation) */
		int n = 0;
		float minp = sp->min_p > 0 ? sp->min_p : 0;
		double zs = 0;
		for (int i = 0; i < V; i++)
			if (s->probs[i] >= minp) {
				s->idx[n++] = i;
				zs += s->probs[i];
			}
		bool sorted = false;
		if (sp->top_k > 0 && sp->top_k < n) {
			n = top_sorted(s->probs, s->idx, n, sp->top_k, s->idx);
			sorted = true;
		}
		if (sp->top_p > 0 && sp->top_p < 1) {
			bool by_k = sorted;
			if (!sorted) {
				/* tokens below theta hold < (1 - top_p) of the mass
				 * together: none can be in the nucleus */
				double theta = (1.0 - sp->top_p) * zs / (n ? n : 1);
				int m2 = 0;
				for (int i = 0; i < n; i++)
					if (s->probs[s->idx[i]] >= theta)
						s->idx[m2++] = s->idx[i];
				n = top_sorted(s->probs, s->idx, m2, m2, s->idx);
				sorted = true;
			}
			/* the nucleus is measured against what top-k kept, or
			 * against every min-p survivor when top-k is off */
			double tot = zs;
			if (by_k) {
				tot = 0;
				for (int i = 0; i < n; i++)
					tot += s->probs[s->idx[i]];
			}
			double acc = 0;
			int keep = n;
			for (int i = 0; i < n; i++) {
				acc += s->probs[s->idx[i]];
				if (acc >= sp->top_p * tot) {
					keep = i + 1;
					break;
				}
			}
			n = keep;
		}
		(void)z;
		double tot = 0;
		for (int i = 0; i < n; i++)
			tot += s->probs[s->idx[i]];
		double u = kvf_rng_uniform(rng) * tot, acc = 0;
		tok = (uint32_t)s->idx[n - 1];
		for (int i = 0; i < n; i++) {
			acc += s->probs[s->idx[i]];
			if (u < acc) {
				tok = (uint32_t)s->idx[i];
				break;
			}
		}
	}
	if (lp) {
		if (logprob)
			*logprob = (float)(s->raw[tok] - lse);
		if (n_top > 0) {
			for (int i = 0; i < V; i++)
				s->idx[i] = i;
			int k = top_sorted(s->raw, s->idx, V, n_top, s->idx);
			for (int i = 0; i < k; i++) {
				top_ids[i] = (uint32_t)s->idx[i];
				top_lp[i] = (float)(s->raw[s->idx[i]] - lse);
			}
		}
	}
	return tok;
}
