/**
 * The pipelines of one deployment: a declarative list (`infra/pipelines.yml`) → one validated model that
 * both deployments are generated from — the Lambda functions of `serverless.yml` and the Fargate tasks
 * of the CDK app.
 *
 * A pipeline is one source slot archived under one prefix: its name (the checkpoint key,
 * `SLOTLAKE_PIPELINE`), where its database connection comes from (a Secrets Manager secret ARN, and/or a
 * password-less URL with RDS IAM authentication), its slot, publication and tables, its schedule, its
 * prefix in the shared bucket, its alarm thresholds and any further `SLOTLAKE_*` settings. Everything a
 * pipeline may touch is derived from it here — the S3 keys under its prefix, its checkpoint item, its
 * secret, its database user — so that each function or task is granted exactly that, and nothing of
 * another pipeline. No secret value ever passes through this file: a URL with a password is refused.
 */
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { parseSize } from '../src/config.js';

/** Function names are `<service>-<stage>-<name>` (≤ 64), log groups and alarm names carry it too. */
const NAME = /^[a-z][a-z0-9-]{0,30}[a-z0-9]$/;
const SECRET_ARN =
  /^arn:aws(-[a-z]+)*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@-]+-[A-Za-z0-9]{6}$/;
const KMS_KEY_ARN = /^arn:aws(-[a-z]+)*:kms:[a-z0-9-]+:\d{12}:key\/[a-f0-9-]{36}$/;
/** `db-…` (an instance's DbiResourceId) or `cluster-…` (an Aurora cluster's resource id). */
const RDS_RESOURCE_ID = /^(db|cluster)-[A-Z0-9]+$/;
const SCHEDULE = /^(rate\(\d+ (minute|minutes|hour|hours|day|days)\)|cron\([^)]+\))$/;

const size = z.union([z.number().int().positive(), z.string()]).transform((value, ctx) => {
  if (typeof value === 'number') return value;
  try {
    return parseSize(value);
  } catch (error) {
    ctx.addIssue({ code: 'custom', message: (error as Error).message });
    return z.NEVER;
  }
});

const alarmsSchema = z
  .object({
    /** Alarm when the slot's unacknowledged WAL (`LagBytes`) stays above this for `lagPeriods` periods. */
    lagBytes: size.default(1024 ** 3),
    lagPeriods: z.number().int().min(1).max(24).default(3),
    /** Alarm when the WAL the slot keeps on the server (`RetainedWalBytes`) passes this. */
    retainedWalBytes: size.default(10 * 1024 ** 3),
    /** Alarm when no run succeeded for this many schedule periods. */
    missedRuns: z.number().int().min(1).max(24).default(3),
    /** Alarm period in seconds; default: the schedule's rate (required for cron schedules). */
    periodSeconds: z.number().int().min(60).multipleOf(60).optional(),
  })
  .strict();

const settingsSchema = z.record(
  z.string().regex(/^SLOTLAKE_[A-Z0-9_]+$/, 'a SLOTLAKE_* setting name'),
  z.union([z.string(), z.number(), z.boolean()]).transform(String),
);

