/**
 * The run loop: one time-bounded run of the pipeline, the same for the CLI and the Lambda handler.
 *
 * A run: check the bucket → take the pipeline lease (another holder: stop at once with `lease-held`) → remove
 * the objects of an uncommitted batch an earlier run left (its intent) → check the source and decide where
 * to resume (the checkpoint, or the slot when there is none) → stream: START_REPLICATION, frames → logical
 * messages → transactions (Begin…Commit, each change numbered by `seq`) → record lines appended to the
 * current batch's objects → at a transaction boundary, when the batch is big or old enough, the commit
 * sequence (runtime/commit.ts) makes it durable, checkpoints and acknowledges.
 *
 * Transactions whose commit LSN is below the resume position are skipped on replay; a transaction cut by an
 * earlier run is resumed at the first `seq` not yet archived. Reading stops when the deadline leaves just
 * enough time for the final flush (estimated from measured upload speed), on a signal, once caught up with
 * the WAL position captured at start (`--until-caught-up`), or after an idle period; then the run drains:
 * final batch, checkpoint, acknowledgement, CopyDone. When nothing is pending, the position the server's
 * keepalives report is adopted, so an idle slot advances instead of pinning WAL. A dropped Postgres
 * connection commits what is complete and reconnects from the checkpoint while time allows.
 */
import { randomUUID } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import type pg from 'pg';
import type { Config } from '../config.js';
import type { Checkpoint, CheckpointStore, Lease, PartialTransaction } from '../checkpoint/store.js';
import type { LogicalMessage } from '../decoding/messages.js';
import { PgoutputDecoder } from '../decoding/pgoutput.js';
import type { TypeInfo } from '../decoding/values.js';
import { Wal2jsonDecoder, wal2jsonPluginOptions } from '../decoding/wal2json.js';
import { classify, DecodeError, SlotlakeError } from '../errors.js';
import { formatLsn, maxLsn, ZERO_LSN, type Lsn } from '../lsn.js';
import { publicationNamesOption } from '../names.js';
import type { Logger } from '../log.js';
import { unixMicrosFromPostgres, type XLogDataFrame } from '../protocol/frames.js';
import { RelationEncoder, transactionSource, type Op, type TransactionSource } from '../pipeline/records.js';
import { ReplicationConnection, type ReplicationStream } from '../replication/connection.js';
import { checkSource, openSourceClient, readSlot, type SlotState } from '../replication/source.js';
import { BatchWriter, UploadMeter } from '../sink/batch.js';
import { S3Archive } from '../sink/s3.js';
import { CommitSequence, writePendingManifest, type DurablePosition } from './commit.js';
import { systemClock, type Clock, type Deadline } from '../support/deadline.js';
import { armKillPoint, killPoint } from '../support/kill-points.js';
import { LeaseKeeper } from './lease.js';
import { withRetry } from '../support/retry.js';

export type StopReason = 'deadline' | 'caught-up' | 'signal' | 'lease-held' | 'idle';

export interface RunSummary {
  stopReason: StopReason;
  startCheckpoint: string | null;
  checkpoint: string;
  transactions: number;
  changes: number;
  objects: number;
  bytes: number;
  durationMs: number;
  pipeline: string;
  slot: string;
  runId: string;
  batches: number;
  skippedTransactions: number;
  partial: { commitLsn: string; nextSeq: number } | null;
  statusUpdates: number;
  readPauses: number;
  reconnects: number;
  recoveredObjects: number;
  /** Time spent making batches durable (uploads, checkpoint, manifest, ack). */
  flushMs: number;
  lagBytes: number | null;
  retainedWalBytes: number | null;
  walStatus: string | null;
  safeWalSize: number | null;
  /** The lease this run held: its fence, and when it was taken and given up (epoch ms). */
  lease: { fence: number; acquiredAtMs: number; releasedAtMs: number | null } | null;
}

