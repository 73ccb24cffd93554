/**
 * The headline: ONE transaction of many rows, archived by one `slotlake run --until-caught-up` in a child
 * process, with the child's peak RSS measured. slotlake asks for whole (non-streamed) transactions, so the
 * server decodes the transaction (spilling to disk past logical_decoding_work_mem) and sends it after its
 * commit; slotlake streams it into a gzip spool file and must stay flat in memory however big it is.
 *
 * Correctness, cheaply: the run summary's `changes` and the sum of the manifests' object row counts must
 * both equal the row count. Optionally the same transaction is read from a second slot with pg_recvlogical
 * (created before the workload) to show how much of the wall time is the server's decoding.
 */
import type { TestStack } from '../test/helpers/stack.js';
import { BUCKET, createPipeline } from '../test/helpers/stack.js';
import {
  benchS3Client,
  manifestTotals,
  sampleRecords,
  type ManifestTotals,
  type RecordSample,
} from './archive.js';
import { expectCleanRun, runPgRecvlogical, runSlotlake } from './commands.js';
import type { MeasuredRun, RssSample } from './measure.js';

export const RSS_TARGET_BYTES = 256 * 1024 * 1024;

const SCHEMA = `
CREATE TABLE big (
  id bigint PRIMARY KEY,
  payload text NOT NULL,
  amount numeric(12, 2) NOT NULL,
  created timestamptz NOT NULL
)`;

/** ~200 bytes of row data per row: 8 (id) + 173 (payload) + ~8 (amount) + 8 (created). */
const WORKLOAD = `
INSERT INTO big
SELECT g,
       md5(g::text) || repeat('x', 140),
       (g % 100000) / 100.0,
       timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second'
FROM generate_series(1, $1::int) AS g`;

export interface BigResult {
  readonly rows: number;
  readonly insertMs: number;
  readonly walBytes: number;
  readonly avgRowBytesInPostgres: number;
  readonly run: {
    readonly wallMs: number;
    /** The run's own durationMs (from its start inside the process, without Node's startup). */
    readonly runDurationMs: number;
    readonly changesPerSec: number;
    readonly peakRssBytes: number | undefined;
    readonly peakRssSource: string;
    readonly polledPeakRssBytes: number | undefined;
    readonly targetBytes: number;
    readonly withinTarget: boolean;
    readonly stopReason: unknown;
    readonly objects: unknown;
    readonly compressedBytes: unknown;
    readonly readPauses: unknown;
    readonly timeline: readonly RssSample[];
  };
  readonly checks: {
    readonly summaryChanges: number;
    readonly manifestRows: number;
    readonly ok: boolean;
  };
  readonly archive: ManifestTotals;
  readonly sample: RecordSample | undefined;
  readonly floor:
    | { readonly skipped: string }
    | { readonly wallMs: number; readonly changesPerSec: number; readonly peakRssBytes: number | undefined };
}

export interface BigOptions {
  readonly rows: number;
  readonly recvlogical: string | undefined;
  /** Also read the transaction with pg_recvlogical (adds the server's decode time once more). */
  readonly withFloor: boolean;
  readonly log: (line: string) => void;
}

