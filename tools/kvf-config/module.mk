# tools/kvf-config: configuration reference (docs/config.md) and whole-file checker.
$(eval $(call kvf_program,kvf-config,tools/kvf-config/kvf-config.c,gateway worker fabric engine tokenizer common))
