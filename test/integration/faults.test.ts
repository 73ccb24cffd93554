/**
 * Faults that are not crashes, injected between slotlake and real servers: a TCP proxy in front of Postgres
 * cuts connections mid-transaction and mid-upload; an HTTP proxy in front of S3 and DynamoDB injects 5xx,
 * throttling, ambiguous writes (the request takes effect, the response is lost) and slow responses.
 * Transient faults are retried inside the budget; permanent ones fail at once with a hint; every run that
 * ends cleanly leaves the archive exactly once.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { S3Client } from '@aws-sdk/client-s3';
import { assertExactlyOnce, assertSlotAtCheckpoint, setup, testS3Client } from '../helpers/assertions.js';
import { runCli } from '../helpers/cli.js';
import {
  dynamoError,
  isDynamoOp,
  isS3Put,
  s3Error,
  startHttpFaultProxy,
  type HttpFaultProxy,
} from '../helpers/http-fault-proxy.js';
import { createReferenceSlot } from '../helpers/reference.js';
import { createPipeline, startTestStack, type Pipeline, type TestStack } from '../helpers/stack.js';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';

let stack: TestStack;
let s3: S3Client;
let s3Proxy: HttpFaultProxy;
let dynamoProxy: HttpFaultProxy;
let pgProxy: TcpProxy;

before(async () => {
  stack = await startTestStack();
  s3 = testS3Client(stack);
  s3Proxy = await startHttpFaultProxy({ target: stack.s3.endpoint });
  dynamoProxy = await startHttpFaultProxy({ target: stack.dynamo.endpoint });
  pgProxy = await startTcpProxy({ targetHost: stack.postgres.host, targetPort: stack.postgres.port });
});

after(async () => {
  s3?.destroy();
  await s3Proxy?.stop();
  await dynamoProxy?.stop();
  await pgProxy?.stop();
  await stack?.stop();
});

/** The pipeline's environment with every connection going through the proxies. */
function proxied(pipeline: Pipeline): Record<string, string> {
  const url = new URL(pipeline.databaseUrl);
  url.port = String(pgProxy.port);
  return {
    ...pipeline.env,
    DATABASE_URL: url.toString(),
    AWS_ENDPOINT_URL_S3: s3Proxy.endpoint,
    AWS_ENDPOINT_URL_DYNAMODB: dynamoProxy.endpoint,
  };
}

async function newPipeline(
  extra: Record<string, string> = {},
): Promise<{ pipeline: Pipeline; reference: string }> {
  const pipeline = await createPipeline(
    stack,
    'CREATE TABLE a (id serial PRIMARY KEY, v text); CREATE TABLE b (id serial PRIMARY KEY, v text);',
    { SLOTLAKE_LEASE_DURATION: '3s', ...extra },
  );
  await setup(pipeline);
  const reference = await createReferenceSlot(pipeline);
  return { pipeline, reference };
}

async function writeSome(pipeline: Pipeline, rows = 50): Promise<void> {
  await pipeline.sql(`INSERT INTO a (v) SELECT repeat('a', 100) || g FROM generate_series(1, $1) g`, [rows]);
  await pipeline.sql(`INSERT INTO b (v) SELECT 'b' || g FROM generate_series(1, $1) g`, [rows]);
  await pipeline.sql(`UPDATE a SET v = v || '+' WHERE id % 5 = 0`);
}

async function finishAndCheck(pipeline: Pipeline, reference: string): Promise<void> {
  s3Proxy.clear();
  dynamoProxy.clear();
  let result = await runCli(['run', '--until-caught-up'], pipeline.env);
  while (result.summary?.stopReason === 'lease-held')
    result = await runCli(['run', '--until-caught-up'], pipeline.env);
  assert.equal(result.code, 0, result.stderr);
  await assertSlotAtCheckpoint(pipeline);
  await assertExactlyOnce(s3, pipeline, reference, ['public.a', 'public.b']);
}

function requestsMatching(proxy: HttpFaultProxy, fault: string): number {
  return proxy.requests().filter((request) => request.fault === fault).length;
}

