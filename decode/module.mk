# decode/: the kvf-decode daemon.
$(eval $(call kvf_program,kvf-decode,decode/main.c,worker cachedir fabric engine tokenizer common))
