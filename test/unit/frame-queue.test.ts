/**
 * The frame queue (replication/frame-queue.ts) — order, byte accounting, backpressure, the waiting consumer,
 * end and failure — and the parts of ReplicationStream (replication/connection.ts) that need no server: the
 * flush position it reports never moves back, frames and failures reach the consumer, a stop ends cleanly.
 * ReplicationStream runs here over a small stand-in for the node-postgres internals it touches (the copy
 * listener, the chunk sender, the socket's pause/resume/destroy, the query, the client's `end` event); the
 * standby status updates it sends are parsed from their bytes.
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import type pg from 'pg';
import { DecodeError, SlotlakeError } from '../../src/errors.js';
import { lsn, type Lsn } from '../../src/lsn.js';
import { postgresMicrosFromUnix, type ServerFrame } from '../../src/protocol/frames.js';
import { ReplicationStream } from '../../src/replication/connection.js';
import { FrameQueue, queuedCost, type ReadControl } from '../../src/replication/frame-queue.js';
import type { Clock } from '../../src/support/deadline.js';
import { bytes } from '../helpers/bytes.js';

const OVERHEAD = 256;

function xlog(walStart: bigint, size = 100): ServerFrame {
  return {
    type: 'xlogdata',
    walStart: lsn(walStart),
    walEnd: lsn(walStart + 1000n),
    sendTime: 0n,
    data: new Uint8Array(size),
  };
}

function keepalive(walEnd: bigint): ServerFrame {
  return { type: 'keepalive', walEnd: lsn(walEnd), sendTime: 0n, replyRequested: false };
}

/** Records the queue's pause/resume requests, in order. */
class RecordingControl implements ReadControl {
  readonly calls: ('pause' | 'resume')[] = [];
  pause(): void {
    this.calls.push('pause');
  }
  resume(): void {
    this.calls.push('resume');
  }
  get paused(): boolean {
    return this.calls.at(-1) === 'pause';
  }
}

/** A queue whose high-water mark holds exactly `frames` 100-byte XLogData frames. */
function queueOf(frames: number): { queue: FrameQueue; control: RecordingControl; cost: number } {
  const control = new RecordingControl();
  const cost = queuedCost(xlog(0n));
  return { queue: new FrameQueue(control, frames * cost), control, cost };
}

describe('queuedCost', () => {
  it('counts the payload, the header fields and the per-frame overhead', () => {
    assert.equal(queuedCost(xlog(0n, 0)), 25 + OVERHEAD);
    assert.equal(queuedCost(xlog(0n, 1000)), 1025 + OVERHEAD);
    assert.equal(queuedCost(keepalive(0n)), 18 + OVERHEAD);
  });
});

