#!/usr/bin/env bash
# A warm `test` of a project (issue 17) side by side with the same test command run on the host
# in a virtualenv: the sample project tests/projects/python-greeter, its own test runner.
#
#   bash benches/project.sh          # BENCH_PAIRS=10 interleaved pairs (A B, B A, ...)
#
# Private HOME and cache in a temporary directory; the instance `bench-project` of python
# minimal is purged at the end (also on failure). Needs the engine and hc-test-base:bookworm
# (scripts/debian-base-image.sh builds it). See BENCHMARKS.md §10 for the method and figures.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
PAIRS=${BENCH_PAIRS:-10}
cargo build --release --quiet
WORK=$(mktemp -d "${TMPDIR:-/tmp}/hc-bench-project.XXXXXX")
export HOME=$WORK/home HOST_CONTAINER_CACHE_DIR=$WORK/cache
export HOST_CONTAINER_BASE_IMAGE=hc-test-base:bookworm
unset PIP_CERT REQUESTS_CA_BUNDLE SSL_CERT_FILE HOST_CONTAINER_CA_BUNDLE
mkdir -p "$HOME"
cp target/release/host_container "$WORK/host_container"
HC=("$WORK/host_container" -x bench-project)
cp -a tests/projects/python-greeter "$WORK/project"
cleanup() {
  (cd "$WORK/project" && "${HC[@]}" --yes python minimal purge >/dev/null 2>&1) || true
  rm -rf "$WORK"
}
trap cleanup EXIT

cd "$WORK/project"
"${HC[@]}" python minimal init >/dev/null 2>&1
"${HC[@]}" python minimal test >/dev/null 2>&1
python3 -m venv "$WORK/venv"
PIP_NO_INDEX=1 "$WORK/venv/bin/pip" install --quiet --no-build-isolation \
  "$WORK/project/vendor/helperlib" --editable "$WORK/project"

now() { date +%s%N; }
container=() host=() raw=()
PREFIX=hc-python-minimal-bench--project
time_one() {
  local start end
  start=$(now)
  if [ "$1" = container ]; then
    "${HC[@]}" python minimal test >/dev/null 2>&1
  elif [ "$1" = raw ]; then
    docker run --rm --init --volume="$PREFIX-data:/virtualenv:ro" \
      --volume="$PREFIX-hosts:/data:ro" \
      --mount="type=bind,source=$WORK/project,target=/project" --workdir=/project \
      host_container/python-minimal:bench-project python tests/junit_runner.py >/dev/null 2>&1
  else
    (cd "$WORK/project" && "$WORK/venv/bin/python" tests/junit_runner.py >/dev/null 2>&1)
  fi
  end=$(now)
  echo $(( (end - start) / 1000 ))
}
for pair in $(seq 1 "$PAIRS"); do
  if [ $((pair % 2)) = 1 ]; then
    container+=("$(time_one container)"); raw+=("$(time_one raw)"); host+=("$(time_one host)")
  else
    host+=("$(time_one host)"); raw+=("$(time_one raw)"); container+=("$(time_one container)")
  fi
done
python3 - "${container[*]}" "${host[*]}" "${raw[*]}" <<'PY'
import statistics, sys
container = [int(x) for x in sys.argv[1].split()]
host = [int(x) for x in sys.argv[2].split()]
raw = [int(x) for x in sys.argv[3].split()]
ratios = [c / h for c, h in zip(container, host)]
raw_ratios = [c / r for c, r in zip(container, raw)]
print(f"the same by hand, docker run: median {statistics.median(raw) / 1000:.0f} ms "
      f"(min {min(raw) / 1000:.0f}, max {max(raw) / 1000:.0f})")
print(f"host_container test / docker run, median of paired ratios: "
      f"{statistics.median(raw_ratios):.2f}")
print(f"warm test in a container: median {statistics.median(container) / 1000:.0f} ms "
      f"(min {min(container) / 1000:.0f}, max {max(container) / 1000:.0f})")
print(f"same runner in a host venv: median {statistics.median(host) / 1000:.0f} ms "
      f"(min {min(host) / 1000:.0f}, max {max(host) / 1000:.0f})")
print(f"host_container test / host venv, median of {len(ratios)} paired ratios: "
      f"{statistics.median(ratios):.2f}")
PY
