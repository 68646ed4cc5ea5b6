/*
 * jinja.c: the Jinja2 subset that model chat templates are written in, run
 * the way HF transformers' apply_chat_template runs them: trim_blocks and
 * lstrip_blocks on, the loopcontrols extension (break/continue), default
 * Undefined (prints as "", false, empty; attribute access on it fails),
 * raise_exception(), strftime_now(), and a tojson that is Python's
 * json.dumps(ensure_ascii=False).
 *
 * Shape: the source is cut into text / {{ }} / {% %} segments (whitespace
 * control applied there), each tag is tokenized and parsed by recursive
 * descent into an AST kept in the template's arena; rendering walks the AST
 * with values allocated in a per-render arena, so nothing is freed piecemeal
 * and a failing render cannot leak. Values follow Python: str/int/float/bool/
 * None/list/dict, Python's truthiness, comparison and str()/repr().
 *
 * Supported: if/elif/else, for (with else, loop filter, tuple unpacking,
 * loop.index/index0/revindex/revindex0/first/last/length/previtem/nextitem),
 * set (name, namespace attribute, tuple, block form), macro and call of a
 * macro, break, continue, {% generation %} (ignored markers), raw; the
 * operators of Jinja expressions; the filters, tests, string and dict
 * methods listed in the tables below. Anything else is a compile or render
 * error with a line number, never silently skipped.
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <utf8proc.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"
#include "engine/tokenizer/tok_internal.h"

/* ---- arena ------------------------------------------------------------ */

struct arena_chunk {
	struct arena_chunk *next;
	size_t used, size;
	max_align_t data[];
};
struct arena {
	struct arena_chunk *head;
	bool failed;
};

static void *arena_alloc(struct arena *a, size_t n)
{
	n = (n + 15) & ~(size_t)15;
	if (!a->head || a->head->used + n > a->head->size) {
		size_t sz = n > 32768 ? n : 32768;
		struct arena_chunk *c = kvf_malloc(sizeof(*c) + sz);
		if (!c) {
			a->failed = true;
			return NULL;
		}
		c->next = a->head;
		c->used = 0;
		c->size = sz;
		a->head = c;
	}
	void *p = (char *)a->head->data + a->head->used;
	a->head->used += n;
	return p;
}

static void arena_free(struct arena *a)
{
	struct arena_chunk *c = a->head;
	while (c) {
		struct arena_chunk *n = c->next;
		kvf_free(c);
		c = n;
	}
	a->head = NULL;
}

static char *arena_strndup(struct arena *a, const char *s, size_t n)
{
	char *d = arena_alloc(a, n + 1);
	if (d) {
		memcpy(d, s, n);
		d[n] = '\0';
	}
	return d;
}

/* ---- values ------------------------------------------------------------- */

enum jt { JV_UNDEF, JV_NONE, JV_BOOL, JV_INT, JV_FLOAT, JV_STR, JV_LIST, JV_DICT, JV_FUNC, JV_MACRO };

struct jlist;
struct jdict;
struct node;

typedef struct jv {
	uint8_t t;
	union {
		bool b;
		int64_t i;
		double f;
		struct {
			const char *p;
			size_t n;
		} s;
		struct jlist *l;
		struct jdict *d;
		int fn;
		struct node *m;
	};
	const char *undef_name; /* JV_UNDEF: what was looked up, for messages */
} jv;

struct jlist {
	jv *v;
	size_t n, cap;
};
struct jdict {
	jv *k, *v;
	size_t n, cap;
	bool ns; /* namespace(): attributes may be set */
};

static const jv UNDEF = { .t = JV_UNDEF };
static const jv NONE = { .t = JV_NONE };

static jv jbool_v(bool b)
{
	jv v = { .t = JV_BOOL };
	v.b = b;
	return v;
}
static jv jint_v(int64_t i)
{
	jv v = { .t = JV_INT };
	v.i = i;
	return v;
}
static jv jfloat_v(double f)
{
	jv v = { .t = JV_FLOAT };
	v.f = f;
	return v;
}
static jv jstr_v(const char *p, size_t n)
{
	jv v = { .t = JV_STR };
	v.s.p = p;
	v.s.n = n;
	return v;
}

/* ---- AST ---------------------------------------------------------------- */

enum ek {
	E_LIT, E_NAME, E_ATTR, E_INDEX, E_SLICE, E_CALL, E_FILTER, E_TEST, E_NEG, E_POS, E_NOT,
	E_BIN, E_AND, E_OR, E_COND, E_LIST, E_DICT, E_TUPLE
};
enum binop { B_ADD, B_SUB, B_MUL, B_DIV, B_FDIV, B_MOD, B_POW, B_CAT, B_EQ, B_NE, B_LT, B_GT, B_LE, B_GE,
	     B_IN, B_NOTIN };

struct expr {
	int kind;
	int line;
	int op;
	bool negate; /* E_TEST: is not */
	jv lit;
	const char *name; /* E_NAME, E_ATTR, E_FILTER, E_TEST, kwarg names */
	struct expr *a, *b, *c;
	struct expr **args; /* E_CALL / E_FILTER / E_TEST args, E_LIST/E_TUPLE items, E_DICT k,v pairs */
	const char **kwnames; /* parallel to args: NULL for positional */
	size_t nargs;
};

enum nk { N_TEXT, N_OUT, N_IF, N_FOR, N_SET, N_SETBLOCK, N_BREAK, N_CONTINUE, N_MACRO, N_NOP };

struct node {
	int kind;
	int line;
	const char *text; /* N_TEXT */
	size_t text_len;
	struct expr *e;       /* N_OUT value, N_IF cond, N_FOR iterable, N_SET value */
	struct expr *filter;  /* N_FOR: loop filter */
	struct expr *target;  /* N_SET target: E_NAME, E_ATTR, E_TUPLE */
	const char **vars;    /* N_FOR loop vars, N_MACRO params */
	struct expr **defaults; /* N_MACRO */
	size_t nvars;
	const char *name;     /* N_MACRO, N_SETBLOCK */
	struct node **body;   /* N_IF then, N_FOR body, N_MACRO body */
	size_t nbody;
	struct node **alt;    /* N_IF else (an elif is an N_IF in alt), N_FOR else */
	size_t nalt;
};

struct kvf_chat_template {
	struct arena ar;
	struct node **body;
	size_t nbody;
};

/* ---- segmenting ----------------------------------------------------------- */

enum seg_kind { S_TEXT, S_EXPR, S_STMT };
struct seg {
	int kind;
	const char *p;
	size_t n;
	int line;
};

struct compiler {
	struct arena *ar;
	struct seg *segs;
	size_t nsegs, segcap;
	size_t si; /* parser position in segs */
	/* expression tokens of the current tag */
	const char *tp, *te;
	int line;
	int rc;
	int depth; /* expression / block nesting, bounded */
};

#define JINJA_MAX_DEPTH 128      /* nesting of expressions, blocks and macro calls */
#define JINJA_MAX_STEPS 20000000 /* evaluation steps of one render */
#define JINJA_MAX_OUTPUT (64u << 20)

