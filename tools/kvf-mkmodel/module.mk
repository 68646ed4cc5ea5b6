# tools/kvf-mkmodel: writes a small random HF model directory (with tokenizer).
$(eval $(call kvf_program,kvf-mkmodel,tools/kvf-mkmodel/main.c,common,-ljansson -lm))
