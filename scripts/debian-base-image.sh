#!/usr/bin/env bash
# Builds a python base image (Debian bookworm's Python 3.11) from Debian packages, for machines
# that cannot pull images:
#   scripts/debian-base-image.sh [IMAGE]        (default IMAGE: host_container-base:bookworm)
# then: HOST_CONTAINER_BASE_IMAGE=IMAGE host_container python minimal single
# Uses the machine's own apt sources through mmdebstrap, installed with apt-get when it is missing
# and we are root (otherwise the exact command to run is printed).
# Does nothing when IMAGE already exists.
set -euo pipefail
image=${1:-host_container-base:bookworm}
if docker image inspect "$image" >/dev/null 2>&1; then
  exit 0
fi
if ! command -v mmdebstrap >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "mmdebstrap is missing: apt-get install mmdebstrap" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq mmdebstrap >/dev/null
  else
    echo "mmdebstrap is needed to build $image; install it with:" >&2
    echo "  sudo apt-get install mmdebstrap" >&2
    exit 1
  fi
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mmdebstrap --quiet --variant=apt --include=python3,python3-venv,python3-pip bookworm "$work/rootfs.tar"
docker import "$work/rootfs.tar" "$image" >/dev/null
echo "built $image"
