/**
 * The run loop: one time-bounded run of the pipeline, the same for the CLI and the Lambda handler.
 *
 * Flow: resume position (checkpoint, else the slot) → START_REPLICATION → frames → logical messages →
 * transactions (Begin…Commit, each change numbered by `seq`) → records appended to per-table objects of the
 * current batch → at a transaction boundary, when the batch is big or old enough, the commit sequence
 * (runtime/commit.ts) makes it durable, checkpoints and acknowledges. Transactions whose commit LSN is below
 * the resume position are skipped on replay; a transaction cut by an earlier run's deadline is resumed at
 * the first `seq` not yet archived. The run stops reading when the deadline leaves just enough time for
 * the final flush (estimated from measured upload speed), on a signal, once caught up with the WAL position
 * captured at start (`--until-caught-up`), or after an idle period; then it drains: final batch, checkpoint,
 * acknowledgement, CopyDone. When nothing is pending, the server's keepalive position is adopted, so an idle
 * slot advances instead of pinning WAL.
 */
import { randomUUID } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import type { Config } from '../config.js';
import type { CheckpointStore, PartialTransaction } from '../checkpoint/store.js';
import type { LogicalMessage } from '../decoding/messages.js';
import { PgoutputDecoder } from '../decoding/pgoutput.js';
import type { TypeInfo } from '../decoding/values.js';
import { Wal2jsonDecoder, wal2jsonPluginOptions } from '../decoding/wal2json.js';
import { classify, DecodeError, SlotlakeError } from '../errors.js';
import { formatLsn, maxLsn, type Lsn } from '../lsn.js';
import type { Logger } from '../log.js';
import { unixMicrosFromPostgres, type XLogDataFrame } from '../protocol/frames.js';
import { RelationEncoder, transactionSource, type Op, type TransactionSource } from '../pipeline/records.js';
import { ReplicationConnection, type ReplicationStream } from '../replication/connection.js';
import { checkSource, openSourceClient, readSlot, type SlotState } from '../replication/source.js';
import { BatchWriter, UploadMeter } from '../sink/batch.js';
import { S3Archive } from '../sink/s3.js';
import { CommitSequence, type DurablePosition } from './commit.js';
import { systemClock, type Clock, type Deadline } from './deadline.js';
import { withRetry } from './retry.js';

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
  lagBytes: number | null;
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

function utcDate(unixMicros: bigint): string {
  const ms = Number(unixMicros / 1000n);
  const date = new Date(ms);
  return Number.isNaN(date.getTime()) ? '1970-01-01' : date.toISOString().slice(0, 10);
}

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

