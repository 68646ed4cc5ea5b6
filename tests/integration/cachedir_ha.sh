#!/usr/bin/env bash
# Two kvf-cachedir replicas with workers publishing to both: identical
# answers from each, reader failover when one dies, a killed replica that
# restarts on the same port is complete again (same LOOKUP answers) within a
# heartbeat plus the re-announce, a worker restart (new epoch) replaces its
# old entries at once, and a dead worker is unlisted at once and dropped
# when its lease ends.
source "$(dirname "$0")/../lib.sh"
CD="$BIN/kvf-cachedir"
TOOL="$BIN/kvf-cachedir-tool"

wait_count() {
  local deadline=$((SECONDS + ${4:-10}))
  while [ $SECONDS -lt $deadline ]; do
    [ "$(grep -c -- "$2" "$1" 2>/dev/null)" -ge "$3" ] && return 0
    sleep 0.05
  done
  return 1
}

PA=$(free_port); PB=$(free_port)
A="127.0.0.1:$PA"; B="127.0.0.1:$PB"
start_replica() { # NAME PORT
  kvf_spawn "$1" "$CD" -o "cachedir.listen=127.0.0.1:$2" -o "cachedir.http_listen=127.0.0.1:0" \
    -o "cachedir.admin_socket=" -o cachedir.heartbeat_interval=100ms -o cachedir.lease=1s -o cachedir.warmup=0
}
start_replica ra "$PA"; RA=$KVF_LAST_PID
start_replica rb "$PB"
if ! wait_port "$PA" 10 || ! wait_port "$PB" 10; then
  fail "replicas start" "$(cat "$KVF_TMP/ra.log" "$KVF_TMP/rb.log")"
  kvf_done; exit
fi
pass "replicas start"

kvf_spawn w0 "$TOOL" worker -s "$A,$B" --id decode-0 --model llama --chain 5:48:gpu --chain 6:10:host
W0=$KVF_LAST_PID
kvf_spawn w1 "$TOOL" worker -s "$A,$B" --id decode-1 --model llama --chain 5:30:gpu
kvf_spawn w2 "$TOOL" worker -s "$A,$B" --id prefill-0 --model llama --role prefill --chain 5:12:host
for w in w0 w1 w2; do wait_count "$KVF_TMP/$w.log" "^synced" 2 5; done
check_eq "each worker re-announced to both replicas" "2 2 2" \
  "$(for w in w0 w1 w2; do grep -c '^synced' "$KVF_TMP/$w.log"; done | xargs)"

holders() { "$TOOL" lookup -s "$1" --model llama --seed "${2:-5}" --blocks 64 | grep '^holder'; }
expect="holder decode-0 state=active gpu=48 host=48 any=48
holder decode-1 state=active gpu=30 host=30 any=30
holder prefill-0 state=active gpu=0 host=12 any=12"
check_eq "replica A answers" "$expect" "$(holders "$A")"
check_eq "replica B answers the same" "$expect" "$(holders "$B")"

# ---- reader failover: A dies, a reader listing A first is answered by B ----
{ kill -9 "$RA"; wait "$RA"; } 2>/dev/null
out=$("$TOOL" lookup -s "$A,$B" --model llama --seed 5 --blocks 64)
check_contains "failover: answered by B" "$out" "server=$B"
check_eq "failover: same answer" "$expect" "$(echo "$out" | grep '^holder')"
# Events keep flowing to B while A is down.
kvf_spawn w3 "$TOOL" worker -s "$A,$B" --id decode-2 --model llama --chain 5:20:gpu
W3=$KVF_LAST_PID
wait_count "$KVF_TMP/w3.log" "^synced server=$B" 1 5
check_contains "new worker seen by B" "$(holders "$B")" "holder decode-2 state=active gpu=20"

# ---- A restarts empty on the same port and converges ----
t0=$(date +%s%N)
start_replica ra2 "$PA"
wait_port "$PA" 10
expect2=$(printf '%s\n%s\n' "$expect" "holder decode-2 state=active gpu=20 host=20 any=20" | sort)
converged=0 got=""
for _ in $(seq 1 60); do
  got=$(holders "$A" 2>/dev/null | sort)
  if [ "$got" == "$expect2" ]; then converged=1; break; fi
  sleep 0.05
done
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
if [ $converged -eq 1 ]; then
  pass "restarted replica gives the same answers (after ${ms} ms)"
else
  fail "restarted replica gives the same answers" "got [$got]"
fi
check_eq "restarted replica agrees with B" "$(holders "$B" | sort)" "$(holders "$A" | sort)"
# One heartbeat (100 ms) to notice, reconnect backoff (<= 500 ms), re-announce.
if [ "$ms" -lt 3000 ]; then pass "converged within 3 s"; else fail "converged within 3 s" "$ms ms"; fi

# ---- a worker restart (new epoch) replaces its entries at once ----
{ kill -9 "$W0"; wait "$W0"; } 2>/dev/null
kvf_spawn w0b "$TOOL" worker -s "$A,$B" --id decode-0 --model llama --chain 5:4:gpu
wait_count "$KVF_TMP/w0b.log" "^synced" 2 5
check_contains "restarted worker: old entries replaced on A" "$(holders "$A")" "holder decode-0 state=active gpu=4 host=4 any=4"
check_contains "restarted worker: old entries replaced on B" "$(holders "$B")" "holder decode-0 state=active gpu=4 host=4 any=4"
check_contains "replacement logged" "$(cat "$KVF_TMP/rb.log")" 'msg="worker restarted: previous entries dropped" worker=decode-0'

# ---- a dead worker: unlisted at once, dropped from both after its lease ----
{ kill -9 "$W3"; wait "$W3"; } 2>/dev/null
sleep 0.2
check_eq "dead worker not listed by LOOKUP" 0 "$(holders "$A" | grep -c decode-2)"
check_contains "dead worker known as disconnected until its lease ends" \
  "$("$TOOL" workers -s "$B" | grep decode-2)" "state=disconnected"
sleep 1.1
check_eq "dead worker dropped by A" 0 "$("$TOOL" workers -s "$A" | grep -c decode-2)"
check_eq "dead worker dropped by B" 0 "$("$TOOL" workers -s "$B" | grep -c decode-2)"
kvf_done
