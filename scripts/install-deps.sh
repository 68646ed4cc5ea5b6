#!/usr/bin/env bash
# Installs every Debian 12 package that kvfabric's build, tests, benchmarks
# and demo need. Idempotent and quiet when everything is already there.
#   scripts/install-deps.sh          install what is missing
#   scripts/install-deps.sh --check  exit 0 if nothing is missing, 1 otherwise
#   scripts/install-deps.sh --list   print the package list
set -euo pipefail

PACKAGES=(
  # toolchain
  build-essential pkg-config clang libclang-rt-14-dev llvm
  # libraries
  libconfig-dev libcurl4-openssl-dev libcmocka-dev libjansson-dev libxxhash-dev xxhash
  libpcre2-dev libutf8proc-dev libssl-dev libnuma-dev
  # kernel bypass and RDMA
  libibverbs-dev librdmacm-dev rdma-core ibverbs-utils libfabric-dev libfabric-bin
  dpdk dpdk-dev libdpdk-dev
  # test and demo tooling
  iproute2 socat curl python3 python3-yaml python3-jsonschema python3-jinja2 procps psmisc
  # peers for benchmarks
  nginx redis-server wrk iperf3 hyperfine
)
# kubectl (for `kubectl kustomize` in make k8s-check): Debian's
# kubernetes-client unless some kubectl is already installed.
command -v kubectl >/dev/null 2>&1 || PACKAGES+=(kubernetes-client)
# npm fetches the real tokenizer files at test time.
command -v npm >/dev/null 2>&1 || PACKAGES+=(npm)

missing() {
  local p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || echo "$p"
  done
}

case "${1:-}" in
  --list) printf '%s\n' "${PACKAGES[@]}"; exit 0 ;;
  --check) [ -z "$(missing)" ]; exit $? ;;
  "") ;;
  *) echo "usage: $0 [--check|--list]" >&2; exit 2 ;;
esac

todo=$(missing | tr '\n' ' ')
[ -z "$todo" ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  SUDO=
elif command -v sudo >/dev/null 2>&1; then
  SUDO=sudo
else
  echo "install-deps: missing packages: $todo" >&2
  echo "install-deps: run as root: apt-get install -y $todo" >&2
  exit 1
fi

echo "install-deps: installing: $todo" >&2
export DEBIAN_FRONTEND=noninteractive
# Refresh the package lists only when an install fails on stale ones.
# shellcheck disable=SC2086
if ! $SUDO apt-get install -y -qq --no-install-recommends $todo >/tmp/kvf-install-deps.log 2>&1; then
  $SUDO apt-get update -qq >>/tmp/kvf-install-deps.log 2>&1 || true
  if ! $SUDO apt-get install -y -qq --no-install-recommends $todo >>/tmp/kvf-install-deps.log 2>&1; then
    echo "install-deps: apt-get failed; see /tmp/kvf-install-deps.log" >&2
    tail -n 20 /tmp/kvf-install-deps.log >&2
    exit 1
  fi
fi
# Packaged services must not hold the loopback ports the tests and benches use.
for svc in nginx redis-server; do
  $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || $SUDO service "$svc" stop >/dev/null 2>&1 || true
done
echo "install-deps: done" >&2
