/** An in-memory CheckpointStore with the same conditional semantics, for fast tests of the run loop. */
import { SlotlakeError } from '../errors.js';
import type { Checkpoint, CheckpointStore, CheckpointUpdate } from './store.js';

export class MemoryCheckpointStore implements CheckpointStore {
  current: Checkpoint | null = null;
  writes = 0;

  async read(): Promise<Checkpoint | null> {
    return this.current;
  }

  async write(update: CheckpointUpdate, expectedVersion: number | null): Promise<Checkpoint> {
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
    this.writes++;
    return this.current;
  }
}
