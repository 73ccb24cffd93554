/**
 * JSON values with exact numbers: the value model of the record contract (contract §4, "Values").
 *
 * Postgres prints int8, numeric-like and float digits exactly; a JavaScript number would round int8 above
 * 2^53 and re-print floats. `RawJsonNumber` keeps the digits Postgres printed (already checked to be valid
 * JSON number syntax) and `stringifyJsonValue` writes them verbatim, like `JSON.stringify` otherwise.
 */
import { BACKSLASH, QUOTE } from './chars.js';

export const rawJSON = (JSON as unknown as { rawJSON?: (text: string) => unknown }).rawJSON;

/** A JSON number kept as the exact text Postgres printed (already checked to be valid JSON number syntax). */
export class RawJsonNumber {
  constructor(readonly rawJson: string) {}

  /** Lets plain `JSON.stringify` write the digits verbatim too (Node ≥ 21 has `JSON.rawJSON`). */
  toJSON(): unknown {
    return rawJSON !== undefined ? rawJSON(this.rawJson) : Number(this.rawJson);
  }

  toString(): string {
    return this.rawJson;
  }
}

export type JsonValue =
  | null
  | boolean
  | number
  | string
  | RawJsonNumber
  | readonly JsonValue[]
  | { readonly [key: string]: JsonValue };

// ---------------------------------------------------------------------------------------------------
// Serialisation

/**
 * JSON text of `value`, like `JSON.stringify` (same output for values without raw numbers: `toJSON` is
 * honoured, undefined/functions/symbols are skipped in objects and null in arrays, non-finite numbers are
 * null) except that a `RawJsonNumber` is written verbatim and a bigint as its exact digits. Cyclic
 * values are not detected.
 */
export function stringifyJsonValue(value: JsonValue): string {
  return write(value, '') ?? 'null';
}

/** Quoted object keys: records repeat the same column names, so each is escaped once. */
export const quotedKeys = new Map<string, string>();
export const QUOTED_KEYS_MAX = 10_000;

export function quoteKey(key: string): string {
  let quoted = quotedKeys.get(key);
  if (quoted === undefined) {
    quoted = quote(key);
    if (quotedKeys.size < QUOTED_KEYS_MAX) quotedKeys.set(key, quoted);
  }
  return quoted;
}

/** JSON string literal; short strings needing no escapes skip the native call. */
export function quote(text: string): string {
  const n = text.length;
  if (n > 64) return JSON.stringify(text);
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    // control characters, '"', '\' and UTF-16 surrogates (lone ones are escaped) go the native way
    if (c < 0x20 || c === QUOTE || c === BACKSLASH || (c >= 0xd800 && c <= 0xdfff))
      return JSON.stringify(text);
  }
  return '"' + text + '"';
}

export function write(value: unknown, key: string | number): string | undefined {
  switch (typeof value) {
    case 'string':
      return quote(value);
    case 'number':
      return Number.isFinite(value) ? String(value) : 'null';
    case 'boolean':
      return value ? 'true' : 'false';
    case 'bigint':
      return value.toString();
    case 'object': {
      if (value === null) return 'null';
      if (value instanceof RawJsonNumber) return value.rawJson;
      if (Array.isArray(value)) {
        const n = value.length;
        if (n === 0) return '[]';
        let out = '[' + (write(value[0], 0) ?? 'null');
        for (let i = 1; i < n; i++) out += ',' + (write(value[i], i) ?? 'null');
        return out + ']';
      }
      const toJSON = (value as { toJSON?: unknown }).toJSON;
      if (typeof toJSON === 'function') return write(toJSON.call(value, String(key)), key);
      let out = '{';
      const record = value as Record<string, unknown>;
      for (const name of Object.keys(record)) {
        const text = write(record[name], name);
        if (text === undefined) continue;
        out += (out.length === 1 ? '' : ',') + quoteKey(name) + ':' + text;
      }
      return out + '}';
    }
    default:
      return undefined; // undefined, function, symbol
  }
}
