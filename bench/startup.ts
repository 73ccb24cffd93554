/**
 * The fixed cost of a run: what a scheduled run pays before it archives anything.
 *
 * - **CLI, nothing to do**: `run --until-caught-up` on a pipeline whose slot holds nothing, as a fresh
 *   process: the time from process start to the `streaming` log line (the summary's `startup.processMs`)
 *   and the wall time to exit. The shipped command (`bin/slotlake.js`: one bundled file, V8's compile cache
 *   warm from the runs before), the same without the compile cache (`NODE_DISABLE_COMPILE_CACHE=1`: a first
 *   run, or a fresh container), and the TypeScript compiler's output (`dist/entrypoints/cli.js`, every module
 *   loaded from its own file under `node_modules`): what bundling and the cache each save.
 * - **Lambda cold start**: a fresh process (`bench/lambda-cold-start.mjs`) imports the handler and invokes it
 *   once with nothing to do (`SLOTLAKE_IDLE_TIMEOUT=0`: the run stops at its first quiet wait), with the
 *   `NODE_OPTIONS` serverless.yml gives the function. The packaged handler is the bundle copied alone into an
 *   empty folder, as the zip holds it (nothing resolves from `node_modules`); next to it the compiler's
 *   `dist/entrypoints/lambda.js` with `node_modules`. Reported: the import, the first invocation, and the
 *   invocation's own time to streaming.
 *
 * The variants alternate within each round, on one pipeline (runs are sequential; each takes and releases
 * the lease). Checks: every run exits cleanly with nothing archived.
 */
