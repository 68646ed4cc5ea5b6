/*
 * sched.c: requests and the continuous-batching scheduler.
 *
 * Three lists: waiting (FCFS; preempted requests go back to its head),
 * running (admission order), held (finished with hold_kv: KV kept for a
 * puller until kvf_engine_release). One step:
 *   1. running requests that decode (one token each), oldest first;
 *   2. running requests still prefilling, a chunk each, oldest first;
 *   3. admissions from the waiting head: prefix-cache match (or imported
 *      blocks), then a first chunk;
 * all within max_batch_tokens tokens and max_seqs sequences. When a running
 * request needs a block and the pool is dry, the most recently admitted
 * running request is preempted (its blocks released; cached ones stay
 * cached, so the recompute is often a prefix hit) and requeued at the head
 * of waiting. Admissions never preempt. Then one forward pass, and a token is
 * sampled for every request whose chunk reached its last known token.
 *
 * A request's tokens are prompt + generated; its sequence holds the KV of
 * all but the last one, which the next step computes (decode), so a
 * preempted request resumes by recomputing and loses nothing.
 */
#include <string.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"
#include "engine/internal.h"

enum { REQ_WAITING = 0, REQ_RUNNING = 1, REQ_HELD = 2 };

typedef struct kvf_req {
	uint64_t id;
	void *user;
	struct kvf_req *prev, *next;
	int state;
	uint32_t *tokens;
	int n_tokens, cap_tokens;
	int n_prompt;
	kvf_seq seq;
	kvf_blockkey *keys; /* prompt keys as given, then extended */
	int n_keys, cap_keys;
	kvf_blockkey root;
	bool has_root;
	kvf_sampling sp;
	kvf_rng rng;
	int max_tokens;
	bool ignore_eos;
	uint32_t stop_ids[KVF_MAX_STOP_IDS];
	int n_stop_ids;
	char *stop[KVF_MAX_STOP_STRINGS];
	size_t stop_len[KVF_MAX_STOP_STRINGS];
	int n_stop;
	size_t max_stop;
	char *tail; /* last bytes of the generated text */
	size_t tail_len, tail_cap;
	int logprobs, top_logprobs;
	bool hold_kv;
	int32_t *imp_blocks;
	int n_imp_blocks, n_imp_tokens;
	/* accounting */
	int n_generated;
	int n_cached, n_imported, n_computed, n_preempt;
} kvf_req;

/* ------------------------------------------------------------------------ */
/* lists                                                                    */

typedef struct {
	kvf_req **head, **tail;
	int *count;
} rlist;

static rlist list_of(kvf_engine *e, int state)
{
	if (state == REQ_WAITING)
		return (rlist){&e->waiting_head, &e->waiting_tail, &e->n_waiting};
	if (state == REQ_RUNNING)
		return (rlist){&e->running_head, &e->running_tail, &e->n_running};
	return (rlist){&e->held_head, NULL, NULL};
}

static void unlink_req(kvf_engine *e, kvf_req *r)
{
	rlist l = list_of(e, r->state);
	if (r->prev)
		r->prev->next = r->next;
	else
		*l.head = r->next;
	if (r->next)
		r->next->prev = r->prev;
	else if (l.tail)
		*l.tail = r->prev;
	if (l.count)
		(*l.count)--;
	r->prev = r->next = NULL;
}

static void push_back(kvf_engine *e, kvf_req *r, int state)
{
	r->state = state;
	rlist l = list_of(e, state);
	r->next = NULL;
	if (l.tail) {
		r->prev = *l.tail;
		if (*l.tail)
			(*l.tail)->next = r;
		else
			*l.head = r;
		*l.tail = r;
	} else {
		/* held: no tail pointer, push front */
		r->prev = NULL;
		r->next = *l.head;
		if (*l.head)
			(*l.head)->prev = r;
		*l.head = r;
	}
	if (l.count)
		(*l.count)++;
}

