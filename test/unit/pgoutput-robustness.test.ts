/**
 * The pgoutput decoder on malformed input: every failure is a DecodeError (never a RangeError, TypeError
 * or a hang), whatever the bytes. Real captured messages are truncated, extended and mutated; synthetic
 * ones carry impossible counts and lengths.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { DecodeError } from '../../src/errors.js';
import { PgoutputDecoder, type PgoutputDecoderOptions } from '../../src/decoding/pgoutput.js';
import { bytes, fromHex, loadPgoutputFixture, PGOUTPUT_FIXTURES } from '../helpers/bytes.js';

interface Sample {
  readonly fixture: string;
  readonly index: number;
  readonly name: string;
  readonly bytes: Uint8Array;
  readonly options: PgoutputDecoderOptions;
  /** Whether the decoder is inside a stream block when this message arrives. */
  readonly inStream: boolean;
}

const STREAM_START = bytes().char('S').u32(1).u8(1).build();

/** Every fixture message, with the decoder state it arrives in. */
const SAMPLES: readonly Sample[] = PGOUTPUT_FIXTURES.flatMap((fixtureName) => {
  const fixture = loadPgoutputFixture(fixtureName);
  const options = { protocolVersion: fixture.protocolVersion, parallelStreaming: fixture.parallelStreaming };
  const replay = new PgoutputDecoder(options);
  return fixture.messages.map(({ index, name, hex }) => {
    const inStream = replay.inStream;
    const data = fromHex(hex);
    replay.decode(data);
    return { fixture: fixtureName, index, name, bytes: data, options, inStream };
  });
});

function decoderFor(options: PgoutputDecoderOptions, inStream: boolean): PgoutputDecoder {
  const decoder = new PgoutputDecoder(options);
  if (inStream) decoder.decode(STREAM_START);
  return decoder;
}

/** Decodes, and accepts only success or a DecodeError. */
function decodeOrDecodeError(decoder: PgoutputDecoder, input: Uint8Array): 'ok' | 'error' {
  try {
    decoder.decode(input);
    return 'ok';
  } catch (error) {
    if (error instanceof DecodeError) return 'error';
    throw new assert.AssertionError({
      message: `expected a DecodeError, got ${String(error)} for ${Buffer.from(input).toString('hex')}`,
    });
  }
}

function assertDecodeError(
  decoder: PgoutputDecoder,
  input: Uint8Array,
  what: string,
  message?: RegExp,
): void {
  assert.throws(
    () => decoder.decode(input),
    (error: unknown) => {
      assert.ok(error instanceof DecodeError, `${what}: expected a DecodeError, got ${String(error)}`);
      if (message) assert.match(error.message, message);
      return true;
    },
    `${what}: decoded without an error`,
  );
}

describe('pgoutput robustness: real messages cut short or extended', () => {
  it('covers every message type the decoder knows', () => {
    const tags = new Set(SAMPLES.map((s) => String.fromCharCode(s.bytes[0] ?? 0)));
    assert.deepEqual([...tags].sort(), [...'ABCDEIKMOPRSTUYbcpr'].sort());
  });

  it('throws DecodeError for every truncation of every captured message', () => {
    let checked = 0;
    for (const sample of SAMPLES) {
      const decoder = decoderFor(sample.options, sample.inStream);
      for (let length = 0; length < sample.bytes.length; length++) {
        assertDecodeError(
          decoder,
          sample.bytes.subarray(0, length),
          `${sample.fixture}#${sample.index} cut to ${length}`,
        );
        checked++;
      }
      // A failed decode leaves the stream state as it was.
      assert.equal(decoder.inStream, sample.inStream);
    }
    assert.ok(checked > 5_000, `${checked} truncations`);
  });

  it('throws DecodeError for every captured message with a trailing byte', () => {
    for (const sample of SAMPLES) {
      const decoder = decoderFor(sample.options, sample.inStream);
      for (const extra of [0x00, 0x4e, 0xff]) {
        const longer = new Uint8Array(sample.bytes.length + 1);
        longer.set(sample.bytes);
        longer[sample.bytes.length] = extra;
        assertDecodeError(
          decoder,
          longer,
          `${sample.fixture}#${sample.index} + ${extra}`,
          /unexpected trailing bytes/,
        );
      }
      assert.equal(decoder.inStream, sample.inStream);
    }
  });

  it('decodes a data message only in the stream state it was sent in', () => {
    // Out of a block, a streamed message's xid is read as its relation id and the rest misaligns.
    const streamed = SAMPLES.filter((s) => s.inStream && s.name.startsWith('insert'));
    assert.ok(streamed.length > 10);
    for (const sample of streamed) {
      assertDecodeError(decoderFor(sample.options, false), sample.bytes, `${sample.fixture}#${sample.index}`);
    }
  });
});

