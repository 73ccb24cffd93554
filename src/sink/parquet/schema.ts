/**
 * The Parquet schema of a table's change objects (contract §3.1): which Parquet type each Postgres column
 * becomes, and the metadata columns every object carries.
 *
 * A column's type comes from its type OID and typmod, as the Relation message gives them: bool → BOOLEAN;
 * int2/int4 → INT32 annotated INT_16/INT_32; int8 and oid → INT64; float4 → FLOAT; float8 → DOUBLE;
 * numeric(p,s) → DECIMAL(p,s) (INT32 up to 9 digits, INT64 up to 18, FIXED_LEN_BYTE_ARRAY up to 38),
 * unconstrained numeric and numeric wider than 38 digits → STRING (the exact text); json/jsonb →
 * BYTE_ARRAY annotated JSON; bytea → BYTE_ARRAY; date → DATE; time → TIME(MICROS, local);
 * timestamp → TIMESTAMP(MICROS, not UTC-adjusted); timestamptz → TIMESTAMP(MICROS, UTC-adjusted); a
 * one-dimensional array → the three-level LIST of its element's type; everything else (text types, uuid,
 * enums, domains, ranges, intervals, …) → STRING holding Postgres' text output. Postgres' numeric typmod
 * is `((p << 16) | (s & 0x7ff)) + 4`, the scale an 11-bit signed number (Postgres 15 allows s < 0 and
 * s > p): numeric(p,s) with s < 0 holds integers and becomes DECIMAL(p-s, 0); with s > p it becomes
 * DECIMAL(s, s). Every field carries a Parquet `field_id` (Apache Iceberg reads columns by id): table
 * columns take the caller's ids (position + 1 by default), list elements theirs (1,000,000,000 + the
 * column's id by default), metadata columns fixed ids from 2,000,000,001 (see METADATA_FIELD_IDS).
 * Pure: no I/O.
 */
import type { ParquetWriter } from 'hyparquet-writer';
import { BUILTIN_ARRAY_ELEMENTS, PgType, type TypeInfo, type TypeRegistry } from '../../decoding/values.js';
import {
  toBoolean,
  toBytes,
  toDate,
  toDecimal,
  toDouble,
  toFloat,
  toInt32,
  toInt64,
  toText,
  toTime,
  toTimestamp,
  toTimestamptz,
  type Converter,
} from './convert.js';

/** hyparquet's schema element (the Thrift SchemaElement of parquet-format). */
export type SchemaElement = ConstructorParameters<typeof ParquetWriter>[0]['schema'][number];

export type ParquetPhysicalType =
  'BOOLEAN' | 'INT32' | 'INT64' | 'FLOAT' | 'DOUBLE' | 'BYTE_ARRAY' | 'FIXED_LEN_BYTE_ARRAY';

export type ParquetRepetition = 'REQUIRED' | 'OPTIONAL' | 'REPEATED';

/** One column of the table, as the Relation message describes it. */
export interface ParquetColumn {
  readonly name: string;
  readonly typeOid: number;
  /** `atttypmod`: -1 when the type has none. For arrays, the element's typmod (as Postgres keeps it). */
  readonly typeModifier: number;
  /**
   * What is known of a non-built-in type (pg_type or a pgoutput Type message): an array of enums or of
   * a domain is recognised from `elementOid`/`category` or from its `_name`; without it such a column is
   * a STRING holding the array's text.
   */
  readonly type?: TypeInfo;
  /** Parquet `field_id` of the column; position + 1 by default. */
  readonly fieldId?: number;
  /** Parquet `field_id` of a LIST column's element; 1,000,000,000 + fieldId by default. */
  readonly elementFieldId?: number;
}

/** What a value maps to, for the schema description (the manifest). */
export interface ParquetTypeDescription {
  readonly physicalType: ParquetPhysicalType;
  /** FIXED_LEN_BYTE_ARRAY only. */
  readonly typeLength?: number;
  /** parquet-format logical type: `STRING`, `JSON`, `DATE`, `DECIMAL(p,s)`, `TIME(MICROS,false)`, … */
  readonly logicalType?: string;
  /** The legacy converted type written alongside (or instead of) the logical type. */
  readonly convertedType?: string;
}

