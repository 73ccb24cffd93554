import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  decimalFromText,
  toBoolean,
  toBytes,
  toDate,
  toDouble,
  toFloat,
  toInt32,
  toInt64,
  toTime,
  toTimestamp,
  toTimestamptz,
  UNREPRESENTABLE,
} from '../../src/sink/parquet/convert.js';
import { formatDecimal } from '../../src/sink/parquet/statistics.js';

const DAY_US = 86_400_000_000n;

describe('decimals from exact text', () => {
  it('shifts the digits by the scale, padding the fraction', () => {
    assert.equal(decimalFromText('12.50', 12, 2), 1250n);
    assert.equal(decimalFromText('-12.5', 12, 2), -1250n);
    assert.equal(decimalFromText('0', 5, 2), 0n);
    assert.equal(decimalFromText('-0.00', 5, 2), 0n);
    assert.equal(decimalFromText('0.01', 3, 2), 1n);
    assert.equal(decimalFromText('7', 1, 0), 7n);
    assert.equal(decimalFromText('000123.40', 5, 2), 12340n);
  });

  it('keeps all 38 digits (no float on the way)', () => {
    const digits = '12345678901234567890123456789012345678';
    assert.equal(decimalFromText(digits, 38, 0), BigInt(digits));
    assert.equal(decimalFromText(`-${digits.slice(0, 28)}.${digits.slice(28)}`, 38, 10), -BigInt(digits));
    assert.equal(decimalFromText('99999999999999999999999999999999999999', 38, 0), 10n ** 38n - 1n);
    assert.equal(decimalFromText('0.00000000000000000000000000000000000001', 38, 38), 1n);
  });

  it('accepts trailing zeros beyond the scale, refuses other extra digits', () => {
    assert.equal(decimalFromText('1.500', 5, 2), 150n);
    assert.equal(decimalFromText('1.505', 5, 2), UNREPRESENTABLE);
  });

  it('refuses more integer digits than precision - scale', () => {
    assert.equal(decimalFromText('1000.00', 5, 2), UNREPRESENTABLE);
    assert.equal(decimalFromText('999.99', 5, 2), 99999n);
    assert.equal(decimalFromText('100000000000000000000000000000000000000', 38, 0), UNREPRESENTABLE);
  });

  it('NaN, ±Infinity and junk are unrepresentable', () => {
    for (const text of ['NaN', 'Infinity', '-Infinity', '', '-', '.', '1e5', '1.2.3', ' 1', '1,5', '--1'])
      assert.equal(decimalFromText(text, 10, 2), UNREPRESENTABLE, JSON.stringify(text));
  });

  it('property: formatDecimal and decimalFromText are inverse', () => {
    fc.assert(
      fc.property(
        fc.bigInt({ min: -(10n ** 38n) + 1n, max: 10n ** 38n - 1n }),
        fc.integer({ min: 0, max: 38 }),
        (unscaled, scale) => {
          const text = formatDecimal(unscaled, scale);
          assert.equal(decimalFromText(text, 38, scale), unscaled);
        },
      ),
    );
  });
});