static int cerr(struct compiler *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int cerr(struct compiler *c, const char *fmt, ...)
{
	char msg[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (!c->rc)
		c->rc = kvf_errf(KVF_E_PARSE, "chat template: line %d: %s", c->line, msg);
	return c->rc;
}

static int add_seg(struct compiler *c, int kind, const char *p, size_t n, int line)
{
	if (kind == S_TEXT && n == 0)
		return 0;
	if (kvf_grow((void **)&c->segs, &c->segcap, c->nsegs + 1, sizeof(*c->segs)) != 0)
		return kvf_errf(KVF_E_NOMEM, "chat template: out of memory");
	c->segs[c->nsegs++] = (struct seg){ kind, p, n, line };
	return 0;
}

static int count_lines(const char *p, size_t n)
{
	int l = 0;
	for (size_t i = 0; i < n; i++)
		l += p[i] == '\n';
	return l;
}

static bool is_ws(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f' || ch == '\v';
}

/* Finds the end of a tag body starting at p: the closing delimiter ("}}",
 * "%}" or "#}"), skipping string literals. Returns the offset of the
 * delimiter (including a '-' or '+' modifier before it) or -1. */
static long find_tag_end(const char *p, size_t n, char close, bool comment)
{
	char q = 0;
	for (size_t i = 0; i + 1 < n; i++) {
		char ch = p[i];
		if (!comment && q) {
			if (ch == '\\')
				i++;
			else if (ch == q)
				q = 0;
			continue;
		}
		if (!comment && (ch == '\'' || ch == '"')) {
			q = ch;
			continue;
		}
		if (ch == close && p[i + 1] == '}')
			return (long)i;
	}
	return -1;
}

static int segment(struct compiler *c, const char *src, size_t n)
{
	size_t pos = 0;
	int line = 1;
	bool strip_next = false;   /* a '-' closed the previous tag */
	bool line_starting = true; /* Jinja's lexer state for lstrip_blocks */
	int rc;
	while (pos <= n) {
		/* next tag opening */
		size_t i = pos;
		const char *open = NULL;
		while (i + 1 < n) {
			if (src[i] == '{' && (src[i + 1] == '{' || src[i + 1] == '%' || src[i + 1] == '#')) {
				open = src + i;
				break;
			}
			i++;
		}
		size_t text_end = open ? i : n;
		const char *tp = src + pos;
		size_t tn = text_end - pos;
		if (strip_next) {
			while (tn && is_ws(*tp)) {
				tp++;
				tn--;
			}
			strip_next = false;
		}
		if (!open) {
			if ((rc = add_seg(c, S_TEXT, tp, tn, line)))
				return rc;
			break;
		}
		char kind = open[1];
		char mod = i + 2 < n ? src[i + 2] : 0;
		if (mod == '-') {
			while (tn && is_ws(tp[tn - 1]))
				tn--;
		} else if (mod != '+' && (kind == '%' || kind == '#')) {
			/* lstrip_blocks: only blanks between the line start and the tag */
			size_t ls = tn;
			while (ls > 0 && tp[ls - 1] != '\n')
				ls--;
			bool newline_before = ls > 0 || (tp > src && tp[-1] == '\n' && tn == 0);
			if (newline_before || line_starting || (tp == src)) {
				bool blank = true;
				for (size_t k = ls; k < tn; k++)
					if (tp[k] != ' ' && tp[k] != '\t')
						blank = false;
				if (blank && (ls > 0 || line_starting))
					tn = ls;
			}
		}
		if ((rc = add_seg(c, S_TEXT, tp, tn, line)))
			return rc;
		line += count_lines(src + pos, text_end - pos);
		size_t body = i + 2 + ((mod == '-' || mod == '+') ? 1 : 0);
		char close = kind == '{' ? '}' : kind;
		long e = find_tag_end(src + body, n - body, close, kind == '#');
		if (e < 0) {
			c->line = line;
			return cerr(c, "unclosed tag");
		}
		size_t bend = body + (size_t)e; /* position of close char */
		char emod = bend > body ? src[bend - 1] : 0;
		size_t blen = bend - body;
		if (emod == '-' || emod == '+')
			blen--;
		/* raw blocks: copy until {% endraw %} */
		const char *bp = src + body;
		size_t bl = blen;
		while (bl && is_ws(*bp))
			bp++, bl--;
		while (bl && is_ws(bp[bl - 1]))
			bl--;
		size_t after = bend + 2;
		if (kind == '%' && bl == 3 && !memcmp(bp, "raw", 3)) {
			const char *endraw = NULL;
			for (size_t k = after; k + 1 < n; k++) {
				if (src[k] == '{' && src[k + 1] == '%') {
					size_t q = k + 2;
					if (q < n && (src[q] == '-' || src[q] == '+'))
						q++;
					while (q < n && is_ws(src[q]))
						q++;
					if (q + 6 <= n && !memcmp(src + q, "endraw", 6)) {
						endraw = src + k;
						break;
					}
				}
			}
			if (!endraw) {
				c->line = line;
				return cerr(c, "raw block without endraw");
			}
			size_t rs = after, re = (size_t)(endraw - src);
			if (emod != '+' && rs < n && src[rs] == '\n')
				rs++;
			if ((rc = add_seg(c, S_TEXT, src + rs, re - rs, line)))
				return rc;
			long e2 = find_tag_end(endraw + 2, n - (size_t)(endraw + 2 - src), '%', false);
			if (e2 < 0)
				return cerr(c, "unclosed endraw tag");
			size_t eb = (size_t)(endraw + 2 - src) + (size_t)e2;
			line += count_lines(src + body, eb - body);
			pos = eb + 2;
			if (src[eb - 1] == '-')
				strip_next = true;
			else if (src[eb - 1] != '+' && pos < n && src[pos] == '\n')
				pos++, line++;
			line_starting = false;
			continue;
		}
		if (kind != '#' && (rc = add_seg(c, kind == '{' ? S_EXPR : S_STMT, src + body, blen, line)))
			return rc;
		line += count_lines(src + body, bend - body);
		pos = after;
		line_starting = false;
		if (emod == '-') {
			strip_next = true;
		} else if (emod != '+' && kind != '{' && pos < n && src[pos] == '\n') {
			pos++; /* trim_blocks */
			line++;
			line_starting = true;
		}
		if (pos > n)
			break;
		if (pos == n) {
			break;
		}
	}
	return 0;
}

/* ---- expression tokenizer ------------------------------------------------------ */

enum tk { T_EOF, T_NAME, T_STR, T_INT, T_FLOAT, T_OP };
struct token {
	int kind;
	const char *p;
	size_t n;
	char op[3];
	int64_t i;
	double f;
};

static void skip_ws(struct compiler *c)
{
	while (c->tp < c->te && is_ws(*c->tp)) {
		if (*c->tp == '\n')
			c->line++;
		c->tp++;
	}
}

/* Reads the next token without consuming it when peek is true. */
static struct token next_tok(struct compiler *c, bool peek)
{
	skip_ws(c);
	const char *start = c->tp;
	struct token t = { .kind = T_EOF };
	if (c->tp >= c->te)
		return t;
	const char *p = c->tp;
	char ch = *p;
	if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_') {
		const char *q = p;
		while (q < c->te && ((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || *q == '_' ||
				     (*q >= '0' && *q <= '9')))
			q++;
		t.kind = T_NAME;
		t.p = p;
		t.n = (size_t)(q - p);
		c->tp = q;
	} else if (ch >= '0' && ch <= '9') {
		const char *q = p;
		bool is_float = false;
		while (q < c->te && ((*q >= '0' && *q <= '9') || *q == '_'))
			q++;
		if (q + 1 < c->te && *q == '.' && q[1] >= '0' && q[1] <= '9') {
			is_float = true;
			q++;
			while (q < c->te && *q >= '0' && *q <= '9')
				q++;
		}
		if (q < c->te && (*q == 'e' || *q == 'E')) {
			const char *r = q + 1;
			if (r < c->te && (*r == '+' || *r == '-'))
				r++;
			if (r < c->te && *r >= '0' && *r <= '9') {
				is_float = true;
				q = r;
				while (q < c->te && *q >= '0' && *q <= '9')
					q++;
			}
		}
		char buf[64];
		size_t bl = 0;
		for (const char *r = p; r < q && bl < sizeof(buf) - 1; r++)
			if (*r != '_')
				buf[bl++] = *r;
		buf[bl] = '\0';
		if (is_float) {
			t.kind = T_FLOAT;
			t.f = strtod(buf, NULL);
		} else {
			t.kind = T_INT;
			errno = 0;
			t.i = strtoll(buf, NULL, 10);
			if (errno)
				t.kind = T_EOF, c->rc = c->rc ? c->rc : cerr(c, "integer literal out of range");
		}
		c->tp = q;
	} else if (ch == '\'' || ch == '"') {
		const char *q = p + 1;
		while (q < c->te && *q != ch) {
			if (*q == '\\' && q + 1 < c->te)
				q++;
			q++;
		}
		if (q >= c->te) {
			cerr(c, "unterminated string literal");
			return t;
		}
		t.kind = T_STR;
		t.p = p + 1;
		t.n = (size_t)(q - p - 1);
		c->tp = q + 1;
	} else {
		static const char *const ops2[] = { "==", "!=", "<=", ">=", "//", "**" };
		t.kind = T_OP;
		for (size_t k = 0; k < sizeof(ops2) / sizeof(ops2[0]); k++) {
			if (p + 1 < c->te && p[0] == ops2[k][0] && p[1] == ops2[k][1]) {
				memcpy(t.op, ops2[k], 3);
				c->tp = p + 2;
				goto done;
			}
		}
		if (strchr("+-*/%~()[]{}.,:|<>=", ch)) {
			t.op[0] = ch;
			t.op[1] = 0;
			c->tp = p + 1;
		} else {
			cerr(c, "unexpected character '%c'", ch);
			t.kind = T_EOF;
		}
	}
done:
	if (peek)
		c->tp = start;
	return t;
}

static bool tok_is_name(const struct token *t, const char *s)
{
	return t->kind == T_NAME && t->n == strlen(s) && !memcmp(t->p, s, t->n);
}
static bool tok_is_op(const struct token *t, const char *s)
{
	return t->kind == T_OP && !strcmp(t->op, s);
}
static bool peek_op(struct compiler *c, const char *s)
{
	struct token t = next_tok(c, true);
	return tok_is_op(&t, s);
}
static bool peek_name(struct compiler *c, const char *s)
{
	struct token t = next_tok(c, true);
	return tok_is_name(&t, s);
}
static bool accept_op(struct compiler *c, const char *s)
{
	if (peek_op(c, s)) {
		next_tok(c, false);
		return true;
	}
	return false;
}
static bool accept_name(struct compiler *c, const char *s)
{
	if (peek_name(c, s)) {
		next_tok(c, false);
		return true;
	}
	return false;
}
static int expect_op(struct compiler *c, const char *s)
{
	if (!accept_op(c, s))
		return cerr(c, "expected '%s'", s);
	return 0;
}

/* Python string literal escapes. */
static jv unescape(struct compiler *c, const char *p, size_t n)
{
	char *d = arena_alloc(c->ar, n + 1);
	if (!d)
		return UNDEF;
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		if (p[i] != '\\' || i + 1 >= n) {
			d[o++] = p[i];
			continue;
		}
		char e = p[++i];
		switch (e) {
		case 'n': d[o++] = '\n'; break;
		case 't': d[o++] = '\t'; break;
		case 'r': d[o++] = '\r'; break;
		case '0': d[o++] = '\0'; break;
		case 'a': d[o++] = '\a'; break;
		case 'b': d[o++] = '\b'; break;
		case 'f': d[o++] = '\f'; break;
		case 'v': d[o++] = '\v'; break;
		case '\\': d[o++] = '\\'; break;
		case '\'': d[o++] = '\''; break;
		case '"': d[o++] = '"'; break;
		case '\n': break;
		case 'x': case 'u': case 'U': {
			int digits = e == 'x' ? 2 : e == 'u' ? 4 : 8;
			uint32_t cp = 0;
			int k = 0;
			for (; k < digits && i + 1 < n; k++) {
				char h = p[i + 1];
				int v = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10
					: h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
				if (v < 0)
					break;
				cp = cp * 16 + (uint32_t)v;
				i++;
			}
			if (k != digits || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
				cerr(c, "bad \\%c escape", e);
				return UNDEF;
			}
			char u[4];
			size_t ul = tok_utf8_enc(cp, u);
			memcpy(d + o, u, ul); /* an escape is >= 4 source bytes: fits */
			o += ul;
			break;
		}
		default:
			d[o++] = '\\';
			d[o++] = e;
			break;
		}
	}
	d[o] = '\0';
	return jstr_v(d, o);
}

static struct expr *new_expr(struct compiler *c, int kind)
{
	struct expr *e = arena_alloc(c->ar, sizeof(*e));
	if (!e) {
		cerr(c, "out of memory");
		return NULL;
	}
	memset(e, 0, sizeof(*e));
	e->kind = kind;
	e->line = c->line;
	return e;
}

static const char *tok_name(struct compiler *c, const struct token *t)
{
	return arena_strndup(c->ar, t->p, t->n);
}

static struct expr *parse_expr(struct compiler *c);
static struct expr *parse_or(struct compiler *c);
static struct expr *parse_unary(struct compiler *c, bool with_filter);

/* Appends an argument (kw may be NULL). */
static int push_arg(struct compiler *c, struct expr *call, struct expr *arg, const char *kw)
{
	size_t n = call->nargs;
	struct expr **na = arena_alloc(c->ar, (n + 1) * sizeof(*na));
	const char **nk = arena_alloc(c->ar, (n + 1) * sizeof(*nk));
	if (!na || !nk)
		return cerr(c, "out of memory");
	if (n) {
		memcpy(na, call->args, n * sizeof(*na));
		memcpy(nk, call->kwnames, n * sizeof(*nk));
	}
	na[n] = arg;
	nk[n] = kw;
	call->args = na;
	call->kwnames = nk;
	call->nargs = n + 1;
	return 0;
}

/* (args...) after the '(' has been consumed. */
static int parse_args(struct compiler *c, struct expr *call)
{
	while (!c->rc && !accept_op(c, ")")) {
		if (call->nargs && expect_op(c, ","))
			return c->rc;
		if (accept_op(c, ")"))
			break;
		const char *kw = NULL;
		struct token t = next_tok(c, true);
		if (t.kind == T_NAME) {
			const char *save = c->tp;
			next_tok(c, false);
			struct token t2 = next_tok(c, true);
			if (tok_is_op(&t2, "=")) {
				next_tok(c, false);
				kw = tok_name(c, &t);
			} else {
				c->tp = save;
			}
		}
		struct expr *a = parse_expr(c);
		if (!a || push_arg(c, call, a, kw))
			return c->rc ? c->rc : cerr(c, "bad argument");
	}
	return c->rc;
}

static struct expr *parse_primary(struct compiler *c)
{
	struct token t = next_tok(c, false);
	struct expr *e;
	switch (t.kind) {
	case T_STR: {
		e = new_expr(c, E_LIT);
		if (!e)
			return NULL;
		e->lit = unescape(c, t.p, t.n);
		/* adjacent string literals concatenate */
		for (;;) {
			struct token t2 = next_tok(c, true);
			if (t2.kind != T_STR)
				break;
			next_tok(c, false);
			jv more = unescape(c, t2.p, t2.n);
			char *d = arena_alloc(c->ar, e->lit.s.n + more.s.n + 1);
			if (!d)
				return NULL;
			memcpy(d, e->lit.s.p, e->lit.s.n);
			memcpy(d + e->lit.s.n, more.s.p, more.s.n);
			d[e->lit.s.n + more.s.n] = '\0';
			e->lit = jstr_v(d, e->lit.s.n + more.s.n);
		}
		return e;
	}
	case T_INT:
		e = new_expr(c, E_LIT);
		if (e)
			e->lit = jint_v(t.i);
		return e;
	case T_FLOAT:
		e = new_expr(c, E_LIT);
		if (e)
			e->lit = jfloat_v(t.f);
		return e;
	case T_NAME:
		e = new_expr(c, E_LIT);
		if (!e)
			return NULL;
		if (tok_is_name(&t, "true") || tok_is_name(&t, "True"))
			e->lit = jbool_v(true);
		else if (tok_is_name(&t, "false") || tok_is_name(&t, "False"))
			e->lit = jbool_v(false);
		else if (tok_is_name(&t, "none") || tok_is_name(&t, "None"))
			e->lit = NONE;
		else {
			e->kind = E_NAME;
			e->name = tok_name(c, &t);
		}
		return e;
	case T_OP:
		if (tok_is_op(&t, "(")) {
			if (accept_op(c, ")"))
				return new_expr(c, E_TUPLE);
			struct expr *first = parse_expr(c);
			if (!first)
				return NULL;
			if (accept_op(c, ")"))
				return first;
			e = new_expr(c, E_TUPLE);
			if (!e || push_arg(c, e, first, NULL))
				return NULL;
			while (accept_op(c, ",")) {
				if (peek_op(c, ")"))
					break;
				struct expr *x = parse_expr(c);
				if (!x || push_arg(c, e, x, NULL))
					return NULL;
			}
			if (expect_op(c, ")"))
				return NULL;
			return e;
		}
		if (tok_is_op(&t, "[")) {
			e = new_expr(c, E_LIST);
			if (!e)
				return NULL;
			while (!c->rc && !accept_op(c, "]")) {
				if (e->nargs && expect_op(c, ","))
					return NULL;
				if (accept_op(c, "]"))
					break;
				struct expr *x = parse_expr(c);
				if (!x || push_arg(c, e, x, NULL))
					return NULL;
			}
			return c->rc ? NULL : e;
		}
		if (tok_is_op(&t, "{")) {
			e = new_expr(c, E_DICT);
			if (!e)
				return NULL;
			while (!c->rc && !accept_op(c, "}")) {
				if (e->nargs && expect_op(c, ","))
					return NULL;
				if (accept_op(c, "}"))
					break;
				struct expr *k = parse_expr(c);
				if (!k || expect_op(c, ":"))
					return NULL;
				struct expr *v = parse_expr(c);
				if (!v || push_arg(c, e, k, NULL) || push_arg(c, e, v, NULL))
					return NULL;
			}
			return c->rc ? NULL : e;
		}
		cerr(c, "unexpected '%s'", t.op);
		return NULL;
	default:
		cerr(c, "unexpected end of expression");
		return NULL;
	}
}

static struct expr *parse_postfix(struct compiler *c, struct expr *e)
{
	while (e && !c->rc) {
		if (accept_op(c, ".")) {
			struct token t = next_tok(c, false);
			struct expr *a = new_expr(c, E_ATTR);
			if (!a)
				return NULL;
			a->a = e;
			if (t.kind == T_NAME) {
				a->name = tok_name(c, &t);
			} else if (t.kind == T_INT) { /* foo.0 */
				a->kind = E_INDEX;
				a->b = new_expr(c, E_LIT);
				if (!a->b)
					return NULL;
				a->b->lit = jint_v(t.i);
			} else {
				cerr(c, "expected an attribute name after '.'");
				return NULL;
			}
			e = a;
		} else if (accept_op(c, "[")) {
			struct expr *parts[3] = { NULL, NULL, NULL };
			int np = 0;
			bool slice = false;
			for (;;) {
				if (peek_op(c, ":") || peek_op(c, "]")) {
					parts[np] = NULL;
				} else {
					parts[np] = parse_expr(c);
					if (!parts[np])
						return NULL;
				}
				if (accept_op(c, ":")) {
					slice = true;
					if (++np > 2) {
						cerr(c, "bad slice");
						return NULL;
					}
					continue;
				}
				break;
			}
			if (expect_op(c, "]"))
				return NULL;
			struct expr *x = new_expr(c, slice ? E_SLICE : E_INDEX);
			if (!x)
				return NULL;
			x->a = e;
			if (slice) {
				x->b = parts[0];
				x->c = parts[1];
				if (np == 2 && push_arg(c, x, parts[2] ? parts[2] : NULL, NULL))
					return NULL;
			} else {
				x->b = parts[0];
				if (!x->b) {
					cerr(c, "empty subscript");
					return NULL;
				}
			}
			e = x;
		} else if (accept_op(c, "(")) {
			struct expr *call = new_expr(c, E_CALL);
			if (!call)
				return NULL;
			call->a = e;
			if (parse_args(c, call))
				return NULL;
			e = call;
		} else {
			break;
		}
	}
	return e;
}

/* filters and tests after a primary: x | f(a) | g is not h */
static struct expr *parse_filters(struct compiler *c, struct expr *e)
{
	while (e && !c->rc) {
		if (accept_op(c, "|")) {
			struct token t = next_tok(c, false);
			if (t.kind != T_NAME) {
				cerr(c, "expected a filter name after '|'");
				return NULL;
			}
			struct expr *f = new_expr(c, E_FILTER);
			if (!f)
				return NULL;
			f->a = e;
			f->name = tok_name(c, &t);
			if (accept_op(c, "(") && parse_args(c, f))
				return NULL;
			e = f;
		} else if (peek_name(c, "is")) {
			next_tok(c, false);
			struct expr *f = new_expr(c, E_TEST);
			if (!f)
				return NULL;
			f->negate = accept_name(c, "not");
			struct token t = next_tok(c, false);
			if (t.kind != T_NAME) {
				cerr(c, "expected a test name after 'is'");
				return NULL;
			}
			f->a = e;
			f->name = tok_name(c, &t);
			if (accept_op(c, "(")) {
				if (parse_args(c, f))
					return NULL;
			} else {
				/* one argument without parentheses: "is divisibleby 3", "is sameas false" */
				struct token n = next_tok(c, true);
				bool arg = n.kind == T_STR || n.kind == T_INT || n.kind == T_FLOAT ||
					   (n.kind == T_NAME && !tok_is_name(&n, "and") && !tok_is_name(&n, "or") &&
					    !tok_is_name(&n, "else") && !tok_is_name(&n, "if") && !tok_is_name(&n, "in") &&
					    !tok_is_name(&n, "not") && !tok_is_name(&n, "is"));
				if (arg) {
					struct expr *x = parse_unary(c, false);
					if (!x || push_arg(c, f, x, NULL))
						return NULL;
				}
			}
			e = f;
		} else {
			break;
		}
	}
	return e;
}

static struct expr *parse_unary(struct compiler *c, bool with_filter)
{
	struct expr *e;
	if (accept_op(c, "-") || (peek_op(c, "+") && accept_op(c, "+"))) {
		/* as in Jinja's parser, filters apply to the negated value: -3|abs == 3 */
		const char *prev = c->tp - 1;
		if (++c->depth > JINJA_MAX_DEPTH) {
			cerr(c, "expression nested too deeply");
			return NULL;
		}
		struct expr *x = parse_unary(c, false);
		c->depth--;
		if (!x)
			return NULL;
		e = new_expr(c, *prev == '-' ? E_NEG : E_POS);
		if (!e)
			return NULL;
		e->a = x;
	} else {
		e = parse_postfix(c, parse_primary(c));
	}
	if (with_filter)
		e = parse_filters(c, e);
	return e;
}

static struct expr *bin(struct compiler *c, int op, struct expr *a, struct expr *b)
{
	if (!a || !b)
		return NULL;
	struct expr *e = new_expr(c, E_BIN);
	if (!e)
		return NULL;
	e->op = op;
	e->a = a;
	e->b = b;
	return e;
}

static struct expr *parse_pow(struct compiler *c)
{
	struct expr *e = parse_unary(c, true);
	while (e && accept_op(c, "**"))
		e = bin(c, B_POW, e, parse_unary(c, true));
	return e;
}

static struct expr *parse_math2(struct compiler *c)
{
	struct expr *e = parse_pow(c);
	for (;;) {
		if (accept_op(c, "*"))
			e = bin(c, B_MUL, e, parse_pow(c));
		else if (accept_op(c, "//"))
			e = bin(c, B_FDIV, e, parse_pow(c));
		else if (accept_op(c, "/"))
			e = bin(c, B_DIV, e, parse_pow(c));
		else if (accept_op(c, "%"))
			e = bin(c, B_MOD, e, parse_pow(c));
		else
			return e;
	}
}

static struct expr *parse_concat(struct compiler *c)
{
	struct expr *e = parse_math2(c);
	while (e && accept_op(c, "~"))
		e = bin(c, B_CAT, e, parse_math2(c));
	return e;
}

static struct expr *parse_math1(struct compiler *c)
{
	struct expr *e = parse_concat(c);
	for (;;) {
		if (accept_op(c, "+"))
			e = bin(c, B_ADD, e, parse_concat(c));
		else if (accept_op(c, "-"))
			e = bin(c, B_SUB, e, parse_concat(c));
		else
			return e;
	}
}

static struct expr *parse_compare(struct compiler *c)
{
	struct expr *e = parse_math1(c);
	struct expr *chain = NULL;
	struct expr *left = e;
	for (;;) {
		int op;
		if (accept_op(c, "=="))
			op = B_EQ;
		else if (accept_op(c, "!="))
			op = B_NE;
		else if (accept_op(c, "<="))
			op = B_LE;
		else if (accept_op(c, ">="))
			op = B_GE;
		else if (accept_op(c, "<"))
			op = B_LT;
		else if (accept_op(c, ">"))
			op = B_GT;
		else if (accept_name(c, "in"))
			op = B_IN;
		else if (peek_name(c, "not")) {
			const char *save = c->tp;
			next_tok(c, false);
			if (!accept_name(c, "in")) {
				c->tp = save;
				break;
			}
			op = B_NOTIN;
		} else
			break;
		struct expr *right = parse_math1(c);
		struct expr *cmp = bin(c, op, left, right);
		if (!cmp)
			return NULL;
		/* a < b < c == (a < b) and (b < c) */
		if (!chain) {
			chain = cmp;
		} else {
			struct expr *and = new_expr(c, E_AND);
			if (!and)
				return NULL;
			and->a = chain;
			and->b = cmp;
			chain = and;
		}
		left = right;
	}
	return chain ? chain : e;
}

static struct expr *parse_not(struct compiler *c)
{
	if (accept_name(c, "not")) {
		struct expr *e = new_expr(c, E_NOT);
		if (!e)
			return NULL;
		if (++c->depth > JINJA_MAX_DEPTH) {
			cerr(c, "expression nested too deeply");
			return NULL;
		}
		e->a = parse_not(c);
		c->depth--;
		return e->a ? e : NULL;
	}
	return parse_compare(c);
}

/* A left-associative chain "sub (word sub)*" of one logical operator. */
static struct expr *parse_logic(struct compiler *c, const char *word, int kind,
				struct expr *(*sub)(struct compiler *))
{
	struct expr *e = sub(c);
	while (e && accept_name(c, word)) {
		struct expr *x = new_expr(c, kind);
		if (!x)
			return NULL;
		x->a = e;
		x->b = sub(c);
		if (!x->b)
			return NULL;
		e = x;
	}
	return e;
}

static struct expr *parse_and(struct compiler *c)
{
	return parse_logic(c, "and", E_AND, parse_not);
}

static struct expr *parse_or(struct compiler *c)
{
	return parse_logic(c, "or", E_OR, parse_and);
}

static struct expr *parse_expr(struct compiler *c)
{
	if (++c->depth > JINJA_MAX_DEPTH) {
		cerr(c, "expression nested too deeply");
		c->depth--;
		return NULL;
	}
	struct expr *e = parse_or(c);
	c->depth--;
	if (!e)
		return NULL;
	while (e && peek_name(c, "if")) {
		next_tok(c, false);
		struct expr *x = new_expr(c, E_COND);
		if (!x)
			return NULL;
		x->b = e;
		x->a = parse_or(c);
		if (!x->a)
			return NULL;
		if (accept_name(c, "else")) {
			x->c = parse_expr(c);
			if (!x->c)
				return NULL;
		}
		e = x;
	}
	return e;
}

/* An expression or a bare tuple "a, b" (set/for targets and values). */
static struct expr *parse_tuple(struct compiler *c, bool names_only)
{
	struct expr *first = names_only ? parse_postfix(c, parse_primary(c)) : parse_expr(c);
	if (!first || !peek_op(c, ","))
		return first;
	struct expr *t = new_expr(c, E_TUPLE);
	if (!t || push_arg(c, t, first, NULL))
		return NULL;
	while (accept_op(c, ",")) {
		struct token n = next_tok(c, true);
		if (n.kind == T_EOF || tok_is_name(&n, "in") || tok_is_op(&n, "="))
			break;
		struct expr *x = names_only ? parse_postfix(c, parse_primary(c)) : parse_expr(c);
		if (!x || push_arg(c, t, x, NULL))
			return NULL;
	}
	return t;
}

/* ---- statements ------------------------------------------------------------------- */

struct nodelist {
	struct node **v;
	size_t n, cap;
};

static int nl_push(struct compiler *c, struct nodelist *l, struct node *n)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 8;
		struct node **v = arena_alloc(c->ar, cap * sizeof(*v));
		if (!v)
			return cerr(c, "out of memory");
		if (l->n)
			memcpy(v, l->v, l->n * sizeof(*v));
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = n;
	return 0;
}

