// End to end on a real local cluster: 3 embedded PostgreSQL servers and 3
// sidecar processes (the same launcher as `qsync cluster up`), real TCP, the
// client library. Tries to break DESIGN.md §2: an acknowledged sync write is
// on every node; with one follower down writes still commit and the follower
// catches up; with both down a write is rolled back, invisible while it waits
// and visible nowhere ever after; async writes on two nodes converge; a
// SIGKILLed follower loses nothing acknowledged; garbage on the client port is
// refused while the node keeps serving.
//
// Node 1 is the only candidate (nodes 2 and 3 vote but never campaign), so
// it leads throughout: these tests are about replication and the limbo.
// Elections, failover and fences are tested in election.test.ts.
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { connect as netConnect } from 'node:net';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startLocalCluster, type ClusterNode, type LocalCluster } from '../../src/cli/cluster.js';
import { eventually, limboHeld, rowsOn } from '../support/cluster.js';
import { connect, OutcomeUnknown, RolledBack, type Db } from '../../src/client/index.js';
import type { ReplicaId, Term } from '../../src/core/types.js';
import { createLogger } from '../../src/log.js';
import { Subscriber } from '../../src/net/peer.js';

const run = promisify(execFile);
let cluster: LocalCluster;
let db: Db;
const SYNCHRO_TIMEOUT_MS = 1500;

beforeAll(async () => {
  cluster = await startLocalCluster({
    synchroTimeoutMs: SYNCHRO_TIMEOUT_MS,
    // Longer than the synchro timeout: a leader cut off from both followers rolls back before it steps down.
    electionTimeoutMs: 3_000,
    electionModes: { 2: 'voter', 3: 'voter' },
    // QSYNC_E2E_DIR keeps the cluster's data and sidecar logs there, for debugging a failure.
    ...(process.env.QSYNC_E2E_DIR === undefined ? {} : { dir: `${process.env.QSYNC_E2E_DIR}/cluster` }),
    tables: [
      { ddl: 'CREATE TABLE accounts (id bigint PRIMARY KEY, owner text, balance numeric NOT NULL)', name: 'accounts', mode: 'sync' },
      { ddl: 'CREATE TABLE notes (id text PRIMARY KEY, body text)', name: 'notes', mode: 'async' },
    ],
  });
  db = await connect(cluster.clientAddresses, cluster.credentials);
  for (const n of cluster.nodes) {
    const client = await n.sql();
    await client.query(`CREATE ROLE app LOGIN PASSWORD 'app-secret-1'; GRANT SELECT, INSERT, UPDATE ON accounts TO app;
                        CREATE ROLE nobody LOGIN PASSWORD 'nobody-secret-1'`);
    await client.end();
  }
}, 120_000);

afterAll(async () => {
  db?.close();
  await cluster?.stop();
});

const node = (replica: number): ClusterNode => cluster.nodes[replica - 1] as ClusterNode;

const rows = (replica: number, sql: string, params: unknown[] = []): Promise<unknown[]> => rowsOn(node(replica), sql, params);

/**
 * Insert accounts first.. first+count-1 owned by `owner`, one write at a time,
 * recording which were acknowledged. `onError` says what a failed write means:
 * go on with the next one, stop, or (by throwing) fail the test.
 */
function streamWrites(first: number, count: number, owner: string, onError: (error: unknown) => 'next' | 'stop'): { acked: number[]; failures: () => number; done: Promise<void> } {
  const acked: number[] = [];
  let failures = 0;
  const done = (async () => {
    for (let id = first; id < first + count; id += 1) {
      try {
        await db.execute([['INSERT INTO accounts VALUES ($1, $2, 0)', [id, owner]]]);
        acked.push(id);
      } catch (error) {
        failures += 1;
        if (onError(error) === 'stop') return;
      }
    }
  })();
  return { acked, failures: () => failures, done };
}

/** Acknowledged writes of `owner` that a node does not hold. */
async function missingOn(replica: number, owner: string, acked: readonly number[]): Promise<number[]> {
  const present = new Set((await rows(replica, 'SELECT id FROM accounts WHERE owner = $1', [owner])).map((r) => Number((r as { id: string }).id)));
  return acked.filter((id) => !present.has(id));
}

