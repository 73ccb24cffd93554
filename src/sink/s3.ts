/**
 * S3: the archive's storage.
 *
 * Objects are uploaded from their local spool files with lib-storage's `Upload` (a single PutObject for
 * small files, a multipart upload with bounded part buffers for large ones). An object exists in S3 only
 * once its upload completes, so a crash mid-upload leaves no partial object (at most an incomplete
 * multipart upload, which the bucket's lifecycle rule aborts). A custom endpoint (`AWS_ENDPOINT_URL_S3`)
 * implies path-style addressing and checksums only where required (S3-compatible servers).
 */
import { createReadStream } from 'node:fs';
import {
  CreateBucketCommand,
  DeleteObjectCommand,
  HeadBucketCommand,
  PutObjectCommand,
  S3Client,
  S3ServiceException,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { classify, SlotlakeError } from '../errors.js';

export function createS3Client(): S3Client {
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
    requestHandler: { connectionTimeout: 5_000, requestTimeout: 60_000, throwOnRequestTimeout: true },
  });
}

export interface UploadedObject {
  readonly key: string;
  readonly bytes: number;
}

export class S3Archive {
  constructor(
    readonly client: S3Client,
    readonly bucket: string,
    readonly prefix: string,
  ) {}

  key(relative: string): string {
    return `${this.prefix}${relative}`;
  }

  /** Uploads a local file to `key`; resolves once S3 has it durably. */
  async uploadFile(path: string, key: string, bytes: number, contentType: string): Promise<UploadedObject> {
    try {
      const upload = new Upload({
        client: this.client,
        params: {
          Bucket: this.bucket,
          Key: key,
          Body: createReadStream(path),
          ContentType: contentType,
          ContentLength: bytes,
        },
        partSize: 5 * 1024 * 1024, // the minimum: parts are buffered, so smaller parts mean less memory
        queueSize: 2,
        leavePartsOnError: false,
      });
      await upload.done();
      return { key, bytes };
    } catch (error) {
      throw classify(error, { origin: 'object-store', what: `uploading s3://${this.bucket}/${key}` });
    }
  }

  async putText(key: string, body: string, contentType: string): Promise<void> {
    try {
      await this.client.send(
        new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: body, ContentType: contentType }),
      );
    } catch (error) {
      throw classify(error, { origin: 'object-store', what: `writing s3://${this.bucket}/${key}` });
    }
  }

  /** Deletes one object; deleting a missing key succeeds (S3 semantics). */
  async deleteKey(key: string): Promise<void> {
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }));
    } catch (error) {
      throw classify(error, { origin: 'object-store', what: `deleting s3://${this.bucket}/${key}` });
    }
  }

  /** Fails fast with a clear error when the bucket is missing or not ours to write. */
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
          hint: 'create it (`slotlake setup`) or fix SLOTLAKE_BUCKET / AWS_REGION',
          cause: error,
        });
      }
      if (status === 403) {
        throw new SlotlakeError(`access to S3 bucket ${this.bucket} is denied`, {
          kind: 'access-denied',
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
