#!/usr/bin/env bash
# kvf-gateway with the cachedir as its index and worker source: workers that
# register with the directory (kvf-cachedir-tool worker, pointing at
# stand-in HTTP workers) become routable; one LOOKUP per request finds the
# holder of the prompt's chain and the request goes there, tier-weighted; a
# worker that leaves the directory leaves the gateway; the load the workers
# heartbeat reaches the queue scorer. Skips in a tree without
# cachedir/. The tool's synthetic chains are keyed without
# the cluster secret, so prefix hits through the directory with real
# workers are checked in worker_sim_burst.sh and by `make run`.
source "$(dirname "$0")/../lib.sh"
source "$(dirname "$0")/gateway_common.bash"
CD="$BIN/kvf-cachedir"
TOOL="$BIN/kvf-cachedir-tool"
if [ ! -x "$CD" ] || [ ! -x "$TOOL" ]; then
  skip "gateway with cachedir" "kvf-cachedir is not built in this tree"
  kvf_done; exit
fi

start_fixture d1 || { kvf_done; exit; }
start_fixture d2 || { kvf_done; exit; }
P=$(free_port); H=$(free_port); ADDR=127.0.0.1:$P
kvf_spawn cd "$CD" -o "cachedir.listen=$ADDR" -o "cachedir.http_listen=127.0.0.1:$H" -o cachedir.admin_socket= \
  -o cachedir.warmup=0 -o cachedir.lease=1s -o cachedir.heartbeat_interval=200ms -o "cluster.cachedir=$ADDR"
wait_port "$P" 10 || { fail "cachedir starts" "$(cat "$KVF_TMP/cd.log")"; kvf_done; exit; }
kvf_spawn w1 "$TOOL" worker -s "$ADDR" --id dec-1 --model test-model --http "127.0.0.1:${FIX_PORT[d1]}" \
  --chain 1:4:host --waiting 9
kvf_spawn w2 "$TOOL" worker -s "$ADDR" --id dec-2 --model test-model --http "127.0.0.1:${FIX_PORT[d2]}" \
  --chain 2:8:gpu
W2=$KVF_LAST_PID
start_gateway gw -o gateway.model=test-model -o "gateway.tokenizer=$SMALL_TOK" -o "cluster.cachedir=$ADDR" \
  -o gateway.index=cachedir -o gateway.pd_threshold_tokens=0 \
  || { kvf_done; exit; }
for _ in $(seq 1 100); do
  [ "$("$KVFCTL" -s "$GW_SOCK" show workers | grep -c 'source=cachedir')" = 2 ] && break; sleep 0.05; done
out=$("$KVFCTL" -s "$GW_SOCK" show workers)
check_contains "directory worker dec-1 known" "$out" "dec-1"
check_contains "directory worker dec-2 known" "$out" "dec-2"
check_contains "its HTTP endpoint" "$out" "http=127.0.0.1:${FIX_PORT[d2]}"
check_contains "show info: cachedir index" "$("$KVFCTL" -s "$GW_SOCK" show info)" "index: cachedir"
check_contains "/v1/models from the directory" "$(curl -s "$GW_URL/v1/models")" '"id":"test-model"'

PRE=$(long_prompt 20 cd)
st=$(post /v1/completions "{\"model\":\"test-model\",\"prompt\":\"$PRE\",\"max_tokens\":1}")
check_eq "request 200 through a directory worker" 200 "$st"
check_eq "the less loaded worker (heartbeat load) is picked" dec-2 "$(hdr x-kvf-decode)"
check_contains "answered by its HTTP endpoint" "$(body)" '"text":"worker=d2"'
out=$("$KVFCTL" -s "$GW_SOCK" show routes 1)
check_contains "the lookup went to the directory (no holder of this chain)" "$out" "hit=0/"
check_contains "dec-1's queue of 9 scores 0" "$(grep dec-1 <<<"$out")" "queue=0.000"
check_contains "show info counts cachedir lookups" "$("$KVFCTL" -s "$GW_SOCK" show info)" "cachedir_lookups: 1"

# dec-2 leaves the directory: the gateway forgets it.
kill "$W2"
for _ in $(seq 1 100); do
  "$KVFCTL" -s "$GW_SOCK" show workers | grep -q dec-2 || break; sleep 0.05; done
check "dec-2 gone from the gateway" bash -c "! '$KVFCTL' -s '$GW_SOCK' show workers | grep -q dec-2"
st=$(post /v1/completions "{\"model\":\"test-model\",\"prompt\":\"$PRE\",\"max_tokens\":1}")
check_eq "then served by dec-1" dec-1 "$(hdr x-kvf-decode)"
kvf_done
