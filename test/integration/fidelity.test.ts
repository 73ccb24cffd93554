/**
 * Every value exact, checked by an independent reader: a table holding every type of the contract's value table
 * (contract §4 "Values", §3.1) and arrays of them, with NULLs, empty strings and arrays, astral unicode, int8
 * min/max, a numeric of 1,000 digits and declared precisions, NaN and ±Infinity, ±infinity and BC dates and
 * timestamps, microsecond timestamps given in several time zones, multi-dimensional arrays; a 10 MB random
 * (incompressible, so really TOASTed) text in two tables, under REPLICA IDENTITY DEFAULT and FULL, one with a
 * generated column; a truncated table. The same workload — inserts, then updates and deletes — is archived by
 * slotlake in JSON Lines and in Parquet, through pgoutput on PostgreSQL 17 and through wal2json on PostgreSQL 15
 * (the four combinations), each in two runs, so the second run meets every table first through an update, a delete
 * or a truncate. DuckDB alone reads the archives (`read_json`, `read_parquet`) from the objects the manifests name,
 * and every value is compared with what Postgres holds, computed independently in SQL (`to_json`, `to_char`,
 * `extract(epoch …)`, `encode`, `format('%s')`, …), never with slotlake's own mapping code. wal2json's one
 * documented loss — NaN and ±Infinity in float and numeric columns arrive as null — is asserted to be exactly
 * that. Then the two plugins' archives are compared change for change (parity), and the second run's first sight
 * of a TOASTed table, an update that left the 10 MB value unchanged, is checked to keep it as unchanged TOAST.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, test, type TestContext } from 'node:test';
import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { DuckDBInstance, type DuckDBConnection } from '@duckdb/node-api';
import pg from 'pg';
import { debianPostgresBinDir, startLocalPostgres, type LocalPostgres } from '../../src/devstack/postgres.js';
import { testS3Client } from '../helpers/assertions.js';
import { runCli } from '../helpers/cli.js';
import { listKeys } from '../helpers/lake.js';
import { BUCKET, createPipeline, startTestStack, type Pipeline, type TestStack } from '../helpers/stack.js';

// ---------------------------------------------------------------------------------------------------------------
// The columns: every type of the contract's value table, arrays of them, and a few of "anything else"

/**
 * How a value is compared. JSON (contract §4): bool → true/false; int → number; float → number or
 * "NaN"/"Infinity"/"-Infinity"; numeric, decimal, text, json, date, time → string; bytea → base64; timestamp(tz)
 * → ISO with `T` (and `Z`), Postgres' text where a four-digit AD year cannot say it. Parquet (§3.1): decimal →
 * DECIMAL, numeric (unconstrained or wider than 38 digits) → STRING, date → DATE (days), time → TIME (µs),
 * timestamp(tz) → TIMESTAMP (µs), bytea → BYTE_ARRAY, json → JSON, text → STRING.
 */
type Kind =
  | 'bool'
  | 'int'
  | 'float4'
  | 'float8'
  | 'numeric'
  | 'decimal'
  | 'text'
  | 'json'
  | 'bytea'
  | 'date'
  | 'time'
  | 'timestamp'
  | 'timestamptz';

interface Column {
  readonly name: string;
  /** The column's SQL type. */
  readonly type: string;
  readonly kind: Kind;
  readonly array?: true;
  /** What DuckDB reads the Parquet column as. */
  readonly duck: string;
  /** SQL expressions of the values of rows 2 to 5 (row 1 is all NULL). */
  readonly values: readonly [string, string, string, string];
}

const bigNumeric = `${'9'.repeat(600)}.${'1234567890'.repeat(40)}`; // 1,000 digits
const bytes256 = Buffer.from(Array.from({ length: 256 }, (_, i) => i)).toString('hex');
const q = (text: string) => `'${text.replaceAll("'", "''")}'`;

