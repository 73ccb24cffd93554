/**
 * Keeping the pipeline lease while a run works.
 *
 * The lease (checkpoint/store.ts) is renewed by a timer every third of its duration, independent of what
 * the run loop is doing (reading, uploading, waiting). If a renewal is refused — another run took the lease
 * after it expired — or cannot be made before the lease would expire, the keeper marks it lost and calls
 * `onLost`; the run then stops at once and acknowledges nothing more. Renewals go through `withRetry`.
 */
import type { CheckpointStore, Lease } from '../checkpoint/store.js';
import { SlotlakeError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Clock } from '../support/deadline.js';
import { withRetry } from '../support/retry.js';

export class LeaseKeeper {
  private timer: NodeJS.Timeout | undefined;
  private renewing: Promise<void> | undefined;
  private lostError: SlotlakeError | undefined;

  constructor(
    private current: Lease,
    private readonly store: CheckpointStore,
    private readonly durationMs: number,
    private readonly clock: Clock,
    private readonly logger: Logger,
    private readonly onLost: (error: SlotlakeError) => void,
  ) {}

  get lease(): Lease {
    return this.current;
  }

  start(): void {
    this.timer = setInterval(() => void this.renew(), Math.max(250, Math.floor(this.durationMs / 3)));
    this.timer.unref();
  }

  /** Throws when the lease was lost. */
  check(): void {
    if (this.lostError) throw this.lostError;
  }

  private async renew(): Promise<void> {
    if (this.renewing || this.lostError) return;
    this.renewing = (async () => {
      try {
        const expiresAtMs = this.current.expiresAtMs;
        this.current = await withRetry(
          () => this.store.renew(this.current, this.durationMs, this.clock.nowMs()),
          { what: 'renewing the lease', origin: 'checkpoint-store', maxAttempts: 4, baseDelayMs: 100 },
        );
        if (this.clock.nowMs() > expiresAtMs) throw new Error('the lease expired before it could be renewed');
      } catch (error) {
        this.lostError =
          error instanceof SlotlakeError && error.kind === 'lease-lost'
            ? error
            : new SlotlakeError(`the pipeline lease could not be kept: ${(error as Error).message}`, {
                kind: 'lease-lost',
                hint: 'DynamoDB was unreachable for longer than the lease; this run stopped without acknowledging more',
                cause: error,
              });
        this.logger.error('lease lost', { kind: this.lostError.kind });
        this.onLost(this.lostError);
      } finally {
        this.renewing = undefined;
      }
    })();
    await this.renewing;
  }

  /** Stops renewing and gives the lease up (best effort). */
  async release(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.renewing?.catch(() => undefined);
    if (this.lostError) return;
    await this.store.release(this.current).catch(() => undefined);
  }
}
