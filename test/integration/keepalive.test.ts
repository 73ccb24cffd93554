/**
 * Keepalives under load: with wal_sender_timeout = 2 s on the server and every S3 request delayed by 3 s,
 * status updates keep flowing while uploads are slow — no disconnect, no "replication timeout" in the server
 * log — and reading pauses (backpressure) instead of buffering without bound.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { S3Client } from '@aws-sdk/client-s3';
import { assertExactlyOnce, assertSlotAtCheckpoint, setup, testS3Client } from '../helpers/assertions.js';
import { runCli } from '../helpers/cli.js';
import { startHttpFaultProxy, type HttpFaultProxy } from '../helpers/http-fault-proxy.js';
import { createReferenceSlot } from '../helpers/reference.js';
import { createPipeline, startTestStack, type TestStack } from '../helpers/stack.js';

let stack: TestStack;
let s3: S3Client;
let slowS3: HttpFaultProxy;
/** Every S3 request is answered this late: half as long again as the server waits for a status update. */
const UPLOAD_DELAY_MS = 3_000;

before(async () => {
  stack = await startTestStack({ settings: { wal_sender_timeout: '2s', log_min_messages: 'info' } });
  s3 = testS3Client(stack);
  slowS3 = await startHttpFaultProxy({ target: stack.s3.endpoint });
});

after(async () => {
  s3?.destroy();
  await slowS3?.stop();
  await stack?.stop();
});

test(`status updates flow during ${UPLOAD_DELAY_MS / 1000} s uploads (longer than the server's 2 s timeout): no replication timeout; reading pauses under backpressure`, async () => {
  const pipeline = await createPipeline(stack, 'CREATE TABLE t (id serial PRIMARY KEY, v text);', {
    SLOTLAKE_BATCH_MAX_ROWS: '6000',
    SLOTLAKE_READ_BUFFER: '64KiB',
    SLOTLAKE_STATUS_INTERVAL: '10s', // longer than the server's timeout: the run must adapt to the server
    SLOTLAKE_LOG_LEVEL: 'INFO',
  });
  try {
    await setup(pipeline);
    const reference = await createReferenceSlot(pipeline);
    for (let i = 0; i < 4; i++) {
      await pipeline.sql(`INSERT INTO t (v) SELECT repeat('v', 150) || g FROM generate_series(1, 3000) g`);
    }
    slowS3.inject({ match: () => true, action: { kind: 'delay', ms: UPLOAD_DELAY_MS } });
    const run = await runCli(['run', '--until-caught-up', '--max-duration', '120s'], {
      ...pipeline.env,
      AWS_ENDPOINT_URL_S3: slowS3.endpoint,
    });
    slowS3.clear();
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.summary?.stopReason, 'caught-up');
    assert.equal(run.summary?.changes, 12000);
    assert.equal(
      run.summary?.reconnects,
      0,
      `no disconnect: ${run.stderr
        .split('\n')
        .filter((l) => /WARN|ERROR/.test(l))
        .join('\n')}\n${stack.postgres.log().slice(-3000)}`,
    );
    assert.ok((run.summary?.batches as number) >= 2, 'several slow flushes');
    assert.ok((run.summary?.readPauses as number) > 0, 'reading paused while the pipeline was busy');
    assert.ok((run.summary?.durationMs as number) > 2 * UPLOAD_DELAY_MS, 'the uploads really were slow');
    assert.match(run.stderr, /status interval shortened/);
    assert.equal(run.stdout.trim().split('\n').length, 1, 'stdout holds the summary only');
    const runs = run.stderr.split('\n').find((line) => line.includes('"Runs"'));
    assert.ok(runs?.includes('"stopReason":"caught-up"'), 'a Runs metric with the stop reason (EMF, stderr)');
    const log = stack.postgres.log();
    assert.doesNotMatch(log, /replication timeout/, 'the server never dropped the walsender');
    await assertSlotAtCheckpoint(pipeline);
    await assertExactlyOnce(s3, pipeline, reference, ['public.t']);
  } finally {
    await pipeline.close();
  }
});
