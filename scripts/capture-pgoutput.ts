/**
 * Captures real pgoutput messages from a throwaway PostgreSQL into test/fixtures/pgoutput/*.json.
 *
 * Each scenario gets its own database, publication (FOR ALL TABLES) and logical slot, created before a
 * scripted workload runs; the slot is then read with START_REPLICATION over a replication connection
 * until a final non-transactional marker message (prefix `slotlake-capture`) arrives, so every change of
 * the workload is in the capture. The XLogData payloads are stored as hex, together with the workload
 * SQL and the START_REPLICATION options. Long runs of inserts (the streamed transactions write thousands
 * of rows) are trimmed to their first two and last message; `index` keeps the original position.
 * frames.json keeps a few whole CopyData payloads (`w` XLogData, `k` keepalive) for the frame tests.
 *
 * Re-runnable: node --import tsx scripts/capture-pgoutput.ts
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import * as prettier from 'prettier';
import { PgoutputDecoder, type PgoutputProtocolVersion } from '../src/decoding/pgoutput.js';
import type { LogicalMessage } from '../src/decoding/messages.js';
import { startLocalPostgres } from '../src/devstack/postgres.js';
import { ZERO_LSN } from '../src/lsn.js';
import { decodeServerFrame, encodeStandbyStatus } from '../src/protocol/frames.js';

const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), '..', 'test', 'fixtures', 'pgoutput');
const MARKER_PREFIX = 'slotlake-capture';
const MARKER_SQL = `SELECT pg_logical_emit_message(false, '${MARKER_PREFIX}', 'end')`;
const CAPTURE_TIMEOUT_MS = 120_000;

/** A deterministic, incompressible ~2.5 kB text (over the 2 kB TOAST threshold; the column is STORAGE EXTERNAL): stored out of line in TOAST. */
const TOASTED_TEXT = `(SELECT string_agg(md5(i::text), '') FROM generate_series(1, 80) AS i)`;

interface CopyDataMessage {
  chunk: Buffer;
}

interface PgConnection {
  on(event: 'copyData', listener: (message: CopyDataMessage) => void): void;
  sendCopyFromChunk(chunk: Buffer): void;
  endCopyFrom(): void;
}

interface Capture {
  /** XLogData payloads (the pgoutput messages), in order. */
  readonly messages: Uint8Array[];
  /** Whole CopyData payloads worth keeping for the frame tests. */
  readonly frames: { name: string; bytes: Uint8Array }[];
}

interface StreamOptions {
  readonly protocolVersion: PgoutputProtocolVersion;
  readonly parallelStreaming?: boolean;
  readonly pluginOptions: Record<string, string>;
  /** Startup `options` for the replication connection (e.g. a short wal_sender_timeout). */
  readonly connectionOptions?: string;
  /** Keep reading after the marker until the server asks for a reply (needs a short wal_sender_timeout). */
  readonly awaitReplyRequest?: boolean;
}

/** Writes JSON formatted as the repository's Prettier check expects. */
async function writeJson(path: string, value: unknown): Promise<void> {
  const options = (await prettier.resolveConfig(path)) ?? {};
  writeFileSync(path, await prettier.format(JSON.stringify(value), { ...options, parser: 'json' }));
}

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

