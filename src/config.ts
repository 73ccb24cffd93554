/**
 * Configuration: environment → one typed, validated object.
 *
 * The source database comes from `DATABASE_URL` or libpq's `PG*` variables; AWS settings come from the
 * SDK's own variables. Everything of slotlake's own is a `SLOTLAKE_*` variable, validated before anything
 * connects: an unknown `SLOTLAKE_*` name (usually a typo) or a bad value is a `config` error that names the
 * variable and what is expected. Secrets (passwords in DATABASE_URL) never appear in logs: use
 * `describeConfig()` for anything printed.
 */
import { z } from 'zod';
import { SlotlakeError } from './errors.js';
import { parseKillSpec, type KillPoint } from './support/kill-points.js';

export type Plugin = 'pgoutput' | 'wal2json';
export type OutputFormat = 'jsonl' | 'parquet';
export type SlotPositionPolicy = 'fail' | 'trust-slot';

export interface Config {
  /** DATABASE_URL when set; otherwise pg reads PGHOST/PGPORT/PGUSER/PGPASSWORD/PGDATABASE/PGSSLMODE itself. */
  readonly databaseUrl: string | undefined;
  readonly slot: string;
  readonly publication: string;
  /** `schema.table` names for `setup`; undefined = all tables. */
  readonly tables: readonly string[] | undefined;
  readonly plugin: Plugin;
  readonly pipeline: string;
  readonly bucket: string;
  readonly prefix: string;
  readonly checkpointTable: string;
  readonly format: OutputFormat;
  /** Batch rotation, checked at transaction boundaries. */
  readonly batchMaxRows: number;
  readonly batchMaxBytes: number;
  readonly batchMaxAgeMs: number;
  /** An object is closed (and its upload started) once its compressed size passes this. */
  readonly objectMaxBytes: number;
  /** Time kept in reserve at the end of a run, on top of the estimated flush time. */
  readonly safetyMarginMs: number;
  /** Standby status update interval. */
  readonly statusIntervalMs: number;
  /** Stop with `idle` after this long with nothing to archive once caught up; undefined = never. */
  readonly idleTimeoutMs: number | undefined;
  /** pgoutput protocol version requested. */
  readonly protocolVersion: 1 | 2 | 3 | 4;
  /** What to do when the slot is ahead of the checkpoint. */
  readonly slotPositionPolicy: SlotPositionPolicy;
  /** How long a run's lease lasts without renewal. */
  readonly leaseDurationMs: number;
  /** Local folder for compressed objects before upload. */
  readonly spoolDir: string | undefined;
  /** Bytes of received frames held before reading pauses (backpressure). */
  readonly readBufferBytes: number;
  /** Reconnects after a dropped Postgres connection within one run. */
  readonly reconnectAttempts: number;
  /** Testing only: stop reading as if the deadline came, once this run archived this many changes. */
  readonly testStopAfterChanges: number | undefined;
  /** Testing only: SIGKILL the process at this step. */
  readonly killAt: { point: KillPoint; occurrence: number } | undefined;
  readonly logLevel: 'DEBUG' | 'INFO' | 'WARN' | 'ERROR';
}

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
/** Publication names: plain identifiers; quoted when used, but kept simple so they are never ambiguous. */
const PUBLICATION_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;
const TABLE_NAME = /^[A-Za-z_][A-Za-z0-9_$]*\.[A-Za-z_][A-Za-z0-9_$]*$/;

const duration = z.string().transform((text, ctx) => {
  try {
    return parseDuration(text);
  } catch (error) {
    ctx.addIssue({ code: 'custom', message: (error as Error).message });
    return z.NEVER;
  }
});
const size = z.string().transform((text, ctx) => {
  try {
    return parseSize(text);
  } catch (error) {
    ctx.addIssue({ code: 'custom', message: (error as Error).message });
    return z.NEVER;
  }
});
const positiveInt = z
  .string()
  .regex(/^\d+$/, 'expected a whole number')
  .transform(Number)
  .refine((n) => n > 0, 'must be greater than 0');

