// graphile-worker peer of Quern's benchmark (see ../README.md and harness.js).
// Workers: run() with concurrency 8, pollInterval 100 ms, graphile's batching
// (localQueue 100, completeJobBatchDelay 0; new jobs also wake
// them by LISTEN/NOTIFY), signals handled here. A completed job is deleted
// (graphile-worker's only way), and a failed one stays in the table: so
// "no job left" is "every job succeeded".
import { Logger, makeWorkerUtils, run, runMigrations } from 'graphile-worker';
import { CONCURRENCY, DB_URL, main } from './harness.js';

const TASK = 'noop';
const JOBS = 'graphile_worker._private_jobs';

// Warnings and errors only: graphile-worker logs every completed job at info.
const logger = new Logger(() => (level, message) => {
  if (level === 'error' || level === 'warning') console.error(`[${level}] ${message}`);
});

const peer = {
  async setup() {
    await runMigrations({ connectionString: DB_URL, logger });
  },

  async worker() {
    const runner = await run({
      connectionString: DB_URL,
      concurrency: CONCURRENCY,
      pollInterval: 100,
      noHandleSignals: true,
      taskList: { [TASK]: async () => null },
      crontab: '',
      logger,
      // Graphile's own batching, its fastest setting for short jobs: the
      // pool fetches (and locks) up to 100 jobs at once and serves its
      // workers from them, and completions within one tick share a query.
      preset: { worker: { localQueue: { size: 100 }, completeJobBatchDelay: 0, failJobBatchDelay: 0 } },
    });
    return () => runner.stop();
  },

  async connect(poolSize) {
    return makeWorkerUtils({ connectionString: DB_URL, maxPoolSize: Math.max(2, poolSize), logger });
  },
  async close(utils) {
    await utils.release();
  },
  async warm(utils, k) {
    await Promise.all(Array.from({ length: k }, () => utils.withPgClient((c) => c.query('SELECT 1'))));
  },
  async submit(utils) {
    return (await utils.addJob(TASK, {})).id;
  },
  async submitBatch(utils, count) {
    const jobs = await utils.addJobs(Array.from({ length: count }, () => ({ identifier: TASK, payload: {} })));
    return jobs.map((j) => j.id);
  },

  PENDING: `SELECT EXISTS (SELECT 1 FROM ${JOBS}) AS pending`,
  verify: (ids) => [`SELECT count(*) AS left FROM ${JOBS} WHERE id = ANY($1::bigint[])`, [ids]],
  done: (id) => [`SELECT NOT EXISTS (SELECT 1 FROM ${JOBS} WHERE id = $1) AS done`, [id]],
};

main(peer, 'graphile.js');