/** Reads `slot` from the start until the marker message, over a replication connection. */
async function readSlot(url: string, slot: string, options: StreamOptions): Promise<Capture> {
  const client = new pg.Client({
    connectionString: url,
    replication: 'database',
    // Text output of timestamps etc. must not depend on the machine's time zone.
    options: ['-c TimeZone=UTC -c DateStyle=ISO,MDY', options.connectionOptions ?? ''].join(' ').trim(),
  } as pg.ClientConfig);
  await client.connect();
  const connection = (client as unknown as { connection: PgConnection }).connection;
  const decoder = new PgoutputDecoder({
    protocolVersion: options.protocolVersion,
    parallelStreaming: options.parallelStreaming ?? false,
  });
  const capture: Capture = { messages: [], frames: [] };
  let sawMarker = false;
  let sawReplyRequest = false;
  let keepalives = 0;
  let xlogFrames = 0;
  let finish: () => void = () => undefined;
  let fail: (error: unknown) => void = () => undefined;
  const finished = new Promise<void>((resolve, reject) => {
    finish = resolve;
    fail = reject;
  });
  const done = () => sawMarker && (!options.awaitReplyRequest || sawReplyRequest);

  connection.on('copyData', ({ chunk }) => {
    try {
      if (done()) return;
      const payload = new Uint8Array(chunk); // copy: the parser reuses its buffer
      const frame = decodeServerFrame(payload);
      if (frame.type === 'keepalive') {
        if (keepalives++ < 2 || (frame.replyRequested && !sawReplyRequest)) {
          capture.frames.push({
            name: frame.replyRequested ? 'keepalive-reply-requested' : 'keepalive',
            bytes: payload,
          });
        }
        if (frame.replyRequested) {
          sawReplyRequest = true;
          const status = encodeStandbyStatus({
            written: frame.walEnd,
            flushed: ZERO_LSN,
            applied: ZERO_LSN,
            clientTimeUnixUs: BigInt(Date.now()) * 1000n,
            replyRequested: false,
          });
          connection.sendCopyFromChunk(Buffer.from(status));
        }
      } else if (!sawMarker) {
        if (xlogFrames++ < 2) capture.frames.push({ name: `xlogdata-${xlogFrames}`, bytes: payload });
        capture.messages.push(frame.data);
        const message = decoder.decode(frame.data);
        if (message.tag === 'message' && message.prefix === MARKER_PREFIX) sawMarker = true;
      }
      if (done()) finish();
    } catch (error) {
      fail(error);
    }
  });

  const pluginOptions = Object.entries(options.pluginOptions)
    .map(([name, value]) => `"${name}" '${value}'`)
    .join(', ');
  const streaming = client.query(`START_REPLICATION SLOT "${slot}" LOGICAL 0/0 (${pluginOptions})`);
  streaming.catch((error: unknown) => fail(error));
  const timer = setTimeout(() => fail(new Error(`capture of ${slot} timed out`)), CAPTURE_TIMEOUT_MS);
  try {
    await finished;
  } finally {
    clearTimeout(timer);
    // CopyDone ends the stream; the server answers with CopyDone and CommandComplete.
    connection.endCopyFrom();
    let stopTimer: NodeJS.Timeout | undefined;
    await Promise.race([
      streaming.catch(() => undefined),
      new Promise((resolve) => (stopTimer = setTimeout(resolve, 5_000))),
    ]);
    clearTimeout(stopTimer);
    await client.end().catch(() => undefined);
  }
  return capture;
}

/** Human-readable label for a captured message (fixture files are reviewed by people). */
function label(message: LogicalMessage, relations: Map<number, string>): string {
  const stream =
    'xid' in message && message.xid !== undefined && !message.tag.includes('-') ? ' (streamed)' : '';
  switch (message.tag) {
    case 'relation':
      relations.set(message.relation.relationId, message.relation.name);
      return `relation ${message.relation.namespace}.${message.relation.name}${stream}`;
    case 'type':
      return `type ${message.namespace}.${message.name}${stream}`;
    case 'insert':
      return `insert ${relations.get(message.relationId) ?? '?'}${stream}`;
    case 'update': {
      const old = message.oldKey ? ' old-key' : message.oldTuple ? ' old-tuple' : '';
      return `update ${relations.get(message.relationId) ?? '?'}${old}${stream}`;
    }
    case 'delete':
      return `delete ${relations.get(message.relationId) ?? '?'}${message.oldKey ? ' old-key' : ' old-tuple'}${stream}`;
    case 'truncate':
      return `truncate ${message.relationIds.map((id) => relations.get(id) ?? '?').join(',')}${stream}`;
    case 'message':
      return `message ${message.prefix}${message.flags & 1 ? ' transactional' : ''}${stream}`;
    case 'stream-start':
      return message.firstSegment ? 'stream-start first' : 'stream-start';
    case 'stream-abort':
      return message.xid === message.subXid ? 'stream-abort transaction' : 'stream-abort subtransaction';
    default:
      return message.tag;
  }
}

