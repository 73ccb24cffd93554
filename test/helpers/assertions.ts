/** Assertions shared by the integration tests: the archive against the database's own stream, slot vs checkpoint. */
import assert from 'node:assert/strict';
import { after, before } from 'node:test';
import { DynamoDBClient, GetItemCommand, type AttributeValue } from '@aws-sdk/client-dynamodb';
import { S3Client } from '@aws-sdk/client-s3';
import { formatLsn, parseLsn, type Lsn } from '../../src/lsn.js';
import { runCli } from './cli.js';
import { readLake, type Lake } from './lake.js';
import { referenceChanges, type ReferenceChange } from './reference.js';
import type { LocalPostgresOptions } from '../../src/devstack/postgres.js';
import { startTestStack, type Pipeline, type TestStack, type TestStackOptions } from './stack.js';

/** An S3 client for reading the local archive back. */
export function testS3Client(stack: TestStack): S3Client {
  return new S3Client({
    endpoint: stack.s3.endpoint,
    forcePathStyle: true,
    region: 'us-east-1',
    credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
}

/**
 * Registers before/after hooks that start one local stack for the test file (and an S3 client to read the
 * archive back) and stop it; the returned holder is filled once `before` ran.
 */
export function useTestStack(
  postgres?: LocalPostgresOptions,
  options?: TestStackOptions,
): {
  readonly stack: TestStack;
  readonly s3: S3Client;
} {
  const holder = {} as { stack: TestStack; s3: S3Client };
  before(async () => {
    holder.stack = await startTestStack(postgres, options);
    holder.s3 = testS3Client(holder.stack);
  });
  after(async () => {
    holder.s3?.destroy();
    await holder.stack?.stop();
  });
  return holder;
}

export interface StatusReport {
  checkpoint: string | null;
  partial: { commitLsn: string; nextSeq: number } | null;
  slot: {
    confirmedFlushLsn: string;
    lagBytes: number;
    active: boolean;
    walStatus: string;
    retainedWalBytes: number;
    currentWalLsn: string;
  };
}

export async function setup(pipeline: Pipeline): Promise<void> {
  const result = await runCli(['setup'], pipeline.env);
  assert.equal(result.code, 0, result.stderr);
}

export async function status(pipeline: Pipeline): Promise<StatusReport> {
  const result = await runCli(['status'], pipeline.env);
  assert.equal(result.code, 0, result.stderr);
  return JSON.parse(result.stdout.trim()) as never;
}

/** Asserts the archive holds every reference change exactly once and nothing else. */
export async function assertExactlyOnce(
  s3: S3Client,
  pipeline: Pipeline,
  referenceSlot: string,
  tables: string[],
): Promise<Lake> {
  const expected = await referenceChanges(pipeline, referenceSlot, new Set(tables));
  return assertArchiveHolds(s3, pipeline.prefix, expected, pipeline.bucket);
}

/**
 * Asserts the archive under `prefix` holds exactly the `expected` changes (each once, nothing else), that
 * `(commit_lsn, seq)` is unique, and that every data object is listed in exactly one manifest with its row
 * count. For archives fed by more than one source, pass the reference changes of each.
 */
export async function assertArchiveHolds(
  s3: S3Client,
  prefix: string,
  expected: readonly ReferenceChange[],
  bucket?: string,
): Promise<Lake> {
  const lake = await readLake(s3, prefix, bucket);
  const seen = new Map<string, number>();
  for (const { record } of lake.records) {
    const id = `${record.source.lsn}|${record.source.txId}|${record.source.schema}.${record.source.table}|${record.op}`;
    seen.set(id, (seen.get(id) ?? 0) + 1);
  }
  const missing: string[] = [];
  for (const change of expected) {
    const id = `${change.lsn}|${change.xid}|${change.table}|${change.op}`;
    const count = seen.get(id) ?? 0;
    if (count === 0) missing.push(id);
    else seen.set(id, count - 1);
  }
  const extra = [...seen.entries()].filter(([, count]) => count > 0).map(([id, count]) => `${id} x${count}`);
  assert.deepEqual(missing, [], 'changes missing from the archive');
  assert.deepEqual(extra, [], 'changes archived more than once or not in the database stream');
  assert.equal(lake.records.length, expected.length);
  // (commit_lsn, seq) identifies a change
  const ids = new Set(lake.records.map(({ record }) => `${record.source.commit_lsn}#${record.source.seq}`));
  assert.equal(ids.size, lake.records.length, '(commit_lsn, seq) must be unique');
  // every data object is listed in exactly one manifest, with its row count
  const listed = new Map<string, number>();
  for (const manifest of lake.manifests)
    for (const object of manifest.objects) {
      assert.ok(!listed.has(object.key), `${object.key} is listed in one manifest only`);
      listed.set(object.key, object.rows);
    }
  assert.deepEqual([...listed.keys()].sort(), lake.dataKeys);
  const rowsByKey = new Map<string, number>();
  for (const { key } of lake.records) rowsByKey.set(key, (rowsByKey.get(key) ?? 0) + 1);
  for (const key of lake.dataKeys) assert.equal(rowsByKey.get(key) ?? 0, listed.get(key), `rows of ${key}`);
  return lake;
}

export async function assertSlotAtCheckpoint(pipeline: Pipeline): Promise<string> {
  const report = await status(pipeline);
  assert.ok(report.checkpoint, 'a checkpoint exists');
  assert.equal(report.slot.confirmedFlushLsn, report.checkpoint, 'confirmed_flush_lsn equals the checkpoint');
  return report.checkpoint;
}

/** A DynamoDB client for reading the checkpoint item directly (not through slotlake). */
export function testDynamoClient(stack: TestStack): DynamoDBClient {
  return new DynamoDBClient({
    endpoint: stack.dynamo.endpoint,
    region: 'us-east-1',
    credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
  });
}

/** The pipeline's checkpoint item as DynamoDB holds it (strongly consistent), or undefined. */
export async function readCheckpointItem(
  stack: TestStack,
  pipeline: Pipeline,
): Promise<Record<string, AttributeValue> | undefined> {
  const client = testDynamoClient(stack);
  try {
    const result = await client.send(
      new GetItemCommand({
        TableName: pipeline.checkpointTable,
        Key: { pk: { S: pipeline.checkpointKey } },
        ConsistentRead: true,
      }),
    );
    return result.Item;
  } finally {
    client.destroy();
  }
}

/** The slot as pg_replication_slots shows it, read over a normal connection. */
export async function readSlotDirect(
  pipeline: Pipeline,
): Promise<{ confirmedFlushLsn: Lsn | null; active: boolean }> {
  const result = await pipeline.sql(
    `SELECT confirmed_flush_lsn::text AS lsn, active FROM pg_replication_slots WHERE slot_name = $1`,
    [pipeline.env.SLOTLAKE_SLOT],
  );
  const row = result.rows[0] as { lsn: string | null; active: boolean } | undefined;
  assert.ok(row, `slot ${pipeline.env.SLOTLAKE_SLOT} exists`);
  return { confirmedFlushLsn: row.lsn === null ? null : parseLsn(row.lsn), active: row.active };
}

/**
 * The slot's confirmed_flush_lsn equals the checkpoint, both read directly (pg_replication_slots and the
 * DynamoDB item), with the intent empty. Returns the checkpoint.
 */
export async function assertSlotAtCheckpointDirect(stack: TestStack, pipeline: Pipeline): Promise<Lsn> {
  const item = await readCheckpointItem(stack, pipeline);
  const text = item?.lsn?.S;
  assert.ok(text, 'a checkpoint exists in DynamoDB');
  const slot = await readSlotDirect(pipeline);
  assert.equal(
    slot.confirmedFlushLsn === null ? null : formatLsn(slot.confirmedFlushLsn),
    text,
    'confirmed_flush_lsn equals the checkpoint',
  );
  assert.equal(item?.intentKeys, undefined, 'no intent left after a clean run');
  return parseLsn(text);
}
