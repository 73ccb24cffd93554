/**
 * Configuration: every SLOTLAKE_* variable validated before anything connects, all problems in one
 * `config` error, typos caught with a suggestion, secrets never printed.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  describeConfig,
  describeSettings,
  loadConfig,
  parseDuration,
  parseSize,
  redactUrl,
  SETTING_NAMES,
} from '../../src/config.js';
import { SlotlakeError } from '../../src/errors.js';

/** The two settings required by default. */
const STORAGE = { SLOTLAKE_BUCKET: 'my-lake', SLOTLAKE_CHECKPOINT_TABLE: 'slotlake-checkpoints' } as const;

function load(env: Record<string, string>, requireStorage = true) {
  return loadConfig({ ...STORAGE, ...env }, { requireStorage });
}

/** The config error loadConfig throws for `env`, checked to be one `config` SlotlakeError. */
function configError(env: Record<string, string>, requireStorage = true): SlotlakeError {
  try {
    loadConfig(env, { requireStorage });
  } catch (error) {
    assert.ok(error instanceof SlotlakeError, `not a SlotlakeError: ${String(error)}`);
    assert.equal(error.kind, 'config');
    assert.equal(error.retryable, false);
    assert.ok(error.hint && error.hint.length > 0);
    return error;
  }
  assert.fail(`loadConfig accepted ${JSON.stringify(env)}`);
}

function rejects(name: string, value: string): SlotlakeError {
  const error = configError({ ...STORAGE, [name]: value });
  assert.ok(error.message.includes(name), `${name}=${value}: ${error.message}`);
  return error;
}

describe('defaults', () => {
  it('fills every setting', () => {
    const config = loadConfig({ ...STORAGE });
    assert.deepEqual(config, {
      databaseUrl: undefined,
      slot: 'slotlake',
      publication: 'slotlake',
      plugin: 'pgoutput',
      pipeline: 'slotlake',
      bucket: 'my-lake',
      bucketName: 'my-lake',
      prefix: '',
      checkpointTable: 'slotlake-checkpoints',
      checkpointTableName: 'slotlake-checkpoints',
      format: 'jsonl',
      parquetCompression: 'zstd',
      batchMaxRows: 500_000,
      batchMaxBytes: 256 * 1024 ** 2,
      batchMaxAgeMs: 60_000,
      objectMaxBytes: 128 * 1024 ** 2,
      safetyMarginMs: 2_000,
      statusIntervalMs: 10_000,
      protocolVersion: 1,
      slotPositionPolicy: 'fail',
      onSourceChange: 'fail',
      snapshot: 'initial',
      snapshotChunkRows: 50_000,
      databaseSecretMaxAgeMs: 900_000,
      databaseIamAuth: false,
      tlsMode: 'auto',
      slotFailover: true,
      leaseDurationMs: 60_000,
      readBufferBytes: 8 * 1024 ** 2,
      reconnectAttempts: 3,
      debugStack: false,
      logLevel: 'INFO',
    });
    // settings without a default are absent, and read as undefined
    for (const unset of ['tables', 'idleTimeoutMs', 'spoolDir', 'killAt', 'testStopAfterChanges'] as const)
      assert.equal(config[unset], undefined);
  });

  it('treats an empty variable as unset', () => {
    const config = load({ SLOTLAKE_SLOT: '', SLOTLAKE_BATCH_MAX_AGE: '', SLOTLAKE_TABLES: '' });
    assert.equal(config.slot, 'slotlake');
    assert.equal(config.batchMaxAgeMs, 60_000);
    assert.equal(config.tables, undefined);
  });

  it('the pipeline defaults to the slot name', () => {
    assert.equal(load({ SLOTLAKE_SLOT: 'orders_slot' }).pipeline, 'orders_slot');
    assert.equal(load({ SLOTLAKE_SLOT: 'orders_slot', SLOTLAKE_PIPELINE: 'orders' }).pipeline, 'orders');
  });
});

