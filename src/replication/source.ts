/**
 * The source database, over an ordinary (non-replication) connection: checks and setup.
 *
 * Logical decoding needs `wal_level = logical`, a publication (which tables pgoutput sends) and a
 * logical replication slot (which keeps the server's WAL until the client confirms it as flushed).
 * This module reads the slot's state from `pg_replication_slots` — `confirmed_flush_lsn` (where the
 * next stream starts), `restart_lsn` (the oldest WAL the slot retains), `wal_status` / `safe_wal_size`
 * (how close the slot is to being invalidated) — and creates what `slotlake setup` must create.
 * https://www.postgresql.org/docs/current/logicaldecoding-explanation.html
 */
import pg from 'pg';
import { classify, SlotlakeError } from '../errors.js';
import { lsnDistance, parseLsn, type Lsn } from '../lsn.js';
import { displayName, qualifiedName, quoteIdentifier, type TableName } from '../names.js';
import { connectClient, ReplicationConnection, type ConnectionSettings } from './connection.js';

export interface SlotState {
  readonly name: string;
  readonly plugin: string;
  readonly slotType: string;
  readonly database: string;
  readonly active: boolean;
  readonly activePid: number | null;
  readonly confirmedFlushLsn: Lsn | null;
  readonly restartLsn: Lsn | null;
  readonly walStatus: string | null;
  readonly safeWalSize: number | null;
  readonly currentWalLsn: Lsn;
  /** `pg_current_wal_lsn() - confirmed_flush_lsn`. */
  readonly lagBytes: number;
  /** `pg_current_wal_lsn() - restart_lsn`: WAL the slot keeps on disk. */
  readonly retainedWalBytes: number;
}

/** A connected ordinary client (callers end it). */
export async function openSourceClient(
  settings: ConnectionSettings,
  signal?: AbortSignal,
): Promise<pg.Client> {
  return connectClient(settings, false, 'connecting to postgres', signal);
}

/**
 * The run's ordinary connection to the source, across replication reconnects. A dropped connection (a proxy or
 * failover cutting every session) breaks this one too, and node-postgres never reuses a broken client: before
 * streaming again, `ensureOpen()` checks it with a round trip and opens a new one if it is gone. The catalog
 * and the checks always query through `client`, the current connection.
 */
export class SourceLink {
  private current: pg.Client;

  constructor(
    client: pg.Client,
    private readonly reopen: () => Promise<pg.Client>,
  ) {
    this.current = client;
  }

  get client(): pg.Client {
    return this.current;
  }

  /** Opens a new connection when the current one no longer answers. */
  async ensureOpen(): Promise<void> {
    const alive = await this.current.query('SELECT 1').then(
      () => true,
      () => false,
    );
    if (alive) return;
    await this.current.end().catch(() => undefined);
    this.current = await this.reopen();
  }

  async end(): Promise<void> {
    await this.current.end().catch(() => undefined);
  }
}

export async function withSourceClient<T>(
  settings: ConnectionSettings,
  use: (client: pg.Client) => Promise<T>,
): Promise<T> {
  const client = await openSourceClient(settings);
  try {
    return await use(client);
  } catch (error) {
    throw classify(error, { origin: 'source', what: 'postgres' });
  } finally {
    await client.end().catch(() => undefined);
  }
}

