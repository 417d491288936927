#!/usr/bin/env bash
# Installs everything iii needs on a fresh machine, builds it, and prints the one line that puts
# Node 24 first on PATH, so callers write:
#
#   eval "$(bash scripts/install.sh)"
#
# Everything goes to stderr except that line. Idempotent: a second run only re-checks and rebuilds.
# Steps: Node 24 (scripts/ensure-node.sh), Debian packages for eBPF and load tests, npm ci, the
# TypeScript build, the BPF objects and Rust addon, the kube-apiserver + etcd test binaries.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "install: $*" >&2; }

node_bin=$(bash scripts/ensure-node.sh)
export PATH="$node_bin:$PATH"
log "node $(node --version) from $node_bin"

# clang/libbpf/bpftool build the eBPF programs; wrk drives the agent benchmark. Root only: without it
# the eBPF parts are skipped and the agent falls back to proxy mode.
apt_packages=(clang llvm libbpf-dev bpftool wrk)
missing=()
for p in "${apt_packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "apt-get install ${missing[*]}"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } >&2
  else
    log "missing ${missing[*]} (not root or no apt-get): the eBPF capture will not be built"
  fi
fi

log "npm ci"
npm ci --no-audit --no-fund --loglevel=error >&2
log "npm run build"
npm run build >&2

# The controller's integration tests run a real kube-apiserver and etcd, built once from Go modules
# and cached outside the repo (several minutes the first time).
log "kube-apiserver + etcd for the controller tests"
bash scripts/envtest.sh >&2

echo "export PATH=\"$node_bin:\$PATH\""
