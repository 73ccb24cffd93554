/**
 * Schema changes in the middle of the stream, under a concurrent writer: columns added (with and without a
 * default, and inside a transaction that changes the table before and after), dropped, renamed and retyped; a table renamed; a table dropped and re-created under the same name;
 * a table added to the publication; a new enum value; a new composite type — each between runs while the
 * writer keeps inserting and updating. Every run exits 0; the archive holds exactly the changes the server's
 * own test_decoding stream shows (nothing lost, nothing twice); every object of every manifest records the
 * schema it was written with, and holds exactly that schema's columns (a new Relation starts a new object);
 * and DuckDB reads all versions of a table as one relation through the views `slotlake schema` prints
 * (`union_by_name`): row counts match, columns added later are null in earlier rows, a dropped column is null
 * after the drop, a renamed column has its values under each name, a retyped column reads in a type that
 * holds both versions.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import pg from 'pg';
import { assertArchiveHolds, setup, useTestStack } from '../helpers/assertions.js';
import { runCli } from '../helpers/cli.js';
import { readLake } from '../helpers/lake.js';
import { duckLake, mirrorArchive, printSchema } from '../helpers/lake-sql.js';
import { createReferenceSlot, referenceChanges } from '../helpers/reference.js';
import { createPipeline, type Pipeline } from '../helpers/stack.js';

const SCHEMA = `
  CREATE TYPE mood AS ENUM ('calm', 'glad');
  CREATE TABLE t (id int PRIMARY KEY, w int NOT NULL DEFAULT 0, a int, b text, c text, m mood);
  CREATE TABLE r (id int PRIMARY KEY, v text);
  CREATE TABLE gone (id int PRIMARY KEY, old text);
  CREATE TABLE late (id int PRIMARY KEY, v text);
  CREATE TABLE x (id int PRIMARY KEY, v text);
  INSERT INTO late VALUES (1, 'before it was published');
`;

const TABLES = 'public.t,public.r,public.gone,public.x';

/**
 * Steps between runs: DDL, then writes that use the new shape. The writer goes on throughout; `await
 * writes(n)` waits until it has committed n more changes to `t` under the new shape.
 */
const STEPS: ReadonlyArray<{ readonly ddl: string; readonly after?: string }> = [
  {
    ddl: 'ALTER TABLE t ADD COLUMN d int',
    after:
      "UPDATE t SET d = id, a = id, b = 'b' || id, c = 'c' || id WHERE id % 3 = 0; INSERT INTO r VALUES (1, 'one'); INSERT INTO gone VALUES (1, 'old'); INSERT INTO x VALUES (1, 'x'), (2, 'x')",
  },
  {
    ddl: "ALTER TABLE t ADD COLUMN e text DEFAULT 'dflt'",
    after: "UPDATE t SET e = 'e' || id WHERE id % 4 = 0",
  },
  { ddl: 'ALTER TABLE t DROP COLUMN a' },
  { ddl: 'ALTER TABLE t RENAME COLUMN b TO b2', after: "UPDATE t SET b2 = 'renamed' WHERE id % 5 = 0" },
  { ddl: 'ALTER TABLE t ALTER COLUMN d TYPE bigint', after: 'UPDATE t SET d = 5000000000 WHERE id % 7 = 0' },
  {
    ddl: 'ALTER TABLE t ALTER COLUMN c TYPE int USING length(c)',
    after: 'UPDATE t SET c = 7 WHERE id % 2 = 0',
  },
  {
    ddl: 'ALTER TABLE r RENAME TO r2',
    after: "INSERT INTO r2 VALUES (100, 'after rename'); UPDATE r2 SET v = 'x'",
  },
  {
    ddl: 'DROP TABLE gone; CREATE TABLE gone (id bigint PRIMARY KEY, fresh text NOT NULL)',
    after: "ALTER PUBLICATION {publication} ADD TABLE gone; INSERT INTO gone VALUES (1, 'new'), (2, 'new')",
  },
  {
    ddl: 'ALTER PUBLICATION {publication} ADD TABLE late',
    after: "INSERT INTO late VALUES (2, 'published'); UPDATE late SET v = 'u'",
  },
  { ddl: "ALTER TYPE mood ADD VALUE 'ecstatic'", after: "UPDATE t SET m = 'ecstatic' WHERE id % 6 = 0" },
  {
    // DDL inside a transaction, between changes of the same table: two schemas in one transaction
    ddl:
      'BEGIN; UPDATE t SET w = w + 1000 WHERE id <= 5; ALTER TABLE t ADD COLUMN f int; ' +
      'UPDATE t SET f = id WHERE id <= 5; COMMIT',
  },
  {
    // the same on a table no other transaction of the batch touches: the transaction starts both objects
    ddl: "BEGIN; UPDATE x SET v = 'before'; ALTER TABLE x ADD COLUMN y int; UPDATE x SET y = id; COMMIT",
  },
  {
    ddl: 'CREATE TYPE pt AS (x int, y text); ALTER TABLE t ADD COLUMN p pt',
    after: "UPDATE t SET p = ROW(id, 'q,\"r') WHERE id % 3 = 1",
  },
];

