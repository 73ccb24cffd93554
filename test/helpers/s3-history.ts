/**
 * The history of the archive, from the store's side: every S3 request that runs sent through the HTTP fault
 * proxies (test/helpers/http-fault-proxy.ts), tagged with the run it came from, and what it did to which key.
 * From it, `assertCommittedObjectsUntouched` checks what the final state of the bucket cannot show: that no
 * object of a committed batch was ever deleted or overwritten with other bytes once its batch committed.
 *
 * When a batch committed is read off the same history: its manifest is staged (PUT under `staging/`, after
 * every object of the batch is in S3), then the checkpoint is written, then the manifest is copied into
 * `manifests/`. The last effective staging PUT whose bytes equal the final manifest's therefore precedes the
 * commit, and anything done to the batch's objects after it happened after (or during) the commit. (A manifest
 * written in place without staging — as earlier versions did — bounds the commit by its own first write.)
 * Events are compared by the proxies' process-wide event order, which is the order in which the store saw
 * them.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import type { S3Client } from '@aws-sdk/client-s3';
import { s3Key, type HttpFaultProxy, type ProxyEvent, type RequestLog } from './http-fault-proxy.js';
import { getBytes, listKeys } from './lake.js';
import type { Pipeline } from './stack.js';

export interface TaggedRequest extends RequestLog {
  /** Which run (process) sent it. */
  readonly run: string;
}

/** The requests a proxy saw so far, tagged with the run that used it. */
export function tagged(run: string, proxy: HttpFaultProxy): TaggedRequest[] {
  return proxy.requests().map((request) => ({ ...request, run }));
}

export type StoreOperation =
  | { kind: 'put'; key: string; md5: string | undefined }
  | { kind: 'copy'; key: string; from: string }
  | { kind: 'delete'; key: string }
  | { kind: 'multipart'; key: string }
  | { kind: 'read'; key: string | undefined };

function hasParam(query: string, name: string): boolean {
  return new URLSearchParams(query).has(name);
}

