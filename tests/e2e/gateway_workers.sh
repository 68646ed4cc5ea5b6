#!/usr/bin/env bash
# End to end through kvf-gateway and real workers (kvf-prefill, kvf-decode on
# a small kvf-mkmodel model): the cache holder is chosen and the worker
# confirms the hit with its own x-kvf-cached-tokens, equal to the gateway's
# prediction; the P/D path is taken for long uncached prompts; streaming
# works through; tenants never share KV on the worker; a killed decode worker
# fails over.
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/../integration/gateway_common.bash"

for b in kvf-mkmodel kvf-decode kvf-prefill; do
  [ -x "$BIN/$b" ] || { skip "gateway e2e" "$b not built"; kvf_done; exit; }
done
MODEL="$KVF_TMP/m"
"$BIN/kvf-mkmodel" --arch llama --out "$MODEL" --layers 2 --dim 128 --vocab 512 >/dev/null \
  || { fail "kvf-mkmodel" "cannot create the model"; kvf_done; exit; }
COMMON=(-o "engine.model_dir=$MODEL" -o engine.threads=1 -o engine.kv_blocks=1024)
declare -A WPORT WPID
start_worker() { # start_worker NAME ROLE
  local p f
  p=$(free_port); f=$(free_port)
  kvf_spawn "$1" "$BIN/kvf-$2" "${COMMON[@]}" -o "$2.http_listen=127.0.0.1:$p" -o "$2.fabric_listen=127.0.0.1:$f" \
    -o "$2.admin_socket="
  WPORT[$1]=$p WPID[$1]=$KVF_LAST_PID
}
start_worker dec0 decode
start_worker dec1 decode
start_worker pre0 prefill
for w in dec0 dec1 pre0; do
  for _ in $(seq 1 200); do curl -sf "http://127.0.0.1:${WPORT[$w]}/ready" >/dev/null && break; sleep 0.05; done
  curl -sf "http://127.0.0.1:${WPORT[$w]}/ready" >/dev/null || { fail "worker $w ready" "$(tail -n 5 "$KVF_TMP/$w.log")"; kvf_done; exit; }
done
pass "workers ready"
D0=127.0.0.1:${WPORT[dec0]} D1=127.0.0.1:${WPORT[dec1]} P0=127.0.0.1:${WPORT[pre0]}
start_gateway gw -o "gateway.decode_workers=$D0,$D1" -o "gateway.prefill_workers=$P0" -o "gateway.tokenizer=$MODEL" \
  -o gateway.pd_threshold_tokens=700 -o gateway.auth=true -o "gateway.api_keys=acme:sk-acme-000001,globex:sk-globex-00001" \
  || { kvf_done; exit; }
A=(-H 'Authorization: Bearer sk-acme-000001')
B=(-H 'Authorization: Bearer sk-globex-00001')

check_contains "/v1/models names the model" "$(curl -s "${A[@]}" "$GW_URL/v1/models")" '"id":"m"'
PRE=$(long_prompt 16 shared)
st=$(post /v1/completions "{\"model\":\"m\",\"prompt\":\"$PRE What is KV caching?\",\"max_tokens\":4}" "${A[@]}")
check_eq "first request 200" 200 "$st"
first=$(hdr x-kvf-decode)
check_eq "first request: nothing cached (worker's count)" 0 "$(hdr x-kvf-cached-tokens)"
st=$(post /v1/completions "{\"model\":\"m\",\"prompt\":\"$PRE Why route by prefix?\",\"max_tokens\":4}" "${A[@]}")
check_eq "second request 200" 200 "$st"
check_eq "second request lands on the cache holder" "$first" "$(hdr x-kvf-decode)"
check_contains "route reason is prefix" "$(hdr x-kvf-route)" "prefix;hit="
wc=$(hdr x-kvf-cached-tokens)
if [ "${wc:-0}" -gt 0 ]; then pass "the worker reused the prefix ($wc tokens)"; else fail "the worker reused the prefix" "[$wc]"; fi
pred=$("$KVFCTL" -s "$GW_SOCK" show routes 1 | sed -n 's/.*cached_tokens=\([0-9]*\).*/\1/p')
check_eq "gateway's prediction equals the worker's count" "$wc" "$pred"
check_contains "usage agrees" "$(body)" "\"cached_tokens\":$wc"