const FIDELITY: readonly Column[] = [
  { name: 'b', type: 'bool', kind: 'bool', duck: 'BOOLEAN', values: ['true', 'false', 'true', 'false'] },
  {
    name: 'b_a',
    type: 'bool[]',
    kind: 'bool',
    array: true,
    duck: 'BOOLEAN[]',
    values: [`'{t,f}'`, `'{}'`, `'{t,NULL,f}'`, `'{{t,f},{f,t}}'`],
  },
  { name: 'i2', type: 'int2', kind: 'int', duck: 'SMALLINT', values: ['12', '-32768', '32767', '0'] },
  {
    name: 'i2_a',
    type: 'int2[]',
    kind: 'int',
    array: true,
    duck: 'SMALLINT[]',
    values: [`'{1,-2}'`, `'{-32768}'`, `'{32767,NULL}'`, `'[0:1]={7,8}'`],
  },
  {
    name: 'i4',
    type: 'int4',
    kind: 'int',
    duck: 'INTEGER',
    values: ['42', '-2147483648', '2147483647', '0'],
  },
  {
    name: 'i4_a',
    type: 'int4[]',
    kind: 'int',
    array: true,
    duck: 'INTEGER[]',
    values: [`'{1,2,3}'`, `'{}'`, `'{2147483647,NULL,-2147483648}'`, `'{{1,2},{3,4}}'`],
  },
  {
    name: 'i8',
    type: 'int8',
    kind: 'int',
    duck: 'BIGINT',
    values: ['9007199254740993', '-9223372036854775808', '9223372036854775807', '0'],
  },
  {
    name: 'i8_a',
    type: 'int8[]',
    kind: 'int',
    array: true,
    duck: 'BIGINT[]',
    values: [`'{9007199254740993}'`, `'{-9223372036854775808}'`, `'{9223372036854775807,NULL}'`, `'{}'`],
  },
  { name: 'o', type: 'oid', kind: 'int', duck: 'BIGINT', values: ['7', '0', '4294967295', '1'] },
  {
    name: 'o_a',
    type: 'oid[]',
    kind: 'int',
    array: true,
    duck: 'BIGINT[]',
    values: [`'{1,2}'`, `'{0}'`, `'{4294967295,NULL}'`, `'{}'`],
  },
  {
    name: 'f4',
    type: 'float4',
    kind: 'float4',
    duck: 'FLOAT',
    values: [`'-0'`, `'1e-45'`, `'3.4028235e38'`, `'NaN'`],
  },
  {
    name: 'f4_a',
    type: 'float4[]',
    kind: 'float4',
    array: true,
    duck: 'FLOAT[]',
    values: [`'{0.1,-Infinity}'`, `'{}'`, `'{Infinity,NULL,1e-45}'`, `'{NaN,1.5}'`],
  },
  {
    name: 'f8',
    type: 'float8',
    kind: 'float8',
    duck: 'DOUBLE',
    values: ['0.1', `'-Infinity'`, `'Infinity'`, `'NaN'`],
  },
  {
    name: 'f8_a',
    type: 'float8[]',
    kind: 'float8',
    array: true,
    duck: 'DOUBLE[]',
    values: [
      `'{-0,5e-324}'`,
      `'{1.7976931348623157e308,-1.5e-7}'`,
      `'{NaN,Infinity,-Infinity,NULL}'`,
      `'{{1.5,NaN},{-0,2}}'`,
    ],
  },
  {
    name: 'n',
    type: 'numeric',
    kind: 'numeric',
    duck: 'VARCHAR',
    values: [`'12.50'`, `'-Infinity'`, q(bigNumeric), `'NaN'`],
  },
  {
    name: 'n_a',
    type: 'numeric[]',
    kind: 'numeric',
    array: true,
    duck: 'VARCHAR[]',
    values: [
      `'{1.5,-2}'`,
      `'{NaN,Infinity,-Infinity}'`,
      q(`{-${bigNumeric},NULL,0.00000000000000000001}`),
      `'{}'`,
    ],
  },
  {
    name: 'nd',
    type: 'numeric(12,4)',
    kind: 'decimal',
    duck: 'DECIMAL(12,4)',
    values: ['12.5', '-99999999.9999', '99999999.9999', `'NaN'`],
  },
  {
    name: 'nd_a',
    type: 'numeric(12,4)[]',
    kind: 'decimal',
    array: true,
    duck: 'DECIMAL(12,4)[]',
    values: [`'{1.5,NULL}'`, `'{}'`, `'{NaN,1}'`, `'{-0.0001}'`],
  },
  {
    name: 'n5',
    type: 'numeric(5,2)',
    kind: 'decimal',
    duck: 'DECIMAL(5,2)',
    values: ['123.45', '-999.99', '0', '0.5'],
  },
  {
    name: 'n38',
    type: 'numeric(38,6)',
    kind: 'decimal',
    duck: 'DECIMAL(38,6)',
    values: [
      '12345678901234567890123456789012.123456',
      '-99999999999999999999999999999999.999999',
      '0.000001',
      `'NaN'`,
    ],
  },
  {
    name: 'nneg',
    type: 'numeric(5,-2)',
    kind: 'decimal',
    duck: 'DECIMAL(7,0)',
    values: ['1234567', '-9999900', '0', `'NaN'`],
  },
  {
    name: 'nsp',
    type: 'numeric(3,5)',
    kind: 'decimal',
    duck: 'DECIMAL(5,5)',
    values: ['0.00123', '-0.00999', '0.00001', '0'],
  },
  {
    name: 'n50',
    type: 'numeric(50,10)',
    kind: 'numeric',
    duck: 'VARCHAR',
    values: ['1234567890123456789012345678901234567890.0123456789', '-1', `'NaN'`, '0'],
  },
  {
    name: 't',
    type: 'text',
    kind: 'text',
    duck: 'VARCHAR',
    values: [`'hello'`, `''`, `E'😀𝄞🀄 "quoted" \\\\back\\\\slash\\ttab\\nnewline \\u00e9'`, `'NULL'`],
  },
  {
    name: 't_a',
    type: 'text[]',
    kind: 'text',
    array: true,
    duck: 'VARCHAR[]',
    values: [
      `'{a,"b c"}'`,
      `'{""}'`,
      `ARRAY['😀', NULL, 'NULL', 'a,b', '{x}', E'q"\\\\']`,
      `'{{a,b},{c,d}}'`,
    ],
  },
  {
    name: 'vc',
    type: 'varchar(20)',
    kind: 'text',
    duck: 'VARCHAR',
    values: [`'ab'`, `''`, `'😀😀'`, `' spaced '`],
  },
  {
    name: 'vc_a',
    type: 'varchar(20)[]',
    kind: 'text',
    array: true,
    duck: 'VARCHAR[]',
    values: [`'{x}'`, `'{}'`, `'{"",NULL}'`, `'{" a "}'`],
  },
  { name: 'bp', type: 'char(5)', kind: 'text', duck: 'VARCHAR', values: [`'ab'`, `''`, `'😀'`, `'abcde'`] },
  {
    name: 'bp_a',
    type: 'char(5)[]',
    kind: 'text',
    array: true,
    duck: 'VARCHAR[]',
    values: [`'{ab}'`, `'{}'`, `'{NULL,x}'`, `'{abcde}'`],
  },
  { name: 'nm', type: 'name', kind: 'text', duck: 'VARCHAR', values: [`'pg_class'`, `''`, `'😀'`, `'a b'`] },
  {
    name: 'nm_a',
    type: 'name[]',
    kind: 'text',
    array: true,
    duck: 'VARCHAR[]',
    values: [`'{a,b}'`, `'{}'`, `'{NULL}'`, `'{"a b"}'`],
  },
  { name: 'ch', type: '"char"', kind: 'text', duck: 'VARCHAR', values: [`'a'`, `''`, `'z'`, `'"'`] },
  {
    name: 'ch_a',
    type: '"char"[]',
    kind: 'text',
    array: true,
    duck: 'VARCHAR[]',
    values: [`'{a,b}'`, `'{}'`, `'{z,NULL}'`, `'{q}'`],
  },
  {
    name: 'ci',
    type: 'citext',
    kind: 'text',
    duck: 'VARCHAR',
    values: [`'Hello'`, `''`, `'Ünïcödé 😀'`, `'NULL'`],
  },
  {
    name: 'ci_a',
    type: 'citext[]',
    kind: 'text',
    array: true,
    duck: 'VARCHAR[]',
    values: [`'{A,"b c"}'`, `'{}'`, `'{NULL,"😀"}'`, `'{{a,b},{c,d}}'`],
  },
  {
    name: 'by',
    type: 'bytea',
    kind: 'bytea',
    duck: 'BLOB',
    values: [String.raw`'\x00ff'`, String.raw`'\x'`, `'\\x${bytes256}'`, String.raw`'\x5c22'`],
  },
  {
    name: 'by_a',
    type: 'bytea[]',
    kind: 'bytea',
    array: true,
    duck: 'BLOB[]',
    values: [
      String.raw`ARRAY['\x01'::bytea, NULL]`,
      `'{}'`,
      String.raw`ARRAY['\x'::bytea, '\x5c22'::bytea]`,
      `ARRAY['\\x${bytes256}'::bytea]`,
    ],
  },
  {
    name: 'u',
    type: 'uuid',
    kind: 'text',
    duck: 'VARCHAR',
    values: [
      `'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'`,
      `'00000000-0000-0000-0000-000000000000'`,
      `'FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF'`,
      `'{a0eebc999c0b4ef8bb6d6bb9bd380a12}'`,
    ],
  },
  {
    name: 'u_a',
    type: 'uuid[]',
    kind: 'text',
    array: true,
    duck: 'VARCHAR[]',
    values: [
      `'{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11,NULL}'`,
      `'{}'`,
      `'{00000000-0000-0000-0000-000000000001}'`,
      `'{}'`,
    ],
  },
  {
    name: 'j',
    type: 'json',
    kind: 'json',
    duck: 'JSON',
    values: [`'{"b":1,  "a":[1,2]}'`, `'null'`, `'{"😀": "\\u0000", "n": 1e400}'`, `'[]'`],
  },
  {
    name: 'j_a',
    type: 'json[]',
    kind: 'json',
    array: true,
    duck: 'JSON[]',
    values: [
      `ARRAY['{"a":1}'::json, NULL, '"s"'::json]`,
      `'{}'`,
      `ARRAY['null'::json]`,
      `ARRAY['[1, 2]'::json]`,
    ],
  },
  {
    name: 'jb',
    type: 'jsonb',
    kind: 'json',
    duck: 'JSON',
    values: [`'{"b":1,"a":[1,2]}'`, `'{}'`, `'{"k":"😀","n":12345678901234567890.5}'`, `'null'`],
  },
  {
    name: 'jb_a',
    type: 'jsonb[]',
    kind: 'json',
    array: true,
    duck: 'JSON[]',
    values: [`ARRAY['{"a": [true]}'::jsonb]`, `'{}'`, `ARRAY[NULL, '1'::jsonb]`, `ARRAY['"x\\"y"'::jsonb]`],
  },
  {
    name: 'd',
    type: 'date',
    kind: 'date',
    duck: 'DATE',
    values: [`'2024-02-29'`, `'-infinity'`, `'infinity'`, `'0044-03-15 BC'`],
  },
  {
    name: 'd_a',
    type: 'date[]',
    kind: 'date',
    array: true,
    duck: 'DATE[]',
    values: [`'{2024-01-01,NULL}'`, `'{"4713-01-01 BC",5874897-12-31}'`, `'{infinity,2024-01-01}'`, `'{}'`],
  },
  {
    name: 'ts',
    type: 'timestamp',
    kind: 'timestamp',
    duck: 'TIMESTAMP',
    values: [
      `'2024-01-02 03:04:05.123456'`,
      `'-infinity'`,
      `'294276-12-31 23:59:59.999999'`,
      `'0044-03-15 12:00:00.5 BC'`,
    ],
  },
  {
    name: 'ts_a',
    type: 'timestamp[]',
    kind: 'timestamp',
    array: true,
    duck: 'TIMESTAMP[]',
    values: [
      `'{"2024-01-02 03:04:05","1999-12-31 23:59:59.999999"}'`,
      `'{}'`,
      `'{infinity}'`,
      `'{"12345-06-07 00:00:00",NULL,"0001-01-01 00:00:00","0044-03-15 12:00:00.000001 BC"}'`,
    ],
  },
  {
    name: 'tz',
    type: 'timestamptz',
    kind: 'timestamptz',
    duck: 'TIMESTAMP WITH TIME ZONE',
    values: [
      `'2024-02-29 13:14:15.123456+05:45'`,
      `'-infinity'`,
      // in the workload session's time zone (Pacific/Chatham, +13:45 in February)
      `'2024-02-29 23:59:59.999999'`,
      `'0044-03-15 12:00:00 BC'`,
    ],
  },
  {
    name: 'tz_a',
    type: 'timestamptz[]',
    kind: 'timestamptz',
    array: true,
    duck: 'TIMESTAMP WITH TIME ZONE[]',
    values: [
      `'{"2024-01-01 00:00:00+00","2024-06-30 23:59:59.000001-03:30",NULL}'`,
      `'{}'`,
      `'{infinity,"2024-01-01 00:00:00+14"}'`,
      `'{"1883-11-18 12:00:00 America/New_York","9999-12-31 23:59:59.999999-12","0001-01-01 00:00:00+00 BC"}'`,
    ],
  },
  {
    name: 'tm',
    type: 'time',
    kind: 'time',
    duck: 'TIME',
    values: [`'03:04:05'`, `'00:00:00'`, `'24:00:00'`, `'23:59:59.999999'`],
  },
  {
    name: 'tm_a',
    type: 'time[]',
    kind: 'time',
    array: true,
    duck: 'TIME[]',
    values: [`'{03:04:05.12,NULL}'`, `'{}'`, `'{24:00:00}'`, `'{{00:00:01,00:00:02}}'`],
  },
  // "anything else": Postgres' own text output, as a string (arrays: a list of them)
  {
    name: 'mood',
    type: 'mood',
    kind: 'text',
    duck: 'VARCHAR',
    values: [`'ok'`, `'sad'`, `'happy 😀'`, `'ok'`],
  },
  {
    name: 'mood_a',
    type: 'mood[]',
    kind: 'text',
    array: true,
    duck: 'VARCHAR[]',
    values: [`'{sad,ok}'`, `'{}'`, `'{"happy 😀",NULL}'`, `'{{sad},{ok}}'`],
  },
  {
    name: 'iv',
    type: 'interval',
    kind: 'text',
    duck: 'VARCHAR',
    values: [`'1 year 2 mons 3 days 04:05:06.789'`, `'-1 days +00:00:01'`, `'0'`, `'1000000 hours'`],
  },
  {
    name: 'iv_a',
    type: 'interval[]',
    kind: 'text',
    array: true,
    duck: 'VARCHAR[]',
    values: [`'{"1 day",NULL}'`, `'{}'`, `'{"-00:00:00.000001"}'`, `'{"2 years"}'`],
  },
  {
    name: 'ip',
    type: 'inet',
    kind: 'text',
    duck: 'VARCHAR',
    values: [`'192.168.0.1/24'`, `'::1'`, `'10.0.0.1'`, `'2001:db8::/32'`],
  },
  {
    name: 'rng',
    type: 'int4range',
    kind: 'text',
    duck: 'VARCHAR',
    values: [`'[1,10)'`, `'empty'`, `'(,)'`, `'[5,6]'`],
  },
  {
    name: 'rng_a',
    type: 'int4range[]',
    kind: 'text',
    array: true,
    duck: 'VARCHAR[]',
    values: [`'{"[1,2)",empty}'`, `'{}'`, `'{NULL}'`, `'{"(,5)"}'`],
  },
  {
    name: 'ttz',
    type: 'timetz',
    kind: 'text',
    duck: 'VARCHAR',
    values: [`'03:04:05+05:30'`, `'00:00:00-15:59'`, `'24:00:00+00'`, `'12:00:00.5-03'`],
  },
  {
    name: 'pt',
    type: 'point',
    kind: 'text',
    duck: 'VARCHAR',
    values: [`'(1,2)'`, `'(-1.5,1e+100)'`, `'(0,-0)'`, `'(NaN,Infinity)'`],
  },
  {
    name: 'vb',
    type: 'varbit',
    kind: 'text',
    duck: 'VARCHAR',
    values: [`'101'`, `''`, `'1111111111111111111'`, `'0'`],
  },
  {
    name: 'cp',
    type: 'pair',
    kind: 'text',
    duck: 'VARCHAR',
    values: [`ROW(1, 'x y')`, `ROW(NULL, '')`, `ROW(-1, '"q"')`, `ROW(2, '😀')`],
  },
  {
    name: 'cp_a',
    type: 'pair[]',
    kind: 'text',
    array: true,
    duck: 'VARCHAR[]',
    values: [
      `ARRAY[ROW(1, 'x y')::pair, NULL]`,
      `'{}'`,
      `ARRAY[ROW(2, 'a,b}')::pair]`,
      `ARRAY[ROW(NULL, NULL)::pair]`,
    ],
  },
  {
    name: 'bt',
    type: 'bit(3)',
    kind: 'text',
    duck: 'VARCHAR',
    values: [`B'101'`, `B'000'`, `B'111'`, `B'010'`],
  },
  {
    name: 'i2v',
    type: 'int2vector',
    kind: 'text',
    duck: 'VARCHAR',
    values: [`'1 2 3'`, `''`, `'-32768 32767'`, `'0'`],
  },
  { name: 'dom', type: 'posint', kind: 'text', duck: 'VARCHAR', values: ['5', '1', '2147483647', '3'] },
  {
    name: 'dom_a',
    type: 'intlist',
    kind: 'int',
    array: true,
    duck: 'INTEGER[]',
    values: [`'{1,NULL,3}'`, `'{}'`, `'{-2147483648}'`, `'{{1},{2}}'`],
  },
  {
    name: 'Ünïcode ☃ "col"',
    type: 'text',
    kind: 'text',
    duck: 'VARCHAR',
    values: [`'x'`, `''`, `'😀'`, `'NULL'`],
  },
];

