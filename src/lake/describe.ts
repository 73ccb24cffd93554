/**
 * `slotlake schema` (contract §1): what reads the archive as it is, per archived table — DuckDB views, Athena
 * / Glue statements, or a machine-readable description — from the committed manifests (lake/archive.ts).
 *
 * The DuckDB views read objects from `location` (default: the archive's own `s3://bucket/prefix/`, read
 * through DuckDB's httpfs; any directory holding a copy of the archive's `data/` works the same, e.g. after
 * `aws s3 sync`; a relative path is relative to where DuckDB runs). Athena statements always point at S3. Nothing here connects to a database or runs SQL.
 */
import { displayName, type TableName } from '../names.js';
import type { ObjectStore } from '../sink/object-store.js';
import { describeArchive, readManifests, type LakeTable } from './archive.js';
import { athenaNames, athenaStatements, type AthenaStatements } from './athena.js';
import { duckdbViews, type DuckdbViews } from './duckdb.js';
import { describeType, hiveType, trinoType } from './types.js';

export type SchemaFormat = 'duckdb' | 'athena' | 'json';

export interface SchemaRequest {
  readonly store: ObjectStore;
  /** Where DuckDB reads `data/` from: `s3://…` or a local directory; default the store's location. */
  readonly location?: string;
  /** Glue database of the Athena statements. */
  readonly athenaDatabase: string;
  /** Only these tables (all when absent or empty). */
  readonly tables?: readonly TableName[];
}

export interface LakeSchema {
  /** The archive's S3 location (`s3://bucket/prefix/`). */
  readonly archive: string;
  /** Where the DuckDB views read from. */
  readonly location: string;
  readonly manifests: number;
  readonly tables: ReadonlyArray<{
    readonly table: LakeTable;
    readonly duckdb: DuckdbViews;
    readonly athena: AthenaStatements;
  }>;
}

function withSlash(base: string): string {
  return base.endsWith('/') ? base : `${base}/`;
}

/** A location for DuckDB, as given (a relative path is relative to where DuckDB runs), ending with `/`. */
export function duckdbBase(location: string): string {
  return withSlash(location);
}

export async function describeSchema(request: SchemaRequest): Promise<LakeSchema> {
  const archive = withSlash(request.store.location);
  const location = duckdbBase(request.location ?? archive);
  const manifests = await readManifests(request.store);
  let tables = describeArchive(manifests);
  if (request.tables && request.tables.length > 0) {
    const wanted = new Set(request.tables.map((name) => JSON.stringify([name.schema, name.table])));
    tables = tables.filter((table) => wanted.has(JSON.stringify([table.schema, table.table])));
  }
  const names = athenaNames(tables);
  return {
    archive,
    location,
    manifests: manifests.length,
    tables: tables.map((table) => ({
      table,
      duckdb: duckdbViews(table, location),
      athena: athenaStatements(table, names.get(table)!, { database: request.athenaDatabase, base: archive }),
    })),
  };
}

export function renderSchema(schema: LakeSchema, format: SchemaFormat): string {
  switch (format) {
    case 'duckdb':
      return renderScript(schema, 'DuckDB', (entry) => entry.duckdb.statements);
    case 'athena':
      return renderScript(schema, 'Athena', (entry) => entry.athena.statements.map((s) => `${s};`));
    case 'json':
      return `${JSON.stringify(describeJson(schema), null, 2)}\n`;
  }
}

function renderScript(
  schema: LakeSchema,
  engine: string,
  statements: (entry: LakeSchema['tables'][number]) => readonly string[],
): string {
  const head =
    `-- slotlake schema for ${engine}: ${schema.tables.length} table(s) from ${schema.manifests} manifest(s) ` +
    `of ${schema.archive}\n` +
    (engine === 'DuckDB' ? `-- objects read from ${schema.location}\n` : '') +
    '-- views are typed with the schemas archived so far: run `slotlake schema` again after a schema change\n';
  const body = schema.tables.map((entry) => statements(entry).join('\n\n')).join('\n\n');
  return `${head}\n${body}${body ? '\n' : ''}`;
}

function describeJson(schema: LakeSchema): unknown {
  return {
    archive: schema.archive,
    location: schema.location,
    manifests: schema.manifests,
    tables: schema.tables.map(({ table, duckdb, athena }) => ({
      schema: table.schema,
      table: table.table,
      name: displayName(table),
      dataPrefix: `data/${table.segment}/`,
      formats: table.formats,
      objects: table.objects,
      rows: table.rows,
      bytes: table.bytes,
      firstDt: table.firstDt,
      lastDt: table.lastDt,
      key: table.key,
      notes: table.notes,
      columns: table.columns.map((column) => ({
        name: column.name,
        type: describeType(column.type),
        trinoType: trinoType(column.type),
        hiveType: hiveType(column.type),
        postgresTypes: column.postgresTypes,
        current: column.current,
        ...(column.note ? { note: column.note } : {}),
      })),
      versions: table.versions.map((version) => ({
        firstLsn: version.firstLsn,
        objects: version.objects,
        replicaIdentity: version.replicaIdentity,
        columns: version.columns.map((column) => ({
          name: column.name,
          type: column.typeName,
          fieldId: column.fieldId,
          nullable: column.nullable,
          key: column.key,
          primaryKey: column.primaryKey ?? null,
        })),
      })),
      duckdb: { changes: duckdb.changes, current: duckdb.current, sql: duckdb.statements },
      athena: {
        records: athena.records,
        changes: athena.changes,
        current: athena.current,
        sql: athena.statements,
      },
    })),
  };
}
