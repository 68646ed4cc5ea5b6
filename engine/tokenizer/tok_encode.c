/*
 * tok_encode.c: text -> ids, the pipeline of HF tokenizers'
 * TokenizerImpl::encode for one sequence:
 *
 *   1. split out added tokens that match the raw text (normalized=false),
 *      leftmost-longest, with their lstrip/rstrip/single_word rules;
 *   2. normalize each remaining piece, then split out the added tokens that
 *      match normalized text (normalized=true);
 *   3. run the pre-tokenizers over the pieces (Split, ByteLevel, Metaspace,
 *      Digits), each refining the list;
 *   4. BPE each piece (tok_bpe.c), added tokens keep their id;
 *   5. with KVF_TOK_ADD_SPECIAL, the post-processor's template.
 *
 * Pieces are (offset, length) into one per-call text buffer: a step that
 * changes text appends its output and points the new pieces at it, so no
 * step allocates per piece. Empty pieces are dropped, as HF drops them.
 *
 * Threads: all mutable state is a struct tok_ctx found through a pthread key
 * of the tokenizer, created on a thread's first call and linked into the
 * tokenizer's list (under a mutex, once per thread) so destroy can free
 * every thread's context; a thread's exit frees its own. When no key could
 * be created (PTHREAD_KEYS_MAX), each call uses a temporary context.
 */
#include "engine/tokenizer/tok_internal.h"

#include <stdlib.h>
#include <utf8proc.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"

/* ---- per-thread contexts --------------------------------------------- */

static void ctx_free(struct tok_ctx *ctx)
{
	if (!ctx)
		return;
	if (ctx->md)
		pcre2_match_data_free(ctx->md);
	free(ctx->buf);
	free(ctx->sp[0]);
	free(ctx->sp[1]);
	free(ctx->syms);
	free(ctx->heap);
	free(ctx->wids);
	free(ctx->tmp);
	free(ctx->mt);
	free(ctx->seq);
	free(ctx->cache);
	free(ctx->ckeys);
	free(ctx->cids);
	if (ctx->segs)
		for (size_t i = 0; i < TOK_SEG_SLOTS; i++) {
			free(ctx->segs[i].text);
			free(ctx->segs[i].ids);
		}
	free(ctx->segs);
	free(ctx->pieces);
	free(ctx);
}

static struct tok_ctx *ctx_new(const kvf_tokenizer *tok, bool with_cache)
{
	struct tok_ctx *ctx = calloc(1, sizeof(*ctx));
	if (!ctx)
		return NULL;
	ctx->tok = tok;
	/* enough ovector pairs for any pattern we compile (we only read [0]) */
	ctx->md = pcre2_match_data_create(64, NULL);
	if (!ctx->md)
		goto fail;
	if (with_cache) {
		ctx->cache = calloc(TOK_CACHE_SLOTS, sizeof(*ctx->cache));
		ctx->ckeys = malloc(TOK_CACHE_KEY_BYTES);
		ctx->cids = malloc(TOK_CACHE_IDS * sizeof(uint32_t));
		ctx->segs = calloc(TOK_SEG_SLOTS, sizeof(*ctx->segs));
		if (!ctx->cache || !ctx->ckeys || !ctx->cids || !ctx->segs)
			goto fail;
	}
	return ctx;
fail:
	ctx_free(ctx);
	return NULL;
}

static void ctx_unlink(kvf_tokenizer *tok, struct tok_ctx *ctx)
{
	if (ctx->prev)
		ctx->prev->next = ctx->next;
	else
		tok->ctx_list = ctx->next;
	if (ctx->next)
		ctx->next->prev = ctx->prev;
	ctx->prev = ctx->next = NULL;
}

void tok_ctx_thread_exit(void *p)
{
	struct tok_ctx *ctx = p;
	kvf_tokenizer *tok = (kvf_tokenizer *)ctx->tok;
	pthread_mutex_lock(&tok->ctx_lock);
	ctx_unlink(tok, ctx);
	tok->seg_hits_gone += ctx->seg_hits;
	tok->seg_misses_gone += ctx->seg_misses;
	pthread_mutex_unlock(&tok->ctx_lock);
	ctx_free(ctx);
}

struct tok_ctx *tok_ctx_get(const kvf_tokenizer *ctok, bool *temporary)
{
	kvf_tokenizer *tok = (kvf_tokenizer *)ctok; /* only the context list is written */
	struct tok_ctx *ctx;
	*temporary = true;
	if (tok->tls_ok) {
		ctx = pthread_getspecific(tok->tls_key);
		if (ctx) {
			*temporary = false;
			return ctx;
		}
		ctx = ctx_new(tok, true);
		if (!ctx)
			return NULL;
		if (pthread_setspecific(tok->tls_key, ctx) == 0) {
			pthread_mutex_lock(&tok->ctx_lock);
			ctx->next = tok->ctx_list;
			if (ctx->next)
				ctx->next->prev = ctx;
			tok->ctx_list = ctx;
			ctx->registered = true;
			pthread_mutex_unlock(&tok->ctx_lock);
			*temporary = false;
			return ctx;
		}
		ctx_free(ctx);
	}
	return ctx_new(tok, false);
}

