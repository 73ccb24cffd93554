/**
 * The commit sequence (runtime/commit.ts): intent → objects durable → checkpoint (clears the intent, stores
 * the batch's manifest as pending) → manifest in S3 → ack, and a failure at any step stops everything after
 * it. Runs against the in-memory archive and checkpoint store; every step is logged in one shared event list
 * so the order itself is asserted.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { MemoryCheckpointStore } from '../../src/checkpoint/memory.js';
import type { Checkpoint, CheckpointUpdate, Lease, PendingManifest } from '../../src/checkpoint/store.js';
import { SlotlakeError } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';
import { formatLsn, lsn, type Lsn } from '../../src/lsn.js';
import { CommitSequence, writePendingManifest, type DurablePosition } from '../../src/runtime/commit.js';
import { Deadline } from '../../src/support/deadline.js';
import { BatchWriter, UploadMeter } from '../../src/sink/batch.js';
import { FakeArchive } from '../helpers/fake-archive.js';

const C1 = lsn(0x100n);
const C2 = lsn(0x200n);
const C3 = lsn(0x300n);
const OBJECT_A = 'lake/data/public.a/dt=2025-11-24/0000000000000100-0000000000000200.jsonl.gz';
const OBJECT_B = 'lake/data/public.b/dt=2025-11-24/0000000000000100-0000000000000100.jsonl.gz';
const MANIFEST = 'lake/manifests/0000000000000100-0000000000000200.json';

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

  override async recordIntent(lease: Lease, keys: readonly string[]): Promise<void> {
    await super.recordIntent(lease, keys);
    for (const key of keys) this.events.push(`intent ${key}`);
  }

  override async write(update: CheckpointUpdate, expected: number | null, lease: Lease): Promise<Checkpoint> {
    await this.beforeWrite?.();
    try {
      const stored = await super.write(update, expected, lease);
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

interface Harness {
  readonly events: string[];
  readonly archive: FakeArchive;
  readonly store: RecordingStore;
  readonly lease: Lease;
  readonly sequence: CommitSequence;
  readonly acks: Lsn[];
  batch(): BatchWriter;
}

/** `stored`: a checkpoint written before the sequence starts, which the sequence knows as its current one. */
async function harness(stored?: DurablePosition): Promise<Harness> {
  const events: string[] = [];
  const archive = new FakeArchive({ prefix: 'lake/', events });
  const store = new RecordingStore(events);
  const acquisition = await store.acquire('run-1', 60_000, Date.now());
  assert.ok(acquisition.acquired);
  const lease = acquisition.lease;
  const current = stored ? await store.write(stored, null, lease) : null;
  events.length = 0;
  const meter = new UploadMeter();
  const acks: Lsn[] = [];
  const sequence = new CommitSequence(
    {
      archive: archive.asS3Archive(),
      store,
      logger: createLogger('ERROR'),
      deadline: Deadline.unbounded(),
      meter,
      pipeline: 'shop',
      slot: 'slotlake',
      runId: 'run-1',
      lease: () => lease,
    },
    current,
    (position) => {
      acks.push(position);
      events.push(`ack ${formatLsn(position)}`);
    },
  );
  const batch = () =>
    new BatchWriter(
      {
        archive: archive.asS3Archive(),
        registerIntent: (keys) => store.recordIntent(lease, keys),
        spoolDir,
        objectMaxBytes: 1024 * 1024,
        meter,
      },
      0,
    );
  return { events, archive, store, lease, sequence, acks, batch };
}

function row(table: string, commitLsn: Lsn, seq: number): string {
  return JSON.stringify({ table, commit: formatLsn(commitLsn), seq });
}

/** Two transactions: C1 writes a and b, C2 writes a. */
function fill(batch: BatchWriter): BatchWriter {
  batch.write('public', 'a', '2025-11-24', C1, 0, row('a', C1, 0), false);
  batch.write('public', 'b', '2025-11-24', C1, 1, row('b', C1, 1), false);
  batch.write('public', 'a', '2025-11-24', C2, 0, row('a', C2, 0), false);
  return batch;
}

const AT_228: DurablePosition = { lsn: lsn(0x228n), partial: undefined };
const COUNTS = { transactions: 2, changes: 3 };

function denied(message: string): SlotlakeError {
  return new SlotlakeError(message, { kind: 'access-denied' });
}

/** A transient S3 failure (retried by withRetry). */
function internalError(): Error {
  return Object.assign(new Error('We encountered an internal error'), {
    name: 'InternalError',
    $metadata: { httpStatusCode: 500 },
  });
}

