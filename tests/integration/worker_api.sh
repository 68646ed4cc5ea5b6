#!/usr/bin/env bash
# One worker serving the OpenAI API on a real model (aggregated mode): what a
# client sees, checked by tests/integration/py/worker_api_checks.py.
source "$(dirname "$0")/../lib.sh"
MODEL="$KVF_ROOT/tests/data/models/llama"
PORT=$(free_port)
SOCK="$KVF_TMP/decode.sock"
kvf_spawn decode "$BIN/kvf-decode" -o "decode.http_listen=127.0.0.1:$PORT" -o "decode.admin_socket=$SOCK" \
  -o "engine.model_dir=$MODEL" -o engine.threads=1 -o engine.kv_blocks=512 -o decode.fabric_listen=127.0.0.1:0
PID=$KVF_LAST_PID
if ! wait_ready "$PORT" 30; then
  fail "worker starts" "$(cat "$KVF_TMP/decode.log")"
  kvf_done; exit
fi
pass "worker starts"
/usr/bin/python3 "$KVF_ROOT/tests/integration/py/worker_api_checks.py" "$PORT" "$SOCK" llama \
  "$MODEL/reference.json" "$KVF_ROOT/tests/data/openai/requests.json" || KVF_FAILS=$((KVF_FAILS + 1))

# Configuration errors exit 2 before anything starts.
out=$("$BIN/kvf-decode" -o engine.backend=gpu 2>&1); rc=$?
check_eq "bad engine.backend exits 2" 2 "$rc"
check_contains "bad engine.backend named" "$out" "engine.backend: expected one of cpu|sim|cuda"
out=$("$BIN/kvf-decode" -o engine.model_dir= 2>&1); rc=$?
check_eq "missing model_dir exits 2" 2 "$rc"
out=$("$BIN/kvf-decode" -o "decode.http_listen=127.0.0.1:$(free_port)" -o "decode.admin_socket=" \
  -o "engine.model_dir=$KVF_TMP/nonexistent" 2>&1); rc=$?
check_eq "unreadable model exits 1" 1 "$rc"
check_contains "unreadable model explained" "$out" "nonexistent"

# SIGTERM while a long request runs: it finishes, then the worker exits 0.
curl -s "http://127.0.0.1:$PORT/v1/completions" -H 'Content-Type: application/json' \
  -d '{"model":"llama","prompt":"x","max_tokens":200,"ignore_eos":true}' >"$KVF_TMP/long.json" &
CURL=$!
# SIGTERM only once the worker lists the request as running
for _ in $(seq 1 200); do
  [ "$("$BIN/kvfctl" -s "$SOCK" show requests | tail -n +2 | wc -l)" -ge 1 ] && break
  sleep 0.02
done
kill -TERM "$PID"
wait "$CURL"
check_contains "request in flight at SIGTERM completes" "$(cat "$KVF_TMP/long.json")" '"completion_tokens":200'
for _ in $(seq 1 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.05; done
wait "$PID"; rc=$?
check_eq "worker exits 0 after draining" 0 "$rc"
kvf_done
