/**
 * Rebuilding a table from its archived changes, in bounded memory: the state a reader of the lake gets by
 * replaying every record in `(commit_lsn, seq)` order (contract §4.1) — `r`/`c` upsert the row by its key, `u`
 * removes the old key when the key changed and fills its unchanged TOAST values from the row's previous version,
 * `d` removes the key, `t` empties the table — reduced to one digest per row (verify/digest.ts).
 *
 * A big table does not fit in memory, so changes are **partitioned by the hash of their key** into 2^p runs on
 * disk (p = 0 keeps one run in memory), and each run is replayed on its own: a row's whole history has one key
 * and so one run. The exceptions cross runs: a truncate goes to every run; an update that moves a row to a key
 * of another run becomes a *move-out* in the old key's run and a *move-in* in the new key's run. When the
 * move-in lacks unchanged TOAST values, they are the old row's at that moment, which only the old run knows:
 * replaying it records them (a *fill*, kept in memory — one row per such move), and a run whose move-in found
 * no fill yet (its source run comes later) is replayed again once the fill exists, until nothing is pending
 * (each pass settles at least the earliest pending move, so this ends). The cost is one pass over the records
 * to partition them, and one replay per run (rarely two).
 *
 * Memory: one run's records and rows at a time (RECORDS_PER_RUN sizes the runs from the manifests' row
 * counts), the per-bucket sums, the fills. Also found here, because it needs the records in order: a change
 * `(commit_lsn, seq)` present twice (a duplicated object or record) — replayed once, and named.
 * Tables without a key are replayed as multisets of whole rows (REPLICA IDENTITY FULL sends the whole old row).
 */
import { createReadStream, createWriteStream, type WriteStream } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { once } from 'node:events';
import type { ArchivedChange } from './archive.js';
import { bucketAt, canonicalText, digestText, type RowValue } from './digest.js';

/** Changes per on-disk run, at most (from the manifests' row counts). */
export const RECORDS_PER_RUN = 1_000_000;

const PENDING: unique symbol = Symbol('pending fill');
type Slot = RowValue | typeof PENDING;

type EntryOp = ArchivedChange['op'] | 'mo' | 'mi';

interface Entry {
  readonly c: bigint;
  readonly s: number;
  readonly op: EntryOp;
  /** Object index (into the caller's list of objects). */
  readonly o: number;
  /** The key's canonical text (the row's, for keyless tables); null for t. */
  readonly id: string | null;
  readonly v: Slot[] | null;
  /** u: the old key when it changed within the run. */
  readonly old: string | null;
  /** mo: the move-in needs this row's values (unchanged TOAST). */
  readonly fill: boolean;
}

interface RowState {
  v: Slot[];
  n: number;
  o: number;
}

/** One row of the rebuilt table, as the comparison needs it. */
export interface RowDigest {
  /** The key's canonical text; for keyless tables the row hash (rows are their own key). */
  readonly identity: string;
  readonly bucket32: number;
  readonly hash64: bigint;
  /** How many such rows (1 for keyed tables). */
  readonly count: number;
  /** The object that last wrote the row. */
  readonly object: number;
  /** True when a value is not in the archive (an unchanged TOAST value without an earlier version). */
  readonly incomplete: boolean;
}

export interface BucketSum {
  rows: number;
  sum: bigint;
}

export interface DuplicateChange {
  readonly commitLsn: bigint;
  readonly seq: number;
  readonly objects: readonly number[];
}

export interface RebuildOptions {
  /** Positions of the key columns; null for a table without a key. */
  readonly keyIndexes: readonly number[] | null;
  /** 2^partitionBits runs; 0 keeps everything in memory. */
  readonly partitionBits: number;
  readonly bucketBits: number;
  /** Where runs and digests are spilled (created, and removed by `dispose`). */
  readonly spillDir: string;
}

function encodeSlots(values: readonly Slot[] | null): unknown {
  return values === null
    ? null
    : values.map((value) => (value === undefined ? 0 : value === PENDING ? 1 : value));
}

function decodeSlots(values: unknown): Slot[] | null {
  if (values === null) return null;
  return (values as Array<string | null | 0 | 1>).map((value) =>
    value === 0 ? undefined : value === 1 ? PENDING : value,
  );
}