describe('pgoutput robustness: synthetic malformed messages', () => {
  const v1 = () => new PgoutputDecoder({ protocolVersion: 1 });
  const insertHead = () => bytes().char('I').u32(1).char('N');

  it('names an unknown message tag in hex', () => {
    assertDecodeError(v1(), bytes().char('Z').build(), 'Z', /unknown message tag 0x5a 'Z'/);
    assertDecodeError(v1(), bytes().u8(0).build(), 'NUL', /unknown message tag 0x00$/);
    assertDecodeError(v1(), bytes().u8(0xff).u32(0).build(), '0xff', /unknown message tag 0xff/);
    assertDecodeError(v1(), new Uint8Array(0), 'empty', /empty message/);
  });

  it('names an unknown tuple kind in hex', () => {
    const message = insertHead().i16(2).char('n').char('x').build();
    assertDecodeError(v1(), message, 'kind x', /unknown column kind 0x78 'x' in column 1/);
  });

  it('rejects a wrong tuple marker', () => {
    assertDecodeError(
      v1(),
      bytes().char('I').u32(1).char('K').tuple([]).build(),
      'insert K',
      /marker 0x4b 'K'/,
    );
    assertDecodeError(
      v1(),
      bytes().char('U').u32(1).char('X').tuple([]).build(),
      'update X',
      /marker 0x58 'X'/,
    );
    assertDecodeError(
      v1(),
      bytes().char('U').u32(1).char('K').tuple([]).char('O').tuple([]).build(),
      'update K then O',
      /marker 0x4f 'O'/,
    );
    assertDecodeError(
      v1(),
      bytes().char('D').u32(1).char('N').tuple([]).build(),
      'delete N',
      /marker 0x4e 'N'/,
    );
  });

  it('rejects an unknown replica identity', () => {
    const message = bytes().char('R').u32(1).cstring('s').cstring('t').char('x').i16(0).build();
    assertDecodeError(v1(), message, 'identity x', /unknown replica identity 0x78/);
  });

  it('rejects negative and huge lengths without allocating or scanning', () => {
    for (const length of [-1, -2_147_483_648, 2_147_483_647, 1 << 30, 5]) {
      const text = insertHead().i16(1).char('t').i32(length).raw([0x61, 0x62]).build();
      assertDecodeError(v1(), text, `text length ${length}`, /text value/);
      const binary = insertHead().i16(1).char('b').i32(length).raw([0x61]).build();
      assertDecodeError(v1(), binary, `binary length ${length}`, /binary value/);
      const message = bytes().char('M').u8(0).u64(1n).cstring('p').i32(length).raw([1]).build();
      assertDecodeError(v1(), message, `content length ${length}`, /content/);
    }
  });

  it('rejects negative and impossible counts before looping over them', () => {
    for (const count of [-1, -32_768, 32_767, 3]) {
      assertDecodeError(v1(), insertHead().i16(count).char('n').build(), `tuple count ${count}`);
      const relation = bytes()
        .char('R')
        .u32(1)
        .cstring('s')
        .cstring('t')
        .char('d')
        .i16(count)
        .raw([1, 0])
        .build();
      assertDecodeError(v1(), relation, `relation column count ${count}`);
    }
    for (const count of [-1, -2_147_483_648, 2_147_483_647, 2]) {
      const truncate = bytes().char('T').i32(count).u8(0).u32(1).build();
      assertDecodeError(v1(), truncate, `truncate count ${count}`);
    }
    assertDecodeError(v1(), insertHead().i16(32_767).build(), 'tuple count', /impossible column count 32767/);
  });

  it('rejects unterminated strings', () => {
    assertDecodeError(
      v1(),
      bytes().char('O').u64(1n).raw([0x61, 0x62]).build(),
      'origin',
      /unterminated string/,
    );
    const gid = bytes().char('K').u8(0).u64(1n).u64(2n).i64(3n).u32(4).raw([0x67]).build();
    assertDecodeError(new PgoutputDecoder({ protocolVersion: 3 }), gid, 'gid', /unterminated string for gid/);
  });

  it('rejects a protocol-4 Stream Abort without its abort fields when parallel streaming is on', () => {
    const decoder = new PgoutputDecoder({ protocolVersion: 4, parallelStreaming: true });
    assertDecodeError(decoder, bytes().char('A').u32(1).u32(1).build(), 'short abort', /abort LSN/);
    assert.equal(decoder.decode(bytes().char('A').u32(1).u32(2).u64(3n).i64(4n).build()).tag, 'stream-abort');
  });
});

