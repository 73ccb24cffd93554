/**
 * The pgoutput decoder: one XLogData payload in, one `LogicalMessage` out.
 *
 * pgoutput is PostgreSQL's built-in logical-decoding output plugin, the one native logical replication
 * uses (https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html). Each message
 * starts with a one-byte tag and is otherwise a flat sequence of big-endian integers, NUL-terminated
 * strings and length-prefixed byte strings. A transaction arrives as Begin, then Relation/Type
 * descriptions (sent before the first change to a table or type, and again after it changes) and row
 * changes whose column values are "tuple data" (per column: null, unchanged TOAST, text or binary),
 * then Commit. From protocol 2 a large in-progress transaction may be streamed in blocks between Stream
 * Start and Stream Stop — inside such a block every data message carries the xid of the
 * (sub)transaction it belongs to — and is later settled by Stream Commit or Stream Abort. Protocol 3 adds
 * two-phase commit messages and protocol 4 adds the abort position to Stream Abort when parallel
 * streaming is on. The decoder's only state is whether it is inside a stream block.
 */
import { DecodeError, SlotlakeError } from '../errors.js';
import { ByteReader } from '../protocol/reader.js';
import type { LogicalMessage, ReplicaIdentity, RelationColumn, Tuple, TupleValue } from './messages.js';

export type PgoutputProtocolVersion = 1 | 2 | 3 | 4;

export interface PgoutputDecoderOptions {
  /** The `proto_version` passed to START_REPLICATION. */
  readonly protocolVersion: PgoutputProtocolVersion;
  /** `streaming 'parallel'` (protocol 4): Stream Abort then carries the abort LSN and time. */
  readonly parallelStreaming?: boolean;
}

// Shared immutable values for the column kinds that carry no data: no allocation per column.
const NULL_VALUE: TupleValue = Object.freeze({ kind: 'null' });
const UNCHANGED_TOAST_VALUE: TupleValue = Object.freeze({ kind: 'unchanged-toast' });

const NAMES: Record<string, string> = {
  B: 'Begin',
  C: 'Commit',
  O: 'Origin',
  R: 'Relation',
  Y: 'Type',
  I: 'Insert',
  U: 'Update',
  D: 'Delete',
  T: 'Truncate',
  M: 'Message',
  S: 'Stream Start',
  E: 'Stream Stop',
  c: 'Stream Commit',
  A: 'Stream Abort',
  b: 'Begin Prepare',
  P: 'Prepare',
  K: 'Commit Prepared',
  r: 'Rollback Prepared',
  p: 'Stream Prepare',
};

/** The `what` of each message's reader, built once so error messages name the message at no cost. */
const READER_NAMES: readonly string[] = Array.from({ length: 256 }, (_, code) => {
  const name = NAMES[String.fromCharCode(code)];
  return name === undefined ? 'pgoutput message' : `pgoutput ${name}`;
});

/** The minimum protocol version that may send each tag. */
const MIN_VERSION: Record<string, PgoutputProtocolVersion> = {
  S: 2,
  E: 2,
  c: 2,
  A: 2,
  b: 3,
  P: 3,
  K: 3,
  r: 3,
  p: 3,
};

/** `0x41 'A'`: how a byte is named in errors. */
export function describeByte(code: number): string {
  const hex = `0x${code.toString(16).padStart(2, '0')}`;
  return code >= 0x20 && code < 0x7f ? `${hex} '${String.fromCharCode(code)}'` : hex;
}

function replicaIdentity(code: number): ReplicaIdentity {
  switch (code) {
    case 0x64: // d
      return 'd';
    case 0x6e: // n
      return 'n';
    case 0x66: // f
      return 'f';
    case 0x69: // i
      return 'i';
    default:
      throw new DecodeError(`pgoutput Relation: unknown replica identity ${describeByte(code)}`);
  }
}

/**
 * A copy, so the message neither aliases nor keeps alive the frame buffer. Not `view.slice()`: on a Node
 * `Buffer` (what the pg client hands us) `slice()` is a view, not a copy.
 */
function copy(view: Uint8Array): Uint8Array {
  return new Uint8Array(view);
}