static void push_front(kvf_engine *e, kvf_req *r, int state)
{
	r->state = state;
	rlist l = list_of(e, state);
	r->prev = NULL;
	r->next = *l.head;
	if (*l.head)
		(*l.head)->prev = r;
	*l.head = r;
	if (l.tail && !*l.tail)
		*l.tail = r;
	if (l.count)
		(*l.count)++;
}

static kvf_req *find_req(const kvf_engine *e, uint64_t id)
{
	kvf_req *heads[3] = {e->waiting_head, e->running_head, e->held_head};
	for (int i = 0; i < 3; i++)
		for (kvf_req *r = heads[i]; r; r = r->next)
			if (r->id == id)
				return r;
	return NULL;
}

static void free_req(kvf_engine *e, kvf_req *r)
{
	kvf_seq_fini(&r->seq);
	for (int i = 0; i < r->n_imp_blocks; i++)
		kvf_kvpool_release(e, r->imp_blocks[i]);
	kvf_free(r->imp_blocks);
	for (int i = 0; i < r->n_stop; i++)
		kvf_free(r->stop[i]);
	kvf_free(r->tail);
	kvf_free(r->tokens);
	kvf_free(r->keys);
	kvf_free(r);
}

void kvf_sched_fini(kvf_engine *e)
{
	kvf_req *heads[3] = {e->waiting_head, e->running_head, e->held_head};
	for (int i = 0; i < 3; i++)
		for (kvf_req *r = heads[i], *n; r; r = n) {
			n = r->next;
			free_req(e, r);
		}
	e->waiting_head = e->waiting_tail = e->running_head = e->running_tail = NULL;
	e->held_head = NULL;
	kvf_free(e->s_reqs);
	kvf_free(e->s_seqs);
	kvf_free(e->s_toks);
	kvf_free(e->s_n);
	kvf_free(e->s_want);
	e->s_reqs = NULL;
	e->s_seqs = NULL;
	e->s_toks = NULL;
	e->s_n = e->s_want = NULL;
}

static int sched_arrays(kvf_engine *e)
{
	if (e->s_reqs)
		return 0;
	size_t n = (size_t)e->max_seqs;
	e->s_reqs = kvf_malloc(n * sizeof *e->s_reqs);
	e->s_seqs = kvf_malloc(n * sizeof *e->s_seqs);
	e->s_toks = kvf_malloc(n * sizeof *e->s_toks);
	e->s_n = kvf_malloc(n * sizeof *e->s_n);
	e->s_want = kvf_malloc(n * sizeof *e->s_want);
	if (!e->s_reqs || !e->s_seqs || !e->s_toks || !e->s_n || !e->s_want)
		return KVF_E_NOMEM;
	return 0;
}

/* ------------------------------------------------------------------------ */
/* submit                                                                   */

void kvf_request_params_init(kvf_request_params *p)
{
	memset(p, 0, sizeof *p);
	kvf_sampling_init(&p->sampling);
}

const char *kvf_finish_name(kvf_finish f)
{
	switch (f) {
	case KVF_FINISH_LENGTH: return "length";
	case KVF_FINISH_STOP: return "stop";
	case KVF_FINISH_CANCEL: return "cancel";
	case KVF_FINISH_ERROR: return "error";
	default: return "none";
	}
}

