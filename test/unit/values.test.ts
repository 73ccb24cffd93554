import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  BUILTIN_ARRAY_ELEMENTS,
  createJsonTextMapper,
  createValueMapper,
  isJsonNumber,
  mapValue,
  parsePgArray,
  PgType,
  RawJsonNumber,
  stringifyJsonValue,
  type JsonValue,
  type TypeInfo,
} from '../../src/decoding/values.js';

/** [Postgres text output, type OID, expected JSON text of the mapped value] */
type Case = readonly [text: string, oid: number, json: string];

function check(cases: readonly Case[]): void {
  for (const [text, oid, json] of cases) {
    const mapped = mapValue(text, oid);
    assert.equal(stringifyJsonValue(mapped), json, `${JSON.stringify(text)} as OID ${oid}`);
    assert.equal(stringifyJsonValue(createValueMapper(oid)(text)), json);
  }
}

describe('scalars', () => {
  it('bool', () => {
    check([
      ['t', PgType.bool, 'true'],
      ['f', PgType.bool, 'false'],
      ['x', PgType.bool, '"x"'],
      ['', PgType.bool, '""'],
    ]);
  });

  it('int2, int4, oid are numbers written as printed', () => {
    check([
      ['0', PgType.int2, '0'],
      ['-32768', PgType.int2, '-32768'],
      ['32767', PgType.int2, '32767'],
      ['-2147483648', PgType.int4, '-2147483648'],
      ['2147483647', PgType.int4, '2147483647'],
      ['4294967295', PgType.oid, '4294967295'],
    ]);
    assert.ok(mapValue('42', PgType.int4) instanceof RawJsonNumber);
  });

  it('int8 is exact at both ends', () => {
    check([
      ['9223372036854775807', PgType.int8, '9223372036854775807'],
      ['-9223372036854775808', PgType.int8, '-9223372036854775808'],
      ['9007199254740993', PgType.int8, '9007199254740993'],
      ['0', PgType.int8, '0'],
    ]);
    const value = mapValue('9223372036854775807', PgType.int8);
    assert.deepEqual(value, new RawJsonNumber('9223372036854775807'));
    // plain JSON.stringify agrees through toJSON/JSON.rawJSON
    assert.equal(JSON.stringify({ v: value }), '{"v":9223372036854775807}');
  });

  it('float4/float8: shortest-exact text kept verbatim; specials become strings', () => {
    check([
      ['0.1', PgType.float8, '0.1'],
      ['1e+100', PgType.float8, '1e+100'],
      ['-0', PgType.float8, '-0'],
      ['1.5e-07', PgType.float8, '1.5e-07'],
      ['1.2345678901234568e-300', PgType.float8, '1.2345678901234568e-300'],
      ['5e-324', PgType.float8, '5e-324'],
      ['1.7976931348623157e+308', PgType.float8, '1.7976931348623157e+308'],
      ['1.2345678901234568e+17', PgType.float8, '1.2345678901234568e+17'],
      ['3.4e+38', PgType.float4, '3.4e+38'],
      ['1e-45', PgType.float4, '1e-45'],
      ['NaN', PgType.float8, '"NaN"'],
      ['Infinity', PgType.float8, '"Infinity"'],
      ['-Infinity', PgType.float4, '"-Infinity"'],
    ]);
    assert.ok(Object.is(JSON.parse(stringifyJsonValue(mapValue('-0', PgType.float8))), -0));
  });

  it('numbers that are not JSON numbers fall back to the text', () => {
    check([
      ['007', PgType.int4, '"007"'],
      ['+1', PgType.int4, '"+1"'],
      ['.5', PgType.float8, '".5"'],
      ['1.', PgType.float8, '"1."'],
      ['1e', PgType.float8, '"1e"'],
      ['-', PgType.int8, '"-"'],
      ['', PgType.int8, '""'],
      [' 1', PgType.int8, '" 1"'],
    ]);
  });

  it('numeric is its exact text', () => {
    check([
      ['12.50', PgType.numeric, '"12.50"'],
      ['NaN', PgType.numeric, '"NaN"'],
      ['-Infinity', PgType.numeric, '"-Infinity"'],
      [
        '123456789012345678901234567890.123456789012345678901234567890',
        PgType.numeric,
        '"123456789012345678901234567890.123456789012345678901234567890"',
      ],
      ['0.00000000000000000001', PgType.numeric, '"0.00000000000000000001"'],
    ]);
  });

  it('character types, uuid, json, jsonb are strings', () => {
    check([
      ['hello', PgType.text, '"hello"'],
      ['quote " and \\ and \u0001', PgType.varchar, '"quote \\" and \\\\ and \\u0001"'],
      ['ab   ', PgType.bpchar, '"ab   "'],
      ['pg_class', PgType.name, '"pg_class"'],
      ['a', PgType.char, '"a"'],
      ['\\310', PgType.char, '"\\\\310"'],
      ['a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', PgType.uuid, '"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"'],
      ['{"a": [1, 2]}', PgType.jsonb, '"{\\"a\\": [1, 2]}"'],
      ['[1,2 ]', PgType.json, '"[1,2 ]"'],
    ]);
  });

  it('bytea hex and escape formats → base64', () => {
    check([
      ['\\x', PgType.bytea, '""'],
      ['\\x0a0b', PgType.bytea, '"Cgs="'],
      ['\\x00ff5c22', PgType.bytea, '"AP9cIg=="'],
      ['\\xDEADBEEF', PgType.bytea, '"3q2+7w=="'],
      // escape format (bytea_output=escape)
      ['', PgType.bytea, '""'],
      [
        '\\000\\377\\\\"A ~\\177',
        PgType.bytea,
        `"${Buffer.from([0, 255, 92, 34, 65, 32, 126, 127]).toString('base64')}"`,
      ],
      ['abc', PgType.bytea, '"YWJj"'],
      // not bytea text: kept
      ['\\x0', PgType.bytea, '"\\\\x0"'],
      ['\\x0g', PgType.bytea, '"\\\\x0g"'],
      ['\\8', PgType.bytea, '"\\\\8"'],
      ['\\', PgType.bytea, '"\\\\"'],
      ['é', PgType.bytea, '"é"'],
    ]);
  });

  it('date and time pass through; infinity stays', () => {
    check([
      ['2024-01-02', PgType.date, '"2024-01-02"'],
      ['infinity', PgType.date, '"infinity"'],
      ['-infinity', PgType.date, '"-infinity"'],
      ['0044-03-15 BC', PgType.date, '"0044-03-15 BC"'],
      ['12345-01-01', PgType.date, '"12345-01-01"'],
      ['03:04:05', PgType.time, '"03:04:05"'],
      ['03:04:05.12', PgType.time, '"03:04:05.12"'],
      ['24:00:00', PgType.time, '"24:00:00"'],
    ]);
  });

  it('timestamp', () => {
    check([
      ['2024-01-02 03:04:05', PgType.timestamp, '"2024-01-02T03:04:05"'],
      ['2024-01-02 03:04:05.5', PgType.timestamp, '"2024-01-02T03:04:05.5"'],
      ['2024-01-02 03:04:05.123456', PgType.timestamp, '"2024-01-02T03:04:05.123456"'],
      ['infinity', PgType.timestamp, '"infinity"'],
      ['-infinity', PgType.timestamp, '"-infinity"'],
      ['0044-03-15 12:00:00 BC', PgType.timestamp, '"0044-03-15 12:00:00 BC"'],
      ['294276-12-31 00:00:00', PgType.timestamp, '"294276-12-31 00:00:00"'],
      ['2024-01-02 03:04:05.', PgType.timestamp, '"2024-01-02 03:04:05."'],
      ['2024-01-02 03:04', PgType.timestamp, '"2024-01-02 03:04"'],
    ]);
  });

  it('timestamptz → UTC with Z', () => {
    check([
      ['2024-01-02 03:04:05+00', PgType.timestamptz, '"2024-01-02T03:04:05Z"'],
      ['2024-01-02 03:04:05.123456+00', PgType.timestamptz, '"2024-01-02T03:04:05.123456Z"'],
      ['2024-01-02 08:34:05.123456+05:30', PgType.timestamptz, '"2024-01-02T03:04:05.123456Z"'],
      ['2024-01-01 22:00:00-05', PgType.timestamptz, '"2024-01-02T03:00:00Z"'],
      ['1900-01-02 03:04:05-03:30:52', PgType.timestamptz, '"1900-01-02T06:34:57Z"'],
      ['2024-02-29 00:30:00+01', PgType.timestamptz, '"2024-02-28T23:30:00Z"'],
      ['2024-12-31 23:30:00-01', PgType.timestamptz, '"2025-01-01T00:30:00Z"'],
      ['0001-01-01 00:30:00+00:00', PgType.timestamptz, '"0001-01-01T00:30:00Z"'],
      ['infinity', PgType.timestamptz, '"infinity"'],
      ['-infinity', PgType.timestamptz, '"-infinity"'],
      // not expressible as YYYY (AD, 4 digits): Postgres' text unchanged
      ['0044-03-15 12:00:00+00 BC', PgType.timestamptz, '"0044-03-15 12:00:00+00 BC"'],
      ['12345-01-01 00:00:00+00', PgType.timestamptz, '"12345-01-01 00:00:00+00"'],
      ['0001-01-01 00:30:00+01', PgType.timestamptz, '"0001-01-01 00:30:00+01"'],
      ['9999-12-31 23:30:00-01', PgType.timestamptz, '"9999-12-31 23:30:00-01"'],
      // malformed offsets
      ['2024-01-02 03:04:05', PgType.timestamptz, '"2024-01-02 03:04:05"'],
      ['2024-01-02 03:04:05+0', PgType.timestamptz, '"2024-01-02 03:04:05+0"'],
      ['2024-01-02 03:04:05+00:', PgType.timestamptz, '"2024-01-02 03:04:05+00:"'],
      ['2024-01-02 03:04:05+00:00:00:00', PgType.timestamptz, '"2024-01-02 03:04:05+00:00:00:00"'],
    ]);
  });

  it('anything else is its text output', () => {
    check([
      ['1 day 02:00:00', 1186, '"1 day 02:00:00"'], // interval
      ['03:04:05+02', 1266, '"03:04:05+02"'], // timetz
      ['$1.00', 790, '"$1.00"'], // money
      ['10.0.0.1/8', 869, '"10.0.0.1/8"'], // inet
      ['[1,3)', 3904, '"[1,3)"'], // int4range
      ['(1,2)', 600, '"(1,2)"'], // point
      ['(1,1),(0,0)', PgType.box, '"(1,1),(0,0)"'],
      ['1 2 3', PgType.int2vector, '"1 2 3"'],
      ['1 2', PgType.oidvector, '"1 2"'],
      ['happy', 99999, '"happy"'], // unknown OID
      ['{1,2}', 99999, '"{1,2}"'],
    ]);
  });
});

