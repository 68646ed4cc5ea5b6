/*
 * cd_proto.h: the cachedir protocol, version 1 (docs/protocol-cachedir.md).
 *
 * Message types, their payloads as C structs, an encoder per message writing
 * a whole frame into a kvf_wire_writer, and one decoder that checks a frame
 * completely (every field, every list item, no trailing bytes) before anything
 * acts on it. Shared by the daemon (cachedir/server.c) and the client library
 * (cachedir/client.c), and fuzzed by tests/fuzz/fuzz_cachedir.c.
 *
 * Decoded messages hold no allocation: strings are copied into fixed arrays
 * (the protocol bounds their lengths), key arrays and record lists stay views
 * into the frame's payload, read with cd_keys_get() and the cd_*_next()
 * iterators. A decoded message is valid as long as the frame payload is.
 * Internal to the cachedir library; clients outside it use kvf_cachedir.h.
 */
#ifndef KVF_CD_PROTO_H
#define KVF_CD_PROTO_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/kvf_blockkey.h"
#include "common/kvf_frame.h"
#include "common/kvf_wire.h"

#define CD_PROTO_VERSION 1
#define CD_PROTO_MIN_VERSION 1
#define CD_PROTO_MAX_VERSION 1

/* Bounds on strings, bytes without the NUL. */
#define CD_ID_MAX 128      /* worker id */
#define CD_MODEL_MAX 256   /* model id */
#define CD_ENDPOINT_MAX 256
#define CD_MSG_MAX 1024    /* error / resync text */

#define CD_KEY_BYTES 16
#define CD_NTIERS 3
#define CD_TIER_ALL 0xff   /* REMOVED: every tier */

enum cd_type {
	CD_ERROR = 0x01,
	CD_OK = 0x02,
	CD_PING = 0x03,
	CD_PONG = 0x04,

	CD_REGISTER = 0x10,
	CD_REGISTERED = 0x11,
	CD_HEARTBEAT = 0x12,
	CD_HEARTBEAT_ACK = 0x13,
	CD_STORED = 0x14,
	CD_REMOVED = 0x15,
	CD_CLEARED = 0x16,
	CD_SYNC_BEGIN = 0x17,
	CD_SYNC_END = 0x18,
	CD_SYNCED = 0x19,
	CD_RESYNC = 0x1a,
	CD_UNREGISTER = 0x1b,

	CD_LOOKUP = 0x20,
	CD_LOOKUP_REPLY = 0x21,
	CD_WORKERS = 0x22,
	CD_WORKERS_REPLY = 0x23,
	CD_WATCH = 0x24,
	CD_WATCH_EVENT = 0x25,
	CD_UNWATCH = 0x26,
};

enum cd_role { CD_ROLE_PREFILL = 1, CD_ROLE_DECODE = 2, CD_ROLE_BOTH = 3 };
enum cd_tier { CD_TIER_GPU = 0, CD_TIER_HOST = 1, CD_TIER_DISK = 2 };
/* Worker state as the directory sees it. */
enum cd_wstate { CD_WS_ACTIVE = 1, CD_WS_DRAINING = 2, CD_WS_DISCONNECTED = 3 };
/* HEARTBEAT flags. */
#define CD_LOAD_DRAINING 0x01
/* STORED flags. */
#define CD_STORED_PARENT 0x01
/* WATCH flags. */
#define CD_WATCH_WORKERS 0x01
#define CD_WATCH_BLOCKS 0x02
/* LOOKUP_REPLY flags. */
#define CD_LOOKUP_WARMING 0x01

enum cd_watch_kind {
	CD_EV_SNAPSHOT_BEGIN = 1,
	CD_EV_SNAPSHOT_END = 2,
	CD_EV_WORKER = 3,
	CD_EV_WORKER_GONE = 4,
	CD_EV_STORED = 5,
	CD_EV_REMOVED = 6,
	CD_EV_CLEARED = 7,
};
enum cd_gone_reason { CD_GONE_EXPIRED = 1, CD_GONE_UNREGISTERED = 2, CD_GONE_REPLACED = 3 };
enum cd_snapshot_reason { CD_SNAP_NEW = 1, CD_SNAP_OVERFLOW = 2 };

