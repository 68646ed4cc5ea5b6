#!/usr/bin/env bash
# make bench-tokenizer: encoding throughput on a 1 MiB mixed corpus
# (bench/tokenizer_corpus.py), one core, one string per line as a server sees
# requests, cold process (the per-thread word cache starts empty).
# Measured in the same run:
#   kvf      build/bin/kvf-tokenize --bench for each tokenizer available
#   node     the same lines through @lenml/tokenizers (transformers.js) under
#            node, when node and the package are available;
#   scan     a plain byte scan of the same text (UTF-8 validation pass), the
#            floor any tokenizer pays.
# Writes $BENCH_OUT: MB/s, tokens/s and ratios kvf/node and kvf/scan.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${KVF_BUILD:-$root/build}
out=${BENCH_OUT:-$build/bench/tokenizer.json}
tok="$build/bin/kvf-tokenize"
work=$(mktemp -d /tmp/kvf-tokbench.XXXXXX)
trap 'rm -rf "$work"' EXIT
pin=""; command -v taskset >/dev/null && pin="taskset -c 0"
/usr/bin/python3 "$root/bench/tokenizer_corpus.py" "$work/corpus.txt" $((1 << 20))

npm_dir="$root/.cache/npm"
declare -A dirs=([small]="$root/tests/data/tokenizer/small")
if "$root/tests/data/tokenizer/fetch_npm.sh" "$npm_dir" >/dev/null 2>&1; then
  dirs[llama2]="$npm_dir/llama2/package/models"
  dirs[llama3]="$npm_dir/llama3/package/models"
  dirs[qwen3]="$npm_dir/qwen3/package/models"
else
  echo "bench-tokenizer: npm unreachable, only the small tokenizer is measured" >&2
fi
node_mods="$root/.cache/node/node_modules"
have_node=0
if command -v node >/dev/null && [ -d "$npm_dir/llama3" ]; then
  if [ ! -d "$node_mods/@lenml/tokenizers" ]; then
    mkdir -p "$root/.cache/node"
    (cd "$root/.cache/node" && { [ -f package.json ] || echo '{"private":true}' >package.json; } &&
      timeout 120 npm install --no-audit --no-fund --silent @lenml/tokenizers@3.7.2 >/dev/null 2>&1) || true
  fi
  [ -d "$node_mods/@lenml/tokenizers" ] && have_node=1
fi

results="$work/results.jsonl"
: >"$results"
for name in "${!dirs[@]}"; do
  r=$($pin "$tok" -t "${dirs[$name]}" --bench "$work/corpus.txt" --repeat 1)
  echo "{\"name\": \"$name\", \"kvf\": $r}" >>"$results"
  if [ $have_node = 1 ] && [ "$name" != small ]; then
    n=$(KVF_NODE_MODULES="$node_mods" $pin node "$root/bench/tokenizer_node_bench.mjs" "${dirs[$name]}" "$work/corpus.txt" 2>/dev/null | tail -1)
    echo "{\"name\": \"$name\", \"node\": $n}" >>"$results"
  fi
done
scan=$($pin "$tok" -t "${dirs[small]}" --bench-scan "$work/corpus.txt")

/usr/bin/python3 - "$results" "$scan" "$out" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
scan = json.loads(sys.argv[2])
res = {"corpus_bytes": scan["bytes"], "target_mb_per_s": 10.0,
       "baseline_scan_mb_per_s": round(scan["mb_per_s"], 1), "tokenizers": {}}
for r in rows:
    t = res["tokenizers"].setdefault(r["name"], {})
    if "kvf" in r:
        t["kvf_mb_per_s"] = round(r["kvf"]["mb_per_s"], 2)
        t["kvf_tokens_per_s"] = round(r["kvf"]["tokens_per_s"])
        t["ratio_vs_scan"] = round(r["kvf"]["mb_per_s"] / scan["mb_per_s"], 4)
        t["meets_target"] = r["kvf"]["mb_per_s"] >= 10.0
    if "node" in r:
        t["node_lenml_mb_per_s"] = round(r["node"]["mb_per_s"], 3)
for t in res["tokenizers"].values():
    if "node_lenml_mb_per_s" in t:
        t["ratio_vs_node"] = round(t["kvf_mb_per_s"] / t["node_lenml_mb_per_s"], 2)
json.dump(res, open(sys.argv[3], "w"), indent=1)
for name, t in sorted(res["tokenizers"].items()):
    print(f"tokenizer {name:7s} {t['kvf_mb_per_s']:7.2f} MB/s  {t['kvf_tokens_per_s']/1e6:6.2f} Mtok/s"
          + (f"  node {t['node_lenml_mb_per_s']:.2f} MB/s  x{t['ratio_vs_node']}" if "ratio_vs_node" in t else "")
          + f"  ({'meets' if t['meets_target'] else 'BELOW'} 10 MB/s)")
print(f"byte scan {res['baseline_scan_mb_per_s']} MB/s; results in {sys.argv[3]}")
PYEOF
