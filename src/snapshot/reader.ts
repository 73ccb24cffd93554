/**
 * Reading a table's existing rows for a snapshot, over an ordinary connection: the table's plan (columns as
 * pgoutput sends them, the key to order and resume by), the watermarks, and one chunk at a time.
 *
 * The columns are the table's live, non-generated columns in attribute order — exactly the columns pgoutput's
 * Relation message lists — read as their types' text output (`format('%s', col)`) under the session settings every slotlake
 * connection pins, so a snapshot row is encoded exactly like a streamed one. The key is the primary key, else a
 * unique index over NOT NULL columns (no predicate, no expressions), else the row's `ctid` (physical position:
 * rows updated while the table is read may be missed or read twice — a warning says so). A chunk is
 * `WHERE (key) > (last key) ORDER BY key LIMIT n`, with the parameters cast to the columns' own types so the
 * comparison is the index's.
 * https://www.postgresql.org/docs/current/functions-admin.html#FUNCTIONS-REPLICATION
 */
import type pg from 'pg';
import type { Relation, RelationColumn, ReplicaIdentity } from '../decoding/messages.js';
import { classify, SlotlakeError } from '../errors.js';
import { qualifiedName, quoteIdentifier, type TableName } from '../names.js';
import type { SnapshotKeyKind } from './progress.js';
import { WATERMARK_PREFIX, watermarkContent, type Watermark } from './watermarks.js';
import type { ChunkRow } from './window.js';

export interface SnapshotColumn extends RelationColumn {
  readonly attnum: number;
  /** `format_type(atttypid, atttypmod)`: used to cast key parameters. */
  readonly typeName: string;
}

export interface SnapshotPlan {
  readonly table: TableName;
  readonly relationOid: number;
  readonly columns: readonly SnapshotColumn[];
  readonly keyKind: SnapshotKeyKind;
  /** Key column names in order (`ctid` alone for keyless tables). */
  readonly keyColumns: readonly string[];
  /** Positions of the key columns in `columns` (empty for ctid). */
  readonly keyIndexes: readonly number[];
  /** `pg_class.reltuples` (-1: unknown, the table was never analyzed). */
  readonly estimatedRows: number;
  /** The table as a pgoutput Relation message would describe it (for encoding the rows). */
  readonly relation: Relation;
}

interface ClassRow {
  oid: number;
  relreplident: string;
  reltuples: number;
}

interface ColumnRow {
  name: string;
  type_oid: number;
  type_modifier: number;
  attnum: number;
  type_name: string;
}

interface IndexRow {
  primary: boolean;
  replident: boolean;
  all_not_null: boolean;
  columns: string[];
}

const ORIGIN = { origin: 'source' } as const;

/** What to read `table` by, or undefined when it does not exist. */
export async function planTable(client: pg.Client, table: TableName): Promise<SnapshotPlan | undefined> {
  try {
    const found = await client.query(
      `SELECT c.oid::int AS oid, c.relreplident, c.reltuples::float8 AS reltuples
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')`,
      [table.schema, table.table],
    );
    const cls = found.rows[0] as ClassRow | undefined;
    if (!cls) return undefined;
    const columns = (
      await client.query(
        `SELECT a.attname AS name, a.atttypid::int AS type_oid, a.atttypmod AS type_modifier, a.attnum::int AS attnum,
                format_type(a.atttypid, a.atttypmod) AS type_name
           FROM pg_attribute a
          WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
          ORDER BY a.attnum`,
        [cls.oid],
      )
    ).rows as ColumnRow[];
    const indexes = (
      await client.query(
        `SELECT i.indisprimary AS primary, i.indisreplident AS replident,
                bool_and(a.attnotnull) AS all_not_null,
                array_agg(a.attname::text ORDER BY k.ord) AS columns
           FROM pg_index i
           CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
           JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
          WHERE i.indrelid = $1 AND i.indisunique AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL
          GROUP BY i.indexrelid, i.indisprimary, i.indisreplident
          ORDER BY i.indisprimary DESC, count(*), i.indexrelid`,
        [cls.oid],
      )
    ).rows as IndexRow[];
    const primary = indexes.find((index) => index.primary);
    const unique = indexes.find((index) => !index.primary && index.all_not_null);
    const chosen = primary ?? unique;
    const keyKind: SnapshotKeyKind = primary ? 'primary-key' : unique ? 'unique-index' : 'ctid';
    const keyColumns = chosen ? chosen.columns : ['ctid'];
    const replicaIdentity = cls.relreplident as ReplicaIdentity;
    const identityColumns = new Set(
      replicaIdentity === 'f'
        ? columns.map((column) => column.name)
        : replicaIdentity === 'd'
          ? (primary?.columns ?? [])
          : replicaIdentity === 'i'
            ? (indexes.find((index) => index.replident)?.columns ?? [])
            : [],
    );
    const snapshotColumns: SnapshotColumn[] = columns.map((column) => ({
      name: column.name,
      typeOid: column.type_oid,
      typeModifier: column.type_modifier,
      isKey: identityColumns.has(column.name),
      attnum: column.attnum,
      typeName: column.type_name,
    }));
    return {
      table,
      relationOid: cls.oid,
      columns: snapshotColumns,
      keyKind,
      keyColumns,
      keyIndexes: chosen
        ? keyColumns.map((name) => snapshotColumns.findIndex((column) => column.name === name))
        : [],
      // reltuples is -1 until the table was first vacuumed or analyzed: unknown
      estimatedRows: Number(cls.reltuples) < 0 ? -1 : Math.round(Number(cls.reltuples)),
      relation: {
        relationId: cls.oid,
        namespace: table.schema,
        name: table.table,
        replicaIdentity,
        columns: snapshotColumns.map(({ name, typeOid, typeModifier, isKey }) => ({
          name,
          typeOid,
          typeModifier,
          isKey,
        })),
      },
    };
  } catch (error) {
    throw classify(error, { ...ORIGIN, what: `reading the definition of ${table.schema}.${table.table}` });
  }
}

