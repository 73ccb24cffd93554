/**
 * wal2json format-version 2 → slotlake's plugin-independent `LogicalMessage` union.
 *
 * wal2json (https://github.com/eulerto/wal2json) is a textual logical-decoding output plugin. With
 * `"format-version" '2'` every XLogData payload is one JSON object whose `action` names it:
 * `B` begin and `C` commit (with `include-transaction`), `I` insert (`columns`), `U` update (`columns`
 * + `identity`), `D` delete (`identity`), `T` truncate (one object per table), `M` logical message.
 * With the options slotlake starts replication with (`WAL2JSON_PLUGIN_OPTIONS`) B and C carry `xid`,
 * `timestamp` (the commit time, printed in the walsender's TimeZone), `lsn` (the commit record's LSN,
 * on B as well — that is the transaction's final LSN) and `nextlsn` (the end of the commit record,
 * which is also the XLogData walStart of the C message); changes carry `schema`, `table` and, per
 * column, `name`, `type`, `typeoid` and `value`, plus `pk` (the primary key's columns, without values).
 * wal2json renders values as JSON: the numeric types (int2/4/8, oid, float4/8, numeric) as bare JSON
 * numbers — NaN and ±Infinity as `null`, indistinguishable from SQL NULL —, bool as true/false, bytea
 * as its hex text without the leading `\x`, everything else as a JSON string holding the type's text
 * output, and NULL as null. The output functions run in the walsender, so its session settings
 * (DateStyle, TimeZone, IntervalStyle, extra_float_digits, bytea_output) shape the text: slotlake pins
 * them with `WAL2JSON_SESSION_SETTINGS` in the replication connection's `options`. An update omits the
 * columns whose TOASTed value did not change, and updates/deletes of tables without a replica identity
 * are dropped by the plugin (it only logs a WARNING). Payloads are in the database encoding; slotlake
 * requires UTF8. There is no relation message, so the decoder synthesises `relation` messages: a stable
 * id per schema.table, emitted before the table's first change and again whenever its columns (names,
 * type OIDs, typmods, key flags) or replica identity change. The columns come from the table's definition in
 * the catalog, which the session reads for the decoder when it asks (see `Wal2jsonDecoder`), or — without
 * one that fits — from the messages themselves.
 *
 * LSN rule: Begin.finalLsn = B.lsn (= C.lsn, the commit LSN pgoutput calls `commit_lsn`);
 * Commit.commitLsn = C.lsn; Commit.endLsn = C.nextlsn, or the XLogData walStart when absent (the
 * walsender stamps a commit message with the transaction's end LSN). Message.lsn = M.lsn or walStart.
 */
import { Buffer } from 'node:buffer';
import { DecodeError } from '../errors.js';
import { parseLsn, type Lsn } from '../lsn.js';
import { POSTGRES_EPOCH_OFFSET_US } from '../protocol/frames.js';
import type {
  LogicalMessage,
  Relation,
  RelationColumn,
  ReplicaIdentity,
  TableDefinition,
  Tuple,
  TupleValue,
} from './messages.js';

/** The plugin options slotlake starts replication with (plus `add-tables` when a table list is set). */
export const WAL2JSON_PLUGIN_OPTIONS: readonly (readonly [string, string])[] = [
  ['format-version', '2'],
  ['include-xids', '1'],
  ['include-timestamp', '1'],
  ['include-lsn', '1'],
  ['include-type-oids', '1'],
  ['include-types', '1'],
  ['include-typmod', '0'],
  ['include-pk', '1'],
  ['include-transaction', '1'],
  ['actions', 'insert,update,delete,truncate'],
];

/**
 * Session settings for the replication connection (`options=-c name=value ...`). wal2json calls the
 * types' output functions in the walsender, so these decide the text of dates, times, intervals,
 * floats and bytea; `bytea_output=escape` would even corrupt bytea (wal2json cuts two characters).
 */
export const WAL2JSON_SESSION_SETTINGS: Readonly<Record<string, string>> = {
  DateStyle: 'ISO',
  TimeZone: 'UTC',
  IntervalStyle: 'postgres',
  extra_float_digits: '3',
  bytea_output: 'hex',
};

/** The `options` connection parameter carrying `WAL2JSON_SESSION_SETTINGS`. */
export function wal2jsonConnectionOptions(): string {
  return Object.entries(WAL2JSON_SESSION_SETTINGS)
    .map(([name, value]) => `-c ${name}=${value}`)
    .join(' ');
}

