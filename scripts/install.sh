#!/usr/bin/env bash
# Installs what iii needs on this machine and builds it; with --test, also what only the tests need.
#
#   bash scripts/install.sh && iii up                  # the README's first command
#   eval "$(bash scripts/install.sh --test)" && npm test  # the README's second command (and .ci/run)
#
# Always: Node 24 (scripts/ensure-node.sh, into ~/.cache/iii when the machine's Node is older), the
# Debian packages the eBPF build needs (clang, llvm, libbpf-dev, bpftool; root only), npm ci, the
# build (TypeScript, the dashboard, the BPF object and the Rust addon, which compiles while npm and
# tsc run), and an `iii` command on PATH: a launcher in /usr/local/bin (root) or ~/.local/bin
# ($III_BIN_DIR to choose) that runs this checkout's build with that Node.
# --test adds wrk (the agent benchmark), chromium (the browser tests), the kube-apiserver + etcd the
# controller tests run (scripts/envtest.sh; minutes the first time, cached in ~/.cache/iii), the
# fuzzers' C runtime (scripts/fuzz-runtime.sh) and OpenTelemetry's telemetrygen, which the OTLP ingest
# test sends with (scripts/otel-tools.sh; a minute the first time, cached in ~/.cache/iii).
#
# Idempotent: a second run re-checks and rebuilds what changed. Everything goes to stderr, each step
# with its seconds; when stdout is not a terminal (`eval "$(…)"`), the one line that puts Node 24
# first on PATH goes to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

for_tests=false
case "${1:-}" in
  --test) for_tests=true ;;
  "") ;;
  *) echo "usage: bash scripts/install.sh [--test]" >&2; exit 2 ;;
esac

log() { echo "install: $*" >&2; }
started=$SECONDS
step() {
  local what=$1 from=$SECONDS
  shift
  "$@"
  log "$what ($((SECONDS - from)) s)"
}

node_bin=$(bash scripts/ensure-node.sh)
export PATH="$node_bin:$PATH"
log "node $(node --version) from $node_bin"

apt_packages=(clang llvm libbpf-dev bpftool)
$for_tests && apt_packages+=(wrk chromium)
missing=()
for p in "${apt_packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt_install() {
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } >&2
    }
    step "apt-get install ${missing[*]}" apt_install
  else
    log "missing ${missing[*]} (not root or no apt-get): without clang/bpftool the agent runs in proxy mode; without chromium the browser tests are skipped"
  fi
fi

# The addon is most of the build's time and needs neither npm nor tsc: it compiles meanwhile.
native_log=$(mktemp)
bash scripts/build-native.sh >"$native_log" 2>&1 &
native_pid=$!
native_from=$SECONDS

step "npm ci" npm ci --no-audit --no-fund --loglevel=error >&2
step "tsc -b" npx tsc -b >&2
step "dashboard" npm run --silent build:dashboard >&2
# npm ci links bins before the build made dist/bin.js, so `npx iii` needs them linked again.
npm rebuild @iii/cli --ignore-scripts --loglevel=error >/dev/null 2>&1 || log "could not link node_modules/.bin/iii"

if wait "$native_pid"; then
  cat "$native_log" >&2
  log "native addon ($((SECONDS - native_from)) s, alongside the steps above)"
else
  cat "$native_log" >&2
  rm -f "$native_log"
  log "the native build failed (above)"
  exit 1
fi
rm -f "$native_log"

bin_dir=${III_BIN_DIR:-}
if [ -z "$bin_dir" ]; then
  if [ "$(id -u)" = 0 ]; then bin_dir=/usr/local/bin; else bin_dir=$HOME/.local/bin; fi
fi
mkdir -p "$bin_dir"
cat >"$bin_dir/iii.tmp" <<EOF
#!/bin/sh
# The iii command, installed by $repo/scripts/install.sh: that checkout's build, run with Node $(node --version).
cli="$repo/packages/cli/dist/bin.js"
if [ ! -f "\$cli" ]; then
  echo "iii: \$cli is missing; run scripts/install.sh in your iii checkout again" >&2
  exit 1
fi
exec "$node_bin/node" "\$cli" "\$@"
EOF
chmod +x "$bin_dir/iii.tmp"
mv "$bin_dir/iii.tmp" "$bin_dir/iii"
case ":$PATH:" in
  *":$bin_dir:"*) log "iii is $bin_dir/iii" ;;
  *) log "iii is $bin_dir/iii, which is not on PATH: add it (export PATH=\"$bin_dir:\$PATH\", e.g. in ~/.profile)" ;;
esac

if $for_tests; then
  # The controller's integration tests run a real kube-apiserver and etcd, built once from Go modules
  # and cached outside the repo (several minutes the first time).
  step "kube-apiserver + etcd for the controller tests" bash scripts/envtest.sh >/dev/null
  # Jazzer.js's native fuzzer needs a newer C runtime than Debian 12's (scripts/fuzz-runtime.sh);
  # without it the fuzz smoke tests are skipped with the reason.
  step "the fuzzers' C runtime" bash scripts/fuzz-runtime.sh "$(command -v node)" >/dev/null ||
    log "no C runtime for the fuzzers: the fuzz smoke tests will be skipped"
  step "telemetrygen for the OTLP ingest test" bash scripts/otel-tools.sh telemetrygen >/dev/null ||
    log "no telemetrygen: the telemetrygen ingest test will be skipped"
fi

log "done in $((SECONDS - started)) s"
[ -t 1 ] || echo "export PATH=\"$node_bin:\$PATH\""
