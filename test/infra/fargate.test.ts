/**
 * The Fargate stack (infra/cdk), synthesized offline for the three-pipeline test list and checked with
 * aws-cdk-lib/assertions: a scheduled task per scheduled pipeline (EventBridge Scheduler, no retries,
 * bounded run), an always-on service for the service pipeline (one task at a time, drain within the stop
 * timeout), a non-root read-only container, task roles scoped per pipeline, no secret value, the bucket
 * and table safety settings, failure metric filters, alarms and the dashboard.
 */
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { App } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { FargateStack, STOP_TIMEOUT_SECONDS } from '../../infra/cdk/fargate-stack.js';
import { loadPipelines, pipelinesFrom, type Pipeline } from '../../infra/pipelines.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SHOP_SECRET = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:slotlake/shop-AbCdEf';
const CRM_SECRET = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:slotlake/crm-XyZ123';

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
interface Resource {
  Type: string;
  Properties: Record<string, Json>;
  DeletionPolicy?: string;
}

function synth(pipelines: readonly Pipeline[]): Template {
  const app = new App();
  const stack = new FargateStack(app, 'slotlake-fargate-test', {
    pipelines,
    deploymentName: 'slotlake-test',
    imageRepository: 'slotlake',
    imageTag: '0.1.0',
    vpcId: 'vpc-0a1b2c3d4e5f60700',
    subnetIds: ['subnet-0a1b2c3d4e5f60701', 'subnet-0a1b2c3d4e5f60702'],
    securityGroupIds: ['sg-0a1b2c3d4e5f60703'],
    env: { account: '123456789012', region: 'eu-west-1' },
  });
  return Template.fromStack(stack);
}

