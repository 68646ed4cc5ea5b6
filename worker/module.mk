# worker/: the serving core the prefill and decode daemons share.
WORKER_SRCS := $(wildcard worker/*.c)
$(eval $(call kvf_library,worker,$(WORKER_SRCS),))