const TOASTED: readonly Column[] = [
  { name: 'n', type: 'int4', kind: 'int', duck: 'INTEGER', values: ['0', '0', '0', '0'] },
  { name: 'note', type: 'text', kind: 'text', duck: 'VARCHAR', values: [`''`, `''`, `''`, `''`] },
  { name: 'big', type: 'text', kind: 'text', duck: 'VARCHAR', values: [`''`, `''`, `''`, `''`] },
];

interface Table {
  readonly name: string;
  /** The key column and its type. */
  readonly id: { readonly type: string; readonly duck: string };
  readonly columns: readonly Column[];
  /** REPLICA IDENTITY FULL: `before` is the whole old row. */
  readonly full: boolean;
}

const TABLES: Record<string, Table> = {
  fidelity: { name: 'fidelity', id: { type: 'int8', duck: 'BIGINT' }, columns: FIDELITY, full: true },
  toasted: { name: 'toasted', id: { type: 'int4', duck: 'INTEGER' }, columns: TOASTED, full: false },
  toasted_full: { name: 'toasted_full', id: { type: 'int4', duck: 'INTEGER' }, columns: TOASTED, full: true },
  truncated: {
    name: 'truncated',
    id: { type: 'int4', duck: 'INTEGER' },
    columns: [{ name: 'v', type: 'text', kind: 'text', duck: 'VARCHAR', values: [`''`, `''`, `''`, `''`] }],
    full: false,
  },
};

const ident = (name: string) => `"${name.replaceAll('"', '""')}"`;

const SCHEMA_SQL = `
  CREATE EXTENSION IF NOT EXISTS citext;
  CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy 😀');
  CREATE TYPE pair AS (a int, b text);
  CREATE DOMAIN posint AS int CHECK (VALUE > 0);
  CREATE DOMAIN intlist AS int[];
  CREATE TABLE fidelity (id int8 PRIMARY KEY, ${FIDELITY.map((c) => `${ident(c.name)} ${c.type}`).join(', ')});
  ALTER TABLE fidelity REPLICA IDENTITY FULL;
  CREATE TABLE toasted (id int PRIMARY KEY, n int NOT NULL, twice int GENERATED ALWAYS AS (n * 2) STORED,
    note text, big text);
  CREATE TABLE toasted_full (id int PRIMARY KEY, n int NOT NULL, note text, big text);
  ALTER TABLE toasted_full REPLICA IDENTITY FULL;
  CREATE TABLE truncated (id int PRIMARY KEY, v text);`;

// ---------------------------------------------------------------------------------------------------------------
// What Postgres holds, computed in SQL (the contract's forms, never slotlake's code)

/**
 * Postgres' text output of `x` (its type's output function, as pgoutput sends it): `format('%s')` calls it, where a
 * cast to text may not (`char(5)` loses its padding, `inet` gains a netmask).
 */
const textOf = (x: string) => `(CASE WHEN ${notNull(x)} THEN format('%s', ${x}) END)`;

/** `x` is not SQL NULL (for a composite, `IS NOT NULL` asks whether every field is not null). */
const notNull = (x: string) => `num_nonnulls(${x}) = 1`;

/** The contract's JSON value of scalar `x` of `kind`, as SQL returning json. */
function jsonOf(kind: Kind, x: string): string {
  const iso = (value: string, suffix: string) =>
    `regexp_replace(to_char(${value}, 'YYYY-MM-DD"T"HH24:MI:SS.US'), '\\.?0*$', '') || '${suffix}'`;
  switch (kind) {
    case 'int': // oid too: a number (to_json would make it a string)
      return `${textOf(x)}::json`;
    case 'bool':
    case 'float4':
    case 'float8':
      return `to_json(${x})`;
    case 'bytea':
      return `to_json(translate(encode(${x}, 'base64'), E'\\n', ''))`;
    case 'timestamp':
      return `to_json(CASE WHEN isfinite(${x}) AND ${x} >= '0001-01-01' AND ${x} < '10000-01-01'
        THEN ${iso(x, '')} ELSE ${textOf(x)} END)`;
    case 'timestamptz': {
      const utc = `(${x} AT TIME ZONE 'UTC')`;
      return `to_json(CASE WHEN isfinite(${x}) AND ${utc} >= '0001-01-01' AND ${utc} < '10000-01-01'
        THEN ${iso(utc, 'Z')} ELSE ${textOf(x)} END)`;
    }
    default:
      return `to_json(${textOf(x)})`;
  }
}

/** The Parquet value of scalar `x` in a canonical text (compared with DuckDB's `canonical`), as SQL. */
function parquetOf(kind: Kind, x: string): string {
  switch (kind) {
    case 'bytea':
      return `encode(${x}, 'hex')`;
    case 'date':
      return `CASE WHEN isfinite(${x}) THEN (${x} - DATE '1970-01-01')::text END`;
    case 'time':
    case 'timestamp':
    case 'timestamptz':
      return `trunc(extract(epoch FROM ${x}) * 1000000)::text`;
    case 'bool':
      return `${x}::text`; // true/false, as DuckDB prints a BOOLEAN
    default:
      return textOf(x);
  }
}

