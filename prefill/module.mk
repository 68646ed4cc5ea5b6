# prefill/: the kvf-prefill daemon.
$(eval $(call kvf_program,kvf-prefill,prefill/main.c,worker fabric engine tokenizer common))
