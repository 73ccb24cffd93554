/**
 * Honest summaries and targets, against real servers:
 * - `changes` and `transactions` count what was committed: a run whose Postgres connection is cut inside a
 *   transaction re-reads it after reconnecting and still counts every change once;
 * - a run that finds the pipeline's lease held reports the stored checkpoint, not "nothing";
 * - `--until-caught-up` aims at `pg_current_wal_lsn()` taken once at the start and keeps that target across
 *   reconnects, so writes that go on during the run never keep it running;
 * - one transaction touching 900 tables, under a key prefix long enough that each batch's intent reaches its
 *   byte cap (200 KiB of keys, the most the item can be asked to hold), is committed in several batches cut
 *   inside it (the checkpoint's
 *   `partial` moves), the DynamoDB item stays under its 400 KB limit with every write accepted, and the
 *   archive holds each change exactly once.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { MAX_INTENT_KEY_BYTES } from '../../src/checkpoint/store.js';
import { parseLsn } from '../../src/lsn.js';
import { MAX_OBJECTS_PER_BATCH } from '../../src/pipeline/batch-policy.js';
import {
  assertExactlyOnce,
  assertSlotAtCheckpoint,
  setup,
  status,
  useTestStack,
} from '../helpers/assertions.js';
import {
  itemSizeBytes,
  MAX_ITEM_BYTES,
  readCheckpointItem,
  testDynamoClient,
} from '../helpers/checkpoint-item.js';
import { runCli, type CliResult } from '../helpers/cli.js';
import { startHttpFaultProxy, type HttpFaultProxy } from '../helpers/http-fault-proxy.js';
import { readLake } from '../helpers/lake.js';
import { createReferenceSlot } from '../helpers/reference.js';
import { logEntries } from '../helpers/runs.js';
import { createPipeline, type Pipeline } from '../helpers/stack.js';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';

// One transaction locks every table it writes: 900 tables and their indexes need more than the default.
const local = useTestStack({ settings: { max_locks_per_transaction: '512' } });
let pgProxy: TcpProxy | undefined;

after(async () => {
  await pgProxy?.stop();
});

/** A TCP proxy in front of the stack's Postgres (started on first use: the stack starts in a hook). */
async function postgresProxy(): Promise<TcpProxy> {
  pgProxy ??= await startTcpProxy({
    targetHost: local.stack.postgres.host,
    targetPort: local.stack.postgres.port,
  });
  return pgProxy;
}

/** The pipeline's environment with its Postgres connections going through the proxy. */
function proxied(pipeline: Pipeline, proxy: TcpProxy): Record<string, string> {
  const url = new URL(pipeline.databaseUrl);
  url.port = String(proxy.port);
  return { ...pipeline.env, DATABASE_URL: url.toString() };
}

/**
 * Runs `slotlake run` through the proxy and cuts its connections once `bytes` more have come from the
 * server after the run started streaming (its slot active): the cut falls in the change stream, wherever
 * the run's own queries before it put their bytes.
 */
