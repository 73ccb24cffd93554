/**
 * The snapshot driver: reads the tables' existing rows chunk by chunk inside ordinary runs, interleaved with
 * the change stream (contract §4.1).
 *
 * One chunk at a time, on a connection of its own: write the low watermark, SELECT the next `n` rows in key
 * order, write the high watermark (snapshot/reader.ts). Meanwhile the session keeps reading the stream; the
 * driver watches it — the low watermark opens the chunk's window (snapshot/window.ts), changes of the table in
 * the window mark rows stale, and the commit of the high watermark's transaction *emits* the chunk: the rows
 * that are still exact, positioned at the high watermark (and the few kept for unchanged TOAST at the low
 * one), for the session to write as `op: "r"` records, and the progress that goes with them. The session
 * commits both in one checkpoint write (runtime/commit.ts), so a chunk is archived exactly once or not at all;
 * a chunk cut by a stop, a crash or a lost connection is simply read again by the next run (its watermarks, in
 * the WAL, are then ignored: no chunk of that name is in flight).
 *
 * Chunk size adapts: each chunk aims at a fraction of the time left (so a run's deadline is never overrun by a
 * chunk) and a bound on the rows held in memory, from the rows per second the previous chunks were read at.
 */
import type pg from 'pg';
import type { Logger } from '../log.js';
import type { Lsn } from '../lsn.js';
import type { Change, TransactionInfo } from '../pipeline/assembler.js';
import type { Clock, Deadline } from '../support/deadline.js';
import { killPoint } from '../support/kill-points.js';
import {
  chunkArchived,
  compact,
  hasPendingWork,
  nextTable,
  type SnapshotProgress,
  type SnapshotTable,
} from './progress.js';
import { emitWatermark, planTable, readChunk, type Chunk, type SnapshotPlan } from './reader.js';
import type { Watermark } from './watermarks.js';
import { ChunkWindow, type ChunkRow } from './window.js';

/** Rows per chunk before anything is measured. */
export const FIRST_CHUNK_ROWS = 2_000;
/** Bounds of the adaptive chunk size. */
export const MIN_CHUNK_ROWS = 100;
/** Rows held in memory by one chunk at most (a chunk is emitted as a whole). */
export const MAX_CHUNK_BYTES = 32 * 1024 * 1024;
/** A chunk aims at this fraction of the run's usable time left, and at most this long. */
const CHUNK_TIME_FRACTION = 0.2;
const MAX_CHUNK_MS = 10_000;
/**
 * A chunk starts only when the usable time left covers its expected duration (watermarks, select, the stream
 * reaching its high watermark) this many times over, plus the flush the run still owes.
 */
const CHUNK_TIME_COVER = 2;
/** Expected duration of a chunk before any was measured. */
const FIRST_CHUNK_MS = 500;

/** What the commit of a high watermark's transaction hands the session to write. */
export interface ChunkEmission {
  readonly plan: SnapshotPlan;
  /** Rows to archive at the high watermark: its transaction and its message's LSN. */
  readonly atHigh: readonly ChunkRow[];
  readonly high: { readonly transaction: TransactionInfo; readonly lsn: Lsn };
  /** Rows to archive at the low watermark (kept for their unchanged TOAST values). */
  readonly atLow: readonly ChunkRow[];
  readonly low: { readonly transaction: TransactionInfo; readonly lsn: Lsn };
  readonly dropped: number;
  /** The progress once these rows are archived. */
  readonly progress: SnapshotProgress;
}

interface InFlight {
  readonly name: string;
  /** Known before the low watermark is written. */
  plan: SnapshotPlan | undefined;
  readonly entry: SnapshotTable;
  readonly startedAtMs: number;
  readonly limit: number;
  /** Resolves once the high watermark is written (the chunk is read). */
  task: Promise<{ plan: SnapshotPlan; chunk: Chunk } | undefined>;
  window: ChunkWindow | undefined;
  low: { transaction: TransactionInfo; lsn: Lsn } | undefined;
  high: { transaction: TransactionInfo; lsn: Lsn } | undefined;
  /** Set when the task failed or found the table gone. */
  failure: unknown;
  result: { plan: SnapshotPlan; chunk: Chunk } | undefined;
}

