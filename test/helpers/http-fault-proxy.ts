/**
 * An HTTP reverse proxy for fault tests, in front of the local S3 (s3rver) or DynamoDB (dynalite): point the
 * AWS SDK's endpoint at `endpoint` and every request is forwarded as is — method, URL, every header
 * (including Host, which SigV4 signs) and the body, streamed both ways — unless a fault rule matches.
 *
 * Rules are checked in the order they were injected; the first one that matches and has uses left applies
 * and uses one up. Faults:
 * - `status`: answer with this status/body/headers, never reaching the target (see `s3Error`, `dynamoError`);
 * - `delay`: wait (`ms`, or until the clock reads `untilMs`), then forward. With `deliverAbandoned` the body
 *   is read in full first and the request reaches the target after the wait even if the client has given
 *   up meanwhile — bytes already on the wire when a client stopped (or froze) still land;
 * - `reset`: destroy the client's socket without a response;
 * - `reset-mid-request`: reset the client's connection (TCP RST) once `afterBodyBytes` bytes of the body
 *   arrived (at once for 0, at the end for a shorter body); nothing reaches the target;
 * - `after-forward-reset`: forward, let the target answer in full (so the request takes effect), then
 *   destroy the client's socket instead of answering — the "did it happen?" ambiguity;
 * - `hang`: never forward, never answer: the request is held until the client gives up or the proxy stops.
 * For `status`, `reset` and `hang` the request body is read to its end first, so the client always sees the
 * fault after it finished sending (deterministic errors, and keep-alive framing stays intact).
 * A rule's action may also be a function of the request, deciding per request (undefined: no fault).
 *
 * Every request is logged with the MD5 of its body and when it arrived, reached the target and was answered
 * (clock time, and a process-wide event order that totally orders events across proxies of one process), so
 * a test can reconstruct what each process did to the store, and when. With `bufferRequests` the proxy reads
 * each body in full before matching (matchers and the log then see `body`) and keeps the target's answers
 * (`responseBody`); meant for small bodies (DynamoDB's JSON).
 */
import { createHash } from 'node:crypto';
import { Agent, createServer, request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Transform } from 'node:stream';
import { systemClock } from '../../src/support/deadline.js';

export interface ProxiedRequest {
  readonly method: string;
  /** The path as sent on the wire (still percent-encoded). */
  readonly path: string;
  /** The query string without the leading `?` ('' when none). */
  readonly query: string;
  readonly headers: IncomingHttpHeaders;
  /** The whole request body, when the proxy buffers requests (`bufferRequests`). */
  readonly body?: Buffer;
}

export type RequestMatcher = (req: ProxiedRequest) => boolean;

export type FaultAction =
  | { kind: 'status'; status: number; body?: string; headers?: Record<string, string> }
  | { kind: 'delay'; ms?: number; untilMs?: number; deliverAbandoned?: boolean }
  | { kind: 'reset' }
  | { kind: 'reset-mid-request'; afterBodyBytes: number }
  | { kind: 'after-forward-reset' }
  | { kind: 'hang' };

export interface FaultRule {
  match: RequestMatcher;
  /** How many matching requests to fault; default: all of them. */
  times?: number;
  /** The fault, or a function choosing it per request (undefined: forward this one untouched). */
  action: FaultAction | ((req: ProxiedRequest) => FaultAction | undefined);
}

/** When something happened: clock time (ms since the epoch) and the process-wide event order. */
export interface ProxyEvent {
  readonly atMs: number;
  readonly order: number;
}

