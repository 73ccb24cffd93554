/**
 * The pipeline's state in DynamoDB: one item per pipeline, partition key `pk` (string).
 *
 * Attributes: `lsn` (X/X) and `lsnKey` (16-hex, so that string order is unsigned LSN order) — the checkpoint;
 * `partialCommitLsn` + `partialNextSeq` when a transaction was cut mid-way; `sourceSystemId`,
 * `sourceTimeline`, `sourceDatabase`, `sourceSlot` — the source the LSNs belong to; `version` (+1 per
 * checkpoint write) and `writeId` (which write stored it); `leaseOwner`, `leaseExpiresAt` (epoch ms) and
 * `fence` (+1 per acquisition) — the lease; `intentKeys` (string set) — the S3 keys of the batch in flight;
 * `pendingManifestKey` + `pendingManifestStagingKey` — the last committed batch's manifest, staged in S3;
 * `uploadBytesPerMs`, `requestLatencyMs`, `commitLatencyMs` — the store speed the last run measured;
 * `snapshotProgress` (gzip JSON, binary) — the snapshot progress; `snapshotRequests` (string set) — tables
 * `slotlake snapshot` asked for, merged by the next run;
 * `updatedAt` and `note_*` for operators. Every write is an UpdateItem with a condition on the lease (and,
 * for the checkpoint, on `version` and on never moving `lsnKey` back on the same system), so a stale or
 * fenced-off run can change nothing. Reads are strongly consistent. A checkpoint write whose response was
 * lost is recognised on retry by its `writeId`.
 */
import { randomUUID } from 'node:crypto';
import { gunzipSync, gzipSync } from 'node:zlib';
import {
  ConditionalCheckFailedException,
  CreateTableCommand,
  DescribeTableCommand,
  DynamoDBClient,
  GetItemCommand,
  ResourceInUseException,
  ResourceNotFoundException,
  UpdateItemCommand,
  waitUntilTableExists,
  type AttributeValue,
} from '@aws-sdk/client-dynamodb';
import { classify, SlotlakeError } from '../errors.js';
import { formatLsn, lsnKey, parseLsn } from '../lsn.js';
import {
  leaseLostError,
  type Acquisition,
  type Checkpoint,
  type CheckpointStore,
  type CheckpointUpdate,
  type Lease,
  type PendingManifest,
  type StoreSpeed,
} from './store.js';
import type { SnapshotProgress } from '../snapshot/progress.js';

export function createDynamoClient(): DynamoDBClient {
  const endpoint = process.env.AWS_ENDPOINT_URL_DYNAMODB ?? process.env.AWS_ENDPOINT_URL;
  return new DynamoDBClient({
    ...(endpoint ? { endpoint } : {}),
    maxAttempts: 1, // retries go through the project's own classify()-driven policy
    requestHandler: { connectionTimeout: 5_000, requestTimeout: 15_000, throwOnRequestTimeout: true },
  });
}

type Item = Record<string, AttributeValue>;

const HOLDS_LEASE = 'leaseOwner = :owner AND fence = :fence';
const ORIGIN = { origin: 'checkpoint-store' } as const;

function leaseValues(lease: Lease): Item {
  return { ':owner': { S: lease.owner }, ':fence': { N: String(lease.fence) } };
}

function speedOf(item: Item): StoreSpeed | undefined {
  const upload = item.uploadBytesPerMs?.N;
  const latency = item.requestLatencyMs?.N;
  const commit = item.commitLatencyMs?.N;
  if (upload === undefined || latency === undefined || commit === undefined) return undefined;
  return {
    uploadBytesPerMs: Number(upload),
    requestLatencyMs: Number(latency),
    commitLatencyMs: Number(commit),
  };
}

function speedValues(speed: StoreSpeed): { sets: string[]; values: Item } {
  return {
    sets: [
      'uploadBytesPerMs = :uploadBytesPerMs',
      'requestLatencyMs = :requestLatencyMs',
      'commitLatencyMs = :commitLatencyMs',
    ],
    values: {
      ':uploadBytesPerMs': { N: String(Math.max(0.001, speed.uploadBytesPerMs)) },
      ':requestLatencyMs': { N: String(Math.round(speed.requestLatencyMs)) },
      ':commitLatencyMs': { N: String(Math.round(speed.commitLatencyMs)) },
    },
  };
}

