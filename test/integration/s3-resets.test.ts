/**
 * S3 connections reset at random, with names that say "postgres" everywhere: the bucket
 * (`acme-postgres-lake`), the key prefix (`postgres/cdc/`), the DynamoDB table, the pipeline and a table.
 * An error's origin is the system the failing call talked to, never a word in its message: an S3 reset is an
 * object-store fault, retried as one, and never a "Postgres connection loss" — whose handling (reconnect,
 * abandon the batch, delete what it wrote) would delete objects of committed batches.
 *
 * Short runs follow each other under a concurrent write load while the HTTP proxy resets S3 connections at
 * random (seeded; `S3_RESETS_SEED` replays a sequence, `S3_RESETS_ROUNDS` sets the least number of runs; more
 * follow, up to a bound, until enough resets and commits happened under faults): a TCP reset
 * before the body, in the middle of it, after it, or after S3 applied the request (the response is lost).
 * Every run ends cleanly or fails with one line; none reconnects to Postgres. Then a clean run, and: the archive
 * against the database's own stream, exactly once; every manifest's objects exist and every data object is in
 * a manifest; the slot at the checkpoint (both read directly); and, from every request the proxies saw, no
 * object of a committed batch was deleted or overwritten after its batch committed.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import pg from 'pg';
import {
  assertExactlyOnce,
  assertSlotAtCheckpointDirect,
  setup,
  useTestStack,
} from '../helpers/assertions.js';
import { failureLines, logLines, runCli, type CliResult } from '../helpers/cli.js';
import { s3Key, type FaultAction, type ProxiedRequest } from '../helpers/http-fault-proxy.js';
import { createReferenceSlot } from '../helpers/reference.js';
import { startRunProxies, type RunProxies } from '../helpers/run-proxies.js';
import { assertCommittedObjectsUntouched, operationOf } from '../helpers/s3-history.js';
import { createPipeline } from '../helpers/stack.js';

const BUCKET = 'acme-postgres-lake';
const SEED = Number(process.env.S3_RESETS_SEED ?? Date.now() % 1_000_000);
const ROUNDS = Number(process.env.S3_RESETS_ROUNDS ?? '9');
/** The fault phase goes on (up to MAX_ROUNDS runs) until this much happened under faults. */
const MIN_RESETS = 20;
const MIN_COMMITS = 5;
const MAX_ROUNDS = 30;

const local = useTestStack(undefined, { extraBuckets: [BUCKET] });

/** A small seeded PRNG (mulberry32), so a failing sequence can be replayed with S3_RESETS_SEED. */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type ResetKind = 'before-body' | 'mid-body' | 'after-body' | 'after-applied';
const PROFILES = ['scattered', 'storm', 'after-commit'] as const;
const RESET_KINDS: readonly ResetKind[] = ['before-body', 'mid-body', 'after-body', 'after-applied'];

