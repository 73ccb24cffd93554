/**
 * The commit sequence: the ONE place that orders durability.
 *
 *   1. intent in DynamoDB      the batch's object keys and its staged manifest's key, under the lease (an object
 *                              that closed early was registered the same way just before its own upload)
 *   2. objects durable in S3   every object of the batch uploaded and confirmed; the manifest staged
 *   3. checkpoint in DynamoDB  conditional on the lease, on the version this run last saw and on never moving
 *                              back; in the same atomic write the intent is cleared and the staged manifest is
 *                              recorded as the pipeline's pending manifest
 *   4. manifest in S3          copied from staging to `manifests/<start>-<end>.json`
 *   5. flush acknowledged to Postgres (standby status update with flush = checkpoint), if the lease is still
 *      surely held
 *
 * Each step starts only after the previous one succeeded; a failure anywhere stops the sequence, so nothing is
 * checkpointed that is not in S3, and nothing is acknowledged that is not checkpointed. A crash between 1 and
 * 3 leaves an intent naming every object that may exist; the next run deletes them before it streams. A
 * manifest reaches `manifests/` only for a batch whose checkpoint is stored; a crash between 3 and 4 is
 * repaired by the next run, which copies the pending manifest again first. Every call runs under the run's
 * abort signal (deadline cutoff, lease fence). Once the checkpoint write of a batch has begun, its outcome may
 * be unknown (a lost response), so the batch is marked and nothing may delete its objects: only the stored
 * intent (cleared exactly when the checkpoint took effect) tells the next run what to remove.
 * Why each crash point is safe: docs/exactly-once.md.
 */
import type { Checkpoint, CheckpointStore, SourceIdentity } from '../checkpoint/store.js';
import { SlotlakeError } from '../errors.js';
import type { Logger } from '../log.js';
import { formatLsn, type Lsn } from '../lsn.js';
import type { DurablePosition } from '../pipeline/assembler.js';
import { sameProgress } from '../snapshot/progress.js';
import type { ArchivedObject, BatchWriter } from '../sink/batch.js';
import { buildManifest, manifestRelativeKey, stagingRelativeKey } from '../sink/manifest.js';
import type { ObjectStore } from '../sink/object-store.js';
import type { StoreSpeedMeter } from '../sink/store-speed.js';
import type { Deadline } from '../support/deadline.js';
import { killPoint } from '../support/kill-points.js';
import { withRetry } from '../support/retry.js';
import type { LeaseKeeper } from './lease.js';

export interface CommitContext {
  readonly objects: ObjectStore;
  readonly checkpoints: CheckpointStore;
  readonly logger: Logger;
  readonly deadline: Deadline;
  readonly speed: StoreSpeedMeter;
  readonly pipeline: string;
  readonly slot: string;
  readonly runId: string;
  /** The source every checkpoint of this run belongs to. */
  readonly source: SourceIdentity;
  readonly lease: LeaseKeeper;
  /** Aborted at the deadline's cutoff or the lease's fence. */
  readonly signal: AbortSignal;
  /** Reports a durable position to the server (ReplicationStream.acknowledge). */
  readonly acknowledge: (lsn: Lsn) => void;
  /** Snapshot requests this run merged into its snapshot progress: the first checkpoint write consumes them. */
  readonly mergedSnapshotRequests?: readonly string[];
}

export interface CommitResult {
  readonly checkpoint: Checkpoint | null;
  readonly objects: readonly ArchivedObject[];
  readonly bytes: number;
  readonly rows: number;
  readonly flushMs: number;
}

export interface BatchCounts {
  readonly transactions: number;
  readonly changes: number;
}

function samePosition(checkpoint: Checkpoint | null, position: DurablePosition): boolean {
  if (!checkpoint) return false;
  return (
    checkpoint.lsn === position.lsn &&
    checkpoint.partial?.commitLsn === position.partial?.commitLsn &&
    checkpoint.partial?.nextSeq === position.partial?.nextSeq &&
    (position.snapshot === undefined ||
      (checkpoint.snapshot !== undefined && sameProgress(checkpoint.snapshot, position.snapshot)))
  );
}

/**
 * Progress only moves forward: (lsn, partial commit LSN, partial next seq) never decreases on one source.
 * The one check, here, before anything is written.
 */
