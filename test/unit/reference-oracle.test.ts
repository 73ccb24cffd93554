/**
 * The integration tests' oracle, tested on its own: the parser of test_decoding's rows (test/helpers/
 * reference.ts) on rows a PostgreSQL 17 server printed, and the expected-value mapping
 * (test/helpers/reference-values.ts) — both must accept the right value and refuse a wrong one, or every
 * exactly-once test would prove nothing.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseChangeRow, utcTimestampMicros } from '../helpers/reference.js';
import {
  JsonNumber,
  mismatch,
  parseArrayLiteral,
  parseRecordLine,
  type JsonWithNumbers,
} from '../helpers/reference-values.js';

describe('test_decoding rows', () => {
  it('an insert: quoted text with doubled quotes, bare numbers, arrays, bytea, null', () => {
    const row = parseChangeRow(
      `table public.t: INSERT: id[integer]:1 v[text]:'a''b "c"' ts[timestamp with time zone]:'2024-02-29 11:14:15.5+00' ia[integer[]]:'{1,NULL}' b[bytea]:'\\xdeadbeef' f[real]:0.1 n[numeric]:NaN ok[boolean]:false bits[bit]:B'1010' x[text]:null`,
    );
    assert.equal(row.op, 'c');
    assert.deepEqual(row.tables, [{ printed: 'public.t', schemaName: 'public', tableName: 't' }]);
    assert.equal(row.oldTuple, undefined);
    assert.deepEqual(
      row.newTuple?.map((c) => [c.name, c.type, c.value]),
      [
        ['id', 'integer', { kind: 'text', text: '1', bare: true }],
        ['v', 'text', { kind: 'text', text: `a'b "c"`, bare: false }],
        ['ts', 'timestamp with time zone', { kind: 'text', text: '2024-02-29 11:14:15.5+00', bare: false }],
        ['ia', 'integer[]', { kind: 'text', text: '{1,NULL}', bare: false }],
        ['b', 'bytea', { kind: 'text', text: '\\xdeadbeef', bare: false }],
        ['f', 'real', { kind: 'text', text: '0.1', bare: true }],
        ['n', 'numeric', { kind: 'text', text: 'NaN', bare: true }],
        ['ok', 'boolean', { kind: 'text', text: 'false', bare: true }],
        ['bits', 'bit', { kind: 'text', text: '1010', bare: true }],
        ['x', 'text', { kind: 'null' }],
      ],
    );
  });

  it('an update with old-key and new-tuple, quoted names that look like keywords', () => {
    const row = parseChangeRow(
      `table public."We""ird.T": UPDATE: old-key: "a b"[integer]:1 new-tuple: "a b"[integer]:2 "new-tuple"[text]:'x' body[text]:unchanged-toast-datum`,
    );
    assert.equal(row.op, 'u');
    assert.deepEqual(row.tables, [
      { printed: 'public."We""ird.T"', schemaName: 'public', tableName: 'We"ird.T' },
    ]);
    assert.deepEqual(
      row.oldTuple?.map((c) => [c.name, c.value]),
      [['a b', { kind: 'text', text: '1', bare: true }]],
    );
    assert.deepEqual(
      row.newTuple?.map((c) => [c.name, c.value]),
      [
        ['a b', { kind: 'text', text: '2', bare: true }],
        ['new-tuple', { kind: 'text', text: 'x', bare: false }],
        ['body', { kind: 'unchanged-toast' }],
      ],
    );
  });

  it('an update without old key, a delete, a delete without tuple data, a truncate of several tables', () => {
    const update = parseChangeRow(`table public.t: UPDATE: id[integer]:1 v[character varying]:'x y'`);
    assert.equal(update.oldTuple, undefined);
    assert.equal(update.newTuple?.length, 2);
    const deleted = parseChangeRow(`table public.t: DELETE: id[integer]:1`);
    assert.deepEqual(
      deleted.oldTuple?.map((c) => c.name),
      ['id'],
    );
    assert.equal(deleted.newTuple, undefined);
    const bare = parseChangeRow(`table public.t: DELETE: (no-tuple-data)`);
    assert.equal(bare.oldTuple, undefined);
    const truncate = parseChangeRow(`table public.t, "My S"."b/c, d": TRUNCATE: restart_seqs cascade`);
    assert.equal(truncate.op, 't');
    assert.deepEqual(
      truncate.tables.map((t) => [t.printed, t.schemaName, t.tableName]),
      [
        ['public.t', 'public', 't'],
        ['"My S"."b/c, d"', 'My S', 'b/c, d'],
      ],
    );
  });

  it('refuses what it does not understand', () => {
    assert.throws(() => parseChangeRow(`table public.t: MERGE: id[integer]:1`), /unknown operation/);
    assert.throws(() => parseChangeRow(`table public.t: INSERT: v[text]:'open`), /unterminated/);
    assert.throws(() => parseChangeRow(`table public.t: INSERT: v[text:1`), /unterminated type/);
  });

  it('commit times in UTC, to the microsecond', () => {
    assert.equal(utcTimestampMicros('1970-01-01 00:00:01.5+00'), 1_500_000n);
    assert.equal(utcTimestampMicros('2026-12-01 16:10:07.169654+00'), 1796141407169654n);
    assert.throws(() => utcTimestampMicros('2026-12-01 16:10:07+02'), /not a UTC timestamp/);
  });
});

describe('expected values', () => {
  const value = (json: string): JsonWithNumbers => parseRecordLine(`{"v":${json}}`).v!;
  const accepts = (type: string, text: string | null, json: string) =>
    assert.equal(mismatch(type, text, value(json)), undefined, `${type} ${text} = ${json}`);
  const refuses = (type: string, text: string | null, json: string) =>
    assert.ok(mismatch(type, text, value(json)), `${type} ${text} ≠ ${json}`);

  it('integers digit for digit, int8 beyond 2^53 too', () => {
    accepts('bigint', '9223372036854775807', '9223372036854775807');
    refuses('bigint', '9223372036854775807', '9223372036854775806');
    refuses('integer', '7', '"7"');
    refuses('integer', '7', '7.0');
    assert.ok(value('9223372036854775807') instanceof JsonNumber);
  });

  it('floats by value, special values as strings', () => {
    accepts('real', '0.1', '0.1');
    accepts('double precision', '1e+300', '1e300');
    accepts('double precision', 'NaN', '"NaN"');
    refuses('double precision', 'NaN', 'null');
    refuses('real', '1.5', '1.25');
  });

  it('numeric, text, booleans, null', () => {
    accepts('numeric', '12.50', '"12.50"');
    refuses('numeric', '12.50', '"12.5"');
    refuses('numeric', '12.50', '12.5');
    accepts('text', `a'b`, `"a'b"`);
    refuses('text', 'a', '"b"');
    accepts('boolean', 'true', 'true');
    refuses('boolean', 'true', 'false');
    accepts('text', null, 'null');
    refuses('text', null, '""');
    refuses('text', '', 'null');
  });

  it('bytea as base64, timestamps in ISO form', () => {
    accepts('bytea', '\\xdeadbeef', `"${Buffer.from('deadbeef', 'hex').toString('base64')}"`);
    refuses('bytea', '\\xdeadbeef', '"deadbeef"');
    accepts('timestamp with time zone', '2024-02-29 11:14:15.5+00', '"2024-02-29T11:14:15.5Z"');
    refuses('timestamp with time zone', '2024-02-29 11:14:15.5+00', '"2024-02-29T11:14:15.5"');
    accepts('timestamp with time zone', 'infinity', '"infinity"');
    accepts('timestamp without time zone', '2024-02-29 13:14:15.123456', '"2024-02-29T13:14:15.123456"');
    accepts('date', '2024-02-29', '"2024-02-29"');
  });

  it('arrays element by element, nested, with quoted elements and NULL', () => {
    assert.deepEqual(parseArrayLiteral('{"a b","c\\"d",NULL}'), ['a b', 'c"d', null]);
    assert.deepEqual(parseArrayLiteral('{{1.5,2},{3,4}}'), [
      ['1.5', '2'],
      ['3', '4'],
    ]);
    accepts('integer[]', '{1,NULL,3}', '[1,null,3]');
    refuses('integer[]', '{1,NULL,3}', '[1,3]');
    refuses('integer[]', '{1,NULL,3}', '"{1,NULL,3}"');
    accepts('numeric[]', '{{1.5,2},{3,4}}', '[["1.5","2"],["3","4"]]');
    refuses('numeric[]', '{{1.5,2},{3,4}}', '[["1.5","2"],["3","5"]]');
    accepts('boolean[]', '{t,f}', '[true,false]');
    assert.throws(() => parseArrayLiteral('[0:1]={1,2}'), /not understood/);
  });
});
