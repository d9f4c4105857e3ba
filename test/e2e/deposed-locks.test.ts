// A deposed leader holds no row locks for its undecided writes
// (docs/rfc/0029-deposed-leader-holds-no-locks.md), on a real 3-node cluster
// whose leader prepares its sync writes (`--sync-hold prepare`), and on one
// that holds them open (the default), where a SERIALIZABLE write is still
// prepared. The leader
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

/** A cluster where node 1 leads and nodes 2 and 3 campaign only when told, so that the next leader's PROMOTE comes after node 3's write. */
function cluster(name: string, sidecarArgs: readonly string[]): () => LocalCluster {
  let started: LocalCluster | undefined;
  beforeAll(async () => {
    started = await startLocalCluster({
      proxies: true, electionTimeoutMs: 500, synchroTimeoutMs: 60_000, electionModes: { 2: 'manual', 3: 'manual' },
      sidecarArgs: () => sidecarArgs,
      tables: [
        { ddl: 'CREATE TABLE ledger (id int PRIMARY KEY, note text)', name: 'ledger', mode: 'sync' },
        { ddl: 'CREATE TABLE notes (id int PRIMARY KEY, note text)', name: 'notes', mode: 'async' },
      ],
      ...(process.env.QSYNC_E2E_DIR === undefined ? {} : { dir: `${process.env.QSYNC_E2E_DIR}/deposed-locks-${name}` }),
    });
  }, 120_000);
  afterAll(async () => {
    await started?.stop();
  });
  return () => started as LocalCluster;
}

const noteOn = async (node: ClusterNode): Promise<unknown[]> => rowsOn(node, 'SELECT note FROM notes WHERE id = 1');

/**
 * Node 1 leads and `write` starts a sync write to ledger 1 and notes 1 on it (resolving to how it ended), cut off
 * from both peers; it steps down, node 3 writes notes 1, node 2 is voted in, and node 1 hears node 3 alone.
 */
async function playStall(c: LocalCluster, write: (leader: ClusterNode) => Promise<unknown>, answered: (outcome: unknown) => void): Promise<void> {
  const [one, two, three] = c.nodes as [ClusterNode, ClusterNode, ClusterNode];
  expect((await c.leader()).replica).toBe(1);
  const db = await connect(one.clientAddress, c.credentials);
  await db.execute([['INSERT INTO notes VALUES (1, $1)', ['first']]]);
  db.close();
  for (const node of c.nodes) await eventually(async () => expect(await noteOn(node)).toEqual([{ note: 'first' }]), `node ${node.replica} has the first note`);

  c.isolate(1);
  const stranded = write(one);
  await eventually(async () => expect(await rowsOn(one, `SELECT count(*)::int AS n FROM pg_prepared_xacts WHERE gid LIKE 'qsync:%'`)).toEqual([{ n: 1 }]), 'the write is prepared on node 1');
  await eventually(async () => expect((await one.status()).writable).toBe(false), 'node 1 steps down: no quorum heard');
  answered(await stranded);
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
  expect((await c.leader(15_000, [1])).replica).toBe(2);

  // Node 1 hears node 3 alone: node 3's write first, node 2's PROMOTE after it.
  c.proxy(1, 3).heal();
  c.proxy(3, 1).heal();
  await eventually(async () => expect(await noteOn(one)).toEqual([{ note: 'from node 3' }]), 'node 1 applied node 3\'s write', 30_000);
  expect(await rowsOn(one, 'SELECT * FROM ledger')).toEqual([]);

  c.heal();
  const after = await connect(two.clientAddress, c.credentials);
  try {
    await after.execute([['INSERT INTO ledger VALUES (2, $1)', ['after']]]);
  } finally {
    after.close();
  }
  for (const node of c.nodes) {
    await eventually(async () => {
      expect(await rowsOn(node, 'SELECT id, note FROM ledger ORDER BY id')).toEqual([{ id: 2, note: 'after' }]);
      expect(await noteOn(node)).toEqual([{ note: 'from node 3' }]);
      expect(await limboHeld(node)).toBe(0);
    }, `node ${node.replica} has the same rows`);
  }
}

describe('a deposed leader that prepares its sync writes (syncHold prepare)', () => {
  const c = cluster('prepare', ['--sync-hold', 'prepare']);
  it('rolls back its undecided write at the step-down: another node\'s async write to its row applies there, then the PROMOTE that decides it', async () => {
    const direct = await connect(c().nodes[0]?.clientAddress ?? '', { ...c().credentials, leaderWaitMs: 0 });
    try {
      await playStall(c(), () => direct.execute([['INSERT INTO ledger VALUES (1, $1)', ['stranded']], ['UPDATE notes SET note = $1 WHERE id = 1', ['stranded']]], { idempotencyKey: 'stranded' })
        .then(() => 'committed', (error: unknown) => error), (outcome) => expect(outcome).toBeInstanceOf(OutcomeUnknown));
    } finally {
      direct.close();
    }
    const db = await connect(c().nodes[1]?.clientAddress ?? '', c().credentials);
    try {
      expect(await db.outcome('stranded')).toEqual({ committed: false });
    } finally {
      db.close();
    }
  }, 120_000);
});

describe('a deposed leader that holds sync writes open (the default) and prepares a SERIALIZABLE one', () => {
  const c = cluster('open', []);
  it('rolls that one back at the step-down too', async () => {
    const sql = new pg.Client({ connectionString: c().nodes[0]?.sqlUrl });
    await sql.connect();
    sql.on('error', () => undefined);
    try {
      await playStall(c(), async () => {
        await sql.query('BEGIN ISOLATION LEVEL SERIALIZABLE');
        await sql.query(`INSERT INTO ledger VALUES (1, 'stranded')`);
        await sql.query(`UPDATE notes SET note = 'stranded' WHERE id = 1`);
        return sql.query('COMMIT').then(() => 'committed', (error: unknown) => error);
      }, (outcome) => expect(outcome).toMatchObject({ code: '08007' }));
    } finally {
      await sql.end().catch(() => undefined);
    }
  }, 120_000);
});