/* n keys of 16 bytes each (lo then hi, u64 little-endian), a payload view. */
typedef struct cd_keys {
	const uint8_t *p;
	uint32_t n;
} cd_keys;

static inline uint64_t cd_le64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, sizeof(v)); /* unaligned-safe; one load */
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	v = __builtin_bswap64(v);
#endif
	return v;
}

static inline kvf_blockkey cd_keys_get(const cd_keys *k, size_t i)
{
	const uint8_t *p = k->p + i * CD_KEY_BYTES;
	kvf_blockkey key = { cd_le64(p), cd_le64(p + 8) };
	return key;
}

/* ---- payloads ---- */

typedef struct cd_error {
	int32_t code;   /* a KVF_E_* value */
	uint8_t fatal;  /* 1: the sender closes the connection after this frame */
	char msg[CD_MSG_MAX + 1];
} cd_error;

typedef struct cd_register {
	char worker_id[CD_ID_MAX + 1];
	uint8_t role;
	char model[CD_MODEL_MAX + 1];
	uint32_t block_size;
	uint64_t epoch;    /* worker incarnation: changes when the worker restarts */
	uint64_t last_seq; /* seq of the worker's last event (0: none yet) */
	uint8_t tiers;     /* bit t set: the worker has tier t */
	uint64_t capacity[CD_NTIERS]; /* blocks per tier */
	char http[CD_ENDPOINT_MAX + 1];
	char fabric[CD_ENDPOINT_MAX + 1];
} cd_register;

typedef struct cd_registered {
	uint32_t heartbeat_ms;
	uint32_t lease_ms;
	uint64_t server_epoch;
	uint8_t resumed; /* the server kept the worker's entries from an earlier session */
} cd_registered;

typedef struct cd_load {
	uint32_t waiting, running;
	uint64_t kv_used, kv_total; /* blocks */
	uint8_t flags;              /* CD_LOAD_* */
} cd_load;

typedef struct cd_heartbeat {
	uint64_t seq;
	cd_load load;
} cd_heartbeat;

typedef struct cd_heartbeat_ack {
	uint64_t last_seq; /* last event the server applied from this worker */
	uint64_t blocks;   /* holder entries the server has for this worker */
} cd_heartbeat_ack;

typedef struct cd_stored {
	uint64_t seq;
	uint8_t tier;
	uint8_t flags; /* CD_STORED_PARENT */
	kvf_blockkey parent;
	cd_keys keys;
} cd_stored;

typedef struct cd_removed {
	uint64_t seq;
	uint8_t tier; /* 0..2 or CD_TIER_ALL */
	cd_keys keys;
} cd_removed;

typedef struct cd_seqmsg { /* CLEARED, SYNC_BEGIN, SYNC_END */
	uint64_t seq;
} cd_seqmsg;

typedef struct cd_synced {
	uint64_t seq;
	uint64_t blocks; /* holder entries after the sync */
	uint64_t swept;  /* entries dropped because the sync did not list them */
} cd_synced;

typedef struct cd_resync {
	uint64_t expected_seq;
	uint64_t got_seq;
	char reason[CD_MSG_MAX + 1];
} cd_resync;

typedef struct cd_lookup {
	char model[CD_MODEL_MAX + 1];
	uint8_t flags; /* 0 in version 1 */
	cd_keys keys;
} cd_lookup;

typedef struct cd_holder {
	char worker_id[CD_ID_MAX + 1];
	uint8_t state;
	uint32_t prefix[CD_NTIERS]; /* gpu <= host <= any, see the spec */
} cd_holder;

typedef struct cd_lookup_reply {
	uint32_t nkeys;    /* keys in the request */
	uint32_t nmatched; /* leading keys held by at least one listed worker */
	uint8_t flags;     /* CD_LOOKUP_WARMING */
	uint32_t nholders;
	kvf_wire_reader items; /* positioned at the first holder */
} cd_lookup_reply;

