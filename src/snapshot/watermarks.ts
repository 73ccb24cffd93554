/**
 * Snapshot watermarks: logical decoding messages that place a chunk of a table's rows in the change stream.
 *
 * A chunk is read between two watermarks written into the WAL with `pg_logical_emit_message(true, prefix,
 * content)` — transactional, so each is a transaction of its own that the stream delivers in commit order
 * with the table's changes (no table of the user is written, and no write access to user tables is needed).
 * The low watermark is written before the chunk's SELECT, the high one after it: every change committed
 * between them is seen by the stream between them, which tells which rows of the chunk may be stale (the
 * DBLog / Debezium incremental-snapshot idea). The content names the pipeline (several pipelines may read the
 * same database) and the chunk; a watermark of another pipeline, or of a chunk this run did not start (an
 * earlier, crashed run's), is ignored. Pure.
 * https://www.postgresql.org/docs/current/functions-admin.html#FUNCTIONS-REPLICATION
 */

export const WATERMARK_PREFIX = 'slotlake-snapshot';

export type WatermarkMark = 'low' | 'high';

export interface Watermark {
  readonly pipeline: string;
  readonly chunk: string;
  readonly mark: WatermarkMark;
}

export function watermarkContent(watermark: Watermark): string {
  return JSON.stringify({ v: 1, pipeline: watermark.pipeline, chunk: watermark.chunk, mark: watermark.mark });
}

/** The watermark a logical message carries, or undefined when it is not one of slotlake's. */
export function parseWatermark(prefix: string, content: Uint8Array): Watermark | undefined {
  if (prefix !== WATERMARK_PREFIX) return undefined;
  try {
    const parsed = JSON.parse(Buffer.from(content).toString('utf8')) as Record<string, unknown>;
    if (
      typeof parsed.pipeline === 'string' &&
      typeof parsed.chunk === 'string' &&
      (parsed.mark === 'low' || parsed.mark === 'high')
    )
      return { pipeline: parsed.pipeline, chunk: parsed.chunk, mark: parsed.mark };
  } catch {
    // not ours
  }
  return undefined;
}
