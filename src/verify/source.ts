/**
 * The source side of `verify`: the table's rows reduced, in SQL, to the same digests as the archive's
 * (verify/digest.ts), so that only sums per bucket — and then the keys and hashes of the rows in differing
 * buckets — cross the network, never the table.
 *
 * The columns are those a snapshot reads and pgoutput sends (live, not generated, in attribute order:
 * snapshot/reader.ts `planTable`), each as its text output under slotlake's pinned session settings; the key
 * is the snapshot's (primary key, else a unique index over NOT NULL columns, else none: the whole row).
 * The first pass returns one `(bucket, rows, sum of row hashes)` per bucket — one scan of the table. The
 * drill-down fetches, for the differing buckets only, each row's key and hash (and whether the key lies beyond
 * the snapshot's last key) through a cursor, so memory stays bounded — a second scan, and only when something
 * differs. Both run in one REPEATABLE READ READ ONLY transaction, so they see the same rows.
 */
import type pg from 'pg';
import { isArrayType } from '../decoding/values/mapper.js';
import type { TypeRegistry } from '../decoding/values.js';
import { classify } from '../errors.js';
import { qualifiedName, quoteIdentifier, quoteLiteral, type TableName } from '../names.js';
import { TypeCatalog } from '../replication/catalog.js';
import { planTable, type SnapshotPlan } from '../snapshot/reader.js';
import type { BucketSum } from './rebuild.js';
import {
  bucket32Sql,
  bucketAtSql,
  canonicalText,
  canonicalTextSql,
  columnTextSql,
  hash64Sql,
  md5Sql,
  type SqlColumn,
} from './digest.js';

export interface SourceTable {
  readonly table: TableName;
  readonly plan: SnapshotPlan;
  readonly columns: readonly SqlColumn[];
  /** Positions of the key columns; null when the table has no usable key (rows are their own key). */
  readonly keyIndexes: readonly number[] | null;
  readonly registry: TypeRegistry;
}

/** The table as verify compares it, or undefined when it does not exist. */
export async function describeSourceTable(
  client: pg.Client,
  table: TableName,
): Promise<SourceTable | undefined> {
  const plan = await planTable(client, table);
  if (!plan) return undefined;
  const catalog = new TypeCatalog(client);
  await catalog.load(plan.columns.map((column) => column.typeOid));
  const registry = catalog.registry;
  return {
    table,
    plan,
    columns: plan.columns.map((column) => ({
      name: column.name,
      isArray: isArrayType(column.typeOid, registry),
    })),
    keyIndexes: plan.keyKind === 'ctid' ? null : plan.keyIndexes,
    registry,
  };
}

const ALIAS = 's';

/** The row's and the key's MD5 (hex) as columns `rm` and `km` of a subquery over the table. */
function digestsSubquery(source: SourceTable, extraColumns: readonly string[] = []): string {
  const row = md5Sql(canonicalTextSql(source.columns, ALIAS));
  const key =
    source.keyIndexes === null
      ? undefined
      : md5Sql(
          canonicalTextSql(
            source.keyIndexes.map((i) => source.columns[i]!),
            ALIAS,
          ),
        );
  const select = [`${row} AS rm`, `${key ?? row} AS km`, ...extraColumns];
  return `SELECT ${select.join(', ')} FROM ${qualifiedName(source.table)} AS ${ALIAS}`;
}

/** Pass one: rows and the sum of row hashes per bucket (2^bits buckets of the key hash). */
export async function bucketSums(
  client: pg.Client,
  source: SourceTable,
  bits: number,
): Promise<Map<number, BucketSum>> {
  const sql = `SELECT ${bucketAtSql(bucket32Sql('km'), bits)} AS bucket, count(*)::int8::text AS rows,
                      sum(${hash64Sql('rm')})::text AS sum
                 FROM (${digestsSubquery(source)}) AS d GROUP BY 1`;
  try {
    const result = await client.query<{ bucket: string; rows: string; sum: string }>(sql);
    const sums = new Map<number, BucketSum>();
    for (const row of result.rows)
      sums.set(Number(row.bucket), { rows: Number(row.rows), sum: BigInt(row.sum) });
    return sums;
  } catch (error) {
    throw classify(error, {
      origin: 'source',
      what: `summing ${source.table.schema}.${source.table.table} per bucket`,
    });
  }
}

