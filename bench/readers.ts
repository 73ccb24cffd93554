/**
 * Readers side by side on the same backlog: how close slotlake comes to the ceiling.
 *
 * `pg_recvlogical` sets the ceiling: it receives what the walsender decodes and writes it to a file, nothing
 * more. Against it, on the SAME changes: `slotlake run --until-caught-up` archiving JSON Lines and Parquet
 * into the local S3 (decode, encode, compress, upload, manifest, checkpoint), and the Node peer
 * (`bench/peer-reader.mjs`: `pg-logical-replication` writing JSON lines to a file, what a user would write
 * by hand). A slot cannot be rewound, so every reader of every round has its own slot, all created before
 * the workload; the rounds then run one after the other, each running every reader once in an order that
 * rotates from round to round, on an otherwise idle stack.
 *
 * Per reader run: wall time (process start to exit, fixed costs included), changes/s, CPU seconds (user +
 * system of the reader's process, GNU time) per million changes, bytes written per change, peak RSS; the
 * ratio to the ceiling is per round (pg_recvlogical's wall time over the reader's, measured side by side)
 * and reported as min / median / max. The walsender's own CPU is in no reader's figure.
 *
 * Checks (exit status 1 when one fails): every slotlake run archived exactly the backlog (its summary, the
 * manifests' row counts), every object a manifest names exists and no data object is outside a manifest,
 * and the whole archive decodes (every JSON line parsed, every Parquet row read) to exactly the backlog's
 * changes, each (commit_lsn, seq) once per table; every pg_recvlogical slot reached the end position; the
 * peer wrote one line per change.
 */
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import * as zlib from 'node:zlib';
import type { S3Client } from '@aws-sdk/client-s3';
import { parquetMetadata, parquetRead } from 'hyparquet';
import { getBytes, listKeys } from '../test/helpers/lake.js';
import type { TestStack } from '../test/helpers/stack.js';
import { createPipeline } from '../test/helpers/stack.js';
import { benchS3Client } from './archive.js';
import { ROOT } from './build.js';
import { expectCleanRun, runPgRecvlogical, runSlotlake } from './commands.js';
import { cleanEnvironment, runMeasured, type MeasuredRun } from './measure.js';
import { spread, type Spread } from './throughput.js';
import type { Workload } from './workloads.js';

export const READERS = ['pg_recvlogical', 'slotlake jsonl', 'slotlake parquet', 'peer'] as const;
export type ReaderName = (typeof READERS)[number];

export interface ReaderRun {
  readonly reader: ReaderName;
  readonly round: number;
  readonly wallMs: number;
  readonly changesPerSec: number;
  readonly cpuSeconds: number | undefined;
  readonly cpuSecondsPerMillion: number | undefined;
  readonly bytes: number;
  readonly bytesPerChange: number;
  readonly peakRssBytes: number | undefined;
  /** slotlake: the run's own durationMs and its time from process start to streaming. */
  readonly runDurationMs?: number;
  readonly startupMs?: number;
}

export interface ReaderSummary {
  readonly reader: ReaderName;
  readonly changesPerSec: Spread;
  /** This reader's changes/s over pg_recvlogical's in the same round. */
  readonly ratio: Spread | undefined;
  readonly cpuSecondsPerMillion: Spread | undefined;
  readonly bytesPerChange: number;
  readonly peakRssBytes: Spread | undefined;
}

export interface WorkloadResult {
  readonly name: string;
  readonly description: string;
  readonly changes: number;
  readonly transactions: number;
  readonly workloadMs: number;
  readonly walBytes: number;
  readonly runs: readonly ReaderRun[];
  readonly readers: readonly ReaderSummary[];
  readonly problems: readonly string[];
  readonly ok: boolean;
}

export interface ReadersResult {
  readonly rounds: number;
  readonly workloads: readonly WorkloadResult[];
  /** A slotlake run with nothing to do: process start to exit, and to streaming. */
  readonly emptyRun: { readonly wallMs: number; readonly startupMs: number | undefined } | undefined;
  readonly recvlogical: string | undefined;
  readonly ok: boolean;
}

export interface ReadersOptions {
  readonly workloads: readonly Workload[];
  readonly rounds: number;
  readonly recvlogical: string | undefined;
  readonly log: (line: string) => void;
}

