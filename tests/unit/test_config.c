/* Unit tests for common/config.c: table-driven parsing, overrides, errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "common/kvf_config.h"
#include "common/kvf_err.h"

struct gw_cfg {
	char *listen;
	int64_t workers;
	double weight;
	int auth;
	int level;
	uint64_t max_body;
	uint64_t timeout_ms;
	kvf_strlist peers;
};

static const kvf_cfg_key gw_keys[] = {
	KVF_CFG_KEY(struct gw_cfg, listen, STRING, "127.0.0.1:8080", 0, 0, NULL, "HTTP address"),
	KVF_CFG_KEY(struct gw_cfg, workers, INT, "4", 1, 64, NULL, "worker threads"),
	KVF_CFG_KEY(struct gw_cfg, weight, DOUBLE, "0.5", 0, 1, NULL, "a weight"),
	KVF_CFG_KEY(struct gw_cfg, auth, BOOL, "false", 0, 0, NULL, "require API keys"),
	KVF_CFG_KEY(struct gw_cfg, level, ENUM, "info", 0, 0, "error|warn|info|debug", "log level"),
	KVF_CFG_KEY(struct gw_cfg, max_body, SIZE, "1MiB", 1024, 1073741824.0, NULL, "body limit"),
	KVF_CFG_KEY(struct gw_cfg, timeout_ms, DURATION, "5s", 1, 3600000, NULL, "a timeout"),
	KVF_CFG_KEY(struct gw_cfg, peers, STRLIST, NULL, 0, 0, NULL, "peers"),
};

static int gw_validate(const void *st)
{
	const struct gw_cfg *c = st;
	if (c->auth && c->workers < 2)
		return kvf_errf(KVF_E_CONFIG, "gateway.auth needs gateway.workers >= 2");
	return 0;
}

static const kvf_cfg_section gw_sec = { "gateway", "Gateway settings", gw_keys, KVF_CFG_NKEYS(gw_keys), gw_validate,
					 sizeof(struct gw_cfg) };

struct fx {
	kvf_config *cfg;
	struct gw_cfg gw;
};

/* cmocka checks leaks per test function, so each test builds and destroys
 * its config itself through these wrappers. */
static void fx_init(struct fx *f)
{
	memset(f, 0, sizeof(*f));
	assert_int_equal(kvf_config_new(&f->cfg), 0);
	assert_int_equal(kvf_config_add(f->cfg, &gw_sec, &f->gw), 0);
}

static void fx_fini(struct fx *f)
{
	kvf_config_destroy(f->cfg);
	kvf_config_destroy(NULL);
}

#define FX_TEST(name)                                   \
	static void name##_body(struct fx *f);          \
	static void name(void **state)                  \
	{                                               \
		struct fx f;                            \
		fx_init(&f);                            \
		name##_body(&f);                        \
		fx_fini(&f);                            \
	}                                               \
	static void name##_body(struct fx *f)

FX_TEST(test_defaults)
{
	assert_string_equal(f->gw.listen, "127.0.0.1:8080");
	assert_int_equal(f->gw.workers, 4);
	assert_true(f->gw.weight == 0.5);
	assert_int_equal(f->gw.auth, 0);
	assert_int_equal(f->gw.level, 2);
	assert_int_equal(f->gw.max_body, 1024 * 1024);
	assert_int_equal(f->gw.timeout_ms, 5000);
	assert_int_equal(f->gw.peers.n, 0);
	/* registering twice is refused */
	struct gw_cfg other = {0};
	assert_int_equal(kvf_config_add(f->cfg, &gw_sec, &other), KVF_E_EXISTS);
}