/** True (SQL) when the Parquet type cannot hold scalar `x` (§3.1: kept in `_unrepresentable`). */
function unrepresentableSql(kind: Kind, x: string): string {
  switch (kind) {
    case 'decimal':
      return `(${x} = 'NaN'::numeric)`;
    case 'date':
      return `(NOT isfinite(${x}))`;
    case 'timestamp':
    case 'timestamptz':
      return `(NOT isfinite(${x}) OR trunc(extract(epoch FROM ${x}) * 1000000)
        NOT BETWEEN -9223372036854775808 AND 9223372036854775807)`;
    default:
      return 'false';
  }
}

const nonFiniteKinds = new Set<Kind>(['float4', 'float8', 'numeric', 'decimal']);

/** The SQL expressions computing what a column must hold: JSON, Parquet, unrepresentable, text, non-finite. */
function expectations(column: Column): [string, string, string, string, string] {
  const c = ident(column.name);
  const isNull = `NOT ${notNull(c)}`;
  // the elements by subscript (unnest would spread a composite element into its fields)
  const elements = (expression: (elem: string) => string) =>
    `coalesce((SELECT json_agg(${expression(`${c}[i]`)} ORDER BY i) FROM generate_subscripts(${c}, 1) AS s(i)), '[]'::json)`;
  if (!column.array && column.kind === 'text') {
    // the JSON string and the Parquet STRING are the text output itself (see `snapshot`): a 10 MB value once
    return ['NULL', 'NULL', 'false', textOf(c), 'false'];
  }
  if (!column.array) {
    return [
      `${jsonOf(column.kind, c)}::text`,
      parquetOf(column.kind, c),
      unrepresentableSql(column.kind, c),
      textOf(c),
      nonFiniteKinds.has(column.kind) ? `${c}::text IN ('NaN', 'Infinity', '-Infinity')` : 'false',
    ];
  }
  return [
    `(CASE WHEN ${isNull} THEN NULL WHEN array_ndims(${c}) > 1 THEN array_to_json(${c})
       ELSE ${elements((elem) => jsonOf(column.kind, elem))} END)::text`,
    `(CASE WHEN ${isNull} THEN NULL ELSE ${elements((elem) => `to_json(${parquetOf(column.kind, elem)})`)} END)::text`,
    `(array_ndims(${c}) > 1 OR EXISTS (SELECT FROM generate_subscripts(${c}, 1) AS s(i)
       WHERE ${unrepresentableSql(column.kind, `${c}[i]`)}))`,
    textOf(c),
    'false',
  ];
}

/** What Postgres holds in one cell. */
interface Cell {
  /** The contract's JSON text of the value; null for SQL NULL. */
  readonly json: string | null;
  /** The canonical Parquet text (a JSON array of them for arrays); null for SQL NULL. */
  readonly parquet: string | null;
  readonly unrepresentable: boolean;
  /** Postgres' text output (what `_unrepresentable` keeps). */
  readonly text: string | null;
  /** NaN or ±Infinity in a float or numeric column: wal2json sends null. */
  readonly nonFinite: boolean;
}

type Row = ReadonlyMap<string, Cell>;

/** Each row's cells, by id, computed in SQL on a session with slotlake's output settings. */
async function snapshot(client: pg.Client, table: Table, ids: readonly number[]): Promise<Map<number, Row>> {
  const columns = [
    { name: 'id', type: table.id.type, kind: 'int', duck: table.id.duck } as Column,
    ...table.columns,
  ];
  const select = columns.flatMap((column, i) =>
    expectations(column).map((expression, k) => `${expression} AS c${i}_${k}`),
  );
  const result = await client.query(
    `SELECT id::int8::text AS key, ${select.join(', ')} FROM ${table.name} WHERE id = ANY($1::int8[]) ORDER BY id`,
    [ids],
  );
  assert.equal(result.rows.length, ids.length, `${table.name}: rows ${ids.join(', ')}`);
  const rows = new Map<number, Row>();
  for (const raw of result.rows as Record<string, string | null>[]) {
    const row = new Map<string, Cell>();
    columns.forEach((column, i) => {
      const text = raw[`c${i}_3`] ?? null;
      const plainText = column.kind === 'text' && !column.array;
      row.set(column.name, {
        json: plainText ? (text === null ? null : JSON.stringify(text)) : (raw[`c${i}_0`] ?? null),
        parquet: plainText ? text : (raw[`c${i}_1`] ?? null),
        unrepresentable: raw[`c${i}_2`] === 't',
        text,
        nonFinite: raw[`c${i}_4`] === 't',
      });
    });
    rows.set(Number(raw.key), row);
  }
  return rows;
}

/** One change the archive must hold. */
interface Expected {
  readonly table: Table;
  readonly op: 'c' | 'u' | 'd' | 't';
  /** The row's id; null for a truncate. */
  readonly id: number | null;
  readonly after: Row | null;
  readonly before: Row | null;
  /** `before` holds only the replica identity key (DEFAULT). */
  readonly beforeIsKey: boolean;
  /** Columns absent from `after` because the server did not send their unchanged TOASTed value. */
  readonly unchangedToast: readonly string[];
}

// ---------------------------------------------------------------------------------------------------------------
// The workload

/** A server with the test database: the workload's own session and a session computing the expectations. */
interface Source {
  readonly label: string;
  readonly main: Pipeline;
  readonly expect: pg.Client;
}

/** Every column comes back as the server's text output, unparsed. */
const rawText = { getTypeParser: () => (text: string) => text } as unknown as pg.CustomTypesConfig;

const ROW_IDS = [1, 2, 3, 4, 5];

const BIG_VALUE = `☃😀 ${randomBytes(7_600_000).toString('base64').replace(/.{76}/g, '$&\n')}`;

/** Phase 1: five fidelity rows, the 10 MB values, the rows to be truncated. */
async function insertPhase(source: Source): Promise<Expected[]> {
  const sql = (text: string) => source.main.sql(text);
  // the workload's own session shows other settings than slotlake's: the archive must not depend on them
  await sql(`SET TimeZone = 'Pacific/Chatham'; SET DateStyle = 'SQL, DMY'; SET extra_float_digits = 0;
    SET IntervalStyle = 'sql_standard'; SET bytea_output = 'escape'`);
  const names = FIDELITY.map((c) => ident(c.name)).join(', ');
  const rows = ROW_IDS.map(
    (id) =>
      `(${id}, ${FIDELITY.map((c) => (id === 1 ? `NULL::${c.type}` : `(${c.values[id - 2]})::${c.type}`)).join(', ')})`,
  );
  await sql(`INSERT INTO fidelity (id, ${names}) VALUES ${rows.join(',\n')}`);
  // ~10 MB of random bytes in base64 (with line breaks): incompressible, so stored out of line in TOAST; the same
  // value on both servers
  await source.main.sql(`INSERT INTO toasted (id, n, note, big) VALUES (1, 1, 'first', $1)`, [BIG_VALUE]);
  await sql(`INSERT INTO toasted_full (id, n, note, big) SELECT id, n, note, big FROM toasted`);
  await sql(`INSERT INTO truncated VALUES (1, 'a'), (2, 'b')`);
  for (const table of ['toasted', 'toasted_full']) {
    const sizes = await source.expect.query(
      `SELECT octet_length(big)::text AS length, pg_relation_size(reltoastrelid)::text AS toast
         FROM ${table}, pg_class WHERE pg_class.oid = '${table}'::regclass`,
    );
    const { length, toast } = sizes.rows[0] as { length: string; toast: string };
    assert.ok(Number(length) > 10_000_000, `${table}: a 10 MB value`);
    assert.ok(Number(toast) > 7_000_000, `${table}: the value is stored in the TOAST table (${toast} bytes)`);
  }
  const expected: Expected[] = [];
  const inserted = async (table: Table, ids: number[]) => {
    for (const [id, row] of await snapshot(source.expect, table, ids))
      expected.push({ table, op: 'c', id, after: row, before: null, beforeIsKey: false, unchangedToast: [] });
  };
  await inserted(TABLES.fidelity!, ROW_IDS);
  await inserted(TABLES.toasted!, [1]);
  await inserted(TABLES.toasted_full!, [1]);
  await inserted(TABLES.truncated!, [1, 2]);
  return expected;
}

