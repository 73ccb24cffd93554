/**
 * Exactly once under crashes: a run SIGKILLs itself at every step of the commit sequence (and mid-read,
 * mid-recovery) — the test checks it announced that kill point on stderr and died there, within a budget —
 * then clean runs finish the work. The archive must hold every change of the database's own
 * stream exactly once with the database's values, every object under data/ must belong to a manifest, and
 * the slot must sit at the checkpoint.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { STREAM_KILL_POINTS, type KillPoint } from '../../src/support/kill-points.js';
import { parseLsn } from '../../src/lsn.js';
import {
  assertExactlyOnce,
  assertSlotAtCheckpoint,
  readCheckpointItem,
  setup,
  useTestStack,
} from '../helpers/assertions.js';
import { readLake } from '../helpers/lake.js';
import { runKilledAt, runWhenLeaseFree, type CliResult } from '../helpers/cli.js';
import { createReferenceSlot } from '../helpers/reference.js';
import { createPipeline, type Pipeline } from '../helpers/stack.js';

const local = useTestStack();

const FAST_LEASE = {
  SLOTLAKE_LEASE_DURATION: '3s', // renewals every 1 s, the fence 2 s after: a second of slack for a renewal on a loaded machine
  // The killed run is dead: the run that takes its lease over waits 1 s past its expiry, not 5 s, before
  // deleting its objects (bytes a SIGKILLed process left in its socket reach the local S3 within
  // milliseconds; the full grace against a live old holder is fencing.test.ts's business).
  SLOTLAKE_TEST_TAKEOVER_GRACE: '1s',
  SLOTLAKE_BATCH_MAX_ROWS: '40', // several batches per run
  SLOTLAKE_OBJECT_MAX_BYTES: '2KiB', // objects close (and upload) mid-batch
};

/** A run that must finish cleanly, once the lease of a killed run expired (within 60 s). */
export async function cleanRun(
  env: Record<string, string>,
  args = ['run', '--until-caught-up'],
): Promise<CliResult> {
  const result = await runWhenLeaseFree(args, env);
  assert.equal(result.code, 0, `clean run failed: ${result.stderr}`);
  return result;
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
  const checkpoint = (await readCheckpointItem(pipeline))?.lsn?.S;
  const stored = checkpoint === undefined ? null : parseLsn(checkpoint);
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
      await runKilledAt(['run', '--until-caught-up'], pipeline.env, 'after-upload');
    }
    // Dies at the kill point, or the test fails: a run that hangs or finishes first proves nothing.
    // (For mid-recovery it first waits out the killed run's lease.)
    await runKilledAt(['run', '--until-caught-up'], pipeline.env, `${point}:${occurrence}`);
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
