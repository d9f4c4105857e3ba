// Redis discovery against a real redis-server: the leader key's term fence,
// finding the leader, events, and that Redis going away never throws into
// the node (DESIGN.md §9: Redis is never in the commit path).
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { claimLeader, findLeader, leaderKey, nodeKey, RedisDiscovery, eventsChannel, type LeaderRecord, type PublishedStatus } from '../../src/discovery/redis.js';
import { createLogger } from '../../src/log.js';
import { startRedis, type TestRedis } from '../support/redis.js';

let redis: TestRedis;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis.stop();
});

const leader = (replica: number, term: number): LeaderRecord => ({ replica, term, client: `127.0.0.1:${7500 + replica}`, admin: null, at: Date.now() });

function captureLog(): { log: ReturnType<typeof createLogger>; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n')) if (line !== '') lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { log: createLogger({ node: 1 }, sink, 'debug'), lines };
}

const until = async (check: () => Promise<boolean> | boolean, what: string): Promise<void> => {
  const deadline = Date.now() + 10_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

describe('the leader key', () => {
  it('refuses a lower term, and the same term from another node; takes a higher term and a refresh by its holder', async () => {
    const r = redis.client();
    const cluster = 'fence';
    expect((await claimLeader(r, cluster, leader(1, 5))).written).toBe(true);
    // A deposed leader of term 4 cannot overwrite term 5.
    const stale = await claimLeader(r, cluster, leader(2, 4));
    expect(stale.written).toBe(false);
    expect(stale.current).toMatchObject({ replica: 1, term: 5 });
    // Nor can another node claim the same term (two leaders in one term never exist; a forged claim is refused).
    expect((await claimLeader(r, cluster, leader(3, 5))).written).toBe(false);
    // The holder refreshes its own claim.
    expect((await claimLeader(r, cluster, { ...leader(1, 5), client: '10.0.0.1:7501' })).written).toBe(true);
    // A newer term wins.
    expect((await claimLeader(r, cluster, leader(3, 6))).written).toBe(true);
    expect(JSON.parse((await r.get(leaderKey(cluster))) as string)).toMatchObject({ replica: 3, term: 6 });
    // ... and the old leader still cannot come back.
    expect((await claimLeader(r, cluster, leader(1, 5))).written).toBe(false);
    expect(JSON.parse((await r.get(leaderKey(cluster))) as string)).toMatchObject({ replica: 3, term: 6 });
  });

  it('is overwritten when it holds garbage, rather than blocking every claim', async () => {
    const r = redis.client();
    await r.set(leaderKey('garbage'), 'not json');
    expect((await claimLeader(r, 'garbage', leader(1, 1))).written).toBe(true);
  });
});

describe('finding the leader', () => {
  it('trusts the leader key only while its node says it leads; else the writable node of the highest term', async () => {
    const r = redis.client();
    const cluster = 'find';
    const status = (replica: number, term: number, writable: boolean): PublishedStatus => ({
      replica, term, role: writable ? 'leader' : 'follower', writable, leader: null, client: `127.0.0.1:${7500 + replica}`, admin: null, limbo: 0, postgres: true, at: Date.now(),
    });
    await claimLeader(r, cluster, leader(1, 3));
    await r.set(nodeKey(cluster, 1), JSON.stringify(status(1, 3, true)), 'PX', 10_000);
    await r.set(nodeKey(cluster, 2), JSON.stringify(status(2, 3, false)), 'PX', 10_000);
    expect(await findLeader(r, cluster)).toMatchObject({ replica: 1, term: 3 });
    // Node 2 won term 4, but its claim has not reached the key yet: its own status says so.
    await r.set(nodeKey(cluster, 1), JSON.stringify(status(1, 4, false)), 'PX', 10_000);
    await r.set(nodeKey(cluster, 2), JSON.stringify(status(2, 4, true)), 'PX', 10_000);
    expect(await findLeader(r, cluster)).toMatchObject({ replica: 2, term: 4, client: '127.0.0.1:7502' });
    // A cluster Redis knows nothing of.
    expect(await findLeader(r, 'nothing')).toBeNull();
  });
});

describe('a sidecar\'s discovery', () => {
  it('writes its status with a TTL, claims the key while it leads, publishes events, and only logs while Redis is down', async () => {
    const cluster = 'sidecar';
    const { log, lines } = captureLog();
    let writable = false;
    let term = 1;
    const discovery = new RedisDiscovery({
      url: redis.url, cluster, replica: 1, intervalMs: 100, log,
      status: () => ({ replica: 1, term, role: writable ? 'leader' : 'follower', writable, leader: writable ? 1 : null, client: '127.0.0.1:7501', admin: '127.0.0.1:7601', limbo: 0, postgres: true, at: Date.now() }),
    });
    const r = redis.client();
    const subscriber = redis.client();
    const events: Array<Record<string, unknown>> = [];
    await subscriber.subscribe(eventsChannel(cluster));
    subscriber.on('message', (_channel: string, text: string) => events.push(JSON.parse(text) as Record<string, unknown>));
    try {
      await until(async () => (await r.get(nodeKey(cluster, 1))) !== null, 'the status key');
      expect(await r.pttl(nodeKey(cluster, 1))).toBeGreaterThan(0);
      expect(await r.get(leaderKey(cluster))).toBeNull();
      writable = true;
      discovery.observe({ kind: 'elected', term: 1 as never, ms: 5 });
      await until(async () => (await r.get(leaderKey(cluster))) !== null, 'the leader key');
      expect(JSON.parse((await r.get(leaderKey(cluster))) as string)).toMatchObject({ replica: 1, term: 1, client: '127.0.0.1:7501' });
      await until(() => events.some((e) => e.kind === 'elected'), 'the elected event');
      discovery.observe({ kind: 'limboTimeout', term: 1 as never, fromLsn: 7 as never, transactions: 3 });
      await until(() => events.some((e) => e.kind === 'limbo-timeout'), 'the limbo-timeout event');
      expect(events.find((e) => e.kind === 'limbo-timeout')).toMatchObject({ replica: 1, term: 1, fromLsn: 7, transactions: 3 });

      // Another node takes term 2; this one, still believing it leads in term 1, keeps trying: refused, logged once.
      await claimLeader(r, cluster, leader(2, 2));
      await until(() => lines.some((l) => String(l.msg).includes('not overwritten')), 'the refusal in the log');
      expect(JSON.parse((await r.get(leaderKey(cluster))) as string)).toMatchObject({ replica: 2, term: 2 });

      // Redis frozen: observing and refreshing never throw or wait; the node goes on.
      redis.pause();
      // Synchronous: nothing for the driver to wait on.
      expect(discovery.observe({ kind: 'steppedDown', term: 2 as never, pending: 0, reason: 'test' })).toBeUndefined();
      await until(() => lines.some((l) => String(l.msg).startsWith('Redis:') && String(l.msg).includes('failed')), 'a logged Redis failure');
      redis.resume();
      writable = false;
      term = 2;
      await until(async () => JSON.parse((await r.get(nodeKey(cluster, 1))) ?? '{}').term === 2, 'the status key after Redis came back');
    } finally {
      redis.resume();
      await discovery.close();
    }
    // A clean stop takes the status key away.
    expect(await r.get(nodeKey(cluster, 1))).toBeNull();
  });
});
