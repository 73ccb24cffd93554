/**
 * A batch: whole transactions (or the head of one, when a batch must end inside it) written as objects per
 * table, table schema and commit date, then committed together by the commit sequence (runtime/commit.ts).
 *
 * Layout (contract §3): `data/<schema>.<table>/dt=<YYYY-MM-DD>/<startLsn>-<endLsn>[-<part>].<ext>`, where
 * startLsn/endLsn are the commit LSNs of the first and last transaction with rows in the object, as 16
 * upper-case hex digits, so key order is LSN order; schema and table are escaped into one key segment each
 * (names.ts). `-<part>` (the zero-padded `seq` of the object's first row) appears only when the object starts
 * in the middle of a transaction whose earlier rows of the same table may be in another object — a split by
 * size, a schema change, a batch that ended inside the transaction, or a transaction resumed by a later run —
 * which keeps every key unique and deterministic. Objects are closed and uploaded when they pass the size
 * limit (in the background, while reading goes on) or when the batch ends.
 *
 * Before any object may exist in S3 its key is recorded in the intent (under the lease), and no upload starts
 * unless the lease is surely held; uploads run under the run's abort signal (deadline cutoff, lease fence).
 * The batch remembers nothing of the rows themselves: memory is bounded by the number of open objects.
 */
import { mkdirSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { SlotlakeError } from '../errors.js';
import { lsnKey, type Lsn } from '../lsn.js';
import type { TypeRegistry } from '../decoding/values.js';
import { tableKeySegment, type TableName } from '../names.js';
import type { Deadline } from '../support/deadline.js';
import { killPoint } from '../support/kill-points.js';
import { withRetry } from '../support/retry.js';
import type { ObjectStore } from './object-store.js';
import type { StoreSpeedMeter } from './store-speed.js';

/** One object being written, whatever its format (sink/spool.ts for JSON Lines, sink/parquet for Parquet). */
export interface ObjectWriter<R> {
  /** What the format adds to the manifest's entry for this object (after `close()`), e.g. column statistics. */
  describe?(): Record<string, unknown>;
  readonly path: string;
  /** Appends one record. Returns false when the caller should await `drain()`. */
  write(record: R): boolean;
  /** True while the writer wants the caller to await `drain()` before writing more. */
  readonly needsDrain: boolean;
  drain(): Promise<void>;
  /** Ends the object; resolves with its size once the file is complete. Idempotent. */
  close(): Promise<number>;
  discard(): Promise<void>;
  readonly rows: number;
  /** Bytes on disk so far. */
  readonly compressedBytes: number;
  /** Uncompressed bytes so far (an estimate for formats that encode in blocks). */
  readonly uncompressedBytes: number;
}

/** How objects of one format are opened and named. */
export interface ObjectFormat<R> {
  /** File extension, e.g. `jsonl.gz`. */
  readonly extension: string;
  readonly contentType: string;
  open(path: string, schema: TableSchemaRef): ObjectWriter<R>;
}

/** A column of the table an object holds, as formats that type their columns need it. */
export interface ObjectColumn {
  readonly name: string;
  readonly typeOid: number;
  readonly typeModifier: number;
  /** Stable id of the column (Parquet `field_id`). */
  readonly fieldId: number;
}

/**
 * The table schema an object is written with: a new Relation message (a schema change) starts new objects.
 * `id` is unique per (table, schema version) within a run; `description` goes into the manifest; `columns`
 * and `types` let typed formats (Parquet) build their schema.
 */
export interface TableSchemaRef {
  readonly id: number;
  readonly table: TableName;
  readonly description: unknown;
  readonly columns: readonly ObjectColumn[];
  readonly types: TypeRegistry;
  /**
   * An object of its own beside the table's others (a snapshot chunk): it does not close the table's open
   * object as a new schema version would.
   */
  readonly sideObject?: boolean;
}

/** Where the next record goes. */
export interface RecordTarget {
  readonly schema: TableSchemaRef;
  /** UTC date of the transaction's commit, YYYY-MM-DD. */
  readonly dt: string;
  readonly commitLsn: Lsn;
  readonly seq: number;
  /**
   * True when rows of this record's transaction may already be archived in another object: the transaction
   * began in an earlier batch or run.
   */
  readonly transactionContinues: boolean;
}

export interface ArchivedObject {
  readonly key: string;
  readonly table: TableName;
  readonly dt: string;
  readonly rows: number;
  readonly bytes: number;
  readonly uncompressedBytes: number;
  readonly firstCommitLsn: Lsn;
  readonly lastCommitLsn: Lsn;
  /** `seq` of the object's first row, when the object starts inside a transaction. */
  readonly firstSeq: number | undefined;
  /** The table schema the object was written with (its `description`). */
  readonly schema: unknown;
  /** What the format says of the object (Parquet: its physical schema and column statistics). */
  readonly format: Record<string, unknown> | undefined;
}

export function objectKey(
  table: TableName,
  dt: string,
  firstCommitLsn: Lsn,
  lastCommitLsn: Lsn,
  part: number | undefined,
  extension: string,
): string {
  const suffix = part === undefined ? '' : `-${String(part).padStart(10, '0')}`;
  return (
    `data/${tableKeySegment(table)}/dt=${dt}/` +
    `${lsnKey(firstCommitLsn)}-${lsnKey(lastCommitLsn)}${suffix}.${extension}`
  );
}

export interface BatchWriterOptions<R> {
  readonly store: ObjectStore;
  readonly format: ObjectFormat<R>;
  /** Records keys in the intent before anything may be uploaded under them (the crash-recovery contract). */
  readonly registerIntent: (keys: readonly string[], signal: AbortSignal) => Promise<void>;
  /** Throws when this run may no longer write (its lease may have expired). */
  readonly assertWritable: () => void;
  /** Aborted at the deadline's cutoff or the lease's fence: uploads in flight are cancelled. */
  readonly signal: AbortSignal;
  readonly deadline?: Deadline;
  readonly spoolDir: string;
  readonly objectMaxBytes: number;
  readonly speed: StoreSpeedMeter;
  readonly uploadConcurrency?: number;
}

/** One object of the batch while it is written. */
interface OpenObject<R> {
  readonly writer: ObjectWriter<R>;
  readonly schema: TableSchemaRef;
  readonly dt: string;
  readonly firstCommitLsn: Lsn;
  /** The part suffix (seq of the first row), when the object starts inside a transaction. */
  readonly part: number | undefined;
  lastCommitLsn: Lsn;
}

/** Objects uploaded at once: enough to hide S3's per-request latency, few enough to bound part buffers. */
const DEFAULT_UPLOAD_CONCURRENCY = 4;

export class BatchWriter<R> {
  private readonly open = new Map<string, OpenObject<R>>();
  /** Per table and date: the commit LSN of the transaction in which that table's last object was closed. */
  private readonly closedIn = new Map<string, Lsn>();
  private readonly uploads: Promise<ArchivedObject>[] = [];
  private readonly uploaded: ArchivedObject[] = [];
  private uploadFailure: unknown;
  private running = 0;
  private readonly waiting: (() => void)[] = [];
  private closedBytesPending = 0;
  private closedObjectsPending = 0;
  private fileCounter = 0;
  private finishing = false;
  rows = 0;
  uncompressedBytes = 0;
  firstCommitLsn: Lsn | undefined;
  lastCommitLsn: Lsn | undefined;
  /** Keys recorded in the intent so far (objects that may exist in S3 until the batch commits). */
  readonly registeredKeys: string[] = [];
  /** Bytes of the keys this batch has recorded or will record in the intent (open objects included). */
  private intentBytes = 0;
  /** Set when the batch's first row continues a transaction begun in an earlier batch or run. */
  firstRowContinues: { seq: number } | undefined;
  /**
   * Set by the commit sequence when the checkpoint write of this batch begins: from then on the batch may be
   * committed (a lost response), and nothing may delete its objects.
   */
  checkpointBegun = false;

  constructor(
    private readonly options: BatchWriterOptions<R>,
    readonly startedAtMs: number,
  ) {
    mkdirSync(options.spoolDir, { recursive: true });
  }

  get isEmpty(): boolean {
    return this.rows === 0;
  }

  /** Objects being written (not yet closed). */
  get openObjects(): number {
    return this.open.size;
  }

  /** Objects of this batch so far, open or closed (the manifest lists them all). */
  get objectCount(): number {
    return this.open.size + this.uploads.length;
  }

  /** Bytes the batch's keys take in the intent, counting open objects' longest possible key. */
  get intentKeyBytes(): number {
    return this.intentBytes;
  }

  private slotOf(target: { schema: TableSchemaRef; dt: string }): string {
    return `${target.schema.id}/${target.dt}`;
  }

  private tableDateOf(target: { schema: TableSchemaRef; dt: string }): string {
    return `${tableKeySegment(target.schema.table)}/${target.dt}`;
  }

  /** True when a record for `target` would open a new object (the batch policy caps objects per batch). */
  opensObject(target: { schema: TableSchemaRef; dt: string }): boolean {
    return !this.open.has(this.slotOf(target));
  }

  /** The longest key an object of `table` can get (for the intent-size cap). */
  maxKeyBytes(table: TableName): number {
    const longest = objectKey(table, '0000-00-00', 0n as Lsn, 0n as Lsn, 0, this.options.format.extension);
    return Buffer.byteLength(this.options.store.key(longest));
  }

  /**
   * Appends one record of about `recordBytes` uncompressed bytes; returns the object it went to (await
   * `drain(object)` when its write asked for it).
   */
  write(target: RecordTarget, record: R, recordBytes: number): ObjectWriter<R> {
    if (this.finishing) throw new SlotlakeError('write to a batch being committed', { kind: 'internal' });
    const slot = this.slotOf(target);
    let object = this.open.get(slot);
    if (!object) {
      // The table's schema changed: its object with the old schema (same table and date, another schema
      // version; schema handles are distinct objects, so tables compare by name) is complete.
      const tableDate = this.tableDateOf(target);
      for (const [otherSlot, other] of target.schema.sideObject ? [] : this.open) {
        if (
          !other.schema.sideObject &&
          other.schema.table.schema === target.schema.table.schema &&
          other.schema.table.table === target.schema.table.table &&
          other.dt === target.dt &&
          otherSlot !== slot
        ) {
          this.open.delete(otherSlot);
          this.closedIn.set(tableDate, other.lastCommitLsn);
          this.startUpload(other);
        }
      }
      // A schema change or a size split closes an object inside a transaction: the next object of the same
      // table and date in that transaction needs the -<seq> part, as does one continuing an earlier batch.
      const continues = target.transactionContinues || this.closedIn.get(tableDate) === target.commitLsn;
      const path = join(
        this.options.spoolDir,
        `${process.pid}-${++this.fileCounter}.${this.options.format.extension}`,
      );
      object = {
        writer: this.options.format.open(path, target.schema),
        schema: target.schema,
        dt: target.dt,
        firstCommitLsn: target.commitLsn,
        part: continues ? target.seq : undefined,
        lastCommitLsn: target.commitLsn,
      };
      this.open.set(slot, object);
      this.intentBytes += this.maxKeyBytes(target.schema.table);
    }
    object.writer.write(record);
    object.lastCommitLsn = target.commitLsn;
    this.rows++;
    this.uncompressedBytes += recordBytes;
    if (this.firstCommitLsn === undefined) {
      this.firstCommitLsn = target.commitLsn;
      if (target.transactionContinues) this.firstRowContinues = { seq: target.seq };
    }
    this.lastCommitLsn = target.commitLsn;
    if (object.writer.compressedBytes >= this.options.objectMaxBytes) {
      this.open.delete(slot);
      this.closedIn.set(this.tableDateOf(target), target.commitLsn);
      this.startUpload(object);
    }
    return object.writer;
  }

  private keyOf(object: OpenObject<R>): string {
    return this.options.store.key(
      objectKey(
        object.schema.table,
        object.dt,
        object.firstCommitLsn,
        object.lastCommitLsn,
        object.part,
        this.options.format.extension,
      ),
    );
  }

  /** Objects that reached the size limit (or a schema change) are uploaded while the batch goes on. */
  private startUpload(object: OpenObject<R>, registered = false): void {
    const task = this.closeAndUpload(object, registered);
    task.catch((error: unknown) => (this.uploadFailure ??= error));
    this.uploads.push(task);
  }

  private async acquireUploadSlot(): Promise<void> {
    const limit = this.options.uploadConcurrency ?? DEFAULT_UPLOAD_CONCURRENCY;
    while (this.running >= limit) await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.running++;
  }

  private releaseUploadSlot(): void {
    this.running--;
    this.waiting.shift()?.();
  }

  private async register(keys: readonly string[]): Promise<void> {
    this.options.assertWritable();
    this.registeredKeys.push(...keys);
    await this.options.registerIntent(keys, this.options.signal);
  }

  private async closeAndUpload(object: OpenObject<R>, registered: boolean): Promise<ArchivedObject> {
    const bytes = await object.writer.close();
    this.closedBytesPending += bytes;
    this.closedObjectsPending++;
    const key = this.keyOf(object);
    let started = 0;
    try {
      if (!registered) await this.register([key]);
      await this.acquireUploadSlot();
      try {
        // Never start an upload this run may no longer own: the fence is checked right before each one.
        this.options.assertWritable();
        started = performance.now();
        await withRetry(
          () =>
            this.options.store.uploadFile(
              object.writer.path,
              key,
              bytes,
              this.options.format.contentType,
              this.options.signal,
            ),
          {
            what: `uploading ${key}`,
            origin: 'object-store',
            signal: this.options.signal,
            ...(this.options.deadline ? { deadline: this.options.deadline } : {}),
          },
        );
        killPoint('mid-upload');
        this.options.speed.recordUpload(bytes, performance.now() - started);
      } catch (error) {
        if (started > 0 && this.options.signal.aborted)
          this.options.speed.recordUnfinishedUpload(bytes, performance.now() - started);
        throw error;
      } finally {
        this.releaseUploadSlot();
      }
      const archived: ArchivedObject = {
        key,
        table: object.schema.table,
        dt: object.dt,
        rows: object.writer.rows,
        bytes,
        uncompressedBytes: object.writer.uncompressedBytes,
        firstCommitLsn: object.firstCommitLsn,
        lastCommitLsn: object.lastCommitLsn,
        firstSeq: object.part,
        schema: object.schema.description,
        format: object.writer.describe?.(),
      };
      this.uploaded.push(archived);
      return archived;
    } finally {
      this.closedBytesPending -= bytes;
      this.closedObjectsPending--;
      await rm(object.writer.path, { force: true });
    }
  }

  /** Throws the first background upload failure, if any. */
  checkUploads(): void {
    if (this.uploadFailure !== undefined) throw this.uploadFailure;
  }

  /** Waits while a written object asks for it (compression backpressure). */
  async drain(object: ObjectWriter<R>): Promise<void> {
    await object.drain();
  }

  /** Estimated time to make this batch durable in S3 now. */
  estimateUploadMs(): number {
    let bytes = this.closedBytesPending;
    for (const object of this.open.values())
      bytes += Math.max(object.writer.compressedBytes, object.writer.uncompressedBytes / 8);
    const objects = this.open.size + this.closedObjectsPending;
    return this.options.speed.uploadMs(
      objects,
      bytes,
      this.options.uploadConcurrency ?? DEFAULT_UPLOAD_CONCURRENCY,
    );
  }

  /**
   * Closes every object, records their keys (and `extraIntentKeys`, e.g. the staged manifest's) in the
   * intent, then waits until all objects are durable in S3.
   */
  async finish(extraIntentKeys: readonly string[] = []): Promise<ArchivedObject[]> {
    this.finishing = true;
    const closing = [...this.open.values()];
    this.open.clear();
    await Promise.all(closing.map((object) => object.writer.close()));
    const keys = [...closing.map((object) => this.keyOf(object)), ...extraIntentKeys];
    if (keys.length > 0) {
      try {
        await this.register(keys);
      } catch (error) {
        // Nothing of these objects was uploaded, and discard() no longer sees them: drop their files.
        await Promise.all(closing.map((object) => rm(object.writer.path, { force: true })));
        await Promise.allSettled(this.uploads);
        throw error;
      }
      killPoint('after-intent');
    }
    for (const object of closing) this.startUpload(object, true);
    await Promise.allSettled(this.uploads);
    this.checkUploads();
    return [...this.uploaded].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  /** After a failure: drop local files; uploaded objects stay (the intent names them for recovery). */
  async discard(): Promise<void> {
    for (const object of this.open.values()) await object.writer.discard();
    this.open.clear();
    await Promise.allSettled(this.uploads);
  }
}
