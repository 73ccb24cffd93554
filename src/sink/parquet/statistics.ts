/**
 * Column statistics of a Parquet object for the manifest: per field, the rows where it is null and the
 * min/max of its values, in a JSON-safe form that later table formats (Apache Iceberg's lower/upper
 * bounds, value and null counts) can be built from without reading the file again.
 *
 * Bounds are the Parquet values (for a LIST field: of its elements), merged from the statistics
 * hyparquet-writer computes for each row group, written as: BOOLEAN → boolean; INT32 and DATE → number
 * (DATE in days since 1970-01-01); INT64, TIME and TIMESTAMP → the integer as a decimal string (µs for
 * times); DECIMAL → the exact decimal text (`-12.50`); FLOAT/DOUBLE → number, or `"Infinity"` /
 * `"-Infinity"` (NaN is never a bound: it is counted in `nanCount`); STRING → string; BYTE_ARRAY →
 * base64. Strings and bytes longer than 16 characters (bytes) are truncated as Iceberg truncates them:
 * `min` is a prefix and `max` a prefix whose last character (byte) is rounded up, so both stay bounds;
 * `truncated` says so. JSON columns, `_before` and `_unrepresentable` carry no bounds.
 */
import type { ParquetWriter } from 'hyparquet-writer';
import type { StatisticsKind } from './schema.js';

type ChunkStatistics = NonNullable<
  NonNullable<ParquetWriter['row_groups'][number]['columns'][number]['meta_data']>['statistics']
>;
type Bound = ChunkStatistics['min_value'];

export interface ParquetColumnStatistics {
  readonly name: string;
  readonly fieldId: number;
  /** Rows in which the field is null (for a LIST field: the list itself is null). */
  readonly nullCount: number;
  /** FLOAT/DOUBLE fields: NaN values (list elements included). */
  readonly nanCount?: number;
  readonly min?: string | number | boolean;
  readonly max?: string | number | boolean;
  /** True when a string or bytes bound was shortened (min a prefix, max a rounded-up prefix). */
  readonly truncated?: true;
}

/** Bounds longer than this (code points, or bytes) are truncated. */
export const BOUND_LENGTH = 16;

/** Strings in UTF-8 byte order, which is code point order (JS `<` compares UTF-16 units). */
export function compareCodePoints(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.codePointAt(i)!;
    const y = b.codePointAt(i)!;
    if (x !== y) return x - y;
    if (x > 0xffff) i++;
  }
  return a.length - b.length;
}

function compare(kind: StatisticsKind, a: NonNullable<Bound>, b: NonNullable<Bound>): number {
  switch (kind) {
    case 'string':
      return compareCodePoints(String(a), String(b));
    case 'bytes':
      return Buffer.compare(a as Uint8Array, b as Uint8Array);
    case 'boolean':
      return Number(a) - Number(b);
    default:
      return a < b ? -1 : a > b ? 1 : 0;
  }
}

/** The first BOUND_LENGTH code points of `text`; with `roundUp` the last kept one is incremented. */
export function truncateString(text: string, roundUp: boolean): string | undefined {
  const points = Array.from(text);
  if (points.length <= BOUND_LENGTH) return text;
  const kept = points.slice(0, BOUND_LENGTH);
  if (!roundUp) return kept.join('');
  for (let i = kept.length - 1; i >= 0; i--) {
    const code = kept[i]!.codePointAt(0)!;
    if (code >= 0x10ffff) continue;
    const next = code === 0xd7ff ? 0xe000 : code + 1; // skip the surrogate range
    return kept.slice(0, i).join('') + String.fromCodePoint(next);
  }
  return undefined;
}

/** The first BOUND_LENGTH bytes; with `roundUp` the last byte below 0xff is incremented. */
export function truncateBytes(bytes: Uint8Array, roundUp: boolean): Uint8Array | undefined {
  if (bytes.length <= BOUND_LENGTH) return bytes;
  const kept = Uint8Array.from(bytes.subarray(0, BOUND_LENGTH));
  if (!roundUp) return kept;
  for (let i = kept.length - 1; i >= 0; i--) {
    if (kept[i]! < 0xff) {
      kept[i]!++;
      return kept.subarray(0, i + 1);
    }
  }
  return undefined;
}

/** An unscaled decimal integer as decimal text with `scale` fraction digits. */
export function formatDecimal(unscaled: bigint, scale: number): string {
  const negative = unscaled < 0n;
  const digits = (negative ? -unscaled : unscaled).toString();
  if (scale === 0) return (negative ? '-' : '') + digits;
  const padded = digits.padStart(scale + 1, '0');
  const point = padded.length - scale;
  return `${negative ? '-' : ''}${padded.slice(0, point)}.${padded.slice(point)}`;
}

export class StatisticsAccumulator {
  nulls = 0;
  private nans = 0;
  private min: NonNullable<Bound> | undefined;
  private max: NonNullable<Bound> | undefined;

  constructor(
    private readonly kind: StatisticsKind,
    private readonly scale: number | undefined,
  ) {}

  /** Merges one row group's column chunk statistics. */
  addChunk(statistics: ChunkStatistics | undefined): void {
    if (this.kind === 'none' || statistics === undefined) return;
    // hyparquet-writer counts NaNs (parquet-format's nan_count); hyparquet's type does not list it
    const nanCount = (statistics as { nan_count?: bigint }).nan_count;
    if (nanCount !== undefined) this.nans += Number(nanCount);
    const { min_value: low, max_value: high } = statistics;
    if (
      low !== undefined &&
      low !== null &&
      (this.min === undefined || compare(this.kind, low, this.min) < 0)
    )
      this.min = low;
    if (
      high !== undefined &&
      high !== null &&
      (this.max === undefined || compare(this.kind, high, this.max) > 0)
    )
      this.max = high;
  }

  result(name: string, fieldId: number): ParquetColumnStatistics {
    const base = {
      name,
      fieldId,
      nullCount: this.nulls,
      ...(this.kind === 'float' ? { nanCount: this.nans } : {}),
    };
    if (this.min === undefined || this.max === undefined) return base;
    const low = this.bound(this.min, false);
    const high = this.bound(this.max, true);
    const truncated = low.truncated || high.truncated;
    return {
      ...base,
      ...(low.value !== undefined ? { min: low.value } : {}),
      ...(high.value !== undefined ? { max: high.value } : {}),
      ...(truncated ? { truncated: true as const } : {}),
    };
  }

  private bound(
    value: NonNullable<Bound>,
    isMax: boolean,
  ): { value: string | number | boolean | undefined; truncated: boolean } {
    switch (this.kind) {
      case 'boolean':
        return { value: Boolean(value), truncated: false };
      case 'int32':
      case 'date':
        return { value: Number(value), truncated: false };
      case 'int64':
        return { value: String(value), truncated: false };
      case 'decimal':
        return { value: formatDecimal(BigInt(value as bigint), this.scale ?? 0), truncated: false };
      case 'float': {
        const number = Number(value);
        return { value: Number.isFinite(number) ? number : String(number), truncated: false };
      }
      case 'string': {
        const text = String(value);
        const cut = truncateString(text, isMax);
        return { value: cut, truncated: cut !== text };
      }
      case 'bytes': {
        const bytes = value as Uint8Array;
        const cut = truncateBytes(bytes, isMax);
        return {
          value: cut === undefined ? undefined : Buffer.from(cut).toString('base64'),
          truncated: cut !== bytes,
        };
      }
      default:
        return { value: undefined, truncated: false };
    }
  }
}
