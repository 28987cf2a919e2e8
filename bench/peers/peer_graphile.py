"""graphile-worker (Node, run with node22): node-pg/graphile.js is the client
and the worker; this file only tells pgpeer.py how to run them.

Workers: two `graphile.js worker` processes, run() with concurrency 8 (default
1) and pollInterval 100 ms (default 2 s; new jobs also wake them by
LISTEN/NOTIFY). Bulk enqueue: WorkerUtils.addJobs of 1,000 jobs (one SQL call).
Completed jobs are deleted (graphile-worker's way), failed ones stay: e2e is
done when the jobs table is empty.
"""
import os
import sys

import pgpeer

SYSTEM = "graphile"
DB = "quern_peer_graphile"
BATCH_VARIANT = "addJobs 1000"
WORKERS = "2 node procs x concurrency 8 (default 1), pollInterval 100 ms"
LATENCY_NOTE = "addJob, then the client polls the jobs table every 1 ms"
CLIENT = [pgpeer.NODE22, os.path.join(pgpeer.NODE_PG, "graphile.js")]


def worker_cmds(system):
    return [[*CLIENT, "worker"] for _ in range(2)]


def versions():
    return pgpeer.node_versions("graphile-worker")


if __name__ == "__main__":
    pgpeer.main(sys.modules[__name__])
