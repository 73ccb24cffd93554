/**
 * Verified TLS against a local PostgreSQL with `ssl = on`: the test makes a CA and a server certificate
 * for `localhost` with openssl. verify-full passes with that CA and host name, and fails with a clear
 * `source-tls` error for another CA or for a host the certificate does not name (127.0.0.1); verify-ca
 * checks the chain only. The CLI's run and status go through the same path.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chownSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { SlotlakeError } from '../../src/errors.js';
import { ReplicationConnection, type ConnectionSettings } from '../../src/replication/connection.js';
import { SourceAccess, type TlsMode } from '../../src/replication/credentials.js';
import { openSourceClient } from '../../src/replication/source.js';
import { runCli } from '../helpers/cli.js';
import { waitFor } from '../helpers/wait.js';
import { createPipeline, startTestStack, type Pipeline, type TestStack } from '../helpers/stack.js';

let stack: TestStack;
let pipeline: Pipeline;
let certs: string;
const CA = () => join(certs, 'ca.pem');
const OTHER_CA = () => join(certs, 'other-ca.pem');

function openssl(...args: string[]): void {
  execFileSync('openssl', args, { cwd: certs, stdio: ['ignore', 'ignore', 'pipe'] });
}

/** A CA, a second unrelated CA, and a server certificate for DNS:localhost signed by the first. */
function makeCertificates(): void {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  for (const name of ['ca', 'other-ca'])
    openssl(
      'req', '-x509', ...ec, '-keyout', `${name}.key`, '-out', `${name}.pem`, '-days', '2',
      '-subj', `/CN=slotlake test ${name}`,
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
    ); // prettier-ignore
  openssl('req', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=localhost');
  writeFileSync(
    join(certs, 'server.ext'),
    'subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n',
  );
  openssl(
    'x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
    '-out', 'server.pem', '-days', '2', '-extfile', 'server.ext',
  ); // prettier-ignore
}

before(async () => {
  stack = await startTestStack();
  certs = mkdtempSync(join(tmpdir(), 'slotlake-tls-'));
  makeCertificates();
  // The server reads its key as the postgres user and refuses a key others can read.
  if (process.getuid?.() === 0) {
    const uid = Number(execFileSync('id', ['-u', 'postgres']).toString());
    const gid = Number(execFileSync('id', ['-g', 'postgres']).toString());
    for (const file of ['server.pem', 'server.key']) chownSync(join(certs, file), uid, gid);
  }
  execFileSync('chmod', ['0600', join(certs, 'server.key')]);
  execFileSync('chmod', ['0755', certs]);
  const admin = new pg.Client({ connectionString: stack.postgres.url() });
  await admin.connect();
  await admin.query(`ALTER SYSTEM SET ssl_cert_file = '${join(certs, 'server.pem')}'`);
  await admin.query(`ALTER SYSTEM SET ssl_key_file = '${join(certs, 'server.key')}'`);
  await admin.query('ALTER SYSTEM SET ssl = on');
  await admin.query('SELECT pg_reload_conf()');
  await admin.end();
  // Wait until new connections get TLS (the reload is asynchronous).
  await waitFor('the server to accept TLS after the reload', async () => {
    const probe = new pg.Client({
      connectionString: stack.postgres.url(),
      ssl: { rejectUnauthorized: false },
    });
    const up = await probe.connect().then(
      () => true,
      () => false,
    );
    await probe.end().catch(() => undefined);
    return up;
  });
  pipeline = await createPipeline(stack, 'CREATE TABLE items (id int PRIMARY KEY, name text);', {
    SLOTLAKE_IDLE_TIMEOUT: '1s',
  });
  const setup = await runCli(['setup'], pipeline.env);
  assert.equal(setup.code, 0, setup.stderr);
});

after(async () => {
  await pipeline?.close();
  await stack?.stop();
  if (certs) rmSync(certs, { recursive: true, force: true });
});

function settings(host: string, tlsMode: TlsMode, tlsCa: string | undefined): ConnectionSettings {
  const url = new URL(pipeline.databaseUrl);
  url.hostname = host;
  return {
    databaseUrl: url.toString(),
    access: new SourceAccess({
      databaseSecret: undefined,
      databaseSecretMaxAgeMs: 60_000,
      databaseIamAuth: false,
      tlsMode,
      tlsCa,
    }),
  };
}

async function encrypted(connection: ConnectionSettings): Promise<boolean> {
  const client = await openSourceClient(connection);
  try {
    const result = await client.query('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()');
    return (result.rows[0] as { ssl: boolean }).ssl;
  } finally {
    await client.end();
  }
}

async function tlsFailure(connection: ConnectionSettings): Promise<SlotlakeError> {
  try {
    await (await openSourceClient(connection)).end();
  } catch (error) {
    assert.ok(error instanceof SlotlakeError, String(error));
    return error;
  }
  assert.fail('connected');
}

describe('verify-full', () => {
  test('passes with the CA that signed the server certificate and the host name it names', async () => {
    assert.equal(await encrypted(settings('localhost', 'verify-full', CA())), true);
    // The replication connection too.
    const replication = await ReplicationConnection.open(settings('localhost', 'verify-full', CA()));
    assert.equal((await replication.identifySystem()).database, pipeline.name);
    await replication.close();
    // auto: a CA bundle alone turns full verification on.
    assert.equal(await encrypted(settings('localhost', 'auto', CA())), true);
  });

  test('another CA: a clear source-tls error that says to set SLOTLAKE_TLS_CA', async () => {
    const error = await tlsFailure(settings('localhost', 'verify-full', OTHER_CA()));
    assert.equal(error.kind, 'source-tls');
    assert.equal(error.retryable, false);
    assert.match(error.message, /TLS verification of the server failed/);
    assert.match(error.hint ?? '', /SLOTLAKE_TLS_CA/);
    // Without a CA bundle, Node's public roots do not trust a private CA either.
    assert.equal((await tlsFailure(settings('localhost', 'verify-full', undefined))).kind, 'source-tls');
  });

  test('a host the certificate does not name: a clear source-tls error about the host name', async () => {
    const error = await tlsFailure(settings('127.0.0.1', 'verify-full', CA()));
    assert.equal(error.kind, 'source-tls');
    assert.match(error.message, /ERR_TLS_CERT_ALTNAME_INVALID/);
    assert.match(error.hint ?? '', /does not name the host/);
    assert.equal((await tlsFailure(settings('127.0.0.1', 'auto', CA()))).kind, 'source-tls');
  });

  test('verify-ca checks the chain only; require encrypts without checking; disable does not encrypt', async () => {
    assert.equal(await encrypted(settings('127.0.0.1', 'verify-ca', CA())), true);
    assert.equal((await tlsFailure(settings('127.0.0.1', 'verify-ca', OTHER_CA()))).kind, 'source-tls');
    assert.equal(await encrypted(settings('127.0.0.1', 'require', undefined)), true);
    assert.equal(await encrypted(settings('127.0.0.1', 'disable', undefined)), false);
  });
});

describe('the CLI', () => {
  test('run and status connect with verify-full; a wrong CA fails with one line saying what to do', async () => {
    const url = new URL(pipeline.databaseUrl);
    url.hostname = 'localhost';
    const env = { ...pipeline.env, DATABASE_URL: url.toString(), SLOTLAKE_TLS_CA: CA() };
    await pipeline.sql(`INSERT INTO items SELECT g, 'x' FROM generate_series(1, 12) g`);
    const run = await runCli(['run', '--until-caught-up'], env);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.summary?.changes, 12);
    const status = await runCli(['status'], env);
    assert.equal(status.code, 0, status.stderr);

    const wrong = await runCli(['run', '--until-caught-up'], { ...env, SLOTLAKE_TLS_CA: OTHER_CA() });
    assert.equal(wrong.code, 1);
    const line = wrong.stderr.trim().split('\n').at(-1) ?? '';
    assert.match(line, /^slotlake: .*TLS verification of the server failed.* — .*SLOTLAKE_TLS_CA/);
  });
});