describe('the Fargate stack', () => {
  let template: Template;
  let json: { Resources: Record<string, Resource> };
  const ofType = (type: string): [string, Resource][] =>
    Object.entries(json.Resources).filter(([, r]) => r.Type === type);
  const taskOf = (pipeline: string): Resource => {
    const found = ofType('AWS::ECS::TaskDefinition').find(
      ([, r]) => r.Properties.Family === `slotlake-test-${pipeline}`,
    );
    assert.ok(found, `a task definition for ${pipeline}`);
    return found[1];
  };
  const containerOf = (pipeline: string) =>
    (taskOf(pipeline).Properties.ContainerDefinitions as Record<string, Json>[])[0]!;
  /** The statements of every policy attached to a role. */
  const statementsOfRole = (roleArn: Json): Record<string, Json>[] => {
    const roleId = (roleArn as { 'Fn::GetAtt': [string, string] })['Fn::GetAtt'][0];
    return ofType('AWS::IAM::Policy')
      .filter(([, p]) => JSON.stringify(p.Properties.Roles).includes(`"${roleId}"`))
      .flatMap(([, p]) => (p.Properties.PolicyDocument as { Statement: Record<string, Json>[] }).Statement);
  };

  before(() => {
    template = synth(loadPipelines(`${ROOT}test/fixtures/infra/pipelines.yml`));
    json = template.toJSON() as { Resources: Record<string, Resource> };
  });

  it('starts a scheduled task per scheduled pipeline with EventBridge Scheduler, never retried', () => {
    template.resourceCountIs('AWS::Scheduler::Schedule', 2);
    template.hasResourceProperties('AWS::Scheduler::Schedule', {
      Name: 'slotlake-test-shop',
      ScheduleExpression: 'rate(5 minutes)',
      State: 'ENABLED',
      FlexibleTimeWindow: { Mode: 'OFF' },
      Target: Match.objectLike({
        RetryPolicy: Match.objectLike({ MaximumRetryAttempts: 0 }),
        EcsParameters: Match.objectLike({
          LaunchType: 'FARGATE',
          TaskCount: 1,
          NetworkConfiguration: {
            AwsvpcConfiguration: {
              Subnets: ['subnet-0a1b2c3d4e5f60701', 'subnet-0a1b2c3d4e5f60702'],
              SecurityGroups: ['sg-0a1b2c3d4e5f60703'],
              AssignPublicIp: 'DISABLED',
            },
          },
        }),
      }),
    });
    template.hasResourceProperties('AWS::Scheduler::Schedule', {
      Name: 'slotlake-test-crm',
      ScheduleExpression: 'cron(0 * * * ? *)',
      State: 'DISABLED',
    });
    assert.deepEqual(containerOf('shop').Command, ['node', 'bin/slotlake.js', 'run', '--max-duration', '4m']);
    // The scheduler may run exactly the pipelines' task definitions and pass their roles.
    const schedulerRole = ofType('AWS::IAM::Role').find(([id]) => id.startsWith('SchedulerRole'));
    assert.ok(schedulerRole);
    const statements = statementsOfRole({ 'Fn::GetAtt': [schedulerRole[0], 'Arn'] });
    const actions = statements.flatMap((s) => (Array.isArray(s.Action) ? s.Action : [s.Action]));
    assert.deepEqual([...new Set(actions)].sort(), ['ecs:RunTask', 'iam:PassRole']);
    assert.ok(statements.every((s) => s.Resource !== '*'));
  });

  it('runs the service pipeline as an always-on service: no deadline, one task at a time, drain on SIGTERM', () => {
    template.resourceCountIs('AWS::ECS::Service', 1);
    template.hasResourceProperties('AWS::ECS::Service', {
      ServiceName: 'slotlake-test-billing-eu',
      DesiredCount: 1,
      LaunchType: 'FARGATE',
      DeploymentConfiguration: Match.objectLike({ MaximumPercent: 100, MinimumHealthyPercent: 0 }),
      NetworkConfiguration: {
        AwsvpcConfiguration: {
          AssignPublicIp: 'DISABLED',
          Subnets: ['subnet-0a1b2c3d4e5f60711', 'subnet-0a1b2c3d4e5f60722'],
          SecurityGroups: ['sg-0a1b2c3d4e5f60733'],
        },
      },
    });
    const container = containerOf('billing-eu');
    assert.deepEqual(container.Command, ['node', 'bin/slotlake.js', 'run']);
    assert.equal(container.StopTimeout, STOP_TIMEOUT_SECONDS);
    assert.equal(STOP_TIMEOUT_SECONDS, 120, "Fargate's maximum");
  });

  it('runs a non-root, read-only container on arm64 with the spool on task storage', () => {
    for (const pipeline of ['shop', 'billing-eu', 'crm']) {
      const task = taskOf(pipeline).Properties;
      assert.deepEqual(task.RequiresCompatibilities, ['FARGATE']);
      assert.deepEqual(task.RuntimePlatform, { CpuArchitecture: 'ARM64', OperatingSystemFamily: 'LINUX' });
      const container = containerOf(pipeline);
      assert.equal(container.User, '1000:1000');
      assert.equal(container.ReadonlyRootFilesystem, true);
      assert.deepEqual(container.MountPoints, [
        { ContainerPath: '/tmp', ReadOnly: false, SourceVolume: 'spool' },
      ]);
      assert.equal(container.Secrets, undefined, 'no secret injected by ECS: fetched at run time');
      assert.equal((container.LogConfiguration as { LogDriver: string }).LogDriver, 'awslogs');
    }
  });

  it("passes each pipeline's settings; the secret by ARN only; no secret value anywhere", () => {
    const env = (pipeline: string) =>
      Object.fromEntries(
        (containerOf(pipeline).Environment as { Name: string; Value: Json }[]).map((e) => [e.Name, e.Value]),
      );
    const shop = env('shop');
    assert.equal(shop.SLOTLAKE_PIPELINE, 'shop');
    assert.equal(shop.SLOTLAKE_PREFIX, 'shop/');
    assert.equal(shop.SLOTLAKE_DATABASE_SECRET, SHOP_SECRET);
    assert.ok(JSON.stringify(shop.SLOTLAKE_BUCKET).includes('ArchiveBucket'));
    assert.ok(JSON.stringify(shop.SLOTLAKE_CHECKPOINT_TABLE).includes('CheckpointTable'));
    assert.equal(env('billing-eu').SLOTLAKE_DATABASE_IAM_AUTH, 'true');
    const text = JSON.stringify(json);
    assert.ok(!/postgres(ql)?:\/\/[^/@\s"]*:[^/@\s"]*@/.test(text), 'no URL with a password');
    assert.ok(!text.includes('SecretString'));
    template.resourceCountIs('AWS::SecretsManager::Secret', 0);
  });

  it("gives each task role exactly its pipeline's grants", () => {
    const grants = (pipeline: string) => {
      const statements = statementsOfRole(taskOf(pipeline).Properties.TaskRoleArn!);
      return Object.fromEntries(statements.map((s) => [s.Sid as string, s]));
    };
    const shop = grants('shop');
    assert.deepEqual(Object.keys(shop).sort(), [
      'ArchiveBucket',
      'ArchiveObjects',
      'Checkpoint',
      'DatabaseSecret',
    ]);
    assert.deepEqual(shop.ArchiveObjects!.Action, [
      's3:PutObject',
      's3:DeleteObject',
      's3:AbortMultipartUpload',
    ]);
    assert.match(JSON.stringify(shop.ArchiveObjects!.Resource), /"\/shop\/\*"/);
    assert.deepEqual(shop.ArchiveBucket!.Condition, {
      StringLikeIfExists: { 's3:prefix': ['shop/', 'shop/*'] },
    });
    assert.deepEqual(shop.Checkpoint!.Condition, {
      'ForAllValues:StringEquals': { 'dynamodb:LeadingKeys': ['shop'] },
    });
    assert.equal(shop.DatabaseSecret!.Resource, SHOP_SECRET);
    const billing = grants('billing-eu');
    assert.deepEqual(Object.keys(billing).sort(), [
      'ArchiveBucket',
      'ArchiveObjects',
      'Checkpoint',
      'DatabaseIamAuth',
    ]);
    assert.match(
      JSON.stringify(billing.DatabaseIamAuth!.Resource),
      /:dbuser:cluster-ABCDEFGHIJKLMNOPQRSTUVWXY\/slotlake_iam/,
    );
    const crm = grants('crm');
    assert.deepEqual(Object.keys(crm).sort(), [
      'ArchiveBucket',
      'ArchiveObjects',
      'Checkpoint',
      'DatabaseSecret',
      'DatabaseSecretKey',
    ]);
    assert.equal(crm.DatabaseSecret!.Resource, CRM_SECRET);
    for (const pipeline of ['shop', 'billing-eu', 'crm'])
      for (const statement of Object.values(grants(pipeline))) {
        assert.notEqual(statement.Resource, '*');
        assert.ok(!JSON.stringify(statement.Action).includes('*'));
      }
  });

  it('creates the bucket and table with their safety settings', () => {
    template.hasResource('AWS::S3::Bucket', {
      DeletionPolicy: 'Retain',
      Properties: Match.objectLike({
        BucketEncryption: {
          ServerSideEncryptionConfiguration: [{ ServerSideEncryptionByDefault: { SSEAlgorithm: 'AES256' } }],
        },
        PublicAccessBlockConfiguration: {
          BlockPublicAcls: true,
          BlockPublicPolicy: true,
          IgnorePublicAcls: true,
          RestrictPublicBuckets: true,
        },
        LifecycleConfiguration: {
          Rules: [
            Match.objectLike({
              AbortIncompleteMultipartUpload: { DaysAfterInitiation: 1 },
              Status: 'Enabled',
            }),
          ],
        },
      }),
    });
    template.hasResourceProperties('AWS::S3::BucketPolicy', {
      PolicyDocument: Match.objectLike({
        Statement: Match.arrayWith([
          Match.objectLike({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } }),
        ]),
      }),
    });
    template.hasResource('AWS::DynamoDB::Table', {
      DeletionPolicy: 'Retain',
      Properties: Match.objectLike({
        KeySchema: [{ AttributeName: 'pk', KeyType: 'HASH' }],
        BillingMode: 'PAY_PER_REQUEST',
        PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
        SSESpecification: { SSEEnabled: true },
      }),
    });
  });

  it('counts failed runs from the logs and alarms per pipeline; one dashboard', () => {
    template.resourceCountIs('AWS::Logs::MetricFilter', 3);
    template.hasResourceProperties('AWS::Logs::MetricFilter', {
      FilterPattern: '[prefix="slotlake:", ...]',
      MetricTransformations: [
        Match.objectLike({ MetricNamespace: 'slotlake/fargate', MetricName: 'FailedRuns-shop' }),
      ],
    });
    // Four alarms per scheduled pipeline; the service has no missed-run alarm (it publishes when it stops).
    template.resourceCountIs('AWS::CloudWatch::Alarm', 4 + 3 + 4);
    template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      AlarmName: 'slotlake-test-billing-eu-lag',
      Namespace: 'slotlake',
      MetricName: 'LagBytes',
      Dimensions: [
        { Name: 'service', Value: 'slotlake' },
        { Name: 'pipeline', Value: 'billing-eu' },
      ],
      Threshold: 512 * 1024 ** 2,
    });
    template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      AlarmName: 'slotlake-test-shop-failed-runs',
      Namespace: 'slotlake/fargate',
      MetricName: 'FailedRuns-shop',
    });
    template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      AlarmName: 'slotlake-test-crm-no-successful-run',
      MetricName: 'RunTime',
      TreatMissingData: 'breaching',
    });
    template.resourceCountIs('AWS::CloudWatch::Dashboard', 1);
  });

  it('refuses a scheduled run that cannot end before the next one starts', () => {
    const [tight] = pipelinesFrom({
      pipelines: [
        {
          name: 'tight',
          databaseSecret: SHOP_SECRET,
          slot: 'tight',
          publication: 'tight',
          schedule: 'rate(5 minutes)',
          fargate: { maxDuration: '5m' },
        },
      ],
    });
    assert.throws(() => synth([tight!]), /maxDuration 5m .* does not fit the schedule interval \(300s\)/);
  });
});
