/*
 * tenant.c: API keys -> tenants, per-tenant admission (concurrency cap,
 * requests/s, tokens/s) and the tenant salt that goes into block keys.
 *
 * Rate limits are token buckets. Requests/s takes one unit per request up
 * front. Tokens/s cannot know a request's cost before it runs (prompt
 * tokens are known after tokenizing, completion tokens at the end), so it
 * admits while the bucket is not in debt and charges the real counts as
 * they become known, letting the level go negative; the debt then delays
 * the tenant's next requests (the scheme GCRA-style LLM gateways use).
 * Every function takes the time, so tests inject a clock.
 *
 * Keys are kept in an open-addressing table keyed by a hash of the key.
 */
#include "gateway/gw.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"
#include "common/kvf_json.h"

/* ---- buckets ---- */

static void bucket_refill(gw_bucket *b, uint64_t now_ms)
{
	if (now_ms > b->last_ms) {
		b->level += b->rate * (double)(now_ms - b->last_ms) / 1000.0;
		if (b->level > b->burst)
			b->level = b->burst;
		b->last_ms = now_ms;
	}
}

void gw_bucket_init(gw_bucket *b, double rate, double burst, uint64_t now_ms)
{
	b->rate = rate;
	b->burst = burst > 0 ? burst : (rate > 1 ? rate : 1);
	b->level = b->burst;
	b->last_ms = now_ms;
}

static uint64_t wait_ms(double deficit, double rate)
{
	double ms = ceil(deficit * 1000.0 / rate);
	return ms < 1 ? 1 : (uint64_t)ms;
}

int gw_bucket_take(gw_bucket *b, uint64_t now_ms, double cost, uint64_t *retry_ms)
{
	if (b->rate <= 0)
		return 0;
	bucket_refill(b, now_ms);
	if (b->level >= cost) {
		b->level -= cost;
		return 0;
	}
	if (retry_ms)
		*retry_ms = wait_ms(cost - b->level, b->rate);
	return KVF_E_OVERLOAD;
}

int gw_bucket_admit(gw_bucket *b, uint64_t now_ms, uint64_t *retry_ms)
{
	if (b->rate <= 0)
		return 0;
	bucket_refill(b, now_ms);
	if (b->level >= 0)
		return 0;
	if (retry_ms)
		*retry_ms = wait_ms(-b->level, b->rate);
	return KVF_E_OVERLOAD;
}

void gw_bucket_charge(gw_bucket *b, uint64_t now_ms, double cost)
{
	if (b->rate <= 0)
		return;
	bucket_refill(b, now_ms);
	b->level -= cost;
}

/* ---- tenants ---- */

struct key_slot {
	uint64_t hash;
	char *key;      /* NULL: empty */
	uint32_t tenant;
};

struct gw_tenants {
	gw_tenant_defaults def;
	gw_tenant **t;
	size_t n, cap;
	struct key_slot *keys;
	size_t kcap, kn; /* power of two */
	gw_tenant *anon;
};

static uint64_t hash_bytes(const char *s, size_t len)
{
	uint64_t h = 1469598103934665603ull;
	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 1099511628211ull;
	}
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	return h;
}

int gw_tenants_new(const gw_tenant_defaults *def, uint64_t now_ms, gw_tenants **out)
{
	gw_tenants *t = kvf_calloc(1, sizeof(*t));
	if (!t)
		return KVF_E_NOMEM;
	if (def)
		t->def = *def;
	*out = t;
	return 0;
}

static void tenant_free(gw_tenant *tn)
{
	if (!tn)
		return;
	kvf_free(tn->name);
	kvf_free(tn);
}

void gw_tenants_destroy(gw_tenants *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->n; i++)
		tenant_free(t->t[i]);
	kvf_free(t->t);
	for (size_t i = 0; i < t->kcap; i++)
		kvf_free(t->keys[i].key);
	kvf_free(t->keys);
	tenant_free(t->anon);
	kvf_free(t);
}

