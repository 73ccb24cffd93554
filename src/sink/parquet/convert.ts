/**
 * Postgres text output → the physical values of Parquet columns (contract §3.1), exactly.
 *
 * pgoutput sends each value in its type's text output under the session settings slotlake pins
 * (DateStyle=ISO, TimeZone=UTC, extra_float_digits=3, bytea_output=hex; see decoding/values.ts). Each
 * converter here turns one such text into what the Parquet column stores, with no rounding anywhere:
 * integers and decimals go through `bigint` (a DECIMAL is its unscaled integer, built from the digits),
 * floats through `Number()` of Postgres' shortest round-trip digits (`Math.fround` for float4), dates to
 * days since 1970-01-01 and timestamps/times to microseconds, proleptic Gregorian — `0044-03-15 BC` is
 * year -43, a negative day count. A value the column's Parquet type cannot hold — NaN or ±Infinity in a
 * DECIMAL, `infinity` in a DATE or TIMESTAMP, more digits than the declared precision, a timestamp
 * outside int64 microseconds, text that is not what the type prints — converts to `UNREPRESENTABLE`:
 * the writer then stores null and keeps the Postgres text in `_unrepresentable`, so nothing is lost.
 * Pure; nothing here throws on any input.
 */
import { daysFromCivil, decodeByteaText, isJsonNumber } from '../../decoding/values.js';

/** Returned by a converter for a value the column's Parquet type cannot hold. */
export const UNREPRESENTABLE: unique symbol = Symbol('unrepresentable');
export type Unrepresentable = typeof UNREPRESENTABLE;

/** One Postgres text value → the Parquet column's physical value, or UNREPRESENTABLE. */
export type Converter<T> = (text: string) => T | Unrepresentable;

const ZERO = 0x30;
const NINE = 0x39;
const MINUS = 0x2d;
const PLUS = 0x2b;
const DOT = 0x2e;
const COLON = 0x3a;
const SPACE = 0x20;

const INT64_MIN = -(1n << 63n);
const INT64_MAX = (1n << 63n) - 1n;
const MICROS_PER_SECOND = 1_000_000n;

function isDigit(c: number): boolean {
  return c >= ZERO && c <= NINE;
}

/** True when text[from, to) is one or more ASCII digits. */
function allDigits(text: string, from: number, to: number): boolean {
  if (to <= from) return false;
  for (let i = from; i < to; i++) if (!isDigit(text.charCodeAt(i))) return false;
  return true;
}

/** `-?[0-9]+` */
function isIntegerText(text: string): boolean {
  return allDigits(text, text.charCodeAt(0) === MINUS ? 1 : 0, text.length);
}

// ---------------------------------------------------------------------------------------------------
// Booleans, integers, floats

export const toBoolean: Converter<boolean> = (text) =>
  text === 't' ? true : text === 'f' ? false : UNREPRESENTABLE;

/** An INT32 column's value within [min, max] (int2: ±2^15, int4: ±2^31). */
export function toInt32(min: number, max: number): Converter<number> {
  return (text) => {
    if (text.length > 11 || !isIntegerText(text)) return UNREPRESENTABLE;
    const value = Number(text);
    return value >= min && value <= max ? value : UNREPRESENTABLE;
  };
}

/** int8 and oid: exact through bigint. */
export const toInt64: Converter<bigint> = (text) => {
  if (text.length > 20 || !isIntegerText(text)) return UNREPRESENTABLE;
  const value = BigInt(text);
  return value >= INT64_MIN && value <= INT64_MAX ? value : UNREPRESENTABLE;
};

function specialFloat(text: string): number | undefined {
  if (text === 'NaN') return NaN;
  if (text === 'Infinity') return Infinity;
  if (text === '-Infinity') return -Infinity;
  return undefined;
}

/** float8: Postgres prints the shortest digits that round-trip, so `Number()` is exact. */
export const toDouble: Converter<number> = (text) => {
  const special = specialFloat(text);
  if (special !== undefined) return special;
  return isJsonNumber(text) ? Number(text) : UNREPRESENTABLE;
};

/** float4: the shortest float4 digits, read as a double and rounded to the nearest float4 (exact). */
export const toFloat: Converter<number> = (text) => {
  const special = specialFloat(text);
  if (special !== undefined) return special;
  if (!isJsonNumber(text)) return UNREPRESENTABLE;
  const value = Math.fround(Number(text));
  // a finite float4 text never rounds to infinity; if it does, it was not a float4
  return Number.isFinite(value) ? value : UNREPRESENTABLE;
};

