// Tries to write a sync table past the PostgreSQL term fence (DESIGN.md §7,
// third fence): a follower, a session without qsync.term and a session with a
// stale term must each fail at once with their SQLSTATE and a message naming
// the leader but not the term; apply (session_replication_role = replica) is
// not fenced. Then tries every bypass a role with ordinary table privileges
// has, term in hand: none may commit a change to a replicated table outside
// qsync (migrations/0003, docs/rfc/0011-hostile-input.md).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { readCaptureKey, setTableMode } from '../../src/postgres/index.js';
import type { Lsn, ReplicaId, Term } from '../../src/core/types.js';
import { leaderWriteOn, startNode, type TestNode } from '../support/postgres.js';

let node: TestNode;
beforeAll(async () => {
  node = await startNode();
  await node.sql.query('CREATE TABLE ledger (id int PRIMARY KEY, amount int); CREATE TABLE notes (id int PRIMARY KEY, body text)');
  await setTableMode(node.sql, 'ledger', 'sync');
  await setTableMode(node.sql, 'notes', 'async');
  await node.sql.query(`UPDATE qsync.node SET replica_id = 2, role = 'leader', term = 5, leader_id = 2, leader_address = '127.0.0.1:7402'`);
});
afterAll(async () => node?.destroy());

async function write(term: string | null, sql = 'INSERT INTO ledger VALUES (1, 10) ON CONFLICT (id) DO UPDATE SET amount = ledger.amount + 1'): Promise<void> {
  const client = await node.connect();
  try {
    await client.query('BEGIN');
    if (term !== null) await client.query(`SELECT set_config('qsync.term', $1, true)`, [term]);
    await client.query(sql);
    await client.query('ROLLBACK');
  } finally {
    await client.end();
  }
}

describe('PostgreSQL term fence', () => {
  it('lets the leader write with its current term', async () => {
    await expect(write('5')).resolves.toBeUndefined();
  });

  it('rejects a stale term, naming the leader and not the term', async () => {
    await expect(write('4')).rejects.toMatchObject({ code: 'QS002', message: 'qsync: this write names a term that is not the current one; leader is node 2 at 127.0.0.1:7402' });
  });

  it('rejects a term from the future as well: only the current term writes', async () => {
    await expect(write('6')).rejects.toMatchObject({ code: 'QS002' });
  });

  it('rejects a write without qsync.term, and says how to write', async () => {
    await expect(write(null)).rejects.toMatchObject({ code: 'QS003', message: 'qsync: write to sync table public.ledger outside qsync; leader is node 2 at 127.0.0.1:7402', hint: expect.stringMatching(/through the qsync sidecar/) });
  });

  it('fences updates and deletes too, but not async tables', async () => {
    await expect(write(null, 'DELETE FROM ledger')).rejects.toMatchObject({ code: 'QS003' });
    await expect(write('4', 'UPDATE ledger SET amount = 0')).rejects.toMatchObject({ code: 'QS002' });
    await expect(write(null, `INSERT INTO notes VALUES (1, 'free')`)).resolves.toBeUndefined();
  });

  it('rejects every write on a deposed leader at once, even with its old term', async () => {
    await node.sql.query(`UPDATE qsync.node SET role = 'follower', term = 6, leader_id = 3, leader_address = '127.0.0.1:7403'`);
    await expect(write('5')).rejects.toMatchObject({ code: 'QS001', message: 'qsync: node 2 is not the leader; leader is node 3 at 127.0.0.1:7403' });
    await expect(write('6')).rejects.toMatchObject({ code: 'QS001' });
  });

  it('does not fence apply, which runs as a replica session', async () => {
    const client = await node.connect();
    await client.query('BEGIN');
    await client.query('SET LOCAL session_replication_role = replica');
    await client.query('INSERT INTO ledger VALUES (99, 1)');
    await client.query('COMMIT');
    expect((await node.sql.query('SELECT amount FROM ledger WHERE id = 99')).rows).toEqual([{ amount: 1 }]);
    await client.end();
  });
});