void tok_ctx_put(struct tok_ctx *ctx, bool temporary)
{
	if (temporary)
		ctx_free(ctx);
}

void tok_ctx_destroy_all(kvf_tokenizer *tok)
{
	pthread_mutex_lock(&tok->ctx_lock);
	struct tok_ctx *ctx = tok->ctx_list;
	tok->ctx_list = NULL;
	pthread_mutex_unlock(&tok->ctx_lock);
	while (ctx) {
		struct tok_ctx *next = ctx->next;
		ctx_free(ctx);
		ctx = next;
	}
}

void kvf_tokenizer_cache_stats(const kvf_tokenizer *ctok, uint64_t *hits, uint64_t *misses)
{
	kvf_tokenizer *tok = (kvf_tokenizer *)ctok; /* the lock only */
	pthread_mutex_lock(&tok->ctx_lock);
	uint64_t h = tok->seg_hits_gone, m = tok->seg_misses_gone;
	for (struct tok_ctx *c = tok->ctx_list; c; c = c->next) {
		h += __atomic_load_n(&c->seg_hits, __ATOMIC_RELAXED);
		m += __atomic_load_n(&c->seg_misses, __ATOMIC_RELAXED);
	}
	pthread_mutex_unlock(&tok->ctx_lock);
	*hits = h;
	*misses = m;
}

/* ---- buffers ------------------------------------------------------------ */

static int buf_reserve(struct tok_ctx *ctx, size_t more)
{
	if (ctx->buf_len + more >= UINT32_MAX)
		return kvf_errf(KVF_E_TOOBIG, "tokenizer: text too large (4 GiB per call)");
	if (tok_raw_grow((void **)&ctx->buf, &ctx->buf_cap, ctx->buf_len + more + 1, 1) != 0)
		return kvf_errf(KVF_E_NOMEM, "tokenizer: out of memory");
	return 0;
}

/* Appends bytes to the call's text buffer; *off receives their offset. The
 * source must not point into ctx->buf (use buf_copy for that). */
static int buf_add(struct tok_ctx *ctx, const char *s, size_t n, uint32_t *off)
{
	int rc = buf_reserve(ctx, n);
	if (rc)
		return rc;
	memcpy(ctx->buf + ctx->buf_len, s, n);
	*off = (uint32_t)ctx->buf_len;
	ctx->buf_len += n;
	return 0;
}

static int push(struct tok_ctx *ctx, int w, uint32_t off, uint32_t len, int32_t id, bool origin0)
{
	if (len == 0 && id < 0)
		return 0;
	if (tok_raw_grow((void **)&ctx->sp[w], &ctx->sp_cap[w], ctx->sp_n[w] + 1, sizeof(struct tok_split)) != 0)
		return kvf_errf(KVF_E_NOMEM, "tokenizer: out of memory");
	ctx->sp[w][ctx->sp_n[w]++] = (struct tok_split){ off, len, id, origin0 };
	return 0;
}

static int add_match(struct tok_ctx *ctx, size_t *n, size_t s, size_t e, bool m)
{
	if (tok_raw_grow((void **)&ctx->mt, &ctx->mt_cap, *n + 1, sizeof(*ctx->mt)) != 0)
		return kvf_errf(KVF_E_NOMEM, "tokenizer: out of memory");
	ctx->mt[(*n)++] = (struct tok_match){ (uint32_t)s, (uint32_t)e, m };
	return 0;
}

/* ---- added tokens ------------------------------------------------------- */

/* Leftmost-longest match of the trie at or after pos: index into
 * tok->added, or -1. */
static int trie_find(const struct tok_trie *t, const char *s, size_t n, size_t pos, size_t *ms, size_t *me)
{
	for (size_t i = pos; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (!(t->first[c >> 3] & (1u << (c & 7))))
			continue;
		uint32_t node = 0;
		int best = -1;
		size_t best_end = 0;
		for (size_t j = i; j < n; j++) {
			unsigned char b = (unsigned char)s[j];
			uint32_t ch = t->nodes[node].child;
			while (ch && t->nodes[ch].byte != b)
				ch = t->nodes[ch].sibling;
			if (!ch)
				break;
			node = ch;
			if (t->nodes[node].added >= 0) {
				best = t->nodes[node].added;
				best_end = j + 1;
			}
		}
		if (best >= 0) {
			*ms = i;
			*me = best_end;
			return best;
		}
	}
	return -1;
}

/* Last code point of s[0..n) (valid UTF-8), or UINT32_MAX when empty. */
static uint32_t last_cp(const char *s, size_t n)
{
	if (n == 0)
		return UINT32_MAX;
	size_t i = n - 1;
	while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80)
		i--;
	uint32_t cp;
	return tok_utf8_dec((const unsigned char *)s + i, n - i, &cp) ? cp : UINT32_MAX;
}

