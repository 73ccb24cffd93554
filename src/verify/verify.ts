/**
 * `slotlake verify`: for each table, the state rebuilt from the archive (snapshot + changes up to the
 * checkpoint) against the table in the source, without moving either (docs/verify.md).
 *
 * Per table: the archive is read as its manifests stood at the start (verify/archive.ts) and replayed into one
 * digest per row, in bounded memory (verify/rebuild.ts); the source reduces the table to sums per bucket of
 * the key hash (verify/source.ts) in a REPEATABLE READ READ ONLY transaction; buckets that differ are
 * drilled into — the source's keys and row hashes for those buckets only — and every row there is equal,
 * differing, missing or extra (verify/compare.ts). Then, under the pipeline's lease, the keys touched by
 * changes not in that archive state — committed since, or still in the slot — are collected
 * (verify/in-flight.ts): a difference on such a key is in flight, not divergence. Keys the table's snapshot has
 * not reached yet (beyond its last key, or all of a snapshot still pending) are not yet archived. Everything
 * else that differs, and archive damage (a listed object missing, an object no manifest names, a change present
 * twice), is divergence. The report names up to KEYS_LISTED keys per kind (key column values — primary keys
 * are the one row data verify prints, on stdout; logs get counts only).
 */
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import type { Checkpoint, CheckpointStore } from '../checkpoint/store.js';
import type { Config } from '../config.js';
import { classify } from '../errors.js';
import type { Logger } from '../log.js';
import { formatLsn, lsn } from '../lsn.js';
import { displayName, tableKeySegment, type TableName } from '../names.js';
import type { Manifest, ManifestObject } from '../sink/manifest.js';
import type { SnapshotTable } from '../snapshot/progress.js';
import {
  objectChanges,
  readManifests,
  type ArchiveStore,
  type ListedManifest,
  type TargetColumn,
} from './archive.js';
import { compareRows, differingBuckets, rowsInMatchingBuckets, type RowComparison } from './compare.js';
import { parseCanonicalText } from './digest.js';
import {
  PeekCollector,
  peekSlot,
  touchArchived,
  TouchedKeys,
  withPipelineLease,
  type RowIdentity,
} from './in-flight.js';
import { arrayStyleFor, type ArrayStyle } from './pg-text.js';
import { partitionBitsFor, RECORDS_PER_RUN, TableRebuild, type RowDigest } from './rebuild.js';
import { bucketSums, describeSourceTable, leafRows, serverVersionNum, type SourceTable } from './source.js';

/** Keys named per kind in a table's report. */
export const KEYS_LISTED = 20;
/** Rows per bucket the first pass aims at: the drill-down fetches about this many per differing bucket. */
export const TARGET_BUCKET_ROWS = 256;
const MAX_BUCKET_BITS = 18;
/** Archive rows of differing buckets held at once; beyond it, rows are compared by bucket only. */
export const MAX_DRILL_ROWS = 2_000_000;

export type Problem =
  | { kind: 'missing-object'; object: string; manifest: string }
  | { kind: 'unlisted-object'; object: string }
  | { kind: 'object-listed-twice'; object: string; manifests: string[] }
  | { kind: 'unreadable-object'; object: string; error: string }
  | { kind: 'duplicate-change'; commitLsn: string; seq: number; objects: string[] }
  | { kind: 'unusable-change'; count: number; reason: string }
  | { kind: 'no-snapshot'; hint: string }
  | { kind: 'table-missing'; hint: string }
  | { kind: 'too-many-differences'; rowsInDifferingBuckets: number }
  | { kind: 'in-flight-unknown'; error: string };

/** Problems that are not divergence by themselves. */
const BENIGN_PROBLEMS = new Set<Problem['kind']>(['in-flight-unknown']);

export interface KeyReport {
  readonly key: readonly (string | null | undefined)[] | null;
  /** The object holding the row's last archived change. */
  readonly object?: string;
}

export interface TableReport {
  table: string;
  checkpoint: string | null;
  /** `complete`, `in-progress`, `pending` (requested, not started), or `none` (never snapshotted). */
  snapshot: 'complete' | 'in-progress' | 'pending' | 'none';
  snapshotComplete: boolean;
  rowsCompared: number;
  sourceRows: number;
  archiveRows: number;
  equal: number;
  differing: number;
  missing: number;
  extra: number;
  inFlight: number;
  notYetArchived: number;
  buckets: number;
  bucketsDiffering: number;
  keys: { differing: KeyReport[]; missing: KeyReport[]; extra: KeyReport[]; inFlight: KeyReport[] };
  problems: Problem[];
  durationMs: number;
}

