/**
 * Comparing the two sides of `verify`, pure: which buckets differ (rows or sum of row hashes), and, inside
 * them, which rows are equal, differing (same key, other values), missing (in the source, not in the archive)
 * or extra (in the archive, not in the source). Rows of a table without a key are their own key and are
 * counted: a row twice in the source and once in the archive is one equal and one missing.
 */
import type { BucketSum, RowDigest } from './rebuild.js';
import type { SourceLeaf } from './source.js';

/** Buckets whose row count or hash sum differ, in order. */
export function differingBuckets(
  source: ReadonlyMap<number, BucketSum>,
  archive: ReadonlyMap<number, BucketSum>,
): number[] {
  const differing: number[] = [];
  const all = new Set([...source.keys(), ...archive.keys()]);
  for (const bucket of all) {
    const a = source.get(bucket);
    const b = archive.get(bucket);
    if (!a || !b || a.rows !== b.rows || a.sum !== b.sum) differing.push(bucket);
  }
  return differing.sort((x, y) => x - y);
}

/** Rows in the buckets that match on both sides (all equal, as far as the hashes can tell). */
export function rowsInMatchingBuckets(
  source: ReadonlyMap<number, BucketSum>,
  differing: ReadonlySet<number>,
): number {
  let rows = 0;
  for (const [bucket, sum] of source) if (!differing.has(bucket)) rows += sum.rows;
  return rows;
}

export type RowVerdict = 'equal' | 'differing' | 'missing' | 'extra';

export interface RowComparison {
  readonly verdict: RowVerdict;
  readonly identity: string;
  /** Rows with this verdict (more than one only for keyless tables). */
  readonly count: number;
  readonly source: SourceLeaf | undefined;
  readonly archive: RowDigest | undefined;
}

/**
 * Compares the rows of the differing buckets. `archive` holds at most the archive's rows of those buckets
 * (by identity); `source` streams the source's.
 */
export async function compareRows(
  source: AsyncIterable<SourceLeaf>,
  archive: ReadonlyMap<string, RowDigest>,
  visit: (comparison: RowComparison) => void,
): Promise<void> {
  const seen = new Set<string>();
  for await (const leaf of source) {
    seen.add(leaf.identity);
    const row = archive.get(leaf.identity);
    if (row === undefined) {
      visit({
        verdict: 'missing',
        identity: leaf.identity,
        count: leaf.count,
        source: leaf,
        archive: undefined,
      });
      continue;
    }
    if (row.hash64 !== leaf.hash64) {
      visit({ verdict: 'differing', identity: leaf.identity, count: 1, source: leaf, archive: row });
      continue;
    }
    const equal = Math.min(row.count, leaf.count);
    visit({ verdict: 'equal', identity: leaf.identity, count: equal, source: leaf, archive: row });
    if (leaf.count > equal)
      visit({
        verdict: 'missing',
        identity: leaf.identity,
        count: leaf.count - equal,
        source: leaf,
        archive: row,
      });
    if (row.count > equal)
      visit({
        verdict: 'extra',
        identity: leaf.identity,
        count: row.count - equal,
        source: leaf,
        archive: row,
      });
  }
  for (const [identity, row] of archive)
    if (!seen.has(identity))
      visit({ verdict: 'extra', identity, count: row.count, source: undefined, archive: row });
}
