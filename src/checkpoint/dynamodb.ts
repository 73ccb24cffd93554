/**
 * The pipeline's state in DynamoDB: one item per pipeline, partition key `pk` (string).
 *
 * Attributes: `lsn` (X/X) and `lsnKey` (16-hex) — the checkpoint; `partialCommitLsn` + `partialNextSeq` when a
 * transaction was cut by a deadline; `version` (+1 per checkpoint write) and `writeId` (which write stored it);
 * `leaseOwner`, `leaseExpiresAt` (epoch ms) and `fence` (+1 per acquisition) — the lease; `intentKeys` (string
 * set) — the S3 keys of the batch in flight; `pendingManifestKey` + `pendingManifest` (gzip JSON, binary) — the
 * last committed batch's manifest; `updatedAt` and `note_*` for operators. Every write is an
 * UpdateItem with a condition on the lease (and, for the checkpoint, on `version`), so a stale or fenced-off
 * run can change nothing. Reads are strongly consistent. A checkpoint write whose response was lost is
 * recognised on retry by its `writeId`.
 */
import { randomUUID } from 'node:crypto';
import { gunzipSync, gzipSync } from 'node:zlib';
import {
  ConditionalCheckFailedException,
  CreateTableCommand,
  DescribeTableCommand,
  DynamoDBClient,
  GetItemCommand,
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
} from './store.js';

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

function leaseValues(lease: Lease): Item {
  return { ':owner': { S: lease.owner }, ':fence': { N: String(lease.fence) } };
}

export class DynamoCheckpointStore implements CheckpointStore {
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
      throw classify(error, {
        origin: 'checkpoint-store',
        what: `reading the checkpoint from DynamoDB table ${this.table}`,
      });
    }
  }

  async read(): Promise<Checkpoint | null> {
    const item = await this.getItem();
    return item ? checkpointOf(item) : null;
  }

  async acquire(owner: string, durationMs: number, nowMs: number): Promise<Acquisition> {
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
            ':expires': { N: String(Math.round(nowMs + durationMs)) },
            ':now': { N: String(Math.round(nowMs)) },
            ':zero': { N: '0' },
            ':one': { N: '1' },
          },
          ReturnValues: 'ALL_NEW',
        }),
      );
      const item = result.Attributes ?? {};
      return {
        acquired: true,
        lease: {
          owner,
          fence: Number(item.fence?.N ?? '0'),
          expiresAtMs: Number(item.leaseExpiresAt?.N ?? '0'),
        },
        checkpoint: checkpointOf(item),
        intentKeys: item.intentKeys?.SS ?? [],
        pendingManifest: pendingManifestOf(item),
      };
    } catch (error) {
      if (error instanceof ConditionalCheckFailedException) {
        const item = await this.getItem();
        return {
          acquired: false,
          holder: item?.leaseOwner?.S,
          expiresAtMs: item?.leaseExpiresAt?.N === undefined ? undefined : Number(item.leaseExpiresAt.N),
        };
      }
      throw classify(error, {
        origin: 'checkpoint-store',
        what: `acquiring the lease in DynamoDB table ${this.table}`,
      });
    }
  }

  private async updateUnderLease(lease: Lease, update: string, values: Item, what: string): Promise<Item> {
    try {
      const result = await this.client.send(
        new UpdateItemCommand({
          TableName: this.table,
          Key: this.key,
          UpdateExpression: update,
          ConditionExpression: HOLDS_LEASE,
          ExpressionAttributeValues: { ...leaseValues(lease), ...values },
          ReturnValues: 'ALL_NEW',
        }),
      );
      return result.Attributes ?? {};
    } catch (error) {
      if (error instanceof ConditionalCheckFailedException) throw leaseLostError(this.pipeline, error);
      throw classify(error, { origin: 'checkpoint-store', what: `${what} in DynamoDB table ${this.table}` });
    }
  }

  async renew(lease: Lease, durationMs: number, nowMs: number): Promise<Lease> {
    const expiresAtMs = Math.round(nowMs + durationMs);
    await this.updateUnderLease(
      lease,
      'SET leaseExpiresAt = :expires',
      { ':expires': { N: String(expiresAtMs) } },
      'renewing the lease',
    );
    return { ...lease, expiresAtMs };
  }

  async release(lease: Lease): Promise<void> {
    await this.updateUnderLease(lease, 'REMOVE leaseOwner, leaseExpiresAt', {}, 'releasing the lease');
  }

  async recordIntent(lease: Lease, keys: readonly string[]): Promise<void> {
    if (keys.length === 0) return;
    await this.updateUnderLease(
      lease,
      'ADD intentKeys :keys',
      { ':keys': { SS: [...new Set(keys)] } },
      'recording the intent',
    );
  }

  async clearIntent(lease: Lease): Promise<void> {
    await this.updateUnderLease(lease, 'REMOVE intentKeys', {}, 'clearing the intent');
  }

  async write(update: CheckpointUpdate, expectedVersion: number | null, lease: Lease): Promise<Checkpoint> {
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
    };
    const sets = [
      'lsn = :lsn',
      'lsnKey = :lsnKey',
      '#version = :version',
      'updatedAt = :updatedAt',
      'writeId = :writeId',
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
      sets.push('pendingManifestKey = :manifestKey', 'pendingManifest = :manifest');
      values[':manifestKey'] = { S: update.manifest.key };
      values[':manifest'] = { B: gzipSync(update.manifest.body) };
    } else {
      removes.push('pendingManifestKey', 'pendingManifest');
    }
    for (const [name, value] of Object.entries(update.note ?? {})) {
      const placeholder = `:note_${name.replace(/[^A-Za-z0-9_]/g, '_')}`;
      sets.push(`note_${name.replace(/[^A-Za-z0-9_]/g, '_')} = ${placeholder}`);
      values[placeholder] = typeof value === 'number' ? { N: String(value) } : { S: value };
    }
    let condition = HOLDS_LEASE;
    if (expectedVersion === null) condition += ' AND attribute_not_exists(#version)';
    else {
      condition += ' AND #version = :expected';
      values[':expected'] = { N: String(expectedVersion) };
    }
    const written: Checkpoint = { lsn: update.lsn, partial: update.partial, version, updatedAt };
    try {
      await this.client.send(
        new UpdateItemCommand({
          TableName: this.table,
          Key: this.key,
          UpdateExpression: `SET ${sets.join(', ')} REMOVE ${removes.join(', ')}`,
          ConditionExpression: condition,
          ExpressionAttributeNames: names,
          ExpressionAttributeValues: values,
        }),
      );
      return written;
    } catch (error) {
      if (error instanceof ConditionalCheckFailedException) {
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
        throw new SlotlakeError(
          `the checkpoint of pipeline ${this.pipeline} changed under this run (expected version ${expectedVersion})`,
          {
            kind: 'checkpoint-conflict',
            hint: 'another run is working on this pipeline; nothing was acknowledged',
            cause: error,
          },
        );
      }
      this.pendingWriteIds.add(writeId);
      throw classify(error, {
        origin: 'checkpoint-store',
        what: `writing the checkpoint to DynamoDB table ${this.table}`,
      });
    }
  }

  /** Write ids of attempts whose outcome is unknown (the request may have taken effect). */
  private readonly pendingWriteIds = new Set<string>();
}

