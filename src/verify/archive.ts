/**
 * Reading the archive back as `verify` needs it: the committed batches (manifests), the objects they name,
 * and each object's records as rows of Postgres text (verify/pg-text.ts), in the columns of the table as it
 * is in the source now.
 *
 * Only objects a manifest names are read: a manifest is copied into `manifests/` after its batch's checkpoint
 * (runtime/commit.ts), so these are exactly the committed changes. What a reader of the lake would trip over is
 * reported as a problem, not hidden: a listed object that is missing, an object under `data/` that no manifest
 * names (checked by the caller while it holds the lease, when no batch is half-written), an object listed twice.
 * JSON Lines objects are gunzipped and parsed with their numbers' source digits; Parquet objects are decoded
 * with hyparquet, their scalar annotations set aside so every value comes back as stored (DECIMAL unscaled,
 * timestamps in microseconds, bytea as bytes) and is printed by its annotation. Columns an object does not
 * have (added to the table later) are SQL NULL; columns the table no longer has are ignored; an unchanged
 * TOAST value is `undefined` (the previous version fills it on replay).
 */
import { gunzipSync } from 'node:zlib';
import * as zlib from 'node:zlib';
import { GetObjectCommand, type S3ServiceException } from '@aws-sdk/client-s3';
import { parquetMetadata, parquetRead } from 'hyparquet';
import type { TypeRegistry } from '../decoding/values.js';
import { classify, SlotlakeError } from '../errors.js';
import type { Manifest, ManifestObject } from '../sink/manifest.js';
import type { S3ObjectStore } from '../sink/s3.js';
import { STORE_RETRY, withRetry } from '../support/retry.js';
import type { RowValue } from './digest.js';
import {
  arrayText,
  jsonToTextFor,
  parquetLeafKind,
  parquetValueText,
  parseArchivedJson,
  type ArchivedJson,
  type ArrayStyle,
  type JsonToText,
  type ParquetLeafKind,
  type ParquetSchemaElementLike,
} from './pg-text.js';

/** What verify reads the archive through (S3 in production). */
export interface ArchiveStore {
  key(relative: string): string;
  list(prefix: string): Promise<string[]>;
  getText(key: string): Promise<string | undefined>;
  /** The object's bytes, undefined when it does not exist. */
  getBytes(key: string): Promise<Uint8Array | undefined>;
}

function isNotFound(error: unknown): boolean {
  const status = (error as S3ServiceException).$metadata?.httpStatusCode;
  const name = (error as Error).name;
  return status === 404 || name === 'NotFound' || name === 'NoSuchKey';
}

/** The archive in S3, read with the store's retry policy. */
export function s3ArchiveStore(store: S3ObjectStore): ArchiveStore {
  const retry = <T>(what: string, operation: () => Promise<T>) =>
    withRetry(operation, { what, origin: 'object-store', policy: STORE_RETRY });
  return {
    key: (relative) => store.key(relative),
    list: (prefix) => retry(`listing ${prefix}`, () => store.list(prefix)),
    getText: (key) => retry(`reading ${key}`, () => store.getText(key)),
    getBytes: (key) =>
      retry(`reading ${key}`, async () => {
        try {
          const object = await store.client.send(new GetObjectCommand({ Bucket: store.bucket, Key: key }));
          return await object.Body!.transformToByteArray();
        } catch (error) {
          if (isNotFound(error)) return undefined;
          throw classify(error, { origin: 'object-store', what: `reading s3://${store.bucket}/${key}` });
        }
      }),
  };
}

export interface ListedManifest {
  readonly key: string;
  readonly manifest: Manifest;
}

/** Every manifest under `manifests/`, in key (LSN) order. */
export async function readManifests(store: ArchiveStore): Promise<ListedManifest[]> {
  const keys = await store.list(store.key('manifests/'));
  const manifests: ListedManifest[] = [];
  for (const key of keys) {
    if (!key.endsWith('.json')) continue;
    const text = await store.getText(key);
    if (text === undefined) continue; // listed, then gone: not ours to judge here
    try {
      manifests.push({ key, manifest: JSON.parse(text) as Manifest });
    } catch (error) {
      throw new SlotlakeError(`manifest ${key} is not JSON`, {
        kind: 'internal',
        origin: 'object-store',
        hint: 'the archive was changed by hand; restore the manifest from its staging copy or a backup',
        cause: error,
      });
    }
  }
  return manifests;
}

// ---------------------------------------------------------------------------------------------------
// Records as rows of text

