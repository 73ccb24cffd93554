/**
 * Amazon Athena (engine 3) / AWS Glue statements over the archive, per table: a `CREATE EXTERNAL TABLE`
 * `<name>__records` over the table's objects with partition projection on `dt` (no crawler, no
 * `MSCK REPAIR`: Athena computes the partitions from the date range), a view `<name>__changes` with the same
 * flat, typed columns as the DuckDB view, and a view `<name>__current` with the table's current state — the
 * views in Trino SQL (lake/sql.ts).
 *
 * `<name>` is `<schema>__<table>` in Glue's alphabet (lower-case letters, digits, `_`; other characters
 * become `_`, and a name that two tables would share gets a short hash of the true names). JSON Lines tables
 * read each line with the OpenX JSON SerDe, `before` and `after` kept as JSON text and taken apart by the
 * view; Parquet tables declare the objects' own columns (Hive types; a `time` column is read as its int64
 * microseconds). Athena reads one format per location and one type per Parquet column: a table whose objects
 * mix formats is declared for the latest format, and a Parquet column whose type changed in a way Athena
 * cannot read across files is left out — both said in a comment.
 */
import { createHash } from 'node:crypto';
import type { LakeColumn, LakeTable } from './archive.js';
import {
  currentStateSql,
  flattenJsonRecords,
  quoteIdent,
  quoteString,
  renamedSources,
  TRINO,
  typedChanges,
} from './sql.js';
import { hiveType, sameType, typeOfPostgres, type LakeType } from './types.js';
import { UNKNOWN_COLUMN_FIELD_ID_BASE } from '../pipeline/table-schema.js';

export interface AthenaStatements {
  readonly records: string;
  readonly changes: string;
  readonly current: string | null;
  /** DDL first (run each statement separately: Athena takes one per query). */
  readonly statements: readonly string[];
}

const backtick = (name: string) => `\`${name.replace(/`/g, '``')}\``;

/** Glue names for every table: `<schema>__<table>` in Glue's alphabet, with a hash where two would collide. */
export function athenaNames(tables: readonly LakeTable[]): Map<LakeTable, string> {
  const plain = (table: LakeTable) =>
    `${table.schema}__${table.table}`.toLowerCase().replace(/[^a-z0-9_]/g, '_');
  const counts = new Map<string, number>();
  for (const table of tables) counts.set(plain(table), (counts.get(plain(table)) ?? 0) + 1);
  const names = new Map<LakeTable, string>();
  for (const table of tables) {
    const name = plain(table);
    if (counts.get(name)! === 1) names.set(table, name);
    else {
      const hash = createHash('sha256')
        .update(JSON.stringify([table.schema, table.table]))
        .digest('hex');
      names.set(table, `${name}_${hash.slice(0, 8)}`);
    }
  }
  return names;
}

const INTEGER_WIDENING = ['smallint', 'int', 'bigint'];

/** Parquet columns Athena can declare: one Hive type that reads every version's files. */
function parquetColumns(table: LakeTable, notes: string[]): LakeColumn[] {
  const kept: LakeColumn[] = [];
  const seen = new Set<string>();
  for (const column of table.columns) {
    const lower = column.name.toLowerCase();
    if (seen.has(lower)) {
      notes.push(
        `column ${column.name} is left out: Athena column names ignore case and another column has it`,
      );
      continue;
    }
    if (column.note) {
      const hive = new Set(versionTypes(table, column.name).map(hiveType));
      const widening = [...hive].every((type) => INTEGER_WIDENING.includes(type));
      if (hive.size > 1 && !widening) {
        notes.push(`column ${column.name} is left out: its Parquet type changed (${[...hive].join(', ')})`);
        continue;
      }
    }
    seen.add(lower);
    kept.push(column);
  }
  return kept;
}

/** The lake types a column had over the table's versions (from the recorded Postgres types). */
function versionTypes(table: LakeTable, name: string): LakeType[] {
  const types: LakeType[] = [];
  for (const version of table.versions) {
    const column = version.columns.find((c) => c.name === name);
    if (!column) continue;
    const type = typeOfPostgres(column.typeOid, column.typeModifier, column.typeName);
    if (!types.some((t) => sameType(t, type))) types.push(type);
  }
  return types;
}

export interface AthenaOptions {
  /** The Glue database the statements create tables and views in. */
  readonly database: string;
  /** `s3://bucket/prefix/`: where `data/` is. */
  readonly base: string;
}

const JSON_RECORD_COLUMNS = [
  '`op` string',
  '`before` string',
  '`after` string',
  '`source` struct<`db`:string,`schema`:string,`table`:string,`lsn`:string,`commit_lsn`:string,' +
    '`seq`:bigint,`txid`:bigint,`ts_ms`:bigint,`ts_us`:bigint,`snapshot`:boolean>',
  '`unchanged_toast` array<string>',
];

