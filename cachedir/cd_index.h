/*
 * cd_index.h: the directory's index: block key -> holders (worker, tiers),
 * workers, models. Single-threaded; owned by the server's loop thread.
 *
 * Layout (memory per entry measured by bench/cachedir_bench.c, see
 * docs/cachedir.md):
 *   - one open-addressing table (linear probing, backward-shift deletion, no
 *     tombstones) of 32-byte slots: the 16-byte key and up to three holders
 *     inline, plus the index of an overflow array for blocks with more. A
 *     holder is a u32: worker index << 5 | seen | mark | tier bits, so a
 *     lookup touches one slot (half a cache line) per key;
 *   - per worker, the keys it holds (16 bytes each) in a list of chunks
 *     that double from 32 to 2048 keys (no realloc copies, so no heap
 *     fragmentation at 10M keys), append-only with lazy deletion and
 *     amortized compaction in place. Expiring a worker walks only its
 *     own keys; a re-announce (sync) marks what it re-lists and sweeps the
 *     rest with the same walk, so lookups keep answering during a sync;
 *   - workers are numbered by a compact u32 index, reused after removal.
 * Lookup of a chain costs one probe sequence per key plus one step per
 * holder of the keys it scans, and stops at the first key no candidate holds.
 */
#ifndef KVF_CD_INDEX_H
#define KVF_CD_INDEX_H

#include <stddef.h>
#include <stdint.h>

#include "cachedir/cd_proto.h"
#include "common/kvf_blockkey.h"

typedef struct cd_index cd_index;

typedef struct cd_model {
	char *name;
	uint32_t block_size;
	uint32_t nworkers;
} cd_model;

typedef struct cd_worker {
	/* ---- index-owned ---- */
	uint32_t idx;
	char *id, *http, *fabric;
	cd_model *model;
	uint8_t role, tiers;
	uint64_t capacity[CD_NTIERS];
	uint64_t epoch;
	uint64_t blocks[CD_NTIERS]; /* holder entries with tier t */
	uint64_t nheld;             /* keys held in any tier */
	struct cd_mchunk *mhead, *mtail; /* membership: keys, with stale entries */
	size_t nkeys, stale;
	uint8_t mark, syncing;
	/* ---- server-owned session state (cachedir/server.c) ---- */
	uint8_t state;          /* enum cd_wstate */
	cd_load load;
	uint64_t last_seq;      /* last event applied */
	uint8_t awaiting_sync;  /* RESYNC sent: events ignored until SYNC_BEGIN */
	uint64_t lease_deadline_ms, last_heartbeat_ms, registered_ms;
	uint64_t n_events, n_gaps, n_syncs;
	void *conn;             /* the connection publishing for it, or NULL */
} cd_worker;

/* One worker's answer to a chain lookup. */
typedef struct cd_match {
	cd_worker *w;
	uint32_t prefix[CD_NTIERS]; /* gpu <= host <= any */
} cd_match;

typedef struct cd_index_stats {
	uint64_t keys;                 /* distinct block keys */
	uint64_t holders;              /* (key, worker) entries */
	uint64_t tier_holders[CD_NTIERS];
	uint64_t table_slots;
	uint64_t overflow_arrays;      /* blocks with more than 3 holders */
	uint64_t bytes_table, bytes_overflow, bytes_members, bytes_other;
	uint32_t workers, models;
} cd_index_stats;

/* initial_keys sizes the table up front (0: small, grows by doubling). */
int cd_index_new(uint64_t initial_keys, cd_index **out);
void cd_index_destroy(cd_index *ix);

cd_model *cd_index_model(const cd_index *ix, const char *name);
size_t cd_index_nmodels(const cd_index *ix);
cd_model *cd_index_model_at(const cd_index *ix, size_t i);

cd_worker *cd_index_worker(const cd_index *ix, const char *id);
/* Worker slots 0..cd_index_worker_cap() - 1; NULL for a free slot. */
uint32_t cd_index_worker_cap(const cd_index *ix);
cd_worker *cd_index_worker_at(const cd_index *ix, uint32_t idx);

/*
 * Adds a worker from its REGISTER fields (the id must not exist). Creates
 * the model on its first worker; a block size differing from the model's is
 * KVF_E_INVAL with a message naming both. KVF_E_FULL past max_workers.
 */
int cd_index_worker_add(cd_index *ix, const cd_register *r, uint32_t max_workers, cd_worker **out);
/* Updates endpoints, role, tiers and capacity of a registered worker. */
int cd_index_worker_update(cd_index *ix, cd_worker *w, const cd_register *r);
/* Drops every block of w, then w itself (and its model with its last worker). */
void cd_index_worker_remove(cd_index *ix, cd_worker *w);

/*
 * w holds key in tier (0..2). Returns 1 when a new (key, worker) entry was
 * created, 0 when it existed (tier bits are merged), KVF_E_FULL when the
 * index already holds max_keys distinct keys (0: no bound), KVF_E_NOMEM.
 */
int cd_index_store(cd_index *ix, cd_worker *w, kvf_blockkey key, uint8_t tier, uint64_t max_keys);
/* w no longer holds key in the tiers of tier_mask (bit t = tier t). Returns
 * 1 when the (key, worker) entry disappeared, 0 otherwise. */
int cd_index_remove(cd_index *ix, cd_worker *w, kvf_blockkey key, uint8_t tier_mask);
/* Drops every block of w (CLEARED). Returns the entries dropped. */
uint64_t cd_index_clear(cd_index *ix, cd_worker *w);

/* Tier bits w holds key in (0: not held). */
uint8_t cd_index_tiers(const cd_index *ix, const cd_worker *w, kvf_blockkey key);

/*
 * Re-announce: after _sync_begin, every entry of w counts as unconfirmed
 * until cd_index_store() lists it again; _sync_end drops the unconfirmed
 * ones, calling swept(ud, key) for each (may be NULL), and returns how many.
 * A second _sync_begin before _sync_end restarts the sync.
 */
void cd_index_sync_begin(cd_index *ix, cd_worker *w);
uint64_t cd_index_sync_end(cd_index *ix, cd_worker *w, void (*swept)(void *ud, kvf_blockkey key), void *ud);

/*
 * Calls fn(ud, key, tiers) for every block w holds, each once. Returns the
 * count. Must not modify the index from fn.
 */
uint64_t cd_index_foreach(cd_index *ix, cd_worker *w,
			  void (*fn)(void *ud, kvf_blockkey key, uint8_t tiers), void *ud);

/*
 * For each worker of model m holding keys[0], the longest prefix of keys it
 * holds (per tier class, see cd_match). Workers in state CD_WS_DISCONNECTED
 * are skipped when skip_disconnected. Results in index-owned memory valid
 * until the next call: *out, *nout; *nmatched = the longest prefix any
 * listed worker holds. Sorted by prefix (any, host, gpu) descending, then id.
 * Returns 0 or KVF_E_NOMEM.
 */
int cd_index_lookup(cd_index *ix, const cd_model *m, const kvf_blockkey *keys, size_t n,
		    int skip_disconnected, const cd_match **out, size_t *nout, uint32_t *nmatched);
/* The same over keys in wire form. */
int cd_index_lookup_wire(cd_index *ix, const cd_model *m, const cd_keys *keys, int skip_disconnected,
			 const cd_match **out, size_t *nout, uint32_t *nmatched);

void cd_index_stats_get(const cd_index *ix, cd_index_stats *st);

#endif