/** One source row in a differing bucket. */
export interface SourceLeaf {
  /** The key's canonical text; for keyless tables the row hash. */
  readonly identity: string;
  /** The key columns' text (null for keyless tables). */
  readonly key: readonly (string | null)[] | null;
  readonly hash64: bigint;
  readonly count: number;
  /** The key lies after `afterKey` (the snapshot's last archived key), in the index's order. */
  readonly beyond: boolean;
}

const FETCH_ROWS = 5_000;

/**
 * Pass two: the rows of `buckets`, through a cursor, `FETCH_ROWS` at a time. `afterKey` (the key columns'
 * text) marks rows whose key sorts after it.
 */
export async function* leafRows(
  client: pg.Client,
  source: SourceTable,
  buckets: readonly number[],
  bits: number,
  afterKey: readonly string[] | null,
): AsyncIterable<SourceLeaf> {
  if (buckets.length === 0) return;
  const inBuckets = `${bucketAtSql(bucket32Sql('km'), bits)} = ANY('{${buckets.join(',')}}'::int8[])`;
  let sql: string;
  const keyIndexes = source.keyIndexes;
  if (keyIndexes === null) {
    sql = `SELECT ${hash64Sql('rm')}::text AS h, count(*)::int8::text AS n, NULL::text[] AS k, false AS beyond
             FROM (${digestsSubquery(source)}) AS d WHERE ${inBuckets} GROUP BY 1`;
  } else {
    const keyColumns = keyIndexes.map((i) => source.columns[i]!);
    const keyTexts = `ARRAY[${keyColumns.map((column) => columnTextSql(column, ALIAS)).join(', ')}]::text[]`;
    const beyond =
      afterKey === null
        ? 'false'
        : `(${keyIndexes.map((i) => `${ALIAS}.${quoteIdentifier(source.plan.columns[i]!.name)}`).join(', ')}) > (${keyIndexes
            .map((i, n) => `${quoteLiteral(afterKey[n] ?? '')}::${source.plan.columns[i]!.typeName}`)
            .join(', ')})`;
    sql = `SELECT ${hash64Sql('rm')}::text AS h, '1' AS n, k, beyond
             FROM (${digestsSubquery(source, [`${keyTexts} AS k`, `${beyond} AS beyond`])}) AS d
            WHERE ${inBuckets}`;
  }
  const cursor = 'slotlake_verify_leaf';
  try {
    await client.query(`DECLARE ${cursor} NO SCROLL CURSOR FOR ${sql}`);
    for (;;) {
      const result = await client.query<{
        h: string;
        n: string;
        k: (string | null)[] | null;
        beyond: boolean;
      }>(`FETCH FORWARD ${FETCH_ROWS} FROM ${cursor}`);
      for (const row of result.rows) {
        const hash64 = BigInt(row.h);
        yield {
          identity: row.k === null ? hash64.toString() : canonicalText(row.k),
          key: row.k,
          hash64,
          count: Number(row.n),
          beyond: row.beyond,
        };
      }
      if (result.rows.length < FETCH_ROWS) break;
    }
    await client.query(`CLOSE ${cursor}`);
  } catch (error) {
    throw classify(error, {
      origin: 'source',
      what: `reading the differing rows of ${source.table.schema}.${source.table.table}`,
    });
  }
}

/** The server's `server_version_num`. */
export async function serverVersionNum(client: pg.Client): Promise<number> {
  const row = (await client.query<{ v: string }>(`SELECT current_setting('server_version_num') AS v`))
    .rows[0];
  return Number(row?.v ?? 0);
}
