/**
 * One replication session: START_REPLICATION, frames in, batches committed, CopyDone — I/O and ordering only.
 *
 * The session reads frames from the stream (replication/connection.ts), decodes them (the configured plugin's
 * decoder), hands the messages to the transaction assembler (pipeline/assembler.ts, which decides what is new
 * and what the durable position is), turns its changes into records (pipeline/records.ts) appended to the
 * current batch (sink/batch.ts), and asks the batch policy (pipeline/batch-policy.ts) when a batch ends; the
 * commit sequence (runtime/commit.ts) then makes it durable, checkpoints and acknowledges. Keepalives tell the
 * assembler the server's position, which lets an idle slot advance. Before each frame the session asks the
 * deadline whether the time left still covers the estimated flush; when not — or on a signal, once caught up,
 * or idle — it stops reading, commits the final batch and ends the stream cleanly. A dropped connection throws
 * (a `source-connection-lost` error); the run (runtime/run.ts) decides whether to reconnect.
 */
import type { Config } from '../config.js';
import type { LogicalMessage } from '../decoding/messages.js';
import { PgoutputDecoder } from '../decoding/pgoutput.js';
import type { TypeInfo, TypeRegistry } from '../decoding/values.js';
import { Wal2jsonDecoder, wal2jsonPluginOptions } from '../decoding/wal2json.js';
import { SlotlakeError } from '../errors.js';
import type { Logger } from '../log.js';
import { formatLsn, type Lsn } from '../lsn.js';
import { publicationNamesOption } from '../names.js';
import {
  TransactionAssembler,
  type Change,
  type DurablePosition,
  type RelationVersion,
  type ResumePosition,
} from '../pipeline/assembler.js';
import { BatchPolicy, IdleAdvance } from '../pipeline/batch-policy.js';
import type { RecordEncoder, RecordFormat } from '../pipeline/record-formats.js';
import { tableSchemaRef } from '../pipeline/table-schema.js';
import type { XLogDataFrame } from '../protocol/frames.js';
import type { TypeCatalog } from '../replication/catalog.js';
import type { ReplicationStream } from '../replication/connection.js';
import type { BatchWriter, RecordTarget, TableSchemaRef } from '../sink/batch.js';
import type { Clock, Deadline } from '../support/deadline.js';
import { killPoint } from '../support/kill-points.js';
import type { CommitSequence, CommitResult } from './commit.js';
import type { StopReason } from './summary.js';
import type { ChunkEmission, SnapshotDriver } from '../snapshot/driver.js';
import type { ChunkRow } from '../snapshot/window.js';
import type { Tuple } from '../decoding/messages.js';
import { MAX_OBJECTS_PER_BATCH } from '../pipeline/batch-policy.js';
import { MAX_INTENT_KEY_BYTES } from '../checkpoint/store.js';

/** The configured plugin's START_REPLICATION options. */
export function pluginOptions(config: Config): Record<string, string> {
  if (config.plugin === 'wal2json') return wal2jsonPluginOptions(config.tables);
  return {
    proto_version: String(config.protocolVersion),
    publication_names: publicationNamesOption([config.publication]),
    // logical messages carry the snapshot watermarks (PostgreSQL 14+)
    messages: 'true',
  };
}

/** Decodes one frame: pgoutput yields one message, wal2json one or more (after a catalog read, when it needs one). */
type FrameDecoder = (
  frame: XLogDataFrame,
) => LogicalMessage | readonly LogicalMessage[] | Promise<readonly LogicalMessage[]>;

/**
 * The configured plugin's decoder. wal2json describes no table, so its decoder asks for a table's definition
 * (columns, typmods, replica identity key) the first time it meets the table and when a message's columns do
 * not fit what it knows; the definition is read from the catalog over the ordinary connection, then the frame
 * is decoded.
 */
