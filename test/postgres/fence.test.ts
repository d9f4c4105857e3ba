// Tries to write a sync table past the PostgreSQL term fence (DESIGN.md §7,
// third fence): a follower, a session without qsync.term and a session with a
// stale term must each fail at once with their SQLSTATE and a message naming
// the current term and leader; the leader's own term passes, and apply
// (session_replication_role = replica) is not fenced.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setTableMode } from '../../src/postgres/index.js';
import { startNode, type TestNode } from '../support/postgres.js';

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

  it('rejects a stale term, naming the current term and leader', async () => {
    await expect(write('4')).rejects.toMatchObject({ code: 'QS002', message: 'qsync: stale term 4 (current 5); leader is node 2 at 127.0.0.1:7402' });
  });

  it('rejects a term from the future as well: only the current term writes', async () => {
    await expect(write('6')).rejects.toMatchObject({ code: 'QS002' });
  });

  it('rejects a write without qsync.term, and says how to write', async () => {
    await expect(write(null)).rejects.toMatchObject({ code: 'QS003', message: expect.stringMatching(/without qsync.term \(current term 5\); leader is node 2/), hint: expect.stringMatching(/through the qsync sidecar/) });
  });

  it('fences updates and deletes too, but not async tables', async () => {
    await expect(write(null, 'DELETE FROM ledger')).rejects.toMatchObject({ code: 'QS003' });
    await expect(write('4', 'UPDATE ledger SET amount = 0')).rejects.toMatchObject({ code: 'QS002' });
    await expect(write(null, `INSERT INTO notes VALUES (1, 'free')`)).resolves.toBeUndefined();
  });

  it('rejects every write on a deposed leader at once, even with its old term', async () => {
    await node.sql.query(`UPDATE qsync.node SET role = 'follower', term = 6, leader_id = 3, leader_address = '127.0.0.1:7403'`);
    await expect(write('5')).rejects.toMatchObject({ code: 'QS001', message: 'qsync: node 2 is not the leader (term 6); leader is node 3 at 127.0.0.1:7403' });
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
