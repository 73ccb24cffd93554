/**
 * The source checks before a run streams (`assertSourceReady`): the facts read before the lease and the slot
 * read under it, checked in a fixed order — wal_level, the slot, the publication — the first failure thrown.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { SlotlakeError } from '../../src/errors.js';
import { parseLsn } from '../../src/lsn.js';
import { assertSourceReady, type SlotState, type SourceFacts } from '../../src/replication/source.js';

const FACTS: SourceFacts = {
  walLevel: 'logical',
  database: 'shop',
  publicationExists: true,
  walSenderTimeoutMs: 60_000,
  maxSlotWalKeepSizeBytes: undefined,
};

const SLOT: SlotState = {
  name: 'slotlake',
  plugin: 'pgoutput',
  slotType: 'logical',
  database: 'shop',
  active: false,
  activePid: null,
  confirmedFlushLsn: parseLsn('0/64'),
  restartLsn: parseLsn('0/5A'),
  walStatus: 'reserved',
  safeWalSize: null,
  currentWalLsn: parseLsn('0/78'),
  lagBytes: 20,
  retainedWalBytes: 30,
};

const WANT = { slot: 'slotlake', publication: 'slotlake', plugin: 'pgoutput' };

function failure(run: () => unknown): SlotlakeError {
  try {
    run();
  } catch (error) {
    assert.ok(error instanceof SlotlakeError, String(error));
    return error;
  }
  assert.fail('expected a failure');
}

describe('assertSourceReady', () => {
  test('returns the slot when everything is in place', () => {
    assert.equal(assertSourceReady(FACTS, SLOT, WANT), SLOT);
  });

  test('wal_level first, whatever else is wrong', () => {
    const error = failure(() =>
      assertSourceReady({ ...FACTS, walLevel: 'replica', publicationExists: false }, null, WANT),
    );
    assert.equal(error.kind, 'source-wal-level');
    assert.match(error.message, /wal_level is replica, logical decoding needs wal_level = logical/);
  });

  test('a missing slot before a missing publication', () => {
    const error = failure(() => assertSourceReady({ ...FACTS, publicationExists: false }, null, WANT));
    assert.equal(error.kind, 'slot-missing');
    assert.match(error.message, /replication slot "slotlake" does not exist/);
    assert.match(error.toOperatorLine(), /slotlake setup/);
  });

  test('a slot of another plugin, type or database', () => {
    for (const slot of [
      { ...SLOT, plugin: 'wal2json' },
      { ...SLOT, slotType: 'physical' },
      { ...SLOT, database: 'other' },
    ]) {
      const error = failure(() => assertSourceReady(FACTS, slot, WANT));
      assert.equal(error.kind, 'slot-invalid');
      assert.match(error.message, /but this pipeline needs a logical "pgoutput" slot in "shop"/);
    }
  });

  test('an invalidated slot', () => {
    const error = failure(() => assertSourceReady(FACTS, { ...SLOT, walStatus: 'lost' }, WANT));
    assert.equal(error.kind, 'slot-invalid');
    assert.match(error.message, /was invalidated \(wal_status = lost\)/);
  });

  test('a missing publication matters to pgoutput only', () => {
    const error = failure(() => assertSourceReady({ ...FACTS, publicationExists: false }, SLOT, WANT));
    assert.equal(error.kind, 'publication-missing');
    assert.match(error.message, /publication "slotlake" does not exist/);
    const wal2json = { ...SLOT, plugin: 'wal2json' };
    assert.equal(
      assertSourceReady({ ...FACTS, publicationExists: false }, wal2json, { ...WANT, plugin: 'wal2json' }),
      wal2json,
    );
  });
});