describe('a 3-node cluster', () => {
  it('(a) puts an acknowledged sync write on all three PostgreSQL servers', async () => {
    await db.execute([['INSERT INTO accounts VALUES ($1, $2, $3)', [1, 'ada', '100.00']]], { idempotencyKey: 'open-1' });
    // Acknowledged means committed on the leader and held by a quorum; the third node follows.
    expect(await rows(1, 'SELECT owner, balance FROM accounts WHERE id = 1')).toEqual([{ owner: 'ada', balance: '100.00' }]);
    for (const replica of [2, 3]) {
      await eventually(async () => expect(await rows(replica, 'SELECT owner FROM accounts WHERE id = 1')).toEqual([{ owner: 'ada' }]), `node ${replica}`);
    }
    expect(await db.outcome('open-1')).toMatchObject({ committed: true });
  });

  it('answers a sync write sent to a follower with NotLeader, which the client follows', async () => {
    const follower = await connect(node(2).clientAddress, cluster.credentials);
    try {
      // The follower's fence refuses the write with NotLeader naming the leader; the client reconnects there.
      expect((await follower.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]); // a local read stays on the follower
      expect(follower.address).toBe(node(2).clientAddress);
      await follower.execute([['UPDATE accounts SET balance = balance + 1 WHERE id = 1', []]]);
      expect(follower.address).toBe(node(1).clientAddress);
      const onFollower = await connect(node(3).clientAddress, cluster.credentials);
      expect((await onFollower.query('SELECT balance FROM accounts WHERE id = 1', [], { consistency: 'leader' })).rows).toEqual([{ balance: '101.00' }]);
      expect(onFollower.address).toBe(node(1).clientAddress); // a leader read went to the leader
      onFollower.close();
      // A linearizable read from a follower goes to the leader, and sees the write acknowledged just before it.
      const linearizable = await connect(node(2).clientAddress, cluster.credentials);
      expect((await linearizable.query('SELECT balance FROM accounts WHERE id = 1', [], { consistency: 'linearizable' })).rows).toEqual([{ balance: '101.00' }]);
      expect(linearizable.address).toBe(node(1).clientAddress);
      linearizable.close();
      expect(await rows(1, 'SELECT balance FROM accounts WHERE id = 1')).toEqual([{ balance: '101.00' }]);
    } finally {
      follower.close();
    }
  });

  it('runs interactive transactions: read, decide, write; a throw or a PostgreSQL error rolls back; a follower hands over to the leader', async () => {
    const moved = await db.transaction(async (tx) => {
      const { rows: [account] } = await tx.query('SELECT balance FROM accounts WHERE id = 1');
      const balance = Number((account as { balance: string }).balance);
      await tx.query('UPDATE accounts SET balance = $1 WHERE id = 1', [balance - 1]);
      await tx.query('INSERT INTO accounts VALUES (7, $1, 1)', ['interactive']);
      return balance;
    }, { idempotencyKey: 'interactive-1' });
    expect(moved).toBe(101);
    for (const replica of [1, 2, 3]) {
      await eventually(async () => expect(await rows(replica, 'SELECT id, balance FROM accounts WHERE id IN (1, 7) ORDER BY id')).toEqual([{ id: '1', balance: '100' }, { id: '7', balance: '1' }]), `node ${replica}`);
    }
    await expect(db.transaction(async (tx) => {
      await tx.query('UPDATE accounts SET balance = 0 WHERE id = 7');
      throw new Error('changed my mind');
    })).rejects.toThrow('changed my mind');
    await expect(db.transaction(async (tx) => {
      await tx.query('UPDATE accounts SET balance = 0 WHERE id = 7');
      await tx.query('SELECT 1 / 0');
    })).rejects.toMatchObject({ name: 'PgError', sqlstate: '22012' });
    expect(await rows(1, 'SELECT balance FROM accounts WHERE id = 7')).toEqual([{ balance: '1' }]);
    const viaFollower = await connect(node(3).clientAddress, cluster.credentials);
    try {
      let runs = 0;
      await viaFollower.transaction(async (tx) => {
        runs += 1;
        await tx.query('UPDATE accounts SET balance = balance + 1 WHERE id = 7');
      });
      expect(runs).toBe(2); // refused on the follower before anything committed, then run on the leader
      expect(viaFollower.address).toBe(node(1).clientAddress);
      expect(await rows(1, 'SELECT balance FROM accounts WHERE id = 7')).toEqual([{ balance: '2' }]);
    } finally {
      viaFollower.close();
    }
  });

  it('(b) commits with one follower down; the follower catches up from the journal when it returns', async () => {
    await node(3).stopSidecar();
    for (let i = 10; i < 15; i += 1) await db.execute([['INSERT INTO accounts VALUES ($1, $2, 0)', [i, `n${i}`]]]);
    // Held by the quorum (leader and node 2); node 2 commits each once the CONFIRM that follows reaches it.
    await eventually(async () => expect(await rows(2, 'SELECT count(*)::int AS n FROM accounts WHERE id BETWEEN 10 AND 14')).toEqual([{ n: 5 }]), 'node 2');
    expect(await rows(3, 'SELECT count(*)::int AS n FROM accounts WHERE id BETWEEN 10 AND 14')).toEqual([{ n: 0 }]);
    await node(3).startSidecar();
    await eventually(async () => expect(await rows(3, 'SELECT count(*)::int AS n FROM accounts WHERE id BETWEEN 10 AND 14')).toEqual([{ n: 5 }]), 'node 3 catches up');
  });

  it('(b) a follower whose apply is blocked in PostgreSQL still stops: the stop is given up after its grace, named in the log, and the follower catches up after', async () => {
    await db.execute([['INSERT INTO accounts VALUES (40, $1, 0)', ['locked']]]);
    await eventually(async () => expect(await rows(2, 'SELECT owner FROM accounts WHERE id = 40')).toEqual([{ owner: 'locked' }]), 'node 2 has the row');
    // Someone holds the row on node 2: its apply of the next change to it waits on the lock (60 s query timeout).
    const holder = await node(2).sql();
    await holder.query('BEGIN; SELECT * FROM accounts WHERE id = 40 FOR UPDATE');
    await db.execute([['UPDATE accounts SET balance = 7 WHERE id = 40', []]]);
    // Node 2 applies the UPDATE once it hears the CONFIRM (RFC 0012): from then on its apply (prepared statements
    // named qsync_apply_*, RFC 0022) waits on the lock.
    await eventually(async () => expect(await rows(2, `SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%EXECUTE qsync\\_apply\\_%'`)).toEqual([{ n: 1 }]), 'node 2 waits on the lock');
    await node(2).stopSidecar();
    const log = await readFile(join(node(2).dataDir, '..', 'sidecar.log'), 'utf8');
    expect(log).toMatch(/stopping took longer than 10000 ms at: peer links and the apply queue/);
    await holder.query('ROLLBACK');
    await holder.end();
    await node(2).startSidecar();
    await eventually(async () => expect(await rows(2, 'SELECT balance FROM accounts WHERE id = 40')).toEqual([{ balance: '7' }]), 'node 2 catches up');
  }, 60_000);

  it('(c, d) with both followers down: invisible while waiting, RolledBack after the timeout, visible nowhere ever', async () => {
    await Promise.all([node(2).stopSidecar(), node(3).stopSidecar()]);
    const write = db.execute([['INSERT INTO accounts VALUES (99, $1, 1)', ['doomed']]], { idempotencyKey: 'doomed-99' });
    const outcome = write.then(() => 'committed', (error: unknown) => error);
    // While it waits in the limbo: held on the leader (open, or prepared), seen by no reader anywhere.
    await eventually(async () => expect(await limboHeld(node(1))).toBe(1), 'held in the limbo');
    for (const replica of [1, 2, 3]) expect(await rows(replica, 'SELECT * FROM accounts WHERE id = 99')).toEqual([]);
    const error = await outcome;
    expect(error).toBeInstanceOf(RolledBack);
    expect((error as RolledBack).message).toMatch(/no quorum held it within 1500 ms, and no peer received it/);
    await Promise.all([node(2).startSidecar(), node(3).startSidecar()]);
    // Once the followers are back and caught up, still nowhere, and nothing left in any limbo.
    await db.execute([['INSERT INTO accounts VALUES (100, $1, 1)', ['after']]]);
    for (const replica of [1, 2, 3]) {
      await eventually(async () => expect(await rows(replica, 'SELECT id FROM accounts WHERE id IN (99, 100) ORDER BY id')).toEqual([{ id: '100' }]), `node ${replica}`);
      expect(await limboHeld(node(replica))).toBe(0);
    }
    expect(await db.outcome('doomed-99')).toEqual({ committed: false });
  });

  it('(e) converges async writes made concurrently on two nodes', async () => {
    const two = await connect(node(2).clientAddress, cluster.credentials);
    try {
      await Promise.all([
        db.execute([["INSERT INTO notes VALUES ('a', 'from 1'), ('shared', 'from 1')", []]]),
        two.execute([["INSERT INTO notes VALUES ('b', 'from 2'), ('shared', 'from 2') ON CONFLICT (id) DO UPDATE SET body = excluded.body", []]]),
      ]);
      expect(two.address).toBe(node(2).clientAddress); // async writes are taken by any node
      const images = async (replica: number): Promise<unknown[]> => rows(replica, 'SELECT id, body FROM notes ORDER BY id');
      // On failure, show what each node decided: its rows, key versions and conflict log.
      const evidence = async (): Promise<string> => JSON.stringify(await Promise.all([1, 2, 3].map(async (r) => ({
        node: r, rows: await images(r),
        versions: await rows(r, `SELECT key, time, replica_id FROM qsync.row_versions WHERE table_name = 'public.notes' ORDER BY key`),
        conflicts: await rows(r, `SELECT key, lost->>'body' AS lost, lost_time, lost_replica, kept_time, kept_replica FROM qsync.conflicts WHERE table_name = 'public.notes'`),
      }))));
      await eventually(async () => {
        const first = await images(1);
        expect(first.length).toBe(3);
        expect(await images(2), await evidence()).toEqual(first);
        expect(await images(3), await evidence()).toEqual(first);
      }, 'async convergence');
    } finally {
      two.close();
    }
  });

  it('(f) loses nothing acknowledged when a follower sidecar is SIGKILLed mid-stream', async () => {
    const { acked, done } = streamWrites(1000, 60, 'stream', (error) => {
      if (!(error instanceof OutcomeUnknown || error instanceof RolledBack)) throw error;
      return 'next';
    });
    await new Promise((r) => setTimeout(r, 300));
    await node(2).killSidecar();
    await done;
    expect(acked.length).toBeGreaterThan(50); // node 3 still makes the quorum
    await node(2).startSidecar();
    for (const replica of [1, 2, 3]) {
      await eventually(async () => expect(await missingOn(replica, 'stream', acked)).toEqual([]), `node ${replica} holds every acknowledged write`);
    }
  });

  it('(f) loses nothing acknowledged when a follower\'s PostgreSQL is SIGKILLed mid-stream', async () => {
    const { acked, done } = streamWrites(4000, 60, 'pg-crash', (error) => {
      throw error; // node 2 keeps the quorum: every write must succeed
    });
    await new Promise((r) => setTimeout(r, 300));
    await node(3).pg.kill();
    await done;
    expect(acked).toHaveLength(60);
    await node(3).pg.start(); // the sidecar reconnects and applies what its journal holds
    await eventually(async () => expect(await missingOn(3, 'pg-crash', acked)).toEqual([]), 'node 3 holds every acknowledged write after its PostgreSQL crash', 45_000);
    expect(await limboHeld(node(3))).toBe(0);
  }, 120_000);

  it('(f) recovers the leader\'s limbo after its sidecar is SIGKILLed mid-stream: every acknowledged write lands everywhere', async () => {
    const { acked, failures, done } = streamWrites(6000, 200, 'leader-crash', (error) => {
      if (!(error instanceof OutcomeUnknown)) throw error; // the connection to the leader is lost
      return 'stop';
    });
    await new Promise((r) => setTimeout(r, 400));
    await node(1).killSidecar();
    await done;
    expect(failures()).toBe(1);
    await node(1).startSidecar(); // reconciles PostgreSQL with its journal; its PROMOTE decides what was pending
    expect((await cluster.leader(30_000)).replica).toBe(1); // the only candidate wins again
    db.close();
    db = await connect(cluster.clientAddresses, cluster.credentials);
    for (const replica of [1, 2, 3]) {
      await eventually(async () => {
        expect(await missingOn(replica, 'leader-crash', acked)).toEqual([]);
        expect(await limboHeld(node(replica))).toBe(0);
      }, `node ${replica} holds every acknowledged write, nothing left in the limbo`, 45_000);
    }
    // The three nodes come to agree on the write whose answer was lost, too.
    await eventually(async () => {
      const counts = await Promise.all([1, 2, 3].map(async (r) => rows(r, `SELECT count(*)::int AS n FROM accounts WHERE owner = 'leader-crash'`)));
      expect(new Set(counts.map((c) => JSON.stringify(c))).size).toBe(1);
      for (const replica of [1, 2, 3]) expect(await limboHeld(node(replica))).toBe(0);
    }, 'the nodes agree');
  }, 120_000);

  it('(c) when both followers die with a write in flight: committed, RolledBack or unknown, and every node agrees', async () => {
    await cluster.leader(30_000);
    const outcome = db.execute([['INSERT INTO accounts VALUES (5000, $1, 0)', ['in flight']]], { idempotencyKey: 'in-flight' }).then(() => 'committed', (error: unknown) => error);
    await Promise.all([node(2).killSidecar(), node(3).killSidecar()]);
    const answer = await outcome;
    expect(answer === 'committed' || answer instanceof RolledBack || answer instanceof OutcomeUnknown).toBe(true);
    await Promise.all([node(2).startSidecar(), node(3).startSidecar()]);
    await db.execute([['INSERT INTO accounts VALUES (5001, $1, 0)', ['marker']]]);
    const presence: number[] = [];
    for (const replica of [1, 2, 3]) {
      await eventually(async () => {
        expect(await rows(replica, 'SELECT id FROM accounts WHERE id = 5001')).toHaveLength(1);
        expect(await limboHeld(node(replica))).toBe(0);
      }, `node ${replica} caught up and settled`);
      presence.push((await rows(replica, 'SELECT id FROM accounts WHERE id = 5000')).length);
    }
    expect(new Set(presence).size).toBe(1); // every node agrees
    if (answer === 'committed') expect(presence[0]).toBe(1);
    if (answer instanceof RolledBack) expect(presence[0]).toBe(0); // never visible if RolledBack
    expect((await db.outcome('in-flight')).committed).toBe(presence[0] === 1);
  });

  it('(g) refuses a peer with the wrong secret, logging why, and keeps working', async () => {
    const impostor = new Subscriber({
      identity: { cluster: 'local', replica: 2 as ReplicaId, secret: 'not-the-cluster-secret' },
      peer: { replica: 1 as ReplicaId, host: '127.0.0.1', port: node(1).peerPort },
      log: createLogger({ test: 'impostor' }, { write: () => undefined }),
      vclock: () => [], onRecord: async () => undefined, ack: () => ({ vclock: [], term: 0 as Term }), backoffMsMin: 50,
    });
    impostor.start();
    await eventually(async () => expect(impostor.lastError ?? '').toMatch(/refused by peer: replica 2 did not prove the cluster secret/), 'refused');
    await impostor.stop();
    expect(impostor.connected).toBe(false);
    await db.execute([['INSERT INTO accounts VALUES (5002, $1, 0)', ['after impostor']]]);
    await eventually(async () => expect(await rows(2, 'SELECT id FROM accounts WHERE id = 5002')).toHaveLength(1), 'replication goes on');
  });

  it('(g) runs client statements as the client\'s own role: wrong passwords and missing privileges are refused by PostgreSQL', async () => {
    await expect(connect(cluster.clientAddresses, { user: 'app', password: 'wrong' })).rejects.toMatchObject({
      name: 'AuthFailed', code: 'AUTH', message: expect.stringMatching(/PostgreSQL refused role app: password authentication failed for user "app"/),
    });
    const app = await connect(cluster.clientAddresses, { user: 'app', password: 'app-secret-1' });
    const nobody = await connect(cluster.clientAddresses, { user: 'nobody', password: 'nobody-secret-1' });
    try {
      await app.execute([['INSERT INTO accounts VALUES (3000, $1, 5)', ['by app']]]);
      await expect(app.execute(['DELETE FROM accounts WHERE id = 3000'])).rejects.toMatchObject({ name: 'PgError', sqlstate: '42501' });
      await expect(nobody.execute([['INSERT INTO accounts VALUES (3001, $1, 5)', ['by nobody']]])).rejects.toMatchObject({ name: 'PgError', sqlstate: '42501', message: expect.stringMatching(/permission denied for table accounts/) });
      await expect(nobody.query('SELECT * FROM accounts')).rejects.toMatchObject({ sqlstate: '42501' });
      for (const replica of [1, 2, 3]) {
        await eventually(async () => expect(await rows(replica, 'SELECT id, owner FROM accounts WHERE id IN (3000, 3001)')).toEqual([{ id: '3000', owner: 'by app' }]), `node ${replica}`);
      }
    } finally {
      app.close();
      nobody.close();
    }
  });

  it('(6) sets a table sync on every node through a CONFIG record, from the qsync CLI', async () => {
    for (const n of cluster.nodes) {
      const client = await n.sql();
      await client.query('CREATE TABLE later (id int PRIMARY KEY, v text)');
      await client.end();
    }
    // The password by environment: the CLI refuses it on the command line, where ps shows it.
    const { stdout } = await run(process.execPath, ['bin/qsync.js', 'table', 'sync', 'later', '--node', node(2).clientAddress, '--user', cluster.credentials.user], { env: { ...process.env, QSYNC_PASSWORD: cluster.credentials.password } });
    expect(stdout).toContain('public.later is now sync on every node');
    for (const replica of [1, 2, 3]) {
      await eventually(async () => expect(await rows(replica, `SELECT mode FROM qsync.tables WHERE table_name = 'public.later'`)).toEqual([{ mode: 'sync' }]), `node ${replica} mode`);
    }
    await db.execute([["INSERT INTO later VALUES (1, 'replicated')", []]]);
    for (const replica of [2, 3]) {
      await eventually(async () => expect(await rows(replica, 'SELECT v FROM later')).toEqual([{ v: 'replicated' }]), `node ${replica} row`);
    }
    const app = await connect(cluster.clientAddresses, { user: 'app', password: 'app-secret-1' });
    await expect(app.setTableMode('later', 'local')).rejects.toMatchObject({ sqlstate: '42501', message: expect.stringMatching(/role app does not own table later/) });
    app.close();
  });

  it('(7) a table with 100,000 rows marked sync while a writer keeps inserting: every node ends with the same rows, every acknowledged one among them', async () => {
    for (const n of cluster.nodes) {
      const client = await n.sql();
      await client.query('CREATE TABLE legacy (id bigint PRIMARY KEY, v text NOT NULL, at timestamptz DEFAULT now())');
      // The rows a database held before qsync: on the node that leads, not the others.
      if (n.replica === 1) await client.query(`INSERT INTO legacy (id, v) SELECT g, 'row ' || g FROM generate_series(1, 100000) g`);
      await client.end();
    }
    const acknowledged: number[] = [];
    // A sync write right after the change waits until the followers have applied the copy before it;
    // with this cluster's 1.5 s synchro timeout it may be rolled back (and is then nowhere).
    const rolledBack: number[] = [];
    let writing = true;
    const writer = (async () => {
      for (let id = 1_000_001; writing; id += 1) {
        try {
          await db.execute([['INSERT INTO legacy (id, v) VALUES ($1, $2)', [id, 'written during the change']]]);
          acknowledged.push(id);
        } catch (error) {
          if (!(error instanceof RolledBack)) throw error;
          rolledBack.push(id);
        }
      }
    })();
    await new Promise((resolve) => setTimeout(resolve, 300));
    const started = Date.now();
    const changed = await db.setTableMode('legacy', 'sync');
    expect(changed.copiedRows).toBeGreaterThanOrEqual(100_000);
    const during = acknowledged.length;
    await eventually(async () => expect(acknowledged.length).toBeGreaterThan(during + 20), 'the writer goes on after the change', 60_000);
    writing = false;
    await writer;
    console.log(`copy: setTableMode ${Date.now() - started} ms; rolled back ${rolledBack.length}`);
    const digest = 'SELECT count(*)::int AS n, md5(string_agg(id || v || at, \',\' ORDER BY id)) AS md5 FROM legacy';
    const [expected] = await rows(1, digest) as Array<{ n: number; md5: string }>;
    expect(expected?.n).toBe(100_000 + acknowledged.length);
    for (const replica of [2, 3]) await eventually(async () => expect(await rows(replica, digest)).toEqual([expected]), `node ${replica} rows`, 60_000);
    expect(await rows(3, `SELECT count(*)::int AS n FROM legacy WHERE id = ANY($1)`, [acknowledged])).toEqual([{ n: acknowledged.length }]);
    expect(await rows(3, `SELECT count(*)::int AS n FROM legacy WHERE id = ANY($1)`, [rolledBack])).toEqual([{ n: 0 }]);
  }, 120_000);

  it('(8) a node whose table differs from the leader\'s says which column, keeps retrying, and catches up once it is fixed', async () => {
    for (const n of cluster.nodes) {
      const client = await n.sql();
      await client.query(n.replica === 3 ? 'CREATE TABLE shaped (id int PRIMARY KEY)' : 'CREATE TABLE shaped (id int PRIMARY KEY, label text)');
      await client.end();
    }
    await db.setTableMode('shaped', 'async');
    await db.execute([["INSERT INTO shaped VALUES (1, 'one')", []]]);
    await eventually(async () => expect(await rows(2, 'SELECT label FROM shaped')).toEqual([{ label: 'one' }]), 'node 2 row');
    await eventually(async () => expect((await node(3).status()).stuck).toMatch(/column label \(text\) is missing here/), 'node 3 reports the column', 30_000);
    const { stdout } = await run(process.execPath, ['bin/qsync.js', 'status', '--admin', node(1).adminAddress]).catch((error: { stdout: string }) => error);
    expect(stdout).toMatch(/node 3: applying a record keeps failing: .*column label \(text\) is missing here/);
    const client = await node(3).sql();
    await client.query('ALTER TABLE shaped ADD COLUMN label text');
    await client.end();
    await eventually(async () => expect(await rows(3, 'SELECT label FROM shaped')).toEqual([{ label: 'one' }]), 'node 3 catches up', 30_000);
    await eventually(async () => expect((await node(3).status()).stuck).toBeNull(), 'node 3 no longer stuck');
  }, 90_000);

  it('(8b) a follower whose table cannot take a sync write does not acknowledge it: with the other follower down the write rolls back, and the follower says why (RFC 0012)', async () => {
    for (const n of cluster.nodes) {
      const client = await n.sql();
      await client.query('CREATE TABLE narrow (id int PRIMARY KEY, label text)');
      await client.end();
    }
    await db.setTableMode('narrow', 'sync');
    await db.execute([["INSERT INTO narrow VALUES (1, 'one')", []]]);
    await eventually(async () => expect(await rows(2, 'SELECT label FROM narrow')).toEqual([{ label: 'one' }]), 'node 2 row');
    // Changed outside qsync on node 2: the leader's rows now carry a column its table lacks.
    const client = await node(2).sql();
    await client.query('ALTER TABLE narrow DROP COLUMN label');
    await node(3).stopSidecar();
    // A node reads its tables' shapes again every second.
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    try {
      const error = await db.execute([["INSERT INTO narrow VALUES (2, 'two')", []]]).then(() => null, (e: unknown) => e);
      expect(error).toBeInstanceOf(RolledBack);
      expect((error as RolledBack).message).toMatch(/no quorum held it within 1500 ms/);
      const log = await readFile(join(node(2).dataDir, '..', 'sidecar.log'), 'utf8');
      expect(log).toMatch(/node 2 cannot apply record 1:\d+ and does not acknowledge it, nor what follows it from node 1: the rows from node 1 carry column label, which public.narrow lacks here/);
      await client.query('ALTER TABLE narrow ADD COLUMN label text');
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      await db.execute([["INSERT INTO narrow VALUES (3, 'three')", []]]);
    } finally {
      await client.end();
      await node(3).startSidecar();
    }
    for (const replica of [1, 2, 3]) {
      await eventually(async () => expect(await rows(replica, 'SELECT id, label FROM narrow ORDER BY id')).toEqual([{ id: 1, label: replica === 2 ? null : 'one' }, { id: 3, label: 'three' }]), `node ${replica} rows`, 30_000);
    }
  }, 60_000);

  it('(9) qsync ddl adds a column on every node in journal order while a writer keeps inserting; a bad or transaction-wrapped DDL is a clear error', async () => {
    const admin = ['--admin', node(1).adminAddress];
    const withToken = { env: { ...process.env, QSYNC_ADMIN_TOKEN: cluster.adminToken } };
    let writing = true;
    let written = 0;
    const writer = (async () => {
      for (let id = 2_000_001; writing; id += 1) {
        await db.execute([['INSERT INTO legacy (id, v) VALUES ($1, $2)', [id, 'during the DDL']]]);
        written += 1;
      }
    })();
    await new Promise((resolve) => setTimeout(resolve, 200));
    const { stdout } = await run(process.execPath, ['bin/qsync.js', 'ddl', 'ALTER TABLE legacy ADD COLUMN note text', ...admin], withToken);
    expect(stdout).toMatch(/schema change applied on node 1 and journaled at lsn \d+/);
    await db.execute([["INSERT INTO legacy (id, v, note) VALUES (3000001, 'after', 'with a note')", []]]);
    const before = written;
    await eventually(async () => expect(written).toBeGreaterThan(before + 10), 'the writer goes on');
    writing = false;
    await writer;
    const digest = `SELECT count(*)::int AS n, md5(string_agg(id || v || at || coalesce(note, '-'), ',' ORDER BY id)) AS md5 FROM legacy`;
    const [expected] = await rows(1, digest) as Array<{ n: number }>;
    for (const replica of [2, 3]) await eventually(async () => expect(await rows(replica, digest)).toEqual([expected]), `node ${replica} rows`, 30_000);
    expect(await rows(3, 'SELECT note FROM legacy WHERE id = 3000001')).toEqual([{ note: 'with a note' }]);
    const bad = await run(process.execPath, ['bin/qsync.js', 'ddl', 'ALTER TABLE legacy ADD COLUMN note text', ...admin], withToken).catch((error: { code: number; stderr: string }) => error);
    expect(bad).toMatchObject({ code: 1, stderr: expect.stringMatching(/the schema change failed: column "note" of relation "legacy" already exists/) });
    const wrapped = await run(process.execPath, ['bin/qsync.js', 'ddl', 'BEGIN; ALTER TABLE legacy ADD COLUMN x int; COMMIT', ...admin], withToken).catch((error: { code: number; stderr: string }) => error);
    expect(wrapped).toMatchObject({ code: 1, stderr: expect.stringMatching(/leave out BEGIN, COMMIT and ROLLBACK/) });
    // Nothing of either reached a node, and the cluster goes on.
    for (const replica of [1, 2, 3]) expect(await rows(replica, `SELECT count(*)::int AS n FROM information_schema.columns WHERE table_name = 'legacy' AND column_name = 'x'`)).toEqual([{ n: 0 }]);
    expect((await node(3).status()).stuck).toBeNull();

    // The client library's call runs as the connection's role on every node: PostgreSQL checks its privileges there.
    const { lsn } = await db.ddl('CREATE TABLE made_by_client (id int PRIMARY KEY)');
    expect(lsn).toBeGreaterThan(0);
    for (const replica of [1, 2, 3]) {
      await eventually(async () => expect(await rows(replica, `SELECT pg_get_userbyid(relowner) AS owner FROM pg_class WHERE relname = 'made_by_client'`)).toEqual([{ owner: cluster.credentials.user }]), `node ${replica} has made_by_client`);
    }
    const app = await connect(cluster.clientAddresses, { user: 'app', password: 'app-secret-1' });
    try {
      await expect(app.ddl('ALTER TABLE accounts ADD COLUMN taken text')).rejects.toThrow(/the schema change failed: must be owner of table accounts/);
    } finally {
      app.close();
    }
    for (const replica of [1, 2, 3]) expect(await rows(replica, `SELECT count(*)::int AS n FROM information_schema.columns WHERE table_name = 'accounts' AND column_name = 'taken'`)).toEqual([{ n: 0 }]);
  }, 90_000);

  it('(i) a lost answer to an interactive COMMIT is OutcomeUnknown with its idempotency key, and the key tells the truth', async () => {
    // The leader freezes after the transaction's statement: the COMMIT's answer cannot come in time.
    const client = await connect([node(1).clientAddress], { ...cluster.credentials, requestTimeoutMs: 700 });
    let error: unknown;
    try {
      error = await client.transaction(async (tx) => {
        await tx.query('INSERT INTO accounts VALUES (777001, $1, 0)', ['lost commit']);
        node(1).pause();
      }, { idempotencyKey: 'lost-commit-777001' }).catch((e: unknown) => e);
    } finally {
      node(1).resume();
      client.close();
    }
    expect(error).toBeInstanceOf(OutcomeUnknown);
    expect(error).toMatchObject({ idempotencyKey: 'lost-commit-777001', message: expect.stringMatching(/may have committed; ask outcome\("lost-commit-777001"\)/) });
    // Whatever happened, the key and every node agree.
    await eventually(async () => {
      const { committed } = await db.outcome('lost-commit-777001');
      for (const replica of [1, 2, 3]) expect(await rows(replica, 'SELECT count(*)::int AS n FROM accounts WHERE id = 777001')).toEqual([{ n: committed ? 1 : 0 }]);
    }, 'the outcome and the nodes agree');
  });

  it('(h) refuses garbage on the client port with a logged reason and keeps serving', async () => {
    const socket = netConnect({ host: '127.0.0.1', port: node(1).clientPort });
    socket.on('error', () => undefined);
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    socket.resume();
    socket.write('SELECT 1;\r\n\r\n\r\n\r\n');
    await new Promise<void>((resolve) => socket.once('close', () => resolve()));
    await db.execute([['INSERT INTO accounts VALUES (2000, $1, 0)', ['still here']]]);
    expect(await rows(1, 'SELECT owner FROM accounts WHERE id = 2000')).toEqual([{ owner: 'still here' }]);
  });
});
