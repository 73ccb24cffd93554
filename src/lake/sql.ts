/**
 * SQL over the archive, for two engines: DuckDB, and Trino (Athena engine 3). Pure string building.
 *
 * A table's changes read as one flat relation whatever the objects' format — the table's columns (the new row
 * for c/u/r, the old row or key for d, all null for t), then `_op`, `_lsn`, `_commit_lsn` (LSNs as numbers),
 * `_seq`, `_tx_id`, `_commit_ts`, `_before` (JSON text), `_unchanged_toast`, `_unrepresentable` — the Parquet
 * objects' own columns (contract §3.1); JSON Lines records are flattened into the same columns, each value
 * converted from its JSON form (contract §4) to the column's lake type, so no reader guesses a type.
 *
 * The current state of a table (`currentStateSql`) replays its changes by `(commit_lsn, seq)`: only changes
 * after the last truncate count; per key the latest change wins and a delete removes the row; an update that
 * changes the key also removes the old key (taken from `_before`); snapshot records (`r`) are upserts. A
 * value an update left unchanged in TOAST (named in `_unchanged_toast`, null in the row) is taken from the
 * row's previous version: the latest earlier change of the same key that carried it — or, for an update that
 * changed the key, the old key's value just before it. A chain of two key changes that both left the value
 * unchanged, with no change carrying it in between, leaves it null (never a stale value: a delete or a key
 * change ends a key's history).
 */
import type { LakeColumn, TableKey } from './archive.js';
import { duckdbType, mayBeToasted, trinoType, type LakeScalar, type LakeType } from './types.js';
import { METADATA_COLUMN_NAMES } from '../sink/parquet/schema.js';

export interface Dialect {
  readonly name: 'duckdb' | 'trino';
  type(type: LakeType): string;
  /** The member `name` of JSON text `json`, converted from its contract §4 form to `type`. */
  jsonMember(json: string, name: string, type: LakeType): string;
  /** An `X/X` LSN text as a number. */
  lsnNumber(text: string): string;
  /** Microseconds since the epoch as a UTC timestamp. */
  timestampOfMicros(micros: string): string;
  /** `last_value(expr IGNORE NULLS) OVER (over)`. */
  lastValueIgnoreNulls(expr: string, over: string): string;
  /** The first element of a list. */
  first(list: string): string;
  /** A one-element list. */
  single(expr: string): string;
}

export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

export function quoteString(text: string): string {
  return `'${text.replace(/'/g, "''")}'`;
}

/** A scalar from its contract §4 text (JSON strings and the text of JSON numbers and booleans), DuckDB. */
function duckdbScalarOfText(text: string, scalar: LakeScalar): string {
  switch (scalar.kind) {
    case 'varchar':
      return text;
    case 'blob':
      return `from_base64(${text})`;
    default:
      return `TRY_CAST(${text} AS ${duckdbType({ scalar, list: false })})`;
  }
}

export const DUCKDB: Dialect = {
  name: 'duckdb',
  type: duckdbType,
  jsonMember(json, name, type) {
    const path = quoteString(`$."${name.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`);
    if (!type.list) return duckdbScalarOfText(`json_extract_string(${json}, ${path})`, type.scalar);
    const texts = `TRY_CAST(json_extract(${json}, ${path}) AS VARCHAR[])`;
    if (type.scalar.kind === 'varchar') return texts;
    return `[${duckdbScalarOfText('x', type.scalar)} FOR x IN ${texts}]`;
  },
  lsnNumber: (text) =>
    `(CAST('0x' || split_part(${text}, '/', 1) AS BIGINT) * 4294967296 + ` +
    `CAST('0x' || split_part(${text}, '/', 2) AS BIGINT))`,
  timestampOfMicros: (micros) => `make_timestamptz(${micros})`,
  lastValueIgnoreNulls: (expr, over) => `last_value(${expr} IGNORE NULLS) OVER (${over})`,
  first: (list) => `(${list})[1]`,
  single: (expr) => `[${expr}]`,
};

