/**
 * The change backlogs the reader comparison (readers.ts) archives. Each is a schema, created before any slot,
 * and a workload SQL text run after every slot exists, so that every reader sees exactly the same changes.
 *
 * - `small`: the throughput bench's small transactions (throughput.ts): 10 changes each — 1 order + 5 items
 *   + 3 events inserted, the order updated — over 3 tables of 5 simple columns.
 * - `mixed`: 3 tables of 10 columns of mixed types (numeric, jsonb, text[], uuid, timestamptz, char, float8,
 *   boolean, text), transactions of 1 to 1,000 changes (log-uniform, so most are small and a few are large:
 *   ~150 on average) of inserts and updates. The transaction sizes come from a seeded generator: the same
 *   backlog on every run.
 */
import { SMALL_SCHEMA, smallWorkload } from './throughput.js';

export interface Workload {
  readonly name: 'small' | 'mixed';
  readonly description: string;
  readonly schema: string;
  readonly sql: string;
  readonly changes: number;
  readonly transactions: number;
}

export function smallTransactions(changes: number): Workload {
  const transactions = Math.max(1, Math.round(changes / 10));
  return {
    name: 'small',
    description: '10-change transactions, 3 tables of 5 simple columns',
    schema: SMALL_SCHEMA,
    sql: smallWorkload(transactions),
    changes: transactions * 10,
    transactions,
  };
}

const ACCOUNTS = 20_000;

const MIXED_SCHEMA = `
CREATE TABLE accounts (
  id bigint PRIMARY KEY, owner uuid NOT NULL, name text NOT NULL, balance numeric(14, 2) NOT NULL,
  tags text[] NOT NULL, profile jsonb NOT NULL, opened_at timestamptz NOT NULL, active boolean NOT NULL,
  score double precision, updated_at timestamptz NOT NULL
);
CREATE TABLE transfers (
  id bigint PRIMARY KEY, from_account bigint NOT NULL, to_account bigint NOT NULL,
  amount numeric(12, 2) NOT NULL, currency char(3) NOT NULL, memo text, meta jsonb NOT NULL,
  ref uuid NOT NULL, status text NOT NULL, at timestamptz NOT NULL
);
CREATE TABLE audit (
  id bigint PRIMARY KEY, entity text NOT NULL, entity_id bigint NOT NULL, action text NOT NULL,
  diff jsonb NOT NULL, actor uuid NOT NULL, labels text[] NOT NULL, seq int NOT NULL, note text,
  at timestamptz NOT NULL
);
INSERT INTO accounts
SELECT g, md5('owner' || g)::uuid, 'account ' || g, (g % 1000000) / 100.0,
       ARRAY['tier-' || (g % 4), 'region-' || (g % 7)],
       jsonb_build_object('email', 'user' || g || '@example.com', 'limits', jsonb_build_array(g % 500, g % 900)),
       timestamptz '2024-01-01 00:00:00+00' + g * interval '17 minutes', g % 9 <> 0, (g % 1000) / 7.0,
       timestamptz '2025-01-01 00:00:00+00'
FROM generate_series(1, ${ACCOUNTS}) AS g`;

/** Transaction sizes, log-uniform in [1, 1000], from a seeded generator; they add up to `changes`. */
export function mixedSizes(changes: number, seed = 42): number[] {
  let state = seed >>> 0;
  const random = () => {
    // xorshift32
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return state / 2 ** 32;
  };
  const sizes: number[] = [];
  let left = changes;
  while (left > 0) {
    const size = Math.min(left, Math.max(1, Math.floor(Math.exp(random() * Math.log(1001)))));
    sizes.push(size);
    left -= size;
  }
  return sizes;
}

/**
 * Each transaction of n changes: n - 2⌊n/4⌋ transfers and ⌊n/4⌋ audit rows inserted, ⌊n/4⌋ distinct accounts
 * updated (the id step 31 is prime to the account count, so ids within a statement never repeat).
 */
export function mixedTransactions(changes: number): Workload {
  const sizes = mixedSizes(changes);
  const sql = `
DO $$
DECLARE
  n int; t bigint := 0; a bigint := 0; u int; k int; ins int;
BEGIN
  FOREACH n IN ARRAY ARRAY[${sizes.join(',')}]::int[] LOOP
    u := n / 4;
    k := n / 4;
    ins := n - u - k;
    INSERT INTO transfers
      SELECT t + g, 1 + ((t + g) * 7) % ${ACCOUNTS}, 1 + ((t + g) * 13) % ${ACCOUNTS}, ((t + g) % 100000) / 100.0,
             (ARRAY['EUR', 'USD', 'GBP'])[1 + (t + g) % 3],
             CASE WHEN g % 5 = 0 THEN NULL ELSE 'invoice ' || md5((t + g)::text) END,
             jsonb_build_object('channel', (ARRAY['api', 'web', 'batch'])[1 + g % 3], 'fee', (g % 300) / 100.0,
                                'flags', jsonb_build_array(g % 2 = 0, g % 3 = 0)),
             md5('ref' || (t + g))::uuid, 'settled', now()
      FROM generate_series(1, ins) AS g;
    IF k > 0 THEN
      INSERT INTO audit
        SELECT a + g, 'transfer', t + g, 'create',
               jsonb_build_object('amount', ((t + g) % 100000) / 100.0, 'status', jsonb_build_array('new', 'settled')),
               md5('actor' || ((a + g) % 97))::uuid, ARRAY['api', 'v2', 'shard-' || (g % 16)], g::int,
               CASE WHEN g % 3 = 0 THEN 'checked by ' || md5(g::text) ELSE NULL END, now()
        FROM generate_series(1, k) AS g;
      UPDATE accounts
         SET balance = balance + 1.25, score = coalesce(score, 0) + 0.5, updated_at = now(),
             tags = ARRAY['tier-' || (id % 4), 'seen']
       WHERE id IN (SELECT 1 + ((a + g) * 31) % ${ACCOUNTS} FROM generate_series(1, u) AS g);
    END IF;
    t := t + ins;
    a := a + k;
    COMMIT;
  END LOOP;
END $$`;
  return {
    name: 'mixed',
    description: '3 tables of 10 mixed-type columns, transactions of 1 to 1,000 changes',
    schema: MIXED_SCHEMA,
    sql,
    changes: sizes.reduce((sum, n) => sum + n, 0),
    transactions: sizes.length,
  };
}
