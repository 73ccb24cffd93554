/**
 * Run metrics as CloudWatch Embedded Metric Format (EMF), through Powertools Metrics.
 *
 * One EMF document per run, dimension `pipeline`: changes, transactions, bytes, objects, lag bytes, retained
 * WAL, flush time, run time, overrun time (past the budget; 0 when the run ended in time); and a `Runs` count with the stop reason as a second dimension, so an alarm can
 * watch e.g. `stopReason=deadline` runs that archived nothing, or a growing `LagBytes`. On Lambda the
 * document goes to stdout (CloudWatch Logs turns it into metrics); from the CLI it goes to stderr, because
 * stdout is reserved for the run summary.
 */
import { Console } from 'node:console';
import { Metrics, MetricUnit } from '@aws-lambda-powertools/metrics';
import type { RunSummary } from './summary.js';

export const METRICS_NAMESPACE = 'slotlake';

function createMetrics(pipeline: string): Metrics {
  const metrics = new Metrics({
    namespace: process.env.POWERTOOLS_METRICS_NAMESPACE ?? METRICS_NAMESPACE,
    serviceName: 'slotlake',
    defaultDimensions: { pipeline },
  });
  toStderrOutsideLambda(metrics);
  return metrics;
}

/** Outside Lambda, EMF goes to stderr: stdout is the run summary's. */
function toStderrOutsideLambda(metrics: Metrics): void {
  if (!process.env.AWS_LAMBDA_FUNCTION_NAME) {
    (metrics as unknown as { console: Console }).console = new Console({
      stdout: process.stderr,
      stderr: process.stderr,
    });
  }
}

export function publishRunMetrics(summary: RunSummary): void {
  const metrics = createMetrics(summary.pipeline);
  metrics.addMetric('Changes', MetricUnit.Count, summary.changes);
  metrics.addMetric('Transactions', MetricUnit.Count, summary.transactions);
  metrics.addMetric('Bytes', MetricUnit.Bytes, summary.bytes);
  metrics.addMetric('Objects', MetricUnit.Count, summary.objects);
  metrics.addMetric('FlushTime', MetricUnit.Milliseconds, summary.flushMs);
  metrics.addMetric('RunTime', MetricUnit.Milliseconds, summary.durationMs);
  // A run past its budget is killed on Lambda: alarm on any overrun.
  metrics.addMetric('OverrunTime', MetricUnit.Milliseconds, summary.overrunMs);
  if (summary.lagBytes !== null) metrics.addMetric('LagBytes', MetricUnit.Bytes, summary.lagBytes);
  if (summary.retainedWalBytes !== null)
    metrics.addMetric('RetainedWalBytes', MetricUnit.Bytes, summary.retainedWalBytes);
  metrics.addMetadata('stopReason', summary.stopReason);
  metrics.addMetadata('checkpoint', summary.checkpoint);
  metrics.addMetadata('runId', summary.runId);
  const stop = metrics.singleMetric();
  toStderrOutsideLambda(stop);
  stop.addDimension('stopReason', summary.stopReason);
  stop.addMetric('Runs', MetricUnit.Count, 1);
  metrics.publishStoredMetrics();
}
