/** The table schema the manifest records per object: Relation facts, completed by the catalog only where it matches. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Relation } from '../../src/decoding/messages.js';
import { PgType } from '../../src/decoding/values.js';
import { describeTable, UNKNOWN_COLUMN_FIELD_ID_BASE } from '../../src/pipeline/table-schema.js';
import type { CatalogColumn } from '../../src/replication/catalog.js';

const relation: Relation = {
  relationId: 16384,
  namespace: 'public',
  name: 'items',
  replicaIdentity: 'f',
  columns: [
    { name: 'id', typeOid: PgType.int8, typeModifier: -1, isKey: true },
    { name: 'qty', typeOid: PgType.int4, typeModifier: -1, isKey: true },
    { name: 'note', typeOid: PgType.text, typeModifier: -1, isKey: true },
  ],
};

const column = (name: string, attnum: number, typeOid: number, typeName: string, primaryKey = false) =>
  ({ name, attnum, typeOid, typeName, notNull: primaryKey, primaryKey }) satisfies CatalogColumn;

describe('describeTable', () => {
  it('takes attnum, nullability, type name and primary key from the catalog', () => {
    const schema = describeTable(
      relation,
      [
        column('id', 1, PgType.int8, 'bigint', true),
        column('qty', 2, PgType.int4, 'integer'),
        column('note', 4, PgType.text, 'text'),
      ],
      new Map(),
    );
    assert.equal(schema.replicaIdentity, 'f');
    assert.deepEqual(
      schema.columns.map((c) => [c.name, c.fieldId, c.typeName, c.nullable, c.key, c.primaryKey]),
      [
        ['id', 1, 'bigint', false, true, true],
        ['qty', 2, 'integer', true, true, false],
        ['note', 4, 'text', true, true, false],
      ],
    );
  });

  it('ignores a catalog column of the same name but another type (the column changed since)', () => {
    // the run reads the catalog after `ALTER TABLE items ALTER qty TYPE text`: the Relation still says int4
    const schema = describeTable(
      relation,
      [column('id', 1, PgType.int8, 'bigint', true), column('qty', 2, PgType.text, 'text')],
      new Map(),
    );
    const qty = schema.columns[1]!;
    assert.equal(qty.fieldId, UNKNOWN_COLUMN_FIELD_ID_BASE + 1);
    assert.equal(qty.typeOid, PgType.int4);
    assert.equal(qty.nullable, null);
    assert.equal(qty.primaryKey, null);
    // the column the catalog no longer has
    assert.equal(schema.columns[2]!.fieldId, UNKNOWN_COLUMN_FIELD_ID_BASE + 2);
  });

  it('describes a table the catalog no longer has from the Relation message alone', () => {
    const schema = describeTable(relation, undefined, new Map());
    assert.deepEqual(
      schema.columns.map((c) => [c.fieldId, c.nullable, c.primaryKey, c.key]),
      [
        [UNKNOWN_COLUMN_FIELD_ID_BASE, null, null, true],
        [UNKNOWN_COLUMN_FIELD_ID_BASE + 1, null, null, true],
        [UNKNOWN_COLUMN_FIELD_ID_BASE + 2, null, null, true],
      ],
    );
  });
});
