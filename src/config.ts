/**
 * Configuration: environment → one typed, validated object.
 *
 * The source database comes from `DATABASE_URL` or libpq's `PG*` variables; AWS settings come from the
 * SDK's own variables. Everything of slotlake's own is a `SLOTLAKE_*` variable, validated before anything
 * connects: an unknown `SLOTLAKE_*` name (usually a typo) or a bad value is a `config` error that names the
 * variable and what is expected. Secrets (passwords in DATABASE_URL) never appear in logs: use
 * `describeConfig()` for anything printed.
 */
import * as z from 'zod/mini';
import { en } from 'zod/locales';
import { SlotlakeError } from './errors.js';
import { parseKillSpec } from './support/kill-points.js';
import { parseTableList } from './names.js';

// zod/mini: the same validation as zod's full API in a fraction of the code loaded at every start (the full
// API brings every locale); the English messages are the ones loaded.
z.config(en());

/** Durations: `500ms`, `30s`, `5m`, `1h`; `0` alone means zero. */
export function parseDuration(text: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$/.exec(text);
  if (text.trim() === '0') return 0;
  if (!match) throw new Error(`expected a duration like 500ms, 30s, 5m or 1h, got ${JSON.stringify(text)}`);
  const value = Number(match[1]);
  const unit = match[2] as 'ms' | 's' | 'm' | 'h';
  const factor = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[unit];
  return Math.round(value * factor);
}

