// BullMQ peer of Quern's benchmark (see ../README.md).
//   node bullmq.js worker                 a worker process (concurrency 16)
//   node bullmq.js client SCENARIO N      one measurement, in the protocol of ../common.py:
//                                         START / END around the measured region, then RESULT {json}
const { Queue, QueueEvents, Worker } = require('bullmq');
const { Redis } = require('ioredis');

const connection = {
  host: '127.0.0.1',
  port: Number(process.env.PEERS_REDIS_PORT || 6379),
  db: Number(process.env.PEERS_REDIS_DB || 5),
};
const QUEUE = 'peers';
const BATCH = 1000;
const WARMUP = 20;
const CONCURRENCY = 16;
const E2E_TIMEOUT_S = Number(process.env.PEERS_E2E_TIMEOUT || 300);

const now = () => Number(process.hrtime.bigint()) / 1e9; // seconds
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Nearest-rank percentile (0 < p <= 1) of samples in seconds, in µs.
function pctUs(samples, p) {
  if (samples.length === 0) return null;
  const s = [...samples].sort((a, b) => a - b);
  return s[Math.min(s.length, Math.max(1, Math.ceil(p * s.length))) - 1] * 1e6;
}

const noop = async () => null;
const bulk = (count) => Array.from({ length: count }, () => ({ name: 'noop', data: {} }));

async function roundtrip(q, events, timeoutS) {
  const job = await q.add('noop', {});
  await job.waitUntilFinished(events, timeoutS * 1000);
}

async function client(scenario, n) {
  const q = new Queue(QUEUE, { connection });
  await q.waitUntilReady();
  let events = null;
  if (scenario === 'warmup' || scenario === 'latency') {
    events = new QueueEvents(QUEUE, { connection });
    await events.waitUntilReady();
  }
  const lats = [];
  let note = '';
  let t0;
  const start = () => {
    console.log('START');
    t0 = now();
  };
  if (scenario === 'submit-single') {
    await q.add('noop', {}); // warm: connection, scripts
    start();
    for (let i = 0; i < n; i++) {
      const t = now();
      await q.add('noop', {});
      lats.push(now() - t);
    }
  } else if (scenario === 'submit-batch') {
    await q.add('noop', {});
    start();
    for (let s = 0; s < n; s += BATCH) {
      const t = now();
      await q.addBulk(bulk(Math.min(BATCH, n - s)));
      lats.push(now() - t);
    }
    note = 'latency per request';
  } else if (scenario === 'e2e') {
    const redis = new Redis(connection);
    const completed = `bull:${QUEUE}:completed`;
    const base = await redis.zcard(completed);
    start();
    for (let s = 0; s < n; s += BATCH) await q.addBulk(bulk(Math.min(BATCH, n - s)));
    const enqueued = now() - t0;
    const deadline = now() + E2E_TIMEOUT_S;
    for (;;) {
      const done = (await redis.zcard(completed)) - base;
      if (done >= n) break;
      if (now() > deadline) throw new Error(`${n - done} of ${n} tasks unfinished`);
      await sleep(2);
    }
    const failed = await redis.zcard(`bull:${QUEUE}:failed`);
    redis.disconnect();
    if (failed) throw new Error(`${failed} jobs failed`);
    note = `enqueue took ${enqueued.toFixed(2)} s`;
  } else if (scenario === 'warmup') {
    start();
    for (let i = 0; i < WARMUP; i++) await roundtrip(q, events, 60);
  } else if (scenario === 'latency') {
    start();
    for (let i = 0; i < n; i++) {
      const t = now();
      await roundtrip(q, events, 10);
      lats.push(now() - t);
    }
  } else {
    throw new Error(`unknown scenario ${scenario}`);
  }
  const seconds = now() - t0;
  console.log('END');
  if (events) await events.close();
  await q.close();
  const result = { tasks: n, seconds, p50_us: pctUs(lats, 0.5), p99_us: pctUs(lats, 0.99), note };
  console.log('RESULT ' + JSON.stringify(result));
}

function worker() {
  const w = new Worker(QUEUE, noop, { connection, concurrency: CONCURRENCY });
  w.on('error', (e) => console.error('worker error', e));
  const stop = () => w.close().finally(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

const [mode, scenario, n] = process.argv.slice(2);
if (mode === 'worker') {
  worker();
} else if (mode === 'client') {
  client(scenario, Number(n)).then(
    () => process.exit(0),
    (e) => {
      console.log(`ERROR ${e.name}: ${e.message}`);
      console.error(e);
      process.exit(1);
    },
  );
} else {
  console.error('usage: node bullmq.js worker | client SCENARIO N');
  process.exit(2);
}