import { copyFileSync, existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { createPipeline, type TestStack } from '../test/helpers/stack.js';
import { ROOT } from './build.js';
import { EXPERIMENT, expectCleanRun } from './commands.js';
import { cleanEnvironment, runMeasured } from './measure.js';
import { spread, type Spread } from './throughput.js';

/** What serverless.yml sets for every function (provider.environment.NODE_OPTIONS). */
const LAMBDA_NODE_OPTIONS = '--enable-source-maps';
const TIMEOUT_MS = 120_000;
const COLD_START = join(ROOT, 'bench', 'lambda-cold-start.mjs');

/** The Lambda artifact's handler file (serverless.yml packages it alone). */
export const LAMBDA_BUNDLE = join(ROOT, 'dist', 'bundle', 'lambda.mjs');
const CLI_BUNDLE = join(ROOT, 'dist', 'bundle', 'cli.mjs');

interface CliVariant {
  readonly name: string;
  /** The file Node runs. */
  readonly file: string;
  /** The file that must exist for the variant to be measured. */
  readonly requires: string;
  readonly env?: Record<string, string>;
}

const CLI_VARIANTS: readonly CliVariant[] = [
  {
    name: 'bin/slotlake.js (one bundled file)',
    file: join(ROOT, 'bin', 'slotlake.js'),
    requires: CLI_BUNDLE,
  },
  {
    name: 'bin/slotlake.js, no compile cache',
    file: join(ROOT, 'bin', 'slotlake.js'),
    requires: CLI_BUNDLE,
    env: { NODE_DISABLE_COMPILE_CACHE: '1' },
  },
  {
    name: 'dist/entrypoints/cli.js (modules)',
    file: join(ROOT, 'dist', 'entrypoints', 'cli.js'),
    requires: join(ROOT, 'dist', 'entrypoints', 'cli.js'),
  },
];

interface LambdaVariant {
  readonly name: string;
  readonly file: string;
  /** Copy the file (and its source map) alone into an empty folder before each cold start. */
  readonly alone: boolean;
}

const LAMBDA_VARIANTS: readonly LambdaVariant[] = [
  { name: 'packaged bundle (one file, alone)', file: LAMBDA_BUNDLE, alone: true },
  {
    name: 'dist/entrypoints/lambda.js (modules)',
    file: join(ROOT, 'dist', 'entrypoints', 'lambda.js'),
    alone: false,
  },
];

export interface CliStartup {
  readonly variant: string;
  /** Process start → the `streaming` log line. */
  readonly startupMs: Spread;
  /** Process start → exit. */
  readonly wallMs: Spread;
}

export interface LambdaColdStart {
  readonly variant: string;
  /** True for the packaged bundle: the one file is the whole handler. */
  readonly bundle: boolean;
  /** The handler file's size (the bundle: one file; its source map apart). */
  readonly bytes: number;
  readonly sourceMapBytes: number | undefined;
  /** Node's own start: process start → the handler's import begins. */
  readonly nodeMs: Spread;
  /** `await import(handler)` in a fresh process. */
  readonly importMs: Spread;
  /** The first invocation, nothing to do: handler entry → return. */
  readonly invokeMs: Spread;
  /** The first invocation's run: its start → streaming. */
  readonly invokeToStreamingMs: Spread;
}

export interface StartupResult {
  readonly runs: number;
  readonly cli: readonly CliStartup[];
  readonly lambda: readonly LambdaColdStart[];
  readonly skipped: readonly string[];
  readonly problems: readonly string[];
  readonly ok: boolean;
}

export interface StartupOptions {
  readonly runs: number;
  readonly log: (line: string) => void;
}

function rotate<T>(items: readonly T[], by: number): T[] {
  return items.map((_, i) => items[(i + by) % items.length]!);
}

function sizeOf(path: string): number | undefined {
  try {
    return statSync(path).size;
  } catch {
    return undefined;
  }
}

export async function benchStartup(stack: TestStack, options: StartupOptions): Promise<StartupResult> {
  const { log } = options;
  log(`startup: fixed cost of a run with nothing to do, ${options.runs} runs per variant…`);
  const pipeline = await createPipeline(stack, 'CREATE TABLE nothing (id int PRIMARY KEY)', {
    SLOTLAKE_LOG_LEVEL: 'ERROR',
  });
  const scratch = mkdtempSync(join(tmpdir(), 'slotlake-bench-startup-'));
  const problems: string[] = [];
  const skipped: string[] = [];
  const childEnv = (extra: Record<string, string>) => ({ ...cleanEnvironment(), ...pipeline.env, ...extra });
  try {
    const cli = CLI_VARIANTS.filter((variant) => {
      if (existsSync(variant.requires)) return true;
      skipped.push(`${variant.name}: ${variant.requires} is not built`);
      return false;
    });
    const lambda = LAMBDA_VARIANTS.filter((variant) => {
      if (existsSync(variant.file)) return true;
      skipped.push(`${variant.name}: ${variant.file} is not built`);
      return false;
    });
    for (const line of skipped) log(`  skipped ${line}`);
    const runCli = (variant: CliVariant) =>
      runMeasured(process.execPath, [...EXPERIMENT.nodeFlags, variant.file, 'run', '--until-caught-up'], {
        env: childEnv(variant.env ?? {}),
        timeoutMs: TIMEOUT_MS,
        cwd: ROOT,
      });
    // setup, and a first run that stores the checkpoint: every measured run then has nothing to do
    const command = (args: string[]) =>
      runMeasured(process.execPath, [join(ROOT, 'bin', 'slotlake.js'), ...args], {
        env: childEnv({}),
        timeoutMs: TIMEOUT_MS,
        cwd: ROOT,
      });
    expectCleanRun('slotlake setup (startup)', await command(['setup']));
    expectCleanRun('slotlake run (startup, first)', await command(['run', '--until-caught-up']));

    const cliRuns = new Map<string, { startupMs: number[]; wallMs: number[] }>();
    const coldStarts = new Map<
      string,
      { nodeMs: number[]; importMs: number[]; invokeMs: number[]; invokeToStreamingMs: number[] }
    >();
    for (let round = 1; round <= options.runs; round++) {
      const line: string[] = [];
      for (const variant of rotate(cli, round)) {
        const run = await runCli(variant);
        const summary = expectCleanRun(`slotlake run (${variant.name})`, run);
        const startup = summary.startup as { processMs?: number } | null | undefined;
        if (Number(summary.changes) !== 0 || summary.stopReason !== 'caught-up')
          problems.push(
            `${variant.name} round ${round}: ${String(summary.changes)} changes (${String(summary.stopReason)})`,
          );
        if (startup?.processMs === undefined) {
          problems.push(`${variant.name} round ${round}: the summary has no startup figure`);
          continue;
        }
        const figures = cliRuns.get(variant.name) ?? { startupMs: [], wallMs: [] };
        figures.startupMs.push(startup.processMs);
        figures.wallMs.push(run.wallMs);
        cliRuns.set(variant.name, figures);
        line.push(
          `${variant.name.split(' (')[0]!} ${Math.round(startup.processMs)}/${Math.round(run.wallMs)} ms`,
        );
      }
      for (const variant of rotate(lambda, round)) {
        let file = variant.file;
        if (variant.alone) {
          const dir = mkdtempSync(join(scratch, 'artifact-'));
          file = join(dir, basename(variant.file));
          copyFileSync(variant.file, file);
          if (existsSync(`${variant.file}.map`)) copyFileSync(`${variant.file}.map`, `${file}.map`);
        }
        const run = await runMeasured(process.execPath, [COLD_START], {
          env: childEnv({
            COLD_START_HANDLER: file,
            NODE_OPTIONS: LAMBDA_NODE_OPTIONS,
            SLOTLAKE_IDLE_TIMEOUT: '0',
          }),
          timeoutMs: TIMEOUT_MS,
          cwd: scratch,
        });
        const result = run.summary as
          | {
              processMs: number;
              importMs: number;
              invokeMs: number;
              summary: Record<string, unknown>;
            }
          | undefined;
        if (run.code !== 0 || !result)
          throw new Error(
            `cold start of ${variant.name}: exited ${run.code ?? run.signal}\n${run.stderrTail.slice(-4000)}`,
          );
        const summary = result.summary;
        if (Number(summary.changes) !== 0 || summary.stopReason !== 'idle')
          problems.push(
            `${variant.name} round ${round}: ${String(summary.changes)} changes (${String(summary.stopReason)})`,
          );
        const startup = summary.startup as { runMs?: number } | null | undefined;
        const figures = coldStarts.get(variant.name) ?? {
          nodeMs: [],
          importMs: [],
          invokeMs: [],
          invokeToStreamingMs: [],
        };
        figures.nodeMs.push(result.processMs);
        figures.importMs.push(result.importMs);
        figures.invokeMs.push(result.invokeMs);
        if (startup?.runMs !== undefined) figures.invokeToStreamingMs.push(startup.runMs);
        coldStarts.set(variant.name, figures);
        line.push(
          `${variant.name.split(' ')[0]!} ${Math.round(result.importMs)}+${Math.round(result.invokeMs)} ms`,
        );
      }
      log(`  round ${round}: ${line.join(', ')}`);
    }
    return {
      runs: options.runs,
      cli: [...cliRuns].map(([variant, figures]) => ({
        variant,
        startupMs: spread(figures.startupMs),
        wallMs: spread(figures.wallMs),
      })),
      lambda: lambda
        .filter((variant) => coldStarts.has(variant.name))
        .map((variant) => {
          const figures = coldStarts.get(variant.name)!;
          return {
            variant: variant.name,
            bundle: variant.alone,
            bytes: sizeOf(variant.file) ?? 0,
            sourceMapBytes: sizeOf(`${variant.file}.map`),
            nodeMs: spread(figures.nodeMs),
            importMs: spread(figures.importMs),
            invokeMs: spread(figures.invokeMs),
            invokeToStreamingMs: spread(
              figures.invokeToStreamingMs.length ? figures.invokeToStreamingMs : [NaN],
            ),
          };
        }),
      skipped,
      problems,
      ok: problems.length === 0,
    };
  } finally {
    rmSync(scratch, { recursive: true, force: true });
    await pipeline
      .sql('SELECT pg_drop_replication_slot($1)', [pipeline.env.SLOTLAKE_SLOT])
      .catch(() => undefined);
    await pipeline.close();
  }
}

const num = (value: number, digits = 0) =>
  value.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
const range = (s: Spread) => `${num(s.median)} (${num(s.min)}–${num(s.max)})`;

export function printStartup(result: StartupResult, log: (line: string) => void): void {
  log('');
  log(`Startup: fixed cost of a run with nothing to do; median (min–max) of ${result.runs} runs, ms`);
  if (result.cli.length > 0) {
    const width = Math.max(...result.cli.map((c) => c.variant.length), 30);
    log(`  ${'CLI `run --until-caught-up`'.padEnd(width)}  ${'to streaming'.padEnd(18)}  wall (to exit)`);
    for (const c of result.cli)
      log(`  ${c.variant.padEnd(width)}  ${range(c.startupMs).padEnd(18)}  ${range(c.wallMs)}`);
  }
  if (result.lambda.length > 0) {
    const width = Math.max(...result.lambda.map((c) => c.variant.length), 30);
    log(
      `  ${'Lambda cold start'.padEnd(width)}  ${'node start'.padEnd(14)}  ${'import'.padEnd(14)}  ${'first invocation'.padEnd(18)}  (of which to streaming)`,
    );
    for (const c of result.lambda)
      log(
        `  ${c.variant.padEnd(width)}  ${range(c.nodeMs).padEnd(14)}  ${range(c.importMs).padEnd(14)}  ${range(c.invokeMs).padEnd(18)}  ${range(c.invokeToStreamingMs)}`,
      );
    for (const c of result.lambda.filter((c) => c.bundle))
      log(
        `  ${c.variant}: ${num(c.bytes / 1e6, 2)} MB` +
          (c.sourceMapBytes === undefined ? '' : ` (+ ${num(c.sourceMapBytes / 1e6, 2)} MB source map)`),
      );
  }
  for (const line of result.skipped) log(`  skipped ${line}`);
  log(`  correctness     ${result.ok ? 'OK' : `FAILED: ${result.problems.join('; ')}`}`);
}
