/*
 * worker.c: building a worker (tokenizer, engine thread, metrics, admin
 * commands, HTTP handler) and the daemon main both worker roles share.
 */
#include "worker/internal.h"

#include <libgen.h>
#include <stdio.h>
#include <string.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"
#include "common/kvf_log.h"
#include "common/kvf_time.h"

static const char *const outcome_names[OUTCOME_N] = { "ok", "error", "cancelled", "rejected" };
static const char *const kv_state_names[3] = { "used", "cached_idle", "empty" };

static const kvf_metric_def worker_metrics[WM_N] = {
	[WM_REQUESTS] = { "kvf_worker_requests_total", KVF_METRIC_COUNTER,
			  "API requests by outcome (ok, error, cancelled by the client, rejected before running)",
			  "outcome", NULL, 0 },
	[WM_PROMPT_TOKENS] = { "kvf_worker_prompt_tokens_total", KVF_METRIC_COUNTER, "Prompt tokens of accepted requests", NULL, NULL, 0 },
	[WM_GEN_TOKENS] = { "kvf_worker_generation_tokens_total", KVF_METRIC_COUNTER, "Generated tokens", NULL, NULL, 0 },
	[WM_CACHED_TOKENS] = { "kvf_worker_cached_tokens_total", KVF_METRIC_COUNTER,
			       "Prompt tokens found in this worker's prefix cache", NULL, NULL, 0 },
	[WM_FETCHED_TOKENS] = { "kvf_worker_fetched_tokens_total", KVF_METRIC_COUNTER,
				"Prompt tokens whose KV was pulled over the fabric", NULL, NULL, 0 },
	[WM_COMPUTED_TOKENS] = { "kvf_worker_computed_tokens_total", KVF_METRIC_COUNTER,
				 "Prompt tokens computed here (recomputation included)", NULL, NULL, 0 },
	[WM_TTFT] = { "kvf_worker_time_to_first_token_seconds", KVF_METRIC_HISTOGRAM,
		      "Arrival to first generated token", NULL, kvf_buckets_ttft_s, KVF_BUCKETS_TTFT_S_N },
	[WM_ITL] = { "kvf_worker_inter_token_latency_seconds", KVF_METRIC_HISTOGRAM,
		     "Time between consecutive generated tokens", NULL, kvf_buckets_itl_s, KVF_BUCKETS_ITL_S_N },
	[WM_E2E] = { "kvf_worker_e2e_request_latency_seconds", KVF_METRIC_HISTOGRAM, "Arrival to last byte",
		     NULL, kvf_buckets_e2e_s, KVF_BUCKETS_E2E_S_N },
	[WM_WAITING] = { "kvf_worker_requests_waiting", KVF_METRIC_GAUGE, "Requests queued in the engine", NULL, NULL, 0 },
	[WM_RUNNING] = { "kvf_worker_requests_running", KVF_METRIC_GAUGE, "Requests in the running batch", NULL, NULL, 0 },
	[WM_KV_USAGE] = { "kvf_worker_kv_usage_ratio", KVF_METRIC_GAUGE,
			  "Fraction of KV blocks referenced by requests (0..1)", NULL, NULL, 0 },
	[WM_KV_BLOCKS] = { "kvf_worker_kv_blocks", KVF_METRIC_GAUGE, "KV blocks by state", "state", NULL, 0 },
	[WM_PREFIX_HIT] = { "kvf_worker_prefix_cache_hit_ratio", KVF_METRIC_GAUGE,
			    "Prefix-cache block hits / lookups since start", NULL, NULL, 0 },
	[WM_PREEMPTIONS] = { "kvf_worker_preemptions_total", KVF_METRIC_COUNTER,
			     "Requests preempted (recomputed) when KV blocks ran out", NULL, NULL, 0 },
	[WM_VLLM_WAITING] = { "vllm:num_requests_waiting", KVF_METRIC_GAUGE,
			      "Requests waiting (vLLM name, scraped by the Gateway API Inference Extension)", NULL, NULL, 0 },
	[WM_VLLM_RUNNING] = { "vllm:num_requests_running", KVF_METRIC_GAUGE, "Requests running (vLLM name)", NULL, NULL, 0 },
	[WM_VLLM_KV] = { "vllm:kv_cache_usage_perc", KVF_METRIC_GAUGE,
			 "KV cache usage, 0..1 (vLLM name)", NULL, NULL, 0 },
};

