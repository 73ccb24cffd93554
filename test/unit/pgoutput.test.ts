/**
 * The pgoutput decoder against real server bytes (test/fixtures/pgoutput, captured from PostgreSQL 17 by
 * scripts/capture-pgoutput.ts) and synthetic messages for what the server did not send.
 *
 * Absolute LSNs, xids and OIDs change when the fixtures are recaptured, so the assertions check the
 * values the workload determines (names, tuple values, flags, gids) and the relations between positions
 * (a Begin's final LSN is its Commit's commit LSN, ...), not the raw numbers.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DecodeError, SlotlakeError } from '../../src/errors.js';
import type { LogicalMessage, Relation, Tuple } from '../../src/decoding/messages.js';
import { PgoutputDecoder } from '../../src/decoding/pgoutput.js';
import { lsn, parseLsn } from '../../src/lsn.js';
import { postgresMicrosFromUnix, unixMicrosFromPostgres } from '../../src/protocol/frames.js';
import {
  bytes,
  fromHex,
  loadPgoutputFixture,
  PGOUTPUT_FIXTURES,
  type PgoutputFixture,
  type PgoutputFixtureName,
} from '../helpers/bytes.js';

type Tag = LogicalMessage['tag'];
type Of<T extends Tag> = Extract<LogicalMessage, { tag: T }>;

interface Entry {
  readonly index: number;
  readonly name: string;
  readonly bytes: Uint8Array;
  readonly message: LogicalMessage;
}

function decodeFixture(name: PgoutputFixtureName): { fixture: PgoutputFixture; entries: Entry[] } {
  const fixture = loadPgoutputFixture(name);
  const decoder = new PgoutputDecoder({
    protocolVersion: fixture.protocolVersion,
    parallelStreaming: fixture.parallelStreaming,
  });
  const entries = fixture.messages.map(({ index, name: label, hex }) => {
    const data = fromHex(hex);
    return { index, name: label, bytes: data, message: decoder.decode(data) };
  });
  assert.equal(decoder.inStream, false, `${name}: the capture ends outside a stream block`);
  return { fixture, entries };
}

function is<T extends Tag>(message: LogicalMessage | undefined, tag: T): Of<T> {
  assert.ok(message, `expected a ${tag} message, got nothing`);
  assert.equal(message.tag, tag);
  return message as Of<T>;
}

function throwsDecode(fn: () => unknown, message: RegExp): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof DecodeError, `expected a DecodeError, got ${String(error)}`);
    assert.equal(error.kind, 'decode');
    assert.match(error.message, message);
    return true;
  });
}

/** Text values of a tuple, `null` for NULL and `'<u>'` for unchanged TOAST. */
function texts(tuple: Tuple | undefined): (string | null)[] {
  assert.ok(tuple, 'expected a tuple');
  return tuple.map((value) => {
    if (value.kind === 'text') return value.text;
    if (value.kind === 'null') return null;
    if (value.kind === 'unchanged-toast') return '<u>';
    assert.fail(`unexpected binary value in a text tuple`);
  });
}

/** Binary values as hex, `null` for NULL. */
function hexes(tuple: Tuple | undefined): (string | null)[] {
  assert.ok(tuple, 'expected a tuple');
  return tuple.map((value) => {
    if (value.kind === 'binary') return Buffer.from(value.bytes).toString('hex');
    if (value.kind === 'null') return null;
    assert.fail(`unexpected ${value.kind} value in a binary tuple`);
  });
}

interface Transaction {
  readonly begin: Of<'begin'>;
  readonly body: LogicalMessage[];
  readonly commit: Of<'commit'>;
}

/** Splits a non-streamed capture into Begin..Commit transactions and the messages outside them. */
function transactions(entries: readonly Entry[]): { transactions: Transaction[]; outside: LogicalMessage[] } {
  const result: Transaction[] = [];
  const outside: LogicalMessage[] = [];
  let open: { begin: Of<'begin'>; body: LogicalMessage[] } | undefined;
  for (const { message } of entries) {
    if (message.tag === 'begin') {
      assert.equal(open, undefined, 'Begin inside a transaction');
      open = { begin: message, body: [] };
    } else if (message.tag === 'commit') {
      assert.ok(open, 'Commit outside a transaction');
      result.push({ ...open, commit: message });
      open = undefined;
    } else if (open) open.body.push(message);
    else outside.push(message);
  }
  assert.equal(open, undefined, 'unterminated transaction');
  return { transactions: result, outside };
}

/** A plausible server clock reading (the fixtures were captured after 2020, and before 2100). */
function assertPlausibleTime(pgMicros: bigint): void {
  const ms = Number(unixMicrosFromPostgres(pgMicros) / 1000n);
  assert.ok(
    ms > Date.UTC(2020, 0, 1) && ms < Date.UTC(2100, 0, 1),
    `implausible time ${new Date(ms).toISOString()}`,
  );
}

function relationsByName(entries: readonly Entry[]): Map<string, Relation> {
  const map = new Map<string, Relation>();
  for (const { message } of entries)
    if (message.tag === 'relation') map.set(message.relation.name, message.relation);
  return map;
}

function relation(relations: Map<string, Relation>, name: string): Relation {
  const found = relations.get(name);
  assert.ok(found, `no Relation message for ${name}`);
  return found;
}

