/**
 * The checkpoint belongs to the source it was made on (contract §5): its item stores IDENTIFY_SYSTEM's system
 * identifier, the timeline, the database and the slot, and a run checks them before streaming. Against real
 * servers:
 * - another cluster behind the same settings (same pipeline, bucket, prefix, checkpoint table; a database,
 *   slot and publication of the same names) fails with one line naming both systems and what to do, and
 *   changes nothing; with SLOTLAKE_ON_SOURCE_CHANGE=accept-gap the run starts at the new slot's position,
 *   archives the new system's changes exactly once and stores the new identity;
 * - another database of the same server behind the same settings fails the same way;
 * - a slot behind the checkpoint on the same system (a run killed after its checkpoint, before its ack) is
 *   fine: one warning with both positions, the resent transactions skipped, the archive exactly once;
 * - a failover to a promoted physical standby (same system, timeline 2) with a PG17 failover slot synced to
 *   it resumes from the checkpoint with one warning about the timeline, and misses nothing.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import pg from 'pg';
import { startLocalPostgres, type LocalPostgres } from '../../src/devstack/postgres.js';
import { parseLsn } from '../../src/lsn.js';
import {
  assertArchiveHolds,
  assertExactlyOnce,
  assertSlotAtCheckpoint,
  setup,
  status,
  useTestStack,
} from '../helpers/assertions.js';
import {
  checkpointAttributes,
  readCheckpointItem,
  testDynamoClient,
  type Item,
} from '../helpers/checkpoint-item.js';
import { runCli } from '../helpers/cli.js';
import { listKeys } from '../helpers/lake.js';
import { createReferenceSlot, referenceChanges } from '../helpers/reference.js';
import { logEntries, operatorLines, runPastLease } from '../helpers/runs.js';
import { createPipeline, type Pipeline, type TestStack } from '../helpers/stack.js';

const local = useTestStack();
let dynamoClient: ReturnType<typeof testDynamoClient> | undefined;
after(() => dynamoClient?.destroy());

function dynamo(): ReturnType<typeof testDynamoClient> {
  dynamoClient ??= testDynamoClient(local.stack.dynamo.endpoint);
  return dynamoClient;
}

const SCHEMA =
  'CREATE TABLE orders (id serial PRIMARY KEY, v text); CREATE TABLE items (id serial PRIMARY KEY, n int);';
const TABLES = ['public.orders', 'public.items'];

async function workload(pipeline: Pick<Pipeline, 'sql'>, tag: string, transactions = 3): Promise<void> {
  for (let i = 0; i < transactions; i++) {
    await pipeline.sql(
      `BEGIN; INSERT INTO orders (v) SELECT '${tag}' || g FROM generate_series(1, 5) g;
       INSERT INTO items (n) VALUES (${i}); UPDATE orders SET v = v || '!' WHERE id % 2 = 0; COMMIT`,
    );
  }
}

/** IDENTIFY_SYSTEM over a replication connection, as a run sees the server. */
async function identify(url: string): Promise<{ systemId: string; timeline: number; dbname: string }> {
  const client = new pg.Client({ connectionString: url, replication: 'database' } as pg.ClientConfig);
  await client.connect();
  try {
    const row = (await client.query('IDENTIFY_SYSTEM')).rows[0] as {
      systemid: string;
      timeline: string;
      dbname: string;
    };
    return { systemId: row.systemid, timeline: Number(row.timeline), dbname: row.dbname };
  } finally {
    await client.end();
  }
}

async function item(pipeline: Pipeline): Promise<Item> {
  const stored = await readCheckpointItem(dynamo(), pipeline.name);
  assert.ok(stored, 'the checkpoint item exists');
  return stored;
}

function storedIdentity(stored: Item): Record<string, string | undefined> {
  return {
    systemId: stored.sourceSystemId?.S,
    timeline: stored.sourceTimeline?.N,
    database: stored.sourceDatabase?.S,
    slot: stored.sourceSlot?.S,
  };
}

/** A database of the pipeline's name on `postgres`, with `schema`, behind the pipeline's settings. */
async function samePipelineOn(
  postgres: LocalPostgres,
  pipeline: Pipeline,
  schema: string,
  database = pipeline.name,
): Promise<Pipeline> {
  const databaseUrl = await postgres.createDatabase(database);
  const client = new pg.Client({ connectionString: databaseUrl });
  client.on('error', () => undefined);
  await client.connect();
  await client.query(schema);
  return {
    ...pipeline,
    name: pipeline.name,
    databaseUrl,
    env: { ...pipeline.env, DATABASE_URL: databaseUrl },
    sql: (text, values) => client.query(text, values),
    close: () => client.end(),
  };
}

