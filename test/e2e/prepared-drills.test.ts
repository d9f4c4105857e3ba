// The failover drills that end a leader's sessions or its leadership, on a
// real 3-node cluster whose leaders prepare their sync writes (`--sync-hold
// prepare`; drill.test.ts runs every drill with the default, writes held
// open: docs/rfc/0027-held-open-writes.md): a killed sidecar leaves its
// prepared writes to its recovery and the next PROMOTE, a killed PostgreSQL
// keeps them, a paused or cut-off leader is deposed with writes prepared.
// Each must pass every checker, with writes in a newer term after the fault
// and every node ending with the same rows. And an async write whose
// deferred foreign key fails is refused before it is journaled, so it is on
// no node (migrations/0007).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startLocalCluster, type LocalCluster } from '../../src/cli/cluster.js';
import { summary } from '../../src/drill/report.js';
import { runDrill } from '../../src/drill/run.js';
import { localTarget } from '../../src/drill/target.js';
import { connect } from '../../src/client/index.js';

let cluster: LocalCluster;

beforeAll(async () => {
  cluster = await startLocalCluster({
    proxies: true, synchroTimeoutMs: 3_000, sidecarArgs: () => ['--sync-hold', 'prepare'],
    tables: [
      { ddl: 'CREATE TABLE parents (id int PRIMARY KEY)', name: 'parents', mode: 'async' },
      { ddl: 'CREATE TABLE children (id int PRIMARY KEY, parent int REFERENCES parents (id) DEFERRABLE INITIALLY DEFERRED)', name: 'children', mode: 'async' },
    ],
    ...(process.env.QSYNC_E2E_DIR === undefined ? {} : { dir: `${process.env.QSYNC_E2E_DIR}/prepared-drills` }),
  });
}, 120_000);

afterAll(async () => {
  await cluster?.stop();
});

describe('failover drills with sync writes prepared', () => {
  it.each([['kill-leader', 21], ['kill-postgres', 22], ['pause-leader', 23], ['partition-leader', 24]] as const)('%s passes every checker', async (scenario, seed) => {
    const result = await runDrill(localTarget(cluster), { scenario, durationMs: 6_000, rate: 60, clients: 6, seed, repetitions: 1, faultMs: 2_500 });
    const text = summary(result);
    expect(result.checks.filter((c) => c.valid !== true), text).toEqual([]);
    expect(result.valid, text).toBe(true);
    expect(result.ops.filter((o) => o.result === 'ok').length, text).toBeGreaterThan(20);
    expect(result.faults, text).toHaveLength(1);
    const [fault] = result.faults;
    expect(fault?.newTerm ?? 0, text).toBeGreaterThan(fault?.termBefore ?? 0);
    expect(result.convergedMs, text).not.toBeNull();
  }, 120_000);
});

describe('deferred constraints with sync writes prepared', () => {
  it('an async write whose deferred foreign key fails is refused with PostgreSQL\'s error before it is journaled, and is on no node', async () => {
    const db = await connect((await cluster.leader()).clientAddress, cluster.credentials);
    try {
      await expect(db.execute([['INSERT INTO children VALUES (1, 999)', []]])).rejects.toMatchObject({ code: 'PG_ERROR', sqlstate: '23503' });
      // A write that keeps the constraint, after it, reaches every node; the refused one reached none.
      await db.execute([['INSERT INTO children VALUES (2, 7)', []], ['INSERT INTO parents VALUES (7)', []]]);
    } finally {
      db.close();
    }
    for (const node of cluster.nodes) {
      const c = await node.sql();
      try {
        const deadline = Date.now() + 20_000;
        let rows: unknown[] = [];
        while (Date.now() < deadline) {
          rows = (await c.query('SELECT id, parent FROM children ORDER BY id')).rows;
          if (rows.length > 0) break;
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
        expect(rows, `node ${node.replica}`).toEqual([{ id: 2, parent: 7 }]);
      } finally {
        await c.end();
      }
    }
  }, 60_000);
});
