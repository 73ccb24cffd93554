/**
 * Snapshots (contract §4.1): a table's existing rows archived as `op: "r"` records, chunk by chunk between
 * watermarks, interleaved with the change stream, over many short runs — some killed at every snapshot step —
 * while a concurrent workload updates (also leaving a TOASTed column unchanged), deletes, inserts and moves
 * keys. Afterwards the table rebuilt from the archive alone (test/helpers/replay.ts: every record in
 * `(commit_lsn, seq)` order) equals the table in Postgres, row for row, and `slotlake verify` says so;
 * `(commit_lsn, seq)` is unique; every object is in a manifest; `status` shows the progress.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { setup, status, useTestStack } from '../helpers/assertions.js';
import { leaseRunsOut, runCli, type CliResult } from '../helpers/cli.js';
import { readLake, type ChangeRecord } from '../helpers/lake.js';
import { replay, type Row } from '../helpers/replay.js';
import { createPipeline, type Pipeline } from '../helpers/stack.js';

const local = useTestStack();

const SCHEMA = `
CREATE TABLE t (id int PRIMARY KEY, grp int NOT NULL, v text, big text);
ALTER TABLE t ALTER COLUMN big SET STORAGE EXTERNAL;`;

/**
 * Rows that exist before the pipeline does (SNAPSHOT_TEST_ROWS=200000 for the figure): with chunks of
 * CHUNK_ROWS the snapshot takes ten chunks over many runs, whatever the number.
 */
const EXISTING_ROWS = Number(process.env.SNAPSHOT_TEST_ROWS ?? 20_000);
const CHUNK_ROWS = Math.max(100, Math.round(EXISTING_ROWS / 10));
const KILL_POINTS = [
  'snapshot-read',
  'snapshot-written',
  'after-upload',
  'after-checkpoint',
  'mid-transaction',
];

/** A seeded PRNG (mulberry32), so a failing run can be replayed with SNAPSHOT_TEST_SEED. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Updates, TOAST-preserving updates, deletes, inserts and key moves until `stop()`; returns the statements run. */
function workload(pipeline: Pipeline, random: () => number): { stop(): Promise<number> } {
  let running = true;
  let statements = 0;
  const done = (async () => {
    let next = EXISTING_ROWS + 1;
    while (running) {
      const id = 1 + Math.floor(random() * EXISTING_ROWS);
      const choice = random();
      if (choice < 0.3) await pipeline.sql(`UPDATE t SET v = v || '+' WHERE id BETWEEN $1 AND $1 + 20`, [id]);
      else if (choice < 0.55)
        await pipeline.sql(`UPDATE t SET grp = grp + 1 WHERE id BETWEEN $1 AND $1 + 5`, [id]);
      else if (choice < 0.7) await pipeline.sql(`DELETE FROM t WHERE id BETWEEN $1 AND $1 + 3`, [id]);
      else if (choice < 0.85) {
        await pipeline.sql(
          `INSERT INTO t SELECT g, 0, 'new' || g, NULL FROM generate_series($1::int, $1::int + 9) g`,
          [next],
        );
        next += 10;
      } else await pipeline.sql(`UPDATE t SET id = id + 10000000 WHERE id = $1`, [id]);
      statements++;
      // A steady load, not a flood: about 25 statements (some 250 changes) a second.
      await new Promise((resolve) => setTimeout(resolve, 40));
    }
  })();
  return {
    async stop() {
      running = false;
      await done;
      return statements;
    },
  };
}

function snapshotOf(result: CliResult): { pendingTables: number; rows: number } | null {
  return (result.summary?.snapshot as { pendingTables: number; rows: number } | null | undefined) ?? null;
}