export class DynamoCheckpointStore implements CheckpointStore {
  /** Write ids of attempts whose outcome is unknown (the request may have taken effect). */
  private readonly pendingWriteIds = new Set<string>();

  constructor(
    private readonly client: DynamoDBClient,
    private readonly table: string,
    private readonly pipeline: string,
  ) {}

  private get key(): Item {
    return { pk: { S: this.pipeline } };
  }

  private async getItem(): Promise<Item | undefined> {
    try {
      const result = await this.client.send(
        new GetItemCommand({ TableName: this.table, Key: this.key, ConsistentRead: true }),
      );
      return result.Item;
    } catch (error) {
      throw classify(error, { ...ORIGIN, what: `reading the checkpoint from DynamoDB table ${this.table}` });
    }
  }

  async read(): Promise<Checkpoint | null> {
    const item = await this.getItem();
    return item ? checkpointOf(item) : null;
  }

  async acquire(owner: string, durationMs: number, nowMs: number): Promise<Acquisition> {
    const expiresAtMs = Math.round(nowMs + durationMs);
    try {
      const result = await this.client.send(
        new UpdateItemCommand({
          TableName: this.table,
          Key: this.key,
          UpdateExpression:
            'SET leaseOwner = :owner, leaseExpiresAt = :expires, fence = if_not_exists(fence, :zero) + :one',
          ConditionExpression:
            'attribute_not_exists(leaseOwner) OR leaseExpiresAt < :now OR leaseOwner = :owner',
          ExpressionAttributeValues: {
            ':owner': { S: owner },
            ':expires': { N: String(expiresAtMs) },
            ':now': { N: String(Math.round(nowMs)) },
            ':zero': { N: '0' },
            ':one': { N: '1' },
          },
          // The item as it was: the checkpoint, the intent, and the lease this acquisition replaces.
          ReturnValues: 'ALL_OLD',
        }),
      );
      const old = result.Attributes ?? {};
      const previousOwner = old.leaseOwner?.S;
      return {
        acquired: true,
        lease: { owner, fence: Number(old.fence?.N ?? '0') + 1, expiresAtMs },
        checkpoint: checkpointOf(old),
        intentKeys: old.intentKeys?.SS ?? [],
        pendingManifest: pendingManifestOf(old),
        takenOver:
          previousOwner !== undefined && previousOwner !== owner
            ? { owner: previousOwner, expiresAtMs: Number(old.leaseExpiresAt?.N ?? '0') }
            : undefined,
        speed: speedOf(old),
        snapshotRequests: old.snapshotRequests?.SS ?? [],
      };
    } catch (error) {
      if (error instanceof ConditionalCheckFailedException) {
        const item = await this.getItem();
        return {
          acquired: false,
          holder: item?.leaseOwner?.S,
          expiresAtMs: item?.leaseExpiresAt?.N === undefined ? undefined : Number(item.leaseExpiresAt.N),
          checkpoint: item ? checkpointOf(item) : null,
        };
      }
      throw classify(error, { ...ORIGIN, what: `acquiring the lease in DynamoDB table ${this.table}` });
    }
  }

  private async updateUnderLease(
    lease: Lease,
    update: string,
    values: Item,
    what: string,
    signal?: AbortSignal,
  ): Promise<void> {
    try {
      await this.client.send(
        new UpdateItemCommand({
          TableName: this.table,
          Key: this.key,
          UpdateExpression: update,
          ConditionExpression: HOLDS_LEASE,
          ExpressionAttributeValues: { ...leaseValues(lease), ...values },
        }),
        signal ? { abortSignal: signal } : {},
      );
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      if (error instanceof ConditionalCheckFailedException) throw leaseLostError(this.pipeline, error);
      throw classify(error, { ...ORIGIN, what: `${what} in DynamoDB table ${this.table}` });
    }
  }

  async renew(lease: Lease, durationMs: number, nowMs: number, signal?: AbortSignal): Promise<Lease> {
    const expiresAtMs = Math.round(nowMs + durationMs);
    await this.updateUnderLease(
      lease,
      'SET leaseExpiresAt = :expires',
      { ':expires': { N: String(expiresAtMs) } },
      'renewing the lease',
      signal,
    );
    return { ...lease, expiresAtMs };
  }

