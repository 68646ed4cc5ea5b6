/*
 * kvf_fabric.h: moves KV blocks between processes and hosts (NIXL's agent
 * API and Mooncake's transfer engine in spirit).
 *
 * Model:
 *   - a process opens one kvf_fabric (listening on its fabric port, 7800 for
 *     prefill, 7810+ for decode); it runs one internal thread that owns every
 *     socket, queue pair, endpoint and timer of every transport;
 *   - memory (the engine's KV pool: one or a few allocations) is registered
 *     once per pool with kvf_fabric_reg(); a KV block is one contiguous range
 *     of a registered region (all layers), so one block = one op;
 *   - the holder exports a descriptor for some blocks (kvf_fabric_export():
 *     node id, transport addresses, region id, base, length, per-block access
 *     tokens, transport keys) as bytes that travel in the P/D protocol;
 *   - the puller parses it (kvf_fabric_desc_parse()) and posts batches of
 *     READ or WRITE ops on a completion queue; op i moves bytes between a
 *     local address and block ops[i].block of the descriptor;
 *   - completions come back on the queue, consumable by polling and by an
 *     eventfd the caller's kvf_loop watches; a notification (a small message)
 *     posted after writes is delivered to the peer only after those writes
 *     have landed.
 *
 * Transports (fabric/transport_*.c behind one vtable; docs/fabric.md):
 *   tcp       own protocol over kernel TCP, always on (also the control
 *             channel: liveness and notifications for every peer);
 *   shm       same host: memfd mappings passed over a Unix socket, or
 *             process_vm_readv/writev for memory not allocated with
 *             kvf_fabric_mem_alloc();
 *   verbs     rdma-core RC QPs over rdmacm, one-sided READ/WRITE;
 *   ofi       libfabric FI_EP_RDM + FI_RMA (EFA, verbs;ofi_rxm, tcp;ofi_rxm);
 *   cuda_ipc  GPU memory between processes of one node.
 * With transport "auto" each request takes the best transport both ends
 * have: cuda_ipc for GPU memory on the same host, shm for host memory on the
 * same host, then verbs, ofi (a real fabric provider), tcp.
 *
 * Failures: a peer that dies fails its in-flight requests with
 * KVF_E_PEERDEAD (connection lost) or KVF_E_CONNREFUSED (nobody listens); a
 * peer that makes no progress for opts.timeout_ms fails them with
 * KVF_E_TIMEOUT. Never a hang. The next post to that peer reconnects.
 * Out-of-bounds ops and bad tokens fail with KVF_E_ACCESS and touch no data.
 *
 * Threads:
 *   - kvf_fabric_open/close: one thread; close after every other call ended.
 *   - reg, dereg, export, connect, show_*, cq_new: thread-safe (reg/dereg/
 *     show run a short synchronous call on the fabric thread).
 *   - desc_* functions: pure, any thread.
 *   - a kvf_fabric_cq belongs to one thread at a time: post, notify, cancel,
 *     req_status, poll and cq_destroy on one cq must not run concurrently.
 *     Use one cq per worker thread; different cqs are independent.
 */
#ifndef KVF_FABRIC_H
#define KVF_FABRIC_H

#include <stddef.h>
#include <stdint.h>

#include "common/kvf_admin.h"
#include "common/kvf_buf.h"
#include "common/kvf_config.h"
#include "common/kvf_metrics.h"

typedef struct kvf_fabric kvf_fabric;               /* one per process (or per port) */
typedef struct kvf_fabric_mr kvf_fabric_mr;         /* a registered region */
typedef struct kvf_fabric_rdesc kvf_fabric_rdesc;   /* a parsed remote descriptor */
typedef struct kvf_fabric_cq kvf_fabric_cq;         /* a completion queue */
typedef uint64_t kvf_fabric_req;                    /* a posted request (0: none) */

/* ---- options (the `fabric {}` config section, see fabric_config.c) ---- */

enum kvf_fabric_transport {
	KVF_FABRIC_AUTO = 0,
	KVF_FABRIC_TCP,
	KVF_FABRIC_SHM,
	KVF_FABRIC_VERBS,
	KVF_FABRIC_OFI,
	KVF_FABRIC_CUDA_IPC,
	KVF_FABRIC_NTRANSPORTS,
};

