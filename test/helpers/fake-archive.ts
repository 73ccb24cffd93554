/**
 * An in-memory stand-in for S3Archive (src/sink/s3.ts) for fast unit tests: same `key()`, `uploadFile()`
 * and `putText()` shape, no network. Uploaded files are read and gunzipped at upload time (the spool file
 * is removed afterwards), and every call is logged in `events`, in order, so tests can check the commit
 * sequence. Failures are injected per key.
 */
import { readFile } from 'node:fs/promises';
import { gunzipSync } from 'node:zlib';
import type { S3Archive, UploadedObject } from '../../src/sink/s3.js';

export interface FakeUpload {
  readonly key: string;
  /** The gunzipped content of the uploaded file. */
  readonly content: string;
  /** The size the caller announced. */
  readonly bytes: number;
  /** The size of the file actually read. */
  readonly fileBytes: number;
  readonly contentType: string;
}

export interface FakeText {
  readonly key: string;
  /** The exact text written. */
  readonly body: string;
  readonly contentType: string;
}

export interface FakeArchiveOptions {
  readonly prefix?: string;
  /** A shared event log (e.g. with a checkpoint store and an ack callback); a fresh one by default. */
  readonly events?: string[];
}

export class FakeArchive {
  readonly prefix: string;
  /** `upload <key>`, `upload-failed <key>`, `put-text <key>`, `put-text-failed <key>`, in call order. */
  readonly events: string[];
  /** Every successful upload, in completion order, duplicates kept (an overwrite would show here). */
  readonly uploads: FakeUpload[] = [];
  /** The latest upload per key. */
  readonly objects = new Map<string, FakeUpload>();
  /** Every successful putText, in call order, duplicates kept (a rewrite would show here). */
  readonly texts: FakeText[] = [];
  /** The latest `application/json` putText body per key, parsed (a body that is not JSON fails the put). */
  readonly json = new Map<string, unknown>();
  /** Return an error to make the upload of `key` fail with it. */
  failUpload: ((key: string) => unknown) | undefined;
  /** Return an error to make putText of `key` fail with it. */
  failPutText: ((key: string) => unknown) | undefined;

  constructor(options: FakeArchiveOptions = {}) {
    this.prefix = options.prefix ?? '';
    this.events = options.events ?? [];
  }

  key(relative: string): string {
    return `${this.prefix}${relative}`;
  }

  async uploadFile(path: string, key: string, bytes: number, contentType: string): Promise<UploadedObject> {
    const failure = this.failUpload?.(key);
    if (failure !== undefined) {
      this.events.push(`upload-failed ${key}`);
      throw failure;
    }
    const raw = await readFile(path);
    const upload: FakeUpload = {
      key,
      content: gunzipSync(raw).toString('utf8'),
      bytes,
      fileBytes: raw.byteLength,
      contentType,
    };
    this.uploads.push(upload);
    this.objects.set(key, upload);
    this.events.push(`upload ${key}`);
    return { key, bytes };
  }

  async putText(key: string, body: string, contentType: string): Promise<void> {
    const failure = this.failPutText?.(key);
    if (failure !== undefined) {
      this.events.push(`put-text-failed ${key}`);
      throw failure;
    }
    if (contentType === 'application/json') {
      let parsed: unknown;
      try {
        parsed = JSON.parse(body) as unknown;
      } catch (error) {
        throw new Error(`FakeArchive: putText of ${key} as application/json with a body that is not JSON`, {
          cause: error,
        });
      }
      this.json.set(key, parsed);
    }
    this.texts.push({ key, body, contentType });
    this.events.push(`put-text ${key}`);
  }

  /** The latest text written to `key`, if any. */
  text(key: string): FakeText | undefined {
    return this.texts.findLast((text) => text.key === key);
  }

  /** This fake where an S3Archive is expected. */
  asS3Archive(): S3Archive {
    return this as unknown as S3Archive;
  }
}

/**
 * Waits until `condition()` holds, checking once per event-loop turn; fails after `limitMs`.
 * For conditions reached by background I/O (a file written, an upload settled), not for time passing.
 */
export async function waitFor(condition: () => boolean, what: string, limitMs = 5_000): Promise<void> {
  const started = performance.now();
  while (!condition()) {
    if (performance.now() - started > limitMs)
      throw new Error(`timed out after ${limitMs} ms waiting for ${what}`);
    await new Promise((resolve) => setImmediate(resolve));
  }
}