  async release(lease: Lease, speed?: StoreSpeed, expireAtMs?: number): Promise<void> {
    const sets: string[] = [];
    const values: Item = {};
    if (speed) {
      const recorded = speedValues(speed);
      sets.push(...recorded.sets);
      Object.assign(values, recorded.values);
    }
    if (expireAtMs !== undefined) {
      sets.push('leaseExpiresAt = :expireAt');
      values[':expireAt'] = { N: String(Math.round(expireAtMs)) };
    }
    const clauses = [
      ...(sets.length > 0 ? [`SET ${sets.join(', ')}`] : []),
      ...(expireAtMs === undefined ? ['REMOVE leaseOwner, leaseExpiresAt'] : []),
    ];
    if (clauses.length === 0) return;
    await this.updateUnderLease(lease, clauses.join(' '), values, 'releasing the lease');
  }

  async recordIntent(lease: Lease, keys: readonly string[], signal?: AbortSignal): Promise<void> {
    if (keys.length === 0) return;
    await this.updateUnderLease(
      lease,
      'ADD intentKeys :keys',
      { ':keys': { SS: [...new Set(keys)] } },
      'recording the intent',
      signal,
    );
  }

  async pendingSnapshotRequests(): Promise<string[]> {
    return (await this.getItem())?.snapshotRequests?.SS ?? [];
  }

  async requestSnapshot(tables: readonly string[]): Promise<void> {
    if (tables.length === 0) return;
    try {
      await this.client.send(
        new UpdateItemCommand({
          TableName: this.table,
          Key: this.key,
          UpdateExpression: 'ADD snapshotRequests :tables',
          ExpressionAttributeValues: { ':tables': { SS: [...new Set(tables)] } },
        }),
      );
    } catch (error) {
      throw classify(error, { ...ORIGIN, what: `requesting a snapshot in DynamoDB table ${this.table}` });
    }
  }

  async clearIntent(lease: Lease): Promise<void> {
    await this.updateUnderLease(lease, 'REMOVE intentKeys', {}, 'clearing the intent');
  }

  async clearPendingManifest(lease: Lease, key: string): Promise<void> {
    try {
      await this.client.send(
        new UpdateItemCommand({
          TableName: this.table,
          Key: this.key,
          UpdateExpression: 'REMOVE pendingManifestKey, pendingManifestStagingKey',
          ConditionExpression: `${HOLDS_LEASE} AND pendingManifestKey = :manifestKey`,
          ExpressionAttributeValues: { ...leaseValues(lease), ':manifestKey': { S: key } },
        }),
      );
    } catch (error) {
      if (!(error instanceof ConditionalCheckFailedException))
        throw classify(error, {
          ...ORIGIN,
          what: `clearing the pending manifest in DynamoDB table ${this.table}`,
        });
      // Either the lease is gone, or the pending manifest is no longer this one (nothing to do).
      const item = await this.getItem();
      if (item?.leaseOwner?.S !== lease.owner || Number(item?.fence?.N) !== lease.fence)
        throw leaseLostError(this.pipeline, error);
    }
  }