async function runCutWhileStreaming(
  pipeline: Pipeline,
  bytes: number,
  args: string[],
): Promise<{ run: CliResult; armed: boolean }> {
  const proxy = await postgresProxy();
  let finished = false;
  const running = runCli(args, proxied(pipeline, proxy)).finally(() => (finished = true));
  let armed = false;
  for (let i = 0; !finished && i < 3000; i++) {
    const slot = await pipeline.sql('SELECT active FROM pg_replication_slots WHERE slot_name = $1', [
      pipeline.name,
    ]);
    if ((slot.rows[0] as { active: boolean } | undefined)?.active) {
      proxy.cutAfterServerBytes(bytes);
      armed = true;
      break;
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return { run: await running, armed };
}

const SCHEMA =
  'CREATE TABLE a (id serial PRIMARY KEY, v text); CREATE TABLE b (id serial PRIMARY KEY, v text);';

test('a connection cut inside a transaction: the re-read changes are counted once', async () => {
  const pipeline = await createPipeline(local.stack, SCHEMA, {
    SLOTLAKE_BATCH_MAX_ROWS: '100',
    SLOTLAKE_LEASE_DURATION: '3s',
    // a small read buffer: the server sends at the pace the run archives, so the cut finds it mid-stream
    SLOTLAKE_READ_BUFFER: '256KiB',
  });
  try {
    await setup(pipeline);
    const reference = await createReferenceSlot(pipeline);
    for (let i = 0; i < 10; i++)
      await pipeline.sql(`INSERT INTO b (v) SELECT 'small' || g FROM generate_series(1, 20) g`);
    // ~6 MB of one transaction: the cut below falls inside it
    await pipeline.sql(`INSERT INTO a (v) SELECT repeat('x', 250) || g FROM generate_series(1, 20000) g`);
    for (let i = 0; i < 5; i++)
      await pipeline.sql(`INSERT INTO b (v) SELECT 'after' || g FROM generate_series(1, 20) g`);

    const { run, armed } = await runCutWhileStreaming(pipeline, 400_000, [
      'run',
      '--until-caught-up',
      '--max-duration',
      '90s',
    ]);
    assert.ok(armed, 'the cut was armed while the run streamed');
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.summary?.stopReason, 'caught-up');
    assert.ok((run.summary?.reconnects as number) >= 1, `reconnected: ${JSON.stringify(run.summary)}`);
    const lake = await assertExactlyOnce(local.s3, pipeline, reference, ['public.a', 'public.b']);
    // the cut came before the big transaction was committed: after reconnecting, it was read again
    const big = lake.records.find(({ record }) => record.source.table === 'a')!.record.source.commit_lsn;
    const reconnect = logEntries(run.stderr).find((entry) => /reconnecting/.test(entry.message));
    assert.ok(reconnect, run.stderr);
    assert.ok(parseLsn(reconnect.resumeLsn as string) < parseLsn(big), 'resumed before the big transaction');
    assert.equal(run.summary?.changes, 200 + 20000 + 100, 'each committed change counted once');
    assert.equal(run.summary?.transactions, 16, 'each committed transaction counted once');
    assert.equal(new Set(lake.records.map(({ record }) => record.source.commit_lsn)).size, 16);
    await assertSlotAtCheckpoint(pipeline);
  } finally {
    await pipeline.close();
  }
});

test('a run that finds the lease held reports the stored checkpoint', async () => {
  const pipeline = await createPipeline(local.stack, SCHEMA, { SLOTLAKE_LEASE_DURATION: '60s' });
  const fresh = await createPipeline(local.stack, SCHEMA, { SLOTLAKE_LEASE_DURATION: '60s' });
  try {
    await setup(pipeline);
    await pipeline.sql(`INSERT INTO a (v) SELECT 'v' || g FROM generate_series(1, 10) g`);
    const first = await runCli(['run', '--until-caught-up'], pipeline.env);
    assert.equal(first.code, 0, first.stderr);
    const stored = await assertSlotAtCheckpoint(pipeline);
    // a run dies holding the lease (it stays held for 60 s)
    const killed = await runCli(['run', '--until-caught-up'], {
      ...pipeline.env,
      SLOTLAKE_KILL_AT: 'after-lease',
    });
    assert.equal(killed.signal, 'SIGKILL', killed.stderr);
    await pipeline.sql(`INSERT INTO a (v) VALUES ('pending')`);
    const held = await runCli(['run', '--until-caught-up'], pipeline.env);
    assert.equal(held.code, 0, held.stderr);
    assert.equal(held.summary?.stopReason, 'lease-held');
    assert.equal(held.summary?.startCheckpoint, stored);
    assert.equal(held.summary?.checkpoint, stored);
    assert.equal(held.summary?.changes, 0);
    assert.equal((await status(pipeline)).checkpoint, stored);

    // a pipeline without any checkpoint yet says so
    await setup(fresh);
    const killedFresh = await runCli(['run'], { ...fresh.env, SLOTLAKE_KILL_AT: 'after-lease' });
    assert.equal(killedFresh.signal, 'SIGKILL', killedFresh.stderr);
    const heldFresh = await runCli(['run', '--until-caught-up'], fresh.env);
    assert.equal(heldFresh.code, 0, heldFresh.stderr);
    assert.equal(heldFresh.summary?.stopReason, 'lease-held');
    assert.equal(heldFresh.summary?.startCheckpoint, null);
  } finally {
    await pipeline.close();
    await fresh.close();
  }
});

test('--until-caught-up keeps the target it took at the start, across a reconnect, while writes go on', async () => {
  const pipeline = await createPipeline(local.stack, SCHEMA, {
    SLOTLAKE_BATCH_MAX_ROWS: '500',
    SLOTLAKE_LEASE_DURATION: '3s',
    SLOTLAKE_LOG_LEVEL: 'INFO',
    SLOTLAKE_READ_BUFFER: '256KiB',
  });
  try {
    await setup(pipeline);
    const reference = await createReferenceSlot(pipeline);
    for (let i = 0; i < 20; i++)
      await pipeline.sql(`INSERT INTO a (v) SELECT repeat('y', 200) || g FROM generate_series(1, 250) g`);
    const backlog = 20 * 250;
    const startLsn = parseLsn(
      ((await pipeline.sql('SELECT pg_current_wal_lsn()::text AS lsn')).rows[0] as { lsn: string }).lsn,
    );

    // A writer that never pauses while the run goes on.
    let running = true;
    let written = 0;
    const writer = (async () => {
      for (let i = 0; running && i < 20_000; i++) {
        await pipeline.sql(`INSERT INTO b (v) VALUES ('live')`);
        written++;
      }
    })();
    let cut;
    try {
      cut = await runCutWhileStreaming(pipeline, 300_000, [
        'run',
        '--until-caught-up',
        '--max-duration',
        '90s',
      ]);
    } finally {
      running = false;
      await writer;
    }
    const { run, armed } = cut;
    assert.ok(armed, 'the cut was armed while the run streamed');
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.summary?.stopReason, 'caught-up', 'stopped at its target, not at the deadline');
    assert.ok((run.summary?.reconnects as number) >= 1, `reconnected: ${JSON.stringify(run.summary)}`);
    assert.ok(written > 0, 'writes went on during the run');
    const sessions = logEntries(run.stderr).filter((entry) => entry.message === 'streaming');
    assert.ok(sessions.length >= 2, `a session before and after the reconnect: ${run.stderr}`);
    const target = sessions[0]!.target as string;
    for (const session of sessions) assert.equal(session.target, target, 'the same target in every session');
    assert.ok(parseLsn(target) >= startLsn, 'taken at the start of the run');
    assert.ok(
      parseLsn(run.summary?.checkpoint as string) >= parseLsn(target),
      'everything before it archived',
    );
    const lake = await readLake(local.s3, `${pipeline.name}/`);
    assert.equal(lake.records.filter(({ record }) => record.source.table === 'a').length, backlog);
    const now = (await status(pipeline)).slot.currentWalLsn;
    assert.ok(parseLsn(now) > parseLsn(target), 'the server moved on past the target while the run went on');

    // what the run left is archived by the next one, each change once
    const next = await runCli(['run', '--until-caught-up'], pipeline.env);
    assert.equal(next.code, 0, next.stderr);
    await assertSlotAtCheckpoint(pipeline);
    await assertExactlyOnce(local.s3, pipeline, reference, ['public.a', 'public.b']);
  } finally {
    await pipeline.close();
  }
});

