/**
 * One time-bounded run of the pipeline, the same for the CLI and the Lambda handler.
 *
 * A run: check the bucket and take the pipeline lease, at once, while the source connections open
 * (runtime/startup.ts; another holder of the lease: stop with `lease-held`, the connections unused) →
 * recover what an earlier run left (runtime/recovery.ts) → check the source (wal_level, slot, publication;
 * the slot read under the lease) → decide where to resume from IDENTIFY_SYSTEM (runtime/resume.ts: the
 * checkpoint, checked against the source it was made on and the slot) → stream sessions (runtime/session.ts)
 * until a stop → report the slot → give the lease up (storing the measured store speed for the next run) →
 * the summary. Nothing is written before the lease is held; failures surface in that order.
 *
 * A dropped replication connection abandons the uncommitted batch (deleting what of it reached S3 — unless its
 * checkpoint write had begun) and reconnects from the checkpoint under the reconnect retry policy, while time
 * allows. A lost lease stops everything at once: the keeper's signal aborts every call in flight and nothing
 * more is acknowledged. A final flush that cannot finish before the deadline is cut at the deadline's cutoff,
 * its intent left to the next run's recovery, and the run ends in time with `flush-timeout`.
 */
import { randomUUID } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import type { Acquisition, Checkpoint, CheckpointStore } from '../checkpoint/store.js';
import { parseTableList } from '../names.js';
import type { SnapshotDriver } from '../snapshot/driver.js';
import {
  hasPendingWork,
  NO_SNAPSHOT,
  report,
  requestTables,
  type SnapshotProgress,
} from '../snapshot/progress.js';
import type { Config } from '../config.js';
import { classify, SlotlakeError } from '../errors.js';
import type { Logger } from '../log.js';
import { formatLsn, type Lsn } from '../lsn.js';
import type { ResumePosition } from '../pipeline/assembler.js';
import { TypeCatalog } from '../replication/catalog.js';
import { sourceAccess } from '../replication/credentials.js';
import { ReplicationConnection, type ConnectionSettings } from '../replication/connection.js';
import {
  assertSourceReady,
  checkSource,
  listPublishedTables,
  openSourceClient,
  pluginNotAllowed,
  readSlot,
  readSourceFacts,
  type SlotState,
  type SourceFacts,
  SourceLink,
} from '../replication/source.js';
import { JSONL_RECORDS, type RecordFormat } from '../pipeline/record-formats.js';
import { BatchWriter, type ObjectFormat } from '../sink/batch.js';
import type { ObjectStore } from '../sink/object-store.js';
import { StoreSpeedMeter } from '../sink/store-speed.js';
import { systemClock, type Clock, type Deadline } from '../support/deadline.js';
import { armKillPoint, killPoint } from '../support/kill-points.js';
import { withRetry, type RetryPolicy } from '../support/retry.js';
import { CommitSequence } from './commit.js';
import { LeaseKeeper } from './lease.js';
import { deleteUncommitted, recover, recoveryWaitMs } from './recovery.js';
import { decideResume } from './resume.js';
import { pluginOptions, ReplicationSession } from './session.js';
import { settle, SourcePreparation, type OpenedReplication, type OpenedSource } from './startup.js';
import { emptySummary, type RunSummary, type StopReason } from './summary.js';

export type { RunSummary, StopReason } from './summary.js';

export interface RunOptions {
  readonly config: Config;
  readonly logger: Logger;
  readonly objects: ObjectStore;
  readonly checkpoints: CheckpointStore;
  readonly deadline: Deadline;
  readonly untilCaughtUp: boolean;
  /** Aborted on SIGINT/SIGTERM: stop reading and drain. */
  readonly stopSignal?: AbortSignal;
  readonly clock?: Clock;
  readonly onBatch?: (summary: Readonly<RunSummary>) => void;
}

/**
 * Reconnects after a dropped replication connection: a few, quickly (a failover or a restart takes seconds;
 * the next scheduled run covers longer outages). The attempt count is SLOTLAKE_RECONNECT_ATTEMPTS.
 */
const RECONNECT_BASE_DELAY_MS = 200;
const RECONNECT_MAX_DELAY_MS = 2_000;
/** A reconnect is worth it only with this much usable time left (connect, identify, stream, flush). */
const RECONNECT_MIN_USABLE_MS = 3_000;

