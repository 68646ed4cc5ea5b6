/*
 * proto.c: encoders and the validating decoder of the cachedir protocol v1
 * (field layouts in docs/protocol-cachedir.md, the order of calls here is the
 * order of fields there).
 *
 * Decoding is strict: unknown flag bits, out-of-range enums, empty ids,
 * oversized strings, a key count above the limit and trailing bytes are all
 * KVF_E_PROTO, so the daemon and the clients act only on well-formed input and
 * the fuzz target can require encode(decode(frame)) == frame for every frame
 * the decoder accepts.
 */
#include "cachedir/cd_proto.h"

#include <string.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"

const char *cd_type_name(uint8_t type)
{
	switch (type) {
	case CD_ERROR: return "ERROR";
	case CD_OK: return "OK";
	case CD_PING: return "PING";
	case CD_PONG: return "PONG";
	case CD_REGISTER: return "REGISTER";
	case CD_REGISTERED: return "REGISTERED";
	case CD_HEARTBEAT: return "HEARTBEAT";
	case CD_HEARTBEAT_ACK: return "HEARTBEAT_ACK";
	case CD_STORED: return "STORED";
	case CD_REMOVED: return "REMOVED";
	case CD_CLEARED: return "CLEARED";
	case CD_SYNC_BEGIN: return "SYNC_BEGIN";
	case CD_SYNC_END: return "SYNC_END";
	case CD_SYNCED: return "SYNCED";
	case CD_RESYNC: return "RESYNC";
	case CD_UNREGISTER: return "UNREGISTER";
	case CD_LOOKUP: return "LOOKUP";
	case CD_LOOKUP_REPLY: return "LOOKUP_REPLY";
	case CD_WORKERS: return "WORKERS";
	case CD_WORKERS_REPLY: return "WORKERS_REPLY";
	case CD_WATCH: return "WATCH";
	case CD_WATCH_EVENT: return "WATCH_EVENT";
	case CD_UNWATCH: return "UNWATCH";
	default: return "?";
	}
}

/* ---- encoding ---- */

void cd_put_key(kvf_wire_writer *w, kvf_blockkey k)
{
	kvf_wire_put_u64(w, k.lo);
	kvf_wire_put_u64(w, k.hi);
}

void cd_put_keys(kvf_wire_writer *w, const kvf_blockkey *keys, size_t n)
{
	uint8_t *p = kvf_wire_put_space(w, n * CD_KEY_BYTES);
	if (!p)
		return;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	/* kvf_blockkey is {u64 lo, u64 hi}: already the wire layout. */
	_Static_assert(sizeof(kvf_blockkey) == CD_KEY_BYTES, "kvf_blockkey is two u64");
	memcpy(p, keys, n * CD_KEY_BYTES);
#else
	for (size_t i = 0; i < n; i++) {
		uint64_t lo = keys[i].lo, hi = keys[i].hi;
		for (int b = 0; b < 8; b++) {
			p[b] = (uint8_t)(lo >> (8 * b));
			p[8 + b] = (uint8_t)(hi >> (8 * b));
		}
		p += CD_KEY_BYTES;
	}
#endif
}

static void begin(kvf_wire_writer *w, uint8_t type, uint32_t rid, size_t *start)
{
	kvf_frame_hdr h = { .version = CD_PROTO_VERSION, .type = type, .request_id = rid };
	kvf_frame_begin(w, &h, start);
}

int cd_enc_error(kvf_wire_writer *w, uint32_t rid, int32_t code, int fatal, const char *msg)
{
	size_t s;
	begin(w, CD_ERROR, rid, &s);
	kvf_wire_put_u32(w, (uint32_t)code);
	kvf_wire_put_u8(w, fatal ? 1 : 0);
	/* Cut long messages at the protocol bound (on a byte, not a UTF-8 char:
	 * the messages are ours and ASCII). */
	size_t len = msg ? strlen(msg) : 0;
	if (len > CD_MSG_MAX)
		len = CD_MSG_MAX;
	kvf_wire_put_blob(w, msg, len);
	return kvf_frame_end(w, s);
}

int cd_enc_empty(kvf_wire_writer *w, uint8_t type, uint32_t rid)
{
	size_t s;
	begin(w, type, rid, &s);
	return kvf_frame_end(w, s);
}

