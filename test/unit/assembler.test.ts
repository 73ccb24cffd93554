/**
 * The transaction assembler (pipeline/assembler.ts) against the real captured pgoutput streams
 * (test/fixtures/pgoutput, decoded by PgoutputDecoder) and synthetic messages for what the captures lack.
 *
 * The fixtures carry the plugin's messages but not the XLogData frames around them, so each message is
 * given a WAL position here: inside a transaction, positions just below its commit LSN, in stream order;
 * outside, the end of the previous transaction. The assertions check what the assembler derives from the
 * stream — seq numbering, which changes are new, the durable position — against an account computed from
 * the decoded messages themselves, never against raw LSNs. A property test cuts a stream into runs at
 * arbitrary points, with batch commits and idle keepalives in between, and checks that every change is
 * handed out exactly once and that no checkpoint ever moves back.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import type { PartialTransaction } from '../../src/checkpoint/store.js';
import type { LogicalMessage, Relation } from '../../src/decoding/messages.js';
import { PgoutputDecoder } from '../../src/decoding/pgoutput.js';
import { DecodeError, SlotlakeError } from '../../src/errors.js';
import { formatLsn, lsn, ZERO_LSN, type Lsn } from '../../src/lsn.js';
import {
  TransactionAssembler,
  type AssemblerEvent,
  type Change,
  type DurablePosition,
  type ResumePosition,
} from '../../src/pipeline/assembler.js';
import { fromHex, loadPgoutputFixture, type PgoutputFixtureName } from '../helpers/bytes.js';

/** A commit event without its commit LSN (the fixtures' LSNs are checked elsewhere). */
function withoutCommitLsn(event: unknown): unknown {
  if (event && typeof event === 'object' && (event as { kind?: string }).kind === 'commit') {
    const { commitLsn: _commitLsn, ...rest } = event as Record<string, unknown>;
    return rest;
  }
  return event;
}

type Of<T extends LogicalMessage['tag']> = Extract<LogicalMessage, { tag: T }>;

/** One message of a stream with the WAL position of its (synthetic) XLogData frame. */
interface StreamEntry {
  readonly message: LogicalMessage;
  readonly walStart: Lsn;
}

/** One transaction of a stream, as the test counts it from the decoded messages. */
interface TransactionAccount {
  /** Index of its Begin and Commit in the stream. */
  readonly beginAt: number;
  readonly commitAt: number;
  readonly commitLsn: Lsn;
  readonly endLsn: Lsn;
  /** The relation id of each change, by seq (a truncate contributes one per table). */
  readonly relationIds: readonly number[];
}

interface Stream {
  readonly entries: readonly StreamEntry[];
  readonly transactions: readonly TransactionAccount[];
}

function decode(name: PgoutputFixtureName): LogicalMessage[] {
  const fixture = loadPgoutputFixture(name);
  const decoder = new PgoutputDecoder({
    protocolVersion: fixture.protocolVersion,
    parallelStreaming: fixture.parallelStreaming,
  });
  return fixture.messages.map(({ hex }) => decoder.decode(fromHex(hex)));
}

function changeRelations(message: LogicalMessage): number[] {
  switch (message.tag) {
    case 'insert':
    case 'update':
    case 'delete':
      return [message.relationId];
    case 'truncate':
      return [...message.relationIds];
    default:
      return [];
  }
}

/** Positions the messages and counts the transactions (a non-streamed stream only). */
function streamOf(messages: readonly LogicalMessage[]): Stream {
  const transactions: TransactionAccount[] = [];
  const walStarts: Lsn[] = [];
  let open: { beginAt: number; begin: Of<'begin'>; relationIds: number[] } | undefined;
  let lastEnd = ZERO_LSN;
  messages.forEach((message, index) => {
    if (message.tag === 'begin') {
      assert.equal(open, undefined, 'the capture nests transactions');
      open = { beginAt: index, begin: message, relationIds: [] };
    } else if (message.tag === 'commit') {
      assert.ok(open, 'the capture commits outside a transaction');
      assert.equal(message.commitLsn, open.begin.finalLsn);
      transactions.push({
        beginAt: open.beginAt,
        commitAt: index,
        commitLsn: message.commitLsn,
        endLsn: message.endLsn,
        relationIds: open.relationIds,
      });
      open = undefined;
    } else if (open) open.relationIds.push(...changeRelations(message));
    walStarts.push(lastEnd);
    if (message.tag === 'commit') lastEnd = message.endLsn;
  });
  assert.equal(open, undefined, 'the capture ends inside a transaction');
  // Inside a transaction: positions just below its commit LSN, increasing in stream order.
  for (const txn of transactions)
    for (let index = txn.beginAt; index <= txn.commitAt; index++)
      walStarts[index] = lsn(txn.commitLsn - BigInt(txn.commitAt - index));
  return {
    entries: messages.map((message, index) => ({ message, walStart: walStarts[index]! })),
    transactions,
  };
}

const BASIC = streamOf(decode('basic'));
const BINARY = streamOf(decode('binary'));

