#!/usr/bin/env bash
# Packages the Prometheus server of the Debian package `prometheus`
# (/usr/bin/prometheus, with its web UI from /usr/share/prometheus/web)
# into a FROM-scratch image for the compose demo, the way package.sh
# packages the agent: no image is pulled, so the demo starts on a machine
# without any registry.
#
#   docker/package-prometheus.sh [TAG]
#   (default: astrolabe-prometheus:latest; PROMETHEUS=/path/to/prometheus
#   packages another build)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/rootfs.sh"
tag="${1:-astrolabe-prometheus:latest}"
binary="${PROMETHEUS:-/usr/bin/prometheus}"
web=/usr/share/prometheus/web
[ -x "$binary" ] || { echo "package-prometheus.sh: $binary is not an executable; install the Debian package prometheus (apt-get install prometheus)" >&2; exit 1; }

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/usr/bin" "$ctx/rootfs/tmp" "$ctx/rootfs/prometheus" "$ctx/rootfs/etc/prometheus"
cp "$binary" "$ctx/rootfs/usr/bin/prometheus"
add_libraries "$binary" "$ctx/rootfs"
# The classic web UI Debian builds in reads its templates and scripts from
# here; the JavaScript libraries are symlinks into /usr/share/javascript,
# followed, less moment-timezone's 200 MB of raw zone data.
if [ -d "$web" ]; then
    mkdir -p "$ctx/rootfs$web"
    tar -C "$web" -chf - --exclude='./static/moment-timezone/data' . | tar -C "$ctx/rootfs$web" -xf -
fi
# Written by the server running as nobody.
chmod 1777 "$ctx/rootfs/tmp" "$ctx/rootfs/prometheus"
build_image "$ctx" "$here/Dockerfile.prometheus" "$tag"