export async function benchBigTransaction(stack: TestStack, options: BigOptions): Promise<BigResult> {
  const { rows, log } = options;
  const pipeline = await createPipeline(stack, SCHEMA);
  try {
    const setup = await runSlotlake(['setup'], pipeline.env, 120_000);
    expectCleanRun('slotlake setup', setup);
    const floorSlot = `${pipeline.name}_floor`;
    const withFloor = options.withFloor && options.recvlogical !== undefined;
    if (withFloor)
      await pipeline.sql(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [floorSlot]);

    log(`inserting ${rows.toLocaleString('en-US')} rows in one transaction…`);
    const before = (await pipeline.sql('SELECT pg_current_wal_lsn() AS lsn')).rows[0] as { lsn: string };
    const insertStarted = performance.now();
    await pipeline.sql(WORKLOAD, [rows]);
    const insertMs = performance.now() - insertStarted;
    const after = (await pipeline.sql('SELECT pg_current_wal_lsn() AS lsn')).rows[0] as { lsn: string };
    const walBytes = Number(
      (
        (await pipeline.sql('SELECT pg_wal_lsn_diff($1, $2) AS d', [after.lsn, before.lsn])).rows[0] as {
          d: string;
        }
      ).d,
    );
    const size = (
      await pipeline.sql(
        'SELECT avg(pg_column_size(id) + pg_column_size(payload) + pg_column_size(amount) + pg_column_size(created))::float8 AS b FROM (SELECT * FROM big LIMIT 1000) s',
      )
    ).rows[0] as { b: number };
    log(
      `  inserted in ${(insertMs / 1000).toFixed(1)} s (${(walBytes / 1e6).toFixed(0)} MB of WAL); archiving…`,
    );

    const run: MeasuredRun = await runSlotlake(['run', '--until-caught-up'], pipeline.env, 30 * 60_000);
    const summary = expectCleanRun('slotlake run --until-caught-up (big transaction)', run);
    const summaryChanges = Number(summary.changes);
    const s3 = benchS3Client(stack.awsEnv);
    const archive = await manifestTotals(s3, BUCKET, pipeline.env.SLOTLAKE_PREFIX!);
    const sample = await sampleRecords(s3, BUCKET, pipeline.env.SLOTLAKE_PREFIX!);
    s3.destroy();
    const peak = run.peakRssBytes;
    log(
      `  archived in ${(run.wallMs / 1000).toFixed(1)} s, peak RSS ${peak === undefined ? '?' : (peak / 2 ** 20).toFixed(0)} MiB`,
    );

    let floor: BigResult['floor'] = {
      skipped: options.recvlogical ? 'not requested (BENCH_BIG_FLOOR=0)' : 'pg_recvlogical not found',
    };
    if (withFloor) {
      log('  reading the same transaction with pg_recvlogical (floor)…');
      const recv = await runPgRecvlogical({
        binary: options.recvlogical!,
        databaseUrl: pipeline.databaseUrl,
        slot: floorSlot,
        publication: pipeline.env.SLOTLAKE_PUBLICATION!,
        endpos: after.lsn,
        timeoutMs: 30 * 60_000,
      });
      if (recv.code !== 0)
        throw new Error(`pg_recvlogical exited ${recv.code ?? recv.signal}: ${recv.stderrTail}`);
      floor = {
        wallMs: recv.wallMs,
        changesPerSec: (rows / recv.wallMs) * 1000,
        peakRssBytes: recv.peakRssBytes,
      };
      await pipeline.sql('SELECT pg_drop_replication_slot($1)', [floorSlot]);
    }

    return {
      rows,
      insertMs,
      walBytes,
      avgRowBytesInPostgres: size.b,
      run: {
        wallMs: run.wallMs,
        runDurationMs: Number(summary.durationMs),
        changesPerSec: (summaryChanges / run.wallMs) * 1000,
        peakRssBytes: peak,
        peakRssSource: run.peakRssSource,
        polledPeakRssBytes: run.polledPeakRssBytes,
        targetBytes: RSS_TARGET_BYTES,
        withinTarget: peak !== undefined && peak < RSS_TARGET_BYTES,
        stopReason: summary.stopReason,
        objects: summary.objects,
        compressedBytes: summary.bytes,
        readPauses: summary.readPauses,
        timeline: run.timeline,
      },
      checks: {
        summaryChanges,
        manifestRows: archive.rows,
        ok: summaryChanges === rows && archive.rows === rows && summary.stopReason === 'caught-up',
      },
      archive,
      sample,
      floor,
    };
  } finally {
    // The slot pins WAL: drop it so the later parts do not pay for it.
    await pipeline
      .sql(
        'SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active',
        [pipeline.env.SLOTLAKE_SLOT],
      )
      .catch(() => undefined);
    await pipeline.close();
  }
}