const pipelineSchema = z
  .object({
    name: z
      .string()
      .regex(NAME, 'lower-case letters, digits and -, 2 to 32 characters, starting with a letter'),
    /** Secrets Manager secret (full ARN) with the connection: RDS JSON or a URL. */
    databaseSecret: z.string().regex(SECRET_ARN, 'the full ARN of a Secrets Manager secret').optional(),
    /** The customer-managed KMS key of the secret, if it has one (kms:Decrypt via Secrets Manager). */
    databaseSecretKmsKey: z.string().regex(KMS_KEY_ARN, 'the ARN of a KMS key').optional(),
    /** A connection URL without a password (host, port, user, database); the secret or IAM gives the rest. */
    databaseUrl: z
      .string()
      .regex(/^postgres(ql)?:\/\//, 'a postgres:// URL')
      .refine((url) => {
        try {
          const parsed = new URL(url);
          return parsed.password === '' && !parsed.searchParams.has('password');
        } catch {
          return false;
        }
      }, 'a parseable URL without a password (keep passwords in the secret)')
      .optional(),
    /** RDS IAM authentication: the instance's DbiResourceId or the cluster's resource id, and the user. */
    iamAuth: z
      .object({
        resourceId: z.string().regex(RDS_RESOURCE_ID, 'db-… or cluster-… (the resource id, not the name)'),
        user: z.string().regex(/^[A-Za-z_][A-Za-z0-9_$]{0,62}$/, 'a database user name'),
      })
      .strict()
      .optional(),
    slot: z.string().regex(/^[a-z0-9_]{1,63}$/, 'a replication slot name'),
    publication: z.string().min(1).max(63),
    tables: z.array(z.string().min(3)).min(1).optional(),
    schedule: z.string().regex(SCHEDULE, 'rate(N minutes|hours|days) or cron(...)'),
    scheduleEnabled: z.boolean().default(true),
    prefix: z
      .string()
      .regex(/^([A-Za-z0-9!_.*'()-]+\/)+$/, 'non-empty, ending with /, no leading /')
      .optional(),
    /** VPC attachment (most RDS / Aurora instances are reachable only inside their VPC). */
    vpc: z
      .object({ subnetIds: z.array(z.string()).min(1), securityGroupIds: z.array(z.string()).min(1) })
      .strict()
      .optional(),
    /** Fargate only: a task per schedule tick, or an always-on service (`slotlake run` with no deadline). */
    fargate: z
      .object({
        mode: z.enum(['scheduled', 'service']).default('scheduled'),
        cpu: z.number().int().default(512),
        memoryMiB: z.number().int().default(1024),
        /** The budget of a scheduled run (`--max-duration`); keep it shorter than the schedule interval. */
        maxDuration: z.string().default('4m'),
      })
      .strict()
      .default({ mode: 'scheduled', cpu: 512, memoryMiB: 1024, maxDuration: '4m' }),
    alarms: alarmsSchema.default({
      lagBytes: 1024 ** 3,
      lagPeriods: 3,
      retainedWalBytes: 10 * 1024 ** 3,
      missedRuns: 3,
    }),
    settings: settingsSchema.default({}),
  })
  .strict()
  .superRefine((pipeline, ctx) => {
    if (pipeline.databaseSecret === undefined && pipeline.iamAuth === undefined)
      ctx.addIssue({
        code: 'custom',
        message: 'needs databaseSecret, or iamAuth with a databaseUrl: a deployment never holds a password',
      });
    if (
      pipeline.iamAuth !== undefined &&
      pipeline.databaseUrl === undefined &&
      pipeline.databaseSecret === undefined
    )
      ctx.addIssue({
        code: 'custom',
        message: 'iamAuth needs a databaseUrl (or a secret) naming host and database',
      });
    if (pipeline.iamAuth !== undefined && pipeline.databaseUrl !== undefined) {
      const user = decodeURIComponent(new URL(pipeline.databaseUrl).username);
      if (user !== pipeline.iamAuth.user)
        ctx.addIssue({ code: 'custom', message: `databaseUrl's user (${user}) differs from iamAuth.user` });
    }
    for (const reserved of Object.keys(pipeline.settings).filter((name) => RESERVED_SETTINGS.has(name)))
      ctx.addIssue({
        code: 'custom',
        message: `settings: ${reserved} is set from the pipeline's own fields`,
      });
    if (pipeline.schedule.startsWith('cron(') && pipeline.alarms.periodSeconds === undefined)
      ctx.addIssue({
        code: 'custom',
        message: 'a cron schedule needs alarms.periodSeconds (the run interval)',
      });
  });

/** Settings the deployment sets from a pipeline's fields (or its resources), not from `settings`. */
const RESERVED_SETTINGS = new Set([
  'SLOTLAKE_PIPELINE',
  'SLOTLAKE_SLOT',
  'SLOTLAKE_PUBLICATION',
  'SLOTLAKE_TABLES',
  'SLOTLAKE_PREFIX',
  'SLOTLAKE_BUCKET',
  'SLOTLAKE_CHECKPOINT_TABLE',
  'SLOTLAKE_DATABASE_SECRET',
  'SLOTLAKE_DATABASE_IAM_AUTH',
]);

const fileSchema = z
  .object({
    /** Fields every pipeline gets unless it sets them (merged one level deep). */
    defaults: z.record(z.string(), z.unknown()).default({}),
    pipelines: z.array(z.record(z.string(), z.unknown())).min(1),
  })
  .strict();

export type PipelineInput = z.input<typeof pipelineSchema>;

/** One pipeline, validated, with everything derived from it. */
export interface Pipeline {
  readonly name: string;
  /** PascalCase of the name, for CloudFormation logical ids (`orders-eu` → `OrdersEu`). */
  readonly id: string;
  readonly databaseSecret: string | undefined;
  readonly databaseSecretKmsKey: string | undefined;
  readonly databaseUrl: string | undefined;
  readonly iamAuth: { readonly resourceId: string; readonly user: string } | undefined;
  readonly slot: string;
  readonly publication: string;
  readonly tables: readonly string[] | undefined;
  readonly schedule: string;
  readonly scheduleEnabled: boolean;
  readonly prefix: string;
  readonly vpc:
    { readonly subnetIds: readonly string[]; readonly securityGroupIds: readonly string[] } | undefined;
  readonly fargate: {
    readonly mode: 'scheduled' | 'service';
    readonly cpu: number;
    readonly memoryMiB: number;
    readonly maxDuration: string;
  };
  readonly alarms: {
    readonly lagBytes: number;
    readonly lagPeriods: number;
    readonly retainedWalBytes: number;
    readonly missedRuns: number;
    /** The alarm period: the schedule's interval (at least 60 s). */
    readonly periodSeconds: number;
  };
  /** The settings of the pipeline's process, except the bucket and table (resources of the stack). */
  readonly environment: Readonly<Record<string, string>>;
}

/** The interval of a `rate(...)` schedule in seconds. */
export function scheduleSeconds(schedule: string): number | undefined {
  const match = /^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$/.exec(schedule);
  if (!match) return undefined;
  const unit = match[2]!.replace(/s$/, '') as 'minute' | 'hour' | 'day';
  return Number(match[1]) * { minute: 60, hour: 3600, day: 86400 }[unit];
}

function pascal(name: string): string {
  return name
    .split('-')
    .map((part) => part.charAt(0).toUpperCase() + part.slice(1))
    .join('');
}

function derive(input: z.output<typeof pipelineSchema>): Pipeline {
  const prefix = input.prefix ?? `${input.name}/`;
  const environment: Record<string, string> = {
    SLOTLAKE_PIPELINE: input.name,
    SLOTLAKE_SLOT: input.slot,
    SLOTLAKE_PUBLICATION: input.publication,
    SLOTLAKE_PREFIX: prefix,
    ...(input.tables ? { SLOTLAKE_TABLES: input.tables.join(',') } : {}),
    ...(input.databaseSecret ? { SLOTLAKE_DATABASE_SECRET: input.databaseSecret } : {}),
    ...(input.databaseUrl ? { DATABASE_URL: input.databaseUrl } : {}),
    ...(input.iamAuth ? { SLOTLAKE_DATABASE_IAM_AUTH: 'true' } : {}),
    SLOTLAKE_IDLE_TIMEOUT: '60s',
    ...input.settings,
  };
  const periodSeconds = input.alarms.periodSeconds ?? Math.max(60, scheduleSeconds(input.schedule) ?? 3600);
  return {
    name: input.name,
    id: pascal(input.name),
    databaseSecret: input.databaseSecret,
    databaseSecretKmsKey: input.databaseSecretKmsKey,
    databaseUrl: input.databaseUrl,
    iamAuth: input.iamAuth,
    slot: input.slot,
    publication: input.publication,
    tables: input.tables,
    schedule: input.schedule,
    scheduleEnabled: input.scheduleEnabled,
    prefix,
    vpc: input.vpc,
    fargate: input.fargate,
    alarms: { ...input.alarms, periodSeconds },
    environment,
  };
}

export class PipelineListError extends Error {
  override readonly name = 'PipelineListError';
}

/** Validates a parsed pipeline list; every problem is reported, with the pipeline and field it is in. */
export function pipelinesFrom(document: unknown, source = 'the pipeline list'): Pipeline[] {
  const file = fileSchema.safeParse(document);
  if (!file.success)
    throw new PipelineListError(
      `${source}: ${file.error.issues.map((i) => `${i.path.join('.') || '(top)'}: ${i.message}`).join('; ')}`,
    );
  const problems: string[] = [];
  const pipelines: Pipeline[] = [];
  file.data.pipelines.forEach((entry, index) => {
    const merged: Record<string, unknown> = { ...file.data.defaults };
    for (const [key, value] of Object.entries(entry)) {
      const base = merged[key];
      merged[key] =
        base &&
        typeof base === 'object' &&
        !Array.isArray(base) &&
        value &&
        typeof value === 'object' &&
        !Array.isArray(value)
          ? { ...base, ...value }
          : value;
    }
    const result = pipelineSchema.safeParse(merged);
    const label = typeof entry.name === 'string' ? entry.name : `#${index + 1}`;
    if (!result.success)
      for (const issue of result.error.issues)
        problems.push(
          `pipeline ${label}: ${issue.path.length ? `${issue.path.join('.')}: ` : ''}${issue.message}`,
        );
    else pipelines.push(derive(result.data));
  });
  const seen = (key: (p: Pipeline) => string, what: string) => {
    const values = pipelines.map(key);
    for (const duplicate of new Set(values.filter((value, i) => values.indexOf(value) !== i)))
      problems.push(`two pipelines have the same ${what} ${duplicate}`);
  };
  seen((p) => p.name, 'name');
  seen((p) => p.id, 'logical id');
  // One consumer per slot, one checkpoint per key, disjoint prefixes (a prefix inside another would let
  // one pipeline's grant reach the other's objects).
  seen((p) => `${p.databaseSecret ?? p.databaseUrl}#${p.slot}`, 'source and slot');
  for (const a of pipelines)
    for (const b of pipelines)
      if (a !== b && b.prefix.startsWith(a.prefix))
        problems.push(`the prefix ${b.prefix} of ${b.name} lies inside the prefix ${a.prefix} of ${a.name}`);
  if (problems.length > 0) throw new PipelineListError(`${source}: ${problems.join('; ')}`);
  return pipelines;
}

/** Reads and validates a pipeline list file (YAML or JSON). */
export function loadPipelines(path: string): Pipeline[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new PipelineListError(`${path}: ${(error as Error).message}`);
  }
  return pipelinesFrom(parseYaml(text), path);
}
