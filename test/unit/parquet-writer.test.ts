/**
 * ParquetObjectWriter, checked by an independent reader: files are written from Postgres text and read
 * back with DuckDB (`read_parquet`, `parquet_schema`, `parquet_metadata`), value by value.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DuckDBInstance, type DuckDBConnection } from '@duckdb/node-api';
import fc from 'fast-check';
import type { Tuple, TupleValue } from '../../src/decoding/messages.js';
import { PgType, type TypeInfo } from '../../src/decoding/values.js';
import {
  ParquetObjectWriter,
  RowGroupBudget,
  type ParquetChange,
  type ParquetColumn,
  type ParquetCompression,
} from '../../src/sink/parquet/writer.js';
import { formatDecimal } from '../../src/sink/parquet/statistics.js';

const TOAST = Symbol('unchanged toast');
const UNREP = Symbol('unrepresentable');

type Expected = string | number | boolean | null | readonly (string | number | null)[] | typeof UNREP;
/** [Postgres text (null: SQL NULL), what DuckDB reads (through `read`), or UNREP] */
type Case = readonly [input: string | null | typeof TOAST, expected: Expected];

interface TestColumn extends ParquetColumn {
  /** SQL reading the column as JSON-able values; `::varchar` by default. */
  readonly read?: (column: string) => string;
  readonly duckType: string;
  readonly cases: readonly Case[];
}

const numeric = (precision: number, scale: number) => ((precision << 16) | (scale & 0x7ff)) + 4;
const raw = (column: string) => column;
const hex = (column: string) => `hex(${column})`;
const varcharList = (column: string) => `list_transform(${column}, x -> x::varchar)`;
const hexList = (column: string) => `list_transform(${column}, x -> hex(x))`;

const mood: TypeInfo = { oid: 70001, name: 'mood', namespace: 'public', category: 'E' };
const moodArray: TypeInfo = {
  oid: 70002,
  name: '_mood',
  namespace: 'public',
  category: 'A',
  elementOid: 70001,
};

