/**
 * Per-stage micro benchmarks, in process, no servers: how many rows per second each stage of the pipeline
 * manages on its own, so the end-to-end numbers can be read as "where does the time go".
 *
 * The row is a real one: the first Insert of test/fixtures/pgoutput/basic.json (8 columns: int, text,
 * int, numeric, varchar, enum, bytea, timestamptz), captured from PostgreSQL 17. Stages, as the run loop
 * chains them per change:
 *   1. frame      — CopyData payload copied off the socket buffer and split into XLogData header + message
 *                   (what replication/connection.ts does per frame)
 *   2. decode     — `PgoutputDecoder.decode` of the Insert message
 *   3. encode     — `formatLsn` + `RelationEncoder.encode`: the change as one JSON Lines record
 *   4. spool      — `SpooledObject.write` of the record: gzip level 1 into a local file, with drain() as
 *                   the run loop awaits it, and close()
 * The same row repeated compresses better than real data (and gzip's speed depends on that), so the spool
 * line varies `seq` and `lsn` per row but is otherwise one row: read it as an upper bound.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PgoutputDecoder } from '../src/decoding/pgoutput.js';
import type { LogicalMessage, Relation, Tuple } from '../src/decoding/messages.js';
import type { TypeInfo } from '../src/decoding/values.js';
import { formatLsn, lsn } from '../src/lsn.js';
import { decodeServerFrame } from '../src/protocol/frames.js';
import { RelationEncoder, transactionSource } from '../src/pipeline/records.js';
import { SpooledObject } from '../src/sink/spool.js';
import { fromHex, loadPgoutputFixture } from '../test/helpers/bytes.js';

export interface StageResult {
  readonly stage: string;
  readonly what: string;
  readonly rows: number;
  readonly elapsedMs: number;
  readonly rowsPerSec: number;
  readonly usPerRow: number;
  /** Uncompressed MB/s through the stage, where meaningful. */
  readonly mbPerSec?: number;
  readonly note?: string;
}

export interface MicroResult {
  readonly budgetMsPerStage: number;
  readonly fixture: string;
  readonly messageBytes: number;
  readonly recordBytes: number;
  readonly stages: readonly StageResult[];
  /** Sum of the per-row costs of all stages: the in-process CPU floor of one change. */
  readonly totalUsPerRow: number;
}

/** Runs `step(count)` in slices until `budgetMs` has passed (after a short warm-up); rows per second. */
function timeLoop(
  budgetMs: number,
  slice: number,
  step: (count: number) => void,
): { rows: number; ms: number } {
  const warmUntil = performance.now() + Math.min(300, budgetMs / 4);
  while (performance.now() < warmUntil) step(slice);
  let rows = 0;
  const started = performance.now();
  let elapsed = 0;
  while (elapsed < budgetMs) {
    step(slice);
    rows += slice;
    elapsed = performance.now() - started;
  }
  return { rows, ms: elapsed };
}

function result(stage: string, what: string, rows: number, ms: number, bytesPerRow?: number): StageResult {
  const rowsPerSec = (rows / ms) * 1000;
  return {
    stage,
    what,
    rows,
    elapsedMs: Math.round(ms),
    rowsPerSec: Math.round(rowsPerSec),
    usPerRow: (ms * 1000) / rows,
    ...(bytesPerRow === undefined ? {} : { mbPerSec: (rowsPerSec * bytesPerRow) / 1e6 }),
  };
}

function xlogDataFrame(message: Uint8Array, walStart: bigint): Uint8Array {
  const frame = new Uint8Array(25 + message.byteLength);
  const view = new DataView(frame.buffer);
  view.setUint8(0, 'w'.charCodeAt(0));
  view.setBigUint64(1, walStart);
  view.setBigUint64(9, walStart + 0x1000n);
  view.setBigInt64(17, 817_000_000_000_000n);
  frame.set(message, 25);
  return frame;
}

