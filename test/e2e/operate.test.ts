// Operating qsync on a real 3-node cluster with a real redis-server: the admin
// HTTP API, Prometheus metrics, the operator CLI as a newcomer uses it (from
// the cluster file of `cluster up`), Redis discovery and events, and logs.
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startLocalCluster, type ClusterNode, type LocalCluster } from '../../src/cli/cluster.js';
import { connect, connectViaRedis, StaleTerm, type Db } from '../../src/client/index.js';
import { claimLeader, eventsChannel, leaderKey } from '../../src/discovery/redis.js';
import { serveControl } from '../../src/drill/target.js';
import { prettyLines } from '../../src/log.js';
import type { SidecarStatus } from '../../src/sidecar/status.js';
import { eventually, rowsOn } from '../support/cluster.js';
import { startRedis, type TestRedis } from '../support/redis.js';

const execFileAsync = promisify(execFile);
let cluster: LocalCluster;
let redis: TestRedis;
let db: Db;
let dir: string;
let stopControl: () => Promise<void>;
let subscriber: Redis;
const events: Array<Record<string, unknown>> = [];

beforeAll(async () => {
  redis = await startRedis();
  cluster = await startLocalCluster({
    redisUrl: redis.url,
    // A small pool per role, so that the test of its bound needs few transactions.
    sidecarArgs: () => ['--client-pool-connections', '3'],
    tables: [{ ddl: 'CREATE TABLE items (id bigint PRIMARY KEY, note text)', name: 'items', mode: 'sync' }, { ddl: 'CREATE TABLE clicks (id bigint PRIMARY KEY)', name: 'clicks', mode: 'async' }],
  });
  // The cluster file `qsync cluster up` writes: the CLI finds the nodes and the token there.
  dir = await mkdtemp(join(tmpdir(), 'qsync-operate-'));
  stopControl = await serveControl(cluster, dir);
  db = await connect(cluster.clientAddresses, { ...cluster.credentials, leaderWaitMs: 30_000 });
  subscriber = redis.client();
  await subscriber.subscribe(eventsChannel('local'));
  subscriber.on('message', (_channel: string, text: string) => events.push(JSON.parse(text) as Record<string, unknown>));
}, 120_000);

