/**
 * One Parquet archive object being written (contract §3.1): one row per change, the table's own columns
 * typed (schema.ts, convert.ts) plus the `_`-prefixed metadata columns, spooled to a local file in row
 * groups as changes arrive.
 *
 * The life cycle is `SpooledObject`'s (spool.ts), so the batch writer can hold either: `write(change)`
 * appends one change and returns false when the caller should `await drain()`; `close()` (idempotent)
 * finishes the file and resolves with its size; `discard()` drops it. Changes are converted as they
 * arrive and buffered per column until the row group reaches `rowGroupRows` rows or `rowGroupBytes`
 * (an estimate from the Postgres text of the buffered values); then hyparquet-writer encodes the row
 * group — dictionary or plain pages, statistics, compression — into memory, the bytes go to the file
 * stream, and the buffers start empty. Memory per open object is therefore one row group's values plus
 * its encoded bytes, whatever the number of rows; the footer (schema, row-group metadata) is written at
 * close. Encoding a row group is synchronous: at the defaults it takes some tens of milliseconds.
 *
 * Per row: a null, an unchanged TOAST value (also named in `_unchanged_toast`) and a value its Parquet
 * type cannot hold (its Postgres text kept in `_unrepresentable`) are null; a truncate (`row`
 * undefined) has every table column null. LSNs are written as signed INT64: an LSN at or above 2^63
 * (8 EiB of WAL) cannot be written and `write` throws rather than store a wrong number. The writer logs
 * nothing, and its own errors carry no row values.
 *
 * For the manifest, `describeSchema()` gives each field's Postgres type, Parquet physical, logical and
 * converted type, repetition and field id; `columnStatistics()` gives per field the rows where it is
 * null and min/max bounds of its values (see ParquetColumnStatistics).
 */