/** Sizes: `1000`, `64KB`, `64MiB`, `1GB` (KB/MB/GB are 1024-based, like most tools' defaults). */
export function parseSize(text: string): number {
  const match = /^\s*(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$/i.exec(text);
  if (!match) throw new Error(`expected a size like 1000, 64KiB, 64MiB or 1GiB, got ${JSON.stringify(text)}`);
  const unit = (match[2] ?? 'B').toUpperCase().replace('I', '');
  const factor = { B: 1, KB: 1024, MB: 1024 ** 2, GB: 1024 ** 3 }[unit as 'B' | 'KB' | 'MB' | 'GB'];
  return Number(match[1]) * factor;
}

/** Replication slot names: lower-case letters, digits and underscores, at most 63 (Postgres' own rule). */
const SLOT_NAME = /^[a-z0-9_]{1,63}$/;

function parsed<T>(parse: (text: string) => T) {
  return z.pipe(
    z.string(),
    z.transform((text: string, ctx) => {
      try {
        return parse(text);
      } catch (error) {
        ctx.issues.push({ code: 'custom', message: (error as Error).message, input: text });
        return z.NEVER;
      }
    }),
  );
}

const duration = parsed(parseDuration);
const size = parsed(parseSize);
const wholeNumber = z.pipe(
  z.string().check(z.regex(/^\d+$/, 'expected a whole number')),
  z.transform(Number),
);
const positiveInt = wholeNumber.check(z.refine((n) => n > 0, 'must be greater than 0'));
/** `0`, `1`, `true` or `false`. */
const flag = z.pipe(
  z.enum(['0', '1', 'true', 'false']),
  z.transform((v) => v === '1' || v === 'true'),
);

interface SettingSpec<S extends z.ZodMiniType> {
  /** The environment variable. */
  readonly env: `SLOTLAKE_${string}`;
  /** Parses the variable's text (the default is parsed the same way). */
  readonly schema: S;
  /** The default, as text; absent = unset unless given. */
  readonly default?: string;
  /** One line for the README's settings table. */
  readonly doc: string;
}

function setting<S extends z.ZodMiniType>(spec: SettingSpec<S> & { default: string }): typeof spec;
function setting<S extends z.ZodMiniType>(spec: SettingSpec<S>): typeof spec;
function setting<S extends z.ZodMiniType>(spec: SettingSpec<S>): SettingSpec<S> {
  return spec;
}

/**
 * Every SLOTLAKE_* setting: the config field it fills, its variable, how its text is parsed, its default.
 * `Config` is derived from this table, so a setting is declared once.
 */
const SETTINGS = {
  slot: setting({
    env: 'SLOTLAKE_SLOT',
    schema: z
      .string()
      .check(z.regex(SLOT_NAME, 'lower-case letters, digits and _ (max 63), as Postgres requires')),
    default: 'slotlake',
    doc: 'replication slot name',
  }),
  publication: setting({
    env: 'SLOTLAKE_PUBLICATION',
    schema: z.string().check(
      z.minLength(1),
      z.refine((name) => Buffer.byteLength(name) <= 63, 'at most 63 bytes (Postgres truncates longer names)'),
      z.refine((name) => !name.includes('\0'), 'no NUL character'),
    ),
    default: 'slotlake',
    doc: 'publication name (pgoutput), exactly as in the catalog (case and spaces kept)',
  }),
  tables: setting({
    env: 'SLOTLAKE_TABLES',
    schema: parsed(parseTableList),
    doc: 'comma list of schema.table written as in SQL (unquoted names fold to lower case; "Quoted" ones are kept), used by setup for the publication and by wal2json',
  }),
  plugin: setting({
    env: 'SLOTLAKE_PLUGIN',
    schema: z.enum(['pgoutput', 'wal2json']),
    default: 'pgoutput',
    doc: 'logical decoding output plugin',
  }),
  pipelineName: setting({
    env: 'SLOTLAKE_PIPELINE',
    schema: z.string().check(z.minLength(1), z.maxLength(255)),
    doc: 'the checkpoint key in DynamoDB (default: the slot name)',
  }),
  bucketName: setting({
    env: 'SLOTLAKE_BUCKET',
    schema: z.string().check(z.regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, 'a valid S3 bucket name')),
    doc: 'S3 bucket (required)',
  }),
  prefix: setting({
    env: 'SLOTLAKE_PREFIX',
    schema: z
      .string()
      .check(
        z.refine(
          (p) => p === '' || (p.endsWith('/') && !p.startsWith('/')),
          'empty, or ending with / (not starting with /)',
        ),
      ),
    default: '',
    doc: 'key prefix inside the bucket; empty or ending with /',
  }),
  checkpointTableName: setting({
    env: 'SLOTLAKE_CHECKPOINT_TABLE',
    schema: z.string().check(z.regex(/^[A-Za-z0-9_.-]{3,255}$/, 'a valid DynamoDB table name')),
    doc: 'DynamoDB table of the checkpoint (required)',
  }),
  format: setting({
    env: 'SLOTLAKE_FORMAT',
    schema: z.enum(['jsonl', 'parquet']),
    default: 'jsonl',
    doc: 'jsonl (gzip JSON Lines) or parquet (typed columns, contract §3.1)',
  }),
  parquetCompression: setting({
    env: 'SLOTLAKE_PARQUET_COMPRESSION',
    schema: z.enum(['zstd', 'snappy', 'gzip', 'none']),
    default: 'zstd',
    doc: 'compression of Parquet objects: zstd, snappy, gzip or none',
  }),
  batchMaxRows: setting({
    env: 'SLOTLAKE_BATCH_MAX_ROWS',
    schema: positiveInt,
    default: '500000',
    doc: 'a batch is committed once it holds this many changes (checked at transaction boundaries)',
  }),
  batchMaxBytes: setting({
    env: 'SLOTLAKE_BATCH_MAX_BYTES',
    schema: size,
    default: '256MiB',
    doc: 'a batch is committed once its records take this much (uncompressed)',
  }),
  batchMaxAgeMs: setting({
    env: 'SLOTLAKE_BATCH_MAX_AGE',
    schema: duration,
    default: '60s',
    doc: 'a batch is committed once it is this old',
  }),
  objectMaxBytes: setting({
    env: 'SLOTLAKE_OBJECT_MAX_BYTES',
    schema: size,
    default: '128MiB',
    doc: 'an object is closed (and uploaded while reading goes on) once its compressed size passes this',
  }),
  safetyMarginMs: setting({
    env: 'SLOTLAKE_SAFETY_MARGIN',
    schema: duration,
    default: '2s',
    doc: 'time kept in reserve at the end of a run, on top of the estimated flush time',
  }),
  statusIntervalMs: setting({
    env: 'SLOTLAKE_STATUS_INTERVAL',
    schema: z.pipe(
      duration,
      z.transform((ms: number) => Math.max(100, ms)),
    ),
    default: '10s',
    doc: 'standby status update interval (at least 100 ms; shortened to a third of the server wal_sender_timeout)',
  }),
  idleTimeoutMs: setting({
    env: 'SLOTLAKE_IDLE_TIMEOUT',
    schema: duration,
    doc: 'stop with `idle` after this long with nothing to archive (default: never)',
  }),
  protocolVersion: setting({
    env: 'SLOTLAKE_PROTO_VERSION',
    schema: z.pipe(
      z.enum(['1', '2', '3', '4']),
      z.transform((v) => Number(v) as 1 | 2 | 3 | 4),
    ),
    default: '1',
    doc: 'pgoutput protocol version requested',
  }),
  slotPositionPolicy: setting({
    env: 'SLOTLAKE_SLOT_POSITION_POLICY',
    schema: z.enum(['fail', 'trust-slot']),
    default: 'fail',
    doc: 'a slot ahead of the checkpoint (changes never archived): fail, or trust-slot to accept the gap',
  }),
  onSourceChange: setting({
    env: 'SLOTLAKE_ON_SOURCE_CHANGE',
    schema: z.enum(['fail', 'accept-gap', 'resnapshot']),
    default: 'fail',
    doc: 'the checkpoint was made on another database system or database: fail; accept-gap to continue from the new slot; resnapshot to continue and archive every published table again',
  }),
  snapshot: setting({
    env: 'SLOTLAKE_SNAPSHOT',
    schema: z.enum(['initial', 'never']),
    default: 'initial',
    doc: "initial: a new pipeline's first run archives every published table's existing rows (op r), chunk by chunk over the runs; never: only changes",
  }),
  snapshotChunkRows: setting({
    env: 'SLOTLAKE_SNAPSHOT_CHUNK_ROWS',
    schema: positiveInt,
    default: '50000',
    doc: 'the most rows a snapshot chunk reads (chunks adapt below it to the time left and 32 MiB of memory)',
  }),
  // ── Source access: credentials fetched at run time, IAM authentication, TLS (replication/credentials.ts) ──
  databaseSecret: setting({
    env: 'SLOTLAKE_DATABASE_SECRET',
    schema: z.string().check(z.minLength(1), z.maxLength(2048)),
    doc: 'Secrets Manager secret (ARN or name) holding the connection: RDS-style JSON {host, port, username, password, dbname} or a postgres:// URL; fetched at run time, its fields complete DATABASE_URL / PG*',
  }),
  databaseSecretMaxAgeMs: setting({
    env: 'SLOTLAKE_DATABASE_SECRET_MAX_AGE',
    schema: duration,
    default: '15m',
    doc: 'how long a fetched secret is reused by later runs in the same process; an authentication failure refetches it at once',
  }),
  databaseIamAuth: setting({
    env: 'SLOTLAKE_DATABASE_IAM_AUTH',
    schema: flag,
    default: 'false',
    doc: 'true: authenticate with an RDS IAM token (@aws-sdk/rds-signer), signed afresh for every connection, instead of a password',
  }),
  tlsMode: setting({
    env: 'SLOTLAKE_TLS_MODE',
    schema: z.enum(['auto', 'verify-full', 'verify-ca', 'require', 'disable']),
    default: 'auto',
    doc: 'auto: verify-full for RDS/Aurora hosts or when SLOTLAKE_TLS_CA is set, otherwise as DATABASE_URL sslmode / PGSSLMODE say; verify-full, verify-ca, require (encrypt, verify nothing) or disable',
  }),
  tlsCa: setting({
    env: 'SLOTLAKE_TLS_CA',
    schema: z.string().check(z.minLength(1)),
    doc: 'PEM file of the CA certificates that sign the server certificate (default for RDS/Aurora hosts: the RDS global bundle shipped in the package)',
  }),
  slotFailover: setting({
    env: 'SLOTLAKE_SLOT_FAILOVER',
    schema: flag,
    default: 'true',
    doc: 'setup creates the slot with failover = true on PostgreSQL 17+, so it is synchronized to standbys (sync_replication_slots) and survives a failover',
  }),
  // ── end of source access settings ──
  leaseDurationMs: setting({
    env: 'SLOTLAKE_LEASE_DURATION',
    schema: duration.check(
      z.refine((ms) => ms >= 2000, 'at least 2s (the run stops writing a second before the lease ends)'),
    ),
    default: '60s',
    doc: 'how long a run holds the pipeline lease without renewing it',
  }),
  spoolDir: setting({
    env: 'SLOTLAKE_SPOOL_DIR',
    schema: z.string().check(z.minLength(1)),
    doc: 'local folder for objects before upload (default: the OS temp folder)',
  }),
  readBufferBytes: setting({
    env: 'SLOTLAKE_READ_BUFFER',
    schema: size,
    default: '8MiB',
    doc: 'received frames held before reading pauses (backpressure)',
  }),
  reconnectAttempts: setting({
    env: 'SLOTLAKE_RECONNECT_ATTEMPTS',
    schema: wholeNumber,
    default: '3',
    doc: 'reconnects after a dropped Postgres connection within one run',
  }),
  killAt: setting({
    env: 'SLOTLAKE_KILL_AT',
    schema: parsed(parseKillSpec),
    doc: 'testing only: SIGKILL the process at this step (`<point>[:<occurrence>]`)',
  }),
  testTakeoverGraceMs: setting({
    env: 'SLOTLAKE_TEST_TAKEOVER_GRACE',
    schema: duration,
    doc: 'testing only: the grace waited after a taken-over lease ran out before deleting what its holder may have been uploading (default 5s: clock skew between hosts and bytes already sent)',
  }),
  testStopAfterChanges: setting({
    env: 'SLOTLAKE_TEST_STOP_AFTER_CHANGES',
    schema: positiveInt,
    doc: 'testing only: stop reading as if the deadline came once this many changes (snapshot rows included) were read',
  }),
  debugStack: setting({
    env: 'SLOTLAKE_DEBUG_STACK',
    schema: flag,
    default: '0',
    doc: 'print the stack trace of a failure after its one-line message',
  }),
  logLevel: setting({
    env: 'SLOTLAKE_LOG_LEVEL',
    schema: z.pipe(
      z.pipe(
        z.string(),
        z.transform((s: string) => s.toUpperCase()),
      ),
      z.enum(['DEBUG', 'INFO', 'WARN', 'ERROR']),
    ),
    default: 'INFO',
    doc: 'DEBUG, INFO, WARN or ERROR',
  }),
} as const;