function assertForward(current: Checkpoint | null, position: DurablePosition, source: SourceIdentity): void {
  if (
    !current ||
    current.source?.systemId !== source.systemId ||
    current.source?.database !== source.database
  )
    return;
  const back =
    position.lsn < current.lsn ||
    (position.lsn === current.lsn &&
      current.partial !== undefined &&
      position.partial !== undefined &&
      (position.partial.commitLsn < current.partial.commitLsn ||
        (position.partial.commitLsn === current.partial.commitLsn &&
          position.partial.nextSeq < current.partial.nextSeq)));
  if (back)
    throw new SlotlakeError(
      `refusing to move the checkpoint back from ${formatLsn(current.lsn)} to ${formatLsn(position.lsn)}`,
      { kind: 'internal', hint: 'a bug: report it with the log of this run' },
    );
}

/**
 * Copies a committed batch's staged manifest into `manifests/` and removes the staged copy (idempotent).
 * Returns false when neither copy exists (logged: the manifest is lost; its objects stay in `data/`).
 */
export async function publishManifest(
  objects: ObjectStore,
  manifest: { key: string; stagingKey: string },
  options: { deadline: Deadline; signal: AbortSignal; logger: Logger },
): Promise<boolean> {
  const retry = { origin: 'object-store' as const, deadline: options.deadline, signal: options.signal };
  const staged = await withRetry(() => objects.exists(manifest.stagingKey, options.signal), {
    ...retry,
    what: `checking ${manifest.stagingKey}`,
  });
  if (staged) {
    await withRetry(() => objects.copy(manifest.stagingKey, manifest.key, options.signal), {
      ...retry,
      what: `writing manifest ${manifest.key}`,
    });
  } else if (
    !(await withRetry(() => objects.exists(manifest.key, options.signal), {
      ...retry,
      what: `checking ${manifest.key}`,
    }))
  ) {
    options.logger.error('a committed batch has lost its staged manifest and has none in manifests/', {
      manifest: manifest.key,
    });
    return false;
  }
  await withRetry(() => objects.deleteKey(manifest.stagingKey, options.signal), {
    ...retry,
    what: `removing ${manifest.stagingKey}`,
  }).catch((error: unknown) => {
    if (options.signal.aborted) throw error;
    options.logger.warn('could not remove a staged manifest (harmless: it is copied again or ignored)', {
      key: manifest.stagingKey,
    });
  });
  return true;
}

export class CommitSequence {
  /** Snapshot requests not yet consumed by a checkpoint write. */
  private requestsToConsume: readonly string[];
  /** The stored pending manifest, once this run has copied it into place (nothing to copy again then). */
  private published: string | undefined;

  constructor(
    private readonly context: CommitContext,
    private current: Checkpoint | null,
  ) {
    this.requestsToConsume = context.mergedSnapshotRequests ?? [];
  }

  get checkpoint(): Checkpoint | null {
    return this.current;
  }

  /**
   * The key of the pending manifest stored in the checkpoint item, when this run has already published it:
   * the run forgets it before giving the lease up, so that no later run spends requests copying it again.
   */
  get publishedPendingManifest(): string | undefined {
    return this.published;
  }

  /**
   * Estimated time for the steps around the uploads: the intent and checkpoint writes, staging the manifest
   * and copying it into place (the upload estimate comes from the batch).
   */
  estimateTailMs(): number {
    const { speed } = this.context;
    return 2 * speed.commitMs + 2 * speed.requestMs;
  }