import { createWriteStream, type WriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { once } from 'node:events';
import * as zlib from 'node:zlib';
import { ByteWriter, ParquetWriter } from 'hyparquet-writer';
import type { Tuple } from '../../decoding/messages.js';
import { parsePgArray, type TypeRegistry } from '../../decoding/values.js';
import { UNREPRESENTABLE, type Converter } from './convert.js';
import {
  describeField,
  fieldElements,
  INT64,
  METADATA_FIELD_IDS,
  planColumns,
  STRING,
  TIMESTAMPTZ,
  type ParquetColumn,
  type ParquetFieldDescription,
  type ParquetSchemaDescription,
  type ScalarType,
  type SchemaElement,
  type StatisticsKind,
} from './schema.js';
import { StatisticsAccumulator, type ParquetColumnStatistics } from './statistics.js';

export type { ParquetColumn, ParquetSchemaDescription, ParquetFieldDescription } from './schema.js';
export type { ParquetColumnStatistics } from './statistics.js';

export type ParquetOp = 'c' | 'u' | 'd' | 't' | 'r';

/** One change, as the batch writer hands it over. */
export interface ParquetChange {
  readonly op: ParquetOp;
  readonly lsn: bigint;
  readonly commitLsn: bigint;
  readonly seq: number;
  readonly txId: number;
  /** Commit time, µs since 1970-01-01 UTC. */
  readonly commitTimeUnixUs: bigint;
  /** The new row for c/u/r, the old row (or key) for d; undefined for truncates. */
  readonly row: Tuple | undefined;
  /** JSON text of the record's `before`, or null. */
  readonly beforeJson: string | null;
  /** Columns the caller already knows to be unchanged TOAST; those marked in `row` are added. */
  readonly unchangedToast: readonly string[] | null;
}

export type ParquetCompression = 'zstd' | 'snappy' | 'gzip' | 'none';

export interface ParquetWriterOptions {
  readonly compression: ParquetCompression;
  /** Rows per row group at most (default 15,000; see DEFAULT_ROW_GROUP_ROWS). */
  readonly rowGroupRows?: number;
  /** Estimated bytes per row group at most (default 8 MiB), from the text of the buffered values. */
  readonly rowGroupBytes?: number;
  /** The budget shared with the other open objects (default: the process's, SHARED_ROW_GROUP_BUDGET). */
  readonly budget?: RowGroupBudget;
  /** Types of array elements and non-built-in types, as for `createValueMapper`. */
  readonly types?: TypeRegistry;
}

/**
 * hyparquet-writer encodes a row group through plain arrays of one element per row and column (values,
 * levels, slices). Up to ~16,000 elements such an array is an ordinary young-generation object that V8
 * reclaims cheaply; above, it goes to the large-object space, freed only by full collections, and the
 * process's RSS grows by ~80 MiB more (bench/parquet-writer.ts: 170 MiB at 15,000 rows per group, 252 MiB
 * at 30,000, for a 10-column table). 15,000 rows keeps that flat at a small cost in file size.
 */
export const DEFAULT_ROW_GROUP_ROWS = 15_000;
export const DEFAULT_ROW_GROUP_BYTES = 8 * 1024 * 1024;
/**
 * The estimated bytes of values all open Parquet objects of the process may buffer together (see
 * RowGroupBudget): buffered values take some four to five times their text in the heap, so this keeps a
 * run's row-group buffers near 60 MiB whatever the number of tables written at once.
 */
export const DEFAULT_BUFFERED_BYTES_LIMIT = 12 * 1024 * 1024;
const PAGE_BYTES = 1024 * 1024;
/** Largest output buffer kept between row groups (a bigger one is handed to the file and replaced). */
const OUTPUT_BUFFER_BYTES = 1024 * 1024;
const ZSTD_LEVEL = 3;
const GZIP_LEVEL = 6;
const CREATED_BY = 'slotlake (hyparquet-writer 0.17.0)';

const OPS: ReadonlySet<string> = new Set(['c', 'u', 'd', 't', 'r']);
const INT64_MAX = (1n << 63n) - 1n;

type Codec = 'ZSTD' | 'SNAPPY' | 'GZIP' | 'UNCOMPRESSED';
type Compressor = (input: Uint8Array) => Uint8Array;

function codecOf(compression: ParquetCompression): { codec: Codec; compressors: Record<string, Compressor> } {
  switch (compression) {
    case 'zstd': {
      if (typeof zlib.zstdCompressSync !== 'function') {
        throw new Error(
          'zstd Parquet compression needs Node.js 22.15 or newer (node:zlib zstd); use snappy or gzip',
        );
      }
      const params = { [zlib.constants.ZSTD_c_compressionLevel]: ZSTD_LEVEL };
      return { codec: 'ZSTD', compressors: { ZSTD: (input) => zlib.zstdCompressSync(input, { params }) } };
    }
    case 'gzip':
      return { codec: 'GZIP', compressors: { GZIP: (input) => zlib.gzipSync(input, { level: GZIP_LEVEL }) } };
    case 'snappy':
      return { codec: 'SNAPPY', compressors: {} }; // hyparquet-writer's own
    case 'none':
      return { codec: 'UNCOMPRESSED', compressors: {} };
    default:
      throw new RangeError(`unknown Parquet compression ${JSON.stringify(compression)}`);
  }
}

/** hyparquet-writer's output: each row group's bytes go to the file as soon as it is encoded. */
class FileOutput extends ByteWriter {
  constructor(private readonly sink: (chunk: Buffer) => void) {
    super(64 * 1024);
  }

  flush(): void {
    if (this.index === 0) return;
    const used = this.index;
    if (this.buffer.byteLength > OUTPUT_BUFFER_BYTES) {
      // hand the (grown) buffer over instead of copying it; start a fresh one
      const chunk = Buffer.from(this.buffer, 0, used);
      this.buffer = new ArrayBuffer(OUTPUT_BUFFER_BYTES);
      this.view = new DataView(this.buffer);
      this.index = 0;
      this.sink(chunk);
    } else {
      const chunk = Buffer.from(this.buffer.slice(0, used));
      this.index = 0;
      this.sink(chunk);
    }
  }

  override finish(): void {
    this.flush();
  }
}

/** One field of the file: how its values are made and buffered. */
interface Field {
  readonly description: ParquetFieldDescription;
  readonly elements: SchemaElement[];
  readonly statistics: StatisticsKind;
  readonly scale: number | undefined;
  readonly footerConvertedType: 'JSON' | undefined;
  /** Set for the metadata integers: ascending or constant within a transaction, they delta-encode well. */
  readonly encoding?: 'DELTA_BINARY_PACKED';
}

function listConverter(scalar: ScalarType, delimiter: string): Converter<unknown[]> {
  const convert = scalar.convert;
  return (text) => {
    let parsed: ReturnType<typeof parsePgArray>;
    try {
      parsed = parsePgArray(text, delimiter);
    } catch {
      return UNREPRESENTABLE; // as values.ts does: text it cannot parse is kept as text
    }
    if (parsed === undefined) return UNREPRESENTABLE;
    const values: unknown[] = new Array(parsed.length);
    for (let i = 0; i < parsed.length; i++) {
      const element = parsed[i];
      if (element === null) values[i] = null;
      else if (typeof element === 'string') {
        const value = convert(element);
        if (value === UNREPRESENTABLE) return UNREPRESENTABLE;
        values[i] = value;
      } else return UNREPRESENTABLE; // a multi-dimensional array: the Postgres text goes to _unrepresentable
    }
    return values;
  };
}

function hexText(bytes: Uint8Array): string {
  return `\\x${Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex')}`;
}

function checkInteger(value: number, what: string): number {
  if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`${what} ${value} is not a count`);
  return value;
}