describe('arrays', () => {
  it('maps elements by the element type', () => {
    check([
      ['{t,f,NULL}', 1000, '[true,false,null]'],
      ['{1,-2,3}', 1005, '[1,-2,3]'],
      ['{1,2,3}', 1007, '[1,2,3]'],
      ['{9223372036854775807,-9223372036854775808}', 1016, '[9223372036854775807,-9223372036854775808]'],
      ['{1.5,NaN,-Infinity,-0}', 1022, '[1.5,"NaN","-Infinity",-0]'],
      ['{0.1,Infinity}', 1021, '[0.1,"Infinity"]'],
      ['{12.50,NaN}', 1231, '["12.50","NaN"]'],
      ['{a,b}', 1015, '["a","b"]'],
      ['{"a  ",b}', 1014, '["a  ","b"]'],
      ['{pg_class}', 1003, '["pg_class"]'],
      ['{a,""}', 1002, '["a",""]'],
      ['{"\\\\x0102","\\\\x"}', 1001, '["AQI=",""]'],
      ['{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}', 2951, '["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"]'],
      ['{"{\\"a\\": 1}",null}', 3807, '["{\\"a\\": 1}",null]'],
      ['{"[1, 2]"}', 199, '["[1, 2]"]'],
      ['{2024-01-02,infinity}', 1182, '["2024-01-02","infinity"]'],
      ['{"2024-01-02 03:04:05.5"}', 1115, '["2024-01-02T03:04:05.5"]'],
      ['{"2024-01-01 00:00:00+00",infinity}', 1185, '["2024-01-01T00:00:00Z","infinity"]'],
      ['{03:04:05,24:00:00}', 1183, '["03:04:05","24:00:00"]'],
      ['{1,4294967295}', 1028, '[1,4294967295]'],
      ['{"1 day","02:00:00"}', 1187, '["1 day","02:00:00"]'],
      ['{"(1,2)","(3,4)"}', 1017, '["(1,2)","(3,4)"]'],
      ['{"1 2","3"}', 1006, '["1 2","3"]'],
    ]);
  });

  it('quoting, escapes and NULL', () => {
    check([
      [
        '{"a b","c\\"d",NULL,"NULL","","x\\\\y","{","}",","," ","\t"}',
        1009,
        '["a b","c\\"d",null,"NULL","","x\\\\y","{","}",","," ","\\t"]',
      ],
      ['{null,Null,"null"}', 1009, '[null,null,"null"]'],
      ['{NULLS,\\NULL}', 1009, '["NULLS","NULL"]'],
      ['{ a , b c ,d\\  }', 1009, '["a","b c","d "]'],
      ['{"é", "\u2603" }', 1009, '["é","\u2603"]'],
    ]);
  });

  it('dimensions, bounds, empty', () => {
    check([
      ['{}', 1007, '[]'],
      ['{{1,2},{3,4}}', 1007, '[[1,2],[3,4]]'],
      ['{{{1},{2}},{{3},{NULL}}}', 1016, '[[[1],[2]],[[3],[null]]]'],
      ['[0:2]={1,2,3}', 1007, '[1,2,3]'],
      ['[1:1][-2:-1]={{1,2}}', 1007, '[[1,2]]'],
      ['{{"a,b",c},{d,"}"}}', 1009, '[["a,b","c"],["d","}"]]'],
    ]);
  });

  it('box[] uses ";" between elements', () => {
    check([
      ['{(1,1),(0,0);(2,2),(1,1)}', 1020, '["(1,1),(0,0)","(2,2),(1,1)"]'],
      ['{(1,1),(0,0)}', 1020, '["(1,1),(0,0)"]'],
    ]);
  });

  it('malformed arrays fall back to the text', () => {
    for (const text of [
      '',
      '{',
      '{1,2',
      '{1,,2}',
      '{1,}',
      '{,1}',
      '{"a}',
      '{a"b}',
      '{a}x',
      '1,2',
      '[0:2]{1}',
      '[a]={1}',
      '{a\\}',
      '{{1}',
    ]) {
      assert.equal(mapValue(text, 1009), text, JSON.stringify(text));
    }
  });

  it('parsePgArray on its own', () => {
    assert.deepEqual(parsePgArray('{a,NULL}'), ['a', null]);
    assert.deepEqual(parsePgArray('{a;b,c}', ';'), ['a', 'b,c']);
    assert.equal(parsePgArray('nope'), undefined);
  });

  it('every built-in array element is a known scalar or a text type', () => {
    assert.equal(BUILTIN_ARRAY_ELEMENTS.get(1020), PgType.box);
    assert.equal(BUILTIN_ARRAY_ELEMENTS.has(PgType.int2vector), false);
    assert.equal(BUILTIN_ARRAY_ELEMENTS.has(PgType.oidvector), false);
  });
});