typedef struct kvf_fabric_opts {
	/* -- keys of the `fabric` config section -- */
	int transport;              /* enum kvf_fabric_transport */
	uint64_t timeout_ms;        /* no progress for this long: peer hung */
	int64_t conns_per_peer;     /* tcp connections per peer */
	uint64_t tcp_chunk_bytes;   /* ops are cut into chunks of this size */
	int64_t tcp_window;         /* chunks in flight per connection */
	int64_t cq_depth;           /* requests in flight per cq */
	int64_t max_regions;        /* registered regions at once */
	char *advertise;            /* host put in descriptors; "" = listen host */
	char *node_name;            /* name in logs/metrics; "" = host:port */
	int shm_process_vm;         /* shm may use process_vm_readv for non-memfd memory */
	uint64_t shm_slice_bytes;   /* copy slice between loop iterations */
	char *ofi_provider;         /* "" = auto (efa, verbs;ofi_rxm; tcp;ofi_rxm if forced) */
	char *verbs_devices;        /* comma list; "" = every device (striping) */
	int64_t verbs_port;         /* IB port number */
	int64_t verbs_sq_depth;     /* send queue depth per QP */
	int64_t verbs_signal_every; /* selective signalling: 1 CQE per N WRs */
	int64_t verbs_max_chain;    /* WRs per ibv_post_send chain */
	uint64_t verbs_inline_bytes;/* WRITEs up to this size go inline */
	int64_t cuda_device;        /* CUDA device for cuda_ipc copies (-1: current) */
	/* -- set by the daemon, not in the config table -- */
	const char *listen;         /* "host:port" of the tcp listener; NULL: 127.0.0.1:0 */
	kvf_metrics *metrics;       /* registry for the fabric's metrics (borrowed); NULL: none */
} kvf_fabric_opts;

/* The `fabric` section: transport, timeout_ms, conns_per_peer, ... Every
 * daemon registers this same table bound to its kvf_fabric_opts. */
extern const kvf_cfg_section kvf_fabric_cfg_section;

/* Fills o with the defaults of the config table (listen NULL, metrics NULL). */
void kvf_fabric_opts_init(kvf_fabric_opts *o);

/* "auto", "tcp", "shm", "verbs", "ofi", "cuda_ipc"; "?" out of range. */
const char *kvf_fabric_transport_name(int t);

/* ---- lifetime ---- */

/*
 * Opens the fabric: starts its thread, listens on opts->listen (tcp), opens
 * the transports opts->transport asks for. A transport named explicitly that
 * cannot open (no RDMA device, no GPU) fails the open with its reason
 * (KVF_E_NODEV, KVF_E_UNSUPPORTED); with "auto", unavailable transports are
 * skipped and the reason is logged at info level. opts is copied.
 */
int kvf_fabric_open(const kvf_fabric_opts *opts, kvf_fabric **out);

/* Fails every request still in flight with KVF_E_CANCELED, deregisters every
 * region, stops the thread, frees everything, including cqs not destroyed
 * yet (their handles become invalid). Call it after every other call on f
 * and its cqs has returned. NULL is a no-op. */
void kvf_fabric_close(kvf_fabric *f);

/* Port of the tcp listener (the real one when opts.listen had port 0). */
uint16_t kvf_fabric_port(const kvf_fabric *f);

/* Bit set of transports open on this fabric (1u << KVF_FABRIC_TCP, ...). */
unsigned kvf_fabric_transports(const kvf_fabric *f);

/* Why transport t is not open ("no RDMA device: ibv_get_device_list: ..."),
 * or "" when it is. Static for the fabric's life. */
const char *kvf_fabric_unavailable_reason(const kvf_fabric *f, int t);

/* ---- memory ---- */

enum kvf_fabric_mem {
	KVF_FABRIC_MEM_HOST = 0,
	KVF_FABRIC_MEM_CUDA = 1, /* device memory (KVF_HAVE_CUDA builds) */
};

/*
 * Host memory backed by a memfd (page-aligned, zeroed), so the shm transport
 * can hand it to same-host peers as a mapping: pools meant for shm should
 * come from here. Process-wide, independent of any kvf_fabric. Free with
 * kvf_fabric_mem_free(). Returns 0, KVF_E_NOMEM, KVF_E_IO.
 */
int kvf_fabric_mem_alloc(size_t len, void **out);
void kvf_fabric_mem_free(void *p); /* NULL ok */

