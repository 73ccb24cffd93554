/**
 * Captures real wal2json format-version 2 output into test/fixtures/wal2json/pg15.json.
 *
 * Starts a throwaway Debian PostgreSQL 15 cluster (packages `postgresql-15` and
 * `postgresql-15-wal2json`), creates tables covering the types slotlake's value mapper must handle,
 * runs inserts / updates / deletes / truncates / an unchanged-TOAST update / logical messages, each in
 * its own transaction, and records
 * - every message `pg_logical_slot_peek_binary_changes` returns (lsn = the XLogData walStart the
 *   walsender would send, xid, the plugin's bytes), and
 * - for every transaction the server's own text of each touched row before and after it (the type's
 *   output function, i.e. `value::text` except for bool, see `snapshot`), so the unit test can check
 *   the decoder's text against Postgres, value by value.
 *
 * The session runs with the settings slotlake forces on its replication connection (DateStyle=ISO,
 * TimeZone=UTC, IntervalStyle=postgres, extra_float_digits=3, bytea_output=hex): wal2json calls the
 * types' output functions inside the decoding backend, so these settings shape its output too.
 *
 * Usage: node --import tsx scripts/capture-wal2json.ts
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import {
  WAL2JSON_PLUGIN_OPTIONS,
  WAL2JSON_SESSION_SETTINGS,
  wal2jsonConnectionOptions,
} from '../src/decoding/wal2json.js';
import { debianPostgresBinDir, startLocalPostgres } from '../src/devstack/postgres.js';

const OUT = join(dirname(fileURLToPath(import.meta.url)), '..', 'test', 'fixtures', 'wal2json', 'pg15.json');

interface TableSpec {
  schema: string;
  table: string;
  /** The column that identifies a row in before/after snapshots. */
  key: string;
}

const TABLES: Record<string, TableSpec> = {
  allTypes: { schema: 'public', table: 'all_types', key: 'id' },
  items: { schema: 'public', table: 'items', key: 'id' },
  docs: { schema: 'public', table: 'docs', key: 'id' },
  docsFull: { schema: 'public', table: 'docs_full', key: 'id' },
  noKey: { schema: 'public', table: 'no_key', key: 'a' },
  odd: { schema: 'Odd Schema', table: 'Odd "Table", v2', key: 'Key Col' },
  byIndex: { schema: 'public', table: 'by_index', key: 'id' },
};

const DDL = `
CREATE TYPE mood AS ENUM ('ok', 'very happy', 'it''s "fine"');
CREATE TABLE all_types (
  id int4 PRIMARY KEY,
  c_bool bool, c_int2 int2, c_int4 int4, c_int8 int8, c_float4 float4, c_float8 float8, c_numeric numeric,
  c_text text, c_bytea bytea, c_uuid uuid, c_json json, c_jsonb jsonb, c_date date, c_timestamp timestamp,
  c_timestamptz timestamptz, c_time time, c_int_arr int4[], c_text_arr text[], c_enum mood, c_interval interval
);
ALTER TABLE all_types REPLICA IDENTITY FULL;
CREATE TABLE items (id int8 PRIMARY KEY, name text NOT NULL, qty int4);
CREATE TABLE docs (id int4 PRIMARY KEY, title text, body text);
ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;
CREATE TABLE docs_full (id int4 PRIMARY KEY, title text, body text);
ALTER TABLE docs_full ALTER COLUMN body SET STORAGE EXTERNAL;
ALTER TABLE docs_full REPLICA IDENTITY FULL;
CREATE TABLE no_key (a int4, b text);
CREATE SCHEMA "Odd Schema";
CREATE TABLE "Odd Schema"."Odd ""Table"", v2" ("Key Col" int4 PRIMARY KEY, "välue" text);
CREATE TABLE by_index (id int4 PRIMARY KEY, u int4 NOT NULL, v text);
CREATE UNIQUE INDEX by_index_u ON by_index (u);
ALTER TABLE by_index REPLICA IDENTITY USING INDEX by_index_u;
`;

const ALL_TYPES_COLUMNS =
  'id, c_bool, c_int2, c_int4, c_int8, c_float4, c_float8, c_numeric, c_text, c_bytea, c_uuid, c_json, c_jsonb, ' +
  'c_date, c_timestamp, c_timestamptz, c_time, c_int_arr, c_text_arr, c_enum, c_interval';

/** Each step is one transaction; `touches` names the rows whose ::text is recorded before and after. */
interface Step {
  label: string;
  sql: string[];
  touches: { table: keyof typeof TABLES; keys: string[] }[];
}

