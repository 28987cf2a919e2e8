"""Shared by the peer benchmarks (see README.md): the scenarios, timing,
worker processes, and CPU / memory figures read from /proc.

A peer module (peer_celery.py, ...) defines what differs: SYSTEM, BATCH_VARIANT,
WORKERS (a note), worker_cmds(system), versions() and, for a Python client,
connect / submit / submit_batch / wait_all / roundtrip (plain or async), and
optionally connect_many (e2e-single's submitters) and verify (after e2e).
The PostgreSQL peers' orchestration (pgpeer.py) builds on this one.
`python peer_X.py` orchestrates one peer; `python peer_X.py client SCENARIO N`
is one measurement in a fresh process, so no client state carries over.

Protocol of a client process: it prints START just before the measured
region, END just after, then `RESULT {json}`. The orchestrator reads the CPU
of Redis, the workers and the client at START and END. Only the standard
library and redis-py are used here, so every venv (and node, via the same
protocol) can share it.
"""
import argparse
import asyncio
import inspect
import json
import math
import os
import queue
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
HOST = "127.0.0.1"
PORT = int(os.environ.get("PEERS_REDIS_PORT", "6379"))
DB = int(os.environ.get("PEERS_REDIS_DB", "5"))
REDIS_URL = f"redis://{HOST}:{PORT}/{DB}"
BATCH = 1000
WARMUP = 20
SUBMITTERS = 16  # concurrent single submitters in e2e-single, as in Quern's
TICKS = os.sysconf("SC_CLK_TCK")
# Every process we start carries this, so run.sh can end leftovers by id.
RUN_TOKEN = os.environ.setdefault("QUERN_PEERS_RUN", f"{os.getpid()}-{time.time_ns()}")


def e2e_timeout():
    return float(os.environ.get("PEERS_E2E_TIMEOUT", "300"))


def redis():
    import redis as redis_py

    return redis_py.Redis(host=HOST, port=PORT, db=DB)


def flushdb():
    redis().flushdb()


def pct_us(seconds, p):
    """Nearest-rank percentile (0 < p <= 1) of samples in seconds, in µs."""
    if not seconds:
        return None
    s = sorted(seconds)
    return s[min(len(s), max(1, math.ceil(p * len(s)))) - 1] * 1e6


# --------------------------------------------------------------------------
# Client side: one scenario per process.
# --------------------------------------------------------------------------

async def call(f, *args):
    """Calls a peer primitive, plain or async."""
    r = f(*args)
    return await r if inspect.isawaitable(r) else r


async def client(peer, scenario, n):
    ctx = await call(peer.connect)
    lats = []
    note = ""
    if scenario == "submit-single":
        await call(peer.submit, ctx)  # warm: connection, scripts
        print("START", flush=True)
        t0 = time.perf_counter()
        for _ in range(n):
            t = time.perf_counter()
            await call(peer.submit, ctx)
            lats.append(time.perf_counter() - t)
    elif scenario == "submit-batch":
        await call(peer.submit, ctx)
        print("START", flush=True)
        t0 = time.perf_counter()
        for s in range(0, n, BATCH):
            t = time.perf_counter()
            await call(peer.submit_batch, ctx, min(BATCH, n - s))
            lats.append(time.perf_counter() - t)
        note = "latency per request"
    elif scenario == "e2e":
        print("START", flush=True)
        t0 = time.perf_counter()
        handles = []
        for s in range(0, n, BATCH):
            handles += await call(peer.submit_batch, ctx, min(BATCH, n - s))
        enqueued = time.perf_counter() - t0
        await call(peer.wait_all, ctx, handles, time.monotonic() + e2e_timeout())
        note = f"enqueue took {enqueued:.2f} s"
    elif scenario == "e2e-single":  # SUBMITTERS concurrent submitters, one task per call
        if hasattr(peer, "connect_many"):
            subs = await call(peer.connect_many, ctx, SUBMITTERS)
        else:
            subs = [await call(peer.connect) for _ in range(SUBMITTERS)]
        handles, budget = [], [n]

        async def submitter(c):
            while budget[0] > 0:
                budget[0] -= 1
                handles.append(await call(peer.submit, c))

        print("START", flush=True)
        t0 = time.perf_counter()
        await asyncio.gather(*(submitter(c) for c in subs))
        enqueued = time.perf_counter() - t0
        await call(peer.wait_all, ctx, handles, time.monotonic() + e2e_timeout())
        note = f"enqueue took {enqueued:.2f} s"
    elif scenario == "warmup":  # waits for the workers to come up
        print("START", flush=True)
        t0 = time.perf_counter()
        for _ in range(WARMUP):
            await call(peer.roundtrip, ctx, 60)
    elif scenario == "latency":
        print("START", flush=True)
        t0 = time.perf_counter()
        for _ in range(n):
            t = time.perf_counter()
            await call(peer.roundtrip, ctx, 10)
            lats.append(time.perf_counter() - t)
    else:
        raise SystemExit(f"unknown scenario {scenario}")
    seconds = time.perf_counter() - t0
    print("END", flush=True)
    if scenario in ("e2e", "e2e-single") and hasattr(peer, "verify"):  # outside the clock
        note += "; " + await call(peer.verify, ctx, handles)
    if hasattr(peer, "close"):
        await call(peer.close, ctx)
    res = {"tasks": n, "seconds": seconds, "p50_us": pct_us(lats, 0.50), "p99_us": pct_us(lats, 0.99), "note": note}
    print("RESULT " + json.dumps(res), flush=True)


