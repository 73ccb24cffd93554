/**
 * Change records: one JSON line per change, in the contract's Debezium-style envelope (contract §4).
 *
 * `{"op","before","after","source":{db,schema,table,lsn,commit_lsn,seq,txId,ts_ms,ts_us},"unchanged_toast"?}`
 * A `RelationEncoder` is built once per Relation message: it precomputes each column's JSON key and value
 * mapper (decoding/values.ts) and the constant head of `source`, so encoding a row is a loop of string
 * appends. `before` carries the old key columns (`K`, replica identity default/index) or the whole old
 * row (`O`, REPLICA IDENTITY FULL). An unchanged TOASTed value (`u`) is never written as null: it is
 * taken from the old row when the server sent one, otherwise omitted from `after` and named in
 * `unchanged_toast`.
 */
import type { Relation, Tuple } from '../decoding/messages.js';
import { createJsonTextMapper, type JsonTextMapper, type TypeRegistry } from '../decoding/values.js';
import { DecodeError } from '../errors.js';

interface ColumnEncoder {
  readonly name: string;
  /** `"name":` */
  readonly keyJson: string;
  readonly isKey: boolean;
  /** The value's JSON text (decoding/values: the contract's mapping, stringified). */
  readonly json: JsonTextMapper;
}

/** The transaction-level part of `source`. */
export interface TransactionSource {
  /** `,"commit_lsn":"X/X"` */
  readonly commitLsnJson: string;
  /** `,"txId":N,"ts_ms":N,"ts_us":N}` */
  readonly tailJson: string;
}

export function transactionSource(
  commitLsnText: string,
  xid: number,
  commitTimeUnixUs: bigint,
): TransactionSource {
  const tsMs = commitTimeUnixUs / 1000n;
  return {
    commitLsnJson: `,"commit_lsn":"${commitLsnText}"`,
    tailJson: `,"txId":${xid},"ts_ms":${tsMs},"ts_us":${commitTimeUnixUs}}`,
  };
}

export type Op = 'c' | 'u' | 'd' | 't' | 'r';

export class RelationEncoder {
  readonly schema: string;
  readonly table: string;
  private readonly columns: ColumnEncoder[];
  /** `{"db":"…","schema":"…","table":"…","lsn":"` */
  private readonly sourceHead: string;

  constructor(
    readonly relation: Relation,
    database: string,
    registry: TypeRegistry,
  ) {
    this.schema = relation.namespace;
    this.table = relation.name;
    this.columns = relation.columns.map((column) => ({
      name: column.name,
      keyJson: `${JSON.stringify(column.name)}:`,
      isKey: column.isKey,
      json: createJsonTextMapper(column.typeOid, registry),
    }));
    this.sourceHead =
      `{"db":${JSON.stringify(database)},"schema":${JSON.stringify(relation.namespace)},` +
      `"table":${JSON.stringify(relation.name)},"lsn":"`;
  }

  private checkWidth(tuple: Tuple): void {
    if (tuple.length !== this.columns.length) {
      throw new DecodeError(
        `tuple of ${this.relation.namespace}.${this.relation.name} has ${tuple.length} columns, relation has ${this.columns.length}`,
      );
    }
  }

  /**
   * `{...}` for a tuple. `keysOnly` keeps only replica-identity key columns (an old key `K`).
   * `fallback` supplies values for unchanged TOAST columns (the old row under REPLICA IDENTITY FULL);
   * columns still unchanged are pushed to `unchanged`.
   */
  encodeTuple(
    tuple: Tuple,
    keysOnly: boolean,
    fallback: Tuple | undefined,
    unchanged: string[] | undefined,
  ): string {
    this.checkWidth(tuple);
    let out = '{';
    let first = true;
    for (let i = 0; i < this.columns.length; i++) {
      const column = this.columns[i]!;
      if (keysOnly && !column.isKey) continue;
      let value = tuple[i]!;
      if (value.kind === 'unchanged-toast') {
        const old = fallback?.[i];
        if (old && (old.kind === 'text' || old.kind === 'null')) value = old;
        else {
          unchanged?.push(column.name);
          continue;
        }
      }
      let json: string;
      if (value.kind === 'null') json = 'null';
      else if (value.kind === 'text') json = column.json(value.text);
      else if (value.kind === 'binary') json = JSON.stringify(Buffer.from(value.bytes).toString('base64'));
      else continue;
      out += first ? column.keyJson + json : `,${column.keyJson}${json}`;
      first = false;
    }
    return `${out}}`;
  }

  /** One record line. */
  encode(
    op: Op,
    before: Tuple | undefined,
    beforeIsKeyOnly: boolean,
    after: Tuple | undefined,
    lsnText: string,
    seq: number,
    txn: TransactionSource,
  ): string {
    let unchanged: string[] | undefined;
    const beforeJson = before ? this.encodeTuple(before, beforeIsKeyOnly, undefined, undefined) : 'null';
    let afterJson = 'null';
    if (after) {
      unchanged = [];
      afterJson = this.encodeTuple(after, false, beforeIsKeyOnly ? undefined : before, unchanged);
    }
    const snapshot = op === 'r' ? ',"snapshot":true' : '';
    const source = `${this.sourceHead}${lsnText}"${txn.commitLsnJson},"seq":${seq}${snapshot}${txn.tailJson}`;
    const toast = unchanged && unchanged.length > 0 ? `,"unchanged_toast":${JSON.stringify(unchanged)}` : '';
    return `{"op":"${op}","before":${beforeJson},"after":${afterJson},"source":${source}${toast}}`;
  }
}
