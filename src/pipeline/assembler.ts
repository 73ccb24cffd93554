/**
 * Transactions from logical-decoding messages: the pure heart of the run loop.
 *
 * A non-streamed logical replication stream sends each committed transaction whole, after it committed:
 * Begin (with the commit LSN — pgoutput's "final LSN" — the commit time and the xid), Relation and Type
 * descriptions, row changes, Commit (with the commit LSN again and the transaction's end LSN). The
 * assembler numbers the changes of a transaction by `seq` (from 0; a truncate of N tables is N changes),
 * so `(commit_lsn, seq)` identifies a change, and decides which changes are new:
 * - a transaction whose commit LSN is below the resume position was archived by an earlier run (the server
 *   resends from the slot's confirmed position, which may lag the checkpoint): it is skipped whole;
 * - a transaction an earlier batch or run cut mid-way (the checkpoint's `partial`) resumes at its first
 *   `seq` not yet archived.
 * It also tracks the **durable position** — what the checkpoint may say once everything handed out so far is
 * in S3: the end LSN of the last complete transaction, plus (commit LSN, next seq) of an open one whose
 * changes were handed out, plus the server's idle position when nothing is pending (so an idle slot
 * advances). Positions only move forward. Each Relation message is compared with the last one of its
 * relation: a changed one (a schema change) gets a new schema id, which starts new objects.
 * No I/O: `accept()` takes one message and returns what happened.
 * https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html
 */
import { DecodeError, SlotlakeError } from '../errors.js';
import { formatLsn, maxLsn, type Lsn } from '../lsn.js';
import { unixMicrosFromPostgres } from '../protocol/frames.js';
import type { PartialTransaction } from '../checkpoint/store.js';
import type { LogicalMessage, Relation, Tuple } from '../decoding/messages.js';
import type { TypeInfo } from '../decoding/values.js';
import type { SnapshotProgress } from '../snapshot/progress.js';
import { parseWatermark, type Watermark } from '../snapshot/watermarks.js';

/** Where reading starts: everything committed before `lsn` is archived, plus a cut transaction's prefix. */
export interface ResumePosition {
  readonly lsn: Lsn;
  readonly partial: PartialTransaction | undefined;
}

/** What the checkpoint may say once everything handed out so far is durable. */
export interface DurablePosition {
  readonly lsn: Lsn;
  readonly partial: PartialTransaction | undefined;
  /** The snapshot progress archived with it (snapshot/progress.ts); undefined: unchanged. */
  readonly snapshot?: SnapshotProgress | undefined;
}

/** A relation as the stream last described it, with an id per schema version. */
export interface RelationVersion {
  readonly relation: Relation;
  /** Unique per (relation, schema version) within the assembler's life. */
  readonly schemaId: number;
}

/** The transaction a change belongs to. */
export interface TransactionInfo {
  readonly xid: number;
  readonly commitLsn: Lsn;
  /** Commit time, µs since the Unix epoch. */
  readonly commitTimeUnixUs: bigint;
  /** UTC date of the commit, YYYY-MM-DD (the `dt` partition). */
  readonly dt: string;
}

/** `c` insert, `u` update, `d` delete, `t` truncate, `r` a snapshot read (contract §4.1). */
export type ChangeOp = 'c' | 'u' | 'd' | 't' | 'r';

/** One change to archive. */
export interface Change {
  readonly op: ChangeOp;
  readonly relation: RelationVersion;
  /** The old row (`O`, REPLICA IDENTITY FULL) or old key (`K`), as sent. */
  readonly before: Tuple | undefined;
  /** True when `before` is a key only (`K`): the other columns are not the old row's. */
  readonly beforeIsKey: boolean;
  readonly after: Tuple | undefined;
  /** WAL position of the change's record. */
  readonly lsn: Lsn;
  readonly seq: number;
  readonly transaction: TransactionInfo;
  /** True when changes of this transaction were archived before this batch (earlier batch or run). */
  readonly transactionContinues: boolean;
}

