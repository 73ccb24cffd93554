/**
 * Least privilege per pipeline: the IAM statements a pipeline's function or task needs, and nothing of
 * another pipeline's.
 *
 * A run writes and deletes objects under its own prefix (uploads are single PUTs or multipart uploads,
 * aborted on failure), checks the bucket (HeadBucket, which IAM authorizes as s3:ListBucket), reads and
 * conditionally updates its own checkpoint item (the partition key is the pipeline name:
 * `dynamodb:LeadingKeys`), fetches its own database secret, and — with IAM authentication — connects as
 * its own database user. The statements are plain CloudFormation JSON; the caller supplies the ARNs of
 * the shared bucket and table and a `join` for its toolkit (serverless.yml or the CDK).
 *
 * One limit of IAM: HeadBucket carries no prefix, so s3:ListBucket cannot be limited to a prefix without
 * also denying HeadBucket. The grant allows listings of the pipeline's own prefix and requests without a
 * prefix (HeadBucket; an unprefixed listing would show other pipelines' key names, never their content).
 */
import type { Pipeline } from './pipelines.js';

/** A CloudFormation value: JSON with intrinsic functions (or CDK tokens, which are strings). */
export type Cfn = string | number | boolean | null | readonly Cfn[] | { readonly [key: string]: Cfn };

export interface Statement {
  readonly Sid: string;
  readonly Effect: 'Allow';
  readonly Action: readonly string[];
  readonly Resource: Cfn;
  readonly Condition?: Cfn;
}

/** The shared resources and pseudo parameters, in the caller's toolkit. */
export interface DeploymentRefs {
  readonly bucketArn: Cfn;
  readonly tableArn: Cfn;
  readonly partition: Cfn;
  readonly region: Cfn;
  readonly account: Cfn;
  /** Concatenation (Fn::Join with ''). */
  join(parts: readonly Cfn[]): Cfn;
}

/** The S3 actions of a run, on the pipeline's own keys. */
export const OBJECT_ACTIONS = ['s3:PutObject', 's3:DeleteObject', 's3:AbortMultipartUpload'] as const;
/** The DynamoDB actions of a run, on the pipeline's own checkpoint item. */
export const CHECKPOINT_ACTIONS = [
  'dynamodb:GetItem',
  'dynamodb:PutItem',
  'dynamodb:UpdateItem',
  'dynamodb:DeleteItem',
] as const;

/** The ARN of the database user a pipeline connects as with IAM authentication. */
export function rdsDbUserArn(pipeline: Pipeline, refs: DeploymentRefs): Cfn | undefined {
  if (!pipeline.iamAuth) return undefined;
  return refs.join([
    'arn:',
    refs.partition,
    ':rds-db:',
    refs.region,
    ':',
    refs.account,
    `:dbuser:${pipeline.iamAuth.resourceId}/${pipeline.iamAuth.user}`,
  ]);
}

export function pipelineStatements(pipeline: Pipeline, refs: DeploymentRefs): Statement[] {
  const statements: Statement[] = [
    {
      Sid: 'ArchiveObjects',
      Effect: 'Allow',
      Action: [...OBJECT_ACTIONS],
      Resource: refs.join([refs.bucketArn, `/${pipeline.prefix}*`]),
    },
    {
      Sid: 'ArchiveBucket',
      Effect: 'Allow',
      Action: ['s3:ListBucket'],
      Resource: refs.bucketArn,
      Condition: { StringLikeIfExists: { 's3:prefix': [pipeline.prefix, `${pipeline.prefix}*`] } },
    },
    {
      Sid: 'Checkpoint',
      Effect: 'Allow',
      Action: [...CHECKPOINT_ACTIONS],
      Resource: refs.tableArn,
      Condition: { 'ForAllValues:StringEquals': { 'dynamodb:LeadingKeys': [pipeline.name] } },
    },
  ];
  if (pipeline.databaseSecret)
    statements.push({
      Sid: 'DatabaseSecret',
      Effect: 'Allow',
      Action: ['secretsmanager:GetSecretValue'],
      Resource: pipeline.databaseSecret,
    });
  if (pipeline.databaseSecretKmsKey)
    statements.push({
      Sid: 'DatabaseSecretKey',
      Effect: 'Allow',
      Action: ['kms:Decrypt'],
      Resource: pipeline.databaseSecretKmsKey,
      Condition: {
        StringEquals: { 'kms:ViaService': refs.join(['secretsmanager.', refs.region, '.amazonaws.com']) },
      },
    });
  const dbUser = rdsDbUserArn(pipeline, refs);
  if (dbUser !== undefined)
    statements.push({
      Sid: 'DatabaseIamAuth',
      Effect: 'Allow',
      Action: ['rds-db:connect'],
      Resource: dbUser,
    });
  return statements;
}
