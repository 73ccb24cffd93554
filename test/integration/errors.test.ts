/**
 * Bad input gets one clear line and loses nothing: configuration mistakes fail before anything connects;
 * missing slot, publication, bucket or checkpoint table, wrong wal_level and bad credentials fail fast
 * (no retry storm) with an operator hint, and leave the checkpoint and the slot untouched.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { readCheckpointItem, slotConfirmedFlush } from '../helpers/assertions.js';
import { runCli, type CliResult } from '../helpers/cli.js';
import { startHttpFaultProxy } from '../helpers/http-fault-proxy.js';
import { createPipeline, startTestStack, type Pipeline, type TestStack } from '../helpers/stack.js';
import { startLocalPostgres, type LocalPostgres } from '../../src/devstack/postgres.js';

let stack: TestStack;
let pipeline: Pipeline;
/** The slot's confirmed_flush_lsn right after setup. */
let slotAfterSetup: string | undefined;

before(async () => {
  stack = await startTestStack();
  pipeline = await createPipeline(stack, 'CREATE TABLE t (id int PRIMARY KEY, v text);');
  const setup = await runCli(['setup'], pipeline.env);
  assert.equal(setup.code, 0, setup.stderr);
  slotAfterSetup = await slotConfirmedFlush(pipeline);
});

after(async () => {
  await pipeline?.close();
  await stack?.stop();
});

function assertOneLineError(result: CliResult, pattern: RegExp): void {
  assert.notEqual(result.code, 0, 'a failure exits non-zero');
  const lines = result.stderr.trim().split('\n');
  const last = lines[lines.length - 1]!;
  assert.match(last, /^slotlake: /, `last stderr line is the operator line: ${result.stderr}`);
  assert.match(last, pattern);
  assert.equal(result.stdout, '', 'no summary on failure');
}

describe('clear errors', () => {
  test('an unknown SLOTLAKE_ variable fails before anything connects, naming the likely setting', async () => {
    const result = await runCli(['run'], {
      ...pipeline.env,
      SLOTLAKE_BATCH_MAX_ROW: '10',
      DATABASE_URL: 'postgres://nobody:x@127.0.0.1:1/none', // would fail to connect if it tried
    });
    assert.equal(result.code, 2);
    assertOneLineError(
      result,
      /unknown setting SLOTLAKE_BATCH_MAX_ROW \(did you mean SLOTLAKE_BATCH_MAX_ROWS\?\)/,
    );
    assert.doesNotMatch(result.stderr, /ECONNREFUSED/);
  });

  test('bad values are named with what is expected', async () => {
    const result = await runCli(['run'], {
      ...pipeline.env,
      SLOTLAKE_BATCH_MAX_AGE: 'soon',
      SLOTLAKE_SLOT: 'Bad-Name',
    });
    assert.equal(result.code, 2);
    assertOneLineError(result, /SLOTLAKE_BATCH_MAX_AGE="soon": expected a duration/);
    assert.match(result.stderr, /SLOTLAKE_SLOT="Bad-Name"/);
  });

  test('a missing bucket setting is reported', async () => {
    const env = { ...pipeline.env };
    delete (env as Record<string, string | undefined>).SLOTLAKE_BUCKET;
    const result = await runCli(['run'], env as Record<string, string>);
    assertOneLineError(result, /SLOTLAKE_BUCKET is required/);
  });

  test('a missing slot says to run setup', async () => {
    const result = await runCli(['run', '--until-caught-up'], {
      ...pipeline.env,
      SLOTLAKE_SLOT: 'no_such_slot',
    });
    assertOneLineError(result, /replication slot "no_such_slot" does not exist.*slotlake setup/);
  });

  test('a missing publication says to run setup', async () => {
    const result = await runCli(['run', '--until-caught-up'], {
      ...pipeline.env,
      SLOTLAKE_PUBLICATION: 'nopub',
    });
    assertOneLineError(result, /publication "nopub" does not exist/);
  });

  test('a missing bucket fails fast: asked once, not retried', async () => {
    const s3 = await startHttpFaultProxy({ target: stack.s3.endpoint });
    try {
      const result = await runCli(['run', '--until-caught-up'], {
        ...pipeline.env,
        SLOTLAKE_BUCKET: 'no-such-bucket',
        AWS_ENDPOINT_URL_S3: s3.endpoint,
      });
      assertOneLineError(result, /S3 bucket no-such-bucket does not exist.*slotlake setup/);
      const asked = s3.requests().filter((request) => request.path.startsWith('/no-such-bucket'));
      assert.equal(asked.length, 1, `one request, no retries: ${JSON.stringify(asked)}`);
    } finally {
      await s3.stop();
    }
  });

  test('a missing checkpoint table fails fast: asked once, not retried', async () => {
    const dynamo = await startHttpFaultProxy({ target: stack.dynamo.endpoint, bufferRequests: true });
    try {
      const result = await runCli(['run', '--until-caught-up'], {
        ...pipeline.env,
        SLOTLAKE_CHECKPOINT_TABLE: 'no-such-table',
        AWS_ENDPOINT_URL_DYNAMODB: dynamo.endpoint,
      });
      assertOneLineError(result, /no-such-table/);
      assert.match(result.stderr, /slotlake setup|SLOTLAKE_CHECKPOINT_TABLE/);
      const asked = dynamo.requests().filter((request) => request.body?.includes('"no-such-table"'));
      assert.equal(asked.length, 1, `one request, no retries: ${JSON.stringify(asked.map((r) => r.target))}`);
    } finally {
      await dynamo.stop();
    }
  });

  test('a wrong password is an authentication error', async () => {
    const url = new URL(pipeline.databaseUrl);
    url.password = 'wrong';
    const result = await runCli(['run', '--until-caught-up'], {
      ...pipeline.env,
      DATABASE_URL: url.toString(),
    });
    assertOneLineError(result, /password authentication failed.*DATABASE_URL/);
    assert.doesNotMatch(result.stderr, /wrong@/, 'the password is not printed');
  });

  test('nothing moved: the slot and the checkpoint are where setup left them', async () => {
    assert.ok(slotAfterSetup);
    assert.equal(await slotConfirmedFlush(pipeline), slotAfterSetup, 'the slot did not move');
    assert.equal((await readCheckpointItem(pipeline))?.lsn, undefined, 'no checkpoint');
    const slot = await pipeline.sql('SELECT active FROM pg_replication_slots WHERE slot_name = $1', [
      pipeline.name,
    ]);
    assert.equal((slot.rows[0] as { active: boolean }).active, false, 'no run left streaming');
  });
});

describe('wal_level', () => {
  let replicaOnly: LocalPostgres;
  before(async () => {
    replicaOnly = await startLocalPostgres({ settings: { wal_level: 'replica' } });
  });
  after(async () => {
    await replicaOnly?.stop();
  });

  test('wal_level=replica is named, with the setting to change', async () => {
    const result = await runCli(['setup'], { ...pipeline.env, DATABASE_URL: replicaOnly.url() });
    assertOneLineError(result, /wal_level is replica.*wal_level = logical/);
  });
});