/**
 * Row-group buffers of every open object, together. Each object ends a row group at its own bounds (rows,
 * bytes); when the sum over the open objects passes the limit — many tables written at once, each with a
 * partly filled row group — the object buffering the most ends its row group early. Memory is then bounded
 * by the limit, not by the number of open objects times a row group.
 */
export class RowGroupBudget {
  private readonly open = new Set<ParquetObjectWriter>();
  /** Estimated bytes buffered by the open objects. */
  buffered = 0;

  constructor(readonly limitBytes: number) {}

  add(writer: ParquetObjectWriter): void {
    this.open.add(writer);
  }

  remove(writer: ParquetObjectWriter): void {
    if (this.open.delete(writer)) this.buffered -= writer.bufferedBytes;
  }

  /** Ends the largest buffered row group while the total is over the limit. */
  enforce(): void {
    while (this.buffered > this.limitBytes) {
      let largest: ParquetObjectWriter | undefined;
      for (const writer of this.open)
        if (!largest || writer.bufferedBytes > largest.bufferedBytes) largest = writer;
      if (!largest || largest.bufferedBytes === 0) return;
      largest.endRowGroup();
    }
  }
}

/** The budget writers share unless given their own (one per process: memory is the process's). */
export const SHARED_ROW_GROUP_BUDGET = new RowGroupBudget(DEFAULT_BUFFERED_BYTES_LIMIT);

function checkInt64(value: bigint, what: string): bigint {
  if (value < 0n || value > INT64_MAX) throw new RangeError(`${what} ${value} does not fit a Parquet INT64`);
  return value;
}

export class ParquetObjectWriter {
  private readonly fields: Field[];
  private readonly converters: Converter<unknown>[];
  private readonly tableColumns: number;
  private readonly columnNames: string[];
  private readonly isBytes: boolean[];
  private readonly parquet: ParquetWriter;
  private readonly file: WriteStream;
  private readonly finished: Promise<void>;
  private readonly statistics: StatisticsAccumulator[];
  private readonly rowGroupRows: number;
  private readonly rowGroupBytes: number;
  private readonly budget: RowGroupBudget;
  private buffers: unknown[][];
  private bufferedRows = 0;
  private flushedEstimate = 0;
  private failure: Error | undefined;
  private closing: Promise<number> | undefined;
  /** Changes written so far. */
  rows = 0;
  /** Row groups encoded and handed to the file so far. */
  rowGroups = 0;
  /** Estimated bytes of the values buffered for the current row group (bounded by rowGroupBytes). */
  bufferedBytes = 0;

