/**
 * Slot health: an idle or filtered slot advances instead of pinning WAL; a transaction larger than one run
 * is finished by later runs exactly once; unchanged TOASTed values are listed, never nulled.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import pg from 'pg';
import { lsnDistance, parseLsn } from '../../src/lsn.js';
import {
  assertExactlyOnce,
  assertSlotAtCheckpoint,
  setup,
  status,
  useTestStack,
} from '../helpers/assertions.js';
import { runCli } from '../helpers/cli.js';
import { createReferenceSlot } from '../helpers/reference.js';
import { createPipeline } from '../helpers/stack.js';

const local = useTestStack();

describe('idle advance', () => {
  test('a filtered slot whose tables see no writes follows the WAL instead of pinning it', async () => {
    const pipeline = await createPipeline(
      local.stack,
      'CREATE TABLE quiet (id int PRIMARY KEY); CREATE TABLE busy (id serial PRIMARY KEY, v text);',
      { SLOTLAKE_TABLES: 'public.quiet', SLOTLAKE_STATUS_INTERVAL: '1s' },
    );
    const other = await local.stack.postgres.createDatabase(`${pipeline.name}_other`);
    const otherClient = new pg.Client({ connectionString: other });
    await otherClient.connect();
    try {
      await setup(pipeline);
      const start = await status(pipeline);
      // WAL grows from writes the publication does not send: another table, another database
      await pipeline.sql(`INSERT INTO busy (v) SELECT repeat('b', 200) FROM generate_series(1, 20000) g`);
      await otherClient.query(
        `CREATE TABLE elsewhere AS SELECT g, repeat('e', 200) AS v FROM generate_series(1, 20000) g`,
      );
      const walBefore = parseLsn(
        ((await pipeline.sql('SELECT pg_current_wal_lsn()::text AS l')).rows[0] as { l: string }).l,
      );
      assert.ok(
        lsnDistance(walBefore, parseLsn(start.slot.confirmedFlushLsn)) > 4_000_000,
        'several MB of WAL to retain',
      );

      // during a run with writes going on elsewhere, the slot keeps up
      let writing = true;
      const load = (async () => {
        while (writing)
          await otherClient.query(`INSERT INTO elsewhere SELECT g, 'x' FROM generate_series(1, 500) g`);
      })();
      // a budget that leaves time to read through the WAL above even on a busy machine
      const run = await runCli(['run', '--max-duration', '10s'], pipeline.env);
      writing = false;
      await load;
      assert.equal(run.code, 0, run.stderr);
      assert.equal(run.summary?.changes, 0);
      // the slot advanced past the WAL written before, and the checkpoint holds the same position
      const during = await assertSlotAtCheckpoint(pipeline);
      assert.ok(parseLsn(during) >= walBefore, `the slot advanced past ${walBefore.toString(16)}: ${during}`);

      // at rest: within one keepalive of the server's WAL position
      const idle = await runCli(['run', '--until-caught-up'], pipeline.env);
      assert.equal(idle.code, 0, idle.stderr);
      await assertSlotAtCheckpoint(pipeline);
      const after = await status(pipeline);
      const lag = lsnDistance(parseLsn(after.slot.currentWalLsn), parseLsn(after.slot.confirmedFlushLsn));
      assert.ok(lag < 64 * 1024, `lag after an idle run: ${lag} bytes`);
    } finally {
      await otherClient.end();
      await pipeline.close();
    }
  });
});

describe('a transaction larger than one run', () => {
  test('is cut where each run stops reading (a test knob: 1,500 changes a run), resumed where it stopped, and archived exactly once', async () => {
    const pipeline = await createPipeline(
      local.stack,
      'CREATE TABLE huge (id int PRIMARY KEY, v text); CREATE TABLE small (id serial PRIMARY KEY);',
      // each run stops reading after 1,500 changes, as at a deadline but deterministic (the knob reports
      // the stop as `deadline`; cutting by real budgets is the soak's and the budget tests' business)
      { SLOTLAKE_OBJECT_MAX_BYTES: '24KiB', SLOTLAKE_TEST_STOP_AFTER_CHANGES: '1500' },
    );
    try {
      await setup(pipeline);
      const reference = await createReferenceSlot(pipeline);
      await pipeline.sql('INSERT INTO small DEFAULT VALUES');
      await pipeline.sql(`INSERT INTO huge SELECT g, md5(g::text) FROM generate_series(1, 4000) g`);
      await pipeline.sql('INSERT INTO small DEFAULT VALUES');
      const partials: Array<{ commitLsn: string; nextSeq: number }> = [];
      for (let run = 1; ; run++) {
        // --until-caught-up: the run that finishes the transaction stops once caught up, not at its deadline
        const result = await runCli(['run', '--until-caught-up', '--max-duration', '60s'], pipeline.env);
        assert.equal(result.code, 0, result.stderr);
        await assertSlotAtCheckpoint(pipeline);
        const report = await status(pipeline);
        const partial = result.summary?.partial as { commitLsn: string; nextSeq: number } | null;
        // cut by the knob (reported as a deadline) while the transaction goes on; caught up once it is done
        assert.equal(result.summary?.stopReason, partial ? 'deadline' : 'caught-up');
        if (!partial) break;
        partials.push(partial);
        assert.deepEqual(report.partial, partial, 'the cut is in the checkpoint');
        assert.ok(run < 10);
      }
      // 1 + 4,000 + 1 changes: cut after 1,500 (1,499 of the big one), 3,000, then finished
      assert.equal(partials.length, 2, `two cuts: ${JSON.stringify(partials)}`);
      assert.equal(new Set(partials.map((p) => p.commitLsn)).size, 1, 'always the same transaction');
      assert.deepEqual(
        partials.map((p) => p.nextSeq),
        [1499, 2999],
      );
      const last = await runCli(['run', '--until-caught-up'], pipeline.env);
      assert.equal(last.code, 0, last.stderr);
      await assertSlotAtCheckpoint(pipeline);
      const lake = await assertExactlyOnce(local.s3, pipeline, reference, ['public.huge', 'public.small']);
      assert.ok(
        lake.dataKeys.some((key) => /-\d{10}\.jsonl\.gz$/.test(key)),
        'continued objects carry a part suffix',
      );
      const seqs = lake.records
        .filter((r) => r.record.source.table === 'huge')
        .map((r) => r.record.source.seq);
      assert.equal(new Set(seqs).size, 4000);
    } finally {
      await pipeline.close();
    }
  });
});

describe('unchanged TOAST', () => {
  test('listed in unchanged_toast and omitted, never null; taken from the old row under REPLICA IDENTITY FULL', async () => {
    const pipeline = await createPipeline(
      local.stack,
      `CREATE TABLE docs (id int PRIMARY KEY, body text, n int);
       CREATE TABLE docs_full (id int PRIMARY KEY, body text, n int);
       ALTER TABLE docs_full REPLICA IDENTITY FULL;
       ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;
       ALTER TABLE docs_full ALTER COLUMN body SET STORAGE EXTERNAL;`,
    );
    try {
      await setup(pipeline);
      const reference = await createReferenceSlot(pipeline);
      const big = `(SELECT string_agg(md5(g::text), '') FROM generate_series(1, 400) g)`; // 12.8 kB, out of line
      await pipeline.sql(`INSERT INTO docs VALUES (1, ${big}, 0)`);
      await pipeline.sql(`INSERT INTO docs_full VALUES (1, ${big}, 0)`);
      await pipeline.sql(`UPDATE docs SET n = 1 WHERE id = 1`);
      await pipeline.sql(`UPDATE docs_full SET n = 1 WHERE id = 1`);
      const run = await runCli(['run', '--until-caught-up'], pipeline.env);
      assert.equal(run.code, 0, run.stderr);
      // test_decoding prints the unchanged value as unchanged-toast-datum too (and the old row's under FULL)
      const lake = await assertExactlyOnce(local.s3, pipeline, reference, [
        'public.docs',
        'public.docs_full',
      ]);
      const body = ((await pipeline.sql(`SELECT body FROM docs WHERE id = 1`)).rows[0] as { body: string })
        .body;
      const update = lake.records.find((r) => r.record.source.table === 'docs' && r.record.op === 'u')!;
      assert.deepEqual(update.record.unchanged_toast, ['body']);
      assert.deepEqual(update.record.after, { id: 1, n: 1 }, 'body absent, not null');
      assert.ok(!update.line.includes('"body":null'));
      const full = lake.records.find((r) => r.record.source.table === 'docs_full' && r.record.op === 'u')!;
      assert.equal(full.record.unchanged_toast, undefined);
      assert.equal(full.record.after?.body, body, 'the value from the old row');
      assert.equal(full.record.before?.body, body);
    } finally {
      await pipeline.close();
    }
  });
});