async function currentLsn(source: Pick<Pipeline, 'sql'>): Promise<bigint> {
  const row = (await source.sql('SELECT pg_current_wal_lsn()::text AS lsn')).rows[0] as { lsn: string };
  return parseLsn(row.lsn);
}

/** What a failed run must leave untouched: every key under the prefix and the checkpoint's attributes. */
async function snapshotState(pipeline: Pipeline): Promise<{ keys: string[]; checkpoint: unknown }> {
  return {
    keys: await listKeys(local.s3, `${pipeline.name}/`),
    checkpoint: checkpointAttributes(await item(pipeline)),
  };
}

test('another cluster behind the same settings: one clear line and nothing changed; accept-gap archives it exactly once', async () => {
  const other = await startLocalPostgres();
  const pipeline = await createPipeline(local.stack, SCHEMA);
  let moved: Pipeline | undefined;
  try {
    await setup(pipeline);
    const reference = await createReferenceSlot(pipeline);
    moved = await samePipelineOn(other, pipeline, SCHEMA);
    // The first cluster's positions lie far past the second's (as for a long-lived server and a fresh one).
    const otherStart = await currentLsn(moved);
    for (let i = 0; i < 8 && (await currentLsn(pipeline)) < otherStart + 64n * 1024n * 1024n; i++) {
      await pipeline.sql('SELECT pg_switch_wal()');
      await pipeline.sql(`INSERT INTO items (n) VALUES (${-i})`);
    }
    await workload(pipeline, 'a');
    const first = await runCli(['run', '--until-caught-up'], pipeline.env);
    assert.equal(first.code, 0, first.stderr);
    const checkpoint = await assertSlotAtCheckpoint(pipeline);

    // The item says where its LSNs belong.
    const original = await identify(pipeline.databaseUrl);
    const stored = await item(pipeline);
    assert.equal(stored.lsn?.S, checkpoint);
    assert.deepEqual(storedIdentity(stored), {
      systemId: original.systemId,
      timeline: String(original.timeline),
      database: pipeline.name,
      slot: pipeline.name,
    });

    // The second cluster: same database, slot and publication names, some changes of its own.
    const setupThere = await runCli(['setup'], moved.env);
    assert.equal(setupThere.code, 0, setupThere.stderr);
    const movedReference = await createReferenceSlot(moved);
    await workload(moved, 'b');
    const replacement = await identify(moved.databaseUrl);
    assert.notEqual(replacement.systemId, original.systemId, 'two clusters, two system identifiers');
    const slotThere = (await status(moved)).slot.confirmedFlushLsn;
    assert.ok(
      parseLsn(checkpoint) > parseLsn(slotThere) + 32n * 1024n * 1024n,
      `the stored checkpoint ${checkpoint} lies far ahead of the new slot ${slotThere}`,
    );

    const before = await snapshotState(pipeline);
    const refused = await runCli(['run', '--until-caught-up'], moved.env);
    assert.equal(refused.code, 1, refused.stderr);
    const lines = operatorLines(refused.stderr);
    assert.equal(lines.length, 1, `one error line: ${refused.stderr}`);
    assert.ok(lines[0]!.includes(original.systemId), `names the checkpoint's system: ${lines[0]}`);
    assert.ok(lines[0]!.includes(replacement.systemId), `names the connected system: ${lines[0]}`);
    assert.match(lines[0]!, /SLOTLAKE_ON_SOURCE_CHANGE=accept-gap/, 'says what to do');
    assert.match(lines[0]!, /DATABASE_URL|SLOTLAKE_PIPELINE/, 'or how to point back');
    assert.deepEqual(await snapshotState(pipeline), before, 'nothing archived, the checkpoint unchanged');
    assert.equal((await status(moved)).slot.confirmedFlushLsn, slotThere, 'the new slot was not moved');

    // Accepting the gap: the run starts at the new slot and archives the new system's changes once.
    const accepted = await runCli(['run', '--until-caught-up'], {
      ...moved.env,
      SLOTLAKE_ON_SOURCE_CHANGE: 'accept-gap',
    });
    assert.equal(accepted.code, 0, accepted.stderr);
    assert.equal(accepted.summary?.stopReason, 'caught-up');
    assert.equal(accepted.summary?.sourceChanged, true);
    assert.equal(accepted.summary?.startCheckpoint, checkpoint);
    const movedChanges = (await referenceChanges(moved, movedReference, new Set(TABLES))).length;
    assert.equal(accepted.summary?.changes, movedChanges, 'every change of the new system, once');
    const warnings = logEntries(accepted.stderr).filter((entry) => /accept-gap/.test(entry.message));
    assert.equal(warnings.length, 1, accepted.stderr);
    assert.equal(warnings[0]!.level, 'WARN');
    const newCheckpoint = await assertSlotAtCheckpoint(moved);
    const restamped = await item(pipeline);
    assert.equal(restamped.lsn?.S, newCheckpoint);
    assert.deepEqual(storedIdentity(restamped), {
      systemId: replacement.systemId,
      timeline: String(replacement.timeline),
      database: pipeline.name,
      slot: pipeline.name,
    });
    const expected = async () => [
      ...(await referenceChanges(pipeline, reference, new Set(TABLES))),
      ...(await referenceChanges(moved!, movedReference, new Set(TABLES))),
    ];
    await assertArchiveHolds(local.s3, `${pipeline.name}/`, await expected());

    // From now on the pipeline belongs to the new system: later runs go on without the setting.
    await workload(moved, 'c', 2);
    const next = await runCli(['run', '--until-caught-up'], moved.env);
    assert.equal(next.code, 0, next.stderr);
    assert.equal(next.summary?.sourceChanged, false);
    assert.equal(
      next.summary?.changes,
      (await referenceChanges(moved, movedReference, new Set(TABLES))).length - movedChanges,
    );
    await assertSlotAtCheckpoint(moved);
    await assertArchiveHolds(local.s3, `${pipeline.name}/`, await expected());
  } finally {
    await moved?.close();
    await pipeline.close();
    await other.stop();
  }
});

