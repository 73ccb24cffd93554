/**
 * Recovery: what a run repairs before it streams, from the state the previous run left in the checkpoint item.
 *
 * - **An intent** names the objects of a batch that never committed (its checkpoint write never took effect,
 *   which is exactly when the intent survives). They are deleted, then the intent is cleared; the changes they
 *   held are re-read from the slot. When this run took the lease over from a run that did not release it (it
 *   crashed, hung, or was partitioned), that run may still have had an upload in flight: it stops writing at
 *   its own fence (its expiry minus a margin, on its own clock), so recovery first waits until the old expiry
 *   plus a grace for clock skew and bytes already on the wire — a late upload can then no longer land after
 *   the deletion (docs/exactly-once.md, "Fenced uploads").
 * - **A pending manifest** belongs to a committed batch whose manifest may not have reached `manifests/`: it is
 *   copied from staging again (idempotent), then forgotten in the checkpoint item — otherwise every later run
 *   would copy it again until the next checkpoint, which against a slow store can take a run's whole budget,
 *   run after run.
 * Deleting a key that does not exist is a no-op, so a crash during recovery is repaired by the next recovery.
 */
import type { Acquisition } from '../checkpoint/store.js';
import type { Logger } from '../log.js';
import type { ObjectStore } from '../sink/object-store.js';
import type { Clock, Deadline } from '../support/deadline.js';
import { killPoint } from '../support/kill-points.js';
import { withRetry } from '../support/retry.js';
import { publishManifest } from './commit.js';
import type { LeaseKeeper } from './lease.js';

/**
 * Waited after a taken-over lease's expiry before deleting what its holder may have been uploading: covers
 * clock skew between hosts (NTP keeps EC2/Lambda within milliseconds; 5 s is generous) and bytes already in
 * the old host's socket buffers when it stopped.
 */
export const TAKEOVER_GRACE_MS = 5_000;

export interface RecoveryContext {
  readonly objects: ObjectStore;
  readonly lease: LeaseKeeper;
  readonly deadline: Deadline;
  readonly signal: AbortSignal;
  readonly logger: Logger;
  readonly clock: Clock;
  /** Waited after a taken-over lease's expiry (default TAKEOVER_GRACE_MS; tests shorten it). */
  readonly takeoverGraceMs?: number;
}

export interface RecoveryResult {
  /** Objects of an uncommitted batch deleted. */
  readonly deletedObjects: number;
  /** False when the run had no time left to wait out a taken-over lease: nothing was deleted. */
  readonly completed: boolean;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason as Error);
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** Deletes `keys` (objects of a batch that never committed) and clears the intent. */
export async function deleteUncommitted(
  keys: readonly string[],
  context: RecoveryContext,
  clearIntent: () => Promise<void>,
): Promise<number> {
  const { objects, deadline, signal } = context;
  let deleted = 0;
  for (const key of keys) {
    context.lease.assertHeld();
    await withRetry(() => objects.deleteKey(key, signal), {
      what: `deleting ${key}`,
      origin: 'object-store',
      deadline,
      signal,
    });
    deleted++;
    if (deleted === 1) killPoint('mid-recovery');
  }
  await withRetry(clearIntent, { what: 'clearing the intent', origin: 'checkpoint-store', deadline, signal });
  return deleted;
}

/** The checkpoint-item writes recovery makes under the lease. */
export interface RecoveryWrites {
  readonly clearIntent: () => Promise<void>;
  readonly clearPendingManifest: (key: string) => Promise<void>;
}

/**
 * How long recovery will wait, from `nowMs`, before deleting what the run it took the lease over from may
 * still have been uploading (0: no wait — nothing to delete, a released lease, or already long expired).
 */
export function recoveryWaitMs(
  acquisition: Extract<Acquisition, { acquired: true }>,
  nowMs: number,
  graceMs: number = TAKEOVER_GRACE_MS,
): number {
  if (acquisition.intentKeys.length === 0 || !acquisition.takenOver) return 0;
  return Math.max(0, acquisition.takenOver.expiresAtMs + graceMs - nowMs);
}

export async function recover(
  acquisition: Extract<Acquisition, { acquired: true }>,
  context: RecoveryContext,
  writes: RecoveryWrites,
): Promise<RecoveryResult> {
  const { logger, clock, deadline, signal } = context;
  let deletedObjects = 0;
  if (acquisition.intentKeys.length > 0) {
    if (acquisition.takenOver) {
      const waitMs = recoveryWaitMs(acquisition, clock.nowMs(), context.takeoverGraceMs);
      if (waitMs > 0) {
        if (deadline.usableMs() <= waitMs) {
          logger.warn('an earlier run may still be uploading and this run has no time to wait it out', {
            waitMs: Math.round(waitMs),
          });
          return { deletedObjects: 0, completed: false };
        }
        logger.info('waiting until the previous holder of the lease can no longer be uploading', {
          previousOwner: acquisition.takenOver.owner,
          waitMs: Math.round(waitMs),
        });
        await sleep(waitMs, signal);
      }
    }
    logger.warn('an earlier run stopped before committing a batch; removing its objects', {
      objects: acquisition.intentKeys.length,
    });
    deletedObjects = await deleteUncommitted(acquisition.intentKeys, context, writes.clearIntent);
  }
  const pending = acquisition.pendingManifest;
  if (pending) {
    context.lease.assertHeld();
    if (await publishManifest(context.objects, pending, { deadline, signal, logger }))
      await withRetry(() => writes.clearPendingManifest(pending.key), {
        what: 'clearing the published pending manifest',
        origin: 'checkpoint-store',
        deadline,
        signal,
      });
  }
  return { deletedObjects, completed: true };
}
