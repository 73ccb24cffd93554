/**
 * One Lambda cold start, in this fresh process: imports the handler module (COLD_START_HANDLER, a file
 * path), then invokes its `handler` once with a fake Lambda context of COLD_START_BUDGET_MS (default
 * 30000) ms, against whatever the environment configures (a pipeline with nothing to archive). Plain
 * JavaScript run by plain Node, so nothing but the handler is loaded. Prints one JSON line:
 * {"processMs": n, "importMs": n, "invokeMs": n, "summary": {...}} — processMs is the time from process
 * start to the import's beginning (Node's own start).
 */
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';

const file = process.env.COLD_START_HANDLER;
if (!file) throw new Error('COLD_START_HANDLER is required');
const budgetMs = Number(process.env.COLD_START_BUDGET_MS ?? 30_000);

const processMs = performance.now();
const module = await import(pathToFileURL(file).href);
const importMs = performance.now() - processMs;

const endsAt = Date.now() + budgetMs;
const context = {
  callbackWaitsForEmptyEventLoop: true,
  functionName: 'slotlake-bench-cold-start',
  functionVersion: '$LATEST',
  invokedFunctionArn: 'arn:aws:lambda:us-east-1:123456789012:function:slotlake-bench-cold-start',
  memoryLimitInMB: '1024',
  awsRequestId: 'cold-start-1',
  logGroupName: '/aws/lambda/slotlake-bench-cold-start',
  logStreamName: 'bench',
  getRemainingTimeInMillis: () => endsAt - Date.now(),
  done: () => undefined,
  fail: () => undefined,
  succeed: () => undefined,
};
const invokeStarted = performance.now();
const summary = await module.handler({ source: 'aws.events' }, context);
const invokeMs = performance.now() - invokeStarted;
process.stdout.write(`${JSON.stringify({ processMs, importMs, invokeMs, summary })}\n`);
