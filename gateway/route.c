/*
 * route.c: the routing decision (llm-d's endpoint picker in shape): filters
 * -> weighted scorers -> pick the maximum with a random tie-break, then the
 * P/D decision; and the session-affinity table.
 *
 * Scorers, each in [0, 1]:
 *   prefix   cached fraction of the prompt's blocks on the worker, each block
 *            weighted by its tier: (w_gpu*gpu + w_host*host_only +
 *            w_disk*disk_only) / n_blocks (llm-d-kv-cache's tier weights)
 *   queue    min-max normalised queue depth over the eligible workers, where
 *            depth = max(directory's waiting + running, requests this gateway
 *            has in flight there): the gateway's own count is fresh between
 *            heartbeats, the directory's sees other gateways
 *   kv       1 - KV pool usage (1 when the worker reports no pool)
 *   session  1 on the worker the x-kvf-session is pinned to
 * The picked worker maximises the weighted sum. round_robin and random
 * policies keep the filters and ignore the scores (benchmark baselines).
 *
 * P/D: with the decode worker picked, uncached = prompt tokens - tokens it
 * holds (any tier). When uncached >= pd_threshold_tokens and a prefill
 * worker passes the filters, the best prefill worker by prefix + queue is
 * picked too.
 *
 * Everything here is a pure function of its inputs (the time comes in
 * gw_route_in), so unit tests drive it with fixed tables.
 */
#include "gateway/gw.h"

#include <stdio.h>
#include <string.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"

const char *gw_filter_name(int f)
{
	switch (f) {
	case GW_F_OK: return "ok";
	case GW_F_NOT_ALIVE: return "not-alive";
	case GW_F_MODEL: return "model";
	case GW_F_ROLE: return "role";
	case GW_F_DRAINING: return "draining";
	case GW_F_BREAKER: return "breaker-open";
	case GW_F_CAP: return "at-cap";
	case GW_F_TRIED: return "tried";
	}
	return "?";
}

int gw_scorers_parse(const kvf_strlist *l, unsigned *out)
{
	unsigned m = 0;
	for (size_t i = 0; i < l->n; i++) {
		const char *s = l->v[i];
		if (!strcmp(s, "prefix"))
			m |= GW_SCORER_PREFIX;
		else if (!strcmp(s, "queue"))
			m |= GW_SCORER_QUEUE;
		else if (!strcmp(s, "kv"))
			m |= GW_SCORER_KV;
		else if (!strcmp(s, "session"))
			m |= GW_SCORER_SESSION;
		else
			return kvf_errf(KVF_E_CONFIG, "gateway.scorers: unknown scorer '%s' (prefix, queue, kv, session)", s);
	}
	*out = m;
	return 0;
}

static uint64_t xorshift(uint64_t *s)
{
	uint64_t x = *s ? *s : 0x9e3779b97f4a7c15ull;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*s = x;
	return x;
}

static int excluded(const gw_route_in *in, int widx)
{
	for (size_t i = 0; i < in->nexclude; i++)
		if (in->exclude[i] == widx)
			return 1;
	return 0;
}

static int filter(const gw_route_cfg *cfg, gw_worker *w, int widx, const gw_route_in *in, int role)
{
	if (w->state == GW_W_DISCONNECTED)
		return GW_F_NOT_ALIVE;
	if (in->model && in->model[0] && w->model[0] && strcmp(in->model, w->model))
		return GW_F_MODEL;
	if (!(w->role & role))
		return GW_F_ROLE;
	if (w->state == GW_W_DRAINING)
		return GW_F_DRAINING;
	if (excluded(in, widx))
		return GW_F_TRIED;
	if (cfg->worker_max_inflight && w->inflight >= cfg->worker_max_inflight)
		return GW_F_CAP;
	if (!gw_breaker_allows(w, in->now_ms))
		return GW_F_BREAKER;
	return GW_F_OK;
}

static double prefix_score(const gw_route_cfg *cfg, const gw_cand *c, uint32_t n_blocks)
{
	if (!n_blocks)
		return 0;
	/* apply_holders() guarantees gpu <= host <= any. */
	uint32_t gpu = c->gpu, host = c->host - c->gpu, disk = c->any - c->host;
	double s = (cfg->tier_gpu * gpu + cfg->tier_host * host + cfg->tier_disk * disk) / (double)n_blocks;
	return s > 1 ? 1 : s;
}

static double queue_depth(const gw_worker *w)
{
	double d = w->has_load ? (double)w->waiting + (double)w->running : 0;
	return d > (double)w->inflight ? d : (double)w->inflight;
}

