/*
 * Unit tests for engine/sampler.c: greedy ties, the sampled distribution,
 * seeds, top-k / top-p / min-p sets (top-p against a naive nucleus),
 * repetition / presence / frequency penalties, and logprobs.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/kvf_err.h"
#include "engine/internal.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

static uint32_t draw(kvf_sampler *s, const float *logits, int V, const kvf_sampling *sp,
		     kvf_rng *rng)
{
	float *l = malloc((size_t)V * sizeof *l);
	memcpy(l, logits, (size_t)V * sizeof *l);
	uint32_t t = kvf_sampler_sample(s, l, sp, rng, NULL, 0, 0, 0, 0, NULL, NULL, NULL);
	free(l);
	return t;
}

static void test_greedy(void **state)
{
	kvf_sampler s;
	assert_int_equal(kvf_sampler_init(&s, 6), 0);
	kvf_sampling sp;
	kvf_sampling_init(&sp);
	kvf_rng rng;
	kvf_rng_seed(&rng, 1);
	float l[6] = {0.1f, 3.0f, -1.0f, 3.0f, 2.9f, 0.0f};
	assert_int_equal(draw(&s, l, 6, &sp, &rng), 1); /* lowest id among ties */
	kvf_sampler_fini(&s);
}

static void test_distribution_and_seed(void **state)
{
	kvf_sampler s;
	assert_int_equal(kvf_sampler_init(&s, 3), 0);
	kvf_sampling sp;
	kvf_sampling_init(&sp);
	sp.temperature = 1.0f;
	float l[3] = {logf(0.5f), logf(0.3f), logf(0.2f)};
	kvf_rng rng;
	kvf_rng_seed(&rng, 42);
	int cnt[3] = {0, 0, 0};
	for (int i = 0; i < 20000; i++)
		cnt[draw(&s, l, 3, &sp, &rng)]++;
	printf("counts %d %d %d\n", cnt[0], cnt[1], cnt[2]);
	assert_true(abs(cnt[0] - 10000) < 400);
	assert_true(abs(cnt[1] - 6000) < 400);
	assert_true(abs(cnt[2] - 4000) < 400);
	/* temperature 0.5 sharpens: p ~ .5^2 : .3^2 : .2^2 = .658 .237 .105 */
	sp.temperature = 0.5f;
	memset(cnt, 0, sizeof cnt);
	for (int i = 0; i < 20000; i++)
		cnt[draw(&s, l, 3, &sp, &rng)]++;
	assert_true(abs(cnt[0] - 13158) < 400);
	assert_true(abs(cnt[2] - 2105) < 300);
	/* same seed, same draws; another seed, other draws */
	sp.temperature = 1.0f;
	kvf_rng a, b, c;
	kvf_rng_seed(&a, 7);
	kvf_rng_seed(&b, 7);
	kvf_rng_seed(&c, 8);
	int same = 0, diff = 0;
	for (int i = 0; i < 200; i++) {
		uint32_t x = draw(&s, l, 3, &sp, &a), y = draw(&s, l, 3, &sp, &b),
			 z = draw(&s, l, 3, &sp, &c);
		same += x == y;
		diff += x != z;
	}
	assert_int_equal(same, 200);
	assert_true(diff > 20);
	kvf_sampler_fini(&s);
}

