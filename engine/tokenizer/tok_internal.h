/*
 * tok_internal.h: the tokenizer's private structures, shared by the files of
 * engine/tokenizer/ and by nothing else.
 *
 * A loaded tokenizer is a set of flat tables (vocabulary hash, merge-pair
 * hash, id -> string, added-token tries) plus small arrays of pipeline steps
 * (normalizers, pre-tokenizers, decoders, post-processor items), each
 * Sequence of tokenizer.json flattened into its array. Everything in it is
 * read-only after loading; mutable per-call state lives in a per-thread
 * struct tok_ctx (tok_encode.c).
 */
#ifndef KVF_TOK_INTERNAL_H
#define KVF_TOK_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "engine/tokenizer/kvf_tokenizer.h"

/* ---- hashing and maps (tok_util.c) ---------------------------------- */

static inline uint64_t tok_hash(const void *p, size_t n)
{
	const uint8_t *s = p;
	uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xff51afd7ed558ccdull);
	while (n >= 8) {
		uint64_t v;
		memcpy(&v, s, 8);
		h = (h ^ v) * 0xff51afd7ed558ccdull;
		h ^= h >> 32;
		s += 8;
		n -= 8;
	}
	uint64_t v = 0;
	memcpy(&v, s, n);
	h = (h ^ v) * 0xc4ceb9fe1a85ec53ull;
	h ^= h >> 29;
	h *= 0x9E3779B97F4A7C15ull;
	h ^= h >> 32;
	return h;
}

/* String -> u32 map with its own key pool; open addressing. */
struct tok_strmap_slot {
	uint32_t hash;
	uint32_t key_off;
	uint32_t key_len;
	uint32_t val; /* UINT32_MAX: empty slot */
};
typedef struct tok_strmap {
	struct tok_strmap_slot *slots;
	size_t mask;
	size_t count;
	char *pool;
	size_t pool_len, pool_cap;
} tok_strmap;

int tok_strmap_init(tok_strmap *m, size_t expected);
/* Inserts or overwrites. */
int tok_strmap_put(tok_strmap *m, const char *k, size_t len, uint32_t val);
bool tok_strmap_get(const tok_strmap *m, const char *k, size_t len, uint32_t *val);
void tok_strmap_free(tok_strmap *m);

/* (left id, right id) -> (rank, merged id). */
typedef struct tok_pair_slot {
	uint64_t key; /* UINT64_MAX: empty */
	uint32_t rank;
	uint32_t id;
} tok_pair_slot;
/* murmur3's finalizer: every key bit reaches every index bit */
static inline uint64_t tok_pair_hash(uint64_t k)
{
	k ^= k >> 33;
	k *= 0xff51afd7ed558ccdull;
	k ^= k >> 33;
	k *= 0xc4ceb9fe1a85ec53ull;
	k ^= k >> 33;
	return k;
}

typedef struct tok_pairmap {
	tok_pair_slot *slots;
	size_t mask;
	size_t count;
} tok_pairmap;

int tok_pairmap_init(tok_pairmap *m, size_t expected);
/* Inserts or overwrites: a pair listed twice in model.merges keeps its last
 * rank, as HF's collect() into a HashMap does. */
void tok_pairmap_put(tok_pairmap *m, uint32_t a, uint32_t b, uint32_t rank, uint32_t id);
static inline const tok_pair_slot *tok_pairmap_get(const tok_pairmap *m, uint32_t a, uint32_t b)
{
	uint64_t key = ((uint64_t)a << 32) | b;
	size_t i = (size_t)tok_pair_hash(key) & m->mask;
	for (;;) {
		const tok_pair_slot *s = &m->slots[i];
		if (s->key == key)
			return s;
		if (s->key == UINT64_MAX)
			return NULL;
		i = (i + 1) & m->mask;
	}
}
void tok_pairmap_free(tok_pairmap *m);

/* ---- UTF-8 and the byte-level alphabet (tok_util.c) ------------------ */

/* Decodes one code point at s[0..n); returns its length (1..4), or 0 when
 * the bytes are not valid UTF-8 (overlong, surrogate, truncated). */
