#!/usr/bin/python3
"""Offline checks of rendered kvfabric manifests: JSON-schema validation and project policy.

Usage:
  kvf_k8s_check.py [--schemas DIR] [--kueue-config FILE] NAME=RENDERED.yaml ...
  kvf_k8s_check.py --same-objects A.yaml B.yaml   (prints differences; exit 1 if any)

For every NAME=FILE (the output of `kubectl kustomize k8s/overlays/NAME`) it prints one line
per check in the test-runner protocol of tests/lib.sh:
  PASS: k8s NAME schema          every document validates against the schema bundle
  PASS: k8s NAME policy RULE     one line per policy rule below
  FAIL: k8s NAME policy RULE: <object>: <why>; <object>: <why>; ...
  SKIP: k8s NAME schema: <why>   (no schema bundle given)
and exits 1 if anything failed.

The policy rules encode what kvfabric's manifests promise (k8s/README.md, "What make
k8s-check enforces"); each is a function `rule_<name>(m)` returning violations, so the
mutation tests (k8s/tests/policy_mutations.py) can run them on altered copies. Only
PyYAML and jsonschema are needed (Debian: python3-yaml python3-jsonschema); run it with
Debian's /usr/bin/python3.
"""
import copy
import json
import os
import re
import sys

import yaml

# --------------------------------------------------------------------------------------
# libconfig (the subset kvf.conf uses: groups, arrays, lists, scalars, @include)


class ConfigError(Exception):
    pass


_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<comment>\#[^\n]*|//[^\n]*|/\*.*?\*/)
  | (?P<include>@include[ \t]+"(?:[^"\\]|\\.)*")
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<float>[-+]?(?:\d+\.\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?\d+[eE][-+]?\d+)
  | (?P<hex>0[xX][0-9a-fA-F]+L{0,2})
  | (?P<int>[-+]?\d+L{0,2})
  | (?P<bool>(?i:true|false)\b)
  | (?P<name>[A-Za-z*][-A-Za-z0-9_*]*)
  | (?P<punct>[=:;,{}\[\]()])
""", re.X | re.S)


def parse_libconfig(text):
    """Parses libconfig text into nested dicts/lists. Returns (settings, includes)."""
    toks, includes, pos = [], [], 0
    while pos < len(text):
        mo = _TOKEN.match(text, pos)
        if not mo:
            line = text.count("\n", 0, pos) + 1
            raise ConfigError(f"line {line}: unexpected {text[pos:pos + 20]!r}")
        kind, val = mo.lastgroup, mo.group()
        pos = mo.end()
        if kind in ("ws", "comment"):
            continue
        if kind == "include":
            includes.append(json.loads(val.split(None, 1)[1]))
            continue
        toks.append((kind, val))
    i = 0

    def peek():
        return toks[i] if i < len(toks) else ("eof", "")

    def take(expect=None):
        nonlocal i
        t = peek()
        if expect and t[1] != expect:
            raise ConfigError(f"expected {expect!r}, got {t[1]!r}")
        i += 1
        return t

    def value():
        kind, val = peek()
        if kind == "string":
            parts = []
            while peek()[0] == "string":
                parts.append(json.loads(take()[1]))
            return "".join(parts)
        take()
        if kind == "int":
            return int(val.rstrip("L"))
        if kind == "hex":
            return int(val.rstrip("L"), 16)
        if kind == "float":
            return float(val)
        if kind == "bool":
            return val.lower() == "true"
        if val in ("[", "("):
            close = "]" if val == "[" else ")"
            out = []
            while peek()[1] != close:
                out.append(value())
                if peek()[1] == ",":
                    take()
            take(close)
            return out
        if val == "{":
            out = settings("}")
            take("}")
            return out
        raise ConfigError(f"unexpected {val!r}")

    def settings(end):
        out = {}
        while peek()[1] != end and peek()[0] != "eof":
            kind, name = take()
            if kind != "name":
                raise ConfigError(f"expected a setting name, got {name!r}")
            if peek()[1] not in ("=", ":"):
                raise ConfigError(f"{name}: expected = or :")
            take()
            if name in out:
                raise ConfigError(f"{name}: duplicate setting")
            out[name] = value()
            if peek()[1] in (";", ","):
                take()
        return out

    root = settings(None)
    if peek()[0] != "eof":
        raise ConfigError(f"unexpected {peek()[1]!r}")
    return root, includes


def listen_port(addr):
    """'0.0.0.0:8100' -> 8100."""
    m = re.fullmatch(r"(?:\[[^\]]*\]|[^:]*):(\d+)", str(addr))
    if not m:
        raise ConfigError(f"{addr!r}: not host:port")
    return int(m.group(1))


# --------------------------------------------------------------------------------------
# The rendered manifest set

CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "DeviceClass",
                  "ClusterQueue", "ResourceFlavor", "PriorityClass", "StorageClass"}
DAEMONS = {"kvf-cachedir": "cachedir", "kvf-prefill": "prefill",
           "kvf-decode": "decode", "kvf-gateway": "gateway"}
# Which kvf.conf keys are listening ports, and the containerPort name each must carry.
PORT_KEYS = {"listen": "kvf", "http_listen": "http", "fabric_listen": "fabric"}
GPU_DEVICE_CLASSES = {"gpu.nvidia.com"}      # installed by the NVIDIA DRA driver
RDMA_DRIVER = "dra.net"                      # DRANET
PCIE_ROOT = "resource.kubernetes.io/pcieRoot"
MEMLOCK_ANNOTATION = "ulimits.noderesource.dev/container."
# Minimum terminationGracePeriodSeconds per daemon (drain has to finish in it).
MIN_GRACE = {"cachedir": 15, "prefill": 60, "decode": 120, "gateway": 120}


def ref(doc):
    md = doc.get("metadata") or {}
    ns = md.get("namespace")
    return f"{doc.get('kind')}/{(ns + '/') if ns else ''}{md.get('name')}"


class Pod:
    """One pod template and how many pods it stands for."""

    def __init__(self, owner, template, count, role_in_owner=""):
        self.owner = owner
        self.ref = ref(owner) + (f"[{role_in_owner}]" if role_in_owner else "")
        self.ns = (owner.get("metadata") or {}).get("namespace")
        md = template.get("metadata") or {}
        self.labels = md.get("labels") or {}
        self.annotations = md.get("annotations") or {}
        self.spec = template.get("spec") or {}
        self.count = count
        self.containers = list(self.spec.get("containers") or [])
        self.all_containers = self.containers + list(self.spec.get("initContainers") or [])

    def ports(self):
        """[(name, number, protocol)] over all containers."""
        out = []
        for c in self.containers:
            for p in c.get("ports") or []:
                out.append((p.get("name"), p.get("containerPort"), p.get("protocol", "TCP")))
        return out

    def port_number(self, port):
        if isinstance(port, int):
            return port
        for name, num, _ in self.ports():
            if name == port:
                return num
        return None

    def daemon(self, c):
        cmd = (c.get("command") or [""])[0]
        return DAEMONS.get(os.path.basename(cmd))


class Manifests:
    def __init__(self, docs, kueue_config=None):
        self.docs = [d for d in docs if d]
        self.kueue_config = kueue_config
        self.by_kind = {}
        for d in self.docs:
            self.by_kind.setdefault(d.get("kind"), []).append(d)
        self.pods = self._pods()
        self.config, self.config_includes, self.config_error, self.config_map = self._config()

    def get(self, kind, name, ns=None):
        for d in self.by_kind.get(kind, []):
            md = d.get("metadata") or {}
            if md.get("name") == name and (ns is None or md.get("namespace") == ns):
                return d
        return None

    def _pods(self):
        pods = []
        for kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"):
            for d in self.by_kind.get(kind, []):
                spec = d.get("spec") or {}
                n = spec.get("replicas", 1) if kind != "DaemonSet" else 1
                pods.append(Pod(d, spec.get("template") or {}, n))
        for d in self.by_kind.get("LeaderWorkerSet", []):
            spec = d.get("spec") or {}
            lwt = spec.get("leaderWorkerTemplate") or {}
            replicas, size = spec.get("replicas", 1), lwt.get("size", 1)
            if "leaderTemplate" in lwt:
                pods.append(Pod(d, lwt["leaderTemplate"], replicas, "leader"))
                pods.append(Pod(d, lwt.get("workerTemplate") or {}, replicas * (size - 1), "worker"))
            else:
                pods.append(Pod(d, lwt.get("workerTemplate") or {}, replicas * size, "worker"))
        for d in self.by_kind.get("Pod", []):
            pods.append(Pod(d, d, 1))
        return pods

    def _config(self):
        for cm in self.by_kind.get("ConfigMap", []):
            if "kvf.conf" in (cm.get("data") or {}):
                try:
                    conf, inc = parse_libconfig(cm["data"]["kvf.conf"])
                    return conf, inc, None, cm
                except ConfigError as e:
                    return {}, [], f"{ref(cm)}: kvf.conf: {e}", cm
        return {}, [], "no ConfigMap with a kvf.conf key", None

    def namespace_labels(self, ns):
        d = self.get("Namespace", ns)
        labels = dict(((d or {}).get("metadata") or {}).get("labels") or {})
        labels.setdefault("kubernetes.io/metadata.name", ns)
        return labels

    def section(self, pod, c):
        """The daemon's config section with its -o overrides applied (None if not a daemon)."""
        role = pod.daemon(c)
        if role is None:
            return None
        sec = dict(self.config.get(role) or {})
        args = list(c.get("args") or [])
        for i, a in enumerate(args):
            if a == "-o" and i + 1 < len(args) and "=" in args[i + 1]:
                key, val = args[i + 1].split("=", 1)
                s, _, k = key.partition(".")
                if s == role:
                    sec[k] = val.strip('"')
        return sec


