# Helpers shared by the gateway suites (tests/integration/gateway_*.sh,
# tests/e2e/gateway_*.sh); sourced after tests/lib.sh. Not a suite itself
# (the runner picks up *.sh only).

GATEWAY="$BIN/kvf-gateway"
FIXTURE="$KVF_BUILD/tests/bin/kvf-upstream-fixture"
KVFCTL="$BIN/kvfctl"
SMALL_TOK="$KVF_ROOT/tests/data/tokenizer/small"
PY=/usr/bin/python3

# port_of LOGNAME: the "port N" line a fixture or the gateway printed.
port_of() {
  local f="$KVF_TMP/$1.log" p=""
  for _ in $(seq 1 200); do
    p=$(sed -n 's/^port \([0-9]*\)$/\1/p' "$f" 2>/dev/null | head -n 1)
    [ -n "$p" ] && { echo "$p"; return 0; }
    sleep 0.025
  done
  return 1
}

# start_fixture NAME [ARGS...]: sets FIX_PORT[NAME] and FIX_PID[NAME].
declare -A FIX_PORT FIX_PID
start_fixture() {
  local name=$1; shift
  kvf_spawn "fix-$name" "$FIXTURE" --name "$name" --listen 127.0.0.1:0 --model test-model "$@"
  FIX_PID[$name]=$KVF_LAST_PID
  FIX_PORT[$name]=$(port_of "fix-$name") || { fail "fixture $name starts" "$(cat "$KVF_TMP/fix-$name.log")"; return 1; }
}

# start_gateway NAME [ARGS...]: gateway on an ephemeral port with an admin
# socket; sets GW_PORT, GW_PID, GW_SOCK, GW_URL.
start_gateway() {
  local name=$1; shift
  GW_SOCK="$KVF_TMP/$name.sock"
  kvf_spawn "$name" "$GATEWAY" -o gateway.http_listen=127.0.0.1:0 -o "gateway.admin_socket=$GW_SOCK" \
    -o gateway.log_level=info "$@"
  GW_PID=$KVF_LAST_PID
  GW_PORT=$(port_of "$name") || { fail "gateway $name starts" "$(tail -n 5 "$KVF_TMP/$name.log")"; return 1; }
  GW_URL="http://127.0.0.1:$GW_PORT"
  wait_file "$GW_SOCK" 5
}

# post PATH JSON [CURL ARGS...]: POST to the gateway; headers in $KVF_TMP/h,
# body in $KVF_TMP/b; prints the status.
post() {
  local path=$1 body=$2; shift 2
  curl -s -o "$KVF_TMP/b" -D "$KVF_TMP/h" -w '%{http_code}' -H 'Content-Type: application/json' "$@" \
    --data-binary "$body" "$GW_URL$path"
}

# hdr NAME: a response header of the last post (value, CR stripped).
hdr() {
  grep -i "^$1:" "$KVF_TMP/h" | head -n 1 | sed 's/^[^:]*: *//' | tr -d '\r'
}

body() { cat "$KVF_TMP/b"; }

# long_prompt N WORD: a prompt of N repetitions (shared-prefix workloads).
long_prompt() {
  local i out=""
  for i in $(seq 1 "$1"); do out+="$2 line $i of the shared system prompt. "; done
  printf '%s' "$out"
}
