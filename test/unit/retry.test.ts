/**
 * withRetry: retries exactly what classify() calls retryable, within maxAttempts and the time budget.
 * `random: () => 0` makes every backoff 0 ms, so nothing here sleeps.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SlotlakeError } from '../../src/errors.js';
import { Deadline, type Clock } from '../../src/support/deadline.js';
import { withRetry } from '../../src/support/retry.js';

const noWait = () => 0;

function transient(): Error {
  return Object.assign(new Error('Please reduce your request rate'), {
    name: 'SlowDown',
    $metadata: { httpStatusCode: 503 },
  });
}

/** An operation failing with `errors` in turn, then returning 'done'. Counts calls. */
function flaky(errors: unknown[]): { operation: () => Promise<string>; calls: () => number } {
  let calls = 0;
  return {
    operation: async () => {
      const error = errors[calls++];
      if (error !== undefined) throw error;
      return 'done';
    },
    calls: () => calls,
  };
}

function fixedClock(now: number): Clock {
  return { nowMs: () => now };
}

describe('withRetry', () => {
  it('returns at once when the operation succeeds', async () => {
    const op = flaky([]);
    assert.equal(
      await withRetry(op.operation, { what: 'x', origin: 'object-store', random: noWait }),
      'done',
    );
    assert.equal(op.calls(), 1);
  });

  it('retries retryable errors, then succeeds', async () => {
    const op = flaky([
      transient(),
      Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }),
      transient(),
    ]);
    const retries: [string, number, number][] = [];
    const result = await withRetry(op.operation, {
      what: 'uploading',
      origin: 'object-store',
      random: noWait,
      onRetry: (error, attempt, delayMs) => retries.push([error.kind, attempt, delayMs]),
    });
    assert.equal(result, 'done');
    assert.equal(op.calls(), 4);
    assert.deepEqual(retries, [
      ['aws-transient', 1, 0],
      ['aws-transient', 2, 0],
      ['aws-transient', 3, 0],
    ]);
  });

  it('fails at once on a non-retryable error, classified with the step name', async () => {
    const denied = Object.assign(new Error('Access Denied'), {
      name: 'AccessDenied',
      $metadata: { httpStatusCode: 403 },
    });
    const op = flaky([denied]);
    let retried = false;
    await assert.rejects(
      withRetry(op.operation, {
        what: 'writing manifest',
        origin: 'object-store',
        random: noWait,
        onRetry: () => (retried = true),
      }),
      (error: unknown) => {
        assert.ok(error instanceof SlotlakeError);
        assert.equal(error.kind, 'access-denied');
        assert.match(error.message, /^writing manifest: Access Denied/);
        assert.equal(error.cause, denied);
        return true;
      },
    );
    assert.equal(op.calls(), 1);
    assert.equal(retried, false);
  });

  it('a non-retryable SlotlakeError is thrown as is', async () => {
    const conflict = new SlotlakeError('moved', { kind: 'checkpoint-conflict' });
    const op = flaky([conflict]);
    await assert.rejects(
      withRetry(op.operation, { what: 'x', origin: 'object-store', random: noWait }),
      (error) => error === conflict,
    );
    assert.equal(op.calls(), 1);
  });

  it('honours maxAttempts', async () => {
    const op = flaky(Array.from({ length: 10 }, transient));
    await assert.rejects(
      withRetry(op.operation, { what: 'x', origin: 'object-store', random: noWait, maxAttempts: 3 }),
      (error) => {
        assert.ok(error instanceof SlotlakeError);
        assert.equal(error.kind, 'aws-transient');
        return true;
      },
    );
    assert.equal(op.calls(), 3);
  });

  it('defaults to 8 attempts', async () => {
    const op = flaky(Array.from({ length: 20 }, transient));
    await assert.rejects(withRetry(op.operation, { what: 'x', origin: 'object-store', random: noWait }));
    assert.equal(op.calls(), 8);
  });

  it('maxAttempts 1 never retries', async () => {
    const op = flaky([transient()]);
    await assert.rejects(
      withRetry(op.operation, { what: 'x', origin: 'object-store', random: noWait, maxAttempts: 1 }),
    );
    assert.equal(op.calls(), 1);
  });

  it('does not retry when the deadline leaves no room for another attempt', async () => {
    const deadline = new Deadline(10_500, 0, fixedClock(10_000)); // 500 ms left
    try {
      const op = flaky([transient()]);
      await assert.rejects(
        withRetry(op.operation, { what: 'x', origin: 'object-store', random: noWait, deadline }),
        (error) => {
          assert.ok(error instanceof SlotlakeError);
          assert.equal(error.kind, 'aws-transient');
          return true;
        },
      );
      assert.equal(op.calls(), 1);
    } finally {
      deadline.dispose();
    }
  });

  it('retries when the deadline leaves room', async () => {
    const deadline = new Deadline(70_000, 2_000, fixedClock(10_000));
    try {
      const op = flaky([transient(), transient()]);
      assert.equal(
        await withRetry(op.operation, { what: 'x', origin: 'object-store', random: noWait, deadline }),
        'done',
      );
      assert.equal(op.calls(), 3);
    } finally {
      deadline.dispose();
    }
  });

  it('the backoff must fit in the deadline too', async () => {
    // 1 500 ms left: a 0 ms backoff fits (≥ 1 000 ms remain), a 600 ms one does not.
    const deadline = new Deadline(11_500, 0, fixedClock(10_000));
    try {
      const fits = flaky([transient()]);
      assert.equal(
        await withRetry(fits.operation, { what: 'x', origin: 'object-store', random: noWait, deadline }),
        'done',
      );
      const tooLong = flaky([transient()]);
      const delays: number[] = [];
      await assert.rejects(
        withRetry(tooLong.operation, {
          what: 'x',
          origin: 'object-store',
          random: () => 1,
          baseDelayMs: 600,
          deadline,
          onRetry: (_e, _a, delayMs) => delays.push(delayMs),
        }),
      );
      assert.equal(tooLong.calls(), 1);
      assert.deepEqual(delays, []);
    } finally {
      deadline.dispose();
    }
  });

  it('backoff is exponential with full jitter, capped', async () => {
    const op = flaky(Array.from({ length: 5 }, transient));
    const delays: number[] = [];
    const deadline = Deadline.unbounded();
    // random() → 0.001: delays are 0.1% of base·2^(n-1), capped at maxDelayMs; small enough not to matter.
    await withRetry(op.operation, {
      what: 'x',
      origin: 'object-store',
      random: () => 0.001,
      baseDelayMs: 1_000,
      maxDelayMs: 5_000,
      deadline,
      onRetry: (_e, _a, delayMs) => delays.push(delayMs),
    });
    // 1000·0.001=1, 2000·0.001=2, 4000·0.001=4, min(5000, 8000)·0.001=5, min(5000,16000)·0.001=5
    assert.deepEqual(delays, [1, 2, 4, 5, 5]);
  });
});