describe('snapshots', () => {
  test(`a table that held ${EXISTING_ROWS} rows before the pipeline is archived whole, under a concurrent workload, over many short runs, some killed`, async () => {
    const seed = Number(process.env.SNAPSHOT_TEST_SEED ?? Math.floor(Math.random() * 1_000_000));
    console.log(`snapshot test seed ${seed} (SNAPSHOT_TEST_SEED=${seed} to replay)`);
    const random = prng(seed);
    const pipeline = await createPipeline(local.stack, SCHEMA, {
      SLOTLAKE_SNAPSHOT: 'initial',
      SLOTLAKE_LEASE_DURATION: '3s',
      SLOTLAKE_SAFETY_MARGIN: '1s',
      SLOTLAKE_BATCH_MAX_AGE: '2s',
      // small chunks and short runs: the snapshot must take many runs (and survive the kills among them)
      SLOTLAKE_SNAPSHOT_CHUNK_ROWS: String(CHUNK_ROWS),
      // however fast the machine: a run stops reading (as at its deadline) after about four chunks' worth of
      // records, snapshot rows and changes alike (a test knob), if its 8 s deadline did not come first (on a
      // busy machine, starting alone takes seconds)
      SLOTLAKE_TEST_STOP_AFTER_CHANGES: String(4 * CHUNK_ROWS),
      // a killed run is dead: the next one waits 1 s past its lease, not 5 s, before deleting its objects
      SLOTLAKE_TEST_TAKEOVER_GRACE: '1s',
    });
    try {
      await pipeline.sql(
        `INSERT INTO t SELECT g, g % 7, 'v' || g,
                CASE WHEN g % 500 = 0 THEN (SELECT string_agg(md5(random()::text || i::text), '') FROM generate_series(1, 200) i) END
           FROM generate_series(1, $1::int) g`,
        [EXISTING_ROWS],
      );
      await pipeline.sql('ANALYZE t');
      await setup(pipeline);
      const writer = workload(pipeline, random);
      let runs = 0;
      let kills = 0;
      // Every run is armed to die at the next kill point not reached yet (the snapshot's own first, while the
      // snapshot surely has chunks to read), until a run died at each of them; then every third run at a
      // random one.
      const landed = new Set<string>();
      const nextKill = () =>
        KILL_POINTS.find((point) => !landed.has(point)) ??
        KILL_POINTS[Math.floor(random() * KILL_POINTS.length)];
      let snapshotDone = false;
      try {
        while (!snapshotDone) {
          runs++;
          assert.ok(runs <= 80, 'the snapshot finishes within 80 runs');
          const killEvery = landed.size < KILL_POINTS.length ? 1 : 3;
          const kill = runs % killEvery === 0 ? nextKill() : undefined;
          const result = await runCli(['run', '--max-duration', '8s'], {
            ...pipeline.env,
            ...(kill ? { SLOTLAKE_KILL_AT: kill } : {}),
          });
          if (result.signal === 'SIGKILL') {
            assert.ok(kill, `a run died without a kill point: ${result.stderr}`);
            assert.match(result.stderr, new RegExp(`kill point ${kill} reached`));
            kills++;
            landed.add(kill);
            // the next run could only find the dead run's lease held: wait until it ran out
            await leaseRunsOut(pipeline.env, 30_000);
            continue;
          }
          assert.equal(result.code, 0, result.stderr);
          const progress = snapshotOf(result);
          if (result.summary?.stopReason !== 'lease-held' && progress && progress.pendingTables === 0)
            snapshotDone = true;
        }
      } finally {
        const statements = await writer.stop();
        console.log(
          `snapshot test: ${runs} runs, ${kills} killed at their kill point (${[...landed].join(', ')}), ${statements} workload statements`,
        );
      }
      assert.deepEqual([...landed].sort(), [...KILL_POINTS].sort(), 'runs died at every kill point');
      // Everything written since: clean runs until caught up.
      for (let attempt = 0; ; attempt++) {
        assert.ok(attempt < 20, 'caught up within 20 clean runs');
        const result = await runCli(['run', '--until-caught-up', '--max-duration', '60s'], pipeline.env);
        assert.equal(result.code, 0, result.stderr);
        if (result.summary?.stopReason === 'caught-up') break;
      }
      const report = await status(pipeline);
      const snapshot = (
        report as unknown as {
          snapshot: { pendingTables: number; tables: Array<{ state: string; rows: number }> };
        }
      ).snapshot;
      assert.equal(snapshot.pendingTables, 0);
      assert.equal(snapshot.tables[0]!.state, 'done');

      const lake = await readLake(local.s3, `${pipeline.name}/`);
      const records: ChangeRecord[] = lake.records.map((entry) => entry.record);
      const ids = new Set(records.map((record) => `${record.source.commit_lsn}#${record.source.seq}`));
      assert.equal(ids.size, records.length, '(commit_lsn, seq) is unique');
      for (const record of records) if (record.op === 'r') assert.equal(record.source.snapshot, true);
      const listed = new Set(
        lake.manifests.flatMap((manifest) => manifest.objects.map((object) => object.key)),
      );
      assert.deepEqual(
        lake.dataKeys.filter((key) => !listed.has(key)),
        [],
        'every object is in a manifest',
      );
      const snapshotRows = records.filter((record) => record.op === 'r').length;
      assert.ok(snapshotRows > EXISTING_ROWS / 2, `most rows came from the snapshot (${snapshotRows})`);

      const rebuilt = replay(records, ['id']);
      const actual = (await pipeline.sql('SELECT id, grp, v, big FROM t ORDER BY id')).rows as Row[];
      assert.equal(rebuilt.size, actual.length, 'as many rows as the table');
      let differing = 0;
      for (const row of actual) {
        const archived = rebuilt.get(JSON.stringify([row.id]));
        if (JSON.stringify(archived) !== JSON.stringify(row)) differing++;
      }
      assert.equal(differing, 0, 'every row rebuilt from the archive equals the table');

      // and `slotlake verify` says so, from the archive and the source alone
      const verify = await runCli(['verify'], pipeline.env);
      assert.equal(verify.code, 0, `${verify.stdout}${verify.stderr}`);
      const verdict = verify.summary as {
        table: string;
        sourceRows: number;
        archiveRows: number;
        equal: number;
        differing: number;
        missing: number;
        extra: number;
        inFlight: number;
        snapshotComplete: boolean;
        problems: unknown[];
      };
      console.log(`snapshot test: verify ${verify.stdout.trim()}`);
      assert.equal(verdict.table, 'public.t');
      assert.equal(verdict.snapshotComplete, true);
      assert.equal(verdict.sourceRows, actual.length);
      assert.equal(verdict.archiveRows, actual.length);
      assert.equal(verdict.equal, actual.length);
      assert.deepEqual(
        [verdict.differing, verdict.missing, verdict.extra, verdict.inFlight, verdict.problems.length],
        [0, 0, 0, 0, 0],
      );
    } finally {
      await pipeline.close();
    }
  });
});

