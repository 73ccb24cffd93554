/**
 * SLOTLAKE_PLUGIN=wal2json end to end, on Debian's PostgreSQL 15 with the wal2json package: the same
 * archive, records and guarantees as with pgoutput, checked against a test_decoding slot.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { S3Client } from '@aws-sdk/client-s3';
import { debianPostgresBinDir } from '../../src/devstack/postgres.js';
import { assertExactlyOnce, assertSlotAtCheckpoint, setup, testS3Client } from '../helpers/assertions.js';
import { runCli } from '../helpers/cli.js';
import { readLake } from '../helpers/lake.js';
import { createReferenceSlot } from '../helpers/reference.js';
import { createPipeline, startTestStack, type TestStack } from '../helpers/stack.js';

let stack: TestStack;
let s3: S3Client;

before(async () => {
  const binDir = debianPostgresBinDir(15);
  assert.ok(binDir, 'PostgreSQL 15 is missing: apt-get install postgresql-15 postgresql-15-wal2json');
  stack = await startTestStack({ binDir });
  s3 = testS3Client(stack);
});

after(async () => {
  s3?.destroy();
  await stack?.stop();
});

test('wal2json: changes archived exactly once with the contract values; resume', async () => {
  const pipeline = await createPipeline(
    stack,
    `CREATE TABLE items (id bigint PRIMARY KEY, name text, price numeric(10,2), tags text[], seen timestamptz,
       data jsonb, ok bool, raw bytea);
     CREATE TABLE full_rows (id int PRIMARY KEY, v text);
     ALTER TABLE full_rows REPLICA IDENTITY FULL;`,
    { SLOTLAKE_PLUGIN: 'wal2json' },
  );
  try {
    await setup(pipeline);
    const reference = await createReferenceSlot(pipeline);
    await pipeline.sql(`INSERT INTO items VALUES
      (9223372036854775807, 'a "quoted" ☃', 12.50, '{x,"y z"}', '2024-02-29 13:14:15.5+02', '{"k": [1]}', true, '\\x00ff'),
      (2, NULL, NULL, NULL, NULL, NULL, false, NULL)`);
    await pipeline.sql(`UPDATE items SET name = 'b' WHERE id = 2`);
    await pipeline.sql(`INSERT INTO full_rows VALUES (1, 'one'), (2, 'two')`);
    await pipeline.sql(`UPDATE full_rows SET v = 'uno' WHERE id = 1`);
    await pipeline.sql(`DELETE FROM full_rows WHERE id = 2`);
    await pipeline.sql(`TRUNCATE full_rows`);
    const run = await runCli(['run', '--until-caught-up'], pipeline.env);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.summary?.stopReason, 'caught-up');
    await assertSlotAtCheckpoint(pipeline);
    const lake = await assertExactlyOnce(s3, pipeline, reference, ['public.items', 'public.full_rows']);
    const first = lake.records.find((r) => r.record.op === 'c' && r.record.source.table === 'items')!;
    assert.ok(first.line.includes('"id":9223372036854775807,'), 'int8 exact');
    assert.deepEqual(
      { ...first.record.after, id: undefined },
      {
        id: undefined,
        name: 'a "quoted" ☃',
        price: '12.50',
        tags: ['x', 'y z'],
        seen: '2024-02-29T11:14:15.5Z',
        data: '{"k": [1]}',
        ok: true,
        raw: Buffer.from([0, 255]).toString('base64'),
      },
    );
    const update = lake.records.find(
      (r) => r.record.op === 'u' && r.record.source.table === 'full_rows',
    )!.record;
    assert.deepEqual(update.before, { id: 1, v: 'one' });
    assert.deepEqual(update.after, { id: 1, v: 'uno' });
    assert.equal(lake.records.filter((r) => r.record.op === 't').length, 1);

    await pipeline.sql(`INSERT INTO items (id, name) VALUES (3, 'later')`);
    const second = await runCli(['run', '--until-caught-up'], pipeline.env);
    assert.equal(second.code, 0, second.stderr);
    assert.equal(second.summary?.changes, 1);
    await assertSlotAtCheckpoint(pipeline);
    await assertExactlyOnce(s3, pipeline, reference, ['public.items', 'public.full_rows']);
    assert.ok((await readLake(s3, `${pipeline.name}/`)).manifestKeys.length >= 2);
  } finally {
    await pipeline.close();
  }
});
