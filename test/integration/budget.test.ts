/**
 * A run never outlives its budget, however slow the object store: S3 turns slow — from the first upload on,
 * every request is answered 1.5 s late (the HTTP fault proxy delays each one) — and `slotlake run
 * --max-duration 12s` under a concurrent write load still returns before its budget: the first run, which
 * measured a fast store, has its final flush cut at the deadline's cutoff, its intent left to the next run, and
 * says so (`flush-timeout`). The next run recovers that intent. The runs after it keep making progress (the
 * checkpoint, read from DynamoDB, moves, and moves again soon after), because what each run measured of the
 * store's speed is kept in the checkpoint item and the next run stops reading early enough — and because no
 * run spends its budget redoing what an earlier one finished. Each run's summary names the checkpoint DynamoDB
 * holds after it. A clean run then leaves the archive exactly once.
 *
 * Budget, delay and safety margin are scaled down from the 40 s / 5 s / 2 s of a Lambda-sized example to keep
 * the file short; the property is the same: one flush takes several times longer than the first run expects,
 * and a run's fixed costs (bucket check, recovery) take a large part of its budget.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import pg from 'pg';
import { parseLsn } from '../../src/lsn.js';
import {
  assertExactlyOnce,
  assertSlotAtCheckpointDirect,
  readCheckpointItem,
  readSlotDirect,
  setup,
  useTestStack,
} from '../helpers/assertions.js';
import { logLines, runCli, type CliResult } from '../helpers/cli.js';
import { isS3Put } from '../helpers/http-fault-proxy.js';
import { createReferenceSlot } from '../helpers/reference.js';
import { startRunProxies, type RunProxies } from '../helpers/run-proxies.js';
import { assertCommittedObjectsUntouched } from '../helpers/s3-history.js';
import { createPipeline } from '../helpers/stack.js';

const local = useTestStack();

const BUDGET_MS = 12_000;
const DELAY_MS = 1_500;
/** The checkpoint first moves within this many slow runs (the first one's flush is cut, the second recovers)... */
const FIRST_PROGRESS_WITHIN = 4;
/** ...and moves again at most this many runs later (no run livelocks on leftover work). */
const NEXT_PROGRESS_WITHIN = 2;
const MAX_SLOW_RUNS = FIRST_PROGRESS_WITHIN + NEXT_PROGRESS_WITHIN;
/** The prior a pipeline without measurements starts from (sink/store-speed.ts): 150 ms per S3 request. */
const PRIOR_REQUEST_LATENCY_MS = 150;

