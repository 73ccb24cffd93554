/**
 * The database's own account of what changed, to check the archive against: a second logical slot with
 * the core `test_decoding` plugin, created before the workload and read with pg_logical_slot_peek_changes.
 * Nothing here shares code with slotlake's decoders: the server prints every change as text with the types'
 * own output functions, and this module parses that text.
 *
 * What test_decoding prints (contrib/test_decoding/test_decoding.c), one row per event:
 *   BEGIN 744
 *   table public.t: INSERT: id[integer]:1 v[text]:'a''b' n[numeric]:12.50 ok[boolean]:true x[text]:null
 *   table public.t: UPDATE: old-key: id[integer]:2 new-tuple: id[integer]:3 v[text]:unchanged-toast-datum
 *   table public.t: DELETE: id[integer]:3          (or `(no-tuple-data)`)
 *   table public.a, "My S"."b/c": TRUNCATE: (no-flags)
 *   COMMIT 744
 * - Names are quoted identifiers (`"a b"`, `""` for a quote); types are `format_type` names (`integer[]`,
 *   `timestamp with time zone`, `"char"`).
 * - Values: `null`; `unchanged-toast-datum` (a TOASTed value the update did not change, not sent);
 *   integers, floats and numeric bare; booleans `true`/`false`; bit strings `B'1010'`; everything else
 *   (arrays too) in single quotes with `'` doubled.
 * - `old-key:` holds the replica identity columns (all columns under REPLICA IDENTITY FULL) and skips
 *   null ones; it is printed for an update only when the key changed or the identity is FULL.
 *
 * The row's `lsn` column is the change's WAL record; on a COMMIT row it is the END of the commit record
 * (logical.c sets `write_location = txn->end_lsn` for the commit callback), not the commit LSN a pgoutput
 * Commit carries. The commit record's start LSN and its commit time are read from the WAL itself with
 * pg_walinspect (the commit record whose end is the COMMIT row's lsn), so they are independent of slotlake
 * too. The reading session pins TimeZone = UTC and DateStyle = ISO so timestamps print the same way always.
 *
 * Tables are named here by their exact `schema.table` (unquoted, as the archive's records carry them:
 * `My Schema.Order Items`, `public.a"b`), read back from the quoted names test_decoding prints.
 */
import pg from 'pg';
import type { Pipeline } from './stack.js';

/** One printed value. `bare` values were printed without quotes (numbers, booleans, bit strings). */
export type ReferenceValue =
  | { readonly kind: 'null' }
  | { readonly kind: 'unchanged-toast' }
  | { readonly kind: 'text'; readonly text: string; readonly bare: boolean };

export interface ReferenceColumn {
  readonly name: string;
  /** The type as test_decoding prints it (format_type): `integer`, `text[]`, `timestamp with time zone`. */
  readonly type: string;
  /**
   * The type whose value mapping applies: `type`, except for a domain over an array type (also through other
   * domains), which maps like that array type (`integer[]` for a domain over `int[]`), as slotlake documents it
   * (docs/parquet.md, docs/wal2json.md); a domain over a scalar stays itself (a string). Read from pg_type by
   * referenceChanges, on the server, not from slotlake's catalog.
   */
  readonly valueType: string;
  readonly value: ReferenceValue;
}

export interface ReferenceChange {
  /** The change's WAL record (the row's lsn). */
  readonly lsn: string;
  readonly xid: number;
  /** `schema.table`, exact names (unquoted): `public.a b` for the printed `public."a b"`. */
  readonly table: string;
  readonly op: 'c' | 'u' | 'd' | 't';
  /** The schema and table names, unquoted. */
  readonly schemaName: string;
  readonly tableName: string;
  /** The start LSN of the transaction's commit record (pg_walinspect). */
  readonly commitLsn: string;
  /** The end of the commit record: the COMMIT row's lsn. */
  readonly commitEndLsn: string;
  /** The commit time in microseconds since the Unix epoch (from the commit record). */
  readonly commitTimeUs: bigint;
  /**
   * Position among the transaction's changes to the tables read (`tables`, or every table), from 0; a
   * truncate of N tables is N changes, in the order printed.
   */
  readonly seq: number;
  /** `old-key:` of an update, or the tuple of a delete; undefined when none was printed. Nulls skipped. */
  readonly oldTuple: readonly ReferenceColumn[] | undefined;
  /** The new row of an insert or update; undefined for deletes, truncates and `(no-tuple-data)`. */
  readonly newTuple: readonly ReferenceColumn[] | undefined;
}

