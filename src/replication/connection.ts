/**
 * The streaming-replication connection: the ONE place that touches node-postgres' connection internals.
 *
 * A logical replication session is an ordinary Postgres connection opened with `replication=database`.
 * On it, IDENTIFY_SYSTEM reports the server's WAL position, CREATE_REPLICATION_SLOT makes a slot, and
 * START_REPLICATION SLOT s LOGICAL <lsn> (options) switches the connection into CopyBoth mode: the server
 * streams CopyData frames (XLogData `w`, keepalive `k`) and the client answers with standby status
 * updates (`r`) that report how far it has durably stored the stream (the *flush* position — the only
 * thing that lets the server recycle WAL and advance the slot's confirmed_flush_lsn).
 * https://www.postgresql.org/docs/current/protocol-replication.html
 *
 * This adapter decodes each CopyData frame and hands it to a frame queue (replication/frame-queue.ts), which
 * keeps arrival order and pauses this socket when it holds more than a high-water mark of bytes
 * (backpressure: the server then blocks on TCP instead of us buffering without bound). Status updates are
 * sent by a timer owned here, independent of the consumer, so they keep flowing while the pipeline is busy
 * uploading; they always report the flush position last given to `acknowledge()`, which only the commit
 * sequence calls. A clean stop sends a final status update, then CopyDone, and waits for the server to end
 * the stream.
 */
import pg from 'pg';
import { classify, SlotlakeError } from '../errors.js';
import { formatLsn, maxLsn, parseLsn, ZERO_LSN, type Lsn } from '../lsn.js';
import { quoteIdentifier, quoteLiteral } from '../names.js';
import { decodeServerFrame, encodeStandbyStatus, type ServerFrame } from '../protocol/frames.js';
import { systemClock, type Clock } from '../support/deadline.js';
import { sourceAccessFromEnvironment, type SourceAccess, type SourceEndpoint } from './credentials.js';
import { DEFAULT_HIGH_WATER_BYTES, FrameQueue, type NextFrame } from './frame-queue.js';

export type { NextFrame } from './frame-queue.js';

/**
 * Session settings that fix how the server prints values (see decoding/values.ts). The output plugin
 * formats values in the walsender, under this session's settings, so they must hold whatever the user's
 * connection string or PGOPTIONS says: they go last in the startup `options` (the server applies `-c`
 * settings in order, the last one wins) and are checked once connected (`assertSessionSettings`).
 */
export const SESSION_SETTINGS: Readonly<Record<string, string>> = {
  DateStyle: 'ISO',
  TimeZone: 'UTC',
  IntervalStyle: 'postgres',
  extra_float_digits: '3',
  bytea_output: 'hex',
};

export const SESSION_OPTIONS = Object.entries(SESSION_SETTINGS)
  .map(([name, value]) => `-c ${name}=${value}`)
  .join(' ');

/**
 * The connection string without its `options` parameter, and that parameter: node-postgres lets a
 * connection string's values override the config's, so the options are taken out and merged by hand.
 */
function splitOptions(databaseUrl: string): { url: string; options: string | undefined } {
  let url: URL;
  try {
    url = new URL(databaseUrl);
  } catch {
    return { url: databaseUrl, options: undefined };
  }
  const options = url.searchParams.get('options') ?? undefined;
  if (options === undefined) return { url: databaseUrl, options };
  url.searchParams.delete('options');
  return { url: url.toString(), options };
}

export interface ConnectionSettings {
  /** DATABASE_URL, or undefined to let pg read the PG* variables. */
  readonly databaseUrl: string | undefined;
  readonly applicationName?: string;
  readonly connectTimeoutMs?: number;
  /**
   * Secret, IAM authentication and TLS policy (credentials.ts); absent: the policy the process environment
   * describes.
   */
  readonly access?: SourceAccess;
}

/**
 * The node-postgres config of a connection. With an `endpoint` (the connection parameters resolved by
 * source access: a secret's values, an IAM token, TLS options) it replaces the connection string, whose
 * values node-postgres would otherwise let win over the config's.
 */
export function clientConfig(
  settings: ConnectionSettings,
  replication: boolean,
  endpoint?: SourceEndpoint,
): pg.ClientConfig {
  const { url, options: urlOptions } =
    endpoint !== undefined
      ? { url: undefined, options: endpoint.options }
      : settings.databaseUrl === undefined
        ? { url: undefined, options: undefined }
        : splitOptions(settings.databaseUrl);
  const userOptions = urlOptions ?? process.env.PGOPTIONS;
  return {
    ...(url === undefined ? {} : { connectionString: url }),
    application_name: settings.applicationName ?? 'slotlake',
    ...(endpoint === undefined ? {} : endpointConfig(endpoint)),
    connectionTimeoutMillis: settings.connectTimeoutMs ?? 15_000,
    options: userOptions ? `${userOptions} ${SESSION_OPTIONS}` : SESSION_OPTIONS,
    keepAlive: true,
    ...(replication ? { replication: 'database' } : {}),
  } as pg.ClientConfig;
}