const COLUMNS: readonly TestColumn[] = [
  {
    name: 'b',
    typeOid: PgType.bool,
    typeModifier: -1,
    duckType: 'BOOLEAN',
    read: raw,
    cases: [
      ['t', true],
      ['f', false],
      [null, null],
    ],
  },
  {
    name: 'i2',
    typeOid: PgType.int2,
    typeModifier: -1,
    duckType: 'SMALLINT',
    read: raw,
    cases: [
      ['-32768', -32768],
      ['32767', 32767],
      ['0', 0],
    ],
  },
  {
    name: 'i4',
    typeOid: PgType.int4,
    typeModifier: -1,
    duckType: 'INTEGER',
    read: raw,
    cases: [
      ['-2147483648', -2147483648],
      ['2147483647', 2147483647],
    ],
  },
  {
    name: 'i8',
    typeOid: PgType.int8,
    typeModifier: -1,
    duckType: 'BIGINT',
    cases: [
      ['-9223372036854775808', '-9223372036854775808'],
      ['9223372036854775807', '9223372036854775807'],
      ['0', '0'],
    ],
  },
  {
    name: 'o',
    typeOid: PgType.oid,
    typeModifier: -1,
    duckType: 'BIGINT',
    cases: [
      ['4294967295', '4294967295'],
      ['0', '0'],
    ],
  },
  {
    name: 'f4',
    typeOid: PgType.float4,
    typeModifier: -1,
    duckType: 'FLOAT',
    read: raw,
    cases: [
      ['3.4028235e+38', Math.fround(3.4028235e38)],
      ['NaN', 'NaN'],
      ['-Infinity', '-Infinity'],
      ['1e-45', Math.fround(1e-45)],
      ['0.1', Math.fround(0.1)],
    ],
  },
  {
    name: 'f8',
    typeOid: PgType.float8,
    typeModifier: -1,
    duckType: 'DOUBLE',
    read: raw,
    cases: [
      ['0.1', 0.1],
      ['NaN', 'NaN'],
      ['Infinity', 'Infinity'],
      ['-Infinity', '-Infinity'],
      ['1.7976931348623157e+308', 1.7976931348623157e308],
      ['5e-324', 5e-324],
    ],
  },
  {
    name: 'n',
    typeOid: PgType.numeric,
    typeModifier: numeric(12, 2),
    duckType: 'DECIMAL(12,2)',
    cases: [
      ['-12.50', '-12.50'],
      ['0.00', '0.00'],
      ['9999999999.99', '9999999999.99'],
      ['NaN', UNREP],
      ['Infinity', UNREP],
      ['-Infinity', UNREP],
    ],
  },
  {
    name: 'n38',
    typeOid: PgType.numeric,
    typeModifier: numeric(38, 10),
    duckType: 'DECIMAL(38,10)',
    cases: [
      ['-1234567890123456789012345678.0123456789', '-1234567890123456789012345678.0123456789'],
      ['0.0000000001', '0.0000000001'],
      ['9999999999999999999999999999.9999999999', '9999999999999999999999999999.9999999999'],
    ],
  },
  {
    name: 'n4',
    typeOid: PgType.numeric,
    typeModifier: numeric(4, 1),
    duckType: 'DECIMAL(4,1)',
    cases: [
      ['-999.9', '-999.9'],
      ['0.5', '0.5'],
    ],
  },
  {
    name: 'nneg',
    typeOid: PgType.numeric,
    typeModifier: numeric(3, -2),
    duckType: 'DECIMAL(5,0)',
    cases: [
      ['12300', '12300'],
      ['-99900', '-99900'],
    ],
  },
  {
    name: 'nu',
    typeOid: PgType.numeric,
    typeModifier: -1,
    duckType: 'VARCHAR',
    cases: [
      [
        '3.14159265358979323846264338327950288419716939937510',
        '3.14159265358979323846264338327950288419716939937510',
      ],
      ['NaN', 'NaN'],
      ['-Infinity', '-Infinity'],
    ],
  },
  {
    name: 't',
    typeOid: PgType.text,
    typeModifier: -1,
    duckType: 'VARCHAR',
    cases: [
      ['', ''],
      ['héllo wörld', 'héllo wörld'],
      ['😀 astral 𝄞', '😀 astral 𝄞'],
      ['a "quoted", {braced}\\', 'a "quoted", {braced}\\'],
      ['NULL', 'NULL'],
      [null, null],
    ],
  },
  {
    name: 'vc',
    typeOid: PgType.varchar,
    typeModifier: 14,
    duckType: 'VARCHAR',
    cases: [
      ['short', 'short'],
      ['', ''],
    ],
  },
  {
    name: 'u',
    typeOid: PgType.uuid,
    typeModifier: -1,
    duckType: 'VARCHAR',
    cases: [['a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11']],
  },
  {
    name: 'j',
    typeOid: PgType.jsonb,
    typeModifier: -1,
    duckType: 'JSON',
    cases: [
      ['{"a": [1, 2.5, "😀"]}', '{"a": [1, 2.5, "😀"]}'],
      ['null', 'null'],
      ['[]', '[]'],
      [null, null],
    ],
  },
  {
    name: 'js',
    typeOid: PgType.json,
    typeModifier: -1,
    duckType: 'JSON',
    cases: [['{ "spaced" : true }', '{ "spaced" : true }']],
  },
  {
    name: 'by',
    typeOid: PgType.bytea,
    typeModifier: -1,
    duckType: 'BLOB',
    read: hex,
    cases: [
      ['\\x00ff10', '00FF10'],
      ['\\x', ''],
      ['\\xdeadbeef', 'DEADBEEF'],
    ],
  },
  {
    name: 'd',
    typeOid: PgType.date,
    typeModifier: -1,
    duckType: 'DATE',
    cases: [
      ['2024-02-29', '2024-02-29'],
      ['0044-03-15 BC', '0044-03-15 (BC)'],
      ['infinity', UNREP],
      ['-infinity', UNREP],
      ['1970-01-01', '1970-01-01'],
      ['12345-06-07', '12345-06-07'],
    ],
  },
  {
    name: 'tm',
    typeOid: PgType.time,
    typeModifier: -1,
    duckType: 'TIME',
    cases: [
      ['00:00:00', '00:00:00'],
      ['23:59:59.999999', '23:59:59.999999'],
      ['24:00:00', '24:00:00'],
      ['12:34:56.5', '12:34:56.5'],
    ],
  },
  {
    name: 'ts',
    typeOid: PgType.timestamp,
    typeModifier: -1,
    duckType: 'TIMESTAMP',
    cases: [
      ['2024-01-02 03:04:05.123456', '2024-01-02 03:04:05.123456'],
      ['0044-03-15 12:00:00 BC', '0044-03-15 (BC) 12:00:00'],
      ['infinity', UNREP],
      ['1970-01-01 00:00:00.000001', '1970-01-01 00:00:00.000001'],
    ],
  },
  {
    name: 'tz',
    typeOid: PgType.timestamptz,
    typeModifier: -1,
    duckType: 'TIMESTAMP WITH TIME ZONE',
    cases: [
      ['2024-01-02 03:04:05.123456+00', '2024-01-02 03:04:05.123456+00'],
      ['2024-01-02 08:34:05+05:30', '2024-01-02 03:04:05+00'],
      ['0044-03-15 12:00:00.5+00 BC', '0044-03-15 (BC) 12:00:00.5+00'],
      ['-infinity', UNREP],
    ],
  },
  {
    name: 'iv',
    typeOid: 1186,
    typeModifier: -1,
    duckType: 'VARCHAR',
    cases: [['1 year 2 mons 3 days 04:05:06.5', '1 year 2 mons 3 days 04:05:06.5']],
  },
  {
    name: 'e',
    typeOid: mood.oid,
    typeModifier: -1,
    type: mood,
    duckType: 'VARCHAR',
    cases: [
      ['happy', 'happy'],
      ['sad', 'sad'],
    ],
  },
  {
    name: 'ai',
    typeOid: 1007,
    typeModifier: -1,
    duckType: 'INTEGER[]',
    read: varcharList,
    cases: [
      ['{1,NULL,3}', ['1', null, '3']],
      ['{}', []],
      ['{{1,2},{3,4}}', UNREP],
      [null, null],
      ['[0:1]={7,8}', ['7', '8']],
    ],
  },
  {
    name: 'at',
    typeOid: 1009,
    typeModifier: -1,
    duckType: 'VARCHAR[]',
    read: varcharList,
    cases: [
      ['{"a b","c\\"d",NULL,"NULL",😀}', ['a b', 'c"d', null, 'NULL', '😀']],
      ['{""}', ['']],
    ],
  },
  {
    name: 'an',
    typeOid: 1231,
    typeModifier: numeric(10, 2),
    duckType: 'DECIMAL(10,2)[]',
    read: varcharList,
    cases: [
      ['{1.50,-2.00}', ['1.50', '-2.00']],
      ['{NaN}', UNREP],
      ['{NULL}', [null]],
    ],
  },
  {
    name: 'atz',
    typeOid: 1185,
    typeModifier: -1,
    duckType: 'TIMESTAMP WITH TIME ZONE[]',
    read: varcharList,
    cases: [
      [
        '{"2024-01-02 03:04:05.5+00","0044-03-15 12:00:00+00 BC"}',
        ['2024-01-02 03:04:05.5+00', '0044-03-15 (BC) 12:00:00+00'],
      ],
      ['{infinity}', UNREP],
    ],
  },
  {
    name: 'ad',
    typeOid: 1182,
    typeModifier: -1,
    duckType: 'DATE[]',
    read: varcharList,
    cases: [['{2024-01-01,NULL}', ['2024-01-01', null]]],
  },
  {
    name: 'ab',
    typeOid: 1000,
    typeModifier: -1,
    duckType: 'BOOLEAN[]',
    read: varcharList,
    cases: [['{t,f}', ['true', 'false']]],
  },
  {
    name: 'aby',
    typeOid: 1001,
    typeModifier: -1,
    duckType: 'BLOB[]',
    read: hexList,
    cases: [['{"\\\\x00ff",NULL}', ['00FF', null]]],
  },
  {
    name: 'ae',
    typeOid: moodArray.oid,
    typeModifier: -1,
    type: moodArray,
    duckType: 'VARCHAR[]',
    read: varcharList,
    cases: [['{happy,sad}', ['happy', 'sad']]],
  },
  {
    name: 'af8',
    typeOid: 1022,
    typeModifier: -1,
    duckType: 'DOUBLE[]',
    read: raw,
    cases: [['{1.5,NaN,-Infinity,Infinity}', [1.5, 'NaN', '-Infinity', 'Infinity']]],
  },
  {
    name: 'toasty',
    typeOid: PgType.text,
    typeModifier: -1,
    duckType: 'VARCHAR',
    cases: [
      ['kept', 'kept'],
      [TOAST, null],
    ],
  },
];

