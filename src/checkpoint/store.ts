/**
 * The checkpoint, the lease and the intent: the pipeline's state outside the database.
 *
 * One item per pipeline holds:
 * - the **checkpoint**: "every change committed before `lsn` is durably in S3" (plus `partial`, a transaction
 *   cut mid-way: its commit LSN and how many of its changes are archived). It is written only after a batch's
 *   objects are durable, and only then is `lsn` acknowledged to Postgres (runtime/commit.ts is the one place
 *   that orders these steps). It never moves backwards on the same source.
 * - the **source identity** the checkpoint was made on: `IDENTIFY_SYSTEM`'s system identifier, the timeline,
 *   the database and the slot. LSNs mean nothing on another system; a run checks it before streaming.
 * - the **lease**: which run may work on the pipeline (`owner`), until when (`expiresAtMs`), and a `fence`
 *   that grows with every acquisition. Every write after acquisition is conditional on still holding the
 *   lease with that fence, so a run that lost it can change nothing.
 * - the **intent**: the S3 keys a batch may write (recorded before each upload). A checkpoint write clears
 *   it atomically; an intent found at start therefore names objects of a batch that never committed, which
 *   recovery deletes before streaming (after the previous holder's lease has surely run out).
 * - the **pending manifest**: where the last committed batch's manifest was staged in S3 and where it goes;
 *   copied into `manifests/` right after the checkpoint, and again by any later run that finds it, so a crash
 *   between the checkpoint and the manifest never leaves a committed batch without its manifest.
 * - the **snapshot progress**: which tables' existing rows are being archived and the last key of each
 *   (snapshot/progress.ts), written with the checkpoint of the batch that holds the chunk's rows; and the
 *   **snapshot requests** `slotlake snapshot` adds (a set any process may add to, merged by the next run).
 * - the **store speed** the last run measured (upload throughput and latency, commit latency), so the next
 *   run stops reading early enough for its flush even before it has measured anything itself.
 * `version` grows with every checkpoint write; writes are conditional on the version read before.
 */
import { SlotlakeError } from '../errors.js';
import type { Lsn } from '../lsn.js';
import type { SnapshotProgress } from '../snapshot/progress.js';

export interface PartialTransaction {
  /** Commit LSN of the transaction cut mid-way. */
  readonly commitLsn: Lsn;
  /** Changes with `seq` below this are archived. */
  readonly nextSeq: number;
}

/** Which database the checkpoint's LSNs belong to (contract §5). */
export interface SourceIdentity {
  /** `IDENTIFY_SYSTEM`'s systemid: the cluster, the same on its physical standbys. */
  readonly systemId: string;
  /** The timeline: changes on a failover (same system, new timeline, the same LSN space). */
  readonly timeline: number;
  readonly database: string;
  readonly slot: string;
}

/** Measured speed of the object and checkpoint stores (see sink/upload-meter.ts). */
export interface StoreSpeed {
  readonly uploadBytesPerMs: number;
  readonly requestLatencyMs: number;
  readonly commitLatencyMs: number;
}

export interface Checkpoint {
  /** Everything committed before this LSN is archived; the slot is acknowledged up to here. */
  readonly lsn: Lsn;
  readonly partial: PartialTransaction | undefined;
  /** The source the LSNs belong to; undefined for a checkpoint written before identities were stored. */
  readonly source: SourceIdentity | undefined;
  /** Snapshot progress committed with this checkpoint (undefined: no snapshot ever requested). */
  readonly snapshot: SnapshotProgress | undefined;
  readonly version: number;
  readonly updatedAt: string;
}

/** A committed batch's manifest, staged in S3 before the checkpoint, copied to its key after it. */
export interface PendingManifest {
  /** Where the manifest belongs (`manifests/…`). */
  readonly key: string;
  /** Where it was staged (`staging/…`), written before the checkpoint. */
  readonly stagingKey: string;
}

