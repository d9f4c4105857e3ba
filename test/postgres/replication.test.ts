// Proves, on two real PostgreSQL servers, the path a sync write takes: the
// leader captures a transaction, the changes travel as a record (through the
// journal codec), the follower applies them as a prepared transaction that
// nobody can see, that survives a crash, and that commits or rolls back to
// rows equal to the leader's or absent everywhere. Also: exactly-once apply,
// reconciliation after a crash at each step, and last-writer-wins on async.
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { gidFor } from '../../src/core/gid.js';
import { decodeRecord, encodeRecord, type TxnRecord } from '../../src/core/record.js';
import { vclockFromEntries } from '../../src/core/vclock.js';
import type { Lsn, ReplicaId, Term } from '../../src/core/types.js';
import {
  Applier, appliedVclock, commitPrepared, compactApplied, listPrepared, readCaptureKey, reconcile, rollbackPrepared, setTableMode, type JournalVerdict,
} from '../../src/postgres/index.js';
import { createLogger } from '../../src/log.js';
import { PgDatabase } from '../../src/postgres/database.js';
import { leaderWriteOn, startNode, tableImage, type TestNode } from '../support/postgres.js';

const CLUSTER = 'test';
let leader: TestNode;
let follower: TestNode;
let applier: Applier;
let lsn = 0;
let leaderKey = '';
let followerKey = '';

const SCHEMA = `
  CREATE TABLE items (
    id bigint PRIMARY KEY, name text, qty numeric(40,10), big bigint, f float8, tags text[], doc jsonb,
    at timestamptz, blob bytea, len int GENERATED ALWAYS AS (length(name)) STORED);
  CREATE TABLE pairs (a int, b text, v text, PRIMARY KEY (a, b));
  CREATE TABLE counters (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, n int);
  CREATE TABLE kv (k text PRIMARY KEY, v text);`;

beforeAll(async () => {
  [leader, follower] = await Promise.all([startNode(), startNode()]);
  for (const [node, replica, role] of [[leader, 1, 'leader'], [follower, 2, 'follower']] as const) {
    await node.sql.query(SCHEMA);
    await node.sql.query(`UPDATE qsync.node SET replica_id = $1, role = $2, term = 1, leader_id = 1, leader_address = '127.0.0.1:7401'`, [replica, role]);
    for (const table of ['items', 'pairs', 'counters']) await setTableMode(node.sql, table, 'sync');
    await setTableMode(node.sql, 'kv', 'async');
  }
  applier = await Applier.create(await follower.connect());
  [leaderKey, followerKey] = await Promise.all([readCaptureKey(leader.sql), readCaptureKey(follower.sql)]);
});
afterAll(async () => {
  await Promise.all([leader?.destroy(), follower?.destroy()]);
});

/**
 * Plant rows in a replicated table as a test's starting state (the row
 * versions are planted beside them): as a replica session, since a plain
 * write to a replicated table cannot commit outside qsync.
 */
async function planted(node: TestNode, sql: string): Promise<void> {
  await node.sql.query(`BEGIN; SET LOCAL session_replication_role = replica; ${sql}; COMMIT`);
}

/** Run `sql` on the leader as one qsync write; return the TXN record as a peer would receive it. */
async function leaderWrite(sql: string, options: { idempotencyKey?: string; params?: unknown[] } = {}): Promise<TxnRecord> {
  lsn += 1;
  const header = { replica: 1 as ReplicaId, lsn: lsn as Lsn, term: 1 as Term, time: 1_000 + lsn };
  const gid = gidFor(CLUSTER, header.replica, header.lsn);
  const session = await leader.connect();
  const outcome = await leaderWriteOn(session, { ...header, captureKey: leaderKey, reserve: () => ({ lsn: header.lsn, gid, time: header.time }), idempotencyKey: options.idempotencyKey ?? null }, async (c) => {
    await c.query(sql, options.params);
  });
  await session.end();
  if (outcome.kind === 'empty') throw new Error('nothing captured');
  const record: TxnRecord = { kind: 'txn', ...header, gid, sync: outcome.kind === 'prepared', changes: outcome.changes, idempotencyKey: options.idempotencyKey ?? null };
  const wire = decodeRecord(encodeRecord(record));
  if (!wire.ok) throw wire.error;
  return wire.record as TxnRecord;
}