FX_TEST(test_load_string)
{
	const char *text =
		"cluster: { block_size = 16; }\n"   /* another daemon's section: skipped */
		"gateway: {\n"
		"  listen = \"0.0.0.0:9000\";\n"
		"  workers = 8;\n"
		"  weight = 1;\n"
		"  auth = true;\n"
		"  level = \"debug\";\n"
		"  max_body = \"16MiB\";\n"
		"  timeout_ms = 250;\n"
		"  peers = [\"a:1\", \"b:2\"];\n"
		"};\n";
	assert_int_equal(kvf_config_load_string(f->cfg, text, "test.conf"), 0);
	assert_string_equal(f->gw.listen, "0.0.0.0:9000");
	assert_int_equal(f->gw.workers, 8);
	assert_true(f->gw.weight == 1.0);
	assert_int_equal(f->gw.auth, 1);
	assert_int_equal(f->gw.level, 3);
	assert_int_equal(f->gw.max_body, 16u << 20);
	assert_int_equal(f->gw.timeout_ms, 250);
	assert_int_equal(f->gw.peers.n, 2);
	assert_string_equal(f->gw.peers.v[1], "b:2");
	assert_int_equal(kvf_config_validate(f->cfg), 0);
}

/* Each bad file gives an error naming the line and the key. */
static void expect_file_error(struct fx *f, const char *text, const char *needle)
{
	int rc = kvf_config_load_string(f->cfg, text, "bad.conf");
	if (rc >= 0)
		fail_msg("loading [%s] succeeded", text);
	if (!strstr(kvf_errmsg(), needle))
		fail_msg("error '%s' lacks '%s'", kvf_errmsg(), needle);
}

FX_TEST(test_file_errors)
{
	expect_file_error(f, "gateway: {\n workers = 0;\n};", ":2: gateway.workers: value 0 out of range");
	expect_file_error(f, "gateway: {\n\n workerz = 3;\n};", ":3: unknown key 'gateway.workerz'");
	expect_file_error(f, "gateway: { workers = \"x\"; };", "gateway.workers: expected integer, got string");
	expect_file_error(f, "gateway: { auth = 1; };", "gateway.auth: expected bool, got integer");
	expect_file_error(f, "gateway: { level = \"loud\"; };", "expected one of error|warn|info|debug");
	expect_file_error(f, "gateway: { max_body = \"12parsecs\"; };", "gateway.max_body: expected size");
	expect_file_error(f, "gateway: { max_body = 10; };", "out of range");
	expect_file_error(f, "gateway: { timeout_ms = -5; };", "negative");
	expect_file_error(f, "gateway: { peers = [1, 2]; };", "expected string list");
	expect_file_error(f, "gatway: { workers = 3; };", "unknown section 'gatway'");
	expect_file_error(f, "workers = 3;", "must be a section");
	expect_file_error(f, "gateway: {\n\n workers = = 3;\n};", "bad.conf:3: syntax error");
	assert_int_equal(kvf_config_load_file(f->cfg, "/nonexistent/kvf.conf"), KVF_E_CONFIG);
	assert_non_null(strstr(kvf_errmsg(), "/nonexistent/kvf.conf: cannot read"));
	/* a failed load leaves earlier valid values of other keys alone */
	assert_int_equal(f->gw.workers, 4);
}