export interface CheckpointUpdate {
  readonly lsn: Lsn;
  readonly partial: PartialTransaction | undefined;
  readonly source: SourceIdentity;
  /** The manifest of the batch this write commits (none for a position-only move). */
  readonly manifest?: PendingManifest | undefined;
  /** The store speed measured so far, for the next run. */
  readonly speed?: StoreSpeed | undefined;
  /** The snapshot progress as of `lsn` (undefined: unchanged). */
  readonly snapshot?: SnapshotProgress | undefined;
  /** Snapshot requests merged into `snapshot`, removed from the pending requests by this write. */
  readonly consumedSnapshotRequests?: readonly string[] | undefined;
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
      /** The last committed batch's manifest (to copy into place again before streaming). */
      readonly pendingManifest: PendingManifest | undefined;
      /**
       * The lease this acquisition replaced when another owner held it and did not release it (it expired):
       * that run may still have an upload in flight until its own expiry.
       */
      readonly takenOver: { readonly owner: string; readonly expiresAtMs: number } | undefined;
      /** The store speed the previous run measured. */
      readonly speed: StoreSpeed | undefined;
      /** Tables `slotlake snapshot` asked for (`schema.table` as SLOTLAKE_TABLES writes them), not yet merged. */
      readonly snapshotRequests: readonly string[];
    }
  | {
      readonly acquired: false;
      readonly holder: string | undefined;
      readonly expiresAtMs: number | undefined;
      /** The stored checkpoint (for the summary of a run that found the lease held). */
      readonly checkpoint: Checkpoint | null;
    };

export interface CheckpointStore {
  /** The stored checkpoint, or null when this pipeline has none yet (read-only; for `status`). */
  read(): Promise<Checkpoint | null>;
  /** Takes the lease if it is free, expired, or already ours (`owner`); never waits. */
  acquire(owner: string, durationMs: number, nowMs: number): Promise<Acquisition>;
  /** Extends the lease. Throws `lease-lost` when it is no longer ours. */
  renew(lease: Lease, durationMs: number, nowMs: number, signal?: AbortSignal): Promise<Lease>;
  /**
   * Gives the lease up, storing the measured store speed. Throws `lease-lost` (changing nothing) when not held.
   * With `expireAtMs` the owner stays recorded and the lease only expires then: the next run takes it over as
   * from a run that did not release it, and waits out the old lease before deleting what it may have written
   * (for a run whose uploads were cut while in flight).
   */
  release(lease: Lease, speed?: StoreSpeed, expireAtMs?: number): Promise<void>;
  /** Adds keys to the intent. Throws `lease-lost` when the lease is no longer ours. */
  recordIntent(lease: Lease, keys: readonly string[], signal?: AbortSignal): Promise<void>;
  /** Asks for a (re-)snapshot of tables (names as SLOTLAKE_TABLES writes them); needs no lease. */
  requestSnapshot(tables: readonly string[]): Promise<void>;
  /** The snapshot requests not yet merged by a run (read-only; for `status`). */
  pendingSnapshotRequests(): Promise<string[]>;
  /** Clears the intent (after recovery removed its objects). */
  clearIntent(lease: Lease): Promise<void>;
  /**
   * Forgets the pending manifest once it is in place (published), so no later run copies it again: only if
   * the stored one is still `key` (otherwise nothing changes). Throws `lease-lost` when the lease is not ours.
   */
  clearPendingManifest(lease: Lease, key: string): Promise<void>;
  /**
   * Stores `update` and clears the intent, if the lease is still ours and the stored version is still
   * `expectedVersion` (null: no checkpoint yet). Throws `lease-lost` or `checkpoint-conflict` otherwise.
   * Safe to retry: a write that took effect although its response was lost is recognised as ours.
   */
  write(
    update: CheckpointUpdate,
    expectedVersion: number | null,
    lease: Lease,
    signal?: AbortSignal,
  ): Promise<Checkpoint>;
}

/** The error every store raises when a write finds the lease held by someone else. */
export function leaseLostError(pipeline: string, cause?: unknown): SlotlakeError {
  return new SlotlakeError(`this run no longer holds the lease of pipeline ${pipeline}`, {
    kind: 'lease-lost',
    origin: 'checkpoint-store',
    hint: 'another run took over the pipeline (or the lease expired); this run stopped and acknowledged nothing more',
    cause,
  });
}

/** Intent keys are bounded so the item stays far below DynamoDB's 400 KB (keys are up to 1 KiB each). */
export const MAX_INTENT_KEY_BYTES = 200 * 1024;
