/**
 * The Lambda handler (middy + Powertools) performs exactly `slotlake run` with the invocation's remaining
 * time as its budget and returns the run summary.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Context } from 'aws-lambda';
import { assertSlotAtCheckpoint } from '../helpers/assertions.js';
import { runCli } from '../helpers/cli.js';
import { createPipeline, startTestStack, type Pipeline, type TestStack } from '../helpers/stack.js';

let stack: TestStack;
let pipeline: Pipeline;

before(async () => {
  stack = await startTestStack();
  pipeline = await createPipeline(stack, 'CREATE TABLE items (id int PRIMARY KEY, name text);', {
    SLOTLAKE_IDLE_TIMEOUT: '1s',
  });
  const setup = await runCli(['setup'], pipeline.env);
  assert.equal(setup.code, 0, setup.stderr);
});

after(async () => {
  await pipeline?.close();
  await stack?.stop();
});

function fakeContext(budgetMs: number): Context {
  const endsAt = Date.now() + budgetMs;
  return {
    callbackWaitsForEmptyEventLoop: true,
    functionName: 'slotlake-test-ingest',
    functionVersion: '$LATEST',
    invokedFunctionArn: 'arn:aws:lambda:us-east-1:123456789012:function:slotlake-test-ingest',
    memoryLimitInMB: '1024',
    awsRequestId: 'req-1',
    logGroupName: '/aws/lambda/slotlake-test-ingest',
    logStreamName: 'stream',
    getRemainingTimeInMillis: () => endsAt - Date.now(),
    done: () => undefined,
    fail: () => undefined,
    succeed: () => undefined,
  };
}

test('the handler runs one bounded run and returns its summary', async () => {
  for (const key of Object.keys(process.env)) if (key.startsWith('SLOTLAKE_')) delete process.env[key];
  Object.assign(process.env, pipeline.env);
  await pipeline.sql(`INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 25) g`);
  const { handler } = await import('../../src/entrypoints/lambda.js');
  const started = Date.now();
  const summary = await handler({ source: 'aws.events' }, fakeContext(20_000));
  assert.ok(Date.now() - started < 20_000, 'returned inside the invocation budget');
  assert.equal(summary.changes, 25);
  assert.equal(summary.stopReason, 'idle');
  assert.equal(summary.startCheckpoint, null);
  // the DynamoDB item and pg_replication_slots, read directly
  assert.equal(await assertSlotAtCheckpoint(pipeline), summary.checkpoint);
});

test('a failing run rejects the invocation with the operator line', async () => {
  process.env.SLOTLAKE_SLOT = 'missing_slot';
  const { handler } = await import('../../src/entrypoints/lambda.js');
  await assert.rejects(handler({}, fakeContext(10_000)), /replication slot "missing_slot" does not exist/);
});
