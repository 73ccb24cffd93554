/**
 * The source side of a run's start, opened while the bucket is checked and the lease is taken — the
 * connections cost round trips (TCP, TLS, authentication) that need not wait for either.
 *
 * Two things at once: the ordinary connection, with the facts the source checks need read in one query
 * (`readSourceFacts`); and the replication connection, with its session settings checked and
 * IDENTIFY_SYSTEM. Nothing here reads the slot, writes anything or acknowledges anything: the slot's state is
 * read under the lease, and a run that does not get the lease (or fails before it streams) discards both
 * connections unused. Failures are kept, not thrown, until the run asks for each side, in the order a
 * sequential start meets them (docs/architecture.md, "A run").
 */
import type pg from 'pg';
import type { ReplicationConnection, SystemIdentity } from '../replication/connection.js';
import type { SourceFacts } from '../replication/source.js';

export type Settled<T> =
  { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: unknown };

/** The promise's outcome as a value: a failure is kept until someone looks (never an unhandled rejection). */
export function settle<T>(promise: Promise<T>): Promise<Settled<T>> {
  return promise.then(
    (value) => ({ ok: true, value }),
    (error: unknown) => ({ ok: false, error }),
  );
}

export interface OpenedSource {
  readonly client: pg.Client;
  readonly facts: SourceFacts;
}

export interface OpenedReplication {
  readonly connection: ReplicationConnection;
  readonly identity: SystemIdentity;
}

export interface SourceOpeners {
  /** Opens the ordinary connection and reads the facts; closes it itself when reading fails. */
  readonly source: (signal: AbortSignal) => Promise<OpenedSource>;
  /** Opens the replication connection, checks its settings, identifies the system; closes it on failure. */
  readonly replication: (signal: AbortSignal) => Promise<OpenedReplication>;
}

export class SourcePreparation {
  private readonly stop = new AbortController();
  private readonly source: Promise<Settled<OpenedSource>>;
  private readonly replication: Promise<Settled<OpenedReplication>>;
  /** Set once a side was handed over: its connection is the caller's to close from then on. */
  private sourceTaken = false;
  private replicationTaken = false;

  constructor(open: SourceOpeners) {
    this.source = settle(open.source(this.stop.signal));
    this.replication = settle(open.replication(this.stop.signal));
  }

  /** The ordinary connection and the facts, or the failure to open it (the other side is then discarded). */
  async sourceReady(): Promise<OpenedSource> {
    const source = await this.source;
    this.sourceTaken = true;
    if (!source.ok) {
      await this.discard();
      throw source.error;
    }
    return source.value;
  }

  /** The replication connection, identified, or the failure to open it. */
  async replicationReady(): Promise<OpenedReplication> {
    const replication = await this.replication;
    this.replicationTaken = true;
    if (!replication.ok) throw replication.error;
    return replication.value;
  }

  /**
   * Stops what is still opening (retries end at once) and closes every connection not handed over. Waits
   * until both sides settled, so no connection opens after it returns. Never throws.
   */
  async discard(): Promise<void> {
    this.stop.abort(new Error('the run no longer needs these connections'));
    const [source, replication] = await Promise.all([this.source, this.replication]);
    if (!this.sourceTaken && source.ok) {
      this.sourceTaken = true;
      await source.value.client.end().catch(() => undefined);
    }
    if (!this.replicationTaken && replication.ok) {
      this.replicationTaken = true;
      await replication.value.connection.close();
    }
  }
}