# Another tenant, same prompt: no hit predicted, and the worker computes it all.
st=$(post /v1/completions "{\"model\":\"m\",\"prompt\":\"$PRE Why route by prefix?\",\"max_tokens\":4}" "${B[@]}")
check_eq "other tenant 200" 200 "$st"
check_contains "other tenant: no hit predicted" "$(hdr x-kvf-route)" "hit=0/"
check_eq "other tenant: the worker cached nothing for it" 0 "$(hdr x-kvf-cached-tokens)"

# Streaming through to a real worker.
out=$(curl -sN "${A[@]}" -H 'Content-Type: application/json' \
  --data-binary "{\"model\":\"m\",\"prompt\":\"$PRE stream\",\"max_tokens\":6,\"ignore_eos\":true,\"stream\":true,\"stream_options\":{\"include_usage\":true}}" \
  "$GW_URL/v1/completions")
check_contains "stream ends with [DONE]" "$out" "data: [DONE]"
check_contains "stream carries usage with cached tokens" "$out" '"cached_tokens":'
check_contains "stream: usage counts the 6 tokens" "$out" '"completion_tokens":6'
n=$(grep -c '^data: {' <<<"$out")
if [ "$n" -ge 3 ]; then pass "stream: several chunks passed through ($n)"; else fail "stream: several chunks passed through" "$n"; fi

# Chat through the gateway tokenizes like the worker: a repeated chat hits.
CHAT="{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"$PRE\"},{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":2}"
post /v1/chat/completions "$CHAT" "${A[@]}" >/dev/null
st=$(post /v1/chat/completions "$CHAT" "${A[@]}")
check_eq "chat 200" 200 "$st"
wc=$(hdr x-kvf-cached-tokens)
pred=$("$KVFCTL" -s "$GW_SOCK" show routes 1 | sed -n 's/.*cached_tokens=\([0-9]*\).*/\1/p')
if [ "${wc:-0}" -gt 0 ] && [ "$wc" = "$pred" ]; then pass "chat: prediction $pred equals the worker's $wc"; else fail "chat: prediction equals the worker's" "pred=$pred worker=$wc"; fi

# P/D: a long uncached prompt is sent with x-kvf-prefill.
LONG=$(long_prompt 40 "pd$RANDOM")
st=$(post /v1/completions "{\"model\":\"m\",\"prompt\":\"$LONG\",\"max_tokens\":2}" "${A[@]}")
check_eq "long prompt 200" 200 "$st"
check_eq "P/D path taken: x-kvf-prefill" "$P0" "$(hdr x-kvf-prefill)"
check_contains "route reason says pd" "$(hdr x-kvf-route)" ";pd"

# A decode worker killed: the next request fails over.
post /v1/completions "{\"model\":\"m\",\"prompt\":\"$PRE failover\",\"max_tokens\":2}" "${A[@]}" >/dev/null
victim=$(hdr x-kvf-decode)
[ "$victim" = "$D0" ] && vname=dec0 || vname=dec1
kill -9 "${WPID[$vname]}"; wait "${WPID[$vname]}" 2>/dev/null
st=$(post /v1/completions "{\"model\":\"m\",\"prompt\":\"$PRE failover again\",\"max_tokens\":2}" "${A[@]}")
check_eq "decode worker killed: still 200" 200 "$st"
if [ "$(hdr x-kvf-decode)" != "$victim" ]; then pass "answered by the surviving worker"; else fail "answered by the surviving worker" "$victim"; fi
check_contains "the failover shows in the route" "$(hdr x-kvf-route)" "retry=1"
kvf_done
