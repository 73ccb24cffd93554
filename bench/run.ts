/**
 * `npm run bench`: slotlake's benchmarks on a local stack (Postgres, S3 and DynamoDB stand-ins on loopback).
 *
 *   1. big      — ONE transaction of BENCH_ROWS rows (default 2,000,000, ~200 B each) archived by one
 *                 `slotlake run --until-caught-up`: peak RSS of the process (target < 256 MiB), wall time,
 *                 changes/s; the summary's changes and the manifests' row counts must equal BENCH_ROWS.
 *   2. throughput — many small transactions, slotlake (A) vs pg_recvlogical to /dev/null (B, the floor)
 *                 on identical slots, BENCH_PAIRS pairs alternating; A/B per pair.
 *   3. micro    — per-stage rows/s in process: frame split, pgoutput decode, record encoding, gzip spool.
 *   4. snapshot — a BENCH_SNAPSHOT_ROWS-row table (default 1,000,000) archived by the initial snapshot
 *                 (`slotlake run --until-caught-up`) next to `pg_dump --data-only -t` of it: rows/s for both,
 *                 on Debian's PostgreSQL 15 (bench/snapshot.ts).
 *   5. budget   — `slotlake run --max-duration` (BENCH_BUDGET_MS, default 5000) under a write load,
 *                 BENCH_BUDGET_RUNS times (3): wall time with process start vs the budget, the run's own
 *                 durationMs and overrunMs; every run must stop with `deadline` having archived something.
 *   6. startup  — the fixed cost of a run with nothing to do: process start → streaming and wall time of
 *                 `slotlake run --until-caught-up`, bundled and not; the Lambda handler's cold start (import,
 *                 first invocation) from the packaged bundle (bench/startup.ts). BENCH_STARTUP_RUNS (5).
 *
 * Environment: BENCH_ROWS (2000000), BENCH_SMALL_ROWS (BENCH_ROWS/10, at most 200000), BENCH_PAIRS (3),
 * BENCH_MICRO_MS (2000 per stage), BENCH_BIG_FLOOR (1: also read the big transaction with pg_recvlogical),
 * BENCH_SNAPSHOT_ROWS (1000000), BENCH_BUDGET_MS, BENCH_BUDGET_RUNS, BENCH_STARTUP_RUNS (5),
 * BENCH_ONLY (comma list of micro,big,throughput,snapshot,readers,budget,startup); for experiments BENCH_NODE_FLAGS and BENCH_READ_BUFFER
 * (bench/commands.ts). Quick smoke run: `BENCH_ROWS=20000 npm run bench`.
 * Prints a report and writes it as JSON to bench/results/latest.json. Exits 1 when a part fails or a
 * correctness check does not hold; a missed memory target is reported, not an error.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, totalmem, release } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { startTestStack, type TestStack } from '../test/helpers/stack.js';
import { benchBigTransaction, type BigResult } from './big.js';
import { benchBudget, type BudgetResult } from './budget.js';
import { ensureBuilt, ROOT } from './build.js';
import { EXPERIMENT, findPgRecvlogical } from './commands.js';
import { GNU_TIME, hasGnuTime } from './measure.js';
import { runMicro, type MicroResult } from './micro.js';
import { benchThroughput, type ThroughputResult } from './throughput.js';
import { benchSnapshot, type SnapshotResult } from './snapshot.js';
import { benchReaders, printReaders, type ReadersResult } from './readers.js';
import { benchStartup, printStartup, type StartupResult } from './startup.js';
import { mixedTransactions, smallTransactions } from './workloads.js';

const PARTS = ['micro', 'big', 'throughput', 'snapshot', 'readers', 'budget', 'startup'] as const;
type Part = (typeof PARTS)[number];
/** What runs without BENCH_ONLY: `readers` measures the small transactions of `throughput` and more. */
const DEFAULT_PARTS: readonly Part[] = ['micro', 'big', 'readers', 'snapshot', 'budget', 'startup'];