const PEER = join(ROOT, 'bench', 'peer-reader.mjs');
const TIMEOUT_MS = 20 * 60_000;

const PARQUET_DECOMPRESSORS = {
  ZSTD: (input: Uint8Array) => new Uint8Array(zlib.zstdDecompressSync(input)),
  GZIP: (input: Uint8Array) => new Uint8Array(zlib.gunzipSync(input)),
};

interface ManifestDocument {
  readonly objects: readonly { readonly key: string; readonly rows: number }[];
}

/**
 * The archive under `prefix`, checked whole: manifests against the data keys, then every object decoded.
 * Returns the problems found (none: the archive holds exactly `changes` changes, each once).
 */
async function checkArchive(
  s3: S3Client,
  prefix: string,
  format: 'jsonl' | 'parquet',
  changes: number,
): Promise<string[]> {
  const problems: string[] = [];
  const manifestKeys = await listKeys(s3, `${prefix}manifests/`);
  const dataKeys = new Set(await listKeys(s3, `${prefix}data/`));
  const named = new Map<string, number>();
  for (const key of manifestKeys) {
    const manifest = JSON.parse(Buffer.from(await getBytes(s3, key)).toString('utf8')) as ManifestDocument;
    for (const object of manifest.objects) {
      if (named.has(object.key)) problems.push(`${object.key} is named by two manifests`);
      named.set(object.key, object.rows);
      if (!dataKeys.has(object.key)) problems.push(`${object.key} is named by ${key} but does not exist`);
    }
  }
  for (const key of dataKeys) if (!named.has(key)) problems.push(`${key} is in no manifest`);
  const manifestRows = [...named.values()].reduce((sum, rows) => sum + rows, 0);
  if (manifestRows !== changes) problems.push(`the manifests count ${manifestRows} rows, not ${changes}`);

  const seen = new Set<string>();
  let decoded = 0;
  for (const [key, rows] of named) {
    if (!dataKeys.has(key)) continue;
    const bytes = await getBytes(s3, key);
    const table = key.split('/data/')[1]?.split('/')[0] ?? key;
    let objectRows = 0;
    const identify = (commitLsn: string, seq: string) => {
      const id = `${table} ${commitLsn} ${seq}`;
      if (seen.has(id)) problems.push(`${table}: change ${commitLsn}#${seq} archived twice`);
      seen.add(id);
      objectRows++;
    };
    if (format === 'jsonl') {
      const text = gunzipSync(bytes).toString('utf8');
      for (const line of text.split('\n')) {
        if (line === '') continue;
        const record = JSON.parse(line) as { source: { commit_lsn: string; seq: number } };
        identify(record.source.commit_lsn, String(record.source.seq));
      }
    } else {
      const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
      const metadata = parquetMetadata(buffer);
      await parquetRead({
        file: buffer,
        metadata,
        compressors: PARQUET_DECOMPRESSORS,
        rowFormat: 'object',
        onComplete: (data: Record<string, unknown>[]) => {
          for (const row of data) identify(String(row._commit_lsn), String(row._seq));
        },
      });
    }
    if (objectRows !== rows) problems.push(`${key}: ${objectRows} rows decoded, the manifest says ${rows}`);
    decoded += objectRows;
  }
  if (decoded !== changes) problems.push(`${decoded} changes decoded from the archive, not ${changes}`);
  return problems.slice(0, 20);
}

/** Process start → streaming, from a run summary's `startup`. */
function startupOf(summary: Record<string, unknown>): number | undefined {
  const startup = summary.startup as { processMs?: number } | null | undefined;
  return startup?.processMs;
}

function fileBytes(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}

function runPeer(options: {
  databaseUrl: string;
  slot: string;
  publication: string;
  changes: number;
  output: string;
}): Promise<MeasuredRun> {
  return runMeasured(process.execPath, [PEER], {
    env: {
      ...cleanEnvironment(),
      PEER_DATABASE_URL: options.databaseUrl,
      PEER_SLOT: options.slot,
      PEER_PUBLICATION: options.publication,
      PEER_CHANGES: String(options.changes),
      PEER_OUTPUT: options.output,
    },
    timeoutMs: TIMEOUT_MS,
    cwd: ROOT,
  });
}

