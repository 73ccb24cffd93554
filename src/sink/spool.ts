/**
 * One archive object being written: JSON Lines, gzip-compressed as rows arrive, spooled to a local file.
 *
 * Rows are appended as text, gathered into ~64 KiB chunks and pushed through one gzip stream into a file,
 * so memory per open object is a chunk plus zlib's window, whatever the number of rows. The file becomes
 * an S3 object only when the object is closed (its final key needs the LSN of its last transaction).
 * `write()` returns false when the stream wants the caller to wait for `drain()` (backpressure).
 */
import { createWriteStream, type WriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { once } from 'node:events';
import { createGzip, constants, type Gzip } from 'node:zlib';
import type { ObjectFormat, ObjectWriter } from './batch.js';

/** Lines are gathered into chunks of about this many characters before gzip: fewer, larger zlib calls. */
const CHUNK_CHARS = 64 * 1024;

/** gzip level 6: zlib's default balance; higher levels cost much CPU for a few percent of size. */
const GZIP_LEVEL = 6;

/** The JSON Lines format: `.jsonl.gz` objects of record lines (pipeline/records.ts). */
export const JSONL_FORMAT: ObjectFormat<string> = {
  extension: 'jsonl.gz',
  contentType: 'application/gzip',
  open: (path) => new SpooledObject(path),
};

export class SpooledObject implements ObjectWriter<string> {
  private readonly gzip: Gzip;
  private readonly file: WriteStream;
  private readonly finished: Promise<void>;
  private pending: string[] = [];
  private pendingChars = 0;
  private failure: Error | undefined;
  rows = 0;
  rawBytes = 0;

  constructor(readonly path: string) {
    this.gzip = createGzip({ level: GZIP_LEVEL, memLevel: 8, strategy: constants.Z_DEFAULT_STRATEGY });
    this.file = createWriteStream(path);
    this.gzip.pipe(this.file);
    const onError = (error: Error) => (this.failure ??= error);
    this.gzip.on('error', onError);
    this.file.on('error', onError);
    this.finished = once(this.file, 'finish').then(() => undefined);
    this.finished.catch(() => undefined);
  }

  /** Appends one JSON line (without the newline). Returns false when the caller should await drain(). */
  write(line: string): boolean {
    this.pending.push(line);
    this.pendingChars += line.length + 1;
    this.rows++;
    if (this.pendingChars >= CHUNK_CHARS) return this.flushChunk();
    return true;
  }

  private flushChunk(): boolean {
    if (this.pending.length === 0) return true;
    const chunk = Buffer.from(`${this.pending.join('\n')}\n`, 'utf8');
    this.pending = [];
    this.pendingChars = 0;
    this.rawBytes += chunk.byteLength;
    return this.gzip.write(chunk);
  }

  /** Bytes of compressed output so far (what the upload will send, give or take zlib's buffer). */
  get compressedBytes(): number {
    return this.file.bytesWritten;
  }

  /** Uncompressed bytes so far, including rows not yet pushed to gzip. */
  get uncompressedBytes(): number {
    return this.rawBytes + this.pendingChars;
  }

  get needsDrain(): boolean {
    return this.gzip.writableNeedDrain || this.failure !== undefined;
  }

  async drain(): Promise<void> {
    if (this.failure) throw this.failure;
    if (this.gzip.writableNeedDrain) await once(this.gzip, 'drain');
  }

  /** Ends the gzip stream and waits for the file to be complete. Returns its size. */
  /** Idempotent. */
  close(): Promise<number> {
    this.closing ??= (async () => {
      this.flushChunk();
      this.gzip.end();
      await this.finished;
      if (this.failure) throw this.failure;
      return this.file.bytesWritten;
    })();
    return this.closing;
  }

  private closing: Promise<number> | undefined;

  /** Drops the object (after a failure): closes streams and removes the file. */
  async discard(): Promise<void> {
    this.gzip.destroy();
    // The file is opened asynchronously: wait until the stream is closed, or a late open re-creates it.
    const closed = this.file.closed ? Promise.resolve() : once(this.file, 'close').catch(() => undefined);
    this.file.destroy();
    await closed;
    await rm(this.path, { force: true });
  }
}
