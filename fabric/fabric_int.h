/*
 * fabric_int.h: what the fabric core (fabric.c) shares with its transports
 * (transport_*.c) and the pure helpers (desc.c, tcp_proto.c, verbs_plan.c).
 * Private to fabric/.
 *
 * Threading: every function here that takes a kvf_fabric, a fab_peer or a
 * fab_req runs on the fabric thread (the one running f->loop), except where
 * a comment says otherwise. Transports therefore need no locks: the core
 * hands them requests on that thread, they complete units of work on it.
 *
 * A request is a list of ops; a transport cuts it into "units" (a tcp chunk,
 * a signaled verbs WR group, an ofi op, a shm op), counts them with
 * fab_req_units_add() and reports each with fab_req_unit_done(). When the
 * transport has issued everything it will issue (fab_req_issued()) and no
 * unit is outstanding, the core completes the request.
 */
#ifndef KVF_FABRIC_INT_H
#define KVF_FABRIC_INT_H

#include <stdatomic.h>
#include <stdint.h>

/* Peer names and error details are cut to fixed buffers on purpose; GCC's
 * -Wformat-truncation would flag every such snprintf. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif

#include "common/kvf_loop.h"
#include "common/kvf_wire.h"
#include "fabric/kvf_fabric.h"

#define FAB_NT KVF_FABRIC_NTRANSPORTS
#define FAB_ADDR_MAX 512   /* bytes of one transport address in a descriptor */
#define FAB_KEYX_MAX 256   /* bytes of one transport's extra key data */
#define FAB_NAME_MAX 64
#define FAB_INLINE_OPS 4   /* ops stored in the request itself */
#define FAB_REQ_LREGS 4    /* distinct local regions one request may use */
#define FAB_DESC_VERSION 1
#define FAB_DESC_MAX_BLOCKS (1u << 20)

/* ---- descriptors (desc.c) ---- */

struct fab_taddr {
	uint16_t len; /* 0: transport absent */
	uint8_t b[FAB_ADDR_MAX];
};

struct fab_tkey {
	uint8_t present;
	uint64_t key;
	uint16_t xlen;
	uint8_t x[FAB_KEYX_MAX];
};

struct fab_rblock {
	uint64_t addr, len, token;
};

struct fab_hostid {
	uint64_t boot; /* hash of /proc/sys/kernel/random/boot_id */
	uint64_t netns, pidns; /* inode numbers of /proc/self/ns/{net,pid} */
};

struct kvf_fabric_rdesc {
	uint8_t node[16];
	char name[FAB_NAME_MAX];
	struct fab_hostid host;
	struct fab_taddr addr[FAB_NT];
	uint32_t region;
	uint8_t mem;
	uint64_t base, len;
	struct fab_tkey key[FAB_NT];
	uint32_t nblocks;
	struct fab_rblock *blocks; /* kvf_malloc'd, nblocks */
};

/* SipHash-2-4 of msg with a 128-bit key. */
uint64_t fab_siphash(const uint8_t key[16], const void *msg, size_t len);
/* Access token of block [addr, addr+len) of region id under secret. */
uint64_t fab_token(const uint8_t secret[16], uint32_t region, uint64_t addr, uint64_t len);

/* Writes the descriptor head (everything but the blocks) for nblocks blocks;
 * then call fab_desc_put_block() nblocks times. d->blocks is ignored. */
void fab_desc_put_head(kvf_wire_writer *w, const kvf_fabric_rdesc *d, uint32_t nblocks);
void fab_desc_put_block(kvf_wire_writer *w, uint64_t addr, uint64_t len, uint64_t token);
/* Parses into *d (d->blocks allocated; free with fab_desc_clear). */
int fab_desc_decode(const void *buf, size_t len, kvf_fabric_rdesc *d);
void fab_desc_clear(kvf_fabric_rdesc *d);

/* Transport address blobs (formats in docs/fabric.md). *_parse return 0 or
 * KVF_E_PROTO. */
