/**
 * One error family for the whole tool.
 *
 * Every failure that leaves a module is a `SlotlakeError` with a `kind` (what went wrong, in operator
 * terms), a `retryable` flag (may the same step succeed if tried again soon?), a `hint` (what the operator
 * should do) and an `origin` (which system the failing call talked to: the source database, the object
 * store, the checkpoint store). The origin is set where the call is made — the caller knows whom it
 * called — and never guessed from a message: a bucket named `acme-postgres-lake` must not turn an S3
 * reset into "the Postgres connection dropped". `classify()` turns anything thrown — pg errors with
 * SQLSTATE codes, AWS SDK service errors, socket errors — into that shape by their types and codes; every
 * retry loop asks it and nothing else whether to try again.
 */

/** Which system a failing call talked to. */
export type ErrorOrigin = 'source' | 'object-store' | 'checkpoint-store';

export type ErrorKind =
  | 'config' // bad or unknown settings
  | 'source-unreachable' // cannot open a connection to Postgres
  | 'source-connection-lost' // the connection dropped mid-run
  | 'source-auth' // authentication failed
  | 'source-tls' // the server's certificate is not trusted, or does not name the host
  | 'source-permission' // role lacks REPLICATION / table privileges
  | 'source-wal-level' // wal_level is not logical
  | 'slot-missing'
  | 'slot-invalid' // slot of the wrong plugin/database, or invalidated (wal_status lost)
  | 'slot-in-use' // another process streams from the slot
  | 'slot-ahead' // slot and checkpoint disagree
  | 'publication-missing'
  | 'source-protocol' // the server sent something the protocol does not allow
  | 'decode' // a malformed pgoutput / wal2json message
  | 'bucket-missing'
  | 'checkpoint-table-missing'
  | 'aws-auth' // missing or invalid AWS credentials
  | 'access-denied' // IAM says no
  | 'aws-transient' // throttling, 5xx, timeouts
  | 'network' // a socket failed on a call whose origin was not given
  | 'checkpoint-conflict' // the checkpoint moved under us (another run)
  | 'lease-lost'
  | 'huge-row' // a row larger than the archive can hold in one record
  | 'flush-timeout' // the final flush could not finish before the deadline
  | 'source-changed' // the checkpoint was made on another database system, database or slot
  | 'aborted' // a call was cancelled by the run itself (deadline, fence)
  | 'internal';

export interface SlotlakeErrorOptions {
  kind: ErrorKind;
  retryable?: boolean;
  hint?: string;
  cause?: unknown;
  origin?: ErrorOrigin;
  /** The SQLSTATE of a Postgres error. */
  sqlState?: string;
}

export class SlotlakeError extends Error {
  override readonly name = 'SlotlakeError';
  readonly kind: ErrorKind;
  readonly retryable: boolean;
  readonly hint: string | undefined;
  /** The system the failing call talked to, when it talked to one. */
  readonly origin: ErrorOrigin | undefined;
  /** The SQLSTATE of a Postgres error, for call sites that refine it with what they know. */
  readonly sqlState: string | undefined;

  constructor(message: string, options: SlotlakeErrorOptions) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.kind = options.kind;
    this.retryable = options.retryable ?? false;
    this.hint = options.hint;
    this.origin = options.origin;
    this.sqlState = options.sqlState;
  }

  /** True for a dropped or failed connection to the source database (the one case a run reconnects for). */
  get isSourceConnectionLoss(): boolean {
    return this.kind === 'source-connection-lost' && this.origin === 'source';
  }

  /** The single human-readable line printed when a run fails. */
  toOperatorLine(): string {
    return this.hint ? `slotlake: ${this.message} — ${this.hint}` : `slotlake: ${this.message}`;
  }
}

/** Raised by the pure decoders for malformed or truncated input. */
export class DecodeError extends SlotlakeError {
  constructor(message: string) {
    super(message, {
      kind: 'decode',
      hint: 'the server sent a message slotlake cannot read; report it with the server version and plugin',
    });
  }
}

interface PgLikeError {
  code?: string;
  message?: string;
  severity?: string;
}

interface AwsLikeError {
  name?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number };
  $retryable?: { throttling?: boolean };
  Code?: string;
}