interface FixtureMessage {
  index: number;
  name: string;
  hex: string;
}

/** All messages except the middle of runs of inserts (kept: first two and last of each run). */
function trim(
  messages: Uint8Array[],
  decoded: LogicalMessage[],
  relations: Map<number, string>,
): FixtureMessage[] {
  const isInsert = (i: number) => decoded[i]?.tag === 'insert';
  const kept: FixtureMessage[] = [];
  decoded.forEach((message, i) => {
    const name = label(message, relations);
    const keep = !isInsert(i) || !isInsert(i - 1) || !isInsert(i - 2) || !isInsert(i + 1);
    if (keep) kept.push({ index: i, name, hex: hex(messages[i] as Uint8Array) });
  });
  return kept;
}

interface Scenario {
  readonly file: string;
  readonly description: string;
  readonly twoPhaseSlot?: boolean;
  readonly stream: StreamOptions;
  readonly setup: readonly string[];
  /** Run after the slot exists: statements in order, on session `a` unless `b` is named (a second client). */
  readonly workload: (sql: (statement: string, session?: 'a' | 'b') => Promise<void>) => Promise<void>;
}

const BASIC_SETUP = [
  `CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')`,
  `CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, qty int, price numeric(10,2), note varchar(40),
     feeling mood, data bytea, created timestamptz)`,
  `CREATE TABLE full_items (id int PRIMARY KEY, name text, qty int)`,
  `ALTER TABLE full_items REPLICA IDENTITY FULL`,
  `CREATE TABLE indexed (id int NOT NULL, code text NOT NULL, value int)`,
  `CREATE UNIQUE INDEX indexed_code ON indexed (code)`,
  `ALTER TABLE indexed REPLICA IDENTITY USING INDEX indexed_code`,
  `CREATE TABLE no_identity (id int, value text)`,
  `ALTER TABLE no_identity REPLICA IDENTITY NOTHING`,
  `CREATE TABLE big (id int PRIMARY KEY, body text, counter int)`,
  `ALTER TABLE big ALTER COLUMN body SET STORAGE EXTERNAL`,
  `CREATE TABLE parent (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text)`,
  `CREATE TABLE child (id serial PRIMARY KEY, parent_id int REFERENCES parent (id))`,
  `SELECT pg_replication_origin_create('slotlake-origin')`,
];