/** One top-level field of the file, for the manifest. */
export interface ParquetFieldDescription {
  readonly name: string;
  readonly fieldId: number;
  readonly repetition: ParquetRepetition;
  /** A table column's Postgres type; absent for metadata columns. */
  readonly pgTypeOid?: number;
  readonly pgTypeModifier?: number;
  /** Scalars: the column's type. LIST columns: `{ logicalType: 'LIST' }` plus `element`. */
  readonly physicalType?: ParquetPhysicalType;
  readonly typeLength?: number;
  readonly logicalType?: string;
  readonly convertedType?: string;
  /** LIST columns: the element field (repetition OPTIONAL: elements may be null). */
  readonly element?: ParquetTypeDescription & { readonly fieldId: number; readonly repetition: 'OPTIONAL' };
}

export interface ParquetSchemaDescription {
  /** Table columns in Relation order, then the metadata columns. */
  readonly fields: readonly ParquetFieldDescription[];
}

/** How a scalar's values are written and summarised. */
export type StatisticsKind =
  'boolean' | 'int32' | 'int64' | 'float' | 'decimal' | 'date' | 'string' | 'bytes' | 'none';

/** A scalar Parquet type and how Postgres text becomes its values. */
export interface ScalarType {
  readonly description: ParquetTypeDescription;
  /** The type part of the schema element (no name, repetition or field id). */
  readonly element: Omit<SchemaElement, 'name' | 'repetition_type' | 'field_id' | 'num_children'>;
  /** A converted type written in the footer only (set on the element just before it is written). */
  readonly footerConvertedType?: 'JSON';
  readonly convert: Converter<unknown>;
  readonly statistics: StatisticsKind;
  /** DECIMAL scale, to print statistics bounds. */
  readonly scale?: number;
  /** Bytes a value takes in the row-group buffer estimate when its size is fixed. */
  readonly fixedBytes?: number;
}

/** How one table column is written. */
export interface ColumnPlan {
  readonly name: string;
  readonly fieldId: number;
  readonly pgTypeOid: number;
  readonly pgTypeModifier: number;
  readonly scalar: ScalarType;
  /** Set for LIST columns: the array text's element delimiter. */
  readonly list?: { readonly delimiter: string; readonly elementFieldId: number };
}

/** Field ids of the metadata columns: fixed, far from table column ids, clear of Iceberg's reserved ids. */
export const METADATA_FIELD_IDS = {
  _op: 2_000_000_001,
  _lsn: 2_000_000_002,
  _commit_lsn: 2_000_000_003,
  _seq: 2_000_000_004,
  _tx_id: 2_000_000_005,
  _commit_ts: 2_000_000_006,
  _before: 2_000_000_007,
  _unchanged_toast: 2_000_000_008,
  '_unchanged_toast.element': 2_000_000_009,
  _unrepresentable: 2_000_000_010,
} as const;

export const METADATA_COLUMN_NAMES = [
  '_op',
  '_lsn',
  '_commit_lsn',
  '_seq',
  '_tx_id',
  '_commit_ts',
  '_before',
  '_unchanged_toast',
  '_unrepresentable',
] as const;

export const ELEMENT_FIELD_ID_OFFSET = 1_000_000_000;
const MAX_FIELD_ID = 2 ** 31 - 1;

// ---------------------------------------------------------------------------------------------------
// Scalar types

const STRING_ELEMENT = {
  type: 'BYTE_ARRAY',
  converted_type: 'UTF8',
  logical_type: { type: 'STRING' },
} as const;

export const STRING: ScalarType = {
  description: { physicalType: 'BYTE_ARRAY', logicalType: 'STRING', convertedType: 'UTF8' },
  element: STRING_ELEMENT,
  convert: toText,
  statistics: 'string',
};

/**
 * json/jsonb: the text, annotated JSON. No min/max: hyparquet keeps JSON bounds whole in the footer.
 * The JSON converted type (which DuckDB needs to read the column as JSON) is set for the footer only:
 * while pages are encoded, hyparquet-writer would re-serialise values of that converted type.
 */
const JSON_TYPE: ScalarType = {
  description: { physicalType: 'BYTE_ARRAY', logicalType: 'JSON', convertedType: 'JSON' },
  element: { type: 'BYTE_ARRAY', logical_type: { type: 'JSON' } },
  footerConvertedType: 'JSON',
  convert: toText,
  statistics: 'none',
};

const BOOLEAN: ScalarType = {
  description: { physicalType: 'BOOLEAN' },
  element: { type: 'BOOLEAN' },
  convert: toBoolean,
  statistics: 'boolean',
  fixedBytes: 1,
};

