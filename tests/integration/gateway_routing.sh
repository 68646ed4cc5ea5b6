#!/usr/bin/env bash
# kvf-gateway through the real binary against stand-in workers
# (kvf-upstream-fixture): proxying and SSE passthrough, cache-aware routing
# with the local index, session affinity, the P/D decision, the OpenAI error
# answers, HTTP limits and malformed input, admin socket and metrics.
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/gateway_common.bash"

start_fixture d1 --interval-ms 150 --tokens 5 || { kvf_done; exit; }
start_fixture d2 --interval-ms 150 --tokens 5 || { kvf_done; exit; }
start_fixture p1 || { kvf_done; exit; }
D1=127.0.0.1:${FIX_PORT[d1]} D2=127.0.0.1:${FIX_PORT[d2]} P1=127.0.0.1:${FIX_PORT[p1]}
start_gateway gw -o "gateway.decode_workers=$D1,$D2" -o "gateway.prefill_workers=$P1" \
  -o gateway.model=test-model -o "gateway.tokenizer=$SMALL_TOK" -o gateway.pd_threshold_tokens=1000 \
  -o gateway.header_timeout_ms=400 -o gateway.max_body_bytes=64KiB -o gateway.max_header_bytes=4KiB \
  || { kvf_done; exit; }
pass "gateway starts with static workers"

# ---- proxying ----
st=$(post /v1/completions '{"model":"test-model","prompt":"hello there","max_tokens":3}')
check_eq "completion is 200" 200 "$st"
check_contains "answer comes from a worker" "$(body)" '"text":"worker='
dec=$(hdr x-kvf-decode)
if [ "$dec" = "$D1" ] || [ "$dec" = "$D2" ]; then pass "x-kvf-decode names the worker"; else fail "x-kvf-decode names the worker" "$dec"; fi
check_contains "x-kvf-route present" "$(hdr x-kvf-route)" "hit=0/"
check_eq "x-kvf-cached-tokens is 0 at first" 0 "$(hdr x-kvf-cached-tokens)"
check_contains "usage passes through" "$(body)" '"completion_tokens":3'
check_eq "no P/D for a short prompt" "" "$(hdr x-kvf-prefill)"
check_eq "the worker saw no x-kvf-prefill" "" "$(hdr x-fixture-prefill)"
check_eq "anonymous tenant sends no salt" "" "$(hdr x-fixture-tenant)"

st=$(post /v1/chat/completions '{"model":"test-model","messages":[{"role":"user","content":"hi"}]}')
check_eq "chat completion is 200" 200 "$st"
check_contains "chat answer shape" "$(body)" '"object":"chat.completion"'

# a long system prompt between special tokens is tokenized once (segment cache)
SYS=$(long_prompt 26 system) # > 1 KiB, < pd_threshold_tokens
for q in one two three; do
  post /v1/chat/completions "{\"model\":\"test-model\",\"messages\":[{\"role\":\"system\",\"content\":\"$SYS\"},{\"role\":\"user\",\"content\":\"question $q\"}],\"max_tokens\":1}" >/dev/null
done
check_contains "chat with a shared system prompt lands on the holder" "$(hdr x-kvf-route)" "prefix;hit="
m=$(curl -s "$GW_URL/metrics")
check_contains "tokenizer segment cache: the system prompt reused twice" "$m" 'kvf_gateway_tokenizer_segment_cache_total{result="hit"} 2'
check_contains "tokenizer segment cache: computed once" "$m" 'kvf_gateway_tokenizer_segment_cache_total{result="miss"} 1'

