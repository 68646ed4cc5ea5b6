/*
 * dir.c: a worker's life in the cluster directory (cachedir/).
 *
 * The worker registers with every cachedir replica named in
 * cluster.cachedir, publishes each block that enters or leaves its prefix
 * cache (the engine thread reports them with each step's batch), heartbeats
 * its load, and re-announces everything it holds whenever a replica asks
 * (after a reconnect, a restart of the replica, or lost events). The
 * re-announce has to answer synchronously on the loop thread, so the loop
 * thread keeps a mirror of the cached keys (a hash set), updated from the
 * same events in the same order.
 */
#include "worker/internal.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"
#include "common/kvf_log.h"
#include "common/kvf_net.h"

/* ---- the mirror: an open-addressing set of block keys ---- */

static size_t slot_of(const keyset *s, kvf_blockkey k)
{
	return (size_t)(k.lo ^ (k.hi >> 7)) & (s->cap - 1);
}

static int set_grow(keyset *s)
{
	size_t ncap = s->cap ? s->cap * 2 : 1024;
	kvf_blockkey *nk = kvf_calloc(ncap, sizeof(*nk));
	uint8_t *nu = kvf_calloc(ncap, 1);
	if (!nk || !nu) {
		kvf_free(nk);
		kvf_free(nu);
		return KVF_E_NOMEM;
	}
	keyset old = *s;
	s->keys = nk;
	s->used = nu;
	s->cap = ncap;
	s->n = 0;
	for (size_t i = 0; i < old.cap; i++)
		if (old.used[i])
			keyset_add(s, old.keys[i]);
	kvf_free(old.keys);
	kvf_free(old.used);
	return 0;
}

int keyset_add(keyset *s, kvf_blockkey k)
{
	if ((s->n + 1) * 2 > s->cap && set_grow(s))
		return KVF_E_NOMEM;
	for (size_t i = slot_of(s, k);; i = (i + 1) & (s->cap - 1)) {
		if (!s->used[i]) {
			s->used[i] = 1;
			s->keys[i] = k;
			s->n++;
			return 0;
		}
		if (kvf_blockkey_eq(s->keys[i], k))
			return 0;
	}
}

int keyset_has(const keyset *s, kvf_blockkey k)
{
	if (!s->cap)
		return 0;
	for (size_t i = slot_of(s, k); s->used[i]; i = (i + 1) & (s->cap - 1))
		if (kvf_blockkey_eq(s->keys[i], k))
			return 1;
	return 0;
}

void keyset_del(keyset *s, kvf_blockkey k)
{
	if (!s->cap)
		return;
	size_t mask = s->cap - 1;
	size_t i = slot_of(s, k);
	while (s->used[i] && !kvf_blockkey_eq(s->keys[i], k))
		i = (i + 1) & mask;
	if (!s->used[i])
		return;
	s->used[i] = 0;
	s->n--;
	/* Backward-shift deletion: pull later entries of the probe chain into
	 * the hole unless their home slot lies cyclically in (hole, entry]. */
	for (size_t j = (i + 1) & mask; s->used[j]; j = (j + 1) & mask) {
		size_t h = slot_of(s, s->keys[j]);
		int stays = i < j ? (h > i && h <= j) : (h > i || h <= j);
		if (stays)
			continue;
		s->keys[i] = s->keys[j];
		s->used[i] = 1;
		s->used[j] = 0;
		i = j;
	}
}

void keyset_free(keyset *s)
{
	kvf_free(s->keys);
	kvf_free(s->used);
	memset(s, 0, sizeof(*s));
}

/* ---- cachedir callbacks ---- */

static void announce(void *ud, kvf_cachedir_sync *sync)
{
	kvf_worker *w = ud;
	enum { CHUNK = 1024 };
	kvf_blockkey batch[CHUNK];
	size_t n = 0;
	for (size_t i = 0; i < w->cached.cap; i++) {
		if (!w->cached.used[i])
			continue;
		batch[n++] = w->cached.keys[i];
		if (n == CHUNK) {
			kvf_cachedir_sync_add(sync, w->tier, batch, n);
			n = 0;
		}
	}
	if (n)
		kvf_cachedir_sync_add(sync, w->tier, batch, n);
}

static void load(void *ud, kvf_cachedir_load *out)
{
	kvf_worker *w = ud;
	const ew_load *l = ew_loadfig(w->engine);
	out->waiting = (uint32_t)atomic_load(&l->waiting);
	out->running = (uint32_t)atomic_load(&l->running);
	out->kv_used_blocks = (uint64_t)atomic_load(&l->kv_used);
	out->kv_total_blocks = (uint64_t)atomic_load(&l->kv_total);
	out->draining = w->draining;
}

