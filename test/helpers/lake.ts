/**
 * Reads the archive back from S3: every object under data/ and manifests/, records parsed. JSON Lines records
 * are the lines themselves; a Parquet object's rows (read with DuckDB) become records of the same shape —
 * `source` from the metadata columns and the manifest's true names, `before` from `_before`, `after` the
 * table columns as DuckDB renders them in JSON (not the contract §4 values: compare those through the lines).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { DuckDBInstance } from '@duckdb/node-api';
import { GetObjectCommand, ListObjectsCommand, type S3Client } from '@aws-sdk/client-s3';
import { BUCKET } from './stack.js';

export interface ChangeRecord {
  op: 'c' | 'u' | 'd' | 't' | 'r';
  before: Record<string, unknown> | null;
  after: Record<string, unknown> | null;
  source: {
    db: string;
    schema: string;
    table: string;
    lsn: string;
    commit_lsn: string;
    seq: number;
    txId: number;
    ts_ms: number;
    ts_us: number;
    snapshot?: boolean;
  };
  unchanged_toast?: string[];
}

export interface Lake {
  readonly dataKeys: string[];
  readonly manifestKeys: string[];
  readonly manifests: Array<{
    objects: Array<{ key: string; rows: number; schema: string; table: string }>;
    [key: string]: unknown;
  }>;
  /** Every record with the key of the object that holds it (`line`: the JSON line, or the row as JSON for Parquet). */
  readonly records: Array<{ key: string; record: ChangeRecord; line: string }>;
}

export async function listKeys(s3: S3Client, prefix: string, bucket = BUCKET): Promise<string[]> {
  // ListObjects (v1) with markers: s3rver's v2 continuation tokens use DES, which Node 22's OpenSSL refuses.
  const keys: string[] = [];
  let marker: string | undefined;
  for (;;) {
    const page = await s3.send(new ListObjectsCommand({ Bucket: bucket, Prefix: prefix, Marker: marker }));
    for (const item of page.Contents ?? []) if (item.Key) keys.push(item.Key);
    if (!page.IsTruncated || keys.length === 0) break;
    marker = keys[keys.length - 1];
  }
  return keys.sort();
}

export async function getBytes(s3: S3Client, key: string, bucket = BUCKET): Promise<Uint8Array> {
  try {
    const object = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    return await object.Body!.transformToByteArray();
  } catch (error) {
    throw new Error(`reading s3://${bucket}/${key}: ${(error as Error).message}`, { cause: error });
  }
}

export async function readLake(s3: S3Client, prefix: string, bucket = BUCKET): Promise<Lake> {
  const dataKeys = await listKeys(s3, `${prefix}data/`, bucket);
  const manifestKeys = await listKeys(s3, `${prefix}manifests/`, bucket);
  const manifests = [];
  for (const key of manifestKeys)
    manifests.push(JSON.parse(Buffer.from(await getBytes(s3, key, bucket)).toString('utf8')));
  const records: Lake['records'] = [];
  const parquetKeys = dataKeys.filter((key) => key.endsWith('.parquet'));
  if (parquetKeys.length > 0) records.push(...(await readParquetRecords(s3, parquetKeys, manifests)));
  for (const key of dataKeys) {
    if (key.endsWith('.parquet')) continue;
    const text = gunzipSync(await getBytes(s3, key, bucket)).toString('utf8');
    for (const line of text.split('\n')) {
      if (line === '') continue;
      records.push({ key, record: JSON.parse(line) as ChangeRecord, line });
    }
  }
  return { dataKeys, manifestKeys, manifests, records };
}

/** `X/X` of an LSN held as a number. */
export function lsnText(value: bigint): string {
  return `${(value >> 32n).toString(16).toUpperCase()}/${(value & 0xffffffffn).toString(16).toUpperCase()}`;
}

const PARQUET_METADATA = new Set([
  '_op',
  '_lsn',
  '_commit_lsn',
  '_seq',
  '_tx_id',
  '_commit_ts',
  '_before',
  '_unchanged_toast',
  '_unrepresentable',
]);

async function readParquetRecords(
  s3: S3Client,
  keys: readonly string[],
  manifests: Lake['manifests'],
): Promise<Lake['records']> {
  const tableOf = new Map<string, { schema: string; table: string }>();
  for (const manifest of manifests) for (const object of manifest.objects) tableOf.set(object.key, object);
  const dir = mkdtempSync(join(tmpdir(), 'slotlake-lake-'));
  const instance = await DuckDBInstance.create(':memory:');
  const connection = await instance.connect();
  const records: Lake['records'] = [];
  try {
    for (const [index, key] of keys.entries()) {
      const path = join(dir, `${index}.parquet`);
      writeFileSync(path, await getBytes(s3, key));
      const reader = await connection.runAndReadAll(
        `SELECT *, epoch_us(_commit_ts) AS __ts_us FROM read_parquet('${path}') ORDER BY _commit_lsn, _seq`,
      );
      const names = tableOf.get(key) ?? { schema: '?', table: '?' };
      for (const row of reader.getRowObjectsJson()) {
        const values: Record<string, unknown> = {};
        for (const [name, value] of Object.entries(row))
          if (!PARQUET_METADATA.has(name) && name !== '__ts_us') values[name] = value;
        const op = row._op as ChangeRecord['op'];
        const tsUs = Number(row.__ts_us);
        const toast = row._unchanged_toast as string[] | null;
        const record: ChangeRecord = {
          op,
          before:
            row._before === null ? null : (JSON.parse(row._before as string) as Record<string, unknown>),
          after: op === 'd' || op === 't' ? null : values,
          source: {
            db: '',
            schema: names.schema,
            table: names.table,
            lsn: lsnText(BigInt(row._lsn as string)),
            commit_lsn: lsnText(BigInt(row._commit_lsn as string)),
            seq: Number(row._seq),
            txId: Number(row._tx_id),
            ts_ms: Math.floor(tsUs / 1000),
            ts_us: tsUs,
          },
          ...(toast ? { unchanged_toast: toast } : {}),
        };
        records.push({ key, record, line: JSON.stringify(row) });
      }
    }
  } finally {
    connection.closeSync();
    instance.closeSync();
    rmSync(dir, { recursive: true, force: true });
  }
  return records;
}
