/**
 * The watermark window of a snapshot chunk: which of the chunk's rows the change stream makes stale. Pure.
 *
 * Between the chunk's low and high watermark the stream delivers every change committed while the chunk was
 * read. A chunk row whose key such a change touched may hold a state older or newer than the stream's, so it
 * is dropped: the stream's own records carry that row (DBLog). Every other row was unchanged from the low to
 * the high watermark, so it is exactly the row's state at the high watermark, where it is positioned.
 * One exception keeps information the stream does not carry: an update that leaves a TOASTed column unchanged
 * does not send that column, so its record can only be completed from the row's previous version — the chunk
 * row, kept but positioned at the *low* watermark, before every change of the window (replaying the window's
 * changes over it in `(commit_lsn, seq)` order converges to the row's state: each change carries the whole row
 * but for those unchanged columns, which it takes from the version before). A truncate of the table inside
 * the window makes the whole chunk stale (rows written after it are in the stream). Tables read by `ctid` have
 * no key the stream names: nothing can be matched, and their snapshot is a best-effort copy (documented).
 */
import type { Tuple } from '../decoding/messages.js';
import type { TableName } from '../names.js';
import type { Change } from '../pipeline/assembler.js';

/** One row of a chunk: the columns' text (null for SQL NULL), in the chunk's column order. */
export type ChunkRow = readonly (string | null)[];

function sameTable(a: TableName, b: TableName): boolean {
  return a.schema === b.schema && a.table === b.table;
}

/** The key of a tuple as one comparable string, or undefined when a key column is missing or unchanged. */
function keyOf(tuple: Tuple, indexes: readonly number[]): string | undefined {
  const parts: (string | null)[] = [];
  for (const index of indexes) {
    const value = tuple[index];
    if (value === undefined || value.kind === 'unchanged-toast' || value.kind === 'binary') return undefined;
    parts.push(value.kind === 'null' ? null : value.text);
  }
  return JSON.stringify(parts);
}

export function rowKey(row: ChunkRow, keyIndexes: readonly number[]): string {
  return JSON.stringify(keyIndexes.map((index) => row[index] ?? null));
}

export interface ResolvedChunk {
  /**
   * True when the window held a change of the table whose key could not be read (its key columns renamed or
   * dropped meanwhile): nothing can be trusted, the chunk is read again.
   */
  readonly retry: boolean;
  /** Rows positioned at the high watermark. */
  readonly atHigh: readonly ChunkRow[];
  /** Rows positioned at the low watermark (kept for their unchanged TOAST values). */
  readonly atLow: readonly ChunkRow[];
  readonly dropped: number;
}

export class ChunkWindow {
  private readonly touched = new Set<string>();
  private readonly keepAtLow = new Set<string>();
  private truncated = false;
  private unmatched = false;
  changes = 0;

  constructor(
    readonly table: TableName,
    /** The key columns' names; empty for `ctid` (nothing can be matched). */
    readonly keyColumns: readonly string[],
  ) {}

  /** A change the stream delivered between the chunk's watermarks. */
  observe(change: Change): void {
    const relation = change.relation.relation;
    if (!sameTable({ schema: relation.namespace, table: relation.name }, this.table)) return;
    this.changes++;
    if (change.op === 't') {
      this.truncated = true;
      return;
    }
    if (this.keyColumns.length === 0) return;
    const indexes = this.keyColumns.map((name) =>
      relation.columns.findIndex((column) => column.name === name),
    );
    if (indexes.some((index) => index < 0)) {
      // the key's columns are not in this relation version (renamed or dropped): match nothing safely
      this.unmatched = true;
      return;
    }
    const afterKey = change.after ? keyOf(change.after, indexes) : undefined;
    const beforeKey = change.before ? keyOf(change.before, indexes) : undefined;
    for (const key of [afterKey, beforeKey]) if (key !== undefined) this.touched.add(key);
    if (change.op === 'u' && afterKey === undefined && beforeKey === undefined) this.unmatched = true;
    const keepsToast = change.after?.some((value) => value.kind === 'unchanged-toast') ?? false;
    if (keepsToast) {
      const previous = beforeKey ?? afterKey;
      if (previous !== undefined) this.keepAtLow.add(previous);
    }
  }

  /**
   * Splits the chunk's rows: dropped when the window touched their key, kept at the low watermark when an
   * update needs their unchanged TOAST values, at the high watermark otherwise. `keyIndexes` locate the key
   * columns in the chunk's rows.
   */
  resolve(rows: readonly ChunkRow[], keyIndexes: readonly number[]): ResolvedChunk {
    if (this.unmatched && this.keyColumns.length > 0)
      return { retry: true, atHigh: [], atLow: [], dropped: 0 };
    // Rows the chunk read before the truncate are gone; rows written after it are in the stream.
    if (this.truncated) return { retry: false, atHigh: [], atLow: [], dropped: rows.length };
    const atHigh: ChunkRow[] = [];
    const atLow: ChunkRow[] = [];
    let dropped = 0;
    for (const row of rows) {
      if (this.keyColumns.length === 0) {
        atHigh.push(row);
        continue;
      }
      const key = rowKey(row, keyIndexes);
      if (this.keepAtLow.has(key)) atLow.push(row);
      else if (this.touched.has(key)) dropped++;
      else atHigh.push(row);
    }
    return { retry: false, atHigh, atLow, dropped };
  }
}