function txnAt(stream: Stream, index: number): TransactionAccount {
  const txn = stream.transactions[index];
  assert.ok(txn, `no transaction ${index}`);
  return txn;
}

function firstTransaction(stream: Stream, what: string, test: (txn: TransactionAccount) => boolean) {
  const index = stream.transactions.findIndex(test);
  assert.ok(index >= 0, `the fixture has no transaction with ${what}`);
  return { index, txn: stream.transactions[index]! };
}

const key = (commitLsn: Lsn, seq: number): string => `${formatLsn(commitLsn)}#${seq}`;

/** Every change the stream should yield, as `commitLsn#seq`. */
function expectedKeys(stream: Stream): string[] {
  return stream.transactions.flatMap((txn) => txn.relationIds.map((_, seq) => key(txn.commitLsn, seq)));
}

function changesOf(event: AssemblerEvent): readonly Change[] {
  return event.kind === 'changes' ? event.changes : [];
}

/** Feeds `entries[from..to)` and returns every event with the message it answered. */
function feed(assembler: TransactionAssembler, stream: Stream, from = 0, to = stream.entries.length) {
  const events: { index: number; event: AssemblerEvent }[] = [];
  for (let index = from; index < to; index++) {
    const entry = stream.entries[index]!;
    events.push({ index, event: assembler.accept(entry.message, entry.walStart) });
  }
  return events;
}

function allChanges(events: readonly { event: AssemblerEvent }[]): Change[] {
  return events.flatMap(({ event }) => changesOf(event));
}

/** The relation messages a new session would resend before `index`: the latest of each relation. */
function relationsBefore(stream: Stream, index: number): Of<'relation'>[] {
  const latest = new Map<number, Of<'relation'>>();
  for (const { message } of stream.entries.slice(0, index))
    if (message.tag === 'relation') latest.set(message.relation.relationId, message);
  return [...latest.values()];
}

/**
 * Progress order of durable positions: the LSN, then a partial transaction (none < some), its commit LSN,
 * its next seq. A checkpoint must never move back in this order.
 */
function comparePositions(a: DurablePosition, b: DurablePosition): number {
  if (a.lsn !== b.lsn) return a.lsn < b.lsn ? -1 : 1;
  if (a.partial === undefined || b.partial === undefined)
    return (a.partial === undefined ? 0 : 1) - (b.partial === undefined ? 0 : 1);
  if (a.partial.commitLsn !== b.partial.commitLsn) return a.partial.commitLsn < b.partial.commitLsn ? -1 : 1;
  return a.partial.nextSeq - b.partial.nextSeq;
}

function describePosition(position: DurablePosition): string {
  return position.partial
    ? `${formatLsn(position.lsn)} + ${formatLsn(position.partial.commitLsn)}#${position.partial.nextSeq}`
    : formatLsn(position.lsn);
}

function assertNotBack(previous: DurablePosition, next: DurablePosition, where: string): void {
  assert.ok(
    comparePositions(previous, next) <= 0,
    `${where}: the durable position moved back from ${describePosition(previous)} to ${describePosition(next)}`,
  );
}

const start = (position: Lsn = ZERO_LSN, partial?: PartialTransaction): ResumePosition => ({
  lsn: position,
  partial,
});