function serialise(entry: Entry): string {
  return JSON.stringify([
    entry.c.toString(16),
    entry.s,
    entry.op,
    entry.o,
    entry.id,
    encodeSlots(entry.v),
    entry.old,
    entry.fill ? 1 : 0,
  ]);
}

function deserialise(line: string): Entry {
  const [c, s, op, o, id, v, old, fill] = JSON.parse(line) as [
    string,
    number,
    EntryOp,
    number,
    string | null,
    unknown,
    string | null,
    number,
  ];
  return { c: BigInt(`0x${c}`), s, op, o, id, v: decodeSlots(v), old, fill: fill === 1 };
}

function byPosition(a: Entry, b: Entry): number {
  return a.c < b.c ? -1 : a.c > b.c ? 1 : a.s - b.s;
}

interface Run {
  readonly index: number;
  readonly path: string | undefined;
  readonly digestPath: string | undefined;
  stream: WriteStream | undefined;
  entries: Entry[];
  /** Results of the last replay. */
  digests: RowDigest[];
  buckets: Map<number, BucketSum>;
  pending: boolean;
  fillsSeen: number;
}

export class TableRebuild {
  private readonly runs: Run[];
  private readonly fills = new Map<string, Slot[] | null>();
  private readonly duplicates: DuplicateChange[] = [];
  private prepared = false;
  /** True once a snapshot record (`r`) was seen. */
  hasSnapshotRecords = false;
  /** Changes that could not be applied (a delete without its key columns, ...). */
  unusable = 0;
  changes = 0;

  constructor(private readonly options: RebuildOptions) {
    const count = 2 ** options.partitionBits;
    this.runs = Array.from({ length: count }, (_, index) => ({
      index,
      path: options.partitionBits > 0 ? join(options.spillDir, `run-${index}.jsonl`) : undefined,
      digestPath: options.partitionBits > 0 ? join(options.spillDir, `digests-${index}.jsonl`) : undefined,
      stream: undefined,
      entries: [],
      digests: [],
      buckets: new Map(),
      pending: false,
      fillsSeen: -1,
    }));
  }

  private identity(values: readonly Slot[]): string {
    const keys = this.options.keyIndexes;
    const chosen = keys === null ? values : keys.map((i) => values[i]);
    return canonicalText(chosen.map((value) => (value === PENDING ? undefined : value)));
  }

  /** The key of `before` when it carries every key column, else undefined. */
  private beforeIdentity(before: readonly RowValue[] | null): string | undefined {
    if (before === null) return undefined;
    const keys = this.options.keyIndexes;
    if (keys === null) return canonicalText(before);
    for (const i of keys) if (before[i] === undefined) return undefined;
    return this.identity(before);
  }

  private runOf(identity: string): Run {
    if (this.options.partitionBits === 0) return this.runs[0]!;
    return this.runs[bucketAt(digestText(identity).bucket32, this.options.partitionBits)]!;
  }

  private async put(run: Run, entry: Entry): Promise<void> {
    if (run.path === undefined) {
      run.entries.push(entry);
      return;
    }
    if (run.stream === undefined) {
      await mkdir(this.options.spillDir, { recursive: true });
      run.stream = createWriteStream(run.path, { flags: 'a' });
    }
    if (!run.stream.write(`${serialise(entry)}\n`)) await once(run.stream, 'drain');
  }

  /** Adds one archived change (from object number `object`). */
  async add(change: ArchivedChange, object: number): Promise<void> {
    this.changes++;
    const base = { c: change.commitLsn, s: change.seq, o: object, old: null, fill: false };
    switch (change.op) {
      case 'r':
      case 'c': {
        if (change.op === 'r') this.hasSnapshotRecords = true;
        const id = this.identity(change.after!);
        await this.put(this.runOf(id), { ...base, op: change.op, id, v: change.after });
        return;
      }
      case 'u': {
        const after = change.after!;
        const id = this.identity(after);
        const old = this.beforeIdentity(change.before) ?? id;
        const run = this.runOf(id);
        const oldRun = old === id ? run : this.runOf(old);
        if (oldRun === run) {
          await this.put(run, { ...base, op: 'u', id, v: after, old });
          return;
        }
        const fill = after.some((value) => value === undefined);
        await this.put(oldRun, { ...base, op: 'mo', id: old, v: null, fill });
        await this.put(run, { ...base, op: 'mi', id, v: after });
        return;
      }
      case 'd': {
        const id = this.beforeIdentity(change.before);
        if (id === undefined) {
          this.unusable++;
          return;
        }
        await this.put(this.runOf(id), { ...base, op: 'd', id, v: null });
        return;
      }
      case 't':
        for (const run of this.runs) await this.put(run, { ...base, op: 't', id: null, v: null });
        return;
    }
  }