describe('FrameQueue', () => {
  it('hands frames out in arrival order and accounts their bytes', async () => {
    const { queue } = queueOf(1000);
    const frames = [xlog(1n), keepalive(2n), xlog(3n, 7), xlog(4n, 0), keepalive(5n)];
    for (const frame of frames) queue.push(frame);
    assert.equal(queue.pending, frames.length);
    assert.equal(
      queue.queuedBytes,
      frames.reduce((sum, frame) => sum + queuedCost(frame), 0),
    );
    for (const frame of frames) assert.equal(await queue.next(0), frame);
    assert.equal(queue.pending, 0);
    assert.equal(queue.queuedBytes, 0);
    assert.equal(await queue.next(0), 'timeout');
  });

  it('keeps order across the internal compaction of a long queue', async () => {
    const { queue } = queueOf(1_000_000);
    let pushed = 0;
    let taken = 0;
    for (let round = 0; round < 5; round++) {
      for (let i = 0; i < 1500; i++) queue.push(xlog(BigInt(pushed++)));
      for (let i = 0; i < 1200; i++) {
        const frame = await queue.next(0);
        assert.ok(typeof frame === 'object' && frame.type === 'xlogdata');
        assert.equal(frame.walStart, lsn(BigInt(taken++)));
      }
    }
    assert.equal(queue.pending, pushed - taken);
  });

  it('pauses once when the queue passes the high-water mark, resumes once at the low-water mark', async () => {
    const { queue, control, cost } = queueOf(8); // low water: 2 frames
    for (let i = 0; i < 8; i++) queue.push(xlog(BigInt(i)));
    assert.deepEqual(control.calls, [], 'at the mark is not above it');
    queue.push(xlog(8n));
    assert.deepEqual(control.calls, ['pause']);
    for (let i = 9; i < 20; i++) queue.push(xlog(BigInt(i)));
    assert.deepEqual(control.calls, ['pause'], 'one pause per crossing');
    assert.equal(queue.readPauses, 1);
    while (queue.queuedBytes > queue.lowWater + cost) await queue.next(0);
    assert.deepEqual(control.calls, ['pause'], 'still above the low-water mark');
    await queue.next(0);
    assert.ok(queue.queuedBytes <= queue.lowWater);
    assert.deepEqual(control.calls, ['pause', 'resume']);
    while (queue.pending > 0) await queue.next(0);
    assert.deepEqual(control.calls, ['pause', 'resume'], 'one resume per crossing');
    // The next crossing pauses again.
    for (let i = 0; i < 9; i++) queue.push(xlog(BigInt(i)));
    assert.deepEqual(control.calls, ['pause', 'resume', 'pause']);
    assert.equal(queue.readPauses, 2);
  });

  it('pauses exactly when above the high-water mark and resumes only at the low-water mark (any sequence)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.oneof(
            fc.nat(600).map((size) => ({ push: size })),
            fc.constant({ take: true }),
          ),
          {
            maxLength: 200,
          },
        ),
        async (operations) => {
          const control = new RecordingControl();
          const queue = new FrameQueue(control, 3000);
          for (const operation of operations) {
            const before = control.calls.length;
            if ('push' in operation) {
              queue.push(xlog(0n, operation.push));
              if (!control.paused)
                assert.ok(queue.queuedBytes <= queue.highWater, 'not paused above the mark');
              if (control.calls.length > before) assert.ok(queue.queuedBytes > queue.highWater);
            } else {
              await queue.next(0);
              if (control.paused)
                assert.ok(queue.queuedBytes > queue.lowWater, 'paused at the low-water mark');
              if (control.calls.length > before) assert.ok(queue.queuedBytes <= queue.lowWater);
            }
            assert.ok(control.calls.length - before <= 1);
          }
          // Pauses and resumes alternate, starting with a pause.
          control.calls.forEach((call, i) => assert.equal(call, i % 2 === 0 ? 'pause' : 'resume'));
          assert.equal(queue.readPauses, control.calls.filter((call) => call === 'pause').length);
        },
      ),
    );
  });

  it('wakes a waiting consumer when a frame arrives', async () => {
    const { queue } = queueOf(10);
    const waiting = queue.next(60_000);
    const frame = xlog(7n);
    queue.push(frame);
    assert.equal(await waiting, frame);
  });

  it('times out without a frame', async () => {
    const { queue } = queueOf(10);
    assert.equal(await queue.next(0), 'timeout');
    assert.equal(await queue.next(20), 'timeout');
    // A frame pushed after a timeout is still there for the next call.
    const frame = keepalive(1n);
    queue.push(frame);
    assert.equal(await queue.next(0), frame);
  });

  it("drains queued frames before reporting 'ended', then keeps reporting it", async () => {
    const { queue } = queueOf(10);
    const frames = [xlog(1n), keepalive(2n)];
    for (const frame of frames) queue.push(frame);
    queue.end();
    assert.equal(queue.ended, true);
    assert.equal(await queue.next(60_000), frames[0]);
    assert.equal(await queue.next(60_000), frames[1]);
    assert.equal(await queue.next(60_000), 'ended');
    assert.equal(await queue.next(0), 'ended');
  });

  it("wakes a waiting consumer with 'ended' when the stream ends", async () => {
    const { queue } = queueOf(10);
    const waiting = queue.next(60_000);
    queue.end();
    assert.equal(await waiting, 'ended');
  });

  it('throws a failure from next(), before any frame still queued, and wakes a waiting consumer with it', async () => {
    const failure = new SlotlakeError('the stream broke', {
      kind: 'source-connection-lost',
      origin: 'source',
    });
    const { queue } = queueOf(10);
    const waiting = queue.next(60_000);
    queue.fail(failure);
    await assert.rejects(waiting, (error) => error === failure);
    queue.push(xlog(1n));
    await assert.rejects(queue.next(0), (error) => error === failure);
    const ended = queueOf(10).queue;
    ended.push(xlog(1n));
    ended.end(failure);
    await assert.rejects(ended.next(0), (error) => error === failure);
    assert.equal(ended.failure, failure);
  });

  it('clears its frames and resumes reading when cleared while paused', async () => {
    const { queue, control } = queueOf(2);
    for (let i = 0; i < 5; i++) queue.push(xlog(BigInt(i)));
    assert.deepEqual(control.calls, ['pause']);
    queue.clear();
    assert.deepEqual(control.calls, ['pause', 'resume']);
    assert.equal(queue.pending, 0);
    assert.equal(queue.queuedBytes, 0);
    assert.equal(await queue.next(0), 'timeout');
    queue.clear();
    assert.deepEqual(control.calls, ['pause', 'resume'], 'nothing to resume');
  });
});

