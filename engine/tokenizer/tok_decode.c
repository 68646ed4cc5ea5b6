/*
 * tok_decode.c: ids -> text, and the streaming detokenizer.
 *
 * Decoding is HF's TokenizerImpl::decode: ids become their token strings
 * (added tokens included, unknown ids skipped, special ones dropped on
 * request), then the decoder chain of tokenizer.json runs over the list of
 * strings, each decoder mapping a list to a list exactly as HF's
 * decode_chain does (ByteLevel joins everything into one lossily-decoded
 * string, ByteFallback turns runs of <0xXX> into text or one U+FFFD per byte,
 * Metaspace treats the list's first token specially, ...). Without a decoder
 * the tokens are joined with spaces, as in HF.
 *
 * The streaming detokenizer is HF's DecodeStream: it keeps a short window of
 * ids whose text was already returned (the prefix) and, for each new id,
 * decodes the window plus the id; when that text extends the prefix and
 * does not end in U+FFFD (an unfinished UTF-8 sequence), the extension is
 * returned and the window slides. Decoders that look at neighbours
 * (Metaspace's first-token rule, Strip) thus see the same context as a full
 * decode, and the chunks add up to decode(all ids).
 */
#include "engine/tokenizer/tok_internal.h"

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"

/* A list of strings: items index into one byte buffer. */
struct tlist {
	char *buf;
	size_t len, cap;
	struct tl_item {
		size_t off, len;
	} *it;
	size_t n, icap;
};

struct dec_scratch {
	struct tlist l[2];
	char *tmp;
	size_t tmp_len, tmp_cap;
};

static void scratch_free(struct dec_scratch *sc)
{
	for (int i = 0; i < 2; i++) {
		kvf_free(sc->l[i].buf);
		kvf_free(sc->l[i].it);
	}
	kvf_free(sc->tmp);
	memset(sc, 0, sizeof(*sc));
}

static void tl_reset(struct tlist *l)
{
	l->len = 0;
	l->n = 0;
}

/* Starts a new item; then tl_cat() appends to it. */
static int tl_new(struct tlist *l)
{
	/* buf is never NULL once an item exists, even an empty one */
	if (kvf_grow((void **)&l->it, &l->icap, l->n + 1, sizeof(*l->it)) != 0 ||
	    kvf_grow((void **)&l->buf, &l->cap, l->len + 1, 1) != 0)
		return KVF_E_NOMEM;
	l->it[l->n++] = (struct tl_item){ l->len, 0 };
	return 0;
}

static int tl_cat(struct tlist *l, const char *s, size_t n)
{
	if (kvf_grow((void **)&l->buf, &l->cap, l->len + n + 1, 1) != 0)
		return KVF_E_NOMEM;
	memcpy(l->buf + l->len, s, n);
	l->len += n;
	l->it[l->n - 1].len += n;
	return 0;
}

static int tl_push(struct tlist *l, const char *s, size_t n)
{
	int rc = tl_new(l);
	return rc ? rc : tl_cat(l, s, n);
}

static int dec_bytelevel(struct tlist *in, struct tlist *out, struct dec_scratch *sc)
{
	sc->tmp_len = 0;
	for (size_t i = 0; i < in->n; i++) {
		const unsigned char *s = (const unsigned char *)in->buf + in->it[i].off;
		size_t n = in->it[i].len;
		/* all characters in the alphabet? then their bytes, else the raw token */
		if (kvf_grow((void **)&sc->tmp, &sc->tmp_cap, sc->tmp_len + n + 1, 1) != 0)
			return KVF_E_NOMEM;
		size_t o = sc->tmp_len, k = 0;
		bool all = true;
		while (k < n) {
			uint32_t cp;
			size_t l = tok_utf8_dec(s + k, n - k, &cp);
			if (!l || cp >= 512 || tok_cp_byte[cp] < 0) {
				all = false;
				break;
			}
			sc->tmp[o++] = (char)tok_cp_byte[cp];
			k += l;
		}
		if (all) {
			sc->tmp_len = o;
		} else {
			memcpy(sc->tmp + sc->tmp_len, s, n);
			sc->tmp_len += n;
		}
	}
	int rc = tl_new(out);
	if (rc)
		return rc;
	size_t before = out->len;
	if (tok_append_lossy(&out->buf, &out->len, &out->cap, sc->tmp, sc->tmp_len) != 0)
		return KVF_E_NOMEM;
	out->it[out->n - 1].len = out->len - before;
	return 0;
}

