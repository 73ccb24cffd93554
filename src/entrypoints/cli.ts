/**
 * The `slotlake` command line: run, status, setup, snapshot, verify, schema, dev (contract §1).
 *
 * stdout carries exactly one JSON object per command (for `run`, the run summary, last line), except `schema`,
 * which prints SQL (or, with `--format json`, one JSON document); logs are JSON lines on stderr. Exit 0 for every clean stop; on failure, non-zero and one human-readable line on stderr
 * saying what is wrong and what to do.
 */
import '../support/heap.js'; // first: sets how the heap grows before anything allocates
import { Command, InvalidArgumentError, Option } from 'commander';
import { loadConfig, parseDuration, type Config } from '../config.js';
import { classify, SlotlakeError } from '../errors.js';
import { createLogger } from '../log.js';
import { Deadline, systemClock } from '../support/deadline.js';
import {
  performRun,
  performSetup,
  performVerify,
  printableSchema,
  readStatus,
  requestSnapshot,
} from './app.js';
import { parseTableList, type TableName } from '../names.js';

/** When the process started, on the one clock: budgets count from here. */
const processStartMs = systemClock.nowMs() - process.uptime() * 1000;

function durationArgument(text: string): number {
  try {
    return parseDuration(text);
  } catch (error) {
    throw new InvalidArgumentError((error as Error).message);
  }
}

function fail(error: unknown): never {
  const classified = classify(error);
  process.stderr.write(`${classified.toOperatorLine()}\n`);
  if (process.env.SLOTLAKE_DEBUG_STACK) process.stderr.write(`${(error as Error)?.stack ?? ''}\n`);
  process.exit(classified.kind === 'config' ? 2 : 1);
}

function config(requireStorage = true): Config {
  return loadConfig(process.env, { requireStorage });
}

// Anything that escapes (a bug, or a library's background promise) still ends in one clear line.
process.on('unhandledRejection', (reason) => fail(reason));
process.on('uncaughtException', (error) => fail(error));

/** `--table` values: SQL-written names, each possibly a comma list. */
function tableOptions(values: string[] | undefined): TableName[] | undefined {
  try {
    return values?.flatMap((text) => parseTableList(text));
  } catch (error) {
    throw new SlotlakeError(`--table: ${(error as Error).message}`, {
      kind: 'config',
      hint: 'name tables as schema.table, written as in SQL (quote mixed-case names: public."Orders")',
    });
  }
}

const program = new Command();
program.name('slotlake').description('Archive a PostgreSQL logical replication slot into an S3 data lake.');

program
  .command('run')
  .description('one time-bounded run: resume from the checkpoint, archive, checkpoint, acknowledge')
  .option(
    '--max-duration <duration>',
    'time budget, e.g. 30s or 5m (plays Lambda remaining time)',
    durationArgument,
  )
  .option('--until-caught-up', 'stop once everything written before the run started is archived')
  .action(async (options: { maxDuration?: number; untilCaughtUp?: boolean }) => {
    const settings = config();
    const logger = createLogger(settings.logLevel, { pipeline: settings.pipeline });
    const deadline =
      options.maxDuration === undefined
        ? new Deadline(Number.POSITIVE_INFINITY, 0)
        : new Deadline(
            processStartMs + options.maxDuration,
            Math.min(settings.safetyMarginMs, options.maxDuration / 4),
          );
    const stop = new AbortController();
    const onSignal = (signal: string) => {
      if (stop.signal.aborted) process.exit(130); // second signal: give up draining
      logger.info('stopping on signal; draining', { signal });
      stop.abort();
    };
    process.on('SIGINT', () => onSignal('SIGINT'));
    process.on('SIGTERM', () => onSignal('SIGTERM'));
    logger.debug('cli ready', { sinceProcessStartMs: Math.round(systemClock.nowMs() - processStartMs) });
    const summary = await performRun({
      config: settings,
      logger,
      deadline,
      untilCaughtUp: options.untilCaughtUp === true,
      stopSignal: stop.signal,
    });
    deadline.dispose();
    process.stdout.write(`${JSON.stringify(summary)}\n`);
  });

program
  .command('status')
  .description('print the checkpoint and the slot state as JSON (read-only)')
  .action(async () => {
    const report = await readStatus(config());
    process.stdout.write(`${JSON.stringify(report)}\n`);
  });