// ---------------------------------------------------------------------------------------------------
// Decimals

/**
 * The unscaled integer of numeric text `[-]digits[.digits]` for DECIMAL(precision, scale): the digits
 * are shifted by `scale` exactly. Fraction digits beyond `scale` must be zeros and the integer part must
 * fit `precision - scale` digits, otherwise (and for NaN, ±Infinity, exponents, junk) UNREPRESENTABLE.
 */
export function decimalFromText(text: string, precision: number, scale: number): bigint | Unrepresentable {
  const n = text.length;
  let i = 0;
  const first = text.charCodeAt(0);
  if (first === MINUS || first === PLUS) i = 1;
  const intStart = i;
  while (i < n && isDigit(text.charCodeAt(i))) i++;
  const intEnd = i;
  let fracStart = i;
  let fracEnd = i;
  if (i < n && text.charCodeAt(i) === DOT) {
    fracStart = ++i;
    while (i < n && isDigit(text.charCodeAt(i))) i++;
    fracEnd = i;
  }
  if (i !== n || (intEnd === intStart && fracEnd === fracStart)) return UNREPRESENTABLE;
  let lead = intStart;
  while (lead < intEnd && text.charCodeAt(lead) === ZERO) lead++;
  if (intEnd - lead > precision - scale) return UNREPRESENTABLE;
  let fraction = text.slice(fracStart, fracEnd);
  if (fraction.length > scale) {
    for (let j = scale; j < fraction.length; j++) if (fraction.charCodeAt(j) !== ZERO) return UNREPRESENTABLE;
    fraction = fraction.slice(0, scale);
  } else if (fraction.length < scale) fraction = fraction.padEnd(scale, '0');
  const digits = text.slice(lead, intEnd) + fraction;
  if (digits.length === 0) return 0n;
  const magnitude = BigInt(digits);
  return first === MINUS ? -magnitude : magnitude;
}

export function toDecimal(precision: number, scale: number): Converter<bigint> {
  return (text) => decimalFromText(text, precision, scale);
}

// ---------------------------------------------------------------------------------------------------
// Dates, times, timestamps

interface CivilDate {
  /** Astronomical year: 1 BC is 0, 44 BC is -43. */
  readonly year: number;
  readonly month: number;
  readonly day: number;
  /** Index after the date. */
  readonly end: number;
}

/** `Y…Y-MM-DD` (four or more year digits) at the start of `text`. */
function parseCivilDate(text: string): CivilDate | undefined {
  let i = 0;
  while (i < text.length && isDigit(text.charCodeAt(i))) i++;
  if (i < 4 || i > 7 || text.charCodeAt(i) !== MINUS || text.charCodeAt(i + 3) !== MINUS) return undefined;
  if (!allDigits(text, i + 1, i + 3) || !allDigits(text, i + 4, i + 6)) return undefined;
  const year = Number(text.slice(0, i));
  const month = Number(text.slice(i + 1, i + 3));
  const day = Number(text.slice(i + 4, i + 6));
  if (month < 1 || month > 12 || day < 1 || day > 31) return undefined;
  return { year, month, day, end: i + 6 };
}

/** True when `text` ends with ` BC` (then the year counts backwards from 1 BC = year 0). */
function isBc(text: string): boolean {
  return text.endsWith(' BC');
}

/** date → days since 1970-01-01; `infinity`/`-infinity` are UNREPRESENTABLE. */
export const toDate: Converter<number> = (text) => {
  const bc = isBc(text);
  const end = bc ? text.length - 3 : text.length;
  const date = parseCivilDate(text);
  if (date === undefined || date.end !== end) return UNREPRESENTABLE;
  const year = bc ? 1 - date.year : date.year;
  return daysFromCivil(year, date.month, date.day);
};

interface ClockTime {
  /** Seconds since midnight. */
  readonly seconds: number;
  readonly micros: number;
  /** Index after the time (and fraction). */
  readonly end: number;
}

