#!/usr/bin/env bash
# make bench-engine: CPU engine throughput on a ~100M-parameter Llama shape
# (kvf-mkmodel: 12 layers, dim 768, 12 heads / 4 kv heads, ffn 2048, vocab
# 32000, tied, bf16), against this machine's memcpy bandwidth measured in the
# same run. Decode at batch 1 streams every weight once per token, so the
# figure of merit is (weight bytes per step / step time) / memcpy GB/s, with
# the median step (and the best step: this machine's cores are shared, and a
# step that lost its core to another process says nothing about the code);
# memcpy is the best of 5 copies before and 5 after the run.
# Writes $BENCH_OUT (JSON) and prints a summary.
set -euo pipefail
: "${KVF_BUILD:?}" "${BENCH_OUT:?}"
BIN="$KVF_BUILD/bin"
THREADS=${KVF_BENCH_THREADS:-$(nproc)}
MODEL="$KVF_BUILD/bench/engine-model-100m"
SHAPE=(--arch llama --layers 12 --dim 768 --heads 12 --kv-heads 4 --ffn 2048 --vocab 32000 --tie 1 --seed 1)
stamp="$MODEL/.shape"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "${SHAPE[*]}" ]; then
  rm -rf "$MODEL"
  "$BIN/kvf-mkmodel" "${SHAPE[@]}" --out "$MODEL" >/dev/null
  echo "${SHAPE[*]}" >"$stamp"
fi

run() { "$BIN/kvf-run" -m "$MODEL" --threads "$THREADS" --bench --json "$@"; }
b1=$(run --batch 1 --prompt-len 128 --gen 32)
b16=$(run --batch 16 --prompt-len 128 --gen 16)

/usr/bin/python3 - "$BENCH_OUT" "$b1" "$b16" <<'PYEOF'
import json, sys
out, b1, b16 = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
res = {
    "bench": "engine",
    "model": "llama 12x768, %d params, %s weights" % (b1["params"], b1["weight_dtype"]),
    "threads": b1["threads"], "isa": b1["isa"],
    "memcpy_gbps": round(max(b1["memcpy_gbps"], b16["memcpy_gbps"]), 3),
    "batch1": b1, "batch16": b16,
    "ratios": {
        "decode_b1_weights_gbps_over_memcpy": round(b1["weights_over_memcpy"], 3),
        "decode_b1_best_step_weights_gbps_over_memcpy": round(b1["weights_best_over_memcpy"], 3),
        "decode_b16_over_b1_tok_s": round(b16["decode_tok_s"] / b1["decode_tok_s"], 2),
        "prefill_b1_over_decode_b1_tok_s": round(b1["prefill_tok_s"] / b1["decode_tok_s"], 2),
    },
}
json.dump(res, open(out, "w"), indent=2)
print("engine bench (%s, %d threads, %s kernels), memcpy %.2f GB/s" % (res["model"], res["threads"], res["isa"], b1["memcpy_gbps"]))
for name, r in (("batch 1", b1), ("batch 16", b16)):
    print("  %-8s prefill %8.1f tok/s   decode %8.1f tok/s (%.2f ms/step)" % (name, r["prefill_tok_s"], r["decode_tok_s"], r["decode_step_ms"]))
print("  decode batch 1 reads weights at %.2f GB/s = %.0f%% of memcpy (median step; best step %.0f%%; aim >= 60%%)" % (b1["weights_gbps"], 100 * b1["weights_over_memcpy"], 100 * b1["weights_best_over_memcpy"]))
print("  batch 16 decode = %.2fx batch 1 tokens/s" % res["ratios"]["decode_b16_over_b1_tok_s"])
PYEOF