/*
 * AddedVocabulary::find_matches over one piece: pushes the pieces and
 * added tokens that cover it to list w.
 */
static int split_added(const kvf_tokenizer *tok, struct tok_ctx *ctx, const struct tok_trie *t,
		       const struct tok_split *in, int w, unsigned flags)
{
	if (t->empty)
		return push(ctx, w, in->off, in->len, in->id, in->origin0);
	const char *s = ctx->buf + in->off;
	size_t n = in->len;
	size_t start_offset = 0, pos = 0, ms, me;
	int idx, rc;
	while (pos < n && (idx = trie_find(t, s, n, pos, &ms, &me)) >= 0) {
		const struct tok_added *a = &tok->added[idx];
		pos = me;
		size_t start = ms, stop = me;
		if ((flags & KVF_TOK_SPLIT_SPECIAL) && a->special)
			continue;
		if (a->single_word) {
			uint32_t before = last_cp(s, start), after = UINT32_MAX;
			if (stop < n)
				tok_utf8_dec((const unsigned char *)s + stop, n - stop, &after);
			bool start_space = start == 0 || !tok_is_word(before);
			bool stop_space = stop == n || !tok_is_word(after);
			if (!start_space || !stop_space)
				continue;
		}
		if (a->lstrip) {
			size_t ns = start;
			for (;;) {
				uint32_t c = last_cp(s, ns);
				if (c == UINT32_MAX || !tok_is_space(c))
					break;
				char tmp[4];
				ns -= tok_utf8_enc(c, tmp);
			}
			start = ns > start_offset ? ns : start_offset;
		}
		if (a->rstrip) {
			while (stop < n) {
				uint32_t c;
				size_t l = tok_utf8_dec((const unsigned char *)s + stop, n - stop, &c);
				if (!l || !tok_is_space(c))
					break;
				stop += l;
			}
		}
		if (start_offset < start &&
		    (rc = push(ctx, w, in->off + (uint32_t)start_offset, (uint32_t)(start - start_offset), -1,
			       in->origin0 && start_offset == 0)))
			return rc;
		if ((rc = push(ctx, w, in->off + (uint32_t)start, (uint32_t)(stop - start), (int32_t)a->id, false)))
			return rc;
		start_offset = stop;
	}
	if (start_offset < n)
		return push(ctx, w, in->off + (uint32_t)start_offset, (uint32_t)(n - start_offset), -1,
			    in->origin0 && start_offset == 0);
	return 0;
}

/* ---- normalizers ---------------------------------------------------------- */

/*
 * True when NFC cannot change s, so utf8proc can be skipped: every character
 * is below U+0300, or is a starter (combining class 0) without a canonical
 * decomposition that takes part in no composition and is no Hangul jamo.
 * Conservative: anything else goes through utf8proc. This keeps NFC off the
 * path for most CJK, Cyrillic, Greek, Arabic, emoji... text.
 */
static bool nfc_stable(const char *s, size_t n)
{
	size_t i = 0;
	while (i < n) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0xCC) { /* below U+0300 (continuation bytes skip here too) */
			i++;
			continue;
		}
		uint32_t cp;
		size_t l = tok_utf8_dec((const unsigned char *)s + i, n - i, &cp);
		if (!l)
			return false;
		if (cp >= 0x300) {
			if ((cp >= 0x1100 && cp <= 0x11FF) || (cp >= 0xA960 && cp <= 0xA97F) ||
			    (cp >= 0xD7B0 && cp <= 0xD7FF))
				return false;
			const utf8proc_property_t *p = utf8proc_get_property((utf8proc_int32_t)cp);
			if (p->combining_class != 0 || p->comp_exclusion || p->decomp_seqindex != UINT16_MAX ||
			    p->comb_index != UINT16_MAX)
				return false;
		}
		i += l;
	}
	return true;
}

static bool ascii_only(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] >= 0x80)
			return false;
	return true;
}

static int replace_all(struct tok_ctx *ctx, const tok_regex *re, const char *content, size_t clen,
		       uint32_t off, uint32_t len, uint32_t *noff, uint32_t *nlen)
{
	/* matches first (the buffer may move while we append) */
	size_t nm = 0, pos = 0, ms, me;
	int rc;
	while (pos <= len) {
		rc = tok_regex_find(re, ctx->md, ctx->buf + off, len, pos, &ms, &me);
		if (rc < 0)
			return rc;
		if (rc == 0)
			break;
		if ((rc = add_match(ctx, &nm, ms, me, true)))
			return rc;
		if (me == ms) { /* empty match: step one character */
			uint32_t cp;
			size_t l = me < len ? tok_utf8_dec((const unsigned char *)ctx->buf + off + me, len - me, &cp) : 1;
			pos = me + (l ? l : 1);
		} else {
			pos = me;
		}
	}
	if (nm == 0) {
		*noff = off;
		*nlen = len;
		return 0;
	}
	size_t out = len + nm * clen;
	if ((rc = buf_reserve(ctx, out)))
		return rc;
	char *dst = ctx->buf + ctx->buf_len;
	const char *src = ctx->buf + off;
	size_t prev = 0, o = 0;
	for (size_t i = 0; i < nm; i++) {
		memcpy(dst + o, src + prev, ctx->mt[i].s - prev);
		o += ctx->mt[i].s - prev;
		memcpy(dst + o, content, clen);
		o += clen;
		prev = ctx->mt[i].e;
	}
	memcpy(dst + o, src + prev, len - prev);
	o += len - prev;
	*noff = (uint32_t)ctx->buf_len;
	*nlen = (uint32_t)o;
	ctx->buf_len += o;
	return 0;
}