function messageDecoder(config: Config, catalog: TypeCatalog): FrameDecoder {
  if (config.plugin === 'wal2json') {
    const decoder = new Wal2jsonDecoder();
    return (frame) => {
      const payload = decoder.parse(frame.data);
      const table = decoder.definitionWanted(payload);
      if (table === undefined) return decoder.decodePayload(payload, frame.walStart);
      return catalog.definition(table.schema, table.table).then((definition) => {
        decoder.learnDefinition(table, definition);
        return decoder.decodePayload(payload, frame.walStart);
      });
    };
  }
  const decoder = new PgoutputDecoder({ protocolVersion: config.protocolVersion });
  return (frame) => decoder.decode(frame.data);
}

/**
 * How often (in frames) the flush estimate is refreshed: it walks the open objects, too costly per frame;
 * 64 frames are a few milliseconds of reading at most.
 */
const FRAMES_PER_ESTIMATE = 64;
/**
 * A long backlog is processed without waiting on I/O; yield to the event loop every this many frames so
 * timers — status updates, lease renewal, the fence — are never starved.
 */
const FRAMES_PER_YIELD = 2_000;
/** The longest single wait for a frame: the loop re-checks the deadline, signals and idleness this often. */
const MAX_FRAME_WAIT_MS = 250;
/** While idle, ask the server for its position (a keepalive) at most this often. */
const KEEPALIVE_REQUEST_INTERVAL_MS = 200;

/** What the session reports to the run as batches commit. */
export interface SessionCounters {
  /** A batch's checkpoint is stored (reported then, even if copying its manifest fails afterwards). */
  onCommitted(result: CommitResult, counts: { transactions: number; skipped: number }): void;
  /** Time spent in one commit sequence, whether it completed or not. */
  onFlushed(flushMs: number): void;
  onFramesRead(statusUpdates: number, readPauses: number): void;
}

export interface SessionOptions<R> {
  readonly config: Config;
  readonly logger: Logger;
  readonly deadline: Deadline;
  readonly clock: Clock;
  readonly stream: ReplicationStream;
  readonly database: string;
  readonly resume: ResumePosition;
  readonly commits: CommitSequence;
  /** How changes become records of the configured object format. */
  readonly format: RecordFormat<R>;
  readonly newBatch: () => BatchWriter<R>;
  readonly catalog: TypeCatalog;
  /** Stop once everything before this LSN is archived (`--until-caught-up`). */
  readonly target: Lsn | undefined;
  readonly stopSignal: AbortSignal | undefined;
  /** Throws when the lease is lost (checked before each frame). */
  readonly assertLeaseHeld: () => void;
  /** Reads tables' existing rows between the stream's changes, when a snapshot is requested. */
  readonly snapshot: SnapshotDriver | undefined;
  readonly statusIntervalMs: number;
  readonly counters: SessionCounters;
}

/** A registry that prefers the catalog's facts (domains, element types) over pgoutput's Type messages. */
class MergedRegistry implements TypeRegistry {
  constructor(
    private readonly catalog: ReadonlyMap<number, TypeInfo>,
    private readonly described: ReadonlyMap<number, TypeInfo>,
  ) {}

  get(oid: number): TypeInfo | undefined {
    return this.catalog.get(oid) ?? this.described.get(oid);
  }

  *values(): Iterable<TypeInfo> {
    yield* this.catalog.values();
    for (const [oid, info] of this.described) if (!this.catalog.has(oid)) yield info;
  }
}

/**
 * The state of one session, one field each: the session's loop reads and moves these, nothing else does.
 */