int cd_enc_register(kvf_wire_writer *w, uint32_t rid, const cd_register *r)
{
	size_t s;
	begin(w, CD_REGISTER, rid, &s);
	kvf_wire_put_str(w, r->worker_id);
	kvf_wire_put_u8(w, r->role);
	kvf_wire_put_str(w, r->model);
	kvf_wire_put_u32(w, r->block_size);
	kvf_wire_put_u64(w, r->epoch);
	kvf_wire_put_u64(w, r->last_seq);
	kvf_wire_put_u8(w, r->tiers);
	for (int t = 0; t < CD_NTIERS; t++)
		kvf_wire_put_u64(w, r->capacity[t]);
	kvf_wire_put_str(w, r->http);
	kvf_wire_put_str(w, r->fabric);
	return kvf_frame_end(w, s);
}

int cd_enc_registered(kvf_wire_writer *w, uint32_t rid, const cd_registered *r)
{
	size_t s;
	begin(w, CD_REGISTERED, rid, &s);
	kvf_wire_put_u32(w, r->heartbeat_ms);
	kvf_wire_put_u32(w, r->lease_ms);
	kvf_wire_put_u64(w, r->server_epoch);
	kvf_wire_put_u8(w, r->resumed);
	return kvf_frame_end(w, s);
}

static void put_load(kvf_wire_writer *w, const cd_load *l)
{
	kvf_wire_put_u32(w, l->waiting);
	kvf_wire_put_u32(w, l->running);
	kvf_wire_put_u64(w, l->kv_used);
	kvf_wire_put_u64(w, l->kv_total);
	kvf_wire_put_u8(w, l->flags);
}

int cd_enc_heartbeat(kvf_wire_writer *w, uint32_t rid, const cd_heartbeat *h)
{
	size_t s;
	begin(w, CD_HEARTBEAT, rid, &s);
	kvf_wire_put_u64(w, h->seq);
	put_load(w, &h->load);
	return kvf_frame_end(w, s);
}

int cd_enc_heartbeat_ack(kvf_wire_writer *w, uint32_t rid, const cd_heartbeat_ack *a)
{
	size_t s;
	begin(w, CD_HEARTBEAT_ACK, rid, &s);
	kvf_wire_put_u64(w, a->last_seq);
	kvf_wire_put_u64(w, a->blocks);
	return kvf_frame_end(w, s);
}

int cd_enc_stored(kvf_wire_writer *w, uint64_t seq, uint8_t tier, const kvf_blockkey *parent,
		  const kvf_blockkey *keys, size_t n)
{
	size_t s;
	begin(w, CD_STORED, 0, &s);
	kvf_wire_put_u64(w, seq);
	kvf_wire_put_u8(w, tier);
	kvf_wire_put_u8(w, parent ? CD_STORED_PARENT : 0);
	if (parent)
		cd_put_key(w, *parent);
	kvf_wire_put_u32(w, (uint32_t)n);
	cd_put_keys(w, keys, n);
	return kvf_frame_end(w, s);
}

int cd_enc_removed(kvf_wire_writer *w, uint64_t seq, uint8_t tier, const kvf_blockkey *keys, size_t n)
{
	size_t s;
	begin(w, CD_REMOVED, 0, &s);
	kvf_wire_put_u64(w, seq);
	kvf_wire_put_u8(w, tier);
	kvf_wire_put_u32(w, (uint32_t)n);
	cd_put_keys(w, keys, n);
	return kvf_frame_end(w, s);
}

int cd_enc_seqmsg(kvf_wire_writer *w, uint8_t type, uint32_t rid, uint64_t seq)
{
	size_t s;
	begin(w, type, rid, &s);
	kvf_wire_put_u64(w, seq);
	return kvf_frame_end(w, s);
}

int cd_enc_synced(kvf_wire_writer *w, uint32_t rid, const cd_synced *y)
{
	size_t s;
	begin(w, CD_SYNCED, rid, &s);
	kvf_wire_put_u64(w, y->seq);
	kvf_wire_put_u64(w, y->blocks);
	kvf_wire_put_u64(w, y->swept);
	return kvf_frame_end(w, s);
}

int cd_enc_resync(kvf_wire_writer *w, const cd_resync *r)
{
	size_t s;
	begin(w, CD_RESYNC, 0, &s);
	kvf_wire_put_u64(w, r->expected_seq);
	kvf_wire_put_u64(w, r->got_seq);
	kvf_wire_put_str(w, r->reason);
	return kvf_frame_end(w, s);
}

int cd_enc_lookup(kvf_wire_writer *w, uint32_t rid, const char *model, const kvf_blockkey *keys, size_t n)
{
	size_t s;
	begin(w, CD_LOOKUP, rid, &s);
	kvf_wire_put_str(w, model);
	kvf_wire_put_u8(w, 0);
	kvf_wire_put_u32(w, (uint32_t)n);
	cd_put_keys(w, keys, n);
	return kvf_frame_end(w, s);
}

