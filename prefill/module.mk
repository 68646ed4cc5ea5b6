# prefill/: the kvf-prefill daemon.
$(eval $(call kvf_program,kvf-prefill,prefill/main.c,worker cachedir fabric engine tokenizer common))