static void test_filters(void **state)
{
	kvf_sampler s;
	assert_int_equal(kvf_sampler_init(&s, 4), 0);
	kvf_sampling sp;
	kvf_sampling_init(&sp);
	sp.temperature = 1.0f;
	float l[4] = {logf(0.45f), logf(0.3f), logf(0.2f), logf(0.05f)};
	kvf_rng rng;
	kvf_rng_seed(&rng, 3);
	int seen[4];
	/* top_k 2 */
	sp.top_k = 2;
	memset(seen, 0, sizeof seen);
	for (int i = 0; i < 2000; i++)
		seen[draw(&s, l, 4, &sp, &rng)]++;
	assert_true(seen[0] > 0 && seen[1] > 0 && !seen[2] && !seen[3]);
	/* top_p 0.6: .45 < .6, .45 + .3 >= .6 -> {0, 1} */
	sp.top_k = 0;
	sp.top_p = 0.6f;
	memset(seen, 0, sizeof seen);
	for (int i = 0; i < 2000; i++)
		seen[draw(&s, l, 4, &sp, &rng)]++;
	assert_true(seen[0] > 0 && seen[1] > 0 && !seen[2] && !seen[3]);
	/* top_p 0.8 -> {0, 1, 2}: .75 < .8 */
	sp.top_p = 0.8f;
	memset(seen, 0, sizeof seen);
	for (int i = 0; i < 4000; i++)
		seen[draw(&s, l, 4, &sp, &rng)]++;
	assert_true(seen[2] > 0 && !seen[3]);
	/* min_p 0.5: keep p >= .225 -> {0, 1} */
	sp.top_p = 1.0f;
	sp.min_p = 0.5f;
	memset(seen, 0, sizeof seen);
	for (int i = 0; i < 2000; i++)
		seen[draw(&s, l, 4, &sp, &rng)]++;
	assert_true(seen[0] > 0 && seen[1] > 0 && !seen[2] && !seen[3]);
	/* top_k 3 then top_p 0.7 over the renormalised top 3 (.45/.95=.47,
	 * +.3/.95=.79 >= .7) -> {0, 1} */
	sp.min_p = 0;
	sp.top_k = 3;
	sp.top_p = 0.7f;
	memset(seen, 0, sizeof seen);
	for (int i = 0; i < 2000; i++)
		seen[draw(&s, l, 4, &sp, &rng)]++;
	assert_true(seen[0] > 0 && seen[1] > 0 && !seen[2] && !seen[3]);
	kvf_sampler_fini(&s);
}

/* top-p over a large random vocabulary picks exactly what a naive nucleus
 * (full sort, cumulative sum) picks with the same uniform draw. */
static void test_top_p_matches_naive(void **state)
{
	enum { V = 1000 };
	kvf_sampler s;
	assert_int_equal(kvf_sampler_init(&s, V), 0);
	kvf_sampling sp;
	kvf_sampling_init(&sp);
	sp.temperature = 0.8f;
	sp.top_p = 0.9f;
	static float l[V], p[V];
	static int idx[V];
	kvf_rng data;
	kvf_rng_seed(&data, 99);
	for (int trial = 0; trial < 200; trial++) {
		for (int i = 0; i < V; i++)
			l[i] = (float)(kvf_rng_uniform(&data) * 8.0);
		kvf_rng r1, r2;
		kvf_rng_seed(&r1, (uint64_t)trial);
		r2 = r1;
		uint32_t got = draw(&s, l, V, &sp, &r1);
		/* naive */
		float it = 1.0f / sp.temperature;
		float m = l[0] * it;
		for (int i = 0; i < V; i++)
			m = fmaxf(m, l[i] * it);
		for (int i = 0; i < V; i++) {
			p[i] = expf(l[i] * it - m);
			idx[i] = i;
		}
		for (int i = 1; i < V; i++) { /* insertion sort: desc p, asc id */
			int x = idx[i], j = i - 1;
			while (j >= 0 && (p[idx[j]] < p[x] || (p[idx[j]] == p[x] && idx[j] > x))) {
				idx[j + 1] = idx[j];
				j--;
			}
			idx[j + 1] = x;
		}
		double tot = 0;
		for (int i = 0; i < V; i++)
			tot += p[i];
		double acc = 0;
		int keep = V;
		for (int i = 0; i < V; i++) {
			acc += p[idx[i]];
			if (acc >= sp.top_p * tot) {
				keep = i + 1;
				break;
			}
		}
		double kt = 0;
		for (int i = 0; i < keep; i++)
			kt += p[idx[i]];
		double u = kvf_rng_uniform(&r2) * kt, a2 = 0;
		int want = idx[keep - 1];
		for (int i = 0; i < keep; i++) {
			a2 += p[idx[i]];
			if (u < a2) {
				want = idx[i];
				break;
			}
		}
		assert_int_equal(got, want);
	}
	kvf_sampler_fini(&s);
}

