/**
 * Deadline arithmetic with a fake clock; the abort signal with a short real deadline.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { describe, it } from 'node:test';
import { Deadline, systemClock, type Clock } from '../../src/support/deadline.js';

/**
 * Waits for the signal to abort, failing after `limitMs`. The deadline's own timer is unref'd (it must
 * not keep a finished process alive), so the guard timer also keeps the event loop running meanwhile.
 */
async function aborted(signal: AbortSignal, limitMs = 2_000): Promise<void> {
  let guard: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      once(signal, 'abort'),
      new Promise((_, reject) => {
        guard = setTimeout(() => reject(new Error(`no abort within ${limitMs} ms`)), limitMs);
      }),
    ]);
  } finally {
    clearTimeout(guard);
  }
}

class FakeClock implements Clock {
  constructor(public now: number) {}
  nowMs(): number {
    return this.now;
  }
  advance(ms: number): void {
    this.now += ms;
  }
}

describe('Deadline', () => {
  it('remainingMs and usableMs follow the clock', () => {
    const clock = new FakeClock(1_000_000);
    const deadline = new Deadline(1_010_000, 2_000, clock);
    try {
      assert.equal(deadline.isBounded, true);
      assert.equal(deadline.remainingMs(), 10_000);
      assert.equal(deadline.usableMs(), 8_000);
      clock.advance(7_500);
      assert.equal(deadline.remainingMs(), 2_500);
      assert.equal(deadline.usableMs(), 500);
      clock.advance(3_000);
      assert.equal(deadline.remainingMs(), -500);
      assert.equal(deadline.usableMs(), -2_500);
    } finally {
      deadline.dispose();
    }
  });

  it('mustStopReading when the flush would run into the margin', () => {
    const clock = new FakeClock(0);
    const deadline = new Deadline(10_000, 1_000, clock);
    try {
      // 9 000 ms usable.
      assert.equal(deadline.mustStopReading(0), false);
      assert.equal(deadline.mustStopReading(8_999), false);
      assert.equal(deadline.mustStopReading(9_000), true);
      assert.equal(deadline.mustStopReading(20_000), true);
      clock.advance(8_000); // 1 000 ms usable
      assert.equal(deadline.mustStopReading(999), false);
      assert.equal(deadline.mustStopReading(1_000), true);
      clock.advance(1_000); // the margin begins: stop even with nothing to flush
      assert.equal(deadline.mustStopReading(1), true); // timers may fire a fraction of a millisecond early
    } finally {
      deadline.dispose();
    }
  });

  it('an unbounded deadline never stops reading and never aborts', () => {
    const clock = new FakeClock(0);
    const deadline = Deadline.unbounded(clock);
    assert.equal(deadline.isBounded, false);
    assert.equal(deadline.remainingMs(), Number.POSITIVE_INFINITY);
    assert.equal(deadline.usableMs(), Number.POSITIVE_INFINITY);
    clock.advance(1e12);
    assert.equal(deadline.mustStopReading(1e9), false);
    assert.equal(deadline.signal.aborted, false);
    deadline.dispose();
  });

  it('the signal aborts when the margin begins', async () => {
    const start = systemClock.nowMs();
    const deadline = new Deadline(start + 40, 20);
    try {
      assert.equal(deadline.signal.aborted, false);
      await aborted(deadline.signal);
      assert.equal(deadline.signal.aborted, true);
      assert.match(String((deadline.signal.reason as Error).message), /deadline/);
      // Not before the margin began (allow timer granularity of a millisecond).
      assert.ok(systemClock.nowMs() >= start + 20 - 1, `aborted after ${systemClock.nowMs() - start} ms`);
      assert.ok(deadline.usableMs() <= 1);
      assert.equal(deadline.mustStopReading(1), true); // timers may fire a fraction of a millisecond early
    } finally {
      deadline.dispose();
    }
  });

  it('a deadline already past aborts at once', async () => {
    const clock = new FakeClock(5_000);
    const deadline = new Deadline(4_000, 0, clock);
    try {
      await aborted(deadline.signal);
      assert.equal(deadline.signal.aborted, true);
    } finally {
      deadline.dispose();
    }
  });

  it('dispose stops the timer', async () => {
    const deadline = new Deadline(systemClock.nowMs() + 5, 0);
    deadline.dispose();
    // A later deadline that does fire proves time passed beyond the disposed one.
    const later = new Deadline(systemClock.nowMs() + 25, 0);
    await aborted(later.signal);
    assert.equal(deadline.signal.aborted, false);
  });

  it('systemClock is close to Date.now and monotonic', () => {
    const a = systemClock.nowMs();
    const b = systemClock.nowMs();
    assert.ok(b >= a);
    assert.ok(Math.abs(a - Date.now()) < 1_000);
  });
});
