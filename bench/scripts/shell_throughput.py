#!/usr/bin/env python3
"""Shell-task throughput of one `quern worker`: N `true` tasks at concurrency C.

Starts its own server (fresh data directory, port 7412) and one worker, reads
the worker's idle RSS, submits N `{"command": ["true"]}` tasks in batches of
1,000 and waits until all have ended. Prints the rate from the first submit to
the last completion; the CPU time per task of the worker and of the server
(utime + stime from /proc) and of the tasks' own processes (the worker's
cutime + cstime); and the worker's RSS idle, at its peak and after the run.
Standard library only.

    python3 bench/scripts/shell_throughput.py path/to/quern N C [worker flags...]
"""
import json, os, subprocess, sys, tempfile, time, urllib.request

quern, n, c = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
extra = sys.argv[4:]
url = "http://127.0.0.1:7412"
data = tempfile.mkdtemp()
tck = os.sysconf("SC_CLK_TCK")


def call(method, path, body=None):
    payload = None if body is None else json.dumps(body).encode()
    r = urllib.request.Request(url + path, method=method, data=payload, headers={"content-type": "application/json"})
    with urllib.request.urlopen(r) as answer:
        return json.loads(answer.read())


def cpu_s(pid, children=False):
    """utime + stime of `pid`, or of its reaped children (cutime + cstime)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    at = 13 if children else 11
    return (int(fields[at]) + int(fields[at + 1])) / tck


def rss_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])
    return 0


def ended(queues):
    return sum(v for q in queues for k, v in q["counts"].items() if k not in ("queued", "running", "scheduled"))


server = subprocess.Popen([quern, "server", "--listen", url[7:], "--data", data],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    for _ in range(100):
        try:
            call("GET", "/v1/health")
            break
        except OSError:
            time.sleep(0.1)
    worker = subprocess.Popen([quern, "worker", "--server", url, "--concurrency", str(c), *extra],
                              env=dict(os.environ, QUERN_LOG="warn", QUERN_WORKER_SHELL="true"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.5)
    idle = rss_kb(worker.pid)
    server0, worker0, tasks0 = cpu_s(server.pid), cpu_s(worker.pid), cpu_s(worker.pid, children=True)
    load = open("/proc/loadavg").read().split()[0]
    start = time.monotonic()
    for left in range(n, 0, -1000):
        call("POST", "/v1/tasks/batch", {"tasks": [{"name": "shell", "input": {"command": ["true"]}}] * min(left, 1000)})
    peak = 0
    while True:
        peak = max(peak, rss_kb(worker.pid))
        queues = call("GET", "/v1/queues")
        if ended(queues) >= n:
            break
        time.sleep(0.05)
    secs = time.monotonic() - start
    server1, worker1, tasks1 = cpu_s(server.pid), cpu_s(worker.pid), cpu_s(worker.pid, children=True)
    time.sleep(1.0)
    succeeded = sum(q["counts"].get("succeeded", 0) for q in queues)
    print(f"n={n} c={c} {' '.join(extra)} load={load} rate={n / secs:.0f}/s secs={secs:.2f} "
          f"worker_cpu_us_per_task={(worker1 - worker0) * 1e6 / n:.0f} "
          f"server_cpu_us_per_task={(server1 - server0) * 1e6 / n:.0f} "
          f"task_process_cpu_us={(tasks1 - tasks0) * 1e6 / n:.0f} "
          f"rss_kb idle={idle} peak={peak} after={rss_kb(worker.pid)} succeeded={succeeded}")
    worker.terminate()
    worker.wait()
finally:
    server.terminate()
    server.wait()
    subprocess.run(["rm", "-rf", data])
