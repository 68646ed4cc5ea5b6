/* Unit tests for common/metrics.c: registry, exposition, quantiles, threads. */
#include "common/kvf_err.h"
#include "common/kvf_json.h"
#include "common/kvf_metrics.h"

#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

static const double small_buckets[] = { 0.1, 1.0, 10.0 };

static const kvf_metric_def defs[] = {
	{ "kvf_test_requests_total", KVF_METRIC_COUNTER, "Requests served", NULL, NULL, 0 },
	{ "kvf_test_bytes_total", KVF_METRIC_COUNTER, "Bytes by peer\nand op", "peer,op", NULL, 0 },
	{ "vllm:num_requests_waiting", KVF_METRIC_GAUGE, "Waiting requests", NULL, NULL, 0 },
	{ "kvf_test_latency_seconds", KVF_METRIC_HISTOGRAM, "Latency", NULL, small_buckets, 3 },
};

static void test_prometheus_text(void **state)
{
	kvf_metrics *m;
	kvf_metric *h[4];
	assert_int_equal(kvf_metrics_new(&m), 0);
	assert_int_equal(kvf_metrics_register(m, defs, 4, h), 0);
	kvf_metric_inc(h[0]);
	kvf_metric_add(h[0], 41);
	kvf_series *s;
	assert_int_equal(kvf_metric_labels(h[1], (const char *[]){ "a\"b\\c\nd", "read" }, &s), 0);
	kvf_series_add(s, 4096);
	kvf_series *s2;
	assert_int_equal(kvf_metric_labels(h[1], (const char *[]){ "a\"b\\c\nd", "read" }, &s2), 0);
	assert_ptr_equal(s, s2); /* same labels, same series */
	assert_null(kvf_metric_series(h[1]));
	kvf_metric_set(h[2], 3);
	kvf_metric_observe(h[3], 0.05);
	kvf_metric_observe(h[3], 0.5);
	kvf_metric_observe(h[3], 1.0); /* on a bound: belongs to le="1" */
	kvf_metric_observe(h[3], 100);

	kvf_buf b = KVF_BUF_INIT;
	assert_int_equal(kvf_metrics_render_prometheus(m, &b), 0);
	const char *expect =
		"# HELP kvf_test_requests_total Requests served\n"
		"# TYPE kvf_test_requests_total counter\n"
		"kvf_test_requests_total 42\n"
		"# HELP kvf_test_bytes_total Bytes by peer\\nand op\n"
		"# TYPE kvf_test_bytes_total counter\n"
		"kvf_test_bytes_total{peer=\"a\\\"b\\\\c\\nd\",op=\"read\"} 4096\n"
		"# HELP vllm:num_requests_waiting Waiting requests\n"
		"# TYPE vllm:num_requests_waiting gauge\n"
		"vllm:num_requests_waiting 3\n"
		"# HELP kvf_test_latency_seconds Latency\n"
		"# TYPE kvf_test_latency_seconds histogram\n"
		"kvf_test_latency_seconds_bucket{le=\"0.1\"} 1\n"
		"kvf_test_latency_seconds_bucket{le=\"1\"} 3\n"
		"kvf_test_latency_seconds_bucket{le=\"10\"} 3\n"
		"kvf_test_latency_seconds_bucket{le=\"+Inf\"} 4\n"
		"kvf_test_latency_seconds_sum 101.55\n"
		"kvf_test_latency_seconds_count 4\n";
	assert_string_equal(b.data, expect);
	kvf_buf_free(&b);
	kvf_metrics_destroy(m);
	kvf_metrics_destroy(NULL);
}

static void test_register_errors(void **state)
{
	kvf_metrics *m;
	kvf_metric *h[2];
	assert_int_equal(kvf_metrics_new(&m), 0);
	static const kvf_metric_def bad_name[] = { { "9bad", KVF_METRIC_COUNTER, "x", NULL, NULL, 0 } };
	static const kvf_metric_def bad_label[] = { { "ok", KVF_METRIC_COUNTER, "x", "a-b", NULL, 0 } };
	static const kvf_metric_def le_label[] = { { "ok2", KVF_METRIC_COUNTER, "x", "le", NULL, 0 } };
	static const double desc[] = { 2, 1 };
	static const kvf_metric_def bad_buckets[] = { { "h", KVF_METRIC_HISTOGRAM, "x", NULL, desc, 2 } };
	static const kvf_metric_def no_buckets[] = { { "h2", KVF_METRIC_HISTOGRAM, "x", NULL, NULL, 0 } };
	assert_int_equal(kvf_metrics_register(m, bad_name, 1, h), KVF_E_INVAL);
	assert_int_equal(kvf_metrics_register(m, bad_label, 1, h), KVF_E_INVAL);
	assert_int_equal(kvf_metrics_register(m, le_label, 1, h), KVF_E_INVAL);
	assert_int_equal(kvf_metrics_register(m, bad_buckets, 1, h), KVF_E_INVAL);
	assert_int_equal(kvf_metrics_register(m, no_buckets, 1, h), KVF_E_INVAL);
	assert_int_equal(kvf_metrics_register(m, defs, 1, h), 0);
	assert_int_equal(kvf_metrics_register(m, defs, 1, h), KVF_E_EXISTS);
	kvf_metrics_destroy(m);
}