def wait_keys(r, keys, deadline):
    """Until every key exists: pipelined EXISTS over the oldest pending ones."""
    pending = list(keys)
    while pending:
        head, rest = pending[:BATCH], pending[BATCH:]
        pipe = r.pipeline(transaction=False)
        for k in head:
            pipe.exists(k)
        left = [k for k, there in zip(head, pipe.execute()) if not there]
        pending = left + rest
        if left:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(pending)} of {len(keys)} tasks unfinished")
            time.sleep(0.002)


def wait_count(count, n, deadline):
    """Until count() >= n."""
    while (c := count()) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{n - c} of {n} tasks unfinished")
        time.sleep(0.002)


# --------------------------------------------------------------------------
# /proc: process trees, CPU, memory.
# --------------------------------------------------------------------------

def _stat(path):
    """Fields of a /proc stat line after the command name (field 3 is [0])."""
    with open(path) as f:
        return f.read().rsplit(")", 1)[1].split()


def tree(roots):
    """The root pids and all their descendants that are alive."""
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                children.setdefault(int(_stat(f"/proc/{d}/stat")[1]), []).append(int(d))
            except (OSError, IndexError):
                pass
    out, todo = [], [p for p in roots if os.path.exists(f"/proc/{p}")]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def cpu_s(pid, reaped=False):
    """User + system seconds of a process (and of its reaped children).
    `pid` may also be "PID/task/TID" for one thread."""
    try:
        f = _stat(f"/proc/{pid}/stat")
    except (OSError, IndexError):
        return 0.0
    fields = f[11:15] if reaped else f[11:13]
    return sum(int(x) for x in fields) / TICKS


def machine_busy_s():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (sum(v) - v[3] - v[4]) / TICKS


