/*
 * fabric_config.c: the `fabric {}` config section, declared once.
 *
 * Every daemon that embeds the fabric registers kvf_fabric_cfg_section bound
 * to a kvf_fabric_opts, so one config file configures every fabric alike; the
 * daemon sets opts.listen from its own key (prefill/decode `fabric_listen`)
 * and opts.metrics itself. kvf_fabric_opts_init() writes the same defaults
 * for programs without a config (tests, the bench); a unit test checks that
 * the two agree.
 */
#include <stddef.h>
#include <string.h>

#include "common/kvf_config.h"
#include "common/kvf_err.h"
#include "fabric/kvf_fabric.h"

#define K(field, kind, def, min, max, choices, help) \
	KVF_CFG_KEY(kvf_fabric_opts, field, kind, def, min, max, choices, help)

static const kvf_cfg_key fabric_keys[] = {
	K(transport, ENUM, "auto", 0, 0, "auto|tcp|shm|verbs|ofi|cuda_ipc",
	  "Transport for every peer; auto picks per request: cuda_ipc (GPU memory, same host), "
	  "shm (same host), verbs (RDMA device), ofi (a real libfabric provider), tcp"),
	K(timeout_ms, DURATION, "5s", 10, 3600000, NULL,
	  "A peer with requests in flight that makes no progress for this long is declared hung: "
	  "its requests fail with TIMEOUT and the next request reconnects"),
	K(conns_per_peer, INT, "2", 1, 16, NULL, "TCP connections per peer (chunks are spread over them)"),
	K(tcp_chunk_bytes, SIZE, "1MiB", 4096, 1073741824, NULL,
	  "TCP transport: ops are cut into chunks of at most this size"),
	K(tcp_window, INT, "64", 1, 1024, NULL, "TCP transport: chunks in flight per connection"),
	K(cq_depth, INT, "4096", 1, 1048576, NULL, "Requests in flight per completion queue"),
	K(max_regions, INT, "64", 1, 65535, NULL, "Registered memory regions at once"),
	K(advertise, STRING, NULL, 0, 0, NULL,
	  "Host put in descriptors for peers to connect to; empty: the listen host "
	  "(or this host's first non-loopback address when listening on a wildcard)"),
	K(node_name, STRING, NULL, 0, 0, NULL, "Name of this node in peers' logs and metrics; empty: host:port"),
	K(shm_process_vm, BOOL, "true", 0, 0, NULL,
	  "shm: reach memory not allocated with kvf_fabric_mem_alloc through process_vm_readv/writev"),
	K(shm_slice_bytes, SIZE, "1MiB", 4096, 1073741824, NULL,
	  "shm: bytes copied before the fabric thread looks at its sockets again"),
	K(ofi_provider, STRING, NULL, 0, 0, NULL,
	  "libfabric provider (\"efa\", \"verbs;ofi_rxm\", \"tcp;ofi_rxm\"); empty: efa or verbs;ofi_rxm "
	  "under auto, also tcp;ofi_rxm when transport = \"ofi\""),
	K(verbs_devices, STRING, NULL, 0, 0, NULL,
	  "RDMA devices to use, comma-separated (\"mlx5_0,mlx5_1\"); empty: all (large batches are striped)"),
	K(verbs_port, INT, "1", 1, 255, NULL, "verbs: IB port number"),
	K(verbs_sq_depth, INT, "512", 16, 32768, NULL, "verbs: send queue depth per QP"),
	K(verbs_signal_every, INT, "32", 1, 4096, NULL,
	  "verbs: selective signalling, one signaled WR per this many (and the last of each request)"),
	K(verbs_max_chain, INT, "32", 1, 1024, NULL, "verbs: WRs linked into one ibv_post_send call"),
	K(verbs_inline_bytes, SIZE, "128", 0, 4096, NULL, "verbs: WRITEs up to this size are sent inline"),
	K(cuda_device, INT, "-1", -1, 1024, NULL, "cuda_ipc: device that runs the copies; -1: the current one"),
};

const kvf_cfg_section kvf_fabric_cfg_section = {
	"fabric",
	"KV block transfer (fabric/): transports, timeouts, tuning. The listen address comes from "
	"the daemon's own fabric_listen key.",
	fabric_keys,
	KVF_CFG_NKEYS(fabric_keys),
	NULL,
	sizeof(kvf_fabric_opts),
};

void kvf_fabric_opts_init(kvf_fabric_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->transport = KVF_FABRIC_AUTO;
	o->timeout_ms = 5000;
	o->conns_per_peer = 2;
	o->tcp_chunk_bytes = 1u << 20;
	o->tcp_window = 64;
	o->cq_depth = 4096;
	o->max_regions = 64;
	o->shm_process_vm = 1;
	o->shm_slice_bytes = 1u << 20;
	o->verbs_port = 1;
	o->verbs_sq_depth = 512;
	o->verbs_signal_every = 32;
	o->verbs_max_chain = 32;
	o->verbs_inline_bytes = 128;
	o->cuda_device = -1;
}

const char *kvf_fabric_transport_name(int t)
{
	static const char *const names[] = { "auto", "tcp", "shm", "verbs", "ofi", "cuda_ipc" };
	return t >= 0 && t < KVF_FABRIC_NTRANSPORTS ? names[t] : "?";
}