export async function runPipeline(options: RunOptions): Promise<RunSummary> {
  return new PipelineRun(options).run();
}

class PipelineRun {
  private readonly config: Config;
  private readonly logger: Logger;
  private readonly deadline: Deadline;
  private readonly clock: Clock;
  private readonly startedAtMs: number;
  private readonly runId = randomUUID();
  private readonly connection: ConnectionSettings;
  private readonly spoolDir: string;
  private readonly summary: RunSummary;
  private speed = new StoreSpeedMeter();
  private keeper: LeaseKeeper | undefined;
  /** The run's commit sequence, once streaming began. */
  private commits: CommitSequence | undefined;
  /** Aborted at the deadline's cutoff or the lease's fence. */
  private signal: AbortSignal;
  /** The configured status interval, shortened to a third of the server's wal_sender_timeout. */
  private statusIntervalMs: number;

  constructor(private readonly options: RunOptions) {
    this.config = options.config;
    this.logger = options.logger;
    this.deadline = options.deadline;
    this.clock = options.clock ?? systemClock;
    this.startedAtMs = this.clock.nowMs();
    this.connection = {
      databaseUrl: this.config.databaseUrl,
      applicationName: `slotlake:${this.config.pipeline}`,
      access: sourceAccess(this.config),
    };
    this.spoolDir = join(this.config.spoolDir ?? join(tmpdir(), 'slotlake-spool'), this.runId);
    this.statusIntervalMs = this.config.statusIntervalMs;
    this.summary = emptySummary(this.config.pipeline, this.config.slot, this.runId);
    this.signal = this.deadline.signal;
  }

  private finish(): RunSummary {
    this.summary.durationMs = Math.round(this.clock.nowMs() - this.startedAtMs);
    this.summary.overrunMs = Math.round(this.deadline.overrunMs());
    return this.summary;
  }

  private get keeperOrFail(): LeaseKeeper {
    if (!this.keeper) throw new SlotlakeError('no lease', { kind: 'internal' });
    return this.keeper;
  }

  async run(): Promise<RunSummary> {
    const { config, logger } = this;
    armKillPoint(config.killAt);
    // The bucket check, the lease and the source connections at once: the connections are read-only and
    // discarded unless the run gets to stream; a failed bucket check wins over the rest, as if it came first.
    let preparation: SourcePreparation | undefined = this.prepareSource();
    const bucket = settle(this.checkBucket());
    let acquisition: Acquisition;
    try {
      const lease = await settle(
        withRetry(
          () => this.options.checkpoints.acquire(this.runId, config.leaseDurationMs, this.clock.nowMs()),
          {
            what: 'acquiring the pipeline lease',
            origin: 'checkpoint-store',
            deadline: this.deadline,
          },
        ),
      );
      // Renewals start the moment the lease is ours, whatever is still under way.
      if (lease.ok && lease.value.acquired) this.keep(lease.value);
      const checked = await bucket;
      if (!checked.ok) {
        // Nothing was written under the lease: give it back at once.
        await this.keeper?.release((held) => this.options.checkpoints.release(held));
        throw checked.error;
      }
      if (!lease.ok) throw lease.error;
      acquisition = lease.value;
    } catch (error) {
      await preparation.discard();
      throw error;
    }
    if (!acquisition.acquired) {
      await preparation.discard();
      logger.info('another run holds this pipeline; nothing to do', {
        holder: acquisition.holder,
        expiresInMs:
          acquisition.expiresAtMs === undefined
            ? undefined
            : Math.round(acquisition.expiresAtMs - this.clock.nowMs()),
      });
      this.summary.stopReason = 'lease-held';
      this.summary.startCheckpoint = acquisition.checkpoint ? formatLsn(acquisition.checkpoint.lsn) : null;
      this.summary.checkpoint = this.summary.startCheckpoint ?? '0/0';
      return this.finish();
    }
    if (recoveryWaitMs(acquisition, this.clock.nowMs(), this.config.testTakeoverGraceMs) > 0) {
      // Recovery first waits out the lease it took over: the connections open after it, not idle during it.
      await preparation.discard();
      preparation = undefined;
    }
    killPoint('after-lease');
    const keeper = this.keeperOrFail;
    this.speed = new StoreSpeedMeter(acquisition.speed);
    // The bucket check was an S3 request like any other: against a slow store, this run knows it at once.
    this.speed.recordRequestAtLeast(this.bucketCheckMs);
    try {
      return await this.withLease(acquisition, preparation);
    } catch (error) {
      const classified = classify(error, { what: 'run' });
      if (classified.kind === 'flush-timeout' && !keeper.signal.aborted) {
        // Cut at the cutoff: consistent (the intent names what may exist), in time, reported.
        logger.warn(classified.message, { kind: classified.kind });
        this.summary.stopReason = 'flush-timeout';
        return this.finish();
      }
      throw classified;
    } finally {
      await preparation?.discard();
      await rm(this.spoolDir, { recursive: true, force: true }).catch(() => undefined);
      const speed = this.speed.snapshot();
      const published = this.commits?.publishedPendingManifest;
      // Uploads cut at the deadline's cutoff may still complete on S3's side: keep the owner recorded so the
      // next run waits out this lease (plus the takeover grace) before removing this run's intent.
      const cutInFlight = this.signal.aborted;
      await keeper.release(async (lease) => {
        // A manifest already in place needs no copying by the next run (against a slow store, copying it
        // again can take the next run's whole budget).
        if (published !== undefined)
          await this.options.checkpoints.clearPendingManifest(lease, published).catch(() => undefined);
        await this.options.checkpoints.release(lease, speed, cutInFlight ? this.clock.nowMs() : undefined);
      });
      if (this.summary.lease) {
        this.summary.lease.releasedAtMs = Date.now();
        this.summary.lease.renewals = keeper.renewals;
      }
    }
  }

