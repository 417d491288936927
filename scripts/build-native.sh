#!/usr/bin/env bash
# Builds the eBPF capture: bpf/iii_capture.bpf.o and, with trace propagation compiled in,
# bpf/iii_capture_propagation.bpf.o (clang, against a vmlinux.h that bpftool dumps from this
# kernel's BTF) and the Rust napi addon that embeds both (native/iii_native.node), and copies
# the addon into packages/agent/native/<platform>-<arch>/, where the agent loads it and npm pack ships it.
#
#   bash scripts/build-native.sh                 # what `npm run build:native` runs
#   bash scripts/build-native.sh --install-deps  # first apt-get install clang libbpf-dev bpftool (root)
#
# Where a tool is missing (no cargo, no clang/bpftool, no kernel BTF) it says what and exits 0:
# the agent still installs and runs in proxy mode. A real compile error fails the build.
# Outputs (all gitignored): bpf/build/{vmlinux.h,*.bpf.o}, native/target/,
# native/iii_native.node, packages/agent/native/. Rebuilds only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "build-native: $*" >&2; }
skip() {
  log "skipped: $* (eBPF capture unavailable; the agent falls back to proxy mode)"
  exit 0
}

if [ "${1:-}" = "--install-deps" ]; then
  missing=()
  for p in clang llvm libbpf-dev bpftool; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      log "apt-get install ${missing[*]}"
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } >&2
    else
      log "cannot install ${missing[*]} (needs root and apt-get)"
    fi
  fi
fi

[ "$(uname -s)" = Linux ] || skip "not Linux"
command -v clang >/dev/null || skip "clang not found (apt-get install clang)"
command -v bpftool >/dev/null || skip "bpftool not found (apt-get install bpftool)"
[ -f /usr/include/bpf/bpf_helpers.h ] || skip "libbpf headers not found (apt-get install libbpf-dev)"
[ -r /sys/kernel/btf/vmlinux ] || skip "no kernel BTF at /sys/kernel/btf/vmlinux"
command -v cargo >/dev/null || skip "cargo not found (install a Rust toolchain)"

mkdir -p bpf/build
# vmlinux.h only supplies type names for CO-RE; offsets are relocated at load time on the target
# kernel, so dumping it once per build machine is enough.
kernel_id="$(uname -r)"
if [ ! -s bpf/build/vmlinux.h ] || [ "$(cat bpf/build/vmlinux.h.kernel 2>/dev/null)" != "$kernel_id" ]; then
  log "bpftool: bpf/build/vmlinux.h from /sys/kernel/btf/vmlinux"
  bpftool btf dump file /sys/kernel/btf/vmlinux format c > bpf/build/vmlinux.h.tmp
  mv bpf/build/vmlinux.h.tmp bpf/build/vmlinux.h
  echo "$kernel_id" > bpf/build/vmlinux.h.kernel
fi

arch=$(uname -m)
case "$arch" in
  x86_64) target_arch=x86 node_arch=x64 ;;
  aarch64) target_arch=arm64 node_arch=arm64 ;;
  *) target_arch=$arch node_arch=$arch ;;
esac
for propagation in 0 1; do
  object=bpf/build/iii_capture.bpf.o
  [ "$propagation" = 1 ] && object=bpf/build/iii_capture_propagation.bpf.o
  if [ ! -f "$object" ] || [ -n "$(find bpf/iii_capture.bpf.c bpf/iii_capture.h bpf/iii_propagation.bpf.h bpf/build/vmlinux.h -newer "$object")" ]; then
    log "clang: $object"
    clang -O2 -g -target bpf "-D__TARGET_ARCH_$target_arch" "-DIII_PROPAGATION=$propagation" -Wall -Werror \
      -I bpf/build -I bpf -c bpf/iii_capture.bpf.c -o "$object.tmp"
    mv "$object.tmp" "$object"
  fi
done

log "cargo build --release (native/)"
cargo build --release --quiet --manifest-path native/Cargo.toml
cp native/target/release/libiii_native.so native/iii_native.node.tmp
mv native/iii_native.node.tmp native/iii_native.node
# The folder name is Node's process.platform-process.arch, what the agent's loader computes.
package_copy=packages/agent/native/linux-$node_arch
mkdir -p "$package_copy"
cp native/iii_native.node "$package_copy/iii_native.node.tmp"
mv "$package_copy/iii_native.node.tmp" "$package_copy/iii_native.node"
log "built native/iii_native.node, copied to $package_copy/"
