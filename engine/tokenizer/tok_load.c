/*
 * tok_load.c: tokenizer.json (+ tokenizer_config.json, chat_template.jinja,
 * generation_config.json) -> struct kvf_tokenizer.
 *
 * Each component is read the way HF tokenizers deserializes it, defaults
 * included (ByteLevel.add_prefix_space defaults to true, Metaspace's
 * prepend_scheme to "always", ...). Anything we do not implement fails with
 * KVF_E_UNSUPPORTED and the JSON path of the offending member, so a model
 * never loads with a tokenization that differs from HF's. padding and
 * truncation are batch-shaping options of HF's encode, not tokenization, and
 * are ignored.
 */
#include "engine/tokenizer/tok_internal.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"

#define PATH_MAX_LEN 4096

/* ---- small JSON helpers ----------------------------------------------- */

static const char *jstr(const json_t *o, const char *key, size_t *len)
{
	json_t *v = json_object_get(o, key);
	if (!json_is_string(v))
		return NULL;
	if (len)
		*len = json_string_length(v);
	return json_string_value(v);
}

static bool jbool(const json_t *o, const char *key, bool dflt)
{
	json_t *v = json_object_get(o, key);
	if (json_is_boolean(v))
		return json_is_true(v);
	return dflt;
}

/* Special-token fields of tokenizer_config.json: "<s>" or {"content": "<s>"}. */
static const char *jtoken(const json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);
	if (json_is_string(v))
		return json_string_value(v);
	if (json_is_object(v))
		return jstr(v, "content", NULL);
	return NULL;
}

static int type_of(const json_t *o, const char *path, const char **type)
{
	*type = jstr(o, "type", NULL);
	if (!*type)
		return kvf_errf(KVF_E_PARSE, "tokenizer.json: %s: missing \"type\"", path);
	return 0;
}

/* A {"String": "..."} or {"Regex": "..."} pattern. */
static int load_pattern(const json_t *o, const char *path, tok_regex *re)
{
	json_t *p = json_object_get(o, "pattern");
	char where[256];
	snprintf(where, sizeof(where), "tokenizer.json: %s.pattern", path);
	if (!json_is_object(p))
		return kvf_errf(KVF_E_PARSE, "%s: expected {\"String\": ...} or {\"Regex\": ...}", where);
	size_t len;
	const char *s = jstr(p, "String", &len);
	if (s) {
		if (len == 0)
			return kvf_errf(KVF_E_UNSUPPORTED, "%s: empty String pattern", where);
		return tok_regex_compile(re, s, len, true, where);
	}
	s = jstr(p, "Regex", &len);
	if (s)
		return tok_regex_compile(re, s, len, false, where);
	return kvf_errf(KVF_E_PARSE, "%s: expected {\"String\": ...} or {\"Regex\": ...}", where);
}

static int prepend_scheme(const json_t *o, const char *path, int *out)
{
	const char *ps = jstr(o, "prepend_scheme", NULL);
	*out = TPS_ALWAYS;
	if (ps) {
		if (!strcmp(ps, "always"))
			*out = TPS_ALWAYS;
		else if (!strcmp(ps, "first"))
			*out = TPS_FIRST;
		else if (!strcmp(ps, "never"))
			*out = TPS_NEVER;
		else
			return kvf_errf(KVF_E_UNSUPPORTED, "tokenizer.json: %s.prepend_scheme: \"%s\" is not supported",
					path, ps);
	}
	json_t *aps = json_object_get(o, "add_prefix_space");
	if (json_is_false(aps))
		*out = TPS_NEVER;
	return 0;
}

static int replacement_char(const json_t *o, const char *path, uint32_t *cp, char *buf, size_t *len)
{
	size_t l;
	const char *r = jstr(o, "replacement", &l);
	if (!r) {
		r = "\xE2\x96\x81"; /* U+2581 */
		l = 3;
	}
	size_t d = tok_utf8_dec((const unsigned char *)r, l, cp);
	if (d == 0 || d != l)
		return kvf_errf(KVF_E_PARSE, "tokenizer.json: %s.replacement: must be one character", path);
	memcpy(buf, r, l);
	*len = l;
	return 0;
}

/* ---- normalizers --------------------------------------------------------- */