static void test_penalties(void **state)
{
	kvf_sampler s;
	assert_int_equal(kvf_sampler_init(&s, 5), 0);
	kvf_sampling sp;
	kvf_sampling_init(&sp);
	kvf_rng rng;
	kvf_rng_seed(&rng, 1);
	/* prompt {0, 1}, output {2, 2, 3} */
	uint32_t hist[5] = {0, 1, 2, 2, 3};
	float l[5] = {2.0f, -2.0f, 1.0f, 1.0f, 4.0f};
	sp.repetition_penalty = 2.0f;
	kvf_sampler_sample(&s, l, &sp, &rng, hist, 5, 2, 0, 0, NULL, NULL, NULL);
	assert_true(l[0] == 1.0f && l[1] == -4.0f && l[2] == 0.5f && l[3] == 0.5f && l[4] == 4.0f);
	float l2[5] = {2.0f, -2.0f, 1.0f, 1.0f, 4.0f};
	kvf_sampling_init(&sp);
	sp.presence_penalty = 0.5f;
	sp.frequency_penalty = 0.25f;
	uint32_t t = kvf_sampler_sample(&s, l2, &sp, &rng, hist, 5, 2, 0, 0, NULL, NULL, NULL);
	/* prompt tokens untouched; 2 seen twice: 1 - .5 - .5; 3 once: 1 - .5 - .25 */
	assert_true(l2[0] == 2.0f && l2[1] == -2.0f && l2[2] == 0.0f && l2[3] == 0.25f &&
		    l2[4] == 4.0f);
	assert_int_equal(t, 4);
	/* the scratch counters were cleared: same call, same result */
	float l3[5] = {2.0f, -2.0f, 1.0f, 1.0f, 4.0f};
	kvf_sampler_sample(&s, l3, &sp, &rng, hist, 5, 2, 0, 0, NULL, NULL, NULL);
	assert_memory_equal(l2, l3, sizeof l2);
	kvf_sampler_fini(&s);
}

static void test_logprobs(void **state)
{
	kvf_sampler s;
	assert_int_equal(kvf_sampler_init(&s, 4), 0);
	kvf_sampling sp;
	kvf_sampling_init(&sp);
	sp.temperature = 0.7f;
	sp.repetition_penalty = 1.5f;
	kvf_rng rng;
	kvf_rng_seed(&rng, 5);
	float raw[4] = {1.0f, 3.0f, 2.0f, 3.0f};
	double z = 0;
	for (int i = 0; i < 4; i++)
		z += exp(raw[i]);
	uint32_t hist[1] = {1};
	for (int rep = 0; rep < 20; rep++) {
		float l[4];
		memcpy(l, raw, sizeof l);
		float lp;
		uint32_t ids[3];
		float tlp[3];
		uint32_t t = kvf_sampler_sample(&s, l, &sp, &rng, hist, 1, 1, 1, 3, &lp, ids, tlp);
		/* raw log-softmax: penalties and temperature do not change it */
		assert_true(fabs(lp - (raw[t] - log(z))) < 1e-5);
		assert_int_equal(ids[0], 1); /* tie 1/3: lower id first */
		assert_int_equal(ids[1], 3);
		assert_int_equal(ids[2], 2);
		assert_true(fabs(tlp[2] - (2.0 - log(z))) < 1e-5);
	}
	kvf_sampler_fini(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_greedy),
		cmocka_unit_test(test_distribution_and_seed),
		cmocka_unit_test(test_filters),
		cmocka_unit_test(test_top_p_matches_naive),
		cmocka_unit_test(test_penalties),
		cmocka_unit_test(test_logprobs),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