static int byte_token(const char *s, size_t n)
{
	/* "<0xAB>" */
	if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>')
		return -1;
	int v = 0;
	for (int i = 3; i < 5; i++) {
		char c = s[i];
		int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
			: c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
		if (d < 0)
			return -1;
		v = v * 16 + d;
	}
	return v;
}

static int flush_bytes(struct tlist *out, struct dec_scratch *sc)
{
	if (sc->tmp_len == 0)
		return 0;
	int rc;
	if (tok_utf8_check(sc->tmp, sc->tmp_len) == sc->tmp_len) {
		rc = tl_push(out, sc->tmp, sc->tmp_len);
	} else {
		rc = 0;
		for (size_t i = 0; i < sc->tmp_len && !rc; i++)
			rc = tl_push(out, "\xEF\xBF\xBD", 3);
	}
	sc->tmp_len = 0;
	return rc;
}

static int dec_bytefallback(struct tlist *in, struct tlist *out, struct dec_scratch *sc)
{
	int rc;
	sc->tmp_len = 0;
	for (size_t i = 0; i < in->n; i++) {
		const char *s = in->buf + in->it[i].off;
		int b = byte_token(s, in->it[i].len);
		if (b >= 0) {
			if (kvf_grow((void **)&sc->tmp, &sc->tmp_cap, sc->tmp_len + 2, 1) != 0)
				return KVF_E_NOMEM;
			sc->tmp[sc->tmp_len++] = (char)b;
			continue;
		}
		if ((rc = flush_bytes(out, sc)) || (rc = tl_push(out, s, in->it[i].len)))
			return rc;
	}
	return flush_bytes(out, sc);
}

static int dec_replace(const struct tok_dec *d, struct tlist *in, struct tlist *out, pcre2_match_data *md)
{
	int rc;
	for (size_t i = 0; i < in->n; i++) {
		const char *s = in->buf + in->it[i].off;
		size_t n = in->it[i].len, pos = 0, prev = 0, ms, me;
		if ((rc = tl_new(out)))
			return rc;
		while (pos <= n) {
			rc = tok_regex_find(&d->re, md, s, n, pos, &ms, &me);
			if (rc < 0)
				return rc;
			if (rc == 0)
				break;
			if ((rc = tl_cat(out, s + prev, ms - prev)) || (rc = tl_cat(out, d->content, d->content_len)))
				return rc;
			prev = me;
			pos = me > ms ? me : me + 1;
		}
		if ((rc = tl_cat(out, s + prev, n - prev)))
			return rc;
	}
	return 0;
}

static int dec_strip(const struct tok_dec *d, struct tlist *in, struct tlist *out)
{
	char c[4];
	size_t cl = tok_utf8_enc(d->cp, c);
	for (size_t i = 0; i < in->n; i++) {
		const char *s = in->buf + in->it[i].off;
		size_t a = 0, b = in->it[i].len;
		for (size_t k = 0; k < d->start && b - a >= cl && !memcmp(s + a, c, cl); k++)
			a += cl;
		for (size_t k = 0; k < d->stop && b - a >= cl && !memcmp(s + b - cl, c, cl); k++)
			b -= cl;
		int rc = tl_push(out, s + a, b - a);
		if (rc)
			return rc;
	}
	return 0;
}

static int dec_metaspace(const struct tok_dec *d, struct tlist *in, struct tlist *out)
{
	char c[4];
	size_t cl = tok_utf8_enc(d->cp, c);
	int rc;
	for (size_t i = 0; i < in->n; i++) {
		const char *s = in->buf + in->it[i].off;
		size_t n = in->it[i].len, k = 0, prev = 0;
		bool drop = i == 0 && d->prepend_scheme != TPS_NEVER;
		if ((rc = tl_new(out)))
			return rc;
		while (k + cl <= n) {
			if (!memcmp(s + k, c, cl)) {
				if ((rc = tl_cat(out, s + prev, k - prev)))
					return rc;
				if (!drop && (rc = tl_cat(out, " ", 1)))
					return rc;
				k += cl;
				prev = k;
			} else {
				k++;
			}
		}
		if ((rc = tl_cat(out, s + prev, n - prev)))
			return rc;
	}
	return 0;
}

