/** Reads the archive back from S3: every object under data/ and manifests/, records parsed. */
import { gunzipSync } from 'node:zlib';
import { GetObjectCommand, ListObjectsCommand, type S3Client } from '@aws-sdk/client-s3';
import { BUCKET } from './stack.js';

export interface ChangeRecord {
  op: 'c' | 'u' | 'd' | 't';
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
  };
  unchanged_toast?: string[];
}

export interface Lake {
  readonly dataKeys: string[];
  readonly manifestKeys: string[];
  readonly manifests: Array<{ objects: Array<{ key: string; rows: number }>; [key: string]: unknown }>;
  /** Every record with the key of the object that holds it. */
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
  for (const key of dataKeys) {
    const text = gunzipSync(await getBytes(s3, key, bucket)).toString('utf8');
    for (const line of text.split('\n')) {
      if (line === '') continue;
      records.push({ key, record: JSON.parse(line) as ChangeRecord, line });
    }
  }
  return { dataKeys, manifestKeys, manifests, records };
}