static int add_norm(kvf_tokenizer *tok, const json_t *o, const char *path)
{
	const char *type;
	int rc = type_of(o, path, &type);
	if (rc)
		return rc;
	if (!strcmp(type, "Sequence")) {
		json_t *arr = json_object_get(o, "normalizers");
		if (!json_is_array(arr))
			return kvf_errf(KVF_E_PARSE, "tokenizer.json: %s.normalizers: expected an array", path);
		for (size_t i = 0; i < json_array_size(arr); i++) {
			char p[256];
			snprintf(p, sizeof(p), "%s.normalizers[%zu]", path, i);
			if ((rc = add_norm(tok, json_array_get(arr, i), p)))
				return rc;
		}
		return 0;
	}
	struct tok_norm nm = { 0 };
	if (!strcmp(type, "NFC")) {
		nm.kind = TN_NFC;
	} else if (!strcmp(type, "NFD")) {
		nm.kind = TN_NFD;
	} else if (!strcmp(type, "NFKC")) {
		nm.kind = TN_NFKC;
	} else if (!strcmp(type, "NFKD")) {
		nm.kind = TN_NFKD;
	} else if (!strcmp(type, "Prepend")) {
		size_t l;
		const char *s = jstr(o, "prepend", &l);
		if (!s)
			return kvf_errf(KVF_E_PARSE, "tokenizer.json: %s.prepend: expected a string", path);
		nm.kind = TN_PREPEND;
		nm.str = kvf_strndup(s, l);
		nm.str_len = l;
	} else if (!strcmp(type, "Replace")) {
		size_t l;
		const char *s = jstr(o, "content", &l);
		if (!s)
			return kvf_errf(KVF_E_PARSE, "tokenizer.json: %s.content: expected a string", path);
		nm.kind = TN_REPLACE;
		if ((rc = load_pattern(o, path, &nm.re)))
			return rc;
		nm.str = kvf_strndup(s, l);
		nm.str_len = l;
	} else if (!strcmp(type, "Strip")) {
		nm.kind = TN_STRIP;
		nm.left = jbool(o, "strip_left", true);
		nm.right = jbool(o, "strip_right", true);
	} else {
		return kvf_errf(KVF_E_UNSUPPORTED, "tokenizer.json: %s.type: normalizer \"%s\" is not supported",
				path, type);
	}
	if ((nm.kind == TN_PREPEND || nm.kind == TN_REPLACE) && !nm.str) {
		tok_regex_free(&nm.re);
		return kvf_errf(KVF_E_NOMEM, "tokenizer: out of memory");
	}
	if (kvf_grow((void **)&tok->norms, &(size_t){ tok->n_norms }, tok->n_norms + 1, sizeof(nm)) != 0) {
		tok_regex_free(&nm.re);
		kvf_free(nm.str);
		return kvf_errf(KVF_E_NOMEM, "tokenizer: out of memory");
	}
	tok->norms[tok->n_norms++] = nm;
	return 0;
}

/* ---- pre-tokenizers ---------------------------------------------------------- */

static int add_pretok(kvf_tokenizer *tok, const json_t *o, const char *path)
{
	const char *type;
	int rc = type_of(o, path, &type);
	if (rc)
		return rc;
	if (!strcmp(type, "Sequence")) {
		json_t *arr = json_object_get(o, "pretokenizers");
		if (!json_is_array(arr))
			return kvf_errf(KVF_E_PARSE, "tokenizer.json: %s.pretokenizers: expected an array", path);
		for (size_t i = 0; i < json_array_size(arr); i++) {
			char p[256];
			snprintf(p, sizeof(p), "%s.pretokenizers[%zu]", path, i);
			if ((rc = add_pretok(tok, json_array_get(arr, i), p)))
				return rc;
		}
		return 0;
	}
	struct tok_pretok pt = { 0 };
	if (!strcmp(type, "Split")) {
		const char *b = jstr(o, "behavior", NULL);
		pt.kind = TP_SPLIT;
		if (!b)
			return kvf_errf(KVF_E_PARSE, "tokenizer.json: %s.behavior: expected a string", path);
		if (!strcmp(b, "Removed"))
			pt.behavior = TB_REMOVED;
		else if (!strcmp(b, "Isolated"))
			pt.behavior = TB_ISOLATED;
		else if (!strcmp(b, "MergedWithPrevious"))
			pt.behavior = TB_MERGED_PREV;
		else if (!strcmp(b, "MergedWithNext"))
			pt.behavior = TB_MERGED_NEXT;
		else if (!strcmp(b, "Contiguous"))
			pt.behavior = TB_CONTIGUOUS;
		else
			return kvf_errf(KVF_E_UNSUPPORTED, "tokenizer.json: %s.behavior: \"%s\" is not supported",
					path, b);
		pt.invert = jbool(o, "invert", false);
		if ((rc = load_pattern(o, path, &pt.re)))
			return rc;
	} else if (!strcmp(type, "ByteLevel")) {
		pt.kind = TP_BYTELEVEL;
		pt.add_prefix_space = jbool(o, "add_prefix_space", true);
		pt.use_regex = jbool(o, "use_regex", true);
		tok_bytelevel_init();
		if (pt.use_regex && !tok_regex_gpt2())
			return kvf_errf(KVF_E_INTERNAL, "tokenizer: ByteLevel regex did not compile");
	} else if (!strcmp(type, "Metaspace")) {
		pt.kind = TP_METASPACE;
		if ((rc = replacement_char(o, path, &pt.repl_cp, pt.repl, &pt.repl_len)))
			return rc;
		if ((rc = prepend_scheme(o, path, &pt.prepend_scheme)))
			return rc;
		pt.split = jbool(o, "split", true);
	} else if (!strcmp(type, "Digits")) {
		pt.kind = TP_DIGITS;
		pt.individual_digits = jbool(o, "individual_digits", false);
	} else {
		return kvf_errf(KVF_E_UNSUPPORTED, "tokenizer.json: %s.type: pre-tokenizer \"%s\" is not supported",
				path, type);
	}
	if (kvf_grow((void **)&tok->pretoks, &(size_t){ tok->n_pretoks }, tok->n_pretoks + 1, sizeof(pt)) != 0) {
		tok_regex_free(&pt.re);
		return kvf_errf(KVF_E_NOMEM, "tokenizer: out of memory");
	}
	tok->pretoks[tok->n_pretoks++] = pt;
	return 0;
}

/* ---- decoders -------------------------------------------------------------- */

