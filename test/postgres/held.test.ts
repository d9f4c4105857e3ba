// Capture for a write the leader holds open (migrations/0006,
// docs/rfc/0027-held-open-writes.md), against a real server: capture_held
// refuses a write while a transaction held before it has ended (terminated,
// rolled back), names those transactions, and lets it pass while they are in
// progress or committed; it says the write's transaction id and whether it is
// SERIALIZABLE; it turns the server's idle and transaction timeouts off for
// the rest of the transaction, and checks deferred constraints before the
// write can be journaled; so does capture of a write that will be prepared
// or committed (migrations/0007).
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { capture, readCaptureKey, setTableMode } from '../../src/postgres/index.js';
import { heldEnded } from '../../src/postgres/capture.js';
import type { Lsn, ReplicaId } from '../../src/core/types.js';
import { startNode, type TestNode } from '../support/postgres.js';

let node: TestNode;
let captureKey: string;
let lsn = 100;

beforeAll(async () => {
  node = await startNode();
  await node.sql.query(`CREATE TABLE ledger (id int PRIMARY KEY, amount int);
    CREATE TABLE lines (id int PRIMARY KEY, ledger_id int REFERENCES ledger (id) DEFERRABLE INITIALLY DEFERRED);
    CREATE TABLE notes (id int PRIMARY KEY, ledger_id int REFERENCES ledger (id) DEFERRABLE INITIALLY DEFERRED)`);
  await setTableMode(node.sql, 'ledger', 'sync');
  await setTableMode(node.sql, 'lines', 'sync');
  await setTableMode(node.sql, 'notes', 'async');
  await node.sql.query(`UPDATE qsync.node SET replica_id = 1, role = 'leader', term = 1, leader_id = 1`);
  captureKey = await readCaptureKey(node.sql);
});
afterAll(async () => node?.destroy());

/** Open a write on a new connection: BEGIN under the term, then `sql`. */
async function open(sql: string, begin = 'BEGIN'): Promise<pg.Client> {
  const client = await node.connect();
  await client.query(`${begin}; SET LOCAL qsync.term = '1'`);
  await client.query(sql);
  return client;
}

function captureHeld(client: pg.Client, held: readonly string[]): ReturnType<typeof capture> {
  lsn += 1;
  return capture(client, { captureKey, time: lsn, replica: 1 as ReplicaId, lsn: lsn as Lsn, idempotencyKey: null }, held);
}