/** Writes a watermark into the WAL as a transactional logical message (its own transaction). */
export async function emitWatermark(client: pg.Client, watermark: Watermark): Promise<void> {
  try {
    await client.query('SELECT pg_logical_emit_message(true, $1, $2)', [
      WATERMARK_PREFIX,
      watermarkContent(watermark),
    ]);
  } catch (error) {
    const classified = classify(error, {
      ...ORIGIN,
      what: 'writing a snapshot watermark (pg_logical_emit_message)',
    });
    if (classified.sqlState === '42501' || classified.sqlState === '25006')
      throw new SlotlakeError(
        `the source does not let this role write snapshot watermarks: ${classified.message}`,
        {
          kind: 'source-permission',
          origin: 'source',
          sqlState: classified.sqlState,
          hint: 'snapshots need pg_logical_emit_message on the primary (a writable server); grant EXECUTE on it, or set SLOTLAKE_SNAPSHOT=never',
          cause: error,
        },
      );
    throw classified;
  }
}

export interface Chunk {
  readonly rows: readonly ChunkRow[];
  /** The key of the last row (the next chunk starts after it); null when the chunk is empty. */
  readonly lastKey: readonly string[] | null;
  readonly limit: number;
}

/** Reads up to `limit` rows after `lastKey` in key order. */
export async function readChunk(
  client: pg.Client,
  plan: SnapshotPlan,
  lastKey: readonly string[] | null,
  limit: number,
): Promise<Chunk> {
  // Every column is read as text; the key is compared and ordered through the table alias, never by the
  // select list's text output columns of the same name (ORDER BY would take those first).
  // format('%s', …) prints a value with its type's output function — the text pgoutput sends (a cast to text
  // is not: `true::text` is 'true', not 't'; char(n) loses its padding; inet gains a netmask).
  const select = plan.columns.map((column) => {
    const name = `s.${quoteIdentifier(column.name)}`;
    return `CASE WHEN ${name} IS NULL THEN NULL ELSE format('%s', ${name}) END`;
  });
  const keyed = plan.keyKind !== 'ctid';
  const keyList = keyed ? plan.keyColumns.map((name) => `s.${quoteIdentifier(name)}`).join(', ') : 's.ctid';
  if (!keyed) select.push('s.ctid::text');
  const params: unknown[] = [];
  let where = '';
  if (lastKey !== null) {
    const casts = keyed
      ? plan.keyIndexes.map((index, i) => {
          params.push(lastKey[i]);
          return `$${params.length}::${plan.columns[index]!.typeName}`;
        })
      : [(params.push(lastKey[0]), `$${params.length}::tid`)];
    where = ` WHERE (${keyList}) > (${casts.join(', ')})`;
  }
  params.push(limit);
  const sql = `SELECT ${select.join(', ')} FROM ${qualifiedName(plan.table)} AS s${where} ORDER BY ${keyList} LIMIT $${params.length}`;
  try {
    const result = await client.query({ text: sql, values: params, rowMode: 'array' });
    const rows = result.rows as (string | null)[][];
    const last = rows[rows.length - 1];
    const lastKeyOut = last
      ? keyed
        ? plan.keyIndexes.map((index) => last[index] ?? '')
        : [last[last.length - 1] ?? '']
      : null;
    return { rows: keyed ? rows : rows.map((row) => row.slice(0, -1)), lastKey: lastKeyOut, limit };
  } catch (error) {
    throw classify(error, {
      ...ORIGIN,
      what: `reading a snapshot chunk of ${plan.table.schema}.${plan.table.table}`,
    });
  }
}
