/**
 * slotlake on Fargate, as code: every pipeline of the list becomes either a task started on its schedule
 * by EventBridge Scheduler (`slotlake run --max-duration …`, like the Lambda function) or an always-on
 * ECS service (`slotlake run` with no deadline: batches are committed by age and size, and on SIGTERM the
 * run drains — finishes the batch, checkpoints, acknowledges — within the container's stop timeout).
 *
 * Each pipeline gets its own task role with exactly its grants (infra/grants.ts), its own log group, a
 * metric filter counting failed runs, and its alarms (infra/observability.ts); the bucket, the checkpoint
 * table, the alarm topic and the dashboard are shared, as in serverless.yml. The container image is built
 * from infra/Dockerfile and pushed to an ECR repository beforehand (docs/deployment.md); the stack only
 * names it, so synthesis needs neither Docker nor the network.
 */
import {
  Aws,
  CfnOutput,
  CfnResource,
  Duration,
  Fn,
  RemovalPolicy,
  Stack,
  type StackProps,
} from 'aws-cdk-lib';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as ecr from 'aws-cdk-lib/aws-ecr';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as scheduler from 'aws-cdk-lib/aws-scheduler';
import * as sns from 'aws-cdk-lib/aws-sns';
import type { Construct } from 'constructs';
import { parseDuration } from '../../src/config.js';
import { pipelineStatements, type Cfn, type DeploymentRefs } from '../grants.js';
import {
  dashboardBody,
  FAILED_RUNS_NAMESPACE,
  FAILURE_LINE_PATTERN,
  failedRunsMetricName,
  pipelineAlarms,
} from '../observability.js';
import { scheduleSeconds, type Pipeline } from '../pipelines.js';

/** Fargate's longest stop timeout: SIGTERM, then this long to drain, then SIGKILL. */
export const STOP_TIMEOUT_SECONDS = 120;
/** Time a scheduled task needs before its run starts (provisioning, image pull). */
const TASK_START_ALLOWANCE_SECONDS = 60;

export interface FargateStackProps extends StackProps {
  readonly pipelines: readonly Pipeline[];
  /** ECR repository (name) holding the image built from infra/Dockerfile, and its tag. */
  readonly imageRepository: string;
  readonly imageTag: string;
  /** The VPC of the tasks, and the subnets and security groups of pipelines without their own `vpc`. */
  readonly vpcId: string;
  readonly subnetIds: readonly string[];
  readonly securityGroupIds: readonly string[];
  /** Name prefix of alarms, log groups and the dashboard (e.g. `slotlake-prod`). */
  readonly deploymentName: string;
  readonly logRetention?: logs.RetentionDays;
}

export class FargateStack extends Stack {
  readonly bucket: s3.Bucket;
  readonly table: dynamodb.Table;