/** A connection to the database holding the reference slot. */
export type ReferenceSource = Pick<Pipeline, 'databaseUrl'>;

export async function createReferenceSlot(pipeline: Pipeline): Promise<string> {
  const slot = `${pipeline.name}_ref`;
  await pipeline.sql(`SELECT pg_create_logical_replication_slot($1, 'test_decoding')`, [slot]);
  return slot;
}

const OPS: Record<string, ReferenceChange['op']> = { INSERT: 'c', UPDATE: 'u', DELETE: 'd', TRUNCATE: 't' };

/** A cursor over one printed row; every read fails loudly on text it does not expect. */
class Cursor {
  at = 0;
  constructor(readonly text: string) {}

  get done(): boolean {
    return this.at >= this.text.length;
  }

  startsWith(prefix: string): boolean {
    return this.text.startsWith(prefix, this.at);
  }

  expect(prefix: string): void {
    if (!this.startsWith(prefix)) this.fail(`expected ${JSON.stringify(prefix)}`);
    this.at += prefix.length;
  }

  fail(what: string): never {
    throw new Error(
      `test_decoding row not understood at ${this.at} (${what}): ${JSON.stringify(this.text.slice(0, 400))}`,
    );
  }

  /** A possibly quoted identifier, ending before any character in `stops` (unquoted) or after its quote. */
  identifier(stops: string): string {
    if (this.startsWith('"')) return this.quoted('"');
    const start = this.at;
    while (!this.done && !stops.includes(this.text[this.at]!)) this.at++;
    if (this.at === start) this.fail('expected an identifier');
    return this.text.slice(start, this.at);
  }

  /** Text between `quote` characters, the quote doubled inside. */
  quoted(quote: string): string {
    this.expect(quote);
    let out = '';
    for (;;) {
      const next = this.text.indexOf(quote, this.at);
      if (next === -1) this.fail(`unterminated ${quote}`);
      out += this.text.slice(this.at, next);
      this.at = next + 1;
      if (this.text[this.at] === quote) {
        out += quote;
        this.at++;
      } else return out;
    }
  }

  /** A type name up to the `]:` that ends it (quoted parts may hold anything). */
  typeName(): string {
    let out = '';
    while (!this.startsWith(']:')) {
      if (this.done) this.fail('unterminated type');
      if (this.startsWith('"')) out += `"${this.quoted('"').replaceAll('"', '""')}"`;
      else out += this.text[this.at++];
    }
    this.at += 1; // the `]`; the `:` is read by the caller
    return out;
  }

  /** A bare token: up to the next space or the end. */
  token(): string {
    const end = this.text.indexOf(' ', this.at);
    const stop = end === -1 ? this.text.length : end;
    const token = this.text.slice(this.at, stop);
    this.at = stop;
    return token;
  }
}

function parseValue(cursor: Cursor): ReferenceValue {
  if (cursor.startsWith("'")) return { kind: 'text', text: cursor.quoted("'"), bare: false };
  if (cursor.startsWith("B'")) {
    cursor.at += 1;
    return { kind: 'text', text: cursor.quoted("'"), bare: true };
  }
  const token = cursor.token();
  if (token === 'null') return { kind: 'null' };
  if (token === 'unchanged-toast-datum') return { kind: 'unchanged-toast' };
  if (token === '') cursor.fail('expected a value');
  return { kind: 'text', text: token, bare: true };
}

/** ` name[type]:value` repeated, until the end or ` new-tuple:`. */
function parseTuple(cursor: Cursor): ReferenceColumn[] {
  const columns: ReferenceColumn[] = [];
  while (!cursor.done && !cursor.startsWith(' new-tuple:')) {
    cursor.expect(' ');
    const name = cursor.identifier('[');
    cursor.expect('[');
    const type = cursor.typeName();
    cursor.expect(':');
    columns.push({ name, type, valueType: type, value: parseValue(cursor) });
  }
  return columns;
}

interface ParsedTable {
  /** As test_decoding printed it (quoted where needed). */
  readonly printed: string;
  readonly schemaName: string;
  readonly tableName: string;
}

/** The exact `schema.table` of a parsed table (unquoted). */
function exactName(table: ParsedTable): string {
  return `${table.schemaName}.${table.tableName}`;
}