int cd_enc_workers(kvf_wire_writer *w, uint32_t rid, const char *model)
{
	size_t s;
	begin(w, CD_WORKERS, rid, &s);
	kvf_wire_put_str(w, model);
	return kvf_frame_end(w, s);
}

int cd_enc_watch(kvf_wire_writer *w, uint32_t rid, uint8_t flags, const char *model)
{
	size_t s;
	begin(w, CD_WATCH, rid, &s);
	kvf_wire_put_u8(w, flags);
	kvf_wire_put_str(w, model);
	return kvf_frame_end(w, s);
}

void cd_put_holder(kvf_wire_writer *w, const char *worker_id, uint8_t state, const uint32_t prefix[CD_NTIERS])
{
	kvf_wire_put_str(w, worker_id);
	kvf_wire_put_u8(w, state);
	for (int t = 0; t < CD_NTIERS; t++)
		kvf_wire_put_u32(w, prefix[t]);
}

void cd_put_worker_info(kvf_wire_writer *w, const cd_worker_info *wi)
{
	kvf_wire_put_str(w, wi->worker_id);
	kvf_wire_put_u8(w, wi->role);
	kvf_wire_put_str(w, wi->model);
	kvf_wire_put_u32(w, wi->block_size);
	kvf_wire_put_u64(w, wi->epoch);
	kvf_wire_put_u8(w, wi->state);
	kvf_wire_put_u8(w, wi->tiers);
	for (int t = 0; t < CD_NTIERS; t++)
		kvf_wire_put_u64(w, wi->capacity[t]);
	kvf_wire_put_str(w, wi->http);
	kvf_wire_put_str(w, wi->fabric);
	put_load(w, &wi->load);
	for (int t = 0; t < CD_NTIERS; t++)
		kvf_wire_put_u64(w, wi->blocks[t]);
	kvf_wire_put_u32(w, wi->heartbeat_age_ms);
}

void cd_lookup_reply_begin(kvf_wire_writer *w, uint32_t rid, uint32_t nkeys, uint32_t nmatched,
			   uint8_t flags, cd_list_frame *lf)
{
	begin(w, CD_LOOKUP_REPLY, rid, &lf->start);
	kvf_wire_put_u32(w, nkeys);
	kvf_wire_put_u32(w, nmatched);
	kvf_wire_put_u8(w, flags);
	lf->count_off = w->len;
	kvf_wire_put_u32(w, 0);
}

void cd_workers_reply_begin(kvf_wire_writer *w, uint32_t rid, cd_list_frame *lf)
{
	begin(w, CD_WORKERS_REPLY, rid, &lf->start);
	lf->count_off = w->len;
	kvf_wire_put_u32(w, 0);
}

int cd_list_end(kvf_wire_writer *w, const cd_list_frame *lf, uint32_t count)
{
	if (!kvf_wire_writer_error(w))
		kvf_wire_patch_u32(w, lf->count_off, count);
	return kvf_frame_end(w, lf->start);
}

static void ev_begin(kvf_wire_writer *w, uint32_t rid, uint64_t seq, uint8_t kind, size_t *s)
{
	begin(w, CD_WATCH_EVENT, rid, s);
	kvf_wire_put_u64(w, seq);
	kvf_wire_put_u8(w, kind);
}

int cd_enc_ev_snapshot(kvf_wire_writer *w, uint32_t rid, uint64_t seq, uint8_t kind,
		       uint64_t server_epoch, uint8_t reason)
{
	size_t s;
	ev_begin(w, rid, seq, kind, &s);
	if (kind == CD_EV_SNAPSHOT_BEGIN) {
		kvf_wire_put_u64(w, server_epoch);
		kvf_wire_put_u8(w, reason);
	}
	return kvf_frame_end(w, s);
}

int cd_enc_ev_worker(kvf_wire_writer *w, uint32_t rid, uint64_t seq, const cd_worker_info *wi)
{
	size_t s;
	ev_begin(w, rid, seq, CD_EV_WORKER, &s);
	cd_put_worker_info(w, wi);
	return kvf_frame_end(w, s);
}

int cd_enc_ev_gone(kvf_wire_writer *w, uint32_t rid, uint64_t seq, const char *worker_id, uint8_t reason)
{
	size_t s;
	ev_begin(w, rid, seq, CD_EV_WORKER_GONE, &s);
	kvf_wire_put_str(w, worker_id);
	kvf_wire_put_u8(w, reason);
	return kvf_frame_end(w, s);
}