typedef struct cd_workers {
	char model[CD_MODEL_MAX + 1]; /* "" = all */
} cd_workers;

typedef struct cd_worker_info {
	char worker_id[CD_ID_MAX + 1];
	uint8_t role;
	char model[CD_MODEL_MAX + 1];
	uint32_t block_size;
	uint64_t epoch;
	uint8_t state;
	uint8_t tiers;
	uint64_t capacity[CD_NTIERS];
	char http[CD_ENDPOINT_MAX + 1];
	char fabric[CD_ENDPOINT_MAX + 1];
	cd_load load;
	uint64_t blocks[CD_NTIERS];
	uint32_t heartbeat_age_ms;
} cd_worker_info;

typedef struct cd_workers_reply {
	uint32_t n;
	kvf_wire_reader items;
} cd_workers_reply;

typedef struct cd_watch {
	uint8_t flags; /* CD_WATCH_* */
	char model[CD_MODEL_MAX + 1];
} cd_watch;

typedef struct cd_watch_event {
	uint64_t seq;
	uint8_t kind;
	union {
		struct { uint64_t server_epoch; uint8_t reason; } snap;
		cd_worker_info worker;
		struct { char worker_id[CD_ID_MAX + 1]; uint8_t reason; } gone;
		struct {
			char worker_id[CD_ID_MAX + 1];
			uint8_t tier, flags;
			kvf_blockkey parent;
			cd_keys keys;
		} blocks; /* STORED (flags, parent) and REMOVED */
		struct { char worker_id[CD_ID_MAX + 1]; } cleared;
	} u;
} cd_watch_event;

/* Every message, tagged by hdr.type. */
typedef struct cd_msg {
	kvf_frame_hdr hdr;
	union {
		cd_error error;
		cd_register reg;
		cd_registered registered;
		cd_heartbeat hb;
		cd_heartbeat_ack hb_ack;
		cd_stored stored;
		cd_removed removed;
		cd_seqmsg seq; /* CLEARED, SYNC_BEGIN, SYNC_END */
		cd_synced synced;
		cd_resync resync;
		cd_lookup lookup;
		cd_lookup_reply lookup_reply;
		cd_workers workers;
		cd_workers_reply workers_reply;
		cd_watch watch;
		cd_watch_event ev;
	} u;
} cd_msg;

/* Name of a message type ("LOOKUP"), "?" when unknown. */
const char *cd_type_name(uint8_t type);

/*
 * Decodes frame f (version already checked by the frame decoder) into *m.
 * Checks the flags (0), every field's bounds and that the payload is consumed
 * exactly. Lists (LOOKUP_REPLY holders, WORKERS_REPLY records) are walked
 * once to validate; read them with the iterators below. Returns 0, or
 * KVF_E_PROTO / KVF_E_UNSUPPORTED (unknown type) with a kvf_errmsg() detail.
 * max_keys bounds the key count of one message (0: no bound but the frame's).
 */
int cd_proto_decode(const kvf_frame *f, uint32_t max_keys, cd_msg *m);

/*
 * Encodes a decoded message back into one frame (same request id): the
 * inverse of cd_proto_decode(), used by the fuzz target and the tests to
 * check that every accepted frame re-encodes to the same bytes. Returns 0,
 * the writer's error, or KVF_E_UNSUPPORTED for an unknown type.
 */
int cd_proto_encode(kvf_wire_writer *w, const cd_msg *m);

/* Next holder / worker record: 1 and *out, 0 at the end (lists were
 * validated by cd_proto_decode, so no error is possible). */
int cd_lookup_reply_next(cd_lookup_reply *r, cd_holder *out);
int cd_workers_reply_next(cd_workers_reply *r, cd_worker_info *out);

/* ---- encoders: each appends one whole frame to w; errors are w's sticky
 * error, returned by kvf_frame_end (KVF_E_NOMEM, KVF_E_TOOBIG). ---- */

