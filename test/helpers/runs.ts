/** Helpers around `slotlake` runs: reading their stderr (JSON log lines, the operator line), retrying past a lease. */
import assert from 'node:assert/strict';
import { leaseRunsOut, runCli, type CliResult } from './cli.js';

export interface LogEntry {
  readonly level: string;
  readonly message: string;
  readonly [field: string]: unknown;
}

/** The JSON log lines of a run's stderr. */
export function logEntries(stderr: string): LogEntry[] {
  const entries: LogEntry[] = [];
  for (const line of stderr.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      entries.push(JSON.parse(line) as LogEntry);
    } catch {
      // not a log line
    }
  }
  return entries;
}

/** The stderr lines that are not JSON log lines: a failed command's one human-readable line. */
export function operatorLines(stderr: string): string[] {
  return stderr.split('\n').filter((line) => line.trim() !== '' && !line.startsWith('{'));
}

/**
 * Runs until a run gets the lease (a killed run's lease expires within its duration), asserting each
 * run exits 0.
 */
export async function runPastLease(
  env: Record<string, string>,
  args: string[] = ['run', '--until-caught-up'],
  boundMs = 60_000,
): Promise<CliResult> {
  const started = Date.now();
  for (;;) {
    const result = await runCli(args, env);
    assert.equal(result.code, 0, `run failed: ${result.stderr}`);
    if (result.summary?.stopReason !== 'lease-held') return result;
    assert.ok(Date.now() - started < boundMs, 'the lease of the earlier run never expired');
    await leaseRunsOut(env, Math.max(0, boundMs - (Date.now() - started)));
  }
}
