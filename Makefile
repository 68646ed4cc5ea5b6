# kvfabric top-level Makefile.
#
# One non-recursive make: this file sets flags and includes mk/*.mk (feature
# detection and the rule macros) and then every component's module.mk. A
# module.mk declares what its folder builds with the macros in mk/rules.mk:
#   $(eval $(call kvf_library,NAME,SOURCES,LDLIBS))
#   $(eval $(call kvf_program,NAME,SOURCES,LIBS,LDLIBS))
#   $(eval $(call kvf_unit_test,NAME,SOURCES,LIBS,LDLIBS))
#   $(eval $(call kvf_fuzz,NAME,SOURCES,CORPUS_DIR,LDLIBS))
#   $(eval $(call kvf_bench,NAME,COMMAND,DEPS))
#   TEST_SCRIPTS += path/to/script.sh      (PASS:/FAIL:/SKIP: line protocol)
# Everything lands under $(BUILD) (default build/). Quiet unless V=1.

.DEFAULT_GOAL := all
SHELL := /bin/bash

BUILD   ?= build
PREFIX  ?= /usr/local
V       ?= 0
FUZZ_SECONDS ?= 30

ifeq ($(V),1)
Q :=
else
Q := @
endif

# `make test`, `make run` and friends install missing Debian packages first,
# so a fresh clone needs nothing else typed. Done at parse time because the
# feature detection below depends on what is installed.
ifeq ($(MAKELEVEL),0)
  ifneq ($(filter test run asan fuzz bench,$(MAKECMDGOALS)),)
    ifneq ($(shell scripts/install-deps.sh --check >/dev/null 2>&1 && echo ok),ok)
      $(info kvfabric: installing missing packages with scripts/install-deps.sh)
      ifneq ($(shell scripts/install-deps.sh >&2 && echo ok),ok)
        $(error scripts/install-deps.sh failed; install the packages it names and retry)
      endif
    endif
  endif
endif

# Build with every core unless the caller chose -j.
ifeq ($(filter -j%,$(MAKEFLAGS)),)
  MAKEFLAGS += -j$(shell nproc 2>/dev/null || echo 2)
endif

include mk/features.mk
include mk/flags.mk
include mk/rules.mk

# Components; each may hold sub-components with their own module.mk
# (engine/tokenizer/, tools/kvfctl/). Library names, not include order, tie
# programs to libraries.
COMPONENTS := common engine fabric cachedir worker prefill decode gateway tools k8s
-include $(foreach c,$(COMPONENTS),$(wildcard $(c)/module.mk $(c)/*/module.mk))
-include tests/module.mk bench/module.mk

include mk/targets.mk
