/**
 * Throughput side by side: many small transactions, read (A) by `slotlake run --until-caught-up` and (B) by
 * `pg_recvlogical` writing to /dev/null — the floor: what just reading the slot costs (server-side decoding
 * and transfer). A/B says what archiving (decode, encode, gzip, upload, checkpoint) costs on top.
 *
 * Every reader must see the same changes, and a slot cannot be rewound, so N pairs of slots are created in
 * one database BEFORE the workload: pipeline slots `<db>_a1..aN` (each its own pipeline: SLOTLAKE_SLOT,
 * SLOTLAKE_PIPELINE, SLOTLAKE_PREFIX) through `slotlake setup`, and plain pgoutput slots `<db>_b1..bN`. Then
 * the pairs run one after the other, alternating which side goes first, on an otherwise idle stack.
 */
import type { TestStack } from '../test/helpers/stack.js';
import { createPipeline } from '../test/helpers/stack.js';
import { expectCleanRun, runPgRecvlogical, runSlotlake } from './commands.js';

const ROWS_PER_TXN = 10;

export const SMALL_SCHEMA = `
CREATE TABLE orders (
  id bigint PRIMARY KEY, customer_id int NOT NULL, status text NOT NULL,
  total numeric(12, 2) NOT NULL, created_at timestamptz NOT NULL
);
CREATE TABLE order_items (
  order_id bigint NOT NULL, line int NOT NULL, sku text NOT NULL, qty int NOT NULL,
  price numeric(10, 2) NOT NULL, PRIMARY KEY (order_id, line)
);
CREATE TABLE events (
  id bigserial PRIMARY KEY, order_id bigint NOT NULL, kind text NOT NULL, payload jsonb NOT NULL,
  at timestamptz NOT NULL DEFAULT now()
)`;

/** One transaction = 10 changes over 3 tables: 1 order + 5 items + 3 events inserted, the order updated. */
export function smallWorkload(transactions: number): string {
  return `
DO $$
BEGIN
  FOR i IN 1..${transactions} LOOP
    INSERT INTO orders VALUES (i, i % 997, 'new', (i % 10000) / 100.0, now());
    INSERT INTO order_items
      SELECT i, l, 'sku-' || ((i * 7 + l) % 5000), 1 + l % 3, ((i + l) % 5000) / 100.0
      FROM generate_series(1, 5) AS l;
    INSERT INTO events (order_id, kind, payload)
      SELECT i, k, jsonb_build_object('order', i, 'step', k, 'note', md5(i::text || k))
      FROM unnest(ARRAY['created', 'priced', 'checked']) AS k;
    UPDATE orders SET status = 'paid' WHERE id = i;
    COMMIT;
  END LOOP;
END $$`;
}

export interface PairResult {
  readonly pair: number;
  readonly order: 'A,B' | 'B,A';
  readonly aWallMs: number;
  readonly aRunDurationMs: number;
  readonly aPeakRssBytes: number | undefined;
  readonly aChanges: number;
  readonly bWallMs: number;
  readonly bPeakRssBytes: number | undefined;
  /** A wall / B wall. */
  readonly ratio: number;
}

export interface Spread {
  readonly min: number;
  readonly median: number;
  readonly max: number;
}

export interface ThroughputResult {
  readonly transactions: number;
  readonly changes: number;
  readonly workloadMs: number;
  readonly walBytes: number;
  readonly pairs: readonly PairResult[];
  readonly aChangesPerSec: Spread;
  readonly bChangesPerSec: Spread | undefined;
  readonly ratio: Spread | undefined;
  /** A slotlake run with nothing to archive: process start, checks, lease, connect, checkpoint. */
  readonly emptyRunWallMs: number;
  readonly floorSkipped: string | undefined;
  readonly ok: boolean;
}

export function spread(values: readonly number[]): Spread {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  const median = sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  return { min: sorted[0]!, median, max: sorted[sorted.length - 1]! };
}

export interface ThroughputOptions {
  readonly changes: number;
  readonly pairs: number;
  readonly recvlogical: string | undefined;
  readonly log: (line: string) => void;
}

