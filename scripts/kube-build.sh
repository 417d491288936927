#!/usr/bin/env bash
# Builds Kubernetes commands from the published Go modules into a directory:
#
#   bash scripts/kube-build.sh VERSION OUT_DIR kubelet kube-proxy ...   # OUT_DIR/kubelet, OUT_DIR/kube-proxy, ...
#
# k8s.io/kubernetes is not meant to be required as a module (its go.mod replaces every k8s.io/* staging
# module with ./staging/..., absent from the published module), so a throwaway wrapper module replaces each
# of those with its published v0.<minor>.<patch> twin. All commands build in one `go build` so the shared
# packages compile once; CGO is off, so the binaries are static and share Go's build cache with every other
# build here (scripts/envtest.sh's kube-apiserver). Used by scripts/envtest.sh and scripts/cluster.sh.
set -euo pipefail

version=${1:?usage: kube-build.sh VERSION OUT_DIR COMMAND...}   # e.g. 1.37.2
out=${2:?usage: kube-build.sh VERSION OUT_DIR COMMAND...}
shift 2
[ $# -gt 0 ] || { echo "kube-build: name at least one command" >&2; exit 2; }
command -v go >/dev/null || { echo "kube-build: go is not installed; cannot build $*" >&2; exit 1; }

minor=${version#*.}; minor=${minor%%.*}
mkdir -p "$out"
work=$(mktemp -d "$out/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
export GOFLAGS=-mod=mod CGO_ENABLED=0
cd "$work"
kube_gomod=$(go mod download -json "k8s.io/kubernetes@v$version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
[ -f "$kube_gomod" ] || { echo "kube-build: could not download k8s.io/kubernetes@v$version" >&2; exit 1; }
{
  printf 'module iii.local/kube-build\n\ngo 1.24\n\nrequire k8s.io/kubernetes v%s\n\n' "$version"
  # Every `k8s.io/X => ./staging/src/k8s.io/X` of kubernetes' go.mod becomes `k8s.io/X => k8s.io/X v0.N.P`.
  grep -oE 'k8s\.io/[A-Za-z0-9._/-]+ => \./staging/src/k8s\.io/[A-Za-z0-9._/-]+' "$kube_gomod" |
    awk -v v="v0.${version#*.}" '{ print "replace " $1 " => " $1 " " v }' | sort -u
} >go.mod
packages=(); for c in "$@"; do packages+=("k8s.io/kubernetes/cmd/$c"); done
mkdir bin
go build -trimpath -o bin/ \
  -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=v$version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor" \
  "${packages[@]}"
# Moved into place only once every command has built, so a half-finished build is never mistaken for a cache.
for c in "$@"; do mv "bin/$c" "$out/$c"; done