/** Phase 2: updates (one leaving the 10 MB value unchanged per TOASTed table), deletes, a truncate. */
async function changePhase(source: Source): Promise<Expected[]> {
  const sql = (text: string) => source.main.sql(text);
  const fidelity = TABLES.fidelity!;
  const toasted = TABLES.toasted!;
  const full = TABLES.toasted_full!;
  const expected: Expected[] = [];
  const old = await snapshot(source.expect, fidelity, ROW_IDS);
  const names = FIDELITY.map((c) => ident(c.name)).join(', ');
  // every column of row 2 takes row 4's values, row 4 row 1's (NULLs), row 1 row 3's
  for (const [target, from] of [
    [2, 4],
    [4, 1],
    [1, 3],
  ] as const) {
    await sql(
      `UPDATE fidelity SET (${names}) = (SELECT ${names} FROM fidelity WHERE id = ${from}) WHERE id = ${target}`,
    );
  }
  const updated = await snapshot(source.expect, fidelity, [1, 2, 4]);
  for (const id of [2, 4, 1])
    expected.push({
      table: fidelity,
      op: 'u',
      id,
      after: updated.get(id)!,
      before: old.get(id)!,
      beforeIsKey: false,
      unchangedToast: [],
    });
  await sql(`DELETE FROM fidelity WHERE id IN (3, 5)`);
  for (const id of [3, 5])
    expected.push({
      table: fidelity,
      op: 'd',
      id,
      after: null,
      before: old.get(id)!,
      beforeIsKey: false,
      unchangedToast: [],
    });

  const fullBefore = (await snapshot(source.expect, full, [1])).get(1)!;
  await sql(`UPDATE toasted SET n = n + 1, note = 'second' WHERE id = 1`);
  await sql(`UPDATE toasted_full SET n = n + 1, note = 'second' WHERE id = 1`);
  const toastedAfter = (await snapshot(source.expect, toasted, [1])).get(1)!;
  const fullAfter = (await snapshot(source.expect, full, [1])).get(1)!;
  // DEFAULT: the unchanged value is not sent (named in unchanged_toast); FULL: filled from the old row
  expected.push({
    table: toasted,
    op: 'u',
    id: 1,
    after: toastedAfter,
    before: null,
    beforeIsKey: true,
    unchangedToast: ['big'],
  });
  expected.push({
    table: full,
    op: 'u',
    id: 1,
    after: fullAfter,
    before: fullBefore,
    beforeIsKey: false,
    unchangedToast: [],
  });
  await sql(`DELETE FROM toasted WHERE id = 1`);
  expected.push({
    table: toasted,
    op: 'd',
    id: 1,
    after: null,
    before: toastedAfter,
    beforeIsKey: true,
    unchangedToast: [],
  });
  await sql(`TRUNCATE truncated`);
  expected.push({
    table: TABLES.truncated!,
    op: 't',
    id: null,
    after: null,
    before: null,
    beforeIsKey: false,
    unchangedToast: [],
  });
  return expected;
}

// ---------------------------------------------------------------------------------------------------------------
// The archives: one per (format, plugin, server), each the objects its manifests name, downloaded

type Format = 'jsonl' | 'parquet';
type Plugin = 'pgoutput' | 'wal2json';

interface ArchivedObject {
  readonly key: string;
  readonly table: string;
  /** Where it was downloaded to. */
  readonly path: string;
  /** Written by the second run (which met every table first through an update, a delete or a truncate). */
  readonly secondRun: boolean;
  readonly manifestEntry: Record<string, unknown>;
}

interface Archive {
  readonly label: string;
  readonly source: Source;
  readonly format: Format;
  readonly plugin: Plugin;
  readonly env: Record<string, string>;
  readonly prefix: string;
  /** Manifests committed by the first run. */
  firstRun: Set<string>;
  objects: ArchivedObject[];
}

function archiveOf(source: Source, format: Format, plugin: Plugin): Archive {
  const name = `${source.main.name}_${format[0]}${plugin[0]}`;
  return {
    label: `${format} × ${plugin}, ${source.label}`,
    source,
    format,
    plugin,
    prefix: `${name}/`,
    env: {
      ...source.main.env,
      SLOTLAKE_SLOT: name,
      SLOTLAKE_PUBLICATION: name,
      SLOTLAKE_PREFIX: `${name}/`,
      SLOTLAKE_FORMAT: format,
      SLOTLAKE_PLUGIN: plugin,
    },
    firstRun: new Set(),
    objects: [],
  };
}

async function runUntilCaughtUp(archive: Archive): Promise<void> {
  const run = await runCli(['run', '--until-caught-up'], archive.env);
  assert.equal(run.code, 0, `${archive.label}: ${run.stderr}`);
  assert.equal(run.summary?.stopReason, 'caught-up', archive.label);
}

async function getObject(s3: S3Client, key: string): Promise<Uint8Array> {
  const object = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
  return object.Body!.transformToByteArray();
}

/** Downloads every object the archive's manifests name (and nothing else) into `dir`. */
async function download(s3: S3Client, archive: Archive, dir: string): Promise<void> {
  const objects: ArchivedObject[] = [];
  for (const manifestKey of await listKeys(s3, `${archive.prefix}manifests/`)) {
    const manifest = JSON.parse(Buffer.from(await getObject(s3, manifestKey)).toString('utf8')) as {
      objects: Record<string, unknown>[];
    };
    for (const entry of manifest.objects) {
      const key = entry.key as string;
      const path = join(dir, key);
      mkdirSync(dirname(path), { recursive: true });
      writeFileSync(path, await getObject(s3, key));
      objects.push({
        key,
        table: entry.table as string,
        path,
        secondRun: !archive.firstRun.has(manifestKey),
        manifestEntry: entry,
      });
    }
  }
  assert.ok(objects.length > 0, `${archive.label}: objects archived`);
  archive.objects = objects;
}

// ---------------------------------------------------------------------------------------------------------------
// Reading with DuckDB, comparing values

let duckdb: DuckDBInstance;
let duck: DuckDBConnection;

async function query(sql: string): Promise<Record<string, unknown>[]> {
  const reader = await duck.runAndReadAll(sql);
  return reader.getRowObjectsJS() as Record<string, unknown>[];
}

const fileList = (paths: readonly string[]) => `[${paths.map(q).join(', ')}]`;

/** A JSON number, kept as its source text. */
class JsonNumber {
  constructor(readonly source: string) {}
}

type Json = null | boolean | string | JsonNumber | Json[] | { [key: string]: Json };

/** Parses JSON keeping each number's exact text (int8 would not survive a double). */
function parseExact(text: string): Json {
  return JSON.parse(text, (_key, value: unknown, context?: { source?: string }) =>
    typeof value === 'number' ? new JsonNumber(context!.source!) : value,
  ) as Json;
}

const isInteger = (text: string) => /^-?\d+$/.test(text);

/** Equal JSON values: integers exactly (as big integers), other numbers as doubles (-0 ≠ 0). */
function sameJson(a: Json, b: Json): boolean {
  if (a instanceof JsonNumber || b instanceof JsonNumber) {
    if (!(a instanceof JsonNumber && b instanceof JsonNumber)) return false;
    if (isInteger(a.source) && isInteger(b.source)) return BigInt(a.source) === BigInt(b.source);
    return Object.is(Number(a.source), Number(b.source));
  }
  if (Array.isArray(a) || Array.isArray(b)) {
    return (
      Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((x, i) => sameJson(x, b[i]!))
    );
  }
  if (a !== null && b !== null && typeof a === 'object' && typeof b === 'object') {
    const keys = Object.keys(a);
    return sameNames(keys, Object.keys(b)) && keys.every((key) => sameJson(a[key]!, b[key]!));
  }
  return a === b;
}

function sameNames(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && [...a].sort().join('\u0000') === [...b].sort().join('\u0000');
}

/** A short view of a value for failure messages (values may be 10 MB). */
function show(value: unknown): string {
  const text =
    typeof value === 'string'
      ? JSON.stringify(value)
      : JSON.stringify(value, (_k, v: unknown) =>
          v instanceof JsonNumber ? `#${v.source}` : typeof v === 'bigint' ? `${v}n` : v,
        );
  return text === undefined
    ? String(value)
    : text.length > 300
      ? `${text.slice(0, 300)}… (${text.length})`
      : text;
}

/** What a reader must find for one cell of `archive`: wal2json turns NaN/±Infinity floats and numerics to null. */
function lost(archive: Archive, cell: Cell): boolean {
  return archive.plugin === 'wal2json' && cell.nonFinite;
}

/** Values compared, per archive (reported). */
const compared = new Map<string, number>();
const count = (archive: Archive, n = 1) =>
  compared.set(archive.label, (compared.get(archive.label) ?? 0) + n);

function allColumns(table: Table): Column[] {
  return [
    { name: 'id', type: table.id.type, kind: 'int', duck: table.id.duck, values: ['', '', '', ''] },
    ...table.columns,
  ];
}

/** Compares a JSON object (a record's `after` or `before`) with the row Postgres holds. */
function checkJsonRow(
  archive: Archive,
  where: string,
  actual: Json,
  row: Row,
  names: readonly string[],
): void {
  assert.ok(actual !== null && typeof actual === 'object' && !Array.isArray(actual), `${where}: an object`);
  const object = actual as Record<string, Json>;
  assert.deepEqual(Object.keys(object).sort(), [...names].sort(), `${where}: the columns`);
  for (const name of names) {
    const cell = row.get(name)!;
    const expected = lost(archive, cell) ? null : parseExact(cell.json ?? 'null');
    assert.ok(
      sameJson(object[name]!, expected),
      `${where}.${name}: ${show(object[name])}, expected ${show(expected)} (Postgres: ${show(cell.text)})`,
    );
    count(archive);
  }
}