  async write(
    update: CheckpointUpdate,
    expectedVersion: number | null,
    lease: Lease,
    signal?: AbortSignal,
  ): Promise<Checkpoint> {
    const version = (expectedVersion ?? 0) + 1;
    const updatedAt = new Date().toISOString();
    const writeId = randomUUID();
    const names: Record<string, string> = { '#version': 'version' };
    const values: Item = {
      ...leaseValues(lease),
      ':lsn': { S: formatLsn(update.lsn) },
      ':lsnKey': { S: lsnKey(update.lsn) },
      ':version': { N: String(version) },
      ':updatedAt': { S: updatedAt },
      ':writeId': { S: writeId },
      ':systemId': { S: update.source.systemId },
      ':timeline': { N: String(update.source.timeline) },
      ':database': { S: update.source.database },
      ':slot': { S: update.source.slot },
    };
    const sets = [
      'lsn = :lsn',
      'lsnKey = :lsnKey',
      '#version = :version',
      'updatedAt = :updatedAt',
      'writeId = :writeId',
      'sourceSystemId = :systemId',
      'sourceTimeline = :timeline',
      'sourceDatabase = :database',
      'sourceSlot = :slot',
    ];
    const removes = ['intentKeys'];
    if (update.partial) {
      sets.push('partialCommitLsn = :partialLsn', 'partialNextSeq = :partialSeq');
      values[':partialLsn'] = { S: formatLsn(update.partial.commitLsn) };
      values[':partialSeq'] = { N: String(update.partial.nextSeq) };
    } else {
      removes.push('partialCommitLsn', 'partialNextSeq');
    }
    if (update.manifest) {
      sets.push('pendingManifestKey = :manifestKey', 'pendingManifestStagingKey = :manifestStagingKey');
      values[':manifestKey'] = { S: update.manifest.key };
      values[':manifestStagingKey'] = { S: update.manifest.stagingKey };
    } else {
      removes.push('pendingManifestKey', 'pendingManifestStagingKey');
    }
    if (update.speed) {
      const speed = speedValues(update.speed);
      sets.push(...speed.sets);
      Object.assign(values, speed.values);
    }
    if (update.snapshot) {
      sets.push('snapshotProgress = :snapshot');
      values[':snapshot'] = { B: gzipSync(JSON.stringify(update.snapshot)) };
    }
    const consumed = [...new Set(update.consumedSnapshotRequests ?? [])];
    if (consumed.length > 0) values[':consumedRequests'] = { SS: consumed };
    for (const [name, value] of Object.entries(update.note ?? {})) {
      const safe = name.replace(/[^A-Za-z0-9_]/g, '_');
      sets.push(`note_${safe} = :note_${safe}`);
      values[`:note_${safe}`] = typeof value === 'number' ? { N: String(value) } : { S: value };
    }
    // The lease, the version read before, and never backwards on the same system (16-hex strings compare
    // as unsigned 64-bit LSNs; another system's or database's positions are unrelated, so a run that
    // accepted a new source may start lower).
    let condition = `${HOLDS_LEASE} AND (attribute_not_exists(lsnKey) OR lsnKey <= :lsnKey OR attribute_not_exists(sourceSystemId) OR sourceSystemId <> :systemId OR sourceDatabase <> :database)`;
    if (expectedVersion === null) condition += ' AND attribute_not_exists(#version)';
    else {
      condition += ' AND #version = :expected';
      values[':expected'] = { N: String(expectedVersion) };
    }
    const written: Checkpoint = {
      lsn: update.lsn,
      partial: update.partial,
      source: update.source,
      snapshot: update.snapshot,
      version,
      updatedAt,
    };
    try {
      await this.client.send(
        new UpdateItemCommand({
          TableName: this.table,
          Key: this.key,
          UpdateExpression:
            `SET ${sets.join(', ')} REMOVE ${removes.join(', ')}` +
            (consumed.length > 0 ? ' DELETE snapshotRequests :consumedRequests' : ''),
          ConditionExpression: condition,
          ExpressionAttributeNames: names,
          ExpressionAttributeValues: values,
        }),
        signal ? { abortSignal: signal } : {},
      );
      return written;
    } catch (error) {
      if (!(error instanceof ConditionalCheckFailedException)) {
        this.pendingWriteIds.add(writeId);
        if (signal?.aborted) throw signal.reason;
        throw classify(error, { ...ORIGIN, what: `writing the checkpoint to DynamoDB table ${this.table}` });
      }
      const item = await this.getItem();
      if (item?.leaseOwner?.S !== lease.owner || Number(item?.fence?.N) !== lease.fence)
        throw leaseLostError(this.pipeline, error);
      // An earlier attempt of this same logical write may have taken effect (its response lost).
      const stored = item ? checkpointOf(item) : null;
      if (
        stored &&
        this.pendingWriteIds.has(item?.writeId?.S ?? '') &&
        stored.lsn === update.lsn &&
        stored.partial?.commitLsn === update.partial?.commitLsn &&
        stored.partial?.nextSeq === update.partial?.nextSeq &&
        stored.version === version
      ) {
        return stored;
      }
      if (stored && stored.version === expectedVersion && stored.lsn > update.lsn) {
        throw new SlotlakeError(
          `refusing to move the checkpoint of pipeline ${this.pipeline} back from ${formatLsn(stored.lsn)} to ${formatLsn(update.lsn)}`,
          { kind: 'internal', origin: 'checkpoint-store', cause: error },
        );
      }
      throw new SlotlakeError(
        `the checkpoint of pipeline ${this.pipeline} changed under this run (expected version ${expectedVersion})`,
        {
          kind: 'checkpoint-conflict',
          origin: 'checkpoint-store',
          hint: 'another run is working on this pipeline; nothing was acknowledged',
          cause: error,
        },
      );
    }
  }
}