/*
 * int2/int4 carry the converted types INT_16/INT_32, which parquet-format defines as INT(16, signed) and
 * INT(32, signed). The INTEGER logical type itself is not written: hyparquet-writer 0.17 encodes its
 * bitWidth as a Thrift i32 where the format says i8, and strict readers (DuckDB) reject the footer.
 */
const INT16: ScalarType = {
  description: { physicalType: 'INT32', convertedType: 'INT_16' },
  element: { type: 'INT32', converted_type: 'INT_16' },
  convert: toInt32(-32768, 32767),
  statistics: 'int32',
  fixedBytes: 4,
};

const INT32: ScalarType = {
  description: { physicalType: 'INT32', convertedType: 'INT_32' },
  element: { type: 'INT32', converted_type: 'INT_32' },
  convert: toInt32(-2147483648, 2147483647),
  statistics: 'int32',
  fixedBytes: 4,
};

export const INT64: ScalarType = {
  description: { physicalType: 'INT64' },
  element: { type: 'INT64' },
  convert: toInt64,
  statistics: 'int64',
  fixedBytes: 8,
};

const FLOAT: ScalarType = {
  description: { physicalType: 'FLOAT' },
  element: { type: 'FLOAT' },
  convert: toFloat,
  statistics: 'float',
  fixedBytes: 4,
};

const DOUBLE: ScalarType = {
  description: { physicalType: 'DOUBLE' },
  element: { type: 'DOUBLE' },
  convert: toDouble,
  statistics: 'float',
  fixedBytes: 8,
};

const BYTES: ScalarType = {
  description: { physicalType: 'BYTE_ARRAY' },
  element: { type: 'BYTE_ARRAY' },
  convert: toBytes,
  statistics: 'bytes',
};

const DATE: ScalarType = {
  description: { physicalType: 'INT32', logicalType: 'DATE', convertedType: 'DATE' },
  element: { type: 'INT32', converted_type: 'DATE', logical_type: { type: 'DATE' } },
  convert: toDate,
  statistics: 'date',
  fixedBytes: 4,
};

/* TIME_MICROS and TIMESTAMP_MICROS mean UTC-adjusted: only the UTC-adjusted timestamp carries one. */
const TIME: ScalarType = {
  description: { physicalType: 'INT64', logicalType: 'TIME(MICROS,false)' },
  element: { type: 'INT64', logical_type: { type: 'TIME', isAdjustedToUTC: false, unit: 'MICROS' } },
  convert: toTime,
  statistics: 'int64',
  fixedBytes: 8,
};

const TIMESTAMP: ScalarType = {
  description: { physicalType: 'INT64', logicalType: 'TIMESTAMP(MICROS,false)' },
  element: { type: 'INT64', logical_type: { type: 'TIMESTAMP', isAdjustedToUTC: false, unit: 'MICROS' } },
  convert: toTimestamp,
  statistics: 'int64',
  fixedBytes: 8,
};

export const TIMESTAMPTZ: ScalarType = {
  description: {
    physicalType: 'INT64',
    logicalType: 'TIMESTAMP(MICROS,true)',
    convertedType: 'TIMESTAMP_MICROS',
  },
  element: {
    type: 'INT64',
    converted_type: 'TIMESTAMP_MICROS',
    logical_type: { type: 'TIMESTAMP', isAdjustedToUTC: true, unit: 'MICROS' },
  },
  convert: toTimestamptz,
  statistics: 'int64',
  fixedBytes: 8,
};

/** Declared precision and scale of a numeric typmod, or undefined for unconstrained numeric. */
export function numericTypmod(typeModifier: number): { precision: number; scale: number } | undefined {
  if (typeModifier < 4) return undefined;
  const packed = typeModifier - 4;
  const precision = (packed >> 16) & 0xffff;
  // Postgres 15+: the scale is an 11-bit two's complement number (-1000..1000)
  const scale = ((packed & 0x7ff) ^ 1024) - 1024;
  return { precision, scale };
}

/** Bytes of the smallest two's-complement integer holding every `precision`-digit number. */
export function decimalByteLength(precision: number): number {
  const max = 10n ** BigInt(precision) - 1n;
  let bytes = 1;
  while (max > (1n << BigInt(8 * bytes - 1)) - 1n) bytes++;
  return bytes;
}

const decimalTypes = new Map<string, ScalarType>();