describe('snapshot values', () => {
  test('a row read by the snapshot is encoded exactly like the same row streamed (bool, char(n), inet, arrays, times, numeric, bytea, NULLs)', async () => {
    const columns = `b bool, c char(5), n inet, a text[], ts timestamptz, t time, d date, num numeric(8,3), f float8,
      by bytea, j jsonb, e text, z int4[]`;
    const values = `true, 'ab', '10.0.0.1', '{"x y",NULL,"q\\"u"}', '2026-01-02 03:04:05.678901+05:30', '23:59:59.5',
      '0044-03-15 BC', 12.5, 'NaN', '\\x00ff', '{"k": [1, 2.50]}', '', '{{1,2},{3,NULL}}'`;
    const pipeline = await createPipeline(
      local.stack,
      `CREATE TABLE v (id int PRIMARY KEY, ${columns}, nothing text);`,
      {
        SLOTLAKE_SNAPSHOT: 'initial',
      },
    );
    try {
      await pipeline.sql(`INSERT INTO v VALUES (1, ${values}, NULL)`);
      await setup(pipeline);
      await pipeline.sql(`INSERT INTO v VALUES (2, ${values}, NULL)`);
      const result = await runCli(['run', '--until-caught-up'], pipeline.env);
      assert.equal(result.code, 0, result.stderr);
      const records = (await readLake(local.s3, `${pipeline.name}/`)).records.map((entry) => entry.record);
      const read = records.filter((record) => record.op === 'r' && record.after?.id === 1);
      const streamed = records.filter((record) => record.op === 'c' && record.after?.id === 2);
      assert.equal(read.length, 1, 'row 1 came from the snapshot');
      assert.equal(streamed.length, 1, 'row 2 came from the stream');
      const { id: _readId, ...readValues } = read[0]!.after!;
      const { id: _streamedId, ...streamedValues } = streamed[0]!.after!;
      assert.deepEqual(readValues, streamedValues);
      assert.equal(readValues.b, true);
      assert.equal(readValues.c, 'ab   ');
      assert.equal(readValues.n, '10.0.0.1');
    } finally {
      await pipeline.close();
    }
  });
});
