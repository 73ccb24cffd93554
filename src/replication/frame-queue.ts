/**
 * The queue between the replication socket and the pipeline: decoded frames in arrival order, bounded in
 * memory by backpressure.
 *
 * The socket delivers frames whenever the server sends them; the pipeline takes them one at a time, and may
 * be busy uploading for seconds. The queue counts what each waiting frame costs in memory and, above a
 * high-water mark, asks its owner to pause reading (the server then blocks on TCP instead of us buffering
 * without bound); once the consumer has drained it to the low-water mark (a quarter of the high one), it asks
 * to resume. Each crossing pauses once and resumes once. One consumer waits at a time (`next()`), woken by a
 * frame, the end of the stream or a failure; a failure is reported before any frame still queued, the end
 * only after them. No I/O: the owner (replication/connection.ts) pushes frames and wires pause/resume to the
 * socket.
 */
import type { SlotlakeError } from '../errors.js';
import type { ServerFrame } from '../protocol/frames.js';

/** Outcome of waiting for the next frame. */
export type NextFrame = ServerFrame | 'timeout' | 'ended';

/** What the queue asks of its owner's socket. */
export interface ReadControl {
  pause(): void;
  resume(): void;
}

/** The default high-water mark: 16 MiB of queued frames. */
export const DEFAULT_HIGH_WATER_BYTES = 16 * 1024 * 1024;

/**
 * What a queued frame holds in memory beyond its payload: the frame object, its three bigints and the
 * `data` view — about 245 bytes on Node 22, measured. Counting it makes the high-water mark bound memory
 * rather than payload: a pgoutput change is often 100–300 bytes, where payload alone undercounts 2–3×.
 */
const FRAME_OVERHEAD_BYTES = 256;

/** Approximate memory held by one queued frame. */
export function queuedCost(frame: ServerFrame): number {
  return (frame.type === 'xlogdata' ? frame.data.byteLength + 25 : 18) + FRAME_OVERHEAD_BYTES;
}

export class FrameQueue {
  private readonly frames: ServerFrame[] = [];
  private head = 0;
  private bytes = 0;
  private paused = false;
  private isEnded = false;
  private error: SlotlakeError | undefined;
  private waiter: (() => void) | undefined;
  readonly highWater: number;
  readonly lowWater: number;
  /** How often reading paused because the consumer was behind. */
  readPauses = 0;

  constructor(
    private readonly control: ReadControl,
    highWaterBytes = DEFAULT_HIGH_WATER_BYTES,
  ) {
    this.highWater = highWaterBytes;
    this.lowWater = Math.floor(highWaterBytes / 4);
  }

  /** Frames waiting to be consumed. */
  get pending(): number {
    return this.frames.length - this.head;
  }

  /** Approximate memory held by the waiting frames (`queuedCost` each). */
  get queuedBytes(): number {
    return this.bytes;
  }

  /** True once the stream is over (no frame will be pushed any more). */
  get ended(): boolean {
    return this.isEnded;
  }

  /** The failure `next()` reports, if any. */
  get failure(): SlotlakeError | undefined {
    return this.error;
  }

  /** Queues a frame; pauses reading when the queue passes the high-water mark. */
  push(frame: ServerFrame): void {
    this.frames.push(frame);
    this.bytes += queuedCost(frame);
    if (!this.paused && this.bytes > this.highWater) {
      this.paused = true;
      this.readPauses++;
      this.control.pause();
    }
    this.wake();
  }

  /** The stream is over; with `failure`, `next()` throws it (replacing any failure reported before). */
  end(failure?: SlotlakeError): void {
    this.isEnded = true;
    if (failure) this.error = failure;
    this.wake();
  }

  /** The stream failed (it may still end later): `next()` throws `failure` from now on. */
  fail(failure: SlotlakeError): void {
    this.error = failure;
    this.wake();
  }

  /** Drops every queued frame (a stop reads no further) and resumes reading if paused. */
  clear(): void {
    this.frames.length = 0;
    this.head = 0;
    this.bytes = 0;
    if (this.paused) {
      this.paused = false;
      this.control.resume();
    }
  }

  private wake(): void {
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.();
  }

  /**
   * The next frame if one is queued, without waiting (undefined otherwise); throws the failure like `next()`.
   * A consumer working through a backlog takes frames this way, with no promise per frame.
   */
  poll(): ServerFrame | undefined {
    if (this.error) throw this.error;
    return this.head < this.frames.length ? this.take() : undefined;
  }

  private take(): ServerFrame {
    const frame = this.frames[this.head]!;
    this.frames[this.head] = undefined as unknown as ServerFrame;
    this.head++;
    if (this.head > 1024 && this.head * 2 > this.frames.length) {
      this.frames.splice(0, this.head);
      this.head = 0;
    }
    this.bytes -= queuedCost(frame);
    if (this.paused && this.bytes <= this.lowWater) {
      this.paused = false;
      this.control.resume();
    }
    return frame;
  }

  /** The next frame, `'timeout'` after `timeoutMs` without one, or `'ended'` when the stream is over. */
  async next(timeoutMs: number): Promise<NextFrame> {
    for (;;) {
      if (this.error) throw this.error;
      if (this.head < this.frames.length) return this.take();
      if (this.isEnded) return 'ended';
      if (timeoutMs <= 0) return 'timeout';
      const woke = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => {
          this.waiter = undefined;
          resolve(false);
        }, timeoutMs);
        this.waiter = () => {
          clearTimeout(timer);
          resolve(true);
        };
      });
      if (!woke) return 'timeout';
    }
  }
}
