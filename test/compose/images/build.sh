#!/usr/bin/env bash
# Builds, without any image registry, the images the project's Dockerfile and examples/compose/docker-compose.yml
# name, tagged with exactly those names, on the Docker engine at $DOCKER_HOST:
#   node:24-slim            debootstrap --variant=minbase bookworm (from this machine's apt mirror) + the project's
#                           pinned Node 24 binary (node_modules/node) + the npm this machine runs, and a "node" user
#                           (uid 1000) as in the official image
#   traefik/whoami:v1.10    images/whoami: a small Node server answering as whoami does (Hostname, IP, the request)
#   curlimages/curl:8.10.1  images/curl: curl and nslookup
# The root file system is cached in $MESHLET_DOCKER_CACHE (default /var/tmp/meshlet-docker), so the second run
# only re-imports when the engine has lost the image. Everything here runs as root on the host.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
cache="${MESHLET_DOCKER_CACHE:-/var/tmp/meshlet-docker}"
docker="${DOCKER:-docker}"
mkdir -p "$cache"

log() { printf '# images: %s\n' "$*" >&2; }

# The Dockerfile's FROM, read rather than repeated, so the two cannot drift apart.
base_tag="$(sed -n 's/^FROM[[:space:]]\+\([^[:space:]]\+\).*/\1/p' "$repo/Dockerfile" | head -n1)"
node_bin="$(readlink -f "$repo/node_modules/.bin/node")"
node_version="$("$node_bin" --version)"
npm_dir="$(cd "$(dirname "$(readlink -f "$(command -v npm)")")/.." && pwd)"
npm_version="$(node "$npm_dir/bin/npm-cli.js" --version 2>/dev/null || "$node_bin" "$npm_dir/bin/npm-cli.js" --version)"
label="meshlet.test.base=bookworm-minbase+node-${node_version}+npm-${npm_version}"

# The first http(s) mirror of the machine's apt sources (deb822 .sources or one-line .list): never another host.
apt_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -r "$f" ] || continue
    case "$f" in
      *.sources) awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:\/\/.*\/debian\/?$/) { print $i; exit } }' "$f" ;;
      *) awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^https?:\/\/.*\/debian\/?$/) { print $i; exit } }' "$f" ;;
    esac
  done | head -n1
}

image_label() { "$docker" image inspect -f '{{ index .Config.Labels "meshlet.test.base" }}' "$1" 2>/dev/null || true; }

build_base() {
  if [ "$(image_label "$base_tag")" = "${label#meshlet.test.base=}" ]; then
    log "$base_tag present ($node_version)"
    return
  fi
  local rootfs_tar="$cache/bookworm-minbase.tar"
  if [ ! -s "$rootfs_tar" ]; then
    local mirror
    mirror="$(apt_mirror)"
    [ -n "$mirror" ] || { echo "no Debian mirror in /etc/apt/sources.list*" >&2; exit 1; }
    log "debootstrap --variant=minbase bookworm from $mirror"
    local dir="$cache/rootfs.build"
    rm -rf "$dir"
    debootstrap --variant=minbase bookworm "$dir" "$mirror" >"$cache/debootstrap.log" 2>&1 ||
      { tail -n 20 "$cache/debootstrap.log" >&2; exit 1; }
    rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
    tar -C "$dir" -cf "$rootfs_tar.tmp" . && mv "$rootfs_tar.tmp" "$rootfs_tar"
    rm -rf "$dir"
  fi
  log "assembling $base_tag: bookworm minbase + node $node_version + npm $npm_version"
  local dir
  dir="$(mktemp -d "$cache/base.XXXXXX")"
  trap 'rm -rf "$dir"' RETURN
  tar -C "$dir" -xf "$rootfs_tar"
  install -m 0755 "$node_bin" "$dir/usr/local/bin/node"
  mkdir -p "$dir/usr/local/lib/node_modules"
  cp -a "$npm_dir" "$dir/usr/local/lib/node_modules/npm"
  ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$dir/usr/local/bin/npm"
  ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$dir/usr/local/bin/npx"
  # The official image's unprivileged user, which the Dockerfile's USER names.
  echo 'node:x:1000:1000::/home/node:/bin/bash' >>"$dir/etc/passwd"
  echo 'node:x:1000:' >>"$dir/etc/group"
  echo 'node:*:20000:0:99999:7:::' >>"$dir/etc/shadow"
  install -d -o 1000 -g 1000 "$dir/home/node"
  tar -C "$dir" -c . | "$docker" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "ENV NODE_VERSION=${node_version#v}" \
    --change "LABEL $label" \
    --change 'CMD ["node"]' \
    - "$base_tag" >/dev/null
}

# A stand-in is rebuilt when the base or its own files changed (the label carries both).
build_stand_in() {
  local tag="$1" dir="$2" sum
  sum="$(cat "$dir"/* | sha256sum | cut -c1-16)-${label#meshlet.test.base=}"
  if [ "$("$docker" image inspect -f '{{ index .Config.Labels "meshlet.test.stand-in" }}' "$tag" 2>/dev/null || true)" = "$sum" ]; then
    log "$tag present"
    return
  fi
  log "building stand-in $tag"
  # --network host: apt-get reaches the mirror without NAT rules for the build container.
  "$docker" build -q --network host --build-arg "BASE=$base_tag" --label "meshlet.test.stand-in=$sum" -t "$tag" "$dir" >/dev/null
}

build_base
build_stand_in "$(awk '/image: traefik\/whoami/ { print $2; exit }' "$repo/examples/compose/docker-compose.yml")" "$here/whoami"
build_stand_in "$(awk '/image: curlimages\/curl/ { print $2; exit }' "$repo/examples/compose/docker-compose.yml")" "$here/curl"
