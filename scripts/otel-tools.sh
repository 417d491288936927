#!/usr/bin/env bash
# OpenTelemetry's load generator and a peer trace store, built from Go modules for the tests and the
# bench (Go is only for these fixtures), cached outside the repo; prints one export line per tool.
#
#   eval "$(bash scripts/otel-tools.sh telemetrygen)"         # exports III_TELEMETRYGEN
#   eval "$(bash scripts/otel-tools.sh telemetrygen jaeger)"  # and III_JAEGER
#   bash scripts/otel-tools.sh --no-build telemetrygen        # the line if built, else exit 1 (tests)
#
# - telemetrygen (github.com/open-telemetry/opentelemetry-collector-contrib/cmd/telemetrygen): the
#   OTLP ingest test sends its spans over OTLP/HTTP and OTLP/gRPC; bench:otlp-peers sends its load.
# - jaeger (github.com/jaegertracing/jaeger/cmd/jaeger, v2, a Collector distribution): the store
#   bench:otlp-peers compares obs with (badger and memory storage).
# Idempotent: a second run finds the binaries and only prints the lines. Settings: III_CACHE (default
# ~/.cache/iii), III_TELEMETRYGEN_VERSION (default 0.161.0), III_JAEGER_VERSION (default 1.76.0).
set -euo pipefail

cache="${III_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/iii}/otel"
bin="$cache/bin"
log() { echo "otel-tools: $*" >&2; }

build=true
if [ "${1:-}" = --no-build ]; then build=false; shift; fi
[ $# -gt 0 ] || { echo "usage: bash scripts/otel-tools.sh [--no-build] telemetrygen|jaeger..." >&2; exit 2; }
mkdir -p "$bin"
# One builder at a time (several shells, the tests and the bench); the loser waits and finds the binary.
exec 9>"$cache/.lock"
$build && flock 9

# Builds package `pkg` of module `module` at `version` into `target`, through a throwaway wrapper module
# (as scripts/envtest.sh builds etcd): `go install pkg@version` refuses a module whose go.mod has
# replace directives, as Jaeger's has (one: sarama), so the wrapper repeats them (`replaces`).
build_tool() {
  local module=$1 pkg=$2 version=$3 target=$4 replaces=${5:-}
  [ -x "$target" ] && return 0
  $build || { log "$target is not built (bash scripts/otel-tools.sh $tool builds it)"; return 1; }
  command -v go >/dev/null || { log "go is not installed; cannot build $pkg"; return 1; }
  local work; work=$(mktemp -d "$cache/build.XXXXXX")
  log "building $pkg@v$version (minutes the first time)"
  local from=$SECONDS
  (
    cd "$work"
    printf 'module iii.local/otel-tools\n\ngo 1.24\n\nrequire %s v%s\n%s\n' "$module" "$version" "$replaces" >go.mod
    GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -o "$target.tmp" "$pkg" >&2
  )
  mv "$target.tmp" "$target"
  rm -rf "$work"
  log "built $target ($((SECONDS - from)) s)"
}

for tool in "$@"; do
  case "$tool" in
    telemetrygen)
      v=${III_TELEMETRYGEN_VERSION:-0.161.0}
      m=github.com/open-telemetry/opentelemetry-collector-contrib/cmd/telemetrygen
      build_tool "$m" "$m" "$v" "$bin/telemetrygen-v$v"
      echo "export III_TELEMETRYGEN=$bin/telemetrygen-v$v"
      ;;
    jaeger)
      v=${III_JAEGER_VERSION:-1.76.0}
      build_tool github.com/jaegertracing/jaeger github.com/jaegertracing/jaeger/cmd/jaeger "$v" \
        "$bin/jaeger-v$v" "replace github.com/Shopify/sarama => github.com/Shopify/sarama v1.33.0"
      echo "export III_JAEGER=$bin/jaeger-v$v"
      ;;
    *) echo "otel-tools: unknown tool $tool (telemetrygen or jaeger)" >&2; exit 2 ;;
  esac
done
