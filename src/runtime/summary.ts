/**
 * The run summary: the last line `slotlake run` prints and what the Lambda handler returns (contract §1.1).
 *
 * Counts are of what was *committed* — changes and transactions whose batch reached the checkpoint — not of
 * what was read: a transaction re-read after a reconnect, or read and then lost to a flush that did not finish,
 * is not counted. Positions are Postgres' `X/X` text. No row values, ever.
 */
export type StopReason =
  | 'deadline' // the time budget left just enough for the final flush
  | 'caught-up' // everything the server had written when the run started is archived
  | 'signal' // SIGINT/SIGTERM: drained and stopped
  | 'lease-held' // another run holds the pipeline (or the slot streams to another process)
  | 'idle' // nothing to archive for SLOTLAKE_IDLE_TIMEOUT
  | 'flush-timeout'; // the final flush could not finish before the deadline: cut, left to the next run's recovery

export interface RunSummary {
  stopReason: StopReason;
  startCheckpoint: string | null;
  checkpoint: string;
  /** Transactions committed by this run (complete or, for a cut one, its archived part counted once). */
  transactions: number;
  /** Changes committed by this run. */
  changes: number;
  objects: number;
  bytes: number;
  durationMs: number;
  pipeline: string;
  slot: string;
  runId: string;
  batches: number;
  /** Transactions the server resent that were archived already (a slot behind the checkpoint). */
  skippedTransactions: number;
  partial: { commitLsn: string; nextSeq: number } | null;
  statusUpdates: number;
  readPauses: number;
  reconnects: number;
  recoveredObjects: number;
  /** Time spent making batches durable (uploads, checkpoint, manifest, ack). */
  flushMs: number;
  /** Milliseconds the run went past its budget (0 when it ended in time). */
  overrunMs: number;
  /** True when the checkpoint belonged to another source and SLOTLAKE_ON_SOURCE_CHANGE=accept-gap let it go on. */
  sourceChanged: boolean;
  lagBytes: number | null;
  retainedWalBytes: number | null;
  walStatus: string | null;
  safeWalSize: number | null;
  /** The snapshot work of this run (null when no snapshot was pending). */
  snapshot: {
    chunks: number;
    rows: number;
    /** Chunk rows left out because the change stream carries a newer version of them. */
    droppedAsStale: number;
    pendingTables: number;
    rowsArchivedTotal: number;
    rowsRemainingEstimate: number | null;
    estimatedRunsLeft: number | null;
  } | null;
  /**
   * How long the run took to start streaming (its first START_REPLICATION): from the run's start (`runMs`), and
   * from the process's start (`processMs`, Node's `performance.now()`; in a warm Lambda container, from the
   * container's start). Null when the run never streamed.
   */
  startup: { runMs: number; processMs: number } | null;
  /** The lease this run held: its fence, and when it was taken and given up (epoch ms). */
  lease: { fence: number; acquiredAtMs: number; releasedAtMs: number | null; renewals: number } | null;
}

export function emptySummary(pipeline: string, slot: string, runId: string): RunSummary {
  return {
    stopReason: 'deadline',
    startCheckpoint: null,
    checkpoint: '0/0',
    transactions: 0,
    changes: 0,
    objects: 0,
    bytes: 0,
    durationMs: 0,
    pipeline,
    slot,
    runId,
    batches: 0,
    skippedTransactions: 0,
    partial: null,
    statusUpdates: 0,
    readPauses: 0,
    reconnects: 0,
    recoveredObjects: 0,
    flushMs: 0,
    overrunMs: 0,
    sourceChanged: false,
    snapshot: null,
    lagBytes: null,
    retainedWalBytes: null,
    walStatus: null,
    safeWalSize: null,
    startup: null,
    lease: null,
  };
}
