#!/usr/bin/env bash
# Why `show_plan` (src/lib.rs) forgets the plan instead of dropping it before the process exits:
# the cost of freeing a very large plan, measured. Builds the release binary of this tree as it
# is ("forget") and of a copy whose only change is `std::mem::forget(plan)` → `drop(plan)`
# ("drop"), then times `--plan --offline --format json` of the generated N-step mode
# (`benches/bench.py gen-chain`, as in BENCHMARKS.md §2) with both, in interleaved pairs (A B,
# B A, …, after one warm-up each): medians of wall time and of CPU time (user + system, from the
# child's rusage). Results: BENCHMARKS.md §15.
#
#   bash benches/forget.sh
#
# Knobs: BENCH_FORGET_PAIRS (default 21), BENCH_FORGET_STEPS (default "10000 20000").
# Needs python3 and git (the copy is of the tracked files as they are in the work tree). Leaves
# target/release/host_container as the binary of this tree.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
PAIRS=${BENCH_FORGET_PAIRS:-21}
STEPS=${BENCH_FORGET_STEPS:-"10000 20000"}

log() { printf '\n== %s\n' "$*" >&2; }
die() { printf 'benches/forget.sh: %s\n' "$*" >&2; exit 1; }
command -v python3 >/dev/null || die "python3 is needed"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/hc-forget.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

TARGET_DIR=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')

log "cargo build --release (forget: this tree)"
cargo build --release --quiet
cp "$TARGET_DIR/release/host_container" "$WORK/forget"

log "cargo build --release (drop: a copy with drop(plan))"
mkdir "$WORK/tree"
git ls-files -z | xargs -0 tar -cf - | tar -xf - -C "$WORK/tree"
grep -q 'std::mem::forget(plan);' "$WORK/tree/src/lib.rs" ||
    die "src/lib.rs has no std::mem::forget(plan); any more: nothing to compare"
sed -i 's/std::mem::forget(plan);/drop(plan);/' "$WORK/tree/src/lib.rs"
# The same target directory: the dependencies are built once; the copy's crate is its own unit.
(cd "$WORK/tree" && CARGO_TARGET_DIR=$TARGET_DIR cargo build --release --quiet)
cp "$TARGET_DIR/release/host_container" "$WORK/drop"
# The copy's build replaced target/release/host_container: put this tree's back.
cp "$WORK/forget" "$TARGET_DIR/release/host_container"
cmp -s "$WORK/forget" "$WORK/drop" && die "the two binaries are the same"

# --- private environment -----------------------------------------------------------------------
export HOME=$WORK/home
export HOST_CONTAINER_CACHE_DIR=$WORK/cache
for name in $(env | sed -n 's/^\(HOST_CONTAINER_[A-Za-z0-9_]*\)=.*/\1/p'); do
    [ "$name" = HOST_CONTAINER_CACHE_DIR ] || unset "$name"
done
unset UPGRADE XDG_CACHE_HOME
mkdir -p "$HOME"

for n in $STEPS; do
    log "$n steps, $PAIRS pairs"
    python3 "$ROOT/benches/bench.py" gen-chain "$WORK/gen$n" "$n" >/dev/null
    python3 - "$PAIRS" "$WORK/forget" "$WORK/drop" "$WORK/gen$n" "$n" <<'EOF'
import os, resource, statistics, subprocess, sys, time

pairs, forget, drop, layer, steps = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
args = ["--config-dir", layer, "--plan", "--offline", "--format", "json", "python", "minimal", "gen"]

def once(binary):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([binary, *args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.stderr.write(done.stderr.decode(errors="replace"))
        raise SystemExit(f"{binary} failed with exit code {done.returncode}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall * 1000, cpu * 1000

once(forget)
once(drop)
times = {forget: [], drop: []}
for i in range(pairs):
    order = (forget, drop) if i % 2 == 0 else (drop, forget)
    for binary in order:
        times[binary].append(once(binary))

def medians(binary):
    walls, cpus = zip(*times[binary])
    return statistics.median(walls), statistics.median(cpus)

(fw, fc), (dw, dc) = medians(forget), medians(drop)
print(f"steps={steps} pairs={pairs}")
print(f"  forget: wall {fw:8.1f} ms  cpu {fc:8.1f} ms")
print(f"  drop:   wall {dw:8.1f} ms  cpu {dc:8.1f} ms")
print(f"  drop - forget: wall {dw - fw:+.1f} ms ({(dw - fw) / fw * 100:+.1f} %), "
      f"cpu {dc - fc:+.1f} ms ({(dc - fc) / fc * 100:+.1f} %)")
EOF
done
