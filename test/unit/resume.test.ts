/**
 * Where a run resumes (runtime/resume.ts): the stored checkpoint checked against the source it was made on
 * (system identifier, database, timeline, slot) and against the slot's position. Every refusal is a typed
 * `source`-origin error that names both sides; every accepted surprise leaves a note to log.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Checkpoint, SourceIdentity } from '../../src/checkpoint/store.js';
import { SlotlakeError } from '../../src/errors.js';
import { formatLsn, lsn, ZERO_LSN, type Lsn } from '../../src/lsn.js';
import {
  decideResume,
  type ResumeDecision,
  type ResumePolicies,
  type SlotPosition,
} from '../../src/runtime/resume.js';

const SOURCE: SourceIdentity = {
  systemId: '7301234567890123456',
  timeline: 1,
  database: 'shop',
  slot: 'slotlake',
};
const STRICT: ResumePolicies = { slotPositionPolicy: 'fail', onSourceChange: 'fail' };
const CHECKPOINT_LSN = lsn(0x3_0000_2000n);
const PARTIAL = { commitLsn: lsn(0x3_0000_2400n), nextSeq: 7 };

function checkpoint(overrides: Partial<Checkpoint> = {}): Checkpoint {
  return {
    lsn: CHECKPOINT_LSN,
    partial: PARTIAL,
    source: SOURCE,
    snapshot: undefined,
    version: 12,
    updatedAt: '2025-11-24T10:00:00.000Z',
    ...overrides,
  };
}

function slot(confirmedFlushLsn: Lsn | null, restartLsn: Lsn | null = null): SlotPosition {
  return { name: SOURCE.slot, confirmedFlushLsn, restartLsn };
}

function refusal(fn: () => unknown, kind: string): SlotlakeError {
  let caught: unknown;
  assert.throws(fn, (error: unknown) => {
    caught = error;
    return true;
  });
  assert.ok(caught instanceof SlotlakeError, `expected a SlotlakeError, got ${String(caught)}`);
  assert.equal(caught.kind, kind);
  assert.equal(caught.origin, 'source');
  assert.equal(caught.retryable, false);
  assert.ok(caught.hint, 'the error says what to do');
  return caught;
}

function onlyNote(decision: ResumeDecision, level: 'info' | 'warn') {
  assert.equal(decision.notes.length, 1, JSON.stringify(decision.notes));
  const [note] = decision.notes;
  assert.equal(note!.level, level);
  return note!;
}

describe('decideResume without a checkpoint', () => {
  it("starts at the slot's confirmed position", () => {
    const decision = decideResume(null, slot(lsn(0x500n), lsn(0x400n)), SOURCE, STRICT);
    assert.deepEqual(decision.position, { lsn: lsn(0x500n), partial: undefined });
    assert.equal(decision.source, SOURCE);
    assert.equal(decision.sourceChanged, false);
    assert.equal(onlyNote(decision, 'info').fields.slotPosition, '0/500');
  });

  it('falls back to the restart position, then to 0/0, when the slot has no confirmed position', () => {
    assert.equal(decideResume(null, slot(null, lsn(0x400n)), SOURCE, STRICT).position.lsn, lsn(0x400n));
    assert.equal(decideResume(null, slot(null, null), SOURCE, STRICT).position.lsn, ZERO_LSN);
  });
});

describe('decideResume on the same system and database', () => {
  it('resumes from the checkpoint, with its partial transaction, when the slot is behind; warns naming both', () => {
    const behind = lsn(CHECKPOINT_LSN - 0x100n);
    const decision = decideResume(checkpoint(), slot(behind), SOURCE, STRICT);
    assert.deepEqual(decision.position, { lsn: CHECKPOINT_LSN, partial: PARTIAL });
    assert.equal(decision.sourceChanged, false);
    const note = onlyNote(decision, 'warn');
    assert.match(note.message, /behind the checkpoint/);
    assert.deepEqual(note.fields, { slotPosition: formatLsn(behind), checkpoint: formatLsn(CHECKPOINT_LSN) });
  });

  it('resumes from the checkpoint without a note when the slot is exactly there', () => {
    const decision = decideResume(checkpoint(), slot(CHECKPOINT_LSN), SOURCE, STRICT);
    assert.deepEqual(decision.position, { lsn: CHECKPOINT_LSN, partial: PARTIAL });
    assert.deepEqual(decision.notes, []);
  });

  it('refuses a slot ahead of the checkpoint, naming the slot and both positions', () => {
    const ahead = lsn(CHECKPOINT_LSN + 0x100n);
    const error = refusal(() => decideResume(checkpoint(), slot(ahead), SOURCE, STRICT), 'slot-ahead');
    assert.ok(error.message.includes(formatLsn(ahead)), error.message);
    assert.ok(error.message.includes(formatLsn(CHECKPOINT_LSN)), error.message);
    assert.ok(error.message.includes(`"${SOURCE.slot}"`), error.message);
    assert.match(error.hint!, /SLOTLAKE_SLOT_POSITION_POLICY=trust-slot/);
  });

  it('judges a slot without a confirmed position by its restart position', () => {
    const ahead = lsn(CHECKPOINT_LSN + 0x100n);
    refusal(() => decideResume(checkpoint(), slot(null, ahead), SOURCE, STRICT), 'slot-ahead');
  });

  it('with trust-slot, continues from a slot ahead, keeping the partial transaction only at or after it', () => {
    const trust: ResumePolicies = { ...STRICT, slotPositionPolicy: 'trust-slot' };
    const beforePartial = lsn(PARTIAL.commitLsn - 0x10n);
    const kept = decideResume(checkpoint(), slot(beforePartial), SOURCE, trust);
    assert.deepEqual(kept.position, { lsn: beforePartial, partial: PARTIAL });
    const note = onlyNote(kept, 'warn');
    assert.match(note.message, /trust-slot/);
    assert.deepEqual(note.fields, {
      slotPosition: formatLsn(beforePartial),
      checkpoint: formatLsn(CHECKPOINT_LSN),
    });
    const atPartial = decideResume(checkpoint(), slot(PARTIAL.commitLsn), SOURCE, trust);
    assert.deepEqual(atPartial.position, { lsn: PARTIAL.commitLsn, partial: PARTIAL });
    const pastPartial = lsn(PARTIAL.commitLsn + 0x10n);
    const dropped = decideResume(checkpoint(), slot(pastPartial), SOURCE, trust);
    assert.deepEqual(dropped.position, { lsn: pastPartial, partial: undefined });
    assert.equal(dropped.sourceChanged, false);
  });

  it('resumes from the checkpoint on a new timeline (a failover), with a warning naming both timelines', () => {
    const promoted = { ...SOURCE, timeline: 2 };
    const decision = decideResume(checkpoint(), slot(lsn(CHECKPOINT_LSN - 8n)), promoted, STRICT);
    assert.deepEqual(decision.position, { lsn: CHECKPOINT_LSN, partial: PARTIAL });
    assert.equal(decision.source, promoted, 'later checkpoints carry the new timeline');
    assert.equal(decision.sourceChanged, false);
    const timeline = decision.notes.find((note) => 'timeline' in note.fields);
    assert.ok(timeline, JSON.stringify(decision.notes));
    assert.equal(timeline.level, 'warn');
    assert.deepEqual(timeline.fields, { previousTimeline: 1, timeline: 2 });
  });

  it('still refuses a slot ahead after a failover', () => {
    const promoted = { ...SOURCE, timeline: 2 };
    refusal(() => decideResume(checkpoint(), slot(lsn(CHECKPOINT_LSN + 8n)), promoted, STRICT), 'slot-ahead');
  });

  it('allows another slot of the same database, with a note naming both slots', () => {
    const other = { ...SOURCE, slot: 'slotlake_v2' };
    const decision = decideResume(checkpoint(), slot(CHECKPOINT_LSN), other, STRICT);
    assert.deepEqual(decision.position, { lsn: CHECKPOINT_LSN, partial: PARTIAL });
    assert.equal(decision.source, other);
    const note = onlyNote(decision, 'warn');
    assert.deepEqual(note.fields, { previousSlot: 'slotlake', slot: 'slotlake_v2' });
  });

  it('adopts this source for a checkpoint written without a source identity, with an info note', () => {
    const decision = decideResume(checkpoint({ source: undefined }), slot(CHECKPOINT_LSN), SOURCE, STRICT);
    assert.deepEqual(decision.position, { lsn: CHECKPOINT_LSN, partial: PARTIAL });
    assert.equal(decision.source, SOURCE);
    assert.equal(decision.sourceChanged, false);
    const note = onlyNote(decision, 'info');
    assert.match(note.message, /no source identity/);
    assert.deepEqual(note.fields, { source: SOURCE });
  });

  it('still checks the slot against a checkpoint without a source identity', () => {
    refusal(
      () => decideResume(checkpoint({ source: undefined }), slot(lsn(CHECKPOINT_LSN + 1n)), SOURCE, STRICT),
      'slot-ahead',
    );
  });
});

describe('decideResume on another source', () => {
  const otherSystem: SourceIdentity = { ...SOURCE, systemId: '7309999999999999999' };
  const otherDatabase: SourceIdentity = { ...SOURCE, database: 'shop"; DROP DATABASE shop; --' };

  for (const [what, current] of [
    ['another system', otherSystem],
    ['another database on the same system', otherDatabase],
  ] as const) {
    it(`refuses a checkpoint made on ${what}, naming both sources and saying what to do`, () => {
      const error = refusal(
        () => decideResume(checkpoint(), slot(lsn(0x10n)), current, STRICT),
        'source-changed',
      );
      for (const source of [SOURCE, current]) {
        assert.ok(error.message.includes(`system ${source.systemId}`), error.message);
        assert.ok(error.message.includes(`database "${source.database}"`), error.message);
      }
      assert.ok(error.message.includes(formatLsn(CHECKPOINT_LSN)), error.message);
      assert.match(error.hint!, /SLOTLAKE_ON_SOURCE_CHANGE=accept-gap/);
      assert.match(error.hint!, /re-snapshot/);
      assert.match(error.hint!, /DATABASE_URL/);
    });

    it(`refuses ${what} before looking at the slot: a slot ahead is not the problem to report`, () => {
      refusal(
        () => decideResume(checkpoint(), slot(lsn(CHECKPOINT_LSN + 0x100n)), current, STRICT),
        'source-changed',
      );
    });

    it(`with accept-gap, starts ${what} at its slot position (never the old checkpoint's), with a warning`, () => {
      const acceptGap: ResumePolicies = { ...STRICT, onSourceChange: 'accept-gap' };
      for (const position of [lsn(0x10n), lsn(CHECKPOINT_LSN + 0x100n)]) {
        const decision = decideResume(checkpoint(), slot(position), current, acceptGap);
        assert.deepEqual(decision.position, { lsn: position, partial: undefined });
        assert.equal(decision.source, current);
        assert.equal(decision.sourceChanged, true);
        const note = onlyNote(decision, 'warn');
        assert.match(note.message, /accept-gap/);
        assert.deepEqual(note.fields, {
          previousSource: SOURCE,
          source: current,
          slotPosition: formatLsn(position),
        });
      }
    });
  }
});