/** The events of `fill()`'s batch before the checkpoint: its two intents, then its two uploads. */
function assertIntentsThenUploads(events: readonly string[]): void {
  assert.deepEqual(
    events.slice(0, 2).sort(),
    [`intent ${OBJECT_A}`, `intent ${OBJECT_B}`],
    events.join(' | '),
  );
  assert.deepEqual(
    events.slice(2, 4).sort(),
    [`upload ${OBJECT_A}`, `upload ${OBJECT_B}`],
    events.join(' | '),
  );
}

/** The pending manifest stored in `store`, which must be there. */
function pendingOf(store: MemoryCheckpointStore): PendingManifest {
  const pending = store.pendingManifest;
  assert.ok(pending, 'a pending manifest is stored with the checkpoint');
  return pending;
}

describe('CommitSequence', () => {
  it('orders intent → objects → checkpoint → manifest → ack', async () => {
    const h = await harness();
    const result = await h.sequence.commit(fill(h.batch()), AT_228, COUNTS);
    assertIntentsThenUploads(h.events);
    assert.deepEqual(h.events.slice(4), ['checkpoint 0/228', `put-text ${MANIFEST}`, 'ack 0/228']);
    assert.ok(!h.events.includes(`intent ${MANIFEST}`), 'the manifest key is not part of the intent');

    assert.deepEqual(h.acks, [0x228n]);
    assert.equal(result.checkpoint?.lsn, 0x228n);
    assert.equal(result.checkpoint?.version, 1);
    assert.equal(result.checkpoint?.partial, undefined);
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
    assert.equal(
      result.bytes,
      result.objects.reduce((sum, o) => sum + o.bytes, 0),
    );
    assert.ok(result.bytes > 0);
    assert.equal(h.store.intent.size, 0, 'the checkpoint write clears the intent');
    assert.equal(pendingOf(h.store).key, MANIFEST);
    assert.deepEqual(readdirSync(spoolDir), []);
  });

  it('writes a manifest describing the batch', async () => {
    const h = await harness();
    const result = await h.sequence.commit(fill(h.batch()), AT_228, COUNTS);
    assert.deepEqual(
      h.archive.texts.map((t) => [t.key, t.contentType]),
      [[MANIFEST, 'application/json']],
    );
    const manifest = h.archive.json.get(MANIFEST) as Record<string, unknown>;
    assert.ok(manifest, [...h.archive.json.keys()].join(', '));
    const { createdAt, ...rest } = manifest;
    assert.ok(!Number.isNaN(Date.parse(String(createdAt))));
    assert.deepEqual(rest, {
      version: 1,
      pipeline: 'shop',
      slot: 'slotlake',
      runId: 'run-1',
      startLsn: '0/100',
      endLsn: '0/200',
      previousCheckpoint: null,
      checkpoint: '0/228',
      partial: null,
      transactions: 2,
      changes: 3,
      bytes: result.bytes,
      objects: [
        {
          key: OBJECT_A,
          schema: 'public',
          table: 'a',
          dt: '2025-11-24',
          rows: 2,
          bytes: result.objects[0]!.bytes,
          startLsn: '0/100',
          endLsn: '0/200',
        },
        {
          key: OBJECT_B,
          schema: 'public',
          table: 'b',
          dt: '2025-11-24',
          rows: 1,
          bytes: result.objects[1]!.bytes,
          startLsn: '0/100',
          endLsn: '0/100',
        },
      ],
    });
  });

  it('the pending manifest stored with the checkpoint is exactly what is written to S3', async () => {
    const h = await harness();
    await h.sequence.commit(fill(h.batch()), AT_228, COUNTS);
    assert.equal(h.store.updates.length, 1);
    const update = h.store.updates[0]!;
    assert.ok(update.manifest, 'the checkpoint write carries the manifest');
    assert.deepEqual(pendingOf(h.store), update.manifest);
    assert.equal(update.lsn, 0x228n);
    const written = h.archive.text(MANIFEST);
    assert.ok(written);
    assert.deepEqual({ key: written.key, body: written.body }, pendingOf(h.store));
    assert.equal((JSON.parse(pendingOf(h.store).body) as { checkpoint: string }).checkpoint, '0/228');
    // The next run would find it at acquisition.
    const next = await h.store.acquire('run-1', 60_000, Date.now());
    assert.ok(next.acquired);
    assert.deepEqual(next.pendingManifest, { key: MANIFEST, body: written.body });
  });

  it('the next batch goes on from the checkpoint it wrote, with a cut transaction as partial', async () => {
    const h = await harness();
    await h.sequence.commit(fill(h.batch()), AT_228, COUNTS);
    const second = h.batch();
    second.write('public', 'a', '2025-11-25', C3, 0, row('a', C3, 0), false);
    second.write('public', 'a', '2025-11-25', C3, 1, row('a', C3, 1), false);
    const position: DurablePosition = { lsn: lsn(0x228n), partial: { commitLsn: C3, nextSeq: 2 } };
    const result = await h.sequence.commit(second, position, { transactions: 0, changes: 2 });
    assert.equal(result.checkpoint?.version, 2);
    assert.deepEqual(result.checkpoint?.partial, { commitLsn: C3, nextSeq: 2 });
    const secondKey = 'lake/manifests/0000000000000300-0000000000000300.json';
    const manifest = h.archive.json.get(secondKey) as Record<string, unknown>;
    assert.ok(manifest, [...h.archive.json.keys()].join(', '));
    assert.equal(manifest.previousCheckpoint, '0/228');
    assert.equal(manifest.checkpoint, '0/228');
    assert.deepEqual(manifest.partial, { commitLsn: '0/300', nextSeq: 2 });
    assert.equal(manifest.changes, 2);
    assert.deepEqual(
      h.events.filter((e) => /^(checkpoint|put-text|ack)/.test(e)),
      [
        'checkpoint 0/228',
        `put-text ${MANIFEST}`,
        'ack 0/228',
        'checkpoint 0/228',
        `put-text ${secondKey}`,
        'ack 0/228',
      ],
    );
    assert.equal(pendingOf(h.store).key, secondKey, 'the second checkpoint replaced the pending manifest');
    assert.equal(pendingOf(h.store).body, h.archive.text(secondKey)?.body);
    assert.deepEqual(h.acks, [0x228n, 0x228n]);
  });

  it('an upload failure: no checkpoint, no manifest, no ack; the intent stays for recovery', async () => {
    const h = await harness();
    const failure = denied('bucket policy says no');
    h.archive.failUpload = (key) => (key === OBJECT_B ? failure : undefined);
    await assert.rejects(h.sequence.commit(fill(h.batch()), AT_228, COUNTS), (error) => error === failure);
    assert.ok(h.events.includes(`upload-failed ${OBJECT_B}`));
    assert.deepEqual(
      h.events.filter((e) => /^(put-text|checkpoint|ack)/.test(e)),
      [],
    );
    assert.deepEqual(h.archive.texts, []);
    assert.deepEqual(h.acks, []);
    assert.equal(h.store.writes, 0);
    assert.equal(h.store.pendingManifest, undefined);
    assert.equal(h.sequence.checkpoint, null);
    assert.deepEqual([...h.store.intent].sort(), [OBJECT_A, OBJECT_B]);
    assert.deepEqual(readdirSync(spoolDir), []);
  });

  it('a checkpoint conflict: no manifest, no ack, kind checkpoint-conflict, the stored checkpoint untouched', async () => {
    const h = await harness();
    // Another run moved the checkpoint after this sequence read it (as null).
    const other = await h.store.write({ lsn: lsn(0x50n), partial: undefined }, null, h.lease);
    h.events.length = 0;
    await assert.rejects(h.sequence.commit(fill(h.batch()), AT_228, COUNTS), (error: unknown) => {
      assert.ok(error instanceof SlotlakeError);
      assert.equal(error.kind, 'checkpoint-conflict');
      assert.equal(error.retryable, false);
      return true;
    });
    assertIntentsThenUploads(h.events);
    assert.deepEqual(h.events.slice(4), ['checkpoint-failed'], 'tried once, not retried; nothing after it');
    assert.deepEqual(h.archive.texts, []);
    assert.deepEqual(h.acks, []);
    assert.deepEqual(await h.store.read(), other);
    assert.equal(h.store.pendingManifest, undefined);
    assert.deepEqual([...h.store.intent].sort(), [OBJECT_A, OBJECT_B], 'the intent stays for recovery');
    assert.equal(h.sequence.checkpoint, null);
  });

  it('a lease lost before the checkpoint: no checkpoint, no manifest, no ack; the new holder sees the intent', async () => {
    const h = await harness();
    let taken: Awaited<ReturnType<RecordingStore['acquire']>> | undefined;
    h.store.beforeWrite = async () => {
      taken = await h.store.acquire('run-2', 60_000, Date.now() + 120_000);
    };
    await assert.rejects(h.sequence.commit(fill(h.batch()), AT_228, COUNTS), (error: unknown) => {
      assert.ok(error instanceof SlotlakeError);
      assert.equal(error.kind, 'lease-lost');
      return true;
    });
    assertIntentsThenUploads(h.events);
    assert.deepEqual(h.events.slice(4), ['checkpoint-failed'], 'tried once, not retried; nothing after it');
    assert.deepEqual(h.archive.texts, []);
    assert.deepEqual(h.acks, []);
    assert.equal(h.store.writes, 0);
    assert.equal(h.store.pendingManifest, undefined);
    assert.equal(h.sequence.checkpoint, null);
    assert.ok(taken?.acquired);
    assert.deepEqual([...taken.intentKeys].sort(), [OBJECT_A, OBJECT_B]);
    assert.equal(taken.pendingManifest, undefined);
  });

  it('a lease lost before the intent: nothing uploaded, no checkpoint, no ack', async () => {
    const h = await harness();
    const taken = await h.store.acquire('run-2', 60_000, Date.now() + 120_000);
    assert.ok(taken.acquired);
    h.events.length = 0;
    await assert.rejects(h.sequence.commit(fill(h.batch()), AT_228, COUNTS), (error: unknown) => {
      assert.ok(error instanceof SlotlakeError);
      assert.equal(error.kind, 'lease-lost');
      return true;
    });
    assert.deepEqual(h.archive.uploads, [], 'not even the intent could be recorded');
    assert.deepEqual(h.archive.texts, []);
    assert.deepEqual(h.events, []);
    assert.deepEqual(h.acks, []);
    assert.equal(h.store.writes, 0);
  });

  it('a manifest failure after the checkpoint: the checkpoint holds the pending manifest, no ack, the error surfaces', async () => {
    const h = await harness();
    const failure = denied('no PutObject on manifests/');
    h.archive.failPutText = () => failure;
    await assert.rejects(h.sequence.commit(fill(h.batch()), AT_228, COUNTS), (error) => error === failure);
    assertIntentsThenUploads(h.events);
    assert.deepEqual(h.events.slice(4), ['checkpoint 0/228', `put-text-failed ${MANIFEST}`]);
    assert.deepEqual(h.acks, []);
    assert.deepEqual(h.archive.texts, []);
    const stored = await h.store.read();
    assert.equal(stored?.lsn, 0x228n);
    assert.equal(stored?.version, 1);
    assert.equal(h.sequence.checkpoint, stored, 'the sequence knows the checkpoint it stored');
    assert.equal(h.store.intent.size, 0, 'the batch is committed: its objects must not be recovered');
    const pending = pendingOf(h.store);
    assert.equal(pending.key, MANIFEST);
    const body = JSON.parse(pending.body) as Record<string, unknown>;
    assert.equal(body.checkpoint, '0/228');
    assert.deepEqual(
      (body.objects as { key: string }[]).map((o) => o.key),
      [OBJECT_A, OBJECT_B],
    );

    // The next run finds the pending manifest and writes it.
    h.archive.failPutText = undefined;
    const next = await h.store.acquire('run-2', 60_000, Date.now() + 120_000);
    assert.ok(next.acquired);
    assert.deepEqual(next.pendingManifest, pending);
    assert.deepEqual(next.intentKeys, []);
    await writePendingManifest(h.archive.asS3Archive(), next.pendingManifest!, Deadline.unbounded());
    assert.deepEqual(h.archive.texts, [
      { key: MANIFEST, body: pending.body, contentType: 'application/json' },
    ]);
    assert.deepEqual(h.archive.json.get(MANIFEST), body);
  });

  it('a transient manifest failure is retried and the sequence goes on', async () => {
    const h = await harness();
    let failures = 1;
    h.archive.failPutText = () => (failures-- > 0 ? internalError() : undefined);
    await h.sequence.commit(fill(h.batch()), AT_228, COUNTS);
    assert.deepEqual(h.events.slice(4), [
      'checkpoint 0/228',
      `put-text-failed ${MANIFEST}`,
      `put-text ${MANIFEST}`,
      'ack 0/228',
    ]);
    assert.equal(h.store.writes, 1, 'the checkpoint is not written again');
  });

  it('an unchanged position with objects still writes a checkpoint (to store the pending manifest)', async () => {
    const h = await harness(AT_228);
    await h.sequence.commit(fill(h.batch()), AT_228, COUNTS);
    assertIntentsThenUploads(h.events);
    assert.deepEqual(h.events.slice(4), ['checkpoint 0/228', `put-text ${MANIFEST}`, 'ack 0/228']);
    assert.equal(h.sequence.checkpoint?.version, 2);
    assert.equal(pendingOf(h.store).key, MANIFEST);
    assert.equal(h.store.intent.size, 0);
  });

  it('an empty batch with a moved position writes only the checkpoint, then acks', async () => {
    const h = await harness({ lsn: C1, partial: undefined });
    const result = await h.sequence.commit(
      h.batch(),
      { lsn: lsn(0x180n), partial: undefined },
      {
        transactions: 0,
        changes: 0,
      },
    );
    assert.deepEqual(h.events, ['checkpoint 0/180', 'ack 0/180']);
    assert.deepEqual(result.objects, []);
    assert.equal(result.rows, 0);
    assert.equal(result.checkpoint?.version, 2);
    assert.equal(h.archive.json.size, 0);
    assert.deepEqual(h.archive.texts, []);
    assert.equal(h.store.updates.at(-1)?.manifest, undefined);
  });

  it('a position-only checkpoint after a batch removes the (already written) pending manifest', async () => {
    const h = await harness();
    await h.sequence.commit(fill(h.batch()), AT_228, COUNTS);
    assert.equal(pendingOf(h.store).key, MANIFEST);
    await h.sequence.commit(
      h.batch(),
      { lsn: lsn(0x300n), partial: undefined },
      { transactions: 1, changes: 0 },
    );
    assert.deepEqual(h.events.slice(-2), ['checkpoint 0/300', 'ack 0/300']);
    assert.equal(h.store.pendingManifest, undefined);
    assert.equal(h.archive.texts.length, 1, 'no manifest for a batch without objects');
  });

  it('an unchanged position without objects writes no checkpoint (and acks the same position again)', async () => {
    const h = await harness({ lsn: C1, partial: { commitLsn: C2, nextSeq: 3 } });
    const before = h.store.writes;
    const result = await h.sequence.commit(
      h.batch(),
      { lsn: C1, partial: { commitLsn: C2, nextSeq: 3 } },
      {
        transactions: 0,
        changes: 0,
      },
    );
    assert.equal(h.store.writes, before);
    assert.deepEqual(h.events, ['ack 0/100']);
    assert.equal(result.checkpoint?.version, 1);
    // The same LSN with more of the cut transaction archived is a move.
    await h.sequence.commit(
      h.batch(),
      { lsn: C1, partial: { commitLsn: C2, nextSeq: 4 } },
      {
        transactions: 0,
        changes: 0,
      },
    );
    assert.deepEqual(h.events, ['ack 0/100', 'checkpoint 0/100', 'ack 0/100']);
    assert.equal(h.sequence.checkpoint?.partial?.nextSeq, 4);
  });

  it('estimates the tail (checkpoint, manifest, ack) from measured latencies', async () => {
    const h = await harness();
    assert.equal(h.sequence.estimateTailMs(), 150 + 100 + 50);
  });
});