describe('TransactionAssembler on the captured pgoutput streams', () => {
  for (const [name, stream] of [
    ['basic', BASIC],
    ['binary', BINARY],
  ] as const) {
    it(`${name}: numbers each transaction's changes from 0 and hands each out once, in order`, () => {
      const assembler = new TransactionAssembler(start());
      const events = feed(assembler, stream);
      const changes = allChanges(events);
      assert.deepEqual(
        changes.map((change) => key(change.transaction.commitLsn, change.seq)),
        expectedKeys(stream),
      );
      assert.equal(new Set(changes.map((c) => key(c.transaction.commitLsn, c.seq))).size, changes.length);
      for (const txn of stream.transactions) {
        const ofTxn = changes.filter((change) => change.transaction.commitLsn === txn.commitLsn);
        assert.deepEqual(
          ofTxn.map((change) => change.relation.relation.relationId),
          txn.relationIds,
        );
        for (const change of ofTxn) {
          assert.equal(change.transactionContinues, false, 'nothing was archived before');
          assert.ok(change.lsn < txn.commitLsn, 'a change is the WAL record before its commit');
        }
        const commit = events[txn.commitAt]!.event;
        assert.deepEqual(withoutCommitLsn(commit), {
          kind: 'commit',
          archived: true,
          changes: txn.relationIds.length,
        });
        assert.equal(events[txn.beginAt]!.event.kind, 'begin');
      }
      assert.equal(assembler.inTransaction, false);
      assert.equal(assembler.atRest, true);
      assert.equal(assembler.lastCompleteLsn, stream.transactions.at(-1)!.endLsn);
    });
  }

  it("maps each change's operation and old row as sent (no old row, 'K' old key, 'O' old tuple)", () => {
    const changes = allChanges(feed(new TransactionAssembler(start()), BASIC));
    const updates = changes.filter((change) => change.op === 'u');
    const deletes = changes.filter((change) => change.op === 'd');
    const byTable = (list: Change[], table: string) => list.filter((c) => c.relation.relation.name === table);
    // items: update keeping the key (no old row), then update changing it (old key)
    const [keepsKey, changesKey] = byTable(updates, 'items');
    assert.equal(keepsKey?.before, undefined);
    assert.equal(keepsKey?.beforeIsKey, false);
    assert.ok(changesKey?.before);
    assert.equal(changesKey.beforeIsKey, true);
    // full_items has REPLICA IDENTITY FULL: whole old rows
    const [fullUpdate] = byTable(updates, 'full_items');
    const [fullDelete] = byTable(deletes, 'full_items');
    assert.equal(fullUpdate?.beforeIsKey, false);
    assert.ok(fullUpdate?.before && fullUpdate.after);
    assert.equal(fullDelete?.beforeIsKey, false);
    assert.ok(fullDelete?.before);
    assert.equal(fullDelete.after, undefined);
    const [keyDelete] = byTable(deletes, 'items');
    assert.equal(keyDelete?.beforeIsKey, true);
    assert.equal(keyDelete.after, undefined);
    for (const insert of changes.filter((change) => change.op === 'c')) {
      assert.equal(insert.before, undefined);
      assert.ok(insert.after);
    }
  });

  it('makes a truncate of N tables N changes, one per table, with consecutive seqs', () => {
    const { txn } = firstTransaction(BASIC, 'a two-table truncate', (t) =>
      BASIC.entries
        .slice(t.beginAt, t.commitAt)
        .some(({ message }) => message.tag === 'truncate' && message.relationIds.length === 2),
    );
    const events = feed(new TransactionAssembler(start()), BASIC);
    const truncates = allChanges(events).filter((change) => change.transaction.commitLsn === txn.commitLsn);
    assert.deepEqual(
      truncates.map((change) => [change.op, change.seq, change.relation.relation.name]),
      [
        ['t', 0, 'parent'],
        ['t', 1, 'child'],
      ],
    );
    assert.equal(truncates[0]!.lsn, truncates[1]!.lsn, 'both come from one message');
    assert.deepEqual(withoutCommitLsn(events[txn.commitAt]!.event), {
      kind: 'commit',
      archived: true,
      changes: 2,
    });
  });

  it('gives no seq to origins and logical messages, inside or outside a transaction', () => {
    const { txn } = firstTransaction(BASIC, 'a transactional logical message', (t) =>
      BASIC.entries.slice(t.beginAt, t.commitAt).some(({ message }) => message.tag === 'message'),
    );
    const assembler = new TransactionAssembler(start());
    const events = feed(assembler, BASIC);
    for (const { index, event } of events) {
      const tag = BASIC.entries[index]!.message.tag;
      if (tag === 'message' || tag === 'origin') assert.deepEqual(event, { kind: 'none' });
    }
    assert.equal(txn.relationIds.length, 1);
    assert.deepEqual(withoutCommitLsn(events[txn.commitAt]!.event), {
      kind: 'commit',
      archived: true,
      changes: 1,
    });
  });

  it('reports Type messages with the type they describe', () => {
    const events = feed(new TransactionAssembler(start()), BASIC);
    const types = events.filter(({ event }) => event.kind === 'type');
    assert.equal(types.length, 1);
    const event = types[0]!.event as Extract<AssemblerEvent, { kind: 'type' }>;
    assert.equal(event.type.name, 'mood');
    assert.equal(event.type.namespace, 'public');
  });

  it("dates each change by its transaction's commit time (UTC)", () => {
    const changes = allChanges(feed(new TransactionAssembler(start()), BASIC));
    for (const change of changes) {
      const expected = new Date(Number(change.transaction.commitTimeUnixUs / 1000n)).toISOString();
      assert.equal(change.transaction.dt, expected.slice(0, 10));
    }
  });
});