const TAGS = [...'BCORYIUDTMSEcAbPKrp'].map((c) => c.charCodeAt(0));
const OPTIONS: PgoutputDecoderOptions[] = [
  { protocolVersion: 1 },
  { protocolVersion: 2 },
  { protocolVersion: 3 },
  { protocolVersion: 4 },
  { protocolVersion: 4, parallelStreaming: true },
];

type Mutation =
  | { kind: 'flip'; at: number; mask: number }
  | { kind: 'insert'; at: number; value: number }
  | { kind: 'remove'; at: number }
  | { kind: 'int32'; at: number; value: number };

function mutate(input: Uint8Array, mutations: readonly Mutation[]): Uint8Array {
  let out = Uint8Array.from(input);
  for (const mutation of mutations) {
    const at = out.length === 0 ? 0 : mutation.at % (out.length + (mutation.kind === 'insert' ? 1 : 0));
    if (mutation.kind === 'flip' && out.length > 0) out[at] = (out[at] ?? 0) ^ mutation.mask;
    else if (mutation.kind === 'insert')
      out = Uint8Array.from([...out.subarray(0, at), mutation.value, ...out.subarray(at)]);
    else if (mutation.kind === 'remove' && out.length > 0)
      out = Uint8Array.from([...out.subarray(0, at), ...out.subarray(at + 1)]);
    else if (mutation.kind === 'int32' && out.length >= 4) {
      new DataView(out.buffer).setInt32(Math.min(at, out.length - 4), mutation.value);
    }
  }
  return out;
}

const mutationArbitrary: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), mask: fc.integer({ min: 1, max: 255 }) }),
  fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ kind: fc.constant('remove' as const), at: fc.nat() }),
  fc.record({
    kind: fc.constant('int32' as const),
    at: fc.nat(),
    value: fc.oneof(
      fc.constantFrom(0, 1, -1, 0x7fffffff, -0x80000000, 0x7fff0000, 65_536),
      fc.integer({ min: -0x80000000, max: 0x7fffffff }),
    ),
  }),
);

describe('pgoutput robustness: properties (fast-check)', () => {
  it('arbitrary bytes either decode or throw DecodeError', { timeout: 20_000 }, () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...OPTIONS),
        fc.boolean(),
        fc.uint8Array({ maxLength: 300 }),
        (options, inStream, input) => {
          decodeOrDecodeError(decoderFor(options, inStream && options.protocolVersion >= 2), input);
        },
      ),
      { numRuns: 3_000 },
    );
  });

  it('arbitrary bodies behind every real tag either decode or throw DecodeError', { timeout: 20_000 }, () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...OPTIONS),
        fc.boolean(),
        fc.constantFrom(...TAGS),
        fc.uint8Array({ maxLength: 120 }),
        (options, inStream, tag, body) => {
          const input = Uint8Array.from([tag, ...body]);
          decodeOrDecodeError(decoderFor(options, inStream && options.protocolVersion >= 2), input);
        },
      ),
      { numRuns: 5_000 },
    );
  });

  it('mutated real messages either decode or throw DecodeError', { timeout: 20_000 }, () => {
    let decoded = 0;
    let rejected = 0;
    fc.assert(
      fc.property(
        fc.constantFrom(...SAMPLES),
        fc.array(mutationArbitrary, { minLength: 1, maxLength: 4 }),
        (sample, mutations) => {
          const input = mutate(sample.bytes, mutations);
          const result = decodeOrDecodeError(decoderFor(sample.options, sample.inStream), input);
          if (result === 'ok') decoded++;
          else rejected++;
        },
      ),
      { numRuns: 5_000 },
    );
    // Both outcomes occur: the mutations are neither all harmless nor all fatal.
    assert.ok(decoded > 0 && rejected > 0, `${decoded} decoded, ${rejected} rejected`);
  });

  it('large hostile inputs are rejected quickly', { timeout: 5_000 }, () => {
    // A tuple claiming 32767 columns followed by 1 MB of 'u' kinds decodes (32767 columns), then
    // the rest is trailing bytes; one claiming huge text lengths fails at once.
    const many = new Uint8Array(1 + 4 + 1 + 2 + 1_000_000).fill(0x75);
    new DataView(many.buffer).setUint8(0, 0x49);
    new DataView(many.buffer).setUint32(1, 1);
    new DataView(many.buffer).setUint8(5, 0x4e);
    new DataView(many.buffer).setInt16(6, 32_767);
    const started = performance.now();
    assert.throws(() => new PgoutputDecoder({ protocolVersion: 1 }).decode(many), DecodeError);
    const truncate = bytes().char('T').i32(250_000).u8(0).raw(new Uint8Array(1_000_000)).build();
    assert.equal(new PgoutputDecoder({ protocolVersion: 1 }).decode(truncate).tag, 'truncate');
    assert.ok(performance.now() - started < 2_000);
  });
});
