#!/usr/bin/env bash
# Prefill/decode disaggregation between real daemons on loopback: the KV
# crosses the fabric, the output equals transformers' greedy output, leases
# are released or expire, and every failure of the prefill worker falls back
# to local compute with the request still answered.
source "$(dirname "$0")/../lib.sh"
MODEL="$KVF_ROOT/tests/data/models/llama"
REF="$MODEL/reference.json"
PP=$(free_port); DP=$(free_port)
COMMON=(-o "engine.model_dir=$MODEL" -o engine.threads=1 -o engine.kv_blocks=512)
kvf_spawn prefill "$BIN/kvf-prefill" "${COMMON[@]}" -o "prefill.http_listen=127.0.0.1:$PP" \
  -o prefill.fabric_listen=127.0.0.1:0 -o "prefill.admin_socket=$KVF_TMP/p.sock" -o prefill.lease_ms=1500
PPID_=$KVF_LAST_PID
kvf_spawn decode "$BIN/kvf-decode" "${COMMON[@]}" -o "decode.http_listen=127.0.0.1:$DP" \
  -o decode.fabric_listen=127.0.0.1:0 -o "decode.admin_socket=$KVF_TMP/d.sock" -o decode.prefill_timeout_ms=1500
if ! wait_ready "$PP" 30 || ! wait_ready "$DP" 30; then
  fail "workers start" "$(cat "$KVF_TMP"/*.log)"
  kvf_done; exit
fi
pass "prefill and decode workers start"

py() { /usr/bin/python3 -c "$@"; }
req() { # req PROMPT_INDEX [extra curl args...]: greedy 20 tokens for a reference input
  local body
  body=$(py "import json; d=json.load(open('$REF')); print(json.dumps({'model':'llama','prompt':d['inputs'][$1],'max_tokens':20,'temperature':0,'ignore_eos':True,'return_token_ids':True}))")
  shift
  curl -s -D "$KVF_TMP/h" -H 'Content-Type: application/json' "$@" "http://127.0.0.1:$DP/v1/completions" -d "$body"
}
hdr() { grep -i "^$1:" "$KVF_TMP/h" | tr -d '\r' | awk '{print $2}'; }
want=$(py "import json; print(json.load(open('$REF'))['greedy_20'][1])")

# ---- the disaggregated path ----
out=$(req 1 -H "x-kvf-prefill: 127.0.0.1:$PP")
got=$(echo "$out" | py "import json,sys; print(json.load(sys.stdin)['choices'][0]['token_ids'])")
check_eq "disaggregated greedy output equals transformers' (and aggregated)" "$want" "$got"
check_eq "response names the prefill worker" "127.0.0.1:$PP" "$(hdr x-kvf-prefill)"
check_eq "KV of all prompt tokens but the last was fetched" 39 "$(hdr x-kvf-fetched-tokens)"
check_eq "the decode worker computed only the last prompt token" 1 "$(hdr x-kvf-computed-tokens)"
check_contains "usage counts fetched tokens as cached" "$out" '"cached_tokens":39'
stats=$("$BIN/kvfctl" -s "$KVF_TMP/d.sock" show stats)
bytes=$(echo "$stats" | awk '/^kvf_worker_pull_bytes_total /{print $2}')
check "pulled bytes counted (3 blocks)" test "${bytes:-0}" -eq $((3 * 8192))
check_contains "fabric byte counters moved" "$(echo "$stats" | grep '^kvf_fabric_')" "kvf_fabric"
pstats=$("$BIN/kvfctl" -s "$KVF_TMP/p.sock" show stats)
check_contains "prefill worker computed the prompt" "$pstats" "kvf_worker_prompt_tokens_total 40"
# no_leases SECONDS: polls the prefill worker until it holds no lease;
# prints what it still holds at the end
no_leases() {
  local leases="" i
  for i in $(seq 1 $(($1 * 20))); do
    leases=$("$BIN/kvfctl" -s "$KVF_TMP/p.sock" show leases | tail -n +2)
    [ -z "$leases" ] && break
    sleep 0.05
  done
  printf '%s' "$leases"
}
check_eq "the decode worker released the lease" "" "$(no_leases 2)"

# Without the header the same decode worker computes locally (its cache
# now holds the pulled blocks, so only the tail is computed).
out=$(req 1)
got=$(echo "$out" | py "import json,sys; print(json.load(sys.stdin)['choices'][0]['token_ids'])")
check_eq "aggregated output on the same worker is the same" "$want" "$got"
check_eq "pulled blocks entered the decode worker's prefix cache" 32 "$(hdr x-kvf-cached-tokens)"

# ---- a lease nobody releases expires ----
curl -s -o "$KVF_TMP/lease.json" -H 'Content-Type: application/json' "http://127.0.0.1:$PP/kvf/v1/prefill" \
  -d '{"model":"llama","prompt_token_ids":[5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21]}'