export interface RunOptions {
  readonly config: Config;
  readonly logger: Logger;
  readonly s3: S3Client;
  readonly store: CheckpointStore;
  readonly deadline: Deadline;
  readonly untilCaughtUp: boolean;
  /** Aborted on SIGINT/SIGTERM: stop reading and drain. */
  readonly stopSignal?: AbortSignal;
  readonly clock?: Clock;
  readonly onBatch?: (summary: Readonly<RunSummary>) => void;
}

/** Per-transaction state while its changes stream. */
interface OpenTransaction {
  readonly xid: number;
  readonly commitLsn: Lsn;
  readonly source: TransactionSource;
  readonly dt: string;
  /** Changes with seq below this are already archived (resumed transaction). */
  readonly skipBelowSeq: number;
  /** Whole transaction already archived. */
  readonly skip: boolean;
  seq: number;
}

/** Where a streaming session starts: everything before `lsn` is archived, plus a cut transaction's prefix. */
interface ResumePosition {
  readonly lsn: Lsn;
  readonly partial: PartialTransaction | undefined;
}

function utcDate(unixMicros: bigint): string {
  const date = new Date(Number(unixMicros / 1000n));
  return Number.isNaN(date.getTime()) ? '1970-01-01' : date.toISOString().slice(0, 10);
}

/** Keeps a batch's manifest (stored with the checkpoint, gzipped) far below DynamoDB's 400 KB item limit. */
const MAX_OBJECTS_PER_BATCH = 1000;

const OPS: Record<'insert' | 'update' | 'delete', Op> = { insert: 'c', update: 'u', delete: 'd' };

/** The configured plugin's decoder: pgoutput yields one message per frame, wal2json one or more. */
function messageDecoder(
  config: Config,
): (frame: XLogDataFrame) => LogicalMessage | readonly LogicalMessage[] {
  if (config.plugin === 'wal2json') {
    const decoder = new Wal2jsonDecoder();
    return (frame) => decoder.decode(frame.data, frame.walStart);
  }
  const decoder = new PgoutputDecoder({ protocolVersion: config.protocolVersion });
  return (frame) => decoder.decode(frame.data);
}

function pluginOptions(config: Config): Record<string, string> {
  if (config.plugin === 'wal2json') {
    return wal2jsonPluginOptions(config.tables);
  }
  return {
    proto_version: String(config.protocolVersion),
    publication_names: publicationNamesOption([config.publication]),
  };
}

export async function runIngest(options: RunOptions): Promise<RunSummary> {
  return new IngestRun(options).run();
}

class IngestRun {
  private readonly config: Config;
  private readonly logger: Logger;
  private readonly deadline: Deadline;
  private readonly clock: Clock;
  private readonly startedAtMs: number;
  private readonly runId = randomUUID();
  private readonly archive: S3Archive;
  private readonly connection: { databaseUrl: string | undefined; applicationName: string };
  private readonly meter = new UploadMeter();
  private readonly spoolDir: string;
  private readonly summary: RunSummary;
  private keeper: LeaseKeeper | undefined;
  private stream: ReplicationStream | undefined;
  /** Set when the lease is lost: nothing more may be acknowledged. */
  private leaseLost = false;
  /** The configured status interval, shortened to a third of the server's wal_sender_timeout. */
  private statusIntervalMs: number;

  constructor(private readonly options: RunOptions) {
    this.config = options.config;
    this.logger = options.logger;
    this.deadline = options.deadline;
    this.clock = options.clock ?? systemClock;
    this.startedAtMs = this.clock.nowMs();
    this.archive = new S3Archive(options.s3, this.config.bucket, this.config.prefix);
    this.connection = {
      databaseUrl: this.config.databaseUrl,
      applicationName: `slotlake:${this.config.pipeline}`,
    };
    this.spoolDir = join(this.config.spoolDir ?? join(tmpdir(), 'slotlake-spool'), this.runId);
    this.statusIntervalMs = this.config.statusIntervalMs;
    this.summary = {
      stopReason: 'deadline',
      startCheckpoint: null,
      checkpoint: '0/0',
      transactions: 0,
      changes: 0,
      objects: 0,
      bytes: 0,
      durationMs: 0,
      pipeline: this.config.pipeline,
      slot: this.config.slot,
      runId: this.runId,
      batches: 0,
      skippedTransactions: 0,
      partial: null,
      statusUpdates: 0,
      readPauses: 0,
      reconnects: 0,
      recoveredObjects: 0,
      flushMs: 0,
      lagBytes: null,
      retainedWalBytes: null,
      walStatus: null,
      safeWalSize: null,
      lease: null,
    };
  }

