# engine/tokenizer/: HF tokenizer.json tokenizers and chat templates
# (libkvf_tokenizer.a). No compute dependencies: the gateway links it.
TOKENIZER_SRCS := $(sort $(wildcard engine/tokenizer/*.c))
TOKENIZER_LDLIBS := -lpcre2-8 -lutf8proc -ljansson -lm
$(eval $(call kvf_library,tokenizer,$(TOKENIZER_SRCS),$(TOKENIZER_LDLIBS)))

$(eval $(call kvf_unit_test,test_tokenizer,tests/unit/test_tokenizer.c,tokenizer common))
$(eval $(call kvf_unit_test,test_tokenizer_chat,tests/unit/test_tokenizer_chat.c,tokenizer common))

# Fuzz target: arbitrary bytes into encode, arbitrary ids into decode.
$(eval $(call kvf_fuzz,fuzz_tokenizer,tests/fuzz/fuzz_tokenizer.c $(TOKENIZER_SRCS) common/err.c,$(TOKENIZER_LDLIBS)))

# make bench-tokenizer: MB/s on a 1 MB mixed corpus vs the baselines of bench/tokenizer_bench.sh.
$(eval $(call kvf_bench,tokenizer,bench/tokenizer_bench.sh,$(BINDIR)/kvf-tokenize))
