/**
 * Changes in flight: what the source already holds and the archive does not yet — not divergence.
 *
 * `verify` compares the archive as its manifests stood when verify began (M0) with the source as a later
 * snapshot of it saw it. Every row that differs only because it changed in between was touched by a change
 * that is, when this step runs, either in a batch committed since (a manifest not in M0, or the staged manifest
 * of a batch whose checkpoint is written but whose manifest is not yet copied) or not archived at all — and then
 * it is in the slot, after its `confirmed_flush_lsn`, since a run acknowledges only what its manifests name.
 * So this step takes the pipeline's lease (no run streams or commits meanwhile: a run that starts finds the
 * lease held and stops cleanly), reads the slot's pending changes with `pg_logical_slot_peek_binary_changes`
 * (pgoutput) or `pg_logical_slot_peek_changes` (wal2json) — a peek, which consumes nothing and moves nothing —
 * decodes them with the run's own decoders, lists the manifests again, and collects the keys every such change
 * touched (a truncate: the whole table). A differing key among them is reported as in flight. Keys touched
 * after the source snapshot are included too (the peek reads up to now): a real divergence on such a key is
 * reported in flight rather than lost — the next verify judges it.
 *
 * While it holds the lease, it also lists `data/`: an object no manifest names (and no intent or staged
 * manifest accounts for) is an extra object. The peek needs the slot idle: holding the lease keeps runs out;
 * a run still holding it is waited for, up to a bound.
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type pg from 'pg';
import type { Acquisition, CheckpointStore } from '../checkpoint/store.js';
import type { Config } from '../config.js';
import type { LogicalMessage, Relation, Tuple } from '../decoding/messages.js';
import { PgoutputDecoder } from '../decoding/pgoutput.js';
import { Wal2jsonDecoder, wal2jsonPluginOptions } from '../decoding/wal2json.js';
import { classify, SlotlakeError } from '../errors.js';
import type { Logger } from '../log.js';
import { parseLsn } from '../lsn.js';
import { publicationNamesOption, quoteLiteral } from '../names.js';
import { LeaseKeeper } from '../runtime/lease.js';
import { systemClock } from '../support/deadline.js';
import type { ArchivedChange } from './archive.js';
import { canonicalText, digestText, type RowValue } from './digest.js';

/** How verify identifies a table's rows: its columns and key (null: the whole row). */
export interface RowIdentity {
  readonly columns: readonly { readonly name: string; readonly isArray: boolean }[];
  readonly keyIndexes: readonly number[] | null;
}

/** Keys touched after the compared archive state, per table. */
export class TouchedKeys {
  readonly keys = new Set<string>();
  /** A truncate, or a change whose key could not be read: every row of the table may be in flight. */
  everything = false;
  changes = 0;
}

const ARRAY_BOUNDS = /^(\[-?[0-9]+:-?[0-9]+\])+=/;

/** The identity of a row (verify/rebuild.ts's), or undefined when a needed value is missing. */
export function identityOf(values: readonly RowValue[], identity: RowIdentity): string | undefined {
  if (identity.keyIndexes === null) {
    if (values.some((value) => value === undefined)) return undefined;
    return digestText(canonicalText(values)).hash64.toString();
  }
  const key = identity.keyIndexes.map((i) => values[i]);
  return key.some((value) => value === undefined) ? undefined : canonicalText(key);
}

/** Notes the rows an archived change touched. */
export function touchArchived(change: ArchivedChange, identity: RowIdentity, touched: TouchedKeys): void {
  touched.changes++;
  if (change.op === 't') {
    touched.everything = true;
    return;
  }
  for (const row of [change.after, change.before]) {
    if (row === null) continue;
    const id = identityOf(row, identity);
    if (id === undefined) {
      if (row === change.after && change.op !== 'u') touched.everything = true;
    } else touched.keys.add(id);
  }
}

function tupleValues(tuple: Tuple, relation: Relation, identity: RowIdentity): RowValue[] {
  const position = new Map(relation.columns.map((column, i) => [column.name, i]));
  return identity.columns.map((column) => {
    const i = position.get(column.name);
    if (i === undefined) return null;
    const value = tuple[i];
    if (value === undefined || value.kind === 'null') return null;
    if (value.kind !== 'text') return undefined;
    return column.isArray ? value.text.replace(ARRAY_BOUNDS, '') : value.text;
  });
}

/** Collects the keys that decoded change messages touch. */
export class PeekCollector {
  private readonly relations = new Map<number, Relation>();
  changes = 0;

  constructor(
    private readonly tables: ReadonlyMap<string, { identity: RowIdentity; touched: TouchedKeys }>,
  ) {}

  private target(relationId: number) {
    const relation = this.relations.get(relationId);
    if (!relation) return undefined;
    const entry = this.tables.get(`${relation.namespace}\u0000${relation.name}`);
    return entry ? { relation, ...entry } : undefined;
  }

  private touch(
    target: { relation: Relation; identity: RowIdentity; touched: TouchedKeys },
    tuple: Tuple | undefined,
  ): void {
    if (!tuple) return;
    const id = identityOf(tupleValues(tuple, target.relation, target.identity), target.identity);
    if (id === undefined) target.touched.everything = true;
    else target.touched.keys.add(id);
  }