size_t tok_utf8_dec(const unsigned char *s, size_t n, uint32_t *cp);
size_t tok_utf8_enc(uint32_t cp, char out[4]);
/* Offset of the first invalid byte, or n when s is valid UTF-8. */
size_t tok_utf8_check(const char *s, size_t n);
/* Length of a valid prefix that does not end inside a sequence that could
 * still complete (for streaming). */
size_t tok_utf8_complete_prefix(const char *s, size_t n);
/* Unicode White_Space (Rust char::is_whitespace, oniguruma \s). */
bool tok_is_space(uint32_t cp);
/* Rust regex \w: alphabetic, mark, decimal number, connector punctuation,
 * Join_Control. */
bool tok_is_word(uint32_t cp);

/* GPT-2 byte <-> code point table (tokenizers' bytes_char()). */
extern uint32_t tok_byte_cp[256];
extern int16_t tok_cp_byte[512]; /* -1 where cp is not in the alphabet */
void tok_bytelevel_init(void);

/* Lossy UTF-8 (Rust String::from_utf8_lossy): appends s to a growable
 * buffer with every maximal invalid subsequence replaced by U+FFFD. */
int tok_append_lossy(char **buf, size_t *len, size_t *cap, const char *s, size_t n);
int tok_append(char **buf, size_t *len, size_t *cap, const char *s, size_t n);

/* ---- regular expressions (tok_regex.c) ------------------------------ */

typedef struct tok_regex {
	pcre2_code *code;
	bool jit;
} tok_regex;

/*
 * Compiles an oniguruma-syntax pattern from tokenizer.json (or a literal
 * string when literal) for PCRE2 with UTF+UCP, translating the classes whose
 * meaning differs (\s, \S, \w, \W, \d, \D) so they mean what they mean in
 * oniguruma/Rust. where names the JSON path for the error message.
 */
int tok_regex_compile(tok_regex *re, const char *pat, size_t len, bool literal,
		      const char *where);
void tok_regex_free(tok_regex *re);
/* Next match starting at or after start. 1 found ([*ms,*me)), 0 none,
 * negative on a matching error (limits). Input must be valid UTF-8. */
int tok_regex_find(const tok_regex *re, pcre2_match_data *md, const char *s, size_t len,
		   size_t start, size_t *ms, size_t *me);
/* GPT-2's pre-tokenizer regex, compiled once per process. */
const tok_regex *tok_regex_gpt2(void);

/* ---- pipeline steps ------------------------------------------------- */

enum tok_norm_kind { TN_NFC, TN_NFD, TN_NFKC, TN_NFKD, TN_PREPEND, TN_REPLACE, TN_STRIP };
struct tok_norm {
	int kind;
	char *str; /* Prepend text, Replace content */
	size_t str_len;
	tok_regex re; /* Replace pattern */
	bool left, right; /* Strip */
};

enum tok_pretok_kind { TP_SPLIT, TP_BYTELEVEL, TP_METASPACE, TP_DIGITS };
enum tok_behavior { TB_REMOVED, TB_ISOLATED, TB_MERGED_PREV, TB_MERGED_NEXT, TB_CONTIGUOUS };
enum tok_prepend { TPS_ALWAYS, TPS_FIRST, TPS_NEVER };
struct tok_pretok {
	int kind;
	tok_regex re; /* Split */
	int behavior;
	bool invert;
	bool add_prefix_space, use_regex; /* ByteLevel */
	uint32_t repl_cp; /* Metaspace */
	char repl[4];
	size_t repl_len;
	int prepend_scheme;
	bool split;
	bool individual_digits; /* Digits */
};

enum tok_dec_kind { TD_BYTELEVEL, TD_REPLACE, TD_BYTEFALLBACK, TD_FUSE, TD_STRIP, TD_METASPACE };
struct tok_dec {
	int kind;
	tok_regex re; /* Replace */
	char *content;
	size_t content_len;
	uint32_t cp; /* Strip content, Metaspace replacement */
	size_t start, stop;
	int prepend_scheme;
};

struct tok_post_item {
	bool is_seq; /* the sequence itself ($A) */
	uint32_t *ids; /* special token ids */
	size_t n;
};