export interface RequestLog {
  readonly method: string;
  readonly path: string;
  readonly query: string;
  /** DynamoDB's operation header (`x-amz-target`, e.g. `DynamoDB_20120810.PutItem`), if any. */
  readonly target: string | undefined;
  /** S3 CopyObject's source (`x-amz-copy-source`, decoded), if any. */
  readonly copySource: string | undefined;
  /** The fault applied to this request, if any. */
  readonly fault: FaultAction['kind'] | undefined;
  /**
   * The status of the response: the injected one, or the target's (also for `after-forward-reset`, where
   * the client never sees it). Undefined while pending, for resets and hangs, and when the target was
   * unreachable.
   */
  status: number | undefined;
  /** The request's headers arrived. */
  readonly received: ProxyEvent;
  /** The request started on its way to the target (never, for faults that do not forward). */
  forwarded: ProxyEvent | undefined;
  /** The target's response headers arrived (the request took effect). */
  answered: ProxyEvent | undefined;
  /** MD5 (hex) of the body, once it was received in full; undefined if it never was. */
  bodyMd5: string | undefined;
  /** Body bytes received so far. */
  bodyBytes: number;
  /** The body, when the proxy buffers requests. */
  body: Buffer | undefined;
  /**
   * The target's response body, once it arrived in full, when the proxy buffers requests (up to 256 KiB);
   * undefined for injected answers.
   */
  responseBody: string | undefined;
}

export interface HttpFaultProxyOptions {
  /** The server to forward to, e.g. `http://127.0.0.1:4569`. */
  readonly target: string;
  /**
   * Read every request body in full before matching, and keep it and the target's response body in the log
   * (small bodies only).
   */
  readonly bufferRequests?: boolean;
}

const MAX_RECORDED_RESPONSE = 256 * 1024;

/** Collects a stream's text as it flows by (without consuming it), up to MAX_RECORDED_RESPONSE bytes. */
function tapText(stream: NodeJS.ReadableStream, done: (text: string) => void): void {
  const chunks: Buffer[] = [];
  let size = 0;
  stream.on('data', (chunk: Buffer) => {
    if (size < MAX_RECORDED_RESPONSE) chunks.push(chunk);
    size += chunk.length;
  });
  stream.on('end', () => done(Buffer.concat(chunks).subarray(0, MAX_RECORDED_RESPONSE).toString('utf8')));
}

export interface HttpFaultProxy {
  /** Base URL for the SDK's `endpoint`. */
  readonly endpoint: string;
  /** Every request so far, oldest first (a copy; entries are filled in as the requests progress). */
  requests(): RequestLog[];
  inject(rule: FaultRule): void;
  /** Removes every rule (the request log is kept). */
  clear(): void;
  stop(): Promise<void>;
}

let eventOrder = 0;

/** Now, on the clock slotlake uses, with the next process-wide event order. */
export function proxyEvent(): ProxyEvent {
  return { atMs: systemClock.nowMs(), order: ++eventOrder };
}

// Hop-by-hop headers belong to one connection, not to the request; everything else is passed on verbatim.
// `expect` is answered here (Node sends the 100 Continue) and is never signed by SigV4.
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'upgrade', 'expect']);

function endToEndHeaders(raw: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i] as string;
    if (!HOP_BY_HOP.has(name.toLowerCase())) out.push(name, raw[i + 1] as string);
  }
  return out;
}

interface ActiveRule {
  readonly rule: FaultRule;
  remaining: number;
}

function decodeHeader(value: string | string[] | undefined): string | undefined {
  if (typeof value !== 'string') return undefined;
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}