export interface Wal2jsonTable {
  readonly schema: string;
  readonly table: string;
}

/** One `add-tables` entry: `schema.table`, with wal2json's backslash escapes for `, . * \` and spaces. */
export function wal2jsonTableName(table: Wal2jsonTable): string {
  const escape = (name: string) => name.replace(/[\\,.*\s]/g, (c) => `\\${c}`);
  return `${escape(table.schema)}.${escape(table.table)}`;
}

/** The plugin options as a record (for `StartOptions.pluginOptions`), with `add-tables` when given. */
export function wal2jsonPluginOptions(addTables?: readonly Wal2jsonTable[]): Record<string, string> {
  const options = Object.fromEntries(WAL2JSON_PLUGIN_OPTIONS);
  if (addTables && addTables.length > 0) options['add-tables'] = addTables.map(wal2jsonTableName).join(',');
  return options;
}

/** The option list for `START_REPLICATION SLOT s LOGICAL lsn (…)`. */
export function wal2jsonStartReplicationOptions(addTables?: readonly Wal2jsonTable[]): string {
  return Object.entries(wal2jsonPluginOptions(addTables))
    .map(([name, value]) => `"${name}" '${value.replace(/'/g, "''")}'`)
    .join(', ');
}

const BYTEA_OID = 17;

/**
 * Fixed-length types: a column of one of these is never an unchanged TOAST value, so when an update
 * lacks it the table's columns changed instead.
 */
const FIXED_LENGTH_OIDS = new Set([
  16, 18, 19, 20, 21, 23, 26, 27, 28, 29, 600, 601, 603, 628, 700, 701, 718, 774, 790, 829, 1082, 1083, 1114,
  1184, 1186, 1266, 2950, 3220,
]);

/** A JSON number, kept as its exact source text (JSON.parse would round int8 and numeric). */
class JsonNumber {
  constructor(readonly source: string) {}
}

type JsonValue = null | boolean | string | JsonNumber | JsonValue[] | JsonObject;
interface JsonObject {
  readonly [key: string]: JsonValue | undefined;
}

class SourceUnavailable extends Error {}

/** Node 22's `JSON.parse` passes the source text of primitives as the reviver's third argument. */
function keepNumberSource(
  this: unknown,
  _key: string,
  value: unknown,
  context?: { source?: string },
): unknown {
  if (typeof value !== 'number') return value;
  if (typeof context?.source !== 'string') throw new SourceUnavailable();
  return new JsonNumber(context.source);
}

const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const UTF8_LOSSY = new TextDecoder('utf-8', { ignoreBOM: true });
const ENCODER = new TextEncoder();

function isObject(value: JsonValue | undefined): value is JsonObject {
  return (
    typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof JsonNumber)
  );
}

function fail(where: string, problem: string): never {
  throw new DecodeError(`wal2json ${where}: ${problem}`);
}

function field(obj: JsonObject, name: string): JsonValue | undefined {
  return Object.hasOwn(obj, name) ? obj[name] : undefined;
}

function stringField(obj: JsonObject, name: string, where: string): string {
  const value = field(obj, name);
  if (typeof value !== 'string') fail(where, `"${name}" is missing or not a string`);
  return value;
}

function lsnText(text: string, name: string, where: string): Lsn {
  try {
    return parseLsn(text);
  } catch {
    return fail(where, `"${name}" is not an LSN: ${JSON.stringify(text)}`);
  }
}

function lsnField(obj: JsonObject, name: string, where: string, hint = ''): Lsn {
  const value = field(obj, name);
  if (typeof value !== 'string') fail(where, `"${name}" is missing or not a string${hint}`);
  return lsnText(value, name, where);
}

function optionalLsnField(obj: JsonObject, name: string, where: string): Lsn | undefined {
  const value = field(obj, name);
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') fail(where, `"${name}" is not a string`);
  return lsnText(value, name, where);
}

function uint32Field(obj: JsonObject, name: string, where: string, hint = ''): number {
  const value = field(obj, name);
  if (!(value instanceof JsonNumber) || !/^\d{1,10}$/.test(value.source)) {
    fail(where, `"${name}" is missing or not an unsigned integer${hint}`);
  }
  const n = Number(value.source);
  if (n > 0xffffffff) fail(where, `"${name}" is out of range: ${value.source}`);
  return n;
}

