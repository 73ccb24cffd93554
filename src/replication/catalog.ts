/**
 * The source's catalog, over the ordinary connection: what the replication stream does not say about types.
 *
 * pgoutput describes a column by type OID and names a non-built-in type only by namespace and name (its Type
 * message); wal2json says even less. Mapping a value right sometimes needs more: a domain prints as its base
 * type (a domain over `int4[]` is an array), an array's elements have their own type, and a type's array
 * delimiter is not always a comma. This module reads those facts from `pg_type` on demand — for the OIDs of a
 * relation the run has not seen before — following base and element types, and caches them for the run.
 * Built-in OIDs (below 10000) are never queried: their mapping is fixed (decoding/values.ts).
 * https://www.postgresql.org/docs/current/catalog-pg-type.html
 */
import type pg from 'pg';
import type { ReplicaIdentity, TableDefinition } from '../decoding/messages.js';
import type { TypeInfo } from '../decoding/values.js';
import { classify } from '../errors.js';

/** OIDs below this are assigned at initdb and fixed across servers of a major version family. */
const FIRST_USER_OID = 10_000;
/** Base and element types are followed this deep (a domain over an array of a domain ...). */
const MAX_TYPE_DEPTH = 8;

interface TypeRow {
  oid: number;
  typname: string;
  nspname: string;
  typtype: string;
  typcategory: string;
  typelem: number;
  typdelim: string;
  typbasetype: number;
}

export class TypeCatalog {
  private readonly known = new Map<number, TypeInfo>();

  /**
   * `client` is the connection to query, or a function giving it at each query (the run's source link, which
   * replaces a connection a drop has broken).
   */
  constructor(client: pg.Client | (() => pg.Client)) {
    this.clientOf = typeof client === 'function' ? client : () => client;
  }

  private readonly clientOf: () => pg.Client;

  private get client(): pg.Client {
    return this.clientOf();
  }

  get registry(): ReadonlyMap<number, TypeInfo> {
    return this.known;
  }

  /** The live columns of `schema.table` now (see `tableColumns`). */
  columns(schema: string, table: string): Promise<CatalogColumn[] | undefined> {
    return tableColumns(this.client, schema, table);
  }

  /** `schema.table` as the catalog describes it now (see `tableDefinition`). */
  definition(schema: string, table: string): Promise<TableDefinition | undefined> {
    return tableDefinition(this.client, schema, table);
  }

  /** Loads (once) what `pg_type` says of `oids` and of the types they are built on. */
  async load(oids: Iterable<number>): Promise<void> {
    let wanted = [...new Set(oids)].filter((oid) => oid >= FIRST_USER_OID && !this.known.has(oid));
    for (let depth = 0; wanted.length > 0 && depth < MAX_TYPE_DEPTH; depth++) {
      let rows: TypeRow[];
      try {
        const result = await this.client.query(
          `SELECT t.oid::int AS oid, t.typname, n.nspname, t.typtype, t.typcategory, t.typelem::int AS typelem,
                  t.typdelim, t.typbasetype::int AS typbasetype
             FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
            WHERE t.oid = ANY($1::oid[])`,
          [wanted],
        );
        rows = result.rows as TypeRow[];
      } catch (error) {
        throw classify(error, { origin: 'source', what: 'reading column types from pg_type' });
      }
      const next: number[] = [];
      for (const row of rows) {
        this.known.set(row.oid, {
          oid: row.oid,
          name: row.typname,
          namespace: row.nspname,
          category: row.typcategory,
          ...(row.typelem !== 0 ? { elementOid: row.typelem } : {}),
          delimiter: row.typdelim,
          ...(row.typtype === 'd' && row.typbasetype !== 0 ? { baseOid: row.typbasetype } : {}),
        });
        for (const related of [row.typelem, row.typbasetype])
          if (related >= FIRST_USER_OID && !this.known.has(related)) next.push(related);
      }
      wanted = [...new Set(next)];
    }
  }
}

