/**
 * How fast the stores are, measured, for the flush-time estimate that decides when a run stops reading.
 *
 * A run must stop reading early enough that its final flush — intent, uploads, checkpoint, manifest — ends
 * before its deadline. The flush time is estimated from what was measured: S3 request latency (small
 * objects), S3 throughput (large ones) and the checkpoint store's write latency, each an exponentially
 * weighted average. A request that was cancelled at the deadline still teaches something: it took at least
 * that long, so the latency rises and the throughput falls accordingly; and any request the run makes before
 * its first upload (the bucket check) bounds the latency from below. The figures are stored with the
 * checkpoint (and at lease release), so the next run starts from them instead of optimistic priors — a run
 * against a slow store stops reading early enough to make progress, however slow the store is.
 */
import type { StoreSpeed } from '../checkpoint/store.js';

/** Cautious priors for a pipeline that never measured anything: 5 MB/s, 150 ms per S3 request, 100 ms per write. */
const PRIOR: StoreSpeed = { uploadBytesPerMs: 5_000, requestLatencyMs: 150, commitLatencyMs: 100 };

/** Objects below this size measure latency; larger ones throughput. */
const LATENCY_OBJECT_BYTES = 256 * 1024;

/** Weight of a new sample in the moving averages: recent conditions matter most. */
const NEW_SAMPLE_WEIGHT = 0.3;

export class StoreSpeedMeter {
  private uploadBytesPerMs: number;
  private requestLatencyMs: number;
  private commitLatencyMs: number;
  private uploadSamples = 0;
  private commitSamples = 0;

  constructor(remembered?: StoreSpeed) {
    const start = remembered ?? PRIOR;
    this.uploadBytesPerMs = start.uploadBytesPerMs;
    this.requestLatencyMs = start.requestLatencyMs;
    this.commitLatencyMs = start.commitLatencyMs;
  }

  private blend(current: number, sample: number, first: boolean): number {
    return first ? sample : current * (1 - NEW_SAMPLE_WEIGHT) + sample * NEW_SAMPLE_WEIGHT;
  }

  /** A completed upload (or other S3 request) of `bytes` that took `elapsedMs`. */
  recordUpload(bytes: number, elapsedMs: number): void {
    const elapsed = Math.max(1, elapsedMs);
    const first = this.uploadSamples === 0;
    if (bytes < LATENCY_OBJECT_BYTES)
      this.requestLatencyMs = this.blend(this.requestLatencyMs, elapsed, first);
    else {
      const rate = bytes / Math.max(1, elapsed - this.requestLatencyMs);
      this.uploadBytesPerMs = this.blend(this.uploadBytesPerMs, rate, first);
    }
    this.uploadSamples++;
  }

  /**
   * A request without a body (the bucket check) took `elapsedMs`: a small upload takes at least as long. Raises
   * the latency to it, never lowers it, and is no sample of its own (the next upload's still counts in full).
   */
  recordRequestAtLeast(elapsedMs: number): void {
    this.requestLatencyMs = Math.max(this.requestLatencyMs, elapsedMs);
  }

  /** An upload of `bytes` cancelled after `elapsedMs`: it would have taken longer than that. */
  recordUnfinishedUpload(bytes: number, elapsedMs: number): void {
    if (bytes < LATENCY_OBJECT_BYTES) this.requestLatencyMs = Math.max(this.requestLatencyMs, elapsedMs);
    else this.uploadBytesPerMs = Math.min(this.uploadBytesPerMs, bytes / Math.max(1, elapsedMs));
  }

  /** A completed checkpoint-store write. */
  recordCommit(elapsedMs: number): void {
    this.commitLatencyMs = this.blend(this.commitLatencyMs, Math.max(1, elapsedMs), this.commitSamples === 0);
    this.commitSamples++;
  }

  /** A checkpoint-store write cancelled after `elapsedMs`. */
  recordUnfinishedCommit(elapsedMs: number): void {
    this.commitLatencyMs = Math.max(this.commitLatencyMs, elapsedMs);
  }

  /** Time to upload `objects` objects holding `bytes`, `concurrency` at a time. */
  uploadMs(objects: number, bytes: number, concurrency: number): number {
    if (objects === 0) return 0;
    return Math.ceil(objects / concurrency) * this.requestLatencyMs + bytes / this.uploadBytesPerMs;
  }

  get requestMs(): number {
    return this.requestLatencyMs;
  }

  get commitMs(): number {
    return this.commitLatencyMs;
  }

  snapshot(): StoreSpeed {
    return {
      uploadBytesPerMs: this.uploadBytesPerMs,
      requestLatencyMs: this.requestLatencyMs,
      commitLatencyMs: this.commitLatencyMs,
    };
  }
}
