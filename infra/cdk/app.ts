/**
 * The CDK app of the Fargate deployment: one stack for the pipeline list, from context values
 * (`cdk.json`, or `-c name=value`):
 *
 *   npx aws-cdk@2 deploy -c stage=prod -c vpcId=vpc-0abc -c subnetIds=subnet-0a,subnet-0b \
 *     -c securityGroupIds=sg-0c -c imageRepository=slotlake -c imageTag=0.1.0
 *
 * `pipelines` (default infra/pipelines.yml) names the list. Synthesis is offline: no lookups.
 */
import { App } from 'aws-cdk-lib';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadPipelines } from '../pipelines.js';
import { FargateStack } from './fargate-stack.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

const app = new App();
const context = (name: string, fallback?: string): string => {
  const value = (app.node.tryGetContext(name) as string | undefined) ?? fallback;
  if (value === undefined || value === '') throw new Error(`missing context value ${name} (-c ${name}=...)`);
  return String(value);
};
const list = (name: string) =>
  context(name)
    .split(',')
    .map((item) => item.trim())
    .filter(Boolean);
const stage = context('stage', 'dev');

new FargateStack(app, `slotlake-fargate-${stage}`, {
  pipelines: loadPipelines(resolve(ROOT, context('pipelines', 'infra/pipelines.yml'))),
  deploymentName: `slotlake-${stage}`,
  imageRepository: context('imageRepository', 'slotlake'),
  imageTag: context('imageTag'),
  vpcId: context('vpcId'),
  subnetIds: list('subnetIds'),
  securityGroupIds: list('securityGroupIds'),
  description: 'slotlake on Fargate: scheduled tasks and services archiving PostgreSQL slots into S3',
});
app.synth();