/* Scores the eligible candidates c[0..n) of role; writes totals. */
static void score(const gw_route_cfg *cfg, const gw_workers *ws, gw_cand *c, size_t n, const gw_route_in *in,
		  int with_session, int with_kv)
{
	double qmin = 0, qmax = 0;
	int first = 1;
	for (size_t i = 0; i < n; i++) {
		if (c[i].filter)
			continue;
		double q = queue_depth(&ws->w[c[i].widx]);
		if (first || q < qmin)
			qmin = q;
		if (first || q > qmax)
			qmax = q;
		first = 0;
	}
	for (size_t i = 0; i < n; i++) {
		gw_cand *x = &c[i];
		if (x->filter)
			continue;
		const gw_worker *w = &ws->w[x->widx];
		x->s_prefix = prefix_score(cfg, x, in->n_blocks);
		double q = queue_depth(w);
		x->s_queue = qmax > qmin ? (qmax - q) / (qmax - qmin) : 1.0;
		x->s_kv = w->kv_total ? 1.0 - (double)w->kv_used / (double)w->kv_total : 1.0;
		if (x->s_kv < 0)
			x->s_kv = 0;
		x->s_session = with_session && in->session_widx == x->widx ? 1.0 : 0.0;
		double t = 0;
		if (cfg->scorers & GW_SCORER_PREFIX)
			t += cfg->w_prefix * x->s_prefix;
		if (cfg->scorers & GW_SCORER_QUEUE)
			t += cfg->w_queue * x->s_queue;
		if (with_kv && (cfg->scorers & GW_SCORER_KV))
			t += cfg->w_kv * x->s_kv;
		if (with_session && (cfg->scorers & GW_SCORER_SESSION))
			t += cfg->w_session * x->s_session;
		x->total = t;
	}
}

/* The best eligible candidate (random among ties), or -1. */
static int pick_best(gw_cand *c, size_t n, uint64_t *rng, int *tie)
{
	double best = 0;
	int nbest = 0;
	for (size_t i = 0; i < n; i++) {
		if (c[i].filter)
			continue;
		if (!nbest || c[i].total > best + 1e-9) {
			best = c[i].total;
			nbest = 1;
		} else if (c[i].total > best - 1e-9) {
			nbest++;
		}
	}
	if (!nbest)
		return -1;
	*tie = nbest > 1;
	uint64_t k = nbest > 1 ? xorshift(rng) % (uint64_t)nbest : 0;
	for (size_t i = 0; i < n; i++)
		if (!c[i].filter && c[i].total > best - 1e-9 && k-- == 0)
			return (int)i;
	return -1;
}

static int pick_nth_eligible(const gw_cand *c, size_t n, uint64_t k)
{
	for (size_t i = 0; i < n; i++)
		if (!c[i].filter && k-- == 0)
			return (int)i;
	return -1;
}

/* Fills the prefix lengths of candidates from the holders list. */
static void apply_holders(gw_workers *ws, gw_cand *c, size_t n, const gw_holder *h, size_t nh)
{
	for (size_t i = 0; i < ws->n; i++)
		ws->scratch[i] = -1;
	for (size_t i = 0; i < n; i++)
		ws->scratch[c[i].widx] = (int)i;
	for (size_t i = 0; i < nh; i++) {
		if (h[i].widx < 0 || (size_t)h[i].widx >= ws->n)
			continue;
		int ci = ws->scratch[h[i].widx];
		if (ci < 0)
			continue;
		c[ci].gpu = h[i].gpu;
		c[ci].host = h[i].host > h[i].gpu ? h[i].host : h[i].gpu;
		c[ci].any = h[i].any > c[ci].host ? h[i].any : c[ci].host;
	}
}