export async function startHttpFaultProxy(options: HttpFaultProxyOptions): Promise<HttpFaultProxy> {
  const target = new URL(options.target);
  if (target.protocol !== 'http:') throw new Error(`http fault proxy: only http targets (${options.target})`);
  const targetPort = Number(target.port || 80);
  // A fresh upstream connection per request: reusing one that the target is just closing (its 5 s idle
  // timeout) would turn into a spurious 502 — an injected fault nobody asked for.
  const agent = new Agent({ keepAlive: false });
  const rules: ActiveRule[] = [];
  const log: RequestLog[] = [];
  const timers = new Set<NodeJS.Timeout>();
  let stopped = false;

  /** Counts and hashes the body as it passes; records the MD5 once it ended. */
  const hashing = (entry: RequestLog): Transform => {
    const hash = createHash('md5');
    return new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        hash.update(chunk);
        entry.bodyBytes += chunk.length;
        callback(null, chunk);
      },
      flush(callback) {
        entry.bodyMd5 = hash.digest('hex');
        callback();
      },
    });
  };

  /** Reads the whole body (hashing it); undefined when the client went away first. */
  const readBody = (req: IncomingMessage, entry: RequestLog): Promise<Buffer | undefined> =>
    new Promise((resolve) => {
      if (entry.body !== undefined) {
        resolve(entry.body);
        return;
      }
      const chunks: Buffer[] = [];
      const tap = hashing(entry);
      tap.on('data', (chunk: Buffer) => chunks.push(chunk));
      tap.on('end', () => resolve(Buffer.concat(chunks)));
      req.on('error', () => resolve(undefined));
      req.on('close', () => {
        if (!req.complete) resolve(undefined);
      });
      req.pipe(tap);
    });

  const wait = (ms: number): Promise<void> =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(
        () => {
          timers.delete(timer);
          resolve();
        },
        Math.max(0, ms),
      );
      timers.add(timer);
    });

  /**
   * Sends the request to the target and its answer back. `body`: the already-read body (else the request
   * is streamed through). `resetAfter`: destroy the client's socket instead of answering. `detached`: the
   * client may be gone; the request still goes to the target in full.
   */
  const forward = (
    req: IncomingMessage,
    res: ServerResponse,
    entry: RequestLog,
    mode: { body?: Buffer; resetAfter?: boolean; detached?: boolean },
  ) => {
    if (stopped) return;
    entry.forwarded = proxyEvent();
    const upstream = httpRequest({
      host: target.hostname,
      port: targetPort,
      method: req.method,
      path: req.url,
      headers: endToEndHeaders(req.rawHeaders),
      agent,
    });
    const clientGone = () => res.destroyed || req.socket.destroyed;
    upstream.on('response', (answer) => {
      entry.answered = proxyEvent();
      entry.status = answer.statusCode;
      if (options.bufferRequests) tapText(answer, (text) => (entry.responseBody = text));
      if (mode.resetAfter || clientGone()) {
        answer.resume();
        if (mode.resetAfter) {
          answer.on('end', () => req.socket.destroy());
          answer.on('error', () => req.socket.destroy());
        }
        return;
      }
      res.writeHead(answer.statusCode ?? 502, answer.statusMessage, endToEndHeaders(answer.rawHeaders));
      answer.pipe(res);
      answer.on('error', () => res.destroy());
    });
    upstream.on('error', (error) => {
      if (res.headersSent || mode.resetAfter || clientGone()) {
        res.destroy();
        return;
      }
      entry.status = undefined;
      res.writeHead(502, { 'content-type': 'text/plain' });
      res.end(`http fault proxy: target ${options.target} failed: ${error.message}\n`);
    });
    // The client went away before the answer was complete: abandon the upstream request too — unless the
    // request was already read in full and is delivered regardless.
    res.on('close', () => {
      if (!res.writableFinished && !mode.resetAfter && !mode.detached) upstream.destroy();
    });
    if (mode.body !== undefined) upstream.end(mode.body);
    else req.pipe(hashing(entry)).pipe(upstream);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q === -1 ? url : url.slice(0, q);
    const query = q === -1 ? '' : url.slice(q + 1);
    const targetHeader = req.headers['x-amz-target'];
    const entry: RequestLog = {
      method: req.method ?? 'GET',
      path,
      query,
      target: typeof targetHeader === 'string' ? targetHeader : undefined,
      copySource: decodeHeader(req.headers['x-amz-copy-source']),
      fault: undefined,
      status: undefined,
      received: proxyEvent(),
      forwarded: undefined,
      answered: undefined,
      bodyMd5: undefined,
      bodyBytes: 0,
      body: undefined,
      responseBody: undefined,
    };
    log.push(entry);
    if (options.bufferRequests) {
      const body = await readBody(req, entry);
      if (body === undefined) return;
      entry.body = body;
    }
    const info: ProxiedRequest = {
      method: entry.method,
      path,
      query,
      headers: req.headers,
      ...(entry.body !== undefined ? { body: entry.body } : {}),
    };

    let action: FaultAction | undefined;
    const active = rules.find((candidate) => candidate.remaining > 0 && candidate.rule.match(info));
    if (active) {
      active.remaining--;
      action = typeof active.rule.action === 'function' ? active.rule.action(info) : active.rule.action;
    }
    (entry as { fault: FaultAction['kind'] | undefined }).fault = action?.kind;

    switch (action?.kind) {
      case undefined:
        forward(req, res, entry, { ...(entry.body !== undefined ? { body: entry.body } : {}) });
        return;
      case 'status': {
        await readBody(req, entry);
        const body = action.body ?? '';
        entry.status = action.status;
        res.writeHead(action.status, {
          'content-length': String(Buffer.byteLength(body)),
          ...action.headers,
        });
        res.end(body);
        return;
      }
      case 'delay': {
        const body = action.deliverAbandoned ? await readBody(req, entry) : entry.body;
        if (action.deliverAbandoned && body === undefined) return;
        const ms = action.untilMs !== undefined ? action.untilMs - systemClock.nowMs() : (action.ms ?? 0);
        await wait(ms);
        if (action.deliverAbandoned || !req.socket.destroyed)
          forward(req, res, entry, {
            ...(body !== undefined ? { body } : {}),
            detached: action.deliverAbandoned === true,
          });
        return;
      }
      case 'reset':
        await readBody(req, entry);
        req.socket.destroy();
        return;
      case 'reset-mid-request': {
        const limit = action.afterBodyBytes;
        const cut = () => req.socket.resetAndDestroy();
        if (limit <= 0 || entry.body !== undefined) {
          cut();
          return;
        }
        req.on('data', (chunk: Buffer) => {
          entry.bodyBytes += chunk.length;
          if (entry.bodyBytes >= limit) cut();
        });
        req.on('end', cut);
        req.on('error', () => undefined);
        return;
      }
      case 'after-forward-reset':
        forward(req, res, entry, {
          ...(entry.body !== undefined ? { body: entry.body } : {}),
          resetAfter: true,
        });
        return;
      case 'hang':
        await readBody(req, entry);
        return;
    }
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      if (res.headersSent) res.destroy();
      else {
        res.writeHead(500, { 'content-type': 'text/plain' });
        res.end(`http fault proxy: ${error instanceof Error ? error.message : String(error)}\n`);
      }
    });
  });
  server.on('clientError', (_error, socket) => socket.destroy());
  // Keep-alive towards the client: never close an idle connection first (the SDK could be sending the next
  // request on it at that moment and see ECONNRESET). The client closes its connections, or stop() does.
  server.keepAliveTimeout = 600_000;
  // A held request (`hang`, a long `delay`) must not be cut by Node's own request timeout.
  server.requestTimeout = 0;

  const port = await new Promise<number>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      if (address === null || typeof address === 'string') reject(new Error('http fault proxy: no port'));
      else resolve(address.port);
    });
  });

  return {
    endpoint: `http://127.0.0.1:${port}`,
    requests: () => [...log],
    inject(rule: FaultRule) {
      const times = rule.times ?? Infinity;
      if (!(times >= 0)) throw new RangeError(`http fault proxy: bad times ${times}`);
      rules.push({ rule, remaining: times });
    },
    clear() {
      rules.length = 0;
    },
    stop() {
      stopped = true;
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      return new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
        agent.destroy();
      });
    },
  };
}

