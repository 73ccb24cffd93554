/**
 * One archive object being written: JSON Lines, gzip-compressed as rows arrive, spooled to a local file.
 *
 * Rows are appended as text, gathered into ~256 KiB chunks and pushed through one gzip stream into a file,
 * so memory per open object is a chunk (256 KiB) plus zlib's window, whatever the number of rows. The file becomes
 * an S3 object only when the object is closed (its final key needs the LSN of its last transaction).
 * `write()` returns false when the stream wants the caller to wait for `drain()` (backpressure).
 */
import { createWriteStream, type WriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { once } from 'node:events';
import { createGzip, constants, type Gzip } from 'node:zlib';
import type { ObjectFormat, ObjectWriter } from './batch.js';

/**
 * Lines are gathered into chunks of up to this many bytes before gzip: fewer, larger zlib calls (each call
 * and each output buffer costs the main thread a round trip to the zlib thread pool).
 */
const CHUNK_BYTES = 256 * 1024;

const NEWLINE = 0x0a;

/** Buffer's UTF-8 write at an offset, without the argument juggling of `write()`. */
interface Utf8Writing {
  utf8Write(text: string, offset: number): number;
}

/** zlib's output buffer: 64 KiB rather than its 16 KiB, four times fewer callbacks per compressed byte. */
const ZLIB_CHUNK_BYTES = 64 * 1024;

/**
 * gzip level 1: on change records it takes about half the CPU of zlib's default level 6 for objects some
 * 15 % larger (measured on the mixed bench workload: docs/benchmarks.md). Compression runs on the zlib thread
 * pool, but on a small machine it competes for the cores with the walsender and the run itself, and it was
 * the largest single cost of a change; the compact format is Parquet.
 */
const GZIP_LEVEL = 1;

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
  /** Lines encoded as UTF-8, waiting to go through gzip together. */
  private chunk: Buffer = Buffer.allocUnsafeSlow(CHUNK_BYTES);
  private chunkBytes = 0;
  private failure: Error | undefined;
  rows = 0;
  rawBytes = 0;

  constructor(readonly path: string) {
    this.gzip = createGzip({
      level: GZIP_LEVEL,
      memLevel: 8,
      strategy: constants.Z_DEFAULT_STRATEGY,
      chunkSize: ZLIB_CHUNK_BYTES,
    });
    this.file = createWriteStream(path);
    this.gzip.pipe(this.file);
    const onError = (error: Error) => (this.failure ??= error);
    this.gzip.on('error', onError);
    this.file.on('error', onError);
    this.finished = once(this.file, 'finish').then(() => undefined);
    this.finished.catch(() => undefined);
  }

  /**
   * Appends one JSON line (without the newline), encoded straight into the chunk buffer (no joined string).
   * Returns false when the caller should await drain().
   */
  write(line: string): boolean {
    this.rows++;
    // A UTF-16 code unit takes at most 3 bytes in UTF-8; the newline one more.
    if (this.chunkBytes + 3 * line.length + 1 > CHUNK_BYTES) {
      const ready = this.flushChunk();
      if (3 * line.length + 1 > CHUNK_BYTES) {
        const bytes = Buffer.from(`${line}\n`, 'utf8');
        this.rawBytes += bytes.byteLength;
        return this.gzip.write(bytes) && ready;
      }
    }
    this.chunkBytes += (this.chunk as unknown as Utf8Writing).utf8Write(line, this.chunkBytes);
    this.chunk[this.chunkBytes++] = NEWLINE;
    return !this.gzip.writableNeedDrain;
  }

  private flushChunk(): boolean {
    if (this.chunkBytes === 0) return !this.gzip.writableNeedDrain;
    // gzip holds the buffer until it has compressed it: the next lines go into a new one.
    const chunk = this.chunk.subarray(0, this.chunkBytes);
    this.chunk = Buffer.allocUnsafeSlow(CHUNK_BYTES);
    this.chunkBytes = 0;
    this.rawBytes += chunk.byteLength;
    return this.gzip.write(chunk);
  }

  /** Bytes of compressed output so far (what the upload will send, give or take zlib's buffer). */
  get compressedBytes(): number {
    return this.file.bytesWritten;
  }

  /** Uncompressed bytes so far, including rows not yet pushed to gzip. */
  get uncompressedBytes(): number {
    return this.rawBytes + this.chunkBytes;
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
