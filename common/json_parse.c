/*
 * json_parse.c: a fast RFC 8259 parser that builds jansson values.
 *
 * jansson's own decoder reads one character at a time through a stream
 * abstraction and grows every string a byte at a time: about 16 ns per byte,
 * 2 ms for the 130 kB body of a 32k-token prompt, which is more than the
 * gateway's whole routing budget. This parser accepts exactly what
 * json_loadb(JSON_REJECT_DUPLICATES) accepts (the fuzz target
 * tests/fuzz/fuzz_json.c checks that, and that both build equal values) but
 * scans strings eight bytes at a time, copies each string once and reads
 * numbers without a second pass.
 *
 * What it accepts: one object or array (jansson's default), surrounded by
 * whitespace; strings of valid UTF-8 (no overlong forms, no surrogates, no
 * control characters, no \u0000 escape, paired \u surrogates); integers that
 * fit int64 (json_integer) and finite reals (json_real); duplicate object
 * keys are an error; nesting is limited to 2048 levels like jansson.
 */
#include "common/kvf_json.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/kvf_err.h"

#define MAX_DEPTH 2048

typedef struct {
	const unsigned char *p, *start, *end;
	const char *why;
	char *scratch; /* decoded strings with escapes */
	size_t scratch_cap;
} parser;

static int fail(parser *ps, const char *why)
{
	if (!ps->why)
		ps->why = why;
	return -1;
}

static void skip_ws(parser *ps)
{
	while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\n' || *ps->p == '\r' || *ps->p == '\t'))
		ps->p++;
}

/* Length of the valid UTF-8 sequence at p (lead byte >= 0x80), or 0. */
static size_t utf8_seq(const unsigned char *p, const unsigned char *end)
{
	unsigned c = p[0];
	size_t n;
	unsigned min;
	if (c >= 0xc2 && c <= 0xdf) {
		n = 2;
		min = 0x80;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 3;
		min = 0x800;
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4;
		min = 0x10000;
	} else {
		return 0;
	}
	if ((size_t)(end - p) < n)
		return 0;
	unsigned cp = c & (0x7f >> n);
	for (size_t i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

static int scratch_room(parser *ps, size_t need)
{
	if (need <= ps->scratch_cap)
		return 0;
	size_t cap = ps->scratch_cap ? ps->scratch_cap : 256;
	while (cap < need)
		cap *= 2;
	char *s = realloc(ps->scratch, cap);
	if (!s)
		return fail(ps, "out of memory");
	ps->scratch = s;
	ps->scratch_cap = cap;
	return 0;
}

static int hex4(const unsigned char *p, unsigned *out)
{
	unsigned v = 0;
	for (int i = 0; i < 4; i++) {
		unsigned c = p[i], d;
		if (c >= '0' && c <= '9')
			d = c - '0';
		else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
			d = (c | 0x20) - 'a' + 10;
		else
			return -1;
		v = (v << 4) | d;
	}
	*out = v;
	return 0;
}

/* True when none of the 8 bytes is '"', '\\', a control character or >= 0x80. */
static inline int plain8(const unsigned char *p)
{
	uint64_t w;
	memcpy(&w, p, 8);
	const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
	uint64_t q = w ^ (ones * '"'), b = w ^ (ones * '\\');
	uint64_t zq = (q - ones) & ~q, zb = (b - ones) & ~b;
	uint64_t ctl = w - ones * 0x20; /* high bit set where byte < 0x20 (or borrow) */
	return ((zq | zb | ctl | w) & high) == 0;
}

/* Parses the string whose opening quote is at ps->p. On success *s and *len
 * give its decoded bytes (in the input when it has no escapes, else in the
 * scratch buffer). */
static int parse_string(parser *ps, const char **s, size_t *len)
{
	const unsigned char *p = ++ps->p, *end = ps->end, *run = p;
	size_t out = 0;
	int escaped = 0;
	for (;;) {
		while (end - p >= 8 && plain8(p))
			p += 8;
		if (p >= end)
			return ps->p = p, fail(ps, "premature end of input in a string");
		unsigned c = *p;
		if (c == '"')
			break;
		if (c < 0x20)
			return ps->p = p, fail(ps, "control character in a string");
		if (c < 0x80 && c != '\\') {
			p++;
			continue;
		}
		if (c >= 0x80) {
			size_t n = utf8_seq(p, end);
			if (!n)
				return ps->p = p, fail(ps, "invalid UTF-8 in a string");
			p += n;
			continue;
		}
		/* an escape: move what came before into the scratch buffer */
		if (scratch_room(ps, out + (size_t)(p - run) + 4))
			return ps->p = p, -1;
		memcpy(ps->scratch + out, run, (size_t)(p - run));
		out += (size_t)(p - run);
		escaped = 1;
		if (end - p < 2)
			return ps->p = p, fail(ps, "premature end of input in a string");
		unsigned e = p[1];
		p += 2;
		char ch;
		switch (e) {
		case '"': ch = '"'; break;
		case '\\': ch = '\\'; break;
		case '/': ch = '/'; break;
		case 'b': ch = '\b'; break;
		case 'f': ch = '\f'; break;
		case 'n': ch = '\n'; break;
		case 'r': ch = '\r'; break;
		case 't': ch = '\t'; break;
		case 'u': {
			unsigned cp, lo;
			if (end - p < 4 || hex4(p, &cp))
				return ps->p = p, fail(ps, "invalid \\u escape");
			p += 4;
			if (cp >= 0xdc00 && cp <= 0xdfff)
				return ps->p = p, fail(ps, "invalid Unicode: a low surrogate without a high one");
			if (cp >= 0xd800 && cp <= 0xdbff) {
				if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, &lo) || lo < 0xdc00 ||
				    lo > 0xdfff)
					return ps->p = p, fail(ps, "invalid Unicode: a high surrogate without a low one");
				p += 6;
				cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
			}
			if (cp == 0)
				return ps->p = p, fail(ps, "\\u0000 is not allowed");
			unsigned char *o = (unsigned char *)ps->scratch + out;
			if (cp < 0x80) {
				o[0] = (unsigned char)cp;
				out += 1;
			} else if (cp < 0x800) {
				o[0] = (unsigned char)(0xc0 | (cp >> 6));
				o[1] = (unsigned char)(0x80 | (cp & 0x3f));
				out += 2;
			} else if (cp < 0x10000) {
				o[0] = (unsigned char)(0xe0 | (cp >> 12));
				o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
				o[2] = (unsigned char)(0x80 | (cp & 0x3f));
				out += 3;
			} else {
				o[0] = (unsigned char)(0xf0 | (cp >> 18));
				o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
				o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
				o[3] = (unsigned char)(0x80 | (cp & 0x3f));
				out += 4;
			}
			run = p;
			continue;
		}
		default:
			return ps->p = p - 1, fail(ps, "invalid escape in a string");
		}
		ps->scratch[out++] = ch;
		run = p;
	}
	if (escaped) {
		if (scratch_room(ps, out + (size_t)(p - run) + 1))
			return -1;
		memcpy(ps->scratch + out, run, (size_t)(p - run));
		out += (size_t)(p - run);
		*s = ps->scratch;
		*len = out;
	} else {
		*s = (const char *)run;
		*len = (size_t)(p - run);
	}
	ps->p = p + 1;
	return 0;
}