static int normalize_piece(const kvf_tokenizer *tok, struct tok_ctx *ctx, uint32_t *off, uint32_t *len)
{
	int rc;
	for (size_t k = 0; k < tok->n_norms; k++) {
		const struct tok_norm *nm = &tok->norms[k];
		const char *s = ctx->buf + *off;
		switch (nm->kind) {
		case TN_NFC: case TN_NFD: case TN_NFKC: case TN_NFKD: {
			if (nm->kind == TN_NFC ? nfc_stable(s, *len) : ascii_only(s, *len))
				break;
			int opt = UTF8PROC_STABLE;
			if (nm->kind == TN_NFC || nm->kind == TN_NFKC)
				opt |= UTF8PROC_COMPOSE;
			else
				opt |= UTF8PROC_DECOMPOSE;
			if (nm->kind == TN_NFKC || nm->kind == TN_NFKD)
				opt |= UTF8PROC_COMPAT;
			utf8proc_uint8_t *dst = NULL;
			utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)*len,
							  &dst, (utf8proc_option_t)opt);
			if (r < 0) {
				free(dst);
				return kvf_errf(KVF_E_INVAL, "tokenizer: normalizer: %s",
						utf8proc_errmsg(r));
			}
			rc = buf_add(ctx, (const char *)dst, (size_t)r, off);
			free(dst); /* utf8proc's malloc */
			if (rc)
				return rc;
			*len = (uint32_t)r;
			break;
		}
		case TN_PREPEND: {
			if (*len == 0)
				break;
			if ((rc = buf_reserve(ctx, nm->str_len + *len)))
				return rc;
			char *d = ctx->buf + ctx->buf_len;
			memcpy(d, nm->str, nm->str_len);
			memcpy(d + nm->str_len, ctx->buf + *off, *len);
			*off = (uint32_t)ctx->buf_len;
			*len += (uint32_t)nm->str_len;
			ctx->buf_len += *len;
			break;
		}
		case TN_REPLACE:
			if ((rc = replace_all(ctx, &nm->re, nm->str, nm->str_len, *off, *len, off, len)))
				return rc;
			break;
		case TN_STRIP: {
			uint32_t a = 0, b = *len, cp;
			while (nm->left && a < b) {
				size_t l = tok_utf8_dec((const unsigned char *)s + a, b - a, &cp);
				if (!l || !tok_is_space(cp))
					break;
				a += (uint32_t)l;
			}
			while (nm->right && b > a) {
				cp = last_cp(s + a, b - a);
				if (cp == UINT32_MAX || !tok_is_space(cp))
					break;
				char t4[4];
				b -= (uint32_t)tok_utf8_enc(cp, t4);
			}
			*off += a;
			*len = b - a;
			break;
		}
		}
	}
	return 0;
}

int tok_normalize_string(const kvf_tokenizer *tok, const char *s, size_t len, char **out, size_t *out_len)
{
	struct tok_ctx *ctx = ctx_new(tok, false);
	if (!ctx)
		return kvf_errf(KVF_E_NOMEM, "tokenizer: out of memory");
	uint32_t off, l = (uint32_t)len;
	int rc = buf_add(ctx, s, len, &off);
	if (!rc)
		rc = normalize_piece(tok, ctx, &off, &l);
	if (!rc) {
		*out = kvf_strndup(ctx->buf + off, l);
		*out_len = l;
		if (!*out)
			rc = kvf_errf(KVF_E_NOMEM, "tokenizer: out of memory");
	}
	ctx_free(ctx);
	return rc;
}

/* ---- pre-tokenizers ------------------------------------------------------- */

/* Splits piece `in` along the matches ctx->mt[0..nm) (which cover it in
 * order, m = is a delimiter), per HF's SplitDelimiterBehavior. */
