/*
 * serve.c: the OpenAI API of a worker, on the daemon's loop thread.
 *
 * A request is validated (common/openai.c), tokenized (chat template for
 * chat requests), keyed with the cluster's block keys and handed to the
 * engine thread; tokens come back in batches (worker_on_batch) and are
 * detokenized and written out: as SSE chunks while they arrive, or as one
 * JSON object at the end. The response headers carry the cache accounting
 * (x-kvf-cached-tokens, x-kvf-fetched-tokens, x-kvf-computed-tokens), so a
 * streaming response starts at the first token, when those are known.
 *
 * With stop strings, streamed text trails the generated text by the longest
 * stop string minus one byte, so a stop string is never half-sent; the engine
 * reports how much to cut when one matches.
 */
#include "worker/internal.h"

#include <stdio.h>
#include <string.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"
#include "common/kvf_json.h"
#include "common/kvf_log.h"
#include "common/kvf_time.h"

/* ---- small helpers ---- */

void worker_respond_error(kvf_http_req *req, int status, const char *message, const char *param,
			  const char *code)
{
	kvf_buf b = KVF_BUF_INIT;
	const char *type = status >= 500 ? "server_error" : status == 404 ? "not_found_error" : "invalid_request_error";
	kvf_json_openai_error(&b, message, type, param, code);
	kvf_http_respond(req, status, "application/json", NULL, b.data, b.len);
	kvf_buf_free(&b);
}

static void count_outcome(kvf_worker *w, int outcome)
{
	kvf_series_add(w->outcome[outcome], 1);
}

static size_t max_stop_len(const wreq *r)
{
	size_t m = 0;
	for (size_t i = 0; i < r->oai.n_stop; i++) {
		size_t l = strlen(r->oai.stop[i]);
		if (l > m)
			m = l;
	}
	return m;
}

void wreq_free(wreq *r)
{
	kvf_worker *w = r->w;
	if (r->prev)
		r->prev->next = r->next;
	else
		w->reqs = r->next;
	if (r->next)
		r->next->prev = r->prev;
	w->n_reqs--;
	if (r->on_finish_ud && r->free_ud)
		r->free_ud(r->on_finish_ud);
	kvf_oai_request_free(&r->oai);
	kvf_tok_ids_free(&r->prompt);
	kvf_free(r->keys);
	kvf_detok_destroy(r->detok);
	kvf_buf_free(&r->text);
	kvf_free(r->out_ids);
	kvf_free(r->lps);
	kvf_free(r->kv_blocks);
	for (size_t i = 0; i < r->n_lp_strings; i++)
		kvf_free(r->lp_strings[i]);
	kvf_free(r->lp_strings);
	kvf_free(r);
}

/* Frees r once neither the engine nor the HTTP side can reach it. */
void wreq_maybe_free(wreq *r)
{
	if (r->engine_done && (!r->cancel_sent || r->cancel_acked) && !r->http && !r->pull)
		wreq_free(r);
}

static void on_client_gone(kvf_http_req *req, void *ud)
{
	wreq *r = ud;
	kvf_http_end(req); /* releases it; the client is gone */
	r->http = NULL;
	if (r->pull) {
		count_outcome(r->w, OUTCOME_CANCELLED);
		pd_pull_abort(r); /* stops the outgoing prefill call; later stages see http gone */
		return;
	} else if (!r->engine_done && !r->cancel_sent) {
		r->cancel_sent = 1;
		ew_cancel(r->w->engine, &r->er);
		count_outcome(r->w, OUTCOME_CANCELLED);
	}
	wreq_maybe_free(r);
}

/* ---- request intake ---- */

