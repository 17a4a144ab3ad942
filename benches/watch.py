#!/usr/bin/env python3
"""Time from saving a file to the job's first output line: `--watch` against typing the command
again (issue 22). Called by benches/watch.sh, which sets HOME, the cache, the base image and, for
the remote engine, DOCKER_HOST.

    watch.py HOST_CONTAINER PROJECT_DIR INSTANCE PAIRS LABEL

Each pair (A B, then B A, ...): A starts `--watch single python app.py`, waits for its
"watching" line, saves app.py and times until the job's first line; B saves app.py and times
`single python app.py` from its start until the job's first line. The watcher is stopped
(SIGINT) after each A so that B's save does not run it. Prints one JSON object: the medians and
the median of the per-pair ratios A / B.
"""
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time

HC, PROJECT, INSTANCE, PAIRS, LABEL = sys.argv[1:6]
PAIRS = int(PAIRS)
SINGLE = [HC, "-x", INSTANCE, "python", "minimal", "single", "python", "app.py"]
counter = 0


def save():
    """A new app.py whose first line says which save it is."""
    global counter
    counter += 1
    with open(os.path.join(PROJECT, "app.py"), "w") as f:
        f.write(f"print('first line {counter}', flush=True)\n")
    return f"first line {counter}"


def lines_of(process, sink):
    """Every line of the process's stdout and stderr, with the time it arrived."""
    def read(stream):
        for raw in iter(stream.readline, b""):
            sink.append((time.monotonic(), raw.decode(errors="replace")))
    threads = [threading.Thread(target=read, args=(s,), daemon=True)
               for s in (process.stdout, process.stderr)]
    for t in threads:
        t.start()
    return threads


def wait_line(sink, text, after=0, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for at, line in sink[after:]:
            if text in line:
                return at
        time.sleep(0.001)
    raise SystemExit(f"no {text!r} within {timeout} s:\n" + "".join(l for _, l in sink))


def watched():
    sink = []
    process = subprocess.Popen(SINGLE[:1] + ["--watch"] + SINGLE[1:], cwd=PROJECT,
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    lines_of(process, sink)
    wait_line(sink, "==> watch: watching")
    seen = len(sink)
    start = time.monotonic()
    first = save()
    took = wait_line(sink, first, after=seen) - start
    process.send_signal(signal.SIGINT)
    process.wait(timeout=60)
    return took


def again():
    first = save()
    start = time.monotonic()
    sink = []
    process = subprocess.Popen(SINGLE, cwd=PROJECT, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    threads = lines_of(process, sink)
    took = wait_line(sink, first) - start
    process.wait(timeout=60)
    for t in threads:
        t.join()
    return took


# One of each first: init, the image's cache, the page cache.
again()
watched()
a, b = [], []
for pair in range(PAIRS):
    if pair % 2 == 0:
        a.append(watched())
        b.append(again())
    else:
        b.append(again())
        a.append(watched())
ms = lambda xs: round(statistics.median(xs) * 1000)
print(json.dumps({
    "engine": LABEL,
    "pairs": PAIRS,
    "watch_ms": ms(a), "watch_min_max_ms": [ms([min(a)]), ms([max(a)])],
    "again_ms": ms(b), "again_min_max_ms": [ms([min(b)]), ms([max(b)])],
    "median_ratio": round(statistics.median(x / y for x, y in zip(a, b)), 2),
}))
