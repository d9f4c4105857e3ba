// End to end with the leader holding sync writes open (`--sync-hold open`,
// docs/rfc/0027-held-open-writes.md): 3 embedded PostgreSQL servers, 3
// sidecar processes, real TCP. A sync write waits for its quorum as an open
// transaction, not a prepared one, and commits on every node; when
// PostgreSQL terminates the held write's session while it waits, the write is
// still acknowledged once its quorum holds it, applied from the journal, and
// the next writes go on; the SQL port's writes are held the same way, and a
// SERIALIZABLE one is prepared.
//
// Node 1 is the only candidate, so it leads throughout; the election and
// synchro timeouts are long, so that the followers can be frozen for a while.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { startLocalCluster, type ClusterNode, type LocalCluster } from '../../src/cli/cluster.js';
import { connect, type Db } from '../../src/client/index.js';
import { eventually, rowsOn } from '../support/cluster.js';

let cluster: LocalCluster;
let db: Db;
/** What the leader's sidecar logs. */
const leaderLog: string[] = [];

beforeAll(async () => {
  cluster = await startLocalCluster({
    synchroTimeoutMs: 20_000,
    electionTimeoutMs: 5_000,
    electionModes: { 2: 'voter', 3: 'voter' },
    sidecarArgs: () => ['--sync-hold', 'open'],
    onLog: (replica, line) => {
      if (replica === 1) leaderLog.push(line);
    },
    ...(process.env.QSYNC_E2E_DIR === undefined ? {} : { dir: `${process.env.QSYNC_E2E_DIR}/held-open` }),
    tables: [{ ddl: 'CREATE TABLE accounts (id bigint PRIMARY KEY, owner text, balance numeric NOT NULL)', name: 'accounts', mode: 'sync' }],
  });
  db = await connect(cluster.clientAddresses, cluster.credentials);
}, 120_000);

afterAll(async () => {
  db?.close();
  await cluster?.stop();
});

const node = (replica: number): ClusterNode => cluster.nodes[replica - 1] as ClusterNode;
const followers = (): ClusterNode[] => [node(2), node(3)];

/** The leader's client sessions idle inside a transaction: writes held open for their quorum. */
async function heldSessions(): Promise<number[]> {
  const rows = await rowsOn(node(1), `SELECT pid FROM pg_stat_activity WHERE state = 'idle in transaction' AND backend_type = 'client backend' AND pid <> pg_backend_pid()`) as Array<{ pid: number }>;
  return rows.map((r) => r.pid);
}

async function everywhere(id: number): Promise<void> {
  for (const replica of [1, 2, 3]) {
    await eventually(async () => expect(await rowsOn(node(replica), 'SELECT owner FROM accounts WHERE id = $1', [id])).toEqual([{ owner: `o${id}` }]), `row ${id} on node ${replica}`);
  }
}

describe('sync writes held open', () => {
  it('wait for their quorum as an open transaction, not a prepared one, and commit on every node', async () => {
    for (const f of followers()) f.pause();
    const write = db.execute([['INSERT INTO accounts VALUES (1, $1, 0)', ['o1']]]);
    try {
      await eventually(async () => expect(await heldSessions()).toHaveLength(1), 'the write held open on the leader');
      expect(await rowsOn(node(1), 'SELECT gid FROM pg_prepared_xacts')).toEqual([]);
      // Invisible while it waits.
      expect(await rowsOn(node(1), 'SELECT id FROM accounts WHERE id = 1')).toEqual([]);
    } finally {
      for (const f of followers()) f.resume();
    }
    await write;
    await everywhere(1);
    expect(await heldSessions()).toEqual([]);
  });

  it('is acknowledged and applied from the journal when PostgreSQL terminates its session while it waits; later writes go on', async () => {
    for (const f of followers()) f.pause();
    const write = db.execute([['INSERT INTO accounts VALUES (2, $1, 0)', ['o2']]]);
    try {
      await eventually(async () => expect(await heldSessions()).toHaveLength(1), 'the write held open on the leader');
      const [pid] = await heldSessions();
      expect(await rowsOn(node(1), 'SELECT pg_terminate_backend($1) AS done', [pid])).toEqual([{ done: true }]);
      // Its row lock went with its session; the row is not there yet.
      expect(await rowsOn(node(1), 'SELECT id FROM accounts WHERE id = 2')).toEqual([]);
    } finally {
      for (const f of followers()) f.resume();
    }
    // A quorum holds it: acknowledged, and on every node, the leader's from its journal.
    await write;
    await everywhere(2);
    expect(leaderLog.filter((line) => line.includes('applied a confirmed write from the journal'))).toHaveLength(1);
    for (let id = 3; id <= 5; id += 1) await db.execute([['INSERT INTO accounts VALUES ($1, $2, 0)', [id, `o${id}`]]]);
    for (let id = 3; id <= 5; id += 1) await everywhere(id);
  });

  it('survives a crash of the leader\'s PostgreSQL while a write is held: every node ends with the same rows, the write everywhere if acknowledged', async () => {
    for (const f of followers()) f.pause();
    let answer: 'ok' | 'failed' | null = null;
    const write = db.execute([['INSERT INTO accounts VALUES (30, $1, 0)', ['o30']]]).then(() => (answer = 'ok'), () => (answer = 'failed'));
    try {
      await eventually(async () => expect(await heldSessions()).toHaveLength(1), 'the write held open on the leader');
      await node(1).pg.kill();
      await node(1).pg.start();
    } finally {
      for (const f of followers()) f.resume();
    }
    await write;
    // The journal holds it and a quorum will: committed everywhere, from the journal on the leader.
    if (answer === 'ok') await everywhere(30);
    await eventually(async () => {
      const seen = await Promise.all([1, 2, 3].map(async (r) => (await rowsOn(node(r), 'SELECT count(*)::int AS n FROM accounts WHERE id = 30'))[0]));
      expect(new Set(seen.map((s) => JSON.stringify(s))).size).toBe(1);
    }, 'the same row 30 on every node');
    // And writes go on.
    await eventually(async () => {
      await db.execute([['INSERT INTO accounts VALUES (31, $1, 0) ON CONFLICT (id) DO NOTHING', ['o31']]]);
    }, 'a write after the crash');
    await everywhere(31);
    expect(leaderLog.some((line) => line.includes('PostgreSQL went away') || line.includes('transaction ended before its verdict'))).toBe(true);
  });

  it('through the SQL port as well; a SERIALIZABLE transaction is prepared and commits', async () => {
    const client = new pg.Client({ connectionString: node(1).sqlUrl });
    await client.connect();
    try {
      await client.query(`INSERT INTO accounts VALUES (10, 'o10', 0)`);
      await client.query('BEGIN ISOLATION LEVEL SERIALIZABLE');
      await client.query(`INSERT INTO accounts VALUES (11, 'o11', 0)`);
      await client.query('COMMIT');
    } finally {
      await client.end();
    }
    await everywhere(10);
    await everywhere(11);
  });
});