struct tok_added {
	char *content;
	size_t len;
	char *norm; /* content through the normalizers (normalized tokens) */
	size_t norm_len;
	uint32_t id;
	bool lstrip, rstrip, single_word, normalized, special;
};

/* Byte trie over added-token strings, leftmost-longest matching. */
struct tok_trie_node {
	uint32_t child;   /* first child, 0: none (node 0 is the root) */
	uint32_t sibling; /* next sibling, 0: none */
	int32_t added;    /* index into tok->added that ends here, -1 */
	uint8_t byte;
};
struct tok_trie {
	struct tok_trie_node *nodes;
	size_t n, cap;
	uint8_t first[32]; /* bitmap of bytes that start some token */
	bool empty;
};

typedef struct tok_str {
	uint32_t off, len;
} tok_str;

struct tok_ctx;

struct kvf_tokenizer {
	/* BPE model */
	tok_strmap vocab;
	tok_pairmap merges;
	char *pool; /* strings of id_str */
	size_t pool_len, pool_cap;
	tok_str *id_str; /* [n_ids]; len UINT32_MAX: no such id */
	uint8_t *id_flags; /* [n_ids]: TOKF_* */
	size_t n_ids;
	int32_t *char_id; /* [0x10000] cp -> single-char token id, or NULL */
	bool has_unk;
	uint32_t unk_id;
	char *cont_prefix, *eow_suffix;
	size_t cont_prefix_len, eow_suffix_len;
	bool fuse_unk, byte_fallback, ignore_merges;
	int32_t byte_tok[256]; /* "<0xXX>" ids, -1 when absent */

	/* added tokens */
	struct tok_added *added;
	size_t n_added;
	struct tok_trie trie_raw, trie_norm;
	tok_strmap added_map;

	/* pipeline */
	struct tok_norm *norms;
	size_t n_norms;
	struct tok_pretok *pretoks;
	size_t n_pretoks;
	struct tok_dec *decs;
	size_t n_decs;
	bool has_decoder;
	struct tok_post_item *post;
	size_t n_post;

	/* tokenizer_config.json */
	int32_t bos_id, eos_id;
	char *bos_token, *eos_token, *unk_token, *pad_token;
	uint32_t stop_ids[8];
	size_t n_stop_ids;
	kvf_chat_template *chat;

	/* per-thread contexts */
	pthread_key_t tls_key;
	bool tls_ok;
	pthread_mutex_t ctx_lock;
	struct tok_ctx *ctx_list;
	uint64_t seg_hits_gone, seg_misses_gone; /* of contexts already freed */
};

enum { TOKF_ADDED = 1, TOKF_SPECIAL = 2 };

static inline const char *tok_id_str(const kvf_tokenizer *tok, uint32_t id, size_t *len)
{
	if (id >= tok->n_ids || tok->id_str[id].len == UINT32_MAX)
		return NULL;
	*len = tok->id_str[id].len;
	return tok->pool + tok->id_str[id].off;
}

/* ---- per-thread scratch (tok_encode.c, tok_bpe.c) -------------------- */

/* A piece of the text being encoded: bytes [off, off+len) of ctx->buf, or an
 * added token (id >= 0) already resolved. */
struct tok_split {
	uint32_t off, len;
	int32_t id;
	bool origin0; /* starts at offset 0 of the original text (Metaspace "first") */
};

struct tok_sym {
	uint32_t id;
	int32_t prev, next;
	uint32_t len; /* bytes; 0 once merged away */
};

struct tok_heap_ent {
	uint32_t rank, pos, id;
	uint32_t left, right; /* the pair when pushed: still there => still valid */
};

struct tok_match {
	uint32_t s, e;
	bool m;
};

struct tok_cache_slot {
	uint32_t hash;
	uint32_t key_off;
	uint32_t key_len; /* 0: empty slot */
	uint32_t ids_off;
	uint32_t n_ids;
};

#define TOK_CACHE_SLOTS 65536u      /* power of two */
#define TOK_CACHE_MAX_ENTRIES 32768u
#define TOK_CACHE_MAX_KEY 256u      /* HF's MAX_LENGTH: longer words are not cached */
#define TOK_CACHE_KEY_BYTES (2u << 20)
#define TOK_CACHE_IDS (512u << 10)

