/**
 * The pipeline's DynamoDB item read directly (not through slotlake's store), to check what a run stored:
 * attribute by attribute, and its size as DynamoDB counts it (the 400 KB item limit).
 */
import { DynamoDBClient, GetItemCommand, type AttributeValue } from '@aws-sdk/client-dynamodb';
import { CHECKPOINT_TABLE } from './stack.js';

export type Item = Record<string, AttributeValue>;

export function testDynamoClient(endpoint: string): DynamoDBClient {
  return new DynamoDBClient({
    endpoint,
    region: 'us-east-1',
    credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
  });
}

export async function readCheckpointItem(
  client: DynamoDBClient,
  pipeline: string,
): Promise<Item | undefined> {
  const result = await client.send(
    new GetItemCommand({ TableName: CHECKPOINT_TABLE, Key: { pk: { S: pipeline } }, ConsistentRead: true }),
  );
  return result.Item;
}

/** The checkpoint's own attributes (not the lease's or the store speed's, which every run changes). */
export function checkpointAttributes(item: Item | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const name of [
    'lsn',
    'lsnKey',
    'version',
    'writeId',
    'partialCommitLsn',
    'partialNextSeq',
    'sourceSystemId',
    'sourceTimeline',
    'sourceDatabase',
    'sourceSlot',
    'intentKeys',
    'pendingManifestKey',
  ])
    out[name] = item?.[name];
  return out;
}

function numberSize(text: string): number {
  // DynamoDB: 1 byte per two significant digits, plus 1
  const digits = text.replace(/^-/, '').replace('.', '').replace(/^0+/, '').replace(/0+$/, '');
  return Math.ceil(Math.max(1, digits.length) / 2) + 1;
}

function valueSize(value: AttributeValue): number {
  if (value.S !== undefined) return Buffer.byteLength(value.S);
  if (value.N !== undefined) return numberSize(value.N);
  if (value.B !== undefined) return value.B.byteLength;
  if (value.BOOL !== undefined || value.NULL !== undefined) return 1;
  if (value.SS !== undefined) return value.SS.reduce((sum, s) => sum + Buffer.byteLength(s), 0);
  if (value.NS !== undefined) return value.NS.reduce((sum, n) => sum + numberSize(n), 0);
  if (value.BS !== undefined) return value.BS.reduce((sum, b) => sum + b.byteLength, 0);
  if (value.L !== undefined) return 3 + value.L.reduce((sum, v) => sum + 1 + valueSize(v), 0);
  if (value.M !== undefined)
    return (
      3 +
      Object.entries(value.M).reduce((sum, [name, v]) => sum + 1 + Buffer.byteLength(name) + valueSize(v), 0)
    );
  return 0;
}

/** An item's size as DynamoDB counts it: every attribute name's UTF-8 length plus its value's size. */
export function itemSizeBytes(item: Item): number {
  return Object.entries(item).reduce(
    (sum, [name, value]) => sum + Buffer.byteLength(name) + valueSize(value),
    0,
  );
}

/** DynamoDB's item size limit. */
export const MAX_ITEM_BYTES = 400 * 1024;
