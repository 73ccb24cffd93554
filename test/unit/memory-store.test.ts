/**
 * MemoryCheckpointStore: the semantics every CheckpointStore must have (src/checkpoint/store.ts).
 * Checkpoint writes succeed only from the expected version and with the current lease, never move
 * backwards, clear the intent and store the batch's pending manifest (or remove it); the lease is exclusive
 * until it expires, and each acquisition fences out the holders before it.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MemoryCheckpointStore } from '../../src/checkpoint/memory.js';
import type { CheckpointUpdate, Lease } from '../../src/checkpoint/store.js';
import { SlotlakeError } from '../../src/errors.js';
import { lsn } from '../../src/lsn.js';

const MINUTE = 60_000;

function isKind(kind: string) {
  return (error: unknown) => {
    assert.ok(error instanceof SlotlakeError, String(error));
    assert.equal(error.kind, kind);
    assert.equal(error.retryable, false);
    return true;
  };
}

function at(value: bigint, partial?: { commitLsn: bigint; nextSeq: number }): CheckpointUpdate {
  return {
    lsn: lsn(value),
    partial: partial ? { commitLsn: lsn(partial.commitLsn), nextSeq: partial.nextSeq } : undefined,
  };
}

/** A store and a lease held on it by `owner`. */
async function held(owner = 'run-1', nowMs = 0): Promise<{ store: MemoryCheckpointStore; lease: Lease }> {
  const store = new MemoryCheckpointStore();
  const acquisition = await store.acquire(owner, MINUTE, nowMs);
  assert.ok(acquisition.acquired);
  return { store, lease: acquisition.lease };
}

describe('MemoryCheckpointStore: checkpoint', () => {
  it('starts empty', async () => {
    const store = new MemoryCheckpointStore();
    assert.equal(await store.read(), null);
    assert.equal(store.writes, 0);
  });

  it('the first write expects no checkpoint; each write bumps the version', async () => {
    const { store, lease } = await held();
    const first = await store.write(at(0x100n), null, lease);
    assert.equal(first.version, 1);
    assert.equal(first.lsn, 0x100n);
    assert.equal(first.partial, undefined);
    assert.ok(!Number.isNaN(Date.parse(first.updatedAt)));
    assert.deepEqual(await store.read(), first);
    const second = await store.write(
      { ...at(0x200n, { commitLsn: 0x300n, nextSeq: 5 }), note: { runId: 'r' } },
      1,
      lease,
    );
    assert.equal(second.version, 2);
    assert.deepEqual(second.partial, { commitLsn: 0x300n, nextSeq: 5 });
    assert.deepEqual(await store.read(), second);
    assert.equal(store.writes, 2);
  });

  it('a write from another version is a checkpoint conflict and changes nothing', async () => {
    const { store, lease } = await held();
    await assert.rejects(store.write(at(0x100n), 1, lease), isKind('checkpoint-conflict'));
    assert.equal(await store.read(), null);
    const stored = await store.write(at(0x100n), null, lease);
    await assert.rejects(store.write(at(0x200n), null, lease), isKind('checkpoint-conflict'));
    await assert.rejects(store.write(at(0x200n), 0, lease), isKind('checkpoint-conflict'));
    await assert.rejects(store.write(at(0x200n), 2, lease), isKind('checkpoint-conflict'));
    assert.deepEqual(await store.read(), stored);
    assert.equal(store.writes, 1);
  });

  it('two writes from the same version: exactly one wins', async () => {
    const { store, lease } = await held();
    await store.write(at(0x100n), null, lease);
    const results = await Promise.allSettled([
      store.write(at(0x200n), 1, lease),
      store.write(at(0x300n), 1, lease),
    ]);
    assert.deepEqual(
      results.map((r) => r.status),
      ['fulfilled', 'rejected'],
    );
    assert.equal((await store.read())?.lsn, 0x200n);
    assert.equal((await store.read())?.version, 2);
  });

  it('never moves backwards, even from the right version', async () => {
    const { store, lease } = await held();
    const stored = await store.write(at(0x200n), null, lease);
    await assert.rejects(store.write(at(0x1ffn), 1, lease), isKind('internal'));
    assert.deepEqual(await store.read(), stored);
    assert.equal(store.writes, 1);
  });

  it('the same LSN may be written again (progress inside a cut transaction)', async () => {
    const { store, lease } = await held();
    await store.write(at(0x200n, { commitLsn: 0x300n, nextSeq: 2 }), null, lease);
    const next = await store.write(at(0x200n, { commitLsn: 0x300n, nextSeq: 9 }), 1, lease);
    assert.equal(next.version, 2);
    assert.deepEqual(next.partial, { commitLsn: 0x300n, nextSeq: 9 });
  });

  it('compares LSNs unsigned above 2^63', async () => {
    const { store, lease } = await held();
    await store.write(at(1n << 63n), null, lease);
    await assert.rejects(store.write(at((1n << 63n) - 1n), 1, lease), isKind('internal'));
    assert.equal((await store.write(at((1n << 64n) - 1n), 1, lease)).version, 2);
  });
});

