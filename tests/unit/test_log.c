/* Unit tests for common/log.c: format, levels, sink, rate limiting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "common/kvf_err.h"
#include "common/kvf_log.h"

static char last[4096];
static int nlines;

static void capture(void *ud, int level, const char *line, size_t len)
{
	(void)ud;
	(void)level;
	memcpy(last, line, len < sizeof(last) - 1 ? len : sizeof(last) - 1);
	last[len < sizeof(last) - 1 ? len : sizeof(last) - 1] = 0;
	nlines++;
}

static int setup(void **state)
{
	kvf_log_set_sink(capture, NULL);
	kvf_log_set_level(KVF_LOG_INFO);
	nlines = 0;
	last[0] = 0;
	return 0;
}

static int teardown(void **state)
{
	kvf_log_set_sink(NULL, NULL);
	return 0;
}

static void test_format(void **state)
{
	KVF_INFO("http", "listening", "addr=%s port=%u", "127.0.0.1", 8080u);
	assert_int_equal(nlines, 1);
	assert_non_null(strstr(last, " level=info mod=http msg=\"listening\" addr=127.0.0.1 port=8080\n"));
	assert_memory_equal(last, "ts=", 3);
	/* timestamp shape: ts=YYYY-MM-DDTHH:MM:SS.mmmZ */
	assert_int_equal(last[13], 'T');
	assert_int_equal(last[26], 'Z');
	KVF_WARN("x", "no fields", "%s", "");
	assert_non_null(strstr(last, "msg=\"no fields\"\n"));
}

static void test_level_filter(void **state)
{
	KVF_DEBUG("m", "hidden", "k=%d", 1);
	assert_int_equal(nlines, 0);
	kvf_log_set_level(KVF_LOG_DEBUG);
	KVF_DEBUG("m", "shown", "k=%d", 1);
	assert_int_equal(nlines, 1);
	int lv;
	assert_int_equal(kvf_log_level_parse("trace", &lv), 0);
	assert_int_equal(lv, KVF_LOG_TRACE);
	assert_int_equal(kvf_log_level_parse("loud", &lv), KVF_E_INVAL);
	assert_string_equal(kvf_log_level_name(KVF_LOG_WARN), "warn");
}

static void test_newlines_and_truncation(void **state)
{
	KVF_INFO("m", "multi", "v=%s", "a\nb");
	assert_ptr_equal(strchr(last, '\n'), last + strlen(last) - 1);
	char big[5000];
	memset(big, 'q', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	KVF_INFO("m", "big", "v=%s", big);
	size_t n = strlen(last);
	assert_true(n < 2100);
	assert_int_equal(last[n - 1], '\n');
}

static void test_rate_limit(void **state)
{
	/* 3 per hour: the 4th..10th are dropped and counted */
	for (int i = 0; i < 10; i++)
		KVF_LOG_RL(KVF_LOG_WARN, 3, 3600000, "m", "repeated", "i=%d", i);
	assert_int_equal(nlines, 3);
	assert_non_null(strstr(last, "i=2"));

	kvf_log_rl rl = {0};
	uint32_t sup;
	assert_true(kvf_log_rl_allow(&rl, 1, 1, &sup));
	assert_int_equal(sup, 0);
	assert_false(kvf_log_rl_allow(&rl, 1, 1000000, &sup));
	assert_false(kvf_log_rl_allow(&rl, 1, 1000000, &sup));
	/* a zero-length interval always opens a new window: the drops are reported */
	assert_true(kvf_log_rl_allow(&rl, 1, 0, &sup));
	assert_int_equal(sup, 2);
	kvf_log_write(KVF_LOG_WARN, "m", "x", 5, "%s", "");
	assert_non_null(strstr(last, " suppressed=5\n"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_format, setup, teardown),
		cmocka_unit_test_setup_teardown(test_level_filter, setup, teardown),
		cmocka_unit_test_setup_teardown(test_newlines_and_truncation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rate_limit, setup, teardown),
	};
	return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}