const INT4 = 23;
const INT8 = 20;
const TEXT = 25;
const NUMERIC = 1700;
const VARCHAR = 1043;
const BYTEA = 17;
const TIMESTAMPTZ = 1184;
const FLOAT8 = 701;
const BOOL = 16;

describe('pgoutput fixtures', () => {
  for (const name of PGOUTPUT_FIXTURES) {
    it(`${name}: every captured message decodes and matches its label`, () => {
      const { fixture, entries } = decodeFixture(name);
      assert.match(fixture.server, /^PostgreSQL 17/);
      assert.ok(entries.length > 0);
      for (const entry of entries) {
        assert.equal(entry.name.split(' ')[0], entry.message.tag, `message ${entry.index} (${entry.name})`);
        // Data messages carry an xid exactly when the label says they were streamed.
        if (entry.name.endsWith('(streamed)'))
          assert.equal(typeof (entry.message as { xid?: number }).xid, 'number');
      }
      // Each capture ends with the non-transactional marker the script waits for.
      const last = is(entries.at(-1)?.message, 'message');
      assert.equal(last.prefix, 'slotlake-capture');
      assert.equal(last.flags, 0);
      assert.equal(Buffer.from(last.content).toString(), 'end');
      assert.equal(entries.at(-1)?.index, fixture.capturedMessages - 1);
    });
  }
});