export async function readSlot(client: pg.Client, slot: string): Promise<SlotState | null> {
  const result = await client.query(
    `SELECT slot_name, plugin, slot_type, database, active, active_pid,
            confirmed_flush_lsn::text AS confirmed_flush_lsn, restart_lsn::text AS restart_lsn,
            wal_status, safe_wal_size::text AS safe_wal_size, pg_current_wal_lsn()::text AS current_wal_lsn
       FROM pg_replication_slots WHERE slot_name = $1`,
    [slot],
  );
  const row = result.rows[0] as
    | {
        slot_name: string;
        plugin: string | null;
        slot_type: string;
        database: string | null;
        active: boolean;
        active_pid: number | null;
        confirmed_flush_lsn: string | null;
        restart_lsn: string | null;
        wal_status: string | null;
        safe_wal_size: string | null;
        current_wal_lsn: string;
      }
    | undefined;
  if (!row) return null;
  const current = parseLsn(row.current_wal_lsn);
  const confirmed = row.confirmed_flush_lsn ? parseLsn(row.confirmed_flush_lsn) : null;
  const restart = row.restart_lsn ? parseLsn(row.restart_lsn) : null;
  return {
    name: row.slot_name,
    plugin: row.plugin ?? '',
    slotType: row.slot_type,
    database: row.database ?? '',
    active: row.active,
    activePid: row.active_pid,
    confirmedFlushLsn: confirmed,
    restartLsn: restart,
    walStatus: row.wal_status,
    safeWalSize: row.safe_wal_size === null ? null : Number(row.safe_wal_size),
    currentWalLsn: current,
    lagBytes: confirmed ? Number(lsnDistance(current, confirmed)) : 0,
    retainedWalBytes: restart ? Number(lsnDistance(current, restart)) : 0,
  };
}

function walLevelError(walLevel: string): SlotlakeError {
  return new SlotlakeError(`wal_level is ${walLevel}, logical decoding needs wal_level = logical`, {
    kind: 'source-wal-level',
    hint: 'set wal_level = logical (on RDS/Aurora: rds.logical_replication = 1 in the parameter group) and restart the server',
  });
}

/** Logical decoding needs wal_level = logical. */
async function assertLogicalWalLevel(client: pg.Client): Promise<void> {
  const walLevel = (await client.query('SHOW wal_level')).rows[0] as { wal_level: string };
  if (walLevel.wal_level !== 'logical') throw walLevelError(walLevel.wal_level);
}

/**
 * What a run's checks need from the server besides the slot, read in one query: none of it changes while a
 * run holds the pipeline, so it may be read before the lease (the slot's state is read under it).
 */
export interface SourceFacts {
  readonly walLevel: string;
  readonly database: string;
  /** Whether the pipeline's publication exists (checked for pgoutput only). */
  readonly publicationExists: boolean;
  /** `wal_sender_timeout`; 0 when disabled or unknown. */
  readonly walSenderTimeoutMs: number;
  /** `max_slot_wal_keep_size`; undefined when unlimited (-1) or unknown. */
  readonly maxSlotWalKeepSizeBytes: number | undefined;
}

export async function readSourceFacts(client: pg.Client, publication: string): Promise<SourceFacts> {
  const result = await client.query(
    `SELECT current_setting('wal_level') AS wal_level, current_database() AS database,
            EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1) AS publication_exists,
            (SELECT setting FROM pg_settings WHERE name = 'wal_sender_timeout') AS wal_sender_timeout,
            (SELECT unit FROM pg_settings WHERE name = 'wal_sender_timeout') AS wal_sender_timeout_unit,
            (SELECT setting FROM pg_settings WHERE name = 'max_slot_wal_keep_size') AS max_slot_wal_keep_size`,
    [publication],
  );
  const row = result.rows[0] as {
    wal_level: string;
    database: string;
    publication_exists: boolean;
    wal_sender_timeout: string | null;
    wal_sender_timeout_unit: string | null;
    max_slot_wal_keep_size: string | null;
  };
  const timeout = Number(row.wal_sender_timeout ?? 0);
  const keep = Number(row.max_slot_wal_keep_size ?? -1); // MB
  return {
    walLevel: row.wal_level,
    database: row.database,
    publicationExists: row.publication_exists,
    walSenderTimeoutMs: Number.isFinite(timeout)
      ? timeout * (row.wal_sender_timeout_unit === 's' ? 1000 : 1)
      : 0,
    maxSlotWalKeepSizeBytes: Number.isFinite(keep) && keep >= 0 ? keep * 1024 * 1024 : undefined,
  };
}

/**
 * The checks before a run streams — wal_level, the slot (exists, logical, this plugin and database, not
 * invalidated), the publication — in that order, the first failure thrown. Returns the slot.
 */