describe('type registry', () => {
  const citext: TypeInfo = { oid: 16500, name: 'citext', namespace: 'public', category: 'S' };
  const citextArray: TypeInfo = {
    oid: 16505,
    name: '_citext',
    namespace: 'public',
    elementOid: 16500,
    category: 'A',
  };
  const mood: TypeInfo = { oid: 16600, name: 'mood', namespace: 'public', category: 'E' };
  const moodArray: TypeInfo = { oid: 16601, name: '_mood', namespace: 'public' }; // from a pgoutput Type message
  const bareArray: TypeInfo = { oid: 16700, name: '_thing' };
  const domainArray: TypeInfo = { oid: 16800, name: 'int8s', elementOid: PgType.int8, category: 'A' };
  const semi: TypeInfo = { oid: 16900, name: 'semi', delimiter: ';' };
  const semiArray: TypeInfo = { oid: 16901, name: '_semi', elementOid: 16900 };
  const selfArray: TypeInfo = { oid: 17000, name: 'loop', elementOid: 17000 };
  const notArray: TypeInfo = { oid: 17100, name: 'vec', elementOid: PgType.float4, category: 'U' };
  const registry = new Map(
    [citext, citextArray, mood, moodArray, bareArray, domainArray, semi, semiArray, selfArray, notArray].map(
      (info) => [info.oid, info] as const,
    ),
  );
  const json = (text: string, oid: number) => stringifyJsonValue(mapValue(text, oid, registry));

  it('citext and enums are strings', () => {
    assert.equal(json('Hello', citext.oid), '"Hello"');
    assert.equal(json('happy', mood.oid), '"happy"');
  });

  it('arrays of registered element types', () => {
    assert.equal(json('{Hello,"a b",NULL}', citextArray.oid), '["Hello","a b",null]');
    assert.equal(json('{sad,happy}', moodArray.oid), '["sad","happy"]');
    assert.equal(json('{x,"y z"}', bareArray.oid), '["x","y z"]');
    assert.equal(json('{1,9223372036854775807}', domainArray.oid), '[1,9223372036854775807]');
    assert.equal(json('{a,b;c}', semiArray.oid), '["a,b","c"]');
    assert.equal(json('{1,2}', notArray.oid), '"{1,2}"');
    assert.equal(json('{{1}}', selfArray.oid), '"{{1}}"'); // its own element: nonsense, kept as text
  });

  it('an array type named _x that holds no array literal keeps its text', () => {
    assert.equal(json('plain', bareArray.oid), '"plain"');
  });

  it('the registry does not override built-in OIDs', () => {
    const hostile = new Map([[PgType.int8, { oid: PgType.int8, name: '_weird', category: 'A' }]]);
    assert.equal(stringifyJsonValue(mapValue('5', PgType.int8, hostile)), '5');
  });
});

