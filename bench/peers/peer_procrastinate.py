"""procrastinate (asyncio, psycopg 3), from its own venv (.venv-pg).

Workers: two `procrastinate worker` processes, concurrency 8 (default 1),
LISTEN/NOTIFY on (the default), fetch_job_polling_interval 0.1 s (default
5 s), a pool of 10 connections (8 + 2), logging at WARNING (the default INFO
logs every job). Bulk enqueue: `batch_defer_async` of 1,000 jobs (one SQL
call). Jobs are kept once done (delete_jobs: never, the default), so the e2e
counts them; the client polls its `procrastinate_jobs` rows.
"""
import asyncio
import logging
import os
import sys
import time

import psycopg
from procrastinate import App, PsycopgConnector

import common
import pgpeer
import pgstat

SYSTEM = "procrastinate"
DB = "quern_peer_procrastinate"
DB_URL = os.environ.get("PEERS_PG_DB_URL") or pgstat.url(DB)
BATCH_VARIANT = f"batch_defer_async {common.BATCH}"
WORKERS = "2 procs x concurrency 8 (default 1), LISTEN/NOTIFY, fetch_job_polling_interval 0.1 s (default 5 s)"
LATENCY_NOTE = "defer_async, then the client polls the job's status every 1 ms"
CONCURRENCY = 8
TASK = "noop"
JOBS = "procrastinate_jobs"

# The workers' app (procrastinate --app=peer_procrastinate.app worker ...). The
# workers import this module, as procrastinate advises; the orchestrator and the
# clients run it as a script, which it would warn about for every App.
logging.getLogger("procrastinate.blueprints").setLevel(logging.ERROR)
app = App(connector=PsycopgConnector(conninfo=DB_URL, min_size=2, max_size=CONCURRENCY + 2))


@app.task(name=TASK)
async def noop():
    return None


def worker_cmds(system):
    cmd = ["procrastinate", "--app=peer_procrastinate.app", "--log-level=warning", "worker",
           f"--concurrency={CONCURRENCY}", "--fetch-job-polling-interval=0.1", "--listen-notify"]
    return [cmd for _ in range(2)]


def versions():
    from importlib.metadata import version

    return {"procrastinate": version("procrastinate"), "psycopg": version("psycopg"),
            "psycopg-pool": version("psycopg-pool")}


async def setup():
    async with app.open_async():
        await app.schema_manager.apply_schema_async()


# --------------------------------------------------------------------------
# Client: an App of its own (the task by name), and a connection for polls.
# --------------------------------------------------------------------------

class Ctx:
    def __init__(self, pool_size):
        self.app = App(connector=PsycopgConnector(conninfo=DB_URL, min_size=pool_size, max_size=pool_size))
        self.deferrer = self.app.configure_task(TASK)
        self.db = None
        self.others = []

    async def open(self):
        await self.app.open_async()  # opens the pool's min_size connections
        return self


async def connect():
    ctx = await Ctx(1).open()
    ctx.db = await psycopg.AsyncConnection.connect(DB_URL, autocommit=True)
    return ctx


async def connect_many(ctx, k):
    """e2e-single's submitters: one pool of k open connections, each submitter
    holding one of them per call."""
    many = await Ctx(k).open()
    ctx.others.append(many)
    return [many] * k


async def close(ctx):
    for c in [ctx, *ctx.others]:
        await c.app.close_async()
    await ctx.db.close()


async def submit(ctx):
    return await ctx.deferrer.defer_async()


async def submit_batch(ctx, count):
    return await ctx.deferrer.batch_defer_async(*({} for _ in range(count)))


async def _value(ctx, sql, params=()):
    cur = await ctx.db.execute(sql, params)
    return (await cur.fetchone())[0]


async def wait_all(ctx, handles, deadline):
    """Until no job is waiting or running: a cheap EXISTS every 2 ms."""
    sql = f"SELECT EXISTS (SELECT 1 FROM {JOBS} WHERE status IN ('todo', 'doing'))"
    while await _value(ctx, sql):
        if time.monotonic() > deadline:
            raise TimeoutError(f"jobs unfinished after {common.e2e_timeout():.0f} s")
        await asyncio.sleep(0.002)


async def verify(ctx, handles):
    done = await _value(ctx, f"SELECT count(*) FROM {JOBS} WHERE id = ANY(%s) AND status = 'succeeded'",
                        (list(handles),))
    if done != len(handles):
        raise RuntimeError(f"{len(handles) - done} of {len(handles)} jobs not succeeded")
    return f"verified: all {done} succeeded"


async def roundtrip(ctx, timeout):
    job = await ctx.deferrer.defer_async()
    deadline = time.monotonic() + timeout
    while await _value(ctx, f"SELECT status <> 'succeeded' FROM {JOBS} WHERE id = %s", (job,)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job} not done after {timeout} s")
        await asyncio.sleep(0.001)


if __name__ == "__main__":
    pgpeer.main(sys.modules[__name__])