static void collect(void *ud)
{
	kvf_worker *w = ud;
	const ew_load *l = ew_loadfig(w->engine);
	int waiting = atomic_load(&l->waiting), running = atomic_load(&l->running);
	int total = atomic_load(&l->kv_total), used = atomic_load(&l->kv_used), cached = atomic_load(&l->kv_cached);
	double usage = total ? (double)used / total : 0;
	kvf_metric_set(w->m[WM_WAITING], waiting);
	kvf_metric_set(w->m[WM_RUNNING], running);
	kvf_metric_set(w->m[WM_VLLM_WAITING], waiting);
	kvf_metric_set(w->m[WM_VLLM_RUNNING], running);
	kvf_metric_set(w->m[WM_KV_USAGE], usage);
	kvf_metric_set(w->m[WM_VLLM_KV], usage);
	/* cached blocks may also be used; the idle ones are cached - used overlap */
	int idle = cached > 0 ? cached : 0;
	kvf_series_set(w->kv_state[0], used);
	kvf_series_set(w->kv_state[1], idle);
	kvf_series_set(w->kv_state[2], total - used - idle > 0 ? total - used - idle : 0);
	uint64_t hits = atomic_load(&l->prefix_hits), misses = atomic_load(&l->prefix_misses);
	kvf_metric_set(w->m[WM_PREFIX_HIT], hits + misses ? (double)hits / (double)(hits + misses) : 0);
	uint64_t pre = atomic_load(&l->preemptions);
	kvf_metric_add(w->m[WM_PREEMPTIONS], pre - w->preempt_seen);
	w->preempt_seen = pre;
}

/* ---- admin ---- */

static int cmd_show_requests(kvf_admin_out *out, int argc, char **argv, void *ud)
{
	kvf_worker *w = ud;
	uint64_t now = kvf_now_ns();
	int json = kvf_admin_want_json(out);
	kvf_buf *b = kvf_admin_buf(out);
	if (json)
		kvf_buf_putc(b, '[');
	else
		kvf_admin_printf(out, "%-8s %-6s %-9s %8s %8s %8s %9s %s\n", "id", "kind", "state", "prompt",
				 "cached", "output", "age_ms", "tenant");
	int first = 1;
	for (const wreq *r = w->reqs; r; r = r->next) {
		const char *state = r->cancel_sent ? "cancelled" : r->n_out ? "decoding" : "queued";
		double age = (double)(now - r->t_arrive_ns) / 1e6;
		if (json) {
			kvf_buf_printf(b, "%s{\"id\":%llu,\"kind\":\"%s\",\"state\":\"%s\",\"prompt_tokens\":%zu,"
				       "\"cached_tokens\":%d,\"output_tokens\":%zu,\"age_ms\":%.1f,\"tenant\":",
				       first ? "" : ",", (unsigned long long)r->id,
				       r->oai.kind == KVF_OAI_CHAT ? "chat" : "completion", state, r->prompt.n,
				       r->info.n_cached_tokens, r->n_out, age);
			kvf_buf_put_json_str(b, r->tenant, strlen(r->tenant));
			kvf_buf_putc(b, '}');
		} else {
			kvf_admin_printf(out, "%-8llu %-6s %-9s %8zu %8d %8zu %9.1f %s\n", (unsigned long long)r->id,
					 r->oai.kind == KVF_OAI_CHAT ? "chat" : "cmpl", state, r->prompt.n,
					 r->info.n_cached_tokens, r->n_out, age, r->tenant[0] ? r->tenant : "-");
		}
		first = 0;
	}
	if (json)
		kvf_buf_puts(b, "]\n");
	return 0;
}

static int cmd_show_kv(kvf_admin_out *out, int argc, char **argv, void *ud)
{
	kvf_worker *w = ud;
	const ew_load *l = ew_loadfig(w->engine);
	const kvf_engine_info *info = ew_info(w->engine);
	int total = atomic_load(&l->kv_total), used = atomic_load(&l->kv_used), cached = atomic_load(&l->kv_cached);
	uint64_t hits = atomic_load(&l->prefix_hits), misses = atomic_load(&l->prefix_misses);
	if (kvf_admin_want_json(out)) {
		kvf_admin_printf(out, "{\"block_size\":%d,\"block_bytes\":%zu,\"dtype\":\"%s\",\"blocks\":%d,"
				 "\"used\":%d,\"cached\":%d,\"prefix_hits\":%llu,\"prefix_misses\":%llu}\n",
				 info->block_size, info->block_bytes, kvf_dtype_name(info->kv_dtype), total, used,
				 cached, (unsigned long long)hits, (unsigned long long)misses);
		return 0;
	}
	kvf_admin_printf(out, "block_size: %d tokens\nblock_bytes: %zu\nkv_dtype: %s\nblocks: %d\nused: %d\n"
			 "cached: %d\nprefix_hits: %llu\nprefix_misses: %llu\n",
			 info->block_size, info->block_bytes, kvf_dtype_name(info->kv_dtype), total, used, cached,
			 (unsigned long long)hits, (unsigned long long)misses);
	return 0;
}

