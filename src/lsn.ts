/**
 * Log Sequence Numbers.
 *
 * An LSN is a 64-bit byte position in PostgreSQL's write-ahead log. Postgres prints it as two
 * upper-case hex halves, `X/X` (high 32 bits / low 32 bits, e.g. `0/16B3748`); the replication
 * protocol carries it as an unsigned 64-bit big-endian integer. slotlake keeps exactly one
 * representation, a branded `bigint`, so comparisons are unsigned and exact everywhere.
 * See https://www.postgresql.org/docs/current/datatype-pg-lsn.html
 */

export type Lsn = bigint & { readonly __lsn: unique symbol };

const MAX_U64 = (1n << 64n) - 1n;
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const TEXT_FORM = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/;

/** The invalid LSN `0/0`: Postgres' "no position". */
export const ZERO_LSN = lsn(0n);

/** Wraps a bigint as an LSN, checking it is an unsigned 64-bit value. */
export function lsn(value: bigint): Lsn {
  if (value < 0n || value > MAX_U64) throw new RangeError(`LSN out of range: ${value}`);
  return value as Lsn;
}

/** Parses Postgres' text form `X/X`. Throws on anything else. */
export function parseLsn(text: string): Lsn {
  const match = TEXT_FORM.exec(text.trim());
  if (!match) throw new RangeError(`not an LSN (expected X/X hex): ${JSON.stringify(text)}`);
  return lsn((BigInt(`0x${match[1]}`) << 32n) | BigInt(`0x${match[2]}`));
}

/** Formats as Postgres does: `X/X`, upper-case hex, no padding. */
export function formatLsn(value: Lsn): string {
  if (value <= MAX_SAFE) {
    // Every change is formatted: below 2^53 (8 PiB of WAL) plain numbers do it without bigint arithmetic.
    const n = Number(value);
    const low = n % 0x100000000;
    return `${((n - low) / 0x100000000).toString(16).toUpperCase()}/${low.toString(16).toUpperCase()}`;
  }
  const high = value >> 32n;
  const low = value & 0xffffffffn;
  return `${high.toString(16).toUpperCase()}/${low.toString(16).toUpperCase()}`;
}

/** The 16-digit zero-padded upper-case hex form used in S3 keys, so that key order is LSN order. */
export function lsnKey(value: Lsn): string {
  return value.toString(16).toUpperCase().padStart(16, '0');
}

/** Parses the 16-hex key form back. */
export function parseLsnKey(key: string): Lsn {
  if (!/^[0-9A-F]{16}$/.test(key)) throw new RangeError(`not an LSN key: ${JSON.stringify(key)}`);
  return lsn(BigInt(`0x${key}`));
}

/** Unsigned comparison: negative, zero or positive. */
export function compareLsn(a: Lsn, b: Lsn): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

export function maxLsn(a: Lsn, b: Lsn): Lsn {
  return a >= b ? a : b;
}

export function minLsn(a: Lsn, b: Lsn): Lsn {
  return a <= b ? a : b;
}

/** Bytes between two positions (`later - earlier`), never negative. */
export function lsnDistance(later: Lsn, earlier: Lsn): bigint {
  return later > earlier ? later - earlier : 0n;
}