describe('pgoutput protocol 1 (basic.json)', () => {
  const { entries } = decodeFixture('basic');
  const { transactions: txs, outside } = transactions(entries);
  const relations = relationsByName(entries);
  const items = relation(relations, 'items');
  const tx = (i: number): Transaction => {
    const found = txs[i];
    assert.ok(found, `no transaction ${i}`);
    return found;
  };
  const tags = (t: Transaction) => t.body.map((message) => message.tag);

  it('brackets every transaction: Begin final LSN = Commit LSN, same commit time, increasing xids', () => {
    assert.equal(txs.length, 18);
    let previous: Transaction | undefined;
    for (const t of txs) {
      assert.equal(t.begin.finalLsn, t.commit.commitLsn);
      assert.equal(t.begin.commitTime, t.commit.commitTime);
      assert.ok(t.commit.endLsn > t.commit.commitLsn);
      assert.equal(t.commit.flags, 0);
      assertPlausibleTime(t.commit.commitTime);
      if (previous) {
        assert.ok(t.begin.xid > previous.begin.xid, 'xids increase');
        assert.ok(t.commit.commitLsn > previous.commit.endLsn - 1n, 'commit order is LSN order');
      }
      for (const message of t.body) assert.equal('xid' in message, false, 'no xid outside a stream');
      previous = t;
    }
  });

  it('describes the enum type before the relation that uses it', () => {
    assert.deepEqual(tags(tx(0)), ['type', 'relation', 'insert', 'insert']);
    const type = is(tx(0).body[0], 'type');
    assert.equal(type.namespace, 'public');
    assert.equal(type.name, 'mood');
    assert.ok(type.typeOid >= 16384, 'a user type OID');
    assert.equal(items.columns[5]?.typeOid, type.typeOid);
  });

  it('decodes a Relation: names, types, type modifiers, key flags, replica identity', () => {
    assert.equal(items.namespace, 'public');
    assert.equal(items.name, 'items');
    assert.equal(items.replicaIdentity, 'd');
    assert.deepEqual(
      items.columns.map((c) => [c.name, c.isKey, c.typeModifier]),
      [
        ['id', true, -1],
        ['name', false, -1],
        ['qty', false, -1],
        ['price', false, ((10 << 16) | 2) + 4], // numeric(10,2)
        ['note', false, 40 + 4], // varchar(40)
        ['feeling', false, -1],
        ['data', false, -1],
        ['created', false, -1],
      ],
    );
    assert.deepEqual(
      items.columns.map((c) => c.typeOid),
      [INT4, TEXT, INT4, NUMERIC, VARCHAR, items.columns[5]?.typeOid, BYTEA, TIMESTAMPTZ],
    );
    assert.equal(relation(relations, 'full_items').replicaIdentity, 'f');
    assert.deepEqual(
      relation(relations, 'full_items').columns.map((c) => c.isKey),
      [true, true, true],
    );
    const indexed = relation(relations, 'indexed');
    assert.equal(indexed.replicaIdentity, 'i');
    assert.deepEqual(
      indexed.columns.map((c) => [c.name, c.isKey]),
      [
        ['id', false],
        ['code', true],
        ['value', false],
      ],
    );
    const none = relation(relations, 'no_identity');
    assert.equal(none.replicaIdentity, 'n');
    assert.deepEqual(
      none.columns.map((c) => c.isKey),
      [false, false],
    );
  });

  it('decodes inserts: text values, NULLs, unicode', () => {
    const first = is(tx(0).body[2], 'insert');
    const second = is(tx(0).body[3], 'insert');
    assert.equal(first.relationId, items.relationId);
    assert.deepEqual(texts(first.newTuple), [
      '1',
      'plain',
      '10',
      '12.50',
      null,
      'happy',
      '\\x00ff10',
      '2024-01-02 03:04:05.678901+00',
    ]);
    assert.deepEqual(texts(second.newTuple), [
      '2',
      'héllo wörld ✓ 日本語 🎉',
      null,
      null,
      'naïve',
      'sad',
      null,
      null,
    ]);
  });

  it('decodes an update that keeps the key: no old tuple at all', () => {
    assert.deepEqual(tags(tx(1)), ['update']);
    const update = is(tx(1).body[0], 'update');
    assert.equal(update.relationId, items.relationId);
    assert.equal('oldKey' in update, false);
    assert.equal('oldTuple' in update, false);
    assert.deepEqual(texts(update.newTuple).slice(0, 3), ['1', 'plain', '11']);
  });

  it("decodes an update that changes the key: 'K' old key, other columns null", () => {
    const update = is(tx(2).body[0], 'update');
    assert.deepEqual(texts(update.oldKey), ['2', null, null, null, null, null, null, null]);
    assert.equal(update.oldTuple, undefined);
    assert.deepEqual(texts(update.newTuple), [
      '3',
      'héllo wörld ✓ 日本語 🎉',
      null,
      null,
      'moved',
      'sad',
      null,
      null,
    ]);
  });

  it("decodes REPLICA IDENTITY FULL: 'O' old tuple on update and delete", () => {
    assert.deepEqual(tags(tx(3)), ['relation', 'insert', 'insert']);
    const update = is(tx(4).body[0], 'update');
    assert.equal(update.relationId, relation(relations, 'full_items').relationId);
    assert.equal(update.oldKey, undefined);
    assert.deepEqual(texts(update.oldTuple), ['1', 'full', '1']);
    assert.deepEqual(texts(update.newTuple), ['1', 'full', '5']);
    const remove = is(tx(6).body[0], 'delete');
    assert.equal(remove.oldKey, undefined);
    assert.deepEqual(texts(remove.oldTuple), ['2', null, '2']);
  });

  it("decodes a delete by key: 'K'", () => {
    const remove = is(tx(5).body[0], 'delete');
    assert.equal(remove.relationId, items.relationId);
    assert.equal(remove.oldTuple, undefined);
    assert.deepEqual(texts(remove.oldKey), ['1', null, null, null, null, null, null, null]);
  });

  it('decodes an index replica identity: the old key carries the index column only', () => {
    assert.deepEqual(tags(tx(7)), ['relation', 'insert']);
    const update = is(tx(8).body[0], 'update');
    assert.deepEqual(texts(update.oldKey), [null, 'a', null]);
    assert.deepEqual(texts(update.newTuple), ['1', 'b', '1']);
    assert.deepEqual(tags(tx(9)), ['relation', 'insert']);
  });

  it("decodes an unchanged TOASTed value as 'u'", () => {
    const insert = is(tx(10).body[1], 'insert');
    const body = texts(insert.newTuple)[1];
    assert.equal(body?.length, 80 * 32);
    assert.match(body ?? '', /^c4ca4238a0b923820dcc509a6f75849b[0-9a-f]+$/); // md5('1')...
    const update = is(tx(11).body[0], 'update');
    assert.equal(update.relationId, relation(relations, 'big').relationId);
    assert.deepEqual(texts(update.newTuple), ['1', '<u>', '1']);
  });

  it('decodes truncates: options bits and the relation ids, described first', () => {
    const parent = relation(relations, 'parent');
    const child = relation(relations, 'child');
    assert.deepEqual(tags(tx(14)), ['relation', 'relation', 'truncate']);
    const cascade = is(tx(14).body[2], 'truncate');
    assert.equal(cascade.options, 0b11, 'CASCADE | RESTART IDENTITY');
    assert.deepEqual(cascade.relationIds, [parent.relationId, child.relationId]);
    assert.deepEqual(tags(tx(15)), ['relation', 'truncate']);
    const plain = is(tx(15).body[1], 'truncate');
    assert.equal(plain.options, 0);
    assert.deepEqual(plain.relationIds, [relation(relations, 'full_items').relationId]);
  });

  it('decodes logical messages: transactional inside its transaction, non-transactional outside', () => {
    assert.deepEqual(tags(tx(16)), ['insert', 'message']);
    const transactional = is(tx(16).body[1], 'message');
    assert.equal(transactional.flags, 1);
    assert.equal(transactional.prefix, 'slotlake');
    assert.equal(Buffer.from(transactional.content).toString(), 'transactional payload');
    assert.ok(transactional.lsn <= tx(16).commit.commitLsn);

    assert.equal(outside.length, 2);
    const nonTransactional = is(outside[0], 'message');
    assert.equal(nonTransactional.flags, 0);
    assert.equal(nonTransactional.prefix, 'slotlake');
    assert.deepEqual([...nonTransactional.content], [0, 1, 2, 3, 255]);
    assert.ok(nonTransactional.lsn > tx(16).commit.endLsn - 1n);
    assert.ok(nonTransactional.lsn < tx(17).begin.finalLsn);
  });

  it('decodes a replication origin right after Begin, with the origin commit time', () => {
    assert.deepEqual(tags(tx(17)), ['origin', 'insert']);
    const origin = is(tx(17).body[0], 'origin');
    assert.equal(origin.name, 'slotlake-origin');
    assert.equal(origin.originLsn, parseLsn('0/ABCDEF'));
    // pg_replication_origin_xact_setup('0/ABCDEF', '2024-01-02 03:04:05+00') sets the commit time.
    assert.equal(
      tx(17).begin.commitTime,
      postgresMicrosFromUnix(BigInt(Date.UTC(2024, 0, 2, 3, 4, 5)) * 1000n),
    );
  });

  it('copies message content out of the input, even from a Node Buffer (whose slice() is a view)', () => {
    const entry = entries.find((e) => e.message.tag === 'message' && e.message.flags === 1);
    assert.ok(entry);
    const input = Buffer.from(entry.bytes);
    const message = is(new PgoutputDecoder({ protocolVersion: 1 }).decode(input), 'message');
    assert.notEqual(message.content.buffer, input.buffer);
    input.fill(0);
    assert.equal(Buffer.from(message.content).toString(), 'transactional payload');
  });
});

