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

export { RawJsonNumber, stringifyJsonValue, type JsonValue } from './values/json.js';
export {
  BUILTIN_ARRAY_ELEMENTS,
  PgType,
  type TypeInfo,
  type TypeRegistry,
  type ValueMapper,
} from './values/types.js';
export { daysFromCivil, decodeByteaText, isJsonNumber } from './values/scalars.js';
export { parsePgArray } from './values/array-text.js';
export { createJsonTextMapper, createValueMapper, mapValue, type JsonTextMapper } from './values/mapper.js';