const STEPS: Step[] = [
  {
    label: 'insert all types',
    sql: [
      `INSERT INTO all_types (${ALL_TYPES_COLUMNS}) VALUES
        (1, true, 1, 2, 3, 1.5, 0.1, 123.45, 'plain', '\\x0001ff', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
         '{"a": [1, 2.50, "x"], "b" : null}', '{"b": null, "a": [1, 2.50, "x"]}', '2024-01-02',
         '2024-01-02 03:04:05.123456', '2024-01-02 03:04:05.123456+02', '23:59:59.999999', '{1,2,3}',
         '{"plain","with \\"quote\\"","comma,here","back\\\\slash",NULL,"NULL",""}', 'ok',
         '1 year 2 mons 3 days 04:05:06.789'),
        (2, false, -32768, -2147483648, -9223372036854775808, 'NaN', 'Infinity', 'NaN', '', '\\x', '00000000-0000-0000-0000-000000000000',
         '[]', '{}', '0001-01-01 BC', '-infinity', 'infinity', '00:00', '{}', '{}', 'very happy', '-1 years -2 mons +3 days -04:05:06'),
        (3, true, 32767, 2147483647, 9223372036854775807, '-Infinity', '-Infinity', '-Infinity', E'unicode: é ✓ 😀 \\u00a0\\nline2\\ttab "dq" ''sq'' back\\\\slash \\u0001ctl',
         decode('00ff10', 'hex'), 'ffffffff-ffff-ffff-ffff-ffffffffffff', '"just a string"', '[1, "two", {"three": 3.0}]',
         '294276-12-31', '1999-12-31 23:59:59.999999', '2000-01-01 00:00:00+14', '24:00:00', '{{1,NULL},{3,4}}',
         E'{"\\\\\\\\","{}","a b", "ünï"}', 'it''s "fine"', '178000000 years'),
        (4, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
        (5, true, 0, 0, 0, 3.4028235e38, 1e-300, 1234567890123456789012345678901234567890.0123456789, 'x', '\\xdeadbeef',
         'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12', 'null', 'true', '2000-02-29', '2000-01-01 00:00:00', '1970-01-01 00:00:00+00',
         '12:34:56.5', '{-1,0,1}', '{"{\\"json\\":1}"}', 'ok', '0:00:00.000001'),
        (6, false, -1, -1, -1, '-0', '-0', -0.000, 'x', '\\x', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a13', '1e1000', '12345678901234567890.12345678901234567890',
         '1999-01-08', '2024-02-29 12:00:00', '2024-06-01 12:00:00.5-07:30', '01:02:03', '{2147483647,-2147483648}', '{" leading","trailing "}',
         'very happy', '-0.000001 sec'),
        (7, true, 7, 7, 4611686018427387904, 1.17549435e-38, 2.2250738585072014e-308, 0.00000000000000000001, 'x', '\\x', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a14',
         '1.0000000000000000000001', '1.0000000000000000000001', '2024-01-01', '2024-01-01 00:00:00', '2024-01-01 00:00:00+00',
         '00:00:00.000001', '{1}', '{x}', 'ok', '2 days 25:00:00'),
        (8, false, 8, 8, 8, 123456.789, 123456789.123456789, 1e-20, 'x', '\\x', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a15',
         '9007199254740993', '9007199254740993', '2024-01-01', '2024-01-01 00:00:00', '2024-01-01 00:00:00+00',
         '00:00:00', '{8}', '{y}', 'ok', '1 mon')`,
    ],
    touches: [{ table: 'allTypes', keys: ['1', '2', '3', '4', '5', '6', '7', '8'] }],
  },
  {
    label: 'update all types (REPLICA IDENTITY FULL)',
    sql: [`UPDATE all_types SET c_text = 'updated', c_int8 = c_int8 - 1 WHERE id IN (1, 4)`],
    touches: [{ table: 'allTypes', keys: ['1', '4'] }],
  },
  {
    label: 'delete all types (REPLICA IDENTITY FULL)',
    sql: [`DELETE FROM all_types WHERE id IN (3, 4)`],
    touches: [{ table: 'allTypes', keys: ['3', '4'] }],
  },
  {
    label: 'items: insert, update keeping and changing the key, delete (REPLICA IDENTITY DEFAULT)',
    sql: [
      `INSERT INTO items VALUES (1, 'one', 10), (2, 'two', NULL)`,
      `UPDATE items SET qty = 11 WHERE id = 1`,
      `UPDATE items SET id = 20 WHERE id = 2`,
      `DELETE FROM items WHERE id = 1`,
    ],
    touches: [{ table: 'items', keys: ['1', '2', '20'] }],
  },
  {
    label: 'docs: insert a TOASTed body',
    sql: [
      `INSERT INTO docs VALUES (1, 'title', repeat('0123456789', 1000))`,
      `INSERT INTO docs_full VALUES (1, 'title', repeat('abcdefghij', 1000))`,
    ],
    touches: [
      { table: 'docs', keys: ['1'] },
      { table: 'docsFull', keys: ['1'] },
    ],
  },
  {
    label: 'docs: update leaving the TOASTed body unchanged',
    sql: [
      `UPDATE docs SET title = 'new title' WHERE id = 1`,
      `UPDATE docs_full SET title = 'new title' WHERE id = 1`,
    ],
    touches: [
      { table: 'docs', keys: ['1'] },
      { table: 'docsFull', keys: ['1'] },
    ],
  },
  {
    label: 'logical messages inside a transaction',
    sql: [
      `SELECT pg_logical_emit_message(true, 'slotlake', '{"hello": "wörld"}')`,
      `INSERT INTO items VALUES (3, 'three', 3)`,
      `SELECT pg_logical_emit_message(false, 'slotlake-nt', 'non-transactional')`,
    ],
    touches: [{ table: 'items', keys: ['3'] }],
  },
  {
    label: 'binary logical message (wal2json copies it up to the first NUL byte, unescaped)',
    sql: [`SELECT pg_logical_emit_message(true, 'bin', '\\xc3a9ff0041'::bytea)`],
    touches: [],
  },
  {
    label: 'truncate two tables',
    sql: [`TRUNCATE items, docs RESTART IDENTITY CASCADE`],
    touches: [],
  },
  {
    label: 'add a column, then insert (a new Relation)',
    sql: [
      `ALTER TABLE items ADD COLUMN note varchar(20)`,
      `INSERT INTO items VALUES (4, 'four', 4, 'noted')`,
    ],
    touches: [{ table: 'items', keys: ['4'] }],
  },
  {
    label: 'table without a key: wal2json drops its updates and deletes',
    sql: [`INSERT INTO no_key VALUES (1, 'a')`, `UPDATE no_key SET b = 'b'`, `DELETE FROM no_key`],
    touches: [{ table: 'noKey', keys: ['1'] }],
  },
  {
    label: 'odd identifiers',
    sql: [
      `INSERT INTO "Odd Schema"."Odd ""Table"", v2" VALUES (1, 'x')`,
      `UPDATE "Odd Schema"."Odd ""Table"", v2" SET "välue" = 'y'`,
    ],
    touches: [{ table: 'odd', keys: ['1'] }],
  },
  {
    label: 'by_index: REPLICA IDENTITY USING INDEX',
    sql: [
      `INSERT INTO by_index VALUES (1, 10, 'a'), (2, 20, 'b')`,
      `UPDATE by_index SET v = 'c' WHERE id = 1`,
      `UPDATE by_index SET u = 11 WHERE id = 1`,
      `DELETE FROM by_index WHERE id = 2`,
    ],
    touches: [{ table: 'byIndex', keys: ['1', '2'] }],
  },
];

