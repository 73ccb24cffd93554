/**
 * The write fence (src/sink/write-fence.ts): every byte an S3 client sends is checked against the run's lease
 * when it leaves the process — including bytes queued while a connection was still being opened — and the
 * lease keeper answers the check from its clock alone, without side effects.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import {
  type Agent,
  createServer as createHttpsServer,
  request as httpsRequest,
  type Server as HttpsServer,
} from 'node:https';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { connect as tlsConnect } from 'node:tls';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { MemoryCheckpointStore } from '../../src/checkpoint/memory.js';
import { SlotlakeError } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';
import { LeaseKeeper } from '../../src/runtime/lease.js';
import { createS3Client } from '../../src/sink/s3.js';
import { fenceSocket, WriteFence } from '../../src/sink/write-fence.js';
import { waitFor } from '../helpers/wait.js';

const refusedError = () => new SlotlakeError('fenced', { kind: 'lease-lost' });

describe('write fence', () => {
  // A TCP server that records every byte it receives, per connection.
  let server: Server;
  let port = 0;
  const connections: Array<{ data: string; closed: boolean }> = [];
  const sockets = new Set<Socket>();
  before(async () => {
    server = createServer((socket) => {
      const connection = { data: '', closed: false };
      connections.push(connection);
      sockets.add(socket);
      socket.on('data', (chunk: Buffer) => (connection.data += chunk.toString('latin1')));
      socket.on('error', () => undefined);
      socket.on('close', () => {
        connection.closed = true;
        sockets.delete(socket);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as { port: number }).port;
  });
  after(() => {
    for (const socket of sockets) socket.destroy();
    server.close();
  });

  const received = () => connections.map((connection) => connection.data).join('');
  /** Waits until the server has seen `text`. */
  const serverSaw = (text: string) =>
    waitFor(`the server to receive ${text}`, () => received().includes(text), { everyMs: 20 });
  /** Waits until every connection the server accepted is closed (nothing more can arrive), then: never `text`. */
  const serverNeverSaw = async (text: string) => {
    await waitFor('every connection to close', () => connections.every((connection) => connection.closed), {
      everyMs: 20,
    });
    assert.equal(received().includes(text), false, `the server received ${text}`);
  };

  const connect = (fence: WriteFence): Socket => {
    const { httpAgent } = fence.agents();
    const socket = httpAgent.createConnection({ host: '127.0.0.1', port }) as Socket;
    socket.on('error', () => undefined);
    return socket;
  };

  it('lets writes through while unarmed or allowed, and refuses them once the refusal says so', async () => {
    const fence = new WriteFence();
    const socket = connect(fence);
    await new Promise((resolve) => socket.once('connect', resolve));
    socket.write('before-arming;');
    await serverSaw('before-arming;');
    let refuse = false;
    fence.arm(() => (refuse ? refusedError() : undefined));
    socket.write('allowed;');
    await serverSaw('allowed;');
    refuse = true;
    const failure = new Promise<Error>((resolve) => socket.once('error', resolve));
    socket.write('refused;');
    assert.equal((await failure).message, 'fenced');
    assert.ok(socket.destroyed, 'a refused write fails its socket');
    await serverNeverSaw('refused;');
  });

  it('checks bytes queued while connecting again when the connection opens', async () => {
    let refuse = false;
    const fence = new WriteFence();
    fence.arm(() => (refuse ? refusedError() : undefined));
    const socket = connect(fence);
    assert.ok(socket.connecting);
    socket.write('queued-while-connecting;'); // passes a check now, but waits for the connection
    refuse = true; // the process "froze" here, and its lease ended meanwhile
    const failure = new Promise<Error>((resolve) => socket.once('error', resolve));
    assert.equal((await failure).message, 'fenced');
    await serverNeverSaw('queued-while-connecting;');
  });

  it('an S3 client made with a fence sends nothing once it refuses', async () => {
    const fence = new WriteFence();
    const settings = {
      AWS_ENDPOINT_URL_S3: `http://127.0.0.1:${port}`,
      AWS_REGION: 'us-east-1',
      AWS_ACCESS_KEY_ID: 'test',
      AWS_SECRET_ACCESS_KEY: 'test',
    };
    const previous = Object.fromEntries(Object.keys(settings).map((name) => [name, process.env[name]]));
    Object.assign(process.env, settings);
    const client = createS3Client(fence);
    try {
      fence.arm(refusedError);
      await assert.rejects(
        client.send(new PutObjectCommand({ Bucket: 'b', Key: 'fenced-object', Body: 'x' })),
        /fenced/,
      );
      await serverNeverSaw('fenced-object');
    } finally {
      client.destroy();
      for (const [name, value] of Object.entries(previous)) {
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      }
    }
  });
});

