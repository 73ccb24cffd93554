/**
 * A slot the server invalidated (max_slot_wal_keep_size exceeded, wal_status = lost) fails the run clearly,
 * and a slot retaining WAL close to the limit is warned about. Own server: the limit is server-wide.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { setup, status } from '../helpers/assertions.js';
import { runCli } from '../helpers/cli.js';
import { createPipeline, startTestStack, type TestStack } from '../helpers/stack.js';

let stack: TestStack;

before(async () => {
  stack = await startTestStack({
    settings: { max_slot_wal_keep_size: '64MB', min_wal_size: '32MB', max_wal_size: '64MB' },
  });
});

after(async () => {
  await stack?.stop();
});

test('retained WAL near max_slot_wal_keep_size is warned about; an invalidated slot fails with what to do', async () => {
  const pipeline = await createPipeline(
    stack,
    'CREATE TABLE t (id serial PRIMARY KEY, v text); CREATE TABLE other (v text);',
    {
      SLOTLAKE_TABLES: 'public.t',
      SLOTLAKE_LOG_LEVEL: 'WARN',
    },
  );
  try {
    await setup(pipeline);
    // ~56 MB of WAL the slot must keep: past 80% of the 64 MB limit
    await pipeline.sql(`INSERT INTO other SELECT repeat(md5(g::text), 8) FROM generate_series(1, 180000) g`);
    const near = await status(pipeline);
    assert.ok(near.slot.retainedWalBytes > 0.8 * 64 * 1024 * 1024, `retained ${near.slot.retainedWalBytes}`);
    const warned = await runCli(['run', '--max-duration', '4s'], {
      ...pipeline.env,
      SLOTLAKE_SLOT: pipeline.name,
    });
    assert.equal(warned.code, 0, warned.stderr);
    assert.match(warned.stderr, /close to max_slot_wal_keep_size/);

    // Now let the slot fall far behind (another slot-less stretch of WAL) and be invalidated.
    const behind = await createPipeline(stack, 'CREATE TABLE t (id int);');
    await setup(behind);
    for (let i = 0; i < 4; i++) {
      await behind.sql(
        `CREATE TABLE filler${i} AS SELECT repeat(md5(g::text), 8) AS v FROM generate_series(1, 120000) g`,
      );
      await behind.sql('CHECKPOINT');
    }
    const lost = await status(behind);
    assert.equal(lost.slot.walStatus, 'lost', 'the server invalidated the slot');
    const run = await runCli(['run', '--until-caught-up'], behind.env);
    assert.equal(run.code, 1);
    assert.match(run.stderr.trim().split('\n').pop()!, /invalidated.*recreate/);
    await behind.close();
  } finally {
    await pipeline.close();
  }
});
