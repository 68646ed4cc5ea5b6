/*
 * index.c: block key -> holders table, worker registry and chain lookup
 * (layout and costs in cd_index.h).
 *
 * Invariants:
 *   - a slot is in use iff h[0] != 0; its holders are packed: h[0..2] fill
 *     first, the overflow array only when all three are taken, and removing a
 *     holder moves the last one into the hole;
 *   - a (key, worker) entry appears once per slot; its tier bits are nonzero;
 *   - outside a sync every entry of w carries w's mark bit; a sync flips
 *     w->mark, so entries not re-listed keep the old bit and are swept;
 *   - every entry of w has its key somewhere in w's member chunks (maybe also stale
 *     copies and duplicates, counted by w->stale and dropped by compaction).
 * Slots move on deletion (backward shift), so nothing keeps a pointer to a
 * slot across a table change: member lists store keys, not positions.
 */
#include "cachedir/cd_index.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"
#include "common/kvf_time.h"

#define H_TIERS 0x7u
#define H_MARK 0x8u
#define H_SEEN 0x10u
#define H_SHIFT 5
#define H_IDX(h) ((h) >> H_SHIFT)
#define WORKERS_HARD_MAX (1u << 26)
#define INLINE_HOLDERS 3
#define MIN_BITS 10
#define COMPACT_MIN_STALE 1024

struct slot {
	uint64_t lo, hi;
	uint32_t h[INLINE_HOLDERS];
	uint32_t ext; /* 0 or overflow index + 1 */
};

struct ext {
	uint32_t n, cap;
	uint32_t h[];
};

/* Member chunks: all full except the last (mtail). */
struct cd_mchunk {
	struct cd_mchunk *next;
	uint32_t n, cap;
	kvf_blockkey k[];
};
#define MCHUNK_MIN 32
#define MCHUNK_MAX 2048
#define FOR_MEMBERS(w, c, i) \
	for (struct cd_mchunk *c = (w)->mhead; c; c = c->next) \
		for (uint32_t i = 0; i < c->n; i++)

struct lk {
	uint32_t stamp;
	uint32_t len[CD_NTIERS];
};

struct cd_index {
	struct slot *tab;
	uint64_t mask, used;
	unsigned bits;
	uint64_t seed;

	struct ext **exts;
	uint32_t exts_len, exts_cap;
	uint32_t *ext_free;
	uint32_t ext_free_len, ext_free_cap;
	uint64_t ext_live, ext_bytes;

	cd_worker **workers; /* by index */
	uint32_t wcap, whigh, nworkers;
	uint32_t *wfree;
	uint32_t wfree_len;
	uint32_t *idtab; /* worker index + 1, open addressing on the id */
	uint32_t idmask;

	cd_model **models;
	size_t nmodels, models_cap;

	uint64_t holders, tier_holders[CD_NTIERS];
	uint64_t member_bytes;

	struct lk *lk;
	uint32_t gen;
	uint32_t *touched;
	cd_match *matches;
};

static inline uint32_t mark_bit(const cd_worker *w)
{
	return w->mark ? H_MARK : 0;
}

/* ---- table ---- */

static inline uint64_t home(const cd_index *ix, uint64_t lo)
{
	return ((lo ^ ix->seed) * 0x9e3779b97f4a7c15ull) >> (64 - ix->bits);
}

static inline int slot_used(const struct slot *s)
{
	return s->h[0] != 0;
}

/* Slot index holding key, or -1. */
static int64_t find_slot(const cd_index *ix, kvf_blockkey k)
{
	uint64_t i = home(ix, k.lo);
	for (;;) {
		const struct slot *s = &ix->tab[i];
		if (!slot_used(s))
			return -1;
		if (s->lo == k.lo && s->hi == k.hi)
			return (int64_t)i;
		i = (i + 1) & ix->mask;
	}
}

/*
 * Tables of 2 MiB and more are mapped directly and marked for transparent
 * huge pages: a chain lookup touches one random slot per key, and with 4 KiB
 * pages each would also miss the TLB (a two-level walk under virtualization).
 * Smaller tables come from the allocator (and cmocka's leak checks).
 */
#define TABLE_MMAP_MIN (2u << 20)

static struct slot *table_mem(size_t bytes)
{
	if (bytes < TABLE_MMAP_MIN)
		return kvf_calloc(1, bytes);
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
#ifdef MADV_HUGEPAGE
	madvise(p, bytes, MADV_HUGEPAGE); /* a hint: fine if THP is off */
#endif
	return p;
}

static void table_mem_free(struct slot *t, size_t bytes)
{
	if (!t)
		return;
	if (bytes < TABLE_MMAP_MIN)
		kvf_free(t);
	else
		munmap(t, bytes);
}

