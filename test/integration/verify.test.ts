/**
 * `slotlake verify` against real servers: a table of every contract type (arrays with quoting, NULLs, BC
 * dates, infinities, floats, bytea, json, enums, domains) and a keyless table archived by runs compare equal
 * (exit 0), with JSON Lines and Parquet objects; rows changed after the last run are reported in flight, not as
 * divergence; and an archive damaged on purpose — a value edited inside an object, an object a manifest names
 * deleted, an object duplicated into a manifest, an object nobody lists — is found, each named (exit 1).
 * wal2json on Debian's PostgreSQL 15 is checked the same way (where verify also finds the NaN and ±Infinity
 * values wal2json cannot carry).
 */
import assert from 'node:assert/strict';
import { gunzipSync, gzipSync } from 'node:zlib';
import { describe, test } from 'node:test';
import {
  CopyObjectCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { debianPostgresBinDir } from '../../src/devstack/postgres.js';
import { setup, useTestStack } from '../helpers/assertions.js';
import { runCli, type CliResult } from '../helpers/cli.js';
import { listKeys } from '../helpers/lake.js';
import { operatorLines } from '../helpers/runs.js';
import { BUCKET, createPipeline, startTestStack, type Pipeline, type TestStack } from '../helpers/stack.js';

const local = useTestStack();

const SCHEMA = `
CREATE TYPE mood AS ENUM ('ok', 'not ok', 'NULL');
CREATE DOMAIN small_ints AS int[];
CREATE TABLE typed (
  id bigint PRIMARY KEY, b bool, i2 int2, i4 int4, i8 int8, o oid, f4 float4, f8 float8, n numeric, n2 numeric(10,2),
  n40 numeric(40,5), t text, vc varchar(20), bp char(5), nm name, u uuid, j json, jb jsonb, by bytea, d date,
  tm time, ts timestamp, tz timestamptz, iv interval, m mood, ints int[], texts text[], nested int[][],
  boxes box[], stamps timestamptz[], blobs bytea[], moods mood[], dom small_ints, bounded int[], big text
);
ALTER TABLE typed ALTER COLUMN big SET STORAGE EXTERNAL;
CREATE TABLE bag (v text, n int);
ALTER TABLE bag REPLICA IDENTITY FULL;
`;

const ROWS = `
INSERT INTO typed VALUES
 (1, true, -32768, 2147483647, 9223372036854775807, 4294967295, 3.4028235e38, 1e20, 'NaN', 12.50,
  '123456789012345678901234567890.12345', E'quote '' back\\\\slash "dq" \\n newline ☃', 'varchar', 'ab', 'nm',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"k": [1, 2.50]}', '{"z": 1, "a": [true, null]}', '\\x00ff10',
  '2024-02-29', '23:59:59.999999', '2024-01-02 03:04:05.5', '2024-02-29 13:14:15.123456+02', '1 year 2 days 03:04:05',
  'not ok', '{1,NULL,-3}', ARRAY['a b', '', 'NULL', 'q"uote', 'back\\slash', E'tab\\there', 'c,d', '{x}', E'v\\u000btab', 'ünï'],
  '{{1,2},{3,4}}', ARRAY[box '((0,0),(1,1))', box '((2,2),(3,3))'], ARRAY['2020-01-01 00:00:00+00'::timestamptz, NULL],
  ARRAY['\\x01'::bytea, '\\x'::bytea], ARRAY['ok', 'NULL']::mood[], '{5,6}', '[0:1]={7,8}', NULL),
 (2, false, 0, 0, -9223372036854775808, 0, -0, -1e-5, '-0.0001', -0.01, '0.00000', '', NULL, NULL, NULL, NULL, NULL, NULL, '\\x',
  '0044-03-15 BC', '00:00:00', '0044-03-15 12:00:00 BC', 'infinity', NULL, 'ok', '{}', '{}', NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL),
 (3, NULL, NULL, NULL, NULL, NULL, 'Infinity', '-Infinity', '1e-30', NULL, NULL, 'x', NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  '12345-06-07', '24:00:00', '-infinity', '12345-01-01 00:00:00+00', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL),
 (4, true, 1, 1, 1, 1, 1.17549435e-38, 0.1, '1.5', 1, 1, 't', 'v', 'b', 'n', NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  '1999-12-31 23:59:60+00', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, repeat('toast', 5000));
INSERT INTO typed (id, t, f8, f4) SELECT g, 'row ' || g, g / 7.0, g / 3.0 FROM generate_series(10, 400) g;
UPDATE typed SET t = 'changed' WHERE id = 4;
UPDATE typed SET id = 1004 WHERE id = 4;
DELETE FROM typed WHERE id BETWEEN 20 AND 29;
INSERT INTO bag VALUES ('x', 1), ('x', 1), ('y', NULL);
DELETE FROM bag WHERE v = 'y';
`;

interface Report {
  table: string;
  rowsCompared: number;
  sourceRows: number;
  archiveRows: number;
  equal: number;
  differing: number;
  missing: number;
  extra: number;
  inFlight: number;
  snapshot: string;
  snapshotComplete: boolean;
  keys: Record<
    'differing' | 'missing' | 'extra' | 'inFlight',
    Array<{ key: string[] | null; object?: string }>
  >;
  problems: Array<{ kind: string; object?: string; objects?: string[] }>;
}

function reportsOf(result: CliResult): Map<string, Report> {
  const reports = new Map<string, Report>();
  for (const line of result.stdout.split('\n')) {
    if (line.trim() === '') continue;
    const report = JSON.parse(line) as Report;
    reports.set(report.table, report);
  }
  return reports;
}

async function verify(
  pipeline: Pipeline,
  args: string[] = [],
): Promise<{ result: CliResult; reports: Map<string, Report> }> {
  const result = await runCli(['verify', ...args], pipeline.env);
  assert.ok(result.code === 0 || result.code === 1, `verify failed: ${result.stderr}`);
  return { result, reports: reportsOf(result) };
}

function assertEqualReport(report: Report | undefined, rows: number): void {
  assert.ok(report, 'a report for the table');
  assert.equal(report.differing, 0, JSON.stringify(report));
  assert.equal(report.missing, 0, JSON.stringify(report));
  assert.equal(report.extra, 0, JSON.stringify(report));
  assert.deepEqual(report.problems, []);
  assert.equal(report.sourceRows, rows);
  assert.equal(report.archiveRows, rows);
  assert.equal(report.equal, rows);
}

async function getBytes(s3: S3Client, key: string): Promise<Buffer> {
  const object = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
  return Buffer.from(await object.Body!.transformToByteArray());
}

async function putBytes(s3: S3Client, key: string, body: Buffer | string): Promise<void> {
  await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: body }));
}

