/**
 * The commit sequence (runtime/commit.ts): intent → objects durable → manifest → checkpoint → ack, and a
 * failure at any step stops everything after it. Runs against the in-memory archive and checkpoint store;
 * every step is logged in one shared event list so the order itself is asserted.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { MemoryCheckpointStore } from '../../src/checkpoint/memory.js';
import type { Checkpoint, CheckpointUpdate, Lease } from '../../src/checkpoint/store.js';
import { SlotlakeError } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';
import { formatLsn, lsn, type Lsn } from '../../src/lsn.js';
import { CommitSequence, type DurablePosition } from '../../src/runtime/commit.js';
import { Deadline } from '../../src/runtime/deadline.js';
import { BatchWriter, UploadMeter } from '../../src/sink/batch.js';
import { FakeArchive } from '../helpers/fake-archive.js';

const C1 = lsn(0x100n);
const C2 = lsn(0x200n);
const C3 = lsn(0x300n);
const OBJECT_A = 'lake/data/public.a/dt=2025-11-24/0000000000000100-0000000000000200.jsonl.gz';
const OBJECT_B = 'lake/data/public.b/dt=2025-11-24/0000000000000100-0000000000000100.jsonl.gz';
const MANIFEST = 'lake/manifests/0000000000000100-0000000000000200.json';

/** The checkpoint store, logging successful intents and checkpoint writes in the shared event list. */
class RecordingStore extends MemoryCheckpointStore {
  constructor(private readonly events: string[]) {
    super();
  }

  override async recordIntent(lease: Lease, keys: readonly string[]): Promise<void> {
    await super.recordIntent(lease, keys);
    for (const key of keys) this.events.push(`intent ${key}`);
  }

  override async write(update: CheckpointUpdate, expected: number | null, lease: Lease): Promise<Checkpoint> {
    try {
      const stored = await super.write(update, expected, lease);
      this.events.push(`checkpoint ${formatLsn(stored.lsn)}`);
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

describe('CommitSequence', () => {
  it('orders intent → objects → manifest → checkpoint → ack', async () => {
    const h = await harness();
    const result = await h.sequence.commit(fill(h.batch()), AT_228, COUNTS);
    assert.deepEqual(h.events.slice(0, 3).sort(), [
      `intent ${OBJECT_A}`,
      `intent ${OBJECT_B}`,
      `intent ${MANIFEST}`,
    ]);
    assert.deepEqual(h.events.slice(3, 5).sort(), [`upload ${OBJECT_A}`, `upload ${OBJECT_B}`]);
    assert.deepEqual(h.events.slice(5), [`put-json ${MANIFEST}`, 'checkpoint 0/228', 'ack 0/228']);

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
    assert.deepEqual(readdirSync(spoolDir), []);
  });

  it('writes a manifest describing the batch', async () => {
    const h = await harness();
    const result = await h.sequence.commit(fill(h.batch()), AT_228, COUNTS);
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
          table: 'public.a',
          dt: '2025-11-24',
          rows: 2,
          bytes: result.objects[0]!.bytes,
          startLsn: '0/100',
          endLsn: '0/200',
        },
        {
          key: OBJECT_B,
          table: 'public.b',
          dt: '2025-11-24',
          rows: 1,
          bytes: result.objects[1]!.bytes,
          startLsn: '0/100',
          endLsn: '0/100',
        },
      ],
    });
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
    const manifest = h.archive.json.get('lake/manifests/0000000000000300-0000000000000300.json') as Record<
      string,
      unknown
    >;
    assert.equal(manifest.previousCheckpoint, '0/228');
    assert.equal(manifest.checkpoint, '0/228');
    assert.deepEqual(manifest.partial, { commitLsn: '0/300', nextSeq: 2 });
    assert.equal(manifest.changes, 2);
    assert.deepEqual(h.acks, [0x228n, 0x228n]);
  });

  it('an upload failure: no manifest, no checkpoint, no ack; the intent stays for recovery', async () => {
    const h = await harness();
    const failure = denied('bucket policy says no');
    h.archive.failUpload = (key) => (key === OBJECT_B ? failure : undefined);
    await assert.rejects(h.sequence.commit(fill(h.batch()), AT_228, COUNTS), (error) => error === failure);
    assert.ok(h.events.includes(`upload-failed ${OBJECT_B}`));
    assert.deepEqual(
      h.events.filter((e) => /^(put-json|checkpoint|ack)/.test(e)),
      [],
    );
    assert.deepEqual(h.acks, []);
    assert.equal(h.store.writes, 0);
    assert.equal(h.sequence.checkpoint, null);
    assert.deepEqual([...h.store.intent].sort(), [OBJECT_A, OBJECT_B, MANIFEST]);
    assert.deepEqual(readdirSync(spoolDir), []);
  });

  it('a manifest failure: no checkpoint, no ack', async () => {
    const h = await harness();
    const failure = denied('no PutObject on manifests/');
    h.archive.failPutJson = () => failure;
    await assert.rejects(h.sequence.commit(fill(h.batch()), AT_228, COUNTS), (error) => error === failure);
    assert.equal(h.archive.uploads.length, 2, 'the objects were uploaded');
    assert.equal(h.events.at(-1), `put-json-failed ${MANIFEST}`);
    assert.deepEqual(
      h.events.filter((e) => /^(checkpoint|ack)/.test(e)),
      [],
    );
    assert.equal(h.store.writes, 0);
    assert.equal(h.sequence.checkpoint, null);
    assert.ok(h.store.intent.has(MANIFEST));
  });

  it('a transient manifest failure is retried and the sequence goes on', async () => {
    const h = await harness();
    let failures = 1;
    h.archive.failPutJson = () =>
      failures-- > 0
        ? Object.assign(new Error('We encountered an internal error'), {
            name: 'InternalError',
            $metadata: { httpStatusCode: 500 },
          })
        : undefined;
    await h.sequence.commit(fill(h.batch()), AT_228, COUNTS);
    assert.deepEqual(h.events.slice(5), [
      `put-json-failed ${MANIFEST}`,
      `put-json ${MANIFEST}`,
      'checkpoint 0/228',
      'ack 0/228',
    ]);
  });

  it('a checkpoint conflict: no ack, kind checkpoint-conflict, the stored checkpoint untouched', async () => {
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
    assert.equal(h.events.filter((e) => e === 'checkpoint-failed').length, 1, 'tried once, not retried');
    assert.equal(h.events.at(-1), 'checkpoint-failed');
    assert.ok(h.events.includes(`put-json ${MANIFEST}`));
    assert.deepEqual(h.acks, []);
    assert.deepEqual(await h.store.read(), other);
    assert.equal(h.sequence.checkpoint, null);
  });

  it('a lost lease: no checkpoint, no ack', async () => {
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
    assert.deepEqual(h.acks, []);
    assert.equal(h.store.writes, 0);
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
  });

  it('an unchanged position writes no checkpoint (and acks the same position again)', async () => {
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

  it('setAcknowledge redirects later acknowledgements', async () => {
    const h = await harness();
    const redirected: Lsn[] = [];
    h.sequence.setAcknowledge((position) => redirected.push(position));
    await h.sequence.commit(h.batch(), AT_228, { transactions: 0, changes: 0 });
    assert.deepEqual(redirected, [0x228n]);
    assert.deepEqual(h.acks, []);
  });

  it('estimates the tail (manifest, checkpoint, ack) from measured latencies', async () => {
    const h = await harness();
    assert.equal(h.sequence.estimateTailMs(), 150 + 100 + 50);
  });
});
