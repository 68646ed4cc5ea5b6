#!/usr/bin/env bash
# Failure handling of the real kvf-gateway: an upstream killed -> the request
# is retried on the next-best worker and the client still gets its answer;
# the circuit breaker opens; 5xx before the answer started -> retried; 5xx
# from every worker -> passed through; silent workers -> 504; nothing left ->
# 502/503 JSON; a worker dying mid-stream -> the SSE stream ends with an
# error event; a client leaving cancels the upstream request; SIGTERM drains.
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/gateway_common.bash"

for n in d1 d2 d3; do start_fixture "$n" || { kvf_done; exit; }; done
start_fixture mid --interval-ms 150 --tokens 40 || { kvf_done; exit; }
start_fixture slow --interval-ms 100 --tokens 30 || { kvf_done; exit; }
addr() { echo "127.0.0.1:${FIX_PORT[$1]}"; }
start_gateway gw -o "gateway.decode_workers=$(addr d1),$(addr d2),$(addr d3)" -o gateway.model=test-model \
  -o "gateway.tokenizer=$SMALL_TOK" -o gateway.pd_threshold_tokens=0 -o gateway.breaker_failures=2 \
  -o gateway.breaker_open_ms=60s -o gateway.max_retries=2 -o gateway.upstream_first_byte_timeout_ms=400ms \
  || { kvf_done; exit; }
GW1_URL=$GW_URL GW1_SOCK=$GW_SOCK
name_of() { for n in d1 d2 d3; do [ "$(addr $n)" = "$1" ] && echo "$n"; done; }

# ---- a worker killed: retried elsewhere, then its breaker opens ----
PRE=$(long_prompt 20 "kill$RANDOM")
q() { post /v1/completions "{\"model\":\"test-model\",\"prompt\":\"$PRE $1\",\"max_tokens\":1}"; }
q a >/dev/null
victim=$(hdr x-kvf-decode)
vname=$(name_of "$victim")
kill -9 "${FIX_PID[$vname]}"
wait "${FIX_PID[$vname]}" 2>/dev/null
st=$(q b)
check_eq "worker killed: the client still gets 200" 200 "$st"
check_contains "answered by another worker" "$(body)" '"text":"worker='
if [ "$(hdr x-kvf-decode)" != "$victim" ]; then pass "x-kvf-decode is the worker that answered"; else fail "x-kvf-decode is the worker that answered" "$victim"; fi
check_contains "route says it was a retry" "$(hdr x-kvf-route)" "retry=1"
# Fresh prompts tie on every score: the dead worker is picked again at some
# point, fails a second time, and its breaker opens.
allok=1 opened=0
for i in $(seq 1 30); do
  st=$(post /v1/completions "{\"model\":\"test-model\",\"prompt\":\"fresh $i $RANDOM\",\"max_tokens\":1}")
  [ "$st" = 200 ] || allok=0
  if "$KVFCTL" -s "$GW_SOCK" show workers | grep "^$victim" | grep -q "breaker=open"; then opened=1; break; fi
done
check_eq "every request answered while a worker is dead" 1 "$allok"
check_eq "breaker opened after 2 failures" 1 "$opened"
st=$(q d)
check_eq "with the breaker open: 200" 200 "$st"
check_eq "with the breaker open: no retry needed" "" "$(hdr x-kvf-route | grep -o 'retry=[0-9]*')"
out=$("$KVFCTL" -s "$GW_SOCK" show routes 1)
check_contains "show routes: the dead worker is filtered" "$out" "filtered=breaker-open"
m=$(curl -s "$GW_URL/metrics")
check_contains "metrics: retries" "$m" "kvf_gateway_retries_total 2"
check_contains "metrics: connect errors" "$m" 'kvf_gateway_upstream_errors_total{kind="connect"} 2'
check_contains "metrics: breaker trips" "$m" "kvf_gateway_breaker_trips_total 1"
alive=()
for n in d1 d2 d3; do [ "$n" != "$vname" ] && alive+=("$n"); done

# ---- 5xx before the answer: retried ----
A=${alive[0]} B=${alive[1]}
curl -s -o /dev/null "http://$(addr "$A")/fixture/mode?status=503"
ok=1
for i in 1 2 3 4 5 6; do
  st=$(post /v1/completions "{\"model\":\"test-model\",\"prompt\":\"five hundred $i\",\"max_tokens\":1}")
  [ "$st" = 200 ] && [ "$(hdr x-kvf-decode)" = "$(addr "$B")" ] || ok=0
done
check_eq "a worker answering 503: every request served by the other" 1 "$ok"
check_contains "metrics: 5xx counted" "$(curl -s "$GW_URL/metrics")" 'kvf_gateway_upstream_errors_total{kind="5xx"}'

# ---- every worker 5xx: the worker's answer passes through ----
curl -s -o /dev/null "http://$(addr "$A")/fixture/mode?status=0"
for n in "$A" "$B"; do curl -s -o /dev/null "http://$(addr "$n")/fixture/mode?status=503"; done
start_gateway gw5 -o "gateway.decode_workers=$(addr "$A"),$(addr "$B")" -o gateway.model=test-model \
  -o gateway.breaker_failures=100 || { kvf_done; exit; }
