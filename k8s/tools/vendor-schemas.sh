#!/usr/bin/env bash
# Copies the JSON schemas that k8s/ uses from the shared bundle (default
# ../shared/k8s-schemas, or $1) into tests/data/k8s-schemas/, with an
# index.json and sources.json cut down to those files, so a clone without
# ../shared still validates every overlay. Re-run after the bundle changes;
# `make k8s-check` fails while the copy differs from the bundle it can see.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
src=${1:-$root/../shared/k8s-schemas}
dst=$root/tests/data/k8s-schemas
[ -f "$src/index.json" ] || { echo "vendor-schemas: no schema bundle at $src" >&2; exit 1; }
# Every kind the overlays render, plus the ones a platform engineer is likely
# to add in an overlay of their own (Secret, Gateway, HPA, StatefulSet...).
keys=(
  v1/Namespace v1/ServiceAccount v1/ConfigMap v1/Secret v1/Service
  apps/v1/Deployment apps/v1/StatefulSet autoscaling/v2/HorizontalPodAutoscaler
  policy/v1/PodDisruptionBudget networking.k8s.io/v1/NetworkPolicy
  rbac.authorization.k8s.io/v1/Role rbac.authorization.k8s.io/v1/RoleBinding
  rbac.authorization.k8s.io/v1/ClusterRole rbac.authorization.k8s.io/v1/ClusterRoleBinding
  resource.k8s.io/v1/DeviceClass resource.k8s.io/v1/ResourceClaimTemplate resource.k8s.io/v1/ResourceClaim
  scheduling.k8s.io/v1alpha1/Workload scheduling.k8s.io/v1alpha2/Workload scheduling.k8s.io/v1alpha2/PodGroup
  leaderworkerset.x-k8s.io/v1/LeaderWorkerSet
  kueue.x-k8s.io/v1beta2/ResourceFlavor kueue.x-k8s.io/v1beta2/ClusterQueue kueue.x-k8s.io/v1beta2/LocalQueue
  inference.networking.k8s.io/v1/InferencePool
  gateway.networking.k8s.io/v1/HTTPRoute gateway.networking.k8s.io/v1/Gateway
  monitoring.coreos.com/v1/ServiceMonitor
)
rm -rf "$dst.tmp" && mkdir -p "$dst.tmp"
/usr/bin/python3 - "$src" "$dst.tmp" "${keys[@]}" <<'PY'
import json, shutil, sys
src, dst, keys = sys.argv[1], sys.argv[2], sys.argv[3:]
index = json.load(open(f"{src}/index.json"))
out = {}
for k in keys:
    if k not in index:
        sys.exit(f"vendor-schemas: {k} is not in {src}/index.json")
    out[k] = index[k]
    shutil.copyfile(f"{src}/{index[k]}", f"{dst}/{index[k]}")
json.dump(out, open(f"{dst}/index.json", "w"), indent=2, sort_keys=True)
open(f"{dst}/index.json", "a").write("\n")
files = set(out.values())
try:
    sources = json.load(open(f"{src}/sources.json"))
except FileNotFoundError:
    sources = None
if isinstance(sources, dict) and isinstance(sources.get("sources"), list):
    sources["sources"] = [e for e in sources["sources"] if e.get("file") in files]
    json.dump(sources, open(f"{dst}/sources.json", "w"), indent=1)
    open(f"{dst}/sources.json", "a").write("\n")
PY
cat > "$dst.tmp/README.md" <<'MD'
# Vendored k8s schemas

A subset of the shared schema bundle (`../shared/k8s-schemas`, see its README for how
every file was produced and from which upstream commit; `sources.json` here keeps the
provenance of the files copied). `make k8s-check` uses this copy only when
`KVF_K8S_SCHEMAS` is unset and `../shared/k8s-schemas` is absent (a clean clone in CI),
and fails while this copy differs from a bundle it can see. Refresh with
`k8s/tools/vendor-schemas.sh`.

Built-in kinds are Kubernetes 1.35 (PodSpec also carries 1.36's `schedulingGroup`);
Workload/PodGroup `scheduling.k8s.io/v1alpha2` are 1.36; LeaderWorkerSet v0.10.0;
Kueue v0.19.2 (`v1beta2`); InferencePool from GAIE v1.6.0; Gateway API v1.6.1
standard channel; ServiceMonitor from prometheus-operator v0.93.0.
MD
rm -rf "$dst" && mv "$dst.tmp" "$dst"
echo "vendor-schemas: $(ls "$dst" | wc -l) files in ${dst#"$root"/}"
