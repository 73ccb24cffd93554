/**
 * A bounds-checked big-endian reader over one message's bytes.
 *
 * The replication protocol and pgoutput encode integers as network-order (big-endian) Int8/16/32/64,
 * strings as NUL-terminated UTF-8 and byte strings as Int32 length + bytes
 * (https://www.postgresql.org/docs/current/protocol-message-types.html). Every read checks the
 * remaining length first and throws `DecodeError` — never a RangeError or an out-of-bounds `undefined` —
 * so malformed input from the wire can only ever produce the decoder's own error.
 */
import { DecodeError } from '../errors.js';
import { lsn, type Lsn } from '../lsn.js';

/** The Buffer methods the reader uses beyond the typed ones: UTF-8 decoding of a range without a view. */
interface Utf8Slicing {
  utf8Slice(start: number, end: number): string;
}

export class ByteReader {
  private offset = 0;
  /**
   * The bytes as a Node Buffer (a view, no copy): its integer reads and `utf8Slice` are several times
   * cheaper per call than a DataView and a TextDecoder, which counts at one read per column of every change.
   * Invalid UTF-8 decodes to U+FFFD, as with a non-fatal TextDecoder.
   */
  private readonly bytes: Buffer;

  constructor(
    bytes: Uint8Array,
    private readonly what: string,
  ) {
    this.bytes = Buffer.isBuffer(bytes)
      ? bytes
      : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  get position(): number {
    return this.offset;
  }

  get remaining(): number {
    return this.bytes.byteLength - this.offset;
  }

  private need(count: number, field: string): void {
    if (count < 0 || this.offset + count > this.bytes.byteLength) {
      throw new DecodeError(
        `${this.what}: truncated at byte ${this.offset} reading ${field} (${count} bytes needed, ${this.remaining} left)`,
      );
    }
  }

  uint8(field: string): number {
    this.need(1, field);
    return this.bytes[this.offset++]!;
  }

  /** One byte read as an ASCII character (message tags, tuple kinds). */
  char(field: string): string {
    return String.fromCharCode(this.uint8(field));
  }

  int16(field: string): number {
    this.need(2, field);
    const value = this.bytes.readInt16BE(this.offset);
    this.offset += 2;
    return value;
  }

  uint16(field: string): number {
    this.need(2, field);
    const value = this.bytes.readUInt16BE(this.offset);
    this.offset += 2;
    return value;
  }

  int32(field: string): number {
    this.need(4, field);
    const value = this.bytes.readInt32BE(this.offset);
    this.offset += 4;
    return value;
  }

  uint32(field: string): number {
    this.need(4, field);
    const value = this.bytes.readUInt32BE(this.offset);
    this.offset += 4;
    return value;
  }

  int64(field: string): bigint {
    this.need(8, field);
    const value = this.bytes.readBigInt64BE(this.offset);
    this.offset += 8;
    return value;
  }

  uint64(field: string): bigint {
    this.need(8, field);
    const value = this.bytes.readBigUInt64BE(this.offset);
    this.offset += 8;
    return value;
  }

  lsn(field: string): Lsn {
    return lsn(this.uint64(field));
  }

  /** A NUL-terminated UTF-8 string. */
  cstring(field: string): string {
    const end = this.bytes.indexOf(0, this.offset);
    if (end < 0)
      throw new DecodeError(`${this.what}: unterminated string for ${field} at byte ${this.offset}`);
    const text = (this.bytes as unknown as Utf8Slicing).utf8Slice(this.offset, end);
    this.offset = end + 1;
    return text;
  }

  /** `count` raw bytes, as a view (callers copy if they keep them past the current message). */
  bytesView(count: number, field: string): Uint8Array {
    this.need(count, field);
    const slice = this.bytes.subarray(this.offset, this.offset + count);
    this.offset += count;
    return slice;
  }

  /** `count` bytes decoded as UTF-8. */
  utf8(count: number, field: string): string {
    this.need(count, field);
    const start = this.offset;
    this.offset += count;
    return (this.bytes as unknown as Utf8Slicing).utf8Slice(start, this.offset);
  }

  rest(): Uint8Array {
    const slice = this.bytes.subarray(this.offset);
    this.offset = this.bytes.byteLength;
    return slice;
  }

  /** Asserts the message was consumed exactly. */
  end(): void {
    if (this.remaining !== 0) {
      throw new DecodeError(
        `${this.what}: ${this.remaining} unexpected trailing bytes at byte ${this.offset}`,
      );
    }
  }
}
