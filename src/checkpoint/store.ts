/**
 * The checkpoint, the lease and the intent: the pipeline's state outside the database.
 *
 * One item per pipeline holds:
 * - the **checkpoint**: "every change committed before `lsn` is durably in S3" (plus `partial`, a transaction
 *   cut by a deadline: its commit LSN and how many of its changes are archived). It is written only after a
 *   batch's objects are durable (its manifest is stored with it, see below), and only then is `lsn`
 *   acknowledged to Postgres (see
 *   runtime/commit.ts, the one place that orders these steps). It never moves backwards.
 * - the **lease**: which run may work on the pipeline (`owner`), until when (`expiresAtMs`), and a `fence`
 *   that grows with every acquisition. Every write after acquisition is conditional on still holding the
 *   lease with that fence, so a run that lost it can change nothing.
 * - the **intent**: the S3 keys of the batch being written (recorded before each upload). A checkpoint write
 *   clears it atomically; an intent found at start therefore names objects of a batch that never committed,
 *   which recovery deletes before streaming.
 * - the **pending manifest**: the manifest of the last committed batch, stored with its checkpoint and written
 *   to S3 right after; a run that finds it at start writes it again (idempotent), so a crash between the
 *   checkpoint and the manifest upload never leaves a committed batch without its manifest.
 * `version` grows with every checkpoint write; writes are conditional on the version read before.
 */
import { SlotlakeError } from '../errors.js';
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

/** A manifest stored with the checkpoint until it is surely in S3. */
export interface PendingManifest {
  readonly key: string;
  /** The manifest's JSON text. */
  readonly body: string;
}

export interface CheckpointUpdate {
  readonly lsn: Lsn;
  readonly partial: PartialTransaction | undefined;
  /** The manifest of the batch this write commits (none for a position-only move). */
  readonly manifest?: PendingManifest | undefined;
  /** Free-form facts for operators (run id, counts); never row values. */
  readonly note?: Readonly<Record<string, string | number>>;
}

export interface Lease {
  readonly owner: string;
  readonly fence: number;
  readonly expiresAtMs: number;
}

export type Acquisition =
  | {
      readonly acquired: true;
      readonly lease: Lease;
      readonly checkpoint: Checkpoint | null;
      /** Keys of an uncommitted batch left by an earlier run (to delete before streaming). */
      readonly intentKeys: readonly string[];
      /** The last committed batch's manifest (to write again before streaming). */
      readonly pendingManifest: PendingManifest | undefined;
    }
  | {
      readonly acquired: false;
      readonly holder: string | undefined;
      readonly expiresAtMs: number | undefined;
    };

export interface CheckpointStore {
  /** The stored checkpoint, or null when this pipeline has none yet (read-only; for `status`). */
  read(): Promise<Checkpoint | null>;
  /** Takes the lease if it is free, expired, or already ours (`owner`); never waits. */
  acquire(owner: string, durationMs: number, nowMs: number): Promise<Acquisition>;
  /** Extends the lease. Throws `lease-lost` when it is no longer ours. */
  renew(lease: Lease, durationMs: number, nowMs: number): Promise<Lease>;
  /** Gives the lease up (best effort at the end of a run). */
  release(lease: Lease): Promise<void>;
  /** Adds keys to the intent. Throws `lease-lost` when the lease is no longer ours. */
  recordIntent(lease: Lease, keys: readonly string[]): Promise<void>;
  /** Clears the intent (after recovery removed its objects). */
  clearIntent(lease: Lease): Promise<void>;
  /**
   * Stores `update` and clears the intent, if the lease is still ours and the stored version is still
   * `expectedVersion` (null: no checkpoint yet). Throws `lease-lost` or `checkpoint-conflict` otherwise.
   * Safe to retry: a write that took effect although its response was lost is recognised as ours.
   */
  write(update: CheckpointUpdate, expectedVersion: number | null, lease: Lease): Promise<Checkpoint>;
}

/** The error every store raises when a write finds the lease held by someone else. */
export function leaseLostError(pipeline: string, cause?: unknown): SlotlakeError {
  return new SlotlakeError(`this run no longer holds the lease of pipeline ${pipeline}`, {
    kind: 'lease-lost',
    hint: 'another run took over the pipeline (or the lease expired); this run stopped and acknowledged nothing more',
    cause,
  });
}
