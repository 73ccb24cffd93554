/**
 * The value mapper against a real server's text output: every value is produced by the type's own output
 * function (the one pgoutput uses) under the session settings slotlake pins on the replication connection.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import pg from 'pg';
import { startLocalPostgres, type LocalPostgres } from '../../src/devstack/postgres.js';
import {
  BUILTIN_ARRAY_ELEMENTS,
  createValueMapper,
  mapValue,
  PgType,
  stringifyJsonValue,
  type TypeInfo,
} from '../../src/decoding/values.js';

const SESSION = [
  'SET DateStyle = ISO',
  "SET TimeZone = 'UTC'",
  'SET IntervalStyle = postgres',
  'SET extra_float_digits = 3',
  'SET bytea_output = hex',
];

let server: LocalPostgres | undefined;
let client: pg.Client;

/** Every column comes back as the server's text output, unparsed. */
const rawText = { getTypeParser: () => (text: string) => text } as unknown as pg.CustomTypesConfig;

before(async () => {
  server = await startLocalPostgres();
  client = new pg.Client({ connectionString: server.url(), types: rawText });
  await client.connect();
  for (const statement of SESSION) await client.query(statement);
});

after(async () => {
  await client?.end().catch(() => undefined);
  await server?.stop();
});

/** The server's text output of `expression` and the result column's type OID. */
async function serverText(
  expression: string,
  params: unknown[] = [],
): Promise<{ text: string; oid: number }> {
  const result = await client.query({ text: `SELECT ${expression} AS v`, values: params });
  const text: unknown = result.rows[0]?.v;
  const field = result.fields[0];
  assert.ok(typeof text === 'string' && field !== undefined, `${expression} gave no text`);
  return { text, oid: field.dataTypeID };
}

/** [SQL expression, expected type OID, expected JSON] */
type Case = readonly [expression: string, oid: number, json: string];

async function check(cases: readonly Case[]): Promise<void> {
  for (const [expression, oid, json] of cases) {
    const { text, oid: actualOid } = await serverText(expression);
    assert.equal(actualOid, oid, `${expression}: type OID`);
    assert.equal(
      stringifyJsonValue(createValueMapper(oid)(text)),
      json,
      `${expression} (server text ${JSON.stringify(text)})`,
    );
  }
}

const bytes256 = Buffer.from(Array.from({ length: 256 }, (_, i) => i));

const BYTEA: Case[] = [
  [String.raw`'\x'::bytea`, PgType.bytea, '""'],
  [String.raw`'\x0a0b'::bytea`, PgType.bytea, '"Cgs="'],
  [String.raw`'\x00ff5c22'::bytea`, PgType.bytea, '"AP9cIg=="'],
  [`'\\x${bytes256.toString('hex')}'::bytea`, PgType.bytea, `"${bytes256.toString('base64')}"`],
  [`'{"\\\\x01",NULL,"\\\\x5c22"}'::bytea[]`, 1001, '["AQ==",null,"XCI="]'],
];

const TIMESTAMPTZ: Case[] = [
  [`'2024-01-02 03:04:05+00'::timestamptz`, PgType.timestamptz, '"2024-01-02T03:04:05Z"'],
  [`'2024-01-02 03:04:05.123456+00'::timestamptz`, PgType.timestamptz, '"2024-01-02T03:04:05.123456Z"'],
  [`'2024-01-02 03:04:05.5+02'::timestamptz`, PgType.timestamptz, '"2024-01-02T01:04:05.5Z"'],
  [`'2024-01-02 03:04:05.120-05:30'::timestamptz`, PgType.timestamptz, '"2024-01-02T08:34:05.12Z"'],
  [`'1900-01-01 00:00:00+00'::timestamptz`, PgType.timestamptz, '"1900-01-01T00:00:00Z"'],
  [`'1850-06-30 23:59:59.999999+00'::timestamptz`, PgType.timestamptz, '"1850-06-30T23:59:59.999999Z"'],
  [`'0100-03-01 12:00:00+00'::timestamptz`, PgType.timestamptz, '"0100-03-01T12:00:00Z"'],
  [`'9999-12-30 00:00:00+00'::timestamptz`, PgType.timestamptz, '"9999-12-30T00:00:00Z"'],
  [`'infinity'::timestamptz`, PgType.timestamptz, '"infinity"'],
  [`'-infinity'::timestamptz`, PgType.timestamptz, '"-infinity"'],
  [
    `ARRAY['2024-01-01 00:00:00+00', 'infinity', NULL]::timestamptz[]`,
    1185,
    '["2024-01-01T00:00:00Z","infinity",null]',
  ],
];

