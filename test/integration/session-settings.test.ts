/**
 * Session settings always win. The output plugin prints values in the walsender under the replication
 * session's settings (DateStyle, TimeZone, IntervalStyle, extra_float_digits, bytea_output), so whatever a
 * user's DATABASE_URL `options`, PGOPTIONS or the role/database defaults say, the archived values must be
 * exactly what contract §4 says. Each variant archives the same row; its record must equal the run without
 * any setting and the literal values written out here.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import pg from 'pg';
import { setup, useTestStack } from '../helpers/assertions.js';
import { runCli } from '../helpers/cli.js';
import { readLake } from '../helpers/lake.js';
import { createPipeline, type Pipeline } from '../helpers/stack.js';

const local = useTestStack();

const SCHEMA = `CREATE TABLE v (
  id int PRIMARY KEY, d date, ts timestamp, tstz timestamptz, t time,
  f8 float8, third float8, f4 float4, b bytea, iv interval, neg interval,
  ds date[], tstzs timestamptz[], f8s float8[])`;

const ROW = `'2024-02-29', '2024-02-29 13:14:15.123456', '2024-02-29 23:30:00.5+00', '04:05:06.789',
  0.1::float8 + 0.2::float8, 1::float8 / 3, '3.4028235e38'::float4, '\\x00ff27'::bytea,
  '1 year 2 months 3 days 04:05:06.5', '-1 days +02:03:00',
  ARRAY['2024-02-29', '2024-03-01']::date[], ARRAY['2024-02-29 23:30:00.5+00']::timestamptz[],
  ARRAY[0.1::float8 + 0.2::float8]`;

/** The row's values as contract §4 writes them. */
const EXPECTED = {
  d: '2024-02-29',
  ts: '2024-02-29T13:14:15.123456',
  tstz: '2024-02-29T23:30:00.5Z',
  t: '04:05:06.789',
  f8: 0.30000000000000004,
  third: 0.3333333333333333,
  f4: 3.4028235e38,
  b: Buffer.from([0x00, 0xff, 0x27]).toString('base64'),
  iv: '1 year 2 mons 3 days 04:05:06.5',
  neg: '-1 days +02:03:00',
  ds: ['2024-02-29', '2024-03-01'],
  tstzs: ['2024-02-29T23:30:00.5Z'],
  f8s: [0.30000000000000004],
};

/** Every setting that changes how a value prints, each set away from what the contract needs. */
const HOSTILE = {
  DateStyle: 'SQL, DMY',
  TimeZone: 'Asia/Kolkata',
  extra_float_digits: '0',
  bytea_output: 'escape',
  IntervalStyle: 'sql_standard',
};
const HOSTILE_OPTIONS = Object.entries(HOSTILE)
  .map(([name, value]) => `-c ${name}=${value.replace(/ /g, '')}`)
  .join(' ');

function withOptions(url: string, options: string): string {
  const parsed = new URL(url);
  parsed.searchParams.set('options', options);
  return parsed.toString();
}

/** What an ordinary session with these connection settings prints: proof that the variant is hostile. */
async function printed(config: pg.ClientConfig): Promise<Record<string, string>> {
  const client = new pg.Client(config);
  await client.connect();
  try {
    const row = (
      await client.query(
        `SELECT current_setting('DateStyle') AS datestyle, current_setting('TimeZone') AS timezone,
                '2024-02-29'::date::text AS date, (1::float8 / 3)::text AS third, '\\x00ff'::bytea::text AS bytea,
                '1 year 2 months'::interval::text AS interval`,
      )
    ).rows[0] as Record<string, string>;
    return row;
  } finally {
    await client.end();
  }
}

