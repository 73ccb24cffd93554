/** Runs the built `slotlake` command as a child process, as a user or a scheduler would. */
import { spawn, type ChildProcess } from 'node:child_process';
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
  /** True when this helper killed the process because it outlived `timeoutMs`. */
  readonly killedByTimeout: boolean;
}

export interface RunningCli {
  readonly child: ChildProcess;
  /** stderr so far (JSON log lines, and the failure line). */
  stderr(): string;
  readonly result: Promise<CliResult>;
}

export function runCli(args: string[], env: Record<string, string>, timeoutMs = 120_000): Promise<CliResult> {
  return startCli(args, env, timeoutMs).result;
}

/** Starts the command and returns at once: the child (to signal it), its stderr so far, and its result. */
export function startCli(args: string[], env: Record<string, string>, timeoutMs = 120_000): RunningCli {
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
  let killedByTimeout = false;
  const result = new Promise<CliResult>((resolve, reject) => {
    const timer = setTimeout(() => {
      killedByTimeout = true;
      // A stopped (SIGSTOP) process must be killable too.
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
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
        killedByTimeout,
      });
    });
  });
  return { child, stderr: () => stderr, result };
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