/** DECIMAL(precision, scale), 1 ≤ precision ≤ 38, 0 ≤ scale ≤ precision. */
export function decimalType(precision: number, scale: number): ScalarType {
  const key = `${precision},${scale}`;
  let type = decimalTypes.get(key);
  if (type !== undefined) return type;
  const physical: ParquetPhysicalType =
    precision <= 9 ? 'INT32' : precision <= 18 ? 'INT64' : 'FIXED_LEN_BYTE_ARRAY';
  const typeLength = physical === 'FIXED_LEN_BYTE_ARRAY' ? decimalByteLength(precision) : undefined;
  type = {
    description: {
      physicalType: physical,
      ...(typeLength !== undefined ? { typeLength } : {}),
      logicalType: `DECIMAL(${precision},${scale})`,
      convertedType: 'DECIMAL',
    },
    element: {
      type: physical,
      ...(typeLength !== undefined ? { type_length: typeLength } : {}),
      converted_type: 'DECIMAL',
      precision,
      scale,
      logical_type: { type: 'DECIMAL', precision, scale },
    },
    convert: toDecimal(precision, scale),
    statistics: 'decimal',
    scale,
    fixedBytes: typeLength ?? (physical === 'INT32' ? 4 : 8),
  };
  decimalTypes.set(key, type);
  return type;
}

/** numeric(p,s) → DECIMAL when it fits 38 digits; otherwise (and unconstrained) STRING. */
function numericType(typeModifier: number): ScalarType {
  const declared = numericTypmod(typeModifier);
  if (declared === undefined || declared.precision < 1) return STRING;
  const { precision, scale } = declared;
  if (scale < 0) return precision - scale <= 38 ? decimalType(precision - scale, 0) : STRING;
  if (scale > precision) return scale <= 38 ? decimalType(scale, scale) : STRING;
  return precision <= 38 ? decimalType(precision, scale) : STRING;
}

/** The scalar Parquet type of a (non-array) Postgres type. */
export function scalarType(typeOid: number, typeModifier: number): ScalarType {
  switch (typeOid) {
    case PgType.bool:
      return BOOLEAN;
    case PgType.int2:
      return INT16;
    case PgType.int4:
      return INT32;
    case PgType.int8:
    case PgType.oid:
      return INT64;
    case PgType.float4:
      return FLOAT;
    case PgType.float8:
      return DOUBLE;
    case PgType.numeric:
      return numericType(typeModifier);
    case PgType.json:
    case PgType.jsonb:
      return JSON_TYPE;
    case PgType.bytea:
      return BYTES;
    case PgType.date:
      return DATE;
    case PgType.time:
      return TIME;
    case PgType.timestamp:
      return TIMESTAMP;
    case PgType.timestamptz:
      return TIMESTAMPTZ;
    default:
      return STRING;
  }
}

// ---------------------------------------------------------------------------------------------------
// Columns

function delimiterOf(elementOid: number | undefined, registry: TypeRegistry | undefined): string {
  if (elementOid === PgType.box) return ';';
  const delimiter = elementOid === undefined ? undefined : registry?.get(elementOid)?.delimiter;
  return delimiter !== undefined && delimiter.length === 1 ? delimiter : ',';
}

/**
 * The element of an array type: built-in arrays by OID; others from their TypeInfo (`elementOid` with
 * category `A`, or an `_name` array whose element is unknown: then STRING elements); a domain is what its base
 * type is (a domain over `int4[]` is a LIST of INT32, as its JSON value is an array of numbers; a domain over a
 * scalar stays STRING). undefined when the type is not an array.
 */
function arrayElement(
  column: ParquetColumn,
  registry: TypeRegistry | undefined,
): { elementOid: number | undefined } | undefined {
  return arrayElementOf(column.typeOid, column.type ?? registry?.get(column.typeOid), registry, 0);
}

/** Domains over domains are followed this deep. */
const MAX_DOMAIN_DEPTH = 8;