static int add_dec(kvf_tokenizer *tok, const json_t *o, const char *path)
{
	const char *type;
	int rc = type_of(o, path, &type);
	if (rc)
		return rc;
	if (!strcmp(type, "Sequence")) {
		json_t *arr = json_object_get(o, "decoders");
		if (!json_is_array(arr))
			return kvf_errf(KVF_E_PARSE, "tokenizer.json: %s.decoders: expected an array", path);
		for (size_t i = 0; i < json_array_size(arr); i++) {
			char p[256];
			snprintf(p, sizeof(p), "%s.decoders[%zu]", path, i);
			if ((rc = add_dec(tok, json_array_get(arr, i), p)))
				return rc;
		}
		return 0;
	}
	struct tok_dec d = { 0 };
	if (!strcmp(type, "ByteLevel")) {
		d.kind = TD_BYTELEVEL;
		tok_bytelevel_init();
	} else if (!strcmp(type, "ByteFallback")) {
		d.kind = TD_BYTEFALLBACK;
	} else if (!strcmp(type, "Fuse")) {
		d.kind = TD_FUSE;
	} else if (!strcmp(type, "Replace")) {
		size_t l;
		const char *s = jstr(o, "content", &l);
		if (!s)
			return kvf_errf(KVF_E_PARSE, "tokenizer.json: %s.content: expected a string", path);
		d.kind = TD_REPLACE;
		if ((rc = load_pattern(o, path, &d.re)))
			return rc;
		d.content = kvf_strndup(s, l);
		d.content_len = l;
		if (!d.content) {
			tok_regex_free(&d.re);
			return kvf_errf(KVF_E_NOMEM, "tokenizer: out of memory");
		}
	} else if (!strcmp(type, "Strip")) {
		size_t l;
		const char *c = jstr(o, "content", &l);
		d.kind = TD_STRIP;
		if (!c || tok_utf8_dec((const unsigned char *)c, l, &d.cp) != l || l == 0)
			return kvf_errf(KVF_E_PARSE, "tokenizer.json: %s.content: expected one character", path);
		json_t *st = json_object_get(o, "start"), *sp = json_object_get(o, "stop");
		d.start = json_is_integer(st) && json_integer_value(st) > 0 ? (size_t)json_integer_value(st) : 0;
		d.stop = json_is_integer(sp) && json_integer_value(sp) > 0 ? (size_t)json_integer_value(sp) : 0;
	} else if (!strcmp(type, "Metaspace")) {
		char buf[4];
		size_t l;
		d.kind = TD_METASPACE;
		if ((rc = replacement_char(o, path, &d.cp, buf, &l)))
			return rc;
		if ((rc = prepend_scheme(o, path, &d.prepend_scheme)))
			return rc;
	} else {
		return kvf_errf(KVF_E_UNSUPPORTED, "tokenizer.json: %s.type: decoder \"%s\" is not supported",
				path, type);
	}
	if (kvf_grow((void **)&tok->decs, &(size_t){ tok->n_decs }, tok->n_decs + 1, sizeof(d)) != 0) {
		tok_regex_free(&d.re);
		kvf_free(d.content);
		return kvf_errf(KVF_E_NOMEM, "tokenizer: out of memory");
	}
	tok->decs[tok->n_decs++] = d;
	return 0;
}

/* ---- post-processor ---------------------------------------------------------- */

static int post_add(kvf_tokenizer *tok, bool is_seq, const uint32_t *ids, size_t n)
{
	struct tok_post_item it = { is_seq, NULL, n };
	if (n) {
		it.ids = kvf_malloc(n * sizeof(uint32_t));
		if (!it.ids)
			return kvf_errf(KVF_E_NOMEM, "tokenizer: out of memory");
		memcpy(it.ids, ids, n * sizeof(uint32_t));
	}
	if (kvf_grow((void **)&tok->post, &(size_t){ tok->n_post }, tok->n_post + 1, sizeof(it)) != 0) {
		kvf_free(it.ids);
		return kvf_errf(KVF_E_NOMEM, "tokenizer: out of memory");
	}
	tok->post[tok->n_post++] = it;
	return 0;
}

/* ["<s>", 1] of Bert/RobertaProcessing */
static int post_pair_token(kvf_tokenizer *tok, const json_t *o, const char *key, const char *path)
{
	json_t *v = json_object_get(o, key);
	if (!json_is_array(v) || json_array_size(v) != 2 || !json_is_integer(json_array_get(v, 1)))
		return kvf_errf(KVF_E_PARSE, "tokenizer.json: %s.%s: expected [\"token\", id]", path, key);
	uint32_t id = (uint32_t)json_integer_value(json_array_get(v, 1));
	return post_add(tok, false, &id, 1);
}

static int load_post(kvf_tokenizer *tok, const json_t *o, const char *path, bool *have_template)
{
	const char *type;
	int rc = type_of(o, path, &type);
	if (rc)
		return rc;
	if (!strcmp(type, "Sequence")) {
		json_t *arr = json_object_get(o, "processors");
		if (!json_is_array(arr))
			return kvf_errf(KVF_E_PARSE, "tokenizer.json: %s.processors: expected an array", path);
		for (size_t i = 0; i < json_array_size(arr); i++) {
			char p[256];
			snprintf(p, sizeof(p), "%s.processors[%zu]", path, i);
			if ((rc = load_post(tok, json_array_get(arr, i), p, have_template)))
				return rc;
		}
		return 0;
	}
	if (!strcmp(type, "ByteLevel"))
		return 0; /* offsets only */
	if (*have_template)
		return kvf_errf(KVF_E_UNSUPPORTED, "tokenizer.json: %s: a second template post-processor", path);
	if (!strcmp(type, "TemplateProcessing")) {
		json_t *single = json_object_get(o, "single");
		json_t *specials = json_object_get(o, "special_tokens");
		if (!json_is_array(single))
			return kvf_errf(KVF_E_PARSE, "tokenizer.json: %s.single: expected an array", path);
		for (size_t i = 0; i < json_array_size(single); i++) {
			json_t *piece = json_array_get(single, i);
			json_t *seq = json_object_get(piece, "Sequence");
			json_t *sp = json_object_get(piece, "SpecialToken");
			if (seq) {
				rc = post_add(tok, true, NULL, 0);
			} else if (sp) {
				const char *name = jstr(sp, "id", NULL);
				json_t *ent = name ? json_object_get(specials, name) : NULL;
				json_t *ids = json_object_get(ent, "ids");
				if (!json_is_array(ids))
					return kvf_errf(KVF_E_PARSE,
							"tokenizer.json: %s.single[%zu]: special token \"%s\" missing from special_tokens",
							path, i, name ? name : "?");
				uint32_t buf[16];
				size_t n = json_array_size(ids);
				if (n > 16)
					return kvf_errf(KVF_E_UNSUPPORTED, "tokenizer.json: %s.special_tokens.%s: too many ids",
							path, name);
				for (size_t k = 0; k < n; k++)
					buf[k] = (uint32_t)json_integer_value(json_array_get(ids, k));
				rc = post_add(tok, false, buf, n);
			} else {
				return kvf_errf(KVF_E_PARSE, "tokenizer.json: %s.single[%zu]: unknown piece", path, i);
			}
			if (rc)
				return rc;
		}
	} else if (!strcmp(type, "BertProcessing") || !strcmp(type, "RobertaProcessing")) {
		if ((rc = post_pair_token(tok, o, "cls", path)) || (rc = post_add(tok, true, NULL, 0)) ||
		    (rc = post_pair_token(tok, o, "sep", path)))
			return rc;
	} else {
		return kvf_errf(KVF_E_UNSUPPORTED, "tokenizer.json: %s.type: post-processor \"%s\" is not supported",
				path, type);
	}
	*have_template = true;
	return 0;
}