/** The node-postgres internals ReplicationStream touches, and nothing more. */
class FakeConnection extends EventEmitter {
  readonly sent: Buffer[] = [];
  readonly events: string[] = [];
  readonly stream = {
    pause: () => this.events.push('pause'),
    resume: () => this.events.push('resume'),
    destroy: () => this.events.push('destroy'),
  };
  onCopyDone: () => void = () => undefined;

  sendCopyFromChunk(chunk: Buffer): void {
    this.sent.push(Buffer.from(chunk));
    this.events.push('status');
  }

  endCopyFrom(): void {
    this.events.push('copy-done');
    this.onCopyDone();
  }

  /** The server sends one CopyData payload. */
  deliver(payload: Uint8Array): void {
    this.emit('copyData', { chunk: Buffer.from(payload) });
  }
}

class FakeClient extends EventEmitter {
  readonly connection = new FakeConnection();
  readonly queries: string[] = [];
  settle: { resolve: () => void; reject: (error: unknown) => void } | undefined;

  query(command: string): Promise<void> {
    this.queries.push(command);
    return new Promise<void>((resolve, reject) => {
      this.settle = { resolve, reject };
    });
  }
}

const CLOCK_MS = 1_764_000_000_000;
const fixedClock: Clock = { nowMs: () => CLOCK_MS };

function openStream(options: { startLsn?: Lsn; highWaterBytes?: number } = {}) {
  const client = new FakeClient();
  const stream = new ReplicationStream(
    client as unknown as pg.Client,
    'START_REPLICATION SLOT "s" LOGICAL 0/0',
    {
      slot: 's',
      startLsn: options.startLsn ?? lsn(0x1000n),
      pluginOptions: {},
      statusIntervalMs: 3_600_000, // the timer never sends during a test: every update is a forced one
      ...(options.highWaterBytes === undefined ? {} : { highWaterBytes: options.highWaterBytes }),
    },
    fixedClock,
  );
  return { client, connection: client.connection, stream };
}

interface StatusUpdate {
  readonly written: bigint;
  readonly flushed: bigint;
  readonly applied: bigint;
  readonly clientTimePg: bigint;
  readonly replyRequested: boolean;
}