  /** How long the bucket check took (an S3 request: the store's latency is at least that). */
  private bucketCheckMs = 0;

  private checkBucket(): Promise<void> {
    return withRetry(
      async () => {
        const started = this.clock.nowMs();
        await this.options.objects.checkBucket();
        this.bucketCheckMs = this.clock.nowMs() - started;
      },
      { what: 'checking the S3 bucket', origin: 'object-store', deadline: this.deadline },
    );
  }

  /** Keeps the acquired lease: renewals, the fence on every write to the object store, the run's signal. */
  private keep(acquisition: Extract<Acquisition, { acquired: true }>): void {
    const keeper = new LeaseKeeper(
      acquisition.lease,
      this.options.checkpoints,
      this.config.leaseDurationMs,
      this.clock,
      this.logger,
    );
    this.keeper = keeper;
    // Every byte this run sends to the object store from now on is checked against the lease when it leaves.
    this.options.objects.fenceWrites(() => keeper.writeRefusal());
    this.signal = AbortSignal.any([this.deadline.signal, keeper.signal]);
    this.summary.lease = {
      fence: acquisition.lease.fence,
      acquiredAtMs: Date.now(),
      releasedAtMs: null,
      renewals: 0,
    };
    keeper.start();
  }

  /** Opens the source side of the run (runtime/startup.ts). */
  private prepareSource(): SourcePreparation {
    const { config, deadline } = this;
    return new SourcePreparation({
      source: async (signal): Promise<OpenedSource> => {
        const client = await withRetry(() => openSourceClient(this.connection, signal), {
          what: 'connecting to postgres',
          origin: 'source',
          deadline,
          signal,
        });
        try {
          return { client, facts: await readSourceFacts(client, config.publication) };
        } catch (error) {
          await client.end().catch(() => undefined);
          throw error;
        }
      },
      replication: (signal) => this.openReplication(signal),
    });
  }

  private async withLease(
    acquisition: Extract<Acquisition, { acquired: true }>,
    prepared: SourcePreparation | undefined,
  ): Promise<RunSummary> {
    const { logger, deadline } = this;
    const keeper = this.keeperOrFail;
    const checkpoint = acquisition.checkpoint;
    this.summary.startCheckpoint = checkpoint ? formatLsn(checkpoint.lsn) : null;
    this.summary.checkpoint = this.summary.startCheckpoint ?? '0/0';
    const recovery = await recover(
      acquisition,
      {
        objects: this.options.objects,
        lease: keeper,
        deadline,
        signal: this.signal,
        logger,
        clock: this.clock,
        takeoverGraceMs: this.config.testTakeoverGraceMs,
      },
      {
        clearIntent: () => this.options.checkpoints.clearIntent(keeper.lease),
        clearPendingManifest: (key) => this.options.checkpoints.clearPendingManifest(keeper.lease, key),
      },
    );
    this.summary.recoveredObjects += recovery.deletedObjects;
    if (!recovery.completed) {
      this.summary.stopReason = 'deadline';
      return this.finish();
    }

    const preparation = prepared ?? this.prepareSource();
    try {
      return await this.withSource(acquisition, preparation);
    } finally {
      await preparation.discard();
    }
  }

