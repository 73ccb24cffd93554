/**
 * End to end against a live Debian PostgreSQL 15 + wal2json: a real replication connection
 * (`replication: 'database'`, slotlake's session options), CREATE_REPLICATION_SLOT … wal2json,
 * START_REPLICATION with slotlake's plugin options, CopyData frames through `decodeServerFrame` and the
 * payloads through `Wal2jsonDecoder`. Needs `apt-get install postgresql-15 postgresql-15-wal2json`;
 * without them the test fails (CI installs them).
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import type { LogicalMessage, Relation, TupleValue } from '../../src/decoding/messages.js';
import {
  Wal2jsonDecoder,
  wal2jsonConnectionOptions,
  wal2jsonStartReplicationOptions,
} from '../../src/decoding/wal2json.js';
import { debianPostgresBinDir, startLocalPostgres, type LocalPostgres } from '../../src/devstack/postgres.js';
import type { Lsn } from '../../src/lsn.js';
import { decodeServerFrame } from '../../src/protocol/frames.js';

const bin = debianPostgresBinDir(15);
const installed = bin !== undefined && existsSync('/usr/lib/postgresql/15/lib/wal2json.so');
const MISSING =
  'Debian PostgreSQL 15 with wal2json is not installed (/usr/lib/postgresql/15/bin, lib/wal2json.so): ' +
  'run `apt-get install postgresql-15 postgresql-15-wal2json`';

interface Received {
  walStart: Lsn;
  message: LogicalMessage;
}

/** Resolves when `condition` holds after a received message; rejects after `ms`. */
function waitFor(check: (listener: () => void) => void, condition: () => boolean, ms: number, what: string) {
  return new Promise<void>((resolve, reject) => {
    if (condition()) return resolve();
    const timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    check(() => {
      if (condition()) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
}

const text = (value: TupleValue | undefined) =>
  value === undefined
    ? undefined
    : value.kind === 'text'
      ? value.text
      : value.kind === 'null'
        ? null
        : value.kind;

describe('wal2json over a live replication connection', () => {
  let server: LocalPostgres | undefined;

  before(async () => {
    if (installed)
      server = await startLocalPostgres({ binDir: bin, settings: { track_commit_timestamp: 'on' } });
  });

  after(async () => {
    await server?.stop();
  });

  it('streams Begin, Relation, changes, a message and Commit of a transaction', async () => {
    assert.ok(installed && server, MISSING);
    const url = await server.createDatabase('wal2json_e2e');
    const options = wal2jsonConnectionOptions();
    const sql = new pg.Client({ connectionString: url, options });
    const replication = new pg.Client({
      connectionString: url,
      options,
      replication: 'database',
    } as pg.ClientConfig);
    replication.on('error', () => undefined); // the stream ends when we disconnect
    await sql.connect();
    await replication.connect();
    try {
      await sql.query(
        `CREATE TABLE t (id int8 PRIMARY KEY, n numeric, b bytea, at timestamptz, ok bool, body text)`,
      );
      await sql.query(`ALTER TABLE t ALTER COLUMN body SET STORAGE EXTERNAL`);
      const slot = await replication.query(`CREATE_REPLICATION_SLOT s LOGICAL wal2json`);
      assert.equal(slot.rows[0]?.output_plugin, 'wal2json');

      // one transaction with every kind of change, then one leaving a TOASTed value unchanged
      await sql.query('BEGIN');
      const xid = Number((await sql.query<{ x: string }>('SELECT txid_current()::text AS x')).rows[0]!.x);
      await sql.query(
        `INSERT INTO t VALUES (9223372036854775807, 1234567890123456789012345678901234567890.5, '\\x00ff',
           '2024-01-02 03:04:05.123456+02', true, repeat('z', 5000)), (2, 'NaN', '\\x', NULL, false, 'short')`,
      );
      await sql.query(`UPDATE t SET n = 2.50 WHERE id = 2`);
      await sql.query(`SELECT pg_logical_emit_message(true, 'slotlake', 'hi')`);
      await sql.query(`DELETE FROM t WHERE id = 2`);
      await sql.query('COMMIT');
      await sql.query('BEGIN');
      const xid2 = Number((await sql.query<{ x: string }>('SELECT txid_current()::text AS x')).rows[0]!.x);
      await sql.query(`UPDATE t SET ok = false`);
      await sql.query('COMMIT');
      const expected = await sql.query<Record<string, string | null>>(
        `SELECT format('%s', id) AS id, format('%s', n) AS n, format('%s', b) AS b, format('%s', at) AS at,
                format('%s', ok) AS ok, body,
                ((extract(epoch FROM pg_xact_commit_timestamp($1::text::xid)) - 946684800) * 1000000)::int8::text AS t1,
                ((extract(epoch FROM pg_xact_commit_timestamp($2::text::xid)) - 946684800) * 1000000)::int8::text AS t2
           FROM t`,
        [String(xid), String(xid2)],
      );
      const row = expected.rows[0]!;

      const decoder = new Wal2jsonDecoder();
      const received: Received[] = [];
      const listeners: (() => void)[] = [];
      const connection = (replication as unknown as { connection: NodeJS.EventEmitter }).connection;
      connection.on('copyData', (msg: { chunk: Buffer }) => {
        const frame = decodeServerFrame(new Uint8Array(msg.chunk));
        if (frame.type !== 'xlogdata') return;
        for (const message of decoder.decode(frame.data, frame.walStart))
          received.push({ walStart: frame.walStart, message });
        for (const listener of listeners) listener();
      });
      const streaming = replication
        .query(`START_REPLICATION SLOT s LOGICAL 0/0 (${wal2jsonStartReplicationOptions()})`)
        .catch((error: unknown) => error);
      const secondBegin = () =>
        received.findIndex((r) => r.message.tag === 'begin' && r.message.xid === xid2);
      await waitFor(
        (listener) => listeners.push(listener),
        () => secondBegin() >= 0 && received.slice(secondBegin()).some((r) => r.message.tag === 'commit'),
        30_000,
        `the commit of transaction ${xid2}`,
      );

      const start = received.findIndex((r) => r.message.tag === 'begin' && r.message.xid === xid);
      const end = received.findIndex((r, i) => i > start && r.message.tag === 'commit');
      const tx = received.slice(start, end + 1).map((r) => r.message);
      assert.deepEqual(
        tx.map((m) => m.tag),
        ['begin', 'relation', 'insert', 'insert', 'update', 'message', 'delete', 'commit'],
      );
      const [begin, rel, ins1, ins2, upd, message, del, commit] = tx;
      assert.ok(begin?.tag === 'begin' && commit?.tag === 'commit' && rel?.tag === 'relation');
      assert.equal(begin.finalLsn, commit.commitLsn);
      assert.equal(commit.endLsn, received[end]!.walStart, 'Commit.endLsn is the XLogData walStart of C');
      assert.ok(commit.endLsn > commit.commitLsn);
      assert.equal(begin.commitTime, BigInt(row['t1']!), 'commit time = pg_xact_commit_timestamp');
      assert.equal(commit.commitTime, begin.commitTime);

      const relation: Relation = rel.relation;
      assert.deepEqual(
        relation.columns.map((c) => [c.name, c.typeOid, c.isKey]),
        [
          ['id', 20, true],
          ['n', 1700, false],
          ['b', 17, false],
          ['at', 1184, false],
          ['ok', 16, false],
          ['body', 25, false],
        ],
      );
      assert.ok(
        ins1?.tag === 'insert' && ins2?.tag === 'insert' && upd?.tag === 'update' && del?.tag === 'delete',
      );
      assert.deepEqual(ins1.newTuple.map(text), [row['id'], row['n'], row['b'], row['at'], 't', row['body']]);
      assert.equal(text(ins1.newTuple[0]), '9223372036854775807');
      assert.equal(
        text(ins1.newTuple[3]),
        '2024-01-02 01:04:05.123456+00',
        'TimeZone=UTC from the connection options',
      );
      // NaN is sent as JSON null by wal2json
      assert.deepEqual(ins2.newTuple.map(text), ['2', null, '\\x', null, 'f', 'short']);
      assert.deepEqual(upd.newTuple.map(text), ['2', '2.50', '\\x', null, 'f', 'short']);
      assert.equal(upd.oldKey, undefined);
      assert.deepEqual(del.oldKey?.map(text), ['2', null, null, null, null, null]);
      assert.ok(message?.tag === 'message');
      assert.equal(message.flags, 1);
      assert.equal(message.prefix, 'slotlake');
      assert.deepEqual(message.content, new TextEncoder().encode('hi'));

      const second = received.slice(secondBegin()).map((r) => r.message);
      assert.deepEqual(
        second.slice(0, 3).map((m) => m.tag),
        ['begin', 'update', 'commit'],
      );
      assert.ok(second[0]?.tag === 'begin' && second[1]?.tag === 'update');
      assert.equal(second[0].commitTime, BigInt(row['t2']!));
      assert.deepEqual(second[1].newTuple.map(text), [
        row['id'],
        row['n'],
        row['b'],
        row['at'],
        'f',
        'unchanged-toast',
      ]);

      await replication.end();
      await streaming;
    } finally {
      await sql.end();
      await replication.end().catch(() => undefined);
    }
  });
});