/** The endpoint's values as node-postgres config fields (unset ones left to pg's PG* defaults). */
function endpointConfig(endpoint: SourceEndpoint): Partial<pg.ClientConfig> {
  const config: Record<string, unknown> = { ...endpoint.parameters };
  if (endpoint.host !== undefined) config.host = endpoint.host;
  if (endpoint.port !== undefined) config.port = endpoint.port;
  if (endpoint.user !== undefined) config.user = endpoint.user;
  if (endpoint.database !== undefined) config.database = endpoint.database;
  if (endpoint.password !== undefined) config.password = endpoint.password;
  if (endpoint.ssl !== undefined) config.ssl = endpoint.ssl;
  return config as Partial<pg.ClientConfig>;
}

/**
 * Opens a connection with the settings' source access. When the server rejects the credentials and they
 * came from a secret, the secret is fetched again — it may have been rotated since it was cached — and
 * the connection tried once more. `signal` cuts a connection attempt under way (its socket is destroyed).
 */
export async function connectClient(
  settings: ConnectionSettings,
  replication: boolean,
  what: string,
  signal?: AbortSignal,
): Promise<pg.Client> {
  const access = settings.access ?? sourceAccessFromEnvironment();
  let refused: SourceEndpoint | undefined;
  for (;;) {
    const refresh = refused !== undefined;
    const endpoint = await access.endpoint(settings.databaseUrl, refused ?? false);
    signal?.throwIfAborted();
    const client = new pg.Client(clientConfig(settings, replication, endpoint));
    client.on('error', () => undefined); // surfaced through the stream / query promises instead
    const cut = () => internals(client).connection.stream.destroy(signal?.reason as Error);
    signal?.addEventListener('abort', cut, { once: true });
    try {
      await client.connect();
      return client;
    } catch (error) {
      await client.end().catch(() => undefined);
      signal?.throwIfAborted();
      const failure = classify(error, { origin: 'source', what });
      if (!refresh && failure.kind === 'source-auth' && access.refreshable && endpoint !== undefined) {
        refused = endpoint;
        continue;
      }
      throw failure;
    } finally {
      signal?.removeEventListener('abort', cut);
    }
  }
}

export interface SystemIdentity {
  readonly systemId: string;
  readonly timeline: number;
  /** The server's current WAL flush position. */
  readonly walPosition: Lsn;
  readonly database: string;
}

export interface StartOptions {
  readonly slot: string;
  readonly startLsn: Lsn;
  /** Output-plugin options, e.g. {proto_version: '1', publication_names: 'pub'}. */
  readonly pluginOptions: Readonly<Record<string, string>>;
  readonly statusIntervalMs: number;
  /** Pause reading above this many queued bytes. */
  readonly highWaterBytes?: number;
}

interface PgInternals {
  connection: {
    on(event: 'copyData', listener: (message: { chunk: Buffer }) => void): void;
    removeAllListeners(event: string): void;
    sendCopyFromChunk(chunk: Buffer): void;
    endCopyFrom(): void;
    stream: NodeJS.ReadableStream & { pause(): void; resume(): void; destroy(error?: Error): void };
  };
}

function internals(client: pg.Client): PgInternals {
  return client as unknown as PgInternals;
}

export class ReplicationConnection {
  private constructor(private readonly client: pg.Client) {}

  static async open(settings: ConnectionSettings, signal?: AbortSignal): Promise<ReplicationConnection> {
    return new ReplicationConnection(
      await connectClient(settings, true, 'connecting to postgres (replication)', signal),
    );
  }

  /**
   * Checks that the session settings values depend on are in force (see `SESSION_SETTINGS`): one query
   * reads them all (SQL runs on a `replication=database` connection).
   */
  async assertSessionSettings(): Promise<void> {
    const names = Object.keys(SESSION_SETTINGS);
    const result = await this.client.query({
      text: `SELECT ${names.map((name) => `current_setting(${quoteLiteral(name)})`).join(', ')}`,
      rowMode: 'array',
    });
    const actuals = result.rows[0] as unknown[];
    const wrong: string[] = [];
    for (const [index, [name, value]] of Object.entries(SESSION_SETTINGS).entries()) {
      const actual = String(actuals[index]);
      if (actual.toLowerCase() !== value.toLowerCase() && !(name === 'DateStyle' && actual.startsWith('ISO')))
        wrong.push(`${name} is ${actual}, not ${value}`);
    }
    if (wrong.length > 0)
      throw new SlotlakeError(`the replication session's settings could not be fixed: ${wrong.join('; ')}`, {
        kind: 'config',
        origin: 'source',
        hint: 'a setting in DATABASE_URL options, PGOPTIONS or the role/database defaults overrides them; remove it',
      });
  }

