#!/usr/bin/python3
"""Proves each kvfabric k8s policy rule fails when the promise it encodes is broken.

Usage: policy_mutations.py [--schemas DIR] --kueue-config FILE NAME=RENDERED.yaml ...

Each case takes the rendered output of one real overlay, breaks one thing in a copy (a
container without probes, a GPU pod with nvidia.com/gpu limits, a gang member without its
workloadRef, an image on :latest, a NetworkPolicy that leaves a pod open, a port that no
longer matches kvf.conf, ...), and checks that
  1. the named rule passes on the unmodified overlay, and
  2. the same rule fails on the copy, with a message containing the expected text.
One PASS/FAIL line per case (protocol of tests/lib.sh).
"""
import copy
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import kvf_k8s_check as K  # noqa: E402


def find(docs, kind, name):
    for d in docs:
        if d.get("kind") == kind and d["metadata"].get("name", "").startswith(name):
            return d
    raise KeyError(f"{kind}/{name} not in the rendered overlay")


def pod_spec(docs, kind, name, role=None):
    d = find(docs, kind, name)
    if kind == "LeaderWorkerSet":
        return d["spec"]["leaderWorkerTemplate"]["leaderTemplate" if role == "leader" else "workerTemplate"]["spec"]
    return d["spec"]["template"]["spec"]


def container(docs, kind, name, role=None):
    return pod_spec(docs, kind, name, role)["containers"][0]


def set_conf(docs, old, new):
    cm = find(docs, "ConfigMap", "kvf-config")
    assert old in cm["data"]["kvf.conf"], old
    cm["data"]["kvf.conf"] = cm["data"]["kvf.conf"].replace(old, new)


# ---- the mutations: (case name, overlay, rule, expected text, function(docs))

def no_readiness(d):
    del container(d, "Deployment", "kvf-gateway")["readinessProbe"]


def no_liveness(d):
    del container(d, "StatefulSet", "kvf-cachedir")["livenessProbe"]


def no_resources(d):
    del container(d, "Deployment", "kvf-decode")["resources"]["requests"]


def no_security_context(d):
    del container(d, "Deployment", "kvf-prefill")["securityContext"]


def writable_root(d):
    container(d, "StatefulSet", "kvf-cachedir")["securityContext"]["readOnlyRootFilesystem"] = False


def root_user(d):
    pod_spec(d, "Deployment", "kvf-gateway")["securityContext"]["runAsUser"] = 0


def extra_capability(d):
    container(d, "Deployment", "kvf-decode")["securityContext"]["capabilities"]["add"].append("SYS_ADMIN")


def ipc_lock_without_rdma(d):
    container(d, "Deployment", "kvf-decode")["securityContext"]["capabilities"]["add"] = ["IPC_LOCK"]


def legacy_gpu_limit(d):
    container(d, "Deployment", "kvf-decode")["resources"]["limits"]["nvidia.com/gpu"] = 1


def gpu_pod_without_claim(d):
    spec = pod_spec(d, "Deployment", "kvf-prefill")
    del spec["resourceClaims"]
    del spec["containers"][0]["resources"]["claims"]


def nic_not_aligned(d):
    del find(d, "ResourceClaimTemplate", "kvf-gpu-rdma")["spec"]["spec"]["devices"]["constraints"]


def rdma_without_ipc_lock(d):
    del container(d, "Deployment", "kvf-decode")["securityContext"]["capabilities"]["add"]


def rdma_without_memlock(d):
    del find(d, "Deployment", "kvf-prefill")["spec"]["template"]["metadata"]["annotations"]


def gang_member_without_workloadref(d):
    del pod_spec(d, "StatefulSet", "kvf-cell-prefill")["workloadRef"]


def gang_member_wrong_podgroup(d):
    pod_spec(d, "StatefulSet", "kvf-cell-decode")["workloadRef"]["podGroup"] = "cells"


def lws_without_schedulinggroup(d):
    del pod_spec(d, "LeaderWorkerSet", "kvf-cell", "worker")["schedulingGroup"]


def gang_mincount_unreachable(d):
    find(d, "PodGroup", "kvf-cell")["spec"]["schedulingPolicy"]["gang"]["minCount"] = 9