test(`${BUDGET_MS / 1000} s runs against an S3 that turns slow (every request ${DELAY_MS / 1000} s late) end in time; the next runs recover and keep making progress`, async () => {
  const pipeline = await createPipeline(
    local.stack,
    `CREATE TABLE orders (id serial PRIMARY KEY, status text, note text);`,
    { SLOTLAKE_SAFETY_MARGIN: '1s' },
  );
  const proxies: RunProxies[] = [];
  const writer = new pg.Client({ connectionString: pipeline.databaseUrl });
  let writing = true;
  let load: Promise<void> | undefined;
  try {
    await setup(pipeline);
    const reference = await createReferenceSlot(pipeline);
    await writer.connect();
    // The write load: one small transaction after another, each held open briefly so that transactions are
    // in flight whenever a run reads (the load's shape, not a wait for anything).
    let transactions = 0;
    load = (async () => {
      while (writing) {
        await writer.query('BEGIN');
        await writer.query(
          `INSERT INTO orders (status, note) SELECT 'new', repeat('n', 40) || g FROM generate_series(1, 4) g`,
        );
        await writer.query(`UPDATE orders SET status = 'paid' WHERE id = (SELECT max(id) - 2 FROM orders)`);
        await writer.query('SELECT pg_sleep(0.02)');
        await writer.query('COMMIT');
        transactions++;
      }
    })();

    const slow = await startRunProxies(local.stack, 'slow');
    proxies.push(slow);
    // S3 turns slow when the first upload arrives, and stays slow for every request after it.
    let slowedDown = false;
    slow.s3.inject({
      match: (request) => (slowedDown ||= isS3Put('/data/')(request)),
      action: { kind: 'delay', ms: DELAY_MS },
    });

    const runs: CliResult[] = [];
    const items: Array<Awaited<ReturnType<typeof readCheckpointItem>>> = [];
    // The checkpoint advances (runs that moved it), from the slot's position before any run.
    let highest = (await readSlotDirect(pipeline)).confirmedFlushLsn!;
    const advances: number[] = [];
    for (let i = 0; i < MAX_SLOW_RUNS && advances.length < 2; i++) {
      const before = await readCheckpointItem(pipeline);
      const run = await runCli(
        ['run', '--max-duration', `${BUDGET_MS / 1000}s`],
        slow.env(pipeline),
        3 * BUDGET_MS,
      );
      runs.push(run);
      const describe = `run ${i + 1}: ${JSON.stringify(run.summary)} (elapsed ${Math.round(run.elapsedMs)} ms)\n${run.stderr}`;
      // Ended by itself, cleanly, before its budget — on its own clock — and said why.
      assert.equal(run.killedByTimeout, false, describe);
      assert.equal(run.signal, null, describe);
      assert.equal(run.code, 0, describe);
      assert.ok(run.summary, describe);
      assert.ok((run.summary.durationMs as number) <= BUDGET_MS, describe);
      assert.equal(run.summary.overrunMs, 0, describe);
      assert.ok(['flush-timeout', 'deadline'].includes(run.summary.stopReason as string), describe);
      const after = await readCheckpointItem(pipeline);
      items.push(after);
      // The intent the previous run left is gone: this run recovered it before streaming.
      const left = before?.intentKeys?.SS ?? [];
      if (left.length > 0) {
        assert.ok(
          (run.summary.recoveredObjects as number) >= left.length,
          `recovered the intent: ${describe}`,
        );
        const stillThere = (after?.intentKeys?.SS ?? []).filter((key) => left.includes(key));
        assert.deepEqual(stillThere, [], `the previous intent is cleared: ${describe}`);
      }
      // The summary tells what the run committed: its checkpoint is the one stored (before the first
      // checkpoint, the summary names the position the run started from).
      if (after?.lsn?.S !== undefined)
        assert.equal(run.summary.checkpoint, after.lsn.S, `the summary's checkpoint: ${describe}`);
      // Progress: the checkpoint (read directly) moved past everything stored before.
      const stored = after?.lsn?.S === undefined ? undefined : parseLsn(after.lsn.S);
      if (stored !== undefined && stored > highest) {
        highest = stored;
        advances.push(i + 1);
        assert.ok(
          (run.summary.changes as number) > 0,
          `a run that moved the checkpoint counts its changes: ${describe}`,
        );
      }
    }
    const reasons = runs.map((run) => run.summary?.stopReason).join(', ');
    const story = () =>
      runs
        .map((run, i) => {
          const { stopReason, changes, recoveredObjects, durationMs, checkpoint } = run.summary ?? {};
          const logs = logLines(run.stderr).map((line) => {
            const { level: _l, timestamp, service: _s, sampling_rate: _r, pipeline: _p, ...rest } = line;
            return `    ${String(timestamp).slice(11, 23)} ${JSON.stringify(rest)}`;
          });
          const speed = ['uploadBytesPerMs', 'requestLatencyMs', 'commitLatencyMs']
            .map((name) => `${name}=${items[i]?.[name]?.N}`)
            .join(' ');
          const facts = { stopReason, changes, recoveredObjects, durationMs, checkpoint };
          return `run ${i + 1}: ${JSON.stringify(facts)} intent=${items[i]?.intentKeys?.SS?.length ?? 0} ${speed}\n${logs.join('\n')}`;
        })
        .join('\n');
    assert.ok(
      advances.length >= 1 && advances[0]! <= FIRST_PROGRESS_WITHIN,
      `the checkpoint moved within ${FIRST_PROGRESS_WITHIN} slow runs (${reasons})\n${story()}`,
    );
    assert.ok(
      advances.length >= 2 && advances[1]! - advances[0]! <= NEXT_PROGRESS_WITHIN,
      `the checkpoint moved again within ${NEXT_PROGRESS_WITHIN} runs of run ${advances[0]} (${reasons})\n${story()}`,
    );
    // The first run measured a fast store: its flush was cut, leaving an intent, which the second recovered.
    assert.equal(runs[0]!.summary?.stopReason, 'flush-timeout', story());
    assert.ok((items[0]?.intentKeys?.SS ?? []).length > 0, `the first run left an intent\n${story()}`);
    assert.ok((runs[1]!.summary?.recoveredObjects as number) > 0, `the second run recovered it\n${story()}`);
    const flushCut = runs.findIndex((run) => run.summary?.stopReason === 'flush-timeout');
    assert.ok(
      Number(items[flushCut]?.requestLatencyMs?.N) > PRIOR_REQUEST_LATENCY_MS,
      `the run whose flush was cut remembered the store as slower than the prior: ${JSON.stringify(items[flushCut])}`,
    );
    // What the runs measured is in the checkpoint item (read directly): S3 requests take seconds.
    const item = items[items.length - 1]!;
    const speed = {
      uploadBytesPerMs: Number(item.uploadBytesPerMs?.N),
      requestLatencyMs: Number(item.requestLatencyMs?.N),
      commitLatencyMs: Number(item.commitLatencyMs?.N),
    };
    assert.ok(
      Object.values(speed).every((value) => Number.isFinite(value) && value > 0),
      JSON.stringify(speed),
    );
    assert.ok(speed.requestLatencyMs >= DELAY_MS / 2, `request latency remembered: ${JSON.stringify(speed)}`);
    process.stderr.write(
      `budget: ${runs.length} slow runs (${reasons}), checkpoint moved at runs ${advances.join(', ')}; ` +
        `remembered ${JSON.stringify(speed)}; ${transactions} transactions written\n`,
    );

    // Then a clean run without faults: everything exactly once.
    writing = false;
    await load;
    const clean = await startRunProxies(local.stack, 'clean');
    proxies.push(clean);
    const final = await runCli(['run', '--until-caught-up', '--max-duration', '90s'], clean.env(pipeline));
    assert.equal(final.code, 0, final.stderr);
    assert.equal(final.summary?.stopReason, 'caught-up', JSON.stringify(final.summary));
    await assertSlotAtCheckpointDirect(pipeline);
    await assertExactlyOnce(local.s3, pipeline, reference, ['public.orders']);
    await assertCommittedObjectsUntouched(
      local.s3,
      pipeline,
      proxies.flatMap((run) => run.s3Requests()),
    );
  } finally {
    writing = false;
    await load?.catch(() => undefined);
    await writer.end().catch(() => undefined);
    await Promise.all(proxies.map((run) => run.stop()));
    await pipeline.close();
  }
});