int cd_enc_ev_blocks(kvf_wire_writer *w, uint32_t rid, uint64_t seq, uint8_t kind, const char *worker_id,
		     uint8_t tier, const kvf_blockkey *parent, const kvf_blockkey *keys, size_t n)
{
	size_t s;
	ev_begin(w, rid, seq, kind, &s);
	kvf_wire_put_str(w, worker_id);
	kvf_wire_put_u8(w, tier);
	if (kind == CD_EV_STORED) {
		kvf_wire_put_u8(w, parent ? CD_STORED_PARENT : 0);
		if (parent)
			cd_put_key(w, *parent);
	}
	kvf_wire_put_u32(w, (uint32_t)n);
	cd_put_keys(w, keys, n);
	return kvf_frame_end(w, s);
}

int cd_enc_ev_cleared(kvf_wire_writer *w, uint32_t rid, uint64_t seq, const char *worker_id)
{
	size_t s;
	ev_begin(w, rid, seq, CD_EV_CLEARED, &s);
	kvf_wire_put_str(w, worker_id);
	return kvf_frame_end(w, s);
}

/* ---- decoding ---- */

/* The decoder's cursor plus the first semantic error, so field checks read
 * like the encoders: a straight list with one verdict at the end. */
struct dec {
	kvf_wire_reader r;
	const char *what; /* first semantic failure, NULL when none */
	int code;         /* its code: KVF_E_PROTO, or KVF_E_TOOBIG for a key count over the limit */
	uint32_t max_keys;
	uint32_t nkeys;   /* the count that was over the limit */
};

static void bad(struct dec *d, const char *what)
{
	if (!d->what) {
		d->what = what;
		d->code = KVF_E_PROTO;
	}
}

static void get_str(struct dec *d, char *dst, size_t cap, int nonempty, const char *what)
{
	size_t n = kvf_wire_get_str(&d->r, dst, cap);
	if (kvf_wire_reader_error(&d->r))
		bad(d, what);
	else if (nonempty && n == 0)
		bad(d, what);
}

static kvf_blockkey get_key(struct dec *d)
{
	kvf_blockkey k;
	k.lo = kvf_wire_get_u64(&d->r);
	k.hi = kvf_wire_get_u64(&d->r);
	return k;
}

static void get_keys(struct dec *d, cd_keys *k)
{
	k->n = kvf_wire_get_u32(&d->r);
	if (d->max_keys && k->n > d->max_keys) {
		if (!d->what) {
			d->what = "too many keys in one message";
			d->code = KVF_E_TOOBIG;
			d->nkeys = k->n;
		}
		k->n = 0;
		k->p = NULL;
		return;
	}
	k->p = kvf_wire_get_view(&d->r, (size_t)k->n * CD_KEY_BYTES);
	if (!k->p)
		k->n = 0;
}

static void check_tier(struct dec *d, uint8_t tier, int allow_all)
{
	if (tier >= CD_NTIERS && !(allow_all && tier == CD_TIER_ALL))
		bad(d, "bad tier");
}

static void get_load(struct dec *d, cd_load *l)
{
	l->waiting = kvf_wire_get_u32(&d->r);
	l->running = kvf_wire_get_u32(&d->r);
	l->kv_used = kvf_wire_get_u64(&d->r);
	l->kv_total = kvf_wire_get_u64(&d->r);
	l->flags = kvf_wire_get_u8(&d->r);
	if (l->flags & ~CD_LOAD_DRAINING)
		bad(d, "unknown load flags");
}

static void check_role(struct dec *d, uint8_t role)
{
	if (role < CD_ROLE_PREFILL || role > CD_ROLE_BOTH)
		bad(d, "bad role");
}

static void check_tiers(struct dec *d, uint8_t tiers)
{
	if (tiers == 0 || (tiers & ~7u))
		bad(d, "bad tier set");
}

static void get_worker_info(struct dec *d, cd_worker_info *wi)
{
	get_str(d, wi->worker_id, sizeof(wi->worker_id), 1, "bad worker id");
	wi->role = kvf_wire_get_u8(&d->r);
	check_role(d, wi->role);
	get_str(d, wi->model, sizeof(wi->model), 1, "bad model");
	wi->block_size = kvf_wire_get_u32(&d->r);
	if (wi->block_size == 0)
		bad(d, "block size 0");
	wi->epoch = kvf_wire_get_u64(&d->r);
	wi->state = kvf_wire_get_u8(&d->r);
	if (wi->state < CD_WS_ACTIVE || wi->state > CD_WS_DISCONNECTED)
		bad(d, "bad worker state");
	wi->tiers = kvf_wire_get_u8(&d->r);
	check_tiers(d, wi->tiers);
	for (int t = 0; t < CD_NTIERS; t++)
		wi->capacity[t] = kvf_wire_get_u64(&d->r);
	get_str(d, wi->http, sizeof(wi->http), 0, "bad http endpoint");
	get_str(d, wi->fabric, sizeof(wi->fabric), 0, "bad fabric endpoint");
	get_load(d, &wi->load);
	for (int t = 0; t < CD_NTIERS; t++)
		wi->blocks[t] = kvf_wire_get_u64(&d->r);
	wi->heartbeat_age_ms = kvf_wire_get_u32(&d->r);
}

