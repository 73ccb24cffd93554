/**
 * `slotlake verify`'s pure parts: the inverse value mapping (contract JSON and Parquet values back to Postgres
 * text, checked against the forward mapping and converters for every contract type), the canonical row text
 * and its parser, the rebuild (replay order, key moves with unchanged TOAST, truncates, duplicates, keyless
 * multisets — and the same result when spilled over 16 on-disk runs), and the bucket comparison and row
 * classification of the drill-down.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { createValueMapper, PgType, stringifyJsonValue } from '../../src/decoding/values.js';
import {
  toDate,
  toDecimal,
  toDouble,
  toFloat,
  toTime,
  toTimestamp,
  toTimestamptz,
} from '../../src/sink/parquet/convert.js';
import type { ArchivedChange } from '../../src/verify/archive.js';
import { compareRows, differingBuckets, rowsInMatchingBuckets } from '../../src/verify/compare.js';
import {
  bucketAt,
  canonicalText,
  digestText,
  parseCanonicalText,
  quoteNullable,
} from '../../src/verify/digest.js';
import {
  ARRAY_STYLE,
  decimalFromBytes,
  jsonToTextFor,
  parquetValueText,
  parseArchivedJson,
  quoteArrayElement,
} from '../../src/verify/pg-text.js';
import { TableRebuild, type RowDigest } from '../../src/verify/rebuild.js';
import type { SourceLeaf } from '../../src/verify/source.js';

function viaJson(oid: number, text: string): string {
  const json = stringifyJsonValue(createValueMapper(oid)(text));
  return jsonToTextFor(oid, undefined, ARRAY_STYLE)(parseArchivedJson(json));
}

describe('verify: values back to Postgres text', () => {
  it('JSON values of every contract type come back as the text they were made from', () => {
    const cases: Array<[number, string]> = [
      [PgType.bool, 't'],
      [PgType.bool, 'f'],
      [PgType.int8, '9223372036854775807'],
      [PgType.float8, '1e+20'],
      [PgType.float8, '-Infinity'],
      [PgType.float4, 'NaN'],
      [PgType.numeric, '12.50'],
      [PgType.text, 'it\'s \\ "q" ☃'],
      [PgType.bytea, '\\x00ff5c'],
      [PgType.bytea, '\\x'],
      [PgType.uuid, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'],
      [PgType.jsonb, '{"a": [1, 2.50]}'],
      [PgType.date, '0044-03-15 BC'],
      [PgType.time, '24:00:00'],
      [PgType.timestamp, '2024-01-02 03:04:05.5'],
      [PgType.timestamp, '0044-03-15 12:00:00 BC'],
      [PgType.timestamptz, '2024-01-02 03:04:05.123456+00'],
      [PgType.timestamptz, '12345-01-01 00:00:00+00'],
      [PgType.timestamptz, 'infinity'],
      [1009, '{"a b","",NULL,"NULL","q\\"uote","back\\\\slash",x}'], // text[]
      [1007, '{{1,2},{NULL,4}}'], // int4[]
      [1000, '{t,f,NULL}'], // bool[]
      [1001, '{"\\\\x00",NULL}'], // bytea[]
      [1185, '{"2024-01-01 00:00:00+00",infinity}'], // timestamptz[]
      [1020, '{(1,1),(0,0);(3,3),(2,2)}'], // box[]
      [1009, '{}'],
      [1186, '1 year 2 mons'], // interval: text
    ];
    for (const [oid, text] of cases) assert.equal(viaJson(oid, text), text, `${oid} ${text}`);
  });

  it('array elements are quoted as array_out quotes them', () => {
    const q = (text: string, delimiter = ',') => quoteArrayElement(text, delimiter, ARRAY_STYLE);
    assert.equal(q('plain'), 'plain');
    assert.equal(q(''), '""');
    assert.equal(q('null'), '"null"');
    assert.equal(q('a b'), '"a b"');
    assert.equal(q('a\u000bb'), '"a\u000bb"');
    assert.equal(q('x,y'), '"x,y"');
    assert.equal(q('x,y', ';'), 'x,y');
    assert.equal(q('a"b\\c'), '"a\\"b\\\\c"');
    assert.equal(q('{x}'), '"{x}"');
  });

  it('Parquet values come back as the text the converters were given', () => {
    const check = (
      text: string,
      convert: (text: string) => unknown,
      leaf: Parameters<typeof parquetValueText>[1],
    ) => assert.equal(parquetValueText(convert(text), leaf), text);
    check('2024-02-29', toDate, { kind: 'date' });
    check('0044-03-15 BC', toDate, { kind: 'date' });
    check('12345-06-07', toDate, { kind: 'date' });
    check('23:59:59.999999', toTime, { kind: 'time' });
    check('24:00:00', toTime, { kind: 'time' });
    check('2024-01-02 03:04:05.5', toTimestamp, { kind: 'timestamp', withZone: false });
    check('0044-03-15 12:00:00 BC', toTimestamp, { kind: 'timestamp', withZone: false });
    check('1969-12-31 23:59:59.999999+00', toTimestamptz, { kind: 'timestamp', withZone: true });
    check('-12.50', toDecimal(10, 2), { kind: 'decimal', scale: 2 });
    check('0.00', toDecimal(10, 2), { kind: 'decimal', scale: 2 });
    check('1e+20', toDouble, { kind: 'double' });
    check('-0', toDouble, { kind: 'double' });
    check('3.4028235e+38', toFloat, { kind: 'float' });
    check('1e-05', toFloat, { kind: 'float' });
    assert.equal(decimalFromBytes(Uint8Array.from([0xff, 0xfe])), -2n);
    assert.equal(parquetValueText(Uint8Array.from([0, 255]), { kind: 'bytes' }), '\\x00ff');
    assert.equal(parquetValueText(true, { kind: 'boolean' }), 't');
  });

  it('float8 text is JavaScript shortest digits in Postgres layout (property)', () => {
    fc.assert(
      fc.property(fc.double({ noNaN: true, noDefaultInfinity: true }), (value) => {
        const text = parquetValueText(value, { kind: 'double' });
        assert.ok(
          Object.is(Number(text), value) || (value === 0 && Number(text) === 0),
          `${value} → ${text}`,
        );
      }),
    );
  });
});

describe('verify: canonical row text', () => {
  it('quotes as quote_nullable, and parses back', () => {
    assert.equal(quoteNullable(null), 'NULL');
    assert.equal(quoteNullable("it's"), "'it''s'");
    assert.equal(quoteNullable('a\\b'), "E'a\\\\b'");
    fc.assert(
      fc.property(fc.array(fc.option(fc.string(), { nil: null })), (values) => {
        assert.deepEqual(parseCanonicalText(canonicalText(values)), values);
      }),
    );
    assert.notEqual(canonicalText(["a','b"]), canonicalText(['a', 'b']));
    assert.equal(canonicalText([undefined]), '?');
  });

  it('buckets are prefixes of the hash', () => {
    const { bucket32 } = digestText('x');
    assert.equal(bucketAt(bucket32, 0), 0);
    assert.equal(bucketAt(bucket32, 32), bucket32);
    assert.equal(bucketAt(bucket32, 4), bucket32 >>> 28);
  });
});

const change = (
  op: ArchivedChange['op'],
  commitLsn: number,
  seq: number,
  after: Array<string | null | undefined> | null,
  before: Array<string | null | undefined> | null = null,
): ArchivedChange => ({ op, commitLsn: BigInt(commitLsn), seq, after, before });

/** A history with key moves that leave a TOASTed column unchanged (across runs when spilled), truncate, duplicate. */
const HISTORY: ArchivedChange[] = [
  ...Array.from({ length: 60 }, (_, i) => change('r', 100, i, [String(i), `v${i}`, `big${i}`])),
  change('t', 150, 0, null),
  ...Array.from({ length: 60 }, (_, i) => change('c', 200, i, [String(i), `w${i}`, `big${i}`])),
  // move keys 0..29 to 1000+, big unchanged (absent): filled from the old row
  ...Array.from({ length: 30 }, (_, i) =>
    change('u', 300, i, [String(1000 + i), `moved${i}`, undefined], [String(i), undefined, undefined]),
  ),
  // and back again for 0..9, big still unchanged
  ...Array.from({ length: 10 }, (_, i) =>
    change('u', 400, i, [String(i), `back${i}`, undefined], [String(1000 + i), undefined, undefined]),
  ),
  change('d', 500, 0, null, [String(59), undefined, undefined]),
  change('u', 600, 0, [String(58), 'same key', undefined]),
];