const SCENARIOS: Scenario[] = [
  {
    file: 'basic.json',
    description:
      'Protocol 1, messages on: inserts (enum type, NULLs, unicode, bytea, numeric), updates with no old ' +
      "tuple, old key ('K', key change) and old tuple ('O', REPLICA IDENTITY FULL), unchanged TOAST ('u'), " +
      "deletes ('K' and 'O'), replica identity index and nothing, truncates (CASCADE + RESTART IDENTITY, " +
      'plain), logical messages (transactional and not), a replication origin',
    stream: {
      protocolVersion: 1,
      pluginOptions: { proto_version: '1', publication_names: 'pub', messages: 'true' },
      connectionOptions: '-c wal_sender_timeout=1000',
      awaitReplyRequest: true,
    },
    setup: BASIC_SETUP,
    async workload(sql) {
      await sql(`INSERT INTO items VALUES
        (1, 'plain', 10, 12.50, NULL, 'happy', '\\x00ff10', '2024-01-02 03:04:05.678901+00'),
        (2, 'héllo wörld ✓ 日本語 🎉', NULL, NULL, 'naïve', 'sad', NULL, NULL)`);
      await sql(`UPDATE items SET qty = 11 WHERE id = 1`);
      await sql(`UPDATE items SET id = 3, note = 'moved' WHERE id = 2`);
      await sql(`INSERT INTO full_items VALUES (1, 'full', 1), (2, NULL, 2)`);
      await sql(`UPDATE full_items SET qty = 5 WHERE id = 1`);
      await sql(`DELETE FROM items WHERE id = 1`);
      await sql(`DELETE FROM full_items WHERE id = 2`);
      await sql(`INSERT INTO indexed VALUES (1, 'a', 1)`);
      await sql(`UPDATE indexed SET code = 'b' WHERE code = 'a'`);
      await sql(`INSERT INTO no_identity VALUES (1, 'nothing')`);
      await sql(`INSERT INTO big VALUES (1, ${TOASTED_TEXT}, 0)`);
      await sql(`UPDATE big SET counter = counter + 1 WHERE id = 1`);
      await sql(`INSERT INTO parent (name) VALUES ('p1'), ('p2')`);
      await sql(`INSERT INTO child (parent_id) VALUES (1), (2)`);
      await sql(`TRUNCATE parent RESTART IDENTITY CASCADE`);
      await sql(`TRUNCATE full_items`);
      await sql(`BEGIN`);
      await sql(`INSERT INTO items VALUES (10, 'with message', 1, 1, NULL, 'ok', NULL, NULL)`);
      await sql(`SELECT pg_logical_emit_message(true, 'slotlake', 'transactional payload')`);
      await sql(`COMMIT`);
      await sql(`SELECT pg_logical_emit_message(false, 'slotlake', '\\x00010203ff'::bytea)`);
      await sql(`SELECT pg_replication_origin_session_setup('slotlake-origin')`);
      await sql(`BEGIN`);
      await sql(`SELECT pg_replication_origin_xact_setup('0/ABCDEF', '2024-01-02 03:04:05+00')`);
      await sql(`INSERT INTO items VALUES (20, 'from origin', 2, 2, NULL, NULL, NULL, NULL)`);
      await sql(`COMMIT`);
      await sql(`SELECT pg_replication_origin_session_reset()`);
    },
  },
  {
    file: 'binary.json',
    description: "Protocol 1 with binary 'true': tuple values in the types' binary send format ('b')",
    stream: {
      protocolVersion: 1,
      pluginOptions: { proto_version: '1', publication_names: 'pub', binary: 'true', messages: 'true' },
    },
    setup: [
      `CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')`,
      `CREATE TABLE bin (id int PRIMARY KEY, n bigint, t text, f float8, b bool, d bytea, feeling mood)`,
    ],
    async workload(sql) {
      await sql(
        `INSERT INTO bin VALUES (1, -2, 'text ✓', 1.5, true, '\\xdeadbeef', 'ok'), (2, NULL, '', 0, false, '', NULL)`,
      );
      await sql(`UPDATE bin SET id = 3 WHERE id = 2`);
    },
  },
  {
    file: 'streaming.json',
    description:
      "Protocol 2, streaming 'on', logical_decoding_work_mem 64kB: a large transaction streamed in several " +
      'blocks (with an enum column for a streamed Type, a transactional message, a savepoint rolled back ' +
      'after it was streamed (Stream Abort of the subtransaction), a released savepoint, update, delete, ' +
      'truncate) and committed (Stream Commit) while another session commits a small transaction in ' +
      'between; then a large transaction rolled back (Stream Abort of the whole transaction)',
    stream: {
      protocolVersion: 2,
      pluginOptions: { proto_version: '2', publication_names: 'pub', streaming: 'on', messages: 'true' },
    },
    setup: [
      `CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')`,
      `CREATE TABLE stream_rows (id int PRIMARY KEY, payload text, feeling mood)`,
      `CREATE TABLE side (id int PRIMARY KEY, note text)`,
      `CREATE TABLE scratch (id int)`,
    ],
    async workload(sql) {
      await sql(`BEGIN`, 'a');
      await sql(`INSERT INTO scratch VALUES (1)`, 'a');
      await sql(
        `INSERT INTO stream_rows SELECT i, 'row ' || i, 'ok' FROM generate_series(1, 1000) AS i`,
        'a',
      );
      await sql(`SELECT pg_logical_emit_message(true, 'slotlake', 'inside a streamed transaction')`, 'a');
      await sql(`INSERT INTO side VALUES (1, 'committed while the large transaction is open')`, 'b');
      await sql(`SAVEPOINT s1`, 'a');
      await sql(
        `INSERT INTO stream_rows SELECT i, 'rolled back ' || i FROM generate_series(1001, 2000) AS i`,
        'a',
      );
      await sql(`ROLLBACK TO SAVEPOINT s1`, 'a');
      await sql(`SAVEPOINT s2`, 'a');
      await sql(`INSERT INTO stream_rows VALUES (5000, 'in released savepoint', 'happy')`, 'a');
      await sql(`RELEASE SAVEPOINT s2`, 'a');
      await sql(`UPDATE stream_rows SET payload = 'updated' WHERE id = 1`, 'a');
      await sql(`DELETE FROM stream_rows WHERE id = 2`, 'a');
      await sql(`TRUNCATE scratch`, 'a');
      await sql(`COMMIT`, 'a');
      await sql(`BEGIN`, 'a');
      await sql(
        `INSERT INTO stream_rows SELECT i, 'aborted ' || i FROM generate_series(10001, 11000) AS i`,
        'a',
      );
      await sql(`ROLLBACK`, 'a');
    },
  },
  {
    file: 'two-phase.json',
    description:
      "Protocol 3, two_phase 'on' (slot created with two_phase): a prepared transaction committed " +
      '(Begin Prepare, Prepare, Commit Prepared), one rolled back (Rollback Prepared), and a plain commit',
    twoPhaseSlot: true,
    stream: {
      protocolVersion: 3,
      pluginOptions: { proto_version: '3', publication_names: 'pub', two_phase: 'on', messages: 'true' },
    },
    setup: [`CREATE TABLE accounts (id int PRIMARY KEY, balance int)`],
    async workload(sql) {
      await sql(`BEGIN`);
      await sql(`INSERT INTO accounts VALUES (1, 100)`);
      await sql(`PREPARE TRANSACTION 'slotlake-gid-commit'`);
      await sql(`COMMIT PREPARED 'slotlake-gid-commit'`);
      await sql(`BEGIN`);
      await sql(`UPDATE accounts SET balance = 50 WHERE id = 1`);
      await sql(`PREPARE TRANSACTION 'slotlake-gid-rollback'`);
      await sql(`ROLLBACK PREPARED 'slotlake-gid-rollback'`);
      await sql(`INSERT INTO accounts VALUES (2, 7)`);
    },
  },
  {
    file: 'parallel.json',
    description:
      "Protocol 4, streaming 'parallel', two_phase 'on': a large prepared transaction streamed then " +
      'prepared (Stream Prepare) and committed (Commit Prepared); a large transaction whose rolled-back ' +
      'savepoint was streamed, then committed; a large transaction rolled back — Stream Abort carries ' +
      'the abort LSN and time',
    twoPhaseSlot: true,
    stream: {
      protocolVersion: 4,
      parallelStreaming: true,
      pluginOptions: {
        proto_version: '4',
        publication_names: 'pub',
        streaming: 'parallel',
        two_phase: 'on',
        messages: 'true',
      },
    },
    setup: [`CREATE TABLE stream_rows (id int PRIMARY KEY, payload text)`],
    async workload(sql) {
      await sql(`BEGIN`);
      await sql(`INSERT INTO stream_rows SELECT i, 'prepared ' || i FROM generate_series(1, 1000) AS i`);
      await sql(`PREPARE TRANSACTION 'slotlake-stream-gid'`);
      await sql(`COMMIT PREPARED 'slotlake-stream-gid'`);
      await sql(`BEGIN`);
      await sql(`INSERT INTO stream_rows SELECT i, 'kept ' || i FROM generate_series(1001, 2000) AS i`);
      await sql(`SAVEPOINT s1`);
      await sql(
        `INSERT INTO stream_rows SELECT i, 'rolled back ' || i FROM generate_series(2001, 3000) AS i`,
      );
      await sql(`ROLLBACK TO SAVEPOINT s1`);
      await sql(`COMMIT`);
      await sql(`BEGIN`);
      await sql(`INSERT INTO stream_rows SELECT i, 'aborted ' || i FROM generate_series(3001, 4000) AS i`);
      await sql(`ROLLBACK`);
    },
  },
];