export type AssemblerEvent =
  | { readonly kind: 'none' }
  | { readonly kind: 'begin' }
  | { readonly kind: 'changes'; readonly changes: readonly Change[] }
  | {
      readonly kind: 'commit';
      readonly commitLsn: Lsn;
      /** True when the transaction's changes were handed out (false: skipped as already archived). */
      readonly archived: boolean;
      /** Changes handed out for it in this assembler's life. */
      readonly changes: number;
    }
  | { readonly kind: 'relation'; readonly relation: RelationVersion; readonly changed: boolean }
  | {
      readonly kind: 'watermark';
      readonly watermark: Watermark;
      readonly transaction: TransactionInfo;
      /** The message's own LSN. */
      readonly lsn: Lsn;
    }
  | { readonly kind: 'type'; readonly type: TypeInfo };

interface OpenTransaction extends TransactionInfo {
  /** Changes with seq below this are archived already (a resumed transaction). */
  readonly skipBelowSeq: number;
  /** The whole transaction is archived already. */
  readonly skip: boolean;
  /** The seq the next change gets. */
  seq: number;
  /** Changes handed out in this assembler's life. */
  handedOut: number;
  /** The seq of the first change handed out in the current batch (undefined: none yet). */
  firstSeqInBatch: number | undefined;
}

const NONE: AssemblerEvent = { kind: 'none' };
const BEGIN: AssemblerEvent = { kind: 'begin' };

function utcDate(unixMicros: bigint): string {
  const date = new Date(Number(unixMicros / 1000n));
  return Number.isNaN(date.getTime()) ? '1970-01-01' : date.toISOString().slice(0, 10);
}

function sameRelation(a: Relation, b: Relation): boolean {
  if (
    a.namespace !== b.namespace ||
    a.name !== b.name ||
    a.replicaIdentity !== b.replicaIdentity ||
    a.columns.length !== b.columns.length
  )
    return false;
  return a.columns.every((column, i) => {
    const other = b.columns[i]!;
    return (
      column.name === other.name &&
      column.typeOid === other.typeOid &&
      column.typeModifier === other.typeModifier &&
      column.isKey === other.isKey
    );
  });
}

let nextSchemaId = 1;

export class TransactionAssembler {
  private txn: OpenTransaction | undefined;
  /** A cut transaction not yet met again in the stream. */
  private pendingPartial: PartialTransaction | undefined;
  /** End LSN of the last complete transaction (or the resume position, or an idle position adopted). */
  private lastCommitEnd: Lsn;
  /** The server's WAL position from a keepalive while no transaction was open. */
  private idlePosition: Lsn | undefined;
  private readonly relations = new Map<number, RelationVersion>();

  constructor(private readonly resume: ResumePosition) {
    this.lastCommitEnd = resume.lsn;
    this.pendingPartial = resume.partial;
  }

  /** True while a transaction is open (between Begin and Commit). */
  get inTransaction(): boolean {
    return this.txn !== undefined;
  }

  /** True when nothing is pending: no open transaction and no cut transaction to finish. */
  get atRest(): boolean {
    return this.txn === undefined && this.pendingPartial === undefined;
  }

  /** The end LSN of the last complete transaction seen (or the resume position, or an idle position adopted). */
  get lastCompleteLsn(): Lsn {
    return this.lastCommitEnd;
  }

  /** The open transaction's commit LSN and the seq its next change gets. */
  get openTransaction(): { readonly commitLsn: Lsn; readonly nextSeq: number } | undefined {
    return this.txn ? { commitLsn: this.txn.commitLsn, nextSeq: this.txn.seq } : undefined;
  }

  relation(relationId: number): RelationVersion | undefined {
    return this.relations.get(relationId);
  }

  /**
   * A keepalive's WAL end while no transaction is open: everything before it that the stream would send has
   * been sent, so when nothing is pending the checkpoint may move there.
   */
  noteServerPosition(walEnd: Lsn): void {
    if (this.txn === undefined) this.idlePosition = maxLsn(this.idlePosition ?? walEnd, walEnd);
  }