test(`random S3 connection resets, with "postgres" in every name, never delete a committed object (seed ${SEED})`, async () => {
  process.stderr.write(`s3-resets: seed ${SEED} (S3_RESETS_SEED=${SEED} replays it), ${ROUNDS} rounds\n`);
  const rand = random(SEED);
  const pipeline = await createPipeline(
    local.stack,
    `CREATE TABLE orders (id serial PRIMARY KEY, status text, note text);
     CREATE TABLE postgres_events (id serial PRIMARY KEY, kind text, payload text);`,
    {
      SLOTLAKE_BUCKET: BUCKET,
      SLOTLAKE_PREFIX: 'postgres/cdc/',
      SLOTLAKE_CHECKPOINT_TABLE: 'postgres-cdc-checkpoints',
      SLOTLAKE_PIPELINE: 'postgres.orders-db',
      SLOTLAKE_LEASE_DURATION: '3s',
      SLOTLAKE_BATCH_MAX_ROWS: '120',
      SLOTLAKE_OBJECT_MAX_BYTES: '6KiB',
    },
  );
  const proxies: RunProxies[] = [];
  const writer = new pg.Client({ connectionString: pipeline.databaseUrl });
  let writing = true;
  let load: Promise<void> | undefined;
  const tally = {
    runs: 0,
    failed: 0,
    profiles: [] as string[],
    stops: [] as string[],
    resets: {} as Record<string, number>,
    requests: 0,
  };
  try {
    await setup(pipeline);
    const reference = await createReferenceSlot(pipeline);
    await writer.connect();
    // The write load: small transactions over both tables, each held open briefly so that some are in flight
    // whenever a run reads (the load's shape, not a wait for anything).
    load = (async () => {
      for (let n = 0; writing; n++) {
        await writer.query('BEGIN');
        await writer.query(
          `INSERT INTO orders (status, note) SELECT 'new', repeat('o', 60) || g FROM generate_series(1, 3) g`,
        );
        await writer.query(
          `INSERT INTO postgres_events (kind, payload) SELECT 'k${n % 5}', repeat('e', 80) || g FROM generate_series(1, 2) g`,
        );
        if (n % 7 === 0) await writer.query(`DELETE FROM postgres_events WHERE id % 11 = ${n % 11}`);
        await writer.query('SELECT pg_sleep(0.02)');
        await writer.query('COMMIT');
      }
    })();

    const outcomes: CliResult[] = [];
    // At least ROUNDS runs, and on until enough happened under faults (a starved machine gives short runs
    // little time to work): bounded.
    const resets = () => Object.values(tally.resets).reduce((sum, n) => sum + n, 0);
    const committedUnderFaults = () =>
      proxies
        .flatMap((run) => run.s3Requests())
        .filter((request) => {
          const operation = operationOf(request, pipeline.bucket);
          return (
            (operation?.kind === 'copy' || operation?.kind === 'put') &&
            operation.key.startsWith(`${pipeline.prefix}manifests/`) &&
            request.status === 200
          );
        }).length;
    const enough = () => resets() >= MIN_RESETS && committedUnderFaults() >= MIN_COMMITS;
    for (let round = 0; round < MAX_ROUNDS && (round < ROUNDS || !enough()); round++) {
      // Each run gets a fault profile: a few resets anywhere (retries absorb them), a storm anywhere (errors
      // escape the retries), or a storm on what follows a commit — writing its manifest — where an error taken
      // for a Postgres connection loss made the reconnect path delete the committed batch's objects. Budgets
      // are short, so errors also escape for lack of time before the deadline.
      // The profiles take turns (each of them several times in the least number of runs); the rest is seeded.
      const profile = PROFILES[round % PROFILES.length]!;
      const rate = profile === 'scattered' ? 0.1 + rand() * 0.3 : 0.5 + rand() * 0.4;
      const budget = `${3 + Math.floor(rand() * 5)}s`;
      const targets = (request: ProxiedRequest): boolean =>
        profile !== 'after-commit' || (s3Key(request) ?? '').startsWith(`${pipeline.prefix}manifests/`);
      const run = await startRunProxies(local.stack, `run ${round + 1}`);
      proxies.push(run);
      tally.profiles.push(profile);
      run.s3.inject({
        match: targets,
        action: (request: ProxiedRequest): FaultAction | undefined => {
          if (rand() >= rate) return undefined;
          const kind = RESET_KINDS[Math.floor(rand() * RESET_KINDS.length)]!;
          const length = Number(request.headers['content-length'] ?? '0');
          const at = rand();
          tally.resets[kind] = (tally.resets[kind] ?? 0) + 1;
          switch (kind) {
            case 'before-body':
              return { kind: 'reset-mid-request', afterBodyBytes: 0 };
            case 'mid-body':
              return length > 1
                ? { kind: 'reset-mid-request', afterBodyBytes: 1 + Math.floor(at * (length - 1)) }
                : { kind: 'reset' };
            case 'after-body':
              return { kind: 'reset' };
            case 'after-applied':
              return { kind: 'after-forward-reset' };
          }
        },
      });
      const result = await runCli(
        ['run', '--max-duration', budget],
        run.env(pipeline, { SLOTLAKE_LOG_LEVEL: 'INFO' }),
        60_000,
      );
      outcomes.push(result);
      tally.runs++;
      tally.requests += run.s3.requests().length;
      tally.stops.push(result.code === 0 ? String(result.summary?.stopReason) : `exit ${result.code}`);
      const describe = `round ${round + 1} (seed ${SEED}, ${profile} ${rate.toFixed(2)}, budget ${budget}): ${JSON.stringify(result.summary)}\n${result.stderr}`;
      assert.equal(result.killedByTimeout, false, describe);
      assert.equal(result.signal, null, describe);
      if (result.code === 0) {
        assert.equal(
          result.summary?.reconnects,
          0,
          `an S3 reset made the run reconnect to Postgres: ${describe}`,
        );
      } else {
        tally.failed++;
        assert.equal(result.code, 1, describe);
        const lines = failureLines(result.stderr);
        assert.equal(lines.length, 1, `one failure line: ${describe}`);
        assert.doesNotMatch(
          lines[0]!,
          /Postgres connection/,
          `an S3 fault reported as a Postgres one: ${describe}`,
        );
      }
      const reconnecting = logLines(result.stderr).filter((line) =>
        String(line.message).includes('reconnecting from the checkpoint'),
      );
      assert.deepEqual(reconnecting, [], `an S3 reset taken for a Postgres connection loss: ${describe}`);
    }
    assert.ok(
      enough(),
      `within ${MAX_ROUNDS} runs, at least ${MIN_RESETS} resets and ${MIN_COMMITS} batches committed under ` +
        `faults: ${resets()} and ${committedUnderFaults()} (${JSON.stringify(tally)})`,
    );

    // A clean run, no faults: everything archived exactly once, nothing committed ever touched.
    writing = false;
    await load;
    const clean = await startRunProxies(local.stack, 'clean');
    proxies.push(clean);
    const final = await runCli(['run', '--until-caught-up', '--max-duration', '90s'], clean.env(pipeline));
    assert.equal(final.code, 0, final.stderr);
    assert.equal(final.summary?.stopReason, 'caught-up', JSON.stringify(final.summary));
    // The store's history first: it names the request that touched a committed object, if one did.
    const history = await assertCommittedObjectsUntouched(
      local.s3,
      pipeline,
      proxies.flatMap((run) => run.s3Requests()),
    );
    await assertSlotAtCheckpointDirect(pipeline);
    const lake = await assertExactlyOnce(local.s3, pipeline, reference, [
      'public.orders',
      'public.postgres_events',
    ]);
    process.stderr.write(
      `s3-resets (seed ${SEED}): ${JSON.stringify(tally)}; ${lake.records.length} changes exactly once in ` +
        `${history.objects} objects of ${history.manifests} manifests; ${history.dataDeletes} data deletes, all of uncommitted objects\n`,
    );
  } finally {
    writing = false;
    await load?.catch(() => undefined);
    await writer.end().catch(() => undefined);
    await Promise.all(proxies.map((run) => run.stop()));
    await pipeline.close();
  }
});