interface JsonlRecord {
  readonly filename: string;
  readonly op: string;
  readonly table: string;
  readonly commitLsn: bigint;
  readonly seq: bigint;
  readonly source: string;
  readonly before: string | null;
  readonly after: string | null;
  readonly unchangedToast: string[] | null;
}

const lsnNumber = (text: string) => {
  const [high, low] = text.split('/');
  return (BigInt(`0x${high}`) << 32n) | BigInt(`0x${low}`);
};

const jsonlRead = new Map<Archive, Promise<JsonlRecord[]>>();

/** Every record of the archive's JSON Lines objects, read by DuckDB (once), in commit order. */
function readJsonl(archive: Archive): Promise<JsonlRecord[]> {
  let records = jsonlRead.get(archive);
  if (records === undefined) jsonlRead.set(archive, (records = readJsonlOnce(archive)));
  return records;
}

async function readJsonlOnce(archive: Archive): Promise<JsonlRecord[]> {
  const rows = await query(
    `SELECT filename, op, json_extract_string(source, '$.table') AS tbl,
            json_extract_string(source, '$.commit_lsn') AS commit_lsn, json_extract(source, '$.seq')::BIGINT AS seq,
            source::VARCHAR AS source, before::VARCHAR AS before, after::VARCHAR AS after, unchanged_toast
       FROM read_json(${fileList(archive.objects.map((o) => o.path))}, format = 'newline_delimited',
            compression = 'gzip', filename = true, hive_partitioning = false, maximum_object_size = 134217728,
            columns = {op: 'VARCHAR', before: 'JSON', after: 'JSON', source: 'JSON', unchanged_toast: 'VARCHAR[]'})`,
  );
  return rows
    .map((row) => ({
      filename: row.filename as string,
      op: row.op as string,
      table: row.tbl as string,
      commitLsn: lsnNumber(row.commit_lsn as string),
      seq: row.seq as bigint,
      source: row.source as string,
      before: row.before === 'null' ? null : (row.before as string | null),
      after: row.after === 'null' ? null : (row.after as string | null),
      unchangedToast: row.unchanged_toast as string[] | null,
    }))
    .sort((a, b) =>
      a.commitLsn === b.commitLsn ? Number(a.seq - b.seq) : a.commitLsn < b.commitLsn ? -1 : 1,
    );
}

const idOf = (json: string | null): string | null => {
  if (json === null) return null;
  const id = (parseExact(json) as Record<string, Json>).id;
  return id instanceof JsonNumber ? id.source : null;
};

/** JSON Lines: every record's op, after, before and unchanged_toast against Postgres. */
async function checkJsonl(archive: Archive, expected: readonly Expected[]): Promise<void> {
  const records = await readJsonl(archive);
  assert.equal(records.length, expected.length, `${archive.label}: one record per change`);
  const byChange = new Map<string, JsonlRecord>();
  for (const record of records) {
    const key = `${record.table}|${record.op}|${idOf(record.op === 'd' ? record.before : record.after)}`;
    assert.ok(!byChange.has(key), `${archive.label}: ${key} archived once`);
    byChange.set(key, record);
  }
  for (const change of expected) {
    const where = `${archive.label}: ${change.table.name} ${change.op} ${change.id ?? ''}`;
    const record = byChange.get(`${change.table.name}|${change.op}|${change.id}`);
    assert.ok(record, `${where}: archived`);
    const names = allColumns(change.table).map((column) => column.name);
    if (change.after === null) assert.equal(record.after, null, `${where}: after`);
    else {
      const present = names.filter((name) => !change.unchangedToast.includes(name));
      checkJsonRow(archive, `${where} after`, parseExact(record.after!), change.after, present);
    }
    assert.deepEqual(
      record.unchangedToast,
      change.unchangedToast.length > 0 ? change.unchangedToast : null,
      `${where}: unchanged_toast`,
    );
    if (change.before === null) assert.equal(record.before, null, `${where}: before`);
    else
      checkJsonRow(
        archive,
        `${where} before`,
        parseExact(record.before!),
        change.before,
        change.beforeIsKey ? ['id'] : names,
      );
    count(archive, 2); // op, unchanged_toast
  }
}

/** DuckDB SQL giving the canonical form of a Parquet value (compared with `parquetOf`). */
function canonical(kind: Kind, x: string): string {
  switch (kind) {
    case 'float4':
    case 'float8':
      return x;
    case 'bytea':
      return `lower(hex(${x}))`;
    case 'date':
      return `(${x} - DATE '1970-01-01')::VARCHAR`;
    case 'time':
    case 'timestamp':
    case 'timestamptz':
      return `epoch_us(${x})::VARCHAR`;
    default:
      return `${x}::VARCHAR`;
  }
}

const METADATA_TYPES: Record<string, string> = {
  _op: 'VARCHAR',
  _lsn: 'BIGINT',
  _commit_lsn: 'BIGINT',
  _seq: 'BIGINT',
  _tx_id: 'BIGINT',
  _commit_ts: 'TIMESTAMP WITH TIME ZONE',
  _before: 'VARCHAR',
  _unchanged_toast: 'VARCHAR[]',
  _unrepresentable: 'VARCHAR',
};

/** A Parquet scalar read by DuckDB against Postgres' canonical text. */
function sameScalar(kind: Kind, expected: string | null, actual: unknown): boolean {
  if (expected === null || actual === null) return expected === actual;
  if (kind === 'float8') return Object.is(actual, Number(expected));
  if (kind === 'float4') return Object.is(actual, Math.fround(Number(expected)));
  if (kind === 'decimal') return typeof actual === 'string' && sameDecimal(actual, expected);
  return actual === expected;
}

/** The same decimal number, exactly (DuckDB prints DECIMAL(5,5) as `.00123`, Postgres `0.00123`). */
function sameDecimal(a: string, b: string): boolean {
  const parse = (text: string) => {
    const match = /^(-?)(\d*)(?:\.(\d*))?$/.exec(text);
    assert.ok(match, `a decimal: ${text}`);
    return { negative: match[1] === '-', whole: match[2] ?? '', fraction: match[3] ?? '' };
  };
  const [x, y] = [parse(a), parse(b)];
  const scale = Math.max(x.fraction.length, y.fraction.length);
  const unscaled = (d: ReturnType<typeof parse>) => {
    const magnitude = BigInt(`0${d.whole}${d.fraction.padEnd(scale, '0')}`);
    return d.negative ? -magnitude : magnitude;
  };
  return unscaled(x) === unscaled(y);
}

function checkParquetCell(
  archive: Archive,
  where: string,
  column: Column,
  cell: Cell | undefined,
  actual: unknown,
  unrepresentable: Record<string, string>,
): void {
  const name = column.name;
  const at = `${where}.${name}`;
  if (cell === undefined || cell.text === null || lost(archive, cell)) {
    assert.equal(actual, null, `${at}: null`);
  } else if (cell.unrepresentable) {
    assert.equal(actual, null, `${at}: unrepresentable, so null`);
    assert.equal(unrepresentable[name], cell.text, `${at}: Postgres' text in _unrepresentable`);
  } else if (column.array) {
    const expected = JSON.parse(cell.parquet!) as (string | null)[];
    assert.ok(Array.isArray(actual), `${at}: a list, got ${show(actual)}`);
    assert.ok(
      actual.length === expected.length && expected.every((e, i) => sameScalar(column.kind, e, actual[i])),
      `${at}: ${show(actual)}, expected ${show(expected)} (Postgres: ${show(cell.text)})`,
    );
  } else {
    assert.ok(
      sameScalar(column.kind, cell.parquet, actual),
      `${at}: ${show(actual)}, expected ${show(cell.parquet)} (Postgres: ${show(cell.text)})`,
    );
  }
  count(archive);
}

interface ParquetRow extends Record<string, unknown> {
  readonly filename: string;
  readonly _op: string;
  readonly _commit_lsn: bigint;
  readonly _seq: bigint;
  readonly _before: string | null;
  readonly _unchanged_toast: string[] | null;
  readonly _unrepresentable: string | null;
}

const parquetRead = new Map<string, Promise<ParquetRow[]>>();

/** Every row of a table's Parquet objects, read by DuckDB (once; table columns as `c<i>`), in commit order. */
function readParquet(archive: Archive, table: Table): Promise<ParquetRow[]> {
  const key = `${archive.label}|${table.name}`;
  let rows = parquetRead.get(key);
  if (rows === undefined) parquetRead.set(key, (rows = readParquetOnce(archive, table)));
  return rows;
}