static gw_tenant *tenant_make(const gw_tenants *t, const char *name, size_t salt_len, uint64_t now_ms)
{
	gw_tenant *tn = kvf_calloc(1, sizeof(*tn));
	if (!tn)
		return NULL;
	tn->name = kvf_strdup(name);
	if (!tn->name) {
		kvf_free(tn);
		return NULL;
	}
	/* Default salt: the tenant's name (the cluster secret keys the hash, and
	 * the gateway alone picks the salt from the authenticated identity). */
	size_t nl = strlen(name);
	if (nl > GW_SALT_MAX)
		nl = GW_SALT_MAX;
	memcpy(tn->salt, name, nl);
	tn->salt_len = salt_len == 0 ? 0 : nl;
	tn->rps = t->def.rps;
	tn->burst = t->def.burst;
	tn->tps = t->def.tps;
	tn->max_concurrency = t->def.max_concurrency;
	gw_bucket_init(&tn->req_bucket, tn->rps, tn->burst, now_ms);
	gw_bucket_init(&tn->tok_bucket, tn->tps, tn->tps, now_ms);
	return tn;
}

int gw_tenants_add(gw_tenants *t, const char *name, uint64_t now_ms, gw_tenant **out)
{
	for (size_t i = 0; i < t->n; i++)
		if (!strcmp(t->t[i]->name, name)) {
			*out = t->t[i];
			return 0;
		}
	if (!name[0] || strlen(name) > 64)
		return kvf_errf(KVF_E_INVAL, "tenant name '%.80s': 1 to 64 characters", name);
	for (const char *c = name; *c; c++)
		if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '-' ||
		      *c == '_' || *c == '.'))
			return kvf_errf(KVF_E_INVAL, "tenant name '%.80s': letters, digits, '-', '_' and '.' only", name);
	if (!strcmp(name, "anonymous"))
		return kvf_errf(KVF_E_INVAL, "tenant name 'anonymous' is reserved for requests without a key");
	void *arr = t->t;
	if (kvf_grow(&arr, &t->cap, t->n + 1, sizeof(*t->t)))
		return KVF_E_NOMEM;
	t->t = arr;
	gw_tenant *tn = tenant_make(t, name, 1, now_ms);
	if (!tn)
		return KVF_E_NOMEM;
	t->t[t->n++] = tn;
	*out = tn;
	return 0;
}

static int keys_grow(gw_tenants *t)
{
	size_t ncap = t->kcap ? t->kcap * 2 : 64;
	struct key_slot *nk = kvf_calloc(ncap, sizeof(*nk));
	if (!nk)
		return KVF_E_NOMEM;
	for (size_t i = 0; i < t->kcap; i++) {
		if (!t->keys[i].key)
			continue;
		size_t j = t->keys[i].hash & (ncap - 1);
		while (nk[j].key)
			j = (j + 1) & (ncap - 1);
		nk[j] = t->keys[i];
	}
	kvf_free(t->keys);
	t->keys = nk;
	t->kcap = ncap;
	return 0;
}

static int key_check(const gw_tenants *t, const char *name, const char *key)
{
	size_t len = strlen(key);
	if (len < 8 || len > 256)
		return kvf_errf(KVF_E_INVAL, "API key of tenant '%s': 8 to 256 characters", name);
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)key[i] <= ' ' || key[i] == 0x7f)
			return kvf_errf(KVF_E_INVAL, "API key of tenant '%s': spaces and control characters are not allowed",
					name);
	if (gw_tenants_by_key(t, key, len))
		return kvf_errf(KVF_E_EXISTS, "API key of tenant '%s' is already used", name);
	return 0;
}

int gw_tenants_add_key(gw_tenants *t, gw_tenant *tn, const char *key)
{
	size_t len = strlen(key);
	int rc = key_check(t, tn->name, key);
	if (rc)
		return rc;
	if ((t->kn + 1) * 2 > t->kcap && keys_grow(t))
		return KVF_E_NOMEM;
	uint32_t idx = 0;
	for (size_t i = 0; i < t->n; i++)
		if (t->t[i] == tn)
			idx = (uint32_t)i;
	uint64_t h = hash_bytes(key, len);
	size_t j = h & (t->kcap - 1);
	while (t->keys[j].key)
		j = (j + 1) & (t->kcap - 1);
	t->keys[j].key = kvf_strdup(key);
	if (!t->keys[j].key)
		return KVF_E_NOMEM;
	t->keys[j].hash = h;
	t->keys[j].tenant = idx;
	t->kn++;
	tn->nkeys++;
	return 0;
}

