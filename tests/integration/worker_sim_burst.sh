#!/usr/bin/env bash
# Eight sim-backend decode workers on this machine, in the cachedir, behind the
# gateway, serve a burst of shared-prefix requests: every request answered,
# every worker used, prefixes routed to their holders.
source "$(dirname "$0")/../lib.sh"
MODEL="$KVF_ROOT/tests/data/models/llama"   # the sim only reads its tokenizer
CP=$(free_port); CH=$(free_port); GP=$(free_port)
kvf_spawn cachedir "$BIN/kvf-cachedir" -o "cachedir.listen=127.0.0.1:$CP" -o "cachedir.http_listen=127.0.0.1:$CH" \
  -o "cachedir.admin_socket=$KVF_TMP/cd.sock" -o cachedir.warmup=0
wait_port "$CP" 10 || { fail "cachedir starts" "$(cat "$KVF_TMP/cachedir.log")"; kvf_done; exit; }
PORTS=()
for i in $(seq 0 7); do
  p=$(free_port)
  kvf_spawn "w$i" "$BIN/kvf-decode" -o "engine.model_dir=$MODEL" -o engine.backend=sim -o engine.sim_preset=tiny \
    -o engine.sim_time_scale=0.2 -o engine.kv_blocks=512 -o engine.max_model_len=2048 \
    -o "decode.http_listen=127.0.0.1:$p" -o decode.fabric_listen=127.0.0.1:0 -o decode.admin_socket= \
    -o decode.pull_threshold_tokens=1000000 -o "cluster.cachedir=127.0.0.1:$CP" -o decode.log_level=warn
  PORTS+=("$p")
done
for p in "${PORTS[@]}"; do
  wait_ready "$p" 30 || { fail "sim worker on $p starts" "$(cat "$KVF_TMP"/w*.log | tail -20)"; kvf_done; exit; }
done
pass "8 sim workers start"
kvf_spawn gateway "$BIN/kvf-gateway" -o "gateway.http_listen=127.0.0.1:$GP" -o "gateway.admin_socket=$KVF_TMP/gw.sock" \
  -o "gateway.tokenizer=$MODEL" -o "cluster.cachedir=127.0.0.1:$CP" -o gateway.log_level=warn
wait_port "$GP" 10 || { fail "gateway starts" "$(cat "$KVF_TMP/gateway.log")"; kvf_done; exit; }
for _ in $(seq 1 100); do
  [ "$("$BIN/kvfctl" -s "$KVF_TMP/cd.sock" show workers | grep -c active)" -ge 8 ] && break
  sleep 0.1
done
check_eq "all 8 workers are in the directory" 8 "$("$BIN/kvfctl" -s "$KVF_TMP/cd.sock" show workers | grep -c active)"
for _ in $(seq 1 100); do
  [ "$("$BIN/kvfctl" -s "$KVF_TMP/gw.sock" show workers | grep -c '127.0.0.1:')" -ge 8 ] && break
  sleep 0.1
done

"$BIN/kvf-bench" -t "127.0.0.1:$GP" -m llama -w shared-prefix --groups 8 --users 12 --prefix-words 150 \
  --question-words 8 -c 32 -n 96 --max-tokens 8 --ignore-eos --json "$KVF_TMP/burst.json" >"$KVF_TMP/bench.out" 2>&1
rc=$?
check_eq "kvf-bench ran" 0 "$rc"
read -r completed errors used hit < <(/usr/bin/python3 -c "
import json; d=json.load(open('$KVF_TMP/burst.json'))
print(d['completed'], d['errors'], sum(1 for v in d['workers'].values() if v > 0), d['cache_hit_ratio'])" 2>/dev/null)
check_eq "the burst completes (96 requests)" 96 "${completed:-0}"
check_eq "no request failed" 0 "${errors:--1}"
check "the burst spreads over several workers" test "${used:-0}" -ge 4
check "shared prefixes hit the cache" /usr/bin/python3 -c "import sys; sys.exit(0 if ${hit:-0} > 0.3 else 1)"
kvf_done
