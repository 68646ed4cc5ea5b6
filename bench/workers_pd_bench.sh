#!/usr/bin/env bash
# make bench-workers-pd: aggregated vs disaggregated serving, side by side.
#
# For each backend and concurrency, the same random-prompt workload (no
# shared prefixes, so every prompt is prefilled) runs twice through
# kvf-gateway, driven by kvf-bench (closed loop):
#   aggregated     1 decode worker that prefills and decodes
#                  (gateway.pd_threshold_tokens = 0: never P/D)
#   disaggregated  1 prefill + 1 decode worker; every request's KV is computed
#                  on the prefill worker and pulled over the fabric
# Backends:
#   cpu  a small real model (kvf-mkmodel, 4 layers, dim 256) on the CPU
#        backend, one compute thread per worker. Both workers share this
#        machine's cores, so disaggregation cannot add compute here; it shows
#        the cost of the extra hop and transfer.
#   sim  Llama-3-8B-on-H100 timings (prefill 20k tok/s, decode step 6.5 ms +
#        0.03 ms/seq) with long prompts: here the prefill worker's time is
#        modelled as its own GPU's, which is where disaggregation pays: the
#        decode worker's steps are no longer stalled by other requests'
#        prefills (ITL), at the price of a transfer (TTFT).
# Prints TTFT p50/p90, ITL p50/p90, e2e p90 and output tok/s per mode, and
# disaggregated/aggregated ratios; writes them to BENCH_OUT.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${KVF_BUILD:-$root/build}
bin="$build/bin"
out=${BENCH_OUT:-$build/bench/workers-pd.json}
CONCS=${CONCS:-"1 8 32"}
BACKENDS=${BACKENDS:-"cpu sim"}
work=$(mktemp -d /tmp/kvf-pdbench.XXXXXX)
pids=()
stop_all() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done; pids=(); }
trap 'stop_all; rm -rf "$work"' EXIT
port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ready() { for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$1/ready" >/dev/null 2>&1 && return 0; sleep 0.05; done; return 1; }

"$bin/kvf-mkmodel" --arch llama --out "$work/m" --layers 4 --dim 256 --heads 8 --kv-heads 2 --vocab 512 --max-pos 4096 >/dev/null

engine_opts() { # backend -> engine -o options
  if [ "$1" = sim ]; then
    echo "-o engine.backend=sim -o engine.sim_preset=tiny -o engine.sim_prefill_tok_s=20000 \
-o engine.sim_decode_base_ms=6.5 -o engine.sim_decode_per_seq_ms=0.03 -o engine.kv_blocks=4096 -o engine.max_model_len=2048"
  else
    echo "-o engine.threads=1 -o engine.kv_blocks=2048 -o engine.max_batch_tokens=256"
  fi
}

run_one() { # backend mode conc
  local backend=$1 mode=$2 conc=$3 dp pp gp fp
  dp=$(port); fp=$(port)
  # shellcheck disable=SC2046
  "$bin/kvf-decode" -o "engine.model_dir=$work/m" $(engine_opts "$backend") -o "decode.http_listen=127.0.0.1:$dp" \
    -o "decode.fabric_listen=127.0.0.1:$fp" -o decode.admin_socket= -o decode.log_level=warn \
    -o decode.pull_threshold_tokens=1000000 -o cluster.cachedir= >"$work/d.log" 2>&1 &
  pids+=($!)
  local gw_workers=(-o "gateway.decode_workers=127.0.0.1:$dp")
  if [ "$mode" = disaggregated ]; then
    pp=$(port); fp=$(port)
    # shellcheck disable=SC2046
    "$bin/kvf-prefill" -o "engine.model_dir=$work/m" $(engine_opts "$backend") -o "prefill.http_listen=127.0.0.1:$pp" \
      -o "prefill.fabric_listen=127.0.0.1:$fp" -o prefill.admin_socket= -o prefill.log_level=warn \
      -o cluster.cachedir= >"$work/p.log" 2>&1 &
    pids+=($!)
    ready "$pp" || { echo "prefill worker not ready" >&2; cat "$work/p.log" >&2; exit 1; }
    gw_workers+=(-o "gateway.prefill_workers=127.0.0.1:$pp" -o gateway.pd_threshold_tokens=1)
  else
    gw_workers+=(-o gateway.pd_threshold_tokens=0)
  fi
  ready "$dp" || { echo "decode worker not ready" >&2; cat "$work/d.log" >&2; exit 1; }
  gp=$(port)
  "$bin/kvf-gateway" -o "gateway.http_listen=127.0.0.1:$gp" -o gateway.admin_socket= -o gateway.log_level=warn \
    -o "gateway.tokenizer=$work/m" -o gateway.index=local -o cluster.cachedir= "${gw_workers[@]}" \
    >"$work/g.log" 2>&1 &
  pids+=($!)
  ready "$gp" || { echo "gateway not ready" >&2; cat "$work/g.log" >&2; exit 1; }
  local words=120 maxtok=32 n=$((conc * 4 > 16 ? conc * 4 : 16))
  [ "$backend" = sim ] && { words=400; maxtok=64; }
  "$bin/kvf-bench" -t "127.0.0.1:$gp" -m m -w random --prompt-words "$words" -c "$conc" -n "$n" \
    --warmup "$conc" --max-tokens "$maxtok" --ignore-eos --seed 7 \
    --json "$work/$backend-$mode-$conc.json" >/dev/null
  stop_all
}

for backend in $BACKENDS; do
  for conc in $CONCS; do
    for mode in aggregated disaggregated; do
      echo "== $backend, concurrency $conc, $mode"
      run_one "$backend" "$mode" "$conc"
    done
  done
done

/usr/bin/python3 - "$work" "$out" "$BACKENDS" "$CONCS" <<'PY'
import json, sys
work, out = sys.argv[1], sys.argv[2]
backends, concs = sys.argv[3].split(), [int(c) for c in sys.argv[4].split()]
res = {"runs": {}, "ratios": {}}
print("%-4s %4s %-14s %9s %9s %8s %8s %9s %10s %6s %7s" % ("", "conc", "mode", "TTFTp50ms", "TTFTp90ms",
      "ITLp50", "ITLp90", "e2ep90ms", "out_tok/s", "fetch%", "errors"))
for b in backends:
    for c in concs:
        row = {}
        for m in ("aggregated", "disaggregated"):
            d = json.load(open("%s/%s-%s-%d.json" % (work, b, m, c)))
            row[m] = d
            res["runs"]["%s/%d/%s" % (b, c, m)] = {k: d[k] for k in ("ttft_ms", "itl_ms", "e2e_ms",
                                                   "output_tokens_per_s", "fetched_tokens", "prompt_tokens", "errors")}
            fetched = 100.0 * d["fetched_tokens"] / max(1, d["prompt_tokens"])
            print("%-4s %4d %-14s %9.1f %9.1f %8.2f %8.2f %9.1f %10.1f %6.1f %7d" % (b, c, m, d["ttft_ms"]["p50"],
                  d["ttft_ms"]["p90"], d["itl_ms"]["p50"], d["itl_ms"]["p90"], d["e2e_ms"]["p90"],
                  d["output_tokens_per_s"], fetched, d["errors"]))
        a, g = row["aggregated"], row["disaggregated"]
        r = {"ttft_p90": round(g["ttft_ms"]["p90"] / max(1e-9, a["ttft_ms"]["p90"]), 3),
             "itl_p90": round(g["itl_ms"]["p90"] / max(1e-9, a["itl_ms"]["p90"]), 3),
             "throughput": round(g["output_tokens_per_s"] / max(1e-9, a["output_tokens_per_s"]), 3)}
        res["ratios"]["%s/%d" % (b, c)] = r
        print("%-4s %4d %-14s TTFT p90 x%.2f  ITL p90 x%.2f  throughput x%.2f" % (b, c, "disagg/agg",
              r["ttft_p90"], r["itl_p90"], r["throughput"]))
json.dump(res, open(out, "w"), indent=1)
PY