export class ReplicationSession<R> {
  /** Decides what is new and the durable position. */
  private readonly assembler: TransactionAssembler;
  /** When a batch ends. */
  private readonly policy: BatchPolicy;
  /** When the checkpoint follows the server while idle. */
  private readonly idle: IdleAdvance;
  /** The batch being written. */
  private batch: BatchWriter<R>;
  /** Transactions whose changes went into the current batch and that completed in it. */
  private batchTransactions = 0;
  /** Transactions skipped as already archived, since the last commit. */
  private batchSkipped = 0;
  /** One encoder per relation schema version. */
  private readonly encoders = new Map<number, RecordEncoder<R>>();
  /** The schema handle objects are opened with, per relation schema version. */
  private readonly schemas = new Map<number, TableSchemaRef>();
  /** Types described by the stream's Type messages. */
  private readonly described = new Map<number, TypeInfo>();
  private readonly registry: MergedRegistry;
  /** Set once everything before the target is archived. */
  private caughtUp: boolean;
  private lastDataAtMs: number;
  private lastKeepaliveRequestMs = 0;
  private framesSinceEstimate = 0;
  private framesSinceYield = 0;
  /** Side objects opened for snapshot chunks (their schema handles get ids of their own). */
  private sideObjects = 0;
  private flushEstimateMs: number;
  private changesRead = 0;
  private readonly decode: FrameDecoder;

  constructor(private readonly options: SessionOptions<R>) {
    const { config, clock, resume } = options;
    this.assembler = new TransactionAssembler(resume);
    this.policy = new BatchPolicy({
      maxRows: config.batchMaxRows,
      maxBytes: config.batchMaxBytes,
      maxAgeMs: config.batchMaxAgeMs,
    });
    this.idle = new IdleAdvance(options.statusIntervalMs, clock.nowMs());
    this.batch = options.newBatch();
    this.registry = new MergedRegistry(options.catalog.registry, this.described);
    this.caughtUp =
      options.target !== undefined && resume.lsn >= options.target && resume.partial === undefined;
    this.lastDataAtMs = clock.nowMs();
    this.flushEstimateMs = options.commits.estimateTailMs();
    this.decode = messageDecoder(config, options.catalog);
  }

  /** The assembler's durable position, with the snapshot progress archived up to it. */
  private durablePosition(): DurablePosition {
    return { ...this.assembler.durablePosition(), snapshot: this.options.snapshot?.progress };
  }

  /** The batch not yet committed (the run abandons it after a failure). */
  get currentBatch(): BatchWriter<R> {
    return this.batch;
  }

  /** Streams until a stop; commits the final batch; ends the stream. Returns why reading stopped. */
  async run(): Promise<StopReason> {
    const { stream, logger, deadline, options } = { ...this.options, options: this.options };
    logger.info('streaming', {
      resumeLsn: formatLsn(options.resume.lsn),
      partial: options.resume.partial
        ? `${formatLsn(options.resume.partial.commitLsn)}#${options.resume.partial.nextSeq}`
        : undefined,
      target: options.target === undefined ? undefined : formatLsn(options.target),
      budgetMs: deadline.isBounded ? Math.round(deadline.remainingMs()) : null,
    });
    let stopReason: StopReason | undefined;
    while (stopReason === undefined) {
      stopReason = this.stopReason();
      if (stopReason !== undefined) break;
      this.options.snapshot?.check();
      if (!this.assembler.inTransaction) this.options.snapshot?.maybeStart(this.flushEstimateMs);
      // A long backlog never waits on I/O: yield now and then so timers are never starved.
      if (++this.framesSinceYield >= FRAMES_PER_YIELD) {
        this.framesSinceYield = 0;
        await new Promise((resolve) => setImmediate(resolve));
      }
      // A frame already received is taken without a wait (and without a promise): a backlog is processed
      // synchronously, frame after frame, until one needs I/O.
      const frame =
        stream.poll() ??
        (await stream.next(
          Math.max(0, Math.min(MAX_FRAME_WAIT_MS, deadline.usableMs() - this.flushEstimateMs)),
        ));
      if (frame === 'ended') {
        throw new SlotlakeError('the server ended the replication stream', {
          kind: 'source-connection-lost',
          origin: 'source',
          retryable: true,
          hint: 'the next run resumes from the checkpoint',
        });
      }
      if (frame === 'timeout') stopReason = await this.onQuiet();
      else if (frame.type === 'keepalive') await this.onKeepalive(frame.walEnd);
      else {
        const pending = this.onData(frame);
        if (pending !== undefined) await pending;
      }
    }
    // Drain: make everything read durable, checkpoint, acknowledge; then end the stream cleanly. A snapshot
    // chunk still in flight is read again by the next run.
    this.options.snapshot?.abandon();
    await this.commitBatch();
    await stream.stop();
    options.counters.onFramesRead(stream.statusUpdatesSent, stream.readPauses);
    return stopReason;
  }

