// The SQL port end to end (issue 21): a real local cluster (3 embedded
// PostgreSQL servers, 3 sidecar processes), and node-postgres, an unmodified
// PostgreSQL driver, connecting to the sidecars' SQL ports as PostgreSQL
// roles. Tries to break what the port promises: a sync write through it is
// on every node once acknowledged, and on none when its quorum is gone; the
// role's own privileges and password hold; the transaction semantics a
// driver expects (explicit, implicit, several statements, extended protocol,
// errors) are PostgreSQL's; a follower refuses sync writes as a hot standby
// would; hostile bytes end one connection, never the port.
import { execFile } from 'node:child_process';
import { chmod, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import type { TLSSocket } from 'node:tls';
import { promisify } from 'node:util';
import { connect as netConnect, type Socket } from 'node:net';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startLocalCluster, type ClusterNode, type LocalCluster } from '../../src/cli/cluster.js';
import { eventually, rowsOn } from '../support/cluster.js';

let cluster: LocalCluster;
const SYNCHRO_TIMEOUT_MS = 1500;
/** The SQL port's certificate on nodes 1 and 2 (node 3 has none): self-signed, for 127.0.0.1. */
let certificate: string;

beforeAll(async () => {
  const tlsDir = await mkdtemp(join(tmpdir(), 'qsync-sql-tls-'));
  await promisify(execFile)('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2', '-subj', '/CN=qsync sql port',
    '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost', '-keyout', join(tlsDir, 'sql.key'), '-out', join(tlsDir, 'sql.crt')]);
  await chmod(join(tlsDir, 'sql.key'), 0o600);
  certificate = await readFile(join(tlsDir, 'sql.crt'), 'utf8');
  cluster = await startLocalCluster({
    synchroTimeoutMs: SYNCHRO_TIMEOUT_MS,
    electionTimeoutMs: 3_000,
    electionModes: { 2: 'voter', 3: 'voter' },
    proxies: true,
    sidecarArgs: (replica) => (replica === 3 ? [] : ['--sql-tls-cert', join(tlsDir, 'sql.crt'), '--sql-tls-key', join(tlsDir, 'sql.key')]),
    tables: [
      { ddl: 'CREATE TABLE accounts (id bigint PRIMARY KEY, owner text, balance numeric NOT NULL)', name: 'accounts', mode: 'sync' },
      { ddl: 'CREATE TABLE notes (id text PRIMARY KEY, body text)', name: 'notes', mode: 'async' },
    ],
  });
  for (const n of cluster.nodes) {
    const client = await n.sql();
    await client.query(`CREATE ROLE app LOGIN PASSWORD 'app-secret-1'; GRANT SELECT, INSERT, UPDATE, DELETE ON accounts, notes TO app;
                        SET password_encryption = 'md5'; CREATE ROLE legacy LOGIN PASSWORD 'legacy-secret-1'; RESET password_encryption;
                        GRANT SELECT, INSERT ON accounts TO legacy; CREATE ROLE nologin PASSWORD 'nologin-secret-1'`);
    await client.end();
  }
}, 120_000);

afterAll(async () => {
  await cluster?.stop();
});

const node = (replica: number): ClusterNode => cluster.nodes[replica - 1] as ClusterNode;
const rows = (replica: number, sql: string, params: unknown[] = []): Promise<unknown[]> => rowsOn(node(replica), sql, params);

/** A node-postgres client on a node's SQL port, as `user`. */
async function sqlClient(replica: number, user = 'app', password = 'app-secret-1'): Promise<pg.Client> {
  const client = new pg.Client({ host: '127.0.0.1', port: node(replica).sqlPort, user, password, database: 'postgres' });
  client.on('error', () => undefined);
  await client.connect();
  return client;
}

const everywhere = async (sql: string, params: unknown[] = []): Promise<unknown[][]> => Promise.all([1, 2, 3].map((r) => rows(r, sql, params)));