function summarize(runs: readonly ReaderRun[], readers: readonly ReaderName[]): ReaderSummary[] {
  const byRound = new Map<number, Map<ReaderName, ReaderRun>>();
  for (const run of runs) {
    if (!byRound.has(run.round)) byRound.set(run.round, new Map());
    byRound.get(run.round)!.set(run.reader, run);
  }
  return readers.map((reader) => {
    const mine = runs.filter((run) => run.reader === reader);
    const ratios: number[] = [];
    for (const round of byRound.values()) {
      const ceiling = round.get('pg_recvlogical');
      const run = round.get(reader);
      if (ceiling && run) ratios.push(ceiling.wallMs / run.wallMs);
    }
    const cpu = mine.map((run) => run.cpuSecondsPerMillion).filter((v): v is number => v !== undefined);
    const rss = mine.map((run) => run.peakRssBytes).filter((v): v is number => v !== undefined);
    return {
      reader,
      changesPerSec: spread(mine.map((run) => run.changesPerSec)),
      ratio: ratios.length ? spread(ratios) : undefined,
      cpuSecondsPerMillion: cpu.length ? spread(cpu) : undefined,
      bytesPerChange: spread(mine.map((run) => run.bytesPerChange)).median,
      peakRssBytes: rss.length ? spread(rss) : undefined,
    };
  });
}