afterAll(async () => {
  db?.close();
  await stopControl?.();
  await cluster?.stop();
  await redis?.stop();
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

/** Run the qsync CLI; resolves with its exit code and output whatever the code. */
async function qsync(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await execFileAsync(process.execPath, ['bin/qsync.js', ...args], { env: { ...process.env, QSYNC_ADMIN_TOKEN: '', QSYNC_ADMIN: '' } });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}
const cli = (...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> => qsync(...args, '--cluster-dir', dir);

async function http(node: ClusterNode, method: string, path: string, options: { token?: string; body?: string } = {}): Promise<{ status: number; body: unknown; text: string }> {
  const response = await fetch(`http://${node.adminAddress}${path}`, {
    method, headers: options.token === undefined ? {} : { authorization: `Bearer ${options.token}` }, ...(options.body === undefined ? {} : { body: options.body }),
  });
  const text = await response.text();
  let body: unknown = null;
  try {
    body = JSON.parse(text);
  } catch {
    // metrics: text
  }
  return { status: response.status, body, text };
}

/** One sample's value from Prometheus text, 0 if absent. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number {
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || !line.startsWith(name)) continue;
    const match = /^([a-z_]+)(?:\{(.*)\})? (.+)$/.exec(line);
    if (match === null || match[1] !== name) continue;
    const found = Object.fromEntries([...(match[2] ?? '').matchAll(/([a-z_]+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    if (Object.entries(labels).every(([k, v]) => found[k] === v)) return Number(match[3]);
  }
  return 0;
}

const followersOf = (leader: ClusterNode): ClusterNode[] => cluster.nodes.filter((n) => n.replica !== leader.replica);

describe('admin HTTP API', () => {
  it('GET /status shows election, limbo, vclocks, each peer\'s link and lag, and PostgreSQL', async () => {
    const leader = await cluster.leader();
    await db.execute([['INSERT INTO items VALUES (1, $1)', ['status']]]);
    const follower = followersOf(leader)[0] as ClusterNode;
    await eventually(async () => {
      const s = (await http(follower, 'GET', '/status')).body as SidecarStatus;
      expect(s).toMatchObject({ replica: follower.replica, role: 'follower', leader: leader.replica, writable: false, cluster: 'local', postgres: { reachable: true, prepared: 0 } });
      expect(s.limbo.owner).toBe(leader.replica);
      expect(s.limbo.confirmedLsn).toBeGreaterThan(0);
      expect(s.peers).toHaveLength(2);
      for (const p of s.peers) expect(p).toMatchObject({ connected: true, lagRecords: 0, lagMs: 0 });
      for (const p of s.peers) expect(p.heardAgoMs).not.toBeNull();
    }, 'a follower\'s status');
    const s = await leader.status();
    expect(s).toMatchObject({ role: 'leader', writable: true, limbo: { pending: 0, oldestAgeMs: 0 }, addresses: { client: leader.clientAddress, admin: leader.adminAddress } });
  });

  it('the health checks answer 200 or 503 as a load balancer needs, and follow PostgreSQL going away', async () => {
    const leader = await cluster.leader();
    const follower = followersOf(leader)[0] as ClusterNode;
    expect((await http(leader, 'GET', '/health/leader')).status).toBe(200);
    expect((await http(leader, 'GET', '/health/replica')).status).toBe(503);
    expect((await http(follower, 'GET', '/health/leader')).status).toBe(503);
    expect((await http(follower, 'GET', '/health/replica')).status).toBe(200);
    expect((await http(follower, 'GET', '/health/replica?lag=1000')).status).toBe(200);
    expect((await http(follower, 'GET', '/health/replica?lag=lots')).status).toBe(400);
    await follower.pg.kill();
    try {
      await eventually(async () => expect((await http(follower, 'GET', '/health/replica')).status).toBe(503), 'the replica check fails without PostgreSQL');
      const s = (await http(follower, 'GET', '/status')).body as SidecarStatus;
      expect(s.postgres).toMatchObject({ reachable: false, prepared: null });
      expect(s.postgres.error).toEqual(expect.any(String));
      expect(sample((await http(follower, 'GET', '/metrics')).text, 'qsync_postgres_up')).toBe(0);
    } finally {
      await follower.pg.start();
    }
    await eventually(async () => expect((await http(follower, 'GET', '/health/replica')).status).toBe(200), 'the replica check passes again');
  });

  it('mutating requests need the token; bad requests get a clear error and change nothing', async () => {
    const leader = await cluster.leader();
    const follower = followersOf(leader)[0] as ClusterNode;
    const missing = await http(leader, 'POST', '/demote');
    expect(missing.status).toBe(401);
    expect(missing.body).toMatchObject({ error: { code: 'AUTH', message: expect.stringMatching(/needs the admin token: send Authorization: Bearer/) } });
    expect((await http(leader, 'POST', '/demote', { token: 'wrong-token-0123456789' })).status).toBe(401);
    expect((await http(leader, 'PUT', '/tables/items', { body: '{"mode":"local"}' })).status).toBe(401);
    const badMode = await http(leader, 'PUT', '/tables/items', { token: cluster.adminToken, body: '{"mode":"sometimes"}' });
    expect(badMode).toMatchObject({ status: 400, body: { error: { message: expect.stringMatching(/needs a mode: body \{"mode": "sync"\|"async"\|"local"\}/) } } });
    expect((await http(leader, 'PUT', '/tables/items', { token: cluster.adminToken, body: '{not json' })).status).toBe(400);
    const noTable = await http(leader, 'PUT', '/tables/nosuch', { token: cluster.adminToken, body: '{"mode":"sync"}' });
    expect(noTable).toMatchObject({ status: 400, body: { error: { code: 'PG_TABLE', message: expect.stringMatching(/does not exist/) } } });
    const onFollower = await http(follower, 'PUT', '/tables/items', { token: cluster.adminToken, body: '{"mode":"async"}' });
    expect(onFollower).toMatchObject({ status: 409, body: { error: { code: 'NOT_LEADER', leader: leader.clientAddress } } });
    expect((await http(leader, 'GET', '/nonsense')).status).toBe(400);
    const huge = await http(leader, 'PUT', '/tables/items', { token: cluster.adminToken, body: `{"mode":"${'x'.repeat(100_000)}"}` });
    expect(huge).toMatchObject({ status: 400, body: { error: { message: expect.stringMatching(/request body over 65536 bytes/) } } });
    const spaced = await http(leader, 'PUT', '/tables/no%20such', { token: cluster.adminToken, body: '{"mode":"sync"}' });
    expect(spaced).toMatchObject({ status: 400, body: { error: { message: expect.stringMatching(/table no such: it does not exist/) } } });
    const badTarget = await http(leader, 'POST', '/transfer?to=99', { token: cluster.adminToken });
    expect(badTarget).toMatchObject({ status: 400, body: { error: { message: expect.stringMatching(/transfer needs \?to=<replica id 1..31>, got "99"/) } } });
    // Nothing changed: still the leader, items still sync.
    expect((await leader.status()).writable).toBe(true);
    expect((await http(follower, 'GET', '/tables')).body).toEqual(expect.arrayContaining([{ table: 'public.items', mode: 'sync' }]));
  });

  it('PUT /tables/:name sets a mode on every node; GET /tables lists it', async () => {
    for (const n of cluster.nodes) await rowsOn(n, 'CREATE TABLE audit (id bigint PRIMARY KEY, what text)');
    const leader = await cluster.leader();
    const answer = await http(leader, 'PUT', '/tables/audit', { token: cluster.adminToken, body: '{"mode":"sync"}' });
    expect(answer).toMatchObject({ status: 200, body: { table: 'public.audit', mode: 'sync' } });
    for (const n of cluster.nodes) {
      await eventually(async () => expect((await http(n, 'GET', '/tables')).body).toEqual(expect.arrayContaining([{ table: 'public.audit', mode: 'sync' }])), `node ${n.replica} lists audit`);
    }
    await db.execute([['INSERT INTO audit VALUES (1, $1)', ['replicated']]]);
    for (const n of cluster.nodes) await eventually(async () => expect(await rowsOn(n, 'SELECT what FROM audit')).toEqual([{ what: 'replicated' }]), `node ${n.replica} has the row`);
  });
});

describe('metrics', () => {
  it('count commits by mode and outcome, confirm latency, journal fsyncs, stale terms, linearizable reads, and show term, leader and lag', async () => {
    const leader = await cluster.leader();
    const before = (await http(leader, 'GET', '/metrics')).text;
    for (let i = 0; i < 5; i += 1) await db.execute([['INSERT INTO items VALUES ($1, $2)', [100 + i, 'metric']]]);
    for (let i = 0; i < 3; i += 1) await db.execute([['INSERT INTO clicks VALUES ($1)', [100 + i]]]);
    const stale = await db.execute([['INSERT INTO items VALUES (199, $1)', ['stale']]], { term: 0 }).catch((error: unknown) => error);
    // Term 0 is below any elected term: refused by the sidecar before anything runs.
    expect(stale).toBeInstanceOf(StaleTerm);
    for (let i = 0; i < 2; i += 1) await db.query('SELECT count(*) FROM items', [], { consistency: 'linearizable' });
    const after = (await http(leader, 'GET', '/metrics')).text;
    const delta = (name: string, labels: Record<string, string> = {}): number => sample(after, name, labels) - sample(before, name, labels);
    expect(delta('qsync_commits_total', { mode: 'sync', outcome: 'committed' })).toBe(5);
    expect(delta('qsync_commits_total', { mode: 'async', outcome: 'committed' })).toBe(3);
    expect(delta('qsync_confirm_latency_seconds_count')).toBe(5);
    expect(delta('qsync_journal_fsync_seconds_count')).toBeGreaterThanOrEqual(1);
    expect(delta('qsync_stale_term_rejections_total', { where: 'sidecar' })).toBe(1);
    expect(delta('qsync_linearizable_reads_total', { outcome: 'served' })).toBe(2);
    expect(delta('qsync_read_index_seconds_count')).toBe(2);
    const s = await leader.status();
    expect(sample(after, 'qsync_term')).toBe(s.term);
    expect(sample(after, 'qsync_leader')).toBe(1);
    expect(sample(after, 'qsync_postgres_up')).toBe(1);
    // The gauge is as of the last health probe (every second), which may have run while one of the
    // writes above was prepared: with every write decided, the next probe finds none.
    await eventually(async () => expect(sample((await http(leader, 'GET', '/metrics')).text, 'qsync_postgres_prepared_transactions')).toBe(0), 'no prepared transactions left');
    expect(sample(after, 'qsync_elections_total', { result: 'won' })).toBeGreaterThanOrEqual(1);
    for (const f of followersOf(leader)) expect(after).toMatch(new RegExp(`qsync_replication_lag_records\\{[^}]*peer="${f.replica}"`));
    expect(after).toMatch(/qsync_process_resident_memory_bytes/);
    // A follower is not the leader, and says so.
    expect(sample((await http(followersOf(leader)[0] as ClusterNode, 'GET', '/metrics')).text, 'qsync_leader')).toBe(0);
  });
});

describe('the CLI, as a newcomer uses it', () => {
  it('qsync status prints a table of the nodes; exit 0 when healthy, 1 when degraded, 3 when nothing answers', async () => {
    const leader = await cluster.leader();
    const healthy = await cli('status');
    expect(healthy.code).toBe(0);
    expect(healthy.stdout).toMatch(new RegExp(`Cluster: local \\(leader ${leader.replica}, term \\d+`));
    expect(healthy.stdout).toMatch(/\| Node \| Client +\| Role +\| State +\| Term \| Lag \(records\) \| Lag \(s\) \| Limbo \|/);
    for (const n of cluster.nodes) expect(healthy.stdout).toMatch(new RegExp(`\\| ${n.replica}\\*? +\\| ${n.clientAddress} +\\| ${n === leader ? 'leader' : 'follower'} +\\| running`));
    const json = await cli('status', '--json');
    expect(JSON.parse(json.stdout)).toMatchObject({ cluster: 'local', leader: leader.replica, members: expect.any(Array) });

    const follower = followersOf(leader)[1] as ClusterNode;
    await follower.stopSidecar();
    try {
      const degraded = await cli('status');
      expect(degraded.code).toBe(1);
      expect(degraded.stdout).toMatch(new RegExp(`\\| ${follower.replica} +\\| ${follower.clientAddress} +\\| - +\\| unreachable`));
    } finally {
      await follower.startSidecar();
    }
    await eventually(async () => expect((await cli('status')).code).toBe(0), 'healthy again');
    const nothing = await qsync('status', '--admin', '127.0.0.1:1');
    expect(nothing.code).toBe(3);
    expect(nothing.stderr).toMatch(/no node's admin interface answers/);
  });

  it('qsync table sync|list sets and shows modes through the leader, whichever node it asks', async () => {
    for (const n of cluster.nodes) await rowsOn(n, 'CREATE TABLE orders (id bigint PRIMARY KEY, total numeric)');
    const set = await cli('table', 'sync', 'orders');
    expect(set).toMatchObject({ code: 0, stdout: 'public.orders is now sync on every node\n' });
    const list = await cli('table', 'list');
    expect(list.code).toBe(0);
    expect(list.stdout).toMatch(/\| public\.orders +\| sync +\|/);
    expect(list.stdout).toMatch(/\| public\.clicks +\| async +\|/);
    const missing = await cli('table', 'sync', 'nosuch');
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/qsync cannot replicate table nosuch: it does not exist/);
    expect((await cli('table', 'sometimes', 'orders')).code).toBe(2);
  });

  it('qsync transfer, demote and promote find the leader themselves and move leadership', async () => {
    const leader = await cluster.leader();
    const to = followersOf(leader)[0] as ClusterNode;
    const transfer = await cli('transfer', String(to.replica));
    expect(transfer).toMatchObject({ code: 0, stdout: expect.stringMatching(new RegExp(`node ${to.replica} leads now, in term \\d+ \\(was node ${leader.replica}\\)`)) });
    expect((await cluster.leader()).replica).toBe(to.replica);

    const demote = await cli('demote');
    expect(demote).toMatchObject({ code: 0, stdout: expect.stringMatching(new RegExp(`node ${to.replica} stepped down`)) });
    const next = await cluster.leader(15_000, [to.replica]);
    expect(next.replica).not.toBe(to.replica);

    const promote = await cli('promote', String(leader.replica));
    expect(promote).toMatchObject({ code: 0, stdout: expect.stringMatching(new RegExp(`node ${leader.replica} leads in term \\d+`)) });
    expect((await cluster.leader()).replica).toBe(leader.replica);

    expect((await cli('transfer', '9'))).toMatchObject({ code: 1, stderr: expect.stringMatching(/node 9 is not in cluster local/) });
    expect((await cli('transfer'))).toMatchObject({ code: 2 });
    expect((await qsync('demote', '--admin', leader.adminAddress))).toMatchObject({ code: 1, stderr: expect.stringMatching(/needs the admin token/) });
    await db.execute([['INSERT INTO items VALUES (300, $1)', ['after the moves']]]);
  });

  it('every command has --help; unknown commands and subcommands are usage errors (exit 2)', async () => {
    for (const command of ['status', 'table', 'promote', 'demote', 'transfer', 'cluster', 'drill', 'bench', 'start']) {
      const help = await qsync(command, '--help');
      expect(help.code, command).toBe(0);
      expect(help.stdout, command).toMatch(/usage/);
    }
    expect((await qsync('nonsense')).code).toBe(2);
    expect((await qsync('cluster', 'sideways')).code).toBe(2);
    expect((await qsync('status', '--bogus')).code).toBe(2);
    expect((await qsync('help')).stdout).toMatch(/exit codes: 0 done; 1 refused or failed/);
  });
});

describe('Redis discovery and events', () => {
  it('the leader key names the leader and moves with leadership; a deposed leader cannot take it back; clients find the leader there', async () => {
    const r = redis.client();
    const leader = await cluster.leader();
    const term = (await leader.status()).term;
    await eventually(async () => expect(JSON.parse((await r.get(leaderKey('local'))) ?? '{}')).toMatchObject({ replica: leader.replica, term, client: leader.clientAddress }), 'the leader key');
    const to = followersOf(leader)[1] as ClusterNode;
    events.length = 0;
    await cli('transfer', String(to.replica));
    const newTerm = (await to.status()).term;
    expect(newTerm).toBeGreaterThan(term);
    await eventually(async () => expect(JSON.parse((await r.get(leaderKey('local'))) ?? '{}')).toMatchObject({ replica: to.replica, term: newTerm }), 'the key moved');
    // The old leader's claim, as its sidecar would make it had it not heard of the new term: refused.
    const refused = await claimLeader(r, 'local', { replica: leader.replica, term, client: leader.clientAddress, admin: leader.adminAddress, at: Date.now() });
    expect(refused).toMatchObject({ written: false, current: { replica: to.replica, term: newTerm } });
    await eventually(async () => {
      expect(events).toEqual(expect.arrayContaining([
        expect.objectContaining({ kind: 'stepped-down', replica: leader.replica }),
        expect.objectContaining({ kind: 'elected', replica: to.replica, term: newTerm }),
        expect.objectContaining({ kind: 'leader-changed', term: newTerm, leader: to.replica }),
      ]));
    }, 'the events');
    // An application that knows only Redis.
    const viaRedis = await connectViaRedis(redis.url, 'local', { ...cluster.credentials });
    try {
      expect(viaRedis.address).toBe(to.clientAddress);
      await viaRedis.execute([['INSERT INTO items VALUES (400, $1)', ['found through redis']]]);
    } finally {
      viaRedis.close();
    }
    for (const n of cluster.nodes) await eventually(async () => expect(await rowsOn(n, 'SELECT note FROM items WHERE id = 400')).toEqual([{ note: 'found through redis' }]), `node ${n.replica}`);
  });

  it('Redis down never stops a commit or an election', async () => {
    redis.pause();
    try {
      await db.execute([['INSERT INTO items VALUES (500, $1)', ['redis frozen']]]);
      const leader = await cluster.leader();
      const to = followersOf(leader)[0] as ClusterNode;
      expect((await cli('transfer', String(to.replica))).code).toBe(0);
      await db.execute([['INSERT INTO items VALUES (501, $1)', ['redis frozen, new leader']]]);
    } finally {
      redis.resume();
    }
    const leader = await cluster.leader();
    const r = redis.client();
    await eventually(async () => expect(JSON.parse((await r.get(leaderKey('local'))) ?? '{}')).toMatchObject({ replica: leader.replica }), 'the key catches up once Redis is back');
  });
});

describe('the client library\'s PostgreSQL connections', () => {
  it('a role holds at most --client-pool-connections of them; transactions past that wait for one, then run', async () => {
    const leader = await cluster.leader();
    const started: number[] = [];
    const pids = new Set<number>();
    const release: Array<() => void> = [];
    // Five interactive transactions at once: each holds its PostgreSQL session until it ends.
    const txs = Array.from({ length: 5 }, (_, i) => db.transaction(async (tx) => {
      const { rows } = await tx.query('SELECT pg_backend_pid() AS pid');
      pids.add(Number((rows[0] as { pid: number }).pid));
      started.push(i);
      await new Promise<void>((resolve) => release.push(resolve));
    }));
    await eventually(async () => expect(started.length).toBe(3), 'three transactions started');
    // The other two wait for a connection, however long: the pool holds three.
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(started.length).toBe(3);
    const held = await rowsOn(leader, "SELECT count(*)::int AS n FROM pg_stat_activity WHERE query = 'SELECT pg_backend_pid() AS pid' AND state = 'idle in transaction'");
    expect(held).toEqual([{ n: 3 }]);
    // Each that ends gives its connection to one that waits.
    while (started.length < 5 || release.length > 0) {
      release.shift()?.();
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    await Promise.all(txs);
    expect(started.length).toBe(5);
    expect(pids.size).toBeLessThanOrEqual(3);
  });

  it('a client\'s DEALLOCATE ALL costs its own write only: the connection whose kept statements it dropped is closed, and the writes after it run', async () => {
    // A write first, so that the connection the next one takes (the pool gives the last one back first) keeps capture parsed.
    await db.execute([['INSERT INTO items VALUES ($1, $2)', [9000, 'before']]]);
    // DEALLOCATE is not transactional: inside the write it drops the connection's kept statements, capture's among them.
    await expect(db.execute([['DEALLOCATE ALL', []], ['INSERT INTO items VALUES ($1, $2)', [9001, 'dropped']]])).rejects.toMatchObject({ code: 'PG_ERROR', sqlstate: '26000' });
    for (let i = 0; i < 5; i += 1) await db.execute([['INSERT INTO items VALUES ($1, $2)', [9002 + i, 'after']]]);
    // Through a read, it costs nothing: the read's connection is closed after it, and the write after it runs.
    await db.query('DEALLOCATE ALL', [], { consistency: 'leader' });
    await db.execute([['INSERT INTO items VALUES ($1, $2)', [9007, 'after a read']]]);
    const leader = await cluster.leader();
    expect(await rowsOn(leader, "SELECT count(*)::int AS n FROM items WHERE id BETWEEN 9000 AND 9007 AND note <> 'dropped'")).toEqual([{ n: 7 }]);
    expect(await rowsOn(leader, 'SELECT count(*)::int AS n FROM items WHERE id = 9001')).toEqual([{ n: 0 }]);
  });
});

describe('logs', () => {
  it('every line carries node, term and role; state changes are info lines with their reason', async () => {
    const leader = await cluster.leader();
    const text = await readFile(join(dirname(leader.dataDir), 'sidecar.log'), 'utf8');
    const lines = text.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.length).toBeGreaterThan(10);
    for (const line of lines) {
      expect(line.node).toBe(leader.replica);
      expect(typeof line.term).toBe('number');
      expect(typeof line.role).toBe('string');
    }
    const messages = lines.map((l) => String(l.msg));
    expect(messages.some((m) => /^peer \d connected$/.test(m))).toBe(true);
    expect(lines.some((l) => String(l.msg).startsWith('election: ') && typeof l.reason === 'string')).toBe(true);
    expect(messages).toContain('leader: a quorum holds the PROMOTE; accepting sync writes');
    expect(lines.some((l) => l.msg === 'no longer the leader: sync writes refused from now on' && typeof l.reason === 'string')).toBe(true);
    expect(lines.some((l) => String(l.msg).startsWith('PROMOTE of node'))).toBe(true);
    // What cluster up shows in a terminal.
    const pretty = prettyLines('info', false);
    const elected = lines.find((l) => l.msg === 'leader: a quorum holds the PROMOTE; accepting sync writes') as Record<string, unknown>;
    expect(pretty(JSON.stringify(elected))).toMatch(new RegExp(`INFO.*node ${leader.replica} term ${String(elected.term)} \\w+: leader: a quorum holds the PROMOTE`));
    expect(pretty(JSON.stringify({ ...elected, level: 20 }))).toBeNull();
  });
});

describe('a node started without an admin token', () => {
  it('refuses every mutating request (403, saying how to allow them) and still serves reads', async () => {
    const lone = await startLocalCluster({ nodes: 1, adminToken: null });
    try {
      const node = lone.nodes[0] as ClusterNode;
      for (const [method, path] of [['POST', '/promote'], ['POST', '/demote'], ['POST', '/transfer?to=2'], ['PUT', '/tables/t']] as const) {
        const answer = await http(node, method, path, { token: 'any-token-at-all-0123', ...(method === 'PUT' ? { body: '{"mode":"sync"}' } : {}) });
        expect(answer, path).toMatchObject({ status: 403, body: { error: { code: 'FORBIDDEN', message: expect.stringMatching(/started without --admin-token/) } } });
      }
      // Nothing changed: it still leads, and reads are served.
      expect(await node.status()).toMatchObject({ writable: true, role: 'leader' });
      expect((await http(node, 'GET', '/health/leader')).status).toBe(200);
    } finally {
      await lone.stop();
    }
  });
});
