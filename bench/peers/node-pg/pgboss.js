// pg-boss peer of Quern's benchmark (see ../README.md and harness.js).
// Workers: one work() per process fetching batches of up to 8 jobs
// (batchSize 8, localConcurrency 1), with burstWhenBatchFull (a full batch is
// followed by the next fetch at once instead of a poll interval) and the
// queue's LISTEN/NOTIFY wake-ups on; the poll intervals at their minimum, 0.5 s.
// Completed jobs are kept (deleteAfterSeconds: 7 days by default), so the
// verification counts them.
import { PgBoss } from 'pg-boss';
import { CONCURRENCY, DB_URL, main } from './harness.js';

const QUEUE = 'peers';
const JOBS = 'pgboss.job';

// What a client needs of pg-boss: sending only, no maintenance or cron of its own.
const SENDER = { supervise: false, schedule: false, migrate: false };

async function boss(options) {
  const b = new PgBoss({ connectionString: DB_URL, ...options });
  b.on('error', (e) => console.error('pg-boss error', e));
  await b.start();
  return b;
}

const peer = {
  async setup() {
    const b = await boss({ supervise: false, schedule: false });
    await b.createQueue(QUEUE, { notify: true });
    await b.stop({ graceful: false });
  },

  async worker() {
    const b = await boss({ useListenNotify: true });
    b.on('warning', (w) => console.error('pg-boss warning', w.message ?? w));
    await b.work(
      QUEUE,
      {
        batchSize: CONCURRENCY,
        localConcurrency: 1,
        burstWhenBatchFull: true,
        pollingIntervalSeconds: 0.5,
        notifyPollingIntervalSeconds: 0.5,
      },
      async (jobs) => {
        await Promise.all(jobs.map(async () => null));
      },
    );
    return () => b.stop({ graceful: true, timeout: 5000 });
  },

  async connect(poolSize) {
    return boss({ ...SENDER, max: poolSize });
  },
  async close(b) {
    await b.stop({ graceful: false });
  },
  async warm(b, k) {
    await Promise.all(Array.from({ length: k }, () => b.getDb().executeSql('SELECT 1')));
  },
  async submit(b) {
    return b.send(QUEUE, {});
  },
  async submitBatch(b, count) {
    return b.insert(QUEUE, Array.from({ length: count }, () => ({ data: {} })), { returnId: true });
  },

  PENDING: `SELECT EXISTS (SELECT 1 FROM ${JOBS} WHERE name = '${QUEUE}' AND state IN ('created', 'retry', 'active')) AS pending`,
  verify: (ids) => [
    `SELECT $2::int - count(*) AS left FROM ${JOBS} WHERE name = '${QUEUE}' AND id = ANY($1::uuid[]) AND state = 'completed'`,
    [ids, ids.length],
  ],
  done: (id) => [
    `SELECT EXISTS (SELECT 1 FROM ${JOBS} WHERE name = '${QUEUE}' AND id = $1 AND state = 'completed') AS done`,
    [id],
  ],
};

main(peer, 'pgboss.js');