static int apply_behavior(struct tok_ctx *ctx, const struct tok_split *in, size_t nm, int behavior, int w)
{
	struct tok_match *mt = ctx->mt;
	size_t out = 0;
	bool prev = false;
	int rc;
	switch (behavior) {
	case TB_ISOLATED:
		for (size_t i = 0; i < nm; i++)
			mt[i].m = false;
		out = nm;
		break;
	case TB_REMOVED:
		out = nm;
		break;
	case TB_CONTIGUOUS:
		for (size_t i = 0; i < nm; i++) {
			bool m = mt[i].m;
			if (m == prev && out > 0)
				mt[out - 1].e = mt[i].e;
			else
				mt[out++] = (struct tok_match){ mt[i].s, mt[i].e, false };
			prev = m;
		}
		break;
	case TB_MERGED_PREV:
		for (size_t i = 0; i < nm; i++) {
			bool m = mt[i].m;
			if (m && !prev && out > 0)
				mt[out - 1].e = mt[i].e;
			else
				mt[out++] = (struct tok_match){ mt[i].s, mt[i].e, false };
			prev = m;
		}
		break;
	case TB_MERGED_NEXT: {
		/* right to left, then reversed */
		size_t o = nm; /* write from the end: entries [o, nm) */
		for (size_t k = nm; k-- > 0;) {
			struct tok_match cur = mt[k];
			bool m = cur.m;
			if (m && !prev && o < nm)
				mt[o].s = cur.s;
			else
				mt[--o] = (struct tok_match){ cur.s, cur.e, false };
			prev = m;
		}
		memmove(mt, mt + o, (nm - o) * sizeof(*mt));
		out = nm - o;
		break;
	}
	}
	for (size_t i = 0; i < out; i++) {
		if (mt[i].m)
			continue;
		if ((rc = push(ctx, w, in->off + mt[i].s, mt[i].e - mt[i].s, -1, in->origin0 && mt[i].s == 0)))
			return rc;
	}
	return 0;
}

/* Pattern::find_matches of a regex over a piece into ctx->mt. */
static int regex_matches(struct tok_ctx *ctx, const tok_regex *re, const struct tok_split *in, bool invert,
			 size_t *nm_out)
{
	const char *s = ctx->buf + in->off;
	size_t n = in->len, nm = 0, prev = 0, pos = 0, ms, me;
	int rc;
	while (pos <= n) {
		rc = tok_regex_find(re, ctx->md, s, n, pos, &ms, &me);
		if (rc < 0)
			return rc;
		if (rc == 0)
			break;
		if (prev != ms && (rc = add_match(ctx, &nm, prev, ms, invert)))
			return rc;
		if ((rc = add_match(ctx, &nm, ms, me, !invert)))
			return rc;
		prev = me;
		if (me == ms) {
			uint32_t cp;
			size_t l = me < n ? tok_utf8_dec((const unsigned char *)s + me, n - me, &cp) : 1;
			pos = me + (l ? l : 1);
		} else {
			pos = me;
		}
	}
	if (prev != n && (rc = add_match(ctx, &nm, prev, n, invert)))
		return rc;
	*nm_out = nm;
	return 0;
}

/* Matches of a character predicate (Metaspace's replacement, digits). */
static int char_matches(struct tok_ctx *ctx, const struct tok_split *in, uint32_t want, bool numeric,
			size_t *nm_out)
{
	const char *s = ctx->buf + in->off;
	size_t n = in->len, nm = 0, last = 0, i = 0;
	int rc;
	while (i < n) {
		uint32_t cp;
		size_t l = tok_utf8_dec((const unsigned char *)s + i, n - i, &cp);
		if (!l)
			l = 1;
		bool hit;
		if (numeric) {
			int cat = utf8proc_category((utf8proc_int32_t)cp);
			hit = cat == UTF8PROC_CATEGORY_ND || cat == UTF8PROC_CATEGORY_NL || cat == UTF8PROC_CATEGORY_NO;
		} else {
			hit = cp == want;
		}
		if (hit) {
			if (last < i && (rc = add_match(ctx, &nm, last, i, false)))
				return rc;
			if ((rc = add_match(ctx, &nm, i, i + l, true)))
				return rc;
			last = i + l;
		}
		i += l;
	}
	if (last < n && (rc = add_match(ctx, &nm, last, n, false)))
		return rc;
	*nm_out = nm;
	return 0;
}

static int bytelevel_map(struct tok_ctx *ctx, const struct tok_split *in, int w)
{
	/* every byte becomes one code point below U+0200: at most 2 bytes */
	int rc = buf_reserve(ctx, (size_t)in->len * 2);
	if (rc)
		return rc;
	const unsigned char *s = (const unsigned char *)ctx->buf + in->off;
	char *d = ctx->buf + ctx->buf_len;
	size_t o = 0;
	for (uint32_t i = 0; i < in->len; i++) {
		uint32_t cp = tok_byte_cp[s[i]];
		if (cp < 0x80) {
			d[o++] = (char)cp;
		} else {
			d[o++] = (char)(0xC0 | (cp >> 6));
			d[o++] = (char)(0x80 | (cp & 0x3F));
		}
	}
	uint32_t off = (uint32_t)ctx->buf_len;
	ctx->buf_len += o;
	return push(ctx, w, off, (uint32_t)o, -1, in->origin0);
}