FX_TEST(test_overrides)
{
	assert_int_equal(kvf_config_set(f->cfg, "gateway.workers=0x10", "-o"), 0);
	assert_int_equal(f->gw.workers, 16);
	assert_int_equal(kvf_config_set(f->cfg, "gateway.workers=010", "-o"), 0);
	assert_int_equal(f->gw.workers, 10); /* not octal */
	assert_int_equal(kvf_config_set(f->cfg, "gateway.workers= 12", "-o"), KVF_E_CONFIG);
	assert_int_equal(kvf_config_set(f->cfg, "gateway.max_body= 2MiB", "-o"), KVF_E_CONFIG);
	assert_int_equal(kvf_config_set(f->cfg, "gateway.workers=16", "-o"), 0);
	assert_int_equal(kvf_config_set(f->cfg, "gateway.auth=yes", "-o"), 0);
	assert_int_equal(f->gw.auth, 1);
	assert_int_equal(kvf_config_set(f->cfg, "gateway.timeout_ms=2m", "-o"), 0);
	assert_int_equal(f->gw.timeout_ms, 120000);
	assert_int_equal(kvf_config_set(f->cfg, "gateway.peers=x:1, y:2 ,z:3", "-o"), 0);
	assert_int_equal(f->gw.peers.n, 3);
	assert_string_equal(f->gw.peers.v[1], "y:2");
	assert_int_equal(kvf_config_set(f->cfg, "gateway.listen=", "-o"), 0);
	assert_string_equal(f->gw.listen, "");

	assert_int_equal(kvf_config_set(f->cfg, "gateway.workers=65", "-o"), KVF_E_RANGE);
	assert_non_null(strstr(kvf_errmsg(), "-o: gateway.workers: value 65 out of range [1, 64]"));
	assert_int_equal(kvf_config_set(f->cfg, "gateway.workers=12abc", "-o"), KVF_E_CONFIG);
	assert_int_equal(kvf_config_set(f->cfg, "gateway.weight=nan", "-o"), KVF_E_CONFIG);
	assert_int_equal(kvf_config_set(f->cfg, "gateway.peers=a,,b", "-o"), KVF_E_CONFIG);
	assert_int_equal(kvf_config_set(f->cfg, "gateway.nope=1", "-o"), KVF_E_CONFIG);
	assert_int_equal(kvf_config_set(f->cfg, "decode.x=1", "-o"), KVF_E_CONFIG);
	assert_non_null(strstr(kvf_errmsg(), "does not use section 'decode'"));
	assert_int_equal(kvf_config_set(f->cfg, "bogus.x=1", "-o"), KVF_E_CONFIG);
	assert_int_equal(kvf_config_set(f->cfg, "noequals", "-o"), KVF_E_CONFIG);
	assert_int_equal(kvf_config_set(f->cfg, ".x=1", "-o"), KVF_E_CONFIG);
	assert_int_equal(kvf_config_set(f->cfg, "gateway.=1", "-o"), KVF_E_CONFIG);
	/* failed overrides changed nothing */
	assert_int_equal(f->gw.workers, 16);
	assert_int_equal(f->gw.peers.n, 3);

	assert_int_equal(kvf_config_set(f->cfg, "gateway.workers=1", "-o"), 0);
	assert_int_equal(kvf_config_validate(f->cfg), KVF_E_CONFIG);
	assert_non_null(strstr(kvf_errmsg(), "gateway.auth needs"));
}

static void test_units(void **state)
{
	uint64_t v;
	assert_int_equal(kvf_config_parse_size("4096", &v), 0);
	assert_int_equal(v, 4096);
	assert_int_equal(kvf_config_parse_size("4k", &v), 0);
	assert_int_equal(v, 4096);
	assert_int_equal(kvf_config_parse_size("2GiB", &v), 0);
	assert_int_equal(v, 2ull << 30);
	assert_int_equal(kvf_config_parse_size("-1", &v), KVF_E_PARSE);
	assert_int_equal(kvf_config_parse_size("", &v), KVF_E_PARSE);
	assert_int_equal(kvf_config_parse_size("99999999999999999TiB", &v), KVF_E_RANGE);
	assert_int_equal(kvf_config_parse_duration("1h", &v), 0);
	assert_int_equal(v, 3600000);
	assert_int_equal(kvf_config_parse_duration("15ms", &v), 0);
	assert_int_equal(v, 15);
	assert_int_equal(kvf_config_parse_duration("3 s", &v), 0);
	assert_int_equal(v, 3000);
	assert_int_equal(kvf_config_parse_duration("3 days", &v), KVF_E_PARSE);
}

