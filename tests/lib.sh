# Shared helpers for integration and e2e test scripts (bash).
#
# Line protocol read by scripts/run-tests.sh:
#   PASS: name          one passed check
#   FAIL: name: why     one failed check
#   SKIP: name: why     a check that could not run here, with the reason
# Source this file first; every process started with kvf_spawn is killed when
# the script exits, and a scratch directory $KVF_TMP is removed.

set -u
: "${KVF_BUILD:=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/build}"
: "${KVF_ROOT:=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
BIN="$KVF_BUILD/bin"
KVF_TMP=$(mktemp -d /tmp/kvf-test.XXXXXX)
KVF_PIDS=()
KVF_FAILS=0

kvf_cleanup() {
  local p
  for p in "${KVF_PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${KVF_PIDS[@]}"; do
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null
  done
  rm -rf "$KVF_TMP"
  # free_port runs in $(...) subshells: find our reservations by owner
  grep -lx "$$" "$KVF_PORT_DIR"/*/pid 2>/dev/null | while read -r f; do rm -rf "${f%/pid}"; done
}
trap kvf_cleanup EXIT

pass() { echo "PASS: $1"; }
fail() { echo "FAIL: $1${2:+: $2}"; KVF_FAILS=$((KVF_FAILS + 1)); }
skip() { echo "SKIP: $1: $2"; }

# check NAME COMMAND...: PASS if the command succeeds, FAIL otherwise.
check() {
  local name=$1; shift
  if "$@"; then pass "$name"; else fail "$name" "command failed: $*"; fi
}

# check_eq NAME EXPECTED ACTUAL
check_eq() {
  if [ "$2" == "$3" ]; then pass "$1"; else fail "$1" "expected [$2], got [$3]"; fi
}

# check_contains NAME HAYSTACK NEEDLE
check_contains() {
  if [[ "$2" == *"$3"* ]]; then pass "$1"; else fail "$1" "[$3] not found in [$(printf '%.400s' "$2")]"; fi
}

# free_port: a TCP port on 127.0.0.1 that nothing listens on right now,
# below the kernel's ephemeral range (32768+) so no outgoing connection can
# be holding it. Ports handed out are reserved until the script exits (a
# directory per port under $KVF_PORT_DIR, owned by this script's pid), so
# two calls before the first daemon binds, or two suites run side by side,
# never get the same port. A reservation whose owner died is reclaimed.
: "${KVF_PORT_DIR:=/tmp/kvf-test-ports-$(id -u)}"
free_port() {
  local p owner
  mkdir -p "$KVF_PORT_DIR"
  (
    # one script at a time picks and takes over reservations
    flock -w 30 9 || exit 1
    for _ in $(seq 1 400); do
      p=$((20000 + RANDOM % 12000))
      if [ -d "$KVF_PORT_DIR/$p" ]; then
        owner=$(cat "$KVF_PORT_DIR/$p/pid" 2>/dev/null)
        # reserved by a live script: skip; owner gone (or never written): take it
        [ -n "$owner" ] && kill -0 "$owner" 2>/dev/null && continue
      fi
      mkdir -p "$KVF_PORT_DIR/$p" && echo $$ >"$KVF_PORT_DIR/$p/pid"
      (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue # in use: keep it reserved
      echo "$p"
      exit 0
    done
    exit 1
  ) 9>"$KVF_PORT_DIR/.lock"
}

# kvf_spawn LOGNAME CMD...: start CMD in the background, output to $KVF_TMP/LOGNAME.log.
# Sets KVF_LAST_PID.
kvf_spawn() {
  local name=$1; shift
  "$@" >"$KVF_TMP/$name.log" 2>&1 &
  KVF_LAST_PID=$!
  KVF_PIDS+=("$KVF_LAST_PID")
}

# wait_port PORT [TIMEOUT_S]: until something accepts on 127.0.0.1:PORT.
wait_port() {
  local deadline=$((SECONDS + ${2:-10}))
  while [ $SECONDS -lt $deadline ]; do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}

# wait_ready PORT [TIMEOUT_S]: until http://127.0.0.1:PORT/ready answers 200.
wait_ready() {
  local deadline=$((SECONDS + ${2:-20}))
  while [ $SECONDS -lt $deadline ]; do
    curl -sf -o /dev/null "http://127.0.0.1:$1/ready" 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}

# wait_file PATH [TIMEOUT_S]: until PATH exists (a Unix socket, a pid file).
wait_file() {
  local deadline=$((SECONDS + ${2:-10}))
  while [ $SECONDS -lt $deadline ]; do
    [ -e "$1" ] && return 0
    sleep 0.05
  done
  return 1
}

# kvf_done: last line of a script; exit status reflects the failures.
kvf_done() { [ "$KVF_FAILS" -eq 0 ]; }
