#!/usr/bin/env python3
"""The Python SDK's speed: `.delay()` calls per second from one thread on one
keep-alive connection, and no-op tasks per second through
`python -m quern worker --concurrency 16`, end to end.

Starts its own `quern server`; needs the SDK installed (pip install -e sdk/python).

    python3 bench/scripts/python_sdk.py [$CARGO_TARGET_DIR/release/quern] [TASKS]
"""
import os, subprocess, sys, time

from sdk_setup import server_and_app

binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/quern"
N = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000

server, url, mod_dir = server_and_app(
    binary, "bench_app", "import quern\napp = quern.App()\n\n@app.task(name='noop')\ndef noop(i):\n    return None\n")
os.environ["QUERN_URL"] = url
sys.path.insert(0, mod_dir)
import quern  # noqa: E402
import bench_app  # noqa: E402

try:
    t = time.perf_counter()
    results = [bench_app.noop.delay(i) for i in range(N)]
    d = time.perf_counter() - t
    print(f".delay(): {N} calls from one thread: {d:.2f} s, {N / d:,.0f} calls/s")
    env = {**os.environ, "PYTHONPATH": mod_dir}
    t = time.perf_counter()
    worker = subprocess.Popen([sys.executable, "-m", "quern", "worker", "bench_app:app", "--concurrency", "16"],
                              env=env, stderr=subprocess.DEVNULL)
    q = quern.Quern(url)
    while True:
        counts = {c.name: c.counts for c in q.queues()}.get("default", {})
        if counts.get("succeeded", 0) >= N:
            break
        time.sleep(0.05)
    d = time.perf_counter() - t
    print(f"worker --concurrency 16: {N} no-op tasks: {d:.2f} s, {N / d:,.0f} tasks/s (from worker start)")
    worker.terminate(); worker.wait()
finally:
    server.terminate(); server.wait()
