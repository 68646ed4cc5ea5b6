#!/usr/bin/env bash
# kvf-cachedir as a real process, driven by kvf-cachedir-tool (the client
# library) and kvfctl: config errors, register/store/lookup, admin commands,
# metrics, readiness after warmup, lease expiry of a stopped worker and its
# recovery, unknown model, malformed and oversized frames (error frame +
# close, others unaffected), an event gap answered by RESYNC and a
# re-announce, a WATCH stream, and 200 clients at once.
source "$(dirname "$0")/../lib.sh"
CD="$BIN/kvf-cachedir"
TOOL="$BIN/kvf-cachedir-tool"
KVFCTL="$BIN/kvfctl"
SOCK="$KVF_TMP/cd.sock"

# wait_log FILE PATTERN [TIMEOUT_S]: until PATTERN appears in FILE.
wait_log() {
  local deadline=$((SECONDS + ${3:-10}))
  while [ $SECONDS -lt $deadline ]; do
    grep -q -- "$2" "$1" 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}

# wait_count FILE PATTERN N [TIMEOUT_S]: until PATTERN matches N lines of FILE.
wait_count() {
  local deadline=$((SECONDS + ${4:-10}))
  while [ $SECONDS -lt $deadline ]; do
    [ "$(grep -c -- "$2" "$1" 2>/dev/null)" -ge "$3" ] && return 0
    sleep 0.05
  done
  return 1
}

# ---- configuration ----
out=$("$CD" -o cachedir.heartbeat_interval=2s -o cachedir.lease=3s 2>&1); rc=$?
check_eq "lease under two heartbeats exits 2" 2 "$rc"
check_contains "lease error names the keys" "$out" "cachedir.lease (3000 ms) must be at least twice cachedir.heartbeat_interval"
out=$("$CD" -o cachedir.max_keys_per_message=0 2>&1); rc=$?
check_eq "out-of-range key exits 2" 2 "$rc"
out=$("$CD" --print-config 2>&1)
check_contains "--print-config has the protocol port" "$out" 'listen = "0.0.0.0:7700";'
check_contains "--print-config has the lease" "$out" 'lease = "5s";'

# ---- start ----
P=$(free_port); H=$(free_port)
ADDR="127.0.0.1:$P"
kvf_spawn cd "$CD" -o "cachedir.listen=$ADDR" -o "cachedir.http_listen=127.0.0.1:$H" \
  -o "cachedir.admin_socket=$SOCK" -o cachedir.heartbeat_interval=100ms -o cachedir.lease=600ms \
  -o cachedir.warmup=700ms -o cachedir.max_frame=256KiB -o cachedir.max_keys_per_message=8192
CDPID=$KVF_LAST_PID
if ! wait_port "$P" 10 || ! wait_port "$H" 5 || ! wait_file "$SOCK" 5; then
  fail "daemon starts" "$(cat "$KVF_TMP/cd.log")"
  kvf_done; exit
fi
pass "daemon starts"
URL="http://127.0.0.1:$H"
check_eq "/health is 200" 200 "$(curl -s -o /dev/null -w '%{http_code}' "$URL/health")"
check_eq "/ready is 503 during warmup" 503 "$(curl -s -o /dev/null -w '%{http_code}' "$URL/ready")"

# ---- two workers ----
kvf_spawn w0 "$TOOL" worker -s "$ADDR" --id decode-0 --model llama --chain 1:64:gpu --chain 2:16:host \
  --http 127.0.0.1:8200 --waiting 3 --running 2
W0=$KVF_LAST_PID
kvf_spawn w1 "$TOOL" worker -s "$ADDR" --id decode-1 --model llama --chain 1:20:host --chain 1:8:gpu
W1=$KVF_LAST_PID
wait_log "$KVF_TMP/w0.log" "synced" 5 && wait_log "$KVF_TMP/w1.log" "synced" 5
check_contains "worker 0 re-announced on register" "$(cat "$KVF_TMP/w0.log")" "synced server=$ADDR blocks=80 swept=0"