static int table_alloc(cd_index *ix, unsigned bits)
{
	size_t bytes = ((size_t)1 << bits) * sizeof(struct slot);
	struct slot *t = table_mem(bytes);
	if (!t)
		return kvf_errf(KVF_E_NOMEM, "cachedir index: table of %llu slots",
				(unsigned long long)1 << bits);
	struct slot *old = ix->tab;
	uint64_t old_n = old ? ix->mask + 1 : 0;
	ix->tab = t;
	ix->bits = bits;
	ix->mask = ((uint64_t)1 << bits) - 1;
	for (uint64_t j = 0; j < old_n; j++) {
		if (!slot_used(&old[j]))
			continue;
		uint64_t i = home(ix, old[j].lo);
		while (slot_used(&t[i]))
			i = (i + 1) & ix->mask;
		t[i] = old[j];
	}
	table_mem_free(old, old_n * sizeof(struct slot));
	return 0;
}

/* Backward-shift deletion of slot i (Knuth 6.4 algorithm R). */
static void table_delete(cd_index *ix, uint64_t i)
{
	uint64_t j = i;
	for (;;) {
		j = (j + 1) & ix->mask;
		struct slot *s = &ix->tab[j];
		if (!slot_used(s))
			break;
		uint64_t k = home(ix, s->lo);
		/* Leave s in place when its home lies cyclically in (i, j]. */
		if (i <= j ? (i < k && k <= j) : (i < k || k <= j))
			continue;
		ix->tab[i] = *s;
		i = j;
	}
	memset(&ix->tab[i], 0, sizeof(ix->tab[i]));
	ix->used--;
}

/* ---- overflow arrays ---- */

static struct ext *slot_ext(const cd_index *ix, const struct slot *s)
{
	return s->ext ? ix->exts[s->ext - 1] : NULL;
}

static int ext_new(cd_index *ix, struct slot *s)
{
	/* Room for the id first, so no failure path has to give one back. */
	if (!ix->ext_free_len) {
		size_t cap = ix->exts_cap;
		if (kvf_grow((void **)&ix->exts, &cap, (size_t)ix->exts_len + 1, sizeof(*ix->exts)))
			return kvf_errf(KVF_E_NOMEM, "cachedir index: overflow table");
		ix->exts_cap = (uint32_t)cap;
	}
	struct ext *e = kvf_malloc(sizeof(*e) + 4 * sizeof(uint32_t));
	if (!e)
		return kvf_errf(KVF_E_NOMEM, "cachedir index: overflow array");
	uint32_t id = ix->ext_free_len ? ix->ext_free[--ix->ext_free_len] : ix->exts_len++;
	e->n = 0;
	e->cap = 4;
	ix->exts[id] = e;
	ix->ext_live++;
	ix->ext_bytes += sizeof(*e) + 4 * sizeof(uint32_t);
	s->ext = id + 1;
	return 0;
}

static void ext_release(cd_index *ix, struct slot *s)
{
	struct ext *e = slot_ext(ix, s);
	uint32_t id = s->ext - 1;
	ix->ext_bytes -= sizeof(*e) + e->cap * sizeof(uint32_t);
	kvf_free(e);
	ix->exts[id] = NULL;
	ix->ext_live--;
	s->ext = 0;
	size_t cap = ix->ext_free_cap;
	if (kvf_grow((void **)&ix->ext_free, &cap, (size_t)ix->ext_free_len + 1, sizeof(*ix->ext_free)) == 0) {
		ix->ext_free_cap = (uint32_t)cap;
		ix->ext_free[ix->ext_free_len++] = id;
	}
	/* else: the id is leaked, which costs one pointer; nothing breaks. */
}

/* ---- holders of a slot ---- */

static uint32_t *find_holder(const cd_index *ix, struct slot *s, uint32_t widx)
{
	for (int i = 0; i < INLINE_HOLDERS && s->h[i]; i++)
		if (H_IDX(s->h[i]) == widx)
			return &s->h[i];
	struct ext *e = slot_ext(ix, s);
	if (e)
		for (uint32_t i = 0; i < e->n; i++)
			if (H_IDX(e->h[i]) == widx)
				return &e->h[i];
	return NULL;
}

static int add_holder(cd_index *ix, struct slot *s, uint32_t h)
{
	for (int i = 0; i < INLINE_HOLDERS; i++)
		if (!s->h[i]) {
			s->h[i] = h;
			return 0;
		}
	if (!s->ext && ext_new(ix, s))
		return KVF_E_NOMEM;
	struct ext *e = slot_ext(ix, s);
	if (e->n == e->cap) {
		struct ext *ne = kvf_realloc(e, sizeof(*e) + 2 * e->cap * sizeof(uint32_t));
		if (!ne)
			return kvf_errf(KVF_E_NOMEM, "cachedir index: overflow array");
		ix->ext_bytes += ne->cap * sizeof(uint32_t);
		ne->cap *= 2;
		ix->exts[s->ext - 1] = e = ne;
	}
	e->h[e->n++] = h;
	return 0;
}

