/* Unit tests for common/buf.c and common/net.c address parsing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "common/kvf_buf.h"
#include "common/kvf_err.h"
#include "common/kvf_net.h"

static void test_append_printf(void **state)
{
	kvf_buf b = KVF_BUF_INIT;
	assert_int_equal(kvf_buf_puts(&b, "hello"), 0);
	assert_int_equal(kvf_buf_printf(&b, " %d %s", 42, "x"), 0);
	assert_string_equal(b.data, "hello 42 x");
	assert_int_equal(b.len, 10);
	/* a long printf takes the slow path */
	char big[1000];
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	assert_int_equal(kvf_buf_printf(&b, "[%s]", big), 0);
	assert_int_equal(b.len, 10 + 1001);
	assert_int_equal(b.data[b.len - 1], ']');
	assert_int_equal(b.data[b.len], '\0');
	kvf_buf_reset(&b);
	assert_int_equal(b.len, 0);
	kvf_buf_free(&b);
	kvf_buf_free(NULL);
}

static void test_consume_and_space(void **state)
{
	kvf_buf b = KVF_BUF_INIT;
	for (int i = 0; i < 10000; i++)
		kvf_buf_putc(&b, (char)('a' + i % 26));
	kvf_buf_consume(&b, 9000);
	assert_int_equal(kvf_buf_avail(&b), 1000);
	assert_int_equal(kvf_buf_head(&b)[0], 'a' + 9000 % 26);
	char *sp = kvf_buf_space(&b, 5000);
	assert_non_null(sp);
	memset(sp, 'z', 5000);
	kvf_buf_commit(&b, 5000);
	assert_int_equal(kvf_buf_avail(&b), 6000);
	assert_int_equal(kvf_buf_head(&b)[0], 'a' + 9000 % 26);
	assert_int_equal(kvf_buf_head(&b)[5999], 'z');
	kvf_buf_consume(&b, 100000);
	assert_int_equal(kvf_buf_avail(&b), 0);
	kvf_buf_free(&b);
}

static void test_json_string(void **state)
{
	kvf_buf b = KVF_BUF_INIT;
	const char s[] = "a\"b\\c\n\x01z";
	kvf_buf_put_json_str(&b, s, sizeof(s) - 1);
	assert_string_equal(b.data, "\"a\\\"b\\\\c\\n\\u0001z\"");
	kvf_buf_free(&b);
}

static void test_hostport(void **state)
{
	char host[64];
	uint16_t port;
	assert_int_equal(kvf_net_parse_hostport("127.0.0.1:8080", host, sizeof(host), &port), 0);
	assert_string_equal(host, "127.0.0.1");
	assert_int_equal(port, 8080);
	assert_int_equal(kvf_net_parse_hostport("[::1]:7", host, sizeof(host), &port), 0);
	assert_string_equal(host, "::1");
	assert_int_equal(port, 7);
	assert_int_equal(kvf_net_parse_hostport(":0", host, sizeof(host), &port), 0);
	assert_string_equal(host, "");
	assert_int_equal(kvf_net_parse_hostport("localhost", host, sizeof(host), &port), KVF_E_INVAL);
	assert_int_equal(kvf_net_parse_hostport("h:70000", host, sizeof(host), &port), KVF_E_INVAL);
	assert_int_equal(kvf_net_parse_hostport("h:", host, sizeof(host), &port), KVF_E_INVAL);
	assert_int_equal(kvf_net_parse_hostport("h:12x", host, sizeof(host), &port), KVF_E_INVAL);
	assert_int_equal(kvf_net_parse_hostport("::1:80", host, sizeof(host), &port), KVF_E_INVAL);
	assert_int_equal(kvf_net_parse_hostport("", host, sizeof(host), &port), KVF_E_INVAL);
	assert_int_equal(kvf_net_parse_hostport("averyveryverylonghostname:1", host, 8, &port), KVF_E_INVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_append_printf),
		cmocka_unit_test(test_consume_and_space),
		cmocka_unit_test(test_json_string),
		cmocka_unit_test(test_hostport),
	};
	return cmocka_run_group_tests_name("buf", tests, NULL, NULL);
}
