/*
 * kvf-bench: load generator for OpenAI-compatible servers (the gateway, a
 * worker, or any vLLM-style endpoint): closed-loop or Poisson arrivals,
 * streaming or not, shared-prefix / multi-turn / random workloads; prints
 * TTFT, inter-token latency and end-to-end percentiles, throughput and the
 * cache hits the x-kvf-* headers report, as text or JSON. See
 * docs/kvf-bench.md.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/kvf_buf.h"
#include "common/kvf_err.h"
#include "tools/kvf-bench/bench.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: kvf-bench --model NAME [options]\n"
		"  -t, --target HOST:PORT      server (default 127.0.0.1:8080)\n"
		"  -m, --model NAME            model name sent in requests (required)\n"
		"      --api-key KEY           Authorization: Bearer KEY\n"
		"      --chat                  /v1/chat/completions (default /v1/completions)\n"
		"  -w, --workload W            shared-prefix | multi-turn | random (default shared-prefix)\n"
		"  -c, --concurrency N         closed loop: N clients; multi-turn: N sessions (default 8)\n"
		"  -r, --rate R                open loop: Poisson arrivals at R requests/s\n"
		"      --max-inflight N        open loop: cap on requests in flight (default 1024)\n"
		"  -n, --requests N            measured requests (default 200)\n"
		"  -d, --duration S            or: issue requests for S seconds\n"
		"      --warmup N              requests sent first, not measured (default 0)\n"
		"      --max-tokens N          (default 16)\n"
		"      --no-stream             non-streaming requests (TTFT = end to end)\n"
		"      --ignore-eos            generate max_tokens every time (vLLM extension)\n"
		"      --groups G --users U --prefix-words P --question-words Q\n"
		"                              shared-prefix shape (default 8, 8, 1000, 30)\n"
		"      --turns T --turn-words W  multi-turn shape (default 4, 40)\n"
		"      --prompt-words W        random prompts (default 200)\n"
		"      --seed N                (default 1)\n"
		"      --timeout-ms MS         per request (default 600000)\n"
		"      --json FILE             write the JSON report to FILE (- for stdout)\n"
		"      --samples               include every request in the JSON\n");
}

int main(int argc, char **argv)
{
	kb_opts o;
	kb_opts_default(&o);
	const char *json_out = NULL;
	enum { O_KEY = 256, O_CHAT, O_MAXIN, O_WARM, O_MAXTOK, O_NOSTREAM, O_EOS, O_GROUPS, O_USERS, O_PREFIX, O_QUEST,
	       O_TURNS, O_TURNW, O_PROMPTW, O_SEED, O_TIMEOUT, O_JSON, O_SAMPLES };
	static const struct option lo[] = {
		{ "target", required_argument, 0, 't' }, { "model", required_argument, 0, 'm' },
		{ "api-key", required_argument, 0, O_KEY }, { "chat", no_argument, 0, O_CHAT },
		{ "workload", required_argument, 0, 'w' }, { "concurrency", required_argument, 0, 'c' },
		{ "rate", required_argument, 0, 'r' }, { "max-inflight", required_argument, 0, O_MAXIN },
		{ "requests", required_argument, 0, 'n' }, { "duration", required_argument, 0, 'd' },
		{ "warmup", required_argument, 0, O_WARM }, { "max-tokens", required_argument, 0, O_MAXTOK },
		{ "no-stream", no_argument, 0, O_NOSTREAM }, { "ignore-eos", no_argument, 0, O_EOS },
		{ "groups", required_argument, 0, O_GROUPS }, { "users", required_argument, 0, O_USERS },
		{ "prefix-words", required_argument, 0, O_PREFIX }, { "question-words", required_argument, 0, O_QUEST },
		{ "turns", required_argument, 0, O_TURNS }, { "turn-words", required_argument, 0, O_TURNW },
		{ "prompt-words", required_argument, 0, O_PROMPTW }, { "seed", required_argument, 0, O_SEED },
		{ "timeout-ms", required_argument, 0, O_TIMEOUT }, { "json", required_argument, 0, O_JSON },
		{ "samples", no_argument, 0, O_SAMPLES }, { "help", no_argument, 0, 'h' }, { 0, 0, 0, 0 },
	};
	int c;
	while ((c = getopt_long(argc, argv, "t:m:w:c:r:n:d:h", lo, NULL)) != -1) {
		switch (c) {
		case 't': o.target = optarg; break;
		case 'm': o.model = optarg; break;
		case O_KEY: o.api_key = optarg; break;
		case O_CHAT: o.endpoint = KB_EP_CHAT; break;
		case 'w':
			if (!strcmp(optarg, "shared-prefix"))
				o.workload = KB_WL_SHARED_PREFIX;
			else if (!strcmp(optarg, "multi-turn"))
				o.workload = KB_WL_MULTI_TURN;
			else if (!strcmp(optarg, "random"))
				o.workload = KB_WL_RANDOM;
			else {
				fprintf(stderr, "kvf-bench: unknown workload '%s'\n", optarg);
				return 2;
			}
			break;
		case 'c': o.concurrency = atoi(optarg); break;
		case 'r': o.rate = atof(optarg); o.arrival = KB_ARRIVAL_POISSON; break;
		case O_MAXIN: o.max_inflight = atoi(optarg); break;
		case 'n': o.requests = atoi(optarg); break;
		case 'd': o.duration_s = atof(optarg); break;
		case O_WARM: o.warmup = atoi(optarg); break;
		case O_MAXTOK: o.max_tokens = atoi(optarg); break;
		case O_NOSTREAM: o.stream = 0; break;
		case O_EOS: o.ignore_eos = 1; break;
		case O_GROUPS: o.groups = atoi(optarg); break;
		case O_USERS: o.users = atoi(optarg); break;
		case O_PREFIX: o.prefix_words = atoi(optarg); break;
		case O_QUEST: o.question_words = atoi(optarg); break;
		case O_TURNS: o.turns = atoi(optarg); break;
		case O_TURNW: o.turn_words = atoi(optarg); break;
		case O_PROMPTW: o.prompt_words = atoi(optarg); break;
		case O_SEED: o.seed = strtoull(optarg, NULL, 10); break;
		case O_TIMEOUT: o.timeout_ms = (uint32_t)strtoul(optarg, NULL, 10); break;
		case O_JSON: json_out = optarg; break;
		case O_SAMPLES: o.samples = 1; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (!o.model || o.concurrency < 1 || o.rate <= 0 || o.requests < 0 || o.max_tokens < 1 || o.groups < 1 ||
	    o.users < 1 || o.turns < 1 || o.max_inflight < 1) {
		usage(stderr);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	kb_result r;
	if (kb_run(&o, &r)) {
		fprintf(stderr, "kvf-bench: %s\n", kvf_errmsg());
		return 1;
	}
	kvf_buf b = KVF_BUF_INIT;
	kb_report_text(&o, &r, &b);
	fputs(b.data, json_out && !strcmp(json_out, "-") ? stderr : stdout);
	if (json_out) {
		kvf_buf_reset(&b);
		kb_report_json(&o, &r, &b);
		FILE *f = strcmp(json_out, "-") ? fopen(json_out, "w") : stdout;
		if (!f) {
			fprintf(stderr, "kvf-bench: cannot write %s\n", json_out);
			return 1;
		}
		fputs(b.data, f);
		if (f != stdout)
			fclose(f);
	}
	kvf_buf_free(&b);
	size_t errors = 0, n = r.n;
	for (size_t i = 0; i < r.n; i++)
		errors += r.s[i].err || r.s[i].status != 200;
	kb_result_free(&r);
	return errors && errors == n ? 1 : 0; /* nothing worked */
}
