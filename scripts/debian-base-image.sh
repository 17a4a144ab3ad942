#!/usr/bin/env bash
# Builds a language's base image from Debian bookworm packages, for machines that cannot pull
# images:
#   scripts/debian-base-image.sh [IMAGE [LANGUAGE]]
#     LANGUAGE python (default): python3 (3.11), venv and pip; default IMAGE host_container-base:bookworm
#     LANGUAGE node:             nodejs (18) and npm;          default IMAGE host_container-node-base:bookworm
# then: HOST_CONTAINER_BASE_IMAGE=IMAGE host_container python minimal single
#  or:  HOST_CONTAINER_NODE_BASE_IMAGE=IMAGE host_container node plain single
# Uses the machine's own apt sources through mmdebstrap, installed with apt-get when it is missing
# and we are root (otherwise the exact command to run is printed).
# Does nothing when IMAGE already exists.
set -euo pipefail
language=${2:-python}
case "$language" in
  python)
    packages=python3,python3-venv,python3-pip
    default_image=host_container-base:bookworm
    ;;
  node)
    packages=nodejs,npm
    default_image=host_container-node-base:bookworm
    ;;
  *)
    echo "unknown language '$language': python or node" >&2
    exit 64
    ;;
esac
image=${1:-$default_image}
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
mmdebstrap --quiet --variant=apt --include="$packages" bookworm "$work/rootfs.tar"
docker import "$work/rootfs.tar" "$image" >/dev/null
echo "built $image"
