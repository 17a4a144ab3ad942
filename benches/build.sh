#!/usr/bin/env bash
# The first image build of init vs a plain `docker build` of the same Dockerfile and context, on
# the legacy builder (DOCKER_BUILDKIT=0: what an engine without BuildKit runs). See
# BENCHMARKS.md §9 for the method and the last figures.
#
#   bash benches/build.sh            (also run by benches/run.sh as part 9)
#
# Environment knobs (all optional):
#   BENCH_BUILD_RUNS=5     runs of each of the three builds, interleaved
#   HC_BIN=PATH            the host_container to time (default: target/release/host_container,
#                          built when missing)
#
# Each run starts without the image and without its build cache: the image is removed after
# every build (its untagged parent layers go with it), so every build runs every step. Four
# builds are timed, in an order shuffled for each run (seeded, so reruns repeat it; a rotation
# would keep each build's neighbour the same in every run):
#   plain    docker build --build-arg=BASE_IMAGE=… --tag=… CONTEXT
#   init     host_container -x benchbuild --junit R python minimal init: the time of the
#            `init.image` case (the step as host_container runs it, its image prune included)
#   argv     the build argv of that step, as `--plan` shows it, run by hand with its generated
#            Dockerfile on stdin (the build alone, without host_container)
#   options  the plain build with the same labels as `--label` options (what init ran before)
# The figure is the median of the per-run ratios (each run's builds are next to each other,
# so a change of the machine's load between runs cancels out), beside the medians of the times.
# The instance `benchbuild` and the images made here are removed at the end, also on failure.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
RUNS=${BENCH_BUILD_RUNS:-5}
BASE_IMAGE=hc-test-base:bookworm
INSTANCE=benchbuild
IMAGE=host_container/python-minimal:$INSTANCE
PLAIN=hc-bench-build-plain:1
OPTIONS=hc-bench-build-options:1
export DOCKER_BUILDKIT=0