describe('stringifyJsonValue', () => {
  it('writes raw numbers verbatim inside structures', () => {
    const value: JsonValue = {
      id: new RawJsonNumber('-9223372036854775808'),
      list: [new RawJsonNumber('1e+100'), null, true, 'x'],
      nested: { empty: [], obj: {} },
    };
    assert.equal(
      stringifyJsonValue(value),
      '{"id":-9223372036854775808,"list":[1e+100,null,true,"x"],"nested":{"empty":[],"obj":{}}}',
    );
    assert.equal(stringifyJsonValue(value), JSON.stringify(value));
  });

  it('matches JSON.stringify corner cases', () => {
    const odd = {
      a: undefined,
      b: [undefined, NaN, Infinity],
      c: new Date(0),
      '"k"': 1,
    } as unknown as JsonValue;
    assert.equal(stringifyJsonValue(odd), JSON.stringify(odd));
    for (const text of [
      '\u2028\ud800',
      '\udc00x',
      'x'.repeat(64),
      'x'.repeat(65),
      `${'x'.repeat(100)}"\n`,
      '\u007f',
    ]) {
      assert.equal(stringifyJsonValue(text), JSON.stringify(text));
      assert.equal(stringifyJsonValue({ [text]: text }), JSON.stringify({ [text]: text }));
    }
  });

  it('isJsonNumber', () => {
    for (const ok of ['0', '-0', '1', '10', '1.5', '1e5', '1E+05', '-1.5e-07', '0.0'])
      assert.ok(isJsonNumber(ok), ok);
    for (const bad of ['', '-', '01', '+1', '.1', '1.', '1e', '1e+', 'NaN', 'Infinity', '0x1', '1 ', '1_0'])
      assert.ok(!isJsonNumber(bad), bad);
  });
});