export async function runIngest(options: RunOptions): Promise<RunSummary> {
  const { config, logger, deadline } = options;
  const clock = options.clock ?? systemClock;
  const startedAtMs = clock.nowMs();
  const runId = randomUUID();
  const archive = new S3Archive(options.s3, config.bucket, config.prefix);
  const connection = { databaseUrl: config.databaseUrl, applicationName: `slotlake:${config.pipeline}` };
  const summary: RunSummary = {
    stopReason: 'deadline',
    startCheckpoint: null,
    checkpoint: '0/0',
    transactions: 0,
    changes: 0,
    objects: 0,
    bytes: 0,
    durationMs: 0,
    pipeline: config.pipeline,
    slot: config.slot,
    runId,
    batches: 0,
    skippedTransactions: 0,
    partial: null,
    statusUpdates: 0,
    lagBytes: null,
  };
  const finish = (): RunSummary => {
    summary.durationMs = Math.round(clock.nowMs() - startedAtMs);
    return summary;
  };

  // Preconditions, before anything streams: bucket, checkpoint, source.
  await withRetry(() => archive.checkBucket(), { what: 'checking the S3 bucket', deadline });
  const checkpoint = await withRetry(() => options.store.read(), {
    what: 'reading the checkpoint',
    deadline,
  });
  summary.startCheckpoint = checkpoint ? formatLsn(checkpoint.lsn) : null;
  const source = await withRetry(() => openSourceClient(connection), {
    what: 'connecting to postgres',
    deadline,
  });
  try {
    return await streamChanges();
  } finally {
    await source.end().catch(() => undefined);
  }

  async function streamChanges(): Promise<RunSummary> {
    const slot: SlotState = await withRetry(
      () =>
        checkSource(source, {
          slot: config.slot,
          publication: config.publication,
          plugin: config.plugin,
        }).catch((error: unknown) => {
          throw classify(error, 'checking the source database');
        }),
      { what: 'checking the source database', deadline, maxAttempts: 1 },
    );
    if (slot.active) {
      logger.info('the slot is streaming to another process; leaving this run to it', {
        activePid: slot.activePid,
      });
      summary.stopReason = 'lease-held';
      summary.checkpoint = summary.startCheckpoint ?? formatLsn(slot.confirmedFlushLsn ?? (0n as Lsn));
      return finish();
    }
    const slotPosition = slot.confirmedFlushLsn ?? slot.restartLsn ?? (0n as Lsn);
    let resumeLsn: Lsn;
    let partial: PartialTransaction | undefined = checkpoint?.partial;
    if (!checkpoint) {
      resumeLsn = slotPosition;
      logger.info('no checkpoint yet: starting at the slot position', {
        slotPosition: formatLsn(slotPosition),
      });
    } else if (slotPosition > checkpoint.lsn) {
      const message =
        `the slot "${config.slot}" is at ${formatLsn(slotPosition)}, ahead of the checkpoint ${formatLsn(checkpoint.lsn)}: ` +
        `changes between them were consumed by something else (or the slot was recreated) and are not in the archive`;
      if (config.slotPositionPolicy === 'fail') {
        throw new SlotlakeError(message, {
          kind: 'slot-ahead',
          hint:
            'find what consumed the slot; to accept the gap knowingly set SLOTLAKE_SLOT_POSITION_POLICY=trust-slot for one run, ' +
            'or re-snapshot the tables into the archive',
        });
      }
      logger.warn(`${message}; continuing because SLOTLAKE_SLOT_POSITION_POLICY=trust-slot`);
      resumeLsn = slotPosition;
      if (partial && partial.commitLsn < slotPosition) partial = undefined;
    } else {
      resumeLsn = checkpoint.lsn;
    }
    summary.checkpoint = formatLsn(resumeLsn);

    const meter = new UploadMeter();
    let stream: ReplicationStream | undefined;
    const commits = new CommitSequence(
      {
        archive,
        store: options.store,
        logger,
        deadline,
        meter,
        pipeline: config.pipeline,
        slot: config.slot,
        runId,
      },
      checkpoint,
      (position) => stream?.acknowledge(position),
    );
    const spoolDir = join(config.spoolDir ?? join(tmpdir(), 'slotlake-spool'), runId);
    const newBatch = () =>
      new BatchWriter({ archive, spoolDir, objectMaxBytes: config.objectMaxBytes, meter }, clock.nowMs());

    const replication = await withRetry(() => ReplicationConnection.open(connection), {
      what: 'opening the replication connection',
      deadline,
    });
    let batch = newBatch();
    try {
      const identity = await replication.identifySystem();
      const target = identity.walPosition;
      const pluginOptions: Record<string, string> =
        config.plugin === 'wal2json'
          ? wal2jsonPluginOptions(
              config.tables?.map((name) => {
                const [schema, table] = name.split('.') as [string, string];
                return { schema, table };
              }),
            )
          : { proto_version: String(config.protocolVersion), publication_names: config.publication };
      try {
        stream = replication.startReplication({
          slot: config.slot,
          startLsn: resumeLsn,
          pluginOptions,
          statusIntervalMs: config.statusIntervalMs,
        });
      } catch (error) {
        throw classify(error, 'starting replication');
      }
      const decode = messageDecoder(config);
      const registry = new Map<number, TypeInfo>();
      const encoders = new Map<number, RelationEncoder>();
      const database = identity.database;

      let txn: OpenTransaction | undefined;
      let lastCommitEnd: Lsn = resumeLsn;
      let idlePosition: Lsn | undefined;
      let batchTransactions = 0;
      let lastDataAtMs = clock.nowMs();
      let lastKeepaliveRequestMs = 0;
      let framesSinceEstimate = 0;
      let flushEstimateMs = commits.estimateTailMs();
      let caughtUp = !options.untilCaughtUp ? false : resumeLsn >= target;
      let stopReason: StopReason | undefined = caughtUp ? 'caught-up' : undefined;
      logger.info('run started', {
        runId,
        resumeLsn: formatLsn(resumeLsn),
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
        summary.checkpoint = formatLsn(position.lsn);
        summary.partial = position.partial
          ? { commitLsn: formatLsn(position.partial.commitLsn), nextSeq: position.partial.nextSeq }
          : null;
        batchTransactions = 0;
        batch = newBatch();
        options.onBatch?.(summary);
      };

      const rotationDue = () =>
        !batch.isEmpty &&
        (batch.rows >= config.batchMaxRows ||
          batch.uncompressedBytes >= config.batchMaxBytes ||
          clock.nowMs() - batch.startedAtMs >= config.batchMaxAgeMs);

      const handle = async (message: LogicalMessage, frame: XLogDataFrame): Promise<void> => {
        switch (message.tag) {
          case 'begin': {
            if (txn) throw new DecodeError('Begin inside an open transaction');
            const commitTimeUs = unixMicrosFromPostgres(message.commitTime);
            const skip = message.finalLsn < resumeLsn;
            const resumed = partial !== undefined && partial.commitLsn === message.finalLsn;
            txn = {
              xid: message.xid,
              commitLsn: message.finalLsn,
              source: transactionSource(formatLsn(message.finalLsn), message.xid, commitTimeUs),
              dt: utcDate(commitTimeUs),
              skipBelowSeq: resumed ? partial!.nextSeq : 0,
              skip,
              seq: 0,
            };
            return;
          }
          case 'commit': {
            if (!txn) throw new DecodeError('Commit without Begin');
            if (txn.commitLsn !== message.commitLsn)
              throw new DecodeError(
                `Commit LSN ${formatLsn(message.commitLsn)} differs from Begin's final LSN ${formatLsn(txn.commitLsn)}`,
              );
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
          case 'relation': {
            encoders.set(
              message.relation.relationId,
              new RelationEncoder(message.relation, database, registry),
            );
            return;
          }
          case 'type': {
            registry.set(message.typeOid, {
              oid: message.typeOid,
              name: message.name,
              namespace: message.namespace,
            });
            return;
          }
          case 'insert':
          case 'update':
          case 'delete': {
            if (!txn) throw new DecodeError(`${message.tag} outside a transaction`);
            const seq = txn.seq++;
            if (txn.skip || seq < txn.skipBelowSeq) return;
            const encoder = encoders.get(message.relationId);
            if (!encoder) throw new DecodeError(`change for unknown relation ${message.relationId}`);
            let before = undefined;
            let keyOnly = false;
            if (message.tag !== 'insert') {
              before = message.oldTuple ?? message.oldKey;
              keyOnly = message.oldTuple === undefined;
            }
            const after = message.tag === 'delete' ? undefined : message.newTuple;
            const line = encoder.encode(
              OPS[message.tag],
              before,
              keyOnly,
              after,
              formatLsn(frame.walStart),
              seq,
              txn.source,
            );
            const object = batch.write(
              encoder.schema,
              encoder.table,
              txn.dt,
              txn.commitLsn,
              seq,
              line,
              txn.skipBelowSeq > 0,
            );
            summary.changes++;
            await batch.drain(object);
            return;
          }
          case 'truncate': {
            if (!txn) throw new DecodeError('Truncate outside a transaction');
            for (const relationId of message.relationIds) {
              const seq = txn.seq++;
              if (txn.skip || seq < txn.skipBelowSeq) continue;
              const encoder = encoders.get(relationId);
              if (!encoder) throw new DecodeError(`truncate of unknown relation ${relationId}`);
              const line = encoder.encode(
                't',
                undefined,
                false,
                undefined,
                formatLsn(frame.walStart),
                seq,
                txn.source,
              );
              batch.write(
                encoder.schema,
                encoder.table,
                txn.dt,
                txn.commitLsn,
                seq,
                line,
                txn.skipBelowSeq > 0,
              );
              summary.changes++;
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
                hint: 'leave SLOTLAKE_PROTO_VERSION at 1 or 2 without streaming; report this with the server version',
              },
            );
        }
      };

      // The read loop.
      while (stopReason === undefined) {
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
        if (deadline.mustStopReading(flushEstimateMs)) {
          stopReason = 'deadline';
          logger.info('deadline near: stopping reading to flush', {
            remainingMs: Math.round(deadline.remainingMs()),
            flushEstimateMs: Math.round(flushEstimateMs),
            openTransaction: txn !== undefined,
          });
          break;
        }
        const waitMs = Math.max(0, Math.min(250, deadline.usableMs() - flushEstimateMs));
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
            if (options.untilCaughtUp && frame.walEnd >= target) caughtUp = true;
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

      summary.stopReason = stopReason;
      // Drain: make everything read durable, checkpoint, acknowledge; then end the stream cleanly.
      await commitBatch();
      summary.statusUpdates = stream.statusUpdatesSent;
      await stream.stop();
      summary.statusUpdates = stream.statusUpdatesSent;
      const finalSlot = await readSlot(source, config.slot).catch(() => null);
      summary.lagBytes = finalSlot?.lagBytes ?? null;
      logger.info('run finished', { ...finish() });
      return finish();
    } catch (error) {
      stream?.abandon();
      await batch.discard().catch(() => undefined);
      throw classify(error, 'run');
    } finally {
      await replication.close();
    }
  }
}
