/** Runs the built `slotlake` command as a child process, as a user or a scheduler would. */
import { spawn, type ChildProcess } from 'node:child_process';
import { DynamoDBClient, GetItemCommand } from '@aws-sdk/client-dynamodb';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const CLI = fileURLToPath(new URL('../../bin/slotlake.js', import.meta.url));
const BUILT = fileURLToPath(new URL('../../dist/bundle/cli.mjs', import.meta.url));

export interface CliResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly elapsedMs: number;
  /** The last stdout line parsed as JSON (the run summary), if any. */
  readonly summary: Record<string, unknown> | undefined;
  /** True when this helper killed the child because it outlived its timeout. */
  readonly timedOut: boolean;
  /** The same as `timedOut` (the name the fault tests use). */
  readonly killedByTimeout: boolean;
  /** The kill point the child announced on stderr before it SIGKILLed itself (src/support/kill-points.ts). */
  readonly killPoint: string | undefined;
}

export interface CliOptions {
  /** The child is SIGKILLed (and `timedOut` set) after this long; 120 s by default. */
  readonly timeoutMs?: number;
}

const KILL_LINE = /^slotlake: kill point (\S+) reached: SIGKILL$/m;

/** A timeout in milliseconds, or options. */
export type CliTimeout = number | CliOptions;

function cliOptions(timeout: CliTimeout): CliOptions {
  return typeof timeout === 'number' ? { timeoutMs: timeout } : timeout;
}

export function runCli(
  args: string[],
  env: Record<string, string>,
  timeout: CliTimeout = {},
): Promise<CliResult> {
  return startCli(args, env, timeout).result;
}

/** A `slotlake` child process still running. */
export interface RunningCli {
  /** The child (to signal it directly, e.g. SIGSTOP/SIGCONT). */
  readonly child: ChildProcess;
  /** stderr so far (JSON log lines, and the failure line). */
  stderr(): string;
  /** Settles when the process ended. */
  readonly result: Promise<CliResult>;
  /** True once the process ended. */
  readonly ended: boolean;
  /** Sends a signal unless the process already ended (SIGTERM: the run drains and stops with `signal`). */
  kill(signal: NodeJS.Signals): void;
}

/** Starts `slotlake <args>` and returns at once (see runCli and RunningCli). */
export function startCli(args: string[], env: Record<string, string>, timeout: CliTimeout = {}): RunningCli {
  const timeoutMs = cliOptions(timeout).timeoutMs ?? 120_000;
  if (!existsSync(BUILT)) throw new Error('dist/ is missing: run `npm run build` first (npm test does)');
  const cleanEnv: Record<string, string> = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (
      value !== undefined &&
      !key.startsWith('SLOTLAKE_') &&
      !key.startsWith('AWS_') &&
      !key.startsWith('PG')
    )
      cleanEnv[key] = value;
  }
  delete cleanEnv.DATABASE_URL;
  delete cleanEnv.NODE_OPTIONS;
  const started = performance.now();
  const child = spawn(process.execPath, [CLI, ...args], {
    env: { ...cleanEnv, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  let ended = false;
  const result = new Promise<CliResult>((resolve, reject) => {
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      // A stopped (SIGSTOP) process must be killable too.
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (error) => {
      clearTimeout(timer);
      ended = true;
      reject(error);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      ended = true;
      const lines = stdout.trim().split('\n').filter(Boolean);
      let summary: Record<string, unknown> | undefined;
      try {
        summary = lines.length
          ? (JSON.parse(lines[lines.length - 1]!) as Record<string, unknown>)
          : undefined;
      } catch {
        summary = undefined;
      }
      resolve({
        code,
        signal,
        stdout,
        stderr,
        elapsedMs: performance.now() - started,
        summary,
        timedOut,
        killedByTimeout: timedOut,
        killPoint: KILL_LINE.exec(stderr)?.[1],
      });
    });
  });
  return {
    child,
    stderr: () => stderr,
    result,
    get ended() {
      return ended;
    },
    kill: (signal) => {
      if (!ended) child.kill(signal);
    },
  };
}

/** The JSON log lines a run wrote on stderr (the failure line, which is not JSON, is left out). */
export function logLines(stderr: string): Array<Record<string, unknown>> {
  const lines: Array<Record<string, unknown>> = [];
  for (const line of stderr.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      lines.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      // not a log line
    }
  }
  return lines;
}

/** The lines on stderr that are not JSON log lines: a failed run prints exactly one, its reason. */
export function failureLines(stderr: string): string[] {
  return stderr.split('\n').filter((line) => line.trim() !== '' && !line.startsWith('{'));
}

/** The `kind` fields of the run's JSON log lines on stderr (e.g. `lease-lost`), in order. */
export function loggedKinds(result: CliResult): string[] {
  return logLines(result.stderr)
    .map((line) => line.kind)
    .filter((kind): kind is string => typeof kind === 'string');
}

export interface LeaseWaitOptions extends CliOptions {
  /** Give up (failing the test) when no run got the lease within this long; 60 s by default. */
  readonly withinMs?: number;
}

