/**
 * Test harness: one local stack per test file (Postgres, S3, DynamoDB on loopback), and per test a fresh
 * database, slot, publication, bucket prefix and checkpoint key — so tests never share state.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { startLocalStack, type LocalStack } from '../../src/devstack/stack.js';
import type { LocalPostgresOptions } from '../../src/devstack/postgres.js';

export const BUCKET = 'slotlake-test';
export const CHECKPOINT_TABLE = 'slotlake-test-checkpoints';

export interface TestStack extends LocalStack {
  readonly dir: string;
}

export interface TestStackOptions {
  /** Buckets to create besides BUCKET. */
  readonly extraBuckets?: readonly string[];
}

export async function startTestStack(
  postgres?: LocalPostgresOptions,
  options: TestStackOptions = {},
): Promise<TestStack> {
  const dir = mkdtempSync(join(tmpdir(), 'slotlake-test-'));
  const stack = await startLocalStack({
    dir,
    buckets: [BUCKET, ...(options.extraBuckets ?? [])],
    ...(postgres ? { postgres } : {}),
  });
  return {
    ...stack,
    dir,
    async stop() {
      await stack.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

let counter = 0;

export interface Pipeline {
  readonly name: string;
  /** The bucket, key prefix, checkpoint table and checkpoint key (item `pk`) its runs use. */
  readonly bucket: string;
  readonly prefix: string;
  readonly checkpointTable: string;
  readonly checkpointKey: string;
  readonly databaseUrl: string;
  /** Environment for a slotlake process (or loadConfig) using this pipeline. */
  readonly env: Record<string, string>;
  /** A normal connection to the pipeline's database (closed by `close`). */
  sql(text: string, values?: unknown[]): Promise<pg.QueryResult>;
  close(): Promise<void>;
}

/**
 * A fresh database with its own slot, publication, S3 prefix and checkpoint key; `extraEnv` may name another
 * bucket, prefix or checkpoint table.
 */
export async function createPipeline(
  stack: TestStack,
  schemaSql: string,
  extraEnv: Record<string, string> = {},
): Promise<Pipeline> {
  const name = `p${process.pid}_${++counter}_${Math.random().toString(36).slice(2, 7)}`;
  const databaseUrl = await stack.postgres.createDatabase(name);
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  if (schemaSql) await client.query(schemaSql);
  const env: Record<string, string> = {
    ...stack.awsEnv,
    DATABASE_URL: databaseUrl,
    SLOTLAKE_SLOT: name,
    SLOTLAKE_PUBLICATION: name,
    SLOTLAKE_BUCKET: BUCKET,
    SLOTLAKE_PREFIX: `${name}/`,
    SLOTLAKE_CHECKPOINT_TABLE: CHECKPOINT_TABLE,
    SLOTLAKE_STATUS_INTERVAL: '1s',
    SLOTLAKE_LOG_LEVEL: 'WARN',
    // Tests compare the archive with the change stream; snapshot tests ask for SLOTLAKE_SNAPSHOT=initial.
    SLOTLAKE_SNAPSHOT: 'never',
    ...extraEnv,
  };
  return {
    name,
    bucket: env.SLOTLAKE_BUCKET!,
    prefix: env.SLOTLAKE_PREFIX!,
    checkpointTable: env.SLOTLAKE_CHECKPOINT_TABLE!,
    checkpointKey: env.SLOTLAKE_PIPELINE ?? env.SLOTLAKE_SLOT!,
    databaseUrl,
    env,
    sql: (text, values) => client.query(text, values),
    close: () => client.end(),
  };
}
