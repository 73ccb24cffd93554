/** An in-memory CheckpointStore with the same conditional semantics as DynamoDB's, for fast tests. */
import { SlotlakeError } from '../errors.js';
import {
  leaseLostError,
  type Acquisition,
  type Checkpoint,
  type CheckpointStore,
  type CheckpointUpdate,
  type Lease,
  type PendingManifest,
} from './store.js';

export class MemoryCheckpointStore implements CheckpointStore {
  current: Checkpoint | null = null;
  lease: Lease | undefined;
  fence = 0;
  intent = new Set<string>();
  pendingManifest: PendingManifest | undefined;
  writes = 0;

  async read(): Promise<Checkpoint | null> {
    return this.current;
  }

  async acquire(owner: string, durationMs: number, nowMs: number): Promise<Acquisition> {
    if (this.lease && this.lease.owner !== owner && this.lease.expiresAtMs >= nowMs) {
      return { acquired: false, holder: this.lease.owner, expiresAtMs: this.lease.expiresAtMs };
    }
    this.fence++;
    this.lease = { owner, fence: this.fence, expiresAtMs: nowMs + durationMs };
    return {
      acquired: true,
      lease: this.lease,
      checkpoint: this.current,
      intentKeys: [...this.intent],
      pendingManifest: this.pendingManifest,
    };
  }

  private check(lease: Lease): void {
    if (!this.lease || this.lease.owner !== lease.owner || this.lease.fence !== lease.fence)
      throw leaseLostError('in memory');
  }

  async renew(lease: Lease, durationMs: number, nowMs: number): Promise<Lease> {
    this.check(lease);
    this.lease = { ...lease, expiresAtMs: nowMs + durationMs };
    return this.lease;
  }

  async release(lease: Lease): Promise<void> {
    if (this.lease?.owner === lease.owner && this.lease.fence === lease.fence) this.lease = undefined;
  }

  async recordIntent(lease: Lease, keys: readonly string[]): Promise<void> {
    this.check(lease);
    for (const key of keys) this.intent.add(key);
  }

  async clearIntent(lease: Lease): Promise<void> {
    this.check(lease);
    this.intent.clear();
  }

  async write(update: CheckpointUpdate, expectedVersion: number | null, lease: Lease): Promise<Checkpoint> {
    this.check(lease);
    const stored = this.current?.version ?? null;
    if (stored !== expectedVersion) {
      throw new SlotlakeError(`checkpoint version is ${stored}, expected ${expectedVersion}`, {
        kind: 'checkpoint-conflict',
      });
    }
    if (this.current && update.lsn < this.current.lsn) {
      throw new SlotlakeError('refusing to move the checkpoint backwards', { kind: 'internal' });
    }
    this.current = {
      lsn: update.lsn,
      partial: update.partial,
      version: (expectedVersion ?? 0) + 1,
      updatedAt: new Date().toISOString(),
    };
    this.intent.clear();
    this.pendingManifest = update.manifest;
    this.writes++;
    return this.current;
  }
}