static struct node *new_node(struct compiler *c, int kind)
{
	struct node *n = arena_alloc(c->ar, sizeof(*n));
	if (!n) {
		cerr(c, "out of memory");
		return NULL;
	}
	memset(n, 0, sizeof(*n));
	n->kind = kind;
	n->line = c->line;
	return n;
}

static int end_of_tag(struct compiler *c)
{
	struct token t = next_tok(c, true);
	if (t.kind != T_EOF && !c->rc)
		return cerr(c, "unexpected text at the end of the tag");
	return c->rc;
}

/* Parses statements until one of the stop keywords (NULL-terminated list);
 * the keyword found is returned in *stop (its tag's tokens positioned after
 * the keyword). */
static int parse_block(struct compiler *c, struct nodelist *out, const char *const *stops, const char **stop);
static int parse_block_inner(struct compiler *c, struct nodelist *out, const char *const *stops, const char **stop);

static int parse_stmt(struct compiler *c, struct nodelist *out, const char *kw)
{
	if (!strcmp(kw, "if")) {
		struct node *n = new_node(c, N_IF);
		if (!n || !(n->e = parse_expr(c)) || end_of_tag(c))
			return c->rc ? c->rc : cerr(c, "bad if");
		static const char *const stops[] = { "elif", "else", "endif", NULL };
		struct nodelist body = { 0 };
		const char *stop;
		struct node *cur = n;
		if (nl_push(c, out, n))
			return c->rc;
		for (;;) {
			body = (struct nodelist){ 0 };
			if (parse_block(c, &body, stops, &stop))
				return c->rc;
			if (cur->body == NULL && cur->nbody == 0 && cur->kind == N_IF && cur->alt == NULL &&
			    cur->e) {
				cur->body = body.v;
				cur->nbody = body.n;
			}
			if (!strcmp(stop, "endif")) {
				if (end_of_tag(c))
					return c->rc;
				return 0;
			}
			if (!strcmp(stop, "elif")) {
				struct node *e = new_node(c, N_IF);
				if (!e || !(e->e = parse_expr(c)) || end_of_tag(c))
					return c->rc ? c->rc : cerr(c, "bad elif");
				cur->alt = arena_alloc(c->ar, sizeof(struct node *));
				if (!cur->alt)
					return cerr(c, "out of memory");
				cur->alt[0] = e;
				cur->nalt = 1;
				cur = e;
				continue;
			}
			/* else */
			if (end_of_tag(c))
				return c->rc;
			static const char *const stops2[] = { "endif", NULL };
			struct nodelist els = { 0 };
			if (parse_block(c, &els, stops2, &stop) || end_of_tag(c))
				return c->rc;
			cur->alt = els.v;
			cur->nalt = els.n;
			return 0;
		}
	}
	if (!strcmp(kw, "for")) {
		struct node *n = new_node(c, N_FOR);
		if (!n)
			return c->rc;
		struct expr *target = parse_tuple(c, true);
		if (!target)
			return c->rc ? c->rc : cerr(c, "bad for target");
		size_t nv = target->kind == E_TUPLE ? target->nargs : 1;
		n->vars = arena_alloc(c->ar, nv * sizeof(char *));
		if (!n->vars)
			return cerr(c, "out of memory");
		for (size_t i = 0; i < nv; i++) {
			struct expr *v = target->kind == E_TUPLE ? target->args[i] : target;
			if (v->kind != E_NAME)
				return cerr(c, "for: loop variables must be names");
			n->vars[i] = v->name;
		}
		n->nvars = nv;
		if (!accept_name(c, "in"))
			return cerr(c, "for: expected 'in'");
		n->e = parse_or(c); /* "if" after the iterable is the loop filter */
		if (!n->e)
			return c->rc;
		if (accept_name(c, "if") && !(n->filter = parse_expr(c)))
			return c->rc;
		if (accept_name(c, "recursive"))
			return cerr(c, "recursive loops are not supported");
		if (end_of_tag(c))
			return c->rc;
		static const char *const stops[] = { "else", "endfor", NULL };
		struct nodelist body = { 0 };
		const char *stop;
		if (parse_block(c, &body, stops, &stop) || end_of_tag(c))
			return c->rc;
		n->body = body.v;
		n->nbody = body.n;
		if (!strcmp(stop, "else")) {
			static const char *const stops2[] = { "endfor", NULL };
			struct nodelist els = { 0 };
			if (parse_block(c, &els, stops2, &stop) || end_of_tag(c))
				return c->rc;
			n->alt = els.v;
			n->nalt = els.n;
		}
		return nl_push(c, out, n);
	}
	if (!strcmp(kw, "set")) {
		struct expr *target = parse_tuple(c, true);
		if (!target)
			return c->rc ? c->rc : cerr(c, "bad set target");
		if (accept_op(c, "=")) {
			struct node *n = new_node(c, N_SET);
			if (!n)
				return c->rc;
			n->target = target;
			n->e = parse_tuple(c, false);
			if (!n->e || end_of_tag(c))
				return c->rc ? c->rc : cerr(c, "bad set value");
			return nl_push(c, out, n);
		}
		/* block set: {% set x %}...{% endset %} */
		if (target->kind != E_NAME)
			return cerr(c, "set block: target must be a name");
		if (end_of_tag(c))
			return c->rc;
		struct node *n = new_node(c, N_SETBLOCK);
		if (!n)
			return c->rc;
		n->name = target->name;
		static const char *const stops[] = { "endset", NULL };
		struct nodelist body = { 0 };
		const char *stop;
		if (parse_block(c, &body, stops, &stop) || end_of_tag(c))
			return c->rc;
		n->body = body.v;
		n->nbody = body.n;
		return nl_push(c, out, n);
	}
	if (!strcmp(kw, "macro")) {
		struct node *n = new_node(c, N_MACRO);
		struct token t = next_tok(c, false);
		if (!n || t.kind != T_NAME)
			return c->rc ? c->rc : cerr(c, "macro: expected a name");
		n->name = tok_name(c, &t);
		if (expect_op(c, "("))
			return c->rc;
		struct expr params = { 0 };
		if (parse_args(c, &params))
			return c->rc;
		n->vars = arena_alloc(c->ar, (params.nargs + 1) * sizeof(char *));
		n->defaults = arena_alloc(c->ar, (params.nargs + 1) * sizeof(struct expr *));
		if (!n->vars || !n->defaults)
			return cerr(c, "out of memory");
		for (size_t i = 0; i < params.nargs; i++) {
			if (params.kwnames[i]) {
				n->vars[i] = params.kwnames[i];
				n->defaults[i] = params.args[i];
			} else if (params.args[i]->kind == E_NAME) {
				n->vars[i] = params.args[i]->name;
				n->defaults[i] = NULL;
			} else {
				return cerr(c, "macro: bad parameter");
			}
		}
		n->nvars = params.nargs;
		if (end_of_tag(c))
			return c->rc;
		static const char *const stops[] = { "endmacro", NULL };
		struct nodelist body = { 0 };
		const char *stop;
		if (parse_block(c, &body, stops, &stop))
			return c->rc;
		struct token tn = next_tok(c, true); /* {% endmacro name %} */
		if (tn.kind == T_NAME)
			next_tok(c, false);
		if (end_of_tag(c))
			return c->rc;
		n->body = body.v;
		n->nbody = body.n;
		return nl_push(c, out, n);
	}
	if (!strcmp(kw, "break") || !strcmp(kw, "continue")) {
		struct node *n = new_node(c, kw[0] == 'b' ? N_BREAK : N_CONTINUE);
		if (!n || end_of_tag(c))
			return c->rc;
		return nl_push(c, out, n);
	}
	if (!strcmp(kw, "generation") || !strcmp(kw, "endgeneration")) {
		/* transformers' AssistantTracker markers: no output */
		return end_of_tag(c);
	}
	return cerr(c, "unsupported statement '%s'", kw);
}

static int parse_block(struct compiler *c, struct nodelist *out, const char *const *stops, const char **stop)
{
	if (stops && c->depth > JINJA_MAX_DEPTH)
		return cerr(c, "blocks nested too deeply");
	c->depth++;
	int rc = parse_block_inner(c, out, stops, stop);
	c->depth--;
	return rc;
}

static int parse_block_inner(struct compiler *c, struct nodelist *out, const char *const *stops, const char **stop)
{
	while (c->si < c->nsegs && !c->rc) {
		struct seg *s = &c->segs[c->si++];
		c->line = s->line;
		if (s->kind == S_TEXT) {
			struct node *n = new_node(c, N_TEXT);
			if (!n)
				return c->rc;
			n->text = s->p;
			n->text_len = s->n;
			if (nl_push(c, out, n))
				return c->rc;
			continue;
		}
		c->tp = s->p;
		c->te = s->p + s->n;
		if (s->kind == S_EXPR) {
			struct node *n = new_node(c, N_OUT);
			if (!n || !(n->e = parse_expr(c)) || end_of_tag(c))
				return c->rc ? c->rc : cerr(c, "bad expression");
			if (nl_push(c, out, n))
				return c->rc;
			continue;
		}
		struct token t = next_tok(c, false);
		if (t.kind != T_NAME)
			return cerr(c, "expected a statement keyword");
		const char *kw = tok_name(c, &t);
		if (!kw)
			return cerr(c, "out of memory");
		for (size_t k = 0; stops && stops[k]; k++) {
			if (!strcmp(kw, stops[k])) {
				*stop = stops[k];
				return 0;
			}
		}
		if (parse_stmt(c, out, kw))
			return c->rc;
	}
	if (c->rc)
		return c->rc;
	if (stops) {
		size_t k = 0;
		while (stops[k + 1])
			k++;
		return cerr(c, "missing {%% %s %%}", stops[k]);
	}
	return 0;
}

int kvf_chat_template_compile(const char *src, size_t len, kvf_chat_template **out)
{
	if (!src || !out)
		return kvf_errf(KVF_E_INVAL, "kvf_chat_template_compile: NULL argument");
	kvf_chat_template *tpl = kvf_calloc(1, sizeof(*tpl));
	if (!tpl)
		return kvf_errf(KVF_E_NOMEM, "chat template: out of memory");
	struct compiler c = { .ar = &tpl->ar, .line = 1 };
	/* keep our own copy of the source: text nodes point into it */
	char *copy = arena_strndup(&tpl->ar, src, len);
	int rc;
	if (!copy) {
		rc = kvf_errf(KVF_E_NOMEM, "chat template: out of memory");
		goto fail;
	}
	if ((rc = segment(&c, copy, len)))
		goto fail;
	struct nodelist body = { 0 };
	if ((rc = parse_block(&c, &body, NULL, NULL)))
		goto fail;
	if (tpl->ar.failed) {
		rc = kvf_errf(KVF_E_NOMEM, "chat template: out of memory");
		goto fail;
	}
	tpl->body = body.v;
	tpl->nbody = body.n;
	kvf_free(c.segs);
	*out = tpl;
	return 0;
fail:
	kvf_free(c.segs);
	arena_free(&tpl->ar);
	kvf_free(tpl);
	return rc;
}

void kvf_chat_template_destroy(kvf_chat_template *tpl)
{
	if (!tpl)
		return;
	arena_free(&tpl->ar);
	kvf_free(tpl);
}

/* ---- rendering ------------------------------------------------------------------------- */

struct frame {
	struct frame *parent;
	const char **names;
	jv *vals;
	size_t n, cap;
};

struct render {
	struct arena ar;
	char *out;
	size_t len, cap;
	int rc;
	int line;
	int loop_ctl; /* 1 break, 2 continue */
	struct frame *globals;
	long steps;
	int depth;
};