# ---- SSE arrives as the worker produces it ----
out=$("$PY" - "$GW_PORT" <<'EOF'
import socket, sys, time, json
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
body = json.dumps({"model": "test-model", "prompt": "stream please", "max_tokens": 5, "stream": True})
s.sendall(("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           "Content-Length: %d\r\n\r\n%s" % (len(body), body)).encode())
t0 = time.time(); buf = b""; times = []; seen = 0
while b"data: [DONE]" not in buf:
    d = s.recv(65536)
    if not d: break
    buf += d
    n = buf.count(b"data: {")
    while seen < n:
        times.append(time.time() - t0); seen += 1
print(len(times), "%.3f" % times[0], "%.3f" % (times[-1] - times[0]), b"data: [DONE]" in buf,
      b"x-kvf-decode" in buf)
EOF
)
read -r nev first spread done hashdr <<<"$out"
check_eq "SSE: 5 events through the gateway" 5 "$nev"
check_eq "SSE: stream completes with [DONE]" True "$done"
check_eq "SSE: routing headers on the stream" True "$hashdr"
if awk -v s="$spread" 'BEGIN{exit !(s >= 0.45)}'; then pass "SSE: events arrive as produced (spread ${spread}s over 4 intervals of 150 ms)"; else fail "SSE: events arrive as produced" "spread $spread s"; fi

# ---- cache-aware routing (local index) ----
PRE=$(long_prompt 20 alpha)
post /v1/completions "{\"model\":\"test-model\",\"prompt\":\"$PRE question one\",\"max_tokens\":1}" >/dev/null
first=$(hdr x-kvf-decode)
post /v1/completions "{\"model\":\"test-model\",\"prompt\":\"$PRE question two\",\"max_tokens\":1}" >/dev/null
check_eq "shared prefix goes to the same worker" "$first" "$(hdr x-kvf-decode)"
check_contains "route reason is prefix" "$(hdr x-kvf-route)" "prefix;hit="
cached=$(hdr x-kvf-cached-tokens)
if [ "${cached:-0}" -gt 0 ]; then pass "x-kvf-cached-tokens counts the prefix ($cached)"; else fail "x-kvf-cached-tokens counts the prefix" "$cached"; fi
out=$("$KVFCTL" -s "$GW_SOCK" show routes 1)
check_contains "show routes lists the decision" "$out" "reason=prefix;hit="
check_contains "show routes has every scorer's score" "$out" "prefix=1.000 queue="
out=$("$KVFCTL" -s "$GW_SOCK" show routes 2 json)
if echo "$out" | "$PY" -c 'import json,sys; d=json.load(sys.stdin); assert len(d)==2 and len(d[0]["candidates"])==3 and "prefix" in d[0]["candidates"][0] and d[0]["candidates"][0]["worker"]==d[0]["decode"]'; then
  pass "show routes json"; else fail "show routes json" "$out"; fi

# ---- session affinity ----
sw=""
ok=1
for i in 1 2 3 4; do
  post /v1/completions "{\"model\":\"test-model\",\"prompt\":\"unrelated prompt $i $RANDOM\",\"max_tokens\":1}" -H "x-kvf-session: chat-42" >/dev/null
  w=$(hdr x-kvf-decode)
  [ -z "$sw" ] && sw=$w
  [ "$w" = "$sw" ] || ok=0
done
check_eq "x-kvf-session pins the worker" 1 "$ok"
check_contains "session reason" "$(hdr x-kvf-route)" "session"
check_eq "session forwarded to the worker" "chat-42" "$(hdr x-fixture-session)"

# ---- P/D: a long uncached prompt also gets a prefill worker ----
LONG=$(long_prompt 60 "bravo$RANDOM")
st=$(post /v1/completions "{\"model\":\"test-model\",\"prompt\":\"$LONG\",\"max_tokens\":1}")
check_eq "long prompt is 200" 200 "$st"
check_eq "x-kvf-prefill names the prefill worker" "$P1" "$(hdr x-kvf-prefill)"
check_eq "decode worker got x-kvf-prefill" "$P1" "$(hdr x-fixture-prefill)"
check_contains "route reason says pd" "$(hdr x-kvf-route)" ";pd"
st=$(post /v1/completions "{\"model\":\"test-model\",\"prompt\":\"$LONG\",\"max_tokens\":1}")
check_eq "same prompt again: cached on the decode worker, no P/D" "" "$(hdr x-kvf-prefill)"

# ---- /v1/models and errors in OpenAI's shape ----
out=$(curl -s "$GW_URL/v1/models")
check_contains "/v1/models lists the model" "$out" '"id":"test-model"'
st=$(post /v1/completions '{"model":"test-model","prompt":')
check_eq "bad JSON is 400" 400 "$st"
check_contains "400 is OpenAI error JSON" "$(body)" '"type":"invalid_request_error"'
st=$(post /v1/completions '{"model":"test-model","prompt":"x","max_tokens":"ten"}')
check_eq "wrong type is 400" 400 "$st"
check_contains "400 names the param" "$(body)" '"param":"max_tokens"'
st=$(post /v1/completions '{"model":"nope","prompt":"x"}')
check_eq "unknown model is 404" 404 "$st"
check_contains "404 code" "$(body)" '"code":"model_not_found"'
check_eq "GET on completions is 405" 405 "$(curl -s -o /dev/null -w '%{http_code}' "$GW_URL/v1/completions")"
check_eq "unknown path is 404" 404 "$(curl -s -o /dev/null -w '%{http_code}' "$GW_URL/v2/nothing")"
check_eq "/health" 200 "$(curl -s -o /dev/null -w '%{http_code}' "$GW_URL/health")"
check_eq "/ready" 200 "$(curl -s -o /dev/null -w '%{http_code}' "$GW_URL/ready")"

# ---- limits and malformed HTTP: 400/413/431/408 and close; others unaffected ----
curl -sN -o "$KVF_TMP/bg.out" -H 'Content-Type: application/json' \
  --data-binary '{"model":"test-model","prompt":"background stream","max_tokens":5,"stream":true}' \
  "$GW_URL/v1/completions" &
BG=$!
sleep 0.1
resp=$(printf 'GARBAGE\r\n\r\n' | socat -t 2 - "TCP:127.0.0.1:$GW_PORT")
check_contains "malformed request line gets 400" "$resp" "HTTP/1.1 400"
check_contains "400 closes the connection" "$resp" "Connection: close"
resp=$(printf 'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n' | socat -t 2 - "TCP:127.0.0.1:$GW_PORT")
check_contains "smuggling attempt gets 400" "$resp" "HTTP/1.1 400"
big=$(head -c 70000 /dev/zero | tr '\0' 'a')
st=$(post /v1/completions "{\"model\":\"test-model\",\"prompt\":\"$big\"}")
check_eq "body over max_body_bytes is 413" 413 "$st"
st=$(curl -s -o /dev/null -w '%{http_code}' -H "X-Big: $(head -c 5000 /dev/zero | tr '\0' 'b')" "$GW_URL/v1/models")
check_eq "head over max_header_bytes is 431" 431 "$st"
out=$("$PY" - "$GW_PORT" <<'EOF'
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
t0 = time.time()
s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")   # and never the rest
buf = b""
s.settimeout(5)
while True:
    d = s.recv(4096)
    if not d: break
    buf += d
print(int((time.time() - t0) * 1000), buf.split(b"\r\n")[0].decode())
EOF
)
read -r ms line <<<"$out"
check_contains "slowloris head gets 408" "$line" "408"
if [ "$ms" -lt 1500 ]; then pass "slow head cut after header_timeout_ms (${ms} ms)"; else fail "slow head cut after header_timeout_ms" "${ms} ms"; fi
wait "$BG"
check_eq "concurrent stream unaffected: 5 events" 5 "$(grep -c '^data: {' "$KVF_TMP/bg.out")"
check_contains "concurrent stream unaffected: [DONE]" "$(cat "$KVF_TMP/bg.out")" "data: [DONE]"
check_eq "still serving" 200 "$(post /v1/completions '{"model":"test-model","prompt":"after","max_tokens":1}')"

# ---- operations ----
out=$("$KVFCTL" -s "$GW_SOCK" show workers)
check_contains "show workers lists decode workers" "$out" "$D1"
check_contains "show workers has the prefill worker" "$out" "role=prefill"
check_contains "show workers breaker state" "$out" "breaker=closed"
out=$("$KVFCTL" -s "$GW_SOCK" show info)
check_contains "show info has the gateway's lines" "$out" "policy: score"
if grep -qE "^index: (local|cachedir)" <<<"$out"; then pass "show info names the index"; else fail "show info names the index" "$out"; fi
out=$("$KVFCTL" -s "$GW_SOCK" show tenants)
check_contains "show tenants lists anonymous" "$out" "anonymous"
m=$(curl -s "$GW_URL/metrics")
check_contains "metrics: routed by reason" "$m" 'kvf_gateway_routed_total{reason="prefix"}'
check_contains "metrics: P/D count" "$m" "kvf_gateway_pd_requests_total 1"
check_contains "metrics: routing cost histogram" "$m" "kvf_gateway_routing_seconds_count"
check_contains "metrics: rejected" "$m" 'kvf_gateway_rejected_total{reason="bad_request"}'
check_contains "metrics: workers" "$m" 'kvf_gateway_workers{state="active"} 3'
kvf_done
