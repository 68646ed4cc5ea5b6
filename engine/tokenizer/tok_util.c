/*
 * tok_util.c: the tokenizer's small building blocks: open-addressing hash
 * maps for the vocabulary (string -> id) and the merges ((id, id) -> rank),
 * UTF-8 decoding and validation with Rust's exact lossy-replacement rule,
 * the Unicode character classes the added-token matcher needs, and GPT-2's
 * byte <-> character alphabet.
 *
 * The maps are flat arrays sized at load time (power of two, <= 50% full) so
 * a lookup is one hash and usually one cache line.
 */
#include "engine/tokenizer/tok_internal.h"

#include <utf8proc.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"

/* ---- string map ------------------------------------------------------ */

static size_t pow2_at_least(size_t n)
{
	size_t p = 16;
	while (p < n)
		p <<= 1;
	return p;
}

int tok_strmap_init(tok_strmap *m, size_t expected)
{
	memset(m, 0, sizeof(*m));
	size_t n = pow2_at_least(expected * 2 + 1);
	m->slots = kvf_malloc(n * sizeof(*m->slots));
	if (!m->slots)
		return kvf_errf(KVF_E_NOMEM, "tokenizer: out of memory for a %zu-entry map", expected);
	for (size_t i = 0; i < n; i++)
		m->slots[i].val = UINT32_MAX;
	m->mask = n - 1;
	return 0;
}

static int strmap_grow(tok_strmap *m)
{
	size_t n = (m->mask + 1) * 2;
	struct tok_strmap_slot *ns = kvf_malloc(n * sizeof(*ns));
	if (!ns)
		return KVF_E_NOMEM;
	for (size_t i = 0; i < n; i++)
		ns[i].val = UINT32_MAX;
	for (size_t i = 0; i <= m->mask; i++) {
		struct tok_strmap_slot *s = &m->slots[i];
		if (s->val == UINT32_MAX)
			continue;
		size_t j = s->hash & (n - 1);
		while (ns[j].val != UINT32_MAX)
			j = (j + 1) & (n - 1);
		ns[j] = *s;
	}
	kvf_free(m->slots);
	m->slots = ns;
	m->mask = n - 1;
	return 0;
}

int tok_strmap_put(tok_strmap *m, const char *k, size_t len, uint32_t val)
{
	if (len >= UINT32_MAX || m->pool_len + len >= UINT32_MAX)
		return kvf_errf(KVF_E_TOOBIG, "tokenizer: string table over 4 GiB");
	if ((m->count + 1) * 2 > m->mask + 1 && strmap_grow(m) != 0)
		return kvf_errf(KVF_E_NOMEM, "tokenizer: out of memory growing a map");
	uint32_t h = (uint32_t)tok_hash(k, len);
	size_t i = h & m->mask;
	for (;;) {
		struct tok_strmap_slot *s = &m->slots[i];
		if (s->val == UINT32_MAX)
			break;
		if (s->hash == h && s->key_len == len && memcmp(m->pool + s->key_off, k, len) == 0) {
			s->val = val;
			return 0;
		}
		i = (i + 1) & m->mask;
	}
	if (kvf_grow((void **)&m->pool, &m->pool_cap, m->pool_len + len + 1, 1) != 0)
		return kvf_errf(KVF_E_NOMEM, "tokenizer: out of memory for map keys");
	memcpy(m->pool + m->pool_len, k, len);
	struct tok_strmap_slot *s = &m->slots[i];
	s->hash = h;
	s->key_off = (uint32_t)m->pool_len;
	s->key_len = (uint32_t)len;
	s->val = val;
	m->pool_len += len;
	m->count++;
	return 0;
}

bool tok_strmap_get(const tok_strmap *m, const char *k, size_t len, uint32_t *val)
{
	if (!m->slots)
		return false;
	uint32_t h = (uint32_t)tok_hash(k, len);
	size_t i = h & m->mask;
	for (;;) {
		const struct tok_strmap_slot *s = &m->slots[i];
		if (s->val == UINT32_MAX)
			return false;
		if (s->hash == h && s->key_len == len && memcmp(m->pool + s->key_off, k, len) == 0) {
			*val = s->val;
			return true;
		}
		i = (i + 1) & m->mask;
	}
}

