#!/usr/bin/env python3
"""Workflow release cost: 10,000 independent tasks against 10,000-task workflows.

Runs against a server at 127.0.0.1:PORT (start a fresh one: `quern server
--listen 127.0.0.1:PORT --data $(mktemp -d)`), with one client leasing and
completing in batches of 1,000. Prints each shape's wall time and its ratio to
the independent tasks. Standard library only.

    python3 bench/scripts/workflows.py PORT
"""
import http.client, json, time, sys
port = int(sys.argv[1]) if len(sys.argv) > 1 else 7311
c = http.client.HTTPConnection("127.0.0.1", port)
def post(path, body):
    c.request("POST", path, json.dumps(body), {"content-type": "application/json"})
    r = c.getresponse(); return json.loads(r.read())
def drain():
    n = 0
    while True:
        ts = post("/v1/lease", {"worker": "w", "max": 1000})["tasks"]
        if not ts: return n
        post("/v1/complete", {"worker": "w", "results": [{"task": t["id"], "token": t["lease"]["token"], "outcome": "succeeded"} for t in ts]})
        n += len(ts)
N = 10000
t = time.time(); post("/v1/tasks/batch", {"tasks": [{"name": "n"} for _ in range(N)]}); n = drain(); ind = time.time() - t
print(f"independent {n} tasks: {ind:.3f}s")
t = time.time(); post("/v1/workflows", {"name": "g", "group": [{"name": "n"} for _ in range(N - 1)], "then": {"name": "n"}}); n = drain(); grp = time.time() - t
print(f"workflow group+then {n} tasks: {grp:.3f}s ({grp/ind:.2f}x)")
t = time.time(); post("/v1/workflows", {"name": "l", "tasks": [{"key": f"k{i}", "name": "n", "depends_on": ([{"key": f"k{i-100}"}] if i >= 100 else [])} for i in range(N)]}); n = drain(); lay = time.time() - t
print(f"workflow 100 layers x 100 {n} tasks: {lay:.3f}s ({lay/ind:.2f}x)")
t = time.time(); post("/v1/workflows", {"name": "c", "chain": [{"name": "n"} for _ in range(N)]}); n = drain(); ch = time.time() - t
print(f"workflow chain {n} tasks: {ch:.3f}s ({ch/ind:.2f}x; {ch/N*1e6:.0f} us per step, one lease+complete round trip each)")
