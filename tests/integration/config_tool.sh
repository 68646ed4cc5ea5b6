#!/usr/bin/env bash
# kvf-config: docs/config.md is generated from the key tables and current;
# the shipped config files validate; bad files exit 2 with file:line.
source "$(dirname "$0")/../lib.sh"
KC="$BIN/kvf-config"

doc=$("$KC" doc)
if [ "$doc" == "$(cat "$KVF_ROOT/docs/config.md")" ]; then
  pass "docs/config.md matches kvf-config doc"
else
  fail "docs/config.md is stale" "run: build/bin/kvf-config doc > docs/config.md"
fi

# The k8s ConfigMap's kvf.conf pulls the secret from an absolute @include;
# point it at a scratch file.
echo 'secret = "test-secret";' >"$KVF_TMP/secret.conf"
for f in k8s/base/kvf.conf k8s/examples/custom-model/kvf.conf; do
  sed "s|/etc/kvfabric/cluster-secret.conf|$KVF_TMP/secret.conf|" "$KVF_ROOT/$f" >"$KVF_TMP/kvf.conf"
  out=$("$KC" check "$KVF_TMP/kvf.conf" 2>&1)
  check_eq "$f validates" "kvf-config: configuration ok" "$out"
done

printf 'cluster: {\n  block_size = 0;\n};\n' >"$KVF_TMP/bad.conf"
out=$("$KC" check "$KVF_TMP/bad.conf" 2>&1); rc=$?
check_eq "bad value exits 2" 2 "$rc"
check_contains "bad value names file:line and key" "$out" "bad.conf:2: cluster.block_size: value 0 out of range"

printf 'clustr: { block_size = 16; };\n' >"$KVF_TMP/typo.conf"
out=$("$KC" check "$KVF_TMP/typo.conf" 2>&1); rc=$?
check_eq "unknown section exits 2" 2 "$rc"
check_contains "unknown section named" "$out" "unknown section 'clustr'"

out=$("$KC" print -o engine.model_dir=/models/m -o cluster.block_size=32 2>&1)
check_contains "print applies -o" "$out" "block_size = 32;"
out=$("$KC" print -o cluster.block_size=abc 2>&1); rc=$?
check_eq "bad -o exits 2" 2 "$rc"
kvf_done
