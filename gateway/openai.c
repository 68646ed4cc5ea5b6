/*
 * openai.c: what the gateway reads from OpenAI request bodies, and the token
 * ids it routes on.
 *
 * The gateway forwards the client's body unchanged; it parses only what
 * routing and admission need: model, stream, max_tokens, and the prompt.
 * Validation is the workers' own (common/openai.c, kvf_oai_parse), so the
 * gateway refuses exactly what a worker would refuse, before routing it.
 * Tokenization is the workers' too, so the gateway's block keys equal the
 * keys the worker caches under: completions text is encoded with the special
 * tokens the post-processor adds (BOS); chat messages are flattened
 * (kvf_oai_messages_flat), rendered with the model's chat template with
 * add_generation_prompt (default true), and encoded without them (the
 * template writes them).
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

int gw_prompt_parse(gw_prompt *p, int endpoint, const char *body, size_t len)
{
	memset(p, 0, sizeof(*p));
	p->endpoint = endpoint;
	p->max_tokens = -1;
	kvf_json_fail("", "%s", ""); /* no stale param from an earlier failure */
	kvf_err_clear();
	if (kvf_oai_parse(endpoint == GW_EP_CHAT ? KVF_OAI_CHAT : KVF_OAI_COMPLETION, body, len, &p->oai)) {
		memset(&p->oai, 0, sizeof(p->oai));
		return bad(p, kvf_json_bad_param(), "%s", kvf_errmsg());
	}
	p->root = p->oai.root;
	p->model = p->oai.model;
	p->stream = p->oai.stream;
	p->max_tokens = p->oai.max_tokens;
	if (endpoint == GW_EP_CHAT) {
		p->chat_vars = json_object();
		if (!p->chat_vars ||
		    json_object_set_new(p->chat_vars, "messages", kvf_oai_messages_flat(p->oai.messages)) ||
		    json_object_set_new(p->chat_vars, "add_generation_prompt", json_boolean(p->oai.add_generation_prompt)))
			return bad(p, NULL, "out of memory");
		return 0;
	}
	if (p->oai.prompt) {
		p->text = p->oai.prompt;
		p->text_len = strlen(p->oai.prompt);
		return 0;
	}
	size_t n = p->oai.n_prompt_ids;
	/* kvf_tok_ids memory belongs to the tokenizer library, which uses the
	 * C allocator (kvf_tok_ids_free() calls free()). */
	p->ids.ids = malloc((n ? n : 1) * sizeof(uint32_t));
	if (!p->ids.ids)
		return bad(p, NULL, "out of memory");
	memcpy(p->ids.ids, p->oai.prompt_ids, n * sizeof(uint32_t));
	p->ids.n = p->ids.cap = n;
	p->have_ids = 1;
	return 0;
}

void gw_prompt_free(gw_prompt *p)
{
	if (!p)
		return;
	kvf_tok_ids_free(&p->ids);
	json_decref(p->chat_vars);
	p->chat_vars = NULL;
	if (p->oai.root)
		kvf_oai_request_free(&p->oai);
	memset(&p->oai, 0, sizeof(p->oai));
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
	json_array_foreach(json_object_get(p->chat_vars, "messages"), i, m) {
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
		rc = kvf_tokenizer_encode_ns(tok, p->text, p->text_len, KVF_TOK_ADD_SPECIAL, p->cache_ns, &p->ids);
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
	rc = kvf_tokenizer_encode_ns(tok, text, tlen, 0, p->cache_ns, &p->ids);
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
