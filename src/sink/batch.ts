/**
 * A batch: whole transactions (or the cut-off head of one, at a deadline) written as objects per table
 * and commit date, then committed together.
 *
 * Layout (contract §3): `data/<schema>.<table>/dt=<YYYY-MM-DD>/<startLsn>-<endLsn>[-<part>].jsonl.gz`, where
 * startLsn/endLsn are the commit LSNs of the first and last transaction with rows in the object, as 16
 * upper-case hex digits, so key order is LSN order. `-<part>` (the zero-padded `seq` of the object's first
 * row) appears only when the object starts in the middle of a transaction whose earlier rows of the same
 * table may be in another object — a split by size, or a transaction resumed by a later run — which keeps
 * every key unique and deterministic. Objects are closed and uploaded when they pass the size limit (in
 * the background, while reading goes on) or when the batch ends. The batch remembers nothing of the rows
 * themselves: memory is bounded by the number of open objects, not by rows.
 */
import { mkdirSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { lsnKey, type Lsn } from '../lsn.js';
import { tableKeySegment } from '../names.js';
import type { Deadline } from '../support/deadline.js';
import { killPoint } from '../support/kill-points.js';
import { withRetry } from '../support/retry.js';
import type { S3Archive } from './s3.js';
import { SpooledObject, type SpoolIdentity } from './spool.js';

export interface ArchivedObject {
  readonly key: string;
  readonly schema: string;
  readonly table: string;
  readonly dt: string;
  readonly rows: number;
  readonly bytes: number;
  readonly uncompressedBytes: number;
  readonly firstCommitLsn: Lsn;
  readonly lastCommitLsn: Lsn;
}

export function objectKey(identity: SpoolIdentity, lastCommitLsn: Lsn, extension = 'jsonl.gz'): string {
  const part = identity.startsMidTransaction ? `-${String(identity.firstSeq).padStart(10, '0')}` : '';
  return (
    `data/${tableKeySegment(identity)}/dt=${identity.dt}/` +
    `${lsnKey(identity.firstCommitLsn)}-${lsnKey(lastCommitLsn)}${part}.${extension}`
  );
}

/** Upload speed, measured, for the flush-time estimate. */
export class UploadMeter {
  private bytesPerMs = 5_000; // a cautious prior: 5 MB/s
  private latencyMs = 150; // a cautious prior per request
  private samples = 0;

  record(bytes: number, elapsedMs: number): void {
    const elapsed = Math.max(1, elapsedMs);
    // Small objects measure latency; large ones throughput.
    if (bytes < 256 * 1024) {
      this.latencyMs = this.samples === 0 ? elapsed : this.latencyMs * 0.7 + elapsed * 0.3;
    } else {
      const rate = bytes / Math.max(1, elapsed - this.latencyMs);
      this.bytesPerMs = this.samples === 0 ? rate : this.bytesPerMs * 0.7 + rate * 0.3;
    }
    this.samples++;
  }

  /** Time to upload `objects` objects holding `bytes`, `concurrency` at a time. */
  estimateMs(objects: number, bytes: number, concurrency: number): number {
    if (objects === 0) return 0;
    return Math.ceil(objects / concurrency) * this.latencyMs + bytes / this.bytesPerMs;
  }

  get requestLatencyMs(): number {
    return this.latencyMs;
  }
}

export interface BatchWriterOptions {
  readonly archive: S3Archive;
  /** Records keys as the intent before they are uploaded (the crash-recovery contract). */
  readonly registerIntent: (keys: readonly string[]) => Promise<void>;
  /** Bounds upload retries. */
  readonly deadline?: Deadline;
  readonly spoolDir: string;
  readonly objectMaxBytes: number;
  readonly meter: UploadMeter;
  readonly uploadConcurrency?: number;
  readonly onObjectArchived?: (object: ArchivedObject) => void;
}

export class BatchWriter {
  private readonly open = new Map<string, SpooledObject>();
  /** Per table and date: the commit LSN of the transaction in which the last object was closed by size. */
  private readonly splitIn = new Map<string, Lsn>();
  private readonly uploads: Promise<ArchivedObject>[] = [];
  private readonly uploaded: ArchivedObject[] = [];
  private uploadFailure: unknown;
  private running = 0;
  private readonly waiting: (() => void)[] = [];
  private closedBytesPending = 0;
  private closedObjectsPending = 0;
  private fileCounter = 0;
  rows = 0;
  uncompressedBytes = 0;
  firstCommitLsn: Lsn | undefined;
  lastCommitLsn: Lsn | undefined;
  /** Keys recorded in the intent so far (objects that may exist in S3 until the batch commits). */
  readonly registeredKeys: string[] = [];
  /** Set when the batch's first row continues a transaction begun in an earlier batch or run. */
  firstRowContinues: { seq: number } | undefined;

  constructor(
    private readonly options: BatchWriterOptions,
    readonly startedAtMs: number,
  ) {
    mkdirSync(options.spoolDir, { recursive: true });
  }

  get isEmpty(): boolean {
    return this.rows === 0;
  }

  get openObjects(): number {
    return this.open.size;
  }

  /** Objects of this batch so far, open or closed (the manifest lists them all). */
  get objectCount(): number {
    return this.open.size + this.uploads.length;
  }

  /**
   * Appends one record line for (schema, table, dt). `startsMidTransaction` tells whether rows of this
   * row's transaction may already be in another object (resumed or split transaction).
   */
  write(
    schema: string,
    table: string,
    dt: string,
    commitLsn: Lsn,
    seq: number,
    line: string,
    startsMidTransaction: boolean,
  ): SpooledObject {
    const slot = `${schema}.${table}/${dt}`;
    let object = this.open.get(slot);
    if (!object) {
      // Rows of this transaction may sit in the object just closed by size: the key needs the -<seq> part.
      const continues = startsMidTransaction || this.splitIn.get(slot) === commitLsn;
      this.splitIn.delete(slot);
      object = new SpooledObject(
        join(this.options.spoolDir, `${process.pid}-${++this.fileCounter}.jsonl.gz`),
        {
          schema,
          table,
          dt,
          firstCommitLsn: commitLsn,
          firstSeq: seq,
          startsMidTransaction: continues,
        },
      );
      this.open.set(slot, object);
    }
    object.write(line, commitLsn);
    this.rows++;
    this.uncompressedBytes += line.length + 1;
    if (this.firstCommitLsn === undefined) {
      this.firstCommitLsn = commitLsn;
      if (startsMidTransaction) this.firstRowContinues = { seq };
    }
    this.lastCommitLsn = commitLsn;
    if (object.compressedBytes >= this.options.objectMaxBytes) {
      this.open.delete(slot);
      this.splitIn.set(slot, commitLsn);
      this.startUpload(object);
    }
    return object;
  }

  /** Objects that reached the size limit are uploaded while the batch goes on. */
  private startUpload(object: SpooledObject, registered = false): void {
    const task = this.closeAndUpload(object, registered);
    task.catch((error: unknown) => (this.uploadFailure ??= error));
    this.uploads.push(task);
  }

  private async acquire(): Promise<void> {
    const limit = this.options.uploadConcurrency ?? 4;
    while (this.running >= limit) await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.running++;
  }

  private release(): void {
    this.running--;
    this.waiting.shift()?.();
  }

  private async register(keys: readonly string[]): Promise<void> {
    this.registeredKeys.push(...keys);
    await this.options.registerIntent(keys);
  }

  private keyOf(object: SpooledObject): string {
    return this.options.archive.key(objectKey(object.identity, object.lastCommitLsn));
  }

  private async closeAndUpload(object: SpooledObject, registered: boolean): Promise<ArchivedObject> {
    const bytes = await object.close();
    this.closedBytesPending += bytes;
    this.closedObjectsPending++;
    const key = this.keyOf(object);
    try {
      if (!registered) await this.register([key]);
    } catch (error) {
      this.closedBytesPending -= bytes;
      this.closedObjectsPending--;
      await rm(object.path, { force: true });
      throw error;
    }
    await this.acquire();
    try {
      const started = performance.now();
      await withRetry(() => this.options.archive.uploadFile(object.path, key, bytes, 'application/gzip'), {
        what: `uploading ${key}`,
        origin: 'object-store',
        ...(this.options.deadline ? { deadline: this.options.deadline } : {}),
      });
      killPoint('mid-upload');
      this.options.meter.record(bytes, performance.now() - started);
      const archived: ArchivedObject = {
        key,
        schema: object.identity.schema,
        table: object.identity.table,
        dt: object.identity.dt,
        rows: object.rows,
        bytes,
        uncompressedBytes: object.uncompressedBytes,
        firstCommitLsn: object.identity.firstCommitLsn,
        lastCommitLsn: object.lastCommitLsn,
      };
      this.uploaded.push(archived);
      this.options.onObjectArchived?.(archived);
      return archived;
    } finally {
      this.closedBytesPending -= bytes;
      this.closedObjectsPending--;
      this.release();
      await rm(object.path, { force: true });
    }
  }

  /** Throws the first background upload failure, if any. */
  checkUploads(): void {
    if (this.uploadFailure !== undefined) throw this.uploadFailure;
  }

  /** Waits while a written object asks for it (gzip backpressure). */
  async drain(object: SpooledObject): Promise<void> {
    await object.drain();
  }

  /** Estimated time to make this batch durable in S3 now. */
  estimateUploadMs(): number {
    let bytes = this.closedBytesPending;
    for (const object of this.open.values())
      bytes += Math.max(object.compressedBytes, object.uncompressedBytes / 8);
    const objects = this.open.size + this.closedObjectsPending;
    return this.options.meter.estimateMs(objects, bytes, this.options.uploadConcurrency ?? 4);
  }

  /**
   * Closes every object, records their keys (and `extraIntentKeys`, e.g. the manifest's) as the intent,
   * then waits until all objects are durable in S3.
   */
  async finish(extraIntentKeys: readonly string[] = []): Promise<ArchivedObject[]> {
    const closing = [...this.open.values()];
    this.open.clear();
    await Promise.all(closing.map((object) => object.close()));
    const keys = [...closing.map((object) => this.keyOf(object)), ...extraIntentKeys];
    if (keys.length > 0) {
      try {
        await this.register(keys);
      } catch (error) {
        // Nothing of these objects was uploaded, and discard() no longer sees them: drop their files.
        await Promise.all(closing.map((object) => rm(object.path, { force: true })));
        throw error;
      }
      killPoint('after-intent');
    }
    for (const object of closing) this.startUpload(object, true);
    await Promise.allSettled(this.uploads);
    this.checkUploads();
    return [...this.uploaded].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  /** After a failure: drop local files; uploaded objects stay (the next run's recovery handles them). */
  async discard(): Promise<void> {
    for (const object of this.open.values()) await object.discard();
    this.open.clear();
    await Promise.allSettled(this.uploads);
  }
}