/* Removes the holder at hp from slot si; deletes the slot when it empties. */
static void del_holder(cd_index *ix, uint64_t si, uint32_t *hp)
{
	struct slot *s = &ix->tab[si];
	struct ext *e = slot_ext(ix, s);
	uint32_t *last;
	if (e && e->n)
		last = &e->h[e->n - 1];
	else if (s->h[2])
		last = &s->h[2];
	else if (s->h[1])
		last = &s->h[1];
	else
		last = &s->h[0];
	*hp = *last;
	*last = 0;
	if (e && last == &e->h[e->n - 1]) {
		e->n--;
		if (e->n == 0)
			ext_release(ix, s);
	}
	if (!slot_used(s))
		table_delete(ix, si);
}

static void count_tiers(cd_index *ix, cd_worker *w, uint32_t tiers, int sign)
{
	for (int t = 0; t < CD_NTIERS; t++)
		if (tiers & (1u << t)) {
			if (sign > 0) {
				w->blocks[t]++;
				ix->tier_holders[t]++;
			} else {
				w->blocks[t]--;
				ix->tier_holders[t]--;
			}
		}
}

/* Removes w's entry at hp of slot si and accounts for it. */
static void drop_entry(cd_index *ix, cd_worker *w, uint64_t si, uint32_t *hp)
{
	count_tiers(ix, w, *hp & H_TIERS, -1);
	del_holder(ix, si, hp);
	w->nheld--;
	ix->holders--;
}

/* ---- members ---- */

static int member_add(cd_index *ix, cd_worker *w, kvf_blockkey k)
{
	struct cd_mchunk *t = w->mtail;
	if (!t || t->n == t->cap) {
		uint32_t cap = t ? (t->cap * 2 > MCHUNK_MAX ? MCHUNK_MAX : t->cap * 2) : MCHUNK_MIN;
		struct cd_mchunk *c = kvf_malloc(sizeof(*c) + cap * sizeof(kvf_blockkey));
		if (!c)
			return kvf_errf(KVF_E_NOMEM, "cachedir index: member list of %s", w->id);
		c->next = NULL;
		c->n = 0;
		c->cap = cap;
		if (t)
			t->next = c;
		else
			w->mhead = c;
		w->mtail = t = c;
		ix->member_bytes += sizeof(*c) + cap * sizeof(kvf_blockkey);
	}
	t->k[t->n++] = k;
	w->nkeys++;
	return 0;
}

/* Undoes the last member_add (its chunk stays). */
static void member_pop(cd_worker *w)
{
	w->mtail->n--;
	w->nkeys--;
}

/* Frees the chunks after `last` (all of them when last is NULL). */
static void members_truncate(cd_index *ix, cd_worker *w, struct cd_mchunk *last)
{
	struct cd_mchunk *c = last ? last->next : w->mhead;
	while (c) {
		struct cd_mchunk *next = c->next;
		ix->member_bytes -= sizeof(*c) + c->cap * sizeof(kvf_blockkey);
		kvf_free(c);
		c = next;
	}
	if (last)
		last->next = NULL;
	else
		w->mhead = NULL;
	w->mtail = last;
}

/*
 * Walks w's member list once: drops stale keys and duplicates, and with
 * sweep also the entries whose mark is not w's (reported through swept).
 * Kept keys are moved down in place (the writer never passes the reader;
 * every chunk before the last is full), the emptied chunks freed. Then
 * clears the SEEN bits it set. Returns the number swept.
 */
static uint64_t members_walk(cd_index *ix, cd_worker *w, int sweep, void (*swept)(void *, kvf_blockkey),
			     void *ud)
{
	struct cd_mchunk *wc = w->mhead;
	uint32_t wi = 0;
	size_t out = 0;
	uint64_t nswept = 0;
	FOR_MEMBERS(w, rc, ri) {
		kvf_blockkey k = rc->k[ri];
		int64_t si = find_slot(ix, k);
		if (si < 0)
			continue;
		uint32_t *hp = find_holder(ix, &ix->tab[si], w->idx);
		if (!hp)
			continue;
		if (sweep && (*hp & H_MARK) != mark_bit(w)) {
			drop_entry(ix, w, (uint64_t)si, hp);
			nswept++;
			if (swept)
				swept(ud, k);
			continue;
		}
		if (*hp & H_SEEN)
			continue;
		*hp |= H_SEEN;
		if (wi == wc->cap) { /* wc is full (it was already): move on */
			wc = wc->next;
			wi = 0;
		}
		wc->k[wi++] = k;
		out++;
	}
	if (out == 0) {
		members_truncate(ix, w, NULL);
	} else {
		wc->n = wi;
		members_truncate(ix, w, wc);
	}
	w->nkeys = out;
	w->stale = 0;
	FOR_MEMBERS(w, c, i) {
		int64_t si = find_slot(ix, c->k[i]);
		uint32_t *hp = find_holder(ix, &ix->tab[si], w->idx);
		*hp &= ~H_SEEN;
	}
	return nswept;
}

