/**
 * What an archived value must be, given the text the database printed for it (test_decoding, see
 * reference.ts): a small mapping of its own, written from the contract's value table (contract §4) and not
 * from slotlake's value mapper, so that the two can disagree.
 *
 * | printed type                                  | the record's JSON value                                  |
 * |-----------------------------------------------|----------------------------------------------------------|
 * | null                                          | null                                                     |
 * | smallint, integer, bigint, oid                | a number whose JSON text is exactly the printed text     |
 * | real, double precision                        | a number of the same value (real: as float4); `NaN`,     |
 * |                                               | `Infinity`, `-Infinity` as those strings                 |
 * | numeric                                       | the printed text, as a string                            |
 * | boolean (`true`/`false`; `t`/`f` in arrays)   | true / false                                             |
 * | bytea (`\x…`)                                 | base64 of those bytes                                    |
 * | timestamp with time zone (`… +00`, UTC)       | `YYYY-MM-DDTHH:MM:SS[.f]Z`                               |
 * | timestamp without time zone                   | `YYYY-MM-DDTHH:MM:SS[.f]`                                |
 * | `infinity` / `-infinity` of the date types    | those strings                                            |
 * | `T[]` (`{…}`, one `[]` whatever the dimension)| nested JSON arrays, elements mapped as `T`, NULL as null |
 * | bit strings (`B'1010'`)                       | the bits, as a string                                    |
 * | anything else (text types, uuid, json, date,  | the printed text, as a string                            |
 * | time, enums, interval, ranges, money, …)      |                                                          |
 *
 * The record is read with its numbers' source text kept (`parseRecordLine`), so an int8 is compared digit
 * for digit, never through a float.
 */

/** A JSON number with its source text (JSON.parse would round an int8). */
export class JsonNumber {
  constructor(readonly source: string) {}
  get value(): number {
    return Number(this.source);
  }
}

export type JsonWithNumbers =
  null | boolean | string | JsonNumber | JsonWithNumbers[] | { [key: string]: JsonWithNumbers };

/** A JSON line parsed with every number kept as its source text. */
export function parseRecordLine(line: string): Record<string, JsonWithNumbers> {
  return JSON.parse(line, (_key, value: unknown, context?: { source?: string }) =>
    typeof value === 'number' ? new JsonNumber(context?.source ?? String(value)) : value,
  ) as Record<string, JsonWithNumbers>;
}

const INTEGERS = new Set(['smallint', 'integer', 'bigint', 'oid']);
const FLOATS = new Set(['real', 'double precision']);
const FLOAT_WORDS = new Set(['NaN', 'Infinity', '-Infinity']);

/**
 * Elements of an array literal (`{1,NULL,"a \"b\""}`, nested for several dimensions) as text, NULL as null.
 * Literals with explicit bounds (`[0:1]={…}`) or another delimiter are refused: no test here writes one.
 */
export function parseArrayLiteral(text: string): unknown[] {
  let at = 0;
  const fail = (what: string): never => {
    throw new Error(`array literal not understood at ${at} (${what}): ${JSON.stringify(text)}`);
  };
  const parseArray = (): unknown[] => {
    if (text[at] !== '{') fail('expected {');
    at++;
    const items: unknown[] = [];
    if (text[at] === '}') {
      at++;
      return items;
    }
    for (;;) {
      if (text[at] === '{') items.push(parseArray());
      else if (text[at] === '"') {
        at++;
        let out = '';
        while (text[at] !== '"') {
          if (at >= text.length) fail('unterminated quote');
          if (text[at] === '\\') at++;
          out += text[at++];
        }
        at++;
        items.push(out);
      } else {
        const start = at;
        while (at < text.length && text[at] !== ',' && text[at] !== '}') at++;
        const raw = text.slice(start, at);
        if (raw === '') fail('empty element');
        items.push(raw.toUpperCase() === 'NULL' ? null : raw);
      }
      if (text[at] === ',') at++;
      else if (text[at] === '}') {
        at++;
        return items;
      } else fail('expected , or }');
    }
  };
  const result = parseArray();
  if (at !== text.length) fail('text after the array');
  return result;
}

function show(value: JsonWithNumbers | undefined): string {
  if (value === undefined) return 'absent';
  return JSON.stringify(value, (_key, v: unknown) => (v instanceof JsonNumber ? `#${v.source}` : v));
}

/** Why `actual` is not the value printed as `text` (null: SQL NULL) for `type`, or undefined when it is. */
export function mismatch(
  type: string,
  text: string | null,
  actual: JsonWithNumbers | undefined,
): string | undefined {
  const differs = (expected: string) => `${type}: expected ${expected}, archived ${show(actual)}`;
  if (text === null) return actual === null ? undefined : differs('null');
  if (type.endsWith('[]')) {
    const element = type.slice(0, -2);
    const compare = (
      items: unknown[],
      value: JsonWithNumbers | undefined,
      path: string,
    ): string | undefined => {
      if (!Array.isArray(value))
        return `${path}: expected an array of ${items.length}, archived ${show(value)}`;
      if (value.length !== items.length)
        return `${path}: expected ${items.length} elements, archived ${show(value)}`;
      for (let i = 0; i < items.length; i++) {
        const item = items[i];
        const why = Array.isArray(item)
          ? compare(item, value[i], `${path}[${i}]`)
          : mismatch(element, item as string | null, value[i]);
        if (why) return `${path}[${i}] ${why}`;
      }
      return undefined;
    };
    return compare(parseArrayLiteral(text), actual, type);
  }
  if (INTEGERS.has(type))
    return actual instanceof JsonNumber && actual.source === text ? undefined : differs(`#${text}`);
  if (FLOATS.has(type)) {
    if (FLOAT_WORDS.has(text)) return actual === text ? undefined : differs(JSON.stringify(text));
    if (!(actual instanceof JsonNumber)) return differs(`#${text}`);
    const same =
      type === 'real'
        ? Math.fround(actual.value) === Math.fround(Number(text))
        : actual.value === Number(text);
    return same ? undefined : differs(`#${text}`);
  }
  if (type === 'boolean') {
    // bare `true`/`false` in a row, `t`/`f` inside an array literal
    const value = { true: true, t: true, false: false, f: false }[text];
    if (value === undefined) return `boolean printed as ${text}`;
    return actual === value ? undefined : differs(text);
  }
  let expected = text;
  if (type === 'bytea') {
    if (!/^\\x([0-9a-f]{2})*$/.test(text)) return `bytea printed as ${JSON.stringify(text)}`;
    expected = Buffer.from(text.slice(2), 'hex').toString('base64');
  } else if (type === 'timestamp with time zone' && !text.endsWith('infinity')) {
    const match = /^(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2}(?:\.\d+)?)\+00$/.exec(text);
    if (!match) return `timestamptz printed as ${JSON.stringify(text)} (not UTC ISO)`;
    expected = `${match[1]}T${match[2]}Z`;
  } else if (type === 'timestamp without time zone' && !text.endsWith('infinity')) {
    expected = text.replace(' ', 'T');
  }
  return actual === expected ? undefined : differs(JSON.stringify(expected));
}