/** Type OIDs are printed with `%d`, so OIDs above 2^31 arrive negative. */
function oidField(obj: JsonObject, where: string): number {
  const value = field(obj, 'typeoid');
  if (!(value instanceof JsonNumber) || !/^-?\d{1,10}$/.test(value.source)) {
    fail(where, '"typeoid" is missing or not an integer (start replication with "include-type-oids" \'1\')');
  }
  const n = Number(value.source);
  if (n < -0x80000000 || n > 0xffffffff) fail(where, `"typeoid" is out of range: ${value.source}`);
  return n < 0 ? n + 0x100000000 : n;
}

function booleanField(obj: JsonObject, name: string, where: string): boolean {
  const value = field(obj, name);
  if (typeof value !== 'boolean') fail(where, `"${name}" is missing or not a boolean`);
  return value;
}

const TIMESTAMP =
  /^(\d{4,7})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?([+-])(\d{2})(?::(\d{2}))?(?::(\d{2}))?( BC)?$/;

/** Days from 1970-01-01 to a proleptic Gregorian date (astronomical year numbering). */
function daysFromCivil(year: number, month: number, day: number): number {
  const y = month <= 2 ? year - 1 : year;
  const era = Math.floor(y / 400);
  const yearOfEra = y - era * 400;
  const dayOfYear = Math.floor((153 * (month + (month > 2 ? -3 : 9)) + 2) / 5) + day - 1;
  const dayOfEra = yearOfEra * 365 + Math.floor(yearOfEra / 4) - Math.floor(yearOfEra / 100) + dayOfYear;
  return era * 146097 + dayOfEra - 719468;
}

/**
 * Parses wal2json's `timestamp` (`timestamptz_to_str`: ISO style in the walsender's TimeZone, e.g.
 * `2024-01-02 03:04:05.123456+00`, `…+05:30`, `… BC`) into µs since 2000-01-01T00:00:00Z.
 * Returns undefined when the text is not such a timestamp.
 */
export function parseWal2jsonTimestamp(text: string): bigint | undefined {
  const m = TIMESTAMP.exec(text);
  if (!m) return undefined;
  const [, y, mo, d, h, mi, s, frac, sign, oh, om, os, bc] = m;
  const month = Number(mo);
  const day = Number(d);
  const year = bc ? 1 - Number(y) : Number(y);
  const leap = year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
  const monthDays = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1];
  if (monthDays === undefined || day < 1 || day > monthDays) return undefined;
  if (Number(h) > 23 || Number(mi) > 59 || Number(s) > 59) return undefined;
  const offset = Number(oh) * 3600 + Number(om ?? 0) * 60 + Number(os ?? 0);
  const seconds =
    BigInt(daysFromCivil(year, month, day)) * 86_400n +
    BigInt(Number(h) * 3600 + Number(mi) * 60 + Number(s)) -
    BigInt(sign === '-' ? -offset : offset);
  return seconds * 1_000_000n + BigInt((frac ?? '').padEnd(6, '0')) - POSTGRES_EPOCH_OFFSET_US;
}

function timestampField(obj: JsonObject, where: string): bigint {
  const value = field(obj, 'timestamp');
  if (typeof value !== 'string') {
    fail(where, '"timestamp" is missing or not a string (start replication with "include-timestamp" \'1\')');
  }
  const micros = parseWal2jsonTimestamp(value);
  if (micros === undefined) fail(where, `"timestamp" is not an ISO timestamp: ${JSON.stringify(value)}`);
  return micros;
}

const NULL_VALUE: TupleValue = { kind: 'null' };
const UNCHANGED_TOAST: TupleValue = { kind: 'unchanged-toast' };

/** A wal2json column value → the type's text output form (what `pgoutput` sends as `t`). */
function tupleValue(value: JsonValue | undefined, typeOid: number, where: string): TupleValue {
  if (value === null) return NULL_VALUE;
  if (value === true) return { kind: 'text', text: 't' };
  if (value === false) return { kind: 'text', text: 'f' };
  if (value instanceof JsonNumber) return { kind: 'text', text: value.source };
  if (typeof value === 'string') {
    if (typeOid !== BYTEA_OID) return { kind: 'text', text: value };
    // wal2json drops the `\x` of bytea's hex output; anything else means bytea_output was not hex.
    if (!/^(?:[0-9a-f]{2})*$/.test(value)) fail(where, 'bytea value is not hex (set bytea_output=hex)');
    return { kind: 'text', text: `\\x${value}` };
  }
  return fail(where, `unexpected value ${JSON.stringify(value)}`);
}

interface ColumnShape {
  readonly name: string;
  readonly typeOid: number;
}

interface Column extends ColumnShape {
  readonly value: TupleValue;
}

