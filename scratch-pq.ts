import { startTestStack, createPipeline } from '/work/wt/pq-int/test/helpers/stack.js';
import { runCli } from '/work/wt/pq-int/test/helpers/cli.js';
import { listKeys } from '/work/wt/pq-int/test/helpers/lake.js';
import { testS3Client } from '/work/wt/pq-int/test/helpers/assertions.js';
import { DuckDBInstance } from '@duckdb/node-api';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { writeFileSync } from 'node:fs';
const stack = await startTestStack();
try {
  const p = await createPipeline(stack, `CREATE TABLE t (id int PRIMARY KEY, n numeric(10,2), ts timestamptz, tags text[], j jsonb, b bytea, big text);`, { SLOTLAKE_FORMAT: 'parquet' });
  let r = await runCli(['setup'], p.env); console.log('setup', r.code, r.stderr.slice(0, 300));
  await p.sql(`INSERT INTO t VALUES (1, 12.5, '2025-01-02 03:04:05.123456+00', '{a,b}', '{"x":1}', '\\x0102', repeat('z', 10))`);
  await p.sql(`UPDATE t SET n = 'NaN' WHERE id = 1`);
  await p.sql(`DELETE FROM t WHERE id = 1`);
  r = await runCli(['run', '--until-caught-up'], p.env); console.log('run', r.code, r.summary, r.stderr.slice(0, 1000));
  const s3 = testS3Client(stack);
  const keys = await listKeys(s3, `${p.name}/`);
  console.log(keys);
  const db = await (await DuckDBInstance.create(':memory:')).connect();
  for (const key of keys.filter((k) => k.endsWith('.parquet'))) {
    const o = await s3.send(new GetObjectCommand({ Bucket: 'slotlake-test', Key: key }));
    writeFileSync('/tmp/x.parquet', await o.Body!.transformToByteArray());
    const res = await db.runAndReadAll(`SELECT * FROM read_parquet('/tmp/x.parquet')`);
    console.log(JSON.stringify(res.getRowObjectsJson(), null, 1));
    const d = await db.runAndReadAll(`DESCRIBE SELECT * FROM read_parquet('/tmp/x.parquet')`);
    console.log(d.getRowObjectsJson().map((x) => `${x.column_name}:${x.column_type}`).join(' '));
  }
  const m = keys.find((k) => k.includes('manifests/'))!;
  const o = await s3.send(new GetObjectCommand({ Bucket: 'slotlake-test', Key: m }));
  console.log((await o.Body!.transformToString()).slice(0, 2500));
  await p.close();
} finally { await stack.stop(); }
