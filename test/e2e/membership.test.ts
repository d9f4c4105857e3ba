// Membership changes on a real cluster (RFC 0010): a fourth node joins with
// qsync join under a writer and ends with the same rows; the quorum grows
// with it (two nodes of four no longer confirm a sync write); the change
// survives a restart; refusals say what to do; the new node can lead, and
// must hand leadership over before it leaves; qsync leave removes it again
// and the quorum shrinks back.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startLocalCluster, type ClusterNode, type LocalCluster } from '../../src/cli/cluster.js';
import { connect, QsyncClientError, type Db } from '../../src/client/index.js';
import type { SidecarStatus } from '../../src/sidecar/status.js';
import { eventually, rowsOn } from '../support/cluster.js';

const BIN = fileURLToPath(new URL('../../bin/qsync.js', import.meta.url));

let cluster: LocalCluster;
let db: Db;

beforeAll(async () => {
  cluster = await startLocalCluster({
    synchroTimeoutMs: 2_000,
    ...(process.env.QSYNC_E2E_DIR === undefined ? {} : { dir: `${process.env.QSYNC_E2E_DIR}/membership` }),
    tables: [
      { ddl: 'CREATE TABLE items (id bigint PRIMARY KEY, body text NOT NULL, at timestamptz NOT NULL DEFAULT now())', name: 'items', mode: 'sync' },
      { ddl: 'CREATE TABLE notes (id bigint PRIMARY KEY, body text)', name: 'notes', mode: 'async' },
    ],
  });
  db = await connect(cluster.clientAddresses, cluster.credentials);
}, 120_000);

afterAll(async () => {
  db?.close();
  await cluster?.stop();
});

const node = (replica: number): ClusterNode => cluster.nodes.find((n) => n.replica === replica) as ClusterNode;
const digest = async (replica: number, table: string): Promise<unknown> =>
  (await rowsOn(node(replica), `SELECT count(*)::int AS n, md5(coalesce(string_agg(t::text, ',' ORDER BY id), '')) AS h FROM ${table} t`))[0];

async function identical(replicas: readonly number[]): Promise<void> {
  for (const table of ['items', 'notes']) {
    const [first, ...rest] = await Promise.all(replicas.map((r) => digest(r, table)));
    rest.forEach((d, k) => expect(d, `${table} on node ${replicas[k + 1] as number}`).toEqual(first));
  }
}

/** Write until stopped: a sync and an async insert each round. Returns the count of rounds. */
function writer(from: number): { stop: () => Promise<number> } {
  let running = true;
  let id = from;
  const done = (async () => {
    while (running) {
      await db.execute([['INSERT INTO items (id, body) VALUES ($1::bigint, repeat(md5($1::bigint::text), 4))', [id]]]);
      await db.execute([['INSERT INTO notes (id, body) VALUES ($1::bigint, md5($1::bigint::text))', [id]]]);
      id += 1;
    }
    return id - from;
  })();
  return {
    stop: async () => {
      running = false;
      return done;
    },
  };
}

function qsync(args: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, QSYNC_ADMIN_TOKEN: cluster.adminToken } });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => child.once('exit', (code) => resolve({ code: code ?? -1, stdout, stderr })));
}

