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

const utf8 = new TextDecoder('utf-8', { fatal: false });

export class ByteReader {
  private offset = 0;
  private readonly view: DataView;

  constructor(
    private readonly bytes: Uint8Array,
    private readonly what: string,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
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
    return this.view.getUint8(this.offset++);
  }

  /** One byte read as an ASCII character (message tags, tuple kinds). */
  char(field: string): string {
    return String.fromCharCode(this.uint8(field));
  }

  int16(field: string): number {
    this.need(2, field);
    const value = this.view.getInt16(this.offset);
    this.offset += 2;
    return value;
  }

  uint16(field: string): number {
    this.need(2, field);
    const value = this.view.getUint16(this.offset);
    this.offset += 2;
    return value;
  }

  int32(field: string): number {
    this.need(4, field);
    const value = this.view.getInt32(this.offset);
    this.offset += 4;
    return value;
  }

  uint32(field: string): number {
    this.need(4, field);
    const value = this.view.getUint32(this.offset);
    this.offset += 4;
    return value;
  }

  int64(field: string): bigint {
    this.need(8, field);
    const value = this.view.getBigInt64(this.offset);
    this.offset += 8;
    return value;
  }

  uint64(field: string): bigint {
    this.need(8, field);
    const value = this.view.getBigUint64(this.offset);
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
    const text = utf8.decode(this.bytes.subarray(this.offset, end));
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
    return utf8.decode(this.bytesView(count, field));
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
