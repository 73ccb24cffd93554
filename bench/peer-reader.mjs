/**
 * The Node peer: what a user would write by hand to archive a slot with `pg-logical-replication` — read a
 * pgoutput slot, turn each change into one JSON line, append it to a local file. Plain JavaScript run by
 * plain Node (no TypeScript loader in the measured process), with the care a reasonable user would take:
 * lines gathered into ~64 KiB writes, reading paused while the file stream is behind, the flush position
 * acknowledged once at the end (the library's own timer is off).
 *
 * Environment: PEER_DATABASE_URL, PEER_SLOT, PEER_PUBLICATION, PEER_CHANGES (how many changes the backlog
 * holds: the reader stops after the commit that completes them), PEER_OUTPUT (the file). Prints one JSON
 * line: {"changes": n, "bytes": n}.
 */
import { createWriteStream } from 'node:fs';
import { LogicalReplicationService, PgoutputPlugin } from 'pg-logical-replication';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is required`);
  return value;
};

const expected = Number(env('PEER_CHANGES'));
const file = createWriteStream(env('PEER_OUTPUT'));
const service = new LogicalReplicationService(
  { connectionString: env('PEER_DATABASE_URL') },
  { acknowledge: { auto: false, timeoutSeconds: 0 } },
);
const plugin = new PgoutputPlugin({ protoVersion: 1, publicationNames: [env('PEER_PUBLICATION')] });

const CHUNK_CHARS = 64 * 1024;
let pending = '';
let changes = 0;
let finished = false;

function flush() {
  if (pending === '') return;
  const ok = file.write(pending);
  pending = '';
  if (!ok) {
    const stream = service._connection?.stream;
    stream?.pause();
    file.once('drain', () => stream?.resume());
  }
}

async function finish(commitEndLsn) {
  finished = true;
  flush();
  await service.acknowledge(commitEndLsn);
  await new Promise((resolve, reject) => file.end((error) => (error ? reject(error) : resolve())));
  await service.stop();
  process.stdout.write(`${JSON.stringify({ changes, bytes: file.bytesWritten })}\n`);
  process.exit(0);
}

service.on('data', (lsn, message) => {
  if (finished) return;
  switch (message.tag) {
    case 'insert':
    case 'update':
    case 'delete':
      changes++;
      pending +=
        JSON.stringify({
          op: message.tag,
          schema: message.relation.schema,
          table: message.relation.name,
          lsn,
          key: message.key ?? null,
          old: message.old ?? null,
          new: message.new ?? null,
        }) + '\n';
      if (pending.length >= CHUNK_CHARS) flush();
      break;
    case 'commit':
      if (changes >= expected) void finish(message.commitEndLsn);
      break;
    default:
      break;
  }
});
service.on('error', (error) => {
  console.error(`peer: ${error.message}`);
  process.exit(1);
});

service.subscribe(plugin, env('PEER_SLOT')).catch((error) => {
  if (finished) return;
  console.error(`peer: ${error.message}`);
  process.exit(1);
});