describe('membership through the journal', () => {
  it('a fourth node joins under load, takes a snapshot and ends with the same rows; the quorum becomes 3 of 4', async () => {
    // Rows that exist before the node joins, on a table of each mode.
    await db.execute([['INSERT INTO items (id, body) SELECT g, md5(g::text) FROM generate_series(1, 3000) g', []]]);
    await db.execute([['INSERT INTO notes (id, body) SELECT g, md5(g::text) FROM generate_series(1, 3000) g', []]]);
    const load = writer(100_000);
    const joined = await cluster.join();
    expect(joined.replica).toBe(4);
    // The writer goes on while node 4 loads its snapshot and follows the records after it.
    await eventually(async () => {
      const status = await joined.status();
      expect(status.stuck).toBeNull();
      expect(status.members.version).toBe(1);
    }, 'node 4 loaded its snapshot', 30_000);
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    const rounds = await load.stop();
    expect(rounds).toBeGreaterThan(0);

    const leader = await cluster.leader();
    const view = await leader.status();
    expect(view.members).toMatchObject({ version: 1, quorum: 3 });
    expect(view.members.nodes.map((m) => m.replica)).toEqual([1, 2, 3, 4]);
    // Node 4 created the tables it lacked from the peer's shapes, and holds every row.
    await eventually(() => identical([1, 2, 3, 4]), 'node 4 holds the same rows as the others', 30_000);
    const four = await joined.status();
    expect(four.members.version).toBe(1);
    expect(four.stuck).toBeNull();
    expect((await rowsOn(joined, 'SELECT count(*)::int AS n FROM pg_prepared_xacts'))[0]).toEqual({ n: 0 });

    // Node 4 serves reads through its own client port.
    const direct = await connect([joined.clientAddress], cluster.credentials);
    try {
      const read = await direct.query('SELECT count(*)::int AS n FROM items', [], { consistency: 'local' });
      expect(read.rows[0]).toEqual({ n: 3000 + rounds });
    } finally {
      direct.close();
    }
  }, 120_000);

  it('counts the new member in every quorum: two nodes of four no longer confirm a sync write', async () => {
    const leader = await cluster.leader();
    const others = cluster.nodes.filter((n) => n.replica !== leader.replica && n.replica !== 4);
    const stopped = [others[0] as ClusterNode, node(4)];
    const running = cluster.nodes.filter((n) => !stopped.includes(n));
    for (const n of stopped) await n.stopSidecar();
    let code = '';
    try {
      // With the three-node quorum of 2, this would commit; with 3 of 4 it cannot.
      const refused = await db.execute([['INSERT INTO items (id, body) VALUES (-1, $1)', ['two of four']]]).then(() => null, (error: unknown) => error);
      expect(refused).toBeInstanceOf(QsyncClientError);
      code = (refused as QsyncClientError).code;
      expect(code).toMatch(/ROLLED_BACK|OUTCOME_UNKNOWN|NOT_LEADER/);
      for (const n of running) expect(await rowsOn(n, 'SELECT id FROM items WHERE id = -1'), `node ${n.replica} while two of four are down`).toEqual([]);
    } finally {
      for (const n of stopped) await n.startSidecar();
    }
    await cluster.leader();
    await db.execute([['INSERT INTO items (id, body) VALUES (-2, $1)', ['three of four']]]);
    await eventually(() => identical([1, 2, 3, 4]), 'every node after the restarts', 30_000);
    // An unknown outcome may have been confirmed by the next leader (it held the entry); a rollback is final.
    const negative = (await rowsOn(node(4), 'SELECT id FROM items WHERE id < 0 ORDER BY id')).map((r) => (r as { id: string }).id);
    expect(negative).toEqual(code === 'ROLLED_BACK' ? ['-2'] : expect.arrayContaining(['-2']));
  }, 120_000);

  it('keeps the membership across a restart, and refuses changes it cannot make with what to do', async () => {
    const restarted = cluster.nodes.find((n) => n.replica === 2) as ClusterNode;
    await restarted.stopSidecar();
    await restarted.startSidecar();
    expect((await restarted.status()).members).toMatchObject({ version: 1, quorum: 3 });

    const leader = await cluster.leader();
    const follower = cluster.nodes.find((n) => n.replica !== leader.replica) as ClusterNode;
    await expect(leader.admin('DELETE', `/members/${leader.replica}`)).rejects.toThrow(/cannot remove itself.*qsync transfer/);
    await expect(leader.admin('DELETE', '/members/9')).rejects.toThrow(/node 9 is not a member/);
    await expect(follower.admin('POST', '/members', { peer: '127.0.0.1:1' })).rejects.toMatchObject({ code: 'NOT_LEADER' });
    await expect(leader.admin('POST', '/members', { peer: 'nowhere' })).rejects.toThrow(/"peer": "host:port"/);
    // A join retried with the same addresses gets the id it has already.
    const again = await leader.admin<{ replica: number; version: number }>('POST', '/members', { peer: `127.0.0.1:${node(4).peerPort}`, client: node(4).clientAddress, admin: node(4).adminAddress });
    expect(again).toMatchObject({ replica: 4, version: 1 });
  }, 120_000);

  it('qsync leave removes the node: the quorum is 2 of 3 again and the node stops voting', async () => {
    const leaving = node(4);
    // Leading, it cannot leave: it says to hand leadership over first.
    const before = await cluster.leader();
    if (before.replica !== 4) await before.admin('POST', '/transfer?to=4');
    expect((await cluster.leader()).replica).toBe(4);
    const refused = await qsync(['leave', '--admin', leaving.adminAddress]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/node 4 is the leader and cannot remove itself: hand leadership over first \(qsync transfer\)/);
    await leaving.admin('POST', '/transfer?to=1');
    expect((await cluster.leader()).replica).toBe(1);
    const result = await qsync(['leave', '--admin', leaving.adminAddress]);
    expect(result.stderr).toBe('');
    expect(result.stdout).toMatch(/node 4 is no longer a member of cluster local: members 1, 2, 3, quorum 2 \(version 2\)/);
    expect(result.code).toBe(0);
    for (const n of cluster.nodes.filter((m) => m.replica !== 4)) {
      await eventually(async () => expect((await n.status()).members).toMatchObject({ version: 2, quorum: 2 }), `node ${n.replica} takes version 2`);
    }
    // The removed node heard it too: it no longer votes or campaigns.
    await eventually(async () => {
      const status: SidecarStatus = await leaving.status();
      expect(status.members.version).toBe(2);
      expect(status.members.nodes.map((m) => m.replica)).toEqual([1, 2, 3]);
    }, 'node 4 learns it was removed');
    await leaving.stopSidecar();
    // Two of the three remaining nodes confirm again.
    const leader = await cluster.leader();
    const other = cluster.nodes.find((n) => n.replica !== leader.replica && n.replica !== 4) as ClusterNode;
    await other.stopSidecar();
    try {
      await db.execute([['INSERT INTO items (id, body) VALUES (-3, $1)', ['two of three']]]);
    } finally {
      await other.startSidecar();
    }
    await eventually(() => identical([1, 2, 3]), 'the three members');
    const usage = await qsync(['remove']);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toMatch(/remove which node/);
  }, 120_000);
});
