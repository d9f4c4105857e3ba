// Last-writer-wins applied in a batch (one statement per run of async changes,
// postgres/apply-sql.ts, the last-writer-wins statement) ends exactly where applying the same TXNs one by
// one ends: the same rows, the same key versions and the same lost writes
// recorded, for random runs of inserts, updates that move keys, and deletes
// from several replicas, against versions already held.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { gidFor } from '../../src/core/gid.js';
import type { Change, TxnRecord } from '../../src/core/record.js';
import type { Lsn, ReplicaId, Term } from '../../src/core/types.js';
import { Applier, setTableMode } from '../../src/postgres/index.js';
import { startNode, type TestNode } from '../support/postgres.js';

let node: TestNode;
let applier: Applier;
let run = 0;

beforeAll(async () => {
  node = await startNode();
  await node.sql.query(`UPDATE qsync.node SET replica_id = 9, role = 'follower', term = 1`);
  for (const table of ['one', 'batch']) {
    await node.sql.query(`CREATE TABLE ${table} (k text PRIMARY KEY, v text)`);
    await setTableMode(node.sql, table, 'async');
  }
  applier = await Applier.create(await node.connect());
});
afterAll(async () => node?.destroy());

const KEYS = ['a', 'b', 'c', 'd'];
const change = fc.oneof(
  fc.record({ op: fc.constant('insert' as const), keys: fc.uniqueArray(fc.constantFrom(...KEYS), { minLength: 1, maxLength: 3 }) }),
  fc.record({ op: fc.constant('update' as const), keys: fc.uniqueArray(fc.constantFrom(...KEYS), { minLength: 1, maxLength: 2 }), moveFrom: fc.option(fc.constantFrom(...KEYS), { nil: undefined }) }),
  fc.record({ op: fc.constant('delete' as const), keys: fc.uniqueArray(fc.constantFrom(...KEYS), { minLength: 1, maxLength: 2 }) }),
);
/** A TXN: its replica, a time (distinct per TXN with its replica), and one to three changes. */
const txn = fc.record({ replica: fc.integer({ min: 1, max: 3 }), time: fc.integer({ min: 1, max: 40 }), changes: fc.array(change, { minLength: 1, maxLength: 3 }) });
/** Versions held before the batch: key → time (replica 2). */
const held = fc.dictionary(fc.constantFrom(...KEYS), fc.integer({ min: 1, max: 40 }));

async function state(table: string): Promise<unknown> {
  const rows = (await node.sql.query(`SELECT k, v FROM ${table} ORDER BY k`)).rows;
  const versions = (await node.sql.query(`SELECT key->>'k' AS k, time::int, replica_id FROM qsync.row_versions WHERE table_name = $1 ORDER BY key->>'k'`, [`public.${table}`])).rows;
  const lost = (await node.sql.query(`SELECT op, key->>'k' AS k, lost->>'v' AS v, lost_replica, lost_time::int, kept_replica, kept_time::int
    FROM qsync.conflicts WHERE table_name = $1 ORDER BY 1, 2, 3, 4, 5, 6, 7`, [`public.${table}`])).rows;
  return { rows, versions, lost };
}

