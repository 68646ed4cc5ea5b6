/* Unit tests for common/json.c: validating getters and writers. */
/* Project headers first: with UNIT_TESTING, cmocka.h redefines malloc. */
#include "common/kvf_err.h"
#include "common/kvf_json.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

static json_t *parse(const char *s)
{
	json_t *v = NULL;
	assert_int_equal(kvf_json_parse_object(s, strlen(s), &v), 0);
	return v;
}

static void test_parse_errors(void **state)
{
	json_t *v = NULL;
	assert_int_equal(kvf_json_parse_object("{\"a\":", 5, &v), KVF_E_PARSE);
	assert_non_null(strstr(kvf_errmsg(), "invalid JSON at line 1"));
	assert_int_equal(kvf_json_parse_object("[1,2]", 5, &v), KVF_E_PARSE);
	assert_string_equal(kvf_errmsg(), "expected a JSON object");
	assert_int_equal(kvf_json_parse_object("{\"a\":1,\"a\":2}", 13, &v), KVF_E_PARSE);
	assert_int_equal(kvf_json_parse_object("{} trailing", 11, &v), KVF_E_PARSE);
	assert_null(v);
}

static void test_getters(void **state)
{
	json_t *o = parse("{\"max_tokens\":16,\"t\":0.5,\"ti\":1,\"f\":16.0,\"s\":\"x\",\"b\":true,"
			  "\"n\":null,\"arr\":[1],\"obj\":{},\"big\":1e300}");
	int64_t i = -1;
	double d = -1;
	int b = -1;
	const char *s = NULL;
	const json_t *a = NULL;
	assert_int_equal(kvf_json_opt_int(o, "max_tokens", 1, 100, &i), 0);
	assert_int_equal(i, 16);
	assert_int_equal(kvf_json_opt_int(o, "f", 1, 100, &i), 0);
	assert_int_equal(i, 16);
	i = 7;
	assert_int_equal(kvf_json_opt_int(o, "absent", 1, 100, &i), 0);
	assert_int_equal(kvf_json_opt_int(o, "n", 1, 100, &i), 0);
	assert_int_equal(i, 7); /* absent and null leave the default */
	assert_int_equal(kvf_json_req_int(o, "absent", 1, 100, &i), KVF_E_INVAL);
	assert_string_equal(kvf_errmsg(), "'absent' is required");
	assert_string_equal(kvf_json_bad_param(), "absent");
	assert_int_equal(kvf_json_opt_int(o, "max_tokens", 1, 8, &i), KVF_E_INVAL);
	assert_string_equal(kvf_errmsg(), "'max_tokens' must be an integer between 1 and 8, got 16");
	assert_int_equal(kvf_json_opt_int(o, "t", 0, 8, &i), KVF_E_INVAL);
	assert_int_equal(kvf_json_opt_int(o, "big", 0, 8, &i), KVF_E_INVAL);
	assert_int_equal(kvf_json_opt_int(o, "s", 0, 8, &i), KVF_E_INVAL);
	assert_string_equal(kvf_json_bad_param(), "s");

	assert_int_equal(kvf_json_opt_double(o, "t", 0, 2, &d), 0);
	assert_true(d == 0.5);
	assert_int_equal(kvf_json_opt_double(o, "ti", 0, 2, &d), 0);
	assert_true(d == 1.0);
	assert_int_equal(kvf_json_opt_double(o, "big", 0, 2, &d), KVF_E_INVAL);
	assert_int_equal(kvf_json_opt_double(o, "s", 0, 2, &d), KVF_E_INVAL);
	assert_string_equal(kvf_errmsg(), "'s' must be a number");

	assert_int_equal(kvf_json_opt_bool(o, "b", &b), 0);
	assert_int_equal(b, 1);
	assert_int_equal(kvf_json_opt_bool(o, "ti", &b), KVF_E_INVAL);
	assert_int_equal(kvf_json_opt_string(o, "s", &s), 0);
	assert_string_equal(s, "x");
	assert_int_equal(kvf_json_req_string(o, "b", &s), KVF_E_INVAL);
	assert_int_equal(kvf_json_req_string(o, "nope", &s), KVF_E_INVAL);
	assert_int_equal(kvf_json_opt_array(o, "arr", &a), 0);
	assert_int_equal(json_array_size(a), 1);
	assert_int_equal(kvf_json_opt_array(o, "obj", &a), KVF_E_INVAL);
	assert_int_equal(kvf_json_opt_object(o, "obj", &a), 0);
	assert_int_equal(kvf_json_opt_object(o, "arr", &a), KVF_E_INVAL);
	json_decref(o);
}

static void test_writers(void **state)
{
	kvf_buf b = KVF_BUF_INIT;
	json_t *o = json_pack("{s:i,s:s}", "a", 1, "b", "q\"");
	assert_int_equal(kvf_json_dump(o, &b), 0);
	assert_string_equal(b.data, "{\"a\":1,\"b\":\"q\\\"\"}");
	json_decref(o);
	kvf_buf_reset(&b);
	assert_int_equal(kvf_json_openai_error(&b, "bad \"x\"", NULL, "max_tokens", NULL), 0);
	assert_string_equal(b.data, "{\"error\":{\"message\":\"bad \\\"x\\\"\",\"type\":\"invalid_request_error\","
				    "\"param\":\"max_tokens\",\"code\":null}}");
	/* the error body is itself valid JSON */
	json_t *e = NULL;
	assert_int_equal(kvf_json_parse_object(b.data, b.len, &e), 0);
	json_decref(e);
	kvf_buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_errors),
		cmocka_unit_test(test_getters),
		cmocka_unit_test(test_writers),
	};
	return cmocka_run_group_tests_name("json", tests, NULL, NULL);
}
