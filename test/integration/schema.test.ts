/**
 * `slotlake schema` against a real archive: after runs over a workload of inserts, updates (unchanged TOAST
 * values, REPLICA IDENTITY FULL), deletes, primary-key changes (also of a composite key and of a row whose
 * TOASTed value did not change), a truncate and re-inserts, the DuckDB views it prints — run over a local copy
 * of the archive — give a current state equal to the table in Postgres, row for row, for JSON Lines and for
 * Parquet objects. Values are compared as text computed on each side independently (Postgres' own casts,
 * DuckDB's own). The Athena statements printed for the same archive parse with the Hive grammar (DDL) and
 * the Trino grammar (views) of dt-sql-parser.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { HiveSQL, TrinoSQL } from 'dt-sql-parser';
import { assertExactlyOnce, setup, useTestStack } from '../helpers/assertions.js';
import { runCli } from '../helpers/cli.js';
import { duckLake, mirrorArchive, printSchema } from '../helpers/lake-sql.js';
import { createReferenceSlot } from '../helpers/reference.js';
import { createPipeline, type Pipeline } from '../helpers/stack.js';

const SCHEMA = `
  CREATE TABLE items (
    id bigint PRIMARY KEY, name text, qty int NOT NULL, price numeric(10,2), big text, tags text[],
    meta jsonb, at timestamptz, raw bytea);
  ALTER TABLE items ALTER COLUMN big SET STORAGE EXTERNAL;
  CREATE TABLE docs (id int PRIMARY KEY, body text, n int);
  ALTER TABLE docs REPLICA IDENTITY FULL;
  ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;
  CREATE TABLE pairs (a int, b text, v text, PRIMARY KEY (a, b));
  CREATE TABLE "Odd ""Name"".x" ("we""ird col" int PRIMARY KEY, "Val" text);
  CREATE TABLE log (msg text);
`;

/** Rounds of workload, one run after each. */
const ROUNDS = [
  `INSERT INTO items
     SELECT i, 'n' || i, i, (i * 1.25)::numeric(10,2), repeat(md5(i::text), 100), ARRAY['a' || i, NULL, 'x,y'],
            jsonb_build_object('i', i, 'k', 'v'), '2025-01-02 03:04:05.123456+00'::timestamptz + i * interval '1 hour',
            decode(md5(i::text), 'hex')
       FROM generate_series(1, 40) i;
   INSERT INTO docs SELECT i, repeat(md5((i * 7)::text), 100), i FROM generate_series(1, 10) i;
   INSERT INTO pairs SELECT i % 5, 'b' || i, 'v' || i FROM generate_series(1, 20) i;
   INSERT INTO "Odd ""Name"".x" VALUES (1, 'one'), (2, 'two');
   INSERT INTO log VALUES ('hello');`,
  `UPDATE items SET qty = qty + 100 WHERE id <= 10;
   UPDATE items SET id = id + 1000 WHERE id = 5;
   UPDATE items SET name = 'moved' WHERE id = 1005;
   UPDATE items SET big = repeat('z', 3000) WHERE id = 6;
   DELETE FROM items WHERE id IN (7, 8);
   INSERT INTO items (id, name, qty) VALUES (7, 'again', 1);
   UPDATE docs SET n = n + 1 WHERE id <= 5;
   UPDATE docs SET id = id + 100 WHERE id = 3;
   DELETE FROM docs WHERE id = 4;
   UPDATE pairs SET b = b || '!' WHERE a = 1;
   UPDATE "Odd ""Name"".x" SET "Val" = 'uno' WHERE "we""ird col" = 1;
   INSERT INTO log VALUES ('again');`,
  `TRUNCATE pairs;
   INSERT INTO pairs VALUES (9, 'z', 'after truncate'), (1, 'b1!', 'same key as before the truncate');
   UPDATE items SET qty = 0 WHERE id = 1005;
   BEGIN;
   UPDATE items SET id = 2000 WHERE id = 9;
   UPDATE items SET qty = -1 WHERE id = 2000;
   COMMIT;
   UPDATE items SET tags = ARRAY[]::text[], meta = NULL WHERE id = 11;
   DELETE FROM "Odd ""Name"".x" WHERE "we""ird col" = 2;`,
  `UPDATE items SET qty = 42 WHERE id IN (2, 12, 1005);
   INSERT INTO items (id, name, qty, big) VALUES (8, 'back', 8, repeat('q', 5000));
   UPDATE items SET qty = 43 WHERE id = 8;
   UPDATE items SET id = 3000 WHERE id = 13;
   UPDATE docs SET n = 0;`,
];

