/**
 * The wal2json format-version 2 decoder, against output captured from a real Debian PostgreSQL 15 +
 * wal2json 2.5 (test/fixtures/wal2json/pg15.json, written by scripts/capture-wal2json.ts): every
 * decoded value is compared with the server's own text output of that value.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { DecodeError } from '../../src/errors.js';
import { lsn, parseLsn, type Lsn } from '../../src/lsn.js';
import type {
  ColumnDefinition,
  LogicalMessage,
  Relation,
  TableDefinition,
  Tuple,
  TupleValue,
} from '../../src/decoding/messages.js';
import {
  Wal2jsonDecoder,
  parseWal2jsonTimestamp,
  wal2jsonStartReplicationOptions,
  wal2jsonTableName,
} from '../../src/decoding/wal2json.js';

type Row = Record<string, string | null>;
type Snapshot = Record<string, Record<string, Row>>;

interface Fixture {
  tables: { schema: string; table: string; key: string }[];
  castDifferences: { table: string; key: string; column: string; output: string; cast: string }[];
  transactions: { label: string; xid: number; before: Snapshot; after: Snapshot }[];
  messages: { lsn: string; xid: number | null; data?: string; hex?: string }[];
}

const fixture = JSON.parse(
  readFileSync(new URL('../fixtures/wal2json/pg15.json', import.meta.url), 'utf8'),
) as Fixture;

const encoder = new TextEncoder();
const bytesOf = (message: Fixture['messages'][number]): Uint8Array =>
  message.data !== undefined
    ? encoder.encode(message.data)
    : new Uint8Array(Buffer.from(message.hex!, 'hex'));

interface Decoded {
  walStart: Lsn;
  raw: Fixture['messages'][number];
  message: LogicalMessage;
}

function decodeFixture(): Decoded[] {
  const decoder = new Wal2jsonDecoder();
  return fixture.messages.flatMap((raw) =>
    decoder
      .decode(bytesOf(raw), parseLsn(raw.lsn))
      .map((message) => ({ walStart: parseLsn(raw.lsn), raw, message })),
  );
}

const decoded = decodeFixture();
const messages = decoded.map((d) => d.message);

/** The messages from the Begin of `xid` to its Commit, inclusive. */
function transaction(xid: number): LogicalMessage[] {
  const start = messages.findIndex((m) => m.tag === 'begin' && m.xid === xid);
  assert.ok(start >= 0, `no Begin for xid ${xid}`);
  const end = messages.findIndex((m, i) => i > start && m.tag === 'commit');
  return messages.slice(start, end + 1);
}

function txOf(label: string): Fixture['transactions'][number] {
  const tx = fixture.transactions.find((t) => t.label.startsWith(label));
  assert.ok(tx, label);
  return tx;
}

const relations = new Map<number, Relation>();
for (const m of messages) if (m.tag === 'relation') relations.set(m.relation.relationId, m.relation);
function relationAt(index: number, relationId: number): Relation {
  // the relation in force at `index`: the last relation message for that id before it
  for (let i = index; i >= 0; i--) {
    const m = messages[i]!;
    if (m.tag === 'relation' && m.relation.relationId === relationId) return m.relation;
  }
  return assert.fail(`no relation ${relationId} before message ${index}`);
}

const text = (value: TupleValue | undefined): string | null | undefined =>
  value === undefined
    ? undefined
    : value.kind === 'text'
      ? value.text
      : value.kind === 'null'
        ? null
        : `<${value.kind}>`;

function named(relation: Relation, tuple: Tuple): Record<string, string | null | undefined> {
  assert.equal(tuple.length, relation.columns.length, `${relation.name}: tuple and relation sizes differ`);
  return Object.fromEntries(relation.columns.map((c, i) => [c.name, text(tuple[i])]));
}

const SPECIAL_NUMBERS = new Set(['NaN', 'Infinity', '-Infinity']);
const NUMERIC_TYPES = new Set([700, 701, 1700]);