/* Runs the decoder chain; the result is the concatenation of the final list. */
static int decode_impl(const kvf_tokenizer *tok, const uint32_t *ids, size_t n, unsigned flags,
		       struct dec_scratch *sc, char **out, size_t *out_len)
{
	int rc = 0, r = 0;
	struct tlist *cur = &sc->l[0];
	tl_reset(cur);
	for (size_t i = 0; i < n; i++) {
		size_t l;
		const char *s = tok_id_str(tok, ids[i], &l);
		if (!s)
			continue; /* HF skips ids it does not know */
		if ((flags & KVF_DETOK_SKIP_SPECIAL) && (tok->id_flags[ids[i]] & TOKF_SPECIAL))
			continue;
		if ((rc = tl_push(cur, s, l)))
			return rc;
	}
	bool temporary = false;
	struct tok_ctx *ctx = NULL;
	for (size_t k = 0; k < tok->n_decs; k++) {
		const struct tok_dec *d = &tok->decs[k];
		struct tlist *in = &sc->l[r], *o = &sc->l[r ^ 1];
		tl_reset(o);
		switch (d->kind) {
		case TD_BYTELEVEL:
			rc = dec_bytelevel(in, o, sc);
			break;
		case TD_BYTEFALLBACK:
			rc = dec_bytefallback(in, o, sc);
			break;
		case TD_FUSE:
			rc = tl_new(o);
			for (size_t i = 0; i < in->n && !rc; i++)
				rc = tl_cat(o, in->buf + in->it[i].off, in->it[i].len);
			break;
		case TD_REPLACE:
			if (!ctx && !(ctx = tok_ctx_get(tok, &temporary))) {
				rc = KVF_E_NOMEM;
				break;
			}
			rc = dec_replace(d, in, o, ctx->md);
			break;
		case TD_STRIP:
			rc = dec_strip(d, in, o);
			break;
		case TD_METASPACE:
			rc = dec_metaspace(d, in, o);
			break;
		}
		if (rc)
			break;
		r ^= 1;
	}
	if (ctx)
		tok_ctx_put(ctx, temporary);
	if (rc)
		return rc == KVF_E_NOMEM ? kvf_errf(rc, "tokenizer: out of memory while decoding") : rc;
	cur = &sc->l[r];
	/* join: with spaces when there is no decoder */
	size_t total = 0;
	for (size_t i = 0; i < cur->n; i++)
		total += cur->it[i].len + 1;
	if (kvf_grow((void **)&sc->tmp, &sc->tmp_cap, total + 1, 1) != 0)
		return kvf_errf(KVF_E_NOMEM, "tokenizer: out of memory while decoding");
	size_t o = 0;
	for (size_t i = 0; i < cur->n; i++) {
		if (i && !tok->has_decoder)
			sc->tmp[o++] = ' ';
		memcpy(sc->tmp + o, cur->buf + cur->it[i].off, cur->it[i].len);
		o += cur->it[i].len;
	}
	sc->tmp[o] = '\0';
	sc->tmp_len = o;
	*out = sc->tmp;
	*out_len = o;
	return 0;
}

int kvf_tokenizer_decode(const kvf_tokenizer *tok, const uint32_t *ids, size_t n, unsigned flags, char **out,
			 size_t *out_len)
{
	if (!tok || !out || (!ids && n))
		return kvf_errf(KVF_E_INVAL, "kvf_tokenizer_decode: NULL argument");
	struct dec_scratch sc = { 0 };
	char *text;
	size_t len;
	int rc = decode_impl(tok, ids, n, flags, &sc, &text, &len);
	if (rc == 0) {
		*out = kvf_strndup(text, len);
		if (!*out)
			rc = kvf_errf(KVF_E_NOMEM, "tokenizer: out of memory while decoding");
		else if (out_len)
			*out_len = len;
	}
	scratch_free(&sc);
	return rc;
}

/* ---- streaming ------------------------------------------------------------ */

struct kvf_detok {
	const kvf_tokenizer *tok;
	unsigned flags;
	uint32_t *ids;
	size_t n, cap;
	size_t prefix_index;
	char *prefix;
	size_t prefix_len, prefix_cap;
	char *chunk;
	size_t chunk_len, chunk_cap;
	struct dec_scratch sc;
};

int kvf_detok_create(const kvf_tokenizer *tok, unsigned flags, kvf_detok **out)
{
	if (!tok || !out)
		return kvf_errf(KVF_E_INVAL, "kvf_detok_create: NULL argument");
	kvf_detok *d = kvf_calloc(1, sizeof(*d));
	if (!d)
		return kvf_errf(KVF_E_NOMEM, "tokenizer: out of memory");
	d->tok = tok;
	d->flags = flags;
	*out = d;
	return 0;
}