/** A scalar from its contract §4 text, Trino. */
function trinoScalarOfText(text: string, scalar: LakeScalar): string {
  switch (scalar.kind) {
    case 'varchar':
      return text;
    case 'json':
      return `TRY(json_parse(${text}))`;
    case 'blob':
      return `TRY(from_base64(${text}))`;
    case 'timestamptz':
      return `TRY(from_iso8601_timestamp_nanos(${text}))`;
    case 'timestamp':
      return `TRY_CAST(replace(${text}, 'T', ' ') AS timestamp(6))`;
    default:
      return `TRY_CAST(${text} AS ${trinoType({ scalar, list: false })})`;
  }
}

export const TRINO: Dialect = {
  name: 'trino',
  type: trinoType,
  jsonMember(json, name, type) {
    const path = quoteString(`$["${name.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"]`);
    if (!type.list) {
      // json_extract_scalar is null for arrays and objects: those keep their JSON text
      const text = `COALESCE(json_extract_scalar(${json}, ${path}), json_format(json_extract(${json}, ${path})))`;
      return trinoScalarOfText(text, type.scalar);
    }
    const texts = `TRY_CAST(json_extract(${json}, ${path}) AS array(varchar))`;
    if (type.scalar.kind === 'varchar') return texts;
    return `transform(${texts}, x -> ${trinoScalarOfText('x', type.scalar)})`;
  },
  lsnNumber: (text) =>
    `(from_base(split_part(${text}, '/', 1), 16) * 4294967296 + from_base(split_part(${text}, '/', 2), 16))`,
  timestampOfMicros: (micros) => `CAST(from_unixtime_nanos(${micros} * 1000) AS timestamp(6) with time zone)`,
  lastValueIgnoreNulls: (expr, over) => `last_value(${expr}) IGNORE NULLS OVER (${over})`,
  first: (list) => `element_at(${list}, 1)`,
  single: (expr) => `ARRAY[${expr}]`,
};

/** The metadata columns every change relation ends with, in order: the Parquet objects' own (contract §3.1). */
export const CHANGE_METADATA = METADATA_COLUMN_NAMES;

/**
 * The select list flattening JSON Lines records (columns `op`, `before`, `after`, `source`,
 * `unchanged_toast`, as read from the objects) into the change columns.
 */
export function flattenJsonRecords(
  dialect: Dialect,
  columns: readonly LakeColumn[],
  from: string,
  trailing: readonly string[] = [],
): string {
  const row = `CASE WHEN op = 'd' THEN "before" ELSE "after" END`;
  const lines = columns.map(
    (column) => `${dialect.jsonMember('__row', column.name, column.type)} AS ${quoteIdent(column.name)}`,
  );
  const json = dialect.name === 'duckdb' ? 'CAST("before" AS VARCHAR)' : '"before"';
  lines.push(
    'op AS _op',
    `${dialect.lsnNumber('source.lsn')} AS _lsn`,
    `${dialect.lsnNumber('source.commit_lsn')} AS _commit_lsn`,
    'source.seq AS _seq',
    `source.${dialect.name === 'duckdb' ? '"txId"' : 'txid'} AS _tx_id`,
    `${dialect.timestampOfMicros('source.ts_us')} AS _commit_ts`,
    `${json} AS _before`,
    'unchanged_toast AS _unchanged_toast',
    `CAST(NULL AS ${dialect.type({ scalar: { kind: 'varchar' }, list: false })}) AS _unrepresentable`,
    ...trailing,
  );
  return `SELECT\n  ${lines.join(',\n  ')}\nFROM (SELECT *, ${row} AS __row FROM ${from}) AS records`;
}

/** The select list of a change relation whose columns are already flat and typed (Parquet), with casts where a column's type changed. */
export function typedChanges(
  dialect: Dialect,
  columns: readonly LakeColumn[],
  from: string,
  trailing: readonly string[] = [],
  convert: (column: LakeColumn, expr: string) => string = (column, expr) =>
    column.note ? `TRY_CAST(${expr} AS ${dialect.type(column.type)})` : expr,
  metadata: (name: (typeof CHANGE_METADATA)[number]) => string = (name) => name,
): string {
  const lines = columns.map(
    (column) => `${convert(column, quoteIdent(column.name))} AS ${quoteIdent(column.name)}`,
  );
  lines.push(...CHANGE_METADATA.map(metadata), ...trailing);
  return `SELECT\n  ${lines.join(',\n  ')}\nFROM ${from}`;
}