log() { printf '\n== %s\n' "$*" >&2; }
die() { printf 'benches/build.sh: %s\n' "$*" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/hc-bench-build.XXXXXX")
HC_HOME=$WORK/home
mkdir -p "$HC_HOME"
hc() {
    # A private HOME and cache; no CA bundle of this machine's environment, so the build
    # context is the variant's directory alone, as the plain build's is.
    env -u PIP_CERT -u REQUESTS_CA_BUNDLE -u SSL_CERT_FILE -u HOST_CONTAINER_CA_BUNDLE \
        HOME="$HC_HOME" HOST_CONTAINER_CACHE_DIR="$WORK/cache" \
        HOST_CONTAINER_BASE_IMAGE="$BASE_IMAGE" DOCKER_CONFIG="${DOCKER_CONFIG:-$HOME/.docker}" \
        "$HC" "$@"
}
cleanup() {
    log "removing what the benchmark made"
    hc -x "$INSTANCE" --yes python minimal purge >/dev/null 2>&1 || true
    docker image rm "$IMAGE" "$PLAIN" "$OPTIONS" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

HC=${HC_BIN:-$ROOT/target/release/host_container}
if [ -z "${HC_BIN:-}" ] && [ ! -x "$HC" ]; then
    log "cargo build --release"
    cargo build --release --quiet
fi
[ -x "$HC" ] || die "no host_container at $HC"
# A private copy: a rebuild of target/ by someone else cannot swap it mid-run.
cp "$HC" "$WORK/host_container"
HC=$WORK/host_container
docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 ||
    die "$BASE_IMAGE is missing: scripts/debian-base-image.sh $BASE_IMAGE python builds it"

# The build exactly as init plans it: its context, and the labels it gives the image.
hc -x "$INSTANCE" --plan --offline --format json python minimal init >"$WORK/plan.json"
read -r CONTEXT < <(python3 -c '
import json, sys
step = next(s for s in json.load(open(sys.argv[1]))["steps"] if s["id"] == "init.image")
print(step["argv"][-1])
' "$WORK/plan.json")
mapfile -t ARGV < <(python3 -c '
import json, sys
step = next(s for s in json.load(open(sys.argv[1]))["steps"] if s["id"] == "init.image")
print("\n".join(step["argv"]))
open(sys.argv[2], "w").write(step["dockerfile"]["text"])
' "$WORK/plan.json" "$WORK/Dockerfile")
mapfile -t LABELS < <(python3 -c '
import json, sys
step = next(s for s in json.load(open(sys.argv[1]))["steps"] if s["id"] == "init.image")
for key, value in step["dockerfile"]["labels"].items():
    print(f"--label={key}={value}")
' "$WORK/plan.json")

seconds_of() { # command…: runs it quietly, prints its wall time in seconds
    local start=$EPOCHREALTIME
    "$@" >"$WORK/out.log" 2>&1 || { cat "$WORK/out.log" >&2; die "failed: $*"; }
    python3 -c 'import sys; print(f"{float(sys.argv[2]) - float(sys.argv[1]):.3f}")' \
        "$start" "$EPOCHREALTIME"
}
plain() {
    seconds_of docker build "--build-arg=BASE_IMAGE=$BASE_IMAGE" "--tag=$PLAIN" "$CONTEXT"
    docker image rm "$PLAIN" >/dev/null
}
argv() {
    seconds_of "${ARGV[@]}" <"$WORK/Dockerfile"
    check_labels
    docker image rm "$IMAGE" >/dev/null
}
options() {
    seconds_of docker build "${LABELS[@]}" "--build-arg=BASE_IMAGE=$BASE_IMAGE" \
        "--tag=$OPTIONS" "$CONTEXT"
    docker image rm "$OPTIONS" >/dev/null
}
init() {
    hc -x "$INSTANCE" --junit "$WORK/init.xml" python minimal init >"$WORK/out.log" 2>&1 ||
        { cat "$WORK/out.log" >&2; die "init failed"; }
    python3 -c '
import sys, xml.etree.ElementTree as ET
case = next(c for c in ET.parse(sys.argv[1]).iter("testcase") if c.get("name") == "init.image")
print(case.get("time"))
' "$WORK/init.xml"
    check_labels
    docker image rm "$IMAGE" >/dev/null
}
# What purge and status find the image by must be on it, whatever way the labels went in.
check_labels() {
    local found
    found=$(docker image inspect "$IMAGE" --format \
        '{{index .Config.Labels "org.docker-meta.host_container.instance"}} {{index .Config.Labels "org.docker-meta.host_container.fingerprint"}} {{index .Config.Labels "org.opencontainers.image.description"}}')
    case "$found" in
        "$INSTANCE "?*" python"*) ;;
        *) die "the image lacks its labels: $found" ;;
    esac
}

# How many build steps a build ran: M of docker's `Step 1/M`, from the last build's output.
steps() { grep -om1 'Step 1/[0-9]*' "$WORK/out.log" | cut -d/ -f2; }
log "warm-up (not timed): one build of each"
plain >/dev/null
STEPS_PLAIN=$(steps)
init >/dev/null
argv >/dev/null
STEPS_ARGV=$(steps)
options >/dev/null
STEPS_OPTIONS=$(steps)
declare -A TIMES
RANDOM=17
for ((run = 0; run < RUNS; run++)); do
    order=(plain init argv options)
    for ((i = ${#order[@]} - 1; i > 0; i--)); do
        j=$((RANDOM % (i + 1)))
        swap=${order[i]} && order[i]=${order[j]} && order[j]=$swap
    done
    for which in "${order[@]}"; do
        TIMES[$which]+="$($which) "
    done
    log "run $((run + 1))/$RUNS: plain ${TIMES[plain]}| init ${TIMES[init]}| argv ${TIMES[argv]}| options ${TIMES[options]}"
done

python3 - "${TIMES[plain]}" "${TIMES[init]}" "${TIMES[argv]}" "${TIMES[options]}" \
    "$STEPS_PLAIN" "$STEPS_ARGV" "$STEPS_OPTIONS" <<'EOF'
import statistics, sys
plain, init, argv, options = ([float(t) for t in arg.split()] for arg in sys.argv[1:5])
steps = dict(zip(["plain", "argv", "options"], sys.argv[5:8]))
def ratio(times):
    return statistics.median(t / p for t, p in zip(times, plain))
print(f"9. first init image step vs plain docker build ({len(plain)} runs of each; median time,")
print("   median of the per-run ratios to plain):")
print(f"   plain docker build             {statistics.median(plain):7.2f} s"
      f"               {steps['plain']} build steps")
for name, times, note in [
    ("init.image (host_container)", init, "goal <= 1.10"),
    ("its build argv, by hand", argv, f"the build alone, {steps['argv']} build steps"),
    ("build with --label options", options, f"before, {steps['options']} build steps"),
]:
    print(f"   {name:30} {statistics.median(times):7.2f} s   ratio {ratio(times):.2f}  ({note})")
EOF