const TABLE_COUNT = 900;
/**
 * Long keys: long table names (53 bytes), and a key prefix of about 600 bytes (S3 keys may have 1,024), so
 * that the intent's byte cap (MAX_INTENT_KEY_BYTES), not its object cap, ends each batch after about 280
 * objects: the largest intent the item can be asked to hold, in a few hundred tables rather than thousands.
 */
const LONG_PREFIX = `long-keys-${process.pid}-${Date.now()}/${`${'k'.repeat(195)}/`.repeat(3)}`;
const tableName = (i: number) =>
  `a_tiny_table_whose_name_is_long_enough_to_matter_${String(i).padStart(4, '0')}`;

test(`one transaction touching ${TABLE_COUNT} tables, keys of about 750 bytes: several batches inside it, each intent at its byte cap, the DynamoDB item under 400 KB, exactly once`, async () => {
  const pipeline = await createPipeline(local.stack, '', {
    SLOTLAKE_LEASE_DURATION: '30s',
    SLOTLAKE_PREFIX: LONG_PREFIX,
  });
  const dynamo = testDynamoClient(local.stack.dynamo.endpoint);
  let dynamoProxy: HttpFaultProxy | undefined;
  try {
    for (let from = 1; from <= TABLE_COUNT; from += 500) {
      await pipeline.sql(`DO $$ BEGIN
        FOR i IN ${from}..${Math.min(TABLE_COUNT, from + 499)} LOOP
          EXECUTE format('CREATE TABLE %I (id int PRIMARY KEY, v text)',
                         'a_tiny_table_whose_name_is_long_enough_to_matter_' || lpad(i::text, 4, '0'));
        END LOOP; END $$`);
    }
    await setup(pipeline);
    const reference = await createReferenceSlot(pipeline);
    await pipeline.sql(`DO $$ BEGIN
      FOR i IN 1..${TABLE_COUNT} LOOP
        EXECUTE format('INSERT INTO %I VALUES (1, ''one'')',
                       'a_tiny_table_whose_name_is_long_enough_to_matter_' || lpad(i::text, 4, '0'));
      END LOOP; END $$`);

    // Every DynamoDB request goes through a proxy that records its status; before each one, the item is read
    // back: the largest item any write left behind is among the samples.
    dynamoProxy = await startHttpFaultProxy({ target: local.stack.dynamo.endpoint });
    const samples: Array<Promise<number>> = [];
    const partials = new Set<string>();
    const sample = async (): Promise<number> => {
      const item = await readCheckpointItem(dynamo, pipeline.name);
      if (item?.partialNextSeq?.N !== undefined) partials.add(item.partialNextSeq.N);
      return item ? itemSizeBytes(item) : 0;
    };
    dynamoProxy.inject({
      match: () => {
        samples.push(sample());
        return false;
      },
      action: { kind: 'delay', ms: 0 },
    });
    const run = await runCli(['run', '--until-caught-up', '--max-duration', '240s'], {
      ...pipeline.env,
      AWS_ENDPOINT_URL_DYNAMODB: dynamoProxy.endpoint,
    });
    samples.push(sample());
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.summary?.stopReason, 'caught-up');
    assert.equal(run.summary?.changes, TABLE_COUNT);
    assert.equal(run.summary?.transactions, 1, 'one transaction, counted once');

    const writes = dynamoProxy.requests().filter((request) => request.target?.endsWith('.UpdateItem'));
    assert.ok(writes.length > 0);
    assert.deepEqual(
      writes.filter((request) => request.status !== 200),
      [],
      'every DynamoDB write was accepted',
    );
    const largest = Math.max(...(await Promise.all(samples)));
    assert.ok(largest < MAX_ITEM_BYTES, `largest item ${largest} bytes`);
    assert.ok(largest > 100 * 1024, `the intent of a large batch was in the item (${largest} bytes)`);

    const lake = await assertExactlyOnce(
      local.s3,
      pipeline,
      reference,
      Array.from({ length: TABLE_COUNT }, (_, i) => `public.${tableName(i + 1)}`),
    );
    const commitLsn = lake.records[0]!.record.source.commit_lsn;
    const cuts = lake.manifests
      .map((manifest) => manifest.partial as { commitLsn: string; nextSeq: number } | null)
      .filter((partial) => partial !== null);
    assert.ok(cuts.length >= 2, `several batches cut inside the transaction: ${JSON.stringify(cuts)}`);
    for (const cut of cuts) assert.equal(cut.commitLsn, commitLsn);
    const seqs = cuts.map((cut) => cut.nextSeq).sort((x, y) => x - y);
    assert.equal(new Set(seqs).size, seqs.length, 'the partial position moved with every batch');
    assert.equal(lake.manifests.length, cuts.length + 1, 'the last batch completes the transaction');
    // Each cut batch ended at the intent's byte cap: far fewer objects than the object cap, keys that fill it.
    for (const manifest of lake.manifests.filter((m) => m.partial !== null)) {
      const keyBytes = manifest.objects.reduce((sum, object) => sum + Buffer.byteLength(object.key), 0);
      assert.ok(manifest.objects.length < MAX_OBJECTS_PER_BATCH / 2, `${manifest.objects.length} objects`);
      assert.ok(keyBytes > 0.9 * MAX_INTENT_KEY_BYTES, `a cut batch's keys take ${keyBytes} bytes`);
    }
    assert.ok(partials.size >= 1, 'the stored checkpoint carried a partial position during the run');
    const final = await readCheckpointItem(dynamo, pipeline.name);
    assert.equal(final?.partialCommitLsn, undefined, 'no partial position once the transaction is archived');
    await assertSlotAtCheckpoint(pipeline);
  } finally {
    dynamo.destroy();
    await dynamoProxy?.stop();
    await pipeline.close();
  }
});