export function assertSourceReady(
  facts: SourceFacts,
  slot: SlotState | null,
  want: { slot: string; publication: string; plugin: string },
): SlotState {
  if (facts.walLevel !== 'logical') throw walLevelError(facts.walLevel);
  if (!slot) {
    throw new SlotlakeError(`replication slot "${want.slot}" does not exist`, {
      kind: 'slot-missing',
      hint: 'run `slotlake setup` to create it, or set SLOTLAKE_SLOT to an existing logical slot',
    });
  }
  if (slot.slotType !== 'logical' || slot.plugin !== want.plugin || slot.database !== facts.database) {
    throw new SlotlakeError(
      `replication slot "${want.slot}" is a ${slot.slotType} slot for plugin "${slot.plugin}" in database "${slot.database}", ` +
        `but this pipeline needs a logical "${want.plugin}" slot in "${facts.database}"`,
      {
        kind: 'slot-invalid',
        hint: 'point SLOTLAKE_SLOT / SLOTLAKE_PLUGIN / the database at matching values',
      },
    );
  }
  if (slot.walStatus === 'lost') {
    throw new SlotlakeError(
      `replication slot "${want.slot}" was invalidated (wal_status = lost): WAL it needed is gone`,
      {
        kind: 'slot-invalid',
        hint: 'changes were lost on the server side: drop and recreate the slot (`slotlake setup`) and re-snapshot the tables; raise max_slot_wal_keep_size or run more often',
      },
    );
  }
  if (want.plugin === 'pgoutput' && !facts.publicationExists) {
    throw new SlotlakeError(`publication "${want.publication}" does not exist`, {
      kind: 'publication-missing',
      hint: 'run `slotlake setup` to create it, or set SLOTLAKE_PUBLICATION',
    });
  }
  return slot;
}

/** Checks wal_level, the slot and the publication before a run streams (two queries). */
export async function checkSource(
  client: pg.Client,
  want: { slot: string; publication: string; plugin: string },
): Promise<SlotState> {
  const facts = await readSourceFacts(client, want.publication);
  return assertSourceReady(facts, await readSlot(client, want.slot), want);
}

/**
 * Servers with `output_plugin_libraries` (newer minor releases) let REPLICATION roles use only the listed
 * output plugins. Returns an error naming the setting when `plugin` is not among them, undefined otherwise.
 */
export async function pluginNotAllowed(
  client: pg.Client,
  plugin: string,
): Promise<SlotlakeError | undefined> {
  const result = await client.query(`SELECT current_setting('output_plugin_libraries', true) AS libraries`);
  const libraries = (result.rows[0] as { libraries: string | null }).libraries;
  if (libraries === null || libraries === '') return undefined;
  const allowed = libraries.split(',').map((name) => name.trim().replace(/^"|"$/g, ''));
  if (allowed.includes(plugin)) return undefined;
  return new SlotlakeError(
    `the server does not allow the output plugin "${plugin}" for replication roles (output_plugin_libraries = '${libraries}')`,
    {
      kind: 'source-permission',
      origin: 'source',
      hint: `add ${plugin} to output_plugin_libraries in postgresql.conf (or the parameter group) and reload, or use SLOTLAKE_PLUGIN=pgoutput`,
    },
  );
}

export interface SetupResult {
  readonly publication: 'created' | 'exists' | 'not-needed';
  readonly slot: 'created' | 'exists';
  readonly slotLsn: Lsn | null;
  /** The slot's `failover` flag (PostgreSQL 17+); null on older servers, which have none. */
  readonly slotFailover: boolean | null;
}

export interface SetupWant {
  readonly slot: string;
  readonly publication: string;
  readonly plugin: string;
  /** The tables to publish; undefined = all tables. */
  readonly tables: readonly TableName[] | undefined;
  /** Create the slot with failover = true where the server supports it (PostgreSQL 17+). */
  readonly failover?: boolean;
}

/** PostgreSQL 17 added failover slots (synchronized to standbys with sync_replication_slots). */
const FAILOVER_SLOTS_SINCE = 170000;

async function serverVersionNum(client: pg.Client): Promise<number> {
  const row = (await client.query('SHOW server_version_num')).rows[0] as { server_version_num: string };
  return Number(row.server_version_num);
}

