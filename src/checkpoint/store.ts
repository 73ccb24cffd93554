/**
 * The checkpoint: where the archive ends, stored outside the database.
 *
 * One item per pipeline says "every change committed before `lsn` is durably in S3". It is written only
 * after the objects and the manifest of a batch are durable, and only then is `lsn` acknowledged to
 * Postgres as flushed (see runtime/commit.ts, the one place that orders these steps). A transaction cut
 * by a run's deadline is recorded in `partial`: its commit LSN and how many of its changes (by `seq`)
 * are already archived, so the next run skips exactly those. `version` grows with every write; every
 * write is conditional on the version read before, so two runs can never both advance the checkpoint
 * from the same state. Implementations must never move a stored checkpoint backwards.
 */
import type { Lsn } from '../lsn.js';

export interface PartialTransaction {
  /** Commit LSN of the transaction cut by a deadline. */
  readonly commitLsn: Lsn;
  /** Changes with `seq` below this are archived. */
  readonly nextSeq: number;
}

export interface Checkpoint {
  /** Everything committed before this LSN is archived; the slot is acknowledged up to here. */
  readonly lsn: Lsn;
  readonly partial: PartialTransaction | undefined;
  readonly version: number;
  readonly updatedAt: string;
}

export interface CheckpointUpdate {
  readonly lsn: Lsn;
  readonly partial: PartialTransaction | undefined;
  /** Free-form facts for operators (run id, counts); never row values. */
  readonly note?: Readonly<Record<string, string | number>>;
}

export interface CheckpointStore {
  /** The stored checkpoint, or null when this pipeline has none yet. */
  read(): Promise<Checkpoint | null>;
  /**
   * Stores `update` if the stored version is still `expectedVersion` (null: no item yet).
   * Throws a `checkpoint-conflict` SlotlakeError otherwise. Returns the stored checkpoint.
   */
  write(update: CheckpointUpdate, expectedVersion: number | null): Promise<Checkpoint>;
}