  async identifySystem(): Promise<SystemIdentity> {
    const result = await this.client.query('IDENTIFY_SYSTEM');
    const row = result.rows[0] as {
      systemid: string;
      timeline: string;
      xlogpos: string;
      dbname: string | null;
    };
    return {
      systemId: row.systemid,
      timeline: Number(row.timeline),
      walPosition: parseLsn(row.xlogpos),
      database: row.dbname ?? '',
    };
  }

  /**
   * CREATE_REPLICATION_SLOT name LOGICAL plugin; returns the consistent point. `failover` (PostgreSQL 17+)
   * marks the slot for synchronization to standbys, so it survives a failover.
   */
  async createSlot(slot: string, plugin: string, options: { failover?: boolean } = {}): Promise<Lsn> {
    const slotOptions = ["SNAPSHOT 'nothing'", ...(options.failover ? ['FAILOVER true'] : [])].join(', ');
    const result = await this.client.query(
      `CREATE_REPLICATION_SLOT ${quoteIdentifier(slot)} LOGICAL ${quoteIdentifier(plugin)} (${slotOptions})`,
    );
    const row = result.rows[0] as { consistent_point: string };
    return parseLsn(row.consistent_point);
  }

  /** START_REPLICATION: from here on the connection belongs to the returned stream. */
  startReplication(options: StartOptions, clock: Clock = systemClock): ReplicationStream {
    const pluginOptions = Object.entries(options.pluginOptions)
      .map(([name, value]) => `${quoteIdentifier(name)} ${quoteLiteral(value)}`)
      .join(', ');
    const command =
      `START_REPLICATION SLOT ${quoteIdentifier(options.slot)} LOGICAL ${formatLsn(options.startLsn)}` +
      (pluginOptions ? ` (${pluginOptions})` : '');
    return new ReplicationStream(this.client, command, options, clock);
  }

  async close(): Promise<void> {
    await this.client.end().catch(() => undefined);
  }
}

/**
 * The error of a replication connection that ended while streaming: a source connection loss (origin set, as
 * the run's reconnect decision goes by it — whichever of the query's failure and the connection's `end` is
 * noticed first, the run must see the same kind of error).
 */
export function connectionClosedError(): SlotlakeError {
  return new SlotlakeError('the Postgres replication connection closed unexpectedly', {
    kind: 'source-connection-lost',
    origin: 'source',
    retryable: true,
    hint: 'the next run resumes from the checkpoint',
  });
}

/**
 * One START_REPLICATION stream. Frames come out of `next()` in arrival order; `acknowledge()` moves the
 * flush position reported to the server (never backwards); `stop()` ends the stream cleanly.
 */
export class ReplicationStream {
  private readonly queue: FrameQueue;
  private readonly statusTimer: NodeJS.Timeout;
  private readonly done: Promise<void>;
  private stopping = false;

  /** Highest WAL position received in any frame (reported as "written"). */
  private received: Lsn = ZERO_LSN;
  /** Position durably archived and checkpointed: the only "flushed" we ever report. */
  private flushed: Lsn;
  /** Latest server WAL end seen in a keepalive or XLogData. */
  private serverWalEnd: Lsn = ZERO_LSN;
  private lastStatusAtMs = 0;
  statusUpdatesSent = 0;

  constructor(
    private readonly client: pg.Client,
    command: string,
    private readonly options: StartOptions,
    private readonly clock: Clock,
  ) {
    this.flushed = options.startLsn;
    const connection = internals(client).connection;
    this.queue = new FrameQueue(
      { pause: () => connection.stream.pause(), resume: () => connection.stream.resume() },
      options.highWaterBytes ?? DEFAULT_HIGH_WATER_BYTES,
    );
    connection.on('copyData', (message) => this.onCopyData(message.chunk));
    this.done = client.query(command).then(
      () => this.queue.end(),
      (error: unknown) => {
        const keepFailure = this.stopping && this.queue.failure !== undefined;
        this.queue.end(
          keepFailure
            ? undefined
            : classify(error, { origin: 'source', what: 'postgres replication stream' }),
        );
      },
    );
    this.done.catch(() => undefined);
    client.on('end', () => {
      if (!this.queue.ended) {
        this.queue.end(
          this.stopping
            ? undefined
            : (this.queue.failure ??
                new SlotlakeError('the Postgres replication connection closed unexpectedly', {
                  kind: 'source-connection-lost',
                  origin: 'source',
                  retryable: true,
                  hint: 'the next run resumes from the checkpoint',
                })),
        );
      }
    });
    this.statusTimer = setInterval(
      () => this.sendStatus(false),
      Math.max(50, Math.floor(options.statusIntervalMs / 2)),
    );
    this.statusTimer.unref();
  }

