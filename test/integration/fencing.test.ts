/**
 * Fenced uploads and takeover: a run that may have lost its lease stops writing before another run can take
 * it over, and the run that takes over waits out the old lease before it removes what the old run was
 * uploading — so a late upload can neither survive as an orphan nor land on a committed key.
 *
 * Run A holds a short lease. Its lease renewals hang (the DynamoDB proxy holds every UpdateItem whose body
 * sets only `leaseExpiresAt`), and once its first batch is committed S3 turns slow: each of its uploads is
 * held by the S3 proxy until two seconds after A's lease ends, then delivered even if A has given up (its
 * bytes were on the wire). A therefore reaches its fence with uploads in flight, and those uploads land after
 * its lease ended. Run B — another process, same pipeline, no faults, batches cut differently — starts once
 * A's lease has expired, takes over, waits until the old lease's end plus the takeover grace, deletes A's
 * intent, archives; a later run finishes. In the second variant A is frozen (SIGSTOP) with an upload in
 * flight and resumed (SIGCONT) only after B's recovery.
 *
 * Every run has its own proxies, so each request and each acknowledgement is known to come from A or B; the
 * checks read Postgres, DynamoDB and S3 directly and go by what the proxies saw, never by what slotlake says.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { formatLsn, parseLsn, type Lsn } from '../../src/lsn.js';
import { fenceMarginMs } from '../../src/runtime/lease.js';
import { TAKEOVER_GRACE_MS } from '../../src/runtime/recovery.js';
import { systemClock } from '../../src/support/deadline.js';
import {
  assertExactlyOnce,
  assertSlotAtCheckpointDirect,
  readCheckpointItem,
  readSlotDirect,
  setup,
  useTestStack,
} from '../helpers/assertions.js';
import { failureLines, logLines, runCli, startCli, type CliResult, type RunningCli } from '../helpers/cli.js';
import {
  asProxied,
  dynamoBody,
  isDynamoUpdateSettingOnly,
  isS3Put,
  updateClauses,
  type RequestLog,
} from '../helpers/http-fault-proxy.js';
import { createReferenceSlot } from '../helpers/reference.js';
import { startRunProxies, type RunProxies } from '../helpers/run-proxies.js';
import { assertCommittedObjectsUntouched, operationOf } from '../helpers/s3-history.js';
import { createPipeline, type Pipeline } from '../helpers/stack.js';
import { waitFor } from '../helpers/wait.js';

// A frozen run's walsender must go away in a few seconds (as it would after a partition), so that the run
// taking over can stream: the server drops a replication client that has been silent this long.
const local = useTestStack({ settings: { wal_sender_timeout: '5s' } });

const LEASE_MS = 6_000;
/** A's uploads land this long after its lease ended: after the end, before the takeover grace is over. */
const LATE_LANDING_MS = 2_000;

/** A DynamoDB request's parsed body, for requests the proxy buffered. */
function updateOf(request: RequestLog) {
  if (request.target !== 'DynamoDB_20120810.UpdateItem') return undefined;
  const body = dynamoBody(request);
  return body ? { body, clauses: updateClauses(body) } : undefined;
}

/** The lease a run acquired: from its acquisition request (the UpdateItem that SETs leaseOwner). */
function acquiredLease(proxies: RunProxies): { owner: string; expiresAtMs: number } | undefined {
  for (const request of proxies.dynamo.requests()) {
    const update = updateOf(request);
    if (!update?.clauses.SET.includes('leaseOwner') || request.status !== 200) continue;
    const values = update.body.ExpressionAttributeValues ?? {};
    return { owner: values[':owner']!.S!, expiresAtMs: Number(values[':expires']!.N) };
  }
  return undefined;
}

/** The run's checkpoint writes that took effect: the LSN written, and when DynamoDB answered. */
function checkpointWrites(proxies: RunProxies): Array<{ lsn: Lsn; answeredAtMs: number }> {
  return proxies.dynamo
    .requests()
    .filter((request) => request.status === 200 && updateOf(request)?.clauses.SET.includes('lsn'))
    .map((request) => ({
      lsn: parseLsn(dynamoBody(request)!.ExpressionAttributeValues![':lsn']!.S!),
      answeredAtMs: request.answered!.atMs,
    }));
}

