import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PgType, type TypeInfo } from '../../src/decoding/values.js';
import { decimalByteLength, numericTypmod, planColumns, scalarType } from '../../src/sink/parquet/schema.js';

const numeric = (precision: number, scale: number) => ((precision << 16) | (scale & 0x7ff)) + 4;

describe('numeric typmod', () => {
  it('precision and (signed, 11-bit) scale', () => {
    assert.deepEqual(numericTypmod(numeric(12, 2)), { precision: 12, scale: 2 });
    assert.deepEqual(numericTypmod(numeric(38, 0)), { precision: 38, scale: 0 });
    assert.deepEqual(numericTypmod(numeric(3, -2)), { precision: 3, scale: -2 });
    assert.deepEqual(numericTypmod(numeric(2, 5)), { precision: 2, scale: 5 });
    assert.equal(numericTypmod(-1), undefined);
  });

  it('DECIMAL physical type by precision; wider or unconstrained numeric is text', () => {
    const physical = (typmod: number) => scalarType(PgType.numeric, typmod).description;
    assert.deepEqual(physical(numeric(9, 2)), {
      physicalType: 'INT32',
      logicalType: 'DECIMAL(9,2)',
      convertedType: 'DECIMAL',
    });
    assert.equal(physical(numeric(10, 2)).physicalType, 'INT64');
    assert.equal(physical(numeric(18, 0)).physicalType, 'INT64');
    assert.deepEqual(physical(numeric(19, 4)), {
      physicalType: 'FIXED_LEN_BYTE_ARRAY',
      typeLength: 9,
      logicalType: 'DECIMAL(19,4)',
      convertedType: 'DECIMAL',
    });
    assert.equal(physical(numeric(38, 10)).typeLength, 16);
    assert.equal(physical(numeric(3, -2)).logicalType, 'DECIMAL(5,0)');
    assert.equal(physical(numeric(2, 5)).logicalType, 'DECIMAL(5,5)');
    assert.equal(physical(numeric(39, 0)).logicalType, 'STRING');
    assert.equal(physical(numeric(37, -2)).logicalType, 'STRING');
    assert.equal(physical(-1).logicalType, 'STRING');
  });

  it('FIXED_LEN_BYTE_ARRAY length is the smallest that holds every digit count', () => {
    // parquet-format: n bytes hold floor(log10(2^(8n-1) - 1)) digits
    for (let precision = 1; precision <= 38; precision++) {
      const bytes = decimalByteLength(precision);
      assert.ok(10n ** BigInt(precision) - 1n <= 2n ** BigInt(8 * bytes - 1) - 1n);
      assert.ok(bytes === 1 || 10n ** BigInt(precision) - 1n > 2n ** BigInt(8 * (bytes - 1) - 1) - 1n);
    }
  });
});