/** The slot's failover flag, or null before PostgreSQL 17. */
async function slotFailover(client: pg.Client, slot: string): Promise<boolean | null> {
  if ((await serverVersionNum(client)) < FAILOVER_SLOTS_SINCE) return null;
  const result = await client.query('SELECT failover FROM pg_replication_slots WHERE slot_name = $1', [slot]);
  return (result.rows[0] as { failover: boolean } | undefined)?.failover ?? null;
}

function sameTable(a: TableName, b: TableName): boolean {
  return a.schema === b.schema && a.table === b.table;
}

/** Every table of `wanted` that does not exist, by exact name. */
async function missingTables(client: pg.Client, wanted: readonly TableName[]): Promise<TableName[]> {
  const found = await client.query(
    `SELECT n.nspname AS schema, c.relname AS table
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('r', 'p') AND (n.nspname, c.relname) IN (SELECT * FROM unnest($1::text[], $2::text[]))`,
    [wanted.map((t) => t.schema), wanted.map((t) => t.table)],
  );
  const existing = found.rows as TableName[];
  return wanted.filter((want) => !existing.some((table) => sameTable(table, want)));
}

/**
 * An existing publication checked against what the pipeline wants: all tables, or exactly SLOTLAKE_TABLES.
 * Returns the differences, one phrase each (empty when it matches).
 */
async function publicationDifferences(
  client: pg.Client,
  publication: string,
  allTables: boolean,
  wanted: readonly TableName[] | undefined,
): Promise<string[]> {
  if (wanted === undefined) return allTables ? [] : ['it is not FOR ALL TABLES and SLOTLAKE_TABLES is unset'];
  if (allTables) return ['it is FOR ALL TABLES, SLOTLAKE_TABLES names only some'];
  const result = await client.query(
    'SELECT schemaname AS schema, tablename AS table FROM pg_publication_tables WHERE pubname = $1',
    [publication],
  );
  const published = result.rows as TableName[];
  const differences: string[] = [];
  const missing = wanted.filter((want) => !published.some((table) => sameTable(table, want)));
  const extra = published.filter((table) => !wanted.some((want) => sameTable(table, want)));
  if (missing.length > 0) differences.push(`it lacks ${missing.map(displayName).join(', ')}`);
  if (extra.length > 0) differences.push(`it also publishes ${extra.map(displayName).join(', ')}`);
  return differences;
}

/** How an existing slot differs from what the pipeline needs, one phrase each (empty when it matches). */
function slotDifferences(slot: SlotState, want: SetupWant, database: string): string[] {
  const differences: string[] = [];
  if (slot.slotType !== 'logical') differences.push(`it is a ${slot.slotType} slot, not logical`);
  else if (slot.plugin !== want.plugin)
    differences.push(`its plugin is ${slot.plugin}, SLOTLAKE_PLUGIN is ${want.plugin}`);
  if (slot.slotType === 'logical' && slot.database !== database)
    differences.push(`it belongs to database ${slot.database}, this connection is to ${database}`);
  return differences;
}

/**
 * Creates the publication and the slot when missing; checks them when present (tables, plugin, database),
 * and says what differs instead of changing anything. Everything is checked before anything is created, so a
 * setup that fails leaves the database as it found it. The publication is created before the slot: pgoutput
 * reads it as of each change's position, so it must exist before the slot's first one.
 */