describe('the fence cannot be forged by a role with ordinary privileges', () => {
  const TERM = 7;
  let writer: pg.Client;

  beforeAll(async () => {
    await node.sql.query(`UPDATE qsync.node SET role = 'leader', term = ${TERM}, leader_id = 2, leader_address = '127.0.0.1:7402'`);
    await node.sql.query(`CREATE ROLE writer LOGIN PASSWORD 'writer-password-1'; GRANT SELECT, INSERT, UPDATE, DELETE ON ledger, notes TO writer`);
    const url = new URL(node.server.connectionString);
    url.username = 'writer';
    url.password = 'writer-password-1';
    writer = new pg.Client({ connectionString: url.toString() });
    writer.on('error', () => undefined);
    await writer.connect();
  });
  afterAll(async () => writer?.end());

  /** Run the statements in one transaction as `writer`; the first error, or null when it committed. */
  async function attempt(...statements: string[]): Promise<{ code?: string; message: string } | null> {
    try {
      await writer.query('BEGIN');
      for (const sql of statements) await writer.query(sql);
      await writer.query('COMMIT');
      return null;
    } catch (error) {
      await writer.query('ROLLBACK').catch(() => undefined);
      return error as { code: string; message: string };
    }
  }

  async function ledgerHas(id: number): Promise<boolean> {
    return (await node.sql.query('SELECT 1 FROM ledger WHERE id = $1', [id])).rowCount === 1;
  }

  it('refuses at COMMIT a write that set the current term, by SET LOCAL or set_config, and keeps nothing', async () => {
    expect(await attempt(`SET LOCAL qsync.term = '${TERM}'`, 'INSERT INTO ledger VALUES (701, 1)')).toMatchObject({ code: 'QS005', message: expect.stringMatching(/public\.ledger was not made through qsync/) });
    expect(await attempt(`SELECT set_config('qsync.term', '${TERM}', false)`, 'INSERT INTO ledger VALUES (702, 1)')).toMatchObject({ code: 'QS005' });
    await writer.query('RESET qsync.term');
    expect(await ledgerHas(701)).toBe(false);
    expect(await ledgerHas(702)).toBe(false);
    expect((await node.sql.query('SELECT count(*)::int AS n FROM qsync.changes')).rows).toEqual([{ n: 0 }]);
  });

  it('refuses PREPARE TRANSACTION of such a write as well', async () => {
    expect(await attempt(`SET LOCAL qsync.term = '${TERM}'`, 'INSERT INTO ledger VALUES (703, 1)', `PREPARE TRANSACTION 'forged-703'`)).toMatchObject({ code: 'QS005' });
    expect((await node.sql.query(`SELECT count(*)::int AS n FROM pg_prepared_xacts WHERE gid = 'forged-703'`)).rows).toEqual([{ n: 0 }]);
  });

  it('refuses a direct write to an async table too: it would never replicate', async () => {
    expect(await attempt(`INSERT INTO notes VALUES (704, 'direct')`)).toMatchObject({ code: 'QS005', message: expect.stringMatching(/public\.notes/) });
  });

  it('refuses every way around the check: taking the changes, deleting them, reading the key, disabling triggers', async () => {
    const forge = `SET LOCAL qsync.term = '${TERM}'`;
    const insert = 'INSERT INTO ledger VALUES (705, 1)';
    // qsync.capture with a guessed key, and the version-2 signature without one.
    expect(await attempt(forge, insert, `SELECT * FROM qsync.capture('${'0'.repeat(64)}', 1, 2, 1, NULL)`)).toMatchObject({ code: '42501', message: 'qsync: only the qsync sidecar takes captured changes' });
    expect(await attempt(forge, insert, 'SELECT * FROM qsync.capture(1, 2, 1, NULL)')).toMatchObject({ code: '42883' });
    expect(await attempt(forge, insert, 'DELETE FROM qsync.changes')).toMatchObject({ code: '42501' });
    expect(await attempt('SELECT key FROM qsync.capture_key')).toMatchObject({ code: '42501' });
    expect(await attempt('SET LOCAL session_replication_role = replica', insert)).toMatchObject({ code: '42501' });
    expect(await attempt('ALTER TABLE ledger DISABLE TRIGGER USER')).toMatchObject({ code: '42501' });
    // The check at once instead of at COMMIT: refused at the statement.
    expect(await attempt('SET CONSTRAINTS ALL IMMEDIATE', forge, insert)).toMatchObject({ code: 'QS005' });
    expect(await ledgerHas(705)).toBe(false);
  });

  it('lets the sidecar\'s own write through: its capture key takes the changes before PREPARE', async () => {
    const captureKey = await readCaptureKey(node.sql);
    const outcome = await leaderWriteOn(writer, { term: TERM as Term, replica: 2 as ReplicaId, captureKey, idempotencyKey: null, reserve: () => ({ lsn: 706 as Lsn, gid: 'qsync-fence-706', time: 706 }) }, async (c) => {
      await c.query('INSERT INTO ledger VALUES (706, 1)');
    });
    expect(outcome.kind).toBe('prepared');
    await node.sql.query(`COMMIT PREPARED 'qsync-fence-706'`);
    expect(await ledgerHas(706)).toBe(true);
  });
});