  private async entriesOf(run: Run): Promise<Entry[]> {
    if (run.path === undefined) return run.entries;
    if (run.stream === undefined) return [];
    const entries: Entry[] = [];
    const lines = createInterface({ input: createReadStream(run.path), crlfDelay: Infinity });
    for await (const line of lines) if (line !== '') entries.push(deserialise(line));
    return entries;
  }

  private async replay(run: Run, entries: Entry[], collectDuplicates: boolean): Promise<void> {
    entries.sort(byPosition);
    const keyed = this.options.keyIndexes !== null;
    const state = new Map<string, RowState>();
    const add = (id: string, v: Slot[], o: number) => {
      const existing = keyed ? undefined : state.get(id);
      if (existing) {
        existing.n++;
        existing.o = o;
      } else state.set(id, { v, n: 1, o });
    };
    const remove = (id: string) => {
      if (keyed) {
        state.delete(id);
        return;
      }
      const existing = state.get(id);
      if (existing && --existing.n <= 0) state.delete(id);
    };
    const fillFrom = (v: Slot[], previous: readonly Slot[] | null | undefined): Slot[] =>
      v.some((value) => value === undefined)
        ? v.map((value, i) => (value === undefined && previous ? previous[i] : value))
        : v;
    run.pending = false;
    run.fillsSeen = this.fills.size;
    let previous: Entry | undefined;
    for (const entry of entries) {
      if (previous && previous.c === entry.c && previous.s === entry.s) {
        // the same change twice: report it (a truncate once, from the first run), replay it once
        if (collectDuplicates && (entry.op !== 't' || run.index === 0)) this.noteDuplicate(entry, previous);
        continue;
      }
      previous = entry;
      switch (entry.op) {
        case 'r':
        case 'c':
          add(entry.id!, entry.v!, entry.o);
          break;
        case 'u': {
          const old = entry.old ?? entry.id!;
          const v = fillFrom(entry.v!, state.get(old)?.v);
          remove(old);
          add(entry.id!, v, entry.o);
          break;
        }
        case 'mo':
          if (entry.fill) this.fills.set(`${entry.c}/${entry.s}`, state.get(entry.id!)?.v ?? null);
          remove(entry.id!);
          break;
        case 'mi': {
          let v = entry.v!;
          if (v.some((value) => value === undefined)) {
            const fill = this.fills.get(`${entry.c}/${entry.s}`);
            if (fill === undefined) {
              run.pending = true;
              v = v.map((value) => (value === undefined ? PENDING : value));
            } else v = fillFrom(v, fill);
          }
          if (v.some((value) => value === PENDING)) run.pending = true;
          add(entry.id!, v, entry.o);
          break;
        }
        case 'd':
          remove(entry.id!);
          break;
        case 't':
          state.clear();
          break;
      }
    }
    const digests: RowDigest[] = [];
    const buckets = new Map<number, BucketSum>();
    for (const [id, row] of state) {
      const values = row.v.map((value) => (value === PENDING ? undefined : value));
      const rowDigest = digestText(canonicalText(values));
      const bucket32 = keyed ? digestText(id).bucket32 : rowDigest.bucket32;
      const digest: RowDigest = {
        identity: keyed ? id : rowDigest.hash64.toString(),
        bucket32,
        hash64: rowDigest.hash64,
        count: row.n,
        object: row.o,
        incomplete: values.some((value) => value === undefined),
      };
      digests.push(digest);
      const bucket = bucketAt(bucket32, this.options.bucketBits);
      const sum = buckets.get(bucket) ?? { rows: 0, sum: 0n };
      sum.rows += row.n;
      sum.sum += rowDigest.hash64 * BigInt(row.n);
      buckets.set(bucket, sum);
    }
    run.buckets = buckets;
    if (run.digestPath === undefined) run.digests = digests;
    else {
      await mkdir(this.options.spillDir, { recursive: true });
      const out = createWriteStream(run.digestPath);
      for (const digest of digests) {
        const line = JSON.stringify([
          digest.identity,
          digest.bucket32,
          digest.hash64.toString(),
          digest.count,
          digest.object,
          digest.incomplete ? 1 : 0,
        ]);
        if (!out.write(`${line}\n`)) await once(out, 'drain');
      }
      out.end();
      await once(out, 'close');
    }
  }