void kvf_detok_destroy(kvf_detok *d)
{
	if (!d)
		return;
	kvf_free(d->ids);
	kvf_free(d->prefix);
	kvf_free(d->chunk);
	scratch_free(&d->sc);
	kvf_free(d);
}

static int set_chunk(kvf_detok *d, const char *s, size_t n, const char **text, size_t *len)
{
	d->chunk_len = 0;
	if (tok_append(&d->chunk, &d->chunk_len, &d->chunk_cap, s, n) != 0)
		return kvf_errf(KVF_E_NOMEM, "tokenizer: out of memory");
	*text = d->chunk;
	*len = d->chunk_len;
	return 0;
}

/*
 * How much of the window's text s was already returned (the prefix). It is
 * the prefix itself, except when later bytes changed how earlier ones decode:
 * HF's ByteFallback turns a whole run of <0xXX> tokens into U+FFFDs when the
 * run as a whole is not valid UTF-8, so "é" returned from <0xC3><0xA9> can
 * become "���" once an <0xF0> follows. Text already returned cannot be taken
 * back; we skip as many characters as the prefix had and go on (HF's
 * DecodeStream fails there instead). Only invalid UTF-8 byte runs get here.
 */
static size_t emitted_part(const char *s, size_t sl, const char *prefix, size_t pl)
{
	if (pl == 0 || (sl >= pl && memcmp(s, prefix, pl) == 0))
		return pl;
	size_t chars = 0, i = 0;
	for (size_t k = 0; k < pl; k++)
		chars += ((unsigned char)prefix[k] & 0xC0) != 0x80;
	while (i < sl && chars) {
		i++;
		while (i < sl && ((unsigned char)s[i] & 0xC0) == 0x80)
			i++;
		chars--;
	}
	return i;
}

int kvf_detok_step(kvf_detok *d, uint32_t id, const char **text, size_t *len)
{
	if (!d || !text || !len)
		return kvf_errf(KVF_E_INVAL, "kvf_detok_step: NULL argument");
	*text = "";
	*len = 0;
	if (kvf_grow((void **)&d->ids, &d->cap, d->n + 1, sizeof(uint32_t)) != 0)
		return kvf_errf(KVF_E_NOMEM, "tokenizer: out of memory");
	d->ids[d->n++] = id;
	char *s;
	size_t sl;
	int rc = decode_impl(d->tok, d->ids, d->n, d->flags, &d->sc, &s, &sl);
	if (rc)
		return rc;
	bool unfinished = sl >= 3 && !memcmp(s + sl - 3, "\xEF\xBF\xBD", 3);
	if (sl <= d->prefix_len || unfinished)
		return 0;
	size_t skip = emitted_part(s, sl, d->prefix, d->prefix_len);
	if ((rc = set_chunk(d, s + skip, sl - skip, text, len)))
		return rc;
	size_t new_prefix_index = d->n - d->prefix_index;
	memmove(d->ids, d->ids + d->prefix_index, (d->n - d->prefix_index) * sizeof(uint32_t));
	d->n -= d->prefix_index;
	if ((rc = decode_impl(d->tok, d->ids, d->n, d->flags, &d->sc, &s, &sl)))
		return rc;
	d->prefix_len = 0;
	if (tok_append(&d->prefix, &d->prefix_len, &d->prefix_cap, s, sl) != 0)
		return kvf_errf(KVF_E_NOMEM, "tokenizer: out of memory");
	d->prefix_index = new_prefix_index;
	*text = d->chunk;
	*len = d->chunk_len;
	return 0;
}

int kvf_detok_flush(kvf_detok *d, const char **text, size_t *len)
{
	if (!d || !text || !len)
		return kvf_errf(KVF_E_INVAL, "kvf_detok_flush: NULL argument");
	*text = "";
	*len = 0;
	int rc = 0;
	if (d->n) {
		char *s;
		size_t sl;
		rc = decode_impl(d->tok, d->ids, d->n, d->flags, &d->sc, &s, &sl);
		size_t skip = rc ? 0 : emitted_part(s, sl, d->prefix, d->prefix_len);
		if (!rc && sl > skip)
			rc = set_chunk(d, s + skip, sl - skip, text, len);
	}
	d->n = 0;
	d->prefix_index = 0;
	d->prefix_len = 0;
	return rc;
}
