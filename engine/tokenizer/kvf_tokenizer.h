/*
 * kvf_tokenizer.h: Hugging Face tokenizer.json tokenizers (BPE, byte-level
 * and sentencepiece style) and tokenizer_config.json chat templates.
 *
 * The gateway and the engine both link this library; it depends only on
 * common/, jansson, PCRE2 and utf8proc (no compute code). A loaded tokenizer
 * is immutable and may be used for encoding, decoding and chat rendering from
 * any number of threads at once: each thread gets its own scratch buffers and
 * its own cache of recently seen pre-tokens (created on the thread's first
 * call, freed when the thread exits or the tokenizer is destroyed). Only
 * kvf_tokenizer_set_chat_template() must happen before the tokenizer is
 * shared. A kvf_detok belongs to one thread at a time.
 *
 * Every function returns 0 or a negative KVF_E_* code (common/kvf_err.h) and
 * leaves a detail for kvf_errmsg(). Input text must be valid UTF-8
 * (KVF_E_INVAL otherwise, naming the byte offset).
 * See docs/tokenizer.md.
 */
#ifndef KVF_TOKENIZER_H
#define KVF_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct kvf_tokenizer kvf_tokenizer;
typedef struct kvf_detok kvf_detok;
typedef struct kvf_chat_template kvf_chat_template;
struct json_t; /* jansson */

/* Encode flags. */
enum {
	/* Apply the post-processor (TemplateProcessing: BOS and friends);
	 * HF's add_special_tokens=True. */
	KVF_TOK_ADD_SPECIAL = 1u << 0,
	/* Do not recognise special added tokens written in the text: "<s>" in
	 * the input is tokenized as the characters '<' 's' '>'. HF's
	 * encode_special_tokens=True. Use it for untrusted user content. */
	KVF_TOK_SPLIT_SPECIAL = 1u << 1,
};

/* Decode flags. */
enum {
	/* Drop special added tokens (BOS, EOS, <|im_end|>) from the text;
	 * HF's skip_special_tokens=True. */
	KVF_DETOK_SKIP_SPECIAL = 1u << 0,
};

/* A growable id array the caller owns and may reuse across calls, so a
 * steady-state encode allocates nothing. Start it zeroed; release it with
 * kvf_tok_ids_free(). */
typedef struct kvf_tok_ids {
	uint32_t *ids;
	size_t n;
	size_t cap;
} kvf_tok_ids;

void kvf_tok_ids_free(kvf_tok_ids *ids);

/*
 * Loads a tokenizer. path is a tokenizer.json file or a model directory
 * holding tokenizer.json; tokenizer_config.json (and chat_template.jinja)
 * next to it are read when present (special tokens, chat template).
 * Unsupported components fail with KVF_E_UNSUPPORTED and a message naming
 * the JSON path, never with a silently different tokenization.
 */
int kvf_tokenizer_load(const char *path, kvf_tokenizer **out);

/* The same from memory: tokenizer.json text and optional (NULL)
 * tokenizer_config.json text. Lengths are byte counts. */
int kvf_tokenizer_load_mem(const char *tokenizer_json, size_t len,
			   const char *config_json, size_t config_len,
			   kvf_tokenizer **out);

/* Frees the tokenizer and every thread's cache of it. No call may be running
 * on it. NULL is a no-op. */
void kvf_tokenizer_destroy(kvf_tokenizer *tok);

/*
 * Encodes len bytes of UTF-8 text and APPENDS the ids to out (set out->n = 0
 * to replace). flags: KVF_TOK_*. On error out->n is left as it was.
 */
int kvf_tokenizer_encode(const kvf_tokenizer *tok, const char *text, size_t len,
			 unsigned flags, kvf_tok_ids *out);

/*
 * kvf_tokenizer_encode() with a segment-cache namespace: long segments
 * cached under one namespace are never reused under another, so a server
 * that gives each tenant its own (e.g. a hash of the tenant's name) keeps
 * one tenant from timing whether another sent a text. kvf_tokenizer_encode
 * uses namespace 0.
 */
int kvf_tokenizer_encode_ns(const kvf_tokenizer *tok, const char *text, size_t len,
			    unsigned flags, uint64_t cache_ns, kvf_tok_ids *out);

/* A cache namespace for an identity (a tenant's name or salt): 0 for an
 * empty one, a 64-bit hash of the bytes otherwise. */
uint64_t kvf_tokenizer_cache_ns(const void *id, size_t len);

/*
 * Decodes ids to text like HF's tokenizer.decode(ids): the decoder chain of
 * tokenizer.json, invalid UTF-8 replaced by U+FFFD. *out is NUL-terminated,
 * allocated with kvf_malloc; free it with kvf_free(). Unknown ids fail with
 * KVF_E_RANGE. flags: KVF_DETOK_*.
 */
