/**
 * Rebuilding a table from the archive, the way a reader of the lake would (contract §4, §4.1): every record of
 * the table in `(commit_lsn, seq)` order — snapshot reads and inserts upsert the row by its key, an update
 * removes the old key when the key changed and fills its unchanged TOAST columns from the row's previous
 * version (when the archive has none yet — a row the snapshot reaches later — the column stays absent until a
 * later record brings the whole row), a delete removes the key, a truncate empties the table. Independent of slotlake's code: it works on
 * the parsed JSON records only.
 */
import type { ChangeRecord } from './lake.js';

function lsnValue(text: string): bigint {
  const [high, low] = text.split('/') as [string, string];
  return (BigInt(`0x${high}`) << 32n) | BigInt(`0x${low}`);
}

export function replayOrder(a: ChangeRecord, b: ChangeRecord): number {
  const byLsn = lsnValue(a.source.commit_lsn) - lsnValue(b.source.commit_lsn);
  if (byLsn !== 0n) return byLsn < 0n ? -1 : 1;
  return a.source.seq - b.source.seq;
}

export type Row = Record<string, unknown>;

/** The table's rows by key (the key columns' values, JSON-encoded), rebuilt from its records. */
export function replay(records: readonly ChangeRecord[], keyColumns: readonly string[]): Map<string, Row> {
  const keyOf = (row: Row) => JSON.stringify(keyColumns.map((column) => row[column]));
  const state = new Map<string, Row>();
  for (const record of [...records].sort(replayOrder)) {
    switch (record.op) {
      case 'r':
      case 'c':
        state.set(keyOf(record.after!), { ...record.after! });
        break;
      case 'u': {
        const after = { ...record.after! };
        const previousKey = record.before ? keyOf(record.before) : keyOf(after);
        const previous = state.get(previousKey);
        for (const column of record.unchanged_toast ?? [])
          if (previous && column in previous) after[column] = previous[column];
        if (record.before && previousKey !== keyOf(after)) state.delete(previousKey);
        state.set(keyOf(after), after);
        break;
      }
      case 'd':
        state.delete(keyOf(record.before!));
        break;
      case 't':
        state.clear();
        break;
    }
  }
  return state;
}