void fab_addr_tcp_put(kvf_wire_writer *w, const char *hostport);
int fab_addr_tcp_parse(const struct fab_taddr *a, char *hostport, size_t cap);
void fab_addr_shm_put(kvf_wire_writer *w, const char *sock_name, uint32_t pid);
int fab_addr_shm_parse(const struct fab_taddr *a, char *sock_name, size_t cap, uint32_t *pid);
void fab_addr_ofi_put(kvf_wire_writer *w, const char *prov, uint32_t addr_format, uint8_t virt_addr,
		      const void *addr, size_t len);
int fab_addr_ofi_parse(const struct fab_taddr *a, char *prov, size_t cap, uint32_t *addr_format,
		       uint8_t *virt_addr, const uint8_t **addr, uint32_t *len);
#define FAB_VERBS_MAX_DEV 8
struct fab_verbs_addr {
	uint32_t ndev;
	char cm[FAB_VERBS_MAX_DEV][64]; /* rdmacm "ip:port" per device */
};
void fab_addr_verbs_put(kvf_wire_writer *w, const struct fab_verbs_addr *a);
int fab_addr_verbs_parse(const struct fab_taddr *a, struct fab_verbs_addr *out);

/* Host identity of this process (cached after the first call). */
const struct fab_hostid *fab_hostid_self(void);

/* ---- local regions ---- */

struct kvf_fabric_mr {
	_Atomic uint32_t inflight; /* local requests + served tcp ops using it */
	_Atomic int live;          /* 1 while registered */
	uint32_t id;               /* slot | gen << 16 */
	uint32_t slot;
	uint32_t gen;
	uint8_t *base;
	uint64_t len;
	int mem;
	uint8_t secret[16];
	int memfd;          /* -1 unless from kvf_fabric_mem_alloc */
	uint64_t memfd_off; /* offset of base in the memfd */
	void *tpriv[FAB_NT];
	struct fab_tkey key[FAB_NT];
};
typedef struct kvf_fabric_mr fab_region;

/* The live region with this id, or NULL (any thread). */
fab_region *fab_region_by_id(kvf_fabric *f, uint32_t id);

/* memfd backing of [p, p+len) if it lies in one kvf_fabric_mem_alloc()
 * block: 0 and *fd (borrowed), *off; KVF_E_NOTFOUND otherwise. */
int fab_mem_lookup(const void *p, size_t len, int *fd, uint64_t *off);

/* ---- requests ---- */

enum { FAB_OP_READ = KVF_FABRIC_READ, FAB_OP_WRITE = KVF_FABRIC_WRITE, FAB_OP_NOTIFY = 3 };
enum { FAB_REQ_FREE = 0, FAB_REQ_POSTED, FAB_REQ_DONE };

struct fab_op {
	uint8_t *local;
	uint64_t raddr; /* remote virtual address */
	uint64_t len;
	uint32_t blk;   /* descriptor block */
};

struct fab_peer;

struct fab_req {
	kvf_task task;               /* hand-off to the fabric thread */
	struct fab_req *cnext;       /* cq completion stack */
	struct fab_req *aprev, *anext; /* peer's active list / fence list */
	struct fab_req *tnext;       /* transport queue */
	kvf_fabric_cq *cq;
	const kvf_fabric_rdesc *rd;
	struct fab_peer *peer;
	uint64_t cookie;
	uint64_t id;
	uint64_t seq;                /* per peer, post order */
	uint8_t opcode;
	uint8_t tkind;
	uint8_t issued;              /* transport will issue nothing more */
	uint8_t finished;
	_Atomic int state;           /* FAB_REQ_* */
	_Atomic int cancel;
	struct fab_op *ops;
	uint32_t nops;
	struct fab_op inl[FAB_INLINE_OPS];
	fab_region *lregs[FAB_REQ_LREGS];
	uint32_t nlregs;
	/* transport cursor: next op and offset in it to issue */
	uint32_t cur_op;
	uint64_t cur_off;
	uint32_t units;              /* outstanding units */
	uint64_t ops_done;
	int status;
	char detail[128];
	_Atomic uint64_t bytes;
	uint64_t t_post_ns;
	uint64_t latency_ns;
	uint32_t msg_len;
	uint8_t msg[KVF_FABRIC_NOTIF_MAX];
};

