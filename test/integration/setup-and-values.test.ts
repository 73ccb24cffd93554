/**
 * Values and setup checks against real servers:
 * - a domain over an array type (int[], text[], an enum array, a date[] or float8[], a domain over such a
 *   domain) is archived like its base array — JSON arrays of mapped elements — while a domain over a scalar
 *   keeps Postgres' text output (contract §4: domains are strings); with pgoutput and with wal2json;
 * - `setup` against an existing publication whose tables differ from SLOTLAKE_TABLES, or an existing slot with
 *   another plugin, of another kind or in another database, fails with one line saying what differs, and
 *   creates nothing.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { debianPostgresBinDir, startLocalPostgres } from '../../src/devstack/postgres.js';
import { assertExactlyOnce, assertSlotAtCheckpoint, setup, useTestStack } from '../helpers/assertions.js';
import { runCli } from '../helpers/cli.js';
import { createReferenceSlot } from '../helpers/reference.js';
import { operatorLines } from '../helpers/runs.js';
import { createPipeline, type Pipeline, type TestStack } from '../helpers/stack.js';

const local = useTestStack();

const DOMAINS = `
  CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
  CREATE DOMAIN int_list AS int[];
  CREATE DOMAIN text_list AS text[];
  CREATE DOMAIN mood_list AS mood[];
  CREATE DOMAIN date_list AS date[];
  CREATE DOMAIN float_list AS float8[] CHECK (cardinality(VALUE) < 10);
  CREATE DOMAIN nested_list AS int_list;
  CREATE DOMAIN positive AS int CHECK (VALUE > 0);
  CREATE DOMAIN short_text AS varchar(20);
  CREATE DOMAIN moment AS timestamptz;
  CREATE TABLE d (id int PRIMARY KEY, il int_list, tl text_list, ml mood_list, dl date_list, fl float_list,
                  nl nested_list, p positive, s short_text, m moment);`;

const ROWS = `
  INSERT INTO d VALUES
    (1, '{1,NULL,3}', '{a,"b c","d\\"e",""}', '{sad,happy}', '{2024-02-29,infinity}', '{0.5,NaN,-Infinity}',
        '{4,5}', 5, 'hello', '2024-02-29 23:30:00.5+00'),
    (2, '{{1,2},{3,4}}', '{}', NULL, NULL, NULL, '{}', 7, '', NULL);
  UPDATE d SET il = '{9}', p = 8 WHERE id = 1;`;

const EXPECTED_ROWS = {
  1: {
    id: 1,
    il: [9],
    tl: ['a', 'b c', 'd"e', ''],
    ml: ['sad', 'happy'],
    dl: ['2024-02-29', 'infinity'],
    fl: [0.5, 'NaN', '-Infinity'],
    nl: [4, 5],
    p: '8',
    s: 'hello',
    m: '2024-02-29 23:30:00.5+00',
  },
  2: {
    id: 2,
    il: [
      [1, 2],
      [3, 4],
    ],
    tl: [],
    ml: null,
    dl: null,
    fl: null,
    nl: [],
    p: '7',
    s: '',
    m: null,
  },
};

async function domainsArchived(stack: TestStack, extraEnv: Record<string, string>): Promise<void> {
  const pipeline = await createPipeline(stack, DOMAINS, extraEnv);
  try {
    await setup(pipeline);
    const reference = await createReferenceSlot(pipeline);
    await pipeline.sql(ROWS);
    const run = await runCli(['run', '--until-caught-up'], pipeline.env);
    assert.equal(run.code, 0, run.stderr);
    await assertSlotAtCheckpoint(pipeline);
    const lake = await assertExactlyOnce(local.s3, pipeline, reference, ['public.d']);
    const latest = new Map<number, unknown>();
    for (const { record } of lake.records) latest.set(record.after!.id as number, record.after);
    assert.deepEqual(latest.get(1), EXPECTED_ROWS[1]);
    assert.deepEqual(latest.get(2), EXPECTED_ROWS[2]);
    const inserted = lake.records.find(({ record }) => record.op === 'c' && record.after!.id === 1)!.record;
    assert.deepEqual(inserted.after!.il, [1, null, 3]);
    assert.equal(inserted.after!.p, '5');
  } finally {
    await pipeline.close();
  }
}

test('domains over arrays map like their base arrays, domains over scalars stay text (pgoutput)', async () => {
  await domainsArchived(local.stack, {});
});

test('domains over arrays map like their base arrays, domains over scalars stay text (wal2json)', async () => {
  const binDir = debianPostgresBinDir(15);
  assert.ok(binDir, 'PostgreSQL 15 is missing: apt-get install postgresql-15 postgresql-15-wal2json');
  const postgres = await startLocalPostgres({ binDir });
  try {
    await domainsArchived({ ...local.stack, postgres } as TestStack, { SLOTLAKE_PLUGIN: 'wal2json' });
  } finally {
    await postgres.stop();
  }
});

const TABLES = `CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY);
  CREATE TABLE c (id int PRIMARY KEY); CREATE SCHEMA "S"; CREATE TABLE "S"."T" (id int PRIMARY KEY);`;

async function publishedTables(pipeline: Pipeline): Promise<string[]> {
  const result = await pipeline.sql(
    `SELECT schemaname || '.' || tablename AS name FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1`,
    [pipeline.name],
  );
  return result.rows.map((row: { name: string }) => row.name);
}

async function slotExists(pipeline: Pipeline): Promise<boolean> {
  const result = await pipeline.sql('SELECT 1 FROM pg_replication_slots WHERE slot_name = $1', [
    pipeline.name,
  ]);
  return result.rowCount === 1;
}

/** Runs setup, expects it to fail with one line matching every pattern, and returns that line. */
async function setupRefused(env: Record<string, string>, patterns: RegExp[]): Promise<string> {
  const result = await runCli(['setup'], env);
  assert.notEqual(result.code, 0, `setup must fail: ${result.stdout}`);
  const lines = operatorLines(result.stderr);
  assert.equal(lines.length, 1, result.stderr);
  for (const pattern of patterns) assert.match(lines[0]!, pattern);
  return lines[0]!;
}

