/**
 * The fault-injection proxies used by the fault tests: a TCP proxy (between slotlake and Postgres) and an
 * HTTP fault proxy (between the AWS SDK and s3rver / dynalite). Everything runs in-process on loopback.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  CreateTableCommand,
  DynamoDBClient,
  GetItemCommand,
  PutItemCommand,
  ProvisionedThroughputExceededException,
  UpdateItemCommand,
} from '@aws-sdk/client-dynamodb';
import {
  CopyObjectCommand,
  GetObjectCommand,
  PutObjectCommand,
  S3Client,
  S3ServiceException,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { startLocalDynamo, startLocalS3, type LocalDynamo, type LocalS3 } from '../../src/devstack/aws.js';
import { classify } from '../../src/errors.js';
import { formatLsn } from '../../src/lsn.js';
import { systemClock } from '../../src/support/deadline.js';
import {
  dynamoBody,
  dynamoError,
  isDynamoOp,
  isDynamoUpdateSettingOnly,
  isS3Get,
  isS3MultipartAbort,
  isS3MultipartPart,
  isS3Put,
  s3Error,
  startHttpFaultProxy,
  updateClauses,
  type HttpFaultProxy,
} from '../helpers/http-fault-proxy.js';
import { StatusUpdateRecorder } from '../helpers/pg-wire.js';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';

async function waitFor(condition: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const start = Date.now();
  while (!condition()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

async function listen(server: Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      if (address === null || typeof address === 'string') reject(new Error('no port'));
      else resolve(address.port);
    });
  });
}

/** A client socket that records what it receives and whether it was closed. */
interface Peer {
  readonly socket: Socket;
  received(): Buffer;
  closed(): boolean;
}

async function connectPeer(port: number): Promise<Peer> {
  const socket = createConnection({ host: '127.0.0.1', port });
  const chunks: Buffer[] = [];
  let closed = false;
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  socket.on('error', () => undefined);
  socket.on('close', () => {
    closed = true;
  });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', () => resolve());
    socket.once('error', reject);
  });
  return { socket, received: () => Buffer.concat(chunks), closed: () => closed };
}