void gw_route_decide(const gw_route_cfg *cfg, gw_workers *ws, const gw_holder *holders, size_t nholders,
		     const gw_route_in *in, uint64_t *rng, uint64_t *rr, gw_decision *out)
{
	out->decode = -1;
	out->prefill = -1;
	out->cached_tokens = 0;
	out->uncached_tokens = in->n_tokens;
	out->tie = 0;
	out->reason[0] = '\0';
	out->ncand = 0;
	out->neligible = 0;
	out->nprefill_eligible = 0;

	/* Decode candidates: every worker slot, filtered. */
	gw_cand *c = out->cand;
	size_t n = 0;
	for (size_t i = 0; i < ws->n && n < GW_ROUTE_MAX_CANDS; i++) {
		gw_worker *w = &ws->w[i];
		if (!w->used)
			continue;
		memset(&c[n], 0, sizeof(c[n]));
		c[n].widx = (int)i;
		c[n].filter = filter(cfg, w, (int)i, in, GW_ROLE_DECODE);
		if (!c[n].filter)
			out->neligible++;
		n++;
	}
	out->ncand = n;
	apply_holders(ws, c, n, holders, nholders);
	if (!out->neligible) {
		snprintf(out->reason, sizeof(out->reason), "no-worker");
		return;
	}
	score(cfg, ws, c, n, in, 1, 1);

	int ci;
	switch (cfg->policy) {
	case GW_POLICY_ROUND_ROBIN:
		ci = pick_nth_eligible(c, n, (*rr)++ % out->neligible);
		snprintf(out->reason, sizeof(out->reason), "round-robin");
		break;
	case GW_POLICY_RANDOM:
		ci = pick_nth_eligible(c, n, xorshift(rng) % out->neligible);
		snprintf(out->reason, sizeof(out->reason), "random");
		break;
	default: {
		ci = pick_best(c, n, rng, &out->tie);
		const gw_cand *x = &c[ci];
		double pmin = 1, pmax = 0;
		for (size_t i = 0; i < n; i++) {
			if (c[i].filter)
				continue;
			if (c[i].s_prefix < pmin)
				pmin = c[i].s_prefix;
			if (c[i].s_prefix > pmax)
				pmax = c[i].s_prefix;
		}
		const char *why;
		if (out->neligible == 1)
			why = "only";
		else if ((cfg->scorers & GW_SCORER_SESSION) && cfg->w_session > 0 && x->s_session > 0)
			why = "session";
		else if ((cfg->scorers & GW_SCORER_PREFIX) && cfg->w_prefix > 0 && pmax > pmin &&
			 x->s_prefix >= pmax - 1e-9)
			why = "prefix";
		else
			why = "load";
		snprintf(out->reason, sizeof(out->reason), "%s%s", why, out->tie ? ";tie" : "");
		break;
	}
	}
	const gw_cand *x = &c[ci];
	out->decode = x->widx;
	uint64_t cached = (uint64_t)x->any * in->block_size;
	if (cached > in->n_tokens)
		cached = in->n_tokens;
	out->cached_tokens = (uint32_t)cached;
	out->uncached_tokens = in->n_tokens - (uint32_t)cached;
	size_t rl = strlen(out->reason);
	snprintf(out->reason + rl, sizeof(out->reason) - rl, ";hit=%u/%u", x->any, in->n_blocks);

	/* P/D: a prefill worker when the uncached part is long enough. */
	if (!cfg->pd_threshold_tokens || out->uncached_tokens < cfg->pd_threshold_tokens)
		return;
	gw_cand pc[GW_ROUTE_MAX_CANDS / 4];
	size_t pn = 0;
	for (size_t i = 0; i < ws->n && pn < sizeof(pc) / sizeof(pc[0]); i++) {
		gw_worker *w = &ws->w[i];
		if (!w->used || w->role != GW_ROLE_PREFILL)
			continue;
		memset(&pc[pn], 0, sizeof(pc[pn]));
		pc[pn].widx = (int)i;
		pc[pn].filter = filter(cfg, w, (int)i, in, GW_ROLE_PREFILL);
		if (!pc[pn].filter)
			out->nprefill_eligible++;
		pn++;
	}
	if (!out->nprefill_eligible)
		return;
	apply_holders(ws, pc, pn, holders, nholders);
	score(cfg, ws, pc, pn, in, 0, 0);
	int ptie = 0;
	int pi = pick_best(pc, pn, rng, &ptie);
	if (pi >= 0) {
		out->prefill = pc[pi].widx;
		rl = strlen(out->reason);
		snprintf(out->reason + rl, sizeof(out->reason) - rl, ";pd");
	}
}

/* ---- sessions: a direct-mapped table (affinity is a hint: a collision
 * just forgets the older session) ---- */

struct gw_session_slot {
	uint64_t hash;
	int widx;
	uint32_t gen;
	uint64_t expires_ms;
};

static uint64_t sess_hash(const char *s, size_t len)
{
	uint64_t h = 1469598103934665603ull;
	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 1099511628211ull;
	}
	return h | 1; /* 0 marks an empty slot */
}

int gw_sessions_init(gw_sessions *s, size_t slots, uint64_t ttl_ms)
{
	size_t n = 16;
	while (n < slots)
		n <<= 1;
	s->slots = kvf_calloc(n, sizeof(*s->slots));
	if (!s->slots)
		return KVF_E_NOMEM;
	s->mask = n - 1;
	s->ttl_ms = ttl_ms;
	return 0;
}

void gw_sessions_free(gw_sessions *s)
{
	kvf_free(s->slots);
	s->slots = NULL;
}

int gw_sessions_get(gw_sessions *s, const gw_workers *ws, const char *id, size_t len, uint64_t now_ms)
{
	if (!s->slots || !len)
		return -1;
	uint64_t h = sess_hash(id, len);
	struct gw_session_slot *e = &s->slots[h & s->mask];
	if (e->hash != h || now_ms >= e->expires_ms)
		return -1;
	if (e->widx < 0 || (size_t)e->widx >= ws->n || !ws->w[e->widx].used || ws->w[e->widx].gen != e->gen)
		return -1;
	return e->widx;
}

void gw_sessions_put(gw_sessions *s, const gw_workers *ws, const char *id, size_t len, int widx, uint64_t now_ms)
{
	if (!s->slots || !len || widx < 0)
		return;
	uint64_t h = sess_hash(id, len);
	struct gw_session_slot *e = &s->slots[h & s->mask];
	e->hash = h;
	e->widx = widx;
	e->gen = ws->w[widx].gen;
	e->expires_ms = now_ms + s->ttl_ms;
}