static int tokenize_prompt(kvf_worker *w, wreq *r, kvf_http_req *req)
{
	/* tenants never share the tokenizer's segment cache (no timing probe) */
	uint64_t ns = kvf_tokenizer_cache_ns(r->tenant, strlen(r->tenant));
	const kvf_engine_info *info = ew_info(w->engine);
	int rc;
	if (r->oai.kind == KVF_OAI_CHAT) {
		json_t *vars = json_object();
		json_object_set_new(vars, "messages", kvf_oai_messages_flat(r->oai.messages));
		json_object_set_new(vars, "add_generation_prompt", json_boolean(r->oai.add_generation_prompt));
		char *text = NULL;
		size_t len = 0;
		rc = kvf_tokenizer_chat_render_json(w->tok, vars, &text, &len);
		json_decref(vars);
		if (rc == KVF_E_NOTFOUND) {
			worker_respond_error(req, 400, "this model has no chat template; use /v1/completions", "messages", NULL);
			return rc;
		}
		if (rc) {
			worker_respond_error(req, 400, kvf_errmsg(), "messages", NULL);
			return rc;
		}
		/* The template writes BOS itself: no post-processor (HF's
		 * apply_chat_template, vLLM's chat defaults). */
		rc = kvf_tokenizer_encode_ns(w->tok, text, len, 0, ns, &r->prompt);
		kvf_free(text);
	} else if (r->oai.prompt) {
		rc = kvf_tokenizer_encode_ns(w->tok, r->oai.prompt, strlen(r->oai.prompt), KVF_TOK_ADD_SPECIAL, ns,
					     &r->prompt);
	} else {
		rc = 0;
		for (size_t i = 0; i < r->oai.n_prompt_ids; i++) {
			if (r->oai.prompt_ids[i] >= (uint32_t)info->vocab_size) {
				char msg[160];
				snprintf(msg, sizeof(msg), "token id %u at prompt[%zu] is outside the vocabulary (%d ids)",
					 r->oai.prompt_ids[i], i, info->vocab_size);
				worker_respond_error(req, 400, msg, "prompt", NULL);
				return KVF_E_RANGE;
			}
		}
		r->prompt.n = 0;
		if (kvf_grow((void **)&r->prompt.ids, &r->prompt.cap, r->oai.n_prompt_ids, sizeof(uint32_t)))
			rc = KVF_E_NOMEM;
		else {
			memcpy(r->prompt.ids, r->oai.prompt_ids, r->oai.n_prompt_ids * sizeof(uint32_t));
			r->prompt.n = r->oai.n_prompt_ids;
		}
	}
	if (rc) {
		worker_respond_error(req, rc == KVF_E_NOMEM ? 500 : 400, kvf_errmsg(), "prompt", NULL);
		return rc;
	}
	if (r->prompt.n == 0) {
		worker_respond_error(req, 400, "the prompt is empty", r->oai.kind == KVF_OAI_CHAT ? "messages" : "prompt", NULL);
		return KVF_E_INVAL;
	}
	return 0;
}

static int check_lengths(kvf_worker *w, wreq *r, kvf_http_req *req)
{
	const kvf_engine_info *info = ew_info(w->engine);
	int64_t ctx = info->max_model_len;
	/* A request must also fit the KV pool on its own (prompt + output). */
	int64_t pool = (int64_t)info->kv_blocks * info->block_size;
	int pool_bound = pool < ctx;
	int64_t limit = pool_bound ? pool : ctx;
	int64_t np = (int64_t)r->prompt.n;
	const char *what = pool_bound ? "this worker's KV pool holds" : "This model's maximum context length is";
	char msg[320];
	if (np >= limit) {
		snprintf(msg, sizeof(msg), "%s %lld tokens. However, your prompt has %lld tokens and leaves no room to "
			 "generate.", what, (long long)limit, (long long)np);
		worker_respond_error(req, 400, msg, r->oai.kind == KVF_OAI_CHAT ? "messages" : "prompt", "context_length_exceeded");
		return KVF_E_RANGE;
	}
	if (r->oai.max_tokens < 0)
		r->oai.max_tokens = r->oai.kind == KVF_OAI_COMPLETION ? KVF_OAI_DEFAULT_MAX_TOKENS_COMPLETION : limit - np;
	if (r->oai.max_tokens > limit - np && r->oai.kind == KVF_OAI_COMPLETION &&
	    r->oai.max_tokens == KVF_OAI_DEFAULT_MAX_TOKENS_COMPLETION)
		r->oai.max_tokens = limit - np; /* the default, not the client's choice */
	if (np + r->oai.max_tokens > limit) {
		snprintf(msg, sizeof(msg), "%s %lld tokens. However, you requested %lld tokens (%lld in the prompt, %lld "
			 "for the completion). Reduce the prompt or max_tokens.", what, (long long)limit,
			 (long long)(np + r->oai.max_tokens), (long long)np, (long long)r->oai.max_tokens);
		worker_respond_error(req, 400, msg, "max_tokens", "context_length_exceeded");
		return KVF_E_RANGE;
	}
	return 0;
}