/** A logged request as matchers see it (headers: only DynamoDB's operation), to reuse matchers on the log. */
export function asProxied(request: RequestLog): ProxiedRequest {
  return {
    method: request.method,
    path: request.path,
    query: request.query,
    headers: request.target === undefined ? {} : { 'x-amz-target': request.target },
    ...(request.body !== undefined ? { body: request.body } : {}),
  };
}

// ---- ready-made faults -------------------------------------------------------------------------------

/** An S3 error response, as S3 sends it (e.g. `s3Error('SlowDown', 503)`, `s3Error('InternalError', 500)`). */
export function s3Error(code: string, status: number, message = `injected ${code}`): FaultAction {
  return {
    kind: 'status',
    status,
    body:
      '<?xml version="1.0" encoding="UTF-8"?>\n' +
      `<Error><Code>${code}</Code><Message>${message}</Message><RequestId>x</RequestId></Error>`,
    headers: { 'content-type': 'application/xml', 'x-amz-request-id': 'x' },
  };
}

/**
 * A DynamoDB error response, as DynamoDB sends it (e.g. `dynamoError('ProvisionedThroughputExceededException')`,
 * `dynamoError('InternalServerError', 500)`).
 */
export function dynamoError(type: string, status = 400, message = `injected ${type}`): FaultAction {
  return {
    kind: 'status',
    status,
    body: JSON.stringify({ __type: `com.amazonaws.dynamodb.v20120810#${type}`, message }),
    headers: { 'content-type': 'application/x-amz-json-1.0', 'x-amzn-requestid': 'x' },
  };
}