function readTuple(reader: ByteReader): Tuple {
  const count = reader.int16('tuple column count');
  // Every column takes at least its kind byte: reject impossible counts before allocating.
  if (count < 0 || count > reader.remaining) {
    throw new DecodeError(
      `pgoutput tuple: impossible column count ${count} (${reader.remaining} bytes left)`,
    );
  }
  const values: TupleValue[] = new Array<TupleValue>(count);
  for (let i = 0; i < count; i++) {
    const kind = reader.uint8('tuple column kind');
    switch (kind) {
      case 0x6e: // n
        values[i] = NULL_VALUE;
        break;
      case 0x75: // u
        values[i] = UNCHANGED_TOAST_VALUE;
        break;
      case 0x74: // t
        values[i] = { kind: 'text', text: reader.utf8(reader.int32('text length'), 'text value') };
        break;
      case 0x62: // b
        // Copied: the message must not alias (and so keep alive) the frame buffer.
        values[i] = {
          kind: 'binary',
          bytes: copy(reader.bytesView(reader.int32('binary length'), 'binary value')),
        };
        break;
      default:
        throw new DecodeError(`pgoutput tuple: unknown column kind ${describeByte(kind)} in column ${i}`);
    }
  }
  return values;
}

/** Reads the `K`/`O`/`N` marker that precedes a tuple. */
function tupleMarker(reader: ByteReader): number {
  return reader.uint8('tuple marker');
}

function unexpectedMarker(what: string, marker: number): DecodeError {
  return new DecodeError(`${what}: unexpected tuple marker ${describeByte(marker)}`);
}

export class PgoutputDecoder {
  readonly protocolVersion: PgoutputProtocolVersion;
  readonly parallelStreaming: boolean;
  private streaming = false;

  constructor(options: PgoutputDecoderOptions) {
    const { protocolVersion, parallelStreaming = false } = options;
    if (![1, 2, 3, 4].includes(protocolVersion)) {
      throw new SlotlakeError(`pgoutput protocol version must be 1..4, not ${String(protocolVersion)}`, {
        kind: 'config',
      });
    }
    if (parallelStreaming && protocolVersion < 4) {
      throw new SlotlakeError(
        `pgoutput parallel streaming needs protocol version 4, not ${protocolVersion}`,
        {
          kind: 'config',
        },
      );
    }
    this.protocolVersion = protocolVersion;
    this.parallelStreaming = parallelStreaming;
  }

  /** True between Stream Start and Stream Stop. */
  get inStream(): boolean {
    return this.streaming;
  }

  /**
   * Decodes one message. Throws `DecodeError` — and nothing else — for anything malformed, truncated,
   * followed by trailing bytes, or not allowed by the protocol version; the stream state then is unchanged.
   */
  decode(bytes: Uint8Array): LogicalMessage {
    if (bytes.byteLength === 0) throw new DecodeError('pgoutput message: empty message');
    const code = bytes[0] as number;
    const reader = new ByteReader(bytes, READER_NAMES[code] as string);
    const tag = reader.char('message tag');
    const minVersion = MIN_VERSION[tag];
    if (minVersion !== undefined && this.protocolVersion < minVersion) {
      throw new DecodeError(
        `${NAMES[tag]} (${describeByte(code)}) needs protocol version ${minVersion}, decoder is at ${this.protocolVersion}`,
      );
    }
    const message = this.body(tag, code, reader);
    reader.end();
    if (tag === 'S') this.streaming = true;
    else if (tag === 'E') this.streaming = false;
    return message;
  }

