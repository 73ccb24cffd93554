/**
 * The commit sequence (runtime/commit.ts): intent (objects + staged manifest) → objects durable → manifest
 * staged → checkpoint (clears the intent, records the pending manifest) → manifest copied into place → ack,
 * and a failure at any step stops everything after it. Runs against the in-memory object and checkpoint
 * stores; every step is logged in one shared event list so the order itself is asserted.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { MemoryCheckpointStore } from '../../src/checkpoint/memory.js';
import type { Checkpoint, CheckpointUpdate, Lease, SourceIdentity } from '../../src/checkpoint/store.js';
import { SlotlakeError } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';
import { formatLsn, lsn, type Lsn } from '../../src/lsn.js';
import type { DurablePosition } from '../../src/pipeline/assembler.js';
import { CommitSequence, publishManifest, type CommitResult } from '../../src/runtime/commit.js';
import { LeaseKeeper } from '../../src/runtime/lease.js';
import { recover } from '../../src/runtime/recovery.js';
import { BatchWriter, type TableSchemaRef } from '../../src/sink/batch.js';
import type { Manifest } from '../../src/sink/manifest.js';
import { JSONL_FORMAT } from '../../src/sink/spool.js';
import { StoreSpeedMeter } from '../../src/sink/store-speed.js';
import { Deadline, type Clock } from '../../src/support/deadline.js';
import { MemoryObjectStore } from '../helpers/memory-object-store.js';

const C1 = lsn(0x100n);
const C2 = lsn(0x200n);
const C3 = lsn(0x300n);
const OBJECT_A = 'lake/data/public.a/dt=2025-11-24/0000000000000100-0000000000000200.jsonl.gz';
const OBJECT_B = 'lake/data/public.b/dt=2025-11-24/0000000000000100-0000000000000100.jsonl.gz';
const MANIFEST = 'lake/manifests/0000000000000100-0000000000000200.json';
const STAGED = 'lake/staging/manifests/0000000000000100-0000000000000200.json';
const SOURCE: SourceIdentity = {
  systemId: '7300000000000000001',
  timeline: 1,
  database: 'shop',
  slot: 'slotlake',
};

/**
 * The checkpoint store, logging successful intents and checkpoint writes in the shared event list and
 * keeping every successful update; `beforeWrite` runs before each checkpoint write (e.g. to lose the lease).
 */
class RecordingStore extends MemoryCheckpointStore {
  readonly updates: CheckpointUpdate[] = [];
  beforeWrite: (() => Promise<void>) | undefined;

  constructor(private readonly events: string[]) {
    super();
  }

  override async recordIntent(lease: Lease, keys: readonly string[], signal?: AbortSignal): Promise<void> {
    await super.recordIntent(lease, keys, signal);
    for (const key of keys) this.events.push(`intent ${key}`);
  }

  override async write(
    update: CheckpointUpdate,
    expected: number | null,
    lease: Lease,
    signal?: AbortSignal,
  ): Promise<Checkpoint> {
    await this.beforeWrite?.();
    try {
      const stored = await super.write(update, expected, lease, signal);
      this.events.push(`checkpoint ${formatLsn(stored.lsn)}`);
      this.updates.push(update);
      return stored;
    } catch (error) {
      this.events.push('checkpoint-failed');
      throw error;
    }
  }
}

let spoolDir: string;
beforeEach(() => {
  spoolDir = mkdtempSync(join(tmpdir(), 'slotlake-commit-test-'));
});
afterEach(() => {
  rmSync(spoolDir, { recursive: true, force: true });
});

/** A clock the test moves by hand. */
class ManualClock implements Clock {
  constructor(public now = 1_000_000) {}
  nowMs(): number {
    return this.now;
  }
}

interface Harness {
  readonly events: string[];
  readonly archive: MemoryObjectStore;
  readonly store: RecordingStore;
  readonly keeper: LeaseKeeper;
  readonly clock: ManualClock;
  readonly sequence: CommitSequence;
  readonly acks: Lsn[];
  readonly speed: StoreSpeedMeter;
  readonly controller: AbortController;
  batch(): BatchWriter<string>;
}

