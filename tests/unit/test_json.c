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

/* kvf_json_load: the fast parser (json_parse.c); fuzz_json checks it
 * against jansson, these pin the cases that matter most. */
static json_t *load_ok(const char *s, size_t n)
{
	json_t *v = NULL;
	if (kvf_json_load(s, n, &v) != 0)
		fail_msg("refused %.*s: %s", (int)n, s, kvf_errmsg());
	return v;
}

static void load_bad(const char *s, size_t n, const char *why)
{
	json_t *v = NULL;
	assert_int_equal(kvf_json_load(s, n, &v), KVF_E_PARSE);
	assert_null(v);
	if (!strstr(kvf_errmsg(), why))
		fail_msg("%.*s: expected '%s' in '%s'", (int)n, s, why, kvf_errmsg());
}
#define LOAD_OK(lit) load_ok(lit, sizeof(lit) - 1)
#define LOAD_BAD(lit, why) load_bad(lit, sizeof(lit) - 1, why)

static void test_fast_load(void **state)
{
	json_t *v = LOAD_OK(" {\"s\":\"a\\\"b\\\\c\\/\\n\\u00e9\\ud83d\\ude00\xe4\xb8\xad\", \"i\":-9223372036854775808,"
			    "\"r\":-1.5e3, \"t\":true,\"f\":false,\"n\":null,\"a\":[[],{}]}\r\n");
	assert_string_equal(json_string_value(json_object_get(v, "s")),
			    "a\"b\\c/\n\xc3\xa9\xf0\x9f\x98\x80\xe4\xb8\xad");
	assert_true(json_integer_value(json_object_get(v, "i")) == INT64_MIN);
	assert_true(json_real_value(json_object_get(v, "r")) == -1500.0);
	assert_true(json_is_true(json_object_get(v, "t")) && json_is_false(json_object_get(v, "f")));
	assert_true(json_is_null(json_object_get(v, "n")));
	assert_int_equal(json_array_size(json_object_get(v, "a")), 2);
	json_decref(v);
	/* a long plain string (the 8-byte scan) with an escape at the very end */
	char big[4096 + 16];
	memset(big, 'x', sizeof(big));
	memcpy(big, "[\"", 2);
	memcpy(big + 4096, "\\t\"]", 5);
	v = load_ok(big, 4100);
	assert_int_equal(json_string_length(json_array_get(v, 0)), 4094 + 1);
	json_decref(v);
	v = LOAD_OK("[9223372036854775807, 1e-400]");
	assert_true(json_integer_value(json_array_get(v, 0)) == INT64_MAX);
	assert_true(json_is_real(json_array_get(v, 1)));
	json_decref(v);

	LOAD_BAD("[9223372036854775808]", "too big integer");
	LOAD_BAD("[1e400]", "real number overflow");
	LOAD_BAD("[01]", "']' expected");
	LOAD_BAD("[1.]", "invalid number");
	LOAD_BAD("[\"\\ud83d\"]", "high surrogate");
	LOAD_BAD("[\"\\ude00\"]", "low surrogate");
	LOAD_BAD("[\"\\u0000\"]", "\\u0000");
	LOAD_BAD("[\"\\x\"]", "invalid escape");
	LOAD_BAD("[\"\xc0\xaf\"]", "invalid UTF-8"); /* overlong '/' */
	LOAD_BAD("[\"\xed\xa0\x80\"]", "invalid UTF-8"); /* an encoded surrogate */
	LOAD_BAD("[\"\xf4\x90\x80\x80\"]", "invalid UTF-8"); /* > U+10FFFF */
	LOAD_BAD("[\"tab\there\"]", "control character");
	LOAD_BAD("[1\0]", "']' expected"); /* jansson drops this NUL; JSON has none */
	LOAD_BAD("{\"a\":1,\"a\":2}", "duplicate object key");
	LOAD_BAD("\"str\"", "'[' or '{' expected");
	LOAD_BAD("{}x", "end of input expected");
	LOAD_BAD("[tru]", "invalid token");
	LOAD_BAD("[1,]", "invalid token");
	LOAD_BAD("{\"a\":1,}", "string or '}' expected");
	LOAD_BAD("   ", "no JSON value");
	LOAD_BAD("{\n  \"a\": [1,\n  2 x]}", "line 3 column 5");
	/* errors inside a string or number point at the bad byte */
	LOAD_BAD("{\"a\":\"xxxxxxxxxxxxxxxxxxxx\\q\"}", "line 1 column 28");
	LOAD_BAD("{\n\"a\":\n  \"xxxxxxxx\\q\"}", "line 3 column 13");
	LOAD_BAD("[1.e5]", "line 1 column 4");
	/* nesting: 2048 levels like jansson, not one more */
	char deep[2 * 2049];
	memset(deep, '[', 2049);
	memset(deep + 2049, ']', 2049);
	v = load_ok(deep + 1, 2 * 2048);
	json_decref(v);
	load_bad(deep, sizeof(deep), "maximum nesting depth");
	/* jansson counts scalars too: a value inside 2048 arrays is too deep */
	char deep1[2 * 2048 + 1];
	memset(deep1, '[', 2048);
	deep1[2048] = '1';
	memset(deep1 + 2049, ']', 2048);
	load_bad(deep1, sizeof(deep1), "maximum nesting depth");
	v = load_ok(deep1 + 1, sizeof(deep1) - 2); /* inside 2047 */
	json_decref(v);
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
		cmocka_unit_test(test_fast_load),
		cmocka_unit_test(test_getters),
		cmocka_unit_test(test_writers),
	};
	return cmocka_run_group_tests_name("json", tests, NULL, NULL);
}