describe('properties', () => {
  it('int8 round-trips exactly', () => {
    fc.assert(
      fc.property(fc.bigInt(-(2n ** 63n), 2n ** 63n - 1n), (n) => {
        assert.equal(stringifyJsonValue(mapValue(String(n), PgType.int8)), String(n));
      }),
      { numRuns: 2000 },
    );
  });

  it('float8 text round-trips to the same double', () => {
    fc.assert(
      fc.property(fc.double({ noNaN: true, noDefaultInfinity: true }), (d) => {
        // Postgres prints exponents with a sign and at least two digits
        const text = (Object.is(d, -0) ? '-0' : String(d)).replace(/e([+-])(\d)$/, 'e$10$2');
        const json = stringifyJsonValue(mapValue(text, PgType.float8));
        assert.equal(json, text);
        assert.ok(Object.is(JSON.parse(json), d));
      }),
      { numRuns: 2000 },
    );
  });

  const element = fc.oneof(
    fc.string({ unit: 'binary' }),
    fc.string({
      unit: fc.constantFrom('a', ' ', '"', '\\', ',', ';', '{', '}', '\t', '\n', '\v', '\f', '\r'),
    }),
    fc.constantFrom('NULL', 'null', 'Null', '', ' ', 'a b', '[0:1]=', '\\x00'),
    fc.constant(null),
  );

  /** array_out's quoting rule */
  function quote(value: string | null, delimiter: string): string {
    if (value === null) return 'NULL';
    const needs =
      value === '' ||
      value.toUpperCase() === 'NULL' ||
      /["\\{}\s]/.test(value) ||
      value.includes(delimiter) ||
      /[\v\f]/.test(value);
    return needs ? `"${value.replace(/["\\]/g, '\\$&')}"` : value;
  }

  it('one-dimensional text arrays round-trip', () => {
    fc.assert(
      fc.property(fc.array(element), fc.constantFrom(',', ';'), (values, delimiter) => {
        const literal = `{${values.map((v) => quote(v, delimiter)).join(delimiter)}}`;
        assert.deepEqual(parsePgArray(literal, delimiter), values);
      }),
      { numRuns: 1000 },
    );
  });

  it('two-dimensional arrays with bounds round-trip', () => {
    fc.assert(
      fc.property(
        fc
          .integer({ min: 1, max: 4 })
          .chain((width) =>
            fc.array(fc.array(element, { minLength: width, maxLength: width }), { minLength: 1 }),
          ),
        fc.boolean(),
        (rows, bounds) => {
          const body = `{${rows.map((row) => `{${row.map((v) => quote(v, ',')).join(',')}}`).join(',')}}`;
          const literal = bounds ? `[0:${rows.length - 1}][-1:${(rows[0]?.length ?? 0) - 2}]=${body}` : body;
          assert.deepEqual(mapValue(literal, 1009), rows);
        },
      ),
      { numRuns: 500 },
    );
  });

  /** String units that need escaping (quotes, controls, lone surrogates, U+2028) or are non-ASCII. */
  const awkwardUnit = fc.oneof(
    fc.constantFrom('"', '\\', '\n', '\u0000', '\u001f', '\u007f', '\ud800', '\udfff', '\u2028', 'é', 'x'),
    fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }),
  );

  it('stringifyJsonValue equals JSON.stringify and parses', () => {
    fc.assert(
      fc.property(fc.oneof(fc.jsonValue(), fc.jsonValue({ stringUnit: awkwardUnit })), (value) => {
        const text = stringifyJsonValue(value as JsonValue);
        assert.equal(text, JSON.stringify(value));
        assert.deepEqual(JSON.parse(text), JSON.parse(JSON.stringify(value)));
      }),
      { numRuns: 1000 },
    );
  });

  it('stringifyJsonValue with raw numbers is always valid JSON', () => {
    const raw = fc.oneof(
      fc.bigInt(-(2n ** 63n), 2n ** 63n - 1n).map((n) => new RawJsonNumber(String(n))),
      fc.double({ noNaN: true, noDefaultInfinity: true }).map((d) => new RawJsonNumber(String(d))),
    );
    const { tree } = fc.letrec<{ tree: unknown }>((tie) => ({
      tree: fc.oneof(
        { depthSize: 'small' },
        raw,
        fc.string(),
        fc.boolean(),
        fc.constant(null),
        fc.array(tie('tree')),
        fc.dictionary(fc.string(), tie('tree')),
      ),
    }));
    fc.assert(
      fc.property(tree, (value) => {
        const text = stringifyJsonValue(value as JsonValue);
        JSON.parse(text);
        assert.equal(text, JSON.stringify(value));
      }),
      { numRuns: 500 },
    );
  });

  it('timestamptz offsets convert like Date', () => {
    fc.assert(
      fc.property(
        // 0001-01-02 .. 9999-12-31 UTC: the local time stays within years 1..9999 for any offset up to 15 h
        fc.integer({ min: new Date('0001-01-02T00:00:00Z').getTime() / 1000, max: 253402214400 }),
        fc.integer({ min: -15 * 3600, max: 15 * 3600 }),
        fc.constantFrom('', '.5', '.123456'),
        (seconds, offset, fraction) => {
          const utc = new Date(seconds * 1000);
          const local = new Date((seconds + offset) * 1000).toISOString().slice(0, 19).replace('T', ' ');
          const abs = Math.abs(offset);
          const hh = String(Math.floor(abs / 3600)).padStart(2, '0');
          const mm = String(Math.floor((abs % 3600) / 60)).padStart(2, '0');
          const ss = String(abs % 60).padStart(2, '0');
          const zone = `${offset < 0 ? '-' : '+'}${hh}${mm !== '00' || ss !== '00' ? `:${mm}` : ''}${ss !== '00' ? `:${ss}` : ''}`;
          const expected = `${utc.toISOString().slice(0, 19)}${fraction}Z`;
          assert.equal(mapValue(`${local}${fraction}${zone}`, PgType.timestamptz), expected);
        },
      ),
      { numRuns: 2000 },
    );
  });
});

