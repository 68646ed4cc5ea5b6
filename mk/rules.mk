# Rule macros used by every module.mk. See the header of the top Makefile.
#
# Object trees: $(BUILD)/obj (normal), $(BUILD)/obj-ut (-DUNIT_TESTING: the
# allocator maps to cmocka's test_malloc so unit tests catch leaks),
# $(BUILD)/obj-fuzz (clang + libFuzzer).

OBJDIR     := $(BUILD)/obj
UTOBJDIR   := $(BUILD)/obj-ut
FUZZOBJDIR := $(BUILD)/obj-fuzz
BINDIR     := $(BUILD)/bin
LIBDIR     := $(BUILD)/lib
UTDIR      := $(BUILD)/tests/unit
REPLAYDIR  := $(BUILD)/tests/fuzz
FUZZDIR    := $(BUILD)/fuzz
BENCHDIR   := $(BUILD)/bench
BENCHBINDIR := $(BUILD)/bench/bin

ALL_LIBS     :=
ALL_BINS     :=
UNIT_TESTS   :=
TEST_PROGRAMS :=
FUZZ_TARGETS :=
FUZZ_REPLAYS :=
BENCHES      :=
TEST_SCRIPTS :=
DEPFILES     :=

ifeq ($(V),1)
  msg = @true
else
  msg = @printf '  %-7s %s\n' '$(1)' '$(2)'
endif

# Per-file extra flags: CFLAGS_path/to/file.c := ...
$(OBJDIR)/%.o: %.c $(FEATURES_H)
	$(call msg,CC,$@)
	$(Q)mkdir -p $(@D) && $(CC) $(CPPFLAGS) $(CFLAGS) $(CFLAGS_$<) -c $< -o $@

$(UTOBJDIR)/%.o: %.c $(FEATURES_H)
	$(call msg,CC-UT,$@)
	$(Q)mkdir -p $(@D) && $(CC) $(CPPFLAGS) -DUNIT_TESTING $(CFLAGS) $(CFLAGS_$<) -c $< -o $@

$(FUZZOBJDIR)/%.o: %.c $(FEATURES_H)
	$(call msg,CC-FUZZ,$@)
	$(Q)mkdir -p $(@D) && $(CLANG) $(FUZZ_CFLAGS) $(CFLAGS_$<) -MMD -MP -c $< -o $@

lib_paths    = $(patsubst %,$(LIBDIR)/libkvf_%.a,$(1))
libut_paths  = $(patsubst %,$(LIBDIR)/libkvf_%-ut.a,$(1))
lib_ldlibs   = $(foreach l,$(1),$(LDLIBS_$(l)))

# $(call kvf_library,NAME,SOURCES,LDLIBS)
# Builds $(LIBDIR)/libkvf_NAME.a and its unit-test twin libkvf_NAME-ut.a.
# LDLIBS are what a program linking this library must add.
define kvf_library
OBJS_lib_$(1)   := $$(patsubst %.c,$$(OBJDIR)/%.o,$(2))
UTOBJS_lib_$(1) := $$(patsubst %.c,$$(UTOBJDIR)/%.o,$(2))
LDLIBS_$(1)     := $(3)
$$(LIBDIR)/libkvf_$(1).a: $$(OBJS_lib_$(1))
	$$(call msg,AR,$$@)
	$$(Q)mkdir -p $$(@D) && rm -f $$@ && $$(AR) rcs $$@ $$^
$$(LIBDIR)/libkvf_$(1)-ut.a: $$(UTOBJS_lib_$(1))
	$$(call msg,AR,$$@)
	$$(Q)mkdir -p $$(@D) && rm -f $$@ && $$(AR) rcs $$@ $$^
ALL_LIBS += $$(LIBDIR)/libkvf_$(1).a
DEPFILES += $$(OBJS_lib_$(1):.o=.d) $$(UTOBJS_lib_$(1):.o=.d)
endef

# $(call kvf_program,NAME,SOURCES,LIBS,LDLIBS)
# Builds $(BINDIR)/NAME from SOURCES linked with the kvfabric LIBS (component
# names, most dependent first) and extra LDLIBS.
define kvf_program
OBJS_bin_$(1) := $$(patsubst %.c,$$(OBJDIR)/%.o,$(2))
$$(BINDIR)/$(1): $$(OBJS_bin_$(1)) $$(call lib_paths,$(3))
	$$(call msg,LD,$$@)
	$$(Q)mkdir -p $$(@D) && $$(CC) $$(LDFLAGS) -o $$@ $$(OBJS_bin_$(1)) $$(call lib_paths,$(3)) $$(call lib_ldlibs,$(3)) $(4) $$(LDLIBS_BASE)
ALL_BINS += $$(BINDIR)/$(1)
DEPFILES += $$(OBJS_bin_$(1):.o=.d)
endef