describe('SQL port: sync writes from an unmodified driver', () => {
  it('an autocommit INSERT is on every node once acknowledged', async () => {
    const client = await sqlClient(1);
    const r = await client.query("INSERT INTO accounts VALUES (1, 'ann', 10)");
    expect(r.command).toBe('INSERT');
    expect(r.rowCount).toBe(1);
    // Acknowledged: a quorum holds it, and the leader committed it; the followers apply it.
    expect(await rows(1, 'SELECT owner FROM accounts WHERE id = 1')).toEqual([{ owner: 'ann' }]);
    await eventually(async () => expect(await everywhere('SELECT owner, balance::int AS balance FROM accounts WHERE id = 1')).toEqual([[{ owner: 'ann', balance: 10 }], [{ owner: 'ann', balance: 10 }], [{ owner: 'ann', balance: 10 }]]), 'the autocommit INSERT on every node');
    await client.end();
  });

  it('an explicit transaction commits at COMMIT, with parameters and a named prepared statement', async () => {
    const client = await sqlClient(1);
    await client.query('BEGIN');
    await client.query({ name: 'put', text: 'INSERT INTO accounts VALUES ($1, $2, $3)', values: [2, 'bob', 20] });
    await client.query({ name: 'put', text: 'INSERT INTO accounts VALUES ($1, $2, $3)', values: [3, 'cy', 30] });
    // Not committed yet: invisible elsewhere.
    expect(await rows(1, 'SELECT id FROM accounts WHERE id IN (2, 3)')).toEqual([]);
    const done = await client.query('COMMIT');
    expect(done.command).toBe('COMMIT');
    await eventually(async () => expect((await everywhere('SELECT id FROM accounts WHERE id IN (2, 3) ORDER BY id')).map((r) => r.length)).toEqual([2, 2, 2]), 'the two rows of the transaction on every node');
    // The prepared statement lives on in the session, as on PostgreSQL.
    await client.query({ name: 'put', text: 'INSERT INTO accounts VALUES ($1, $2, $3)', values: [4, 'di', 40] });
    await eventually(async () => expect((await everywhere('SELECT id FROM accounts WHERE id = 4')).map((r) => r.length)).toEqual([1, 1, 1]), 'the row of the prepared statement on every node');
    // COMMIT through the extended protocol (a named statement), and COMMIT AND CHAIN, which opens the next at once.
    await client.query({ name: 'begin', text: 'BEGIN' });
    await client.query({ name: 'put', text: 'INSERT INTO accounts VALUES ($1, $2, $3)', values: [40, 'ext', 1] });
    expect((await client.query({ name: 'commit', text: 'COMMIT' })).command).toBe('COMMIT');
    await client.query('BEGIN');
    await client.query({ name: 'put', text: 'INSERT INTO accounts VALUES ($1, $2, $3)', values: [41, 'chain', 1] });
    await client.query('COMMIT AND CHAIN');
    await client.query({ name: 'put', text: 'INSERT INTO accounts VALUES ($1, $2, $3)', values: [42, 'chained', 1] });
    expect(await rows(1, 'SELECT id FROM accounts WHERE id = 42')).toEqual([]);
    await client.query('ROLLBACK');
    await eventually(async () => expect((await everywhere('SELECT id FROM accounts WHERE id BETWEEN 40 AND 42 ORDER BY id')).map((r) => r.length)).toEqual([2, 2, 2]), 'the extended COMMIT and the chained one on every node');
    await client.end();
  });

  it('several statements in one simple query, COMMIT among them, and a ROLLBACK that leaves nothing', async () => {
    const client = await sqlClient(1);
    const results = await client.query("BEGIN; INSERT INTO accounts VALUES (5, 'ed', 50); UPDATE accounts SET balance = 51 WHERE id = 5; COMMIT; SELECT balance::int AS b FROM accounts WHERE id = 5") as unknown as pg.QueryResult[];
    expect(results.map((r) => r.command)).toEqual(['BEGIN', 'INSERT', 'UPDATE', 'COMMIT', 'SELECT']);
    expect(results[4]?.rows).toEqual([{ b: 51 }]);
    await client.query('BEGIN');
    await client.query("INSERT INTO accounts VALUES (6, 'fay', 60)");
    await client.query('ROLLBACK');
    await eventually(async () => expect((await everywhere('SELECT balance::int AS b FROM accounts WHERE id = 5')).flat()).toEqual([{ b: 51 }, { b: 51 }, { b: 51 }]), 'the multi-statement transaction on every node');
    expect((await everywhere('SELECT 1 FROM accounts WHERE id = 6')).flat()).toEqual([]);
    await client.end();
  });

  it('an error inside a transaction fails it as PostgreSQL does, and nothing of it commits', async () => {
    const client = await sqlClient(1);
    await client.query('BEGIN');
    await client.query("INSERT INTO accounts VALUES (7, 'gus', 70)");
    await expect(client.query("INSERT INTO accounts VALUES (7, 'dup', 0)")).rejects.toMatchObject({ code: '23505' });
    await expect(client.query('SELECT 1')).rejects.toMatchObject({ code: '25P02' });
    const end = await client.query('COMMIT');
    expect(end.command).toBe('ROLLBACK');
    // An autocommit statement that fails leaves the session idle and usable.
    await expect(client.query("INSERT INTO accounts VALUES (1, 'again', 0)")).rejects.toMatchObject({ code: '23505' });
    expect((await client.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    expect((await everywhere('SELECT 1 FROM accounts WHERE id = 7')).flat()).toEqual([]);
    await client.end();
  });

  it('a sync write in a transaction that used a temporary table commits when held open; SERIALIZABLE, which is prepared, fails at COMMIT with a hint and is on no node', async () => {
    const client = await sqlClient(1);
    // Held open (syncHold open, the default): nothing forbids the temporary table.
    await client.query('BEGIN');
    await client.query('CREATE TEMPORARY TABLE scratch (x int)');
    await client.query("INSERT INTO accounts VALUES (59, 'temp', 1)");
    await client.query('COMMIT');
    await eventually(async () => expect((await everywhere('SELECT 1 AS x FROM accounts WHERE id = 59')).flat()).toEqual([{ x: 1 }, { x: 1 }, { x: 1 }]), 'the held write on every node');
    // SERIALIZABLE is prepared, and PostgreSQL refuses to prepare a transaction that used a temporary table.
    await client.query('BEGIN ISOLATION LEVEL SERIALIZABLE');
    await client.query('CREATE TEMPORARY TABLE scratch2 (x int)');
    await client.query("INSERT INTO accounts VALUES (60, 'temp', 1)");
    await expect(client.query('COMMIT')).rejects.toMatchObject({ code: '0A000', hint: expect.stringMatching(/SERIALIZABLE.*prepared transaction.*temporary tables/) });
    expect((await client.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    expect((await everywhere('SELECT 1 AS x FROM accounts WHERE id = 60')).flat()).toEqual([]);
    expect(await rows(1, 'SELECT gid FROM pg_prepared_xacts')).toEqual([]);
    await client.end();
  });

  it('async tables: an autocommit write through the port replicates, also from a follower', async () => {
    const client = await sqlClient(2);
    await client.query("INSERT INTO notes VALUES ('n1', 'from node 2')");
    await eventually(async () => expect((await everywhere("SELECT body FROM notes WHERE id = 'n1'")).flat()).toEqual([{ body: 'from node 2' }, { body: 'from node 2' }, { body: 'from node 2' }]), 'the async note on every node');
    await client.end();
  });

  it('a pool of 32 sessions writing at once: every acknowledged write is on every node', async () => {
    const pool = new pg.Pool({ host: '127.0.0.1', port: node(1).sqlPort, user: 'app', password: 'app-secret-1', database: 'postgres', max: 32 });
    const ids = Array.from({ length: 200 }, (_, i) => 1000 + i);
    await Promise.all(ids.map((id) => pool.query('INSERT INTO accounts VALUES ($1, $2, $3)', [id, `p${id}`, id])));
    await pool.end();
    await eventually(async () => expect((await everywhere('SELECT count(*)::int AS n FROM accounts WHERE id >= 1000 AND id < 1200')).flat()).toEqual([{ n: 200 }, { n: 200 }, { n: 200 }]), 'the 200 writes of the pool on every node');
  });
});

describe('SQL port: psql', () => {
  const psql = async (args: readonly string[], input?: string): Promise<{ stdout: string; stderr: string; code: number }> => {
    const url = `postgresql://app:app-secret-1@127.0.0.1:${node(1).sqlPort}/postgres`;
    return new Promise((resolve) => {
      const child = execFile('psql', [url, '-X', '-v', 'ON_ERROR_STOP=1', ...args], { timeout: 20_000 }, (error, stdout, stderr) => {
        resolve({ stdout, stderr, code: error === null ? 0 : typeof error.code === 'number' ? error.code : 1 });
      });
      if (input !== undefined) child.stdin?.end(input);
    });
  };

  it('a multi-statement transaction and \\copy in both directions, through psql in simple mode', async () => {
    const tx = await psql(['-c', "BEGIN; INSERT INTO accounts VALUES (20, 'psql', 1); UPDATE accounts SET balance = 2 WHERE id = 20; COMMIT"]);
    expect(tx).toMatchObject({ code: 0, stderr: '' });
    const copied = await psql(['-c', '\\copy accounts FROM STDIN'], '21\tcopy-a\t21\n22\tcopy-b\t22\n');
    expect(copied).toMatchObject({ code: 0, stdout: 'COPY 2\n' });
    await eventually(async () => expect((await everywhere('SELECT id, balance::int AS b FROM accounts WHERE id BETWEEN 20 AND 22 ORDER BY id')).map((r) => r.length)).toEqual([3, 3, 3]), 'the rows psql wrote on every node');
    expect(await rows(3, 'SELECT balance::int AS b FROM accounts WHERE id = 20')).toEqual([{ b: 2 }]);
    const out = await psql(['-c', '\\copy (SELECT id FROM accounts WHERE id BETWEEN 20 AND 22 ORDER BY id) TO STDOUT']);
    expect(out).toMatchObject({ code: 0, stdout: '20\n21\n22\n' });
    // A bad row fails the whole COPY, and nothing of it is anywhere.
    const bad = await psql(['-c', '\\copy accounts FROM STDIN'], '23\tok\t23\nnot-a-number\tbad\t0\n');
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/invalid input syntax/);
    expect((await everywhere('SELECT 1 AS x FROM accounts WHERE id = 23')).flat()).toEqual([]);
  });
});

describe('SQL port: idempotency keys and schema changes', () => {
  it('a transaction with SET LOCAL qsync.idempotency_key commits once; its outcome is asked from SQL', async () => {
    const client = await sqlClient(1);
    expect((await client.query("SELECT * FROM qsync.outcome('order-30')")).rows).toEqual([{ committed: false, replica_id: null, lsn: null }]);
    const once = "BEGIN; SET LOCAL qsync.idempotency_key = 'order-30'; INSERT INTO accounts VALUES (30, 'once', 30); COMMIT";
    await client.query(once);
    const [outcome] = (await client.query("SELECT * FROM qsync.outcome('order-30')")).rows as Array<{ committed: boolean; replica_id: number }>;
    expect(outcome).toMatchObject({ committed: true, replica_id: 1 });
    // The retry of a commit whose answer was lost: refused, and the row is there once.
    await expect(client.query("BEGIN; SET LOCAL qsync.idempotency_key = 'order-30'; INSERT INTO accounts VALUES (31, 'twice', 31); COMMIT"))
      .rejects.toMatchObject({ code: '23505', message: expect.stringMatching(/idempotency key has already committed/) });
    expect(await client.query('SELECT 1')).toMatchObject({ rowCount: 1 });
    await eventually(async () => expect((await everywhere("SELECT key FROM qsync.idempotency WHERE key = 'order-30'")).map((r) => r.length)).toEqual([1, 1, 1]), 'the key on every node');
    expect((await everywhere('SELECT 1 AS x FROM accounts WHERE id = 31')).flat()).toEqual([]);
    await client.end();
  });

  it('a schema change to a replicated table through the port is refused with a hint naming qsync ddl; a local table\'s goes through', async () => {
    const owner = new pg.Client({ host: '127.0.0.1', port: node(1).sqlPort, ...cluster.credentials, database: 'postgres' });
    await owner.connect();
    await expect(owner.query('ALTER TABLE accounts ADD COLUMN extra text')).rejects.toMatchObject({ code: '0A000', hint: expect.stringMatching(/qsync ddl/) });
    await expect(owner.query('DROP TABLE notes')).rejects.toMatchObject({ code: '0A000' });
    await owner.query('CREATE TABLE scratch_local (id int PRIMARY KEY); ALTER TABLE scratch_local ADD COLUMN x int; DROP TABLE scratch_local');
    await owner.end();
    expect((await everywhere("SELECT count(*)::int AS n FROM information_schema.columns WHERE table_name = 'accounts' AND column_name = 'extra'")).flat()).toEqual([{ n: 0 }, { n: 0 }, { n: 0 }]);
    // A connection that tries to mark itself otherwise is refused at startup.
    const sneaky = new pg.Client({ host: '127.0.0.1', port: node(1).sqlPort, ...cluster.credentials, database: 'postgres', options: '-c qsync.via_front=off' });
    sneaky.on('error', () => undefined);
    await expect(sneaky.connect()).rejects.toMatchObject({ code: '42501' });
  });
});

describe('SQL port: another database', () => {
  it('a database without the qsync schema replicates nothing, and its sessions are relayed as they come', async () => {
    const admin = await node(1).sql();
    await admin.query('CREATE DATABASE elsewhere');
    await admin.end();
    const client = new pg.Client({ host: '127.0.0.1', port: node(1).sqlPort, ...cluster.credentials, database: 'elsewhere' });
    await client.connect();
    await client.query('CREATE TABLE mine (id int PRIMARY KEY)');
    await client.query('INSERT INTO mine VALUES (1)');
    await client.query('BEGIN; INSERT INTO mine VALUES (2); COMMIT');
    expect((await client.query('SELECT count(*)::int AS n FROM mine')).rows).toEqual([{ n: 2 }]);
    await client.end();
  });
});

describe('SQL port: leadership as PostgreSQL clients read it', () => {
  it('the leader reports read-write, a follower read-only and hot standby', async () => {
    const reported = async (replica: number): Promise<Record<string, string>> => {
      const client = new pg.Client({ host: '127.0.0.1', port: node(replica).sqlPort, user: 'app', password: 'app-secret-1', database: 'postgres' });
      const params: Record<string, string> = {};
      (client as unknown as { connection: { on(e: string, f: (m: { parameterName: string; parameterValue: string }) => void): void } }).connection
        .on('parameterStatus', (m) => (params[m.parameterName] = m.parameterValue));
      await client.connect();
      await client.end();
      return params;
    };
    expect(await reported(1)).toMatchObject({ default_transaction_read_only: 'off', in_hot_standby: 'off', session_authorization: 'app' });
    expect(await reported(2)).toMatchObject({ default_transaction_read_only: 'on', in_hot_standby: 'on' });
  });

  it('a sync write on a follower is refused with 25006 and names the leader', async () => {
    const client = await sqlClient(2);
    const error = await client.query("INSERT INTO accounts VALUES (8, 'hal', 80)").catch((e: unknown) => e) as { code?: string; hint?: string };
    expect(error.code).toBe('25006');
    expect(error.hint).toContain(`127.0.0.1:${node(1).sqlPort}`);
    // Reads and the session go on.
    expect((await client.query('SELECT count(*)::int AS n FROM accounts WHERE id = 1')).rows).toEqual([{ n: 1 }]);
    expect((await everywhere('SELECT 1 FROM accounts WHERE id = 8')).flat()).toEqual([]);
    await client.end();
  });
});

describe('SQL port: linearizable reads', () => {
  it("with qsync.read = 'linearizable' a read sees every acknowledged write, and is refused (55000) when no quorum confirms the leader or on a follower", async () => {
    await cluster.leader();
    const reader = await sqlClient(1);
    const writer = await sqlClient(1);
    const owner = async (): Promise<unknown[]> => (await reader.query('SELECT owner FROM accounts WHERE id = 80')).rows;
    await reader.query("SET qsync.read = 'linearizable'");
    expect((await reader.query('SHOW qsync.read')).rows).toEqual([{ 'qsync.read': 'linearizable' }]);
    await writer.query("INSERT INTO accounts VALUES (80, 'read after write', 1)");
    expect(await owner()).toEqual([{ owner: 'read after write' }]);
    // The extended protocol, and a transaction whose snapshot is taken at its first statement.
    expect((await reader.query({ text: 'SELECT owner FROM accounts WHERE id = $1', values: [80] })).rows).toEqual([{ owner: 'read after write' }]);
    await reader.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
    await writer.query("UPDATE accounts SET owner = 'in the snapshot' WHERE id = 80");
    expect(await owner()).toEqual([{ owner: 'in the snapshot' }]);
    await reader.query('COMMIT');
    // No quorum: the leader cannot show it still leads, so the read is refused, never answered from what may be stale.
    cluster.proxy(1, 2).cut();
    cluster.proxy(1, 3).cut();
    cluster.proxy(2, 1).cut();
    cluster.proxy(3, 1).cut();
    try {
      const refused = await reader.query('SELECT owner FROM accounts WHERE id = 80').catch((e: unknown) => e) as { code?: string; message?: string };
      expect(refused.code).toBe('55000');
      expect(refused.message).toMatch(/linearizable read/);
      // Only the setting refused it: a plain read answers, and a setting still runs, so the session can leave the mode.
      expect((await writer.query('SELECT owner FROM accounts WHERE id = 80')).rows).toEqual([{ owner: 'in the snapshot' }]);
      await reader.query("SET qsync.read = 'local'");
      expect(await owner()).toEqual([{ owner: 'in the snapshot' }]);
      await reader.query("SET qsync.read = 'linearizable'");
    } finally {
      cluster.heal();
    }
    await cluster.leader();
    await eventually(async () => expect(await owner()).toEqual([{ owner: 'in the snapshot' }]), 'a linearizable read once the quorum is back');
    // A follower refuses it, naming the leader; a value qsync does not know is refused until the session fixes it.
    const follower = await sqlClient(2);
    await follower.query("SET qsync.read = 'linearizable'");
    const elsewhere = await follower.query('SELECT 1').catch((e: unknown) => e) as { code?: string; hint?: string };
    expect(elsewhere.code).toBe('55000');
    expect(elsewhere.hint).toContain(`127.0.0.1:${node(1).sqlPort}`);
    await follower.query("SET qsync.read = 'linearisable'");
    await expect(follower.query('SELECT 1')).rejects.toMatchObject({ code: '22023' });
    await follower.query('RESET qsync.read');
    expect((await follower.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    // Set in the connection (options), as any libpq or JDBC client can.
    const connected = async (replica: number): Promise<pg.Client> => {
      const client = new pg.Client({ host: '127.0.0.1', port: node(replica).sqlPort, user: 'app', password: 'app-secret-1', database: 'postgres', options: '-c qsync.read=linearizable' });
      client.on('error', () => undefined);
      await client.connect();
      return client;
    };
    const onLeader = await connected(1);
    const onFollower = await connected(2);
    expect((await onLeader.query('SELECT owner FROM accounts WHERE id = 80')).rows).toEqual([{ owner: 'in the snapshot' }]);
    await expect(onFollower.query('SELECT 1')).rejects.toMatchObject({ code: '55000' });
    for (const c of [reader, writer, follower, onLeader, onFollower]) await c.end();
  }, 40_000);
});

describe('SQL port: the limbo behind COMMIT', () => {
  it('a commit whose quorum is gone is rolled back with a class 40 error and is on no node', async () => {
    const client = await sqlClient(1);
    cluster.proxy(1, 2).cut();
    cluster.proxy(1, 3).cut();
    cluster.proxy(2, 1).cut();
    cluster.proxy(3, 1).cut();
    try {
      const error = await client.query("INSERT INTO accounts VALUES (9, 'ivy', 90)").catch((e: unknown) => e) as { code?: string; message?: string };
      expect(error.code).toBe('40000');
      expect(error.message).toMatch(/quorum|rolled back/i);
    } finally {
      cluster.heal();
    }
    expect((await everywhere('SELECT 1 FROM accounts WHERE id = 9')).flat()).toEqual([]);
    // Nothing stays prepared on the leader.
    await eventually(async () => expect(await rows(1, 'SELECT gid FROM pg_prepared_xacts')).toEqual([]), 'nothing prepared after the rollback');
    // The session is usable again once the quorum is back.
    await cluster.leader();
    await eventually(async () => expect((await client.query("INSERT INTO accounts VALUES (10, 'jo', 100) ON CONFLICT DO NOTHING")).command).toBe('INSERT'), 'a write once the quorum is back');
    await client.end();
  });

  it('a transaction open across an election commits nothing: its COMMIT is refused as stale (40001), and it is on no node', async () => {
    await cluster.leader();
    const client = await sqlClient(1);
    await client.query('BEGIN');
    await client.query("INSERT INTO accounts VALUES (70, 'across an election', 1)");
    const before = (await node(1).status()).term;
    await node(1).admin('POST', '/demote');
    // Node 1 is the only candidate: it leads again, in a newer term.
    await eventually(async () => {
      const s = await node(1).status();
      expect(s.term).toBeGreaterThan(before);
      expect(s.writable).toBe(true);
    }, 'node 1 leads again in a newer term', 30_000);
    await expect(client.query('COMMIT')).rejects.toMatchObject({ code: '40001' });
    expect((await client.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    expect((await everywhere('SELECT 1 AS x FROM accounts WHERE id = 70')).flat()).toEqual([]);
    expect(await rows(1, 'SELECT gid FROM pg_prepared_xacts')).toEqual([]);
    // The session goes on in the new term.
    await client.query("INSERT INTO accounts VALUES (71, 'after the election', 1)");
    await eventually(async () => expect((await everywhere('SELECT 1 AS x FROM accounts WHERE id = 71')).map((r) => r.length)).toEqual([1, 1, 1]), 'the write after the election on every node');
    await client.end();
  }, 40_000);

  it('a client that leaves while its commit waits changes nothing: the commit is decided, nothing stays prepared', async () => {
    const client = await sqlClient(1);
    cluster.proxy(1, 2).cut();
    cluster.proxy(1, 3).cut();
    const pending = client.query("INSERT INTO accounts VALUES (11, 'kim', 110)").catch((e: unknown) => e);
    await new Promise((r) => setTimeout(r, 200));
    (client as unknown as { connection: { stream: Socket } }).connection.stream.destroy();
    cluster.heal();
    await pending;
    // Decided one way, on every node alike, and nothing left prepared.
    await eventually(async () => {
      const seen = (await everywhere('SELECT 1 AS x FROM accounts WHERE id = 11')).map((r) => r.length);
      expect(new Set(seen).size).toBe(1);
      expect(await rows(1, 'SELECT gid FROM pg_prepared_xacts')).toEqual([]);
    }, 'one outcome on every node, nothing prepared');
    // The cut may have cost node 1 its leadership for a moment: the tests after write again.
    await cluster.leader();
  });
});

describe('SQL port: roles and passwords are PostgreSQL\'s', () => {
  it('a wrong password gets 28P01; an unknown role and one that may not log in get the same', async () => {
    for (const [user, password] of [['app', 'wrong'], ['ghost', 'whatever'], ['nologin', 'nologin-secret-1']] as const) {
      await expect(sqlClient(1, user, password)).rejects.toMatchObject({ code: '28P01', message: `password authentication failed for user "${user}"` });
    }
  });

  it('an md5 password works where pg_hba.conf allows md5, and is refused as PostgreSQL refuses it where it asks SCRAM', async () => {
    await expect(sqlClient(2, 'legacy', 'legacy-secret-1')).rejects.toMatchObject({ code: '28P01', detail: expect.stringMatching(/md5.*SCRAM/) });
    // Node 1 lets the role use md5, as an operator would for a legacy role.
    const dataDir = node(1).pg.dataDir as string;
    const hba = await readFile(join(dataDir, 'pg_hba.conf'), 'utf8');
    await writeFile(join(dataDir, 'pg_hba.conf'), `local all legacy md5\nhost all legacy 127.0.0.1/32 md5\n${hba}`);
    await rows(1, 'SELECT pg_reload_conf()');
    const client = await sqlClient(1, 'legacy', 'legacy-secret-1');
    expect((await client.query('SELECT current_user AS u, session_user AS s')).rows).toEqual([{ u: 'legacy', s: 'legacy' }]);
    await client.query("INSERT INTO accounts VALUES (12, 'leo', 120)");
    await eventually(async () => expect((await everywhere('SELECT 1 AS x FROM accounts WHERE id = 12')).map((r) => r.length)).toEqual([1, 1, 1]), 'the md5 role\'s write on every node');
    // Exactly the role's privileges: it may not update, nor become another role.
    await expect(client.query('UPDATE accounts SET balance = 0 WHERE id = 12')).rejects.toMatchObject({ code: '42501' });
    await expect(client.query('SET ROLE postgres')).rejects.toMatchObject({ code: '42501' });
    await client.end();
  });
});

describe('SQL port: hostile input', () => {
  const raw = (replica: number): Promise<Socket> => new Promise((resolve, reject) => {
    const s = netConnect(node(replica).sqlPort, '127.0.0.1', () => resolve(s));
    s.on('error', reject);
  });
  const answer = (s: Socket): Promise<Buffer> => new Promise((resolve) => {
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('close', () => resolve(Buffer.concat(chunks)));
    s.on('error', () => undefined);
  });

  it('garbage, a 2^31 length and an oversized startup packet each get an error and a closed connection; the port serves on', async () => {
    for (const bytes of [Buffer.from('GET / HTTP/1.1\r\n\r\n'), Buffer.from([0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0]), Buffer.concat([Buffer.from([0, 0, 0x4e, 0x30]), Buffer.alloc(100)])]) {
      const s = await raw(1);
      const got = answer(s);
      s.write(bytes);
      const reply = await got;
      expect(String.fromCharCode(reply[0] ?? 0)).toBe('E');
      expect(reply.toString('latin1')).toMatch(/length|protocol/);
    }
    const client = await sqlClient(1);
    expect((await client.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    await client.end();
  });

  it('a message over the cap after login ends that session only', async () => {
    const other = await sqlClient(1);
    const victim = await sqlClient(1);
    const socket = (victim as unknown as { connection: { stream: Socket } }).connection.stream;
    const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
    const header = Buffer.alloc(5);
    header.write('Q');
    header.writeInt32BE(2 ** 30, 1);
    socket.write(header);
    await closed;
    expect((await other.query('SELECT 2 AS two')).rows).toEqual([{ two: 2 }]);
    await other.end();
  });

  it('TLS where the port has a certificate (checked by the client), declined where it has none; GSS encryption declined', async () => {
    const secure = new pg.Client({ host: '127.0.0.1', port: node(1).sqlPort, user: 'app', password: 'app-secret-1', database: 'postgres', ssl: { ca: certificate } });
    await secure.connect();
    const stream = (secure as unknown as { connection: { stream: TLSSocket } }).connection.stream;
    expect(stream.encrypted).toBe(true);
    expect(stream.getProtocol()).toMatch(/TLSv1\.[23]/);
    expect((await secure.query("INSERT INTO accounts VALUES (50, 'over tls', 1)")).rowCount).toBe(1);
    await secure.end();
    await eventually(async () => expect((await everywhere('SELECT 1 AS x FROM accounts WHERE id = 50')).map((r) => r.length)).toEqual([1, 1, 1]), 'the write over TLS on every node');
    // A certificate the client does not trust fails the connection, as sslmode=verify-full would.
    const doubting = new pg.Client({ host: '127.0.0.1', port: node(2).sqlPort, user: 'app', password: 'app-secret-1', database: 'postgres', ssl: { rejectUnauthorized: true } });
    doubting.on('error', () => undefined);
    await expect(doubting.connect()).rejects.toThrow(/self-signed|certificate/);
    // No certificate on node 3: the request is declined, and a client that insists stops there.
    const client = new pg.Client({ host: '127.0.0.1', port: node(3).sqlPort, user: 'app', password: 'app-secret-1', database: 'postgres', ssl: { rejectUnauthorized: false } });
    client.on('error', () => undefined);
    await expect(client.connect()).rejects.toThrow(/SSL/);
    const s = await raw(1);
    const got = new Promise<Buffer>((resolve) => s.once('data', resolve));
    s.write(Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30]));
    expect((await got).toString()).toBe('N');
    s.destroy();
  });
});

describe('SQL port: cancel', () => {
  it('a cancel request stops a long query of that session only', async () => {
    const client = await sqlClient(1);
    const other = await sqlClient(1);
    const long = client.query('SELECT pg_sleep(30)').catch((e: unknown) => e);
    await new Promise((r) => setTimeout(r, 300));
    // node-postgres cancels with the key the front gave it, over a connection of its own.
    const canceller = new pg.Client({ host: '127.0.0.1', port: node(1).sqlPort, user: 'app', password: 'app-secret-1', database: 'postgres' });
    await (canceller as unknown as { cancel(c: pg.Client, q: unknown): void }).cancel(client, (client as unknown as { activeQuery: unknown }).activeQuery);
    expect(await long).toMatchObject({ code: '57014' });
    expect((await client.query('SELECT 3 AS three')).rows).toEqual([{ three: 3 }]);
    expect((await other.query('SELECT 4 AS four')).rows).toEqual([{ four: 4 }]);
    await client.end();
    await other.end();
  }, 20_000);

  it('protocol 3.2: a client asking for it gets it, with a 32-byte cancel key that cancels its query; one asking for 3.3 is offered 3.2, one asking for 3.1 gets 3.0', async () => {
    // No driver here speaks 3.2 (Debian's libpq is older): the client is written out, with node-postgres' own SCRAM.
    const sasl = createRequire(import.meta.url)('pg/lib/crypto/sasl.js') as {
      startSession(mechanisms: string[]): { response: string; message: string };
      continueSession(session: object, password: string, serverData: string): Promise<void>;
      finalizeSession(session: object, serverData: string): void;
    };
    const open = async (minor: number): Promise<{ socket: Socket; next: () => Promise<{ type: string; body: Buffer }>; waiting: () => number; negotiated: number | null; pid: number; key: Buffer }> => {
      const socket = netConnect(node(1).sqlPort, '127.0.0.1');
      let buffered = Buffer.alloc(0);
      let wake: (() => void) | null = null;
      socket.on('data', (chunk: Buffer) => {
        buffered = Buffer.concat([buffered, chunk]);
        wake?.();
      });
      const next = async (): Promise<{ type: string; body: Buffer }> => {
        while (buffered.length < 5 || buffered.length < 1 + buffered.readInt32BE(1)) await new Promise<void>((r) => (wake = r));
        const length = buffered.readInt32BE(1);
        const m = { type: String.fromCharCode(buffered[0] as number), body: buffered.subarray(5, 1 + length) };
        buffered = buffered.subarray(1 + length);
        return m;
      };
      const body = Buffer.concat([Buffer.from([0, 3, 0, minor]), Buffer.from('user\0app\0database\0postgres\0\0')]);
      const length = Buffer.alloc(4);
      length.writeInt32BE(body.length + 4);
      await new Promise<void>((r) => socket.once('connect', () => r()));
      socket.write(Buffer.concat([length, body]));
      const message = (type: string, payload: Buffer): Buffer => {
        const header = Buffer.alloc(5);
        header.write(type, 0, 'latin1');
        header.writeInt32BE(payload.length + 4, 1);
        return Buffer.concat([header, payload]);
      };
      let negotiated: number | null = null;
      let session: { response: string } | null = null;
      let pid = 0;
      let key = Buffer.alloc(0);
      for (;;) {
        const m = await next();
        if (m.type === 'v') negotiated = m.body.readInt32BE(0) & 0xffff;
        else if (m.type === 'E') throw new Error(`refused: ${m.body.toString()}`);
        else if (m.type === 'K') {
          pid = m.body.readInt32BE(0);
          key = Buffer.from(m.body.subarray(4));
        } else if (m.type === 'Z') break;
        else if (m.type === 'R') {
          const code = m.body.readInt32BE(0);
          const data = m.body.subarray(4).toString();
          if (code === 10) {
            session = sasl.startSession(['SCRAM-SHA-256']);
            const first = Buffer.from(session.response);
            const size = Buffer.alloc(4);
            size.writeInt32BE(first.length);
            socket.write(message('p', Buffer.concat([Buffer.from('SCRAM-SHA-256\0'), size, first])));
          } else if (code === 11 && session !== null) {
            await sasl.continueSession(session, 'app-secret-1', data);
            socket.write(message('p', Buffer.from(session.response)));
          } else if (code === 12 && session !== null) {
            sasl.finalizeSession(session, data);
          }
        }
      }
      return { socket, next, waiting: () => buffered.length, negotiated, pid, key };
    };
    const latest = await open(2);
    expect(latest.negotiated).toBeNull();
    expect(latest.key.length).toBe(32);
    const newer = await open(3);
    expect(newer.negotiated).toBe(2);
    expect(newer.key.length).toBe(32);
    const older = await open(1);
    expect(older.negotiated).toBe(0);
    expect(older.key.length).toBe(4);
    // A cancel request with the 32-byte key stops the query; one with the key cut short does nothing.
    const query = Buffer.from('SELECT pg_sleep(30)\0');
    const q = Buffer.alloc(5);
    q.write('Q', 0, 'latin1');
    q.writeInt32BE(query.length + 4, 1);
    latest.socket.write(Buffer.concat([q, query]));
    await new Promise((r) => setTimeout(r, 300));
    const cancel = (key: Buffer): void => {
      const packet = Buffer.alloc(12);
      packet.writeInt32BE(12 + key.length, 0);
      packet.writeInt32BE(80877102, 4);
      packet.writeInt32BE(latest.pid, 8);
      const socket = netConnect(node(1).sqlPort, '127.0.0.1', () => socket.end(Buffer.concat([packet, key])));
      socket.on('error', () => undefined);
    };
    cancel(latest.key.subarray(0, 4));
    await new Promise((r) => setTimeout(r, 500));
    expect(latest.waiting()).toBe(0);
    cancel(latest.key);
    let answer = await latest.next();
    while (answer.type === 'T') answer = await latest.next();
    expect(answer.type).toBe('E');
    expect(answer.body.toString()).toContain('57014');
    for (const c of [latest, newer, older]) c.socket.destroy();
  }, 20_000);
});
