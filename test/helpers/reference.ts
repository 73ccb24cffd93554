/**
 * The database's own account of what changed, to check the archive against: a second logical slot with
 * the core `test_decoding` plugin, created before the workload and read with pg_logical_slot_peek_changes.
 * Each change row carries its WAL LSN and transaction id, independent of slotlake's decoder.
 */
import type { Pipeline } from './stack.js';

export interface ReferenceChange {
  readonly lsn: string;
  readonly xid: number;
  readonly table: string;
  readonly op: 'c' | 'u' | 'd' | 't';
}

export async function createReferenceSlot(pipeline: Pipeline): Promise<string> {
  const slot = `${pipeline.name}_ref`;
  await pipeline.sql(`SELECT pg_create_logical_replication_slot($1, 'test_decoding')`, [slot]);
  return slot;
}

const OPS: Record<string, ReferenceChange['op']> = { INSERT: 'c', UPDATE: 'u', DELETE: 'd', TRUNCATE: 't' };

/** Every change the reference slot saw, for the tables whose names match `tables` (schema.table). */
export async function referenceChanges(
  pipeline: Pipeline,
  slot: string,
  tables?: Set<string>,
): Promise<ReferenceChange[]> {
  const result = await pipeline.sql(
    `SELECT lsn::text AS lsn, xid::text AS xid, data FROM pg_logical_slot_peek_changes($1, NULL, NULL)`,
    [slot],
  );
  const changes: ReferenceChange[] = [];
  for (const row of result.rows as Array<{ lsn: string; xid: string; data: string }>) {
    const match = /^table ([^:]+): (INSERT|UPDATE|DELETE|TRUNCATE):/.exec(row.data);
    if (!match) continue;
    const op = OPS[match[2]!]!;
    if (op === 't') {
      // "table a, b: TRUNCATE: ..." lists several tables in one row
      for (const name of match[1]!.split(',').map((part) => part.trim())) {
        if (!tables || tables.has(name))
          changes.push({ lsn: row.lsn, xid: Number(row.xid), table: name, op });
      }
      continue;
    }
    if (!tables || tables.has(match[1]!))
      changes.push({ lsn: row.lsn, xid: Number(row.xid), table: match[1]!, op });
  }
  return changes;
}