function intFromEnv(name: string, fallback: number, min = 1): number {
  const text = process.env[name];
  if (text === undefined || text === '') return fallback;
  const value = Number(text.replace(/_/g, ''));
  if (!Number.isInteger(value) || value < min)
    throw new Error(`${name} must be an integer >= ${min}, not ${text}`);
  return value;
}

function partsFromEnv(): Set<Part> {
  const text = process.env.BENCH_ONLY;
  if (!text) return new Set(DEFAULT_PARTS);
  const parts = text.split(',').map((part) => part.trim());
  for (const part of parts) {
    if (!(PARTS as readonly string[]).includes(part)) {
      throw new Error(`BENCH_ONLY: unknown part ${part} (known: ${PARTS.join(', ')})`);
    }
  }
  return new Set(parts as Part[]);
}

const log = (line: string) => console.log(line);
const num = (value: number, digits = 0) =>
  value.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
const mib = (bytes: number | undefined) => (bytes === undefined ? 'n/a' : `${num(bytes / 2 ** 20, 1)} MiB`);
const secs = (ms: number) => `${num(ms / 1000, 2)} s`;

function toolVersion(file: string): string | undefined {
  try {
    return execFileSync(file, ['--version'], { encoding: 'utf8' }).trim();
  } catch {
    return undefined;
  }
}

async function serverVersion(stack: TestStack): Promise<string> {
  const client = new pg.Client({ connectionString: stack.postgres.url() });
  await client.connect();
  try {
    const result = await client.query('SHOW server_version');
    const work = await client.query('SHOW logical_decoding_work_mem');
    return `PostgreSQL ${(result.rows[0] as { server_version: string }).server_version} (logical_decoding_work_mem ${(work.rows[0] as { logical_decoding_work_mem: string }).logical_decoding_work_mem})`;
  } finally {
    await client.end();
  }
}

function printMicro(micro: MicroResult): void {
  log('');
  log(`Per-stage (in process, one core, ${num(micro.budgetMsPerStage)} ms each; ${micro.fixture})`);
  for (const stage of micro.stages) {
    log(
      `  ${stage.stage.padEnd(7)} ${num(stage.rowsPerSec).padStart(11)} rows/s  ${num(stage.usPerRow, 2).padStart(6)} µs/row` +
        `${stage.mbPerSec === undefined ? '' : `  ${num(stage.mbPerSec, 0).padStart(4)} MB/s`}  ${stage.what}` +
        (stage.note ? ` — ${stage.note}` : ''),
    );
  }
  log(
    `  total   ${num(micro.totalUsPerRow, 2)} µs/row of CPU in the pipeline stages (${num(1e6 / micro.totalUsPerRow)} rows/s on one core)`,
  );
}

