/* Unit tests for common/base64.c: RFC 4648 vectors, round trips, strictness. */
#include "common/kvf_base64.h"
#include "common/kvf_err.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

static void test_rfc4648_vectors(void **state)
{
	static const char *const plain[] = { "", "f", "fo", "foo", "foob", "fooba", "foobar" };
	static const char *const coded[] = { "", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy" };
	for (int i = 0; i < 7; i++) {
		kvf_buf b = KVF_BUF_INIT;
		assert_int_equal(kvf_base64_encode(plain[i], strlen(plain[i]), &b), 0);
		assert_string_equal(b.data ? b.data : "", coded[i]);
		kvf_buf d = KVF_BUF_INIT;
		assert_int_equal(kvf_base64_decode(coded[i], strlen(coded[i]), &d), 0);
		assert_int_equal(d.len, strlen(plain[i]));
		if (d.len)
			assert_memory_equal(d.data, plain[i], d.len);
		kvf_buf_free(&b);
		kvf_buf_free(&d);
	}
}

static void test_roundtrip_binary(void **state)
{
	uint8_t data[1000];
	for (size_t n = 0; n < sizeof(data); n += 37) {
		for (size_t i = 0; i < n; i++)
			data[i] = (uint8_t)(i * 131 + n);
		kvf_buf e = KVF_BUF_INIT, d = KVF_BUF_INIT;
		assert_int_equal(kvf_base64_encode(data, n, &e), 0);
		assert_int_equal(kvf_base64_decode(e.data ? e.data : "", e.len, &d), 0);
		assert_int_equal(d.len, n);
		if (n)
			assert_memory_equal(d.data, data, n);
		kvf_buf_free(&e);
		kvf_buf_free(&d);
	}
}

static void test_strict(void **state)
{
	static const char *const bad[] = { "Zg=", "Zg=a", "Z===", "Zm9v\n", "Zm 9", "Zh==", "=Zg=", "Zg==Zg==" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		kvf_buf d = KVF_BUF_INIT;
		if (kvf_base64_decode(bad[i], strlen(bad[i]), &d) != KVF_E_PARSE)
			fail_msg("accepted '%s'", bad[i]);
		kvf_buf_free(&d);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rfc4648_vectors),
		cmocka_unit_test(test_roundtrip_binary),
		cmocka_unit_test(test_strict),
	};
	return cmocka_run_group_tests_name("base64", tests, NULL, NULL);
}