  private onCopyData(chunk: Buffer): void {
    let frame: ServerFrame;
    try {
      // Copy: pg reuses its read buffer, and frames may wait in the queue. Buffer.from copies a small
      // frame into Node's shared 8 KiB pool instead of giving each its own ArrayBuffer (a separate native
      // allocation per change, which kept ~2× the payload alive and fragmented the malloc heap).
      frame = decodeServerFrame(Buffer.from(chunk));
    } catch (error) {
      this.queue.fail(classify(error, { what: 'decoding a replication frame' }));
      internals(this.client).connection.stream.destroy();
      return;
    }
    if (frame.type === 'keepalive') {
      this.serverWalEnd = maxLsn(this.serverWalEnd, frame.walEnd);
      if (frame.replyRequested) this.sendStatus(true, false);
    } else {
      this.serverWalEnd = maxLsn(this.serverWalEnd, frame.walEnd);
      this.received = maxLsn(this.received, frame.walStart);
    }
    if (this.stopping) return; // after CopyDone: read to the end, keep nothing
    this.queue.push(frame);
  }

  /** A frame already received, without waiting (undefined when none is queued); throws a stream failure. */
  poll(): ServerFrame | undefined {
    return this.queue.poll();
  }

  /** The next frame, `'timeout'` after `timeoutMs` without one, or `'ended'` when the stream is over. */
  next(timeoutMs: number): Promise<NextFrame> {
    return this.queue.next(timeoutMs);
  }

  /** Frames waiting to be consumed. */
  get pendingFrames(): number {
    return this.queue.pending;
  }

  /** How often reading paused because the pipeline was behind. */
  get readPauses(): number {
    return this.queue.readPauses;
  }

  /** The server's WAL end as last reported. */
  get serverPosition(): Lsn {
    return this.serverWalEnd;
  }

  get flushedPosition(): Lsn {
    return this.flushed;
  }

  /**
   * Reports `position` as flushed. Called only by the commit sequence, after the checkpoint that covers
   * it is stored. Never moves backwards. Sends a status update at once.
   */
  acknowledge(position: Lsn): void {
    if (position > this.flushed) this.flushed = position;
    this.sendStatus(true, false);
  }

  /** Asks the server for a keepalive now (used to learn its WAL position while idle). */
  requestKeepalive(): void {
    this.sendStatus(true, true);
  }

  private sendStatus(force: boolean, replyRequested = false): void {
    if (this.queue.ended || this.stopping) return;
    const now = this.clock.nowMs();
    if (!force && now - this.lastStatusAtMs < this.options.statusIntervalMs) return;
    this.lastStatusAtMs = now;
    const written = maxLsn(this.received, this.flushed);
    const status = encodeStandbyStatus({
      written,
      flushed: this.flushed,
      applied: this.flushed,
      clientTimeUnixUs: BigInt(Math.round(now * 1000)),
      replyRequested,
    });
    try {
      internals(this.client).connection.sendCopyFromChunk(
        Buffer.from(status.buffer, status.byteOffset, status.byteLength),
      );
      this.statusUpdatesSent++;
    } catch {
      // the socket is gone; the stream's end handler reports it
    }
  }

  /**
   * Clean stop: a last status update with the final flush position, then CopyDone; then read (and drop)
   * whatever the server still sends until it ends the stream. Bounded by `timeoutMs`.
   */
  async stop(timeoutMs = 5000): Promise<void> {
    clearInterval(this.statusTimer);
    if (!this.queue.ended && !this.stopping) {
      this.sendStatus(true, false);
      this.stopping = true;
      this.queue.clear();
      try {
        internals(this.client).connection.endCopyFrom();
      } catch {
        // already closed
      }
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        this.done,
        new Promise<void>((resolve) => {
          timer = setTimeout(resolve, timeoutMs);
        }),
      ]);
      if (timer) clearTimeout(timer);
    }
    internals(this.client).connection.removeAllListeners('copyData');
  }

  /** Stops without a final status update (after a failure): nothing more is acknowledged. */
  abandon(): void {
    clearInterval(this.statusTimer);
    this.stopping = true;
    this.queue.end();
    internals(this.client).connection.removeAllListeners('copyData');
    try {
      internals(this.client).connection.stream.destroy();
    } catch {
      // already gone
    }
  }
}
