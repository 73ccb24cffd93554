/**
 * Replication CopyData frames: real `w`/`k` payloads captured from PostgreSQL 17
 * (test/fixtures/pgoutput/frames.json, written by scripts/capture-pgoutput.ts), malformed frames, and the
 * byte layout of the standby status update we send back.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { DecodeError } from '../../src/errors.js';
import { PgoutputDecoder } from '../../src/decoding/pgoutput.js';
import { lsn, ZERO_LSN } from '../../src/lsn.js';
import {
  decodeServerFrame,
  encodeStandbyStatus,
  POSTGRES_EPOCH_OFFSET_US,
  postgresMicrosFromUnix,
  unixMicrosFromPostgres,
  type PrimaryKeepaliveFrame,
  type ServerFrame,
  type XLogDataFrame,
} from '../../src/protocol/frames.js';
import {
  bytes,
  fromHex,
  loadFramesFixture,
  loadPgoutputFixture,
  type PgoutputFixtureName,
} from '../helpers/bytes.js';

const fixture = loadFramesFixture();
const captured = fixture.frames.map((frame) => {
  const payload = fromHex(frame.hex);
  return { ...frame, payload, frame: decodeServerFrame(payload) };
});

function xlog(frame: ServerFrame): XLogDataFrame {
  assert.equal(frame.type, 'xlogdata');
  return frame as XLogDataFrame;
}

function keepalive(frame: ServerFrame): PrimaryKeepaliveFrame {
  assert.equal(frame.type, 'keepalive');
  return frame as PrimaryKeepaliveFrame;
}

function assertPlausibleTime(pgMicros: bigint): void {
  const ms = Number(unixMicrosFromPostgres(pgMicros) / 1000n);
  assert.ok(
    ms > Date.UTC(2020, 0, 1) && ms < Date.UTC(2100, 0, 1),
    `implausible time ${new Date(ms).toISOString()}`,
  );
}

function assertDecodeError(payload: Uint8Array, what: string, message?: RegExp): void {
  assert.throws(
    () => decodeServerFrame(payload),
    (error: unknown) => {
      assert.ok(error instanceof DecodeError, `${what}: expected a DecodeError, got ${String(error)}`);
      if (message) assert.match(error.message, message);
      return true;
    },
    `${what}: decoded without an error`,
  );
}

describe('decodeServerFrame on captured frames', () => {
  it('has XLogData, plain keepalives and a reply-requested keepalive', () => {
    const names = new Set(captured.map((c) => c.name.replace(/-\d+$/, '')));
    assert.deepEqual([...names].sort(), ['keepalive', 'keepalive-reply-requested', 'xlogdata']);
    assert.match(fixture.server, /^PostgreSQL 17/);
  });

  it("decodes 'w' XLogData: header, and the rest of the payload as the message (a view, not a copy)", () => {
    for (const { scenario, name, payload, frame } of captured.filter((c) => c.name.startsWith('xlogdata'))) {
      const data = xlog(frame);
      assert.equal(payload[0], 0x77);
      assert.deepEqual([...data.data], [...payload.subarray(25)]);
      assert.equal(data.data.buffer, payload.buffer, 'data is a view into the frame');
      assert.equal(data.data.byteOffset, payload.byteOffset + 25);
      // The walsender writes the same position as start and end of a logical message.
      assert.equal(data.walEnd, data.walStart, `${scenario} ${name}`);
      assertPlausibleTime(data.sendTime);
    }
  });

  it('carries the first pgoutput message of each capture, at or before its commit position', () => {
    for (const { scenario, frame } of captured.filter((c) => c.name === 'xlogdata-1')) {
      const data = xlog(frame);
      const messages = loadPgoutputFixture(scenario.replace(/\.json$/, '') as PgoutputFixtureName);
      assert.equal(Buffer.from(data.data).toString('hex'), messages.messages[0]?.hex, scenario);
      const decoder = new PgoutputDecoder({
        protocolVersion: messages.protocolVersion,
        parallelStreaming: messages.parallelStreaming,
      });
      const first = decoder.decode(data.data);
      assert.ok(data.walStart > ZERO_LSN);
      if (first.tag === 'begin')
        assert.ok(data.walStart <= first.finalLsn, 'a transaction starts before it commits');
      if (first.tag === 'begin-prepare') assert.ok(data.walStart <= first.prepareLsn);
    }
  });

  it("decodes 'k' keepalives, with and without a reply request", () => {
    const keepalives = captured.filter((c) => c.name.startsWith('keepalive'));
    assert.ok(keepalives.length >= 3);
    for (const { name, payload, frame } of keepalives) {
      const k = keepalive(frame);
      assert.equal(payload.length, 18);
      assert.equal(k.replyRequested, name === 'keepalive-reply-requested');
      assert.ok(k.walEnd > ZERO_LSN);
      assertPlausibleTime(k.sendTime);
    }
  });

  it('sees the server clock and WAL end move forward within a capture', () => {
    for (const scenario of new Set(captured.map((c) => c.scenario))) {
      const frames = captured.filter((c) => c.scenario === scenario).map((c) => c.frame);
      for (let i = 1; i < frames.length; i++) {
        assert.ok((frames[i]?.sendTime ?? 0n) >= (frames[i - 1]?.sendTime ?? 0n), `${scenario} frame ${i}`);
      }
      const ends = frames.filter((f) => f.type === 'keepalive').map((f) => f.walEnd);
      for (let i = 1; i < ends.length; i++) assert.ok((ends[i] ?? 0n) >= (ends[i - 1] ?? 0n));
    }
  });
});

describe('decodeServerFrame on malformed frames', () => {
  const sample = (prefix: string) => {
    const found = captured.find((c) => c.name.startsWith(prefix));
    assert.ok(found, prefix);
    return found.payload;
  };

  it('throws DecodeError for every truncation of an XLogData header and of a keepalive', () => {
    const w = sample('xlogdata');
    for (let length = 0; length < 25; length++)
      assertDecodeError(w.subarray(0, length), `w cut to ${length}`);
    const k = sample('keepalive');
    for (let length = 0; length < k.length; length++)
      assertDecodeError(k.subarray(0, length), `k cut to ${length}`);
  });

  it('accepts an XLogData frame with an empty message (the pgoutput decoder then rejects it)', () => {
    const frame = xlog(decodeServerFrame(sample('xlogdata').subarray(0, 25)));
    assert.equal(frame.data.length, 0);
    assert.throws(() => new PgoutputDecoder({ protocolVersion: 1 }).decode(frame.data), DecodeError);
  });

  it('throws DecodeError for a keepalive with trailing bytes', () => {
    const k = sample('keepalive');
    assertDecodeError(Uint8Array.from([...k, 0]), 'k + 1', /trailing/);
  });

  it('names an unknown frame type in hex', () => {
    assertDecodeError(Uint8Array.from([0x78, 0, 0]), 'x', /unknown frame type 0x78/);
    assertDecodeError(encodeStandbyStatus(status()), 'r', /unknown frame type 0x72/);
    assertDecodeError(Uint8Array.from([0]), 'NUL', /unknown frame type 0x00/);
  });

  it('decodes synthetic frames with extreme values', () => {
    const k = bytes().char('k').u64(0xffffffffffffffffn).i64(-1n).u8(1).build();
    assert.deepEqual(decodeServerFrame(k), {
      type: 'keepalive',
      walEnd: lsn(0xffffffffffffffffn),
      sendTime: -1n,
      replyRequested: true,
    });
    const w = bytes().char('w').u64(1n).u64(2n).i64(3n).raw([0x45]).build();
    const frame = xlog(decodeServerFrame(w));
    assert.deepEqual(
      [frame.walStart, frame.walEnd, frame.sendTime, [...frame.data]],
      [lsn(1n), lsn(2n), 3n, [0x45]],
    );
  });

  it('arbitrary bytes either decode or throw DecodeError', () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.constantFrom(0x77, 0x6b), fc.nat(255)),
        fc.uint8Array({ maxLength: 40 }),
        (tag, rest) => {
          try {
            decodeServerFrame(Uint8Array.from([tag, ...rest]));
          } catch (error) {
            assert.ok(error instanceof DecodeError, `got ${String(error)}`);
          }
        },
      ),
      { numRuns: 2_000 },
    );
  });
});

function status(overrides: Partial<Parameters<typeof encodeStandbyStatus>[0]> = {}) {
  return {
    written: lsn(0x0000000a_0000000bn),
    flushed: lsn(0x00000001_00000002n),
    applied: lsn(0x0102030405060708n),
    clientTimeUnixUs: BigInt(Date.UTC(2024, 0, 2, 3, 4, 5)) * 1000n + 678n,
    replyRequested: false,
    ...overrides,
  };
}

describe('encodeStandbyStatus', () => {
  it("lays out an 'r' standby status update in 34 big-endian bytes", () => {
    const encoded = encodeStandbyStatus(status());
    assert.equal(encoded.length, 34);
    const expected = bytes()
      .char('r')
      .u64(0x0000000a_0000000bn)
      .u64(0x00000001_00000002n)
      .u64(0x0102030405060708n)
      .i64(BigInt(Date.UTC(2024, 0, 2, 3, 4, 5) - Date.UTC(2000, 0, 1)) * 1000n + 678n)
      .u8(0)
      .build();
    assert.deepEqual(encoded, expected);
    assert.equal(encodeStandbyStatus(status({ replyRequested: true }))[33], 1);
  });

  it('converts the client clock to the Postgres epoch (2000-01-01 UTC)', () => {
    assert.equal(POSTGRES_EPOCH_OFFSET_US, BigInt(Date.UTC(2000, 0, 1)) * 1000n);
    const at = (unixUs: bigint) =>
      new DataView(encodeStandbyStatus(status({ clientTimeUnixUs: unixUs })).buffer).getBigInt64(25);
    assert.equal(at(POSTGRES_EPOCH_OFFSET_US), 0n);
    assert.equal(at(0n), -POSTGRES_EPOCH_OFFSET_US, 'before the Postgres epoch is negative');
    assert.equal(at(POSTGRES_EPOCH_OFFSET_US + 1n), 1n);
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: 1n << 60n }), (unixUs) => {
        assert.equal(unixMicrosFromPostgres(postgresMicrosFromUnix(unixUs)), unixUs);
        assert.equal(at(unixUs), postgresMicrosFromUnix(unixUs));
      }),
      { numRuns: 200 },
    );
  });

  it('writes unsigned LSNs above 2^63 intact', () => {
    const top = lsn(0xfffffffffffffffen);
    const view = new DataView(
      encodeStandbyStatus(status({ written: top, flushed: top, applied: top })).buffer,
    );
    assert.equal(view.getBigUint64(1), top);
    assert.equal(view.getBigUint64(9), top);
    assert.equal(view.getBigUint64(17), top);
  });
});