static void on_status(void *ud, const kvf_cachedir_status *st)
{
	kvf_worker *w = ud;
	switch (st->type) {
	case KVF_CACHEDIR_UP:
		KVF_INFO("dir", "registered with the cachedir", "replica=%s worker=%s", st->addr, w->worker_id);
		break;
	case KVF_CACHEDIR_DOWN:
		KVF_LOG_RL(KVF_LOG_WARN, 5, 10000, "dir", "cachedir connection lost", "replica=%s error=\"%s\"",
			   st->addr, st->msg ? st->msg : "");
		break;
	case KVF_CACHEDIR_REFUSED:
		KVF_LOG_RL(KVF_LOG_ERROR, 5, 10000, "dir", "the cachedir refused this worker", "replica=%s error=\"%s\"",
			   st->addr, st->msg ? st->msg : "");
		break;
	case KVF_CACHEDIR_SYNCED:
		KVF_DEBUG("dir", "re-announced", "replica=%s blocks=%llu", st->addr, (unsigned long long)st->blocks);
		break;
	default:
		break;
	}
}

/* "host:port" others reach listen on: the advertised host, else the listen
 * host, else (listening on every address) this machine's name. */
static void endpoint(const kvf_worker *w, const char *listen, uint16_t port, char *out, size_t len)
{
	char host[KVF_NET_HOST_MAX] = "";
	uint16_t lport = 0;
	if (w->wcfg->advertise && w->wcfg->advertise[0])
		snprintf(host, sizeof(host), "%s", w->wcfg->advertise);
	else if (listen && kvf_net_parse_hostport(listen, host, sizeof(host), &lport) == 0 &&
		 (!host[0] || strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0))
		host[0] = '\0';
	if (!host[0] && gethostname(host, sizeof(host)) != 0)
		snprintf(host, sizeof(host), "localhost");
	host[sizeof(host) - 1] = '\0';
	snprintf(out, len, strchr(host, ':') ? "[%s]:%u" : "%s:%u", host, port);
}

int dir_init(kvf_worker *w)
{
	const kvf_strlist *servers = &w->cluster->cachedir;
	const kvf_engine_info *info = ew_info(w->engine);
	w->tier = strcmp(info->backend, "cpu") == 0 ? KVF_CACHEDIR_HOST : KVF_CACHEDIR_GPU;
	endpoint(w, w->wcfg->d.http_listen, kvf_http_server_port(kvf_daemon_http(w->d)), w->http_ep,
		 sizeof(w->http_ep));
	endpoint(w, w->wcfg->fabric_listen, kvf_fabric_port(w->fabric), w->fabric_ep, sizeof(w->fabric_ep));
	snprintf(w->worker_id, sizeof(w->worker_id), "%s", w->http_ep);
	if (servers->n == 0) {
		KVF_INFO("dir", "no cachedir configured: this worker is not in the cluster directory", "%s", "");
		return 0;
	}
	kvf_cachedir_opts o;
	kvf_cachedir_opts_init(&o);
	o.servers = (const char *const *)servers->v;
	o.nservers = servers->n;
	o.worker_id = w->worker_id;
	o.role = w->role == KVF_WORKER_PREFILL ? KVF_CACHEDIR_PREFILL : KVF_CACHEDIR_DECODE;
	o.model = w->model_name;
	o.block_size = (uint32_t)info->block_size;
	o.tiers = (uint8_t)(1u << w->tier);
	o.capacity_blocks[w->tier] = (uint64_t)info->kv_blocks;
	o.http_endpoint = w->http_ep;
	o.fabric_endpoint = w->fabric_ep;
	o.announce = announce;
	o.load = load;
	o.on_status = on_status;
	o.ud = w;
	int rc = kvf_cachedir_new(w->loop, &o, &w->dir);
	if (rc)
		return kvf_errf(rc, "cachedir client: %s", kvf_errmsg());
	KVF_INFO("dir", "publishing to the cachedir", "worker=%s fabric=%s replicas=%zu tier=%s", w->worker_id,
		 w->fabric_ep, servers->n, w->tier == KVF_CACHEDIR_HOST ? "host" : "gpu");
	return 0;
}

void dir_fini(kvf_worker *w)
{
	if (w->dir) {
		kvf_cachedir_unregister(w->dir);
		/* let the goodbye frames out before the sockets close */
		for (int i = 0; i < 5; i++)
			kvf_loop_run_once(w->loop, 10);
		kvf_cachedir_destroy(w->dir);
		w->dir = NULL;
	}
	keyset_free(&w->cached);
}

void dir_on_blocks(kvf_worker *w, const ew_block_event *ev, int n)
{
	/* Runs of the same kind go out as one event, in order. */
	int i = 0;
	while (i < n) {
		int j = i;
		kvf_blockkey keys[256];
		size_t nk = 0;
		while (j < n && ev[j].stored == ev[i].stored && nk < 256) {
			keys[nk++] = ev[j].key;
			if (ev[j].stored)
				keyset_add(&w->cached, ev[j].key);
			else
				keyset_del(&w->cached, ev[j].key);
			j++;
		}
		if (w->dir) {
			if (ev[i].stored)
				kvf_cachedir_stored(w->dir, w->tier, keys, nk, NULL);
			else
				kvf_cachedir_removed(w->dir, w->tier, keys, nk);
		}
		i = j;
	}
}

void dir_drain(kvf_worker *w)
{
	if (w->dir)
		kvf_cachedir_heartbeat_now(w->dir);
}
