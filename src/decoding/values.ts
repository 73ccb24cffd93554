/**
 * Postgres text-format column values → the JSON values of slotlake's record contract, by type OID.
 *
 * pgoutput sends every non-null value in its type's text output format
 * (https://www.postgresql.org/docs/current/datatype.html) under the session settings slotlake pins on
 * the replication connection: DateStyle=ISO, TimeZone=UTC, IntervalStyle=postgres, extra_float_digits=3,
 * bytea_output=hex. Mapping: bool → true/false; int2/int4/oid/int8/float4/float8 → a `RawJsonNumber`
 * holding Postgres' own digits (written verbatim by `stringifyJsonValue`, so int8 and floats are never
 * rounded through a double; float NaN/Infinity/-Infinity stay the strings "NaN"/"Infinity"/"-Infinity");
 * numeric → its exact text; bytea (hex `\x…` or legacy escape format) → base64; timestamp →
 * "YYYY-MM-DDTHH:MM:SS[.f…]" and timestamptz → the same in UTC plus "Z" (the fraction keeps the digits
 * Postgres prints, trailing zeros already trimmed, up to 6); date and time are already
 * "YYYY-MM-DD" / "HH:MM:SS[.f…]" in ISO style and pass through. Values a four-digit AD year cannot express
 * — BC dates ("0044-03-15 12:00:00+00 BC"), years after 9999 ("12345-01-01 00:00:00+00"), "infinity",
 * "-infinity" — stay Postgres' text unchanged. Arrays (https://www.postgresql.org/docs/current/arrays.html#ARRAYS-IO)
 * become JSON arrays, nested per dimension, explicit bounds (`[0:2]=`) dropped, elements mapped by the
 * element type. Every other type (enums, domains, citext, ranges, intervals, network, geometric, …) is
 * its text output as a string. Nothing here throws: text a mapper does not recognise falls back to the
 * raw text string. Pure, no I/O.
 */

const rawJSON = (JSON as unknown as { rawJSON?: (text: string) => unknown }).rawJSON;

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

/** Maps one non-null text value of a fixed column type. Never throws. */
export type ValueMapper = (text: string) => JsonValue;

/** What the pipeline knows about a (usually non-built-in) type, from pgoutput Type messages or pg_type. */
export interface TypeInfo {
  readonly oid: number;
  /** `pg_type.typname`, e.g. `citext`, `mood`, `_mood` (array types are named `_` + element name). */
  readonly name: string;
  readonly namespace?: string;
  /** `pg_type.typelem` of an array type. */
  readonly elementOid?: number;
  /** `pg_type.typcategory`: `A` array, `E` enum, `S` string, `U` user-defined, … */
  readonly category?: string;
  /** `pg_type.typdelim`, the separator used when this type is an array element (`,` unless said). */
  readonly delimiter?: string;
  /** `pg_type.typbasetype` of a domain (0 or absent otherwise). */
  readonly baseOid?: number;
}

/** Type information by OID; a `Map<number, TypeInfo>` is one. */
export interface TypeRegistry {
  get(oid: number): TypeInfo | undefined;
  values(): Iterable<TypeInfo>;
}

/** OIDs of the built-in types the contract treats specially (fixed across Postgres versions). */
export const PgType = {
  bool: 16,
  bytea: 17,
  char: 18,
  name: 19,
  int8: 20,
  int2: 21,
  int2vector: 22,
  int4: 23,
  text: 25,
  oid: 26,
  oidvector: 30,
  json: 114,
  box: 603,
  float4: 700,
  float8: 701,
  bpchar: 1042,
  varchar: 1043,
  date: 1082,
  time: 1083,
  timestamp: 1114,
  timestamptz: 1184,
  numeric: 1700,
  uuid: 2950,
  jsonb: 3802,
} as const;

/**
 * Built-in array type OID → element type OID (`pg_type` rows with typcategory 'A' and a fixed OID < 10000,
 * except int2vector/oidvector, whose text form is space-separated, not an array literal).
 */
