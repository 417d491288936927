#!/usr/bin/env bash
# Installs iii into the cluster of the current kubectl context, in one command:
#
#   bash scripts/kube-install.sh                                  images ghcr.io/iii-io/iii and iii-agent
#   bash scripts/kube-install.sh --images registry.example/team   your registry (npm run images, then podman push)
#   bash scripts/kube-install.sh --kustomization DIR              DIR instead of manifests/: an overlay of yours
#                                                                 (or manifests/node-agent, e2e/overlay)
#
# Checks the cluster (Kubernetes >= 1.29: the agent sidecar is a native sidecar), applies the kustomization
# with the images' names and the packages' version as their tag, gives obs the TLS certificate the API
# server's aggregator needs (a self-signed one for iii-obs-metrics.iii-system.svc, made only when the Secret
# iii-obs-tls does not exist: bring your own from a CA for production, see packages/obs/README.md "TLS"),
# and waits until the controller, obs and the External Metrics APIService are ready.
# Needs kubectl and openssl.
set -euo pipefail
cd "$(dirname "$0")/.."

images=ghcr.io/iii-io kustomization=manifests timeout=${III_INSTALL_TIMEOUT:-300s}
while [ $# -gt 0 ]; do
  case $1 in
    --images) images=${2:?--images REPOSITORY}; shift ;;
    --kustomization) kustomization=${2:?--kustomization DIR}; shift ;;
    *) echo "usage: kube-install.sh [--images REPOSITORY] [--kustomization DIR]" >&2; exit 2 ;;
  esac
  shift
done
log() { echo "kube-install: $*" >&2; }
for tool in kubectl openssl; do command -v "$tool" >/dev/null || { log "$tool is not installed"; exit 1; }; done

# The API server's own version ("29+" on some clouds); empty when it cannot be reached.
minor=$(kubectl get --raw /version 2>/dev/null | sed -n 's/.*"minor": *"\([0-9]*\).*/\1/p' | head -n1) || true
[ -n "$minor" ] || { log "cannot reach the API server of the current kubectl context (${KUBECONFIG:-~/.kube/config}: $(kubectl config current-context 2>&1))"; exit 1; }
(( minor >= 29 )) || { log "Kubernetes 1.$minor: iii needs >= 1.29 (native sidecars)"; exit 1; }

version=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' packages/cli/package.json | head -n1)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# An overlay of the chosen kustomization that only names the images (kustomize wants a relative path).
cat >"$work/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $(realpath --relative-to="$work" "$kustomization")
images:
  - {name: ghcr.io/iii-io/iii, newName: $images/iii, newTag: "$version"}
  - {name: ghcr.io/iii-io/iii-agent, newName: $images/iii-agent, newTag: "$version"}
EOF
log "applying $kustomization with $images/iii:$version and $images/iii-agent:$version"
# Server-side: the CRD is larger than client-side apply's last-applied annotation allows.
kubectl apply --server-side --force-conflicts --field-manager iii-install -k "$work" >&2

if ! kubectl -n iii-system get secret iii-obs-tls >/dev/null 2>&1; then
  log "creating the Secret iii-obs-tls (self-signed, for iii-obs-metrics.iii-system.svc)"
  openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj /CN=iii-obs-metrics.iii-system.svc \
    -addext subjectAltName=DNS:iii-obs-metrics.iii-system.svc,DNS:iii-obs-metrics.iii-system.svc.cluster.local \
    -keyout "$work/tls.key" -out "$work/tls.crt" 2>/dev/null
  kubectl -n iii-system create secret tls iii-obs-tls --cert "$work/tls.crt" --key "$work/tls.key" >&2
fi

log "waiting for the controller, obs and the External Metrics API (up to $timeout each)"
kubectl -n iii-system rollout status deployment/iii-controller --timeout "$timeout" >&2
kubectl -n iii-system rollout status statefulset/iii-obs --timeout "$timeout" >&2
kubectl wait --for condition=Available apiservice/v1beta1.external.metrics.k8s.io --timeout "$timeout" >&2
if kubectl -n iii-node-agent get daemonset/iii-agent >/dev/null 2>&1; then
  kubectl -n iii-node-agent rollout status daemonset/iii-agent --timeout "$timeout" >&2
fi
log "iii $version is installed: kubectl apply -f manifests/examples/user-service.yaml, then kubectl get svccomp"