  accept(message: LogicalMessage): void {
    switch (message.tag) {
      case 'relation':
        this.relations.set(message.relation.relationId, message.relation);
        return;
      case 'insert':
      case 'update':
      case 'delete': {
        const target = this.target(message.relationId);
        if (!target) return;
        this.changes++;
        target.touched.changes++;
        if (message.tag !== 'delete') this.touch(target, message.newTuple);
        if (message.tag !== 'insert') {
          this.touch(target, message.oldKey);
          this.touch(target, message.oldTuple);
          if (!message.oldKey && !message.oldTuple && target.identity.keyIndexes === null)
            target.touched.everything = true; // a keyless row changed without its old row: cannot be told apart
        }
        return;
      }
      case 'truncate':
        for (const relationId of message.relationIds) {
          const target = this.target(relationId);
          if (target) {
            this.changes++;
            target.touched.everything = true;
          }
        }
        return;
      default:
        return;
    }
  }
}

const PEEK_CURSOR = 'slotlake_verify_peek';
const PEEK_FETCH_ROWS = 2_000;
const SLOT_BUSY_ATTEMPTS = 20;

/** The slot's pending changes, decoded, handed to `collector` (the slot must be idle). */
export async function peekSlot(client: pg.Client, config: Config, collector: PeekCollector): Promise<void> {
  const wal2json = config.plugin === 'wal2json';
  const source = wal2json
    ? `pg_logical_slot_peek_changes(${quoteLiteral(config.slot)}, NULL, NULL, VARIADIC ARRAY[${Object.entries(
        wal2jsonPluginOptions(config.tables),
      )
        .flat()
        .map(quoteLiteral)
        .join(', ')}]::text[])`
    : `pg_logical_slot_peek_binary_changes(${quoteLiteral(config.slot)}, NULL, NULL, 'proto_version', '1', 'publication_names', ${quoteLiteral(publicationNamesOption([config.publication]))})`;
  for (let attempt = 1; ; attempt++) {
    const pgoutput = new PgoutputDecoder({ protocolVersion: 1 });
    const w2j = new Wal2jsonDecoder();
    try {
      await client.query('BEGIN');
      await client.query(
        `DECLARE ${PEEK_CURSOR} NO SCROLL CURSOR FOR SELECT lsn::text AS lsn, data FROM ${source}`,
      );
      for (;;) {
        const page = await client.query<{ lsn: string; data: Buffer | string }>(
          `FETCH FORWARD ${PEEK_FETCH_ROWS} FROM ${PEEK_CURSOR}`,
        );
        for (const row of page.rows) {
          if (wal2json) {
            const bytes = Buffer.from(row.data as string, 'utf8');
            for (const message of w2j.decode(bytes, parseLsn(row.lsn))) collector.accept(message);
          } else collector.accept(pgoutput.decode(row.data as Buffer));
        }
        if (page.rows.length < PEEK_FETCH_ROWS) break;
      }
      await client.query('COMMIT');
      return;
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      const classified = classify(error, {
        origin: 'source',
        what: 'reading the changes in flight from the slot',
      });
      // 55006 object_in_use: a run that lost its lease may still be closing its stream
      if (classified.sqlState === '55006' && attempt < SLOT_BUSY_ATTEMPTS) {
        await sleep(500);
        continue;
      }
      throw classified;
    }
  }
}

/**
 * Holds the pipeline's lease while `work` runs: waits up to `waitMs` for a run holding it, renews it, and
 * releases it after. A lease taken over from a run that did not release it is handed back with that run's
 * expiry still recorded, so the next run waits out its uploads as it would have.
 */
export async function withPipelineLease<T>(
  store: CheckpointStore,
  config: Config,
  waitMs: number,
  logger: Logger,
  work: (acquisition: Extract<Acquisition, { acquired: true }>, signal: AbortSignal) => Promise<T>,
): Promise<T> {
  const owner = `verify-${randomUUID()}`;
  const giveUpAtMs = systemClock.nowMs() + waitMs;
  let acquisition: Acquisition;
  for (;;) {
    acquisition = await store.acquire(owner, config.leaseDurationMs, systemClock.nowMs());
    if (acquisition.acquired) break;
    const leftMs = giveUpAtMs - systemClock.nowMs();
    if (leftMs <= 0)
      throw new SlotlakeError(
        `a run holds the lease of pipeline ${config.pipeline} (${acquisition.holder ?? 'unknown owner'}); verify needs it for a moment to read the changes in flight`,
        {
          kind: 'slot-in-use',
          origin: 'checkpoint-store',
          hint: 'run verify between runs, or give it longer with --wait',
        },
      );
    logger.info('waiting for the run holding the lease', { holder: acquisition.holder });
    await sleep(Math.min(1_000, leftMs));
  }
  const keeper = new LeaseKeeper(acquisition.lease, store, config.leaseDurationMs, systemClock, logger);
  keeper.start();
  try {
    const result = await work(acquisition, keeper.signal);
    keeper.assertHeld();
    return result;
  } finally {
    const takenOver = acquisition.takenOver;
    await keeper.release((lease) => store.release(lease, undefined, takenOver?.expiresAtMs));
  }
}
