/**
 * Lake types: the SQL type a reader sees for an archived column, and how a column whose type changed over
 * the archive's life is read as one type. Pure.
 *
 * A column's lake type is what its Parquet objects hold (contract §3.1): taken from the Parquet schema the
 * manifest records for a Parquet object, and derived the same way (sink/parquet/schema.ts) for a JSON Lines
 * object, from the type OID and typmod the manifest records — so that one table reads with the same column
 * types whatever format its objects have. A non-built-in type the manifest names with `[]` is an array of
 * strings; every other non-built-in type (enums, domains, …) is text. When a column's type differs between
 * schema versions (`ALTER COLUMN ... TYPE`), `unifyTypes` picks one type that holds every version's values
 * exactly (integers widen, decimals widen while they fit 38 digits, `date` widens to `timestamp`, small integers
 * to `double`), and text otherwise — and says so.
 */
import type { TypeInfo } from '../decoding/values.js';
import { planColumns, type ParquetTypeDescription } from '../sink/parquet/schema.js';

export type LakeScalar =
  | { readonly kind: 'boolean' }
  | { readonly kind: 'smallint' }
  | { readonly kind: 'integer' }
  | { readonly kind: 'bigint' }
  | { readonly kind: 'float' }
  | { readonly kind: 'double' }
  | { readonly kind: 'decimal'; readonly precision: number; readonly scale: number }
  | { readonly kind: 'varchar' }
  | { readonly kind: 'json' }
  | { readonly kind: 'blob' }
  | { readonly kind: 'date' }
  | { readonly kind: 'time' }
  | { readonly kind: 'timestamp' }
  | { readonly kind: 'timestamptz' };

/** A column's type: a scalar, or a list (one-dimensional array) of one. */
export interface LakeType {
  readonly scalar: LakeScalar;
  readonly list: boolean;
}

export const VARCHAR: LakeType = { scalar: { kind: 'varchar' }, list: false };

/** The lake scalar of a Parquet scalar type description (as the manifest records it). */
export function scalarOfParquet(description: ParquetTypeDescription): LakeScalar {
  const logical = description.logicalType ?? '';
  const decimal = /^DECIMAL\((\d+),(\d+)\)$/.exec(logical);
  if (decimal) return { kind: 'decimal', precision: Number(decimal[1]), scale: Number(decimal[2]) };
  switch (logical) {
    case 'STRING':
      return { kind: 'varchar' };
    case 'JSON':
      return { kind: 'json' };
    case 'DATE':
      return { kind: 'date' };
    case 'TIME(MICROS,false)':
      return { kind: 'time' };
    case 'TIMESTAMP(MICROS,false)':
      return { kind: 'timestamp' };
    case 'TIMESTAMP(MICROS,true)':
      return { kind: 'timestamptz' };
  }
  switch (description.physicalType) {
    case 'BOOLEAN':
      return { kind: 'boolean' };
    case 'INT32':
      return description.convertedType === 'INT_16' ? { kind: 'smallint' } : { kind: 'integer' };
    case 'INT64':
      return { kind: 'bigint' };
    case 'FLOAT':
      return { kind: 'float' };
    case 'DOUBLE':
      return { kind: 'double' };
    case 'BYTE_ARRAY':
      return { kind: 'blob' };
    default:
      return { kind: 'varchar' };
  }
}

/** A Parquet field as the manifest records it (`parquet.schema[]`). */
export interface RecordedParquetField extends ParquetTypeDescription {
  readonly name: string;
  readonly element?: ParquetTypeDescription;
}

export function typeOfParquetField(field: RecordedParquetField): LakeType {
  if (field.logicalType === 'LIST' && field.element)
    return { scalar: scalarOfParquet(field.element), list: true };
  return { scalar: scalarOfParquet(field), list: false };
}

/** Postgres user types start here; below it the mapping is fixed by OID. */
const FIRST_USER_OID = 10_000;

/**
 * The lake type of a column from its Postgres type alone (what a Parquet object of it would hold). A user
 * type is an array when its recorded name ends with `[]` (`format_type` of an array type).
 */
export function typeOfPostgres(typeOid: number, typeModifier: number, typeName: string | null): LakeType {
  let type: TypeInfo | undefined;
  if (typeOid >= FIRST_USER_OID && typeName !== null) {
    const array = typeName.endsWith('[]');
    type = {
      oid: typeOid,
      name: array ? `_${typeName.slice(0, -2)}` : typeName,
      category: array ? 'A' : 'U',
    };
  }
  try {
    const [plan] = planColumns([{ name: 'c', typeOid, typeModifier, ...(type ? { type } : {}) }]);
    return { scalar: scalarOfParquet(plan!.scalar.description), list: plan!.list !== undefined };
  } catch {
    return VARCHAR;
  }
}

export function sameType(a: LakeType, b: LakeType): boolean {
  return a.list === b.list && sameScalar(a.scalar, b.scalar);
}

function sameScalar(a: LakeScalar, b: LakeScalar): boolean {
  if (a.kind !== b.kind) return false;
  if (a.kind === 'decimal' && b.kind === 'decimal') return a.precision === b.precision && a.scale === b.scale;
  return true;
}