describe("pgoutput binary mode (binary.json, tuple kind 'b')", () => {
  const { entries } = decodeFixture('binary');
  const { transactions: txs } = transactions(entries);
  const bin = relation(relationsByName(entries), 'bin');

  it('describes the columns', () => {
    assert.deepEqual(
      bin.columns.map((c) => [c.name, c.typeOid]),
      [
        ['id', INT4],
        ['n', INT8],
        ['t', TEXT],
        ['f', FLOAT8],
        ['b', BOOL],
        ['d', BYTEA],
        ['feeling', is(txs[0]?.body[0], 'type').typeOid],
      ],
    );
  });

  it("decodes each type's binary send format, NULLs and empty values", () => {
    const [first, second] = (txs[0]?.body ?? [])
      .filter((m) => m.tag === 'insert')
      .map((m) => is(m, 'insert'));
    assert.deepEqual(hexes(first?.newTuple), [
      '00000001', // int4 1
      'fffffffffffffffe', // int8 -2
      Buffer.from('text ✓').toString('hex'),
      '3ff8000000000000', // float8 1.5
      '01', // true
      'deadbeef',
      Buffer.from('ok').toString('hex'), // enum_send: the label
    ]);
    assert.deepEqual(hexes(second?.newTuple), ['00000002', null, '', '0000000000000000', '00', '', null]);
  });

  it('decodes a binary old key', () => {
    const update = is(txs[1]?.body[0], 'update');
    assert.deepEqual(hexes(update.oldKey), ['00000002', null, null, null, null, null, null]);
    assert.equal(hexes(update.newTuple)[0], '00000003');
  });

  it('copies binary values out of the input buffer', () => {
    const entry = entries.find((e) => e.message.tag === 'insert');
    assert.ok(entry);
    const input = Buffer.from(entry.bytes);
    const insert = is(new PgoutputDecoder({ protocolVersion: 1 }).decode(input), 'insert');
    const value = insert.newTuple[3];
    assert.ok(value?.kind === 'binary');
    assert.notEqual(value.bytes.buffer, input.buffer);
    assert.equal(value.bytes.byteLength, 8);
    assert.equal(value.bytes.buffer.byteLength, 8, 'owns exactly its bytes');
    input.fill(0);
    assert.equal(new DataView(value.bytes.buffer).getFloat64(0), 1.5);
  });
});

const DATA_TAGS = new Set<Tag>(['relation', 'type', 'insert', 'update', 'delete', 'truncate', 'message']);

/** Stream blocks of a streamed capture, with everything between them. */
function streamShape(entries: readonly Entry[]) {
  const blocks: { start: Of<'stream-start'>; body: LogicalMessage[] }[] = [];
  let open: { start: Of<'stream-start'>; body: LogicalMessage[] } | undefined;
  for (const { message } of entries) {
    if (message.tag === 'stream-start') {
      assert.equal(open, undefined, 'nested Stream Start');
      open = { start: message, body: [] };
    } else if (message.tag === 'stream-stop') {
      assert.ok(open, 'Stream Stop outside a block');
      blocks.push(open);
      open = undefined;
    } else if (open) {
      open.body.push(message);
      assert.ok(DATA_TAGS.has(message.tag), `${message.tag} in a stream block`);
      assert.equal(
        typeof (message as { xid?: number }).xid,
        'number',
        `${message.tag} in a stream block has an xid`,
      );
    } else if (DATA_TAGS.has(message.tag)) {
      assert.equal('xid' in message, false, `${message.tag} outside a stream block has no xid`);
    }
  }
  assert.equal(open, undefined);
  return blocks;
}

function dataXid(message: LogicalMessage | undefined): number {
  assert.ok(message && 'xid' in message && typeof message.xid === 'number', 'a streamed data message');
  return message.xid;
}

