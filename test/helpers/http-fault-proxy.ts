/**
 * An HTTP reverse proxy for fault tests, in front of the local S3 (s3rver) or DynamoDB (dynalite): point the
 * AWS SDK's endpoint at `endpoint` and every request is forwarded as is — method, URL, every header
 * (including Host, which SigV4 signs) and the body, streamed both ways — unless a fault rule matches.
 *
 * Rules are checked in the order they were injected; the first one that matches and has uses left applies
 * and uses one up. Faults:
 * - `status`: answer with this status/body/headers, never reaching the target (see `s3Error`, `dynamoError`);
 * - `delay`: wait, then forward;
 * - `reset`: destroy the client's socket without a response;
 * - `after-forward-reset`: forward, let the target answer in full (so the request takes effect), then
 *   destroy the client's socket instead of answering — the "did it happen?" ambiguity.
 * For `status` and the resets the request body is read to its end first, so the client always sees the
 * fault after it finished sending (deterministic errors, and keep-alive framing stays intact).
 */
import { Agent, createServer, request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { finished } from 'node:stream/promises';

export interface ProxiedRequest {
  readonly method: string;
  /** The path as sent on the wire (still percent-encoded). */
  readonly path: string;
  /** The query string without the leading `?` ('' when none). */
  readonly query: string;
  readonly headers: IncomingHttpHeaders;
  /** The whole request body, when the proxy was started with `recordBodies` (read before matching). */
  readonly body?: string;
}

export type RequestMatcher = (req: ProxiedRequest) => boolean;

export type FaultAction =
  | { kind: 'status'; status: number; body?: string; headers?: Record<string, string> }
  | { kind: 'delay'; ms: number }
  | { kind: 'reset' }
  | { kind: 'after-forward-reset' };

export interface FaultRule {
  match: RequestMatcher;
  /** How many matching requests to fault; default: all of them. */
  times?: number;
  action: FaultAction;
}

export interface RequestLog {
  readonly method: string;
  readonly path: string;
  readonly query: string;
  /** DynamoDB's operation header (`x-amz-target`, e.g. `DynamoDB_20120810.PutItem`), if any. */
  readonly target: string | undefined;
  /** The fault applied to this request, if any. */
  readonly fault: FaultAction['kind'] | undefined;
  /**
   * The status of the response: the injected one, or the target's (also for `after-forward-reset`, where
   * the client never sees it). Undefined while pending, for `reset`, and when the target was unreachable.
   */
  status: number | undefined;
  /**
   * When the proxy had the request (`performance.now()` of the test process; with `recordBodies`, after
   * reading its body): the target sees it only after this.
   */
  readonly receivedAtMs: number;
  /** When the answer's status arrived from the target, or was injected; undefined while pending. */
  answeredAtMs: number | undefined;
  /** The request body (with `recordBodies`, up to 256 KiB). */
  body: string | undefined;
  /** The target's response body (with `recordBodies`, up to 256 KiB); undefined for injected answers. */
  responseBody: string | undefined;
}

export interface HttpFaultProxyOptions {
  /** The server to forward to, e.g. `http://127.0.0.1:4569`. */
  readonly target: string;
  /**
   * Read each request body before matching (matchers see `body`) and keep request and response bodies in
   * the log — for small APIs such as DynamoDB's JSON; off by default (bodies stream through).
   */
  readonly recordBodies?: boolean;
}

const MAX_RECORDED_BODY = 256 * 1024;

/** Collects a stream's text as it flows by (without consuming it), up to MAX_RECORDED_BODY. */
function tap(stream: NodeJS.ReadableStream, done: (text: string) => void): void {
  const chunks: Buffer[] = [];
  let size = 0;
  stream.on('data', (chunk: Buffer) => {
    if (size < MAX_RECORDED_BODY) chunks.push(chunk);
    size += chunk.length;
  });
  stream.on('end', () => done(Buffer.concat(chunks).toString('utf8').slice(0, MAX_RECORDED_BODY)));
}

export interface HttpFaultProxy {
  /** Base URL for the SDK's `endpoint`. */
  readonly endpoint: string;
  /** Every request so far, oldest first (a copy; `status` is filled in as responses happen). */
  requests(): RequestLog[];
  inject(rule: FaultRule): void;
  /** Removes every rule (the request log is kept). */
  clear(): void;
  stop(): Promise<void>;
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

  const drain = async (req: IncomingMessage): Promise<void> => {
    req.resume();
    await finished(req).catch(() => undefined);
  };

  const forward = (
    req: IncomingMessage,
    res: ServerResponse,
    entry: RequestLog,
    resetAfter: boolean,
    body: Buffer | undefined,
  ) => {
    const upstream = httpRequest({
      host: target.hostname,
      port: targetPort,
      method: req.method,
      path: req.url,
      headers: endToEndHeaders(req.rawHeaders),
      agent,
    });
    upstream.on('response', (answer) => {
      entry.status = answer.statusCode;
      entry.answeredAtMs = performance.now();
      if (options.recordBodies) tap(answer, (text) => (entry.responseBody = text));
      if (resetAfter) {
        answer.resume();
        answer.on('end', () => req.socket.destroy());
        answer.on('error', () => req.socket.destroy());
        return;
      }
      res.writeHead(answer.statusCode ?? 502, answer.statusMessage, endToEndHeaders(answer.rawHeaders));
      answer.pipe(res);
      answer.on('error', () => res.destroy());
    });
    upstream.on('error', (error) => {
      if (res.headersSent || resetAfter) {
        res.destroy();
        return;
      }
      entry.status = undefined;
      res.writeHead(502, { 'content-type': 'text/plain' });
      res.end(`http fault proxy: target ${options.target} failed: ${error.message}\n`);
    });
    // The client went away before the answer was complete: abandon the upstream request too.
    res.on('close', () => {
      if (!res.writableFinished && !resetAfter) upstream.destroy();
    });
    if (body) upstream.end(body);
    else req.pipe(upstream);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q === -1 ? url : url.slice(0, q);
    const query = q === -1 ? '' : url.slice(q + 1);
    let body: Buffer | undefined;
    if (options.recordBodies) {
      const chunks: Buffer[] = [];
      for await (const chunk of req) chunks.push(chunk as Buffer);
      body = Buffer.concat(chunks);
    }
    const text = body?.toString('utf8');
    const info: ProxiedRequest = {
      method: req.method ?? 'GET',
      path,
      query,
      headers: req.headers,
      ...(text === undefined ? {} : { body: text }),
    };
    const targetHeader = req.headers['x-amz-target'];

    const active = rules.find((candidate) => candidate.remaining > 0 && candidate.rule.match(info));
    if (active) active.remaining--;
    const action = active?.rule.action;
    const entry: RequestLog = {
      method: info.method,
      path,
      query,
      target: typeof targetHeader === 'string' ? targetHeader : undefined,
      fault: action?.kind,
      status: undefined,
      receivedAtMs: performance.now(),
      answeredAtMs: undefined,
      body: text?.slice(0, MAX_RECORDED_BODY),
      responseBody: undefined,
    };
    log.push(entry);

    switch (action?.kind) {
      case undefined:
        forward(req, res, entry, false, body);
        return;
      case 'status': {
        await drain(req);
        const body = action.body ?? '';
        entry.status = action.status;
        entry.answeredAtMs = performance.now();
        res.writeHead(action.status, {
          'content-length': String(Buffer.byteLength(body)),
          ...action.headers,
        });
        res.end(body);
        return;
      }
      case 'delay':
        await new Promise<void>((resolve) => {
          const timer = setTimeout(() => {
            timers.delete(timer);
            resolve();
          }, action.ms);
          timers.add(timer);
        });
        if (!req.socket.destroyed) forward(req, res, entry, false, body);
        return;
      case 'reset':
        await drain(req);
        req.socket.destroy();
        return;
      case 'after-forward-reset':
        forward(req, res, entry, true, body);
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
export function s3Key(req: ProxiedRequest): string | undefined {
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
