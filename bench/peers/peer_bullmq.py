"""BullMQ (Node): node/bullmq.js is the client and the worker; this file only
tells common.py how to run them.

Workers: two `node bullmq.js worker` processes, concurrency 16 each (BullMQ's
default is 1). Bulk enqueue: `Queue.addBulk` of 1,000 jobs (one MULTI).
Completed jobs are kept (BullMQ's default), so the e2e counts them.
"""
import json
import os
import subprocess
import sys

import common

SYSTEM = "bullmq"
BATCH_VARIANT = f"addBulk {common.BATCH}"
WORKERS = "2 node procs x concurrency 16 (default 1)"
LATENCY_NOTE = "job.waitUntilFinished(QueueEvents)"
NODE = os.path.join(common.HERE, "node")
CLIENT = ["node", os.path.join(NODE, "bullmq.js")]


def worker_cmds(system):
    return [[*CLIENT, "worker"] for _ in range(2)]


def versions():
    def version(package):
        with open(os.path.join(NODE, "node_modules", package, "package.json")) as f:
            return json.load(f)["version"]

    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    return {"bullmq": version("bullmq"), "ioredis": version("ioredis"), "node": node}


if __name__ == "__main__":
    common.main(sys.modules[__name__])