check_contains "a prefill answers a lease with a descriptor" "$(cat "$KVF_TMP/lease.json")" '"descriptor":"'
check_contains "the lease is listed" "$("$BIN/kvfctl" -s "$KVF_TMP/p.sock" show leases)" "prefill"
# lease_ms is 1.5 s: poll for up to 10 s rather than guess the scheduling
check_eq "an unreleased lease expires" "" "$(no_leases 10)"
check_contains "expiry counted" "$("$BIN/kvfctl" -s "$KVF_TMP/p.sock" show stats)" "kvf_worker_leases_expired_total 1"
code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
  "http://127.0.0.1:$PP/kvf/v1/release" -d '{"lease_id":"0123456789abcdef"}')
check_eq "releasing an unknown lease is a 404" 404 "$code"
code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
  "http://127.0.0.1:$PP/kvf/v1/prefill" -d '{"model":"llama","prompt_token_ids":"nope"}')
check_eq "a malformed prefill request is a 400" 400 "$code"

# ---- failures fall back to local compute ----
# A prefill worker that hangs: the decode worker gives up after prefill_timeout_ms.
kill -STOP "$PPID_"
out=$(req 0 -H "x-kvf-prefill: 127.0.0.1:$PP")
check_contains "hung prefill worker: the request still completes" "$out" '"completion_tokens":20'
check_eq "hung prefill worker: computed locally" 0 "$(hdr x-kvf-fetched-tokens)"
# Killed mid-request: the decode worker is waiting on it when it dies.
req 1 -H "x-kvf-prefill: 127.0.0.1:$PP" -H 'x-kvf-tenant: other' >"$KVF_TMP/killed.json" &
CURL=$!
sleep 0.3
kill -9 "$PPID_"
kill -CONT "$PPID_" 2>/dev/null
wait "$CURL"
got=$(py "import json; print(json.load(open('$KVF_TMP/killed.json'))['choices'][0]['token_ids'])")
check_eq "prefill worker killed mid-request: the request completes with the right output" "$want" "$got"
out=$(req 0 -H "x-kvf-prefill: 127.0.0.1:$PP")
check_contains "prefill worker gone: the request completes" "$out" '"completion_tokens":20'
stats=$("$BIN/kvfctl" -s "$KVF_TMP/d.sock" show stats)
check_contains "fallbacks counted" "$stats" "kvf_decode_prefill_fallbacks_total 3"
check_contains "no request left behind" "$("$BIN/kvfctl" -s "$KVF_TMP/d.sock" show requests | wc -l)" "1"

# ---- a prefill worker that answers wrong ----
# Each bad answer is refused before any block is pulled; the request is
# computed locally and the log names the reason.
FP=$(free_port)
py "
import json
real = json.load(open('$KVF_TMP/lease.json'))   # a genuine answer, for its descriptor
def tweak(**kw):
    d = dict(real); d.update(kw); return {'status': 200, 'body': json.dumps(d)}
json.dump([
    {'status': 503, 'body': '{\"error\":{\"message\":\"busy\"}}'},
    {'status': 200, 'body': 'not json'},
    tweak(descriptor='AAAA'),
    tweak(block_bytes=real['block_bytes'] * 2),
    tweak(n_tokens=real['n_tokens'] + 1000),
    tweak(lease_id='short'),
], open('$KVF_TMP/answers.json', 'w'))"
kvf_spawn fake /usr/bin/python3 "$KVF_ROOT/tests/integration/py/fake_prefill.py" "$FP" "$KVF_TMP/answers.json"
wait_port "$FP" 10 || fail "fake prefill worker starts" "$(cat "$KVF_TMP/fake.log")"
for why in "the prefill worker refused" "malformed prefill answer" "bad descriptor" \
           "block size mismatch" "block count mismatch" "malformed prefill answer"; do
  out=$(req 0 -H "x-kvf-prefill: 127.0.0.1:$FP")
  check_contains "bad prefill answer ($why): the request completes" "$out" '"completion_tokens":20'
  check_eq "bad prefill answer ($why): nothing fetched" 0 "$(hdr x-kvf-fetched-tokens)"
done
check_eq "the decode worker asked the fake prefill worker each time" 6 "$(grep -c '^/kvf/v1/prefill$' "$KVF_TMP/answers.json.log")"
for why in "the prefill worker refused" "malformed prefill answer" "bad descriptor" \
           "block size mismatch" "block count mismatch"; do
  check_contains "the log says why: $why" "$(cat "$KVF_TMP/decode.log")" "$why"
done
check_contains "bad answers counted as fallbacks" "$("$BIN/kvfctl" -s "$KVF_TMP/d.sock" show stats)" \
  "kvf_decode_prefill_fallbacks_total 9"
kvf_done