static void get_holder(struct dec *d, cd_holder *h, uint32_t nkeys)
{
	get_str(d, h->worker_id, sizeof(h->worker_id), 1, "bad worker id");
	h->state = kvf_wire_get_u8(&d->r);
	if (h->state < CD_WS_ACTIVE || h->state > CD_WS_DISCONNECTED)
		bad(d, "bad worker state");
	for (int t = 0; t < CD_NTIERS; t++)
		h->prefix[t] = kvf_wire_get_u32(&d->r);
	if (h->prefix[0] > h->prefix[1] || h->prefix[1] > h->prefix[2] || h->prefix[2] > nkeys ||
	    h->prefix[2] == 0)
		bad(d, "bad prefix lengths");
}

static void decode_body(struct dec *d, uint8_t type, cd_msg *m)
{
	switch (type) {
	case CD_ERROR: {
		cd_error *e = &m->u.error;
		e->code = (int32_t)kvf_wire_get_u32(&d->r);
		e->fatal = kvf_wire_get_u8(&d->r);
		get_str(d, e->msg, sizeof(e->msg), 0, "bad error message");
		if (e->code >= 0 || e->fatal > 1)
			bad(d, "bad error code");
		break;
	}
	case CD_OK:
	case CD_PING:
	case CD_PONG:
	case CD_UNREGISTER:
	case CD_UNWATCH:
		break;
	case CD_REGISTER: {
		cd_register *r = &m->u.reg;
		get_str(d, r->worker_id, sizeof(r->worker_id), 1, "bad worker id");
		r->role = kvf_wire_get_u8(&d->r);
		check_role(d, r->role);
		get_str(d, r->model, sizeof(r->model), 1, "bad model");
		r->block_size = kvf_wire_get_u32(&d->r);
		if (r->block_size == 0)
			bad(d, "block size 0");
		r->epoch = kvf_wire_get_u64(&d->r);
		r->last_seq = kvf_wire_get_u64(&d->r);
		r->tiers = kvf_wire_get_u8(&d->r);
		check_tiers(d, r->tiers);
		for (int t = 0; t < CD_NTIERS; t++)
			r->capacity[t] = kvf_wire_get_u64(&d->r);
		get_str(d, r->http, sizeof(r->http), 0, "bad http endpoint");
		get_str(d, r->fabric, sizeof(r->fabric), 0, "bad fabric endpoint");
		break;
	}
	case CD_REGISTERED: {
		cd_registered *r = &m->u.registered;
		r->heartbeat_ms = kvf_wire_get_u32(&d->r);
		r->lease_ms = kvf_wire_get_u32(&d->r);
		r->server_epoch = kvf_wire_get_u64(&d->r);
		r->resumed = kvf_wire_get_u8(&d->r);
		if (r->heartbeat_ms == 0 || r->lease_ms < r->heartbeat_ms || r->resumed > 1)
			bad(d, "bad lease timing");
		break;
	}
	case CD_HEARTBEAT:
		m->u.hb.seq = kvf_wire_get_u64(&d->r);
		get_load(d, &m->u.hb.load);
		break;
	case CD_HEARTBEAT_ACK:
		m->u.hb_ack.last_seq = kvf_wire_get_u64(&d->r);
		m->u.hb_ack.blocks = kvf_wire_get_u64(&d->r);
		break;
	case CD_STORED: {
		cd_stored *s = &m->u.stored;
		s->seq = kvf_wire_get_u64(&d->r);
		s->tier = kvf_wire_get_u8(&d->r);
		check_tier(d, s->tier, 0);
		s->flags = kvf_wire_get_u8(&d->r);
		if (s->flags & ~CD_STORED_PARENT)
			bad(d, "unknown STORED flags");
		if (s->flags & CD_STORED_PARENT)
			s->parent = get_key(d);
		else
			s->parent = (kvf_blockkey){ 0, 0 };
		get_keys(d, &s->keys);
		break;
	}
	case CD_REMOVED: {
		cd_removed *r = &m->u.removed;
		r->seq = kvf_wire_get_u64(&d->r);
		r->tier = kvf_wire_get_u8(&d->r);
		check_tier(d, r->tier, 1);
		get_keys(d, &r->keys);
		break;
	}
	case CD_CLEARED:
	case CD_SYNC_BEGIN:
	case CD_SYNC_END:
		m->u.seq.seq = kvf_wire_get_u64(&d->r);
		break;
	case CD_SYNCED:
		m->u.synced.seq = kvf_wire_get_u64(&d->r);
		m->u.synced.blocks = kvf_wire_get_u64(&d->r);
		m->u.synced.swept = kvf_wire_get_u64(&d->r);
		break;
	case CD_RESYNC:
		m->u.resync.expected_seq = kvf_wire_get_u64(&d->r);
		m->u.resync.got_seq = kvf_wire_get_u64(&d->r);
		get_str(d, m->u.resync.reason, sizeof(m->u.resync.reason), 0, "bad resync reason");
		break;
	case CD_LOOKUP:
		get_str(d, m->u.lookup.model, sizeof(m->u.lookup.model), 1, "bad model");
		m->u.lookup.flags = kvf_wire_get_u8(&d->r);
		if (m->u.lookup.flags)
			bad(d, "unknown LOOKUP flags");
		get_keys(d, &m->u.lookup.keys);
		break;
	case CD_LOOKUP_REPLY: {
		cd_lookup_reply *r = &m->u.lookup_reply;
		r->nkeys = kvf_wire_get_u32(&d->r);
		r->nmatched = kvf_wire_get_u32(&d->r);
		r->flags = kvf_wire_get_u8(&d->r);
		r->nholders = kvf_wire_get_u32(&d->r);
		if (r->nmatched > r->nkeys || (r->flags & ~CD_LOOKUP_WARMING))
			bad(d, "bad LOOKUP_REPLY header");
		r->items = d->r;
		cd_holder h;
		for (uint32_t i = 0; i < r->nholders && !d->what && !kvf_wire_reader_error(&d->r); i++)
			get_holder(d, &h, r->nkeys);
		break;
	}
	case CD_WORKERS:
		get_str(d, m->u.workers.model, sizeof(m->u.workers.model), 0, "bad model");
		break;
	case CD_WORKERS_REPLY: {
		cd_workers_reply *r = &m->u.workers_reply;
		r->n = kvf_wire_get_u32(&d->r);
		r->items = d->r;
		cd_worker_info wi;
		for (uint32_t i = 0; i < r->n && !d->what && !kvf_wire_reader_error(&d->r); i++)
			get_worker_info(d, &wi);
		break;
	}
	case CD_WATCH:
		m->u.watch.flags = kvf_wire_get_u8(&d->r);
		if (m->u.watch.flags == 0 || (m->u.watch.flags & ~(CD_WATCH_WORKERS | CD_WATCH_BLOCKS)))
			bad(d, "bad WATCH flags");
		get_str(d, m->u.watch.model, sizeof(m->u.watch.model), 0, "bad model");
		break;
	case CD_WATCH_EVENT: {
		cd_watch_event *e = &m->u.ev;
		e->seq = kvf_wire_get_u64(&d->r);
		e->kind = kvf_wire_get_u8(&d->r);
		switch (e->kind) {
		case CD_EV_SNAPSHOT_BEGIN:
			e->u.snap.server_epoch = kvf_wire_get_u64(&d->r);
			e->u.snap.reason = kvf_wire_get_u8(&d->r);
			if (e->u.snap.reason < CD_SNAP_NEW || e->u.snap.reason > CD_SNAP_OVERFLOW)
				bad(d, "bad snapshot reason");
			break;
		case CD_EV_SNAPSHOT_END:
			break;
		case CD_EV_WORKER:
			get_worker_info(d, &e->u.worker);
			break;
		case CD_EV_WORKER_GONE:
			get_str(d, e->u.gone.worker_id, sizeof(e->u.gone.worker_id), 1, "bad worker id");
			e->u.gone.reason = kvf_wire_get_u8(&d->r);
			if (e->u.gone.reason < CD_GONE_EXPIRED || e->u.gone.reason > CD_GONE_REPLACED)
				bad(d, "bad gone reason");
			break;
		case CD_EV_STORED:
		case CD_EV_REMOVED:
			get_str(d, e->u.blocks.worker_id, sizeof(e->u.blocks.worker_id), 1, "bad worker id");
			e->u.blocks.tier = kvf_wire_get_u8(&d->r);
			check_tier(d, e->u.blocks.tier, e->kind == CD_EV_REMOVED);
			e->u.blocks.flags = 0;
			e->u.blocks.parent = (kvf_blockkey){ 0, 0 };
			if (e->kind == CD_EV_STORED) {
				e->u.blocks.flags = kvf_wire_get_u8(&d->r);
				if (e->u.blocks.flags & ~CD_STORED_PARENT)
					bad(d, "unknown STORED flags");
				if (e->u.blocks.flags & CD_STORED_PARENT)
					e->u.blocks.parent = get_key(d);
			}
			get_keys(d, &e->u.blocks.keys);
			break;
		case CD_EV_CLEARED:
			get_str(d, e->u.cleared.worker_id, sizeof(e->u.cleared.worker_id), 1, "bad worker id");
			break;
		default:
			bad(d, "unknown watch event kind");
			break;
		}
		break;
	}
	default:
		break;
	}
}