// ---- matchers ----------------------------------------------------------------------------------------

/** The object key of a path-style S3 request (`/bucket/key`), decoded; undefined for bucket-level requests. */
export function s3Key(req: { readonly path: string }): string | undefined {
  const slash = req.path.indexOf('/', 1);
  if (slash === -1 || slash === req.path.length - 1) return undefined;
  const raw = req.path.slice(slash + 1);
  try {
    return decodeURIComponent(raw);
  } catch {
    return raw;
  }
}

function hasParams(req: ProxiedRequest, ...names: string[]): boolean {
  const params = new URLSearchParams(req.query);
  return names.every((name) => params.has(name));
}

function keyMatches(req: ProxiedRequest, keySubstring: string | undefined): boolean {
  const key = s3Key(req);
  return key !== undefined && (keySubstring === undefined || key.includes(keySubstring));
}

/** PutObject (a PUT of an object key that is not an UploadPart), optionally only keys containing a string. */
export function isS3Put(keySubstring?: string): RequestMatcher {
  return (req) =>
    req.method === 'PUT' && !hasParams(req, 'partNumber', 'uploadId') && keyMatches(req, keySubstring);
}

/** UploadPart of a multipart upload (`PUT ?partNumber=&uploadId=`). */
export function isS3MultipartPart(keySubstring?: string): RequestMatcher {
  return (req) =>
    req.method === 'PUT' && hasParams(req, 'partNumber', 'uploadId') && keyMatches(req, keySubstring);
}

/** CreateMultipartUpload (`POST ?uploads`). */
export function isS3MultipartCreate(keySubstring?: string): RequestMatcher {
  return (req) => req.method === 'POST' && hasParams(req, 'uploads') && keyMatches(req, keySubstring);
}

/** CompleteMultipartUpload (`POST ?uploadId=`). */
export function isS3MultipartComplete(keySubstring?: string): RequestMatcher {
  return (req) => req.method === 'POST' && hasParams(req, 'uploadId') && keyMatches(req, keySubstring);
}

/**
 * AbortMultipartUpload (`DELETE ?uploadId=`). s3rver does not implement it (405 MethodNotAllowed), and
 * lib-storage (leavePartsOnError: false) then throws the abort's error instead of the part's; answer it
 * with `{ kind: 'status', status: 204 }` to get real S3's behaviour.
 */
export function isS3MultipartAbort(keySubstring?: string): RequestMatcher {
  return (req) => req.method === 'DELETE' && hasParams(req, 'uploadId') && keyMatches(req, keySubstring);
}

/** GetObject / HeadObject of a key. */
export function isS3Get(keySubstring?: string): RequestMatcher {
  return (req) => (req.method === 'GET' || req.method === 'HEAD') && keyMatches(req, keySubstring);
}

