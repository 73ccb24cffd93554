/**
 * Where a run's CPU goes: the mixed (or small) workload archived by `slotlake run --until-caught-up` under
 * Node's sampling profiler (`--cpu-prof`), once per format, then the profile summed by function (self time)
 * and by file. Not part of `npm run bench`; run it when working on the hot path:
 *
 *   node --import tsx bench/profile.ts                 # mixed workload, 200,000 changes, jsonl and parquet
 *   PROFILE_WORKLOAD=small PROFILE_CHANGES=100000 PROFILE_FORMATS=jsonl node --import tsx bench/profile.ts
 *
 * The .cpuprofile files stay in bench/results/profiles/ (open them in Chrome DevTools or speedscope).
 */
import { mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { createPipeline, startTestStack } from '../test/helpers/stack.js';
import { ensureBuilt, ROOT } from './build.js';
import { CLI, expectCleanRun, runSlotlake } from './commands.js';
import { cleanEnvironment, runMeasured } from './measure.js';
import { mixedTransactions, smallTransactions } from './workloads.js';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** Self time per function and per file (package or source file), as shares of the sampled time. */
export function summarizeProfile(profile: CpuProfile, top = 25): string[] {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const self = new Map<number, number>();
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i]!;
    self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
  }
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  const fileOf = (url: string) => {
    if (url === '') return '(native/VM)';
    const modules = url.lastIndexOf('node_modules/');
    if (modules >= 0) {
      const rest = url.slice(modules + 13).split('/');
      return rest[0]!.startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]!;
    }
    const dist = url.indexOf('/dist/');
    if (dist >= 0) return url.slice(dist + 1);
    return url.replace(/^file:\/\//, '').replace(/^node:/, 'node:');
  };
  const functions = new Map<string, number>();
  const files = new Map<string, number>();
  for (const [id, time] of self) {
    const node = byId.get(id)!;
    const file = fileOf(node.callFrame.url);
    const name = `${node.callFrame.functionName || '(anonymous)'}  ${file}:${node.callFrame.lineNumber + 1}`;
    functions.set(name, (functions.get(name) ?? 0) + time);
    files.set(file, (files.get(file) ?? 0) + time);
  }
  const pct = (time: number) => `${((100 * time) / total).toFixed(1).padStart(5)} %`;
  const lines = [`  sampled ${(total / 1e6).toFixed(2)} s`, '  by file:'];
  for (const [file, time] of [...files].sort((a, b) => b[1] - a[1]).slice(0, 15))
    lines.push(`    ${pct(time)}  ${file}`);
  lines.push('  by function (self):');
  for (const [name, time] of [...functions].sort((a, b) => b[1] - a[1]).slice(0, top))
    lines.push(`    ${pct(time)}  ${name}`);
  return lines;
}

async function main(): Promise<void> {
  const log = (line: string) => console.log(line);
  ensureBuilt(log);
  const changes = Number(process.env.PROFILE_CHANGES ?? 200_000);
  const workload =
    process.env.PROFILE_WORKLOAD === 'small' ? smallTransactions(changes) : mixedTransactions(changes);
  const formats = (process.env.PROFILE_FORMATS ?? 'jsonl,parquet').split(',');
  const dir = join(ROOT, 'bench', 'results', 'profiles');
  mkdirSync(dir, { recursive: true });
  const stack = await startTestStack();
  try {
    const pipeline = await createPipeline(stack, workload.schema);
    try {
      const envOf = (format: string) => ({
        ...pipeline.env,
        SLOTLAKE_SLOT: `${pipeline.name}_${format}`,
        SLOTLAKE_PIPELINE: `${pipeline.name}_${format}`,
        SLOTLAKE_PREFIX: `${pipeline.name}/${format}/`,
        SLOTLAKE_FORMAT: format,
      });
      for (const format of formats)
        expectCleanRun('setup', await runSlotlake(['setup'], envOf(format), 120_000));
      log(`${workload.name} workload: ${workload.changes} changes…`);
      await pipeline.sql(workload.sql);
      for (const format of formats) {
        const profileDir = join(dir, `${workload.name}-${format}`);
        rmSync(profileDir, { recursive: true, force: true });
        const run = await runMeasured(
          process.execPath,
          [
            ...(process.env.PROFILE_NODE_FLAGS ?? '').split(' ').filter(Boolean),
            '--cpu-prof',
            `--cpu-prof-dir=${profileDir}`,
            CLI,
            'run',
            '--until-caught-up',
          ],
          { env: { ...cleanEnvironment(), ...envOf(format) }, timeoutMs: 20 * 60_000, cwd: ROOT },
        );
        const summary = expectCleanRun(`slotlake run (${format})`, run);
        if (process.env.PROFILE_SUMMARY) log(JSON.stringify(summary));
        if (process.env.PROFILE_NODE_FLAGS)
          log(
            run.stdout
              .split('\n')
              .filter((line) => /Mark-Compact|Mark-sweep/.test(line))
              .join('\n'),
          );
        if (process.env.PROFILE_NODE_FLAGS)
          log(
            run.stderrTail
              .split('\n')
              .filter((line) => line.startsWith('MEM'))
              .join('\n'),
          );
        log('');
        log(
          `${format}: ${String(summary.changes)} changes, wall ${(run.wallMs / 1000).toFixed(2)} s, ` +
            `CPU ${run.cpuSeconds?.toFixed(2) ?? '?'} s, peak RSS ${((run.peakRssBytes ?? 0) / 2 ** 20).toFixed(0)} MiB`,
        );
        for (const file of readdirSync(profileDir).filter((name) => name.endsWith('.cpuprofile'))) {
          log(`  ${join(profileDir, file)}`);
          const profile = JSON.parse(readFileSync(join(profileDir, file), 'utf8')) as CpuProfile;
          for (const line of summarizeProfile(profile)) log(line);
        }
      }
      for (const format of formats)
        await pipeline.sql('SELECT pg_drop_replication_slot($1)', [`${pipeline.name}_${format}`]);
    } finally {
      await pipeline.close();
    }
  } finally {
    await stack.stop();
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