describe('MemoryCheckpointStore: lease', () => {
  it('is exclusive until it expires', async () => {
    const { store, lease } = await held('run-1', 1_000);
    assert.equal(lease.owner, 'run-1');
    assert.equal(lease.expiresAtMs, 1_000 + MINUTE);
    const refused = await store.acquire('run-2', MINUTE, 1_000 + MINUTE);
    assert.deepEqual(refused, { acquired: false, holder: 'run-1', expiresAtMs: 1_000 + MINUTE });
    const taken = await store.acquire('run-2', MINUTE, 1_001 + MINUTE);
    assert.ok(taken.acquired);
    assert.equal(taken.lease.owner, 'run-2');
    assert.ok(taken.lease.fence > lease.fence);
  });

  it('a run that lost the lease can write nothing', async () => {
    const { store, lease: old } = await held('run-1', 0);
    await store.write(at(0x100n), null, old);
    const taken = await store.acquire('run-2', MINUTE, 2 * MINUTE);
    assert.ok(taken.acquired);
    assert.equal(taken.checkpoint?.lsn, 0x100n);
    await assert.rejects(store.write(at(0x200n), 1, old), isKind('lease-lost'));
    await assert.rejects(store.renew(old, MINUTE, 2 * MINUTE), isKind('lease-lost'));
    await assert.rejects(store.recordIntent(old, ['k']), isKind('lease-lost'));
    await assert.rejects(store.clearIntent(old), isKind('lease-lost'));
    assert.equal((await store.read())?.lsn, 0x100n);
    assert.equal(store.writes, 1);
    // The new holder writes on from the version it read.
    assert.equal((await store.write(at(0x200n), 1, taken.lease)).version, 2);
  });

  it('re-acquiring by the same owner fences out its own older lease', async () => {
    const { store, lease: first } = await held('run-1');
    const again = await store.acquire('run-1', MINUTE, 10);
    assert.ok(again.acquired);
    assert.ok(again.lease.fence > first.fence);
    await assert.rejects(store.write(at(0x100n), null, first), isKind('lease-lost'));
    assert.equal((await store.write(at(0x100n), null, again.lease)).version, 1);
  });

  it('a lease forged with the wrong fence is refused', async () => {
    const { store, lease } = await held();
    await assert.rejects(
      store.write(at(0x100n), null, { ...lease, fence: lease.fence + 1 }),
      isKind('lease-lost'),
    );
    assert.equal(await store.read(), null);
  });

  it('renew extends it; release frees it for others', async () => {
    const { store, lease } = await held('run-1', 0);
    const renewed = await store.renew(lease, MINUTE, 30_000);
    assert.equal(renewed.expiresAtMs, 30_000 + MINUTE);
    assert.equal(renewed.fence, lease.fence);
    assert.equal((await store.acquire('run-2', MINUTE, MINUTE + 1)).acquired, false);
    await store.release(renewed);
    assert.equal((await store.acquire('run-2', MINUTE, MINUTE + 1)).acquired, true);
  });

  it('releasing a lease no longer held leaves the new holder alone', async () => {
    const { store, lease: old } = await held('run-1', 0);
    const taken = await store.acquire('run-2', MINUTE, 2 * MINUTE);
    assert.ok(taken.acquired);
    await store.release(old);
    assert.equal((await store.acquire('run-3', MINUTE, 2 * MINUTE)).acquired, false);
  });
});

