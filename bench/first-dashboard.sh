#!/usr/bin/env bash
# bench:first-dashboard — a newcomer's wait, with nothing cached: clone this repository's HEAD, run the
# README's first command exactly as written with empty npm and cargo caches and no Node 24 in the iii
# cache (each pointed at a temporary directory; the machine's own caches are not touched), and time
# it until `iii up` prints the dashboard and until the node answers with the demo's three services.
# Debian packages (clang, bpftool…) are taken as installed. Prints the install's steps, its CPU time
# and the load average, then stops iii up (as Ctrl-C would) and removes everything it made.
#
#   npm run bench:first-dashboard
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/iii-first-dashboard.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/cargo/bin" "$work/bin"
# An empty cargo home that still finds the machine's toolchain.
ln -s "${CARGO_HOME:-$HOME/.cargo}"/bin/* "$work/cargo/bin/"
git clone --quiet "$repo" "$work/iii"
command=$(awk '/^## Two commands/{s=1} s&&/^```sh/{b=1;next} b&&/^```/{exit} b&&!/^#/&&NF{print;exit}' "$work/iii/README.md")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
echo "bench:first-dashboard  command: $command  (load average at start: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores)"
export CARGO_HOME="$work/cargo" npm_config_cache="$work/npm" III_CACHE="$work/cache" III_BIN_DIR="$work/bin" \
  PATH="$work/bin:$PATH" III_UP_DATA="$work/up" III_UP_PORT="$port"
start=$(date +%s.%N)
( cd "$work/iii" && export TIMEFORMAT="install CPU: user %U s + sys %S s (wall %R s)" && exec setsid bash -c "time bash -c '${command%% && *}' && ${command#* && }" ) \
  >"$work/out" 2>"$work/err" &
pid=$!
seconds() { echo "$(date +%s.%N) - $start" | bc; }
until grep -q "Dashboard:" "$work/out" 2>/dev/null; do
  kill -0 "$pid" 2>/dev/null || { echo "the command ended before iii up:"; tail -20 "$work/err"; exit 1; }
  sleep 0.2
done
printed=$(seconds)
token=$(cat "$work/up/token")
until curl -sf -H "authorization: Bearer $token" "http://127.0.0.1:$port/v1/services" | grep -q payments; do sleep 0.2; done
answered=$(seconds)
grep -E "^install: .*\([0-9]+ s|^install CPU" "$work/err" || true
grep -E "^  agent " "$work/out" || true
printf 'dashboard printed after %.1f s; the node answered with the three demo services after %.1f s (load average now: %s)\n' \
  "$printed" "$answered" "$(cut -d' ' -f1-3 /proc/loadavg)"
kill -INT -- "-$pid" 2>/dev/null || true
wait "$pid" || true