  private readonly duplicateSeen = new Set<string>();

  private noteDuplicate(entry: Entry, first: Entry): void {
    const id = `${entry.c}/${entry.s}`;
    if (this.duplicateSeen.has(id)) {
      const known = this.duplicates.find((d) => d.commitLsn === entry.c && d.seq === entry.s);
      if (known && !known.objects.includes(entry.o)) (known.objects as number[]).push(entry.o);
      return;
    }
    this.duplicateSeen.add(id);
    this.duplicates.push({ commitLsn: entry.c, seq: entry.s, objects: [first.o, entry.o] });
  }

  /** Replays every run (again, for runs waiting on fills) and returns the rebuilt table's digest. */
  async finish(): Promise<RebuiltTable> {
    if (!this.prepared) {
      this.prepared = true;
      for (const run of this.runs) {
        if (run.stream) {
          run.stream.end();
          await once(run.stream, 'close');
        }
      }
    }
    // a first pass over every run (which also finds duplicates); then again over the runs still waiting for
    // a fill, while new fills keep coming
    for (const run of this.runs) await this.replay(run, await this.entriesOf(run), true);
    for (let pass = 0; pass <= this.runs.length; pass++) {
      const waiting = this.runs.filter((run) => run.pending && run.fillsSeen !== this.fills.size);
      if (waiting.length === 0) break;
      for (const run of waiting) await this.replay(run, await this.entriesOf(run), false);
    }
    const buckets = new Map<number, BucketSum>();
    let rows = 0;
    for (const run of this.runs)
      for (const [bucket, sum] of run.buckets) {
        const total = buckets.get(bucket) ?? { rows: 0, sum: 0n };
        total.rows += sum.rows;
        total.sum += sum.sum;
        buckets.set(bucket, total);
        rows += sum.rows;
      }
    const runs = this.runs;
    return {
      rows,
      buckets,
      bucketBits: this.options.bucketBits,
      duplicates: [...this.duplicates],
      hasSnapshotRecords: this.hasSnapshotRecords,
      async *rowsIn(wanted: ReadonlySet<number>, bits: number): AsyncIterable<RowDigest> {
        for (const run of runs) {
          if (run.digestPath === undefined) {
            for (const digest of run.digests) if (wanted.has(bucketAt(digest.bucket32, bits))) yield digest;
            continue;
          }
          const lines = createInterface({ input: createReadStream(run.digestPath), crlfDelay: Infinity });
          for await (const line of lines) {
            if (line === '') continue;
            const [identity, bucket32, hash, count, object, incomplete] = JSON.parse(line) as [
              string,
              number,
              string,
              number,
              number,
              number,
            ];
            if (!wanted.has(bucketAt(bucket32, bits))) continue;
            yield { identity, bucket32, hash64: BigInt(hash), count, object, incomplete: incomplete === 1 };
          }
        }
      },
    };
  }

  async dispose(): Promise<void> {
    for (const run of this.runs) run.stream?.destroy();
    if (this.options.partitionBits > 0) await rm(this.options.spillDir, { recursive: true, force: true });
  }
}

/** The rebuilt table: per-bucket sums, and its rows' digests by bucket. */
export interface RebuiltTable {
  readonly rows: number;
  readonly buckets: ReadonlyMap<number, BucketSum>;
  readonly bucketBits: number;
  readonly duplicates: readonly DuplicateChange[];
  readonly hasSnapshotRecords: boolean;
  rowsIn(buckets: ReadonlySet<number>, bits: number): AsyncIterable<RowDigest>;
}

/** Runs (as bits) for `records` changes. */
export function partitionBitsFor(records: number, perRun = RECORDS_PER_RUN): number {
  let bits = 0;
  while (records / 2 ** bits > perRun && bits < 12) bits++;
  return bits;
}