type Settings = typeof SETTINGS;
type SettingValue<S> = S extends { schema: infer Z extends z.ZodMiniType; default: string }
  ? z.output<Z>
  : S extends { schema: infer Z extends z.ZodMiniType }
    ? z.output<Z> | undefined
    : never;

/** The validated configuration: one field per setting (derived from `SETTINGS`), plus the derived ones. */
export type Config = { readonly [K in keyof Settings]: SettingValue<Settings[K]> } & {
  /** DATABASE_URL when set; otherwise pg reads PGHOST/PGPORT/PGUSER/PGPASSWORD/PGDATABASE/PGSSLMODE itself. */
  readonly databaseUrl: string | undefined;
  /** The checkpoint's key: SLOTLAKE_PIPELINE, or the slot name. */
  readonly pipeline: string;
  /** SLOTLAKE_BUCKET ('' when a command does not need storage). */
  readonly bucket: string;
  /** SLOTLAKE_CHECKPOINT_TABLE ('' when a command does not need storage). */
  readonly checkpointTable: string;
};

export type Plugin = Config['plugin'];
export type OutputFormat = Config['format'];
export type SlotPositionPolicy = Config['slotPositionPolicy'];

export type SettingName = Settings[keyof Settings]['env'];
export const SETTING_NAMES = Object.values(SETTINGS).map((spec) => spec.env) as SettingName[];