void fab_req_units_add(struct fab_req *r, uint32_t n);
/* One unit finished: bytes moved, status 0 or an error (the first error
 * sticks, with detail). May complete the request: do not touch r afterwards
 * unless the caller still holds units or has not called fab_req_issued(). */
void fab_req_unit_done(struct fab_req *r, uint64_t bytes, int status, const char *detail);
/* The transport issues nothing more for r (all ops issued, or stopped after
 * a failure/cancel). May complete the request. */
void fab_req_issued(struct fab_req *r);
/* Stops r with status err (if it has none yet) without issuing the rest:
 * fab_req_issued() with an error. */
void fab_req_stop(struct fab_req *r, int err, const char *detail);

/* A FIFO of requests linked through tnext, for transports. */
struct fab_rq {
	struct fab_req *head, *tail;
	uint32_t n;
};
void fab_rq_push(struct fab_rq *q, struct fab_req *r);
struct fab_req *fab_rq_pop(struct fab_rq *q);
int fab_rq_remove(struct fab_rq *q, struct fab_req *r); /* 1 if found */

/* ---- attachments (one-sided transports) ----
 *
 * Before the first ofi/verbs/cuda_ipc request for a region of a peer, the
 * core asks the target over the tcp control channel to vouch for it
 * (ATTACH: the target checks one block's token in software). The answer
 * carries the region's bounds, token secret and transport keys; from then
 * on every request is checked here, before the NIC sees it: blocks inside
 * the attested region, tokens valid under its secret, the descriptor's key
 * equal to the target's. So forged or stale descriptors fail with ACCESS
 * on every transport, even where the provider would only drop the
 * connection (tcp;ofi_rxm) or could not see the token at all (RDMA NICs).
 */
enum { FAB_ATT_PENDING = 0, FAB_ATT_READY, FAB_ATT_FAILED };

struct fab_attach {
	struct fab_attach *next;      /* peer's list */
	struct fab_attach *send_next; /* tcp transport's send queue */
	uint32_t region;
	int state;
	struct fab_rblock blk;        /* the block whose token asks */
	uint8_t mem;
	uint64_t base, len;
	uint8_t secret[16];
	struct fab_tkey key[FAB_NT];
	struct fab_req *wait_head, *wait_tail; /* parked requests (tnext) */
};

struct tcp_attach_ok;
/* The tcp transport got the answer to a's ATTACH: ok, or rc < 0 with why. */
void fab_attach_reply(struct fab_peer *p, struct fab_attach *a, int rc, const char *why,
		      const struct tcp_attach_ok *ok);
/* Sends a's ATTACH on p's control connection. */
void fab_tcp_send_attach(void *tp, struct fab_peer *p, struct fab_attach *a);

/* ---- peers ---- */

enum { FAB_PEER_IDLE = 0, FAB_PEER_CONNECTING, FAB_PEER_READY, FAB_PEER_FAILED };

struct fab_peer {
	struct fab_peer *next;
	kvf_fabric *f;
	uint8_t node[16];
	char name[FAB_NAME_MAX];
	struct fab_hostid host;
	struct fab_taddr addr[FAB_NT];
	void *tstate[FAB_NT];        /* per-transport peer state */
	int state;                   /* FAB_PEER_*, of the control channel */
	struct fab_req *act_head, *act_tail; /* data requests in flight, post order */
	struct fab_req *fence_head, *fence_tail; /* notifies waiting for earlier data */
	uint32_t n_active, n_fenced;
	uint64_t next_seq;
	uint64_t last_progress_ms;
	uint64_t last_used_ms;
	/* stats (fabric thread) */
	uint64_t bytes[FAB_NT][2], ops[FAB_NT][2], errors, connects, fails;
	char last_err[160];
	kvf_series *m_bytes[FAB_NT][2], *m_ops[FAB_NT][2], *m_err[FAB_NT], *m_lat[FAB_NT];
	unsigned used_transports;    /* bit per transport that carried a request */
	struct fab_attach *atts;     /* attachments of its regions */
	int failing;                 /* inside fab_peer_fail: hold fences */
};

