/**
 * Manifests: one JSON document per committed batch under `manifests/` (contract §3), pure.
 *
 * A manifest names the batch's LSN range, the checkpoint it committed, and every object it wrote with its
 * table (true names), date partition, row count, size, LSN range and the table schema the object was written
 * with. Readers that go by manifests see only committed batches: a manifest is staged under `staging/` before
 * the checkpoint and copied into `manifests/` only after it (runtime/commit.ts). Its key is
 * `manifests/<first commit LSN>-<last commit LSN>[-<seq>].json`, 16-hex LSNs like the objects, with the seq of
 * the batch's first change when the batch begins inside a transaction (so keys never collide).
 */
import type { PartialTransaction, SourceIdentity } from '../checkpoint/store.js';
import { formatLsn, lsnKey, type Lsn } from '../lsn.js';
import type { ArchivedObject } from './batch.js';

export const MANIFEST_VERSION = 2;

/** `manifests/<first>-<last>[-<seq>].json`, relative to the prefix. */
export function manifestRelativeKey(first: Lsn, last: Lsn, firstRowSeq: number | undefined): string {
  const part = firstRowSeq === undefined ? '' : `-${String(firstRowSeq).padStart(10, '0')}`;
  return `manifests/${lsnKey(first)}-${lsnKey(last)}${part}.json`;
}

/** Where a manifest is staged before its batch's checkpoint: `staging/` + its relative key. */
export function stagingRelativeKey(manifestRelative: string): string {
  return `staging/${manifestRelative}`;
}

export interface ManifestInput {
  readonly pipeline: string;
  readonly slot: string;
  readonly runId: string;
  readonly source: SourceIdentity;
  readonly firstCommitLsn: Lsn;
  readonly lastCommitLsn: Lsn;
  readonly previousCheckpoint: Lsn | undefined;
  readonly checkpoint: Lsn;
  readonly partial: PartialTransaction | undefined;
  readonly transactions: number;
  readonly objects: readonly ArchivedObject[];
  readonly createdAt: string;
}

export interface ManifestObject {
  readonly key: string;
  readonly schema: string;
  readonly table: string;
  readonly dt: string;
  readonly rows: number;
  readonly bytes: number;
  readonly startLsn: string;
  readonly endLsn: string;
  readonly firstSeq: number | null;
  readonly tableSchema: unknown;
  /** Parquet objects: the physical schema and per-column statistics (min, max, null count). */
  readonly parquet?: Record<string, unknown>;
}

export interface Manifest {
  readonly version: number;
  readonly pipeline: string;
  readonly slot: string;
  readonly runId: string;
  readonly source: SourceIdentity;
  readonly startLsn: string;
  readonly endLsn: string;
  readonly previousCheckpoint: string | null;
  readonly checkpoint: string;
  readonly partial: { readonly commitLsn: string; readonly nextSeq: number } | null;
  readonly transactions: number;
  readonly changes: number;
  readonly bytes: number;
  readonly createdAt: string;
  readonly objects: readonly ManifestObject[];
}

export function buildManifest(input: ManifestInput): Manifest {
  return {
    version: MANIFEST_VERSION,
    pipeline: input.pipeline,
    slot: input.slot,
    runId: input.runId,
    source: input.source,
    startLsn: formatLsn(input.firstCommitLsn),
    endLsn: formatLsn(input.lastCommitLsn),
    previousCheckpoint: input.previousCheckpoint === undefined ? null : formatLsn(input.previousCheckpoint),
    checkpoint: formatLsn(input.checkpoint),
    partial: input.partial
      ? { commitLsn: formatLsn(input.partial.commitLsn), nextSeq: input.partial.nextSeq }
      : null,
    transactions: input.transactions,
    changes: input.objects.reduce((sum, object) => sum + object.rows, 0),
    bytes: input.objects.reduce((sum, object) => sum + object.bytes, 0),
    createdAt: input.createdAt,
    objects: input.objects.map((object) => ({
      key: object.key,
      schema: object.table.schema,
      table: object.table.table,
      dt: object.dt,
      rows: object.rows,
      bytes: object.bytes,
      startLsn: formatLsn(object.firstCommitLsn),
      endLsn: formatLsn(object.lastCommitLsn),
      firstSeq: object.firstSeq ?? null,
      tableSchema: object.schema,
      ...(object.format ? { parquet: object.format } : {}),
    })),
  };
}
