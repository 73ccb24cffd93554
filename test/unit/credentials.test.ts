/**
 * Source access without a server: RDS host detection, the shipped RDS CA bundle, the TLS policy per mode,
 * reading a secret (RDS JSON or URL) without ever echoing it, the connection parameters a secret and an
 * IAM token produce, the real RDS signer's token shape, and the TLS error classification.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { before, describe, it } from 'node:test';
import type { ConnectionOptions } from 'node:tls';
import { loadConfig } from '../../src/config.js';
import { classify, SlotlakeError } from '../../src/errors.js';
import { clientConfig } from '../../src/replication/connection.js';
import {
  awsSourceAccessServices,
  isRdsHost,
  loadRdsCaBundle,
  parseSecret,
  rdsCaBundle,
  rdsRegion,
  SourceAccess,
  tlsOptions,
  type SourceAccessServices,
  type SourceAccessSettings,
  type TokenTarget,
} from '../../src/replication/credentials.js';

const POLICY: SourceAccessSettings = {
  databaseSecret: undefined,
  databaseSecretMaxAgeMs: 60_000,
  databaseIamAuth: false,
  tlsMode: 'auto',
  tlsCa: undefined,
};
const SECRET_ARN = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:slotlake/shop-AbCdEf';
const RDS_HOST = 'shop.c9akciq32.eu-west-1.rds.amazonaws.com';

function thrown(run: () => unknown): SlotlakeError {
  try {
    run();
  } catch (error) {
    assert.ok(error instanceof SlotlakeError, String(error));
    return error;
  }
  assert.fail('did not throw');
}

async function rejected(run: () => Promise<unknown>): Promise<SlotlakeError> {
  try {
    await run();
  } catch (error) {
    assert.ok(error instanceof SlotlakeError, String(error));
    return error;
  }
  assert.fail('did not reject');
}

describe('RDS hosts', () => {
  it('recognizes instance, cluster, GovCloud and China endpoints, and nothing else', () => {
    for (const host of [
      RDS_HOST,
      'orders.cluster-c9akciq32.us-east-1.rds.amazonaws.com',
      'orders.cluster-ro-c9akciq32.us-east-1.rds.amazonaws.com',
      'db.abc.us-gov-west-1.rds.amazonaws.com',
      'db.abc.rds.cn-north-1.amazonaws.com.cn',
    ])
      assert.ok(isRdsHost(host), host);
    for (const host of ['localhost', '127.0.0.1', 'db.example.com', 'rds.amazonaws.com.evil.com', undefined])
      assert.ok(!isRdsHost(host), String(host));
    assert.equal(rdsRegion(RDS_HOST), 'eu-west-1');
    assert.equal(rdsRegion('db.abc.us-gov-west-1.rds.amazonaws.com'), 'us-gov-west-1');
    assert.equal(rdsRegion('db.abc.rds.cn-north-1.amazonaws.com.cn'), 'cn-north-1');
    assert.equal(rdsRegion('db.example.com'), undefined);
  });

  it('ships the RDS global CA bundle: Amazon RDS root CAs of every generation, current ones valid today', async () => {
    const bundle = await loadRdsCaBundle();
    assert.equal(rdsCaBundle(), bundle);
    assert.ok(bundle.length >= 100, `${bundle.length} certificates`);
    const certificates = bundle.map((pem) => new X509Certificate(pem));
    const names = certificates.map((c) => /CN=([^\n]+)/.exec(c.subject)?.[1] ?? '');
    assert.ok(
      names.every((name) => name.startsWith('Amazon RDS')),
      'only Amazon RDS CAs',
    );
    for (const generation of ['Root CA RSA2048 G1', 'Root CA RSA4096 G1', 'Root CA ECC384 G1'])
      assert.ok(names.includes(`Amazon RDS us-east-1 ${generation}`), generation);
    assert.ok(certificates.every((c) => c.ca));
    const now = Date.now();
    assert.ok(certificates.some((c) => Date.parse(c.validTo) > now + 365 * 86_400_000));
  });
});

describe('TLS policy', () => {
  before(() => loadRdsCaBundle());
  it('auto: verify-full against the RDS bundle for an RDS host, the connection string elsewhere', () => {
    const rds = tlsOptions('auto', RDS_HOST, undefined) as ConnectionOptions;
    assert.equal(rds.rejectUnauthorized, true);
    assert.equal(rds.servername, RDS_HOST);
    assert.equal(rds.ca, rdsCaBundle());
    assert.equal(rds.checkServerIdentity, undefined, "Node's own host-name check");
    assert.equal(tlsOptions('auto', 'db.example.com', undefined), undefined);
    assert.equal(tlsOptions('auto', '127.0.0.1', undefined), undefined);
  });

  it('auto with SLOTLAKE_TLS_CA: verify-full with that bundle, for any host; no SNI for an IP address', () => {
    const options = tlsOptions('auto', '127.0.0.1', 'PEM') as ConnectionOptions;
    assert.equal(options.ca, 'PEM');
    assert.equal(options.rejectUnauthorized, true);
    assert.equal(options.servername, undefined);
    assert.equal((tlsOptions('auto', RDS_HOST, 'PEM') as ConnectionOptions).ca, 'PEM');
  });

  it('the explicit modes', () => {
    const full = tlsOptions('verify-full', 'db.example.com', undefined) as ConnectionOptions;
    assert.equal(full.rejectUnauthorized, true);
    assert.equal(full.ca, undefined, "Node's root store");
    const ca = tlsOptions('verify-ca', 'db.example.com', 'PEM') as ConnectionOptions;
    assert.equal(ca.rejectUnauthorized, true);
    assert.equal(typeof ca.checkServerIdentity, 'function');
    assert.deepEqual(tlsOptions('require', RDS_HOST, undefined), { rejectUnauthorized: false });
    assert.equal(tlsOptions('disable', RDS_HOST, undefined), false);
    const error = thrown(() => tlsOptions('verify-ca', 'db.example.com', undefined));
    assert.equal(error.kind, 'config');
    assert.match(error.hint ?? '', /SLOTLAKE_TLS_CA/);
  });

  it("keeps the connection string's client certificate", () => {
    const options = tlsOptions('verify-full', RDS_HOST, undefined, {
      cert: 'C',
      key: 'K',
    }) as ConnectionOptions;
    assert.equal(options.cert, 'C');
    assert.equal(options.key, 'K');
  });

  it('an unreadable SLOTLAKE_TLS_CA is a config error naming the file', async () => {
    const access = new SourceAccess({ ...POLICY, tlsCa: '/nonexistent/ca.pem' });
    const error = await rejected(() => access.endpoint('postgres://u@db.example.com/app'));
    assert.equal(error.kind, 'config');
    assert.match(error.message, /\/nonexistent\/ca\.pem cannot be read \(ENOENT\)/);
  });
});

describe('secrets', () => {
  const PASSWORD = 'p4ss-W0rd/with@odd:chars';

  it('reads the RDS JSON format and a URL', () => {
    assert.deepEqual(
      parseSecret(
        SECRET_ARN,
        JSON.stringify({
          username: 'slotlake',
          password: PASSWORD,
          engine: 'postgres',
          host: RDS_HOST,
          port: 5432,
          dbname: 'shop',
          dbInstanceIdentifier: 'shop',
        }),
      ),
      { host: RDS_HOST, port: 5432, user: 'slotlake', password: PASSWORD, database: 'shop' },
    );
    assert.deepEqual(parseSecret(SECRET_ARN, JSON.stringify({ username: 'u', password: PASSWORD })), {
      user: 'u',
      password: PASSWORD,
    });
    assert.deepEqual(parseSecret(SECRET_ARN, JSON.stringify({ port: '6432' })), { port: 6432 });
    assert.deepEqual(
      parseSecret(SECRET_ARN, `postgres://slotlake:${encodeURIComponent(PASSWORD)}@${RDS_HOST}:5433/shop`),
      { host: RDS_HOST, port: 5433, user: 'slotlake', password: PASSWORD, database: 'shop' },
    );
  });

  it('says what is wrong with a secret without ever quoting it', () => {
    for (const value of [
      `not json ${PASSWORD}`,
      `{"password": "${PASSWORD}"`,
      JSON.stringify([PASSWORD]),
      JSON.stringify({ password: PASSWORD, port: 'x' }),
      JSON.stringify({ password: PASSWORD, username: 7 }),
    ]) {
      const error = thrown(() => parseSecret(SECRET_ARN, value));
      assert.equal(error.kind, 'config');
      assert.ok(error.message.includes(SECRET_ARN), error.message);
      for (const text of [error.message, error.hint ?? '', error.toOperatorLine()])
        assert.ok(!text.includes(PASSWORD) && !text.includes('p4ss'), `no secret in: ${text}`);
    }
  });

  function services(values: string[], calls: { refresh: boolean }[] = []): SourceAccessServices {
    return {
      fetchSecret: async (secretId, options) => {
        assert.equal(secretId, SECRET_ARN);
        calls.push({ refresh: options.refresh });
        return values[Math.min(calls.length - 1, values.length - 1)]!;
      },
      signToken: () => Promise.reject(new Error('not used')),
    };
  }

  it("completes DATABASE_URL with the secret's values; the secret wins; URL parameters stay", async () => {
    const calls: { refresh: boolean }[] = [];
    const access = new SourceAccess(
      { ...POLICY, databaseSecret: SECRET_ARN },
      services([JSON.stringify({ username: 'slotlake', password: PASSWORD, port: 5433 })], calls),
    );
    const endpoint = await access.endpoint(
      'postgres://admin@db.example.com:5432/shop?application_name=etl&options=-c%20work_mem%3D8MB',
    );
    assert.ok(endpoint);
    assert.equal(endpoint.host, 'db.example.com');
    assert.equal(endpoint.port, 5433);
    assert.equal(endpoint.user, 'slotlake');
    assert.equal(endpoint.database, 'shop');
    assert.equal(endpoint.password, PASSWORD);
    assert.equal(endpoint.options, '-c work_mem=8MB');
    assert.deepEqual(endpoint.parameters, { application_name: 'etl' });
    assert.equal(endpoint.ssl, undefined, 'not an RDS host: TLS as the URL says');
    assert.ok(access.refreshable);
    await access.endpoint(undefined, true);
    assert.deepEqual(calls, [{ refresh: false }, { refresh: true }]);

    // clientConfig: no connection string (its values would win), the session settings after the options.
    const config = clientConfig(
      { databaseUrl: 'postgres://ignored@x/y', applicationName: 'slotlake:p' },
      true,
      endpoint,
    );
    assert.equal((config as { connectionString?: string }).connectionString, undefined);
    assert.equal(config.host, 'db.example.com');
    assert.equal(config.password, PASSWORD);
    assert.equal((config as { application_name?: string }).application_name, 'etl');
    assert.match((config as { options?: string }).options ?? '', /^-c work_mem=8MB -c DateStyle=ISO/);
    assert.equal((config as { replication?: string }).replication, 'database');
  });

  it('connections opening together fetch the secret once, and refetch it once when refused together', async () => {
    const calls: { refresh: boolean }[] = [];
    const rotated = JSON.stringify({ username: 'slotlake', password: 'rotated' });
    const access = new SourceAccess(
      { ...POLICY, databaseSecret: SECRET_ARN },
      services([JSON.stringify({ username: 'slotlake', password: PASSWORD }), rotated], calls),
    );
    const url = 'postgres://db.example.com/shop';
    const [a, b] = await Promise.all([access.endpoint(url), access.endpoint(url)]);
    assert.deepEqual(calls, [{ refresh: false }], 'one fetch for both');
    assert.equal(a?.password, PASSWORD);
    assert.equal(b?.password, PASSWORD);
    // Both refused: the first refetches; the second, refused with the same value, shares the newer one.
    const again = await access.endpoint(url, a);
    assert.equal(again?.password, 'rotated');
    const shared = await access.endpoint(url, b);
    assert.equal(shared?.password, 'rotated');
    assert.deepEqual(
      calls.map((call) => call.refresh),
      [false, true, false],
      'one forced refetch; the second refusal reads the refetched value (a cache hit in Powertools)',
    );
    // Refused again with the refetched value: that one is refetched.
    await access.endpoint(url, shared);
    assert.deepEqual(calls.at(-1), { refresh: true });
  });

  it('an RDS host from the secret gets verify-full; a secret without a password is an error', async () => {
    const access = new SourceAccess(
      { ...POLICY, databaseSecret: SECRET_ARN },
      services([JSON.stringify({ host: RDS_HOST, username: 'u', password: PASSWORD, dbname: 'shop' })]),
    );
    const endpoint = await access.endpoint(undefined);
    assert.equal((endpoint?.ssl as ConnectionOptions).servername, RDS_HOST);
    const noPassword = new SourceAccess(
      { ...POLICY, databaseSecret: SECRET_ARN },
      services([JSON.stringify({ username: 'u' })]),
    );
    const error = await rejected(() => noPassword.endpoint('postgres://db.example.com/shop'));
    assert.match(error.message, /has no "password"/);
  });

  it('a failed fetch says which secret and what to grant', async () => {
    const denied = Object.assign(new Error('User: arn:aws:sts::1:assumed-role/x is not authorized'), {
      name: 'AccessDeniedException',
      $metadata: { httpStatusCode: 400 },
    });
    const missing = Object.assign(new Error("Secrets Manager can't find the specified secret."), {
      name: 'ResourceNotFoundException',
      $metadata: { httpStatusCode: 400 },
    });
    for (const [cause, kind, hint] of [
      [denied, 'access-denied', /secretsmanager:GetSecretValue/],
      [missing, 'config', /SLOTLAKE_DATABASE_SECRET/],
    ] as const) {
      const access = new SourceAccess(
        { ...POLICY, databaseSecret: SECRET_ARN },
        {
          fetchSecret: () => Promise.reject(new Error('wrapped', { cause })),
          signToken: () => Promise.reject(new Error('unused')),
        },
      );
      const error = await rejected(() => access.endpoint(undefined));
      assert.equal(error.kind, kind);
      assert.ok(error.message.includes(SECRET_ARN));
      assert.match(error.hint ?? '', hint);
    }
  });
});

describe('IAM authentication', () => {
  it('signs a token for the host, port, user and region of each connection, as the password', async () => {
    const targets: TokenTarget[] = [];
    const access = new SourceAccess(
      { ...POLICY, databaseIamAuth: true },
      {
        fetchSecret: () => Promise.reject(new Error('unused')),
        signToken: async (target) => {
          targets.push(target);
          return `token-${targets.length}`;
        },
      },
    );
    const endpoint = await access.endpoint(`postgres://slotlake_iam@${RDS_HOST}:5432/shop`);
    assert.ok(endpoint);
    assert.equal(typeof endpoint.password, 'function');
    const password = endpoint.password as () => Promise<string>;
    assert.equal(await password(), 'token-1');
    assert.equal(await password(), 'token-2', 'a fresh token every time node-postgres asks');
    assert.deepEqual(targets[0], {
      hostname: RDS_HOST,
      port: 5432,
      username: 'slotlake_iam',
      region: 'eu-west-1',
    });
    assert.equal((endpoint.ssl as ConnectionOptions).rejectUnauthorized, true, 'verify-full on RDS');
    assert.ok(!access.refreshable, 'a token is never cached, so there is nothing to refetch');
  });

  it('a host that names no region needs AWS_REGION', async () => {
    const access = new SourceAccess({ ...POLICY, databaseIamAuth: true });
    const saved = [process.env.AWS_REGION, process.env.AWS_DEFAULT_REGION];
    delete process.env.AWS_REGION;
    delete process.env.AWS_DEFAULT_REGION;
    try {
      const error = await rejected(() => access.endpoint('postgres://u@db.example.com/shop'));
      assert.equal(error.kind, 'config');
      assert.match(error.hint ?? '', /AWS_REGION/);
    } finally {
      if (saved[0] !== undefined) process.env.AWS_REGION = saved[0];
      if (saved[1] !== undefined) process.env.AWS_DEFAULT_REGION = saved[1];
    }
  });

  it('the RDS signer (@aws-sdk/rds-signer) returns a SigV4 presigned connect URL for rds-db', async () => {
    const saved = { ...process.env };
    Object.assign(process.env, {
      AWS_ACCESS_KEY_ID: 'AKIDEXAMPLE',
      AWS_SECRET_ACCESS_KEY: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY',
    });
    delete process.env.AWS_SESSION_TOKEN;
    delete process.env.AWS_PROFILE;
    try {
      const token = await awsSourceAccessServices.signToken({
        hostname: RDS_HOST,
        port: 5432,
        username: 'slotlake_iam',
        region: 'eu-west-1',
      });
      // The documented form: <host>:<port>/?Action=connect&DBUser=<user>&X-Amz-...; no scheme.
      assert.ok(token.startsWith(`${RDS_HOST}:5432/?`), token.slice(0, 80));
      const query = new URLSearchParams(token.slice(token.indexOf('?') + 1));
      assert.equal(query.get('Action'), 'connect');
      assert.equal(query.get('DBUser'), 'slotlake_iam');
      assert.equal(query.get('X-Amz-Algorithm'), 'AWS4-HMAC-SHA256');
      assert.match(
        query.get('X-Amz-Credential') ?? '',
        /^AKIDEXAMPLE\/\d{8}\/eu-west-1\/rds-db\/aws4_request$/,
      );
      assert.equal(query.get('X-Amz-Expires'), '900');
      assert.equal(query.get('X-Amz-SignedHeaders'), 'host');
      assert.match(query.get('X-Amz-Signature') ?? '', /^[0-9a-f]{64}$/);
    } finally {
      for (const key of Object.keys(process.env)) if (!(key in saved)) delete process.env[key];
      Object.assign(process.env, saved);
    }
  });

  it('a signing failure is an AWS credentials error, not a dropped connection', async () => {
    const access = new SourceAccess(
      { ...POLICY, databaseIamAuth: true },
      {
        fetchSecret: () => Promise.reject(new Error('unused')),
        signToken: () =>
          Promise.reject(
            Object.assign(new Error('Could not load credentials'), { name: 'CredentialsProviderError' }),
          ),
      },
    );
    const endpoint = await access.endpoint(`postgres://u@${RDS_HOST}/shop`);
    const error = await rejected(() => (endpoint!.password as () => Promise<string>)());
    assert.equal(error.kind, 'aws-auth');
    assert.equal(classify(error, { origin: 'source' }), error, 'passes through the connection classify');
  });
});

describe('no policy: the connection string as it is', () => {
  it('adds nothing for a local URL without secret, IAM or TLS settings', async () => {
    assert.equal(await new SourceAccess(POLICY).endpoint('postgres://u:p@127.0.0.1:5432/db'), undefined);
    assert.equal(await new SourceAccess(POLICY).endpoint(undefined), undefined);
  });
});

describe('settings', () => {
  const STORAGE = { SLOTLAKE_BUCKET: 'my-lake', SLOTLAKE_CHECKPOINT_TABLE: 'slotlake-checkpoints' };

  it('parses the access settings', () => {
    const config = loadConfig({
      ...STORAGE,
      SLOTLAKE_DATABASE_SECRET: SECRET_ARN,
      SLOTLAKE_DATABASE_SECRET_MAX_AGE: '5m',
      SLOTLAKE_TLS_MODE: 'verify-ca',
      SLOTLAKE_TLS_CA: '/etc/ca.pem',
      SLOTLAKE_SLOT_FAILOVER: 'false',
      DATABASE_URL: 'postgres://slotlake@db.example.com/shop',
    });
    assert.equal(config.databaseSecret, SECRET_ARN);
    assert.equal(config.databaseSecretMaxAgeMs, 300_000);
    assert.equal(config.tlsMode, 'verify-ca');
    assert.equal(config.tlsCa, '/etc/ca.pem');
    assert.equal(config.slotFailover, false);
    assert.equal(loadConfig({ ...STORAGE, SLOTLAKE_DATABASE_IAM_AUTH: 'true' }).databaseIamAuth, true);
  });

  it('refuses two sources of a password, without printing it', () => {
    for (const extra of [{ SLOTLAKE_DATABASE_SECRET: SECRET_ARN }, { SLOTLAKE_DATABASE_IAM_AUTH: 'true' }]) {
      const error = thrown(() =>
        loadConfig({ ...STORAGE, ...extra, DATABASE_URL: 'postgres://u:hunter2@db.example.com/shop' }),
      );
      assert.equal(error.kind, 'config');
      assert.match(error.message, /remove the password/);
      assert.ok(!error.message.includes('hunter2'));
    }
    assert.equal(thrown(() => loadConfig({ ...STORAGE, SLOTLAKE_TLS_MODE: 'prefer' })).kind, 'config');
  });
});

describe('TLS failures are classified', () => {
  it('an untrusted chain and a host-name mismatch are source-tls errors with the fix, not retried', () => {
    for (const [code, hint] of [
      ['SELF_SIGNED_CERT_IN_CHAIN', /SLOTLAKE_TLS_CA/],
      ['UNABLE_TO_VERIFY_LEAF_SIGNATURE', /SLOTLAKE_TLS_CA/],
      ['ERR_TLS_CERT_ALTNAME_INVALID', /host name|names the host|name in the certificate/],
    ] as const) {
      const error = classify(Object.assign(new Error('boom'), { code }), {
        origin: 'source',
        what: 'connecting',
      });
      assert.equal(error.kind, 'source-tls', code);
      assert.equal(error.retryable, false);
      assert.match(error.hint ?? '', hint);
      assert.match(error.message, new RegExp(code));
    }
  });
});

describe('the access the environment describes', () => {
  it('reads only the access settings, and is one instance per policy', async () => {
    const { sourceAccessFromEnvironment } = await import('../../src/replication/credentials.js');
    const env = {
      SLOTLAKE_DATABASE_SECRET: SECRET_ARN,
      SLOTLAKE_TLS_MODE: 'verify-full',
      SLOTLAKE_BATCH_MAX_ROWS: 'not a number', // not an access setting: not this function's business
    };
    const access = sourceAccessFromEnvironment(env);
    assert.equal(access.settings.databaseSecret, SECRET_ARN);
    assert.equal(access.settings.tlsMode, 'verify-full');
    assert.equal(sourceAccessFromEnvironment({ ...env }), access, 'cached: the secret cache lives on');
    assert.equal(sourceAccessFromEnvironment({}).settings.tlsMode, 'auto');
  });
});
