/**
 * The archive as readers see it: every archived table with the union of its schema versions, read from the
 * committed manifests (contract §3) — the source of truth for what the archive holds, since a manifest exists
 * only for a committed batch and records, for every object, the table schema it was written with.
 *
 * Per table (true names; one key segment `<schema>.<table>`, escaped, under `data/`): its objects' formats,
 * row counts and date range; its schema versions in LSN order (a new Relation message — a column added,
 * dropped, renamed or retyped, a new replica identity — starts objects with a new schema); the union of the
 * columns over all versions by name (a renamed column appears under both names, the old one null in later
 * rows), each with one type that holds every version (lake/types.ts); and the key a current-state view
 * groups changes by: the replica identity key of the latest version (the columns `before` carries for
 * updates and deletes), or its primary key under REPLICA IDENTITY FULL (every column is "key" then). A table
 * without such a key gets no current-state view, and says why.
 */
import { tableKeySegment } from '../names.js';
import type { ObjectStore } from '../sink/object-store.js';
import type { ColumnSchema, TableSchema } from '../pipeline/table-schema.js';
import {
  typeOfParquetField,
  typeOfPostgres,
  unifyTypes,
  type LakeType,
  type RecordedParquetField,
} from './types.js';

export type ObjectFormatName = 'jsonl' | 'parquet';

/** A manifest as this module reads it (sink/manifest.ts writes it; older versions lack some fields). */
export interface ManifestDocument {
  readonly version?: number;
  readonly startLsn?: string;
  readonly endLsn?: string;
  readonly objects: readonly ManifestObjectEntry[];
}

export interface ManifestObjectEntry {
  readonly key: string;
  readonly schema: string;
  readonly table: string;
  readonly dt: string;
  readonly rows: number;
  readonly bytes?: number;
  readonly startLsn?: string;
  /** `seq` of the object's first change when it starts inside a transaction. */
  readonly firstSeq?: number | null;
  readonly tableSchema?: TableSchema | null;
  readonly parquet?: { readonly schema?: readonly RecordedParquetField[] };
}

export interface LakeColumn {
  readonly name: string;
  readonly type: LakeType;
  /** Postgres types the column had, in order of appearance (`format_type` names, or OIDs when unknown). */
  readonly postgresTypes: readonly string[];
  /** In the latest schema version (false: dropped or renamed since). */
  readonly current: boolean;
  readonly note?: string;
}

export interface SchemaVersion {
  /** Commit LSN of the first object written with this version. */
  readonly firstLsn: string | null;
  readonly objects: number;
  readonly replicaIdentity: string;
  readonly columns: readonly ColumnSchema[];
}

export interface TableKey {
  readonly columns: readonly string[];
  readonly source: 'replica identity' | 'primary key';
}

export interface LakeTable {
  readonly schema: string;
  readonly table: string;
  /** `<schema>.<table>`, each escaped (contract §3): the key segment under `data/`. */
  readonly segment: string;
  readonly formats: readonly ObjectFormatName[];
  /** The format of the table's latest object. */
  readonly latestFormat: ObjectFormatName;
  readonly objects: number;
  readonly rows: number;
  readonly bytes: number;
  readonly firstDt: string;
  readonly lastDt: string;
  readonly versions: readonly SchemaVersion[];
  readonly columns: readonly LakeColumn[];
  readonly key: TableKey | null;
  /** Why there is no key, or how it was chosen, or what readers should know about this table. */
  readonly notes: readonly string[];
}

export function formatOfKey(key: string): ObjectFormatName | undefined {
  if (key.endsWith('.jsonl.gz')) return 'jsonl';
  if (key.endsWith('.parquet')) return 'parquet';
  return undefined;
}

/** Every committed manifest under the store's prefix, in key (= LSN) order. */
export async function readManifests(store: ObjectStore, concurrency = 8): Promise<ManifestDocument[]> {
  const keys = (await store.list(store.key('manifests/'))).filter((key) => key.endsWith('.json'));
  const documents: ManifestDocument[] = new Array(keys.length);
  let next = 0;
  const worker = async () => {
    while (next < keys.length) {
      const index = next++;
      const text = await store.getText(keys[index]!);
      if (text === undefined) throw new Error(`manifest ${keys[index]} disappeared while it was read`);
      documents[index] = JSON.parse(text) as ManifestDocument;
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, keys.length) }, worker));
  return documents;
}

interface TableAccumulator {
  schema: string;
  table: string;
  formats: Set<ObjectFormatName>;
  latestFormat: ObjectFormatName;
  objects: number;
  rows: number;
  bytes: number;
  firstDt: string;
  lastDt: string;
  versions: Array<SchemaVersion & { signature: string }>;
  /** Per column name: its lake types and Postgres type names, in order. */
  columnTypes: Map<string, { types: LakeType[]; postgres: string[] }>;
  unschematized: number;
}

function postgresTypeName(column: ColumnSchema): string {
  return column.typeName ?? `oid ${column.typeOid}`;
}

