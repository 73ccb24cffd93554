/**
 * Source access against real servers: the database secret fetched at run time from a Secrets Manager
 * endpoint on loopback (cached across warm Lambda invocations, fetched again after a password rotation),
 * no password in any output, RDS IAM tokens signed by @aws-sdk/rds-signer for every connection, and
 * failover slots on the embedded PostgreSQL 17.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, mock, test } from 'node:test';
import type { Context } from 'aws-lambda';
import pg from 'pg';
import { describeConfig, loadConfig } from '../../src/config.js';
import { SlotlakeError } from '../../src/errors.js';
import { ReplicationConnection } from '../../src/replication/connection.js';
import { awsSourceAccessServices, SourceAccess } from '../../src/replication/credentials.js';
import { openSourceClient } from '../../src/replication/source.js';
import { runCli } from '../helpers/cli.js';
import { startLocalSecretsManager, type LocalSecretsManager } from '../helpers/secrets-manager.js';
import { createPipeline, startTestStack, type Pipeline, type TestStack } from '../helpers/stack.js';

let stack: TestStack;
let secrets: LocalSecretsManager;
let pipeline: Pipeline;
/** The role the pipeline's runs log in as (REPLICATION, password from the secret). */
let role: string;
let database: string;
const SECRET_ARN = 'arn:aws:secretsmanager:us-east-1:123456789012:secret:slotlake/source-AbCdEf';

function newPassword(): string {
  // Characters that need escaping in a URL, so a leak in any encoding is still found by the plain text.
  return `Pw-${randomBytes(12).toString('hex')}`;
}

function rdsSecret(password: string): string {
  return JSON.stringify({
    engine: 'postgres',
    host: '127.0.0.1',
    port: stack.postgres.port,
    username: role,
    password,
    dbname: database,
  });
}

/** The pipeline's environment with the connection taken from the secret instead of DATABASE_URL. */
function secretEnv(extra: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = {
    ...pipeline.env,
    SLOTLAKE_DATABASE_SECRET: SECRET_ARN,
    AWS_ENDPOINT_URL_SECRETS_MANAGER: secrets.endpoint,
    ...extra,
  };
  delete env.DATABASE_URL;
  return env;
}

async function admin<T>(use: (client: pg.Client) => Promise<T>, db = database): Promise<T> {
  const client = new pg.Client({ connectionString: stack.postgres.url(db) });
  await client.connect();
  try {
    return await use(client);
  } finally {
    await client.end();
  }
}

before(async () => {
  stack = await startTestStack();
  secrets = await startLocalSecretsManager();
  pipeline = await createPipeline(stack, 'CREATE TABLE items (id int PRIMARY KEY, name text);', {
    SLOTLAKE_IDLE_TIMEOUT: '1s',
  });
  database = pipeline.name;
  role = `app_${pipeline.name}`;
  // Setup runs with the administrative URL (creating a publication needs table ownership); runs use the
  // replication role from the secret.
  const setup = await runCli(['setup'], pipeline.env);
  assert.equal(setup.code, 0, setup.stderr);
});

after(async () => {
  await pipeline?.close();
  await secrets?.stop();
  await stack?.stop();
});

describe('failover slots (PostgreSQL 17+)', () => {
  test('setup creates the slot with failover = true, or false when SLOTLAKE_SLOT_FAILOVER=false', async () => {
    const version = await pipeline.sql('SHOW server_version_num');
    assert.ok(Number((version.rows[0] as { server_version_num: string }).server_version_num) >= 170000);
    const failover = async (slot: string) =>
      (
        (await pipeline.sql('SELECT failover FROM pg_replication_slots WHERE slot_name = $1', [slot]))
          .rows[0] as { failover: boolean }
      ).failover;
    assert.equal(await failover(pipeline.name), true, 'the default');
    const again = await runCli(['setup'], pipeline.env);
    assert.equal(again.code, 0, again.stderr);
    assert.equal((again.summary as { slot: string; slotFailover: boolean }).slot, 'exists');
    assert.equal(
      (again.summary as { slotFailover: boolean }).slotFailover,
      true,
      'reported for an existing slot',
    );

    const slot = `${pipeline.name}_nofailover`;
    const off = await runCli(['setup'], {
      ...pipeline.env,
      SLOTLAKE_SLOT: slot,
      SLOTLAKE_SLOT_FAILOVER: 'false',
    });
    assert.equal(off.code, 0, off.stderr);
    assert.equal((off.summary as { slotFailover: boolean }).slotFailover, false);
    assert.equal(await failover(slot), false);
    await pipeline.sql('SELECT pg_drop_replication_slot($1)', [slot]);
  });
});