test('setup against a publication that differs from SLOTLAKE_TABLES says what differs and changes nothing', async () => {
  const pipeline = await createPipeline(local.stack, TABLES);
  try {
    const name = `"${pipeline.name}"`;
    await pipeline.sql(`CREATE PUBLICATION ${name} FOR TABLE a, b`);

    // missing and extra tables
    const line = await setupRefused({ ...pipeline.env, SLOTLAKE_TABLES: 'public.a, public.c' }, [
      /publication .* exists but does not match/,
      /it lacks public\.c/,
      /it also publishes public\.b/,
      /ALTER PUBLICATION/,
    ]);
    assert.ok(!/public\.a[,;]/.test(line), `public.a matches, it is not named: ${line}`);
    // a list where SLOTLAKE_TABLES is unset (all tables)
    await setupRefused(pipeline.env, [/it is not FOR ALL TABLES and SLOTLAKE_TABLES is unset/]);
    // a quoted table that is not published
    await setupRefused({ ...pipeline.env, SLOTLAKE_TABLES: 'public.a, public.b, "S"."T"' }, [
      /it lacks S\.T/,
    ]);
    assert.deepEqual(await publishedTables(pipeline), ['public.a', 'public.b'], 'the publication unchanged');
    assert.equal(await slotExists(pipeline), false, 'no slot created');

    // the same tables written differently match
    const matching = await runCli(['setup'], { ...pipeline.env, SLOTLAKE_TABLES: ' PUBLIC.B , public."a"' });
    assert.equal(matching.code, 0, matching.stderr);
    assert.equal((JSON.parse(matching.stdout) as { publication: string }).publication, 'exists');

    // FOR ALL TABLES where SLOTLAKE_TABLES names some
    const all = await createPipeline(local.stack, TABLES);
    try {
      await all.sql(`CREATE PUBLICATION "${all.name}" FOR ALL TABLES`);
      await setupRefused({ ...all.env, SLOTLAKE_TABLES: 'public.a' }, [
        /it is FOR ALL TABLES, SLOTLAKE_TABLES names only some/,
      ]);
      assert.equal(await slotExists(all), false, 'no slot created');
      const allRows = await all.sql('SELECT puballtables FROM pg_publication');
      assert.deepEqual(allRows.rows, [{ puballtables: true }]);
    } finally {
      await all.close();
    }

    // a table in SLOTLAKE_TABLES that does not exist
    await setupRefused({ ...pipeline.env, SLOTLAKE_TABLES: 'public.a, public.b, public."A"' }, [
      /public\.A \(from SLOTLAKE_TABLES\) does not exist/,
    ]);
  } finally {
    await pipeline.close();
  }
});

test('setup against a slot with another plugin, of another kind or in another database says what differs', async () => {
  const pipeline = await createPipeline(local.stack, TABLES);
  const other = await createPipeline(local.stack, TABLES);
  try {
    // another plugin
    await pipeline.sql(`SELECT pg_create_logical_replication_slot($1, 'test_decoding')`, [pipeline.name]);
    await setupRefused(pipeline.env, [
      new RegExp(`replication slot "${pipeline.name}" exists but does not match`),
      /its plugin is test_decoding, SLOTLAKE_PLUGIN is pgoutput/,
    ]);
    // nothing was created meanwhile: setup checks everything before it creates anything
    assert.deepEqual((await pipeline.sql('SELECT pubname FROM pg_publication')).rows, []);
    await pipeline.sql('SELECT pg_drop_replication_slot($1)', [pipeline.name]);

    // a physical slot
    await pipeline.sql(`SELECT pg_create_physical_replication_slot($1)`, [pipeline.name]);
    await setupRefused(pipeline.env, [/it is a physical slot, not logical/]);
    assert.deepEqual((await pipeline.sql('SELECT pubname FROM pg_publication')).rows, []);
    await pipeline.sql('SELECT pg_drop_replication_slot($1)', [pipeline.name]);

    // another database's slot of the same name
    await setup(other);
    await setupRefused({ ...pipeline.env, SLOTLAKE_SLOT: other.name }, [
      new RegExp(`it belongs to database ${other.name}, this connection is to ${pipeline.name}`),
    ]);
    assert.deepEqual((await pipeline.sql('SELECT pubname FROM pg_publication')).rows, []);

    // and with the slot that matches, setup completes
    await setup(pipeline);
    const again = await runCli(['setup'], pipeline.env);
    assert.equal(again.code, 0, again.stderr);
    assert.deepEqual(
      { publication: 'exists', slot: 'exists' },
      (({ publication, slot }) => ({ publication, slot }))(
        JSON.parse(again.stdout) as { publication: string; slot: string },
      ),
    );
  } finally {
    await pipeline.close();
    await other.close();
  }
});