static int validate(const kvf_engine *e, const kvf_request_params *p)
{
	int bs = e->block_size;
	if (!p->prompt || p->n_prompt < 1)
		return kvf_errf(KVF_E_INVAL, "request: empty prompt");
	for (int i = 0; i < p->n_prompt; i++)
		if (p->prompt[i] >= (uint32_t)e->cfg.vocab)
			return kvf_errf(KVF_E_RANGE, "request: prompt token %u >= vocab size %d",
					p->prompt[i], e->cfg.vocab);
	if (p->n_prompt >= e->max_model_len)
		return kvf_errf(KVF_E_RANGE,
				"request: prompt of %d tokens does not fit the context of %d",
				p->n_prompt, e->max_model_len);
	if (p->max_tokens < 0 || p->n_prompt + p->max_tokens > e->max_model_len)
		return kvf_errf(KVF_E_RANGE,
				"request: prompt (%d) + max_tokens (%d) exceeds the context of %d",
				p->n_prompt, p->max_tokens, e->max_model_len);
	int total = p->n_prompt + (p->max_tokens ? p->max_tokens : e->max_model_len - p->n_prompt);
	if ((total + bs - 1) / bs > e->pool.n_blocks)
		return kvf_errf(KVF_E_RANGE, "request: %d tokens need more than the %d-block pool",
				total, e->pool.n_blocks);
	const kvf_sampling *s = &p->sampling;
	if (!(s->temperature >= 0) || !(s->top_p > 0 && s->top_p <= 1) ||
	    !(s->min_p >= 0 && s->min_p <= 1) || s->top_k < -1 || !(s->repetition_penalty > 0))
		return kvf_errf(KVF_E_INVAL, "request: sampling parameters out of range");
	if (p->top_logprobs < 0 || p->top_logprobs > KVF_MAX_TOP_LOGPROBS)
		return kvf_errf(KVF_E_INVAL, "request: top_logprobs must be 0..%d",
				KVF_MAX_TOP_LOGPROBS);
	if (p->n_stop_ids < 0 || p->n_stop_ids > KVF_MAX_STOP_IDS || p->n_stop < 0 ||
	    p->n_stop > KVF_MAX_STOP_STRINGS)
		return kvf_errf(KVF_E_INVAL, "request: too many stop ids/strings");
	if (p->n_stop && !e->opts.token_piece)
		return kvf_errf(KVF_E_INVAL, "request: stop strings need the engine's token_piece");
	if (p->n_keys < 0 || p->n_keys > p->n_prompt / bs || (p->n_keys && !p->keys))
		return kvf_errf(KVF_E_INVAL, "request: %d keys for a prompt of %d full blocks",
				p->n_keys, p->n_prompt / bs);
	if (p->n_kv_tokens < 0 || p->n_kv_tokens > p->n_prompt ||
	    p->n_kv_blocks != (p->n_kv_tokens + bs - 1) / bs || (p->n_kv_blocks && !p->kv_blocks))
		return kvf_errf(KVF_E_INVAL, "request: %d kv blocks for %d imported tokens",
				p->n_kv_blocks, p->n_kv_tokens);
	for (int i = 0; i < p->n_kv_blocks; i++)
		if (p->kv_blocks[i] < 0 || p->kv_blocks[i] >= e->pool.n_blocks ||
		    e->pool.meta[p->kv_blocks[i]].ref <= 0)
			return kvf_errf(KVF_E_STATE, "request: kv block %d is not referenced",
					p->kv_blocks[i]);
	return 0;
}