async function count(client: pg.ClientBase, table: string): Promise<number> {
  return (await client.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table}`)).rows[0]?.n ?? -1;
}

async function both(fn: (node: TestNode) => Promise<unknown>): Promise<void> {
  await Promise.all([fn(leader), fn(follower)]);
}

async function expectSame(table: string, orderBy: string): Promise<string[]> {
  const [a, b] = await Promise.all([tableImage(leader.sql, table, orderBy), tableImage(follower.sql, table, orderBy)]);
  expect(b).toEqual(a);
  return a;
}

describe('capture → record → apply as a prepared transaction', () => {
  it('keeps every type exact, invisible until COMMIT PREPARED, then equal on both nodes', async () => {
    const record = await leaderWrite(`INSERT INTO items (id, name, qty, big, f, tags, doc, at, blob) VALUES
      (1, 'plain', 1.5, 1, 0.1, '{a,b}', '{"k": 1}', '2024-02-29 12:34:56.789123+05:30', '\\x00ff'),
      (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
      (3, '日本語 🎉 "quotes" \\ back', 123456789012345678901234567890.0123456789, 9007199254740993, 'NaN',
          '{"x y",NULL,"é"}', '{"big": 123456789012345678901234567890, "nested": [1, {"n": null}]}', 'infinity', '\\x'),
      (4, 'neg', -0.0000000001, -9223372036854775808, '-Infinity', '{}', '[]', '1970-01-01 00:00:00+00', '\\xdeadbeef')`);
    expect(record.sync).toBe(true);
    expect(record.changes.map((c) => [c.table, c.op])).toEqual([['public.items', 'insert']]);
    // The leader's transaction is prepared, not committed: nobody sees it yet.
    expect(await count(leader.sql, 'items')).toBe(0);

    expect(await applier.apply(record, { prepare: true })).toBe('prepared');
    expect(await count(follower.sql, 'items')).toBe(0);
    expect((await listPrepared(follower.sql, CLUSTER)).map((p) => p.gid)).toEqual([record.gid]);

    await both((n) => commitPrepared(n.sql, record.gid));
    const rows = await expectSame('items', 'id');
    expect(rows).toHaveLength(4);
    expect(rows[2]).toContain('123456789012345678901234567890.0123456789');
    expect(rows[2]).toContain('9007199254740993');
    expect(rows[2]).toContain('日本語 🎉');
  });

  it('replicates updates (including primary-key changes), deletes and multi-statement transactions in order', async () => {
    for (const sql of [
      `UPDATE items SET id = id + 100, name = coalesce(name, '') || '!' WHERE id IN (1, 2)`,
      `WITH a AS (INSERT INTO pairs VALUES (1, 'x', 'first'), (1, 'y', 'second'), (2, 'x', 'third') RETURNING 1) SELECT count(*) FROM a`,
      `DELETE FROM items WHERE id = 4`,
    ]) {
      const record = await leaderWrite(sql);
      expect(await applier.apply(record, { prepare: true })).toBe('prepared');
      await both((n) => commitPrepared(n.sql, record.gid));
    }
    const multi = await (async () => {
      lsn += 1;
      const header = { replica: 1 as ReplicaId, lsn: lsn as Lsn, term: 1 as Term, time: 1_000 + lsn };
      const gid = gidFor(CLUSTER, header.replica, header.lsn);
      const session = await leader.connect();
      const outcome = await leaderWriteOn(session, { ...header, captureKey: leaderKey, reserve: () => ({ lsn: header.lsn, gid, time: header.time }), idempotencyKey: 'multi-1' }, async (c) => {
        await c.query(`INSERT INTO pairs VALUES (3, 'z', 'new')`);
        await c.query(`UPDATE pairs SET v = v || '+' WHERE a = 3`);
        await c.query(`UPDATE pairs SET b = 'w' WHERE a = 1 AND b = 'x'`);
        await c.query(`INSERT INTO counters (n) VALUES (10), (20)`);
        await c.query(`DELETE FROM pairs WHERE a = 2`);
      });
      await session.end();
      if (outcome.kind !== 'prepared') throw new Error(outcome.kind);
      return { kind: 'txn', ...header, gid, sync: true, changes: outcome.changes, idempotencyKey: 'multi-1' } satisfies TxnRecord;
    })();
    expect(multi.changes.map((c) => `${c.table}:${c.op}`)).toEqual(['public.pairs:insert', 'public.pairs:update', 'public.pairs:update', 'public.counters:insert', 'public.pairs:delete']);
    expect(await applier.apply(multi, { prepare: true })).toBe('prepared');
    await both((n) => commitPrepared(n.sql, multi.gid));
    expect(await expectSame('items', 'id')).toHaveLength(3);
    expect(await expectSame('pairs', 'a, b')).toEqual([
      '{"a": 1, "b": "w", "v": "first"}', '{"a": 1, "b": "y", "v": "second"}', '{"a": 3, "b": "z", "v": "new+"}',
    ]);
    expect(await expectSame('counters', 'id')).toEqual(['{"n": 10, "id": 1}', '{"n": 20, "id": 2}']);
    expect((await follower.sql.query(`SELECT replica_id, lsn FROM qsync.idempotency WHERE key = 'multi-1'`)).rows).toEqual([{ replica_id: 1, lsn: String(multi.lsn) }]);
  });

  it('applies each record exactly once', async () => {
    const record = await leaderWrite(`UPDATE items SET qty = qty + 1 WHERE id = 3`);
    expect(await applier.apply(record, { prepare: true })).toBe('prepared');
    expect(await applier.apply(record, { prepare: true })).toBe('skipped'); // still in the limbo
    await both((n) => commitPrepared(n.sql, record.gid));
    expect(await applier.apply(record, { prepare: true })).toBe('skipped'); // committed
    await expectSame('items', 'id');
    expect(await appliedVclock(follower.sql)).toEqual([0, lsn]);
    expect(await compactApplied(follower.sql)).toBeGreaterThan(0);
    expect(await appliedVclock(follower.sql)).toEqual([0, lsn]);
  });

  it('rolls back on both nodes: the rows never appear anywhere', async () => {
    const record = await leaderWrite(`INSERT INTO items (id, name) VALUES (50, 'doomed')`, { idempotencyKey: 'doomed' });
    await applier.apply(record, { prepare: true });
    await both((n) => rollbackPrepared(n.sql, record.gid));
    for (const node of [leader, follower]) {
      expect((await node.sql.query(`SELECT count(*)::int AS n FROM items WHERE id = 50`)).rows).toEqual([{ n: 0 }]);
      expect((await node.sql.query(`SELECT count(*)::int AS n FROM qsync.idempotency WHERE key = 'doomed'`)).rows).toEqual([{ n: 0 }]);
    }
    expect(await rollbackPrepared(follower.sql, record.gid)).toBe(false); // already gone: idempotent
  });

  it('refuses a change for a table that is not replicated here, and applies nothing of it', async () => {
    const record = await leaderWrite(`INSERT INTO items (id, name) VALUES (60, 'x')`);
    const bad: TxnRecord = { ...record, lsn: (record.lsn + 1000) as Lsn, gid: gidFor(CLUSTER, 1 as ReplicaId, (record.lsn + 1000) as Lsn), changes: [...record.changes, { table: 'public.nowhere', op: 'insert', rows: '[]' }] };
    await expect(applier.apply(bad, { prepare: true })).rejects.toMatchObject({ code: 'PG_APPLY', message: expect.stringMatching(/public.nowhere, which is not replicated on this node/) });
    expect(await listPrepared(follower.sql, CLUSTER)).toEqual([]);
    await applier.apply(record, { prepare: true });
    await both((n) => commitPrepared(n.sql, record.gid));
  });

  it('turns rows PostgreSQL cannot take into a typed error with the SQLSTATE, leaving nothing prepared', async () => {
    const record = await leaderWrite(`INSERT INTO items (id, name) VALUES (70, 'ok')`);
    await both((n) => rollbackPrepared(n.sql, record.gid));
    const bad: TxnRecord = { ...record, changes: [{ table: 'public.items', op: 'insert', rows: '[{"id": "seventy", "name": "bad"}]' }] };
    await expect(applier.apply(bad, { prepare: true })).rejects.toMatchObject({ code: 'PG_APPLY', context: { sqlstate: '22P02' }, message: expect.stringMatching(/applying 1:\d+ failed: invalid input syntax for type bigint/) });
    const notJson: TxnRecord = { ...record, changes: [{ table: 'public.items', op: 'insert', rows: '[{"id": 1,' }] };
    await expect(applier.apply(notJson, { prepare: true })).rejects.toMatchObject({ code: 'PG_APPLY', context: { sqlstate: '22P02' } });
    expect(await listPrepared(follower.sql, CLUSTER)).toEqual([]);
    expect(await applier.apply(record, { prepare: false })).toBe('applied'); // the applier still works
    await follower.sql.query('DELETE FROM qsync.applied WHERE lsn = $1', [record.lsn]);
    await follower.sql.query('BEGIN; SET LOCAL session_replication_role = replica; DELETE FROM items WHERE id = 70; COMMIT');
  });
});

describe('the apply queue: many confirmed records in one transaction', () => {
  /** Leader writes, committed on the leader (a sync one through COMMIT PREPARED), as records for the follower. */
  async function written(sqls: readonly string[], key?: string): Promise<TxnRecord[]> {
    const records: TxnRecord[] = [];
    for (const [i, sql] of sqls.entries()) {
      const record = await leaderWrite(sql, i === 0 && key !== undefined ? { idempotencyKey: key } : {});
      if (record.sync) await commitPrepared(leader.sql, record.gid);
      records.push(record);
    }
    return records;
  }

  it('applies inserts, key-moving updates, deletes and async rows in journal order, with their marks, exactly once', async () => {
    const records = await written([
      `INSERT INTO pairs VALUES (40, 'a', 'one'), (40, 'b', 'two'), (41, 'a', 'three')`,
      `UPDATE pairs SET b = 'c', v = v || '!' WHERE a = 40 AND b = 'a'`,
      `DELETE FROM pairs WHERE a = 41`,
      `INSERT INTO kv VALUES ('batch-1', 'x'), ('batch-2', 'y')`,
      `UPDATE pairs SET v = 'it''s $& $1 \\ done' WHERE a = 40 AND b = 'b'`,
    ], 'batch-key');
    expect(records.map((r) => r.sync)).toEqual([true, true, true, false, true]);
    const before = await appliedVclock(follower.sql);
    expect(await applier.applyBatch(records, [])).toBe(5);
    expect(await expectSame('pairs', 'a, b')).toEqual(expect.arrayContaining(['{"a": 40, "b": "b", "v": "it\'s $& $1 \\\\ done"}', '{"a": 40, "b": "c", "v": "one!"}']));
    expect((await follower.sql.query(`SELECT count(*)::int AS n FROM pairs WHERE a = 41`)).rows).toEqual([{ n: 0 }]);
    expect((await follower.sql.query(`SELECT v FROM kv WHERE k LIKE 'batch-%' ORDER BY k`)).rows).toEqual([{ v: 'x' }, { v: 'y' }]);
    expect((await follower.sql.query(`SELECT lsn::int FROM qsync.idempotency WHERE key = 'batch-key'`)).rows).toEqual([{ lsn: records[0]?.lsn }]);
    expect(await appliedVclock(follower.sql)).toEqual([0, Math.max(records.at(-1)?.lsn ?? 0, before[1] ?? 0)]);
    // Again, whole or in part: nothing is applied twice.
    expect(await applier.applyBatch(records, [])).toBe(0);
    expect(await applier.applyBatch(records.slice(2), [])).toBe(0);
    await both((n) => planted(n, `DELETE FROM kv WHERE k LIKE 'batch-%'; DELETE FROM qsync.row_versions WHERE table_name = 'public.kv'`));
  });

  it('upserts consecutive changes into one table as one statement, the last image of each key winning as in order', async () => {
    const record = (n: number, rows: unknown[]): TxnRecord => ({
      kind: 'txn', replica: 9 as ReplicaId, lsn: n as Lsn, term: 1 as Term, time: n, gid: gidFor(CLUSTER, 9 as ReplicaId, n as Lsn), sync: true,
      changes: [{ table: 'public.pairs', op: 'insert', rows: JSON.stringify(rows) }], idempotencyKey: null,
    });
    const batch = [
      record(1, [{ a: 80, b: 'x', v: 'first' }]),
      record(2, [{ a: 80, b: 'x', v: 'second' }, { a: 81, b: 'x', v: 'other' }]),
      record(3, [{ a: 80, b: 'x', v: 'third' }]),
    ];
    expect(await applier.applyBatch(batch, [])).toBe(3);
    expect((await follower.sql.query(`SELECT a, v FROM pairs WHERE a IN (80, 81) ORDER BY a`)).rows).toEqual([{ a: 80, v: 'third' }, { a: 81, v: 'other' }]);
    await planted(follower, `DELETE FROM pairs WHERE a IN (80, 81); DELETE FROM qsync.applied WHERE replica_id = 9`);
  });

  it('applies nothing of a batch when one record fails: no row and no mark', async () => {
    const [good, other] = await written([`INSERT INTO pairs VALUES (50, 'a', 'good')`, `INSERT INTO pairs VALUES (51, 'a', 'good')`]);
    const bad: TxnRecord = { ...(other as TxnRecord), changes: [{ table: 'public.pairs', op: 'insert', rows: '[{"a": "fifty", "b": "x"}]' }] };
    await expect(applier.applyBatch([good as TxnRecord, bad], [])).rejects.toMatchObject({ code: 'PG_APPLY', context: { sqlstate: '22P02' } });
    expect((await follower.sql.query(`SELECT count(*)::int AS n FROM pairs WHERE a IN (50, 51)`)).rows).toEqual([{ n: 0 }]);
    expect((await follower.sql.query(`SELECT count(*)::int AS n FROM qsync.applied WHERE lsn IN ($1, $2)`, [good?.lsn, other?.lsn])).rows).toEqual([{ n: 0 }]);
    expect(await applier.applyBatch([good as TxnRecord, other as TxnRecord], [])).toBe(2);
    await expectSame('pairs', 'a, b');
  });

  it('tells, before anything is applied, a record this node could not apply: a table not replicated here, a column it lacks', async () => {
    const [record] = await written([`INSERT INTO pairs VALUES (60, 'a', 'fits')`]);
    const fits = record as TxnRecord;
    expect(applier.unfit(fits)).toBeNull();
    expect(applier.unfit({ ...fits, changes: [{ table: 'public.nowhere', op: 'insert', rows: '[]' }] })).toMatch(/public.nowhere is not replicated on this node; create it and run: qsync table sync public.nowhere/);
    expect(applier.unfit({ ...fits, changes: [{ table: 'public.pairs', op: 'insert', rows: '[{"a": 1, "b": "x", "v": "y", "w": "z"}]' }] })).toMatch(/carry column w, which public.pairs lacks here/);
    expect(await applier.applyBatch([fits], [])).toBe(1);
  });
});

describe('crashes', () => {
  it('keeps a prepared transaction, invisible and locked, across a SIGKILL of the postmaster', async () => {
    const record = await leaderWrite(`UPDATE items SET name = 'after crash' WHERE id = 3`);
    await applier.apply(record, { prepare: true });
    await follower.server.kill();
    await follower.server.start();
    const sql = await follower.reconnect();
    applier = await Applier.create(await follower.connect());
    expect((await listPrepared(sql, CLUSTER)).map((p) => p.gid)).toEqual([record.gid]);
    expect((await sql.query(`SELECT name FROM items WHERE id = 3`)).rows[0]?.name).not.toBe('after crash');
    // A direct write is stopped by the fence (this node is a follower) ...
    await expect(sql.query(`UPDATE items SET name = 'x' WHERE id = 3`)).rejects.toMatchObject({ code: 'QS001' });
    // ... and even past the fence, as apply runs, the prepared transaction still holds its row lock.
    await sql.query('BEGIN');
    await sql.query(`SET LOCAL session_replication_role = replica; SET LOCAL lock_timeout = '100ms'`);
    await expect(sql.query(`UPDATE items SET name = 'x' WHERE id = 3`)).rejects.toMatchObject({ code: '55P03' });
    await sql.query('ROLLBACK');
    await both((n) => commitPrepared(n.sql, record.gid));
    expect((await sql.query(`SELECT name FROM items WHERE id = 3`)).rows[0]?.name).toBe('after crash');
  });

  it('revives an entry rolled back too early: applied again below later applied lsns, exactly once (void ROLLBACK, simulator seed 19)', async () => {
    const early = await leaderWrite(`INSERT INTO items (id, name) VALUES (500, 'rolled back too early')`);
    const later = await leaderWrite(`INSERT INTO items (id, name) VALUES (501, 'later')`);
    expect(await applier.apply(early, { prepare: true })).toBe('prepared');
    await rollbackPrepared(follower.sql, early.gid); // the void ROLLBACK
    expect(await applier.apply(later, { prepare: false })).toBe('applied'); // the applied vclock passes it
    // A plain apply skips it (max lsn applied is past it); a revive applies it.
    expect(await applier.apply(early, { prepare: false })).toBe('skipped');
    expect(await applier.apply(early, { prepare: false, exact: true })).toBe('applied');
    expect(await applier.apply(early, { prepare: false, exact: true })).toBe('skipped');
    expect((await follower.sql.query(`SELECT name FROM items WHERE id = 500`)).rows).toEqual([{ name: 'rolled back too early' }]);
    await both((n) => commitPrepared(n.sql, early.gid));
    await both((n) => commitPrepared(n.sql, later.gid));
    await expectSame('items', 'id');
  });

  // A crash can stop the leader at any step of the write path. After restart,
  // reconcile() must make PostgreSQL agree with what the journal decided.
  it.each<[string, JournalVerdict | 'not prepared' | 'finished', boolean]>([
    ['before PREPARE (transaction lost with the session)', 'not prepared', false],
    ['after PREPARE, before the TXN was journaled', 'unknown', false],
    ['after the TXN was journaled, before a quorum', 'pending', false],
    ['after ROLLBACK was journaled', 'rolled-back', false],
    ['after CONFIRM was journaled, before COMMIT PREPARED', 'confirmed', true],
    ['after COMMIT PREPARED', 'finished', true],
  ])('reconciles a crash %s', async (_step, verdict, visible) => {
    const id = 1_000 + lsn;
    lsn += 1;
    const header = { replica: 1 as ReplicaId, lsn: lsn as Lsn, term: 1 as Term, time: 1_000 + lsn };
    const gid = gidFor(CLUSTER, header.replica, header.lsn);
    const session = await leader.connect();
    if (verdict === 'not prepared') {
      await session.query('BEGIN');
      await session.query(`SELECT set_config('qsync.term', '1', true)`);
      await session.query(`INSERT INTO items (id, name) VALUES ($1, 'crash')`, [id]);
    } else {
      await leaderWriteOn(session, { ...header, captureKey: leaderKey, reserve: () => ({ lsn: header.lsn, gid, time: header.time }), idempotencyKey: null }, async (c) => {
        await c.query(`INSERT INTO items (id, name) VALUES ($1, 'crash')`, [id]);
      });
      if (verdict === 'finished') await commitPrepared(leader.sql, gid);
    }
    await leader.server.kill();
    await leader.server.start();
    const sql = await leader.reconnect();
    // The sidecar's own database handle, as recovery uses it.
    const db = await PgDatabase.connect(leader.server.connectionString, CLUSTER, createLogger({ test: 'reconcile' }, undefined, 'silent'), async () => undefined);
    onTestFinished(() => db.close());
    const report = await reconcile(db, (entry) => (entry.gid === gid && verdict !== 'not prepared' && verdict !== 'finished' ? verdict : 'unknown'));
    expect(report).toEqual({
      committed: verdict === 'confirmed' ? [gid] : [],
      rolledBack: verdict === 'unknown' || verdict === 'rolled-back' ? [gid] : [],
      kept: verdict === 'pending' ? [gid] : [],
    });
    expect((await sql.query(`SELECT count(*)::int AS n FROM items WHERE id = $1`, [id])).rows).toEqual([{ n: visible ? 1 : 0 }]);
    if (verdict === 'pending') {
      // Still in the limbo; a later verdict resolves it.
      expect(await reconcile(db, () => 'rolled-back')).toMatchObject({ rolledBack: [gid] });
    }
    expect(await listPrepared(sql, CLUSTER)).toEqual([]);
  });
});

describe('compacting applied marks', () => {
  it('drops the marks at or below the journal\'s start and keeps each replica\'s highest', async () => {
    await follower.sql.query('INSERT INTO qsync.applied SELECT 9, g FROM generate_series(1, 5) g');
    const marks = async (): Promise<number[]> => (await follower.sql.query<{ lsn: string }>('SELECT lsn FROM qsync.applied WHERE replica_id = 9 ORDER BY lsn')).rows.map((r) => Number(r.lsn));
    expect(await compactApplied(follower.sql, vclockFromEntries([[9 as ReplicaId, 3 as Lsn]]))).toBe(3);
    expect(await marks()).toEqual([4, 5]);
    expect(await compactApplied(follower.sql, vclockFromEntries([[9 as ReplicaId, 10 as Lsn]]))).toBe(1);
    expect(await marks()).toEqual([5]);
    await follower.sql.query('DELETE FROM qsync.applied WHERE replica_id = 9');
  });
});

describe('a table changed outside qsync', () => {
  it('refuses rows that carry a column the table lacks here, naming it and the fix, and applies them once the table is fixed', async () => {
    for (const node of [leader, follower]) {
      await node.sql.query('CREATE TABLE shaped (id int PRIMARY KEY, a text)');
      await setTableMode(node.sql, 'shaped', 'sync');
    }
    await applier.reload();
    await leader.sql.query('ALTER TABLE shaped ADD COLUMN extra text'); // on the leader only, not through qsync ddl
    const record = await leaderWrite(`INSERT INTO shaped VALUES (1, 'a', 'kept'), (2, 'b', 'also kept')`);
    await expect(applier.apply(record, { prepare: false })).rejects.toThrow(/carry column extra, which public.shaped lacks here.*ALTER TABLE public.shaped ADD COLUMN .*qsync ddl/);
    expect(await count(follower.sql, 'shaped')).toBe(0);
    await follower.sql.query('ALTER TABLE shaped ADD COLUMN extra text');
    expect(await applier.apply(record, { prepare: false })).toBe('applied');
    await both((n) => commitPrepared(n.sql, record.gid));
    await expectSame('shaped', 'id');
  });
});

describe('PgDatabase reconnection', () => {
  it('a refused statement leaves the connections alone; a lost connection is reported once, and the call that reconnects fails so the node can check PostgreSQL first', async () => {
    const lines: string[] = [];
    const db = await PgDatabase.connect(leader.server.connectionString, CLUSTER, createLogger({ test: 'reconnect' }, { write: (line: string) => lines.push(line) }, 'info'), async () => undefined);
    onTestFinished(() => db.close());
    let lost = 0;
    db.onLost(() => {
      lost += 1;
    });
    await expect(db.setTableMode('no_such_table', 'sync')).rejects.toThrow(/no_such_table/);
    await db.appliedVclock();
    expect(lines.filter((line) => line.includes('reconnected to PostgreSQL'))).toHaveLength(0);
    // The server ends the sidecar's connections, as a restart does.
    const sql = await leader.reconnect();
    await sql.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND datname = current_database() AND application_name = ''`);
    await new Promise((resolve) => setTimeout(resolve, 200)); // let the ended connections' events arrive
    expect(lost).toBe(1);
    await expect(db.appliedVclock()).rejects.toThrow(/reconnected to PostgreSQL/);
    for (let i = 0; i < 10; i += 1) {
      await db.appliedVclock();
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect(lines.filter((line) => line.includes('reconnected to PostgreSQL'))).toHaveLength(1);
    expect(lost).toBe(1);
  });
});