int cd_proto_decode(const kvf_frame *f, uint32_t max_keys, cd_msg *m)
{
	uint8_t type = f->hdr.type;
	m->hdr = f->hdr;
	if (!strcmp(cd_type_name(type), "?"))
		return kvf_errf(KVF_E_UNSUPPORTED, "cachedir: unknown message type 0x%02x", type);
	if (f->hdr.flags)
		return kvf_errf(KVF_E_PROTO, "cachedir: %s: frame flags 0x%04x must be 0 in version %u",
				cd_type_name(type), f->hdr.flags, CD_PROTO_VERSION);
	struct dec d = { .what = NULL, .max_keys = max_keys };
	kvf_wire_reader_init(&d.r, f->payload, f->hdr.len);
	decode_body(&d, type, m);
	if (d.what && d.code == KVF_E_TOOBIG)
		return kvf_errf(KVF_E_TOOBIG, "cachedir: %s: %u keys, more than the %u allowed in one message "
				"(cachedir.max_keys_per_message)", cd_type_name(type), d.nkeys, d.max_keys);
	if (d.what)
		return kvf_errf(KVF_E_PROTO, "cachedir: %s: %s", cd_type_name(type), d.what);
	size_t left = kvf_wire_remaining(&d.r);
	int short_read = kvf_wire_reader_error(&d.r) != 0;
	if (kvf_wire_reader_done(&d.r) < 0) {
		if (short_read)
			return kvf_errf(KVF_E_PROTO, "cachedir: %s: payload of %u bytes is truncated",
					cd_type_name(type), f->hdr.len);
		return kvf_errf(KVF_E_PROTO, "cachedir: %s: payload too long: %zu trailing bytes",
				cd_type_name(type), left);
	}
	return 0;
}

