/**
 * The inverse value mapping (verify/pg-text.ts) against a real server's text output: for every contract type
 * (arrays with quoting, NULL elements, nested arrays, box's `;`, enums, domains over arrays, BC dates,
 * infinities, extreme floats), Postgres' text output (what pgoutput sends) → the contract's JSON value → back
 * to text gives the same text; and random floats print as `float4out`/`float8out` print them.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import pg from 'pg';
import { startLocalPostgres, type LocalPostgres } from '../../src/devstack/postgres.js';
import { createValueMapper, stringifyJsonValue } from '../../src/decoding/values.js';
import { TypeCatalog } from '../../src/replication/catalog.js';
import {
  arrayStyleFor,
  float4Text,
  float8Text,
  jsonToTextFor,
  parseArchivedJson,
} from '../../src/verify/pg-text.js';

const SESSION = [
  'SET DateStyle = ISO',
  "SET TimeZone = 'UTC'",
  'SET IntervalStyle = postgres',
  'SET extra_float_digits = 3',
  'SET bytea_output = hex',
];

let server: LocalPostgres | undefined;
let client: pg.Client;
const rawText = { getTypeParser: () => (text: string) => text } as unknown as pg.CustomTypesConfig;

before(async () => {
  server = await startLocalPostgres();
  client = new pg.Client({ connectionString: server.url(), types: rawText });
  await client.connect();
  for (const statement of SESSION) await client.query(statement);
});

after(async () => {
  await client?.end();
  await server?.stop();
});

const VALUES: Array<[string, string]> = [
  ['bool', 'true'],
  ['char(5)', "'ab'"],
  ['inet', "'192.168.0.1'"],
  ['int8', '-9223372036854775808'],
  ['float4', "'1e-45'"],
  ['float8', "'-1.7976931348623157e308'"],
  ['numeric', "'-0.000100'"],
  ['bytea', "'\\x00ff5c22'"],
  ['timestamp', "'2024-01-02 03:04:05.000001'"],
  ['timestamp', "'0001-01-01 00:00:00 BC'"],
  ['timestamptz', "'2024-06-30 23:59:59.5-07:30'"],
  ['timestamptz', "'12345-01-01 00:00:00+00'"],
  ['timestamptz', "'-infinity'"],
  ['date', "'0001-12-31 BC'"],
  ['time', "'24:00:00'"],
  ['json', `'{"a": [1, 2.50e3]}'`],
  ['interval', "'-1 year 2 mons -3 days 04:05:06.7'"],
  [
    'text[]',
    `ARRAY['', 'NULL', 'null', ' lead', 'a"b', 'c\\d', '{}', 'x,y', E'\\t', E'\\u000b', E'\\f', 'é']`,
  ],
  ['int4[]', "'{{1,NULL},{3,4}}'"],
  ['bool[]', "'{t,f,NULL}'"],
  ['bytea[]', `ARRAY['\\x00'::bytea, NULL, '\\x'::bytea]`],
  ['timestamptz[]', `ARRAY['2024-01-01 00:00:00+00'::timestamptz, 'infinity']`],
  ['timestamp[]', `ARRAY['2024-01-01 10:00:00'::timestamp]`],
  ['float8[]', `ARRAY['NaN'::float8, 1e100, -0.0]`],
  ['numeric[]', `'{1.50,NaN,-Infinity}'`],
  ['box[]', `ARRAY[box '((0,0),(1,1))', box '((-1.5,2),(3,4))']`],
  ['jsonb[]', `ARRAY['{"a": "b c"}'::jsonb, 'null'::jsonb]`],
  ['mood[]', `ARRAY['ok', 'not ok', 'NULL']::mood[]`],
  ['small_ints', `'{5,NULL}'`],
  ['mood', `'not ok'`],
  ['uuid[]', `ARRAY['a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid]`],
  ['int4range[]', `ARRAY['[1,5)'::int4range, 'empty']`],
];

describe('verify: archived values back to Postgres text', () => {
  it('every contract type: text output → JSON → the same text', async () => {
    await client.query(
      `CREATE TYPE mood AS ENUM ('ok', 'not ok', 'NULL'); CREATE DOMAIN small_ints AS int[]`,
    );
    const version = Number((await client.query('SHOW server_version_num')).rows[0].server_version_num);
    const style = arrayStyleFor(version);
    const catalog = new TypeCatalog(client);
    for (const [type, literal] of VALUES) {
      const row = (
        await client.query(
          `SELECT format('%s', (${literal})::${type}) AS text, '${type}'::regtype::oid::int AS oid`,
        )
      ).rows[0] as { text: string; oid: string };
      const oid = Number(row.oid);
      await catalog.load([oid]);
      const json = stringifyJsonValue(createValueMapper(oid, catalog.registry)(row.text));
      const back = jsonToTextFor(oid, catalog.registry, style)(parseArchivedJson(json));
      assert.equal(back, row.text, `${type} ${literal}: via ${json}`);
    }
  });

  it('random float8 and float4 values print as Postgres prints them', async () => {
    const doubles = fc.sample(fc.double({ noNaN: false }), 400);
    doubles.push(1e15, 1e14, 123456789012345, 0.0001, 0.00001, 5e-324, 1e21, 1e-7, 100);
    const floats = fc.sample(fc.float({ noNaN: false }), 400);
    floats.push(1e6, 123456, 1234567, 16777216, 0.0001, 1e-5, 3.4028234663852886e38, 1.401298464324817e-45);
    const result = await client.query({
      text: `SELECT d::float8::text AS d8 FROM unnest($1::float8[]) d`,
      values: [
        doubles.map((value) => (Number.isNaN(value) ? 'NaN' : Object.is(value, -0) ? '-0' : String(value))),
      ],
    });
    result.rows.forEach((row: { d8: string }, i) =>
      assert.equal(float8Text(doubles[i]!), row.d8, `float8 ${doubles[i]}`),
    );
    const result4 = await client.query({
      text: `SELECT f::float4::text AS f4 FROM unnest($1::float8[]) f`,
      values: [
        floats.map((value) => (Number.isNaN(value) ? 'NaN' : Object.is(value, -0) ? '-0' : String(value))),
      ],
    });
    result4.rows.forEach((row: { f4: string }, i) =>
      assert.equal(float4Text(floats[i]!), row.f4, `float4 ${floats[i]}`),
    );
  });
});