describe('TransactionAssembler: what is new after a resume', () => {
  it('skips whole transactions committed before the resume LSN: commit not archived, no changes', () => {
    const resumeAfter = txnAt(BASIC, 4);
    const assembler = new TransactionAssembler(start(resumeAfter.endLsn));
    const events = feed(assembler, BASIC);
    for (const [index, txn] of BASIC.transactions.entries()) {
      const commit = events[txn.commitAt]!.event;
      if (index <= 4)
        assert.deepEqual(withoutCommitLsn(commit), {
          kind: 'commit',
          archived: false,
          changes: 0,
        });
      else
        assert.deepEqual(withoutCommitLsn(commit), {
          kind: 'commit',
          archived: true,
          changes: txn.relationIds.length,
        });
    }
    const keys = allChanges(events).map((change) => key(change.transaction.commitLsn, change.seq));
    assert.deepEqual(keys, expectedKeys({ ...BASIC, transactions: BASIC.transactions.slice(5) }));
    // Skipping never moves the durable position below the resume LSN.
    assert.equal(assembler.lastCompleteLsn, BASIC.transactions.at(-1)!.endLsn);
  });

  it('keeps the durable position at the resume LSN while it skips archived transactions', () => {
    const resumeAt = txnAt(BASIC, 3).endLsn;
    const assembler = new TransactionAssembler(start(resumeAt));
    for (const event of feed(assembler, BASIC, 0, txnAt(BASIC, 3).commitAt + 1)) {
      assert.equal(changesOf(event.event).length, 0);
      assert.deepEqual(assembler.durablePosition(), { lsn: resumeAt, partial: undefined });
    }
  });

  it('does not skip a transaction whose commit LSN is the resume LSN itself', () => {
    const txn = txnAt(BASIC, 2);
    const assembler = new TransactionAssembler(start(txn.commitLsn));
    for (const relation of relationsBefore(BASIC, txn.beginAt)) assembler.accept(relation, ZERO_LSN);
    const events = feed(assembler, BASIC, txn.beginAt, txn.commitAt + 1);
    assert.equal(allChanges(events).length, txn.relationIds.length);
    assert.deepEqual(withoutCommitLsn(events.at(-1)!.event), {
      kind: 'commit',
      archived: true,
      changes: 1,
    });
  });

  it('resumes a cut transaction at partial.nextSeq: earlier changes are not handed out, later ones continue', () => {
    const { index, txn } = firstTransaction(BASIC, 'two changes', (t) => t.relationIds.length === 2);
    const previousEnd = index === 0 ? ZERO_LSN : txnAt(BASIC, index - 1).endLsn;
    const partial = { commitLsn: txn.commitLsn, nextSeq: 1 };
    const assembler = new TransactionAssembler(start(previousEnd, partial));
    assert.equal(assembler.atRest, false, 'a cut transaction is pending');
    assert.deepEqual(assembler.durablePosition(), { lsn: previousEnd, partial });
    const events = feed(assembler, BASIC, 0, txn.commitAt);
    const changes = allChanges(events);
    assert.deepEqual(
      changes.map((change) => [change.seq, change.transactionContinues]),
      [[1, true]],
    );
    assert.equal(changes[0]!.transaction.commitLsn, txn.commitLsn);
    assert.deepEqual(assembler.durablePosition(), {
      lsn: previousEnd,
      partial: { commitLsn: txn.commitLsn, nextSeq: 2 },
    });
    const commit = assembler.accept(BASIC.entries[txn.commitAt]!.message, txn.commitLsn);
    assert.deepEqual(withoutCommitLsn(commit), {
      kind: 'commit',
      archived: true,
      changes: 1,
    });
    assert.deepEqual(assembler.durablePosition(), { lsn: txn.endLsn, partial: undefined });
    assert.equal(assembler.atRest, true);
    // The next transactions are whole again.
    const rest = allChanges(feed(assembler, BASIC, txn.commitAt + 1));
    assert.ok(rest.length > 0);
    assert.ok(rest.every((change) => !change.transactionContinues));
    assert.equal(rest[0]!.seq, 0);
  });

  it('hands out nothing of a cut transaction whose every change was archived, and completes it', () => {
    const { index, txn } = firstTransaction(BASIC, 'two changes', (t) => t.relationIds.length === 2);
    const previousEnd = index === 0 ? ZERO_LSN : txnAt(BASIC, index - 1).endLsn;
    const partial = { commitLsn: txn.commitLsn, nextSeq: 2 };
    const assembler = new TransactionAssembler(start(previousEnd, partial));
    const events = feed(assembler, BASIC, txn.beginAt, txn.commitAt);
    assert.equal(allChanges(events).length, 0);
    assert.deepEqual(assembler.durablePosition(), { lsn: previousEnd, partial });
    assert.deepEqual(
      withoutCommitLsn(assembler.accept(BASIC.entries[txn.commitAt]!.message, txn.commitLsn)),
      {
        kind: 'commit',
        archived: true,
        changes: 0,
      },
    );
    assert.deepEqual(assembler.durablePosition(), { lsn: txn.endLsn, partial: undefined });
  });
});

