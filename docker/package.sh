#!/usr/bin/env bash
# Packages an already-built astrolabe binary into a FROM-scratch image:
# the binary (debug info stripped) plus the shared libraries ldd lists,
# at the paths the dynamic loader expects. No base image is pulled.
#
#   docker/package.sh [BINARY] [TAG]
#   (defaults: target/release/astrolabe, astrolabe:latest)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/rootfs.sh"
binary="${1:-target/release/astrolabe}"
tag="${2:-astrolabe:latest}"
[ -x "$binary" ] || { echo "package.sh: $binary is not an executable; build it first (cargo build --release)" >&2; exit 1; }

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/usr/local/bin" "$ctx/rootfs/tmp"
if command -v strip >/dev/null; then
    strip --strip-debug -o "$ctx/rootfs/usr/local/bin/astrolabe" "$binary"
else
    cp "$binary" "$ctx/rootfs/usr/local/bin/astrolabe"
fi
add_libraries "$binary" "$ctx/rootfs"
chmod 1777 "$ctx/rootfs/tmp"
build_image "$ctx" "$here/Dockerfile.scratch" "$tag"