const NETWORK_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
  'ENOTFOUND',
  'ECONNABORTED',
]);

/**
 * Node's codes for a server certificate that fails verification: an untrusted chain, or a host name the
 * certificate does not name. Retrying cannot help; the fix is the CA bundle or the host name.
 */
const TLS_CHAIN_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'INVALID_CA',
]);
const TLS_HOST_CODES = new Set(['ERR_TLS_CERT_ALTNAME_INVALID', 'HOSTNAME_MISMATCH']);

const AWS_THROTTLING = new Set([
  'SlowDown',
  'Throttling',
  'ThrottlingException',
  'ProvisionedThroughputExceededException',
  'RequestLimitExceeded',
  'TooManyRequestsException',
  'RequestThrottled',
  'RequestTimeout',
  'RequestTimeoutException',
  'InternalError',
  'InternalServerError',
  'ServiceUnavailable',
  'TransactionInProgressException',
  'TransactionConflictException',
  'TimeoutError',
]);

function messageOf(error: unknown): string {
  if (error instanceof Error) return error.message;
  return String(error);
}

/** Where a failing call was made: whom it talked to, and what it was doing (for the message). */
export interface CallSite {
  readonly origin?: ErrorOrigin;
  readonly what?: string;
}

/**
 * Maps anything thrown to a SlotlakeError. Already-classified errors pass through unchanged.
 * `site.origin` says which system the call talked to; `site.what` names the step for the message.
 * Decisions are made on types and codes only (SQLSTATE, errno, AWS error name and status), never on text.
 */
export function classify(error: unknown, site: CallSite = {}): SlotlakeError {
  if (error instanceof SlotlakeError) return error;
  const origin = site.origin;
  const where = site.what ? `${site.what}: ` : '';
  const message = `${where}${messageOf(error)}`;
  const pg = error as PgLikeError;
  const aws = error as AwsLikeError;
  const code = typeof pg?.code === 'string' ? pg.code : undefined;

  // Socket errno codes before SQLSTATEs: EPIPE has a SQLSTATE's shape (5 upper-case characters).
  if (code && NETWORK_CODES.has(code)) {
    return new SlotlakeError(message, {
      kind:
        origin === 'source' ? 'source-connection-lost' : origin === undefined ? 'network' : 'aws-transient',
      retryable: true,
      cause: error,
      origin,
      hint:
        origin === 'source'
          ? 'the Postgres connection failed; slotlake reconnects from the checkpoint within the time budget'
          : 'a network connection failed; slotlake retries within the time budget',
    });
  }
  if (code && (TLS_CHAIN_CODES.has(code) || TLS_HOST_CODES.has(code))) {
    return new SlotlakeError(`${where}TLS verification of the server failed: ${messageOf(error)} (${code})`, {
      kind: 'source-tls',
      cause: error,
      origin: origin ?? 'source',
      hint: TLS_HOST_CODES.has(code)
        ? 'the server certificate does not name the host connected to: connect by the name in the certificate (on RDS/Aurora the instance or cluster endpoint, not an IP address or a CNAME), or set SLOTLAKE_TLS_MODE=verify-ca to check the chain only'
        : 'the server certificate is not signed by a trusted CA: set SLOTLAKE_TLS_CA to the PEM bundle of the CA that signed it (RDS/Aurora hosts use the RDS global bundle by default)',
    });
  }
  if (origin === 'source') {
    // pg reports server errors as DatabaseError with a SQLSTATE; anything else from a source call is the
    // connection itself failing (closed, terminated, reset, timed out).
    if (code && /^[0-9A-Z]{5}$/.test(code)) return classifyPg(code, message, error);
    return new SlotlakeError(message, {
      kind: 'source-connection-lost',
      retryable: true,
      cause: error,
      origin,
      hint: 'the Postgres connection dropped; the next attempt resumes from the checkpoint',
    });
  }
  const awsName = aws?.name ?? aws?.Code;
  if (awsName !== undefined && aws?.$metadata !== undefined) {
    return classifyAws(
      awsName,
      aws.$metadata.httpStatusCode,
      message,
      error,
      aws.$retryable?.throttling === true,
      origin,
    );
  }
  if (origin !== undefined && awsName === 'TimeoutError') {
    return new SlotlakeError(message, {
      kind: 'aws-transient',
      retryable: true,
      cause: error,
      origin,
      hint: 'an AWS request timed out; retried within the time budget',
    });
  }
  if (origin === undefined && code && /^[0-9A-Z]{5}$/.test(code)) return classifyPg(code, message, error);
  return new SlotlakeError(message, { kind: 'internal', cause: error, ...(origin ? { origin } : {}) });
}