export async function setupSource(settings: ConnectionSettings, want: SetupWant): Promise<SetupResult> {
  const { publicationState, slotState, failoverSupported, existingSlotFailover } = await withSourceClient(
    settings,
    async (client) => {
      await assertLogicalWalLevel(client);
      const db = ((await client.query('SELECT current_database() AS db')).rows[0] as { db: string }).db;
      if (want.tables) {
        const missing = await missingTables(client, want.tables);
        if (missing.length > 0)
          throw new SlotlakeError(
            `table${missing.length > 1 ? 's' : ''} ${missing.map(displayName).join(', ')} (from SLOTLAKE_TABLES) do${missing.length > 1 ? '' : 'es'} not exist in database ${db}`,
            {
              kind: 'config',
              hint: 'fix SLOTLAKE_TABLES: a comma list of schema.table, names written as in SQL (quote mixed-case names: public."Orders")',
            },
          );
      }
      let publication: 'create' | 'exists' | 'not-needed' = 'not-needed';
      if (want.plugin === 'pgoutput') {
        const existing = await client.query('SELECT puballtables FROM pg_publication WHERE pubname = $1', [
          want.publication,
        ]);
        publication = existing.rowCount === 0 ? 'create' : 'exists';
        if (publication === 'exists') {
          const row = existing.rows[0] as { puballtables: boolean };
          const differences = await publicationDifferences(
            client,
            want.publication,
            row.puballtables,
            want.tables,
          );
          if (differences.length > 0)
            throw new SlotlakeError(
              `publication ${quoteIdentifier(want.publication)} exists but does not match this pipeline: ${differences.join('; ')}`,
              {
                kind: 'config',
                hint: 'setup checks an existing publication and changes nothing: fix SLOTLAKE_TABLES, or ALTER PUBLICATION to match, or choose another SLOTLAKE_PUBLICATION',
              },
            );
        }
      }
      const slot = await readSlot(client, want.slot);
      const differences = slot ? slotDifferences(slot, want, db) : [];
      if (differences.length > 0)
        throw new SlotlakeError(
          `replication slot "${want.slot}" exists but does not match this pipeline: ${differences.join('; ')}`,
          {
            kind: 'slot-invalid',
            hint: 'setup changes nothing that exists: choose another SLOTLAKE_SLOT, fix SLOTLAKE_PLUGIN or the database, or drop that slot',
          },
        );
      const failoverSupported = (await serverVersionNum(client)) >= FAILOVER_SLOTS_SINCE;
      if (publication === 'create') {
        if (want.tables) {
          await client.query(
            `CREATE PUBLICATION ${quoteIdentifier(want.publication)} FOR TABLE ${want.tables.map(qualifiedName).join(', ')}`,
          );
        } else {
          await client.query(`CREATE PUBLICATION ${quoteIdentifier(want.publication)} FOR ALL TABLES`);
        }
      }
      return {
        publicationState: publication === 'create' ? ('created' as const) : publication,
        slotState: slot,
        failoverSupported,
        existingSlotFailover: slot ? await slotFailover(client, want.slot) : null,
      };
    },
  );
  if (slotState)
    return {
      publication: publicationState,
      slot: 'exists',
      slotLsn: slotState.confirmedFlushLsn,
      slotFailover: existingSlotFailover,
    };
  const failover = (want.failover ?? true) && failoverSupported;
  const connection = await ReplicationConnection.open(settings);
  try {
    const consistentPoint = await connection.createSlot(want.slot, want.plugin, { failover });
    return {
      publication: publicationState,
      slot: 'created',
      slotLsn: consistentPoint,
      slotFailover: failoverSupported ? failover : null,
    };
  } catch (error) {
    const classified = classify(error, { origin: 'source', what: 'creating the replication slot' });
    if (classified.sqlState === '42501') {
      const refused = await withSourceClient(settings, (client) => pluginNotAllowed(client, want.plugin));
      if (refused) throw refused;
    }
    throw classified;
  } finally {
    await connection.close();
  }
}

/** The tables the pipeline archives: the publication's (pgoutput), or SLOTLAKE_TABLES, or every user table. */
export async function listPublishedTables(
  source: pg.Client,
  config: {
    readonly plugin: string;
    readonly publication: string;
    readonly tables: readonly TableName[] | undefined;
  },
): Promise<TableName[]> {
  try {
    if (config.plugin === 'pgoutput') {
      const result = await source.query(
        'SELECT schemaname AS schema, tablename AS table FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1, 2',
        [config.publication],
      );
      return result.rows as TableName[];
    }
    if (config.tables) return [...config.tables];
    const result = await source.query(
      `SELECT n.nspname AS schema, c.relname AS table FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
          AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
        ORDER BY 1, 2`,
    );
    return result.rows as TableName[];
  } catch (error) {
    throw classify(error, { origin: 'source', what: 'listing the published tables' });
  }
}
