#!/usr/bin/env python3
"""Schedules at scale: the idle cost of 10,000 enabled schedules, and how fast
a burst of 10,000 schedules due in the same second all fire.

Starts its own `quern server` (the binary given, default
target/release/quern) on a fresh data directory, applies the schedules through
POST /v1/schedules/apply, and reads the server's CPU time from /proc. Standard
library only.

    cargo build --release -p quern
    python3 bench/scripts/schedules.py [$CARGO_TARGET_DIR/release/quern] [IDLE_SECONDS]
"""
import http.client, json, os, subprocess, sys, tempfile, time

binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/quern"
idle_s = float(sys.argv[2]) if len(sys.argv) > 2 else 30.0
N = 10_000
tick = os.sysconf("SC_CLK_TCK")

data = tempfile.mkdtemp(prefix="quern-sched-bench-")
server = subprocess.Popen(
    [binary, "server", "--listen", "127.0.0.1:0", "--data", data, "--max-body-bytes", str(64 << 20)],
    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
line = server.stdout.readline().strip()
host, port = line.removeprefix("listening on http://").rsplit(":", 1)
c = http.client.HTTPConnection(host, int(port))

def call(method, path, body=None):
    c.request(method, path, body)
    r = c.getresponse()
    out = json.loads(r.read() or b"null")
    if r.status >= 300:
        raise SystemExit(f"{method} {path}: {r.status} {out}")
    return out

def cpu_seconds():
    with open(f"/proc/{server.pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick

def rss_mb():
    with open(f"/proc/{server.pid}/status") as f:
        for l in f:
            if l.startswith("VmRSS:"):
                return int(l.split()[1]) / 1024

def queued(queue):
    for q in call("GET", "/v1/queues"):
        if q["name"] == queue:
            return sum(q["counts"].values())
    return 0

try:
    # 1. Idle: 10,000 enabled daily schedules, none due during the measurement.
    hour = (time.gmtime().tm_hour + 12) % 24
    daily = {"schedules": [{"name": f"daily-{i}", "cron": f"{i % 60} {hour} * * *", "task": {"name": "report", "queue": "idle"}}
                           for i in range(N)]}
    t = time.time(); r = call("POST", "/v1/schedules/apply", json.dumps(daily)); apply_s = time.time() - t
    assert len(r["created"]) == N, r
    time.sleep(2)
    cpu0, t0 = cpu_seconds(), time.time()
    time.sleep(idle_s)
    cpu = (cpu_seconds() - cpu0) / (time.time() - t0)
    print(f"apply {N} schedules: {apply_s:.2f}s; idle with {N} enabled schedules: {cpu * 100:.3f}% of one core "
          f"over {idle_s:.0f}s; server RSS {rss_mb():.1f} MB")

    # 2. Burst: 10,000 one-time schedules due in the same second.
    due = int(time.time()) + 4
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(due))
    burst = {"schedules": [{"name": f"burst-{i}", "at": at, "task": {"name": "n", "queue": "burst"}} for i in range(N)]}
    call("POST", "/v1/schedules/apply", json.dumps(burst))
    while time.time() < due:
        time.sleep(0.005)
    first = None
    while True:
        n = queued("burst")
        if n and first is None:
            first = time.time() - due
        if n >= N:
            break
        time.sleep(0.01)
    done = time.time() - due
    print(f"burst of {N} schedules due at {at}: first task after {first * 1000:.0f} ms, all {N} after {done * 1000:.0f} ms")
finally:
    server.terminate()
    server.wait()