describe('pgoutput protocol 2 streaming (streaming.json)', () => {
  const { entries } = decodeFixture('streaming');
  const messages = entries.map((e) => e.message);
  const blocks = streamShape(entries);
  const top = is(messages[0], 'stream-start').xid;
  const commit = is(
    messages.find((m) => m.tag === 'stream-commit'),
    'stream-commit',
  );
  const aborts = messages.filter((m) => m.tag === 'stream-abort').map((m) => is(m, 'stream-abort'));
  const rowsOf = (xid: number) =>
    messages
      .filter((m) => m.tag === 'insert' && m.xid === xid)
      .map((m) => texts(is(m, 'insert').newTuple)[1]);

  it('streams the large transaction in several blocks; only the first is the first segment', () => {
    const ofTop = blocks.filter((b) => b.start.xid === top);
    assert.ok(ofTop.length >= 3, `${ofTop.length} blocks`);
    assert.deepEqual(
      ofTop.map((b) => b.start.firstSegment),
      [true, ...ofTop.slice(1).map(() => false)],
    );
  });

  it('carries the (sub)transaction xid on every data message in a block, including Relation and Type', () => {
    const first = blocks[0];
    assert.ok(first);
    assert.deepEqual(
      first.body.slice(0, 4).map((m) => [m.tag, dataXid(m)]),
      [
        ['relation', top],
        ['insert', top],
        ['type', top],
        ['relation', top],
      ],
    );
    const type = is(first.body[2], 'type');
    assert.equal(type.name, 'mood');
    const streamRows = is(first.body[3], 'relation').relation;
    assert.equal(streamRows.name, 'stream_rows');
    assert.equal(streamRows.columns[2]?.typeOid, type.typeOid);
    assert.deepEqual(texts(is(first.body[4], 'insert').newTuple), ['1', 'row 1', 'ok']);
  });

  it('decodes a plain transaction committed between two blocks, without xids on its data', () => {
    const begin = messages.findIndex((m) => m.tag === 'begin');
    const slice = messages.slice(begin, begin + 4);
    assert.deepEqual(
      slice.map((m) => m.tag),
      ['begin', 'relation', 'insert', 'commit'],
    );
    assert.equal(is(messages[begin - 1], 'stream-stop').tag, 'stream-stop');
    assert.equal(is(messages[begin + 4], 'stream-start').xid, top);
    assert.notEqual(is(slice[0], 'begin').xid, top);
    assert.equal(is(slice[0], 'begin').finalLsn, is(slice[3], 'commit').commitLsn);
    assert.equal('xid' in is(slice[2], 'insert'), false);
    assert.deepEqual(texts(is(slice[2], 'insert').newTuple), [
      '1',
      'committed while the large transaction is open',
    ]);
  });

  it('carries a transactional logical message inside the stream', () => {
    const message = is(
      messages.find((m) => m.tag === 'message' && m.flags === 1),
      'message',
    );
    assert.equal(message.xid, top);
    assert.equal(message.prefix, 'slotlake');
    assert.equal(Buffer.from(message.content).toString(), 'inside a streamed transaction');
  });

  it('aborts the rolled-back savepoint with Stream Abort (xid, subxid), whose rows carried the subxid', () => {
    const sub = aborts[0];
    assert.ok(sub);
    assert.equal(sub.xid, top);
    assert.notEqual(sub.subXid, top);
    assert.equal(sub.abortLsn, undefined, 'no abort LSN without parallel streaming');
    assert.equal(sub.abortTime, undefined);
    const rows = rowsOf(sub.subXid);
    assert.ok(rows.length > 0);
    for (const row of rows) assert.match(row ?? '', /^rolled back \d+$/);
    // Only the rolled-back inserts had that xid.
    const withSubXid = messages.filter((m) => m.tag !== 'stream-abort' && 'xid' in m && m.xid === sub.subXid);
    assert.deepEqual(new Set(withSubXid.map((m) => m.tag)), new Set(['insert']));
  });

  it('keeps later changes in other subtransactions and settles the transaction with Stream Commit', () => {
    const last = blocks.filter((b) => b.start.xid === top).at(-1);
    assert.ok(last);
    assert.deepEqual(
      last.body.map((m) => m.tag),
      ['type', 'relation', 'insert', 'update', 'delete', 'relation', 'truncate'],
    );
    const released = is(last.body[2], 'insert');
    assert.deepEqual(texts(released.newTuple), ['5000', 'in released savepoint', 'happy']);
    const update = is(last.body[3], 'update');
    const remove = is(last.body[4], 'delete');
    const truncate = is(last.body[6], 'truncate');
    // ROLLBACK TO SAVEPOINT s1 re-establishes s1 as a new subtransaction; s2 nests inside it.
    const xids = new Set([dataXid(released), dataXid(update), dataXid(remove), dataXid(truncate)]);
    for (const xid of xids) assert.ok(xid > top && xid !== aborts[0]?.subXid, `subtransaction xid ${xid}`);
    assert.deepEqual(texts(update.newTuple), ['1', 'updated', 'ok']);
    assert.deepEqual(texts(remove.oldKey), ['2', null, null]);
    assert.equal(truncate.options, 0);
    assert.deepEqual(truncate.relationIds, [is(last.body[5], 'relation').relation.relationId]);
    assert.equal(is(last.body[5], 'relation').relation.name, 'scratch');

    assert.equal(commit.xid, top);
    assert.equal(commit.flags, 0);
    assert.ok(commit.endLsn > commit.commitLsn);
    assertPlausibleTime(commit.commitTime);
    const commitAt = messages.indexOf(commit);
    assert.equal(messages[commitAt - 1]?.tag, 'stream-stop', 'Stream Commit follows the last block');
  });

  it('aborts a whole streamed transaction with xid = subxid', () => {
    const whole = aborts[1];
    assert.ok(whole);
    assert.equal(aborts.length, 2);
    assert.notEqual(whole.xid, top);
    assert.equal(whole.subXid, whole.xid);
    const ofAborted = blocks.filter((b) => b.start.xid === whole.xid);
    assert.deepEqual(
      ofAborted.map((b) => b.start.firstSegment),
      [true, ...ofAborted.slice(1).map(() => false)],
    );
    for (const row of rowsOf(whole.xid)) assert.match(row ?? '', /^aborted \d+$/);
  });
});