/* ---- model and added tokens ------------------------------------------------------ */

static int set_id_str(kvf_tokenizer *tok, uint32_t id, const char *s, size_t len)
{
	if (id >= tok->n_ids)
		return kvf_errf(KVF_E_INTERNAL, "tokenizer: id %u out of table", id);
	if (kvf_grow((void **)&tok->pool, &tok->pool_cap, tok->pool_len + len + 1, 1) != 0)
		return kvf_errf(KVF_E_NOMEM, "tokenizer: out of memory");
	memcpy(tok->pool + tok->pool_len, s, len);
	tok->pool[tok->pool_len + len] = '\0';
	tok->id_str[id] = (tok_str){ (uint32_t)tok->pool_len, (uint32_t)len };
	tok->pool_len += len + 1;
	return 0;
}

static int trie_add(struct tok_trie *t, const char *s, size_t len, int32_t idx)
{
	if (len == 0)
		return 0;
	if (t->n == 0) {
		if (kvf_grow((void **)&t->nodes, &t->cap, 1, sizeof(*t->nodes)) != 0)
			return KVF_E_NOMEM;
		t->nodes[0] = (struct tok_trie_node){ 0, 0, -1, 0 };
		t->n = 1;
	}
	uint32_t node = 0;
	for (size_t i = 0; i < len; i++) {
		uint8_t b = (uint8_t)s[i];
		uint32_t ch = t->nodes[node].child;
		while (ch && t->nodes[ch].byte != b)
			ch = t->nodes[ch].sibling;
		if (!ch) {
			if (kvf_grow((void **)&t->nodes, &t->cap, t->n + 1, sizeof(*t->nodes)) != 0)
				return KVF_E_NOMEM;
			ch = (uint32_t)t->n++;
			t->nodes[ch] = (struct tok_trie_node){ 0, t->nodes[node].child, -1, b };
			t->nodes[node].child = ch;
		}
		node = ch;
	}
	t->nodes[node].added = idx;
	t->first[(uint8_t)s[0] >> 3] |= (uint8_t)(1u << ((uint8_t)s[0] & 7));
	t->empty = false;
	return 0;
}

