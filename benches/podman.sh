#!/usr/bin/env bash
# `single python -c pass` on rootful Podman against the same `podman run` typed by hand (the
# argv `--plan` prints for the job step), in alternating pairs; prints the medians and the median
# of the paired ratios. Needs root, podman and the Docker base image BASE (default
# hc-test-base:bookworm), which it loads into Podman when Podman lacks it.
#
#     bash benches/podman.sh [PAIRS]
set -euo pipefail
cd "$(dirname "$0")/.."
pairs=${1:-15}
base=${BASE:-hc-test-base:bookworm}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build --release --quiet
cp target/release/host_container "$work/host_container"
printf '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1000:1000"]\n' >"$work/containers.conf"
export CONTAINERS_CONF="$work/containers.conf" HOME="$work" HOST_CONTAINER_CACHE_DIR="$work/cache"
export HOST_CONTAINER_DOCKER_PATH=podman HOST_CONTAINER_BASE_IMAGE="$base"
loaded=no
if ! podman image exists "$base"; then docker save "$base" | podman load --quiet >/dev/null; loaded=yes; fi
hc() { "$work/host_container" -x bench-podman "$@"; }
hc python minimal init >/dev/null 2>&1
# The job's argv exactly as planned, as NUL-separated words (a fixed run id names the container).
hc --run-id bench --format json --plan python minimal single python -c pass |
  python3 -c 'import json,sys; p=json.load(sys.stdin); s=[s for s in p["steps"] if s["id"]=="single.job"][0]; sys.stdout.write("\0".join(s["argv"]))' >"$work/argv"
mapfile -d '' by_hand <"$work/argv"
now() { date +%s%N; }
: >"$work/times"
for _ in $(seq "$pairs"); do
  t0=$(now); hc python minimal single python -c pass; t1=$(now)
  "${by_hand[@]}" </dev/null; t2=$(now)
  echo "$(( (t1 - t0) / 1000 )) $(( (t2 - t1) / 1000 ))" >>"$work/times"
done
python3 - "$work/times" <<'EOF'
import statistics, sys
rows = [tuple(map(int, line.split())) for line in open(sys.argv[1])]
tool = statistics.median(r[0] for r in rows) / 1000
hand = statistics.median(r[1] for r in rows) / 1000
ratio = statistics.median(r[0] / r[1] for r in rows)
print(f"pairs: {len(rows)}")
print(f"host_container single (median): {tool:.0f} ms")
print(f"podman run by hand (median):    {hand:.0f} ms")
print(f"median of paired ratios:        {ratio:.3f}")
EOF
hc --yes python minimal purge >/dev/null 2>&1
if [ "$loaded" = yes ]; then podman image rm "$base" >/dev/null; fi
