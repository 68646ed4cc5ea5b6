/*
 * openai.c: request validation and response JSON for the OpenAI API.
 * Requests are parsed with jansson (bodies are small next to generation);
 * responses are written straight into a kvf_buf in field order clients
 * expect, since streaming writes one chunk per generated token.
 */
#include "common/kvf_openai.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"
#include "common/kvf_json.h"
#include "common/kvf_time.h"

/* A validation failure naming the field, for OpenAI's error "param". */
#define reject(obj, key, ...) kvf_json_fail((key), __VA_ARGS__)

static int parse_ids(const json_t *arr, const char *key, uint32_t **ids, size_t *n)
{
	size_t len = json_array_size(arr);
	if (len == 0)
		return reject(NULL, key, "'%s' must not be empty", key);
	uint32_t *v = kvf_malloc(len * sizeof(*v));
	if (!v)
		return kvf_errf(KVF_E_NOMEM, "out of memory");
	for (size_t i = 0; i < len; i++) {
		const json_t *e = json_array_get(arr, i);
		if (!json_is_integer(e) || json_integer_value(e) < 0 || json_integer_value(e) >= (json_int_t)UINT32_MAX) {
			kvf_free(v);
			return reject(NULL, key, "'%s' must hold token ids (non-negative integers); element %zu is not",
				      key, i);
		}
		v[i] = (uint32_t)json_integer_value(e);
	}
	*ids = v;
	*n = len;
	return 0;
}

static int parse_prompt(const json_t *root, kvf_oai_request *r)
{
	const json_t *p = json_object_get(root, "prompt");
	if (!p || json_is_null(p))
		return reject(root, "prompt", "'prompt' is required");
	if (json_is_string(p)) {
		r->prompt = json_string_value(p);
		return 0;
	}
	if (!json_is_array(p))
		return reject(root, "prompt", "'prompt' must be a string, an array of token ids, or an array of one of those");
	if (json_array_size(p) == 0)
		return reject(root, "prompt", "'prompt' must not be empty");
	const json_t *first = json_array_get(p, 0);
	if (json_is_integer(first))
		return parse_ids(p, "prompt", &r->prompt_ids, &r->n_prompt_ids);
	if (json_array_size(p) > 1)
		return reject(root, "prompt", "only one prompt per request is supported (got %zu)", json_array_size(p));
	if (json_is_string(first)) {
		r->prompt = json_string_value(first);
		return 0;
	}
	if (json_is_array(first))
		return parse_ids(first, "prompt", &r->prompt_ids, &r->n_prompt_ids);
	return reject(root, "prompt", "'prompt' must be a string, an array of token ids, or an array of one of those");
}

static int valid_role(const char *role)
{
	static const char *const roles[] = { "system", "user", "assistant", "tool", "developer", NULL };
	for (const char *const *p = roles; *p; p++)
		if (strcmp(role, *p) == 0)
			return 1;
	return 0;
}

static int parse_messages(const json_t *root, kvf_oai_request *r)
{
	const json_t *m = json_object_get(root, "messages");
	if (!m || json_is_null(m))
		return reject(root, "messages", "'messages' is required");
	if (!json_is_array(m) || json_array_size(m) == 0)
		return reject(root, "messages", "'messages' must be a non-empty array");
	for (size_t i = 0; i < json_array_size(m); i++) {
		const json_t *msg = json_array_get(m, i);
		if (!json_is_object(msg))
			return reject(root, "messages", "messages[%zu] must be an object", i);
		const json_t *role = json_object_get(msg, "role");
		if (!json_is_string(role) || !valid_role(json_string_value(role)))
			return reject(root, "messages", "messages[%zu].role must be one of system, user, assistant, tool, developer", i);
		const json_t *content = json_object_get(msg, "content");
		if (!content || json_is_null(content)) {
			if (strcmp(json_string_value(role), "assistant") != 0)
				return reject(root, "messages", "messages[%zu].content is required", i);
			continue;
		}
		if (json_is_string(content))
			continue;
		if (!json_is_array(content))
			return reject(root, "messages", "messages[%zu].content must be a string or an array of parts", i);
		for (size_t j = 0; j < json_array_size(content); j++) {
			const json_t *part = json_array_get(content, j);
			const json_t *type = json_object_get(part, "type");
			if (!json_is_string(type) || strcmp(json_string_value(type), "text") != 0)
				return reject(root, "messages",
					      "messages[%zu].content[%zu]: only text content parts are supported", i, j);
			if (!json_is_string(json_object_get(part, "text")))
				return reject(root, "messages", "messages[%zu].content[%zu].text must be a string", i, j);
		}
	}
	r->messages = m;
	return 0;
}