static int rerr(struct render *r, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int rerr(struct render *r, int code, const char *fmt, ...)
{
	char msg[384];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (!r->rc)
		r->rc = kvf_errf(code, "chat template: line %d: %s", r->line, msg);
	return r->rc;
}

static int emit(struct render *r, const char *s, size_t n)
{
	if (r->rc)
		return r->rc;
	if (r->len + n > JINJA_MAX_OUTPUT)
		return rerr(r, KVF_E_TOOBIG, "output over %u MiB", JINJA_MAX_OUTPUT >> 20);
	if (tok_append(&r->out, &r->len, &r->cap, s, n) != 0)
		return rerr(r, KVF_E_NOMEM, "out of memory");
	return 0;
}

static int frame_set(struct render *r, struct frame *f, const char *name, jv v)
{
	for (size_t i = 0; i < f->n; i++) {
		if (!strcmp(f->names[i], name)) {
			f->vals[i] = v;
			return 0;
		}
	}
	if (f->n == f->cap) {
		size_t cap = f->cap ? f->cap * 2 : 8;
		const char **nn = arena_alloc(&r->ar, cap * sizeof(*nn));
		jv *nv = arena_alloc(&r->ar, cap * sizeof(*nv));
		if (!nn || !nv)
			return rerr(r, KVF_E_NOMEM, "out of memory");
		if (f->n) {
			memcpy(nn, f->names, f->n * sizeof(*nn));
			memcpy(nv, f->vals, f->n * sizeof(*nv));
		}
		f->names = nn;
		f->vals = nv;
		f->cap = cap;
	}
	f->names[f->n] = name;
	f->vals[f->n++] = v;
	return 0;
}

static bool frame_get(const struct frame *f, const char *name, jv *v)
{
	for (; f; f = f->parent)
		for (size_t i = f->n; i-- > 0;)
			if (!strcmp(f->names[i], name)) {
				*v = f->vals[i];
				return true;
			}
	return false;
}

static struct jlist *new_list(struct render *r, size_t cap)
{
	struct jlist *l = arena_alloc(&r->ar, sizeof(*l));
	if (!l)
		return NULL;
	l->n = 0;
	l->cap = cap ? cap : 4;
	l->v = arena_alloc(&r->ar, l->cap * sizeof(jv));
	return l->v ? l : NULL;
}

static int list_push(struct render *r, struct jlist *l, jv v)
{
	if (l->n == l->cap) {
		jv *nv = arena_alloc(&r->ar, l->cap * 2 * sizeof(jv));
		if (!nv)
			return rerr(r, KVF_E_NOMEM, "out of memory");
		memcpy(nv, l->v, l->n * sizeof(jv));
		l->v = nv;
		l->cap *= 2;
	}
	l->v[l->n++] = v;
	return 0;
}

static struct jdict *new_dict(struct render *r, size_t cap)
{
	struct jdict *d = arena_alloc(&r->ar, sizeof(*d));
	if (!d)
		return NULL;
	d->n = 0;
	d->ns = false;
	d->cap = cap ? cap : 4;
	d->k = arena_alloc(&r->ar, d->cap * sizeof(jv));
	d->v = arena_alloc(&r->ar, d->cap * sizeof(jv));
	return d->k && d->v ? d : NULL;
}

static bool str_eq(jv a, const char *s, size_t n)
{
	return a.t == JV_STR && a.s.n == n && !memcmp(a.s.p, s, n);
}

static bool dict_get(const struct jdict *d, const char *k, size_t n, jv *out)
{
	for (size_t i = 0; i < d->n; i++)
		if (str_eq(d->k[i], k, n)) {
			*out = d->v[i];
			return true;
		}
	return false;
}

static int dict_set(struct render *r, struct jdict *d, jv k, jv v)
{
	for (size_t i = 0; i < d->n; i++)
		if (k.t == JV_STR && str_eq(d->k[i], k.s.p, k.s.n)) {
			d->v[i] = v;
			return 0;
		}
	if (d->n == d->cap) {
		jv *nk = arena_alloc(&r->ar, d->cap * 2 * sizeof(jv));
		jv *nv = arena_alloc(&r->ar, d->cap * 2 * sizeof(jv));
		if (!nk || !nv)
			return rerr(r, KVF_E_NOMEM, "out of memory");
		memcpy(nk, d->k, d->n * sizeof(jv));
		memcpy(nv, d->v, d->n * sizeof(jv));
		d->k = nk;
		d->v = nv;
		d->cap *= 2;
	}
	d->k[d->n] = k;
	d->v[d->n++] = v;
	return 0;
}

static jv cstr(struct render *r, const char *s)
{
	size_t n = strlen(s);
	char *d = arena_strndup(&r->ar, s, n);
	return d ? jstr_v(d, n) : UNDEF;
}

static const char *type_name(jv v)
{
	static const char *const names[] = { "Undefined", "NoneType", "bool", "int", "float",
					     "str", "list", "dict", "function", "macro" };
	return names[v.t];
}

static bool truthy(jv v)
{
	switch (v.t) {
	case JV_UNDEF: case JV_NONE: return false;
	case JV_BOOL: return v.b;
	case JV_INT: return v.i != 0;
	case JV_FLOAT: return v.f != 0.0;
	case JV_STR: return v.s.n != 0;
	case JV_LIST: return v.l->n != 0;
	case JV_DICT: return v.d->n != 0;
	default: return true;
	}
}

/* Python float repr: shortest round-trip digits, exponent when exp < -4 or >= 16. */
static void py_float(double x, char *buf, size_t cap)
{
	if (isnan(x)) {
		snprintf(buf, cap, "nan");
		return;
	}
	if (isinf(x)) {
		snprintf(buf, cap, x < 0 ? "-inf" : "inf");
		return;
	}
	char e[40];
	int p;
	for (p = 1; p <= 17; p++) {
		snprintf(e, sizeof(e), "%.*e", p - 1, x);
		if (strtod(e, NULL) == x)
			break;
	}
	/* e: [-]d[.ddd]e[+-]XX */
	char digits[24];
	size_t nd = 0;
	const char *q = e;
	bool neg = *q == '-';
	if (neg)
		q++;
	for (; *q && *q != 'e'; q++)
		if (*q != '.')
			digits[nd++] = *q;
	int exp = atoi(q + 1);
	while (nd > 1 && digits[nd - 1] == '0')
		nd--;
	digits[nd] = '\0';
	size_t o = 0;
	if (neg)
		buf[o++] = '-';
	if (exp >= 16 || exp < -4) {
		buf[o++] = digits[0];
		if (nd > 1) {
			buf[o++] = '.';
			memcpy(buf + o, digits + 1, nd - 1);
			o += nd - 1;
		}
		snprintf(buf + o, cap - o, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
		return;
	}
	if (exp < 0) {
		buf[o++] = '0';
		buf[o++] = '.';
		for (int k = 0; k < -exp - 1; k++)
			buf[o++] = '0';
		memcpy(buf + o, digits, nd);
		o += nd;
	} else {
		for (int k = 0; k <= exp; k++)
			buf[o++] = (size_t)k < nd ? digits[k] : '0';
		buf[o++] = '.';
		if ((size_t)exp + 1 < nd) {
			memcpy(buf + o, digits + exp + 1, nd - (size_t)exp - 1);
			o += nd - (size_t)exp - 1;
		} else {
			buf[o++] = '0';
		}
	}
	buf[o] = '\0';
}

struct sbuf {
	char *p;
	size_t n, cap;
	bool fail;
};

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
	if (!b->fail && tok_append(&b->p, &b->n, &b->cap, s, n) != 0)
		b->fail = true;
}
static void sb_str(struct sbuf *b, const char *s)
{
	sb_add(b, s, strlen(s));
}

static void py_repr_str(struct sbuf *b, const char *s, size_t n)
{
	bool has_sq = memchr(s, '\'', n) != NULL, has_dq = memchr(s, '"', n) != NULL;
	char q = has_sq && !has_dq ? '"' : '\'';
	sb_add(b, &q, 1);
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		char tmp[8];
		if (ch == '\\' || ch == (unsigned char)q) {
			tmp[0] = '\\';
			tmp[1] = (char)ch;
			sb_add(b, tmp, 2);
		} else if (ch == '\n') {
			sb_str(b, "\\n");
		} else if (ch == '\r') {
			sb_str(b, "\\r");
		} else if (ch == '\t') {
			sb_str(b, "\\t");
		} else if (ch < 0x20 || ch == 0x7f) {
			snprintf(tmp, sizeof(tmp), "\\x%02x", ch);
			sb_str(b, tmp);
		} else {
			sb_add(b, (const char *)&ch, 1);
		}
	}
	sb_add(b, &q, 1);
}

/* str(v) when top, repr(v) inside containers. */
static void py_str(struct sbuf *b, jv v, bool top)
{
	char num[64];
	switch (v.t) {
	case JV_UNDEF: if (top) return; sb_str(b, "Undefined"); return;
	case JV_NONE: sb_str(b, "None"); return;
	case JV_BOOL: sb_str(b, v.b ? "True" : "False"); return;
	case JV_INT: snprintf(num, sizeof(num), "%lld", (long long)v.i); sb_str(b, num); return;
	case JV_FLOAT: py_float(v.f, num, sizeof(num)); sb_str(b, num); return;
	case JV_STR:
		if (top)
			sb_add(b, v.s.p, v.s.n);
		else
			py_repr_str(b, v.s.p, v.s.n);
		return;
	case JV_LIST:
		sb_str(b, "[");
		for (size_t i = 0; i < v.l->n; i++) {
			if (i)
				sb_str(b, ", ");
			py_str(b, v.l->v[i], false);
		}
		sb_str(b, "]");
		return;
	case JV_DICT:
		if (v.d->ns) {
			sb_str(b, "<Namespace>");
			return;
		}
		sb_str(b, "{");
		for (size_t i = 0; i < v.d->n; i++) {
			if (i)
				sb_str(b, ", ");
			py_str(b, v.d->k[i], false);
			sb_str(b, ": ");
			py_str(b, v.d->v[i], false);
		}
		sb_str(b, "}");
		return;
	default:
		sb_str(b, "<function>");
		return;
	}
}

static jv to_str(struct render *r, jv v)
{
	if (v.t == JV_STR)
		return v;
	struct sbuf b = { 0 };
	py_str(&b, v, true);
	if (b.fail) {
		kvf_free(b.p);
		rerr(r, KVF_E_NOMEM, "out of memory");
		return UNDEF;
	}
	char *d = arena_strndup(&r->ar, b.p ? b.p : "", b.n);
	kvf_free(b.p);
	if (!d) {
		rerr(r, KVF_E_NOMEM, "out of memory");
		return UNDEF;
	}
	return jstr_v(d, b.n);
}

/* json.dumps(v, ensure_ascii=False, indent=indent, sort_keys=...) */
static void json_str(struct sbuf *b, const char *s, size_t n)
{
	sb_str(b, "\"");
	size_t start = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		const char *esc = NULL;
		char tmp[8];
		if (ch == '"')
			esc = "\\\"";
		else if (ch == '\\')
			esc = "\\\\";
		else if (ch == '\n')
			esc = "\\n";
		else if (ch == '\r')
			esc = "\\r";
		else if (ch == '\t')
			esc = "\\t";
		else if (ch == '\b')
			esc = "\\b";
		else if (ch == '\f')
			esc = "\\f";
		else if (ch < 0x20) {
			snprintf(tmp, sizeof(tmp), "\\u%04x", ch);
			esc = tmp;
		}
		if (esc) {
			sb_add(b, s + start, i - start);
			sb_str(b, esc);
			start = i + 1;
		}
	}
	sb_add(b, s + start, n - start);
	sb_str(b, "\"");
}

static void indent_nl(struct sbuf *b, int indent, int depth)
{
	sb_str(b, "\n");
	for (int i = 0; i < indent * depth; i++)
		sb_str(b, " ");
}

static int cmp_keys(const void *a, const void *b)
{
	const jv *x = *(const jv *const *)a, *y = *(const jv *const *)b;
	size_t n = x->s.n < y->s.n ? x->s.n : y->s.n;
	int c = memcmp(x->s.p, y->s.p, n);
	return c ? c : (x->s.n < y->s.n ? -1 : x->s.n > y->s.n);
}

static int to_json(struct sbuf *b, jv v, int indent, int depth, bool sort_keys, const char *item_sep,
		   const char *key_sep)
{
	char num[64];
	switch (v.t) {
	case JV_NONE: case JV_UNDEF: sb_str(b, "null"); return 0;
	case JV_BOOL: sb_str(b, v.b ? "true" : "false"); return 0;
	case JV_INT: snprintf(num, sizeof(num), "%lld", (long long)v.i); sb_str(b, num); return 0;
	case JV_FLOAT:
		if (isnan(v.f))
			sb_str(b, "NaN");
		else if (isinf(v.f))
			sb_str(b, v.f < 0 ? "-Infinity" : "Infinity");
		else {
			py_float(v.f, num, sizeof(num));
			sb_str(b, num);
		}
		return 0;
	case JV_STR: json_str(b, v.s.p, v.s.n); return 0;
	case JV_LIST:
		sb_str(b, "[");
		if (v.l->n == 0) {
			sb_str(b, "]");
			return 0;
		}
		for (size_t i = 0; i < v.l->n; i++) {
			if (i)
				sb_str(b, item_sep);
			if (indent >= 0)
				indent_nl(b, indent, depth + 1);
			if (to_json(b, v.l->v[i], indent, depth + 1, sort_keys, item_sep, key_sep))
				return -1;
		}
		if (indent >= 0)
			indent_nl(b, indent, depth);
		sb_str(b, "]");
		return 0;
	case JV_DICT: {
		sb_str(b, "{");
		if (v.d->n == 0) {
			sb_str(b, "}");
			return 0;
		}
		size_t n = v.d->n;
		size_t *order = kvf_malloc(n * sizeof(size_t));
		const jv **keys = kvf_malloc(n * sizeof(jv *));
		if (!order || !keys) {
			kvf_free(order);
			kvf_free(keys);
			b->fail = true;
			return -1;
		}
		for (size_t i = 0; i < n; i++)
			keys[i] = &v.d->k[i];
		if (sort_keys)
			qsort(keys, n, sizeof(*keys), cmp_keys);
		for (size_t i = 0; i < n; i++)
			order[i] = (size_t)(keys[i] - v.d->k);
		int rc = 0;
		for (size_t i = 0; i < n && !rc; i++) {
			if (i)
				sb_str(b, item_sep);
			if (indent >= 0)
				indent_nl(b, indent, depth + 1);
			jv k = v.d->k[order[i]];
			if (k.t == JV_STR)
				json_str(b, k.s.p, k.s.n);
			else {
				struct sbuf kb = { 0 };
				py_str(&kb, k, true);
				json_str(b, kb.p ? kb.p : "", kb.n);
				kvf_free(kb.p);
			}
			sb_str(b, key_sep);
			rc = to_json(b, v.d->v[order[i]], indent, depth + 1, sort_keys, item_sep, key_sep);
		}
		kvf_free(order);
		kvf_free(keys);
		if (rc)
			return rc;
		if (indent >= 0)
			indent_nl(b, indent, depth);
		sb_str(b, "}");
		return 0;
	}
	default:
		return -1;
	}
}

static bool values_equal(jv a, jv b)
{
	if ((a.t == JV_INT || a.t == JV_FLOAT || a.t == JV_BOOL) && (b.t == JV_INT || b.t == JV_FLOAT || b.t == JV_BOOL)) {
		double x = a.t == JV_INT ? (double)a.i : a.t == JV_FLOAT ? a.f : a.b;
		double y = b.t == JV_INT ? (double)b.i : b.t == JV_FLOAT ? b.f : b.b;
		if (a.t != JV_FLOAT && b.t != JV_FLOAT) {
			int64_t xi = a.t == JV_INT ? a.i : a.b, yi = b.t == JV_INT ? b.i : b.b;
			return xi == yi;
		}
		return x == y;
	}
	if (a.t != b.t)
		return false;
	switch (a.t) {
	case JV_UNDEF: case JV_NONE: return true;
	case JV_STR: return a.s.n == b.s.n && !memcmp(a.s.p, b.s.p, a.s.n);
	case JV_LIST:
		if (a.l->n != b.l->n)
			return false;
		for (size_t i = 0; i < a.l->n; i++)
			if (!values_equal(a.l->v[i], b.l->v[i]))
				return false;
		return true;
	case JV_DICT:
		if (a.d->n != b.d->n)
			return false;
		for (size_t i = 0; i < a.d->n; i++) {
			jv o;
			if (a.d->k[i].t != JV_STR || !dict_get(b.d, a.d->k[i].s.p, a.d->k[i].s.n, &o) ||
			    !values_equal(a.d->v[i], o))
				return false;
		}
		return true;
	case JV_FUNC: return a.fn == b.fn;
	case JV_MACRO: return a.m == b.m;
	default: return false;
	}
}

