#!/usr/bin/env bash
# Cross-checks the committed block key vectors against an independent XXH3
# implementation: Debian's xxhsum binary. With an empty cluster secret a key
# is plain XXH3-128 (default secret, seed 0) of its message, so this script
# rebuilds every message from docs/block-keys.md's byte layout in Python,
# hashes it with `xxhsum -H2` and compares with tests/data/blockkey_vectors.json.
# It also checks that docs/block-keys.md publishes every vector's keys.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

vectors="$KVF_ROOT/tests/data/blockkey_vectors.json"
doc="$KVF_ROOT/docs/block-keys.md"
PY=/usr/bin/python3

if ! command -v xxhsum >/dev/null 2>&1; then
  skip "blockkey vectors vs xxhsum" "xxhsum not installed (Debian package xxhash)"
else
  # Writes one message file per key and a line "FILE EXPECTED_HEX NAME" for each.
  "$PY" - "$vectors" "$KVF_TMP" >"$KVF_TMP/list" <<'PYEOF'
import json, struct, sys
vecs = json.load(open(sys.argv[1]))["vectors"]
out = sys.argv[2]
for v in vecs:
    if v["cluster_secret_hex"] != "":
        continue
    model = v["model_id"].encode()
    salt = bytes.fromhex(v["tenant_salt_hex"])
    if "tokens" in v:
        toks = v["tokens"]
    else:
        r = v["token_rule"]
        toks = [(i * r["mul"] + r["add"]) % 2**32 for i in range(r["n"])]
    msgs = [("root", struct.pack("<I", len(model)) + model + struct.pack("<I", len(salt)) + salt, v["root"])]
    bs = v["block_size"]
    parent = v["root"]
    for i, key in enumerate(v["keys"]):
        p = bytes.fromhex(parent)          # canonical: hi (8 bytes BE) then lo (8 bytes BE)
        hi, lo = struct.unpack(">QQ", p)
        blk = toks[i * bs:(i + 1) * bs]
        msgs.append(("block%d" % i, struct.pack("<QQ", lo, hi) + struct.pack("<%dI" % bs, *blk), key))
        parent = key
    for tag, m, want in msgs:
        f = "%s/%s.%s.bin" % (out, v["name"], tag)
        open(f, "wb").write(m)
        print(f, want, "%s.%s" % (v["name"], tag))
PYEOF
  n=0
  while read -r f want name; do
    got=$(xxhsum -H2 "$f" 2>/dev/null | cut -d' ' -f1)
    check_eq "xxhsum $name" "$want" "$got"
    n=$((n + 1))
  done <"$KVF_TMP/list"
  [ "$n" -ge 10 ] && pass "xxhsum checked $n keys" || fail "xxhsum checked $n keys" "expected at least 10"
fi

# Every published key also appears in the doc.
missing=$("$PY" - "$vectors" "$doc" <<'PYEOF'
import json, sys
doc = open(sys.argv[2]).read()
for v in json.load(open(sys.argv[1]))["vectors"]:
    for k in [v["root"]] + v["keys"]:
        if k not in doc:
            print(v["name"], k)
PYEOF
) || missing="cannot read $doc or $vectors"
check_eq "docs/block-keys.md lists every vector key" "" "$missing"
kvf_done
