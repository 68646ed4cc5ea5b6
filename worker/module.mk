# worker/: the serving core the prefill and decode daemons share.
WORKER_SRCS := $(wildcard worker/*.c)
$(eval $(call kvf_library,worker,$(WORKER_SRCS),))

# make bench-workers-pd: aggregated vs disaggregated serving side by side
$(eval $(call kvf_bench,workers-pd,bench/workers_pd_bench.sh,$(BINDIR)/kvf-decode $(BINDIR)/kvf-prefill $(BINDIR)/kvf-gateway $(BINDIR)/kvf-bench $(BINDIR)/kvf-mkmodel))
