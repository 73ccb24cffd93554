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
import {
  assertExactlyOnce,
  assertSlotAtCheckpoint,
  readCheckpointItem,
  setup,
  slotConfirmedFlush,
  testS3Client,
} from '../helpers/assertions.js';
import { runCli, runWhenLeaseFree } from '../helpers/cli.js';
import {
  dynamoBody,
  dynamoError,
  isDynamoOp,
  isS3Put,
  s3Error,
  startHttpFaultProxy,
  type HttpFaultProxy,
  type RequestLog,
} from '../helpers/http-fault-proxy.js';
import { isStoreWrite, storeWriteKind } from '../helpers/lease-history.js';
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
  // bodies read before matching: faults aimed at one kind of checkpoint-store write
  dynamoProxy = await startHttpFaultProxy({ target: stack.dynamo.endpoint, bufferRequests: true });
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
  const result = await runWhenLeaseFree(['run', '--until-caught-up'], pipeline.env);
  assert.equal(result.code, 0, result.stderr);
  await assertSlotAtCheckpoint(pipeline);
  await assertExactlyOnce(s3, pipeline, reference, ['public.a', 'public.b']);
}

function requestsMatching(proxy: HttpFaultProxy, fault: string): number {
  return proxy.requests().filter((request) => request.fault === fault).length;
}

/** How many of `requests` got the fault `fault`, per kind of checkpoint-store write. */
function faultedStoreWrites(requests: RequestLog[], fault: string): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const request of requests) {
    const body = dynamoBody(request);
    if (request.fault !== fault || body === undefined) continue;
    const kind = storeWriteKind(body.UpdateExpression ?? '');
    counts[kind ?? 'other'] = (counts[kind ?? 'other'] ?? 0) + 1;
  }
  return counts;
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
        match: isStoreWrite('acquisition'),
        times: 2,
        action: dynamoError('ProvisionedThroughputExceededException', 400),
      });
      dynamoProxy.inject({
        match: isStoreWrite('intent'),
        times: 1,
        action: dynamoError('InternalServerError', 500),
      });
      dynamoProxy.inject({
        match: isStoreWrite('checkpoint'),
        times: 1,
        action: dynamoError('ThrottlingException', 400),
      });
      const run = await runCli(['run', '--until-caught-up'], proxied(pipeline));
      assert.equal(run.code, 0, run.stderr);
      assert.deepEqual(faultedStoreWrites(dynamoProxy.requests().slice(before), 'status'), {
        acquisition: 2,
        intent: 1,
        checkpoint: 1,
      });
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
      // the first lease acquisition, intent and checkpoint write of the run, and one upload
      const before = dynamoProxy.requests().length;
      for (const kind of ['acquisition', 'intent', 'checkpoint'] as const)
        dynamoProxy.inject({ match: isStoreWrite(kind), times: 1, action: { kind: 'after-forward-reset' } });
      s3Proxy.inject({ match: isS3Put('/data/'), times: 1, action: { kind: 'after-forward-reset' } });
      const run = await runCli(['run', '--until-caught-up'], proxied(pipeline));
      assert.equal(run.code, 0, run.stderr);
      assert.deepEqual(faultedStoreWrites(dynamoProxy.requests().slice(before), 'after-forward-reset'), {
        acquisition: 1,
        intent: 1,
        checkpoint: 1,
      });
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
  test('403 AccessDenied on uploads: one attempt per object, a clear line, nothing acknowledged; the next run recovers', async () => {
    const { pipeline, reference } = await newPipeline();
    try {
      await writeSome(pipeline);
      const slotBefore = await slotConfirmedFlush(pipeline);
      const before = s3Proxy.requests().length;
      s3Proxy.inject({ match: isS3Put('/data/'), action: s3Error('AccessDenied', 403) });
      const run = await runCli(['run', '--until-caught-up'], proxied(pipeline));
      assert.equal(run.code, 1);
      assert.match(run.stderr.trim().split('\n').pop()!, /AccessDenied.*permission/);
      const attempts = new Map<string, number>();
      for (const request of s3Proxy.requests().slice(before))
        if (request.method === 'PUT' && request.path.includes('/data/'))
          attempts.set(request.path, (attempts.get(request.path) ?? 0) + 1);
      assert.ok(attempts.size > 0, 'uploads were attempted');
      for (const [path, count] of attempts) assert.equal(count, 1, `${path}: one attempt, no retry`);
      assert.equal((await readCheckpointItem(pipeline))?.lsn, undefined, 'nothing checkpointed');
      assert.equal(await slotConfirmedFlush(pipeline), slotBefore, 'nothing acknowledged');
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
      assert.equal(run.code, 0, run.stderr);
      assert.ok((run.summary?.reconnects as number) >= 1, `reconnected: ${JSON.stringify(run.summary)}`);
      await finishAndCheck(pipeline, reference);
    } finally {
      await pipeline.close();
    }
  });
});