const schemas = new Map<string, TableSchemaRef>();
function schemaOf(table: string): TableSchemaRef {
  let schema = schemas.get(table);
  if (!schema) {
    schema = {
      id: schemas.size + 1,
      table: { schema: 'public', table },
      description: { columns: [{ name: 'id', typeOid: 23 }] },
      columns: [{ name: 'id', typeOid: 23, typeModifier: -1, fieldId: 1 }],
      types: new Map(),
    };
    schemas.set(table, schema);
  }
  return schema;
}

function put(
  batch: BatchWriter<string>,
  table: string,
  commitLsn: Lsn,
  seq: number,
  continues = false,
): void {
  const text = JSON.stringify({ table, commit: formatLsn(commitLsn), seq });
  batch.write(
    { schema: schemaOf(table), dt: '2025-11-24', commitLsn, seq, transactionContinues: continues },
    text,
    text.length + 1,
  );
}

/** `stored`: a checkpoint written before the sequence starts, which the sequence knows as its current one. */
async function harness(stored?: DurablePosition): Promise<Harness> {
  const events: string[] = [];
  const archive = new MemoryObjectStore({ prefix: 'lake/', events });
  const store = new RecordingStore(events);
  const clock = new ManualClock();
  const acquisition = await store.acquire('run-1', 60_000, clock.nowMs());
  assert.ok(acquisition.acquired);
  const keeper = new LeaseKeeper(acquisition.lease, store, 60_000, clock, createLogger('ERROR'));
  const current = stored ? await store.write({ ...stored, source: SOURCE }, null, acquisition.lease) : null;
  events.length = 0;
  const speed = new StoreSpeedMeter();
  const acks: Lsn[] = [];
  const controller = new AbortController();
  const signal = AbortSignal.any([controller.signal, keeper.signal]);
  const sequence = new CommitSequence(
    {
      objects: archive,
      checkpoints: store,
      logger: createLogger('ERROR'),
      deadline: Deadline.unbounded(),
      speed,
      pipeline: 'shop',
      slot: 'slotlake',
      runId: 'run-1',
      source: SOURCE,
      lease: keeper,
      signal,
      acknowledge: (position) => {
        acks.push(position);
        events.push(`ack ${formatLsn(position)}`);
      },
    },
    current,
  );
  const batch = () =>
    new BatchWriter<string>(
      {
        store: archive,
        format: JSONL_FORMAT,
        registerIntent: (keys, intentSignal) => store.recordIntent(keeper.lease, keys, intentSignal),
        assertWritable: () => keeper.assertHeld(),
        signal,
        spoolDir,
        objectMaxBytes: 1024 * 1024,
        speed,
      },
      0,
    );
  return { events, archive, store, keeper, clock, sequence, acks, speed, controller, batch };
}

/** Two transactions: C1 writes a and b, C2 writes a. */
function fill(batch: BatchWriter<string>): BatchWriter<string> {
  put(batch, 'a', C1, 0);
  put(batch, 'b', C1, 1);
  put(batch, 'a', C2, 0);
  return batch;
}

const AT_228: DurablePosition = { lsn: lsn(0x228n), partial: undefined };
const COUNTS = { transactions: 2, changes: 3 };

function denied(message: string): SlotlakeError {
  return new SlotlakeError(message, { kind: 'access-denied', origin: 'object-store' });
}

/** A transient S3 failure (retried by withRetry). */
function internalError(): Error {
  return Object.assign(new Error('We encountered an internal error'), {
    name: 'InternalError',
    $metadata: { httpStatusCode: 500 },
  });
}

/** The events of `fill()`'s batch before the manifest is staged: the intents, then the two uploads. */
function assertIntentsThenUploads(events: readonly string[]): void {
  assert.deepEqual(
    events.slice(0, 3).sort(),
    [`intent ${OBJECT_A}`, `intent ${OBJECT_B}`, `intent ${STAGED}`],
    events.join(' | '),
  );
  assert.deepEqual(
    events.slice(3, 5).sort(),
    [`upload ${OBJECT_A}`, `upload ${OBJECT_B}`],
    events.join(' | '),
  );
}