/* ---- models and worker ids ---- */

static uint32_t id_hash(const char *s)
{
	uint32_t h = 2166136261u;
	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 16777619u;
	return h;
}

static int idtab_insert(cd_index *ix, uint32_t widx);

static int idtab_rebuild(cd_index *ix, uint32_t nslots)
{
	uint32_t *t = kvf_calloc(nslots, sizeof(*t));
	if (!t)
		return kvf_errf(KVF_E_NOMEM, "cachedir index: worker id table");
	kvf_free(ix->idtab);
	ix->idtab = t;
	ix->idmask = nslots - 1;
	for (uint32_t i = 0; i < ix->whigh; i++)
		if (ix->workers[i])
			idtab_insert(ix, i);
	return 0;
}

static int idtab_insert(cd_index *ix, uint32_t widx)
{
	uint32_t i = id_hash(ix->workers[widx]->id) & ix->idmask;
	while (ix->idtab[i])
		i = (i + 1) & ix->idmask;
	ix->idtab[i] = widx + 1;
	return 0;
}

static void idtab_delete(cd_index *ix, uint32_t widx)
{
	uint32_t i = id_hash(ix->workers[widx]->id) & ix->idmask;
	while (ix->idtab[i] != widx + 1)
		i = (i + 1) & ix->idmask;
	uint32_t j = i;
	for (;;) {
		j = (j + 1) & ix->idmask;
		if (!ix->idtab[j])
			break;
		uint32_t k = id_hash(ix->workers[ix->idtab[j] - 1]->id) & ix->idmask;
		if (i <= j ? (i < k && k <= j) : (i < k || k <= j))
			continue;
		ix->idtab[i] = ix->idtab[j];
		i = j;
	}
	ix->idtab[i] = 0;
}

cd_worker *cd_index_worker(const cd_index *ix, const char *id)
{
	uint32_t i = id_hash(id) & ix->idmask;
	while (ix->idtab[i]) {
		cd_worker *w = ix->workers[ix->idtab[i] - 1];
		if (strcmp(w->id, id) == 0)
			return w;
		i = (i + 1) & ix->idmask;
	}
	return NULL;
}

uint32_t cd_index_worker_cap(const cd_index *ix)
{
	return ix->whigh;
}

cd_worker *cd_index_worker_at(const cd_index *ix, uint32_t idx)
{
	return idx < ix->whigh ? ix->workers[idx] : NULL;
}

cd_model *cd_index_model(const cd_index *ix, const char *name)
{
	for (size_t i = 0; i < ix->nmodels; i++)
		if (strcmp(ix->models[i]->name, name) == 0)
			return ix->models[i];
	return NULL;
}

size_t cd_index_nmodels(const cd_index *ix)
{
	return ix->nmodels;
}

cd_model *cd_index_model_at(const cd_index *ix, size_t i)
{
	return i < ix->nmodels ? ix->models[i] : NULL;
}

static void model_unref(cd_index *ix, cd_model *m)
{
	if (--m->nworkers)
		return;
	for (size_t i = 0; i < ix->nmodels; i++)
		if (ix->models[i] == m) {
			ix->models[i] = ix->models[--ix->nmodels];
			break;
		}
	kvf_free(m->name);
	kvf_free(m);
}

/* ---- lifecycle ---- */

int cd_index_new(uint64_t initial_keys, cd_index **out)
{
	cd_index *ix = kvf_calloc(1, sizeof(*ix));
	if (!ix)
		return kvf_errf(KVF_E_NOMEM, "cachedir index");
	if (getrandom(&ix->seed, sizeof(ix->seed), GRND_NONBLOCK) != sizeof(ix->seed))
		ix->seed = kvf_now_ns() * 0x2545f4914f6cdd1dull;
	unsigned bits = MIN_BITS;
	while (bits < 40 && (((uint64_t)1 << bits) * 3) / 4 < initial_keys)
		bits++;
	int rc = table_alloc(ix, bits);
	if (rc)
		goto err_free;
	rc = idtab_rebuild(ix, 64);
	if (rc)
		goto err_table;
	*out = ix;
	return 0;

err_table:
	table_mem_free(ix->tab, (ix->mask + 1) * sizeof(struct slot));
err_free:
	kvf_free(ix);
	return rc;
}

