/**
 * Snapshot pure parts: watermark messages, the chunk window (which chunk rows the stream makes stale, which
 * are kept for unchanged TOAST), and the progress bookkeeping committed with the checkpoint.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Relation, Tuple } from '../../src/decoding/messages.js';
import { lsn } from '../../src/lsn.js';
import type { Change, ChangeOp } from '../../src/pipeline/assembler.js';
import {
  chunkArchived,
  compact,
  hasPendingWork,
  nextTable,
  NO_SNAPSHOT,
  report,
  requestTables,
} from '../../src/snapshot/progress.js';
import { parseWatermark, WATERMARK_PREFIX, watermarkContent } from '../../src/snapshot/watermarks.js';
import { ChunkWindow } from '../../src/snapshot/window.js';

const T = { schema: 'public', table: 't' };
const RELATION: Relation = {
  relationId: 1,
  namespace: 'public',
  name: 't',
  replicaIdentity: 'd',
  columns: [
    { name: 'id', typeOid: 23, typeModifier: -1, isKey: true },
    { name: 'v', typeOid: 25, typeModifier: -1, isKey: false },
    { name: 'big', typeOid: 25, typeModifier: -1, isKey: false },
  ],
};
const OTHER: Relation = { ...RELATION, relationId: 2, name: 'other' };

function tuple(...values: (string | null | 'u')[]): Tuple {
  return values.map((value) =>
    value === null
      ? { kind: 'null' }
      : value === 'u'
        ? { kind: 'unchanged-toast' }
        : { kind: 'text', text: value },
  );
}

function change(
  op: ChangeOp,
  before: Tuple | undefined,
  after: Tuple | undefined,
  relation = RELATION,
): Change {
  return {
    op,
    relation: { relation, schemaId: relation.relationId },
    before,
    beforeIsKey: before !== undefined,
    after,
    lsn: lsn(1n),
    seq: 0,
    transaction: { xid: 1, commitLsn: lsn(2n), commitTimeUnixUs: 0n, dt: '2026-01-01' },
    transactionContinues: false,
  };
}

const ROWS = [
  ['1', 'a', 'x'],
  ['2', 'b', 'y'],
  ['3', 'c', 'z'],
  ['4', 'd', null],
];

describe('watermarks', () => {
  it('round-trip through a logical message, and only slotlake messages are watermarks', () => {
    const content = Buffer.from(watermarkContent({ pipeline: 'p', chunk: 'run/1', mark: 'high' }));
    assert.deepEqual(parseWatermark(WATERMARK_PREFIX, content), {
      pipeline: 'p',
      chunk: 'run/1',
      mark: 'high',
    });
    assert.equal(parseWatermark('other-prefix', content), undefined);
    assert.equal(parseWatermark(WATERMARK_PREFIX, Buffer.from('not json')), undefined);
    assert.equal(
      parseWatermark(WATERMARK_PREFIX, Buffer.from('{"pipeline":"p","chunk":"c","mark":"mid"}')),
      undefined,
    );
  });
});

describe('ChunkWindow', () => {
  it('rows no change touched are positioned at the high watermark', () => {
    const window = new ChunkWindow(T, ['id']);
    window.observe(change('c', undefined, tuple('9', 'n', null))); // a key outside the chunk
    window.observe(change('u', tuple('2', null, null), tuple('2', 'b2', 'y'), OTHER)); // another table
    const resolved = window.resolve(ROWS, [0]);
    assert.deepEqual(resolved, { retry: false, atHigh: ROWS, atLow: [], dropped: 0 });
  });

  it('rows the window inserted, updated, deleted or moved the key of are dropped (the stream carries them)', () => {
    const window = new ChunkWindow(T, ['id']);
    window.observe(change('u', tuple('1', null, null), tuple('1', 'a2', 'x')));
    window.observe(change('d', tuple('3', null, null), undefined));
    window.observe(change('u', tuple('4', null, null), tuple('40', 'd', null))); // key moved away
    const resolved = window.resolve(ROWS, [0]);
    assert.deepEqual(resolved.atHigh, [ROWS[1]]);
    assert.equal(resolved.dropped, 3);
  });

  it('a row whose update left a TOASTed column unchanged is kept at the low watermark', () => {
    const window = new ChunkWindow(T, ['id']);
    window.observe(change('u', undefined, tuple('2', 'b2', 'u')));
    const resolved = window.resolve(ROWS, [0]);
    assert.deepEqual(resolved.atLow, [ROWS[1]]);
    assert.deepEqual(resolved.atHigh, [ROWS[0], ROWS[2], ROWS[3]]);
    assert.equal(resolved.dropped, 0);
  });

  it('a truncate in the window leaves nothing of the chunk', () => {
    const window = new ChunkWindow(T, ['id']);
    window.observe(change('t', undefined, undefined));
    assert.deepEqual(window.resolve(ROWS, [0]), { retry: false, atHigh: [], atLow: [], dropped: 4 });
  });

  it('a change whose key columns are gone from its relation makes the chunk be read again', () => {
    const window = new ChunkWindow(T, ['id']);
    const renamed: Relation = {
      ...RELATION,
      columns: [{ ...RELATION.columns[0]!, name: 'ident' }, ...RELATION.columns.slice(1)],
    };
    window.observe(change('u', undefined, tuple('2', 'b2', 'y'), renamed));
    assert.equal(window.resolve(ROWS, [0]).retry, true);
  });

  it('a table read by ctid matches nothing: every row is kept (best effort, documented)', () => {
    const window = new ChunkWindow(T, []);
    window.observe(change('u', tuple('1', null, null), tuple('1', 'a2', 'x')));
    assert.equal(window.resolve(ROWS, []).atHigh.length, 4);
  });
});

describe('snapshot progress', () => {
  const NOW = '2026-12-01T00:00:00.000Z';
  const chunk = (rowsRead: number, rowsArchived: number, lastKey: string[] | null) => ({
    keyKind: 'primary-key' as const,
    keyColumns: ['id'],
    rowsRead,
    rowsArchived,
    limit: 100,
    lastKey,
    estimatedRows: 250,
  });

  it('tables are taken in order, each until a chunk comes back short', () => {
    let progress = requestTables(NO_SNAPSHOT, [T, { schema: 'public', table: 'u' }], NOW);
    assert.ok(hasPendingWork(progress));
    assert.deepEqual(nextTable(progress)?.table, T);
    progress = chunkArchived(progress, T, chunk(100, 97, ['100']), NOW);
    assert.equal(nextTable(progress)?.state, 'running');
    assert.deepEqual(nextTable(progress)?.lastKey, ['100']);
    progress = chunkArchived(progress, T, chunk(40, 40, ['140']), NOW);
    assert.deepEqual(nextTable(progress)?.table, { schema: 'public', table: 'u' });
    const done = progress.tables[0]!;
    assert.equal(done.state, 'done');
    assert.equal(done.rows, 137, 'rows archived, not read');
    assert.equal(done.chunks, 2);
  });

  it('a re-request restarts a table from the beginning', () => {
    let progress = requestTables(NO_SNAPSHOT, [T], NOW);
    progress = chunkArchived(progress, T, chunk(40, 40, ['40']), NOW);
    progress = requestTables(progress, [T], NOW);
    assert.equal(progress.tables.length, 1);
    assert.equal(progress.tables[0]!.state, 'pending');
    assert.equal(progress.tables[0]!.lastKey, null);
  });

  it('reports rows, percent and runs left from the estimate; unknown when the table was never analyzed', () => {
    let progress = requestTables(NO_SNAPSHOT, [T], NOW);
    progress = chunkArchived(progress, T, chunk(100, 100, ['100']), NOW);
    const known = report(progress, 50);
    assert.equal(known.tables[0]!.percent, 40);
    assert.equal(known.rowsRemainingEstimate, 150);
    assert.equal(known.estimatedRunsLeft, 3);
    const unknown = report(
      chunkArchived(
        requestTables(NO_SNAPSHOT, [T], NOW),
        T,
        { ...chunk(100, 100, ['1']), estimatedRows: -1 },
        NOW,
      ),
      50,
    );
    assert.equal(unknown.tables[0]!.estimatedRows, null);
    assert.equal(unknown.estimatedRunsLeft, null);
  });

  it('keeps the stored progress small: finished tables beyond the last 50 are forgotten', () => {
    let progress = requestTables(
      NO_SNAPSHOT,
      Array.from({ length: 60 }, (_, i) => ({ schema: 's', table: `t${i}` })),
      NOW,
    );
    for (let i = 0; i < 60; i++)
      progress = chunkArchived(progress, { schema: 's', table: `t${i}` }, chunk(1, 1, ['1']), NOW);
    assert.equal(compact(progress).tables.length, 50);
    assert.equal(compact(progress).tables[0]!.table.table, 't10');
  });
});
