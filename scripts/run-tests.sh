#!/usr/bin/env bash
# Runs every suite listed in a manifest (written by `make test`) and prints one
# line per suite and a final line "N passed, N failed" totalling test cases.
#
# Manifest lines:
#   unit PATH            a cmocka binary; its "[  PASSED  ] N" / "[  FAILED  ] N"
#                        summary gives the counts
#   replay PATH CORPUS   a fuzz target's replay binary over its committed corpus;
#                        one case per corpus file
#   script PATH          a bash script speaking the line protocol of
#                        tests/lib.sh: "PASS: name", "FAIL: name", "SKIP: name why"
# A suite that exits non-zero without reporting a failure counts one failure
# (a crash or a timeout). Each suite runs under KVF_SUITE_TIMEOUT seconds
# (default 900). Logs go to $KVF_BUILD/tests/logs/.
set -u
manifest=${1:?usage: run-tests.sh MANIFEST}
: "${KVF_BUILD:=$(pwd)/build}"
: "${KVF_ROOT:=$(pwd)}"
: "${KVF_SUITE_TIMEOUT:=900}"
export KVF_BUILD KVF_ROOT
logdir="$KVF_BUILD/tests/logs"
mkdir -p "$logdir"

total_pass=0 total_fail=0 total_skip=0
failed_suites=()

count() { # count PATTERN FILE -> number from first capture or 0
  local n
  n=$(sed -n -E "s/$1/\\1/p" "$2" | tail -n 1)
  echo "${n:-0}"
}

while read -r kind path corpus; do
  [ -z "${kind:-}" ] && continue
  name=$(basename "$path")
  log="$logdir/$kind-$name.log"
  start=$(date +%s%N)
  case "$kind" in
    unit)
      timeout -k 10 "$KVF_SUITE_TIMEOUT" "$path" >"$log" 2>&1; rc=$?
      p=$(count '^\[  PASSED  \] ([0-9]+) test.*' "$log")
      f=$(count '^\[  FAILED  \] ([0-9]+) test.*' "$log")
      s=$(count '^\[  SKIPPED \] ([0-9]+) test.*' "$log")
      ;;
    replay)
      timeout -k 10 "$KVF_SUITE_TIMEOUT" "$path" "$corpus" >"$log" 2>&1; rc=$?
      p=$(count '^replay: ([0-9]+) inputs ok.*' "$log")
      f=0; s=0
      ;;
    script)
      timeout -k 10 "$KVF_SUITE_TIMEOUT" bash "$path" >"$log" 2>&1; rc=$?
      p=$(grep -c '^PASS: ' "$log"); f=$(grep -c '^FAIL: ' "$log"); s=$(grep -c '^SKIP: ' "$log")
      ;;
    *) echo "run-tests: bad manifest line: $kind $path" >&2; rc=1; p=0; f=1; s=0 ;;
  esac
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    f=1
    [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && echo "TIMEOUT after ${KVF_SUITE_TIMEOUT}s" >>"$log"
  fi
  el_ds=$(( ($(date +%s%N) - start) / 100000000 ))
  el="$((el_ds / 10)).$((el_ds % 10))"
  # Show the suite's own output so CI logs hold every assertion message.
  cat "$log"
  status=ok; [ "$f" -ne 0 ] && { status=FAILED; failed_suites+=("$kind:$name"); }
  printf '=== %-7s %-40s %4d passed %3d failed %3d skipped %6ss  %s\n' "$kind" "$name" "$p" "$f" "$s" "$el" "$status"
  total_pass=$((total_pass + p)); total_fail=$((total_fail + f)); total_skip=$((total_skip + s))
done <"$manifest"

echo
if [ ${#failed_suites[@]} -ne 0 ]; then
  echo "failed suites: ${failed_suites[*]} (logs in $logdir)"
fi
[ "$total_skip" -ne 0 ] && echo "$total_skip skipped (reasons printed above as SKIP lines)"
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