static int load_model(kvf_tokenizer *tok, const json_t *model, const json_t *added)
{
	const char *type = jstr(model, "type", NULL);
	json_t *vocab = json_object_get(model, "vocab");
	json_t *merges = json_object_get(model, "merges");
	int rc;
	if (type && strcmp(type, "BPE") != 0)
		return kvf_errf(KVF_E_UNSUPPORTED, "tokenizer.json: model.type: \"%s\" is not supported (BPE only)", type);
	if (!json_is_object(vocab) || !json_is_array(merges))
		return kvf_errf(KVF_E_PARSE, "tokenizer.json: model: expected a BPE model with vocab and merges");
	json_t *dropout = json_object_get(model, "dropout");
	if (json_is_number(dropout) && json_number_value(dropout) != 0.0)
		return kvf_errf(KVF_E_UNSUPPORTED, "tokenizer.json: model.dropout: BPE dropout is not supported");

	/* id table size: max over vocab and added tokens */
	size_t max_id = 0;
	const char *key;
	json_t *val;
	json_object_foreach((json_t *)vocab, key, val) {
		if (!json_is_integer(val) || json_integer_value(val) < 0 || json_integer_value(val) > INT32_MAX)
			return kvf_errf(KVF_E_PARSE, "tokenizer.json: model.vocab[\"%s\"]: bad id", key);
		if ((size_t)json_integer_value(val) > max_id)
			max_id = (size_t)json_integer_value(val);
	}
	for (size_t i = 0; i < json_array_size(added); i++) {
		json_t *id = json_object_get(json_array_get(added, i), "id");
		if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) > INT32_MAX)
			return kvf_errf(KVF_E_PARSE, "tokenizer.json: added_tokens[%zu].id: bad id", i);
		if ((size_t)json_integer_value(id) > max_id)
			max_id = (size_t)json_integer_value(id);
	}
	tok->n_ids = max_id + 1;
	tok->id_str = kvf_malloc(tok->n_ids * sizeof(tok_str));
	tok->id_flags = kvf_calloc(tok->n_ids, 1);
	if (!tok->id_str || !tok->id_flags)
		return kvf_errf(KVF_E_NOMEM, "tokenizer: out of memory for %zu ids", tok->n_ids);
	for (size_t i = 0; i < tok->n_ids; i++)
		tok->id_str[i].len = UINT32_MAX;

	if ((rc = tok_strmap_init(&tok->vocab, json_object_size(vocab))))
		return rc;
	json_object_foreach((json_t *)vocab, key, val) {
		size_t klen = json_object_iter_key_len(json_object_key_to_iter(key));
		uint32_t id = (uint32_t)json_integer_value(val);
		if ((rc = tok_strmap_put(&tok->vocab, key, klen, id)) || (rc = set_id_str(tok, id, key, klen)))
			return rc;
	}

	/* options */
	size_t l;
	const char *s;
	if ((s = jstr(model, "continuing_subword_prefix", &l)) && l) {
		tok->cont_prefix = kvf_strndup(s, l);
		tok->cont_prefix_len = l;
		if (!tok->cont_prefix)
			return KVF_E_NOMEM;
	}
	if ((s = jstr(model, "end_of_word_suffix", &l)) && l) {
		tok->eow_suffix = kvf_strndup(s, l);
		tok->eow_suffix_len = l;
		if (!tok->eow_suffix)
			return KVF_E_NOMEM;
	}
	if ((s = jstr(model, "unk_token", &l))) {
		tok->has_unk = true;
		if (!tok_strmap_get(&tok->vocab, s, l, &tok->unk_id))
			tok->unk_id = UINT32_MAX; /* HF fails only when unk is needed */
	}
	tok->fuse_unk = jbool(model, "fuse_unk", false);
	tok->byte_fallback = jbool(model, "byte_fallback", false);
	tok->ignore_merges = jbool(model, "ignore_merges", false);
	for (int b = 0; b < 256; b++) {
		char name[8];
		uint32_t id;
		snprintf(name, sizeof(name), "<0x%02X>", b);
		tok->byte_tok[b] = tok_strmap_get(&tok->vocab, name, 6, &id) ? (int32_t)id : -1;
	}

	/* single-character fast table */
	if (!tok->cont_prefix_len && !tok->eow_suffix_len) {
		tok->char_id = kvf_malloc(0x10000 * sizeof(int32_t));
		if (!tok->char_id)
			return KVF_E_NOMEM;
		for (size_t i = 0; i < 0x10000; i++)
			tok->char_id[i] = -1;
		json_object_foreach((json_t *)vocab, key, val) {
			size_t klen = json_object_iter_key_len(json_object_key_to_iter(key));
			uint32_t cp;
			if (klen <= 3 && tok_utf8_dec((const unsigned char *)key, klen, &cp) == klen && cp < 0x10000)
				tok->char_id[cp] = (int32_t)json_integer_value(val);
		}
	}

	/* merges */
	size_t nm = json_array_size(merges);
	if ((rc = tok_pairmap_init(&tok->merges, nm)))
		return rc;
	char *buf = NULL;
	size_t bcap = 0;
	uint32_t rank = 0;
	for (size_t i = 0; i < nm; i++) {
		json_t *m = json_array_get(merges, i);
		const char *a, *b;
		size_t al, bl;
		if (json_is_string(m)) {
			const char *line = json_string_value(m);
			size_t ll = json_string_length(m);
			if (ll >= 8 && !memcmp(line, "#version", 8))
				continue;
			const char *sp = memchr(line, ' ', ll);
			if (!sp || memchr(sp + 1, ' ', ll - (size_t)(sp + 1 - line))) {
				kvf_free(buf);
				return kvf_errf(KVF_E_PARSE, "tokenizer.json: model.merges[%zu]: expected \"a b\"", i);
			}
			a = line;
			al = (size_t)(sp - line);
			b = sp + 1;
			bl = ll - al - 1;
		} else if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
			   json_is_string(json_array_get(m, 1))) {
			a = json_string_value(json_array_get(m, 0));
			al = json_string_length(json_array_get(m, 0));
			b = json_string_value(json_array_get(m, 1));
			bl = json_string_length(json_array_get(m, 1));
		} else {
			kvf_free(buf);
			return kvf_errf(KVF_E_PARSE, "tokenizer.json: model.merges[%zu]: expected \"a b\" or [\"a\", \"b\"]", i);
		}
		uint32_t ida, idb, idm;
		if (!tok_strmap_get(&tok->vocab, a, al, &ida) || !tok_strmap_get(&tok->vocab, b, bl, &idb)) {
			kvf_free(buf);
			return kvf_errf(KVF_E_PARSE, "tokenizer.json: model.merges[%zu]: a part is not in model.vocab", i);
		}
		size_t pl = tok->cont_prefix_len;
		if (bl < pl) {
			kvf_free(buf);
			return kvf_errf(KVF_E_PARSE, "tokenizer.json: model.merges[%zu]: shorter than the subword prefix", i);
		}
		if (kvf_grow((void **)&buf, &bcap, al + bl, 1) != 0) {
			kvf_free(buf);
			return KVF_E_NOMEM;
		}
		memcpy(buf, a, al);
		memcpy(buf + al, b + pl, bl - pl);
		if (!tok_strmap_get(&tok->vocab, buf, al + bl - pl, &idm)) {
			kvf_free(buf);
			return kvf_errf(KVF_E_PARSE, "tokenizer.json: model.merges[%zu]: merged token is not in model.vocab", i);
		}
		tok_pairmap_put(&tok->merges, ida, idb, rank++, idm);
	}
	kvf_free(buf);
	return 0;
}