# $(call kvf_test_program,NAME,SOURCES,LIBS,LDLIBS)
# A helper program for integration tests: $(BUILD)/tests/bin/NAME, built by
# `make test`, never installed.
define kvf_test_program
OBJS_tbin_$(1) := $$(patsubst %.c,$$(OBJDIR)/%.o,$(2))
$$(BUILD)/tests/bin/$(1): $$(OBJS_tbin_$(1)) $$(call lib_paths,$(3))
	$$(call msg,LD,$$@)
	$$(Q)mkdir -p $$(@D) && $$(CC) $$(LDFLAGS) -o $$@ $$(OBJS_tbin_$(1)) $$(call lib_paths,$(3)) $$(call lib_ldlibs,$(3)) $(4) $$(LDLIBS_BASE)
TEST_PROGRAMS += $$(BUILD)/tests/bin/$(1)
DEPFILES += $$(OBJS_tbin_$(1):.o=.d)
endef

# $(call kvf_unit_test,NAME,SOURCES,LIBS,LDLIBS)
# A cmocka binary $(UTDIR)/NAME, compiled and linked against the -ut libraries.
define kvf_unit_test
OBJS_ut_$(1) := $$(patsubst %.c,$$(UTOBJDIR)/%.o,$(2))
$$(UTDIR)/$(1): $$(OBJS_ut_$(1)) $$(call libut_paths,$(3))
	$$(call msg,LD,$$@)
	$$(Q)mkdir -p $$(@D) && $$(CC) $$(LDFLAGS) -o $$@ $$(OBJS_ut_$(1)) $$(call libut_paths,$(3)) $$(call lib_ldlibs,$(3)) $(4) $$(CMOCKA_LDLIBS) $$(LDLIBS_BASE)
UNIT_TESTS += $$(UTDIR)/$(1)
DEPFILES += $$(OBJS_ut_$(1):.o=.d)
endef

# $(call kvf_fuzz,NAME,SOURCES,LDLIBS)
# SOURCES: the target (defines LLVMFuzzerTestOneInput) and every source it
# needs. Builds the libFuzzer binary $(FUZZDIR)/NAME (make fuzz) and a replay
# binary $(REPLAYDIR)/NAME that `make test` runs over the committed corpus
# tests/fuzz/corpus/NAME/ with the normal compiler.
define kvf_fuzz
FOBJS_$(1) := $$(patsubst %.c,$$(FUZZOBJDIR)/%.o,$(2))
ROBJS_$(1) := $$(patsubst %.c,$$(OBJDIR)/%.o,$(2) tests/fuzz/replay.c)
$$(FUZZDIR)/$(1): $$(FOBJS_$(1))
	$$(call msg,LD-FUZZ,$$@)
	$$(Q)mkdir -p $$(@D) && $$(CLANG) $$(FUZZ_CFLAGS) -o $$@ $$^ $(3) $$(LDLIBS_BASE)
$$(REPLAYDIR)/$(1): $$(ROBJS_$(1))
	$$(call msg,LD,$$@)
	$$(Q)mkdir -p $$(@D) && $$(CC) $$(LDFLAGS) -o $$@ $$^ $(3) $$(LDLIBS_BASE)
FUZZ_TARGETS += $(1)
FUZZ_REPLAYS += $$(REPLAYDIR)/$(1)
DEPFILES += $$(FOBJS_$(1):.o=.d) $$(ROBJS_$(1):.o=.d)
endef

# $(call kvf_bench_program,NAME,SOURCES,LIBS,LDLIBS)
# Like kvf_program, but into $(BENCHBINDIR) and not part of `make all`.
define kvf_bench_program
OBJS_bench_$(1) := $$(patsubst %.c,$$(OBJDIR)/%.o,$(2))
$$(BENCHBINDIR)/$(1): $$(OBJS_bench_$(1)) $$(call lib_paths,$(3))
	$$(call msg,LD,$$@)
	$$(Q)mkdir -p $$(@D) && $$(CC) $$(LDFLAGS) -o $$@ $$(OBJS_bench_$(1)) $$(call lib_paths,$(3)) $$(call lib_ldlibs,$(3)) $(4) $$(LDLIBS_BASE)
DEPFILES += $$(OBJS_bench_$(1):.o=.d)
endef

# $(call kvf_bench,NAME,COMMAND,PREREQUISITES)
# `make bench-NAME` runs COMMAND with BENCH_OUT=$(BENCHDIR)/NAME.json in the
# environment; the command writes its figures and ratios there.
define kvf_bench
.PHONY: bench-$(1)
bench-$(1): $(3)
	$$(call msg,BENCH,$(1))
	$$(Q)mkdir -p $$(BENCHDIR) && BENCH_OUT=$$(abspath $$(BENCHDIR))/$(1).json KVF_BUILD=$$(abspath $$(BUILD)) $(2)
BENCHES += $(1)
endef
