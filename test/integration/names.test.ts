/**
 * Names that need quoting, end to end: Postgres keeps a quoted identifier exactly (case, spaces, quotes,
 * dots, slashes, any UTF-8), and so must slotlake — in the publication it creates and streams from, in
 * SLOTLAKE_TABLES (read as SQL reads identifiers), in wal2json's `add-tables`, and in S3 keys, where each of
 * schema and table is one key segment escaped per contract §3 while records and manifests carry the true
 * names. Slot names Postgres cannot hold are refused before anything connects.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { debianPostgresBinDir, startLocalPostgres } from '../../src/devstack/postgres.js';
import { assertExactlyOnce, assertSlotAtCheckpoint, setup, useTestStack } from '../helpers/assertions.js';
import { runCli } from '../helpers/cli.js';
import { startHttpFaultProxy } from '../helpers/http-fault-proxy.js';
import type { Lake } from '../helpers/lake.js';
import { createReferenceSlot } from '../helpers/reference.js';
import { operatorLines } from '../helpers/runs.js';
import { createPipeline, type Pipeline, type TestStack } from '../helpers/stack.js';
import { startTcpProxy } from '../helpers/tcp-proxy.js';

const local = useTestStack();

const SIMPLE_SCHEMA = 'CREATE TABLE orders (id serial PRIMARY KEY, v text);';

for (const publication of ['OrdersPub', 'orders pub', 'pub "quoted"', "it's", 'Grüße ☃ pub']) {
  test(`publication ${JSON.stringify(publication)}: setup creates it by its exact name, runs stream from it`, async () => {
    const pipeline = await createPipeline(local.stack, SIMPLE_SCHEMA, { SLOTLAKE_PUBLICATION: publication });
    try {
      await setup(pipeline);
      const publications = await pipeline.sql('SELECT pubname, puballtables FROM pg_publication');
      assert.deepEqual(publications.rows, [{ pubname: publication, puballtables: true }]);
      const again = await runCli(['setup'], pipeline.env);
      assert.equal(again.code, 0, again.stderr);
      assert.equal((JSON.parse(again.stdout) as { publication: string }).publication, 'exists');
      const reference = await createReferenceSlot(pipeline);
      await pipeline.sql(`INSERT INTO orders (v) SELECT 'o' || g FROM generate_series(1, 4) g`);
      await pipeline.sql(`UPDATE orders SET v = 'changed' WHERE id = 2`);
      const run = await runCli(['run', '--until-caught-up'], pipeline.env);
      assert.equal(run.code, 0, run.stderr);
      assert.equal(run.summary?.changes, 5);
      await assertSlotAtCheckpoint(pipeline);
      await assertExactlyOnce(local.s3, pipeline, reference, ['public.orders']);
    } finally {
      await pipeline.close();
    }
  });
}

/** Tables whose names need quoting, and decoys a sloppy parser or quoter would take for them. */
const QUOTED_SCHEMA = `
  CREATE SCHEMA "My Schema";
  CREATE SCHEMA x;
  CREATE TABLE "My Schema"."Order Items" (id serial PRIMARY KEY, v text);
  CREATE TABLE public."a""b" (id serial PRIMARY KEY, v text);
  CREATE TABLE public."Grüße ☃" (id serial PRIMARY KEY, v text);
  CREATE TABLE public."x.y/z" (id serial PRIMARY KEY, v text);
  CREATE TABLE "My Schema"."order items" (id serial PRIMARY KEY, v text);
  CREATE TABLE public.a (id serial PRIMARY KEY, v text);
  CREATE TABLE public."A""B" (id serial PRIMARY KEY, v text);
  CREATE TABLE x."y/z" (id serial PRIMARY KEY, v text);
  CREATE TABLE public.other (id serial PRIMARY KEY, v text);`;

const TABLE_LIST = `"My Schema"."Order Items", public."a""b",public."Grüße ☃" ,  public."x.y/z"`;