int gw_tenants_add_key_spec(gw_tenants *t, const char *spec, uint64_t now_ms)
{
	const char *colon = strchr(spec, ':');
	if (!colon || colon == spec || !colon[1])
		return kvf_errf(KVF_E_CONFIG, "api_keys entry '%.20s...': expected \"tenant:key\"", spec);
	char name[65];
	size_t nl = (size_t)(colon - spec);
	if (nl >= sizeof(name))
		return kvf_errf(KVF_E_CONFIG, "api_keys entry: tenant name longer than 64");
	memcpy(name, spec, nl);
	name[nl] = '\0';
	gw_tenant *tn;
	int rc = key_check(t, name, colon + 1);
	if (!rc)
		rc = gw_tenants_add(t, name, now_ms, &tn);
	if (!rc)
		rc = gw_tenants_add_key(t, tn, colon + 1);
	return rc;
}

gw_tenant *gw_tenants_by_key(const gw_tenants *t, const char *key, size_t len)
{
	if (!t->kcap)
		return NULL;
	uint64_t h = hash_bytes(key, len);
	size_t j = h & (t->kcap - 1);
	while (t->keys[j].key) {
		const struct key_slot *s = &t->keys[j];
		if (s->hash == h && strlen(s->key) == len && !memcmp(s->key, key, len))
			return t->t[s->tenant];
		j = (j + 1) & (t->kcap - 1);
	}
	return NULL;
}

gw_tenant *gw_tenants_anonymous(gw_tenants *t)
{
	if (!t->anon)
		t->anon = tenant_make(t, "anonymous", 0, 0);
	return t->anon;
}

size_t gw_tenants_count(const gw_tenants *t) { return t->n; }
gw_tenant *gw_tenants_at(gw_tenants *t, size_t i) { return i < t->n ? t->t[i] : NULL; }

static int json_num(const json_t *o, const char *k, double *out, const char *origin, const char *name)
{
	json_t *v = json_object_get(o, k);
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_number(v) || json_number_value(v) < 0)
		return kvf_errf(KVF_E_CONFIG, "%s: tenant '%s': %s must be a number >= 0", origin, name, k);
	*out = json_number_value(v);
	return 0;
}

int gw_tenants_load_json(gw_tenants *t, const char *text, size_t len, const char *origin, uint64_t now_ms)
{
	json_error_t je;
	json_t *root = json_loadb(text, len, 0, &je);
	if (!root)
		return kvf_errf(KVF_E_CONFIG, "%s:%d:%d: %s", origin, je.line, je.column, je.text);
	int rc = 0;
	json_t *arr = json_object_get(root, "tenants");
	if (!json_is_array(arr)) {
		rc = kvf_errf(KVF_E_CONFIG, "%s: expected {\"tenants\": [...]}", origin);
		goto out;
	}
	size_t i;
	json_t *o;
	json_array_foreach(arr, i, o) {
		const char *name = json_string_value(json_object_get(o, "name"));
		if (!json_is_object(o) || !name) {
			rc = kvf_errf(KVF_E_CONFIG, "%s: tenants[%zu]: needs a \"name\" string", origin, i);
			goto out;
		}
		gw_tenant *tn;
		if ((rc = gw_tenants_add(t, name, now_ms, &tn))) {
			rc = kvf_errf(KVF_E_CONFIG, "%s: tenants[%zu]: %s", origin, i, kvf_errmsg());
			goto out;
		}
		double conc = tn->max_concurrency;
		if ((rc = json_num(o, "rps", &tn->rps, origin, name)) || (rc = json_num(o, "burst", &tn->burst, origin, name)) ||
		    (rc = json_num(o, "tps", &tn->tps, origin, name)) ||
		    (rc = json_num(o, "max_concurrency", &conc, origin, name)))
			goto out;
		tn->max_concurrency = (uint32_t)conc;
		gw_bucket_init(&tn->req_bucket, tn->rps, tn->burst, now_ms);
		gw_bucket_init(&tn->tok_bucket, tn->tps, tn->tps, now_ms);
		json_t *salt = json_object_get(o, "salt");
		if (salt && !json_is_null(salt)) {
			const char *s = json_string_value(salt);
			int ok = s && strlen(s) >= 1 && strlen(s) <= GW_SALT_MAX;
			for (const char *c = s; ok && *c; c++)
				ok = *c > ' ' && *c < 0x7f;
			if (!ok) {
				/* It travels in the x-kvf-tenant header to the workers. */
				rc = kvf_errf(KVF_E_CONFIG, "%s: tenant '%s': salt must be 1 to %d visible ASCII characters",
					      origin, name, GW_SALT_MAX);
				goto out;
			}
			tn->salt_len = strlen(s);
			memcpy(tn->salt, s, tn->salt_len);
		}
		json_t *keys = json_object_get(o, "keys");
		if (keys && !json_is_array(keys)) {
			rc = kvf_errf(KVF_E_CONFIG, "%s: tenant '%s': keys must be an array of strings", origin, name);
			goto out;
		}
		size_t k;
		json_t *kv;
		json_array_foreach(keys, k, kv) {
			if (!json_is_string(kv)) {
				rc = kvf_errf(KVF_E_CONFIG, "%s: tenant '%s': keys[%zu] is not a string", origin, name, k);
				goto out;
			}
			if ((rc = gw_tenants_add_key(t, tn, json_string_value(kv)))) {
				rc = kvf_errf(KVF_E_CONFIG, "%s: %s", origin, kvf_errmsg());
				goto out;
			}
		}
	}
out:
	json_decref(root);
	return rc;
}