int cd_lookup_reply_next(cd_lookup_reply *r, cd_holder *out)
{
	if (r->nholders == 0)
		return 0;
	struct dec d = { .r = r->items };
	get_holder(&d, out, r->nkeys);
	r->items = d.r;
	r->nholders--;
	return !kvf_wire_reader_error(&d.r);
}

int cd_workers_reply_next(cd_workers_reply *r, cd_worker_info *out)
{
	if (r->n == 0)
		return 0;
	struct dec d = { .r = r->items };
	get_worker_info(&d, out);
	r->items = d.r;
	r->n--;
	return !kvf_wire_reader_error(&d.r);
}

/* ---- re-encoding a decoded message ---- */

static kvf_blockkey *keys_copy(const cd_keys *k)
{
	kvf_blockkey *a = kvf_malloc((k->n ? k->n : 1) * sizeof(*a));
	if (a)
		for (uint32_t i = 0; i < k->n; i++)
			a[i] = cd_keys_get(k, i);
	return a;
}

int cd_proto_encode(kvf_wire_writer *w, const cd_msg *m)
{
	size_t start = w->len;
	uint32_t rid = m->hdr.request_id;
	const cd_keys *kv = NULL;
	kvf_blockkey *keys = NULL;
	switch (m->hdr.type) {
	case CD_STORED:
		kv = &m->u.stored.keys;
		break;
	case CD_REMOVED:
		kv = &m->u.removed.keys;
		break;
	case CD_LOOKUP:
		kv = &m->u.lookup.keys;
		break;
	case CD_WATCH_EVENT:
		if (m->u.ev.kind == CD_EV_STORED || m->u.ev.kind == CD_EV_REMOVED)
			kv = &m->u.ev.u.blocks.keys;
		break;
	default:
		break;
	}
	if (kv && !(keys = keys_copy(kv)))
		return KVF_E_NOMEM;
	int rc = 0;
	switch (m->hdr.type) {
	case CD_ERROR:
		rc = cd_enc_error(w, rid, m->u.error.code, m->u.error.fatal, m->u.error.msg);
		break;
	case CD_OK:
	case CD_PING:
	case CD_PONG:
	case CD_UNREGISTER:
	case CD_UNWATCH:
		rc = cd_enc_empty(w, m->hdr.type, rid);
		break;
	case CD_REGISTER:
		rc = cd_enc_register(w, rid, &m->u.reg);
		break;
	case CD_REGISTERED:
		rc = cd_enc_registered(w, rid, &m->u.registered);
		break;
	case CD_HEARTBEAT:
		rc = cd_enc_heartbeat(w, rid, &m->u.hb);
		break;
	case CD_HEARTBEAT_ACK:
		rc = cd_enc_heartbeat_ack(w, rid, &m->u.hb_ack);
		break;
	case CD_STORED:
		rc = cd_enc_stored(w, m->u.stored.seq, m->u.stored.tier,
				   (m->u.stored.flags & CD_STORED_PARENT) ? &m->u.stored.parent : NULL, keys, kv->n);
		break;
	case CD_REMOVED:
		rc = cd_enc_removed(w, m->u.removed.seq, m->u.removed.tier, keys, kv->n);
		break;
	case CD_CLEARED:
	case CD_SYNC_BEGIN:
	case CD_SYNC_END:
		rc = cd_enc_seqmsg(w, m->hdr.type, rid, m->u.seq.seq);
		break;
	case CD_SYNCED:
		rc = cd_enc_synced(w, rid, &m->u.synced);
		break;
	case CD_RESYNC:
		rc = cd_enc_resync(w, &m->u.resync);
		break;
	case CD_LOOKUP:
		rc = cd_enc_lookup(w, rid, m->u.lookup.model, keys, kv->n);
		break;
	case CD_LOOKUP_REPLY: {
		cd_lookup_reply r = m->u.lookup_reply;
		cd_list_frame lf;
		uint32_t n = r.nholders;
		cd_lookup_reply_begin(w, rid, r.nkeys, r.nmatched, r.flags, &lf);
		cd_holder h;
		while (cd_lookup_reply_next(&r, &h))
			cd_put_holder(w, h.worker_id, h.state, h.prefix);
		rc = cd_list_end(w, &lf, n);
		break;
	}
	case CD_WORKERS:
		rc = cd_enc_workers(w, rid, m->u.workers.model);
		break;
	case CD_WORKERS_REPLY: {
		cd_workers_reply r = m->u.workers_reply;
		cd_list_frame lf;
		uint32_t n = r.n;
		cd_workers_reply_begin(w, rid, &lf);
		cd_worker_info wi;
		while (cd_workers_reply_next(&r, &wi))
			cd_put_worker_info(w, &wi);
		rc = cd_list_end(w, &lf, n);
		break;
	}
	case CD_WATCH:
		rc = cd_enc_watch(w, rid, m->u.watch.flags, m->u.watch.model);
		break;
	case CD_WATCH_EVENT: {
		const cd_watch_event *e = &m->u.ev;
		switch (e->kind) {
		case CD_EV_SNAPSHOT_BEGIN:
		case CD_EV_SNAPSHOT_END:
			rc = cd_enc_ev_snapshot(w, rid, e->seq, e->kind, e->u.snap.server_epoch, e->u.snap.reason);
			break;
		case CD_EV_WORKER:
			rc = cd_enc_ev_worker(w, rid, e->seq, &e->u.worker);
			break;
		case CD_EV_WORKER_GONE:
			rc = cd_enc_ev_gone(w, rid, e->seq, e->u.gone.worker_id, e->u.gone.reason);
			break;
		case CD_EV_STORED:
		case CD_EV_REMOVED:
			rc = cd_enc_ev_blocks(w, rid, e->seq, e->kind, e->u.blocks.worker_id, e->u.blocks.tier,
					      (e->u.blocks.flags & CD_STORED_PARENT) ? &e->u.blocks.parent : NULL, keys,
					      kv->n);
			break;
		case CD_EV_CLEARED:
			rc = cd_enc_ev_cleared(w, rid, e->seq, e->u.cleared.worker_id);
			break;
		default:
			rc = KVF_E_UNSUPPORTED;
			break;
		}
		break;
	}
	default:
		rc = KVF_E_UNSUPPORTED;
		break;
	}
	kvf_free(keys);
	/* Encoders of unsolicited messages write request id 0: restore it. */
	if (rc == 0 && w->len >= start + KVF_FRAME_HDR_LEN)
		for (int i = 0; i < 4; i++)
			w->buf[start + 8 + i] = (uint8_t)(rid >> (8 * i));
	return rc;
}
