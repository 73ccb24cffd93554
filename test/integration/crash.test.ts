/**
 * Exactly once under crashes: a run SIGKILLs itself at every step of the commit sequence (and mid-read,
 * mid-recovery); then clean runs finish the work. The archive must hold every change of the database's own
 * stream exactly once, every object under data/ must belong to a manifest, and the slot must sit at the
 * checkpoint.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { STREAM_KILL_POINTS, type KillPoint } from '../../src/support/kill-points.js';
import { parseLsn } from '../../src/lsn.js';
import {
  assertExactlyOnce,
  assertSlotAtCheckpoint,
  setup,
  status,
  useTestStack,
} from '../helpers/assertions.js';
import { readLake } from '../helpers/lake.js';
import { runCli, type CliResult } from '../helpers/cli.js';
import { createReferenceSlot } from '../helpers/reference.js';
import { createPipeline, type Pipeline } from '../helpers/stack.js';

const local = useTestStack();

const FAST_LEASE = {
  SLOTLAKE_LEASE_DURATION: '2s',
  SLOTLAKE_BATCH_MAX_ROWS: '40', // several batches per run
  SLOTLAKE_OBJECT_MAX_BYTES: '2KiB', // objects close (and upload) mid-batch
};

/** Runs until a run gets the lease (an expired lease of a killed run frees up within its duration). */
export async function cleanRun(
  env: Record<string, string>,
  args = ['run', '--until-caught-up'],
): Promise<CliResult> {
  const started = Date.now();
  for (;;) {
    const result = await runCli(args, env);
    assert.equal(result.code, 0, `clean run failed: ${result.stderr}`);
    if (result.summary?.stopReason !== 'lease-held') return result;
    assert.ok(Date.now() - started < 60_000, 'the lease of the killed run never expired');
  }
}

async function workload(pipeline: Pipeline, round: number): Promise<void> {
  await pipeline.sql(
    `INSERT INTO a (round, v) SELECT $1, repeat('a', 60) || g FROM generate_series(1, 30) g`,
    [round],
  );
  await pipeline.sql(
    `BEGIN; INSERT INTO b (round, v) SELECT $1, 'b' || g FROM generate_series(1, 25) g;
     UPDATE a SET v = v || '!' WHERE round = $1 AND id % 3 = 0; COMMIT`.replaceAll('$1', String(round)),
  );
  await pipeline.sql(`DELETE FROM b WHERE round = $1 AND id % 4 = 0`, [round]);
  // one transaction large enough to split objects and to span batches
  await pipeline.sql(
    `INSERT INTO a (round, v) SELECT $1, repeat('z', 100) || g FROM generate_series(1, 120) g`,
    [round],
  );
}

/** Readers who go by manifests/ never see an uncommitted object: even right after a crash. */
async function assertManifestsCommitted(pipeline: Pipeline): Promise<void> {
  const lake = await readLake(local.s3, `${pipeline.name}/`);
  const report = await status(pipeline);
  const stored = report.checkpoint === null ? null : parseLsn(report.checkpoint);
  const dataKeys = new Set(lake.dataKeys);
  for (const manifest of lake.manifests) {
    assert.ok(
      stored !== null && parseLsn(manifest.checkpoint as string) <= stored,
      'manifest of a committed batch',
    );
    for (const object of manifest.objects) assert.ok(dataKeys.has(object.key), `${object.key} exists`);
  }
}

async function crashScenario(point: KillPoint, occurrence: number): Promise<void> {
  const pipeline = await createPipeline(
    local.stack,
    `CREATE TABLE a (id serial PRIMARY KEY, round int, v text); CREATE TABLE b (id serial PRIMARY KEY, round int, v text);`,
    FAST_LEASE,
  );
  try {
    await setup(pipeline);
    const reference = await createReferenceSlot(pipeline);
    await workload(pipeline, 1);
    if (point === 'mid-recovery') {
      // leave an uncommitted batch behind first, so that recovery has something to do
      const first = await runCli(['run', '--until-caught-up'], {
        ...pipeline.env,
        SLOTLAKE_KILL_AT: 'after-upload',
      });
      assert.equal(first.signal, 'SIGKILL', first.stderr);
    }
    const killed = await runCli(['run', '--until-caught-up'], {
      ...pipeline.env,
      SLOTLAKE_KILL_AT: `${point}:${occurrence}`,
    });
    if (point === 'mid-recovery') {
      // the killed run may have to wait for the earlier lease; retry until it reaches the kill point
      let result = killed;
      const started = Date.now();
      while (result.summary?.stopReason === 'lease-held' && Date.now() - started < 30_000) {
        result = await runCli(['run', '--until-caught-up'], {
          ...pipeline.env,
          SLOTLAKE_KILL_AT: `${point}:${occurrence}`,
        });
      }
      assert.equal(result.signal, 'SIGKILL', `expected to die at ${point}: ${result.stderr}`);
    } else {
      assert.equal(
        killed.signal,
        'SIGKILL',
        `expected to die at ${point}: code ${killed.code} ${killed.stderr}`,
      );
    }
    await assertManifestsCommitted(pipeline);
    await workload(pipeline, 2);
    // Batches cut differently from the killed run's, so that no object of the crashed batch is simply
    // overwritten by an identical one: whatever it left must be found and removed.
    await cleanRun({ ...pipeline.env, SLOTLAKE_BATCH_MAX_ROWS: '1000', SLOTLAKE_OBJECT_MAX_BYTES: '1MiB' });
    await assertSlotAtCheckpoint(pipeline);
    await assertExactlyOnce(local.s3, pipeline, reference, ['public.a', 'public.b']);
  } finally {
    await pipeline.close();
  }
}

describe('a crash at any step loses and duplicates nothing', () => {
  for (const point of STREAM_KILL_POINTS) {
    for (const occurrence of point === 'after-lease' || point === 'mid-recovery' ? [1] : [1, 2]) {
      test(`killed at ${point} (occurrence ${occurrence})`, () => crashScenario(point, occurrence));
    }
  }
});