static int pretok_piece(const kvf_tokenizer *tok, struct tok_ctx *ctx, const struct tok_pretok *pt,
			const struct tok_split *in0, int w)
{
	struct tok_split in = *in0;
	size_t nm;
	int rc;
	switch (pt->kind) {
	case TP_SPLIT:
		if ((rc = regex_matches(ctx, &pt->re, &in, pt->invert, &nm)))
			return rc;
		return apply_behavior(ctx, &in, nm, pt->behavior, w);
	case TP_DIGITS:
		if ((rc = char_matches(ctx, &in, 0, true, &nm)))
			return rc;
		return apply_behavior(ctx, &in, nm, pt->individual_digits ? TB_ISOLATED : TB_CONTIGUOUS, w);
	case TP_BYTELEVEL: {
		if (pt->add_prefix_space && ctx->buf[in.off] != ' ') {
			if ((rc = buf_reserve(ctx, in.len + 1)))
				return rc;
			char *d = ctx->buf + ctx->buf_len;
			d[0] = ' ';
			memcpy(d + 1, ctx->buf + in.off, in.len);
			in.off = (uint32_t)ctx->buf_len;
			in.len += 1;
			ctx->buf_len += in.len;
		}
		if (!pt->use_regex)
			return bytelevel_map(ctx, &in, w);
		const tok_regex *re = tok_regex_gpt2();
		if (!re)
			return kvf_errf(KVF_E_INTERNAL, "tokenizer: ByteLevel regex did not compile");
		if ((rc = regex_matches(ctx, re, &in, false, &nm)))
			return rc;
		for (size_t i = 0; i < nm; i++) {
			struct tok_split sub = { in.off + ctx->mt[i].s, ctx->mt[i].e - ctx->mt[i].s, -1,
						 in.origin0 && ctx->mt[i].s == 0 };
			if (sub.len && (rc = bytelevel_map(ctx, &sub, w)))
				return rc;
		}
		return 0;
	}
	case TP_METASPACE: {
		/* replace ' ' by the replacement, maybe prepend it */
		size_t spaces = 0;
		for (uint32_t i = 0; i < in.len; i++)
			spaces += ctx->buf[in.off + i] == ' ';
		size_t need = in.len + spaces * pt->repl_len + pt->repl_len;
		if ((rc = buf_reserve(ctx, need)))
			return rc;
		const char *s = ctx->buf + in.off;
		char *d = ctx->buf + ctx->buf_len;
		size_t o = 0;
		bool starts = (size_t)in.len >= pt->repl_len && memcmp(s, pt->repl, pt->repl_len) == 0;
		if (!starts && in.len && s[0] == ' ')
			starts = true; /* the space becomes the replacement */
		bool prepend = pt->prepend_scheme == TPS_ALWAYS ? !starts
			       : pt->prepend_scheme == TPS_FIRST ? (!starts && in.origin0)
								  : false;
		if (prepend) {
			memcpy(d, pt->repl, pt->repl_len);
			o += pt->repl_len;
		}
		for (uint32_t i = 0; i < in.len; i++) {
			if (s[i] == ' ') {
				memcpy(d + o, pt->repl, pt->repl_len);
				o += pt->repl_len;
			} else {
				d[o++] = s[i];
			}
		}
		struct tok_split out = { (uint32_t)ctx->buf_len, (uint32_t)o, -1, in.origin0 };
		ctx->buf_len += o;
		if (!pt->split)
			return push(ctx, w, out.off, out.len, -1, out.origin0);
		if ((rc = char_matches(ctx, &out, pt->repl_cp, false, &nm)))
			return rc;
		return apply_behavior(ctx, &out, nm, TB_MERGED_NEXT, w);
	}
	}
	return kvf_errf(KVF_E_INTERNAL, "tokenizer: bad pre-tokenizer kind");
}

/* ---- the pipeline ------------------------------------------------------------ */

static int seq_add(struct tok_ctx *ctx, const uint32_t *ids, size_t n)
{
	if (n == 0)
		return 0;
	if (tok_raw_grow((void **)&ctx->seq, &ctx->seq_cap, ctx->seq_n + n, sizeof(uint32_t)) != 0)
		return kvf_errf(KVF_E_NOMEM, "tokenizer: out of memory");
	memcpy(ctx->seq + ctx->seq_n, ids, n * sizeof(uint32_t));
	ctx->seq_n += n;
	return 0;
}

static int out_add(kvf_tok_ids *out, size_t *n, const uint32_t *ids, size_t k)
{
	if (k == 0)
		return 0;
	if (tok_raw_grow((void **)&out->ids, &out->cap, *n + k, sizeof(uint32_t)) != 0)
		return kvf_errf(KVF_E_NOMEM, "tokenizer: out of memory");
	memcpy(out->ids + *n, ids, k * sizeof(uint32_t));
	*n += k;
	return 0;
}

/* ---- segments ------------------------------------------------------------ */

static uint64_t seg_hash(const char *s, size_t n, bool origin0, uint64_t ns)
{
	return XXH3_64bits_withSeed(s, n, ns * 2 + (origin0 ? 1 : 0));
}

