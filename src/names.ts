/**
 * Names: Postgres identifiers as users write them, as the server wants them, and as S3 keys hold them.
 *
 * SQL folds an unquoted identifier to lower case and keeps a double-quoted one exactly (`"OrdersPub"`,
 * `"My Schema"."a/b"`, with `""` for a quote inside). slotlake follows the same rule wherever a user gives
 * a name (`SLOTLAKE_TABLES`), and quotes every name it sends back to the server: in SQL, in replication
 * commands, and in pgoutput's `publication_names` option (which the server splits like an identifier list
 * and would otherwise lower-case); wal2json's `add-tables` has backslash escapes of its own (decoding/wal2json.ts).
 * In S3 keys each of schema and table is one key segment whatever its name (contract §3): every byte of its
 * UTF-8 outside `A-Z a-z 0-9 _ -` is written `%XX`, so `.` separates schema and table unambiguously and no
 * key holds `/`, `..`, `=` or a control character taken from a name.
 * https://www.postgresql.org/docs/current/sql-syntax-lexical.html#SQL-SYNTAX-IDENTIFIERS
 */

/** A table's exact (case-sensitive, unquoted) schema and name. */
export interface TableName {
  readonly schema: string;
  readonly table: string;
}

/** A quoted identifier: `"name"`, with `"` doubled. */
export function quoteIdentifier(value: string): string {
  return `"${value.replace(/"/g, '""')}"`;
}

/** A quoted string literal (replication commands take no bind parameters). */
export function quoteLiteral(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}

/** `"schema"."table"`, for SQL. */
export function qualifiedName(name: TableName): string {
  return `${quoteIdentifier(name.schema)}.${quoteIdentifier(name.table)}`;
}

/** `schema.table` as a human reads it (exact names, no quoting), for messages and logs. */
export function displayName(name: TableName): string {
  return `${name.schema}.${name.table}`;
}

const UNQUOTED_START = /[A-Za-z_\u0080-\uffff]/u;
const UNQUOTED_PART = /[A-Za-z0-9_$\u0080-\uffff]/u;

/**
 * Parses a comma list of `schema.table` names written as in SQL: unquoted parts are folded to lower case,
 * double-quoted parts are kept exactly. Throws an Error saying what is wrong (the caller wraps it).
 */
export function parseTableList(text: string): TableName[] {
  const names: TableName[] = [];
  let i = 0;
  const n = text.length;
  const skipSpace = () => {
    while (i < n && /\s/.test(text[i]!)) i++;
  };
  const identifier = (): string => {
    skipSpace();
    if (text[i] === '"') {
      let value = '';
      i++;
      for (;;) {
        if (i >= n) throw new Error(`unterminated quoted name in ${JSON.stringify(text)}`);
        if (text[i] === '"') {
          if (text[i + 1] === '"') {
            value += '"';
            i += 2;
            continue;
          }
          i++;
          break;
        }
        value += text[i++];
      }
      if (value === '') throw new Error(`empty quoted name in ${JSON.stringify(text)}`);
      return value;
    }
    const start = i;
    if (i < n && UNQUOTED_START.test(text[i]!)) {
      i++;
      while (i < n && UNQUOTED_PART.test(text[i]!)) i++;
    }
    if (i === start) {
      const at = i < n ? `at ${JSON.stringify(text.slice(i, i + 10))}` : 'at the end';
      throw new Error(`expected a name ${at} in ${JSON.stringify(text)} (quote names with other characters)`);
    }
    return text.slice(start, i).toLowerCase();
  };
  for (;;) {
    skipSpace();
    if (i >= n) break;
    const schema = identifier();
    skipSpace();
    if (text[i] !== '.')
      throw new Error(`expected schema.table, got ${JSON.stringify(schema)} without a schema`);
    i++;
    const table = identifier();
    names.push({ schema, table });
    skipSpace();
    if (i >= n) break;
    if (text[i] !== ',') throw new Error(`expected "," after ${displayName({ schema, table })}`);
    i++;
  }
  if (names.length === 0) throw new Error('no table given');
  return names;
}

/** `SLOTLAKE_TABLES`' form of a name: unquoted when SQL would read it back unchanged, quoted otherwise. */
export function formatTableName(name: TableName): string {
  const part = (value: string) => (/^[a-z_][a-z0-9_$]*$/.test(value) ? value : quoteIdentifier(value));
  return `${part(name.schema)}.${part(name.table)}`;
}

/**
 * pgoutput's `publication_names`: a comma list the server splits as identifiers (lower-casing unquoted
 * ones), so each name is quoted.
 */
export function publicationNamesOption(publications: readonly string[]): string {
  return publications.map(quoteIdentifier).join(',');
}

const KEY_SAFE_BYTE = new Uint8Array(256);
for (const c of 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-')
  KEY_SAFE_BYTE[c.charCodeAt(0)] = 1;

/** One S3 key segment for a schema or table name: bytes outside `A-Z a-z 0-9 _ -` as `%XX` (contract §3). */
export function escapeKeySegment(name: string): string {
  if (/^[A-Za-z0-9_-]*$/.test(name)) return name;
  let out = '';
  for (const byte of Buffer.from(name, 'utf8')) {
    out +=
      KEY_SAFE_BYTE[byte] === 1
        ? String.fromCharCode(byte)
        : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/** The inverse of `escapeKeySegment`. */
export function unescapeKeySegment(segment: string): string {
  if (!segment.includes('%')) return segment;
  const bytes: number[] = [];
  for (let i = 0; i < segment.length; i++) {
    if (segment[i] === '%') {
      bytes.push(Number.parseInt(segment.slice(i + 1, i + 3), 16));
      i += 2;
    } else bytes.push(segment.charCodeAt(i));
  }
  return Buffer.from(bytes).toString('utf8');
}

/** `<schema>.<table>` as one S3 key segment. */
export function tableKeySegment(name: TableName): string {
  return `${escapeKeySegment(name.schema)}.${escapeKeySegment(name.table)}`;
}