int cd_enc_error(kvf_wire_writer *w, uint32_t rid, int32_t code, int fatal, const char *msg);
int cd_enc_empty(kvf_wire_writer *w, uint8_t type, uint32_t rid); /* OK, PING, PONG, UNREGISTER, UNWATCH */
int cd_enc_register(kvf_wire_writer *w, uint32_t rid, const cd_register *r);
int cd_enc_registered(kvf_wire_writer *w, uint32_t rid, const cd_registered *r);
int cd_enc_heartbeat(kvf_wire_writer *w, uint32_t rid, const cd_heartbeat *h);
int cd_enc_heartbeat_ack(kvf_wire_writer *w, uint32_t rid, const cd_heartbeat_ack *a);
/* STORED; parent may be NULL. */
int cd_enc_stored(kvf_wire_writer *w, uint64_t seq, uint8_t tier, const kvf_blockkey *parent,
		  const kvf_blockkey *keys, size_t n);
int cd_enc_removed(kvf_wire_writer *w, uint64_t seq, uint8_t tier, const kvf_blockkey *keys, size_t n);
/* CLEARED, SYNC_BEGIN, SYNC_END. */
int cd_enc_seqmsg(kvf_wire_writer *w, uint8_t type, uint32_t rid, uint64_t seq);
int cd_enc_synced(kvf_wire_writer *w, uint32_t rid, const cd_synced *s);
int cd_enc_resync(kvf_wire_writer *w, const cd_resync *r);
int cd_enc_lookup(kvf_wire_writer *w, uint32_t rid, const char *model, const kvf_blockkey *keys, size_t n);
int cd_enc_workers(kvf_wire_writer *w, uint32_t rid, const char *model);
int cd_enc_watch(kvf_wire_writer *w, uint32_t rid, uint8_t flags, const char *model);

/* Key bytes of the wire, for encoders outside this file. */
void cd_put_key(kvf_wire_writer *w, kvf_blockkey k);
void cd_put_keys(kvf_wire_writer *w, const kvf_blockkey *keys, size_t n);
/* A worker record (WORKERS_REPLY item, WATCH WORKER event body). */
void cd_put_worker_info(kvf_wire_writer *w, const cd_worker_info *wi);
/* A holder record (LOOKUP_REPLY item). */
void cd_put_holder(kvf_wire_writer *w, const char *worker_id, uint8_t state, const uint32_t prefix[CD_NTIERS]);

/*
 * LOOKUP_REPLY and WORKERS_REPLY are built in place: _begin writes the frame
 * header and the fixed fields, the caller appends n records with
 * cd_put_holder()/cd_put_worker_info(), _end patches count and length.
 */
typedef struct cd_list_frame {
	size_t start, count_off;
} cd_list_frame;
void cd_lookup_reply_begin(kvf_wire_writer *w, uint32_t rid, uint32_t nkeys, uint32_t nmatched,
			   uint8_t flags, cd_list_frame *lf);
void cd_workers_reply_begin(kvf_wire_writer *w, uint32_t rid, cd_list_frame *lf);
int cd_list_end(kvf_wire_writer *w, const cd_list_frame *lf, uint32_t count);

/* WATCH_EVENT frames (request id of the WATCH). */
int cd_enc_ev_snapshot(kvf_wire_writer *w, uint32_t rid, uint64_t seq, uint8_t kind,
		       uint64_t server_epoch, uint8_t reason); /* SNAPSHOT_BEGIN or _END */
int cd_enc_ev_worker(kvf_wire_writer *w, uint32_t rid, uint64_t seq, const cd_worker_info *wi);
int cd_enc_ev_gone(kvf_wire_writer *w, uint32_t rid, uint64_t seq, const char *worker_id, uint8_t reason);
/* STORED (parent may be NULL) or REMOVED. */
int cd_enc_ev_blocks(kvf_wire_writer *w, uint32_t rid, uint64_t seq, uint8_t kind, const char *worker_id,
		     uint8_t tier, const kvf_blockkey *parent, const kvf_blockkey *keys, size_t n);
int cd_enc_ev_cleared(kvf_wire_writer *w, uint32_t rid, uint64_t seq, const char *worker_id);

#endif
