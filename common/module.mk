# common/: the runtime every daemon shares (see docs/conventions.md).
COMMON_SRCS := $(wildcard common/*.c)
$(eval $(call kvf_library,common,$(COMMON_SRCS),-lconfig -ljansson -lm))

$(eval $(call kvf_unit_test,test_err,tests/unit/test_err.c,common))

# blockkey: unit tests, the xxhsum cross-check of the vectors, the bench.
$(eval $(call kvf_unit_test,test_blockkey,tests/unit/test_blockkey.c,common))
TEST_SCRIPTS += tests/unit/test_blockkey_xxhsum.sh
BLOCKKEY_BENCH := $(BENCHDIR)/blockkey_bench
$(BLOCKKEY_BENCH): $(OBJDIR)/bench/blockkey_bench.o $(LIBDIR)/libkvf_common.a
	$(call msg,LD,$@)
	$(Q)mkdir -p $(@D) && $(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS_common) $(LDLIBS_BASE)
DEPFILES += $(OBJDIR)/bench/blockkey_bench.d
$(eval $(call kvf_bench,blockkey,$(BLOCKKEY_BENCH),$(BLOCKKEY_BENCH)))

# frame + wire: unit tests and the fuzz target (corpus replayed by make test).
$(eval $(call kvf_unit_test,test_frame,tests/unit/test_frame.c,common))
$(eval $(call kvf_fuzz,fuzz_frame,tests/fuzz/fuzz_frame.c common/frame.c common/wire.c common/err.c))
