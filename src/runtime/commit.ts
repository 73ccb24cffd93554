/**
 * The commit sequence: the ONE place that orders durability.
 *
 *   1. intent in DynamoDB      the batch's object keys, under the lease (an object that closed early was
 *                              registered the same way just before its own upload)
 *   2. objects durable in S3   every object of the batch uploaded and confirmed
 *   3. checkpoint in DynamoDB  conditional on the lease and on the version this run last saw; in the same
 *                              atomic write: the intent is cleared and the batch's manifest is stored as
 *                              the pipeline's pending manifest
 *   4. manifest in S3          `manifests/<start>-<end>.json`, the batch's LSN range and its objects
 *   5. flush acknowledged to Postgres (standby status update with flush = checkpoint)
 *
 * Each step starts only after the previous one succeeded; a failure anywhere stops the sequence, so nothing
 * is checkpointed that is not in S3, and nothing is acknowledged that is not checkpointed. A crash between
 * 1 and 3 leaves an intent naming every object that may exist; the next run deletes them before it streams.
 * A manifest is written only for a batch whose checkpoint is stored, so readers who go by `manifests/` never
 * see an uncommitted object; a crash between 3 and 4 is repaired by the next run, which writes the pending
 * manifest again first. Only "this LSN is durable" travels back to the replication stream, through
 * `acknowledge`. Why each crash point is safe: docs/exactly-once.md.
 */
import { formatLsn, lsnKey, type Lsn } from '../lsn.js';
import type {
  Checkpoint,
  CheckpointStore,
  Lease,
  PartialTransaction,
  PendingManifest,
} from '../checkpoint/store.js';
import type { ArchivedObject, BatchWriter, UploadMeter } from '../sink/batch.js';
import type { S3Archive } from '../sink/s3.js';
import type { Logger } from '../log.js';
import type { Deadline } from '../support/deadline.js';
import { killPoint } from '../support/kill-points.js';
import { withRetry } from '../support/retry.js';

export interface DurablePosition {
  /** Everything committed before this LSN is archived (the checkpoint and the ack). */
  readonly lsn: Lsn;
  /** A transaction cut by the deadline: how many of its changes are archived. */
  readonly partial: PartialTransaction | undefined;
}

export interface CommitContext {
  readonly archive: S3Archive;
  readonly store: CheckpointStore;
  readonly logger: Logger;
  readonly deadline: Deadline;
  readonly meter: UploadMeter;
  readonly pipeline: string;
  readonly slot: string;
  readonly runId: string;
  /** The lease this run holds (its fence guards every write). */
  readonly lease: () => Lease;
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
    checkpoint.partial?.nextSeq === position.partial?.nextSeq
  );
}

/** Writes a manifest stored as pending by a checkpoint whose run ended before writing it (idempotent). */
export async function writePendingManifest(
  archive: S3Archive,
  manifest: PendingManifest,
  deadline: Deadline,
): Promise<void> {
  await withRetry(() => archive.putText(manifest.key, manifest.body, 'application/json'), {
    what: `writing manifest ${manifest.key}`,
    origin: 'object-store',
    deadline,
  });
}

export class CommitSequence {
  private checkpointLatencyMs = 100;

  constructor(
    private readonly context: CommitContext,
    private current: Checkpoint | null,
    private acknowledge: (lsn: Lsn) => void,
  ) {}

  get checkpoint(): Checkpoint | null {
    return this.current;
  }

  private manifestKey(batch: BatchWriter): string {
    const part = batch.firstRowContinues ? `-${String(batch.firstRowContinues.seq).padStart(10, '0')}` : '';
    return this.context.archive.key(
      `manifests/${lsnKey(batch.firstCommitLsn!)}-${lsnKey(batch.lastCommitLsn!)}${part}.json`,
    );
  }

