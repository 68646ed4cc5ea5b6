/*
 * workers.c: the gateway's table of workers (from the static config lists
 * and from the directory), their load, and a circuit breaker per worker.
 *
 * Workers live in an array of slots whose indices are stable while a worker
 * exists, so routing decisions, sessions and the local index refer to
 * workers by index; a slot freed by a departed worker is reused only once
 * nothing is in flight there, and its generation changes so stale
 * references (sessions) are recognised.
 *
 * Breaker: closed until breaker_failures consecutive failures (connect
 * errors, timeouts, 5xx before the answer started), then open for
 * breaker_open_ms (doubling on each consecutive trip, up to 16x), then
 * half-open: one trial request at a time; a success closes it, a failure
 * opens it again.
 */
#include "gateway/gw.h"

#include <stdio.h>
#include <string.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"

void gw_workers_init(gw_workers *ws, uint32_t breaker_failures, uint64_t breaker_open_ms)
{
	memset(ws, 0, sizeof(*ws));
	ws->breaker_failures = breaker_failures ? breaker_failures : 3;
	ws->breaker_open_ms = breaker_open_ms ? breaker_open_ms : 5000;
}

void gw_workers_free(gw_workers *ws)
{
	kvf_free(ws->w);
	kvf_free(ws->scratch);
	memset(ws, 0, sizeof(*ws));
}

int gw_workers_find(const gw_workers *ws, const char *id)
{
	for (size_t i = 0; i < ws->n; i++)
		if (ws->w[i].used && !strcmp(ws->w[i].id, id))
			return (int)i;
	return -1;
}

static void copy_str(char *dst, const char *src)
{
	snprintf(dst, GW_ID_MAX, "%s", src ? src : "");
}

int gw_workers_upsert(gw_workers *ws, const char *id, const char *http, const char *model, int role,
		      int state, int source, uint64_t now_ms)
{
	int idx = gw_workers_find(ws, id);
	if (idx < 0) {
		for (size_t i = 0; i < ws->n; i++)
			if (!ws->w[i].used && ws->w[i].inflight == 0) {
				idx = (int)i;
				break;
			}
		if (idx < 0) {
			void *arr = ws->w;
			size_t cap = ws->cap;
			if (kvf_grow(&arr, &cap, ws->n + 1, sizeof(*ws->w)))
				return KVF_E_NOMEM;
			ws->w = arr;
			if (cap != ws->cap) {
				int *sc = kvf_realloc(ws->scratch, cap * sizeof(int));
				if (!sc)
					return KVF_E_NOMEM;
				ws->scratch = sc;
				ws->cap = cap;
			}
			idx = (int)ws->n++;
			memset(&ws->w[idx], 0, sizeof(ws->w[idx]));
		}
		gw_worker *w = &ws->w[idx];
		uint32_t gen = w->gen + 1;
		memset(w, 0, sizeof(*w));
		w->gen = gen;
		w->used = 1;
		copy_str(w->id, id);
		w->breaker = GW_BRK_CLOSED;
		w->last_change_ms = now_ms;
	}
	gw_worker *w = &ws->w[idx];
	copy_str(w->http, http);
	copy_str(w->model, model);
	w->role = role;
	if (w->state != state)
		w->last_change_ms = now_ms;
	w->state = state;
	w->source = source;
	return idx;
}

void gw_workers_remove(gw_workers *ws, int idx)
{
	if (idx < 0 || (size_t)idx >= ws->n)
		return;
	ws->w[idx].used = 0;
}

void gw_workers_remove_source(gw_workers *ws, int source)
{
	for (size_t i = 0; i < ws->n; i++)
		if (ws->w[i].used && ws->w[i].source == source)
			ws->w[i].used = 0;
}

void gw_workers_set_load(gw_workers *ws, int idx, uint32_t waiting, uint32_t running, uint64_t kv_used,
			 uint64_t kv_total)
{
	gw_worker *w = &ws->w[idx];
	w->has_load = 1;
	w->waiting = waiting;
	w->running = running;
	w->kv_used = kv_used;
	w->kv_total = kv_total;
}

int gw_breaker_allows(gw_worker *w, uint64_t now_ms)
{
	switch (w->breaker) {
	case GW_BRK_CLOSED:
		return 1;
	case GW_BRK_OPEN:
		if (now_ms < w->open_until_ms)
			return 0;
		w->breaker = GW_BRK_HALF_OPEN;
		w->half_open_trials = 0;
		w->last_change_ms = now_ms;
		/* fall through */
	case GW_BRK_HALF_OPEN:
		return w->half_open_trials == 0;
	}
	return 0;
}

void gw_breaker_on_send(gw_worker *w)
{
	w->sent++;
	if (w->breaker == GW_BRK_HALF_OPEN)
		w->half_open_trials++;
}

int gw_breaker_on_result(gw_workers *ws, gw_worker *w, int ok, uint64_t now_ms)
{
	if (w->breaker == GW_BRK_HALF_OPEN && w->half_open_trials)
		w->half_open_trials--;
	if (ok) {
		w->ok++;
		w->consec_failures = 0;
		if (w->breaker != GW_BRK_CLOSED) {
			w->breaker = GW_BRK_CLOSED;
			w->trips = 0;
			w->last_change_ms = now_ms;
		}
		return 0;
	}
	w->failures++;
	w->consec_failures++;
	if (w->breaker == GW_BRK_HALF_OPEN ||
	    (w->breaker == GW_BRK_CLOSED && w->consec_failures >= ws->breaker_failures)) {
		uint32_t shift = w->trips < 4 ? w->trips : 4;
		w->breaker = GW_BRK_OPEN;
		w->open_until_ms = now_ms + (ws->breaker_open_ms << shift);
		w->trips++;
		w->last_change_ms = now_ms;
		return 1;
	}
	return 0;
}

const char *gw_breaker_name(int state)
{
	switch (state) {
	case GW_BRK_CLOSED: return "closed";
	case GW_BRK_OPEN: return "open";
	case GW_BRK_HALF_OPEN: return "half-open";
	}
	return "?";
}

const char *gw_role_name(int role)
{
	switch (role) {
	case GW_ROLE_PREFILL: return "prefill";
	case GW_ROLE_DECODE: return "decode";
	case GW_ROLE_BOTH: return "both";
	}
	return "?";
}

const char *gw_wstate_name(int state)
{
	switch (state) {
	case GW_W_ACTIVE: return "active";
	case GW_W_DRAINING: return "draining";
	case GW_W_DISCONNECTED: return "disconnected";
	}
	return "?";
}
