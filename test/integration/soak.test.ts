/**
 * A randomized soak: a concurrent write workload while runs with short budgets, random kills at random
 * steps and overlapping runs follow each other; then clean runs, and the archive is checked against the
 * database's own change stream. Bounded by default (the normal suite); `npm run soak` runs a longer one
 * (SOAK_ROUNDS, SOAK_SEED to replay a sequence).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import pg from 'pg';
import { STREAM_KILL_POINTS } from '../../src/support/kill-points.js';
import { assertExactlyOnce, assertSlotAtCheckpoint, setup, useTestStack } from '../helpers/assertions.js';
import { runCli, type CliResult } from '../helpers/cli.js';
import { createReferenceSlot } from '../helpers/reference.js';
import { createPipeline } from '../helpers/stack.js';

const ROUNDS = Number(process.env.SOAK_ROUNDS ?? '8');
const SEED = Number(process.env.SOAK_SEED ?? Date.now() % 1_000_000);

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
    { SLOTLAKE_LEASE_DURATION: '2s', SLOTLAKE_BATCH_MAX_ROWS: '150', SLOTLAKE_OBJECT_MAX_BYTES: '8KiB' },
  );
  const tally = {
    runs: 0,
    kills: 0,
    killsReached: 0,
    overlaps: 0,
    leaseHeld: 0,
    deadlines: 0,
    transactions: 0,
  };
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
      }
    })();
    const check = (result: CliResult) => {
      tally.runs++;
      if (result.signal === 'SIGKILL') {
        tally.killsReached++;
        return;
      }
      assert.equal(result.code, 0, result.stderr);
      if (result.summary?.stopReason === 'lease-held') tally.leaseHeld++;
      if (result.summary?.stopReason === 'deadline') tally.deadlines++;
    };
    try {
      for (let round = 0; round < ROUNDS; round++) {
        const action = pick(['budget', 'kill', 'kill', 'overlap'] as const);
        const budget = `${3 + Math.floor(rand() * 4)}s`;
        if (action === 'budget') {
          check(await runCli(['run', '--max-duration', budget], pipeline.env));
        } else if (action === 'kill') {
          tally.kills++;
          const spec = `${pick(STREAM_KILL_POINTS)}:${1 + Math.floor(rand() * 3)}`;
          check(await runCli(['run', '--max-duration', budget], { ...pipeline.env, SLOTLAKE_KILL_AT: spec }));
        } else {
          tally.overlaps++;
          const results = await Promise.all([
            runCli(['run', '--max-duration', '5s'], pipeline.env),
            runCli(['run', '--max-duration', '5s'], pipeline.env),
          ]);
          results.forEach(check);
          // Runs that both archived must have held the lease one after the other.
          const held = results
            .map((r) => r.summary?.lease as { acquiredAtMs: number; releasedAtMs: number } | null | undefined)
            .filter((lease): lease is { acquiredAtMs: number; releasedAtMs: number } => !!lease);
          if (held.length === 2) {
            const [a, b] = held as [
              { acquiredAtMs: number; releasedAtMs: number },
              { acquiredAtMs: number; releasedAtMs: number },
            ];
            assert.ok(
              a.releasedAtMs <= b.acquiredAtMs || b.releasedAtMs <= a.acquiredAtMs,
              `leases overlapped: ${JSON.stringify(held)}`,
            );
          }
        }
      }
    } finally {
      writing = false;
      await load;
      await writer.end();
    }
    // Clean runs until everything is archived.
    const started = Date.now();
    for (;;) {
      const result = await runCli(['run', '--until-caught-up', '--max-duration', '60s'], pipeline.env);
      assert.equal(result.code, 0, result.stderr);
      if (result.summary?.stopReason === 'caught-up') break;
      assert.ok(Date.now() - started < 120_000, 'the clean runs did not catch up');
    }
    await assertSlotAtCheckpoint(pipeline);
    let lake;
    try {
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
      `soak (seed ${SEED}): ${JSON.stringify(tally)}; ${lake.records.length} changes archived exactly once\n`,
    );
  } finally {
    await pipeline.close();
  }
});