/** Digits before the point that each exact numeric kind needs. */
const INTEGER_DIGITS: Partial<Record<LakeScalar['kind'], number>> = { smallint: 5, integer: 10, bigint: 19 };

function unifyScalars(a: LakeScalar, b: LakeScalar): LakeScalar | undefined {
  if (sameScalar(a, b)) return a;
  const ints = ['smallint', 'integer', 'bigint'] as const;
  const ai = ints.indexOf(a.kind as (typeof ints)[number]);
  const bi = ints.indexOf(b.kind as (typeof ints)[number]);
  if (ai >= 0 && bi >= 0) return ai > bi ? a : b;
  const exact = (s: LakeScalar) =>
    s.kind === 'decimal'
      ? { whole: s.precision - s.scale, scale: s.scale }
      : { whole: INTEGER_DIGITS[s.kind], scale: 0 };
  if ((a.kind === 'decimal' || ai >= 0) && (b.kind === 'decimal' || bi >= 0)) {
    const ea = exact(a);
    const eb = exact(b);
    const whole = Math.max(ea.whole!, eb.whole!);
    const scale = Math.max(ea.scale, eb.scale);
    return whole + scale <= 38 ? { kind: 'decimal', precision: whole + scale, scale } : undefined;
  }
  const floats = (s: LakeScalar) => s.kind === 'float' || s.kind === 'double';
  // float → double is exact; so are smallint and integer values
  if (floats(a) && floats(b)) return { kind: 'double' };
  if ((floats(a) && (bi === 0 || bi === 1)) || (floats(b) && (ai === 0 || ai === 1)))
    return { kind: 'double' };
  const kinds = new Set([a.kind, b.kind]);
  if (kinds.has('date') && kinds.has('timestamp')) return { kind: 'timestamp' };
  return undefined;
}

/** One type for every version of a column, and a note when that is not simply the one type it always had. */
export function unifyTypes(types: readonly LakeType[]): { type: LakeType; note?: string } {
  const distinct: LakeType[] = [];
  for (const type of types) if (!distinct.some((d) => sameType(d, type))) distinct.push(type);
  if (distinct.length <= 1) return { type: distinct[0] ?? VARCHAR };
  const names = distinct.map(describeType).join(', ');
  let unified: LakeType | undefined = distinct[0]!;
  for (const type of distinct.slice(1)) {
    if (unified === undefined) break;
    if (unified.list !== type.list) unified = undefined;
    else {
      const scalar = unifyScalars(unified.scalar, type.scalar);
      unified = scalar ? { scalar, list: type.list } : undefined;
    }
  }
  if (unified) return { type: unified, note: `type changed (${names}): read as ${describeType(unified)}` };
  return {
    type: VARCHAR,
    note: `type changed (${names}): no type holds every version exactly, read as text`,
  };
}

/** DuckDB's name of a lake type. */
export function duckdbType(type: LakeType): string {
  const s = type.scalar;
  const scalar =
    s.kind === 'decimal'
      ? `DECIMAL(${s.precision},${s.scale})`
      : s.kind === 'timestamptz'
        ? 'TIMESTAMPTZ'
        : s.kind.toUpperCase();
  return type.list ? `${scalar}[]` : scalar;
}

/** A short human description (notes, JSON output). */
export function describeType(type: LakeType): string {
  return duckdbType(type).toLowerCase();
}

/** Trino's (Athena engine 3) name of a lake type, as views cast to it. */
export function trinoType(type: LakeType): string {
  const s = type.scalar;
  const scalar = ((): string => {
    switch (s.kind) {
      case 'decimal':
        return `decimal(${s.precision},${s.scale})`;
      case 'float':
        return 'real';
      case 'blob':
        return 'varbinary';
      case 'time':
        return 'time(6)';
      case 'timestamp':
        return 'timestamp(6)';
      case 'timestamptz':
        return 'timestamp(6) with time zone';
      default:
        return s.kind;
    }
  })();
  return type.list ? `array(${scalar})` : scalar;
}

/**
 * The Hive (Glue) type an Athena table declares for a Parquet column of this lake type; undefined when
 * Hive has none (TIME: read as bigint microseconds by the table, converted by the view).
 */
export function hiveType(type: LakeType): string {
  const s = type.scalar;
  const scalar = ((): string => {
    switch (s.kind) {
      case 'decimal':
        return `decimal(${s.precision},${s.scale})`;
      case 'integer':
        return 'int';
      case 'varchar':
      case 'json':
        return 'string';
      case 'blob':
        return 'binary';
      case 'time':
        return 'bigint';
      case 'timestamptz':
        return 'timestamp';
      default:
        return s.kind;
    }
  })();
  return type.list ? `array<${scalar}>` : scalar;
}

/** Types whose values Postgres may store out of line (TOAST): the ones an update can leave unchanged. */
export function mayBeToasted(type: LakeType): boolean {
  return type.list || ['varchar', 'json', 'blob'].includes(type.scalar.kind);
}