async function archiveAndRun(pipeline: Pipeline): Promise<void> {
  await setup(pipeline);
  await pipeline.sql(ROWS);
  const run = await runCli(['run', '--until-caught-up'], pipeline.env);
  assert.equal(run.code, 0, run.stderr);
  assert.equal(run.summary?.stopReason, 'caught-up');
}

async function typedObjects(s3: S3Client, pipeline: Pipeline): Promise<string[]> {
  return (await listKeys(s3, `${pipeline.name}/data/public.typed/`)).sort();
}

describe('verify', () => {
  test('JSON Lines: equal after runs; changes after the last run are in flight; damage is found and named', async () => {
    const { s3 } = local;
    const pipeline = await createPipeline(local.stack, SCHEMA, { SLOTLAKE_BATCH_MAX_ROWS: '100' });
    try {
      await archiveAndRun(pipeline);
      const clean = await verify(pipeline);
      assert.equal(clean.result.code, 0, clean.result.stdout + clean.result.stderr);
      assert.deepEqual([...clean.reports.keys()].sort(), ['public.bag', 'public.typed']);
      assertEqualReport(clean.reports.get('public.typed'), 4 + 391 - 10);
      assertEqualReport(clean.reports.get('public.bag'), 2);
      assert.equal(clean.reports.get('public.typed')!.snapshot, 'none');

      // in flight: changed after the last run, not archived yet
      await pipeline.sql(`UPDATE typed SET t = 'later' WHERE id IN (10, 11); DELETE FROM typed WHERE id = 12;
                          INSERT INTO typed (id) VALUES (5000); INSERT INTO bag VALUES ('z', 3)`);
      const moving = await verify(pipeline);
      assert.equal(moving.result.code, 0, moving.result.stdout + moving.result.stderr);
      const typed = moving.reports.get('public.typed')!;
      assert.equal(typed.inFlight, 4, JSON.stringify(typed));
      assert.equal(typed.differing + typed.missing + typed.extra, 0);
      assert.equal(moving.reports.get('public.bag')!.inFlight, 1);
      const caughtUp = await runCli(['run', '--until-caught-up'], pipeline.env);
      assert.equal(caughtUp.code, 0, caughtUp.stderr);
      const again = await verify(pipeline);
      assert.equal(again.result.code, 0, again.result.stdout);
      assert.equal(again.reports.get('public.typed')!.inFlight, 0);

      const objects = await typedObjects(s3, pipeline);
      assert.ok(objects.length >= 2, `several objects (${objects.length})`);

      // 1. a value edited inside an object: the row differs, named with the object that holds it
      const isInsert = (line: string) => line.includes('"op":"c"') && line.includes('"t":"row 3');
      let edited = '';
      let original: Buffer = Buffer.alloc(0);
      for (const key of objects) {
        original = await getBytes(s3, key);
        if (gunzipSync(original).toString('utf8').split('\n').some(isInsert)) {
          edited = key;
          break;
        }
      }
      assert.ok(edited, 'an object holding inserts to edit');
      const lines = gunzipSync(original).toString('utf8').split('\n');
      const target = lines.findIndex(isInsert);
      const editedId = (JSON.parse(lines[target]!) as { after: { id: number } }).after.id;
      lines[target] = lines[target]!.replace(/"t":"row \d+"/, '"t":"tampered"');
      await putBytes(s3, edited, gzipSync(lines.join('\n')));
      const afterEdit = await verify(pipeline);
      assert.equal(afterEdit.result.code, 1);
      assert.equal(operatorLines(afterEdit.result.stderr).length, 1, afterEdit.result.stderr);
      const editReport = afterEdit.reports.get('public.typed')!;
      assert.equal(editReport.differing, 1, JSON.stringify(editReport));
      assert.deepEqual(editReport.keys.differing, [{ key: [String(editedId)], object: edited }]);
      assert.equal(afterEdit.reports.get('public.bag')!.differing, 0);
      await putBytes(s3, edited, original);

      // 2. an object a manifest names, deleted: named, and its rows missing
      const deleted = objects[0]!;
      const deletedBytes = await getBytes(s3, deleted);
      await s3.send(new DeleteObjectCommand({ Bucket: BUCKET, Key: deleted }));
      const afterDelete = await verify(pipeline);
      assert.equal(afterDelete.result.code, 1);
      const deleteReport = afterDelete.reports.get('public.typed')!;
      assert.deepEqual(
        deleteReport.problems
          .filter((problem) => problem.kind === 'missing-object')
          .map((problem) => problem.object),
        [deleted],
      );
      assert.ok(deleteReport.missing > 0, JSON.stringify(deleteReport));
      await putBytes(s3, deleted, deletedBytes);

      // 3. an object copied under another key and added to a manifest: every change twice, both objects named
      const manifestKeys = await listKeys(s3, `${pipeline.name}/manifests/`);
      const manifestKey = manifestKeys[manifestKeys.length - 1]!;
      const manifestText = (await getBytes(s3, manifestKey)).toString('utf8');
      const manifest = JSON.parse(manifestText) as { objects: Array<{ key: string; table: string }> };
      const listedObject = manifest.objects.find((object) => object.table === 'typed')!;
      const copy = listedObject.key.replace(/\.jsonl\.gz$/, '-copy.jsonl.gz');
      await s3.send(
        new CopyObjectCommand({ Bucket: BUCKET, Key: copy, CopySource: `${BUCKET}/${listedObject.key}` }),
      );
      manifest.objects.push({ ...listedObject, key: copy });
      await putBytes(s3, manifestKey, JSON.stringify(manifest));
      const afterCopy = await verify(pipeline);
      assert.equal(afterCopy.result.code, 1);
      const copyReport = afterCopy.reports.get('public.typed')!;
      const duplicates = copyReport.problems.filter((problem) => problem.kind === 'duplicate-change');
      assert.ok(duplicates.length > 0, JSON.stringify(copyReport.problems));
      assert.deepEqual(duplicates[0]!.objects!.sort(), [listedObject.key, copy].sort());
      // replayed once: the table itself still compares equal
      assert.equal(copyReport.differing + copyReport.missing + copyReport.extra, 0);

      // 4. the same copy, listed by no manifest: an extra object
      await putBytes(s3, manifestKey, manifestText);
      const afterUnlisted = await verify(pipeline);
      assert.equal(afterUnlisted.result.code, 1);
      assert.deepEqual(afterUnlisted.reports.get('public.typed')!.problems, [
        { kind: 'unlisted-object', object: copy },
      ]);
      await s3.send(new DeleteObjectCommand({ Bucket: BUCKET, Key: copy }));
      const restored = await verify(pipeline, ['--table', 'public.typed']);
      assert.equal(restored.result.code, 0, restored.result.stdout);
      assert.deepEqual([...restored.reports.keys()], ['public.typed']);
    } finally {
      await pipeline.close();
    }
  });

  test('Parquet: equal after runs; a deleted object is named', async () => {
    const { s3 } = local;
    const pipeline = await createPipeline(local.stack, SCHEMA, {
      SLOTLAKE_FORMAT: 'parquet',
      SLOTLAKE_BATCH_MAX_ROWS: '100',
    });
    try {
      await archiveAndRun(pipeline);
      const clean = await verify(pipeline);
      assert.equal(clean.result.code, 0, clean.result.stdout + clean.result.stderr);
      assertEqualReport(clean.reports.get('public.typed'), 4 + 391 - 10);
      assertEqualReport(clean.reports.get('public.bag'), 2);
      const objects = await typedObjects(s3, pipeline);
      assert.ok(objects.every((key) => key.endsWith('.parquet')));
      await s3.send(new DeleteObjectCommand({ Bucket: BUCKET, Key: objects[0]! }));
      const damaged = await verify(pipeline);
      assert.equal(damaged.result.code, 1);
      const report = damaged.reports.get('public.typed')!;
      assert.deepEqual(
        report.problems
          .filter((problem) => problem.kind === 'missing-object')
          .map((problem) => problem.object),
        [objects[0]],
      );
    } finally {
      await pipeline.close();
    }
  });

  test('wal2json (PostgreSQL 15): equal after runs, in flight after, in both formats', async () => {
    const binDir = debianPostgresBinDir(15);
    assert.ok(binDir, 'PostgreSQL 15 is missing: apt-get install postgresql-15 postgresql-15-wal2json');
    const stack: TestStack = await startTestStack({ binDir });
    try {
      for (const format of ['jsonl', 'parquet']) {
        const pipeline = await createPipeline(stack, SCHEMA, {
          SLOTLAKE_PLUGIN: 'wal2json',
          SLOTLAKE_FORMAT: format,
          SLOTLAKE_BATCH_MAX_ROWS: '100',
        });
        try {
          await archiveAndRun(pipeline);
          // wal2json sends NaN and ±Infinity as JSON null (docs/wal2json.md): the archive really lost them,
          // and verify says so, naming the two rows that hold them
          const lossy = await verify(pipeline);
          assert.equal(lossy.result.code, 1, `${format}: ${lossy.result.stdout}${lossy.result.stderr}`);
          assert.deepEqual(
            lossy.reports.get('public.typed')!.keys.differing.map((entry) => entry.key),
            [['1'], ['3']],
          );
          await pipeline.sql(`UPDATE typed SET f4 = 1, f8 = 2, n = 3 WHERE id IN (1, 3)`);
          const run = await runCli(['run', '--until-caught-up'], pipeline.env);
          assert.equal(run.code, 0, run.stderr);
          const clean = await verify(pipeline);
          assert.equal(clean.result.code, 0, `${format}: ${clean.result.stdout}${clean.result.stderr}`);
          assertEqualReport(clean.reports.get('public.typed'), 4 + 391 - 10);
          assertEqualReport(clean.reports.get('public.bag'), 2);
          await pipeline.sql(`UPDATE typed SET t = 'later' WHERE id = 10`);
          const moving = await verify(pipeline);
          assert.equal(moving.result.code, 0, moving.result.stdout);
          assert.equal(moving.reports.get('public.typed')!.inFlight, 1);
        } finally {
          await pipeline.close();
        }
      }
    } finally {
      await stack.stop();
    }
  });
});