  private finish(): RunSummary {
    this.summary.durationMs = Math.round(this.clock.nowMs() - this.startedAtMs);
    return this.summary;
  }

  private get lease(): Lease {
    return this.keeper!.lease;
  }

  async run(): Promise<RunSummary> {
    const { config, logger, deadline } = this;
    armKillPoint(config.killAt);
    await withRetry(() => this.archive.checkBucket(), {
      what: 'checking the S3 bucket',
      origin: 'object-store',
      deadline,
    });

    // The lease: one run per pipeline.
    const acquisition = await withRetry(
      () => this.options.store.acquire(this.runId, config.leaseDurationMs, this.clock.nowMs()),
      { what: 'acquiring the pipeline lease', origin: 'checkpoint-store', deadline },
    );
    if (!acquisition.acquired) {
      logger.info('another run holds this pipeline; nothing to do', {
        holder: acquisition.holder,
        expiresInMs:
          acquisition.expiresAtMs === undefined
            ? undefined
            : Math.round(acquisition.expiresAtMs - this.clock.nowMs()),
      });
      this.summary.stopReason = 'lease-held';
      return this.finish();
    }
    killPoint('after-lease');
    this.summary.lease = { fence: acquisition.lease.fence, acquiredAtMs: Date.now(), releasedAtMs: null };
    this.keeper = new LeaseKeeper(
      acquisition.lease,
      this.options.store,
      config.leaseDurationMs,
      this.clock,
      logger,
      () => {
        this.leaseLost = true;
        this.stream?.abandon();
      },
    );
    this.keeper.start();
    try {
      const checkpoint = acquisition.checkpoint;
      this.summary.startCheckpoint = checkpoint ? formatLsn(checkpoint.lsn) : null;
      if (acquisition.intentKeys.length > 0) await this.recover(acquisition.intentKeys);
      if (acquisition.pendingManifest)
        await writePendingManifest(this.archive, acquisition.pendingManifest, deadline);

      const source = await withRetry(() => openSourceClient(this.connection), {
        what: 'connecting to postgres',
        origin: 'source',
        deadline,
      });
      try {
        const slot: SlotState = await checkSource(source, {
          slot: config.slot,
          publication: config.publication,
          plugin: config.plugin,
        }).catch((error: unknown) => {
          throw classify(error, { origin: 'source', what: 'checking the source database' });
        });
        if (slot.active) {
          logger.info('the slot is streaming to another process; leaving this run to it', {
            activePid: slot.activePid,
          });
          this.summary.stopReason = 'lease-held';
          this.summary.checkpoint =
            this.summary.startCheckpoint ?? formatLsn(slot.confirmedFlushLsn ?? ZERO_LSN);
          return this.finish();
        }
        await this.adaptToServer(source, slot);
        const resume = this.resumePosition(checkpoint, slot);
        this.summary.checkpoint = formatLsn(resume.lsn);
        const commits = new CommitSequence(
          {
            archive: this.archive,
            store: this.options.store,
            logger,
            deadline,
            meter: this.meter,
            pipeline: config.pipeline,
            slot: config.slot,
            runId: this.runId,
            lease: () => this.lease,
          },
          checkpoint,
          (position) => {
            this.keeper!.check();
            if (!this.leaseLost) this.stream?.acknowledge(position);
          },
        );
        await this.streamWithReconnects(commits, resume);
        await this.reportSlot(source);
        logger.info('run finished', { ...this.finish() });
        return this.finish();
      } finally {
        await source.end().catch(() => undefined);
      }
    } finally {
      await rm(this.spoolDir, { recursive: true, force: true }).catch(() => undefined);
      await this.keeper.release();
      this.summary.lease.releasedAtMs = Date.now();
    }
  }

