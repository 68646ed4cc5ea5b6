/*
 * verbs_plan.c: WR planning, completion demultiplexing, the rdmacm state
 * machine, NIC striping and rkey packing for the verbs transport (see
 * verbs_plan.h). Pure functions over caller-owned memory: the transport
 * calls them with real QPs, the unit tests with arrays.
 *
 * Signalling rule, and why it is safe on an RC QP: completions are
 * generated in post order, so a signaled WR's completion means every
 * earlier WR on the QP completed too. Every request's last WR is signaled,
 * hence a signaled WR only ever covers WRs of its own request: one record
 * per signaled group carries the request's tag and the group's bytes, and
 * the ring releases the group's send-queue slots when its completion
 * arrives. A QP in error flushes every outstanding WR, signaled or not;
 * the first error of a group fails it, its other flushes are ignored.
 */
#include "fabric/verbs_plan.h"

#include <string.h>

size_t vp_plan(const struct vp_cfg *c, const uint64_t *op_len, uint32_t nops, struct vp_cursor *cur,
	       struct vp_wr *out, size_t max_out)
{
	size_t n = 0;
	uint32_t in_chain = 0;
	uint32_t every = c->signal_every ? c->signal_every : 1;
	uint32_t chain = c->max_chain ? c->max_chain : 1;
	uint64_t max_msg = c->max_msg ? c->max_msg : 1;
	while (n < max_out && cur->op < nops) {
		uint64_t left = op_len[cur->op] - cur->off;
		if (left == 0) { /* zero-length op: nothing to post */
			cur->op++;
			cur->off = 0;
			continue;
		}
		uint64_t len = left < max_msg ? left : max_msg;
		struct vp_wr *w = &out[n++];
		w->op = cur->op;
		w->off = cur->off;
		w->len = len;
		w->inl = c->is_write && len <= c->inline_max;
		cur->off += len;
		if (cur->off == op_len[cur->op]) {
			cur->op++;
			cur->off = 0;
		}
		cur->unsignaled++;
		w->signaled = cur->unsignaled >= every || cur->op >= nops;
		if (w->signaled)
			cur->unsignaled = 0;
		in_chain++;
		w->chain_end = in_chain >= chain;
		if (w->chain_end)
			in_chain = 0;
	}
	if (n) {
		/* the batch ends here: close the chain and make sure its send-queue
		 * slots come back even if the request continues later */
		out[n - 1].chain_end = 1;
		if (!out[n - 1].signaled) {
			out[n - 1].signaled = 1;
			cur->unsignaled = 0;
		}
	}
	return n;
}

/* ---- ring ---- */

int vp_ring_init(struct vp_ring *r, uint32_t cap, struct vp_rec *storage)
{
	if (cap == 0 || (cap & (cap - 1)) != 0)
		return -1;
	memset(r, 0, sizeof(*r));
	r->rec = storage;
	r->cap = cap;
	memset(storage, 0, cap * sizeof(*storage));
	return 0;
}

int64_t vp_ring_open(struct vp_ring *r, uint64_t tag)
{
	if (r->tail - r->head >= r->cap)
		return -1;
	uint32_t idx = r->tail & (r->cap - 1);
	struct vp_rec *x = &r->rec[idx];
	x->tag = tag;
	x->bytes = 0;
	x->nwr = 0;
	x->state = VP_REC_OPEN;
	r->tail++;
	return idx;
}

void vp_ring_add(struct vp_ring *r, uint32_t idx, uint64_t len)
{
	r->rec[idx].bytes += len;
	r->rec[idx].nwr++;
	r->wrs++;
}

void vp_ring_close(struct vp_ring *r, uint32_t idx)
{
	r->rec[idx].state = VP_REC_POSTED;
}

uint64_t vp_wrid(const struct vp_ring *r, uint32_t idx)
{
	return ((uint64_t)r->epoch << 32) | idx;
}

/* Releases finished records at the head. */
static void ring_release(struct vp_ring *r)
{
	while (r->head != r->tail) {
		struct vp_rec *x = &r->rec[r->head & (r->cap - 1)];
		if (x->state != VP_REC_DONE)
			break;
		r->wrs -= x->nwr;
		x->state = VP_REC_FREE;
		r->head++;
	}
}

int vp_demux(struct vp_ring *r, uint64_t wr_id, int success, struct vp_event *ev)
{
	uint32_t epoch = (uint32_t)(wr_id >> 32), idx = (uint32_t)wr_id;
	if (epoch != r->epoch || idx >= r->cap)
		return -1;
	struct vp_rec *x = &r->rec[idx];
	if (x->state == VP_REC_FREE)
		return -1;
	if (success) {
		/* the group's signaled WR completed: in RC order, so did every WR
		 * of the group; earlier groups reported their own completions */
		int report = x->state != VP_REC_DONE && x->tag != 0;
		if (report) {
			ev->tag = x->tag;
			ev->bytes = x->bytes;
			ev->ok = 1;
		}
		x->state = VP_REC_DONE;
		x->tag = 0;
		ring_release(r);
		return report;
	}
	/* an error or a flush: fail the group once */
	int report = x->state != VP_REC_DONE && x->tag != 0;
	if (report) {
		ev->tag = x->tag;
		ev->bytes = 0;
		ev->ok = 0;
	}
	x->state = VP_REC_DONE;
	x->tag = 0;
	ring_release(r);
	return report;
}