program
  .command('snapshot')
  .description(
    "request a (re-)snapshot: the next runs archive the tables' current rows as op r records, chunk by chunk",
  )
  .option(
    '--table <schema.table>',
    'a table to snapshot, written as in SQL (repeatable; default: every published table)',
    (value: string, previous: string[] = []) => [...previous, value],
  )
  .action(async (options: { table?: string[] }) => {
    const settings = config();
    const report = await requestSnapshot(settings, tableOptions(options.table));
    process.stdout.write(`${JSON.stringify(report)}\n`);
  });

program
  .command('verify')
  .description(
    'compare each table rebuilt from the archive with the table in the source; one JSON object per table, exit 1 on divergence',
  )
  .option(
    '--table <schema.table>',
    'a table to verify, written as in SQL (repeatable; default: every published table)',
    (value: string, previous: string[] = []) => [...previous, value],
  )
  .option(
    '--wait <duration>',
    'how long to wait for a run holding the pipeline lease',
    durationArgument,
    120_000,
  )
  .action(async (options: { table?: string[]; wait: number }) => {
    const settings = config();
    const logger = createLogger(settings.logLevel, { pipeline: settings.pipeline, command: 'verify' });
    const reports = await performVerify({
      config: settings,
      logger,
      tables: tableOptions(options.table),
      leaseWaitMs: options.wait,
    });
    for (const report of reports) process.stdout.write(`${JSON.stringify(report)}\n`);
    const { isDivergent } = await import('../verify/verify.js');
    const divergent = reports.filter(isDivergent);
    if (divergent.length > 0) {
      const what = divergent.map(
        (report) =>
          `${report.table} (${report.differing} differing, ${report.missing} missing, ${report.extra} extra, ${report.problems.length} problem${report.problems.length === 1 ? '' : 's'})`,
      );
      process.stderr.write(
        `slotlake: the archive diverges from the source: ${what.join('; ')} — the JSON report on stdout names the keys and objects\n`,
      );
      process.exitCode = 1;
    }
  });

program
  .command('setup')
  .description('create what is missing: publication, replication slot, checkpoint table, bucket (idempotent)')
  .action(async () => {
    const report = await performSetup(config());
    process.stdout.write(`${JSON.stringify(report)}\n`);
  });

function tableArgument(text: string, previous: TableName[] = []): TableName[] {
  try {
    return [...previous, ...parseTableList(text)];
  } catch (error) {
    throw new InvalidArgumentError((error as Error).message);
  }
}

program
  .command('schema')
  .description(
    'print what reads the archive: DuckDB views, Athena/Glue tables and views, per table (from the manifests)',
  )
  .addOption(
    new Option('--format <format>', 'duckdb, athena or json')
      .choices(['duckdb', 'athena', 'json'])
      .default('duckdb'),
  )
  .option(
    '--location <uri-or-dir>',
    'where the DuckDB views read data/ from: s3://bucket/prefix/ (default: the archive) or a local copy',
  )
  .option(
    '--athena-database <name>',
    'Glue database of the Athena statements',
    (text: string) => {
      if (!/^[a-z0-9_]{1,255}$/.test(text))
        throw new InvalidArgumentError('lower-case letters, digits and _ only');
      return text;
    },
    'slotlake',
  )
  .option('--table <schema.table>', 'only this table (repeatable; names as in SQL)', tableArgument)
  .action(
    async (options: {
      format: 'duckdb' | 'athena' | 'json';
      location?: string;
      athenaDatabase: string;
      table?: TableName[];
    }) => {
      const settings = config(false);
      if (settings.bucket === '')
        throw new SlotlakeError(
          'invalid configuration: SLOTLAKE_BUCKET is required (the S3 bucket of the archive)',
          {
            kind: 'config',
            hint: 'set SLOTLAKE_BUCKET (and SLOTLAKE_PREFIX) to the archive to describe',
          },
        );
      const text = await printableSchema(settings, {
        format: options.format,
        athenaDatabase: options.athenaDatabase,
        ...(options.location !== undefined ? { location: options.location } : {}),
        ...(options.table ? { tables: options.table } : {}),
      });
      process.stdout.write(text);
    },
  );

program
  .command('dev')
  .description('local Postgres + S3 + DynamoDB, a demo workload, and repeated runs with live progress')
  .option('--runs <n>', 'stop after this many runs (default: until Ctrl-C)', (text) => Number(text))
  .option('--run-duration <duration>', 'budget of each run', durationArgument, 10_000)
  .option('--dir <path>', 'where the local stack keeps its data', '.slotlake/dev')
  .action(async (options: { runs?: number; runDuration: number; dir: string }) => {
    const { runDev } = await import('../devstack/dev.js');
    await runDev(options);
  });

program.parseAsync(process.argv).catch(fail);