/**
 * Runs `slotlake <args>` again while it reports `lease-held` (an earlier run's lease, e.g. of a killed run,
 * is still running out), up to `withinMs`; returns the first run that did not find the lease held.
 */
export async function runWhenLeaseFree(
  args: string[],
  env: Record<string, string>,
  options: LeaseWaitOptions = {},
): Promise<CliResult> {
  const withinMs = options.withinMs ?? 60_000;
  const started = performance.now();
  for (let attempt = 1; ; attempt++) {
    const result = await runCli(args, env, options);
    if (result.summary?.stopReason !== 'lease-held') return result;
    if (performance.now() - started > withinMs)
      throw new Error(
        `the pipeline lease stayed held for ${withinMs} ms (${attempt} runs): ${result.stdout}`,
      );
    // Rather than starting run after run while it is held: wait until the stored lease has run out.
    await leaseRunsOut(env, Math.max(0, withinMs - (performance.now() - started)));
  }
}

/**
 * Resolves once the pipeline lease stored in DynamoDB (the environment's endpoint, table and pipeline key)
 * has run out on this machine's clock — the condition the next run's acquisition checks — or is not held;
 * re-read every 100 ms, since a live holder's renewals move it. At most `withinMs`: the caller's run then
 * reports what it finds.
 */
export async function leaseRunsOut(env: Record<string, string>, withinMs: number): Promise<void> {
  const endpoint = env.AWS_ENDPOINT_URL_DYNAMODB;
  const table = env.SLOTLAKE_CHECKPOINT_TABLE;
  const key = env.SLOTLAKE_PIPELINE ?? env.SLOTLAKE_SLOT;
  if (!endpoint || !table || !key) return;
  const client = new DynamoDBClient({
    endpoint,
    region: env.AWS_REGION ?? 'us-east-1',
    credentials: {
      accessKeyId: env.AWS_ACCESS_KEY_ID ?? 'test',
      secretAccessKey: env.AWS_SECRET_ACCESS_KEY ?? 'test',
    },
  });
  const started = performance.now();
  try {
    while (performance.now() - started < withinMs) {
      const { Item: item } = await client.send(
        new GetItemCommand({ TableName: table, Key: { pk: { S: key } }, ConsistentRead: true }),
      );
      const expiresAtMs = Number(item?.leaseExpiresAt?.N ?? '0');
      if (item?.leaseOwner === undefined || expiresAtMs < Date.now()) return;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  } finally {
    client.destroy();
  }
}

/** A run armed to die at a kill point that ended another way (the result tells how). */
export class KillPointMissed extends Error {
  constructor(
    message: string,
    readonly result: CliResult,
  ) {
    super(message);
  }
}

/** Milliseconds a killed run may take to reach its kill point before the test fails. */
export const KILLED_RUN_BUDGET_MS = 60_000;

export interface KillOptions extends LeaseWaitOptions {
  /**
   * Runs that failed with `lease-lost` before the kill point (their renewals late on a loaded machine: a
   * handled outcome, not the scenario) are armed again, up to this many times; 2 by default.
   */
  readonly leaseLostRetries?: number;
}

/** A killed run, and how many runs before it lost their lease before reaching the kill point. */
export type KilledRun = CliResult & { readonly leaseLostRuns: number };

/**
 * Runs with `SLOTLAKE_KILL_AT=<spec>` (`point[:occurrence]`), waiting out a held lease first, and asserts
 * the run died at that kill point: its announcement on stderr, then SIGKILL, within `timeoutMs`
 * (KILLED_RUN_BUDGET_MS by default) — a run that hangs or ends before its kill point fails the test (a run
 * that lost its lease first is armed again, see KillOptions).
 */
export async function runKilledAt(
  args: string[],
  env: Record<string, string>,
  spec: string,
  options: KillOptions = {},
): Promise<KilledRun> {
  const point = spec.split(':')[0];
  const retries = options.leaseLostRetries ?? 2;
  for (let leaseLostRuns = 0; ; leaseLostRuns++) {
    const result = await runWhenLeaseFree(
      args,
      { ...env, SLOTLAKE_KILL_AT: spec },
      { timeoutMs: KILLED_RUN_BUDGET_MS, ...options },
    );
    const outcome = `exit ${result.code}, signal ${result.signal}, stop ${String(result.summary?.stopReason)}`;
    if (result.timedOut)
      throw new KillPointMissed(
        `the run armed to die at ${spec} hung and was killed by the test (${outcome}):\n${result.stderr}`,
        result,
      );
    if (result.killPoint === point && result.signal === 'SIGKILL') return { ...result, leaseLostRuns };
    if (result.code === 1 && loggedKinds(result).includes('lease-lost') && leaseLostRuns < retries) continue;
    throw new KillPointMissed(
      `the run armed to die at ${spec} did not (${outcome}, kill point ${String(result.killPoint)}):\n${result.stderr}`,
      result,
    );
  }
}
