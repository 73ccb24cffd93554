/**
 * Change records (contract §4): exact JSON lines from RelationEncoder for hand-built Relations.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import type { Relation, RelationColumn, Tuple, TupleValue } from '../../src/decoding/messages.js';
import { PgType, type TypeInfo } from '../../src/decoding/values.js';
import { DecodeError } from '../../src/errors.js';
import { RelationEncoder, transactionSource, type Op } from '../../src/pipeline/records.js';

const NULL: TupleValue = { kind: 'null' };
const TOAST: TupleValue = { kind: 'unchanged-toast' };
const t = (text: string): TupleValue => ({ kind: 'text', text });

function column(name: string, typeOid: number, isKey = false): RelationColumn {
  return { isKey, name, typeOid, typeModifier: -1 };
}

function relation(
  namespace: string,
  name: string,
  columns: RelationColumn[],
  replicaIdentity: Relation['replicaIdentity'] = 'd',
): Relation {
  return { relationId: 16385, namespace, name, replicaIdentity, columns };
}

/** public.accounts(id int4 key, name text, balance numeric, notes text, big int8) */
const accounts = relation('public', 'accounts', [
  column('id', PgType.int4, true),
  column('name', PgType.text),
  column('balance', PgType.numeric),
  column('notes', PgType.text),
  column('big', PgType.int8),
]);

const registry = new Map<number, TypeInfo>();
const encoder = new RelationEncoder(accounts, 'shop', registry);
const txn = transactionSource('0/16B37A0', 731, 1764070000123456n);
const SOURCE =
  '{"db":"shop","schema":"public","table":"accounts","lsn":"0/16B3748","commit_lsn":"0/16B37A0","seq":3,' +
  '"txId":731,"ts_ms":1764070000123,"ts_us":1764070000123456}';

const row7: Tuple = [t('7'), t('Ada'), t('12.50'), t('long text'), t('42')];
/** An old key `K`: key columns set, the others null (as pgoutput sends it). */
const key7: Tuple = [t('7'), NULL, NULL, NULL, NULL];

function encode(op: Op, before: Tuple | undefined, keyOnly: boolean, after: Tuple | undefined): string {
  const line = encoder.encode(op, before, keyOnly, after, '0/16B3748', 3, txn);
  JSON.parse(line); // every line is JSON
  assert.ok(!line.includes('\n'), 'one line');
  return line;
}

describe('envelope', () => {
  it('insert', () => {
    assert.equal(
      encode('c', undefined, false, row7),
      `{"op":"c","before":null,"after":{"id":7,"name":"Ada","balance":"12.50","notes":"long text","big":42},"source":${SOURCE}}`,
    );
  });

  it('update with the old key (K) keeps only key columns in before', () => {
    const after: Tuple = [t('7'), t('Ada L.'), t('13.00'), t('long text'), t('43')];
    assert.equal(
      encode('u', key7, true, after),
      `{"op":"u","before":{"id":7},"after":{"id":7,"name":"Ada L.","balance":"13.00","notes":"long text","big":43},"source":${SOURCE}}`,
    );
  });

  it('update with the old tuple (O) keeps every column in before', () => {
    const after: Tuple = [t('7'), t('Ada L.'), NULL, t('long text'), t('42')];
    assert.equal(
      encode('u', row7, false, after),
      '{"op":"u","before":{"id":7,"name":"Ada","balance":"12.50","notes":"long text","big":42},' +
        `"after":{"id":7,"name":"Ada L.","balance":null,"notes":"long text","big":42},"source":${SOURCE}}`,
    );
  });

  it('update without an old row has before null', () => {
    assert.equal(
      encode('u', undefined, false, row7),
      `{"op":"u","before":null,"after":{"id":7,"name":"Ada","balance":"12.50","notes":"long text","big":42},"source":${SOURCE}}`,
    );
  });

  it('delete with K and with O', () => {
    assert.equal(
      encode('d', key7, true, undefined),
      `{"op":"d","before":{"id":7},"after":null,"source":${SOURCE}}`,
    );
    assert.equal(
      encode('d', row7, false, undefined),
      `{"op":"d","before":{"id":7,"name":"Ada","balance":"12.50","notes":"long text","big":42},"after":null,"source":${SOURCE}}`,
    );
  });

  it('truncate has before and after null', () => {
    assert.equal(
      encode('t', undefined, false, undefined),
      `{"op":"t","before":null,"after":null,"source":${SOURCE}}`,
    );
  });

  it('key order is op, before, after, source[, unchanged_toast]; source order is fixed', () => {
    const plain = JSON.parse(encode('c', undefined, false, row7)) as Record<string, unknown>;
    assert.deepEqual(Object.keys(plain), ['op', 'before', 'after', 'source']);
    const toasted = JSON.parse(encode('u', key7, true, [t('7'), t('A'), t('1'), TOAST, t('1')])) as Record<
      string,
      unknown
    >;
    assert.deepEqual(Object.keys(toasted), ['op', 'before', 'after', 'source', 'unchanged_toast']);
    assert.deepEqual(Object.keys(toasted.source as object), [
      'db',
      'schema',
      'table',
      'lsn',
      'commit_lsn',
      'seq',
      'txId',
      'ts_ms',
      'ts_us',
    ]);
  });

  it('source carries this change and its transaction', () => {
    const other = transactionSource('1/A0', 4294967295, 1n);
    const line = encoder.encode('c', undefined, false, row7, '1/9F', 0, other);
    const parsed = JSON.parse(line) as { source: Record<string, unknown> };
    assert.deepEqual(parsed.source, {
      db: 'shop',
      schema: 'public',
      table: 'accounts',
      lsn: '1/9F',
      commit_lsn: '1/A0',
      seq: 0,
      txId: 4294967295,
      ts_ms: 0,
      ts_us: 1,
    });
  });
});