json_t *kvf_oai_messages_flat(const json_t *messages)
{
	json_t *out = json_array();
	for (size_t i = 0; i < json_array_size(messages); i++) {
		json_t *m = json_deep_copy(json_array_get(messages, i));
		json_t *c = json_object_get(m, "content");
		if (json_is_array(c))
			json_object_set_new(m, "content", kvf_oai_message_text(m));
		else if (!json_is_string(c)) /* an assistant turn without content */
			json_object_set_new(m, "content", json_string(""));
		json_array_append_new(out, m);
	}
	return out;
}

json_t *kvf_oai_message_text(const json_t *message)
{
	const json_t *content = json_object_get(message, "content");
	if (json_is_string(content))
		return json_incref((json_t *)content);
	if (!json_is_array(content))
		return json_string("");
	kvf_buf b = KVF_BUF_INIT;
	size_t n = 0;
	for (size_t j = 0; j < json_array_size(content); j++) {
		const json_t *text = json_object_get(json_array_get(content, j), "text");
		if (!json_is_string(text))
			continue;
		if (n++)
			kvf_buf_putc(&b, '\n'); /* parts joined as vLLM does for string-content templates */
		kvf_buf_append(&b, json_string_value(text), json_string_length(text));
	}
	json_t *s = json_stringn(b.data ? b.data : "", b.len);
	kvf_buf_free(&b);
	return s;
}

static int parse_stop(const json_t *root, kvf_oai_request *r)
{
	const json_t *s = json_object_get(root, "stop");
	if (!s || json_is_null(s))
		return 0;
	if (json_is_string(s)) {
		if (json_string_length(s) == 0)
			return reject(root, "stop", "'stop' strings must not be empty");
		r->stop[r->n_stop++] = json_string_value(s);
		return 0;
	}
	if (!json_is_array(s))
		return reject(root, "stop", "'stop' must be a string or an array of strings");
	if (json_array_size(s) > KVF_OAI_MAX_STOP)
		return reject(root, "stop", "'stop' holds at most %d strings", KVF_OAI_MAX_STOP);
	for (size_t i = 0; i < json_array_size(s); i++) {
		const json_t *e = json_array_get(s, i);
		if (!json_is_string(e) || json_string_length(e) == 0)
			return reject(root, "stop", "'stop' must hold non-empty strings");
		r->stop[r->n_stop++] = json_string_value(e);
	}
	return 0;
}

/* Fields that would change the answer in ways not implemented: refuse. */
static int refuse_unsupported(const json_t *root, kvf_oai_kind kind)
{
	int64_t n = 1;
	int rc;
	if ((rc = kvf_json_opt_int(root, "n", 1, 1, &n)))
		return kvf_errf(rc, "'n' must be 1: one choice per request is supported");
	if ((rc = kvf_json_opt_int(root, "best_of", 1, 1, &n)))
		return kvf_errf(rc, "'best_of' must be 1");
	int echo = 0;
	if ((rc = kvf_json_opt_bool(root, "echo", &echo)))
		return rc;
	if (echo)
		return reject(root, "echo", "'echo' is not supported");
	const json_t *v = json_object_get(root, "suffix");
	if (v && !json_is_null(v))
		return reject(root, "suffix", "'suffix' is not supported");
	v = json_object_get(root, "logit_bias");
	if (v && !json_is_null(v) && !(json_is_object(v) && json_object_size(v) == 0))
		return reject(root, "logit_bias", "'logit_bias' is not supported");
	if (kind == KVF_OAI_CHAT) {
		v = json_object_get(root, "tools");
		if (v && !json_is_null(v) && !(json_is_array(v) && json_array_size(v) == 0))
			return reject(root, "tools", "'tools' (function calling) is not supported");
		v = json_object_get(root, "response_format");
		if (v && !json_is_null(v)) {
			const json_t *t = json_object_get(v, "type");
			if (!json_is_string(t) || strcmp(json_string_value(t), "text") != 0)
				return reject(root, "response_format", "only response_format {\"type\": \"text\"} is supported");
		}
	}
	return 0;
}