/** A table's rows as text, computed by Postgres and by DuckDB over the current-state view. */
interface Comparison {
  readonly table: string;
  readonly postgres: string;
  readonly duckdb: string;
  /** Columns holding JSON text (compared as parsed JSON). */
  readonly json?: readonly string[];
}

const COMPARISONS: readonly Comparison[] = [
  {
    table: 'items',
    postgres: `SELECT id::text AS id, name, qty::text AS qty, price::text AS price, md5(big) AS big,
                 to_json(tags)::text AS tags, meta::text AS meta,
                 (extract(epoch FROM at) * 1000000)::bigint::text AS at, encode(raw, 'hex') AS raw
               FROM items`,
    duckdb: `SELECT CAST(id AS VARCHAR) AS id, name, CAST(qty AS VARCHAR) AS qty, CAST(price AS VARCHAR) AS price,
               md5(big) AS big, CAST(to_json(tags) AS VARCHAR) AS tags, CAST(meta AS VARCHAR) AS meta,
               CAST(epoch_us("at") AS VARCHAR) AS "at", lower(hex(raw)) AS raw
             FROM "public"."items__current"`,
    json: ['tags', 'meta'],
  },
  {
    table: 'docs',
    postgres: 'SELECT id::text AS id, md5(body) AS body, n::text AS n FROM docs',
    duckdb: `SELECT CAST(id AS VARCHAR) AS id, md5(body) AS body, CAST(n AS VARCHAR) AS n FROM "public"."docs__current"`,
  },
  {
    table: 'pairs',
    postgres: 'SELECT a::text AS a, b, v FROM pairs',
    duckdb: `SELECT CAST(a AS VARCHAR) AS a, b, v FROM "public"."pairs__current"`,
  },
  {
    table: 'Odd "Name".x',
    postgres: `SELECT "we""ird col"::text AS k, "Val" AS v FROM "Odd ""Name"".x"`,
    duckdb: `SELECT CAST("we""ird col" AS VARCHAR) AS k, "Val" AS v FROM "public"."Odd ""Name"".x__current"`,
  },
];

function normalise(rows: ReadonlyArray<Record<string, unknown>>, json: readonly string[] = []): string[] {
  return rows
    .map((row) =>
      JSON.stringify(
        Object.entries(row).map(([name, value]) =>
          json.includes(name) && typeof value === 'string' ? JSON.stringify(JSON.parse(value)) : value,
        ),
      ),
    )
    .sort();
}

const stack = useTestStack();

async function archiveWorkload(format: 'jsonl' | 'parquet'): Promise<Pipeline> {
  const pipeline = await createPipeline(stack.stack, SCHEMA, { SLOTLAKE_FORMAT: format });
  await setup(pipeline);
  const reference = await createReferenceSlot(pipeline);
  for (const round of ROUNDS) {
    await pipeline.sql(round);
    const result = await runCli(['run', '--until-caught-up'], pipeline.env);
    assert.equal(result.code, 0, result.stderr);
  }
  await assertExactlyOnce(stack.s3, pipeline, reference, [
    'public.items',
    'public.docs',
    'public.pairs',
    'public.Odd "Name".x',
    'public.log',
  ]);
  return pipeline;
}