/** Every setting with its default and description, for documentation. */
export function describeSettings(): Array<{ name: SettingName; default: string | undefined; doc: string }> {
  return Object.values(SETTINGS).map((spec) => ({
    name: spec.env,
    default: 'default' in spec ? spec.default : undefined,
    doc: spec.doc,
  }));
}

function configError(message: string): SlotlakeError {
  return new SlotlakeError(message, {
    kind: 'config',
    hint: 'fix the environment variable (see the README, "Settings"); nothing was connected',
  });
}

export interface LoadOptions {
  /** Settings every command needs: bucket and checkpoint table. */
  requireStorage?: boolean;
}

/** Reads and validates the environment. Throws a `config` SlotlakeError naming every problem. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env, options: LoadOptions = {}): Config {
  const requireStorage = options.requireStorage ?? true;
  const problems: string[] = [];
  const known = new Set<string>(SETTING_NAMES);
  for (const name of Object.keys(env).filter((n) => n.startsWith('SLOTLAKE_') && !known.has(n))) {
    // The nearest known name within 3 edits (not merely the first one: BATCH_MAX_AGES is AGE, not ROWS).
    let near: string | undefined;
    let nearDistance = 4;
    for (const candidate of SETTING_NAMES) {
      const distance = editDistance(candidate, name);
      if (distance < nearDistance) [near, nearDistance] = [candidate, distance];
    }
    problems.push(`unknown setting ${name}${near ? ` (did you mean ${near}?)` : ''}`);
  }
  const values: Record<string, unknown> = {};
  for (const [field, spec] of Object.entries(SETTINGS) as Array<[string, SettingSpec<z.ZodMiniType>]>) {
    const raw = env[spec.env];
    const text = raw === undefined || raw === '' ? spec.default : raw;
    if (text === undefined) continue;
    const result = spec.schema.safeParse(text);
    if (result.success) values[field] = result.data;
    else
      problems.push(
        `${spec.env}=${JSON.stringify(text)}: ${result.error.issues.map((i) => i.message).join('; ')}`,
      );
  }
  const invalid = (name: string) => problems.some((p) => p.startsWith(`${name}=`));
  if (requireStorage) {
    if (values.bucketName === undefined && !invalid('SLOTLAKE_BUCKET'))
      problems.push('SLOTLAKE_BUCKET is required (the S3 bucket of the archive)');
    if (values.checkpointTableName === undefined && !invalid('SLOTLAKE_CHECKPOINT_TABLE'))
      problems.push('SLOTLAKE_CHECKPOINT_TABLE is required (the DynamoDB table of the checkpoint)');
  }
  const databaseUrl = env.DATABASE_URL === '' ? undefined : env.DATABASE_URL;
  if (databaseUrl !== undefined && !/^postgres(ql)?:\/\//.test(databaseUrl))
    problems.push('DATABASE_URL must start with postgres:// or postgresql://');
  // Source access: one source of a password (see replication/credentials.ts).
  if (databaseUrl !== undefined && urlHasPassword(databaseUrl)) {
    if (values.databaseSecret !== undefined)
      problems.push(
        'DATABASE_URL carries a password and SLOTLAKE_DATABASE_SECRET is set: remove the password from DATABASE_URL (the secret provides it)',
      );
    if (values.databaseIamAuth === true)
      problems.push(
        'DATABASE_URL carries a password and SLOTLAKE_DATABASE_IAM_AUTH=true: remove the password (an IAM token is used instead)',
      );
  }
  if (problems.length > 0) throw configError(`invalid configuration: ${problems.join('; ')}`);

  const settings = values as { [K in keyof Settings]: SettingValue<Settings[K]> };
  return {
    ...settings,
    databaseUrl,
    pipeline: settings.pipelineName ?? settings.slot,
    bucket: settings.bucketName ?? '',
    checkpointTable: settings.checkpointTableName ?? '',
  };
}

/** The config without secrets, for logs and `status`. */
export function describeConfig(config: Config): Record<string, unknown> {
  return {
    ...config,
    databaseUrl: config.databaseUrl === undefined ? undefined : redactUrl(config.databaseUrl),
  };
}

/** True when a connection URL carries a password (in its userinfo or as `?password=`). */
export function urlHasPassword(url: string): boolean {
  try {
    const parsed = new URL(url);
    return parsed.password !== '' || parsed.searchParams.has('password');
  } catch {
    return /^postgres(?:ql)?:\/\/[^/?#@]*:[^/?#]*@/.test(url) || /[?&]password=/i.test(url);
  }
}

export function redactUrl(url: string): string {
  // The userinfo ends at the LAST '@' before the path/query (a raw '@' may be in the password); the user may
  // be empty; libpq also takes `?password=` in the query.
  return url
    .replace(/^(postgres(?:ql)?:\/\/[^:/?#@]*:)[^/?#]*@/, '$1***@')
    .replace(/([?&]password=)[^&#]*/gi, '$1***');
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let previous = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const current = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, previous + (a[i - 1] === b[j - 1] ? 0 : 1));
      previous = current;
    }
  }
  return row[b.length]!;
}
