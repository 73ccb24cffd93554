/**
 * Assertions shared by the integration tests: the archive against the database's own stream (every change,
 * every value), the slot against the checkpoint (each read from its own server).
 */
import assert from 'node:assert/strict';
import { after, before } from 'node:test';
import { DynamoDBClient, GetItemCommand, type AttributeValue } from '@aws-sdk/client-dynamodb';
import { S3Client } from '@aws-sdk/client-s3';
import { formatLsn, parseLsn, type Lsn } from '../../src/lsn.js';
import { runCli } from './cli.js';
import { readLake, type ChangeRecord, type Lake } from './lake.js';
import { referenceChanges, type ReferenceChange } from './reference.js';
import { JsonNumber, mismatch, parseRecordLine, type JsonWithNumbers } from './reference-values.js';
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

export interface ExactlyOnceOptions {
  /**
   * Every table the publication sends (exact `schema.table`), when it is more than `tables`: `seq` counts
   * the changes of all of them. Default: `tables`.
   */
  readonly published?: readonly string[];
  /** See ArchiveOptions.snapshotRecords. */
  readonly snapshotRecords?: boolean;
}

export interface ArchiveOptions {
  /** The bucket the archive is in (default: the test stack's BUCKET). */
  readonly bucket?: string;
  /**
   * Snapshot rows (`op: "r"`) are no change of the stream, so they are not in the reference: true leaves them
   * to the caller's own checks (they still count in the manifests' row counts); by default a snapshot row
   * is a record that is no change of the database (pipelines snapshot only when a test asks for it).
   */
  readonly snapshotRecords?: boolean;
}

const MAX_LISTED = 12;

function listed(items: readonly string[]): string {
  const shown = items
    .slice(0, MAX_LISTED)
    .map((item) => (item.length > 400 ? `${item.slice(0, 400)}…` : item));
  return `${items.length}:\n  ${shown.join('\n  ')}${items.length > MAX_LISTED ? '\n  …' : ''}`;
}

/**
 * Why an archived record differs from the change the database printed, or undefined when it does not:
 * op, table, `source.lsn`, `txId`, `commit_lsn` (the commit record's start), `seq`, `ts_us`/`ts_ms` (the
 * commit record's time), and every value of `after` and `before` (reference-values.ts) — with `values`
 * false (Parquet rows, see assertArchiveHolds) only whether `after` and `before` are there.
 */
function recordMismatch(
  record: Record<string, JsonWithNumbers>,
  reference: ReferenceChange,
  { values }: { values: boolean },
): string | undefined {
  const source = record.source as Record<string, JsonWithNumbers>;
  const problems: string[] = [];
  const same = (what: string, actual: JsonWithNumbers | undefined, expected: string | number | bigint) => {
    const text = actual instanceof JsonNumber ? actual.source : actual;
    if (text !== (typeof expected === 'string' ? expected : String(expected)))
      problems.push(`${what}: archived ${JSON.stringify(text)}, database ${String(expected)}`);
  };
  same('op', record.op, reference.op);
  same('source.schema', source.schema, reference.schemaName);
  same('source.table', source.table, reference.tableName);
  same('source.lsn', source.lsn, reference.lsn);
  same('source.txId', source.txId, reference.xid);
  same('source.commit_lsn', source.commit_lsn, reference.commitLsn);
  same('source.seq', source.seq, reference.seq);
  same('source.ts_us', source.ts_us, reference.commitTimeUs);
  same('source.ts_ms', source.ts_ms, reference.commitTimeUs / 1000n);

  const after = record.after as Record<string, JsonWithNumbers> | null;
  const before = record.before as Record<string, JsonWithNumbers> | null;
  if (!values) {
    if ((after === null) !== (reference.newTuple === undefined))
      problems.push(
        `after: archived ${after === null ? 'none' : 'a row'}, database ${reference.newTuple ? 'a row' : 'none'}`,
      );
    if ((before === null) !== (reference.oldTuple === undefined))
      problems.push(
        `before: archived ${before === null ? 'none' : 'a row'}, database ${reference.oldTuple ? 'an old row' : 'none'}`,
      );
    return problems.length === 0 ? undefined : problems.join('; ');
  }
  const unchangedToast = (record.unchanged_toast ?? []) as string[];
  if (reference.newTuple === undefined) {
    if (after !== null) problems.push(`after: archived ${JSON.stringify(after)}, database none`);
    if (record.unchanged_toast !== undefined) problems.push('unchanged_toast without a new row');
  } else if (after === null || typeof after !== 'object' || Array.isArray(after)) {
    problems.push(`after: archived ${JSON.stringify(after)}, database a row`);
  } else {
    const printed = new Set(reference.newTuple.map((column) => column.name));
    for (const name of Object.keys(after))
      if (!printed.has(name))
        problems.push(`after.${name}: archived, but no such column in the database row`);
    const notSent: string[] = [];
    for (const column of reference.newTuple) {
      const { value } = column;
      if (value.kind === 'unchanged-toast') {
        // Not sent: absent and listed, or (REPLICA IDENTITY FULL) taken from the old row.
        if (!(column.name in after)) {
          notSent.push(column.name);
          continue;
        }
        const old = reference.oldTuple?.find((candidate) => candidate.name === column.name);
        if (old?.value.kind !== 'text') {
          problems.push(`after.${column.name}: archived a value the database did not send`);
          continue;
        }
        const why = mismatch(old.valueType, old.value.text, after[column.name]);
        if (why) problems.push(`after.${column.name} (from the old row): ${why}`);
        continue;
      }
      if (!(column.name in after)) {
        problems.push(`after.${column.name}: absent from the archive`);
        continue;
      }
      const why = mismatch(column.valueType, value.kind === 'null' ? null : value.text, after[column.name]);
      if (why) problems.push(`after.${column.name}: ${why}`);
    }
    if (JSON.stringify([...unchangedToast].sort()) !== JSON.stringify(notSent.sort()))
      problems.push(
        `unchanged_toast: archived ${JSON.stringify(record.unchanged_toast)}, database ${JSON.stringify(notSent)}`,
      );
    if (record.unchanged_toast !== undefined && unchangedToast.length === 0)
      problems.push('unchanged_toast present but empty');
  }
  if (reference.oldTuple === undefined) {
    if (before !== null) problems.push(`before: archived ${JSON.stringify(before)}, database none`);
  } else if (before === null || typeof before !== 'object' || Array.isArray(before)) {
    problems.push(`before: archived ${JSON.stringify(before)}, database an old row`);
  } else {
    // test_decoding skips the null columns of an old tuple: whatever it did not print must be null here.
    const printed = new Map(reference.oldTuple.map((column) => [column.name, column]));
    for (const [name, value] of Object.entries(before))
      if (!printed.has(name) && value !== null)
        problems.push(`before.${name}: archived ${JSON.stringify(value)}, database null or not sent`);
    for (const column of reference.oldTuple) {
      if (!(column.name in before)) {
        problems.push(`before.${column.name}: absent from the archive`);
        continue;
      }
      const text = column.value.kind === 'text' ? column.value.text : null;
      if (column.value.kind === 'unchanged-toast') continue;
      const why = mismatch(column.valueType, text, before[column.name]);
      if (why) problems.push(`before.${column.name}: ${why}`);
    }
  }
  return problems.length === 0 ? undefined : problems.join('; ');
}