/* --print-config output loads back into the same values. */
FX_TEST(test_print_roundtrip)
{
	assert_int_equal(kvf_config_set(f->cfg, "gateway.listen=say \"hi\"\\", "-o"), 0);
	assert_int_equal(kvf_config_set(f->cfg, "gateway.workers=7", "-o"), 0);
	assert_int_equal(kvf_config_set(f->cfg, "gateway.weight=0.125", "-o"), 0);
	assert_int_equal(kvf_config_set(f->cfg, "gateway.max_body=1536KiB", "-o"), 0);
	assert_int_equal(kvf_config_set(f->cfg, "gateway.timeout_ms=1500", "-o"), 0);
	assert_int_equal(kvf_config_set(f->cfg, "gateway.peers=p:1,q:2", "-o"), 0);
	assert_int_equal(kvf_config_set(f->cfg, "gateway.level=warn", "-o"), 0);
	kvf_buf out = KVF_BUF_INIT;
	assert_int_equal(kvf_config_print(f->cfg, &out), 0);
	assert_non_null(strstr(out.data, "# worker threads (integer; default: 4; 1 .. 64)\n  workers = 7;"));
	assert_non_null(strstr(out.data, "max_body = \"1536KiB\";"));
	assert_non_null(strstr(out.data, "timeout_ms = \"1500ms\";"));

	kvf_config *c2;
	struct gw_cfg g2 = {0};
	assert_int_equal(kvf_config_new(&c2), 0);
	assert_int_equal(kvf_config_add(c2, &gw_sec, &g2), 0);
	assert_int_equal(kvf_config_load_string(c2, out.data, "printed"), 0);
	assert_string_equal(g2.listen, f->gw.listen);
	assert_int_equal(g2.workers, 7);
	assert_true(g2.weight == 0.125);
	assert_int_equal(g2.max_body, 1536 * 1024);
	assert_int_equal(g2.timeout_ms, 1500);
	assert_int_equal(g2.level, 1);
	assert_int_equal(g2.peers.n, 2);
	assert_string_equal(g2.peers.v[0], "p:1");
	kvf_config_destroy(c2);

	kvf_buf doc = KVF_BUF_INIT;
	const kvf_cfg_section *secs[] = { &gw_sec };
	assert_int_equal(kvf_config_doc(secs, 1, &doc), 0);
	assert_non_null(strstr(doc.data, "## `gateway`"));
	assert_non_null(strstr(doc.data, "| `max_body` | size | `1MiB` | 1024 .. 1.07374e+09 | body limit |"));
	kvf_buf_free(&doc);
	kvf_buf_free(&out);
}

FX_TEST(test_cli)
{
	char path[] = "/tmp/kvf-test-conf-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	const char *text = "gateway: { workers = 9; };\n";
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);

	int code = -1;
	char *ok[] = { "kvf-test", "-o", "gateway.workers=11", "-c", path, NULL };
	assert_int_equal(kvf_config_cli(f->cfg, "kvf-test", 5, ok, NULL, &code), 0);
	assert_int_equal(f->gw.workers, 11); /* -o applies after the file */

	char *bad[] = { "kvf-test", "-o", "gateway.workers=999", NULL };
	assert_int_equal(kvf_config_cli(f->cfg, "kvf-test", 3, bad, NULL, &code), 1);
	assert_int_equal(code, 2);
	char *unk[] = { "kvf-test", "--frobnicate", NULL };
	assert_int_equal(kvf_config_cli(f->cfg, "kvf-test", 2, unk, NULL, &code), 1);
	assert_int_equal(code, 2);
	char *extra[] = { "kvf-test", "stray", NULL };
	assert_int_equal(kvf_config_cli(f->cfg, "kvf-test", 2, extra, NULL, &code), 1);
	assert_int_equal(code, 2);
	char *noarg[] = { "kvf-test", "-c", NULL };
	assert_int_equal(kvf_config_cli(f->cfg, "kvf-test", 2, noarg, NULL, &code), 1);
	assert_int_equal(code, 2);
	char *check[] = { "kvf-test", "--check", NULL };
	assert_int_equal(kvf_config_cli(f->cfg, "kvf-test", 2, check, NULL, &code), 1);
	assert_int_equal(code, 0);
	char *missing[] = { "kvf-test", "-c", "/nonexistent.conf", NULL };
	assert_int_equal(kvf_config_cli(f->cfg, "kvf-test", 3, missing, NULL, &code), 1);
	assert_int_equal(code, 2);
	unlink(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_load_string),
		cmocka_unit_test(test_file_errors),
		cmocka_unit_test(test_overrides),
		cmocka_unit_test(test_units),
		cmocka_unit_test(test_print_roundtrip),
		cmocka_unit_test(test_cli),
	};
	return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
