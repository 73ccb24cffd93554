/**
 * Choosing the value mapper of a column type, once per relation column so the per-row path does no lookup:
 * built-in OIDs use their fixed mapping, arrays map their elements, a domain over an array maps like that
 * array, and every other type (enums, domains over scalars, ranges, network, geometric, …) is its text.
 */
import { arrayMapper } from './array-text.js';
import { quote, stringifyJsonValue, type JsonValue } from './json.js';
import {
  identity,
  isJsonNumber,
  mapBool,
  mapBytea,
  mapNumber,
  mapTimestamp,
  mapTimestamptz,
} from './scalars.js';
import {
  BUILTIN_ARRAY_ELEMENTS,
  PgType,
  type TypeInfo,
  type TypeRegistry,
  type ValueMapper,
} from './types.js';

// ---------------------------------------------------------------------------------------------------
// Mapper selection

export const SCALAR_MAPPERS: ReadonlyMap<number, ValueMapper> = new Map([
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

export const builtinMappers = new Map<number, ValueMapper>();

export function builtinMapper(oid: number): ValueMapper | undefined {
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
export function isFixedBuiltin(oid: number): boolean {
  return (
    SCALAR_MAPPERS.has(oid) ||
    BUILTIN_ARRAY_ELEMENTS.has(oid) ||
    oid === PgType.int2vector ||
    oid === PgType.oidvector
  );
}

export function elementDelimiter(elementOid: number, registry: TypeRegistry | undefined): string {
  if (elementOid === PgType.box) return ';';
  const delimiter = registry?.get(elementOid)?.delimiter;
  return delimiter !== undefined && delimiter.length === 1 ? delimiter : ',';
}

export function resolve(oid: number, registry: TypeRegistry | undefined, depth: number): ValueMapper {
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

export function isArrayType(oid: number, registry: TypeRegistry | undefined): boolean {
  if (BUILTIN_ARRAY_ELEMENTS.has(oid)) return true;
  const info = registry?.get(oid);
  if (info === undefined) return false;
  if (info.baseOid !== undefined && info.baseOid !== 0 && info.baseOid !== oid)
    return isArrayType(info.baseOid, registry);
  return info.category === 'A' || (info.category === undefined && info.name.startsWith('_'));
}

export function findByName(
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

/** Maps one non-null text value straight to its JSON text (what `stringifyJsonValue(mapper(text))` gives). */
export type JsonTextMapper = (text: string) => string;

/**
 * The JSON text mapper of a column type, for the JSON Lines records: the same value as the value mapper
 * stringified, without the intermediate value where the type allows (a string is quoted, a number's digits
 * written as they are, a boolean spelled), since every column of every change goes through it.
 */
export function createJsonTextMapper(typeOid: number, registry?: TypeRegistry): JsonTextMapper {
  const mapper = resolve(typeOid, registry, 0);
  if (mapper === identity) return quote;
  if (mapper === mapNumber) return (text) => (isJsonNumber(text) ? text : quote(text));
  if (mapper === mapBool) return (text) => (text === 't' ? 'true' : text === 'f' ? 'false' : quote(text));
  if (mapper === mapTimestamptz || mapper === mapTimestamp) return (text) => quote(mapper(text) as string);
  return (text) => stringifyJsonValue(mapper(text));
}
