/**
 * The batch writer and its spooled objects (contract §3 layout), against an in-memory archive.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { lsn, type Lsn } from '../../src/lsn.js';
import { SlotlakeError } from '../../src/errors.js';
import {
  BatchWriter,
  objectKey,
  type BatchWriterOptions,
  type ObjectWriter,
  type TableSchemaRef,
} from '../../src/sink/batch.js';
import { JSONL_FORMAT } from '../../src/sink/spool.js';
import { StoreSpeedMeter } from '../../src/sink/store-speed.js';
import { MemoryObjectStore, waitFor } from '../helpers/memory-object-store.js';

const C1 = lsn(0x100n);
const C2 = lsn(0x200n);
const C3 = lsn(0x1_0000_0300n);
const KEY_SHAPE =
  /^(?:[^/]+\/)*data\/[^/]+\.[^/]+\/dt=\d{4}-\d{2}-\d{2}\/[0-9A-F]{16}-[0-9A-F]{16}(-\d{10})?\.jsonl\.gz$/;

/** A row line that says where it came from. */
function line(table: string, commitLsn: Lsn, seq: number, padding = ''): string {
  return JSON.stringify({ table, commit: commitLsn.toString(16), seq, padding });
}

let spoolDir: string;
beforeEach(() => {
  spoolDir = mkdtempSync(join(tmpdir(), 'slotlake-batch-test-'));
});
afterEach(() => {
  rmSync(spoolDir, { recursive: true, force: true });
});

/** A batch writing to `archive`; intents are logged in the archive's event log as `intent <key>`. */
function writer(
  archive: MemoryObjectStore,
  objectMaxBytes = 1024 * 1024,
  extra: Partial<BatchWriterOptions<string>> = {},
) {
  return new BatchWriter<string>(
    {
      store: archive,
      format: JSONL_FORMAT,
      registerIntent: async (keys) => {
        for (const key of keys) archive.events.push(`intent ${key}`);
      },
      assertWritable: () => undefined,
      signal: new AbortController().signal,
      spoolDir,
      objectMaxBytes,
      speed: new StoreSpeedMeter(),
      ...extra,
    },
    0,
  );
}

/** One schema handle per table of schema `public` (one schema version each). */
const schemas = new Map<string, TableSchemaRef>();
function schemaOf(table: string, version = 0): TableSchemaRef {
  const id = `${table}#${version}`;
  let schema = schemas.get(id);
  if (!schema) {
    schema = {
      id: schemas.size + 1,
      table: { schema: 'public', table },
      description: { version },
      columns: [],
      types: new Map(),
    };
    schemas.set(id, schema);
  }
  return schema;
}

/** Writes one line of `public.<table>` (the old positional form of BatchWriter.write). */
function put(
  batch: BatchWriter<string>,
  table: string,
  dt: string,
  commitLsn: Lsn,
  seq: number,
  text: string,
  transactionContinues: boolean,
  version = 0,
): ObjectWriter<string> {
  return batch.write(
    { schema: schemaOf(table, version), dt, commitLsn, seq, transactionContinues },
    text,
    text.length + 1,
  );
}

/** Every uploaded key was recorded in the intent before its upload began. */
function assertIntentBeforeUpload(archive: MemoryObjectStore): void {
  archive.events.forEach((event, index) => {
    const match = /^upload(?:-failed)? (.*)$/.exec(event);
    if (!match) return;
    const intent = archive.events.indexOf(`intent ${match[1]}`);
    assert.ok(intent >= 0 && intent < index, `no intent before ${event}: ${archive.events.join(' | ')}`);
  });
}

function denied(message: string): SlotlakeError {
  return new SlotlakeError(message, { kind: 'access-denied' });
}

