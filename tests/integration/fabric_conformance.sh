#!/usr/bin/env bash
# Fabric conformance: one set of cases (fabric/tools/fabric_test.c) run over
# every transport this machine has, each between real processes: three
# targets and one initiator (which starts and signals its own extra target
# for the hang and kill cases). Transports that cannot open here are
# skipped with the reason the fabric gives (no RDMA device, no GPU).
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

T="$BIN/kvf-fabric-test"
TIMEOUT_MS=1000
TRANSPORTS=${KVF_FABRIC_TRANSPORTS:-"tcp shm ofi verbs cuda_ipc"}

for tr in $TRANSPORTS; do
  probe=$("$T" probe -t "$tr" 2>&1)
  if [ $? -ne 0 ]; then
    skip "fabric $tr conformance" "${probe#unavailable: }"
    continue
  fi
  dirs=()
  tpids=()
  for i in 1 2 3; do
    d="$KVF_TMP/$tr-t$i"
    kvf_spawn "$tr-target$i" "$T" serve -t "$tr" -d "$d" --seed $((i * 11)) --timeout-ms "$TIMEOUT_MS"
    tpids+=("$KVF_LAST_PID")
    dirs+=(-d "$d")
  done
  ok=1
  for i in 1 2 3; do
    if ! wait_file "$KVF_TMP/$tr-t$i/ready" 30; then
      fail "fabric $tr target $i" "did not start: $(tail -n 3 "$KVF_TMP/$tr-target$i.log")"
      ok=0
    fi
  done
  if [ $ok -eq 1 ]; then
    "$T" run -t "$tr" "${dirs[@]}" --timeout-ms "$TIMEOUT_MS" -c all \
      >"$KVF_TMP/$tr-run.out" 2>"$KVF_TMP/$tr-run.log"
    rc=$?
    cat "$KVF_TMP/$tr-run.out"
    if [ $rc -ne 0 ]; then
      tail -n 30 "$KVF_TMP/$tr-run.log" | sed 's/^/  /'
      # a crash (or a sanitizer report) prints no FAIL line of its own
      grep -q '^FAIL' "$KVF_TMP/$tr-run.out" || fail "fabric $tr run" "exit status $rc without a FAIL line (crash?)"
    fi
  fi
  for i in 1 2 3; do
    if grep -q 'ERROR: AddressSanitizer\|ERROR: LeakSanitizer\|runtime error:' "$KVF_TMP/$tr-target$i.log"; then
      fail "fabric $tr target $i" "sanitizer report: $(grep -m1 'ERROR\|runtime error' "$KVF_TMP/$tr-target$i.log")"
    fi
  done
  for p in "${tpids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${tpids[@]}"; do wait "$p" 2>/dev/null; done
done
kvf_done