async function runScenario(
  server: Awaited<ReturnType<typeof startLocalPostgres>>,
  scenario: Scenario,
  serverVersion: string,
  frames: { scenario: string; name: string; hex: string }[],
): Promise<void> {
  const database = `capture_${scenario.file.replace(/\.json$/, '').replace(/-/g, '_')}`;
  const url = await server.createDatabase(database);
  const a = new pg.Client({ connectionString: url });
  const b = new pg.Client({ connectionString: url });
  await a.connect();
  await b.connect();
  const workloadLog: string[] = [];
  try {
    for (const statement of scenario.setup) await a.query(statement);
    await a.query(`CREATE PUBLICATION pub FOR ALL TABLES`);
    await a.query(`SELECT pg_create_logical_replication_slot($1, 'pgoutput', false, $2)`, [
      database,
      scenario.twoPhaseSlot ?? false,
    ]);
    await scenario.workload(async (statement, session = 'a') => {
      workloadLog.push(session === 'a' ? statement.replace(/\s+/g, ' ') : `-- session b: ${statement}`);
      await (session === 'a' ? a : b).query(statement);
    });
    await a.query(MARKER_SQL);
  } finally {
    await a.end();
    await b.end();
  }

  const capture = await readSlot(url, database, scenario.stream);
  const decoder = new PgoutputDecoder({
    protocolVersion: scenario.stream.protocolVersion,
    parallelStreaming: scenario.stream.parallelStreaming ?? false,
  });
  const decoded = capture.messages.map((bytes) => decoder.decode(bytes));
  const relations = new Map<number, string>();
  const messages = trim(capture.messages, decoded, relations);
  const fixture = {
    description: scenario.description,
    server: serverVersion,
    protocolVersion: scenario.stream.protocolVersion,
    parallelStreaming: scenario.stream.parallelStreaming ?? false,
    startReplicationOptions: scenario.stream.pluginOptions,
    setup: scenario.setup.map((statement) => statement.replace(/\s+/g, ' ')),
    workload: [...workloadLog, MARKER_SQL],
    capturedMessages: capture.messages.length,
    messages,
  };
  await writeJson(join(FIXTURES, scenario.file), fixture);
  for (const frame of capture.frames)
    frames.push({ scenario: scenario.file, name: frame.name, hex: hex(frame.bytes) });
  console.log(`${scenario.file}: ${capture.messages.length} messages captured, ${messages.length} kept`);
}

async function main(): Promise<void> {
  mkdirSync(FIXTURES, { recursive: true });
  const server = await startLocalPostgres({
    settings: { logical_decoding_work_mem: '64kB', max_prepared_transactions: '10' },
  });
  try {
    const admin = new pg.Client({ connectionString: server.url() });
    await admin.connect();
    const version = (await admin.query<{ server_version: string }>('SHOW server_version')).rows[0]
      ?.server_version;
    await admin.end();
    const serverVersion = `PostgreSQL ${version ?? '?'}`;
    const frames: { scenario: string; name: string; hex: string }[] = [];
    for (const scenario of SCENARIOS) await runScenario(server, scenario, serverVersion, frames);
    const framesFixture = {
      description:
        "Whole CopyData payloads from START_REPLICATION: 'w' XLogData (first two of each scenario) and " +
        "'k' primary keepalives (a reply-requested one comes from a session with wal_sender_timeout=1s)",
      server: serverVersion,
      frames,
    };
    await writeJson(join(FIXTURES, 'frames.json'), framesFixture);
  } finally {
    await server.stop();
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
