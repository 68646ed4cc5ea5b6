/*
 * verbs_plan.h: the hardware-free logic of the verbs transport, as pure
 * functions with unit tests (tests/unit/test_fabric.c), so what decides
 * WR shapes, signalling, completion routing, connection state and NIC
 * striping is tested on machines without an RDMA device.
 *
 *   - vp_plan(): cuts a request's ops into work requests (at most max_msg
 *     bytes each), in chains of at most max_chain WRs per ibv_post_send,
 *     signalling one WR in signal_every, the last WR of every request and
 *     the last WR of every posted batch (so send-queue slots are always
 *     reclaimed), WRITEs up to inline_max sent inline.
 *   - vp_ring: per-QP records of signaled groups in post order; wr_ids
 *     name a record; vp_demux() turns a work completion into request
 *     events (a group done with its bytes, or a group failed once, flushes
 *     of later WRs reported per group once).
 *   - vcm_next(): the rdmacm connection state machine.
 *   - vp_stripe(): spreads a batch over several NICs by bytes (LPT).
 *   - vp_pack_rkeys()/vp_unpack_rkeys(): per-device rkeys in descriptors.
 */
#ifndef KVF_FABRIC_VERBS_PLAN_H
#define KVF_FABRIC_VERBS_PLAN_H

#include <stddef.h>
#include <stdint.h>

struct vp_cfg {
	uint64_t max_msg;      /* largest WR payload (port max_msg_sz) */
	uint32_t max_chain;    /* WRs per ibv_post_send */
	uint32_t signal_every; /* one signaled WR per this many */
	uint32_t inline_max;   /* WRITEs up to this many bytes go inline */
	int is_write;
};

struct vp_wr {
	uint32_t op;        /* index of the op */
	uint64_t off;       /* offset in the op */
	uint64_t len;
	uint8_t signaled;
	uint8_t inl;        /* IBV_SEND_INLINE */
	uint8_t chain_end;  /* last WR of an ibv_post_send chain */
};

/* Cursor and signalling state of one request on one QP. */
struct vp_cursor {
	uint32_t op;
	uint64_t off;
	uint32_t unsignaled; /* WRs since the last signaled one */
};

/*
 * Plans up to max_out WRs (the free send-queue slots) of ops with lengths
 * op_len[0..nops) from *cur, which advances. The last planned WR is always
 * signaled (request end or batch end). Returns the number of WRs written;
 * 0 when the request is fully planned or max_out is 0.
 */
size_t vp_plan(const struct vp_cfg *c, const uint64_t *op_len, uint32_t nops, struct vp_cursor *cur,
	       struct vp_wr *out, size_t max_out);

/* Whether every op of the request has been planned. */
static inline int vp_done(const struct vp_cursor *cur, uint32_t nops)
{
	return cur->op >= nops;
}

/* ---- completion demultiplexing ---- */

struct vp_rec {
	uint64_t tag;    /* owner's reference to the request (0: orphaned) */
	uint64_t bytes;  /* bytes of the group */
	uint32_t nwr;    /* WRs in the group (released on completion) */
	uint8_t state;   /* VP_REC_* */
};

enum { VP_REC_FREE = 0, VP_REC_OPEN, VP_REC_POSTED, VP_REC_DONE };

struct vp_ring {
	struct vp_rec *rec;
	uint32_t cap;        /* power of two */
	uint32_t head;       /* oldest record not released */
	uint32_t tail;       /* next record to open */
	uint32_t wrs;        /* WRs posted and not yet released (<= SQ depth) */
	uint32_t epoch;      /* bumped when the QP is recreated */
};

int vp_ring_init(struct vp_ring *r, uint32_t cap, struct vp_rec *storage);
/* Opens a record for the next group of tag; returns its index or -1 if full. */
int64_t vp_ring_open(struct vp_ring *r, uint64_t tag);
/* Adds one WR of len bytes to the open record idx. */
void vp_ring_add(struct vp_ring *r, uint32_t idx, uint64_t len);
/* The group is posted (its last WR is the signaled one). */
void vp_ring_close(struct vp_ring *r, uint32_t idx);

/* wr_id of a WR of record idx: epoch in the high half, so completions of a
 * destroyed QP are recognized. */
uint64_t vp_wrid(const struct vp_ring *r, uint32_t idx);

struct vp_event {
	uint64_t tag;
	uint64_t bytes;
	int ok;
};

/*
 * One work completion (wr_id, success). Fills at most one event: a group
 * done (ok, its bytes) or failed (once per group; flushes of the group's
 * other WRs add nothing). Releases the send-queue slots of finished groups.
 * Returns 1 with *ev, 0 for nothing to report, -1 for a wr_id of another
 * epoch or outside the ring.
 */
int vp_demux(struct vp_ring *r, uint64_t wr_id, int success, struct vp_event *ev);

/* Fails every posted group: calls fn(tag) for each with a live tag and
 * orphans them (later completions report nothing). */
void vp_ring_fail_all(struct vp_ring *r, void (*fn)(void *ud, uint64_t tag), void *ud);

/* ---- connection state machine (rdmacm) ---- */

enum vcm_state {
	VCM_IDLE = 0,
	VCM_ADDR,        /* rdma_resolve_addr issued */
	VCM_ROUTE,       /* rdma_resolve_route issued */
	VCM_CONNECTING,  /* QP created, rdma_connect issued */
	VCM_READY,
	VCM_ERROR,       /* failed: requests failed, resources to free */
	VCM_CLOSED,
};

enum vcm_event {
	VCM_EV_START = 0,
	VCM_EV_ADDR_RESOLVED,
	VCM_EV_ROUTE_RESOLVED,
	VCM_EV_ESTABLISHED,
	VCM_EV_ADDR_ERROR,
	VCM_EV_ROUTE_ERROR,
	VCM_EV_UNREACHABLE,
	VCM_EV_REJECTED,
	VCM_EV_CONNECT_ERROR,
	VCM_EV_DISCONNECTED,
	VCM_EV_WC_ERROR,
	VCM_EV_TIMEOUT,
	VCM_EV_CLOSE,
	VCM_NEVENTS,
};

enum vcm_action {
	VCM_DO_NOTHING = 0,
	VCM_DO_RESOLVE_ADDR,
	VCM_DO_RESOLVE_ROUTE,
	VCM_DO_CONNECT,   /* create the QP, rdma_connect */
	VCM_DO_POST,      /* established: post what waited */
	VCM_DO_FAIL,      /* fail requests (QP to error), report the peer */
	VCM_DO_DESTROY,   /* free the QP and the id */
};

/* Next state for event in state; *action says what to do. Unexpected
 * events in a live state fail the connection. */
int vcm_next(int state, int event, int *action);
const char *vcm_state_name(int state);

/* ---- striping ---- */

/* Assigns each op to one of ndev devices, largest first to the least
 * loaded (LPT), so devices carry similar bytes; dev_of[i] for op i. ops in
 * one request keep their order per device. scratch holds n uint32_t. */
void vp_stripe(const uint64_t *op_len, uint32_t n, uint32_t ndev, uint32_t *dev_of, uint32_t *scratch);

/* ---- rkeys in descriptors ---- */

/* u8 count, then count u32 rkeys (little-endian). Returns bytes written or
 * 0 when it does not fit. */
size_t vp_pack_rkeys(const uint32_t *rkeys, uint32_t n, uint8_t *out, size_t cap);
/* 0 and *n, or -1 on malformed input or more than max keys. */
int vp_unpack_rkeys(const uint8_t *in, size_t len, uint32_t *rkeys, uint32_t max, uint32_t *n);

#endif
