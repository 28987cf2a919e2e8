"""pg-boss (Node, run with node22): node-pg/pgboss.js is the client and the
worker; this file only tells pgpeer.py how to run them.

Workers: two `pgboss.js worker` processes, each one work() with batchSize 8
(default 1), burstWhenBatchFull, useListenNotify with the queue's notify on,
and both poll intervals at their minimum, 0.5 s. Bulk enqueue: insert() of
1,000 jobs (one SQL call). Completed jobs are kept (7 days by default), so the
e2e counts them.
"""
import os
import sys

import pgpeer

SYSTEM = "pgboss"
DB = "quern_peer_pgboss"
BATCH_VARIANT = "insert 1000"
WORKERS = "2 node procs x batchSize 8 (default 1), burstWhenBatchFull, LISTEN/NOTIFY, polls 0.5 s"
LATENCY_NOTE = "send, then the client polls the job's state every 1 ms"
CLIENT = [pgpeer.NODE22, os.path.join(pgpeer.NODE_PG, "pgboss.js")]


def worker_cmds(system):
    return [[*CLIENT, "worker"] for _ in range(2)]


def versions():
    return pgpeer.node_versions("pg-boss")


if __name__ == "__main__":
    pgpeer.main(sys.modules[__name__])