function printBig(big: BigResult): void {
  const { run, checks } = big;
  log('');
  log(`Big transaction: ${num(big.rows)} rows in ONE transaction`);
  log(
    `  workload        INSERT … generate_series in ${secs(big.insertMs)}, ${num(big.walBytes / 1e6)} MB of WAL, ` +
      `${num(big.avgRowBytesInPostgres)} B of row data per row in Postgres`,
  );
  if (big.sample) {
    log(
      `  archive         ${num(big.sample.avgRowDataBytes)} B of row data ("after") per record, ${num(big.sample.avgLineBytes)} B per JSON line; ` +
        `${num(big.archive.objects)} object(s), ${mib(big.archive.bytes)} gzip`,
    );
  }
  log(
    `  peak RSS        ${mib(run.peakRssBytes)} (${run.peakRssSource}; polled VmHWM ${mib(run.polledPeakRssBytes)}) — target < ${mib(run.targetBytes)}: ` +
      (run.withinTarget ? 'met' : 'MISSED'),
  );
  log(`  wall time       ${secs(run.wallMs)} (the run's own durationMs ${secs(run.runDurationMs)})`);
  log(
    `  throughput      ${num(run.changesPerSec)} changes/s (wall), ${String(run.readPauses)} read pauses (backpressure)`,
  );
  log(
    `  correctness     summary.changes ${num(checks.summaryChanges)}, manifest rows ${num(checks.manifestRows)}, stopReason ${String(run.stopReason)}: ` +
      (checks.ok ? 'OK' : 'FAILED'),
  );
  if ('skipped' in big.floor) log(`  floor           skipped: ${big.floor.skipped}`);
  else {
    log(
      `  floor           pg_recvlogical → /dev/null: ${secs(big.floor.wallMs)} (${num(big.floor.changesPerSec)} changes/s); ` +
        `slotlake/floor ${num(run.wallMs / big.floor.wallMs, 2)}`,
    );
  }
  if (run.timeline.length > 0) {
    const points = run.timeline.length;
    const pick = [0.1, 0.25, 0.5, 0.75, 0.9, 1].map(
      (f) => run.timeline[Math.min(points - 1, Math.floor(points * f))]!,
    );
    const top = run.timeline.reduce((a, b) => (b.rssBytes > a.rssBytes ? b : a));
    const reading = run.timeline.filter((s) => s.atMs <= run.wallMs * 0.9);
    const readingMax = reading.length ? Math.max(...reading.map((s) => s.rssBytes)) : undefined;
    log(
      `  RSS sampled     max ${mib(top.rssBytes)} at ${num(top.atMs / 1000, 1)} s of ${num(run.wallMs / 1000, 1)} s; ` +
        `max over the first 90% of the run ${mib(readingMax)}`,
    );
    log(
      `  RSS over time   ${pick.map((s) => `${num(s.atMs / 1000, run.wallMs < 20_000 ? 1 : 0)}s:${num(s.rssBytes / 2 ** 20)}M`).join('  ')}`,
    );
  }
}

function printThroughput(t: ThroughputResult): void {
  log('');
  log(
    `Throughput: ${num(t.changes)} changes in ${num(t.transactions)} transactions over 3 tables (${num(t.walBytes / 1e6)} MB of WAL)`,
  );
  log('  pair  order  A slotlake        B pg_recvlogical   A/B');
  for (const p of t.pairs) {
    log(
      `  ${String(p.pair).padEnd(4)}  ${p.order}    ${secs(p.aWallMs).padStart(8)} (run ${secs(p.aRunDurationMs)})  ` +
        `${Number.isNaN(p.bWallMs) ? '     n/a' : secs(p.bWallMs).padStart(8)}         ${Number.isNaN(p.ratio) ? 'n/a' : num(p.ratio, 2)}`,
    );
  }
  const s = (v: { min: number; median: number; max: number }, digits = 0) =>
    `min ${num(v.min, digits)} / median ${num(v.median, digits)} / max ${num(v.max, digits)}`;
  log(`  A changes/s     ${s(t.aChangesPerSec)}`);
  if (t.bChangesPerSec) log(`  B changes/s     ${s(t.bChangesPerSec)}`);
  if (t.ratio) log(`  A/B wall        ${s(t.ratio, 2)}`);
  if (t.floorSkipped) log(`  ${t.floorSkipped}`);
  log(
    `  empty run       ${secs(t.emptyRunWallMs)} (process start, checks, lease, connect, checkpoint: in every A)`,
  );
  log(
    `  correctness     ${t.ok ? 'OK' : 'FAILED'} (every A archived ${num(t.changes)} changes; every B slot reached endpos)`,
  );
}