async function benchWorkload(
  stack: TestStack,
  workload: Workload,
  options: ReadersOptions,
  s3: S3Client,
): Promise<WorkloadResult> {
  const { log, rounds } = options;
  const readers = READERS.filter((reader) => reader !== 'pg_recvlogical' || options.recvlogical);
  log('');
  log(`readers, ${workload.name} workload: ${workload.description}`);
  const pipeline = await createPipeline(stack, workload.schema);
  const scratch = mkdtempSync(join(tmpdir(), 'slotlake-bench-readers-'));
  const slots: string[] = [];
  const problems: string[] = [];
  try {
    const slotOf = (reader: ReaderName, round: number) =>
      `${pipeline.name}_${{ pg_recvlogical: 'r', 'slotlake jsonl': 'j', 'slotlake parquet': 'q', peer: 'n' }[reader]}${round}`;
    const envOf = (reader: ReaderName, round: number): Record<string, string> => {
      const slot = slotOf(reader, round);
      return {
        ...pipeline.env,
        SLOTLAKE_SLOT: slot,
        SLOTLAKE_PIPELINE: slot,
        SLOTLAKE_PREFIX: `${pipeline.name}/${slot}/`,
        SLOTLAKE_FORMAT: reader === 'slotlake parquet' ? 'parquet' : 'jsonl',
      };
    };
    for (let round = 1; round <= rounds; round++) {
      for (const reader of readers) {
        const slot = slotOf(reader, round);
        if (reader.startsWith('slotlake'))
          expectCleanRun(
            `slotlake setup (${slot})`,
            await runSlotlake(['setup'], envOf(reader, round), 120_000),
          );
        else await pipeline.sql(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [slot]);
        slots.push(slot);
      }
    }
    log(
      `  workload: ${workload.changes.toLocaleString('en-US')} changes in ${workload.transactions.toLocaleString('en-US')} transactions…`,
    );
    const before = (await pipeline.sql('SELECT pg_current_wal_lsn() AS lsn')).rows[0] as { lsn: string };
    const started = performance.now();
    await pipeline.sql(workload.sql);
    const workloadMs = performance.now() - started;
    const endpos = ((await pipeline.sql('SELECT pg_current_wal_lsn() AS lsn')).rows[0] as { lsn: string })
      .lsn;
    const walBytes = Number(
      (
        (await pipeline.sql('SELECT pg_wal_lsn_diff($1, $2) AS d', [endpos, before.lsn])).rows[0] as {
          d: string;
        }
      ).d,
    );
    log(`  written in ${(workloadMs / 1000).toFixed(1)} s, ${(walBytes / 1e6).toFixed(0)} MB of WAL`);

    const runs: ReaderRun[] = [];
    for (let round = 1; round <= rounds; round++) {
      const order = readers.map((_, i) => readers[(i + round - 1) % readers.length]!);
      const line: string[] = [];
      for (const reader of order) {
        const slot = slotOf(reader, round);
        let measured: MeasuredRun;
        let bytes: number;
        let extra: Pick<ReaderRun, 'runDurationMs' | 'startupMs'> = {};
        if (reader === 'pg_recvlogical') {
          const output = join(scratch, `${slot}.bin`);
          measured = await runPgRecvlogical({
            binary: options.recvlogical!,
            databaseUrl: pipeline.databaseUrl,
            slot,
            publication: pipeline.env.SLOTLAKE_PUBLICATION!,
            endpos,
            timeoutMs: TIMEOUT_MS,
            outputFile: output,
          });
          if (measured.code !== 0)
            throw new Error(
              `pg_recvlogical exited ${measured.code ?? measured.signal}: ${measured.stderrTail}`,
            );
          bytes = fileBytes(output);
          rmSync(output, { force: true });
        } else if (reader === 'peer') {
          const output = join(scratch, `${slot}.jsonl`);
          measured = await runPeer({
            databaseUrl: pipeline.databaseUrl,
            slot,
            publication: pipeline.env.SLOTLAKE_PUBLICATION!,
            changes: workload.changes,
            output,
          });
          if (measured.code !== 0 || !measured.summary)
            throw new Error(`the peer exited ${measured.code ?? measured.signal}: ${measured.stderrTail}`);
          if (Number(measured.summary.changes) !== workload.changes)
            problems.push(`peer round ${round}: ${String(measured.summary.changes)} changes read`);
          bytes = fileBytes(output);
          rmSync(output, { force: true });
        } else {
          const env = envOf(reader, round);
          measured = await runSlotlake(['run', '--until-caught-up'], env, TIMEOUT_MS);
          const summary = expectCleanRun(`slotlake run (${slot})`, measured);
          if (Number(summary.changes) !== workload.changes || summary.stopReason !== 'caught-up')
            problems.push(
              `${reader} round ${round}: ${String(summary.changes)} changes archived (${String(summary.stopReason)})`,
            );
          bytes = Number(summary.bytes);
          extra = {
            runDurationMs: Number(summary.durationMs),
            ...(startupOf(summary) === undefined ? {} : { startupMs: startupOf(summary) }),
          };
          const found = await checkArchive(
            s3,
            env.SLOTLAKE_PREFIX!,
            reader === 'slotlake parquet' ? 'parquet' : 'jsonl',
            workload.changes,
          );
          for (const problem of found) problems.push(`${reader} round ${round}: ${problem}`);
        }
        const cpu = measured.cpuSeconds;
        runs.push({
          reader,
          round,
          wallMs: measured.wallMs,
          changesPerSec: (workload.changes / measured.wallMs) * 1000,
          cpuSeconds: cpu,
          cpuSecondsPerMillion: cpu === undefined ? undefined : (cpu / workload.changes) * 1e6,
          bytes,
          bytesPerChange: bytes / workload.changes,
          peakRssBytes: measured.peakRssBytes,
          ...extra,
        });
        line.push(`${reader} ${(measured.wallMs / 1000).toFixed(2)} s`);
      }
      log(`  round ${round}: ${line.join(', ')}`);
    }
    if (options.recvlogical) {
      const lagging = await pipeline.sql(
        `SELECT slot_name FROM pg_replication_slots WHERE slot_name = ANY($1) AND confirmed_flush_lsn < $2::pg_lsn`,
        [slots.filter((slot) => /_r\d+$/.test(slot)), endpos],
      );
      for (const row of lagging.rows as { slot_name: string }[])
        problems.push(`pg_recvlogical slot ${row.slot_name} did not reach ${endpos}`);
    }
    return {
      name: workload.name,
      description: workload.description,
      changes: workload.changes,
      transactions: workload.transactions,
      workloadMs,
      walBytes,
      runs,
      readers: summarize(runs, readers),
      problems,
      ok: problems.length === 0,
    };
  } finally {
    rmSync(scratch, { recursive: true, force: true });
    for (const slot of slots)
      await pipeline.sql('SELECT pg_drop_replication_slot($1)', [slot]).catch(() => undefined);
    await pipeline.close();
  }
}

