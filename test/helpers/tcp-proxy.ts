/**
 * A loopback TCP proxy for fault tests: put it between slotlake and Postgres and cut, stall or refuse the
 * connection at a chosen moment. With no fault armed it forwards bytes both ways untouched, so a pg
 * replication connection through it behaves normally.
 *
 * Forwarding is explicit `data` → `write` with backpressure (the reading side is paused while the writing
 * side's buffer is full), so nothing is buffered beyond Node's own socket buffers — also while paused.
 */
import { createConnection, createServer, type Socket } from 'node:net';

export interface TcpProxyOptions {
  readonly targetHost: string;
  readonly targetPort: number;
  /**
   * Sees every chunk the client sends, before it is forwarded: `connection` numbers the accepted
   * connections from 1 (for parsing per connection, e.g. test/helpers/pg-wire.ts).
   */
  readonly onClientData?: (connection: number, chunk: Buffer) => void;
}

export interface TcpProxy {
  readonly host: '127.0.0.1';
  readonly port: number;
  /** Connection pairs open right now. */
  connections(): number;
  /** Connections accepted and forwarded since start (refused ones not counted). */
  totalConnections(): number;
  /** Bytes forwarded server → client since start, over all connections. */
  bytesFromServer(): number;
  /** Destroys every open client+server socket pair at once. */
  cutAll(): void;
  /**
   * Arms a one-shot cut: once the bytes forwarded server → client (over all connections, counted from now)
   * would exceed `n`, the client receives exactly the first `n` of them and then that connection pair is
   * destroyed — a drop mid-stream. Disarms itself after firing; call again to re-arm.
   */
  cutAfterServerBytes(n: number): void;
  /** Stops forwarding in both directions on every connection (data stays in the socket buffers). */
  pause(): void;
  /** Resumes forwarding after `pause()`. */
  resume(): void;
  /** While on, new connections are accepted and closed at once (existing ones are untouched). */
  refuseNew(on: boolean): void;
  /** Closes the listener and destroys every open connection. */
  stop(): Promise<void>;
}

interface Pair {
  readonly client: Socket;
  readonly server: Socket;
  closed: boolean;
  /** Set once a cut is in progress: forward nothing more. */
  cutting: boolean;
  update(): void;
}

export async function startTcpProxy(options: TcpProxyOptions): Promise<TcpProxy> {
  const pairs = new Set<Pair>();
  let paused = false;
  let refusing = false;
  let total = 0;
  let fromServer = 0;
  let cutBudget: number | undefined;

  const destroyPair = (pair: Pair): void => {
    if (pair.closed) return;
    pair.closed = true;
    pairs.delete(pair);
    pair.client.destroy();
    pair.server.destroy();
  };

  const listener = createServer({ allowHalfOpen: true }, (client) => {
    client.on('error', () => undefined);
    if (refusing) {
      client.destroy();
      return;
    }
    const connection = ++total;
    const server = createConnection({
      host: options.targetHost,
      port: options.targetPort,
      allowHalfOpen: true,
    });
    server.on('error', () => undefined);
    let clientBlocked = false; // client → server: the server side's write buffer is full
    let serverBlocked = false; // server → client: the client side's write buffer is full
    const pair: Pair = {
      client,
      server,
      closed: false,
      cutting: false,
      update() {
        if (pair.closed) return;
        const stop = paused || pair.cutting;
        if (stop || clientBlocked) client.pause();
        else client.resume();
        if (stop || serverBlocked) server.pause();
        else server.resume();
      },
    };
    pairs.add(pair);

    client.on('data', (chunk: Buffer) => {
      options.onClientData?.(connection, chunk);
      if (!server.write(chunk)) {
        clientBlocked = true;
        pair.update();
      }
    });
    server.on('drain', () => {
      clientBlocked = false;
      pair.update();
    });

    server.on('data', (chunk: Buffer) => {
      if (pair.cutting) return;
      if (cutBudget !== undefined && chunk.length > cutBudget) {
        const head = chunk.subarray(0, cutBudget);
        cutBudget = undefined;
        pair.cutting = true;
        pair.update();
        fromServer += head.length;
        // Let the last allowed bytes reach the kernel before the pair goes away.
        if (head.length > 0) client.write(head, () => destroyPair(pair));
        else destroyPair(pair);
        return;
      }
      if (cutBudget !== undefined) cutBudget -= chunk.length;
      fromServer += chunk.length;
      if (!client.write(chunk)) {
        serverBlocked = true;
        pair.update();
      }
    });
    client.on('drain', () => {
      serverBlocked = false;
      pair.update();
    });

    // A FIN from one side is passed on as a FIN (after the bytes before it); an error on either side
    // (reset, refused) destroys the other. The pair is gone once both sockets have closed.
    const onClose = (other: Socket) => (hadError: boolean) => {
      if (hadError) other.destroy();
      else if (!other.writableEnded) other.end();
      if (client.destroyed && server.destroyed) {
        pair.closed = true;
        pairs.delete(pair);
      }
    };
    client.on('end', () => server.end());
    server.on('end', () => client.end());
    client.on('close', onClose(server));
    server.on('close', onClose(client));
    pair.update();
  });
  listener.on('error', () => undefined);

  const port = await new Promise<number>((resolve, reject) => {
    listener.once('error', reject);
    listener.listen(0, '127.0.0.1', () => {
      const address = listener.address();
      if (address === null || typeof address === 'string') reject(new Error('tcp proxy: no port'));
      else resolve(address.port);
    });
  });

  return {
    host: '127.0.0.1',
    port,
    connections: () => pairs.size,
    totalConnections: () => total,
    bytesFromServer: () => fromServer,
    cutAll() {
      for (const pair of [...pairs]) destroyPair(pair);
    },
    cutAfterServerBytes(n: number) {
      if (!Number.isInteger(n) || n < 0) throw new RangeError(`cutAfterServerBytes: bad byte count ${n}`);
      cutBudget = n;
    },
    pause() {
      paused = true;
      for (const pair of pairs) pair.update();
    },
    resume() {
      paused = false;
      for (const pair of pairs) pair.update();
    },
    refuseNew(on: boolean) {
      refusing = on;
    },
    stop() {
      return new Promise<void>((resolve) => {
        listener.close(() => resolve());
        for (const pair of [...pairs]) destroyPair(pair);
      });
    },
  };
}