describe('column plans', () => {
  it('scalars by OID, everything else text', () => {
    const logical = (oid: number) => {
      const d = scalarType(oid, -1).description;
      return `${d.physicalType}/${d.logicalType ?? '-'}/${d.convertedType ?? '-'}`;
    };
    assert.equal(logical(PgType.bool), 'BOOLEAN/-/-');
    assert.equal(logical(PgType.int2), 'INT32/-/INT_16');
    assert.equal(logical(PgType.int4), 'INT32/-/INT_32');
    assert.equal(logical(PgType.int8), 'INT64/-/-');
    assert.equal(logical(PgType.oid), 'INT64/-/-');
    assert.equal(logical(PgType.float4), 'FLOAT/-/-');
    assert.equal(logical(PgType.float8), 'DOUBLE/-/-');
    assert.equal(logical(PgType.jsonb), 'BYTE_ARRAY/JSON/JSON');
    assert.equal(logical(PgType.bytea), 'BYTE_ARRAY/-/-');
    assert.equal(logical(PgType.date), 'INT32/DATE/DATE');
    assert.equal(logical(PgType.time), 'INT64/TIME(MICROS,false)/-');
    assert.equal(logical(PgType.timestamp), 'INT64/TIMESTAMP(MICROS,false)/-');
    assert.equal(logical(PgType.timestamptz), 'INT64/TIMESTAMP(MICROS,true)/TIMESTAMP_MICROS');
    for (const oid of [PgType.text, PgType.varchar, PgType.uuid, PgType.int2vector, 1186, 3904, 869, 99999])
      assert.equal(logical(oid), 'BYTE_ARRAY/STRING/UTF8', `OID ${oid}`);
  });

  it('arrays: built-in by OID, others from TypeInfo or their _name; box[] splits on ;', () => {
    const mood: TypeInfo = { oid: 70001, name: 'mood', category: 'E' };
    const plans = planColumns(
      [
        { name: 'ints', typeOid: 1007, typeModifier: -1 },
        { name: 'money', typeOid: 1231, typeModifier: numeric(10, 2) },
        { name: 'boxes', typeOid: 1020, typeModifier: -1 },
        {
          name: 'moods',
          typeOid: 70002,
          typeModifier: -1,
          type: { oid: 70002, name: '_mood', elementOid: 70001, category: 'A' },
        },
        { name: 'named', typeOid: 70003, typeModifier: -1, type: { oid: 70003, name: '_other' } },
        { name: 'mood', typeOid: 70001, typeModifier: -1, type: mood },
        { name: 'vector', typeOid: PgType.int2vector, typeModifier: -1 },
        { name: 'unknown', typeOid: 70004, typeModifier: -1 },
      ],
      new Map([[70001, mood]]),
    );
    const shape = plans.map((p) => [
      p.name,
      p.list?.delimiter ?? null,
      p.scalar.description.logicalType ?? p.scalar.description.physicalType,
    ]);
    assert.deepEqual(shape, [
      ['ints', ',', 'INT32'],
      ['money', ',', 'DECIMAL(10,2)'],
      ['boxes', ';', 'STRING'],
      ['moods', ',', 'STRING'],
      ['named', ',', 'STRING'],
      ['mood', null, 'STRING'],
      ['vector', null, 'STRING'],
      ['unknown', null, 'STRING'],
    ]);
  });

  it('a domain over an array is a LIST of its base array’s element; a domain over a scalar is STRING', () => {
    const mood: TypeInfo = { oid: 70001, name: 'mood', category: 'E' };
    const moods: TypeInfo = { oid: 70002, name: '_mood', elementOid: 70001, category: 'A' };
    // pg_type: a domain has its base type's category and no element of its own
    const ints: TypeInfo = { oid: 70010, name: 'intlist', category: 'A', baseOid: 1007 };
    const moodList: TypeInfo = { oid: 70011, name: 'moodlist', category: 'A', baseOid: 70002 };
    const nested: TypeInfo = { oid: 70012, name: 'nested', category: 'A', baseOid: 70010 };
    const posint: TypeInfo = { oid: 70013, name: 'posint', category: 'N', baseOid: PgType.int4 };
    const registry = new Map([mood, moods, ints, moodList, nested, posint].map((t) => [t.oid, t]));
    const plans = planColumns(
      [ints, moodList, nested, posint].map((type) => ({
        name: type.name,
        typeOid: type.oid,
        typeModifier: -1,
      })),
      registry,
    );
    assert.deepEqual(
      plans.map((p) => [
        p.name,
        p.list !== undefined,
        p.scalar.description.logicalType ?? p.scalar.description.physicalType,
      ]),
      [
        ['intlist', true, 'INT32'],
        ['moodlist', true, 'STRING'],
        ['nested', true, 'INT32'],
        ['posint', false, 'STRING'],
      ],
    );
  });

  it('field ids: position + 1, elements 1e9 + id, caller ids kept, conflicts refused', () => {
    const plans = planColumns([
      { name: 'a', typeOid: PgType.int4, typeModifier: -1 },
      { name: 'b', typeOid: 1007, typeModifier: -1 },
      { name: 'c', typeOid: 1007, typeModifier: -1, fieldId: 40, elementFieldId: 41 },
    ]);
    assert.deepEqual(
      plans.map((p) => [p.fieldId, p.list?.elementFieldId ?? null]),
      [
        [1, null],
        [2, 1_000_000_002],
        [40, 41],
      ],
    );
    assert.throws(
      () => planColumns([{ name: 'a', typeOid: 25, typeModifier: -1, fieldId: 0 }]),
      /1\.\.2147483647/,
    );
    assert.throws(
      () => planColumns([{ name: 'a', typeOid: 25, typeModifier: -1, fieldId: 2_000_000_001 }]),
      /_op/,
    );
    assert.throws(
      () =>
        planColumns([
          { name: 'a', typeOid: 25, typeModifier: -1 },
          { name: 'a', typeOid: 25, typeModifier: -1, fieldId: 9 },
        ]),
      /used twice/,
    );
  });
});