describe('unchanged TOAST', () => {
  it('is omitted from after and listed, in column order, when there is no old row', () => {
    const after: Tuple = [t('7'), TOAST, t('1.00'), TOAST, t('42')];
    assert.equal(
      encode('u', key7, true, after),
      `{"op":"u","before":{"id":7},"after":{"id":7,"balance":"1.00","big":42},"source":${SOURCE},"unchanged_toast":["name","notes"]}`,
    );
  });

  it('is omitted when the old row is only a key (K): the key tuple has no value to take', () => {
    const line = encode('u', key7, true, [t('7'), t('Ada'), t('1'), TOAST, t('1')]);
    const parsed = JSON.parse(line) as { after: Record<string, unknown>; unchanged_toast: string[] };
    assert.equal('notes' in parsed.after, false);
    assert.deepEqual(parsed.unchanged_toast, ['notes']);
  });

  it('is taken from the old full row (O) when present, and then not listed', () => {
    const after: Tuple = [t('7'), t('Ada L.'), t('12.50'), TOAST, t('42')];
    assert.equal(
      encode('u', row7, false, after),
      '{"op":"u","before":{"id":7,"name":"Ada","balance":"12.50","notes":"long text","big":42},' +
        `"after":{"id":7,"name":"Ada L.","balance":"12.50","notes":"long text","big":42},"source":${SOURCE}}`,
    );
  });

  it('an old null is a real value; an old unchanged TOAST is still unknown', () => {
    const before: Tuple = [t('7'), NULL, t('1'), TOAST, t('42')];
    const after: Tuple = [t('7'), TOAST, t('2'), TOAST, t('42')];
    const parsed = JSON.parse(encode('u', before, false, after)) as {
      before: Record<string, unknown>;
      after: Record<string, unknown>;
      unchanged_toast: string[];
    };
    assert.deepEqual(parsed.before, { id: 7, name: null, balance: '1', big: 42 });
    assert.deepEqual(parsed.after, { id: 7, name: null, balance: '2', big: 42 });
    assert.deepEqual(parsed.unchanged_toast, ['notes']);
  });

  it('is never written as null', () => {
    const line = encode('u', key7, true, [t('7'), TOAST, TOAST, TOAST, TOAST]);
    assert.ok(!line.includes('null'), line);
    assert.match(line, /"unchanged_toast":\["name","balance","notes","big"\]\}$/);
  });
});