async function readParquetOnce(archive: Archive, table: Table): Promise<ParquetRow[]> {
  const objects = archive.objects.filter((o) => o.table === table.name);
  assert.ok(objects.length > 0, `${archive.label}: ${table.name} archived`);
  const columns = allColumns(table);
  for (const object of objects) {
    const types = await query(
      `DESCRIBE SELECT * FROM read_parquet(${q(object.path)}, hive_partitioning = false)`,
    );
    assert.deepEqual(
      Object.fromEntries(types.map((t) => [t.column_name as string, t.column_type as string])),
      {
        ...Object.fromEntries(columns.map((c) => [c.name, c.duck])),
        ...METADATA_TYPES,
      },
      `${archive.label}: ${object.key}: column types`,
    );
  }
  const select = columns.map((column, i) => {
    const c = ident(column.name);
    const value = column.array
      ? `list_transform(${c}, elem -> ${canonical(column.kind, 'elem')})`
      : canonical(column.kind, c);
    return `${value} AS c${i}`;
  });
  return (await query(
    `SELECT filename, _op, _commit_lsn, _seq, _before, _unchanged_toast, _unrepresentable, ${select.join(', ')}
       FROM read_parquet(${fileList(objects.map((o) => o.path))}, filename = true, hive_partitioning = false)
      ORDER BY _commit_lsn, _seq`,
  )) as ParquetRow[];
}