async function rebuild(
  history: readonly ArchivedChange[],
  partitionBits: number,
  keyIndexes: number[] | null,
) {
  const dir = mkdtempSync(join(tmpdir(), 'slotlake-verify-unit-'));
  const table = new TableRebuild({ keyIndexes, partitionBits, bucketBits: 3, spillDir: join(dir, 'spill') });
  try {
    // objects arrive in any order; replay goes by (commit_lsn, seq)
    for (const [i, entry] of [...history].reverse().entries()) await table.add(entry, i % 5);
    const rebuilt = await table.finish();
    const rows = new Map<string, RowDigest>();
    for await (const row of rebuilt.rowsIn(new Set([0, 1, 2, 3, 4, 5, 6, 7]), 3)) rows.set(row.identity, row);
    return { rebuilt, rows };
  } finally {
    await table.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('verify: rebuilding a table from its changes', () => {
  it('replays in (commit_lsn, seq) order: key moves keep unchanged TOAST values, truncates clear', async () => {
    const { rebuilt, rows } = await rebuild(HISTORY, 0, [0]);
    assert.equal(rebuilt.rows, 59);
    const expect = (key: string, values: string[]) =>
      assert.equal(rows.get(canonicalText([key]))?.hash64, digestText(canonicalText(values)).hash64, key);
    expect('0', ['0', 'back0', 'big0']);
    expect('1015', ['1015', 'moved15', 'big15']);
    expect('5', ['5', 'back5', 'big5']);
    assert.equal(rows.has(canonicalText(['1005'])), false);
    expect('45', ['45', 'w45', 'big45']);
    expect('58', ['58', 'same key', 'big58']);
    assert.equal(rows.has(canonicalText(['59'])), false);
    assert.equal(rows.has(canonicalText(['25'])), false);
    assert.ok([...rows.values()].every((row) => !row.incomplete));
    assert.equal(rebuilt.hasSnapshotRecords, true);
  });

  it('spilled over 16 runs, the result is the same (fills cross runs)', async () => {
    const memory = await rebuild(HISTORY, 0, [0]);
    const spilled = await rebuild(HISTORY, 4, [0]);
    assert.deepEqual([...spilled.rebuilt.buckets].sort(), [...memory.rebuilt.buckets].sort());
    assert.deepEqual(
      [...spilled.rows.values()].map((row) => [row.identity, row.hash64]).sort(),
      [...memory.rows.values()].map((row) => [row.identity, row.hash64]).sort(),
    );
  });

  it('names a change present twice (a duplicated object) and replays it once', async () => {
    const history = [...HISTORY, change('c', 200, 5, ['5', 'w5', 'big5'])];
    const { rebuilt } = await rebuild(history, 2, [0]);
    assert.equal(rebuilt.rows, 59);
    assert.equal(rebuilt.duplicates.length, 1);
    assert.equal(rebuilt.duplicates[0]!.commitLsn, 200n);
    assert.equal(rebuilt.duplicates[0]!.seq, 5);
  });

  it('keeps a value it never saw absent (an unchanged TOAST value without an earlier version)', async () => {
    const { rows } = await rebuild([change('u', 10, 0, ['1', 'x', undefined])], 0, [0]);
    assert.equal(rows.get(canonicalText(['1']))?.incomplete, true);
  });

  it('tables without a key are multisets of whole rows', async () => {
    const history = [
      change('c', 1, 0, ['x', '1']),
      change('c', 1, 1, ['x', '1']),
      change('c', 1, 2, ['y', null]),
      change('d', 2, 0, null, ['y', null]),
      change('u', 3, 0, ['z', '2'], ['x', '1']),
    ];
    const { rebuilt, rows } = await rebuild(history, 0, null);
    assert.equal(rebuilt.rows, 2);
    const x = digestText(canonicalText(['x', '1']));
    assert.equal(rows.get(x.hash64.toString())?.count, 1);
  });
});

describe('verify: comparing buckets and rows', () => {
  it('finds the buckets whose rows or sums differ, and counts the rows of the others', () => {
    const source = new Map([
      [0, { rows: 2, sum: 10n }],
      [1, { rows: 1, sum: 5n }],
      [2, { rows: 3, sum: 7n }],
    ]);
    const archive = new Map([
      [0, { rows: 2, sum: 10n }],
      [1, { rows: 1, sum: 6n }],
      [3, { rows: 1, sum: 1n }],
    ]);
    const differing = differingBuckets(source, archive);
    assert.deepEqual(differing, [1, 2, 3]);
    assert.equal(rowsInMatchingBuckets(source, new Set(differing)), 2);
  });

  it('classifies the rows of differing buckets', async () => {
    const leaf = (identity: string, hash: bigint, count = 1): SourceLeaf => ({
      identity,
      key: [identity],
      hash64: hash,
      count,
      beyond: false,
    });
    const row = (identity: string, hash: bigint, count = 1): RowDigest => ({
      identity,
      bucket32: 0,
      hash64: hash,
      count,
      object: 0,
      incomplete: false,
    });
    async function* source() {
      yield leaf('a', 1n);
      yield leaf('b', 2n);
      yield leaf('c', 3n);
      yield leaf('k', 9n, 3);
    }
    const archive = new Map([
      ['a', row('a', 1n)],
      ['b', row('b', 20n)],
      ['d', row('d', 4n)],
      ['k', row('k', 9n, 1)],
    ]);
    const verdicts: string[] = [];
    await compareRows(source(), archive, (c) => verdicts.push(`${c.identity}:${c.verdict}:${c.count}`));
    assert.deepEqual(verdicts.sort(), [
      'a:equal:1',
      'b:differing:1',
      'c:missing:1',
      'd:extra:1',
      'k:equal:1',
      'k:missing:2',
    ]);
  });
});