int kvf_oai_parse(kvf_oai_kind kind, const char *body, size_t len, kvf_oai_request *out)
{
	kvf_oai_request r;
	memset(&r, 0, sizeof(r));
	r.kind = kind;
	r.max_tokens = -1;
	r.temperature = 1.0;
	r.top_p = 1.0;
	r.repetition_penalty = 1.0;
	r.add_generation_prompt = 1;
	int rc = kvf_json_parse_object(body, len, &r.root);
	if (rc)
		return rc;
	const json_t *root = r.root;
	int64_t i64;
	const json_t *obj;

	if ((rc = kvf_json_req_string(root, "model", &r.model)))
		goto err;
	if ((rc = refuse_unsupported(root, kind)))
		goto err;
	if ((rc = kind == KVF_OAI_CHAT ? parse_messages(root, &r) : parse_prompt(root, &r)))
		goto err;
	if ((rc = kvf_json_opt_int(root, "max_tokens", 1, INT32_MAX, &r.max_tokens)))
		goto err;
	if (kind == KVF_OAI_CHAT && (rc = kvf_json_opt_int(root, "max_completion_tokens", 1, INT32_MAX, &r.max_tokens)))
		goto err;
	if ((rc = kvf_json_opt_double(root, "temperature", 0, 2, &r.temperature)) ||
	    (rc = kvf_json_opt_double(root, "top_p", 0, 1, &r.top_p)) ||
	    (rc = kvf_json_opt_double(root, "min_p", 0, 1, &r.min_p)) ||
	    (rc = kvf_json_opt_double(root, "presence_penalty", -2, 2, &r.presence_penalty)) ||
	    (rc = kvf_json_opt_double(root, "frequency_penalty", -2, 2, &r.frequency_penalty)) ||
	    (rc = kvf_json_opt_double(root, "repetition_penalty", 0.01, 100, &r.repetition_penalty)) ||
	    (rc = kvf_json_opt_int(root, "top_k", -1, 1 << 20, &r.top_k)))
		goto err;
	if (r.top_p <= 0) {
		rc = reject(root, "top_p", "'top_p' must be greater than 0 and at most 1");
		goto err;
	}
	if ((rc = parse_stop(root, &r)))
		goto err;
	obj = NULL;
	if ((rc = kvf_json_opt_array(root, "stop_token_ids", &obj)))
		goto err;
	if (obj && json_array_size(obj)) {
		uint32_t *ids;
		size_t n;
		if (json_array_size(obj) > KVF_OAI_MAX_STOP_IDS) {
			rc = reject(root, "stop_token_ids", "'stop_token_ids' holds at most %d ids", KVF_OAI_MAX_STOP_IDS);
			goto err;
		}
		if ((rc = parse_ids(obj, "stop_token_ids", &ids, &n)))
			goto err;
		memcpy(r.stop_token_ids, ids, n * sizeof(*ids));
		r.n_stop_token_ids = n;
		kvf_free(ids);
	}
	const json_t *seed = json_object_get(root, "seed");
	if (seed && !json_is_null(seed)) {
		if (!json_is_integer(seed)) {
			rc = reject(root, "seed", "'seed' must be an integer");
			goto err;
		}
		r.has_seed = 1;
		r.seed = (uint64_t)json_integer_value(seed);
	}
	if ((rc = kvf_json_opt_bool(root, "stream", &r.stream)))
		goto err;
	obj = NULL;
	if ((rc = kvf_json_opt_object(root, "stream_options", &obj)))
		goto err;
	if (obj) {
		if (!r.stream) {
			rc = reject(root, "stream_options", "'stream_options' is only allowed when 'stream' is true");
			goto err;
		}
		if ((rc = kvf_json_opt_bool(obj, "include_usage", &r.include_usage)))
			goto err;
	}
	if (kind == KVF_OAI_COMPLETION) {
		i64 = -1;
		if ((rc = kvf_json_opt_int(root, "logprobs", 0, KVF_OAI_MAX_TOP_LOGPROBS, &i64)))
			goto err;
		if (i64 >= 0) {
			r.logprobs = 1;
			r.top_logprobs = (int)i64;
		}
	} else {
		if ((rc = kvf_json_opt_bool(root, "logprobs", &r.logprobs)))
			goto err;
		i64 = 0;
		if ((rc = kvf_json_opt_int(root, "top_logprobs", 0, KVF_OAI_MAX_TOP_LOGPROBS, &i64)))
			goto err;
		if (i64 > 0 && !r.logprobs) {
			rc = reject(root, "top_logprobs", "'top_logprobs' needs 'logprobs' set to true");
			goto err;
		}
		r.top_logprobs = (int)i64;
		if ((rc = kvf_json_opt_bool(root, "add_generation_prompt", &r.add_generation_prompt)))
			goto err;
	}
	if ((rc = kvf_json_opt_bool(root, "return_token_ids", &r.return_token_ids)) ||
	    (rc = kvf_json_opt_bool(root, "ignore_eos", &r.ignore_eos)) ||
	    (rc = kvf_json_opt_string(root, "user", &r.user)))
		goto err;
	*out = r;
	return 0;
err:
	kvf_free(r.prompt_ids);
	json_decref(r.root);
	return rc;
}