out=$("$TOOL" lookup -s "$ADDR" --model llama --seed 1 --blocks 100)
expect="holder decode-0 state=active gpu=64 host=64 any=64
holder decode-1 state=active gpu=8 host=20 any=20"
check_eq "lookup: longest prefix per worker and tier" "$expect" "$(echo "$out" | grep '^holder')"
check_contains "lookup: matched and warming" "$out" "matched=64 keys=100 holders=2 warming=1"
out=$("$TOOL" lookup -s "$ADDR" --model llama --seed 2 --blocks 20)
check_eq "lookup of the host-tier chain" "holder decode-0 state=active gpu=0 host=16 any=16" "$(echo "$out" | grep '^holder')"
out=$("$TOOL" lookup -s "$ADDR" --model mistral --seed 1 --blocks 4); rc=$?
check_eq "unknown model fails" 1 "$rc"
check_contains "unknown model is a clear error" "$out" "error NOTFOUND msg=\"cachedir: unknown model 'mistral': no worker registered it\""
sleep 0.8
check_eq "/ready is 200 after warmup" 200 "$(curl -s -o /dev/null -w '%{http_code}' "$URL/ready")"
out=$("$TOOL" lookup -s "$ADDR" --model llama --seed 1 --blocks 4)
check_contains "warming flag cleared" "$out" "warming=0"

# ---- admin socket ----
out=$("$KVFCTL" -s "$SOCK" show workers)
check_eq "show workers: decode-0 state, blocks per tier, load" "active 64 16 0 3 2" "$(echo "$out" | awk '$1=="decode-0"{print $4,$5,$6,$7,$8,$9}')"
check_contains "show workers lists decode-1" "$out" "decode-1"
out=$("$KVFCTL" -s "$SOCK" show workers json)
if echo "$out" | /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); w={x["worker"]:x for x in d}; assert w["decode-0"]["blocks"]["gpu"]==64 and w["decode-0"]["waiting"]==3 and w["decode-0"]["http"]=="127.0.0.1:8200"'; then
  pass "show workers json"
else
  fail "show workers json" "$out"
fi
out=$("$KVFCTL" -s "$SOCK" show blocks)
check_contains "show blocks totals" "$out" "keys 80"
check_contains "show blocks per tier" "$out" "holders 100 (gpu 72, host 36, disk 0)"
check_eq "show blocks per worker" "20 8 20 0" "$(echo "$out" | awk '$1=="decode-1"{print $2,$3,$4,$5}')"
out=$("$KVFCTL" -s "$SOCK" show clients)
check_eq "show clients has the workers" "worker worker" "$(echo "$out" | awk '$4 ~ /^decode-/{print $3}' | xargs)"
out=$("$KVFCTL" -s "$SOCK" show stats)
check_contains "show stats has lookups" "$out" "kvf_cachedir_lookups_total"
check_contains "show stats has the index size" "$out" "kvf_cachedir_blocks"
out=$("$KVFCTL" -s "$SOCK" help)
check_contains "help lists show blocks" "$out" "show blocks [json]"
m=$(curl -s "$URL/metrics")
check_contains "/metrics: lookups counted" "$m" "kvf_cachedir_lookups_total 3"
check_contains "/metrics: latency histogram" "$m" "kvf_cachedir_lookup_seconds_count 3"
check_contains "/metrics: holders per tier" "$m" 'kvf_cachedir_holders{tier="gpu"} 72'

# ---- lease expiry: a stopped worker's blocks go, and come back with it ----
kill -STOP "$W1"
sleep 1.0
out=$("$TOOL" lookup -s "$ADDR" --model llama --seed 1 --blocks 100)
check_eq "expired worker's blocks dropped" "holder decode-0 state=active gpu=64 host=64 any=64" "$(echo "$out" | grep '^holder')"
check_contains "expiry logged" "$(cat "$KVF_TMP/cd.log")" 'msg="lease expired: worker and its blocks dropped" worker=decode-1 blocks=20'
check_contains "expiry counted" "$(curl -s "$URL/metrics")" "kvf_cachedir_lease_expiries_total 1"
kill -CONT "$W1"
wait_count "$KVF_TMP/w1.log" "synced.*blocks=20" 2 5
out=$("$TOOL" lookup -s "$ADDR" --model llama --seed 1 --blocks 100)
check_eq "resumed worker re-announced" 2 "$(echo "$out" | grep -c '^holder')"