function classifyPg(code: string, message: string, cause: unknown): SlotlakeError {
  const make = (kind: ErrorKind, hint: string, retryable = false) =>
    new SlotlakeError(message, { kind, hint, retryable, cause, origin: 'source', sqlState: code });
  if (code === '28P01' || code === '28000')
    return make(
      'source-auth',
      'check DATABASE_URL / PGUSER / PGPASSWORD (or the SLOTLAKE_DATABASE_SECRET value, or the IAM grant rds-db:connect for SLOTLAKE_DATABASE_IAM_AUTH) and pg_hba.conf',
    );
  if (code === '42501')
    return make(
      'source-permission',
      'the role needs the REPLICATION attribute (or rds_replication on RDS) and SELECT on the published tables',
    );
  if (code === '55006')
    return make('slot-in-use', 'another process is streaming from this slot; wait for it or stop it', true);
  // 42704 (undefined object) and 55000 (object not in prerequisite state) name no object by code: the call
  // sites that can meet them (START_REPLICATION, setup) check the catalog and raise the precise error.
  if (code === '3D000')
    return make('source-unreachable', 'the database does not exist; check DATABASE_URL / PGDATABASE');
  if (code.startsWith('08') || code === '57P01' || code === '57P02' || code === '57P03')
    return make(
      'source-connection-lost',
      'the Postgres connection failed; retried within the time budget',
      true,
    );
  if (code === '53300') return make('source-unreachable', 'too many connections on the server', true);
  if (code === '40001' || code === '40P01') return make('internal', 'a transient database conflict', true);
  return make('internal', `Postgres error ${code}`);
}

function classifyAws(
  name: string,
  status: number | undefined,
  message: string,
  cause: unknown,
  throttling: boolean,
  origin: ErrorOrigin | undefined,
): SlotlakeError {
  const make = (kind: ErrorKind, hint: string, retryable = false) =>
    new SlotlakeError(`${message} (${name}${status ? ` ${status}` : ''})`, {
      kind,
      hint,
      retryable,
      cause,
      ...(origin ? { origin } : {}),
    });
  if (name === 'NoSuchBucket')
    return make('bucket-missing', 'create the bucket (`slotlake setup`) or fix SLOTLAKE_BUCKET');
  if (name === 'ResourceNotFoundException')
    return make(
      'checkpoint-table-missing',
      'create the table (`slotlake setup`) or fix SLOTLAKE_CHECKPOINT_TABLE and AWS_REGION',
    );
  // Credentials before the 403 fallback: S3 answers InvalidAccessKeyId and SignatureDoesNotMatch with 403.
  if (
    name === 'InvalidAccessKeyId' ||
    name === 'SignatureDoesNotMatch' ||
    name === 'UnrecognizedClientException' ||
    name === 'CredentialsProviderError' ||
    name === 'ExpiredToken' ||
    name === 'ExpiredTokenException'
  )
    return make('aws-auth', 'check the AWS credentials and region');
  if (name === 'AccessDenied' || name === 'AccessDeniedException' || name === 'Forbidden' || status === 403)
    return make(
      'access-denied',
      origin === 'checkpoint-store'
        ? 'the IAM role lacks permission on the DynamoDB table; see serverless.yml for the policy'
        : 'the IAM role lacks permission on the bucket or table; see serverless.yml for the policy',
    );
  if (name === 'ConditionalCheckFailedException')
    return make('checkpoint-conflict', 'the checkpoint changed under this run: another run is active');
  if (throttling || AWS_THROTTLING.has(name) || (status !== undefined && status >= 500) || status === 429)
    return make('aws-transient', 'AWS is throttling or failing transiently; retried with backoff', true);
  return make('internal', `AWS error ${name}`);
}