void vp_ring_fail_all(struct vp_ring *r, void (*fn)(void *ud, uint64_t tag), void *ud)
{
	for (uint32_t i = r->head; i != r->tail; i++) {
		struct vp_rec *x = &r->rec[i & (r->cap - 1)];
		if (x->state != VP_REC_DONE && x->tag) {
			uint64_t tag = x->tag;
			x->tag = 0;
			fn(ud, tag);
		}
	}
}

/* ---- connection state machine ---- */

int vcm_next(int state, int event, int *action)
{
	*action = VCM_DO_NOTHING;
	if (event == VCM_EV_CLOSE) {
		*action = state == VCM_CLOSED ? VCM_DO_NOTHING : VCM_DO_DESTROY;
		return VCM_CLOSED;
	}
	switch (state) {
	case VCM_IDLE:
		if (event == VCM_EV_START) {
			*action = VCM_DO_RESOLVE_ADDR;
			return VCM_ADDR;
		}
		return VCM_IDLE;
	case VCM_ADDR:
		if (event == VCM_EV_ADDR_RESOLVED) {
			*action = VCM_DO_RESOLVE_ROUTE;
			return VCM_ROUTE;
		}
		break;
	case VCM_ROUTE:
		if (event == VCM_EV_ROUTE_RESOLVED) {
			*action = VCM_DO_CONNECT;
			return VCM_CONNECTING;
		}
		break;
	case VCM_CONNECTING:
		if (event == VCM_EV_ESTABLISHED) {
			*action = VCM_DO_POST;
			return VCM_READY;
		}
		break;
	case VCM_READY:
		if (event == VCM_EV_ESTABLISHED)
			return VCM_READY;
		break;
	case VCM_ERROR:
		/* already failed: a START rebuilds from scratch */
		if (event == VCM_EV_START) {
			*action = VCM_DO_RESOLVE_ADDR;
			return VCM_ADDR;
		}
		return VCM_ERROR;
	case VCM_CLOSED:
		return VCM_CLOSED;
	}
	/* anything else in a live state: the connection is lost */
	if (event == VCM_EV_START)
		return state; /* already under way */
	*action = VCM_DO_FAIL;
	return VCM_ERROR;
}

const char *vcm_state_name(int s)
{
	static const char *const n[] = { "idle", "resolving-addr", "resolving-route", "connecting",
					 "ready", "error", "closed" };
	return s >= 0 && s <= VCM_CLOSED ? n[s] : "?";
}

/* ---- striping ---- */

void vp_stripe(const uint64_t *op_len, uint32_t n, uint32_t ndev, uint32_t *dev_of, uint32_t *scratch)
{
	if (ndev <= 1) {
		for (uint32_t i = 0; i < n; i++)
			dev_of[i] = 0;
		return;
	}
	/* order by length, descending (insertion sort on indices: batches are
	 * small and mostly equal-sized blocks, where this is linear) */
	for (uint32_t i = 0; i < n; i++) {
		uint32_t j = i;
		while (j > 0 && op_len[scratch[j - 1]] < op_len[i]) {
			scratch[j] = scratch[j - 1];
			j--;
		}
		scratch[j] = i;
	}
	uint64_t load[64] = { 0 };
	if (ndev > 64)
		ndev = 64;
	for (uint32_t k = 0; k < n; k++) {
		uint32_t i = scratch[k], best = 0;
		for (uint32_t d = 1; d < ndev; d++)
			if (load[d] < load[best])
				best = d;
		dev_of[i] = best;
		load[best] += op_len[i];
	}
}

/* ---- rkeys ---- */

size_t vp_pack_rkeys(const uint32_t *rkeys, uint32_t n, uint8_t *out, size_t cap)
{
	if (n == 0 || n > 255 || cap < 1 + 4 * (size_t)n)
		return 0;
	out[0] = (uint8_t)n;
	for (uint32_t i = 0; i < n; i++)
		for (int b = 0; b < 4; b++)
			out[1 + 4 * i + b] = (uint8_t)(rkeys[i] >> (8 * b));
	return 1 + 4 * (size_t)n;
}

int vp_unpack_rkeys(const uint8_t *in, size_t len, uint32_t *rkeys, uint32_t max, uint32_t *n)
{
	if (len < 1 || in[0] == 0 || in[0] > max || len != 1 + 4 * (size_t)in[0])
		return -1;
	*n = in[0];
	for (uint32_t i = 0; i < *n; i++) {
		uint32_t v = 0;
		for (int b = 3; b >= 0; b--)
			v = (v << 8) | in[1 + 4 * i + b];
		rkeys[i] = v;
	}
	return 0;
}