describe('writePendingManifest', () => {
  const PENDING: PendingManifest = {
    key: 'lake/manifests/0000000000000A00-0000000000000B00.json',
    body: `${JSON.stringify({ version: 1, checkpoint: '0/B28', objects: [] }, null, 2)}\n`,
  };

  it('writes the stored text as is, as JSON; writing it twice is harmless', async () => {
    const archive = new FakeArchive({ prefix: 'lake/' });
    await writePendingManifest(archive.asS3Archive(), PENDING, Deadline.unbounded());
    await writePendingManifest(archive.asS3Archive(), PENDING, Deadline.unbounded());
    const expected = { key: PENDING.key, body: PENDING.body, contentType: 'application/json' };
    assert.deepEqual(archive.texts, [expected, expected]);
    assert.deepEqual(archive.events, [`put-text ${PENDING.key}`, `put-text ${PENDING.key}`]);
    assert.deepEqual([...archive.json.keys()], [PENDING.key]);
    assert.deepEqual(archive.json.get(PENDING.key), { version: 1, checkpoint: '0/B28', objects: [] });
  });

  it('retries a transient failure and surfaces a permanent one', async () => {
    const archive = new FakeArchive();
    let failures = 1;
    archive.failPutText = () => (failures-- > 0 ? internalError() : undefined);
    await writePendingManifest(archive.asS3Archive(), PENDING, Deadline.unbounded());
    assert.deepEqual(archive.events, [`put-text-failed ${PENDING.key}`, `put-text ${PENDING.key}`]);

    const failure = denied('no PutObject on manifests/');
    archive.failPutText = () => failure;
    await assert.rejects(
      writePendingManifest(archive.asS3Archive(), PENDING, Deadline.unbounded()),
      (error) => error === failure,
    );
    assert.equal(archive.events.at(-1), `put-text-failed ${PENDING.key}`);
    assert.equal(archive.texts.length, 1);
  });
});