describe('values', () => {
  it('int8 is written exactly at both ends', () => {
    const max = encode('c', undefined, false, [t('1'), NULL, NULL, NULL, t('9223372036854775807')]);
    assert.ok(max.includes('"big":9223372036854775807}'), max);
    const min = encode('c', undefined, false, [t('1'), NULL, NULL, NULL, t('-9223372036854775808')]);
    assert.ok(min.includes('"big":-9223372036854775808}'), min);
    const odd = encode('c', undefined, false, [t('1'), NULL, NULL, NULL, t('9007199254740993')]);
    assert.ok(odd.includes('"big":9007199254740993}'), odd);
  });

  it('SQL NULL is null', () => {
    const line = encode('c', undefined, false, [t('1'), NULL, NULL, NULL, NULL]);
    assert.ok(line.includes('"after":{"id":1,"name":null,"balance":null,"notes":null,"big":null}'), line);
  });

  it('text needing escapes', () => {
    const text = 'quote " backslash \\ newline \n tab \t nul-ish \u0001 snow ☃ emoji 😀 sep \u2028';
    const parsed = JSON.parse(encode('c', undefined, false, [t('1'), t(text), NULL, NULL, NULL])) as {
      after: { name: string };
    };
    assert.equal(parsed.after.name, text);
  });

  it('binary values are base64', () => {
    const line = encode('c', undefined, false, [
      t('1'),
      { kind: 'binary', bytes: new Uint8Array([0, 255, 1]) },
      NULL,
      NULL,
      NULL,
    ]);
    assert.ok(line.includes('"name":"AP8B"'), line);
  });

  it('any text round-trips through the line (property)', () => {
    fc.assert(
      fc.property(
        fc.string({ unit: 'grapheme', maxLength: 40 }),
        fc.string({ unit: 'grapheme-ascii', maxLength: 100 }),
        (name, notes) => {
          const line = encoder.encode(
            'c',
            undefined,
            false,
            [t('1'), t(name), NULL, t(notes), NULL],
            '0/1',
            0,
            txn,
          );
          const parsed = JSON.parse(line) as { after: { name: string; notes: string } };
          assert.equal(parsed.after.name, name);
          assert.equal(parsed.after.notes, notes);
        },
      ),
    );
  });
});

describe('names needing JSON escaping', () => {
  it('database, schema, table and column names', () => {
    const odd = relation('Sch"ema\\', 'tä"ble ☃', [
      column('id "quoted"', PgType.int4, true),
      column('naïve\\col', PgType.text),
      column('emoji😀\ttab', PgType.bool),
    ]);
    const oddEncoder = new RelationEncoder(odd, 'd"b\n', registry);
    const line = oddEncoder.encode(
      'u',
      [t('1'), t('x'), NULL],
      true,
      [t('1'), t('y'), t('t')],
      '0/1',
      0,
      transactionSource('0/2', 1, 1_000n),
    );
    assert.ok(!line.includes('\n'));
    const parsed = JSON.parse(line) as {
      before: Record<string, unknown>;
      after: Record<string, unknown>;
      source: Record<string, unknown>;
    };
    assert.deepEqual(parsed.before, { 'id "quoted"': 1 });
    assert.deepEqual(parsed.after, { 'id "quoted"': 1, 'naïve\\col': 'y', 'emoji😀\ttab': true });
    assert.equal(parsed.source.db, 'd"b\n');
    assert.equal(parsed.source.schema, 'Sch"ema\\');
    assert.equal(parsed.source.table, 'tä"ble ☃');
    assert.equal(oddEncoder.schema, 'Sch"ema\\');
    assert.equal(oddEncoder.table, 'tä"ble ☃');
  });

  it('unchanged_toast names are escaped too', () => {
    const odd = relation('s', 't', [column('k', PgType.int4, true), column('big "doc"', PgType.text)]);
    const line = new RelationEncoder(odd, 'db', registry).encode(
      'u',
      undefined,
      false,
      [t('1'), TOAST],
      '0/1',
      0,
      txn,
    );
    assert.deepEqual((JSON.parse(line) as { unchanged_toast: string[] }).unchanged_toast, ['big "doc"']);
  });
});

describe('malformed tuples', () => {
  it('a tuple of the wrong width is a DecodeError', () => {
    const narrow: Tuple = [t('7'), t('Ada')];
    const wide: Tuple = [...row7, t('extra')];
    for (const [before, after] of [
      [undefined, narrow],
      [undefined, wide],
      [narrow, row7],
      [wide, row7],
    ] as const) {
      assert.throws(
        () => encoder.encode('u', before, true, after, '0/1', 0, txn),
        (error: unknown) => {
          assert.ok(error instanceof DecodeError);
          assert.equal(error.kind, 'decode');
          assert.match(error.message, /public\.accounts has \d columns, relation has 5/);
          return true;
        },
      );
    }
    assert.throws(() => encoder.encode('d', narrow, true, undefined, '0/1', 0, txn), DecodeError);
  });
});

describe('transactionSource', () => {
  it('ts_ms is ts_us truncated to milliseconds', () => {
    const source = transactionSource('0/16B37A0', 731, 1764070000123999n);
    assert.equal(source.commitLsnJson, ',"commit_lsn":"0/16B37A0"');
    assert.equal(source.tailJson, ',"txId":731,"ts_ms":1764070000123,"ts_us":1764070000123999}');
  });
});
