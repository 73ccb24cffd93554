// Loaded by osls for `${file(./infra/serverless/pipelines.cjs):functions}` and `:resources` in
// serverless.yml: reads the pipeline list named by the `pipelines` parameter and returns the functions
// and resources of lambda.ts. TypeScript is loaded through tsx (a devDependency, like osls itself).
'use strict';
const path = require('node:path');
const { tsImport } = require('tsx/esm/api');

let deployment;

async function load(resolveVariable) {
  if (!deployment) {
    const root = path.resolve(__dirname, '..', '..');
    const number = async (name) => Number(await resolveVariable(`param:${name}`));
    const listPath = path.resolve(root, await resolveVariable('param:pipelines'));
    const { loadPipelines } = await tsImport('../pipelines.ts', __filename);
    const { lambdaDeployment } = await tsImport('./lambda.ts', __filename);
    deployment = lambdaDeployment(loadPipelines(listPath), {
      service: await resolveVariable('self:service'),
      stage: await resolveVariable('sls:stage'),
      timeout: await number('timeout'),
      memorySize: await number('memorySize'),
      ephemeralStorageSize: await number('ephemeralStorageSize'),
      maximumEventAge: await number('maximumEventAge'),
    });
  }
  return deployment;
}

module.exports = {
  functions: async ({ resolveVariable }) => (await load(resolveVariable)).functions,
  resources: async ({ resolveVariable }) => (await load(resolveVariable)).resources,
};