export function isDivergent(report: TableReport): boolean {
  return (
    report.differing + report.missing + report.extra > 0 ||
    report.problems.some((problem) => !BENIGN_PROBLEMS.has(problem.kind))
  );
}

export interface VerifyContext {
  readonly config: Config;
  readonly logger: Logger;
  readonly archive: ArchiveStore;
  readonly checkpoints: CheckpointStore;
  /** A connection with slotlake's session settings (closed by the caller). */
  readonly source: pg.Client;
  /** The tables to verify (default: every published table). */
  readonly tables: readonly TableName[];
  /** How long to wait for a run holding the lease. */
  readonly leaseWaitMs: number;
  /** Changes per on-disk run of the rebuild (tests lower it to exercise spilling). */
  readonly recordsPerRun?: number;
  readonly spillDir?: string;
}

function tableKey(table: { schema: string; table: string }): string {
  return `${table.schema}\u0000${table.table}`;
}

function bucketBitsFor(rows: number): number {
  let bits = 0;
  while (rows / 2 ** bits > TARGET_BUCKET_ROWS && bits < MAX_BUCKET_BITS) bits++;
  return bits;
}

/** Where a table's snapshot stands, and the key up to which it is archived. */
function snapshotStanding(
  entry: SnapshotTable | undefined,
  source: SourceTable,
  hasSnapshotRecords: boolean,
): { state: TableReport['snapshot']; afterKey: readonly string[] | null; allPending: boolean } {
  if (entry === undefined)
    return hasSnapshotRecords
      ? { state: 'complete', afterKey: null, allPending: false }
      : { state: 'none', afterKey: null, allPending: false };
  if (entry.state === 'done') return { state: 'complete', afterKey: null, allPending: false };
  const sameKey =
    entry.keyKind !== 'ctid' &&
    source.keyIndexes !== null &&
    entry.keyColumns.length === source.keyIndexes.length &&
    entry.keyColumns.every((name, i) => source.columns[source.keyIndexes![i]!]!.name === name);
  if (entry.state === 'running' && entry.lastKey !== null && sameKey)
    return { state: 'in-progress', afterKey: entry.lastKey, allPending: false };
  return { state: entry.state === 'running' ? 'in-progress' : 'pending', afterKey: null, allPending: true };
}

interface Candidate {
  readonly comparison: RowComparison;
  readonly beyondSnapshot: boolean;
}

/** One table compared, before changes in flight are known. */
interface TableWork {
  readonly report: TableReport;
  readonly identity: RowIdentity | undefined;
  readonly target: readonly TargetColumn[];
  readonly candidates: Candidate[];
  readonly objectKeys: readonly string[];
  readonly touched: TouchedKeys;
  readonly startedAt: number;
  /** The table's key segment under `data/`. */
  readonly segment: string;
}

function emptyReport(table: TableName, checkpoint: Checkpoint | null): TableReport {
  return {
    table: displayName(table),
    checkpoint: checkpoint ? formatLsn(checkpoint.lsn) : null,
    snapshot: 'none',
    snapshotComplete: false,
    rowsCompared: 0,
    sourceRows: 0,
    archiveRows: 0,
    equal: 0,
    differing: 0,
    missing: 0,
    extra: 0,
    inFlight: 0,
    notYetArchived: 0,
    buckets: 0,
    bucketsDiffering: 0,
    keys: { differing: [], missing: [], extra: [], inFlight: [] },
    problems: [],
    durationMs: 0,
  };
}

function objectsOf(
  manifests: readonly ListedManifest[],
  table: TableName,
): Array<{ object: ManifestObject; manifest: string }> {
  const found: Array<{ object: ManifestObject; manifest: string }> = [];
  for (const { key, manifest } of manifests)
    for (const object of manifest.objects)
      if (object.schema === table.schema && object.table === table.table)
        found.push({ object, manifest: key });
  return found;
}

