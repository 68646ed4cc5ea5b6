# gateway/: the OpenAI front door (libkvf_gateway.a + kvf-gateway).
# The cachedir client is used when the tree has it (cachedir/kvf_cachedir.h);
# otherwise cachedir_absent.c says so at configuration time.
GATEWAY_HAVE_CACHEDIR := $(if $(and $(wildcard cachedir/kvf_cachedir.h),$(wildcard gateway/index_cachedir.c)),1,)
GATEWAY_SRCS := gateway/config.c gateway/gateway.c gateway/index_local.c gateway/io_epoll.c \
	gateway/openai.c gateway/proxy.c gateway/route.c gateway/tenant.c gateway/tokpool.c gateway/workers.c \
	$(if $(GATEWAY_HAVE_CACHEDIR),gateway/index_cachedir.c,gateway/cachedir_absent.c)
GATEWAY_LIBS := gateway $(if $(GATEWAY_HAVE_CACHEDIR),cachedir) tokenizer common
$(eval $(call kvf_library,gateway,$(GATEWAY_SRCS),-lpthread))
$(eval $(call kvf_program,kvf-gateway,gateway/main.c,$(GATEWAY_LIBS)))

# The stand-in OpenAI worker of the gateway tests and benchmarks.
$(eval $(call kvf_test_program,kvf-upstream-fixture,tests/integration/upstream_fixture.c,common))

# Unit tests: decision logic with fixed inputs (test_gateway), the request
# path through a real loop with fixture upstreams (test_gateway_proxy).
$(eval $(call kvf_unit_test,test_gateway,tests/unit/test_gateway.c,gateway tokenizer common))

# Fuzz target over the request path (body parsing, tokenization, keys,
# index, routing; request heads; response usage scanning; tenants files).
$(eval $(call kvf_fuzz,fuzz_gateway,tests/fuzz/fuzz_gateway.c gateway/openai.c gateway/tenant.c gateway/route.c \
	gateway/workers.c gateway/index_local.c common/openai.c common/json.c common/json_parse.c common/buf.c common/err.c \
	common/blockkey.c common/http_parse.c common/http_write.c $(TOKENIZER_SRCS),$(TOKENIZER_LDLIBS)))

# Benchmarks (bench/): routing decision cost; gateway vs nginx proxy_pass;
# prefix-aware vs round-robin vs random routing on sim-backend workers.
$(eval $(call kvf_bench_program,gateway_route_bench,bench/gateway_route_bench.c,gateway tokenizer common))
$(eval $(call kvf_bench,gateway-route,bench/gateway_route_bench.sh,$(BENCHBINDIR)/gateway_route_bench))
$(eval $(call kvf_bench,gateway-nginx,bench/gateway_nginx_bench.sh,$(BINDIR)/kvf-gateway $(BUILD)/tests/bin/kvf-upstream-fixture))
$(eval $(call kvf_bench,gateway-routing,bench/gateway_routing_bench.sh,$(BINDIR)/kvf-gateway $(BINDIR)/kvf-bench $(BINDIR)/kvf-decode $(BINDIR)/kvf-mkmodel))
