/**
 * The database's own account of what changed, to check the archive against: a second logical slot with
 * the core `test_decoding` plugin, created before the workload and read with pg_logical_slot_peek_changes.
 * Each change row carries its WAL LSN and transaction id, independent of slotlake's decoder.
 *
 * test_decoding writes a table as SQL would (`public.items`, `"My Schema"."Order Items"`, `public."a""b"`);
 * the names are read back here to the exact `schema.table` the archive's records carry.
 */
import type { Pipeline } from './stack.js';

export interface ReferenceChange {
  readonly lsn: string;
  readonly xid: number;
  /** `schema.table`, exact names (unquoted). */
  readonly table: string;
  readonly op: 'c' | 'u' | 'd' | 't';
}

/** A connection to the database holding the reference slot. */
export type ReferenceSource = Pick<Pipeline, 'sql'>;

export async function createReferenceSlot(pipeline: Pipeline): Promise<string> {
  const slot = `${pipeline.name}_ref`;
  await pipeline.sql(`SELECT pg_create_logical_replication_slot($1, 'test_decoding')`, [slot]);
  return slot;
}

const OPS: Record<string, ReferenceChange['op']> = { INSERT: 'c', UPDATE: 'u', DELETE: 'd', TRUNCATE: 't' };

/**
 * Reads `table <name>[, <name>...]: <OP>:` at the start of a test_decoding row: the exact `schema.table`
 * of each name and the operation; undefined for rows that are not table changes (BEGIN, COMMIT).
 */
export function parseChangeRow(data: string): { tables: string[]; op: ReferenceChange['op'] } | undefined {
  if (!data.startsWith('table ')) return undefined;
  let i = 'table '.length;
  const identifier = (): string => {
    if (data[i] === '"') {
      let value = '';
      i++;
      while (i < data.length) {
        if (data[i] === '"') {
          if (data[i + 1] === '"') {
            value += '"';
            i += 2;
            continue;
          }
          i++;
          return value;
        }
        value += data[i++];
      }
      throw new Error(`unterminated quoted name in test_decoding row ${JSON.stringify(data)}`);
    }
    const start = i;
    while (i < data.length && !'.,: '.includes(data[i]!)) i++;
    return data.slice(start, i);
  };
  const tables: string[] = [];
  for (;;) {
    const schema = identifier();
    if (data[i] !== '.') throw new Error(`expected schema.table in ${JSON.stringify(data)}`);
    i++;
    tables.push(`${schema}.${identifier()}`);
    if (data.startsWith(', ', i)) {
      i += 2;
      continue;
    }
    break;
  }
  const match = /^: (INSERT|UPDATE|DELETE|TRUNCATE):/.exec(data.slice(i));
  if (!match) throw new Error(`unexpected test_decoding row ${JSON.stringify(data)}`);
  return { tables, op: OPS[match[1]!]! };
}

/** Every change the reference slot saw, for the tables whose exact `schema.table` names are in `tables`. */
export async function referenceChanges(
  source: ReferenceSource,
  slot: string,
  tables?: Set<string>,
): Promise<ReferenceChange[]> {
  const result = await source.sql(
    `SELECT lsn::text AS lsn, xid::text AS xid, data FROM pg_logical_slot_peek_changes($1, NULL, NULL)`,
    [slot],
  );
  const changes: ReferenceChange[] = [];
  for (const row of result.rows as Array<{ lsn: string; xid: string; data: string }>) {
    const parsed = parseChangeRow(row.data);
    if (!parsed) continue;
    // a TRUNCATE row lists every truncated table; the archive has one record per table
    for (const table of parsed.tables)
      if (!tables || tables.has(table))
        changes.push({ lsn: row.lsn, xid: Number(row.xid), table, op: parsed.op });
  }
  return changes;
}
