# decode/: the kvf-decode daemon.
$(eval $(call kvf_program,kvf-decode,decode/main.c,worker fabric engine tokenizer common))