int gw_tenants_load_file(gw_tenants *t, const char *path, uint64_t now_ms)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return kvf_errf(KVF_E_CONFIG, "tenants file %s: cannot open", path);
	kvf_buf b = KVF_BUF_INIT;
	char tmp[4096];
	size_t n;
	while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0)
		kvf_buf_append(&b, tmp, n);
	fclose(f);
	if (b.oom) {
		kvf_buf_free(&b);
		return KVF_E_NOMEM;
	}
	int rc = gw_tenants_load_json(t, b.data ? b.data : "", b.len, path, now_ms);
	kvf_buf_free(&b);
	return rc;
}

/* ---- admission ---- */

int gw_tenant_admit(gw_tenant *tn, uint64_t now_ms, uint64_t *retry_ms)
{
	if (tn->max_concurrency && tn->inflight >= tn->max_concurrency) {
		tn->rejected_concurrency++;
		*retry_ms = 1000;
		return GW_ADMIT_CONCURRENCY;
	}
	if (gw_bucket_admit(&tn->tok_bucket, now_ms, retry_ms)) {
		tn->rejected_tokens++;
		return GW_ADMIT_TOKENS;
	}
	if (gw_bucket_take(&tn->req_bucket, now_ms, 1.0, retry_ms)) {
		tn->rejected_rate++;
		return GW_ADMIT_RATE;
	}
	tn->inflight++;
	tn->requests++;
	return GW_ADMIT_OK;
}

void gw_tenant_charge_tokens(gw_tenant *tn, uint64_t now_ms, uint64_t tokens, int completion)
{
	if (completion)
		tn->completion_tokens += tokens;
	else
		tn->prompt_tokens += tokens;
	gw_bucket_charge(&tn->tok_bucket, now_ms, (double)tokens);
}

void gw_tenant_release(gw_tenant *tn)
{
	if (tn->inflight)
		tn->inflight--;
}

int gw_auth_key(const kvf_http_msg *m, const char **key, size_t *len)
{
	kvf_http_str v;
	if (kvf_http_msg_header(m, "authorization", &v) == 0) {
		if (v.len > 7 && !strncasecmp(v.p, "bearer ", 7)) {
			const char *p = v.p + 7;
			size_t n = v.len - 7;
			while (n && *p == ' ') {
				p++;
				n--;
			}
			if (n) {
				*key = p;
				*len = n;
				return 0;
			}
		}
		return KVF_E_NOTFOUND;
	}
	if (kvf_http_msg_header(m, "x-api-key", &v) == 0 && v.len) {
		*key = v.p;
		*len = v.len;
		return 0;
	}
	return KVF_E_NOTFOUND;
}

size_t gw_block_keys(const kvf_blockkey_ctx *bk, const char *model, const gw_tenant *tn, const uint32_t *ids,
		     size_t n, uint32_t block_size, kvf_blockkey *out, size_t max)
{
	kvf_blockkey root = kvf_blockkey_root(bk, model, tn->salt, tn->salt_len);
	return kvf_blockkey_chain(bk, root, ids, n, block_size, out, max);
}
