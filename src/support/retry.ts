/**
 * Retries: one policy for every call to S3, DynamoDB and Postgres that may fail transiently.
 *
 * Whether to retry is decided by `classify()` alone (errors.ts): a retryable kind (throttling, 5xx,
 * dropped connections) is tried again with exponential backoff and full jitter, as long as the next
 * attempt still fits in the run's time budget; anything else — missing bucket, access denied, bad
 * credentials, a lost lease — fails at once with its operator hint, with no retry storm.
 */
import { classify, type ErrorOrigin, type SlotlakeError } from '../errors.js';
import type { Deadline } from './deadline.js';

export interface RetryOptions {
  readonly what: string;
  /** Which system the operation talks to (set here, where the call is made; see errors.ts). */
  readonly origin: ErrorOrigin;
  readonly deadline?: Deadline;
  readonly maxAttempts?: number;
  readonly baseDelayMs?: number;
  readonly maxDelayMs?: number;
  readonly onRetry?: (error: SlotlakeError, attempt: number, delayMs: number) => void;
  readonly random?: () => number;
}

export async function withRetry<T>(operation: () => Promise<T>, options: RetryOptions): Promise<T> {
  const maxAttempts = options.maxAttempts ?? 8;
  const base = options.baseDelayMs ?? 100;
  const cap = options.maxDelayMs ?? 5_000;
  const random = options.random ?? Math.random;
  for (let attempt = 1; ; attempt++) {
    try {
      return await operation();
    } catch (error) {
      const classified = classify(error, { origin: options.origin, what: options.what });
      if (!classified.retryable || attempt >= maxAttempts) throw classified;
      const delayMs = Math.round(random() * Math.min(cap, base * 2 ** (attempt - 1)));
      // The retry must leave room for the attempt itself (one more request latency, roughly).
      if (options.deadline && options.deadline.remainingMs() - delayMs < 1_000) throw classified;
      options.onRetry?.(classified, attempt, delayMs);
      await new Promise((resolve) => setTimeout(resolve, delayMs));
    }
  }
}