type Row = Record<string, string | null>;
type Snapshot = Record<string, Record<string, Row>>;

function qualified(spec: TableSpec): string {
  return `${pg.escapeIdentifier(spec.schema)}.${pg.escapeIdentifier(spec.table)}`;
}

async function columnsOf(client: pg.Client, spec: TableSpec): Promise<string[]> {
  const result = await client.query<{ attname: string }>(
    `SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum`,
    [qualified(spec)],
  );
  return result.rows.map((row) => row.attname);
}

/** Where `value::text` (a cast) differs from the type's output function (what wal2json and pgoutput send). */
interface CastDifference {
  table: string;
  key: string;
  column: string;
  output: string;
  cast: string;
}

/**
 * The touched rows, each value in its type's text output form: `format('%s', v)` calls the output
 * function, exactly like wal2json and pgoutput. `v::text` is the same except for types with their own
 * cast to text (bool gives 'true', not 't'); those are collected in `differences`.
 */
async function snapshot(
  client: pg.Client,
  touches: Step['touches'],
  differences: CastDifference[],
): Promise<Snapshot> {
  const out: Snapshot = {};
  for (const touch of touches) {
    const spec = TABLES[touch.table]!;
    const columns = await columnsOf(client, spec);
    const select = columns
      .flatMap((c, i) => {
        const id = pg.escapeIdentifier(c);
        return [
          `CASE WHEN ${id} IS NULL THEN NULL ELSE format('%s', ${id}) END AS o${i}`,
          `${id}::text AS c${i}`,
        ];
      })
      .join(', ');
    const rows: Record<string, Row> = {};
    const result = await client.query<Row>(
      `SELECT ${select} FROM ${qualified(spec)} WHERE ${pg.escapeIdentifier(spec.key)}::text = ANY($1)`,
      [touch.keys],
    );
    for (const raw of result.rows) {
      const row: Row = {};
      columns.forEach((c, i) => (row[c] = raw[`o${i}`] ?? null));
      const key = raw[`c${columns.indexOf(spec.key)}`]!;
      rows[key] = row;
      const table = `${spec.schema}.${spec.table}`;
      columns.forEach((c, i) => {
        const cast = raw[`c${i}`] ?? null;
        const known = differences.some((d) => d.table === table && d.column === c && d.key === key);
        if (cast !== row[c] && !known)
          differences.push({ table, key, column: c, output: row[c]!, cast: cast! });
      });
    }
    out[`${spec.schema}.${spec.table}`] = rows;
  }
  return out;
}