/** Every SLOTLAKE_* variable slotlake knows, with its schema and default (as text, parsed like user input). */
const SETTINGS = {
  SLOTLAKE_SLOT: {
    schema: z.string().regex(SLOT_NAME, 'lower-case letters, digits and _ (max 63)'),
    default: 'slotlake',
  },
  SLOTLAKE_PUBLICATION: {
    schema: z.string().regex(PUBLICATION_NAME, 'a plain identifier: letters, digits and _ (max 63)'),
    default: 'slotlake',
  },
  SLOTLAKE_TABLES: {
    schema: z
      .string()
      .transform((text) =>
        text
          .split(',')
          .map((name) => name.trim())
          .filter((name) => name !== ''),
      )
      .pipe(z.array(z.string().regex(TABLE_NAME, 'each table as schema.table')).min(1)),
    default: undefined,
  },
  SLOTLAKE_PLUGIN: { schema: z.enum(['pgoutput', 'wal2json']), default: 'pgoutput' },
  SLOTLAKE_PIPELINE: { schema: z.string().min(1).max(255), default: undefined },
  SLOTLAKE_BUCKET: {
    schema: z.string().regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, 'a valid S3 bucket name'),
    default: undefined,
  },
  SLOTLAKE_PREFIX: {
    schema: z
      .string()
      .refine(
        (p) => p === '' || (p.endsWith('/') && !p.startsWith('/')),
        'empty, or ending with / (not starting with /)',
      ),
    default: '',
  },
  SLOTLAKE_CHECKPOINT_TABLE: {
    schema: z.string().regex(/^[A-Za-z0-9_.-]{3,255}$/, 'a valid DynamoDB table name'),
    default: undefined,
  },
  SLOTLAKE_FORMAT: { schema: z.enum(['jsonl', 'parquet']), default: 'jsonl' },
  SLOTLAKE_BATCH_MAX_ROWS: { schema: positiveInt, default: '500000' },
  SLOTLAKE_BATCH_MAX_BYTES: { schema: size, default: '256MiB' },
  SLOTLAKE_BATCH_MAX_AGE: { schema: duration, default: '60s' },
  SLOTLAKE_OBJECT_MAX_BYTES: { schema: size, default: '128MiB' },
  SLOTLAKE_SAFETY_MARGIN: { schema: duration, default: '2s' },
  SLOTLAKE_STATUS_INTERVAL: { schema: duration, default: '10s' },
  SLOTLAKE_IDLE_TIMEOUT: { schema: duration, default: undefined },
  SLOTLAKE_PROTO_VERSION: { schema: z.enum(['1', '2', '3', '4']).transform(Number), default: '1' },
  SLOTLAKE_SLOT_POSITION_POLICY: { schema: z.enum(['fail', 'trust-slot']), default: 'fail' },
  SLOTLAKE_LEASE_DURATION: { schema: duration, default: '60s' },
  SLOTLAKE_SPOOL_DIR: { schema: z.string().min(1), default: undefined },
  SLOTLAKE_READ_BUFFER: { schema: size, default: '8MiB' },
  SLOTLAKE_RECONNECT_ATTEMPTS: {
    schema: z.string().regex(/^\d+$/, 'expected a whole number').transform(Number),
    default: '3',
  },
  SLOTLAKE_KILL_AT: {
    schema: z.string().transform((text, ctx) => {
      try {
        return parseKillSpec(text);
      } catch (error) {
        ctx.addIssue({ code: 'custom', message: (error as Error).message });
        return z.NEVER;
      }
    }),
    default: undefined,
  },
  SLOTLAKE_TEST_STOP_AFTER_CHANGES: { schema: positiveInt, default: undefined },
  SLOTLAKE_DEBUG_STACK: { schema: z.enum(['0', '1', 'true', 'false']), default: undefined },
  SLOTLAKE_LOG_LEVEL: {
    schema: z
      .string()
      .transform((s) => s.toUpperCase())
      .pipe(z.enum(['DEBUG', 'INFO', 'WARN', 'ERROR'])),
    default: 'INFO',
  },
} as const;