def lws_leader_ready(d):
    find(d, "LeaderWorkerSet", "kvf-cell")["spec"]["startupPolicy"] = "LeaderReady"


def sts_ordered_ready(d):
    find(d, "StatefulSet", "kvf-cell-decode")["spec"]["podManagementPolicy"] = "OrderedReady"


def image_latest(d):
    container(d, "Deployment", "kvf-gateway")["image"] = "ghcr.io/kvfabric/kvfabric:latest"


def image_untagged(d):
    container(d, "StatefulSet", "kvf-cachedir")["image"] = "ghcr.io/kvfabric/kvfabric"


def netpol_no_default_deny(d):
    d.remove(find(d, "NetworkPolicy", "kvf-default-deny"))
    d.remove(find(d, "NetworkPolicy", "kvf-cachedir"))


def netpol_worker_open(d):
    find(d, "NetworkPolicy", "kvf-decode")["spec"]["ingress"].append({})


def netpol_gateway_cut_off(d):
    np = find(d, "NetworkPolicy", "kvf-gateway")
    np["spec"]["egress"] = [e for e in np["spec"]["egress"]
                            if e["to"][0]["podSelector"]["matchLabels"].get("app.kubernetes.io/component") != "cachedir"]


def netpol_no_dns(d):
    d.remove(find(d, "NetworkPolicy", "kvf-allow-dns"))


def port_mismatch(d):
    container(d, "Deployment", "kvf-decode")["ports"][0]["containerPort"] = 8201


def conf_port_changed(d):
    set_conf(d, 'http_listen = "0.0.0.0:8100"', 'http_listen = "0.0.0.0:8101"')


def model_not_mounted(d):
    set_conf(d, 'model_dir = "/models/current";', 'model_dir = "/data/model";')


def probe_wrong_path(d):
    container(d, "Deployment", "kvf-decode")["readinessProbe"]["httpGet"]["path"] = "/health"


def cachedir_list_stale(d):
    find(d, "StatefulSet", "kvf-cachedir")["spec"]["replicas"] = 4


def inferencepool_wrong_port(d):
    find(d, "InferencePool", "kvf-decode")["spec"]["targetPorts"][0]["number"] = 8000


def service_bad_targetport(d):
    find(d, "Service", "kvf-gateway")["spec"]["ports"][0]["targetPort"] = "https"


def secret_in_git(d):
    d.append({"apiVersion": "v1", "kind": "Secret",
              "metadata": {"name": "kvf-cluster-secret", "namespace": "kvfabric"},
              "stringData": {"cluster-secret.conf": 'secret = "0000";'}})


def secret_in_configmap(d):
    set_conf(d, "block_size = 16;", 'block_size = 16;\n  secret = "0000";')


def no_prestop(d):
    del container(d, "Deployment", "kvf-decode")["lifecycle"]


def prestop_wrong_socket(d):
    container(d, "Deployment", "kvf-gateway")["lifecycle"]["preStop"]["exec"]["command"][2] = "/run/kvfabric/decode.sock"


def short_grace(d):
    pod_spec(d, "Deployment", "kvf-gateway")["terminationGracePeriodSeconds"] = 30


def no_topology_spread(d):
    del pod_spec(d, "StatefulSet", "kvf-cachedir")["topologySpreadConstraints"]


def token_mounted(d):
    pod_spec(d, "Deployment", "kvf-gateway")["automountServiceAccountToken"] = True


def queue_typo(d):
    tmpl = find(d, "Deployment", "kvf-decode")["spec"]["template"]
    tmpl["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] = "kvf-servng"
    find(d, "Deployment", "kvf-decode")["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] = "kvf-servng"


def queue_gpu_not_covered(d):
    cq = find(d, "ClusterQueue", "kvf-serving")
    rg = cq["spec"]["resourceGroups"][0]
    rg["coveredResources"].remove("kvfabric.io/gpu")
    rg["flavors"][0]["resources"] = [r for r in rg["flavors"][0]["resources"] if r["name"] != "kvfabric.io/gpu"]


def queue_wrong_namespace(d):
    find(d, "ClusterQueue", "kvf-serving")["spec"]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] = "kvfabric-research"


def missing_namespace(d):
    del find(d, "Service", "kvf-gateway")["metadata"]["namespace"]


def psa_relaxed_for_nothing(d):
    find(d, "Namespace", "kvfabric")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] = "privileged"


