/**
 * Test helpers for binary protocol messages: a big-endian byte builder for synthetic messages, hex
 * conversion, and loaders for the real captured fixtures in test/fixtures/pgoutput (written by
 * scripts/capture-pgoutput.ts).
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const utf8 = new TextEncoder();

/** One column of a synthetic tuple: null, `'u'` unchanged TOAST, text, or binary bytes. */
export type SyntheticColumn = null | 'u' | string | Uint8Array;

/** Builds a byte string field by field, big-endian, like the server writes it. */
export class ByteBuilder {
  private readonly parts: Uint8Array[] = [];

  private fixed(size: number, write: (view: DataView) => void): this {
    const part = new Uint8Array(size);
    write(new DataView(part.buffer));
    this.parts.push(part);
    return this;
  }

  u8(value: number): this {
    return this.fixed(1, (view) => view.setUint8(0, value));
  }

  /** One ASCII character (a message tag, tuple kind or marker). */
  char(value: string): this {
    return this.u8(value.charCodeAt(0));
  }

  i16(value: number): this {
    return this.fixed(2, (view) => view.setInt16(0, value));
  }

  i32(value: number): this {
    return this.fixed(4, (view) => view.setInt32(0, value));
  }

  u32(value: number): this {
    return this.fixed(4, (view) => view.setUint32(0, value));
  }

  i64(value: bigint): this {
    return this.fixed(8, (view) => view.setBigInt64(0, value));
  }

  u64(value: bigint): this {
    return this.fixed(8, (view) => view.setBigUint64(0, value));
  }

  /** A NUL-terminated UTF-8 string. */
  cstring(value: string): this {
    return this.raw(utf8.encode(value)).u8(0);
  }

  raw(bytes: Uint8Array | readonly number[]): this {
    this.parts.push(Uint8Array.from(bytes));
    return this;
  }

  /** pgoutput TupleData: Int16 count, then per column a kind byte and, for `t`/`b`, Int32 length + bytes. */
  tuple(columns: readonly SyntheticColumn[]): this {
    this.i16(columns.length);
    for (const column of columns) {
      if (column === null) this.char('n');
      else if (column === 'u') this.char('u');
      else if (typeof column === 'string') {
        const bytes = utf8.encode(column);
        this.char('t').i32(bytes.length).raw(bytes);
      } else this.char('b').i32(column.length).raw(column);
    }
    return this;
  }

  build(): Uint8Array {
    const length = this.parts.reduce((sum, part) => sum + part.length, 0);
    const out = new Uint8Array(length);
    let offset = 0;
    for (const part of this.parts) {
      out.set(part, offset);
      offset += part.length;
    }
    return out;
  }
}

export function bytes(): ByteBuilder {
  return new ByteBuilder();
}

export function fromHex(hex: string): Uint8Array {
  if (!/^(?:[0-9a-f]{2})*$/i.test(hex)) throw new Error(`not hex: ${hex.slice(0, 40)}`);
  return Uint8Array.from(Buffer.from(hex, 'hex'));
}

export function toHex(value: Uint8Array): string {
  return Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('hex');
}

export function utf8Bytes(text: string): Uint8Array {
  return utf8.encode(text);
}

const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'pgoutput');

export interface FixtureMessage {
  /** Position in the captured stream (runs of inserts were trimmed, so there are gaps). */
  readonly index: number;
  readonly name: string;
  readonly hex: string;
}

export interface PgoutputFixture {
  readonly description: string;
  readonly server: string;
  readonly protocolVersion: 1 | 2 | 3 | 4;
  readonly parallelStreaming: boolean;
  readonly startReplicationOptions: Record<string, string>;
  readonly setup: readonly string[];
  readonly workload: readonly string[];
  readonly capturedMessages: number;
  readonly messages: readonly FixtureMessage[];
}

export const PGOUTPUT_FIXTURES = ['basic', 'binary', 'streaming', 'two-phase', 'parallel'] as const;
export type PgoutputFixtureName = (typeof PGOUTPUT_FIXTURES)[number];

export function loadPgoutputFixture(name: PgoutputFixtureName): PgoutputFixture {
  return JSON.parse(readFileSync(join(FIXTURES, `${name}.json`), 'utf8')) as PgoutputFixture;
}

export interface FramesFixture {
  readonly description: string;
  readonly server: string;
  readonly frames: readonly { readonly scenario: string; readonly name: string; readonly hex: string }[];
}

export function loadFramesFixture(): FramesFixture {
  return JSON.parse(readFileSync(join(FIXTURES, 'frames.json'), 'utf8')) as FramesFixture;
}
