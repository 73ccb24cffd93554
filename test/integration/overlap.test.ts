/**
 * Overlapping runs and a slot that disagrees with the checkpoint.
 * - Two or three runs started at the same moment, many times: exactly one archives, the others exit 0 at
 *   once with `lease-held` and touch nothing; the archive stays exactly once.
 * - A slot ahead of the checkpoint (consumed by something else) stops the run with both positions named,
 *   unless SLOTLAKE_SLOT_POSITION_POLICY=trust-slot; a slot behind the checkpoint is caught up without
 *   writing anything twice.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  assertExactlyOnce,
  assertSlotAtCheckpoint,
  setup,
  status,
  useTestStack,
} from '../helpers/assertions.js';
import { runCli } from '../helpers/cli.js';
import { readLake } from '../helpers/lake.js';
import { createReferenceSlot } from '../helpers/reference.js';
import { createPipeline } from '../helpers/stack.js';

const local = useTestStack();

describe('overlapping runs', () => {
  test('runs started together: exactly one archives, the others report lease-held', async () => {
    const pipeline = await createPipeline(local.stack, 'CREATE TABLE t (id serial PRIMARY KEY, v text);', {
      SLOTLAKE_LEASE_DURATION: '10s',
    });
    try {
      await setup(pipeline);
      const reference = await createReferenceSlot(pipeline);
      const rounds = 6;
      let leaseHeld = 0;
      for (let round = 0; round < rounds; round++) {
        await pipeline.sql(`INSERT INTO t (v) SELECT 'r${round}-' || g FROM generate_series(1, 20) g`);
        const runners = round % 2 === 0 ? 3 : 2;
        // Long enough that every run is alive while the others start: they overlap for sure.
        const results = await Promise.all(
          Array.from({ length: runners }, () => runCli(['run', '--max-duration', '4s'], pipeline.env)),
        );
        for (const result of results) assert.equal(result.code, 0, result.stderr);
        const archivers = results.filter((result) => result.summary?.stopReason !== 'lease-held');
        const held = results.filter((result) => result.summary?.stopReason === 'lease-held');
        assert.equal(archivers.length, 1, `round ${round}: exactly one run archives`);
        assert.equal(
          archivers[0]!.summary?.changes,
          20,
          JSON.stringify(archivers[0]!.summary) + archivers[0]!.stderr,
        );
        for (const other of held) {
          assert.equal(other.summary?.changes, 0);
          assert.equal(other.summary?.objects, 0);
          assert.ok(other.elapsedMs < 4_000, 'a lease-held run exits at once');
        }
        leaseHeld += held.length;
      }
      assert.equal(leaseHeld, 3 * 2 + 3 * 1);
      await assertSlotAtCheckpoint(pipeline);
      await assertExactlyOnce(local.s3, pipeline, reference, ['public.t']);
    } finally {
      await pipeline.close();
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
      const checkpoint = first.summary?.checkpoint as string;
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
      assert.equal((await status(pipeline)).checkpoint, checkpoint, 'the refused run changed nothing');

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

  test('a slot behind the checkpoint is caught up; archived changes are skipped, not written again', async () => {
    const pipeline = await createPipeline(local.stack, 'CREATE TABLE t (id serial PRIMARY KEY, v text);', {
      SLOTLAKE_LEASE_DURATION: '2s',
    });
    try {
      await setup(pipeline);
      const reference = await createReferenceSlot(pipeline);
      await pipeline.sql(`INSERT INTO t (v) SELECT 'x' || g FROM generate_series(1, 10) g`);
      // checkpoint written, acknowledgement never sent: the slot stays behind
      const killed = await runCli(['run', '--until-caught-up'], {
        ...pipeline.env,
        SLOTLAKE_KILL_AT: 'after-checkpoint',
      });
      assert.equal(killed.signal, 'SIGKILL');
      const behind = await status(pipeline);
      assert.ok(behind.checkpoint);
      assert.notEqual(behind.slot.confirmedFlushLsn, behind.checkpoint, 'the slot is behind the checkpoint');
      await pipeline.sql(`INSERT INTO t (v) VALUES ('after')`);
      let result = await runCli(['run', '--until-caught-up'], pipeline.env);
      while (result.summary?.stopReason === 'lease-held')
        result = await runCli(['run', '--until-caught-up'], pipeline.env);
      assert.equal(result.code, 0, result.stderr);
      assert.equal(result.summary?.changes, 1, 'only the new change is written');
      assert.ok((result.summary?.skippedTransactions as number) >= 0);
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
