/**
 * An in-memory ObjectStore (src/sink/object-store.ts) for fast unit tests: the same interface the S3 store
 * implements, no network. Uploaded files are read (and gunzipped when they are gzip) at upload time — the
 * spool file is removed afterwards — and every call is logged in `events`, in order, so tests can check the
 * commit sequence. Failures are injected per key; an aborted signal rejects a call with its reason, like S3.
 * The write fence (`fenceWrites`) is checked at the moment a write would take effect — after `beforeUpload`,
 * as S3's sockets check it when the bytes leave — and a refused write is logged as `fenced <key>`.
 */
import { readFile } from 'node:fs/promises';
import { gunzipSync } from 'node:zlib';
import type { ObjectStore } from '../../src/sink/object-store.js';

export interface StoredUpload {
  readonly key: string;
  /** The gunzipped content of the uploaded file (the raw bytes as latin1 when it is not gzip). */
  readonly content: string;
  /** The raw bytes. */
  readonly raw: Buffer;
  /** The size the caller announced. */
  readonly bytes: number;
  /** The size of the file actually read. */
  readonly fileBytes: number;
  readonly contentType: string;
}

export interface StoredText {
  readonly key: string;
  /** The exact text written. */
  readonly body: string;
  readonly contentType: string;
}

export interface MemoryObjectStoreOptions {
  readonly prefix?: string;
  /** A shared event log (e.g. with a checkpoint store and an ack callback); a fresh one by default. */
  readonly events?: string[];
}

function aborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw signal.reason;
}

export class MemoryObjectStore implements ObjectStore {
  readonly prefix: string;
  /** `upload <key>`, `upload-failed <key>`, `put-text <key>`, `copy <from> <to>`, `delete <key>`, in call order. */
  readonly events: string[];
  /** Every successful upload, in completion order, duplicates kept (an overwrite would show here). */
  readonly uploads: StoredUpload[] = [];
  /** Every object that exists now: uploads and texts, by key. */
  readonly objects = new Map<string, StoredUpload>();
  /** Every successful putText, in call order, duplicates kept (a rewrite would show here). */
  readonly texts: StoredText[] = [];
  /** The latest `application/json` body per key, parsed (a body that is not JSON fails the put). */
  readonly json = new Map<string, unknown>();
  /** Return an error to make the upload of `key` fail with it. */
  failUpload: ((key: string) => unknown) | undefined;
  /** Return an error to make putText of `key` fail with it. */
  failPutText: ((key: string) => unknown) | undefined;
  /** Return an error to make the copy to `key` fail with it. */
  failCopy: ((toKey: string) => unknown) | undefined;
  /** Awaited before each upload completes (e.g. to hold it until a test releases it). */
  beforeUpload: ((key: string, signal: AbortSignal | undefined) => Promise<void>) | undefined;
  private refusal: (() => Error | undefined) | undefined;

  constructor(options: MemoryObjectStoreOptions = {}) {
    this.prefix = options.prefix ?? '';
    this.events = options.events ?? [];
  }

  get location(): string {
    return `memory://${this.prefix}`;
  }

  key(relative: string): string {
    return `${this.prefix}${relative}`;
  }

  async uploadFile(
    path: string,
    key: string,
    bytes: number,
    contentType: string,
    signal?: AbortSignal,
  ): Promise<void> {
    aborted(signal);
    const failure = this.failUpload?.(key);
    if (failure !== undefined) {
      this.events.push(`upload-failed ${key}`);
      throw failure;
    }
    const raw = await readFile(path);
    aborted(signal);
    await this.beforeUpload?.(key, signal);
    aborted(signal);
    this.fenced(key);
    const gzip = raw.length >= 2 && raw[0] === 0x1f && raw[1] === 0x8b;
    const upload: StoredUpload = {
      key,
      content: gzip ? gunzipSync(raw).toString('utf8') : raw.toString('latin1'),
      raw,
      bytes,
      fileBytes: raw.byteLength,
      contentType,
    };
    this.uploads.push(upload);
    this.objects.set(key, upload);
    this.events.push(`upload ${key}`);
  }

  async putText(key: string, body: string, contentType: string, signal?: AbortSignal): Promise<void> {
    aborted(signal);
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
        throw new Error(
          `MemoryObjectStore: putText of ${key} as application/json with a body that is not JSON`,
          {
            cause: error,
          },
        );
      }
      this.fenced(key);
      this.json.set(key, parsed);
    } else this.fenced(key);
    this.texts.push({ key, body, contentType });
    const raw = Buffer.from(body, 'utf8');
    this.objects.set(key, { key, content: body, raw, bytes: raw.length, fileBytes: raw.length, contentType });
    this.events.push(`put-text ${key}`);
  }

  async getText(key: string, signal?: AbortSignal): Promise<string | undefined> {
    aborted(signal);
    return this.objects.get(key)?.content;
  }

  async copy(fromKey: string, toKey: string, signal?: AbortSignal): Promise<void> {
    aborted(signal);
    const failure = this.failCopy?.(toKey);
    if (failure !== undefined) {
      this.events.push(`copy-failed ${toKey}`);
      throw failure;
    }
    const source = this.objects.get(fromKey);
    if (!source)
      throw Object.assign(new Error(`no such key ${fromKey}`), {
        name: 'NoSuchKey',
        $metadata: { httpStatusCode: 404 },
      });
    this.fenced(toKey);
    this.objects.set(toKey, { ...source, key: toKey });
    if (source.contentType === 'application/json')
      this.json.set(toKey, JSON.parse(source.content) as unknown);
    this.texts.push({ key: toKey, body: source.content, contentType: source.contentType });
    this.events.push(`copy ${fromKey} ${toKey}`);
  }

  async deleteKey(key: string, signal?: AbortSignal): Promise<void> {
    aborted(signal);
    this.fenced(key);
    this.objects.delete(key);
    this.json.delete(key);
    this.events.push(`delete ${key}`);
  }

  async exists(key: string, signal?: AbortSignal): Promise<boolean> {
    aborted(signal);
    return this.objects.has(key);
  }

  async list(prefix: string, signal?: AbortSignal): Promise<string[]> {
    aborted(signal);
    return [...this.objects.keys()].filter((key) => key.startsWith(prefix)).sort();
  }

  async checkBucket(): Promise<void> {}

  fenceWrites(refusal: () => Error | undefined): void {
    this.refusal = refusal;
  }

  /** Throws the fence's refusal, if any: the write of `key` would take effect now. */
  private fenced(key: string): void {
    const refused = this.refusal?.();
    if (refused) {
      this.events.push(`fenced ${key}`);
      throw refused;
    }
  }

  /** The latest text written (or copied) to `key`, if any. */
  text(key: string): StoredText | undefined {
    return this.texts.findLast((text) => text.key === key);
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