static json_t *parse_number(parser *ps)
{
	const unsigned char *p = ps->p, *end = ps->end, *start = p;
	int neg = 0, is_real = 0;
	if (p < end && *p == '-') {
		neg = 1;
		p++;
	}
	if (p >= end || *p < '0' || *p > '9')
		return ps->p = p, fail(ps, "invalid number"), NULL;
	uint64_t mag = 0;
	int overflow = 0;
	if (*p == '0') {
		p++;
	} else {
		while (p < end && *p >= '0' && *p <= '9') {
			unsigned d = *p++ - '0';
			if (mag > (UINT64_MAX - d) / 10)
				overflow = 1;
			else
				mag = mag * 10 + d;
		}
	}
	if (p < end && *p == '.') {
		is_real = 1;
		p++;
		if (p >= end || *p < '0' || *p > '9')
			return ps->p = p, fail(ps, "invalid number"), NULL;
		while (p < end && *p >= '0' && *p <= '9')
			p++;
	}
	if (p < end && (*p == 'e' || *p == 'E')) {
		is_real = 1;
		p++;
		if (p < end && (*p == '+' || *p == '-'))
			p++;
		if (p >= end || *p < '0' || *p > '9')
			return ps->p = p, fail(ps, "invalid number"), NULL;
		while (p < end && *p >= '0' && *p <= '9')
			p++;
	}
	ps->p = p;
	if (!is_real) {
		if (overflow || mag > (uint64_t)INT64_MAX + (uint64_t)neg)
			return fail(ps, "too big integer"), NULL;
		int64_t v = neg ? (int64_t)(0 - mag) : (int64_t)mag;
		json_t *j = json_integer(v);
		return j ? j : (fail(ps, "out of memory"), NULL);
	}
	char tmp[64], *big = NULL, *txt = tmp;
	size_t n = (size_t)(p - start);
	if (n >= sizeof(tmp)) {
		if (!(big = malloc(n + 1)))
			return fail(ps, "out of memory"), NULL;
		txt = big;
	}
	memcpy(txt, start, n);
	txt[n] = '\0';
	errno = 0;
	double d = strtod(txt, NULL);
	free(big);
	if ((d == HUGE_VAL || d == -HUGE_VAL) && errno == ERANGE)
		return fail(ps, "real number overflow"), NULL;
	json_t *j = json_real(d);
	return j ? j : (fail(ps, "out of memory"), NULL);
}

static int literal(parser *ps, const char *word, size_t n)
{
	if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0)
		return fail(ps, "invalid token");
	ps->p += n;
	return 0;
}

static json_t *parse_value(parser *ps, int depth);