function printBudget(b: BudgetResult): void {
  log('');
  log(`Budget: slotlake run --max-duration ${secs(b.budgetMs)} under a continuous write load`);
  for (const [i, run] of b.runs.entries()) {
    log(
      `  run ${i + 1}  wall ${secs(run.wallMs)} (process start included; ${run.withinBudget ? 'within' : 'OVER'} the budget), ` +
        `its own durationMs ${secs(run.durationMs)}, overrun ${num(run.overrunMs)} ms, ${num(run.changes)} changes, ${run.stopReason}`,
    );
  }
  log(`  correctness     ${b.ok ? 'OK' : 'FAILED'} (every run stopped with deadline and archived changes)`);
}

function printSummary(results: Results): void {
  const rows: [string, string][] = [];
  const { big, throughput, micro, snapshot, budget, startup } = results;
  if (snapshot) {
    rows.push([`snapshot rows/s (${num(snapshot.rows)} rows)`, num(snapshot.slotlake.rowsPerSecond)]);
    rows.push([
      'pg_dump --data-only rows/s',
      snapshot.pgDump ? num(snapshot.pgDump.rowsPerSecond) : 'skipped (no pg_dump)',
    ]);
    rows.push([
      'snapshot correctness',
      snapshot.ok ? 'OK' : `FAILED (${num(snapshot.archivedRows)} archived)`,
    ]);
  }
  if (big) {
    rows.push([
      `big txn peak RSS (${num(big.rows)} rows)`,
      `${mib(big.run.peakRssBytes)} ${big.run.withinTarget ? '(< 256 MiB: met)' : '(>= 256 MiB: MISSED)'}`,
    ]);
    rows.push(['big txn wall time', secs(big.run.wallMs)]);
    rows.push(['big txn changes/s', num(big.run.changesPerSec)]);
    if (!('skipped' in big.floor)) rows.push(['big txn floor (pg_recvlogical)', secs(big.floor.wallMs)]);
    rows.push(['big txn correctness', big.checks.ok ? 'OK' : 'FAILED']);
  }
  if (throughput) {
    rows.push(['small txns A changes/s (median)', num(throughput.aChangesPerSec.median)]);
    if (throughput.bChangesPerSec)
      rows.push(['small txns B changes/s (median)', num(throughput.bChangesPerSec.median)]);
    if (throughput.ratio) {
      rows.push([
        'small txns A/B (min/med/max)',
        `${num(throughput.ratio.min, 2)} / ${num(throughput.ratio.median, 2)} / ${num(throughput.ratio.max, 2)}`,
      ]);
    } else rows.push(['small txns A/B', 'skipped (no pg_recvlogical)']);
    rows.push(['empty run (fixed cost)', secs(throughput.emptyRunWallMs)]);
  }
  if (startup) {
    for (const cli of startup.cli)
      rows.push([
        `nothing to do: ${cli.variant.split(' (')[0]!}`,
        `${num(cli.startupMs.median)} ms to streaming, ${num(cli.wallMs.median)} ms wall`,
      ]);
    for (const cold of startup.lambda)
      rows.push([
        `Lambda cold start: ${cold.variant.split(' (')[0]!}`,
        `import ${num(cold.importMs.median)} ms + first invocation ${num(cold.invokeMs.median)} ms`,
      ]);
    rows.push(['startup correctness', startup.ok ? 'OK' : 'FAILED']);
  }
  if (micro) {
    for (const stage of micro.stages) rows.push([`${stage.stage} rows/s (1 core)`, num(stage.rowsPerSec)]);
  }
  if (budget) {
    const worst = Math.max(...budget.runs.map((run) => run.wallMs));
    rows.push([
      `budget ${secs(budget.budgetMs)}: worst wall time`,
      `${secs(worst)} ${worst < budget.budgetMs ? '(within)' : '(OVER)'}`,
    ]);
    rows.push(['budget correctness', budget.ok ? 'OK' : 'FAILED']);
  }
  for (const [part, message] of Object.entries(results.errors))
    rows.push([`${part} ERROR`, message.split('\n')[0]!]);
  rows.push(['total bench time', secs(results.totalMs)]);
  const width = Math.max(...rows.map(([name]) => name.length));
  const valueWidth = Math.max(...rows.map(([, value]) => value.length));
  log('');
  log(`┌${'─'.repeat(width + 2)}┬${'─'.repeat(valueWidth + 2)}┐`);
  for (const [name, value] of rows) log(`│ ${name.padEnd(width)} │ ${value.padEnd(valueWidth)} │`);
  log(`└${'─'.repeat(width + 2)}┴${'─'.repeat(valueWidth + 2)}┘`);
}