describe('wal2json decoder on captured PostgreSQL 15 output', () => {
  it('maps every B/C to Begin/Commit with the commit LSN, end LSN and timestamp', () => {
    const begins = decoded.filter((d) => d.message.tag === 'begin');
    assert.equal(begins.length, fixture.transactions.length);
    for (const tx of fixture.transactions) {
      const msgs = transaction(tx.xid);
      const begin = msgs[0]!;
      const commit = msgs.at(-1)!;
      assert.ok(begin.tag === 'begin' && commit.tag === 'commit');
      const rawB = JSON.parse(decoded.find((d) => d.message === begin)!.raw.data!) as Record<string, string>;
      const rawCDecoded = decoded.find((d) => d.message === commit)!;
      const rawC = JSON.parse(rawCDecoded.raw.data!) as Record<string, string>;
      // B's "lsn" is the transaction's final LSN = the commit record's LSN
      assert.equal(rawB['lsn'], rawC['lsn']);
      assert.equal(begin.finalLsn, parseLsn(rawC['lsn']!));
      assert.equal(commit.commitLsn, begin.finalLsn);
      assert.equal(commit.endLsn, parseLsn(rawC['nextlsn']!));
      // the walsender stamps the commit message with the transaction's end LSN
      assert.equal(commit.endLsn, rawCDecoded.walStart);
      assert.ok(commit.endLsn > commit.commitLsn);
      assert.equal(begin.commitTime, commit.commitTime);
      assert.equal(begin.commitTime, parseWal2jsonTimestamp(rawB['timestamp']!));
      assert.equal(commit.flags, 0);
    }
  });

  it("gives every value exactly the server's text output (NaN/±Infinity excepted: wal2json sends null)", () => {
    const keyOf = new Map(fixture.tables.map((t) => [`${t.schema}.${t.table}`, t.key]));
    let compared = 0;
    const specials: string[] = [];
    const check = (
      relation: Relation,
      got: Record<string, string | null | undefined>,
      want: Row,
      what: string,
    ) => {
      for (const column of relation.columns) {
        const value = got[column.name];
        const expected = want[column.name];
        if (value === '<unchanged-toast>') continue; // checked in its own test
        if (value === null && expected !== null && NUMERIC_TYPES.has(column.typeOid)) {
          assert.ok(SPECIAL_NUMBERS.has(expected!), `${what}.${column.name}: null for ${expected}`);
          specials.push(
            `${want[keyOf.get(`${relation.namespace}.${relation.name}`)!]}.${column.name}=${expected}`,
          );
          continue;
        }
        assert.equal(value, expected, `${what}.${column.name}`);
        compared++;
      }
    };
    for (const tx of fixture.transactions) {
      const msgs = transaction(tx.xid);
      const start = messages.indexOf(msgs[0]!);
      const seen = new Set<string>();
      msgs.forEach((m, i) => {
        if (m.tag !== 'insert' && m.tag !== 'update' && m.tag !== 'delete') return;
        const relation = relationAt(start + i, m.relationId);
        const table = `${relation.namespace}.${relation.name}`;
        const key = keyOf.get(table)!;
        const oldTuple = m.tag === 'insert' ? undefined : m.oldTuple;
        const oldKey = m.tag === 'insert' ? undefined : m.oldKey;
        const old = oldTuple ?? oldKey;
        if (old) {
          const oldRow = named(relation, old);
          const before = tx.before[table]?.[oldRow[key]!];
          // the row's state before the transaction, if this is its first change in it
          if (before && oldTuple && !seen.has(`${table}/${oldRow[key]}`))
            check(relation, oldRow, before, `${table} old`);
          // an old key holds the replica identity key columns, the others are null
          if (oldKey) {
            for (const c of relation.columns)
              assert.equal(oldRow[c.name] !== null, c.isKey, `${table} oldKey.${c.name}`);
          }
          seen.add(`${table}/${oldRow[key]}`);
        }
        if (m.tag !== 'delete') {
          const newRow = named(relation, m.newTuple);
          const k = newRow[key]!;
          seen.add(`${table}/${k}`);
          // the row's state after the transaction, if this is its last change in it
          const later = msgs.slice(i + 1).some((n) => {
            if (n.tag !== 'update' && n.tag !== 'delete') return false;
            if (n.relationId !== m.relationId) return false;
            const tuples = [n.oldTuple, n.oldKey, n.tag === 'update' ? n.newTuple : undefined];
            return tuples.some((t) => t !== undefined && named(relation, t)[key] === k);
          });
          const after = tx.after[table]?.[k];
          if (!later && after) check(relation, newRow, after, `${table} new`);
        }
      });
    }
    // 8 inserted all_types rows × 21 columns, minus the 6 special numbers, plus the rest
    assert.ok(compared > 8 * 21, `only ${compared} values compared`);
    assert.deepEqual([...new Set(specials)].sort(), [
      '2.c_float4=NaN',
      '2.c_float8=Infinity',
      '2.c_numeric=NaN',
      '3.c_float4=-Infinity',
      '3.c_float8=-Infinity',
      '3.c_numeric=-Infinity',
    ]);
  });

  it('keeps int8, numeric and float source text exactly', () => {
    const tx = transaction(txOf('insert all types').xid);
    const relation = tx.find((m) => m.tag === 'relation')!;
    assert.ok(relation.tag === 'relation');
    const rows = tx.filter((m) => m.tag === 'insert').map((m) => named(relation.relation, m.newTuple));
    const byId = new Map(rows.map((r) => [r['id'], r]));
    assert.equal(byId.get('2')!['c_int8'], '-9223372036854775808');
    assert.equal(byId.get('3')!['c_int8'], '9223372036854775807');
    assert.equal(byId.get('5')!['c_numeric'], '1234567890123456789012345678901234567890.0123456789');
    assert.equal(byId.get('6')!['c_numeric'], '0.000');
    assert.equal(byId.get('6')!['c_float8'], '-0');
    assert.equal(byId.get('5')!['c_float4'], '3.4028235e+38');
    assert.equal(byId.get('1')!['c_bool'], 't');
    assert.equal(byId.get('2')!['c_bool'], 'f');
    assert.equal(byId.get('1')!['c_bytea'], '\\x0001ff');
    assert.equal(byId.get('2')!['c_bytea'], '\\x');
  });

  it('bool is the one type whose ::text differs from its output function', () => {
    assert.ok(fixture.castDifferences.length > 0);
    for (const d of fixture.castDifferences) {
      assert.equal(d.column, 'c_bool');
      assert.equal(d.cast, d.output === 't' ? 'true' : 'false');
    }
  });

  it('emits a Relation before a table’s first change and again only when it changes', () => {
    const byTable = new Map<string, Relation[]>();
    const firstChange = new Map<number, number>();
    messages.forEach((m, i) => {
      if (m.tag === 'relation') {
        const key = `${m.relation.namespace}.${m.relation.name}`;
        byTable.set(key, [...(byTable.get(key) ?? []), m.relation]);
      } else if ('relationId' in m && !firstChange.has(m.relationId)) {
        firstChange.set(m.relationId, i);
      } else if (m.tag === 'truncate') {
        for (const id of m.relationIds) if (!firstChange.has(id)) firstChange.set(id, i);
      }
    });
    for (const [id, index] of firstChange) {
      const first = messages.findIndex((m) => m.tag === 'relation' && m.relation.relationId === id);
      assert.ok(first >= 0 && first < index, `relation ${id} not described before its first change`);
    }
    // items: described once, then again after ADD COLUMN; all_types: 'd' until its first update shows FULL
    const items = byTable.get('public.items')!;
    assert.equal(items.length, 2);
    assert.deepEqual(
      items[1]!.columns.map((c) => [c.name, c.typeOid, c.isKey]),
      [
        ['id', 20, true],
        ['name', 25, false],
        ['qty', 23, false],
        ['note', 1043, false],
      ],
    );
    assert.equal(items[0]!.relationId, items[1]!.relationId);
    assert.deepEqual(
      byTable.get('public.all_types')!.map((r) => r.replicaIdentity),
      ['d', 'f'],
    );
    assert.deepEqual(
      byTable.get('public.docs_full')!.map((r) => r.replicaIdentity),
      ['d', 'f'],
    );
    assert.deepEqual(
      byTable.get('public.docs')!.map((r) => r.replicaIdentity),
      ['d'],
    );
    const all = byTable.get('public.all_types')![0]!;
    assert.equal(all.columns.length, 21);
    assert.deepEqual(
      all.columns.filter((c) => c.isKey).map((c) => c.name),
      ['id'],
    );
    assert.ok(all.columns.every((c) => c.typeModifier === -1));
    const odd = byTable.get('Odd Schema.Odd "Table", v2')!;
    assert.deepEqual(
      odd[0]!.columns.map((c) => c.name),
      ['Key Col', 'välue'],
    );
    // ids are a stable hash of schema.table: a new decoder gives the same ones
    const again = new Wal2jsonDecoder();
    const ids = fixture.messages.flatMap((raw) =>
      again
        .decode(bytesOf(raw), parseLsn(raw.lsn))
        .flatMap((m) => (m.tag === 'relation' ? [m.relation.relationId] : [])),
    );
    assert.deepEqual(
      ids,
      messages.flatMap((m) => (m.tag === 'relation' ? [m.relation.relationId] : [])),
    );
    assert.equal(new Set([...byTable.values()].map((r) => r[0]!.relationId)).size, byTable.size);
  });

  it('REPLICA IDENTITY DEFAULT: old key only when the key changed, deletes carry the key', () => {
    const tx = transaction(txOf('items:').xid);
    const changes = tx.filter((m) => m.tag === 'insert' || m.tag === 'update' || m.tag === 'delete');
    assert.deepEqual(
      changes.map((m) => m.tag),
      ['insert', 'insert', 'update', 'update', 'delete'],
    );
    const [, , keep, move, del] = changes;
    assert.ok(keep?.tag === 'update' && move?.tag === 'update' && del?.tag === 'delete');
    assert.equal(keep.oldKey, undefined);
    assert.equal(keep.oldTuple, undefined);
    assert.deepEqual(keep.newTuple.map(text), ['1', 'one', '11']);
    assert.deepEqual(move.oldKey?.map(text), ['2', null, null]);
    assert.deepEqual(move.newTuple.map(text), ['20', 'two', null]);
    assert.deepEqual(del.oldKey?.map(text), ['1', null, null]);
    assert.equal(del.oldTuple, undefined);
  });

  it('REPLICA IDENTITY USING INDEX: the index columns are the key', () => {
    const tx = transaction(txOf('by_index').xid);
    assert.deepEqual(
      tx.map((m) => m.tag),
      ['begin', 'relation', 'insert', 'insert', 'relation', 'update', 'update', 'delete', 'commit'],
    );
    const [, first, , , second, keep, move, del] = tx;
    assert.ok(first?.tag === 'relation' && second?.tag === 'relation');
    // an insert cannot show the identity: 'd' with the primary key until the first update
    assert.equal(first.relation.replicaIdentity, 'd');
    assert.equal(second.relation.replicaIdentity, 'i');
    assert.deepEqual(
      second.relation.columns.map((c) => [c.name, c.isKey]),
      [
        ['id', false],
        ['u', true],
        ['v', false],
      ],
    );
    assert.ok(keep?.tag === 'update' && move?.tag === 'update' && del?.tag === 'delete');
    assert.equal(keep.oldKey, undefined);
    assert.deepEqual(move.oldKey?.map(text), [null, '10', null]);
    assert.deepEqual(move.newTuple.map(text), ['1', '11', 'c']);
    assert.deepEqual(del.oldKey?.map(text), [null, '20', null]);
  });

  it('REPLICA IDENTITY FULL: whole old rows, every column in the key (as pgoutput)', () => {
    // the last relation sent for all_types
    const relation = [...relations.values()].find((r) => r.name === 'all_types')!;
    assert.equal(relation.replicaIdentity, 'f');
    assert.ok(relation.columns.every((c) => c.isKey));
    const tx = transaction(txOf('delete all types').xid);
    const deletes = tx.filter((m) => m.tag === 'delete');
    assert.equal(deletes.length, 2);
    for (const d of deletes) {
      assert.ok(d.tag === 'delete' && d.oldTuple && !d.oldKey);
      assert.equal(d.oldTuple.length, 21);
    }
  });

  it('maps columns an update omitted (unchanged TOAST) to unchanged-toast', () => {
    const tx = transaction(txOf('docs: update').xid);
    const updates = tx.filter((m) => m.tag === 'update');
    assert.equal(updates.length, 2);
    const [docs, docsFull] = updates;
    assert.ok(docs?.tag === 'update' && docsFull?.tag === 'update');
    assert.deepEqual(docs.newTuple.map(text), ['1', 'new title', '<unchanged-toast>']);
    assert.equal(docs.oldKey, undefined);
    assert.deepEqual(docsFull.newTuple.map(text), ['1', 'new title', '<unchanged-toast>']);
    // FULL: the old row is flattened, the TOASTed value is there
    assert.deepEqual(docsFull.oldTuple?.map(text), ['1', 'title', 'abcdefghij'.repeat(1000)]);
  });

  it('truncate: one message per table, options lost', () => {
    const tx = transaction(txOf('truncate').xid);
    const truncates = tx.filter((m) => m.tag === 'truncate');
    assert.equal(truncates.length, 2);
    const names = truncates.map((m) => {
      assert.ok(m.tag === 'truncate' && m.options === 0 && m.relationIds.length === 1);
      return relations.get(m.relationIds[0]!)?.name;
    });
    assert.deepEqual(names, ['items', 'docs']);
  });

  it('logical messages: transactional flag, prefix, exact content bytes (up to a NUL)', () => {
    const found = messages.filter((m) => m.tag === 'message');
    assert.equal(found.length, 3);
    const [nonTx, tx, binary] = found;
    assert.ok(nonTx?.tag === 'message' && tx?.tag === 'message' && binary?.tag === 'message');
    assert.equal(nonTx.flags, 0);
    assert.equal(nonTx.prefix, 'slotlake-nt');
    assert.deepEqual(nonTx.content, encoder.encode('non-transactional'));
    assert.equal(tx.flags, 1);
    assert.equal(tx.prefix, 'slotlake');
    assert.deepEqual(tx.content, encoder.encode('{"hello": "wörld"}'));
    // '\xc3a9ff0041': wal2json copies the bytes raw, so the payload is not UTF-8, and stops at the NUL
    assert.equal(binary.prefix, 'bin');
    assert.deepEqual([...binary.content], [0xc3, 0xa9, 0xff]);
    // a non-transactional message sits outside any Begin/Commit
    const index = messages.indexOf(nonTx);
    assert.equal(messages[index + 1]?.tag, 'begin');
  });

  it('wal2json drops updates and deletes of a table without replica identity', () => {
    const tx = transaction(txOf('table without a key').xid);
    assert.deepEqual(
      tx.map((m) => m.tag),
      ['begin', 'relation', 'insert', 'commit'],
    );
  });
});

