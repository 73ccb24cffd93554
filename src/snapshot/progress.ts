/**
 * Snapshot progress: which tables' existing rows are being archived, and how far each has got (contract §4.1).
 *
 * A table is read in key order, one chunk at a time, by ordinary runs (snapshot/driver.ts); each chunk's rows
 * become `op: "r"` records positioned in the change stream. What a table has archived so far is its last key
 * (`lastKey`, the key columns' text) and its row count; this state is committed with the checkpoint, in the
 * same conditional write as the batch that holds the chunk's records, so a crash, a kill, an overlap or a
 * deadline resumes at the next chunk with nothing lost or doubled. Tables are taken one after another, in the
 * order they were requested. Pure: no I/O.
 */
import type { TableName } from '../names.js';

/** How a table's rows are ordered and resumed. */
export type SnapshotKeyKind = 'primary-key' | 'unique-index' | 'ctid';

export interface SnapshotTable {
  readonly table: TableName;
  /** `pending` until its first chunk, `running` while chunks go on, `done` once a chunk came back short. */
  readonly state: 'pending' | 'running' | 'done';
  readonly keyKind: SnapshotKeyKind | undefined;
  /** The key columns, in order (`ctid` for tables without a usable key). */
  readonly keyColumns: readonly string[];
  /** The last archived key, as the key columns' text; null before the first chunk. */
  readonly lastKey: readonly string[] | null;
  readonly rows: number;
  readonly chunks: number;
  /** `pg_class.reltuples` when the table was first read (an estimate, for progress); -1 when unknown. */
  readonly estimatedRows: number;
  readonly requestedAt: string;
  readonly doneAt: string | null;
}

export interface SnapshotProgress {
  readonly tables: readonly SnapshotTable[];
}

export const NO_SNAPSHOT: SnapshotProgress = { tables: [] };

function sameTable(a: TableName, b: TableName): boolean {
  return a.schema === b.schema && a.table === b.table;
}

/** Adds `tables` as pending (a re-snapshot restarts a table that is running or done). */
export function requestTables(
  progress: SnapshotProgress,
  tables: readonly TableName[],
  nowIso: string,
): SnapshotProgress {
  const kept = progress.tables.filter((entry) => !tables.some((table) => sameTable(table, entry.table)));
  const added: SnapshotTable[] = tables.map((table) => ({
    table,
    state: 'pending',
    keyKind: undefined,
    keyColumns: [],
    lastKey: null,
    rows: 0,
    chunks: 0,
    estimatedRows: 0,
    requestedAt: nowIso,
    doneAt: null,
  }));
  return { tables: [...kept, ...added] };
}

/** The table to read next: the first one not done. */
export function nextTable(progress: SnapshotProgress): SnapshotTable | undefined {
  return progress.tables.find((entry) => entry.state !== 'done');
}

export function hasPendingWork(progress: SnapshotProgress): boolean {
  return nextTable(progress) !== undefined;
}

/**
 * A chunk of `table` read `rowsRead` rows (its limit was `limit`: fewer means the table is done), archived
 * `rowsArchived` of them (the others the change stream carries), and ended at `lastKey`.
 */
export function chunkArchived(
  progress: SnapshotProgress,
  table: TableName,
  chunk: {
    readonly keyKind: SnapshotKeyKind;
    readonly keyColumns: readonly string[];
    readonly rowsRead: number;
    readonly rowsArchived: number;
    readonly limit: number;
    readonly lastKey: readonly string[] | null;
    readonly estimatedRows: number;
  },
  nowIso: string,
): SnapshotProgress {
  return {
    tables: progress.tables.map((entry) => {
      if (!sameTable(entry.table, table)) return entry;
      const done = chunk.rowsRead < chunk.limit;
      return {
        ...entry,
        state: done ? 'done' : 'running',
        keyKind: chunk.keyKind,
        keyColumns: chunk.keyColumns,
        lastKey: chunk.lastKey ?? entry.lastKey,
        rows: entry.rows + chunk.rowsArchived,
        chunks: entry.chunks + 1,
        estimatedRows: entry.chunks === 0 ? chunk.estimatedRows : entry.estimatedRows,
        doneAt: done ? nowIso : null,
      };
    }),
  };
}

/** Done tables are forgotten after this many, so the checkpoint item stays small. */
const DONE_TABLES_KEPT = 50;

/** The progress to store: every unfinished table, and the most recently finished ones. */
export function compact(progress: SnapshotProgress): SnapshotProgress {
  const done = progress.tables.filter((entry) => entry.state === 'done');
  if (done.length <= DONE_TABLES_KEPT) return progress;
  const drop = new Set(done.slice(0, done.length - DONE_TABLES_KEPT));
  return { tables: progress.tables.filter((entry) => !drop.has(entry)) };
}

export function sameProgress(a: SnapshotProgress, b: SnapshotProgress): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** For `status` and the run summary: per table, rows, percent, and an estimate of runs left. */
export interface SnapshotReport {
  readonly tables: Array<{
    readonly table: string;
    readonly state: SnapshotTable['state'];
    readonly keyKind: SnapshotKeyKind | null;
    readonly rows: number;
    /** null when the table was never analyzed (no statistics to estimate from). */
    readonly estimatedRows: number | null;
    readonly percent: number | null;
  }>;
  readonly pendingTables: number;
  readonly rowsArchived: number;
  /** null when a pending table has no estimate. */
  readonly rowsRemainingEstimate: number | null;
  /** From the rows a run archives (the caller's measurement); null when unknown. */
  readonly estimatedRunsLeft: number | null;
}

export function report(progress: SnapshotProgress, rowsPerRun: number | null): SnapshotReport {
  let rowsArchived = 0;
  let remaining: number | null = 0;
  const tables = progress.tables.map((entry) => {
    rowsArchived += entry.rows;
    const known = entry.estimatedRows >= 0 && (entry.state !== 'pending' || entry.chunks > 0);
    if (entry.state !== 'done')
      remaining =
        known && remaining !== null ? remaining + Math.max(0, entry.estimatedRows - entry.rows) : null;
    const percent =
      entry.state === 'done'
        ? 100
        : known && entry.estimatedRows > 0
          ? Math.min(99, Math.floor((100 * entry.rows) / entry.estimatedRows))
          : null;
    return {
      table: `${entry.table.schema}.${entry.table.table}`,
      state: entry.state,
      keyKind: entry.keyKind ?? null,
      rows: entry.rows,
      estimatedRows: known ? entry.estimatedRows : null,
      percent,
    };
  });
  const pendingTables = progress.tables.filter((entry) => entry.state !== 'done').length;
  return {
    tables,
    pendingTables,
    rowsArchived,
    rowsRemainingEstimate: remaining,
    estimatedRunsLeft:
      pendingTables === 0
        ? 0
        : rowsPerRun && rowsPerRun > 0 && remaining !== null
          ? Math.max(1, Math.ceil(remaining / rowsPerRun))
          : null,
  };
}