  /**
   * Makes `batch` durable and moves the checkpoint and the slot to `position`.
   * `position` must cover exactly what the batch (and earlier batches) archived. `onCheckpointed` hears of the
   * batch as soon as its checkpoint is stored (before the manifest is copied and the position acknowledged),
   * so a batch is counted as committed even when a later step of its sequence fails.
   */
  async commit<R>(
    batch: BatchWriter<R>,
    position: DurablePosition,
    counts: BatchCounts,
    onCheckpointed: (result: CommitResult) => void = () => undefined,
  ): Promise<CommitResult> {
    const { objects: store, checkpoints, logger, deadline, signal, speed } = this.context;
    const started = performance.now();
    assertForward(this.current, position, this.context.source);
    const manifestRelative =
      batch.firstCommitLsn !== undefined && batch.lastCommitLsn !== undefined
        ? manifestRelativeKey(batch.firstCommitLsn, batch.lastCommitLsn, batch.firstRowContinues?.seq)
        : undefined;
    const manifestKey = manifestRelative ? store.key(manifestRelative) : undefined;
    const stagingKey = manifestRelative ? store.key(stagingRelativeKey(manifestRelative)) : undefined;
    // 1 + 2. Intent (objects and the staged manifest), then the objects durable in S3.
    const archived = await batch.finish(stagingKey && !batch.isEmpty ? [stagingKey] : []);
    const bytes = archived.reduce((sum, object) => sum + object.bytes, 0);
    const rows = archived.reduce((sum, object) => sum + object.rows, 0);
    const pending =
      archived.length > 0 && manifestKey && stagingKey ? { key: manifestKey, stagingKey } : undefined;
    if (pending) {
      const manifest = buildManifest({
        pipeline: this.context.pipeline,
        slot: this.context.slot,
        runId: this.context.runId,
        source: this.context.source,
        firstCommitLsn: batch.firstCommitLsn!,
        lastCommitLsn: batch.lastCommitLsn!,
        previousCheckpoint: this.current?.lsn,
        checkpoint: position.lsn,
        partial: position.partial,
        transactions: counts.transactions,
        objects: archived,
        createdAt: new Date().toISOString(),
      });
      this.context.lease.assertHeld();
      const stagedAt = performance.now();
      await withRetry(
        () =>
          store.putText(
            pending.stagingKey,
            `${JSON.stringify(manifest, null, 2)}\n`,
            'application/json',
            signal,
          ),
        { what: `staging manifest ${pending.stagingKey}`, origin: 'object-store', deadline, signal },
      );
      speed.recordUpload(1, performance.now() - stagedAt);
      killPoint('after-upload');
    }
    // 3. Checkpoint (clears the intent, records the pending manifest). From here on the batch's objects may
    // be committed even if the write fails (a lost response): nothing may delete them.
    if (!samePosition(this.current, position) || pending || this.requestsToConsume.length > 0) {
      const expected = this.current?.version ?? null;
      batch.checkpointBegun = true;
      // Whatever the write's outcome, the stored pending manifest is no longer one this run published.
      this.published = undefined;
      const checkpointStarted = performance.now();
      const previous = this.current;
      const consumed = this.requestsToConsume;
      try {
        const written = await withRetry(
          () =>
            checkpoints.write(
              {
                lsn: position.lsn,
                partial: position.partial,
                source: this.context.source,
                manifest: pending,
                speed: speed.snapshot(),
                snapshot: position.snapshot,
                consumedSnapshotRequests: consumed,
                note: { runId: this.context.runId, slot: this.context.slot },
              },
              expected,
              this.context.lease.lease,
              signal,
            ),
          { what: 'writing the checkpoint', origin: 'checkpoint-store', deadline, signal },
        );
        this.current = { ...written, snapshot: written.snapshot ?? previous?.snapshot };
        this.requestsToConsume = [];
      } catch (error) {
        if (signal.aborted) speed.recordUnfinishedCommit(performance.now() - checkpointStarted);
        throw error;
      }
      speed.recordCommit(performance.now() - checkpointStarted);
      killPoint('after-checkpoint');
    }
    onCheckpointed({
      checkpoint: this.current,
      objects: archived,
      bytes,
      rows,
      flushMs: Math.round(performance.now() - started),
    });
    // 4. Manifest into place.
    if (pending) {
      if (await publishManifest(store, pending, { deadline, signal, logger })) this.published = pending.key;
      killPoint('after-manifest');
    }
    // 5. Acknowledge — only while the lease is surely ours (a fenced run acknowledges nothing more).
    if (this.context.lease.held) {
      this.context.acknowledge(position.lsn);
      killPoint('after-ack');
    }
    const flushMs = Math.round(performance.now() - started);
    if (archived.length > 0 || counts.transactions > 0) {
      logger.info('batch committed', {
        checkpoint: formatLsn(position.lsn),
        partial: position.partial
          ? `${formatLsn(position.partial.commitLsn)}#${position.partial.nextSeq}`
          : undefined,
        transactions: counts.transactions,
        changes: rows,
        objects: archived.length,
        bytes,
        flushMs,
      });
    }
    return { checkpoint: this.current, objects: archived, bytes, rows, flushMs };
  }
}