describe('TransactionAssembler.durablePosition', () => {
  const first = txnAt(BASIC, 0);
  const second = txnAt(BASIC, 1);

  it('is the resume position before anything is read', () => {
    const resumeAt = lsn(0x1234n);
    assert.deepEqual(new TransactionAssembler(start(resumeAt)).durablePosition(), {
      lsn: resumeAt,
      partial: undefined,
    });
  });

  it('stays at the last complete transaction inside a transaction before any change is handed out', () => {
    const assembler = new TransactionAssembler(start(lsn(0x10n)));
    feed(assembler, BASIC, 0, first.beginAt + 3); // Begin, Type, Relation
    assert.equal(assembler.inTransaction, true);
    assert.deepEqual(assembler.durablePosition(), { lsn: lsn(0x10n), partial: undefined });
  });

  it('adds the open transaction and its next seq once changes of it were handed out', () => {
    const assembler = new TransactionAssembler(start(lsn(0x10n)));
    const events = feed(assembler, BASIC, 0, first.commitAt); // both inserts, no Commit yet
    assert.equal(allChanges(events).length, 2);
    assert.deepEqual(assembler.durablePosition(), {
      lsn: lsn(0x10n),
      partial: { commitLsn: first.commitLsn, nextSeq: 2 },
    });
    assert.deepEqual(assembler.openTransaction, { commitLsn: first.commitLsn, nextSeq: 2 });
  });

  it('is the end LSN of the last transaction after its Commit', () => {
    const assembler = new TransactionAssembler(start());
    feed(assembler, BASIC, 0, second.commitAt + 1);
    assert.deepEqual(assembler.durablePosition(), { lsn: second.endLsn, partial: undefined });
    assert.equal(assembler.openTransaction, undefined);
  });

  it('keeps a pending cut transaction until it is met, whatever the server says meanwhile', () => {
    const partial = { commitLsn: second.commitLsn, nextSeq: 1 };
    const assembler = new TransactionAssembler(start(first.endLsn, partial));
    assembler.noteServerPosition(lsn(second.commitLsn - 1n));
    assert.deepEqual(assembler.durablePosition(), { lsn: first.endLsn, partial });
    assert.equal(assembler.atRest, false);
  });

  it('moves to the idle server position only at rest, and never back', () => {
    const assembler = new TransactionAssembler(start());
    feed(assembler, BASIC, 0, first.commitAt + 1);
    const idle = lsn(first.endLsn + 8n);
    assembler.noteServerPosition(idle);
    assert.deepEqual(assembler.durablePosition(), { lsn: idle, partial: undefined });
    assembler.noteServerPosition(lsn(first.endLsn + 4n)); // an older keepalive
    assert.deepEqual(assembler.durablePosition(), { lsn: idle, partial: undefined });
    assembler.noteServerPosition(lsn(first.endLsn - 4n)); // below the last commit
    assert.deepEqual(assembler.durablePosition(), { lsn: idle, partial: undefined });
    // Inside a transaction a keepalive says nothing about what is complete.
    feed(assembler, BASIC, second.beginAt, second.beginAt + 1);
    assembler.noteServerPosition(lsn(second.commitLsn - 1n));
    const inside = assembler.durablePosition();
    assert.equal(inside.partial, undefined);
    assertNotBack({ lsn: idle, partial: undefined }, inside, 'after Begin');
    feed(assembler, BASIC, second.beginAt + 1, second.commitAt);
    const afterChange = assembler.durablePosition();
    assert.deepEqual(afterChange.partial, { commitLsn: second.commitLsn, nextSeq: 1 });
    assertNotBack(inside, afterChange, 'after a change');
    feed(assembler, BASIC, second.commitAt, second.commitAt + 1);
    assert.deepEqual(assembler.durablePosition(), { lsn: second.endLsn, partial: undefined });
  });

  it('ignores an idle position at or below the last complete transaction', () => {
    const assembler = new TransactionAssembler(start());
    feed(assembler, BASIC, 0, first.commitAt + 1);
    assembler.noteServerPosition(first.commitLsn);
    assert.deepEqual(assembler.durablePosition(), { lsn: first.endLsn, partial: undefined });
  });

  it('never moves back across a whole stream with keepalives between transactions and batch cuts', () => {
    const assembler = new TransactionAssembler(start());
    let previous = assembler.durablePosition();
    for (const [index, entry] of BASIC.entries.entries()) {
      assembler.accept(entry.message, entry.walStart);
      if (!assembler.inTransaction) {
        const next = BASIC.transactions.find((txn) => txn.beginAt > index);
        if (next) assembler.noteServerPosition(next.commitLsn);
      }
      const position = assembler.durablePosition();
      assertNotBack(previous, position, `message ${index} (${entry.message.tag})`);
      previous = position;
    }
  });
});

describe('TransactionAssembler.positionBefore', () => {
  it("is the last complete transaction, plus the change's transaction up to it when the change is not its first", () => {
    const { index, txn } = firstTransaction(BASIC, 'two changes', (t) => t.relationIds.length === 2);
    const assembler = new TransactionAssembler(start());
    feed(assembler, BASIC, 0, txn.beginAt);
    const lastEnd = index === 0 ? ZERO_LSN : txnAt(BASIC, index - 1).endLsn;
    const [firstChange, secondChange] = allChanges(feed(assembler, BASIC, txn.beginAt, txn.commitAt));
    assert.ok(firstChange && secondChange);
    assert.deepEqual(assembler.positionBefore(firstChange), { lsn: lastEnd, partial: undefined });
    assert.deepEqual(assembler.positionBefore(secondChange), {
      lsn: lastEnd,
      partial: { commitLsn: txn.commitLsn, nextSeq: 1 },
    });
  });
});