/** One archived change, its row(s) in the source's current columns. */
export interface ArchivedChange {
  readonly op: 'c' | 'u' | 'd' | 't' | 'r';
  readonly commitLsn: bigint;
  readonly seq: number;
  /** The new row (c, u, r); null for d and t. */
  readonly after: RowValue[] | null;
  /** The record's `before` (u, d), null when absent; columns it does not carry are undefined. */
  readonly before: RowValue[] | null;
}

/** A source column as the comparison sees it. */
export interface TargetColumn {
  readonly name: string;
  readonly isArray: boolean;
}

/** The object's column description, as its manifest entry records it. */
interface ObjectColumn {
  readonly name: string;
  readonly typeOid: number;
}

function objectColumns(object: ManifestObject): ObjectColumn[] {
  const schema = object.tableSchema as { columns?: ObjectColumn[] } | undefined;
  return (schema?.columns ?? []).map((column) => ({ name: column.name, typeOid: column.typeOid }));
}

const ARRAY_BOUNDS = /^(\[-?[0-9]+:-?[0-9]+\])+=/;

/** What the comparison sees of a value of an array column (explicit bounds dropped). */
function normalise(value: RowValue, column: TargetColumn): RowValue {
  return column.isArray && typeof value === 'string' ? value.replace(ARRAY_BOUNDS, '') : value;
}

/** Per target column: how to read it from this object's JSON rows. */
function jsonPlan(
  object: ManifestObject,
  target: readonly TargetColumn[],
  registry: TypeRegistry | undefined,
  style: ArrayStyle,
): Array<JsonToText | undefined> {
  const byName = new Map(objectColumns(object).map((column) => [column.name, column]));
  return target.map((column) => {
    const known = byName.get(column.name);
    // A column the object's schema does not record: map by the value's shape alone.
    return known === undefined && byName.size > 0
      ? undefined
      : jsonToTextFor(known?.typeOid ?? 0, registry, style);
  });
}

function rowFromJson(
  json: ArchivedJson,
  target: readonly TargetColumn[],
  plan: ReadonlyArray<JsonToText | undefined>,
  unchanged: ReadonlySet<string>,
  missing: 'null' | 'absent',
): RowValue[] {
  const object = (json ?? {}) as Record<string, ArchivedJson>;
  return target.map((column, i) => {
    if (unchanged.has(column.name)) return undefined;
    if (!Object.prototype.hasOwnProperty.call(object, column.name))
      return missing === 'null' ? null : undefined;
    const value = object[column.name]!;
    if (value === null) return null;
    const inverse = plan[i];
    return normalise(inverse ? inverse(value) : null, column);
  });
}

interface JsonRecord {
  op: ArchivedChange['op'];
  before: ArchivedJson;
  after: ArchivedJson;
  source: { commit_lsn: string; seq: ArchivedJson };
  unchanged_toast?: string[];
}

function lsnNumber(text: string): bigint {
  const slash = text.indexOf('/');
  return (BigInt(`0x${text.slice(0, slash)}`) << 32n) | BigInt(`0x${text.slice(slash + 1)}`);
}

/** The changes of a gzip JSON Lines object. */
export function jsonlChanges(
  bytes: Uint8Array,
  object: ManifestObject,
  target: readonly TargetColumn[],
  registry: TypeRegistry | undefined,
  style: ArrayStyle,
): ArchivedChange[] {
  const plan = jsonPlan(object, target, registry, style);
  const text = gunzipSync(bytes).toString('utf8');
  const changes: ArchivedChange[] = [];
  const none = new Set<string>();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const record = parseArchivedJson(line) as unknown as JsonRecord;
    const unchanged = record.unchanged_toast ? new Set(record.unchanged_toast) : none;
    changes.push({
      op: record.op,
      commitLsn: lsnNumber(record.source.commit_lsn),
      seq: Number(String(record.source.seq)),
      after: record.after === null ? null : rowFromJson(record.after, target, plan, unchanged, 'null'),
      before: record.before === null ? null : rowFromJson(record.before, target, plan, none, 'absent'),
    });
  }
  return changes;
}

// ---------------------------------------------------------------------------------------------------
// Parquet

interface HyparquetElement extends ParquetSchemaElementLike {
  name: string;
  num_children?: number;
  converted_type?: string;
  logical_type?: { type: string; isAdjustedToUTC?: boolean };
}

const PARQUET_DECOMPRESSORS = {
  ZSTD: (input: Uint8Array) => new Uint8Array(zlib.zstdDecompressSync(input)),
  GZIP: (input: Uint8Array) => new Uint8Array(zlib.gunzipSync(input)),
};

