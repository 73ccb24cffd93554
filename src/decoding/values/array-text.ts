/**
 * Postgres array text output (https://www.postgresql.org/docs/current/arrays.html#ARRAYS-IO) → nested JSON
 * arrays: quoting and backslash escapes, unquoted NULL, explicit bounds (`[0:2]=`) dropped, a type's own
 * delimiter (`;` for box), each element mapped by the element type's mapper.
 */
import {
  BACKSLASH,
  COLON,
  LBRACE,
  LBRACKET,
  MINUS,
  PLUS,
  QUOTE,
  RBRACE,
  RBRACKET,
  isDigit,
  isSpace,
} from './chars.js';
import type { JsonValue } from './json.js';
import { identity } from './scalars.js';
import type { ValueMapper } from './types.js';

// ---------------------------------------------------------------------------------------------------
// Arrays

/**
 * Parses Postgres array text output (`{1,2}`, `{{1,2},{3,4}}`, `{"a b","c\"d",NULL}`, `[0:2]={1,2,3}`)
 * into nested JSON arrays, mapping each non-null element's text with `mapElement`. Unquoted `NULL` (any
 * case) is null; quoted `"NULL"` is the text NULL. Bounds decorations are dropped. Returns undefined
 * when `text` is not an array literal.
 */
export function parsePgArray(
  text: string,
  delimiter = ',',
  mapElement: ValueMapper = identity,
): JsonValue[] | undefined {
  const delim = delimiter.charCodeAt(0);
  const n = text.length;
  let i = 0;
  while (i < n && isSpace(text.charCodeAt(i))) i++;
  if (i < n && text.charCodeAt(i) === LBRACKET) {
    // dimension decoration: [lb:ub][lb:ub]=
    const eq = text.indexOf('=', i);
    if (eq < 0) return undefined;
    for (let j = i; j < eq; j++) {
      const c = text.charCodeAt(j);
      if (
        !isDigit(c) &&
        c !== LBRACKET &&
        c !== RBRACKET &&
        c !== COLON &&
        c !== MINUS &&
        c !== PLUS &&
        !isSpace(c)
      ) {
        return undefined;
      }
    }
    i = eq + 1;
    while (i < n && isSpace(text.charCodeAt(i))) i++;
  }
  if (i >= n || text.charCodeAt(i) !== LBRACE) return undefined;
  i++;
  const root: JsonValue[] = [];
  const parents: JsonValue[][] = [];
  let current = root;
  let expectElement = true; // after '{' or a delimiter
  let opened = true; // right after '{' (where '}' closes an empty array)
  for (;;) {
    while (i < n && isSpace(text.charCodeAt(i))) i++;
    if (i >= n) return undefined;
    const c = text.charCodeAt(i);
    if (expectElement && !(opened && c === RBRACE)) {
      opened = false;
      expectElement = false;
      if (c === LBRACE) {
        const child: JsonValue[] = [];
        current.push(child);
        parents.push(current);
        current = child;
        i++;
        expectElement = true;
        opened = true;
      } else if (c === QUOTE) {
        // quoted element: backslash escapes the next character
        let j = ++i;
        let value = '';
        for (;;) {
          if (j >= n) return undefined;
          const q = text.charCodeAt(j);
          if (q === QUOTE) break;
          if (q === BACKSLASH) {
            value += text.slice(i, j);
            if (j + 1 >= n) return undefined;
            i = j + 1; // the escaped character starts the next run
            j += 2;
          } else j++;
        }
        value += text.slice(i, j);
        i = j + 1;
        current.push(mapElement(value));
      } else if (c === delim || c === RBRACE) {
        return undefined; // empty unquoted element
      } else {
        // unquoted element: up to the delimiter or '}'; backslash escapes the next character; trailing
        // whitespace that is not escaped is dropped (an escaped character resets the run being trimmed)
        let j = i;
        let value = '';
        let escaped = false;
        for (;;) {
          if (j >= n) return undefined;
          const u = text.charCodeAt(j);
          if (u === delim || u === RBRACE) break;
          if (u === QUOTE || u === LBRACE) return undefined;
          if (u === BACKSLASH) {
            if (j + 1 >= n) return undefined;
            value += text.slice(i, j) + text.charAt(j + 1);
            escaped = true;
            j += 2;
            i = j;
          } else j++;
        }
        let end = j;
        while (end > i && isSpace(text.charCodeAt(end - 1))) end--;
        value += text.slice(i, end);
        i = j;
        current.push(!escaped && isNullWord(value) ? null : mapElement(value));
      }
      continue;
    }
    if (c === RBRACE) {
      i++;
      const parent = parents.pop();
      if (parent === undefined) {
        while (i < n && isSpace(text.charCodeAt(i))) i++;
        return i === n ? root : undefined;
      }
      current = parent;
      expectElement = false;
      opened = false;
    } else if (c === delim && !expectElement) {
      i++;
      expectElement = true;
    } else return undefined;
  }
}

/** `NULL`, case-insensitively (array_in's rule for unquoted elements). */
export function isNullWord(value: string): boolean {
  return (
    value.length === 4 &&
    (value.charCodeAt(0) | 0x20) === 0x6e &&
    (value.charCodeAt(1) | 0x20) === 0x75 &&
    (value.charCodeAt(2) | 0x20) === 0x6c &&
    (value.charCodeAt(3) | 0x20) === 0x6c
  );
}

export function arrayMapper(elementMapper: ValueMapper, delimiter: string): ValueMapper {
  return (text) => {
    try {
      return parsePgArray(text, delimiter, elementMapper) ?? text;
    } catch {
      return text;
    }
  };
}