describe('values are parsed', () => {
  it('reads each setting', () => {
    const config = load({
      DATABASE_URL: 'postgresql://app:secret@db.internal:5432/shop',
      SLOTLAKE_SLOT: 'shop_2024',
      SLOTLAKE_PUBLICATION: 'Shop_Pub',
      SLOTLAKE_TABLES: 'public.orders, sales."Line Items" ,',
      SLOTLAKE_PLUGIN: 'wal2json',
      SLOTLAKE_PREFIX: 'cdc/shop/',
      SLOTLAKE_BATCH_MAX_ROWS: '1000',
      SLOTLAKE_BATCH_MAX_BYTES: '64MiB',
      SLOTLAKE_BATCH_MAX_AGE: '1.5s',
      SLOTLAKE_OBJECT_MAX_BYTES: '100',
      SLOTLAKE_SAFETY_MARGIN: '500ms',
      SLOTLAKE_STATUS_INTERVAL: '5s',
      SLOTLAKE_IDLE_TIMEOUT: '5m',
      SLOTLAKE_PROTO_VERSION: '2',
      SLOTLAKE_SLOT_POSITION_POLICY: 'trust-slot',
      SLOTLAKE_LEASE_DURATION: '1h',
      SLOTLAKE_SPOOL_DIR: '/tmp/spool',
      SLOTLAKE_READ_BUFFER: '1MiB',
      SLOTLAKE_RECONNECT_ATTEMPTS: '0',
      SLOTLAKE_KILL_AT: 'after-manifest:2',
      SLOTLAKE_LOG_LEVEL: 'debug',
    });
    assert.equal(config.databaseUrl, 'postgresql://app:secret@db.internal:5432/shop');
    assert.equal(config.slot, 'shop_2024');
    assert.equal(config.publication, 'Shop_Pub');
    assert.deepEqual(config.tables, [
      { schema: 'public', table: 'orders' },
      { schema: 'sales', table: 'Line Items' },
    ]);
    assert.equal(config.plugin, 'wal2json');
    assert.equal(config.prefix, 'cdc/shop/');
    assert.equal(config.batchMaxRows, 1000);
    assert.equal(config.batchMaxBytes, 64 * 1024 * 1024);
    assert.equal(config.batchMaxAgeMs, 1500);
    assert.equal(config.objectMaxBytes, 100);
    assert.equal(config.safetyMarginMs, 500);
    assert.equal(config.statusIntervalMs, 5000);
    assert.equal(config.idleTimeoutMs, 300_000);
    assert.equal(config.protocolVersion, 2);
    assert.equal(config.slotPositionPolicy, 'trust-slot');
    assert.equal(config.leaseDurationMs, 3_600_000);
    assert.equal(config.spoolDir, '/tmp/spool');
    assert.equal(config.readBufferBytes, 1024 * 1024);
    assert.equal(config.reconnectAttempts, 0);
    assert.deepEqual(config.killAt, { point: 'after-manifest', occurrence: 2 });
    assert.equal(config.logLevel, 'DEBUG');
    assert.deepEqual(load({ SLOTLAKE_KILL_AT: 'after-ack' }).killAt, { point: 'after-ack', occurrence: 1 });
  });

  it('keeps the status interval at 100 ms or more', () => {
    assert.equal(load({ SLOTLAKE_STATUS_INTERVAL: '0' }).statusIntervalMs, 100);
  });
});