const walStart = lsn(0x1_0000_0000n);
const decodeOne = (value: unknown, decoder = new Wal2jsonDecoder(), at = walStart) =>
  decoder.decode(encoder.encode(typeof value === 'string' ? value : JSON.stringify(value)), at);

const insert = (
  table: string,
  columns: { name: string; typeoid: number; value: unknown }[],
  pk = ['id'],
) => ({
  action: 'I',
  schema: 'public',
  table,
  columns: columns.map((c) => ({ ...c, type: 'x' })),
  pk: columns
    .filter((c) => pk.includes(c.name))
    .map((c) => ({ name: c.name, type: 'x', typeoid: c.typeoid })),
});

describe('wal2json decoder rules', () => {
  it('parses timestamps in any offset, with or without fraction, BC', () => {
    const unix = (ms: number) => BigInt(ms) * 1000n - 946_684_800_000_000n;
    assert.equal(parseWal2jsonTimestamp('2000-01-01 00:00:00+00'), 0n);
    assert.equal(
      parseWal2jsonTimestamp('2024-01-02 03:04:05.123456+00'),
      unix(Date.UTC(2024, 0, 2, 3, 4, 5)) + 123_456n,
    );
    assert.equal(
      parseWal2jsonTimestamp('2024-01-02 03:04:05.5+00'),
      unix(Date.UTC(2024, 0, 2, 3, 4, 5, 500)),
    );
    assert.equal(parseWal2jsonTimestamp('2024-01-02 08:34:05+05:30'), unix(Date.UTC(2024, 0, 2, 3, 4, 5)));
    assert.equal(parseWal2jsonTimestamp('2024-01-01 19:04:05-08'), unix(Date.UTC(2024, 0, 2, 3, 4, 5)));
    assert.equal(
      parseWal2jsonTimestamp('1883-11-18 11:59:59-04:56:02'),
      unix(Date.UTC(1883, 10, 18, 16, 56, 1)),
    );
    assert.equal(parseWal2jsonTimestamp('2024-02-29 00:00:00+00'), unix(Date.UTC(2024, 1, 29)));
    const yearZero = new Date(0);
    yearZero.setUTCFullYear(0, 0, 1); // astronomical year 0 = 1 BC
    assert.equal(parseWal2jsonTimestamp('0001-01-01 00:00:00+00 BC'), unix(yearZero.getTime()));
    for (const bad of [
      '2023-02-29 00:00:00+00',
      '2024-13-01 00:00:00+00',
      '2024-01-01T00:00:00Z',
      'infinity',
      '',
    ]) {
      assert.equal(parseWal2jsonTimestamp(bad), undefined, bad);
    }
  });

  it('Commit.endLsn falls back to walStart, Message.lsn too', () => {
    const [commit] = decodeOne({ action: 'C', timestamp: '2000-01-01 00:00:00+00', lsn: '0/10' });
    assert.ok(commit?.tag === 'commit');
    assert.equal(commit.commitLsn, 0x10n);
    assert.equal(commit.endLsn, walStart);
    const [message] = decodeOne({ action: 'M', transactional: false, prefix: 'p', content: 'c', xid: null });
    assert.ok(message?.tag === 'message');
    assert.equal(message.lsn, walStart);
  });

  it('describes a truncated table it has never seen without columns', () => {
    const out = decodeOne({ action: 'T', xid: 1, schema: 's', table: 't' });
    assert.deepEqual(
      out.map((m) => m.tag),
      ['relation', 'truncate'],
    );
    assert.ok(out[0]?.tag === 'relation' && out[1]?.tag === 'truncate');
    assert.deepEqual(out[0].relation.columns, []);
    assert.deepEqual(out[1].relationIds, [out[0].relation.relationId]);
  });

  it('reads type OIDs above 2^31 that wal2json prints signed', () => {
    const [relation] = decodeOne(insert('t', [{ name: 'id', typeoid: -2147483000, value: 'x' }]));
    assert.ok(relation?.tag === 'relation');
    assert.equal(relation.relation.columns[0]!.typeOid, 2 ** 32 - 2147483000);
  });

  it('an update missing a fixed-length column is a schema change, not unchanged TOAST', () => {
    const decoder = new Wal2jsonDecoder();
    const cols = [
      { name: 'id', typeoid: 23, value: 1 },
      { name: 'n', typeoid: 23, value: 2 },
      { name: 'body', typeoid: 25, value: 'b' },
    ];
    decodeOne(insert('t', cols), decoder);
    const update = (columns: typeof cols) => ({
      ...insert('t', columns),
      action: 'U',
      identity: [{ name: 'id', type: 'x', typeoid: 23, value: 1 }],
    });
    const toast = decodeOne(update([cols[0]!, cols[1]!]), decoder);
    assert.deepEqual(
      toast.map((m) => m.tag),
      ['update'],
    );
    assert.ok(toast[0]?.tag === 'update');
    assert.deepEqual(toast[0].newTuple.map(text), ['1', '2', '<unchanged-toast>']);
    const dropped = decodeOne(update([cols[0]!, cols[2]!]), decoder);
    assert.deepEqual(
      dropped.map((m) => m.tag),
      ['relation', 'update'],
    );
    assert.ok(dropped[0]?.tag === 'relation' && dropped[1]?.tag === 'update');
    assert.deepEqual(
      dropped[0].relation.columns.map((c) => c.name),
      ['id', 'body'],
    );
    assert.deepEqual(dropped[1].newTuple.map(text), ['1', 'b']);
  });

  it('builds add-tables and the START_REPLICATION option list', () => {
    assert.equal(wal2jsonTableName({ schema: 'public', table: 'a' }), 'public.a');
    assert.equal(wal2jsonTableName({ schema: 'my schema', table: 'a.b,c*' }), 'my\\ schema.a\\.b\\,c\\*');
    assert.equal(
      wal2jsonStartReplicationOptions(),
      `"format-version" '2', "include-xids" '1', "include-timestamp" '1', "include-lsn" '1', ` +
        `"include-type-oids" '1', "include-types" '1', "include-typmod" '0', "include-pk" '1', ` +
        `"include-transaction" '1', "actions" 'insert,update,delete,truncate'`,
    );
    assert.ok(
      wal2jsonStartReplicationOptions([
        { schema: 'public', table: 'a' },
        { schema: 'public', table: "it's" },
      ]).endsWith(`, "add-tables" 'public.a,public.it''s'`),
    );
  });

  const malformed: [string, unknown][] = [
    ['empty', ''],
    ['not JSON', 'hello'],
    ['truncated JSON', '{"action":"B","xid":1'],
    ['an array', '[]'],
    ['a number', '42'],
    ['no action', {}],
    ['unknown action', { action: 'X' }],
    ['B without lsn', { action: 'B', xid: 1, timestamp: '2000-01-01 00:00:00+00' }],
    ['B with a bad lsn', { action: 'B', xid: 1, timestamp: '2000-01-01 00:00:00+00', lsn: '0/XYZ' }],
    ['B with a bad timestamp', { action: 'B', xid: 1, timestamp: 'yesterday', lsn: '0/1' }],
    ['B with a string xid', { action: 'B', xid: '1', timestamp: '2000-01-01 00:00:00+00', lsn: '0/1' }],
    ['B with a negative xid', { action: 'B', xid: -1, timestamp: '2000-01-01 00:00:00+00', lsn: '0/1' }],
    ['B with a fractional xid', { action: 'B', xid: 1.5, timestamp: '2000-01-01 00:00:00+00', lsn: '0/1' }],
    ['C without timestamp', { action: 'C', lsn: '0/1' }],
    ['I without columns', { action: 'I', schema: 's', table: 't', pk: [] }],
    ['I without pk', { action: 'I', schema: 's', table: 't', columns: [] }],
    ['I without table', { action: 'I', schema: 's', columns: [], pk: [] }],
    [
      'I column without value',
      { action: 'I', schema: 's', table: 't', columns: [{ name: 'a', typeoid: 23 }], pk: [] },
    ],
    [
      'I column without typeoid',
      { action: 'I', schema: 's', table: 't', columns: [{ name: 'a', value: 1 }], pk: [] },
    ],
    [
      'I column with an object value',
      { action: 'I', schema: 's', table: 't', columns: [{ name: 'a', typeoid: 114, value: {} }], pk: [] },
    ],
    [
      'I bytea not hex (bytea_output=escape)',
      {
        action: 'I',
        schema: 's',
        table: 't',
        columns: [{ name: 'a', typeoid: 17, value: '00\\377' }],
        pk: [],
      },
    ],
    ['D without identity', { action: 'D', schema: 's', table: 't', pk: [] }],
    ['M without content', { action: 'M', transactional: true, prefix: 'p' }],
    ['M with a string flag', { action: 'M', transactional: 'yes', prefix: 'p', content: '' }],
    ['T without schema', { action: 'T', table: 't' }],
  ];
  for (const [name, value] of malformed) {
    it(`rejects ${name} with DecodeError`, () => {
      assert.throws(() => decodeOne(value), DecodeError);
    });
  }

  it('rejects a non-UTF-8 payload that is not a logical message', () => {
    const bytes = new Uint8Array([
      ...encoder.encode('{"action":"T","schema":"'),
      0xff,
      ...encoder.encode('","table":"t"}'),
    ]);
    assert.throws(() => new Wal2jsonDecoder().decode(bytes, walStart), DecodeError);
  });

  it('never throws anything but DecodeError (property)', () => {
    const check = (bytes: Uint8Array) => {
      try {
        new Wal2jsonDecoder().decode(bytes, walStart);
      } catch (error) {
        if (!(error instanceof DecodeError)) throw error;
      }
    };
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => check(bytes)),
      { numRuns: 500 },
    );
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 200 }), (s) => check(encoder.encode(s))),
      { numRuns: 500 },
    );
    const column = fc.record(
      { name: fc.string(), typeoid: fc.oneof(fc.integer(), fc.string()), value: fc.jsonValue() },
      { requiredKeys: [] },
    );
    const payload = fc.record(
      {
        action: fc.constantFrom('B', 'C', 'I', 'U', 'D', 'T', 'M', 'Z'),
        xid: fc.oneof(fc.integer(), fc.constant(null), fc.string()),
        lsn: fc.oneof(fc.constant('0/1'), fc.string()),
        nextlsn: fc.oneof(fc.constant('1/0'), fc.string()),
        timestamp: fc.oneof(fc.constant('2024-01-02 03:04:05+00'), fc.string()),
        schema: fc.string(),
        table: fc.string(),
        columns: fc.oneof(fc.array(column, { maxLength: 4 }), fc.jsonValue()),
        identity: fc.oneof(fc.array(column, { maxLength: 4 }), fc.jsonValue()),
        pk: fc.oneof(fc.array(column, { maxLength: 2 }), fc.jsonValue()),
        transactional: fc.oneof(fc.boolean(), fc.jsonValue()),
        prefix: fc.oneof(fc.string(), fc.jsonValue()),
        content: fc.oneof(fc.string(), fc.jsonValue()),
      },
      { requiredKeys: ['action'] },
    );
    // one decoder across the whole sequence, so relation state is exercised too
    fc.assert(
      fc.property(fc.array(payload, { maxLength: 8 }), (list) => {
        const decoder = new Wal2jsonDecoder();
        for (const p of list) {
          try {
            decoder.decode(encoder.encode(JSON.stringify(p)), walStart);
          } catch (error) {
            if (!(error instanceof DecodeError)) throw error;
          }
        }
      }),
      { numRuns: 500 },
    );
    // real payloads, cut and with one byte changed
    const real = fixture.messages.map(bytesOf);
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: real.length - 1 }),
        fc.nat(),
        fc.nat(),
        fc.integer({ min: 0, max: 255 }),
        (which, cut, at, byte) => {
          const original = real[which]!;
          const bytes = original.slice(0, cut % (original.length + 1));
          if (bytes.length > 0) bytes[at % bytes.length] = byte;
          check(bytes);
        },
      ),
      { numRuns: 1000 },
    );
  });
});

