/**
 * The object store: where the archive's objects and manifests live (S3, or an in-memory one in tests).
 *
 * An object exists only once its write completed (S3's PUT and CompleteMultipartUpload are atomic), so a
 * crash mid-write leaves nothing partial. Every call takes an optional AbortSignal: the run aborts what is in
 * flight when its deadline's hard end or its lease's fence arrives, so that no write of a run can land after
 * the run stopped owning the pipeline (docs/exactly-once.md, "Fenced uploads"). A signal fires on a timer,
 * though, and a process frozen between a check and its send resumes with its timers overdue: so the run also
 * arms a write fence, which the store checks at the last moment a write can still be stopped (for S3, at each
 * write to a socket). Failures are SlotlakeErrors whose origin is `object-store`; an aborted call rejects with
 * the signal's reason.
 */

export interface ObjectStore {
  /** `s3://bucket/prefix` or similar, for messages. */
  readonly location: string;
  /** The full key of `relative` under the configured prefix. */
  key(relative: string): string;
  /** Uploads a local file to `key`; resolves once the store has it durably. */
  uploadFile(
    path: string,
    key: string,
    bytes: number,
    contentType: string,
    signal?: AbortSignal,
  ): Promise<void>;
  /** Writes a small text object. */
  putText(key: string, body: string, contentType: string, signal?: AbortSignal): Promise<void>;
  /** Reads a text object; undefined when it does not exist. */
  getText(key: string, signal?: AbortSignal): Promise<string | undefined>;
  /** Copies an object within the store (the manifest from staging into place). */
  copy(fromKey: string, toKey: string, signal?: AbortSignal): Promise<void>;
  /** Deletes one object; deleting a missing key succeeds. */
  deleteKey(key: string, signal?: AbortSignal): Promise<void>;
  /** True when `key` exists. */
  exists(key: string, signal?: AbortSignal): Promise<boolean>;
  /** Every key under `prefix` (a full key prefix), in key order. */
  list(prefix: string, signal?: AbortSignal): Promise<string[]>;
  /** Fails fast with a clear error when the bucket is missing or not ours to write. */
  checkBucket(): Promise<void>;
  /**
   * From now on every call is refused (fails with the returned error) when `refusal` returns one at the last
   * moment the call can still be stopped from reaching the store — not merely when the call starts.
   */
  fenceWrites(refusal: () => Error | undefined): void;
}
