/*
 * kvf_openai.h: the OpenAI API's request and response shapes, shared by the
 * workers (which serve the API themselves) and the gateway.
 *
 * Parsing validates everything a worker acts on and answers in the API's own
 * terms: a failure leaves a message (kvf_errmsg()) and the offending field
 * (kvf_json_bad_param()) for an OpenAI error body with status 400.
 * Supported: /v1/completions (prompt as a string, an array of one string, an
 * array of token ids, or an array of one token-id array) and
 * /v1/chat/completions (messages with string or text-part content), n = 1,
 * max_tokens / max_completion_tokens, temperature, top_p, top_k, min_p,
 * presence/frequency/repetition penalties, stop (string or up to 8 strings),
 * stop_token_ids, seed, stream + stream_options.include_usage, logprobs
 * (completions: 0..20 alternatives; chat: logprobs + top_logprobs),
 * ignore_eos, and vLLM's return_token_ids and add_generation_prompt. Fields a
 * client may send that change the answer in ways we don't implement (n > 1,
 * best_of > 1, echo, suffix, logit_bias, tools, non-text response_format) are
 * refused with a 400 naming them, never silently ignored.
 *
 * Writers produce the exact JSON objects OpenAI clients parse: whole
 * responses, streaming chunks (for SSE "data:" lines) and the usage chunk.
 */
#ifndef KVF_OPENAI_H
#define KVF_OPENAI_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "common/kvf_buf.h"

#define KVF_OAI_MAX_STOP 8
#define KVF_OAI_MAX_STOP_IDS 16
#define KVF_OAI_MAX_TOP_LOGPROBS 20
#define KVF_OAI_DEFAULT_MAX_TOKENS_COMPLETION 16

typedef enum kvf_oai_kind {
	KVF_OAI_COMPLETION = 0, /* /v1/completions */
	KVF_OAI_CHAT = 1,       /* /v1/chat/completions */
} kvf_oai_kind;

typedef struct kvf_oai_request {
	kvf_oai_kind kind;
	const char *model;        /* borrowed from root */
	/* completions: exactly one of prompt / prompt_ids */
	const char *prompt;       /* borrowed */
	uint32_t *prompt_ids;     /* owned */
	size_t n_prompt_ids;
	/* chat */
	const json_t *messages;   /* borrowed: validated array of {role, content} */
	int add_generation_prompt;
	int64_t max_tokens;       /* -1: not given */
	double temperature, top_p, min_p;
	double presence_penalty, frequency_penalty, repetition_penalty;
	int64_t top_k;            /* <= 0: off */
	const char *stop[KVF_OAI_MAX_STOP]; /* borrowed */
	size_t n_stop;
	uint32_t stop_token_ids[KVF_OAI_MAX_STOP_IDS];
	size_t n_stop_token_ids;
	int has_seed;
	uint64_t seed;
	int stream, include_usage;
	int logprobs;             /* report logprobs of sampled tokens */
	int top_logprobs;         /* alternatives per token (0..20) */
	int return_token_ids, ignore_eos;
	const char *user;         /* borrowed; informational */
	json_t *root;             /* owned: keeps the borrowed strings alive */
} kvf_oai_request;

/* Parses and validates a request body. On success the caller frees with
 * kvf_oai_request_free(). On failure nothing needs freeing. */
int kvf_oai_parse(kvf_oai_kind kind, const char *body, size_t len, kvf_oai_request *out);
void kvf_oai_request_free(kvf_oai_request *req);

/* A chat message's text: content as a string, or the "text" parts of a
 * content array joined with newlines (as vLLM does for templates that expect
 * string content). Returns a new jansson string reference. */
json_t *kvf_oai_message_text(const json_t *message);

/* A copy of messages where every content array became its text and a
 * missing content became "": what chat templates written for string content
 * expect. New reference. */
json_t *kvf_oai_messages_flat(const json_t *messages);

/* ---- responses ---- */

typedef struct kvf_oai_logprob {
	const char *token;        /* decoded piece */
	float logprob;
	int n_top;
	const char *top_token[KVF_OAI_MAX_TOP_LOGPROBS];
	float top_logprob[KVF_OAI_MAX_TOP_LOGPROBS];
} kvf_oai_logprob;

typedef struct kvf_oai_usage {
	int64_t prompt_tokens, completion_tokens, cached_tokens;
} kvf_oai_usage;

/* What identifies one response: id ("cmpl-..." / "chatcmpl-..."), model,
 * created (Unix seconds). */
typedef struct kvf_oai_resp {
	kvf_oai_kind kind;
	const char *id;
	const char *model;
	uint64_t created;
} kvf_oai_resp;

/* Writes a fresh response id ("cmpl-<24 hex>" or "chatcmpl-<24 hex>"). */
void kvf_oai_make_id(kvf_oai_kind kind, char out[40]);

/*
 * A whole (non-streaming) response. text: the generated text; finish:
 * "stop" | "length" | NULL (still running: only for chunks); lp: n_lp entries
 * or NULL; token_ids: the generated ids when return_token_ids (else NULL),
 * prompt_ids likewise.
 */
int kvf_oai_write_response(kvf_buf *out, const kvf_oai_resp *r, const char *text, size_t text_len,
			   const char *finish, const kvf_oai_logprob *lp, size_t n_lp,
			   const uint32_t *token_ids, size_t n_ids, const uint32_t *prompt_ids,
			   size_t n_prompt_ids, const kvf_oai_usage *usage);

/* One streaming chunk (the JSON after "data: "). first: add the chat
 * delta's role. usage: NULL, or the usage to append to this chunk. */
int kvf_oai_write_chunk(kvf_buf *out, const kvf_oai_resp *r, int first, const char *text, size_t text_len,
			const char *finish, const kvf_oai_logprob *lp, size_t n_lp, const uint32_t *token_ids,
			size_t n_ids);

/* The final usage-only chunk of stream_options.include_usage ("choices": []). */
int kvf_oai_write_usage_chunk(kvf_buf *out, const kvf_oai_resp *r, const kvf_oai_usage *usage);

/* {"object":"list","data":[{"id":model,"object":"model","created":..,"owned_by":..}, ...]} */
int kvf_oai_write_models(kvf_buf *out, const char *const *models, size_t n, uint64_t created, const char *owner);

#endif
