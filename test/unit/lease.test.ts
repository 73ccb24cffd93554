/**
 * The lease keeper (runtime/lease.ts): the lease is surely this run's until its fence (expiry minus a margin,
 * on this process's clock); past it, or once a renewal is refused, the keeper aborts its signal and every
 * write must stop. Most tests move a manual clock by hand and call `renew()` themselves; the ones about the
 * keeper's own timers (renewing, a renewal that hangs, release during one) use the real clock with leases of
 * two or three seconds and wait on conditions, never on elapsed time.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Logger } from '@aws-lambda-powertools/logger';
import { MemoryCheckpointStore } from '../../src/checkpoint/memory.js';
import type { Lease } from '../../src/checkpoint/store.js';
import { SlotlakeError } from '../../src/errors.js';
import { fenceMarginMs, LeaseKeeper } from '../../src/runtime/lease.js';
import { systemClock, type Clock } from '../../src/support/deadline.js';

const LEASE_MS = 60_000;
const MARGIN_MS = 10_000; // a sixth of 60 s
const START_MS = 1_700_000_000_000;

class ManualClock implements Clock {
  constructor(public now = START_MS) {}
  nowMs(): number {
    return this.now;
  }
}

const silent = new Logger({ serviceName: 'slotlake-test', logLevel: 'SILENT' });

/** A store whose renewals can be made to fail (transiently or for good) or hang, counting the calls. */
class ControlledStore extends MemoryCheckpointStore {
  renewCalls = 0;
  /** Errors to throw from the next renewals, in order (then renewals work again). */
  failures: unknown[] = [];
  /** When set, renewals never settle (they ignore their abort signal too). */
  hang = false;

  override async renew(
    lease: Lease,
    durationMs: number,
    nowMs: number,
    signal?: AbortSignal,
  ): Promise<Lease> {
    this.renewCalls++;
    if (this.hang) return new Promise<Lease>(() => undefined);
    const failure = this.failures.shift();
    if (failure !== undefined) throw failure;
    return super.renew(lease, durationMs, nowMs, signal);
  }
}

async function keeperOn(
  clock: Clock,
  durationMs = LEASE_MS,
): Promise<{ store: ControlledStore; keeper: LeaseKeeper; lost: SlotlakeError[] }> {
  const store = new ControlledStore();
  const acquisition = await store.acquire('run-a', durationMs, clock.nowMs());
  assert.ok(acquisition.acquired);
  const lost: SlotlakeError[] = [];
  const keeper = new LeaseKeeper(acquisition.lease, store, durationMs, clock, silent, (error) =>
    lost.push(error),
  );
  return { store, keeper, lost };
}

/** The keeper is fenced: not held, signal aborted with a lease-lost error, assertHeld throws that error. */
function assertFenced(keeper: LeaseKeeper, lost: readonly SlotlakeError[]): SlotlakeError {
  assert.equal(keeper.held, false);
  assert.equal(keeper.signal.aborted, true);
  const reason = keeper.signal.reason as unknown;
  assert.ok(reason instanceof SlotlakeError, `the signal's reason is a SlotlakeError: ${String(reason)}`);
  assert.equal(reason.kind, 'lease-lost');
  assert.equal(reason.origin, 'checkpoint-store');
  assert.ok(reason.hint);
  assert.throws(
    () => keeper.assertHeld(),
    (error: unknown) => error === reason,
  );
  assert.deepEqual(lost, [reason], 'onLost is told once');
  return reason;
}

