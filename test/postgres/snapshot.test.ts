// Snapshots for a rejoin (RFC 0009) on two real PostgreSQL servers: the
// source's replicated tables and qsync's state from one REPEATABLE READ
// snapshot replace the target's, whose local tables stay; a table replicated
// only on the target becomes local with its rows; a table whose columns
// differ is refused with the column named. The snapshot's applied marks have
// a hole where the source held an entry prepared: a plain apply of that entry
// would skip it, a check by its own lsn (what the rejoined node does) applies it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gidFor } from '../../src/core/gid.js';
import type { TxnRecord } from '../../src/core/record.js';
import type { Lsn, ReplicaId, Term } from '../../src/core/types.js';
import { Applier, appliedLsns, setTableMode } from '../../src/postgres/index.js';
import { loadSnapshot, readSnapshot } from '../../src/postgres/snapshot.js';
import { startNode, tableImage, type TestNode } from '../support/postgres.js';

let source: TestNode;
let target: TestNode;

beforeAll(async () => {
  [source, target] = await Promise.all([startNode(), startNode()]);
  for (const node of [source, target]) {
    await node.sql.query(`CREATE TABLE items (id bigint PRIMARY KEY, name text); CREATE TABLE notes (k text PRIMARY KEY, v text)`);
    await setTableMode(node.sql, 'items', 'sync');
    await setTableMode(node.sql, 'notes', 'async');
  }
  await source.sql.query(`BEGIN; SET LOCAL session_replication_role = replica;
    INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 12000) g;
    INSERT INTO notes VALUES ('a', 'from the source');
    INSERT INTO qsync.applied VALUES (1, 1), (1, 2), (1, 3), (1, 4), (1, 5);
    INSERT INTO qsync.row_versions VALUES ('public.notes', '{"k": "a"}', 42, 1);
    INSERT INTO qsync.idempotency (key, replica_id, lsn) VALUES ('order-1', 1, 3); COMMIT`);
  // Lsn 6 is prepared on the source (its mark invisible), lsn 7 committed after it: a hole.
  await source.sql.query(`BEGIN; SET LOCAL session_replication_role = replica; INSERT INTO items VALUES (100000, 'pending');
    INSERT INTO qsync.applied VALUES (1, 6); PREPARE TRANSACTION 'pending-6'`);
  await source.sql.query(`BEGIN; SET LOCAL session_replication_role = replica; INSERT INTO items VALUES (100001, 'after'); INSERT INTO qsync.applied VALUES (1, 7); COMMIT`);
  await target.sql.query(`BEGIN; SET LOCAL session_replication_role = replica; INSERT INTO items VALUES (1, 'stale'), (99, 'gone');
    INSERT INTO qsync.applied VALUES (1, 1); COMMIT;
    CREATE TABLE mine (id int PRIMARY KEY, note text); INSERT INTO mine VALUES (1, 'local to the target');
    CREATE TABLE old (id int PRIMARY KEY); INSERT INTO old VALUES (5)`);
  await setTableMode(target.sql, 'old', 'async');
});
afterAll(async () => {
  await source?.sql.query(`ROLLBACK PREPARED 'pending-6'`).catch(() => undefined);
  await Promise.all([source?.destroy(), target?.destroy()]);
});

async function copy(): Promise<number> {
  const reader = await source.connect();
  const { tables, parts } = await readSnapshot(reader);
  const load = await loadSnapshot(await target.connect(), tables);
  for await (const part of parts) await load.part(part);
  return load.commit();
}

describe('a snapshot for a rejoin', () => {
  it('replaces the replicated tables and qsync\'s state, and leaves the local ones alone', async () => {
    expect(await copy()).toBe(12_002);
    expect(await tableImage(target.sql, 'items', 'id')).toEqual(await tableImage(source.sql, 'items', 'id'));
    expect(await tableImage(target.sql, 'notes', 'k')).toEqual(['{"k": "a", "v": "from the source"}']);
    expect([...(await appliedLsns(target.sql, 1 as ReplicaId, 0 as Lsn))].sort()).toEqual([1, 2, 3, 4, 5, 7]);
    expect((await target.sql.query('SELECT time, replica_id FROM qsync.row_versions')).rows).toEqual([{ time: '42', replica_id: 1 }]);
    expect((await target.sql.query(`SELECT lsn FROM qsync.idempotency WHERE key = 'order-1'`)).rows).toEqual([{ lsn: '3' }]);
    expect((await target.sql.query('SELECT * FROM mine')).rows).toEqual([{ id: 1, note: 'local to the target' }]);
    expect((await target.sql.query('SELECT * FROM old')).rows).toEqual([{ id: 5 }]);
    expect((await target.sql.query('SELECT table_name, mode FROM qsync.tables ORDER BY 1')).rows).toEqual([{ table_name: 'public.items', mode: 'sync' }, { table_name: 'public.notes', mode: 'async' }]);
  });

  it('has a hole where the source held an entry prepared: only a check by its own lsn applies it', async () => {
    const pending: TxnRecord = {
      kind: 'txn', replica: 1 as ReplicaId, lsn: 6 as Lsn, term: 1 as Term, time: 6, gid: gidFor('test', 1 as ReplicaId, 6 as Lsn), sync: true,
      changes: [{ table: 'public.items', op: 'insert', rows: '[{"id": 100000, "name": "pending"}]' }], idempotencyKey: null,
    };
    const applier = await Applier.create(await target.connect());
    expect(await applier.apply(pending, { prepare: false })).toBe('skipped');
    expect(await applier.apply(pending, { prepare: false, exact: true })).toBe('applied');
    expect((await target.sql.query('SELECT name FROM items WHERE id = 100000')).rows).toEqual([{ name: 'pending' }]);
  });

  it('refuses a table whose columns differ from the source\'s, naming the column, and changes nothing', async () => {
    await target.sql.query('ALTER TABLE notes ADD COLUMN extra int');
    const reader = await source.connect();
    const { tables, parts } = await readSnapshot(reader);
    await expect(loadSnapshot(await target.connect(), tables)).rejects.toThrow(/public.notes: its columns differ from the peer's it rejoins from: column extra exists here but not on the peer/);
    await parts.return(undefined);
    expect((await target.sql.query('SELECT count(*)::int AS n FROM items')).rows).toEqual([{ n: 12_002 }]);
  });
});