/** The changes of a Parquet object (contract §3.1). */
export async function parquetChanges(
  bytes: Uint8Array,
  object: ManifestObject,
  target: readonly TargetColumn[],
  registry: TypeRegistry | undefined,
  style: ArrayStyle,
): Promise<ArchivedChange[]> {
  const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
  const metadata = parquetMetadata(buffer);
  const elements = metadata.schema as unknown as HyparquetElement[];
  // Top-level fields and the kind of each leaf, from the annotations, which are then removed so that
  // hyparquet hands over the stored values (LIST structure is kept).
  const leafKinds = new Map<string, ParquetLeafKind>();
  const listFields = new Set<string>();
  let index = 1;
  const walk = (top: string): void => {
    const element = elements[index++]!;
    const children = element.num_children ?? 0;
    if (children === 0) {
      leafKinds.set(top, parquetLeafKind(element));
      delete element.converted_type;
      delete element.logical_type;
      return;
    }
    if (element.converted_type === 'LIST') listFields.add(top);
    for (let i = 0; i < children; i++) walk(top);
  };
  const topCount = elements[0]?.num_children ?? 0;
  const names: string[] = [];
  for (let i = 0; i < topCount; i++) {
    const name = elements[index]!.name;
    names.push(name);
    walk(name);
  }
  let rows: unknown[][] = [];
  await parquetRead({
    file: buffer,
    metadata,
    utf8: false,
    compressors: PARQUET_DECOMPRESSORS,
    onComplete: (data: unknown[][]) => {
      rows = data;
    },
  });
  const column = new Map(names.map((name, i) => [name, i]));
  const at = (row: unknown[], name: string) => {
    const i = column.get(name);
    return i === undefined ? undefined : row[i];
  };
  const text = (value: unknown) =>
    value instanceof Uint8Array ? Buffer.from(value).toString('utf8') : (value as string | null);
  const plan = jsonPlan(object, target, registry, style);
  const delimiters = target.map((column) => {
    const typeOid = objectColumns(object).find((c) => c.name === column.name)?.typeOid;
    return typeOid === 1020 ? ';' : (registry?.get(typeOid ?? 0)?.delimiter ?? ',');
  });
  const changes: ArchivedChange[] = [];
  for (const row of rows) {
    const op = text(at(row, '_op')) as ArchivedChange['op'];
    const toastValue = at(row, '_unchanged_toast') as Array<unknown> | null | undefined;
    const unchanged = new Set((toastValue ?? []).map((name) => text(name) ?? ''));
    const unrepresentableText = text(at(row, '_unrepresentable'));
    const unrepresentable = unrepresentableText
      ? (JSON.parse(unrepresentableText) as Record<string, string>)
      : undefined;
    const values: RowValue[] | null =
      op === 't'
        ? null
        : target.map((targetColumn, i) => {
            const name = targetColumn.name;
            if (unchanged.has(name)) return undefined;
            if (unrepresentable && Object.prototype.hasOwnProperty.call(unrepresentable, name))
              return normalise(unrepresentable[name]!, targetColumn);
            if (!column.has(name)) return null;
            const value = at(row, name);
            if (value === null || value === undefined) return null;
            const leaf = leafKinds.get(name) ?? { kind: 'string' };
            if (listFields.has(name))
              return arrayText(
                value as unknown[],
                (element) => parquetValueText(element, leaf),
                delimiters[i]!,
                style,
              );
            return normalise(parquetValueText(value, leaf), targetColumn);
          });
    const beforeText = text(at(row, '_before'));
    const before =
      beforeText === null || beforeText === undefined
        ? null
        : rowFromJson(parseArchivedJson(beforeText), target, plan, new Set(), 'absent');
    changes.push({
      op,
      commitLsn: BigInt(at(row, '_commit_lsn') as bigint),
      seq: Number(at(row, '_seq') as bigint),
      after: op === 'd' || op === 't' ? null : values,
      before,
    });
  }
  return changes;
}

/** The object's changes, by its format (its key's extension). */
export async function objectChanges(
  bytes: Uint8Array,
  object: ManifestObject,
  target: readonly TargetColumn[],
  registry: TypeRegistry | undefined,
  style: ArrayStyle,
): Promise<ArchivedChange[]> {
  if (object.key.endsWith('.parquet')) return parquetChanges(bytes, object, target, registry, style);
  return jsonlChanges(bytes, object, target, registry, style);
}