export interface SnapshotDriverOptions {
  readonly pipeline: string;
  readonly runId: string;
  /** A connection of its own (the chunk SELECT must not hold up the session's catalog queries). */
  readonly client: pg.Client;
  readonly logger: Logger;
  readonly clock: Clock;
  readonly deadline: Deadline;
  readonly progress: SnapshotProgress;
  readonly maxChunkRows: number;
}

export interface SnapshotCounters {
  chunks: number;
  rows: number;
  dropped: number;
}

export class SnapshotDriver {
  private committed: SnapshotProgress;
  private inFlight: InFlight | undefined;
  private chunkSeq = 0;
  private rowsPerMs: number | undefined;
  private bytesPerRow = 200;
  readonly counters: SnapshotCounters = { chunks: 0, rows: 0, dropped: 0 };

  constructor(private readonly options: SnapshotDriverOptions) {
    this.committed = options.progress;
  }

  /** The progress of every chunk emitted so far (it becomes durable with the batch holding their rows). */
  get progress(): SnapshotProgress {
    return this.committed;
  }

  /** True while some table still has rows to read. */
  get pending(): boolean {
    return hasPendingWork(this.committed);
  }

  /** True while a chunk is being read or waits for its high watermark in the stream. */
  get busy(): boolean {
    return this.inFlight !== undefined;
  }

  /** How long the next chunk should take, from the last one (or a prior). */
  private expectedChunkMs = FIRST_CHUNK_MS;

  private chunkRows(): number {
    const usable = this.options.deadline.usableMs();
    const targetMs = Math.min(
      MAX_CHUNK_MS,
      Number.isFinite(usable) ? usable * CHUNK_TIME_FRACTION : MAX_CHUNK_MS,
    );
    const byTime = this.rowsPerMs === undefined ? FIRST_CHUNK_ROWS : Math.floor(this.rowsPerMs * targetMs);
    const byMemory = Math.floor(MAX_CHUNK_BYTES / Math.max(1, this.bytesPerRow));
    return Math.max(MIN_CHUNK_ROWS, Math.min(this.options.maxChunkRows, byTime, byMemory));
  }

  /**
   * Starts the next chunk when none is in flight, some table has rows left, and the time left (after the
   * `flushEstimateMs` the run owes) covers the chunk.
   */
  maybeStart(flushEstimateMs = 0): void {
    if (this.inFlight || !this.pending) return;
    if (this.options.deadline.usableMs() - flushEstimateMs < CHUNK_TIME_COVER * this.expectedChunkMs) return;
    const entry = nextTable(this.committed)!;
    const name = `${this.options.runId}/${++this.chunkSeq}`;
    const limit = this.chunkRows();
    const watermark = (mark: 'low' | 'high'): Watermark => ({
      pipeline: this.options.pipeline,
      chunk: name,
      mark,
    });
    const { client } = this.options;
    const flight: InFlight = {
      name,
      entry,
      startedAtMs: this.options.clock.nowMs(),
      limit,
      plan: undefined,
      window: undefined,
      low: undefined,
      high: undefined,
      failure: undefined,
      result: undefined,
      task: Promise.resolve(undefined),
    };
    flight.task = (async () => {
      const plan = await planTable(client, entry.table);
      if (!plan) return undefined;
      flight.plan = plan;
      if (plan.keyKind === 'ctid' && entry.chunks === 0)
        this.options.logger.warn(
          'snapshot of a table without a primary key or a unique NOT NULL index: read by physical position (ctid); rows updated or deleted while it is read may be missed or archived twice',
          { table: `${entry.table.schema}.${entry.table.table}` },
        );
      await emitWatermark(client, watermark('low'));
      const chunk = await readChunk(client, plan, entry.lastKey, limit);
      await emitWatermark(client, watermark('high'));
      killPoint('snapshot-read');
      return { plan, chunk };
    })();
    flight.task.then(
      (result) => {
        flight.result = result;
        if (!result && this.inFlight === flight) this.tableGone(flight);
      },
      (error: unknown) => {
        flight.failure = error;
      },
    );
    this.inFlight = flight;
  }

