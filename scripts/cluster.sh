#!/usr/bin/env bash
# A real one-node Kubernetes cluster on this machine, for iii's end-to-end test (e2e/) and for trying the
# manifests: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd (CRI, runc,
# cgroupfs), kubelet, kube-proxy (iptables), CNI bridge networking and CoreDNS. Root only; no systemd,
# no Docker, no registry.
#
#   bash scripts/cluster.sh build              build what is missing (first time ~16 min on 2 cores; cached)
#   bash scripts/cluster.sh start              start it (builds first if needed); ~10 s with binaries cached
#   bash scripts/cluster.sh stop               stop every process it started, remove its network setup and mounts
#   bash scripts/cluster.sh reset              stop, then delete its state (etcd, kubelet, containerd): the next start is a new cluster
#   bash scripts/cluster.sh status             processes with their memory, the node, every pod
#   bash scripts/cluster.sh import ARCHIVE...  load image archives (docker-archive or oci-archive) into the node's containerd
#   bash scripts/cluster.sh kubectl ARGS...    kubectl with the admin kubeconfig
#   eval "$(bash scripts/cluster.sh env)"      KUBECONFIG and kubectl on PATH for this shell
#
# What it builds, from Go modules with the machine's Go, cached outside the repo in ${III_CACHE:-~/.cache/iii}:
# kube-apiserver and etcd (scripts/envtest.sh, shared with the controller tests), kubelet,
# kube-controller-manager, kube-scheduler, kube-proxy and kubectl (scripts/kube-build.sh), CoreDNS, and a
# static C "pause" for pod sandboxes (no registry to pull one from).
# State: /var/lib/iii-cluster (pki, kubeconfigs, etcd, containerd and kubelet roots, logs, hostPath volumes);
# /run/iii-cluster (sockets, PID files). Addresses exist only inside this machine:
#   10.245.255.1/32  node IP, on a port-less bridge iii0 (the kubelet refuses a loopback node IP; eth0 is not used)
#   10.244.0.0/24    pods, on the CNI bridge cni0 (gateway 10.244.0.1)
#   10.96.0.0/16     Services (kube-proxy DNATs them; the API server is 10.96.0.1, CoreDNS 10.96.0.10)
# Pods may reach pods and this machine only: the iptables chain IIICLUSTER-EGRESS drops forwarded pod traffic
# to anything else.
#
# Workarounds this kind of VM needs, each explained where it is applied: failCgroupV1: false (cgroups are a
# v1/v2 hybrid), containerd's restrict_oom_score_adj (root lacks CAP_SYS_RESOURCE), the node IP on a port-less
# bridge (no dummy links in this kernel), config files rewritten only when they change (kube-proxy exits
# otherwise), images loaded with `ctr images import` (no registry).
set -euo pipefail   # with pipefail, never end a pipe in `grep -q` (it exits early, the writer gets SIGPIPE)
cd "$(dirname "$0")/.."