describe('JSON text mappers (the JSON Lines fast path)', () => {
  const oids = [
    PgType.bool,
    PgType.int2,
    PgType.int4,
    PgType.int8,
    PgType.float4,
    PgType.float8,
    PgType.numeric,
    PgType.text,
    PgType.varchar,
    PgType.uuid,
    PgType.jsonb,
    PgType.bytea,
    PgType.timestamp,
    PgType.timestamptz,
    PgType.date,
    1007, // int4[]
    1009, // text[]
    1185, // timestamptz[]
  ];
  const texts = fc.oneof(
    fc.string(),
    fc.constantFrom('t', 'f', 'NaN', 'Infinity', '-0', '1e5', '12.50', '{a,"b c",NULL}', '{{1,2},{3,4}}'),
    fc.constantFrom('2024-01-02 03:04:05.123456+00', '2024-01-02 03:04:05+05:30', 'infinity', '\\x0a0b'),
    fc.integer().map(String),
    fc.double().map(String),
  );

  it('give exactly the stringified value mapping, for every type and any text', () => {
    fc.assert(
      fc.property(fc.constantFrom(...oids), texts, (oid, text) => {
        assert.equal(createJsonTextMapper(oid)(text), stringifyJsonValue(createValueMapper(oid)(text)));
      }),
      { numRuns: 5000 },
    );
  });
});