export type SettingName = keyof typeof SETTINGS;
export const SETTING_NAMES = Object.keys(SETTINGS) as SettingName[];

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
  const unknown = Object.keys(env).filter((name) => name.startsWith('SLOTLAKE_') && !(name in SETTINGS));
  for (const name of unknown) {
    // The nearest known name within 3 edits (not merely the first one: BATCH_MAX_AGES is AGE, not ROWS).
    let near: SettingName | undefined;
    let nearDistance = 4;
    for (const known of SETTING_NAMES) {
      const distance = editDistance(known, name);
      if (distance < nearDistance) [near, nearDistance] = [known, distance];
    }
    problems.push(`unknown setting ${name}${near ? ` (did you mean ${near}?)` : ''}`);
  }
  const values: Record<string, unknown> = {};
  for (const name of SETTING_NAMES) {
    const setting = SETTINGS[name];
    const raw = env[name];
    const text = raw === undefined || raw === '' ? setting.default : raw;
    if (text === undefined) {
      values[name] = undefined;
      continue;
    }
    const parsed = (setting.schema as z.ZodType).safeParse(text);
    if (parsed.success) values[name] = parsed.data;
    else
      problems.push(
        `${name}=${JSON.stringify(text)}: ${parsed.error.issues.map((i) => i.message).join('; ')}`,
      );
  }
  if (requireStorage) {
    if (values.SLOTLAKE_BUCKET === undefined && !problems.some((p) => p.startsWith('SLOTLAKE_BUCKET')))
      problems.push('SLOTLAKE_BUCKET is required (the S3 bucket of the archive)');
    if (
      values.SLOTLAKE_CHECKPOINT_TABLE === undefined &&
      !problems.some((p) => p.startsWith('SLOTLAKE_CHECKPOINT_TABLE'))
    )
      problems.push('SLOTLAKE_CHECKPOINT_TABLE is required (the DynamoDB table of the checkpoint)');
  }
  const databaseUrl = env.DATABASE_URL === '' ? undefined : env.DATABASE_URL;
  if (databaseUrl !== undefined && !/^postgres(ql)?:\/\//.test(databaseUrl))
    problems.push('DATABASE_URL must start with postgres:// or postgresql://');
  if (values.SLOTLAKE_FORMAT === 'parquet')
    problems.push('SLOTLAKE_FORMAT=parquet is not available in this version; use jsonl (the default)');
  if (problems.length > 0) throw configError(`invalid configuration: ${problems.join('; ')}`);

  const slot = values.SLOTLAKE_SLOT as string;
  return {
    databaseUrl,
    slot,
    publication: values.SLOTLAKE_PUBLICATION as string,
    tables: values.SLOTLAKE_TABLES as string[] | undefined,
    plugin: values.SLOTLAKE_PLUGIN as Plugin,
    pipeline: (values.SLOTLAKE_PIPELINE as string | undefined) ?? slot,
    bucket: (values.SLOTLAKE_BUCKET as string | undefined) ?? '',
    prefix: values.SLOTLAKE_PREFIX as string,
    checkpointTable: (values.SLOTLAKE_CHECKPOINT_TABLE as string | undefined) ?? '',
    format: values.SLOTLAKE_FORMAT as OutputFormat,
    batchMaxRows: values.SLOTLAKE_BATCH_MAX_ROWS as number,
    batchMaxBytes: values.SLOTLAKE_BATCH_MAX_BYTES as number,
    batchMaxAgeMs: values.SLOTLAKE_BATCH_MAX_AGE as number,
    objectMaxBytes: values.SLOTLAKE_OBJECT_MAX_BYTES as number,
    safetyMarginMs: values.SLOTLAKE_SAFETY_MARGIN as number,
    statusIntervalMs: Math.max(100, values.SLOTLAKE_STATUS_INTERVAL as number),
    idleTimeoutMs: values.SLOTLAKE_IDLE_TIMEOUT as number | undefined,
    protocolVersion: values.SLOTLAKE_PROTO_VERSION as 1 | 2 | 3 | 4,
    slotPositionPolicy: values.SLOTLAKE_SLOT_POSITION_POLICY as SlotPositionPolicy,
    leaseDurationMs: values.SLOTLAKE_LEASE_DURATION as number,
    spoolDir: values.SLOTLAKE_SPOOL_DIR as string | undefined,
    readBufferBytes: values.SLOTLAKE_READ_BUFFER as number,
    reconnectAttempts: values.SLOTLAKE_RECONNECT_ATTEMPTS as number,
    killAt: values.SLOTLAKE_KILL_AT as Config['killAt'],
    testStopAfterChanges: values.SLOTLAKE_TEST_STOP_AFTER_CHANGES as number | undefined,
    logLevel: values.SLOTLAKE_LOG_LEVEL as Config['logLevel'],
  };
}

/** The config without secrets, for logs and `status`. */
export function describeConfig(config: Config): Record<string, unknown> {
  return {
    ...config,
    databaseUrl: config.databaseUrl === undefined ? undefined : redactUrl(config.databaseUrl),
  };
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
