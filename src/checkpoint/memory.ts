/**
 * An in-memory CheckpointStore with the same conditional semantics as the DynamoDB one (checkpoint/dynamodb.ts),
 * for fast tests of the commit sequence and the run loop. Both pass the same contract suite.
 */
import { SlotlakeError } from '../errors.js';
import {
  leaseLostError,
  type Acquisition,
  type Checkpoint,
  type CheckpointStore,
  type CheckpointUpdate,
  type Lease,
  type PendingManifest,
  type StoreSpeed,
} from './store.js';

function aborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw signal.reason;
}

export class MemoryCheckpointStore implements CheckpointStore {
  current: Checkpoint | null = null;
  lease: Lease | undefined;
  fence = 0;
  intent = new Set<string>();
  pendingManifest: PendingManifest | undefined;
  speed: StoreSpeed | undefined;
  snapshotRequests = new Set<string>();
  writes = 0;
  /** Every acquisition, in order: the store's own account of who held the lease when. */
  readonly history: Array<{ owner: string; fence: number; atMs: number }> = [];

  async read(): Promise<Checkpoint | null> {
    return this.current;
  }

  async acquire(owner: string, durationMs: number, nowMs: number): Promise<Acquisition> {
    if (this.lease && this.lease.owner !== owner && this.lease.expiresAtMs >= nowMs) {
      return {
        acquired: false,
        holder: this.lease.owner,
        expiresAtMs: this.lease.expiresAtMs,
        checkpoint: this.current,
      };
    }
    const previous = this.lease;
    this.fence++;
    this.lease = { owner, fence: this.fence, expiresAtMs: nowMs + durationMs };
    this.history.push({ owner, fence: this.fence, atMs: nowMs });
    return {
      acquired: true,
      lease: this.lease,
      checkpoint: this.current,
      intentKeys: [...this.intent],
      pendingManifest: this.pendingManifest,
      takenOver:
        previous && previous.owner !== owner
          ? { owner: previous.owner, expiresAtMs: previous.expiresAtMs }
          : undefined,
      speed: this.speed,
      snapshotRequests: [...this.snapshotRequests],
    };
  }

  async pendingSnapshotRequests(): Promise<string[]> {
    return [...this.snapshotRequests];
  }

  async requestSnapshot(tables: readonly string[]): Promise<void> {
    for (const table of tables) this.snapshotRequests.add(table);
  }

  private check(lease: Lease): void {
    if (!this.lease || this.lease.owner !== lease.owner || this.lease.fence !== lease.fence)
      throw leaseLostError('in memory');
  }

  async renew(lease: Lease, durationMs: number, nowMs: number, signal?: AbortSignal): Promise<Lease> {
    aborted(signal);
    this.check(lease);
    this.lease = { ...lease, expiresAtMs: nowMs + durationMs };
    return this.lease;
  }

  async release(lease: Lease, speed?: StoreSpeed, expireAtMs?: number): Promise<void> {
    this.check(lease);
    this.lease = expireAtMs === undefined ? undefined : { ...lease, expiresAtMs: expireAtMs };
    if (speed) this.speed = speed;
  }

  async recordIntent(lease: Lease, keys: readonly string[], signal?: AbortSignal): Promise<void> {
    aborted(signal);
    this.check(lease);
    for (const key of keys) this.intent.add(key);
  }

  async clearIntent(lease: Lease): Promise<void> {
    this.check(lease);
    this.intent.clear();
  }

  async clearPendingManifest(lease: Lease, key: string): Promise<void> {
    this.check(lease);
    if (this.pendingManifest?.key === key) this.pendingManifest = undefined;
  }

  async write(
    update: CheckpointUpdate,
    expectedVersion: number | null,
    lease: Lease,
    signal?: AbortSignal,
  ): Promise<Checkpoint> {
    aborted(signal);
    this.check(lease);
    const stored = this.current?.version ?? null;
    if (stored !== expectedVersion) {
      throw new SlotlakeError(`checkpoint version is ${stored}, expected ${expectedVersion}`, {
        kind: 'checkpoint-conflict',
        origin: 'checkpoint-store',
      });
    }
    const sameSource =
      this.current?.source?.systemId === update.source.systemId &&
      this.current?.source?.database === update.source.database;
    if (this.current && sameSource && update.lsn < this.current.lsn) {
      throw new SlotlakeError('refusing to move the checkpoint backwards', { kind: 'internal' });
    }
    this.current = {
      lsn: update.lsn,
      partial: update.partial,
      source: update.source,
      snapshot: update.snapshot ?? this.current?.snapshot,
      version: (expectedVersion ?? 0) + 1,
      updatedAt: new Date().toISOString(),
    };
    this.intent.clear();
    this.pendingManifest = update.manifest;
    for (const table of update.consumedSnapshotRequests ?? []) this.snapshotRequests.delete(table);
    if (update.speed) this.speed = update.speed;
    this.writes++;
    return this.current;
  }
}