  /**
   * Reads the server settings that shape a healthy session: status updates must reach the server well
   * within wal_sender_timeout (it drops a quiet client), and retained WAL is compared with
   * max_slot_wal_keep_size (past it the server invalidates the slot).
   */
  private async adaptToServer(source: pg.Client, slot: SlotState): Promise<void> {
    const settings = await source
      .query(
        `SELECT name, setting::bigint AS value, unit FROM pg_settings
          WHERE name IN ('wal_sender_timeout', 'max_slot_wal_keep_size')`,
      )
      .catch(() => ({ rows: [] as Array<{ name: string; value: string; unit: string | null }> }));
    const byName = new Map(
      (settings.rows as Array<{ name: string; value: string; unit: string | null }>).map((row) => [
        row.name,
        row,
      ]),
    );
    const timeout = byName.get('wal_sender_timeout');
    const timeoutMs = timeout ? Number(timeout.value) * (timeout.unit === 's' ? 1000 : 1) : 0;
    if (timeoutMs > 0 && timeoutMs / 3 < this.statusIntervalMs) {
      this.statusIntervalMs = Math.max(100, Math.floor(timeoutMs / 3));
      this.logger.info('status interval shortened to a third of the server wal_sender_timeout', {
        walSenderTimeoutMs: timeoutMs,
        statusIntervalMs: this.statusIntervalMs,
      });
    }
    const keep = byName.get('max_slot_wal_keep_size');
    const keepBytes = keep && Number(keep.value) >= 0 ? Number(keep.value) * 1024 * 1024 : undefined; // MB
    if (
      slot.walStatus === 'unreserved' ||
      (keepBytes !== undefined && slot.retainedWalBytes >= 0.8 * keepBytes)
    ) {
      this.logger.warn(
        'the slot retains WAL close to max_slot_wal_keep_size: it will be invalidated if it falls further behind',
        {
          retainedWalBytes: slot.retainedWalBytes,
          maxSlotWalKeepSizeBytes: keepBytes,
          walStatus: slot.walStatus,
          safeWalSize: slot.safeWalSize,
        },
      );
    } else if (keepBytes === undefined && slot.retainedWalBytes > 10 * 1024 ** 3) {
      this.logger.warn('the slot retains more than 10 GiB of WAL and max_slot_wal_keep_size is unlimited', {
        retainedWalBytes: slot.retainedWalBytes,
      });
    }
  }

  /** Deletes the objects of a batch that never committed (named by its intent), then clears the intent. */
  private async recover(keys: readonly string[]): Promise<void> {
    this.logger.warn('an earlier run stopped before committing a batch; removing its objects', {
      objects: keys.length,
    });
    let deleted = 0;
    for (const key of keys) {
      await withRetry(() => this.archive.deleteKey(key), {
        what: `deleting ${key}`,
        origin: 'object-store',
        deadline: this.deadline,
      });
      deleted++;
      if (deleted === 1) killPoint('mid-recovery');
    }
    await withRetry(() => this.options.store.clearIntent(this.lease), {
      what: 'clearing the intent',
      origin: 'checkpoint-store',
      deadline: this.deadline,
    });
    this.summary.recoveredObjects += deleted;
  }

