#!/usr/bin/env python3
"""Planning at scale in modes (issue 18): `--plan --offline --format json` of generated layers.

    python3 benches/scale.py BINARY [RUNS]

Shapes (each mode requires the one before it; every step is a `volume create` of a template):
  chain-400      400 modes of 1 step
  chain-2000     2,000 modes of 1 step (about 100 KB of files)
  wide-4x1500    4 modes of 1,500 independent steps

Each is planned RUNS times (default 5) with a private HOME and cache; the median wall time and
CPU time and the largest peak RSS are printed, with the plan's step and need counts. The
process is timed alone (os.wait4 gives its own rusage), output to /dev/null; the counts come
from one more run, after the timed ones.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def write_modes(root, modes, steps):
    config = os.path.join(root, "config")
    os.makedirs(config, exist_ok=True)
    for m in range(modes):
        lines = [f"requires: [m{m - 1}]"] if m else []
        lines.append("steps:")
        for s in range(steps):
            lines.append(f"  s{s}:")
            lines.append(f'    docker: [volume, create, "{{{{ names.prefix }}}}-m{m}-s{s}"]')
        with open(os.path.join(config, f"host_base_m{m}.yaml"), "w", encoding="utf-8") as out:
            out.write("\n".join(lines) + "\n")


def plan_once(binary, root, last, env):
    argv = [binary, "--plan", "--offline", "--format", "json", "--config-dir", root]
    argv += ["python", "minimal", f"m{last}"]
    started = time.monotonic()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.monotonic() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{argv}: exit {child.returncode}: {child.stderr.read()[:2000]!r}")
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def counts(binary, root, last, env):
    argv = [binary, "--plan", "--offline", "--format", "json", "--config-dir", root]
    argv += ["python", "minimal", f"m{last}"]
    plan = json.loads(subprocess.run(argv, capture_output=True, check=True, env=env).stdout)
    steps = plan["steps"]
    return len(steps), sum(len(step["needs"]) for step in steps)


def main(argv):
    if not argv:
        raise SystemExit(__doc__)
    binary = os.path.abspath(argv[0])
    runs = int(argv[1]) if len(argv) > 1 else 5
    shapes = [("chain-400", 400, 1), ("chain-2000", 2000, 1), ("wide-4x1500", 4, 1500)]
    with tempfile.TemporaryDirectory(prefix="hc-scale-") as work:
        env = dict(os.environ, HOME=work, HOST_CONTAINER_CACHE_DIR=os.path.join(work, "cache"))
        env.pop("UPGRADE", None)
        print("| shape | steps | needs | wall (median) | CPU (median) | peak RSS |")
        print("|---|---|---|---|---|---|")
        for name, modes, steps in shapes:
            root = os.path.join(work, name)
            write_modes(root, modes, steps)
            # Timed first: a child forked from this process, once it has read a plan of 100 MB,
            # starts with this process's pages and reports them as its own peak RSS.
            results = [plan_once(binary, root, modes - 1, env) for _ in range(runs)]
            planned, needs = counts(binary, root, modes - 1, env)
            wall = statistics.median(r[0] for r in results)
            cpu = statistics.median(r[1] for r in results)
            rss = max(r[2] for r in results) / 1024
            print(f"| {name} | {planned} | {needs} | {wall:.3f} s | {cpu:.3f} s | {rss:.0f} MiB |")


if __name__ == "__main__":
    main(sys.argv[1:])