  /** Checks the source, decides where to resume and streams, on the connections `preparation` opened. */
  private async withSource(
    acquisition: Extract<Acquisition, { acquired: true }>,
    preparation: SourcePreparation,
  ): Promise<RunSummary> {
    const { config, logger, deadline } = this;
    const keeper = this.keeperOrFail;
    const checkpoint = acquisition.checkpoint;
    const { client: source, facts } = await preparation.sourceReady();
    // The ordinary connection, reopened after a drop that broke it (see SourceLink).
    const link = new SourceLink(source, () =>
      withRetry(() => openSourceClient(this.connection), {
        what: 'connecting to postgres',
        origin: 'source',
        deadline,
      }),
    );
    try {
      const slot = assertSourceReady(facts, await readSlot(source, config.slot), {
        slot: config.slot,
        publication: config.publication,
        plugin: config.plugin,
      });
      if (slot.active) {
        logger.info('the slot is streaming to another process; leaving this run to it', {
          activePid: slot.activePid,
        });
        this.summary.stopReason = 'lease-held';
        return this.finish();
      }
      this.adaptToServer(facts, slot);
      // --until-caught-up: everything the server had written when this run, holding the lease, read the slot.
      const target = this.options.untilCaughtUp ? slot.currentWalLsn : undefined;
      const catalog = new TypeCatalog(() => link.client);
      const first = await preparation.replicationReady();
      let snapshotClient: pg.Client | undefined;
      try {
        const identity = {
          systemId: first.identity.systemId,
          timeline: first.identity.timeline,
          database: first.identity.database,
          slot: config.slot,
        };
        const decision = decideResume(checkpoint, slot, identity, config);
        for (const note of decision.notes) logger[note.level](note.message, note.fields);
        this.summary.sourceChanged = decision.sourceChanged;
        this.summary.checkpoint = formatLsn(decision.position.lsn);
        const requests = await this.snapshotRequests(acquisition, checkpoint, decision.sourceChanged, source);
        if (requests.progress && hasPendingWork(requests.progress)) {
          snapshotClient = await withRetry(() => openSourceClient(this.connection), {
            what: 'connecting to postgres for the snapshot',
            origin: 'source',
            deadline,
          });
          const { SnapshotDriver } = await import('../snapshot/driver.js');
          this.snapshot = new SnapshotDriver({
            pipeline: config.pipeline,
            runId: this.runId,
            client: snapshotClient,
            logger,
            clock: this.clock,
            deadline,
            progress: requests.progress,
            maxChunkRows: config.snapshotChunkRows,
          });
        }
        const commits = (this.commits = new CommitSequence(
          {
            objects: this.options.objects,
            checkpoints: this.options.checkpoints,
            logger,
            deadline,
            speed: this.speed,
            pipeline: config.pipeline,
            slot: config.slot,
            runId: this.runId,
            source: decision.source,
            lease: keeper,
            signal: this.signal,
            acknowledge: (lsn) => this.acknowledge?.(lsn),
            mergedSnapshotRequests: requests.merged,
          },
          checkpoint,
        ));
        if (config.format === 'parquet')
          await this.streamWithReconnects(
            (await import('../pipeline/parquet-records.js')).parquetRecords(config.parquetCompression),
            commits,
            decision.position,
            first,
            catalog,
            target,
            link,
          );
        else
          await this.streamWithReconnects(
            JSONL_RECORDS,
            commits,
            decision.position,
            first,
            catalog,
            target,
            link,
          );
      } finally {
        await first.connection.close();
        await snapshotClient?.end().catch(() => undefined);
        this.recordSnapshot();
      }
      await this.reportSlot(link.client);
      logger.info('run finished', { ...this.finish() });
      return this.finish();
    } finally {
      await link.end();
    }
  }

