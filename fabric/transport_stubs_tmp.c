#include "common/kvf_err.h"
#include "fabric/fabric_int.h"
static int no_open(kvf_fabric *f, void **tp) { return kvf_errf(KVF_E_UNSUPPORTED, "not yet"); }
const struct fab_transport fab_verbs_transport = { .name = "verbs", .kind = KVF_FABRIC_VERBS, .open = no_open };
const struct fab_transport fab_cuda_ipc_transport = { .name = "cuda_ipc", .kind = KVF_FABRIC_CUDA_IPC, .open = no_open };
