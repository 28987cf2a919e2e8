"""PostgreSQL's cost of a measured region: its CPU and the WAL it wrote.

Shared by the PostgreSQL peers (pgpeer.py) and meant for any harness that
runs work against the same server (Quern's own included), so every figure of
this kind is read the same way:

- CPU: utime + stime from /proc/PID/stat of every PostgreSQL server process
  (the postmaster and all its children, found through /proc: processes whose
  `comm` is `postgres`), plus the postmaster's cutime + cstime, which hold
  the CPU of the backends that exited (the postmaster reaps them). So a
  connection opened and closed inside the region counts too.
- WAL: `pg_current_wal_lsn()` before and after, the difference taken by
  `pg_wal_lsn_diff`. It is server-wide: whatever any database wrote counts.
- Both are server-wide, so each mark also reads every database's committed
  and rolled-back transactions (pg_stat_database), and `figures` tells how
  many ran meanwhile in databases other than the measured one: work that is
  in the figures too (PostgreSQL flushes these counters about once a second).

Order matters for a clean figure: `mark(url, end=False)` reads the LSN and
then the CPU; `mark(url, end=True)` reads the CPU and then the LSN, so the
connection that reads the LSN is outside the CPU window.

Standard library only, plus psycopg (3) when importable; without it the LSN
is read with `psql -At`. As a command:

    python3 pgstat.py mark [--end]               one mark as JSON: {"cpu_s", "lsn", "xacts", "at"}
    python3 pgstat.py diff BEFORE AFTER TASKS [DB]   two marks (JSON text) -> the figures as JSON
    python3 pgstat.py check                      exit 0 when the server answers
    python3 pgstat.py recreate DBNAME            drop (if any) and create a database

The server is `PEERS_PG_URL` (default postgres://root@127.0.0.1:5432), with
the database `test` for the LSN; a URL's own path wins.
"""
import json
import os
import subprocess
import sys
import time
from urllib.parse import urlsplit, urlunsplit

BASE_URL = os.environ.get("PEERS_PG_URL", "postgres://root@127.0.0.1:5432").rstrip("/")
ADMIN_DB = "test"
TICKS = os.sysconf("SC_CLK_TCK")


def url(db=None, base=None):
    """`base` (default PEERS_PG_URL) with its database set to `db` (kept when None)."""
    parts = urlsplit(base or BASE_URL)
    if db is None:
        return urlunsplit(parts)
    return urlunsplit(parts._replace(path="/" + db))


def _admin_url(base=None):
    parts = urlsplit(base or BASE_URL)
    return url(ADMIN_DB, base) if parts.path in ("", "/") else urlunsplit(parts)


# --------------------------------------------------------------------------
# /proc: PostgreSQL's processes and their CPU.
# --------------------------------------------------------------------------

def _read(path):
    with open(path) as f:
        return f.read()


def _stat(pid):
    """(comm, fields after the command name) of /proc/PID/stat."""
    text = _read(f"/proc/{pid}/stat")
    head, _, tail = text.rpartition(")")
    return head.partition("(")[2], tail.split()


def postgres_pids():
    """{pid: is_postmaster} of every PostgreSQL server process on the machine."""
    procs = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                comm, f = _stat(d)
            except (OSError, IndexError):
                continue
            if comm.startswith("postgres"):
                procs[int(d)] = int(f[1])  # ppid
    return {pid: ppid not in procs for pid, ppid in procs.items()}


def postgres_cpu_s():
    """CPU seconds of the PostgreSQL server so far: every live process's
    utime + stime, and the postmasters' cutime + cstime (exited backends)."""
    total = 0
    for pid, postmaster in postgres_pids().items():
        try:
            f = _stat(pid)[1]
        except (OSError, IndexError):
            continue  # exited meanwhile: its time is now in the postmaster's cutime
        total += sum(int(x) for x in (f[11:15] if postmaster else f[11:13]))
    return total / TICKS


# --------------------------------------------------------------------------
# SQL: the WAL position, databases.
# --------------------------------------------------------------------------

def _psycopg():
    try:
        import psycopg
    except ImportError:
        return None
    return psycopg


def _first(cur):
    row = cur.fetchone() if cur.description else None
    return None if row is None or row[0] is None else str(row[0])


def query(sql, db_url=None):
    """The first column of the first row of `sql` (autocommit), as text."""
    target = db_url or _admin_url()
    psycopg = _psycopg()
    if psycopg:
        with psycopg.connect(target, autocommit=True, connect_timeout=5) as c:
            return _first(c.execute(sql))
    out = subprocess.run(["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", target, "-c", sql],
                         check=False, capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise RuntimeError(f"psql: {out.stderr.strip()}")
    lines = out.stdout.splitlines()
    return lines[0] if lines else None


class Conn:
    """One connection kept open for repeated marks (psycopg), or psql per call."""

    def __init__(self, db_url=None):
        self.url = db_url or _admin_url()
        psycopg = _psycopg()
        self.conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5) if psycopg else None

    def value(self, sql):
        if self.conn is None:
            return query(sql, self.url)
        return _first(self.conn.execute(sql))

    def close(self):
        if self.conn is not None:
            self.conn.close()