  constructor(
    readonly path: string,
    columns: readonly ParquetColumn[],
    options: ParquetWriterOptions,
  ) {
    this.rowGroupRows = options.rowGroupRows ?? DEFAULT_ROW_GROUP_ROWS;
    this.rowGroupBytes = options.rowGroupBytes ?? DEFAULT_ROW_GROUP_BYTES;
    if (!(this.rowGroupRows >= 1) || !(this.rowGroupBytes >= 1)) {
      throw new RangeError('rowGroupRows and rowGroupBytes must be at least 1');
    }
    this.budget = options.budget ?? SHARED_ROW_GROUP_BUDGET;
    const { codec, compressors } = codecOf(options.compression);
    const plans = planColumns(columns, options.types);
    this.tableColumns = plans.length;
    this.columnNames = plans.map((plan) => plan.name);
    this.fields = [];
    this.converters = [];
    this.isBytes = [];
    for (const plan of plans) {
      this.fields.push({
        description: describeField(plan.name, plan.fieldId, 'OPTIONAL', plan.scalar, plan.list, {
          oid: plan.pgTypeOid,
          modifier: plan.pgTypeModifier,
        }),
        elements: fieldElements(plan.name, plan.fieldId, 'OPTIONAL', plan.scalar, plan.list),
        statistics: plan.scalar.statistics,
        scale: plan.scalar.scale,
        footerConvertedType: plan.scalar.footerConvertedType,
      });
      this.converters.push(plan.list ? listConverter(plan.scalar, plan.list.delimiter) : plan.scalar.convert);
      this.isBytes.push(plan.list === undefined && plan.scalar.description.physicalType === 'BYTE_ARRAY');
    }
    const metadata = (
      name: keyof typeof METADATA_FIELD_IDS,
      repetition: 'REQUIRED' | 'OPTIONAL',
      scalar: ScalarType,
      statistics: StatisticsKind,
      list?: { elementFieldId: number },
    ) => {
      const id = METADATA_FIELD_IDS[name];
      this.fields.push({
        description: describeField(name, id, repetition, scalar, list),
        elements: fieldElements(name, id, repetition, scalar, list),
        statistics,
        scale: undefined,
        footerConvertedType: undefined,
        ...(statistics === 'int64' ? { encoding: 'DELTA_BINARY_PACKED' as const } : {}),
      });
    };
    metadata('_op', 'REQUIRED', STRING, 'string');
    metadata('_lsn', 'REQUIRED', INT64, 'int64');
    metadata('_commit_lsn', 'REQUIRED', INT64, 'int64');
    metadata('_seq', 'REQUIRED', INT64, 'int64');
    metadata('_tx_id', 'REQUIRED', INT64, 'int64');
    metadata('_commit_ts', 'REQUIRED', TIMESTAMPTZ, 'int64');
    metadata('_before', 'OPTIONAL', STRING, 'none');
    metadata('_unchanged_toast', 'OPTIONAL', STRING, 'string', {
      elementFieldId: METADATA_FIELD_IDS['_unchanged_toast.element'],
    });
    metadata('_unrepresentable', 'OPTIONAL', STRING, 'none');

    this.buffers = this.fields.map(() => []);
    this.statistics = this.fields.map((field) => new StatisticsAccumulator(field.statistics, field.scale));
    const schema: SchemaElement[] = [
      { name: 'schema', num_children: this.fields.length },
      ...this.fields.flatMap((field) => field.elements),
    ];

    this.file = createWriteStream(path);
    const onError = (error: Error) => (this.failure ??= error);
    this.file.on('error', onError);
    this.finished = once(this.file, 'finish').then(() => undefined);
    this.finished.catch(() => undefined);
    const output = new FileOutput((chunk) => {
      this.file.write(chunk);
    });
    this.parquet = new ParquetWriter({ writer: output, schema, codec, compressors, createdBy: CREATED_BY });
    this.budget.add(this);
  }