/** A column as a table's changes show it in wal2json (generated columns included, unlike pgoutput). */
interface ShownColumn extends ColumnShape {
  /** Its value can be TOASTed, so an update may leave it out. */
  readonly toastable: boolean;
  /** Generated: shown by wal2json, left out of the relation (as pgoutput leaves it out). */
  readonly generated: boolean;
}

function readShapes(obj: JsonObject, name: string, where: string): ColumnShape[] {
  const list = field(obj, name);
  if (!Array.isArray(list)) fail(where, `"${name}" is missing or not an array`);
  return list.map((item, i) => {
    const at = `${where} ${name}[${i}]`;
    if (!isObject(item)) fail(at, 'not an object');
    return { name: stringField(item, 'name', at), typeOid: oidField(item, at) };
  });
}

function readColumns(obj: JsonObject, name: string, where: string): Column[] {
  const list = field(obj, name);
  if (!Array.isArray(list)) fail(where, `"${name}" is missing or not an array`);
  return list.map((item, i) => {
    const at = `${where} ${name}[${i}]`;
    if (!isObject(item)) fail(at, 'not an object');
    const column = { name: stringField(item, 'name', at), typeOid: oidField(item, at) };
    if (!Object.hasOwn(item, 'value')) fail(at, '"value" is missing');
    return { ...column, value: tupleValue(item['value'], column.typeOid, `${at} (${column.name})`) };
  });
}

/** Without the catalog's word, a column can be TOASTed unless its type is one of the fixed-length ones. */
function shownFromMessage(column: ColumnShape): ShownColumn {
  return {
    name: column.name,
    typeOid: column.typeOid,
    toastable: !FIXED_LENGTH_OIDS.has(column.typeOid),
    generated: false,
  };
}

/**
 * True when `sub`'s columns all appear in `full`, in the same order with the same types. With
 * `toastOnly`, every column of `full` missing from `sub` must be one that can be TOASTed.
 */
function fitsWithin(sub: readonly ColumnShape[], full: readonly ShownColumn[], toastOnly: boolean): boolean {
  let j = 0;
  for (const column of sub) {
    while (j < full.length && full[j]!.name !== column.name) {
      if (toastOnly && !full[j]!.toastable) return false;
      j++;
    }
    if (j === full.length || full[j]!.typeOid !== column.typeOid) return false;
    j++;
  }
  for (; j < full.length; j++) if (toastOnly && !full[j]!.toastable) return false;
  return true;
}

/** The same columns, in the same order, with the same types. */
function sameShape(a: readonly ColumnShape[], b: readonly ColumnShape[]): boolean {
  return (
    a.length === b.length &&
    a.every((column, i) => column.name === b[i]!.name && column.typeOid === b[i]!.typeOid)
  );
}

function sameNames(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  const set = new Set(a);
  return b.every((name) => set.has(name));
}

function sameValue(a: TupleValue, b: TupleValue): boolean {
  if (a.kind === 'text' && b.kind === 'text') return a.text === b.text;
  return a.kind === b.kind && a.kind !== 'binary';
}

function sameRelation(a: Relation, b: Relation): boolean {
  return (
    a.replicaIdentity === b.replicaIdentity &&
    a.columns.length === b.columns.length &&
    a.columns.every((column, i) => {
      const other = b.columns[i]!;
      return (
        column.name === other.name &&
        column.typeOid === other.typeOid &&
        column.typeModifier === other.typeModifier &&
        column.isKey === other.isKey
      );
    })
  );
}

/** `values` placed in `columns` order; columns without a value get `missing`. */
function align(columns: readonly ColumnShape[], values: readonly Column[], missing: TupleValue): Tuple {
  const byName = new Map<string, TupleValue>();
  for (const column of values) if (!byName.has(column.name)) byName.set(column.name, column.value);
  return columns.map((column) => byName.get(column.name) ?? missing);
}

/** 32-bit FNV-1a, so a table keeps its synthetic relation id across runs. */
function fnv1a(text: string): number {
  let hash = 0x811c9dc5;
  for (const byte of ENCODER.encode(text)) hash = Math.imul(hash ^ byte, 0x01000193) >>> 0;
  return hash;
}

function tableKey(table: Wal2jsonTable): string {
  return `${table.schema}\u0000${table.table}`;
}