static struct tok_seg *seg_find(struct tok_ctx *ctx, const char *s, uint32_t n, bool origin0, uint64_t h)
{
	for (size_t i = 0; i < TOK_SEG_SLOTS; i++) {
		struct tok_seg *e = &ctx->segs[i];
		if (e->text && e->hash == h && e->len == n && e->origin0 == origin0 && e->ns == ctx->seg_ns &&
		    memcmp(e->text, s, n) == 0)
			return e;
	}
	return NULL;
}

static void seg_drop(struct tok_ctx *ctx, struct tok_seg *e)
{
	ctx->seg_bytes -= e->len + (size_t)e->n_ids * sizeof(uint32_t);
	free(e->text);
	free(e->ids);
	memset(e, 0, sizeof(*e));
}

/* Remembers ids for the segment s; best effort (no memory: not cached). */
static void seg_insert(struct tok_ctx *ctx, const char *s, uint32_t n, bool origin0, uint64_t h,
		       const uint32_t *ids, size_t n_ids)
{
	size_t cost = n + n_ids * sizeof(uint32_t);
	if (cost > TOK_SEG_MAX_BYTES / 4)
		return; /* one huge prompt must not flush everything else */
	struct tok_seg *victim = NULL;
	for (size_t i = 0; i < TOK_SEG_SLOTS; i++) {
		struct tok_seg *e = &ctx->segs[i];
		if (!e->text) {
			victim = e;
			break;
		}
		if (!victim || e->used < victim->used)
			victim = e;
	}
	if (victim->text)
		seg_drop(ctx, victim);
	while (ctx->seg_bytes + cost > TOK_SEG_MAX_BYTES) { /* evict by age until it fits */
		struct tok_seg *old = NULL;
		for (size_t i = 0; i < TOK_SEG_SLOTS; i++)
			if (ctx->segs[i].text && (!old || ctx->segs[i].used < old->used))
				old = &ctx->segs[i];
		if (!old)
			break;
		seg_drop(ctx, old);
	}
	char *t = malloc(n);
	uint32_t *v = malloc(n_ids ? n_ids * sizeof(uint32_t) : 1);
	if (!t || !v) {
		free(t);
		free(v);
		return;
	}
	memcpy(t, s, n);
	memcpy(v, ids, n_ids * sizeof(uint32_t));
	*victim = (struct tok_seg){ h, ++ctx->seg_tick, ctx->seg_ns, t, v, n, (uint32_t)n_ids, origin0 };
	ctx->seg_bytes += cost;
}

/* Pre-tokenizes and runs the model on one text segment, appending its ids
 * to ctx->seq; long segments come from / go to the segment cache. */
static int encode_segment(const kvf_tokenizer *tok, struct tok_ctx *ctx, const struct tok_split *seg)
{
	int rc;
	bool cacheable = ctx->segs && seg->len >= TOK_SEG_MIN;
	uint64_t h = 0;
	if (cacheable) {
		h = seg_hash(ctx->buf + seg->off, seg->len, seg->origin0, ctx->seg_ns);
		struct tok_seg *e = seg_find(ctx, ctx->buf + seg->off, seg->len, seg->origin0, h);
		if (e) {
			e->used = ++ctx->seg_tick;
			__atomic_store_n(&ctx->seg_hits, ctx->seg_hits + 1, __ATOMIC_RELAXED);
			return seq_add(ctx, e->ids, e->n_ids);
		}
		__atomic_store_n(&ctx->seg_misses, ctx->seg_misses + 1, __ATOMIC_RELAXED);
	}
	size_t seq0 = ctx->seq_n;
	int r = 0, w = 1;
	ctx->sp_n[r] = 0;
	if ((rc = push(ctx, r, seg->off, seg->len, -1, seg->origin0)))
		return rc;
	for (size_t k = 0; k < tok->n_pretoks; k++) {
		ctx->sp_n[w] = 0;
		for (size_t i = 0; i < ctx->sp_n[r]; i++) {
			struct tok_split sp = ctx->sp[r][i];
			if (sp.id >= 0)
				rc = push(ctx, w, sp.off, sp.len, sp.id, sp.origin0);
			else
				rc = pretok_piece(tok, ctx, &tok->pretoks[k], &sp, w);
			if (rc)
				return rc;
		}
		r ^= 1, w ^= 1;
	}
	for (size_t i = 0; i < ctx->sp_n[r]; i++) {
		const struct tok_split *sp = &ctx->sp[r][i];
		if (sp->id >= 0) {
			uint32_t id = (uint32_t)sp->id;
			rc = seq_add(ctx, &id, 1);
		} else {
			rc = tok_bpe_word(tok, ctx, ctx->buf + sp->off, sp->len);
			if (!rc)
				rc = seq_add(ctx, ctx->wids, ctx->wids_n);
		}
		if (rc)
			return rc;
	}
	if (cacheable)
		seg_insert(ctx, ctx->buf + seg->off, seg->len, seg->origin0, h, ctx->seq + seq0, ctx->seq_n - seq0);
	return 0;
}

