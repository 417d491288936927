#!/usr/bin/env bash
# Builds the real kube-apiserver and etcd that the controller's integration tests and benchmark run
# against (no kubelet, no controller-manager: the approach of controller-runtime's envtest), and caches
# them outside the repo. Idempotent: a second run finds the binaries and only prints their paths.
#
#   eval "$(bash scripts/envtest.sh)"   # exports III_KUBE_APISERVER and III_ETCD
#
# Both are built from Go modules with the machine's Go, through throwaway wrapper modules:
# - kube-apiserver: k8s.io/kubernetes is not meant to be required as a module (its go.mod replaces every
#   k8s.io/* staging module with ./staging/...), so the wrapper replaces each of those with its published
#   v0.<minor>.<patch> twin. ~3.5 min and ~2.4 GB peak on 2 cores; a ~120 MB binary.
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
  local work; work=$(mktemp -d "$cache/apiserver-build.XXXXXX")
  log "building kube-apiserver v$k8s_version in $work (takes minutes)"
  local minor="${k8s_version#*.}"; minor="${minor%%.*}"
  local staging_version="v0.${k8s_version#*.}"
  (
    cd "$work"
    local kube_gomod
    kube_gomod=$(go mod download -json "k8s.io/kubernetes@v$k8s_version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
    [ -f "$kube_gomod" ] || { log "could not download k8s.io/kubernetes@v$k8s_version"; exit 1; }
    {
      printf 'module iii.local/envtest/kube-apiserver\n\ngo 1.24\n\nrequire k8s.io/kubernetes v%s\n\n' "$k8s_version"
      # Every `k8s.io/X => ./staging/src/k8s.io/X` of kubernetes' go.mod becomes `k8s.io/X => k8s.io/X v0.N.P`.
      grep -oE 'k8s\.io/[A-Za-z0-9._/-]+ => \./staging/src/k8s\.io/[A-Za-z0-9._/-]+' "$kube_gomod" |
        awk -v v="$staging_version" '{ print "replace " $1 " => " $1 " " v }' | sort -u
    } >go.mod
    go build -trimpath -o "$apiserver.tmp" \
      -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=v$k8s_version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor" \
      k8s.io/kubernetes/cmd/kube-apiserver
  )
  mv "$apiserver.tmp" "$apiserver"
  rm -rf "$work"
}

start=$SECONDS
[ -x "$etcd" ] || build_etcd
[ -x "$apiserver" ] || build_apiserver
(( SECONDS - start < 2 )) || log "built in $((SECONDS - start)) s"

echo "export III_KUBE_APISERVER=$apiserver"
echo "export III_ETCD=$etcd"