/** An insert, update or delete as wal2json sent it. */
interface ChangePayload {
  readonly action: 'I' | 'U' | 'D';
  readonly schema: string;
  readonly table: string;
  /** The primary key's column names (`pk`). */
  readonly pk: readonly string[];
  /** The new row (I, U): an update leaves out the TOASTed values it did not change. */
  readonly columns: readonly Column[] | undefined;
  /** The old row's replica identity (U, D): the key columns, or every column under REPLICA IDENTITY FULL. */
  readonly identity: readonly Column[] | undefined;
}

/** One XLogData payload read by `Wal2jsonDecoder.parse`, to be decoded by `decodePayload`. */
export interface Wal2jsonPayload {
  /** The table an insert, update, delete or truncate is about; undefined for B, C and M. */
  readonly table: Wal2jsonTable | undefined;
}

interface ParsedPayload extends Wal2jsonPayload {
  readonly object: JsonObject;
  readonly action: JsonValue | undefined;
  /** False when the payload was not UTF-8 (then read byte for byte; only M may be). */
  readonly utf8: boolean;
  readonly change: ChangePayload | undefined;
}

/** What the decoder knows of a table: the relation last emitted and the columns its changes show. */
interface TableState {
  readonly relation: Relation;
  /** The columns wal2json sends for the table under `relation`, in order, generated ones included. */
  readonly shown: readonly ShownColumn[];
}

/**
 * Decodes wal2json format-version 2 payloads. Keeps the per-table relation state, so use one decoder
 * per replication stream and feed it every XLogData payload in order.
 *
 * wal2json names a change's table and columns but sends no relation description, and an update leaves out the
 * TOASTed values it did not change — so the first message of a table may not show all its columns. The full
 * column list (names, type OIDs, typmods, replica identity and key flags, generated columns) comes from the
 * catalog instead, which the decoder cannot read itself (it is pure and synchronous). The hand-off, per
 * payload: `parse()` it; if `definitionWanted()` names a table, read that table's definition from the catalog
 * and give it to `learnDefinition()`; then `decodePayload()`. A definition is wanted the first time a table is
 * met and whenever a message's columns do not fit what the decoder knows of the table (a schema change); a
 * definition that does not fit the message either (the catalog has moved on since the change was written) is
 * set aside and the columns are derived from the message, as `decode()` — parse and decode without the catalog
 * — always does.
 */
export class Wal2jsonDecoder {
  readonly #tables = new Map<string, TableState>();
  /** The catalog's definitions learned in this session (undefined: no such table in the catalog). */
  readonly #definitions = new Map<string, TableDefinition | undefined>();
  readonly #idOwners = new Map<number, string>();
  /** REPLICA IDENTITY USING INDEX: the index's columns, as the last update/delete showed them. */
  readonly #indexKeys = new Map<string, readonly string[]>();

  /**
   * Decodes one XLogData payload without asking the catalog: the columns are derived from the messages.
   * `walStart` is the frame's walStart (the commit's end LSN for C). Returns the messages in order — a
   * synthesised `relation` precedes a change when needed. Throws only `DecodeError`.
   */
  decode(bytes: Uint8Array, walStart: Lsn): LogicalMessage[] {
    return this.decodePayload(this.parse(bytes), walStart);
  }

