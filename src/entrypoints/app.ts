/**
 * The operations behind the entrypoints — run, status, setup — wired to real clients from a Config.
 * The CLI and the Lambda handler call these; neither knows how a run works inside. What only some commands
 * need (verify, the lake's schema, the run metrics at the end) is imported when they run, so a run loads
 * less before it streams.
 */
import type { Config } from '../config.js';
import { createDynamoClient, DynamoCheckpointStore, ensureCheckpointTable } from '../checkpoint/dynamodb.js';
import { formatLsn } from '../lsn.js';
import type { Logger } from '../log.js';
import type { ConnectionSettings } from '../replication/connection.js';
import { sourceAccess } from '../replication/credentials.js';
import { listPublishedTables, readSlot, setupSource, withSourceClient } from '../replication/source.js';
import { SlotlakeError } from '../errors.js';
import { displayName, formatTableName, type TableName } from '../names.js';
import { NO_SNAPSHOT, report as snapshotReport, type SnapshotReport } from '../snapshot/progress.js';
import { createS3Client, S3ObjectStore } from '../sink/s3.js';
import { WriteFence } from '../sink/write-fence.js';
import type { Deadline } from '../support/deadline.js';
import { runPipeline, type RunSummary } from '../runtime/run.js';
import type { SchemaFormat } from '../lake/describe.js';
import { openSourceClient } from '../replication/source.js';
import type { TableReport } from '../verify/verify.js';

/** How `status` and `setup` connect: DATABASE_URL with the configured secret, IAM and TLS policy. */
function sourceConnection(config: Config): ConnectionSettings {
  return { databaseUrl: config.databaseUrl, access: sourceAccess(config) };
}

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
    if (request.publishMetrics !== false) (await import('../runtime/metrics.js')).publishRunMetrics(summary);
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
  /** Snapshot progress: tables, rows, percent, estimated runs left; null when none was ever requested. */
  snapshot: (SnapshotReport & { requestedNotYetStarted: string[] }) | null;
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
    const store = new DynamoCheckpointStore(dynamo, config.checkpointTable, config.pipeline);
    const requests = await store.pendingSnapshotRequests();
    const slot = await withSourceClient(sourceConnection(config), (client) => readSlot(client, config.slot));
    return {
      pipeline: config.pipeline,
      checkpoint: checkpoint ? formatLsn(checkpoint.lsn) : null,
      partial: checkpoint?.partial
        ? { commitLsn: formatLsn(checkpoint.partial.commitLsn), nextSeq: checkpoint.partial.nextSeq }
        : null,
      checkpointUpdatedAt: checkpoint?.updatedAt ?? null,
      snapshot:
        checkpoint?.snapshot || requests.length > 0
          ? { ...snapshotReport(checkpoint?.snapshot ?? NO_SNAPSHOT, null), requestedNotYetStarted: requests }
          : null,
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

export interface SnapshotRequestReport {
  requested: string[];
}

/**
 * `slotlake snapshot`: asks for a (re-)snapshot of `tables` (all published tables when none are given); the
 * next runs archive their current rows, chunk by chunk. Every table must exist in the source.
 */
export async function requestSnapshot(
  config: Config,
  tables: readonly TableName[] | undefined,
): Promise<SnapshotRequestReport> {
  const dynamo = createDynamoClient();
  try {
    const chosen = await withSourceClient(sourceConnection(config), async (client) => {
      const wanted = tables ?? (await listPublishedTables(client, config));
      const missing: TableName[] = [];
      for (const table of wanted) {
        const found = await client.query(
          `SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')`,
          [table.schema, table.table],
        );
        if (found.rowCount === 0) missing.push(table);
      }
      if (missing.length > 0)
        throw new SlotlakeError(`cannot snapshot ${missing.map(displayName).join(', ')}: no such table`, {
          kind: 'config',
          hint: 'name tables as schema.table, written as in SQL (quote mixed-case names: public."Orders")',
        });
      return wanted;
    });
    const names = chosen.map(formatTableName);
    await new DynamoCheckpointStore(dynamo, config.checkpointTable, config.pipeline).requestSnapshot(names);
    return { requested: names };
  } finally {
    dynamo.destroy();
  }
}

export interface SetupReport {
  publication: string;
  slot: string;
  slotLsn: string | null;
  /** The slot's failover flag (PostgreSQL 17+), null where the server has none. */
  slotFailover: boolean | null;
  checkpointTable: string;
  bucket: string;
}

export async function performSetup(config: Config): Promise<SetupReport> {
  const s3 = createS3Client();
  const dynamo = createDynamoClient();
  try {
    const source = await setupSource(sourceConnection(config), {
      slot: config.slot,
      publication: config.publication,
      plugin: config.plugin,
      tables: config.tables,
      failover: config.slotFailover,
    });
    const table = await ensureCheckpointTable(dynamo, config.checkpointTable);
    const bucket = await new S3ObjectStore(s3, config.bucket, config.prefix).ensureBucket();
    return {
      publication: source.publication,
      slot: source.slot,
      slotLsn: source.slotLsn ? formatLsn(source.slotLsn) : null,
      slotFailover: source.slotFailover,
      checkpointTable: table,
      bucket,
    };
  } finally {
    s3.destroy();
    dynamo.destroy();
  }
}

export interface SchemaOptions {
  readonly format: SchemaFormat;
  /** Where DuckDB views read the objects: `s3://…` or a local copy of the archive (default: the archive). */
  readonly location?: string;
  readonly athenaDatabase: string;
  readonly tables?: readonly TableName[];
}

/** `slotlake schema`: the readers' SQL for the archive as its manifests describe it. */
export async function printableSchema(config: Config, options: SchemaOptions): Promise<string> {
  const { describeSchema, renderSchema } = await import('../lake/describe.js');
  const s3 = createS3Client();
  try {
    const schema = await describeSchema({
      store: new S3ObjectStore(s3, config.bucket, config.prefix),
      athenaDatabase: options.athenaDatabase,
      ...(options.location !== undefined ? { location: options.location } : {}),
      ...(options.tables ? { tables: options.tables } : {}),
    });
    return renderSchema(schema, options.format);
  } finally {
    s3.destroy();
  }
}

export interface VerifyRequest {
  readonly config: Config;
  readonly logger: Logger;
  /** The tables to verify; every published table when undefined. */
  readonly tables: readonly TableName[] | undefined;
  /** How long to wait for a run holding the pipeline's lease. */
  readonly leaseWaitMs: number;
}

/**
 * `slotlake verify`: each table rebuilt from the archive against the source (verify/verify.ts); one report per
 * table. Reads the archive and the source, peeks at the slot under the pipeline's lease; changes nothing else.
 */
export async function performVerify(request: VerifyRequest): Promise<TableReport[]> {
  const { config } = request;
  const [{ s3ArchiveStore }, { verifyTables }] = await Promise.all([
    import('../verify/archive.js'),
    import('../verify/verify.js'),
  ]);
  const s3 = createS3Client();
  const dynamo = createDynamoClient();
  const source = await openSourceClient(sourceConnection(config));
  try {
    const tables = request.tables ?? (await listPublishedTables(source, config));
    return await verifyTables({
      config,
      logger: request.logger,
      archive: s3ArchiveStore(new S3ObjectStore(s3, config.bucket, config.prefix)),
      checkpoints: new DynamoCheckpointStore(dynamo, config.checkpointTable, config.pipeline),
      source,
      tables,
      leaseWaitMs: request.leaseWaitMs,
    });
  } finally {
    await source.end().catch(() => undefined);
    s3.destroy();
    dynamo.destroy();
  }
}