describe('write fence over TLS (S3 itself is HTTPS)', () => {
  // A throwaway self-signed certificate for 127.0.0.1.
  let dir: string;
  let server: HttpsServer;
  let port = 0;
  const received: string[] = [];
  const openOnServer = new Set<Socket>();
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'slotlake-fence-tls-'));
    execFileSync(
      'openssl',
      ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=127.0.0.1'].concat([
        '-keyout',
        join(dir, 'key.pem'),
        '-out',
        join(dir, 'cert.pem'),
      ]),
      { stdio: 'ignore' },
    );
  });
  before(async () => {
    server = createHttpsServer(
      { key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) },
      (request, response) => {
        let body = '';
        request.on('data', (chunk: Buffer) => (body += chunk.toString()));
        request.on('end', () => {
          received.push(body);
          response.end('ok');
        });
      },
    );
    server.on('connection', (socket: Socket) => {
      openOnServer.add(socket);
      socket.on('close', () => openOnServer.delete(socket));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as { port: number }).port;
  });
  after(() => {
    server.closeAllConnections();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const post = (agent: Agent, body: string) =>
    new Promise<string>((resolve, reject) => {
      const request = httpsRequest(
        {
          host: '127.0.0.1',
          port,
          method: 'POST',
          path: '/',
          agent,
          rejectUnauthorized: false,
        },
        (response) => {
          let text = '';
          response.on('data', (chunk: Buffer) => (text += chunk.toString()));
          response.on('end', () => resolve(text));
        },
      );
      request.on('error', reject);
      request.end(body);
    });

  it('requests go through a fenced HTTPS agent while the fence allows them', async () => {
    const fence = new WriteFence();
    fence.arm(() => undefined);
    const { httpsAgent } = fence.agents();
    try {
      assert.equal(await post(httpsAgent, 'allowed over tls'), 'ok');
      assert.ok(received.includes('allowed over tls'));
    } finally {
      // closes its kept-alive connection (else the server keeps it open for its keep-alive timeout, 5 s)
      httpsAgent.destroy();
    }
  });

  it('bytes written before the handshake are checked when it completes, not merely when TCP connects', async () => {
    let refuse = false;
    const fence = new WriteFence();
    fence.arm(() => (refuse ? refusedError() : undefined));
    const socket = tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false });
    fenceSocket(socket, fence);
    const failure = new Promise<Error>((resolve) => socket.once('error', resolve));
    socket.write('POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 25\r\n\r\nheld during the handshake');
    // The lease "ends" once TCP is connected, while the handshake is still going on.
    socket.once('connect', () => (refuse = true));
    // The wait for the server stops polling once the race is decided (else it polls on until its timeout).
    let decided = false;
    const outcome = await Promise.race([
      failure.then((error) => error.message),
      waitFor('the server to receive it', () => decided || received.includes('held during the handshake'), {
        everyMs: 20,
      }).then(() => 'sent'),
    ]);
    decided = true;
    assert.equal(outcome, 'fenced');
    socket.destroy();
    await waitFor('the server side of the connection to close', () => openOnServer.size === 0, {
      everyMs: 20,
    });
    assert.equal(received.includes('held during the handshake'), false);
  });
});

describe('LeaseKeeper.writeRefusal', () => {
  it('answers from the clock alone: allowed before the fence, refused from it on, without losing the lease', async () => {
    const store = new MemoryCheckpointStore();
    let now = 1_000_000;
    const clock = { nowMs: () => now };
    const acquisition = await store.acquire('run-1', 6_000, now);
    assert.ok(acquisition.acquired);
    const keeper = new LeaseKeeper(acquisition.lease, store, 6_000, clock, createLogger('ERROR'));
    assert.equal(keeper.writeRefusal(), undefined);
    now = keeper.fenceAtMs - 1;
    assert.equal(keeper.writeRefusal(), undefined);
    now = keeper.fenceAtMs;
    assert.equal(keeper.writeRefusal()?.kind, 'lease-lost');
    assert.equal(
      keeper.signal.aborted,
      false,
      'no side effect: the fence timer or assertHeld reports the loss',
    );
    assert.throws(() => keeper.assertHeld(), { name: 'SlotlakeError' });
    assert.equal(keeper.signal.aborted, true);
    assert.equal(keeper.writeRefusal()?.kind, 'lease-lost');
  });

  it('refuses once the lease was given up', async () => {
    const store = new MemoryCheckpointStore();
    const clock = { nowMs: () => 0 };
    const acquisition = await store.acquire('run-1', 6_000, 0);
    assert.ok(acquisition.acquired);
    const keeper = new LeaseKeeper(acquisition.lease, store, 6_000, clock, createLogger('ERROR'));
    await keeper.release((lease) => store.release(lease));
    assert.equal(keeper.writeRefusal()?.kind, 'lease-lost');
  });
});
