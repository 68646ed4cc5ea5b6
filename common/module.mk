# common/: the runtime every daemon shares (see docs/conventions.md).
COMMON_SRCS := $(wildcard common/*.c)
$(eval $(call kvf_library,common,$(COMMON_SRCS),-lconfig -ljansson -lm))

$(eval $(call kvf_unit_test,test_err,tests/unit/test_err.c,common))
$(eval $(call kvf_unit_test,test_buf,tests/unit/test_buf.c,common))
$(eval $(call kvf_unit_test,test_log,tests/unit/test_log.c,common))
$(eval $(call kvf_unit_test,test_loop,tests/unit/test_loop.c,common))

# blockkey: unit tests, the xxhsum cross-check of the vectors, the bench.
$(eval $(call kvf_unit_test,test_blockkey,tests/unit/test_blockkey.c,common))
TEST_SCRIPTS += tests/unit/test_blockkey_xxhsum.sh
$(eval $(call kvf_bench_program,blockkey_bench,bench/blockkey_bench.c,common))
$(eval $(call kvf_bench,blockkey,$(BENCHBINDIR)/blockkey_bench,$(BENCHBINDIR)/blockkey_bench))

# frame + wire: unit tests and the fuzz target (corpus replayed by make test).
$(eval $(call kvf_unit_test,test_frame,tests/unit/test_frame.c,common))
$(eval $(call kvf_fuzz,fuzz_frame,tests/fuzz/fuzz_frame.c common/frame.c common/wire.c common/err.c))
$(eval $(call kvf_unit_test,test_config,tests/unit/test_config.c,common))
$(eval $(call kvf_unit_test,test_json,tests/unit/test_json.c,common))
$(eval $(call kvf_unit_test,test_metrics,tests/unit/test_metrics.c,common))
$(eval $(call kvf_unit_test,test_admin,tests/unit/test_admin.c,common))

# http: parser, writer, server
$(eval $(call kvf_unit_test,test_http_parse,tests/unit/test_http_parse.c,common))
$(eval $(call kvf_unit_test,test_http_server,tests/unit/test_http_server.c,common))
$(eval $(call kvf_fuzz,fuzz_http,tests/fuzz/fuzz_http.c common/http_parse.c common/http_write.c common/buf.c common/err.c))

# config: fuzz the override and file parsers (print -> parse round trip)
$(eval $(call kvf_fuzz,fuzz_config,tests/fuzz/fuzz_config.c common/config.c common/buf.c common/err.c,-lconfig))

# openai: request validation and response shapes
$(eval $(call kvf_unit_test,test_openai,tests/unit/test_openai.c,common))
CFLAGS_tests/unit/test_openai.c := -DKVF_ROOT_DIR='"$(CURDIR)"'
$(eval $(call kvf_fuzz,fuzz_openai,tests/fuzz/fuzz_openai.c common/openai.c common/json.c common/json_parse.c common/buf.c common/err.c,-ljansson))
# the fast JSON parser, differential against jansson
$(eval $(call kvf_fuzz,fuzz_json,tests/fuzz/fuzz_json.c common/json_parse.c common/err.c,-ljansson))

# http client: pooled non-blocking upstream client (gateway, kvf-bench, tests)
$(eval $(call kvf_unit_test,test_http_client,tests/unit/test_http_client.c,common))
$(eval $(call kvf_unit_test,test_base64,tests/unit/test_base64.c,common))