k8s_version=${III_K8S_VERSION:-1.37.2}
coredns_version=v1.15.0
cache=${III_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/iii}/cluster
bin=$cache/bin-v$k8s_version
state=/var/lib/iii-cluster
run=/run/iii-cluster
pki=$state/pki
logs=$state/log
node_name=$(hostname)
node_ip=10.245.255.1
pod_cidr=10.244.0.0/24
service_cidr=10.96.0.0/16
dns_ip=10.96.0.10
containerd_socket=$run/containerd/containerd.sock
pause_image=localhost/iii-cluster-pause:1
coredns_image=localhost/iii-cluster-coredns:${coredns_version#v}
components=(kubelet kube-controller-manager kube-scheduler kube-proxy kubectl)

log() { echo "cluster: $*" >&2; }
kubectl() { "$bin/kubectl" --kubeconfig "$state/admin.kubeconfig" "$@"; }
ctr_k8s() { ctr -a "$containerd_socket" -n k8s.io "$@"; }
# put FILE < content: writes FILE only when the content differs. kube-proxy exits ("content of the proxy
# server's configuration file was updated") when its config file is rewritten, even with identical content.
put() {
  local tmp; tmp=$(mktemp)
  cat >"$tmp"
  if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else chmod 600 "$tmp"; mv "$tmp" "$1"; fi
}

# ---------------------------------------------------------------- build

ensure_packages() {  # containerd 1.6 + runc (CRI runtime), conntrack (kube-proxy), CNI plugins, gcc (pause), openssl
  local need=()
  command -v containerd >/dev/null || need+=(containerd)
  command -v runc >/dev/null || need+=(runc)
  command -v conntrack >/dev/null || need+=(conntrack)
  command -v iptables >/dev/null || need+=(iptables)
  [ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
  command -v gcc >/dev/null || need+=(gcc libc6-dev)
  command -v openssl >/dev/null || need+=(openssl)
  [ ${#need[@]} -eq 0 ] && return 0
  log "apt-get install ${need[*]}"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"; } >&2
}

build_pause() {  # the pod sandbox image: sleeps, reaps zombies, exits on SIGINT/SIGTERM
  local dir=$cache/pause
  [ -x "$dir/rootfs/pause" ] && return 0
  mkdir -p "$dir/rootfs"
  cat >"$dir/pause.c" <<'EOF'
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
static void stop(int s) { (void)s; _exit(0); }
static void reap(int s) { (void)s; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
  struct sigaction term = {0}, child = {0};
  term.sa_handler = stop; sigaction(SIGINT, &term, 0); sigaction(SIGTERM, &term, 0);
  child.sa_handler = reap; child.sa_flags = SA_NOCLDSTOP; sigaction(SIGCHLD, &child, 0);
  for (;;) pause();
}
EOF
  gcc -static -Os -s -o "$dir/rootfs/pause" "$dir/pause.c"
}

build_coredns() {  # cluster DNS: pods find Services by name, as on any real cluster
  [ -x "$cache/coredns-$coredns_version" ] && return 0
  log "building CoreDNS $coredns_version"
  # Only the plugins the Corefile in start_dns uses, built the way CoreDNS documents for a custom plugin
  # set: a main package importing them, with the directives in CoreDNS' own order. All of CoreDNS
  # compiles every cloud SDK it can serve (7 min here).
  local start=$SECONDS work; work=$(mktemp -d "$cache/.coredns.XXXXXX")
  printf 'module iii.local/cluster/coredns\n\ngo 1.24\n\nrequire github.com/coredns/coredns %s\n' "$coredns_version" >"$work/go.mod"
  cat >"$work/main.go" <<'EOF'
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/ready"
)

func init() {
	dnsserver.Directives = []string{"ready", "health", "errors", "loadbalance", "cache", "kubernetes", "loop"}
}

func main() { coremain.Run() }
EOF
  (cd "$work" && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o coredns .)
  mv "$work/coredns" "$cache/coredns-$coredns_version"; rm -rf "$work"
  log "built CoreDNS in $((SECONDS - start)) s"
}

build() {
  mkdir -p "$cache"
  # One builder at a time (a CI step and a shell, say); the second finds the binaries built.
  exec 8>"$cache/.lock"; flock 8
  eval "$(bash scripts/envtest.sh)"   # kube-apiserver and etcd: III_KUBE_APISERVER, III_ETCD
  local missing=()
  for c in "${components[@]}"; do [ -x "$bin/$c" ] || missing+=("$c"); done
  if [ ${#missing[@]} -gt 0 ]; then
    log "building ${missing[*]} v$k8s_version (the first time takes ~16 min on 2 cores)"
    local start=$SECONDS
    bash scripts/kube-build.sh "$k8s_version" "$bin" "${missing[@]}"
    log "built ${missing[*]} in $((SECONDS - start)) s"
  fi
  build_coredns
  build_pause
  exec 8>&-
}

# ---------------------------------------------------------------- images

# import_rootfs NAME DIR ENTRYPOINT-JSON: a one-layer image of DIR's files, loaded into containerd. ctr
# reads an OCI layout tar; this writes one by hand (config, manifest, index) so no image tool is needed.
import_rootfs() {
  local ref=$1 dir=$2 entrypoint=$3 work; work=$(mktemp -d)
  mkdir -p "$work/blobs/sha256"
  tar -C "$dir" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -cf "$work/layer.tar" .
  local layer size config config_size manifest manifest_size
  layer=$(sha256sum "$work/layer.tar" | cut -d' ' -f1); size=$(stat -c %s "$work/layer.tar")
  mv "$work/layer.tar" "$work/blobs/sha256/$layer"
  printf '{"architecture":"amd64","os":"linux","config":{"Entrypoint":%s},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$entrypoint" "$layer" >"$work/config.json"
  config=$(sha256sum "$work/config.json" | cut -d' ' -f1); config_size=$(stat -c %s "$work/config.json")
  mv "$work/config.json" "$work/blobs/sha256/$config"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
    "$config" "$config_size" "$layer" "$size" >"$work/manifest.json"
  manifest=$(sha256sum "$work/manifest.json" | cut -d' ' -f1); manifest_size=$(stat -c %s "$work/manifest.json")
  mv "$work/manifest.json" "$work/blobs/sha256/$manifest"
  printf '{"imageLayoutVersion":"1.0.0"}' >"$work/oci-layout"
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"io.containerd.image.name":"%s"}}]}' \
    "$manifest" "$manifest_size" "$ref" >"$work/index.json"
  tar -C "$work" -cf "$work.tar" oci-layout index.json blobs
  ctr_k8s images import "$work.tar" >/dev/null
  rm -rf "$work" "$work.tar"
  log "imported $ref"
}

import() {
  [ $# -gt 0 ] || { log "usage: cluster.sh import ARCHIVE..."; exit 2; }
  running containerd || { log "the cluster is not running (bash scripts/cluster.sh start)"; exit 1; }
  for archive in "$@"; do
    # --all-platforms: the archive holds one; without it ctr looks for this platform's and may skip it.
    ctr_k8s images import --all-platforms "$archive" >&2
  done
}

# ---------------------------------------------------------------- pki

pki_init() {
  [ -f "$pki/done" ] && return 0
  mkdir -p "$pki"
  (
    cd "$pki"
    ca() { openssl req -x509 -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.crt" -days 3650 -subj "/CN=$1" 2>/dev/null; }
    cert() {  # NAME CA CN [O] [SANs]: a client certificate, or a server one when SANs are given
      local name=$1 ca=$2 cn=$3 org=${4:-} san=${5:-}
      openssl req -newkey rsa:2048 -nodes -keyout "$name.key" -out "$name.csr" -subj "/CN=$cn${org:+/O=$org}" 2>/dev/null
      if [ -n "$san" ]; then printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$san" >"$name.ext"
      else printf 'extendedKeyUsage=clientAuth\n' >"$name.ext"; fi
      openssl x509 -req -in "$name.csr" -CA "$ca.crt" -CAkey "$ca.key" -CAcreateserial -out "$name.crt" -days 3650 -extfile "$name.ext" 2>/dev/null
    }
    ca ca
    cert apiserver ca kube-apiserver "" "IP:127.0.0.1,IP:10.96.0.1,IP:$node_ip,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    cert admin ca admin system:masters                     # kubectl, and kube-apiserver -> kubelet (logs, exec)
    cert kubelet ca "system:node:$node_name" system:nodes  # the Node authorizer and NodeRestriction know it by this name
    cert controller-manager ca system:kube-controller-manager
    cert scheduler ca system:kube-scheduler
    cert proxy ca system:kube-proxy
    # The aggregator (APIServices such as obs' external.metrics.k8s.io) authenticates to extension API
    # servers with a front-proxy client certificate of its own CA, as kubeadm sets it up.
    ca front-proxy-ca
    cert front-proxy-client front-proxy-ca front-proxy-client
    openssl genrsa -out sa.key 2048 2>/dev/null; openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    rm -f ./*.csr ./*.ext
    touch done
  )
}

kubeconfig() {  # NAME: $state/NAME.kubeconfig with the client certificate $pki/NAME.crt
  put "$state/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: iii, cluster: {server: "https://$node_ip:6443", certificate-authority-data: $(base64 -w0 "$pki/ca.crt")}}]
users: [{name: $1, user: {client-certificate-data: $(base64 -w0 "$pki/$1.crt"), client-key-data: $(base64 -w0 "$pki/$1.key")}}]
contexts: [{name: iii, context: {cluster: iii, user: $1}}]
current-context: iii
EOF
}

# ---------------------------------------------------------------- host network

network_up() {
  # The node IP on a port-less bridge: the kubelet rejects a loopback node IP, and this kernel has no
  # "dummy" link type; a bridge with no ports behaves alike. A private /32 that exists only here.
  ip link show iii0 >/dev/null 2>&1 || ip link add iii0 type bridge
  ip link set iii0 up
  ip -o addr show dev iii0 | grep "$node_ip/" >/dev/null || ip addr add "$node_ip/32" dev iii0
  # Service addresses kube-proxy does not DNAT go into iii0, where nothing answers, never out of eth0; the
  # host reaches ClusterIPs with source $node_ip, to which pods can answer.
  ip route show "$service_cidr" | grep . >/dev/null || ip route add "$service_cidr" dev iii0
  # Forwarding, and bridge netfilter so kube-proxy's DNAT applies to pod -> Service -> pod on one bridge.
  modprobe br_netfilter 2>/dev/null || true
  sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1
  iptables -N IIICLUSTER-EGRESS 2>/dev/null || true
  iptables -F IIICLUSTER-EGRESS
  iptables -A IIICLUSTER-EGRESS -s "$pod_cidr" -d "$pod_cidr" -j RETURN
  iptables -A IIICLUSTER-EGRESS -s "$pod_cidr" -j DROP
  iptables -C FORWARD -j IIICLUSTER-EGRESS 2>/dev/null || iptables -I FORWARD 1 -j IIICLUSTER-EGRESS
  # CNI: bridge + host-local + loopback + portmap (Debian's containernetworking-plugins). No masquerading:
  # pods have nothing to reach outside this machine.
  mkdir -p /etc/cni/net.d
  put /etc/cni/net.d/10-iii-cluster.conflist <<EOF
{ "cniVersion": "1.0.0", "name": "iii-cluster", "plugins": [
  { "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
    "ipam": { "type": "host-local", "ranges": [[{ "subnet": "$pod_cidr", "gateway": "10.244.0.1" }]],
              "routes": [{ "dst": "0.0.0.0/0" }] } },
  { "type": "portmap", "capabilities": { "portMappings": true } } ] }
EOF
  put /etc/cni/net.d/99-iii-cluster-loopback.conf <<'EOF'
{ "cniVersion": "1.0.0", "name": "lo", "type": "loopback" }
EOF
}

network_down() {
  [ -x "$bin/kube-proxy" ] && "$bin/kube-proxy" --cleanup >/dev/null 2>&1 || true   # its KUBE-* chains stay otherwise
  # The kubelet's own chains (KUBE-FIREWALL in INPUT and OUTPUT, canaries, a hint), in both families.
  for tool in iptables ip6tables; do
    for chain in INPUT OUTPUT; do "$tool" -D "$chain" -j KUBE-FIREWALL 2>/dev/null || true; done
    for table in filter nat mangle; do
      for chain in KUBE-FIREWALL KUBE-KUBELET-CANARY KUBE-IPTABLES-HINT; do
        "$tool" -t "$table" -F "$chain" 2>/dev/null && "$tool" -t "$table" -X "$chain" 2>/dev/null || true
      done
    done
  done
  iptables -D FORWARD -j IIICLUSTER-EGRESS 2>/dev/null || true
  iptables -F IIICLUSTER-EGRESS 2>/dev/null || true
  iptables -X IIICLUSTER-EGRESS 2>/dev/null || true
  ip link del cni0 2>/dev/null || true
  ip link del iii0 2>/dev/null || true   # takes its address and the Service route with it
  rm -f /etc/cni/net.d/10-iii-cluster.conflist /etc/cni/net.d/99-iii-cluster-loopback.conf
  rm -rf /var/lib/cni/networks/iii-cluster   # host-local's leases of pods that no longer exist
}

# ---------------------------------------------------------------- processes

running() {  # the PID file names a live process (not a zombie, whose cmdline is empty)
  local pid; pid=$(cat "$run/$1.pid" 2>/dev/null) || return 1
  [ -r "/proc/$pid/cmdline" ] && grep -qa . "/proc/$pid/cmdline" 2>/dev/null
}
spawn() {  # NAME COMMAND...: in a session of its own (it outlives this shell), its PID recorded for stop
  local name=$1; shift
  running "$name" && return 0
  setsid "$@" >"$logs/$name.log" 2>&1 </dev/null &
  echo $! >"$run/$name.pid"
  log "started $name (pid $!, log $logs/$name.log)"
}
wait_for() {  # WHAT SECONDS COMMAND...
  local what=$1 seconds=$2; shift 2
  for _ in $(seq "$seconds"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  log "timed out after $seconds s waiting for $what (logs in $logs)"; return 1
}
stop_one() {
  local name=$1 pid
  running "$name" || { rm -f "$run/$name.pid"; return 0; }
  pid=$(cat "$run/$name.pid"); kill "$pid" 2>/dev/null || true
  for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  rm -f "$run/$name.pid"
  log "stopped $name"
}

start_control_plane() {
  spawn etcd "$III_ETCD" --data-dir "$state/etcd" --listen-client-urls http://127.0.0.1:2379 \
    --advertise-client-urls http://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:2380 \
    --initial-advertise-peer-urls http://127.0.0.1:2380 --initial-cluster default=http://127.0.0.1:2380 \
    --listen-metrics-urls http://127.0.0.1:2381 --log-level warn
  wait_for etcd 30 curl -fs http://127.0.0.1:2379/health

  # On the node IP, not loopback (pods could not reach it, and loopback is no valid endpoint for the
  # "kubernetes" Service, 10.96.0.1:443 -> $node_ip:6443, which in-cluster clients such as the controller use).
  spawn kube-apiserver "$III_KUBE_APISERVER" --etcd-servers http://127.0.0.1:2379 \
    --bind-address "$node_ip" --advertise-address "$node_ip" --secure-port 6443 \
    --service-cluster-ip-range "$service_cidr" \
    --client-ca-file "$pki/ca.crt" --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --api-audiences https://kubernetes.default.svc.cluster.local \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction --allow-privileged \
    --kubelet-client-certificate "$pki/admin.crt" --kubelet-client-key "$pki/admin.key" \
    --kubelet-preferred-address-types InternalIP \
    --requestheader-client-ca-file "$pki/front-proxy-ca.crt" --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --proxy-client-cert-file "$pki/front-proxy-client.crt" --proxy-client-key-file "$pki/front-proxy-client.key"
  wait_for kube-apiserver 60 kubectl get --raw /readyz

  spawn kube-controller-manager "$bin/kube-controller-manager" --kubeconfig "$state/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$state/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$state/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false --use-service-account-credentials \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
    --service-cluster-ip-range "$service_cidr"
  spawn kube-scheduler "$bin/kube-scheduler" --kubeconfig "$state/scheduler.kubeconfig" \
    --authentication-kubeconfig "$state/scheduler.kubeconfig" --authorization-kubeconfig "$state/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false
}

start_containerd() {
  # Debian's containerd 1.6 with its CRI plugin, runc and the cgroupfs driver (no systemd here), on a root,
  # state dir and socket of its own so nothing clashes with another containerd.
  mkdir -p "$run/containerd" "$state/containerd"
  put "$state/containerd.toml" <<EOF
version = 2
root = "$state/containerd"
state = "$run/containerd"
[grpc]
  address = "$containerd_socket"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$pause_image"
  # Root here lacks CAP_SYS_RESOURCE, so nothing may lower an oom_score_adj: the kubelet asks -998 for
  # every pod sandbox and runc then dies in nsexec ("failed to update /proc/self/oom_score_adj:
  # Permission denied"). This option, meant for rootless containerd, clamps requests to containerd's own.
  restrict_oom_score_adj = true
  enable_cdi = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$run/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "/etc/cni/net.d"
EOF
  spawn containerd containerd --config "$state/containerd.toml"
  wait_for containerd 30 ctr -a "$containerd_socket" version
  local images; images=$(ctr_k8s images ls -q)
  grep -x "$pause_image" <<<"$images" >/dev/null || import_rootfs "$pause_image" "$cache/pause/rootfs" '["/pause"]'
  if ! grep -x "$coredns_image" <<<"$images" >/dev/null; then
    local root; root=$(mktemp -d); cp "$cache/coredns-$coredns_version" "$root/coredns"
    import_rootfs "$coredns_image" "$root" '["/coredns"]'; rm -rf "$root"
  fi
}

start_node() {
  # failCgroupV1: false -- /sys/fs/cgroup here is a tmpfs of v1 hierarchies with v2 beside them (a hybrid),
  # which kubelet >= 1.35 counts as cgroup v1 and refuses by default.
  # resolvConf "" -- pods get CoreDNS only (cluster names); nothing outside this machine is reachable anyway.
  # Eviction thresholds low and image GC off, so a small test disk evicts nothing.
  mkdir -p "$state/kubelet"
  put "$state/kubelet-config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$containerd_socket
address: $node_ip
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
clusterDNS: [$dns_ip]
clusterDomain: cluster.local
resolvConf: ""
failSwapOn: false
podCIDR: $pod_cidr
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
EOF
  spawn kubelet "$bin/kubelet" --config "$state/kubelet-config.yaml" --kubeconfig "$state/kubelet.kubeconfig" \
    --root-dir "$state/kubelet" --node-ip "$node_ip" --hostname-override "$node_name" -v 1
  wait_for "the node to be Ready" 90 node_ready

  # iptables mode; conntrack maxPerCore 0 leaves the machine's conntrack sysctls alone; NodePorts only on
  # the node IP.
  put "$state/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: $state/proxy.kubeconfig}
hostnameOverride: $node_name
clusterCIDR: $pod_cidr
bindAddress: 127.0.0.1
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
conntrack: {maxPerCore: 0}
nodePortAddresses: ["$node_ip/32"]
EOF
  spawn kube-proxy "$bin/kube-proxy" --config "$state/kube-proxy.yaml"
}
node_ready() {
  [ "$(kubectl get node "$node_name" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
}

start_dns() {  # CoreDNS answering cluster.local from the API (no upstream: nothing outside is reachable)
  kubectl apply --server-side --field-manager iii-cluster -f - >/dev/null <<EOF
apiVersion: v1
kind: ServiceAccount
metadata: {name: coredns, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:coredns"}
rules:
  - {apiGroups: [""], resources: [endpoints, services, pods, namespaces], verbs: [list, watch]}
  - {apiGroups: [discovery.k8s.io], resources: [endpointslices], verbs: [list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}
subjects: [{kind: ServiceAccount, name: coredns, namespace: kube-system}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: coredns, namespace: kube-system}
data:
  Corefile: |
    .:53 {
      errors
      health :8080
      ready :8181
      kubernetes cluster.local in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
      }
      cache 5
      loop
      loadbalance
    }
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: coredns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  replicas: 1
  selector: {matchLabels: {k8s-app: kube-dns}}
  template:
    metadata: {labels: {k8s-app: kube-dns}}
    spec:
      serviceAccountName: coredns
      priorityClassName: system-cluster-critical
      dnsPolicy: Default
      containers:
        - name: coredns
          image: $coredns_image
          args: ["-conf", "/etc/coredns/Corefile"]
          ports: [{name: dns, containerPort: 53, protocol: UDP}, {name: dns-tcp, containerPort: 53, protocol: TCP}]
          readinessProbe: {httpGet: {path: /ready, port: 8181}, periodSeconds: 2}
          resources: {requests: {cpu: 50m, memory: 32Mi}, limits: {memory: 128Mi}}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL], add: [NET_BIND_SERVICE]}
          volumeMounts: [{name: config, mountPath: /etc/coredns, readOnly: true}]
      volumes: [{name: config, configMap: {name: coredns}}]
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  clusterIP: $dns_ip
  selector: {k8s-app: kube-dns}
  ports: [{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53, protocol: TCP}]
EOF
  kubectl -n kube-system rollout status deployment/coredns --timeout=120s >/dev/null
}

start() {
  [ "$(id -u)" = 0 ] || { log "needs root (network setup, containerd, kubelet)"; exit 1; }
  local start=$SECONDS
  ensure_packages
  build
  eval "$(bash scripts/envtest.sh)"
  mkdir -p "$state" "$run" "$logs"
  pki_init
  for name in admin kubelet controller-manager scheduler proxy; do kubeconfig "$name"; done
  network_up
  start_control_plane
  start_containerd
  start_node
  start_dns
  log "up in $((SECONDS - start)) s; kubectl: bash scripts/cluster.sh kubectl get pods -A"
}

stop() {
  # The kubelet first (so it restarts nothing), then the pods' containers, then everything else.
  for name in kube-proxy kubelet; do stop_one "$name"; done
  if running containerd; then
    local ids; ids=$(ctr_k8s tasks ls -q 2>/dev/null || true)
    for id in $ids; do ctr_k8s tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
    [ -z "$ids" ] || sleep 2
    for id in $ids; do ctr_k8s tasks delete -f "$id" >/dev/null 2>&1 || true; done
    for id in $(ctr_k8s containers ls -q 2>/dev/null || true); do ctr_k8s containers delete "$id" >/dev/null 2>&1 || true; done
  fi
  # containerd starts a shim per pod; end (by PID) those serving this cluster's socket only.
  for pid in $(pgrep -f -- "containerd-shim-runc-v2 .*-address $containerd_socket" || true); do kill "$pid" 2>/dev/null || true; done
  for name in containerd kube-scheduler kube-controller-manager kube-apiserver etcd; do stop_one "$name"; done
  # What the kubelet (emptyDir and projected tmpfs), containerd (overlays, shm) and CNI (netns) mounted.
  findmnt -rn -o TARGET | { grep -E "^($state|$run|/run/netns/cni-)" || true; } | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null || true; done
  for ns in $(ip netns list 2>/dev/null | awk '/^cni-/{print $1}'); do ip netns del "$ns" 2>/dev/null || true; done
  # The pod cgroups the kubelet made in each v1 hierarchy (empty once the pods are gone).
  for h in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/unified/kubepods; do
    [ -d "$h" ] && find "$h" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  network_down
  log "stopped (state kept in $state; bash scripts/cluster.sh reset deletes it)"
}

reset() {
  stop
  # The node's containerd root holds read-only overlay snapshots; unmounted above, so plain rm works.
  rm -rf "$state/etcd" "$state/kubelet" "$state/containerd" "$state/volumes" "$logs" "$run"
  log "state deleted (pki and kubeconfigs kept)"
}

status() {
  local total=0 pid rss
  for name in etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy; do
    if running "$name"; then
      pid=$(cat "$run/$name.pid"); rss=$(awk '/VmRSS/{print $2}' "/proc/$pid/status"); total=$((total + rss))
      printf '%-24s pid %-7s rss %6d MiB\n' "$name" "$pid" $((rss / 1024))
    else
      printf '%-24s stopped\n' "$name"
    fi
  done
  printf '%-24s rss %6d MiB (cluster processes, without pods)\n' total $((total / 1024))
  if running kube-apiserver; then kubectl get nodes -o wide; kubectl get pods -A -o wide; fi
}

case ${1:-status} in
  build) build ;;
  start) start ;;
  stop) stop ;;
  reset) reset ;;
  status) status ;;
  import) shift; import "$@" ;;
  kubectl) shift; kubectl "$@" ;;
  env) printf 'export KUBECONFIG=%s\nexport PATH="%s:$PATH"\n' "$state/admin.kubeconfig" "$bin" ;;
  *) log "usage: cluster.sh build|start|stop|reset|status|import ARCHIVE...|kubectl ARGS|env"; exit 2 ;;
esac