def reachable(base=None):
    try:
        return query("SELECT 1", _admin_url(base)) == "1"
    except Exception:  # noqa: BLE001 - any failure means "not reachable"
        return False


def server_version(base=None):
    return query("SHOW server_version", _admin_url(base))


def recreate_db(name, base=None):
    """Drops database `name` (ending its sessions) and creates it empty."""
    admin = _admin_url(base)
    ident = '"' + name.replace('"', '""') + '"'
    query(f"DROP DATABASE IF EXISTS {ident} WITH (FORCE)", admin)
    query(f"CREATE DATABASE {ident}", admin)


def drop_db(name, base=None):
    ident = '"' + name.replace('"', '""') + '"'
    query(f"DROP DATABASE IF EXISTS {ident} WITH (FORCE)", _admin_url(base))


# --------------------------------------------------------------------------
# Marks and the figures between two of them.
# --------------------------------------------------------------------------

XACTS_SQL = ("SELECT coalesce(json_object_agg(datname, xact_commit + xact_rollback), '{}')::text "
             "FROM pg_stat_database WHERE datname IS NOT NULL")


def mark(conn=None, end=False):
    """{"cpu_s", "lsn", "xacts", "at"}: PostgreSQL's CPU so far, the WAL
    position and each database's transactions so far.
    `conn`: a Conn (or a URL, or None for PEERS_PG_URL)."""
    def sql():
        value = conn.value if isinstance(conn, Conn) else (lambda q: query(q, conn))
        return value("SELECT pg_current_wal_lsn()"), json.loads(value(XACTS_SQL))

    if end:
        cpu, at = postgres_cpu_s(), time.monotonic()
        position, xacts = sql()
        return {"cpu_s": cpu, "lsn": position, "xacts": xacts, "at": at}
    position, xacts = sql()
    return {"cpu_s": postgres_cpu_s(), "lsn": position, "xacts": xacts, "at": time.monotonic()}


def lsn_bytes(lsn):
    """A pg_lsn text ('16/B374D848') as a byte position (what pg_wal_lsn_diff subtracts)."""
    hi, _, lo = lsn.partition("/")
    return (int(hi, 16) << 32) + int(lo, 16)


def figures(before, after, tasks, conn=None, db=None):
    """PostgreSQL's CPU and WAL between two marks, in all and per task:
    {"pg_cpu_s", "wal_bytes", "pg_cpu_us_per_task", "wal_bytes_per_task",
    "other_xacts"}, the last the transactions of databases other than `db`
    meanwhile (the marks' own few, in the admin database, included).
    The WAL difference is pg_wal_lsn_diff's when a connection is at hand."""
    cpu = max(0.0, after["cpu_s"] - before["cpu_s"])
    sql = f"SELECT pg_wal_lsn_diff('{after['lsn']}', '{before['lsn']}')"
    try:
        wal = int(float(conn.value(sql) if isinstance(conn, Conn) else query(sql, conn)))
    except Exception:  # noqa: BLE001 - the same number, computed here
        wal = lsn_bytes(after["lsn"]) - lsn_bytes(before["lsn"])
    per = tasks if tasks else None
    b, a = before.get("xacts", {}), after.get("xacts", {})
    other = sum(max(0, n - b.get(name, 0)) for name, n in a.items() if name != db)
    return {
        "pg_cpu_s": round(cpu, 3),
        "wal_bytes": wal,
        "pg_cpu_us_per_task": round(cpu / per * 1e6, 1) if per else None,
        "wal_bytes_per_task": round(wal / per, 1) if per else None,
        "other_xacts": other,
    }


# Fewer transactions than this elsewhere meanwhile are the marks' own.
OTHER_XACTS_NOTED = 10


def note(fig):
    """The figures as a row note's words."""
    if fig.get("pg_cpu_us_per_task") is None:
        return ""
    text = (f"PostgreSQL {fig['pg_cpu_us_per_task']:,.0f} µs CPU/task, "
            f"WAL {fig['wal_bytes_per_task']:,.0f} B/task")
    if fig.get("other_xacts", 0) >= OTHER_XACTS_NOTED:
        text += f" (other databases ran {fig['other_xacts']:,} transactions meanwhile: their work counts too)"
    return text


def main(argv):
    if argv[:1] == ["mark"]:
        print(json.dumps(mark(end="--end" in argv[1:])))
    elif argv[:1] == ["diff"] and len(argv) in (4, 5):
        db = argv[4] if len(argv) == 5 else None
        print(json.dumps(figures(json.loads(argv[1]), json.loads(argv[2]), int(argv[3]), db=db)))
    elif argv[:1] == ["check"]:
        return 0 if reachable() else 1
    elif argv[:1] == ["recreate"] and len(argv) == 2:
        recreate_db(argv[1])
    else:
        print(__doc__.split("As a command:")[1].split("The server")[0].strip("\n"), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