describe('integers, booleans, floats', () => {
  it('int2/int4 within their range only', () => {
    const int2 = toInt32(-32768, 32767);
    assert.equal(int2('-32768'), -32768);
    assert.equal(int2('32767'), 32767);
    assert.equal(int2('32768'), UNREPRESENTABLE);
    const int4 = toInt32(-2147483648, 2147483647);
    assert.equal(int4('-2147483648'), -2147483648);
    assert.equal(int4('2147483648'), UNREPRESENTABLE);
    assert.equal(int4('1.5'), UNREPRESENTABLE);
    assert.equal(int4(''), UNREPRESENTABLE);
  });

  it('int8 exact at both ends', () => {
    assert.equal(toInt64('9223372036854775807'), 9223372036854775807n);
    assert.equal(toInt64('-9223372036854775808'), -9223372036854775808n);
    assert.equal(toInt64('9223372036854775808'), UNREPRESENTABLE);
    assert.equal(toInt64('9007199254740993'), 9007199254740993n);
    assert.equal(toInt64('4294967295'), 4294967295n); // oid
  });

  it('booleans', () => {
    assert.equal(toBoolean('t'), true);
    assert.equal(toBoolean('f'), false);
    assert.equal(toBoolean('true'), UNREPRESENTABLE);
  });

  it('float8: shortest digits exactly, NaN and infinities are values', () => {
    assert.equal(toDouble('0.1'), 0.1);
    assert.equal(toDouble('1.7976931348623157e+308'), Number.MAX_VALUE);
    assert.equal(toDouble('5e-324'), Number.MIN_VALUE);
    assert.ok(Object.is(toDouble('-0'), -0));
    assert.ok(Number.isNaN(toDouble('NaN')));
    assert.equal(toDouble('Infinity'), Infinity);
    assert.equal(toDouble('-Infinity'), -Infinity);
    assert.equal(toDouble('nan'), UNREPRESENTABLE);
  });

  it('float4: the nearest float32 of the printed digits', () => {
    assert.equal(toFloat('3.4028235e+38'), Math.fround(3.4028235e38));
    assert.equal(toFloat('1e-45'), Math.fround(1e-45));
    assert.equal(toFloat('0.1'), Math.fround(0.1));
    assert.equal(toFloat('-Infinity'), -Infinity);
  });

  it('property: float8 text of any double converts back to it', () => {
    fc.assert(
      fc.property(fc.double({ noNaN: true, noDefaultInfinity: true }), (value) => {
        const text = Object.is(value, -0) ? '-0' : String(value);
        assert.ok(Object.is(toDouble(text), value));
      }),
    );
  });
});

describe('dates', () => {
  it('days since 1970-01-01, proleptic Gregorian, BC included', () => {
    assert.equal(toDate('1970-01-01'), 0);
    assert.equal(toDate('1969-12-31'), -1);
    assert.equal(toDate('2024-02-29'), 19782);
    assert.equal(toDate('0001-01-01'), -719162);
    assert.equal(toDate('0001-12-31 BC'), -719163); // year 0
    assert.equal(toDate('0044-03-15 BC'), -735160);
    assert.equal(toDate('4714-11-24 BC'), -2440588); // Julian day 0, Postgres' first date
    assert.equal(toDate('5874897-12-31'), 2147483493 - 2440588); // Postgres' last date, Julian day 2147483493
    assert.equal(toDate('12345-01-01'), Math.round(Date.UTC(12345, 0, 1) / 86_400_000));
  });

  it('infinity and junk are unrepresentable', () => {
    for (const text of [
      'infinity',
      '-infinity',
      '2024-1-02',
      '2024-13-01',
      '2024-01-02 BC BC',
      '24-01-01',
      '',
    ])
      assert.equal(toDate(text), UNREPRESENTABLE, text);
  });

  it('property: agrees with Date.UTC for years 1..9999', () => {
    fc.assert(
      fc.property(
        fc.date({ min: new Date('0001-01-01T00:00:00Z'), max: new Date('9999-12-31T00:00:00Z') }),
        (date) => {
          fc.pre(!Number.isNaN(date.getTime()));
          const text = date.toISOString().slice(0, 10);
          const expected = Math.floor(date.getTime() / 86_400_000);
          assert.equal(toDate(text), expected, text);
        },
      ),
    );
  });
});