/** Waits until `condition()` holds, checking every few milliseconds; fails after `limitMs`. */
async function until(condition: () => boolean, what: string, limitMs = 20_000): Promise<void> {
  const giveUpAt = performance.now() + limitMs;
  while (!condition()) {
    if (performance.now() > giveUpAt) assert.fail(`gave up waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

describe('fenceMarginMs', () => {
  it('is a sixth of the lease, at least one second', () => {
    assert.equal(fenceMarginMs(60_000), 10_000);
    assert.equal(fenceMarginMs(600_000), 100_000);
    assert.equal(fenceMarginMs(12_000), 2_000);
    assert.equal(fenceMarginMs(6_005), 1_000);
    assert.equal(fenceMarginMs(6_000), 1_000);
    assert.equal(fenceMarginMs(2_000), 1_000);
    assert.equal(fenceMarginMs(500), 1_000);
  });

  it("is the keeper's margin", async () => {
    const { keeper } = await keeperOn(new ManualClock(), 90_000);
    assert.equal(keeper.fenceMarginMs, 15_000);
    assert.equal(keeper.fenceAtMs, keeper.lease.expiresAtMs - 15_000);
  });
});

describe('LeaseKeeper on a manual clock', () => {
  it('holds the lease until the fence, then is fenced: assertHeld throws lease-lost, the signal aborts', async () => {
    const clock = new ManualClock();
    const { keeper, lost } = await keeperOn(clock);
    assert.equal(keeper.fenceAtMs, START_MS + LEASE_MS - MARGIN_MS);
    clock.now = keeper.fenceAtMs - 1;
    assert.equal(keeper.held, true);
    keeper.assertHeld();
    assert.equal(keeper.signal.aborted, false);
    clock.now = keeper.fenceAtMs;
    assert.equal(keeper.held, false, 'not surely held from the fence on');
    assert.throws(() => keeper.assertHeld(), { name: 'SlotlakeError', kind: 'lease-lost' });
    const reason = assertFenced(keeper, lost);
    assert.match(reason.message, /may have expired/);
    // Once fenced, always fenced: even a clock read before the fence does not bring it back.
    clock.now = START_MS;
    assertFenced(keeper, lost);
  });

  it('moves the fence with each successful renewal', async () => {
    const clock = new ManualClock();
    const { store, keeper, lost } = await keeperOn(clock);
    const firstFence = keeper.fenceAtMs;
    clock.now = START_MS + 20_000;
    await keeper.renew();
    assert.equal(keeper.renewals, 1);
    assert.equal(keeper.fenceAtMs, START_MS + 20_000 + LEASE_MS - MARGIN_MS);
    assert.equal(keeper.lease.expiresAtMs, store.lease?.expiresAtMs, 'the stored expiry');
    clock.now = firstFence + 1; // past the old fence
    assert.equal(keeper.held, true);
    keeper.assertHeld();
    clock.now = keeper.fenceAtMs;
    assert.equal(keeper.held, false);
    assert.throws(() => keeper.assertHeld(), { name: 'SlotlakeError', kind: 'lease-lost' });
    assertFenced(keeper, lost);
  });

  it('is lost at once when a renewal is refused because another run took the lease', async () => {
    const clock = new ManualClock();
    const { store, keeper, lost } = await keeperOn(clock);
    // Another run acquired it (on its own clock, after the stored expiry).
    const other = await store.acquire('run-b', LEASE_MS, START_MS + LEASE_MS + 1);
    assert.ok(other.acquired);
    clock.now = START_MS + 1_000; // far before the fence on this run's clock
    await keeper.renew();
    assert.equal(keeper.renewals, 0);
    assert.equal(store.renewCalls, 1, 'a refusal is not retried');
    const reason = assertFenced(keeper, lost);
    assert.match(reason.message, /no longer holds the lease/);
    // Nothing more is tried.
    await keeper.renew();
    assert.equal(store.renewCalls, 1);
    assert.equal(lost.length, 1);
  });

  it('is lost when a renewal fails past its retries, keeping the cause', async () => {
    const clock = new ManualClock();
    const { store, keeper, lost } = await keeperOn(clock);
    const unreachable = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:8000'), {
      code: 'ECONNREFUSED',
    });
    store.failures = Array.from({ length: 10 }, () => unreachable);
    await keeper.renew();
    assert.ok(store.renewCalls > 1, 'a transient failure is retried');
    const reason = assertFenced(keeper, lost);
    assert.match(reason.message, /could not be renewed/);
    assert.ok(reason.cause instanceof SlotlakeError);
    assert.equal((reason.cause as SlotlakeError).cause, unreachable);
  });

  it('survives a transient renewal failure', async () => {
    const clock = new ManualClock();
    const { store, keeper, lost } = await keeperOn(clock);
    store.failures = [Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' })];
    clock.now = START_MS + 20_000;
    await keeper.renew();
    assert.equal(store.renewCalls, 2);
    assert.equal(keeper.renewals, 1);
    assert.equal(keeper.fenceAtMs, START_MS + 20_000 + LEASE_MS - MARGIN_MS);
    assert.equal(keeper.held, true);
    assert.deepEqual(lost, []);
  });

  it('releases with the current (renewed) lease and stops renewing', async () => {
    const clock = new ManualClock();
    const { store, keeper } = await keeperOn(clock);
    clock.now = START_MS + 20_000;
    await keeper.renew();
    const released: Lease[] = [];
    await keeper.release(async (lease) => {
      released.push(lease);
      await store.release(lease);
    });
    assert.deepEqual(released, [keeper.lease]);
    assert.equal(released[0]!.expiresAtMs, START_MS + 20_000 + LEASE_MS);
    assert.equal(store.lease, undefined, 'the store has the lease free');
    await keeper.renew();
    assert.equal(store.renewCalls, 1, 'no renewal after release');
  });

  it('does not release a lease it lost', async () => {
    const clock = new ManualClock();
    const { keeper } = await keeperOn(clock);
    clock.now = keeper.fenceAtMs;
    assert.throws(() => keeper.assertHeld());
    let called = false;
    await keeper.release(async () => {
      called = true;
    });
    assert.equal(called, false);
  });

  it('swallows a failing release (best effort)', async () => {
    const { keeper } = await keeperOn(new ManualClock());
    await keeper.release(async () => {
      throw new Error('DynamoDB unreachable');
    });
  });
});

describe('LeaseKeeper on its own timers (real clock, leases of a few seconds)', () => {
  const SHORT_MS = 2_000; // fence margin 1 s, renewals every ~667 ms

  it('renews by itself while the store answers', async () => {
    // Three seconds here: renewals every second, the fence two seconds after each, so a busy machine's
    // event-loop stalls do not fence the keeper before it renewed.
    const { store, keeper, lost } = await keeperOn(systemClock, 3_000);
    const firstFence = keeper.fenceAtMs;
    keeper.start();
    try {
      await until(() => keeper.renewals >= 2 || keeper.signal.aborted, 'two renewals');
      assert.ok(keeper.renewals >= 2, `renewed (lost: ${lost.map((e) => e.message).join()})`);
      assert.ok(keeper.fenceAtMs > firstFence, 'each renewal moved the fence');
      assert.equal(keeper.lease.expiresAtMs, store.lease?.expiresAtMs);
    } finally {
      await keeper.release(async () => undefined);
    }
  });

  it('fences in time when a renewal hangs: the hanging call never moves the expiry', async () => {
    const { store, keeper, lost } = await keeperOn(systemClock, SHORT_MS);
    store.hang = true;
    const fenceAtMs = keeper.fenceAtMs;
    const expiresAtMs = keeper.lease.expiresAtMs;
    let abortedAtMs: number | undefined;
    keeper.signal.addEventListener('abort', () => {
      abortedAtMs = systemClock.nowMs();
    });
    keeper.start();
    await until(() => keeper.signal.aborted, 'the keeper fenced itself');
    assert.ok(store.renewCalls >= 1, 'a renewal was in flight (hanging) when the fence came');
    assert.ok(abortedAtMs !== undefined && abortedAtMs >= fenceAtMs, 'never before the fence');
    assert.equal(keeper.lease.expiresAtMs, expiresAtMs, 'the expiry did not move');
    const reason = assertFenced(keeper, lost);
    assert.match(reason.message, /may have expired/);
  });

  it('does not wait on a hanging renewal when releasing: it gives up at the fence and releases nothing', async () => {
    const { store, keeper, lost } = await keeperOn(systemClock, SHORT_MS);
    store.hang = true;
    keeper.start();
    await until(() => store.renewCalls >= 1 || keeper.signal.aborted, 'a renewal is in flight');
    let called = false;
    let released = false;
    void keeper
      .release(async () => {
        called = true;
      })
      .then(() => {
        released = true;
      });
    await until(() => released, 'release() returned');
    // The renewal might have moved the expiry until the fence; past it, the lease may be someone else's.
    assert.equal(called, false);
    assertFenced(keeper, lost);
  });
});
