/**
 * `slotlake dev` (`npm start`): the embedded default.
 *
 * Starts a local Postgres, S3 and DynamoDB on loopback, creates a small shop schema with a demo workload
 * (inserts, updates, deletes, an occasional truncate), runs `setup`, then runs the ingester in repeated
 * time-bounded runs — the same code path as `slotlake run` — printing progress as it goes. Every object is
 * mirrored under `<dir>/lake/` with its S3 key as the path, so the archive can be queried where it lies
 * (e.g. DuckDB: `select * from read_json_auto('.slotlake/dev/lake/data/*\/*\/*.jsonl.gz')`).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { GetObjectCommand, ListObjectsCommand } from '@aws-sdk/client-s3';
import pg from 'pg';
import { loadConfig } from '../config.js';
import { createLogger } from '../log.js';
import { Deadline, systemClock } from '../support/deadline.js';
import { createS3Client } from '../sink/s3.js';
import { performRun, performSetup } from '../entrypoints/app.js';
import { startLocalStack } from './stack.js';

export interface DevOptions {
  readonly runs?: number;
  readonly runDuration: number;
  readonly dir: string;
}

const BUCKET = 'slotlake-dev';

function say(line: string): void {
  process.stderr.write(`${line}\n`);
}

async function createDemoSchema(client: pg.Client): Promise<void> {
  await client.query(`
    CREATE TABLE IF NOT EXISTS customers (id bigserial PRIMARY KEY, name text NOT NULL, email text, tags text[],
      created_at timestamptz NOT NULL DEFAULT now());
    CREATE TABLE IF NOT EXISTS orders (id bigserial PRIMARY KEY, customer_id bigint NOT NULL, total numeric(12,2),
      status text NOT NULL, placed_on date NOT NULL DEFAULT current_date, details jsonb);
    CREATE TABLE IF NOT EXISTS events (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), kind text, payload bytea,
      at timestamp NOT NULL DEFAULT now());
  `);
}

/** A gentle, endless workload: a few transactions a second across three tables. */
function startWorkload(url: string): { stop: () => Promise<void>; transactions: () => number } {
  const client = new pg.Client({ connectionString: url });
  let running = true;
  let count = 0;
  const loop = (async () => {
    await client.connect();
    while (running) {
      const n = 1 + (count % 5);
      await client.query('BEGIN');
      await client.query(
        `INSERT INTO customers (name, email, tags) SELECT 'customer ' || g, 'c' || g || '@example.com', ARRAY['demo', 'batch-' || $1]
           FROM generate_series(1, $2) g`,
        [count, n],
      );
      await client.query(
        `INSERT INTO orders (customer_id, total, status, details)
           SELECT id, round((random() * 500)::numeric, 2), 'new', jsonb_build_object('items', $1::int)
             FROM customers ORDER BY id DESC LIMIT $1`,
        [n],
      );
      await client.query(
        `UPDATE orders SET status = 'paid' WHERE id IN (SELECT id FROM orders WHERE status = 'new' LIMIT 2)`,
      );
      await client.query(`INSERT INTO events (kind, payload) VALUES ('tick', decode('deadbeef', 'hex'))`);
      if (count % 7 === 6)
        await client.query(`DELETE FROM events WHERE id IN (SELECT id FROM events LIMIT 3)`);
      await client.query('COMMIT');
      count++;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    await client.end();
  })();
  return {
    stop: async () => {
      running = false;
      await loop.catch(() => undefined);
    },
    transactions: () => count,
  };
}

async function mirrorArchive(lakeDir: string, endpointEnv: Record<string, string>): Promise<number> {
  Object.assign(process.env, endpointEnv);
  const s3 = createS3Client();
  let count = 0;
  try {
    // ListObjects (v1) with markers: the local S3 server's v2 continuation tokens need a cipher Node 22 lacks.
    let marker: string | undefined;
    for (;;) {
      const page = await s3.send(new ListObjectsCommand({ Bucket: BUCKET, Marker: marker }));
      for (const item of page.Contents ?? []) {
        if (!item.Key) continue;
        const target = join(lakeDir, item.Key);
        const object = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: item.Key }));
        const bytes = await object.Body!.transformToByteArray();
        mkdirSync(dirname(target), { recursive: true });
        writeFileSync(target, bytes);
        count++;
        marker = item.Key;
      }
      if (!page.IsTruncated) break;
    }
  } finally {
    s3.destroy();
  }
  return count;
}