describe('wal2json decoder with table definitions from the catalog', () => {
  const table = { schema: 'public', table: 'docs' };
  const column = (
    name: string,
    typeOid: number,
    extra: Partial<ColumnDefinition> = {},
  ): ColumnDefinition => ({
    name,
    typeOid,
    typeModifier: -1,
    isKey: false,
    generated: false,
    toastable: typeOid !== 20 && typeOid !== 23, // the fixed-length types used here: int8, int4
    ...extra,
  });
  /** docs (id int8 PRIMARY KEY, n numeric(12,4), twice int GENERATED ALWAYS AS (…) STORED, body text) */
  const docs: TableDefinition = {
    replicaIdentity: 'd',
    columns: [
      column('id', 20, { isKey: true }),
      column('n', 1700, { typeModifier: ((12 << 16) | 4) + 4 }),
      column('twice', 23, { generated: true }),
      column('body', 25),
    ],
  };
  const value = (name: string, typeoid: number, v: unknown) => ({ name, type: 'x', typeoid, value: v });
  const pk = [{ name: 'id', type: 'x', typeoid: 20 }];
  const row = (id: number, n: string, body?: string) => [
    value('id', 20, id),
    value('n', 1700, n),
    value('twice', 23, id * 2),
    ...(body === undefined ? [] : [value('body', 25, body)]),
  ];
  const change = (action: string, fields: Record<string, unknown>) =>
    encoder.encode(JSON.stringify({ action, schema: 'public', table: 'docs', pk, ...fields }));

  /** The session's hand-off: parse, learn the definition when wanted, decode. Returns what was asked. */
  function feed(
    decoder: Wal2jsonDecoder,
    bytes: Uint8Array,
    catalog: () => TableDefinition | undefined,
  ): { asked: boolean; out: LogicalMessage[] } {
    const payload = decoder.parse(bytes);
    const wanted = decoder.definitionWanted(payload);
    if (wanted) {
      assert.deepEqual(wanted, table);
      decoder.learnDefinition(wanted, catalog());
    }
    return { asked: wanted !== undefined, out: decoder.decodePayload(payload, walStart) };
  }

  it('a table first met through an update that left a TOASTed value unchanged: unchanged-toast, not a missing column', () => {
    const update = change('U', { columns: row(1, '2.5000'), identity: [value('id', 20, 1)] });
    // without the catalog the update shows only what it sent
    const [bare] = new Wal2jsonDecoder().decode(update, walStart);
    assert.ok(bare?.tag === 'relation');
    assert.deepEqual(
      bare.relation.columns.map((c) => c.name),
      ['id', 'n', 'twice'],
    );
    const decoder = new Wal2jsonDecoder();
    const { asked, out } = feed(decoder, update, () => docs);
    assert.ok(asked);
    assert.deepEqual(
      out.map((m) => m.tag),
      ['relation', 'update'],
    );
    assert.ok(out[0]?.tag === 'relation' && out[1]?.tag === 'update');
    // as pgoutput describes it: generated column left out, typmods and key flags from the catalog
    assert.deepEqual(out[0].relation.columns, [
      { isKey: true, name: 'id', typeOid: 20, typeModifier: -1 },
      { isKey: false, name: 'n', typeOid: 1700, typeModifier: ((12 << 16) | 4) + 4 },
      { isKey: false, name: 'body', typeOid: 25, typeModifier: -1 },
    ]);
    assert.equal(out[0].relation.replicaIdentity, 'd');
    assert.deepEqual(out[1].newTuple.map(text), ['1', '2.5000', '<unchanged-toast>']);
    assert.equal(out[1].oldKey, undefined);
    // the next changes fit: no second catalog read, no new relation
    const insert = feed(decoder, change('I', { columns: row(2, '1.0000', 'b') }), () => assert.fail('asked'));
    assert.deepEqual(
      insert.out.map((m) => m.tag),
      ['insert'],
    );
    assert.ok(insert.out[0]?.tag === 'insert');
    assert.deepEqual(insert.out[0].newTuple.map(text), ['2', '1.0000', 'b']);
    const removal = feed(decoder, change('D', { identity: [value('id', 20, 2)] }), () =>
      assert.fail('asked'),
    );
    assert.ok(removal.out[0]?.tag === 'delete');
    assert.deepEqual(removal.out[0].oldKey?.map(text), ['2', null, null]);
  });

  it('a truncate first: described with the catalog’s columns', () => {
    const decoder = new Wal2jsonDecoder();
    const { out } = feed(decoder, encoder.encode(JSON.stringify({ action: 'T', ...table })), () => docs);
    assert.ok(out[0]?.tag === 'relation' && out[1]?.tag === 'truncate');
    assert.deepEqual(
      out[0].relation.columns.map((c) => c.name),
      ['id', 'n', 'body'],
    );
  });

  it('REPLICA IDENTITY FULL: the old row is complete, the new one marks the unchanged value', () => {
    const full: TableDefinition = {
      replicaIdentity: 'f',
      columns: docs.columns.map((c) => ({ ...c, isKey: true })),
    };
    const decoder = new Wal2jsonDecoder();
    const { out } = feed(
      decoder,
      change('U', { columns: row(1, '3.0000'), identity: row(1, '2.0000', 'long') }),
      () => full,
    );
    assert.ok(out[0]?.tag === 'relation' && out[1]?.tag === 'update');
    assert.equal(out[0].relation.replicaIdentity, 'f');
    assert.ok(out[0].relation.columns.every((c) => c.isKey));
    assert.deepEqual(out[1].oldTuple?.map(text), ['1', '2.0000', 'long']);
    assert.deepEqual(out[1].newTuple.map(text), ['1', '3.0000', '<unchanged-toast>']);
  });

  it('a schema change asks again and takes the new definition', () => {
    const decoder = new Wal2jsonDecoder();
    feed(decoder, change('I', { columns: row(1, '1.0000', 'a') }), () => docs);
    const added: TableDefinition = { ...docs, columns: [...docs.columns, column('tags', 1009)] };
    const { asked, out } = feed(
      decoder,
      change('I', { columns: [...row(2, '1.0000', 'b'), value('tags', 1009, '{x}')] }),
      () => added,
    );
    assert.ok(asked);
    assert.ok(out[0]?.tag === 'relation' && out[1]?.tag === 'insert');
    assert.deepEqual(
      out[0].relation.columns.map((c) => c.name),
      ['id', 'n', 'body', 'tags'],
    );
    assert.deepEqual(out[1].newTuple.map(text), ['2', '1.0000', 'b', '{x}']);
  });

  it('a definition the message does not fit (the catalog moved on) is set aside, once per shape', () => {
    const decoder = new Wal2jsonDecoder();
    const later: TableDefinition = { ...docs, columns: [...docs.columns, column('added', 23)] };
    let reads = 0;
    const catalog = () => (reads++, later);
    const first = feed(decoder, change('I', { columns: row(1, '1.0000', 'a') }), catalog);
    assert.ok(first.out[0]?.tag === 'relation' && first.out[1]?.tag === 'insert');
    assert.deepEqual(
      first.out[0].relation.columns.map((c) => c.name),
      ['id', 'n', 'twice', 'body'],
    );
    assert.deepEqual(first.out[1].newTuple.map(text), ['1', '1.0000', '2', 'a']);
    for (let id = 2; id < 5; id++) {
      const next = feed(decoder, change('I', { columns: row(id, '1.0000', 'a') }), catalog);
      assert.deepEqual(
        next.out.map((m) => m.tag),
        ['insert'],
      );
    }
    assert.equal(reads, 1);
    // the table catches up with the catalog: asked again, the definition fits now
    const caught = feed(
      decoder,
      change('I', { columns: [...row(5, '1.0000', 'e'), value('added', 23, 7)] }),
      catalog,
    );
    assert.equal(reads, 2);
    assert.ok(caught.out[0]?.tag === 'relation');
    assert.deepEqual(
      caught.out[0].relation.columns.map((c) => c.name),
      ['id', 'n', 'body', 'added'],
    );
  });

  it('a replica identity changed since the change was written: the identity from the message, the columns from the catalog', () => {
    // the catalog says DEFAULT now; the delete was written under FULL
    const decoder = new Wal2jsonDecoder();
    const { out } = feed(decoder, change('D', { identity: row(1, '1.0000', 'a') }), () => docs);
    assert.ok(out[0]?.tag === 'relation' && out[1]?.tag === 'delete');
    assert.equal(out[0].relation.replicaIdentity, 'f');
    assert.deepEqual(
      out[0].relation.columns.map((c) => [c.name, c.typeModifier, c.isKey]),
      [
        ['id', -1, true],
        ['n', ((12 << 16) | 4) + 4, true],
        ['body', -1, true],
      ],
    );
    assert.deepEqual(out[1].oldTuple?.map(text), ['1', '1.0000', 'a']);
    // the catalog says FULL now; the update was written under DEFAULT and left body unchanged
    const full: TableDefinition = {
      replicaIdentity: 'f',
      columns: docs.columns.map((c) => ({ ...c, isKey: true })),
    };
    const other = new Wal2jsonDecoder();
    const update = feed(
      other,
      change('U', { columns: row(1, '2.0000'), identity: [value('id', 20, 1)] }),
      () => full,
    );
    assert.ok(update.out[0]?.tag === 'relation' && update.out[1]?.tag === 'update');
    assert.equal(update.out[0].relation.replicaIdentity, 'd');
    assert.deepEqual(
      update.out[0].relation.columns.map((c) => [c.name, c.isKey]),
      [
        ['id', true],
        ['n', false],
        ['body', false],
      ],
    );
    assert.deepEqual(update.out[1].newTuple.map(text), ['1', '2.0000', '<unchanged-toast>']);
    // further changes under that identity fit: the catalog is not asked again
    const next = feed(other, change('U', { columns: row(1, '3.0000'), identity: [value('id', 20, 1)] }), () =>
      assert.fail('asked'),
    );
    assert.deepEqual(
      next.out.map((m) => m.tag),
      ['update'],
    );
  });

  it('a table the catalog no longer has: columns from the messages, asked once', () => {
    const decoder = new Wal2jsonDecoder();
    let reads = 0;
    const gone = () => (reads++, undefined);
    const first = feed(decoder, change('I', { columns: row(1, '1.0000', 'a') }), gone);
    assert.ok(first.out[0]?.tag === 'relation');
    feed(decoder, change('I', { columns: row(2, '1.0000', 'b') }), gone);
    assert.equal(reads, 1);
  });
});