/*
 * Registers [addr, addr+len) with every open transport (ibv_reg_mr,
 * fi_mr_reg, cudaIpcGetMemHandle, memfd lookup) and draws its access-token
 * secret. mem is KVF_FABRIC_MEM_*. The memory stays the caller's; keep it
 * valid until kvf_fabric_dereg() returned 0. Returns 0 and *out, KVF_E_FULL
 * (opts.max_regions), KVF_E_INVAL, or the transport's failure.
 */
int kvf_fabric_reg(kvf_fabric *f, void *addr, size_t len, int mem, kvf_fabric_mr **out);

/*
 * Deregisters: refused with KVF_E_BUSY while local requests use the region
 * or served tcp transfers read/write it; otherwise revokes the mappings
 * same-host shm peers hold (waiting up to opts.timeout_ms for them to let go:
 * KVF_E_TIMEOUT and the region stays registered if one does not) and drops
 * the transport registrations (remote one-sided ops fail from then on).
 * On 0 the handle is gone.
 */
int kvf_fabric_dereg(kvf_fabric *f, kvf_fabric_mr *mr);

void *kvf_fabric_mr_addr(const kvf_fabric_mr *mr);
size_t kvf_fabric_mr_len(const kvf_fabric_mr *mr);

/* ---- descriptors ---- */

/* A block of a region: offset from the region's start, length. */
typedef struct kvf_fabric_range {
	uint64_t offset;
	uint64_t len;
} kvf_fabric_range;

/*
 * Appends a descriptor for n blocks of mr to out (bytes, format in
 * docs/fabric.md): this fabric's node id and transport addresses, the
 * region's id, base and length, its transport keys, and per block its
 * address, length and access token. Thread-safe. Returns 0, KVF_E_RANGE
 * (a block outside the region), KVF_E_INVAL (n == 0), KVF_E_NOMEM.
 */
int kvf_fabric_export(kvf_fabric *f, const kvf_fabric_mr *mr, const kvf_fabric_range *blocks,
		      size_t n, kvf_buf *out);

/* Parses descriptor bytes (strictly: any malformation is KVF_E_PROTO,
 * another format version KVF_E_VERSION). The result is independent of buf. */
int kvf_fabric_desc_parse(const void *buf, size_t len, kvf_fabric_rdesc **out);
void kvf_fabric_desc_free(kvf_fabric_rdesc *d); /* NULL ok */

size_t kvf_fabric_desc_nblocks(const kvf_fabric_rdesc *d);
/* Length of block i (0 when out of range). */
uint64_t kvf_fabric_desc_block_len(const kvf_fabric_rdesc *d, size_t i);
/* The exporting node's name ("prefill-0" or host:port). */
const char *kvf_fabric_desc_node(const kvf_fabric_rdesc *d);
/* KVF_FABRIC_MEM_* of the remote region. */
int kvf_fabric_desc_mem(const kvf_fabric_rdesc *d);

/*
 * Starts connecting to the descriptor's node now (optional: the first post
 * does it too). Asynchronous; errors surface on later requests.
 */
int kvf_fabric_connect(kvf_fabric *f, const kvf_fabric_rdesc *d);

/* ---- completion queues and requests ---- */

enum {
	KVF_FABRIC_CQ_NOTIFS = 1u << 0, /* notifications from peers arrive on this cq */
};

/* A cq holding at most opts.cq_depth requests in flight. Thread-safe. */
int kvf_fabric_cq_new(kvf_fabric *f, unsigned flags, kvf_fabric_cq **out);

/* Refused with KVF_E_BUSY while requests are in flight (cancel and poll them
 * first). NULL is a no-op returning 0. */
int kvf_fabric_cq_destroy(kvf_fabric_cq *cq);

/* An eventfd, readable when completions or notifications wait: add it to the
 * caller's kvf_loop and call kvf_fabric_poll() until it returns 0. */
int kvf_fabric_cq_fd(const kvf_fabric_cq *cq);

enum kvf_fabric_opcode {
	KVF_FABRIC_READ = 1,  /* remote block -> local */
	KVF_FABRIC_WRITE = 2, /* local -> remote block */
};

/* One op: len bytes between local and block `block` of the descriptor at
 * byte `offset` into that block. */