describe('TransactionAssembler.batchCommitted', () => {
  const { txn } = firstTransaction(BASIC, 'two changes', (t) => t.relationIds.length === 2);

  it('makes the later changes of the open transaction continue it', () => {
    const assembler = new TransactionAssembler(start());
    feed(assembler, BASIC, 0, txn.beginAt);
    const changes: Change[] = [];
    for (let index = txn.beginAt; index < txn.commitAt; index++) {
      const entry = BASIC.entries[index]!;
      const handed = changesOf(assembler.accept(entry.message, entry.walStart));
      changes.push(...handed);
      if (handed.length > 0 && changes.length === 1) assembler.batchCommitted();
    }
    assert.deepEqual(
      changes.map((change) => [change.seq, change.transactionContinues]),
      [
        [0, false],
        [1, true],
      ],
    );
  });

  it('changes nothing for a transaction whose first change comes after the commit', () => {
    const assembler = new TransactionAssembler(start());
    feed(assembler, BASIC, 0, txn.beginAt + 1); // up to and including Begin
    assembler.batchCommitted();
    const changes = allChanges(feed(assembler, BASIC, txn.beginAt + 1, txn.commitAt + 1));
    assert.ok(changes.length === 2 && changes.every((change) => !change.transactionContinues));
    assembler.batchCommitted(); // between transactions
    const next = allChanges(feed(assembler, BASIC, txn.commitAt + 1));
    assert.ok(next.length > 0 && next.every((change) => !change.transactionContinues));
  });
});

/** A synthetic Relation (OIDs: int4 23, text 25, varchar 1043). */
function relationMessage(overrides: Partial<Relation> = {}): Of<'relation'> {
  return {
    tag: 'relation',
    relation: {
      relationId: 9001,
      namespace: 'public',
      name: 'accounts',
      replicaIdentity: 'd',
      columns: [
        { isKey: true, name: 'id', typeOid: 23, typeModifier: -1 },
        { isKey: false, name: 'owner', typeOid: 25, typeModifier: -1 },
      ],
      ...overrides,
    },
  };
}

function relationEvent(event: AssemblerEvent): Extract<AssemblerEvent, { kind: 'relation' }> {
  assert.equal(event.kind, 'relation');
  return event as Extract<AssemblerEvent, { kind: 'relation' }>;
}

const TIME = 800_000_000_000_000n; // µs since 2000-01-01: 2025-05-08
const begin = (finalLsn: bigint, xid = 1): Of<'begin'> => ({
  tag: 'begin',
  finalLsn: lsn(finalLsn),
  commitTime: TIME,
  xid,
});
const commit = (commitLsn: bigint, endLsn: bigint): Of<'commit'> => ({
  tag: 'commit',
  flags: 0,
  commitLsn: lsn(commitLsn),
  endLsn: lsn(endLsn),
  commitTime: TIME,
});
const insert = (relationId = 9001): Of<'insert'> => ({
  tag: 'insert',
  relationId,
  newTuple: [{ kind: 'text', text: '1' }],
});

describe('TransactionAssembler relation versions', () => {
  const base = relationMessage();
  const [id, owner] = base.relation.columns;
  const variants: [string, Partial<Relation>][] = [
    [
      'a column added',
      { columns: [id!, owner!, { isKey: false, name: 'note', typeOid: 25, typeModifier: -1 }] },
    ],
    ['a column dropped', { columns: [id!] }],
    ['a column renamed', { columns: [id!, { ...owner!, name: 'holder' }] }],
    ['a column type changed', { columns: [id!, { ...owner!, typeOid: 1043, typeModifier: 44 }] }],
    ['a type modifier changed', { columns: [id!, { ...owner!, typeModifier: 20 }] }],
    [
      'the key changed',
      {
        columns: [
          { ...id!, isKey: false },
          { ...owner!, isKey: true },
        ],
      },
    ],
    ['the replica identity changed', { replicaIdentity: 'f' }],
    ['the table renamed', { name: 'accounts_v2' }],
    ['the schema changed', { namespace: 'archive' }],
  ];

  it('keeps the schema id of an identical re-sent Relation', () => {
    const assembler = new TransactionAssembler(start());
    const first = relationEvent(assembler.accept(base, ZERO_LSN));
    assert.equal(first.changed, false, 'the first description is not a change');
    const again = relationEvent(assembler.accept(relationMessage(), ZERO_LSN));
    assert.equal(again.changed, false);
    assert.equal(again.relation.schemaId, first.relation.schemaId);
    assert.equal(assembler.relation(9001), first.relation);
  });

  for (const [what, overrides] of variants) {
    it(`gives a new schema id to a Relation with ${what}, and hands later changes the new version`, () => {
      const assembler = new TransactionAssembler(start());
      const first = relationEvent(assembler.accept(base, ZERO_LSN));
      const changed = relationEvent(assembler.accept(relationMessage(overrides), ZERO_LSN));
      assert.equal(changed.changed, true);
      assert.notEqual(changed.relation.schemaId, first.relation.schemaId);
      assert.equal(assembler.relation(9001), changed.relation);
      assembler.accept(begin(0x200n), lsn(0x1f0n));
      const [change] = changesOf(assembler.accept(insert(), lsn(0x1f8n)));
      assert.equal(change?.relation, changed.relation);
    });
  }

  it('keeps the schema ids of relations re-sent unchanged in the captured stream', () => {
    const assembler = new TransactionAssembler(start());
    const seen = new Map<number, number>();
    let resent = 0;
    for (const { event } of feed(assembler, BASIC)) {
      if (event.kind !== 'relation') continue;
      const known = seen.get(event.relation.relation.relationId);
      if (known !== undefined) {
        resent++;
        assert.equal(event.changed, false);
        assert.equal(event.relation.schemaId, known);
      }
      seen.set(event.relation.relation.relationId, event.relation.schemaId);
    }
    assert.ok(resent >= 2, 'the capture re-sends parent, child and full_items');
    assert.equal(new Set(seen.values()).size, seen.size, 'one schema id per relation');
  });
});