  /** The checkpoint, or the slot when there is none; a slot ahead of the checkpoint is a gap. */
  private resumePosition(checkpoint: Checkpoint | null, slot: SlotState): ResumePosition {
    const { config, logger } = this;
    const slotPosition = slot.confirmedFlushLsn ?? slot.restartLsn ?? ZERO_LSN;
    if (!checkpoint) {
      logger.info('no checkpoint yet: starting at the slot position', {
        slotPosition: formatLsn(slotPosition),
      });
      return { lsn: slotPosition, partial: undefined };
    }
    if (slotPosition <= checkpoint.lsn) {
      if (slotPosition < checkpoint.lsn) {
        logger.info('the slot is behind the checkpoint: archived transactions will be skipped', {
          slotPosition: formatLsn(slotPosition),
          checkpoint: formatLsn(checkpoint.lsn),
        });
      }
      return { lsn: checkpoint.lsn, partial: checkpoint.partial };
    }
    const message =
      `the slot "${config.slot}" is at ${formatLsn(slotPosition)}, ahead of the checkpoint ${formatLsn(checkpoint.lsn)}: ` +
      `the changes between them were consumed by something else (or the slot was recreated) and are not in the archive`;
    if (config.slotPositionPolicy === 'fail') {
      throw new SlotlakeError(message, {
        kind: 'slot-ahead',
        hint:
          'find what consumed the slot; to accept the gap knowingly, run once with SLOTLAKE_SLOT_POSITION_POLICY=trust-slot, ' +
          'or re-snapshot the tables into the archive',
      });
    }
    logger.warn(`${message}; continuing from the slot because SLOTLAKE_SLOT_POSITION_POLICY=trust-slot`);
    const partial =
      checkpoint.partial && checkpoint.partial.commitLsn >= slotPosition ? checkpoint.partial : undefined;
    return { lsn: slotPosition, partial };
  }

  /** Streams sessions until a stop; a dropped connection commits what is complete and reconnects. */
  private async streamWithReconnects(commits: CommitSequence, first: ResumePosition): Promise<void> {
    let resume = first;
    for (let attempt = 0; ; attempt++) {
      try {
        this.summary.stopReason = await this.streamSession(commits, resume);
        return;
      } catch (error) {
        const classified = classify(error, { what: 'streaming' });
        const canRetry =
          (classified.isSourceConnectionLoss || (attempt > 0 && classified.kind === 'slot-in-use')) &&
          !this.leaseLost &&
          attempt < this.config.reconnectAttempts &&
          this.deadline.usableMs() > 3_000 &&
          !this.options.stopSignal?.aborted;
        if (!canRetry) throw classified;
        const stored = commits.checkpoint;
        resume = stored ? { lsn: stored.lsn, partial: stored.partial } : resume;
        this.summary.reconnects++;
        this.logger.warn('the Postgres connection dropped; reconnecting from the checkpoint', {
          attempt: attempt + 1,
          resumeLsn: formatLsn(resume.lsn),
        });
        await new Promise((resolve) => setTimeout(resolve, Math.min(2_000, 200 * 2 ** attempt)));
      }
    }
  }