int wreq_build_params(kvf_worker *w, wreq *r)
{
	const kvf_engine_info *info = ew_info(w->engine);
	kvf_request_params *p = &r->er.params;
	kvf_request_params_init(p);
	p->prompt = r->prompt.ids;
	p->n_prompt = (int)r->prompt.n;
	/* Keys of the full blocks, salted by tenant like the gateway's. */
	p->root = kvf_blockkey_root(w->keys, w->model_name, r->tenant, strlen(r->tenant));
	p->has_root = 1;
	size_t nblk = r->prompt.n / (size_t)info->block_size;
	if (nblk) {
		r->keys = kvf_malloc(nblk * sizeof(*r->keys));
		if (!r->keys)
			return KVF_E_NOMEM;
		r->n_keys = (int)kvf_blockkey_chain(w->keys, p->root, r->prompt.ids, r->prompt.n,
						    (size_t)info->block_size, r->keys, nblk);
	}
	p->keys = r->keys;
	p->n_keys = r->n_keys;
	kvf_sampling_init(&p->sampling);
	p->sampling.temperature = (float)r->oai.temperature;
	p->sampling.top_p = (float)r->oai.top_p;
	p->sampling.top_k = r->oai.top_k > 0 ? (int)r->oai.top_k : 0;
	p->sampling.min_p = (float)r->oai.min_p;
	p->sampling.presence_penalty = (float)r->oai.presence_penalty;
	p->sampling.frequency_penalty = (float)r->oai.frequency_penalty;
	p->sampling.repetition_penalty = (float)r->oai.repetition_penalty;
	p->sampling.has_seed = r->oai.has_seed;
	p->sampling.seed = r->oai.seed;
	p->max_tokens = (int)r->oai.max_tokens;
	p->ignore_eos = r->oai.ignore_eos;
	for (size_t i = 0; i < r->oai.n_stop_token_ids && p->n_stop_ids < KVF_MAX_STOP_IDS; i++)
		p->stop_ids[p->n_stop_ids++] = r->oai.stop_token_ids[i];
	/* The tokenizer's end-of-turn ids end generation like EOS does. */
	for (size_t i = 0; !r->oai.ignore_eos && i < w->n_eos && p->n_stop_ids < KVF_MAX_STOP_IDS; i++)
		p->stop_ids[p->n_stop_ids++] = w->eos_ids[i];
	/* Stop strings are matched here, on the detokenized text, not by the
	 * engine on per-token pieces: a token's text depends on the ones before
	 * it (SentencePiece's leading space, bytes of one character spread
	 * over several tokens), and only the full decode gets that right. */
	p->logprobs = r->oai.logprobs;
	p->top_logprobs = r->oai.top_logprobs;
	p->user = r;
	return 0;
}

wreq *wreq_new(kvf_worker *w)
{
	wreq *r = kvf_calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->w = w;
	r->id = ++w->next_id;
	r->t_arrive_ns = kvf_now_ns();
	r->next = w->reqs;
	if (w->reqs)
		w->reqs->prev = r;
	w->reqs = r;
	w->n_reqs++;
	r->engine_done = 1; /* until submitted */
	return r;
}

void wreq_submit(wreq *r)
{
	r->engine_done = 0;
	ew_submit(r->w->engine, &r->er);
}

