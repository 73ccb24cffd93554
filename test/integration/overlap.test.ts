/**
 * Overlapping runs and a slot that disagrees with the checkpoint.
 * - Two or three runs started at the same moment, many times: exactly one archives, the others exit 0 with
 *   `lease-held` and write nothing — checked on the store's side (test/helpers/lease-history.ts): the
 *   acquisitions and writes DynamoDB accepted, seen on the wire; the archive stays exactly once.
 * - A slot ahead of the checkpoint (consumed by something else) stops the run with both positions named,
 *   unless SLOTLAKE_SLOT_POSITION_POLICY=trust-slot; a slot behind the checkpoint is caught up without
 *   writing anything twice.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseLsn } from '../../src/lsn.js';
import {
  assertExactlyOnce,
  assertSlotAtCheckpoint,
  readCheckpointItem,
  setup,
  slotConfirmedFlush,
  useTestStack,
} from '../helpers/assertions.js';
import { runCli, runKilledAt, runWhenLeaseFree, startCli } from '../helpers/cli.js';
import { assertLeaseExclusive, startLeaseObserver } from '../helpers/lease-history.js';
import { waitFor } from '../helpers/wait.js';
import { readLake } from '../helpers/lake.js';
import { createReferenceSlot } from '../helpers/reference.js';
import { createPipeline } from '../helpers/stack.js';

const local = useTestStack();

describe('overlapping runs', () => {
  test('runs started together: exactly one archives, the others find the lease held and write nothing', async () => {
    // Every run talks to DynamoDB through the observer: who wrote what, as the store accepted it.
    const observer = await startLeaseObserver(local.stack.dynamo.endpoint);
    const pipeline = await createPipeline(local.stack, 'CREATE TABLE t (id serial PRIMARY KEY, v text);', {
      SLOTLAKE_LEASE_DURATION: '10s',
      SLOTLAKE_BATCH_MAX_AGE: '1s',
    });
    try {
      await setup(pipeline);
      const reference = await createReferenceSlot(pipeline);
      const env = observer.env(pipeline.env);
      const rounds = 4;
      const archivers: string[] = [];
      let leaseHeld = 0;
      for (let round = 0; round < rounds; round++) {
        await pipeline.sql(`INSERT INTO t (v) SELECT 'r${round}-' || g FROM generate_series(1, 20) g`);
        const written = parseLsn(
          ((await pipeline.sql('SELECT pg_current_wal_lsn()::text AS l')).rows[0] as { l: string }).l,
        );
        const runners = round % 2 === 0 ? 3 : 2;
        // Runs without a budget: the one holding the lease streams until it is stopped, so every other run
        // starts while it holds the lease, however slowly the processes come up.
        const runs = Array.from({ length: runners }, () => startCli(['run'], env));
        await waitFor(
          `${runners - 1} of ${runners} runs to give up`,
          () => runs.filter((r) => r.ended).length >= runners - 1,
          {
            withinMs: 60_000,
          },
        );
        const holder = runs.find((run) => !run.ended);
        if (!holder)
          assert.fail(
            `round ${round}: no run streams: ${JSON.stringify(await Promise.all(runs.map((r) => r.result)))}`,
          );
        await waitFor(
          `round ${round}'s changes to be checkpointed`,
          async () => {
            if (holder.ended)
              assert.fail(`round ${round}: the holder ended first: ${JSON.stringify(await holder.result)}`);
            return parseLsn((await readCheckpointItem(pipeline))?.lsn?.S ?? '0/0') >= written;
          },
          { withinMs: 60_000 },
        );
        holder.kill('SIGTERM');
        const results = await Promise.all(runs.map((run) => run.result));
        const archiver = await holder.result;
        assert.equal(archiver.code, 0, archiver.stderr);
        assert.equal(archiver.summary?.stopReason, 'signal', archiver.stdout);
        assert.equal(archiver.summary?.changes, 20, JSON.stringify(archiver.summary) + archiver.stderr);
        archivers.push(archiver.summary?.runId as string);
        for (const other of results.filter((result) => result !== archiver)) {
          assert.equal(other.code, 0, other.stderr);
          assert.equal(other.summary?.stopReason, 'lease-held', other.stdout);
          assert.equal(other.summary?.changes, 0);
          assert.equal(other.summary?.objects, 0);
          const runId = other.summary?.runId as string;
          assert.ok(observer.owners(pipeline.name).has(runId), 'the lease-held run asked the store');
          assert.deepEqual(
            observer.writes(pipeline.name).filter((write) => write.owner === runId),
            [],
            'the store accepted no write of a lease-held run',
          );
          leaseHeld++;
        }
      }
      assert.equal(leaseHeld, (rounds / 2) * 2 + (rounds / 2) * 1);
      // The store's own history: one acquisition per round, by that round's archiver, fences growing, and
      // no write under a fence after a later acquisition.
      const acquisitions = assertLeaseExclusive(observer.writes(pipeline.name));
      assert.deepEqual(
        acquisitions.map((acquisition) => acquisition.owner),
        archivers,
      );
      await assertSlotAtCheckpoint(pipeline);
      await assertExactlyOnce(local.s3, pipeline, reference, ['public.t']);
    } finally {
      await pipeline.close();
      await observer.stop();
    }
  });
});

describe('checkpoint vs slot', () => {
  test('a slot ahead of the checkpoint fails with both positions; trust-slot accepts the gap', async () => {
    const pipeline = await createPipeline(local.stack, 'CREATE TABLE t (id serial PRIMARY KEY, v text);');
    try {
      await setup(pipeline);
      await pipeline.sql(`INSERT INTO t (v) VALUES ('archived')`);
      const first = await runCli(['run', '--until-caught-up'], pipeline.env);
      assert.equal(first.code, 0, first.stderr);
      const checkpoint = await assertSlotAtCheckpoint(pipeline);
      assert.equal(first.summary?.checkpoint, checkpoint);
      // someone else consumes the slot
      await pipeline.sql(`INSERT INTO t (v) VALUES ('consumed elsewhere')`);
      const advanced = await pipeline.sql(
        `SELECT end_lsn::text AS lsn FROM pg_replication_slot_advance($1, pg_current_wal_lsn())`,
        [pipeline.name],
      );
      const slotLsn = (advanced.rows[0] as { lsn: string }).lsn;
      const refused = await runCli(['run', '--until-caught-up'], pipeline.env);
      assert.equal(refused.code, 1, `${refused.stdout}\n${refused.stderr}`);
      const line = refused.stderr.trim().split('\n').pop()!;
      assert.match(line, /ahead of the checkpoint/);
      assert.ok(line.includes(slotLsn) && line.includes(checkpoint), `names both positions: ${line}`);
      assert.match(line, /SLOTLAKE_SLOT_POSITION_POLICY=trust-slot/);
      assert.equal(
        (await readCheckpointItem(pipeline))?.lsn?.S,
        checkpoint,
        'the refused run changed nothing',
      );
      assert.equal(await slotConfirmedFlush(pipeline), slotLsn, 'nor the slot');

      const trusted = await runCli(['run', '--until-caught-up'], {
        ...pipeline.env,
        SLOTLAKE_SLOT_POSITION_POLICY: 'trust-slot',
      });
      assert.equal(trusted.code, 0, trusted.stderr);
      assert.match(trusted.stderr, /ahead of the checkpoint/);
      await assertSlotAtCheckpoint(pipeline);
      const lake = await readLake(local.s3, `${pipeline.name}/`);
      assert.deepEqual(
        lake.records.map((r) => r.record.after?.v),
        ['archived'],
        'the consumed change is not invented',
      );
    } finally {
      await pipeline.close();
    }
  });

  test('a slot behind the checkpoint is caught up; the archived changes are not written again', async () => {
    const pipeline = await createPipeline(local.stack, 'CREATE TABLE t (id serial PRIMARY KEY, v text);', {
      SLOTLAKE_LEASE_DURATION: '3s',
    });
    try {
      await setup(pipeline);
      const reference = await createReferenceSlot(pipeline);
      await pipeline.sql(`INSERT INTO t (v) SELECT 'x' || g FROM generate_series(1, 10) g`);
      // checkpoint written, acknowledgement never sent: the slot stays behind
      await runKilledAt(['run', '--until-caught-up'], pipeline.env, 'after-checkpoint');
      const checkpoint = (await readCheckpointItem(pipeline))?.lsn?.S;
      assert.ok(checkpoint);
      const slotBehind = await slotConfirmedFlush(pipeline);
      assert.ok(
        parseLsn(slotBehind!) < parseLsn(checkpoint),
        `the slot (${slotBehind}) is behind ${checkpoint}`,
      );
      await pipeline.sql(`INSERT INTO t (v) VALUES ('after')`);
      const result = await runWhenLeaseFree(['run', '--until-caught-up'], pipeline.env);
      assert.equal(result.code, 0, result.stderr);
      assert.equal(result.summary?.changes, 1, 'only the new change is written');
      await assertSlotAtCheckpoint(pipeline);
      await assertExactlyOnce(local.s3, pipeline, reference, ['public.t']);
    } finally {
      await pipeline.close();
    }
  });

  test('a missing slot with a checkpoint says so and how to recover', async () => {
    const pipeline = await createPipeline(local.stack, 'CREATE TABLE t (id serial PRIMARY KEY, v text);');
    try {
      await setup(pipeline);
      await pipeline.sql(`INSERT INTO t (v) VALUES ('one')`);
      assert.equal((await runCli(['run', '--until-caught-up'], pipeline.env)).code, 0);
      await pipeline.sql(`SELECT pg_drop_replication_slot($1)`, [pipeline.name]);
      const result = await runCli(['run', '--until-caught-up'], pipeline.env);
      assert.equal(result.code, 1);
      assert.match(result.stderr.trim().split('\n').pop()!, /replication slot "[^"]+" does not exist/);
    } finally {
      await pipeline.close();
    }
  });
});
