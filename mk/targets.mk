# Top-level targets. Included last, after every module.mk has declared its parts.

.PHONY: all test tests-build asan fuzz fuzz-build bench install clean distclean run deps help

all: $(ALL_LIBS) $(ALL_BINS)

TEST_MANIFEST := $(BUILD)/tests/manifest
SUITE_SCRIPTS  = $(sort $(wildcard tests/integration/*.sh tests/e2e/*.sh)) $(TEST_SCRIPTS)

tests-build: all $(UNIT_TESTS) $(FUZZ_REPLAYS) $(TEST_PROGRAMS)

# The manifest lists every suite the runner executes, one per line:
#   unit PATH | replay PATH CORPUS_DIR | script PATH
$(TEST_MANIFEST): FORCE
	@mkdir -p $(@D)
	@{ $(foreach t,$(UNIT_TESTS),echo "unit $(t)";) \
	   $(foreach f,$(FUZZ_TARGETS),echo "replay $(REPLAYDIR)/$(f) tests/fuzz/corpus/$(f)";) \
	   $(foreach s,$(SUITE_SCRIPTS),echo "script $(s)";) true; } > $@.tmp && mv $@.tmp $@

test: tests-build $(TEST_MANIFEST)
	$(Q)KVF_BUILD=$(abspath $(BUILD)) KVF_ROOT=$(CURDIR) LSAN_OPTIONS=suppressions=$(CURDIR)/tests/fuzz/lsan.supp \
		scripts/run-tests.sh $(TEST_MANIFEST)

# ASan + UBSan build of everything in its own tree, whole suite.
asan:
	$(Q)$(MAKE) --no-print-directory BUILD=$(BUILD)/asan SANITIZE=1 OPT=-O1 test

fuzz-build: $(addprefix $(FUZZDIR)/,$(FUZZ_TARGETS))

# Each target runs FUZZ_SECONDS on a scratch copy of its committed corpus.
fuzz: fuzz-build
	$(Q)FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/run-fuzz.sh $(FUZZDIR) $(FUZZ_TARGETS)

bench: $(addprefix bench-,$(BENCHES))
	@echo "bench results: $(BENCHDIR)/*.json"

install: all
	$(Q)install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/doc/kvfabric
	$(Q)install -m 0755 $(ALL_BINS) $(DESTDIR)$(PREFIX)/bin/
	$(Q)install -m 0644 README.md LICENSE $(wildcard docs/*.md) $(DESTDIR)$(PREFIX)/share/doc/kvfabric/
	@echo "installed $(notdir $(ALL_BINS)) into $(DESTDIR)$(PREFIX)/bin"

clean:
	rm -rf $(BUILD)

distclean: clean
	rm -rf .cache

deps:
	$(Q)scripts/install-deps.sh

# The loopback demo cluster (scripts/run-demo.sh); MODEL=/path/to/hf-model.
run: all
	$(Q)KVF_BUILD=$(BUILD) MODEL=$(MODEL) scripts/run-demo.sh

help:
	@echo "make            build everything under $(BUILD)/"
	@echo "make run        start the loopback demo cluster"
	@echo "make test       build and run every test suite"
	@echo "make asan       the test suite under ASan + UBSan"
	@echo "make fuzz       run every fuzz target FUZZ_SECONDS (default 30)"
	@echo "make bench      run every benchmark (bench-NAME for one)"
	@echo "make install    install binaries into PREFIX (default /usr/local)"
	@echo "make k8s-check  render, schema-validate and policy-check the k8s overlays"
	@echo "options: V=1 CUDA=0 DPDK=0 VERBS=0 OFI=0 NCCL=0 BUILD=dir"

FORCE:

-include $(DEPFILES)