function wal2jsonPackageVersion(): string | undefined {
  try {
    return execFileSync('dpkg-query', ['-W', '-f=${Version}', 'postgresql-15-wal2json']).toString().trim();
  } catch {
    return undefined;
  }
}

async function main(): Promise<void> {
  const bin = debianPostgresBinDir(15);
  if (!bin || !existsSync('/usr/lib/postgresql/15/lib/wal2json.so')) {
    console.error(
      'capture-wal2json: skipped — Debian PostgreSQL 15 with wal2json is not installed ' +
        '(apt-get install postgresql-15 postgresql-15-wal2json)',
    );
    return;
  }
  const server = await startLocalPostgres({ binDir: bin });
  try {
    const url = await server.createDatabase('capture');
    const client = new pg.Client({ connectionString: url, options: wal2jsonConnectionOptions() });
    await client.connect();
    try {
      // Changes must be flushed before peek sees them: the cluster runs with synchronous_commit=off.
      await client.query('SET synchronous_commit = on');
      await client.query(DDL);
      await client.query(`SELECT pg_create_logical_replication_slot('capture', 'wal2json')`);

      const transactions = [];
      const castDifferences: CastDifference[] = [];
      for (const step of STEPS) {
        const before = await snapshot(client, step.touches, castDifferences);
        await client.query('BEGIN');
        const xid = Number(
          (await client.query<{ xid: string }>('SELECT txid_current()::text AS xid')).rows[0]!.xid,
        );
        for (const sql of step.sql) await client.query(sql);
        await client.query('COMMIT');
        const after = await snapshot(client, step.touches, castDifferences);
        transactions.push({ label: step.label, xid, sql: step.sql, before, after });
      }

      const args = WAL2JSON_PLUGIN_OPTIONS.flatMap(([name, value]) => [name, value]);
      const placeholders = args.map((_, i) => `$${i + 1}`).join(', ');
      const peek = await client.query<{ lsn: string; xid: string | null; data: Buffer }>(
        `SELECT lsn::text AS lsn, xid::text AS xid, data FROM pg_logical_slot_peek_binary_changes('capture', NULL, NULL, ${placeholders})`,
        args,
      );
      const decoder = new TextDecoder('utf-8', { fatal: true });
      const messages = peek.rows.map((row) => {
        try {
          return {
            lsn: row.lsn,
            xid: row.xid === null ? null : Number(row.xid),
            data: decoder.decode(row.data),
          };
        } catch {
          // not valid UTF-8 (a binary logical message): keep the exact bytes
          return {
            lsn: row.lsn,
            xid: row.xid === null ? null : Number(row.xid),
            hex: row.data.toString('hex'),
          };
        }
      });

      const version = (await client.query<{ v: string }>('SELECT version() AS v')).rows[0]!.v;
      const tables = Object.values(TABLES).map((spec) => ({ ...spec }));
      const fixture = {
        capturedWith: 'scripts/capture-wal2json.ts',
        server: version,
        wal2json: wal2jsonPackageVersion() ?? null,
        sessionSettings: WAL2JSON_SESSION_SETTINGS,
        pluginOptions: WAL2JSON_PLUGIN_OPTIONS,
        tables,
        castDifferences,
        transactions,
        messages,
      };
      mkdirSync(dirname(OUT), { recursive: true });
      writeFileSync(OUT, `${JSON.stringify(fixture, null, 1)}\n`);
      console.log(
        `capture-wal2json: ${messages.length} messages, ${transactions.length} transactions → ${OUT}`,
      );
    } finally {
      await client.end();
    }
  } finally {
    await server.stop();
  }
}

await main();