test('another database of the same server behind the same settings: one clear line, nothing changed', async () => {
  const pipeline = await createPipeline(local.stack, SCHEMA);
  let moved: Pipeline | undefined;
  try {
    await setup(pipeline);
    const reference = await createReferenceSlot(pipeline);
    await workload(pipeline, 'a');
    const first = await runCli(['run', '--until-caught-up'], pipeline.env);
    assert.equal(first.code, 0, first.stderr);
    await assertSlotAtCheckpoint(pipeline);
    // Slot names are server-wide: the slot moves to the other database under the same name.
    await pipeline.sql('SELECT pg_drop_replication_slot($1)', [pipeline.name]);
    moved = await samePipelineOn(local.stack.postgres, pipeline, SCHEMA, `${pipeline.name}_other`);
    const setupThere = await runCli(['setup'], moved.env);
    assert.equal(setupThere.code, 0, setupThere.stderr);
    await workload(moved, 'b');

    const before = await snapshotState(pipeline);
    const refused = await runCli(['run', '--until-caught-up'], moved.env);
    assert.equal(refused.code, 1, refused.stderr);
    const lines = operatorLines(refused.stderr);
    assert.equal(lines.length, 1, `one error line: ${refused.stderr}`);
    const system = (await identify(pipeline.databaseUrl)).systemId;
    assert.ok(lines[0]!.includes(`system ${system} database "${pipeline.name}"`), lines[0]);
    assert.ok(lines[0]!.includes(`system ${system} database "${pipeline.name}_other"`), lines[0]);
    assert.match(lines[0]!, /SLOTLAKE_ON_SOURCE_CHANGE=accept-gap/);
    assert.deepEqual(await snapshotState(pipeline), before, 'nothing archived, the checkpoint unchanged');
    await assertExactlyOnce(local.s3, pipeline, reference, TABLES);
  } finally {
    await moved?.close();
    await pipeline.close();
  }
});