int kvf_engine_submit(kvf_engine *e, const kvf_request_params *p, uint64_t *id)
{
	int rc = validate(e, p);
	kvf_req *r = NULL;
	if (rc)
		goto err_blocks;
	if ((rc = sched_arrays(e)))
		goto err_blocks;
	r = kvf_calloc(1, sizeof *r);
	if (!r) {
		rc = KVF_E_NOMEM;
		goto err_blocks;
	}
	kvf_seq_init(&r->seq, e);
	r->user = p->user;
	r->n_prompt = p->n_prompt;
	r->max_tokens = p->max_tokens ? p->max_tokens : e->max_model_len - p->n_prompt;
	r->cap_tokens = p->n_prompt + (r->max_tokens < 64 ? r->max_tokens : 64) + 1;
	r->tokens = kvf_malloc((size_t)r->cap_tokens * sizeof *r->tokens);
	if (!r->tokens)
		goto err_nomem;
	memcpy(r->tokens, p->prompt, (size_t)p->n_prompt * sizeof *r->tokens);
	r->n_tokens = p->n_prompt;
	if (p->n_keys) {
		r->keys = kvf_malloc((size_t)p->n_keys * sizeof *r->keys);
		if (!r->keys)
			goto err_nomem;
		memcpy(r->keys, p->keys, (size_t)p->n_keys * sizeof *r->keys);
		r->n_keys = r->cap_keys = p->n_keys;
	}
	r->root = p->root;
	r->has_root = p->has_root;
	r->sp = p->sampling;
	kvf_rng_seed(&r->rng, p->sampling.has_seed ? p->sampling.seed : kvf_rng_next(&e->rng));
	r->ignore_eos = p->ignore_eos;
	memcpy(r->stop_ids, p->stop_ids, sizeof r->stop_ids);
	r->n_stop_ids = p->n_stop_ids;
	for (int i = 0; i < p->n_stop; i++) {
		if (!p->stop[i] || !*p->stop[i])
			continue;
		r->stop[r->n_stop] = kvf_strdup(p->stop[i]);
		if (!r->stop[r->n_stop])
			goto err_nomem;
		r->stop_len[r->n_stop] = strlen(p->stop[i]);
		if (r->stop_len[r->n_stop] > r->max_stop)
			r->max_stop = r->stop_len[r->n_stop];
		r->n_stop++;
	}
	if (r->n_stop) {
		r->tail_cap = r->max_stop + 256;
		r->tail = kvf_malloc(r->tail_cap);
		if (!r->tail)
			goto err_nomem;
	}
	r->logprobs = p->logprobs;
	r->top_logprobs = p->top_logprobs;
	r->hold_kv = p->hold_kv;
	if (p->n_kv_blocks) {
		r->imp_blocks = kvf_malloc((size_t)p->n_kv_blocks * sizeof *r->imp_blocks);
		if (!r->imp_blocks)
			goto err_nomem;
		memcpy(r->imp_blocks, p->kv_blocks, (size_t)p->n_kv_blocks * sizeof *r->imp_blocks);
		r->n_imp_blocks = p->n_kv_blocks;
		r->n_imp_tokens = p->n_kv_tokens;
	}
	r->id = e->next_req_id++;
	push_back(e, r, REQ_WAITING);
	*id = r->id;
	return 0;

err_nomem:
	rc = KVF_E_NOMEM;
	bool took = r->n_imp_blocks > 0;
	free_req(e, r); /* releases the imported blocks if it took them */
	if (took)
		return rc;
err_blocks:
	/* the imported references are ours even on failure: drop them */
	for (int i = 0; i < p->n_kv_blocks && p->kv_blocks; i++)
		kvf_engine_kv_release(e, p->kv_blocks[i]);
	return rc;
}

/* ------------------------------------------------------------------------ */
/* step                                                                     */

static int emit(kvf_engine *e, kvf_event **out)
{
	size_t cap = (size_t)e->cap_events;
	void *arr = e->events;
	if (kvf_grow(&arr, &cap, (size_t)e->n_events + 1, sizeof *e->events))
		return KVF_E_NOMEM;
	e->events = arr;
	e->cap_events = (int)cap;
	*out = &e->events[e->n_events++];
	memset(*out, 0, sizeof **out);
	(*out)->token = KVF_TOKEN_NONE;
	(*out)->stop_token = KVF_TOKEN_NONE;
	(*out)->stop_index = -1;
	return 0;
}

/* Keys the request's full blocks as far as its tokens go (block_key fn). */
static void extend_keys(kvf_engine *e, kvf_req *r)
{
	int bs = e->block_size;
	if (!e->opts.block_key || (!r->n_keys && !r->has_root))
		return;
	int full = r->n_tokens / bs;
	while (r->n_keys < full) {
		size_t cap = (size_t)r->cap_keys;
		void *arr = r->keys;
		if (kvf_grow(&arr, &cap, (size_t)r->n_keys + 1, sizeof *r->keys))
			return;
		r->keys = arr;
		r->cap_keys = (int)cap;
		kvf_blockkey parent = r->n_keys ? r->keys[r->n_keys - 1] : r->root;
		r->keys[r->n_keys] = e->opts.block_key(e->opts.block_key_user, parent,
						       r->tokens + (size_t)r->n_keys * bs,
						       (size_t)bs);
		r->n_keys++;
	}
	/* the sequence caches what it computes under these keys */
	if (r->seq.n_keys < r->n_keys)
		for (int i = r->seq.n_keys; i < r->n_keys; i++)
			if (kvf_seq_push_key(&r->seq, r->keys[i]))
				return;
}