# ---- bad input: error frame, close, others unaffected ----
out=$("$TOOL" raw -s "$ADDR" --hex "$(printf 'GET / HTTP/1.1\r\n\r\n' | od -An -tx1 | tr -d ' \n')")
check_contains "HTTP on the protocol port: error frame" "$out" "frame ERROR rid=0 code=PROTO fatal=1"
check_contains "HTTP on the protocol port: closed" "$out" "closed"
out=$("$TOOL" raw -s "$ADDR" --hex 4b460203000000000100000000000000)
check_contains "version 2: VERSION error" "$out" "code=VERSION fatal=1"
check_contains "version 2: versions named" "$out" "1..1"
out=$("$TOOL" raw -s "$ADDR" --hex 4b460120000000000100000000001000)
check_contains "oversized frame: TOOBIG" "$out" "code=TOOBIG fatal=1"
check_contains "oversized frame: closed" "$out" "closed"
out=$("$TOOL" raw -s "$ADDR" --hex 4b46017f000000000700000000000000)
check_contains "unknown type: non-fatal error" "$out" "frame ERROR rid=7 code=UNSUPPORTED fatal=0"
check_contains "unknown type: connection kept" "$out" "open"
out=$("$TOOL" raw -s "$ADDR" --hex 4b4601140000000000000000010000000a)
check_contains "truncated STORED: PROTO" "$out" "code=PROTO fatal=1"
out=$("$TOOL" lookup -s "$ADDR" --model llama --seed 1 --blocks 100)
check_eq "other clients still served" 2 "$(echo "$out" | grep -c '^holder')"
check_eq "workers kept their connections" 2 "$("$KVFCTL" -s "$SOCK" show clients | awk '$3=="worker"' | wc -l)"
# A lookup over the configured key limit: a clear error, connection kept.
out=$("$TOOL" lookup -s "$ADDR" --model llama --seed 1 --blocks 9000); rc=$?
check_eq "lookup over max_keys_per_message fails" 1 "$rc"
check_contains "lookup over max_keys_per_message: TOOBIG" "$out" "error TOOBIG msg=\"cachedir: LOOKUP: 9000 keys, more than the 8192 allowed"
out=$("$TOOL" raw -s "$ADDR" --hex "4b46011400000000000000000e0000000100000000000000000001200000")
check_contains "STORED over the key limit: not fatal" "$out" "code=TOOBIG fatal=0"

# ---- event gap -> RESYNC -> re-announce ----
"$TOOL" gap -s "$ADDR" --id gapper --model llama --stay-ms 600 >"$KVF_TMP/gap.log" 2>&1 &
GP=$!
KVF_PIDS+=("$GP")
wait_log "$KVF_TMP/gap.log" "SYNCED" 5
out=$(cat "$KVF_TMP/gap.log")
check_contains "gap answered by RESYNC" "$out" "frame RESYNC rid=0 expected=2 got=3"
check_contains "re-announce applied" "$out" "frame SYNCED rid=2 blocks=8 swept=0"
out=$("$KVFCTL" -s "$SOCK" show workers json)
if echo "$out" | /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); w={x["worker"]:x for x in d}; g=w["gapper"]; assert g["gaps"]==1 and g["syncs"]==1 and g["held"]==8, g'; then
  pass "show workers counts the gap and the sync"
else
  fail "show workers counts the gap and the sync" "$out"
fi
wait "$GP"
check_contains "resync counted" "$(curl -s "$URL/metrics")" 'kvf_cachedir_resyncs_total{reason="gap"} 1'

# ---- WATCH ----
out=$(timeout 5 "$TOOL" watch -s "$ADDR" --model llama --events 6)
check_contains "watch starts with a snapshot" "$(echo "$out" | head -1)" "event seq=1 kind=snapshot_begin"
check_contains "watch snapshot lists workers" "$out" "kind=worker worker=decode-0"
check_contains "watch snapshot lists blocks" "$out" "kind=stored worker=decode-0 tier=0 keys=64"

# ---- 200 clients at once ----
out=$("$TOOL" flood -s "$ADDR" --clients 200 --lookups 20 --model llama --seed 1 --blocks 64 --expect-any 64); rc=$?
check_eq "200 clients: all lookups right" 0 "$rc"
check_contains "200 clients: counts" "$out" "flood clients=200 connected=200 lookups=4000 ok=4000 errors=0 mismatched=0"

# ---- graceful stop ----
kill -TERM "$W0" "$W1"
wait "$W0" "$W1" 2>/dev/null
out=$("$TOOL" workers -s "$ADDR")
check_eq "unregistered workers left at once" 0 "$(echo "$out" | grep -c 'worker decode-')"
kill -TERM "$CDPID"
wait "$CDPID"; rc=$?
check_eq "SIGTERM exits 0" 0 "$rc"
kvf_done
