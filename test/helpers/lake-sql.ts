/**
 * Reading the archive as a user of `slotlake schema` would: a local copy of the archive (as `aws s3 sync`
 * makes one), and DuckDB running the printed views over it.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { DuckDBInstance, type DuckDBConnection } from '@duckdb/node-api';
import { runCli } from './cli.js';
import { listKeys } from './lake.js';
import { BUCKET } from './stack.js';
import assert from 'node:assert/strict';

/** Copies every object under `prefix` into `dir` (keys relative to the prefix); returns how many. */
export async function mirrorArchive(s3: S3Client, prefix: string, dir: string): Promise<number> {
  const keys = await listKeys(s3, prefix);
  for (const key of keys) {
    const object = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
    const path = join(dir, key.slice(prefix.length));
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, await object.Body!.transformToByteArray());
  }
  return keys.length;
}

/** `slotlake schema` with these arguments; asserts it exits 0 and returns stdout. */
export async function printSchema(env: Record<string, string>, args: string[]): Promise<string> {
  const result = await runCli(['schema', ...args], env);
  assert.equal(result.code, 0, result.stderr);
  return result.stdout;
}

export interface DuckLake {
  readonly connection: DuckDBConnection;
  /** Rows as JSON-able objects (BIGINT and DECIMAL as strings). */
  rows(sql: string): Promise<Array<Record<string, unknown>>>;
  close(): void;
}

/** A DuckDB database in memory with `script` (the views) run in it. */
export async function duckLake(script: string): Promise<DuckLake> {
  const instance = await DuckDBInstance.create(':memory:');
  const connection = await instance.connect();
  await connection.run(script);
  return {
    connection,
    async rows(sql) {
      const reader = await connection.runAndReadAll(sql);
      return reader.getRowObjectsJson() as Array<Record<string, unknown>>;
    },
    close() {
      connection.closeSync();
      instance.closeSync();
    },
  };
}
