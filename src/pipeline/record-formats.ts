/**
 * Record formats: how a change becomes what an object of the configured format holds — a JSON line in the
 * contract's envelope (records.ts) for `jsonl`, a typed row for `parquet` (contract §3.1) — chosen once per
 * relation schema version. Both carry the same information: the row (the new row for inserts and updates, the
 * old row or key for deletes, none for truncates), `before` as JSON, the unchanged TOAST columns (never written
 * as null: filled from the old row under REPLICA IDENTITY FULL, listed otherwise), and the change's position.
 */
import type { Tuple, TupleValue } from '../decoding/messages.js';
import type { TypeRegistry } from '../decoding/values.js';
import { formatLsn } from '../lsn.js';
import type { ObjectFormat } from '../sink/batch.js';
import { parquetFormat } from '../sink/parquet/format.js';
import type { ParquetChange, ParquetCompression } from '../sink/parquet/writer.js';
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

/** Fixed per-row metadata bytes in the size estimate (LSNs, seq, xid, time, op). */
const PARQUET_ROW_OVERHEAD_BYTES = 48;

function textBytes(tuple: Tuple | undefined): number {
  if (!tuple) return 0;
  let bytes = 0;
  for (const value of tuple)
    bytes += value.kind === 'text' ? value.text.length : value.kind === 'binary' ? value.bytes.length : 1;
  return bytes;
}

/** The new row with unchanged TOAST values taken from the old row when the server sent it whole. */
function fillUnchanged(after: Tuple, oldRow: Tuple | undefined): Tuple {
  if (!oldRow || !after.some((value) => value.kind === 'unchanged-toast')) return after;
  return after.map((value, i): TupleValue => {
    if (value.kind !== 'unchanged-toast') return value;
    const old = oldRow[i];
    return old && (old.kind === 'text' || old.kind === 'null') ? old : value;
  });
}

export function parquetRecords(compression: ParquetCompression): RecordFormat<ParquetChange> {
  return {
    objects: parquetFormat(compression),
    encoder(version, database, types) {
      const json = new RelationEncoder(version.relation, database, types);
      return {
        encode(change) {
          const before = change.before;
          const row =
            change.op === 'd'
              ? before
              : change.after && fillUnchanged(change.after, change.beforeIsKey ? undefined : before);
          const record: ParquetChange = {
            op: change.op,
            lsn: change.lsn,
            commitLsn: change.transaction.commitLsn,
            seq: change.seq,
            txId: change.transaction.xid,
            commitTimeUnixUs: change.transaction.commitTimeUnixUs,
            row,
            beforeJson: before ? json.encodeTuple(before, change.beforeIsKey, undefined, undefined) : null,
            unchangedToast: null,
          };
          return { record, bytes: PARQUET_ROW_OVERHEAD_BYTES + textBytes(row) + textBytes(before) };
        },
      };
    },
  };
}
