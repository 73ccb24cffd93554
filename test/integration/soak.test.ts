/**
 * A randomized soak: a concurrent write workload while runs with short budgets, random kills at random
 * steps and overlapping runs follow each other; then clean runs, and the archive is checked against the
 * database's own change stream, value by value. Every kill must land (the run announces the kill point and
 * dies there; mid-recovery is armed only after a kill that left an intent), and the store's own history of
 * accepted writes must show the lease exclusive (test/helpers/lease-history.ts). Bounded by default (the
 * normal suite); `npm run soak` runs a longer one (SOAK_ROUNDS; the seed is printed first, SOAK_SEED
 * replays a sequence).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import pg from 'pg';
import { randomInt } from 'node:crypto';
import { STREAM_KILL_POINTS, type KillPoint } from '../../src/support/kill-points.js';
import { assertExactlyOnce, assertSlotAtCheckpoint, setup, useTestStack } from '../helpers/assertions.js';
import { loggedKinds, runCli, runKilledAt, runWhenLeaseFree, type CliResult } from '../helpers/cli.js';
import { assertLeaseExclusive, startLeaseObserver } from '../helpers/lease-history.js';
import { createReferenceSlot } from '../helpers/reference.js';
import { createPipeline } from '../helpers/stack.js';

const ROUNDS = Number(process.env.SOAK_ROUNDS ?? '8');
/** The sequence's seed: SOAK_SEED to replay one, else a fresh random one; printed before anything runs. */
const SEED = Number(process.env.SOAK_SEED ?? randomInt(1, 2 ** 31));
assert.ok(
  Number.isSafeInteger(SEED) && SEED > 0,
  `SOAK_SEED must be a positive integer: ${process.env.SOAK_SEED}`,
);
process.stderr.write(`soak: seed ${SEED}, ${ROUNDS} rounds (replay with SOAK_SEED=${SEED})\n`);

/** Kill points that leave an intent behind, so that the next run's recovery has objects to delete. */
const LEAVES_INTENT: readonly KillPoint[] = ['after-intent', 'mid-upload', 'after-upload'];

const local = useTestStack();

/** A small seeded PRNG (mulberry32), so a failing sequence can be replayed with SOAK_SEED. */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