describe('objectKey', () => {
  const orders = { schema: 'public', table: 'orders' };

  it('is data/<schema>.<table>/dt=<date>/<16hex>-<16hex>.jsonl.gz', () => {
    assert.equal(
      objectKey(orders, '2025-11-25', lsn(0x16b37a0n), lsn((1n << 32n) | 0xabn), undefined, 'jsonl.gz'),
      'data/public.orders/dt=2025-11-25/00000000016B37A0-00000001000000AB.jsonl.gz',
    );
  });

  it('adds the 10-digit seq of the first row when the object starts mid-transaction', () => {
    assert.equal(
      objectKey(orders, '2025-11-25', lsn(0x16b37a0n), lsn(0x16b37a0n), 5, 'jsonl.gz'),
      'data/public.orders/dt=2025-11-25/00000000016B37A0-00000000016B37A0-0000000005.jsonl.gz',
    );
    assert.equal(
      objectKey(orders, '2025-11-25', lsn(0x16b37a0n), lsn(0x16b37a0n), 4_000_000_000, 'jsonl.gz'),
      'data/public.orders/dt=2025-11-25/00000000016B37A0-00000000016B37A0-4000000000.jsonl.gz',
    );
  });

  it('takes another extension', () => {
    assert.match(
      objectKey(orders, '2025-11-25', lsn(0x16b37a0n), lsn(0x16b37a0n), undefined, 'parquet'),
      /-00000000016B37A0\.parquet$/,
    );
  });

  it('escapes schema and table into one key segment each (contract §3)', () => {
    assert.equal(
      objectKey({ schema: 'My Schema', table: 'a/b' }, '2025-11-25', lsn(1n), lsn(2n), undefined, 'jsonl.gz'),
      'data/My%20Schema.a%2Fb/dt=2025-11-25/0000000000000001-0000000000000002.jsonl.gz',
    );
    assert.equal(
      objectKey({ schema: 'a.b', table: '..' }, '2025-11-25', lsn(1n), lsn(2n), undefined, 'jsonl.gz'),
      'data/a%2Eb.%2E%2E/dt=2025-11-25/0000000000000001-0000000000000002.jsonl.gz',
    );
  });

  it('sorts by LSN as text', () => {
    const keys = [lsn(0xfn), lsn(0x10n), lsn(1n << 40n), lsn(0xffn)].map((last) =>
      objectKey(orders, '2025-11-25', last, last, undefined, 'jsonl.gz'),
    );
    assert.deepEqual([...keys].sort(), [keys[0], keys[1], keys[3], keys[2]]);
  });
});

describe('StoreSpeedMeter', () => {
  it('starts from cautious priors: 150 ms a request, 5 MB/s, 100 ms a commit', () => {
    const meter = new StoreSpeedMeter();
    assert.equal(meter.requestMs, 150);
    assert.equal(meter.commitMs, 100);
    assert.equal(meter.uploadMs(0, 1e9, 4), 0);
    assert.equal(meter.uploadMs(1, 0, 4), 150);
    assert.equal(meter.uploadMs(1, 5_000_000, 4), 1_150);
    assert.equal(meter.uploadMs(4, 0, 4), 150);
    assert.equal(meter.uploadMs(5, 0, 4), 300);
    assert.equal(meter.uploadMs(5, 0, 1), 750);
  });

  it('small uploads measure latency, large ones throughput', () => {
    const meter = new StoreSpeedMeter();
    meter.recordUpload(1_000, 40);
    assert.equal(meter.requestMs, 40);
    meter.recordUpload(100_000, 60);
    assert.equal(meter.requestMs, 46); // 0.7·40 + 0.3·60
    meter.recordUpload(10 * 1024 * 1024, 1_046); // 10 MiB in 1 000 ms after latency: 10 485.76 B/ms
    assert.equal(meter.requestMs, 46);
    // 0.7·5 000 + 0.3·10 485.76 = 6 645.728 B/ms
    assert.equal(meter.uploadMs(1, 6_645_728, 1), 46 + 1_000);
  });

  it('starts from what an earlier run measured, and snapshots what it measured', () => {
    const meter = new StoreSpeedMeter({
      uploadBytesPerMs: 100,
      requestLatencyMs: 5_000,
      commitLatencyMs: 3_000,
    });
    assert.equal(meter.uploadMs(1, 1_000, 1), 5_000 + 10);
    assert.equal(meter.commitMs, 3_000);
    assert.deepEqual(meter.snapshot(), {
      uploadBytesPerMs: 100,
      requestLatencyMs: 5_000,
      commitLatencyMs: 3_000,
    });
  });

  it('a cancelled request raises the latency and lowers the throughput to what it proved', () => {
    const meter = new StoreSpeedMeter();
    meter.recordUnfinishedUpload(1_000, 8_000);
    assert.equal(meter.requestMs, 8_000);
    meter.recordUnfinishedUpload(10_000_000, 20_000); // at most 500 B/ms
    assert.equal(meter.uploadMs(1, 500, 1), 8_000 + 1);
    meter.recordUnfinishedCommit(4_000);
    assert.equal(meter.commitMs, 4_000);
  });

  it('a request without a body bounds the latency from below, and is no sample of its own', () => {
    const meter = new StoreSpeedMeter({
      uploadBytesPerMs: 5_000,
      requestLatencyMs: 300,
      commitLatencyMs: 100,
    });
    meter.recordRequestAtLeast(20);
    assert.equal(meter.requestMs, 300, 'a fast bucket check lowers nothing');
    meter.recordRequestAtLeast(4_000);
    assert.equal(meter.requestMs, 4_000);
    meter.recordUpload(1_000, 3_000);
    assert.equal(meter.requestMs, 3_000, 'the first upload of the run is its first sample');
  });

  it('more bytes take longer, more concurrency does not', () => {
    const meter = new StoreSpeedMeter();
    assert.ok(meter.uploadMs(3, 2_000_000, 4) > meter.uploadMs(3, 1_000_000, 4));
    assert.ok(meter.uploadMs(8, 1_000_000, 8) <= meter.uploadMs(8, 1_000_000, 2));
  });
});

