#!/usr/bin/env bash
# k8s/ offline checks (make k8s-check, and part of make test):
#   1. render every overlay with `kubectl kustomize` (output kept in
#      $KVF_BUILD/k8s/<overlay>.yaml for inspection),
#   2. validate every rendered document against the JSON-schema bundle,
#   3. run the project policy rules on each overlay (k8s/tools/kvf_k8s_check.py),
#   4. prove each rule fails on a deliberately broken copy (k8s/tests/policy_mutations.py),
#   5. render again with Debian 12's kubectl 1.20 (kustomize v2) when one is at hand
#      ($KVF_KUBECTL_ALT, or cached under .cache/) and require the same objects.
# Schema bundle: $KVF_K8S_SCHEMAS, else ../shared/k8s-schemas, else the vendored
# copy tests/data/k8s-schemas; schema checks SKIP (with the reason) only if none exists.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/../../tests/lib.sh"
cd "$KVF_ROOT" || exit 1

PY=/usr/bin/python3
# Every overlay, and the example site overlays (k8s/examples/*) that the README
# tells platform engineers to copy.
# NAME is the overlay's folder name, or examples/NAME; k8s/PATH is what is rendered.
OVERLAYS=()
for d in k8s/overlays/*/; do d=${d%/}; OVERLAYS+=("${d##*/}"); done
for d in k8s/examples/*/; do [ -d "$d" ] || continue; d=${d%/}; OVERLAYS+=("examples/${d##*/}"); done
kpath() { case "$1" in examples/*) echo "k8s/$1" ;; *) echo "k8s/overlays/$1" ;; esac; }
KUEUE_CONFIG=k8s/overlays/kueue/kueue-manager-config.yaml
OUT="$KVF_BUILD/k8s"
mkdir -p "$OUT/examples" "$KVF_TMP/examples"

if ! "$PY" -c 'import yaml, jsonschema' 2>/dev/null; then
  skip "k8s checks" "$PY lacks yaml/jsonschema (apt-get install python3-yaml python3-jsonschema, or scripts/install-deps.sh)"
  kvf_done; exit
fi

KUBECTL=${KVF_KUBECTL:-$(command -v kubectl || true)}
if [ -n "${KVF_KUBECTL:-}" ] && [ ! -x "$KVF_KUBECTL" ]; then
  skip "k8s checks" "KVF_KUBECTL=$KVF_KUBECTL is not an executable"
  kvf_done; exit
fi
if [ -z "$KUBECTL" ]; then
  skip "k8s checks" "no kubectl on PATH (scripts/install-deps.sh installs Debian's kubernetes-client)"
  kvf_done; exit
fi

# kubectl <= 1.20 embeds kustomize v2.0.3 and prints no "Kustomize Version" line.
kustomize_version() {
  local v
  v=$("$1" version --client 2>/dev/null | sed -n 's/^Kustomize Version: *//p')
  [ -n "$v" ] && { echo "$v"; return; }
  if "$1" kustomize --help >/dev/null 2>&1; then echo "v2.0.3 (embedded, kubectl <= 1.20)"; else echo none; fi
}
kv=$(kustomize_version "$KUBECTL")
echo "# kubectl: $KUBECTL, kustomize $kv"
if [ "$kv" = none ]; then
  skip "k8s checks" "$KUBECTL has no 'kustomize' subcommand (kubectl >= 1.14 needed)"
  kvf_done; exit
fi

# Schema bundle.
schemas=
if [ -n "${KVF_K8S_SCHEMAS:-}" ]; then
  if [ -f "$KVF_K8S_SCHEMAS/index.json" ]; then schemas=$KVF_K8S_SCHEMAS
  else fail "k8s schema bundle" "KVF_K8S_SCHEMAS=$KVF_K8S_SCHEMAS has no index.json"; fi
elif [ -f "$KVF_ROOT/../shared/k8s-schemas/index.json" ]; then
  schemas=$KVF_ROOT/../shared/k8s-schemas
elif [ -f "$KVF_ROOT/tests/data/k8s-schemas/index.json" ]; then
  schemas=$KVF_ROOT/tests/data/k8s-schemas
fi
schema_args=()
if [ -n "$schemas" ]; then
  schema_args=(--schemas "$schemas")
  echo "# schema bundle: $schemas"
elif [ -z "${KVF_K8S_SCHEMAS:-}" ]; then
  skip "k8s schema validation" "no schema bundle: set KVF_K8S_SCHEMAS, or keep ../shared/k8s-schemas or tests/data/k8s-schemas"
fi

