# tools/kvf-bench: load generator with TTFT/ITL percentiles (docs/kvf-bench.md).
$(eval $(call kvf_program,kvf-bench,tools/kvf-bench/main.c tools/kvf-bench/bench.c,common))