export const BUILTIN_ARRAY_ELEMENTS: ReadonlyMap<number, number> = new Map([
  [143, 142], // _xml
  [199, 114], // _json
  [210, 71], // _pg_type
  [270, 75], // _pg_attribute
  [271, 5069], // _xid8
  [272, 81], // _pg_proc
  [273, 83], // _pg_class
  [629, 628], // _line
  [651, 650], // _cidr
  [719, 718], // _circle
  [775, 774], // _macaddr8
  [791, 790], // _money
  [1000, 16], // _bool
  [1001, 17], // _bytea
  [1002, 18], // _char
  [1003, 19], // _name
  [1005, 21], // _int2
  [1006, 22], // _int2vector
  [1007, 23], // _int4
  [1008, 24], // _regproc
  [1009, 25], // _text
  [1010, 27], // _tid
  [1011, 28], // _xid
  [1012, 29], // _cid
  [1013, 30], // _oidvector
  [1014, 1042], // _bpchar
  [1015, 1043], // _varchar
  [1016, 20], // _int8
  [1017, 600], // _point
  [1018, 601], // _lseg
  [1019, 602], // _path
  [1020, 603], // _box (delimiter ';')
  [1021, 700], // _float4
  [1022, 701], // _float8
  [1027, 604], // _polygon
  [1028, 26], // _oid
  [1034, 1033], // _aclitem
  [1040, 829], // _macaddr
  [1041, 869], // _inet
  [1115, 1114], // _timestamp
  [1182, 1082], // _date
  [1183, 1083], // _time
  [1185, 1184], // _timestamptz
  [1187, 1186], // _interval
  [1231, 1700], // _numeric
  [1263, 2275], // _cstring
  [1270, 1266], // _timetz
  [1561, 1560], // _bit
  [1563, 1562], // _varbit
  [2201, 1790], // _refcursor
  [2207, 2202], // _regprocedure
  [2208, 2203], // _regoper
  [2209, 2204], // _regoperator
  [2210, 2205], // _regclass
  [2211, 2206], // _regtype
  [2949, 2970], // _txid_snapshot
  [2951, 2950], // _uuid
  [3221, 3220], // _pg_lsn
  [3643, 3614], // _tsvector
  [3644, 3642], // _gtsvector
  [3645, 3615], // _tsquery
  [3735, 3734], // _regconfig
  [3770, 3769], // _regdictionary
  [3807, 3802], // _jsonb
  [3905, 3904], // _int4range
  [3907, 3906], // _numrange
  [3909, 3908], // _tsrange
  [3911, 3910], // _tstzrange
  [3913, 3912], // _daterange
  [3927, 3926], // _int8range
  [4073, 4072], // _jsonpath
  [4090, 4089], // _regnamespace
  [4097, 4096], // _regrole
  [4192, 4191], // _regcollation
  [5039, 5038], // _pg_snapshot
  [6150, 4451], // _int4multirange
  [6151, 4532], // _nummultirange
  [6152, 4533], // _tsmultirange
  [6153, 4534], // _tstzmultirange
  [6155, 4535], // _datemultirange
  [6157, 4536], // _int8multirange
]);

// ---------------------------------------------------------------------------------------------------
// Character codes

const SPACE = 0x20;
const TAB = 0x09;
const CR = 0x0d;
const QUOTE = 0x22;
const PLUS = 0x2b;
const MINUS = 0x2d;
const DOT = 0x2e;
const ZERO = 0x30;
const ONE = 0x31;
const NINE = 0x39;
const COLON = 0x3a;
const UPPER_E = 0x45;
const LBRACKET = 0x5b;
const BACKSLASH = 0x5c;
const RBRACKET = 0x5d;
const LOWER_E = 0x65;
const LOWER_F = 0x66;
const LOWER_T = 0x74;
const LOWER_X = 0x78;
const LBRACE = 0x7b;
const RBRACE = 0x7d;

function isDigit(c: number): boolean {
  return c >= ZERO && c <= NINE;
}

/** Postgres' scanner_isspace: space, \t, \n, \v, \f, \r. */
function isSpace(c: number): boolean {
  return c === SPACE || (c >= TAB && c <= CR);
}

// ---------------------------------------------------------------------------------------------------
// Scalars

const identity: ValueMapper = (text) => text;

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
const mapNumber: ValueMapper = (text) => (isJsonNumber(text) ? new RawJsonNumber(text) : text);