static int load_added(kvf_tokenizer *tok, const json_t *added)
{
	size_t n = json_array_size(added);
	int rc;
	if ((rc = tok_strmap_init(&tok->added_map, n + 1)))
		return rc;
	if (n == 0) {
		tok->trie_raw.empty = tok->trie_norm.empty = true;
		return 0;
	}
	tok->added = kvf_calloc(n, sizeof(*tok->added));
	if (!tok->added)
		return KVF_E_NOMEM;
	for (size_t i = 0; i < n; i++) {
		json_t *o = json_array_get(added, i);
		size_t l;
		const char *c = jstr(o, "content", &l);
		if (!c)
			return kvf_errf(KVF_E_PARSE, "tokenizer.json: added_tokens[%zu].content: expected a string", i);
		if (l == 0)
			continue; /* HF ignores empty tokens */
		struct tok_added a = { 0 };
		a.id = (uint32_t)json_integer_value(json_object_get(o, "id"));
		uint32_t existing;
		if (tok_strmap_get(&tok->vocab, c, l, &existing) || tok_strmap_get(&tok->added_map, c, l, &existing))
			a.id = existing;
		a.special = jbool(o, "special", false);
		a.lstrip = jbool(o, "lstrip", false);
		a.rstrip = jbool(o, "rstrip", false);
		a.single_word = jbool(o, "single_word", false);
		a.normalized = jbool(o, "normalized", !a.special);
		a.content = kvf_strndup(c, l);
		a.len = l;
		if (!a.content)
			return KVF_E_NOMEM;
		tok->added[tok->n_added++] = a;
		if ((rc = tok_strmap_put(&tok->added_map, c, l, a.id)) || (rc = set_id_str(tok, a.id, c, l)))
			return rc;
		tok->id_flags[a.id] = TOKF_ADDED | (a.special ? TOKF_SPECIAL : 0);
	}
	return 0;
}

/* Builds the two tries; normalized tokens match their normalized form. */
static int build_tries(kvf_tokenizer *tok)
{
	int rc;
	tok->trie_raw.empty = tok->trie_norm.empty = true;
	for (size_t i = 0; i < tok->n_added; i++) {
		struct tok_added *a = &tok->added[i];
		/* a later duplicate of the same content wins, as in HF's maps */
		uint32_t id;
		if (tok_strmap_get(&tok->added_map, a->content, a->len, &id) && id != a->id)
			continue;
		if (a->normalized) {
			if (tok->n_norms) {
				if ((rc = tok_normalize_string(tok, a->content, a->len, &a->norm, &a->norm_len)))
					return rc;
			}
			const char *p = a->norm ? a->norm : a->content;
			size_t pl = a->norm ? a->norm_len : a->len;
			if (trie_add(&tok->trie_norm, p, pl, (int32_t)i))
				return KVF_E_NOMEM;
			/* decoding uses the normalized form (simple_id_to_token) */
			if (a->norm && (rc = set_id_str(tok, a->id, a->norm, a->norm_len)))
				return rc;
		} else if (trie_add(&tok->trie_raw, a->content, a->len, (int32_t)i)) {
			return KVF_E_NOMEM;
		}
	}
	return 0;
}

/* ---- entry points ------------------------------------------------------------ */

static int tok_new(kvf_tokenizer **out)
{
	kvf_tokenizer *tok = kvf_calloc(1, sizeof(*tok));
	if (!tok)
		return kvf_errf(KVF_E_NOMEM, "tokenizer: out of memory");
	tok->bos_id = tok->eos_id = -1;
	pthread_mutex_init(&tok->ctx_lock, NULL);
	tok->tls_ok = pthread_key_create(&tok->tls_key, tok_ctx_thread_exit) == 0;
	*out = tok;
	return 0;
}

void kvf_tokenizer_destroy(kvf_tokenizer *tok)
{
	if (!tok)
		return;
	tok_ctx_destroy_all(tok);
	if (tok->tls_ok)
		pthread_key_delete(tok->tls_key);
	pthread_mutex_destroy(&tok->ctx_lock);
	tok_strmap_free(&tok->vocab);
	tok_pairmap_free(&tok->merges);
	tok_strmap_free(&tok->added_map);
	kvf_free(tok->pool);
	kvf_free(tok->id_str);
	kvf_free(tok->id_flags);
	kvf_free(tok->char_id);
	kvf_free(tok->cont_prefix);
	kvf_free(tok->eow_suffix);
	for (size_t i = 0; i < tok->n_added; i++) {
		kvf_free(tok->added[i].content);
		kvf_free(tok->added[i].norm);
	}
	kvf_free(tok->added);
	kvf_free(tok->trie_raw.nodes);
	kvf_free(tok->trie_norm.nodes);
	for (size_t i = 0; i < tok->n_norms; i++) {
		tok_regex_free(&tok->norms[i].re);
		kvf_free(tok->norms[i].str);
	}
	kvf_free(tok->norms);
	for (size_t i = 0; i < tok->n_pretoks; i++)
		tok_regex_free(&tok->pretoks[i].re);
	kvf_free(tok->pretoks);
	for (size_t i = 0; i < tok->n_decs; i++) {
		tok_regex_free(&tok->decs[i].re);
		kvf_free(tok->decs[i].content);
	}
	kvf_free(tok->decs);
	for (size_t i = 0; i < tok->n_post; i++)
		kvf_free(tok->post[i].ids);
	kvf_free(tok->post);
	kvf_free(tok->bos_token);
	kvf_free(tok->eos_token);
	kvf_free(tok->unk_token);
	kvf_free(tok->pad_token);
	kvf_chat_template_destroy(tok->chat);
	kvf_free(tok);
}

