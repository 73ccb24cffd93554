/**
 * The pipeline list: defaults merged, settings derived (checkpoint key, prefix, secret ARN, IAM), and every
 * mistake reported with the pipeline it is in — above all a password in the list, and two pipelines that
 * would share a slot, a checkpoint key or a prefix.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { loadPipelines, pipelinesFrom, PipelineListError, scheduleSeconds } from '../../infra/pipelines.js';

const SECRET = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:slotlake/shop-AbCdEf';
const base = {
  name: 'shop',
  databaseSecret: SECRET,
  slot: 'shop',
  publication: 'shop',
  schedule: 'rate(5 minutes)',
};

function problems(document: unknown): string {
  try {
    pipelinesFrom(document);
  } catch (error) {
    assert.ok(error instanceof PipelineListError, String(error));
    return error.message;
  }
  assert.fail('accepted');
}

describe('the pipeline list', () => {
  it('derives each pipeline from its fields and the defaults', () => {
    const [shop, crm] = pipelinesFrom({
      defaults: {
        schedule: 'rate(10 minutes)',
        alarms: { lagBytes: '2GiB' },
        settings: { SLOTLAKE_LOG_LEVEL: 'WARN' },
      },
      pipelines: [
        { ...base, schedule: undefined, tables: ['public.orders'] },
        {
          ...base,
          name: 'crm-eu',
          slot: 'crm',
          schedule: 'rate(1 hour)',
          prefix: 'lake/crm/',
          alarms: { missedRuns: 5 },
          settings: { SLOTLAKE_BATCH_MAX_AGE: '30s', SLOTLAKE_IDLE_TIMEOUT: 0 },
        },
      ].map((p) => JSON.parse(JSON.stringify(p)) as Record<string, unknown>),
    });
    assert.ok(shop && crm);
    assert.equal(shop.schedule, 'rate(10 minutes)');
    assert.equal(shop.prefix, 'shop/');
    assert.equal(shop.alarms.lagBytes, 2 * 1024 ** 3);
    assert.equal(shop.alarms.periodSeconds, 600);
    assert.deepEqual(shop.environment, {
      SLOTLAKE_PIPELINE: 'shop',
      SLOTLAKE_SLOT: 'shop',
      SLOTLAKE_PUBLICATION: 'shop',
      SLOTLAKE_PREFIX: 'shop/',
      SLOTLAKE_TABLES: 'public.orders',
      SLOTLAKE_DATABASE_SECRET: SECRET,
      SLOTLAKE_IDLE_TIMEOUT: '60s',
      SLOTLAKE_LOG_LEVEL: 'WARN',
    });
    assert.equal(crm.id, 'CrmEu');
    assert.equal(crm.alarms.lagBytes, 2 * 1024 ** 3, 'alarms merge one level deep');
    assert.equal(crm.alarms.missedRuns, 5);
    assert.equal(crm.environment.SLOTLAKE_BATCH_MAX_AGE, '30s');
    assert.equal(crm.environment.SLOTLAKE_IDLE_TIMEOUT, '0');
    assert.equal(crm.environment.SLOTLAKE_LOG_LEVEL, 'WARN', 'default settings apply, merged with its own');
    assert.equal(crm.fargate.mode, 'scheduled');
  });

  it('refuses a password anywhere: a URL with one, or no secret and no IAM authentication', () => {
    const message = problems({
      pipelines: [
        {
          ...base,
          databaseSecret: undefined,
          databaseUrl: 'postgres://u:hunter2@db.example.com/shop',
          iamAuth: { resourceId: 'db-ABC', user: 'u' },
        },
      ].map((p) => JSON.parse(JSON.stringify(p)) as Record<string, unknown>),
    });
    assert.match(message, /pipeline shop: databaseUrl: a parseable URL without a password/);
    assert.ok(!message.includes('hunter2'));
    assert.match(problems({ pipelines: [{ ...base, databaseSecret: undefined }] }), /never holds a password/);
    assert.match(
      problems({ pipelines: [{ ...base, databaseSecret: 'arn:aws:secretsmanager:eu-west-1:1:secret:x' }] }),
      /full ARN of a Secrets Manager secret/,
    );
  });

  it("IAM authentication: the URL's user must be the IAM user", () => {
    const iam = {
      ...base,
      databaseSecret: undefined,
      databaseUrl: 'postgres://other@db.abc.eu-west-1.rds.amazonaws.com/shop',
      iamAuth: { resourceId: 'db-ABCDEF', user: 'slotlake_iam' },
    };
    assert.match(problems({ pipelines: [JSON.parse(JSON.stringify(iam))] }), /differs from iamAuth.user/);
    const [ok] = pipelinesFrom({
      pipelines: [
        JSON.parse(JSON.stringify({ ...iam, databaseUrl: iam.databaseUrl.replace('other', 'slotlake_iam') })),
      ],
    });
    assert.equal(ok?.environment.SLOTLAKE_DATABASE_IAM_AUTH, 'true');
    assert.equal(ok?.environment.SLOTLAKE_DATABASE_SECRET, undefined);
  });

  it('refuses pipelines that would share a name, a slot, or overlapping prefixes', () => {
    assert.match(problems({ pipelines: [base, base] }), /same name shop/);
    assert.match(problems({ pipelines: [base, { ...base, name: 'shop2' }] }), /same source and slot/);
    assert.match(
      problems({
        pipelines: [
          { ...base, prefix: 'a/' },
          { ...base, name: 'bb', slot: 'bb', prefix: 'a/b/' },
        ],
      }),
      /prefix a\/b\/ of bb lies inside the prefix a\/ of shop/,
    );
  });

  it('refuses settings the pipeline sets itself, unknown fields, bad schedules, cron without a period', () => {
    assert.match(
      problems({ pipelines: [{ ...base, settings: { SLOTLAKE_PREFIX: 'x/' } }] }),
      /SLOTLAKE_PREFIX is set from the pipeline's own fields/,
    );
    assert.match(problems({ pipelines: [{ ...base, slots: 'x' }] }), /pipeline shop: .*slots/);
    assert.match(problems({ pipelines: [{ ...base, schedule: 'every 5 minutes' }] }), /schedule: rate/);
    assert.match(
      problems({ pipelines: [{ ...base, schedule: 'cron(0 * * * ? *)' }] }),
      /alarms.periodSeconds/,
    );
    assert.match(problems({ pipelines: [] }), /pipelines/);
  });

  it('schedule intervals', () => {
    assert.equal(scheduleSeconds('rate(1 minute)'), 60);
    assert.equal(scheduleSeconds('rate(15 minutes)'), 900);
    assert.equal(scheduleSeconds('rate(2 hours)'), 7200);
    assert.equal(scheduleSeconds('rate(1 day)'), 86400);
    assert.equal(scheduleSeconds('cron(0 * * * ? *)'), undefined);
  });

  it('the shipped list and the test fixture are valid', () => {
    const root = fileURLToPath(new URL('../../', import.meta.url));
    assert.equal(loadPipelines(`${root}infra/pipelines.yml`).length, 1);
    assert.deepEqual(
      loadPipelines(`${root}test/fixtures/infra/pipelines.yml`).map((p) => p.name),
      ['shop', 'billing-eu', 'crm'],
    );
  });
});