  /** Reads one XLogData payload (JSON, field types). Throws only `DecodeError`. */
  parse(bytes: Uint8Array): Wal2jsonPayload {
    return guarded(() => this.#parse(bytes));
  }

  /**
   * The table whose catalog definition should be learned (`learnDefinition`) before `payload` is decoded:
   * one met for the first time, or whose columns in this message do not fit what the decoder knows of it.
   */
  definitionWanted(payload: Wal2jsonPayload): Wal2jsonTable | undefined {
    const { table, change } = payload as ParsedPayload;
    if (table === undefined) return undefined;
    const key = tableKey(table);
    if (!this.#definitions.has(key)) return table;
    const state = this.#tables.get(key);
    if (state === undefined || change === undefined || this.#fits(change, state)) return undefined;
    return table;
  }

  /** What the catalog says of `table` now; undefined when it has no such table. */
  learnDefinition(table: Wal2jsonTable, definition: TableDefinition | undefined): void {
    this.#definitions.set(tableKey(table), definition);
  }

  /**
   * Decodes a payload from `parse()`. `walStart` is the frame's walStart (the commit's end LSN for C). Returns
   * the messages in order — a synthesised `relation` precedes a change when needed. Throws only `DecodeError`.
   */
  decodePayload(payload: Wal2jsonPayload, walStart: Lsn): LogicalMessage[] {
    return guarded(() => this.#decodePayload(payload as ParsedPayload, walStart));
  }

  /** The relation last emitted for a table, if any. */
  relation(schema: string, table: string): Relation | undefined {
    return this.#tables.get(tableKey({ schema, table }))?.relation;
  }

  #parse(bytes: Uint8Array): ParsedPayload {
    let text: string;
    let utf8 = true;
    try {
      text = UTF8.decode(bytes);
    } catch {
      // Only a logical message may carry bytes that are not UTF-8 (wal2json copies its content raw):
      // read the payload byte for byte and rebuild the exact content bytes below.
      text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('latin1');
      utf8 = false;
    }
    let parsed: JsonValue;
    try {
      parsed = JSON.parse(text, keepNumberSource) as JsonValue;
    } catch (error) {
      if (error instanceof SourceUnavailable) throw error;
      return fail('payload', `not JSON (${error instanceof Error ? error.message : String(error)})`);
    }
    if (!isObject(parsed)) return fail('payload', 'not a JSON object');
    const action = field(parsed, 'action');
    if (!utf8 && action !== 'M') {
      fail(
        'payload',
        'not valid UTF-8 (wal2json writes the database encoding; slotlake needs a UTF8 database)',
      );
    }
    let table: Wal2jsonTable | undefined;
    let change: ChangePayload | undefined;
    if (action === 'I' || action === 'U' || action === 'D') {
      change = readChange(parsed, action);
      table = { schema: change.schema, table: change.table };
    } else if (action === 'T') {
      table = { schema: stringField(parsed, 'schema', 'T'), table: stringField(parsed, 'table', 'T') };
    }
    return { object: parsed, action, utf8, table, change };
  }

  #decodePayload(payload: ParsedPayload, walStart: Lsn): LogicalMessage[] {
    const { object, action } = payload;
    switch (action) {
      case 'B':
        return [
          {
            tag: 'begin',
            finalLsn: lsnField(object, 'lsn', 'B', ' (start replication with "include-lsn" \'1\')'),
            commitTime: timestampField(object, 'B'),
            xid: uint32Field(object, 'xid', 'B', ' (start replication with "include-xids" \'1\')'),
          },
        ];
      case 'C':
        return [
          {
            tag: 'commit',
            flags: 0,
            commitLsn: lsnField(object, 'lsn', 'C', ' (start replication with "include-lsn" \'1\')'),
            endLsn: optionalLsnField(object, 'nextlsn', 'C') ?? walStart,
            commitTime: timestampField(object, 'C'),
          },
        ];
      case 'M':
        return [this.#message(object, walStart, payload.utf8)];
      case 'I':
      case 'U':
      case 'D':
        return this.#change(payload.change!);
      case 'T':
        return this.#truncate(payload.table!);
      default:
        return fail('payload', `unknown action ${JSON.stringify(action)}`);
    }
  }

  #message(obj: JsonObject, walStart: Lsn, utf8: boolean): LogicalMessage {
    const transactional = booleanField(obj, 'transactional', 'M');
    const prefix = stringField(obj, 'prefix', 'M');
    const content = stringField(obj, 'content', 'M');
    const lsn = optionalLsnField(obj, 'lsn', 'M') ?? walStart;
    return {
      tag: 'message',
      flags: transactional ? 1 : 0,
      lsn,
      prefix: utf8 ? prefix : UTF8_LOSSY.decode(Buffer.from(prefix, 'latin1')),
      content: utf8 ? ENCODER.encode(content) : new Uint8Array(Buffer.from(content, 'latin1')),
    };
  }

  #truncate(table: Wal2jsonTable): LogicalMessage[] {
    const key = tableKey(table);
    const out: LogicalMessage[] = [];
    let state = this.#tables.get(key);
    if (!state) {
      // Never seen: describe it as the catalog does, or (without the catalog's word) without columns, so a
      // Relation still precedes its first message.
      const definition = this.#definitions.get(key);
      state = definition
        ? this.#defined(table, definition, undefined)
        : {
            relation: {
              relationId: this.#assignId(table),
              namespace: table.schema,
              name: table.table,
              replicaIdentity: 'd',
              columns: [],
            },
            shown: [],
          };
      this.#tables.set(key, state);
      out.push({ tag: 'relation', relation: state.relation });
    }
    // wal2json sends one T per table and drops CASCADE / RESTART IDENTITY.
    out.push({ tag: 'truncate', options: 0, relationIds: [state.relation.relationId] });
    return out;
  }

  /** True when `change` shows the columns `state` expects, with the replica identity key it expects. */
  #fits(change: ChangePayload, state: TableState): boolean {
    const { columns, identity } = change;
    switch (change.action) {
      case 'I':
        return sameShape(columns!, state.shown);
      case 'U':
        return fitsWithin(columns!, state.shown, true) && (!identity || identityFits(identity, state));
      case 'D':
        return identityFits(identity!, state);
    }
  }