describe('values against real server output', () => {
  it('bool, integers, oid', async () => {
    await check([
      ['true', PgType.bool, 'true'],
      ['false', PgType.bool, 'false'],
      ['(-32768)::int2', PgType.int2, '-32768'],
      ['32767::int2', PgType.int2, '32767'],
      ['(-2147483648)::int4', PgType.int4, '-2147483648'],
      ['2147483647::int4', PgType.int4, '2147483647'],
      ['4294967295::oid', PgType.oid, '4294967295'],
      ['(-9223372036854775808)::int8', PgType.int8, '-9223372036854775808'],
      ['9223372036854775807::int8', PgType.int8, '9223372036854775807'],
      ['9007199254740993::int8', PgType.int8, '9007199254740993'],
    ]);
  });

  it('float4, float8', async () => {
    await check([
      ['0.1::float8', PgType.float8, '0.1'],
      ['1e100::float8', PgType.float8, '1e+100'],
      [`'-0'::float8`, PgType.float8, '-0'],
      ['1.5e-7::float8', PgType.float8, '1.5e-07'],
      ['1.2345678901234567e-300::float8', PgType.float8, '1.2345678901234568e-300'],
      [`'4.9e-324'::float8`, PgType.float8, '5e-324'],
      [`'1.7976931348623157e308'::float8`, PgType.float8, '1.7976931348623157e+308'],
      ['123456789012345678::float8', PgType.float8, '1.2345678901234568e+17'],
      ['1e15::float8', PgType.float8, '1e+15'],
      ['123456789012345::float8', PgType.float8, '123456789012345'],
      [`'NaN'::float8`, PgType.float8, '"NaN"'],
      [`'Infinity'::float8`, PgType.float8, '"Infinity"'],
      [`'-Infinity'::float8`, PgType.float8, '"-Infinity"'],
      ['0.1::float4', PgType.float4, '0.1'],
      ['3.4e38::float4', PgType.float4, '3.4e+38'],
      [`'1e-45'::float4`, PgType.float4, '1e-45'],
      [`'-inf'::float4`, PgType.float4, '"-Infinity"'],
    ]);
  });

  it('numeric', async () => {
    const huge = '123456789012345678901234567890.123456789012345678901234567890';
    await check([
      ['12.50::numeric', PgType.numeric, '"12.50"'],
      [`'NaN'::numeric`, PgType.numeric, '"NaN"'],
      [`'-Infinity'::numeric`, PgType.numeric, '"-Infinity"'],
      [`'${huge}'::numeric`, PgType.numeric, `"${huge}"`],
      ['1e-20::numeric', PgType.numeric, '"0.00000000000000000001"'],
      ['12.5::numeric(10,3)', PgType.numeric, '"12.500"'],
    ]);
  });

  it('character types, uuid, json, jsonb', async () => {
    await check([
      [`'hello'::text`, PgType.text, '"hello"'],
      [`E'tab\\t "quote" back\\\\slash é ☃'::text`, PgType.text, '"tab\\t \\"quote\\" back\\\\slash é ☃"'],
      [`'ab'::varchar(10)`, PgType.varchar, '"ab"'],
      [`'ab'::char(5)`, PgType.bpchar, '"ab   "'],
      [`'pg_class'::name`, PgType.name, '"pg_class"'],
      [`'a'::"char"`, PgType.char, '"a"'],
      [`'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid`, PgType.uuid, '"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"'],
      [`'{"b":1,  "a":[1,2]}'::json`, PgType.json, '"{\\"b\\":1,  \\"a\\":[1,2]}"'],
      [`'{"b":1,  "a":[1,2]}'::jsonb`, PgType.jsonb, '"{\\"a\\": [1, 2], \\"b\\": 1}"'],
    ]);
  });

  it('bytea in hex and escape output', async () => {
    await check(BYTEA);
    await client.query('SET bytea_output = escape');
    try {
      assert.equal((await serverText(String.raw`'\x5c00'::bytea`)).text, String.raw`\\\000`);
      await check(BYTEA);
    } finally {
      await client.query('SET bytea_output = hex');
    }
  });

  it('date, time, timestamp', async () => {
    await check([
      [`'2024-01-02'::date`, PgType.date, '"2024-01-02"'],
      [`'infinity'::date`, PgType.date, '"infinity"'],
      [`'-infinity'::date`, PgType.date, '"-infinity"'],
      [`'0044-03-15 BC'::date`, PgType.date, '"0044-03-15 BC"'],
      [`'12345-01-01'::date`, PgType.date, '"12345-01-01"'],
      [`'03:04:05'::time`, PgType.time, '"03:04:05"'],
      [`'03:04:05.120'::time`, PgType.time, '"03:04:05.12"'],
      [`'24:00:00'::time`, PgType.time, '"24:00:00"'],
      [`'2024-01-02 03:04:05'::timestamp`, PgType.timestamp, '"2024-01-02T03:04:05"'],
      [`'2024-01-02 03:04:05.50'::timestamp`, PgType.timestamp, '"2024-01-02T03:04:05.5"'],
      [`'2024-01-02 03:04:05.123456'::timestamp`, PgType.timestamp, '"2024-01-02T03:04:05.123456"'],
      [`'infinity'::timestamp`, PgType.timestamp, '"infinity"'],
      [`'0044-03-15 12:00 BC'::timestamp`, PgType.timestamp, '"0044-03-15 12:00:00 BC"'],
      [`'294276-12-31'::timestamp`, PgType.timestamp, '"294276-12-31 00:00:00"'],
    ]);
  });

  it('timestamptz in UTC', async () => {
    await check([
      ...TIMESTAMPTZ,
      [`'0044-03-15 12:00:00+00 BC'::timestamptz`, PgType.timestamptz, '"0044-03-15 12:00:00+00 BC"'],
      [`'12345-01-01 00:00:00+00'::timestamptz`, PgType.timestamptz, '"12345-01-01 00:00:00+00"'],
    ]);
  });

  it('timestamptz under other session time zones converts to the same UTC', async () => {
    const zones = [
      'Asia/Kolkata',
      'America/St_Johns',
      'Pacific/Chatham',
      'Asia/Kathmandu',
      'America/Sao_Paulo',
    ];
    try {
      for (const zone of zones) {
        await client.query(`SET TimeZone = '${zone}'`);
        await check(TIMESTAMPTZ);
      }
      // a historic local-mean-time offset with seconds
      await client.query(`SET TimeZone = 'America/St_Johns'`);
      const { text } = await serverText(`'1900-01-02 06:34:57+00'::timestamptz`);
      assert.equal(text, '1900-01-02 03:04:05-03:30:52');
      assert.equal(mapValue(text, PgType.timestamptz), '1900-01-02T06:34:57Z');
    } finally {
      await client.query(`SET TimeZone = 'UTC'`);
    }
  });

  it('arrays of every listed type', async () => {
    await check([
      ['ARRAY[true, false, NULL]', 1000, '[true,false,null]'],
      ['ARRAY[1, -2]::int2[]', 1005, '[1,-2]'],
      ['ARRAY[1, 2147483647]::int4[]', 1007, '[1,2147483647]'],
      [
        'ARRAY[9223372036854775807, -9223372036854775808]::int8[]',
        1016,
        '[9223372036854775807,-9223372036854775808]',
      ],
      [`ARRAY[0.1, 'NaN', '-Infinity', 3.4e38]::float4[]`, 1021, '[0.1,"NaN","-Infinity",3.4e+38]'],
      [`ARRAY[1.5e-7, 'Infinity', '-0', NULL]::float8[]`, 1022, '[1.5e-07,"Infinity",-0,null]'],
      [`ARRAY[12.50, 'NaN']::numeric[]`, 1231, '["12.50","NaN"]'],
      [
        `ARRAY['a b', 'c"d', NULL, 'NULL', '', E'x\\\\y', '{', '}', ',', ' ', E'\\t', 'plain']::text[]`,
        1009,
        '["a b","c\\"d",null,"NULL","","x\\\\y","{","}",","," ","\\t","plain"]',
      ],
      [`ARRAY['a', 'b c']::varchar[]`, 1015, '["a","b c"]'],
      [`ARRAY['a', 'bc']::char(3)[]`, 1014, '["a  ","bc "]'],
      [`ARRAY['pg_class', 'x y']::name[]`, 1003, '["pg_class","x y"]'],
      [`ARRAY['a', ' ']::"char"[]`, 1002, '["a"," "]'],
      [
        `ARRAY['a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11']::uuid[]`,
        2951,
        '["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"]',
      ],
      [`ARRAY['{"a": "b,\\\\"}', '[1]']::json[]`, 199, JSON.stringify(['{"a": "b,\\\\"}', '[1]'])],
      [`ARRAY['{"a":1}', 'null']::jsonb[]`, 3807, '["{\\"a\\": 1}","null"]'],
      [
        `ARRAY['2024-01-02', 'infinity', '0044-03-15 BC']::date[]`,
        1182,
        '["2024-01-02","infinity","0044-03-15 BC"]',
      ],
      [
        `ARRAY['2024-01-02 03:04:05.5', '-infinity']::timestamp[]`,
        1115,
        '["2024-01-02T03:04:05.5","-infinity"]',
      ],
      [`ARRAY['03:04:05', '24:00:00']::time[]`, 1183, '["03:04:05","24:00:00"]'],
      [`ARRAY[1, 4294967295]::oid[]`, 1028, '[1,4294967295]'],
      [`ARRAY['1 day', '-02:00:00']::interval[]`, 1187, '["1 day","-02:00:00"]'],
      [`ARRAY['10.0.0.1', '::1/128']::inet[]`, 1041, '["10.0.0.1","::1"]'],
      [`ARRAY[point(1, 2), point(3.5, -4)]`, 1017, '["(1,2)","(3.5,-4)"]'],
      [`ARRAY['[1,3)'::int4range, 'empty']`, 3905, '["[1,3)","empty"]'],
      [`ARRAY['1 2'::int2vector]`, 1006, '["1 2"]'],
    ]);
  });

  it('multi-dimensional arrays, explicit bounds, box[]', async () => {
    await check([
      [`'{}'::int4[]`, 1007, '[]'],
      [`'{{1,2},{3,4}}'::int8[]`, 1016, '[[1,2],[3,4]]'],
      [`'{{{a,"b c"}},{{NULL,"}"}}}'::text[]`, 1009, '[[["a","b c"]],[[null,"}"]]]'],
      [`'[0:2]={1,2,3}'::int4[]`, 1007, '[1,2,3]'],
      [`'[1:1][-2:-1]={{1,2}}'::int4[]`, 1007, '[[1,2]]'],
      [`ARRAY[box '((1,1),(0,0))', box '((2,2),(1,1))']`, 1020, '["(1,1),(0,0)","(2,2),(1,1)"]'],
    ]);
  });

  it('anything else is its text output', async () => {
    await check([
      [`'1 day 02:00:00'::interval`, 1186, '"1 day 02:00:00"'],
      [`'03:04:05+02'::timetz`, 1266, '"03:04:05+02"'],
      ['12.5::money', 790, '"$12.50"'],
      [`'10.0.0.0/8'::cidr`, 650, '"10.0.0.0/8"'],
      [`'08:00:2b:01:02:03'::macaddr`, 829, '"08:00:2b:01:02:03"'],
      ['point(1, 2)', 600, '"(1,2)"'],
      [`box '((1,1),(0,0))'`, PgType.box, '"(1,1),(0,0)"'],
      [`'[1,3)'::int4range`, 3904, '"[1,3)"'],
      [`B'101'`, 1560, '"101"'],
      [`'<a/>'::xml`, 142, '"<a/>"'],
      [`'1 2'::int2vector`, PgType.int2vector, '"1 2"'],
      [`'0/16B3748'::pg_lsn`, 3220, '"0/16B3748"'],
      [`'pg_class'::regclass`, 2205, '"pg_class"'],
      ['ROW(1, 2)', 2249, '"(1,2)"'],
    ]);
  });

  it('the built-in array table matches pg_type', async () => {
    const result = await client.query<{ oid: string; typelem: string }>(
      `SELECT oid, typelem FROM pg_type WHERE typcategory = 'A' AND oid < 10000
         AND oid NOT IN (${PgType.int2vector}, ${PgType.oidvector}, 2287 /* _record */)`,
    );
    const catalog = new Map(result.rows.map((row) => [Number(row.oid), Number(row.typelem)]));
    assert.deepEqual(new Map([...catalog].sort((a, b) => a[0] - b[0])), BUILTIN_ARRAY_ELEMENTS);
    const delimiters = await client.query<{ oid: string }>(`SELECT oid FROM pg_type WHERE typdelim <> ','`);
    assert.deepEqual(
      delimiters.rows.map((row) => Number(row.oid)),
      [PgType.box, 1020], // an array type carries its element's delimiter
    );
  });

  describe('non-built-in types via the registry', () => {
    let registry: Map<number, TypeInfo>;
    const oidOf = async (name: string) => Number((await serverText(`'${name}'::regtype::oid`)).text);

    before(async () => {
      await client.query('CREATE EXTENSION IF NOT EXISTS citext');
      await client.query(`CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy', 'a,b', 'NULL', 'x y')`);
      await client.query('CREATE DOMAIN big AS int8');
      await client.query('CREATE TYPE pair AS (n int8, s text)');
      const result = await client.query<{
        oid: string;
        typname: string;
        nspname: string;
        typelem: string;
        typcategory: string;
        typdelim: string;
      }>(
        `SELECT t.oid, t.typname, n.nspname, t.typelem, t.typcategory, t.typdelim
           FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE t.oid >= 16384`,
      );
      registry = new Map(
        result.rows.map((row) => [
          Number(row.oid),
          {
            oid: Number(row.oid),
            name: row.typname,
            namespace: row.nspname,
            elementOid: Number(row.typelem),
            category: row.typcategory,
            delimiter: row.typdelim,
          },
        ]),
      );
    });

    async function json(
      expression: string,
      types: ReadonlyMap<number, TypeInfo> = registry,
    ): Promise<string> {
      const { text, oid } = await serverText(expression);
      return stringifyJsonValue(createValueMapper(oid, types)(text));
    }

    it('citext, enum, domain, composite are strings', async () => {
      assert.equal(await json(`'Hello'::citext`), '"Hello"');
      assert.equal(await json(`'x y'::mood`), '"x y"');
      // RowDescription reports a domain's base type; pgoutput sends the column's own (domain) type OID
      const { text } = await serverText('9223372036854775807::big');
      assert.equal(stringifyJsonValue(mapValue(text, await oidOf('big'), registry)), '"9223372036854775807"');
      assert.equal(await json(`ROW(1, 'a "b"')::pair`), '"(1,\\"a \\"\\"b\\"\\"\\")"');
    });

    it('arrays of them are arrays of strings', async () => {
      assert.equal(await json(`ARRAY['Hello', 'a b', NULL]::citext[]`), '["Hello","a b",null]');
      assert.equal(
        await json(`ARRAY['sad', 'a,b', 'NULL', 'x y', NULL]::mood[]`),
        '["sad","a,b","NULL","x y",null]',
      );
      assert.equal(await json(`'{{sad,ok},{happy,NULL}}'::mood[]`), '[["sad","ok"],["happy",null]]');
      assert.equal(await json('ARRAY[1, 2]::big[]'), '["1","2"]');
      assert.equal(await json(`ARRAY[ROW(1, 'a'), ROW(2, NULL)]::pair[]`), '["(1,a)","(2,)"]');
    });

    it('an array type known only by name, as a pgoutput Type message describes it', async () => {
      const moodArray = await oidOf('mood[]');
      const citextArray = await oidOf('citext[]');
      const byName = new Map<number, TypeInfo>([
        [moodArray, { oid: moodArray, name: '_mood', namespace: 'public' }],
        [citextArray, { oid: citextArray, name: '_citext', namespace: 'public' }],
      ]);
      assert.equal(await json(`ARRAY['happy', 'a,b', NULL]::mood[]`, byName), '["happy","a,b",null]');
      assert.equal(await json(`ARRAY['A b']::citext[]`, byName), '["A b"]');
      // without any registry the text stays whole
      assert.equal(await json(`ARRAY['happy']::mood[]`, new Map()), '"{happy}"');
    });
  });

  describe('random values through the server', () => {
    it('int8', async () => {
      await fc.assert(
        fc.asyncProperty(fc.bigInt(-(2n ** 63n), 2n ** 63n - 1n), async (n) => {
          const { text } = await serverText('$1::int8', [String(n)]);
          assert.equal(stringifyJsonValue(mapValue(text, PgType.int8)), String(n));
        }),
        { numRuns: 300 },
      );
    });

    it('float8 and float4 keep their value', async () => {
      await fc.assert(
        fc.asyncProperty(fc.double({ noNaN: true, noDefaultInfinity: true }), async (d) => {
          const { text } = await serverText('$1::float8', [Object.is(d, -0) ? '-0' : String(d)]);
          assert.ok(Object.is(JSON.parse(stringifyJsonValue(mapValue(text, PgType.float8))), d), text);
        }),
        { numRuns: 300 },
      );
      await fc.assert(
        fc.asyncProperty(fc.float({ noNaN: true, noDefaultInfinity: true }), async (f) => {
          const { text } = await serverText('$1::float4', [Object.is(f, -0) ? '-0' : String(f)]);
          const parsed: unknown = JSON.parse(stringifyJsonValue(mapValue(text, PgType.float4)));
          assert.ok(typeof parsed === 'number' && Object.is(Math.fround(parsed), f), text);
        }),
        { numRuns: 300 },
      );
    });

    it('text[] with arbitrary strings', async () => {
      const element = fc.oneof(
        fc.string({ unit: 'binary' }).map((s) => s.replaceAll('\0', '')),
        fc.string({
          unit: fc.constantFrom('a', ' ', '"', '\\', ',', '{', '}', '\t', '\n', '\v', '\f', '\r'),
        }),
        fc.constantFrom('NULL', 'null', '', ' '),
        fc.constant(null),
      );
      await fc.assert(
        fc.asyncProperty(fc.array(element), async (values) => {
          const { text, oid } = await serverText('$1::text[]', [values]);
          assert.deepEqual(mapValue(text, oid), values, text);
        }),
        { numRuns: 300 },
      );
    });

    it('timestamptz instants in any session time zone', async () => {
      const zones = [
        'UTC',
        'Asia/Kolkata',
        'America/St_Johns',
        'Pacific/Chatham',
        'Europe/Amsterdam',
        'Asia/Tokyo',
      ];
      try {
        await fc.assert(
          fc.asyncProperty(
            // 0001-01-03 .. 9999-12-30 UTC, so the local time stays AD and 4-digit
            fc.integer({ min: -62135424000, max: 253402128000 }),
            fc.integer({ min: 0, max: 999_999 }),
            fc.constantFrom(...zones),
            async (seconds, micros, zone) => {
              await client.query(`SET TimeZone = '${zone}'`);
              const iso = new Date(seconds * 1000).toISOString().slice(0, 19);
              const fraction = micros === 0 ? '' : `.${String(micros).padStart(6, '0')}`.replace(/0+$/, '');
              const { text } = await serverText('$1::timestamptz', [
                `${iso}.${String(micros).padStart(6, '0')}Z`,
              ]);
              assert.equal(mapValue(text, PgType.timestamptz), `${iso}${fraction}Z`, `${zone}: ${text}`);
            },
          ),
          { numRuns: 300 },
        );
      } finally {
        await client.query(`SET TimeZone = 'UTC'`);
      }
    });
  });
});
