/**
 * The integration tests' oracles, tested on their own: the parser of test_decoding's rows (test/helpers/
 * reference.ts) on rows a PostgreSQL 17 server printed, the expected-value mapping (test/helpers/
 * reference-values.ts) and the lease history (test/helpers/lease-history.ts) — each must accept the right
 * thing and refuse a wrong one, or the tests built on them would prove nothing.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { assertLeaseExclusive, storeWriteKind, type StoreWrite } from '../helpers/lease-history.js';
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

describe('the lease history', () => {
  let clock = 0;
  /** A write the store accepted: received at the next tick, answered one tick later. */
  const accepted = (
    kind: StoreWrite['kind'],
    owner: string,
    fence: number,
    extra: Partial<StoreWrite> = {},
  ): StoreWrite => {
    clock += 10;
    return {
      kind,
      what: kind === 'acquisition' ? 'acquisition' : 'checkpoint',
      owner,
      fence,
      receivedAtMs: clock,
      answeredAtMs: clock + 1,
      updateExpression: '',
      expiresAtMs: undefined,
      nowMs: undefined,
      ...extra,
    };
  };

  it('accepts runs one after the other: acquire, write, release; a takeover after expiry', () => {
    const writes = [
      accepted('acquisition', 'a', 1, { nowMs: 0, expiresAtMs: 100 }),
      accepted('under-lease', 'a', 1),
      accepted('under-lease', 'a', 1, { what: 'release' }),
      accepted('acquisition', 'b', 2, { nowMs: 50, expiresAtMs: 150 }),
      accepted('under-lease', 'b', 2),
      accepted('acquisition', 'c', 3, { nowMs: 151, expiresAtMs: 250 }),
    ];
    assert.deepEqual(
      assertLeaseExclusive(writes).map((w) => w.owner),
      ['a', 'b', 'c'],
    );
  });

  it('refuses a write accepted under a fence after a later acquisition', () => {
    const writes = [
      accepted('acquisition', 'a', 1, { nowMs: 0, expiresAtMs: 100 }),
      accepted('acquisition', 'b', 2, { nowMs: 101, expiresAtMs: 200 }),
      accepted('under-lease', 'a', 1),
    ];
    assert.throws(() => assertLeaseExclusive(writes), /fenced-off lease/);
  });

  it('refuses an acquisition of a lease still held, and a write under a fence never acquired', () => {
    const held = [
      accepted('acquisition', 'a', 1, { nowMs: 0, expiresAtMs: 100 }),
      accepted('under-lease', 'a', 1, { what: 'renewal', expiresAtMs: 160 }),
      accepted('acquisition', 'b', 2, { nowMs: 150, expiresAtMs: 250 }),
    ];
    assert.throws(() => assertLeaseExclusive(held), /take the lease at 150 while .* held it until 160/);
    assert.throws(
      () => assertLeaseExclusive([accepted('under-lease', 'x', 7)]),
      /a fence its owner never acquired/,
    );
  });

  it('tells the store writes apart by their update expressions', () => {
    assert.equal(
      storeWriteKind(
        'SET leaseOwner = :owner, leaseExpiresAt = :expires, fence = if_not_exists(fence, :zero) + :one',
      ),
      'acquisition',
    );
    assert.equal(storeWriteKind('SET leaseExpiresAt = :expires'), 'renewal');
    assert.equal(storeWriteKind('ADD intentKeys :keys'), 'intent');
    assert.equal(storeWriteKind('REMOVE intentKeys'), 'clear-intent');
    assert.equal(storeWriteKind('SET lsn = :lsn, lsnKey = :lsnKey REMOVE intentKeys'), 'checkpoint');
    assert.equal(storeWriteKind('SET uploadBytesPerMs = :u REMOVE leaseOwner, leaseExpiresAt'), 'release');
  });
});