static int load_json(kvf_tokenizer *tok, const json_t *root)
{
	int rc;
	json_t *model = json_object_get(root, "model");
	json_t *added = json_object_get(root, "added_tokens");
	if (!json_is_object(model))
		return kvf_errf(KVF_E_PARSE, "tokenizer.json: missing \"model\"");
	if (added && !json_is_array(added) && !json_is_null(added))
		return kvf_errf(KVF_E_PARSE, "tokenizer.json: added_tokens: expected an array");
	if ((rc = load_model(tok, model, added)))
		return rc;
	if ((rc = load_added(tok, added)))
		return rc;
	json_t *v;
	if ((v = json_object_get(root, "normalizer")) && !json_is_null(v) && (rc = add_norm(tok, v, "normalizer")))
		return rc;
	if ((v = json_object_get(root, "pre_tokenizer")) && !json_is_null(v) &&
	    (rc = add_pretok(tok, v, "pre_tokenizer")))
		return rc;
	bool have_template = false;
	if ((v = json_object_get(root, "post_processor")) && !json_is_null(v) &&
	    (rc = load_post(tok, v, "post_processor", &have_template)))
		return rc;
	if ((v = json_object_get(root, "decoder")) && !json_is_null(v)) {
		tok->has_decoder = true;
		if ((rc = add_dec(tok, v, "decoder")))
			return rc;
	}
	return build_tries(tok);
}

static void add_stop(kvf_tokenizer *tok, uint32_t id)
{
	for (size_t i = 0; i < tok->n_stop_ids; i++)
		if (tok->stop_ids[i] == id)
			return;
	if (tok->n_stop_ids < sizeof(tok->stop_ids) / sizeof(tok->stop_ids[0]))
		tok->stop_ids[tok->n_stop_ids++] = id;
}

static int set_token(kvf_tokenizer *tok, char **dst, const char *s)
{
	if (!s)
		return 0;
	*dst = kvf_strdup(s);
	return *dst ? 0 : KVF_E_NOMEM;
}

static int read_file(const char *path, char **out, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return kvf_err_from_errno(errno);
	struct stat st;
	if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
		fclose(f);
		return KVF_E_IO;
	}
	size_t n = (size_t)st.st_size;
	char *b = kvf_malloc(n + 1);
	if (!b) {
		fclose(f);
		return KVF_E_NOMEM;
	}
	if (fread(b, 1, n, f) != n) {
		kvf_free(b);
		fclose(f);
		return KVF_E_IO;
	}
	fclose(f);
	b[n] = '\0';
	*out = b;
	*len = n;
	return 0;
}

int tok_load_config(kvf_tokenizer *tok, const char *config_json, size_t len, const char *dir)
{
	int rc = 0;
	json_t *cfg = NULL;
	if (config_json) {
		json_error_t jerr;
		/* model_max_length is often 1e30, beyond int64 */
		cfg = json_loadb(config_json, len, JSON_DECODE_INT_AS_REAL, &jerr);
		if (!cfg || !json_is_object(cfg)) {
			json_decref(cfg);
			return kvf_errf(KVF_E_PARSE, "tokenizer_config.json: line %d: %s", jerr.line, jerr.text);
		}
		if ((rc = set_token(tok, &tok->bos_token, jtoken(cfg, "bos_token"))) ||
		    (rc = set_token(tok, &tok->eos_token, jtoken(cfg, "eos_token"))) ||
		    (rc = set_token(tok, &tok->unk_token, jtoken(cfg, "unk_token"))) ||
		    (rc = set_token(tok, &tok->pad_token, jtoken(cfg, "pad_token"))))
			goto out;
		json_t *ct = json_object_get(cfg, "chat_template");
		const char *src = NULL;
		size_t src_len = 0;
		if (json_is_string(ct)) {
			src = json_string_value(ct);
			src_len = json_string_length(ct);
		} else if (json_is_array(ct)) { /* [{"name": "default", "template": ...}, ...] */
			for (size_t i = 0; i < json_array_size(ct); i++) {
				json_t *e = json_array_get(ct, i);
				const char *name = jstr(e, "name", NULL);
				if (name && !strcmp(name, "default"))
					src = jstr(e, "template", &src_len);
			}
		}
		if (src && (rc = kvf_tokenizer_set_chat_template(tok, src, src_len)))
			goto out;
	}
	if (dir) {
		char path[PATH_MAX_LEN + 32];
		char *text;
		size_t tl;
		snprintf(path, sizeof(path), "%s/chat_template.jinja", dir);
		if (!tok->chat && read_file(path, &text, &tl) == 0) {
			rc = kvf_tokenizer_set_chat_template(tok, text, tl);
			kvf_free(text);
			if (rc)
				goto out;
		}
		snprintf(path, sizeof(path), "%s/generation_config.json", dir);
		if (read_file(path, &text, &tl) == 0) {
			json_t *g = json_loadb(text, tl, 0, NULL);
			kvf_free(text);
			json_t *e = json_object_get(g, "eos_token_id");
			if (json_is_integer(e) && json_integer_value(e) >= 0)
				add_stop(tok, (uint32_t)json_integer_value(e));
			for (size_t i = 0; json_is_array(e) && i < json_array_size(e); i++)
				if (json_is_integer(json_array_get(e, i)) && json_integer_value(json_array_get(e, i)) >= 0)
					add_stop(tok, (uint32_t)json_integer_value(json_array_get(e, i)));
			json_decref(g);
		}
	}
	uint32_t id;
	if (tok->bos_token && kvf_tokenizer_token_id(tok, tok->bos_token, &id) == 0)
		tok->bos_id = (int32_t)id;
	if (tok->eos_token && kvf_tokenizer_token_id(tok, tok->eos_token, &id) == 0) {
		tok->eos_id = (int32_t)id;
		add_stop(tok, id);
	}
	static const char *const enders[] = { "<|eot_id|>", "<|im_end|>", "<|end_of_text|>", "<|endoftext|>",
					      "<|eom_id|>" };
	for (size_t i = 0; i < sizeof(enders) / sizeof(enders[0]); i++) {
		uint32_t eid;
		if (tok_strmap_get(&tok->added_map, enders[i], strlen(enders[i]), &eid))
			add_stop(tok, eid);
	}
	kvf_err_clear();
out:
	json_decref(cfg);
	return rc;
}