async function archiveRow(pipeline: Pipeline, id: number, env: Record<string, string>): Promise<unknown> {
  await pipeline.sql(`INSERT INTO v VALUES (${id}, ${ROW})`);
  const run = await runCli(['run', '--until-caught-up'], env);
  assert.equal(run.code, 0, run.stderr);
  assert.equal(run.summary?.changes, 1);
  const lake = await readLake(local.s3, `${pipeline.name}/`);
  const found = lake.records.filter(({ record }) => record.after?.id === id);
  assert.equal(found.length, 1);
  const { line, record } = found[0]!;
  // numbers as written, not merely equal after parsing
  assert.ok(line.includes('"f8":0.30000000000000004,'), line);
  assert.ok(line.includes('"third":0.3333333333333333,'), line);
  const { id: _id, ...values } = record.after!;
  return values;
}

test('DATABASE_URL options, PGOPTIONS, role and database defaults never change the archived values', async () => {
  const pipeline = await createPipeline(local.stack, SCHEMA);
  try {
    await setup(pipeline);
    const baseline = await archiveRow(pipeline, 1, pipeline.env);
    assert.deepEqual(baseline, EXPECTED, 'the contract values without any setting');

    const hostilePrint = {
      datestyle: 'SQL, DMY',
      timezone: 'Asia/Kolkata',
      date: '29/02/2024',
      third: '0.333333333333333',
      bytea: '\\000\\377',
      interval: '1-2',
    };

    // DateStyle alone in the URL (the case that used to replace slotlake's settings)
    const dateStyleUrl = withOptions(pipeline.databaseUrl, '-c DateStyle=SQL,DMY');
    assert.equal((await printed({ connectionString: dateStyleUrl })).date, '29/02/2024');
    assert.deepEqual(
      await archiveRow(pipeline, 2, { ...pipeline.env, DATABASE_URL: dateStyleUrl }),
      EXPECTED,
      'DATABASE_URL ?options=-c DateStyle=SQL,DMY',
    );

    // every setting in the URL
    const hostileUrl = withOptions(pipeline.databaseUrl, HOSTILE_OPTIONS);
    assert.ok(hostileUrl.includes('options=-c+DateStyle%3DSQL%2CDMY'), hostileUrl);
    assert.deepEqual(await printed({ connectionString: hostileUrl }), hostilePrint);
    assert.deepEqual(
      await archiveRow(pipeline, 3, { ...pipeline.env, DATABASE_URL: hostileUrl }),
      EXPECTED,
      'DATABASE_URL options',
    );

    // the same through PGOPTIONS
    assert.deepEqual(
      await printed({ connectionString: pipeline.databaseUrl, options: HOSTILE_OPTIONS }),
      hostilePrint,
    );
    assert.deepEqual(
      await archiveRow(pipeline, 4, { ...pipeline.env, PGOPTIONS: HOSTILE_OPTIONS }),
      EXPECTED,
      'PGOPTIONS',
    );

    // role defaults in this database
    const database = pg.escapeIdentifier(pipeline.name);
    for (const [name, value] of Object.entries(HOSTILE))
      await pipeline.sql(`ALTER ROLE postgres IN DATABASE ${database} SET ${name} = '${value}'`);
    assert.deepEqual(await printed({ connectionString: pipeline.databaseUrl }), hostilePrint);
    assert.deepEqual(await archiveRow(pipeline, 5, pipeline.env), EXPECTED, 'ALTER ROLE ... SET');
    await pipeline.sql(`ALTER ROLE postgres IN DATABASE ${database} RESET ALL`);

    // database defaults, and everything at once
    for (const [name, value] of Object.entries(HOSTILE))
      await pipeline.sql(`ALTER DATABASE ${database} SET ${name} = '${value}'`);
    assert.deepEqual(await printed({ connectionString: pipeline.databaseUrl }), hostilePrint);
    assert.deepEqual(await archiveRow(pipeline, 6, pipeline.env), EXPECTED, 'ALTER DATABASE ... SET');
    assert.deepEqual(
      await archiveRow(pipeline, 7, {
        ...pipeline.env,
        DATABASE_URL: hostileUrl,
        PGOPTIONS: HOSTILE_OPTIONS,
      }),
      EXPECTED,
      'database defaults, URL options and PGOPTIONS together',
    );
  } finally {
    await pipeline.close();
  }
});