/** Exact `schema.table` of each wanted table → its key segment, written out by hand from contract §3. */
const WANTED: ReadonlyMap<string, { schema: string; table: string; segment: string }> = new Map([
  [
    'My Schema.Order Items',
    { schema: 'My Schema', table: 'Order Items', segment: 'My%20Schema.Order%20Items' },
  ],
  ['public.a"b', { schema: 'public', table: 'a"b', segment: 'public.a%22b' }],
  ['public.Grüße ☃', { schema: 'public', table: 'Grüße ☃', segment: 'public.Gr%C3%BC%C3%9Fe%20%E2%98%83' }],
  ['public.x.y/z', { schema: 'public', table: 'x.y/z', segment: 'public.x%2Ey%2Fz' }],
]);

const EVERY_TABLE = [
  '"My Schema"."Order Items"',
  'public."a""b"',
  'public."Grüße ☃"',
  'public."x.y/z"',
  '"My Schema"."order items"',
  'public.a',
  'public."A""B"',
  'x."y/z"',
  'public.other',
];

async function writeEveryTable(pipeline: Pipeline): Promise<void> {
  for (const table of EVERY_TABLE) {
    await pipeline.sql(
      `BEGIN; INSERT INTO ${table} (v) SELECT 'v' || g FROM generate_series(1, 3) g;
       UPDATE ${table} SET v = 'u' WHERE id = 1; DELETE FROM ${table} WHERE id = 2; COMMIT`,
    );
  }
  // one TRUNCATE of a wanted table together with a decoy: only the wanted one is archived
  await pipeline.sql(`TRUNCATE "My Schema"."Order Items", public.other`);
  await pipeline.sql(`INSERT INTO public."x.y/z" (v) VALUES ('after truncate')`);
}

const KEY = /^data\/([^/]+)\/dt=\d{4}-\d{2}-\d{2}\/[0-9A-F]{16}-[0-9A-F]{16}(-\d+)?\.jsonl\.gz$/;

/** Every object key is one escaped segment per wanted table; records and manifests carry the true names. */
function assertKeysAndNames(pipeline: Pipeline, lake: Lake): void {
  const prefix = `${pipeline.name}/`;
  const segments = new Set<string>();
  const segmentOf = (schema: string, table: string) => WANTED.get(`${schema}.${table}`)?.segment;
  for (const key of lake.dataKeys) {
    assert.ok(key.startsWith(prefix), key);
    const match = KEY.exec(key.slice(prefix.length));
    assert.ok(match, `${key} has the contract's layout, one segment for the table`);
    segments.add(match[1]!);
  }
  assert.deepEqual(
    [...segments].sort(),
    [...WANTED.values()].map((wanted) => wanted.segment).sort(),
    'exactly the wanted tables, each under its escaped segment',
  );
  for (const { key, record } of lake.records) {
    const segment = segmentOf(record.source.schema, record.source.table);
    assert.ok(segment, `a record of a wanted table: ${record.source.schema}.${record.source.table}`);
    assert.ok(key.startsWith(`${prefix}data/${segment}/`), `${key} holds ${record.source.table}`);
  }
  for (const manifest of lake.manifests) {
    for (const object of manifest.objects) {
      const segment = segmentOf(object.schema, object.table);
      assert.ok(
        segment,
        `the manifest names a wanted table by its true name: ${object.schema}.${object.table}`,
      );
      assert.ok(object.key.startsWith(`${prefix}data/${segment}/`), object.key);
    }
  }
}