void cd_index_destroy(cd_index *ix)
{
	if (!ix)
		return;
	for (uint32_t i = 0; i < ix->whigh; i++) {
		cd_worker *w = ix->workers[i];
		if (!w)
			continue;
		members_truncate(ix, w, NULL);
		kvf_free(w->id);
		kvf_free(w->http);
		kvf_free(w->fabric);
		kvf_free(w);
	}
	for (size_t i = 0; i < ix->nmodels; i++) {
		kvf_free(ix->models[i]->name);
		kvf_free(ix->models[i]);
	}
	for (uint32_t i = 0; i < ix->exts_len; i++)
		kvf_free(ix->exts[i]);
	kvf_free(ix->exts);
	kvf_free(ix->ext_free);
	kvf_free(ix->models);
	kvf_free(ix->workers);
	kvf_free(ix->wfree);
	kvf_free(ix->idtab);
	kvf_free(ix->lk);
	kvf_free(ix->touched);
	kvf_free(ix->matches);
	table_mem_free(ix->tab, (ix->mask + 1) * sizeof(struct slot));
	kvf_free(ix);
}

/* Grows the per-worker arrays (registry, free list, lookup scratch) to n. */
static int workers_grow(cd_index *ix, uint32_t n)
{
	if (n <= ix->wcap)
		return 0;
	uint32_t ncap = ix->wcap ? ix->wcap : 16;
	while (ncap < n)
		ncap *= 2;
	cd_worker **wk = kvf_realloc(ix->workers, ncap * sizeof(*wk));
	if (!wk)
		return kvf_errf(KVF_E_NOMEM, "cachedir index: workers");
	ix->workers = wk;
	memset(wk + ix->wcap, 0, (ncap - ix->wcap) * sizeof(*wk));
	uint32_t *fr = kvf_realloc(ix->wfree, ncap * sizeof(*fr));
	if (!fr)
		return kvf_errf(KVF_E_NOMEM, "cachedir index: workers");
	ix->wfree = fr;
	struct lk *lk = kvf_realloc(ix->lk, ncap * sizeof(*lk));
	if (!lk)
		return kvf_errf(KVF_E_NOMEM, "cachedir index: lookup scratch");
	ix->lk = lk;
	memset(lk + ix->wcap, 0, (ncap - ix->wcap) * sizeof(*lk));
	uint32_t *tc = kvf_realloc(ix->touched, ncap * sizeof(*tc));
	if (!tc)
		return kvf_errf(KVF_E_NOMEM, "cachedir index: lookup scratch");
	ix->touched = tc;
	cd_match *mt = kvf_realloc(ix->matches, ncap * sizeof(*mt));
	if (!mt)
		return kvf_errf(KVF_E_NOMEM, "cachedir index: lookup scratch");
	ix->matches = mt;
	ix->wcap = ncap;
	return 0;
}

static int set_str(char **dst, const char *src)
{
	char *s = kvf_strdup(src);
	if (!s)
		return kvf_errf(KVF_E_NOMEM, "cachedir index: string");
	kvf_free(*dst);
	*dst = s;
	return 0;
}

int cd_index_worker_update(cd_index *ix, cd_worker *w, const cd_register *r)
{
	(void)ix;
	if (set_str(&w->http, r->http) || set_str(&w->fabric, r->fabric))
		return KVF_E_NOMEM;
	w->role = r->role;
	w->tiers = r->tiers;
	memcpy(w->capacity, r->capacity, sizeof(w->capacity));
	return 0;
}

