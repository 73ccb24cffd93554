/**
 * The benchmarks run the BUILT command (`bin/slotlake.js` → `dist/`), as a scheduler would. This makes sure
 * dist/ exists and is not older than src/, running `npm run build` when it is missing or stale.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BUILT_CLI = join(ROOT, 'dist', 'bundle', 'cli.mjs');

function newestMtimeMs(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, newestMtimeMs(path));
    else if (entry.name.endsWith('.ts')) newest = Math.max(newest, statSync(path).mtimeMs);
  }
  return newest;
}

/** Why dist/ needs a build, or undefined when it is up to date. */
function staleReason(): string | undefined {
  if (!existsSync(BUILT_CLI)) return 'dist/ is missing';
  if (newestMtimeMs(join(ROOT, 'src')) > statSync(BUILT_CLI).mtimeMs) return 'dist/ is older than src/';
  return undefined;
}

/** Builds when needed; throws with a clear message when the build fails. */
export function ensureBuilt(log: (line: string) => void): void {
  const reason = staleReason();
  if (reason === undefined) return;
  log(`${reason}: running \`npm run build\``);
  // Under `npm run bench`, npm_execpath is npm's own CLI script: run it with this Node.
  const npmCli = process.env.npm_execpath;
  const result = npmCli
    ? spawnSync(process.execPath, [npmCli, 'run', 'build'], { cwd: ROOT, stdio: 'inherit' })
    : spawnSync('npm', ['run', 'build'], { cwd: ROOT, stdio: 'inherit' });
  if (result.error) throw new Error(`could not run \`npm run build\`: ${result.error.message}`);
  if (result.status !== 0 || !existsSync(BUILT_CLI)) {
    throw new Error(`\`npm run build\` failed (exit ${result.status}); the benchmarks need dist/`);
  }
}