export async function runMicro(budgetMs: number): Promise<MicroResult> {
  const fixture = loadPgoutputFixture('basic');
  const decoder = new PgoutputDecoder({ protocolVersion: 1 });
  const registry = new Map<number, TypeInfo>();
  let relation: Relation | undefined;
  let insertBytes: Uint8Array | undefined;
  let begin: Extract<LogicalMessage, { tag: 'begin' }> | undefined;
  for (const entry of fixture.messages) {
    const bytes = fromHex(entry.hex);
    const message = decoder.decode(bytes);
    if (message.tag === 'begin') begin ??= message;
    else if (message.tag === 'type')
      registry.set(message.typeOid, {
        oid: message.typeOid,
        name: message.name,
        namespace: message.namespace,
      });
    else if (message.tag === 'relation') relation ??= message.relation;
    else if (message.tag === 'insert' && insertBytes === undefined) {
      insertBytes = bytes;
      break;
    }
  }
  if (!relation || !insertBytes || !begin) throw new Error('basic.json: no Begin/Relation/Insert found');
  const insert = insertBytes;
  const firstInsert = decoder.decode(insert);
  if (firstInsert.tag !== 'insert') throw new Error('basic.json: the first Insert did not decode as one');
  const tuple: Tuple = firstInsert.newTuple;
  let sink = 0;

  // 1. Frame split (with the copy connection.ts makes of pg's read buffer).
  const frameBytes = Buffer.from(xlogDataFrame(insert, 0x1_0000_0000n));
  const frame = timeLoop(budgetMs, 10_000, (count) => {
    for (let i = 0; i < count; i++) {
      const parsed = decodeServerFrame(Uint8Array.prototype.slice.call(frameBytes));
      if (parsed.type === 'xlogdata') sink += parsed.data.byteLength;
    }
  });

  // 2. pgoutput decode.
  const decode = timeLoop(budgetMs, 10_000, (count) => {
    for (let i = 0; i < count; i++) {
      const message = decoder.decode(insert);
      if (message.tag === 'insert') sink += message.newTuple.length;
    }
  });

  // 3. Record encoding (formatLsn per change, as the run loop does).
  const encoder = new RelationEncoder(relation, 'bench', registry);
  const txn = transactionSource(formatLsn(begin.finalLsn), begin.xid, 1_764_070_000_123_456n);
  let walStart = 0x1_0000_0000n;
  const line0 = encoder.encode('c', undefined, false, tuple, formatLsn(lsn(walStart)), 0, txn);
  const encode = timeLoop(budgetMs, 10_000, (count) => {
    for (let i = 0; i < count; i++) {
      walStart += 88n;
      const line = encoder.encode('c', undefined, false, tuple, formatLsn(lsn(walStart)), i, txn);
      sink += line.length;
    }
  });

  // 4. gzip spool: lines varying in seq and lsn, written with backpressure, then closed.
  const lines: string[] = [];
  for (let i = 0; i < 4096; i++) {
    lines.push(
      encoder.encode('c', undefined, false, tuple, formatLsn(lsn(0x1_0000_0000n + BigInt(i) * 88n)), i, txn),
    );
  }
  const dir = mkdtempSync(join(tmpdir(), 'slotlake-bench-spool-'));
  let spool: StageResult;
  try {
    const object = new SpooledObject(join(dir, 'bench.jsonl.gz'));
    let rows = 0;
    const started = performance.now();
    while (performance.now() - started < budgetMs) {
      for (let i = 0; i < 10_000; i++) {
        if (!object.write(lines[rows & 4095]!)) await object.drain();
        rows++;
      }
    }
    const compressed = await object.close();
    const ms = performance.now() - started;
    spool = {
      ...result('spool', 'SpooledObject: gzip -1 → file', rows, ms, object.rawBytes / rows),
      note: `compressed ${(object.rawBytes / compressed).toFixed(1)}:1 (one row repeated: an upper bound)`,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  if (sink === 0) throw new Error('unreachable');

  const stages = [
    result('frame', 'XLogData copy + header (connection.ts)', frame.rows, frame.ms, frameBytes.byteLength),
    result('decode', 'PgoutputDecoder.decode (Insert)', decode.rows, decode.ms, insert.byteLength),
    result('encode', 'formatLsn + RelationEncoder.encode', encode.rows, encode.ms, line0.length + 1),
    spool,
  ];
  return {
    budgetMsPerStage: budgetMs,
    fixture: 'test/fixtures/pgoutput/basic.json, first Insert into public.items (8 columns)',
    messageBytes: insert.byteLength,
    recordBytes: line0.length + 1,
    stages,
    totalUsPerRow: stages.reduce((sum, stage) => sum + stage.usPerRow, 0),
  };
}