/** Parquet: every row's columns, `_op`, `_before`, `_unchanged_toast` and `_unrepresentable` against Postgres. */
async function checkParquet(archive: Archive, expected: readonly Expected[]): Promise<void> {
  for (const table of Object.values(TABLES)) {
    const rows = await readParquet(archive, table);
    const changes = expected.filter((change) => change.table === table);
    assert.equal(rows.length, changes.length, `${archive.label}: ${table.name}: one row per change`);
    const columns = allColumns(table);
    const byChange = new Map<string, ParquetRow>();
    for (const row of rows) {
      const key = `${row._op}|${row._op === 't' ? null : row.c0}`;
      assert.ok(!byChange.has(key), `${archive.label}: ${table.name} ${key} archived once`);
      byChange.set(key, row);
    }
    for (const change of changes) {
      const where = `${archive.label}: ${table.name} ${change.op} ${change.id ?? ''}`;
      const row = byChange.get(`${change.op}|${change.id}`);
      assert.ok(row, `${where}: archived`);
      // the row: the new one for c/u, the old one (or its key) for d, none for t
      const values = change.op === 'd' ? change.before : change.after;
      const unrepresentable = (
        row._unrepresentable === null ? {} : JSON.parse(row._unrepresentable)
      ) as Record<string, string>;
      const expectUnrepresentable: string[] = [];
      columns.forEach((column, i) => {
        const cell =
          change.unchangedToast.includes(column.name) || (change.op === 'd' && change.beforeIsKey && i > 0)
            ? undefined
            : values?.get(column.name);
        if (cell && cell.text !== null && cell.unrepresentable && !lost(archive, cell))
          expectUnrepresentable.push(column.name);
        checkParquetCell(archive, `${where} row`, column, cell, row[`c${i}`], unrepresentable);
      });
      assert.deepEqual(
        Object.keys(unrepresentable).sort(),
        expectUnrepresentable.sort(),
        `${where}: _unrepresentable`,
      );
      assert.deepEqual(
        row._unchanged_toast,
        change.unchangedToast.length > 0 ? change.unchangedToast : null,
        `${where}: _unchanged_toast`,
      );
      if (change.before === null) assert.equal(row._before, null, `${where}: _before`);
      else
        checkJsonRow(
          archive,
          `${where} _before`,
          parseExact(row._before!),
          change.before,
          change.beforeIsKey ? ['id'] : columns.map((c) => c.name),
        );
      count(archive, 3); // _op, _unrepresentable, _unchanged_toast
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The runs

let stack: TestStack;
let pg15: LocalPostgres;
let s3: S3Client;
let dir: string;
const sources: Source[] = [];
const archives: Archive[] = [];
/** What each source's archives must hold. */
const expectedOf = new Map<Source, Expected[]>();

async function openSource(label: string, onStack: TestStack): Promise<Source> {
  const main = await createPipeline(onStack, SCHEMA_SQL);
  // other defaults for every session of the database: slotlake's output must not depend on them
  await main.sql(`ALTER DATABASE ${ident(main.name)} SET DateStyle = 'German, DMY';
    ALTER DATABASE ${ident(main.name)} SET TimeZone = 'America/St_Johns';
    ALTER DATABASE ${ident(main.name)} SET extra_float_digits = -15;
    ALTER DATABASE ${ident(main.name)} SET IntervalStyle = 'iso_8601'`);
  const expect = new pg.Client({ connectionString: main.databaseUrl, types: rawText });
  await expect.connect();
  // the contract's text output: slotlake's replication session settings
  await expect.query(`SET DateStyle = ISO; SET TimeZone = 'UTC'; SET IntervalStyle = postgres;
    SET extra_float_digits = 3; SET bytea_output = hex`);
  const source = { label, main, expect };
  sources.push(source);
  return source;
}

before(async () => {
  const binDir = debianPostgresBinDir(15);
  assert.ok(binDir, 'PostgreSQL 15 is missing: apt-get install postgresql-15 postgresql-15-wal2json');
  dir = mkdtempSync(join(tmpdir(), 'slotlake-fidelity-'));
  [stack, pg15] = await Promise.all([startTestStack(), startLocalPostgres({ binDir })]);
  s3 = testS3Client(stack);
  duckdb = await DuckDBInstance.create(':memory:');
  duck = await duckdb.connect();
  await duck.run(`SET TimeZone = 'UTC'`);

  const [on17, on15] = await Promise.all([
    openSource('PostgreSQL 17', stack),
    openSource('PostgreSQL 15', { ...stack, postgres: pg15 }),
  ]);
  for (const format of ['jsonl', 'parquet'] as const)
    archives.push(archiveOf(on17, format, 'pgoutput'), archiveOf(on15, format, 'wal2json'));
  // the two servers' pipelines side by side, each server's one after the other
  const eachServer = (work: (archive: Archive) => Promise<void>) =>
    Promise.all(
      sources.map(async (source) => {
        for (const archive of archives) if (archive.source === source) await work(archive);
      }),
    );
  await eachServer(async (archive) => {
    const result = await runCli(['setup'], archive.env);
    assert.equal(result.code, 0, `${archive.label}: ${result.stderr}`);
  });
  await Promise.all(sources.map(async (source) => expectedOf.set(source, await insertPhase(source))));
  await eachServer(async (archive) => {
    await runUntilCaughtUp(archive);
    archive.firstRun = new Set(await listKeys(s3, `${archive.prefix}manifests/`));
  });
  await Promise.all(
    sources.map(async (source) => expectedOf.get(source)!.push(...(await changePhase(source)))),
  );
  await eachServer(async (archive) => {
    await runUntilCaughtUp(archive);
    await download(s3, archive, dir);
  });
});

after(async () => {
  duck?.closeSync();
  duckdb?.closeSync();
  for (const source of sources) {
    await source.expect.end().catch(() => undefined);
    await source.main.close().catch(() => undefined);
  }
  s3?.destroy();
  await pg15?.stop();
  await stack?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function archive(format: Format, plugin: Plugin, server: string): Archive {
  const found = archives.find((a) => a.format === format && a.plugin === plugin && a.source.label === server);
  assert.ok(found, `${format} × ${plugin}, ${server}`);
  return found;
}

async function checkArchive(t: TestContext, archive: Archive): Promise<void> {
  const expected = expectedOf.get(archive.source)!;
  compared.set(archive.label, 0);
  if (archive.format === 'jsonl') await checkJsonl(archive, expected);
  else await checkParquet(archive, expected);
  t.diagnostic(`${compared.get(archive.label)} values compared over ${expected.length} changes`);
}

for (const [format, plugin, server] of [
  ['jsonl', 'pgoutput', 'PostgreSQL 17'],
  ['parquet', 'pgoutput', 'PostgreSQL 17'],
  ['jsonl', 'wal2json', 'PostgreSQL 15'],
  ['parquet', 'wal2json', 'PostgreSQL 15'],
] as const) {
  test(`${format} × ${plugin} (${server}): every value DuckDB reads equals what Postgres holds`, (t) =>
    checkArchive(t, archive(format, plugin, server)));
}

// ---------------------------------------------------------------------------------------------------------------
// wal2json parity: the same workload through pgoutput (PostgreSQL 17) and wal2json (PostgreSQL 15)

const SPECIAL_NUMBERS = new Set(['NaN', 'Infinity', '-Infinity']);

/** The one documented difference: a NaN/±Infinity float or numeric that wal2json sends as null. */
function nanLost(column: Column | undefined, fromPgoutput: Json, fromWal2json: Json): boolean {
  return (
    column !== undefined &&
    !column.array &&
    nonFiniteKinds.has(column.kind) &&
    fromWal2json === null &&
    typeof fromPgoutput === 'string' &&
    SPECIAL_NUMBERS.has(fromPgoutput)
  );
}

/** Compares two rows (JSON objects) value by value; returns the number of NaN/±Infinity cells wal2json lost. */
function compareRows(
  where: string,
  table: Table,
  fromPgoutput: string | null,
  fromWal2json: string | null,
): number {
  if (fromPgoutput === null || fromWal2json === null) {
    assert.equal(fromWal2json, fromPgoutput, where);
    return 0;
  }
  const a = parseExact(fromPgoutput) as Record<string, Json>;
  const b = parseExact(fromWal2json) as Record<string, Json>;
  assert.deepEqual(Object.keys(b).sort(), Object.keys(a).sort(), `${where}: the columns`);
  const columns = new Map(allColumns(table).map((column) => [column.name, column]));
  let lostCells = 0;
  for (const [name, value] of Object.entries(a)) {
    if (nanLost(columns.get(name), value, b[name]!)) lostCells++;
    else
      assert.ok(
        sameJson(b[name]!, value),
        `${where}.${name}: wal2json ${show(b[name])}, pgoutput ${show(value)}`,
      );
  }
  return lostCells;
}

/** The NaN/±Infinity cells of the expected changes that wal2json cannot carry (in after, and whole-row befores). */
function expectedLost(expected: readonly Expected[], format: Format): number {
  let cells = 0;
  for (const change of expected) {
    const rows = [change.after, change.beforeIsKey ? null : change.before];
    // Parquet's row is the old row for a delete, whose `before` is counted once (in _before) as well
    if (format === 'parquet' && change.op === 'd') rows.push(change.before);
    for (const row of rows) for (const cell of row?.values() ?? []) if (cell.nonFinite) cells++;
  }
  return cells;
}

const tableOf = (name: string) => {
  const table = TABLES[name];
  assert.ok(table, `a table of the workload: ${name}`);
  return table;
};

test('wal2json parity, JSON Lines: the same records as pgoutput, change for change, but for NaN/±Infinity', async (t) => {
  const [pgoutput, wal2json] = [
    archive('jsonl', 'pgoutput', 'PostgreSQL 17'),
    archive('jsonl', 'wal2json', 'PostgreSQL 15'),
  ];
  const a = await readJsonl(pgoutput);
  const b = await readJsonl(wal2json);
  assert.equal(b.length, a.length, 'as many records');
  let lostCells = 0;
  for (let i = 0; i < a.length; i++) {
    const [x, y] = [a[i]!, b[i]!];
    const where = `record ${i} (${x.table} ${x.op})`;
    const [sx, sy] = [
      parseExact(x.source) as Record<string, Json>,
      parseExact(y.source) as Record<string, Json>,
    ];
    assert.deepEqual(
      [y.op, sy.schema, sy.table, show(sy.seq)],
      [x.op, sx.schema, sx.table, show(sx.seq)],
      where,
    );
    assert.deepEqual(y.unchangedToast, x.unchangedToast, `${where}: unchanged_toast`);
    const table = tableOf(x.table);
    lostCells += compareRows(`${where} after`, table, x.after, y.after);
    lostCells += compareRows(`${where} before`, table, x.before, y.before);
  }
  // exactly the NaN/±Infinity values Postgres holds, and nothing else
  assert.equal(lostCells, expectedLost(expectedOf.get(pgoutput.source)!, 'jsonl'));
  assert.ok(lostCells > 0);
  t.diagnostic(
    `${a.length} records compared; ${lostCells} NaN/±Infinity values arrive as null through wal2json`,
  );
});

/** A manifest's description of a column without what differs between two servers (OIDs of created types). */
function portable(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(portable);
  if (value === null || typeof value !== 'object') return value;
  return Object.fromEntries(
    Object.entries(value)
      .filter(
        ([key, v]) => !((key === 'typeOid' || key === 'pgTypeOid') && typeof v === 'number' && v >= 10_000),
      )
      .map(([key, v]) => [key, portable(v)]),
  );
}

test('wal2json parity, Parquet: the same table schemas and rows as pgoutput, but for NaN/±Infinity', async (t) => {
  const [pgoutput, wal2json] = [
    archive('parquet', 'pgoutput', 'PostgreSQL 17'),
    archive('parquet', 'wal2json', 'PostgreSQL 15'),
  ];
  // the manifests describe every object alike: columns, attnum field ids, types and typmods, nullability, keys
  const described = (a: Archive) =>
    [...a.objects]
      .sort((x, y) => (x.key < y.key ? -1 : 1))
      .map((o) =>
        portable({
          table: o.table,
          rows: o.manifestEntry.rows,
          tableSchema: o.manifestEntry.tableSchema,
          schema: (o.manifestEntry.parquet as Record<string, unknown>).schema,
        }),
      );
  assert.deepEqual(described(wal2json), described(pgoutput));
  let lostCells = 0;
  let rows = 0;
  for (const table of Object.values(TABLES)) {
    const [a, b] = [await readParquet(pgoutput, table), await readParquet(wal2json, table)];
    assert.equal(b.length, a.length, `${table.name}: as many rows`);
    const columns = allColumns(table);
    for (let i = 0; i < a.length; i++) {
      const [x, y] = [a[i]!, b[i]!];
      const where = `${table.name} row ${i} (${x._op})`;
      assert.deepEqual([y._op, y._seq, y._unchanged_toast], [x._op, x._seq, x._unchanged_toast], where);
      const unrepresentable = (row: ParquetRow) =>
        (row._unrepresentable === null ? {} : JSON.parse(row._unrepresentable)) as Record<string, string>;
      const [ux, uy] = [unrepresentable(x), unrepresentable(y)];
      columns.forEach((column, c) => {
        const [vx, vy] = [x[`c${c}`], y[`c${c}`]];
        const dropped = vy === null && !(column.name in uy);
        if (dropped && nanLost(column, specialNumber(vx, ux[column.name]), null)) {
          lostCells++;
          delete ux[column.name];
        } else
          assert.ok(sameCell(vx, vy), `${where}.${column.name}: wal2json ${show(vy)}, pgoutput ${show(vx)}`);
      });
      assert.deepEqual(uy, ux, `${where}: _unrepresentable`);
      lostCells += compareRows(`${where} _before`, table, x._before, y._before);
      rows++;
    }
  }
  assert.equal(lostCells, expectedLost(expectedOf.get(pgoutput.source)!, 'parquet'));
  t.diagnostic(`${rows} rows compared; ${lostCells} NaN/±Infinity values arrive as null through wal2json`);
});

/**
 * A NaN/±Infinity Parquet value as Postgres prints it: a FLOAT/DOUBLE value, a STRING (numeric), or — for a
 * DECIMAL, which cannot hold it — null with the text in `_unrepresentable`.
 */
function specialNumber(value: unknown, unrepresentable: string | undefined): Json {
  if (typeof value === 'number') {
    if (Number.isNaN(value)) return 'NaN';
    if (value === Infinity || value === -Infinity) return value > 0 ? 'Infinity' : '-Infinity';
    return null;
  }
  if (typeof value === 'string') return value;
  return unrepresentable ?? null;
}

function sameCell(a: unknown, b: unknown): boolean {
  if (Array.isArray(a) && Array.isArray(b))
    return a.length === b.length && a.every((x, i) => sameCell(x, b[i]));
  return Object.is(a, b);
}

// ---------------------------------------------------------------------------------------------------------------
// The second run meets `toasted` first through the update that left its 10 MB value unchanged

test('a run that meets a table first through an update leaving a TOASTed value unchanged writes unchanged TOAST', async () => {
  for (const archive of archives) {
    const objects = archive.objects.filter((o) => o.secondRun && o.table === 'toasted');
    assert.ok(objects.length > 0, `${archive.label}: the second run archived toasted`);
    for (const object of objects) {
      const schema = object.manifestEntry.tableSchema as { columns: { name: string }[] };
      assert.deepEqual(
        schema.columns.map((c) => c.name),
        ['id', 'n', 'note', 'big'],
        `${archive.label}: ${object.key}: the table's columns (the generated one left out)`,
      );
    }
    const paths = new Set(objects.map((o) => o.path));
    if (archive.format === 'jsonl') {
      const first = (await readJsonl(archive)).find((r) => paths.has(r.filename));
      assert.ok(first, archive.label);
      assert.equal(first.op, 'u', `${archive.label}: the run's first change of toasted`);
      const after = parseExact(first.after!) as Record<string, Json>;
      assert.deepEqual(
        Object.keys(after).sort(),
        ['id', 'n', 'note'],
        `${archive.label}: big absent, never null`,
      );
      assert.deepEqual(first.unchangedToast, ['big'], archive.label);
    } else {
      const first = (await readParquet(archive, TABLES.toasted!)).find((r) => paths.has(r.filename));
      assert.ok(first, archive.label);
      assert.equal(first._op, 'u', `${archive.label}: the run's first change of toasted`);
      assert.deepEqual([first.c3, first._unchanged_toast], [null, ['big']], archive.label);
    }
  }
});
