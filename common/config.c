/*
 * config.c: table-driven configuration over libconfig.
 *
 * Every value, whether it comes from a default, a file or -o, goes through
 * one setter per type (set_text / set_setting), so defaults, files and
 * overrides are validated by the same code and the same bounds.
 */
#include "common/kvf_config.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <libconfig.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"
#include "common/kvf_version.h"

const char *const kvf_config_known_sections[] = {
	"cluster", "cachedir", "fabric", "engine", "prefill", "decode", "gateway", NULL,
};

struct cfg_entry {
	const kvf_cfg_section *sec;
	void *storage;
};

struct kvf_config {
	struct cfg_entry *ents;
	size_t n, cap;
};

static const char *const type_names[] = {
	"bool", "integer", "number", "string", "enum", "size", "duration", "string list",
};

#define FIELD(storage, key, T) ((T *)((char *)(storage) + (key)->offset))

/* ---- value parsing ---- */

static int parse_bool(const char *s, int *out)
{
	static const char *const t[] = { "true", "yes", "on", "1" };
	static const char *const f[] = { "false", "no", "off", "0" };
	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(s, t[i]) == 0) {
			*out = 1;
			return 0;
		}
		if (strcasecmp(s, f[i]) == 0) {
			*out = 0;
			return 0;
		}
	}
	return KVF_E_PARSE;
}

/* Parses "<number><unit>" with units from the table (factor per unit). */
struct unit {
	const char *name;
	uint64_t factor;
};

static int parse_with_units(const char *s, const struct unit *units, uint64_t *out)
{
	if (!s || !isdigit((unsigned char)*s)) /* no sign, no blanks before */
		return KVF_E_PARSE;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (end == s || errno)
		return KVF_E_PARSE;
	while (*end == ' ')
		end++;
	if (*end == '\0') {
		*out = units[0].factor * v; /* bare number: the first unit */
		return 0;
	}
	for (const struct unit *u = units; u->name; u++) {
		if (strcmp(end, u->name) == 0) {
			if (u->factor && v > UINT64_MAX / u->factor)
				return KVF_E_RANGE;
			*out = v * u->factor;
			return 0;
		}
	}
	return KVF_E_PARSE;
}

static const struct unit size_units[] = {
	{ "", 1 },
	{ "B", 1 },
	{ "k", 1024ull }, { "K", 1024ull }, { "KB", 1024ull }, { "KiB", 1024ull },
	{ "m", 1024ull * 1024 }, { "M", 1024ull * 1024 }, { "MB", 1024ull * 1024 }, { "MiB", 1024ull * 1024 },
	{ "g", 1024ull << 20 }, { "G", 1024ull << 20 }, { "GB", 1024ull << 20 }, { "GiB", 1024ull << 20 },
	{ "T", 1024ull << 30 }, { "TB", 1024ull << 30 }, { "TiB", 1024ull << 30 },
	{ NULL, 0 },
};