test('a slot behind the checkpoint on the same system: one warning with both positions, exactly once', async () => {
  const pipeline = await createPipeline(local.stack, SCHEMA, { SLOTLAKE_LEASE_DURATION: '3s' });
  try {
    await setup(pipeline);
    const reference = await createReferenceSlot(pipeline);
    const slotBefore = (await status(pipeline)).slot.confirmedFlushLsn;
    await workload(pipeline, 'a');
    // The checkpoint moves, the acknowledgement never happens. (A long status interval: on a busy machine an
    // idle advance, before the workload's changes arrive, would otherwise be the checkpoint write it dies
    // after, and the next run would have nothing to skip.)
    const killed = await runCli(['run', '--until-caught-up'], {
      ...pipeline.env,
      SLOTLAKE_KILL_AT: 'after-checkpoint',
      SLOTLAKE_STATUS_INTERVAL: '60s',
    });
    assert.equal(killed.signal, 'SIGKILL', killed.stderr);
    const lagging = await status(pipeline);
    assert.ok(lagging.checkpoint, 'the checkpoint moved');
    assert.equal(lagging.slot.confirmedFlushLsn, slotBefore, 'the slot did not');
    assert.ok(parseLsn(lagging.checkpoint) > parseLsn(slotBefore));

    const resumed = await runPastLease(pipeline.env);
    const warnings = logEntries(resumed.stderr).filter((entry) =>
      /slot is behind the checkpoint/.test(entry.message),
    );
    assert.equal(warnings.length, 1, resumed.stderr);
    assert.equal(warnings[0]!.level, 'WARN');
    assert.equal(warnings[0]!.slotPosition, slotBefore);
    assert.equal(warnings[0]!.checkpoint, lagging.checkpoint);
    assert.equal(resumed.summary?.changes, 0, 'nothing archived twice');
    await assertSlotAtCheckpoint(pipeline);
    await assertExactlyOnce(local.s3, pipeline, reference, TABLES);

    await workload(pipeline, 'b', 2);
    const later = await runCli(['run', '--until-caught-up'], pipeline.env);
    assert.equal(later.code, 0, later.stderr);
    assert.equal(logEntries(later.stderr).filter((entry) => /behind/.test(entry.message)).length, 0);
    await assertSlotAtCheckpoint(pipeline);
    await assertExactlyOnce(local.s3, pipeline, reference, TABLES);
  } finally {
    await pipeline.close();
  }
});