test('SLOTLAKE_TABLES with quoted identifiers (pgoutput): setup publishes exactly those tables, keys are escaped, names kept', async () => {
  const pipeline = await createPipeline(local.stack, QUOTED_SCHEMA, { SLOTLAKE_TABLES: TABLE_LIST });
  try {
    await setup(pipeline);
    const published = await pipeline.sql(
      `SELECT schemaname || '.' || tablename AS name FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1`,
      [pipeline.name],
    );
    assert.deepEqual(
      published.rows.map((row: { name: string }) => row.name),
      [...WANTED.keys()].sort(),
    );
    const reference = await createReferenceSlot(pipeline);
    await writeEveryTable(pipeline);
    const run = await runCli(['run', '--until-caught-up'], pipeline.env);
    assert.equal(run.code, 0, run.stderr);
    await assertSlotAtCheckpoint(pipeline);
    const lake = await assertExactlyOnce(local.s3, pipeline, reference, [...WANTED.keys()]);
    assert.equal(
      lake.records.filter((r) => r.record.op === 't').length,
      1,
      'the truncate of the wanted table',
    );
    assertKeysAndNames(pipeline, lake);
  } finally {
    await pipeline.close();
  }
});

test('SLOTLAKE_TABLES with quoted identifiers (wal2json add-tables): only those tables, keys escaped, names kept', async () => {
  const binDir = debianPostgresBinDir(15);
  assert.ok(binDir, 'PostgreSQL 15 is missing: apt-get install postgresql-15 postgresql-15-wal2json');
  const postgres = await startLocalPostgres({ binDir });
  try {
    const stack = { ...local.stack, postgres } as TestStack;
    const pipeline = await createPipeline(stack, QUOTED_SCHEMA, {
      SLOTLAKE_TABLES: TABLE_LIST,
      SLOTLAKE_PLUGIN: 'wal2json',
    });
    try {
      await setup(pipeline);
      const reference = await createReferenceSlot(pipeline);
      await writeEveryTable(pipeline);
      const run = await runCli(['run', '--until-caught-up'], pipeline.env);
      assert.equal(run.code, 0, run.stderr);
      await assertSlotAtCheckpoint(pipeline);
      const lake = await assertExactlyOnce(local.s3, pipeline, reference, [...WANTED.keys()]);
      assertKeysAndNames(pipeline, lake);
    } finally {
      await pipeline.close();
    }
  } finally {
    await postgres.stop();
  }
});

test('a slot name Postgres cannot hold is refused at config time, before anything connects', async () => {
  const pgProxy = await startTcpProxy({
    targetHost: local.stack.postgres.host,
    targetPort: local.stack.postgres.port,
  });
  const s3Proxy = await startHttpFaultProxy({ target: local.stack.s3.endpoint });
  const dynamoProxy = await startHttpFaultProxy({ target: local.stack.dynamo.endpoint });
  const pipeline = await createPipeline(local.stack, SIMPLE_SCHEMA);
  try {
    const url = new URL(pipeline.databaseUrl);
    url.port = String(pgProxy.port);
    for (const slot of ['MySlot', 'my slot', 'slot-1', 'grüße']) {
      for (const command of [['run', '--until-caught-up'], ['setup'], ['status']]) {
        const result = await runCli(command, {
          ...pipeline.env,
          DATABASE_URL: url.toString(),
          AWS_ENDPOINT_URL_S3: s3Proxy.endpoint,
          AWS_ENDPOINT_URL_DYNAMODB: dynamoProxy.endpoint,
          SLOTLAKE_SLOT: slot,
        });
        assert.equal(result.code, 2, `${command[0]} with slot ${slot}: ${result.stderr}`);
        const lines = operatorLines(result.stderr);
        assert.equal(lines.length, 1, result.stderr);
        assert.ok(lines[0]!.includes(`SLOTLAKE_SLOT=${JSON.stringify(slot)}`), lines[0]);
        assert.match(lines[0]!, /lower-case letters, digits and _/);
        assert.match(lines[0]!, /nothing was connected/);
        assert.equal(result.stdout, '', 'no summary');
      }
    }
    assert.equal(pgProxy.totalConnections(), 0, 'no connection to Postgres');
    assert.equal(s3Proxy.requests().length, 0, 'no request to S3');
    assert.equal(dynamoProxy.requests().length, 0, 'no request to DynamoDB');
  } finally {
    await pipeline.close();
    await pgProxy.stop();
    await s3Proxy.stop();
    await dynamoProxy.stop();
  }
});