static const struct unit duration_units[] = {
	{ "", 1 }, { "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "min", 60000 }, { "h", 3600000 },
	{ NULL, 0 },
};

int kvf_config_parse_size(const char *s, uint64_t *bytes)
{
	return parse_with_units(s, size_units, bytes);
}

int kvf_config_parse_duration(const char *s, uint64_t *ms)
{
	return parse_with_units(s, duration_units, ms);
}

static int enum_index(const char *choices, const char *s, int *out)
{
	size_t len = strlen(s);
	int idx = 0;
	for (const char *p = choices; *p; idx++) {
		const char *bar = strchr(p, '|');
		size_t n = bar ? (size_t)(bar - p) : strlen(p);
		if (n == len && strncmp(p, s, n) == 0) {
			*out = idx;
			return 0;
		}
		if (!bar)
			break;
		p = bar + 1;
	}
	return KVF_E_PARSE;
}

/* Writes the name of choice idx into out. */
static void enum_name(const char *choices, int idx, char *out, size_t outlen)
{
	const char *p = choices;
	for (int i = 0; i < idx && p; i++) {
		p = strchr(p, '|');
		if (p)
			p++;
	}
	if (!p) {
		snprintf(out, outlen, "?");
		return;
	}
	const char *bar = strchr(p, '|');
	size_t n = bar ? (size_t)(bar - p) : strlen(p);
	snprintf(out, outlen, "%.*s", (int)n, p);
}

static int bounded(const kvf_cfg_key *k)
{
	return k->min < k->max;
}

static void strlist_clear(kvf_strlist *l)
{
	for (size_t i = 0; i < l->n; i++)
		kvf_free(l->v[i]);
	kvf_free(l->v);
	l->v = NULL;
	l->n = 0;
}

static int strlist_push(kvf_strlist *l, const char *s, size_t len)
{
	char **v = kvf_realloc(l->v, (l->n + 1) * sizeof(*v));
	if (!v)
		return KVF_E_NOMEM;
	l->v = v;
	if (!(v[l->n] = kvf_strndup(s, len)))
		return KVF_E_NOMEM;
	l->n++;
	return 0;
}

static int range_err(const char *where, const kvf_cfg_section *sec, const kvf_cfg_key *k, const char *val)
{
	return kvf_errf(KVF_E_RANGE, "%s: %s.%s: value %s out of range [%g, %g]", where, sec->name,
			k->name, val, k->min, k->max);
}

static int type_err(const char *where, const kvf_cfg_section *sec, const kvf_cfg_key *k, const char *got)
{
	if (k->type == KVF_CFG_ENUM)
		return kvf_errf(KVF_E_CONFIG, "%s: %s.%s: expected one of %s, got %s", where, sec->name,
				k->name, k->choices, got);
	return kvf_errf(KVF_E_CONFIG, "%s: %s.%s: expected %s, got %s", where, sec->name, k->name,
			type_names[k->type], got);
}

/* Sets a key from text in -o syntax. */
static int set_text(const char *where, const kvf_cfg_section *sec, const kvf_cfg_key *k, void *st,
		    const char *text)
{
	char quoted[96];
	snprintf(quoted, sizeof(quoted), "'%.80s'", text);
	switch (k->type) {
	case KVF_CFG_BOOL: {
		int b;
		if (parse_bool(text, &b))
			return type_err(where, sec, k, quoted);
		*FIELD(st, k, int) = b;
		return 0;
	}
	case KVF_CFG_INT: {
		char *end;
		errno = 0;
		/* decimal, or hex with 0x: a leading 0 is not octal here */
		const char *digits = text[0] == '-' || text[0] == '+' ? text + 1 : text;
		int base = digits[0] == '0' && (digits[1] == 'x' || digits[1] == 'X') ? 16 : 10;
		long long v = strtoll(text, &end, base);
		if (!*text || isspace((unsigned char)text[0]) || *end || errno)
			return type_err(where, sec, k, quoted);
		if (bounded(k) && ((double)v < k->min || (double)v > k->max))
			return range_err(where, sec, k, text);
		*FIELD(st, k, int64_t) = v;
		return 0;
	}
	case KVF_CFG_DOUBLE: {
		char *end;
		errno = 0;
		double v = strtod(text, &end);
		if (!*text || *end || errno || !isfinite(v))
			return type_err(where, sec, k, quoted);
		if (bounded(k) && (v < k->min || v > k->max))
			return range_err(where, sec, k, text);
		*FIELD(st, k, double) = v;
		return 0;
	}
	case KVF_CFG_STRING: {
		char *d = kvf_strdup(text);
		if (!d)
			return kvf_errf(KVF_E_NOMEM, "config: out of memory");
		kvf_free(*FIELD(st, k, char *));
		*FIELD(st, k, char *) = d;
		return 0;
	}
	case KVF_CFG_ENUM: {
		int idx;
		if (enum_index(k->choices, text, &idx))
			return type_err(where, sec, k, quoted);
		*FIELD(st, k, int) = idx;
		return 0;
	}
	case KVF_CFG_SIZE:
	case KVF_CFG_DURATION: {
		uint64_t v;
		int rc = k->type == KVF_CFG_SIZE ? kvf_config_parse_size(text, &v)
						 : kvf_config_parse_duration(text, &v);
		if (rc == KVF_E_RANGE)
			return range_err(where, sec, k, text);
		if (rc)
			return type_err(where, sec, k, quoted);
		if (bounded(k) && ((double)v < k->min || (double)v > k->max))
			return range_err(where, sec, k, text);
		*FIELD(st, k, uint64_t) = v;
		return 0;
	}
	case KVF_CFG_STRLIST: {
		kvf_strlist nl = { NULL, 0 };
		const char *p = text;
		while (*p) {
			while (*p == ' ')
				p++;
			const char *comma = strchr(p, ',');
			size_t n = comma ? (size_t)(comma - p) : strlen(p);
			while (n && p[n - 1] == ' ')
				n--;
			if (n == 0) {
				strlist_clear(&nl);
				return type_err(where, sec, k, "an empty list element");
			}
			if (strlist_push(&nl, p, n)) {
				strlist_clear(&nl);
				return kvf_errf(KVF_E_NOMEM, "config: out of memory");
			}
			if (!comma)
				break;
			p = comma + 1;
		}
		strlist_clear(FIELD(st, k, kvf_strlist));
		*FIELD(st, k, kvf_strlist) = nl;
		return 0;
	}
	}
	return kvf_errf(KVF_E_INTERNAL, "config: bad key type");
}

static const char *setting_type_name(const config_setting_t *s)
{
	switch (config_setting_type(s)) {
	case CONFIG_TYPE_INT:
	case CONFIG_TYPE_INT64: return "integer";
	case CONFIG_TYPE_FLOAT: return "number";
	case CONFIG_TYPE_STRING: return "string";
	case CONFIG_TYPE_BOOL: return "bool";
	case CONFIG_TYPE_ARRAY:
	case CONFIG_TYPE_LIST: return "list";
	case CONFIG_TYPE_GROUP: return "group";
	}
	return "?";
}

/* Sets a key from a libconfig setting. */
static int set_setting(const char *where, const kvf_cfg_section *sec, const kvf_cfg_key *k, void *st,
		       const config_setting_t *s)
{
	int t = config_setting_type(s);
	char num[64];
	switch (k->type) {
	case KVF_CFG_BOOL:
		if (t != CONFIG_TYPE_BOOL)
			return type_err(where, sec, k, setting_type_name(s));
		*FIELD(st, k, int) = config_setting_get_bool(s);
		return 0;
	case KVF_CFG_INT:
		if (t != CONFIG_TYPE_INT && t != CONFIG_TYPE_INT64)
			return type_err(where, sec, k, setting_type_name(s));
		snprintf(num, sizeof(num), "%lld", config_setting_get_int64(s));
		return set_text(where, sec, k, st, num);
	case KVF_CFG_DOUBLE:
		if (t == CONFIG_TYPE_FLOAT)
			snprintf(num, sizeof(num), "%.17g", config_setting_get_float(s));
		else if (t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64)
			snprintf(num, sizeof(num), "%lld", config_setting_get_int64(s));
		else
			return type_err(where, sec, k, setting_type_name(s));
		return set_text(where, sec, k, st, num);
	case KVF_CFG_STRING:
	case KVF_CFG_ENUM:
		if (t != CONFIG_TYPE_STRING)
			return type_err(where, sec, k, setting_type_name(s));
		return set_text(where, sec, k, st, config_setting_get_string(s));
	case KVF_CFG_SIZE:
	case KVF_CFG_DURATION:
		if (t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64) {
			long long v = config_setting_get_int64(s);
			if (v < 0)
				return type_err(where, sec, k, "a negative integer");
			snprintf(num, sizeof(num), "%lld", v);
			return set_text(where, sec, k, st, num);
		}
		if (t != CONFIG_TYPE_STRING)
			return type_err(where, sec, k, setting_type_name(s));
		return set_text(where, sec, k, st, config_setting_get_string(s));
	case KVF_CFG_STRLIST: {
		if (t != CONFIG_TYPE_ARRAY && t != CONFIG_TYPE_LIST) {
			if (t == CONFIG_TYPE_STRING) /* a single string is a list of one */
				return set_text(where, sec, k, st, config_setting_get_string(s));
			return type_err(where, sec, k, setting_type_name(s));
		}
		kvf_strlist nl = { NULL, 0 };
		int n = config_setting_length(s);
		for (int i = 0; i < n; i++) {
			const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
			if (config_setting_type(e) != CONFIG_TYPE_STRING) {
				strlist_clear(&nl);
				return type_err(where, sec, k, "a list with a non-string element");
			}
			const char *v = config_setting_get_string(e);
			if (strlist_push(&nl, v, strlen(v))) {
				strlist_clear(&nl);
				return kvf_errf(KVF_E_NOMEM, "config: out of memory");
			}
		}
		strlist_clear(FIELD(st, k, kvf_strlist));
		*FIELD(st, k, kvf_strlist) = nl;
		return 0;
	}
	}
	return kvf_errf(KVF_E_INTERNAL, "config: bad key type");
}

/* ---- registry ---- */

int kvf_config_new(kvf_config **out)
{
	kvf_config *cfg = kvf_calloc(1, sizeof(*cfg));
	if (!cfg)
		return kvf_errf(KVF_E_NOMEM, "config: out of memory");
	*out = cfg;
	return 0;
}

static void free_storage(const kvf_cfg_section *sec, void *st)
{
	for (size_t i = 0; i < sec->nkeys; i++) {
		const kvf_cfg_key *k = &sec->keys[i];
		if (k->type == KVF_CFG_STRING) {
			kvf_free(*FIELD(st, k, char *));
			*FIELD(st, k, char *) = NULL;
		} else if (k->type == KVF_CFG_STRLIST) {
			strlist_clear(FIELD(st, k, kvf_strlist));
		}
	}
}

void kvf_config_destroy(kvf_config *cfg)
{
	if (!cfg)
		return;
	for (size_t i = 0; i < cfg->n; i++)
		free_storage(cfg->ents[i].sec, cfg->ents[i].storage);
	kvf_free(cfg->ents);
	kvf_free(cfg);
}

static const struct cfg_entry *find_section(const kvf_config *cfg, const char *name, size_t len)
{
	for (size_t i = 0; i < cfg->n; i++)
		if (strlen(cfg->ents[i].sec->name) == len && strncmp(cfg->ents[i].sec->name, name, len) == 0)
			return &cfg->ents[i];
	return NULL;
}

static const kvf_cfg_key *find_key(const kvf_cfg_section *sec, const char *name)
{
	for (size_t i = 0; i < sec->nkeys; i++)
		if (strcmp(sec->keys[i].name, name) == 0)
			return &sec->keys[i];
	return NULL;
}

static int known_section(const char *name)
{
	for (const char *const *p = kvf_config_known_sections; *p; p++)
		if (strcmp(*p, name) == 0)
			return 1;
	return 0;
}

int kvf_config_add(kvf_config *cfg, const kvf_cfg_section *sec, void *storage)
{
	if (find_section(cfg, sec->name, strlen(sec->name)))
		return kvf_errf(KVF_E_EXISTS, "config: section '%s' registered twice", sec->name);
	if (kvf_grow((void **)&cfg->ents, &cfg->cap, cfg->n + 1, sizeof(*cfg->ents)))
		return kvf_errf(KVF_E_NOMEM, "config: out of memory");
	for (size_t i = 0; i < sec->nkeys; i++) {
		const kvf_cfg_key *k = &sec->keys[i];
		int rc = set_text("default", sec, k, storage, k->def ? k->def : "");
		/* An absent default means zero / empty for every type. */
		if (rc && !k->def && k->type != KVF_CFG_STRING && k->type != KVF_CFG_STRLIST)
			rc = 0;
		if (rc) {
			free_storage(sec, storage);
			return rc;
		}
	}
	cfg->ents[cfg->n++] = (struct cfg_entry){ sec, storage };
	return 0;
}

/* ---- loading ---- */

static int load_parsed(kvf_config *cfg, config_t *lc, const char *origin)
{
	config_setting_t *root = config_root_setting(lc);
	int nsec = config_setting_length(root);
	char where[512];
	for (int i = 0; i < nsec; i++) {
		config_setting_t *g = config_setting_get_elem(root, (unsigned)i);
		const char *gname = config_setting_name(g);
		const char *file = config_setting_source_file(g);
		snprintf(where, sizeof(where), "%s:%u", file ? file : origin, config_setting_source_line(g));
		if (config_setting_type(g) != CONFIG_TYPE_GROUP)
			return kvf_errf(KVF_E_CONFIG, "%s: '%s' must be a section { ... }", where, gname);
		const struct cfg_entry *e = find_section(cfg, gname, strlen(gname));
		if (!e && !known_section(gname))
			return kvf_errf(KVF_E_CONFIG, "%s: unknown section '%s'", where, gname);
		if (!e)
			continue; /* another daemon's section */
		int nk = config_setting_length(g);
		for (int j = 0; j < nk; j++) {
			config_setting_t *s = config_setting_get_elem(g, (unsigned)j);
			const char *kname = config_setting_name(s);
			file = config_setting_source_file(s);
			snprintf(where, sizeof(where), "%s:%u", file ? file : origin, config_setting_source_line(s));
			const kvf_cfg_key *k = find_key(e->sec, kname);
			if (!k)
				return kvf_errf(KVF_E_CONFIG, "%s: unknown key '%s.%s' (see --print-config)", where,
						gname, kname);
			int rc = set_setting(where, e->sec, k, e->storage, s);
			if (rc)
				return rc;
		}
	}
	return 0;
}

static int load(kvf_config *cfg, const char *path, const char *text, const char *origin)
{
	config_t lc;
	config_init(&lc);
	int ok = path ? config_read_file(&lc, path) : config_read_string(&lc, text);
	int rc = 0;
	if (ok != CONFIG_TRUE) {
		if (config_error_type(&lc) == CONFIG_ERR_FILE_IO)
			rc = kvf_errf(KVF_E_CONFIG, "%s: cannot read: %s", path, strerror(errno ? errno : ENOENT));
		else
			rc = kvf_errf(KVF_E_CONFIG, "%s:%d: %s",
				      config_error_file(&lc) ? config_error_file(&lc) : origin,
				      config_error_line(&lc), config_error_text(&lc));
	} else {
		rc = load_parsed(cfg, &lc, origin);
	}
	config_destroy(&lc);
	return rc;
}

int kvf_config_load_file(kvf_config *cfg, const char *path)
{
	return load(cfg, path, NULL, path);
}

int kvf_config_load_string(kvf_config *cfg, const char *text, const char *origin)
{
	return load(cfg, NULL, text, origin);
}

int kvf_config_set(kvf_config *cfg, const char *assignment, const char *origin)
{
	const char *eq = strchr(assignment, '=');
	const char *dot = strchr(assignment, '.');
	if (!eq || !dot || dot > eq || dot == assignment || dot + 1 == eq)
		return kvf_errf(KVF_E_CONFIG, "%s %s: expected section.key=value", origin, assignment);
	char sname[64], kname[128];
	size_t sl = (size_t)(dot - assignment), kl = (size_t)(eq - dot - 1);
	if (sl >= sizeof(sname) || kl >= sizeof(kname))
		return kvf_errf(KVF_E_CONFIG, "%s %s: name too long", origin, assignment);
	memcpy(sname, assignment, sl);
	sname[sl] = 0;
	memcpy(kname, dot + 1, kl);
	kname[kl] = 0;
	const struct cfg_entry *e = find_section(cfg, sname, sl);
	if (!e)
		return kvf_errf(KVF_E_CONFIG, "%s %s: %s section '%s'", origin, assignment,
				known_section(sname) ? "this daemon does not use" : "unknown", sname);
	const kvf_cfg_key *k = find_key(e->sec, kname);
	if (!k)
		return kvf_errf(KVF_E_CONFIG, "%s %s: unknown key '%s.%s' (see --print-config)", origin,
				assignment, sname, kname);
	char where[256];
	snprintf(where, sizeof(where), "%s", origin);
	return set_text(where, e->sec, k, e->storage, eq + 1);
}

int kvf_config_validate(kvf_config *cfg)
{
	for (size_t i = 0; i < cfg->n; i++) {
		if (cfg->ents[i].sec->validate) {
			int rc = cfg->ents[i].sec->validate(cfg->ents[i].storage);
			if (rc)
				return rc;
		}
	}
	return 0;
}

/* ---- printing ---- */

static void fmt_scaled(kvf_buf *out, uint64_t v, const struct unit *units, const char *const *names)
{
	/* names: preferred unit names from largest to smallest factor */
	for (const char *const *n = names; *n; n++) {
		for (const struct unit *u = units; u->name; u++) {
			if (strcmp(u->name, *n) == 0 && u->factor > 1 && v >= u->factor && v % u->factor == 0) {
				kvf_buf_printf(out, "%llu%s", (unsigned long long)(v / u->factor), u->name);
				return;
			}
		}
	}
	kvf_buf_printf(out, "%llu", (unsigned long long)v);
}

int kvf_config_format_value(const kvf_cfg_key *k, const void *st, kvf_buf *out)
{
	static const char *const size_names[] = { "TiB", "GiB", "MiB", "KiB", NULL };
	static const char *const dur_names[] = { "h", "m", "s", NULL };
	char name[64];
	switch (k->type) {
	case KVF_CFG_BOOL:
		return kvf_buf_puts(out, *FIELD(st, k, int) ? "true" : "false");
	case KVF_CFG_INT:
		return kvf_buf_printf(out, "%lld", (long long)*FIELD(st, k, int64_t));
	case KVF_CFG_DOUBLE:
		return kvf_buf_printf(out, "%.17g", *FIELD(st, k, double));
	case KVF_CFG_STRING: {
		const char *s = *FIELD(st, k, char *);
		return kvf_buf_puts(out, s ? s : "");
	}
	case KVF_CFG_ENUM:
		enum_name(k->choices, *FIELD(st, k, int), name, sizeof(name));
		return kvf_buf_puts(out, name);
	case KVF_CFG_SIZE:
		fmt_scaled(out, *FIELD(st, k, uint64_t), size_units, size_names);
		return out->oom ? KVF_E_NOMEM : 0;
	case KVF_CFG_DURATION: {
		uint64_t v = *FIELD(st, k, uint64_t);
		if (v && v % 1000 != 0)
			return kvf_buf_printf(out, "%llums", (unsigned long long)v);
		fmt_scaled(out, v, duration_units, dur_names);
		return out->oom ? KVF_E_NOMEM : 0;
	}
	case KVF_CFG_STRLIST: {
		const kvf_strlist *l = FIELD(st, k, kvf_strlist);
		for (size_t i = 0; i < l->n; i++)
			kvf_buf_printf(out, "%s%s", i ? "," : "", l->v[i]);
		return out->oom ? KVF_E_NOMEM : 0;
	}
	}
	return KVF_E_INTERNAL;
}

/* A libconfig string literal. */
static void put_lc_string(kvf_buf *out, const char *s)
{
	kvf_buf_putc(out, '"');
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			kvf_buf_putc(out, '\\');
		if (*s == '\n')
			kvf_buf_puts(out, "\\n");
		else
			kvf_buf_putc(out, *s);
	}
	kvf_buf_putc(out, '"');
}