static void handle_generate(kvf_worker *w, kvf_http_req *req, kvf_oai_kind kind)
{
	size_t len;
	const char *body = kvf_http_req_body(req, &len);
	wreq *r = wreq_new(w);
	if (!r) {
		worker_respond_error(req, 500, "out of memory", NULL, NULL);
		return;
	}

	if (kvf_oai_parse(kind, body, len, &r->oai)) {
		worker_respond_error(req, 400, kvf_errmsg(), kvf_json_bad_param(), NULL);
		goto rejected;
	}
	if (strcmp(r->oai.model, w->model_name) != 0) {
		char msg[512];
		snprintf(msg, sizeof(msg), "The model `%.200s` does not exist. This worker serves `%.150s`.",
			 r->oai.model, w->model_name);
		worker_respond_error(req, 404, msg, "model", "model_not_found");
		goto rejected;
	}
	kvf_http_str tenant;
	if (kvf_http_req_header(req, "x-kvf-tenant", &tenant) == 0) {
		if (tenant.len >= sizeof(r->tenant)) {
			/* Truncating would merge tenants' caches and split them from
			 * the gateway's keys: refuse instead. */
			worker_respond_error(req, 400, "x-kvf-tenant is longer than 128 bytes", NULL, NULL);
			goto rejected;
		}
		memcpy(r->tenant, tenant.p, tenant.len);
		r->tenant[tenant.len] = '\0';
	}
	if (tokenize_prompt(w, r, req) || check_lengths(w, r, req))
		goto rejected;
	const ew_load *load = ew_loadfig(w->engine);
	if (atomic_load(&load->waiting) >= w->wcfg->max_waiting) {
		worker_respond_error(req, 503, "the worker is overloaded: too many queued requests", NULL, NULL);
		goto rejected;
	}
	if (wreq_build_params(w, r) || kvf_detok_create(w->tok, KVF_DETOK_SKIP_SPECIAL, &r->detok)) {
		worker_respond_error(req, 500, "out of memory", NULL, NULL);
		goto rejected;
	}
	kvf_oai_make_id(kind, r->resp_id);
	r->resp = (kvf_oai_resp){ kind, r->resp_id, w->model_name, kvf_wall_s() };
	r->hold = max_stop_len(r) ? max_stop_len(r) - 1 : 0;
	r->http = req;
	kvf_http_req_on_close(req, on_client_gone, r);
	kvf_series_add(kvf_metric_series(w->m[WM_PROMPT_TOKENS]), r->prompt.n);
	/* Disaggregated: the gateway named a prefill worker; the KV is pulled
	 * from it first and the request submitted with it (or, on any
	 * failure, computed here). */
	kvf_http_str pf;
	if (w->role == KVF_WORKER_DECODE && kvf_http_req_header(req, "x-kvf-prefill", &pf) == 0 && pf.len) {
		if (pd_pull_start(r, pf.p, pf.len) == 0)
			return;
	} else if (w->role == KVF_WORKER_DECODE && pd_holder_start(r) == 0) {
		return;
	}
	wreq_submit(r);
	return;

rejected:
	count_outcome(w, OUTCOME_REJECTED);
	wreq_free(r);
}

static void handle_models(kvf_worker *w, kvf_http_req *req)
{
	kvf_buf b = KVF_BUF_INIT;
	const char *models[1] = { w->model_name };
	kvf_oai_write_models(&b, models, 1, kvf_wall_s(), "kvfabric");
	kvf_http_respond(req, 200, "application/json", NULL, b.data, b.len);
	kvf_buf_free(&b);
}

void worker_serve_http(kvf_http_req *req, void *ud)
{
	kvf_worker *w = ud;
	if (pd_serve(w, req))
		return;
	kvf_http_str path = kvf_http_req_path(req);
	int method = kvf_http_req_method(req);
	int is_completions = kvf_http_str_eq(path, "/v1/completions");
	int is_chat = kvf_http_str_eq(path, "/v1/chat/completions");
	if (is_completions || is_chat) {
		if (method != KVF_HTTP_POST) {
			worker_respond_error(req, 405, "use POST", NULL, NULL);
		} else if (w->draining) {
			worker_respond_error(req, 503, "the worker is draining", NULL, NULL);
		} else {
			handle_generate(w, req, is_chat ? KVF_OAI_CHAT : KVF_OAI_COMPLETION);
		}
		return;
	}
	if (kvf_http_str_eq(path, "/v1/models")) {
		if (method == KVF_HTTP_GET || method == KVF_HTTP_HEAD)
			handle_models(w, req);
		else
			worker_respond_error(req, 405, "use GET", NULL, NULL);
		return;
	}
	worker_respond_error(req, 404, "no such route", NULL, NULL);
}

/* ---- results ---- */

/* Text token id adds after prev (KVF_TOKEN_NONE: none), as the full decode
 * sees it: decode(prev, id) minus decode(prev), so SentencePiece's leading
 * space survives. kvf_malloc'ed and kept with r (logprobs only). */