int kvf_tokenizer_decode(const kvf_tokenizer *tok, const uint32_t *ids, size_t n,
			 unsigned flags, char **out, size_t *out_len);

/* Id of a token's exact string (added or vocabulary), or KVF_E_NOTFOUND. */
int kvf_tokenizer_token_id(const kvf_tokenizer *tok, const char *token, uint32_t *id);

/* The string of an id (its vocabulary form, e.g. "Ġthe"); NULL if unknown.
 * Borrowed from the tokenizer. */
const char *kvf_tokenizer_id_token(const kvf_tokenizer *tok, uint32_t id, size_t *len);

/* Largest id + 1 (model vocabulary and added tokens). */
size_t kvf_tokenizer_vocab_size(const kvf_tokenizer *tok);

/* Segment cache counters, summed over every thread: a text segment (the text
 * between added tokens, at least 1 KiB) whose ids were reused (hits) or
 * computed (misses). A long system prompt rendered between special tokens is
 * computed once per thread. Any thread may call this. */
void kvf_tokenizer_cache_stats(const kvf_tokenizer *tok, uint64_t *hits, uint64_t *misses);

/* Whether id is a special added token. */
bool kvf_tokenizer_is_special(const kvf_tokenizer *tok, uint32_t id);

/* BOS / EOS ids from tokenizer_config.json (bos_token/eos_token), or -1.
 * kvf_tokenizer_eos_ids lists every id that ends generation: eos_token and,
 * for chat models, <|eot_id|>, <|im_end|>, <|end_of_text|>, <|endoftext|>
 * when they exist. Returns the count written (at most cap). */
int32_t kvf_tokenizer_bos_id(const kvf_tokenizer *tok);
int32_t kvf_tokenizer_eos_id(const kvf_tokenizer *tok);
size_t kvf_tokenizer_eos_ids(const kvf_tokenizer *tok, uint32_t *ids, size_t cap);

/* Streaming detokenizer: feed generated ids one at a time, get the text they
 * add. Text that ends inside a UTF-8 sequence (byte-fallback tokens, a
 * byte-level token holding half of an emoji) is held until it completes; the
 * concatenation of every chunk plus the final flush equals
 * kvf_tokenizer_decode() of all ids whenever that decode is valid text (when
 * the ids hold invalid UTF-8 the stream keeps what it already returned and
 * continues with U+FFFD, see docs/tokenizer.md). The tokenizer must outlive
 * it. */
int kvf_detok_create(const kvf_tokenizer *tok, unsigned flags, kvf_detok **out);

/* Feeds one id. *text and *len: the new text (possibly empty), valid until the
 * next call on d. */
int kvf_detok_step(kvf_detok *d, uint32_t id, const char **text, size_t *len);

/* Ends the stream: returns whatever was held (with U+FFFD for bytes that
 * never completed) and resets d for a new stream. */
int kvf_detok_flush(kvf_detok *d, const char **text, size_t *len);

void kvf_detok_destroy(kvf_detok *d);

/*
 * Chat templates: a Jinja2 subset interpreter (see docs/tokenizer.md for the
 * supported syntax), configured like HF transformers' apply_chat_template
 * (trim_blocks, lstrip_blocks, raise_exception, tojson, namespace, ...).
 */

/* Renders the tokenizer's chat template. request is a JSON object
 * {"messages":[...], "add_generation_prompt": bool, ...}; every member
 * becomes a template variable, next to bos_token/eos_token/unk_token/
 * pad_token from tokenizer_config.json. *out is kvf_malloc'ed (kvf_free),
 * NUL-terminated. KVF_E_NOTFOUND when the model has no chat template,
 * KVF_E_INVAL when the template raises (the message is the template's). */
int kvf_tokenizer_chat_render(const kvf_tokenizer *tok, const char *request_json,
			      size_t len, char **out, size_t *out_len);
int kvf_tokenizer_chat_render_json(const kvf_tokenizer *tok, const struct json_t *request,
				   char **out, size_t *out_len);

/* Replaces the tokenizer's chat template (source text). Not thread-safe:
 * call before sharing the tokenizer. */
int kvf_tokenizer_set_chat_template(kvf_tokenizer *tok, const char *src, size_t len);

/* Whether the tokenizer has a chat template. */
bool kvf_tokenizer_has_chat_template(const kvf_tokenizer *tok);

/* Standalone templates: compile once, render with a JSON object of
 * variables (borrowed). */
int kvf_chat_template_compile(const char *src, size_t len, kvf_chat_template **out);
int kvf_chat_template_render(const kvf_chat_template *tpl, const struct json_t *vars,
			     char **out, size_t *out_len);
void kvf_chat_template_destroy(kvf_chat_template *tpl);

#endif
