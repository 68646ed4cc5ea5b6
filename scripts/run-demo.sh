#!/usr/bin/env bash
# `make run`: a loopback kvfabric cluster on this machine.
#
# Starts what has been built of: kvf-cachedir, one kvf-prefill, two
# kvf-decode workers and kvf-gateway, on the default demo ports, with a small
# random model from kvf-mkmodel (or MODEL=/path/to/hf-model-dir). Sends two
# requests that share a long prefix and prints what each response says about
# the KV cache, prints commands to try, and runs until Ctrl-C, which stops
# every process it started.
set -u
cd "$(dirname "$0")/.."
BIN=${KVF_BUILD:-build}/bin
RUN=${KVF_RUN_DIR:-/tmp/kvfabric-demo}
mkdir -p "$RUN"
PIDS=()

stop_all() {
  local rc=$?
  trap - INT TERM EXIT
  [ "${STOP_RC:-}" ] && rc=$STOP_RC
  echo
  echo "stopping ${#PIDS[@]} processes..."
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null
  done
  echo "stopped; logs are in $RUN"
  exit "$rc"
}
# Ctrl-C ends the demo normally; a failure on the way keeps its status.
trap 'STOP_RC=0 stop_all' INT TERM
trap stop_all EXIT

wait_http() { # wait_http PORT NAME
  for _ in $(seq 1 200); do
    curl -sf "http://127.0.0.1:$1/ready" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "$2 did not become ready; its log:" >&2
  tail -n 20 "$RUN/$2.log" >&2
  return 1
}

start() { # start NAME CMD...
  local name=$1; shift
  "$@" >"$RUN/$name.log" 2>&1 &
  PIDS+=($!)
  printf '  %-10s pid %-7s log %s\n' "$name" "$!" "$RUN/$name.log"
}

MODEL=${MODEL:-}
if [ -z "$MODEL" ]; then
  MODEL=$RUN/model
  if [ ! -f "$MODEL/config.json" ]; then
    echo "creating a small random Llama model in $MODEL (kvf-mkmodel)"
    "$BIN/kvf-mkmodel" --arch llama --out "$MODEL" --layers 2 --dim 128 --vocab 512 >/dev/null || exit 1
  fi
fi
NAME=$(basename "$MODEL")
COMMON=(-o "engine.model_dir=$MODEL" -o engine.threads=1 -o engine.kv_blocks=2048 -o cluster.cachedir=127.0.0.1:7700)

echo "starting the kvfabric demo cluster on loopback:"
if [ -x "$BIN/kvf-cachedir" ]; then
  start cachedir "$BIN/kvf-cachedir" -o cachedir.listen=127.0.0.1:7700 -o cachedir.http_listen=127.0.0.1:7701 \
    -o cachedir.admin_socket="$RUN/cachedir.sock" -o cachedir.warmup=0
  wait_http 7701 cachedir || exit 1
fi
start prefill "$BIN/kvf-prefill" "${COMMON[@]}" -o prefill.admin_socket="$RUN/prefill.sock"
start decode-0 "$BIN/kvf-decode" "${COMMON[@]}" -o decode.admin_socket="$RUN/decode-0.sock"
start decode-1 "$BIN/kvf-decode" "${COMMON[@]}" -o decode.http_listen=127.0.0.1:8201 \
  -o decode.fabric_listen=127.0.0.1:7811 -o decode.admin_socket="$RUN/decode-1.sock"
wait_http 8100 prefill && wait_http 8200 decode-0 && wait_http 8201 decode-1 || exit 1
ENTRY=8200
if [ -x "$BIN/kvf-gateway" ]; then
  # The gateway learns the workers from the cachedir; without one it is
  # given them.
  WORKERS=()
  [ -x "$BIN/kvf-cachedir" ] || WORKERS=(-o gateway.decode_workers=127.0.0.1:8200,127.0.0.1:8201
                                          -o gateway.prefill_workers=127.0.0.1:8100)
  start gateway "$BIN/kvf-gateway" -o gateway.admin_socket="$RUN/gateway.sock" \
    -o "gateway.tokenizer=$MODEL" -o cluster.cachedir=127.0.0.1:7700 "${WORKERS[@]}" \
    -o gateway.pd_threshold_tokens=256
  wait_http 8080 gateway || exit 1
  ENTRY=8080
  # Until every worker is in the gateway's view, requests would route by load.
  for _ in $(seq 1 100); do
    [ "$("$BIN/kvfctl" -s "$RUN/gateway.sock" show workers 2>/dev/null | grep -c '127.0.0.1:8[12]0')" -ge 3 ] && break
    sleep 0.1
  done
fi
echo "ready."
echo

PREFIX=$(for i in $(seq 1 12); do printf 'Shared system prompt line %d: answer briefly and cite sources. ' "$i"; done)
for q in "What is KV caching?" "Why route by prefix?"; do
  echo "request: <shared prefix of ${#PREFIX} chars> + \"$q\""
  curl -s -D "$RUN/headers" -o "$RUN/body" "http://127.0.0.1:$ENTRY/v1/completions" \
    -H 'Content-Type: application/json' \
    -d "{\"model\":\"$NAME\",\"prompt\":\"$PREFIX $q\",\"max_tokens\":8}"
  grep -i '^x-kvf-' "$RUN/headers" | tr -d '\r' | sed 's/^/    /'
done
echo
if [ "$ENTRY" = 8080 ]; then
  echo "The gateway sent the first request through the prefill worker (x-kvf-prefill: the KV was"
  echo "pulled over the fabric) and the second to the decode worker that now holds the prefix"
  echo "(x-kvf-cached-tokens), computing only the new tokens."
else
  echo "The second request found the shared prefix in the KV cache (x-kvf-cached-tokens)."
fi
echo
echo "Try:"
echo "  curl -s localhost:$ENTRY/v1/chat/completions -H 'Content-Type: application/json' \\"
echo "    -d '{\"model\":\"$NAME\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":16,\"stream\":true}'"
[ "$ENTRY" = 8080 ] && echo "  $BIN/kvfctl -s $RUN/gateway.sock show routes"
[ -x "$BIN/kvf-cachedir" ] && echo "  $BIN/kvfctl -s $RUN/cachedir.sock show workers"
echo "  $BIN/kvfctl -s $RUN/decode-0.sock show requests"
echo "  $BIN/kvfctl -s $RUN/decode-0.sock show stats"
echo "  curl -s localhost:8200/metrics | grep vllm:"
echo
echo "Running until Ctrl-C."
while true; do
  for p in "${PIDS[@]}"; do
    if ! kill -0 "$p" 2>/dev/null; then
      echo "process $p exited; see $RUN/*.log"
      STOP_RC=1 stop_all
    fi
  done
  sleep 1
done
