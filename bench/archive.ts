/**
 * Cheap checks of what a benchmark run archived: manifests summed (not the data read back), and a small
 * sample of records from the first data object to show what one change costs in the archive.
 */
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { GetObjectCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';

export function benchS3Client(awsEnv: Record<string, string>): S3Client {
  return new S3Client({
    region: awsEnv.AWS_REGION ?? 'us-east-1',
    endpoint: awsEnv.AWS_ENDPOINT_URL_S3,
    forcePathStyle: true,
    credentials: {
      accessKeyId: awsEnv.AWS_ACCESS_KEY_ID ?? 'S3RVER',
      secretAccessKey: awsEnv.AWS_SECRET_ACCESS_KEY ?? 'S3RVER',
    },
  });
}

async function listKeys(s3: S3Client, bucket: string, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const page = await s3.send(
      new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }),
    );
    for (const item of page.Contents ?? []) if (item.Key) keys.push(item.Key);
    token = page.NextContinuationToken;
  } while (token);
  return keys.sort();
}

export interface ManifestTotals {
  readonly manifests: number;
  readonly objects: number;
  /** Sum of `objects[].rows` over every manifest. */
  readonly rows: number;
  /** Sum of `objects[].bytes` (compressed). */
  readonly bytes: number;
  readonly dataKeys: number;
}

interface Manifest {
  readonly objects: readonly { readonly rows: number; readonly bytes: number }[];
}

export async function manifestTotals(s3: S3Client, bucket: string, prefix: string): Promise<ManifestTotals> {
  const keys = await listKeys(s3, bucket, `${prefix}manifests/`);
  let objects = 0;
  let rows = 0;
  let bytes = 0;
  for (const key of keys) {
    const response = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    const manifest = JSON.parse(await response.Body!.transformToString()) as Manifest;
    for (const object of manifest.objects) {
      objects++;
      rows += object.rows;
      bytes += object.bytes;
    }
  }
  const dataKeys = (await listKeys(s3, bucket, `${prefix}data/`)).length;
  return { manifests: keys.length, objects, rows, bytes, dataKeys };
}

export interface RecordSample {
  readonly records: number;
  /** Average length of a whole JSON line (envelope included), bytes. */
  readonly avgLineBytes: number;
  /** Average length of the `after` JSON object (the row data), bytes. */
  readonly avgRowDataBytes: number;
  readonly example: string;
}

/** Reads the first `count` records of the first data object under `prefix`, then stops downloading. */
export async function sampleRecords(
  s3: S3Client,
  bucket: string,
  prefix: string,
  count = 1000,
): Promise<RecordSample | undefined> {
  const [key] = await listKeys(s3, bucket, `${prefix}data/`);
  if (key === undefined) return undefined;
  const response = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  const body = response.Body as Readable;
  const gunzip = createGunzip();
  body.pipe(gunzip);
  const lines = createInterface({ input: gunzip, crlfDelay: Infinity });
  let records = 0;
  let lineBytes = 0;
  let rowBytes = 0;
  let example = '';
  for await (const line of lines) {
    if (line === '') continue;
    const record = JSON.parse(line) as { after: unknown };
    if (records === 0) example = line;
    records++;
    lineBytes += Buffer.byteLength(line) + 1;
    rowBytes += Buffer.byteLength(JSON.stringify(record.after));
    if (records >= count) break;
  }
  lines.close();
  body.unpipe(gunzip);
  gunzip.destroy();
  body.destroy();
  if (records === 0) return undefined;
  return { records, avgLineBytes: lineBytes / records, avgRowDataBytes: rowBytes / records, example };
}