static void preempt(kvf_engine *e, kvf_req *r)
{
	unlink_req(e, r);
	kvf_seq_reset(&r->seq);
	r->n_preempt++;
	push_front(e, r, REQ_WAITING);
}

/* Prefix match / imported blocks for a request leaving the waiting queue. */
static int admit(kvf_engine *e, kvf_req *r)
{
	int rc;
	kvf_seq *s = &r->seq;
	extend_keys(e, r);
	if ((rc = kvf_seq_set_keys(s, r->keys, r->n_keys)))
		return rc;
	if (r->n_imp_blocks) {
		rc = kvf_seq_attach(s, r->imp_blocks, r->n_imp_blocks, r->n_imp_tokens);
		if (rc)
			return rc;
		r->n_imported = r->n_imp_tokens;
		kvf_free(r->imp_blocks);
		r->imp_blocks = NULL;
		r->n_imp_blocks = 0;
		/* imported full blocks with keys enter the prefix cache */
		kvf_seq_register(s);
	} else {
		int got = kvf_seq_match_prefix(s, r->n_tokens);
		if (r->n_preempt == 0)
			r->n_cached = got;
	}
	/* at least the last token is computed: it yields the logits */
	if (s->len >= r->n_tokens) {
		if ((rc = kvf_seq_truncate(s, r->n_tokens - 1)))
			return rc;
		if (r->n_preempt == 0 && r->n_cached > s->len)
			r->n_cached = s->len;
		if (r->n_imported > s->len)
			r->n_imported = s->len;
	}
	return 0;
}

static int add_to_batch(kvf_engine *e, int *nb, kvf_req *r, int c)
{
	int need = r->n_tokens - r->seq.len;
	int i = (*nb)++;
	e->s_reqs[i] = r;
	e->s_seqs[i] = &r->seq;
	e->s_toks[i] = r->tokens + r->seq.len;
	e->s_n[i] = c;
	e->s_want[i] = c == need ? 1 : 0;
	if (r->seq.len < r->n_prompt) {
		int pc = r->n_prompt - r->seq.len;
		r->n_computed += c < pc ? c : pc;
	}
	return c;
}

static bool in_batch(kvf_engine *e, int nb, const kvf_req *r)
{
	for (int i = 0; i < nb; i++)
		if (e->s_reqs[i] == r)
			return true;
	return false;
}

/* Reserves c tokens for a running request, preempting newer ones if the
 * pool is dry. Returns false when r itself had to be preempted. */
static bool reserve_running(kvf_engine *e, kvf_req *r, int c, int nb)
{
	for (;;) {
		int rc = kvf_seq_reserve(&r->seq, c);
		if (rc == 0)
			return true;
		kvf_req *victim = e->running_tail;
		while (victim && victim != r && in_batch(e, nb, victim))
			victim = victim->prev;
		if (!victim || victim == r) {
			preempt(e, r);
			return false;
		}
		preempt(e, victim);
	}
}

static bool stop_matches(kvf_engine *e, kvf_req *r, uint32_t tok, kvf_event *ev)
{
	int len = e->opts.token_piece(e->opts.token_piece_user, tok, e->piece_buf, 256);
	if (len <= 0)
		return false;
	if ((size_t)len > 256)
		len = 256;
	size_t old = r->tail_len;
	memcpy(r->tail + old, e->piece_buf, (size_t)len);
	r->tail_len += (size_t)len;
	size_t best = (size_t)-1;
	int best_i = -1;
	for (int i = 0; i < r->n_stop; i++) {
		size_t sl = r->stop_len[i];
		if (sl > r->tail_len)
			continue;
		size_t from = old + 1 > sl ? old + 1 - sl : 0;
		for (size_t p = from; p + sl <= r->tail_len; p++)
			if (!memcmp(r->tail + p, r->stop[i], sl)) {
				if (p < best) {
					best = p;
					best_i = i;
				}
				break;
			}
	}
	if (best_i >= 0) {
		ev->stop_index = best_i;
		ev->stop_trim_bytes = (int)(r->tail_len - best);
		return true;
	}
	/* keep what a later match could still start in */
	size_t keep = r->max_stop > 1 ? r->max_stop - 1 : 0;
	if (r->tail_len > keep) {
		memmove(r->tail, r->tail + r->tail_len - keep, keep);
		r->tail_len = keep;
	}
	return false;
}