def rss_mb(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
        except (OSError, StopIteration):
            pass
    return total / 1024


def threads(pids):
    out = {}
    for p in pids:
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/comm") as f:
                    out[int(t)] = (f.read().strip(), cpu_s(f"{p}/task/{t}"))
        except OSError:
            pass
    return out


def redis_pid():
    try:
        return int(redis().info("server")["process_id"])
    except Exception:  # noqa: BLE001 - a figure we can do without
        return None


class Snapshot:
    """CPU of the 'server' side (redis-server + workers), the client and the machine."""

    def __init__(self, redis_pid, worker_roots, client_pid):
        workers = tree(worker_roots)
        self.at = time.monotonic()
        self.server = sum(cpu_s(p, reaped=p in worker_roots) for p in workers)
        if redis_pid:
            self.server += cpu_s(redis_pid)
        self.client = cpu_s(client_pid)
        self.machine = machine_busy_s()
        self.threads = threads(workers + ([redis_pid] if redis_pid else []))

    def into(self, later, row):
        row["server_cpu_s"] = round(later.server - self.server, 3)
        row["client_cpu_s"] = round(later.client - self.client, 3)
        row["other_cpu_s"] = round(max(0.0, later.machine - self.machine - row["server_cpu_s"] - row["client_cpu_s"]), 3)
        wall = later.at - self.at
        busy = [(name, t - self.threads.get(tid, (name, 0.0))[1]) for tid, (name, t) in later.threads.items()]
        if busy and wall > 0:
            name, t = max(busy, key=lambda b: b[1])
            row["busiest_thread"] = [name, round(t / wall, 3)]


# --------------------------------------------------------------------------
# Orchestrator: one peer, every scenario, workers started and stopped.
# --------------------------------------------------------------------------

def row(system, scenario, variant, note=""):
    """A row with exactly the fields of bench/src/report.rs `Row`."""
    return {"system": system, "scenario": scenario, "variant": variant, "tasks": 0, "seconds": 0.0,
            "tasks_per_s": None, "p50_us": None, "p99_us": None, "rss_mb": None, "peak_rss_mb": None,
            "server_cpu_s": None, "client_cpu_s": None, "other_cpu_s": None, "busiest_thread": None,
            "note": note}


class Workers:
    """Worker processes, each in a session of its own; stopped by process group."""

    def __init__(self, cmds, log_prefix):
        self.procs = []
        # The venv running us holds the worker commands (celery, rq, arq, dramatiq).
        path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
        env = dict(os.environ, PYTHONPATH=HERE, PATH=path)
        for i, cmd in enumerate(cmds):
            with open(f"{log_prefix}-worker{i}.log", "wb") as log:
                self.procs.append(subprocess.Popen(cmd, cwd=HERE, env=env, stdout=log, stderr=subprocess.STDOUT,
                                                   start_new_session=True))

    @property
    def pids(self):
        return [p.pid for p in self.procs]

    def check(self):
        dead = [p.args[0] for p in self.procs if p.poll() is not None]
        if dead:
            raise RuntimeError(f"worker exited: {dead}")

    def stop(self):
        for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            for p in self.procs:
                try:
                    os.killpg(p.pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
            end = time.monotonic() + grace
            for p in self.procs:
                try:
                    p.wait(max(0.1, end - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass


class Orchestrator:
    def __init__(self, peer, system, rows_file, log_prefix):
        self.peer, self.system, self.rows_file, self.log_prefix = peer, system, rows_file, log_prefix
        self.workers = None
        self.redis_pid = redis_pid()

    # What keeps the peer's jobs: its rows meet Quern's rows on the same kind of store.
    STORE = "redis"

    def emit(self, obj):
        if "row" in obj:
            obj["row"].setdefault("store", self.STORE)
        with open(self.rows_file, "a") as f:
            f.write(json.dumps(obj) + "\n")
        print(json.dumps(obj), flush=True)

    def snapshot(self, mark, roots, client_pid):
        """CPU figures at the client's START or END."""
        return Snapshot(self.redis_pid, roots, client_pid)

    def client_cmd(self, scenario, n):
        base = getattr(self.peer, "CLIENT", [sys.executable, self.peer.__file__])
        return [*base, "client", scenario, str(n)]

    def measure(self, scenario, n, timeout, sample_rss=False):
        """Runs one client process; returns its result with CPU (and RSS) figures."""
        cmd = self.client_cmd(scenario, n)
        env = dict(os.environ, PYTHONPATH=HERE)
        with open(f"{self.log_prefix}-{scenario}.log", "wb") as err:
            child = subprocess.Popen(cmd, cwd=HERE, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
        lines = queue.Queue()

        def read():
            for line in child.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=read, daemon=True).start()
        roots = self.workers.pids if self.workers else []
        marks, result, error, peak, sampled = {}, None, None, 0.0, 0.0
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{scenario} took over {timeout:.0f} s")
                try:
                    line = lines.get(timeout=min(left, 0.1))
                except queue.Empty:
                    line = ""
                if line is None:
                    break
                if line.startswith(("START", "END")):
                    marks[line.strip()] = self.snapshot(line.strip(), roots, child.pid)
                elif line.startswith("RESULT "):
                    result = json.loads(line[7:])
                elif line.startswith("ERROR "):
                    error = line[6:].strip()
                if sample_rss and "START" in marks and "END" not in marks and time.monotonic() - sampled > 0.2:
                    peak, sampled = max(peak, rss_mb(tree(roots))), time.monotonic()
                if self.workers and "END" not in marks:
                    self.workers.check()
            if child.wait(10) != 0 or result is None:
                raise RuntimeError(f"client exited {child.returncode}: {error or 'see its log'}")
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        if "START" in marks and "END" in marks:
            result["cpu"] = (marks["START"], marks["END"])
        if sample_rss:
            result["rss_mb"] = rss_mb(tree(roots))
            result["peak_rss_mb"] = max(peak, result["rss_mb"])
        return result

    def scenario(self, scenario, variant, n, timeout, sample_rss=False, note=""):
        r = row(self.system, scenario, variant)
        try:
            m = self.measure(scenario, n, timeout, sample_rss)
            r["tasks"], r["seconds"] = m["tasks"], round(m["seconds"], 4)
            if scenario != "latency" and m["seconds"] > 0:
                r["tasks_per_s"] = round(m["tasks"] / m["seconds"], 1)
            r["p50_us"], r["p99_us"] = (round(m[k], 1) if m[k] is not None else None for k in ("p50_us", "p99_us"))
            for k in ("rss_mb", "peak_rss_mb"):
                r[k] = round(m[k], 1) if k in m else None
            r["note"] = "; ".join(x for x in (note, m["note"]) if x)
            if "cpu" in m:
                m["cpu"][0].into(m["cpu"][1], r)
            if sample_rss and self.redis_pid:
                r["note"] += f"; redis-server RSS {rss_mb([self.redis_pid]):.0f} MB"
        except Exception as e:  # noqa: BLE001 - a failed scenario becomes a row
            r["note"] = f"FAILED: {e}"
        self.emit({"row": r})
        return r

    def run(self, n, lat_n):
        peer, system = self.peer, self.system
        self.emit({"versions": peer.versions()})
        long = e2e_timeout() + 60
        flushdb()
        self.scenario("submit-single", "1 conn", n, long, note="no workers running")
        flushdb()
        self.scenario("submit-batch", peer.BATCH_VARIANT, n, long, note="no workers running")
        flushdb()
        workers_note = peer.WORKERS if isinstance(peer.WORKERS, str) else peer.WORKERS[system]
        try:
            self.workers = Workers(peer.worker_cmds(system), self.log_prefix)
            try:  # the first round trips wait for the workers to come up
                self.measure("warmup", WARMUP, 120)
            except Exception as e:  # noqa: BLE001
                for s, v in (("latency", "submit→result"), ("e2e", "2 worker processes")):
                    self.emit({"row": row(system, s, v, f"FAILED: workers did not answer: {e}")})
                return
            lat_note = getattr(peer, "LATENCY_NOTE", "")
            self.scenario("latency", "submit→result", lat_n, 20 * lat_n + 60, note=lat_note)
            e2e_n = peer.e2e_tasks(system, n) if hasattr(peer, "e2e_tasks") else n
            note = workers_note + (f"; N={e2e_n} (not {n}): slow" if e2e_n != n else "")
            self.scenario("e2e", "2 worker processes", e2e_n, long, sample_rss=True,
                          note=f"{note}; enqueued by {peer.BATCH_VARIANT} while the workers run")
        finally:
            if self.workers:
                self.workers.stop()
            try:
                flushdb()
            except Exception:  # noqa: BLE001
                pass


def main(peer):
    """`peer_X.py client SCENARIO N` measures; `peer_X.py [options]` orchestrates."""
    if len(sys.argv) >= 4 and sys.argv[1] == "client":
        try:
            asyncio.run(client(peer, sys.argv[2], int(sys.argv[3])))
        except Exception as e:
            print(f"ERROR {type(e).__name__}: {e}", flush=True)
            raise
        return
    ap = argparse.ArgumentParser(description=f"{peer.SYSTEM} peer benchmark")
    ap.add_argument("--system", default=peer.SYSTEM)
    ap.add_argument("--n", type=int, default=20000, help="tasks for submit-* and e2e")
    ap.add_argument("--lat-n", type=int, default=200, help="latency samples")
    ap.add_argument("--rows", default=os.path.join(HERE, ".run", "rows.jsonl"), help="JSON lines to append to")
    args = ap.parse_args()
    os.makedirs(os.path.dirname(os.path.abspath(args.rows)), exist_ok=True)
    # `timeout` sends SIGTERM: unwind so that the workers are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    log_prefix = os.path.join(os.path.dirname(os.path.abspath(args.rows)), args.system)
    Orchestrator(peer, args.system, args.rows, log_prefix).run(args.n, args.lat_n)


# --------------------------------------------------------------------------
# Merge: every peer's JSON lines into the one file run.sh writes.
# --------------------------------------------------------------------------

SCENARIOS = (("submit-single", "1 conn"), ("submit-batch", None), ("latency", "submit→result"),
             ("e2e", "2 worker processes"))
# The PostgreSQL peers (pgpeer.py) also run e2e-single, and their rows have two
# more fields.
PG_SYSTEMS = ("graphile", "pgboss", "procrastinate")
PG_SCENARIOS = SCENARIOS[:3] + (("e2e", f"bulk {BATCH}, 2 worker processes"),
                                ("e2e-single", f"{SUBMITTERS} submitters, 2 worker processes × 8"))
PG_FIELDS = ("pg_cpu_us_per_task", "wal_bytes_per_task")


def merge(out, run_dir, statuses, versions):
    """statuses: {system: reason it stopped early, or ""}; versions: extra {name: version}."""
    rows, found = [], dict(versions)
    for system, why in statuses.items():
        mine = []
        try:
            with open(os.path.join(run_dir, f"{system}.jsonl")) as f:
                for line in f:
                    obj = json.loads(line)
                    found.update(obj.get("versions", {}))
                    if "row" in obj:
                        mine.append(obj["row"])
        except (OSError, ValueError):
            pass
        # What a failed peer did not measure still shows.
        for scenario, variant in (PG_SCENARIOS if system in PG_SYSTEMS else SCENARIOS):
            if not any(r["scenario"] == scenario for r in mine):
                log = os.path.join(run_dir, f"{system}.out")
                note = f"FAILED: {why or 'not measured'}" + (f"; see {log}" if os.path.exists(log) else "")
                mine.append(row(system, scenario, variant or "-", note))
        if system in PG_SYSTEMS:
            for r in mine:
                for k in PG_FIELDS:
                    r.setdefault(k, None)
        rows += mine
    with open(out, "w") as f:
        json.dump({"rows": rows, "versions": found}, f, indent=1, ensure_ascii=False)
    return rows, found


def show(rows, versions):
    """A short table on the terminal: the lead's harness prints the full one."""
    def fmt(v, digits=0):
        return "-" if v is None else f"{v:,.{digits}f}"

    head = ("system", "scenario", "variant", "tasks", "tasks/s", "p50 µs", "p99 µs", "RSS MB", "note")
    cells = [head] + [(r["system"], r["scenario"], r["variant"], fmt(r["tasks"]), fmt(r["tasks_per_s"]),
                       fmt(r["p50_us"]), fmt(r["p99_us"]), fmt(r["rss_mb"], 1), r["note"][:90]) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head) - 1)]
    for c in cells:
        print("  ".join(x.ljust(w) if i < 3 else x.rjust(w) for i, (x, w) in enumerate(zip(c, widths))), c[-1])
    print("versions:", ", ".join(f"{k} {v}" for k, v in versions.items()))


if __name__ == "__main__":  # python3 common.py merge OUT RUN_DIR system=reason... --version name=ver...
    if sys.argv[1:2] != ["merge"]:
        raise SystemExit("usage: common.py merge OUT RUN_DIR SYSTEM=REASON... [--version NAME=VERSION]...")
    statuses, extra, args = {}, {}, sys.argv[4:]
    while args:
        if args[0] == "--version":
            k, _, v = args[1].partition("=")
            extra[k], args = v, args[2:]
        else:
            k, _, v = args[0].partition("=")
            statuses[k], args = v, args[1:]
    show(*merge(sys.argv[2], sys.argv[3], statuses, extra))