/** `table <qualified>[, <qualified>...]: ` */
function parseTables(cursor: Cursor): ParsedTable[] {
  cursor.expect('table ');
  const tables: ParsedTable[] = [];
  for (;;) {
    const start = cursor.at;
    const schemaName = cursor.identifier('.');
    cursor.expect('.');
    const tableName = cursor.identifier(':,');
    tables.push({ printed: cursor.text.slice(start, cursor.at), schemaName, tableName });
    if (cursor.startsWith(': ')) {
      cursor.at += 2;
      return tables;
    }
    cursor.expect(', ');
  }
}

/** A change row parsed (exported for the parser's own tests). */
export interface ParsedChangeRow {
  readonly op: ReferenceChange['op'];
  readonly tables: readonly ParsedTable[];
  readonly oldTuple: ReferenceColumn[] | undefined;
  readonly newTuple: ReferenceColumn[] | undefined;
}

export function parseChangeRow(data: string): ParsedChangeRow {
  const cursor = new Cursor(data);
  const tables = parseTables(cursor);
  const opName = cursor.identifier(':');
  const op = OPS[opName] ?? cursor.fail(`unknown operation ${opName}`);
  cursor.expect(':');
  if (op === 't') return { op, tables, oldTuple: undefined, newTuple: undefined };
  if (tables.length !== 1) cursor.fail('several tables for a row change');
  if (cursor.startsWith(' (no-tuple-data)')) {
    cursor.expect(' (no-tuple-data)');
    if (!cursor.done) cursor.fail('text after (no-tuple-data)');
    return { op, tables, oldTuple: undefined, newTuple: undefined };
  }
  if (op === 'd') return { op, tables, oldTuple: parseTuple(cursor), newTuple: undefined };
  let oldTuple: ReferenceColumn[] | undefined;
  if (op === 'u' && cursor.startsWith(' old-key:')) {
    cursor.expect(' old-key:');
    oldTuple = parseTuple(cursor);
    cursor.expect(' new-tuple:');
  }
  const newTuple = parseTuple(cursor);
  if (!cursor.done) cursor.fail('text after the tuple');
  return { op, tables, oldTuple, newTuple };
}

/**
 * `YYYY-MM-DD HH:MM:SS[.ffffff]+00` (TimeZone = UTC, DateStyle = ISO) → microseconds since the epoch.
 */
export function utcTimestampMicros(text: string): bigint {
  const match = /^(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2})(?:\.(\d{1,6}))?\+00$/.exec(text);
  if (!match) throw new Error(`not a UTC timestamp: ${JSON.stringify(text)}`);
  const seconds = Date.parse(`${match[1]}T${match[2]}Z`);
  if (Number.isNaN(seconds)) throw new Error(`not a timestamp: ${JSON.stringify(text)}`);
  return BigInt(seconds) * 1000n + BigInt((match[3] ?? '').padEnd(6, '0'));
}

export interface ReferenceOptions {
  /**
   * The tables whose changes `seq` counts (exact `schema.table` names): every table the publication sends in
   * the transactions read. Default: the tables asked for, or every table when none were.
   */
  readonly published?: ReadonlySet<string>;
}

/**
 * The printed type names (of `columns`) that are domains over an array type, each with that array type as
 * format_type prints it: the domain chain followed in pg_type, whatever its depth.
 */
async function domainArrayTypes(
  client: pg.Client,
  columns: readonly ReferenceColumn[],
): Promise<Map<string, string>> {
  const names = [...new Set(columns.map((column) => column.type))];
  const result = await client.query<{ name: string; base: string }>(
    `WITH RECURSIVE chain (name, oid, depth) AS (
         SELECT name, to_regtype(name)::oid, 0 FROM unnest($1::text[]) AS name
       UNION ALL
         SELECT chain.name, t.typbasetype, chain.depth + 1
           FROM chain JOIN pg_type t ON t.oid = chain.oid
          WHERE t.typtype = 'd' AND chain.depth < 32)
     SELECT DISTINCT ON (chain.name) chain.name, format_type(chain.oid, NULL) AS base
       FROM chain JOIN pg_type t ON t.oid = chain.oid
      WHERE chain.depth > 0 AND t.typtype <> 'd' AND t.typcategory = 'A'
      ORDER BY chain.name, chain.depth DESC`,
    [names],
  );
  return new Map(result.rows.map((row) => [row.name, row.base]));
}

/**
 * Every change the reference slot saw, for the tables whose exact `schema.table` names are in `tables` (all
 * when undefined), in WAL order, with its values, its transaction's commit and its `seq`. A TRUNCATE row
 * lists every truncated table; each is one change, as the archive has one record per table.
 */
