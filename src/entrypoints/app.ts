/**
 * The operations behind the entrypoints — run, status, setup — wired to real clients from a Config.
 * The CLI and the Lambda handler call these; neither knows how a run works inside.
 */
import type { Config } from '../config.js';
import { createDynamoClient, DynamoCheckpointStore, ensureCheckpointTable } from '../checkpoint/dynamodb.js';
import { formatLsn } from '../lsn.js';
import type { Logger } from '../log.js';
import { readSlot, setupSource, withSourceClient } from '../replication/source.js';
import { createS3Client, S3ObjectStore } from '../sink/s3.js';
import { WriteFence } from '../sink/write-fence.js';
import type { Deadline } from '../support/deadline.js';
import { runPipeline, type RunSummary } from '../runtime/run.js';
import { publishRunMetrics } from '../runtime/metrics.js';

export interface RunRequest {
  readonly config: Config;
  readonly logger: Logger;
  readonly deadline: Deadline;
  readonly untilCaughtUp: boolean;
  readonly stopSignal?: AbortSignal;
  readonly onBatch?: (summary: Readonly<RunSummary>) => void;
  /** Emit the run's EMF metrics (default true). */
  readonly publishMetrics?: boolean;
}

export async function performRun(request: RunRequest): Promise<RunSummary> {
  const fence = new WriteFence();
  const s3 = createS3Client(fence);
  const dynamo = createDynamoClient();
  try {
    const summary = await runPipeline({
      config: request.config,
      logger: request.logger,
      objects: new S3ObjectStore(s3, request.config.bucket, request.config.prefix, fence),
      checkpoints: new DynamoCheckpointStore(dynamo, request.config.checkpointTable, request.config.pipeline),
      deadline: request.deadline,
      untilCaughtUp: request.untilCaughtUp,
      ...(request.stopSignal ? { stopSignal: request.stopSignal } : {}),
      ...(request.onBatch ? { onBatch: request.onBatch } : {}),
    });
    if (request.publishMetrics !== false) publishRunMetrics(summary);
    return summary;
  } finally {
    s3.destroy();
    dynamo.destroy();
  }
}

export interface StatusReport {
  pipeline: string;
  checkpoint: string | null;
  partial: { commitLsn: string; nextSeq: number } | null;
  checkpointUpdatedAt: string | null;
  slot: {
    name: string;
    plugin: string;
    active: boolean;
    confirmedFlushLsn: string | null;
    restartLsn: string | null;
    lagBytes: number;
    retainedWalBytes: number;
    walStatus: string | null;
    safeWalSize: number | null;
    currentWalLsn: string;
  } | null;
}

export async function readStatus(config: Config): Promise<StatusReport> {
  const dynamo = createDynamoClient();
  try {
    const checkpoint = await new DynamoCheckpointStore(
      dynamo,
      config.checkpointTable,
      config.pipeline,
    ).read();
    const slot = await withSourceClient({ databaseUrl: config.databaseUrl }, (client) =>
      readSlot(client, config.slot),
    );
    return {
      pipeline: config.pipeline,
      checkpoint: checkpoint ? formatLsn(checkpoint.lsn) : null,
      partial: checkpoint?.partial
        ? { commitLsn: formatLsn(checkpoint.partial.commitLsn), nextSeq: checkpoint.partial.nextSeq }
        : null,
      checkpointUpdatedAt: checkpoint?.updatedAt ?? null,
      slot: slot
        ? {
            name: slot.name,
            plugin: slot.plugin,
            active: slot.active,
            confirmedFlushLsn: slot.confirmedFlushLsn ? formatLsn(slot.confirmedFlushLsn) : null,
            restartLsn: slot.restartLsn ? formatLsn(slot.restartLsn) : null,
            lagBytes: slot.lagBytes,
            retainedWalBytes: slot.retainedWalBytes,
            walStatus: slot.walStatus,
            safeWalSize: slot.safeWalSize,
            currentWalLsn: formatLsn(slot.currentWalLsn),
          }
        : null,
    };
  } finally {
    dynamo.destroy();
  }
}

export interface SetupReport {
  publication: string;
  slot: string;
  slotLsn: string | null;
  checkpointTable: string;
  bucket: string;
}

export async function performSetup(config: Config): Promise<SetupReport> {
  const s3 = createS3Client();
  const dynamo = createDynamoClient();
  try {
    const source = await setupSource(
      { databaseUrl: config.databaseUrl },
      { slot: config.slot, publication: config.publication, plugin: config.plugin, tables: config.tables },
    );
    const table = await ensureCheckpointTable(dynamo, config.checkpointTable);
    const bucket = await new S3ObjectStore(s3, config.bucket, config.prefix).ensureBucket();
    return {
      publication: source.publication,
      slot: source.slot,
      slotLsn: source.slotLsn ? formatLsn(source.slotLsn) : null,
      checkpointTable: table,
      bucket,
    };
  } finally {
    s3.destroy();
    dynamo.destroy();
  }
}