typedef struct kvf_fabric_op {
	void *local;     /* inside a region registered with this fabric */
	uint32_t block;  /* index into the descriptor's blocks */
	uint64_t offset; /* into the block */
	uint64_t len;    /* > 0 */
} kvf_fabric_op;

/*
 * Posts n (1..KVF_FABRIC_MAX_BATCH) ops as one request. ops is copied; d is
 * borrowed until the request's completion was polled. Checks before anything
 * moves: every local range inside one registered region, every remote range
 * inside its block (KVF_E_ACCESS otherwise: nothing is posted). Returns 0 and
 * *req (may be NULL), KVF_E_FULL (cq_depth requests in flight: poll first),
 * KVF_E_UNSUPPORTED (no open transport reaches the descriptor's node/memory),
 * KVF_E_INVAL, KVF_E_NOMEM.
 */
#define KVF_FABRIC_MAX_BATCH 65536
int kvf_fabric_post(kvf_fabric_cq *cq, int opcode, const kvf_fabric_rdesc *d,
		    const kvf_fabric_op *ops, size_t n, uint64_t cookie, kvf_fabric_req *req);

/*
 * Sends msg (up to KVF_FABRIC_NOTIF_MAX bytes, copied) to the descriptor's
 * node, delivered there only after every request this fabric posted to that
 * node before it has completed (so the data it follows has landed). Completes
 * on cq like a transfer (status 0 once the peer has queued it).
 */
#define KVF_FABRIC_NOTIF_MAX 256
int kvf_fabric_notify(kvf_fabric_cq *cq, const kvf_fabric_rdesc *d, const void *msg, size_t len,
		      uint64_t cookie, kvf_fabric_req *req);

/*
 * Cancels: ops not started are not started; the request completes with
 * KVF_E_CANCELED once ops already started have finished (their bytes may
 * have landed). Returns 0, or KVF_E_NOTFOUND for an unknown or finished req.
 */
int kvf_fabric_cancel(kvf_fabric_cq *cq, kvf_fabric_req req);

/*
 * Status of a request not polled yet: KVF_E_AGAIN while in flight, otherwise
 * its final status (0 or an error); KVF_E_NOTFOUND once polled or unknown.
 * *bytes (may be NULL) gets the bytes moved so far.
 */
int kvf_fabric_req_status(kvf_fabric_cq *cq, kvf_fabric_req req, uint64_t *bytes);

enum kvf_fabric_comp_kind {
	KVF_FABRIC_COMP_XFER = 1,  /* a request (transfer or notify) finished */
	KVF_FABRIC_COMP_NOTIF = 2, /* a notification arrived from a peer */
};

typedef struct kvf_fabric_comp {
	int kind;                  /* KVF_FABRIC_COMP_* */
	int status;                /* 0 or KVF_E_* (XFER) */
	kvf_fabric_req req;        /* XFER */
	uint64_t cookie;           /* XFER */
	uint64_t bytes;            /* XFER: bytes moved */
	uint64_t latency_ns;       /* XFER: post to completion */
	int transport;             /* enum kvf_fabric_transport used */
	uint8_t peer_node[16];     /* the peer's node id */
	char peer[64];             /* its name */
	char detail[128];          /* XFER failure detail ("" on success) */
	uint32_t notif_len;        /* NOTIF */
	uint8_t notif[KVF_FABRIC_NOTIF_MAX];
} kvf_fabric_comp;

/* Takes up to max completions/notifications. Returns how many (0: none now).
 * Never blocks; also clears the eventfd. */
int kvf_fabric_poll(kvf_fabric_cq *cq, kvf_fabric_comp *out, size_t max);

/* ---- observability ---- */

/* `show peers` and `show transfers` as text (json = 0) or JSON. Thread-safe. */
int kvf_fabric_show_peers(kvf_fabric *f, int json, kvf_buf *out);
int kvf_fabric_show_transfers(kvf_fabric *f, int json, kvf_buf *out);

/* The admin keyword table {show peers, show transfers}: register it with
 * kvf_admin_register(a, cmds, n, fabric). */
const kvf_admin_cmd *kvf_fabric_admin_cmds(size_t *n);

/* Node id of this fabric (random per open), and its name. */
void kvf_fabric_node_id(const kvf_fabric *f, uint8_t out[16]);
const char *kvf_fabric_node_name(const kvf_fabric *f);

#endif
