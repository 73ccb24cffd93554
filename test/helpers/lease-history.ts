/**
 * The pipeline lease as the checkpoint store saw it, for tests of overlapping runs: an HTTP proxy in front
 * of DynamoDB (http-fault-proxy.ts, buffering requests) through which every run of the test talks to the store.
 * The history is read off the wire — which conditional writes the store accepted (200) for which owner and
 * fence, and when, on the test's own clock — not from what the runs report about themselves.
 *
 * Each accepted UpdateItem on the pipeline's item is one of:
 * - an **acquisition**: it sets `leaseOwner` without requiring the lease (its fence: the old item's `fence`
 *   + 1, from the ALL_OLD response);
 * - a **write under the lease**: its condition carries the writer's owner and `:fence` (renew, intent,
 *   checkpoint, release).
 * Requests are concurrent, so the store's order is known only where the proxy saw one answer before the
 * next request: `a` was applied before `b` when `a.answeredAtMs < b.receivedAtMs` (b forwarded to the store). `assertLeaseExclusive`
 * checks what fencing promises under exactly that order: once an acquisition with fence F was applied, no
 * write under a lower fence is accepted any more, and fences of later acquisitions only grow.
 */
import assert from 'node:assert/strict';
import {
  dynamoBody,
  startHttpFaultProxy,
  type HttpFaultProxy,
  type RequestLog,
  type RequestMatcher,
} from './http-fault-proxy.js';

/** What an UpdateItem of the DynamoDB checkpoint store does, told from its update expression. */
export type StoreWriteKind = 'acquisition' | 'renewal' | 'intent' | 'clear-intent' | 'checkpoint' | 'release';

export function storeWriteKind(updateExpression: string): StoreWriteKind | undefined {
  if (/\blsnKey\s*=/.test(updateExpression)) return 'checkpoint';
  if (/\bleaseOwner\s*=\s*:owner\b/.test(updateExpression)) return 'acquisition';
  if (/^ADD intentKeys\b/.test(updateExpression)) return 'intent';
  if (/^REMOVE intentKeys$/.test(updateExpression)) return 'clear-intent';
  if (/^SET leaseExpiresAt = :expires$/.test(updateExpression)) return 'renewal';
  if (/\bREMOVE leaseOwner\b|:expireAt\b|uploadBytesPerMs/.test(updateExpression)) return 'release';
  return undefined;
}

/**
 * Matches the checkpoint store's UpdateItem of one kind (for a proxy started with `bufferRequests`, which
 * reads bodies before matching).
 */
export function isStoreWrite(kind: StoreWriteKind): RequestMatcher {
  return (request) => {
    if (request.headers['x-amz-target'] !== 'DynamoDB_20120810.UpdateItem') return false;
    if (request.body === undefined) throw new Error('isStoreWrite needs a proxy started with bufferRequests');
    return storeWriteKind(dynamoBody(request)?.UpdateExpression ?? '') === kind;
  };
}

export interface StoreWrite {
  readonly kind: 'acquisition' | 'under-lease';
  /** What the write did (undefined: an update this module does not know). */
  readonly what: StoreWriteKind | undefined;
  readonly owner: string;
  readonly fence: number;
  /** When the proxy sent the request on to the store (the write was applied after this). */
  readonly receivedAtMs: number;
  /** When the store's answer reached the proxy (the write was applied before this). */
  readonly answeredAtMs: number;
  readonly updateExpression: string;
  /** The expiry this write set (`:expires` of an acquisition or renewal, `:expireAt` of a release). */
  readonly expiresAtMs: number | undefined;
  /** The time an acquisition said it was (`:now`, on the acquiring run's clock). */
  readonly nowMs: number | undefined;
}

export interface LeaseObserver {
  /** `env` with DynamoDB reached through the observer. */
  env(env: Record<string, string>): Record<string, string>;
  /** The writes the store accepted on `pipeline`'s item so far, in the order the proxy received them. */
  writes(pipeline: string): StoreWrite[];
  /** Owners that sent at least one request about `pipeline` (accepted or not). */
  owners(pipeline: string): Set<string>;
  stop(): Promise<void>;
}

interface UpdateItemBody {
  Key?: { pk?: { S?: string } };
  UpdateExpression?: string;
  ExpressionAttributeValues?: Record<string, { S?: string; N?: string }>;
}

function parseUpdate(entry: RequestLog): UpdateItemBody | undefined {
  if (entry.target !== 'DynamoDB_20120810.UpdateItem' || entry.body === undefined) return undefined;
  return JSON.parse(entry.body.toString('utf8')) as UpdateItemBody;
}