/**
 * Asserts the archive holds every change of the database's own stream (the test_decoding slot
 * `referenceSlot`, for `tables` given as exact `schema.table` names) exactly once and nothing else, each
 * with the database's values, position and commit (assertArchiveHolds); the archive is the pipeline's
 * (`pipeline.bucket`, `pipeline.prefix`).
 *
 * Why this oracle: it is per change, from another output plugin, printed by the server's own type output
 * functions and parsed here independently — a value corrupted in one record, a change written twice, a
 * `seq` or commit LSN off by one are each caught where they happen. Rebuilding the tables from the archive
 * and comparing with SELECT would check only the final state, where a wrong intermediate value or a
 * duplicate that a later change overwrote cancels out.
 */
export async function assertExactlyOnce(
  s3: S3Client,
  pipeline: Pipeline,
  referenceSlot: string,
  tables: string[],
  options: ExactlyOnceOptions = {},
): Promise<Lake> {
  const expected = await referenceChanges(pipeline, referenceSlot, new Set(tables), {
    published: new Set(options.published ?? tables),
  });
  return assertArchiveHolds(s3, pipeline.prefix, expected, {
    bucket: pipeline.bucket,
    ...(options.snapshotRecords === undefined ? {} : { snapshotRecords: options.snapshotRecords }),
  });
}

/** A Parquet row as the lake reads it (lake.ts), in the shape recordMismatch reads: numbers as their text. */
function parquetRecord(record: ChangeRecord): Record<string, JsonWithNumbers> {
  return JSON.parse(JSON.stringify(record), (_key, value: unknown) =>
    typeof value === 'number' ? new JsonNumber(String(value)) : value,
  ) as Record<string, JsonWithNumbers>;
}

/**
 * Asserts the archive under `prefix` holds exactly the `expected` changes — each once, nothing else, each
 * with the database's values, position and commit (recordMismatch; values for JSON Lines objects: a
 * Parquet object's values are DuckDB's rendering, compared with the database by schema.test.ts) — and that
 * every data object is listed in exactly one manifest, with its row count. For archives fed by more than one
 * source, pass the reference changes of each. `bucket`: a string, or options.
 */