export async function referenceChanges(
  source: ReferenceSource,
  slot: string,
  tables?: ReadonlySet<string>,
  options: ReferenceOptions = {},
): Promise<ReferenceChange[]> {
  const counted = options.published ?? tables;
  const client = new pg.Client({
    connectionString: source.databaseUrl,
    options: '-c TimeZone=UTC -c DateStyle=ISO -c extra_float_digits=3',
  });
  await client.connect();
  try {
    const result = await client.query<{ lsn: string; xid: string; data: string }>(
      `SELECT lsn::text AS lsn, xid::text AS xid, data FROM pg_logical_slot_peek_changes($1, NULL, NULL)`,
      [slot],
    );
    type Pending = Omit<ReferenceChange, 'commitLsn' | 'commitEndLsn' | 'commitTimeUs'>;
    const transactions: Array<{ xid: number; commitEndLsn: string; changes: Pending[] }> = [];
    let open: { xid: number; changes: Pending[]; seq: number } | undefined;
    let firstLsn: string | undefined;
    for (const row of result.rows) {
      firstLsn ??= row.lsn;
      const xid = Number(row.xid);
      if (/^BEGIN \d+$/.test(row.data)) {
        if (open) throw new Error(`BEGIN ${xid} inside transaction ${open.xid}`);
        open = { xid, changes: [], seq: 0 };
        continue;
      }
      if (/^COMMIT \d+$/.test(row.data)) {
        if (!open || open.xid !== xid) throw new Error(`COMMIT ${xid} outside its transaction`);
        transactions.push({ xid, commitEndLsn: row.lsn, changes: open.changes });
        open = undefined;
        continue;
      }
      if (!row.data.startsWith('table ')) continue; // messages
      if (!open || open.xid !== xid) throw new Error(`change of ${xid} outside its transaction: ${row.data}`);
      const parsed = parseChangeRow(row.data);
      for (const table of parsed.tables) {
        const name = exactName(table);
        if (counted && !counted.has(name)) continue;
        const seq = open.seq++;
        if (tables && !tables.has(name)) continue;
        open.changes.push({
          lsn: row.lsn,
          xid,
          table: name,
          op: parsed.op,
          schemaName: table.schemaName,
          tableName: table.tableName,
          seq,
          oldTuple: parsed.oldTuple,
          newTuple: parsed.newTuple,
        });
      }
    }
    const withChanges = transactions.filter((transaction) => transaction.changes.length > 0);
    if (withChanges.length === 0) return [];
    const valueTypes = await domainArrayTypes(
      client,
      withChanges.flatMap((transaction) =>
        transaction.changes.flatMap((change) => [...(change.oldTuple ?? []), ...(change.newTuple ?? [])]),
      ),
    );
    const typed = (tuple: readonly ReferenceColumn[] | undefined) =>
      tuple?.map((column) => ({ ...column, valueType: valueTypes.get(column.type) ?? column.type }));
    for (const transaction of withChanges)
      transaction.changes = transaction.changes.map((change) => ({
        ...change,
        oldTuple: typed(change.oldTuple),
        newTuple: typed(change.newTuple),
      }));
    // The commit records, read from the WAL: start LSN and commit time by end LSN.
    await client.query('CREATE EXTENSION IF NOT EXISTS pg_walinspect');
    const commits = await client.query<{ start_lsn: string; end_lsn: string; description: string }>(
      `SELECT start_lsn::text, end_lsn::text, description
         FROM pg_get_wal_records_info($1::pg_lsn, $2::pg_lsn)
        WHERE resource_manager = 'Transaction' AND record_type = 'COMMIT'`,
      [firstLsn, withChanges[withChanges.length - 1]!.commitEndLsn],
    );
    const byEnd = new Map(commits.rows.map((row) => [row.end_lsn, row]));
    const changes: ReferenceChange[] = [];
    for (const transaction of withChanges) {
      const commit = byEnd.get(transaction.commitEndLsn);
      if (!commit)
        throw new Error(
          `no commit record in the WAL ends at ${transaction.commitEndLsn} (${transaction.xid})`,
        );
      const commitTimeUs = utcTimestampMicros(commit.description.split(';')[0]!.trim());
      for (const change of transaction.changes)
        changes.push({ ...change, commitLsn: commit.start_lsn, commitEndLsn: commit.end_lsn, commitTimeUs });
    }
    return changes;
  } finally {
    await client.end();
  }
}
