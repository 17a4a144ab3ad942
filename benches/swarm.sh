#!/usr/bin/env bash
# A swarm of three machines (BENCHMARKS.md §12): on shared/tools/swarm-cluster (three isolated
# engines and a registry on their LAN), side by side in one run:
#
#   a. `daemon --set replicas=3` until every replica works (three tasks running on three nodes,
#      each having logged "serving on port"), vs the same service typed by hand
#      (`docker service create --replicas 3 IMAGE /data/daemon`, then the same wait);
#   b. `single` constrained to a worker, vs `docker service create --mode replicated-job
#      --constraint node.role==worker IMAGE COMMAND` (which waits for the job), `service logs`
#      and `service rm`, typed by hand.
#
#   bash benches/swarm.sh            # BENCH_SWARM_RUNS=5 pairs of each, interleaved
#
# Needs root (the cluster's engines) and the base image hc-test-base:bookworm. The cluster gets
# its own state directory and LAN, and is stopped at the end, with everything in it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
RUNS=${BENCH_SWARM_RUNS:-5}
export SWARM_CLUSTER_DIR=${TMPDIR:-/tmp}/hc-bench-swarm-cluster SWARM_CLUSTER_NET=215
TOOL=$ROOT/../shared/tools/swarm-cluster
WORK=$(mktemp -d "${TMPDIR:-/tmp}/hc-bench-swarm.XXXXXX")
cleanup() { bash "$TOOL" stop >/dev/null 2>&1 || true; rm -rf "$WORK"; }
trap cleanup EXIT

cargo build --release --quiet
BIN=$ROOT/target/release/host_container
eval "$(bash "$TOOL" start 3 hc-test-base:bookworm)"
export DOCKER_HOST=$SWARM_MANAGER_HOST
# After the build (rustup needs the real HOME).
export HOME=$WORK/home HOST_CONTAINER_ORCHESTRATOR=swarm HOST_CONTAINER_BASE_IMAGE=hc-test-base:bookworm
mkdir -p "$HOME"
cd "$WORK"
hc() { "$BIN" -x bench --set "registry=$SWARM_REGISTRY" "$@"; }
IMAGE=$SWARM_REGISTRY/host_container/python-minimal:bench
SERVICE=hc-python-minimal-bench-daemon

now() { date +%s.%N; }
# Waits until SERVICE (or $1) has three running tasks on three nodes that all logged serving.
await_working() {
    local name=$1 deadline=$((SECONDS + 180))
    while [ $SECONDS -lt $deadline ]; do
        nodes=$(docker service ps --filter desired-state=running --format '{{.Node}} {{.CurrentState}}' "$name" \
            | awk '$2 == "Running" {print $1}' | sort -u | wc -l)
        serving=$(docker service logs "$name" 2>/dev/null | grep -c 'serving on port' || true)
        [ "$nodes" = 3 ] && [ "$serving" -ge 3 ] && return 0
        sleep 0.2
    done
    echo "benches/swarm.sh: $name never had three working tasks" >&2
    exit 1
}
gone() { docker service rm "$1" >/dev/null 2>&1 || true
    while docker ps -aq --filter "label=com.docker.swarm.service.name=$1" | grep -q .; do sleep 0.2; done; }

hc python minimal init >/dev/null 2>&1
results=$WORK/results
for run in $(seq "$RUNS"); do
    start=$(now); hc --set replicas=3 python minimal daemon >/dev/null 2>&1; await_working "$SERVICE"
    echo "daemon-hc $(echo "$(now) - $start" | bc)" >> "$results"
    hc python minimal stop >/dev/null 2>&1
    start=$(now)
    docker service create --detach --quiet --name by-hand --replicas 3 "$IMAGE" /data/daemon >/dev/null
    await_working by-hand
    echo "daemon-hand $(echo "$(now) - $start" | bc)" >> "$results"
    gone by-hand

    start=$(now)
    hc --set constraints=node.role==worker python minimal single sh -c 'echo job' >/dev/null 2>&1
    echo "single-hc $(echo "$(now) - $start" | bc)" >> "$results"
    start=$(now)
    docker service create --quiet --name job-by-hand --mode replicated-job --restart-condition none \
        --constraint node.role==worker "$IMAGE" sh -c 'echo job' >/dev/null 2>&1
    docker service logs --raw job-by-hand >/dev/null 2>&1
    docker service rm job-by-hand >/dev/null
    echo "single-hand $(echo "$(now) - $start" | bc)" >> "$results"
    echo "run $run of $RUNS done" >&2
done
hc --yes python minimal purge >/dev/null 2>&1
python3 - "$results" <<'EOF'
import statistics, sys
times = {}
for line in open(sys.argv[1]):
    name, seconds = line.split()
    times.setdefault(name, []).append(float(seconds))
for what in ("daemon", "single"):
    tool, hand = statistics.median(times[what + "-hc"]), statistics.median(times[what + "-hand"])
    print(f"{what}: host_container median {tool:.2f} s, by hand {hand:.2f} s, ratio {tool / hand:.2f} "
          f"(n={len(times[what + '-hc'])})")
EOF
