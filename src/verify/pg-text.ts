/**
 * Archived values back to Postgres' text output: the inverse of the contract's value mapping (contract §4
 * "Values", §3.1), so that a row rebuilt from the archive can be compared with `column::text` in the source.
 *
 * Every value in the archive started as the text output of its type under the session settings slotlake
 * pins (DateStyle=ISO, TimeZone=UTC, IntervalStyle=postgres, extra_float_digits=3, bytea_output=hex); the
 * mapping to JSON or Parquet loses nothing that text held, so the text can be rebuilt exactly:
 * - JSON (JSON Lines records, Parquet `_before`): numbers keep Postgres' digits (parsed with their source
 *   text); `true`/`false` → `t`/`f`; bytea base64 → `\x` + hex; timestamp `…T…` → `… …`; timestamptz
 *   `…T…Z` → `… …+00`; arrays → Postgres array text (array_out's quoting, the type's delimiter); every
 *   other string is the text itself (numeric, text, uuid, json, date, time, enums, BC and year > 9999
 *   timestamps, `infinity`, ...).
 * - Parquet: BOOLEAN → `t`/`f`; integers → their digits; DECIMAL → the unscaled integer printed with its
 *   scale; FLOAT/DOUBLE → Postgres' shortest round-trip digits in its own layout (`1e+20`, `1e-05`, `-0`);
 *   DATE days / TIME and TIMESTAMP microseconds → ISO text (BC years as Postgres prints them); BYTE_ARRAY
 *   without annotation (bytea) → `\x` + hex; strings → themselves; LIST → array text; `_unrepresentable`
 *   holds the text itself.
 * One thing the contract drops cannot come back: an array's explicit lower bounds (`[0:1]={a,b}`); the
 * source side strips them too (verify/digest.ts), so arrays compare by their elements. Pure, no I/O.
 */
import { civilFromDays } from '../decoding/values/scalars.js';
import { RawJsonNumber } from '../decoding/values/json.js';
import { BUILTIN_ARRAY_ELEMENTS, PgType, type TypeRegistry } from '../decoding/values/types.js';
import { findByName } from '../decoding/values/mapper.js';

/** A JSON value as the archive holds it, numbers with their source digits. */
export type ArchivedJson =
  | null
  | boolean
  | string
  | RawJsonNumber
  | readonly ArchivedJson[]
  | { readonly [key: string]: ArchivedJson };

/** JSON.parse keeping every number's source text (JSON.parse source text access, Node ≥ 21). */
export function parseArchivedJson(text: string): ArchivedJson {
  return JSON.parse(text, (_key, value: unknown, context?: { source?: string }) => {
    if (typeof value !== 'number') return value;
    if (context?.source === undefined) throw new Error('JSON.parse source text access is needed (Node 22+)');
    return new RawJsonNumber(context.source);
  }) as ArchivedJson;
}

// ---------------------------------------------------------------------------------------------------
// Array text (array_out)

/**
 * How array_out decides to quote an element. Every server this was checked against (15, 17) quotes an element
 * holding a vertical tab, like the other white space; the style stays a parameter should a version differ.
 */
export interface ArrayStyle {
  readonly verticalTabIsSpace: boolean;
}

export const ARRAY_STYLE: ArrayStyle = { verticalTabIsSpace: true };

export function arrayStyleFor(serverVersionNum: number): ArrayStyle {
  void serverVersionNum;
  return ARRAY_STYLE;
}

/** One element of array text, quoted as array_out quotes it. */
export function quoteArrayElement(text: string, delimiter: string, style: ArrayStyle): string {
  let quote = text.length === 0 || text.toLowerCase() === 'null';
  let escape = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 || c === 0x5c) {
      quote = true;
      escape = true;
    } else if (
      c === 0x7b ||
      c === 0x7d ||
      text[i] === delimiter ||
      c === 0x20 ||
      c === 0x09 ||
      c === 0x0a ||
      c === 0x0d ||
      c === 0x0c ||
      (c === 0x0b && style.verticalTabIsSpace)
    )
      quote = true;
  }
  if (!quote) return text;
  return `"${escape ? text.replace(/["\\]/g, (c) => `\\${c}`) : text}"`;
}