int cd_index_worker_add(cd_index *ix, const cd_register *r, uint32_t max_workers, cd_worker **out)
{
	if (cd_index_worker(ix, r->worker_id))
		return kvf_errf(KVF_E_EXISTS, "cachedir: worker '%s' already registered", r->worker_id);
	if (max_workers == 0 || max_workers > WORKERS_HARD_MAX)
		max_workers = WORKERS_HARD_MAX;
	if (ix->nworkers >= max_workers)
		return kvf_errf(KVF_E_FULL, "cachedir: %u workers registered, the limit (cachedir.max_workers)",
				ix->nworkers);
	cd_model *m = cd_index_model(ix, r->model);
	if (m && m->block_size != r->block_size)
		return kvf_errf(KVF_E_INVAL,
				"cachedir: model '%s' uses block size %u in this cluster, worker '%s' registered %u",
				r->model, m->block_size, r->worker_id, r->block_size);
	int rc = workers_grow(ix, ix->whigh + 1);
	if (rc)
		return rc;
	/* The id table stays at most half full. */
	if ((ix->nworkers + 1) * 2 > ix->idmask + 1 && (rc = idtab_rebuild(ix, (ix->idmask + 1) * 2)))
		return rc;
	int new_model = 0;
	if (!m) {
		if (kvf_grow((void **)&ix->models, &ix->models_cap, ix->nmodels + 1, sizeof(*ix->models)))
			return kvf_errf(KVF_E_NOMEM, "cachedir index: models");
		m = kvf_calloc(1, sizeof(*m));
		if (!m || !(m->name = kvf_strdup(r->model))) {
			kvf_free(m);
			return kvf_errf(KVF_E_NOMEM, "cachedir index: model");
		}
		m->block_size = r->block_size;
		ix->models[ix->nmodels++] = m;
		new_model = 1;
	}
	cd_worker *w = kvf_calloc(1, sizeof(*w));
	if (!w || !(w->id = kvf_strdup(r->worker_id)) || cd_index_worker_update(ix, w, r)) {
		if (w) {
			kvf_free(w->id);
			kvf_free(w->http);
			kvf_free(w->fabric);
		}
		kvf_free(w);
		if (new_model) {
			m->nworkers = 1;
			model_unref(ix, m);
		}
		return kvf_errf(KVF_E_NOMEM, "cachedir index: worker");
	}
	w->idx = ix->wfree_len ? ix->wfree[--ix->wfree_len] : ix->whigh++;
	w->model = m;
	w->epoch = r->epoch;
	w->state = CD_WS_ACTIVE;
	m->nworkers++;
	ix->workers[w->idx] = w;
	ix->nworkers++;
	idtab_insert(ix, w->idx);
	*out = w;
	return 0;
}

uint64_t cd_index_clear(cd_index *ix, cd_worker *w)
{
	uint64_t n = 0;
	FOR_MEMBERS(w, c, i) {
		int64_t si = find_slot(ix, c->k[i]);
		if (si < 0)
			continue;
		uint32_t *hp = find_holder(ix, &ix->tab[si], w->idx);
		if (!hp)
			continue;
		drop_entry(ix, w, (uint64_t)si, hp);
		n++;
	}
	members_truncate(ix, w, NULL);
	w->nkeys = 0;
	w->stale = 0;
	return n;
}

void cd_index_worker_remove(cd_index *ix, cd_worker *w)
{
	if (!w)
		return;
	cd_index_clear(ix, w);
	idtab_delete(ix, w->idx);
	ix->workers[w->idx] = NULL;
	ix->wfree[ix->wfree_len++] = w->idx;
	ix->nworkers--;
	model_unref(ix, w->model);
	kvf_free(w->id);
	kvf_free(w->http);
	kvf_free(w->fabric);
	kvf_free(w);
}

/* ---- entries ---- */

int cd_index_store(cd_index *ix, cd_worker *w, kvf_blockkey key, uint8_t tier, uint64_t max_keys)
{
	uint32_t tbit = 1u << tier;
	int64_t si = find_slot(ix, key);
	if (si >= 0) {
		uint32_t *hp = find_holder(ix, &ix->tab[si], w->idx);
		if (hp) {
			if (!(*hp & tbit))
				count_tiers(ix, w, tbit, +1);
			*hp = (*hp & ~H_MARK) | tbit | mark_bit(w);
			return 0;
		}
	} else {
		if (max_keys && ix->used >= max_keys)
			return kvf_errf(KVF_E_FULL, "cachedir: index holds %llu keys, the limit (cachedir.max_blocks)",
					(unsigned long long)ix->used);
		if ((ix->used + 1) * 4 > (ix->mask + 1) * 3) {
			int rc = table_alloc(ix, ix->bits + 1);
			if (rc)
				return rc;
		}
	}
	/* Reserve the member slot first so a failure leaves the table as it was. */
	int rc = member_add(ix, w, key);
	if (rc)
		return rc;
	struct slot *s;
	if (si < 0) {
		uint64_t i = home(ix, key.lo);
		while (slot_used(&ix->tab[i]))
			i = (i + 1) & ix->mask;
		s = &ix->tab[i];
		s->lo = key.lo;
		s->hi = key.hi;
		s->ext = 0;
		ix->used++;
	} else {
		s = &ix->tab[si];
	}
	if (add_holder(ix, s, (w->idx << H_SHIFT) | tbit | mark_bit(w))) {
		member_pop(w);
		return KVF_E_NOMEM; /* only possible on an existing, full slot: nothing to undo */
	}
	count_tiers(ix, w, tbit, +1);
	w->nheld++;
	ix->holders++;
	return 1;
}