describe('transient S3 and DynamoDB faults are retried', () => {
  test('503 SlowDown and 500 on uploads and manifests', async () => {
    const { pipeline, reference } = await newPipeline({ SLOTLAKE_BATCH_MAX_ROWS: '30' });
    try {
      await writeSome(pipeline);
      s3Proxy.inject({ match: isS3Put('/data/'), times: 3, action: s3Error('SlowDown', 503) });
      s3Proxy.inject({ match: isS3Put('/manifests/'), times: 1, action: s3Error('InternalError', 500) });
      const run = await runCli(['run', '--until-caught-up'], proxied(pipeline));
      assert.equal(run.code, 0, run.stderr);
      assert.equal(requestsMatching(s3Proxy, 'status'), 4, 'all four faults were hit and retried');
      await assertSlotAtCheckpoint(pipeline);
      await finishAndCheck(pipeline, reference);
    } finally {
      await pipeline.close();
    }
  });

  test('DynamoDB throttling and 500s on the lease, intent and checkpoint writes', async () => {
    const { pipeline, reference } = await newPipeline();
    try {
      await writeSome(pipeline);
      const before = dynamoProxy.requests().length;
      dynamoProxy.inject({
        match: isDynamoOp('UpdateItem'),
        times: 2,
        action: dynamoError('ProvisionedThroughputExceededException', 400),
      });
      dynamoProxy.inject({
        match: isDynamoOp('UpdateItem'),
        times: 1,
        action: dynamoError('InternalServerError', 500),
      });
      dynamoProxy.inject({
        match: isDynamoOp('UpdateItem'),
        times: 1,
        action: dynamoError('ThrottlingException', 400),
      });
      const run = await runCli(['run', '--until-caught-up'], proxied(pipeline));
      assert.equal(run.code, 0, run.stderr);
      const faulted = dynamoProxy
        .requests()
        .slice(before)
        .filter((request) => request.fault === 'status');
      assert.equal(faulted.length, 4);
      await assertSlotAtCheckpoint(pipeline);
      await finishAndCheck(pipeline, reference);
    } finally {
      await pipeline.close();
    }
  });

  test('ambiguous writes: the request took effect, the response was lost', async () => {
    const { pipeline, reference } = await newPipeline();
    try {
      await writeSome(pipeline);
      // every DynamoDB write of the run once: lease acquisition, intent, checkpoint; and one upload
      let updates = 0;
      dynamoProxy.inject({
        match: (request) => isDynamoOp('UpdateItem')(request) && ++updates <= 6 && updates % 2 === 1,
        action: { kind: 'after-forward-reset' },
      });
      s3Proxy.inject({ match: isS3Put('/data/'), times: 1, action: { kind: 'after-forward-reset' } });
      const run = await runCli(['run', '--until-caught-up'], proxied(pipeline));
      assert.equal(run.code, 0, run.stderr);
      assert.ok(requestsMatching(dynamoProxy, 'after-forward-reset') >= 3);
      assert.equal(requestsMatching(s3Proxy, 'after-forward-reset'), 1);
      assert.ok((run.summary?.changes as number) > 0);
      await assertSlotAtCheckpoint(pipeline);
      await finishAndCheck(pipeline, reference);
    } finally {
      await pipeline.close();
    }
  });

  test('slow S3 and DynamoDB responses', async () => {
    const { pipeline, reference } = await newPipeline({ SLOTLAKE_BATCH_MAX_ROWS: '40' });
    try {
      await writeSome(pipeline);
      s3Proxy.inject({ match: isS3Put(), action: { kind: 'delay', ms: 700 } });
      dynamoProxy.inject({ match: isDynamoOp('UpdateItem'), action: { kind: 'delay', ms: 300 } });
      const run = await runCli(['run', '--until-caught-up', '--max-duration', '60s'], proxied(pipeline));
      assert.equal(run.code, 0, run.stderr);
      await assertSlotAtCheckpoint(pipeline);
      await finishAndCheck(pipeline, reference);
    } finally {
      await pipeline.close();
    }
  });
});

describe('permanent faults fail fast', () => {
  test('403 AccessDenied on uploads: one attempt, a clear line, nothing acknowledged; the next run recovers', async () => {
    const { pipeline, reference } = await newPipeline();
    try {
      await writeSome(pipeline);
      const before = s3Proxy.requests().length;
      s3Proxy.inject({ match: isS3Put('/data/'), action: s3Error('AccessDenied', 403) });
      const run = await runCli(['run', '--until-caught-up'], proxied(pipeline));
      assert.equal(run.code, 1);
      assert.match(run.stderr.trim().split('\n').pop()!, /AccessDenied.*permission/);
      const puts = s3Proxy
        .requests()
        .slice(before)
        .filter((request) => request.method === 'PUT');
      assert.ok(puts.length <= 4, `no retry storm: ${puts.length} PUTs`);
      const report = JSON.parse((await runCli(['status'], pipeline.env)).stdout) as {
        checkpoint: string | null;
      };
      assert.equal(report.checkpoint, null, 'nothing checkpointed');
      await finishAndCheck(pipeline, reference);
    } finally {
      await pipeline.close();
    }
  });
});

describe('a dropped Postgres connection', () => {
  test('cut mid-transaction: the run reconnects from the checkpoint and finishes', async () => {
    const { pipeline, reference } = await newPipeline({ SLOTLAKE_BATCH_MAX_ROWS: '200' });
    try {
      await writeSome(pipeline, 30);
      await pipeline.sql(`INSERT INTO a (v) SELECT repeat('x', 200) || g FROM generate_series(1, 3000) g`);
      await writeSome(pipeline, 30);
      const before = pgProxy.totalConnections();
      pgProxy.cutAfterServerBytes(150_000);
      const run = await runCli(['run', '--until-caught-up', '--max-duration', '60s'], proxied(pipeline));
      assert.equal(run.code, 0, run.stderr);
      assert.ok((run.summary?.reconnects as number) >= 1, `reconnected: ${JSON.stringify(run.summary)}`);
      assert.ok(pgProxy.totalConnections() - before >= 3);
      await assertSlotAtCheckpoint(pipeline);
      await finishAndCheck(pipeline, reference);
    } finally {
      await pipeline.close();
    }
  });

  test('cut while a batch uploads: the batch is not lost, nothing is written twice', async () => {
    const { pipeline, reference } = await newPipeline({ SLOTLAKE_BATCH_MAX_ROWS: '60' });
    try {
      await writeSome(pipeline, 100);
      let cut = false;
      s3Proxy.inject({
        match: (request) => {
          if (!isS3Put('/data/')(request) || cut) return false;
          cut = true;
          // the upload is on its way: cut Postgres now, then let the upload finish after a moment
          setImmediate(() => pgProxy.cutAll());
          return true;
        },
        action: { kind: 'delay', ms: 500 },
      });
      const run = await runCli(['run', '--until-caught-up', '--max-duration', '60s'], proxied(pipeline));
      assert.ok(cut, 'an upload was in flight when the connection was cut');
      if (run.code === 0) assert.ok((run.summary?.reconnects as number) >= 1);
      else assert.match(run.stderr, /connection|terminated|closed/i);
      await finishAndCheck(pipeline, reference);
    } finally {
      await pipeline.close();
    }
  });
});