/* -1/0/1, or 2 when not comparable */
static int values_cmp(jv a, jv b)
{
	if ((a.t == JV_INT || a.t == JV_FLOAT || a.t == JV_BOOL) && (b.t == JV_INT || b.t == JV_FLOAT || b.t == JV_BOOL)) {
		double x = a.t == JV_INT ? (double)a.i : a.t == JV_FLOAT ? a.f : a.b;
		double y = b.t == JV_INT ? (double)b.i : b.t == JV_FLOAT ? b.f : b.b;
		return x < y ? -1 : x > y;
	}
	if (a.t == JV_STR && b.t == JV_STR) {
		size_t n = a.s.n < b.s.n ? a.s.n : b.s.n;
		int c = memcmp(a.s.p, b.s.p, n);
		if (c)
			return c < 0 ? -1 : 1;
		return a.s.n < b.s.n ? -1 : a.s.n > b.s.n;
	}
	return 2;
}

static jv from_json(struct render *r, const json_t *j)
{
	switch (json_typeof(j)) {
	case JSON_NULL: return NONE;
	case JSON_TRUE: return jbool_v(true);
	case JSON_FALSE: return jbool_v(false);
	case JSON_INTEGER: return jint_v(json_integer_value(j));
	case JSON_REAL: return jfloat_v(json_real_value(j));
	case JSON_STRING: return jstr_v(json_string_value(j), json_string_length(j));
	case JSON_ARRAY: {
		struct jlist *l = new_list(r, json_array_size(j));
		if (!l) {
			rerr(r, KVF_E_NOMEM, "out of memory");
			return UNDEF;
		}
		for (size_t i = 0; i < json_array_size(j); i++)
			if (list_push(r, l, from_json(r, json_array_get(j, i))))
				return UNDEF;
		jv v = { .t = JV_LIST };
		v.l = l;
		return v;
	}
	case JSON_OBJECT: {
		struct jdict *d = new_dict(r, json_object_size(j));
		if (!d) {
			rerr(r, KVF_E_NOMEM, "out of memory");
			return UNDEF;
		}
		const char *key;
		size_t klen;
		json_t *val;
		json_object_keylen_foreach((json_t *)j, key, klen, val) {
			if (dict_set(r, d, jstr_v(key, klen), from_json(r, val)))
				return UNDEF;
		}
		jv v = { .t = JV_DICT };
		v.d = d;
		return v;
	}
	}
	return UNDEF;
}

/* ---- builtins ---------------------------------------------------------------------------- */

enum { F_RANGE = 1, F_NAMESPACE, F_RAISE, F_STRFTIME, F_DICT };

struct args {
	jv *pos;
	size_t npos;
	const char **kwn;
	jv *kwv;
	size_t nkw;
};

static jv arg_get(const struct args *a, size_t i, const char *kw, jv dflt)
{
	if (i < a->npos)
		return a->pos[i];
	for (size_t k = 0; kw && k < a->nkw; k++)
		if (!strcmp(a->kwn[k], kw))
			return a->kwv[k];
	return dflt;
}

/* Python str.strip family: chars NULL strips whitespace (ASCII + Unicode spaces). */
static jv strip_str(jv s, jv chars, bool left, bool right)
{
	const char *p = s.s.p;
	size_t a = 0, b = s.s.n;
	if (chars.t == JV_STR) {
		while (left && a < b && memchr(chars.s.p, p[a], chars.s.n) && (unsigned char)p[a] < 0x80)
			a++;
		while (right && b > a && memchr(chars.s.p, p[b - 1], chars.s.n) && (unsigned char)p[b - 1] < 0x80)
			b--;
		/* non-ASCII strip characters: whole code points */
		for (bool changed = true; changed;) {
			changed = false;
			size_t ci = 0;
			while (ci < chars.s.n) {
				uint32_t cp;
				size_t cl = tok_utf8_dec((const unsigned char *)chars.s.p + ci, chars.s.n - ci, &cp);
				if (!cl)
					break;
				if (left && b - a >= cl && !memcmp(p + a, chars.s.p + ci, cl)) {
					a += cl;
					changed = true;
				}
				if (right && b - a >= cl && !memcmp(p + b - cl, chars.s.p + ci, cl)) {
					b -= cl;
					changed = true;
				}
				ci += cl;
			}
		}
		return jstr_v(p + a, b - a);
	}
	for (;;) {
		uint32_t cp;
		size_t l;
		if (left && a < b && (l = tok_utf8_dec((const unsigned char *)p + a, b - a, &cp)) &&
		    (tok_is_space(cp) || (cp >= 0x1C && cp <= 0x1F))) {
			a += l;
			continue;
		}
		break;
	}
	while (right && b > a) {
		size_t k = b - 1;
		while (k > a && ((unsigned char)p[k] & 0xC0) == 0x80)
			k--;
		uint32_t cp;
		if (!tok_utf8_dec((const unsigned char *)p + k, b - k, &cp) ||
		    !(tok_is_space(cp) || (cp >= 0x1C && cp <= 0x1F)))
			break;
		b = k;
	}
	return jstr_v(p + a, b - a);
}

static jv str_case(struct render *r, jv s, int mode /* 0 lower 1 upper 2 capitalize 3 title */)
{
	char *d = arena_alloc(&r->ar, s.s.n * 4 + 1);
	if (!d) {
		rerr(r, KVF_E_NOMEM, "out of memory");
		return UNDEF;
	}
	size_t o = 0, i = 0;
	bool start = true;
	while (i < s.s.n) {
		uint32_t cp;
		size_t l = tok_utf8_dec((const unsigned char *)s.s.p + i, s.s.n - i, &cp);
		if (!l) {
			d[o++] = s.s.p[i++];
			continue;
		}
		utf8proc_int32_t m;
		bool up = mode == 1 || (mode == 2 && i == 0) || (mode == 3 && start);
		m = up ? utf8proc_toupper((utf8proc_int32_t)cp) : utf8proc_tolower((utf8proc_int32_t)cp);
		if (mode == 3)
			start = !tok_is_word(cp) || cp == '_';
		o += tok_utf8_enc((uint32_t)m, d + o);
		i += l;
	}
	d[o] = '\0';
	return jstr_v(d, o);
}

static jv str_replace(struct render *r, jv s, jv from, jv to, int64_t count)
{
	struct sbuf b = { 0 };
	size_t i = 0;
	int64_t done = 0;
	if (from.s.n == 0) {
		/* Python inserts between every character */
		for (size_t k = 0; k <= s.s.n; k++) {
			if (count < 0 || done < count) {
				sb_add(&b, to.s.p, to.s.n);
				done++;
			}
			if (k < s.s.n)
				sb_add(&b, s.s.p + k, 1);
		}
	} else {
		while (i < s.s.n) {
			if ((count < 0 || done < count) && s.s.n - i >= from.s.n &&
			    !memcmp(s.s.p + i, from.s.p, from.s.n)) {
				sb_add(&b, to.s.p, to.s.n);
				i += from.s.n;
				done++;
			} else {
				sb_add(&b, s.s.p + i, 1);
				i++;
			}
		}
	}
	if (b.fail) {
		kvf_free(b.p);
		rerr(r, KVF_E_NOMEM, "out of memory");
		return UNDEF;
	}
	char *d = arena_strndup(&r->ar, b.p ? b.p : "", b.n);
	kvf_free(b.p);
	return d ? jstr_v(d, b.n) : UNDEF;
}

static jv str_split(struct render *r, jv s, jv sep, int64_t maxsplit)
{
	struct jlist *l = new_list(r, 4);
	if (!l) {
		rerr(r, KVF_E_NOMEM, "out of memory");
		return UNDEF;
	}
	const char *p = s.s.p;
	size_t n = s.s.n, i = 0;
	int64_t done = 0;
	if (sep.t != JV_STR) {
		/* whitespace runs, no empty strings */
		while (i < n) {
			while (i < n && is_ws(p[i]))
				i++;
			if (i >= n)
				break;
			size_t st = i;
			if (maxsplit >= 0 && done >= maxsplit) {
				size_t e = n;
				while (e > st && is_ws(p[e - 1]))
					e--;
				list_push(r, l, jstr_v(p + st, e - st));
				break;
			}
			while (i < n && !is_ws(p[i]))
				i++;
			list_push(r, l, jstr_v(p + st, i - st));
			done++;
		}
	} else {
		if (sep.s.n == 0) {
			rerr(r, KVF_E_INVAL, "split: empty separator");
			return UNDEF;
		}
		size_t st = 0;
		while (i + sep.s.n <= n && (maxsplit < 0 || done < maxsplit)) {
			if (!memcmp(p + i, sep.s.p, sep.s.n)) {
				list_push(r, l, jstr_v(p + st, i - st));
				i += sep.s.n;
				st = i;
				done++;
			} else {
				i++;
			}
		}
		list_push(r, l, jstr_v(p + st, n - st));
	}
	jv v = { .t = JV_LIST };
	v.l = l;
	return v;
}

static bool starts_with(jv s, jv p, bool end)
{
	if (p.t != JV_STR || p.s.n > s.s.n)
		return false;
	return !memcmp(end ? s.s.p + s.s.n - p.s.n : s.s.p, p.s.p, p.s.n);
}

static jv method_call(struct render *r, jv obj, const char *name, const struct args *a, bool *found)
{
	*found = true;
	if (obj.t == JV_STR) {
		jv none = NONE;
		if (!strcmp(name, "strip"))
			return strip_str(obj, arg_get(a, 0, "chars", none), true, true);
		if (!strcmp(name, "lstrip"))
			return strip_str(obj, arg_get(a, 0, "chars", none), true, false);
		if (!strcmp(name, "rstrip"))
			return strip_str(obj, arg_get(a, 0, "chars", none), false, true);
		if (!strcmp(name, "startswith") || !strcmp(name, "endswith")) {
			jv p = arg_get(a, 0, NULL, UNDEF);
			bool end = name[0] == 'e';
			if (p.t == JV_LIST) {
				for (size_t i = 0; i < p.l->n; i++)
					if (starts_with(obj, p.l->v[i], end))
						return jbool_v(true);
				return jbool_v(false);
			}
			if (p.t != JV_STR) {
				rerr(r, KVF_E_INVAL, "%s: expected a string argument", name);
				return UNDEF;
			}
			return jbool_v(starts_with(obj, p, end));
		}
		if (!strcmp(name, "split")) {
			jv sep = arg_get(a, 0, "sep", NONE);
			jv ms = arg_get(a, 1, "maxsplit", jint_v(-1));
			return str_split(r, obj, sep, ms.t == JV_INT ? ms.i : -1);
		}
		if (!strcmp(name, "lower"))
			return str_case(r, obj, 0);
		if (!strcmp(name, "upper"))
			return str_case(r, obj, 1);
		if (!strcmp(name, "capitalize")) {
			jv low = str_case(r, obj, 0);
			if (low.t != JV_STR || low.s.n == 0)
				return low;
			return str_case(r, jstr_v(low.s.p, low.s.n), 2);
		}
		if (!strcmp(name, "title"))
			return str_case(r, obj, 3);
		if (!strcmp(name, "replace")) {
			jv f = arg_get(a, 0, NULL, UNDEF), t = arg_get(a, 1, NULL, UNDEF), c = arg_get(a, 2, NULL, jint_v(-1));
			if (f.t != JV_STR || t.t != JV_STR) {
				rerr(r, KVF_E_INVAL, "replace: expected string arguments");
				return UNDEF;
			}
			return str_replace(r, obj, f, t, c.t == JV_INT ? c.i : -1);
		}
		if (!strcmp(name, "find")) {
			jv f = arg_get(a, 0, NULL, UNDEF);
			if (f.t != JV_STR)
				return jint_v(-1);
			for (size_t i = 0; i + f.s.n <= obj.s.n; i++)
				if (!memcmp(obj.s.p + i, f.s.p, f.s.n))
					return jint_v((int64_t)i);
			return jint_v(-1);
		}
		if (!strcmp(name, "join")) {
			jv l = arg_get(a, 0, NULL, UNDEF);
			if (l.t != JV_LIST) {
				rerr(r, KVF_E_INVAL, "join: expected a list");
				return UNDEF;
			}
			struct sbuf b = { 0 };
			for (size_t i = 0; i < l.l->n; i++) {
				if (i)
					sb_add(&b, obj.s.p, obj.s.n);
				jv s = to_str(r, l.l->v[i]);
				sb_add(&b, s.s.p, s.s.n);
			}
			char *d = arena_strndup(&r->ar, b.p ? b.p : "", b.n);
			kvf_free(b.p);
			return d ? jstr_v(d, b.n) : UNDEF;
		}
	} else if (obj.t == JV_DICT) {
		if (!strcmp(name, "items") || !strcmp(name, "keys") || !strcmp(name, "values")) {
			struct jlist *l = new_list(r, obj.d->n);
			if (!l)
				return UNDEF;
			for (size_t i = 0; i < obj.d->n; i++) {
				jv item;
				if (name[0] == 'i') {
					struct jlist *p = new_list(r, 2);
					if (!p)
						return UNDEF;
					list_push(r, p, obj.d->k[i]);
					list_push(r, p, obj.d->v[i]);
					item.t = JV_LIST;
					item.l = p;
				} else {
					item = name[0] == 'k' ? obj.d->k[i] : obj.d->v[i];
				}
				list_push(r, l, item);
			}
			jv v = { .t = JV_LIST };
			v.l = l;
			return v;
		}
		if (!strcmp(name, "get")) {
			jv k = arg_get(a, 0, NULL, UNDEF), out;
			if (k.t == JV_STR && dict_get(obj.d, k.s.p, k.s.n, &out))
				return out;
			return arg_get(a, 1, "default", NONE);
		}
	}
	*found = false;
	return UNDEF;
}

/* ---- evaluation -------------------------------------------------------------------------- */

static jv eval(struct render *r, struct frame *f, const struct expr *e);
static int exec_body(struct render *r, struct frame *f, struct node **body, size_t n);

static jv getattr_v(struct render *r, jv obj, const char *name, size_t n, const struct expr *e)
{
	if (obj.t == JV_UNDEF) {
		rerr(r, KVF_E_INVAL, "'%s' is undefined (reading attribute '%.*s')",
		     obj.undef_name ? obj.undef_name : "value", (int)n, name);
		return UNDEF;
	}
	if (obj.t == JV_DICT) {
		jv v;
		if (dict_get(obj.d, name, n, &v))
			return v;
	}
	jv u = UNDEF;
	u.undef_name = e && e->kind == E_ATTR ? e->name : "item";
	return u;
}

static jv index_v(struct render *r, jv obj, jv idx, const struct expr *e)
{
	if (obj.t == JV_UNDEF) {
		rerr(r, KVF_E_INVAL, "'%s' is undefined (subscripted)", obj.undef_name ? obj.undef_name : "value");
		return UNDEF;
	}
	if (idx.t == JV_STR)
		return getattr_v(r, obj, idx.s.p, idx.s.n, NULL);
	if (idx.t == JV_INT || idx.t == JV_BOOL) {
		int64_t i = idx.t == JV_INT ? idx.i : idx.b;
		if (obj.t == JV_LIST) {
			if (i < 0)
				i += (int64_t)obj.l->n;
			if (i >= 0 && (size_t)i < obj.l->n)
				return obj.l->v[i];
			return UNDEF;
		}
		if (obj.t == JV_STR) {
			/* characters, not bytes */
			size_t count = 0, pos = 0;
			const char *p = obj.s.p;
			for (size_t k = 0; k < obj.s.n; k++)
				count += ((unsigned char)p[k] & 0xC0) != 0x80;
			if (i < 0)
				i += (int64_t)count;
			if (i < 0 || (size_t)i >= count)
				return UNDEF;
			for (int64_t c = 0; c < i; c++) {
				pos++;
				while (pos < obj.s.n && ((unsigned char)p[pos] & 0xC0) == 0x80)
					pos++;
			}
			size_t end = pos + 1;
			while (end < obj.s.n && ((unsigned char)p[end] & 0xC0) == 0x80)
				end++;
			return jstr_v(p + pos, end - pos);
		}
	}
	(void)e;
	return UNDEF;
}