export async function runDev(options: DevOptions): Promise<void> {
  const dir = resolve(options.dir);
  mkdirSync(dir, { recursive: true });
  say(`slotlake dev: starting local Postgres, S3 and DynamoDB under ${dir} …`);
  const stack = await startLocalStack({
    dir,
    buckets: [BUCKET],
    postgres: { dataDir: join(dir, 'postgres'), keep: true },
    persistDynamo: true,
  });
  const databaseUrl = await stack.postgres.createDatabase('shop').catch(() => stack.postgres.url('shop'));
  const env = {
    ...stack.awsEnv,
    DATABASE_URL: databaseUrl,
    SLOTLAKE_SLOT: 'slotlake_dev',
    SLOTLAKE_PUBLICATION: 'slotlake_dev',
    SLOTLAKE_BUCKET: BUCKET,
    SLOTLAKE_CHECKPOINT_TABLE: 'slotlake-checkpoints',
    SLOTLAKE_BATCH_MAX_AGE: '5s',
    SLOTLAKE_STATUS_INTERVAL: '2s',
    SLOTLAKE_SAFETY_MARGIN: '1s',
  };
  Object.assign(process.env, env);
  const setupClient = new pg.Client({ connectionString: databaseUrl });
  await setupClient.connect();
  await createDemoSchema(setupClient);
  await setupClient.end();
  const config = loadConfig(process.env);
  const setup = await performSetup(config);
  say(
    `setup: publication ${setup.publication}, slot ${setup.slot}, checkpoint table ${setup.checkpointTable}, bucket ${setup.bucket}`,
  );
  const workload = startWorkload(databaseUrl);
  const stop = new AbortController();
  process.once('SIGINT', () => stop.abort());
  process.once('SIGTERM', () => stop.abort());
  const logger = createLogger('WARN');
  const lakeDir = join(dir, 'lake');
  let totalChanges = 0;
  let totalObjects = 0;
  try {
    for (let run = 1; options.runs === undefined || run <= options.runs; run++) {
      if (stop.signal.aborted) break;
      const deadline = new Deadline(systemClock.nowMs() + options.runDuration, config.safetyMarginMs);
      const summary = await performRun({
        config,
        logger,
        deadline,
        untilCaughtUp: false,
        stopSignal: stop.signal,
        publishMetrics: false,
        onBatch: (progress) =>
          say(
            `  run ${run}: ${progress.changes} changes, ${progress.objects} objects, checkpoint ${progress.checkpoint}`,
          ),
      });
      deadline.dispose();
      totalChanges += summary.changes;
      totalObjects += summary.objects;
      say(
        `run ${run} done (${summary.stopReason}): ${summary.transactions} transactions, ${summary.changes} changes, ` +
          `${summary.objects} objects, ${summary.bytes} bytes in ${summary.durationMs} ms; checkpoint ${summary.checkpoint}, ` +
          `slot lag ${summary.lagBytes ?? '?'} bytes`,
      );
      const mirrored = await mirrorArchive(lakeDir, stack.awsEnv);
      say(`  archive: ${mirrored} objects mirrored under ${lakeDir}`);
    }
  } finally {
    await workload.stop();
    await stack.stop();
  }
  say(`slotlake dev: ${totalChanges} changes archived in ${totalObjects} objects.`);
  say(`The archive is in ${lakeDir} (data/<schema>.<table>/dt=<date>/*.jsonl.gz and manifests/); try:`);
  say(`  zcat ${lakeDir}/data/public.orders/dt=*/*.jsonl.gz | head -3`);
  process.stdout.write(
    `${JSON.stringify({ archive: lakeDir, changes: totalChanges, objects: totalObjects })}\n`,
  );
}