describe('slotlake schema', () => {
  for (const format of ['jsonl', 'parquet'] as const) {
    it(`DuckDB current-state views equal the tables in Postgres (${format})`, async () => {
      const pipeline = await archiveWorkload(format);
      const mirror = mkdtempSync(join(tmpdir(), 'slotlake-mirror-'));
      try {
        assert.ok((await mirrorArchive(stack.s3, `${pipeline.name}/`, mirror)) > 0);
        const description = JSON.parse(await printSchema(pipeline.env, ['--format', 'json'])) as {
          tables: Array<{
            schema: string;
            table: string;
            formats: string[];
            key: { columns: string[]; source: string } | null;
            notes: string[];
            duckdb: { changes: string; current: string | null };
          }>;
        };
        const byName = new Map(description.tables.map((table) => [table.table, table]));
        assert.deepEqual([...byName.keys()].sort(), ['Odd "Name".x', 'docs', 'items', 'log', 'pairs']);
        for (const table of description.tables) assert.deepEqual(table.formats, [format]);
        assert.deepEqual(byName.get('items')!.key, { columns: ['id'], source: 'replica identity' });
        assert.deepEqual(byName.get('docs')!.key, { columns: ['id'], source: 'primary key' });
        assert.deepEqual(byName.get('pairs')!.key, { columns: ['a', 'b'], source: 'replica identity' });
        assert.equal(byName.get('log')!.key, null);
        assert.equal(byName.get('log')!.duckdb.current, null);
        assert.match(byName.get('log')!.notes.join('\n'), /no current-state view/);

        const script = await printSchema(pipeline.env, ['--format', 'duckdb', '--location', mirror]);
        const lake = await duckLake(script);
        try {
          for (const comparison of COMPARISONS) {
            const expected = normalise((await pipeline.sql(comparison.postgres)).rows, comparison.json);
            const actual = normalise(await lake.rows(comparison.duckdb), comparison.json);
            assert.ok(expected.length > 0, `${comparison.table} has rows`);
            assert.deepEqual(actual, expected, `${comparison.table}: current state of the ${format} archive`);
          }
          // the change view holds every change of the table, each once, in the same columns for both formats
          const counts = await lake.rows(
            `SELECT _op, count(*) AS n, count(DISTINCT (_commit_lsn, _seq)) AS d FROM "public"."items__changes" GROUP BY _op ORDER BY _op`,
          );
          assert.deepEqual(counts, [
            { _op: 'c', n: '42', d: '42' },
            { _op: 'd', n: '2', d: '2' },
            { _op: 'u', n: '22', d: '22' },
          ]);
          const pairs = await lake.rows(
            `SELECT _op, count(*) AS n FROM "public"."pairs__changes" GROUP BY _op ORDER BY _op`,
          );
          assert.deepEqual(pairs, [
            { _op: 'c', n: '22' },
            { _op: 't', n: '1' },
            { _op: 'u', n: '4' },
          ]);
          const columns = await lake.rows(`DESCRIBE "public"."items__changes"`);
          assert.deepEqual(
            columns.map((column) => `${String(column.column_name)} ${String(column.column_type)}`),
            [
              'id BIGINT',
              'name VARCHAR',
              'qty INTEGER',
              'price DECIMAL(10,2)',
              'big VARCHAR',
              'tags VARCHAR[]',
              'meta JSON',
              'at TIMESTAMP WITH TIME ZONE',
              'raw BLOB',
              '_op VARCHAR',
              '_lsn BIGINT',
              '_commit_lsn BIGINT',
              '_seq BIGINT',
              '_tx_id BIGINT',
              '_commit_ts TIMESTAMP WITH TIME ZONE',
              '_before VARCHAR',
              '_unchanged_toast VARCHAR[]',
              '_unrepresentable VARCHAR',
              'dt DATE',
            ],
          );
        } finally {
          lake.close();
        }

        // Athena: the statements for this archive parse as Hive DDL and Trino views
        const athena = await printSchema(pipeline.env, ['--format', 'json']);
        const statements = (
          JSON.parse(athena) as { tables: Array<{ athena: { sql: string[] } }> }
        ).tables.flatMap((table) => table.athena.sql);
        assert.ok(statements.length >= 14);
        const hive = new HiveSQL();
        const trino = new TrinoSQL();
        for (const statement of statements) {
          const ddl = /CREATE EXTERNAL TABLE/.test(statement);
          const errors = (ddl ? hive : trino).validate(statement);
          assert.deepEqual(errors, [], `${ddl ? 'Hive' : 'Trino'} syntax of:\n${statement}`);
        }
      } finally {
        rmSync(mirror, { recursive: true, force: true });
        await pipeline.close();
      }
    });
  }
});
