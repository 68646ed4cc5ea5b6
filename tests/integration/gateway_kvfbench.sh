#!/usr/bin/env bash
# kvf-bench against kvf-gateway and stand-in workers: every workload and
# arrival process completes, the JSON report is well formed and adds up,
# sessions stick to a worker, a dead target is an error.
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/gateway_common.bash"
KB="$BIN/kvf-bench"

start_fixture d1 --interval-ms 2 --tokens 8 || { kvf_done; exit; }
start_fixture d2 --interval-ms 2 --tokens 8 || { kvf_done; exit; }
start_gateway gw -o "gateway.decode_workers=127.0.0.1:${FIX_PORT[d1]},127.0.0.1:${FIX_PORT[d2]}" \
  -o gateway.model=test-model -o "gateway.tokenizer=$SMALL_TOK" || { kvf_done; exit; }
T=127.0.0.1:$GW_PORT

"$KB" -t "$T" -m test-model -n 60 -c 4 --groups 2 --prefix-words 150 --warmup 4 --json "$KVF_TMP/sp.json" --samples >"$KVF_TMP/sp.txt"
check_eq "shared-prefix closed loop exits 0" 0 $?
check_contains "text report has TTFT" "$(cat "$KVF_TMP/sp.txt")" "TTFT ms"
if "$PY" - "$KVF_TMP/sp.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert d["completed"] == 60 and d["errors"] == 0, d
assert len(d["samples"]) == 60
assert d["output_tokens"] == 60 * 16, d["output_tokens"]         # usage from the stream (max_tokens 16)
assert d["ttft_ms"]["p50"] <= d["ttft_ms"]["p90"] <= d["ttft_ms"]["p99"]
assert d["itl_ms"]["p50"] is not None and d["e2e_ms"]["p99"] >= d["ttft_ms"]["p99"]
assert sum(d["workers"].values()) == 60
# two groups, each routed to the worker holding its prefix: hits after warmup
assert d["cached_tokens"] > 0 and 0 < d["cache_hit_ratio"] <= 1
g = {}
for s in d["samples"]:
    g.setdefault(s["group"], set()).add(s["worker"])
assert all(len(v) == 1 for v in g.values()), g
PY
then pass "shared-prefix JSON adds up; each group sticks to its cache holder"; else fail "shared-prefix JSON adds up" "$(head -c 400 "$KVF_TMP/sp.json")"; fi

"$KB" -t "$T" -m test-model -n 40 -r 100 -w random --json "$KVF_TMP/po.json" >/dev/null
check_eq "Poisson random exits 0" 0 $?
check_contains "Poisson report" "$(cat "$KVF_TMP/po.json")" '"arrival":"poisson"'
check_contains "Poisson completed" "$(cat "$KVF_TMP/po.json")" '"completed":40,'

"$KB" -t "$T" -m test-model -n 24 -c 3 -w multi-turn --chat --turns 4 --json "$KVF_TMP/mt.json" --samples >/dev/null
check_eq "multi-turn chat exits 0" 0 $?
if "$PY" - "$KVF_TMP/mt.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert d["completed"] == 24
w = {}
for s in d["samples"]:
    w.setdefault(s["group"], set()).add(s["worker"])
assert len(w) == 3 and all(len(v) == 1 for v in w.values()), w
PY
then pass "multi-turn: every session stays on one worker (x-kvf-session)"; else fail "multi-turn sessions stick" "$(head -c 300 "$KVF_TMP/mt.json")"; fi

"$KB" -t "$T" -m test-model -n 10 -c 2 --no-stream -w random >"$KVF_TMP/ns.txt"
check_eq "non-streaming exits 0" 0 $?
check_contains "non-streaming completes" "$(cat "$KVF_TMP/ns.txt")" "completed 10, errors 0"

"$KB" -t "127.0.0.1:$(free_port)" -m test-model -n 3 -c 1 >/dev/null 2>&1
check_eq "nothing listening: exit 1" 1 $?
"$KB" -t "$T" >/dev/null 2>&1
check_eq "no model: usage, exit 2" 2 $?
kvf_done
