/**
 * The Parquet object format (`SLOTLAKE_FORMAT=parquet`): how the batch writer opens a Parquet object for a
 * table schema, and what such an object adds to its manifest entry — its physical schema (Postgres type,
 * Parquet physical/logical type, field id per column) and per-column statistics (null count, min, max), the
 * facts an Apache Iceberg commit of the file needs without reading it.
 */
import type { ObjectFormat, ObjectWriter, TableSchemaRef } from '../batch.js';
import { ParquetObjectWriter, type ParquetChange, type ParquetCompression } from './writer.js';

export const PARQUET_CONTENT_TYPE = 'application/vnd.apache.parquet';

class ParquetObject implements ObjectWriter<ParquetChange> {
  private readonly writer: ParquetObjectWriter;

  constructor(path: string, schema: TableSchemaRef, compression: ParquetCompression) {
    this.writer = new ParquetObjectWriter(
      path,
      schema.columns.map((column) => ({
        name: column.name,
        typeOid: column.typeOid,
        typeModifier: column.typeModifier,
        fieldId: column.fieldId,
        ...(schema.types.get(column.typeOid) ? { type: schema.types.get(column.typeOid)! } : {}),
      })),
      { compression, types: schema.types },
    );
  }

  get path(): string {
    return this.writer.path;
  }

  get rows(): number {
    return this.writer.rows;
  }

  get compressedBytes(): number {
    return this.writer.compressedBytes;
  }

  get uncompressedBytes(): number {
    return this.writer.uncompressedBytes;
  }

  get needsDrain(): boolean {
    return this.writer.needsDrain;
  }

  write(change: ParquetChange): boolean {
    return this.writer.write(change);
  }

  drain(): Promise<void> {
    return this.writer.drain();
  }

  close(): Promise<number> {
    return this.writer.close();
  }

  discard(): Promise<void> {
    return this.writer.discard();
  }

  describe(): Record<string, unknown> {
    return { schema: this.writer.describeSchema().fields, statistics: this.writer.columnStatistics() };
  }
}

export function parquetFormat(compression: ParquetCompression): ObjectFormat<ParquetChange> {
  return {
    extension: 'parquet',
    contentType: PARQUET_CONTENT_TYPE,
    open: (path, schema) => new ParquetObject(path, schema, compression),
  };
}
