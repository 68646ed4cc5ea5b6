/*
 * kvf_cachedir.h: client of the cachedir, the cluster-wide KV block directory
 * (protocol in docs/protocol-cachedir.md, operations in docs/cachedir.md).
 *
 * One kvf_cachedir runs non-blocking on the caller's kvf_loop and serves two
 * uses, often in one process:
 *
 *   - a worker publishes what it holds: set opts.worker_id (and model, block
 *     size, endpoints, tiers). The client connects to EVERY configured
 *     replica, registers, and calls opts.announce to re-announce everything
 *     the worker holds after each (re)connect and whenever a replica asks for
 *     a resync; kvf_cachedir_stored/_removed/_cleared fan each event out to
 *     every registered replica with per-replica sequence numbers, and a
 *     heartbeat carries opts.load's answer every interval the server asks for;
 *
 *   - a reader (the gateway, or a decode worker looking for holders) sends
 *     LOOKUP for a whole key chain in one round trip and gets, per worker, the
 *     longest prefix it holds per tier class; WORKERS lists workers with
 *     load; WATCH streams changes. Reads go to one replica (a worker client
 *     uses one of its registered connections) and move to the next replica
 *     when it fails; requests in flight are re-sent there.
 *
 * Connections reconnect with exponential backoff (opts.reconnect_min_ms ..
 * reconnect_max_ms). All functions and callbacks run on the loop's thread.
 * Callbacks may issue new requests and events, but must not destroy the
 * client. Data handed to a callback is valid only during the call.
 */
#ifndef KVF_CACHEDIR_H
#define KVF_CACHEDIR_H

#include <stddef.h>
#include <stdint.h>

#include "common/kvf_blockkey.h"
#include "common/kvf_config.h"
#include "common/kvf_loop.h"

typedef struct kvf_cachedir kvf_cachedir;

/* The daemon's `cachedir { }` config section (for tools/kvf-config; the
 * keys are documented in docs/cachedir.md and docs/config.md). */
extern const kvf_cfg_section kvf_cachedir_section;

/* Storage tiers; a tier set is a bitmask of (1 << tier). */
enum kvf_cachedir_tier {
	KVF_CACHEDIR_GPU = 0,
	KVF_CACHEDIR_HOST = 1,
	KVF_CACHEDIR_DISK = 2,
};
#define KVF_CACHEDIR_NTIERS 3
#define KVF_CACHEDIR_ALL_TIERS 0xff /* kvf_cachedir_removed(): every tier */

enum kvf_cachedir_role {
	KVF_CACHEDIR_PREFILL = 1,
	KVF_CACHEDIR_DECODE = 2,
	KVF_CACHEDIR_BOTH = 3,
};

/* A worker's state as the directory sees it. */
enum kvf_cachedir_wstate {
	KVF_CACHEDIR_ACTIVE = 1,
	KVF_CACHEDIR_DRAINING = 2,     /* finishing its requests, takes no new ones */
	KVF_CACHEDIR_DISCONNECTED = 3, /* connection lost, lease still running */
};

typedef struct kvf_cachedir_load {
	uint32_t waiting, running;  /* requests queued / in the running batch */
	uint64_t kv_used_blocks;    /* KV pool blocks in use */
	uint64_t kv_total_blocks;   /* KV pool capacity */
	int draining;
} kvf_cachedir_load;

/* Handed to opts.announce: list every block the worker holds with
 * kvf_cachedir_sync_add(), then return. */
typedef struct kvf_cachedir_sync kvf_cachedir_sync;

/* Adds n keys held in tier (one call per tier a key is in). Returns 0 or
 * KVF_E_NOMEM / KVF_E_INVAL (bad tier). */
int kvf_cachedir_sync_add(kvf_cachedir_sync *s, int tier, const kvf_blockkey *keys, size_t n);

/* Connection life, for logs and metrics of the owner. */
enum kvf_cachedir_status_type {
	KVF_CACHEDIR_UP,       /* connected (reader) or registered (worker) */
	KVF_CACHEDIR_DOWN,     /* lost: err and msg say why; reconnect scheduled */
	KVF_CACHEDIR_SYNCED,   /* a re-announce was applied: blocks, swept */
	KVF_CACHEDIR_RESYNC,   /* the server asked for a re-announce (lost events) */
	KVF_CACHEDIR_REFUSED,  /* the server refused an event or REGISTER: err, msg */
};

typedef struct kvf_cachedir_status {
	int type;             /* enum kvf_cachedir_status_type */
	size_t server;        /* index into opts.servers */
	const char *addr;
	int err;              /* KVF_E_* or 0 */
	const char *msg;      /* detail, "" when none */
	uint64_t blocks, swept;
} kvf_cachedir_status;

