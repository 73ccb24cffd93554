/**
 * Fencing writes where they leave the process: the last check before a run's bytes go to the object store.
 *
 * A run may write to S3 only while its lease is surely held (runtime/lease.ts). Checking before an upload
 * starts is not enough: between that check and the moment the request's bytes reach the kernel lie a file
 * read, signing, a connection being opened — and a process frozen there (SIGSTOP, a paused VM or container,
 * a stalled host) and resumed after another run took over would send a request that passed its check long
 * before. After a resume the event loop first finishes the I/O callbacks that became ready, then runs overdue
 * timers, so even the lease keeper's fence timer comes too late to stop it.
 *
 * The fence is therefore checked synchronously at every write to every socket of the S3 client, on the
 * process's own clock (which a freeze does not stop): a socket that is not connected yet (or, for TLS, not
 * through its handshake) holds the write back and checks again once it is, right before the bytes are handed
 * to the kernel. A write refused there fails its socket, so a request whose head went out before a freeze
 * never completes after it. What the kernel accepted before a freeze still travels: the run that takes over
 * waits out the old lease plus a grace for those bytes (runtime/recovery.ts).
 */
import { Agent as HttpAgent, type AgentOptions, type ClientRequestArgs } from 'node:http';
import { Agent as HttpsAgent, type AgentOptions as HttpsAgentOptions } from 'node:https';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { TLSSocket } from 'node:tls';

/** Returns why writes are refused now, or undefined while they are allowed. Must not block or throw. */
export type WriteRefusal = () => Error | undefined;

/** The check every write of one client passes; armed once the run holds its lease. */
export class WriteFence {
  private refusal: WriteRefusal | undefined;

  /** From now on every write must pass `refusal` at the moment its bytes leave. */
  arm(refusal: WriteRefusal): void {
    this.refusal = refusal;
  }

  /** Why a write must not leave now (undefined: it may). */
  refused(): Error | undefined {
    return this.refusal?.();
  }

  /** Agents whose sockets check this fence on every write (for the AWS SDK's request handler). */
  agents(options: AgentOptions = { keepAlive: true, maxSockets: 50 }): {
    httpAgent: HttpAgent;
    httpsAgent: HttpsAgent;
  } {
    return { httpAgent: new FencedHttpAgent(this, options), httpsAgent: new FencedHttpsAgent(this, options) };
  }
}

type WriteCallback = (error?: Error | null) => void;
type SocketWrite = (this: Socket, ...args: unknown[]) => void;

/** Makes every write of `socket` pass `fence` when its bytes are about to leave. */
export function fenceSocket(socket: Socket, fence: WriteFence): void {
  // Ready = connected (and, for TLS, through the handshake): bytes written now go straight to the kernel.
  const readyEvent = socket instanceof TLSSocket ? 'secureConnect' : 'connect';
  let ready = !socket.connecting && !(socket instanceof TLSSocket);
  if (!ready) socket.once(readyEvent, () => (ready = true));
  for (const name of ['_write', '_writev'] as const) {
    const original = socket[name] as SocketWrite | undefined;
    if (typeof original !== 'function') continue;
    const fenced: SocketWrite = function (this: Socket, ...args: unknown[]) {
      const callback = args[args.length - 1] as WriteCallback;
      const send = () => {
        const refused = fence.refused();
        if (refused) callback(refused);
        else original.apply(this, args);
      };
      if (ready) {
        send();
        return;
      }
      // Held back until the socket is ready, then checked again: Writable calls no further write meanwhile.
      const onClose = () => {
        this.off(readyEvent, onReady);
        callback(new Error('the connection closed before it was ready'));
      };
      const onReady = () => {
        this.off('close', onClose);
        send();
      };
      this.once(readyEvent, onReady);
      this.once('close', onClose);
    };
    (socket as unknown as Record<string, SocketWrite>)[name] = fenced;
  }
}

class FencedHttpAgent extends HttpAgent {
  constructor(
    private readonly fence: WriteFence,
    options: AgentOptions,
  ) {
    super(options);
  }

  override createConnection(
    options: ClientRequestArgs,
    callback?: (error: Error | null, stream: Duplex) => void,
  ): Duplex | null | undefined {
    const socket = super.createConnection(options, callback);
    if (socket) fenceSocket(socket as Socket, this.fence);
    return socket;
  }
}

class FencedHttpsAgent extends HttpsAgent {
  constructor(
    private readonly fence: WriteFence,
    options: HttpsAgentOptions,
  ) {
    super(options);
  }

  override createConnection(
    options: ClientRequestArgs,
    callback?: (error: Error | null, stream: Duplex) => void,
  ): Duplex | null | undefined {
    const socket = super.createConnection(options, callback);
    if (socket) fenceSocket(socket as Socket, this.fence);
    return socket;
  }
}