describe('the database secret', () => {
  let password = newPassword();

  before(async () => {
    await admin((client) => client.query(`CREATE ROLE ${role} LOGIN REPLICATION PASSWORD '${password}'`));
    secrets.put(SECRET_ARN, rdsSecret(password));
  });

  function fakeContext(budgetMs: number): Context {
    const endsAt = Date.now() + budgetMs;
    return {
      callbackWaitsForEmptyEventLoop: true,
      functionName: 'slotlake-test-shop',
      functionVersion: '$LATEST',
      invokedFunctionArn: 'arn:aws:lambda:us-east-1:123456789012:function:slotlake-test-shop',
      memoryLimitInMB: '1024',
      awsRequestId: `req-${Date.now()}`,
      logGroupName: '/aws/lambda/slotlake-test-shop',
      logStreamName: 'stream',
      getRemainingTimeInMillis: () => endsAt - Date.now(),
      done: () => undefined,
      fail: () => undefined,
      succeed: () => undefined,
    };
  }

  /** Runs `use` with everything written to stdout and stderr captured (and still written). */
  async function captured<T>(use: () => Promise<T>): Promise<{ result: T; output: string }> {
    let output = '';
    const writes = [process.stdout.write, process.stderr.write] as const;
    const tap = (original: typeof process.stdout.write) =>
      function (this: NodeJS.WriteStream, chunk: unknown, ...rest: unknown[]) {
        output += typeof chunk === 'string' ? chunk : Buffer.from(chunk as Uint8Array).toString();
        return (original as (...args: unknown[]) => boolean).call(this, chunk, ...rest);
      } as typeof process.stdout.write;
    process.stdout.write = tap(writes[0]);
    process.stderr.write = tap(writes[1]);
    try {
      return { result: await use(), output };
    } finally {
      process.stdout.write = writes[0];
      process.stderr.write = writes[1];
    }
  }

  test('the handler (middy, Lambda context) fetches it once while warm and again after a rotation', async () => {
    for (const key of Object.keys(process.env)) if (key.startsWith('SLOTLAKE_')) delete process.env[key];
    delete process.env.DATABASE_URL;
    Object.assign(process.env, secretEnv({ SLOTLAKE_LOG_LEVEL: 'DEBUG' }));
    const { handler } = await import('../../src/entrypoints/lambda.js');
    const passwords = [password];

    await pipeline.sql(`INSERT INTO items SELECT g, 'a' FROM generate_series(1, 10) g`);
    const first = await captured(() => handler({ source: 'aws.events' }, fakeContext(30_000)));
    assert.equal(first.result.changes, 10);
    assert.equal(secrets.fetches(SECRET_ARN), 1);

    await pipeline.sql(`INSERT INTO items SELECT g, 'b' FROM generate_series(11, 15) g`);
    const warm = await captured(() => handler({ source: 'aws.events' }, fakeContext(30_000)));
    assert.equal(warm.result.changes, 5);
    assert.equal(secrets.fetches(SECRET_ARN), 1, 'a warm invocation reuses the cached secret');

    // Rotation: the role's password changes and the secret gets the new value.
    password = newPassword();
    passwords.push(password);
    await admin((client) => client.query(`ALTER ROLE ${role} PASSWORD '${password}'`));
    secrets.put(SECRET_ARN, rdsSecret(password));
    await pipeline.sql(`INSERT INTO items SELECT g, 'c' FROM generate_series(16, 22) g`);
    const rotated = await captured(() => handler({ source: 'aws.events' }, fakeContext(30_000)));
    assert.equal(rotated.result.changes, 7, 'the run after the rotation archives');
    assert.equal(secrets.fetches(SECRET_ARN), 2, 'fetched again once, when the cached password was refused');

    for (const run of [first, warm, rotated])
      for (const secret of passwords) {
        assert.ok(!run.output.includes(secret), 'no password in the logs or metrics');
        assert.ok(!JSON.stringify(run.result).includes(secret), 'no password in the summary');
      }
    assert.match(first.output, /"level":"INFO"/, 'the logs were captured (the check above saw them)');
    assert.match(first.output, /"_aws":/, 'and the EMF metrics');
  });

  test('no password in the logs, summaries, status, errors or describeConfig of the CLI', async () => {
    const env = secretEnv({ SLOTLAKE_LOG_LEVEL: 'DEBUG' });
    await pipeline.sql(`INSERT INTO items SELECT g, 'd' FROM generate_series(100, 104) g`);
    const run = await runCli(['run', '--until-caught-up'], env);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.summary?.changes, 5);
    const status = await runCli(['status'], env);
    assert.equal(status.code, 0, status.stderr);

    // The secret as a URL works the same way.
    secrets.put(
      SECRET_ARN,
      `postgres://${role}:${encodeURIComponent(password)}@127.0.0.1:${stack.postgres.port}/${database}`,
    );
    const byUrl = await runCli(['run', '--until-caught-up'], env);
    assert.equal(byUrl.code, 0, byUrl.stderr);

    // A secret whose password the server refuses: fetched, refetched once, then a clear failure.
    const wrong = newPassword();
    secrets.put(SECRET_ARN, rdsSecret(wrong));
    const before = secrets.fetches(SECRET_ARN);
    const refused = await runCli(['run', '--until-caught-up'], env);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /password authentication failed/);
    assert.match(refused.stderr, /SLOTLAKE_DATABASE_SECRET/);
    assert.equal(secrets.fetches(SECRET_ARN) - before, 2, 'the first fetch and one refetch');

    const described = JSON.stringify(describeConfig(loadConfig(env)));
    assert.ok(described.includes(SECRET_ARN), 'the secret is named by its ARN');
    for (const output of [run, status, byUrl, refused]
      .flatMap((r) => [r.stdout, r.stderr])
      .concat(described)) {
      assert.ok(!output.includes(password), 'no current password');
      assert.ok(!output.includes(wrong), 'no refused password');
    }
    secrets.put(SECRET_ARN, rdsSecret(password));
  });
});