static void print_value(const kvf_cfg_key *k, const void *st, kvf_buf *out)
{
	kvf_buf tmp = KVF_BUF_INIT;
	switch (k->type) {
	case KVF_CFG_BOOL:
	case KVF_CFG_INT:
		kvf_config_format_value(k, st, out);
		if (k->type == KVF_CFG_INT) {
			int64_t v = *FIELD(st, k, int64_t);
			if (v > INT32_MAX || v < INT32_MIN)
				kvf_buf_putc(out, 'L');
		}
		break;
	case KVF_CFG_DOUBLE: {
		kvf_config_format_value(k, st, &tmp);
		kvf_buf_puts(out, tmp.data);
		if (!strpbrk(tmp.data, ".eE"))
			kvf_buf_puts(out, ".0"); /* keep it a float for libconfig */
		break;
	}
	case KVF_CFG_STRLIST: {
		const kvf_strlist *l = FIELD(st, k, kvf_strlist);
		kvf_buf_putc(out, '[');
		for (size_t i = 0; i < l->n; i++) {
			if (i)
				kvf_buf_puts(out, ", ");
			put_lc_string(out, l->v[i]);
		}
		kvf_buf_putc(out, ']');
		break;
	}
	default:
		kvf_config_format_value(k, st, &tmp);
		put_lc_string(out, tmp.data ? tmp.data : "");
	}
	kvf_buf_free(&tmp);
}