describe('pgoutput protocol 3 two-phase (two-phase.json)', () => {
  const { entries } = decodeFixture('two-phase');
  const messages = entries.map((e) => e.message);

  it('decodes Begin Prepare, Prepare and Commit Prepared of one gid', () => {
    assert.deepEqual(
      messages.slice(0, 5).map((m) => m.tag),
      ['begin-prepare', 'relation', 'insert', 'prepare', 'commit-prepared'],
    );
    const begin = is(messages[0], 'begin-prepare');
    const prepare = is(messages[3], 'prepare');
    const commit = is(messages[4], 'commit-prepared');
    assert.equal(begin.gid, 'slotlake-gid-commit');
    assert.equal(prepare.gid, begin.gid);
    assert.equal(commit.gid, begin.gid);
    assert.equal(prepare.xid, begin.xid);
    assert.equal(commit.xid, begin.xid);
    assert.equal(prepare.prepareLsn, begin.prepareLsn);
    assert.equal(prepare.endLsn, begin.endLsn);
    assert.equal(prepare.prepareTime, begin.prepareTime);
    assert.ok(begin.endLsn > begin.prepareLsn);
    assert.equal(prepare.flags, 0);
    assert.equal(commit.flags, 0);
    assert.ok(commit.commitLsn >= prepare.endLsn, 'COMMIT PREPARED is written after the PREPARE');
    assert.ok(commit.endLsn > commit.commitLsn);
    assert.ok(commit.commitTime >= prepare.prepareTime);
    assertPlausibleTime(commit.commitTime);
    assert.deepEqual(texts(is(messages[2], 'insert').newTuple), ['1', '100']);
  });

  it('decodes Rollback Prepared pointing at its Prepare', () => {
    assert.deepEqual(
      messages.slice(5, 9).map((m) => m.tag),
      ['begin-prepare', 'update', 'prepare', 'rollback-prepared'],
    );
    const begin = is(messages[5], 'begin-prepare');
    const prepare = is(messages[7], 'prepare');
    const rollback = is(messages[8], 'rollback-prepared');
    assert.equal(begin.gid, 'slotlake-gid-rollback');
    assert.equal(rollback.gid, begin.gid);
    assert.equal(rollback.xid, begin.xid);
    assert.ok(begin.xid > is(messages[0], 'begin-prepare').xid);
    assert.equal(rollback.flags, 0);
    assert.equal(rollback.prepareEndLsn, prepare.endLsn);
    assert.ok(rollback.rollbackEndLsn > rollback.prepareEndLsn);
    assert.equal(rollback.prepareTime, prepare.prepareTime);
    assert.ok(rollback.rollbackTime >= rollback.prepareTime);
    assert.deepEqual(texts(is(messages[6], 'update').newTuple), ['1', '50']);
  });

  it('still decodes plain transactions as Begin/Commit', () => {
    const begin = is(messages[9], 'begin');
    const commit = is(messages[11], 'commit');
    assert.equal(begin.finalLsn, commit.commitLsn);
    assert.ok(begin.finalLsn > is(messages[8], 'rollback-prepared').rollbackEndLsn - 1n);
  });

  it('refuses two-phase messages when constructed for an older protocol', () => {
    const entry = entries[0];
    assert.ok(entry);
    throwsDecode(
      () => new PgoutputDecoder({ protocolVersion: 2 }).decode(entry.bytes),
      /Begin Prepare \(0x62 'b'\) needs protocol version 3, decoder is at 2/,
    );
  });
});