function assertThrowsKind(fn: () => unknown, kind: string, message: RegExp, decode: boolean): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof SlotlakeError, `expected a SlotlakeError, got ${String(error)}`);
    assert.equal(error instanceof DecodeError, decode);
    assert.equal(error.kind, kind);
    assert.match(error.message, message);
    return true;
  });
}

describe('TransactionAssembler protocol errors', () => {
  it('refuses a Begin inside an open transaction', () => {
    const assembler = new TransactionAssembler(start());
    assembler.accept(begin(0x200n), lsn(0x100n));
    assertThrowsKind(() => assembler.accept(begin(0x300n, 2), lsn(0x101n)), 'decode', /Begin inside/, true);
  });

  it('refuses a Commit without a Begin', () => {
    const assembler = new TransactionAssembler(start());
    assertThrowsKind(
      () => assembler.accept(commit(0x200n, 0x230n), lsn(0x200n)),
      'decode',
      /without Begin/,
      true,
    );
  });

  it("refuses a Commit whose LSN is not its Begin's final LSN, naming both", () => {
    const assembler = new TransactionAssembler(start());
    assembler.accept(begin(0x200n), lsn(0x100n));
    assertThrowsKind(
      () => assembler.accept(commit(0x208n, 0x230n), lsn(0x208n)),
      'decode',
      /0\/208.*0\/200/,
      true,
    );
  });

  it('refuses a change or a truncate of a relation never described', () => {
    const assembler = new TransactionAssembler(start());
    assembler.accept(relationMessage(), ZERO_LSN);
    assembler.accept(begin(0x200n), lsn(0x100n));
    assertThrowsKind(
      () => assembler.accept(insert(4242), lsn(0x101n)),
      'decode',
      /unknown relation 4242/,
      true,
    );
    const truncate: Of<'truncate'> = { tag: 'truncate', options: 0, relationIds: [9001, 4243] };
    assertThrowsKind(() => assembler.accept(truncate, lsn(0x102n)), 'decode', /unknown relation 4243/, true);
  });

  it('refuses a change outside a transaction', () => {
    const assembler = new TransactionAssembler(start());
    assembler.accept(relationMessage(), ZERO_LSN);
    assertThrowsKind(() => assembler.accept(insert(), lsn(0x101n)), 'decode', /outside a transaction/, true);
  });

  for (const [fixture, tag] of [
    ['streaming', 'stream-start'],
    ['streaming', 'stream-stop'],
    ['streaming', 'stream-commit'],
    ['streaming', 'stream-abort'],
    ['two-phase', 'begin-prepare'],
    ['two-phase', 'prepare'],
    ['two-phase', 'commit-prepared'],
    ['two-phase', 'rollback-prepared'],
  ] as const) {
    it(`refuses a captured ${tag} message as a source protocol error`, () => {
      const message = decode(fixture).find((candidate) => candidate.tag === tag);
      assert.ok(message, `the ${fixture} capture has a ${tag} message`);
      assert.throws(
        () => new TransactionAssembler(start()).accept(message, ZERO_LSN),
        (error: unknown) => {
          assert.ok(error instanceof SlotlakeError);
          assert.equal(error.kind, 'source-protocol');
          assert.equal(error.origin, 'source');
          assert.match(error.message, new RegExp(tag));
          assert.ok(error.hint);
          return true;
        },
      );
    });
  }
});

/**
 * One simulated history of runs over a stream. Each run streams from a transaction boundary at or before
 * the first transaction its checkpoint does not cover (the slot may lag the checkpoint), resending the
 * latest Relation of each table first as a new session does; it stops after message `cuts[r]`. Within a
 * run, a batch commits (checkpoint = the durable position) after any message in `batchEnds`, and a
 * keepalive may arrive between transactions with a position no later than the next commit.
 */
interface RunPlan {
  readonly cuts: readonly number[];
  readonly replayBack: readonly number[];
  readonly batchEnds: ReadonlySet<number>;
  /** Per gap between transactions (indexed by the following transaction): where in the gap, 0..1, or none. */
  readonly keepalives: ReadonlyMap<number, number>;
}

interface Handed {
  readonly key: string;
  readonly continues: boolean;
  readonly batch: number;
  readonly commitLsn: Lsn;
  readonly seq: number;
}

