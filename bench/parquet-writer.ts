/**
 * Parquet object writer benchmark: one object of ROWS changes (default 2,000,000 — one huge transaction)
 * of a 10-column mixed table, written through `ParquetObjectWriter` as the batch writer would (awaiting
 * drain() when asked), then closed. Prints rows/s, bytes/row, row groups and the process's peak RSS.
 *
 * The table (Postgres text, as pgoutput sends it): id int8, customer_id int4, amount numeric(12,2),
 * status text (5 values), note text (~35 chars), created_at timestamptz (µs), ship_date date, paid bool,
 * weight float8, tags text[] (2 elements); every change also fills the metadata columns. Generating the
 * text is timed on its own first, so the writer's share can be read off.
 *
 *   node --import tsx bench/parquet-writer.ts
 *   ROWS=200000 COMPRESSION=snappy ROW_GROUP_BYTES=4194304 node --import tsx bench/parquet-writer.ts
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Tuple } from '../src/decoding/messages.js';
import { PgType } from '../src/decoding/values.js';
import {
  ParquetObjectWriter,
  type ParquetColumn,
  type ParquetCompression,
} from '../src/sink/parquet/writer.js';

const ROWS = Number(process.env.ROWS ?? 2_000_000);
const COMPRESSION = (process.env.COMPRESSION ?? 'zstd') as ParquetCompression;
const ROW_GROUP_BYTES = process.env.ROW_GROUP_BYTES ? Number(process.env.ROW_GROUP_BYTES) : undefined;
const ROW_GROUP_ROWS = process.env.ROW_GROUP_ROWS ? Number(process.env.ROW_GROUP_ROWS) : undefined;

const COLUMNS: ParquetColumn[] = [
  { name: 'id', typeOid: PgType.int8, typeModifier: -1 },
  { name: 'customer_id', typeOid: PgType.int4, typeModifier: -1 },
  { name: 'amount', typeOid: PgType.numeric, typeModifier: ((12 << 16) | 2) + 4 },
  { name: 'status', typeOid: PgType.text, typeModifier: -1 },
  { name: 'note', typeOid: PgType.text, typeModifier: -1 },
  { name: 'created_at', typeOid: PgType.timestamptz, typeModifier: -1 },
  { name: 'ship_date', typeOid: PgType.date, typeModifier: -1 },
  { name: 'paid', typeOid: PgType.bool, typeModifier: -1 },
  { name: 'weight', typeOid: PgType.float8, typeModifier: -1 },
  { name: 'tags', typeOid: 1009, typeModifier: -1 }, // text[]
];

const STATUSES = ['pending', 'paid', 'shipped', 'delivered', 'cancelled'];
const WORDS =
  'alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa'.split(
    ' ',
  );

/** Deterministic pseudo-random rows (a linear congruential generator). */
function rowGenerator(): (i: number) => Tuple {
  let seed = 42;
  const next = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff);
  const text = (value: string) => ({ kind: 'text', text: value }) as const;
  return (i) => {
    const r = next();
    const micros = 1_700_000_000_000_000 + i * 1_234_567;
    const iso = new Date(Math.floor(micros / 1000)).toISOString();
    const fraction = String(micros % 1_000_000).padStart(6, '0');
    return [
      text(String(1_000_000_000 + i)),
      text(String(r % 100_000)),
      text(`${r % 1_000_000}.${String(r % 100).padStart(2, '0')}`),
      text(STATUSES[r % 5]!),
      text(`${WORDS[r % 16]} ${WORDS[(r >> 4) % 16]} order note #${r % 9973} ${WORDS[(r >> 8) % 16]}`),
      text(`${iso.slice(0, 10)} ${iso.slice(11, 19)}.${fraction}+00`),
      text(iso.slice(0, 10)),
      text(r % 2 === 0 ? 't' : 'f'),
      text(String((r % 100_000) / 7)),
      text(`{${WORDS[r % 16]},${WORDS[(r >> 3) % 16]}}`),
    ];
  };
}

function mib(bytes: number): number {
  return Math.round((bytes / 1024 / 1024) * 10) / 10;
}

async function main(): Promise<void> {
  // 1. the input alone
  let generate = rowGenerator();
  let started = performance.now();
  let sink = 0;
  for (let i = 0; i < ROWS; i++) sink += generate(i).length;
  const generateMs = performance.now() - started;

  // 2. through the writer
  const dir = mkdtempSync(join(tmpdir(), 'slotlake-parquet-bench-'));
  let peakHeap = 0;
  let peakBuffered = 0;
  try {
    generate = rowGenerator();
    const writer = new ParquetObjectWriter(join(dir, 'bench.parquet'), COLUMNS, {
      compression: COMPRESSION,
      ...(ROW_GROUP_BYTES !== undefined ? { rowGroupBytes: ROW_GROUP_BYTES } : {}),
      ...(ROW_GROUP_ROWS !== undefined ? { rowGroupRows: ROW_GROUP_ROWS } : {}),
    });
    started = performance.now();
    for (let i = 0; i < ROWS; i++) {
      const more = writer.write({
        op: 'c',
        lsn: 0x1_0000_0000n + BigInt(i) * 120n,
        commitLsn: 0x2_0000_0000n,
        seq: i,
        txId: 731,
        commitTimeUnixUs: 1_764_070_000_123_456n,
        row: generate(i),
        beforeJson: null,
        unchangedToast: null,
      });
      peakBuffered = Math.max(peakBuffered, writer.bufferedBytes);
      if (!more) {
        peakHeap = Math.max(peakHeap, process.memoryUsage().heapUsed);
        await writer.drain();
      }
    }
    const bytes = await writer.close();
    const writeMs = performance.now() - started;
    const writerMs = Math.max(1, writeMs - generateMs);
    const result = {
      rows: ROWS,
      compression: COMPRESSION,
      rowGroups: writer.rowGroups,
      fileBytes: bytes,
      bytesPerRow: Math.round((bytes / ROWS) * 100) / 100,
      estimatedRawMiB: mib(writer.uncompressedBytes),
      generateMs: Math.round(generateMs),
      totalMs: Math.round(writeMs),
      rowsPerSec: Math.round((ROWS / writeMs) * 1000),
      writerRowsPerSec: Math.round((ROWS / writerMs) * 1000),
      peakBufferedMiB: mib(peakBuffered),
      peakHeapAtRowGroupMiB: mib(peakHeap),
      peakRssMiB: mib(process.resourceUsage().maxRSS * 1024),
      node: process.version,
      checksum: sink,
    };
    console.log(JSON.stringify(result));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
