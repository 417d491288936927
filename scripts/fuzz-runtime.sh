#!/usr/bin/env bash
# The C runtime Jazzer.js's native fuzzer needs, private to the fuzz runs, and a command that runs
# NODE on it; prints the command's path.
#
#   bash scripts/fuzz-runtime.sh NODE
#
# @jazzer.js/fuzzer 4's only Linux build needs glibc 2.38 and libstdc++ GLIBCXX_3.4.32; Debian 12
# has 2.36 and 3.4.30, and older Jazzer.js releases download their builds from GitHub at install.
# So the fuzz runs (scripts/fuzz.mjs) start Node under Debian 13's dynamic loader and libraries,
# taken from Debian's archive with apt's ordinary client (a private apt configuration: nothing on
# the system changes) into ~/.cache/iii/fuzz-runtime. Node itself runs unchanged on the newer glibc.
# The command is a script (exec: the loader, the libraries, NODE) rather than an environment
# variable: libFuzzer's fork mode starts its jobs through /bin/sh, which the libraries would break.
# Idempotent: a second run only rewrites the command (NODE may have changed) and prints its path.
set -euo pipefail

node="${1:?usage: fuzz-runtime.sh NODE}"
root="${XDG_CACHE_HOME:-$HOME/.cache}/iii/fuzz-runtime"
lib="$root/usr/lib/x86_64-linux-gnu"
command_path() {
  printf '#!/bin/sh\nexec "%s" --library-path "%s" "%s" "$@"\n' "$lib/ld-linux-x86-64.so.2" "$lib" "$node" >"$root/node"
  chmod +x "$root/node"
  echo "$root/node"
}
if [ -x "$lib/ld-linux-x86-64.so.2" ] && [ -e "$lib/libstdc++.so.6" ]; then
  command_path
  exit 0
fi
[ "$(uname -m)" = x86_64 ] || { echo "fuzz-runtime: only x86_64 is set up" >&2; exit 1; }
command -v apt-get >/dev/null || { echo "fuzz-runtime: apt-get is needed to fetch Debian 13's libc6" >&2; exit 1; }

apt="$root.apt"
rm -rf "$apt" && mkdir -p "$apt/sources" "$apt/state/lists/partial" "$apt/cache/archives/partial" "$apt/debs"
cat >"$apt/sources/trixie.sources" <<'SOURCES'
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
options=(
  -o "Dir::Etc::sourcelist=/dev/null" -o "Dir::Etc::sourceparts=$apt/sources"
  -o "Dir::State=$apt/state" -o "Dir::Cache=$apt/cache" -o "Debug::NoLocking=1"
  -o "APT::Sandbox::User=root" -qq
)
echo "fuzz-runtime: fetching Debian 13's libc6, libstdc++6 and libgcc-s1 into $root" >&2
apt-get "${options[@]}" update >&2
(cd "$apt/debs" && apt-get "${options[@]}" download libc6 libstdc++6 libgcc-s1 >&2)
rm -rf "$root" && mkdir -p "$root"
for deb in "$apt/debs"/*.deb; do dpkg-deb -x "$deb" "$root"; done
rm -rf "$apt"
command_path