  constructor(scope: Construct, id: string, props: FargateStackProps) {
    super(scope, id, props);
    for (const pipeline of props.pipelines) checkSchedule(pipeline);

    this.bucket = new s3.Bucket(this, 'ArchiveBucket', {
      // The archive is the product: kept on stack deletion and replacement.
      removalPolicy: RemovalPolicy.RETAIN,
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      encryption: s3.BucketEncryption.S3_MANAGED,
      enforceSSL: true,
      lifecycleRules: [
        { id: 'abort-incomplete-multipart-uploads', abortIncompleteMultipartUploadAfter: Duration.days(1) },
      ],
    });
    this.table = new dynamodb.Table(this, 'CheckpointTable', {
      partitionKey: { name: 'pk', type: dynamodb.AttributeType.STRING },
      billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      encryption: dynamodb.TableEncryption.AWS_MANAGED,
      removalPolicy: RemovalPolicy.RETAIN,
    });
    const topic = new sns.Topic(this, 'AlarmTopic', { displayName: `${props.deploymentName} alarms` });

    const refs: DeploymentRefs = {
      bucketArn: this.bucket.bucketArn,
      tableArn: this.table.tableArn,
      partition: Aws.PARTITION,
      region: Aws.REGION,
      account: Aws.ACCOUNT_ID,
      join: (parts) => Fn.join('', parts as string[]),
    };
    const vpc = ec2.Vpc.fromVpcAttributes(this, 'Vpc', {
      vpcId: props.vpcId,
      availabilityZones: Fn.getAzs(),
    });
    const cluster = new ecs.Cluster(this, 'Cluster', {
      vpc,
      containerInsightsV2: ecs.ContainerInsights.ENABLED,
    });
    const repository = ecr.Repository.fromRepositoryName(this, 'Repository', props.imageRepository);
    const image = ecs.ContainerImage.fromEcrRepository(repository, props.imageTag);
    const schedulerRole = new iam.Role(this, 'SchedulerRole', {
      assumedBy: new iam.ServicePrincipal('scheduler.amazonaws.com', {
        conditions: { StringEquals: { 'aws:SourceAccount': Aws.ACCOUNT_ID } },
      }),
      description: 'EventBridge Scheduler: starts the slotlake tasks',
    });

    const alarmNames: string[] = [];
    for (const pipeline of props.pipelines) {
      const network = {
        subnetIds: [...(pipeline.vpc?.subnetIds ?? props.subnetIds)],
        securityGroupIds: [...(pipeline.vpc?.securityGroupIds ?? props.securityGroupIds)],
      };
      const logGroup = new logs.LogGroup(this, `${pipeline.id}LogGroup`, {
        logGroupName: `/slotlake/${props.deploymentName}/${pipeline.name}`,
        retention: props.logRetention ?? logs.RetentionDays.ONE_MONTH,
        removalPolicy: RemovalPolicy.DESTROY,
      });
      const taskRole = new iam.Role(this, `${pipeline.id}TaskRole`, {
        assumedBy: new iam.ServicePrincipal('ecs-tasks.amazonaws.com'),
        description: `slotlake pipeline ${pipeline.name}: its prefix, checkpoint item, secret and database user only`,
      });
      for (const statement of pipelineStatements(pipeline, refs))
        taskRole.addToPolicy(iam.PolicyStatement.fromJson(statement));

      const task = new ecs.FargateTaskDefinition(this, `${pipeline.id}Task`, {
        family: `${props.deploymentName}-${pipeline.name}`,
        cpu: pipeline.fargate.cpu,
        memoryLimitMiB: pipeline.fargate.memoryMiB,
        taskRole,
        runtimePlatform: {
          cpuArchitecture: ecs.CpuArchitecture.ARM64,
          operatingSystemFamily: ecs.OperatingSystemFamily.LINUX,
        },
        volumes: [{ name: 'spool' }],
      });
      const command =
        pipeline.fargate.mode === 'scheduled'
          ? ['node', 'bin/slotlake.js', 'run', '--max-duration', pipeline.fargate.maxDuration]
          : ['node', 'bin/slotlake.js', 'run'];
      const container = task.addContainer('slotlake', {
        image,
        command,
        essential: true,
        // The image runs as the unprivileged `node` user; this keeps it so whatever the image says.
        user: '1000:1000',
        readonlyRootFilesystem: true,
        // SIGTERM starts the drain (finish the batch, checkpoint, acknowledge); a second signal or this
        // timeout ends it. Keep SLOTLAKE_BATCH_MAX_AGE and the upload of a batch well inside it.
        stopTimeout: Duration.seconds(STOP_TIMEOUT_SECONDS),
        environment: {
          ...pipeline.environment,
          SLOTLAKE_BUCKET: this.bucket.bucketName,
          SLOTLAKE_CHECKPOINT_TABLE: this.table.tableName,
          SLOTLAKE_SPOOL_DIR: '/tmp/slotlake-spool',
          AWS_REGION: Aws.REGION,
        },
        logging: ecs.LogDrivers.awsLogs({ logGroup, streamPrefix: pipeline.name }),
      });
      // The spool (objects before upload) lives on the task's ephemeral storage; the root file system
      // stays read-only.
      container.addMountPoints({ containerPath: '/tmp', sourceVolume: 'spool', readOnly: false });

      new logs.MetricFilter(this, `${pipeline.id}FailedRunsFilter`, {
        logGroup,
        filterPattern: logs.FilterPattern.literal(FAILURE_LINE_PATTERN),
        metricNamespace: FAILED_RUNS_NAMESPACE,
        metricName: failedRunsMetricName(pipeline),
        metricValue: '1',
        defaultValue: 0,
      });

      if (pipeline.fargate.mode === 'scheduled') {
        task.grantRun(schedulerRole);
        new scheduler.CfnSchedule(this, `${pipeline.id}Schedule`, {
          name: `${props.deploymentName}-${pipeline.name}`,
          description: `slotlake pipeline ${pipeline.name}: one bounded run`,
          scheduleExpression: pipeline.schedule,
          state: pipeline.scheduleEnabled ? 'ENABLED' : 'DISABLED',
          flexibleTimeWindow: { mode: 'OFF' },
          target: {
            arn: cluster.clusterArn,
            roleArn: schedulerRole.roleArn,
            // A failed run is not retried: the next scheduled run resumes from the checkpoint.
            retryPolicy: { maximumRetryAttempts: 0, maximumEventAgeInSeconds: 300 },
            ecsParameters: {
              taskDefinitionArn: task.taskDefinitionArn,
              launchType: 'FARGATE',
              taskCount: 1,
              platformVersion: 'LATEST',
              networkConfiguration: {
                awsvpcConfiguration: {
                  subnets: network.subnetIds,
                  securityGroups: network.securityGroupIds,
                  assignPublicIp: 'DISABLED',
                },
              },
            },
          },
        });
      } else {
        new ecs.FargateService(this, `${pipeline.id}Service`, {
          serviceName: `${props.deploymentName}-${pipeline.name}`,
          cluster,
          taskDefinition: task,
          desiredCount: 1,
          // Never two consumers of one slot: a deployment stops the old task (which drains) first.
          minHealthyPercent: 0,
          maxHealthyPercent: 100,
          circuitBreaker: { rollback: true },
          assignPublicIp: false,
          vpcSubnets: {
            subnets: network.subnetIds.map((subnetId, i) =>
              ec2.Subnet.fromSubnetId(this, `${pipeline.id}Subnet${i}`, subnetId),
            ),
          },
          securityGroups: network.securityGroupIds.map((groupId, i) =>
            ec2.SecurityGroup.fromSecurityGroupId(this, `${pipeline.id}SecurityGroup${i}`, groupId),
          ),
        });
      }

      for (const alarm of pipelineAlarms(
        pipeline,
        { kind: 'fargate', mode: pipeline.fargate.mode },
        props.deploymentName,
        topic.topicArn,
      )) {
        new CfnResource(this, alarm.id, {
          type: 'AWS::CloudWatch::Alarm',
          properties: alarm.properties as Record<string, Cfn>,
        });
        alarmNames.push(alarm.properties.AlarmName as string);
      }
    }

    new CfnResource(this, 'Dashboard', {
      type: 'AWS::CloudWatch::Dashboard',
      properties: {
        DashboardName: props.deploymentName,
        DashboardBody: Fn.sub(
          dashboardBody(
            props.pipelines,
            (pipeline) => ({ platform: { kind: 'fargate', mode: pipeline.fargate.mode } }),
            alarmNames,
          ),
        ),
      },
    });
    new CfnOutput(this, 'ArchiveBucketName', { value: this.bucket.bucketName });
    new CfnOutput(this, 'CheckpointTableName', { value: this.table.tableName });
    new CfnOutput(this, 'AlarmTopicArn', { value: topic.topicArn });
    new CfnOutput(this, 'ClusterName', { value: cluster.clusterName });
  }
}

/**
 * A scheduled task's run must end before the next one starts (the lease would make the overlap safe,
 * but the second task would only find the pipeline busy): budget + start-up within the interval.
 */
function checkSchedule(pipeline: Pipeline): void {
  if (pipeline.fargate.mode !== 'scheduled') return;
  const interval = scheduleSeconds(pipeline.schedule) ?? pipeline.alarms.periodSeconds;
  const budget = parseDuration(pipeline.fargate.maxDuration) / 1000;
  if (budget + TASK_START_ALLOWANCE_SECONDS > interval)
    throw new Error(
      `pipeline ${pipeline.name}: fargate.maxDuration ${pipeline.fargate.maxDuration} plus ~${TASK_START_ALLOWANCE_SECONDS}s ` +
        `of task start-up does not fit the schedule interval (${interval}s): shorten it or schedule less often`,
    );
}