static const kvf_admin_cmd worker_cmds[] = {
	{ { "show", "requests" }, "show requests [json]", "requests in flight", cmd_show_requests },
	{ { "show", "kv" }, "show kv [json]", "KV pool and prefix cache", cmd_show_kv },
};

/* ---- daemon hooks ---- */

static void on_drain(void *ud)
{
	((kvf_worker *)ud)->draining = 1;
	dir_drain(ud); /* the directory (and so the gateways) learn it now */
}

static int is_busy(void *ud)
{
	return ((kvf_worker *)ud)->n_reqs > 0;
}

static void info_lines(void *ud, kvf_buf *out)
{
	kvf_worker *w = ud;
	const kvf_engine_info *i = ew_info(w->engine);
	kvf_buf_printf(out, "role: %s\nmodel: %s\nbackend: %s (%s)\narch: %s\nmax_model_len: %d\n"
			    "kv: %d blocks x %zu bytes (%s)\nrequests_in_flight: %zu\n",
		       w->role == KVF_WORKER_PREFILL ? "prefill" : "decode", w->model_name, i->backend,
		       i->isa ? i->isa : "-", i->arch, i->max_model_len, i->kv_blocks, i->block_bytes,
		       kvf_dtype_name(i->kv_dtype), w->n_reqs);
}

/* The engine's stop-string matcher needs each token's text (engine thread). */
static int token_piece(void *user, uint32_t id, char *buf, size_t cap)
{
	kvf_worker *w = user;
	char *s = NULL;
	size_t len = 0;
	if (kvf_tokenizer_decode(w->tok, &id, 1, 0, &s, &len) != 0)
		return -1;
	if (len > cap)
		len = cap;
	memcpy(buf, s, len);
	kvf_free(s);
	return (int)len;
}

/* ---- lifecycle ---- */

static void set_model_name(kvf_worker *w)
{
	const kvf_engine_cfg *c = w->ecfg;
	if (w->wcfg->served_model_name && w->wcfg->served_model_name[0]) {
		snprintf(w->model_name, sizeof(w->model_name), "%s", w->wcfg->served_model_name);
	} else if (c->model_dir && c->model_dir[0]) {
		char tmp[512];
		snprintf(tmp, sizeof(tmp), "%s", c->model_dir);
		size_t n = strlen(tmp);
		while (n > 1 && tmp[n - 1] == '/')
			tmp[--n] = '\0';
		snprintf(w->model_name, sizeof(w->model_name), "%s", basename(tmp));
	} else {
		snprintf(w->model_name, sizeof(w->model_name), "sim-%s", c->sim_preset);
	}
}