  /** Why reading must stop now, if it must. */
  private stopReason(): StopReason | undefined {
    const { options, deadline, config } = { ...this.options, options: this.options };
    options.assertLeaseHeld();
    if (options.stopSignal?.aborted) return 'signal';
    if (this.caughtUp && !this.assembler.inTransaction && !this.options.snapshot?.pending) return 'caught-up';
    if (this.framesSinceEstimate++ >= FRAMES_PER_ESTIMATE) this.refreshEstimate();
    const testStop =
      config.testStopAfterChanges !== undefined && this.changesRead >= config.testStopAfterChanges;
    if (deadline.mustStopReading(this.flushEstimateMs) || testStop) {
      options.logger.info('deadline near: stopping reading to flush', {
        remainingMs: Math.round(deadline.remainingMs()),
        flushEstimateMs: Math.round(this.flushEstimateMs),
        openTransaction: this.assembler.inTransaction,
      });
      return 'deadline';
    }
    return undefined;
  }

  private refreshEstimate(): void {
    this.framesSinceEstimate = 0;
    this.flushEstimateMs = this.batch.estimateUploadMs() + this.options.commits.estimateTailMs();
    this.batch.checkUploads();
  }

  /** No frame for a while: commit an old batch, advance while idle, stop when idle long enough. */
  private async onQuiet(): Promise<StopReason | undefined> {
    const { clock, config, stream } = this.options;
    this.framesSinceEstimate = FRAMES_PER_ESTIMATE;
    if (this.assembler.inTransaction) return undefined;
    const now = clock.nowMs();
    if (this.policy.rotationDue(this.batch, now)) await this.commitBatch();
    await this.maybeAdvanceIdle();
    if (
      config.idleTimeoutMs !== undefined &&
      now - this.lastDataAtMs >= config.idleTimeoutMs &&
      !this.options.snapshot?.pending
    )
      return 'idle';
    // Ask where the server is, to adopt its position while idle and to notice being caught up.
    if (now - this.lastKeepaliveRequestMs >= KEEPALIVE_REQUEST_INTERVAL_MS) {
      this.lastKeepaliveRequestMs = now;
      stream.requestKeepalive();
    }
    return undefined;
  }

  private async onKeepalive(walEnd: Lsn): Promise<void> {
    if (this.assembler.inTransaction) return;
    this.assembler.noteServerPosition(walEnd);
    const { target } = this.options;
    if (target !== undefined && walEnd >= target && this.assembler.atRest) this.caughtUp = true;
    await this.maybeAdvanceIdle();
  }

  /**
   * Idle advance: nothing is pending, so the server's keepalive position lies past everything it sent for
   * this slot; moving the checkpoint there (and acknowledging it, through the ordinary commit sequence) lets
   * the server recycle WAL that holds nothing for this publication — an idle or filtered slot would
   * otherwise pin WAL forever.
   */
  private async maybeAdvanceIdle(): Promise<void> {
    const position = this.durablePosition();
    const stored = this.options.commits.checkpoint?.lsn ?? this.options.resume.lsn;
    if (
      this.idle.due(
        this.assembler.atRest,
        this.batch.isEmpty,
        position.lsn,
        stored,
        this.options.clock.nowMs(),
      )
    )
      await this.commitBatch();
  }

  /*
   * The per-change path (onData → onMessage → write) returns undefined when it completed synchronously and a
   * promise only when it had to wait (a relation to describe, a batch to commit, a stream to drain): a backlog
   * costs no promise per message.
   */

