/**
 * Postgres text output of scalar types → contract JSON values: bool, the number types (exact digits), bytea
 * (hex or escape format → base64), timestamp and timestamptz (ISO with `T`, timestamptz shifted to UTC with
 * `Z`), and the calendar arithmetic they need. Text a mapper does not recognise falls back to the raw text.
 */
import {
  BACKSLASH,
  COLON,
  DOT,
  LOWER_E,
  LOWER_F,
  LOWER_T,
  LOWER_X,
  MINUS,
  NINE,
  ONE,
  PLUS,
  SPACE,
  UPPER_E,
  ZERO,
  isDigit,
} from './chars.js';
import { RawJsonNumber } from './json.js';
import type { ValueMapper } from './types.js';

// ---------------------------------------------------------------------------------------------------
// Scalars

export const identity: ValueMapper = (text) => text;

/** True when `text` is exactly a JSON number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
export function isJsonNumber(text: string): boolean {
  const n = text.length;
  let i = 0;
  if (n === 0) return false;
  if (text.charCodeAt(0) === MINUS) i = 1;
  if (i >= n) return false;
  let c = text.charCodeAt(i);
  if (c === ZERO) i++;
  else if (c >= ONE && c <= NINE) {
    i++;
    while (i < n && isDigit(text.charCodeAt(i))) i++;
  } else return false;
  if (i === n) return true;
  c = text.charCodeAt(i);
  if (c === DOT) {
    const start = ++i;
    while (i < n && isDigit(text.charCodeAt(i))) i++;
    if (i === start) return false;
    if (i === n) return true;
    c = text.charCodeAt(i);
  }
  if (c !== LOWER_E && c !== UPPER_E) return false;
  i++;
  if (i < n) {
    c = text.charCodeAt(i);
    if (c === PLUS || c === MINUS) i++;
  }
  const start = i;
  while (i < n && isDigit(text.charCodeAt(i))) i++;
  return i > start && i === n;
}

/** int2/int4/int8/oid/float4/float8: the digits as a raw JSON number; NaN/±Infinity (or junk) as text. */
export const mapNumber: ValueMapper = (text) => (isJsonNumber(text) ? new RawJsonNumber(text) : text);

export const mapBool: ValueMapper = (text) => {
  if (text.length === 1) {
    const c = text.charCodeAt(0);
    if (c === LOWER_T) return true;
    if (c === LOWER_F) return false;
  }
  return text;
};

/** bytea: hex (`\x0a0b`) or escape format (`a\\b\012`) → base64. */
export const mapBytea: ValueMapper = (text) => {
  if (text.length >= 2 && text.charCodeAt(0) === BACKSLASH && text.charCodeAt(1) === LOWER_X) {
    const hexLength = text.length - 2;
    if (hexLength % 2 !== 0) return text;
    const bytes = Buffer.from(text.slice(2), 'hex');
    // Buffer.from stops silently at the first non-hex pair: a short result means the text was not hex.
    return bytes.length * 2 === hexLength ? bytes.toString('base64') : text;
  }
  const bytes = decodeByteaEscape(text);
  return bytes === undefined ? text : bytes.toString('base64');
};

/** bytea text output (hex `\x0a0b` or escape format) → its bytes, or undefined when `text` is neither. */
export function decodeByteaText(text: string): Buffer | undefined {
  if (text.length >= 2 && text.charCodeAt(0) === BACKSLASH && text.charCodeAt(1) === LOWER_X) {
    const hexLength = text.length - 2;
    if (hexLength % 2 !== 0) return undefined;
    const bytes = Buffer.from(text.slice(2), 'hex');
    return bytes.length * 2 === hexLength ? bytes : undefined;
  }
  return decodeByteaEscape(text);
}

export function isOctal(c: number): boolean {
  return c >= ZERO && c <= 0x37;
}

/** bytea escape format: `\\` is a backslash, `\ooo` an octal byte, other ASCII characters themselves. */
export function decodeByteaEscape(text: string): Buffer | undefined {
  const n = text.length;
  const out = Buffer.allocUnsafe(n);
  let length = 0;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c === BACKSLASH) {
      const next = text.charCodeAt(i + 1);
      if (next === BACKSLASH) {
        out[length++] = BACKSLASH;
        i++;
      } else if (
        next >= ZERO &&
        next <= 0x33 &&
        isOctal(text.charCodeAt(i + 2)) &&
        isOctal(text.charCodeAt(i + 3))
      ) {
        out[length++] =
          ((next - ZERO) << 6) | ((text.charCodeAt(i + 2) - ZERO) << 3) | (text.charCodeAt(i + 3) - ZERO);
        i += 3;
      } else return undefined;
    } else if (c < 0x80) out[length++] = c;
    else return undefined; // byteaout escapes every non-ASCII byte; anything else is not bytea text
  }
  return out.subarray(0, length);
}

/**
 * Checks the ISO `YYYY-MM-DD HH:MM:SS` prefix (4-digit year) and returns the index after an optional
 * `.digits` fraction, or -1.
 */