  /** The state a catalog definition gives (generated columns shown but not in the relation). */
  #defined(table: Wal2jsonTable, definition: TableDefinition, previous: TableState | undefined): TableState {
    return {
      relation: {
        relationId: previous?.relation.relationId ?? this.#assignId(table),
        namespace: table.schema,
        name: table.table,
        replicaIdentity: definition.replicaIdentity,
        columns: definition.columns
          .filter((column) => !column.generated)
          .map((column) => ({
            isKey: column.isKey,
            name: column.name,
            typeOid: column.typeOid,
            typeModifier: column.typeModifier,
          })),
      },
      shown: definition.columns.map((column) => ({
        name: column.name,
        typeOid: column.typeOid,
        toastable: column.toastable,
        generated: column.generated,
      })),
    };
  }

  /**
   * The state derived from the message (no definition fits it): the most complete column list this message
   * allows — an update omits unchanged TOASTed columns —, the replica identity from what the identity holds:
   * either the whole old row (REPLICA IDENTITY FULL) or the key columns (the primary key, or the index of
   * REPLICA IDENTITY USING INDEX). `base` is what is known of the table's columns: the previous state, or a
   * definition whose columns fit the message while its replica identity does not (changed since the change was
   * written); where the message fits its columns, they are kept (with their typmods, generated ones left out).
   */
  #derived(change: ChangePayload, base: TableState | undefined): TableState {
    const { action, pk, columns, identity } = change;
    const key = tableKey(change);
    const known = base?.relation;
    const generated = new Set(base?.shown.filter((column) => column.generated).map((column) => column.name));
    const identityNames = identity?.map((column) => column.name).filter((name) => !generated.has(name));
    const primaryKeyIdentity = identityNames !== undefined && pk.length > 0 && sameNames(identityNames, pk);
    let shape: readonly ColumnShape[];
    let shown: readonly ShownColumn[];
    if (action === 'D') {
      const keyIdentity = primaryKeyIdentity || known?.replicaIdentity === 'i';
      const wholeRow = base !== undefined && sameShape(identity!, base.shown);
      const keep =
        wholeRow || (keyIdentity && base !== undefined && fitsWithin(identity!, base.shown, false));
      shape = keep ? known!.columns : identity!;
      shown = keep ? base.shown : identity!.map(shownFromMessage);
    } else if (
      action === 'U' &&
      identity &&
      !primaryKeyIdentity &&
      fitsWithin(columns!, identity.map(shownFromMessage), true)
    ) {
      // the identity is the whole old row
      const keep = base !== undefined && sameShape(identity, base.shown);
      shape = keep ? known!.columns : identity;
      shown = keep ? base.shown : identity.map(shownFromMessage);
    } else if (action === 'U' && base && fitsWithin(columns!, base.shown, true)) {
      shape = known!.columns;
      shown = base.shown;
    } else {
      shape = columns!;
      shown = columns!.map(shownFromMessage);
    }

    // Derived from what the identity holds; an insert says nothing, so it keeps the last one.
    let replicaIdentity: ReplicaIdentity = known?.replicaIdentity ?? 'd';
    if (identityNames) {
      const shapeNames = shape.map((column) => column.name);
      replicaIdentity = primaryKeyIdentity ? 'd' : sameNames(identityNames, shapeNames) ? 'f' : 'i';
    }

    // isKey as pgoutput sets it: the replica identity key — the primary key (d), the identity index's
    // columns (i, remembered from the last identity seen), every column (f).
    const indexKey = replicaIdentity === 'i' ? (identityNames ?? this.#indexKeys.get(key)) : undefined;
    if (indexKey) this.#indexKeys.set(key, indexKey);
    const keys = new Set(replicaIdentity === 'f' ? shape.map((column) => column.name) : (indexKey ?? pk));
    return {
      relation: {
        relationId: known?.relationId ?? this.#assignId(change),
        namespace: change.schema,
        name: change.table,
        replicaIdentity,
        columns: shape.map((column): RelationColumn => ({
          isKey: keys.has(column.name),
          name: column.name,
          typeOid: column.typeOid,
          // a column of the known relation keeps its modifier; one only the message shows has none
          typeModifier: 'typeModifier' in column ? (column as RelationColumn).typeModifier : -1,
        })),
      },
      shown,
    };
  }

  #change(change: ChangePayload): LogicalMessage[] {
    const key = tableKey(change);
    const previous = this.#tables.get(key);
    let state: TableState;
    if (previous && this.#fits(change, previous)) state = previous;
    else {
      const definition = this.#definitions.get(key);
      const defined = definition && this.#defined(change, definition, previous);
      if (defined && this.#fits(change, defined)) state = defined;
      else state = this.#derived(change, defined && columnsFit(change, defined) ? defined : previous);
    }
    const out: LogicalMessage[] = [];
    if (state !== previous) {
      this.#tables.set(key, state);
      if (!previous || !sameRelation(previous.relation, state.relation))
        out.push({ tag: 'relation', relation: state.relation });
    }
    const { relationId, columns: shape } = state.relation;
    const full = state.relation.replicaIdentity === 'f';
    const { columns, identity } = change;

    if (change.action === 'I') {
      out.push({ tag: 'insert', relationId, newTuple: align(shape, columns!, NULL_VALUE) });
    } else if (change.action === 'U') {
      const newTuple = align(shape, columns!, UNCHANGED_TOAST);
      if (identity && full) {
        out.push({ tag: 'update', relationId, oldTuple: align(shape, identity, NULL_VALUE), newTuple });
      } else if (
        identity &&
        identity.some((old) => !columns!.some((c) => c.name === old.name && sameValue(c.value, old.value)))
      ) {
        // The key changed: pgoutput would send the old key (K); wal2json sends the identity every time.
        out.push({ tag: 'update', relationId, oldKey: align(shape, identity, NULL_VALUE), newTuple });
      } else {
        out.push({ tag: 'update', relationId, newTuple });
      }
    } else {
      const old = align(shape, identity!, NULL_VALUE);
      out.push(
        full ? { tag: 'delete', relationId, oldTuple: old } : { tag: 'delete', relationId, oldKey: old },
      );
    }
    return out;
  }

  #assignId(table: Wal2jsonTable): number {
    const owner = tableKey(table);
    let id = fnv1a(owner) || 1;
    for (;;) {
      const current = this.#idOwners.get(id);
      if (current === undefined || current === owner) break;
      id = id === 0xffffffff ? 1 : id + 1;
    }
    this.#idOwners.set(id, owner);
    return id;
  }
}