describe('times and timestamps', () => {
  it('time: µs since midnight, 24:00:00 allowed', () => {
    assert.equal(toTime('00:00:00'), 0n);
    assert.equal(toTime('00:00:00.000001'), 1n);
    assert.equal(toTime('13:14:15.5'), (13n * 3600n + 14n * 60n + 15n) * 1_000_000n + 500_000n);
    assert.equal(toTime('23:59:59.999999'), DAY_US - 1n);
    assert.equal(toTime('24:00:00'), DAY_US);
    assert.equal(toTime('24:00:00.000001'), UNREPRESENTABLE);
    assert.equal(toTime('12:00:00.1234567'), UNREPRESENTABLE);
    assert.equal(toTime('12:00'), UNREPRESENTABLE);
  });

  it('timestamp: wall clock µs with every fraction length', () => {
    assert.equal(toTimestamp('1970-01-01 00:00:00'), 0n);
    assert.equal(toTimestamp('1970-01-01 00:00:00.1'), 100_000n);
    assert.equal(toTimestamp('1970-01-01 00:00:00.12'), 120_000n);
    assert.equal(toTimestamp('1970-01-01 00:00:00.000001'), 1n);
    assert.equal(toTimestamp('1969-12-31 23:59:59.999999'), -1n);
    assert.equal(toTimestamp('2024-01-02 03:04:05.123456'), 1704164645123456n);
    assert.equal(toTimestamp('2024-01-02 03:04:05+00'), UNREPRESENTABLE); // no offset in a timestamp
  });

  it('timestamptz: any offset converted to UTC', () => {
    const utc = 1704164645123456n;
    assert.equal(toTimestamptz('2024-01-02 03:04:05.123456+00'), utc);
    assert.equal(toTimestamptz('2024-01-02 08:34:05.123456+05:30'), utc);
    assert.equal(toTimestamptz('2024-01-01 23:34:05.123456-03:30'), utc);
    assert.equal(toTimestamptz('2024-01-02 03:04:57.123456+00:00:52'), utc);
    assert.equal(toTimestamptz('2024-01-02 03:04:05'), UNREPRESENTABLE); // no offset
  });

  it('BC and years past 9999 exactly; infinity and int64 overflow unrepresentable', () => {
    const bc = toTimestamptz('0044-03-15 12:00:00.000001+00 BC');
    assert.equal(bc, -735160n * DAY_US + 12n * 3600n * 1_000_000n + 1n);
    assert.equal(toTimestamp('0044-03-15 12:00:00 BC'), -735160n * DAY_US + 12n * 3600n * 1_000_000n);
    assert.equal(toTimestamp('4714-11-24 00:00:00 BC'), -2440588n * DAY_US);
    assert.equal(toTimestamp('12345-06-07 00:00:00'), BigInt(Date.UTC(12345, 5, 7)) * 1000n);
    assert.equal(toTimestamp('294276-12-31 23:59:59.999999'), UNREPRESENTABLE); // > 2^63 µs after 1970
    for (const text of ['infinity', '-infinity']) {
      assert.equal(toTimestamp(text), UNREPRESENTABLE);
      assert.equal(toTimestamptz(text), UNREPRESENTABLE);
    }
  });

  it('property: agrees with Date for AD instants, microseconds kept', () => {
    fc.assert(
      fc.property(
        fc.date({ min: new Date('0001-01-01T00:00:00Z'), max: new Date('9999-12-31T23:59:59Z') }),
        fc.integer({ min: 0, max: 999 }),
        (date, microsPart) => {
          fc.pre(!Number.isNaN(date.getTime()));
          const iso = date.toISOString();
          const fraction = `${iso.slice(20, 23)}${String(microsPart).padStart(3, '0')}`;
          const text = `${iso.slice(0, 10)} ${iso.slice(11, 19)}.${fraction}`;
          const expected = BigInt(date.getTime()) * 1000n + BigInt(microsPart);
          assert.equal(toTimestamp(text), expected, text);
          assert.equal(toTimestamptz(`${text}+00`), expected, text);
        },
      ),
    );
  });
});

describe('bytea', () => {
  it('hex and escape formats', () => {
    assert.deepEqual(toBytes('\\x00ff10'), Buffer.from([0, 255, 16]));
    assert.deepEqual(toBytes('\\x'), Buffer.alloc(0));
    assert.deepEqual(toBytes('a\\\\b\\001'), Buffer.from([0x61, 0x5c, 0x62, 1]));
    assert.equal(toBytes('\\x0'), UNREPRESENTABLE);
    assert.equal(toBytes('\\xzz'), UNREPRESENTABLE);
  });
});