describe('async tables: last writer wins', () => {
  it('converges on the write with the higher (time, replica) and records the loser', async () => {
    // Node 1 writes k at time 100; node 2 writes k concurrently at time 200.
    const writeOn = async (node: TestNode, replica: number, time: number, value: string): Promise<TxnRecord> => {
      const header = { replica: replica as ReplicaId, lsn: (9_000 + time) as Lsn, term: 1 as Term, time };
      const gid = gidFor(CLUSTER, header.replica, header.lsn);
      const session = await node.connect();
      const outcome = await leaderWriteOn(session, { ...header, captureKey: node === leader ? leaderKey : followerKey, reserve: () => ({ lsn: header.lsn, gid, time: header.time }), idempotencyKey: null }, async (c) => {
        await c.query(`INSERT INTO kv VALUES ('k', $1) ON CONFLICT (k) DO UPDATE SET v = excluded.v`, [value]);
      });
      await session.end();
      if (outcome.kind !== 'committed') throw new Error(outcome.kind);
      return { kind: 'txn', ...header, gid, sync: false, changes: outcome.changes, idempotencyKey: null };
    };
    const fromLeader = await writeOn(leader, 1, 100, 'from node 1');
    const fromFollower = await writeOn(follower, 2, 200, 'from node 2');
    const leaderApplier = await Applier.create(await leader.connect());
    expect(await applier.apply(fromLeader, { prepare: false })).toBe('applied');
    expect(await leaderApplier.apply(fromFollower, { prepare: false })).toBe('applied');

    expect(await expectSame('kv', 'k')).toEqual(['{"k": "k", "v": "from node 2"}']);
    const conflicts = await follower.sql.query(`SELECT table_name, op, key, lost->>'v' AS lost, lost_replica, kept_replica, kept_time::int FROM qsync.conflicts`);
    expect(conflicts.rows).toEqual([{ table_name: 'public.kv', op: 'insert', key: { k: 'k' }, lost: 'from node 1', lost_replica: 1, kept_replica: 2, kept_time: 200 }]);
    expect((await leader.sql.query(`SELECT count(*)::int AS n FROM qsync.conflicts`)).rows).toEqual([{ n: 0 }]);
  });

  it.each([
    ['an older remote write loses to an uncommitted newer local one', 300, 'local'],
    ['a newer remote write wins over an uncommitted older local one', 700, 'remote'],
  ])('judges against the latest version, not the snapshot: %s', async (_case, remoteTime, winner) => {
    const key = `race-${remoteTime}`;
    // A local writer on the follower: written and captured at time 500, not yet committed.
    const local = await follower.connect();
    await leaderWriteOn(local, {
      term: 1 as Term, replica: 2 as ReplicaId, idempotencyKey: null, captureKey: followerKey,
      reserve: () => ({ lsn: (20_000 + remoteTime) as Lsn, gid: gidFor(CLUSTER, 2 as ReplicaId, (20_000 + remoteTime) as Lsn), time: 500 }),
      journal: async () => {
        // While the local transaction is still open, a remote write of the same key arrives.
        const remote: TxnRecord = {
          kind: 'txn', replica: 1 as ReplicaId, lsn: (30_000 + remoteTime) as Lsn, term: 1 as Term, time: remoteTime,
          gid: gidFor(CLUSTER, 1 as ReplicaId, (30_000 + remoteTime) as Lsn), sync: false, idempotencyKey: null,
          changes: [{ table: 'public.kv', op: 'insert', rows: JSON.stringify([{ k: key, v: 'remote' }]) }],
        };
        pendingApply = applier.apply(remote, { prepare: false });
        await new Promise((r) => setTimeout(r, 200)); // the applier now waits on the local version
      },
    }, async (c) => {
      await c.query(`INSERT INTO kv VALUES ($1, 'local')`, [key]);
    });
    await pendingApply;
    await local.end();
    expect((await follower.sql.query(`SELECT v FROM kv WHERE k = $1`, [key])).rows).toEqual([{ v: winner }]);
    expect((await follower.sql.query(`SELECT time::int, replica_id FROM qsync.row_versions WHERE key = $1`, [{ k: key }])).rows)
      .toEqual([winner === 'local' ? { time: 500, replica_id: 2 } : { time: remoteTime, replica_id: 1 }]);
    expect((await follower.sql.query(`SELECT count(*)::int AS n FROM qsync.conflicts WHERE key = $1`, [{ k: key }])).rows).toEqual([{ n: winner === 'local' ? 1 : 0 }]);
  });

  it('applies a newer remote UPDATE over an older row: the key that stays is judged once, not as a delete and then an upsert', async () => {
    // The e2e flake: node 2 updated a row it had from node 1; applied on node 1, the update's
    // old key was judged first (bumping the version), and the new image then lost to itself.
    await planted(follower, `INSERT INTO kv VALUES ('moved-not', 'old')`);
    await follower.sql.query(`INSERT INTO qsync.row_versions (table_name, key, time, replica_id) VALUES ('public.kv', '{"k": "moved-not"}', 100, 2)`);
    const update: TxnRecord = {
      kind: 'txn', replica: 1 as ReplicaId, lsn: 40_000 as Lsn, term: 1 as Term, time: 300, gid: gidFor(CLUSTER, 1 as ReplicaId, 40_000 as Lsn), sync: false, idempotencyKey: null,
      changes: [{ table: 'public.kv', op: 'update', rows: JSON.stringify([{ k: 'moved-not', v: 'new' }]), oldKeys: JSON.stringify([{ k: 'moved-not' }]) }],
    };
    expect(await applier.apply(update, { prepare: false })).toBe('applied');
    expect((await follower.sql.query(`SELECT v FROM kv WHERE k = 'moved-not'`)).rows).toEqual([{ v: 'new' }]);
    expect((await follower.sql.query(`SELECT count(*)::int AS n FROM qsync.conflicts WHERE key = '{"k": "moved-not"}'`)).rows).toEqual([{ n: 0 }]);
  });

  it('judges each async change of a batch in order, in one transaction, as one by one would', async () => {
    // A newer version is already here for b; the batch then brings, in journal order: a and b from node 1
    // at time 600, a again from node 3 at an older time (loses), a delete of c at 650 (wins over the planted
    // 100), and an update moving d to e at 700.
    await planted(follower, `INSERT INTO kv VALUES ('batch-b', 'here'), ('batch-c', 'old'), ('batch-d', 'old')`);
    await follower.sql.query(`INSERT INTO qsync.row_versions (table_name, key, time, replica_id) VALUES
      ('public.kv', '{"k": "batch-b"}', 900, 2), ('public.kv', '{"k": "batch-c"}', 100, 2), ('public.kv', '{"k": "batch-d"}', 100, 2)`);
    const txn = (replica: number, at: number, time: number, change: TxnRecord['changes'][number]): TxnRecord => ({
      kind: 'txn', replica: replica as ReplicaId, lsn: at as Lsn, term: 1 as Term, time, gid: gidFor(CLUSTER, replica as ReplicaId, at as Lsn), sync: false, idempotencyKey: null, changes: [change],
    });
    const batch = [
      txn(1, 50_001, 600, { table: 'public.kv', op: 'insert', rows: JSON.stringify([{ k: 'batch-a', v: 'a from 1' }, { k: 'batch-b', v: 'b from 1' }]) }),
      txn(3, 50_001, 550, { table: 'public.kv', op: 'update', rows: JSON.stringify([{ k: 'batch-a', v: 'a from 3' }]) }),
      txn(1, 50_002, 650, { table: 'public.kv', op: 'delete', rows: JSON.stringify([{ k: 'batch-c' }]) }),
      txn(1, 50_003, 700, { table: 'public.kv', op: 'update', rows: JSON.stringify([{ k: 'batch-e', v: 'moved' }]), oldKeys: JSON.stringify([{ k: 'batch-d' }]) }),
    ];
    expect(await applier.applyBatch(batch, [], false)).toBe(4);
    expect((await follower.sql.query(`SELECT k, v FROM kv WHERE k LIKE 'batch-%' ORDER BY k`)).rows).toEqual([
      { k: 'batch-a', v: 'a from 1' }, { k: 'batch-b', v: 'here' }, { k: 'batch-e', v: 'moved' },
    ]);
    const lost = await follower.sql.query(`SELECT key->>'k' AS k, op, lost_replica, kept_replica, kept_time::int FROM qsync.conflicts WHERE key->>'k' LIKE 'batch-%' ORDER BY key->>'k'`);
    expect(lost.rows).toEqual([
      { k: 'batch-a', op: 'update', lost_replica: 3, kept_replica: 1, kept_time: 600 },
      { k: 'batch-b', op: 'insert', lost_replica: 1, kept_replica: 2, kept_time: 900 },
    ]);
    const versions = await follower.sql.query(`SELECT key->>'k' AS k, time::int, replica_id FROM qsync.row_versions WHERE key->>'k' LIKE 'batch-%' ORDER BY key->>'k'`);
    expect(versions.rows).toEqual([
      { k: 'batch-a', time: 600, replica_id: 1 }, { k: 'batch-b', time: 900, replica_id: 2 }, { k: 'batch-c', time: 650, replica_id: 1 },
      { k: 'batch-d', time: 700, replica_id: 1 }, { k: 'batch-e', time: 700, replica_id: 1 },
    ]);
    expect((await follower.sql.query(`SELECT replica_id, lsn::int FROM qsync.applied WHERE lsn BETWEEN 50001 AND 50003 ORDER BY replica_id, lsn`)).rows)
      .toEqual([{ replica_id: 1, lsn: 50_001 }, { replica_id: 1, lsn: 50_002 }, { replica_id: 1, lsn: 50_003 }, { replica_id: 3, lsn: 50_001 }]);
  });

  it('applies every change of one async transaction to the same key, the last one last: they share one version', async () => {
    // One transaction inserted a key and then updated it (two statements, two changes, one version).
    const twice: TxnRecord = {
      kind: 'txn', replica: 1 as ReplicaId, lsn: 60_001 as Lsn, term: 1 as Term, time: 800, gid: gidFor(CLUSTER, 1 as ReplicaId, 60_001 as Lsn), sync: false, idempotencyKey: null,
      changes: [
        { table: 'public.kv', op: 'insert', rows: JSON.stringify([{ k: 'twice', v: 'first' }]) },
        { table: 'public.kv', op: 'update', rows: JSON.stringify([{ k: 'twice', v: 'second' }]) },
      ],
    };
    const inBatch = { ...twice, lsn: 60_002 as Lsn, gid: gidFor(CLUSTER, 1 as ReplicaId, 60_002 as Lsn), time: 801,
      changes: twice.changes.map((c) => ({ ...c, rows: c.rows.replace(/twice/g, 'twice-batch') })) };
    expect(await applier.apply(twice, { prepare: false })).toBe('applied');
    expect(await applier.applyBatch([inBatch], [], false)).toBe(1);
    expect((await follower.sql.query(`SELECT k, v FROM kv WHERE k LIKE 'twice%' ORDER BY k`)).rows).toEqual([{ k: 'twice', v: 'second' }, { k: 'twice-batch', v: 'second' }]);
    expect((await follower.sql.query(`SELECT count(*)::int AS n FROM qsync.conflicts WHERE key->>'k' LIKE 'twice%'`)).rows).toEqual([{ n: 0 }]);
  });
});