describe('capture of a write held open', () => {
  it('says the transaction id, and holds only what is not SERIALIZABLE', async () => {
    const a = await open('INSERT INTO ledger VALUES (1, 10)');
    const captured = await captureHeld(a, []);
    expect(captured.sync).toBe(true);
    expect(captured.held).toEqual({ xid: expect.stringMatching(/^\d+$/), holdable: true });
    expect((await a.query('SELECT pg_current_xact_id()::text AS x')).rows[0].x).toBe(captured.held?.xid);
    await a.query('ROLLBACK');
    const s = await open('INSERT INTO ledger VALUES (2, 10)', 'BEGIN ISOLATION LEVEL SERIALIZABLE');
    expect((await captureHeld(s, [])).held?.holdable).toBe(false);
    await s.query('ROLLBACK');
  });

  it('turns off the idle and transaction timeouts for the rest of the transaction, so the wait cannot end it', async () => {
    const a = await node.connect();
    await a.query(`SET idle_in_transaction_session_timeout = '50ms'; SET transaction_timeout = '5s'`);
    await a.query(`BEGIN; SET LOCAL qsync.term = '1'; INSERT INTO ledger VALUES (3, 10)`);
    await captureHeld(a, []);
    expect((await a.query('SHOW idle_in_transaction_session_timeout')).rows[0]).toEqual({ idle_in_transaction_session_timeout: '0' });
    expect((await a.query('SHOW transaction_timeout')).rows[0]).toEqual({ transaction_timeout: '0' });
    // Idle in the transaction four times past the session's own timeout: still there, and it commits.
    await new Promise((r) => setTimeout(r, 200));
    await a.query('COMMIT');
    expect((await node.sql.query('SELECT amount FROM ledger WHERE id = 3')).rows).toEqual([{ amount: 10 }]);
    // Only that transaction: the session's own setting is back afterwards.
    expect((await a.query('SHOW idle_in_transaction_session_timeout')).rows[0]).toEqual({ idle_in_transaction_session_timeout: '50ms' });
  });

  it('checks deferred constraints, after the captured rows are taken', async () => {
    const a = await open('INSERT INTO lines VALUES (1, 999)');
    await expect(captureHeld(a, [])).rejects.toMatchObject({ code: '23503' });
    await a.query('ROLLBACK');
  });

  it('checks them for a write that will be prepared or committed too (migrations/0007): an async write is journaled before its COMMIT, so its COMMIT must not be where they fail', async () => {
    // Unheld capture (syncHold prepare): an async write, and a sync one.
    for (const sql of ['INSERT INTO notes VALUES (1, 999)', 'INSERT INTO lines VALUES (2, 999)']) {
      const a = await open(sql);
      lsn += 1;
      await expect(capture(a, { captureKey, time: lsn, replica: 1 as ReplicaId, lsn: lsn as Lsn, idempotencyKey: null }, null)).rejects.toMatchObject({ code: '23503' });
      await a.query('ROLLBACK');
    }
    // A deferred constraint that holds passes, and the write commits.
    const b = await open('INSERT INTO notes VALUES (3, 50); INSERT INTO ledger VALUES (50, 1)');
    lsn += 1;
    expect((await capture(b, { captureKey, time: lsn, replica: 1 as ReplicaId, lsn: lsn as Lsn, idempotencyKey: null }, null)).changes).toHaveLength(2);
    await b.query('COMMIT');
    expect((await node.sql.query('SELECT ledger_id FROM notes WHERE id = 3')).rows).toEqual([{ ledger_id: 50 }]);
  });

  it('refuses a write while a transaction held before it has ended, naming it; in progress or committed, it passes', async () => {
    // E: held open on its own session, with a row F then writes.
    const e = await open('INSERT INTO ledger VALUES (10, 1)');
    const held = (await captureHeld(e, [])).held?.xid as string;
    // In progress: F, on another row, passes the check.
    const f = await open('INSERT INTO ledger VALUES (11, 1)');
    expect((await captureHeld(f, [held])).changes).toHaveLength(1);
    await f.query('ROLLBACK');
    // E's session is terminated alone (pg_terminate_backend): its row lock goes with it, and F may take the row.
    const pid = (await e.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number;
    await node.sql.query('SELECT pg_terminate_backend($1)', [pid]);
    const g = await open('INSERT INTO ledger VALUES (10, 2)');
    const refused = await captureHeld(g, [held]).then(() => null, (error: unknown) => error);
    expect(refused).toMatchObject({ code: 'QS006', detail: held, hint: expect.stringMatching(/Retry/) });
    expect(heldEnded(refused)).toEqual([held]);
    // The refusal fails the transaction: nothing of it can commit.
    await g.query('ROLLBACK');
    expect((await node.sql.query('SELECT * FROM ledger WHERE id = 10')).rows).toEqual([]);
    // Committed: passes.
    const c = await open('INSERT INTO ledger VALUES (12, 1)');
    const committed = (await captureHeld(c, [])).held?.xid as string;
    await c.query('COMMIT');
    const h = await open('INSERT INTO ledger VALUES (13, 1)');
    expect((await captureHeld(h, [committed])).changes).toHaveLength(1);
    await h.query('ROLLBACK');
  });

  it('refuses after a PostgreSQL restart, when the held transaction reached the WAL and now reads as aborted', async () => {
    const e = await open('INSERT INTO ledger VALUES (20, 1)');
    const held = (await captureHeld(e, [])).held?.xid as string;
    // A checkpoint writes the WAL of the open transaction, and the next id to hand out past it.
    await node.sql.query('CHECKPOINT');
    await node.server.stop('immediate');
    await node.server.start();
    const sql = await node.reconnect();
    await sql.query('SELECT 1');
    const g = await open('INSERT INTO ledger VALUES (20, 2)');
    await expect(captureHeld(g, [held])).rejects.toMatchObject({ code: 'QS006', detail: held });
    await g.query('ROLLBACK');
  });

  it('cannot be trusted after a crash that lost the held transaction\'s WAL: the id may be handed out again, so the node counts every held entry lost (RFC 0027)', async () => {
    const e = await open('INSERT INTO ledger VALUES (21, 1)');
    const held = (await captureHeld(e, [])).held?.xid as string;
    // No checkpoint: whether the insert's WAL was written before the crash is up to the WAL writer.
    await node.server.stop('immediate');
    await node.server.start();
    const sql = await node.reconnect();
    await sql.query('SELECT 1');
    const g = await open('INSERT INTO ledger VALUES (21, 2)');
    const outcome = await captureHeld(g, [held]).then((c) => c.held?.xid, (error: unknown) => error);
    // Either the id reads as ended and the write is refused, or the new write got that very id and passes:
    // never a different transaction passing while the held one reads as in progress.
    if (typeof outcome === 'string') expect(outcome).toBe(held);
    else expect(outcome).toMatchObject({ code: 'QS006', detail: held });
    await g.query('ROLLBACK');
  });
});
