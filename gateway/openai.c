/*
 * openai.c: what the gateway reads from OpenAI request bodies, and the token
 * ids it routes on.
 *
 * The gateway forwards the client's body unchanged; it parses only what
 * routing and admission need: model, stream, max_tokens, and the prompt.
 * Prompt forms (as OpenAI and vLLM accept them):
 *   /v1/completions       "prompt": string | [int...] | [string...] | [[int...]...]
 *                         (a batch routes on its first prompt)
 *   /v1/chat/completions  "messages": [...], rendered with the model's chat
 *                         template, add_generation_prompt defaulting to true
 * Tokenization follows vLLM so the gateway's block keys equal the worker's:
 * completions text is encoded with the special tokens the post-processor adds
 * (BOS), a rendered chat prompt without them (the template has them).
 *
 * The usage scanner reads the response stream as it passes through to learn
 * the completion tokens for the tenant's tokens/s budget, without parsing
 * the whole answer: the last "completion_tokens" number seen, or the number
 * of SSE data events when the stream carries no usage.
 */
#include "gateway/gw.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"
#include "common/kvf_json.h"

static int bad(gw_prompt *p, const char *param, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int bad(gw_prompt *p, const char *param, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(p->err, sizeof(p->err), fmt, ap);
	va_end(ap);
	snprintf(p->err_param, sizeof(p->err_param), "%s", param ? param : "");
	return KVF_E_INVAL;
}

static int from_getter(gw_prompt *p)
{
	return bad(p, kvf_json_bad_param(), "%s", kvf_errmsg());
}

static int ids_from_array(gw_prompt *p, const json_t *arr, const char *param)
{
	size_t n = json_array_size(arr);
	if (n > p->ids.cap) {
		/* kvf_tok_ids memory belongs to the tokenizer library, which uses
		 * the C allocator (kvf_tok_ids_free() calls free()). */
		uint32_t *ids = realloc(p->ids.ids, n * sizeof(uint32_t));
		if (!ids)
			return bad(p, param, "out of memory");
		p->ids.ids = ids;
		p->ids.cap = n;
	}
	size_t i;
	json_t *v;
	json_array_foreach(arr, i, v) {
		if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 0x7fffffff)
			return bad(p, param, "'%s' token ids must be integers between 0 and 2147483647", param);
		p->ids.ids[i] = (uint32_t)json_integer_value(v);
	}
	p->ids.n = n;
	p->have_ids = 1;
	return 0;
}

static int parse_completion_prompt(gw_prompt *p)
{
	json_t *pr = json_object_get(p->root, "prompt");
	if (!pr || json_is_null(pr))
		return bad(p, "prompt", "'prompt' is a required property");
	if (json_is_string(pr)) {
		p->text = json_string_value(pr);
		p->text_len = json_string_length(pr);
		return 0;
	}
	if (!json_is_array(pr))
		return bad(p, "prompt", "'prompt' must be a string, an array of strings or an array of token ids");
	if (json_array_size(pr) == 0)
		return bad(p, "prompt", "'prompt' must not be empty");
	json_t *first = json_array_get(pr, 0);
	if (json_is_integer(first))
		return ids_from_array(p, pr, "prompt");
	if (json_is_string(first)) {
		size_t i;
		json_t *v;
		json_array_foreach(pr, i, v)
			if (!json_is_string(v))
				return bad(p, "prompt", "'prompt' array elements must all be strings");
		p->text = json_string_value(first);
		p->text_len = json_string_length(first);
		return 0;
	}
	if (json_is_array(first)) {
		size_t i;
		json_t *v;
		json_array_foreach(pr, i, v)
			if (!json_is_array(v) || json_array_size(v) == 0)
				return bad(p, "prompt", "'prompt' batches of token ids must be non-empty arrays");
		return ids_from_array(p, first, "prompt");
	}
	return bad(p, "prompt", "'prompt' must be a string, an array of strings or an array of token ids");
}

static int parse_chat(gw_prompt *p)
{
	const json_t *msgs = NULL;
	if (kvf_json_opt_array(p->root, "messages", &msgs))
		return from_getter(p);
	if (!msgs)
		return bad(p, "messages", "'messages' is a required property");
	if (json_array_size(msgs) == 0)
		return bad(p, "messages", "'messages' must not be empty");
	size_t i;
	json_t *m;
	json_array_foreach(msgs, i, m) {
		if (!json_is_object(m) || !json_is_string(json_object_get(m, "role")))
			return bad(p, "messages", "'messages[%zu]' must be an object with a 'role' string", i);
	}
	p->chat_vars = json_object();
	if (!p->chat_vars || json_object_update(p->chat_vars, p->root))
		return bad(p, NULL, "out of memory");
	if (!json_object_get(p->chat_vars, "add_generation_prompt"))
		json_object_set_new(p->chat_vars, "add_generation_prompt", json_true());
	return 0;
}

