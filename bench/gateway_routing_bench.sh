#!/usr/bin/env bash
# make bench-gateway-routing: prefix-aware routing vs round-robin vs random
# on the shared-prefix workload (llm-d's benchmark shape: G groups with a
# long system prompt, U users asking short questions), through kvf-gateway
# to 8 kvf-decode workers on the sim backend, driven by kvf-bench with
# Poisson arrivals. Everything restarts between policies (cold caches).
#
# Workers: sim backend (the tiny preset: small KV blocks, 2048 positions)
# with Llama-3-8B-on-H100 timings (prefill 20k tok/s,
# decode step 6.5 ms + 0.03 ms/seq) and a KV pool of KV_BLOCKS blocks each,
# sized so a worker holds a few groups' prefixes but not all of them: a
# router that spreads a group over every worker makes them recompute it.
# The tokenizer is a kvf-mkmodel model's (the sim needs no weights).
# Targets: TTFT p90 round-robin / prefix-aware >= 5, throughput >= 1.5.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${KVF_BUILD:-$root/build}
bin="$build/bin"
out=${BENCH_OUT:-$build/bench/gateway-routing.json}
WORKERS=${WORKERS:-8} KV_BLOCKS=${KV_BLOCKS:-250} GROUPS_=${GROUPS_:-16} USERS=${USERS:-16}
PREFIX_WORDS=${PREFIX_WORDS:-450} QUESTION_WORDS=${QUESTION_WORDS:-10} RATE=${RATE:-110}
REQUESTS=${REQUESTS:-600} WARMUP=${WARMUP:-64} MAX_TOKENS=${MAX_TOKENS:-16}
POLICIES=${POLICIES:-"score round_robin random"}
work=$(mktemp -d /tmp/kvf-gwrouting.XXXXXX)
pids=()
stop_all() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done; pids=(); }
trap 'stop_all; rm -rf "$work"' EXIT
port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ready() { for _ in $(seq 1 200); do curl -sf "http://127.0.0.1:$1/ready" >/dev/null 2>&1 && return 0; sleep 0.05; done; return 1; }

"$bin/kvf-mkmodel" --arch llama --out "$work/m" --layers 2 --dim 64 --vocab 512 >/dev/null
for policy in $POLICIES; do
  ws=()
  for i in $(seq 0 $((WORKERS - 1))); do
    hp=$(port); fp=$(port)
    "$bin/kvf-decode" -o "engine.model_dir=$work/m" -o engine.backend=sim -o engine.sim_preset=tiny \
      -o engine.sim_prefill_tok_s=20000 -o engine.sim_decode_base_ms=6.5 -o engine.sim_decode_per_seq_ms=0.03 \
      -o "engine.kv_blocks=$KV_BLOCKS" -o engine.threads=1 -o "decode.http_listen=127.0.0.1:$hp" \
      -o "decode.fabric_listen=127.0.0.1:$fp" -o decode.admin_socket= -o decode.log_level=warn \
      >"$work/w$i.log" 2>&1 &
    pids+=($!); ws+=("127.0.0.1:$hp")
  done
  for w in "${ws[@]}"; do ready "${w#*:}" || { echo "worker $w not ready" >&2; tail "$work"/w*.log >&2; exit 1; }; done
  gp=$(port)
  "$bin/kvf-gateway" -o "gateway.http_listen=127.0.0.1:$gp" -o gateway.admin_socket= -o gateway.log_level=warn \
    -o "gateway.decode_workers=$(IFS=,; echo "${ws[*]}")" -o "gateway.tokenizer=$work/m" -o "gateway.policy=$policy" \
    >"$work/gw-$policy.log" 2>&1 &
  pids+=($!)
  ready "$gp" || { echo "gateway not ready" >&2; cat "$work/gw-$policy.log" >&2; exit 1; }
  echo "== policy $policy: $WORKERS sim workers, $GROUPS_ groups x $USERS users, Poisson $RATE req/s"
  "$bin/kvf-bench" -t "127.0.0.1:$gp" -m m -w shared-prefix --groups "$GROUPS_" --users "$USERS" \
    --prefix-words "$PREFIX_WORDS" --question-words "$QUESTION_WORDS" -r "$RATE" -n "$REQUESTS" --warmup "$WARMUP" \
    --max-tokens "$MAX_TOKENS" --ignore-eos --json "$work/$policy.json"
  stop_all
done
/usr/bin/python3 - "$work" "$out" $POLICIES <<'PY'
import json, sys
work, out, pols = sys.argv[1], sys.argv[2], sys.argv[3:]
r = {p: json.load(open("%s/%s.json" % (work, p))) for p in pols}
res = {"runs": r, "ratios": {}}
for p in pols:
    d = r[p]
    print("%-12s TTFT p50 %8.1f p90 %8.1f p99 %8.1f ms | e2e p90 %8.1f ms | %7.1f out tok/s | %6.2f req/s | hit %.3f | errors %d"
          % (p, d["ttft_ms"]["p50"], d["ttft_ms"]["p90"], d["ttft_ms"]["p99"], d["e2e_ms"]["p90"],
             d["output_tokens_per_s"], d["requests_per_s"], d["cache_hit_ratio"], d["errors"]))
if "score" in r:
    for p in pols:
        if p == "score":
            continue
        res["ratios"]["ttft_p90_%s_over_prefix" % p] = round(r[p]["ttft_ms"]["p90"] / r["score"]["ttft_ms"]["p90"], 2)
        res["ratios"]["throughput_prefix_over_%s" % p] = round(r["score"]["output_tokens_per_s"] / r[p]["output_tokens_per_s"], 3)
print(res["ratios"])
json.dump(res, open(out, "w"), indent=1)
PY
