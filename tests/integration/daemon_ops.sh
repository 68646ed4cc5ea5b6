#!/usr/bin/env bash
# The operations surface every daemon shares (common/daemon.c), on a real
# process: admin socket through kvfctl and socat, /metrics, /health, /ready,
# config errors, malformed HTTP, drain, graceful SIGTERM.
source "$(dirname "$0")/../lib.sh"
TESTD="$KVF_BUILD/tests/bin/kvf-testd"
KVFCTL="$BIN/kvfctl"
SOCK="$KVF_TMP/testd.sock"

# ---- configuration errors exit 2 with the key named ----
out=$("$TESTD" -o testd.max_slow=999 2>&1); rc=$?
check_eq "bad -o value exits 2" 2 "$rc"
check_contains "bad -o value names the key" "$out" "testd.max_slow: value 999 out of range"
printf 'testd: {\n  nope = 1;\n};\n' >"$KVF_TMP/bad.conf"
out=$("$TESTD" -c "$KVF_TMP/bad.conf" 2>&1); rc=$?
check_eq "unknown key exits 2" 2 "$rc"
check_contains "unknown key names file:line" "$out" "bad.conf:2: unknown key 'testd.nope'"
out=$("$TESTD" -o testd.http_listen=nonsense 2>&1); rc=$?
check_eq "bad listen address fails" 1 "$rc"
check_contains "bad listen address explained" "$out" "missing ':port'"
out=$("$TESTD" --print-config -o cluster.block_size=32 2>&1); rc=$?
check_eq "--print-config exits 0" 0 "$rc"
check_contains "--print-config shows overrides" "$out" "block_size = 32;"

# ---- a running daemon ----
PORT=$(free_port)
kvf_spawn testd "$TESTD" -o "testd.http_listen=127.0.0.1:$PORT" -o "testd.admin_socket=$SOCK" -o testd.log_level=debug
PID=$KVF_LAST_PID
if ! wait_port "$PORT" 10 || ! wait_file "$SOCK" 5; then
  fail "daemon starts" "$(cat "$KVF_TMP/testd.log")"
  kvf_done; exit
fi
pass "daemon starts"
URL="http://127.0.0.1:$PORT"

check_eq "/health is 200" 200 "$(curl -s -o /dev/null -w '%{http_code}' "$URL/health")"
check_eq "/ready is 200" 200 "$(curl -s -o /dev/null -w '%{http_code}' "$URL/ready")"
check_eq "POST /echo" "hello" "$(curl -s --data-binary hello "$URL/echo")"
check_eq "unknown route is 404" 404 "$(curl -s -o /dev/null -w '%{http_code}' "$URL/nope")"
metrics=$(curl -s -D "$KVF_TMP/mh" "$URL/metrics")
check_contains "/metrics content type" "$(cat "$KVF_TMP/mh")" "text/plain; version=0.0.4"
check_contains "/metrics build info" "$metrics" 'kvf_build_info{daemon="kvf-testd",version="'
check_contains "/metrics counts requests" "$metrics" "kvf_http_requests_total "
check_contains "/metrics process memory" "$metrics" "process_resident_memory_bytes "
check_contains "/metrics has 4xx responses" "$metrics" 'kvf_http_responses_total{class="4xx"} 1'

mode=$(stat -c '%a' "$SOCK")
check_eq "admin socket mode 0600" 600 "$mode"
out=$("$KVFCTL" -s "$SOCK" show info); rc=$?
check_eq "kvfctl show info exits 0" 0 "$rc"
check_contains "show info names the daemon" "$out" "name: kvf-testd"
check_contains "show info has the component's lines" "$out" "slow_inflight: 0"
out=$("$KVFCTL" -s "$SOCK" show stats)
check_contains "show stats lists metrics" "$out" "kvf_http_requests_total "
out=$("$KVFCTL" -s "$SOCK" show stats json)
if echo "$out" | /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["kvf_build_info"]["type"]=="gauge"'; then
  pass "show stats json is JSON"
else
  fail "show stats json is JSON" "$out"
fi
out=$("$KVFCTL" -s "$SOCK" show config)
check_contains "show config prints the testd section" "$out" "max_slow = 8;"
check_contains "show config hides the cluster secret" "$out" 'secret = "<redacted>";'
out=$("$TESTD" -o "testd.http_listen=127.0.0.1:$(free_port)" -o "testd.admin_socket=$SOCK" 2>&1); rc=$?
check_eq "a second daemon on the same admin socket fails" 1 "$rc"
check_contains "it says the socket is in use" "$out" "in use by another process"
check "the first daemon's socket survives" test -S "$SOCK"
out=$("$KVFCTL" -s "$SOCK" help)
check_contains "help lists component commands" "$out" "show slow"
out=$("$KVFCTL" -s "$SOCK" frobnicate 2>&1); rc=$?
check_eq "unknown command exits 1" 1 "$rc"
check_contains "unknown command answered" "$out" "error: unknown command 'frobnicate'"
out=$(printf 'bogus\nshow slow\n' | "$KVFCTL" -s "$SOCK")
check_contains "connection usable after an error" "$out" "inflight: 0"
out=$(echo "show info" | socat -t 2 - "UNIX-CONNECT:$SOCK")
check_contains "socat speaks the admin protocol" "$out" "name: kvf-testd"

# ---- malformed HTTP: 400 and the daemon keeps serving ----
resp=$(printf 'GARBAGE\r\n\r\n' | socat -t 2 - "TCP:127.0.0.1:$PORT")
check_contains "malformed request gets 400" "$resp" "HTTP/1.1 400"
resp=$(printf 'GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n' | socat -t 2 - "TCP:127.0.0.1:$PORT")
check_contains "smuggling attempt gets 400" "$resp" "HTTP/1.1 400"
check_eq "still serving after bad requests" 200 "$(curl -s -o /dev/null -w '%{http_code}' "$URL/health")"

# ---- drain and graceful SIGTERM ----
curl -s "$URL/slow?ms=1500" >"$KVF_TMP/slow.out" &
CURL_PID=$!
for _ in $(seq 1 50); do
  "$KVFCTL" -s "$SOCK" show slow | grep -q 'inflight: 1' && break
  sleep 0.05
done
out=$("$KVFCTL" -s "$SOCK" drain)
check_contains "drain reports work in flight" "$out" "work still in flight"
check_eq "/ready is 503 while draining" 503 "$(curl -s -o /dev/null -w '%{http_code}' "$URL/ready")"
check_eq "/health stays 200 while draining" 200 "$(curl -s -o /dev/null -w '%{http_code}' "$URL/health")"
kill -TERM "$PID"
wait "$CURL_PID"
check_eq "in-flight request finishes after SIGTERM" "slow done" "$(cat "$KVF_TMP/slow.out")"
for _ in $(seq 1 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.05; done
if kill -0 "$PID" 2>/dev/null; then
  fail "daemon exits after draining" "still running"
else
  wait "$PID"; rc=$?
  check_eq "daemon exits 0 after draining" 0 "$rc"
fi
check "admin socket removed on exit" test ! -e "$SOCK"
check_contains "log is logfmt" "$(cat "$KVF_TMP/testd.log")" 'level=info mod=daemon msg="stopped" name=kvf-testd'
kvf_done