  /** One START_REPLICATION session. Returns why reading stopped, after the final commit. */
  private async streamSession(commits: CommitSequence, resume: ResumePosition): Promise<StopReason> {
    const { config, logger, deadline, clock, options, summary } = this;
    const statusIntervalMs = this.statusIntervalMs;
    const replication = await withRetry(() => ReplicationConnection.open(this.connection), {
      what: 'opening the replication connection',
      origin: 'source',
      deadline,
    });
    let batch = this.newBatch();
    let stream: ReplicationStream | undefined;
    try {
      const identity = await replication.identifySystem();
      const target = identity.walPosition;
      stream = replication.startReplication({
        slot: config.slot,
        startLsn: resume.lsn,
        pluginOptions: pluginOptions(config),
        statusIntervalMs,
        highWaterBytes: config.readBufferBytes,
      });
      this.stream = stream;
      const decode = messageDecoder(config);
      const registry = new Map<number, TypeInfo>();
      const encoders = new Map<number, RelationEncoder>();
      const database = identity.database;
      let partial = resume.partial;
      let txn: OpenTransaction | undefined;
      let lastCommitEnd: Lsn = resume.lsn;
      let idlePosition: Lsn | undefined;
      let batchTransactions = 0;
      let lastDataAtMs = clock.nowMs();
      let lastKeepaliveRequestMs = 0;
      let framesSinceEstimate = 0;
      let framesSinceYield = 0;
      let flushEstimateMs = commits.estimateTailMs();
      let caughtUp = options.untilCaughtUp && resume.lsn >= target && partial === undefined;
      let stopReason: StopReason | undefined;
      logger.info('streaming', {
        runId: this.runId,
        resumeLsn: formatLsn(resume.lsn),
        partial: partial ? `${formatLsn(partial.commitLsn)}#${partial.nextSeq}` : undefined,
        serverWal: formatLsn(target),
        untilCaughtUp: options.untilCaughtUp,
        budgetMs: deadline.isBounded ? Math.round(deadline.remainingMs()) : null,
      });

      const durablePosition = (): DurablePosition => {
        if (txn && !txn.skip && txn.seq > txn.skipBelowSeq) {
          return { lsn: lastCommitEnd, partial: { commitLsn: txn.commitLsn, nextSeq: txn.seq } };
        }
        if (partial) return { lsn: lastCommitEnd, partial };
        const lsn = !txn && idlePosition !== undefined ? maxLsn(lastCommitEnd, idlePosition) : lastCommitEnd;
        return { lsn, partial: undefined };
      };

      const commitBatch = async () => {
        const position = durablePosition();
        const result = await commits.commit(batch, position, {
          transactions: batchTransactions,
          changes: batch.rows,
        });
        summary.batches += result.objects.length > 0 ? 1 : 0;
        summary.objects += result.objects.length;
        summary.bytes += result.bytes;
        summary.flushMs += result.flushMs;
        summary.checkpoint = formatLsn(position.lsn);
        summary.partial = position.partial
          ? { commitLsn: formatLsn(position.partial.commitLsn), nextSeq: position.partial.nextSeq }
          : null;
        batchTransactions = 0;
        batch = this.newBatch();
        options.onBatch?.(summary);
      };

      /**
       * Idle advance: nothing is pending (no open transaction, an empty batch, no cut transaction), so the
       * server's keepalive position lies past everything it sent us. Moving the checkpoint there (and then
       * acknowledging it, through the ordinary commit sequence) lets the server recycle WAL that holds
       * nothing for this publication — an idle or filtered slot would otherwise pin WAL forever. At most
       * once per status interval, so an idle run costs a DynamoDB write every few seconds.
       */
      let lastIdleCommitMs = clock.nowMs();
      const advanceIdle = async () => {
        if (txn || !batch.isEmpty || partial !== undefined || idlePosition === undefined) return;
        if (idlePosition <= (commits.checkpoint?.lsn ?? resume.lsn)) return;
        if (clock.nowMs() - lastIdleCommitMs < statusIntervalMs) return;
        lastIdleCommitMs = clock.nowMs();
        await commitBatch();
      };

      const rotationDue = () =>
        !batch.isEmpty &&
        (batch.rows >= config.batchMaxRows ||
          batch.objectCount >= MAX_OBJECTS_PER_BATCH ||
          batch.uncompressedBytes >= config.batchMaxBytes ||
          clock.nowMs() - batch.startedAtMs >= config.batchMaxAgeMs);

      const writeRecord = async (
        encoder: RelationEncoder,
        open: OpenTransaction,
        seq: number,
        line: string,
      ) => {
        const object = batch.write(
          encoder.schema,
          encoder.table,
          open.dt,
          open.commitLsn,
          seq,
          line,
          open.skipBelowSeq > 0,
        );
        summary.changes++;
        if (seq >= 1) killPoint('mid-transaction');
        await batch.drain(object);
      };

      const handle = async (message: LogicalMessage, frame: XLogDataFrame): Promise<void> => {
        switch (message.tag) {
          case 'begin': {
            if (txn) throw new DecodeError('Begin inside an open transaction');
            const commitTimeUs = unixMicrosFromPostgres(message.commitTime);
            const resumed = partial !== undefined && partial.commitLsn === message.finalLsn;
            txn = {
              xid: message.xid,
              commitLsn: message.finalLsn,
              source: transactionSource(formatLsn(message.finalLsn), message.xid, commitTimeUs),
              dt: utcDate(commitTimeUs),
              skipBelowSeq: resumed ? partial!.nextSeq : 0,
              skip: message.finalLsn < resume.lsn,
              seq: 0,
            };
            return;
          }
          case 'commit': {
            if (!txn) throw new DecodeError('Commit without Begin');
            if (txn.commitLsn !== message.commitLsn) {
              throw new DecodeError(
                `Commit LSN ${formatLsn(message.commitLsn)} differs from Begin's final LSN ${formatLsn(txn.commitLsn)}`,
              );
            }
            if (txn.skip) summary.skippedTransactions++;
            else {
              summary.transactions++;
              batchTransactions++;
            }
            if (partial && partial.commitLsn === txn.commitLsn) partial = undefined;
            if (message.endLsn > lastCommitEnd) lastCommitEnd = message.endLsn;
            txn = undefined;
            if (options.untilCaughtUp && lastCommitEnd >= target) caughtUp = true;
            if (rotationDue()) await commitBatch();
            return;
          }
          case 'relation':
            encoders.set(
              message.relation.relationId,
              new RelationEncoder(message.relation, database, registry),
            );
            return;
          case 'type':
            registry.set(message.typeOid, {
              oid: message.typeOid,
              name: message.name,
              namespace: message.namespace,
            });
            return;
          case 'insert':
          case 'update':
          case 'delete': {
            if (!txn) throw new DecodeError(`${message.tag} outside a transaction`);
            const seq = txn.seq++;
            if (txn.skip || seq < txn.skipBelowSeq) return;
            const encoder = encoders.get(message.relationId);
            if (!encoder) throw new DecodeError(`change for unknown relation ${message.relationId}`);
            const before = message.tag === 'insert' ? undefined : (message.oldTuple ?? message.oldKey);
            const keyOnly = message.tag !== 'insert' && message.oldTuple === undefined;
            const after = message.tag === 'delete' ? undefined : message.newTuple;
            const lsnText = formatLsn(frame.walStart);
            await writeRecord(
              encoder,
              txn,
              seq,
              encoder.encode(OPS[message.tag], before, keyOnly, after, lsnText, seq, txn.source),
            );
            return;
          }
          case 'truncate': {
            if (!txn) throw new DecodeError('Truncate outside a transaction');
            for (const relationId of message.relationIds) {
              const seq = txn.seq++;
              if (txn.skip || seq < txn.skipBelowSeq) continue;
              const encoder = encoders.get(relationId);
              if (!encoder) throw new DecodeError(`truncate of unknown relation ${relationId}`);
              const lsnText = formatLsn(frame.walStart);
              await writeRecord(
                encoder,
                txn,
                seq,
                encoder.encode('t', undefined, false, undefined, lsnText, seq, txn.source),
              );
            }
            return;
          }
          case 'origin':
          case 'message':
            return; // replication origins and logical messages are not table changes
          default:
            throw new SlotlakeError(
              `unexpected ${message.tag} message: slotlake asks for non-streamed transactions`,
              {
                kind: 'source-protocol',
                hint: 'leave SLOTLAKE_PROTO_VERSION at its default; report this with the server version',
              },
            );
        }
      };

      // The read loop.
      while (stopReason === undefined) {
        this.keeper!.check();
        if (options.stopSignal?.aborted) {
          stopReason = 'signal';
          break;
        }
        if (caughtUp && !txn) {
          stopReason = 'caught-up';
          break;
        }
        if (framesSinceEstimate++ >= 64) {
          framesSinceEstimate = 0;
          flushEstimateMs = batch.estimateUploadMs() + commits.estimateTailMs();
          batch.checkUploads();
        }
        if (
          deadline.mustStopReading(flushEstimateMs) ||
          (config.testStopAfterChanges !== undefined && summary.changes >= config.testStopAfterChanges)
        ) {
          stopReason = 'deadline';
          logger.info('deadline near: stopping reading to flush', {
            remainingMs: Math.round(deadline.remainingMs()),
            flushEstimateMs: Math.round(flushEstimateMs),
            openTransaction: txn !== undefined,
          });
          break;
        }
        const waitMs = Math.max(0, Math.min(250, deadline.usableMs() - flushEstimateMs));
        // A long backlog is processed without waiting on I/O; yield now and then, so that timers — the
        // status updates, the lease renewal — are never starved.
        if (++framesSinceYield >= 2000) {
          framesSinceYield = 0;
          await new Promise((resolve) => setImmediate(resolve));
        }
        const frame = await stream.next(waitMs);
        if (frame === 'ended') {
          throw new SlotlakeError('the server ended the replication stream', {
            kind: 'source-connection-lost',
            retryable: true,
            hint: 'the next run resumes from the checkpoint',
          });
        }
        if (frame === 'timeout') {
          framesSinceEstimate = 64;
          const now = clock.nowMs();
          if (!txn && rotationDue()) await commitBatch();
          if (!txn) await advanceIdle();
          if (!txn && config.idleTimeoutMs !== undefined && now - lastDataAtMs >= config.idleTimeoutMs) {
            stopReason = 'idle';
            break;
          }
          // Ask where the server is, to adopt its position while idle and to notice being caught up.
          if (!txn && now - lastKeepaliveRequestMs >= 200) {
            lastKeepaliveRequestMs = now;
            stream.requestKeepalive();
          }
          continue;
        }
        if (frame.type === 'keepalive') {
          if (!txn) {
            idlePosition = frame.walEnd;
            if (options.untilCaughtUp && frame.walEnd >= target && partial === undefined) caughtUp = true;
            await advanceIdle();
          }
          continue;
        }
        lastDataAtMs = clock.nowMs();
        const decoded = decode(frame);
        if (Array.isArray(decoded)) {
          for (const message of decoded as readonly LogicalMessage[]) await handle(message, frame);
          framesSinceEstimate = 64;
        } else {
          const message = decoded as LogicalMessage;
          await handle(message, frame);
          if (message.tag === 'commit' || message.tag === 'begin') framesSinceEstimate = 64;
        }
      }

      // Drain: make everything read durable, checkpoint, acknowledge; then end the stream cleanly.
      await commitBatch();
      await stream.stop();
      return stopReason;
    } catch (error) {
      const classified = classify(error, { what: 'run' });
      stream?.abandon();
      if (classified.isSourceConnectionLoss && !this.leaseLost) {
        // The run may reconnect: the uncommitted batch is re-read from the checkpoint, so whatever of it
        // reached S3 must go first (its keys are in the intent).
        await this.abandonBatch(batch);
      } else {
        await batch.discard().catch(() => undefined);
      }
      throw classified;
    } finally {
      if (stream) {
        summary.statusUpdates += stream.statusUpdatesSent;
        summary.readPauses += stream.readPauses;
      }
      this.stream = undefined;
      await replication.close();
    }
  }

  /** Drops an uncommitted batch: local files, and the objects it registered (and maybe uploaded). */
  private async abandonBatch(batch: BatchWriter): Promise<void> {
    await batch.discard();
    if (batch.registeredKeys.length > 0) await this.recover(batch.registeredKeys);
  }

  private newBatch(): BatchWriter {
    return new BatchWriter(
      {
        archive: this.archive,
        spoolDir: this.spoolDir,
        objectMaxBytes: this.config.objectMaxBytes,
        meter: this.meter,
        deadline: this.deadline,
        registerIntent: (keys) =>
          withRetry(() => this.options.store.recordIntent(this.lease, keys), {
            what: 'recording the intent',
            origin: 'checkpoint-store',
            deadline: this.deadline,
          }),
      },
      this.clock.nowMs(),
    );
  }

  private async reportSlot(source: pg.Client): Promise<void> {
    const slot = await readSlot(source, this.config.slot).catch(() => null);
    this.summary.lagBytes = slot?.lagBytes ?? null;
    this.summary.retainedWalBytes = slot?.retainedWalBytes ?? null;
    this.summary.walStatus = slot?.walStatus ?? null;
    this.summary.safeWalSize = slot?.safeWalSize ?? null;
  }
}
