"""arq (asyncio). Runs from its own venv (.venv-arq): arq 0.28 needs
redis-py < 6, Celery's kombu 5.7 needs >= 6.4.

Workers: two `arq peer_arq.WorkerSettings` processes, max_jobs=16 each, worker
poll_delay 0.01 s (the default 0.5 s sleeps between polls of the queue and
sets both throughput and latency), logging at WARNING. arq has no bulk enqueue; the bulk variant
runs 1,000 `enqueue_job` calls concurrently (asyncio.gather over its pool).
The client waits for results with job.result(poll_delay=0.001).
"""
import asyncio
import sys

from arq import create_pool
from arq.connections import RedisSettings

import common

SYSTEM = "arq"
BATCH_VARIANT = f"gather {common.BATCH} (no bulk API)"
WORKERS = "2 procs x max_jobs=16, poll_delay=0.01 s (default 0.5 s)"
LATENCY_NOTE = "job.result(poll_delay=0.001)"
SETTINGS = RedisSettings(host=common.HOST, port=common.PORT, database=common.DB)


async def noop(ctx):
    return None


class WorkerSettings:
    functions = [noop]
    redis_settings = SETTINGS
    max_jobs = 16
    poll_delay = 0.01
    log_results = False


# arq logs two lines per job at its default INFO level; the other peers' workers
# run at WARNING (or log nothing per job), so arq does too.
LOG_CONFIG = {"version": 1, "disable_existing_loggers": False, "loggers": {"arq": {"level": "WARNING"}}}


def worker_cmds(system):
    return [["arq", "--custom-log-dict", "peer_arq.LOG_CONFIG", "peer_arq.WorkerSettings"] for _ in range(2)]


def versions():
    from importlib.metadata import version

    return {"arq": version("arq"), "redis-py (arq venv)": version("redis")}


async def connect():
    return await create_pool(SETTINGS)


async def close(pool):
    await pool.aclose()


async def submit(pool):
    return await pool.enqueue_job("noop")


async def submit_batch(pool, count):
    return await asyncio.gather(*(pool.enqueue_job("noop") for _ in range(count)))


def wait_all(pool, handles, deadline):
    common.wait_keys(common.redis(), [f"arq:result:{j.job_id}" for j in handles], deadline)


async def roundtrip(pool, timeout):
    job = await pool.enqueue_job("noop")
    await job.result(timeout=timeout, poll_delay=0.001)


if __name__ == "__main__":
    common.main(sys.modules[__name__])