/** Inserts and updates rows of `t` (columns id and w only, which no step changes) until stopped. */
class Writer {
  private readonly client: pg.Client;
  private stopped = false;
  private running: Promise<void> | undefined;
  committed = 0;
  private nextId = 1;
  failure: unknown;

  constructor(databaseUrl: string) {
    this.client = new pg.Client({ connectionString: databaseUrl });
  }

  async start(): Promise<void> {
    await this.client.connect();
    this.running = this.loop();
  }

  private async loop(): Promise<void> {
    try {
      for (let i = 0; i < 200_000 && !this.stopped; i++) {
        if (i % 3 === 2 && this.nextId > 1)
          await this.client.query('UPDATE t SET w = w + 1 WHERE id = $1', [1 + (i % (this.nextId - 1))]);
        else await this.client.query("INSERT INTO t (id, w, m) VALUES ($1, 0, 'calm')", [this.nextId++]);
        this.committed++;
        // A steady load, not a flood (a flood grows the archive with every second the runs take).
        await new Promise((resolve) => setTimeout(resolve, 2));
      }
    } catch (error) {
      this.failure = error;
    }
  }

  /** Resolves once `n` more changes were committed (bounded). */
  async writes(n: number): Promise<void> {
    const target = this.committed + n;
    for (let i = 0; i < 3000 && this.committed < target; i++) {
      if (this.failure) throw this.failure as Error;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    assert.ok(this.committed >= target, `the writer committed ${n} changes`);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.running;
    await this.client.end();
    if (this.failure) throw this.failure as Error;
  }
}

const stack = useTestStack();

interface ObjectEntry {
  key: string;
  schema: string;
  table: string;
  rows: number;
  tableSchema?: { replicaIdentity: string; columns: Array<{ name: string; typeName: string | null }> };
  parquet?: { schema: unknown[] };
}

/** WAL positions just before each step's DDL began and just after it committed, by the DDL's text. */
type DdlPositions = Map<string, { before: string; after: string }>;

async function insertPosition(pipeline: Pipeline): Promise<string> {
  return (await pipeline.sql('SELECT pg_current_wal_insert_lsn()::text AS lsn')).rows[0].lsn as string;
}

async function evolve(pipeline: Pipeline): Promise<{ lateFrom: string; positions: DdlPositions }> {
  const writer = new Writer(pipeline.databaseUrl);
  await writer.start();
  let lateFrom = '';
  const positions: DdlPositions = new Map();
  try {
    await writer.writes(30);
    for (const [index, step] of STEPS.entries()) {
      const publication = `"${pipeline.name}"`;
      const beforeDdl = await insertPosition(pipeline);
      await pipeline.sql(step.ddl.replaceAll('{publication}', publication));
      const afterDdl = await insertPosition(pipeline);
      positions.set(step.ddl, { before: beforeDdl, after: afterDdl });
      if (step.ddl.includes('ADD TABLE late')) lateFrom = afterDdl;
      if (step.after) await pipeline.sql(step.after.replaceAll('{publication}', publication));
      await writer.writes(10);
      // a run every other step, while the writer goes on
      if (index % 2 === 1 || index === STEPS.length - 1) {
        const result = await runCli(['run', '--until-caught-up'], pipeline.env);
        assert.equal(result.code, 0, result.stderr);
      }
    }
  } finally {
    await writer.stop();
  }
  const last = await runCli(['run', '--until-caught-up'], pipeline.env);
  assert.equal(last.code, 0, last.stderr);
  return { lateFrom, positions };
}

/** Compares two `X/X` LSNs. */
function lsnValue(text: string): bigint {
  const [high, low] = text.split('/');
  return (BigInt(`0x${high}`) << 32n) + BigInt(`0x${low}`);
}

describe('schema changes mid-stream', () => {
  for (const format of ['jsonl', 'parquet'] as const) {
    it(`archives every change across DDL, one schema per object, read as one table by DuckDB (${format})`, async () => {
      const pipeline = await createPipeline(stack.stack, SCHEMA, {
        SLOTLAKE_FORMAT: format,
        SLOTLAKE_TABLES: TABLES,
      });
      const mirror = mkdtempSync(join(tmpdir(), 'slotlake-mirror-'));
      try {
        await setup(pipeline);
        const reference = await createReferenceSlot(pipeline);
        const { lateFrom, positions } = await evolve(pipeline);
        const before = (ddl: string) => lsnValue(positions.get(ddl)!.before).toString();
        const after = (ddl: string) => lsnValue(positions.get(ddl)!.after).toString();

        // exactly once: the server's own stream, with `late` from the moment it was published
        const expected = [
          ...(await referenceChanges(
            pipeline,
            reference,
            new Set(['public.t', 'public.r', 'public.r2', 'public.gone', 'public.x']),
          )),
          ...(await referenceChanges(pipeline, reference, new Set(['public.late']))).filter(
            (change) => lsnValue(change.lsn) >= lsnValue(lateFrom),
          ),
        ];
        const lake = await assertArchiveHolds(stack.s3, `${pipeline.name}/`, expected).catch(
          async (error: unknown) => {
            // say which objects hold the changes that do not match (a duplicate, or a change outside the stream)
            const all = await readLake(stack.s3, `${pipeline.name}/`);
            const held = all.records.map(({ key, record }) => `${record.source.lsn} ${record.op} ${key}`);
            throw new Error(
              `${(error as Error).message}\nlate published from ${lateFrom}\n${held.filter((line) => line.includes('late')).join('\n')}`,
              { cause: error },
            );
          },
        );
        assert.ok(expected.some((change) => change.table === 'public.late'));

        // every object records its schema, and holds exactly that schema's columns
        const objects = lake.manifests.flatMap((manifest) => manifest.objects as unknown as ObjectEntry[]);
        const schemaOf = new Map(objects.map((object) => [object.key, object.tableSchema]));
        for (const object of objects) {
          assert.ok(
            object.tableSchema && object.tableSchema.columns.length > 0,
            `${object.key} records its schema`,
          );
          if (format === 'parquet')
            assert.ok(Array.isArray(object.parquet?.schema), `${object.key}: Parquet schema`);
        }
        for (const { key, record } of lake.records) {
          const names = new Set(schemaOf.get(key)!.columns.map((column) => column.name));
          const held = Object.keys(record.after ?? record.before ?? {});
          if (format === 'parquet')
            assert.deepEqual(new Set(held), names, `${key}: the object's columns are its schema's`);
          else
            for (const name of held) assert.ok(names.has(name), `${key}: ${name} is in the object's schema`);
        }
        // a new schema version starts new objects: t went through every version, each in objects of its own
        const versionsOfT = new Set(
          objects
            .filter((object) => object.table === 't')
            .map((object) => JSON.stringify(object.tableSchema)),
        );
        assert.ok(versionsOfT.size >= 9, `t has a schema per DDL (${versionsOfT.size})`);
        const columnsOfT = [...versionsOfT].map((text) =>
          (JSON.parse(text) as ObjectEntry['tableSchema'])!.columns.map((column) => column.name).join(','),
        );
        assert.ok(columnsOfT.includes('id,w,a,b,c,m'));
        assert.ok(columnsOfT.includes('id,w,b2,c,m,d,e,f,p'));
        const gone = objects
          .filter((object) => object.table === 'gone')
          .map((object) => object.tableSchema!.columns);
        assert.deepEqual(
          gone[0]!.map((column) => column.typeName),
          ['integer', 'text'],
        );
        assert.deepEqual(
          gone[gone.length - 1]!.map((column) => [column.name, column.typeName]),
          [
            ['id', 'bigint'],
            ['fresh', 'text'],
          ],
        );

        // DuckDB reads every version of each table through the printed views
        await mirrorArchive(stack.s3, `${pipeline.name}/`, mirror);
        const script = await printSchema(pipeline.env, ['--format', 'duckdb', '--location', mirror]);
        assert.match(
          script,
          /-- note: c: type changed \(varchar, integer\): no type holds every version exactly, read as text/,
        );
        assert.match(script, /-- note: d: type changed \(integer, bigint\): read as bigint/);
        const duck = await duckLake(script);
        try {
          const count = async (sql: string) => Number((await duck.rows(sql))[0]!.n);
          for (const table of ['t', 'r', 'r2', 'gone', 'late']) {
            const archived = lake.records.filter(({ record }) => record.source.table === table).length;
            assert.equal(
              await count(`SELECT count(*) AS n FROM "public"."${table}__changes"`),
              archived,
              table,
            );
          }
          // columns added later are null in the changes before they existed (and those changes exist)
          for (const [column, ddl] of [
            ['d', 'ALTER TABLE t ADD COLUMN d int'],
            ['e', "ALTER TABLE t ADD COLUMN e text DEFAULT 'dflt'"],
            ['b2', 'ALTER TABLE t RENAME COLUMN b TO b2'],
            ['p', 'CREATE TYPE pt AS (x int, y text); ALTER TABLE t ADD COLUMN p pt'],
          ] as const) {
            const earlier = `FROM "public"."t__changes" WHERE _commit_lsn < ${before(ddl)}`;
            assert.ok(
              (await count(`SELECT count(*) AS n ${earlier}`)) > 0,
              `changes before ${column} existed`,
            );
            assert.equal(
              await count(`SELECT count(*) AS n ${earlier} AND "${column}" IS NOT NULL`),
              0,
              column,
            );
            assert.ok(
              (await count(`SELECT count(*) AS n FROM "public"."t__changes" WHERE "${column}" IS NOT NULL`)) >
                0,
            );
          }
          assert.ok(
            (await count(`SELECT count(*) AS n FROM "public"."t__changes" WHERE e = 'dflt'`)) > 0,
            'default in new rows',
          );
          // the dropped column: values before the drop, none after
          const dropped = after('ALTER TABLE t DROP COLUMN a');
          assert.ok((await count(`SELECT count(*) AS n FROM "public"."t__changes" WHERE a IS NOT NULL`)) > 0);
          assert.equal(
            await count(
              `SELECT count(*) AS n FROM "public"."t__changes" WHERE a IS NOT NULL AND _commit_lsn > ${dropped}`,
            ),
            0,
          );
          // the renamed column has its values under both names
          assert.ok((await count(`SELECT count(*) AS n FROM "public"."t__changes" WHERE b LIKE 'b%'`)) > 0);
          assert.ok(
            (await count(`SELECT count(*) AS n FROM "public"."t__changes" WHERE b2 = 'renamed'`)) > 0,
          );
          // retyped: d int → bigint holds 5e9; c text → int read as text, both versions' values
          assert.ok(
            (await count(`SELECT count(*) AS n FROM "public"."t__changes" WHERE d = 5000000000`)) > 0,
          );
          assert.ok((await count(`SELECT count(*) AS n FROM "public"."t__changes" WHERE c = '7'`)) > 0);
          assert.ok((await count(`SELECT count(*) AS n FROM "public"."t__changes" WHERE c LIKE 'c%'`)) > 0);
          const types = new Map(
            (await duck.rows(`DESCRIBE "public"."t__changes"`)).map((row) => [
              row.column_name,
              row.column_type,
            ]),
          );
          assert.equal(types.get('d'), 'BIGINT');
          assert.equal(types.get('c'), 'VARCHAR');
          assert.equal(types.get('m'), 'VARCHAR');
          // the new enum value and the new composite type, as Postgres prints them
          assert.ok(
            (await count(`SELECT count(*) AS n FROM "public"."t__changes" WHERE m = 'ecstatic'`)) > 0,
          );
          assert.ok(
            (await count(`SELECT count(*) AS n FROM "public"."t__changes" WHERE p LIKE '(%,"q,""r")'`)) > 0,
          );
          // the current state of t (written through every version) equals the table — in the columns whose
          // values changes carry: a table rewrite (c's USING) and a new column's default on existing rows are
          // not changes, so rows untouched since keep their archived values
          const expectedRows = (
            await pipeline.sql('SELECT id::text AS id, w::text AS w, b2, d::text AS d FROM t')
          ).rows;
          const actualRows = await duck.rows(
            `SELECT CAST(id AS VARCHAR) AS id, CAST(w AS VARCHAR) AS w, b2, CAST(d AS VARCHAR) AS d FROM "public"."t__current"`,
          );
          const sorted = (rows: ReadonlyArray<Record<string, unknown>>) =>
            rows.map((row) => JSON.stringify(Object.values(row))).sort();
          assert.deepEqual(sorted(actualRows), sorted(expectedRows));
          // the table renamed: its changes continue under the new name's prefix
          assert.deepEqual(await duck.rows(`SELECT id, v FROM "public"."r2__current" ORDER BY id`), [
            { id: 1, v: 'x' },
            { id: 100, v: 'x' },
          ]);
          // both schemas of the transaction that altered x mid-way: every change, in its own object
          assert.deepEqual(await duck.rows(`SELECT id, v, y FROM "public"."x__current" ORDER BY id`), [
            { id: 1, v: 'before', y: 1 },
            { id: 2, v: 'before', y: 2 },
          ]);
        } finally {
          duck.close();
        }
        assert.ok((await readLake(stack.s3, `${pipeline.name}/`)).records.length > 0);
      } finally {
        rmSync(mirror, { recursive: true, force: true });
        await pipeline.close();
      }
    });
  }
});
