# tools/kvf-tokenize/: the tokenizer on stdin/stdout, one JSON value per line.
$(eval $(call kvf_program,kvf-tokenize,tools/kvf-tokenize/main.c,tokenizer common,))
