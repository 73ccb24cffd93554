/**
 * Time: one clock and one deadline per run.
 *
 * A run has a hard end — Lambda's `getRemainingTimeInMillis()` or the CLI's `--max-duration` — and must
 * stop reading early enough to make everything it read durable (upload, manifest, checkpoint, ack)
 * before then. `Deadline` holds that end, minus a safety margin, and answers the one question the run
 * loop asks: "given that flushing now would take `flushEstimateMs`, must I stop reading?". It also
 * exposes an AbortSignal that fires when the hard end (minus the margin) arrives, for waits that must
 * not outlive the run.
 */

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
    const untilAbort = endsAtMs - safetyMarginMs - clock.nowMs();
    if (Number.isFinite(untilAbort)) {
      this.timer = setTimeout(
        () => this.controller.abort(new Error('deadline reached')),
        Math.max(0, untilAbort),
      );
      this.timer.unref();
    }
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

  /** Fires when the safety margin begins. */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  dispose(): void {
    if (this.timer) clearTimeout(this.timer);
  }
}
