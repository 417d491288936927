#!/usr/bin/env bash
# Builds the real kube-apiserver and etcd that the controller's integration tests and benchmark run
# against (no kubelet, no controller-manager: the approach of controller-runtime's envtest), and caches
# them outside the repo. Idempotent: a second run finds the binaries and only prints their paths.
#
#   eval "$(bash scripts/envtest.sh)"   # exports III_KUBE_APISERVER and III_ETCD
#
# Both are built from Go modules with the machine's Go, through throwaway wrapper modules:
# - kube-apiserver: by scripts/kube-build.sh (a wrapper module around k8s.io/kubernetes). ~3.5 min and
#   ~2.4 GB peak on 2 cores; a ~120 MB binary.
# - etcd: go.etcd.io/etcd/server/v3 has replace directives, so `go install` refuses it; requiring the
#   server, api, client/pkg, client and pkg modules at one version builds it in ~20 s.
# Settings: III_CACHE (default ~/.cache/iii), III_K8S_VERSION (default 1.37.2), III_ETCD_VERSION (3.7.3).
set -euo pipefail

k8s_version="${III_K8S_VERSION:-1.37.2}"
etcd_version="${III_ETCD_VERSION:-3.7.3}"
cache="${III_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/iii}/envtest"
bin="$cache/bin"
apiserver="$bin/kube-apiserver-v$k8s_version"
etcd="$bin/etcd-v$etcd_version"

log() { echo "envtest: $*" >&2; }

command -v go >/dev/null || { log "go is not installed; cannot build kube-apiserver/etcd"; exit 1; }
mkdir -p "$bin"

# One builder at a time (concurrent CI steps, several shells); the loser waits and then finds the binary.
exec 9>"$cache/.lock"
flock 9

export GOFLAGS=-mod=mod
export CGO_ENABLED=0

build_etcd() {
  local work; work=$(mktemp -d "$cache/etcd-build.XXXXXX")
  log "building etcd v$etcd_version in $work"
  (
    cd "$work"
    cat >go.mod <<EOF
module iii.local/envtest/etcd

go 1.24

require (
	go.etcd.io/etcd/api/v3 v$etcd_version
	go.etcd.io/etcd/client/pkg/v3 v$etcd_version
	go.etcd.io/etcd/client/v3 v$etcd_version
	go.etcd.io/etcd/pkg/v3 v$etcd_version
	go.etcd.io/etcd/server/v3 v$etcd_version
)
EOF
    go build -trimpath -o "$etcd.tmp" go.etcd.io/etcd/server/v3
  )
  mv "$etcd.tmp" "$etcd"
  rm -rf "$work"
}

build_apiserver() {
  log "building kube-apiserver v$k8s_version (takes minutes)"
  local out; out=$(mktemp -d "$cache/apiserver-build.XXXXXX")
  bash "$(dirname "$0")/kube-build.sh" "$k8s_version" "$out" kube-apiserver
  mv "$out/kube-apiserver" "$apiserver"
  rm -rf "$out"
}

start=$SECONDS
[ -x "$etcd" ] || build_etcd
[ -x "$apiserver" ] || build_apiserver
(( SECONDS - start < 2 )) || log "built in $((SECONDS - start)) s"

echo "export III_KUBE_APISERVER=$apiserver"
echo "export III_ETCD=$etcd"