const ROWS = Math.max(...COLUMNS.map((column) => column.cases.length));
const caseOf = (column: TestColumn, row: number): Case => column.cases[row % column.cases.length]!;

function tupleOf(row: number): Tuple {
  return COLUMNS.map((column): TupleValue => {
    const [input] = caseOf(column, row);
    if (input === null) return { kind: 'null' };
    if (input === TOAST) return { kind: 'unchanged-toast' };
    return { kind: 'text', text: input };
  });
}

/** Rows 0..ROWS-1 are inserts with every case; then a delete with `before`, then a truncate. */
function changes(): ParquetChange[] {
  const list: ParquetChange[] = [];
  for (let row = 0; row < ROWS; row++) {
    list.push({
      op: 'c',
      lsn: 0x16b3748n + BigInt(row),
      commitLsn: 0x16b37a0n,
      seq: row,
      txId: 731,
      commitTimeUnixUs: 1_764_070_000_123_456n,
      row: tupleOf(row),
      beforeJson: null,
      unchangedToast: null,
    });
  }
  list.push({
    op: 'd',
    lsn: 0x16b3800n,
    commitLsn: 0x16b3900n,
    seq: 0,
    txId: 732,
    commitTimeUnixUs: 1_764_070_001_000_000n,
    row: tupleOf(0),
    beforeJson: '{"i4":-2147483648}',
    unchangedToast: null,
  });
  list.push({
    op: 't',
    lsn: 0x16b3a00n,
    commitLsn: 0x16b3b00n,
    seq: 0,
    txId: 733,
    commitTimeUnixUs: 1_764_070_002_000_000n,
    row: undefined,
    beforeJson: null,
    unchangedToast: null,
  });
  return list;
}

