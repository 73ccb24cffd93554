/**
 * Observability of a deployment: CloudWatch alarms per pipeline and one dashboard, built on the metrics
 * every run publishes (src/runtime/metrics.ts: namespace `slotlake`, dimensions `service` = `slotlake`
 * and `pipeline`; `Runs` also by `stopReason`) and on the platform's own signal of a failed run.
 *
 * Per pipeline:
 * - **failed runs**: Lambda's `Errors` for the function; for Fargate, a metric filter on the task's log
 *   group counting the one-line failure (`slotlake: … — …`) that the CLI prints when a run fails;
 * - **lag**: `LagBytes` (WAL the archive has not acknowledged) above a threshold for several periods;
 * - **retained WAL**: `RetainedWalBytes` (WAL the server keeps for the slot) above a threshold;
 * - **no successful run**: no `RunTime` datapoint (published by every run that ends cleanly) for N
 *   schedule periods — a stopped schedule, a run that never starts, or failures.
 * An always-on Fargate service publishes its run metrics when it stops, so it gets the failure alarm
 * only; watch its slot with RDS' `OldestReplicationSlotLag` / `TransactionLogsDiskUsage` (docs/deployment.md).
 * The definitions are CloudFormation JSON, shared by serverless.yml and the CDK stack.
 */
import type { Cfn } from './grants.js';
import type { Pipeline } from './pipelines.js';

/** The namespace the runs publish into (POWERTOOLS_METRICS_NAMESPACE is left unset in deployments). */
export const METRICS_NAMESPACE = 'slotlake';
/** Every metric a run publishes (one EMF document per run). */
export const RUN_METRICS = [
  'Changes',
  'Transactions',
  'Bytes',
  'Objects',
  'LagBytes',
  'RetainedWalBytes',
  'FlushTime',
  'RunTime',
  'Runs',
] as const;
/** Where the Fargate failure metric filter counts. */
export const FAILED_RUNS_NAMESPACE = 'slotlake/fargate';
/** The CLI's failure line: its first space-separated word is `slotlake:` (JSON log lines start with `{`). */
export const FAILURE_LINE_PATTERN = '[prefix="slotlake:", ...]';

export type RunPlatform =
  | { readonly kind: 'lambda'; readonly functionName: Cfn }
  | { readonly kind: 'fargate'; readonly mode: 'scheduled' | 'service' };

export interface AlarmSpec {
  /** Logical id suffix: `<Pipeline.id><kind>Alarm`. */
  readonly id: string;
  readonly properties: { readonly [key: string]: Cfn };
}

function runDimensions(pipeline: Pipeline): Cfn[] {
  return [
    { Name: 'service', Value: 'slotlake' },
    { Name: 'pipeline', Value: pipeline.name },
  ];
}

export function failedRunsMetricName(pipeline: Pipeline): string {
  return `FailedRuns-${pipeline.name}`;
}

/**
 * The alarms of one pipeline. `alarmPrefix` names them (`<prefix>-<pipeline>-<kind>`); `topicArn` is
 * notified on alarm and on recovery.
 */
export function pipelineAlarms(
  pipeline: Pipeline,
  platform: RunPlatform,
  alarmPrefix: string,
  topicArn: Cfn,
): AlarmSpec[] {
  const period = pipeline.alarms.periodSeconds;
  const base = (kind: string, description: string) => ({
    AlarmName: `${alarmPrefix}-${pipeline.name}-${kind}`,
    AlarmDescription: `slotlake pipeline ${pipeline.name}: ${description}`,
    AlarmActions: [topicArn],
    OKActions: [topicArn],
    Period: period,
  });
  const alarms: AlarmSpec[] = [];
  alarms.push({
    id: `${pipeline.id}FailedRunsAlarm`,
    properties:
      platform.kind === 'lambda'
        ? {
            ...base('failed-runs', 'a run failed (the function error says why in its log)'),
            Namespace: 'AWS/Lambda',
            MetricName: 'Errors',
            Dimensions: [{ Name: 'FunctionName', Value: platform.functionName }],
            Statistic: 'Sum',
            EvaluationPeriods: 1,
            Threshold: 1,
            ComparisonOperator: 'GreaterThanOrEqualToThreshold',
            TreatMissingData: 'notBreaching',
          }
        : {
            ...base('failed-runs', 'a run failed (the task log has a line "slotlake: …" saying why)'),
            Namespace: FAILED_RUNS_NAMESPACE,
            MetricName: failedRunsMetricName(pipeline),
            Statistic: 'Sum',
            EvaluationPeriods: 1,
            Threshold: 1,
            ComparisonOperator: 'GreaterThanOrEqualToThreshold',
            TreatMissingData: 'notBreaching',
          },
  });
  alarms.push({
    id: `${pipeline.id}LagAlarm`,
    properties: {
      ...base('lag', `LagBytes above ${pipeline.alarms.lagBytes} for ${pipeline.alarms.lagPeriods} periods`),
      Namespace: METRICS_NAMESPACE,
      MetricName: 'LagBytes',
      Dimensions: runDimensions(pipeline),
      Statistic: 'Maximum',
      EvaluationPeriods: pipeline.alarms.lagPeriods,
      DatapointsToAlarm: pipeline.alarms.lagPeriods,
      Threshold: pipeline.alarms.lagBytes,
      ComparisonOperator: 'GreaterThanThreshold',
      TreatMissingData: 'notBreaching',
    },
  });
  alarms.push({
    id: `${pipeline.id}RetainedWalAlarm`,
    properties: {
      ...base(
        'retained-wal',
        `RetainedWalBytes above ${pipeline.alarms.retainedWalBytes}: the slot holds WAL back`,
      ),
      Namespace: METRICS_NAMESPACE,
      MetricName: 'RetainedWalBytes',
      Dimensions: runDimensions(pipeline),
      Statistic: 'Maximum',
      EvaluationPeriods: 1,
      Threshold: pipeline.alarms.retainedWalBytes,
      ComparisonOperator: 'GreaterThanThreshold',
      TreatMissingData: 'notBreaching',
    },
  });
  if (platform.kind === 'lambda' || platform.mode === 'scheduled')
    alarms.push({
      id: `${pipeline.id}NoSuccessfulRunAlarm`,
      properties: {
        ...base('no-successful-run', `no run ended cleanly for ${pipeline.alarms.missedRuns} periods`),
        Namespace: METRICS_NAMESPACE,
        MetricName: 'RunTime',
        Dimensions: runDimensions(pipeline),
        Statistic: 'SampleCount',
        EvaluationPeriods: pipeline.alarms.missedRuns,
        DatapointsToAlarm: pipeline.alarms.missedRuns,
        Threshold: 1,
        ComparisonOperator: 'LessThanThreshold',
        TreatMissingData: 'breaching',
      },
    });
  return alarms;
}