describe('CommitSequence', () => {
  it('orders intent → objects → staged manifest → checkpoint → manifest in place → ack', async () => {
    const h = await harness();
    const batch = fill(h.batch());
    const result = await h.sequence.commit(batch, AT_228, COUNTS);
    assertIntentsThenUploads(h.events);
    assert.deepEqual(h.events.slice(5), [
      `put-text ${STAGED}`,
      'checkpoint 0/228',
      `copy ${STAGED} ${MANIFEST}`,
      `delete ${STAGED}`,
      'ack 0/228',
    ]);
    assert.deepEqual(h.acks, [0x228n]);
    assert.equal(result.checkpoint?.lsn, 0x228n);
    assert.equal(result.checkpoint?.version, 1);
    assert.deepEqual(result.checkpoint?.source, SOURCE);
    assert.equal(h.sequence.checkpoint, result.checkpoint);
    assert.deepEqual(await h.store.read(), result.checkpoint);
    assert.deepEqual(
      result.objects.map((o) => [o.key, o.rows]),
      [
        [OBJECT_A, 2],
        [OBJECT_B, 1],
      ],
    );
    assert.equal(result.rows, 3);
    assert.ok(result.bytes > 0);
    assert.equal(h.store.intent.size, 0, 'the checkpoint write clears the intent');
    assert.deepEqual(h.store.pendingManifest, { key: MANIFEST, stagingKey: STAGED });
    assert.ok(h.store.speed, 'the measured store speed is stored with the checkpoint');
    assert.equal(batch.checkpointBegun, true);
    assert.equal(h.archive.objects.has(STAGED), false, 'the staged copy is removed');
    assert.deepEqual(readdirSync(spoolDir), []);
  });

  it('writes a manifest describing the batch: range, checkpoint, source, objects with rows and schemas', async () => {
    const h = await harness();
    const result = await h.sequence.commit(fill(h.batch()), AT_228, COUNTS);
    const manifest = h.archive.json.get(MANIFEST) as Manifest;
    assert.equal(manifest.version, 2);
    assert.equal(manifest.pipeline, 'shop');
    assert.equal(manifest.slot, 'slotlake');
    assert.equal(manifest.runId, 'run-1');
    assert.deepEqual(manifest.source, SOURCE);
    assert.equal(manifest.startLsn, '0/100');
    assert.equal(manifest.endLsn, '0/200');
    assert.equal(manifest.previousCheckpoint, null);
    assert.equal(manifest.checkpoint, '0/228');
    assert.equal(manifest.partial, null);
    assert.equal(manifest.transactions, 2);
    assert.equal(manifest.changes, 3);
    assert.equal(manifest.bytes, result.bytes);
    assert.deepEqual(
      manifest.objects.map((o) => [o.key, o.schema, o.table, o.dt, o.rows, o.startLsn, o.endLsn, o.firstSeq]),
      [
        [OBJECT_A, 'public', 'a', '2025-11-24', 2, '0/100', '0/200', null],
        [OBJECT_B, 'public', 'b', '2025-11-24', 1, '0/100', '0/100', null],
      ],
    );
    assert.deepEqual(manifest.objects[0]!.tableSchema, schemaOf('a').description);
  });

  it('the next batch goes on from the checkpoint it wrote, with a cut transaction as partial', async () => {
    const h = await harness();
    await h.sequence.commit(fill(h.batch()), AT_228, COUNTS);
    const second = h.batch();
    put(second, 'a', C3, 0);
    put(second, 'a', C3, 1);
    const position: DurablePosition = { lsn: lsn(0x228n), partial: { commitLsn: C3, nextSeq: 2 } };
    const result = await h.sequence.commit(second, position, { transactions: 0, changes: 2 });
    assert.equal(result.checkpoint?.version, 2);
    assert.deepEqual(result.checkpoint?.partial, { commitLsn: C3, nextSeq: 2 });
    const manifest = h.archive.json.get('lake/manifests/0000000000000300-0000000000000300.json') as Manifest;
    assert.equal(manifest.previousCheckpoint, '0/228');
    assert.deepEqual(manifest.partial, { commitLsn: '0/300', nextSeq: 2 });
    // the rest of C3 continues in a later batch: its objects and manifest carry the seq of the first row
    const third = h.batch();
    put(third, 'a', C3, 2, true);
    await h.sequence.commit(third, { lsn: lsn(0x330n), partial: undefined }, { transactions: 1, changes: 1 });
    assert.ok(h.archive.objects.has('lake/manifests/0000000000000300-0000000000000300-0000000002.json'));
    assert.ok(
      h.archive.objects.has(
        'lake/data/public.a/dt=2025-11-24/0000000000000300-0000000000000300-0000000002.jsonl.gz',
      ),
    );
  });

  it('an upload failure: no checkpoint, no manifest, no ack; the intent stays for recovery', async () => {
    const h = await harness();
    const failure = denied('refused');
    h.archive.failUpload = (key) => (key === OBJECT_B ? failure : undefined);
    const batch = fill(h.batch());
    await assert.rejects(h.sequence.commit(batch, AT_228, COUNTS), (error) => error === failure);
    assert.ok(
      !h.events.some((e) => e.startsWith('checkpoint') || e.startsWith('ack') || e.startsWith('put-text')),
    );
    assert.deepEqual([...h.store.intent].sort(), [OBJECT_A, OBJECT_B, STAGED]);
    assert.equal(h.store.current, null);
    assert.deepEqual(h.acks, []);
    assert.equal(batch.checkpointBegun, false, 'the checkpoint write never began: recovery may delete');
    assert.deepEqual(readdirSync(spoolDir), []);
  });

  it('a checkpoint conflict: no manifest in place, no ack, kind checkpoint-conflict, the stored checkpoint untouched', async () => {
    const h = await harness(AT_228);
    // another writer moved the version under the sequence
    h.store.current = { ...h.store.current!, version: 99 };
    await assert.rejects(
      h.sequence.commit(fill(h.batch()), { lsn: lsn(0x300n), partial: undefined }, COUNTS),
      (error: unknown) => {
        assert.ok(error instanceof SlotlakeError);
        assert.equal(error.kind, 'checkpoint-conflict');
        assert.equal(error.origin, 'checkpoint-store');
        return true;
      },
    );
    assert.ok(!h.events.some((e) => e.startsWith('copy') || e.startsWith('ack')));
    assert.equal(h.store.current?.lsn, 0x228n);
  });

  it('a lease lost before the checkpoint: no checkpoint, no manifest, no ack; the new holder sees the intent', async () => {
    const h = await harness();
    h.store.beforeWrite = async () => {
      const taken = await h.store.acquire('run-2', 60_000, h.clock.now + 120_000);
      assert.ok(taken.acquired);
    };
    await assert.rejects(h.sequence.commit(fill(h.batch()), AT_228, COUNTS), (error: unknown) => {
      assert.ok(error instanceof SlotlakeError);
      assert.equal(error.kind, 'lease-lost');
      return true;
    });
    assert.ok(!h.events.some((e) => e.startsWith('copy') || e.startsWith('ack')));
    const next = await h.store.acquire('run-3', 60_000, h.clock.now + 600_000);
    assert.ok(next.acquired);
    assert.deepEqual([...next.intentKeys].sort(), [OBJECT_A, OBJECT_B, STAGED]);
    assert.deepEqual(next.takenOver?.owner, 'run-2');
  });

  it('past the lease fence nothing more is uploaded, staged, checkpointed or acknowledged', async () => {
    const h = await harness();
    const batch = fill(h.batch());
    h.clock.now += 60_000; // past expiry minus the fence margin, no renewal
    await assert.rejects(h.sequence.commit(batch, AT_228, COUNTS), (error: unknown) => {
      assert.ok(error instanceof SlotlakeError);
      assert.equal(error.kind, 'lease-lost');
      return true;
    });
    assert.deepEqual(h.events, [], 'not even an intent write');
    assert.equal(h.keeper.signal.aborted, true);
  });

  it('an upload in flight when the run is cut is aborted: flush-timeout, no checkpoint, the intent stays', async () => {
    const h = await harness();
    let started!: () => void;
    const uploading = new Promise<void>((resolve) => (started = resolve));
    h.archive.beforeUpload = (_key, signal) =>
      new Promise((_resolve, reject) => {
        started();
        if (signal?.aborted) reject(signal.reason as Error);
        signal?.addEventListener('abort', () => reject(signal.reason as Error), { once: true });
      });
    const commit = h.sequence.commit(fill(h.batch()), AT_228, COUNTS);
    await uploading;
    h.controller.abort(new SlotlakeError('cut', { kind: 'flush-timeout' }));
    await assert.rejects(
      commit,
      (error: unknown) => error instanceof SlotlakeError && error.kind === 'flush-timeout',
    );
    assert.ok(
      !h.events.some((e) => e.startsWith('checkpoint') || e.startsWith('ack') || e.startsWith('upload ')),
    );
    assert.deepEqual([...h.store.intent].sort(), [OBJECT_A, OBJECT_B, STAGED]);
  });

  it('reports a batch as committed as soon as its checkpoint is stored, also when copying its manifest then fails', async () => {
    const h = await harness();
    const failure = denied('no copy');
    h.archive.failCopy = () => failure;
    const reported: CommitResult[] = [];
    await assert.rejects(
      h.sequence.commit(fill(h.batch()), AT_228, COUNTS, (result) => reported.push(result)),
      (error) => error === failure,
    );
    assert.equal(reported.length, 1);
    assert.equal(reported[0]!.checkpoint?.lsn, 0x228n);
    assert.deepEqual([reported[0]!.rows, reported[0]!.objects.length], [3, 2]);
    assert.equal(h.sequence.publishedPendingManifest, undefined, 'the manifest is not in place');
  });

  it('remembers the pending manifest it put in place; the next checkpoint write forgets it', async () => {
    const h = await harness();
    let reported = 0;
    await h.sequence.commit(fill(h.batch()), AT_228, COUNTS, () => reported++);
    assert.equal(reported, 1);
    assert.equal(h.sequence.publishedPendingManifest, MANIFEST);
    const second = h.batch();
    put(second, 'a', lsn(0x300n), 0);
    h.archive.failCopy = () => denied('no copy');
    await assert.rejects(h.sequence.commit(second, { lsn: lsn(0x330n), partial: undefined }, COUNTS));
    assert.equal(
      h.sequence.publishedPendingManifest,
      undefined,
      'the stored pending manifest is the new one',
    );
  });

  it('recovery copies a pending manifest into place, then forgets it in the checkpoint item', async () => {
    const h = await harness();
    h.archive.failCopy = () => denied('no copy');
    await assert.rejects(h.sequence.commit(fill(h.batch()), AT_228, COUNTS));
    h.archive.failCopy = undefined;
    h.clock.now += 120_000; // the first run's lease ran out
    const next = await h.store.acquire('run-2', 60_000, h.clock.nowMs());
    assert.ok(next.acquired);
    assert.deepEqual(next.pendingManifest, { key: MANIFEST, stagingKey: STAGED });
    const keeper = new LeaseKeeper(next.lease, h.store, 60_000, h.clock, createLogger('ERROR'));
    const result = await recover(
      next,
      {
        objects: h.archive,
        lease: keeper,
        deadline: Deadline.unbounded(),
        signal: new AbortController().signal,
        logger: createLogger('ERROR'),
        clock: h.clock,
      },
      {
        clearIntent: () => h.store.clearIntent(keeper.lease),
        clearPendingManifest: (key) => h.store.clearPendingManifest(keeper.lease, key),
      },
    );
    assert.ok(result.completed);
    assert.ok(h.archive.objects.has(MANIFEST));
    assert.equal(h.store.pendingManifest, undefined, 'no later run copies it again');
  });

  it('a manifest failure after the checkpoint: the checkpoint holds the pending manifest, no ack; the next publish repairs it', async () => {
    const h = await harness();
    const failure = denied('no copy');
    h.archive.failCopy = () => failure;
    await assert.rejects(h.sequence.commit(fill(h.batch()), AT_228, COUNTS), (error) => error === failure);
    assert.equal(h.store.current?.lsn, 0x228n);
    assert.deepEqual(h.store.pendingManifest, { key: MANIFEST, stagingKey: STAGED });
    assert.deepEqual(h.acks, []);
    assert.equal(h.archive.objects.has(MANIFEST), false);
    // what the next run's recovery does
    h.archive.failCopy = undefined;
    const signal = new AbortController().signal;
    await publishManifest(h.archive, h.store.pendingManifest!, {
      deadline: Deadline.unbounded(),
      signal,
      logger: createLogger('ERROR'),
    });
    assert.ok(h.archive.objects.has(MANIFEST));
    assert.equal(h.archive.objects.has(STAGED), false);
    // and again: idempotent (the staged copy is gone, the manifest is in place)
    await publishManifest(h.archive, h.store.pendingManifest!, {
      deadline: Deadline.unbounded(),
      signal,
      logger: createLogger('ERROR'),
    });
    assert.ok(h.archive.objects.has(MANIFEST));
  });

  it('a transient copy failure is retried and the sequence goes on', async () => {
    const h = await harness();
    let failures = 1;
    h.archive.failCopy = () => (failures-- > 0 ? internalError() : undefined);
    await h.sequence.commit(fill(h.batch()), AT_228, COUNTS);
    assert.deepEqual(h.acks, [0x228n]);
    assert.ok(h.archive.objects.has(MANIFEST));
  });

  it('an empty batch with a moved position writes only the checkpoint (no manifest), then acks', async () => {
    const h = await harness(AT_228);
    const result = await h.sequence.commit(
      h.batch(),
      { lsn: lsn(0x400n), partial: undefined },
      {
        transactions: 0,
        changes: 0,
      },
    );
    assert.deepEqual(h.events, ['checkpoint 0/400', 'ack 0/400']);
    assert.equal(result.objects.length, 0);
    assert.equal(h.store.pendingManifest, undefined);
  });

  it('an unchanged position without objects writes no checkpoint (and acks the same position again)', async () => {
    const h = await harness(AT_228);
    const writes = h.store.writes;
    await h.sequence.commit(h.batch(), AT_228, { transactions: 0, changes: 0 });
    assert.equal(h.store.writes, writes);
    assert.deepEqual(h.events, ['ack 0/228']);
  });

  it('refuses to move the checkpoint back on the same source', async () => {
    const h = await harness({ lsn: lsn(0x500n), partial: undefined });
    await assert.rejects(
      h.sequence.commit(h.batch(), AT_228, { transactions: 0, changes: 0 }),
      (error: unknown) => error instanceof SlotlakeError && /back/.test(error.message),
    );
    assert.deepEqual(h.events, []);
    await assert.rejects(
      h.sequence
        .commit(h.batch(), { lsn: lsn(0x500n), partial: { commitLsn: C3, nextSeq: 1 } }, COUNTS)
        .then(() =>
          h.sequence.commit(h.batch(), { lsn: lsn(0x500n), partial: { commitLsn: C3, nextSeq: 0 } }, COUNTS),
        ),
      /back/,
    );
  });

  it('estimates the tail (intent and checkpoint writes, staging and copying the manifest) from measured latencies', async () => {
    const h = await harness();
    assert.equal(h.sequence.estimateTailMs(), 2 * 100 + 2 * 150);
    h.speed.recordCommit(40);
    h.speed.recordUpload(10, 20);
    assert.equal(h.sequence.estimateTailMs(), 2 * 40 + 2 * 20);
  });
});