/** True when `change` shows columns of the state (whatever its replica identity). */
function columnsFit(change: ChangePayload, state: TableState): boolean {
  const { columns, identity } = change;
  if (
    columns &&
    !(change.action === 'I' ? sameShape(columns, state.shown) : fitsWithin(columns, state.shown, true))
  )
    return false;
  return !identity || fitsWithin(identity, state.shown, false);
}

/**
 * True when `identity` fits the state's columns and names exactly its replica identity key (generated columns
 * aside: wal2json shows them in a FULL identity, the relation leaves them out).
 */
function identityFits(identity: readonly Column[], state: TableState): boolean {
  if (!fitsWithin(identity, state.shown, false)) return false;
  const generated = new Set(state.shown.filter((column) => column.generated).map((column) => column.name));
  const names = identity.filter((column) => !generated.has(column.name)).map((column) => column.name);
  const keys = state.relation.columns.filter((column) => column.isKey).map((column) => column.name);
  return sameNames(names, keys);
}

function readChange(obj: JsonObject, action: 'I' | 'U' | 'D'): ChangePayload {
  const schema = stringField(obj, 'schema', action);
  const table = stringField(obj, 'table', action);
  const where = `${action} ${schema}.${table}`;
  const pk = readShapes(obj, 'pk', where).map((column) => column.name);
  const columns = action === 'D' ? undefined : readColumns(obj, 'columns', where);
  const identity =
    action === 'I' || (action === 'U' && field(obj, 'identity') === undefined)
      ? undefined
      : readColumns(obj, 'identity', where);
  return { action, schema, table, pk, columns, identity };
}

/** Runs `work`, turning every failure into a `DecodeError`. */
function guarded<T>(work: () => T): T {
  try {
    return work();
  } catch (error) {
    if (error instanceof DecodeError) throw error;
    if (error instanceof SourceUnavailable) {
      throw new DecodeError('wal2json: this Node.js has no JSON.parse source text access (needs Node 22+)');
    }
    throw new DecodeError(`wal2json: ${error instanceof Error ? error.message : String(error)}`);
  }
}
