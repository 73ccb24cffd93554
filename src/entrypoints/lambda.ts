/**
 * The AWS Lambda handler (contract §6): exactly `slotlake run`, with Lambda's remaining time as the budget,
 * returning the run summary. Wrapped with middy; Powertools Logger adds the invocation context to every log.
 * A failed run throws (so the invocation is marked failed and alarms can fire) after logging one clear line;
 * it never moves the checkpoint or the slot past what is archived.
 */
import '../support/heap.js'; // first: sets how the heap grows before anything allocates
import middy from '@middy/core';
import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import type { Context } from 'aws-lambda';
import { loadConfig } from '../config.js';
import { classify } from '../errors.js';
import { createLogger } from '../log.js';
import { Deadline, systemClock } from '../support/deadline.js';
import type { RunSummary } from '../runtime/summary.js';
import { performRun } from './app.js';

const logger = createLogger((process.env.SLOTLAKE_LOG_LEVEL?.toUpperCase() as 'INFO' | undefined) ?? 'INFO');

export async function ingest(_event: unknown, context: Context): Promise<RunSummary> {
  try {
    const config = loadConfig(process.env);
    const deadline = new Deadline(
      systemClock.nowMs() + context.getRemainingTimeInMillis(),
      config.safetyMarginMs,
    );
    try {
      return await performRun({ config, logger, deadline, untilCaughtUp: false });
    } finally {
      deadline.dispose();
    }
  } catch (error) {
    const classified = classify(error);
    logger.error(classified.toOperatorLine(), { kind: classified.kind, retryable: classified.retryable });
    throw classified;
  }
}

export const handler = middy(ingest).use(injectLambdaContext(logger));