static void describe_range(const kvf_cfg_key *k, kvf_buf *out)
{
	if (k->type == KVF_CFG_ENUM)
		kvf_buf_printf(out, "%s", k->choices);
	else if (bounded(k))
		kvf_buf_printf(out, "%g .. %g", k->min, k->max);
}

/* Keys whose values are credentials: shown as <redacted> by show config. */
static int is_secret(const kvf_cfg_key *k)
{
	size_t n = strlen(k->name);
	return strcmp(k->name, "secret") == 0 || strcmp(k->name, "api_keys") == 0 ||
	       (n > 7 && strcmp(k->name + n - 7, "_secret") == 0);
}

int kvf_config_print(const kvf_config *cfg, kvf_buf *out)
{
	return kvf_config_print_redacted(cfg, out, 0);
}

int kvf_config_print_redacted(const kvf_config *cfg, kvf_buf *out, int redact)
{
	kvf_buf_puts(out, "# kvfabric " KVF_VERSION " effective configuration (libconfig syntax)\n");
	for (size_t i = 0; i < cfg->n; i++) {
		const kvf_cfg_section *sec = cfg->ents[i].sec;
		kvf_buf_printf(out, "\n# %s\n%s:\n{\n", sec->help ? sec->help : sec->name, sec->name);
		for (size_t j = 0; j < sec->nkeys; j++) {
			const kvf_cfg_key *k = &sec->keys[j];
			kvf_buf_printf(out, "  # %s (%s; default: %s", k->help, type_names[k->type],
				       k->def && *k->def ? k->def : "none");
			if (k->type == KVF_CFG_ENUM || bounded(k)) {
				kvf_buf_puts(out, "; ");
				describe_range(k, out);
			}
			kvf_buf_printf(out, ")\n  %s = ", k->name);
			if (redact && is_secret(k))
				kvf_buf_puts(out, "\"<redacted>\"");
			else
				print_value(k, cfg->ents[i].storage, out);
			kvf_buf_puts(out, ";\n");
		}
		kvf_buf_puts(out, "};\n");
	}
	return out->oom ? KVF_E_NOMEM : 0;
}

