/**
 * The schema a table's objects are written with, as the manifest records it (contract §3), pure.
 *
 * The Relation message gives column names, type OIDs, type modifiers and the replica identity key; the
 * catalog adds what it does not carry: each column's `attnum` (stable for the column's life — a rename keeps
 * it, a dropped column's number is never reused — so it is the column's field id, and a later Apache Iceberg
 * commit of these files needs no rewrite), its nullability, and its type as Postgres names it
 * (`format_type`, e.g. `numeric(10,2)`). A column the catalog no longer has (dropped since the change was
 * written) keeps what the Relation message said and gets a field id above every attnum.
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
      const known = byName.get(column.name);
      return {
        name: column.name,
        fieldId: known?.attnum ?? UNKNOWN_COLUMN_FIELD_ID_BASE + position,
        typeOid: column.typeOid,
        typeModifier: column.typeModifier,
        typeName: known?.typeName ?? types.get(column.typeOid)?.name ?? null,
        nullable: known ? !known.notNull : null,
        key: column.isKey,
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