void kvf_oai_request_free(kvf_oai_request *req)
{
	if (!req)
		return;
	kvf_free(req->prompt_ids);
	json_decref(req->root);
	memset(req, 0, sizeof(*req));
}

/* ---- writing ---- */

void kvf_oai_make_id(kvf_oai_kind kind, char out[40])
{
	static _Thread_local uint64_t state;
	if (!state) {
		if (getrandom(&state, sizeof(state), 0) != sizeof(state))
			state = kvf_now_ns();
		state |= 1;
	}
	uint64_t a, b;
	/* xorshift64*: ids need uniqueness, not secrecy */
	state ^= state >> 12; state ^= state << 25; state ^= state >> 27;
	a = state * 0x2545F4914F6CDD1Dull;
	state ^= state >> 12; state ^= state << 25; state ^= state >> 27;
	b = state * 0x2545F4914F6CDD1Dull;
	snprintf(out, 40, "%s-%016llx%08llx", kind == KVF_OAI_CHAT ? "chatcmpl" : "cmpl", (unsigned long long)a,
		 (unsigned long long)(b >> 32));
}

static void put_str(kvf_buf *b, const char *s, size_t len)
{
	kvf_buf_put_json_str(b, s ? s : "", s ? len : 0);
}

static void put_cstr(kvf_buf *b, const char *s)
{
	put_str(b, s, s ? strlen(s) : 0);
}

/* A logprob as JSON: -inf becomes -9999.0, as OpenAI reports it. */
static void put_lp(kvf_buf *b, float lp)
{
	if (!isfinite(lp))
		kvf_buf_puts(b, "-9999.0");
	else
		kvf_buf_printf(b, "%.9g", (double)lp);
}

static void put_bytes(kvf_buf *b, const char *s)
{
	kvf_buf_putc(b, '[');
	for (size_t i = 0; s && s[i]; i++)
		kvf_buf_printf(b, "%s%u", i ? "," : "", (unsigned char)s[i]);
	kvf_buf_putc(b, ']');
}

