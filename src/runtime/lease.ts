/**
 * Keeping the pipeline lease while a run works, and fencing the run when it may have lost it.
 *
 * The lease (checkpoint/store.ts) is renewed by a timer every third of its duration, independent of what
 * the run loop is doing (reading, uploading, waiting). Every conditional write to the checkpoint item is
 * fenced by the store itself; S3 writes are not, so the keeper fences them on this process's own clock:
 * from `expiresAtMs - fenceMarginMs` on, unless a renewal moved the expiry, the lease *may* have run out
 * (another run may take it once it has), and the keeper
 *   - aborts its `signal` — every upload, intent write and checkpoint write in flight is cancelled,
 *   - refuses new uploads and acknowledgements (`assertHeld()` throws `lease-lost`),
 *   - has the object store refuse every byte still to be sent (`writeRefusal()`, checked at each socket
 *     write — a process frozen between a check and its send resumes with this timer overdue and must not
 *     send; sink/write-fence.ts).
 * A renewal that is refused (another run took over) does the same at once. A renewal that hangs simply
 * never moves the expiry, so the fence still comes in time. The run that takes over waits for the old
 * expiry plus a grace before deleting anything the old run may have been writing (runtime/recovery.ts);
 * docs/exactly-once.md explains why that closes the race with a late upload.
 */
import type { CheckpointStore, Lease } from '../checkpoint/store.js';
import { SlotlakeError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Clock } from '../support/deadline.js';
import { RENEWAL_RETRY, withRetry } from '../support/retry.js';

/**
 * How long before the stored expiry a run stops writing: it covers clock skew between this host and the
 * next run's, and one request already on the wire. A sixth of the lease, at least one second — with the
 * default 60 s lease and renewals every 20 s, a run survives one failed renewal without being fenced.
 */
export function fenceMarginMs(leaseDurationMs: number): number {
  return Math.max(1_000, Math.floor(leaseDurationMs / 6));
}

/** Renewals every third of the lease: two can fail before the fence. */
const RENEWALS_PER_LEASE = 3;

export class LeaseKeeper {
  private renewTimer: NodeJS.Timeout | undefined;
  private fenceTimer: NodeJS.Timeout | undefined;
  private renewing: Promise<void> | undefined;
  private lostError: SlotlakeError | undefined;
  private readonly controller = new AbortController();
  private released = false;
  readonly fenceMarginMs: number;
  renewals = 0;

  constructor(
    private current: Lease,
    private readonly store: CheckpointStore,
    private readonly durationMs: number,
    private readonly clock: Clock,
    private readonly logger: Logger,
    private readonly onLost: (error: SlotlakeError) => void = () => undefined,
  ) {
    this.fenceMarginMs = fenceMarginMs(durationMs);
  }

  get lease(): Lease {
    return this.current;
  }

  /** When this run stops writing unless a renewal moves the expiry (clock time). */
  get fenceAtMs(): number {
    return this.current.expiresAtMs - this.fenceMarginMs;
  }

  /** Aborted (reason: a `lease-lost` SlotlakeError) once the lease is lost or may have expired. */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** True while the lease is surely ours. */
  get held(): boolean {
    return this.lostError === undefined && this.clock.nowMs() < this.fenceAtMs;
  }

  start(): void {
    this.renewTimer = setInterval(
      () => void this.renew(),
      Math.max(100, Math.floor(this.durationMs / RENEWALS_PER_LEASE)),
    );
    this.renewTimer.unref();
    this.armFence();
  }

  /** Throws `lease-lost` unless the lease is surely ours (checked on this process's clock too). */
  assertHeld(): void {
    if (this.lostError === undefined && this.clock.nowMs() >= this.fenceAtMs)
      this.lose(this.mayHaveExpired());
    if (this.lostError) throw this.lostError;
  }

