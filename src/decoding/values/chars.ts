/** Character codes and classes shared by the text parsers of Postgres output (scalars and arrays). */

// ---------------------------------------------------------------------------------------------------
// Character codes

export const SPACE = 0x20;
export const TAB = 0x09;
export const CR = 0x0d;
export const QUOTE = 0x22;
export const PLUS = 0x2b;
export const MINUS = 0x2d;
export const DOT = 0x2e;
export const ZERO = 0x30;
export const ONE = 0x31;
export const NINE = 0x39;
export const COLON = 0x3a;
export const UPPER_E = 0x45;
export const LBRACKET = 0x5b;
export const BACKSLASH = 0x5c;
export const RBRACKET = 0x5d;
export const LOWER_E = 0x65;
export const LOWER_F = 0x66;
export const LOWER_T = 0x74;
export const LOWER_X = 0x78;
export const LBRACE = 0x7b;
export const RBRACE = 0x7d;

export function isDigit(c: number): boolean {
  return c >= ZERO && c <= NINE;
}

/** Postgres' scanner_isspace: space, \t, \n, \v, \f, \r. */
export function isSpace(c: number): boolean {
  return c === SPACE || (c >= TAB && c <= CR);
}