function pendingManifestOf(item: Item): PendingManifest | undefined {
  const key = item.pendingManifestKey?.S;
  const body = item.pendingManifest?.B;
  if (!key || !body) return undefined;
  return { key, body: gunzipSync(body).toString('utf8') };
}

function checkpointOf(item: Item): Checkpoint | null {
  const text = item.lsn?.S;
  if (!text) return null;
  const partialLsn = item.partialCommitLsn?.S;
  return {
    lsn: parseLsn(text),
    partial: partialLsn
      ? { commitLsn: parseLsn(partialLsn), nextSeq: Number(item.partialNextSeq?.N ?? '0') }
      : undefined,
    version: Number(item.version?.N ?? '0'),
    updatedAt: item.updatedAt?.S ?? '',
  };
}

/** `setup`: creates the table (on-demand billing) when missing, else checks its key schema. */
export async function ensureCheckpointTable(
  client: DynamoDBClient,
  table: string,
): Promise<'created' | 'exists'> {
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
    return 'exists';
  } catch (error) {
    if (!(error instanceof ResourceNotFoundException))
      throw classify(error, { origin: 'checkpoint-store', what: `describing DynamoDB table ${table}` });
  }
  try {
    await client.send(
      new CreateTableCommand({
        TableName: table,
        AttributeDefinitions: [{ AttributeName: 'pk', AttributeType: 'S' }],
        KeySchema: [{ AttributeName: 'pk', KeyType: 'HASH' }],
        BillingMode: 'PAY_PER_REQUEST',
      }),
    );
    await waitUntilTableExists({ client, maxWaitTime: 120, minDelay: 1, maxDelay: 5 }, { TableName: table });
  } catch (error) {
    throw classify(error, { origin: 'checkpoint-store', what: `creating DynamoDB table ${table}` });
  }
  return 'created';
}
