/**
 * S3: the archive's storage (an `ObjectStore`).
 *
 * Objects are uploaded from their local spool files with lib-storage's `Upload` (a single PutObject for
 * small files, a multipart upload with bounded part buffers for large ones). An object exists in S3 only
 * once its upload completes, so a crash mid-upload leaves no partial object (at most an incomplete
 * multipart upload, which the bucket's lifecycle rule aborts). Every call takes the run's AbortSignal, so a
 * deadline or a lost lease cancels what is in flight; and every byte the client sends passes the run's write
 * fence first (sink/write-fence.ts), so a process frozen mid-request cannot land a write after its lease ended.
 * A custom endpoint (`AWS_ENDPOINT_URL_S3`) implies path-style addressing and checksums only where required
 * (S3-compatible servers).
 */
import { createReadStream } from 'node:fs';
import {
  CopyObjectCommand,
  CreateBucketCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsCommand,
  PutObjectCommand,
  S3Client,
  S3ServiceException,
} from '@aws-sdk/client-s3';
import { classify, SlotlakeError } from '../errors.js';
import type { ObjectStore } from './object-store.js';
import { WriteFence, type WriteRefusal } from './write-fence.js';

/** lib-storage part size: the minimum S3 allows; parts are buffered, so smaller parts mean less memory. */
const UPLOAD_PART_BYTES = 5 * 1024 * 1024;
/** Parts of one object in flight at once (memory: this many parts buffered per object). */
const UPLOAD_PART_CONCURRENCY = 2;

/** An S3 client whose sockets check `fence` on every write (unarmed, it lets everything through). */
export function createS3Client(fence: WriteFence = new WriteFence()): S3Client {
  const endpoint = process.env.AWS_ENDPOINT_URL_S3 ?? process.env.AWS_ENDPOINT_URL;
  return new S3Client({
    ...(endpoint
      ? {
          endpoint,
          forcePathStyle: true,
          requestChecksumCalculation: 'WHEN_REQUIRED',
          responseChecksumValidation: 'WHEN_REQUIRED',
        }
      : {}),
    maxAttempts: 1, // retries go through the project's own classify()-driven policy
    // A stalled connection must fail (and be retried) rather than hang the run past its deadline.
    requestHandler: {
      connectionTimeout: 5_000,
      requestTimeout: 60_000,
      throwOnRequestTimeout: true,
      ...fence.agents(),
    },
  });
}

function isNotFound(error: unknown): boolean {
  const status = (error as S3ServiceException).$metadata?.httpStatusCode;
  const name = (error as Error).name;
  return status === 404 || name === 'NotFound' || name === 'NoSuchKey';
}

export class S3ObjectStore implements ObjectStore {
  /**
   * @param fence the write fence `client` was created with (createS3Client), armed by `fenceWrites`; without
   *   one, this store cannot fence its writes and refuses to pretend it does
   */
  constructor(
    readonly client: S3Client,
    readonly bucket: string,
    readonly prefix: string,
    private readonly fence?: WriteFence,
  ) {}

  fenceWrites(refusal: WriteRefusal): void {
    if (!this.fence)
      throw new SlotlakeError('this S3 client was created without a write fence', {
        kind: 'internal',
        hint: 'a bug: create the client with createS3Client(fence) and pass the same fence to S3ObjectStore',
      });
    this.fence.arm(refusal);
  }

  get location(): string {
    return `s3://${this.bucket}/${this.prefix}`;
  }

  key(relative: string): string {
    return `${this.prefix}${relative}`;
  }

  /** What a failed call throws: the abort reason when the run cancelled it, else the classified error. */
  private failure(error: unknown, what: string, signal: AbortSignal | undefined): unknown {
    if (signal?.aborted) return signal.reason;
    return classify(error, { origin: 'object-store', what });
  }

  async uploadFile(
    path: string,
    key: string,
    bytes: number,
    contentType: string,
    signal?: AbortSignal,
  ): Promise<void> {
    const abortController = new AbortController();
    const onAbort = () => abortController.abort(signal?.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      if (signal?.aborted) throw signal.reason;
      // Loaded at the first upload: a run with nothing to archive never needs it.
      const { Upload } = await import('@aws-sdk/lib-storage');
      const upload = new Upload({
        client: this.client,
        params: {
          Bucket: this.bucket,
          Key: key,
          Body: createReadStream(path),
          ContentType: contentType,
          ContentLength: bytes,
        },
        partSize: UPLOAD_PART_BYTES,
        queueSize: UPLOAD_PART_CONCURRENCY,
        leavePartsOnError: false,
        abortController,
      });
      await upload.done();
    } catch (error) {
      throw this.failure(error, `uploading s3://${this.bucket}/${key}`, signal);
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  async putText(key: string, body: string, contentType: string, signal?: AbortSignal): Promise<void> {
    try {
      await this.client.send(
        new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: body, ContentType: contentType }),
        { abortSignal: signal },
      );
    } catch (error) {
      throw this.failure(error, `writing s3://${this.bucket}/${key}`, signal);
    }
  }