int cd_index_remove(cd_index *ix, cd_worker *w, kvf_blockkey key, uint8_t tier_mask)
{
	int64_t si = find_slot(ix, key);
	if (si < 0)
		return 0;
	uint32_t *hp = find_holder(ix, &ix->tab[si], w->idx);
	if (!hp)
		return 0;
	uint32_t gone = *hp & tier_mask & H_TIERS;
	if (!gone)
		return 0;
	if ((*hp & H_TIERS) != gone) {
		count_tiers(ix, w, gone, -1);
		*hp &= ~gone;
		return 0;
	}
	drop_entry(ix, w, (uint64_t)si, hp);
	w->stale++;
	if (!w->syncing && w->stale > COMPACT_MIN_STALE && w->stale > w->nheld)
		members_walk(ix, w, 0, NULL, NULL);
	return 1;
}

uint8_t cd_index_tiers(const cd_index *ix, const cd_worker *w, kvf_blockkey key)
{
	int64_t si = find_slot(ix, key);
	if (si < 0)
		return 0;
	uint32_t *hp = find_holder(ix, &ix->tab[si], w->idx);
	return hp ? (uint8_t)(*hp & H_TIERS) : 0;
}

void cd_index_sync_begin(cd_index *ix, cd_worker *w)
{
	if (!w->syncing) {
		w->mark ^= 1; /* every entry now carries the other bit: unconfirmed */
		w->syncing = 1;
		return;
	}
	/* Restarted sync: unconfirm what the aborted one listed. */
	uint32_t unconfirmed = w->mark ? 0 : H_MARK;
	FOR_MEMBERS(w, c, i) {
		int64_t si = find_slot(ix, c->k[i]);
		if (si < 0)
			continue;
		uint32_t *hp = find_holder(ix, &ix->tab[si], w->idx);
		if (hp)
			*hp = (*hp & ~H_MARK) | unconfirmed;
	}
}

uint64_t cd_index_sync_end(cd_index *ix, cd_worker *w, void (*swept)(void *ud, kvf_blockkey key), void *ud)
{
	if (!w->syncing)
		return 0;
	uint64_t n = members_walk(ix, w, 1, swept, ud);
	w->syncing = 0;
	return n;
}

uint64_t cd_index_foreach(cd_index *ix, cd_worker *w, void (*fn)(void *ud, kvf_blockkey key, uint8_t tiers),
			  void *ud)
{
	uint64_t n = 0;
	FOR_MEMBERS(w, c, i) {
		int64_t si = find_slot(ix, c->k[i]);
		if (si < 0)
			continue;
		uint32_t *hp = find_holder(ix, &ix->tab[si], w->idx);
		if (!hp || (*hp & H_SEEN))
			continue;
		*hp |= H_SEEN;
		fn(ud, c->k[i], (uint8_t)(*hp & H_TIERS));
		n++;
	}
	FOR_MEMBERS(w, c, i) {
		int64_t si = find_slot(ix, c->k[i]);
		if (si < 0)
			continue;
		uint32_t *hp = find_holder(ix, &ix->tab[si], w->idx);
		if (hp)
			*hp &= ~H_SEEN;
	}
	return n;
}

/* ---- lookup ---- */

static int match_cmp(const void *a, const void *b)
{
	const cd_match *x = a, *y = b;
	for (int t = CD_NTIERS - 1; t >= 0; t--)
		if (x->prefix[t] != y->prefix[t])
			return x->prefix[t] > y->prefix[t] ? -1 : 1;
	return strcmp(x->w->id, y->w->id);
}

/* One key of the chain: advances the runs of the workers holding it.
 * Returns how many runs reached i + 1. */
static inline uint32_t lookup_step(cd_index *ix, const cd_model *m, const struct slot *s, uint32_t i,
				   int skip_disc, uint32_t *ntouched)
{
	uint32_t alive = 0;
	struct ext *e = slot_ext(ix, s);
	uint32_t n = e ? INLINE_HOLDERS + e->n : INLINE_HOLDERS;
	for (uint32_t j = 0; j < n; j++) {
		uint32_t h = j < INLINE_HOLDERS ? s->h[j] : e->h[j - INLINE_HOLDERS];
		if (!h)
			break;
		uint32_t widx = H_IDX(h);
		struct lk *st = &ix->lk[widx];
		if (i == 0) {
			const cd_worker *w = ix->workers[widx];
			if (w->model != m || (skip_disc && w->state == CD_WS_DISCONNECTED))
				continue;
			st->stamp = ix->gen;
			st->len[0] = st->len[1] = st->len[2] = 0;
			ix->touched[(*ntouched)++] = widx;
		} else if (st->stamp != ix->gen || st->len[2] != i) {
			continue;
		}
		st->len[2] = i + 1;
		if ((h & 1u) && st->len[0] == i)
			st->len[0] = i + 1;
		if ((h & 3u) && st->len[1] == i)
			st->len[1] = i + 1;
		alive++;
	}
	return alive;
}

