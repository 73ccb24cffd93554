/**
 * Record formats: how a change becomes what an object of the configured format holds — a JSON line in the
 * contract's envelope (records.ts) for `jsonl`, a typed row for `parquet` (contract §3.1) — chosen once per
 * relation schema version. Both carry the same information: the row (the new row for inserts and updates, the
 * old row or key for deletes, none for truncates), `before` as JSON, the unchanged TOAST columns (never written
 * as null: filled from the old row under REPLICA IDENTITY FULL, listed otherwise), and the change's position.
 * The Parquet one is `parquet-records.ts`, loaded only by runs that write Parquet.
 */
import type { TypeRegistry } from '../decoding/values.js';
import { formatLsn } from '../lsn.js';
import type { ObjectFormat } from '../sink/batch.js';
import { JSONL_FORMAT } from '../sink/spool.js';
import type { Change, RelationVersion } from './assembler.js';
import { RelationEncoder, transactionSource, type TransactionSource } from './records.js';

export interface EncodedRecord<R> {
  readonly record: R;
  /** About how many uncompressed bytes the record takes (batch size accounting). */
  readonly bytes: number;
}

/** Encodes the changes of one relation schema version. */
export interface RecordEncoder<R> {
  encode(change: Change): EncodedRecord<R>;
}

export interface RecordFormat<R> {
  readonly objects: ObjectFormat<R>;
  encoder(version: RelationVersion, database: string, types: TypeRegistry): RecordEncoder<R>;
}

/** The transaction-level JSON fragments, computed once per transaction. */
class TransactionJson {
  private info: Change['transaction'] | undefined;
  private json: TransactionSource | undefined;

  of(change: Change): TransactionSource {
    if (this.info !== change.transaction || this.json === undefined) {
      this.info = change.transaction;
      this.json = transactionSource(
        formatLsn(change.transaction.commitLsn),
        change.transaction.xid,
        change.transaction.commitTimeUnixUs,
      );
    }
    return this.json;
  }
}

export const JSONL_RECORDS: RecordFormat<string> = {
  objects: JSONL_FORMAT,
  encoder(version, database, types) {
    const encoder = new RelationEncoder(version.relation, database, types);
    const transactions = new TransactionJson();
    return {
      encode(change) {
        const line = encoder.encode(
          change.op,
          change.before,
          change.beforeIsKey,
          change.after,
          formatLsn(change.lsn),
          change.seq,
          transactions.of(change),
        );
        return { record: line, bytes: line.length + 1 };
      },
    };
  },
};