def cluster_role(d):
    d.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
              "metadata": {"name": "kvf-admin"}, "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]})


def role_reads_secrets(d):
    find(d, "Role", "kvf-prometheus-discovery")["rules"][0]["resources"].append("secrets")


CASES = [
    ("container without readinessProbe", "aggregated", "containers", "no readinessProbe", no_readiness),
    ("container without livenessProbe", "aggregated", "containers", "no livenessProbe", no_liveness),
    ("container without requests", "aggregated", "containers", "no cpu request", no_resources),
    ("container without securityContext", "disaggregated", "containers", "no securityContext", no_security_context),
    ("writable root filesystem", "aggregated", "containers", "readOnlyRootFilesystem", writable_root),
    ("pod running as root", "aggregated", "containers", "runAsUser 0", root_user),
    ("capability other than IPC_LOCK", "disaggregated", "containers", "SYS_ADMIN", extra_capability),
    ("IPC_LOCK without an RDMA NIC", "aggregated", "containers", "claims no RDMA NIC", ipc_lock_without_rdma),
    ("GPU pod with nvidia.com/gpu limits", "disaggregated", "dra", "legacy device-plugin resource nvidia.com/gpu", legacy_gpu_limit),
    ("GPU pod without a DRA claim", "disaggregated", "dra", "claims no GPU through DRA", gpu_pod_without_claim),
    ("RDMA NIC not on the GPU's PCIe root", "disaggregated", "dra", "not aligned with a GPU", nic_not_aligned),
    ("RDMA NIC without IPC_LOCK", "disaggregated", "dra", "without the IPC_LOCK capability", rdma_without_ipc_lock),
    ("RDMA NIC without memlock rlimit", "disaggregated", "dra", "RLIMIT_MEMLOCK", rdma_without_memlock),
    ("gang member without workloadRef (1.35)", "multi-node-1.35", "gang", "without spec.workloadRef", gang_member_without_workloadref),
    ("gang member naming a missing pod group", "multi-node-1.35", "gang", "is not in Workload", gang_member_wrong_podgroup),
    ("LWS member without schedulingGroup (1.36)", "multi-node", "gang", "without spec.workloadRef or spec.schedulingGroup", lws_without_schedulinggroup),
    ("gang minCount above its pods", "multi-node", "gang", "can never be scheduled", gang_mincount_unreachable),
    ("LWS gang with startupPolicy LeaderReady", "multi-node", "gang", "LeaderCreated", lws_leader_ready),
    ("StatefulSet gang with OrderedReady", "multi-node-1.35", "gang", "Parallel", sts_ordered_ready),
    ("image on :latest", "aggregated", "images", "uses :latest", image_latest),
    ("image without tag", "aggregated", "images", "no tag or digest", image_untagged),
    ("NetworkPolicy not covering a pod", "aggregated", "netpol", "no NetworkPolicy isolates its ingress", netpol_no_default_deny),
    ("NetworkPolicy opening a worker to clients", "disaggregated", "netpol", "a client in another namespace can reach", netpol_worker_open),
    ("NetworkPolicy cutting gateway from cachedir", "aggregated", "netpol", "cannot reach", netpol_gateway_cut_off),
    ("NetworkPolicy without DNS egress", "aggregated", "netpol", "cannot reach cluster DNS", netpol_no_dns),
    ("containerPort not matching kvf.conf", "aggregated", "config", "!= kvf.conf decode", port_mismatch),
    ("kvf.conf port changed, manifests not", "disaggregated", "config", "!= kvf.conf prefill", conf_port_changed),
    ("engine.model_dir outside the model volume", "disaggregated", "config", "is on no volume mount", model_not_mounted),
    ("readiness probe on /health", "aggregated", "config", "readinessProbe path /health", probe_wrong_path),
    ("cachedir replicas not in cluster.cachedir", "aggregated", "config", "cluster.cachedir", cachedir_list_stale),
    ("InferencePool targetPort not decode http", "inference-gateway", "config", "!= decode.http_listen", inferencepool_wrong_port),
    ("Service targetPort naming no container port", "aggregated", "config", "targetPort https", service_bad_targetport),
    ("Secret values in the manifests", "aggregated", "config", "keep secret values out of git", secret_in_git),
    ("cluster secret written in the ConfigMap", "aggregated", "config", "belongs in the Secret", secret_in_configmap),
    ("daemon without preStop drain", "aggregated", "pods", "preStop is []", no_prestop),
    ("preStop draining another daemon's socket", "aggregated", "pods", "gateway.sock", prestop_wrong_socket),
    ("grace period too short to drain", "aggregated", "pods", "terminationGracePeriodSeconds 30", short_grace),
    ("pod without topology spread", "aggregated", "pods", "no topologySpreadConstraints", no_topology_spread),
    ("daemon mounting an API token", "aggregated", "pods", "automountServiceAccountToken", token_mounted),
    ("queue-name naming no LocalQueue", "kueue", "kueue", "LocalQueue kvf-servng", queue_typo),
    ("ClusterQueue not covering the GPUs", "kueue", "kueue", "does not cover kvfabric.io/gpu", queue_gpu_not_covered),
    ("ClusterQueue not admitting the namespace", "kueue", "kueue", "does not admit namespace kvfabric", queue_wrong_namespace),
    ("object without namespace", "aggregated", "namespaces", "no namespace", missing_namespace),
    ("PSA relaxed without a reason", "aggregated", "namespaces", "nothing here needs more than restricted", psa_relaxed_for_nothing),
    ("cluster-wide wildcard RBAC", "aggregated", "rbac", "cluster-wide RBAC", cluster_role),
    ("Role reading Secrets", "aggregated", "rbac", "grants access to secrets", role_reads_secrets),
]