static int tok_load_impl(const char *tokenizer_json, size_t len, const char *config_json, size_t config_len,
			 const char *dir, kvf_tokenizer **out)
{
	if (!tokenizer_json || !out)
		return kvf_errf(KVF_E_INVAL, "kvf_tokenizer_load: NULL argument");
	kvf_tokenizer *tok = NULL;
	int rc = tok_new(&tok);
	if (rc)
		return rc;
	json_error_t jerr;
	json_t *root = json_loadb(tokenizer_json, len, JSON_ALLOW_NUL, &jerr);
	if (!root || !json_is_object(root)) {
		rc = kvf_errf(KVF_E_PARSE, "tokenizer.json: line %d column %d: %s", jerr.line, jerr.column,
			      root ? "expected an object" : jerr.text);
		goto fail;
	}
	if ((rc = load_json(tok, root)))
		goto fail;
	if ((rc = tok_load_config(tok, config_json, config_len, dir)))
		goto fail;
	json_decref(root);
	*out = tok;
	return 0;
fail:
	if (rc == KVF_E_NOMEM && !strstr(kvf_errmsg(), "memory"))
		kvf_errf(KVF_E_NOMEM, "tokenizer: out of memory while loading");
	json_decref(root);
	kvf_tokenizer_destroy(tok);
	return rc;
}

int kvf_tokenizer_load_mem(const char *tokenizer_json, size_t len, const char *config_json, size_t config_len,
			   kvf_tokenizer **out)
{
	return tok_load_impl(tokenizer_json, len, config_json, config_len, NULL, out);
}

int kvf_tokenizer_load(const char *path, kvf_tokenizer **out)
{
	if (!path || !out)
		return kvf_errf(KVF_E_INVAL, "kvf_tokenizer_load: NULL argument");
	char dir[PATH_MAX_LEN], file[PATH_MAX_LEN + 32], cfgpath[PATH_MAX_LEN + 32];
	struct stat st;
	if (stat(path, &st) != 0)
		return kvf_errf(kvf_err_from_errno(errno), "%s: %s", path, strerror(errno));
	if (S_ISDIR(st.st_mode)) {
		snprintf(dir, sizeof(dir), "%s", path);
		snprintf(file, sizeof(file), "%s/tokenizer.json", path);
	} else {
		snprintf(file, sizeof(file), "%s", path);
		snprintf(dir, sizeof(dir), "%s", path);
		char *slash = strrchr(dir, '/');
		if (slash)
			*slash = '\0';
		else
			snprintf(dir, sizeof(dir), ".");
	}
	char *text = NULL, *cfg = NULL;
	size_t tl = 0, cl = 0;
	int rc = read_file(file, &text, &tl);
	if (rc)
		return kvf_errf(rc, "%s: cannot read (%s)", file, kvf_strerror(rc));
	snprintf(cfgpath, sizeof(cfgpath), "%s/tokenizer_config.json", dir);
	if (read_file(cfgpath, &cfg, &cl) != 0)
		cfg = NULL;
	rc = tok_load_impl(text, tl, cfg, cl, dir, out);
	kvf_free(text);
	kvf_free(cfg);
	return rc;
}

/* ---- queries ------------------------------------------------------------------ */

int kvf_tokenizer_token_id(const kvf_tokenizer *tok, const char *token, uint32_t *id)
{
	if (!tok || !token || !id)
		return kvf_errf(KVF_E_INVAL, "kvf_tokenizer_token_id: NULL argument");
	size_t l = strlen(token);
	if (tok_strmap_get(&tok->added_map, token, l, id) || tok_strmap_get(&tok->vocab, token, l, id))
		return 0;
	return kvf_errf(KVF_E_NOTFOUND, "tokenizer: no token \"%s\"", token);
}

const char *kvf_tokenizer_id_token(const kvf_tokenizer *tok, uint32_t id, size_t *len)
{
	size_t l;
	const char *s = tok ? tok_id_str(tok, id, &l) : NULL;
	if (s && len)
		*len = l;
	return s;
}

size_t kvf_tokenizer_vocab_size(const kvf_tokenizer *tok)
{
	return tok ? tok->n_ids : 0;
}

bool kvf_tokenizer_is_special(const kvf_tokenizer *tok, uint32_t id)
{
	return tok && id < tok->n_ids && (tok->id_flags[id] & TOKF_SPECIAL);
}

int32_t kvf_tokenizer_bos_id(const kvf_tokenizer *tok)
{
	return tok ? tok->bos_id : -1;
}

int32_t kvf_tokenizer_eos_id(const kvf_tokenizer *tok)
{
	return tok ? tok->eos_id : -1;
}

size_t kvf_tokenizer_eos_ids(const kvf_tokenizer *tok, uint32_t *ids, size_t cap)
{
	size_t n = 0;
	for (; tok && n < tok->n_stop_ids && n < cap; n++)
		ids[n] = tok->stop_ids[n];
	return n;
}
