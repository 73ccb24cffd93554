/**
 * DuckDB views over the archive, per table: `"<schema>"."<table>__changes"` (every change, flat and typed, over
 * `read_json`/`read_parquet` with `hive_partitioning` and `union_by_name`, so objects of every schema version
 * read as one relation, a column absent from an object null in its rows) and `"<schema>"."<table>__current"`
 * (the table as of the archive's last change; lake/sql.ts). The views read the objects where they are — an
 * `s3://` location (DuckDB's httpfs, with the reader's credentials) or a local copy of the archive — by glob,
 * so objects written after the views were made are read too; a new schema version (a new column, a changed
 * type) needs the views made again to be typed, and `slotlake schema` says so in every view's comment.
 * JSON Lines columns are given explicitly: DuckDB guesses nothing, an int8 stays exact, a numeric stays a
 * DECIMAL or exact text. A table column named `dt` would be shadowed by the partition column: such a table is
 * read without hive partitioning.
 */
import type { LakeTable } from './archive.js';
import {
  currentStateSql,
  DUCKDB,
  flattenJsonRecords,
  quoteIdent,
  quoteString,
  renamedSources,
  typedChanges,
} from './sql.js';
import { UNKNOWN_COLUMN_FIELD_ID_BASE } from '../pipeline/table-schema.js';

/** The fields of a JSON Lines record the views read (contract §4), typed. */
const RECORD_COLUMNS =
  "{'op': 'VARCHAR', 'before': 'JSON', 'after': 'JSON', " +
  `'source': 'STRUCT(lsn VARCHAR, commit_lsn VARCHAR, seq BIGINT, "txId" BIGINT, ts_us BIGINT)', ` +
  "'unchanged_toast': 'VARCHAR[]'}";

export interface DuckdbViews {
  readonly schema: string;
  readonly changes: string;
  readonly current: string | null;
  /** `CREATE SCHEMA` and `CREATE OR REPLACE VIEW` statements, each ending with `;`. */
  readonly statements: readonly string[];
}

export function duckdbViewNames(table: LakeTable): { changes: string; current: string } {
  const schema = quoteIdent(table.schema);
  return {
    changes: `${schema}.${quoteIdent(`${table.table}__changes`)}`,
    current: `${schema}.${quoteIdent(`${table.table}__current`)}`,
  };
}

/** `base` ends with `/`: `s3://bucket/prefix/` or a local directory holding `data/`. */
export function duckdbViews(table: LakeTable, base: string): DuckdbViews {
  const names = duckdbViewNames(table);
  const hive = !table.columns.some((column) => column.name === 'dt');
  const partition = hive
    ? ", hive_partitioning = true, hive_types = {'dt': 'DATE'}"
    : ', hive_partitioning = false';
  const trailing = hive ? ['dt'] : [];
  const glob = (extension: string) => quoteString(`${base}data/${table.segment}/*/*.${extension}`);
  const selects: string[] = [];
  if (table.formats.includes('jsonl'))
    selects.push(
      flattenJsonRecords(
        DUCKDB,
        table.columns,
        `read_json(${glob('jsonl.gz')}, format = 'newline_delimited', compression = 'gzip'${partition}, ` +
          `columns = ${RECORD_COLUMNS})`,
        trailing,
      ),
    );
  if (table.formats.includes('parquet'))
    selects.push(
      typedChanges(
        DUCKDB,
        table.columns,
        `read_parquet(${glob('parquet')}${partition}, union_by_name = true)`,
        trailing,
      ),
    );
  const comment =
    `-- ${table.schema}.${table.table}: ${table.rows} changes in ${table.objects} objects (${table.formats.join(', ')}), ` +
    `${table.firstDt} .. ${table.lastDt}, ${table.versions.length} schema version(s)` +
    table.notes.map((note) => `\n-- note: ${note.replace(/\n/g, ' ')}`).join('');
  const statements = [
    `CREATE SCHEMA IF NOT EXISTS ${quoteIdent(table.schema)};`,
    `${comment}\nCREATE OR REPLACE VIEW ${names.changes} AS\n${selects.join('\nUNION ALL\n')};`,
  ];
  let current: string | null = null;
  if (table.key) {
    current = names.current;
    const sql = currentStateSql(DUCKDB, {
      changes: names.changes,
      columns: table.columns,
      key: table.key,
      sources: renamedSources(table.columns, table.versions, UNKNOWN_COLUMN_FIELD_ID_BASE),
    });
    statements.push(
      `-- ${table.schema}.${table.table} now: the latest change per ${table.key.source} (${table.key.columns.join(', ')})\n` +
        `CREATE OR REPLACE VIEW ${names.current} AS\n${sql};`,
    );
  }
  return { schema: table.schema, changes: names.changes, current, statements };
}
