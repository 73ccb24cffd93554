/**
 * The Lambda deployment of a pipeline list: for every pipeline one scheduled function (reserved
 * concurrency 1, no retries) with its own role — its prefix, its checkpoint item, its secret, its database
 * user — and its alarms; one SNS topic for the alarms and one dashboard for the deployment. serverless.yml
 * merges what this returns (through `pipelines.cjs`, which osls loads) with the shared bucket and table.
 */
import { pipelineStatements, type Cfn, type DeploymentRefs } from '../grants.js';
import { dashboardBody, pipelineAlarms } from '../observability.js';
import type { Pipeline } from '../pipelines.js';

export interface LambdaOptions {
  readonly service: string;
  readonly stage: string;
  readonly timeout: number;
  readonly memorySize: number;
  readonly ephemeralStorageSize: number;
  readonly maximumEventAge: number;
}

export const REFS: DeploymentRefs = {
  bucketArn: { 'Fn::GetAtt': ['ArchiveBucket', 'Arn'] },
  tableArn: { 'Fn::GetAtt': ['CheckpointTable', 'Arn'] },
  partition: { Ref: 'AWS::Partition' },
  region: { Ref: 'AWS::Region' },
  account: { Ref: 'AWS::AccountId' },
  join: (parts) => ({ 'Fn::Join': ['', parts] }),
};

export function functionName(pipeline: Pipeline, options: LambdaOptions): string {
  return `${options.service}-${options.stage}-${pipeline.name}`;
}

function role(pipeline: Pipeline, options: LambdaOptions): Record<string, Cfn> {
  const logGroup = REFS.join([
    'arn:',
    REFS.partition,
    ':logs:',
    REFS.region,
    ':',
    REFS.account,
    `:log-group:/aws/lambda/${functionName(pipeline, options)}:*`,
  ]);
  return {
    Type: 'AWS::IAM::Role',
    Properties: {
      Description: `slotlake pipeline ${pipeline.name}: its prefix, checkpoint item, secret and database user only`,
      AssumeRolePolicyDocument: {
        Version: '2012-10-17',
        Statement: [
          { Effect: 'Allow', Principal: { Service: ['lambda.amazonaws.com'] }, Action: ['sts:AssumeRole'] },
        ],
      },
      Policies: [
        {
          PolicyName: 'slotlake-pipeline',
          PolicyDocument: {
            Version: '2012-10-17',
            Statement: [
              {
                Sid: 'OwnLogGroup',
                Effect: 'Allow',
                Action: ['logs:CreateLogStream', 'logs:PutLogEvents'],
                Resource: logGroup,
              },
              ...pipelineStatements(pipeline, REFS),
            ] as unknown as Cfn,
          },
        },
      ],
      // The ENI permissions Lambda needs to attach a function to a VPC (AWS-managed policy).
      ...(pipeline.vpc
        ? {
            ManagedPolicyArns: [
              REFS.join([
                'arn:',
                REFS.partition,
                ':iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole',
              ]),
            ],
          }
        : {}),
    },
  };
}

export interface LambdaDeployment {
  readonly functions: Record<string, unknown>;
  readonly resources: { Resources: Record<string, unknown>; Outputs: Record<string, unknown> };
}

export function lambdaDeployment(pipelines: readonly Pipeline[], options: LambdaOptions): LambdaDeployment {
  const functions: Record<string, unknown> = {};
  const resources: Record<string, unknown> = {
    AlarmTopic: {
      Type: 'AWS::SNS::Topic',
      Properties: { DisplayName: `slotlake ${options.stage} alarms` },
    },
  };
  const alarmNames: string[] = [];
  const alarmPrefix = `${options.service}-${options.stage}`;
  for (const pipeline of pipelines) {
    functions[pipeline.id] = {
      name: functionName(pipeline, options),
      handler: 'dist/bundle/lambda.handler',
      description: `slotlake pipeline ${pipeline.name}: slot ${pipeline.slot} → s3 prefix ${pipeline.prefix}`,
      role: `${pipeline.id}Role`,
      timeout: options.timeout,
      memorySize: options.memorySize,
      ephemeralStorageSize: options.ephemeralStorageSize,
      // One consumer per slot: Postgres lets one connection stream a slot and the checkpoint assumes one
      // writer; overlapping schedule events are throttled instead of run concurrently.
      reservedConcurrency: 1,
      // A failed run is not retried by Lambda: the next scheduled run resumes from the checkpoint.
      maximumRetryAttempts: 0,
      maximumEventAge: options.maximumEventAge,
      environment: {
        ...pipeline.environment,
        SLOTLAKE_BUCKET: { Ref: 'ArchiveBucket' },
        SLOTLAKE_CHECKPOINT_TABLE: { Ref: 'CheckpointTable' },
      },
      ...(pipeline.vpc
        ? {
            vpc: {
              subnetIds: [...pipeline.vpc.subnetIds],
              securityGroupIds: [...pipeline.vpc.securityGroupIds],
            },
          }
        : {}),
      events: [{ schedule: { rate: [pipeline.schedule], enabled: pipeline.scheduleEnabled } }],
    };
    resources[`${pipeline.id}Role`] = role(pipeline, options);
    for (const alarm of pipelineAlarms(
      pipeline,
      { kind: 'lambda', functionName: { Ref: `${pipeline.id}LambdaFunction` } },
      alarmPrefix,
      { Ref: 'AlarmTopic' },
    )) {
      resources[alarm.id] = { Type: 'AWS::CloudWatch::Alarm', Properties: alarm.properties };
      alarmNames.push(alarm.properties.AlarmName as string);
    }
  }
  resources.Dashboard = {
    Type: 'AWS::CloudWatch::Dashboard',
    Properties: {
      DashboardName: alarmPrefix,
      DashboardBody: {
        'Fn::Sub': dashboardBody(
          pipelines,
          (pipeline) => ({
            platform: { kind: 'lambda', functionName: '' },
            functionName: functionName(pipeline, options),
          }),
          alarmNames,
        ),
      },
    },
  };
  return {
    functions,
    resources: {
      Resources: resources,
      Outputs: {
        AlarmTopicArn: {
          Description: 'SNS topic the alarms notify: subscribe to it',
          Value: { Ref: 'AlarmTopic' },
        },
        DashboardName: { Description: 'CloudWatch dashboard of the pipelines', Value: alarmPrefix },
      },
    },
  };
}
