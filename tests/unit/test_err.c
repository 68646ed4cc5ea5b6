/* Unit tests for common/err.c: the error table and per-thread messages. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "common/kvf_err.h"

static void test_strerror_table(void **state)
{
	assert_string_equal(kvf_strerror(0), "success");
	assert_string_equal(kvf_strerror(KVF_E_NOMEM), "out of memory");
	assert_string_equal(kvf_errname(KVF_E_TIMEOUT), "TIMEOUT");
	assert_string_equal(kvf_strerror(-9999), "unknown error");
	assert_string_equal(kvf_errname(12345), "UNKNOWN");
	/* every code in the table has a distinct message */
	for (int a = KVF_E_INTERNAL; a <= 0; a++)
		for (int b = a + 1; b <= 0; b++)
			assert_string_not_equal(kvf_strerror(a), kvf_strerror(b));
}

static void test_errno_mapping(void **state)
{
	assert_int_equal(kvf_err_from_errno(ENOMEM), KVF_E_NOMEM);
	assert_int_equal(kvf_err_from_errno(ECONNREFUSED), KVF_E_CONNREFUSED);
	assert_int_equal(kvf_err_from_errno(ETIMEDOUT), KVF_E_TIMEOUT);
	assert_int_equal(kvf_err_from_errno(EPIPE), KVF_E_CLOSED);
	assert_int_equal(kvf_err_from_errno(EIO), KVF_E_IO);
}

static void test_errf_detail(void **state)
{
	kvf_err_clear();
	assert_string_equal(kvf_errmsg(), "success");
	int rc = kvf_errf(KVF_E_CONFIG, "%s:%d: bad key '%s'", "kvf.conf", 12, "foo");
	assert_int_equal(rc, KVF_E_CONFIG);
	assert_string_equal(kvf_errmsg(), "kvf.conf:12: bad key 'foo'");
	/* wrapping the previous message is safe */
	kvf_errf(KVF_E_CONFIG, "outer: %s", kvf_errmsg());
	assert_string_equal(kvf_errmsg(), "outer: kvf.conf:12: bad key 'foo'");
	kvf_err_clear();
	assert_string_equal(kvf_errmsg(), "success");
	/* overlong messages are truncated, not overrun */
	char big[2000];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	kvf_errf(KVF_E_INVAL, "%s", big);
	assert_true(strlen(kvf_errmsg()) < sizeof(big));
	assert_true(strlen(kvf_errmsg()) > 100);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_strerror_table),
		cmocka_unit_test(test_errno_mapping),
		cmocka_unit_test(test_errf_detail),
	};
	return cmocka_run_group_tests_name("err", tests, NULL, NULL);
}