int kvf_config_doc(const kvf_cfg_section *const *secs, size_t n, kvf_buf *out)
{
	for (size_t i = 0; i < n; i++) {
		const kvf_cfg_section *sec = secs[i];
		kvf_buf_printf(out, "## `%s`\n\n%s\n\n", sec->name, sec->help ? sec->help : "");
		kvf_buf_puts(out, "| key | type | default | range | description |\n|---|---|---|---|---|\n");
		for (size_t j = 0; j < sec->nkeys; j++) {
			const kvf_cfg_key *k = &sec->keys[j];
			if (k->def && *k->def)
				kvf_buf_printf(out, "| `%s` | %s | `%s` | ", k->name, type_names[k->type], k->def);
			else
				kvf_buf_printf(out, "| `%s` | %s | (empty) | ", k->name, type_names[k->type]);
			describe_range(k, out);
			kvf_buf_printf(out, " | %s |\n", k->help);
		}
		kvf_buf_puts(out, "\n");
	}
	return out->oom ? KVF_E_NOMEM : 0;
}

/* ---- command line ---- */

int kvf_config_cli(kvf_config *cfg, const char *prog, int argc, char **argv, const char *usage_extra,
		   int *exit_code)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "set", required_argument, NULL, 'o' },
		{ "print-config", no_argument, NULL, 'P' },
		{ "check", no_argument, NULL, 'C' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	const char *file = NULL;
	int print = 0, check = 0, c;
	/* Overrides apply after the file whatever their position: collect first. */
	const char **sets = kvf_calloc((size_t)argc + 1, sizeof(*sets));
	size_t nsets = 0;
	int rc = 0; /* -1: exit 0 now; >0: exit with it; 0: run */
	if (!sets) {
		fprintf(stderr, "%s: out of memory\n", prog);
		*exit_code = 1;
		return 1;
	}
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":c:o:h", opts, NULL)) != -1) {
		switch (c) {
		case 'c': file = optarg; break;
		case 'o': sets[nsets++] = optarg; break;
		case 'P': print = 1; break;
		case 'C': check = 1; break;
		case 'V':
			printf("%s %s\n", prog, KVF_VERSION);
			rc = -1;
			goto out;
		case 'h':
			printf("usage: %s [-c FILE] [-o section.key=value]... [--print-config] [--check]\n"
			       "  -c, --config FILE     libconfig file (one section per component)\n"
			       "  -o, --set S.K=V       override one key (repeatable, applied after FILE)\n"
			       "      --print-config    print the effective configuration and exit\n"
			       "      --check           validate the configuration and exit\n"
			       "      --version         print the version and exit\n%s",
			       prog, usage_extra ? usage_extra : "");
			rc = -1;
			goto out;
		case ':':
			fprintf(stderr, "%s: option %s needs an argument\n", prog, argv[optind - 1]);
			rc = 2;
			goto out;
		default:
			fprintf(stderr, "%s: unknown option %s (try --help)\n", prog, argv[optind - 1]);
			rc = 2;
			goto out;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "%s: unexpected argument '%s' (try --help)\n", prog, argv[optind]);
		rc = 2;
		goto out;
	}
	if (file && kvf_config_load_file(cfg, file)) {
		fprintf(stderr, "%s: config error: %s\n", prog, kvf_errmsg());
		rc = 2;
		goto out;
	}
	for (size_t i = 0; i < nsets; i++) {
		if (kvf_config_set(cfg, sets[i], "-o")) {
			fprintf(stderr, "%s: config error: %s\n", prog, kvf_errmsg());
			rc = 2;
			goto out;
		}
	}
	if (kvf_config_validate(cfg)) {
		fprintf(stderr, "%s: config error: %s\n", prog, kvf_errmsg());
		rc = 2;
		goto out;
	}
	if (print) {
		kvf_buf b = KVF_BUF_INIT;
		kvf_config_print(cfg, &b);
		fputs(b.data ? b.data : "", stdout);
		kvf_buf_free(&b);
		rc = -1;
	} else if (check) {
		printf("%s: configuration ok\n", prog);
		rc = -1;
	}
out:
	kvf_free(sets);
	if (rc == 0)
		return 0;
	*exit_code = rc < 0 ? 0 : rc;
	return 1;
}