void tok_strmap_free(tok_strmap *m)
{
	kvf_free(m->slots);
	kvf_free(m->pool);
	memset(m, 0, sizeof(*m));
}

/* ---- pair map -------------------------------------------------------- */

int tok_pairmap_init(tok_pairmap *m, size_t expected)
{
	memset(m, 0, sizeof(*m));
	size_t n = pow2_at_least(expected * 2 + 1);
	m->slots = kvf_malloc(n * sizeof(*m->slots));
	if (!m->slots)
		return kvf_errf(KVF_E_NOMEM, "tokenizer: out of memory for %zu merges", expected);
	for (size_t i = 0; i < n; i++)
		m->slots[i].key = UINT64_MAX;
	m->mask = n - 1;
	return 0;
}

void tok_pairmap_put(tok_pairmap *m, uint32_t a, uint32_t b, uint32_t rank, uint32_t id)
{
	/* sized for every merge at init: never more than half full */
	uint64_t key = ((uint64_t)a << 32) | b;
	size_t i = (size_t)tok_pair_hash(key) & m->mask;
	while (m->slots[i].key != UINT64_MAX && m->slots[i].key != key)
		i = (i + 1) & m->mask;
	if (m->slots[i].key == UINT64_MAX)
		m->count++;
	m->slots[i].key = key;
	m->slots[i].rank = rank;
	m->slots[i].id = id;
}

void tok_pairmap_free(tok_pairmap *m)
{
	kvf_free(m->slots);
	memset(m, 0, sizeof(*m));
}

/* ---- UTF-8 ----------------------------------------------------------- */

/*
 * Length of the maximal prefix of s that is a valid sequence or the start of
 * one (Unicode's "maximal subpart"), and whether it is complete. A return of
 * 0 never happens for n > 0.
 */
static size_t utf8_subpart(const unsigned char *s, size_t n, bool *complete, uint32_t *cp)
{
	unsigned char c = s[0];
	*complete = false;
	if (c < 0x80) {
		*complete = true;
		*cp = c;
		return 1;
	}
	size_t need;
	unsigned char lo = 0x80, hi = 0xBF;
	uint32_t v;
	if (c >= 0xC2 && c <= 0xDF) {
		need = 2;
		v = c & 0x1F;
	} else if (c >= 0xE0 && c <= 0xEF) {
		need = 3;
		v = c & 0x0F;
		if (c == 0xE0)
			lo = 0xA0;
		else if (c == 0xED)
			hi = 0x9F;
	} else if (c >= 0xF0 && c <= 0xF4) {
		need = 4;
		v = c & 0x07;
		if (c == 0xF0)
			lo = 0x90;
		else if (c == 0xF4)
			hi = 0x8F;
	} else {
		return 1; /* invalid lead byte */
	}
	size_t i = 1;
	for (; i < need; i++) {
		if (i >= n)
			return i;
		unsigned char d = s[i];
		if (i == 1 ? (d < lo || d > hi) : (d < 0x80 || d > 0xBF))
			return i;
		v = (v << 6) | (d & 0x3F);
	}
	*complete = true;
	*cp = v;
	return need;
}

size_t tok_utf8_dec(const unsigned char *s, size_t n, uint32_t *cp)
{
	bool ok;
	size_t l = utf8_subpart(s, n, &ok, cp);
	return ok ? l : 0;
}

size_t tok_utf8_enc(uint32_t cp, char out[4])
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xC0 | (cp >> 6));
		out[1] = (char)(0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xE0 | (cp >> 12));
		out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
		out[2] = (char)(0x80 | (cp & 0x3F));
		return 3;
	}
	out[0] = (char)(0xF0 | (cp >> 18));
	out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
	out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
	out[3] = (char)(0x80 | (cp & 0x3F));
	return 4;
}