/* Records progress (resets the hang timer). */
void fab_peer_progress(struct fab_peer *p);
/*
 * The peer failed (connection lost, refused, timed out): every transport
 * fails its requests for p with err and drops its connections; fenced
 * notifies fail too. The next request reconnects.
 */
void fab_peer_fail(struct fab_peer *p, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Notification received from a peer (over tcp): queued on the notify cq. */
void fab_deliver_notif(kvf_fabric *f, const uint8_t node[16], const char *name, const void *msg,
		       size_t len);
/* Stats of served (target-side) traffic. */
void fab_served(kvf_fabric *f, int tkind, int opcode, uint64_t bytes);

/* ---- transports ---- */

struct fab_transport {
	const char *name;
	int kind;
	/* Opens on the caller of kvf_fabric_open (before the thread starts; the
	 * loop may be used). <0 with kvf_errf detail: transport unavailable. */
	int (*open)(kvf_fabric *f, void **tp);
	void (*close)(void *tp);
	/* Appends this transport's address blob (a kvf_wire blob). */
	void (*export_addr)(void *tp, kvf_wire_writer *w);
	/* Region registration; optional. dereg may return KVF_E_AGAIN and call
	 * fab_dereg_done() later (shm revocation); any other error refuses. */
	int (*reg)(void *tp, fab_region *r);
	int (*dereg)(void *tp, fab_region *r, int force);
	/* Whether requests to d (and local memory mem) can go this way. Any
	 * thread: must only read immutable state. */
	int (*reachable)(void *tp, const kvf_fabric_rdesc *d, int local_mem);
	/* Queue r (already on p's active list) and issue what can be issued. */
	void (*submit)(void *tp, struct fab_peer *p, struct fab_req *r);
	/* Cancel r if it is queued here: stop issuing, complete when idle. */
	void (*cancel)(void *tp, struct fab_peer *p, struct fab_req *r);
	/* Fail everything for p with err; drop connections. */
	void (*peer_fail)(void *tp, struct fab_peer *p, int err, const char *detail);
	/* Free p's state (fabric closing; p has nothing in flight). */
	void (*peer_free)(void *tp, struct fab_peer *p);
	/* Appends a short state for `show peers` ("conns=4/4 inflight=3"). */
	void (*peer_show)(void *tp, struct fab_peer *p, kvf_buf *out);
};

extern const struct fab_transport fab_tcp_transport;
extern const struct fab_transport fab_shm_transport;
extern const struct fab_transport fab_verbs_transport;
extern const struct fab_transport fab_ofi_transport;
extern const struct fab_transport fab_cuda_ipc_transport;

/* tcp-only entry points the core uses (the tcp transport is the control
 * channel of every peer). */
void fab_tcp_ensure_control(void *tp, struct fab_peer *p);
void fab_tcp_send_notify(void *tp, struct fab_peer *p, struct fab_req *r);

/* Core accessors for transports. */
kvf_loop *fab_loop(kvf_fabric *f);
const kvf_fabric_opts *fab_opts(kvf_fabric *f);
const uint8_t *fab_node(kvf_fabric *f);
void *fab_tp(kvf_fabric *f, int kind);
/* The host:port that the tcp listener is reachable at (advertised). */
const char *fab_advertise_host(kvf_fabric *f);
/* The tcp transport reports its bound port. */
void fab_set_port(kvf_fabric *f, uint16_t port);
/* Async dereg completion for a transport that returned KVF_E_AGAIN. */
struct fab_dereg_wait;
void fab_dereg_done(struct fab_dereg_wait *w, int rc);
struct fab_dereg_wait *fab_dereg_current(kvf_fabric *f);

/* CUDA helpers (transport_cuda_ipc.c; KVF_E_UNSUPPORTED without CUDA):
 * a dma-buf fd for [base, base+len) of device memory (for ibv_reg_dmabuf_mr),
 * and the allocation containing p. */
int fab_cuda_dmabuf_fd(void *base, size_t len, int *fd);
int fab_cuda_alloc_range(const void *p, uint64_t *base, uint64_t *len);

/* Looks a peer up by node id (fabric thread). */
struct fab_peer *fab_peer_by_node(kvf_fabric *f, const uint8_t node[16]);

#define FAB_LOG "fabric"

#endif