  /**
   * What the checkpoint may say once everything handed out so far is durable: the end of the last complete
   * transaction, an open transaction's handed-out prefix as `partial`, or the idle server position.
   */
  durablePosition(): DurablePosition {
    const txn = this.txn;
    if (txn && !txn.skip && txn.seq > txn.skipBelowSeq)
      return { lsn: this.lastCommitEnd, partial: { commitLsn: txn.commitLsn, nextSeq: txn.seq } };
    if (this.pendingPartial) return { lsn: this.lastCommitEnd, partial: this.pendingPartial };
    if (txn === undefined && this.idlePosition !== undefined)
      return { lsn: maxLsn(this.lastCommitEnd, this.idlePosition), partial: undefined };
    return { lsn: this.lastCommitEnd, partial: undefined };
  }

  /**
   * The durable position just before `change` (already handed out, not yet written): for a batch that must
   * end inside the change's transaction, with the change going into the next batch.
   */
  positionBefore(change: Change): DurablePosition {
    return {
      lsn: this.lastCommitEnd,
      partial: change.seq > 0 ? { commitLsn: change.transaction.commitLsn, nextSeq: change.seq } : undefined,
    };
  }

  /** A batch was committed: changes handed out from now on continue their transaction. */
  batchCommitted(): void {
    if (this.txn) this.txn.firstSeqInBatch = undefined;
  }

  /** Takes one message at WAL position `walStart` (its XLogData frame's start). */
  accept(message: LogicalMessage, walStart: Lsn): AssemblerEvent {
    switch (message.tag) {
      case 'begin':
        return this.begin(message.finalLsn, message.commitTime, message.xid);
      case 'commit':
        return this.commit(message.commitLsn, message.endLsn);
      case 'relation':
        return this.describeRelation(message.relation);
      case 'type':
        return {
          kind: 'type',
          type: { oid: message.typeOid, name: message.name, namespace: message.namespace },
        };
      case 'insert':
        return this.change('c', message.relationId, undefined, false, message.newTuple, walStart);
      case 'update': {
        const before = message.oldTuple ?? message.oldKey;
        return this.change(
          'u',
          message.relationId,
          before,
          message.oldTuple === undefined,
          message.newTuple,
          walStart,
        );
      }
      case 'delete': {
        const before = message.oldTuple ?? message.oldKey;
        return this.change(
          'd',
          message.relationId,
          before,
          message.oldTuple === undefined,
          undefined,
          walStart,
        );
      }
      case 'truncate':
        return this.truncate(message.relationIds, walStart);
      case 'message': {
        // Logical messages are not table changes; slotlake's own snapshot watermarks place snapshot chunks.
        const watermark = parseWatermark(message.prefix, message.content);
        const txn = this.txn;
        if (!watermark || !txn || txn.skip) return NONE;
        return { kind: 'watermark', watermark, transaction: txn, lsn: message.lsn };
      }
      case 'origin':
        return NONE; // replication origins are not table changes
      default:
        throw new SlotlakeError(
          `unexpected ${message.tag} message: slotlake asks for non-streamed transactions`,
          {
            kind: 'source-protocol',
            origin: 'source',
            hint: 'leave SLOTLAKE_PROTO_VERSION at its default; report this with the server version',
          },
        );
    }
  }

  private begin(finalLsn: Lsn, commitTime: bigint, xid: number): AssemblerEvent {
    if (this.txn) throw new DecodeError('Begin inside an open transaction');
    const commitTimeUnixUs = unixMicrosFromPostgres(commitTime);
    const resumed = this.pendingPartial !== undefined && this.pendingPartial.commitLsn === finalLsn;
    this.txn = {
      xid,
      commitLsn: finalLsn,
      commitTimeUnixUs,
      dt: utcDate(commitTimeUnixUs),
      skipBelowSeq: resumed ? this.pendingPartial!.nextSeq : 0,
      skip: finalLsn < this.resume.lsn,
      seq: 0,
      handedOut: 0,
      firstSeqInBatch: undefined,
    };
    // The idle position may already be a checkpoint (idle advance): it stays the floor of every position
    // reported for this transaction, or a batch cut inside it would move the checkpoint back. Everything
    // before it was sent, so this transaction commits at or after it.
    if (this.idlePosition !== undefined && this.pendingPartial === undefined)
      this.lastCommitEnd = maxLsn(this.lastCommitEnd, this.idlePosition);
    this.idlePosition = undefined;
    return BEGIN;
  }

