/** Runs the built `slotlake` command as a child process, as a user or a scheduler would. */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const CLI = fileURLToPath(new URL('../../bin/slotlake.js', import.meta.url));
const BUILT = fileURLToPath(new URL('../../dist/entrypoints/cli.js', import.meta.url));

export interface CliResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly elapsedMs: number;
  /** The last stdout line parsed as JSON (the run summary), if any. */
  readonly summary: Record<string, unknown> | undefined;
}

export function runCli(args: string[], env: Record<string, string>, timeoutMs = 120_000): Promise<CliResult> {
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
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      env: { ...cleanEnv, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
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
      resolve({ code, signal, stdout, stderr, elapsedMs: performance.now() - started, summary });
    });
  });
}