static void finish(kvf_engine *e, kvf_req *r)
{
	unlink_req(e, r);
	if (r->hold_kv) {
		push_back(e, r, REQ_HELD);
		return;
	}
	free_req(e, r);
}

static int append_token(kvf_req *r, uint32_t tok)
{
	if (r->n_tokens == r->cap_tokens) {
		size_t cap = (size_t)r->cap_tokens;
		void *arr = r->tokens;
		if (kvf_grow(&arr, &cap, cap + 1, sizeof *r->tokens))
			return KVF_E_NOMEM;
		r->tokens = arr;
		r->cap_tokens = (int)cap;
	}
	r->tokens[r->n_tokens++] = tok;
	return 0;
}

int kvf_engine_step(kvf_engine *e, const kvf_event **events, int *n_events)
{
	int rc;
	e->n_events = 0;
	*events = e->events;
	*n_events = 0;
	if ((rc = sched_arrays(e)))
		return rc;
	int budget = e->max_batch_tokens, nb = 0;

	/* 1 + 2: running requests, decoders first */
	for (int pass = 0; pass < 2; pass++) {
		kvf_req *r = e->running_head;
		while (r && nb < e->max_seqs && budget > 0) {
			kvf_req *next = r->next;
			int need = r->n_tokens - r->seq.len;
			bool decoding = need == 1;
			if (decoding == (pass == 0) && !in_batch(e, nb, r)) {
				int c = need < budget ? need : budget;
				if (reserve_running(e, r, c, nb))
					budget -= add_to_batch(e, &nb, r, c);
				/* victims come from the tail: if r itself was preempted,
				 * everything after it is gone or already batched */
				next = r->state == REQ_RUNNING ? r->next : NULL;
			}
			r = next;
		}
	}
	/* 3: admissions */
	while (e->waiting_head && nb < e->max_seqs && budget > 0) {
		kvf_req *r = e->waiting_head;
		if ((rc = admit(e, r))) {
			kvf_seq_reset(&r->seq);
			if (rc == KVF_E_FULL)
				break;
			/* a request that cannot run: end it with an error */
			kvf_event *ev;
			unlink_req(e, r);
			if (emit(e, &ev) == 0) {
				ev->req = r->id;
				ev->user = r->user;
				ev->finish = KVF_FINISH_ERROR;
				ev->error = rc;
			}
			free_req(e, r);
			continue;
		}
		int need = r->n_tokens - r->seq.len;
		int c = need < budget ? need : budget;
		if (kvf_seq_reserve(&r->seq, c)) {
			kvf_seq_reset(&r->seq);
			break;
		}
		unlink_req(e, r);
		push_back(e, r, REQ_RUNNING);
		budget -= add_to_batch(e, &nb, r, c);
	}
	if (nb == 0) {
		*events = e->events;
		*n_events = e->n_events;
		return 0;
	}

	rc = kvf_engine_pass(e, e->s_seqs, e->s_toks, e->s_n, e->s_want, nb, e->logits_host);
	if (rc)
		return rc;

	size_t V = (size_t)e->cfg.vocab;
	int row = 0;
	for (int i = 0; i < nb; i++) {
		if (!e->s_want[i])
			continue;
		kvf_req *r = e->s_reqs[i];
		float *lg = e->logits_host + (size_t)row++ * V;
		kvf_event *ev;
		if ((rc = emit(e, &ev)))
			return rc;
		ev->req = r->id;
		ev->user = r->user;
		int ntop = r->top_logprobs < (int)V ? r->top_logprobs : (int)V;
		uint32_t tok = kvf_sampler_sample(&e->sampler, lg, &r->sp, &r->rng, r->tokens,
						  r->n_tokens, r->n_prompt, r->logprobs, ntop,
						  &ev->logprob, ev->top_ids, ev->top_logprobs);
		ev->n_top = ntop;
		ev->token = tok;
		if ((rc = append_token(r, tok))) {
			ev->finish = KVF_FINISH_ERROR;
			ev->error = rc;
			finish(e, r);
			continue;
		}
		r->n_generated++;
		bool stop = false;
		if (!r->ignore_eos)
			for (int j = 0; j < e->cfg.n_eos; j++)
				if (tok == e->cfg.eos_ids[j])
					stop = true;
		for (int j = 0; j < r->n_stop_ids; j++)
			if (tok == r->stop_ids[j])
				stop = true;
		if (stop)
			ev->stop_token = tok;
		else if (r->n_stop && stop_matches(e, r, tok, ev))
			stop = true;
		if (stop)
			ev->finish = KVF_FINISH_STOP;
		else if (r->n_generated >= r->max_tokens || r->n_tokens >= e->max_model_len)
			ev->finish = KVF_FINISH_LENGTH;
		if (ev->finish != KVF_FINISH_NONE)
			finish(e, r);
		else
			extend_keys(e, r);
	}
	*events = e->events;
	*n_events = e->n_events;
	return 0;
}

