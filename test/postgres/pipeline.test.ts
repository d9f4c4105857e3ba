// The leader's write on a pipelining connection (postgres/pipeline.ts,
// docs/rfc/0013-leader-round-trips.md): the BEGIN and the statements leave
// together, yet a failing statement still fails the whole write, and nothing
// of it commits or stays prepared; results come back in statement order; an
// async write's COMMIT goes without waiting for its WAL flush, a local one's
// does not.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { queryAll, readCaptureKey, setTableMode, statementName, STATEMENTS_KEPT_MAX, type LeaderOutcome } from '../../src/postgres/index.js';
import type { Lsn, ReplicaId, Term } from '../../src/core/types.js';
import { leaderWriteOn, startNode, type TestNode } from '../support/postgres.js';

let node: TestNode;
let captureKey: string;
let client: pg.Client;
let nextLsn = 0;

beforeAll(async () => {
  node = await startNode();
  await node.sql.query('CREATE TABLE ledger (id int PRIMARY KEY, amount int); CREATE TABLE notes (id int PRIMARY KEY, body text); CREATE TABLE scratch (id int PRIMARY KEY)');
  await setTableMode(node.sql, 'ledger', 'sync');
  await setTableMode(node.sql, 'notes', 'async');
  await node.sql.query(`UPDATE qsync.node SET replica_id = 2, role = 'leader', term = 5, leader_id = 2`);
  captureKey = await readCaptureKey(node.sql);
  client = new pg.Client({ connectionString: node.server.connectionString, pipeline: true });
  await client.connect();
});
afterAll(async () => {
  await client?.end();
  await node?.destroy();
});

/** A leader write of `statements` on the pipelining client; what each statement answered, and the outcome. */
async function write(statements: readonly string[], journal?: (sync: boolean) => Promise<void>): Promise<{ outcome: LeaderOutcome; rows: unknown[][] }> {
  let rows: unknown[][] = [];
  const lsn = (nextLsn += 1) as Lsn;
  const outcome = await leaderWriteOn(client, {
    term: 5 as Term, replica: 2 as ReplicaId, captureKey, idempotencyKey: null,
    reserve: () => ({ lsn, gid: `qsync-pipeline-${lsn}`, time: lsn }),
    journal: async ({ sync }) => journal?.(sync),
  }, async (c) => {
    rows = (await queryAll(c, statements.map((text) => ({ text })))).map((r) => r.rows);
  });
  return { outcome, rows };
}

describe('a leader write on a pipelining connection', () => {
  it('runs every statement in the transaction and answers in order', async () => {
    const { outcome, rows } = await write(['INSERT INTO ledger VALUES (1, 10) RETURNING id', 'UPDATE ledger SET amount = amount + 5 RETURNING amount', 'SELECT count(*)::int AS n FROM ledger']);
    expect(outcome.kind).toBe('prepared');
    expect(rows).toEqual([[{ id: 1 }], [{ amount: 15 }], [{ n: 1 }]]);
    if (outcome.kind !== 'prepared') throw new Error('not prepared');
    expect(outcome.changes.map((c) => c.op)).toEqual(['insert', 'update']);
    // Prepared: invisible to others until committed.
    expect((await node.sql.query('SELECT count(*)::int AS n FROM ledger')).rows[0].n).toBe(0);
    await node.sql.query(`COMMIT PREPARED '${outcome.gid}'`);
    expect((await node.sql.query('SELECT amount FROM ledger WHERE id = 1')).rows).toEqual([{ amount: 15 }]);
  });

  it('fails the whole write at the first failing statement, with its error, and leaves nothing behind', async () => {
    const attempt = write(['INSERT INTO ledger VALUES (2, 20)', 'INSERT INTO ledger VALUES (1, 99)', 'INSERT INTO ledger VALUES (3, 30)']);
    await expect(attempt).rejects.toMatchObject({ code: '23505' });
    expect((await node.sql.query('SELECT id FROM ledger ORDER BY id')).rows).toEqual([{ id: 1 }]);
    expect((await node.sql.query('SELECT count(*)::int AS n FROM pg_prepared_xacts')).rows[0].n).toBe(0);
    // The connection is out of the failed transaction and takes the next write.
    const { outcome } = await write(['INSERT INTO ledger VALUES (2, 20)']);
    expect(outcome.kind).toBe('prepared');
    if (outcome.kind === 'prepared') await node.sql.query(`ROLLBACK PREPARED '${outcome.gid}'`);
  });

  it('commits an async write once journaled, without a WAL flush of its own; a local write flushes', async () => {
    const flushes = async (): Promise<number> => {
      await client.query('SELECT pg_stat_force_next_flush()');
      const { rows } = await node.sql.query(`SELECT coalesce(sum(fsyncs), 0)::int AS n FROM pg_stat_get_backend_io($1) WHERE object = 'wal'`, [(client as unknown as { processID: number }).processID]);
      return rows[0].n as number;
    };
    const seen: string[] = [];
    const before = await flushes();
    const asyncWrite = await write(['INSERT INTO notes VALUES (1, $$a$$)'], async (sync) => {
      seen.push(sync ? 'sync' : 'async');
      // Before the COMMIT the write is invisible to others.
      expect((await node.sql.query('SELECT count(*)::int AS n FROM notes')).rows[0].n).toBe(0);
    });
    expect(asyncWrite.outcome.kind).toBe('committed');
    expect(seen).toEqual(['async']);
    expect((await node.sql.query('SELECT body FROM notes')).rows).toEqual([{ body: 'a' }]);
    expect(await flushes()).toBe(before);
    // The setting ended with that transaction: a local write (nothing replicated, no journal) flushes its COMMIT.
    const local = await write(['INSERT INTO scratch VALUES (1)']);
    expect(local.outcome.kind).toBe('empty');
    expect(await flushes()).toBeGreaterThan(before);
  });
});

