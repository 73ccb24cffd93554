/**
 * What a client tells Postgres, read off the wire: a parser for the frontend side of the PostgreSQL protocol,
 * fed with the bytes a TCP proxy sees (test/helpers/tcp-proxy.ts `onClientData`). The fault tests use it to
 * see every standby status update a replication client sends — the flush position it acknowledges, and
 * when — independently of what the client says it did.
 *
 * The first message of a connection has no type byte (StartupMessage, or an SSLRequest / GSSENCRequest
 * followed by another untyped message); every later one is a type byte and an int32 length. A standby status
 * update is CopyData ('d') holding 'r', then write, flush and apply LSNs (int64), the client's clock (int64)
 * and a reply-requested byte.
 */
import { formatLsn, lsn, type Lsn } from '../../src/lsn.js';
import { proxyEvent, type ProxyEvent } from './http-fault-proxy.js';

export interface StandbyStatusUpdate {
  readonly connection: number;
  readonly write: Lsn;
  readonly flush: Lsn;
  readonly apply: Lsn;
  /** When the proxy saw it (clock time and the process-wide event order of the proxies). */
  readonly seen: ProxyEvent;
}

const SSL_REQUEST = 80877103;
const GSSENC_REQUEST = 80877104;

class FrontendStream {
  private buffer: Buffer = Buffer.alloc(0);
  private startupDone = false;

  constructor(
    private readonly connection: number,
    private readonly onUpdate: (update: StandbyStatusUpdate) => void,
  ) {}

  push(chunk: Buffer): void {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    for (;;) {
      if (!this.startupDone) {
        if (this.buffer.length < 8) return;
        const length = this.buffer.readInt32BE(0);
        if (this.buffer.length < length) return;
        const code = this.buffer.readInt32BE(4);
        this.buffer = this.buffer.subarray(length);
        if (code !== SSL_REQUEST && code !== GSSENC_REQUEST) this.startupDone = true;
        continue;
      }
      if (this.buffer.length < 5) return;
      const type = String.fromCharCode(this.buffer[0]!);
      const length = this.buffer.readInt32BE(1);
      if (this.buffer.length < 1 + length) return;
      const payload = this.buffer.subarray(5, 1 + length);
      this.buffer = this.buffer.subarray(1 + length);
      if (type === 'd' && payload.length >= 34 && payload[0] === 'r'.charCodeAt(0)) {
        this.onUpdate({
          connection: this.connection,
          write: lsn(payload.readBigUInt64BE(1)),
          flush: lsn(payload.readBigUInt64BE(9)),
          apply: lsn(payload.readBigUInt64BE(17)),
          seen: proxyEvent(),
        });
      }
    }
  }
}

/** Collects the standby status updates of every connection fed to it. */
export class StatusUpdateRecorder {
  private readonly streams = new Map<number, FrontendStream>();
  readonly updates: StandbyStatusUpdate[] = [];

  /** For TcpProxyOptions.onClientData. */
  readonly onClientData = (connection: number, chunk: Buffer): void => {
    let stream = this.streams.get(connection);
    if (!stream) {
      stream = new FrontendStream(connection, (update) => this.updates.push(update));
      this.streams.set(connection, stream);
    }
    stream.push(chunk);
  };

  describe(): string {
    return this.updates.map((u) => `${formatLsn(u.flush)}@${Math.round(u.seen.atMs)}`).join(' ');
  }
}