/** The archived tables described by `manifests` (in LSN order), sorted by schema and table. */
export function describeArchive(manifests: readonly ManifestDocument[]): LakeTable[] {
  const tables = new Map<string, TableAccumulator>();
  // Objects in the order of their first change: a manifest lists its objects by key, and the object a schema
  // change closed inside a transaction sorts after the one it opened (`…-<seq>` before `….`).
  const ordered = manifests
    .flatMap((manifest) =>
      manifest.objects.map((object) => ({
        object,
        startLsn: object.startLsn ?? manifest.startLsn ?? null,
      })),
    )
    .map((entry, index) => ({ ...entry, index, position: lsnOrder(entry.startLsn) }))
    .sort(
      (a, b) =>
        (a.position < b.position ? -1 : a.position > b.position ? 1 : 0) ||
        (a.object.firstSeq ?? -1) - (b.object.firstSeq ?? -1) ||
        a.index - b.index,
    );
  for (const { object, startLsn } of ordered) {
    const format = formatOfKey(object.key);
    if (format === undefined) continue;
    const id = JSON.stringify([object.schema, object.table]);
    let table = tables.get(id);
    if (!table) {
      table = {
        schema: object.schema,
        table: object.table,
        formats: new Set(),
        latestFormat: format,
        objects: 0,
        rows: 0,
        bytes: 0,
        firstDt: object.dt,
        lastDt: object.dt,
        versions: [],
        columnTypes: new Map(),
        unschematized: 0,
      };
      tables.set(id, table);
    }
    table.formats.add(format);
    table.latestFormat = format;
    table.objects++;
    table.rows += object.rows;
    table.bytes += object.bytes ?? 0;
    if (object.dt < table.firstDt) table.firstDt = object.dt;
    if (object.dt > table.lastDt) table.lastDt = object.dt;
    const schema = object.tableSchema;
    if (!schema || !Array.isArray(schema.columns)) {
      table.unschematized++;
      continue;
    }
    const signature = JSON.stringify([schema.replicaIdentity, schema.columns]);
    const last = table.versions[table.versions.length - 1];
    if (last?.signature === signature) (last as { objects: number }).objects++;
    else
      table.versions.push({
        signature,
        firstLsn: startLsn,
        objects: 1,
        replicaIdentity: schema.replicaIdentity,
        columns: schema.columns,
      });
    const parquetFields = new Map((object.parquet?.schema ?? []).map((field) => [field.name, field]));
    for (const column of schema.columns) {
      const field = parquetFields.get(column.name);
      const type = field
        ? typeOfParquetField(field)
        : typeOfPostgres(column.typeOid, column.typeModifier, column.typeName);
      let entry = table.columnTypes.get(column.name);
      if (!entry) table.columnTypes.set(column.name, (entry = { types: [], postgres: [] }));
      entry.types.push(type);
      const pgName = postgresTypeName(column);
      if (!entry.postgres.includes(pgName)) entry.postgres.push(pgName);
    }
  }
  return [...tables.values()]
    .map(finish)
    .sort((a, b) => (a.schema === b.schema ? compare(a.table, b.table) : compare(a.schema, b.schema)));
}

/** An `X/X` LSN as a number for ordering (unknown first). */
function lsnOrder(text: string | null): bigint {
  const match = text === null ? null : /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(text);
  return match ? (BigInt(`0x${match[1]}`) << 32n) + BigInt(`0x${match[2]}`) : -1n;
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function finish(table: TableAccumulator): LakeTable {
  const notes: string[] = [];
  const latest = table.versions[table.versions.length - 1];
  const currentNames = new Set(latest?.columns.map((column) => column.name) ?? []);
  const columns: LakeColumn[] = [...table.columnTypes.entries()].map(([name, entry]) => {
    const { type, note } = unifyTypes(entry.types);
    return {
      name,
      type,
      postgresTypes: entry.postgres,
      current: currentNames.has(name),
      ...(note ? { note } : {}),
    };
  });
  if (table.unschematized > 0)
    notes.push(`${table.unschematized} object(s) were written without a recorded schema (older manifests)`);
  const gone = columns.filter((column) => !column.current).map((column) => column.name);
  if (gone.length > 0)
    notes.push(
      `columns no longer in the table (dropped or renamed): ${gone.join(', ')} — null in later changes`,
    );
  for (const column of columns) if (column.note) notes.push(`${column.name}: ${column.note}`);
  return {
    schema: table.schema,
    table: table.table,
    segment: tableKeySegment({ schema: table.schema, table: table.table }),
    formats: [...table.formats].sort(),
    latestFormat: table.latestFormat,
    objects: table.objects,
    rows: table.rows,
    bytes: table.bytes,
    firstDt: table.firstDt,
    lastDt: table.lastDt,
    versions: table.versions.map(({ signature: _signature, ...version }) => version),
    columns,
    key: latest ? keyOf(latest, notes) : null,
    notes,
  };
}

function keyOf(version: SchemaVersion, notes: string[]): TableKey | null {
  const named = (predicate: (column: ColumnSchema) => boolean) =>
    version.columns.filter(predicate).map((column) => column.name);
  switch (version.replicaIdentity) {
    case 'd':
    case 'i': {
      const columns = named((column) => column.key);
      if (columns.length > 0) return { columns, source: 'replica identity' };
      notes.push('no primary key or replica identity index: no current-state view (updates carry no key)');
      return null;
    }
    case 'f': {
      const columns = named((column) => column.primaryKey === true);
      if (columns.length > 0) return { columns, source: 'primary key' };
      notes.push(
        'REPLICA IDENTITY FULL without a known primary key: no current-state view (rows have no identity)',
      );
      return null;
    }
    default:
      notes.push(
        'REPLICA IDENTITY NOTHING: updates and deletes are not in the stream; no current-state view',
      );
      return null;
  }
}