static const char *piece(wreq *r, uint32_t prev, uint32_t id)
{
	uint32_t ids[2] = { prev, id };
	int with_prev = prev != KVF_TOKEN_NONE;
	char *both = NULL, *head = NULL;
	size_t lb = 0, lh = 0;
	if (kvf_tokenizer_decode(r->w->tok, with_prev ? ids : ids + 1, with_prev ? 2 : 1, 0, &both, &lb) != 0)
		return "";
	if (with_prev && kvf_tokenizer_decode(r->w->tok, ids, 1, 0, &head, &lh) == 0 && lh <= lb &&
	    memcmp(both, head, lh) == 0)
		memmove(both, both + lh, lb - lh + 1);
	kvf_free(head);
	if (kvf_grow((void **)&r->lp_strings, &r->cap_lp_strings, r->n_lp_strings + 1, sizeof(char *))) {
		kvf_free(both);
		return "";
	}
	r->lp_strings[r->n_lp_strings++] = both;
	return both;
}

static void record_logprob(wreq *r, const kvf_event *ev)
{
	if (r->n_out == 0 || kvf_grow((void **)&r->lps, &r->cap_lps, r->n_out, sizeof(*r->lps)))
		return;
	/* The token before this one: the previous output, or the prompt's last. */
	uint32_t prev = r->n_out >= 2 ? r->out_ids[r->n_out - 2]
				      : r->prompt.n ? r->prompt.ids[r->prompt.n - 1] : KVF_TOKEN_NONE;
	kvf_oai_logprob *lp = &r->lps[r->n_out - 1];
	memset(lp, 0, sizeof(*lp));
	lp->token = piece(r, prev, ev->token);
	lp->logprob = ev->logprob;
	lp->n_top = ev->n_top < KVF_OAI_MAX_TOP_LOGPROBS ? ev->n_top : KVF_OAI_MAX_TOP_LOGPROBS;
	for (int j = 0; j < lp->n_top; j++) {
		lp->top_token[j] = piece(r, prev, ev->top_ids[j]);
		lp->top_logprob[j] = ev->top_logprobs[j];
	}
}

static void add_header_counts(const wreq *r, char vals[3][24], const char *hdr[10])
{
	int n = 0;
	snprintf(vals[0], 24, "%d", r->info.n_cached_tokens);
	snprintf(vals[1], 24, "%d", r->info.n_imported_tokens);
	snprintf(vals[2], 24, "%d", r->info.n_computed_tokens);
	hdr[n++] = "x-kvf-cached-tokens";
	hdr[n++] = vals[0];
	hdr[n++] = "x-kvf-fetched-tokens";
	hdr[n++] = vals[1];
	hdr[n++] = "x-kvf-computed-tokens";
	hdr[n++] = vals[2];
	if (r->prefill_ep[0]) { /* the KV came from this prefill worker */
		hdr[n++] = "x-kvf-prefill";
		hdr[n++] = r->prefill_ep;
	}
	hdr[n++] = NULL;
	hdr[n] = NULL;
}

static kvf_oai_usage usage_of(const wreq *r)
{
	kvf_oai_usage u = { (int64_t)r->prompt.n, (int64_t)r->n_out,
			    r->info.n_cached_tokens + r->info.n_imported_tokens };
	return u;
}

/* Streams text[sent .. len - hold), cut back to a UTF-8 boundary, with the
 * logprobs and ids of the tokens generated since the last chunk. */
static void stream_chunk(wreq *r, const char *finish)
{
	size_t upto = finish ? r->text.len : (r->text.len > r->hold ? r->text.len - r->hold : 0);
	if (upto < r->sent)
		upto = r->sent;
	while (!finish && upto > r->sent && ((unsigned char)r->text.data[upto] & 0xC0) == 0x80)
		upto--;
	int extras = (r->oai.logprobs || r->oai.return_token_ids) && r->lp_sent < r->n_out;
	if (upto == r->sent && !finish && !extras)
		return;
	size_t n_new = r->n_out - r->lp_sent;
	kvf_buf b = KVF_BUF_INIT;
	kvf_oai_write_chunk(&b, &r->resp, 0, r->text.data ? r->text.data + r->sent : "", upto - r->sent, finish,
			    r->oai.logprobs ? r->lps + r->lp_sent : NULL, r->oai.logprobs ? n_new : 0,
			    r->oai.return_token_ids ? r->out_ids + r->lp_sent : NULL,
			    r->oai.return_token_ids ? n_new : 0);
	kvf_http_send_sse(r->http, NULL, NULL, b.data, b.len);
	kvf_buf_free(&b);
	r->sent = upto;
	r->lp_sent = r->n_out;
}

