#!/usr/bin/env bash
# Runs each libFuzzer target for FUZZ_SECONDS on a scratch copy of its
# committed corpus (tests/fuzz/corpus/NAME), so the committed corpus only grows
# when someone copies new inputs back on purpose. Crashes and leaks stop the run
# and leave the reproducer under build/fuzz/artifacts/NAME/.
set -u
dir=${1:?usage: run-fuzz.sh FUZZDIR TARGET...}; shift
: "${FUZZ_SECONDS:=30}"
# Leaks inside third-party libraries we cannot fix are listed here.
export LSAN_OPTIONS="suppressions=$(pwd)/tests/fuzz/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
fails=0
for t in "$@"; do
  work="$dir/work/$t"; art="$dir/artifacts/$t/"
  rm -rf "$work"; mkdir -p "$work" "$art"
  [ -d "tests/fuzz/corpus/$t" ] && cp -r "tests/fuzz/corpus/$t/." "$work/"
  dict=""; [ -f "tests/fuzz/$t.dict" ] && dict="-dict=tests/fuzz/$t.dict"
  echo "fuzz: $t for ${FUZZ_SECONDS}s"
  if "$dir/$t" -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 -rss_limit_mb=2048 \
       -artifact_prefix="$art" $dict "$work" >"$dir/$t.log" 2>&1; then
    grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb' "$dir/$t.log" | tr '\n' ' '; echo
    echo "fuzz: $t ok"
  else
    tail -n 40 "$dir/$t.log"
    echo "fuzz: $t FAILED (log $dir/$t.log, artifacts $art)"
    fails=$((fails + 1))
  fi
done
echo "fuzz: $# targets, $fails failed"
[ "$fails" -eq 0 ]