/** Parses an `r` standby status update. */
function parseStatus(chunk: Buffer): StatusUpdate {
  assert.equal(chunk.length, 34);
  assert.equal(String.fromCharCode(chunk[0]!), 'r');
  return {
    written: chunk.readBigUInt64BE(1),
    flushed: chunk.readBigUInt64BE(9),
    applied: chunk.readBigUInt64BE(17),
    clientTimePg: chunk.readBigInt64BE(25),
    replyRequested: chunk[33] === 1,
  };
}

function xlogPayload(walStart: bigint, walEnd: bigint, data: readonly number[] = [0x49]): Uint8Array {
  return bytes().char('w').u64(walStart).u64(walEnd).i64(0n).raw(data).build();
}

function keepalivePayload(walEnd: bigint, replyRequested: boolean): Uint8Array {
  return bytes()
    .char('k')
    .u64(walEnd)
    .i64(0n)
    .u8(replyRequested ? 1 : 0)
    .build();
}

async function stopCleanly(client: FakeClient, stream: ReplicationStream): Promise<void> {
  client.connection.onCopyDone = () => client.settle?.resolve();
  await stream.stop(60_000);
}

describe('ReplicationStream flush position', () => {
  it('never reports a flush position behind the last acknowledged one, nor one not acknowledged', async () => {
    const start = 0x10_0000n;
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.oneof(
            fc.bigInt({ min: 0n, max: 2n * start }).map((position) => ({ ack: position })),
            fc.bigInt({ min: 0n, max: 2n * start }).map((position) => ({ data: position })),
            fc.boolean().map((reply) => ({ keepalive: reply })),
          ),
          { maxLength: 40 },
        ),
        async (operations) => {
          const { client, connection, stream } = openStream({ startLsn: lsn(start) });
          let acknowledged = start;
          let received = 0n;
          /** What each update must report, as of when it is sent. */
          const expected: { flushed: bigint; received: bigint }[] = [];
          for (const operation of operations) {
            if ('ack' in operation) {
              stream.acknowledge(lsn(operation.ack));
              if (operation.ack > acknowledged) acknowledged = operation.ack;
              expected.push({ flushed: acknowledged, received });
            } else if ('data' in operation) {
              connection.deliver(xlogPayload(operation.data, operation.data + 8n));
              if (operation.data > received) received = operation.data;
            } else {
              connection.deliver(keepalivePayload(2n * start, operation.keepalive));
              if (operation.keepalive) expected.push({ flushed: acknowledged, received });
            }
            assert.equal(stream.flushedPosition, acknowledged);
          }
          const updates = connection.sent.map(parseStatus);
          assert.equal(updates.length, expected.length, 'one update per acknowledgement and reply request');
          let previous = start;
          updates.forEach((update, i) => {
            assert.ok(update.flushed >= previous, `flush moved back from ${previous} to ${update.flushed}`);
            assert.equal(update.flushed, expected[i]!.flushed, 'the last acknowledged position');
            assert.ok(update.written >= update.flushed, 'written ≥ flushed');
            assert.ok(update.written >= expected[i]!.received, 'written covers what was received');
            assert.equal(update.applied, update.flushed);
            assert.equal(update.clientTimePg, postgresMicrosFromUnix(BigInt(CLOCK_MS) * 1000n));
            previous = update.flushed;
          });
          await stopCleanly(client, stream);
        },
      ),
      { numRuns: 100 },
    );
  });

  it('answers a keepalive that requests a reply, with the flush position, without asking for one back', async () => {
    const { client, connection, stream } = openStream({ startLsn: lsn(0x2000n) });
    connection.deliver(keepalivePayload(0x9000n, false));
    assert.equal(connection.sent.length, 0);
    connection.deliver(keepalivePayload(0x9000n, true));
    const [update] = connection.sent.map(parseStatus);
    assert.deepEqual(
      { flushed: update?.flushed, replyRequested: update?.replyRequested },
      { flushed: 0x2000n, replyRequested: false },
    );
    stream.requestKeepalive();
    assert.equal(parseStatus(connection.sent[1]!).replyRequested, true);
    assert.equal(stream.serverPosition, lsn(0x9000n));
    await stopCleanly(client, stream);
  });

  it('stops with a final update, then CopyDone, and sends nothing after', async () => {
    const { client, connection, stream } = openStream({ startLsn: lsn(0x2000n) });
    stream.acknowledge(lsn(0x3000n));
    await stopCleanly(client, stream);
    assert.deepEqual(connection.events, ['status', 'status', 'copy-done']);
    assert.equal(parseStatus(connection.sent.at(-1)!).flushed, 0x3000n);
    stream.acknowledge(lsn(0x4000n));
    stream.requestKeepalive();
    assert.equal(connection.sent.length, 2, 'nothing is sent after the stop');
    assert.equal(connection.listenerCount('copyData'), 0);
  });
});