export type DynamoOp =
  | 'GetItem'
  | 'PutItem'
  | 'UpdateItem'
  | 'DeleteItem'
  | 'Query'
  | 'Scan'
  | 'BatchGetItem'
  | 'BatchWriteItem'
  | 'TransactGetItems'
  | 'TransactWriteItems'
  | 'CreateTable'
  | 'DescribeTable'
  | 'UpdateTable'
  | 'DeleteTable'
  | 'ListTables';

/** A DynamoDB operation, by its `x-amz-target` header (`DynamoDB_20120810.<op>`). */
export function isDynamoOp(...ops: DynamoOp[]): RequestMatcher {
  const targets = new Set(ops.map((op) => `DynamoDB_20120810.${op}`));
  return (req) => {
    const header = req.headers['x-amz-target'];
    return typeof header === 'string' && targets.has(header);
  };
}

/** The JSON body of a DynamoDB request, when the proxy buffers requests (`bufferRequests`). */
export interface DynamoRequestBody {
  readonly TableName?: string;
  readonly UpdateExpression?: string;
  readonly ConditionExpression?: string;
  readonly ExpressionAttributeNames?: Record<string, string>;
  readonly ExpressionAttributeValues?: Record<string, { S?: string; N?: string; SS?: string[] }>;
}

export function dynamoBody(req: { readonly body?: Buffer | undefined }): DynamoRequestBody | undefined {
  if (req.body === undefined || req.body.length === 0) return undefined;
  try {
    return JSON.parse(req.body.toString('utf8')) as DynamoRequestBody;
  } catch {
    return undefined;
  }
}

/** Splits `text` at top-level commas (not inside parentheses). */
function splitTopLevel(text: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '(') depth++;
    else if (c === ')') depth--;
    else if (c === ',' && depth === 0) {
      parts.push(text.slice(start, i));
      start = i + 1;
    }
  }
  parts.push(text.slice(start));
  return parts.map((part) => part.trim()).filter(Boolean);
}

/**
 * What an UpdateItem's expression changes: the attribute names (aliases resolved) per clause. An
 * expression is `SET a = :x, b = :y REMOVE c ADD d :z DELETE e :w`, clauses in any order.
 */
export function updateClauses(
  body: DynamoRequestBody,
): Record<'SET' | 'REMOVE' | 'ADD' | 'DELETE', string[]> {
  const clauses = {
    SET: [] as string[],
    REMOVE: [] as string[],
    ADD: [] as string[],
    DELETE: [] as string[],
  };
  const expression = body.UpdateExpression ?? '';
  const names = body.ExpressionAttributeNames ?? {};
  const pattern = /\b(SET|REMOVE|ADD|DELETE)\b/gi;
  const marks = [...expression.matchAll(pattern)];
  marks.forEach((mark, i) => {
    const clause = mark[1]!.toUpperCase() as keyof typeof clauses;
    const text = expression.slice(mark.index! + mark[0].length, marks[i + 1]?.index ?? expression.length);
    for (const item of splitTopLevel(text)) {
      const path = item.split(/[\s=]/)[0]!;
      clauses[clause].push(names[path] ?? path);
    }
  });
  return clauses;
}

/**
 * A DynamoDB UpdateItem whose JSON body sets exactly `attributes` and nothing else (no REMOVE, ADD or
 * DELETE) — e.g. a lease renewal sets only `leaseExpiresAt`. Needs a proxy with `bufferRequests`.
 */
export function isDynamoUpdateSettingOnly(...attributes: string[]): RequestMatcher {
  const wanted = [...attributes].sort().join(',');
  return (req) => {
    if (!isDynamoOp('UpdateItem')(req)) return false;
    const body = dynamoBody(req);
    if (!body) return false;
    const clauses = updateClauses(body);
    return (
      clauses.REMOVE.length === 0 &&
      clauses.ADD.length === 0 &&
      clauses.DELETE.length === 0 &&
      [...clauses.SET].sort().join(',') === wanted
    );
  };
}