int gw_prompt_parse(gw_prompt *p, int endpoint, const char *body, size_t len)
{
	memset(p, 0, sizeof(*p));
	p->endpoint = endpoint;
	p->max_tokens = -1;
	if (kvf_json_parse_object(body, len, &p->root)) {
		bad(p, NULL, "request body: %s", kvf_errmsg());
		p->root = NULL;
		return KVF_E_INVAL;
	}
	if (kvf_json_req_string(p->root, "model", &p->model))
		return from_getter(p);
	if (kvf_json_opt_bool(p->root, "stream", &p->stream))
		return from_getter(p);
	const char *mt = endpoint == GW_EP_CHAT && json_object_get(p->root, "max_completion_tokens")
				 ? "max_completion_tokens"
				 : "max_tokens";
	if (kvf_json_opt_int(p->root, mt, 0, 1 << 30, &p->max_tokens))
		return from_getter(p);
	return endpoint == GW_EP_CHAT ? parse_chat(p) : parse_completion_prompt(p);
}

void gw_prompt_free(gw_prompt *p)
{
	if (!p)
		return;
	kvf_tok_ids_free(&p->ids);
	json_decref(p->chat_vars);
	json_decref(p->root);
	p->chat_vars = NULL;
	p->root = NULL;
}

size_t gw_prompt_work_bytes(const gw_prompt *p)
{
	if (p->have_ids)
		return 0;
	if (p->endpoint == GW_EP_COMPLETIONS)
		return p->text_len;
	size_t n = 0;
	size_t i;
	json_t *m;
	json_array_foreach(json_object_get(p->root, "messages"), i, m) {
		json_t *c = json_object_get(m, "content");
		if (json_is_string(c))
			n += json_string_length(c);
		else
			n += 256; /* parts, tool calls: a rough size */
	}
	return n;
}

int gw_prompt_tokenize(gw_prompt *p, const kvf_tokenizer *tok)
{
	if (p->have_ids)
		return 0;
	p->ids.n = 0;
	int rc;
	if (p->endpoint == GW_EP_COMPLETIONS) {
		rc = kvf_tokenizer_encode(tok, p->text, p->text_len, KVF_TOK_ADD_SPECIAL, &p->ids);
		if (rc)
			return bad(p, "prompt", "prompt: %s", kvf_errmsg());
		p->have_ids = 1;
		return 0;
	}
	char *text = NULL;
	size_t tlen = 0;
	rc = kvf_tokenizer_chat_render_json(tok, p->chat_vars, &text, &tlen);
	if (rc) {
		if (rc == KVF_E_NOTFOUND)
			return bad(p, "messages", "the model has no chat template; use /v1/completions");
		return bad(p, "messages", "chat template: %s", kvf_errmsg());
	}
	rc = kvf_tokenizer_encode(tok, text, tlen, 0, &p->ids);
	kvf_free(text);
	if (rc)
		return bad(p, "messages", "messages: %s", kvf_errmsg());
	p->have_ids = 1;
	return 0;
}

/* ---- usage scanner ---- */

void gw_usage_feed(gw_usage_scan *u, const char *data, size_t len)
{
	static const char pat[] = "data: {";
	for (size_t i = 0; i < len; i++) {
		char ch = data[i];
		if (ch == pat[u->match]) {
			if (++u->match == sizeof(pat) - 1) {
				u->events++;
				u->match = 0;
			}
		} else {
			u->match = ch == 'd' ? 1 : 0;
		}
	}
	size_t cap = sizeof(u->tail);
	if (len >= cap) {
		memcpy(u->tail, data + len - cap, cap);
		u->tail_len = cap;
	} else if (u->tail_len + len <= cap) {
		memcpy(u->tail + u->tail_len, data, len);
		u->tail_len += len;
	} else {
		size_t keep = cap - len;
		memmove(u->tail, u->tail + u->tail_len - keep, keep);
		memcpy(u->tail + keep, data, len);
		u->tail_len = cap;
	}
}

uint64_t gw_usage_completion_tokens(const gw_usage_scan *u)
{
	static const char key[] = "\"completion_tokens\"";
	const char *last = NULL;
	for (size_t i = 0; i + sizeof(key) - 1 <= u->tail_len; i++)
		if (!memcmp(u->tail + i, key, sizeof(key) - 1))
			last = u->tail + i;
	if (last) {
		const char *p = last + sizeof(key) - 1, *end = u->tail + u->tail_len;
		while (p < end && (*p == ' ' || *p == ':'))
			p++;
		uint64_t v = 0;
		int digits = 0;
		while (p < end && *p >= '0' && *p <= '9' && digits < 12) {
			v = v * 10 + (uint64_t)(*p++ - '0');
			digits++;
		}
		if (digits && p < end)
			return v;
	}
	return u->events;
}