static json_t *parse_object(parser *ps, int depth)
{
	json_t *obj = json_object();
	if (!obj)
		return fail(ps, "out of memory"), NULL;
	ps->p++; /* { */
	skip_ws(ps);
	if (ps->p < ps->end && *ps->p == '}') {
		ps->p++;
		return obj;
	}
	char small[128], *key = small;
	size_t key_cap = sizeof(small);
	for (;;) {
		skip_ws(ps);
		if (ps->p >= ps->end || *ps->p != '"') {
			fail(ps, ps->p >= ps->end ? "premature end of input" : "string or '}' expected");
			goto err;
		}
		const char *s;
		size_t len;
		if (parse_string(ps, &s, &len))
			goto err;
		if (len + 1 > key_cap) {
			char *k = malloc(len + 1);
			if (!k) {
				fail(ps, "out of memory");
				goto err;
			}
			if (key != small)
				free(key);
			key = k;
			key_cap = len + 1;
		}
		memcpy(key, s, len);
		key[len] = '\0';
		if (json_object_get(obj, key)) {
			fail(ps, "duplicate object key");
			goto err;
		}
		skip_ws(ps);
		if (ps->p >= ps->end || *ps->p != ':') {
			fail(ps, "':' expected");
			goto err;
		}
		ps->p++;
		json_t *v = parse_value(ps, depth + 1);
		if (!v)
			goto err;
		if (json_object_set_new_nocheck(obj, key, v)) {
			fail(ps, "out of memory");
			goto err;
		}
		skip_ws(ps);
		if (ps->p < ps->end && *ps->p == ',') {
			ps->p++;
			continue;
		}
		if (ps->p < ps->end && *ps->p == '}') {
			ps->p++;
			break;
		}
		fail(ps, ps->p >= ps->end ? "premature end of input" : "'}' expected");
		goto err;
	}
	if (key != small)
		free(key);
	return obj;
err:
	if (key != small)
		free(key);
	json_decref(obj);
	return NULL;
}

static json_t *parse_array(parser *ps, int depth)
{
	json_t *arr = json_array();
	if (!arr)
		return fail(ps, "out of memory"), NULL;
	ps->p++; /* [ */
	skip_ws(ps);
	if (ps->p < ps->end && *ps->p == ']') {
		ps->p++;
		return arr;
	}
	for (;;) {
		json_t *v = parse_value(ps, depth + 1);
		if (!v || json_array_append_new(arr, v)) {
			fail(ps, "out of memory");
			json_decref(arr);
			return NULL;
		}
		skip_ws(ps);
		if (ps->p < ps->end && *ps->p == ',') {
			ps->p++;
			continue;
		}
		if (ps->p < ps->end && *ps->p == ']') {
			ps->p++;
			return arr;
		}
		fail(ps, ps->p >= ps->end ? "premature end of input" : "']' expected");
		json_decref(arr);
		return NULL;
	}
}

static json_t *parse_value(parser *ps, int depth)
{
	skip_ws(ps);
	if (ps->p >= ps->end)
		return fail(ps, "premature end of input"), NULL;
	if (depth >= MAX_DEPTH) /* jansson counts every value, scalars too */
		return fail(ps, "maximum nesting depth reached"), NULL;
	switch (*ps->p) {
	case '{':
		return parse_object(ps, depth);
	case '[':
		return parse_array(ps, depth);
	case '"': {
		const char *s;
		size_t len;
		if (parse_string(ps, &s, &len))
			return NULL;
		json_t *j = json_stringn_nocheck(s, len);
		return j ? j : (fail(ps, "out of memory"), NULL);
	}
	case 't':
		return literal(ps, "true", 4) ? NULL : json_true();
	case 'f':
		return literal(ps, "false", 5) ? NULL : json_false();
	case 'n':
		return literal(ps, "null", 4) ? NULL : json_null();
	default:
		if (*ps->p == '-' || (*ps->p >= '0' && *ps->p <= '9'))
			return parse_number(ps);
		return fail(ps, "invalid token"), NULL;
	}
}

int kvf_json_load(const char *buf, size_t len, json_t **out)
{
	parser ps = { (const unsigned char *)buf, (const unsigned char *)buf, (const unsigned char *)buf + len,
		      NULL, NULL, 0 };
	json_t *v = NULL;
	skip_ws(&ps);
	if (ps.p >= ps.end)
		fail(&ps, "no JSON value");
	else if (*ps.p != '{' && *ps.p != '[')
		fail(&ps, "'[' or '{' expected");
	else if ((v = parse_value(&ps, 0)) != NULL) {
		skip_ws(&ps);
		if (ps.p < ps.end) {
			fail(&ps, "end of input expected");
			json_decref(v);
			v = NULL;
		}
	}
	free(ps.scratch);
	if (!v) {
		/* line and column (1-based, in bytes) of where parsing stopped */
		int line = 1, col = 1;
		for (const unsigned char *q = ps.start; q < ps.p && q < ps.end; q++) {
			if (*q == '\n') {
				line++;
				col = 1;
			} else {
				col++;
			}
		}
		return kvf_errf(KVF_E_PARSE, "invalid JSON at line %d column %d: %s", line, col, ps.why);
	}
	*out = v;
	return 0;
}