  async getText(key: string, signal?: AbortSignal): Promise<string | undefined> {
    try {
      const object = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }), {
        abortSignal: signal,
      });
      return await object.Body!.transformToString('utf8');
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw this.failure(error, `reading s3://${this.bucket}/${key}`, signal);
    }
  }

  async copy(fromKey: string, toKey: string, signal?: AbortSignal): Promise<void> {
    try {
      await this.client.send(
        new CopyObjectCommand({
          Bucket: this.bucket,
          Key: toKey,
          CopySource: `${this.bucket}/${fromKey.split('/').map(encodeURIComponent).join('/')}`,
        }),
        { abortSignal: signal },
      );
    } catch (error) {
      throw this.failure(error, `copying s3://${this.bucket}/${fromKey} to ${toKey}`, signal);
    }
  }

  async deleteKey(key: string, signal?: AbortSignal): Promise<void> {
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }), {
        abortSignal: signal,
      });
    } catch (error) {
      throw this.failure(error, `deleting s3://${this.bucket}/${key}`, signal);
    }
  }

  async exists(key: string, signal?: AbortSignal): Promise<boolean> {
    try {
      await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }), {
        abortSignal: signal,
      });
      return true;
    } catch (error) {
      if (isNotFound(error)) return false;
      throw this.failure(error, `checking s3://${this.bucket}/${key}`, signal);
    }
  }

  async list(prefix: string, signal?: AbortSignal): Promise<string[]> {
    // ListObjects (v1) with markers: S3-compatible servers' v2 continuation tokens are not all portable.
    const keys: string[] = [];
    let marker: string | undefined;
    try {
      for (;;) {
        const page = await this.client.send(
          new ListObjectsCommand({ Bucket: this.bucket, Prefix: prefix, Marker: marker }),
          { abortSignal: signal },
        );
        const contents = page.Contents ?? [];
        for (const item of contents) if (item.Key) keys.push(item.Key);
        if (!page.IsTruncated || contents.length === 0) break;
        marker = page.NextMarker ?? keys[keys.length - 1];
      }
    } catch (error) {
      throw this.failure(error, `listing s3://${this.bucket}/${prefix}`, signal);
    }
    return keys.sort();
  }

  async checkBucket(): Promise<void> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
    } catch (error) {
      const status = (error as S3ServiceException).$metadata?.httpStatusCode;
      if (
        status === 404 ||
        (error as Error).name === 'NotFound' ||
        (error as Error).name === 'NoSuchBucket'
      ) {
        throw new SlotlakeError(`S3 bucket ${this.bucket} does not exist`, {
          kind: 'bucket-missing',
          origin: 'object-store',
          hint: 'create it (`slotlake setup`) or fix SLOTLAKE_BUCKET / AWS_REGION',
          cause: error,
        });
      }
      if (status === 403) {
        throw new SlotlakeError(`access to S3 bucket ${this.bucket} is denied`, {
          kind: 'access-denied',
          origin: 'object-store',
          hint: 'grant the role s3:ListBucket, s3:PutObject, s3:GetObject and s3:DeleteObject on the bucket',
          cause: error,
        });
      }
      throw classify(error, { origin: 'object-store', what: `checking S3 bucket ${this.bucket}` });
    }
  }

  /** `setup`: creates the bucket when missing. */
  async ensureBucket(): Promise<'created' | 'exists'> {
    try {
      await this.checkBucket();
      return 'exists';
    } catch (error) {
      if (!(error instanceof SlotlakeError) || error.kind !== 'bucket-missing') throw error;
    }
    try {
      await this.client.send(new CreateBucketCommand({ Bucket: this.bucket }));
    } catch (error) {
      throw classify(error, { origin: 'object-store', what: `creating S3 bucket ${this.bucket}` });
    }
    return 'created';
  }
}
