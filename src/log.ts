/**
 * Structured logs: JSON lines on stderr through Powertools Logger.
 *
 * The rule: logs carry table names, counts, sizes, durations and LSNs — never row values, never secrets.
 * stdout is reserved for the run summary (the last line the CLI prints).
 */
import { Console } from 'node:console';
import { Logger } from '@aws-lambda-powertools/logger';

export type { Logger };

export function createLogger(
  level: 'DEBUG' | 'INFO' | 'WARN' | 'ERROR' = 'INFO',
  persistent: Record<string, unknown> = {},
): Logger {
  const logger = new Logger({
    serviceName: 'slotlake',
    logLevel: level,
    persistentKeys: persistent,
  });
  // Outside Lambda, write every level to stderr so stdout stays the summary's.
  if (!process.env.AWS_LAMBDA_FUNCTION_NAME) {
    (logger as unknown as { console: Console }).console = new Console({
      stdout: process.stderr,
      stderr: process.stderr,
    });
  }
  return logger;
}