export function isoDateTimeEnd(text: string): number {
  const n = text.length;
  if (
    n < 19 ||
    text.charCodeAt(4) !== MINUS ||
    text.charCodeAt(7) !== MINUS ||
    text.charCodeAt(10) !== SPACE ||
    text.charCodeAt(13) !== COLON ||
    text.charCodeAt(16) !== COLON
  ) {
    return -1;
  }
  for (const i of DATE_TIME_DIGITS) if (!isDigit(text.charCodeAt(i))) return -1;
  let i = 19;
  if (i < n && text.charCodeAt(i) === DOT) {
    i++;
    const start = i;
    while (i < n && isDigit(text.charCodeAt(i))) i++;
    if (i === start) return -1;
  }
  return i;
}

export const DATE_TIME_DIGITS = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18] as const;

/** timestamp `2024-01-02 03:04:05.5` → `2024-01-02T03:04:05.5`; BC, year > 9999, ±infinity unchanged. */
export const mapTimestamp: ValueMapper = (text) => {
  const end = isoDateTimeEnd(text);
  return end === text.length ? `${text.slice(0, 10)}T${text.slice(11)}` : text;
};

/**
 * timestamptz `2024-01-02 03:04:05.123456+00` → `2024-01-02T03:04:05.123456Z`. Another offset
 * (`+05:30`, `-03:30:52`) is converted to UTC; BC, year > 9999 (also after conversion), ±infinity unchanged.
 */
export const mapTimestamptz: ValueMapper = (text) => {
  const end = isoDateTimeEnd(text);
  if (end < 0) return text;
  const n = text.length;
  const sign = text.charCodeAt(end);
  if (sign !== PLUS && sign !== MINUS) return text;
  if (end + 3 === n && text.charCodeAt(end + 1) === ZERO && text.charCodeAt(end + 2) === ZERO) {
    return `${text.slice(0, 10)}T${text.slice(11, end)}Z`;
  }
  // [+-]HH[:MM[:SS]]
  let offset = 0;
  let i = end + 1;
  for (let part = 0; part < 3; part++) {
    // hours, then minutes and seconds when present; absent parts count as zero
    if (part > 0) {
      if (i === n) {
        offset *= 60;
        continue;
      }
      if (text.charCodeAt(i) !== COLON) return text;
      i++;
    }
    const hi = text.charCodeAt(i);
    const lo = text.charCodeAt(i + 1);
    if (!isDigit(hi) || !isDigit(lo)) return text;
    offset = offset * 60 + (hi - ZERO) * 10 + (lo - ZERO);
    i += 2;
  }
  if (i !== n) return text;
  if (sign === MINUS) offset = -offset;
  return shiftToUtc(text, end, offset) ?? text;
};

export function twoDigits(text: string, at: number): number {
  return (text.charCodeAt(at) - ZERO) * 10 + (text.charCodeAt(at + 1) - ZERO);
}

export function pad(value: number, width: number): string {
  return String(value).padStart(width, '0');
}

/** Rewrites the (validated) local time `text[0, fractionEnd)` minus `offsetSeconds` as UTC, or undefined. */
export function shiftToUtc(text: string, fractionEnd: number, offsetSeconds: number): string | undefined {
  const year = twoDigits(text, 0) * 100 + twoDigits(text, 2);
  const days = daysFromCivil(year, twoDigits(text, 5), twoDigits(text, 8));
  const seconds =
    days * 86400 +
    twoDigits(text, 11) * 3600 +
    twoDigits(text, 14) * 60 +
    twoDigits(text, 17) -
    offsetSeconds;
  const utcDays = Math.floor(seconds / 86400);
  let rest = seconds - utcDays * 86400;
  const [y, m, d] = civilFromDays(utcDays);
  if (y < 1 || y > 9999) return undefined;
  const hh = Math.floor(rest / 3600);
  rest -= hh * 3600;
  const mm = Math.floor(rest / 60);
  const ss = rest - mm * 60;
  return `${pad(y, 4)}-${pad(m, 2)}-${pad(d, 2)}T${pad(hh, 2)}:${pad(mm, 2)}:${pad(ss, 2)}${text.slice(19, fractionEnd)}Z`;
}

/** Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm). */
export function daysFromCivil(year: number, month: number, day: number): number {
  const y = month <= 2 ? year - 1 : year;
  const era = Math.floor(y / 400);
  const yoe = y - era * 400;
  const doy = Math.floor((153 * (month > 2 ? month - 3 : month + 9) + 2) / 5) + day - 1;
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy;
  return era * 146097 + doe - 719468;
}

export function civilFromDays(days: number): [number, number, number] {
  const z = days + 719468;
  const era = Math.floor(z / 146097);
  const doe = z - era * 146097;
  const yoe = Math.floor(
    (doe - Math.floor(doe / 1460) + Math.floor(doe / 36524) - Math.floor(doe / 146096)) / 365,
  );
  const doy = doe - (365 * yoe + Math.floor(yoe / 4) - Math.floor(yoe / 100));
  const mp = Math.floor((5 * doy + 2) / 153);
  const day = doy - Math.floor((153 * mp + 2) / 5) + 1;
  const month = mp < 10 ? mp + 3 : mp - 9;
  return [yoe + era * 400 + (month <= 2 ? 1 : 0), month, day];
}
