/**
 * The archive as `slotlake schema` describes it, from manifests alone: schema versions, the union of columns
 * and the type that holds every version, the key of the current-state view; and the SQL it prints — run in
 * DuckDB over hand-written JSON Lines records (hostile names included), and parsed with the Hive and Trino
 * grammars of dt-sql-parser for Athena.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { after, describe, it } from 'node:test';
import { DuckDBInstance } from '@duckdb/node-api';
import { HiveSQL, TrinoSQL } from 'dt-sql-parser';
import { PgType } from '../../src/decoding/values.js';
import { describeArchive, type ManifestDocument } from '../../src/lake/archive.js';
import { athenaNames, athenaStatements } from '../../src/lake/athena.js';
import { duckdbViews } from '../../src/lake/duckdb.js';
import { typeOfPostgres, unifyTypes, duckdbType, type LakeType } from '../../src/lake/types.js';
import type { ColumnSchema, TableSchema } from '../../src/pipeline/table-schema.js';

const numeric = (precision: number, scale: number) => ((precision << 16) | scale) + 4;

function column(name: string, typeOid: number, extra: Partial<ColumnSchema> = {}): ColumnSchema {
  return {
    name,
    fieldId: 1,
    typeOid,
    typeModifier: -1,
    typeName: null,
    nullable: true,
    key: false,
    primaryKey: false,
    ...extra,
  };
}

function manifest(objects: Array<{ key: string; schema: TableSchema; rows?: number }>): ManifestDocument {
  return {
    objects: objects.map(({ key, schema, rows }) => ({
      key,
      schema: schema.schema,
      table: schema.table,
      dt: /dt=([0-9-]+)/.exec(key)![1]!,
      rows: rows ?? 1,
      tableSchema: schema,
    })),
  };
}

describe('lake types', () => {
  const t = (oid: number, modifier = -1, name: string | null = null) => typeOfPostgres(oid, modifier, name);
  const text = (type: LakeType) => duckdbType(type);

  it('maps Postgres types as the Parquet writer does', () => {
    assert.equal(text(t(PgType.int8)), 'BIGINT');
    assert.equal(text(t(PgType.numeric, numeric(12, 2))), 'DECIMAL(12,2)');
    assert.equal(text(t(PgType.numeric)), 'VARCHAR');
    assert.equal(text(t(PgType.timestamptz)), 'TIMESTAMPTZ');
    assert.equal(text(t(1007)), 'INTEGER[]'); // int4[]
    assert.equal(text(t(70_001, -1, 'mood[]')), 'VARCHAR[]');
    assert.equal(text(t(70_000, -1, 'mood')), 'VARCHAR');
  });

  it('unifies versions into a type that holds both, or text, and says so', () => {
    assert.deepEqual(unifyTypes([t(PgType.int4), t(PgType.int4)]), { type: t(PgType.int4) });
    const widened = unifyTypes([t(PgType.int4), t(PgType.int8)]);
    assert.equal(text(widened.type), 'BIGINT');
    assert.match(widened.note!, /type changed \(integer, bigint\): read as bigint/);
    assert.equal(text(unifyTypes([t(PgType.int8), t(PgType.numeric, numeric(10, 2))]).type), 'DECIMAL(21,2)');
    assert.equal(
      text(unifyTypes([t(PgType.numeric, numeric(38, 0)), t(PgType.numeric, numeric(10, 5))]).type),
      'VARCHAR',
    );
    assert.equal(text(unifyTypes([t(PgType.int4), t(PgType.float8)]).type), 'DOUBLE');
    assert.equal(text(unifyTypes([t(PgType.int8), t(PgType.float8)]).type), 'VARCHAR'); // not exact
    assert.equal(text(unifyTypes([t(PgType.date), t(PgType.timestamp)]).type), 'TIMESTAMP');
    const toText = unifyTypes([t(PgType.int4), t(PgType.text)]);
    assert.equal(text(toText.type), 'VARCHAR');
    assert.match(toText.note!, /no type holds every version exactly, read as text/);
    assert.equal(text(unifyTypes([t(1007), t(1016)]).type), 'BIGINT[]'); // int4[] → int8[]
  });
});

describe('describeArchive', () => {
  const v1: TableSchema = {
    schema: 'public',
    table: 'orders',
    replicaIdentity: 'd',
    columns: [
      column('id', PgType.int8, { key: true, primaryKey: true, fieldId: 1 }),
      column('qty', PgType.int4, { fieldId: 2 }),
      column('note', PgType.text, { fieldId: 3 }),
    ],
  };
  const v2: TableSchema = {
    ...v1,
    columns: [
      column('id', PgType.int8, { key: true, primaryKey: true, fieldId: 1 }),
      column('qty', PgType.int8, { fieldId: 2 }),
      column('remark', PgType.text, { fieldId: 3 }),
      column('added', PgType.date, { fieldId: 4 }),
    ],
  };
  const full: TableSchema = {
    schema: 'public',
    table: 'docs',
    replicaIdentity: 'f',
    columns: [
      column('a', PgType.int4, { key: true, primaryKey: true }),
      column('b', PgType.text, { key: true }),
    ],
  };
  const keyless: TableSchema = {
    ...full,
    table: 'log',
    columns: [column('msg', PgType.text, { key: true })],
  };

  const tables = describeArchive([
    manifest([
      { key: 'p/data/public.orders/dt=2026-11-25/A-B.jsonl.gz', schema: v1, rows: 3 },
      { key: 'p/data/public.docs/dt=2026-11-25/A-B.jsonl.gz', schema: full },
    ]),
    manifest([
      { key: 'p/data/public.orders/dt=2026-11-26/C-D.parquet', schema: v2, rows: 2 },
      { key: 'p/data/public.orders/dt=2026-11-27/E-F.parquet', schema: v2, rows: 4 },
      { key: 'p/data/public.log/dt=2026-11-27/E-F.parquet', schema: keyless },
    ]),
  ]);

  it('lists each table with its formats, counts, date range and schema versions', () => {
    assert.deepEqual(
      tables.map((table) => [
        table.table,
        table.formats,
        table.objects,
        table.rows,
        table.firstDt,
        table.lastDt,
      ]),
      [
        ['docs', ['jsonl'], 1, 1, '2026-11-25', '2026-11-25'],
        ['log', ['parquet'], 1, 1, '2026-11-27', '2026-11-27'],
        ['orders', ['jsonl', 'parquet'], 3, 9, '2026-11-25', '2026-11-27'],
      ],
    );
    const orders = tables[2]!;
    assert.deepEqual(
      orders.versions.map((version) => [version.objects, version.columns.map((c) => c.name).join(',')]),
      [
        [1, 'id,qty,note'],
        [2, 'id,qty,remark,added'],
      ],
    );
    assert.equal(orders.latestFormat, 'parquet');
  });

  it('unions the columns by name, typed to hold every version, and notes what changed', () => {
    const orders = tables[2]!;
    assert.deepEqual(
      orders.columns.map((c) => [c.name, duckdbType(c.type), c.current]),
      [
        ['id', 'BIGINT', true],
        ['qty', 'BIGINT', true],
        ['note', 'VARCHAR', false],
        ['remark', 'VARCHAR', true],
        ['added', 'DATE', true],
      ],
    );
    assert.ok(orders.notes.some((note) => /dropped or renamed\): note/.test(note)));
    assert.ok(orders.notes.some((note) => /^qty: type changed/.test(note)));
  });

  it('keys the current state by the replica identity, the primary key under FULL, or not at all', () => {
    assert.deepEqual(tables[2]!.key, { columns: ['id'], source: 'replica identity' });
    assert.deepEqual(tables[0]!.key, { columns: ['a'], source: 'primary key' });
    assert.equal(tables[1]!.key, null);
    assert.match(tables[1]!.notes.join(), /FULL without a known primary key/);
  });
});

describe('the printed SQL', () => {
  const hostile: TableSchema = {
    schema: 'My "Schema"',
    table: "it's/a.b",
    replicaIdentity: 'd',
    columns: [
      column('Id', PgType.int8, { key: true, primaryKey: true, fieldId: 1 }),
      column('we"ird\\col', PgType.text, { fieldId: 2 }),
      column('$x', PgType.numeric, { fieldId: 3, typeModifier: numeric(10, 2) }),
      column('dt', PgType.date, { fieldId: 4 }),
    ],
  };
  const [table] = describeArchive([
    manifest([
      { key: 'p/data/My%20%22Schema%22.it%27s%2Fa%2Eb/dt=2026-11-25/A-B.jsonl.gz', schema: hostile },
    ]),
  ]);
  const dir = mkdtempSync(join(tmpdir(), 'slotlake-lake-unit-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('DuckDB reads hostile names, a column named dt, and applies changes per key', async () => {
    assert.equal(table!.segment, 'My%20%22Schema%22.it%27s%2Fa%2Eb');
    const objectDir = join(dir, 'data', table!.segment, 'dt=2026-11-25');
    mkdirSync(objectDir, { recursive: true });
    const source = (seq: number, lsn: string) =>
      `{"db":"d","schema":"My \\"Schema\\"","table":"it's/a.b","lsn":"0/1${seq}","commit_lsn":"${lsn}","seq":${seq},"txId":9,"ts_ms":1764070000123,"ts_us":1764070000123456}`;
    const lines = [
      `{"op":"c","before":null,"after":{"Id":9007199254740993,"we\\"ird\\\\col":"big","$x":"12.50","dt":"2026-01-02"},"source":${source(0, '1/A')}}`,
      `{"op":"c","before":null,"after":{"Id":2,"we\\"ird\\\\col":"two","$x":"1.00","dt":null},"source":${source(1, '1/A')}}`,
      `{"op":"u","before":null,"after":{"Id":9007199254740993,"$x":"13.75","dt":"2026-01-03"},"source":${source(0, '1/B')},"unchanged_toast":["we\\"ird\\\\col"]}`,
      `{"op":"u","before":{"Id":2},"after":{"Id":3,"we\\"ird\\\\col":"three","$x":"1.00","dt":null},"source":${source(1, '1/B')}}`,
    ];
    writeFileSync(
      join(objectDir, '0000000100000000-0000000100000000.jsonl.gz'),
      gzipSync(`${lines.join('\n')}\n`),
    );
    const views = duckdbViews(table!, `${dir}/`);
    const instance = await DuckDBInstance.create(':memory:');
    const connection = await instance.connect();
    try {
      await connection.run(views.statements.join('\n'));
      const changes = await connection.runAndReadAll(
        `SELECT "Id", _lsn, _commit_lsn, "$x" FROM ${views.changes}`,
      );
      assert.deepEqual(changes.getRowObjectsJson()[0], {
        Id: '9007199254740993',
        _lsn: '16',
        _commit_lsn: String(2 ** 32 + 10),
        $x: '12.50',
      });
      const current = await connection.runAndReadAll(
        `SELECT "Id", "we""ird\\col" AS w, CAST("$x" AS VARCHAR) AS x, CAST(dt AS VARCHAR) AS dt FROM ${views.current} ORDER BY "Id"`,
      );
      assert.deepEqual(current.getRowObjectsJson(), [
        { Id: '3', w: 'three', x: '1.00', dt: null },
        { Id: '9007199254740993', w: 'big', x: '13.75', dt: '2026-01-03' },
      ]);
    } finally {
      connection.closeSync();
      instance.closeSync();
    }
  });

  it('Athena statements parse as Hive DDL and Trino views, for both formats', () => {
    const hive = new HiveSQL();
    const trino = new TrinoSQL();
    for (const format of ['jsonl', 'parquet'] as const) {
      const [described] = describeArchive([
        manifest([
          {
            key: `p/data/x/dt=2026-11-25/A-B.${format === 'jsonl' ? 'jsonl.gz' : 'parquet'}`,
            schema: hostile,
          },
        ]),
      ]);
      const name = athenaNames([described!]).get(described!)!;
      assert.equal(name, 'my__schema___it_s_a_b');
      const { statements } = athenaStatements(described!, name, { database: 'lake', base: 's3://bucket/p/' });
      assert.equal(statements.length, 3);
      assert.deepEqual(hive.validate(statements[0]!), [], statements[0]);
      assert.match(statements[0]!, /'projection\.(_)?dt\.type' = 'date'/);
      for (const view of statements.slice(1)) assert.deepEqual(trino.validate(view), [], view);
    }
    // and the parser does reject what is not valid
    assert.notDeepEqual(hive.validate('CREATE EXTERNAL TABLE x (a int PARTITIONED BY (dt string)'), []);
    assert.notDeepEqual(
      trino.validate('CREATE OR REPLACE VIEW v AS SELECT last_value(x IGNORE NULLS) OVER () FROM t'),
      [],
    );
  });
});