/**
 * The dashboard body: per pipeline a row of archive throughput, slot health, run and flush time, runs by
 * stop reason and failures; then the state of every alarm (by name). The text holds `${AWS::Region}`,
 * `${AWS::Partition}` and `${AWS::AccountId}` for Fn::Sub.
 */
export function dashboardBody(
  pipelines: readonly Pipeline[],
  platformOf: (pipeline: Pipeline) => { platform: RunPlatform; functionName?: string },
  alarmNames: readonly string[],
): string {
  const widgets: unknown[] = [];
  const region = '${AWS::Region}';
  let y = 0;
  const metric = (name: string, pipeline: Pipeline, stat: string, label = name) => [
    METRICS_NAMESPACE,
    name,
    'service',
    'slotlake',
    'pipeline',
    pipeline.name,
    { stat, label },
  ];
  for (const pipeline of pipelines) {
    const { platform, functionName } = platformOf(pipeline);
    const graph = (x: number, title: string, metrics: unknown[], extra: Record<string, unknown> = {}) =>
      widgets.push({
        type: 'metric',
        x,
        y,
        width: 6,
        height: 6,
        properties: {
          title: `${pipeline.name}: ${title}`,
          region,
          view: 'timeSeries',
          stacked: false,
          metrics,
          period: pipeline.alarms.periodSeconds,
          ...extra,
        },
      });
    graph(0, 'archived', [metric('Changes', pipeline, 'Sum'), metric('Bytes', pipeline, 'Sum')]);
    graph(
      6,
      'slot (bytes)',
      [metric('LagBytes', pipeline, 'Maximum'), metric('RetainedWalBytes', pipeline, 'Maximum')],
      {
        annotations: {
          horizontal: [
            { label: 'lag alarm', value: pipeline.alarms.lagBytes },
            { label: 'retained WAL alarm', value: pipeline.alarms.retainedWalBytes },
          ],
        },
      },
    );
    graph(12, 'run and flush time (ms)', [
      metric('RunTime', pipeline, 'Maximum'),
      metric('FlushTime', pipeline, 'Maximum'),
    ]);
    const failures =
      platform.kind === 'lambda'
        ? ['AWS/Lambda', 'Errors', 'FunctionName', functionName ?? '', { stat: 'Sum', label: 'failed runs' }]
        : [FAILED_RUNS_NAMESPACE, failedRunsMetricName(pipeline), { stat: 'Sum', label: 'failed runs' }];
    graph(18, 'runs by stop reason, failures', [
      [
        {
          expression: `SEARCH('{${METRICS_NAMESPACE},pipeline,service,stopReason} MetricName="Runs" pipeline="${pipeline.name}"', 'Sum', ${pipeline.alarms.periodSeconds})`,
          id: 'runs',
          label: '',
        },
      ],
      failures,
    ]);
    y += 6;
  }
  widgets.push({
    type: 'alarm',
    x: 0,
    y,
    width: 24,
    height: Math.max(2, Math.ceil(alarmNames.length / 4) + 1),
    properties: {
      title: 'alarms',
      alarms: alarmNames.map(
        (name) => `arn:\${AWS::Partition}:cloudwatch:${region}:\${AWS::AccountId}:alarm:${name}`,
      ),
    },
  });
  return JSON.stringify({ widgets });
}