def schema_typo(d):
    c = container(d, "Deployment", "kvf-decode")
    c["resource"] = c.pop("resources")


def main(argv):
    schemas, kueue, rendered = None, None, {}
    it = iter(argv)
    for a in it:
        if a == "--schemas":
            schemas = next(it)
        elif a == "--kueue-config":
            kueue = next(it)
        else:
            name, path = a.split("=", 1)
            rendered[name] = K.load_docs(path)
    kcfg = K.load_kueue_config(kueue)
    failed = 0
    for case, overlay, rule, expect, mutate in CASES:
        name = f"k8s mutation {case} -> {rule}"
        if overlay not in rendered:
            print(f"SKIP: {name}: overlay {overlay} was not rendered")
            continue
        base = K.run_rules(K.Manifests(copy.deepcopy(rendered[overlay]), copy.deepcopy(kcfg)), [rule])[rule]
        if base:
            print(f"FAIL: {name}: rule already fails on the real {overlay} overlay: {base[0]}")
            failed += 1
            continue
        docs = copy.deepcopy(rendered[overlay])
        try:
            mutate(docs)
        except (KeyError, IndexError, AssertionError) as e:
            print(f"FAIL: {name}: mutation does not apply to {overlay}: {e}")
            failed += 1
            continue
        errs = K.run_rules(K.Manifests(docs, copy.deepcopy(kcfg)), [rule])[rule]
        if any(expect in e for e in errs):
            print(f"PASS: {name}")
        else:
            print(f"FAIL: {name}: expected a violation containing {expect!r}, got {errs[:3]}")
            failed += 1
    # The schema check itself catches a misspelt field.
    if schemas and "disaggregated" in rendered:
        docs = copy.deepcopy(rendered["disaggregated"])
        schema_typo(docs)
        errs = K.check_schema(K.Manifests(docs), K.load_schemas(schemas))
        if any("'resource' was unexpected" in e for e in errs):
            print("PASS: k8s mutation containers[].resource typo -> schema")
        else:
            print(f"FAIL: k8s mutation containers[].resource typo -> schema: got {errs[:3]}")
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
