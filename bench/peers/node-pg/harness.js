// The client side and the command line shared by the PostgreSQL peers in Node
// (graphile.js, pgboss.js), in the protocol of ../common.py: one scenario
// per process, START / END around the measured region, then RESULT {json}.
//
//   node PEER.js setup                   the peer's schema and queue, in an empty database
//   node PEER.js worker                  a worker process (8 jobs at once)
//   node PEER.js client SCENARIO N       one measurement
//
// A peer gives an adapter:
//   setup(), worker() -> stop function,
//   connect(poolSize) -> ctx, close(ctx), submit(ctx) -> id, submitBatch(ctx, count) -> ids,
//   and the SQL its completion is read with: PENDING (true while any job is
//   unfinished: cheap, polled every 2 ms), verify(ids) -> [sql, params] (a count of
//   the ids that are NOT done, 0 when all are), and done(id) -> [sql, params]
//   (true once that job is done: polled every 1 ms by a round trip).
import pg from 'pg';

export const DB_URL = process.env.PEERS_PG_DB_URL;
export const BATCH = 1000;
export const WARMUP = 20;
export const SUBMITTERS = 16;
export const CONCURRENCY = 8;
const E2E_TIMEOUT_S = Number(process.env.PEERS_E2E_TIMEOUT || 300);

const now = () => Number(process.hrtime.bigint()) / 1e9; // seconds
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Nearest-rank percentile (0 < p <= 1) of samples in seconds, in µs.
function pctUs(samples, p) {
  if (samples.length === 0) return null;
  const s = [...samples].sort((a, b) => a - b);
  return s[Math.min(s.length, Math.max(1, Math.ceil(p * s.length))) - 1] * 1e6;
}

// Polls `sql` on the dedicated connection `db` every `ms` until `ok(row)`.
async function pollUntil(db, [sql, params], ok, ms, deadline, what) {
  for (;;) {
    const { rows } = await db.query(sql, params);
    if (ok(rows[0])) return;
    if (now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(ms);
  }
}

async function client(peer, scenario, n) {
  const ctx = await peer.connect(scenario === 'e2e-single' ? SUBMITTERS : 2);
  const db = new pg.Client({ connectionString: DB_URL }); // completion polls
  await db.connect();
  const lats = [];
  let note = '';
  let t0;
  let ids = [];
  const start = () => {
    console.log('START');
    t0 = now();
  };
  const roundtrip = async (timeoutS) => {
    const id = await peer.submit(ctx);
    await pollUntil(db, peer.done(id), (r) => r.done, 1, now() + timeoutS, `job ${id}`);
  };
  const waitAll = async () => {
    const enqueued = now() - t0;
    await pollUntil(db, [peer.PENDING, []], (r) => !r.pending, 2, now() + E2E_TIMEOUT_S, 'the jobs');
    return `enqueue took ${enqueued.toFixed(2)} s`;
  };
  if (scenario === 'submit-single') {
    await peer.submit(ctx); // warm: connection, prepared statements
    start();
    for (let i = 0; i < n; i++) {
      const t = now();
      await peer.submit(ctx);
      lats.push(now() - t);
    }
  } else if (scenario === 'submit-batch') {
    await peer.submit(ctx);
    start();
    for (let s = 0; s < n; s += BATCH) {
      const t = now();
      await peer.submitBatch(ctx, Math.min(BATCH, n - s));
      lats.push(now() - t);
    }
    note = 'latency per request';
  } else if (scenario === 'e2e') {
    start();
    for (let s = 0; s < n; s += BATCH) ids.push(...(await peer.submitBatch(ctx, Math.min(BATCH, n - s))));
    note = await waitAll();
  } else if (scenario === 'e2e-single') {
    await peer.warm(ctx, SUBMITTERS); // every submitter's connection open before the clock
    let budget = n;
    const submitter = async () => {
      while (budget > 0) {
        budget--;
        ids.push(await peer.submit(ctx));
      }
    };
    start();
    await Promise.all(Array.from({ length: SUBMITTERS }, submitter));
    note = await waitAll();
  } else if (scenario === 'warmup') {
    start();
    for (let i = 0; i < WARMUP; i++) await roundtrip(60);
  } else if (scenario === 'latency') {
    start();
    for (let i = 0; i < n; i++) {
      const t = now();
      await roundtrip(10);
      lats.push(now() - t);
    }
  } else {
    throw new Error(`unknown scenario ${scenario}`);
  }
  const seconds = now() - t0;
  console.log('END');
  if (scenario === 'e2e' || scenario === 'e2e-single') {
    // Outside the clock: every job the client got an id for is done.
    if (ids.length !== n) throw new Error(`${ids.length} ids for ${n} jobs`);
    const { rows } = await db.query(...peer.verify(ids));
    const left = Number(rows[0].left);
    if (left !== 0) throw new Error(`${left} of ${n} jobs not done`);
    note += `; verified: all ${n} done`;
  }
  await db.end();
  await peer.close(ctx);
  const result = { tasks: n, seconds, p50_us: pctUs(lats, 0.5), p99_us: pctUs(lats, 0.99), note };
  console.log('RESULT ' + JSON.stringify(result));
}

export function main(peer, name) {
  const [mode, scenario, n] = process.argv.slice(2);
  if (!DB_URL) {
    console.error('PEERS_PG_DB_URL is not set (the orchestrator sets it)');
    process.exit(2);
  }
  const fail = (e) => {
    console.log(`ERROR ${e.name}: ${e.message}`);
    console.error(e);
    process.exit(1);
  };
  if (mode === 'worker') {
    peer.worker().then((stop) => {
      const end = () => stop().finally(() => process.exit(0));
      process.on('SIGTERM', end);
      process.on('SIGINT', end);
    }, fail);
  } else if (mode === 'setup') {
    peer.setup().then(() => process.exit(0), fail);
  } else if (mode === 'client') {
    client(peer, scenario, Number(n)).then(() => process.exit(0), fail);
  } else {
    console.error(`usage: node ${name} setup | worker | client SCENARIO N`);
    process.exit(2);
  }
}