static void test_quantiles_and_text(void **state)
{
	kvf_metrics *m;
	kvf_metric *h[4];
	assert_int_equal(kvf_metrics_new(&m), 0);
	assert_int_equal(kvf_metrics_register(m, defs, 4, h), 0);
	kvf_series *hs = kvf_metric_series(h[3]);
	assert_true(isnan(kvf_series_quantile(hs, 0.5)));
	/* 100 observations spread in (0.1, 1]: p50 interpolates inside that bucket */
	for (int i = 0; i < 100; i++)
		kvf_metric_observe(h[3], 0.5);
	double p50 = kvf_series_quantile(hs, 0.5);
	assert_true(p50 > 0.1 && p50 <= 1.0);
	assert_true(fabs(p50 - 0.55) < 1e-9);
	kvf_metric_observe(h[3], 1e9); /* +Inf bucket clamps to the top bound */
	assert_true(kvf_series_quantile(hs, 1.0) == 10.0);
	uint64_t count;
	double sum;
	kvf_series_hist(hs, &count, &sum);
	assert_int_equal(count, 101);

	kvf_buf b = KVF_BUF_INIT;
	assert_int_equal(kvf_metrics_render_text(m, &b), 0);
	assert_non_null(strstr(b.data, "kvf_test_requests_total 0\n"));
	assert_non_null(strstr(b.data, "kvf_test_latency_seconds count=101 sum="));
	assert_non_null(strstr(b.data, " p50=0.55"));
	kvf_buf_reset(&b);
	kvf_series *ls;
	kvf_metric_labels(h[1], (const char *[]){ "p1", "write" }, &ls);
	kvf_series_add(ls, 7);
	assert_int_equal(kvf_metrics_render_json(m, &b), 0);
	json_t *j = NULL;
	assert_int_equal(kvf_json_parse_object(b.data, b.len, &j), 0);
	json_t *series = json_object_get(json_object_get(j, "kvf_test_bytes_total"), "series");
	assert_int_equal(json_array_size(series), 1);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(series, 0), "value")), 7);
	assert_string_equal(json_string_value(json_object_get(
				    json_object_get(json_array_get(series, 0), "labels"), "op")), "write");
	json_t *hist = json_array_get(json_object_get(json_object_get(j, "kvf_test_latency_seconds"), "series"), 0);
	assert_int_equal(json_integer_value(json_object_get(hist, "count")), 101);
	assert_int_equal(json_array_size(json_object_get(hist, "buckets")), 4);
	json_decref(j);
	/* removing a labeled series drops it from the output */
	kvf_metric_remove_labels(h[1], (const char *[]){ "p1", "write" });
	kvf_buf_reset(&b);
	kvf_metrics_render_prometheus(m, &b);
	assert_null(strstr(b.data, "p1"));
	kvf_buf_free(&b);
	kvf_metrics_destroy(m);
}

struct hammer {
	kvf_metric *c;
	kvf_metric *g;
	kvf_metric *h;
};

static void *hammer_thread(void *arg)
{
	struct hammer *hm = arg;
	for (int i = 0; i < 100000; i++) {
		kvf_metric_inc(hm->c);
		kvf_series_gauge_add(kvf_metric_series(hm->g), 1.0);
		kvf_metric_observe(hm->h, 0.5);
	}
	return NULL;
}

static int collected;

static void on_collect(void *ud)
{
	collected++;
	kvf_metric_set(ud, 99);
}

static void test_threads_and_hooks(void **state)
{
	kvf_metrics *m;
	kvf_metric *h[4];
	assert_int_equal(kvf_metrics_new(&m), 0);
	assert_int_equal(kvf_metrics_register(m, defs, 4, h), 0);
	struct hammer hm = { h[0], h[2], h[3] };
	pthread_t th[4];
	for (int i = 0; i < 4; i++)
		pthread_create(&th[i], NULL, hammer_thread, &hm);
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	assert_int_equal(kvf_series_counter(kvf_metric_series(h[0])), 400000);
	assert_true(kvf_series_gauge(kvf_metric_series(h[2])) == 400000.0);
	uint64_t count;
	double sum;
	kvf_series_hist(kvf_metric_series(h[3]), &count, &sum);
	assert_int_equal(count, 400000);
	assert_true(sum == 200000.0);

	assert_int_equal(kvf_metrics_on_collect(m, on_collect, h[2]), 0);
	kvf_buf b = KVF_BUF_INIT;
	kvf_metrics_render_prometheus(m, &b);
	assert_int_equal(collected, 1);
	assert_non_null(strstr(b.data, "vllm:num_requests_waiting 99\n"));
	kvf_buf_free(&b);
	kvf_metrics_destroy(m);
}

static void test_vllm_buckets(void **state)
{
	/* the bounds dashboards built for vLLM expect */
	assert_true(kvf_buckets_ttft_s[0] == 0.001 && kvf_buckets_ttft_s[KVF_BUCKETS_TTFT_S_N - 1] == 2560.0);
	assert_true(kvf_buckets_itl_s[0] == 0.01 && kvf_buckets_itl_s[KVF_BUCKETS_ITL_S_N - 1] == 80.0);
	assert_true(kvf_buckets_e2e_s[0] == 0.3 && kvf_buckets_e2e_s[KVF_BUCKETS_E2E_S_N - 1] == 7680.0);
	for (int i = 1; i < KVF_BUCKETS_FAST_S_N; i++)
		assert_true(kvf_buckets_fast_s[i] > kvf_buckets_fast_s[i - 1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_prometheus_text),
		cmocka_unit_test(test_register_errors),
		cmocka_unit_test(test_quantiles_and_text),
		cmocka_unit_test(test_threads_and_hooks),
		cmocka_unit_test(test_vllm_buckets),
	};
	return cmocka_run_group_tests_name("metrics", tests, NULL, NULL);
}
