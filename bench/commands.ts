/** The two readers the benchmarks time: the built `slotlake` command, and `pg_recvlogical` (the floor). */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from './build.js';
import { cleanEnvironment, runMeasured, type MeasuredRun } from './measure.js';

export const CLI = join(ROOT, 'bin', 'slotlake.js');

/**
 * Experiments only (the defaults measure slotlake as shipped): BENCH_NODE_FLAGS adds Node flags to every
 * slotlake process (e.g. `--max-semi-space-size=4`), BENCH_READ_BUFFER sets its SLOTLAKE_READ_BUFFER.
 */
export const EXPERIMENT = {
  nodeFlags: (process.env.BENCH_NODE_FLAGS ?? '').split(/\s+/).filter(Boolean),
  readBuffer: process.env.BENCH_READ_BUFFER || undefined,
};

/** `slotlake <args>` as a child process, measured. */
export function runSlotlake(
  args: readonly string[],
  env: Record<string, string>,
  timeoutMs: number,
): Promise<MeasuredRun> {
  return runMeasured(process.execPath, [...EXPERIMENT.nodeFlags, CLI, ...args], {
    env: {
      ...cleanEnvironment(),
      ...env,
      ...(EXPERIMENT.readBuffer ? { SLOTLAKE_READ_BUFFER: EXPERIMENT.readBuffer } : {}),
    },
    timeoutMs,
    cwd: ROOT,
  });
}

/** Throws with the child's own words when a slotlake run did not stop cleanly. */
export function expectCleanRun(what: string, run: MeasuredRun): Record<string, unknown> {
  if (run.code !== 0 || !run.summary) {
    const why = run.timedOut ? 'timed out' : `exited ${run.code ?? run.signal}`;
    throw new Error(`${what}: slotlake ${why}\n${run.stderrTail.slice(-4000)}`);
  }
  return run.summary;
}

const RECVLOGICAL_CANDIDATES = [
  process.env.BENCH_PG_RECVLOGICAL,
  '/usr/lib/postgresql/17/bin/pg_recvlogical',
  '/usr/lib/postgresql/16/bin/pg_recvlogical',
  '/usr/lib/postgresql/15/bin/pg_recvlogical',
  '/usr/bin/pg_recvlogical',
];

/** Where pg_recvlogical is (Debian: postgresql-client-<major>), or undefined. */
export function findPgRecvlogical(): string | undefined {
  return RECVLOGICAL_CANDIDATES.find((path): path is string => path !== undefined && existsSync(path));
}

export interface RecvlogicalOptions {
  readonly binary: string;
  readonly databaseUrl: string;
  readonly slot: string;
  readonly publication: string;
  /** Stop once the stream reaches this LSN (`X/X`). */
  readonly endpos: string;
  readonly timeoutMs: number;
  /** Where the stream is written (default /dev/null). */
  readonly outputFile?: string;
}

/**
 * Reads a pgoutput slot up to `endpos` and throws the output away: the cost of just reading the slot
 * (server-side decoding plus the transfer), with nothing decoded, encoded, compressed or uploaded.
 */
export function runPgRecvlogical(options: RecvlogicalOptions): Promise<MeasuredRun> {
  const args = [
    '-d',
    options.databaseUrl,
    '--slot',
    options.slot,
    '--start',
    '--no-loop',
    '-o',
    'proto_version=1',
    '-o',
    `publication_names=${options.publication}`,
    '--endpos',
    options.endpos,
    '-f',
    options.outputFile ?? '/dev/null',
  ];
  return runMeasured(options.binary, args, {
    env: cleanEnvironment(),
    timeoutMs: options.timeoutMs,
  });
}
