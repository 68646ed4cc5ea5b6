/*
 * tok_regex.c: the regular expressions of tokenizer.json (Split and Replace
 * patterns, GPT-2's ByteLevel pattern) on PCRE2 with UTF + UCP and the JIT.
 *
 * HF tokenizers runs these patterns on oniguruma. The syntax used by real
 * tokenizers (\p{L}, (?i:...), (?!\S), possessive-free alternations) means
 * the same in PCRE2, except for the shorthand classes, which we rewrite to
 * the Unicode properties oniguruma uses: \s -> \p{White_Space} (so U+0085
 * is a space and U+FEFF is not, as in oniguruma; JavaScript's \s differs on
 * both), \w -> Alphabetic | Mark | Nd | Pc | Join_Control. Everything else
 * is passed through; a pattern PCRE2 rejects fails loading with the JSON
 * path and PCRE2's message.
 */
#include "engine/tokenizer/tok_internal.h"

#include <stdio.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"

#define WORD_SET "\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}"

static int translate(const char *p, size_t n, char **out, size_t *out_len, const char *where)
{
	char *b = NULL;
	size_t len = 0, cap = 0;
	int depth = 0; /* inside [...] */
	int rc = 0;
	for (size_t i = 0; i < n; i++) {
		char c = p[i];
		const char *rep = NULL;
		char tmp[2] = { c, 0 };
		if (c == '\\' && i + 1 < n) {
			char e = p[++i];
			switch (e) {
			case 's': rep = "\\p{White_Space}"; break;
			case 'S': rep = "\\P{White_Space}"; break;
			case 'w': rep = depth ? WORD_SET : "[" WORD_SET "]"; break;
			case 'W':
				if (depth) {
					rc = kvf_errf(KVF_E_UNSUPPORTED,
						      "%s: \\W inside a character class is not supported", where);
					goto out;
				}
				rep = "[^" WORD_SET "]";
				break;
			case 'h':
				/* oniguruma \h is a hex digit, PCRE2's is horizontal space */
				rep = depth ? "0-9a-fA-F" : "[0-9a-fA-F]";
				break;
			default:
				tmp[0] = '\\';
				if (tok_append(&b, &len, &cap, tmp, 1) != 0)
					goto nomem;
				tmp[0] = e;
				rep = tmp;
				break;
			}
		} else if (c == '[') {
			depth++;
			rep = tmp;
			/* a ']' right after '[' or '[^' is literal */
			if (tok_append(&b, &len, &cap, "[", 1) != 0)
				goto nomem;
			if (i + 1 < n && p[i + 1] == '^') {
				if (tok_append(&b, &len, &cap, "^", 1) != 0)
					goto nomem;
				i++;
			}
			if (i + 1 < n && p[i + 1] == ']') {
				if (tok_append(&b, &len, &cap, "\\]", 2) != 0)
					goto nomem;
				i++;
			}
			continue;
		} else if (c == ']' && depth) {
			depth--;
			rep = tmp;
		} else {
			rep = tmp;
		}
		if (tok_append(&b, &len, &cap, rep, strlen(rep)) != 0)
			goto nomem;
	}
	if (tok_append(&b, &len, &cap, "", 0) != 0)
		goto nomem;
	*out = b;
	*out_len = len;
	return 0;
nomem:
	rc = kvf_errf(KVF_E_NOMEM, "%s: out of memory", where);
out:
	kvf_free(b);
	return rc;
}

int tok_regex_compile(tok_regex *re, const char *pat, size_t len, bool literal, const char *where)
{
	memset(re, 0, sizeof(*re));
	char *tr = NULL;
	size_t tr_len = len;
	uint32_t opts = PCRE2_UTF | PCRE2_UCP;
	if (literal) {
		opts = PCRE2_UTF | PCRE2_LITERAL;
	} else {
		int rc = translate(pat, len, &tr, &tr_len, where);
		if (rc != 0)
			return rc;
	}
	int err;
	PCRE2_SIZE erroff;
	re->code = pcre2_compile((PCRE2_SPTR)(tr ? tr : pat), tr_len, opts, &err, &erroff, NULL);
	kvf_free(tr);
	if (!re->code) {
		PCRE2_UCHAR msg[160];
		pcre2_get_error_message(err, msg, sizeof(msg));
		return kvf_errf(KVF_E_UNSUPPORTED, "%s: pattern not supported by PCRE2 at offset %zu: %s",
				where, (size_t)erroff, (const char *)msg);
	}
	re->jit = pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE) == 0;
	return 0;
}

void tok_regex_free(tok_regex *re)
{
	if (re && re->code)
		pcre2_code_free(re->code);
	if (re)
		re->code = NULL;
}

int tok_regex_find(const tok_regex *re, pcre2_match_data *md, const char *s, size_t len,
		   size_t start, size_t *ms, size_t *me)
{
	if (start > len)
		return 0;
	int rc;
	if (re->jit)
		rc = pcre2_jit_match(re->code, (PCRE2_SPTR)s, len, start, 0, md, NULL);
	else
		rc = pcre2_match(re->code, (PCRE2_SPTR)s, len, start, PCRE2_NO_UTF_CHECK, md, NULL);
	if (rc == PCRE2_ERROR_NOMATCH)
		return 0;
	if (rc < 0) {
		PCRE2_UCHAR msg[160];
		pcre2_get_error_message(rc, msg, sizeof(msg));
		return kvf_errf(KVF_E_INTERNAL, "tokenizer: regex match failed: %s", (const char *)msg);
	}
	PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
	*ms = ov[0];
	*me = ov[1];
	return 1;
}

static tok_regex gpt2_re;
static int gpt2_rc;
static pthread_once_t gpt2_once = PTHREAD_ONCE_INIT;

static void gpt2_build(void)
{
	static const char pat[] =
		"'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
	gpt2_rc = tok_regex_compile(&gpt2_re, pat, sizeof(pat) - 1, false, "ByteLevel regex");
}

const tok_regex *tok_regex_gpt2(void)
{
	pthread_once(&gpt2_once, gpt2_build);
	return gpt2_rc == 0 ? &gpt2_re : NULL;
}