typedef struct kvf_cachedir_opts {
	const char *const *servers; /* "host:port" of every replica (copied) */
	size_t nservers;

	/* Worker mode when worker_id is set (all strings copied). */
	const char *worker_id;
	int role;                    /* enum kvf_cachedir_role */
	const char *model;
	uint32_t block_size;         /* tokens per block; must match the model's */
	uint8_t tiers;               /* tier set the worker has (default: gpu) */
	uint64_t capacity_blocks[KVF_CACHEDIR_NTIERS];
	const char *http_endpoint;   /* where the worker serves HTTP, "host:port" */
	const char *fabric_endpoint; /* where it serves KV pulls */
	uint64_t epoch;              /* incarnation; 0 = derived from time and pid */
	void (*announce)(void *ud, kvf_cachedir_sync *s);
	void (*load)(void *ud, kvf_cachedir_load *out); /* NULL: zeros */

	void (*on_status)(void *ud, const kvf_cachedir_status *st); /* NULL ok */
	void *ud;

	uint32_t connect_timeout_ms; /* default 1000 */
	uint32_t reconnect_min_ms;   /* default 50 */
	uint32_t reconnect_max_ms;   /* default 2000 */
	uint32_t request_timeout_ms; /* default 1000 */
	uint32_t ping_interval_ms;   /* reader liveness check, default 1000 */
	uint32_t batch_keys;         /* keys per STORED frame of a re-announce, default 4096 */
	size_t max_queue_bytes;      /* per replica; events beyond are dropped and the
				      * replica resyncs (default 16 MiB) */
	int spread;                  /* reader: start at a random replica, not the first */
} kvf_cachedir_opts;

/* Zeroes o and fills the defaults above. */
void kvf_cachedir_opts_init(kvf_cachedir_opts *o);

/*
 * Creates the client and starts connecting. Returns 0 and *out, KVF_E_INVAL
 * (no servers, a worker without model or block size, a string over the
 * protocol's bounds) or KVF_E_NOMEM. The loop is borrowed.
 */
int kvf_cachedir_new(kvf_loop *loop, const kvf_cachedir_opts *o, kvf_cachedir **out);

/* Closes everything; pending lookup/workers callbacks run with
 * KVF_E_CANCELED first. NULL ok. */
void kvf_cachedir_destroy(kvf_cachedir *c);

/* ---- publishing (worker mode) ---- */

/* The worker now holds keys[0..n) in tier; parent (NULL ok) is the key of the
 * block before keys[0], passed to WATCH subscribers that build a tree.
 * Returns 0 (also when no replica is connected: the next re-announce covers
 * it), KVF_E_STATE (not a worker), KVF_E_INVAL, KVF_E_NOMEM. */
int kvf_cachedir_stored(kvf_cachedir *c, int tier, const kvf_blockkey *keys, size_t n,
			const kvf_blockkey *parent);
/* The worker no longer holds keys in tier (or KVF_CACHEDIR_ALL_TIERS). */
int kvf_cachedir_removed(kvf_cachedir *c, int tier, const kvf_blockkey *keys, size_t n);
/* The worker dropped every block. */
int kvf_cachedir_cleared(kvf_cachedir *c);
/* Sends a heartbeat with fresh load now (e.g. right after starting to drain). */
void kvf_cachedir_heartbeat_now(kvf_cachedir *c);
/* Leaves every replica now (graceful shutdown): its entries go at once
 * instead of at lease expiry. The client stops publishing. */
int kvf_cachedir_unregister(kvf_cachedir *c);

/* ---- reading ---- */

typedef struct kvf_cachedir_holder {
	const char *worker_id;
	int state;            /* enum kvf_cachedir_wstate */
	uint32_t prefix_gpu;  /* leading blocks held in gpu */
	uint32_t prefix_host; /* leading blocks held in gpu or host */
	uint32_t prefix_any;  /* leading blocks held in any tier */
} kvf_cachedir_holder;

typedef struct kvf_cachedir_lookup_result {
	size_t nkeys;    /* keys asked */
	size_t nmatched; /* longest prefix any listed worker holds */
	int warming;     /* the replica started recently: workers may still be re-announcing */
	size_t nholders; /* workers holding keys[0], longest prefix first */
	const kvf_cachedir_holder *holders;
	const char *server; /* replica that answered */
} kvf_cachedir_lookup_result;

/* status 0 and r, or KVF_E_NOTFOUND (no worker registered the model),
 * KVF_E_TIMEOUT, KVF_E_CANCELED (client destroyed), ... with r NULL. */
typedef void (*kvf_cachedir_lookup_cb)(void *ud, int status, const kvf_cachedir_lookup_result *r);