static void put_ids(kvf_buf *b, const uint32_t *ids, size_t n)
{
	kvf_buf_putc(b, '[');
	for (size_t i = 0; i < n; i++)
		kvf_buf_printf(b, "%s%u", i ? "," : "", ids[i]);
	kvf_buf_putc(b, ']');
}

static void put_logprobs(kvf_buf *b, kvf_oai_kind kind, const kvf_oai_logprob *lp, size_t n)
{
	if (!lp) {
		kvf_buf_puts(b, "null");
		return;
	}
	if (kind == KVF_OAI_CHAT) {
		kvf_buf_puts(b, "{\"content\":[");
		for (size_t i = 0; i < n; i++) {
			kvf_buf_puts(b, i ? ",{\"token\":" : "{\"token\":");
			put_cstr(b, lp[i].token);
			kvf_buf_puts(b, ",\"logprob\":");
			put_lp(b, lp[i].logprob);
			kvf_buf_puts(b, ",\"bytes\":");
			put_bytes(b, lp[i].token);
			kvf_buf_puts(b, ",\"top_logprobs\":[");
			for (int j = 0; j < lp[i].n_top; j++) {
				kvf_buf_puts(b, j ? ",{\"token\":" : "{\"token\":");
				put_cstr(b, lp[i].top_token[j]);
				kvf_buf_puts(b, ",\"logprob\":");
				put_lp(b, lp[i].top_logprob[j]);
				kvf_buf_puts(b, ",\"bytes\":");
				put_bytes(b, lp[i].top_token[j]);
				kvf_buf_putc(b, '}');
			}
			kvf_buf_puts(b, "]}");
		}
		kvf_buf_puts(b, "]}");
		return;
	}
	/* completions: parallel arrays, offsets relative to this text */
	kvf_buf_puts(b, "{\"tokens\":[");
	for (size_t i = 0; i < n; i++) {
		if (i)
			kvf_buf_putc(b, ',');
		put_cstr(b, lp[i].token);
	}
	kvf_buf_puts(b, "],\"token_logprobs\":[");
	for (size_t i = 0; i < n; i++) {
		if (i)
			kvf_buf_putc(b, ',');
		put_lp(b, lp[i].logprob);
	}
	kvf_buf_puts(b, "],\"top_logprobs\":[");
	for (size_t i = 0; i < n; i++) {
		kvf_buf_puts(b, i ? ",{" : "{");
		for (int j = 0; j < lp[i].n_top; j++) {
			if (j)
				kvf_buf_putc(b, ',');
			put_cstr(b, lp[i].top_token[j]);
			kvf_buf_putc(b, ':');
			put_lp(b, lp[i].top_logprob[j]);
		}
		kvf_buf_putc(b, '}');
	}
	kvf_buf_puts(b, "],\"text_offset\":[");
	size_t off = 0;
	for (size_t i = 0; i < n; i++) {
		kvf_buf_printf(b, "%s%zu", i ? "," : "", off);
		off += lp[i].token ? strlen(lp[i].token) : 0;
	}
	kvf_buf_puts(b, "]}");
}

static void put_head(kvf_buf *b, const kvf_oai_resp *r, int chunk)
{
	const char *object = r->kind == KVF_OAI_CHAT ? (chunk ? "chat.completion.chunk" : "chat.completion")
						      : "text_completion";
	kvf_buf_puts(b, "{\"id\":");
	put_cstr(b, r->id);
	kvf_buf_printf(b, ",\"object\":\"%s\",\"created\":%llu,\"model\":", object, (unsigned long long)r->created);
	put_cstr(b, r->model);
}

static void put_usage(kvf_buf *b, const kvf_oai_usage *u)
{
	kvf_buf_printf(b,
		       "\"usage\":{\"prompt_tokens\":%lld,\"completion_tokens\":%lld,\"total_tokens\":%lld,"
		       "\"prompt_tokens_details\":{\"cached_tokens\":%lld}}",
		       (long long)u->prompt_tokens, (long long)u->completion_tokens,
		       (long long)(u->prompt_tokens + u->completion_tokens), (long long)u->cached_tokens);
}