static int64_t clamp_index(int64_t i, int64_t n, bool is_start, int64_t step)
{
	if (i < 0) {
		i += n;
		if (i < 0)
			i = step < 0 ? -1 : 0;
	} else if (i >= n) {
		i = step < 0 ? n - 1 : n;
	}
	(void)is_start;
	return i;
}

static jv slice_v(struct render *r, jv obj, jv a, jv b, jv s)
{
	int64_t step = s.t == JV_INT ? s.i : 1;
	if (step == 0) {
		rerr(r, KVF_E_INVAL, "slice step cannot be zero");
		return UNDEF;
	}
	bool is_str = obj.t == JV_STR;
	if (!is_str && obj.t != JV_LIST) {
		rerr(r, KVF_E_INVAL, "cannot slice a %s", type_name(obj));
		return UNDEF;
	}
	/* strings: slice by characters via an index of offsets */
	size_t n;
	size_t *offs = NULL;
	if (is_str) {
		n = 0;
		for (size_t k = 0; k < obj.s.n; k++)
			n += ((unsigned char)obj.s.p[k] & 0xC0) != 0x80;
		offs = arena_alloc(&r->ar, (n + 1) * sizeof(size_t));
		if (!offs)
			return UNDEF;
		size_t c = 0;
		for (size_t k = 0; k < obj.s.n; k++)
			if (((unsigned char)obj.s.p[k] & 0xC0) != 0x80)
				offs[c++] = k;
		offs[n] = obj.s.n;
	} else {
		n = obj.l->n;
	}
	int64_t N = (int64_t)n;
	int64_t start = a.t == JV_INT ? clamp_index(a.i, N, true, step) : (step > 0 ? 0 : N - 1);
	int64_t stop = b.t == JV_INT ? clamp_index(b.i, N, false, step) : (step > 0 ? N : -1);
	if (is_str && step == 1) {
		if (stop < start)
			stop = start;
		return jstr_v(obj.s.p + offs[start], offs[stop] - offs[start]);
	}
	struct sbuf sb = { 0 };
	struct jlist *l = is_str ? NULL : new_list(r, n);
	if (!is_str && !l)
		return UNDEF;
	for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
		if (is_str)
			sb_add(&sb, obj.s.p + offs[i], offs[i + 1] - offs[i]);
		else
			list_push(r, l, obj.l->v[i]);
	}
	if (is_str) {
		char *d = arena_strndup(&r->ar, sb.p ? sb.p : "", sb.n);
		kvf_free(sb.p);
		return d ? jstr_v(d, sb.n) : UNDEF;
	}
	jv v = { .t = JV_LIST };
	v.l = l;
	return v;
}

static size_t length_of(jv v)
{
	switch (v.t) {
	case JV_STR: {
		size_t c = 0;
		for (size_t k = 0; k < v.s.n; k++)
			c += ((unsigned char)v.s.p[k] & 0xC0) != 0x80;
		return c;
	}
	case JV_LIST: return v.l->n;
	case JV_DICT: return v.d->n;
	default: return 0;
	}
}

/* Iterable view: lists as is, dicts as keys, strings as characters. */
static struct jlist *iter_list(struct render *r, jv v)
{
	if (v.t == JV_LIST)
		return v.l;
	struct jlist *l = new_list(r, 4);
	if (!l)
		return NULL;
	if (v.t == JV_DICT) {
		for (size_t i = 0; i < v.d->n; i++)
			list_push(r, l, v.d->k[i]);
	} else if (v.t == JV_STR) {
		size_t i = 0;
		while (i < v.s.n) {
			size_t e = i + 1;
			while (e < v.s.n && ((unsigned char)v.s.p[e] & 0xC0) == 0x80)
				e++;
			list_push(r, l, jstr_v(v.s.p + i, e - i));
			i = e;
		}
	} else if (v.t != JV_UNDEF && v.t != JV_NONE) {
		rerr(r, KVF_E_INVAL, "'%s' object is not iterable", type_name(v));
		return NULL;
	} else if (v.t == JV_NONE) {
		rerr(r, KVF_E_INVAL, "'NoneType' object is not iterable");
		return NULL;
	}
	return l;
}

static jv arith(struct render *r, int op, jv a, jv b)
{
	if (op == B_CAT) {
		jv x = to_str(r, a), y = to_str(r, b);
		if (r->rc)
			return UNDEF;
		char *d = arena_alloc(&r->ar, x.s.n + y.s.n + 1);
		if (!d)
			return UNDEF;
		memcpy(d, x.s.p, x.s.n);
		memcpy(d + x.s.n, y.s.p, y.s.n);
		d[x.s.n + y.s.n] = '\0';
		return jstr_v(d, x.s.n + y.s.n);
	}
	if (a.t == JV_UNDEF || b.t == JV_UNDEF) {
		jv u = a.t == JV_UNDEF ? a : b;
		rerr(r, KVF_E_INVAL, "'%s' is undefined", u.undef_name ? u.undef_name : "value");
		return UNDEF;
	}
	if (op == B_ADD && a.t == JV_STR && b.t == JV_STR)
		return arith(r, B_CAT, a, b);
	if (op == B_ADD && a.t == JV_LIST && b.t == JV_LIST) {
		struct jlist *l = new_list(r, a.l->n + b.l->n);
		if (!l)
			return UNDEF;
		for (size_t i = 0; i < a.l->n; i++)
			list_push(r, l, a.l->v[i]);
		for (size_t i = 0; i < b.l->n; i++)
			list_push(r, l, b.l->v[i]);
		jv v = { .t = JV_LIST };
		v.l = l;
		return v;
	}
	if (op == B_MUL && ((a.t == JV_STR && b.t == JV_INT) || (a.t == JV_INT && b.t == JV_STR))) {
		jv s = a.t == JV_STR ? a : b;
		int64_t k = a.t == JV_INT ? a.i : b.i;
		if (k <= 0)
			return jstr_v("", 0);
		if ((uint64_t)k * s.s.n > (64u << 20)) {
			rerr(r, KVF_E_TOOBIG, "string repetition too large");
			return UNDEF;
		}
		char *d = arena_alloc(&r->ar, (size_t)k * s.s.n + 1);
		if (!d)
			return UNDEF;
		for (int64_t i = 0; i < k; i++)
			memcpy(d + (size_t)i * s.s.n, s.s.p, s.s.n);
		d[(size_t)k * s.s.n] = '\0';
		return jstr_v(d, (size_t)k * s.s.n);
	}
	bool an = a.t == JV_INT || a.t == JV_FLOAT || a.t == JV_BOOL;
	bool bn = b.t == JV_INT || b.t == JV_FLOAT || b.t == JV_BOOL;
	if (!an || !bn) {
		static const char *const ops[] = { "+", "-", "*", "/", "//", "%", "**" };
		rerr(r, KVF_E_INVAL, "unsupported operand types for %s: '%s' and '%s'", ops[op], type_name(a),
		     type_name(b));
		return UNDEF;
	}
	bool fl = a.t == JV_FLOAT || b.t == JV_FLOAT;
	int64_t ai = a.t == JV_INT ? a.i : a.t == JV_BOOL ? a.b : 0;
	int64_t bi = b.t == JV_INT ? b.i : b.t == JV_BOOL ? b.b : 0;
	double af = a.t == JV_FLOAT ? a.f : (double)ai, bf = b.t == JV_FLOAT ? b.f : (double)bi;
	switch (op) {
	case B_ADD: return fl ? jfloat_v(af + bf) : jint_v((int64_t)((uint64_t)ai + (uint64_t)bi));
	case B_SUB: return fl ? jfloat_v(af - bf) : jint_v((int64_t)((uint64_t)ai - (uint64_t)bi));
	case B_MUL: return fl ? jfloat_v(af * bf) : jint_v((int64_t)((uint64_t)ai * (uint64_t)bi));
	case B_DIV:
		if (bf == 0) {
			rerr(r, KVF_E_INVAL, "division by zero");
			return UNDEF;
		}
		return jfloat_v(af / bf);
	case B_FDIV:
	case B_MOD:
		if (bf == 0) {
			rerr(r, KVF_E_INVAL, "division by zero");
			return UNDEF;
		}
		if (fl) {
			double q = floor(af / bf);
			return op == B_FDIV ? jfloat_v(q) : jfloat_v(af - q * bf);
		} else {
			if (bi == -1 && ai == INT64_MIN)
				return op == B_FDIV ? jint_v(ai) : jint_v(0);
			int64_t q = ai / bi, m = ai % bi;
			if (m != 0 && ((m < 0) != (bi < 0))) {
				q--;
				m += bi;
			}
			return op == B_FDIV ? jint_v(q) : jint_v(m);
		}
	case B_POW:
		if (!fl && bi >= 0) {
			int64_t res = 1;
			for (int64_t k = 0; k < bi && k < 64; k++)
				res = (int64_t)((uint64_t)res * (uint64_t)ai);
			return jint_v(res);
		}
		return jfloat_v(pow(af, bf));
	}
	return UNDEF;
}

static jv contains(struct render *r, jv hay, jv needle)
{
	if (hay.t == JV_STR) {
		if (needle.t != JV_STR) {
			rerr(r, KVF_E_INVAL, "'in <string>' requires string as left operand, not %s", type_name(needle));
			return UNDEF;
		}
		if (needle.s.n == 0)
			return jbool_v(true);
		for (size_t i = 0; i + needle.s.n <= hay.s.n; i++)
			if (!memcmp(hay.s.p + i, needle.s.p, needle.s.n))
				return jbool_v(true);
		return jbool_v(false);
	}
	if (hay.t == JV_LIST) {
		for (size_t i = 0; i < hay.l->n; i++)
			if (values_equal(hay.l->v[i], needle))
				return jbool_v(true);
		return jbool_v(false);
	}
	if (hay.t == JV_DICT) {
		jv v;
		return jbool_v(needle.t == JV_STR && dict_get(hay.d, needle.s.p, needle.s.n, &v));
	}
	if (hay.t == JV_UNDEF)
		return jbool_v(false);
	rerr(r, KVF_E_INVAL, "argument of type '%s' is not iterable", type_name(hay));
	return UNDEF;
}

static int eval_args(struct render *r, struct frame *f, const struct expr *e, struct args *a)
{
	memset(a, 0, sizeof(*a));
	if (!e->nargs)
		return 0;
	a->pos = arena_alloc(&r->ar, e->nargs * sizeof(jv));
	a->kwv = arena_alloc(&r->ar, e->nargs * sizeof(jv));
	a->kwn = arena_alloc(&r->ar, e->nargs * sizeof(char *));
	if (!a->pos || !a->kwv || !a->kwn)
		return rerr(r, KVF_E_NOMEM, "out of memory");
	for (size_t i = 0; i < e->nargs; i++) {
		jv v = eval(r, f, e->args[i]);
		if (r->rc)
			return r->rc;
		if (e->kwnames[i]) {
			a->kwn[a->nkw] = e->kwnames[i];
			a->kwv[a->nkw++] = v;
		} else {
			a->pos[a->npos++] = v;
		}
	}
	return 0;
}

static bool run_test(struct render *r, const char *name, jv v, const struct args *a, bool *ok)
{
	*ok = true;
	jv x = arg_get(a, 0, NULL, UNDEF);
	if (!strcmp(name, "defined")) return v.t != JV_UNDEF;
	if (!strcmp(name, "undefined")) return v.t == JV_UNDEF;
	if (!strcmp(name, "none")) return v.t == JV_NONE;
	if (!strcmp(name, "string")) return v.t == JV_STR;
	if (!strcmp(name, "number")) return v.t == JV_INT || v.t == JV_FLOAT;
	if (!strcmp(name, "integer")) return v.t == JV_INT;
	if (!strcmp(name, "float")) return v.t == JV_FLOAT;
	if (!strcmp(name, "boolean")) return v.t == JV_BOOL;
	if (!strcmp(name, "true")) return v.t == JV_BOOL && v.b;
	if (!strcmp(name, "false")) return v.t == JV_BOOL && !v.b;
	if (!strcmp(name, "mapping")) return v.t == JV_DICT;
	if (!strcmp(name, "sequence")) return v.t == JV_LIST || v.t == JV_STR || v.t == JV_DICT;
	if (!strcmp(name, "iterable")) return v.t == JV_LIST || v.t == JV_STR || v.t == JV_DICT;
	if (!strcmp(name, "callable")) return v.t == JV_FUNC || v.t == JV_MACRO;
	if (!strcmp(name, "odd")) return v.t == JV_INT && (v.i & 1);
	if (!strcmp(name, "even")) return v.t == JV_INT && !(v.i & 1);
	if (!strcmp(name, "divisibleby")) return v.t == JV_INT && x.t == JV_INT && x.i && v.i % x.i == 0;
	if (!strcmp(name, "eq") || !strcmp(name, "equalto") || !strcmp(name, "==") || !strcmp(name, "sameas"))
		return values_equal(v, x) && (strcmp(name, "sameas") || v.t == x.t);
	if (!strcmp(name, "ne")) return !values_equal(v, x);
	if (!strcmp(name, "lt")) return values_cmp(v, x) == -1;
	if (!strcmp(name, "gt")) return values_cmp(v, x) == 1;
	if (!strcmp(name, "le")) { int c = values_cmp(v, x); return c == -1 || c == 0; }
	if (!strcmp(name, "ge")) { int c = values_cmp(v, x); return c == 1 || c == 0; }
	if (!strcmp(name, "in")) { jv b = contains(r, x, v); return b.t == JV_BOOL && b.b; }
	if (!strcmp(name, "lower") || !strcmp(name, "upper")) {
		if (v.t != JV_STR)
			return false;
		jv c = str_case(r, v, name[0] == 'l' ? 0 : 1);
		return values_equal(c, v);
	}
	*ok = false;
	return false;
}

static jv apply_filter(struct render *r, struct frame *f, const char *name, jv v, const struct args *a);
static jv call_macro_inner(struct render *r, const struct node *m, const struct args *a);

static jv attr_or_item(struct render *r, jv item, jv attr)
{
	if (attr.t != JV_STR)
		return UNDEF;
	/* "a.b" attribute paths */
	const char *p = attr.s.p;
	size_t n = attr.s.n;
	jv cur = item;
	while (n) {
		const char *dot = memchr(p, '.', n);
		size_t l = dot ? (size_t)(dot - p) : n;
		if (cur.t != JV_DICT)
			return UNDEF;
		jv nx;
		if (!dict_get(cur.d, p, l, &nx))
			return UNDEF;
		cur = nx;
		p += l + (dot ? 1 : 0);
		n -= l + (dot ? 1 : 0);
	}
	(void)r;
	return cur;
}

static jv select_attr(struct render *r, jv v, const struct args *a, bool reject)
{
	struct jlist *in = iter_list(r, v), *out = new_list(r, 4);
	if (!in || !out)
		return UNDEF;
	jv attr = arg_get(a, 0, NULL, UNDEF);
	jv testname = arg_get(a, 1, NULL, UNDEF);
	struct args targs = { 0 };
	if (a->npos > 2) {
		targs.pos = a->pos + 2;
		targs.npos = a->npos - 2;
	}
	for (size_t i = 0; i < in->n; i++) {
		jv x = attr_or_item(r, in->v[i], attr);
		bool keep;
		if (testname.t == JV_STR) {
			bool ok;
			char tn[64];
			snprintf(tn, sizeof(tn), "%.*s", (int)testname.s.n, testname.s.p);
			keep = run_test(r, tn, x, &targs, &ok);
			if (!ok) {
				rerr(r, KVF_E_INVAL, "no test named '%s'", tn);
				return UNDEF;
			}
		} else {
			keep = truthy(x);
		}
		if (keep != reject)
			list_push(r, out, in->v[i]);
	}
	jv o = { .t = JV_LIST };
	o.l = out;
	return o;
}

