#!/bin/sh
# A Debian base image made without any registry: for air-gapped sites and build machines that
# cannot pull one. Build with it through `nox -s build -- STACK --base-image IMAGE`.
# Needs root and debootstrap (`apt-get install debootstrap podman`).
# Usage: docker/debootstrap-base.sh [IMAGE] [SUITE] [MIRROR]
set -eu
image="${1:-localhost/debian-base:bookworm}"
suite="${2:-bookworm}"
mirror="${3:-http://deb.debian.org/debian}"
tool="${LOCKSTEP_CONTAINER_TOOL:-$(command -v podman >/dev/null 2>&1 && echo podman || echo docker)}"
rootfs="$(mktemp -d)"
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase "$suite" "$rootfs" "$mirror"
tar -C "$rootfs" -c . | "$tool" import - "$image"