export async function startLeaseObserver(dynamoEndpoint: string): Promise<LeaseObserver> {
  const proxy: HttpFaultProxy = await startHttpFaultProxy({ target: dynamoEndpoint, bufferRequests: true });
  const about = (pipeline: string) =>
    proxy
      .requests()
      .map((entry) => ({ entry, body: parseUpdate(entry) }))
      .filter(({ body }) => body?.Key?.pk?.S === pipeline);
  return {
    env: (env) => ({ ...env, AWS_ENDPOINT_URL_DYNAMODB: proxy.endpoint }),
    writes(pipeline) {
      const writes: StoreWrite[] = [];
      for (const { entry, body } of about(pipeline)) {
        // answered: the store itself answered (never an injected status), so the write took effect
        if (entry.status !== 200 || entry.forwarded === undefined || entry.answered === undefined || !body)
          continue;
        const values = body.ExpressionAttributeValues ?? {};
        const owner = values[':owner']?.S;
        const expression = body.UpdateExpression ?? '';
        if (owner === undefined) continue;
        const number = (name: string) => (values[name]?.N === undefined ? undefined : Number(values[name].N));
        const common = {
          what: storeWriteKind(expression),
          expiresAtMs: number(':expires') ?? number(':expireAt'),
          nowMs: number(':now'),
          owner,
          receivedAtMs: entry.forwarded.atMs,
          answeredAtMs: entry.answered.atMs,
          updateExpression: expression,
        };
        if (values[':fence']?.N !== undefined) {
          writes.push({ kind: 'under-lease', fence: Number(values[':fence'].N), ...common });
        } else if (/\bleaseOwner\s*=\s*:owner\b/.test(expression)) {
          assert.ok(entry.responseBody !== undefined, 'the acquisition answer was recorded');
          const old = (JSON.parse(entry.responseBody) as { Attributes?: { fence?: { N?: string } } })
            .Attributes;
          writes.push({ kind: 'acquisition', fence: Number(old?.fence?.N ?? '0') + 1, ...common });
        }
      }
      return writes;
    },
    owners(pipeline) {
      const owners = new Set<string>();
      for (const { body } of about(pipeline)) {
        const owner = body?.ExpressionAttributeValues?.[':owner']?.S;
        if (owner !== undefined) owners.add(owner);
      }
      return owners;
    },
    stop: () => proxy.stop(),
  };
}

/**
 * Fencing, as the store applied it: after an acquisition with fence F was applied, the store accepted no
 * write under a lower fence; an acquisition applied after another has a higher fence; every write under
 * the lease uses the fence its owner acquired; and no run acquired a lease another run held — unreleased
 * and, by the latest expiry the store had accepted for it, not yet expired at the acquiring run's `:now`
 * (checked where the order is certain). Returns the acquisitions in order.
 */
export function assertLeaseExclusive(writes: readonly StoreWrite[]): StoreWrite[] {
  const acquisitions = writes.filter((write) => write.kind === 'acquisition');
  const acquired = new Map(acquisitions.map((a) => [`${a.owner}#${a.fence}`, a]));
  const describe = (w: StoreWrite) =>
    `${w.what ?? w.kind} by ${w.owner} (fence ${w.fence}) ` +
    `at ${w.receivedAtMs.toFixed(0)}–${w.answeredAtMs.toFixed(0)} ms`;
  for (const write of writes) {
    if (write.kind === 'under-lease')
      assert.ok(
        acquired.has(`${write.owner}#${write.fence}`),
        `accepted a write under a fence its owner never acquired: ${describe(write)}`,
      );
    for (const acquisition of acquisitions) {
      if (acquisition.answeredAtMs >= write.receivedAtMs) continue; // not surely before
      assert.ok(
        write.fence >= acquisition.fence,
        `the store accepted a write of a fenced-off lease: ${describe(write)} after ${describe(acquisition)}`,
      );
      if (write.kind === 'acquisition')
        assert.ok(write.fence > acquisition.fence, `fences did not grow: ${describe(write)}`);
    }
  }
  for (const taking of acquisitions) {
    const surelyBefore = (w: StoreWrite) => w.answeredAtMs < taking.receivedAtMs;
    const earlier = acquisitions.filter((a) => a !== taking && surelyBefore(a));
    const previous = earlier.sort((a, b) => a.fence - b.fence).at(-1);
    if (!previous || previous.owner === taking.owner || taking.nowMs === undefined) continue;
    // an acquisition whose order against this one is unknown, or a release that may have come first: no claim
    if (
      acquisitions.some(
        (a) =>
          a !== taking &&
          !surelyBefore(a) &&
          a.answeredAtMs > previous.receivedAtMs &&
          a.receivedAtMs < taking.answeredAtMs,
      )
    )
      continue;
    const held = writes.filter((w) => w.owner === previous.owner && w.fence === previous.fence);
    if (held.some((w) => w.what === 'release' && w.receivedAtMs < taking.answeredAtMs)) continue;
    const expiry = Math.max(...held.filter(surelyBefore).map((w) => w.expiresAtMs ?? -Infinity));
    assert.ok(
      taking.nowMs > expiry,
      `the store let ${describe(taking)} take the lease at ${taking.nowMs} while ${describe(previous)} held it ` +
        `until ${expiry}`,
    );
  }
  return acquisitions;
}
