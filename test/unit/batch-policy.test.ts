/**
 * The batch policy (pipeline/batch-policy.ts): when a batch is committed at a transaction boundary (the
 * user's row, byte and age limits, and the hard object and intent-key bounds), when a batch must end even
 * inside a transaction before one more object (the intent stays within the checkpoint item), and when an
 * idle pipeline moves its checkpoint to the server's position (at most once per interval, only at rest).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { MAX_INTENT_KEY_BYTES } from '../../src/checkpoint/store.js';
import {
  BatchPolicy,
  IdleAdvance,
  MAX_OBJECTS_PER_BATCH,
  type BatchState,
} from '../../src/pipeline/batch-policy.js';

const LIMITS = { maxRows: 1000, maxBytes: 64 * 1024 * 1024, maxAgeMs: 60_000 };
const STARTED = 1_000_000;

function batch(overrides: Partial<BatchState> = {}): BatchState {
  return {
    isEmpty: false,
    rows: 10,
    uncompressedBytes: 4096,
    objectCount: 2,
    intentKeyBytes: 300,
    startedAtMs: STARTED,
    ...overrides,
  };
}

describe('BatchPolicy.rotationDue', () => {
  const policy = new BatchPolicy(LIMITS);

  it('is not due for a small, young batch', () => {
    assert.equal(policy.rotationDue(batch(), STARTED + 1), false);
  });

  const triggers: [string, Partial<BatchState>, number][] = [
    ['the row limit', { rows: LIMITS.maxRows }, STARTED],
    ['the byte limit', { uncompressedBytes: LIMITS.maxBytes }, STARTED],
    ['the age limit', {}, STARTED + LIMITS.maxAgeMs],
    ['the object bound', { objectCount: MAX_OBJECTS_PER_BATCH }, STARTED],
    ['half the intent-key bound', { intentKeyBytes: MAX_INTENT_KEY_BYTES / 2 }, STARTED],
  ];

  for (const [what, overrides, now] of triggers) {
    it(`is due at ${what}, and not just below it`, () => {
      assert.equal(policy.rotationDue(batch(overrides), now), true);
      const [field] = Object.keys(overrides) as (keyof BatchState)[];
      const below =
        field === undefined
          ? policy.rotationDue(batch(), now - 1)
          : policy.rotationDue(batch({ [field]: (overrides[field] as number) - 1 }), now);
      assert.equal(below, false);
    });

    it(`is never due for an empty batch, even past ${what}`, () => {
      assert.equal(policy.rotationDue(batch({ ...overrides, isEmpty: true, rows: 0 }), now + 1), false);
    });
  }

  it('is due exactly when one limit is reached (any state)', () => {
    fc.assert(
      fc.property(
        fc.record({
          isEmpty: fc.boolean(),
          rows: fc.nat(2 * LIMITS.maxRows),
          uncompressedBytes: fc.nat(2 * LIMITS.maxBytes),
          objectCount: fc.nat(2 * MAX_OBJECTS_PER_BATCH),
          intentKeyBytes: fc.nat(MAX_INTENT_KEY_BYTES),
          startedAtMs: fc.constant(STARTED),
        }),
        fc.nat(2 * LIMITS.maxAgeMs),
        (state, age) => {
          const expected =
            !state.isEmpty &&
            (state.rows >= LIMITS.maxRows ||
              state.uncompressedBytes >= LIMITS.maxBytes ||
              state.objectCount >= MAX_OBJECTS_PER_BATCH ||
              2 * state.intentKeyBytes >= MAX_INTENT_KEY_BYTES ||
              age >= LIMITS.maxAgeMs);
          assert.equal(policy.rotationDue(state, STARTED + age), expected);
        },
      ),
    );
  });
});

describe('BatchPolicy.mustEndBeforeNewObject', () => {
  const policy = new BatchPolicy(LIMITS);

  it('lets a batch open objects up to the object bound, then ends it first', () => {
    assert.equal(
      policy.mustEndBeforeNewObject(batch({ objectCount: MAX_OBJECTS_PER_BATCH - 1 }), 200),
      false,
    );
    assert.equal(policy.mustEndBeforeNewObject(batch({ objectCount: MAX_OBJECTS_PER_BATCH }), 200), true);
  });

  it("ends the batch first when the new object's key would pass the intent-key bound", () => {
    const keyBytes = 1024;
    const fits = batch({ intentKeyBytes: MAX_INTENT_KEY_BYTES - keyBytes });
    const overflows = batch({ intentKeyBytes: MAX_INTENT_KEY_BYTES - keyBytes + 1 });
    assert.equal(policy.mustEndBeforeNewObject(fits, keyBytes), false, 'exactly at the bound fits');
    assert.equal(policy.mustEndBeforeNewObject(overflows, keyBytes), true);
  });

  it('never ends an empty batch: the first object always goes in, whatever its key', () => {
    const empty = batch({ isEmpty: true, rows: 0, objectCount: 0, intentKeyBytes: 0 });
    assert.equal(policy.mustEndBeforeNewObject(empty, MAX_INTENT_KEY_BYTES + 1), false);
  });

  it('keeps every batch it lets grow within both bounds (any sequence of new objects)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 1, max: 1024 }), { minLength: 1200, maxLength: 2500 }),
        (keys) => {
          const empty = batch({ isEmpty: true, rows: 0, objectCount: 0, intentKeyBytes: 0 });
          let state = empty;
          let ended = 0;
          for (const keyBytes of keys) {
            if (policy.mustEndBeforeNewObject(state, keyBytes)) {
              state = empty;
              ended++;
            }
            state = {
              ...state,
              isEmpty: false,
              objectCount: state.objectCount + 1,
              intentKeyBytes: state.intentKeyBytes + keyBytes,
            };
            assert.ok(state.objectCount <= MAX_OBJECTS_PER_BATCH);
            assert.ok(state.intentKeyBytes <= MAX_INTENT_KEY_BYTES);
          }
          assert.ok(ended > 0, 'the sequence is long enough to end a batch');
        },
      ),
      { numRuns: 20 },
    );
  });
});

describe('IdleAdvance.due', () => {
  const INTERVAL = 10_000;
  const CHECKPOINT = 0x1000n;
  const AHEAD = 0x2000n;

  it('waits an interval from its creation', () => {
    const idle = new IdleAdvance(INTERVAL, STARTED);
    assert.equal(idle.due(true, true, AHEAD, CHECKPOINT, STARTED + INTERVAL - 1), false);
    assert.equal(idle.due(true, true, AHEAD, CHECKPOINT, STARTED + INTERVAL), true);
  });

  it('is due at most once per interval', () => {
    const idle = new IdleAdvance(INTERVAL, STARTED);
    const first = STARTED + INTERVAL;
    assert.equal(idle.due(true, true, AHEAD, CHECKPOINT, first), true);
    assert.equal(idle.due(true, true, AHEAD + 1n, CHECKPOINT, first), false);
    assert.equal(idle.due(true, true, AHEAD + 1n, CHECKPOINT, first + INTERVAL - 1), false);
    assert.equal(idle.due(true, true, AHEAD + 1n, CHECKPOINT, first + INTERVAL), true);
  });

  it('is never due while something is pending, the batch holds rows, or the position is not past the checkpoint', () => {
    const idle = new IdleAdvance(INTERVAL, STARTED);
    const later = STARTED + 10 * INTERVAL;
    assert.equal(idle.due(false, true, AHEAD, CHECKPOINT, later), false, 'a transaction is pending');
    assert.equal(idle.due(true, false, AHEAD, CHECKPOINT, later), false, 'the batch is not empty');
    assert.equal(idle.due(true, true, CHECKPOINT, CHECKPOINT, later), false, 'at the checkpoint');
    assert.equal(idle.due(true, true, CHECKPOINT - 1n, CHECKPOINT, later), false, 'behind the checkpoint');
    // A refusal does not use the interval up.
    assert.equal(idle.due(true, true, AHEAD, CHECKPOINT, later), true);
  });

  it('never fires twice within an interval, and only when allowed (any sequence of calls)', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            stepMs: fc.nat(3 * INTERVAL),
            atRest: fc.boolean(),
            batchEmpty: fc.boolean(),
            position: fc.bigInt({ min: 0n, max: 0x3000n }),
          }),
          { maxLength: 60 },
        ),
        (calls) => {
          const idle = new IdleAdvance(INTERVAL, STARTED);
          let now = STARTED;
          let last = STARTED;
          for (const call of calls) {
            now += call.stepMs;
            const due = idle.due(call.atRest, call.batchEmpty, call.position, CHECKPOINT, now);
            const allowed = call.atRest && call.batchEmpty && call.position > CHECKPOINT;
            assert.equal(due, allowed && now - last >= INTERVAL);
            if (due) last = now;
          }
        },
      ),
    );
  });
});
