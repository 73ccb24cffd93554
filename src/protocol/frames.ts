/**
 * Streaming-replication CopyData frames.
 *
 * After START_REPLICATION the connection is in CopyBoth mode and every CopyData payload starts with
 * one byte naming the frame (https://www.postgresql.org/docs/current/protocol-replication.html):
 * - `w` XLogData from the server: walStart, walEnd, sendTime, then the plugin's message bytes;
 * - `k` primary keepalive from the server: walEnd, sendTime, replyRequested;
 * - `r` standby status update from the client: written, flushed, applied LSNs, clientTime, replyRequested.
 * Times are microseconds since the Postgres epoch, 2000-01-01 00:00:00 UTC.
 */
import { DecodeError } from '../errors.js';
import type { Lsn } from '../lsn.js';
import { ByteReader } from './reader.js';

/** Microseconds between the Unix epoch and the Postgres epoch (2000-01-01T00:00:00Z). */
export const POSTGRES_EPOCH_OFFSET_US = 946_684_800_000_000n;

export function unixMicrosFromPostgres(pgMicros: bigint): bigint {
  return pgMicros + POSTGRES_EPOCH_OFFSET_US;
}

export function postgresMicrosFromUnix(unixMicros: bigint): bigint {
  return unixMicros - POSTGRES_EPOCH_OFFSET_US;
}

export interface XLogDataFrame {
  readonly type: 'xlogdata';
  /** The WAL position this message is about (for a change: the change's record). */
  readonly walStart: Lsn;
  /** The server's current end of WAL. */
  readonly walEnd: Lsn;
  /** Server clock, µs since the Postgres epoch. */
  readonly sendTime: bigint;
  /** The output plugin's message bytes (a view into the frame). */
  readonly data: Uint8Array;
}

export interface PrimaryKeepaliveFrame {
  readonly type: 'keepalive';
  readonly walEnd: Lsn;
  readonly sendTime: bigint;
  readonly replyRequested: boolean;
}

export type ServerFrame = XLogDataFrame | PrimaryKeepaliveFrame;

/** Decodes one CopyData payload sent by the server. */
export function decodeServerFrame(payload: Uint8Array): ServerFrame {
  const reader = new ByteReader(payload, 'replication frame');
  const tag = reader.char('frame type');
  if (tag === 'w') {
    const walStart = reader.lsn('walStart');
    const walEnd = reader.lsn('walEnd');
    const sendTime = reader.int64('sendTime');
    return { type: 'xlogdata', walStart, walEnd, sendTime, data: reader.rest() };
  }
  if (tag === 'k') {
    const walEnd = reader.lsn('walEnd');
    const sendTime = reader.int64('sendTime');
    const reply = reader.uint8('replyRequested');
    reader.end();
    return { type: 'keepalive', walEnd, sendTime, replyRequested: reply === 1 };
  }
  throw new DecodeError(
    `replication frame: unknown frame type 0x${tag.charCodeAt(0).toString(16).padStart(2, '0')}`,
  );
}

export interface StandbyStatus {
  /** Last WAL byte + 1 received. */
  readonly written: Lsn;
  /** Last WAL byte + 1 durably stored: the only position the server may recycle WAL up to. */
  readonly flushed: Lsn;
  /** Last WAL byte + 1 applied. */
  readonly applied: Lsn;
  /** Client clock, µs since the Unix epoch (converted to the Postgres epoch here). */
  readonly clientTimeUnixUs: bigint;
  readonly replyRequested: boolean;
}

/** Encodes an `r` standby status update (34 bytes). */
export function encodeStandbyStatus(status: StandbyStatus): Uint8Array {
  const bytes = new Uint8Array(34);
  const view = new DataView(bytes.buffer);
  view.setUint8(0, 'r'.charCodeAt(0));
  view.setBigUint64(1, status.written);
  view.setBigUint64(9, status.flushed);
  view.setBigUint64(17, status.applied);
  view.setBigInt64(25, postgresMicrosFromUnix(status.clientTimeUnixUs));
  view.setUint8(33, status.replyRequested ? 1 : 0);
  return bytes;
}
