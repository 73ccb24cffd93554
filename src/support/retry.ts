/**
 * Retries: one policy shape for every call to S3, DynamoDB and Postgres that may fail transiently, and for
 * the run's reconnects after a dropped replication connection.
 *
 * Whether to retry is decided from the classified error (errors.ts `classify()`): by default its
 * `retryable` flag (throttling, 5xx, dropped sockets), or a policy's own predicate over the typed error
 * (the reconnect loop retries only source connection losses). A retry waits with exponential backoff and
 * full jitter, as long as the next attempt still fits in the run's time budget; anything else — missing
 * bucket, access denied, bad credentials, a lost lease — fails at once with its operator hint. An aborted
 * signal (the run's deadline or fence) ends the loop at once with the signal's reason.
 */
import { classify, type ErrorOrigin, type SlotlakeError } from '../errors.js';
import type { Deadline } from './deadline.js';

export interface RetryPolicy {
  readonly maxAttempts: number;
  readonly baseDelayMs: number;
  readonly maxDelayMs: number;
}

/**
 * Calls to S3 and DynamoDB: S3 asks clients to back off on 503 SlowDown for seconds, DynamoDB throttles per
 * partition for about a second; 8 attempts from 100 ms doubling to 5 s span ~15 s in the worst case, well
 * inside a run, and full jitter spreads overlapping runs apart.
 */
export const STORE_RETRY: RetryPolicy = { maxAttempts: 8, baseDelayMs: 100, maxDelayMs: 5_000 };

/**
 * Lease renewals: a renewal must succeed well before the lease's fence (a third of its duration later), so
 * it tries a few times quickly rather than backing off for long.
 */
export const RENEWAL_RETRY: RetryPolicy = { maxAttempts: 4, baseDelayMs: 100, maxDelayMs: 1_000 };

export interface RetryOptions {
  readonly what: string;
  /** Which system the operation talks to (set here, where the call is made; see errors.ts). */
  readonly origin: ErrorOrigin;
  readonly deadline?: Deadline;
  /** Aborts the loop (and the wait between attempts) with the signal's reason. */
  readonly signal?: AbortSignal;
  readonly policy?: RetryPolicy;
  /** Overrides the policy's attempt count. */
  readonly maxAttempts?: number;
  readonly baseDelayMs?: number;
  readonly maxDelayMs?: number;
  /** Which classified errors to retry; default: `error.retryable`. */
  readonly shouldRetry?: (error: SlotlakeError, attempt: number) => boolean;
  readonly onRetry?: (error: SlotlakeError, attempt: number, delayMs: number) => void;
  readonly random?: () => number;
}

/** Room the next attempt needs after the wait (roughly one request's latency). */
const ATTEMPT_ROOM_MS = 1_000;

function wait(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason as Error);
      return;
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason as Error);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

export async function withRetry<T>(operation: () => Promise<T>, options: RetryOptions): Promise<T> {
  const policy = options.policy ?? STORE_RETRY;
  const maxAttempts = options.maxAttempts ?? policy.maxAttempts;
  const base = options.baseDelayMs ?? policy.baseDelayMs;
  const cap = options.maxDelayMs ?? policy.maxDelayMs;
  const random = options.random ?? Math.random;
  const shouldRetry = options.shouldRetry ?? ((error: SlotlakeError) => error.retryable);
  for (let attempt = 1; ; attempt++) {
    if (options.signal?.aborted) throw options.signal.reason;
    try {
      return await operation();
    } catch (error) {
      if (options.signal?.aborted) throw options.signal.reason;
      const classified = classify(error, { origin: options.origin, what: options.what });
      if (!shouldRetry(classified, attempt) || attempt >= maxAttempts) throw classified;
      const delayMs = Math.round(random() * Math.min(cap, base * 2 ** (attempt - 1)));
      if (options.deadline && options.deadline.remainingMs() - delayMs < ATTEMPT_ROOM_MS) throw classified;
      options.onRetry?.(classified, attempt, delayMs);
      await wait(delayMs, options.signal);
    }
  }
}