/*
 * Segment cache: the ids of whole text segments (the pieces between added
 * tokens, after normalization). A segment tokenizes independently of its
 * neighbours, so a chat's long system prompt, rendered between special
 * tokens, is tokenized once per thread and then reused. Exact: the key is
 * the segment's bytes (compared in full) and whether it starts the text
 * (Metaspace's prepend "first"). Least recently used entries are evicted.
 */
#define TOK_SEG_MIN 1024u            /* bytes: shorter segments are not cached */
#define TOK_SEG_SLOTS 32u
#define TOK_SEG_MAX_BYTES (32u << 20) /* text + ids per thread */

struct tok_seg {
	uint64_t hash, used, ns;
	char *text; /* NULL: empty slot */
	uint32_t *ids;
	uint32_t len, n_ids;
	bool origin0;
};

struct tok_ctx {
	const kvf_tokenizer *tok;
	struct tok_ctx *prev, *next; /* tok->ctx_list */
	bool registered;
	pcre2_match_data *md;
	char *buf; /* the call's text: input, normalized and mapped pieces */
	size_t buf_len, buf_cap;
	struct tok_split *sp[2];
	size_t sp_n[2], sp_cap[2];
	struct tok_sym *syms;
	size_t syms_cap;
	struct tok_heap_ent *heap;
	size_t heap_cap;
	uint32_t *wids; /* ids of the current word */
	size_t wids_n, wids_cap;
	char *tmp;
	size_t tmp_cap;
	struct tok_match *mt;
	size_t mt_cap;
	uint32_t *seq; /* model ids before the post-processor */
	size_t seq_n, seq_cap;
	struct tok_cache_slot *cache;
	size_t cache_count;
	char *ckeys;
	size_t ckeys_len;
	uint32_t *cids;
	size_t cids_len;
	struct tok_seg *segs; /* TOK_SEG_SLOTS, with the word cache */
	size_t seg_bytes;
	uint64_t seg_tick;
	uint64_t seg_ns; /* this call's cache namespace */
	uint64_t seg_hits, seg_misses;
	struct tok_split *pieces; /* this call's segments */
	size_t pieces_cap;
};

/*
 * Growth of per-thread scratch and of kvf_tok_ids. These use the C library
 * directly, not kvf_alloc: they are allocated on whatever thread encodes,
 * and cmocka's checking allocator (what kvf_malloc is in unit tests) is not
 * thread-safe. ASan's leak checker covers them in `make asan`.
 */
static inline int tok_raw_grow(void **arr, size_t *cap, size_t need, size_t elem)
{
	if (need <= *cap)
		return 0;
	size_t ncap = *cap ? *cap : 16;
	while (ncap < need)
		ncap *= 2;
	void *p = realloc(*arr, ncap * elem);
	if (!p)
		return -1;
	*arr = p;
	*cap = ncap;
	return 0;
}

/* tok_load.c */
int tok_load_config(kvf_tokenizer *tok, const char *config_json, size_t len, const char *dir);

/* tok_encode.c */
struct tok_ctx *tok_ctx_get(const kvf_tokenizer *tok, bool *temporary);
void tok_ctx_put(struct tok_ctx *ctx, bool temporary);
void tok_ctx_destroy_all(kvf_tokenizer *tok);
/* pthread key destructor: frees an exiting thread's context. */
void tok_ctx_thread_exit(void *p);
/* Applies the normalizers to s, appending the result (tokenizer-owned
 * memory, for loading added tokens). */
int tok_normalize_string(const kvf_tokenizer *tok, const char *s, size_t len, char **out,
			 size_t *out_len);

/* tok_bpe.c: BPE of one pre-token; appends ids to ctx->wids. */
int tok_bpe_word(const kvf_tokenizer *tok, struct tok_ctx *ctx, const char *s, size_t len);

/* jinja.c: variables from a JSON object; extra string variables. With
 * extras (the tokenizer-level render) tools/documents default to None and
 * add_generation_prompt to False, as transformers passes them. */
int tok_chat_render_vars(const kvf_chat_template *tpl, const struct json_t *vars,
			 const char *const *extra_names, const char *const *extra_vals,
			 size_t n_extra, char **out, size_t *out_len);

#endif