static void begin_stream(wreq *r)
{
	char vals[3][24];
	const char *hdr[10];
	add_header_counts(r, vals, hdr);
	kvf_http_begin_sse(r->http, hdr);
	/* The first chunk carries the role (chat) even before any text. */
	kvf_buf b = KVF_BUF_INIT;
	kvf_oai_write_chunk(&b, &r->resp, 1, "", 0, NULL, NULL, 0, NULL, 0);
	kvf_http_send_sse(r->http, NULL, NULL, b.data, b.len);
	kvf_buf_free(&b);
	r->began = 1;
}

static void finish_response(wreq *r, const kvf_event *ev)
{
	kvf_worker *w = r->w;
	uint64_t now = kvf_now_ns();
	if (ev->finish == KVF_FINISH_ERROR) {
		count_outcome(w, OUTCOME_ERROR);
		char msg[300];
		snprintf(msg, sizeof(msg), "generation failed: %s", kvf_strerror(ev->error));
		int status = ev->error == KVF_E_RANGE ? 400 : 500;
		if (!r->began) {
			worker_respond_error(r->http, status, msg, NULL, NULL);
		} else {
			kvf_buf b = KVF_BUF_INIT;
			kvf_json_openai_error(&b, msg, "server_error", NULL, NULL);
			kvf_http_send_sse(r->http, NULL, NULL, b.data, b.len);
			kvf_http_end(r->http);
			kvf_buf_free(&b);
		}
		r->http = NULL;
		return;
	}
	const char *finish = ev->finish == KVF_FINISH_LENGTH ? "length" : "stop";
	const char *tail;
	size_t tail_len;
	/* Bytes the detokenizer held back (an unfinished character) end the
	 * text, unless a stop string already did. */
	if (!r->stop_matched && kvf_detok_flush(r->detok, &tail, &tail_len) == 0 && tail_len)
		kvf_buf_append(&r->text, tail, tail_len);
	kvf_oai_usage u = usage_of(r);
	if (r->oai.stream) {
		if (!r->began)
			begin_stream(r);
		stream_chunk(r, finish);
		if (r->oai.include_usage) {
			kvf_buf b = KVF_BUF_INIT;
			kvf_oai_write_usage_chunk(&b, &r->resp, &u);
			kvf_http_send_sse(r->http, NULL, NULL, b.data, b.len);
			kvf_buf_free(&b);
		}
		kvf_http_send_sse(r->http, NULL, NULL, "[DONE]", 6);
		kvf_http_end(r->http);
	} else {
		char vals[3][24];
		const char *hdr[10];
		add_header_counts(r, vals, hdr);
		kvf_buf b = KVF_BUF_INIT;
		kvf_oai_write_response(&b, &r->resp, r->text.data ? r->text.data : "", r->text.len, finish,
				       r->oai.logprobs ? r->lps : NULL, r->oai.logprobs ? r->n_out : 0,
				       r->oai.return_token_ids ? r->out_ids : NULL, r->n_out,
				       r->oai.return_token_ids ? r->prompt.ids : NULL, r->prompt.n, &u);
		kvf_http_respond(r->http, 200, "application/json", hdr, b.data, b.len);
		kvf_buf_free(&b);
	}
	r->http = NULL;
	r->finish = finish;
	count_outcome(w, OUTCOME_OK);
	kvf_series_add(kvf_metric_series(w->m[WM_GEN_TOKENS]), r->n_out);
	kvf_series_add(kvf_metric_series(w->m[WM_CACHED_TOKENS]), (uint64_t)r->info.n_cached_tokens);
	kvf_series_add(kvf_metric_series(w->m[WM_FETCHED_TOKENS]), (uint64_t)r->info.n_imported_tokens);
	kvf_series_add(kvf_metric_series(w->m[WM_COMPUTED_TOKENS]), (uint64_t)r->info.n_computed_tokens);
	kvf_metric_observe(w->m[WM_E2E], (double)(now - r->t_arrive_ns) / 1e9);
}

/* Looks for a stop string that ends in the text appended after `before`;
 * on a match cuts the text where the earliest one starts. */