/** A table column as the catalog describes it (what the Relation message does not say). */
export interface CatalogColumn {
  readonly name: string;
  /** `pg_attribute.attnum`: stable for the column's life (a rename keeps it), never reused in the table. */
  readonly attnum: number;
  readonly notNull: boolean;
  /** `format_type(atttypid, atttypmod)`, e.g. `numeric(10,2)`, `character varying(40)`, `mood[]`. */
  readonly typeName: string;
  /** `atttypid`: the column's type now (a Relation message written before `ALTER COLUMN ... TYPE` differs). */
  readonly typeOid: number;
  /** Part of the table's primary key. */
  readonly primaryKey: boolean;
}

/** The live columns of `schema.table` now, or undefined when the table no longer exists. */
export async function tableColumns(
  client: pg.Client,
  schema: string,
  table: string,
): Promise<CatalogColumn[] | undefined> {
  try {
    const result = await client.query(
      `SELECT a.attname AS name, a.attnum::int AS attnum, a.attnotnull AS "notNull",
              format_type(a.atttypid, a.atttypmod) AS "typeName", a.atttypid::int AS "typeOid",
              EXISTS (SELECT 1 FROM pg_index i
                       WHERE i.indrelid = c.oid AND i.indisprimary AND a.attnum = ANY(i.indkey)) AS "primaryKey"
         FROM pg_attribute a
         JOIN pg_class c ON c.oid = a.attrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum`,
      [schema, table],
    );
    return result.rowCount === 0 ? undefined : (result.rows as CatalogColumn[]);
  } catch (error) {
    throw classify(error, { origin: 'source', what: `reading the columns of ${schema}.${table}` });
  }
}

interface DefinitionRow {
  replicaIdentity: string;
  /** Null for the one row of a table without columns. */
  name: string | null;
  typeOid: string;
  typeModifier: number;
  generated: boolean;
  toastable: boolean;
  isKey: boolean;
}

const REPLICA_IDENTITIES: ReadonlySet<string> = new Set(['d', 'n', 'f', 'i']);

/**
 * `schema.table` now, as a Relation message would describe it plus what wal2json needs to read its changes
 * (PostgreSQL 12+: `attgenerated`): the replica identity (`relreplident`), and per live column its name, type
 * OID and modifier, whether it is generated, whether its type is variable-length (so TOASTable), and whether it
 * is part of the replica identity key as pgoutput flags it — every column under FULL, the primary key's columns
 * under DEFAULT, the identity index's columns under USING INDEX, none under NOTHING. Undefined when no such
 * table exists.
 */
export async function tableDefinition(
  client: pg.Client,
  schema: string,
  table: string,
): Promise<TableDefinition | undefined> {
  let rows: DefinitionRow[];
  try {
    const result = await client.query(
      `SELECT c.relreplident AS "replicaIdentity", a.attname AS name, a.atttypid::int8::text AS "typeOid",
              a.atttypmod AS "typeModifier", a.attgenerated <> '' AS generated, a.attlen = -1 AS toastable,
              (c.relreplident = 'f' OR COALESCE(a.attnum = ANY (i.indkey), false)) AS "isKey"
         FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
         LEFT JOIN pg_index i ON i.indrelid = c.oid
              AND CASE c.relreplident WHEN 'd' THEN i.indisprimary WHEN 'i' THEN i.indisreplident ELSE false END
        WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')
        ORDER BY a.attnum`,
      [schema, table],
    );
    rows = result.rows as DefinitionRow[];
  } catch (error) {
    throw classify(error, { origin: 'source', what: `reading the definition of ${schema}.${table}` });
  }
  const first = rows[0];
  if (first === undefined) return undefined;
  const replicaIdentity = REPLICA_IDENTITIES.has(first.replicaIdentity)
    ? (first.replicaIdentity as ReplicaIdentity)
    : 'd';
  return {
    replicaIdentity,
    columns: rows.flatMap((row) =>
      row.name === null
        ? []
        : [
            {
              name: row.name,
              typeOid: Number(row.typeOid),
              typeModifier: row.typeModifier,
              isKey: row.isKey,
              generated: row.generated,
              toastable: row.toastable,
            },
          ],
    ),
  };
}
