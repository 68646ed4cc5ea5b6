# Compiler and linker flags shared by every component.

CC      ?= cc
ifeq ($(origin CC),default)
  CC := gcc
endif
AR      ?= ar
CLANG   ?= clang
OPT     ?= -O2

WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wno-unused-parameter
CPPFLAGS := -D_GNU_SOURCE -I. -I$(BUILD)/include
CFLAGS   := -std=c11 $(OPT) -g $(WARN) -MMD -MP -pthread -fno-strict-aliasing $(EXTRA_CFLAGS)
LDFLAGS  := -pthread $(EXTRA_LDFLAGS)
LDLIBS_BASE := -lm

# make asan: AddressSanitizer + UBSan on every object and binary.
ifeq ($(SANITIZE),1)
  SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
  CFLAGS  += $(SAN_FLAGS)
  LDFLAGS += $(SAN_FLAGS)
endif

# Fuzz targets: clang + libFuzzer + ASan/UBSan, their own object tree.
FUZZ_CFLAGS := -std=c11 -O1 -g -D_GNU_SOURCE -I. -I$(BUILD)/include -DKVF_FUZZING \
  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -fno-omit-frame-pointer -Wall -Wextra -Wno-unused-parameter

CMOCKA_LDLIBS := $(shell $(PKG_CONFIG) --libs cmocka 2>/dev/null || echo -lcmocka)