async function compareTable(
  context: VerifyContext,
  table: TableName,
  checkpoint: Checkpoint | null,
  manifests: readonly ListedManifest[],
  style: ArrayStyle,
): Promise<TableWork> {
  const startedAt = Date.now();
  const report = emptyReport(table, checkpoint);
  const { source: client, archive } = context;
  const source = await describeSourceTable(client, table);
  if (source === undefined) {
    report.problems.push({ kind: 'table-missing', hint: 'the table does not exist in the source' });
    return {
      report,
      identity: undefined,
      target: [],
      candidates: [],
      objectKeys: [],
      touched: new TouchedKeys(),
      startedAt,
      segment: tableKeySegment(table),
    };
  }
  const identity: RowIdentity = { columns: source.columns, keyIndexes: source.keyIndexes };
  const listed = objectsOf(manifests, table);
  // the same object named twice (by one manifest or two) is read once and reported
  const byKey = new Map<string, { object: ManifestObject; manifests: string[] }>();
  for (const { object, manifest } of listed) {
    const known = byKey.get(object.key);
    if (known) known.manifests.push(manifest);
    else byKey.set(object.key, { object, manifests: [manifest] });
  }
  for (const [key, entry] of byKey)
    if (entry.manifests.length > 1)
      report.problems.push({ kind: 'object-listed-twice', object: key, manifests: entry.manifests });
  const objects = [...byKey.values()].sort((a, b) => (a.object.key < b.object.key ? -1 : 1));
  const objectKeys = objects.map((entry) => entry.object.key);
  const records = objects.reduce((sum, entry) => sum + entry.object.rows, 0);
  const estimate = Math.max(source.plan.estimatedRows, 0);
  const bits = bucketBitsFor(Math.max(records, estimate, 1));
  const rebuild = new TableRebuild({
    keyIndexes: source.keyIndexes,
    partitionBits: partitionBitsFor(records, context.recordsPerRun ?? RECORDS_PER_RUN),
    bucketBits: bits,
    spillDir: join(context.spillDir ?? tmpdir(), `slotlake-verify-${randomUUID()}`),
  });
  try {
    for (let i = 0; i < objects.length; i++) {
      const { object, manifests: names } = objects[i]!;
      const bytes = await archive.getBytes(object.key);
      if (bytes === undefined) {
        report.problems.push({ kind: 'missing-object', object: object.key, manifest: names[0]! });
        continue;
      }
      let changes;
      try {
        changes = await objectChanges(bytes, object, source.columns, source.registry, style);
      } catch (error) {
        report.problems.push({
          kind: 'unreadable-object',
          object: object.key,
          error: (error as Error).message,
        });
        continue;
      }
      for (const change of changes) await rebuild.add(change, i);
    }
    const rebuilt = await rebuild.finish();
    if (rebuild.unusable > 0)
      report.problems.push({
        kind: 'unusable-change',
        count: rebuild.unusable,
        reason: 'a delete whose record lacks the key columns (replica identity other than the key)',
      });
    for (const duplicate of rebuilt.duplicates)
      report.problems.push({
        kind: 'duplicate-change',
        commitLsn: formatLsn(lsn(duplicate.commitLsn)),
        seq: duplicate.seq,
        objects: duplicate.objects.map((index) => objectKeys[index]!),
      });
    const entry = checkpoint?.snapshot?.tables.find(
      (candidate) => candidate.table.schema === table.schema && candidate.table.table === table.table,
    );
    const standing = snapshotStanding(entry, source, rebuilt.hasSnapshotRecords);
    report.snapshot = standing.state;
    report.snapshotComplete = standing.state === 'complete';

    // pass one, then the drill-down, in one consistent view of the source
    const candidates: Candidate[] = [];
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    try {
      const sums = await bucketSums(client, source, bits);
      const differing = differingBuckets(sums, rebuilt.buckets);
      const differingSet = new Set(differing);
      report.buckets = 2 ** bits;
      report.bucketsDiffering = differing.length;
      report.archiveRows = rebuilt.rows;
      for (const sum of sums.values()) report.sourceRows += sum.rows;
      report.equal = rowsInMatchingBuckets(sums, differingSet);
      report.rowsCompared = report.equal;
      const archiveRows = new Map<string, RowDigest>();
      let held = 0;
      for await (const digest of rebuilt.rowsIn(differingSet, bits)) {
        if (++held > MAX_DRILL_ROWS) break;
        archiveRows.set(digest.identity, digest);
      }
      if (held > MAX_DRILL_ROWS) {
        report.problems.push({ kind: 'too-many-differences', rowsInDifferingBuckets: held });
      } else {
        await compareRows(
          leafRows(client, source, differing, bits, standing.afterKey),
          archiveRows,
          (comparison) => {
            report.rowsCompared += comparison.count;
            if (comparison.verdict === 'equal') report.equal += comparison.count;
            else
              candidates.push({
                comparison,
                beyondSnapshot: standing.allPending || (comparison.source?.beyond ?? false),
              });
          },
        );
      }
      await client.query('COMMIT');
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw error;
    }
    return {
      report,
      identity,
      target: source.columns,
      candidates,
      objectKeys,
      touched: new TouchedKeys(),
      startedAt,
      segment: tableKeySegment(table),
    };
  } finally {
    await rebuild.dispose();
  }
}

function keyReport(work: TableWork, candidate: Candidate): KeyReport {
  const { comparison } = candidate;
  const keyed = work.identity?.keyIndexes !== null;
  const key = !keyed ? null : (comparison.source?.key ?? parseCanonicalText(comparison.identity));
  const object = comparison.archive ? work.objectKeys[comparison.archive.object] : undefined;
  return object === undefined ? { key } : { key, object };
}

