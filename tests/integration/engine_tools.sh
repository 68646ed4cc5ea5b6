#!/usr/bin/env bash
# Integration tests of kvf-run and kvf-mkmodel: the CLI contracts other
# components and external checks rely on (--dump-logits JSON, --greedy JSON
# array, --bench figures), on the reference models and on generated ones.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
PY=/usr/bin/python3
RUN="$BIN/kvf-run"
MK="$BIN/kvf-mkmodel"
DATA="$KVF_ROOT/tests/data/models"

# --- reference models through the CLI, from a directory without tokenizer files
for m in llama llama3 mistral qwen2 qwen3; do
  d="$KVF_TMP/$m"
  mkdir -p "$d" && cp "$DATA/$m/config.json" "$DATA/$m/model.safetensors" "$d/"
  ids=$($PY -c "import json;print(','.join(map(str,json.load(open('$DATA/$m/reference.json'))['inputs'][1])))")
  if "$RUN" -m "$d" --threads 2 --ids "$ids" --dump-logits "$KVF_TMP/$m.json" 2>"$KVF_TMP/err"; then
    res=$($PY - "$KVF_TMP/$m.json" "$DATA/$m/reference.json" <<'PYEOF'
import json, sys
got = json.load(open(sys.argv[1]))["logits"]
ref = json.load(open(sys.argv[2]))
n = len(ref["inputs"][1])
ok = len(got) == n and all(len(r) == len(ref["logits_last"][1]) for r in got)
md = max(abs(a - b) for a, b in zip(got[-1], ref["logits_last"][1])) if ok else 1e9
am = [max(range(len(r)), key=lambda i: (r[i], -i)) for r in got] if ok else []
print("ok" if ok and md < 1e-3 and am == ref["argmax_all"][1] else "bad rows=%d maxdiff=%g" % (len(got), md))
PYEOF
)
    check_eq "kvf-run --dump-logits $m matches transformers" ok "$res"
  else
    fail "kvf-run --dump-logits $m" "$(cat "$KVF_TMP/err")"
  fi
  want=$($PY -c "import json;print(json.dumps(json.load(open('$DATA/$m/reference.json'))['greedy_20'][1]))")
  got=$("$RUN" -m "$d" --threads 2 --ids "$ids" --greedy 20 2>&1)
  check_eq "kvf-run --greedy 20 $m matches transformers" "$want" "$got"
done

# --- kvf-mkmodel: deterministic, sharded == single file, both archs load
"$MK" --arch llama --out "$KVF_TMP/a" --layers 2 --dim 64 --heads 4 --kv-heads 2 --vocab 300 >/dev/null
"$MK" --arch llama --out "$KVF_TMP/b" --layers 2 --dim 64 --heads 4 --kv-heads 2 --vocab 300 --shards 3 >/dev/null
"$MK" --arch qwen3 --out "$KVF_TMP/q" --layers 2 --dim 64 --heads 4 --kv-heads 1 --head-dim 32 --vocab 300 --dtype f16 >/dev/null
check "kvf-mkmodel writes the index of 3 shards" test -f "$KVF_TMP/b/model.safetensors.index.json" -a -f "$KVF_TMP/b/model-00003-of-00003.safetensors"
check "kvf-mkmodel writes tokenizer.json and a chat template" \
  $PY -c "import json;t=json.load(open('$KVF_TMP/a/tokenizer.json'));c=json.load(open('$KVF_TMP/a/tokenizer_config.json'));assert t['model']['type']=='BPE' and len(t['model']['merges'])>20 and 'im_start' in c['chat_template']"
la=$("$RUN" -m "$KVF_TMP/a" --ids 5,6,7,8,9 --dump-logits - 2>&1 | md5sum)
lb=$("$RUN" -m "$KVF_TMP/b" --ids 5,6,7,8,9 --dump-logits - 2>&1 | md5sum)
check_eq "sharded model gives the logits of the single-file one" "$la" "$lb"
"$MK" --arch llama --out "$KVF_TMP/a2" --layers 2 --dim 64 --heads 4 --kv-heads 2 --vocab 300 >/dev/null
check "kvf-mkmodel is deterministic" cmp -s "$KVF_TMP/a/model.safetensors" "$KVF_TMP/a2/model.safetensors"
g=$("$RUN" -m "$KVF_TMP/q" --ids 1,2,3 --greedy 5 2>&1)
check "qwen3 model from kvf-mkmodel generates" $PY -c "import json,sys;v=json.loads(sys.argv[1]);assert len(v)==5 and all(0<=x<300 for x in v)" "$g"

# --- kvf-mkmodel's tokenizer.json works with the tokenizer library
if [ -x "$BIN/kvf-tokenize" ]; then
  t='"The key-value cache keeps the keys and values.\nint main(void) { return 0; }"'
  ids=$(echo "$t" | "$BIN/kvf-tokenize" -t "$KVF_TMP/a" --special 2>&1)
  back=$(echo "$ids" | "$BIN/kvf-tokenize" -t "$KVF_TMP/a" --decode --skip-special 2>&1)
  check_eq "kvf-mkmodel tokenizer round-trips text" "$t" "$back"
  check "kvf-mkmodel tokenizer merges (fewer ids than bytes, <s> first)" \
    $PY -c "import json,sys;v=json.loads(sys.argv[1]);assert v[0]==1 and len(v)<60" "$ids"
else
  skip "kvf-mkmodel tokenizer round trip" "kvf-tokenize not built"
fi

# --- bench output
b=$("$RUN" -m "$KVF_TMP/a" --threads 2 --bench --batch 2 --prompt-len 16 --gen 4 --json 2>&1)
check "kvf-run --bench prints its figures" $PY -c "import json,sys;d=json.loads(sys.argv[1]);assert d['memcpy_gbps']>0 and d['prefill_tok_s']>0 and d['decode_tok_s']>0 and 'weights_over_memcpy' in d" "$b"

# --- text generation (needs the tokenizer library)
if "$RUN" -m "$KVF_TMP/a" -p "hello" -n 1 >/dev/null 2>"$KVF_TMP/perr" || ! grep -q "needs the tokenizer library" "$KVF_TMP/perr"; then
  out=$("$RUN" -m "$KVF_TMP/a" -p "The key-value cache" -n 8 --threads 2 2>"$KVF_TMP/perr")
  check_contains "kvf-run -p generates 8 tokens" "$(cat "$KVF_TMP/perr")" "generated"
  out2=$("$RUN" -m "$KVF_TMP/a" -p "The key-value cache" -n 8 --threads 2 2>/dev/null)
  check_eq "kvf-run -p greedy is reproducible" "$out" "$out2"
  c=$("$RUN" -m "$KVF_TMP/a" --chat -p "hi" -n 4 --temperature 0.8 --seed 3 2>&1)
  check_contains "kvf-run --chat renders the template" "$c" "prompt tokens"
else
  skip "kvf-run -p" "built without the tokenizer library (engine/tokenizer/)"
fi

# --- errors name their cause
err=$("$RUN" -m "$KVF_TMP/nope" --ids 1 --greedy 1 2>&1); rc=$?
check_eq "missing model dir fails" 1 "$rc"
check_contains "missing model dir is named" "$err" "$KVF_TMP/nope/config.json"
err=$("$RUN" -m "$KVF_TMP/a" --ids 1,300 --greedy 1 2>&1)
check_contains "out-of-vocab id is refused" "$err" "token id 300 >= vocab size 300"

kvf_done