export async function assertArchiveHolds(
  s3: S3Client,
  prefix: string,
  expected: readonly ReferenceChange[],
  bucketOrOptions: string | ArchiveOptions = {},
): Promise<Lake> {
  const options: ArchiveOptions =
    typeof bucketOrOptions === 'string' ? { bucket: bucketOrOptions } : bucketOrOptions;
  const lake = await readLake(s3, prefix, options.bucket);
  const reference = new Map<string, ReferenceChange>();
  for (const change of expected) {
    const id = `${change.commitLsn}#${change.seq}`;
    assert.ok(
      !reference.has(id),
      `two reference changes are ${id}: ${change.table} and ${reference.get(id)?.table}`,
    );
    reference.set(id, change);
  }
  const seen = new Map<string, number>();
  const unexpected: string[] = [];
  const differing: string[] = [];
  let streamed = 0;
  for (const { key, line, record: read } of lake.records) {
    const parquet = key.endsWith('.parquet');
    const record = parquet ? parquetRecord(read) : parseRecordLine(line);
    const source = record.source as Record<string, JsonWithNumbers>;
    const seq = source.seq instanceof JsonNumber ? source.seq.source : JSON.stringify(source.seq);
    const id = `${String(source.commit_lsn)}#${seq}`;
    const what = `${id} (${String(record.op)} ${String(source.schema)}.${String(source.table)}) in ${key}`;
    if (record.op === 'r') {
      if (!options.snapshotRecords) unexpected.push(`${what}: a snapshot row`);
      continue;
    }
    streamed++;
    seen.set(id, (seen.get(id) ?? 0) + 1);
    const change = reference.get(id);
    if (!change) {
      unexpected.push(what);
      continue;
    }
    const why = recordMismatch(record, change, { values: !parquet });
    if (why) differing.push(`${id} in ${key}: ${why}`);
  }
  const missing = expected
    .filter((change) => !seen.has(`${change.commitLsn}#${change.seq}`))
    .map(
      (change) =>
        `${change.commitLsn}#${change.seq} (${change.op} ${change.table} at ${change.lsn}, xid ${change.xid})`,
    );
  const twice = [...seen.entries()].filter(([, count]) => count > 1).map(([id, count]) => `${id} x${count}`);
  assert.ok(missing.length === 0, `changes missing from the archive: ${listed(missing)}`);
  assert.ok(twice.length === 0, `changes archived more than once: ${listed(twice)}`);
  assert.ok(unexpected.length === 0, `records that are no change of the database: ${listed(unexpected)}`);
  assert.ok(differing.length === 0, `records that differ from the database: ${listed(differing)}`);
  assert.equal(streamed, expected.length);
  // every data object is listed in exactly one manifest, with its row count
  const listedKeys = new Map<string, number>();
  for (const manifest of lake.manifests)
    for (const object of manifest.objects) {
      assert.ok(!listedKeys.has(object.key), `${object.key} is listed in two manifests`);
      listedKeys.set(object.key, object.rows);
    }
  assert.deepEqual([...listedKeys.keys()].sort(), lake.dataKeys);
  const rows = new Map<string, number>();
  for (const { key } of lake.records) rows.set(key, (rows.get(key) ?? 0) + 1);
  for (const key of lake.dataKeys) assert.equal(rows.get(key) ?? 0, listedKeys.get(key), `rows of ${key}`);
  return lake;
}

/**
 * The pipeline's checkpoint item as DynamoDB holds it (strongly consistent), or undefined: read directly,
 * from the endpoint, table and key the pipeline's runs use.
 */
export async function readCheckpointItem(
  pipeline: Pipeline,
): Promise<Record<string, AttributeValue> | undefined> {
  const env = pipeline.env;
  const client = new DynamoDBClient({
    endpoint: env.AWS_ENDPOINT_URL_DYNAMODB ?? env.AWS_ENDPOINT_URL,
    region: env.AWS_REGION ?? 'us-east-1',
    credentials: {
      accessKeyId: env.AWS_ACCESS_KEY_ID ?? 'x',
      secretAccessKey: env.AWS_SECRET_ACCESS_KEY ?? 'x',
    },
  });
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

/** The slot's confirmed_flush_lsn, read from pg_replication_slots. */
export async function slotConfirmedFlush(pipeline: Pipeline): Promise<string | undefined> {
  const result = await pipeline.sql(
    'SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = $1',
    [pipeline.env.SLOTLAKE_SLOT ?? 'slotlake'],
  );
  return (result.rows[0] as { lsn: string | null } | undefined)?.lsn ?? undefined;
}

/**
 * Asserts the slot's confirmed_flush_lsn (pg_replication_slots) equals the checkpoint in the DynamoDB item,
 * both read directly (not through `slotlake status`); returns the checkpoint.
 */
export async function assertSlotAtCheckpoint(pipeline: Pipeline): Promise<string> {
  const item = await readCheckpointItem(pipeline);
  const checkpoint = item?.lsn?.S;
  assert.ok(checkpoint, `a checkpoint exists: ${JSON.stringify(item)}`);
  assert.equal(await slotConfirmedFlush(pipeline), checkpoint, 'confirmed_flush_lsn equals the checkpoint');
  return checkpoint;
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
export async function assertSlotAtCheckpointDirect(pipeline: Pipeline): Promise<Lsn> {
  const item = await readCheckpointItem(pipeline);
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