static int lookup_finish(cd_index *ix, uint32_t ntouched, const cd_match **out, size_t *nout)
{
	for (uint32_t j = 0; j < ntouched; j++) {
		uint32_t widx = ix->touched[j];
		cd_match *mt = &ix->matches[j];
		mt->w = ix->workers[widx];
		memcpy(mt->prefix, ix->lk[widx].len, sizeof(mt->prefix));
	}
	if (ntouched > 1)
		qsort(ix->matches, ntouched, sizeof(*ix->matches), match_cmp);
	*out = ix->matches;
	*nout = ntouched;
	return 0;
}

static void lookup_start(cd_index *ix)
{
	if (++ix->gen == 0) { /* wrapped: old stamps could match again */
		for (uint32_t i = 0; i < ix->wcap; i++)
			ix->lk[i].stamp = 0;
		ix->gen = 1;
	}
}

/* The slots of a chain's keys are scattered over a table far larger than the
 * caches: ask for the home slot of the key PREFETCH_AHEAD steps ahead, so the
 * misses of a long chain overlap instead of adding up. */
#define PREFETCH_AHEAD 8

static inline void prefetch_key(const cd_index *ix, uint64_t lo)
{
	__builtin_prefetch(&ix->tab[home(ix, lo)]);
}

int cd_index_lookup(cd_index *ix, const cd_model *m, const kvf_blockkey *keys, size_t n, int skip_disconnected,
		    const cd_match **out, size_t *nout, uint32_t *nmatched)
{
	lookup_start(ix);
	uint32_t ntouched = 0, i;
	for (i = 0; i < n && i < PREFETCH_AHEAD; i++)
		prefetch_key(ix, keys[i].lo);
	for (i = 0; i < n; i++) {
		if (i + PREFETCH_AHEAD < n)
			prefetch_key(ix, keys[i + PREFETCH_AHEAD].lo);
		int64_t si = find_slot(ix, keys[i]);
		if (si < 0 || lookup_step(ix, m, &ix->tab[si], i, skip_disconnected, &ntouched) == 0)
			break;
	}
	*nmatched = i;
	return lookup_finish(ix, ntouched, out, nout);
}

int cd_index_lookup_wire(cd_index *ix, const cd_model *m, const cd_keys *keys, int skip_disconnected,
			 const cd_match **out, size_t *nout, uint32_t *nmatched)
{
	lookup_start(ix);
	uint32_t ntouched = 0, i;
	for (i = 0; i < keys->n && i < PREFETCH_AHEAD; i++)
		prefetch_key(ix, cd_le64(keys->p + (size_t)i * CD_KEY_BYTES));
	for (i = 0; i < keys->n; i++) {
		if (i + PREFETCH_AHEAD < keys->n)
			prefetch_key(ix, cd_le64(keys->p + (size_t)(i + PREFETCH_AHEAD) * CD_KEY_BYTES));
		int64_t si = find_slot(ix, cd_keys_get(keys, i));
		if (si < 0 || lookup_step(ix, m, &ix->tab[si], i, skip_disconnected, &ntouched) == 0)
			break;
	}
	*nmatched = i;
	return lookup_finish(ix, ntouched, out, nout);
}

void cd_index_stats_get(const cd_index *ix, cd_index_stats *st)
{
	memset(st, 0, sizeof(*st));
	st->keys = ix->used;
	st->holders = ix->holders;
	memcpy(st->tier_holders, ix->tier_holders, sizeof(st->tier_holders));
	st->table_slots = ix->mask + 1;
	st->overflow_arrays = ix->ext_live;
	st->bytes_table = (ix->mask + 1) * sizeof(struct slot);
	st->bytes_overflow = ix->ext_bytes + ix->exts_cap * sizeof(*ix->exts) + ix->ext_free_cap * sizeof(uint32_t);
	st->bytes_members = ix->member_bytes;
	st->bytes_other = (uint64_t)ix->wcap * (sizeof(cd_worker *) + sizeof(uint32_t) * 2 + sizeof(struct lk) +
						sizeof(cd_match)) +
			  (uint64_t)ix->nworkers * sizeof(cd_worker) + (uint64_t)(ix->idmask + 1) * sizeof(uint32_t);
	st->workers = ix->nworkers;
	st->models = (uint32_t)ix->nmodels;
}
