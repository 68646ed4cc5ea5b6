# cachedir/: the cluster-wide KV block directory.
#   library cachedir: protocol codec (proto.c), index (index.c), server
#   (server.c, what the daemon runs on its loop) and the client library
#   (client.c, public header cachedir/kvf_cachedir.h).
CACHEDIR_SRCS := cachedir/proto.c cachedir/index.c cachedir/server.c cachedir/client.c
$(eval $(call kvf_library,cachedir,$(CACHEDIR_SRCS),))

$(eval $(call kvf_unit_test,test_cachedir_proto,tests/unit/test_cachedir_proto.c,cachedir common))
$(eval $(call kvf_unit_test,test_cachedir_index,tests/unit/test_cachedir_index.c,cachedir common))
$(eval $(call kvf_unit_test,test_cachedir_server,tests/unit/test_cachedir_server.c,cachedir common))
$(eval $(call kvf_unit_test,test_cachedir_client,tests/unit/test_cachedir_client.c,cachedir common))

# Fuzz target: the protocol decoder (+ re-encoding and the index); `make
# test` replays tests/fuzz/corpus/fuzz_cachedir/.
$(eval $(call kvf_fuzz,fuzz_cachedir,tests/fuzz/fuzz_cachedir.c cachedir/proto.c cachedir/index.c common/frame.c common/wire.c common/err.c))

# kvf-cachedir-tool: command-line client (worker, lookup, workers, watch,
# flood, gap, raw), used by the integration tests.
$(eval $(call kvf_program,kvf-cachedir-tool,cachedir/tools/cdtool.c,cachedir common))

# The daemon: main.c only wires the daemon framework and the server.
$(eval $(call kvf_program,kvf-cachedir,cachedir/main.c,cachedir common))

# Bench: kvf-cachedir vs Redis (llm-d-kv-cache's Redis layout), and the
# 10M-block memory scale test. `make bench-cachedir`.
$(eval $(call kvf_bench_program,cachedir_bench,bench/cachedir_bench.c,cachedir common))
$(eval $(call kvf_bench,cachedir,$(BENCHBINDIR)/cachedir_bench,$(BENCHBINDIR)/cachedir_bench $(BINDIR)/kvf-cachedir))