const PARQUET_METADATA_COLUMNS = [
  '`_op` string',
  '`_lsn` bigint',
  '`_commit_lsn` bigint',
  '`_seq` bigint',
  '`_tx_id` bigint',
  '`_commit_ts` timestamp',
  '`_before` string',
  '`_unchanged_toast` array<string>',
  '`_unrepresentable` string',
];

/** Converts a Parquet column as Athena declares it to the column's lake type (Trino). */
function fromParquet(column: LakeColumn, expr: string): string {
  const { scalar, list } = column.type;
  const one = (x: string) =>
    scalar.kind === 'timestamptz'
      ? `with_timezone(${x}, 'UTC')`
      : scalar.kind === 'time'
        ? `CAST(from_unixtime_nanos(${x} * 1000) AS time(6))`
        : x;
  if (list)
    return scalar.kind === 'timestamptz' || scalar.kind === 'time'
      ? `transform(${expr}, x -> ${one('x')})`
      : expr;
  if (column.note) return `CAST(${expr} AS ${TRINO.type(column.type)})`;
  return one(expr);
}

export function athenaStatements(table: LakeTable, name: string, options: AthenaOptions): AthenaStatements {
  const notes = [...table.notes];
  const db = options.database;
  const location = `${options.base}data/${table.segment}/`;
  const format = table.latestFormat;
  if (table.formats.length > 1)
    notes.push(
      `objects in both formats: Athena reads one format per location; declared for ${format} objects`,
    );
  const columns = format === 'parquet' ? parquetColumns(table, notes) : [...table.columns];
  const partition =
    format === 'parquet' && columns.some((column) => column.name.toLowerCase() === 'dt') ? '_dt' : 'dt';
  const records = `${backtick(db)}.${backtick(`${name}__records`)}`;
  const declared =
    format === 'jsonl'
      ? JSON_RECORD_COLUMNS
      : [
          ...columns.map((column) => `${backtick(column.name)} ${hiveType(column.type)}`),
          ...PARQUET_METADATA_COLUMNS,
        ];
  const storage =
    format === 'jsonl'
      ? "ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'\n" +
        "STORED AS INPUTFORMAT 'org.apache.hadoop.mapred.TextInputFormat'\n" +
        "OUTPUTFORMAT 'org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat'"
      : 'STORED AS PARQUET';
  const properties: Array<[string, string]> = [
    ['projection.enabled', 'true'],
    [`projection.${partition}.type`, 'date'],
    [`projection.${partition}.format`, 'yyyy-MM-dd'],
    [`projection.${partition}.range`, `${table.firstDt},NOW`],
    [`projection.${partition}.interval`, '1'],
    [`projection.${partition}.interval.unit`, 'DAYS'],
    ['storage.location.template', `${location}dt=\${${partition}}/`],
  ];
  const comment =
    `-- ${table.schema}.${table.table}: ${table.rows} changes in ${table.objects} objects (${table.formats.join(', ')}), ` +
    `${table.firstDt} .. ${table.lastDt}, ${table.versions.length} schema version(s)` +
    notes.map((note) => `\n-- note: ${note.replace(/\n/g, ' ')}`).join('');
  const ddl =
    `${comment}\nCREATE EXTERNAL TABLE IF NOT EXISTS ${records} (\n  ${declared.join(',\n  ')}\n)\n` +
    `PARTITIONED BY (${backtick(partition)} string)\n${storage}\n` +
    `LOCATION ${quoteString(location)}\n` +
    `TBLPROPERTIES (\n  ${properties.map(([k, v]) => `${quoteString(k)} = ${quoteString(v)}`).join(',\n  ')}\n)`;
  const from = `${quoteIdent(db)}.${quoteIdent(`${name}__records`)}`;
  const trailing = [`date(${quoteIdent(partition)}) AS ${quoteIdent(partition === 'dt' ? 'dt' : '_dt')}`];
  const select =
    format === 'jsonl'
      ? flattenJsonRecords(TRINO, columns, from, trailing)
      : typedChanges(TRINO, columns, from, trailing, fromParquet, (meta) =>
          meta === '_commit_ts' ? "with_timezone(_commit_ts, 'UTC') AS _commit_ts" : meta,
        );
  const changes = `${quoteIdent(db)}.${quoteIdent(`${name}__changes`)}`;
  const statements = [ddl, `CREATE OR REPLACE VIEW ${changes} AS\n${select}`];
  let current: string | null = null;
  const keyKept = table.key?.columns.every((key) => columns.some((column) => column.name === key));
  if (table.key && keyKept) {
    current = `${quoteIdent(db)}.${quoteIdent(`${name}__current`)}`;
    const sql = currentStateSql(TRINO, {
      changes,
      columns,
      key: table.key,
      sources: renamedSources(columns, table.versions, UNKNOWN_COLUMN_FIELD_ID_BASE),
    });
    statements.push(`CREATE OR REPLACE VIEW ${current} AS\n${sql}`);
  }
  return { records, changes, current, statements };
}