describe('pgoutput protocol 4 parallel streaming (parallel.json)', () => {
  const { entries } = decodeFixture('parallel');
  const messages = entries.map((e) => e.message);
  const blocks = streamShape(entries);
  const starts = [...new Set(blocks.map((b) => b.start.xid))];

  it('streams a prepared transaction, then Stream Prepare and Commit Prepared', () => {
    const [prepared] = starts;
    const prepare = is(
      messages.find((m) => m.tag === 'stream-prepare'),
      'stream-prepare',
    );
    const at = messages.indexOf(prepare);
    assert.equal(messages[at - 1]?.tag, 'stream-stop');
    const commit = is(messages[at + 1], 'commit-prepared');
    assert.equal(prepare.xid, prepared);
    assert.equal(prepare.gid, 'slotlake-stream-gid');
    assert.equal(prepare.flags, 0);
    assert.ok(prepare.endLsn > prepare.prepareLsn);
    assertPlausibleTime(prepare.prepareTime);
    assert.equal(commit.xid, prepared);
    assert.equal(commit.gid, prepare.gid);
    assert.ok(commit.commitLsn >= prepare.endLsn);
    const rows = messages.filter((m) => m.tag === 'insert' && m.xid === prepared);
    assert.ok(rows.every((m) => /^prepared \d+$/.test(texts(is(m, 'insert').newTuple)[1] ?? '')));
  });

  it('carries the abort LSN and time in Stream Abort of a subtransaction', () => {
    const committed = starts[1];
    const abort = is(
      messages.find((m) => m.tag === 'stream-abort' && m.xid !== m.subXid),
      'stream-abort',
    );
    const commit = is(messages[messages.indexOf(abort) + 1], 'stream-commit');
    assert.equal(abort.xid, committed);
    assert.notEqual(abort.subXid, committed);
    assert.ok(abort.abortLsn !== undefined && abort.abortTime !== undefined);
    assertPlausibleTime(abort.abortTime);
    // ROLLBACK TO SAVEPOINT then COMMIT: the abort record ends where the commit record starts.
    assert.ok(abort.abortLsn <= commit.commitLsn);
    assert.ok(abort.abortTime <= commit.commitTime);
    assert.equal(commit.xid, committed);
    const subRows = messages.filter((m) => m.tag === 'insert' && m.xid === abort.subXid);
    assert.ok(subRows.length > 0);
    assert.ok(subRows.every((m) => /^rolled back \d+$/.test(texts(is(m, 'insert').newTuple)[1] ?? '')));
  });

  it('carries the abort LSN and time in Stream Abort of a whole transaction', () => {
    const aborted = starts[2];
    const abort = is(
      messages.find((m) => m.tag === 'stream-abort' && m.xid === m.subXid),
      'stream-abort',
    );
    assert.equal(abort.xid, aborted);
    assert.ok(abort.abortLsn !== undefined && abort.abortTime !== undefined);
    const marker = is(messages.at(-1), 'message');
    assert.ok(abort.abortLsn < marker.lsn);
    assertPlausibleTime(abort.abortTime);
  });

  it('reads protocol-4 Stream Abort only with parallel streaming: otherwise the extra bytes are an error', () => {
    const abort = entries.find((e) => e.message.tag === 'stream-abort');
    assert.ok(abort);
    assert.equal(abort.bytes.length, 1 + 4 + 4 + 8 + 8);
    throwsDecode(
      () => new PgoutputDecoder({ protocolVersion: 4 }).decode(abort.bytes),
      /16 unexpected trailing bytes/,
    );
  });
});