  private body(tag: string, code: number, reader: ByteReader): LogicalMessage {
    switch (tag) {
      case 'B': {
        const finalLsn = reader.lsn('final LSN');
        const commitTime = reader.int64('commit time');
        const xid = reader.uint32('xid');
        return { tag: 'begin', finalLsn, commitTime, xid };
      }
      case 'C': {
        const flags = reader.uint8('flags');
        const commitLsn = reader.lsn('commit LSN');
        const endLsn = reader.lsn('end LSN');
        const commitTime = reader.int64('commit time');
        return { tag: 'commit', flags, commitLsn, endLsn, commitTime };
      }
      case 'O': {
        const originLsn = reader.lsn('origin LSN');
        const name = reader.cstring('origin name');
        return { tag: 'origin', originLsn, name };
      }
      case 'R': {
        const xid = this.streamXid(reader);
        const relationId = reader.uint32('relation id');
        const namespace = reader.cstring('namespace');
        const name = reader.cstring('relation name');
        const identity = replicaIdentity(reader.uint8('replica identity'));
        const count = reader.int16('column count');
        // Each column takes at least 10 bytes (flags, empty name, type, modifier).
        if (count < 0 || count * 10 > reader.remaining) {
          throw new DecodeError(
            `pgoutput Relation: impossible column count ${count} (${reader.remaining} bytes left)`,
          );
        }
        const columns: RelationColumn[] = new Array<RelationColumn>(count);
        for (let i = 0; i < count; i++) {
          const flags = reader.uint8('column flags');
          const columnName = reader.cstring('column name');
          const typeOid = reader.uint32('column type');
          const typeModifier = reader.int32('column type modifier');
          columns[i] = { isKey: (flags & 1) !== 0, name: columnName, typeOid, typeModifier };
        }
        const relation = { relationId, namespace, name, replicaIdentity: identity, columns };
        return xid === undefined ? { tag: 'relation', relation } : { tag: 'relation', relation, xid };
      }
      case 'Y': {
        const xid = this.streamXid(reader);
        const typeOid = reader.uint32('type oid');
        const namespace = reader.cstring('type namespace');
        const name = reader.cstring('type name');
        return xid === undefined
          ? { tag: 'type', typeOid, namespace, name }
          : { tag: 'type', typeOid, namespace, name, xid };
      }
      case 'I': {
        const xid = this.streamXid(reader);
        const relationId = reader.uint32('relation id');
        const marker = tupleMarker(reader);
        if (marker !== 0x4e) throw unexpectedMarker('pgoutput Insert', marker);
        const newTuple = readTuple(reader);
        return xid === undefined
          ? { tag: 'insert', relationId, newTuple }
          : { tag: 'insert', relationId, newTuple, xid };
      }
      case 'U': {
        const xid = this.streamXid(reader);
        const relationId = reader.uint32('relation id');
        const marker = tupleMarker(reader);
        if (marker === 0x4e) {
          const newTuple = readTuple(reader);
          return xid === undefined
            ? { tag: 'update', relationId, newTuple }
            : { tag: 'update', relationId, newTuple, xid };
        }
        if (marker !== 0x4b && marker !== 0x4f) throw unexpectedMarker('pgoutput Update', marker);
        const old = readTuple(reader);
        const newMarker = tupleMarker(reader);
        if (newMarker !== 0x4e) throw unexpectedMarker('pgoutput Update', newMarker);
        const newTuple = readTuple(reader);
        if (marker === 0x4b) {
          return xid === undefined
            ? { tag: 'update', relationId, oldKey: old, newTuple }
            : { tag: 'update', relationId, oldKey: old, newTuple, xid };
        }
        return xid === undefined
          ? { tag: 'update', relationId, oldTuple: old, newTuple }
          : { tag: 'update', relationId, oldTuple: old, newTuple, xid };
      }
      case 'D': {
        const xid = this.streamXid(reader);
        const relationId = reader.uint32('relation id');
        const marker = tupleMarker(reader);
        if (marker === 0x4b) {
          const oldKey = readTuple(reader);
          return xid === undefined
            ? { tag: 'delete', relationId, oldKey }
            : { tag: 'delete', relationId, oldKey, xid };
        }
        if (marker === 0x4f) {
          const oldTuple = readTuple(reader);
          return xid === undefined
            ? { tag: 'delete', relationId, oldTuple }
            : { tag: 'delete', relationId, oldTuple, xid };
        }
        throw unexpectedMarker('pgoutput Delete', marker);
      }
      case 'T': {
        const xid = this.streamXid(reader);
        const count = reader.int32('relation count');
        const options = reader.uint8('options');
        if (count < 0 || count * 4 > reader.remaining) {
          throw new DecodeError(
            `pgoutput Truncate: impossible relation count ${count} (${reader.remaining} bytes left)`,
          );
        }
        const relationIds: number[] = new Array<number>(count);
        for (let i = 0; i < count; i++) relationIds[i] = reader.uint32('relation id');
        return xid === undefined
          ? { tag: 'truncate', options, relationIds }
          : { tag: 'truncate', options, relationIds, xid };
      }
      case 'M': {
        const xid = this.streamXid(reader);
        const flags = reader.uint8('flags');
        const lsn = reader.lsn('message LSN');
        const prefix = reader.cstring('prefix');
        const content = copy(reader.bytesView(reader.int32('content length'), 'content'));
        return xid === undefined
          ? { tag: 'message', flags, lsn, prefix, content }
          : { tag: 'message', flags, lsn, prefix, content, xid };
      }
      case 'S': {
        if (this.streaming) throw new DecodeError('pgoutput Stream Start: already inside a stream block');
        const xid = reader.uint32('xid');
        const firstSegment = reader.uint8('first segment') === 1;
        return { tag: 'stream-start', xid, firstSegment };
      }
      case 'E': {
        if (!this.streaming) throw new DecodeError('pgoutput Stream Stop: not inside a stream block');
        return { tag: 'stream-stop' };
      }
      case 'c': {
        const xid = reader.uint32('xid');
        const flags = reader.uint8('flags');
        const commitLsn = reader.lsn('commit LSN');
        const endLsn = reader.lsn('end LSN');
        const commitTime = reader.int64('commit time');
        return { tag: 'stream-commit', xid, flags, commitLsn, endLsn, commitTime };
      }
      case 'A': {
        const xid = reader.uint32('xid');
        const subXid = reader.uint32('subtransaction xid');
        if (!this.parallelStreaming) return { tag: 'stream-abort', xid, subXid };
        const abortLsn = reader.lsn('abort LSN');
        const abortTime = reader.int64('abort time');
        return { tag: 'stream-abort', xid, subXid, abortLsn, abortTime };
      }
      case 'b': {
        const prepareLsn = reader.lsn('prepare LSN');
        const endLsn = reader.lsn('end LSN');
        const prepareTime = reader.int64('prepare time');
        const xid = reader.uint32('xid');
        const gid = reader.cstring('gid');
        return { tag: 'begin-prepare', prepareLsn, endLsn, prepareTime, xid, gid };
      }
      case 'P':
      case 'p': {
        const flags = reader.uint8('flags');
        const prepareLsn = reader.lsn('prepare LSN');
        const endLsn = reader.lsn('end LSN');
        const prepareTime = reader.int64('prepare time');
        const xid = reader.uint32('xid');
        const gid = reader.cstring('gid');
        return {
          tag: tag === 'P' ? 'prepare' : 'stream-prepare',
          flags,
          prepareLsn,
          endLsn,
          prepareTime,
          xid,
          gid,
        };
      }
      case 'K': {
        const flags = reader.uint8('flags');
        const commitLsn = reader.lsn('commit LSN');
        const endLsn = reader.lsn('end LSN');
        const commitTime = reader.int64('commit time');
        const xid = reader.uint32('xid');
        const gid = reader.cstring('gid');
        return { tag: 'commit-prepared', flags, commitLsn, endLsn, commitTime, xid, gid };
      }
      case 'r': {
        const flags = reader.uint8('flags');
        const prepareEndLsn = reader.lsn('prepare end LSN');
        const rollbackEndLsn = reader.lsn('rollback end LSN');
        const prepareTime = reader.int64('prepare time');
        const rollbackTime = reader.int64('rollback time');
        const xid = reader.uint32('xid');
        const gid = reader.cstring('gid');
        return {
          tag: 'rollback-prepared',
          flags,
          prepareEndLsn,
          rollbackEndLsn,
          prepareTime,
          rollbackTime,
          xid,
          gid,
        };
      }
      default:
        throw new DecodeError(`pgoutput message: unknown message tag ${describeByte(code)}`);
    }
  }

  /** Inside a stream block, data messages start with the xid of the (sub)transaction they belong to. */
  private streamXid(reader: ByteReader): number | undefined {
    return this.streaming ? reader.uint32('xid') : undefined;
  }
}