/** What a request does in `bucket` (undefined for another bucket). */
export function operationOf(request: RequestLog, bucket: string): StoreOperation | undefined {
  if (!request.path.startsWith(`/${bucket}/`) && request.path !== `/${bucket}`) return undefined;
  const key = s3Key(request);
  if (key === undefined) return { kind: 'read', key: undefined };
  if (hasParam(request.query, 'uploadId') || hasParam(request.query, 'uploads')) {
    return request.method === 'DELETE' ? { kind: 'read', key } : { kind: 'multipart', key };
  }
  if (request.method === 'PUT') {
    if (request.copySource !== undefined) {
      const from = request.copySource.replace(/^\//, '');
      assert.ok(from.startsWith(`${bucket}/`), `copy from another bucket: ${request.copySource}`);
      return { kind: 'copy', key, from: from.slice(bucket.length + 1) };
    }
    return { kind: 'put', key, md5: request.bodyMd5 };
  }
  if (request.method === 'DELETE') return { kind: 'delete', key };
  return { kind: 'read', key };
}

/**
 * When a request took effect in the store, if it may have: answered with 2xx by the target, or forwarded
 * with its whole body and never answered (the store may have applied it). Undefined when it surely did not.
 */
export function tookEffect(request: RequestLog): ProxyEvent | undefined {
  if (request.answered) {
    return request.status !== undefined && request.status >= 200 && request.status < 300
      ? request.answered
      : undefined;
  }
  if (request.forwarded && (request.method !== 'PUT' || request.bodyMd5 !== undefined))
    return request.forwarded;
  return undefined;
}

const md5 = (bytes: Uint8Array) => createHash('md5').update(bytes).digest('hex');

export interface HistoryReport {
  readonly manifests: number;
  readonly objects: number;
  /** DELETEs of data keys that took effect (of uncommitted batches, at recovery). */
  readonly dataDeletes: number;
  /** PUTs of data keys that took effect. */
  readonly dataPuts: number;
}

/**
 * For every manifest in the bucket, and every object it names:
 * - no DELETE of the object took effect after its batch's manifest was staged (a committed object is never
 *   deleted — whoever sent it);
 * - no PUT of other bytes to its key took effect after that (a committed object is never overwritten);
 * - the object's final bytes are those of the last PUT of its key before that (what the batch uploaded).
 * Also: the archive was written by plain PUTs (the check does not follow multipart uploads).
 */
export async function assertCommittedObjectsUntouched(
  s3: S3Client,
  pipeline: Pipeline,
  requests: readonly TaggedRequest[],
): Promise<HistoryReport> {
  const { bucket, prefix } = pipeline;
  const operations = requests
    .map((request) => ({ request, operation: operationOf(request, bucket) }))
    .filter(
      (entry): entry is { request: TaggedRequest; operation: StoreOperation } =>
        entry.operation !== undefined &&
        entry.operation.key !== undefined &&
        entry.operation.key.startsWith(prefix),
    );
  const multipart = operations.filter(({ operation }) => operation.kind === 'multipart');
  assert.deepEqual(
    multipart.map(({ operation }) => operation.key),
    [],
    'multipart uploads are not followed by this check: keep objects below the part size',
  );
  const effective = operations
    .map((entry) => ({ ...entry, at: tookEffect(entry.request) }))
    .filter((entry): entry is typeof entry & { at: ProxyEvent } => entry.at !== undefined)
    .sort((a, b) => a.at.order - b.at.order);
  const onKey = (key: string) => effective.filter(({ operation }) => operation.key === key);
  const describe = (entry: (typeof effective)[number]) =>
    `${entry.request.run} ${entry.request.method} ${entry.operation.key} (${entry.operation.kind}` +
    `${entry.operation.kind === 'put' ? ` md5 ${entry.operation.md5}` : ''}, status ${entry.request.status}, ` +
    `order ${entry.at.order})`;

  const manifestKeys = await listKeys(s3, `${prefix}manifests/`, bucket);
  const violations: string[] = [];
  let objects = 0;
  for (const manifestKey of manifestKeys) {
    const manifestBytes = await getBytes(s3, manifestKey, bucket);
    const manifest = JSON.parse(Buffer.from(manifestBytes).toString('utf8')) as {
      objects: Array<{ key: string }>;
    };
    const finalManifestMd5 = md5(manifestBytes);
    const stagingKey = `${prefix}staging/${manifestKey.slice(prefix.length)}`;
    const copies = onKey(manifestKey).filter(
      ({ operation }) => operation.kind === 'copy' && operation.from === stagingKey,
    );
    let committedAfter: number;
    if (copies.length > 0) {
      // Staged, then committed, then copied: the last staging of these bytes before the copy precedes the commit.
      const firstCopy = copies[0]!.at.order;
      const staged = onKey(stagingKey).filter(
        ({ operation, at }) =>
          operation.kind === 'put' && operation.md5 === finalManifestMd5 && at.order < firstCopy,
      );
      assert.ok(
        staged.length > 0,
        `the bytes of ${manifestKey} were staged at ${stagingKey} before the copy`,
      );
      committedAfter = staged[staged.length - 1]!.at.order;
    } else {
      // Written in place (no staging): its first write of these bytes follows the commit — a later bound.
      const written = onKey(manifestKey).filter(
        ({ operation }) => operation.kind === 'put' && operation.md5 === finalManifestMd5,
      );
      assert.ok(written.length > 0, `${manifestKey} was written through a proxy`);
      committedAfter = written[0]!.at.order;
    }
    for (const { key } of manifest.objects) {
      objects++;
      const finalMd5 = await getBytes(s3, key, bucket).then(md5, () => undefined);
      if (finalMd5 === undefined) violations.push(`${key} (in ${manifestKey}) is missing`);
      const history = onKey(key);
      const before = history.filter(
        ({ operation, at }) => operation.kind === 'put' && at.order < committedAfter,
      );
      const uploaded = before[before.length - 1];
      if (!uploaded)
        violations.push(`${key} (in ${manifestKey}) was never uploaded before its batch committed`);
      else if (
        finalMd5 !== undefined &&
        uploaded.operation.kind === 'put' &&
        uploaded.operation.md5 !== finalMd5
      )
        violations.push(
          `${key}: final bytes (md5 ${finalMd5}) are not those uploaded before the commit: ${describe(uploaded)}`,
        );
      for (const later of history.filter(({ at }) => at.order > committedAfter)) {
        if (later.operation.kind === 'delete')
          violations.push(`committed object deleted after its batch committed: ${describe(later)}`);
        else if (later.operation.kind === 'put' && later.operation.md5 !== finalMd5)
          violations.push(`committed object overwritten with other bytes: ${describe(later)}`);
        else if (later.operation.kind === 'copy')
          violations.push(`committed object overwritten by a copy: ${describe(later)}`);
      }
    }
  }
  assert.deepEqual(violations, [], 'committed objects were touched after their batch committed');
  const dataPrefix = `${prefix}data/`;
  return {
    manifests: manifestKeys.length,
    objects,
    dataDeletes: effective.filter(
      ({ operation }) => operation.kind === 'delete' && operation.key.startsWith(dataPrefix),
    ).length,
    dataPuts: effective.filter(
      ({ operation }) => operation.kind === 'put' && operation.key.startsWith(dataPrefix),
    ).length,
  };
}