static int stop_match(wreq *r, size_t before)
{
	size_t maxlen = max_stop_len(r);
	size_t from = before > maxlen ? before - maxlen + 1 : 0;
	size_t best = SIZE_MAX;
	for (size_t i = 0; i < r->oai.n_stop; i++) {
		size_t len = strlen(r->oai.stop[i]);
		const char *hit = memmem(r->text.data + from, r->text.len - from, r->oai.stop[i], len);
		if (hit && (size_t)(hit - r->text.data) < best)
			best = (size_t)(hit - r->text.data);
	}
	if (best == SIZE_MAX)
		return 0;
	r->text.len = best;
	r->text.data[best] = '\0';
	if (r->sent > best)
		r->sent = best; /* cannot happen: the stream trails by the longest stop */
	return 1;
}

/* A stop string matched: answer now and stop the engine's request. */
static void stop_here(wreq *r, const ew_event *e)
{
	kvf_event fin = e->ev;
	fin.finish = KVF_FINISH_STOP;
	fin.stop_index = -1;
	r->stop_matched = 1;
	r->cancel_sent = 1;
	ew_cancel(r->w->engine, &r->er);
	finish_response(r, &fin);
	wreq_maybe_free(r);
}

static void on_token(wreq *r, const ew_event *e)
{
	const kvf_event *ev = &e->ev;
	kvf_worker *w = r->w;
	uint64_t now = kvf_now_ns();
	r->info = e->info;
	if (ev->token != KVF_TOKEN_NONE) {
		if (r->n_out == 0) {
			r->t_first_ns = now;
			kvf_metric_observe(w->m[WM_TTFT], (double)(now - r->t_arrive_ns) / 1e9);
		} else {
			kvf_metric_observe(w->m[WM_ITL], (double)(now - r->t_last_ns) / 1e9);
		}
		r->t_last_ns = now;
		if (kvf_grow((void **)&r->out_ids, &r->cap_out, r->n_out + 1, sizeof(uint32_t)) == 0)
			r->out_ids[r->n_out++] = ev->token;
		if (r->oai.logprobs)
			record_logprob(r, ev);
		/* An EOS or stop id ends the text; it is not part of it. */
		int is_stop_token = ev->finish == KVF_FINISH_STOP && ev->stop_token != KVF_TOKEN_NONE &&
				    ev->stop_token == ev->token;
		if (!is_stop_token) {
			const char *t;
			size_t tl;
			size_t before = r->text.len;
			if (kvf_detok_step(r->detok, ev->token, &t, &tl) == 0 && tl) {
				kvf_buf_append(&r->text, t, tl);
				if (r->oai.n_stop && stop_match(r, before)) {
					stop_here(r, e);
					return;
				}
			}
		}
	}
	if (ev->finish != KVF_FINISH_NONE) {
		r->engine_done = 1;
		if (r->on_finish)
			r->on_finish(r, ev);
		else if (r->http)
			finish_response(r, ev);
		wreq_maybe_free(r);
		return;
	}
	if (r->http && r->oai.stream) {
		if (!r->began)
			begin_stream(r);
		stream_chunk(r, NULL);
	}
}

void worker_on_batch(void *ud, const ew_batch *b)
{
	kvf_worker *w = ud;
	if (b->n_blocks)
		dir_on_blocks(w, b->blocks, b->n_blocks);
	for (int i = 0; i < b->n_events; i++) {
		const ew_event *e = &b->events[i];
		wreq *r = e->user;
		if (e->kind == EW_CANCEL_ACK) {
			r->cancel_acked = 1;
			r->engine_done = 1;
			wreq_maybe_free(r);
			continue;
		}
		if (r->cancel_sent) {
			if (e->ev.finish != KVF_FINISH_NONE)
				r->engine_done = 1;
			wreq_maybe_free(r);
			continue;
		}
		on_token(r, e);
	}
}

void worker_free_all(kvf_worker *w)
{
	while (w->reqs) {
		if (w->reqs->http) {
			kvf_http_end(w->reqs->http);
			w->reqs->http = NULL;
		}
		wreq_free(w->reqs);
	}
}

void worker_cancel_all(kvf_worker *w)
{
	for (wreq *r = w->reqs; r; r = r->next) {
		if (!r->engine_done && !r->cancel_sent) {
			r->cancel_sent = 1;
			ew_cancel(w->engine, &r->er);
		}
	}
}