  /** Reads tables' existing rows between the stream's changes, when a snapshot is pending. */
  private snapshot: SnapshotDriver | undefined;

  /**
   * The snapshot work of this run: the committed progress, the initial snapshot of a new pipeline
   * (SLOTLAKE_SNAPSHOT=initial) or after an accepted source change (resnapshot), and the tables `slotlake
   * snapshot` asked for since the last run (merged here; the first checkpoint write consumes them).
   */
  private async snapshotRequests(
    acquisition: Extract<Acquisition, { acquired: true }>,
    checkpoint: Checkpoint | null,
    sourceChanged: boolean,
    source: pg.Client,
  ): Promise<{ progress: SnapshotProgress | undefined; merged: readonly string[] }> {
    const { config, logger } = this;
    let progress = sourceChanged ? NO_SNAPSHOT : checkpoint?.snapshot;
    const now = new Date().toISOString();
    const initial =
      (checkpoint === null && config.snapshot === 'initial') ||
      (sourceChanged && config.onSourceChange === 'resnapshot');
    if (initial) {
      const tables = await listPublishedTables(source, config);
      progress = requestTables(progress ?? NO_SNAPSHOT, tables, now);
      logger.info('snapshot requested for every published table', {
        tables: tables.length,
        reason: checkpoint === null ? 'new pipeline' : 'source changed',
      });
    }
    const merged: string[] = [];
    for (const request of acquisition.snapshotRequests) {
      try {
        progress = requestTables(progress ?? NO_SNAPSHOT, parseTableList(request), now);
        merged.push(request);
      } catch {
        logger.warn('ignoring a snapshot request that names no table', { request });
        merged.push(request);
      }
    }
    if (merged.length > 0) logger.info('snapshot requested for tables', { tables: merged.length });
    return { progress, merged };
  }

  /** The snapshot figures of this run, for the summary. */
  private recordSnapshot(): void {
    const driver = this.snapshot;
    if (!driver) return;
    const pending = report(driver.progress, driver.counters.rows);
    this.summary.snapshot = {
      chunks: driver.counters.chunks,
      rows: driver.counters.rows,
      droppedAsStale: driver.counters.dropped,
      pendingTables: pending.pendingTables,
      rowsArchivedTotal: pending.rowsArchived,
      rowsRemainingEstimate: pending.rowsRemainingEstimate,
      estimatedRunsLeft: pending.estimatedRunsLeft,
    };
  }

  /** Where acknowledgements go: the current session's stream (none between sessions). */
  private acknowledge: ((lsn: Lsn) => void) | undefined;

  private async openReplication(signal?: AbortSignal): Promise<OpenedReplication> {
    const connection = await withRetry(() => ReplicationConnection.open(this.connection, signal), {
      what: 'opening the replication connection',
      origin: 'source',
      deadline: this.deadline,
      ...(signal ? { signal } : {}),
    });
    try {
      await connection.assertSessionSettings();
      const identity = await connection.identifySystem();
      return { connection, identity };
    } catch (error) {
      await connection.close();
      throw classify(error, { origin: 'source', what: 'identifying the source system' });
    }
  }