let pendingApply: Promise<unknown> = Promise.resolve();

describe('the rows a table held when it became replicated (COPY text)', () => {
  let copyLsn = 0;
  /** Mark `table` on the leader, which copies its rows; the chunks as TXN records through the codec. */
  async function copied(table: string, mode: 'sync' | 'async'): Promise<TxnRecord[]> {
    // Above every lsn of replica 1 the tests before applied, so that none is skipped as applied.
    copyLsn = Math.max(copyLsn, 100_000);
    const change = await setTableMode(leader.sql, table, mode, { leader: { replica: 1, reserve: () => ({ lsn: (copyLsn += 1) as Lsn, gid: gidFor(CLUSTER, 1 as ReplicaId, copyLsn as Lsn) }) } });
    await applier.reload(); // the follower's modes changed
    return change.copied.map((chunk) => {
      const record: TxnRecord = {
        kind: 'txn', replica: 1 as ReplicaId, lsn: chunk.lsn, term: 1 as Term, time: 5_000, gid: chunk.gid, sync: false, idempotencyKey: null,
        changes: [{ table: change.name, op: 'copy', rows: chunk.rows, columns: chunk.columns }],
      };
      const wire = decodeRecord(encodeRecord(record));
      if (!wire.ok) throw wire.error;
      return wire.record as TxnRecord;
    });
  }

  it('loads every type exactly, a value of 200,000 two-byte characters included, marked applied on the leader', async () => {
    const ddl = `CREATE TABLE seed (id bigint PRIMARY KEY, name text, qty numeric(40,10), f float8, tags text[], doc jsonb, at timestamptz, blob bytea,
      len int GENERATED ALWAYS AS (length(name)) STORED)`;
    await both((n) => n.sql.query(ddl));
    await leader.sql.query(`INSERT INTO seed (id, name, qty, f, tags, doc, at, blob) VALUES
      (1, E'tab\\there, newline\\nthere, back\\\\slash', 123456789012345678901234567890.0123456789, 1e-300, ARRAY['a,b', NULL, '"q"'], '{"k": [1, "x"]}', '2026-11-22 10:00:00.123456+01', '\\x00ff'),
      (2, repeat('ü', 200000), -1, 'NaN', '{}', 'null', NULL, NULL)`);
    await leader.sql.query('INSERT INTO seed (id, name) SELECT g, md5(g::text) FROM generate_series(3, 60000) g');
    await setTableMode(follower.sql, 'seed', 'sync');
    const records = await copied('seed', 'sync');
    expect(records.length).toBeGreaterThan(1); // 60,000 rows: more than one chunk
    expect(records.reduce((n, r) => n + (r.changes[0]?.rows.split('\n').length ?? 1) - 1, 0)).toBe(60_000);
    for (const record of records) expect(await applier.apply(record, { prepare: false })).toBe('applied');
    await expectSame('seed', 'id');
    const marks = await leader.sql.query<{ n: number }>('SELECT count(*)::int AS n FROM qsync.applied WHERE replica_id = 1 AND lsn = ANY($1)', [records.map((r) => r.lsn)]);
    expect(marks.rows).toEqual([{ n: records.length }]);
    // Applied again (replay after a crash): skipped.
    expect(await applier.apply(records[0] as TxnRecord, { prepare: false })).toBe('skipped');
  });

  it('takes the leader\'s row where the table here holds the key already, and keeps the rows only this node has', async () => {
    await both((n) => n.sql.query('CREATE TABLE seed2 (id int PRIMARY KEY, v text NOT NULL)'));
    await leader.sql.query(`INSERT INTO seed2 VALUES (1, 'leader'), (2, 'leader')`);
    await follower.sql.query(`INSERT INTO seed2 VALUES (2, 'follower'), (3, 'only here')`);
    await setTableMode(follower.sql, 'seed2', 'sync');
    for (const record of await copied('seed2', 'sync')) expect(await applier.apply(record, { prepare: false })).toBe('applied');
    expect((await follower.sql.query('SELECT id, v FROM seed2 ORDER BY id')).rows).toEqual([{ id: 1, v: 'leader' }, { id: 2, v: 'leader' }, { id: 3, v: 'only here' }]);
  });

  it('judges an async table\'s copied rows by last writer wins', async () => {
    await both((n) => n.sql.query('CREATE TABLE seed3 (k text PRIMARY KEY, v text)'));
    await leader.sql.query(`INSERT INTO seed3 VALUES ('old', 'leader'), ('new', 'leader')`);
    await setTableMode(follower.sql, 'seed3', 'async');
    // The follower wrote 'new' after the copy's time (5,000), and 'old' before it.
    await planted(follower, `INSERT INTO seed3 VALUES ('old', 'follower'), ('new', 'follower')`);
    await follower.sql.query(`INSERT INTO qsync.row_versions VALUES ('public.seed3', '{"k": "old"}', 4000, 2), ('public.seed3', '{"k": "new"}', 6000, 2)`);
    for (const record of await copied('seed3', 'async')) expect(await applier.apply(record, { prepare: false })).toBe('applied');
    expect((await follower.sql.query('SELECT k, v FROM seed3 ORDER BY k')).rows).toEqual([{ k: 'new', v: 'follower' }, { k: 'old', v: 'leader' }]);
  });

  it('names a column the rows carry and the table here lacks, and applies once it is added', async () => {
    await leader.sql.query('CREATE TABLE seed4 (id int PRIMARY KEY, extra text)');
    await follower.sql.query('CREATE TABLE seed4 (id int PRIMARY KEY)');
    await leader.sql.query(`INSERT INTO seed4 VALUES (1, 'x')`);
    await setTableMode(follower.sql, 'seed4', 'sync');
    const [record] = await copied('seed4', 'sync');
    await expect(applier.apply(record as TxnRecord, { prepare: false })).rejects.toThrow(/carry column extra, which public.seed4 lacks here/);
    await follower.sql.query('ALTER TABLE seed4 ADD COLUMN extra text');
    expect(await applier.apply(record as TxnRecord, { prepare: false })).toBe('applied');
    await expectSame('seed4', 'id');
  });
});