describe('pgoutput synthetic messages', () => {
  const v1 = () => new PgoutputDecoder({ protocolVersion: 1 });
  const streamStart = (xid: number, first = 1) => bytes().char('S').u32(xid).u8(first).build();

  it('decodes every tuple kind, empty and binary values, and reads xids and OIDs unsigned', () => {
    const message = bytes()
      .char('I')
      .u32(0xfffffff0)
      .char('N')
      .tuple([null, 'u', '', 'ünï', new Uint8Array([]), new Uint8Array([0, 255])])
      .build();
    assert.deepEqual(v1().decode(message), {
      tag: 'insert',
      relationId: 0xfffffff0,
      newTuple: [
        { kind: 'null' },
        { kind: 'unchanged-toast' },
        { kind: 'text', text: '' },
        { kind: 'text', text: 'ünï' },
        { kind: 'binary', bytes: new Uint8Array([]) },
        { kind: 'binary', bytes: new Uint8Array([0, 255]) },
      ],
    });
    const begin = v1().decode(bytes().char('B').u64(0xffffffffffffffffn).i64(-1n).u32(0xffffffff).build());
    assert.deepEqual(begin, {
      tag: 'begin',
      finalLsn: lsn(0xffffffffffffffffn),
      commitTime: -1n,
      xid: 0xffffffff,
    });
  });

  it('decodes a tuple with zero columns', () => {
    assert.deepEqual(v1().decode(bytes().char('I').u32(1).char('N').i16(0).build()), {
      tag: 'insert',
      relationId: 1,
      newTuple: [],
    });
  });

  it('decodes a Relation with no columns and a signed type modifier', () => {
    const decoded = v1().decode(bytes().char('R').u32(7).cstring('').cstring('t').char('n').i16(0).build());
    assert.deepEqual(decoded, {
      tag: 'relation',
      relation: { relationId: 7, namespace: '', name: 't', replicaIdentity: 'n', columns: [] },
    });
    const column = v1().decode(
      bytes()
        .char('R')
        .u32(7)
        .cstring('s')
        .cstring('t')
        .char('d')
        .i16(1)
        .u8(3)
        .cstring('c')
        .u32(4000000000)
        .i32(-5)
        .build(),
    );
    assert.deepEqual(is(column, 'relation').relation.columns, [
      { isKey: true, name: 'c', typeOid: 4000000000, typeModifier: -5 },
    ]);
  });

  it('decodes invalid UTF-8 in text with replacement characters, not an exception', () => {
    const decoded = v1().decode(bytes().char('I').u32(1).char('N').tuple([]).build());
    assert.equal(decoded.tag, 'insert');
    const raw = bytes().char('I').u32(1).char('N').i16(1).char('t').i32(2).raw([0xc3, 0x28]).build();
    assert.deepEqual(texts(is(v1().decode(raw), 'insert').newTuple), ['\ufffd(']);
  });

  it('decodes protocol-4 Stream Abort fields and Stream Prepare', () => {
    const decoder = new PgoutputDecoder({ protocolVersion: 4, parallelStreaming: true });
    assert.equal(decoder.protocolVersion, 4);
    assert.equal(decoder.parallelStreaming, true);
    assert.deepEqual(decoder.decode(bytes().char('A').u32(10).u32(11).u64(0x1_0000_0000n).i64(42n).build()), {
      tag: 'stream-abort',
      xid: 10,
      subXid: 11,
      abortLsn: lsn(0x1_0000_0000n),
      abortTime: 42n,
    });
    const prepare = bytes().char('p').u8(0).u64(5n).u64(6n).i64(7n).u32(8).cstring('g ✓').build();
    assert.deepEqual(decoder.decode(prepare), {
      tag: 'stream-prepare',
      flags: 0,
      prepareLsn: lsn(5n),
      endLsn: lsn(6n),
      prepareTime: 7n,
      xid: 8,
      gid: 'g ✓',
    });
  });

  it('reads the leading xid only between Stream Start and Stream Stop', () => {
    const decoder = new PgoutputDecoder({ protocolVersion: 2 });
    const streamed = bytes().char('I').u32(99).u32(5).char('N').tuple(['x']).build();
    const plain = bytes().char('I').u32(5).char('N').tuple(['x']).build();
    assert.equal(decoder.inStream, false);
    assert.deepEqual(decoder.decode(plain), {
      tag: 'insert',
      relationId: 5,
      newTuple: [{ kind: 'text', text: 'x' }],
    });
    assert.throws(() => decoder.decode(streamed), DecodeError);
    assert.deepEqual(decoder.decode(streamStart(99, 0)), {
      tag: 'stream-start',
      xid: 99,
      firstSegment: false,
    });
    assert.equal(decoder.inStream, true);
    assert.deepEqual(decoder.decode(streamed), {
      tag: 'insert',
      relationId: 5,
      newTuple: [{ kind: 'text', text: 'x' }],
      xid: 99,
    });
    assert.throws(() => decoder.decode(plain), DecodeError);
    const message = bytes().char('M').u32(99).u8(1).u64(3n).cstring('p').i32(0).build();
    assert.deepEqual(decoder.decode(message), {
      tag: 'message',
      flags: 1,
      lsn: lsn(3n),
      prefix: 'p',
      content: new Uint8Array([]),
      xid: 99,
    });
    const truncate = bytes().char('T').u32(99).i32(2).u8(2).u32(1).u32(2).build();
    assert.deepEqual(decoder.decode(truncate), { tag: 'truncate', options: 2, relationIds: [1, 2], xid: 99 });
    assert.deepEqual(decoder.decode(bytes().char('E').build()), { tag: 'stream-stop' });
    assert.equal(decoder.inStream, false);
    assert.deepEqual(decoder.decode(plain), {
      tag: 'insert',
      relationId: 5,
      newTuple: [{ kind: 'text', text: 'x' }],
    });
  });

  it('rejects nested Stream Start and a Stream Stop outside a block without changing state', () => {
    const decoder = new PgoutputDecoder({ protocolVersion: 2 });
    throwsDecode(() => decoder.decode(bytes().char('E').build()), /not inside a stream block/);
    decoder.decode(streamStart(1));
    throwsDecode(() => decoder.decode(streamStart(2)), /already inside a stream block/);
    assert.equal(decoder.inStream, true);
    // A malformed Stream Stop (trailing byte) leaves the block open.
    assert.throws(() => decoder.decode(bytes().char('E').u8(0).build()), DecodeError);
    assert.equal(decoder.inStream, true);
    decoder.decode(bytes().char('E').build());
    assert.equal(decoder.inStream, false);
    // A malformed Stream Start does not open one.
    assert.throws(() => decoder.decode(bytes().char('S').u32(1).build()), DecodeError);
    assert.equal(decoder.inStream, false);
  });

  it('refuses streaming messages below protocol 2', () => {
    throwsDecode(
      () => v1().decode(streamStart(1)),
      /Stream Start \(0x53 'S'\) needs protocol version 2, decoder is at 1/,
    );
  });

  it('validates its options', () => {
    for (const protocolVersion of [0, 5, 1.5, Number.NaN]) {
      assert.throws(
        () => new PgoutputDecoder({ protocolVersion: protocolVersion as 1 }),
        (error: unknown) => error instanceof SlotlakeError && error.kind === 'config',
      );
    }
    assert.throws(
      () => new PgoutputDecoder({ protocolVersion: 3, parallelStreaming: true }),
      (error: unknown) => error instanceof SlotlakeError && error.kind === 'config',
    );
    assert.equal(new PgoutputDecoder({ protocolVersion: 3 }).parallelStreaming, false);
  });

  it('decodes a message from a view into a larger buffer', () => {
    const message = bytes().char('O').u64(1n).cstring('o').build();
    const big = new Uint8Array(message.length + 10);
    big.set(message, 5);
    assert.deepEqual(v1().decode(big.subarray(5, 5 + message.length)), {
      tag: 'origin',
      originLsn: lsn(1n),
      name: 'o',
    });
    assert.deepEqual(v1().decode(bytes().char('C').u8(0).u64(1n).u64(2n).i64(3n).build()), {
      tag: 'commit',
      flags: 0,
      commitLsn: lsn(1n),
      endLsn: lsn(2n),
      commitTime: 3n,
    });
  });
});