describe('last-writer-wins in a batch', () => {
  it('ends where applying the TXNs one by one ends', async () => {
    await fc.assert(fc.asyncProperty(fc.array(txn, { minLength: 1, maxLength: 6 }), held, async (txns, before) => {
      run += 1;
      // Distinct (time, replica) per TXN, as a replica's hybrid clock gives.
      const seen = new Set<string>();
      const unique = txns.filter((t) => !seen.has(`${t.time}:${t.replica}`) && seen.add(`${t.time}:${t.replica}`));
      const results: unknown[] = [];
      for (const table of ['one', 'batch']) {
        await node.sql.query(`BEGIN; SET LOCAL session_replication_role = replica; DELETE FROM ${table}; DELETE FROM qsync.row_versions WHERE table_name = 'public.${table}';
          DELETE FROM qsync.conflicts WHERE table_name = 'public.${table}'; COMMIT`);
        for (const [key, time] of Object.entries(before)) {
          await node.sql.query(`BEGIN; SET LOCAL session_replication_role = replica; INSERT INTO ${table} VALUES ('${key}', 'held'); COMMIT`);
          await node.sql.query(`INSERT INTO qsync.row_versions (table_name, key, time, replica_id) VALUES ($1, $2, $3, 2)`, [`public.${table}`, { k: key }, time]);
        }
        const records = unique.map((t, i): TxnRecord => {
          const lsn = (run * 200 + (table === 'one' ? 0 : 100) + i + 1) as Lsn;
          const changes = t.changes.map((c): Change => {
            const images = JSON.stringify(c.keys.map((k) => (c.op === 'delete' ? { k } : { k, v: `${k}@${t.time}/${t.replica}` })));
            if (c.op !== 'update' || c.moveFrom === undefined) return { table: `public.${table}`, op: c.op, rows: images };
            return { table: `public.${table}`, op: 'update', rows: images, oldKeys: JSON.stringify([{ k: c.moveFrom }, ...c.keys.slice(1).map((k) => ({ k }))]) };
          });
          return { kind: 'txn', replica: t.replica as ReplicaId, lsn, term: 1 as Term, time: t.time, gid: gidFor('lww', t.replica as ReplicaId, lsn), sync: false, idempotencyKey: null, changes };
        });
        if (table === 'one') for (const record of records) await applier.apply(record, { prepare: false });
        else await applier.applyBatch(records, [], false);
        results.push(await state(table));
      }
      expect(results[1]).toEqual(results[0]);
    }), { numRuns: 100 });
  });
});

describe('a sync TXN that also changes an async table', () => {
  // The leader's capture stamps the async keys of every write, sync ones too (a transaction that
  // touches a sync table and an async one is sync). A follower must record the same version when it
  // applies that TXN, or a concurrent async write to the key is judged differently there: the replicas
  // would differ (DESIGN §2.4).
  it('records its version on the async keys, as the writer did, so an older async write loses whichever comes first', async () => {
    await node.sql.query(`CREATE TABLE mixed (k text PRIMARY KEY, v text)`);
    await setTableMode(node.sql, 'mixed', 'async');
    await applier.reload();
    const txn = (replica: number, lsn: number, time: number, sync: boolean, v: string): TxnRecord => ({
      kind: 'txn', replica: replica as ReplicaId, lsn: lsn as Lsn, term: 1 as Term, time, gid: gidFor('lww', replica as ReplicaId, lsn as Lsn), sync, idempotencyKey: null,
      changes: [{ table: 'public.mixed', op: 'insert', rows: JSON.stringify([{ k: 'a', v }]) }],
    });
    const outcomes: unknown[] = [];
    for (const order of ['sync first', 'async first']) {
      await node.sql.query(`BEGIN; SET LOCAL session_replication_role = replica; DELETE FROM mixed; DELETE FROM qsync.row_versions WHERE table_name = 'public.mixed'; COMMIT`);
      const base = order === 'sync first' ? 50_000 : 60_000;
      // The sync TXN of replica 1 at time 100; an async write of replica 2 to the same key at time 50.
      const syncTxn = txn(1, base + 1, 100, true, 'from the sync TXN');
      const asyncTxn = txn(2, base + 1, 50, false, 'older async write');
      for (const record of order === 'sync first' ? [syncTxn, asyncTxn] : [asyncTxn, syncTxn]) await applier.applyBatch([record], [], false);
      const { rows } = await node.sql.query(`SELECT m.v, r.time::int, r.replica_id FROM mixed m JOIN qsync.row_versions r ON r.table_name = 'public.mixed' AND r.key->>'k' = m.k`);
      outcomes.push(rows);
    }
    expect(outcomes).toEqual([[{ v: 'from the sync TXN', time: 100, replica_id: 1 }], [{ v: 'from the sync TXN', time: 100, replica_id: 1 }]]);
  });
});
