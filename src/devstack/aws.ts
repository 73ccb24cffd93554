/**
 * Local stand-ins for AWS, for tests and `slotlake dev`: an S3-compatible server (s3rver, objects as files
 * under a folder you can inspect) and a DynamoDB-compatible server (dynalite), both on free loopback ports.
 */
import { mkdirSync } from 'node:fs';
import type { Server } from 'node:net';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

export interface LocalS3 {
  readonly endpoint: string;
  readonly directory: string;
  stop(): Promise<void>;
}

export interface LocalDynamo {
  readonly endpoint: string;
  stop(): Promise<void>;
}

export async function startLocalS3(directory: string, buckets: string[] = []): Promise<LocalS3> {
  mkdirSync(directory, { recursive: true });
  const S3rver = require('s3rver') as new (options: Record<string, unknown>) => {
    run(): Promise<{ port: number }>;
    close(): Promise<void>;
  };
  // Port 0: the kernel picks a free port at bind time (no race with other processes).
  const server = new S3rver({
    port: 0,
    address: '127.0.0.1',
    silent: true,
    directory,
    allowMismatchedSignatures: true,
    configureBuckets: buckets.map((name) => ({ name, configs: [] })),
  });
  const { port } = await server.run();
  return {
    endpoint: `http://127.0.0.1:${port}`,
    directory,
    stop: async () => {
      await server.close();
    },
  };
}

export async function startLocalDynamo(path?: string): Promise<LocalDynamo> {
  const dynalite = require('dynalite') as (options: Record<string, unknown>) => Server;
  const server = dynalite({
    createTableMs: 0,
    deleteTableMs: 0,
    updateTableMs: 0,
    ...(path ? { path } : {}),
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    stop: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