  private commit(commitLsn: Lsn, endLsn: Lsn): AssemblerEvent {
    const txn = this.txn;
    if (!txn) throw new DecodeError('Commit without Begin');
    if (txn.commitLsn !== commitLsn) {
      throw new DecodeError(
        `Commit LSN ${formatLsn(commitLsn)} differs from Begin's final LSN ${formatLsn(txn.commitLsn)}`,
      );
    }
    if (this.pendingPartial && this.pendingPartial.commitLsn === txn.commitLsn)
      this.pendingPartial = undefined;
    this.lastCommitEnd = maxLsn(this.lastCommitEnd, endLsn);
    this.txn = undefined;
    return { kind: 'commit', commitLsn: txn.commitLsn, archived: !txn.skip, changes: txn.handedOut };
  }

  /**
   * The schema version of a relation described from outside the stream (a snapshot reads the catalog): the
   * stream's own version when it is the same, else a new one (recorded, so the stream's next identical
   * description keeps it).
   */
  versionOf(relation: Relation): RelationVersion {
    const event = this.describeRelation(relation);
    return (event as Extract<AssemblerEvent, { kind: 'relation' }>).relation;
  }

  private describeRelation(relation: Relation): AssemblerEvent {
    const known = this.relations.get(relation.relationId);
    if (known && sameRelation(known.relation, relation))
      return { kind: 'relation', relation: known, changed: false };
    const version: RelationVersion = { relation, schemaId: nextSchemaId++ };
    this.relations.set(relation.relationId, version);
    return { kind: 'relation', relation: version, changed: known !== undefined };
  }

  private nextSeq(what: string): { txn: OpenTransaction; seq: number; archived: boolean } {
    const txn = this.txn;
    if (!txn) throw new DecodeError(`${what} outside a transaction`);
    const seq = txn.seq++;
    return { txn, seq, archived: txn.skip || seq < txn.skipBelowSeq };
  }

  private relationOf(relationId: number, what: string): RelationVersion {
    const relation = this.relations.get(relationId);
    if (!relation) throw new DecodeError(`${what} for unknown relation ${relationId}`);
    return relation;
  }

  private handOut(
    txn: OpenTransaction,
    seq: number,
    op: ChangeOp,
    relation: RelationVersion,
    before: Tuple | undefined,
    beforeIsKey: boolean,
    after: Tuple | undefined,
    lsn: Lsn,
  ): Change {
    if (txn.firstSeqInBatch === undefined) txn.firstSeqInBatch = seq;
    txn.handedOut++;
    return {
      op,
      relation,
      before,
      beforeIsKey,
      after,
      lsn,
      seq,
      transaction: txn,
      // Earlier changes of this transaction are archived elsewhere when it resumed a cut transaction or
      // began in an earlier batch.
      transactionContinues: txn.firstSeqInBatch > 0 || txn.skipBelowSeq > 0,
    };
  }

  private change(
    op: 'c' | 'u' | 'd',
    relationId: number,
    before: Tuple | undefined,
    beforeIsKey: boolean,
    after: Tuple | undefined,
    walStart: Lsn,
  ): AssemblerEvent {
    const { txn, seq, archived } = this.nextSeq(op === 'c' ? 'insert' : op === 'u' ? 'update' : 'delete');
    if (archived) return NONE;
    const relation = this.relationOf(relationId, 'change');
    const change = this.handOut(
      txn,
      seq,
      op,
      relation,
      before,
      before !== undefined && beforeIsKey,
      after,
      walStart,
    );
    return { kind: 'changes', changes: [change] };
  }

  private truncate(relationIds: readonly number[], walStart: Lsn): AssemblerEvent {
    const changes: Change[] = [];
    for (const relationId of relationIds) {
      const { txn, seq, archived } = this.nextSeq('Truncate');
      if (archived) continue;
      const relation = this.relationOf(relationId, 'truncate');
      changes.push(this.handOut(txn, seq, 't', relation, undefined, false, undefined, walStart));
    }
    return changes.length === 0 ? NONE : { kind: 'changes', changes };
  }
}