int kvf_worker_new(kvf_daemon *d, kvf_worker_role role, const kvf_engine_cfg *ecfg, kvf_fabric_opts *fopts,
		   const kvf_worker_cfg *wcfg, kvf_worker **out)
{
	kvf_worker *w = kvf_calloc(1, sizeof(*w));
	if (!w)
		return kvf_errf(KVF_E_NOMEM, "worker: out of memory");
	w->d = d;
	w->role = role;
	w->ecfg = ecfg;
	w->wcfg = wcfg;
	w->fopts = fopts;
	w->cluster = kvf_daemon_cluster(d);
	w->loop = kvf_daemon_loop(d);
	set_model_name(w);
	int rc;

	if (ecfg->backend == KVF_ENGINE_CFG_CUDA) {
		rc = kvf_errf(KVF_E_UNSUPPORTED, "engine.backend = \"cuda\": the CUDA backend is not built yet; "
						 "use cpu or sim");
		goto err;
	}
	if (ecfg->model_dir && ecfg->model_dir[0]) {
		if ((rc = kvf_tokenizer_load(ecfg->model_dir, &w->tok))) {
			rc = kvf_errf(rc, "tokenizer: %s", kvf_errmsg());
			goto err;
		}
	} else {
		rc = kvf_errf(KVF_E_CONFIG, "engine.model_dir is required: the worker reads the tokenizer from it "
					    "(with the sim backend, point it at any model directory with a tokenizer.json)");
		goto err;
	}
	w->n_eos = kvf_tokenizer_eos_ids(w->tok, w->eos_ids, sizeof(w->eos_ids) / sizeof(w->eos_ids[0]));
	if ((rc = kvf_blockkey_ctx_new(w->cluster->secret, strlen(w->cluster->secret), &w->keys)))
		goto err;

	kvf_engine_options eo;
	if ((rc = kvf_engine_options_from_cfg(ecfg, (int)w->cluster->block_size, &eo)))
		goto err;
	eo.token_piece = token_piece;
	eo.token_piece_user = w;
	eo.sim.vocab_size = (int)kvf_tokenizer_vocab_size(w->tok);
	if ((rc = ew_start(&eo, w->loop, worker_on_batch, w, &w->engine))) {
		rc = kvf_errf(rc, "engine: %s", kvf_errmsg());
		goto err;
	}
	if ((size_t)ew_info(w->engine)->vocab_size < kvf_tokenizer_vocab_size(w->tok))
		KVF_WARN("worker", "the tokenizer knows more ids than the model", "tokenizer=%zu model=%d",
			 kvf_tokenizer_vocab_size(w->tok), ew_info(w->engine)->vocab_size);

	if ((rc = kvf_metrics_register(kvf_daemon_metrics(d), worker_metrics, WM_N, w->m)))
		goto err;
	for (int i = 0; i < OUTCOME_N; i++)
		if ((rc = kvf_metric_labels(w->m[WM_REQUESTS], (const char *[]){ outcome_names[i] }, &w->outcome[i])))
			goto err;
	for (int i = 0; i < 3; i++)
		if ((rc = kvf_metric_labels(w->m[WM_KV_BLOCKS], (const char *[]){ kv_state_names[i] }, &w->kv_state[i])))
			goto err;
	if ((rc = kvf_metrics_on_collect(kvf_daemon_metrics(d), collect, w)))
		goto err;
	if ((rc = pd_init(w)) || (rc = dir_init(w)))
		goto err;
	if ((rc = kvf_daemon_register_admin(d, worker_cmds, sizeof(worker_cmds) / sizeof(worker_cmds[0]), w)))
		goto err;
	kvf_daemon_set_http_handler(d, worker_serve_http, w);
	kvf_daemon_hooks hooks = { on_drain, is_busy, info_lines, w };
	kvf_daemon_set_hooks(d, &hooks);
	const kvf_engine_info *i = ew_info(w->engine);
	KVF_INFO("worker", "engine ready", "role=%s model=%s backend=%s arch=%s layers=%d kv_blocks=%d "
		 "block_bytes=%zu max_model_len=%d", role == KVF_WORKER_PREFILL ? "prefill" : "decode",
		 w->model_name, i->backend, i->arch, i->n_layers, i->kv_blocks, i->block_bytes, i->max_model_len);
	*out = w;
	return 0;
err:
	kvf_worker_destroy(w);
	return rc;
}

void kvf_worker_destroy(kvf_worker *w)
{
	if (!w)
		return;
	/* Order matters: the engine thread stops first (its last results are
	 * delivered while every object they name exists), then the directory
	 * and P/D parts close (their callbacks may still submit or release:
	 * after ew_join those calls run inline or do nothing), then the
	 * requests go, and the engine last. */
	w->stopping = 1;
	if (w->engine) {
		worker_cancel_all(w);
		ew_join(w->engine);
		for (int i = 0; i < 3 && w->loop; i++)
			kvf_loop_run_once(w->loop, 0);
	}
	dir_fini(w);
	pd_fini(w);
	worker_free_all(w);
	ew_free(w->engine);
	kvf_blockkey_ctx_free(w->keys);
	kvf_tokenizer_destroy(w->tok);
	kvf_free(w);
}

int kvf_worker_main(kvf_worker_role role, int argc, char **argv)
{
	const char *prog = role == KVF_WORKER_PREFILL ? "kvf-prefill" : "kvf-decode";
	static kvf_engine_cfg ecfg;
	static kvf_worker_cfg wcfg;
	static kvf_fabric_opts fopts;
	kvf_daemon *d = NULL;
	kvf_worker *w = NULL;
	int code = 1;
	if (kvf_daemon_new(prog, &d) ||
	    kvf_config_add(kvf_daemon_config(d), &kvf_engine_section, &ecfg) ||
	    kvf_config_add(kvf_daemon_config(d), &kvf_fabric_cfg_section, &fopts) ||
	    kvf_config_add(kvf_daemon_config(d),
			   role == KVF_WORKER_PREFILL ? &kvf_prefill_section : &kvf_decode_section, &wcfg)) {
		fprintf(stderr, "%s: %s\n", prog, kvf_errmsg());
		goto out;
	}
	if (kvf_daemon_parse_args(d, argc, argv, &code))
		goto out;
	if (kvf_daemon_start(d, &wcfg.d) || kvf_worker_new(d, role, &ecfg, &fopts, &wcfg, &w)) {
		fprintf(stderr, "%s: %s\n", prog, kvf_errmsg());
		code = 1;
		goto out;
	}
	kvf_daemon_set_ready(d, 1);
	code = kvf_daemon_run(d);
out:
	/* The HTTP server goes first: its open requests call back into w. */
	if (d)
		kvf_daemon_close_http(d);
	kvf_worker_destroy(w);
	kvf_daemon_destroy(d);
	return code;
}