  /** Appends one change. Returns false when the caller should await drain(). */
  write(change: ParquetChange): boolean {
    if (this.closing !== undefined) throw new Error(`Parquet object ${this.path} is already closed`);
    if (this.failure) throw this.failure;
    if (!OPS.has(change.op)) throw new RangeError(`unknown change op ${JSON.stringify(change.op)}`);
    const lsn = checkInt64(change.lsn, 'LSN');
    const commitLsn = checkInt64(change.commitLsn, 'commit LSN');
    const commitTs = change.commitTimeUnixUs;
    if (commitTs < -INT64_MAX - 1n || commitTs > INT64_MAX) throw new RangeError('commit time out of range');
    // numbers, not bigints: the delta encoder takes both, and int32-range numbers need no allocation
    const seq = checkInteger(change.seq, 'seq');
    const txId = checkInteger(change.txId, 'txId');
    // everything that can throw is checked above: from here on every column gets exactly one value
    const row = change.row;
    const columns = this.tableColumns;
    if (row !== undefined && row.length !== columns) {
      throw new RangeError(`row has ${row.length} columns, the object's schema has ${columns}`);
    }
    const buffers = this.buffers;
    let bytes = 0;
    let toast: string[] | undefined;
    let unrepresentable: Record<string, string> | undefined;
    for (let i = 0; i < columns; i++) {
      const buffer = buffers[i]!;
      const value = row?.[i];
      if (value === undefined || value.kind === 'null') {
        buffer.push(null);
        this.statistics[i]!.nulls++;
        bytes++;
        continue;
      }
      if (value.kind === 'unchanged-toast') {
        buffer.push(null);
        this.statistics[i]!.nulls++;
        (toast ??= []).push(this.columnNames[i]!);
        bytes++;
        continue;
      }
      let converted: unknown;
      let text: string;
      if (value.kind === 'text') {
        text = value.text;
        converted = this.converters[i]!(text);
      } else {
        // binary format (never requested by slotlake): bytea keeps its bytes; anything else is kept as hex
        text = hexText(value.bytes);
        converted = this.isBytes[i] ? value.bytes : UNREPRESENTABLE;
      }
      if (converted === UNREPRESENTABLE) {
        buffer.push(null);
        this.statistics[i]!.nulls++;
        (unrepresentable ??= {})[this.columnNames[i]!] = text;
        bytes += text.length + 4;
        continue;
      }
      buffer.push(converted);
      bytes += text.length + 4;
    }
    let toastNames: string[] | null = toast ?? null;
    if (change.unchangedToast !== null && change.unchangedToast.length > 0) {
      toastNames = toast ? [...toast] : [];
      for (const name of change.unchangedToast) if (!toastNames.includes(name)) toastNames.push(name);
    }
    const unrepresentableJson = unrepresentable === undefined ? null : JSON.stringify(unrepresentable);
    buffers[columns]!.push(change.op);
    buffers[columns + 1]!.push(lsn);
    buffers[columns + 2]!.push(commitLsn);
    buffers[columns + 3]!.push(seq);
    buffers[columns + 4]!.push(txId);
    buffers[columns + 5]!.push(commitTs);
    buffers[columns + 6]!.push(change.beforeJson);
    buffers[columns + 7]!.push(toastNames);
    buffers[columns + 8]!.push(unrepresentableJson);
    if (change.beforeJson === null) this.statistics[columns + 6]!.nulls++;
    if (toastNames === null) this.statistics[columns + 7]!.nulls++;
    if (unrepresentableJson === null) this.statistics[columns + 8]!.nulls++;
    bytes += 48 + (change.beforeJson?.length ?? 0) + (unrepresentableJson?.length ?? 0);
    if (toastNames !== null) for (const name of toastNames) bytes += name.length + 4;

    this.rows++;
    this.bufferedRows++;
    this.bufferedBytes += bytes;
    this.budget.buffered += bytes;
    if (this.bufferedRows >= this.rowGroupRows || this.bufferedBytes >= this.rowGroupBytes)
      this.flushRowGroup();
    else if (this.budget.buffered > this.budget.limitBytes) this.budget.enforce();
    return !this.file.writableNeedDrain;
  }

