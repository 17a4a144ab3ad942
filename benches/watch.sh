#!/usr/bin/env bash
# Time from saving a file to the job's first output line (issue 22): `--watch` side by side
# with typing the command again, on the local engine (the project bind-mounted) and on the
# isolated remote engine of ../shared/tools/remote-engine (the project copied through the
# engine).
#
#   bash benches/watch.sh       # BENCH_PAIRS=10 interleaved pairs per engine (A B, B A, ...)
#
# Private HOME and cache in a temporary directory; the instance `bench-watch` is removed from
# both engines at the end (also on failure). Needs hc-test-base:bookworm
# (scripts/debian-base-image.sh builds it). BENCHMARKS.md §14 has the method and figures.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
PAIRS=${BENCH_PAIRS:-10}
cargo build --release --quiet
WORK=$(mktemp -d "${TMPDIR:-/tmp}/hc-bench-watch.XXXXXX")
export HOME=$WORK/home HOST_CONTAINER_CACHE_DIR=$WORK/cache
export HOST_CONTAINER_BASE_IMAGE=hc-test-base:bookworm
unset PIP_CERT REQUESTS_CA_BUNDLE SSL_CERT_FILE HOST_CONTAINER_CA_BUNDLE UPGRADE
mkdir -p "$HOME" "$WORK/project/.host_container"
cp target/release/host_container "$WORK/host_container"
HC=$WORK/host_container
REMOTE_TOOL=$ROOT/../shared/tools/remote-engine
REMOTE_HOST=
remove() {
  local filter=label=org.docker-meta.host_container.instance=bench-watch
  docker ps -aq --filter "$filter" | xargs -r docker rm -f >/dev/null
  docker volume ls -q --filter "$filter" | xargs -r docker volume rm -f >/dev/null
  docker image ls -q --filter "$filter" | xargs -r docker image rm -f >/dev/null
}
cleanup() {
  remove || true
  if [ -n "$REMOTE_HOST" ]; then
    DOCKER_HOST=$REMOTE_HOST remove || true
    bash "$REMOTE_TOOL" stop >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "print('first line', flush=True)" >"$WORK/project/app.py"
python3 "$ROOT/benches/watch.py" "$HC" "$WORK/project" bench-watch "$PAIRS" local
if [ -f "$REMOTE_TOOL" ]; then
  # The e2e tests hold this lock while they use the engine: take turns with them.
  exec 9>"${TMPDIR:-/tmp}/host_container-e2e-remote-engine.lock"
  flock 9
  REMOTE_HOST=$(bash "$REMOTE_TOOL" start "$HOST_CONTAINER_BASE_IMAGE" | tail -n 1)
  DOCKER_HOST=$REMOTE_HOST python3 "$ROOT/benches/watch.py" "$HC" "$WORK/project" bench-watch \
    "$PAIRS" remote
fi