size_t tok_utf8_check(const char *str, size_t n)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0;
	while (i < n) {
		/* ASCII fast path, 8 bytes at a time */
		while (i + 8 <= n) {
			uint64_t v;
			memcpy(&v, s + i, 8);
			if (v & 0x8080808080808080ull)
				break;
			i += 8;
		}
		if (i >= n)
			break;
		if (s[i] < 0x80) {
			i++;
			continue;
		}
		bool ok;
		uint32_t cp;
		size_t l = utf8_subpart(s + i, n - i, &ok, &cp);
		if (!ok)
			return i;
		i += l;
	}
	return n;
}

size_t tok_utf8_complete_prefix(const char *str, size_t n)
{
	/* Only the last up-to-3 bytes can be an incomplete sequence. */
	const unsigned char *s = (const unsigned char *)str;
	size_t start = n > 3 ? n - 3 : 0;
	for (size_t i = n; i > start; i--) {
		unsigned char c = s[i - 1];
		if (c < 0x80)
			return n;
		if (c >= 0xC0) { /* a lead byte: is its sequence cut short? */
			bool ok;
			uint32_t cp;
			size_t l = utf8_subpart(s + i - 1, n - (i - 1), &ok, &cp);
			if (!ok && i - 1 + l == n)
				return i - 1;
			return n;
		}
	}
	return n;
}

int tok_append(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
	if (kvf_grow((void **)buf, cap, *len + n + 1, 1) != 0)
		return KVF_E_NOMEM;
	if (n)
		memcpy(*buf + *len, s, n);
	*len += n;
	(*buf)[*len] = '\0';
	return 0;
}

int tok_append_lossy(char **buf, size_t *len, size_t *cap, const char *str, size_t n)
{
	size_t valid = tok_utf8_check(str, n);
	if (valid == n)
		return tok_append(buf, len, cap, str, n);
	/* worst case every byte becomes 3 */
	if (kvf_grow((void **)buf, cap, *len + n * 3 + 1, 1) != 0)
		return KVF_E_NOMEM;
	const unsigned char *s = (const unsigned char *)str;
	char *o = *buf + *len;
	size_t i = 0;
	while (i < n) {
		bool ok;
		uint32_t cp;
		size_t l = utf8_subpart(s + i, n - i, &ok, &cp);
		if (ok) {
			memcpy(o, s + i, l);
			o += l;
		} else {
			memcpy(o, "\xEF\xBF\xBD", 3);
			o += 3;
		}
		i += l;
	}
	*len = (size_t)(o - *buf);
	(*buf)[*len] = '\0';
	return 0;
}

/* ---- character classes ------------------------------------------------ */

bool tok_is_space(uint32_t c)
{
	return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
	       (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
	       c == 0x205F || c == 0x3000;
}

bool tok_is_word(uint32_t c)
{
	if (c < 0x80)
		return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		       c == '_';
	if (c == 0x200C || c == 0x200D)
		return true;
	/* Other_Alphabetic symbols: circled and squared Latin letters */
	if ((c >= 0x24B6 && c <= 0x24E9) || (c >= 0x1F130 && c <= 0x1F149) ||
	    (c >= 0x1F150 && c <= 0x1F169) || (c >= 0x1F170 && c <= 0x1F189))
		return true;
	switch (utf8proc_category((utf8proc_int32_t)c)) {
	case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
	case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_NL:
	case UTF8PROC_CATEGORY_MN: case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME:
	case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_PC:
		return true;
	default:
		return false;
	}
}

/* ---- byte-level alphabet ---------------------------------------------- */

uint32_t tok_byte_cp[256];
int16_t tok_cp_byte[512];
static pthread_once_t bytelevel_once = PTHREAD_ONCE_INIT;

static void bytelevel_build(void)
{
	/* bytes_char() of tokenizers/src/pre_tokenizers/byte_level.rs: printable
	 * Latin-1 bytes map to themselves, the rest to 256 + n in byte order. */
	uint32_t n = 0;
	for (int i = 0; i < 512; i++)
		tok_cp_byte[i] = -1;
	for (int b = 0; b < 256; b++) {
		bool keep = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
		tok_byte_cp[b] = keep ? (uint32_t)b : 256 + n++;
		tok_cp_byte[tok_byte_cp[b]] = (int16_t)b;
	}
}

void tok_bytelevel_init(void)
{
	pthread_once(&bytelevel_once, bytelevel_build);
}
