# tools/kvf-run: offline engine runs (generate, dump logits, greedy ids, bench).
# Text prompts (-p) need the tokenizer library (engine/tokenizer/); without it
# kvf-run still builds and serves --ids, --dump-logits, --greedy and --bench.
ifneq ($(wildcard engine/tokenizer/module.mk),)
KVF_RUN_LIBS := engine tokenizer common
CFLAGS_tools/kvf-run/main.c := -DKVF_RUN_TOKENIZER=1
else
KVF_RUN_LIBS := engine common
endif
$(eval $(call kvf_program,kvf-run,tools/kvf-run/main.c,$(KVF_RUN_LIBS),))