  /**
   * Streams sessions until a stop. A dropped connection abandons the uncommitted batch and reconnects from the
   * checkpoint, under the reconnect policy, while the lease is held and time allows.
   */
  private async streamWithReconnects<R>(
    format: RecordFormat<R>,
    commits: CommitSequence,
    start: ResumePosition,
    first: OpenedReplication,
    catalog: TypeCatalog,
    target: Lsn | undefined,
    link: SourceLink,
  ): Promise<void> {
    const keeper = this.keeperOrFail;
    let opened: OpenedReplication | undefined = first;
    const policy: RetryPolicy = {
      maxAttempts: this.config.reconnectAttempts + 1,
      baseDelayMs: RECONNECT_BASE_DELAY_MS,
      maxDelayMs: RECONNECT_MAX_DELAY_MS,
    };
    let resume = start;
    this.summary.stopReason = await withRetry(
      async () => {
        // A reconnect: the drop may have broken the ordinary connection too (the catalog queries through it).
        if (opened === undefined) await link.ensureOpen();
        const current = opened ?? (await this.openReplication());
        opened = undefined;
        try {
          if (current.identity.systemId !== first.identity.systemId)
            throw new SlotlakeError(
              `after reconnecting, the source is system ${current.identity.systemId}, not ${first.identity.systemId}`,
              {
                kind: 'source-changed',
                origin: 'source',
                hint: 'DATABASE_URL now reaches another server; the next run checks it against the checkpoint',
              },
            );
          return await this.streamSession(format, commits, resume, current, catalog, target, link);
        } finally {
          if (current !== first) await current.connection.close();
        }
      },
      {
        what: 'streaming',
        origin: 'source',
        policy,
        signal: this.signal,
        shouldRetry: (error, attempt) =>
          (error.isSourceConnectionLoss || (attempt > 1 && error.kind === 'slot-in-use')) &&
          keeper.held &&
          this.deadline.usableMs() > RECONNECT_MIN_USABLE_MS &&
          !this.options.stopSignal?.aborted,
        onRetry: (error, attempt) => {
          const stored = commits.checkpoint;
          resume = stored ? { lsn: stored.lsn, partial: stored.partial } : start;
          this.summary.reconnects++;
          this.logger.warn('the Postgres connection dropped; reconnecting from the checkpoint', {
            attempt,
            kind: error.kind,
            resumeLsn: formatLsn(resume.lsn),
          });
        },
      },
    );
  }

  private async streamSession<R>(
    format: RecordFormat<R>,
    commits: CommitSequence,
    resume: ResumePosition,
    opened: OpenedReplication,
    catalog: TypeCatalog,
    target: Lsn | undefined,
    link: SourceLink,
  ): Promise<StopReason> {
    const { config, logger } = this;
    const keeper = this.keeperOrFail;
    const stream = opened.connection.startReplication(
      {
        slot: config.slot,
        startLsn: resume.lsn,
        pluginOptions: pluginOptions(config),
        statusIntervalMs: this.statusIntervalMs,
        highWaterBytes: config.readBufferBytes,
      },
      this.clock,
    );
    this.acknowledge = (lsn) => stream.acknowledge(lsn);
    this.summary.startup ??= {
      runMs: Math.round(this.clock.nowMs() - this.startedAtMs),
      processMs: Math.round(performance.now()),
    };
    const session = new ReplicationSession({
      config,
      logger,
      deadline: this.deadline,
      clock: this.clock,
      stream,
      database: opened.identity.database,
      resume,
      commits,
      format,
      newBatch: () => this.newBatch(format.objects),
      catalog,
      target,
      stopSignal: this.options.stopSignal,
      assertLeaseHeld: () => keeper.assertHeld(),
      snapshot: this.snapshot,
      statusIntervalMs: this.statusIntervalMs,
      counters: {
        onCommitted: (result, counts) => {
          const summary = this.summary;
          summary.batches += result.objects.length > 0 ? 1 : 0;
          summary.objects += result.objects.length;
          summary.bytes += result.bytes;
          summary.changes += result.rows;
          summary.transactions += counts.transactions;
          summary.skippedTransactions += counts.skipped;
          if (result.checkpoint) {
            summary.checkpoint = formatLsn(result.checkpoint.lsn);
            summary.partial = result.checkpoint.partial
              ? {
                  commitLsn: formatLsn(result.checkpoint.partial.commitLsn),
                  nextSeq: result.checkpoint.partial.nextSeq,
                }
              : null;
          }
          this.options.onBatch?.(summary);
        },
        onFlushed: (flushMs) => (this.summary.flushMs += flushMs),
        onFramesRead: () => undefined,
      },
    });
    try {
      return await session.run();
    } catch (error) {
      const classified = classify(error, { what: 'streaming' });
      stream.abandon();
      const batch = session.currentBatch;
      await batch.discard().catch(() => undefined);
      // A reconnect re-reads the uncommitted batch from the checkpoint: whatever of it reached S3 goes first
      // (its keys are in the intent). Never once its checkpoint write began (it may be committed), never
      // without the lease, never after the cutoff — the next run's recovery handles those from the intent.
      if (
        classified.isSourceConnectionLoss &&
        !batch.checkpointBegun &&
        keeper.held &&
        !this.signal.aborted &&
        batch.registeredKeys.length > 0
      ) {
        this.summary.recoveredObjects += await deleteUncommitted(
          batch.registeredKeys,
          {
            objects: this.options.objects,
            lease: keeper,
            deadline: this.deadline,
            signal: this.signal,
            logger,
            clock: this.clock,
          },
          () => this.options.checkpoints.clearIntent(keeper.lease),
        );
      }
      throw await this.refine(classified, link.client);
    } finally {
      this.acknowledge = undefined;
      this.summary.statusUpdates += stream.statusUpdatesSent;
      this.summary.readPauses += stream.readPauses;
    }
  }