let dir: string;
let db: DuckDBInstance;
let duck: DuckDBConnection;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'slotlake-parquet-test-'));
  db = await DuckDBInstance.create(':memory:');
  duck = await db.connect();
  await duck.run(`SET TimeZone = 'UTC'`);
});

after(() => {
  duck?.closeSync();
  db?.closeSync();
  rmSync(dir, { recursive: true, force: true });
});

const quote = (text: string) => `'${text.replaceAll("'", "''")}'`;
const ident = (text: string) => `"${text.replaceAll('"', '""')}"`;

async function query(sql: string): Promise<Record<string, unknown>[]> {
  const reader = await duck.runAndReadAll(sql);
  return reader.getRowObjectsJson() as Record<string, unknown>[];
}

async function writeAll(path: string, compression: ParquetCompression, list: readonly ParquetChange[]) {
  const writer = new ParquetObjectWriter(path, COLUMNS, { compression });
  for (const change of list) if (!writer.write(change)) await writer.drain();
  const bytes = await writer.close();
  return { writer, bytes };
}

describe('every type, read back by DuckDB', () => {
  for (const compression of ['zstd', 'snappy', 'gzip', 'none'] as const) {
    it(`${compression}: every value as written`, async () => {
      const path = join(dir, `types-${compression}.parquet`);
      const list = changes();
      const { bytes } = await writeAll(path, compression, list);
      assert.equal(bytes, statSync(path).size);
      const select = COLUMNS.map(
        (column) =>
          `${(column.read ?? ((c) => `${c}::varchar`))(ident(column.name))} AS ${ident(column.name)}`,
      );
      const rows = await query(
        `SELECT ${select.join(', ')}, _op, _lsn, _commit_lsn, _seq, _tx_id, _commit_ts::varchar AS _commit_ts,
           _before, _unchanged_toast, _unrepresentable
         FROM read_parquet(${quote(path)}) ORDER BY _commit_lsn, _seq`,
      );
      assert.equal(rows.length, list.length);
      for (let r = 0; r < rows.length; r++) {
        const row = rows[r]!;
        const change = list[r]!;
        const unrepresentable: Record<string, string> = {};
        const toast: string[] = [];
        for (const column of COLUMNS) {
          const [input, expected] =
            change.row === undefined ? [null, null] : caseOf(column, change.op === 'd' ? 0 : r);
          const where = `${column.name} in row ${r} (${compression})`;
          if (expected === UNREP) {
            assert.equal(row[column.name], null, where);
            unrepresentable[column.name] = input as string;
          } else assert.deepEqual(row[column.name], expected, where);
          if (input === TOAST) toast.push(column.name);
        }
        assert.equal(row._op, change.op);
        assert.equal(row._lsn, String(change.lsn));
        assert.equal(row._commit_lsn, String(change.commitLsn));
        assert.equal(row._seq, String(change.seq));
        assert.equal(row._tx_id, String(change.txId));
        assert.equal(row._before, change.beforeJson);
        assert.deepEqual(row._unchanged_toast, toast.length > 0 ? toast : null, `toast in row ${r}`);
        const expectedUnrepresentable = Object.keys(unrepresentable).length > 0 ? unrepresentable : null;
        const actual = row._unrepresentable === null ? null : JSON.parse(row._unrepresentable as string);
        assert.deepEqual(actual, expectedUnrepresentable, `_unrepresentable in row ${r}`);
      }
      assert.equal(rows[0]!._commit_ts, '2025-11-25 11:26:40.123456+00');
      // every case of every column was written at least once
      assert.ok(ROWS >= 6);
    });
  }

  it('DuckDB sees the Parquet types, logical types and field ids', async () => {
    const path = join(dir, 'types-zstd.parquet');
    const described = await query(`DESCRIBE SELECT * FROM read_parquet(${quote(path)})`);
    const types = new Map(described.map((row) => [row.column_name as string, row.column_type as string]));
    for (const column of COLUMNS) assert.equal(types.get(column.name), column.duckType, column.name);
    assert.deepEqual(
      [
        '_op',
        '_lsn',
        '_commit_lsn',
        '_seq',
        '_tx_id',
        '_commit_ts',
        '_before',
        '_unchanged_toast',
        '_unrepresentable',
      ].map((name) => types.get(name)),
      [
        'VARCHAR',
        'BIGINT',
        'BIGINT',
        'BIGINT',
        'BIGINT',
        'TIMESTAMP WITH TIME ZONE',
        'VARCHAR',
        'VARCHAR[]',
        'VARCHAR',
      ],
    );
    const schema = await query(
      `SELECT name, type, converted_type, logical_type, field_id FROM parquet_schema(${quote(path)})`,
    );
    const element = (name: string) => schema.find((row) => row.name === name)!;
    assert.equal(element('i2').converted_type, 'INT_16');
    assert.equal(element('n').type, 'INT64');
    assert.match(String(element('n').logical_type), /DecimalType\(scale=2, precision=12\)/);
    assert.equal(element('n38').type, 'FIXED_LEN_BYTE_ARRAY');
    assert.equal(element('n4').type, 'INT32');
    assert.match(
      String(element('ts').logical_type),
      /TimestampType\(isAdjustedToUTC=0, unit=TimeUnit\(.*MICROS=MicroSeconds/,
    );
    assert.match(String(element('tz').logical_type), /TimestampType\(isAdjustedToUTC=1/);
    assert.match(
      String(element('tm').logical_type),
      /TimeType\(isAdjustedToUTC=0, unit=TimeUnit\(.*MICROS=MicroSeconds/,
    );
    assert.match(String(element('d').logical_type), /DateType/);
    assert.match(String(element('j').logical_type), /JsonType/);
    assert.match(String(element('t').logical_type), /StringType/);
    assert.match(String(element('ai').logical_type), /ListType/);
    assert.equal(element('by').type, 'BYTE_ARRAY');
    assert.equal(element('by').logical_type, null);
    assert.equal(element('b').field_id, '1');
    assert.equal(element('ai').field_id, String(COLUMNS.findIndex((c) => c.name === 'ai') + 1));
    assert.equal(element('_op').field_id, '2000000001');
    const ids = schema.map((row) => row.field_id).filter((id) => id !== null);
    assert.equal(new Set(ids).size, ids.length, 'field ids are unique');
  });
});

describe('the writer', () => {
  it('describes the schema and gives per-column statistics for the manifest', async () => {
    const path = join(dir, 'stats.parquet');
    const { writer } = await writeAll(path, 'zstd', changes());
    const fields = writer.describeSchema().fields;
    const field = (name: string) => fields.find((f) => f.name === name)!;
    assert.deepEqual(field('n'), {
      name: 'n',
      fieldId: 8,
      repetition: 'OPTIONAL',
      pgTypeOid: PgType.numeric,
      pgTypeModifier: numeric(12, 2),
      physicalType: 'INT64',
      logicalType: 'DECIMAL(12,2)',
      convertedType: 'DECIMAL',
    });
    assert.equal(field('ai').logicalType, 'LIST');
    assert.deepEqual(field('ai').element, {
      fieldId: 1_000_000_000 + field('ai').fieldId,
      repetition: 'OPTIONAL',
      physicalType: 'INT32',
      convertedType: 'INT_32',
    });
    assert.equal(field('_lsn').repetition, 'REQUIRED');
    assert.equal(fields.length, COLUMNS.length + 9);

    const stats = new Map(writer.columnStatistics().map((s) => [s.name, s]));
    assert.deepEqual(stats.get('i8'), {
      name: 'i8',
      fieldId: 4,
      nullCount: 1, // the truncate
      min: '-9223372036854775808',
      max: '9223372036854775807',
    });
    assert.equal(stats.get('n')!.min, '-12.50');
    assert.equal(stats.get('n')!.max, '9999999999.99');
    assert.equal(stats.get('n')!.nullCount, 4); // NaN, Infinity, -Infinity, truncate
    assert.equal(stats.get('f8')!.nanCount, 1);
    assert.equal(stats.get('f8')!.min, '-Infinity');
    assert.equal(stats.get('f8')!.max, 'Infinity');
    assert.equal(stats.get('t')!.min, '');
    assert.equal(stats.get('t')!.max, '😀 astral 𝄞');
    assert.equal(stats.get('d')!.min, -735160);
    assert.equal(stats.get('j')!.min, undefined);
    assert.equal(stats.get('_lsn')!.min, String(0x16b3748n));
    assert.equal(stats.get('_before')!.nullCount, ROWS + 1);
  });

  it('bounds long strings as Iceberg does (prefix min, rounded-up max)', async () => {
    const path = join(dir, 'long.parquet');
    const writer = new ParquetObjectWriter(path, [{ name: 's', typeOid: PgType.text, typeModifier: -1 }], {
      compression: 'none',
    });
    for (const [seq, text] of ['bbbbbbbbbbbbbbbbbbbbzz', 'aaaaaaaaaaaaaaaaaaaa'].entries()) {
      writer.write({
        op: 'c',
        lsn: 1n,
        commitLsn: 1n,
        seq,
        txId: 1,
        commitTimeUnixUs: 0n,
        row: [{ kind: 'text', text }],
        beforeJson: null,
        unchangedToast: null,
      });
    }
    await writer.close();
    const s = writer.columnStatistics()[0]!;
    assert.equal(s.min, 'aaaaaaaaaaaaaaaa');
    assert.equal(s.max, 'bbbbbbbbbbbbbbbc');
    assert.equal(s.truncated, true);
  });

  it('open objects share one budget of buffered values: the one buffering the most ends its row group early', async () => {
    const budget = new RowGroupBudget(4096);
    const text = (seq: number) => `value ${seq} `.padEnd(200, 'x');
    const writers = [0, 1, 2].map(
      (i) =>
        new ParquetObjectWriter(
          join(dir, `budget-${i}.parquet`),
          [{ name: 's', typeOid: PgType.text, typeModifier: -1 }],
          {
            compression: 'none',
            budget,
          },
        ),
    );
    let most = 0;
    for (let seq = 0; seq < 300; seq++) {
      writers[seq % 3]!.write({
        op: 'c',
        lsn: BigInt(seq + 1),
        commitLsn: BigInt(seq + 1),
        seq,
        txId: 1,
        commitTimeUnixUs: 0n,
        row: [{ kind: 'text', text: text(seq) }],
        beforeJson: null,
        unchangedToast: null,
      });
      most = Math.max(most, budget.buffered);
      assert.equal(
        budget.buffered,
        writers.reduce((sum, writer) => sum + writer.bufferedBytes, 0),
      );
    }
    assert.ok(most <= 4096, `buffered at most ${most} bytes together`);
    for (const writer of writers)
      assert.ok(writer.rowGroups >= 5, `${writer.rowGroups} row groups ended early`);
    for (const writer of writers) await writer.close();
    assert.equal(budget.buffered, 0, 'closed objects leave the budget');
    for (const i of [0, 1, 2]) {
      const rows = await query(
        `SELECT count(*)::int AS n, count(DISTINCT _seq)::int AS d FROM read_parquet(${quote(join(dir, `budget-${i}.parquet`))})`,
      );
      assert.deepEqual([rows[0]!.n, rows[0]!.d], [100, 100]);
    }
  });

  it('close is idempotent; discard removes the file; nothing is written after close', async () => {
    const path = join(dir, 'life.parquet');
    const writer = new ParquetObjectWriter(path, COLUMNS, { compression: 'zstd' });
    writer.write(changes()[0]!);
    const first = writer.close();
    assert.equal(writer.close(), first);
    const size = await first;
    assert.equal(size, statSync(path).size);
    assert.throws(() => writer.write(changes()[1]!), /already closed/);
    const rows = await query(`SELECT count(*)::int AS n FROM read_parquet(${quote(path)})`);
    assert.equal(rows[0]!.n, 1);

    const dropped = join(dir, 'dropped.parquet');
    const other = new ParquetObjectWriter(dropped, COLUMNS, { compression: 'zstd' });
    other.write(changes()[0]!);
    await other.discard();
    assert.equal(existsSync(dropped), false);
    await assert.rejects(other.close(), /discarded/);
  });

  it('an object without rows is a valid, empty Parquet file', async () => {
    const path = join(dir, 'empty.parquet');
    const writer = new ParquetObjectWriter(path, COLUMNS, { compression: 'snappy' });
    await writer.close();
    const rows = await query(`SELECT count(*)::int AS n FROM read_parquet(${quote(path)})`);
    assert.equal(rows[0]!.n, 0);
  });

  it('refuses what it cannot write faithfully', async () => {
    const path = join(dir, 'refused.parquet');
    const writer = new ParquetObjectWriter(path, COLUMNS, { compression: 'none' });
    const change = changes()[0]!;
    assert.throws(() => writer.write({ ...change, lsn: 1n << 63n }), /LSN .* does not fit/);
    assert.throws(() => writer.write({ ...change, row: change.row!.slice(1) }), /columns/);
    assert.throws(() => writer.write({ ...change, seq: -1 }), /seq -1/);
    assert.throws(() => writer.write({ ...change, op: 'x' as 'c' }), /unknown change op/);
    assert.throws(
      () =>
        new ParquetObjectWriter(path, [{ name: '_op', typeOid: PgType.text, typeModifier: -1 }], {
          compression: 'none',
        }),
      /collides/,
    );
    assert.throws(
      () =>
        new ParquetObjectWriter(
          path,
          [
            { name: 'a', typeOid: PgType.text, typeModifier: -1, fieldId: 5 },
            { name: 'b', typeOid: PgType.text, typeModifier: -1, fieldId: 5 },
          ],
          { compression: 'none' },
        ),
      /field id 5/,
    );
    // a refused change leaves nothing behind: the object stays consistent
    writer.write(change);
    await writer.close();
    const rows = await query(
      `SELECT count(*)::int AS n, min(_seq)::int AS seq FROM read_parquet(${quote(path)})`,
    );
    assert.deepEqual(rows, [{ n: 1, seq: 0 }]);
  });

  it("merges the caller's unchanged TOAST names with the row's", async () => {
    const path = join(dir, 'toast.parquet');
    const writer = new ParquetObjectWriter(
      path,
      [
        { name: 'a', typeOid: PgType.text, typeModifier: -1 },
        { name: 'b', typeOid: PgType.text, typeModifier: -1 },
      ],
      { compression: 'zstd' },
    );
    writer.write({
      op: 'u',
      lsn: 1n,
      commitLsn: 2n,
      seq: 0,
      txId: 1,
      commitTimeUnixUs: 0n,
      row: [{ kind: 'unchanged-toast' }, { kind: 'text', text: 'x' }],
      beforeJson: null,
      unchangedToast: ['b'],
    });
    await writer.close();
    const rows = await query(`SELECT a, b, _unchanged_toast FROM read_parquet(${quote(path)})`);
    assert.deepEqual(rows, [{ a: null, b: 'x', _unchanged_toast: ['a', 'b'] }]);
  });
});

describe('random values (property)', () => {
  it('text, int8, numeric(20,4) and text[] survive the round trip', async () => {
    const columns: ParquetColumn[] = [
      { name: 's', typeOid: PgType.text, typeModifier: -1 },
      { name: 'n', typeOid: PgType.int8, typeModifier: -1 },
      { name: 'd', typeOid: PgType.numeric, typeModifier: numeric(20, 4) },
      { name: 'a', typeOid: 1009, typeModifier: -1 },
    ];
    const text = fc.string({ unit: 'grapheme', maxLength: 12 });
    const row = fc.record({
      s: fc.option(text),
      n: fc.option(fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n })),
      d: fc.option(fc.bigInt({ min: -(10n ** 20n) + 1n, max: 10n ** 20n - 1n })),
      a: fc.option(fc.array(fc.option(text), { maxLength: 4 })),
    });
    const arrayText = (items: (string | null)[]) =>
      `{${items.map((item) => (item === null ? 'NULL' : `"${item.replaceAll('\\', '\\\\').replaceAll('"', '\\"')}"`)).join(',')}}`;
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(row, { minLength: 1, maxLength: 40 }), async (rows) => {
        const path = join(dir, `property-${run++}.parquet`);
        const writer = new ParquetObjectWriter(path, columns, { compression: 'zstd', rowGroupRows: 7 });
        rows.forEach((r, seq) => {
          const value = (t: string | null): TupleValue =>
            t === null ? { kind: 'null' } : { kind: 'text', text: t };
          writer.write({
            op: 'c',
            lsn: BigInt(seq),
            commitLsn: 1n,
            seq,
            txId: 1,
            commitTimeUnixUs: 0n,
            row: [
              value(r.s),
              value(r.n === null ? null : String(r.n)),
              value(r.d === null ? null : formatDecimal(r.d, 4)),
              value(r.a === null ? null : arrayText(r.a)),
            ],
            beforeJson: null,
            unchangedToast: null,
          });
        });
        await writer.close();
        const back = await query(
          `SELECT s, n::varchar AS n, d::varchar AS d, a FROM read_parquet(${quote(path)}) ORDER BY _seq`,
        );
        assert.deepEqual(
          back,
          rows.map((r) => ({
            s: r.s,
            n: r.n === null ? null : String(r.n),
            d: r.d === null ? null : formatDecimal(r.d, 4),
            a: r.a,
          })),
        );
      }),
      { numRuns: 25 },
    );
  });
});

describe('row groups', () => {
  it('300,000 rows in many row groups: all there, buffered bytes bounded, file growing while written', async () => {
    const path = join(dir, 'big.parquet');
    const columns: ParquetColumn[] = [
      { name: 'id', typeOid: PgType.int8, typeModifier: -1 },
      { name: 'amount', typeOid: PgType.numeric, typeModifier: numeric(12, 2) },
      { name: 'note', typeOid: PgType.text, typeModifier: -1 },
      { name: 'at', typeOid: PgType.timestamptz, typeModifier: -1 },
      { name: 'tags', typeOid: 1009, typeModifier: -1 },
    ];
    const rowGroupBytes = 1024 * 1024;
    const writer = new ParquetObjectWriter(path, columns, {
      compression: 'zstd',
      rowGroupBytes,
      rowGroupRows: 50_000,
    });
    const total = 300_000;
    let maxBuffered = 0;
    let bytesAtHalf = 0;
    for (let i = 0; i < total; i++) {
      const more = writer.write({
        op: 'c',
        lsn: BigInt(1000 + i),
        commitLsn: 5_000_000n,
        seq: i,
        txId: 42,
        commitTimeUnixUs: 1_700_000_000_000_000n,
        row: [
          { kind: 'text', text: String(i) },
          { kind: 'text', text: `${i % 10_000}.${String(i % 100).padStart(2, '0')}` },
          { kind: 'text', text: `note ${i} ${'x'.repeat(i % 50)}` },
          { kind: 'text', text: '2024-01-02 03:04:05.123456+00' },
          { kind: 'text', text: `{t${i % 7},u}` },
        ],
        beforeJson: null,
        unchangedToast: null,
      });
      maxBuffered = Math.max(maxBuffered, writer.bufferedBytes);
      if (!more) await writer.drain();
      if (i === total / 2) {
        await writer.drain();
        await new Promise((resolve) => setImmediate(resolve));
        bytesAtHalf = writer.compressedBytes;
      }
    }
    const size = await writer.close();
    // one row of this table is far below 1 KiB: the buffer never holds more than a row group's worth
    assert.ok(maxBuffered <= rowGroupBytes + 1024, `buffered ${maxBuffered} bytes`);
    assert.ok(writer.rowGroups >= 10, `${writer.rowGroups} row groups`);
    assert.ok(bytesAtHalf > size / 4, `on disk at half way: ${bytesAtHalf} of ${size}`);
    const [summary] = await query(
      `SELECT count(*)::bigint AS n, count(DISTINCT _seq)::bigint AS seqs, sum(id)::varchar AS ids,
         max(amount)::varchar AS max_amount, count(DISTINCT tags[1])::int AS tags
       FROM read_parquet(${quote(path)})`,
    );
    assert.deepEqual(summary, {
      n: String(total),
      seqs: String(total),
      ids: String((total * (total - 1)) / 2),
      max_amount: '9999.99',
      tags: 7,
    });
    const groups = await query(
      `SELECT count(DISTINCT row_group_id)::int AS g FROM parquet_metadata(${quote(path)})`,
    );
    assert.equal(groups[0]!.g, writer.rowGroups);
  });

  it('a row group closes at rowGroupRows too', async () => {
    const path = join(dir, 'rows.parquet');
    const writer = new ParquetObjectWriter(path, [{ name: 'v', typeOid: PgType.int4, typeModifier: -1 }], {
      compression: 'snappy',
      rowGroupRows: 1000,
    });
    for (let i = 0; i < 4500; i++) {
      writer.write({
        op: 'c',
        lsn: BigInt(i),
        commitLsn: 1n,
        seq: i,
        txId: 1,
        commitTimeUnixUs: 0n,
        row: [{ kind: 'text', text: String(i) }],
        beforeJson: null,
        unchangedToast: null,
      });
    }
    assert.equal(writer.rowGroups, 4);
    await writer.close();
    assert.equal(writer.rowGroups, 5);
    const rows = await query(
      `SELECT count(DISTINCT row_group_id)::int AS g, max(row_group_num_rows)::int AS r FROM parquet_metadata(${quote(path)})`,
    );
    assert.deepEqual(rows, [{ g: 5, r: 1000 }]);
  });
});