interface Results {
  date: string;
  machine: Record<string, unknown>;
  settings: Record<string, unknown>;
  micro?: MicroResult;
  big?: BigResult;
  throughput?: ThroughputResult;
  snapshot?: SnapshotResult;
  readers?: ReadersResult;
  budget?: BudgetResult;
  startup?: StartupResult;
  errors: Record<string, string>;
  totalMs: number;
  ok: boolean;
}

async function main(): Promise<number> {
  const started = performance.now();
  const rows = intFromEnv('BENCH_ROWS', 2_000_000);
  const smallRows = intFromEnv(
    'BENCH_SMALL_ROWS',
    Math.min(200_000, Math.max(1_000, Math.round(rows / 10))),
    10,
  );
  const pairs = intFromEnv('BENCH_PAIRS', 3);
  const microMs = intFromEnv('BENCH_MICRO_MS', 2_000, 100);
  const bigFloor = process.env.BENCH_BIG_FLOOR !== '0';
  const budgetMs = intFromEnv('BENCH_BUDGET_MS', 5_000, 1_000);
  const budgetRuns = intFromEnv('BENCH_BUDGET_RUNS', 3);
  const parts = partsFromEnv();
  const recvlogical = findPgRecvlogical();

  ensureBuilt(log);
  const cpuList = cpus();
  const results: Results = {
    date: new Date().toISOString(),
    machine: {
      cores: cpuList.length,
      cpu: cpuList[0]?.model ?? 'unknown',
      memoryGiB: Math.round(totalmem() / 2 ** 30),
      kernel: release(),
      node: process.version,
      gnuTime: hasGnuTime() ? GNU_TIME : null,
      pgRecvlogical: recvlogical ? `${recvlogical} (${toolVersion(recvlogical) ?? '?'})` : null,
    },
    settings: {
      rows,
      smallRows,
      pairs,
      microMs,
      bigFloor,
      budgetMs,
      budgetRuns,
      parts: [...parts],
      experiment: EXPERIMENT,
    },
    errors: {},
    totalMs: 0,
    ok: true,
  };
  log(`slotlake bench — ${results.date}`);
  log(
    `machine: ${String(results.machine.cores)} cores (${String(results.machine.cpu)}), ${String(results.machine.memoryGiB)} GiB, Node ${process.version}`,
  );
  if (EXPERIMENT.nodeFlags.length || EXPERIMENT.readBuffer) {
    log(
      `EXPERIMENT (not slotlake as shipped): node flags [${EXPERIMENT.nodeFlags.join(' ')}], ` +
        `SLOTLAKE_READ_BUFFER ${EXPERIMENT.readBuffer ?? 'default'}`,
    );
  }
  log(
    `peak RSS via ${hasGnuTime() ? `${GNU_TIME} (getrusage)` : 'polling /proc/<pid>/status every 20 ms (no GNU time)'}`,
  );
  if (!recvlogical) {
    log('pg_recvlogical not found (Debian: apt-get install postgresql-client-15): the floor (B) is skipped');
  }

  if (parts.has('micro')) {
    log('');
    log('micro: per-stage rates…');
    try {
      results.micro = await runMicro(microMs);
      printMicro(results.micro);
    } catch (error) {
      results.errors.micro = (error as Error).stack ?? String(error);
    }
  }

  let stack: TestStack | undefined;
  const stopStack = async () => {
    const current = stack;
    stack = undefined;
    await current?.stop();
  };
  const onSignal = () => {
    log('interrupted: stopping the local stack');
    void stopStack().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    if (
      parts.has('big') ||
      parts.has('throughput') ||
      parts.has('readers') ||
      parts.has('budget') ||
      parts.has('startup')
    ) {
      log('');
      log('starting the local stack (Postgres, S3, DynamoDB on loopback)…');
      stack = await startTestStack();
      results.machine.postgres = await serverVersion(stack);
      log(`  ${String(results.machine.postgres)}`);
    }
    if (parts.has('big') && stack) {
      log('');
      try {
        results.big = await benchBigTransaction(stack, { rows, recvlogical, withFloor: bigFloor, log });
        printBig(results.big);
        if (!results.big.checks.ok) results.ok = false;
      } catch (error) {
        results.errors.big = (error as Error).stack ?? String(error);
      }
    }
    if (parts.has('throughput') && stack) {
      log('');
      try {
        results.throughput = await benchThroughput(stack, { changes: smallRows, pairs, recvlogical, log });
        printThroughput(results.throughput);
        if (!results.throughput.ok) results.ok = false;
      } catch (error) {
        results.errors.throughput = (error as Error).stack ?? String(error);
      }
    }
    if (parts.has('readers') && stack) {
      try {
        results.readers = await benchReaders(stack, {
          workloads: [
            smallTransactions(smallRows),
            mixedTransactions(intFromEnv('BENCH_MIXED_CHANGES', 400_000, 1_000)),
          ],
          rounds: pairs,
          recvlogical,
          log,
        });
        printReaders(results.readers, log);
        if (!results.readers.ok) results.ok = false;
      } catch (error) {
        results.errors.readers = (error as Error).stack ?? String(error);
      }
    }
    if (parts.has('startup') && stack) {
      log('');
      try {
        results.startup = await benchStartup(stack, { runs: intFromEnv('BENCH_STARTUP_RUNS', 5), log });
        printStartup(results.startup, log);
        if (!results.startup.ok) results.ok = false;
      } catch (error) {
        results.errors.startup = (error as Error).stack ?? String(error);
      }
    }
    if (parts.has('snapshot')) {
      log('');
      try {
        results.snapshot = await benchSnapshot({ rows: intFromEnv('BENCH_SNAPSHOT_ROWS', 1_000_000), log });
        const { slotlake, pgDump } = results.snapshot;
        log(
          `  slotlake snapshot: ${secs(slotlake.ms)} in ${String(slotlake.runs)} run(s), ${num(slotlake.rowsPerSecond)} rows/s` +
            (pgDump ? `; pg_dump --data-only: ${secs(pgDump.ms)}, ${num(pgDump.rowsPerSecond)} rows/s` : ''),
        );
        if (!results.snapshot.ok) results.ok = false;
      } catch (error) {
        results.errors.snapshot = (error as Error).stack ?? String(error);
      }
    }
    if (parts.has('budget') && stack) {
      log('');
      log(`budget: ${budgetRuns} runs of ${secs(budgetMs)} under load…`);
      try {
        results.budget = await benchBudget(stack, { budgetMs, runs: budgetRuns, log });
        printBudget(results.budget);
        if (!results.budget.ok) results.ok = false;
      } catch (error) {
        results.errors.budget = (error as Error).stack ?? String(error);
      }
    }
  } finally {
    await stopStack();
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
  }

  for (const [part, message] of Object.entries(results.errors)) {
    results.ok = false;
    log('');
    log(`${part} FAILED: ${message}`);
  }
  results.totalMs = performance.now() - started;
  printSummary(results);
  if (results.readers) printReaders(results.readers, log);
  const dir = join(ROOT, 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, 'latest.json');
  writeFileSync(file, `${JSON.stringify(results, null, 2)}\n`);
  log(`written: ${file}`);
  return results.ok ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(`bench: ${(error as Error).stack ?? String(error)}`);
    process.exit(1);
  },
);