describe('RDS IAM authentication', () => {
  test('a token from @aws-sdk/rds-signer is signed for every connection and used as the password', async () => {
    const iamRole = `iam_${pipeline.name}`;
    await admin((client) => client.query(`CREATE ROLE ${iamRole} LOGIN REPLICATION`));
    Object.assign(process.env, stack.awsEnv);
    // The local server cannot check a token the way RDS does. Instead the clock is frozen, which makes the
    // signer's token a function of its inputs (host, port, user, region, credentials, time): the role's
    // password is set to the token the real signer makes for these inputs, so the server accepts exactly
    // the token a connection presents, and nothing else.
    mock.timers.enable({ apis: ['Date'], now: Date.parse('2026-11-25T12:00:00Z') });
    try {
      const expected = await awsSourceAccessServices.signToken({
        hostname: '127.0.0.1',
        port: stack.postgres.port,
        username: iamRole,
        region: 'us-east-1',
      });
      await admin((client) =>
        client.query(`ALTER ROLE ${iamRole} PASSWORD ${client.escapeLiteral(expected)}`),
      );
      const tokens: string[] = [];
      const access = new SourceAccess(
        {
          databaseSecret: undefined,
          databaseSecretMaxAgeMs: 60_000,
          databaseIamAuth: true,
          tlsMode: 'auto',
          tlsCa: undefined,
        },
        {
          fetchSecret: () => Promise.reject(new Error('no secret in this test')),
          signToken: async (target) => {
            const token = await awsSourceAccessServices.signToken(target);
            tokens.push(token);
            return token;
          },
        },
      );
      const settings = {
        databaseUrl: `postgres://${iamRole}@127.0.0.1:${stack.postgres.port}/${database}`,
        access,
      };
      const replication = await ReplicationConnection.open(settings);
      assert.equal((await replication.identifySystem()).database, database);
      await replication.close();
      const client = await openSourceClient(settings);
      const who = await client.query('SELECT current_user AS who');
      assert.equal((who.rows[0] as { who: string }).who, iamRole);
      await client.end();

      assert.equal(tokens.length, 2, 'one token per connection');
      for (const token of tokens) {
        assert.equal(token, expected);
        assert.ok(
          token.startsWith(`127.0.0.1:${stack.postgres.port}/?Action=connect&DBUser=${iamRole}&`),
          token,
        );
        assert.match(token, /X-Amz-Credential=S3RVER%2F20261125%2Fus-east-1%2Frds-db%2Faws4_request/);
      }

      // A second later the signature differs: the server refuses it, as an authentication error that is not
      // retried (a token is never cached) and does not carry the token.
      mock.timers.setTime(Date.parse('2026-11-25T12:00:01Z'));
      await assert.rejects(openSourceClient(settings), (error: unknown) => {
        assert.ok(error instanceof SlotlakeError);
        assert.equal(error.kind, 'source-auth');
        assert.ok(!error.toOperatorLine().includes('X-Amz-Signature'));
        return true;
      });
      assert.equal(tokens.length, 3, 'signed once more, not retried');
      assert.notEqual(tokens[2], expected);
    } finally {
      mock.timers.reset();
    }
  });
});
