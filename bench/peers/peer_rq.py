"""RQ, as `rq` (the default Worker, which forks a work-horse per job) and as
`rq-simple` (SimpleWorker, which runs jobs in the worker process).

Workers: two `rq worker` processes. Bulk enqueue: `Queue.enqueue_many`, one
Redis pipeline per 1,000 jobs. Results kept (default result_ttl 500 s).
"""
import sys

import common

SYSTEM = "rq"
BATCH_VARIANT = f"enqueue_many {common.BATCH} (pipeline)"
WORKERS = {"rq": "2 x rq worker (default Worker: forks a work-horse per job)",
           "rq-simple": "2 x rq worker -w rq.worker.SimpleWorker (no fork)"}
LATENCY_NOTE = "Job.latest_result(timeout) (blocking stream read)"


def noop():
    return None


# By name: the client runs this file as __main__, the workers import peer_rq.
NOOP = "peer_rq.noop"


def worker_cmds(system):
    extra = ["-w", "rq.worker.SimpleWorker"] if system == "rq-simple" else []
    return [["rq", "worker", "-u", common.REDIS_URL, "-q", "-n", f"peer-{i}", *extra, "default"] for i in range(2)]


def e2e_tasks(system, n):
    """The forking worker does ~100 jobs/s here: a quarter of N keeps the run short."""
    return n // 4 if system == "rq" else n


def versions():
    import redis
    import rq

    return {"rq": rq.__version__, "redis-py": redis.__version__}


def connect():
    from rq import Queue

    return Queue("default", connection=common.redis())


def submit(q):
    return q.enqueue(NOOP)


def submit_batch(q, count):
    from rq import Queue

    return q.enqueue_many([Queue.prepare_data(NOOP) for _ in range(count)])


def wait_all(q, handles, deadline):
    r, key = q.connection, q.finished_job_registry.key
    common.wait_count(lambda: r.zcard(key), len(handles), deadline)
    if failed := r.zcard(q.failed_job_registry.key):
        raise RuntimeError(f"{failed} jobs failed")


def roundtrip(q, timeout):
    result = q.enqueue(NOOP).latest_result(timeout=timeout)
    if result is None or result.type != result.Type.SUCCESSFUL:
        raise RuntimeError(f"no successful result: {result}")


if __name__ == "__main__":
    common.main(sys.modules[__name__])