describe('bad values', () => {
  it('durations', () => {
    for (const bad of ['10', '-1s', '1 day', 's', '1e3ms', '5 minutes', '1.s']) {
      const error = rejects('SLOTLAKE_BATCH_MAX_AGE', bad);
      assert.match(error.message, /expected a duration/);
    }
    rejects('SLOTLAKE_IDLE_TIMEOUT', 'never');
    rejects('SLOTLAKE_SAFETY_MARGIN', '2 s s');
    rejects('SLOTLAKE_LEASE_DURATION', '60');
    rejects('SLOTLAKE_STATUS_INTERVAL', '10sec');
  });

  it('sizes', () => {
    for (const bad of ['1.5MB', '-1', 'MB', '64TB', '64 MB B', 'lots']) {
      const error = rejects('SLOTLAKE_OBJECT_MAX_BYTES', bad);
      assert.match(error.message, /expected a size/);
    }
    rejects('SLOTLAKE_BATCH_MAX_BYTES', '1.5GiB');
  });

  it('row counts must be whole and positive', () => {
    for (const bad of ['0', '-5', '1.5', '1e6', 'many']) rejects('SLOTLAKE_BATCH_MAX_ROWS', bad);
  });

  it('slot names follow Postgres: lower-case letters, digits and _, at most 63', () => {
    for (const good of ['slotlake', 'a', 'orders_2024', '_x', '9lives', 'a'.repeat(63)]) {
      assert.equal(load({ SLOTLAKE_SLOT: good }).slot, good);
    }
    for (const bad of ['Slotlake', 'my-slot', 'my slot', 'slot.name', 'slöt', 'a'.repeat(64), '"quoted"']) {
      rejects('SLOTLAKE_SLOT', bad);
    }
  });

  it('publication names are taken exactly as the catalog holds them (case, spaces, quotes, unicode)', () => {
    for (const good of [
      'slotlake',
      'OrdersPub',
      'my pub',
      'my-pub',
      '1pub',
      'a"b',
      "it's",
      'pübl 😀',
      'p'.repeat(63),
    ]) {
      assert.equal(load({ SLOTLAKE_PUBLICATION: good }).publication, good);
    }
    // Postgres names are at most 63 bytes (NAMEDATALEN - 1): longer ones would be silently truncated
    for (const bad of ['p'.repeat(64), 'ü'.repeat(32)]) rejects('SLOTLAKE_PUBLICATION', bad);
  });

  it('bucket names follow S3 rules', () => {
    for (const good of ['abc', 'my-lake', 'my.lake.2024', 'a'.repeat(63)]) {
      assert.equal(load({ SLOTLAKE_BUCKET: good }).bucket, good);
    }
    for (const bad of [
      'ab',
      'My-Lake',
      'my_lake',
      '-lake',
      'lake-',
      'a'.repeat(64),
      's3://my-lake',
      'my lake',
    ]) {
      rejects('SLOTLAKE_BUCKET', bad);
    }
  });

  it('the prefix is empty or ends with / (and does not start with /)', () => {
    assert.equal(load({ SLOTLAKE_PREFIX: 'a/' }).prefix, 'a/');
    assert.equal(load({ SLOTLAKE_PREFIX: 'a/b/c/' }).prefix, 'a/b/c/');
    for (const bad of ['archive', '/archive/', 'a/b']) rejects('SLOTLAKE_PREFIX', bad);
  });

  it('tables are schema.table, at least one', () => {
    for (const bad of ['orders', 'public.orders,items', 'a.b.c', ' , ', 'public."unterminated', 'public.""'])
      rejects('SLOTLAKE_TABLES', bad);
  });

  it('table names are read as SQL reads them: unquoted fold to lower case, quoted are exact', () => {
    assert.deepEqual(load({ SLOTLAKE_TABLES: 'Public.Orders' }).tables, [
      { schema: 'public', table: 'orders' },
    ]);
    assert.deepEqual(load({ SLOTLAKE_TABLES: '"My Schema"."a/b", "x""y".t😀, s."It\'s"' }).tables, [
      { schema: 'My Schema', table: 'a/b' },
      { schema: 'x"y', table: 't😀' },
      { schema: 's', table: "It's" },
    ]);
  });

  it('read buffer, reconnect attempts and kill points', () => {
    rejects('SLOTLAKE_READ_BUFFER', '16 megs');
    for (const bad of ['-1', '1.5', 'three']) rejects('SLOTLAKE_RECONNECT_ATTEMPTS', bad);
    for (const bad of ['somewhere', 'after-manifest:0', 'after-manifest:x', 'after-manifest:1.5']) {
      rejects('SLOTLAKE_KILL_AT', bad);
    }
  });

  it('enumerations', () => {
    rejects('SLOTLAKE_PLUGIN', 'test_decoding');
    rejects('SLOTLAKE_FORMAT', 'csv');
    rejects('SLOTLAKE_PROTO_VERSION', '5');
    rejects('SLOTLAKE_SLOT_POSITION_POLICY', 'ignore');
    rejects('SLOTLAKE_ON_SOURCE_CHANGE', 'ignore');
    rejects('SLOTLAKE_LOG_LEVEL', 'TRACE');
    rejects('SLOTLAKE_CHECKPOINT_TABLE', 'ab');
  });

  it('DATABASE_URL must be a postgres URL', () => {
    assert.equal(load({ DATABASE_URL: 'postgres://h/db' }).databaseUrl, 'postgres://h/db');
    assert.equal(load({ DATABASE_URL: '' }).databaseUrl, undefined);
    for (const bad of ['mysql://h/db', 'host=localhost dbname=x', 'http://h/db', 'postgres:/h/db']) {
      const error = configError({ ...STORAGE, DATABASE_URL: bad });
      assert.match(error.message, /DATABASE_URL must start with postgres:\/\/ or postgresql:\/\//);
    }
  });

  it('names the bad value but not other variables', () => {
    const error = rejects('SLOTLAKE_SLOT', 'Bad-Slot');
    assert.ok(error.message.includes('"Bad-Slot"'), error.message);
    assert.ok(!error.message.includes('SLOTLAKE_BUCKET'), error.message);
  });
});

describe('unknown variables', () => {
  it('an unknown SLOTLAKE_* variable is an error, with a suggestion for a near typo', () => {
    const cases: [typo: string, meant: string][] = [
      ['SLOTLAKE_BUKET', 'SLOTLAKE_BUCKET'],
      ['SLOTLAKE_SLOTS', 'SLOTLAKE_SLOT'],
      ['SLOTLAKE_PUBLICATON', 'SLOTLAKE_PUBLICATION'],
      ['SLOTLAKE_LOGLEVEL', 'SLOTLAKE_LOG_LEVEL'],
      ['SLOTLAKE_BATCH_MAX_AGES', 'SLOTLAKE_BATCH_MAX_AGE'],
      ['SLOTLAKE_BATCH_MAX_ROW', 'SLOTLAKE_BATCH_MAX_ROWS'],
      ['SLOTLAKE_IDLE_TIMOUT', 'SLOTLAKE_IDLE_TIMEOUT'],
    ];
    for (const [typo, meant] of cases) {
      const error = configError({ ...STORAGE, [typo]: '1' });
      assert.ok(
        error.message.includes(`unknown setting ${typo} (did you mean ${meant}?)`),
        `${typo}: ${error.message}`,
      );
    }
  });

  it('no suggestion when nothing is close', () => {
    const error = configError({ ...STORAGE, SLOTLAKE_COMPLETELY_DIFFERENT: 'x' });
    assert.ok(error.message.includes('unknown setting SLOTLAKE_COMPLETELY_DIFFERENT'), error.message);
    assert.ok(!error.message.includes('did you mean'), error.message);
  });

  it('other variables are not slotlake business', () => {
    assert.doesNotThrow(() =>
      load({ SLOTLAKEX: '1', MY_SLOTLAKE_THING: '1', PGHOST: 'db', AWS_REGION: 'x' }),
    );
  });

  it('every known name is accepted', () => {
    assert.ok(SETTING_NAMES.length >= 20);
    for (const name of SETTING_NAMES) {
      try {
        loadConfig({ [name]: '' }, { requireStorage: false });
      } catch (error) {
        assert.fail(`${name}: ${String(error)}`);
      }
    }
  });
});

describe('required settings and problem reporting', () => {
  it('bucket and checkpoint table are required by default', () => {
    const error = configError({});
    assert.match(error.message, /SLOTLAKE_BUCKET is required/);
    assert.match(error.message, /SLOTLAKE_CHECKPOINT_TABLE is required/);
    assert.match(
      configError({ SLOTLAKE_BUCKET: 'my-lake' }).message,
      /SLOTLAKE_CHECKPOINT_TABLE is required/,
    );
  });

  it('not required when the command does not need storage', () => {
    const config = loadConfig({}, { requireStorage: false });
    assert.equal(config.bucket, '');
    assert.equal(config.checkpointTable, '');
  });

  it('a bad required value is reported once, as bad, not as missing', () => {
    const error = configError({ SLOTLAKE_BUCKET: 'X', SLOTLAKE_CHECKPOINT_TABLE: 't' });
    assert.ok(!error.message.includes('is required'), error.message);
    assert.ok(error.message.includes('SLOTLAKE_BUCKET="X"'), error.message);
    assert.ok(error.message.includes('SLOTLAKE_CHECKPOINT_TABLE="t"'), error.message);
  });

  it('reports every problem in one error', () => {
    const error = configError({
      DATABASE_URL: 'mysql://h/db',
      SLOTLAKE_SLOT: 'Bad',
      SLOTLAKE_BATCH_MAX_AGE: 'soon',
      SLOTLAKE_OBJECT_MAX_BYTES: 'big',
      SLOTLAKE_PREFIX: 'noslash',
      SLOTLAKE_BUKET: 'x',
    });
    const expected = [
      'SLOTLAKE_SLOT=',
      'SLOTLAKE_BATCH_MAX_AGE=',
      'SLOTLAKE_OBJECT_MAX_BYTES=',
      'SLOTLAKE_PREFIX=',
      'unknown setting SLOTLAKE_BUKET',
      'SLOTLAKE_BUCKET is required',
      'SLOTLAKE_CHECKPOINT_TABLE is required',
      'DATABASE_URL must start',
    ];
    for (const part of expected) assert.ok(error.message.includes(part), `${part} missing: ${error.message}`);
    assert.match(error.message, /^invalid configuration: /);
  });
});

describe('secrets', () => {
  it('describeConfig hides the password and keeps the rest', () => {
    const config = load({ DATABASE_URL: 'postgres://app:s3cr%40t@db.internal:5432/shop?sslmode=require' });
    const described = describeConfig(config);
    const text = JSON.stringify(described);
    assert.ok(!text.includes('s3cr'), text);
    assert.equal(described.databaseUrl, 'postgres://app:***@db.internal:5432/shop?sslmode=require');
    assert.equal(described.slot, 'slotlake');
    assert.equal(described.bucket, 'my-lake');
    // The config itself is untouched.
    assert.equal(config.databaseUrl, 'postgres://app:s3cr%40t@db.internal:5432/shop?sslmode=require');
  });

  it('hides passwords in every form libpq accepts', () => {
    const cases: [url: string, redacted: string][] = [
      ['postgres://u:p@ss@host/db', 'postgres://u:***@host/db'],
      ['postgres://:secret@host/db', 'postgres://:***@host/db'],
      ['postgresql://u:pw@[::1]:5432/db', 'postgresql://u:***@[::1]:5432/db'],
      ['postgres://host/db?user=u&password=secret', 'postgres://host/db?user=u&password=***'],
      [
        'postgres://host/db?password=secret&sslmode=require',
        'postgres://host/db?password=***&sslmode=require',
      ],
    ];
    for (const [url, redacted] of cases) {
      assert.equal(redactUrl(url), redacted);
      const described = describeConfig(load({ DATABASE_URL: url }));
      assert.equal(described.databaseUrl, redacted);
      assert.ok(!JSON.stringify(described).match(/secret|ss@|pw@/), JSON.stringify(described));
    }
  });

  it('a URL without a password is unchanged', () => {
    assert.equal(redactUrl('postgresql://app@db/shop'), 'postgresql://app@db/shop');
    assert.equal(redactUrl('postgresql://db:5432/shop'), 'postgresql://db:5432/shop');
    assert.equal(describeConfig(load({})).databaseUrl, undefined);
  });
});

describe('parseDuration', () => {
  it('units', () => {
    assert.equal(parseDuration('0'), 0);
    assert.equal(parseDuration(' 0 '), 0);
    assert.equal(parseDuration('0ms'), 0);
    assert.equal(parseDuration('500ms'), 500);
    assert.equal(parseDuration('30s'), 30_000);
    assert.equal(parseDuration('5m'), 300_000);
    assert.equal(parseDuration('1h'), 3_600_000);
    assert.equal(parseDuration('1.5s'), 1_500);
    assert.equal(parseDuration('0.25m'), 15_000);
    assert.equal(parseDuration(' 2 s '), 2_000);
  });

  it('rejects numbers without a unit, signs, exponents and unknown units', () => {
    for (const bad of ['', ' ', '10', '-1s', '+1s', '1e3ms', '1d', '1S', '1.s', '.5s', 'ms', '1 h 2 m']) {
      assert.throws(() => parseDuration(bad), /expected a duration/, JSON.stringify(bad));
    }
  });
});

describe('parseSize', () => {
  it('units are 1024-based and case-insensitive', () => {
    assert.equal(parseSize('0'), 0);
    assert.equal(parseSize('1000'), 1000);
    assert.equal(parseSize('12B'), 12);
    assert.equal(parseSize('64KB'), 64 * 1024);
    assert.equal(parseSize('64KiB'), 64 * 1024);
    assert.equal(parseSize('64kib'), 64 * 1024);
    assert.equal(parseSize('64MiB'), 64 * 1024 ** 2);
    assert.equal(parseSize('64mb'), 64 * 1024 ** 2);
    assert.equal(parseSize('1GB'), 1024 ** 3);
    assert.equal(parseSize('2GiB'), 2 * 1024 ** 3);
    assert.equal(parseSize(' 5 MiB '), 5 * 1024 ** 2);
  });

  it('rejects fractions, signs and unknown units', () => {
    for (const bad of ['', 'MB', '1.5MB', '-1', '+1', '1TB', '1KIBB', '1 K', '1e6', 'ten']) {
      assert.throws(() => parseSize(bad), /expected a size/, JSON.stringify(bad));
    }
  });
});

describe('documentation', () => {
  it('every setting is in the README settings table, and the table names no setting that does not exist', async () => {
    const { readFileSync } = await import('node:fs');
    const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
    const documented = new Set([...readme.matchAll(/^\| `(SLOTLAKE_[A-Z0-9_]+)`/gm)].map((m) => m[1] ?? ''));
    const known = new Set<string>(describeSettings().map((setting) => setting.name));
    assert.deepEqual(
      [...known].filter((name) => !documented.has(name)),
      [],
      'settings missing from the README',
    );
    assert.deepEqual(
      [...documented].filter((name) => !known.has(name)),
      [],
      'README rows for unknown settings',
    );
    for (const setting of describeSettings()) assert.ok(setting.doc.length > 10, setting.name);
  });
});
