/**
 * Time: one clock and one deadline per run.
 *
 * A run has a hard end — Lambda's `getRemainingTimeInMillis()` or the CLI's `--max-duration` — and must
 * stop reading early enough to make everything it read durable (upload, manifest, checkpoint, ack)
 * before then. `Deadline` holds that end, minus a safety margin, and answers the one question the run
 * loop asks: "given that flushing now would take `flushEstimateMs`, must I stop reading?". It also
 * exposes an AbortSignal that fires at the *cutoff* — the hard end minus the exit reserve (half the safety
 * margin) — when every call still in flight (an upload, a checkpoint write) is abandoned so that the run
 * can still give its lease up, print its summary and exit before the hard end. A flush cut there leaves
 * its intent for the next run's recovery: nothing is lost, the run reports `flush-timeout`.
 */
import { SlotlakeError } from '../errors.js';

export interface Clock {
  /** Milliseconds since the Unix epoch, monotonic within a process. */
  nowMs(): number;
}

/** Wall-clock aligned but monotonic: `performance.timeOrigin + performance.now()`. */
export const systemClock: Clock = {
  nowMs: () => performance.timeOrigin + performance.now(),
};

export class Deadline {
  private readonly controller = new AbortController();
  private readonly timer: NodeJS.Timeout | undefined;

  /**
   * @param endsAtMs the hard end of the run (clock time)
   * @param safetyMarginMs reserved at the end for variance (network, GC) on top of the flush estimate
   */
  constructor(
    readonly endsAtMs: number,
    readonly safetyMarginMs: number,
    private readonly clock: Clock = systemClock,
  ) {
    const untilCutoff = this.cutoffAtMs - clock.nowMs();
    if (Number.isFinite(untilCutoff)) {
      this.timer = setTimeout(
        () =>
          this.controller.abort(
            new SlotlakeError('the run reached its deadline before its final flush completed', {
              kind: 'flush-timeout',
              hint: 'the next run removes what this batch wrote and archives it again; if this repeats, give runs more time or raise SLOTLAKE_SAFETY_MARGIN',
            }),
          ),
        Math.max(0, untilCutoff),
      );
      this.timer.unref();
    }
  }

  /** Time kept after the cutoff to release the lease, publish metrics and exit. */
  get exitReserveMs(): number {
    return this.safetyMarginMs / 2;
  }

  /** When calls still in flight are abandoned (clock time). */
  get cutoffAtMs(): number {
    return this.endsAtMs - this.exitReserveMs;
  }

  /** A deadline that never ends (runs stopped by signal or caught-up). */
  static unbounded(clock: Clock = systemClock): Deadline {
    return new Deadline(Number.POSITIVE_INFINITY, 0, clock);
  }

  /** Milliseconds until the hard end. */
  remainingMs(): number {
    return this.endsAtMs - this.clock.nowMs();
  }

  /** Milliseconds usable before the safety margin begins. */
  usableMs(): number {
    return this.remainingMs() - this.safetyMarginMs;
  }

  /** True when reading must stop so a flush taking `flushEstimateMs` still ends before the margin. */
  mustStopReading(flushEstimateMs: number): boolean {
    return this.usableMs() <= flushEstimateMs;
  }

  get isBounded(): boolean {
    return Number.isFinite(this.endsAtMs);
  }

  /** Milliseconds past the hard end (0 while before it). */
  overrunMs(): number {
    return Math.max(0, -this.remainingMs());
  }

  /** Fires at the cutoff, with a `flush-timeout` SlotlakeError as its reason. */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  dispose(): void {
    if (this.timer) clearTimeout(this.timer);
  }
}