function pendingManifestOf(item: Item): PendingManifest | undefined {
  const key = item.pendingManifestKey?.S;
  const stagingKey = item.pendingManifestStagingKey?.S;
  if (!key || !stagingKey) return undefined;
  return { key, stagingKey };
}

function checkpointOf(item: Item): Checkpoint | null {
  const text = item.lsn?.S;
  if (!text) return null;
  const partialLsn = item.partialCommitLsn?.S;
  const systemId = item.sourceSystemId?.S;
  const snapshot = item.snapshotProgress?.B;
  return {
    lsn: parseLsn(text),
    partial: partialLsn
      ? { commitLsn: parseLsn(partialLsn), nextSeq: Number(item.partialNextSeq?.N ?? '0') }
      : undefined,
    source:
      systemId === undefined
        ? undefined
        : {
            systemId,
            timeline: Number(item.sourceTimeline?.N ?? '0'),
            database: item.sourceDatabase?.S ?? '',
            slot: item.sourceSlot?.S ?? '',
          },
    snapshot: snapshot ? (JSON.parse(gunzipSync(snapshot).toString('utf8')) as SnapshotProgress) : undefined,
    version: Number(item.version?.N ?? '0'),
    updatedAt: item.updatedAt?.S ?? '',
  };
}

/**
 * `setup`: creates the table (on-demand billing) when missing, else checks its key schema. Pipelines sharing a
 * table may be set up at the same time: when another setup created it first (ResourceInUseException), this one
 * waits for it and checks it like any existing table.
 */
export async function ensureCheckpointTable(
  client: DynamoDBClient,
  table: string,
): Promise<'created' | 'exists'> {
  if (await describeCheckpointTable(client, table)) return 'exists';
  try {
    await client.send(
      new CreateTableCommand({
        TableName: table,
        AttributeDefinitions: [{ AttributeName: 'pk', AttributeType: 'S' }],
        KeySchema: [{ AttributeName: 'pk', KeyType: 'HASH' }],
        BillingMode: 'PAY_PER_REQUEST',
      }),
    );
  } catch (error) {
    if (!(error instanceof ResourceInUseException))
      throw classify(error, { origin: 'checkpoint-store', what: `creating DynamoDB table ${table}` });
    await waitForTable(client, table);
    if (await describeCheckpointTable(client, table)) return 'exists';
    throw classify(error, { origin: 'checkpoint-store', what: `creating DynamoDB table ${table}` });
  }
  await waitForTable(client, table);
  return 'created';
}

/** True when the table exists (with the key slotlake needs: else a config error); false when it does not. */
async function describeCheckpointTable(client: DynamoDBClient, table: string): Promise<boolean> {
  try {
    const described = await client.send(new DescribeTableCommand({ TableName: table }));
    const key = described.Table?.KeySchema ?? [];
    if (key.length !== 1 || key[0]?.AttributeName !== 'pk' || key[0]?.KeyType !== 'HASH') {
      throw new SlotlakeError(
        `DynamoDB table ${table} exists but its key is not a single partition key "pk"`,
        {
          kind: 'config',
          hint: 'use a table whose partition key is the string attribute pk, or another SLOTLAKE_CHECKPOINT_TABLE',
        },
      );
    }
    return true;
  } catch (error) {
    if (error instanceof ResourceNotFoundException) return false;
    if (error instanceof SlotlakeError) throw error;
    throw classify(error, { origin: 'checkpoint-store', what: `describing DynamoDB table ${table}` });
  }
}

async function waitForTable(client: DynamoDBClient, table: string): Promise<void> {
  try {
    await waitUntilTableExists({ client, maxWaitTime: 120, minDelay: 1, maxDelay: 5 }, { TableName: table });
  } catch (error) {
    throw classify(error, { origin: 'checkpoint-store', what: `waiting for DynamoDB table ${table}` });
  }
}