static jv apply_filter(struct render *r, struct frame *f, const char *name, jv v, const struct args *a)
{
	(void)f;
	if (!strcmp(name, "safe") || (!strcmp(name, "string") && v.t == JV_STR))
		return v;
	if (!strcmp(name, "string"))
		return to_str(r, v);
	if (!strcmp(name, "trim")) {
		if (v.t != JV_STR)
			v = to_str(r, v);
		return strip_str(v, arg_get(a, 0, "chars", NONE), true, true);
	}
	if (!strcmp(name, "length") || !strcmp(name, "count")) {
		if (v.t != JV_STR && v.t != JV_LIST && v.t != JV_DICT && v.t != JV_UNDEF) {
			rerr(r, KVF_E_INVAL, "object of type '%s' has no len()", type_name(v));
			return UNDEF;
		}
		return jint_v((int64_t)length_of(v));
	}
	if (!strcmp(name, "upper") || !strcmp(name, "lower") || !strcmp(name, "capitalize") || !strcmp(name, "title")) {
		jv s = to_str(r, v);
		if (r->rc)
			return UNDEF;
		bool found;
		struct args none = { 0 };
		return method_call(r, s, name, &none, &found);
	}
	if (!strcmp(name, "replace")) {
		jv s = to_str(r, v);
		bool found;
		return method_call(r, s, "replace", a, &found);
	}
	if (!strcmp(name, "tojson")) {
		jv ind = arg_get(a, 0, "indent", NONE);
		jv sk = arg_get(a, 99, "sort_keys", jbool_v(false));
		jv seps = arg_get(a, 99, "separators", NONE);
		int indent = ind.t == JV_INT ? (int)ind.i : -1;
		const char *item_sep = indent >= 0 ? "," : ", ", *key_sep = ": ";
		char is_buf[16], ks_buf[16];
		if (seps.t == JV_LIST && seps.l->n == 2 && seps.l->v[0].t == JV_STR && seps.l->v[1].t == JV_STR) {
			snprintf(is_buf, sizeof(is_buf), "%.*s", (int)seps.l->v[0].s.n, seps.l->v[0].s.p);
			snprintf(ks_buf, sizeof(ks_buf), "%.*s", (int)seps.l->v[1].s.n, seps.l->v[1].s.p);
			item_sep = is_buf;
			key_sep = ks_buf;
		}
		struct sbuf b = { 0 };
		if (to_json(&b, v, indent, 0, truthy(sk), item_sep, key_sep) || b.fail) {
			kvf_free(b.p);
			rerr(r, KVF_E_INVAL, "tojson: cannot serialize a %s", type_name(v));
			return UNDEF;
		}
		char *d = arena_strndup(&r->ar, b.p ? b.p : "", b.n);
		kvf_free(b.p);
		return d ? jstr_v(d, b.n) : UNDEF;
	}
	if (!strcmp(name, "first") || !strcmp(name, "last")) {
		struct jlist *l = iter_list(r, v);
		if (!l || !l->n)
			return UNDEF;
		return name[0] == 'f' ? l->v[0] : l->v[l->n - 1];
	}
	if (!strcmp(name, "join")) {
		struct jlist *l = iter_list(r, v);
		if (!l)
			return UNDEF;
		jv sep = arg_get(a, 0, "d", jstr_v("", 0));
		jv attr = arg_get(a, 1, "attribute", NONE);
		struct sbuf b = { 0 };
		for (size_t i = 0; i < l->n; i++) {
			if (i && sep.t == JV_STR)
				sb_add(&b, sep.s.p, sep.s.n);
			jv item = attr.t == JV_STR ? attr_or_item(r, l->v[i], attr) : l->v[i];
			jv s = to_str(r, item);
			if (r->rc) {
				kvf_free(b.p);
				return UNDEF;
			}
			sb_add(&b, s.s.p, s.s.n);
		}
		char *d = arena_strndup(&r->ar, b.p ? b.p : "", b.n);
		kvf_free(b.p);
		return d ? jstr_v(d, b.n) : UNDEF;
	}
	if (!strcmp(name, "default") || !strcmp(name, "d")) {
		jv dflt = arg_get(a, 0, "default_value", jstr_v("", 0));
		jv boolean = arg_get(a, 1, "boolean", jbool_v(false));
		if (v.t == JV_UNDEF || (truthy(boolean) && !truthy(v)))
			return dflt;
		return v;
	}
	if (!strcmp(name, "int")) {
		if (v.t == JV_INT)
			return v;
		if (v.t == JV_FLOAT)
			return jint_v((int64_t)v.f);
		if (v.t == JV_BOOL)
			return jint_v(v.b);
		if (v.t == JV_STR) {
			char buf[64];
			snprintf(buf, sizeof(buf), "%.*s", (int)v.s.n, v.s.p);
			char *end;
			long long x = strtoll(buf, &end, 10);
			return *end ? arg_get(a, 0, "default", jint_v(0)) : jint_v(x);
		}
		return arg_get(a, 0, "default", jint_v(0));
	}
	if (!strcmp(name, "float")) {
		if (v.t == JV_FLOAT)
			return v;
		if (v.t == JV_INT)
			return jfloat_v((double)v.i);
		if (v.t == JV_STR) {
			char buf[64];
			snprintf(buf, sizeof(buf), "%.*s", (int)v.s.n, v.s.p);
			char *end;
			double x = strtod(buf, &end);
			return *end ? arg_get(a, 0, "default", jfloat_v(0)) : jfloat_v(x);
		}
		return arg_get(a, 0, "default", jfloat_v(0));
	}
	if (!strcmp(name, "abs")) {
		if (v.t == JV_INT)
			return jint_v(v.i < 0 ? -v.i : v.i);
		if (v.t == JV_FLOAT)
			return jfloat_v(fabs(v.f));
		rerr(r, KVF_E_INVAL, "abs: bad operand type '%s'", type_name(v));
		return UNDEF;
	}
	if (!strcmp(name, "list")) {
		struct jlist *l = iter_list(r, v);
		if (!l)
			return UNDEF;
		jv o = { .t = JV_LIST };
		o.l = l;
		return o;
	}
	if (!strcmp(name, "items")) {
		if (v.t == JV_UNDEF)
			return slice_v(r, (jv){ .t = JV_LIST, .l = new_list(r, 1) }, UNDEF, UNDEF, UNDEF);
		if (v.t != JV_DICT) {
			rerr(r, KVF_E_INVAL, "items: expected a mapping, got %s", type_name(v));
			return UNDEF;
		}
		bool found;
		struct args none = { 0 };
		return method_call(r, v, "items", &none, &found);
	}
	if (!strcmp(name, "reverse")) {
		if (v.t == JV_STR)
			return slice_v(r, v, UNDEF, UNDEF, jint_v(-1));
		struct jlist *l = iter_list(r, v);
		if (!l)
			return UNDEF;
		jv lv = { .t = JV_LIST };
		lv.l = l;
		return slice_v(r, lv, UNDEF, UNDEF, jint_v(-1));
	}
	if (!strcmp(name, "selectattr") || !strcmp(name, "rejectattr"))
		return select_attr(r, v, a, name[0] == 'r');
	if (!strcmp(name, "map")) {
		struct jlist *in = iter_list(r, v), *out = new_list(r, 4);
		if (!in || !out)
			return UNDEF;
		jv attr = arg_get(a, 99, "attribute", UNDEF);
		jv fname = arg_get(a, 0, NULL, UNDEF);
		for (size_t i = 0; i < in->n; i++) {
			jv x;
			if (attr.t == JV_STR) {
				x = attr_or_item(r, in->v[i], attr);
				if (x.t == JV_UNDEF)
					x = arg_get(a, 99, "default", UNDEF);
			} else if (fname.t == JV_STR) {
				char fn[64];
				snprintf(fn, sizeof(fn), "%.*s", (int)fname.s.n, fname.s.p);
				struct args rest = { 0 };
				if (a->npos > 1) {
					rest.pos = a->pos + 1;
					rest.npos = a->npos - 1;
				}
				x = apply_filter(r, f, fn, in->v[i], &rest);
			} else {
				rerr(r, KVF_E_INVAL, "map: expected a filter name or attribute=");
				return UNDEF;
			}
			if (r->rc)
				return UNDEF;
			list_push(r, out, x);
		}
		jv o = { .t = JV_LIST };
		o.l = out;
		return o;
	}
	if (!strcmp(name, "unique")) {
		struct jlist *in = iter_list(r, v), *out = new_list(r, 4);
		if (!in || !out)
			return UNDEF;
		for (size_t i = 0; i < in->n; i++) {
			jv o = { .t = JV_LIST };
			o.l = out;
			jv has = contains(r, o, in->v[i]);
			if (has.t == JV_BOOL && !has.b)
				list_push(r, out, in->v[i]);
		}
		jv o = { .t = JV_LIST };
		o.l = out;
		return o;
	}
	if (!strcmp(name, "indent")) {
		jv s = to_str(r, v);
		jv w = arg_get(a, 0, "width", jint_v(4));
		jv first = arg_get(a, 1, "first", jbool_v(false));
		jv blank = arg_get(a, 2, "blank", jbool_v(false));
		int64_t width = w.t == JV_INT ? w.i : 4;
		if (width < 0 || width > 256)
			width = 4;
		struct sbuf b = { 0 };
		size_t i = 0;
		bool first_line = true;
		while (i <= s.s.n) {
			const char *nl = memchr(s.s.p + i, '\n', s.s.n - i);
			size_t e = nl ? (size_t)(nl - s.s.p) : s.s.n;
			bool empty = e == i;
			if ((!first_line || truthy(first)) && (!empty || truthy(blank)))
				for (int64_t k = 0; k < width; k++)
					sb_add(&b, " ", 1);
			sb_add(&b, s.s.p + i, e - i);
			if (!nl)
				break;
			sb_add(&b, "\n", 1);
			i = e + 1;
			first_line = false;
		}
		char *d = arena_strndup(&r->ar, b.p ? b.p : "", b.n);
		kvf_free(b.p);
		return d ? jstr_v(d, b.n) : UNDEF;
	}
	if (!strcmp(name, "e") || !strcmp(name, "escape")) {
		jv s = to_str(r, v);
		struct sbuf b = { 0 };
		for (size_t i = 0; i < s.s.n; i++) {
			switch (s.s.p[i]) {
			case '&': sb_str(&b, "&amp;"); break;
			case '<': sb_str(&b, "&lt;"); break;
			case '>': sb_str(&b, "&gt;"); break;
			case '"': sb_str(&b, "&#34;"); break;
			case '\'': sb_str(&b, "&#39;"); break;
			default: sb_add(&b, s.s.p + i, 1);
			}
		}
		char *d = arena_strndup(&r->ar, b.p ? b.p : "", b.n);
		kvf_free(b.p);
		return d ? jstr_v(d, b.n) : UNDEF;
	}
	rerr(r, KVF_E_UNSUPPORTED, "filter '%s' is not supported", name);
	return UNDEF;
}

static jv call_macro(struct render *r, const struct node *m, const struct args *a)
{
	if (r->depth >= JINJA_MAX_DEPTH) {
		rerr(r, KVF_E_TOOBIG, "macro calls nested too deeply");
		return UNDEF;
	}
	r->depth++;
	jv res = call_macro_inner(r, m, a);
	r->depth--;
	return res;
}

static jv call_macro_inner(struct render *r, const struct node *m, const struct args *a)
{
	struct frame fr = { .parent = r->globals };
	for (size_t i = 0; i < m->nvars; i++) {
		jv v = arg_get(a, i, m->vars[i], UNDEF);
		if (v.t == JV_UNDEF && m->defaults[i])
			v = eval(r, &fr, m->defaults[i]);
		if (frame_set(r, &fr, m->vars[i], v))
			return UNDEF;
	}
	/* render the body into its own buffer */
	char *save = r->out;
	size_t save_len = r->len, save_cap = r->cap;
	r->out = NULL;
	r->len = r->cap = 0;
	exec_body(r, &fr, m->body, m->nbody);
	char *text = r->out;
	size_t tl = r->len;
	r->out = save;
	r->len = save_len;
	r->cap = save_cap;
	jv res = UNDEF;
	if (!r->rc) {
		char *d = arena_strndup(&r->ar, text ? text : "", tl);
		res = d ? jstr_v(d, tl) : UNDEF;
	}
	kvf_free(text);
	return res;
}

static jv call_builtin(struct render *r, int fn, const struct args *a)
{
	switch (fn) {
	case F_RANGE: {
		jv x = arg_get(a, 0, NULL, UNDEF), y = arg_get(a, 1, NULL, UNDEF), z = arg_get(a, 2, NULL, jint_v(1));
		if (x.t != JV_INT || (y.t != JV_UNDEF && y.t != JV_INT) || z.t != JV_INT || z.i == 0) {
			rerr(r, KVF_E_INVAL, "range: expected integer arguments");
			return UNDEF;
		}
		int64_t start = y.t == JV_INT ? x.i : 0, stop = y.t == JV_INT ? y.i : x.i, step = z.i;
		struct jlist *l = new_list(r, 8);
		if (!l)
			return UNDEF;
		for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
			if (l->n > 100000) {
				rerr(r, KVF_E_TOOBIG, "range too large");
				return UNDEF;
			}
			list_push(r, l, jint_v(i));
		}
		jv v = { .t = JV_LIST };
		v.l = l;
		return v;
	}
	case F_NAMESPACE:
	case F_DICT: {
		struct jdict *d = new_dict(r, a->nkw + 1);
		if (!d)
			return UNDEF;
		d->ns = fn == F_NAMESPACE;
		if (a->npos && a->pos[0].t == JV_DICT)
			for (size_t i = 0; i < a->pos[0].d->n; i++)
				dict_set(r, d, a->pos[0].d->k[i], a->pos[0].d->v[i]);
		for (size_t i = 0; i < a->nkw; i++)
			dict_set(r, d, cstr(r, a->kwn[i]), a->kwv[i]);
		jv v = { .t = JV_DICT };
		v.d = d;
		return v;
	}
	case F_RAISE: {
		jv m = to_str(r, arg_get(a, 0, NULL, jstr_v("", 0)));
		if (!r->rc)
			r->rc = kvf_errf(KVF_E_INVAL, "%.*s", (int)m.s.n, m.s.p);
		return UNDEF;
	}
	case F_STRFTIME: {
		jv fmt = arg_get(a, 0, NULL, UNDEF);
		if (fmt.t != JV_STR) {
			rerr(r, KVF_E_INVAL, "strftime_now: expected a format string");
			return UNDEF;
		}
		char f[128], out[256];
		snprintf(f, sizeof(f), "%.*s", (int)fmt.s.n, fmt.s.p);
		time_t now = time(NULL);
		struct tm tm;
		localtime_r(&now, &tm);
		size_t n = strftime(out, sizeof(out), f, &tm);
		return jstr_v(arena_strndup(&r->ar, out, n), n);
	}
	}
	return UNDEF;
}