  /** Ends the current row group now (the shared budget asks it of the object buffering the most). */
  endRowGroup(): void {
    this.flushRowGroup();
  }

  /** Encodes the buffered rows as one row group and hands its bytes to the file. */
  private flushRowGroup(): void {
    if (this.bufferedRows === 0) return;
    const buffers = this.buffers;
    this.buffers = this.fields.map(() => []);
    const rows = this.bufferedRows;
    this.flushedEstimate += this.bufferedBytes;
    this.budget.buffered -= this.bufferedBytes;
    this.bufferedRows = 0;
    this.bufferedBytes = 0;
    try {
      const pending = this.parquet.write({
        columnData: this.fields.map((field, i) => ({
          name: field.description.name,
          data: buffers[i]!,
          statistics: field.statistics !== 'none',
          ...(field.encoding !== undefined ? { encoding: field.encoding } : {}),
        })),
        rowGroupSize: rows,
        pageSize: PAGE_BYTES,
      });
      if (pending !== undefined) throw new Error('hyparquet-writer deferred a row group'); // flush is sync
    } catch (error) {
      this.failure ??= error instanceof Error ? error : new Error(String(error));
      throw this.failure;
    }
    this.rowGroups++;
    const group = this.parquet.row_groups[this.parquet.row_groups.length - 1]!;
    for (let i = 0; i < this.fields.length; i++) {
      this.statistics[i]!.addChunk(group.columns[i]?.meta_data?.statistics);
    }
  }

  /** Bytes of the file on disk so far (row groups reach it as they are encoded). */
  get compressedBytes(): number {
    return this.file.bytesWritten;
  }

  /** Estimated size of the rows written so far, from the text of their values. */
  get uncompressedBytes(): number {
    return this.flushedEstimate + this.bufferedBytes;
  }

  /** True while the file stream wants the caller to await `drain()`. */
  get needsDrain(): boolean {
    return this.file.writableNeedDrain || this.failure !== undefined;
  }

  async drain(): Promise<void> {
    if (this.failure) throw this.failure;
    if (this.file.writableNeedDrain) await once(this.file, 'drain');
    if (this.failure) throw this.failure;
  }

  /** Writes the last row group and the footer and waits for the file to be complete. Returns its size. */
  close(): Promise<number> {
    this.closing ??= (async () => {
      if (this.failure) throw this.failure;
      this.flushRowGroup();
      this.budget.remove(this);
      for (const field of this.fields) {
        const leaf = field.elements[field.elements.length - 1]!;
        if (field.footerConvertedType !== undefined) leaf.converted_type = field.footerConvertedType;
      }
      const finishing = this.parquet.finish();
      if (finishing !== undefined) await finishing;
      this.file.end();
      await this.finished;
      if (this.failure) throw this.failure;
      return this.file.bytesWritten;
    })();
    return this.closing;
  }

  /** Drops the object (after a failure): closes the file and removes it. */
  async discard(): Promise<void> {
    this.closing ??= Promise.reject(new Error(`Parquet object ${this.path} was discarded`));
    this.closing.catch(() => undefined);
    this.budget.remove(this);
    this.buffers = [];
    // The file is opened asynchronously: wait until the stream is closed, or a late open re-creates it.
    const closed = this.file.closed ? Promise.resolve() : once(this.file, 'close').catch(() => undefined);
    this.file.destroy();
    await closed;
    await rm(this.path, { force: true });
  }

  /** Each field's Postgres and Parquet types, repetition and field id: table columns, then metadata. */
  describeSchema(): ParquetSchemaDescription {
    return { fields: this.fields.map((field) => field.description) };
  }

  /** Per field: rows where it is null, and bounds of its values so far (see ParquetColumnStatistics). */
  columnStatistics(): ParquetColumnStatistics[] {
    return this.fields.map((field, i) =>
      this.statistics[i]!.result(field.description.name, field.description.fieldId),
    );
  }
}