/** Waits until `standby` has replayed the WAL `primary` has written so far. */
async function waitForReplay(primary: Pick<Pipeline, 'sql'>, standby: pg.Client): Promise<void> {
  const target = (await primary.sql('SELECT pg_current_wal_lsn()::text AS lsn')).rows[0] as { lsn: string };
  for (let i = 0; ; i++) {
    const row = (
      await standby.query('SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn AS replayed', [target.lsn])
    ).rows[0] as { replayed: boolean };
    if (row.replayed) return;
    assert.ok(i < 600, `the standby did not replay up to ${target.lsn}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

test('failover to a promoted standby with a synced failover slot: same system, new timeline, resumes from the checkpoint', async () => {
  const base = mkdtempSync(join(tmpdir(), 'slotlake-failover-'));
  chmodSync(base, 0o755);
  const primaryDir = join(base, 'primary');
  const standbyDir = join(base, 'standby');
  let primary: LocalPostgres | undefined;
  let standby: LocalPostgres | undefined;
  let pipeline: Pipeline | undefined;
  let standbyClient: pg.Client | undefined;
  try {
    // A cold copy of the primary is the standby's base backup (the embedded binaries have no pg_basebackup).
    primary = await startLocalPostgres({ dataDir: primaryDir });
    const admin = new pg.Client({ connectionString: primary.url() });
    await admin.connect();
    await admin.query(`SELECT pg_create_physical_replication_slot('standby1', true)`);
    await admin.end();
    await primary.stop();
    execFileSync('cp', ['-a', primaryDir, standbyDir]);
    for (const slot of readdirSync(join(standbyDir, 'pg_replslot')))
      rmSync(join(standbyDir, 'pg_replslot', slot), { recursive: true, force: true });
    writeFileSync(join(standbyDir, 'standby.signal'), '');
    // Logical walsenders never send what the standby has not received (PG17 failover slots).
    primary = await startLocalPostgres({
      dataDir: primaryDir,
      settings: { synchronized_standby_slots: 'standby1' },
    });
    pipeline = await createPipeline({ ...local.stack, postgres: primary } as TestStack, SCHEMA);
    standby = await startLocalPostgres({
      dataDir: standbyDir,
      settings: {
        primary_conninfo: `host=${primary.host} port=${primary.port} user=${primary.user} password=${primary.password} dbname=${pipeline.name}`,
        primary_slot_name: 'standby1',
        hot_standby_feedback: 'on',
      },
    });
    standbyClient = new pg.Client({ connectionString: standby.url() });
    standbyClient.on('error', () => undefined);
    await standbyClient.connect();
    await waitForReplay(pipeline, standbyClient);

    // The slot is a failover slot (setup finds it and checks it); the reference slot stays on the primary.
    await pipeline.sql(`SELECT pg_create_logical_replication_slot($1, 'pgoutput', false, false, true)`, [
      pipeline.name,
    ]);
    const reference = await createReferenceSlot(pipeline);
    await setup(pipeline);
    await workload(pipeline, 'a');
    const first = await runCli(['run', '--until-caught-up'], pipeline.env);
    assert.equal(first.code, 0, first.stderr);
    const identity = await identify(pipeline.databaseUrl);
    assert.equal(identity.timeline, 1);

    // Sync the slot to the standby. The standby persists it once the primary's slot has caught up with the
    // standby's catalog horizon: log a running-xacts record, let a run confirm past it, sync; a few rounds.
    let synced: { confirmed: string } | undefined;
    for (let round = 0; round < 10 && synced === undefined; round++) {
      await pipeline.sql('SELECT pg_log_standby_snapshot()');
      const advance = await runCli(['run', '--until-caught-up'], pipeline.env);
      assert.equal(advance.code, 0, advance.stderr);
      const checkpoint = await assertSlotAtCheckpoint(pipeline);
      await waitForReplay(pipeline, standbyClient);
      await standbyClient.query('SELECT pg_sync_replication_slots()');
      const row = (
        await standbyClient.query(
          `SELECT confirmed_flush_lsn::text AS confirmed FROM pg_replication_slots
            WHERE slot_name = $1 AND synced AND NOT temporary`,
          [pipeline.name],
        )
      ).rows[0] as { confirmed: string } | undefined;
      if (row?.confirmed === checkpoint) synced = row;
    }
    assert.ok(synced, 'the failover slot was synced to the standby at the checkpoint');
    const checkpoint = (await status(pipeline)).checkpoint!;

    // Changes committed on the primary after the last sync, replicated physically; then the primary is gone.
    const archivedBefore = (await referenceChanges(pipeline, reference, new Set(TABLES))).length;
    await workload(pipeline, 'b', 2);
    await waitForReplay(pipeline, standbyClient);
    const expected = await referenceChanges(pipeline, reference, new Set(TABLES));
    await pipeline.close();
    pipeline = { ...pipeline, close: async () => undefined };
    await primary.stop();
    primary = undefined;
    const promoted = (await standbyClient.query('SELECT pg_promote(true, 60) AS promoted')).rows[0] as {
      promoted: boolean;
    };
    assert.equal(promoted.promoted, true);
    const promotedIdentity = await identify(standby.url(pipeline.name));
    assert.equal(promotedIdentity.systemId, identity.systemId, 'a physical standby is the same system');
    assert.equal(promotedIdentity.timeline, 2, 'on a new timeline');

    const failedOver = { ...pipeline.env, DATABASE_URL: standby.url(pipeline.name) };
    const resumed = await runCli(['run', '--until-caught-up'], failedOver);
    assert.equal(resumed.code, 0, resumed.stderr);
    assert.equal(resumed.summary?.startCheckpoint, checkpoint);
    assert.equal(
      resumed.summary?.changes,
      expected.length - archivedBefore,
      'the changes made after the last sync',
    );
    const warnings = logEntries(resumed.stderr).filter((entry) => /new timeline/.test(entry.message));
    assert.equal(warnings.length, 1, resumed.stderr);
    assert.equal(warnings[0]!.level, 'WARN');
    assert.equal(warnings[0]!.previousTimeline, 1);
    assert.equal(warnings[0]!.timeline, 2);
    await assertArchiveHolds(local.s3, `${pipeline.name}/`, expected);
    const stored = await item(pipeline);
    assert.deepEqual(storedIdentity(stored), {
      systemId: identity.systemId,
      timeline: '2',
      database: pipeline.name,
      slot: pipeline.name,
    });
    const report = JSON.parse((await runCli(['status'], failedOver)).stdout) as {
      checkpoint: string;
      slot: { confirmedFlushLsn: string };
    };
    assert.equal(report.slot.confirmedFlushLsn, report.checkpoint);
  } finally {
    await standbyClient?.end().catch(() => undefined);
    await pipeline?.close();
    await standby?.stop();
    await primary?.stop();
    rmSync(base, { recursive: true, force: true });
  }
});