describe('tcp proxy', { timeout: 60_000 }, () => {
  // Target servers: `echo` sends back what it gets; `source` sends SOURCE_BYTES on connect and stays open.
  const SOURCE_BYTES = 100_000;
  const sourcePayload = Buffer.alloc(SOURCE_BYTES);
  for (let i = 0; i < SOURCE_BYTES; i++) sourcePayload[i] = i % 251;
  const echoSockets = new Set<Socket>();
  let echoReceived = 0;
  const echo = createServer((socket) => {
    echoSockets.add(socket);
    socket.on('close', () => echoSockets.delete(socket));
    socket.on('error', () => undefined);
    socket.on('data', (chunk: Buffer) => {
      echoReceived += chunk.length;
    });
    socket.pipe(socket);
  });
  // Used only by settle(), so its traffic does not count as the echo server's.
  const ping = createServer((socket) => {
    socket.on('error', () => undefined);
    socket.pipe(socket);
  });
  const source = createServer((socket) => {
    socket.on('error', () => undefined);
    socket.write(sourcePayload);
  });
  let echoPort = 0;
  let sourcePort = 0;
  let pingPort = 0;
  const peers: Peer[] = [];
  const proxies: TcpProxy[] = [];

  const peer = async (port: number) => {
    const p = await connectPeer(port);
    peers.push(p);
    return p;
  };
  const proxy = async (targetPort: number) => {
    const p = await startTcpProxy({ targetHost: '127.0.0.1', targetPort });
    proxies.push(p);
    return p;
  };
  /** Round trips to a bystander server: lets every pending loopback event of this process run. */
  const settle = async () => {
    const direct = await connectPeer(pingPort);
    for (let i = 1; i <= 3; i++) {
      direct.socket.write('.');
      await waitFor(() => direct.received().length === i, 'settle round trip');
    }
    direct.socket.destroy();
  };

  before(
    async () => {
      echoPort = await listen(echo);
      sourcePort = await listen(source);
      pingPort = await listen(ping);
    },
    { timeout: 60_000 },
  );

  after(
    async () => {
      for (const p of peers) p.socket.destroy();
      await Promise.all(proxies.map((p) => p.stop()));
      echo.close();
      source.close();
      ping.close();
      for (const socket of echoSockets) socket.destroy();
    },
    { timeout: 60_000 },
  );

  it('forwards both ways, intact, and counts connections and server bytes', async () => {
    const tcp = await proxy(echoPort);
    assert.equal(tcp.host, '127.0.0.1');
    const client = await peer(tcp.port);
    client.socket.write('hello');
    await waitFor(() => client.received().length === 5, 'echo');
    assert.equal(client.received().toString(), 'hello');
    assert.equal(tcp.connections(), 1);
    assert.equal(tcp.bytesFromServer(), 5);

    const big = Buffer.alloc(1024 * 1024);
    for (let i = 0; i < big.length; i++) big[i] = (i * 7) % 256;
    client.socket.write(big);
    await waitFor(() => client.received().length === 5 + big.length, '1 MiB echo');
    assert.ok(client.received().subarray(5).equals(big));
    assert.equal(tcp.bytesFromServer(), 5 + big.length);

    // A FIN is passed on: the client ending its side ends the whole pair.
    client.socket.end();
    await waitFor(() => client.closed() && tcp.connections() === 0, 'pair closed after FIN');
    assert.equal(tcp.totalConnections(), 1);
  });

  it('cutAll destroys every open pair at once; new connections still work', async () => {
    const tcp = await proxy(echoPort);
    const a = await peer(tcp.port);
    const b = await peer(tcp.port);
    a.socket.write('a');
    b.socket.write('b');
    await waitFor(() => a.received().length === 1 && b.received().length === 1, 'both echo');
    const echoOpen = echoSockets.size;
    tcp.cutAll();
    assert.equal(tcp.connections(), 0);
    await waitFor(() => a.closed() && b.closed(), 'clients closed');
    await waitFor(() => echoSockets.size === echoOpen - 2, 'server side closed');

    const c = await peer(tcp.port);
    c.socket.write('c');
    await waitFor(() => c.received().toString() === 'c', 'echo after cut');
    assert.equal(tcp.totalConnections(), 3);
  });

  it('cutAfterServerBytes delivers exactly n bytes, then drops the pair; it fires once', async () => {
    const tcp = await proxy(sourcePort);
    tcp.cutAfterServerBytes(30_000);
    const cut = await peer(tcp.port);
    await waitFor(() => cut.closed(), 'cut connection closed');
    assert.equal(cut.received().length, 30_000);
    assert.ok(cut.received().equals(sourcePayload.subarray(0, 30_000)));
    assert.equal(tcp.bytesFromServer(), 30_000);
    assert.equal(tcp.connections(), 0);

    const whole = await peer(tcp.port);
    await waitFor(() => whole.received().length === SOURCE_BYTES, 'full payload after the cut');
    assert.ok(whole.received().equals(sourcePayload));
    assert.equal(whole.closed(), false);
  });

  it('cutAfterServerBytes counts bytes over all connections since arming', async () => {
    const tcp = await proxy(sourcePort);
    const before = await peer(tcp.port);
    await waitFor(() => before.received().length === SOURCE_BYTES, 'payload before arming');
    tcp.cutAfterServerBytes(SOURCE_BYTES + 50_000);
    const first = await peer(tcp.port);
    await waitFor(() => first.received().length === SOURCE_BYTES, 'first payload');
    const second = await peer(tcp.port);
    await waitFor(() => second.closed(), 'second connection cut');
    assert.equal(second.received().length, 50_000);
    assert.equal(first.closed(), false);
    assert.equal(before.closed(), false);
    assert.equal(tcp.bytesFromServer(), 3 * SOURCE_BYTES - 50_000);
  });

  it('pause holds data (both ways) until resume, dropping nothing', async () => {
    const tcp = await proxy(echoPort);
    const client = await peer(tcp.port);
    client.socket.write('x');
    await waitFor(() => client.received().length === 1, 'first echo');
    const receivedBefore = echoReceived;

    tcp.pause();
    const payload = Buffer.alloc(1024 * 1024, 3);
    client.socket.write(payload);
    await settle();
    assert.equal(client.received().length, 1, 'nothing came back while paused');
    assert.equal(echoReceived, receivedBefore, 'nothing reached the server while paused');

    tcp.resume();
    await waitFor(() => client.received().length === 1 + payload.length, 'echo after resume');
    assert.ok(client.received().subarray(1).equals(payload));
    assert.equal(client.closed(), false);
  });

  it('pause also holds a stream the server is pushing', async () => {
    const tcp = await proxy(sourcePort);
    tcp.pause();
    const client = await peer(tcp.port);
    await settle();
    assert.equal(client.received().length, 0);
    assert.equal(tcp.bytesFromServer(), 0);
    tcp.resume();
    await waitFor(() => client.received().length === SOURCE_BYTES, 'payload after resume');
    assert.ok(client.received().equals(sourcePayload));
  });

  it('refuseNew closes new connections at once and leaves open ones alone', async () => {
    const tcp = await proxy(echoPort);
    const open = await peer(tcp.port);
    tcp.refuseNew(true);
    const refused = await peer(tcp.port);
    await waitFor(() => refused.closed(), 'refused connection closed');
    assert.equal(refused.received().length, 0);
    open.socket.write('still here');
    await waitFor(() => open.received().toString() === 'still here', 'open connection echo');
    assert.equal(tcp.connections(), 1);
    assert.equal(tcp.totalConnections(), 1);

    tcp.refuseNew(false);
    const again = await peer(tcp.port);
    again.socket.write('ok');
    await waitFor(() => again.received().toString() === 'ok', 'echo after refuseNew(false)');
  });

  it('onClientData sees what each client sends, numbered per connection', async () => {
    const seen: Array<[number, string]> = [];
    const tcp = await startTcpProxy({
      targetHost: '127.0.0.1',
      targetPort: echoPort,
      onClientData: (connection, chunk) => seen.push([connection, chunk.toString()]),
    });
    proxies.push(tcp);
    const first = await peer(tcp.port);
    first.socket.write('one');
    await waitFor(() => first.received().toString() === 'one', 'echo of one');
    const second = await peer(tcp.port);
    second.socket.write('two');
    await waitFor(() => second.received().toString() === 'two', 'echo of two');
    assert.deepEqual(seen, [
      [1, 'one'],
      [2, 'two'],
    ]);
  });

  it('StatusUpdateRecorder reads standby status updates off the frontend protocol, in any chunking', () => {
    const message = (type: string, payload: Buffer) => {
      const header = Buffer.alloc(5);
      header.write(type, 0, 'latin1');
      header.writeInt32BE(payload.length + 4, 1);
      return Buffer.concat([header, payload]);
    };
    const startup = (code: number, rest = Buffer.alloc(0)) => {
      const head = Buffer.alloc(8);
      head.writeInt32BE(8 + rest.length, 0);
      head.writeInt32BE(code, 4);
      return Buffer.concat([head, rest]);
    };
    const status = (write: bigint, flush: bigint) => {
      const body = Buffer.alloc(34);
      body.write('r', 0, 'latin1');
      body.writeBigUInt64BE(write, 1);
      body.writeBigUInt64BE(flush, 9);
      body.writeBigUInt64BE(flush, 17);
      return message('d', body);
    };
    const wire = Buffer.concat([
      startup(80877103), // SSLRequest, then the StartupMessage
      startup(196608, Buffer.from('user\0postgres\0replication\0database\0\0')),
      message('Q', Buffer.from('IDENTIFY_SYSTEM\0')),
      status(0x16b3748n, 0x16b3700n),
      message('d', Buffer.from('w-not-a-status-update-but-long-enough-to-matter')),
      status(0x2000000n, 0x1ffff00n),
    ]);
    const recorder = new StatusUpdateRecorder();
    for (let i = 0; i < wire.length; i += 7) recorder.onClientData(3, wire.subarray(i, i + 7));
    assert.deepEqual(
      recorder.updates.map((u) => [u.connection, formatLsn(u.write), formatLsn(u.flush)]),
      [
        [3, '0/16B3748', '0/16B3700'],
        [3, '0/2000000', '0/1FFFF00'],
      ],
    );
  });

  it('stop closes the listener and every connection', async () => {
    const tcp = await startTcpProxy({ targetHost: '127.0.0.1', targetPort: echoPort });
    const client = await peer(tcp.port);
    await tcp.stop();
    await waitFor(() => client.closed(), 'client closed by stop');
    await assert.rejects(connectPeer(tcp.port), { code: 'ECONNREFUSED' });
  });
});

