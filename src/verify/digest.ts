/**
 * Row digests: the one canonical text of a row (and of its key) that both sides of `slotlake verify` can
 * produce exactly — Postgres in SQL, slotlake from the archive — and the hashes compared instead of rows.
 *
 * A row's canonical text is its columns' text output, in the table's column order, each written as
 * `quote_nullable()` writes it (`NULL`, or the text in single quotes with `'` and `\` doubled and an `E`
 * before the quote when it holds a backslash), joined by `,`: self-delimiting, so two different rows never
 * share a text. The key's canonical text is the same over the key columns (the whole row for a table without
 * a key). Its MD5 (over UTF-8) gives the row's **bucket** — the first 32 bits, unsigned; a range of the key
 * space in hash order — and the row's **hash** — the first 64 bits, signed, summed per bucket exactly (as
 * Postgres' `sum(int8)`, a numeric). A value the archive lacks (an unchanged TOAST value with no earlier
 * version) is written `?`, which `quote_nullable` never produces, so it never matches. Arrays are compared
 * without explicit lower bounds, which the contract drops (verify/pg-text.ts): the SQL strips a leading
 * `[l:u]...=` from array columns.
 */
import { createHash } from 'node:crypto';
import { quoteIdentifier } from '../names.js';

/** A value in a rebuilt row: its text, SQL NULL, or undefined when the archive does not have it. */
export type RowValue = string | null | undefined;

/** Written for a value the archive lacks; never produced by quote_nullable. */
export const ABSENT_MARK = '?';

/** Postgres' `quote_nullable(text)`. */
export function quoteNullable(text: string | null): string {
  if (text === null) return 'NULL';
  const backslash = text.includes('\\');
  const body = text.replace(/'/g, "''");
  return backslash ? `E'${body.replace(/\\/g, '\\\\')}'` : `'${body}'`;
}

/** The canonical text of values in column order. */
export function canonicalText(values: readonly RowValue[]): string {
  let out = '';
  for (let i = 0; i < values.length; i++) {
    const value = values[i];
    if (i > 0) out += ',';
    out += value === undefined ? ABSENT_MARK : quoteNullable(value);
  }
  return out;
}

export interface TextDigest {
  /** First 32 bits of the MD5, unsigned. */
  readonly bucket32: number;
  /** First 64 bits of the MD5, signed. */
  readonly hash64: bigint;
}

export function digestText(text: string): TextDigest {
  const md5 = createHash('md5').update(text, 'utf8').digest();
  return { bucket32: md5.readUInt32BE(0), hash64: md5.readBigInt64BE(0) };
}

/** The bucket of a 32-bit hash prefix when the key space is split into 2^bits buckets. */
export function bucketAt(bucket32: number, bits: number): number {
  return bits <= 0 ? 0 : Math.floor(bucket32 / 2 ** (32 - bits));
}

// ---------------------------------------------------------------------------------------------------
// The same in SQL

export interface SqlColumn {
  readonly name: string;
  /** An array type (its explicit lower bounds are stripped). */
  readonly isArray: boolean;
}

/**
 * A column's value as a SQL expression for `format()`, which prints it with the type's output function — what
 * pgoutput sends. (A `::text` cast would not always: `true::text` is `true`, `'a '::char(2)::text` drops the
 * blank, `inet::text` adds the netmask.) Arrays are printed (array_out, an I/O cast) without their `[l:u]=`.
 */
function columnValueSql(column: SqlColumn, alias: string): string {
  const value = `${alias}.${quoteIdentifier(column.name)}`;
  return column.isArray ? `regexp_replace(${value}::text, '^(\\[-?[0-9]+:-?[0-9]+\\])+=', '')` : value;
}

/** A column's text output as a SQL expression (NULL stays NULL). */
export function columnTextSql(column: SqlColumn, alias: string): string {
  const value = columnValueSql(column, alias);
  return `CASE WHEN ${value} IS NULL THEN NULL ELSE format('%s', ${value}) END`;
}

/** `format()` takes at most 100 arguments: a row's columns are printed this many at a time. */
const FORMAT_ARGUMENTS = 90;

/** The canonical text of `columns` as a SQL expression: `format('%L,%L,…', …)` is quote_nullable of each. */
export function canonicalTextSql(columns: readonly SqlColumn[], alias: string): string {
  if (columns.length === 0) return `''`;
  const parts: string[] = [];
  for (let i = 0; i < columns.length; i += FORMAT_ARGUMENTS) {
    const group = columns.slice(i, i + FORMAT_ARGUMENTS);
    parts.push(
      `format('${group.map(() => '%L').join(',')}', ${group.map((column) => columnValueSql(column, alias)).join(', ')})`,
    );
  }
  return parts.join(` || ',' || `);
}

/** The MD5 (hex) of a canonical text expression, over its UTF-8 bytes. */
export function md5Sql(textSql: string): string {
  return `md5(convert_to(${textSql}, 'UTF8'))`;
}

/** bucket32 of an MD5 hex expression (an int8 in 0 .. 2^32-1). */
export function bucket32Sql(md5: string): string {
  return `('x' || substr(${md5}, 1, 8))::bit(32)::int8`;
}

/** hash64 of an MD5 hex expression (a signed int8). */
export function hash64Sql(md5: string): string {
  return `('x' || substr(${md5}, 1, 16))::bit(64)::int8`;
}

/** The bucket at `bits` of a bucket32 expression. */
export function bucketAtSql(bucket32: string, bits: number): string {
  return bits <= 0 ? '0::int8' : `(${bucket32} >> ${32 - bits})`;
}

/** The values of a canonical text (the inverse of `canonicalText`; `?` becomes undefined). */
export function parseCanonicalText(text: string): RowValue[] {
  const values: RowValue[] = [];
  let i = 0;
  while (i < text.length) {
    if (text.startsWith('NULL', i)) {
      values.push(null);
      i += 4;
    } else if (text[i] === '?') {
      values.push(undefined);
      i += 1;
    } else {
      const escaped = text[i] === 'E';
      if (escaped) i++;
      i++; // opening quote
      let value = '';
      for (;;) {
        const c = text[i];
        if (c === undefined) return values;
        if (c === "'") {
          if (text[i + 1] === "'") {
            value += "'";
            i += 2;
            continue;
          }
          i++;
          break;
        }
        if (escaped && c === '\\' && text[i + 1] === '\\') {
          value += '\\';
          i += 2;
          continue;
        }
        value += c;
        i++;
      }
      values.push(value);
    }
    if (text[i] === ',') i++;
  }
  return values;
}
