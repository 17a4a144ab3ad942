#!/usr/bin/env bash
# Benchmarks of host_container: see BENCHMARKS.md for the method and the last figures.
#
#   bash benches/run.sh
#
# Environment knobs (all optional):
#   BENCH_RUNS=50          hyperfine runs of the small --plan benchmark
#   BENCH_GEN_RUNS=20      hyperfine runs of the generated 1,000/10,000/20,000-step plans
#   BENCH_MAKE_RUNS=5      hyperfine runs of make -n on the 10,000-step graph (part 2c)
#   BENCH_EXEC_RUNS=10     hyperfine runs of the 1,000-step executor benchmark
#   BENCH_JOBS_RUNS=5      hyperfine runs of each -j benchmark
#   BENCH_PAIRS=20         interleaved pairs of `single` vs raw `docker run`
#   BENCH_SKIP_ENGINE=1    skip the parts that need a Docker engine (5, 6, 9)
#   BENCH_BUILD_RUNS=5     runs of each build of part 9 (benches/build.sh)
#   BENCH_SKIP_SCALE=1     skip the modes-at-scale shapes (7, benches/scale.py)
#   BENCH_SCALE_RUNS=5     runs of each of those shapes
#   BENCH_KEEP_WORK=1      keep the temporary directory (printed) for inspection
#
# Every run uses a private HOME and HOST_CONTAINER_CACHE_DIR in a temporary directory. The
# engine part creates the instance `bench` of python/minimal and removes all of it at the end
# (the base image hc-test-base:bookworm is kept).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
HELPER=$ROOT/benches/bench.py

RUNS=${BENCH_RUNS:-50}
GEN_RUNS=${BENCH_GEN_RUNS:-20}
MAKE_RUNS=${BENCH_MAKE_RUNS:-5}
EXEC_RUNS=${BENCH_EXEC_RUNS:-10}
JOBS_RUNS=${BENCH_JOBS_RUNS:-5}
PAIRS=${BENCH_PAIRS:-20}

BASE_IMAGE=hc-test-base:bookworm
INSTANCE=bench
PREFIX=hc-python-minimal-$INSTANCE
IMAGE=host_container/python-minimal:$INSTANCE

