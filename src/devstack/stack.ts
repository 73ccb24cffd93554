/**
 * The whole local stack — Postgres (wal_level=logical), S3 and DynamoDB stand-ins — started together on
 * free loopback ports, with the environment a slotlake process needs to use them.
 */
import { join } from 'node:path';
import { startLocalDynamo, startLocalS3, type LocalDynamo, type LocalS3 } from './aws.js';
import { startLocalPostgres, type LocalPostgres, type LocalPostgresOptions } from './postgres.js';

export interface LocalStack {
  readonly postgres: LocalPostgres;
  readonly s3: LocalS3;
  readonly dynamo: LocalDynamo;
  /** AWS variables pointing at the local servers (no real credentials). */
  readonly awsEnv: Record<string, string>;
  stop(): Promise<void>;
}

export interface LocalStackOptions {
  readonly dir: string;
  readonly buckets?: string[];
  readonly postgres?: LocalPostgresOptions;
  /** Keep DynamoDB data on disk under dir (dev) instead of in memory (tests). */
  readonly persistDynamo?: boolean;
}

export async function startLocalStack(options: LocalStackOptions): Promise<LocalStack> {
  const [postgres, s3, dynamo] = await Promise.all([
    startLocalPostgres(options.postgres),
    startLocalS3(join(options.dir, 's3'), options.buckets ?? []),
    startLocalDynamo(options.persistDynamo ? join(options.dir, 'dynamodb') : undefined),
  ]);
  return {
    postgres,
    s3,
    dynamo,
    awsEnv: {
      AWS_REGION: 'us-east-1',
      AWS_ACCESS_KEY_ID: 'S3RVER',
      AWS_SECRET_ACCESS_KEY: 'S3RVER',
      AWS_ENDPOINT_URL_S3: s3.endpoint,
      AWS_ENDPOINT_URL_DYNAMODB: dynamo.endpoint,
    },
    async stop() {
      await Promise.allSettled([postgres.stop(), s3.stop(), dynamo.stop()]);
    },
  };
}