static int encode_ctx(const kvf_tokenizer *tok, struct tok_ctx *ctx, const char *text, size_t len,
		      unsigned flags, kvf_tok_ids *out)
{
	int rc;
	int r = 0, w = 1; /* read list, write list */
	ctx->buf_len = 0;
	ctx->sp_n[0] = ctx->sp_n[1] = 0;
	ctx->seq_n = 0;
	uint32_t off;
	if ((rc = buf_add(ctx, text, len, &off)))
		return rc;
	if ((rc = push(ctx, r, off, (uint32_t)len, -1, true)))
		return rc;

	/* 1. added tokens in the raw text */
	if (!tok->trie_raw.empty) {
		ctx->sp_n[w] = 0;
		for (size_t i = 0; i < ctx->sp_n[r]; i++)
			if ((rc = split_added(tok, ctx, &tok->trie_raw, &ctx->sp[r][i], w, flags)))
				return rc;
		r ^= 1, w ^= 1;
	}
	/* 2. normalize, then added tokens in normalized text */
	if (tok->n_norms || !tok->trie_norm.empty) {
		ctx->sp_n[w] = 0;
		for (size_t i = 0; i < ctx->sp_n[r]; i++) {
			struct tok_split sp = ctx->sp[r][i];
			if (sp.id < 0 && (rc = normalize_piece(tok, ctx, &sp.off, &sp.len)))
				return rc;
			if (sp.id < 0)
				rc = split_added(tok, ctx, &tok->trie_norm, &sp, w, flags);
			else
				rc = push(ctx, w, sp.off, sp.len, sp.id, sp.origin0);
			if (rc)
				return rc;
		}
		r ^= 1, w ^= 1;
	}
	/* 3 + 4, one segment (the text between added tokens) at a time */
	size_t nseg = ctx->sp_n[r];
	if (tok_raw_grow((void **)&ctx->pieces, &ctx->pieces_cap, nseg, sizeof(*ctx->pieces)))
		return kvf_errf(KVF_E_NOMEM, "tokenizer: out of memory");
	memcpy(ctx->pieces, ctx->sp[r], nseg * sizeof(*ctx->pieces));
	for (size_t i = 0; i < nseg; i++) {
		const struct tok_split *sp = &ctx->pieces[i];
		if (sp->id >= 0) {
			uint32_t id = (uint32_t)sp->id;
			rc = seq_add(ctx, &id, 1);
		} else {
			rc = encode_segment(tok, ctx, sp);
		}
		if (rc)
			return rc;
	}
	/* 5. post-processor */
	size_t n = out->n;
	if ((flags & KVF_TOK_ADD_SPECIAL) && tok->n_post) {
		for (size_t k = 0; k < tok->n_post; k++) {
			const struct tok_post_item *it = &tok->post[k];
			rc = it->is_seq ? out_add(out, &n, ctx->seq, ctx->seq_n) : out_add(out, &n, it->ids, it->n);
			if (rc)
				return rc;
		}
	} else if ((rc = out_add(out, &n, ctx->seq, ctx->seq_n))) {
		return rc;
	}
	out->n = n;
	return 0;
}

uint64_t kvf_tokenizer_cache_ns(const void *id, size_t len)
{
	return len ? XXH3_64bits(id, len) | 1 : 0;
}

int kvf_tokenizer_encode(const kvf_tokenizer *tok, const char *text, size_t len, unsigned flags,
			 kvf_tok_ids *out)
{
	return kvf_tokenizer_encode_ns(tok, text, len, flags, 0, out);
}

int kvf_tokenizer_encode_ns(const kvf_tokenizer *tok, const char *text, size_t len, unsigned flags,
			    uint64_t cache_ns, kvf_tok_ids *out)
{
	if (!tok || !out || (!text && len))
		return kvf_errf(KVF_E_INVAL, "kvf_tokenizer_encode: NULL argument");
	size_t bad = tok_utf8_check(text, len);
	if (bad != len)
		return kvf_errf(KVF_E_INVAL, "tokenizer: input is not valid UTF-8 at byte %zu", bad);
	bool temporary;
	struct tok_ctx *ctx = tok_ctx_get(tok, &temporary);
	if (!ctx)
		return kvf_errf(KVF_E_NOMEM, "tokenizer: out of memory for a thread context");
	ctx->seg_ns = cache_ns;
	int rc = encode_ctx(tok, ctx, text ? text : "", len, flags, out);
	/* don't let one huge request pin its scratch forever */
	if (ctx->buf_cap > (64u << 20)) {
		free(ctx->buf);
		ctx->buf = NULL;
		ctx->buf_cap = 0;
	}
	tok_ctx_put(ctx, temporary);
	return rc;
}

void kvf_tok_ids_free(kvf_tok_ids *ids)
{
	if (!ids)
		return;
	free(ids->ids);
	ids->ids = NULL;
	ids->n = ids->cap = 0;
}