describe("a client's changes kept parsed on their connection (statementName)", () => {
  it('parses an INSERT once and reuses it, also after the table changes shape; a RETURNING or a read stays unnamed', async () => {
    const c = new pg.Client({ connectionString: node.server.connectionString, pipeline: true });
    await c.connect();
    try {
      await c.query('CREATE TABLE kept (id int PRIMARY KEY, body text)');
      const insert = 'INSERT INTO kept (id, body) VALUES ($1, $2)';
      const name = statementName(c, insert);
      expect(name).toMatch(/^qsync_c_/);
      expect(statementName(c, insert)).toBe(name);
      expect(statementName(c, 'INSERT INTO kept (id) VALUES ($1) RETURNING id')).toBeUndefined();
      expect(statementName(c, 'SELECT * FROM kept')).toBeUndefined();
      const kept = async (): Promise<number> => (await c.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_prepared_statements WHERE name = '${name}'`)).rows[0]?.n ?? 0;
      expect(await kept()).toBe(0);
      await c.query({ name, text: insert, values: [1, 'one'] });
      await c.query({ name, text: insert, values: [2, 'two'] });
      expect(await kept()).toBe(1);
      // A schema change: PostgreSQL plans the kept statement again, and it still runs.
      await c.query('ALTER TABLE kept ADD COLUMN extra int DEFAULT 7');
      await c.query({ name, text: insert, values: [3, 'three'] });
      expect((await c.query('SELECT id, body, extra FROM kept ORDER BY id')).rows).toEqual([
        { id: 1, body: 'one', extra: 7 }, { id: 2, body: 'two', extra: 7 }, { id: 3, body: 'three', extra: 7 },
      ]);
      expect(await kept()).toBe(1);
    } finally {
      await c.end();
    }
  });

  it(`keeps at most ${STATEMENTS_KEPT_MAX} a connection: a client sending ever new texts runs the rest unnamed`, () => {
    const key = {} as pg.ClientBase;
    const names = Array.from({ length: STATEMENTS_KEPT_MAX + 5 }, (_, i) => statementName(key, `DELETE FROM kept WHERE id = ${i}`));
    expect(new Set(names.slice(0, STATEMENTS_KEPT_MAX)).size).toBe(STATEMENTS_KEPT_MAX);
    expect(names.slice(STATEMENTS_KEPT_MAX)).toEqual(Array(5).fill(undefined));
    // One it kept stays named.
    expect(statementName(key, 'DELETE FROM kept WHERE id = 0')).toBe(names[0]);
  });
});