describe('BatchWriter', () => {
  it('writes objects per table and date, sorted by key, with rows, LSN ranges and content', async () => {
    const archive = new MemoryObjectStore({ prefix: 'lake/' });
    const batch = writer(archive, 1024 * 1024);
    assert.equal(batch.isEmpty, true);
    const rows: [table: string, dt: string, commit: Lsn, seq: number][] = [
      ['a', '2025-11-24', C1, 0],
      ['b', '2025-11-24', C1, 1],
      ['a', '2025-11-24', C1, 2],
      ['a', '2025-11-24', C2, 0],
      ['a', '2025-11-25', C3, 0],
      ['b', '2025-11-25', C3, 1],
    ];
    let uncompressed = 0;
    for (const [table, dt, commit, seq] of rows) {
      const text = line(table, commit, seq);
      uncompressed += text.length + 1;
      const object = put(batch, table, dt, commit, seq, text, false);
      await batch.drain(object);
    }
    assert.equal(batch.isEmpty, false);
    assert.equal(batch.openObjects, 4);
    assert.equal(batch.rows, 6);
    assert.equal(batch.uncompressedBytes, uncompressed);
    assert.equal(batch.firstCommitLsn, C1);
    assert.equal(batch.lastCommitLsn, C3);
    assert.equal(batch.firstRowContinues, undefined);
    assert.ok(batch.estimateUploadMs() > 0);

    const objects = await batch.finish();
    assert.equal(batch.openObjects, 0);
    assert.deepEqual(
      objects.map((o) => [
        o.key,
        o.table.schema,
        o.table.table,
        o.dt,
        o.rows,
        o.firstCommitLsn,
        o.lastCommitLsn,
      ]),
      [
        [
          'lake/data/public.a/dt=2025-11-24/0000000000000100-0000000000000200.jsonl.gz',
          'public',
          'a',
          '2025-11-24',
          3,
          C1,
          C2,
        ],
        [
          'lake/data/public.a/dt=2025-11-25/0000000100000300-0000000100000300.jsonl.gz',
          'public',
          'a',
          '2025-11-25',
          1,
          C3,
          C3,
        ],
        [
          'lake/data/public.b/dt=2025-11-24/0000000000000100-0000000000000100.jsonl.gz',
          'public',
          'b',
          '2025-11-24',
          1,
          C1,
          C1,
        ],
        [
          'lake/data/public.b/dt=2025-11-25/0000000100000300-0000000100000300.jsonl.gz',
          'public',
          'b',
          '2025-11-25',
          1,
          C3,
          C3,
        ],
      ],
    );
    // Content: the lines written, in order, one per line.
    const expected = (table: string, dt: string) =>
      rows
        .filter((r) => r[0] === table && r[1] === dt)
        .map(([t, , commit, seq]) => `${line(t, commit, seq)}\n`)
        .join('');
    for (const object of objects) {
      const upload = archive.objects.get(object.key);
      assert.ok(upload, object.key);
      assert.equal(upload.content, expected(object.table.table, object.dt));
      assert.equal(upload.contentType, 'application/gzip');
      assert.equal(upload.bytes, upload.fileBytes, 'announced size is the file size');
      assert.equal(object.bytes, upload.fileBytes);
      assert.equal(object.uncompressedBytes, Buffer.byteLength(upload.content));
      assert.match(object.key.slice('lake/'.length), KEY_SHAPE);
    }
    assert.equal(archive.uploads.length, 4, 'each object uploaded once');
    assert.deepEqual(readdirSync(spoolDir), [], 'spool files removed');
    assertIntentBeforeUpload(archive);
    assert.deepEqual(
      [...batch.registeredKeys].sort(),
      objects.map((o) => o.key),
    );
  });

  it('finish() records its extra intent keys (the manifest) together with the objects, before uploading', async () => {
    const archive = new MemoryObjectStore();
    const batch = writer(archive);
    put(batch, 'a', '2025-11-24', C1, 0, line('a', C1, 0), false);
    await batch.finish(['manifests/x.json']);
    const key = 'data/public.a/dt=2025-11-24/0000000000000100-0000000000000100.jsonl.gz';
    assert.deepEqual(archive.events, [`intent ${key}`, 'intent manifests/x.json', `upload ${key}`]);
  });

  it('an empty batch finishes with no objects', async () => {
    const archive = new MemoryObjectStore();
    const batch = writer(archive);
    assert.equal(batch.estimateUploadMs(), 0);
    assert.deepEqual(await batch.finish(), []);
    assert.equal(archive.uploads.length, 0);
  });

  it('a transaction resumed from an earlier run marks its objects with the part suffix', async () => {
    const archive = new MemoryObjectStore();
    const batch = writer(archive);
    put(batch, 'a', '2025-11-24', C1, 7, line('a', C1, 7), true);
    put(batch, 'b', '2025-11-24', C1, 8, line('b', C1, 8), true);
    put(batch, 'a', '2025-11-24', C2, 0, line('a', C2, 0), false);
    assert.deepEqual(batch.firstRowContinues, { seq: 7 });
    const keys = (await batch.finish()).map((o) => o.key);
    assert.deepEqual(keys, [
      'data/public.a/dt=2025-11-24/0000000000000100-0000000000000200-0000000007.jsonl.gz',
      'data/public.b/dt=2025-11-24/0000000000000100-0000000000000100-0000000008.jsonl.gz',
    ]);
  });

  describe('schema changes', () => {
    it('a schema change inside a transaction closes the old object; the new one gets -<seq>, no overwrite', async () => {
      const archive = new MemoryObjectStore();
      const batch = writer(archive);
      put(batch, 'a', '2025-11-24', C1, 0, line('a', C1, 0), false, 0);
      put(batch, 'a', '2025-11-24', C1, 1, line('a', C1, 1), false, 0);
      // ALTER TABLE in the same transaction: a new Relation, a new schema handle (another TableName object)
      put(batch, 'a', '2025-11-24', C1, 2, line('a', C1, 2), false, 1);
      assert.equal(batch.openObjects, 1, 'the object of the old schema was closed');
      put(batch, 'a', '2025-11-24', C1, 3, line('a', C1, 3), false, 1);
      const objects = await batch.finish();
      const keys = archive.uploads.map((upload) => upload.key);
      assert.equal(
        new Set(keys).size,
        keys.length,
        `duplicate keys (an overwrite loses rows): ${keys.join(', ')}`,
      );
      const first = 'data/public.a/dt=2025-11-24/0000000000000100-0000000000000100.jsonl.gz';
      const second = 'data/public.a/dt=2025-11-24/0000000000000100-0000000000000100-0000000002.jsonl.gz';
      assert.deepEqual(
        objects.map((o) => [o.key, o.rows, o.schema]).sort(),
        [
          [first, 2, { version: 0 }],
          [second, 2, { version: 1 }],
        ].sort(),
      );
      assert.equal(archive.objects.get(first)?.content, `${line('a', C1, 0)}\n${line('a', C1, 1)}\n`);
      assert.equal(archive.objects.get(second)?.content, `${line('a', C1, 2)}\n${line('a', C1, 3)}\n`);
    });

    it('a schema change between transactions needs no suffix; other tables keep their objects', async () => {
      const archive = new MemoryObjectStore();
      const batch = writer(archive);
      put(batch, 'a', '2025-11-24', C1, 0, line('a', C1, 0), false, 0);
      put(batch, 'b', '2025-11-24', C1, 1, line('b', C1, 1), false, 0);
      put(batch, 'a', '2025-11-24', C2, 0, line('a', C2, 0), false, 1);
      put(batch, 'b', '2025-11-24', C2, 1, line('b', C2, 1), false, 0);
      assert.deepEqual(
        (await batch.finish()).map((o) => [o.key, o.rows]),
        [
          ['data/public.a/dt=2025-11-24/0000000000000100-0000000000000100.jsonl.gz', 1],
          ['data/public.a/dt=2025-11-24/0000000000000200-0000000000000200.jsonl.gz', 1],
          ['data/public.b/dt=2025-11-24/0000000000000100-0000000000000200.jsonl.gz', 2],
        ],
      );
    });
  });

  describe('size splits', () => {
    it('every object of a transaction split by size gets a unique key, with -<seq> after the first', async () => {
      // objectMaxBytes 0: every row closes its object, so one transaction of 4 rows makes 4 objects.
      const archive = new MemoryObjectStore();
      const batch = writer(archive, 0);
      for (let seq = 0; seq < 4; seq++) put(batch, 'a', '2025-11-24', C1, seq, line('a', C1, seq), false);
      const objects = await batch.finish();
      const keys = archive.uploads.map((u) => u.key);
      assert.equal(
        new Set(keys).size,
        keys.length,
        `duplicate keys (an overwrite loses rows): ${keys.join(', ')}`,
      );
      const expected = [
        'data/public.a/dt=2025-11-24/0000000000000100-0000000000000100.jsonl.gz',
        'data/public.a/dt=2025-11-24/0000000000000100-0000000000000100-0000000001.jsonl.gz',
        'data/public.a/dt=2025-11-24/0000000000000100-0000000000000100-0000000002.jsonl.gz',
        'data/public.a/dt=2025-11-24/0000000000000100-0000000000000100-0000000003.jsonl.gz',
      ];
      // finish() sorts by key ('-' sorts before '.', so the parts come before the unsuffixed first object).
      assert.deepEqual(
        objects.map((o) => o.key),
        [...expected].sort(),
      );
      assert.deepEqual(
        expected.map((key) => archive.objects.get(key)?.content),
        [0, 1, 2, 3].map((seq) => `${line('a', C1, seq)}\n`),
      );
      assert.deepEqual(
        objects.map((o) => o.rows),
        [1, 1, 1, 1],
      );
      assert.deepEqual(readdirSync(spoolDir), []);
    });

    it('a split at a transaction boundary needs no suffix', async () => {
      const archive = new MemoryObjectStore();
      const batch = writer(archive, 0);
      put(batch, 'a', '2025-11-24', C1, 0, line('a', C1, 0), false);
      put(batch, 'a', '2025-11-24', C2, 0, line('a', C2, 0), false);
      put(batch, 'b', '2025-11-24', C2, 1, line('b', C2, 1), false);
      assert.deepEqual(
        (await batch.finish()).map((o) => o.key),
        [
          'data/public.a/dt=2025-11-24/0000000000000100-0000000000000100.jsonl.gz',
          'data/public.a/dt=2025-11-24/0000000000000200-0000000000000200.jsonl.gz',
          'data/public.b/dt=2025-11-24/0000000000000200-0000000000000200.jsonl.gz',
        ],
      );
    });

    it('a split by compressed size mid-transaction: rows, ranges and keys', async () => {
      // Incompressible padding, so gzip writes output well before the object closes.
      const padding = randomBytes(96 * 1024).toString('base64');
      const archive = new MemoryObjectStore();
      const batch = writer(archive, 1);
      const first = put(batch, 'a', '2025-11-24', C1, 0, line('a', C1, 0, padding), false);
      await waitFor(() => first.compressedBytes > 0, 'gzip output on disk');
      // This row joins the full object, which then closes: [C1#0, C1#1].
      put(batch, 'a', '2025-11-24', C1, 1, line('a', C1, 1), false);
      assert.equal(batch.openObjects, 0);
      // The rest of C1 and then C2 go to a new object that starts mid-transaction: [C1#2, C2#0].
      put(batch, 'a', '2025-11-24', C1, 2, line('a', C1, 2), false);
      put(batch, 'a', '2025-11-24', C2, 0, line('a', C2, 0), false);
      const objects = await batch.finish();
      assert.deepEqual(
        objects.map((o) => [o.key, o.rows, o.firstCommitLsn, o.lastCommitLsn]),
        [
          ['data/public.a/dt=2025-11-24/0000000000000100-0000000000000100.jsonl.gz', 2, C1, C1],
          ['data/public.a/dt=2025-11-24/0000000000000100-0000000000000200-0000000002.jsonl.gz', 2, C1, C2],
        ],
      );
      assert.equal(
        archive.objects.get(objects[0]!.key)?.content,
        `${line('a', C1, 0, padding)}\n${line('a', C1, 1)}\n`,
      );
      assert.equal(
        archive.objects.get(objects[1]!.key)?.content,
        `${line('a', C1, 2)}\n${line('a', C2, 0)}\n`,
      );
      assert.deepEqual(readdirSync(spoolDir), []);
    });
  });

  describe('upload failures', () => {
    it('surface from finish(), after every upload settled, and spool files are removed', async () => {
      const archive = new MemoryObjectStore();
      const failure = denied('upload refused');
      archive.failUpload = (key) => (key.includes('public.b') ? failure : undefined);
      const batch = writer(archive);
      put(batch, 'a', '2025-11-24', C1, 0, line('a', C1, 0), false);
      put(batch, 'b', '2025-11-24', C1, 1, line('b', C1, 1), false);
      put(batch, 'c', '2025-11-24', C1, 2, line('c', C1, 2), false);
      await assert.rejects(batch.finish(), (error) => error === failure);
      assert.deepEqual(archive.uploads.map((u) => u.key).sort(), [
        'data/public.a/dt=2025-11-24/0000000000000100-0000000000000100.jsonl.gz',
        'data/public.c/dt=2025-11-24/0000000000000100-0000000000000100.jsonl.gz',
      ]);
      assert.deepEqual(readdirSync(spoolDir), []);
      assertIntentBeforeUpload(archive);
    });

    it('an unclassified upload error is classified, not retried, and keeps its cause', async () => {
      const archive = new MemoryObjectStore();
      const failure = new Error('disk on fire');
      archive.failUpload = () => failure;
      const batch = writer(archive);
      put(batch, 'a', '2025-11-24', C1, 0, line('a', C1, 0), false);
      await assert.rejects(batch.finish(), (error: unknown) => {
        assert.ok(error instanceof SlotlakeError);
        assert.equal(error.kind, 'internal');
        assert.equal(error.cause, failure);
        assert.match(error.message, /^uploading data\/public\.a\/.*: disk on fire$/);
        return true;
      });
      assert.equal(archive.events.filter((e) => e.startsWith('upload-failed')).length, 1);
    });

    it('a transient upload failure is retried', async () => {
      const archive = new MemoryObjectStore();
      let failures = 1;
      archive.failUpload = () =>
        failures-- > 0
          ? Object.assign(new Error('Please reduce your request rate'), {
              name: 'SlowDown',
              $metadata: { httpStatusCode: 503 },
            })
          : undefined;
      const batch = writer(archive);
      put(batch, 'a', '2025-11-24', C1, 0, line('a', C1, 0), false);
      const objects = await batch.finish();
      assert.equal(objects.length, 1);
      const key = objects[0]!.key;
      assert.deepEqual(archive.events, [`intent ${key}`, `upload-failed ${key}`, `upload ${key}`]);
      assert.equal(archive.objects.get(key)?.content, `${line('a', C1, 0)}\n`);
    });

    it('an upload queued for a slot never starts once the lease is fenced, even before the signal aborts', async () => {
      // The fence is checked on the lease's own clock right before each upload: an event loop that stalled
      // past the fence may not have run the timer that aborts the signal yet.
      const archive = new MemoryObjectStore();
      let writable = true;
      const started: string[] = [];
      let release!: () => void;
      const held = new Promise<void>((resolve) => (release = resolve));
      archive.beforeUpload = async (key) => {
        started.push(key);
        if (key.includes('public.a')) await held;
      };
      const batch = writer(archive, 1024 * 1024, {
        uploadConcurrency: 1,
        assertWritable: () => {
          if (!writable) throw new SlotlakeError('fenced', { kind: 'lease-lost' });
        },
      });
      put(batch, 'a', '2025-11-24', C1, 0, line('a', C1, 0), false);
      put(batch, 'b', '2025-11-24', C1, 1, line('b', C1, 1), false);
      const finishing = batch.finish();
      await waitFor(() => started.length === 1, "a's upload to start (b's waits for the slot)");
      writable = false;
      release();
      await assert.rejects(
        finishing,
        (error: unknown) => error instanceof SlotlakeError && error.kind === 'lease-lost',
      );
      assert.equal(started.length, 1, `only the upload begun before the fence: ${started.join(', ')}`);
      assert.ok(!archive.events.some((event) => event.startsWith('upload') && event.includes('public.b')));
    });

    it('a failure to record the intent stops the upload and leaves no spool file', async () => {
      const archive = new MemoryObjectStore();
      const failure = denied('dynamodb says no');
      const batch = writer(archive, 1024 * 1024, {
        registerIntent: async () => {
          throw failure;
        },
      });
      put(batch, 'a', '2025-11-24', C1, 0, line('a', C1, 0), false);
      await assert.rejects(batch.finish(), (error) => error === failure);
      assert.deepEqual(archive.events, []);
      assert.deepEqual(readdirSync(spoolDir), []);
    });

    it('a failure to record the intent of an object closed early surfaces from checkUploads()', async () => {
      const archive = new MemoryObjectStore();
      const failure = denied('dynamodb says no');
      const batch = writer(archive, 0, {
        registerIntent: async () => {
          throw failure;
        },
      });
      put(batch, 'a', '2025-11-24', C1, 0, line('a', C1, 0), false);
      await waitFor(() => {
        try {
          batch.checkUploads();
          return false;
        } catch {
          return true;
        }
      }, 'the intent failure');
      assert.throws(
        () => batch.checkUploads(),
        (error) => error === failure,
      );
      assert.deepEqual(archive.events, []);
      await waitFor(() => readdirSync(spoolDir).length === 0, 'the spool file to be removed');
    });

    it('a background upload failure surfaces from checkUploads() while the batch goes on', async () => {
      const archive = new MemoryObjectStore();
      const failure = denied('refused for good');
      archive.failUpload = () => failure;
      const batch = writer(archive, 0); // the first row's object closes and uploads at once
      put(batch, 'a', '2025-11-24', C1, 0, line('a', C1, 0), false);
      await waitFor(() => {
        try {
          batch.checkUploads();
          return false;
        } catch (error) {
          assert.equal(error, failure);
          return true;
        }
      }, 'the background upload to fail');
      assert.throws(
        () => batch.checkUploads(),
        (error) => error === failure,
      );
      await assert.rejects(batch.finish(), (error) => error === failure);
    });

    it('checkUploads() is quiet while uploads succeed', async () => {
      const archive = new MemoryObjectStore();
      const batch = writer(archive, 0);
      put(batch, 'a', '2025-11-24', C1, 0, line('a', C1, 0), false);
      await waitFor(() => archive.uploads.length === 1, 'the background upload');
      assert.doesNotThrow(() => batch.checkUploads());
      assert.equal((await batch.finish()).length, 1);
    });
  });

  it('discard() drops local files and uploads nothing more', async () => {
    const archive = new MemoryObjectStore();
    const batch = writer(archive);
    put(batch, 'a', '2025-11-24', C1, 0, line('a', C1, 0), false);
    put(batch, 'b', '2025-11-24', C1, 1, line('b', C1, 1), false);
    await waitFor(() => readdirSync(spoolDir).length === 2, 'the spool files to be created');
    await batch.discard();
    assert.deepEqual(readdirSync(spoolDir), []);
    assert.equal(archive.uploads.length, 0);
  });
});

describe('schema versions', () => {
  it('a new schema version of a table closes its object with the old schema; the next one gets the -<seq> part', async () => {
    const archive = new MemoryObjectStore();
    const batch = writer(archive);
    put(batch, 'a', '2025-11-24', C1, 0, line('a', C1, 0), false, 0);
    put(batch, 'a', '2025-11-24', C1, 1, line('a', C1, 1), false, 1);
    assert.equal(batch.openObjects, 1, 'the old version is closed (and uploading)');
    const objects = await batch.finish();
    assert.deepEqual(
      objects.map((o) => [o.key, o.rows, o.schema]),
      [
        [
          'data/public.a/dt=2025-11-24/0000000000000100-0000000000000100-0000000001.jsonl.gz',
          1,
          { version: 1 },
        ],
        ['data/public.a/dt=2025-11-24/0000000000000100-0000000000000100.jsonl.gz', 1, { version: 0 }],
      ],
    );
  });
});
