/**
 * classify(): anything thrown → a SlotlakeError with a kind, a retryable flag and an operator hint.
 * Errors are built the way the libraries build them: pg's DatabaseError has a SQLSTATE `code`; AWS SDK v3
 * service exceptions have a `name` and `$metadata.httpStatusCode`; Node socket errors have an errno `code`.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { classify, DecodeError, SlotlakeError, type CallSite, type ErrorKind } from '../../src/errors.js';
import { connectionClosedError } from '../../src/replication/connection.js';

function pgError(code: string, message: string): Error {
  return Object.assign(new Error(message), { code, severity: 'ERROR' });
}

function awsError(name: string, status: number | undefined, message = `${name} happened`): Error {
  const error = new Error(message);
  error.name = name;
  return Object.assign(error, {
    $fault: status !== undefined && status >= 500 ? 'server' : 'client',
    $metadata: status === undefined ? {} : { httpStatusCode: status, requestId: 'req-1', attempts: 1 },
  });
}

function socketError(code: string): Error {
  return Object.assign(new Error(`read ${code}`), { code, errno: -104, syscall: 'read' });
}

function expectKind(
  error: unknown,
  kind: ErrorKind,
  retryable: boolean,
  site: CallSite = { origin: 'source' },
): SlotlakeError {
  const classified = classify(error, site);
  assert.ok(classified instanceof SlotlakeError);
  assert.equal(classified.kind, kind, `${String(error)} → ${classified.kind}`);
  assert.equal(classified.retryable, retryable, `${String(error)} retryable`);
  assert.equal(classified.cause, error);
  return classified;
}

describe('Postgres errors by SQLSTATE', () => {
  it('authentication', () => {
    const error = expectKind(
      pgError('28P01', 'password authentication failed for user "app"'),
      'source-auth',
      false,
    );
    assert.match(error.hint ?? '', /DATABASE_URL/);
    expectKind(pgError('28000', 'no pg_hba.conf entry for host'), 'source-auth', false);
  });

  it('permission', () => {
    const error = expectKind(
      pgError('42501', 'permission denied to start WAL sender'),
      'source-permission',
      false,
    );
    assert.match(error.hint ?? '', /REPLICATION/);
  });

  it('slot in use is retryable', () => {
    expectKind(pgError('55006', 'replication slot "slotlake" is active for PID 4242'), 'slot-in-use', true);
  });

  it('42704 and 55000 name no object by code: never decided from the message text', () => {
    // The call sites that can meet them check the catalog and raise slot-missing, publication-missing,
    // source-wal-level or slot-invalid themselves; classify() does not read messages.
    for (const message of [
      'replication slot "slotlake" does not exist',
      'publication "slotlake" does not exist',
      'logical decoding requires wal_level >= logical',
      'can no longer get changes from replication slot "slotlake"',
    ]) {
      const code = message.includes('does not exist') ? '42704' : '55000';
      const error = expectKind(pgError(code, message), 'internal', false);
      assert.equal(error.origin, 'source');
    }
  });

  it('connection failures and shutdowns are retryable', () => {
    for (const code of ['08006', '08001', '08003', '57P01', '57P02', '57P03']) {
      expectKind(
        pgError(code, 'terminating connection due to administrator command'),
        'source-connection-lost',
        true,
      );
    }
    expectKind(pgError('53300', 'sorry, too many clients already'), 'source-unreachable', true);
    expectKind(pgError('40001', 'could not serialize access'), 'internal', true);
    expectKind(pgError('3D000', 'database "nope" does not exist'), 'source-unreachable', false);
  });

  it('other SQLSTATEs are internal and not retried, naming the code', () => {
    const error = expectKind(pgError('XX000', 'unexpected failure'), 'internal', false);
    assert.match(error.hint ?? '', /XX000/);
  });

  it('the context prefixes the message', () => {
    const error = classify(pgError('28P01', 'password authentication failed'), {
      origin: 'source',
      what: 'connecting to postgres',
    });
    assert.equal(error.message, 'connecting to postgres: password authentication failed');
  });
});

describe('AWS errors by name and status', () => {
  const s3: CallSite = { origin: 'object-store' };
  it('missing bucket and table', () => {
    expectKind(awsError('NoSuchBucket', 404), 'bucket-missing', false, s3);
    expectKind(awsError('ResourceNotFoundException', 400), 'checkpoint-table-missing', false, s3);
  });

  it('access denied', () => {
    expectKind(awsError('AccessDenied', 403), 'access-denied', false, s3);
    expectKind(awsError('AccessDeniedException', 400), 'access-denied', false, s3);
    expectKind(awsError('SomethingForbidden', 403), 'access-denied', false, s3);
  });

  it('bad credentials are aws-auth, also when S3 answers them with 403', () => {
    expectKind(awsError('InvalidAccessKeyId', 403), 'aws-auth', false, s3);
    expectKind(awsError('SignatureDoesNotMatch', 403), 'aws-auth', false, s3);
    expectKind(awsError('ExpiredToken', 400), 'aws-auth', false, s3);
    expectKind(awsError('UnrecognizedClientException', 400), 'aws-auth', false, s3);
    expectKind(awsError('InvalidAccessKeyId', undefined), 'aws-auth', false, s3);
  });

  it('throttling and server errors are retryable', () => {
    expectKind(awsError('SlowDown', 503), 'aws-transient', true, s3);
    expectKind(awsError('ProvisionedThroughputExceededException', 400), 'aws-transient', true, s3);
    expectKind(awsError('ThrottlingException', 400), 'aws-transient', true, s3);
    expectKind(awsError('InternalError', 500), 'aws-transient', true, s3);
    expectKind(awsError('SomeNewServerError', 502), 'aws-transient', true, s3);
    expectKind(awsError('TooManyRequests', 429), 'aws-transient', true, s3);
    const throttled = Object.assign(awsError('Whatever', 400), { $retryable: { throttling: true } });
    expectKind(throttled, 'aws-transient', true, s3);
  });

  it('a failed conditional write is a checkpoint conflict, not retried', () => {
    const error = expectKind(
      awsError('ConditionalCheckFailedException', 400, 'The conditional request failed'),
      'checkpoint-conflict',
      false,
      { origin: 'checkpoint-store' },
    );
    assert.match(error.hint ?? '', /another run/);
  });

  it('a plain object with the same shape is classified too', () => {
    const error = classify(
      { name: 'SlowDown', message: 'Please reduce your request rate', $metadata: { httpStatusCode: 503 } },
      s3,
    );
    assert.equal(error.kind, 'aws-transient');
    assert.equal(error.retryable, true);
    assert.match(error.message, /Please reduce your request rate|SlowDown/);
  });

  it('the message names the error and the status', () => {
    const error = classify(awsError('NoSuchBucket', 404, 'The specified bucket does not exist'), {
      origin: 'object-store',
      what: 'uploading s3://b/k',
    });
    assert.equal(error.message, 'uploading s3://b/k: The specified bucket does not exist (NoSuchBucket 404)');
  });

  it('other client errors are internal, not retried', () => {
    expectKind(awsError('ValidationException', 400), 'internal', false, s3);
  });
});

describe('socket errors', () => {
  it("are retryable: connection lost towards Postgres, transient towards AWS, by the call site's origin", () => {
    for (const code of ['ECONNRESET', 'ECONNREFUSED', 'ETIMEDOUT', 'EPIPE', 'EAI_AGAIN', 'ENOTFOUND']) {
      const source = expectKind(socketError(code), 'source-connection-lost', true, { origin: 'source' });
      assert.ok(source.isSourceConnectionLoss);
      for (const origin of ['object-store', 'checkpoint-store'] as const) {
        const aws = expectKind(socketError(code), 'aws-transient', true, { origin });
        assert.equal(aws.origin, origin);
        assert.equal(aws.isSourceConnectionLoss, false);
      }
      const unknown = expectKind(socketError(code), 'network', true, {});
      assert.equal(unknown.isSourceConnectionLoss, false);
    }
  });

  it('a name holding "postgres" never turns an S3 or DynamoDB reset into a source connection loss', () => {
    for (const what of [
      'uploading s3://acme-postgres-lake/postgres/data/x.jsonl.gz',
      'writing the checkpoint to DynamoDB table postgres-checkpoints',
      'connection terminated: postgres',
    ]) {
      const error = classify(socketError('ECONNRESET'), { origin: 'object-store', what });
      assert.equal(error.kind, 'aws-transient');
      assert.equal(error.isSourceConnectionLoss, false);
      const terminated = classify(new Error('Connection terminated unexpectedly'), {
        origin: 'checkpoint-store',
        what,
      });
      assert.equal(terminated.isSourceConnectionLoss, false);
    }
  });

  it('a source call that fails without a SQLSTATE is the connection failing', () => {
    expectKind(new Error('Connection terminated unexpectedly'), 'source-connection-lost', true);
    expectKind(new Error('socket hang up'), 'source-connection-lost', true);
    // the same text from anywhere else is not
    expectKind(new Error('Connection terminated unexpectedly'), 'internal', false, {});
  });
});

describe('a replication connection that ended', () => {
  it('is a source connection loss, which the run reconnects for — like the failed query that may report it first', () => {
    const ended = connectionClosedError();
    assert.equal(ended.isSourceConnectionLoss, true);
    const failedQuery = classify(Object.assign(new Error('Connection terminated unexpectedly'), {}), {
      origin: 'source',
      what: 'postgres replication stream',
    });
    assert.equal(failedQuery.isSourceConnectionLoss, true);
    assert.equal(ended.retryable, failedQuery.retryable);
  });
});

describe('everything else', () => {
  it('unknown errors are internal and not retried', () => {
    expectKind(new TypeError('x is not a function'), 'internal', false, {});
    expectKind(new Error('boom'), 'internal', false, {});
    const fromString = classify('just a string');
    assert.equal(fromString.kind, 'internal');
    assert.equal(fromString.retryable, false);
    assert.equal(fromString.message, 'just a string');
    assert.equal(classify(undefined).kind, 'internal');
    assert.equal(classify(null).kind, 'internal');
  });

  it('a SlotlakeError passes through unchanged', () => {
    const original = new SlotlakeError('lease lost', { kind: 'lease-lost', retryable: false, hint: 'h' });
    assert.equal(classify(original, { origin: 'source', what: 'some step' }), original);
    assert.equal(original.message, 'lease lost');
    const decode = new DecodeError('short message');
    assert.equal(classify(decode), decode);
    assert.equal(decode.kind, 'decode');
  });
});

describe('toOperatorLine', () => {
  it('holds the message and the hint', () => {
    const error = classify(awsError('NoSuchBucket', 404, 'The specified bucket does not exist'), {
      origin: 'object-store',
      what: 'checking bucket',
    });
    const line = error.toOperatorLine();
    assert.ok(line.startsWith('slotlake: '), line);
    assert.ok(line.includes(error.message), line);
    assert.ok(error.hint && line.includes(error.hint), line);
    assert.ok(!line.includes('\n'));
  });

  it('without a hint it is the message alone', () => {
    assert.equal(new SlotlakeError('boom', { kind: 'internal' }).toOperatorLine(), 'slotlake: boom');
  });
});