static void put_finish(kvf_buf *b, const char *finish)
{
	kvf_buf_puts(b, ",\"finish_reason\":");
	if (finish)
		put_cstr(b, finish);
	else
		kvf_buf_puts(b, "null");
}

/* The one choice of a response or chunk, without its closing brace:
 * {"index":0, text or message/delta, "logprobs", "finish_reason", ids. */
static void put_choice(kvf_buf *out, const kvf_oai_resp *r, const char *chat_open, const char *text,
		       size_t text_len, const char *finish, const kvf_oai_logprob *lp, size_t n_lp,
		       const uint32_t *token_ids, size_t n_ids)
{
	kvf_buf_puts(out, ",\"choices\":[{\"index\":0,");
	kvf_buf_puts(out, r->kind == KVF_OAI_CHAT ? chat_open : "\"text\":");
	put_str(out, text, text_len);
	kvf_buf_puts(out, r->kind == KVF_OAI_CHAT ? "}," : ",");
	kvf_buf_puts(out, "\"logprobs\":");
	put_logprobs(out, r->kind, lp, n_lp);
	put_finish(out, finish);
	if (token_ids) {
		kvf_buf_puts(out, ",\"token_ids\":");
		put_ids(out, token_ids, n_ids);
	}
}

int kvf_oai_write_response(kvf_buf *out, const kvf_oai_resp *r, const char *text, size_t text_len,
			   const char *finish, const kvf_oai_logprob *lp, size_t n_lp,
			   const uint32_t *token_ids, size_t n_ids, const uint32_t *prompt_ids,
			   size_t n_prompt_ids, const kvf_oai_usage *usage)
{
	put_head(out, r, 0);
	put_choice(out, r, "\"message\":{\"role\":\"assistant\",\"content\":", text, text_len, finish, lp, n_lp,
		   token_ids, n_ids);
	if (prompt_ids) {
		kvf_buf_puts(out, ",\"prompt_token_ids\":");
		put_ids(out, prompt_ids, n_prompt_ids);
	}
	kvf_buf_puts(out, "}],");
	put_usage(out, usage);
	kvf_buf_putc(out, '}');
	return out->oom ? KVF_E_NOMEM : 0;
}

int kvf_oai_write_chunk(kvf_buf *out, const kvf_oai_resp *r, int first, const char *text, size_t text_len,
			const char *finish, const kvf_oai_logprob *lp, size_t n_lp, const uint32_t *token_ids,
			size_t n_ids)
{
	put_head(out, r, 1);
	put_choice(out, r, first ? "\"delta\":{\"role\":\"assistant\",\"content\":" : "\"delta\":{\"content\":",
		   text, text_len, finish, lp, n_lp, token_ids, n_ids);
	kvf_buf_puts(out, "}]}");
	return out->oom ? KVF_E_NOMEM : 0;
}

int kvf_oai_write_usage_chunk(kvf_buf *out, const kvf_oai_resp *r, const kvf_oai_usage *usage)
{
	put_head(out, r, 1);
	kvf_buf_puts(out, ",\"choices\":[],");
	put_usage(out, usage);
	kvf_buf_putc(out, '}');
	return out->oom ? KVF_E_NOMEM : 0;
}

int kvf_oai_write_models(kvf_buf *out, const char *const *models, size_t n, uint64_t created, const char *owner)
{
	kvf_buf_puts(out, "{\"object\":\"list\",\"data\":[");
	for (size_t i = 0; i < n; i++) {
		kvf_buf_puts(out, i ? ",{\"id\":" : "{\"id\":");
		put_cstr(out, models[i]);
		kvf_buf_printf(out, ",\"object\":\"model\",\"created\":%llu,\"owned_by\":", (unsigned long long)created);
		put_cstr(out, owner ? owner : "kvfabric");
		kvf_buf_putc(out, '}');
	}
	kvf_buf_puts(out, "]}");
	return out->oom ? KVF_E_NOMEM : 0;
}
