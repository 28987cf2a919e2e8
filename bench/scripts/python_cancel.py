#!/usr/bin/env python3
"""How fast a cancel ends a running task in `python -m quern worker`, for
each kind of handler: a coroutine (the task is cancelled on the worker's
event loop), sync code that checks `current_task().cancelled` every 10 ms,
and sync code that never checks (interrupted in its thread). Leases are 30 s,
so heartbeats come every 10 s and only the worker's watch for stops counts.

Timed from the cancel request until a client waiting on the task
(`GET /v1/tasks/{id}?wait=`) sees `cancelled`: the worker heard of it, stopped
the handler and reported it. Starts its own `quern server`; needs the SDK
installed (pip install -e sdk/python).

    python3 bench/scripts/python_cancel.py [$CARGO_TARGET_DIR/release/quern] [SAMPLES]
"""
import os, statistics, subprocess, sys, time

from sdk_setup import server_and_app

binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/quern"
N = int(sys.argv[2]) if len(sys.argv) > 2 else 50

APP = """
import asyncio, time, quern
app = quern.App()

@app.task(name="wait.async")
async def wait_async():
    await asyncio.sleep(600)

@app.task(name="wait.checks")
def wait_checks():
    ctx = quern.current_task()
    while not ctx.cancelled:
        time.sleep(0.01)
    raise quern.Cancelled("asked to stop")

@app.task(name="wait.spins")
def wait_spins():
    n = 0
    while True:
        n += 1
"""

server, url, mod_dir = server_and_app(binary, "cancel_app", APP)
os.environ["QUERN_URL"] = url
import quern  # noqa: E402

env = {**os.environ, "PYTHONPATH": mod_dir}
worker = subprocess.Popen([sys.executable, "-m", "quern", "worker", "cancel_app:app", "--lease", "30"],
                          env=env, stderr=subprocess.DEVNULL)
q = quern.Quern(url)
try:
    for name in ("wait.async", "wait.checks", "wait.spins"):
        took = []
        for _ in range(N):
            task = q.submit(name)
            deadline = time.monotonic() + 10
            while q.get(task.id).status != "running":
                if time.monotonic() > deadline:
                    sys.exit(f"{name}: task {task.id} did not start within 10 s")
                time.sleep(0.002)
            time.sleep(0.02)
            t0 = time.perf_counter()
            q.cancel(task.id)
            done = q.wait(task.id, timeout=10)
            took.append(time.perf_counter() - t0)
            if done.status != "cancelled":
                sys.exit(f"{name}: task {task.id} ended {done.status}")
        slow = [f"#{i}: {t * 1000:.0f} ms" for i, t in enumerate(took) if t > 1]
        if slow:
            print(f"  {name}: slow samples: {slow}")
        took.sort()
        p50 = statistics.median(took) * 1000
        p99 = took[min(len(took) - 1, int(len(took) * 0.99))] * 1000
        print(f"cancel→cancelled {name:12} {N} samples: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
finally:
    worker.terminate(); worker.wait()
    server.terminate(); server.wait()