  /** The table vanished before its chunk was read: it is done (nothing left to archive of it). */
  private tableGone(flight: InFlight): void {
    this.options.logger.warn('a table to snapshot no longer exists; skipping it', {
      table: `${flight.entry.table.schema}.${flight.entry.table.table}`,
    });
    this.committed = {
      tables: this.committed.tables.map((entry) =>
        entry === flight.entry ? { ...entry, state: 'done', doneAt: new Date().toISOString() } : entry,
      ),
    };
    this.inFlight = undefined;
  }

  /** Throws the failure of the chunk in flight, if it failed (permissions, a dropped connection). */
  check(): void {
    const failure = this.inFlight?.failure;
    if (failure !== undefined) {
      this.inFlight = undefined;
      throw failure;
    }
  }

  /** A watermark message in the stream, inside `transaction`. */
  onWatermark(watermark: Watermark, transaction: TransactionInfo, lsn: Lsn): void {
    const flight = this.inFlight;
    if (!flight || watermark.pipeline !== this.options.pipeline || watermark.chunk !== flight.name) return;
    if (watermark.mark === 'low' && flight.plan) {
      flight.low = { transaction, lsn };
      flight.window = new ChunkWindow(
        flight.entry.table,
        flight.plan.keyKind === 'ctid' ? [] : flight.plan.keyColumns,
      );
    } else if (watermark.mark === 'high' && flight.low) flight.high = { transaction, lsn };
  }

  /** A change of the stream: inside a chunk's window it may make chunk rows stale. */
  observe(change: Change): void {
    const flight = this.inFlight;
    if (!flight?.window || flight.high) return;
    flight.window.observe(change);
  }

  /**
   * A transaction committed. When it holds the high watermark of the chunk in flight, returns what to
   * archive for the chunk (the chunk's rows were read before that watermark was written, so they are here).
   */
  async onCommit(commitLsn: Lsn): Promise<ChunkEmission | undefined> {
    const flight = this.inFlight;
    if (!flight?.high || flight.high.transaction.commitLsn !== commitLsn) return undefined;
    this.inFlight = undefined;
    const read = await flight.task;
    if (!read) return undefined;
    const { plan, chunk } = read;
    const resolved = flight.window!.resolve(chunk.rows, plan.keyIndexes);
    if (resolved.retry) {
      this.options.logger.info('a snapshot chunk is read again: the table changed shape while it was read', {
        table: `${plan.table.schema}.${plan.table.table}`,
      });
      return undefined;
    }
    const elapsed = Math.max(1, this.options.clock.nowMs() - flight.startedAtMs);
    this.expectedChunkMs = elapsed;
    if (chunk.rows.length > 0) {
      this.rowsPerMs = chunk.rows.length / elapsed;
      let bytes = 0;
      for (const row of chunk.rows) for (const value of row) bytes += (value?.length ?? 0) + 8;
      this.bytesPerRow = bytes / chunk.rows.length;
    }
    const progress = chunkArchived(
      this.committed,
      plan.table,
      {
        keyKind: plan.keyKind,
        keyColumns: plan.keyColumns,
        rowsRead: chunk.rows.length,
        rowsArchived: resolved.atHigh.length + resolved.atLow.length,
        limit: chunk.limit,
        lastKey: chunk.lastKey,
        estimatedRows: plan.estimatedRows,
      },
      new Date().toISOString(),
    );
    return {
      plan,
      atHigh: resolved.atHigh,
      high: flight.high,
      atLow: resolved.atLow,
      low: flight.low!,
      dropped: resolved.dropped,
      progress,
    };
  }

  /** The session archived an emission's rows: its progress is now the driver's. */
  emitted(emission: ChunkEmission): void {
    this.committed = compact(emission.progress);
    this.counters.chunks++;
    this.counters.rows += emission.atHigh.length + emission.atLow.length;
    this.counters.dropped += emission.dropped;
  }

  /** The run stops: a chunk in flight is abandoned (the next run reads it again). */
  abandon(): void {
    this.inFlight = undefined;
  }
}
