# common/: the runtime every daemon shares (see docs/conventions.md).
COMMON_SRCS := $(wildcard common/*.c)
$(eval $(call kvf_library,common,$(COMMON_SRCS),-lconfig -ljansson -lm))

$(eval $(call kvf_unit_test,test_err,tests/unit/test_err.c,common))
$(eval $(call kvf_unit_test,test_buf,tests/unit/test_buf.c,common))
$(eval $(call kvf_unit_test,test_log,tests/unit/test_log.c,common))
$(eval $(call kvf_unit_test,test_loop,tests/unit/test_loop.c,common))
$(eval $(call kvf_unit_test,test_http_parse,tests/unit/test_http_parse.c,common))
$(eval $(call kvf_unit_test,test_http_server,tests/unit/test_http_server.c,common))
$(eval $(call kvf_fuzz,fuzz_http,tests/fuzz/fuzz_http.c common/http_parse.c common/http_write.c common/buf.c common/err.c))
