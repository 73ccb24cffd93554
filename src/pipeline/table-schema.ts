/**
 * The schema a table's objects are written with, as the manifest records it (contract §3), pure.
 *
 * The Relation message gives column names, type OIDs, type modifiers and the replica identity key; the
 * catalog adds what it does not carry: each column's `attnum` (stable for the column's life — a rename keeps
 * it, a dropped column's number is never reused — so it is the column's field id, and a later Apache Iceberg
 * commit of these files needs no rewrite), its nullability, and its type as Postgres names it
 * (`format_type`, e.g. `numeric(10,2)`), and whether it is part of the primary key (under REPLICA IDENTITY FULL
 * the Relation message marks every column as key, so readers that want a table's current state per key need
 * the primary key itself). The catalog is read when the run meets the Relation message, which may be after
 * later DDL: a catalog column describes the Relation's column only when both name and type OID match. A column
 * the catalog no longer has (dropped, renamed or retyped since the change was written) keeps what the Relation
 * message said and gets a field id above every attnum.
 */
import type { Relation } from '../decoding/messages.js';
import type { TypeRegistry } from '../decoding/values.js';
import type { CatalogColumn } from '../replication/catalog.js';
import type { ObjectColumn, TableSchemaRef } from '../sink/batch.js';

/** Field ids for columns the catalog no longer knows start here (Postgres attnums stop at 1600). */
export const UNKNOWN_COLUMN_FIELD_ID_BASE = 10_000;

export interface ColumnSchema {
  readonly name: string;
  /** Stable column id: `attnum`, or UNKNOWN_COLUMN_FIELD_ID_BASE + position when unknown. */
  readonly fieldId: number;
  readonly typeOid: number;
  readonly typeModifier: number;
  /** Postgres' name of the type, with its modifier (`format_type`); the registry's name when unknown. */
  readonly typeName: string | null;
  /** False when the column is NOT NULL; null when unknown. */
  readonly nullable: boolean | null;
  /** Part of the replica identity (the key `before` carries). */
  readonly key: boolean;
  /** Part of the table's primary key; null when the catalog does not describe this column. */
  readonly primaryKey: boolean | null;
}

export interface TableSchema {
  readonly schema: string;
  readonly table: string;
  /** `d` default (primary key), `n` nothing, `f` full, `i` index. */
  readonly replicaIdentity: string;
  readonly columns: readonly ColumnSchema[];
}

export function describeTable(
  relation: Relation,
  catalog: readonly CatalogColumn[] | undefined,
  types: TypeRegistry,
): TableSchema {
  const byName = new Map((catalog ?? []).map((column) => [column.name, column]));
  return {
    schema: relation.namespace,
    table: relation.name,
    replicaIdentity: relation.replicaIdentity,
    columns: relation.columns.map((column, position) => {
      const named = byName.get(column.name);
      const known = named?.typeOid === column.typeOid ? named : undefined;
      return {
        name: column.name,
        fieldId: known?.attnum ?? UNKNOWN_COLUMN_FIELD_ID_BASE + position,
        typeOid: column.typeOid,
        typeModifier: column.typeModifier,
        typeName: known?.typeName ?? types.get(column.typeOid)?.name ?? null,
        nullable: known ? !known.notNull : null,
        key: column.isKey,
        primaryKey: known ? known.primaryKey : null,
      };
    }),
  };
}

/** The handle objects are opened with: the description for the manifest, the columns for typed formats. */
export function tableSchemaRef(
  schemaId: number,
  relation: Relation,
  catalog: readonly CatalogColumn[] | undefined,
  types: TypeRegistry,
): TableSchemaRef {
  const description = describeTable(relation, catalog, types);
  const columns: ObjectColumn[] = description.columns.map((column) => ({
    name: column.name,
    typeOid: column.typeOid,
    typeModifier: column.typeModifier,
    fieldId: column.fieldId,
  }));
  return {
    id: schemaId,
    table: { schema: relation.namespace, table: relation.name },
    description,
    columns,
    types,
  };
}
