# fabric/: KV block transfer library (docs/fabric.md).
FABRIC_SRCS := fabric/fabric.c fabric/desc.c fabric/fabric_config.c fabric/tcp_proto.c fabric/verbs_plan.c \
	fabric/transport_tcp.c fabric/transport_shm.c fabric/transport_ofi.c fabric/transport_verbs.c \
	fabric/transport_cuda_ipc.c
FABRIC_LDLIBS :=
ifeq ($(HAVE_OFI),1)
  FABRIC_LDLIBS += $(OFI_LDLIBS)
  CFLAGS_fabric/transport_ofi.c += $(OFI_CFLAGS)
endif
ifeq ($(HAVE_VERBS),1)
  FABRIC_LDLIBS += $(VERBS_LDLIBS)
endif
ifeq ($(HAVE_CUDA),1)
  # cudart only: it loads the driver (libcuda.so.1) itself at run time, so
  # binaries start on hosts without a GPU driver; driver entry points are
  # fetched with cudaGetDriverEntryPoint.
  FABRIC_CUDA_LDLIBS := -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudart
  FABRIC_LDLIBS += $(FABRIC_CUDA_LDLIBS)
  CFLAGS_fabric/tools/fabric_test.c += $(CUDA_CFLAGS)
  CFLAGS_fabric/transport_cuda_ipc.c += $(CUDA_CFLAGS)
endif
$(eval $(call kvf_library,fabric,$(FABRIC_SRCS),$(FABRIC_LDLIBS)))

# Conformance driver (tests/integration/fabric_conformance.sh).
$(eval $(call kvf_program,kvf-fabric-test,fabric/tools/fabric_test.c,fabric common))

# Unit tests of the pure parts (cmocka, -ut libraries: leak-checked).
$(eval $(call kvf_unit_test,test_fabric,tests/unit/test_fabric.c,fabric common))

# The running fabric in one process (cmocka). Linked with the normal
# libraries, not the -ut twins: the fabric's thread allocates while the test
# thread does, and cmocka's test allocator is single-threaded.
FABRIC_LB_OBJS := $(OBJDIR)/tests/unit/test_fabric_loopback.o
$(UTDIR)/test_fabric_loopback: $(FABRIC_LB_OBJS) $(call lib_paths,fabric common)
	$(call msg,LD,$@)
	$(Q)mkdir -p $(@D) && $(CC) $(LDFLAGS) -o $@ $(FABRIC_LB_OBJS) $(call lib_paths,fabric common) \
		$(call lib_ldlibs,fabric common) $(CMOCKA_LDLIBS) $(LDLIBS_BASE)
UNIT_TESTS += $(UTDIR)/test_fabric_loopback
DEPFILES += $(FABRIC_LB_OBJS:.o=.d)

# Fuzz targets of the wire parsers (make fuzz; make test replays the corpus).
FABRIC_FUZZ_LIB := fabric/desc.c fabric/tcp_proto.c fabric/verbs_plan.c common/frame.c common/wire.c common/err.c
$(eval $(call kvf_fuzz,fuzz_fabric_desc,tests/fuzz/fuzz_fabric_desc.c $(FABRIC_FUZZ_LIB)))
$(eval $(call kvf_fuzz,fuzz_fabric_tcp,tests/fuzz/fuzz_fabric_tcp.c $(FABRIC_FUZZ_LIB)))

# kvf-fabric-bench (bench/fabric_bench.c): make bench-fabric.
$(eval $(call kvf_program,kvf-fabric-bench,bench/fabric_bench.c,fabric common))
ifeq ($(HAVE_CUDA),1)
  CFLAGS_bench/fabric_bench.c += $(CUDA_CFLAGS)
endif
$(eval $(call kvf_bench,fabric,$(BINDIR)/kvf-fabric-bench,$(BINDIR)/kvf-fabric-bench))