export interface CurrentStateInput {
  /** The change relation (a view name) the state is built from. */
  readonly changes: string;
  readonly columns: readonly LakeColumn[];
  readonly key: TableKey;
  /** Output column → the change columns that held it over time (a renamed column: new name first). */
  readonly sources: ReadonlyMap<string, readonly string[]>;
}

/** Output columns of the current state: the table's columns in its latest version. */
export function currentColumns(columns: readonly LakeColumn[]): LakeColumn[] {
  return columns.filter((column) => column.current);
}

/** The query of a table's current state (see the module comment). */
export function currentStateSql(dialect: Dialect, input: CurrentStateInput): string {
  const q = quoteIdent;
  const out = currentColumns(input.columns);
  const keyNames = input.key.columns;
  const keySet = new Set(keyNames);
  const byName = new Map(input.columns.map((column) => [column.name, column]));
  const sourcesOf = (name: string) => input.sources.get(name) ?? [name];
  const fill = out.filter((column) => !keySet.has(column.name) && mayBeToasted(column.type));
  const partition = keyNames.map(q).join(', ');
  const typed = (column: LakeColumn) => dialect.type(column.type);
  const unchanged = (column: LakeColumn) =>
    `(${sourcesOf(column.name)
      .map((name) => `COALESCE(contains(_unchanged_toast, ${quoteString(name)}), FALSE)`)
      .join(' OR ')})`;
  const value = (column: LakeColumn) => {
    const names = sourcesOf(column.name);
    if (names.length === 1) return `c.${q(names[0]!)}`;
    return `COALESCE(${names.map((n) => `TRY_CAST(c.${q(n)} AS ${typed(column)})`).join(', ')})`;
  };
  const oldKey = (i: number) => `__old_key_${i}`;
  const keyChanged =
    `(${oldKey(0)} IS NOT NULL AND NOT (` +
    keyNames.map((name, i) => `${oldKey(i)} IS NOT DISTINCT FROM ${q(name)}`).join(' AND ') +
    '))';
  const ctes: string[] = [];
  ctes.push(
    `last_truncate AS (\n  SELECT _commit_lsn, _seq FROM ${input.changes} WHERE _op = 't'\n` +
      '  ORDER BY _commit_lsn DESC, _seq DESC LIMIT 1\n)',
  );
  const liveColumns = [
    ...out.map((column) => `${value(column)} AS ${q(column.name)}`),
    ...keyNames.map(
      (name, i) => `${dialect.jsonMember('c._before', name, byName.get(name)!.type)} AS ${oldKey(i)}`,
    ),
    'c._op',
    'c._commit_lsn',
    'c._seq',
    'c._commit_ts',
    'c._unchanged_toast',
  ];
  ctes.push(
    `live AS (\n  SELECT\n    ${liveColumns.join(',\n    ')}\n` +
      `  FROM ${input.changes} AS c LEFT JOIN last_truncate AS t ON TRUE\n` +
      "  WHERE c._op IN ('c', 'u', 'd', 'r')\n" +
      '    AND (t._commit_lsn IS NULL OR c._commit_lsn > t._commit_lsn\n' +
      '         OR (c._commit_lsn = t._commit_lsn AND c._seq > t._seq))\n)',
  );
  const eventColumns = ['_op', '_commit_lsn', '_seq', '_commit_ts', '_unchanged_toast'];
  const removalColumns = out.map((column) => {
    const i = keyNames.indexOf(column.name);
    return i >= 0
      ? `${oldKey(i)} AS ${q(column.name)}`
      : `CAST(NULL AS ${typed(column)}) AS ${q(column.name)}`;
  });
  ctes.push(
    'events AS (\n' +
      `  SELECT ${[...out.map((column) => q(column.name)), ...eventColumns].join(', ')},\n` +
      `    1 AS __step, ${keyChanged} AS __key_changed\n  FROM live\n  UNION ALL\n` +
      `  SELECT ${removalColumns.join(', ')},\n` +
      `    'd', _commit_lsn, _seq, _commit_ts, CAST(NULL AS ${dialect.type({ scalar: { kind: 'varchar' }, list: true })}),\n` +
      `    0, FALSE\n  FROM live WHERE _op = 'u' AND ${keyChanged}\n)`,
  );
  const window =
    `PARTITION BY ${partition} ORDER BY _commit_lsn, _seq, __step ` +
    'ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING';
  let last = 'events';
  if (fill.length > 0) {
    const nullList = (column: LakeColumn) => dialect.single(`CAST(NULL AS ${typed(column)})`);
    // stage 0: each key's previous value, ignoring what key changes carried (only needed at the old key)
    ctes.push(
      'previous AS (\n  SELECT e.*,\n    ' +
        fill
          .map(
            (column, i) =>
              `${dialect.lastValueIgnoreNulls(
                `CASE WHEN _op = 'd' THEN ${nullList(column)} WHEN ${unchanged(column)} THEN NULL ` +
                  `ELSE ${dialect.single(q(column.name))} END`,
                window,
              )} AS __previous_${i}`,
          )
          .join(',\n    ') +
        '\n  FROM events AS e\n)',
    );
    // what an update that changed the key carries over from the old key
    ctes.push(
      'carried AS (\n  SELECT e.*, ' +
        fill.map((_, i) => `k.__previous_${i} AS __carried_${i}`).join(', ') +
        '\n  FROM previous AS e LEFT JOIN (SELECT * FROM previous WHERE __step = 0) AS k\n' +
        '    ON e.__key_changed AND k._commit_lsn = e._commit_lsn AND k._seq = e._seq\n)',
    );
    // stage 1: the previous version's value, carried values included
    ctes.push(
      'filled AS (\n  SELECT e.*,\n    ' +
        fill
          .map(
            (column, i) =>
              `${dialect.lastValueIgnoreNulls(
                `CASE WHEN _op = 'd' THEN ${nullList(column)} ` +
                  `WHEN ${unchanged(column)} AND __key_changed THEN COALESCE(__carried_${i}, ${nullList(column)}) ` +
                  `WHEN ${unchanged(column)} THEN NULL ELSE ${dialect.single(q(column.name))} END`,
                window,
              )} AS __filled_${i}`,
          )
          .join(',\n    ') +
        '\n  FROM carried AS e\n)',
    );
    last = 'filled';
  }
  ctes.push(
    `ranked AS (\n  SELECT r.*, row_number() OVER (PARTITION BY ${partition} ` +
      `ORDER BY _commit_lsn DESC, _seq DESC, __step DESC) AS __rank\n  FROM ${last} AS r\n)`,
  );
  const fillIndex = new Map(fill.map((column, i) => [column.name, i]));
  const finalColumns = out.map((column) => {
    const i = fillIndex.get(column.name);
    if (i === undefined) return q(column.name);
    const previous = `CASE WHEN __key_changed THEN __carried_${i} ELSE __filled_${i} END`;
    return `CASE WHEN ${unchanged(column)} THEN ${dialect.first(previous)} ELSE ${q(column.name)} END AS ${q(column.name)}`;
  });
  finalColumns.push('_op', '_commit_lsn', '_seq', '_commit_ts');
  return (
    `WITH\n${ctes.join(',\n')}\n` +
    `SELECT\n  ${finalColumns.join(',\n  ')}\nFROM ranked\nWHERE __rank = 1 AND _op <> 'd'`
  );
}

/**
 * Output column → change columns holding it: a column renamed since (same field id, the Postgres attnum,
 * under another name in an earlier version and not reused later) is read from its old name too.
 */
export function renamedSources(
  columns: readonly LakeColumn[],
  versions: ReadonlyArray<{
    readonly columns: ReadonlyArray<{ readonly name: string; readonly fieldId: number }>;
  }>,
  unknownFieldIdBase: number,
): Map<string, string[]> {
  const current = new Set(columns.filter((column) => column.current).map((column) => column.name));
  const latest = versions[versions.length - 1];
  const sources = new Map<string, string[]>();
  if (!latest) return sources;
  for (const column of latest.columns) {
    if (column.fieldId >= unknownFieldIdBase) continue;
    const names = [column.name];
    for (const version of versions)
      for (const other of version.columns)
        if (other.fieldId === column.fieldId && !names.includes(other.name) && !current.has(other.name))
          names.push(other.name);
    sources.set(column.name, names);
  }
  return sources;
}