describe('MemoryCheckpointStore: intent', () => {
  it('is reported at acquisition and cleared by a checkpoint write', async () => {
    const { store, lease } = await held('run-1', 0);
    await store.recordIntent(lease, ['data/a/1.jsonl.gz', 'data/b/1.jsonl.gz']);
    await store.recordIntent(lease, ['data/a/1.jsonl.gz', 'data/c/1.jsonl.gz']);
    // A crash here: the next run finds the keys of the uncommitted batch.
    const next = await store.acquire('run-2', MINUTE, 2 * MINUTE);
    assert.ok(next.acquired);
    assert.deepEqual([...next.intentKeys].sort(), [
      'data/a/1.jsonl.gz',
      'data/b/1.jsonl.gz',
      'data/c/1.jsonl.gz',
    ]);
    await store.recordIntent(next.lease, ['data/d/1.jsonl.gz']);
    await store.write(at(0x100n), null, next.lease);
    const after = await store.acquire('run-3', MINUTE, 4 * MINUTE);
    assert.ok(after.acquired);
    assert.deepEqual(after.intentKeys, []);
  });

  it('clearIntent empties it; a failed write leaves it', async () => {
    const { store, lease } = await held();
    await store.recordIntent(lease, ['k1']);
    await assert.rejects(store.write(at(0x100n), 7, lease), isKind('checkpoint-conflict'));
    let again = await store.acquire('run-1', MINUTE, 0);
    assert.ok(again.acquired);
    assert.deepEqual(again.intentKeys, ['k1']);
    await store.clearIntent(again.lease);
    again = await store.acquire('run-1', MINUTE, 0);
    assert.ok(again.acquired);
    assert.deepEqual(again.intentKeys, []);
  });
});

describe('MemoryCheckpointStore: pending manifest', () => {
  const FIRST = { key: 'manifests/1.json', body: '{"batch":1}\n' };
  const SECOND = { key: 'manifests/2.json', body: '{"batch":2}\n' };

  async function pendingAtAcquisition(store: MemoryCheckpointStore, owner: string, nowMs: number) {
    const acquisition = await store.acquire(owner, MINUTE, nowMs);
    assert.ok(acquisition.acquired);
    return acquisition;
  }

  it('is stored with a write and returned at acquisition, with the checkpoint it belongs to', async () => {
    const store = new MemoryCheckpointStore();
    const first = await pendingAtAcquisition(store, 'run-1', 0);
    assert.equal(first.pendingManifest, undefined, 'none at first');
    await store.write({ ...at(0x100n), manifest: FIRST }, null, first.lease);
    assert.deepEqual(store.pendingManifest, FIRST);
    // A crash before the manifest reached S3: the next run finds it.
    const next = await pendingAtAcquisition(store, 'run-2', 2 * MINUTE);
    assert.deepEqual(next.pendingManifest, FIRST);
    assert.equal(next.checkpoint?.lsn, 0x100n);
  });

  it('is replaced by the next write with a manifest, removed by a write without one', async () => {
    const { store, lease } = await held();
    await store.write({ ...at(0x100n), manifest: FIRST }, null, lease);
    await store.write({ ...at(0x200n), manifest: SECOND }, 1, lease);
    assert.deepEqual(store.pendingManifest, SECOND);
    assert.deepEqual((await pendingAtAcquisition(store, 'run-2', 2 * MINUTE)).pendingManifest, SECOND);
    const run3 = await pendingAtAcquisition(store, 'run-3', 4 * MINUTE);
    await store.write(at(0x300n), 2, run3.lease);
    assert.equal(store.pendingManifest, undefined);
    assert.equal((await pendingAtAcquisition(store, 'run-4', 6 * MINUTE)).pendingManifest, undefined);
    assert.equal((await store.read())?.lsn, 0x300n);
  });

  it('a failed write leaves the stored one', async () => {
    const { store, lease } = await held('run-1', 0);
    await store.write({ ...at(0x100n), manifest: FIRST }, null, lease);
    await assert.rejects(
      store.write({ ...at(0x200n), manifest: SECOND }, 7, lease),
      isKind('checkpoint-conflict'),
    );
    await assert.rejects(store.write(at(0x200n), 7, lease), isKind('checkpoint-conflict'));
    await assert.rejects(store.write({ ...at(0x50n), manifest: SECOND }, 1, lease), isKind('internal'));
    assert.deepEqual(store.pendingManifest, FIRST);
    const taken = await pendingAtAcquisition(store, 'run-2', 2 * MINUTE);
    await assert.rejects(store.write({ ...at(0x200n), manifest: SECOND }, 1, lease), isKind('lease-lost'));
    await assert.rejects(store.write(at(0x200n), 1, lease), isKind('lease-lost'));
    assert.deepEqual(taken.pendingManifest, FIRST);
    assert.deepEqual((await pendingAtAcquisition(store, 'run-3', 4 * MINUTE)).pendingManifest, FIRST);
  });

  it('is not touched by intents or by clearing them', async () => {
    const { store, lease } = await held();
    await store.write({ ...at(0x100n), manifest: FIRST }, null, lease);
    await store.recordIntent(lease, ['data/a/2.jsonl.gz']);
    await store.clearIntent(lease);
    assert.deepEqual(store.pendingManifest, FIRST);
  });
});
