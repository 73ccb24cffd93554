/**
 * The CheckpointStore contract (src/checkpoint/store.ts), run against both implementations: the in-memory one
 * and the DynamoDB one (through dynalite, a DynamoDB-compatible server started here on loopback). Checkpoint
 * writes succeed only from the expected version and with the current lease, never move backwards on the same
 * source (unsigned LSN order, also above 2^63), clear the intent and record the pending manifest (or remove
 * it); the lease is exclusive until it expires, each acquisition fences out the holders before it and reports
 * the lease it took over (exactly one of several racing runs gets it; held up to its expiry instant; a
 * released or fenced-off lease changes nothing, not even the new holder's intent); the measured store speed
 * and the source identity are kept.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoCheckpointStore, ensureCheckpointTable } from '../../src/checkpoint/dynamodb.js';
import { MemoryCheckpointStore } from '../../src/checkpoint/memory.js';
import type { CheckpointStore, CheckpointUpdate, Lease, SourceIdentity } from '../../src/checkpoint/store.js';
import { startLocalDynamo, type LocalDynamo } from '../../src/devstack/aws.js';
import { SlotlakeError } from '../../src/errors.js';
import { lsn } from '../../src/lsn.js';

const MINUTE = 60_000;
const SOURCE: SourceIdentity = {
  systemId: '7300000000000000001',
  timeline: 1,
  database: 'shop',
  slot: 'slotlake',
};
const OTHER_SYSTEM: SourceIdentity = { ...SOURCE, systemId: '7400000000000000002' };

function isKind(kind: string) {
  return (error: unknown) => {
    assert.ok(error instanceof SlotlakeError, String(error));
    assert.equal(error.kind, kind);
    assert.equal(error.retryable, false);
    return true;
  };
}

function at(
  value: bigint,
  partial?: { commitLsn: bigint; nextSeq: number },
  source: SourceIdentity = SOURCE,
): CheckpointUpdate {
  return {
    lsn: lsn(value),
    partial: partial ? { commitLsn: lsn(partial.commitLsn), nextSeq: partial.nextSeq } : undefined,
    source,
  };
}

let dynamo: LocalDynamo;
let client: DynamoDBClient;
const TABLE = 'checkpoint-contract';
let pipelines = 0;

before(async () => {
  dynamo = await startLocalDynamo();
  client = new DynamoDBClient({
    endpoint: dynamo.endpoint,
    region: 'us-east-1',
    credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
    maxAttempts: 1,
  });
  await ensureCheckpointTable(client, TABLE);
});

after(async () => {
  client?.destroy();
  await dynamo?.stop();
});

const implementations: Array<[string, () => CheckpointStore]> = [
  ['MemoryCheckpointStore', () => new MemoryCheckpointStore()],
  ['DynamoCheckpointStore', () => new DynamoCheckpointStore(client, TABLE, `pipeline-${++pipelines}`)],
];

for (const [name, create] of implementations) {
  /** A store and a lease held on it by `owner`. */
  async function held(owner = 'run-1', nowMs = 0): Promise<{ store: CheckpointStore; lease: Lease }> {
    const store = create();
    const acquisition = await store.acquire(owner, MINUTE, nowMs);
    assert.ok(acquisition.acquired);
    return { store, lease: acquisition.lease };
  }

  async function acquired(store: CheckpointStore, owner: string, nowMs: number) {
    const acquisition = await store.acquire(owner, MINUTE, nowMs);
    assert.ok(acquisition.acquired, `${owner} acquires at ${nowMs}`);
    return acquisition;
  }

  describe(`${name}: checkpoint`, () => {
    it('starts empty', async () => {
      assert.equal(await create().read(), null);
    });

    it('the first write expects no checkpoint; each write bumps the version; the source is kept', async () => {
      const { store, lease } = await held();
      const first = await store.write(at(0x100n), null, lease);
      assert.equal(first.version, 1);
      assert.equal(first.lsn, 0x100n);
      assert.equal(first.partial, undefined);
      assert.deepEqual(first.source, SOURCE);
      assert.ok(!Number.isNaN(Date.parse(first.updatedAt)));
      assert.deepEqual({ ...(await store.read()) }, { ...first });
      const second = await store.write(
        { ...at(0x200n, { commitLsn: 0x300n, nextSeq: 5 }), note: { runId: 'r' } },
        1,
        lease,
      );
      assert.equal(second.version, 2);
      assert.deepEqual(second.partial, { commitLsn: 0x300n, nextSeq: 5 });
      const read = await store.read();
      assert.equal(read?.version, 2);
      assert.deepEqual(read?.partial, { commitLsn: 0x300n, nextSeq: 5 });
      assert.deepEqual(read?.source, SOURCE);
    });

    it('a write from another version is a checkpoint conflict and changes nothing', async () => {
      const { store, lease } = await held();
      await assert.rejects(store.write(at(0x100n), 1, lease), isKind('checkpoint-conflict'));
      assert.equal(await store.read(), null);
      await store.write(at(0x100n), null, lease);
      await assert.rejects(store.write(at(0x200n), null, lease), isKind('checkpoint-conflict'));
      await assert.rejects(store.write(at(0x200n), 0, lease), isKind('checkpoint-conflict'));
      await assert.rejects(store.write(at(0x200n), 2, lease), isKind('checkpoint-conflict'));
      assert.equal((await store.read())?.lsn, 0x100n);
      assert.equal((await store.read())?.version, 1);
    });

    it('two writes from the same version: exactly one wins', async () => {
      const { store, lease } = await held();
      await store.write(at(0x100n), null, lease);
      const results = await Promise.allSettled([
        store.write(at(0x200n), 1, lease),
        store.write(at(0x300n), 1, lease),
      ]);
      assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
      const winner = results.findIndex((r) => r.status === 'fulfilled');
      assert.equal((await store.read())?.lsn, winner === 0 ? 0x200n : 0x300n);
      assert.equal((await store.read())?.version, 2);
    });

    it('never moves backwards on the same source, even from the right version', async () => {
      const { store, lease } = await held();
      await store.write(at(0x200n), null, lease);
      await assert.rejects(store.write(at(0x1ffn), 1, lease), isKind('internal'));
      assert.equal((await store.read())?.lsn, 0x200n);
      assert.equal((await store.read())?.version, 1);
    });

    it('may start lower on another source (a gap the operator accepted)', async () => {
      const { store, lease } = await held();
      await store.write(at(0x9000n), null, lease);
      const moved = await store.write(at(0x100n, undefined, OTHER_SYSTEM), 1, lease);
      assert.equal(moved.lsn, 0x100n);
      assert.deepEqual((await store.read())?.source, OTHER_SYSTEM);
      await assert.rejects(store.write(at(0x50n, undefined, OTHER_SYSTEM), 2, lease), isKind('internal'));
    });

    it('the same LSN may be written again (progress inside a cut transaction)', async () => {
      const { store, lease } = await held();
      await store.write(at(0x200n, { commitLsn: 0x300n, nextSeq: 2 }), null, lease);
      const next = await store.write(at(0x200n, { commitLsn: 0x300n, nextSeq: 9 }), 1, lease);
      assert.equal(next.version, 2);
      assert.deepEqual((await store.read())?.partial, { commitLsn: 0x300n, nextSeq: 9 });
    });

    it('compares LSNs unsigned above 2^63', async () => {
      const { store, lease } = await held();
      await store.write(at(1n << 63n), null, lease);
      await assert.rejects(store.write(at((1n << 63n) - 1n), 1, lease), isKind('internal'));
      await assert.rejects(store.write(at(0xffn), 1, lease), isKind('internal'));
      assert.equal((await store.write(at((1n << 64n) - 1n), 1, lease)).version, 2);
      assert.equal((await store.read())?.lsn, (1n << 64n) - 1n);
    });

    it('keeps a cut transaction whose position and commit LSN are above 2^63', async () => {
      const { store, lease } = await held();
      const partial = { commitLsn: (1n << 64n) - 2n, nextSeq: 3 };
      await store.write(at((1n << 63n) + 5n, partial), null, lease);
      const read = await store.read();
      assert.equal(read?.lsn, (1n << 63n) + 5n);
      assert.deepEqual(read?.partial, partial);
      await assert.rejects(store.write(at(1n << 63n), 1, lease), isKind('internal'));
    });
  });

  describe(`${name}: lease`, () => {
    it('is exclusive until it expires; the refusal names the holder and the stored checkpoint', async () => {
      const { store, lease } = await held('run-1', 1_000);
      await store.write(at(0x100n), null, lease);
      assert.equal(lease.owner, 'run-1');
      assert.equal(lease.expiresAtMs, 1_000 + MINUTE);
      const refused = await store.acquire('run-2', MINUTE, 1_000 + MINUTE);
      assert.equal(refused.acquired, false);
      assert.ok(!refused.acquired);
      assert.equal(refused.holder, 'run-1');
      assert.equal(refused.expiresAtMs, 1_000 + MINUTE);
      assert.equal(refused.checkpoint?.lsn, 0x100n);
      const taken = await acquired(store, 'run-2', 1_001 + MINUTE);
      assert.equal(taken.lease.owner, 'run-2');
      assert.ok(taken.lease.fence > lease.fence);
      assert.deepEqual(taken.takenOver, { owner: 'run-1', expiresAtMs: 1_000 + MINUTE });
    });

    it('a run that lost the lease can write nothing', async () => {
      const { store, lease: old } = await held('run-1', 0);
      await store.write(at(0x100n), null, old);
      const taken = await acquired(store, 'run-2', 2 * MINUTE);
      assert.equal(taken.checkpoint?.lsn, 0x100n);
      await assert.rejects(store.write(at(0x200n), 1, old), isKind('lease-lost'));
      await assert.rejects(store.renew(old, MINUTE, 2 * MINUTE), isKind('lease-lost'));
      await assert.rejects(store.recordIntent(old, ['k']), isKind('lease-lost'));
      await assert.rejects(store.clearIntent(old), isKind('lease-lost'));
      assert.equal((await store.read())?.lsn, 0x100n);
      assert.equal((await store.read())?.version, 1);
      assert.equal((await store.write(at(0x200n), 1, taken.lease)).version, 2);
    });

    it('re-acquiring by the same owner fences out its own older lease, and is no takeover', async () => {
      const { store, lease: first } = await held('run-1');
      const again = await acquired(store, 'run-1', 10);
      assert.ok(again.lease.fence > first.fence);
      assert.equal(again.takenOver, undefined);
      await assert.rejects(store.write(at(0x100n), null, first), isKind('lease-lost'));
      assert.equal((await store.write(at(0x100n), null, again.lease)).version, 1);
    });

    it('is held up to and including its expiry instant, and can be taken one millisecond later', async () => {
      const { store, lease } = await held('run-1', 0);
      assert.equal(lease.expiresAtMs, MINUTE);
      assert.equal((await store.acquire('run-2', MINUTE, MINUTE)).acquired, false);
      const taken = await acquired(store, 'run-2', MINUTE + 1);
      assert.deepEqual(taken.takenOver, { owner: 'run-1', expiresAtMs: MINUTE });
    });

    it('runs racing for an expired lease: exactly one gets it, with the next fence', async () => {
      const { store, lease } = await held('run-1', 0);
      const results = await Promise.all(
        ['run-a', 'run-b', 'run-c', 'run-d'].map((owner) => store.acquire(owner, MINUTE, 2 * MINUTE)),
      );
      const winners = results.filter((result) => result.acquired);
      assert.equal(winners.length, 1, JSON.stringify(results));
      const winner = winners[0]!;
      assert.ok(winner.acquired);
      assert.equal(winner.lease.fence, lease.fence + 1);
      for (const loser of results.filter((result) => !result.acquired)) {
        assert.ok(!loser.acquired);
        assert.equal(loser.holder, winner.lease.owner);
      }
      await assert.rejects(store.write(at(0x100n), null, lease), isKind('lease-lost'));
      assert.equal((await store.write(at(0x100n), null, winner.lease)).version, 1);
    });

    it('a released lease can write nothing; the next acquisition has a higher fence', async () => {
      const { store, lease } = await held('run-1', 0);
      await store.release(lease);
      await assert.rejects(store.write(at(0x100n), null, lease), isKind('lease-lost'));
      await assert.rejects(store.recordIntent(lease, ['k']), isKind('lease-lost'));
      await assert.rejects(store.renew(lease, MINUTE, 1), isKind('lease-lost'));
      const next = await acquired(store, 'run-2', 1);
      assert.ok(next.lease.fence > lease.fence, `${next.lease.fence} > ${lease.fence}`);
      assert.deepEqual(next.intentKeys, []);
      assert.equal(await store.read(), null);
    });

    it('a fenced-off run changes neither the intent nor the pending manifest nor the lease of the new holder', async () => {
      const { store, lease: old } = await held('run-1', 0);
      const taken = await acquired(store, 'run-2', 2 * MINUTE);
      await store.recordIntent(taken.lease, ['data/new/1.jsonl.gz']);
      await assert.rejects(store.recordIntent(old, ['data/old/1.jsonl.gz']), isKind('lease-lost'));
      await assert.rejects(store.clearIntent(old), isKind('lease-lost'));
      await assert.rejects(
        store.write(
          { ...at(0x100n), manifest: { key: 'manifests/x.json', stagingKey: 's/x.json' } },
          null,
          old,
        ),
        isKind('lease-lost'),
      );
      await assert.rejects(
        store.release(old, { uploadBytesPerMs: 1, requestLatencyMs: 1, commitLatencyMs: 1 }, 5),
        isKind('lease-lost'),
      );
      const third = await acquired(store, 'run-3', 4 * MINUTE);
      assert.deepEqual(third.intentKeys, ['data/new/1.jsonl.gz']);
      assert.equal(third.pendingManifest, undefined);
      assert.equal(third.checkpoint, null);
      assert.deepEqual(third.takenOver, { owner: 'run-2', expiresAtMs: 3 * MINUTE });
    });

    it('a lease forged with the wrong fence is refused', async () => {
      const { store, lease } = await held();
      await assert.rejects(
        store.write(at(0x100n), null, { ...lease, fence: lease.fence + 1 }),
        isKind('lease-lost'),
      );
      assert.equal(await store.read(), null);
    });

    it('renew extends it; release frees it (no takeover then) and keeps the measured speed', async () => {
      const { store, lease } = await held('run-1', 0);
      const renewed = await store.renew(lease, MINUTE, 30_000);
      assert.equal(renewed.expiresAtMs, 30_000 + MINUTE);
      assert.equal(renewed.fence, lease.fence);
      assert.equal((await store.acquire('run-2', MINUTE, MINUTE + 1)).acquired, false);
      const speed = { uploadBytesPerMs: 1234.5, requestLatencyMs: 321, commitLatencyMs: 45 };
      await store.release(renewed, speed);
      const next = await acquired(store, 'run-2', MINUTE + 1);
      assert.equal(next.takenOver, undefined, 'a released lease is not a takeover');
      assert.deepEqual(next.speed, speed);
    });

    it('a release that keeps the owner until an expiry makes the next acquisition a takeover', async () => {
      const { store, lease } = await held('run-1', 0);
      await store.recordIntent(lease, ['data/cut.jsonl.gz']);
      await store.release(lease, { uploadBytesPerMs: 7, requestLatencyMs: 8, commitLatencyMs: 9 }, 1_000);
      assert.equal(
        (await store.acquire('run-2', MINUTE, 999)).acquired,
        false,
        'held until the given expiry',
      );
      const next = await acquired(store, 'run-2', 1_001);
      assert.deepEqual(next.takenOver, { owner: 'run-1', expiresAtMs: 1_000 });
      assert.deepEqual(next.intentKeys, ['data/cut.jsonl.gz']);
      assert.deepEqual(next.speed, { uploadBytesPerMs: 7, requestLatencyMs: 8, commitLatencyMs: 9 });
    });

    it('releasing a lease no longer held is refused and leaves the new holder alone', async () => {
      const { store, lease: old } = await held('run-1', 0);
      await acquired(store, 'run-2', 2 * MINUTE);
      await assert.rejects(
        store.release(old, { uploadBytesPerMs: 1, requestLatencyMs: 1, commitLatencyMs: 1 }),
        isKind('lease-lost'),
      );
      assert.equal((await store.acquire('run-3', MINUTE, 2 * MINUTE)).acquired, false);
    });

    it('the speed written with a checkpoint is returned at the next acquisition', async () => {
      const { store, lease } = await held('run-1', 0);
      const speed = { uploadBytesPerMs: 99, requestLatencyMs: 5_000, commitLatencyMs: 700 };
      await store.write({ ...at(0x100n), speed }, null, lease);
      assert.deepEqual((await acquired(store, 'run-2', 2 * MINUTE)).speed, speed);
    });
  });

  describe(`${name}: intent`, () => {
    it('is reported at acquisition and cleared by a checkpoint write', async () => {
      const { store, lease } = await held('run-1', 0);
      await store.recordIntent(lease, ['data/a/1.jsonl.gz', 'data/b/1.jsonl.gz']);
      await store.recordIntent(lease, ['data/a/1.jsonl.gz', 'data/c/1.jsonl.gz']);
      // A crash here: the next run finds the keys of the uncommitted batch.
      const next = await acquired(store, 'run-2', 2 * MINUTE);
      assert.deepEqual([...next.intentKeys].sort(), [
        'data/a/1.jsonl.gz',
        'data/b/1.jsonl.gz',
        'data/c/1.jsonl.gz',
      ]);
      await store.recordIntent(next.lease, ['data/d/1.jsonl.gz']);
      await store.write(at(0x100n), null, next.lease);
      const after = await acquired(store, 'run-3', 4 * MINUTE);
      assert.deepEqual(after.intentKeys, []);
    });

    it('clearIntent empties it; a failed write leaves it', async () => {
      const { store, lease } = await held();
      await store.recordIntent(lease, ['k1']);
      await assert.rejects(store.write(at(0x100n), 7, lease), isKind('checkpoint-conflict'));
      let again = await acquired(store, 'run-1', 0);
      assert.deepEqual(again.intentKeys, ['k1']);
      await store.clearIntent(again.lease);
      again = await acquired(store, 'run-1', 0);
      assert.deepEqual(again.intentKeys, []);
    });

    it('an aborted signal stops an intent write before it is made', async () => {
      const { store, lease } = await held();
      const controller = new AbortController();
      controller.abort(new SlotlakeError('fenced', { kind: 'lease-lost' }));
      await assert.rejects(store.recordIntent(lease, ['k1'], controller.signal), isKind('lease-lost'));
      assert.deepEqual((await acquired(store, 'run-1', 0)).intentKeys, []);
    });
  });

  describe(`${name}: pending manifest`, () => {
    const FIRST = { key: 'manifests/1.json', stagingKey: 'staging/manifests/1.json' };
    const SECOND = { key: 'manifests/2.json', stagingKey: 'staging/manifests/2.json' };

    it('is recorded with a write and returned at acquisition, with the checkpoint it belongs to', async () => {
      const store = create();
      const first = await acquired(store, 'run-1', 0);
      assert.equal(first.pendingManifest, undefined, 'none at first');
      await store.write({ ...at(0x100n), manifest: FIRST }, null, first.lease);
      const next = await acquired(store, 'run-2', 2 * MINUTE);
      assert.deepEqual(next.pendingManifest, FIRST);
      assert.equal(next.checkpoint?.lsn, 0x100n);
    });

    it('is replaced by the next write with a manifest, removed by a write without one', async () => {
      const { store, lease } = await held();
      await store.write({ ...at(0x100n), manifest: FIRST }, null, lease);
      await store.write({ ...at(0x200n), manifest: SECOND }, 1, lease);
      const run2 = await acquired(store, 'run-2', 2 * MINUTE);
      assert.deepEqual(run2.pendingManifest, SECOND);
      await store.write(at(0x300n), 2, run2.lease);
      assert.equal((await acquired(store, 'run-4', 6 * MINUTE)).pendingManifest, undefined);
      assert.equal((await store.read())?.lsn, 0x300n);
    });

    it('a failed write leaves the stored one', async () => {
      const { store, lease } = await held('run-1', 0);
      await store.write({ ...at(0x100n), manifest: FIRST }, null, lease);
      await assert.rejects(
        store.write({ ...at(0x200n), manifest: SECOND }, 7, lease),
        isKind('checkpoint-conflict'),
      );
      await assert.rejects(store.write({ ...at(0x50n), manifest: SECOND }, 1, lease), isKind('internal'));
      const taken = await acquired(store, 'run-2', 2 * MINUTE);
      await assert.rejects(store.write({ ...at(0x200n), manifest: SECOND }, 1, lease), isKind('lease-lost'));
      assert.deepEqual(taken.pendingManifest, FIRST);
      assert.deepEqual((await acquired(store, 'run-3', 4 * MINUTE)).pendingManifest, FIRST);
    });

    it('clearPendingManifest forgets it only while it is the stored one, and only under the lease', async () => {
      const { store, lease } = await held();
      await store.write({ ...at(0x100n), manifest: FIRST }, null, lease);
      await store.write({ ...at(0x200n), manifest: SECOND }, 1, lease);
      await store.clearPendingManifest(lease, FIRST.key); // an older one: nothing changes
      const run2 = await acquired(store, 'run-2', 2 * MINUTE);
      assert.deepEqual(run2.pendingManifest, SECOND);
      await assert.rejects(store.clearPendingManifest(lease, SECOND.key), isKind('lease-lost'));
      await store.clearPendingManifest(run2.lease, SECOND.key);
      const run3 = await acquired(store, 'run-3', 4 * MINUTE);
      assert.equal(run3.pendingManifest, undefined);
      assert.equal(run3.checkpoint?.lsn, 0x200n, 'the checkpoint is untouched');
      await store.clearPendingManifest(run3.lease, SECOND.key); // none stored: nothing to do
    });

    it('is not touched by intents or by clearing them', async () => {
      const { store, lease } = await held();
      await store.write({ ...at(0x100n), manifest: FIRST }, null, lease);
      await store.recordIntent(lease, ['data/a/2.jsonl.gz']);
      await store.clearIntent(lease);
      assert.deepEqual((await acquired(store, 'run-2', 2 * MINUTE)).pendingManifest, FIRST);
    });
  });
}

describe('ensureCheckpointTable', () => {
  it('setups racing to create the table all succeed, one of them creating it', async () => {
    const table = 'checkpoint-raced';
    const results = await Promise.all([1, 2, 3, 4].map(() => ensureCheckpointTable(client, table)));
    assert.deepEqual(
      results.filter((result) => result === 'created'),
      ['created'],
    );
    assert.equal(await ensureCheckpointTable(client, table), 'exists');
  });
});