export async function benchThroughput(
  stack: TestStack,
  options: ThroughputOptions,
): Promise<ThroughputResult> {
  const { log } = options;
  const transactions = Math.max(1, Math.round(options.changes / ROWS_PER_TXN));
  const changes = transactions * ROWS_PER_TXN;
  const pipeline = await createPipeline(stack, SMALL_SCHEMA);
  const slotsA: string[] = [];
  const slotsB: string[] = [];
  try {
    const envOf = (slot: string): Record<string, string> => ({
      ...pipeline.env,
      SLOTLAKE_SLOT: slot,
      SLOTLAKE_PIPELINE: slot,
      SLOTLAKE_PREFIX: `${pipeline.name}/${slot}/`,
    });
    for (let pair = 1; pair <= options.pairs; pair++) {
      const a = `${pipeline.name}_a${pair}`;
      expectCleanRun(`slotlake setup (${a})`, await runSlotlake(['setup'], envOf(a), 120_000));
      slotsA.push(a);
      if (options.recvlogical) {
        const b = `${pipeline.name}_b${pair}`;
        await pipeline.sql(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [b]);
        slotsB.push(b);
      }
    }

    log(
      `workload: ${changes.toLocaleString('en-US')} changes in ${transactions.toLocaleString('en-US')} transactions…`,
    );
    const before = (await pipeline.sql('SELECT pg_current_wal_lsn() AS lsn')).rows[0] as { lsn: string };
    const workloadStarted = performance.now();
    await pipeline.sql(smallWorkload(transactions));
    const workloadMs = performance.now() - workloadStarted;
    const endpos = ((await pipeline.sql('SELECT pg_current_wal_lsn() AS lsn')).rows[0] as { lsn: string })
      .lsn;
    const walBytes = Number(
      (
        (await pipeline.sql('SELECT pg_wal_lsn_diff($1, $2) AS d', [endpos, before.lsn])).rows[0] as {
          d: string;
        }
      ).d,
    );

    const pairs: PairResult[] = [];
    let ok = true;
    for (let index = 0; index < options.pairs; index++) {
      const order: PairResult['order'] = index % 2 === 0 ? 'A,B' : 'B,A';
      const runA = async () => {
        const run = await runSlotlake(['run', '--until-caught-up'], envOf(slotsA[index]!), 30 * 60_000);
        const summary = expectCleanRun(`slotlake run (${slotsA[index]})`, run);
        if (Number(summary.changes) !== changes || summary.stopReason !== 'caught-up') {
          ok = false;
          log(
            `  ! pair ${index + 1}: slotlake archived ${String(summary.changes)} changes (${String(summary.stopReason)}), expected ${changes}`,
          );
        }
        return { run, summary };
      };
      const runB = async () => {
        if (!options.recvlogical) return undefined;
        const recv = await runPgRecvlogical({
          binary: options.recvlogical,
          databaseUrl: pipeline.databaseUrl,
          slot: slotsB[index]!,
          publication: pipeline.env.SLOTLAKE_PUBLICATION!,
          endpos,
          timeoutMs: 30 * 60_000,
        });
        if (recv.code !== 0)
          throw new Error(`pg_recvlogical exited ${recv.code ?? recv.signal}: ${recv.stderrTail}`);
        return recv;
      };
      let a: Awaited<ReturnType<typeof runA>>;
      let b: Awaited<ReturnType<typeof runB>>;
      if (order === 'A,B') {
        a = await runA();
        b = await runB();
      } else {
        b = await runB();
        a = await runA();
      }
      const result: PairResult = {
        pair: index + 1,
        order,
        aWallMs: a.run.wallMs,
        aRunDurationMs: Number(a.summary.durationMs),
        aPeakRssBytes: a.run.peakRssBytes,
        aChanges: Number(a.summary.changes),
        bWallMs: b?.wallMs ?? Number.NaN,
        bPeakRssBytes: b?.peakRssBytes,
        ratio: b ? a.run.wallMs / b.wallMs : Number.NaN,
      };
      pairs.push(result);
      log(
        `  pair ${result.pair} (${order}): A ${(result.aWallMs / 1000).toFixed(2)} s` +
          (b ? `, B ${(result.bWallMs / 1000).toFixed(2)} s, A/B ${result.ratio.toFixed(2)}` : ''),
      );
    }

    // B must have read everything: its slot's confirmed position is past the last commit.
    if (options.recvlogical) {
      const lagging = await pipeline.sql(
        `SELECT slot_name FROM pg_replication_slots WHERE slot_name = ANY($1) AND confirmed_flush_lsn < $2::pg_lsn`,
        [slotsB, endpos],
      );
      if (lagging.rowCount) {
        ok = false;
        log(
          `  ! pg_recvlogical slots not at ${endpos}: ${lagging.rows.map((r: { slot_name: string }) => r.slot_name).join(', ')}`,
        );
      }
    }

    const empty = await runSlotlake(['run', '--until-caught-up'], envOf(slotsA[0]!), 120_000);
    const emptySummary = expectCleanRun('slotlake run with nothing to do', empty);
    if (Number(emptySummary.changes) !== 0) ok = false;

    const bRuns = options.recvlogical ? pairs : [];
    return {
      transactions,
      changes,
      workloadMs,
      walBytes,
      pairs,
      aChangesPerSec: spread(pairs.map((p) => (changes / p.aWallMs) * 1000)),
      bChangesPerSec: bRuns.length ? spread(bRuns.map((p) => (changes / p.bWallMs) * 1000)) : undefined,
      ratio: bRuns.length ? spread(bRuns.map((p) => p.ratio)) : undefined,
      emptyRunWallMs: empty.wallMs,
      floorSkipped: options.recvlogical ? undefined : 'pg_recvlogical not found: B (the floor) skipped',
      ok,
    };
  } finally {
    for (const slot of [...slotsA, ...slotsB]) {
      await pipeline.sql('SELECT pg_drop_replication_slot($1)', [slot]).catch(() => undefined);
    }
    await pipeline.close();
  }
}