describe('ReplicationStream frames', () => {
  it('hands the decoded frames out in order, pausing and resuming the socket around the high-water mark', async () => {
    const frameCost = queuedCost(xlog(0n, 1));
    const { client, connection, stream } = openStream({ highWaterBytes: 4 * frameCost });
    for (let i = 1n; i <= 6n; i++) connection.deliver(xlogPayload(i * 0x10n, 0x100n));
    connection.deliver(keepalivePayload(0x200n, false));
    assert.deepEqual(connection.events, ['pause']);
    assert.equal(stream.readPauses, 1);
    assert.equal(stream.pendingFrames, 7);
    const starts: bigint[] = [];
    for (;;) {
      const frame = await stream.next(0);
      assert.ok(frame !== 'ended', 'the stream has not ended');
      if (frame === 'timeout') break;
      starts.push(frame.type === 'xlogdata' ? frame.walStart : -frame.walEnd);
    }
    assert.deepEqual(starts, [0x10n, 0x20n, 0x30n, 0x40n, 0x50n, 0x60n, -0x200n]);
    assert.deepEqual(connection.events, ['pause', 'resume']);
    await stopCleanly(client, stream);
  });

  it('fails next() with a decode error and destroys the socket on an undecodable frame', async () => {
    const { client, connection, stream } = openStream();
    connection.deliver(Uint8Array.from([0x78, 1, 2, 3]));
    await assert.rejects(stream.next(60_000), (error) => error instanceof DecodeError);
    assert.ok(connection.events.includes('destroy'));
    client.settle?.reject(new Error('Connection terminated'));
    await assert.rejects(stream.next(0), (error) => error instanceof DecodeError, 'the first failure stays');
    stream.abandon();
  });

  it('fails next() with a source connection loss when the stream query fails', async () => {
    const { client, stream } = openStream();
    const waiting = stream.next(60_000);
    client.settle?.reject(Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }));
    await assert.rejects(waiting, (error) => error instanceof SlotlakeError && error.isSourceConnectionLoss);
    stream.abandon();
  });

  it('fails next() with a source connection loss when the connection ends unexpectedly', async () => {
    const { client, stream } = openStream();
    const waiting = stream.next(60_000);
    client.emit('end');
    await assert.rejects(waiting, (error: unknown) => {
      assert.ok(error instanceof SlotlakeError);
      assert.equal(error.kind, 'source-connection-lost');
      assert.equal(error.isSourceConnectionLoss, true, 'origin source: the run reconnects for it');
      return true;
    });
    stream.abandon();
  });

  it("reports 'ended' once the server ends the stream, after the frames it sent", async () => {
    const { client, connection, stream } = openStream();
    connection.deliver(xlogPayload(0x10n, 0x20n));
    client.settle?.resolve();
    await new Promise((resolve) => setImmediate(resolve));
    const frame = await stream.next(60_000);
    assert.ok(typeof frame === 'object' && frame.type === 'xlogdata');
    assert.equal(await stream.next(60_000), 'ended');
    stream.abandon();
  });
});
