/**
 * Snapshot throughput: a table of `rows` rows that exists before the pipeline, archived whole by one
 * `slotlake run --until-caught-up` (the initial snapshot, chunk by chunk between watermarks), against
 * `pg_dump --data-only -t` of the same table to /dev/null — the floor: what reading the table out of Postgres
 * costs. Both on Debian's PostgreSQL 15 (the embedded server ships no pg_dump, and a pg_dump older than the
 * server refuses it). Reports rows/s for both and checks that the archive holds every row (`op: "r"` records
 * in the manifests).
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { debianPostgresBinDir } from '../src/devstack/postgres.js';
import { runCli } from '../test/helpers/cli.js';
import { createPipeline, startTestStack } from '../test/helpers/stack.js';

export interface SnapshotResult {
  readonly rows: number;
  readonly slotlake: { readonly ms: number; readonly rowsPerSecond: number; readonly runs: number };
  readonly pgDump: { readonly ms: number; readonly rowsPerSecond: number } | null;
  readonly archivedRows: number;
  readonly ok: boolean;
}

export async function benchSnapshot(options: {
  rows: number;
  log: (line: string) => void;
}): Promise<SnapshotResult> {
  const { rows, log } = options;
  const binDir = debianPostgresBinDir(15);
  if (!binDir)
    throw new Error('the snapshot part needs Debian PostgreSQL 15 (apt-get install postgresql-15)');
  log(`snapshot: a ${rows.toLocaleString('en-US')}-row table archived by the initial snapshot vs pg_dump…`);
  const stack = await startTestStack({ binDir });
  try {
    const pipeline = await createPipeline(
      stack,
      'CREATE TABLE s (id bigint PRIMARY KEY, name text, amount numeric(12,2), at timestamptz, flags int[])',
      { SLOTLAKE_SNAPSHOT: 'initial', SLOTLAKE_LOG_LEVEL: 'ERROR' },
    );
    try {
      await pipeline.sql(
        `INSERT INTO s SELECT g, 'customer ' || g, (g % 100000) / 100.0,
                '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 second', ARRAY[g % 7, g % 11]
           FROM generate_series(1, $1::int) g`,
        [rows],
      );
      await pipeline.sql('VACUUM ANALYZE s');
      const setup = await runCli(['setup'], pipeline.env);
      if (setup.code !== 0) throw new Error(`setup failed: ${setup.stderr}`);
      const started = performance.now();
      let runs = 0;
      let archivedRows = 0;
      for (;;) {
        runs++;
        const result = await runCli(['run', '--until-caught-up'], pipeline.env, 1_800_000);
        if (result.code !== 0) throw new Error(`run failed: ${result.stderr}`);
        archivedRows += Number((result.summary?.snapshot as { rows?: number } | undefined)?.rows ?? 0);
        if (result.summary?.stopReason === 'caught-up' || runs >= 5) break;
      }
      const slotlakeMs = performance.now() - started;
      const pgDumpPath = join(binDir, 'pg_dump');
      let pgDump: SnapshotResult['pgDump'] = null;
      if (existsSync(pgDumpPath)) {
        const dumpStarted = performance.now();
        const dump = spawnSync(
          pgDumpPath,
          ['--data-only', '-t', 'public.s', '-f', '/dev/null', pipeline.databaseUrl],
          {
            stdio: ['ignore', 'ignore', 'pipe'],
          },
        );
        if (dump.status !== 0) throw new Error(`pg_dump failed: ${dump.stderr.toString()}`);
        const ms = performance.now() - dumpStarted;
        pgDump = { ms, rowsPerSecond: (rows / ms) * 1000 };
      }
      return {
        rows,
        slotlake: { ms: slotlakeMs, rowsPerSecond: (rows / slotlakeMs) * 1000, runs },
        pgDump,
        archivedRows,
        ok: archivedRows === rows,
      };
    } finally {
      await pipeline.close();
    }
  } finally {
    await stack.stop();
  }
}