function simulate(stream: Stream, plan: RunPlan): { handed: Handed[]; checkpoints: DurablePosition[] } {
  const handed: Handed[] = [];
  const checkpoints: DurablePosition[] = [{ lsn: ZERO_LSN, partial: undefined }];
  let batch = 0;
  const checkpoint = (position: DurablePosition, where: string) => {
    assertNotBack(checkpoints.at(-1)!, position, where);
    checkpoints.push(position);
    batch++;
  };
  const cuts = [...plan.cuts, stream.entries.length - 1];
  let resume: ResumePosition = { lsn: ZERO_LSN, partial: undefined };
  let from = 0;
  for (const [run, cut] of cuts.entries()) {
    const assembler = new TransactionAssembler(resume);
    for (const relation of relationsBefore(stream, from)) assembler.accept(relation, resume.lsn);
    // A keepalive in the gap before the transaction that begins at `index`, if the plan has one.
    const keepaliveBefore = (index: number) => {
      const gap = stream.transactions.findIndex((txn) => txn.beginAt === index);
      const at = plan.keepalives.get(gap);
      if (gap < 0 || at === undefined) return;
      const low = gap === 0 ? ZERO_LSN : stream.transactions[gap - 1]!.endLsn;
      const high = stream.transactions[gap]!.commitLsn;
      assembler.noteServerPosition(lsn(low + BigInt(Math.floor(Number(high - low) * at))));
    };
    keepaliveBefore(from);
    for (let index = from; index <= cut; index++) {
      const entry = stream.entries[index]!;
      for (const change of changesOf(assembler.accept(entry.message, entry.walStart))) {
        handed.push({
          key: key(change.transaction.commitLsn, change.seq),
          continues: change.transactionContinues,
          batch,
          commitLsn: change.transaction.commitLsn,
          seq: change.seq,
        });
      }
      keepaliveBefore(index + 1);
      if (plan.batchEnds.has(index) && index < cut) {
        checkpoint(assembler.durablePosition(), `run ${run}, batch after message ${index}`);
        assembler.batchCommitted();
      }
    }
    resume = assembler.durablePosition();
    checkpoint(resume, `run ${run}, cut after message ${cut}`);
    // The next session starts at a transaction boundary at or before the first transaction not covered.
    const needed = stream.transactions.findIndex((txn) => txn.endLsn > resume.lsn);
    if (needed < 0) break;
    const back = plan.replayBack[run] ?? 0;
    from = stream.transactions[Math.max(0, needed - back)]!.beginAt;
  }
  return { handed, checkpoints };
}

function planArbitrary(stream: Stream): fc.Arbitrary<RunPlan> {
  const last = stream.entries.length - 1;
  return fc
    .record({
      cuts: fc.uniqueArray(fc.integer({ min: 0, max: last - 1 }), { maxLength: 8 }),
      replayBack: fc.array(fc.nat(4), { maxLength: 9 }),
      batchEnds: fc.uniqueArray(fc.integer({ min: 0, max: last }), { maxLength: last }),
      keepalives: fc.array(
        fc.tuple(fc.nat(stream.transactions.length - 1), fc.double({ min: 0, max: 1, noNaN: true })),
        { maxLength: stream.transactions.length },
      ),
    })
    .map(({ cuts, replayBack, batchEnds, keepalives }) => ({
      cuts: [...cuts].sort((a, b) => a - b),
      replayBack,
      batchEnds: new Set(batchEnds),
      keepalives: new Map(keepalives),
    }));
}

describe('TransactionAssembler across cut runs (property)', () => {
  for (const [name, stream] of [
    ['basic', BASIC],
    ['binary', BINARY],
  ] as const) {
    it(`${name}: any split into runs hands out every (commitLsn, seq) exactly once, checkpoints only move forward`, () => {
      const expected = expectedKeys(stream);
      fc.assert(
        fc.property(planArbitrary(stream), (plan) => {
          const { handed, checkpoints } = simulate(stream, plan);
          const keys = handed.map((change) => change.key);
          assert.deepEqual([...keys].sort(), [...expected].sort(), 'every change exactly once');
          assert.deepEqual(checkpoints.at(-1), {
            lsn: stream.transactions.at(-1)!.endLsn,
            partial: undefined,
          });
          // A change continues its transaction exactly when an earlier batch (or run) archived part of it.
          for (const change of handed) {
            const earlier = handed.some(
              (other) =>
                other.commitLsn === change.commitLsn && other.seq < change.seq && other.batch < change.batch,
            );
            assert.equal(change.continues, earlier, `transactionContinues of ${change.key}`);
          }
        }),
        { numRuns: 300 },
      );
    });
  }

  it('the uncut run is the reference: one run, one batch, every change in stream order', () => {
    const { handed } = simulate(BASIC, {
      cuts: [],
      replayBack: [],
      batchEnds: new Set(),
      keepalives: new Map(),
    });
    assert.deepEqual(
      handed.map((change) => change.key),
      expectedKeys(BASIC),
    );
  });
});
