// The drill's workloads on real tables, through the client library, each
// operation recorded with its invoke and complete times, result, node and
// term (Jepsen's history):
//
//   register  compare-and-set registers on a few keys (sync). Reads are
//             linearizable reads (the leader's read index), so the checker
//             catches a deposed leader answering from a stale state.
//   set       unique inserts (sync)
//   bank      transfers between accounts, constant total (sync), and reads of the total on the leader
//   mixed     inserts alternating between a sync and an async table
import pg from 'pg';
import type { Rng } from '../core/rng.js';
import { OutcomeUnknown, PgError, QsyncClientError, type Db } from '../client/index.js';
import type { DrillNode } from './target.js';

export type Workload = 'register' | 'set' | 'bank' | 'mixed';
export const WORKLOADS: readonly Workload[] = ['register', 'set', 'bank', 'mixed'];

export type OpResult = 'ok' | 'fail' | 'unknown';

export interface Op {
  readonly id: number;
  readonly client: number;
  readonly workload: Workload;
  readonly f: 'read' | 'write' | 'cas' | 'insert' | 'insert-async' | 'transfer' | 'balance';
  readonly key: string;
  readonly value: number | readonly [number, number] | null;
  output: number | null;
  readonly invokeMs: number;
  /** null while running, and for an outcome never heard. */
  completeMs: number | null;
  result: OpResult | 'pending';
  error?: string;
  /** The node that answered, and its term then. */
  node?: number;
  term?: number;
}

export const TABLES = [
  { name: 'drill_register', mode: 'sync', ddl: 'CREATE TABLE IF NOT EXISTS drill_register (k text PRIMARY KEY, v int NOT NULL)' },
  { name: 'drill_set', mode: 'sync', ddl: 'CREATE TABLE IF NOT EXISTS drill_set (id text PRIMARY KEY, run text NOT NULL)' },
  { name: 'drill_bank', mode: 'sync', ddl: 'CREATE TABLE IF NOT EXISTS drill_bank (id text PRIMARY KEY, run text NOT NULL, balance bigint NOT NULL)' },
  { name: 'drill_async', mode: 'async', ddl: 'CREATE TABLE IF NOT EXISTS drill_async (id text PRIMARY KEY, run text NOT NULL)' },
] as const;

export const REGISTER_KEYS = 3;
export const BANK_ACCOUNTS = 5;
export const BANK_BALANCE = 100;

/** Create the tables on every node and mark their modes (a CONFIG record through the leader); seed this run's rows. */
export async function setUp(nodes: readonly DrillNode[], db: Db, run: string): Promise<void> {
  for (const node of nodes) {
    const client = new pg.Client({ connectionString: node.pgUrl });
    client.on('error', () => undefined);
    await client.connect();
    try {
      for (const table of TABLES) await client.query(table.ddl);
    } finally {
      await client.end();
    }
  }
  for (const table of TABLES) await db.setTableMode(table.name, table.mode);
  await db.execute([
    ...Array.from({ length: REGISTER_KEYS }, (_, i) => ['INSERT INTO drill_register VALUES ($1, 0)', [`${run}:${i}`]] as const),
    ...Array.from({ length: BANK_ACCOUNTS }, (_, i) => ['INSERT INTO drill_bank VALUES ($1, $2, $3)', [`${run}:a${i}`, run, BANK_BALANCE]] as const),
  ], { idempotencyKey: `drill-setup-${run}` });
}

type Planned = Pick<Op, 'workload' | 'f' | 'key' | 'value'>;

