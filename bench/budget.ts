/**
 * The run budget, timed: `slotlake run --max-duration <budget>` under a continuous write load, several
 * times. A scheduler (Lambda) kills a run at the end of its budget, so the wall time — process start
 * included — must stay inside it; the run's own `durationMs` and `overrunMs` say where the time went.
 * The integration tests check that such a run stops with `deadline` and that the next run archives the
 * rest exactly once; the timing lives here, where a loaded machine is a measurement, not a failure.
 */
import pg from 'pg';
import type { TestStack } from '../test/helpers/stack.js';
import { createPipeline } from '../test/helpers/stack.js';
import { expectCleanRun, runSlotlake } from './commands.js';

export interface BudgetRun {
  readonly wallMs: number;
  readonly durationMs: number;
  readonly overrunMs: number;
  readonly changes: number;
  readonly stopReason: string;
  /** Wall time (process start included) within the budget. */
  readonly withinBudget: boolean;
}

export interface BudgetResult {
  readonly budgetMs: number;
  readonly runs: readonly BudgetRun[];
  /** Every run stopped with `deadline` and archived something while the load ran. */
  readonly ok: boolean;
}

export async function benchBudget(
  stack: TestStack,
  options: { budgetMs: number; runs: number; log: (line: string) => void },
): Promise<BudgetResult> {
  const pipeline = await createPipeline(
    stack,
    'CREATE TABLE ticks (id bigserial PRIMARY KEY, payload text, at timestamptz DEFAULT now());',
  );
  const writer = new pg.Client({ connectionString: pipeline.databaseUrl });
  try {
    expectCleanRun('setup', await runSlotlake(['setup'], pipeline.env, 60_000));
    await writer.connect();
    let writing = true;
    const load = (async () => {
      while (writing)
        await writer.query(`INSERT INTO ticks (payload) SELECT repeat('x', 200) FROM generate_series(1, 50)`);
    })();
    const runs: BudgetRun[] = [];
    try {
      for (let i = 0; i < options.runs; i++) {
        const run = await runSlotlake(
          ['run', '--max-duration', `${options.budgetMs}ms`],
          pipeline.env,
          options.budgetMs * 4,
        );
        const summary = expectCleanRun(`budget run ${i + 1}`, run);
        runs.push({
          wallMs: run.wallMs,
          durationMs: Number(summary.durationMs),
          overrunMs: Number(summary.overrunMs ?? 0),
          changes: Number(summary.changes),
          stopReason: String(summary.stopReason),
          withinBudget: run.wallMs < options.budgetMs,
        });
        options.log(`  run ${i + 1}: wall ${Math.round(run.wallMs)} ms, ${String(summary.changes)} changes`);
      }
    } finally {
      writing = false;
      await load;
    }
    return {
      budgetMs: options.budgetMs,
      runs,
      ok: runs.every((run) => run.stopReason === 'deadline' && run.changes > 0),
    };
  } finally {
    await writer.end().catch(() => undefined);
    await pipeline.close();
  }
}
