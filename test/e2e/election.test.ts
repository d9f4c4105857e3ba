// Elections and the three term fences on a real cluster: 3 embedded
// PostgreSQL servers, 3 sidecar processes, a TCP proxy on every directed peer
// link (for partitions). Tries to break DESIGN.md §2.1-2.3:
// one leader per term; a killed, frozen or cut-off leader loses no
// acknowledged write and leaves nothing half-done; stale terms are refused by
// the client port, the journal links and PostgreSQL itself; a lone returning
// node does not disrupt the leader; a transfer fails no write.
import { execFile, spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { multiHostUrl, startLocalCluster, type ClusterNode, type LocalCluster } from '../../src/cli/cluster.js';

import { eventually, limboHeld, rowsOn } from '../support/cluster.js';
import { connect, NotLeader, OutcomeUnknown, RolledBack, StaleTerm, type Db } from '../../src/client/index.js';

const run = promisify(execFile);
const ELECTION_TIMEOUT_MS = 1_000;
let cluster: LocalCluster;
let db: Db;

beforeAll(async () => {
  cluster = await startLocalCluster({
    proxies: true,
    electionTimeoutMs: ELECTION_TIMEOUT_MS,
    synchroTimeoutMs: 3_000,
    ...(process.env.QSYNC_E2E_DIR === undefined ? {} : { dir: `${process.env.QSYNC_E2E_DIR}/election` }),
    tables: [{ ddl: 'CREATE TABLE accounts (id bigint PRIMARY KEY, owner text, balance numeric NOT NULL)', name: 'accounts', mode: 'sync' }],
  });
  db = await connect(cluster.clientAddresses, { ...cluster.credentials, leaderWaitMs: 30_000 });
}, 120_000);

afterAll(async () => {
  db?.close();
  await cluster?.stop();
});

const node = (replica: number): ClusterNode => cluster.nodes[replica - 1] as ClusterNode;
const others = (replica: number): ClusterNode[] => cluster.nodes.filter((n) => n.replica !== replica);

const rows = (replica: number, sql: string, params: unknown[] = []): Promise<unknown[]> => rowsOn(node(replica), sql, params);

const ids = async (replica: number, owner: string): Promise<number[]> =>
  (await rows(replica, 'SELECT id FROM accounts WHERE owner = $1 ORDER BY id', [owner])).map((r) => Number((r as { id: string }).id));

/** Every node holds the same rows of `owner`, and nothing is left prepared anywhere. */
async function converged(owner: string, replicas = [1, 2, 3]): Promise<number[]> {
  let agreed: number[] = [];
  await eventually(async () => {
    const all = await Promise.all(replicas.map((r) => ids(r, owner)));
    for (const r of replicas) expect(await limboHeld(cluster.nodes[r - 1] as ClusterNode), `node ${r} limbo`).toBe(0);
    for (const image of all) expect(image).toEqual(all[0]);
    agreed = all[0] as number[];
  }, `the nodes agree on ${owner}`);
  return agreed;
}

/** Writes ids first.. one at a time through `client`, sorting each by its answer. */
function stream(client: Db, first: number, owner: string): { acked: number[]; unknown: number[]; rolledBack: number[]; other: unknown[]; stop: () => Promise<void> } {
  const result = { acked: [] as number[], unknown: [] as number[], rolledBack: [] as number[], other: [] as unknown[] };
  let stopped = false;
  const done = (async () => {
    for (let id = first; !stopped; id += 1) {
      try {
        await client.execute([['INSERT INTO accounts VALUES ($1, $2, 0)', [id, owner]]], { idempotencyKey: `${owner}-${id}` });
        result.acked.push(id);
      } catch (error) {
        if (error instanceof OutcomeUnknown) result.unknown.push(id);
        else if (error instanceof RolledBack) result.rolledBack.push(id);
        else result.other.push(error);
      }
    }
  })();
  return { ...result, stop: async () => {
    stopped = true;
    await done;
  } };
}

describe('elections on a 3-node cluster', () => {
  it('(a) a fresh cluster elects exactly one leader, and every node knows it', async () => {
    const leader = await cluster.leader();
    const statuses = await Promise.all(cluster.nodes.map((n) => n.status()));
    expect(statuses.filter((s) => s.writable)).toHaveLength(1);
    await eventually(async () => {
      const now = await Promise.all(cluster.nodes.map((n) => n.status()));
      expect(new Set(now.map((s) => `${s.term}/${s.leader}`))).toEqual(new Set([`${now[0]?.term}/${leader.replica}`]));
    }, 'every node agrees on term and leader');
    await db.execute([['INSERT INTO accounts VALUES (1, $1, 10)', ['first']]]);
    expect(await converged('first')).toEqual([1]);
  });

  it('forwards a sync transaction sent to a follower when the client asks, and brings the answer back', async () => {
    const leader = await cluster.leader();
    const follower = others(leader.replica)[0] as ClusterNode;
    const viaFollower = await connect(follower.clientAddress, cluster.credentials);
    try {
      const [result] = await viaFollower.execute([['INSERT INTO accounts VALUES (50, $1, 1) RETURNING id', ['forwarded']]], { forward: true, idempotencyKey: 'fwd-50' });
      expect(result?.rows).toEqual([{ id: '50' }]);
      expect(viaFollower.address).toBe(follower.clientAddress); // it stayed on the follower
      await expect(viaFollower.execute([['INSERT INTO accounts VALUES (50, $1, 1)', ['again']]], { forward: true })).rejects.toMatchObject({
        name: 'PgError', sqlstate: '23505', message: expect.stringMatching(new RegExp(`duplicate key.*\\(forwarded by node ${follower.replica} to 127\\.0\\.0\\.1:\\d+\\)`)),
      });
      expect(await converged('forwarded')).toEqual([50]);
      expect(await viaFollower.outcome('fwd-50')).toMatchObject({ committed: true, replica: leader.replica });
    } finally {
      viaFollower.close();
    }
  });

  it('(g) a node partitioned alone does not disrupt the leader when it returns (pre-vote)', async () => {
    const leader = await cluster.leader();
    const lone = others(leader.replica)[0] as ClusterNode;
    const before = await leader.status();
    cluster.isolate(lone.replica);
    await new Promise((r) => setTimeout(r, 4 * ELECTION_TIMEOUT_MS));
    const alone = await lone.status();
    expect(alone.term).toBe(before.term); // it polled (pre-vote) and raised no term
    expect(alone.role).toBe('precandidate');
    cluster.heal();
    await eventually(async () => expect((await lone.status()).leader).toBe(leader.replica), 'it follows the leader again');
    const after = await leader.status();
    expect(after).toMatchObject({ term: before.term, writable: true });
  });

  it('(h) transfer (qsync transfer) moves leadership to the named node with no failed sync write', async () => {
    const leader = await cluster.leader();
    const target = others(leader.replica)[1] as ClusterNode;
    const writer = stream(db, 100, 'transfer');
    await new Promise((r) => setTimeout(r, 300));
    const { stdout } = await run(process.execPath, ['bin/qsync.js', 'transfer', String(target.replica), '--admin', leader.adminAddress, '--json'], { env: { ...process.env, QSYNC_ADMIN_TOKEN: cluster.adminToken } });
    expect(JSON.parse(stdout)).toMatchObject({ leader: target.replica });
    await new Promise((r) => setTimeout(r, 300));
    await writer.stop();
    expect({ unknown: writer.unknown, rolledBack: writer.rolledBack, other: writer.other }).toEqual({ unknown: [], rolledBack: [], other: [] });
    expect(writer.acked.length).toBeGreaterThan(5);
    expect((await cluster.leader()).replica).toBe(target.replica);
    expect(await converged('transfer')).toEqual(writer.acked);
  });

  it('(h2) a libpq multi-host URL with target_session_attrs=read-write finds the leader\'s SQL port before and after a transfer; no acknowledged write is lost', async () => {
    const leader = await cluster.leader();
    const url = multiHostUrl(cluster.nodes.map((n) => n.sqlUrl));
    const acked: number[] = [];
    const failed: string[] = [];
    let stopped = false;
    // A script as a user would write it: psql (libpq) connecting anew for each write, with the multi-host URL.
    const writer = (async () => {
      for (let id = 7000; !stopped; id += 1) {
        try {
          await run('psql', [url, '-X', '-v', 'ON_ERROR_STOP=1', '-c', `INSERT INTO accounts VALUES (${id}, 'libpq', 0)`], { timeout: 20_000 });
          acked.push(id);
        } catch (error) {
          failed.push((error as { stderr?: string }).stderr ?? String(error));
        }
      }
    })();
    await eventually(async () => expect(acked.length).toBeGreaterThan(3), 'writes through the multi-host URL');
    const target = others(leader.replica)[0] as ClusterNode;
    await run(process.execPath, ['bin/qsync.js', 'transfer', String(target.replica), '--admin', leader.adminAddress], { env: { ...process.env, QSYNC_ADMIN_TOKEN: cluster.adminToken } });
    const before = acked.length;
    await eventually(async () => expect(acked.length).toBeGreaterThan(before + 3), 'writes through the multi-host URL after the transfer');
    stopped = true;
    await writer;
    // Where it connects now is the new leader.
    const { stdout } = await run('psql', [url, '-X', '-At', '-c', 'SHOW port']);
    expect(Number(stdout.trim())).toBe(target.pg.port);
    // A write refused during the hand-over is one the client saw fail; none it saw succeed is missing. Unlike the
    // client library's one-shot writes, a session's transaction runs before the write path sees it, so the old
    // leader may take one into its limbo as it is deposed: rolled back, which is certain (visible nowhere) and safe to retry.
    const onAll = await converged('libpq');
    expect(onAll.filter((id) => acked.includes(id))).toEqual(acked);
    for (const text of failed) expect(text).toMatch(/read-only|not the leader|25006|40001|rolled back|could not|server closed|terminat/i);
  });

  it('(h3) a Python service (psycopg 3) with a multi-host URL keeps writing across a transfer; every acknowledged write is on every node', async () => {
    const leader = await cluster.leader();
    const url = multiHostUrl(cluster.nodes.map((n) => n.sqlUrl));
    const lines: string[] = [];
    const child = spawn('/usr/bin/python3', ['test/support/writer.py', url, '8000', '6'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    createInterface({ input: child.stdout }).on('line', (line) => lines.push(line));
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    const acked = (): number[] => lines.filter((l) => l.startsWith('ok ')).map((l) => Number(l.split(' ')[1]));
    await eventually(async () => expect(acked().length).toBeGreaterThan(3), `psycopg writes through the multi-host URL (${stderr})`);
    const target = others(leader.replica)[1] as ClusterNode;
    await run(process.execPath, ['bin/qsync.js', 'transfer', String(target.replica), '--admin', leader.adminAddress], { env: { ...process.env, QSYNC_ADMIN_TOKEN: cluster.adminToken } });
    const before = acked().length;
    await eventually(async () => expect(acked().length).toBeGreaterThan(before + 3), 'psycopg writes after the transfer');
    expect(await exited).toBe(0);
    expect(stderr).toBe('');
    const onAll = await converged('psycopg');
    expect(onAll.filter((id) => acked().includes(id))).toEqual(acked());
    // What failed during the hand-over failed as a client expects: read-only (the old leader), a stale term, a
    // certain rollback, or the connection; and the service went on.
    for (const line of lines.filter((l) => l.startsWith('err '))) expect(line).toMatch(/^err \d+ (25006|40001|40000|08\w{3}|None) /);
  });

  it('(h4) a Java service (pgJDBC) with targetServerType=primary, the leader listed last, finds it and keeps writing across a transfer; every acknowledged write is on every node', async () => {
    const leader = await cluster.leader();
    // The followers first: pgJDBC must pass them by, as it passes a hot standby.
    const listed = [...others(leader.replica), leader];
    const url = `jdbc:postgresql://${listed.map((n) => `127.0.0.1:${n.sqlPort}`).join(',')}/postgres?targetServerType=primary`;
    const lines: string[] = [];
    const child = spawn('java', ['-cp', '/usr/share/java/postgresql.jar', 'test/support/JdbcWriter.java', url, cluster.credentials.user, cluster.credentials.password, '9000', '9'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    createInterface({ input: child.stdout }).on('line', (line) => lines.push(line));
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    const acked = (): number[] => lines.filter((l) => l.startsWith('ok ')).map((l) => Number(l.split(' ')[1]));
    await eventually(async () => expect(acked().length).toBeGreaterThan(3), `pgJDBC writes through the multi-host URL (${stderr})`, 20_000);
    expect(lines[0]).toBe(`connected ${leader.pg.port}`);
    const target = others(leader.replica)[0] as ClusterNode;
    await run(process.execPath, ['bin/qsync.js', 'transfer', String(target.replica), '--admin', leader.adminAddress], { env: { ...process.env, QSYNC_ADMIN_TOKEN: cluster.adminToken } });
    const before = acked().length;
    await eventually(async () => expect(acked().length).toBeGreaterThan(before + 3), 'pgJDBC writes after the transfer', 20_000);
    expect(await exited).toBe(0);
    expect(stderr).toBe('');
    // After the transfer it found the new leader.
    expect(lines.filter((l) => l.startsWith('connected ')).at(-1)).toBe(`connected ${target.pg.port}`);
    const onAll = await converged('jdbc');
    expect(onAll.filter((id) => acked().includes(id))).toEqual(acked());
    for (const line of lines.filter((l) => l.startsWith('err '))) expect(line).toMatch(/^err \d+ (25006|40001|40000|08\w{3}|57P01|null) /);
  }, 60_000);

  it('(b) SIGKILL of the leader: a new leader takes sync writes, nothing acknowledged is lost, and the old node converges', async () => {
    const leader = await cluster.leader();
    const writer = stream(db, 1000, 'kill');
    await new Promise((r) => setTimeout(r, 400));
    await leader.killSidecar();
    const next = await cluster.leader(15_000, [leader.replica]);
    const ackedAtKill = writer.acked.length;
    await eventually(async () => expect(writer.acked.length).toBeGreaterThan(ackedAtKill + 5), 'writes go on through the new leader');
    await writer.stop();
    expect(writer.other).toEqual([]);
    expect(writer.rolledBack).toEqual([]);
    const survivors = others(leader.replica).map((n) => n.replica);
    for (const replica of survivors) {
      await eventually(async () => {
        const present = new Set(await ids(replica, 'kill'));
        expect(writer.acked.filter((id) => !present.has(id))).toEqual([]);
      }, `node ${replica} holds every acknowledged write`);
    }
    expect((await next.status()).term).toBeGreaterThan((await node(survivors[0] as number).status()).term - 1);
    await leader.startSidecar();
    const final = await converged('kill');
    for (const id of writer.acked) expect(final).toContain(id);
    // An unknown outcome is resolved one way on every node, and outcome() says which.
    for (const id of writer.unknown) expect((await db.outcome(`kill-${id}`)).committed).toBe(final.includes(id));
  });

  it('(c) SIGSTOP of the leader past the election timeout: it steps down on waking, and its in-flight writes end consistently', async () => {
    const leader = await cluster.leader();
    const direct = await connect(leader.clientAddress, { ...cluster.credentials, leaderWaitMs: 0 });
    const inFlight = [2000, 2001, 2002, 2003].map((id) => direct.execute([['INSERT INTO accounts VALUES ($1, $2, 0)', [id, 'frozen']]], { idempotencyKey: `frozen-${id}` })
      .then(() => 'committed' as const, (error: unknown) => error));
    leader.pause();
    try {
      // (The shared client may be connected to the frozen node, which would hold its request.)
      const next = await cluster.leader(15_000, [leader.replica]);
      const fresh = await connect(next.clientAddress, cluster.credentials);
      await fresh.execute([['INSERT INTO accounts VALUES (2010, $1, 0)', ['frozen']]]);
      fresh.close();
    } finally {
      leader.resume();
    }
    await eventually(async () => expect((await leader.status()).writable).toBe(false), 'the woken leader stepped down');
    const answers = await Promise.all(inFlight);
    direct.close();
    const final = await converged('frozen');
    expect(final).toContain(2010);
    answers.forEach((answer, i) => {
      const id = 2000 + i;
      // NotLeader: refused before anything was done (it reached the node as it stepped down).
      expect(answer === 'committed' || answer instanceof RolledBack || answer instanceof OutcomeUnknown || answer instanceof NotLeader, String(answer)).toBe(true);
      if (answer === 'committed') expect(final).toContain(id);
      if (answer instanceof RolledBack || answer instanceof NotLeader) expect(final).not.toContain(id);
    });
  });

  it('a client waiting on a frozen leader gives up once another node leads, not at its request timeout', async () => {
    const leader = await cluster.leader();
    // Connected to the leader, with a request timeout far beyond this test's own time limit.
    const client = await connect([leader.clientAddress, ...others(leader.replica).map((n) => n.clientAddress)], { ...cluster.credentials, requestTimeoutMs: 600_000, leaderCheckMs: 500 });
    try {
      await client.execute([['INSERT INTO accounts VALUES (2500, $1, 0)', ['watched']]]);
      expect(client.address).toBe(leader.clientAddress);
      leader.pause();
      let stuck: unknown;
      try {
        stuck = await client.execute([['INSERT INTO accounts VALUES (2501, $1, 0)', ['watched']]], { idempotencyKey: 'watched-2501' }).then(() => 'committed', (error: unknown) => error);
      } finally {
        leader.resume();
      }
      expect(stuck).toBeInstanceOf(OutcomeUnknown);
      expect((stuck as Error).message).toMatch(/node 127\.0\.0\.1:\d+ leads now/);
      // The next write goes to the new leader.
      await client.execute([['INSERT INTO accounts VALUES (2502, $1, 0)', ['watched']]]);
      expect(client.address).not.toBe(leader.clientAddress);
      const final = await converged('watched');
      expect(final).toEqual(expect.arrayContaining([2500, 2502]));
    } finally {
      client.close();
    }
  }, 45_000);

  it('(d) a leader cut off from both followers commits nothing, stops taking writes within the election timeout, and PROMOTE rolls its limbo back', async () => {
    const leader = await cluster.leader();
    const direct = await connect(leader.clientAddress, { ...cluster.credentials, leaderWaitMs: 0 });
    cluster.isolate(leader.replica);
    const cut = Date.now();
    const doomed = direct.execute([['INSERT INTO accounts VALUES (3000, $1, 0)', ['cut off']]], { idempotencyKey: 'cut-3000' }).then(() => 'committed', (error: unknown) => error);
    await eventually(async () => expect(await limboHeld(leader)).toBe(1), 'held on the cut-off leader');
    await eventually(async () => expect((await leader.status()).writable).toBe(false), 'it stops accepting writes', 3 * ELECTION_TIMEOUT_MS);
    const stoppedAfterMs = Date.now() - cut;
    const answer = await doomed;
    expect(answer).toBeInstanceOf(OutcomeUnknown); // it may have reached a peer as far as the leader knows
    await expect(direct.execute([['INSERT INTO accounts VALUES (3001, $1, 0)', ['cut off']]])).rejects.toBeInstanceOf(NotLeader);
    direct.close();
    const next = await cluster.leader(15_000, [leader.replica]);
    expect(next.replica).not.toBe(leader.replica);
    await db.execute([['INSERT INTO accounts VALUES (3002, $1, 0)', ['cut off']]]);
    for (const n of others(leader.replica)) expect(await rows(n.replica, 'SELECT id FROM accounts WHERE id = 3000')).toEqual([]);
    cluster.heal();
    expect(await converged('cut off')).toEqual([3002]);
    expect(await db.outcome('cut-3000')).toEqual({ committed: false });
    expect(stoppedAfterMs).toBeLessThan(3 * ELECTION_TIMEOUT_MS + 1_000); // generous: a 2-core CI machine
  });

  it('(e) a deposed leader\'s records from its old term are taken without effect: its stream goes on and it can lead again', async () => {
    const old = await cluster.leader();
    const [b, c] = others(old.replica) as [ClusterNode, ClusterNode];
    const splitBefore = (await Promise.all([b.status(), c.status()])).map((s) => s.splitBrainRecords);
    cluster.isolate(old.replica);
    // A write the cut-off leader journals in its old term, which no peer holds.
    const direct = await connect(old.clientAddress, { ...cluster.credentials, leaderWaitMs: 0 });
    const stranded = direct.execute([['INSERT INTO accounts VALUES (4000, $1, 0)', ['stranded']]]).then(() => 'ok', (error: unknown) => (error as Error).name);
    const next = await cluster.leader(15_000, [old.replica]);
    await db.execute([['INSERT INTO accounts VALUES (4001, $1, 0)', ['new term']]]);
    expect(await stranded).toMatch(/^(RolledBack|OutcomeUnknown)$/);
    direct.close();
    // The peers hear the old leader's stream before it hears theirs: its old-term limbo records reach them as stale.
    cluster.proxy(b.replica, old.replica).heal();
    cluster.proxy(c.replica, old.replica).heal();
    await eventually(async () => {
      const now = await Promise.all([b.status(), c.status()]);
      expect(now.some((s, k) => s.splitBrainRecords > (splitBefore[k] as number))).toBe(true);
    }, 'a peer took a stale record');
    const log = (await Promise.all([b, c].map((n) => readFile(join(n.dataDir, '..', 'sidecar.log'), 'utf8')))).join('');
    expect(log).toMatch(new RegExp(`"replica":${old.replica},"lsn":\\d+,"kind":"(txn|rollback)","recordTerm":\\d+,"limboTerm":\\d+,"owner":${next.replica},"msg":"split-brain: a limbo record from an older term taken without effect"`));
    cluster.heal();
    expect(await converged('stranded')).toEqual([]);
    expect(await converged('new term')).toEqual([4001]);
    // Before this rule the peers refused the stale record and closed the link for good: the old
    // leader's later records, its PROMOTE among them, never arrived, and it could not lead again.
    await eventually(async () => expect((await next.status()).peers.find((p) => p.replica === old.replica)?.connected).toBe(true), 'the link is up');
    await run(process.execPath, ['bin/qsync.js', 'transfer', String(old.replica), '--admin', next.adminAddress], { env: { ...process.env, QSYNC_ADMIN_TOKEN: cluster.adminToken } });
    expect((await cluster.leader()).replica).toBe(old.replica);
    await db.execute([['INSERT INTO accounts VALUES (4002, $1, 0)', ['led again']]]);
    expect(await converged('led again')).toEqual([4002]);
  });

  it('(f) a stale-term client request, and a direct SQL write on a deposed leader, fail with the clear error', async () => {
    const leader = await cluster.leader();
    await db.execute([['INSERT INTO accounts VALUES (4999, $1, 0)', ['on the leader']]]); // the client is on the leader now
    const { term } = await leader.status();
    const stale = await db.execute([['INSERT INTO accounts VALUES (5000, $1, 0)', ['stale']]], { term: 1 }).catch((error: unknown) => error);
    expect(stale).toBeInstanceOf(StaleTerm);
    expect(stale).toMatchObject({ term, leader: leader.clientAddress, message: `stale term 1 (current ${term})` });
    // The demoted leader's PostgreSQL: an application still pointed at it is refused at once.
    await run(process.execPath, ['bin/qsync.js', 'demote', '--admin', leader.adminAddress], { env: { ...process.env, QSYNC_ADMIN_TOKEN: cluster.adminToken } });
    const next = await cluster.leader(15_000, [leader.replica]);
    await eventually(async () => expect(await rows(leader.replica, 'SELECT role FROM qsync.node')).toEqual([{ role: 'follower' }]), 'qsync.node says follower');
    const client = await leader.sql();
    try {
      await client.query(`SET qsync.term = '${term}'`);
      await expect(client.query(`INSERT INTO accounts VALUES (5001, 'deposed', 0)`)).rejects.toMatchObject({
        code: 'QS001', message: expect.stringMatching(new RegExp(`qsync: node ${leader.replica} is not the leader; leader is node ${next.replica} at 127.0.0.1:\\d+`)),
      });
    } finally {
      await client.end();
    }
    // On the new leader, a session with the old term is refused too.
    const onNext = await next.sql();
    try {
      await onNext.query(`SET qsync.term = '${term}'`);
      await expect(onNext.query(`INSERT INTO accounts VALUES (5002, 'stale session', 0)`)).rejects.toMatchObject({ code: 'QS002', message: expect.stringMatching(/qsync: this write names a term that is not the current one/) });
    } finally {
      await onNext.end();
    }
    expect(await converged('deposed')).toEqual([]);
  });

  it('promote (qsync promote) makes a chosen up-to-date follower the leader; an unknown admin request is refused clearly', async () => {
    const leader = await cluster.leader();
    const chosen = others(leader.replica)[0] as ClusterNode;
    const { stdout } = await run(process.execPath, ['bin/qsync.js', 'promote', '--admin', chosen.adminAddress, '--json'], { env: { ...process.env, QSYNC_ADMIN_TOKEN: cluster.adminToken } });
    expect(JSON.parse(stdout)).toMatchObject({ replica: chosen.replica, role: 'leader', writable: true });
    expect((await cluster.leader()).replica).toBe(chosen.replica);
    await db.execute([['INSERT INTO accounts VALUES (6000, $1, 0)', ['promoted']]]);
    expect(await converged('promoted')).toEqual([6000]);
    const response = await fetch(`http://${chosen.adminAddress}/nonsense`, { method: 'POST' });
    expect(response.status).toBe(400);
    expect(await response.json()).toMatchObject({ error: { code: 'BAD_REQUEST', message: expect.stringMatching(/no such admin request: POST \/nonsense/) } });
    expect((await chosen.status()).writable).toBe(true);
  });
});