/*
 * Asks, for the chain keys[0..n) of model, which workers hold its longest
 * prefixes. One frame, one round trip, whatever n (up to the server's
 * max_keys_per_message). *req_out (NULL ok) identifies the request for
 * kvf_cachedir_cancel(). cb always runs exactly once unless canceled, never
 * before this function returns. Returns 0, KVF_E_INVAL, KVF_E_NOMEM.
 */
int kvf_cachedir_lookup(kvf_cachedir *c, const char *model, const kvf_blockkey *keys, size_t n,
			kvf_cachedir_lookup_cb cb, void *ud, uint64_t *req_out);

/* Forgets a pending request: its callback will not run. Unknown ids are ignored. */
void kvf_cachedir_cancel(kvf_cachedir *c, uint64_t req);

typedef struct kvf_cachedir_worker {
	const char *worker_id;
	int role;
	const char *model;
	uint32_t block_size;
	uint64_t epoch;
	int state;
	uint8_t tiers;
	uint64_t capacity_blocks[KVF_CACHEDIR_NTIERS];
	const char *http_endpoint, *fabric_endpoint;
	kvf_cachedir_load load;
	uint64_t blocks[KVF_CACHEDIR_NTIERS]; /* entries per tier in the directory */
	uint32_t heartbeat_age_ms;
} kvf_cachedir_worker;

typedef void (*kvf_cachedir_workers_cb)(void *ud, int status, const kvf_cachedir_worker *w, size_t n);

/* Lists the workers of model ("" or NULL: all models). */
int kvf_cachedir_workers(kvf_cachedir *c, const char *model, kvf_cachedir_workers_cb cb, void *ud,
			 uint64_t *req_out);

/* ---- watching ---- */

#define KVF_CACHEDIR_WATCH_WORKERS 0x01
#define KVF_CACHEDIR_WATCH_BLOCKS 0x02

enum kvf_cachedir_watch_kind {
	KVF_CACHEDIR_EV_SNAPSHOT_BEGIN = 1, /* forget the local copy: a full snapshot follows */
	KVF_CACHEDIR_EV_SNAPSHOT_END = 2,   /* the local copy is complete; live events follow */
	KVF_CACHEDIR_EV_WORKER = 3,         /* a worker joined or changed (load, state) */
	KVF_CACHEDIR_EV_WORKER_GONE = 4,    /* a worker left with all its blocks */
	KVF_CACHEDIR_EV_STORED = 5,
	KVF_CACHEDIR_EV_REMOVED = 6,
	KVF_CACHEDIR_EV_CLEARED = 7,        /* a worker dropped every block */
};

typedef struct kvf_cachedir_watch_event {
	int kind;
	uint64_t seq;             /* per subscription; a jump means events were lost
				   * (a SNAPSHOT_BEGIN follows) */
	uint64_t server_epoch;    /* SNAPSHOT_BEGIN: the replica's incarnation */
	int overflow;             /* SNAPSHOT_BEGIN: 1 when caused by falling behind */
	const kvf_cachedir_worker *worker; /* WORKER */
	const char *worker_id;    /* every kind about a worker */
	int gone_reason;          /* WORKER_GONE: 1 lease expired, 2 unregistered, 3 replaced */
	int tier;                 /* STORED / REMOVED (REMOVED: maybe KVF_CACHEDIR_ALL_TIERS) */
	const kvf_blockkey *keys; /* STORED / REMOVED */
	size_t nkeys;
	const kvf_blockkey *parent; /* STORED: NULL when not given */
} kvf_cachedir_watch_event;

typedef void (*kvf_cachedir_watch_cb)(void *ud, const kvf_cachedir_watch_event *ev);

/*
 * Subscribes to changes (flags: KVF_CACHEDIR_WATCH_*) of model ("" / NULL:
 * all). The stream starts with a snapshot, and starts over with a new
 * snapshot after a failover to another replica. One watch per client:
 * KVF_E_EXISTS if one is active.
 */
int kvf_cachedir_watch(kvf_cachedir *c, unsigned flags, const char *model, kvf_cachedir_watch_cb cb, void *ud);
void kvf_cachedir_unwatch(kvf_cachedir *c);

/* ---- introspection ---- */

typedef struct kvf_cachedir_stats {
	size_t servers_up;        /* replicas connected (reader) or registered (worker) */
	uint64_t events_sent;     /* event frames queued, summed over replicas */
	uint64_t events_dropped;  /* not queued because a replica's queue was full */
	uint64_t resyncs;         /* re-announces sent */
	uint64_t reconnects;      /* connection attempts after the first */
	uint64_t requests, timeouts, failovers;
} kvf_cachedir_stats;

void kvf_cachedir_get_stats(const kvf_cachedir *c, kvf_cachedir_stats *st);

#endif
