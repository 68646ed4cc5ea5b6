#!/usr/bin/env bash
# Workers in the cluster directory: they register with the cachedir, publish
# the blocks of their prefix cache, report draining, leave on shutdown, and a
# decode worker pulls a cached prefix from the holder the cachedir names.
source "$(dirname "$0")/../lib.sh"
MODEL="$KVF_ROOT/tests/data/models/llama"
CP=$(free_port); CH=$(free_port); AP=$(free_port); BP=$(free_port)
kvf_spawn cachedir "$BIN/kvf-cachedir" -o "cachedir.listen=127.0.0.1:$CP" -o "cachedir.http_listen=127.0.0.1:$CH" \
  -o "cachedir.admin_socket=$KVF_TMP/cd.sock" -o cachedir.warmup=0
wait_port "$CP" 10 || { fail "cachedir starts" "$(cat "$KVF_TMP/cachedir.log")"; kvf_done; exit; }
COMMON=(-o "engine.model_dir=$MODEL" -o engine.threads=1 -o engine.kv_blocks=256 -o "cluster.cachedir=127.0.0.1:$CP"
        -o decode.fabric_listen=127.0.0.1:0 -o decode.pull_threshold_tokens=16)
kvf_spawn decode-a "$BIN/kvf-decode" "${COMMON[@]}" -o "decode.http_listen=127.0.0.1:$AP" -o "decode.admin_socket=$KVF_TMP/a.sock"
A=$KVF_LAST_PID
kvf_spawn decode-b "$BIN/kvf-decode" "${COMMON[@]}" -o "decode.http_listen=127.0.0.1:$BP" -o "decode.admin_socket=$KVF_TMP/b.sock"
wait_ready "$AP" 30 && wait_ready "$BP" 30 || { fail "workers start" "$(cat "$KVF_TMP"/decode-*.log)"; kvf_done; exit; }
CDCTL=("$BIN/kvfctl" -s "$KVF_TMP/cd.sock")
for _ in $(seq 1 50); do [ "$("${CDCTL[@]}" show workers | grep -c active)" -ge 2 ] && break; sleep 0.1; done
workers=$("${CDCTL[@]}" show workers)
check_contains "worker A registered" "$workers" "127.0.0.1:$AP"
check_contains "worker B registered" "$workers" "127.0.0.1:$BP"

body=$(/usr/bin/python3 -c "import json; d=json.load(open('$MODEL/reference.json')); print(json.dumps({'model':'llama','prompt':d['inputs'][2],'max_tokens':8,'temperature':0,'ignore_eos':True,'return_token_ids':True}))")
ask() { curl -s -D "$KVF_TMP/h" -H 'Content-Type: application/json' "http://127.0.0.1:$1/v1/completions" -d "$body"; }
hdr() { grep -i "^$1:" "$KVF_TMP/h" | tr -d '\r' | awk '{print $2}'; }

outa=$(ask "$AP")
sleep 0.3
blocks=$("${CDCTL[@]}" show blocks)
check_contains "worker A's cached blocks are in the directory (130-token prompt: 8 blocks)" \
  "$(echo "$blocks" | grep "127.0.0.1:$AP")" " 8 "

outb=$(ask "$BP")
check_eq "worker B pulled the prefix worker A holds" 128 "$(hdr x-kvf-fetched-tokens)"
check_eq "worker B computed only the rest" 2 "$(hdr x-kvf-computed-tokens)"
ids() { echo "$1" | /usr/bin/python3 -c "import json,sys; print(json.load(sys.stdin)['choices'][0]['token_ids'])"; }
check_eq "same output from the pulled prefix" "$(ids "$outa")" "$(ids "$outb")"
sleep 0.3
check_contains "worker B now holds the blocks too" "$("${CDCTL[@]}" show blocks | grep "127.0.0.1:$BP")" " 8 "
stats=$("$BIN/kvfctl" -s "$KVF_TMP/b.sock" show stats)
check_contains "the holder pull is counted" "$stats" 'kvf_worker_pulls_total{outcome="ok"} 1'
check_contains "a holder pull is not a prefill fallback" "$stats" "kvf_decode_prefill_fallbacks_total 0"

# A third request to B finds everything locally: no lookup-driven pull.
ask "$BP" >/dev/null
check_eq "a local hit pulls nothing" 0 "$(hdr x-kvf-fetched-tokens)"

# Draining shows in the directory; shutting down leaves it.
"$BIN/kvfctl" -s "$KVF_TMP/a.sock" drain >/dev/null
for _ in $(seq 1 30); do "${CDCTL[@]}" show workers | grep "127.0.0.1:$AP" | grep -q draining && break; sleep 0.1; done
check_contains "a draining worker shows as draining" "$("${CDCTL[@]}" show workers | grep "127.0.0.1:$AP")" "draining"
kill -TERM "$A"
for _ in $(seq 1 50); do "${CDCTL[@]}" show workers | grep -q "127.0.0.1:$AP" || break; sleep 0.1; done
check_eq "a stopped worker leaves the directory with its blocks" "" "$("${CDCTL[@]}" show workers | grep "127.0.0.1:$AP")"
kvf_done