log() { printf '\n== %s\n' "$*" >&2; }
die() { printf 'benches/run.sh: %s\n' "$*" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/hc-bench.XXXXXX")
ENGINE_TOUCHED=

# Everything labelled with the bench instance, in the engine DOCKER_HOST points at.
purge_instance() {
    local filter=label=org.docker-meta.host_container.instance=$INSTANCE ids
    ids=$(docker ps -aq --filter "$filter" 2>/dev/null || true)
    # shellcheck disable=SC2086
    [ -z "$ids" ] || docker rm -f $ids >/dev/null 2>&1 || true
    ids=$(docker volume ls -q --filter "$filter" 2>/dev/null || true)
    # shellcheck disable=SC2086
    [ -z "$ids" ] || docker volume rm -f $ids >/dev/null 2>&1 || true
    docker image rm "$IMAGE" >/dev/null 2>&1 || true
}

purge_engine() {
    [ -n "$ENGINE_TOUCHED" ] || return 0
    log "purging what the benchmark created in the engine"
    purge_instance
    if [ -n "${REMOTE_HOST:-}" ]; then
        DOCKER_HOST=$REMOTE_HOST purge_instance
        bash "$REMOTE_TOOL" stop >/dev/null 2>&1 || true
        REMOTE_HOST=
    fi
    ENGINE_TOUCHED=
}

cleanup() {
    local code=$?
    trap - EXIT INT TERM
    purge_engine
    if [ -n "${BENCH_KEEP_WORK:-}" ]; then
        printf 'benches/run.sh: kept %s\n' "$WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- tools -------------------------------------------------------------------------------------
need_apt() {
    # Installs Debian packages, only for tools that are absent.
    if [ "$(id -u)" -ne 0 ]; then
        die "missing $*: install it (apt-get install $*) and run again"
    fi
    log "installing $*"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}
command -v python3 >/dev/null || die "python3 is needed"
command -v hyperfine >/dev/null || need_apt hyperfine
command -v /usr/bin/time >/dev/null || need_apt time
command -v make >/dev/null || need_apt make

# --- build (with the caller's HOME, where cargo and rustup live) -------------------------------
log "cargo build --release"
cargo build --release --quiet
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
# A private copy: others rebuilding target/ during the benchmark do not swap it mid-run, and no
# installdir layer is found next to it.
mkdir -p "$WORK/bin"
cp "$TARGET_DIR/release/host_container" "$WORK/bin/host_container"
HC=$WORK/bin/host_container
REAL_DOCKER=$(command -v docker || true)
COMMIT=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)

# --- private environment -----------------------------------------------------------------------
export DOCKER_CONFIG=${DOCKER_CONFIG:-$HOME/.docker}
export HOME=$WORK/home
export HOST_CONTAINER_CACHE_DIR=$WORK/cache
unset UPGRADE HOST_CONTAINER_RUN_ID HOST_CONTAINER_BASE_IMAGE XDG_CACHE_HOME
mkdir -p "$HOME"
cd "$WORK"

median() { python3 "$HELPER" median "$1" | sed -n "${2:-1}p"; }
ratio() { python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}')" "$1" "$2"; }
div() { python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.3f}')" "$1" "$2"; }
sub() { python3 -c "import sys; print(f'{float(sys.argv[1]) - float(sys.argv[2]):.3f}')" "$1" "$2"; }
# verdict VALUE OP GOAL: met / MISSED
verdict() {
    if python3 -c "import sys, operator as o; sys.exit(0 if {'<=': o.le, '>=': o.ge}[sys.argv[2]](float(sys.argv[1]), float(sys.argv[3])) else 1)" "$@"; then
        echo met
    else
        echo MISSED
    fi
}
# check_fake DIR: DIR/docker is what a PATH starting with DIR runs, so that a broken fake can
# never let the generated steps reach the real engine.
check_fake() {
    [ "$(PATH="$1:$PATH" type -P docker)" = "$1/docker" ] && [ -x "$1/docker" ] ||
        die "fake docker $1/docker is not usable"
}
hf() { hyperfine --style basic -N "$@" >&2; }

SUMMARY=$WORK/summary.txt
{
    echo "commit:  $COMMIT"
    echo "cpus:    $(nproc) x $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
    echo "memory:  $(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
    echo "docker:  $({ [ -n "$REAL_DOCKER" ] && "$REAL_DOCKER" version --format '{{.Server.Version}}' 2>/dev/null; } || echo 'no engine')"
    echo "tools:   $(hyperfine --version), python $(python3 -c 'import platform; print(platform.python_version())')"
    echo
} >"$SUMMARY"
row() { printf '%-58s %14s %12s %s\n' "$1" "$2" "$3" "$4" >>"$SUMMARY"; }
row "measure" "median" "goal" "verdict"

# --- 1: the whole process of a small --plan ----------------------------------------------------
log "1. host_container --plan --offline python minimal single"
"$HC" --plan --offline python minimal single >/dev/null
hf --warmup 3 --runs "$RUNS" --export-json "$WORK/plan_small.json" \
    "$HC --plan --offline python minimal single"
PLAN_SMALL=$(median "$WORK/plan_small.json")
row "1. --plan --offline python minimal single (ms)" "$PLAN_SMALL" "<= 5" "$(verdict "$PLAN_SMALL" '<=' 5)"

# --- 2: compile + plan of generated modes ------------------------------------------------------
log "2. compile + plan of generated modes of 1,000, 10,000 and 20,000 steps"
declare -A PLAN_MS PLAN_CPU RSS_KB
for n in 1000 10000 20000; do
    dir=$WORK/gen$n
    python3 "$HELPER" gen-chain "$dir" "$n" >/dev/null
    cmd="$HC --config-dir $dir --plan --offline --format json python minimal gen"
    $cmd >/dev/null
    hf --warmup 3 --runs "$GEN_RUNS" --export-json "$WORK/gen$n.json" "$cmd"
    PLAN_MS[$n]=$(median "$WORK/gen$n.json")
    PLAN_CPU[$n]=$(python3 "$HELPER" cpu "$WORK/gen$n.json")
    : >"$WORK/rss$n.txt"
    for _ in 1 2 3 4 5; do
        /usr/bin/time -f %M -a -o "$WORK/rss$n.txt" $cmd >/dev/null
    done
    RSS_KB[$n]=$(python3 "$HELPER" stat max "$WORK/rss$n.txt")
done
GEN_RATIO=$(ratio "${PLAN_MS[10000]}" "${PLAN_MS[1000]}")
RSS_MIB=$(div "${RSS_KB[10000]}" 1024)
# What each step beyond 10,000 adds to the peak: (peak at 20k - peak at 10k) / 10,000 steps.
GROWTH_KIB=$(python3 -c "import sys; print(f'{(int(sys.argv[2]) - int(sys.argv[1])) / 10000:.2f}')" \
    "${RSS_KB[10000]}" "${RSS_KB[20000]}")
row "2. plan of 1,000 generated steps, json (ms)" "${PLAN_MS[1000]}" "-" ""
row "2. plan of 10,000 generated steps, json (ms)" "${PLAN_MS[10000]}" "<= 100" "$(verdict "${PLAN_MS[10000]}" '<=' 100)"
row "2. same, CPU user+sys (ms, hyperfine mean)" "${PLAN_CPU[10000]}" "-" ""
row "2. plan of 20,000 generated steps, json (ms)" "${PLAN_MS[20000]}" "-" ""
row "2. same, CPU user+sys (ms, hyperfine mean)" "${PLAN_CPU[20000]}" "-" ""
row "2. 10k / 1k time ratio (linear: <= 10)" "$GEN_RATIO" "<= 10" "$(verdict "$GEN_RATIO" '<=' 10.5)"
row "2. per step at 1k, whole process / 1000 (us)" "$(div "${PLAN_MS[1000]}" 1)" "-" ""
row "2. marginal per step from 1k to 10k (us)" "$(div "$(sub "${PLAN_MS[10000]}" "${PLAN_MS[1000]}")" 9)" "-" ""
row "2. peak RSS, 1,000 steps (MiB)" "$(div "${RSS_KB[1000]}" 1024)" "-" ""
row "2. peak RSS, 10,000 steps (MiB, max of 5)" "$RSS_MIB" "<= 50" "$(verdict "$RSS_MIB" '<=' 50)"
row "2. peak RSS, 20,000 steps (MiB, max of 5)" "$(div "${RSS_KB[20000]}" 1024)" "-" ""
row "2. peak RSS growth per step, 10k -> 20k (KiB)" "$GROWTH_KIB" "<= 2.5" "$(verdict "$GROWTH_KIB" '<=' 2.5)"

# The same 10,000-step graph as a Makefile whose recipes are the plan's argv: what make, the
# make-like baseline, takes to plan it (`make -n` prints every recipe without running it). Two
# shapes of the same graph: `all` naming every step (make's walk stays shallow), and `all`
# needing only the last step (make recurses through the prerequisites, as host_container
# follows needs); GNU Make's time differs some 40x between them.
log "2c. the 10,000-step graph: host_container --plan vs make -n"
python3 "$HELPER" gen-makefile "$WORK/make10000" 10000 every >/dev/null
python3 "$HELPER" gen-makefile "$WORK/make10000last" 10000 last >/dev/null
hf --warmup 1 --runs "$MAKE_RUNS" --export-json "$WORK/make.json" \
    -n plan "$HC --config-dir $WORK/gen10000 --plan --offline --format json python minimal gen" \
    -n make-every "make -n -s -f $WORK/make10000/Makefile" \
    -n make-last "make -n -s -f $WORK/make10000last/Makefile"
SIDE_PLAN=$(median "$WORK/make.json" 1)
SIDE_MAKE=$(median "$WORK/make.json" 2)
SIDE_MAKE_LAST=$(median "$WORK/make.json" 3)
ratio() { python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.3f}')" "$1" "$2"; }
MAKE_RATIO=$(ratio "$SIDE_PLAN" "$SIDE_MAKE")
MAKE_LAST_RATIO=$(ratio "$SIDE_PLAN" "$SIDE_MAKE_LAST")
row "2c. --plan of 10,000 steps, same run as make (ms)" "$SIDE_PLAN" "-" ""
row "2c. make -n, all naming every step (ms)" "$SIDE_MAKE" "-" ""
row "2c. make -n, all needing the last step (ms)" "$SIDE_MAKE_LAST" "-" ""
row "2c. make -n CPU user+sys, every / last (ms, hyperfine mean)" "$(python3 "$HELPER" cpu "$WORK/make.json" | sed -n 2,3p | paste -sd/)" "-" ""
row "2c. ratio --plan / make -n, every" "$MAKE_RATIO" "<= 0.05" "$(verdict "$MAKE_RATIO" '<=' 0.05)"
row "2c. ratio --plan / make -n, last" "$MAKE_LAST_RATIO" "<= 0.05" "$(verdict "$MAKE_LAST_RATIO" '<=' 0.05)"

# Where the time of 10,000 steps goes: parsing and checking alone (--validate), the plan
# rendered as text, and as JSON. Their differences show the cost of each stage.
log "2b. 10,000 steps by stage"
gen10=$WORK/gen10000
hf --warmup 2 --runs "$GEN_RUNS" --export-json "$WORK/stages.json" \
    -n validate "$HC --validate $gen10/config/host_base_gen.yaml" \
    -n text "$HC --config-dir $gen10 --plan --offline --format text python minimal gen" \
    -n json "$HC --config-dir $gen10 --plan --offline --format json python minimal gen"
STAGE_VALIDATE=$(median "$WORK/stages.json" 1)
STAGE_TEXT=$(median "$WORK/stages.json" 2)
STAGE_JSON=$(median "$WORK/stages.json" 3)
row "2b. --validate of the 10,000-step file (ms)" "$STAGE_VALIDATE" "-" "parse + checks"
row "2b. --plan --format text, 10,000 steps (ms)" "$STAGE_TEXT" "-" ""
row "2b. --plan --format json, 10,000 steps (ms)" "$STAGE_JSON" "-" ""
: >"$WORK/rss-validate.txt"
for _ in 1 2 3; do
    /usr/bin/time -f %M -a -o "$WORK/rss-validate.txt" \
        "$HC" --validate "$gen10/config/host_base_gen.yaml" >/dev/null
done
row "2b. peak RSS of that --validate (MiB, max of 3)" \
    "$(div "$(python3 "$HELPER" stat max "$WORK/rss-validate.txt")" 1024)" "-" ""

# --- 3: executor overhead per step -------------------------------------------------------------
log "3. executor: 1,000 no-op steps with a fake docker (true)"
# `type -P`: the program, not the shell builtin.
TRUE_BIN=$(type -P true) || die "no true program on PATH"
mkdir -p "$WORK/fake-true"
ln -s "$TRUE_BIN" "$WORK/fake-true/docker"
check_fake "$WORK/fake-true"
gen1k=$WORK/gen1000
PATH="$WORK/fake-true:$PATH" "$HC" --config-dir "$gen1k" python minimal gen 2>/dev/null ||
    die "the 1,000-step run with a fake docker failed"
PATH="$WORK/fake-true:$PATH" hf --warmup 1 --runs "$EXEC_RUNS" --export-json "$WORK/exec.json" \
    -n run "$HC --config-dir $gen1k python minimal gen" \
    -n spawn-floor "bash -c 'for i in \$(seq 1000); do $TRUE_BIN; done'"
EXEC_MS=$(median "$WORK/exec.json" 1)
FLOOR_MS=$(median "$WORK/exec.json" 2)
PER_STEP=$(div "$EXEC_MS" 1000)
ABOVE=$(div "$(sub "$(sub "$EXEC_MS" "${PLAN_MS[1000]}")" "$FLOOR_MS")" 1000)
row "3. run of 1,000 no-op steps (ms)" "$EXEC_MS" "-" ""
row "3. per step, whole run / 1000 (ms)" "$PER_STEP" "<= 2" "$(verdict "$PER_STEP" '<=' 2)"
row "3. floor: bash loop of 1,000 fork+exec of true, per (ms)" "$(div "$FLOOR_MS" 1000)" "-" ""
row "3. per step above plan and that floor (ms)" "$ABOVE" "-" ""

# --- 4: -j 2 on independent sleeping steps -----------------------------------------------------
log "4. -j 1 vs -j 2: 8 independent steps of a fake docker sleeping 0.5 s"
mkdir -p "$WORK/fake-sleep"
printf '#!/bin/sh\nexec sleep 0.5\n' >"$WORK/fake-sleep/docker"
chmod +x "$WORK/fake-sleep/docker"
check_fake "$WORK/fake-sleep"
python3 "$HELPER" gen-parallel "$WORK/par" 8 >/dev/null
par="$HC --config-dir $WORK/par python minimal par"
PATH="$WORK/fake-sleep:$PATH" hf --warmup 1 --runs "$JOBS_RUNS" --export-json "$WORK/jobs.json" \
    -n j1 "$par -j 1" -n j2 "$par -j 2" -n j8 "$par -j 8"
J1=$(median "$WORK/jobs.json" 1)
J2=$(median "$WORK/jobs.json" 2)
J8=$(median "$WORK/jobs.json" 3)
SPEEDUP=$(ratio "$J1" "$J2")
row "4. -j 1, 8 x 0.5 s (ms; ideal 4000)" "$J1" "-" ""
row "4. -j 2 (ms; ideal 2000)" "$J2" "-" ""
row "4. -j 2 speed-up over -j 1" "$SPEEDUP" ">= 1.8" "$(verdict "$SPEEDUP" '>=' 1.8)"
row "4. -j 8 (ms; ideal 500)" "$J8" "-" ""

# --- 5: single on an initialized instance vs raw docker run ------------------------------------
engine() {
    [ -n "$REAL_DOCKER" ] || { echo "no docker on PATH"; return 1; }
    "$REAL_DOCKER" version --format '{{.Server.Version}}' >/dev/null 2>&1 ||
        { echo "the Docker engine does not answer"; return 1; }
}
if [ -n "${BENCH_SKIP_ENGINE:-}" ]; then
    row "5. single vs docker run" "skipped" "<= 1.10" "BENCH_SKIP_ENGINE is set"
elif ! why=$(engine); then
    row "5. single vs docker run" "skipped" "<= 1.10" "$why"
else
    log "5. single on an initialized instance vs raw docker run"
    if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        log "building $BASE_IMAGE with mmdebstrap"
        command -v mmdebstrap >/dev/null || need_apt mmdebstrap
        mmdebstrap --quiet --variant=apt --include=python3,python3-venv,python3-pip \
            bookworm "$WORK/rootfs.tar" >&2
        docker import "$WORK/rootfs.tar" "$BASE_IMAGE" >/dev/null
        rm -f "$WORK/rootfs.tar"
    fi
    export HOST_CONTAINER_BASE_IMAGE=$BASE_IMAGE
    ENGINE_TOUCHED=1
    "$HC" -x "$INSTANCE" python minimal init >"$WORK/init.log" 2>&1 ||
        { tail -n 30 "$WORK/init.log" >&2; die "init of the bench instance failed"; }

    # The docker calls of one `single`: a wrapper earlier on PATH writes each argv, one
    # argument a line, to a file of its own, named so that they sort in call order.
    mkdir -p "$WORK/count" "$WORK/calls"
    cat >"$WORK/count/docker" <<WRAPPER
#!/bin/sh
printf '%s\n' "\$@" >"$WORK/calls/\$(date +%s%N)"
exec "$REAL_DOCKER" "\$@"
WRAPPER
    chmod +x "$WORK/count/docker"
    check_fake "$WORK/count"
    PATH="$WORK/count:$PATH" "$HC" -x "$INSTANCE" python minimal single python -c pass </dev/null
    shopt -s nullglob
    CALL_FILES=("$WORK"/calls/*)
    shopt -u nullglob
    CALLS=${#CALL_FILES[@]}
    CALL_KINDS=$(for f in "${CALL_FILES[@]}"; do head -n 1 "$f"; done | paste -sd, -)
    PROBE_ARGV=()
    RUN_ARGV=()
    for f in "${CALL_FILES[@]}"; do
        case $(head -n 1 "$f") in
            inspect) mapfile -t PROBE_ARGV <"$f" ;;
            run) mapfile -t RUN_ARGV <"$f" ;;
        esac
    done

    python3 "$HELPER" pairs "$PAIRS" \
        "$HC" -x "$INSTANCE" python minimal single python -c pass -- \
        "$REAL_DOCKER" run --rm "--volume=$PREFIX-data:/virtualenv:ro" "$IMAGE" python -c pass \
        >"$WORK/pairs.json"
    SINGLE_MS=$(python3 "$HELPER" field "$WORK/pairs.json" median_a_ms)
    RAW_MS=$(python3 "$HELPER" field "$WORK/pairs.json" median_b_ms)
    SINGLE_RATIO=$(python3 "$HELPER" field "$WORK/pairs.json" median_ratio)
    row "5. single python -c pass (ms)" "$SINGLE_MS" "-" ""
    row "5. docker run --rm same image python -c pass (ms)" "$RAW_MS" "-" ""
    row "5. median of paired ratios single / docker run ($PAIRS)" "$SINGLE_RATIO" "<= 1.10" "$(verdict "$SINGLE_RATIO" '<=' 1.10)"
    row "5. docker calls of one single" "$CALLS" "<= 2" "$(verdict "$CALLS" '<=' 2) ($CALL_KINDS)"

    # Where the difference goes: the probe call alone, and single against the very docker run
    # argv it executes (labels, --init, --interactive, the second volume) typed by hand.
    if [ ${#PROBE_ARGV[@]} -gt 0 ]; then
        hf --warmup 2 --runs "$PAIRS" -i --export-json "$WORK/probe.json" \
            -n probe "$REAL_DOCKER ${PROBE_ARGV[*]}"
        row "5b. the probe alone: docker ${PROBE_ARGV[0]} of $((${#PROBE_ARGV[@]} - 1)) objects (ms)" "$(median "$WORK/probe.json")" "-" ""
    fi
    if [ ${#RUN_ARGV[@]} -gt 0 ]; then
        python3 "$HELPER" pairs "$PAIRS" \
            "$HC" -x "$INSTANCE" python minimal single python -c pass -- \
            "$REAL_DOCKER" "${RUN_ARGV[@]}" >"$WORK/pairs-exact.json"
        row "5b. single's own docker run argv, by hand (ms)" "$(python3 "$HELPER" field "$WORK/pairs-exact.json" median_b_ms)" "-" ""
        row "5b. median of paired ratios single / that argv" "$(python3 "$HELPER" field "$WORK/pairs-exact.json" median_ratio)" "-" ""
    fi
    purge_engine
fi

# --- 6: single on an engine that cannot see this machine's files vs docker run there ---------
REMOTE_TOOL=$ROOT/../shared/tools/remote-engine
if [ -n "${BENCH_SKIP_ENGINE:-}" ] || [ ! -f "$REMOTE_TOOL" ] || ! engine >/dev/null; then
    row "6. single vs docker run, remote engine" "skipped" "<= 1.10" "no engine or no shared/tools/remote-engine"
else
    log "6. single vs raw docker run on the isolated remote engine"
    ENGINE_TOUCHED=1
    REMOTE_HOST=$(bash "$REMOTE_TOOL" start "$BASE_IMAGE" | tail -n 1)
    DOCKER_HOST=$REMOTE_HOST "$HC" -x "$INSTANCE" python minimal init >"$WORK/init-remote.log" 2>&1 ||
        { tail -n 30 "$WORK/init-remote.log" >&2; die "init on the remote engine failed"; }
    DOCKER_HOST=$REMOTE_HOST python3 "$HELPER" pairs "$PAIRS" \
        "$HC" -x "$INSTANCE" python minimal single python -c pass -- \
        "$REAL_DOCKER" run --rm "--volume=$PREFIX-data:/virtualenv:ro" "$IMAGE" python -c pass \
        >"$WORK/pairs-remote.json"
    row "6. remote: single python -c pass (ms)" "$(python3 "$HELPER" field "$WORK/pairs-remote.json" median_a_ms)" "-" ""
    row "6. remote: docker run --rm same image python -c pass (ms)" "$(python3 "$HELPER" field "$WORK/pairs-remote.json" median_b_ms)" "-" ""
    REMOTE_RATIO=$(python3 "$HELPER" field "$WORK/pairs-remote.json" median_ratio)
    row "6. remote: median of paired ratios ($PAIRS)" "$REMOTE_RATIO" "<= 1.10" "$(verdict "$REMOTE_RATIO" '<=' 1.10)"
    purge_engine
fi

# --- 7: modes at scale (issue 18): a requires chain of 2,000 modes, 4 chained modes of 1,500 --
if [ -z "${BENCH_SKIP_SCALE:-}" ]; then
    log "7. modes at scale: benches/scale.py"
    python3 "$ROOT/benches/scale.py" "$HC" "${BENCH_SCALE_RUNS:-5}" | tee "$WORK/scale.md" >&2
fi

# --- 9: the first image build of init vs a plain docker build (benches/build.sh) -------------
if [ -n "${BENCH_SKIP_ENGINE:-}" ] || ! engine >/dev/null; then
    row "9. init.image vs plain docker build" "skipped" "<= 1.10" "no engine or BENCH_SKIP_ENGINE"
else
    log "9. the first init image step vs a plain docker build (benches/build.sh)"
    HC_BIN=$HC bash "$ROOT/benches/build.sh" >"$WORK/build.txt"
    cat "$WORK/build.txt" >>"$SUMMARY"
fi

log "summary"
cat "$SUMMARY"