static jv eval(struct render *r, struct frame *f, const struct expr *e)
{
	if (r->rc)
		return UNDEF;
	if (++r->steps > JINJA_MAX_STEPS) {
		rerr(r, KVF_E_TOOBIG, "template ran more than %d steps", JINJA_MAX_STEPS);
		return UNDEF;
	}
	r->line = e->line;
	switch (e->kind) {
	case E_LIT:
		return e->lit;
	case E_NAME: {
		jv v;
		if (frame_get(f, e->name, &v))
			return v;
		static const struct {
			const char *name;
			int fn;
		} builtins[] = { { "range", F_RANGE }, { "namespace", F_NAMESPACE }, { "raise_exception", F_RAISE },
				 { "strftime_now", F_STRFTIME }, { "dict", F_DICT } };
		for (size_t i = 0; i < sizeof(builtins) / sizeof(builtins[0]); i++)
			if (!strcmp(builtins[i].name, e->name)) {
				v.t = JV_FUNC;
				v.fn = builtins[i].fn;
				return v;
			}
		v = UNDEF;
		v.undef_name = e->name;
		return v;
	}
	case E_ATTR: {
		jv o = eval(r, f, e->a);
		return r->rc ? UNDEF : getattr_v(r, o, e->name, strlen(e->name), e);
	}
	case E_INDEX: {
		jv o = eval(r, f, e->a), i = eval(r, f, e->b);
		return r->rc ? UNDEF : index_v(r, o, i, e);
	}
	case E_SLICE: {
		jv o = eval(r, f, e->a);
		jv a = e->b ? eval(r, f, e->b) : UNDEF;
		jv b = e->c ? eval(r, f, e->c) : UNDEF;
		jv s = e->nargs && e->args[0] ? eval(r, f, e->args[0]) : UNDEF;
		return r->rc ? UNDEF : slice_v(r, o, a, b, s);
	}
	case E_CALL: {
		struct args a;
		if (e->a->kind == E_ATTR) {
			jv obj = eval(r, f, e->a->a);
			if (r->rc || eval_args(r, f, e, &a))
				return UNDEF;
			if (obj.t == JV_STR || obj.t == JV_DICT) {
				bool found;
				jv res = method_call(r, obj, e->a->name, &a, &found);
				if (found || r->rc)
					return res;
			}
			jv callee = getattr_v(r, obj, e->a->name, strlen(e->a->name), e->a);
			if (r->rc)
				return UNDEF;
			if (callee.t == JV_MACRO)
				return call_macro(r, callee.m, &a);
			rerr(r, KVF_E_INVAL, "'%s' object has no method '%s'", type_name(obj), e->a->name);
			return UNDEF;
		}
		jv callee = eval(r, f, e->a);
		if (r->rc || eval_args(r, f, e, &a))
			return UNDEF;
		if (callee.t == JV_FUNC)
			return call_builtin(r, callee.fn, &a);
		if (callee.t == JV_MACRO)
			return call_macro(r, callee.m, &a);
		rerr(r, KVF_E_INVAL, "'%s' is not callable",
		     e->a->kind == E_NAME ? e->a->name : type_name(callee));
		return UNDEF;
	}
	case E_FILTER: {
		jv v = eval(r, f, e->a);
		struct args a;
		if (r->rc || eval_args(r, f, e, &a))
			return UNDEF;
		r->line = e->line;
		return apply_filter(r, f, e->name, v, &a);
	}
	case E_TEST: {
		jv v = eval(r, f, e->a);
		struct args a;
		if (r->rc || eval_args(r, f, e, &a))
			return UNDEF;
		bool ok;
		bool res = run_test(r, e->name, v, &a, &ok);
		if (!ok) {
			rerr(r, KVF_E_UNSUPPORTED, "test '%s' is not supported", e->name);
			return UNDEF;
		}
		return jbool_v(e->negate ? !res : res);
	}
	case E_NEG:
	case E_POS: {
		jv v = eval(r, f, e->a);
		if (r->rc)
			return UNDEF;
		if (v.t == JV_INT)
			return jint_v(e->kind == E_NEG ? -v.i : v.i);
		if (v.t == JV_FLOAT)
			return jfloat_v(e->kind == E_NEG ? -v.f : v.f);
		rerr(r, KVF_E_INVAL, "bad operand type for unary %c: '%s'", e->kind == E_NEG ? '-' : '+', type_name(v));
		return UNDEF;
	}
	case E_NOT: {
		jv v = eval(r, f, e->a);
		return r->rc ? UNDEF : jbool_v(!truthy(v));
	}
	case E_AND: {
		jv a = eval(r, f, e->a);
		if (r->rc || !truthy(a))
			return a;
		return eval(r, f, e->b);
	}
	case E_OR: {
		jv a = eval(r, f, e->a);
		if (r->rc || truthy(a))
			return a;
		return eval(r, f, e->b);
	}
	case E_COND: {
		jv c = eval(r, f, e->a);
		if (r->rc)
			return UNDEF;
		if (truthy(c))
			return eval(r, f, e->b);
		return e->c ? eval(r, f, e->c) : UNDEF;
	}
	case E_BIN: {
		jv a = eval(r, f, e->a), b = eval(r, f, e->b);
		if (r->rc)
			return UNDEF;
		r->line = e->line;
		switch (e->op) {
		case B_EQ: return jbool_v(values_equal(a, b));
		case B_NE: return jbool_v(!values_equal(a, b));
		case B_LT: case B_GT: case B_LE: case B_GE: {
			int c = values_cmp(a, b);
			if (c == 2) {
				rerr(r, KVF_E_INVAL, "cannot compare '%s' with '%s'", type_name(a), type_name(b));
				return UNDEF;
			}
			return jbool_v(e->op == B_LT ? c < 0 : e->op == B_GT ? c > 0 : e->op == B_LE ? c <= 0 : c >= 0);
		}
		case B_IN: return contains(r, b, a);
		case B_NOTIN: {
			jv x = contains(r, b, a);
			return x.t == JV_BOOL ? jbool_v(!x.b) : x;
		}
		default: return arith(r, e->op, a, b);
		}
	}
	case E_LIST:
	case E_TUPLE: {
		struct jlist *l = new_list(r, e->nargs);
		if (!l)
			return UNDEF;
		for (size_t i = 0; i < e->nargs; i++) {
			jv v = eval(r, f, e->args[i]);
			if (r->rc)
				return UNDEF;
			list_push(r, l, v);
		}
		jv v = { .t = JV_LIST };
		v.l = l;
		return v;
	}
	case E_DICT: {
		struct jdict *d = new_dict(r, e->nargs / 2 + 1);
		if (!d)
			return UNDEF;
		for (size_t i = 0; i + 1 < e->nargs; i += 2) {
			jv k = eval(r, f, e->args[i]), v = eval(r, f, e->args[i + 1]);
			if (r->rc)
				return UNDEF;
			if (k.t != JV_STR) {
				rerr(r, KVF_E_UNSUPPORTED, "dict literal keys must be strings");
				return UNDEF;
			}
			dict_set(r, d, k, v);
		}
		jv v = { .t = JV_DICT };
		v.d = d;
		return v;
	}
	}
	rerr(r, KVF_E_INTERNAL, "bad expression");
	return UNDEF;
}

/* ---- statements ---------------------------------------------------------------------------- */

static int assign(struct render *r, struct frame *f, const struct expr *target, jv v)
{
	if (target->kind == E_NAME)
		return frame_set(r, f, target->name, v);
	if (target->kind == E_ATTR) {
		jv obj = eval(r, f, target->a);
		if (r->rc)
			return r->rc;
		if (obj.t != JV_DICT || !obj.d->ns)
			return rerr(r, KVF_E_INVAL, "cannot assign attribute '%s' on a %s (only namespace())",
				    target->name, type_name(obj));
		return dict_set(r, obj.d, cstr(r, target->name), v);
	}
	if (target->kind == E_TUPLE) {
		if (v.t != JV_LIST || v.l->n != target->nargs)
			return rerr(r, KVF_E_INVAL, "cannot unpack %zu values", v.t == JV_LIST ? v.l->n : (size_t)1);
		for (size_t i = 0; i < target->nargs; i++)
			if (assign(r, f, target->args[i], v.l->v[i]))
				return r->rc;
		return 0;
	}
	return rerr(r, KVF_E_INVAL, "cannot assign to this expression");
}

static int exec_for(struct render *r, struct frame *f, const struct node *n)
{
	jv it = eval(r, f, n->e);
	if (r->rc)
		return r->rc;
	struct jlist *src = iter_list(r, it);
	if (!src)
		return r->rc ? r->rc : rerr(r, KVF_E_NOMEM, "out of memory");
	struct frame fr = { .parent = f };
	/* the loop filter applies before loop.* counting */
	struct jlist *items = src;
	if (n->filter) {
		items = new_list(r, src->n);
		if (!items)
			return rerr(r, KVF_E_NOMEM, "out of memory");
		for (size_t i = 0; i < src->n; i++) {
			jv x = src->v[i];
			if (n->nvars == 1) {
				frame_set(r, &fr, n->vars[0], x);
			} else {
				struct expr tgt = { .kind = E_TUPLE };
				(void)tgt;
				for (size_t k = 0; k < n->nvars; k++)
					frame_set(r, &fr, n->vars[k],
						  x.t == JV_LIST && k < x.l->n ? x.l->v[k] : UNDEF);
			}
			jv c = eval(r, &fr, n->filter);
			if (r->rc)
				return r->rc;
			if (truthy(c))
				list_push(r, items, x);
		}
	}
	if (items->n == 0)
		return exec_body(r, f, n->alt, n->nalt);
	for (size_t i = 0; i < items->n && !r->rc; i++) {
		jv x = items->v[i];
		if (n->nvars == 1) {
			frame_set(r, &fr, n->vars[0], x);
		} else {
			if (x.t != JV_LIST || x.l->n != n->nvars)
				return rerr(r, KVF_E_INVAL, "for: cannot unpack item %zu into %zu names", i, n->nvars);
			for (size_t k = 0; k < n->nvars; k++)
				frame_set(r, &fr, n->vars[k], x.l->v[k]);
		}
		struct jdict *loop = new_dict(r, 10);
		if (!loop)
			return rerr(r, KVF_E_NOMEM, "out of memory");
		int64_t len = (int64_t)items->n, idx = (int64_t)i;
		dict_set(r, loop, cstr(r, "index"), jint_v(idx + 1));
		dict_set(r, loop, cstr(r, "index0"), jint_v(idx));
		dict_set(r, loop, cstr(r, "revindex"), jint_v(len - idx));
		dict_set(r, loop, cstr(r, "revindex0"), jint_v(len - idx - 1));
		dict_set(r, loop, cstr(r, "first"), jbool_v(i == 0));
		dict_set(r, loop, cstr(r, "last"), jbool_v(i + 1 == items->n));
		dict_set(r, loop, cstr(r, "length"), jint_v(len));
		if (i > 0)
			dict_set(r, loop, cstr(r, "previtem"), items->v[i - 1]);
		if (i + 1 < items->n)
			dict_set(r, loop, cstr(r, "nextitem"), items->v[i + 1]);
		jv lv = { .t = JV_DICT };
		lv.d = loop;
		frame_set(r, &fr, "loop", lv);
		exec_body(r, &fr, n->body, n->nbody);
		if (r->loop_ctl == 1) {
			r->loop_ctl = 0;
			break;
		}
		r->loop_ctl = 0;
	}
	return r->rc;
}

static int exec_body(struct render *r, struct frame *f, struct node **body, size_t nb)
{
	for (size_t i = 0; i < nb && !r->rc && !r->loop_ctl; i++) {
		const struct node *n = body[i];
		if (++r->steps > JINJA_MAX_STEPS)
			return rerr(r, KVF_E_TOOBIG, "template ran more than %d steps", JINJA_MAX_STEPS);
		r->line = n->line;
		switch (n->kind) {
		case N_TEXT:
			emit(r, n->text, n->text_len);
			break;
		case N_OUT: {
			jv v = eval(r, f, n->e);
			if (r->rc)
				break;
			jv s = to_str(r, v);
			if (!r->rc)
				emit(r, s.s.p, s.s.n);
			break;
		}
		case N_IF: {
			jv c = eval(r, f, n->e);
			if (r->rc)
				break;
			if (truthy(c))
				exec_body(r, f, n->body, n->nbody);
			else
				exec_body(r, f, n->alt, n->nalt);
			break;
		}
		case N_FOR:
			exec_for(r, f, n);
			break;
		case N_SET: {
			jv v = eval(r, f, n->e);
			if (!r->rc)
				assign(r, f, n->target, v);
			break;
		}
		case N_SETBLOCK: {
			char *save = r->out;
			size_t sl = r->len, sc = r->cap;
			r->out = NULL;
			r->len = r->cap = 0;
			exec_body(r, f, n->body, n->nbody);
			char *text = r->out;
			size_t tl = r->len;
			r->out = save;
			r->len = sl;
			r->cap = sc;
			if (!r->rc) {
				char *d = arena_strndup(&r->ar, text ? text : "", tl);
				if (d)
					frame_set(r, f, n->name, jstr_v(d, tl));
			}
			kvf_free(text);
			break;
		}
		case N_MACRO: {
			jv m = { .t = JV_MACRO };
			m.m = (struct node *)n;
			frame_set(r, f, n->name, m);
			break;
		}
		case N_BREAK:
			r->loop_ctl = 1;
			break;
		case N_CONTINUE:
			r->loop_ctl = 2;
			break;
		}
	}
	return r->rc;
}

int tok_chat_render_vars(const kvf_chat_template *tpl, const json_t *vars, const char *const *extra_names,
			 const char *const *extra_vals, size_t n_extra, char **out, size_t *out_len)
{
	if (!tpl || !out)
		return kvf_errf(KVF_E_INVAL, "chat template: NULL argument");
	if (vars && !json_is_object(vars))
		return kvf_errf(KVF_E_INVAL, "chat template: variables must be a JSON object");
	struct render r = { 0 };
	struct frame globals = { 0 };
	r.globals = &globals;
	if (n_extra) {
		/* what transformers' apply_chat_template always passes */
		frame_set(&r, &globals, "tools", NONE);
		frame_set(&r, &globals, "documents", NONE);
		frame_set(&r, &globals, "add_generation_prompt", jbool_v(false));
	}
	for (size_t i = 0; i < n_extra; i++)
		if (extra_vals[i])
			frame_set(&r, &globals, extra_names[i], cstr(&r, extra_vals[i]));
	const char *key;
	size_t klen;
	json_t *val;
	if (vars) {
		json_object_keylen_foreach((json_t *)vars, key, klen, val) {
			char *k = arena_strndup(&r.ar, key, klen);
			if (!k) {
				rerr(&r, KVF_E_NOMEM, "out of memory");
				break;
			}
			frame_set(&r, &globals, k, from_json(&r, val));
		}
	}
	if (!r.rc)
		exec_body(&r, &globals, tpl->body, tpl->nbody);
	if (!r.rc && r.ar.failed)
		r.rc = kvf_errf(KVF_E_NOMEM, "chat template: out of memory");
	int rc = r.rc;
	if (rc == 0) {
		if (!r.out && tok_append(&r.out, &r.len, &r.cap, "", 0) != 0)
			rc = kvf_errf(KVF_E_NOMEM, "chat template: out of memory");
		*out = r.out;
		if (out_len)
			*out_len = r.len;
	} else {
		kvf_free(r.out);
	}
	arena_free(&r.ar);
	return rc;
}

int kvf_chat_template_render(const kvf_chat_template *tpl, const json_t *vars, char **out, size_t *out_len)
{
	return tok_chat_render_vars(tpl, vars, NULL, NULL, 0, out, out_len);
}

/* ---- the tokenizer's template ------------------------------------------------------------------ */

int kvf_tokenizer_set_chat_template(kvf_tokenizer *tok, const char *src, size_t len)
{
	if (!tok || !src)
		return kvf_errf(KVF_E_INVAL, "kvf_tokenizer_set_chat_template: NULL argument");
	kvf_chat_template *tpl;
	int rc = kvf_chat_template_compile(src, len, &tpl);
	if (rc)
		return rc;
	kvf_chat_template_destroy(tok->chat);
	tok->chat = tpl;
	return 0;
}

bool kvf_tokenizer_has_chat_template(const kvf_tokenizer *tok)
{
	return tok && tok->chat;
}

int kvf_tokenizer_chat_render_json(const kvf_tokenizer *tok, const json_t *request, char **out, size_t *out_len)
{
	if (!tok || !request || !out)
		return kvf_errf(KVF_E_INVAL, "kvf_tokenizer_chat_render: NULL argument");
	if (!tok->chat)
		return kvf_errf(KVF_E_NOTFOUND, "tokenizer: the model has no chat_template");
	if (!json_is_object(request) || !json_is_array(json_object_get(request, "messages")))
		return kvf_errf(KVF_E_INVAL, "chat: expected {\"messages\": [...], ...}");
	static const char *const names[] = { "bos_token", "eos_token", "unk_token", "pad_token" };
	const char *vals[] = { tok->bos_token, tok->eos_token, tok->unk_token, tok->pad_token };
	return tok_chat_render_vars(tok->chat, request, names, vals, 4, out, out_len);
}

int kvf_tokenizer_chat_render(const kvf_tokenizer *tok, const char *request_json, size_t len, char **out,
			      size_t *out_len)
{
	if (!request_json)
		return kvf_errf(KVF_E_INVAL, "kvf_tokenizer_chat_render: NULL argument");
	json_error_t jerr;
	json_t *req = json_loadb(request_json, len, 0, &jerr);
	if (!req)
		return kvf_errf(KVF_E_PARSE, "chat: bad JSON: %s", jerr.text);
	int rc = kvf_tokenizer_chat_render_json(tok, req, out, out_len);
	json_decref(req);
	return rc;
}
