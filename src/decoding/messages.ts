/**
 * The logical-decoding messages slotlake understands, independent of the output plugin.
 *
 * pgoutput (https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html) sends a
 * transaction as Begin, then Relation/Type descriptions and row changes, then Commit. Protocol 2 adds
 * streamed in-progress transactions (Stream Start/Stop/Commit/Abort), 3 adds two-phase commit
 * (Begin Prepare, Prepare, Commit Prepared, Rollback Prepared, Stream Prepare), 4 adds parallel
 * streaming (abort LSN/time in Stream Abort). The wal2json decoder produces the same union.
 * Times are µs since the Postgres epoch; LSNs are `Lsn`.
 */
import type { Lsn } from '../lsn.js';

/** One column value in a tuple, as the server sent it. */
export type TupleValue =
  | { readonly kind: 'null' }
  /** `u`: an unchanged TOASTed value the server did not send. */
  | { readonly kind: 'unchanged-toast' }
  /** `t`: the type's text output. */
  | { readonly kind: 'text'; readonly text: string }
  /** `b`: the type's binary send format (only when the `binary` option is on). */
  | { readonly kind: 'binary'; readonly bytes: Uint8Array };

export type Tuple = readonly TupleValue[];

export interface RelationColumn {
  /** Bit 1: part of the replica identity key. */
  readonly isKey: boolean;
  readonly name: string;
  readonly typeOid: number;
  readonly typeModifier: number;
}

/** `d` default (primary key), `n` nothing, `f` full, `i` index. */
export type ReplicaIdentity = 'd' | 'n' | 'f' | 'i';

export interface Relation {
  readonly relationId: number;
  readonly namespace: string;
  readonly name: string;
  readonly replicaIdentity: ReplicaIdentity;
  readonly columns: readonly RelationColumn[];
}

/**
 * A table as the source's catalog describes it when asked (`pg_class`, `pg_attribute`, `pg_index`): what a plugin
 * without Relation messages (wal2json) does not send. Columns in `attnum` order, dropped ones left out.
 */
export interface TableDefinition {
  readonly replicaIdentity: ReplicaIdentity;
  readonly columns: readonly ColumnDefinition[];
}

export interface ColumnDefinition extends RelationColumn {
  /**
   * A generated column (`attgenerated`): pgoutput leaves it out of Relation messages and tuples (before
   * PostgreSQL 18), wal2json sends it.
   */
  readonly generated: boolean;
  /** A variable-length type (`attlen = -1`): its value can be TOASTed, so an update may leave it out. */
  readonly toastable: boolean;
}

/** `xid` is present on data messages only inside a streamed transaction (protocol ≥ 2). */
interface InStream {
  readonly xid?: number;
}

export type LogicalMessage =
  | { readonly tag: 'begin'; readonly finalLsn: Lsn; readonly commitTime: bigint; readonly xid: number }
  | {
      readonly tag: 'commit';
      readonly flags: number;
      readonly commitLsn: Lsn;
      readonly endLsn: Lsn;
      readonly commitTime: bigint;
    }
  | { readonly tag: 'origin'; readonly originLsn: Lsn; readonly name: string }
  | ({ readonly tag: 'relation'; readonly relation: Relation } & InStream)
  | ({
      readonly tag: 'type';
      readonly typeOid: number;
      readonly namespace: string;
      readonly name: string;
    } & InStream)
  | ({ readonly tag: 'insert'; readonly relationId: number; readonly newTuple: Tuple } & InStream)
  | ({
      readonly tag: 'update';
      readonly relationId: number;
      /** `K`: the old replica identity key columns (others null). */
      readonly oldKey?: Tuple;
      /** `O`: the whole old row (REPLICA IDENTITY FULL). */
      readonly oldTuple?: Tuple;
      readonly newTuple: Tuple;
    } & InStream)
  | ({
      readonly tag: 'delete';
      readonly relationId: number;
      readonly oldKey?: Tuple;
      readonly oldTuple?: Tuple;
    } & InStream)
  | ({
      readonly tag: 'truncate';
      /** Bit 1: CASCADE, bit 2: RESTART IDENTITY. */
      readonly options: number;
      readonly relationIds: readonly number[];
    } & InStream)
  | ({
      readonly tag: 'message';
      /** Bit 1: transactional. */
      readonly flags: number;
      readonly lsn: Lsn;
      readonly prefix: string;
      readonly content: Uint8Array;
    } & InStream)
  | { readonly tag: 'stream-start'; readonly xid: number; readonly firstSegment: boolean }
  | { readonly tag: 'stream-stop' }
  | {
      readonly tag: 'stream-commit';
      readonly xid: number;
      readonly flags: number;
      readonly commitLsn: Lsn;
      readonly endLsn: Lsn;
      readonly commitTime: bigint;
    }
  | {
      readonly tag: 'stream-abort';
      readonly xid: number;
      readonly subXid: number;
      /** Protocol 4 with parallel streaming only. */
      readonly abortLsn?: Lsn;
      readonly abortTime?: bigint;
    }
  | {
      readonly tag: 'begin-prepare';
      readonly prepareLsn: Lsn;
      readonly endLsn: Lsn;
      readonly prepareTime: bigint;
      readonly xid: number;
      readonly gid: string;
    }
  | {
      readonly tag: 'prepare';
      readonly flags: number;
      readonly prepareLsn: Lsn;
      readonly endLsn: Lsn;
      readonly prepareTime: bigint;
      readonly xid: number;
      readonly gid: string;
    }
  | {
      readonly tag: 'commit-prepared';
      readonly flags: number;
      readonly commitLsn: Lsn;
      readonly endLsn: Lsn;
      readonly commitTime: bigint;
      readonly xid: number;
      readonly gid: string;
    }
  | {
      readonly tag: 'rollback-prepared';
      readonly flags: number;
      readonly prepareEndLsn: Lsn;
      readonly rollbackEndLsn: Lsn;
      readonly prepareTime: bigint;
      readonly rollbackTime: bigint;
      readonly xid: number;
      readonly gid: string;
    }
  | {
      readonly tag: 'stream-prepare';
      readonly flags: number;
      readonly prepareLsn: Lsn;
      readonly endLsn: Lsn;
      readonly prepareTime: bigint;
      readonly xid: number;
      readonly gid: string;
    };

export type LogicalMessageTag = LogicalMessage['tag'];