def match_selector(sel, labels):
    """Kubernetes LabelSelector (matchLabels + matchExpressions) against a label map."""
    if sel is None:
        return False
    for k, v in (sel.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in sel.get("matchExpressions") or []:
        k, op, vals = e.get("key"), e.get("operator"), e.get("values") or []
        if op == "In" and labels.get(k) not in vals:
            return False
        if op == "NotIn" and labels.get(k) in vals:
            return False
        if op == "Exists" and k not in labels:
            return False
        if op == "DoesNotExist" and k in labels:
            return False
    return True


def match_map(sel_map, labels):
    return bool(sel_map) and all(labels.get(k) == v for k, v in sel_map.items())


# --------------------------------------------------------------------------------------
# Schema validation


def load_schemas(d):
    import jsonschema
    with open(os.path.join(d, "index.json")) as f:
        index = json.load(f)
    cache = {}

    def get(key):
        if key not in index:
            return None
        if key not in cache:
            with open(os.path.join(d, index[key])) as f:
                schema = json.load(f)
            cache[key] = jsonschema.validators.validator_for(schema)(schema)
        return cache[key]
    return get


def drop_nulls(node):
    if isinstance(node, dict):
        return {k: drop_nulls(v) for k, v in node.items() if v is not None}
    if isinstance(node, list):
        return [drop_nulls(v) for v in node]
    return node


def check_schema(m, get):
    out = []
    for d in m.docs:
        key = f"{d.get('apiVersion')}/{d.get('kind')}"
        v = get(key)
        if v is None:
            out.append(f"{ref(d)}: no schema for {key}")
            continue
        for e in sorted(v.iter_errors(drop_nulls(d)), key=lambda e: list(e.absolute_path)):
            loc = "/".join(str(p) for p in e.absolute_path) or "(root)"
            out.append(f"{ref(d)}: {loc}: {e.message}")
    return out


# --------------------------------------------------------------------------------------
# Policy rules. Each returns a list of "object: why" strings; empty means the rule holds.


def rule_images(m):
    """Images pinned by tag (not :latest) or digest; kvfabric daemons all on one image."""
    out, kvf_images = [], set()
    for p in m.pods:
        for c in p.all_containers:
            img = c.get("image") or ""
            name, tag = img, ""
            if "@" in img:
                name, tag = img.split("@", 1)
            elif ":" in img.rsplit("/", 1)[-1]:
                name, tag = img.rsplit(":", 1)
            if not tag:
                out.append(f"{p.ref}/{c.get('name')}: image {img!r} has no tag or digest")
            elif tag == "latest":
                out.append(f"{p.ref}/{c.get('name')}: image {img!r} uses :latest")
            if c.get("imagePullPolicy") == "Always":
                out.append(f"{p.ref}/{c.get('name')}: imagePullPolicy Always on a pinned image")
            if p.daemon(c):
                kvf_images.add(img)
    if len(kvf_images) > 1:
        out.append(f"kvfabric daemons run different images: {sorted(kvf_images)}")
    return out


def _caps(c):
    return ((c.get("securityContext") or {}).get("capabilities") or {})


def _pod_has_rdma(m, p):
    return bool(_claimed_devices(m, p)[1])


def rule_containers(m):
    """Every container: readiness + liveness probes, requests, memory limit, hardened securityContext."""
    out = []
    for p in m.pods:
        psc = p.spec.get("securityContext") or {}
        for k in ("hostNetwork", "hostPID", "hostIPC"):
            if p.spec.get(k):
                out.append(f"{p.ref}: {k} is set")
        for v in p.spec.get("volumes") or []:
            if "hostPath" in v:
                out.append(f"{p.ref}: hostPath volume {v.get('name')}")
        rdma = _pod_has_rdma(m, p)
        for c in p.all_containers:
            where = f"{p.ref}/{c.get('name')}"
            init = c in (p.spec.get("initContainers") or [])
            if not init:
                for probe in ("readinessProbe", "livenessProbe"):
                    if not c.get(probe):
                        out.append(f"{where}: no {probe}")
            res = c.get("resources") or {}
            for r in ("cpu", "memory"):
                if r not in (res.get("requests") or {}):
                    out.append(f"{where}: no {r} request")
            if "memory" not in (res.get("limits") or {}):
                out.append(f"{where}: no memory limit")
            sc = c.get("securityContext")
            if not sc:
                out.append(f"{where}: no securityContext")
                continue
            if sc.get("privileged"):
                out.append(f"{where}: privileged")
            if sc.get("allowPrivilegeEscalation") is not False:
                out.append(f"{where}: allowPrivilegeEscalation is not false")
            if sc.get("readOnlyRootFilesystem") is not True:
                out.append(f"{where}: readOnlyRootFilesystem is not true")
            if not (sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True):
                out.append(f"{where}: runAsNonRoot is not true")
            if sc.get("runAsUser", psc.get("runAsUser")) == 0:
                out.append(f"{where}: runAsUser 0")
            seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
            if seccomp not in ("RuntimeDefault", "Localhost"):
                out.append(f"{where}: no RuntimeDefault seccompProfile")
            caps = _caps(c)
            if "ALL" not in (caps.get("drop") or []):
                out.append(f"{where}: capabilities do not drop ALL")
            for cap in caps.get("add") or []:
                if cap != "IPC_LOCK":
                    out.append(f"{where}: adds capability {cap} (only IPC_LOCK, for RDMA, is allowed)")
                elif not rdma:
                    out.append(f"{where}: adds IPC_LOCK but the pod claims no RDMA NIC")
    return out


def _writable_mount_dirs(c, p):
    vols = {v.get("name"): v for v in p.spec.get("volumes") or []}
    dirs = []
    for vm in c.get("volumeMounts") or []:
        v = vols.get(vm.get("name")) or {}
        if "emptyDir" in v and not vm.get("readOnly"):
            dirs.append(vm.get("mountPath").rstrip("/"))
    return dirs


def rule_pods(m):
    """Every pod: topology spread over its own pods; kvfabric daemons: `kvfctl drain` preStop on
    the admin socket from kvf.conf in a writable emptyDir, a grace period long enough for the
    drain, /tmp writable, no API token, an existing ServiceAccount."""
    out = []
    grace = {}
    for p in m.pods:
        tsc = p.spec.get("topologySpreadConstraints") or []
        if not tsc:
            out.append(f"{p.ref}: no topologySpreadConstraints")
        for t in tsc:
            if not match_selector(t.get("labelSelector"), p.labels):
                out.append(f"{p.ref}: topology spread on {t.get('topologyKey')} does not select the pod's own labels")
        sa = p.spec.get("serviceAccountName")
        if not sa or not m.get("ServiceAccount", sa, p.ns):
            out.append(f"{p.ref}: serviceAccountName {sa!r} is not in the manifests")
        for c in p.containers:
            role = p.daemon(c)
            if not role:
                continue
            where = f"{p.ref}/{c.get('name')}"
            sec = m.section(p, c) or {}
            if p.spec.get("automountServiceAccountToken") is not False:
                out.append(f"{where}: kvfabric daemons do not call the API; set automountServiceAccountToken: false")
            sock = sec.get("admin_socket")
            pre = ((((c.get("lifecycle") or {}).get("preStop") or {}).get("exec") or {}).get("command")) or []
            want = ["/usr/local/bin/kvfctl", "-s", sock, "drain"]
            if pre != want:
                out.append(f"{where}: preStop is {pre}, expected {want}")
            writable = _writable_mount_dirs(c, p)
            if sock and os.path.dirname(sock) not in writable:
                out.append(f"{where}: admin socket {sock} is not in a writable emptyDir mount")
            if "/tmp" not in writable:
                out.append(f"{where}: /tmp is not a writable emptyDir (read-only root filesystem)")
            g = p.spec.get("terminationGracePeriodSeconds", 30)
            grace.setdefault(role, []).append((g, p.ref))
            if g < MIN_GRACE[role]:
                out.append(f"{where}: terminationGracePeriodSeconds {g} < {MIN_GRACE[role]} needed to drain a {role}")
    # The gateway relays decode streams: it must outlive the decode drain.
    if grace.get("gateway") and grace.get("decode"):
        gmin = min(grace["gateway"])
        dmax = max(grace["decode"])
        if gmin[0] < dmax[0]:
            out.append(f"{gmin[1]}: grace {gmin[0]}s < {dmax[1]} grace {dmax[0]}s; the gateway relays decode streams")
    return out


def _claimed_devices(m, p):
    """(gpu_requests, nic_requests, problems) over the pod's resourceClaims."""
    gpus, nics, problems = [], [], []
    for rc in p.spec.get("resourceClaims") or []:
        tname = rc.get("resourceClaimTemplateName")
        if tname:
            tmpl = m.get("ResourceClaimTemplate", tname, p.ns)
            if not tmpl:
                problems.append(f"{p.ref}: claim {rc.get('name')}: ResourceClaimTemplate {tname} is not in the manifests")
                continue
            devs = (((tmpl.get("spec") or {}).get("spec") or {}).get("devices") or {})
        else:
            claim = m.get("ResourceClaim", rc.get("resourceClaimName"), p.ns)
            if not claim:
                problems.append(f"{p.ref}: claim {rc.get('name')}: ResourceClaim {rc.get('resourceClaimName')} is not in the manifests")
                continue
            devs = ((claim.get("spec") or {}).get("devices") or {})
        for req in devs.get("requests") or []:
            ex = req.get("exactly") or {}
            classes = [ex.get("deviceClassName")] + [s.get("deviceClassName") for s in req.get("firstAvailable") or []]
            for cls in classes:
                if not cls:
                    continue
                entry = (rc.get("name"), req.get("name"), cls, devs)
                if cls in GPU_DEVICE_CLASSES:
                    gpus.append(entry)
                else:
                    dc = m.get("DeviceClass", cls)
                    text = json.dumps((dc or {}).get("spec") or {})
                    if f'"{RDMA_DRIVER}"' in text or f'\\"{RDMA_DRIVER}\\"' in text:
                        nics.append(entry)
                    elif not dc:
                        problems.append(f"{p.ref}: device class {cls} is neither driver-installed nor in the manifests")
    return gpus, nics, problems


def rule_dra(m):
    """GPU pods get devices only through DRA claims (no extended-resource GPUs); an RDMA NIC is
    PCIe-root aligned with its GPU and comes with IPC_LOCK, a memlock rlimit and a sized /dev/shm."""
    out = []
    for p in m.pods:
        for c in p.all_containers:
            res = c.get("resources") or {}
            for part in ("requests", "limits"):
                for r in res.get(part) or {}:
                    if r.endswith("/gpu") or r.startswith("nvidia.com/"):
                        out.append(f"{p.ref}/{c.get('name')}: legacy device-plugin resource {r} in {part}")
        gpus, nics, problems = _claimed_devices(m, p)
        out += problems
        uses_gpu = any(p.daemon(c) in ("prefill", "decode") for c in p.containers) and \
            (m.config.get("engine") or {}).get("backend") == "cuda"
        if uses_gpu and not gpus:
            out.append(f"{p.ref}: runs the cuda backend but claims no GPU through DRA")
        claim_names = {rc.get("name") for rc in p.spec.get("resourceClaims") or []}
        used = set()
        for c in p.containers:
            for cl in (c.get("resources") or {}).get("claims") or []:
                used.add(cl.get("name"))
                if cl.get("name") not in claim_names:
                    out.append(f"{p.ref}/{c.get('name')}: resources.claims names {cl.get('name')}, not a pod resourceClaim")
        for name in claim_names - used:
            out.append(f"{p.ref}: resourceClaim {name} is used by no container")
        if gpus and not any(name in used for name, _, _, _ in gpus):
            out.append(f"{p.ref}: no container consumes the GPU claim")
        for claim, nic_req, cls, devs in nics:
            aligned = False
            for g_claim, g_req, _, _ in gpus:
                if g_claim != claim:
                    continue
                for con in devs.get("constraints") or []:
                    reqs = con.get("requests") or []
                    if con.get("matchAttribute") == PCIE_ROOT and (not reqs or {g_req, nic_req} <= set(reqs)):
                        aligned = True
            if not aligned:
                out.append(f"{p.ref}: RDMA NIC request {nic_req} ({cls}) is not aligned with a GPU on {PCIE_ROOT}")
            for c in p.containers:
                if claim not in [cl.get("name") for cl in (c.get("resources") or {}).get("claims") or []]:
                    continue
                where = f"{p.ref}/{c.get('name')}"
                if "IPC_LOCK" not in (_caps(c).get("add") or []):
                    out.append(f"{where}: uses an RDMA NIC without the IPC_LOCK capability")
                ann = p.annotations.get(MEMLOCK_ANNOTATION + c.get("name"), "")
                if "MEMLOCK" not in ann.upper():
                    out.append(f"{where}: no {MEMLOCK_ANNOTATION}{c.get('name')} annotation raising RLIMIT_MEMLOCK")
            shm = [v for v in p.spec.get("volumes") or []
                   if (v.get("emptyDir") or {}).get("medium") == "Memory"
                   and any(vm.get("name") == v.get("name") and vm.get("mountPath") == "/dev/shm"
                           for c in p.containers for vm in c.get("volumeMounts") or [])]
            if not shm or not shm[0]["emptyDir"].get("sizeLimit"):
                out.append(f"{p.ref}: RDMA worker without a sized Memory emptyDir at /dev/shm")
    return out


def rule_gang(m):
    """LeaderWorkerSet pods and pods labelled kvfabric.io/gang reference an existing Workload pod
    group (1.35, spec.workloadRef) or PodGroup (1.36, spec.schedulingGroup); minCount is reachable
    and protects at least one LWS group; controllers create gang members all at once."""
    out = []
    members = {}   # (apiVersion-ish, name, group) -> pods
    v1a1 = v1a2 = False
    for p in m.pods:
        gang = p.owner.get("kind") == "LeaderWorkerSet" or "kvfabric.io/gang" in p.labels
        wref, sgrp = p.spec.get("workloadRef"), p.spec.get("schedulingGroup")
        if not gang:
            if wref or sgrp:
                out.append(f"{p.ref}: references a gang but is not labelled kvfabric.io/gang")
            continue
        if wref and sgrp:
            out.append(f"{p.ref}: sets both workloadRef (1.35) and schedulingGroup (1.36+)")
        elif wref:
            v1a1 = True
            w = m.get("Workload", wref.get("name"), p.ns)
            if not w or w.get("apiVersion") != "scheduling.k8s.io/v1alpha1":
                out.append(f"{p.ref}: workloadRef names Workload {wref.get('name')}, not a scheduling.k8s.io/v1alpha1 Workload in the manifests")
            else:
                groups = [g.get("name") for g in (w.get("spec") or {}).get("podGroups") or []]
                if wref.get("podGroup") not in groups:
                    out.append(f"{p.ref}: workloadRef pod group {wref.get('podGroup')!r} is not in Workload {wref.get('name')} {groups}")
                members.setdefault(("v1alpha1", wref.get("name"), wref.get("podGroup")), []).append(p)
        elif sgrp:
            v1a2 = True
            pg = m.get("PodGroup", sgrp.get("podGroupName"), p.ns)
            if not pg:
                out.append(f"{p.ref}: schedulingGroup names PodGroup {sgrp.get('podGroupName')}, not in the manifests")
            else:
                members.setdefault(("v1alpha2", sgrp.get("podGroupName"), None), []).append(p)
        else:
            out.append(f"{p.ref}: gang member without spec.workloadRef or spec.schedulingGroup")
        owner = p.owner
        if owner.get("kind") == "LeaderWorkerSet" and (owner.get("spec") or {}).get("startupPolicy") != "LeaderCreated":
            out.append(f"{p.ref}: LeaderWorkerSet startupPolicy must be LeaderCreated for a gang (LeaderReady deadlocks)")
        if owner.get("kind") == "StatefulSet" and (owner.get("spec") or {}).get("podManagementPolicy") != "Parallel":
            out.append(f"{p.ref}: StatefulSet gang members need podManagementPolicy Parallel (OrderedReady deadlocks)")
    if v1a1 and v1a2:
        out.append("gang members mix the 1.35 (workloadRef) and 1.36 (schedulingGroup) APIs")
    # Each gang object: its members can reach minCount, and it covers at least one LWS group.
    for w in m.by_kind.get("Workload", []):
        spec = w.get("spec") or {}
        if w.get("apiVersion") == "scheduling.k8s.io/v1alpha1":
            for g in spec.get("podGroups") or []:
                mc = (((g.get("policy") or {}).get("gang")) or {}).get("minCount")
                pods = members.get(("v1alpha1", w["metadata"]["name"], g.get("name")), [])
                out += _gang_counts(f"{ref(w)} group {g.get('name')}", mc, pods)
    for pg in m.by_kind.get("PodGroup", []):
        spec = pg.get("spec") or {}
        mc = ((spec.get("schedulingPolicy") or {}).get("gang") or {}).get("minCount")
        pods = members.get(("v1alpha2", pg["metadata"]["name"], None), [])
        out += _gang_counts(ref(pg), mc, pods)
        tref = ((spec.get("podGroupTemplateRef") or {}).get("workload")) or {}
        if tref:
            w = m.get("Workload", tref.get("workloadName"), pg["metadata"].get("namespace"))
            tmpls = {t.get("name"): t for t in ((w or {}).get("spec") or {}).get("podGroupTemplates") or []} \
                if w and w.get("apiVersion") == "scheduling.k8s.io/v1alpha2" else {}
            t = tmpls.get(tref.get("podGroupTemplateName"))
            if not t:
                out.append(f"{ref(pg)}: podGroupTemplateRef {tref} names no v1alpha2 Workload template in the manifests")
            elif t.get("schedulingPolicy") != spec.get("schedulingPolicy"):
                out.append(f"{ref(pg)}: schedulingPolicy differs from its Workload template {tref.get('podGroupTemplateName')}")
    return out


def _gang_counts(what, mc, pods):
    out = []
    total = sum(p.count for p in pods)
    if not pods:
        return [f"{what}: no pod references it"]
    if mc is None:
        return out
    if mc > total:
        out.append(f"{what}: gang minCount {mc} > {total} member pods: it can never be scheduled")
    for p in pods:
        if p.owner.get("kind") == "LeaderWorkerSet":
            size = ((p.owner.get("spec") or {}).get("leaderWorkerTemplate") or {}).get("size", 1)
            if mc < size:
                out.append(f"{what}: gang minCount {mc} < LeaderWorkerSet group size {size}: a group can be half placed")
                break
    return out


# ---- NetworkPolicy evaluation


class Endpoint:
    """A traffic source or destination: a pod template, or something outside the namespace."""

    def __init__(self, ns, ns_labels, labels, pod=None, external_ip=False):
        self.ns, self.ns_labels, self.labels, self.pod, self.external_ip = ns, ns_labels, labels, pod, external_ip


def _peer_matches(peer, policy_ns, ep):
    if "ipBlock" in peer:
        return ep.external_ip
    if ep.external_ip:
        return False
    nss, pods = peer.get("namespaceSelector"), peer.get("podSelector")
    if nss is None:
        if ep.ns != policy_ns:
            return False
    elif not match_selector(nss, ep.ns_labels):
        return False
    return pods is None or match_selector(pods, ep.labels)


def _ports_match(ports, dst, num, name, proto):
    if not ports:
        return True
    for pp in ports:
        if pp.get("protocol", "TCP") != proto:
            continue
        port = pp.get("port")
        if port is None:
            return True
        if isinstance(port, str):
            if dst.pod is not None and port == name:
                return True
            continue
        if port <= num <= pp.get("endPort", port):
            return True
    return False


def _policy_types(np):
    spec = np.get("spec") or {}
    if spec.get("policyTypes"):
        return spec["policyTypes"]
    return ["Ingress"] + (["Egress"] if "egress" in spec else [])


def _policies(m, ns, labels, direction):
    return [np for np in m.by_kind.get("NetworkPolicy", [])
            if np["metadata"].get("namespace") == ns
            and match_selector((np.get("spec") or {}).get("podSelector") or {}, labels)
            and direction in _policy_types(np)]


def flow_allowed(m, src, dst, num, name, proto="TCP"):
    """Whether NetworkPolicy lets src open proto/num (named `name` on dst) to dst."""
    if src.pod is not None:
        pols = _policies(m, src.ns, src.labels, "Egress")
        if pols and not any(
                _ports_match(r.get("ports"), dst, num, name, proto)
                and (not r.get("to") or any(_peer_matches(peer, src.ns, dst) for peer in r["to"]))
                for np in pols for r in (np.get("spec") or {}).get("egress") or []):
            return False
    if dst.pod is not None:
        pols = _policies(m, dst.ns, dst.labels, "Ingress")
        if pols and not any(
                _ports_match(r.get("ports"), dst, num, name, proto)
                and (not r.get("from") or any(_peer_matches(peer, dst.ns, src) for peer in r["from"]))
                for np in pols for r in (np.get("spec") or {}).get("ingress") or []):
            return False
    return True


def _ep(m, p):
    return Endpoint(p.ns, m.namespace_labels(p.ns), p.labels, pod=p)


def _outside(ns):
    return Endpoint(ns, {"kubernetes.io/metadata.name": ns}, {"app": "client"})


def _port(m, p, name):
    for n, num, proto in p.ports():
        if n == name:
            return num, n, proto
    return None


def rule_netpol(m):
    """Default deny in and out for every pod; each declared port reachable from somewhere; the
    flows kvfabric needs allowed and the rest denied: clients reach only the gateway."""
    out = []
    roles = {}
    for p in m.pods:
        if not _policies(m, p.ns, p.labels, "Ingress"):
            out.append(f"{p.ref}: no NetworkPolicy isolates its ingress")
        if not _policies(m, p.ns, p.labels, "Egress"):
            out.append(f"{p.ref}: no NetworkPolicy isolates its egress")
        for c in p.containers:
            r = p.daemon(c)
            if r:
                roles.setdefault(r, []).append(p)
        if p.labels.get("app.kubernetes.io/component") == "epp":
            roles.setdefault("epp", []).append(p)
    dns = Endpoint("kube-system", {"kubernetes.io/metadata.name": "kube-system"}, {"k8s-app": "kube-dns"})
    client, monitoring = _outside("clients"), _outside("monitoring")

    def need(src, src_name, dst_pod, port_name, allowed=True):
        pr = _port(m, dst_pod, port_name)
        if pr is None:
            return
        ok = flow_allowed(m, src, _ep(m, dst_pod), pr[0], pr[1], pr[2])
        if ok != allowed:
            verb = "cannot reach" if allowed else "can reach"
            out.append(f"{src_name} {verb} {dst_pod.ref} port {port_name} ({pr[0]})")

    for p in m.pods:
        if not flow_allowed(m, _ep(m, p), dns, 53, None, "UDP"):
            out.append(f"{p.ref} cannot reach cluster DNS (kube-system/kube-dns UDP 53)")
        # Every declared port must be open to someone (or it is dead config). Ports only
        # probed by the kubelet are exempt: node-originated probes bypass NetworkPolicy.
        probed = {pr.get(k, {}).get("port") for c in p.containers
                  for pr in (c.get("readinessProbe") or {}, c.get("livenessProbe") or {}, c.get("startupProbe") or {})
                  for k in ("httpGet", "grpc", "tcpSocket")}
        for name, num, proto in p.ports():
            if name in probed or num in probed:
                if not any(name in (q.get("targetPort"), q.get("name")) or num == q.get("targetPort")
                           for s in m.by_kind.get("Service", []) for q in (s.get("spec") or {}).get("ports") or []):
                    continue
            srcs = [client, monitoring, _outside("inference-gateway")] + [_ep(m, q) for q in m.pods]
            if not any(flow_allowed(m, s, _ep(m, p), num, name, proto) for s in srcs):
                out.append(f"{p.ref}: port {name} ({num}) is reachable from nowhere")
    workers = roles.get("prefill", []) + roles.get("decode", [])
    for g in roles.get("gateway", []):
        need(client, "a client in another namespace", g, "http")
        for cd in roles.get("cachedir", []):
            need(_ep(m, g), g.ref, cd, "kvf")
        for w in workers:
            need(_ep(m, g), g.ref, w, "http")
    for w in workers:
        for cd in roles.get("cachedir", []):
            need(_ep(m, w), w.ref, cd, "kvf")
        for w2 in workers:
            need(_ep(m, w), w.ref, w2, "fabric")
    for d in roles.get("decode", []):
        for pf in roles.get("prefill", []):
            need(_ep(m, d), d.ref, pf, "http")
    for r in ("cachedir", "gateway", "prefill", "decode"):
        for p in roles.get(r, []):
            need(monitoring, "Prometheus (namespace monitoring)", p, "http")
    # Clients reach only the gateway.
    for r in ("cachedir", "prefill", "decode", "epp"):
        for p in roles.get(r, []):
            for name, _, _ in p.ports():
                need(client, "a client in another namespace", p, name, allowed=False)
    # Gateway API path: the Gateway's namespace reaches the pool and its picker; the picker
    # reaches the pool.
    for pool in m.by_kind.get("InferencePool", []):
        spec = pool.get("spec") or {}
        gw_nss = {pr.get("namespace") or route["metadata"].get("namespace")
                  for route in m.by_kind.get("HTTPRoute", [])
                  for pr in (route.get("spec") or {}).get("parentRefs") or []}
        targets = [p for p in m.pods if p.ns == pool["metadata"].get("namespace")
                   and match_map((spec.get("selector") or {}).get("matchLabels"), p.labels)]
        for ns in gw_nss:
            gw = _outside(ns)
            for t in targets:
                for tp in spec.get("targetPorts") or []:
                    if not flow_allowed(m, gw, _ep(m, t), tp.get("number"), _name_of(t, tp.get("number"))):
                        out.append(f"Gateway namespace {ns} cannot reach {t.ref} port {tp.get('number')}")
            for e in roles.get("epp", []):
                need(gw, f"Gateway namespace {ns}", e, "grpc-ext-proc")
        for e in roles.get("epp", []):
            for t in targets:
                for tp in spec.get("targetPorts") or []:
                    if not flow_allowed(m, _ep(m, e), _ep(m, t), tp.get("number"), _name_of(t, tp.get("number"))):
                        out.append(f"{e.ref} (endpoint picker) cannot reach {t.ref} port {tp.get('number')}")
    return out


def _name_of(p, num):
    for n, nn, _ in p.ports():
        if nn == num:
            return n
    return None


def rule_config(m):
    """Ports, probes, Services, ServiceMonitors, the cachedir list and the InferencePool agree
    with kvf.conf; the config and its @include reach every daemon; no Secret values in git."""
    out = []
    if m.config_error:
        return [m.config_error]
    for s in ("cluster", "cachedir", "prefill", "decode", "gateway", "engine", "fabric"):
        if s not in m.config:
            out.append(f"kvf.conf: no {s} section")
    if m.config_includes and "secret" in (m.config.get("cluster") or {}):
        out.append("kvf.conf: cluster.secret is written in the ConfigMap; it belongs in the Secret")
    cm_name = m.config_map["metadata"]["name"]
    for p in m.pods:
        vols = {v.get("name"): v for v in p.spec.get("volumes") or []}
        for c in p.containers:
            role = p.daemon(c)
            if not role:
                continue
            where = f"{p.ref}/{c.get('name')}"
            sec = m.section(p, c)
            args = c.get("args") or []
            conf = args[args.index("-c") + 1] if "-c" in args and args.index("-c") + 1 < len(args) else None
            if not conf:
                out.append(f"{where}: no -c CONFIG argument")
                continue
            # The file named by -c, and every @include, must come from the config volume.
            provided = {}
            for vm in c.get("volumeMounts") or []:
                v = vols.get(vm.get("name")) or {}
                sources = (v.get("projected") or {}).get("sources") or []
                if "configMap" in v:
                    sources = [{"configMap": v["configMap"]}]
                for src in sources:
                    for kind in ("configMap", "secret"):
                        s = src.get(kind)
                        if not s:
                            continue
                        for it in s.get("items") or [{"key": "kvf.conf", "path": "kvf.conf"}]:
                            provided[os.path.join(vm.get("mountPath"), it.get("path"))] = (kind, s.get("name"), it.get("key"))
            if provided.get(conf) != ("configMap", cm_name, "kvf.conf"):
                out.append(f"{where}: -c {conf} is not ConfigMap {cm_name} key kvf.conf (mounted: {sorted(provided)})")
            for inc in m.config_includes:
                if inc not in provided:
                    out.append(f"{where}: kvf.conf includes {inc}, which no volume provides")
                elif provided[inc][0] == "secret" and m.get("Secret", provided[inc][1], p.ns) is not None:
                    out.append(f"{where}: Secret {provided[inc][1]} is in the manifests; keep secret values out of git")
            if role in ("prefill", "decode"):
                model = (m.config.get("engine") or {}).get("model_dir", "")
                mounts = [vm for vm in c.get("volumeMounts") or []
                          if model == vm.get("mountPath") or model.startswith(vm.get("mountPath", "").rstrip("/") + "/")]
                if not mounts:
                    out.append(f"{where}: engine.model_dir {model!r} is on no volume mount")
                elif not mounts[-1].get("readOnly"):
                    out.append(f"{where}: the model volume {mounts[-1].get('name')} is mounted read-write")
            want = {}
            for key, pname in PORT_KEYS.items():
                if key in sec:
                    try:
                        want[pname] = listen_port(sec[key])
                    except ConfigError as e:
                        out.append(f"kvf.conf {role}.{key}: {e}")
            have = {pp.get("name"): pp.get("containerPort") for pp in c.get("ports") or []}
            if have != want:
                out.append(f"{where}: containerPorts {have} != kvf.conf {role} {want}")
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                hg = (c.get(probe) or {}).get("httpGet")
                if not hg:
                    if c.get(probe):
                        out.append(f"{where}: {probe} is not an httpGet on the http port")
                    continue
                num = p.port_number(hg.get("port"))
                if num != want.get("http"):
                    out.append(f"{where}: {probe} port {hg.get('port')} != {role}.http_listen port {want.get('http')}")
                path = {"readinessProbe": "/ready"}.get(probe, "/health")
                if hg.get("path") != path:
                    out.append(f"{where}: {probe} path {hg.get('path')} != {path}")
    # Services: each selects pods and each targetPort exists on them.
    for svc in m.by_kind.get("Service", []):
        spec = svc.get("spec") or {}
        sel = spec.get("selector") or {}
        targets = [p for p in m.pods if p.ns == svc["metadata"].get("namespace") and match_map(sel, p.labels)]
        if not targets:
            out.append(f"{ref(svc)}: selects no pods")
        for sp in spec.get("ports") or []:
            tp = sp.get("targetPort", sp.get("port"))
            for t in targets:
                if t.port_number(tp) is None or (isinstance(tp, int) and tp not in [n for _, n, _ in t.ports()]):
                    out.append(f"{ref(svc)}: port {sp.get('name')} targetPort {tp} is not a port of {t.ref}")
            if isinstance(tp, str) and targets:
                nums = {t.port_number(tp) for t in targets}
                if sp.get("port") not in nums:
                    out.append(f"{ref(svc)}: port {sp.get('name')} is {sp.get('port')} but the pods serve {sorted(n for n in nums if n)}")
    # ServiceMonitors: select Services that have the endpoint port.
    for sm in m.by_kind.get("ServiceMonitor", []):
        spec = sm.get("spec") or {}
        nss = (spec.get("namespaceSelector") or {}).get("matchNames") or [sm["metadata"].get("namespace")]
        svcs = [s for s in m.by_kind.get("Service", []) if s["metadata"].get("namespace") in nss
                and match_selector(spec.get("selector"), s["metadata"].get("labels") or {})]
        if not svcs:
            out.append(f"{ref(sm)}: selects no Service")
        for ep in spec.get("endpoints") or []:
            for s in svcs:
                if ep.get("port") not in [sp.get("name") for sp in (s.get("spec") or {}).get("ports") or []]:
                    out.append(f"{ref(sm)}: endpoint port {ep.get('port')} is not a port of {ref(s)}")
    # cluster.cachedir names every cachedir replica by its stable DNS name and listen port.
    cds = [p for p in m.pods if any(p.daemon(c) == "cachedir" for c in p.containers)]
    listed = (m.config.get("cluster") or {}).get("cachedir") or []
    expect = set()
    for p in cds:
        if p.owner.get("kind") != "StatefulSet":
            out.append(f"{p.ref}: cachedir replicas need stable names (StatefulSet) for cluster.cachedir")
            continue
        svc = (p.owner.get("spec") or {}).get("serviceName")
        s = m.get("Service", svc, p.ns)
        if not s or (s.get("spec") or {}).get("clusterIP") != "None":
            out.append(f"{p.ref}: serviceName {svc} is not a headless Service in the manifests")
        port = listen_port((m.config.get("cachedir") or {}).get("listen", ":0"))
        for i in range(p.count):
            expect.add(f"{p.owner['metadata']['name']}-{i}.{svc}:{port}")
    if set(listed) != expect:
        out.append(f"kvf.conf cluster.cachedir {sorted(listed)} != the cachedir replicas {sorted(expect)}")
    # InferencePool: targets decode pods on decode.http_listen; the picker Service exists.
    for pool in m.by_kind.get("InferencePool", []):
        spec = pool.get("spec") or {}
        ns = pool["metadata"].get("namespace")
        targets = [p for p in m.pods if p.ns == ns and match_map((spec.get("selector") or {}).get("matchLabels"), p.labels)]
        if not targets:
            out.append(f"{ref(pool)}: selects no pods")
        http = listen_port((m.config.get("decode") or {}).get("http_listen", ":0"))
        for tp in spec.get("targetPorts") or []:
            if tp.get("number") != http:
                out.append(f"{ref(pool)}: targetPort {tp.get('number')} != decode.http_listen port {http}")
        for t in targets:
            if not any(t.daemon(c) == "decode" for c in t.containers):
                out.append(f"{ref(pool)}: selects {t.ref}, which is not a decode worker")
        epr = spec.get("endpointPickerRef")
        if epr:
            s = m.get("Service", epr.get("name"), ns)
            if not s:
                out.append(f"{ref(pool)}: endpointPickerRef Service {epr.get('name')} is not in the manifests")
            elif epr.get("port", {}).get("number") not in [sp.get("port") for sp in (s.get("spec") or {}).get("ports") or []]:
                out.append(f"{ref(pool)}: endpointPickerRef port {epr.get('port')} is not a port of {ref(s)}")
    for route in m.by_kind.get("HTTPRoute", []):
        for rule in (route.get("spec") or {}).get("rules") or []:
            for b in rule.get("backendRefs") or []:
                kind = b.get("kind", "Service")
                if not m.get(kind, b.get("name"), b.get("namespace") or route["metadata"].get("namespace")):
                    out.append(f"{ref(route)}: backendRef {kind}/{b.get('name')} is not in the manifests")
    for s in m.by_kind.get("Secret", []):
        if (s.get("data") or s.get("stringData")):
            out.append(f"{ref(s)}: secret values in the manifests; create the Secret out of band")
    return out


def rule_kueue(m):
    """Queued pods name a LocalQueue whose ClusterQueue admits their namespace and covers every
    resource they request, DRA devices included (through Kueue's deviceClassMappings)."""
    out = []
    mapping = {}
    for dm in ((m.kueue_config or {}).get("resources") or {}).get("deviceClassMappings") or []:
        for cls in dm.get("deviceClassNames") or []:
            mapping[cls] = dm.get("name")
    queued = [p for p in m.pods if "kueue.x-k8s.io/queue-name" in p.labels
              or "kueue.x-k8s.io/queue-name" in ((p.owner.get("metadata") or {}).get("labels") or {})]
    for cq in m.by_kind.get("ClusterQueue", []):
        spec = cq.get("spec") or {}
        for rg in spec.get("resourceGroups") or []:
            for fl in rg.get("flavors") or []:
                if not m.get("ResourceFlavor", fl.get("name")):
                    out.append(f"{ref(cq)}: flavor {fl.get('name')} is not in the manifests")
                for r in fl.get("resources") or []:
                    if ("borrowingLimit" in r or "lendingLimit" in r) and not spec.get("cohortName"):
                        out.append(f"{ref(cq)}: {r.get('name')} borrows or lends without a cohortName")
    for p in queued:
        olabel = ((p.owner.get("metadata") or {}).get("labels") or {}).get("kueue.x-k8s.io/queue-name")
        q = p.labels.get("kueue.x-k8s.io/queue-name") or olabel
        if olabel and p.labels.get("kueue.x-k8s.io/queue-name") not in (None, olabel):
            out.append(f"{p.ref}: queue-name label differs between {p.owner.get('kind')} and pod template")
        lq = m.get("LocalQueue", q, p.ns)
        if not lq:
            out.append(f"{p.ref}: LocalQueue {q} is not in namespace {p.ns}")
            continue
        cqn = (lq.get("spec") or {}).get("clusterQueue")
        cq = m.get("ClusterQueue", cqn)
        if not cq:
            out.append(f"{ref(lq)}: ClusterQueue {cqn} is not in the manifests")
            continue
        spec = cq.get("spec") or {}
        if not match_selector(spec.get("namespaceSelector") or {}, m.namespace_labels(p.ns)):
            out.append(f"{ref(cq)}: namespaceSelector does not admit namespace {p.ns}")
        covered = {r for rg in spec.get("resourceGroups") or [] for r in rg.get("coveredResources") or []}
        need = {}
        for c in p.containers:
            for r in ((c.get("resources") or {}).get("requests") or {}):
                need[r] = need.get(r, 0) + 1
        gpus, nics, _ = _claimed_devices(m, p)
        for _, _, cls, devs in gpus + nics:
            name = mapping.get(cls)
            if not name:
                out.append(f"{p.ref}: device class {cls} has no Kueue deviceClassMapping (kueue-manager-config.yaml)")
                continue
            need[name] = need.get(name, 0) + 1
        for r in need:
            if r not in covered:
                out.append(f"{ref(cq)}: does not cover {r}, which {p.ref} requests")
        for rg in spec.get("resourceGroups") or []:
            for fl in rg.get("flavors") or []:
                for res in fl.get("resources") or []:
                    if res.get("name") in mapping.values() and res.get("name") in need:
                        nq = res.get("nominalQuota", 0)
                        if isinstance(nq, str):
                            nq = int(nq) if nq.isdigit() else 0
                        if nq + int(res.get("borrowingLimit", 0) or 0) < need[res.get("name")]:
                            out.append(f"{ref(cq)}: {res.get('name')} quota cannot admit one pod of {p.ref}")
    return out


def rule_namespaces(m):
    """Namespaced objects name an existing Namespace, cluster-scoped ones none; Pod Security
    Admission enforces restricted unless a pod there needs IPC_LOCK (then privileged + warn restricted)."""
    out = []
    for d in m.docs:
        ns = (d.get("metadata") or {}).get("namespace")
        if d.get("kind") in CLUSTER_SCOPED:
            if ns:
                out.append(f"{ref(d)}: cluster-scoped kind with a namespace")
        elif not ns:
            out.append(f"{ref(d)}: no namespace")
        elif not m.get("Namespace", ns):
            out.append(f"{ref(d)}: namespace {ns} is not in the manifests")
    for nsd in m.by_kind.get("Namespace", []):
        name = nsd["metadata"]["name"]
        labels = nsd["metadata"].get("labels") or {}
        enforce = labels.get("pod-security.kubernetes.io/enforce")
        pods = [p for p in m.pods if p.ns == name]
        needs_caps = any(_caps(c).get("add") for p in pods for c in p.all_containers)
        if enforce is None:
            out.append(f"{ref(nsd)}: no pod-security.kubernetes.io/enforce label")
        elif needs_caps:
            if enforce != "privileged" or labels.get("pod-security.kubernetes.io/warn") != "restricted":
                out.append(f"{ref(nsd)}: pods add IPC_LOCK: expected enforce=privileged with warn=restricted, got enforce={enforce}")
        elif pods and enforce != "restricted":
            out.append(f"{ref(nsd)}: enforce={enforce} but nothing here needs more than restricted")
    return out


def rule_rbac(m):
    """Namespaced Roles only, no wildcards, no Secrets; bindings resolve; a pod mounts an API
    token only if its ServiceAccount is bound to a Role."""
    out = []
    for k in ("ClusterRole", "ClusterRoleBinding"):
        for d in m.by_kind.get(k, []):
            out.append(f"{ref(d)}: cluster-wide RBAC")
    for role in m.by_kind.get("Role", []):
        for r in role.get("rules") or []:
            for f in ("verbs", "resources", "apiGroups"):
                if "*" in (r.get(f) or []):
                    out.append(f"{ref(role)}: wildcard in {f}")
            if "secrets" in (r.get("resources") or []):
                out.append(f"{ref(role)}: grants access to secrets")
            if set(r.get("verbs") or []) - {"get", "list", "watch"}:
                out.append(f"{ref(role)}: grants {sorted(set(r['verbs']) - {'get', 'list', 'watch'})}")
    bound = set()
    for rb in m.by_kind.get("RoleBinding", []):
        rr = rb.get("roleRef") or {}
        ns = rb["metadata"].get("namespace")
        if rr.get("kind") != "Role" or not m.get("Role", rr.get("name"), ns):
            out.append(f"{ref(rb)}: roleRef {rr.get('kind')}/{rr.get('name')} is not a Role in the manifests")
        for s in rb.get("subjects") or []:
            if s.get("kind") == "ServiceAccount":
                bound.add((s.get("namespace") or ns, s.get("name")))
    for p in m.pods:
        sa = p.spec.get("serviceAccountName")
        sad = m.get("ServiceAccount", sa, p.ns) or {}
        mounts = p.spec.get("automountServiceAccountToken", sad.get("automountServiceAccountToken", True))
        if mounts and (p.ns, sa) not in bound:
            out.append(f"{p.ref}: mounts an API token but ServiceAccount {sa} is bound to no Role")
    return out


RULES = [
    ("images", rule_images),
    ("containers", rule_containers),
    ("pods", rule_pods),
    ("dra", rule_dra),
    ("gang", rule_gang),
    ("netpol", rule_netpol),
    ("config", rule_config),
    ("kueue", rule_kueue),
    ("namespaces", rule_namespaces),
    ("rbac", rule_rbac),
]


def run_rules(m, only=None):
    """{rule: [violations]} for every rule (or those named in `only`)."""
    res = {}
    for name, fn in RULES:
        if only and name not in only:
            continue
        try:
            res[name] = fn(m)
        except Exception as e:  # a crash in a rule is a failure of that rule, not of the run
            res[name] = [f"rule crashed: {type(e).__name__}: {e}"]
    return res


def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def load_kueue_config(path):
    if not path:
        return None
    with open(path) as f:
        return yaml.safe_load(f)


def canonical(docs):
    """{(kind, namespace, name): doc} with generator hash suffixes (kvf-config-<hash>) masked,
    so renders by different kustomize versions (different hash functions) compare equal."""
    text = json.dumps(docs, sort_keys=True)
    for d in docs:
        if d.get("kind") in ("ConfigMap", "Secret"):
            name = d["metadata"].get("name", "")
            mo = re.fullmatch(r"(.+)-([a-z0-9]{10})", name)
            if mo:
                text = re.sub(r"\b" + re.escape(name) + r"\b", mo.group(1) + "-HASH", text)
    def norm(node):
        # Empty maps are unset fields, and strategic merge in kustomize v2 and v5 orders
        # merged entries of named lists (volumes, env, ports) differently.
        if isinstance(node, dict):
            return {k: norm(v) for k, v in node.items() if v != {}}
        if isinstance(node, list):
            items = [norm(v) for v in node]
            if items and all(isinstance(v, dict) and "name" in v for v in items):
                items.sort(key=lambda v: json.dumps(v, sort_keys=True))
            return items
        return node
    return {(d.get("kind"), d["metadata"].get("namespace"), d["metadata"].get("name")): norm(d)
            for d in json.loads(text)}


def same_objects(a, b):
    """Differences between two renders, one line each; empty if they hold the same objects."""
    ca, cb = canonical(load_docs(a)), canonical(load_docs(b))
    out = [f"only in {a}: {k}" for k in sorted(set(ca) - set(cb), key=str)]
    out += [f"only in {b}: {k}" for k in sorted(set(cb) - set(ca), key=str)]
    out += [f"differs: {k}" for k in sorted(set(ca) & set(cb), key=str) if ca[k] != cb[k]]
    return out


def main(argv):
    if argv[:1] == ["--same-objects"] and len(argv) == 3:
        diff = same_objects(argv[1], argv[2])
        print("; ".join(diff))
        return 1 if diff else 0
    schemas, kueue, targets = None, None, []
    it = iter(argv)
    for a in it:
        if a == "--schemas":
            schemas = next(it)
        elif a == "--kueue-config":
            kueue = next(it)
        elif "=" in a:
            targets.append(a.split("=", 1))
        else:
            print(f"usage: {os.path.basename(sys.argv[0])} [--schemas DIR] [--kueue-config FILE] NAME=FILE...",
                  file=sys.stderr)
            return 2
    get = load_schemas(schemas) if schemas else None
    failed = 0
    kcfg = load_kueue_config(kueue)
    for name, path in targets:
        m = Manifests(load_docs(path), copy.deepcopy(kcfg))
        if get is None:
            print(f"SKIP: k8s {name} schema: no schema bundle (set KVF_K8S_SCHEMAS)")
        else:
            errs = check_schema(m, get)
            if errs:
                failed += 1
                print(f"FAIL: k8s {name} schema: {len(errs)} errors: " + "; ".join(errs[:8]))
            else:
                print(f"PASS: k8s {name} schema ({len(m.docs)} documents)")
        for rule, errs in run_rules(m).items():
            if errs:
                failed += 1
                print(f"FAIL: k8s {name} policy {rule}: " + "; ".join(errs[:6])
                      + (f"; ... {len(errs) - 6} more" if len(errs) > 6 else ""))
            else:
                print(f"PASS: k8s {name} policy {rule}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
