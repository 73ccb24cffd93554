/**
 * Names: SQL identifier lists as users write them, quoting for the server, and the S3 key escaping of
 * contract §3 (one key segment per schema or table, whatever the name).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  escapeKeySegment,
  formatTableName,
  parseTableList,
  publicationNamesOption,
  qualifiedName,
  tableKeySegment,
  unescapeKeySegment,
} from '../../src/names.js';

describe('S3 key segments (contract §3)', () => {
  it('keeps A-Z a-z 0-9 _ - and escapes every other byte as %XX upper-case', () => {
    assert.equal(tableKeySegment({ schema: 'public', table: 'orders' }), 'public.orders');
    assert.equal(tableKeySegment({ schema: 'My Schema', table: 'a/b' }), 'My%20Schema.a%2Fb');
    assert.equal(escapeKeySegment('a.b'), 'a%2Eb');
    assert.equal(escapeKeySegment('..'), '%2E%2E');
    assert.equal(escapeKeySegment('x=1'), 'x%3D1');
    assert.equal(escapeKeySegment('%'), '%25');
    assert.equal(escapeKeySegment('tab\there'), 'tab%09here');
    assert.equal(escapeKeySegment('ü'), '%C3%BC');
    assert.equal(escapeKeySegment('😀'), '%F0%9F%98%80');
    assert.equal(escapeKeySegment('Order_Items-2'), 'Order_Items-2');
  });

  it('one segment whatever the name: no / . = or control character survives, and it round-trips', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', minLength: 1 }), (name) => {
        const segment = escapeKeySegment(name);
        assert.match(segment, /^[A-Za-z0-9_%-]+$/);
        assert.equal(unescapeKeySegment(segment), name);
      }),
      { numRuns: 2000 },
    );
  });

  it('schema.table is unambiguous: distinct tables never share a key segment', () => {
    fc.assert(
      fc.property(
        fc.string({ minLength: 1 }),
        fc.string({ minLength: 1 }),
        fc.string({ minLength: 1 }),
        fc.string({ minLength: 1 }),
        (s1, t1, s2, t2) => {
          fc.pre(s1 !== s2 || t1 !== t2);
          assert.notEqual(
            tableKeySegment({ schema: s1, table: t1 }),
            tableKeySegment({ schema: s2, table: t2 }),
          );
        },
      ),
    );
  });
});

describe('SQL names', () => {
  it('quotes identifiers and qualified names', () => {
    assert.equal(qualifiedName({ schema: 'My Schema', table: 'a"b' }), '"My Schema"."a""b"');
    assert.equal(publicationNamesOption(['OrdersPub', 'a,b', 'x"y']), '"OrdersPub","a,b","x""y"');
  });

  it('formatTableName writes what parseTableList reads back', () => {
    fc.assert(
      fc.property(
        fc.string({ minLength: 1 }).filter((s) => !s.includes('\0')),
        fc.string({ minLength: 1 }).filter((s) => !s.includes('\0')),
        (schema, table) => {
          assert.deepEqual(parseTableList(formatTableName({ schema, table })), [{ schema, table }]);
        },
      ),
    );
    assert.equal(formatTableName({ schema: 'public', table: 'orders' }), 'public.orders');
    assert.equal(formatTableName({ schema: 'public', table: 'Orders' }), 'public."Orders"');
  });

  it('names without a schema, a dangling dot or a stray character are errors that say where', () => {
    assert.throws(() => parseTableList('orders'), /without a schema/);
    assert.throws(() => parseTableList('public.'), /expected a name at the end/);
    assert.throws(() => parseTableList('public.a b'), /expected ","/);
  });
});
