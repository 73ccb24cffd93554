/**
 * When a batch ends: the rotation policy, pure.
 *
 * A batch is committed at a transaction boundary once it is big or old enough (rows, uncompressed bytes,
 * age — the user's settings), so that objects are few and large and the checkpoint moves regularly. Two
 * limits are hard and may end a batch inside a transaction (the next batch continues it; the checkpoint
 * records the cut as `partial`): the number of objects and the bytes of their keys, because the batch's keys
 * are recorded in the checkpoint item's intent, which DynamoDB caps at 400 KB. Idle advance — moving the
 * checkpoint to the server's position when nothing is pending — is also decided here, at most once per
 * status interval so that an idle run costs a write every few seconds, not one per keepalive.
 */
import { MAX_INTENT_KEY_BYTES } from '../checkpoint/store.js';

/**
 * At most this many objects per batch: the manifest stays a readable size, and with keys of up to ~200
 * bytes the intent stays far below the item limit (the byte cap below covers longer keys).
 */
export const MAX_OBJECTS_PER_BATCH = 1000;

export interface BatchLimits {
  readonly maxRows: number;
  readonly maxBytes: number;
  readonly maxAgeMs: number;
}

/** What the policy needs to know of the current batch. */
export interface BatchState {
  readonly isEmpty: boolean;
  readonly rows: number;
  readonly uncompressedBytes: number;
  readonly objectCount: number;
  readonly intentKeyBytes: number;
  readonly startedAtMs: number;
}

export class BatchPolicy {
  constructor(private readonly limits: BatchLimits) {}

  /** At a transaction boundary: is the batch big or old enough to commit? */
  rotationDue(batch: BatchState, nowMs: number): boolean {
    return (
      !batch.isEmpty &&
      (batch.rows >= this.limits.maxRows ||
        batch.uncompressedBytes >= this.limits.maxBytes ||
        batch.objectCount >= MAX_OBJECTS_PER_BATCH ||
        batch.intentKeyBytes >= MAX_INTENT_KEY_BYTES / 2 ||
        nowMs - batch.startedAtMs >= this.limits.maxAgeMs)
    );
  }

  /**
   * Before a record opens a new object (with a key of up to `keyBytes`): must the batch end first, even
   * inside a transaction, to keep the intent within its bounds?
   */
  mustEndBeforeNewObject(batch: BatchState, keyBytes: number): boolean {
    return (
      !batch.isEmpty &&
      (batch.objectCount + 1 > MAX_OBJECTS_PER_BATCH ||
        batch.intentKeyBytes + keyBytes > MAX_INTENT_KEY_BYTES)
    );
  }
}

/** Idle advance, at most once per interval. */
export class IdleAdvance {
  private lastMs: number;

  constructor(
    private readonly intervalMs: number,
    nowMs: number,
  ) {
    this.lastMs = nowMs;
  }

  /**
   * True when the checkpoint should move to `position`: nothing is pending (`atRest`, empty batch), the
   * position lies past the stored checkpoint, and the last idle advance is an interval old.
   */
  due(atRest: boolean, batchEmpty: boolean, position: bigint, checkpoint: bigint, nowMs: number): boolean {
    if (!atRest || !batchEmpty || position <= checkpoint) return false;
    if (nowMs - this.lastMs < this.intervalMs) return false;
    this.lastMs = nowMs;
    return true;
  }
}