  private onData(frame: XLogDataFrame): Promise<void> | undefined {
    this.lastDataAtMs = this.options.clock.nowMs();
    const decoded = this.decode(frame);
    if (decoded instanceof Promise)
      return decoded.then((messages) => this.onDecodedAsync(messages, frame.walStart));
    if (Array.isArray(decoded))
      return this.onDecodedAsync(decoded as readonly LogicalMessage[], frame.walStart);
    return this.onMessage(decoded as LogicalMessage, frame.walStart);
  }

  /** Messages decoded together (wal2json's, or from a wait), one after the other. */
  private async onDecodedAsync(
    decoded: LogicalMessage | readonly LogicalMessage[],
    walStart: Lsn,
  ): Promise<void> {
    if (!Array.isArray(decoded)) return this.onMessage(decoded as LogicalMessage, walStart);
    for (const message of decoded as readonly LogicalMessage[]) await this.onMessage(message, walStart);
    this.framesSinceEstimate = FRAMES_PER_ESTIMATE;
  }

  private onMessage(message: LogicalMessage, walStart: Lsn): Promise<void> | undefined {
    const event = this.assembler.accept(message, walStart);
    switch (event.kind) {
      case 'none':
        return undefined;
      case 'begin':
        this.framesSinceEstimate = FRAMES_PER_ESTIMATE;
        return undefined;
      case 'type':
        this.described.set(event.type.oid, event.type);
        return undefined;
      case 'relation':
        return this.describe(event.relation);
      case 'watermark':
        this.options.snapshot?.onWatermark(event.watermark, event.transaction, event.lsn);
        return undefined;
      case 'changes':
        return this.writeChanges(event.changes, 0);
      case 'commit':
        return this.onCommit(event.archived, event.commitLsn);
    }
  }

  /** Writes `changes` from `from` on; synchronously until one write has to wait. */
  private writeChanges(changes: readonly Change[], from: number): Promise<void> | undefined {
    for (let i = from; i < changes.length; i++) {
      const change = changes[i]!;
      this.options.snapshot?.observe(change);
      const pending = this.write(change);
      if (pending !== undefined) return pending.then(() => this.writeChanges(changes, i + 1));
    }
    return undefined;
  }

  private async onCommit(archived: boolean, commitLsn: Lsn): Promise<void> {
    this.framesSinceEstimate = FRAMES_PER_ESTIMATE;
    if (archived) this.batchTransactions++;
    else this.batchSkipped++;
    const emission = await this.options.snapshot?.onCommit(commitLsn);
    if (emission) await this.writeChunk(emission);
    const { target } = this.options;
    if (target !== undefined && this.assembler.lastCompleteLsn >= target) this.caughtUp = true;
    if (this.policy.rotationDue(this.batch, this.options.clock.nowMs())) await this.commitBatch();
  }

  /**
   * A relation (re)described: load what the catalog knows of its types and columns, build its encoder and
   * its object schema once per version.
   */
  private async describe(version: RelationVersion): Promise<void> {
    if (this.encoders.has(version.schemaId)) return;
    const { catalog, format, database } = this.options;
    const relation = version.relation;
    await catalog.load(relation.columns.map((column) => column.typeOid));
    const columns = await catalog.columns(relation.namespace, relation.name);
    this.encoders.set(version.schemaId, format.encoder(version, database, this.registry));
    this.schemas.set(version.schemaId, tableSchemaRef(version.schemaId, relation, columns, this.registry));
  }

  private write(change: Change): Promise<void> | undefined {
    const schema = this.schemas.get(change.relation.schemaId)!;
    const target = {
      schema,
      dt: change.transaction.dt,
      commitLsn: change.transaction.commitLsn,
      seq: change.seq,
      transactionContinues: change.transactionContinues,
    };
    // The intent (in the checkpoint item) holds this batch's keys: end the batch first, even inside a
    // transaction, when one more object would pass its bounds. The next batch continues the transaction.
    if (
      this.batch.opensObject(target) &&
      this.policy.mustEndBeforeNewObject(this.batch, this.batch.maxKeyBytes(schema.table))
    )
      return this.commitBatch({
        ...this.assembler.positionBefore(change),
        snapshot: this.options.snapshot?.progress,
      }).then(() => this.append(change, { ...target, transactionContinues: true }));
    return this.append(change, target);
  }