  /** Estimated time for the steps after the uploads (the upload estimate comes from the batch). */
  estimateTailMs(): number {
    return this.context.meter.requestLatencyMs + this.checkpointLatencyMs + 50;
  }

  private manifestOf(
    batch: BatchWriter,
    objects: readonly ArchivedObject[],
    position: DurablePosition,
    counts: BatchCounts,
  ): PendingManifest {
    const key = this.manifestKey(batch);
    const body = {
      version: 1,
      pipeline: this.context.pipeline,
      slot: this.context.slot,
      runId: this.context.runId,
      startLsn: formatLsn(batch.firstCommitLsn!),
      endLsn: formatLsn(batch.lastCommitLsn!),
      previousCheckpoint: this.current ? formatLsn(this.current.lsn) : null,
      checkpoint: formatLsn(position.lsn),
      partial: position.partial
        ? { commitLsn: formatLsn(position.partial.commitLsn), nextSeq: position.partial.nextSeq }
        : null,
      transactions: counts.transactions,
      changes: objects.reduce((sum, object) => sum + object.rows, 0),
      bytes: objects.reduce((sum, object) => sum + object.bytes, 0),
      createdAt: new Date().toISOString(),
      objects: objects.map((object) => ({
        key: object.key,
        schema: object.schema,
        table: object.table,
        dt: object.dt,
        rows: object.rows,
        bytes: object.bytes,
        startLsn: formatLsn(object.firstCommitLsn),
        endLsn: formatLsn(object.lastCommitLsn),
      })),
    };
    return { key, body: `${JSON.stringify(body, null, 2)}\n` };
  }

  /**
   * Makes `batch` durable and moves the checkpoint and the slot to `position`.
   * `position` must cover exactly what the batch (and earlier batches) archived.
   */
  async commit(batch: BatchWriter, position: DurablePosition, counts: BatchCounts): Promise<CommitResult> {
    const { archive, store, logger, deadline } = this.context;
    const started = performance.now();
    // 1 + 2. Intent, then objects durable in S3.
    const objects = await batch.finish();
    const bytes = objects.reduce((sum, object) => sum + object.bytes, 0);
    const rows = objects.reduce((sum, object) => sum + object.rows, 0);
    if (objects.length > 0) killPoint('after-upload');
    const manifest = objects.length > 0 ? this.manifestOf(batch, objects, position, counts) : undefined;
    // 3. Checkpoint (clears the intent, stores the manifest as pending).
    if (!samePosition(this.current, position) || manifest) {
      const expected = this.current?.version ?? null;
      const checkpointStarted = performance.now();
      this.current = await withRetry(
        () =>
          store.write(
            {
              lsn: position.lsn,
              partial: position.partial,
              manifest,
              note: { runId: this.context.runId, slot: this.context.slot },
            },
            expected,
            this.context.lease(),
          ),
        { what: 'writing the checkpoint', origin: 'checkpoint-store', deadline },
      );
      this.checkpointLatencyMs =
        this.checkpointLatencyMs * 0.5 + (performance.now() - checkpointStarted) * 0.5;
      killPoint('after-checkpoint');
    }
    // 4. Manifest.
    if (manifest) {
      await writePendingManifest(archive, manifest, deadline);
      killPoint('after-manifest');
    }
    // 5. Acknowledge.
    this.acknowledge(position.lsn);
    killPoint('after-ack');
    if (objects.length > 0 || counts.transactions > 0) {
      logger.info('batch committed', {
        checkpoint: formatLsn(position.lsn),
        partial: position.partial
          ? `${formatLsn(position.partial.commitLsn)}#${position.partial.nextSeq}`
          : undefined,
        transactions: counts.transactions,
        changes: rows,
        objects: objects.length,
        bytes,
        flushMs: Math.round(performance.now() - started),
      });
    }
    return {
      checkpoint: this.current,
      objects,
      bytes,
      rows,
      flushMs: Math.round(performance.now() - started),
    };
  }
}
