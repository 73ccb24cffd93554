/**
 * The Parquet record format (contract §3.1): a change becomes a typed row of its table's columns plus the
 * metadata columns. Apart from record-formats.ts so that the Parquet writer (hyparquet-writer) is loaded only
 * by runs that write Parquet.
 */
import type { Tuple, TupleValue } from '../decoding/messages.js';
import { parquetFormat } from '../sink/parquet/format.js';
import type { ParquetChange, ParquetCompression } from '../sink/parquet/writer.js';
import type { RecordFormat } from './record-formats.js';
import { RelationEncoder } from './records.js';

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