# The vendored copy must not drift from the bundle it was taken from.
if [ -n "$schemas" ] && [ "$schemas" != "$KVF_ROOT/tests/data/k8s-schemas" ] && [ -f tests/data/k8s-schemas/index.json ]; then
  drift=$("$PY" - "$schemas" tests/data/k8s-schemas <<'PY'
import json, sys, filecmp
src, dst = sys.argv[1], sys.argv[2]
si, di = json.load(open(f"{src}/index.json")), json.load(open(f"{dst}/index.json"))
bad = [k for k in di if si.get(k) != di[k] or not filecmp.cmp(f"{src}/{si[k]}", f"{dst}/{di[k]}", shallow=False)]
print(" ".join(bad))
PY
)
  if [ -z "$drift" ]; then pass "k8s vendored schemas match $schemas"
  else fail "k8s vendored schemas match $schemas" "differs for: $drift (run k8s/tools/vendor-schemas.sh)"; fi
fi

render() { # render KUBECTL NAME OUTFILE -> 0 or 1 with the error in OUTFILE.err
  "$1" kustomize "$(kpath "$2")" >"$3" 2>"$3.err" && [ -s "$3" ]
}

targets=()
for o in "${OVERLAYS[@]}"; do
  if render "$KUBECTL" "$o" "$OUT/$o.yaml"; then
    pass "k8s render $o ($(grep -c '^kind: ' "$OUT/$o.yaml") objects)"
    targets+=("$o=$OUT/$o.yaml")
  else
    fail "k8s render $o" "$(grep -v "^# Warning: '" "$OUT/$o.yaml.err" | head -c 400)"
  fi
done

if [ ${#targets[@]} -gt 0 ]; then
  "$PY" k8s/tools/kvf_k8s_check.py "${schema_args[@]}" --kueue-config "$KUEUE_CONFIG" "${targets[@]}" >"$KVF_TMP/check.out" 2>&1
  rc=$?
  cat "$KVF_TMP/check.out"
  if [ $rc -ne 0 ] && ! grep -q '^FAIL: ' "$KVF_TMP/check.out"; then fail "k8s policy checker" "exited $rc"; fi
  KVF_FAILS=$((KVF_FAILS + $(grep -c '^FAIL: ' "$KVF_TMP/check.out")))

  "$PY" k8s/tests/policy_mutations.py "${schema_args[@]}" --kueue-config "$KUEUE_CONFIG" "${targets[@]}" >"$KVF_TMP/mut.out" 2>&1
  rc=$?
  cat "$KVF_TMP/mut.out"
  if [ $rc -ne 0 ] && ! grep -q '^FAIL: ' "$KVF_TMP/mut.out"; then fail "k8s policy mutations" "exited $rc"; fi
  KVF_FAILS=$((KVF_FAILS + $(grep -c '^FAIL: ' "$KVF_TMP/mut.out")))
fi

# Same objects from kustomize v2 (Debian 12's kubectl 1.20): the overlays avoid
# syntax it lacks (directories in resources, `patches:`, components). Uses
# $KVF_KUBECTL_ALT, or a copy unpacked from `apt-get download kubernetes-client`
# under .cache/ (fetched once; SKIP when that is not possible here).
old_kustomize="v2.0.3 (embedded, kubectl <= 1.20)"
alt=${KVF_KUBECTL_ALT:-}
cache=$KVF_ROOT/.cache/kubernetes-client
if [ "$kv" = "$old_kustomize" ] && [ -z "$alt" ]; then
  : # the primary kubectl is the old one: it rendered every overlay above
elif [ -z "$alt" ] && [ -x "$cache/usr/bin/kubectl" ]; then
  alt=$cache/usr/bin/kubectl
elif [ -z "$alt" ] && command -v apt-get >/dev/null; then
  mkdir -p "$cache" && (cd "$cache" && rm -f ./*.deb && timeout 30 apt-get download -qq kubernetes-client >/dev/null 2>&1 \
    && dpkg-deb -x kubernetes-client_*.deb . && rm -f ./*.deb) && [ -x "$cache/usr/bin/kubectl" ] && alt=$cache/usr/bin/kubectl
fi
if [ -z "$alt" ]; then
  if [ "$kv" = "$old_kustomize" ]; then
    echo "# kustomize v2 rendered every overlay above; no newer kubectl to compare with"
  else
    skip "k8s kustomize v2 compatibility" "no kubectl 1.20 at hand (apt-get download kubernetes-client failed; set KVF_KUBECTL_ALT)"
  fi
else
  echo "# comparing with $alt (kustomize $(kustomize_version "$alt"))"
  for o in "${OVERLAYS[@]}"; do
    [ -s "$OUT/$o.yaml" ] || continue
    if ! render "$alt" "$o" "$KVF_TMP/$o.alt.yaml"; then
      fail "k8s kustomize compat $o" "$(grep -v "^# Warning: '" "$KVF_TMP/$o.alt.yaml.err" | head -c 400)"
      continue
    fi
    diff=$("$PY" k8s/tools/kvf_k8s_check.py --same-objects "$OUT/$o.yaml" "$KVF_TMP/$o.alt.yaml")
    if [ -z "$diff" ]; then pass "k8s kustomize compat $o (same objects from both kubectls)"
    else fail "k8s kustomize compat $o" "$diff"; fi
  done
fi

kvf_done