function isWrite(request: RequestLog): boolean {
  return request.method === 'PUT' || request.method === 'POST' || request.method === 'DELETE';
}

async function writeWorkload(pipeline: Pipeline): Promise<void> {
  for (let i = 1; i <= 12; i++) {
    await pipeline.sql(
      `BEGIN;
       INSERT INTO a (v) SELECT 'a${i}-' || g FROM generate_series(1, 15) g;
       INSERT INTO b (v) SELECT 'b${i}-' || g FROM generate_series(1, 15) g;
       UPDATE a SET v = v || '+' WHERE id % 7 = ${i % 7};
       COMMIT;`,
    );
  }
}

async function takeover(variant: 'fenced' | 'frozen'): Promise<void> {
  const pipeline = await createPipeline(
    local.stack,
    'CREATE TABLE a (id serial PRIMARY KEY, v text); CREATE TABLE b (id serial PRIMARY KEY, v text);',
    { SLOTLAKE_LEASE_DURATION: `${LEASE_MS / 1000}s` },
  );
  const proxies: RunProxies[] = [];
  const children: RunningCli[] = [];
  const start = (env: Record<string, string>) => {
    const running = startCli(['run', '--until-caught-up', '--max-duration', '60s'], env);
    children.push(running);
    return running;
  };
  const runProxies = async (name: string) => {
    const started = await startRunProxies(local.stack, name);
    proxies.push(started);
    return started;
  };
  try {
    await setup(pipeline);
    const reference = await createReferenceSlot(pipeline);
    await writeWorkload(pipeline);
    const slotAtStart = (await readSlotDirect(pipeline)).confirmedFlushLsn!;

    // ---- run A: renewals hang; after its first commit every data upload lands late ----
    const a = await runProxies('A');
    a.dynamo.inject({ match: isDynamoUpdateSettingOnly('leaseExpiresAt'), action: { kind: 'hang' } });
    a.s3.inject({
      match: (request) => isS3Put('/data/')(request) && checkpointWrites(a).length > 0,
      action: () => ({
        kind: 'delay',
        untilMs: acquiredLease(a)!.expiresAtMs + LATE_LANDING_MS,
        deliverAbandoned: true,
      }),
    });
    const runA = start(a.env(pipeline, { SLOTLAKE_BATCH_MAX_ROWS: '40', SLOTLAKE_LOG_LEVEL: 'INFO' }));
    let frozenAtMs: number | undefined;
    let resumedAtMs: number | undefined;
    let resultA: CliResult | undefined;
    if (variant === 'frozen') {
      await waitFor(
        "A's first held upload",
        () => a.s3.requests().some((request) => request.fault === 'delay'),
        {
          withinMs: 30_000,
          everyMs: 5,
        },
      );
      runA.child.kill('SIGSTOP');
      frozenAtMs = systemClock.nowMs();
    } else {
      resultA = await runA.result;
    }
    const leaseA = acquiredLease(a);
    assert.ok(leaseA, `A acquired the lease: ${runA.stderr()}`);
    const fenceAtMs = leaseA.expiresAtMs - fenceMarginMs(LEASE_MS);
    if (frozenAtMs !== undefined) assert.ok(frozenAtMs < fenceAtMs, 'A was frozen before its fence');

    // B starts once A's lease has expired (as DynamoDB holds it).
    await waitFor(
      "A's lease to expire",
      async () => {
        const item = await readCheckpointItem(pipeline);
        assert.equal(item?.leaseOwner?.S, leaseA.owner, 'nobody took the lease meanwhile');
        return systemClock.nowMs() > Number(item?.leaseExpiresAt?.N);
      },
      { withinMs: 30_000, everyMs: 20 },
    );
    // What A left: the slot acknowledged no further than the checkpoint (both read directly).
    const itemAfterA = await readCheckpointItem(pipeline);
    const slotAfterA = await readSlotDirect(pipeline);
    assert.ok(itemAfterA?.lsn?.S, 'A committed a checkpoint');
    assert.ok(
      slotAfterA.confirmedFlushLsn! <= parseLsn(itemAfterA.lsn.S),
      `slot ${formatLsn(slotAfterA.confirmedFlushLsn!)} acknowledged past the checkpoint ${itemAfterA.lsn.S}`,
    );
    assert.ok((itemAfterA.intentKeys?.SS ?? []).length > 0, 'A left an intent (a batch in flight)');

    // ---- run B: no faults, batches cut differently ----
    const b = await runProxies('B');
    const runB = start(b.env(pipeline, { SLOTLAKE_BATCH_MAX_ROWS: '100', SLOTLAKE_LOG_LEVEL: 'INFO' }));
    if (variant === 'frozen') {
      // Resume A once B's recovery is over: B deleted A's intent keys and cleared the intent.
      await waitFor(
        "B's recovery",
        () =>
          b.dynamo.requests().some((request) => {
            const update = updateOf(request);
            return (
              request.status === 200 &&
              update !== undefined &&
              update.clauses.SET.length === 0 &&
              update.clauses.REMOVE.join() === 'intentKeys'
            );
          }),
        { withinMs: 40_000, everyMs: 20 },
      );
      resumedAtMs = systemClock.nowMs();
      runA.child.kill('SIGCONT');
      resultA = await runA.result;
    }
    const resultB = await runB.result;
    assert.ok(resultA);

    // ---- A stopped with lease-lost: non-zero, one clear line, not killed ----
    assert.equal(resultA.signal, null, 'A was not killed');
    assert.equal(resultA.killedByTimeout, false);
    assert.equal(resultA.code, 1, `A fails: ${resultA.stderr}`);
    const aFailure = failureLines(resultA.stderr);
    assert.equal(aFailure.length, 1, `exactly one failure line: ${aFailure.join('\n')}`);
    assert.match(aFailure[0]!, /^slotlake: .*lease/);
    assert.ok(
      logLines(resultA.stderr).some(
        (line) => line.message === 'lease lost: this run stops writing' && line.kind === 'lease-lost',
      ),
      'A logged that it stopped writing',
    );

    // ---- A reached its fence with uploads in flight, having committed before ----
    const aS3 = a.s3Requests();
    /** A's S3 requests, times in ms from its lease's end, for failure messages. */
    const timeline = () => {
      const at = (event: { atMs: number } | undefined) =>
        event === undefined ? '-' : String(Math.round(event.atMs - leaseA.expiresAtMs));
      const marks = `frozen ${at(frozenAtMs === undefined ? undefined : { atMs: frozenAtMs })}, resumed ${at(resumedAtMs === undefined ? undefined : { atMs: resumedAtMs })}`;
      return `A's S3 requests (ms from its lease's end; ${marks}):\n${aS3
        .map(
          (r) =>
            `  ${r.method} ${r.path} ${r.fault ?? ''} received ${at(r.received)} forwarded ${at(r.forwarded)} answered ${at(r.answered)} status ${r.status}`,
        )
        .join('\n')}`;
    };
    const inFlightAtFence = aS3.filter(
      (request) =>
        isS3Put('/data/')(asProxied(request)) &&
        request.received.atMs < fenceAtMs &&
        (request.answered === undefined || request.answered.atMs > fenceAtMs),
    );
    assert.ok(inFlightAtFence.length > 0, 'A had uploads in flight at its fence');
    const landedLate = inFlightAtFence.filter(
      (request) => request.answered !== undefined && request.answered.atMs > leaseA.expiresAtMs,
    );
    assert.ok(landedLate.length > 0, "some of A's uploads landed after its lease ended (the race exists)");
    const committedBeforeFence = checkpointWrites(a).filter((write) => write.answeredAtMs < fenceAtMs);
    assert.ok(committedBeforeFence.length > 0, 'A committed a batch before its fence');

    // ---- A acknowledged nothing it had not checkpointed before its fence ----
    const ackable = committedBeforeFence.reduce(
      (max, write) => (write.lsn > max ? write.lsn : max),
      slotAtStart,
    );
    const aAcks = a.acks.updates;
    assert.ok(aAcks.length > 0, 'status updates of A were seen');
    const beyond = aAcks.filter((update) => update.flush > ackable);
    assert.deepEqual(
      beyond.map((update) => `${formatLsn(update.flush)} at ${Math.round(update.seen.atMs - fenceAtMs)} ms`),
      [],
      `A acknowledged past ${formatLsn(ackable)}, its last checkpoint before its fence`,
    );
    assert.ok(
      aAcks.some((update) => update.flush === committedBeforeFence.at(-1)!.lsn),
      'A did acknowledge its commits before the fence (the check can see acknowledgements)',
    );
    // Nothing from A reached either store after its lease ended (the hung renewal arrived long before) —
    // or, frozen, after it was resumed, but a renewal (which DynamoDB refuses: B holds the lease).
    const quietFromMs = resumedAtMs ?? leaseA.expiresAtMs;
    const aLate = [...aS3, ...a.dynamo.requests()].filter(
      (request) =>
        request.received.atMs > quietFromMs &&
        !(resumedAtMs !== undefined && isDynamoUpdateSettingOnly('leaseExpiresAt')(asProxied(request))),
    );
    assert.deepEqual(
      aLate.map((request) => `${request.method} ${request.path} ${request.target ?? ''}`),
      [],
      `A sent something after ${resumedAtMs === undefined ? 'its lease ended' : 'it was resumed'}; ${timeline()}`,
    );

    // ---- B waited out A's lease, then deleted A's intent; A landed nothing afterwards ----
    assert.equal(resultB.code, 0, resultB.stderr);
    assert.notEqual(resultB.summary?.stopReason, 'lease-held', JSON.stringify(resultB.summary));
    const waited = logLines(resultB.stderr).find(
      (line) => line.message === 'waiting until the previous holder of the lease can no longer be uploading',
    );
    assert.ok(waited, `B logged that it waited for the old lease: ${resultB.stderr}`);
    assert.equal(waited.previousOwner, leaseA.owner);
    assert.ok(Number(waited.waitMs) > 0);
    assert.ok((resultB.summary?.recoveredObjects as number) > 0, 'B deleted the intent A left');
    const bDeletes = b
      .s3Requests()
      .filter((request) => operationOf(request, pipeline.bucket)?.kind === 'delete' && request.forwarded);
    assert.ok(bDeletes.length > 0, 'B deleted objects');
    const firstDelete = bDeletes[0]!.forwarded!;
    assert.ok(
      firstDelete.atMs >= leaseA.expiresAtMs + TAKEOVER_GRACE_MS,
      `B deleted ${Math.round(leaseA.expiresAtMs + TAKEOVER_GRACE_MS - firstDelete.atMs)} ms before the old lease's end plus the grace`,
    );
    const aAfterRecovery = aS3.filter(
      (request) =>
        isWrite(request) &&
        ((request.forwarded && request.forwarded.order > firstDelete.order) ||
          (request.answered && request.answered.order > firstDelete.order)),
    );
    assert.deepEqual(
      aAfterRecovery.map((request) => `${request.method} ${request.path} ${request.status}`),
      [],
      `A landed something after B's recovery deleted its intent; ${timeline()}`,
    );

    // ---- later runs finish; then the archive ----
    const c = await runProxies('C');
    let later = await runCli(['run', '--until-caught-up', '--max-duration', '60s'], c.env(pipeline));
    for (let i = 0; i < 5 && later.summary?.stopReason === 'lease-held'; i++)
      later = await runCli(['run', '--until-caught-up', '--max-duration', '60s'], c.env(pipeline));
    assert.equal(later.code, 0, later.stderr);
    assert.equal(later.summary?.stopReason, 'caught-up', JSON.stringify(later.summary));
    await assertSlotAtCheckpointDirect(pipeline);
    await assertExactlyOnce(local.s3, pipeline, reference, ['public.a', 'public.b']);
    const history = await assertCommittedObjectsUntouched(
      local.s3,
      pipeline,
      proxies.flatMap((run) => run.s3Requests()),
    );
    assert.ok(history.dataDeletes > 0 && history.manifests > 0, JSON.stringify(history));
  } finally {
    // A run left behind by a failed assertion (A may still be stopped): end it, and wait for it.
    for (const running of children) {
      if (running.child.exitCode === null && running.child.signalCode === null) {
        running.child.kill('SIGKILL');
        await running.result;
      }
    }
    await Promise.all(proxies.map((run) => run.stop()));
    await pipeline.close();
  }
}

describe('fenced uploads and takeover', () => {
  test('a run whose renewals hang stops at its fence with uploads in flight; the next run waits out its lease', () =>
    takeover('fenced'));

  test('a run frozen mid-upload and resumed after the takeover lands nothing more', () => takeover('frozen'));
});