  /**
   * START_REPLICATION's 42704 (undefined object) and 55000 (object not in prerequisite state) do not say which
   * object: the slot or publication may have been dropped, or the slot invalidated, since the run checked.
   * Check again and raise the precise error.
   */
  private async refine(error: SlotlakeError, source: pg.Client): Promise<SlotlakeError> {
    if (error.sqlState === '42501')
      return (await pluginNotAllowed(source, this.config.plugin).catch(() => undefined)) ?? error;
    if (error.sqlState !== '42704' && error.sqlState !== '55000') return error;
    try {
      await checkSource(source, {
        slot: this.config.slot,
        publication: this.config.publication,
        plugin: this.config.plugin,
      });
    } catch (precise) {
      return classify(precise, { origin: 'source', what: 'checking the source database' });
    }
    return error;
  }

  private newBatch<R>(objects: ObjectFormat<R>): BatchWriter<R> {
    const keeper = this.keeperOrFail;
    return new BatchWriter<R>(
      {
        store: this.options.objects,
        format: objects,
        spoolDir: this.spoolDir,
        objectMaxBytes: this.config.objectMaxBytes,
        speed: this.speed,
        deadline: this.deadline,
        signal: this.signal,
        assertWritable: () => keeper.assertHeld(),
        registerIntent: (keys, signal) =>
          withRetry(() => this.options.checkpoints.recordIntent(keeper.lease, keys, signal), {
            what: 'recording the intent',
            origin: 'checkpoint-store',
            deadline: this.deadline,
            signal,
          }),
      },
      this.clock.nowMs(),
    );
  }

  /**
   * Reads the server settings that shape a healthy session: status updates must reach the server well within
   * wal_sender_timeout (it drops a quiet client), and retained WAL is compared with max_slot_wal_keep_size
   * (past it the server invalidates the slot).
   */
  private adaptToServer(facts: SourceFacts, slot: SlotState): void {
    const timeoutMs = facts.walSenderTimeoutMs;
    if (timeoutMs > 0 && timeoutMs / 3 < this.statusIntervalMs) {
      this.statusIntervalMs = Math.max(100, Math.floor(timeoutMs / 3));
      this.logger.info('status interval shortened to a third of the server wal_sender_timeout', {
        walSenderTimeoutMs: timeoutMs,
        statusIntervalMs: this.statusIntervalMs,
      });
    }
    const keepBytes = facts.maxSlotWalKeepSizeBytes;
    if (
      slot.walStatus === 'unreserved' ||
      (keepBytes !== undefined && slot.retainedWalBytes >= 0.8 * keepBytes)
    ) {
      this.logger.warn(
        'the slot retains WAL close to max_slot_wal_keep_size: it will be invalidated if it falls further behind',
        {
          retainedWalBytes: slot.retainedWalBytes,
          maxSlotWalKeepSizeBytes: keepBytes,
          walStatus: slot.walStatus,
          safeWalSize: slot.safeWalSize,
        },
      );
    } else if (keepBytes === undefined && slot.retainedWalBytes > 10 * 1024 ** 3) {
      this.logger.warn('the slot retains more than 10 GiB of WAL and max_slot_wal_keep_size is unlimited', {
        retainedWalBytes: slot.retainedWalBytes,
      });
    }
  }

  private async reportSlot(source: pg.Client): Promise<void> {
    const slot = await readSlot(source, this.config.slot).catch(() => null);
    this.summary.lagBytes = slot?.lagBytes ?? null;
    this.summary.retainedWalBytes = slot?.retainedWalBytes ?? null;
    this.summary.walStatus = slot?.walStatus ?? null;
    this.summary.safeWalSize = slot?.safeWalSize ?? null;
  }
}