const mapBool: ValueMapper = (text) => {
  if (text.length === 1) {
    const c = text.charCodeAt(0);
    if (c === LOWER_T) return true;
    if (c === LOWER_F) return false;
  }
  return text;
};

/** bytea: hex (`\x0a0b`) or escape format (`a\\b\012`) → base64. */
const mapBytea: ValueMapper = (text) => {
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

function isOctal(c: number): boolean {
  return c >= ZERO && c <= 0x37;
}

/** bytea escape format: `\\` is a backslash, `\ooo` an octal byte, other ASCII characters themselves. */
function decodeByteaEscape(text: string): Buffer | undefined {
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
function isoDateTimeEnd(text: string): number {
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

const DATE_TIME_DIGITS = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18] as const;

/** timestamp `2024-01-02 03:04:05.5` → `2024-01-02T03:04:05.5`; BC, year > 9999, ±infinity unchanged. */
const mapTimestamp: ValueMapper = (text) => {
  const end = isoDateTimeEnd(text);
  return end === text.length ? `${text.slice(0, 10)}T${text.slice(11)}` : text;
};

/**
 * timestamptz `2024-01-02 03:04:05.123456+00` → `2024-01-02T03:04:05.123456Z`. Another offset
 * (`+05:30`, `-03:30:52`) is converted to UTC; BC, year > 9999 (also after conversion), ±infinity unchanged.
 */
const mapTimestamptz: ValueMapper = (text) => {
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

function twoDigits(text: string, at: number): number {
  return (text.charCodeAt(at) - ZERO) * 10 + (text.charCodeAt(at + 1) - ZERO);
}

function pad(value: number, width: number): string {
  return String(value).padStart(width, '0');
}

/** Rewrites the (validated) local time `text[0, fractionEnd)` minus `offsetSeconds` as UTC, or undefined. */
function shiftToUtc(text: string, fractionEnd: number, offsetSeconds: number): string | undefined {
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

function civilFromDays(days: number): [number, number, number] {
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

// ---------------------------------------------------------------------------------------------------
// Arrays

/**
 * Parses Postgres array text output (`{1,2}`, `{{1,2},{3,4}}`, `{"a b","c\"d",NULL}`, `[0:2]={1,2,3}`)
 * into nested JSON arrays, mapping each non-null element's text with `mapElement`. Unquoted `NULL` (any
 * case) is null; quoted `"NULL"` is the text NULL. Bounds decorations are dropped. Returns undefined
 * when `text` is not an array literal.
 */
export function parsePgArray(
  text: string,
  delimiter = ',',
  mapElement: ValueMapper = identity,
): JsonValue[] | undefined {
  const delim = delimiter.charCodeAt(0);
  const n = text.length;
  let i = 0;
  while (i < n && isSpace(text.charCodeAt(i))) i++;
  if (i < n && text.charCodeAt(i) === LBRACKET) {
    // dimension decoration: [lb:ub][lb:ub]=
    const eq = text.indexOf('=', i);
    if (eq < 0) return undefined;
    for (let j = i; j < eq; j++) {
      const c = text.charCodeAt(j);
      if (
        !isDigit(c) &&
        c !== LBRACKET &&
        c !== RBRACKET &&
        c !== COLON &&
        c !== MINUS &&
        c !== PLUS &&
        !isSpace(c)
      ) {
        return undefined;
      }
    }
    i = eq + 1;
    while (i < n && isSpace(text.charCodeAt(i))) i++;
  }
  if (i >= n || text.charCodeAt(i) !== LBRACE) return undefined;
  i++;
  const root: JsonValue[] = [];
  const parents: JsonValue[][] = [];
  let current = root;
  let expectElement = true; // after '{' or a delimiter
  let opened = true; // right after '{' (where '}' closes an empty array)
  for (;;) {
    while (i < n && isSpace(text.charCodeAt(i))) i++;
    if (i >= n) return undefined;
    const c = text.charCodeAt(i);
    if (expectElement && !(opened && c === RBRACE)) {
      opened = false;
      expectElement = false;
      if (c === LBRACE) {
        const child: JsonValue[] = [];
        current.push(child);
        parents.push(current);
        current = child;
        i++;
        expectElement = true;
        opened = true;
      } else if (c === QUOTE) {
        // quoted element: backslash escapes the next character
        let j = ++i;
        let value = '';
        for (;;) {
          if (j >= n) return undefined;
          const q = text.charCodeAt(j);
          if (q === QUOTE) break;
          if (q === BACKSLASH) {
            value += text.slice(i, j);
            if (j + 1 >= n) return undefined;
            i = j + 1; // the escaped character starts the next run
            j += 2;
          } else j++;
        }
        value += text.slice(i, j);
        i = j + 1;
        current.push(mapElement(value));
      } else if (c === delim || c === RBRACE) {
        return undefined; // empty unquoted element
      } else {
        // unquoted element: up to the delimiter or '}'; backslash escapes the next character; trailing
        // whitespace that is not escaped is dropped (an escaped character resets the run being trimmed)
        let j = i;
        let value = '';
        let escaped = false;
        for (;;) {
          if (j >= n) return undefined;
          const u = text.charCodeAt(j);
          if (u === delim || u === RBRACE) break;
          if (u === QUOTE || u === LBRACE) return undefined;
          if (u === BACKSLASH) {
            if (j + 1 >= n) return undefined;
            value += text.slice(i, j) + text.charAt(j + 1);
            escaped = true;
            j += 2;
            i = j;
          } else j++;
        }
        let end = j;
        while (end > i && isSpace(text.charCodeAt(end - 1))) end--;
        value += text.slice(i, end);
        i = j;
        current.push(!escaped && isNullWord(value) ? null : mapElement(value));
      }
      continue;
    }
    if (c === RBRACE) {
      i++;
      const parent = parents.pop();
      if (parent === undefined) {
        while (i < n && isSpace(text.charCodeAt(i))) i++;
        return i === n ? root : undefined;
      }
      current = parent;
      expectElement = false;
      opened = false;
    } else if (c === delim && !expectElement) {
      i++;
      expectElement = true;
    } else return undefined;
  }
}

/** `NULL`, case-insensitively (array_in's rule for unquoted elements). */
function isNullWord(value: string): boolean {
  return (
    value.length === 4 &&
    (value.charCodeAt(0) | 0x20) === 0x6e &&
    (value.charCodeAt(1) | 0x20) === 0x75 &&
    (value.charCodeAt(2) | 0x20) === 0x6c &&
    (value.charCodeAt(3) | 0x20) === 0x6c
  );
}

function arrayMapper(elementMapper: ValueMapper, delimiter: string): ValueMapper {
  return (text) => {
    try {
      return parsePgArray(text, delimiter, elementMapper) ?? text;
    } catch {
      return text;
    }
  };
}

// ---------------------------------------------------------------------------------------------------
// Mapper selection

const SCALAR_MAPPERS: ReadonlyMap<number, ValueMapper> = new Map([
  [PgType.bool, mapBool],
  [PgType.int2, mapNumber],
  [PgType.int4, mapNumber],
  [PgType.int8, mapNumber],
  [PgType.oid, mapNumber],
  [PgType.float4, mapNumber],
  [PgType.float8, mapNumber],
  [PgType.bytea, mapBytea],
  [PgType.timestamp, mapTimestamp],
  [PgType.timestamptz, mapTimestamptz],
  // numeric, text, varchar, bpchar, name, "char", uuid, json, jsonb, date, time, int2vector, oidvector
  // and every other type: the text itself
]);

const builtinMappers = new Map<number, ValueMapper>();

function builtinMapper(oid: number): ValueMapper | undefined {
  let mapper = builtinMappers.get(oid);
  if (mapper !== undefined) return mapper;
  const scalar = SCALAR_MAPPERS.get(oid);
  if (scalar !== undefined) mapper = scalar;
  else {
    const element = BUILTIN_ARRAY_ELEMENTS.get(oid);
    if (element === undefined) return undefined;
    mapper = arrayMapper(SCALAR_MAPPERS.get(element) ?? identity, element === PgType.box ? ';' : ',');
  }
  builtinMappers.set(oid, mapper);
  return mapper;
}

/** True for the built-in OIDs whose mapping is fixed (special scalars and built-in arrays). */
function isFixedBuiltin(oid: number): boolean {
  return (
    SCALAR_MAPPERS.has(oid) ||
    BUILTIN_ARRAY_ELEMENTS.has(oid) ||
    oid === PgType.int2vector ||
    oid === PgType.oidvector
  );
}

function elementDelimiter(elementOid: number, registry: TypeRegistry | undefined): string {
  if (elementOid === PgType.box) return ';';
  const delimiter = registry?.get(elementOid)?.delimiter;
  return delimiter !== undefined && delimiter.length === 1 ? delimiter : ',';
}

function resolve(oid: number, registry: TypeRegistry | undefined, depth: number): ValueMapper {
  const builtin = builtinMapper(oid);
  if (builtin !== undefined || isFixedBuiltin(oid)) return builtin ?? identity;
  const info = registry?.get(oid);
  if (info === undefined || depth > 8) return identity;
  if (info.baseOid !== undefined && info.baseOid !== 0 && info.baseOid !== oid) {
    // A domain prints as its base type: over an array it is that array (mapped like it); over a scalar the
    // contract keeps its text (domains are strings), which is the base type's text output.
    const base = resolve(info.baseOid, registry, depth + 1);
    return isArrayType(info.baseOid, registry) ? base : identity;
  }
  const elementOid = info.elementOid;
  if (elementOid !== undefined && elementOid !== 0 && elementOid !== oid && (info.category ?? 'A') === 'A') {
    return arrayMapper(resolve(elementOid, registry, depth + 1), elementDelimiter(elementOid, registry));
  }
  if (
    info.category === 'A' ||
    (info.category === undefined && info.name.length > 1 && info.name[0] === '_')
  ) {
    // An array type known by name only (pgoutput Type messages carry no element OID): `_mood` holds `mood`.
    const element = findByName(registry, info.name.slice(1), info.namespace);
    if (element !== undefined && element.oid !== oid) {
      return arrayMapper(resolve(element.oid, registry, depth + 1), elementDelimiter(element.oid, registry));
    }
    return arrayMapper(identity, ',');
  }
  // citext, enums, domains, composites, extension types: their text output.
  return identity;
}

function isArrayType(oid: number, registry: TypeRegistry | undefined): boolean {
  if (BUILTIN_ARRAY_ELEMENTS.has(oid)) return true;
  const info = registry?.get(oid);
  if (info === undefined) return false;
  if (info.baseOid !== undefined && info.baseOid !== 0 && info.baseOid !== oid)
    return isArrayType(info.baseOid, registry);
  return info.category === 'A' || (info.category === undefined && info.name.startsWith('_'));
}

function findByName(
  registry: TypeRegistry | undefined,
  name: string,
  namespace: string | undefined,
): TypeInfo | undefined {
  if (registry === undefined) return undefined;
  let candidate: TypeInfo | undefined;
  for (const info of registry.values()) {
    if (info.name !== name) continue;
    if (info.namespace === namespace) return info;
    if (namespace === undefined || info.namespace === undefined) candidate ??= info;
  }
  return candidate;
}

/**
 * The mapper for one column type, chosen once (per relation column) so the per-row path does no lookup.
 * Built-in OIDs use their fixed mapping; other OIDs are looked up in `registry` (arrays of registered
 * element types, `_name` arrays, everything else text).
 */
export function createValueMapper(typeOid: number, registry?: TypeRegistry): ValueMapper {
  return resolve(typeOid, registry, 0);
}

/** Maps one non-null text value of type `typeOid` (convenience; prefer `createValueMapper` per column). */
export function mapValue(text: string, typeOid: number, registry?: TypeRegistry): JsonValue {
  return resolve(typeOid, registry, 0)(text);
}

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
const quotedKeys = new Map<string, string>();
const QUOTED_KEYS_MAX = 10_000;

function quoteKey(key: string): string {
  let quoted = quotedKeys.get(key);
  if (quoted === undefined) {
    quoted = quote(key);
    if (quotedKeys.size < QUOTED_KEYS_MAX) quotedKeys.set(key, quoted);
  }
  return quoted;
}

/** JSON string literal; short strings needing no escapes skip the native call. */
function quote(text: string): string {
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

function write(value: unknown, key: string | number): string | undefined {
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