function arrayElementOf(
  typeOid: number,
  info: TypeInfo | undefined,
  registry: TypeRegistry | undefined,
  depth: number,
): { elementOid: number | undefined } | undefined {
  const builtin = BUILTIN_ARRAY_ELEMENTS.get(typeOid);
  if (builtin !== undefined) return { elementOid: builtin };
  if (typeOid < 10000) return undefined; // every other built-in type is a scalar (incl. int2vector)
  if (info === undefined) return undefined;
  const base = info.baseOid;
  if (base !== undefined && base !== 0 && base !== typeOid && depth < MAX_DOMAIN_DEPTH)
    return arrayElementOf(base, registry?.get(base), registry, depth + 1);
  const elementOid = info.elementOid;
  if (elementOid !== undefined && elementOid !== 0 && (info.category ?? 'A') === 'A') return { elementOid };
  if (info.category === 'A' || (info.category === undefined && info.name.length > 1 && info.name[0] === '_'))
    return { elementOid: undefined };
  return undefined;
}

function checkFieldId(id: number, what: string): number {
  if (!Number.isInteger(id) || id < 1 || id > MAX_FIELD_ID)
    throw new RangeError(`field id of ${what} must be an integer in 1..2147483647, got ${id}`);
  return id;
}

/** How each table column is written; checks names and field ids. Throws RangeError on a conflict. */
export function planColumns(columns: readonly ParquetColumn[], registry?: TypeRegistry): ColumnPlan[] {
  const names = new Set<string>(METADATA_COLUMN_NAMES);
  const ids = new Map<number, string>(
    Object.entries(METADATA_FIELD_IDS).map(([name, id]) => [id, name] as [number, string]),
  );
  const claim = (id: number, what: string) => {
    checkFieldId(id, what);
    const other = ids.get(id);
    if (other !== undefined) throw new RangeError(`field id ${id} of ${what} is already used by ${other}`);
    ids.set(id, what);
  };
  return columns.map((column, position) => {
    if (names.has(column.name)) {
      throw new RangeError(
        `column name ${JSON.stringify(column.name)} is used twice or collides with a metadata column`,
      );
    }
    names.add(column.name);
    const fieldId = column.fieldId ?? position + 1;
    claim(fieldId, `column ${JSON.stringify(column.name)}`);
    const array = arrayElement(column, registry);
    if (array === undefined) {
      return {
        name: column.name,
        fieldId,
        pgTypeOid: column.typeOid,
        pgTypeModifier: column.typeModifier,
        scalar: scalarType(column.typeOid, column.typeModifier),
      };
    }
    const elementFieldId = column.elementFieldId ?? ELEMENT_FIELD_ID_OFFSET + fieldId;
    claim(elementFieldId, `the element of column ${JSON.stringify(column.name)}`);
    const { elementOid } = array;
    return {
      name: column.name,
      fieldId,
      pgTypeOid: column.typeOid,
      pgTypeModifier: column.typeModifier,
      scalar: elementOid === undefined ? STRING : scalarType(elementOid, column.typeModifier),
      list: { delimiter: delimiterOf(elementOid, registry), elementFieldId },
    };
  });
}

// ---------------------------------------------------------------------------------------------------
// Schema elements and description

/** The schema elements of one field: a scalar, or a three-level LIST (`<name>` / `list` / `element`). */
export function fieldElements(
  name: string,
  fieldId: number,
  repetition: 'REQUIRED' | 'OPTIONAL',
  scalar: ScalarType,
  list: { readonly elementFieldId: number } | undefined,
): SchemaElement[] {
  if (list === undefined)
    return [{ name, repetition_type: repetition, field_id: fieldId, ...scalar.element }];
  return [
    {
      name,
      repetition_type: repetition,
      field_id: fieldId,
      converted_type: 'LIST',
      logical_type: { type: 'LIST' },
      num_children: 1,
    },
    { name: 'list', repetition_type: 'REPEATED', num_children: 1 },
    { name: 'element', repetition_type: 'OPTIONAL', field_id: list.elementFieldId, ...scalar.element },
  ];
}

export function describeField(
  name: string,
  fieldId: number,
  repetition: 'REQUIRED' | 'OPTIONAL',
  scalar: ScalarType,
  list: { readonly elementFieldId: number } | undefined,
  pgType?: { readonly oid: number; readonly modifier: number },
): ParquetFieldDescription {
  const pg = pgType ? { pgTypeOid: pgType.oid, pgTypeModifier: pgType.modifier } : {};
  if (list === undefined) return { name, fieldId, repetition, ...pg, ...scalar.description };
  return {
    name,
    fieldId,
    repetition,
    ...pg,
    logicalType: 'LIST',
    convertedType: 'LIST',
    element: { fieldId: list.elementFieldId, repetition: 'OPTIONAL', ...scalar.description },
  };
}
