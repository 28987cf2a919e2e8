"""Celery with the Redis broker and the Redis result backend.

Workers: one `celery worker --pool=prefork --concurrency=2` (a parent and two
pool processes), defaults otherwise (prefetch multiplier 4, acks early).
Bulk enqueue: Celery has no pipelined bulk API; `group(...).apply_async()`
publishes the 1,000 messages one by one over one producer.
"""
import sys

from celery import Celery, group

import common

SYSTEM = "celery"
BATCH_VARIANT = f"group {common.BATCH}"
WORKERS = "prefork, --concurrency=2 (1 parent + 2 pool processes), redis result backend"
LATENCY_NOTE = "AsyncResult.get (pub/sub)"

app = Celery("peer_celery", broker=common.REDIS_URL, backend=common.REDIS_URL)
app.conf.update(broker_connection_retry_on_startup=True, worker_hijack_root_logger=False)


@app.task(name="noop")
def noop():
    return None


def worker_cmds(system):
    return [["celery", "-A", "peer_celery", "worker", "--pool=prefork", "--concurrency=2", "--loglevel=WARNING"]]


def versions():
    import celery
    import kombu
    import redis

    return {"celery": celery.__version__, "kombu": kombu.__version__, "redis-py": redis.__version__}


def connect():
    return None


def submit(_):
    return noop.delay()


def submit_batch(_, count):
    return group(noop.s() for _ in range(count)).apply_async().results


def wait_all(_, handles, deadline):
    common.wait_keys(common.redis(), [f"celery-task-meta-{h.id}" for h in handles], deadline)


def roundtrip(_, timeout):
    return noop.delay().get(timeout=timeout)


if __name__ == "__main__":
    common.main(sys.modules[__name__])