/** The empty run: a pipeline with nothing to archive (process start, checks, lease, connect, checkpoint). */
async function emptyRun(stack: TestStack): Promise<ReadersResult['emptyRun']> {
  const pipeline = await createPipeline(stack, 'CREATE TABLE nothing (id int PRIMARY KEY)');
  try {
    expectCleanRun('slotlake setup (empty run)', await runSlotlake(['setup'], pipeline.env, 120_000));
    // the first run initialises the checkpoint; the second is the one measured
    expectCleanRun(
      'slotlake run (empty)',
      await runSlotlake(['run', '--until-caught-up'], pipeline.env, 120_000),
    );
    const run = await runSlotlake(['run', '--until-caught-up'], pipeline.env, 120_000);
    const summary = expectCleanRun('slotlake run (empty)', run);
    return {
      wallMs: run.wallMs,
      startupMs: startupOf(summary),
    };
  } finally {
    await pipeline
      .sql('SELECT pg_drop_replication_slot($1)', [pipeline.env.SLOTLAKE_SLOT])
      .catch(() => undefined);
    await pipeline.close();
  }
}

export async function benchReaders(stack: TestStack, options: ReadersOptions): Promise<ReadersResult> {
  const s3 = benchS3Client(stack.awsEnv);
  try {
    if (!options.recvlogical)
      options.log('pg_recvlogical not found: no ceiling, the ratios are skipped (BENCH_PG_RECVLOGICAL)');
    const workloads: WorkloadResult[] = [];
    for (const workload of options.workloads)
      workloads.push(await benchWorkload(stack, workload, options, s3));
    return {
      rounds: options.rounds,
      workloads,
      emptyRun: await emptyRun(stack),
      recvlogical: options.recvlogical,
      ok: workloads.every((workload) => workload.ok),
    };
  } finally {
    s3.destroy();
  }
}

const num = (value: number, digits = 0) =>
  value.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });

/** The comparison as a table per workload: medians, with min–max where runs differ. */
export function printReaders(result: ReadersResult, log: (line: string) => void): void {
  const range = (s: Spread | undefined, digits: number, scale = 1) =>
    s === undefined
      ? 'n/a'
      : `${num(s.median / scale, digits)} (${num(s.min / scale, digits)}–${num(s.max / scale, digits)})`;
  for (const workload of result.workloads) {
    log('');
    log(
      `Readers, ${workload.name} workload: ${num(workload.changes)} changes in ${num(workload.transactions)} transactions ` +
        `(${workload.description}; ${num(workload.walBytes / 1e6)} MB of WAL); median (min–max) of ${result.rounds} rounds`,
    );
    const header = [
      'reader',
      'changes/s',
      'ratio to ceiling',
      'CPU s / M changes',
      'bytes/change',
      'peak RSS MiB',
    ];
    const rows = workload.readers.map((r) => [
      r.reader,
      range(r.changesPerSec, 0),
      r.reader === 'pg_recvlogical' ? '1 (ceiling)' : range(r.ratio, 2),
      range(r.cpuSecondsPerMillion, 2),
      num(r.bytesPerChange, 0),
      r.peakRssBytes === undefined ? 'n/a' : `${num(r.peakRssBytes.max / 2 ** 20, 0)} max`,
    ]);
    const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
    const format = (cells: string[]) => `  ${cells.map((cell, i) => cell.padEnd(widths[i]!)).join('  ')}`;
    log(format(header));
    for (const row of rows) log(format(row));
    const startups = workload.runs.map((run) => run.startupMs).filter((v): v is number => v !== undefined);
    if (startups.length) log(`  slotlake process start → streaming: ${range(spread(startups), 0)} ms`);
    log(`  correctness     ${workload.ok ? 'OK' : `FAILED: ${workload.problems.join('; ')}`}`);
  }
  if (result.emptyRun) {
    log('');
    log(
      `Empty run (nothing to archive): ${num(result.emptyRun.wallMs, 0)} ms process start to exit` +
        (result.emptyRun.startupMs === undefined
          ? ''
          : `, ${num(result.emptyRun.startupMs, 0)} ms to streaming`),
    );
  }
}
