// A deposed leader holds no row locks for its undecided writes
// (docs/rfc/0029-deposed-leader-holds-no-locks.md), on a real 3-node cluster
// whose leader prepares its sync writes (`--sync-hold prepare`). The leader
// prepares a write to a sync row and an async row and loses leadership
// before a quorum holds it; another node writes the same async row; the
// deposed leader then hears that write before the PROMOTE that decides its
// own. Kept prepared, the write's lock stalled the deposed node's apply
// queue on that async write, ahead of the PROMOTE, for ever. Rolled back at
// the step-down, the async write applies, the PROMOTE decides the write
// (rolled back: no quorum held it), and every node ends with the same rows.
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startLocalCluster, type ClusterNode, type LocalCluster } from '../../src/cli/cluster.js';
import { connect, OutcomeUnknown } from '../../src/client/index.js';
import { eventually, limboHeld, rowsOn } from '../support/cluster.js';

let cluster: LocalCluster;

beforeAll(async () => {
  cluster = await startLocalCluster({
    proxies: true, electionTimeoutMs: 500, synchroTimeoutMs: 60_000,
    // Node 1 leads; nodes 2 and 3 campaign only when told, so that the next leader's PROMOTE comes after node 3's write.
    electionModes: { 2: 'manual', 3: 'manual' },
    sidecarArgs: () => ['--sync-hold', 'prepare'],
    tables: [
      { ddl: 'CREATE TABLE ledger (id int PRIMARY KEY, note text)', name: 'ledger', mode: 'sync' },
      { ddl: 'CREATE TABLE notes (id int PRIMARY KEY, note text)', name: 'notes', mode: 'async' },
    ],
    ...(process.env.QSYNC_E2E_DIR === undefined ? {} : { dir: `${process.env.QSYNC_E2E_DIR}/deposed-locks` }),
  });
}, 120_000);

afterAll(async () => {
  await cluster?.stop();
});

const noteOn = async (node: ClusterNode): Promise<unknown[]> => rowsOn(node, 'SELECT note FROM notes WHERE id = 1');

describe('a deposed leader that prepared its sync writes', () => {
  it('rolls back its undecided write at the step-down: another node\'s async write to its row applies there, then the PROMOTE that decides it', async () => {
    const [one, two, three] = cluster.nodes as [ClusterNode, ClusterNode, ClusterNode];
    expect((await cluster.leader()).replica).toBe(1);
    const db = await connect(one.clientAddress, cluster.credentials);
    await db.execute([['INSERT INTO notes VALUES (1, $1)', ['first']]]);
    db.close();
    for (const node of cluster.nodes) await eventually(async () => expect(await noteOn(node)).toEqual([{ note: 'first' }]), `node ${node.replica} has the first note`);

    cluster.isolate(1);
    const direct = await connect(one.clientAddress, { ...cluster.credentials, leaderWaitMs: 0 });
    const stranded = direct.execute([['INSERT INTO ledger VALUES (1, $1)', ['stranded']], ['UPDATE notes SET note = $1 WHERE id = 1', ['stranded']]], { idempotencyKey: 'stranded' })
      .then(() => 'committed', (error: unknown) => error);
    await eventually(async () => expect(await limboHeld(one)).toBe(1), 'the write is prepared on node 1');
    await eventually(async () => expect((await one.status()).writable).toBe(false), 'node 1 steps down: no quorum heard');
    expect(await stranded).toBeInstanceOf(OutcomeUnknown);
    direct.close();
    // Its lock is gone with it: nothing of it stays prepared on a node that does not lead.
    await eventually(async () => expect(await limboHeld(one)).toBe(0), 'node 1 rolled the undecided write back');

    // Node 3 takes an async write to the same row, then votes node 2 in: its journal holds the write before node 2's PROMOTE.
    const sql = new pg.Client({ connectionString: three.sqlUrl });
    await sql.connect();
    try {
      await sql.query(`UPDATE notes SET note = 'from node 3' WHERE id = 1`);
    } finally {
      await sql.end();
    }
    await two.admin('POST', '/promote');
    expect((await cluster.leader(15_000, [1])).replica).toBe(2);

    // Node 1 hears node 3 alone: node 3's write first, node 2's PROMOTE after it.
    cluster.proxy(1, 3).heal();
    cluster.proxy(3, 1).heal();
    await eventually(async () => expect(await noteOn(one)).toEqual([{ note: 'from node 3' }]), 'node 1 applied node 3\'s write', 30_000);
    expect(await rowsOn(one, 'SELECT * FROM ledger')).toEqual([]);

    cluster.heal();
    const after = await connect(two.clientAddress, cluster.credentials);
    try {
      expect(await after.outcome('stranded')).toEqual({ committed: false });
      await after.execute([['INSERT INTO ledger VALUES (2, $1)', ['after']]]);
    } finally {
      after.close();
    }
    for (const node of cluster.nodes) {
      await eventually(async () => {
        expect(await rowsOn(node, 'SELECT id, note FROM ledger ORDER BY id')).toEqual([{ id: 2, note: 'after' }]);
        expect(await noteOn(node)).toEqual([{ note: 'from node 3' }]);
        expect(await limboHeld(node)).toBe(0);
      }, `node ${node.replica} has the same rows`);
    }
  }, 120_000);
});