/** The next operation of a client of `workload`. */
export function plan(workload: Workload, run: string, client: number, seq: number, random: Rng): Planned {
  switch (workload) {
    case 'register': {
      const key = `${run}:${random.int(0, REGISTER_KEYS - 1)}`;
      const roll = random.next();
      if (roll < 0.4) return { workload, f: 'read', key, value: null };
      if (roll < 0.7) return { workload, f: 'write', key, value: random.int(0, 4) };
      return { workload, f: 'cas', key, value: [random.int(0, 4), random.int(0, 4)] };
    }
    case 'set':
      return { workload, f: 'insert', key: `${run}:c${client}:${seq}`, value: null };
    case 'bank': {
      if (random.next() < 0.2) return { workload, f: 'balance', key: run, value: null };
      const from = random.int(0, BANK_ACCOUNTS - 1);
      const to = (from + 1 + random.int(0, BANK_ACCOUNTS - 2)) % BANK_ACCOUNTS;
      return { workload, f: 'transfer', key: run, value: [from, to] };
    }
    case 'mixed':
      return { workload, f: seq % 2 === 0 ? 'insert' : 'insert-async', key: `${run}:c${client}:${seq}`, value: null };
  }
}

const first = (rows: ReadonlyArray<Record<string, unknown>> | undefined, column: string): number | null => {
  const value = rows?.[0]?.[column];
  return value === undefined || value === null ? null : Number(value);
};

/** Run one planned operation; returns its output (the value seen, or rows moved). */
export async function perform(db: Db, run: string, op: Planned): Promise<number | null> {
  const key = op.key;
  switch (op.f) {
    case 'read': {
      const result = await db.query('SELECT v FROM drill_register WHERE k = $1', [key], { consistency: 'linearizable' });
      return first(result.rows, 'v');
    }
    case 'write':
      await db.execute([['UPDATE drill_register SET v = $2 WHERE k = $1', [key, op.value]]]);
      return null;
    case 'cas': {
      const [expected, next] = op.value as readonly [number, number];
      const [result] = await db.execute([[
        'WITH old AS (SELECT v FROM drill_register WHERE k = $1 FOR UPDATE) UPDATE drill_register r SET v = CASE WHEN old.v = $2 THEN $3 ELSE old.v END FROM old WHERE r.k = $1 RETURNING old.v AS was',
        [key, expected, next],
      ]]);
      return first(result?.rows, 'was');
    }
    case 'insert':
      await db.execute([['INSERT INTO drill_set VALUES ($1, $2)', [key, run]]], { idempotencyKey: `drill-${key}` });
      return null;
    case 'insert-async':
      await db.execute([['INSERT INTO drill_async VALUES ($1, $2)', [key, run]]], { idempotencyKey: `drill-async-${key}` });
      return null;
    case 'transfer': {
      const [from, to] = op.value as readonly [number, number];
      const [result] = await db.execute([[
        'WITH d AS (UPDATE drill_bank SET balance = balance - $3 WHERE id = $1 AND balance >= $3 RETURNING id) UPDATE drill_bank SET balance = balance + $3 WHERE id = $2 AND EXISTS (SELECT 1 FROM d) RETURNING id',
        [`${run}:a${from}`, `${run}:a${to}`, 1 + (from * 7 + to * 3) % 10],
      ]]);
      return result?.rows.length ?? 0;
    }
    case 'balance': {
      // On the leader: a follower's PostgreSQL may not have committed the accounts yet (it commits on CONFIRM).
      const result = await db.query('SELECT sum(balance)::text AS total, min(balance)::text AS low FROM drill_bank WHERE run = $1', [run], { consistency: 'leader' });
      const total = first(result.rows, 'total');
      const low = first(result.rows, 'low');
      // One number for the history: the total, or -1 when an account went negative.
      return low !== null && low < 0 ? -1 : total;
    }
  }
}

/** ok, certain failure (nothing happened), or unknown (it may have happened). */
export function classify(error: unknown): 'fail' | 'unknown' {
  if (error instanceof OutcomeUnknown) return 'unknown';
  // A lost connection (no SQLSTATE, an errno, class 08, or a server shutting down) may have struck at COMMIT.
  if (error instanceof PgError && !/^(?!08|57)[0-9A-Z]{5}$/.test(error.sqlstate ?? '')) return 'unknown';
  // NotLeader, StaleTerm, RolledBack, LimboFull, PgError, AuthFailed: the sidecar answered that nothing committed.
  if (error instanceof QsyncClientError) return 'fail';
  return 'unknown';
}