/* ------------------------------------------------------------------------ */
/* queries                                                                  */

void kvf_engine_load(const kvf_engine *e, int *waiting, int *running)
{
	*waiting = e->n_waiting;
	*running = e->n_running;
}

int kvf_engine_cancel(kvf_engine *e, uint64_t id)
{
	kvf_req *r = find_req(e, id);
	if (!r)
		return kvf_errf(KVF_E_NOTFOUND, "request %llu not found", (unsigned long long)id);
	unlink_req(e, r);
	free_req(e, r);
	return 0;
}

int kvf_engine_release(kvf_engine *e, uint64_t id)
{
	kvf_req *r = find_req(e, id);
	if (!r || r->state != REQ_HELD)
		return kvf_errf(KVF_E_NOTFOUND, "request %llu is not held", (unsigned long long)id);
	unlink_req(e, r);
	free_req(e, r);
	return 0;
}

int kvf_engine_request_info(const kvf_engine *e, uint64_t id, kvf_request_info *o)
{
	const kvf_req *r = find_req(e, id);
	if (!r)
		return kvf_errf(KVF_E_NOTFOUND, "request %llu not found", (unsigned long long)id);
	memset(o, 0, sizeof *o);
	o->state = r->state;
	o->n_prompt = r->n_prompt;
	o->n_generated = r->n_generated;
	o->n_cached_tokens = r->n_cached;
	o->n_imported_tokens = r->n_imported;
	o->n_computed_tokens = r->n_computed;
	o->n_preemptions = r->n_preempt;
	o->n_blocks = r->seq.n_blocks;
	return 0;
}

int kvf_engine_request_blocks(const kvf_engine *e, uint64_t id, const int32_t **blocks,
			      int *n_blocks, int *n_tokens)
{
	const kvf_req *r = find_req(e, id);
	if (!r)
		return kvf_errf(KVF_E_NOTFOUND, "request %llu not found", (unsigned long long)id);
	*blocks = r->seq.blocks;
	*n_blocks = (r->seq.len + e->block_size - 1) / e->block_size;
	*n_tokens = r->seq.len;
	return 0;
}

int kvf_engine_request_tokens(const kvf_engine *e, uint64_t id, const uint32_t **tokens, int *n)
{
	const kvf_req *r = find_req(e, id);
	if (!r)
		return kvf_errf(KVF_E_NOTFOUND, "request %llu not found", (unsigned long long)id);
	*tokens = r->tokens;
	*n = r->n_tokens;
	return 0;
}