st=$(post /v1/completions '{"model":"test-model","prompt":"x","max_tokens":1}')
check_eq "all workers 503: 503 passed through" 503 "$st"
check_contains "the worker's body passed through" "$(body)" "fixture failure"

# ---- silent workers: first-byte timeout -> 504 ----
for n in "$A" "$B"; do curl -s -o /dev/null "http://$(addr "$n")/fixture/mode?status=0&stall=1"; done
GW_URL=$GW1_URL
t0=$(date +%s%N)
st=$(post /v1/completions '{"model":"test-model","prompt":"anyone there","max_tokens":1}')
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
check_eq "silent workers: 504" 504 "$st"
check_contains "504 explains" "$(body)" "upstream_timeout"
if [ "$ms" -lt 3000 ]; then pass "504 after the first-byte timeouts (${ms} ms)"; else fail "504 after the first-byte timeouts" "${ms} ms"; fi
for n in "$A" "$B"; do curl -s -o /dev/null "http://$(addr "$n")/fixture/mode?status=0&stall=0"; done

# ---- no worker left ----
start_gateway gw0 -o "gateway.decode_workers=$victim" -o gateway.model=test-model || { kvf_done; exit; }
st=$(post /v1/completions '{"model":"test-model","prompt":"x","max_tokens":1}')
check_eq "only worker dead: 502" 502 "$st"
check_contains "502 is OpenAI JSON naming the worker" "$(body)" "$victim"
start_gateway gwn -o gateway.model=test-model || { kvf_done; exit; }
st=$(post /v1/completions '{"model":"test-model","prompt":"x","max_tokens":1}')
check_eq "no worker at all: 503" 503 "$st"
check_contains "503 says why" "$(body)" "no worker available for model 'test-model'"
check_eq "503 has Retry-After" 1 "$(hdr retry-after)"

# ---- a worker dies mid-stream: the stream ends with an error event ----
start_gateway gwm -o "gateway.decode_workers=$(addr mid)" -o gateway.model=test-model || { kvf_done; exit; }
curl -sN -o "$KVF_TMP/mid.out" -H 'Content-Type: application/json' \
  --data-binary '{"model":"test-model","prompt":"long answer","max_tokens":40,"stream":true}' "$GW_URL/v1/completions" &
BG=$!
sleep 0.6
kill -9 "${FIX_PID[mid]}"; wait "${FIX_PID[mid]}" 2>/dev/null
wait "$BG"; rc=$?
check_eq "cut stream: curl ends cleanly" 0 "$rc"
out=$(cat "$KVF_TMP/mid.out")
check_contains "cut stream: tokens had arrived" "$out" '"text":"worker=mid '
check_contains "cut stream: ends with an error event" "$out" 'data: {"error":{"message":"the worker failed while answering"'
n=$(grep -c '^data: {"id"' "$KVF_TMP/mid.out")
if [ "$n" -lt 40 ]; then pass "cut stream: fewer events than asked ($n)"; else fail "cut stream: fewer events than asked" "$n"; fi

# ---- a client leaving cancels the upstream request ----
start_gateway gws -o "gateway.decode_workers=$(addr slow)" -o gateway.model=test-model || { kvf_done; exit; }
curl -sN -o /dev/null --max-time 0.5 -H 'Content-Type: application/json' \
  --data-binary '{"model":"test-model","prompt":"x","max_tokens":30,"stream":true}' "$GW_URL/v1/completions"
sleep 0.3
stats=$(curl -s "http://$(addr slow)/fixture/stats")
check_contains "client gone: the worker's stream was canceled" "$stats" '"streams_canceled":1'
check_contains "client gone: not run to the end" "$stats" '"streams_done":0'
check_contains "client gone: gateway has nothing in flight" "$("$KVFCTL" -s "$GW_SOCK" show info)" "requests_in_flight: 0"

# ---- SIGTERM: in-flight streams finish, new requests get 503, exit 0 ----
curl -sN -o "$KVF_TMP/drain.out" -H 'Content-Type: application/json' \
  --data-binary '{"model":"test-model","prompt":"x","max_tokens":10,"stream":true}' "$GW_URL/v1/completions" &
BG=$!
sleep 0.3
kill -TERM "$GW_PID"
sleep 0.1
st=$(post /v1/completions '{"model":"test-model","prompt":"x","max_tokens":1}')
check_eq "draining: new requests get 503" 503 "$st"
check_eq "draining: /ready is 503" 503 "$(curl -s -o /dev/null -w '%{http_code}' "$GW_URL/ready")"
wait "$BG"
check_contains "draining: the in-flight stream finished" "$(cat "$KVF_TMP/drain.out")" "data: [DONE]"
for _ in $(seq 1 50); do kill -0 "$GW_PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$GW_PID" 2>/dev/null; then fail "gateway exits after draining" "still running"; else
  wait "$GW_PID"; check_eq "gateway exits 0 after draining" 0 "$?"; fi
kvf_done
