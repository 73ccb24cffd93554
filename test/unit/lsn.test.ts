/**
 * LSNs: Postgres' `X/X` text form, the 16-hex key form used in S3 keys, and unsigned 64-bit arithmetic.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  compareLsn,
  formatLsn,
  lsn,
  lsnDistance,
  lsnKey,
  maxLsn,
  minLsn,
  parseLsn,
  parseLsnKey,
  ZERO_LSN,
  type Lsn,
} from '../../src/lsn.js';

const MAX = (1n << 64n) - 1n;
const anyLsn = fc.bigInt({ min: 0n, max: MAX }).map(lsn);
/** Values around the sign bit, where a signed comparison would go wrong. */
const highLsn = fc.bigInt({ min: 1n << 63n, max: MAX }).map(lsn);

describe('text form X/X', () => {
  it('formats as Postgres does: upper-case hex halves, no padding', () => {
    assert.equal(formatLsn(lsn(0x16b3748n)), '0/16B3748');
    assert.equal(formatLsn(ZERO_LSN), '0/0');
    assert.equal(formatLsn(lsn((0x1n << 32n) | 0xan)), '1/A');
    assert.equal(formatLsn(lsn(MAX)), 'FFFFFFFF/FFFFFFFF');
    // around 2^53, where the number path hands over to the bigint one
    for (const value of [
      (1n << 53n) - 2n,
      (1n << 53n) - 1n,
      1n << 53n,
      (1n << 53n) + 1n,
      0xffffffffn,
      1n << 32n,
    ]) {
      const expected = `${(value >> 32n).toString(16).toUpperCase()}/${(value & 0xffffffffn).toString(16).toUpperCase()}`;
      assert.equal(formatLsn(lsn(value)), expected);
    }
    assert.equal(formatLsn(lsn(0xabcdef01n << 32n)), 'ABCDEF01/0');
  });

  it('parses upper, lower and padded hex', () => {
    assert.equal(parseLsn('0/16B3748'), 0x16b3748n);
    assert.equal(parseLsn('0/16b3748'), 0x16b3748n);
    assert.equal(parseLsn('00000001/0000000A'), (1n << 32n) | 10n);
    assert.equal(parseLsn('FFFFFFFF/FFFFFFFF'), MAX);
  });

  it('round-trips every 64-bit value', () => {
    fc.assert(
      fc.property(anyLsn, (value) => {
        const text = formatLsn(value);
        assert.match(text, /^(0|[1-9A-F][0-9A-F]{0,7})\/(0|[1-9A-F][0-9A-F]{0,7})$/);
        assert.equal(parseLsn(text), value);
      }),
    );
  });

  it('rejects anything that is not X/X with 1-8 hex digits per half', () => {
    for (const bad of [
      '',
      '0',
      '/',
      '0/',
      '/0',
      '1/2/3',
      'G/0',
      '0/G',
      '123456789/0',
      '0/123456789',
      '-1/0',
      '0/-1',
      '0x1/0',
      '1 /0',
      '16B3748',
    ]) {
      assert.throws(() => parseLsn(bad), RangeError, JSON.stringify(bad));
    }
  });

  it('lsn() rejects values outside the unsigned 64-bit range', () => {
    assert.throws(() => lsn(-1n), RangeError);
    assert.throws(() => lsn(MAX + 1n), RangeError);
    assert.equal(lsn(MAX), MAX);
  });
});

describe('key form', () => {
  it('is 16 zero-padded upper-case hex digits', () => {
    assert.equal(lsnKey(lsn(0x16b3748n)), '00000000016B3748');
    assert.equal(lsnKey(ZERO_LSN), '0000000000000000');
    assert.equal(lsnKey(lsn(MAX)), 'FFFFFFFFFFFFFFFF');
  });

  it('round-trips and rejects malformed keys', () => {
    fc.assert(
      fc.property(anyLsn, (value) => {
        const key = lsnKey(value);
        assert.match(key, /^[0-9A-F]{16}$/);
        assert.equal(parseLsnKey(key), value);
      }),
    );
    for (const bad of ['16B3748', '00000000016b3748', '000000000016B3748', '0/16B3748', 'G000000000000000']) {
      assert.throws(() => parseLsnKey(bad), RangeError, bad);
    }
  });

  it('sorts as text exactly as the LSNs sort as numbers', () => {
    fc.assert(
      fc.property(fc.array(fc.oneof(anyLsn, highLsn), { minLength: 2, maxLength: 30 }), (values) => {
        const byNumber = [...values].sort(compareLsn).map(lsnKey);
        const byText = values.map(lsnKey).sort();
        assert.deepEqual(byText, byNumber);
      }),
    );
  });
});

describe('comparison and distance', () => {
  it('compares unsigned, including values at and above 2^63', () => {
    const belowSign = lsn((1n << 63n) - 1n);
    const signBit = lsn(1n << 63n);
    assert.equal(compareLsn(belowSign, signBit), -1);
    assert.equal(compareLsn(signBit, belowSign), 1);
    assert.equal(compareLsn(lsn(MAX), ZERO_LSN), 1);
    assert.equal(compareLsn(signBit, signBit), 0);
    assert.equal(maxLsn(belowSign, signBit), signBit);
    assert.equal(minLsn(belowSign, signBit), belowSign);
    fc.assert(
      fc.property(anyLsn, highLsn, (a, b) => {
        const expected = a < b ? -1 : a > b ? 1 : 0;
        assert.equal(compareLsn(a, b), expected);
        assert.equal(compareLsn(b, a), expected === 0 ? 0 : -expected); // not -0: equal() is Object.is
        assert.equal(maxLsn(a, b), a > b ? a : b);
        assert.equal(minLsn(a, b), a < b ? a : b);
      }),
    );
  });

  it('compares like the text form parsed back', () => {
    assert.equal(compareLsn(parseLsn('1/0'), parseLsn('0/FFFFFFFF')), 1);
    assert.equal(compareLsn(parseLsn('80000000/0'), parseLsn('7FFFFFFF/FFFFFFFF')), 1);
  });

  it('lsnDistance is later - earlier, never negative', () => {
    assert.equal(lsnDistance(lsn(100n), lsn(40n)), 60n);
    assert.equal(lsnDistance(lsn(40n), lsn(100n)), 0n);
    assert.equal(lsnDistance(lsn(MAX), ZERO_LSN), MAX);
    fc.assert(
      fc.property(anyLsn, anyLsn, (a: Lsn, b: Lsn) => {
        const distance = lsnDistance(a, b);
        assert.ok(distance >= 0n);
        assert.equal(distance, a > b ? a - b : 0n);
      }),
    );
  });
});