describe('http fault proxy in front of s3rver and dynalite, with the AWS SDK', { timeout: 120_000 }, () => {
  const BUCKET = 'proxy-test';
  const TABLE = 'proxy-test-table';
  const credentials = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };
  let s3: LocalS3;
  let dynamo: LocalDynamo;
  let s3Proxy: HttpFaultProxy;
  let dynamoProxy: HttpFaultProxy;
  let s3Client: S3Client;
  let dynamoClient: DynamoDBClient;

  const put = (key: string, body: string | Buffer = `body of ${key}`) =>
    s3Client.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: body }));
  const get = async (key: string): Promise<string> => {
    const result = await s3Client.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
    return (await result.Body?.transformToString()) ?? '';
  };
  const putItem = (pk: string, value: string) =>
    dynamoClient.send(new PutItemCommand({ TableName: TABLE, Item: { pk: { S: pk }, v: { S: value } } }));
  const getItem = async (pk: string) =>
    (
      await dynamoClient.send(
        new GetItemCommand({ TableName: TABLE, Key: { pk: { S: pk } }, ConsistentRead: true }),
      )
    ).Item;
  /** The thrown error of `action`, which must fail. */
  const failure = async (action: () => Promise<unknown>): Promise<unknown> => {
    try {
      await action();
    } catch (error) {
      return error;
    }
    throw new assert.AssertionError({ message: 'expected the call to fail' });
  };

  // Everything started is registered for cleanup as soon as it exists; if the suite is already closing
  // (a slow start outlived the hook's timeout) it is stopped at once — nothing may keep the process alive.
  const cleanups: (() => Promise<unknown> | void)[] = [];
  let closing = false;
  const started = async <T>(value: Promise<T>, stop: (value: T) => Promise<unknown> | void): Promise<T> => {
    const result = await value;
    if (closing) {
      await stop(result);
      throw new Error('the suite closed while this was starting');
    }
    cleanups.push(() => stop(result));
    return result;
  };

  before(
    async () => {
      const dir = mkdtempSync(join(tmpdir(), 'slotlake-proxies-'));
      cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
      [s3, dynamo] = await Promise.all([
        started(startLocalS3(join(dir, 's3'), [BUCKET]), (server) => server.stop()),
        started(startLocalDynamo(), (server) => server.stop()),
      ]);
      [s3Proxy, dynamoProxy] = await Promise.all([
        started(startHttpFaultProxy({ target: s3.endpoint }), (proxy) => proxy.stop()),
        started(startHttpFaultProxy({ target: dynamo.endpoint }), (proxy) => proxy.stop()),
      ]);
      s3Client = new S3Client({
        endpoint: s3Proxy.endpoint,
        forcePathStyle: true,
        requestChecksumCalculation: 'WHEN_REQUIRED',
        responseChecksumValidation: 'WHEN_REQUIRED',
        credentials,
        region: 'us-east-1',
        maxAttempts: 1,
      });
      cleanups.push(() => s3Client.destroy());
      dynamoClient = new DynamoDBClient({
        endpoint: dynamoProxy.endpoint,
        credentials,
        region: 'us-east-1',
        maxAttempts: 1,
      });
      cleanups.push(() => dynamoClient.destroy());
      await dynamoClient.send(
        new CreateTableCommand({
          TableName: TABLE,
          AttributeDefinitions: [{ AttributeName: 'pk', AttributeType: 'S' }],
          KeySchema: [{ AttributeName: 'pk', KeyType: 'HASH' }],
          BillingMode: 'PAY_PER_REQUEST',
        }),
      );
    },
    { timeout: 60_000 },
  );

  after(
    async () => {
      closing = true;
      // Newest first: clients, then proxies, then servers, then the folder.
      for (const cleanup of cleanups.reverse()) await Promise.resolve(cleanup()).catch(() => undefined);
    },
    { timeout: 60_000 },
  );

  it('passes S3 requests through and logs them', async () => {
    await put('plain/a.txt', 'hello');
    await put('part=1/b c+é.txt', 'odd key');
    assert.equal(await get('plain/a.txt'), 'hello');
    assert.equal(await get('part=1/b c+é.txt'), 'odd key');
    const puts = s3Proxy.requests().filter((r) => r.method === 'PUT');
    assert.deepEqual(
      puts.slice(-2).map((r) => [r.status, r.fault]),
      [
        [200, undefined],
        [200, undefined],
      ],
    );
    assert.equal(puts.at(-2)?.path, `/${BUCKET}/plain/a.txt`);
    assert.match(puts.at(-2)?.query ?? '', /x-id=PutObject/);
  });

  it('streams multi-MB bodies both ways (multipart upload, then GET)', async () => {
    const body = Buffer.alloc(6 * 1024 * 1024);
    for (let i = 0; i < body.length; i++) body[i] = (i * 13) % 256;
    await new Upload({
      client: s3Client,
      params: { Bucket: BUCKET, Key: 'big/object.bin', Body: body },
      partSize: 5 * 1024 * 1024,
    }).done();
    const parts = s3Proxy
      .requests()
      .filter((r) => r.path.endsWith('/big/object.bin') && r.query.includes('partNumber='));
    assert.equal(parts.length, 2);
    const result = await s3Client.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'big/object.bin' }));
    const read = Buffer.from((await result.Body?.transformToByteArray()) ?? []);
    assert.ok(read.equals(body));
  });

  it('passes DynamoDB requests through and logs the operation', async () => {
    await putItem('a', 'one');
    assert.deepEqual(await getItem('a'), { pk: { S: 'a' }, v: { S: 'one' } });
    const targets = dynamoProxy.requests().map((r) => r.target);
    assert.deepEqual(targets.slice(0, 1), ['DynamoDB_20120810.CreateTable']);
    assert.deepEqual(targets.slice(-2), ['DynamoDB_20120810.PutItem', 'DynamoDB_20120810.GetItem']);
  });

  it('a 503 SlowDown surfaces as S3ServiceException SlowDown, which classify() retries', async () => {
    s3Proxy.inject({ match: isS3Put('slow/'), times: 1, action: s3Error('SlowDown', 503) });
    const error = await failure(() => put('slow/x'));
    assert.ok(error instanceof S3ServiceException);
    assert.equal(error.name, 'SlowDown');
    assert.equal(error.$metadata.httpStatusCode, 503);
    assert.equal(error.$fault, 'server');
    const classified = classify(error, { origin: 'object-store', what: 'uploading' });
    assert.equal(classified.kind, 'aws-transient');
    assert.equal(classified.retryable, true);
    assert.equal(s3Proxy.requests().at(-1)?.fault, 'status');
    await assert.rejects(get('slow/x'), { name: 'NoSuchKey' });
  });

  it('a ProvisionedThroughputExceededException surfaces by name, and classify() retries it', async () => {
    dynamoProxy.inject({
      match: isDynamoOp('PutItem'),
      times: 1,
      action: dynamoError('ProvisionedThroughputExceededException'),
    });
    const error = await failure(() => putItem('pt', 'x'));
    assert.ok(error instanceof ProvisionedThroughputExceededException);
    assert.equal(error.name, 'ProvisionedThroughputExceededException');
    assert.equal(error.$metadata.httpStatusCode, 400);
    const classified = classify(error, { origin: 'checkpoint-store', what: 'writing the checkpoint' });
    assert.equal(classified.kind, 'aws-transient');
    assert.equal(classified.retryable, true);
    assert.equal(await getItem('pt'), undefined);
    const last = dynamoProxy.requests().filter((r) => r.target === 'DynamoDB_20120810.PutItem');
    assert.deepEqual(
      [last.at(-1)?.fault, last.at(-1)?.status],
      ['status', 400],
      'the fault applies to PutItem only (the GetItem went through)',
    );
  });

  it('honours times, and rules apply in order', async () => {
    s3Proxy.inject({ match: isS3Put('times/'), times: 2, action: s3Error('InternalError', 500) });
    s3Proxy.inject({ match: isS3Put('times/'), times: 1, action: s3Error('SlowDown', 503) });
    const names = [];
    for (let i = 0; i < 4; i++) {
      try {
        await put(`times/${i}`);
        names.push('ok');
      } catch (error) {
        names.push((error as Error).name);
      }
    }
    assert.deepEqual(names, ['InternalError', 'InternalError', 'SlowDown', 'ok']);
    const log = s3Proxy.requests().slice(-4);
    assert.deepEqual(
      log.map((r) => r.status),
      [500, 500, 503, 200],
    );

    // clear() removes rules that still have uses left.
    s3Proxy.inject({ match: isS3Put('times/'), action: s3Error('SlowDown', 503) });
    s3Proxy.clear();
    await put('times/after-clear');
  });

  it('delay waits, then forwards', async () => {
    s3Proxy.inject({ match: isS3Put('delayed/'), times: 1, action: { kind: 'delay', ms: 300 } });
    const start = performance.now();
    await put('delayed/x', 'late');
    assert.ok(performance.now() - start >= 290, 'the request took at least the delay');
    assert.equal(await get('delayed/x'), 'late');
    await put('delayed/y');
    const puts = s3Proxy.requests().filter((r) => r.method === 'PUT' && r.path.includes('/delayed/'));
    assert.deepEqual(
      puts.map((r) => [r.fault, r.status]),
      [
        ['delay', 200],
        [undefined, 200],
      ],
      'times: 1 — the next one is not delayed',
    );
  });

  it('reset: a network error (classify() retries) and the request never reached S3', async () => {
    s3Proxy.inject({ match: isS3Put('reset/'), times: 1, action: { kind: 'reset' } });
    const error = await failure(() => put('reset/x'));
    assert.equal((error as NodeJS.ErrnoException).code, 'ECONNRESET');
    const classified = classify(error, { origin: 'object-store', what: 'uploading' });
    assert.equal(classified.kind, 'aws-transient');
    assert.equal(classified.retryable, true);
    assert.equal(s3Proxy.requests().at(-1)?.status, undefined);
    await assert.rejects(get('reset/x'), { name: 'NoSuchKey' });
    // The SDK's keep-alive pool recovers: the next request works.
    await put('reset/y');
  });

  it('after-forward-reset: the client sees an error, but the PUT took effect', async () => {
    s3Proxy.inject({ match: isS3Put('afr/'), times: 1, action: { kind: 'after-forward-reset' } });
    const error = await failure(() => put('afr/x', 'it happened'));
    assert.equal((error as NodeJS.ErrnoException).code, 'ECONNRESET');
    assert.equal(classify(error, { origin: 'object-store', what: 'uploading' }).retryable, true);
    const entry = s3Proxy.requests().at(-1);
    assert.deepEqual([entry?.fault, entry?.status], ['after-forward-reset', 200]);
    assert.equal(await get('afr/x'), 'it happened');
  });

  it('after-forward-reset on DynamoDB: the item is written although PutItem failed', async () => {
    dynamoProxy.inject({ match: isDynamoOp('PutItem'), times: 1, action: { kind: 'after-forward-reset' } });
    const error = await failure(() => putItem('afr', 'written'));
    assert.equal((error as NodeJS.ErrnoException).code, 'ECONNRESET');
    assert.equal(
      classify(error, { origin: 'checkpoint-store', what: 'writing the checkpoint' }).retryable,
      true,
    );
    assert.deepEqual(await getItem('afr'), { pk: { S: 'afr' }, v: { S: 'written' } });
  });

  it('a failed part of a multipart upload: s3rver cannot abort, so answer the abort to see the real error', async () => {
    const body = Buffer.alloc(6 * 1024 * 1024, 1);
    const upload = (key: string) =>
      new Upload({
        client: s3Client,
        params: { Bucket: BUCKET, Key: key, Body: body },
        partSize: 5 * 1024 * 1024,
        leavePartsOnError: false,
      }).done();

    s3Proxy.inject({ match: isS3MultipartPart('mpu/'), times: 1, action: s3Error('SlowDown', 503) });
    const masked = await failure(() => upload('mpu/a'));
    assert.equal((masked as Error).name, 'MethodNotAllowed', 's3rver answers AbortMultipartUpload with 405');

    s3Proxy.inject({ match: isS3MultipartPart('mpu/'), times: 1, action: s3Error('SlowDown', 503) });
    s3Proxy.inject({ match: isS3MultipartAbort('mpu/'), times: 1, action: { kind: 'status', status: 204 } });
    const real = await failure(() => upload('mpu/b'));
    assert.equal((real as Error).name, 'SlowDown');
    assert.equal(classify(real).retryable, true);
    await assert.rejects(get('mpu/b'), { name: 'NoSuchKey' });
  });

  it('logs the body MD5 and when each request arrived, was forwarded and answered, in event order', async () => {
    await put('md5/x', 'abc');
    const entry = s3Proxy.requests().at(-1)!;
    assert.equal(entry.bodyMd5, createHash('md5').update('abc').digest('hex'));
    assert.equal(entry.bodyBytes, 3);
    assert.ok(entry.forwarded && entry.answered);
    assert.ok(entry.received.order < entry.forwarded.order && entry.forwarded.order < entry.answered.order);
    assert.ok(entry.received.atMs <= entry.answered.atMs);
  });

  it('copies are logged with their decoded source', async () => {
    await put('copy/from a', 'x');
    await s3Client.send(
      new CopyObjectCommand({ Bucket: BUCKET, Key: 'copy/to', CopySource: `${BUCKET}/copy/from%20a` }),
    );
    assert.equal(s3Proxy.requests().at(-1)?.copySource, `${BUCKET}/copy/from a`);
  });

  it('hang holds the request until the client gives up; it never reaches S3', async () => {
    s3Proxy.inject({ match: isS3Put('hang/'), times: 1, action: { kind: 'hang' } });
    const error = await failure(() =>
      s3Client.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'hang/x', Body: 'held' }), {
        abortSignal: AbortSignal.timeout(300),
      }),
    );
    assert.equal((error as Error).name, 'AbortError');
    const entry = s3Proxy.requests().find((r) => r.path.endsWith('/hang/x'))!;
    assert.deepEqual([entry.fault, entry.forwarded, entry.status], ['hang', undefined, undefined]);
    await assert.rejects(get('hang/x'), { name: 'NoSuchKey' });
  });

  it('delay until a clock time, delivered although the client gave up (bytes already on the wire)', async () => {
    const untilMs = systemClock.nowMs() + 400;
    s3Proxy.inject({
      match: isS3Put('abandoned/'),
      times: 1,
      action: { kind: 'delay', untilMs, deliverAbandoned: true },
    });
    const error = await failure(() =>
      s3Client.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'abandoned/x', Body: 'landed late' }), {
        abortSignal: AbortSignal.timeout(100),
      }),
    );
    assert.equal((error as Error).name, 'AbortError');
    const entry = s3Proxy.requests().find((r) => r.path.endsWith('/abandoned/x'))!;
    await waitFor(() => entry.answered !== undefined, 'the abandoned PUT reached S3');
    assert.ok(entry.forwarded!.atMs >= untilMs - 5, 'forwarded at the requested time');
    assert.equal(entry.status, 200);
    assert.equal(await get('abandoned/x'), 'landed late');
  });

  it('reset-mid-request: a TCP reset while the body is arriving; nothing reaches S3', async () => {
    s3Proxy.inject({
      match: isS3Put('midreset/'),
      times: 1,
      action: { kind: 'reset-mid-request', afterBodyBytes: 1000 },
    });
    const error = await failure(() => put('midreset/x', Buffer.alloc(512 * 1024, 7)));
    const code = (error as NodeJS.ErrnoException).code;
    assert.ok(
      code === 'ECONNRESET' || code === 'EPIPE',
      `a socket error: ${code} ${(error as Error).message}`,
    );
    assert.equal(classify(error, { origin: 'object-store', what: 'uploading' }).retryable, true);
    const entry = s3Proxy.requests().find((r) => r.path.endsWith('/midreset/x'))!;
    assert.deepEqual(
      [entry.fault, entry.forwarded, entry.bodyMd5],
      ['reset-mid-request', undefined, undefined],
    );
    await assert.rejects(get('midreset/x'), { name: 'NoSuchKey' });
    await put('midreset/y');
  });

  it('an action chosen per request by a function (undefined: no fault)', async () => {
    let n = 0;
    s3Proxy.inject({
      match: isS3Put('chosen/'),
      action: () => (++n % 2 === 0 ? s3Error('SlowDown', 503) : undefined),
    });
    const outcomes = [];
    for (let i = 0; i < 4; i++)
      outcomes.push(
        await put(`chosen/${i}`).then(
          () => 'ok',
          (e: Error) => e.name,
        ),
      );
    s3Proxy.clear();
    assert.deepEqual(outcomes, ['ok', 'SlowDown', 'ok', 'SlowDown']);
  });

  it('bufferRequests: matchers see the JSON body, e.g. an UpdateItem that sets only one attribute', async () => {
    const buffered = await startHttpFaultProxy({ target: dynamo.endpoint, bufferRequests: true });
    const client = new DynamoDBClient({
      endpoint: buffered.endpoint,
      credentials,
      region: 'us-east-1',
      maxAttempts: 1,
    });
    try {
      buffered.inject({
        match: isDynamoUpdateSettingOnly('leaseExpiresAt'),
        action: dynamoError('InternalServerError', 500),
      });
      const update = (expression: string, values: Record<string, { N: string }>) =>
        client.send(
          new UpdateItemCommand({
            TableName: TABLE,
            Key: { pk: { S: 'renewal' } },
            UpdateExpression: expression,
            ExpressionAttributeNames: expression.includes('#e') ? { '#e': 'leaseExpiresAt' } : undefined,
            ExpressionAttributeValues: values,
          }),
        );
      await update('SET leaseExpiresAt = :e, fence = if_not_exists(fence, :z) + :o', {
        ':e': { N: '1' },
        ':z': { N: '0' },
        ':o': { N: '1' },
      });
      await update('SET leaseExpiresAt = :e REMOVE leaseOwner', { ':e': { N: '2' } });
      await assert.rejects(update('SET leaseExpiresAt = :e', { ':e': { N: '3' } }), {
        name: 'InternalServerError',
      });
      await assert.rejects(update('SET #e = :e', { ':e': { N: '4' } }), { name: 'InternalServerError' });
      const log = buffered.requests();
      assert.deepEqual(
        log.map((r) => r.fault),
        [undefined, undefined, 'status', 'status'],
      );
      assert.equal(dynamoBody(log[2]!)?.ExpressionAttributeValues?.[':e']?.N, '3');
    } finally {
      client.destroy();
      await buffered.stop();
    }
  });

  it('updateClauses reads every clause of an update expression, aliases resolved', () => {
    assert.deepEqual(
      updateClauses({
        UpdateExpression: 'SET a = :a, #b = if_not_exists(#b, :z) + :o REMOVE c, d ADD e :e',
        ExpressionAttributeNames: { '#b': 'bee' },
      }),
      { SET: ['a', 'bee'], REMOVE: ['c', 'd'], ADD: ['e'], DELETE: [] },
    );
  });

  it('matchers: isS3Get covers GET and HEAD of a key', () => {
    const req = (method: string, path: string, query = '') => ({ method, path, query, headers: {} });
    assert.equal(isS3Get('k')(req('HEAD', `/${BUCKET}/k`)), true);
    assert.equal(isS3Get()(req('GET', `/${BUCKET}`)), false, 'bucket-level request');
    assert.equal(isS3Put()(req('PUT', `/${BUCKET}/k`, 'partNumber=1&uploadId=u')), false);
    assert.equal(isS3MultipartPart()(req('PUT', `/${BUCKET}/k`, 'partNumber=1&uploadId=u')), true);
    assert.equal(isS3Put('=1/')(req('PUT', `/${BUCKET}/part%3D1/x`)), true, 'keys are decoded');
    assert.equal(
      isDynamoOp(
        'GetItem',
        'PutItem',
      )({ ...req('POST', '/'), headers: { 'x-amz-target': 'DynamoDB_20120810.PutItem' } }),
      true,
    );
  });
});
