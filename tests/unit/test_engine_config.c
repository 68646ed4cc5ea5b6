/*
 * Unit tests for the `engine {}` config section (engine/config.c): defaults,
 * a file mapped onto kvf_engine_options and into a running engine, and the
 * errors a daemon prints for a bad section.
 */
#include <string.h>

#include "common/kvf_config.h"
#include "common/kvf_err.h"
#include "engine/kvf_engine.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

static void test_file_to_engine(void **state)
{
	kvf_config *cfg;
	kvf_engine_cfg ec = {0};
	assert_int_equal(kvf_config_new(&cfg), 0);
	assert_int_equal(kvf_config_add(cfg, &kvf_engine_section, &ec), 0);
	/* defaults */
	assert_int_equal(ec.backend, KVF_ENGINE_CFG_CPU);
	assert_int_equal(ec.max_batch_tokens, 512);
	assert_int_equal(ec.kv_pool_bytes, 256u << 20);
	const char *text = "engine = {\n"
			   "  backend = \"sim\";\n"
			   "  sim_preset = \"tiny\";\n"
			   "  kv_dtype = \"f16\";\n"
			   "  kv_pool_bytes = \"4MiB\";\n"
			   "  max_seqs = 8;\n"
			   "  sim_time_scale = 0.01;\n"
			   "};\n";
	assert_int_equal(kvf_config_load_string(cfg, text, "test.conf"), 0);
	assert_int_equal(kvf_config_validate(cfg), 0);
	kvf_engine_options o;
	assert_int_equal(kvf_engine_options_from_cfg(&ec, 16, &o), 0);
	assert_string_equal(o.backend, "sim");
	assert_int_equal(o.kv_dtype, KVF_DTYPE_F16);
	kvf_engine *e;
	assert_int_equal(kvf_engine_create(&o, &e), 0);
	kvf_engine_info info;
	kvf_engine_info_get(e, &info);
	assert_int_equal(info.kv_dtype, KVF_DTYPE_F16);
	assert_int_equal(info.block_bytes, 2 * 2 * 2 * 16 * 16 * 2);
	assert_int_equal(info.kv_blocks, (4 << 20) / info.block_bytes);
	assert_string_equal(info.arch, "sim:tiny");
	kvf_engine_destroy(e);
	/* -o override, then a backend that is not built */
	assert_int_equal(kvf_config_set(cfg, "engine.backend=cuda", "-o"), 0);
	assert_int_equal(kvf_engine_options_from_cfg(&ec, 16, &o), 0);
	assert_int_equal(kvf_engine_create(&o, &e), KVF_E_UNSUPPORTED);
	assert_non_null(strstr(kvf_errmsg(), "cuda backend is not built"));
	kvf_config_destroy(cfg);
}

static void test_errors(void **state)
{
	kvf_config *cfg;
	kvf_engine_cfg ec = {0};
	assert_int_equal(kvf_config_new(&cfg), 0);
	assert_int_equal(kvf_config_add(cfg, &kvf_engine_section, &ec), 0);
	/* cpu without a model */
	assert_int_equal(kvf_config_validate(cfg), KVF_E_CONFIG);
	assert_non_null(strstr(kvf_errmsg(), "engine.model_dir"));
	/* not a choice */
	assert_int_not_equal(kvf_config_load_string(cfg, "engine = { kv_dtype = \"f8\"; };", "t.conf"), 0);
	assert_non_null(strstr(kvf_errmsg(), "kv_dtype"));
	assert_int_not_equal(kvf_config_set(cfg, "engine.max_batch_tokens=0", "-o"), 0);
	kvf_config_destroy(cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_file_to_engine),
		cmocka_unit_test(test_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
