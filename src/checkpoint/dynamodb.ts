/**
 * The checkpoint in DynamoDB: one item per pipeline, partition key `pk` (string).
 *
 * Attributes: `lsn` (X/X text) and `lsnKey` (16-hex, sortable), `partialCommitLsn` + `partialNextSeq` when
 * a transaction was cut by a deadline, `version` (number, +1 per write), `updatedAt`, and operator notes.
 * Every write is a PutItem conditional on `version` (or on the item not existing), so a run whose view of
 * the checkpoint is stale cannot overwrite a newer one. Reads are strongly consistent.
 */
import {
  ConditionalCheckFailedException,
  CreateTableCommand,
  DescribeTableCommand,
  DynamoDBClient,
  GetItemCommand,
  PutItemCommand,
  ResourceNotFoundException,
  waitUntilTableExists,
  type AttributeValue,
} from '@aws-sdk/client-dynamodb';
import { classify, SlotlakeError } from '../errors.js';
import { formatLsn, lsnKey, parseLsn } from '../lsn.js';
import type { Checkpoint, CheckpointStore, CheckpointUpdate } from './store.js';

export function createDynamoClient(): DynamoDBClient {
  const endpoint = process.env.AWS_ENDPOINT_URL_DYNAMODB ?? process.env.AWS_ENDPOINT_URL;
  return new DynamoDBClient({
    ...(endpoint ? { endpoint } : {}),
    maxAttempts: 1, // retries go through the project's own classify()-driven policy
  });
}

export class DynamoCheckpointStore implements CheckpointStore {
  constructor(
    private readonly client: DynamoDBClient,
    private readonly table: string,
    private readonly pipeline: string,
  ) {}

  async read(): Promise<Checkpoint | null> {
    try {
      const result = await this.client.send(
        new GetItemCommand({
          TableName: this.table,
          Key: { pk: { S: this.pipeline } },
          ConsistentRead: true,
        }),
      );
      return result.Item ? fromItem(result.Item) : null;
    } catch (error) {
      throw classify(error, `reading the checkpoint from DynamoDB table ${this.table}`);
    }
  }

  async write(update: CheckpointUpdate, expectedVersion: number | null): Promise<Checkpoint> {
    const version = (expectedVersion ?? 0) + 1;
    const updatedAt = new Date().toISOString();
    const item: Record<string, AttributeValue> = {
      pk: { S: this.pipeline },
      lsn: { S: formatLsn(update.lsn) },
      lsnKey: { S: lsnKey(update.lsn) },
      version: { N: String(version) },
      updatedAt: { S: updatedAt },
    };
    if (update.partial) {
      item.partialCommitLsn = { S: formatLsn(update.partial.commitLsn) };
      item.partialNextSeq = { N: String(update.partial.nextSeq) };
    }
    for (const [name, value] of Object.entries(update.note ?? {})) {
      item[`note_${name}`] = typeof value === 'number' ? { N: String(value) } : { S: value };
    }
    try {
      await this.client.send(
        new PutItemCommand({
          TableName: this.table,
          Item: item,
          ...(expectedVersion === null
            ? { ConditionExpression: 'attribute_not_exists(pk)' }
            : {
                ConditionExpression: '#version = :expected',
                ExpressionAttributeNames: { '#version': 'version' },
                ExpressionAttributeValues: { ':expected': { N: String(expectedVersion) } },
              }),
        }),
      );
    } catch (error) {
      if (error instanceof ConditionalCheckFailedException) {
        throw new SlotlakeError(
          `the checkpoint of pipeline ${this.pipeline} changed under this run (expected version ${expectedVersion})`,
          {
            kind: 'checkpoint-conflict',
            hint: 'another run is working on this pipeline; nothing was acknowledged',
            cause: error,
          },
        );
      }
      throw classify(error, `writing the checkpoint to DynamoDB table ${this.table}`);
    }
    return { lsn: update.lsn, partial: update.partial, version, updatedAt };
  }
}

function fromItem(item: Record<string, AttributeValue>): Checkpoint {
  const text = item.lsn?.S;
  if (!text) throw new SlotlakeError('the checkpoint item has no lsn attribute', { kind: 'internal' });
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
      throw classify(error, `describing DynamoDB table ${table}`);
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
    throw classify(error, `creating DynamoDB table ${table}`);
  }
  return 'created';
}