  private append(change: Change, target: RecordTarget): Promise<void> | undefined {
    const encoded = this.encoders.get(change.relation.schemaId)!.encode(change);
    const object = this.batch.write(target, encoded.record, encoded.bytes);
    this.changesRead++;
    if (change.seq >= 1) killPoint('mid-transaction');
    return object.needsDrain ? object.drain() : undefined;
  }

  /**
   * Writes a snapshot chunk's rows as `op: "r"` records at its watermarks, each set in an object of its own,
   * and takes its progress: both are committed by the same checkpoint write. The batch is committed first when
   * it could not take the chunk's two objects, so a chunk is never split across batches.
   */
  private async writeChunk(emission: ChunkEmission): Promise<void> {
    const snapshot = this.options.snapshot!;
    if (emission.atHigh.length + emission.atLow.length > 0) {
      const version = this.assembler.versionOf(emission.plan.relation);
      await this.describe(version);
      const base = this.schemas.get(version.schemaId)!;
      const encoder = this.encoders.get(version.schemaId)!;
      const keyBytes = 2 * this.batch.maxKeyBytes(base.table);
      if (
        !this.batch.isEmpty &&
        (this.batch.objectCount + 2 > MAX_OBJECTS_PER_BATCH ||
          this.batch.intentKeyBytes + keyBytes > MAX_INTENT_KEY_BYTES)
      )
        await this.commitBatch();
      const place = async (rows: readonly ChunkRow[], at: ChunkEmission['high']) => {
        if (rows.length === 0) return;
        const schema: TableSchemaRef = { ...base, id: -++this.sideObjects, sideObject: true };
        for (let seq = 0; seq < rows.length; seq++) {
          const change: Change = {
            op: 'r',
            relation: version,
            before: undefined,
            beforeIsKey: false,
            after: tupleOf(rows[seq]!),
            lsn: at.lsn,
            seq,
            transaction: at.transaction,
            transactionContinues: false,
          };
          const encoded = encoder.encode(change);
          const object = this.batch.write(
            {
              schema,
              dt: at.transaction.dt,
              commitLsn: at.transaction.commitLsn,
              seq,
              transactionContinues: false,
            },
            encoded.record,
            encoded.bytes,
          );
          if (object.needsDrain) await object.drain();
        }
      };
      await place(emission.atLow, emission.low);
      await place(emission.atHigh, emission.high);
      this.changesRead += emission.atLow.length + emission.atHigh.length;
    }
    snapshot.emitted(emission);
    killPoint('snapshot-written');
    this.options.logger.info('snapshot chunk archived', {
      table: `${emission.plan.table.schema}.${emission.plan.table.table}`,
      rows: emission.atHigh.length + emission.atLow.length,
      droppedAsStale: emission.dropped,
    });
  }

  /** Commits the current batch (at the assembler's durable position by default) and starts a new one. */
  private async commitBatch(position = this.durablePosition()): Promise<void> {
    const transactions = this.batchTransactions;
    const skipped = this.batchSkipped;
    const started = performance.now();
    try {
      await this.options.commits.commit(
        this.batch,
        position,
        { transactions, changes: this.batch.rows },
        (result) => this.options.counters.onCommitted(result, { transactions, skipped }),
      );
    } finally {
      this.options.counters.onFlushed(Math.round(performance.now() - started));
    }
    this.batchTransactions = 0;
    this.batchSkipped = 0;
    this.assembler.batchCommitted();
    this.batch = this.options.newBatch();
  }
}

/** A chunk row's text values as a tuple, like the stream's. */
function tupleOf(row: ChunkRow): Tuple {
  return row.map((value) =>
    value === null ? { kind: 'null' as const } : { kind: 'text' as const, text: value },
  );
}