/** Array text of nested element texts (null: NULL), as array_out prints it (lower bounds 1). */
export function arrayText(
  elements: readonly unknown[],
  element: (value: unknown) => string | null,
  delimiter: string,
  style: ArrayStyle,
): string {
  let out = '{';
  for (let i = 0; i < elements.length; i++) {
    if (i > 0) out += delimiter;
    const value = elements[i];
    if (Array.isArray(value)) out += arrayText(value, element, delimiter, style);
    else {
      const text = value === null || value === undefined ? null : element(value);
      out += text === null ? 'NULL' : quoteArrayElement(text, delimiter, style);
    }
  }
  return `${out}}`;
}

// ---------------------------------------------------------------------------------------------------
// JSON → text

/** Rebuilds the Postgres text of one non-null JSON value of a column. */
export type JsonToText = (value: ArchivedJson) => string;

function scalarText(value: ArchivedJson): string {
  if (typeof value === 'string') return value;
  if (value instanceof RawJsonNumber) return value.rawJson;
  if (value === true) return 't';
  if (value === false) return 'f';
  // an object or array where a scalar was expected: its JSON (it will not match, and says why)
  return JSON.stringify(value);
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

function byteaText(value: ArchivedJson): string {
  if (typeof value !== 'string' || value.length % 4 !== 0 || !BASE64.test(value)) return scalarText(value);
  return `\\x${Buffer.from(value, 'base64').toString('hex')}`;
}

const ISO_T = /^\d{4}-\d\d-\d\dT/;

function jsonTimestampText(value: ArchivedJson): string {
  if (typeof value !== 'string' || !ISO_T.test(value)) return scalarText(value);
  return `${value.slice(0, 10)} ${value.slice(11)}`;
}

function jsonTimestamptzText(value: ArchivedJson): string {
  if (typeof value !== 'string' || !ISO_T.test(value) || !value.endsWith('Z')) return scalarText(value);
  return `${value.slice(0, 10)} ${value.slice(11, -1)}+00`;
}

const SCALAR_INVERSES: ReadonlyMap<number, JsonToText> = new Map([
  [PgType.bytea, byteaText],
  [PgType.timestamp, jsonTimestampText],
  [PgType.timestamptz, jsonTimestamptzText],
]);

function arrayInverse(element: JsonToText, delimiter: string, style: ArrayStyle): JsonToText {
  return (value) =>
    Array.isArray(value)
      ? arrayText(value as readonly unknown[], (item) => element(item as ArchivedJson), delimiter, style)
      : scalarText(value);
}

function delimiterOf(elementOid: number | undefined, registry: TypeRegistry | undefined): string {
  if (elementOid === PgType.box) return ';';
  const delimiter = elementOid === undefined ? undefined : registry?.get(elementOid)?.delimiter;
  return delimiter !== undefined && delimiter.length === 1 ? delimiter : ',';
}

function resolveInverse(
  oid: number,
  registry: TypeRegistry | undefined,
  style: ArrayStyle,
  depth: number,
): JsonToText {
  const scalar = SCALAR_INVERSES.get(oid);
  if (scalar !== undefined) return scalar;
  const builtinElement = BUILTIN_ARRAY_ELEMENTS.get(oid);
  if (builtinElement !== undefined)
    return arrayInverse(
      SCALAR_INVERSES.get(builtinElement) ?? scalarText,
      builtinElement === PgType.box ? ';' : ',',
      style,
    );
  if (oid < 10_000 || depth > 8) return arrayInverse(scalarText, ',', style);
  const info = registry?.get(oid);
  // Unknown types: a JSON array can only have come from an array (comma-delimited unless the type said).
  if (info === undefined) return arrayInverse(scalarText, ',', style);
  if (info.baseOid !== undefined && info.baseOid !== 0 && info.baseOid !== oid)
    return resolveInverse(info.baseOid, registry, style, depth + 1);
  const elementOid = info.elementOid;
  if (elementOid !== undefined && elementOid !== 0 && elementOid !== oid && (info.category ?? 'A') === 'A')
    return arrayInverse(
      resolveInverse(elementOid, registry, style, depth + 1),
      delimiterOf(elementOid, registry),
      style,
    );
  if (info.category === 'A' || (info.category === undefined && info.name.startsWith('_'))) {
    const element = findByName(registry, info.name.slice(1), info.namespace);
    if (element !== undefined && element.oid !== oid)
      return arrayInverse(
        resolveInverse(element.oid, registry, style, depth + 1),
        delimiterOf(element.oid, registry),
        style,
      );
  }
  return arrayInverse(scalarText, ',', style);
}

/** The inverse mapping of one column type (chosen once per column, like the forward mapper). */
export function jsonToTextFor(
  typeOid: number,
  registry: TypeRegistry | undefined,
  style: ArrayStyle,
): JsonToText {
  return resolveInverse(typeOid, registry, style, 0);
}

// ---------------------------------------------------------------------------------------------------
// Floats as Postgres prints them (extra_float_digits > 0: shortest round-trip digits)

function decimalDigits(text: string): { digits: string; exponent: number } {
  // `text` is JavaScript's shortest round-trip form: `123.45`, `1.5e-7`, `1e+21`
  const [mantissa, exp] = text.split('e') as [string, string | undefined];
  const [whole, fraction = ''] = mantissa.split('.') as [string, string | undefined];
  let digits = whole + fraction;
  let exponent = (exp === undefined ? 0 : Number(exp)) + whole.length - 1;
  const lead = digits.search(/[1-9]/);
  if (lead < 0) return { digits: '0', exponent: 0 };
  digits = digits.slice(lead).replace(/0+$/, '');
  exponent -= lead;
  return { digits, exponent };
}

/** Postgres' layout of shortest digits: fixed when -4 ≤ exponent < `fixedBelow`, else `d.ddde±XX`. */
function layout(negative: boolean, digits: string, exponent: number, fixedBelow: number): string {
  const sign = negative ? '-' : '';
  if (exponent >= -4 && exponent < fixedBelow) {
    if (exponent < 0) return `${sign}0.${'0'.repeat(-exponent - 1)}${digits}`;
    if (digits.length <= exponent + 1) return `${sign}${digits}${'0'.repeat(exponent + 1 - digits.length)}`;
    return `${sign}${digits.slice(0, exponent + 1)}.${digits.slice(exponent + 1)}`;
  }
  const mantissa = digits.length === 1 ? digits : `${digits[0]}.${digits.slice(1)}`;
  const magnitude = Math.abs(exponent);
  return `${sign}${mantissa}e${exponent < 0 ? '-' : '+'}${magnitude < 10 ? '0' : ''}${magnitude}`;
}

function specialFloat(value: number): string | undefined {
  if (Number.isNaN(value)) return 'NaN';
  if (value === Infinity) return 'Infinity';
  if (value === -Infinity) return '-Infinity';
  if (value === 0) return Object.is(value, -0) ? '-0' : '0';
  return undefined;
}

/** float8 text: the shortest digits that read back as `value`, laid out as float8out does. */
export function float8Text(value: number): string {
  const special = specialFloat(value);
  if (special !== undefined) return special;
  const { digits, exponent } = decimalDigits(String(Math.abs(value)));
  return layout(value < 0, digits, exponent, 15);
}

const FLOAT4_VIEW = new DataView(new ArrayBuffer(4));

function float4At(bits: number): number {
  FLOAT4_VIEW.setUint32(0, bits);
  return FLOAT4_VIEW.getFloat32(0);
}

/**
 * float4 text: the fewest digits that read back as the float4 `value` — of those, the closest — laid out as
 * float4out does (a decimal exactly halfway to a neighbour does not count as reading back; an exact tie
 * between two candidates goes to the even digit). The correctly rounded `p`-digit decimal is the closest; next to a power of two the
 * round-trip interval is lopsided, so its neighbours are tried too.
 */
export function float4Text(value: number): string {
  const special = specialFloat(value);
  if (special !== undefined) return special;
  const magnitude = Math.abs(value);
  FLOAT4_VIEW.setFloat32(0, magnitude);
  const bits = FLOAT4_VIEW.getUint32(0);
  const below = bits > 0 ? float4At(bits - 1) : 0;
  const above = float4At(bits + 1);
  const low = (below + magnitude) / 2;
  const high = Number.isFinite(above) ? (magnitude + above) / 2 : magnitude + (magnitude - below) / 2;
  // float4out does not take a decimal that lies exactly halfway to a neighbour (found against the server)
  const readsBack = (parsed: number) => parsed > low && parsed < high;
  for (let precision = 1; precision <= 9; precision++) {
    const nearest = decimalDigits(magnitude.toPrecision(precision));
    const scaled = BigInt(nearest.digits.padEnd(precision, '0'));
    const unitExponent = nearest.exponent - precision + 1;
    let best: { digits: string; exponent: number; error: number } | undefined;
    for (const candidate of [scaled, scaled - 1n, scaled + 1n]) {
      if (candidate <= 0n) continue;
      const parsed = Number(`${candidate}e${unitExponent}`);
      if (!readsBack(parsed)) continue;
      const error = Math.abs(parsed - magnitude);
      // an exact tie between two candidates goes to the even last digit, as float4out rounds
      if (best === undefined || error < best.error || (error === best.error && candidate % 2n === 0n))
        best = { ...decimalDigits(`${candidate}e${unitExponent}`), error };
    }
    if (best !== undefined) return layout(value < 0, best.digits, best.exponent, 6);
  }
  return float8Text(value);
}

// ---------------------------------------------------------------------------------------------------
// Parquet physical values → text

function pad(value: number, width: number): string {
  return String(value).padStart(width, '0');
}

/** Postgres' ISO date text of days since 1970-01-01 (years ≤ 0 as `YYYY-MM-DD BC`). */
function dateParts(days: number): { text: string; bc: boolean } {
  const [year, month, day] = civilFromDays(days);
  const bc = year <= 0;
  return { text: `${pad(bc ? 1 - year : year, 4)}-${pad(month, 2)}-${pad(day, 2)}`, bc };
}

export function dateText(days: number): string {
  const { text, bc } = dateParts(days);
  return bc ? `${text} BC` : text;
}

/** `HH:MM:SS[.ffffff]` (trailing fraction zeros dropped, as Postgres prints). */
export function clockText(micros: bigint): string {
  const total = Number(micros / 1_000_000n);
  const fraction = Number(micros % 1_000_000n);
  const text = `${pad(Math.floor(total / 3600), 2)}:${pad(Math.floor(total / 60) % 60, 2)}:${pad(total % 60, 2)}`;
  return fraction === 0 ? text : `${text}.${pad(fraction, 6).replace(/0+$/, '')}`;
}

export function timeText(micros: bigint): string {
  return clockText(micros);
}

const MICROS_PER_DAY = 86_400_000_000n;

/** timestamp / timestamptz (`+00`) text of microseconds since 1970-01-01 00:00 (UTC). */
export function timestampText(micros: bigint, withZone: boolean): string {
  let days = micros / MICROS_PER_DAY;
  let rest = micros % MICROS_PER_DAY;
  if (rest < 0n) {
    rest += MICROS_PER_DAY;
    days -= 1n;
  }
  const { text, bc } = dateParts(Number(days));
  return `${text} ${clockText(rest)}${withZone ? '+00' : ''}${bc ? ' BC' : ''}`;
}

/** numeric text of a DECIMAL's unscaled integer. */
export function decimalText(unscaled: bigint, scale: number): string {
  const negative = unscaled < 0n;
  let digits = (negative ? -unscaled : unscaled).toString();
  if (scale > 0) {
    digits = digits.padStart(scale + 1, '0');
    digits = `${digits.slice(0, -scale)}.${digits.slice(-scale)}`;
  }
  return negative ? `-${digits}` : digits;
}

/** A FIXED_LEN_BYTE_ARRAY DECIMAL: big-endian two's complement. */
export function decimalFromBytes(bytes: Uint8Array): bigint {
  let value = 0n;
  for (const byte of bytes) value = (value << 8n) | BigInt(byte);
  const bits = BigInt(bytes.length * 8);
  if (bytes.length > 0 && (bytes[0]! & 0x80) !== 0) value -= 1n << bits;
  return value;
}

export function hexText(bytes: Uint8Array): string {
  return `\\x${Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex')}`;
}

/** What a Parquet leaf column holds, from its (original) schema element. */
export type ParquetLeafKind =
  | { readonly kind: 'boolean' | 'integer' | 'float' | 'double' | 'date' | 'time' | 'string' | 'bytes' }
  | { readonly kind: 'timestamp'; readonly withZone: boolean }
  | { readonly kind: 'decimal'; readonly scale: number };

export interface ParquetSchemaElementLike {
  readonly type?: string;
  readonly converted_type?: string;
  readonly logical_type?: { readonly type: string; readonly isAdjustedToUTC?: boolean };
  readonly scale?: number;
}

export function parquetLeafKind(element: ParquetSchemaElementLike): ParquetLeafKind {
  const logical = element.logical_type?.type;
  const converted = element.converted_type;
  if (converted === 'DECIMAL' || logical === 'DECIMAL') return { kind: 'decimal', scale: element.scale ?? 0 };
  switch (element.type) {
    case 'BOOLEAN':
      return { kind: 'boolean' };
    case 'INT32':
      return converted === 'DATE' || logical === 'DATE' ? { kind: 'date' } : { kind: 'integer' };
    case 'INT64':
      if (logical === 'TIMESTAMP' || converted === 'TIMESTAMP_MICROS')
        return { kind: 'timestamp', withZone: element.logical_type?.isAdjustedToUTC ?? true };
      if (logical === 'TIME' || converted === 'TIME_MICROS') return { kind: 'time' };
      return { kind: 'integer' };
    case 'FLOAT':
      return { kind: 'float' };
    case 'DOUBLE':
      return { kind: 'double' };
    case 'BYTE_ARRAY':
      return converted === 'UTF8' || converted === 'JSON' || logical === 'STRING' || logical === 'JSON'
        ? { kind: 'string' }
        : { kind: 'bytes' };
    default:
      return { kind: 'string' };
  }
}

const UTF8 = new TextDecoder('utf-8', { fatal: false });

/** The Postgres text of one non-null physical Parquet value of a leaf of kind `leaf`. */
export function parquetValueText(value: unknown, leaf: ParquetLeafKind): string {
  switch (leaf.kind) {
    case 'boolean':
      return value ? 't' : 'f';
    case 'integer':
      return String(value);
    case 'float':
      return float4Text(Number(value));
    case 'double':
      return float8Text(Number(value));
    case 'date':
      return dateText(Number(value));
    case 'time':
      return timeText(BigInt(value as bigint));
    case 'timestamp':
      return timestampText(BigInt(value as bigint), leaf.withZone);
    case 'decimal':
      return decimalText(
        value instanceof Uint8Array ? decimalFromBytes(value) : BigInt(value as number | bigint),
        leaf.scale,
      );
    case 'bytes':
      return value instanceof Uint8Array ? hexText(value) : String(value);
    case 'string':
      return value instanceof Uint8Array ? UTF8.decode(value) : String(value);
  }
}