  /**
   * Why this run must not write now — the lease is lost, given up, or past its fence on this process's clock —
   * or undefined while it may. No side effects and no throw: the object store's write fence asks it at every
   * socket write (sink/write-fence.ts); the fence timer and `assertHeld` report the loss.
   */
  writeRefusal(): SlotlakeError | undefined {
    if (this.lostError) return this.lostError;
    if (this.released)
      return new SlotlakeError('this run gave the pipeline lease up', {
        kind: 'lease-lost',
        origin: 'checkpoint-store',
      });
    if (this.clock.nowMs() >= this.fenceAtMs) return this.mayHaveExpired();
    return undefined;
  }

  private mayHaveExpired(): SlotlakeError {
    return new SlotlakeError(
      `the pipeline lease may have expired (no renewal since it was due to run out at ${new Date(this.current.expiresAtMs).toISOString()})`,
      {
        kind: 'lease-lost',
        origin: 'checkpoint-store',
        hint: 'DynamoDB could not renew the lease in time; this run stopped writing and acknowledged nothing more, the next run resumes',
      },
    );
  }

  private armFence(): void {
    if (this.fenceTimer) clearTimeout(this.fenceTimer);
    if (this.lostError) return;
    this.fenceTimer = setTimeout(
      () => {
        try {
          this.assertHeld();
        } catch {
          // lose() already reported it
        }
        if (!this.lostError) this.armFence();
      },
      Math.max(0, this.fenceAtMs - this.clock.nowMs()),
    );
    this.fenceTimer.unref();
  }

  private lose(error: SlotlakeError): void {
    if (this.lostError) return;
    this.lostError = error;
    if (this.renewTimer) clearInterval(this.renewTimer);
    if (this.fenceTimer) clearTimeout(this.fenceTimer);
    this.logger.error('lease lost: this run stops writing', {
      kind: error.kind,
      fence: this.current.fence,
      expiresAt: new Date(this.current.expiresAtMs).toISOString(),
    });
    this.controller.abort(error);
    this.onLost(error);
  }

  /** One renewal (the timer calls it; exposed for tests). */
  async renew(): Promise<void> {
    if (this.renewing || this.lostError || this.released) return;
    this.renewing = (async () => {
      try {
        this.current = await withRetry(
          () => this.store.renew(this.current, this.durationMs, this.clock.nowMs(), this.controller.signal),
          {
            what: 'renewing the lease',
            origin: 'checkpoint-store',
            policy: RENEWAL_RETRY,
            signal: this.controller.signal,
          },
        );
        this.renewals++;
        this.armFence();
      } catch (error) {
        if (this.controller.signal.aborted) return; // fenced meanwhile
        this.lose(
          error instanceof SlotlakeError && error.kind === 'lease-lost'
            ? error
            : new SlotlakeError(`the pipeline lease could not be renewed: ${(error as Error).message}`, {
                kind: 'lease-lost',
                origin: 'checkpoint-store',
                hint: 'DynamoDB was unreachable; this run stopped writing and acknowledged nothing more, the next run resumes',
                cause: error,
              }),
        );
      } finally {
        this.renewing = undefined;
      }
    })();
    await this.renewing;
  }

  /**
   * Stops renewing and gives the lease up (best effort) through `release`, unless it was lost. A renewal in
   * flight may still move the expiry, so it is awaited — but only until the fence, which stays armed
   * meanwhile: a renewal that hangs ends the wait there, the lease counts as lost and is not released (the
   * next run waits its expiry out).
   */
  async release(release: (lease: Lease) => Promise<void>): Promise<void> {
    this.released = true;
    if (this.renewTimer) clearInterval(this.renewTimer);
    if (this.renewing && !this.lostError) {
      const fenced = new Promise<void>((resolve) =>
        this.controller.signal.addEventListener('abort', () => resolve(), { once: true }),
      );
      await Promise.race([this.renewing.catch(() => undefined), fenced]);
    }
    if (this.fenceTimer) clearTimeout(this.fenceTimer);
    if (this.lostError) return;
    await release(this.current).catch(() => undefined);
  }
}