/** Sorts the candidates into in flight, not yet archived and divergence. */
function settle(work: TableWork): void {
  const { report, touched } = work;
  for (const candidate of work.candidates) {
    const { comparison } = candidate;
    const count = comparison.count;
    const inFlight = touched.everything || touched.keys.has(comparison.identity);
    if (inFlight) {
      report.inFlight += count;
      if (report.keys.inFlight.length < KEYS_LISTED) report.keys.inFlight.push(keyReport(work, candidate));
      continue;
    }
    // rows the snapshot has not reached: absent or partial in the archive, not lost
    if (candidate.beyondSnapshot && comparison.verdict !== 'extra') {
      report.notYetArchived += count;
      continue;
    }
    const verdict = comparison.verdict as 'differing' | 'missing' | 'extra';
    report[verdict] += count;
    if (report.keys[verdict].length < KEYS_LISTED) report.keys[verdict].push(keyReport(work, candidate));
  }
  if (report.snapshot === 'none' && report.missing > 0)
    report.problems.push({
      kind: 'no-snapshot',
      hint: 'the table was never snapshotted: rows that existed before the slot are not in the archive; run `slotlake snapshot`',
    });
  report.durationMs = Date.now() - work.startedAt;
}

/** The objects committed after M0 (and those of a staged manifest) touch keys in flight. */
async function collectInFlight(
  context: VerifyContext,
  works: ReadonlyMap<string, TableWork>,
  before: readonly ListedManifest[],
  style: ArrayStyle,
): Promise<void> {
  const { archive, config, logger } = context;
  const targets = new Map<string, { identity: RowIdentity; touched: TouchedKeys }>();
  for (const [key, work] of works)
    if (work.identity) targets.set(key, { identity: work.identity, touched: work.touched });
  await withPipelineLease(context.checkpoints, config, context.leaseWaitMs, logger, async (acquisition) => {
    const collector = new PeekCollector(targets);
    await peekSlot(context.source, config, collector);
    logger.info('read the changes in flight from the slot', { changes: collector.changes });
    const now = await readManifests(archive);
    const seen = new Set(before.map((entry) => entry.key));
    const later: Manifest[] = now.filter((entry) => !seen.has(entry.key)).map((entry) => entry.manifest);
    if (acquisition.pendingManifest) {
      const staged = await archive.getText(acquisition.pendingManifest.stagingKey);
      if (staged !== undefined) later.push(JSON.parse(staged) as Manifest);
    }
    const accounted = new Set<string>(acquisition.intentKeys);
    for (const { manifest } of now) for (const object of manifest.objects) accounted.add(object.key);
    for (const manifest of later)
      for (const object of manifest.objects) {
        accounted.add(object.key);
        const work = works.get(tableKey(object));
        if (!work?.identity) continue;
        const bytes = await archive.getBytes(object.key);
        if (bytes === undefined) continue; // named by a manifest the next verify reads; judged then
        const changes = await objectChanges(bytes, object, work.target, undefined, style);
        for (const change of changes) touchArchived(change, work.identity, work.touched);
      }
    // an object under data/ that no manifest, staged manifest or intent accounts for
    const dataKeys = await archive.list(archive.key('data/'));
    const prefixLength = archive.key('data/').length;
    for (const key of dataKeys) {
      if (accounted.has(key)) continue;
      const segment = key.slice(prefixLength).split('/')[0] ?? '';
      for (const work of works.values())
        if (work.segment === segment) work.report.problems.push({ kind: 'unlisted-object', object: key });
    }
  });
}

/** Verifies every table of the context; one report per table, in order. */
export async function verifyTables(context: VerifyContext): Promise<TableReport[]> {
  const { archive, checkpoints, logger } = context;
  const checkpoint = await checkpoints.read();
  const manifests = await readManifests(archive);
  const style = arrayStyleFor(await serverVersionNum(context.source));
  const works = new Map<string, TableWork>();
  for (const table of context.tables) {
    logger.info('verifying table', { table: displayName(table) });
    works.set(tableKey(table), await compareTable(context, table, checkpoint, manifests, style));
  }
  try {
    await collectInFlight(context, works, manifests, style);
  } catch (error) {
    const classified = classify(error, { what: 'reading the changes in flight' });
    if (classified.kind === 'slot-in-use') throw classified;
    for (const work of works.values()) {
      work.report.problems.push({ kind: 'in-flight-unknown', error: classified.message });
    }
    logger.warn('could not read the changes in flight; differences are reported as they are', {
      kind: classified.kind,
    });
  }
  const reports: TableReport[] = [];
  for (const work of works.values()) {
    settle(work);
    reports.push(work.report);
  }
  return reports;
}