test(`soak: ${ROUNDS} rounds of short budgets, kills and overlaps under a write load (seed ${SEED})`, async () => {
  const rand = random(SEED);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(rand() * items.length)]!;
  const pipeline = await createPipeline(
    local.stack,
    `CREATE TABLE orders (id serial PRIMARY KEY, status text, total numeric(10,2), note text);
     CREATE TABLE items (id serial PRIMARY KEY, order_id int, sku text);
     CREATE TABLE log (id serial PRIMARY KEY, line text);`,
    { SLOTLAKE_LEASE_DURATION: '4s', SLOTLAKE_BATCH_MAX_ROWS: '150', SLOTLAKE_OBJECT_MAX_BYTES: '8KiB' },
  );
  const tally = {
    runs: 0,
    kills: 0,
    killsLanded: 0,
    leaseLost: 0,
    overlaps: 0,
    leaseHeld: 0,
    deadlines: 0,
    transactions: 0,
  };
  const observer = await startLeaseObserver(local.stack.dynamo.endpoint);
  const env = observer.env(pipeline.env);
  const started = performance.now();
  let cleanMs: number;
  try {
    await setup(pipeline);
    const reference = await createReferenceSlot(pipeline);
    const writer = new pg.Client({ connectionString: pipeline.databaseUrl });
    await writer.connect();
    let writing = true;
    const load = (async () => {
      let n = 0;
      while (writing) {
        n++;
        const kind = n % 11;
        if (kind === 10) {
          // a larger transaction that can be cut by a deadline
          await writer.query(
            `INSERT INTO log (line) SELECT repeat('l', 80) || g FROM generate_series(1, 800) g`,
          );
        } else {
          await writer.query('BEGIN');
          await writer.query(
            `INSERT INTO orders (status, total, note) SELECT 'new', g * 1.5, 'n' || g FROM generate_series(1, 5) g`,
          );
          await writer.query(
            `INSERT INTO items (order_id, sku) SELECT id, 'sku-' || id FROM orders ORDER BY id DESC LIMIT 3`,
          );
          await writer.query(
            `UPDATE orders SET status = 'paid' WHERE id IN (SELECT id FROM orders WHERE status = 'new' LIMIT 2)`,
          );
          if (kind === 5)
            await writer.query(`DELETE FROM items WHERE id IN (SELECT id FROM items ORDER BY id LIMIT 4)`);
          await writer.query('COMMIT');
        }
        tally.transactions++;
        // paced, so that the archive to check stays in the tens of thousands of changes per minute
        await new Promise((resolve) => setTimeout(resolve, 15));
      }
    })();
    // With short leases on a loaded machine a run may miss its renewals and fence itself: it fails with
    // lease-lost (a handled outcome: it wrote nothing more and the next run resumes). Any other failure
    // fails the soak.
    const lostItsLease = (result: CliResult) =>
      result.code === 1 && loggedKinds(result).includes('lease-lost');
    const check = (result: CliResult) => {
      tally.runs++;
      if (lostItsLease(result)) {
        tally.leaseLost++;
        return;
      }
      assert.equal(result.code, 0, `a run that was not armed to die failed: ${result.stderr}`);
      if (result.summary?.stopReason === 'lease-held') tally.leaseHeld++;
      if (result.summary?.stopReason === 'deadline') tally.deadlines++;
    };
    try {
      let lastKill: KillPoint | undefined;
      for (let round = 0; round < ROUNDS; round++) {
        const action = pick(['budget', 'kill', 'kill', 'overlap'] as const);
        const budget = `${3 + Math.floor(rand() * 4)}s`;
        const killedBefore = lastKill;
        lastKill = undefined;
        if (action === 'budget') {
          check(await runCli(['run', '--max-duration', budget], env));
        } else if (action === 'kill') {
          tally.kills++;
          // mid-recovery only where there is something to recover; occurrences 1-3 of the other points
          // (the write load fills a batch every few hundred milliseconds, so each is reached).
          const point: KillPoint =
            killedBefore && LEAVES_INTENT.includes(killedBefore) && rand() < 0.5
              ? 'mid-recovery'
              : pick(STREAM_KILL_POINTS.filter((p) => p !== 'mid-recovery'));
          const occurrence =
            point === 'mid-recovery' || point === 'after-lease' ? 1 : 1 + Math.floor(rand() * 3);
          // Waits out a held lease first; fails unless it died at exactly this kill point within its budget
          // (armed again, at most twice, after a run that lost its lease first).
          const killed = await runKilledAt(['run', '--max-duration', '40s'], env, `${point}:${occurrence}`);
          tally.runs += 1 + killed.leaseLostRuns;
          tally.leaseLost += killed.leaseLostRuns;
          tally.killsLanded += killed.killPoint === point ? 1 : 0;
          lastKill = point;
        } else {
          tally.overlaps++;
          const results = await Promise.all([
            runCli(['run', '--max-duration', '5s'], env),
            runCli(['run', '--max-duration', '5s'], env),
          ]);
          results.forEach(check);
        }
      }
    } finally {
      writing = false;
      await load;
      await writer.end();
    }
    const roundsMs = performance.now() - started;
    // Clean runs until everything is archived (a few: a run may spend its budget on recovery).
    for (let attempt = 1; ; attempt++) {
      const result = await runWhenLeaseFree(['run', '--until-caught-up', '--max-duration', '60s'], env);
      if (lostItsLease(result)) tally.leaseLost++;
      else {
        assert.equal(result.code, 0, result.stderr);
        if (result.summary?.stopReason === 'caught-up') break;
      }
      assert.ok(attempt < 4, `the clean runs did not catch up: ${result.stdout}${result.stderr}`);
    }
    assert.equal(tally.killsLanded, tally.kills, 'every kill landed at its kill point');
    // The lease as the store applied it: no write under a fence after a later acquisition.
    const acquisitions = assertLeaseExclusive(observer.writes(pipeline.name));
    assert.ok(acquisitions.length >= tally.kills, 'every killed run had acquired the lease');
    await assertSlotAtCheckpoint(pipeline);
    let lake;
    try {
      cleanMs = performance.now() - started - roundsMs;
      lake = await assertExactlyOnce(local.s3, pipeline, reference, [
        'public.orders',
        'public.items',
        'public.log',
      ]);
    } catch (error) {
      const { execSync } = await import('node:child_process');
      const files = execSync(
        `cd ${local.stack.dir}/s3 && find . -type f | sed -E 's/\\._S3rver_(object|object\\.md5|metadata\\.json)$//' | sort | uniq -c | grep -v ' 3 ' | head -40; find . -type f | wc -l`,
      ).toString();
      throw new Error(
        `${(error as Error).message}
${files}`,
        { cause: error },
      );
    }
    process.stderr.write(
      `soak (seed ${SEED}): ${JSON.stringify(tally)}; ${lake.records.length} changes archived exactly once; ` +
        `rounds ${Math.round(roundsMs / 1000)} s, clean runs ${Math.round(cleanMs / 1000)} s, ` +
        `check ${Math.round((performance.now() - started - roundsMs - cleanMs) / 1000)} s\n`,
    );
  } finally {
    await pipeline.close();
    await observer.stop();
  }
});