/** `HH:MM:SS[.f…]` at `from`: up to six fraction digits (Postgres prints at most six). */
function parseClock(text: string, from: number): ClockTime | undefined {
  if (
    !allDigits(text, from, from + 2) ||
    text.charCodeAt(from + 2) !== COLON ||
    !allDigits(text, from + 3, from + 5) ||
    text.charCodeAt(from + 5) !== COLON ||
    !allDigits(text, from + 6, from + 8)
  ) {
    return undefined;
  }
  const hours = Number(text.slice(from, from + 2));
  const minutes = Number(text.slice(from + 3, from + 5));
  const seconds = Number(text.slice(from + 6, from + 8));
  if (hours > 24 || minutes > 59 || seconds > 60) return undefined;
  let i = from + 8;
  let micros = 0;
  if (text.charCodeAt(i) === DOT) {
    const start = ++i;
    while (i < text.length && isDigit(text.charCodeAt(i))) i++;
    if (i === start || i - start > 6) return undefined;
    micros = Number(text.slice(start, i).padEnd(6, '0'));
  }
  return { seconds: hours * 3600 + minutes * 60 + seconds, micros, end: i };
}

/** time → microseconds since midnight (`24:00:00` is 86,400,000,000, as Postgres allows). */
export const toTime: Converter<bigint> = (text) => {
  const clock = parseClock(text, 0);
  if (clock === undefined || clock.end !== text.length) return UNREPRESENTABLE;
  const micros = clock.seconds * 1_000_000 + clock.micros;
  return micros <= 86_400_000_000 ? BigInt(micros) : UNREPRESENTABLE;
};

/** `[+-]HH[:MM[:SS]]` from `from` to `to` → seconds east of UTC, or undefined. */
function parseOffset(text: string, from: number, to: number): number | undefined {
  const sign = text.charCodeAt(from);
  if (sign !== PLUS && sign !== MINUS) return undefined;
  let i = from + 1;
  let seconds = 0;
  for (let part = 0; part < 3; part++) {
    if (part > 0) {
      if (i === to) {
        seconds *= 60;
        continue;
      }
      if (text.charCodeAt(i) !== COLON) return undefined;
      i++;
    }
    if (!allDigits(text, i, i + 2)) return undefined;
    seconds = seconds * 60 + Number(text.slice(i, i + 2));
    i += 2;
  }
  if (i !== to) return undefined;
  return sign === MINUS ? -seconds : seconds;
}

/**
 * `Y…Y-MM-DD HH:MM:SS[.f…][±HH[:MM[:SS]]][ BC]` → microseconds since 1970-01-01 00:00 UTC; the offset
 * (timestamptz) is required when `withOffset` and refused otherwise.
 */
function timestampMicros(text: string, withOffset: boolean): bigint | Unrepresentable {
  const bc = isBc(text);
  const end = bc ? text.length - 3 : text.length;
  const date = parseCivilDate(text);
  if (date === undefined || text.charCodeAt(date.end) !== SPACE) return UNREPRESENTABLE;
  const clock = parseClock(text, date.end + 1);
  if (clock === undefined) return UNREPRESENTABLE;
  let offset = 0;
  if (withOffset) {
    const parsed = parseOffset(text, clock.end, end);
    if (parsed === undefined) return UNREPRESENTABLE;
    offset = parsed;
  } else if (clock.end !== end) return UNREPRESENTABLE;
  const year = bc ? 1 - date.year : date.year;
  // |seconds| < 2^53: days are bounded by the 7-digit year, so this sum is exact in a double
  const seconds = daysFromCivil(year, date.month, date.day) * 86_400 + clock.seconds - offset;
  const micros = BigInt(seconds) * MICROS_PER_SECOND + BigInt(clock.micros);
  return micros >= INT64_MIN && micros <= INT64_MAX ? micros : UNREPRESENTABLE;
}

/** timestamp (without time zone) → microseconds since 1970-01-01 00:00, wall clock. */
export const toTimestamp: Converter<bigint> = (text) => timestampMicros(text, false);

/** timestamptz → microseconds since 1970-01-01 00:00 UTC, whatever offset the text carries. */
export const toTimestamptz: Converter<bigint> = (text) => timestampMicros(text, true);

// ---------------------------------------------------------------------------------------------------
// Strings and bytes

export const toText: Converter<string> = (text) => text;

export const toBytes: Converter<Uint8Array> = (text) => decodeByteaText(text) ?? UNREPRESENTABLE;
