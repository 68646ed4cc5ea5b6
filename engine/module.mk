# engine/: the model runtime (library `engine`), its unit tests and bench.
# engine/tokenizer/ has its own module.mk (library `tokenizer`).

ENGINE_SRCS := engine/engine.c engine/config.c engine/dtype.c engine/model.c engine/safetensors.c engine/kvcache.c \
  engine/forward.c engine/sampler.c engine/sched.c \
  engine/cpu/cpu_backend.c engine/cpu/threadpool.c engine/cpu/kernels.c \
  engine/cpu/kernels_generic.c engine/cpu/kernels_avx2.c engine/cpu/kernels_avx512.c \
  engine/sim/sim_backend.c
$(eval $(call kvf_library,engine,$(ENGINE_SRCS),-ljansson -lm -lpthread))

# CPU kernels: the same C compiled per instruction set, picked at run time
# (engine/cpu/kernels.c), so the binary stays portable.
ENGINE_KFLAGS := -O3 -ffp-contract=fast
CFLAGS_engine/cpu/kernels_generic.c := $(ENGINE_KFLAGS)
ifneq ($(findstring x86_64,$(shell $(CC) -dumpmachine)),)
CFLAGS_engine/cpu/kernels_avx2.c := $(ENGINE_KFLAGS) -mavx2 -mfma
CFLAGS_engine/cpu/kernels_avx512.c := $(ENGINE_KFLAGS) -mavx512f -mavx512bw -mavx512vl -mavx2 -mfma
endif

$(eval $(call kvf_unit_test,test_engine,tests/unit/test_engine.c,engine common,-ljansson))
$(eval $(call kvf_unit_test,test_kvcache,tests/unit/test_kvcache.c,engine common,-ljansson))
$(eval $(call kvf_unit_test,test_sampler,tests/unit/test_sampler.c,engine common,-ljansson))
$(eval $(call kvf_unit_test,test_sched,tests/unit/test_sched.c,engine common,-ljansson))

# make bench-engine: prefill/decode tokens/s of a ~100M model vs memcpy GB/s.
$(eval $(call kvf_bench,engine,bench/engine_bench.sh,$(BINDIR)/kvf-run $(BINDIR)/kvf-mkmodel))

# Fuzz target: config.json and safetensors headers (untrusted model files).
$(eval $(call kvf_fuzz,fuzz_model,tests/fuzz/fuzz_model.c engine/model.c engine/safetensors.c engine/dtype.c common/err.c,-ljansson -lm))
$(eval $(call kvf_unit_test,test_engine_config,tests/unit/test_engine_config.c,engine common,-ljansson))
