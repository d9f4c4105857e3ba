// Journal retention and rejoin by snapshot on a real cluster (RFC 0009):
// small segments and no retention budget, so the nodes remove records as
// soon as a quorum holds them. Node 3 is stopped, its peers remove the
// records it lacks, and it comes back: first with rejoin manual (it says it
// needs a rejoin and waits), then after qsync rejoin it replaces its
// replicated tables with a peer's snapshot while a writer goes on, its local
// table untouched; a restart afterwards recovers from the new journal.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startLocalCluster, type ClusterNode, type LocalCluster } from '../../src/cli/cluster.js';
import { connect, type Db } from '../../src/client/index.js';
import type { SidecarStatus } from '../../src/sidecar/status.js';
import { eventually, rowsOn } from '../support/cluster.js';

let cluster: LocalCluster;
let db: Db;
let rejoinMode = 'auto';

beforeAll(async () => {
  cluster = await startLocalCluster({
    electionModes: { 2: 'voter', 3: 'voter' },
    // QSYNC_E2E_DIR keeps the cluster's data and sidecar logs there, for debugging a failure.
    ...(process.env.QSYNC_E2E_DIR === undefined ? {} : { dir: `${process.env.QSYNC_E2E_DIR}/rejoin` }),
    sidecarArgs: (replica) => ['--journal-segment-bytes', '65536', '--journal-retain-bytes', '0', ...(replica === 3 ? ['--rejoin', rejoinMode] : [])],
    tables: [
      { ddl: 'CREATE TABLE items (id bigint PRIMARY KEY, body text NOT NULL)', name: 'items', mode: 'sync' },
      { ddl: 'CREATE TABLE notes (id bigint PRIMARY KEY, body text NOT NULL)', name: 'notes', mode: 'async' },
    ],
  });
  db = await connect(cluster.clientAddresses, cluster.credentials);
}, 120_000);

afterAll(async () => {
  db?.close();
  await cluster?.stop();
});

const node = (replica: number): ClusterNode => cluster.nodes[replica - 1] as ClusterNode;
const md5 = async (replica: number, table: string): Promise<unknown> =>
  (await rowsOn(node(replica), `SELECT count(*)::int AS n, md5(coalesce(string_agg(t::text, ',' ORDER BY id), '')) AS h FROM ${table} t`))[0];

/** `count` writes of 20 rows each (about 8 KB), from id `first` on, alternating sync and async tables. */
async function write(first: number, count: number): Promise<void> {
  for (let k = 0; k < count; k += 1) {
    const table = k % 2 === 0 ? 'items' : 'notes';
    await db.execute([[`INSERT INTO ${table} SELECT g, repeat(md5(g::text), 12) FROM generate_series($1::bigint, $1::bigint + 19) g`, [first + k * 20]]]);
  }
}

async function identical(): Promise<void> {
  for (const table of ['items', 'notes']) {
    const [one, two, three] = await Promise.all([md5(1, table), md5(2, table), md5(3, table)]);
    expect(two, `${table} on node 2`).toEqual(one);
    expect(three, `${table} on node 3`).toEqual(one);
  }
}

describe('journal retention and rejoin by snapshot', () => {
  it('removes records a quorum holds, and a node that lacks them rejoins by snapshot under load', async () => {
    await write(1, 10);
    await eventually(identical, 'the first rows on every node');
    const local = await node(3).sql();
    await local.query(`CREATE TABLE scratch (id int PRIMARY KEY, note text); INSERT INTO scratch VALUES (1, 'node 3 only')`);
    await local.end();
    const before = await node(3).status();
    await node(3).stopSidecar();

    // 80 writes of about 8 KB: several 64 KB segments, removed once node 2 holds them.
    await write(10_000, 80);
    await eventually(async () => {
      for (const replica of [1, 2]) {
        const { journal } = await node(replica).status();
        expect(journal.start[1] ?? 0, `node ${replica}'s journal start`).toBeGreaterThan(before.vclock[1] ?? 0);
        // About 650 KB were written: what is left is the last segments.
        expect(journal.bytes, `node ${replica}'s journal size`).toBeLessThan(300_000);
      }
    }, 'nodes 1 and 2 removed the records node 3 lacks', 30_000);

    // Manual: node 3 says it needs a rejoin, and waits.
    rejoinMode = 'manual';
    await node(3).startSidecar();
    await eventually(async () => {
      expect((await node(3).status()).stuck ?? '').toMatch(/qsync rejoin/);
    }, 'node 3 reports it needs a rejoin');
    expect(await md5(3, 'items')).not.toEqual(await md5(1, 'items'));

    // qsync rejoin, with a writer going on.
    let writing = true;
    let next = 50_000;
    const writer = (async () => {
      while (writing) {
        await write(next, 2);
        next += 40;
      }
    })();
    await node(3).admin('POST', '/rejoin');
    await eventually(async () => {
      const status: SidecarStatus = await node(3).status();
      expect(status.stuck).toBeNull();
      expect(status.vclock[1] ?? 0).toBeGreaterThan(before.vclock[1] ?? 0);
    }, 'node 3 rejoined', 60_000);
    writing = false;
    await writer;
    await eventually(identical, 'every node holds the same rows after the rejoin', 30_000);
    expect(await rowsOn(node(3), 'SELECT id, note FROM scratch')).toEqual([{ id: 1, note: 'node 3 only' }]);
    expect(await rowsOn(node(3), 'SELECT count(*)::int AS n FROM pg_prepared_xacts')).toEqual([{ n: 0 }]);
    const log = await readFile(join(node(3).dataDir, '..', 'sidecar.log'), 'utf8');
    expect(log).toMatch(/rejoined by snapshot from node [12]/);

    // Replication goes on, and node 3 recovers from its new journal after a crash.
    await node(3).killSidecar();
    rejoinMode = 'auto';
    await write(90_000, 6);
    await node(3).startSidecar();
    await write(95_000, 4);
    await eventually(identical, 'every node holds the same rows after node 3 restarted', 30_000);
    expect((await node(3).status()).stuck).toBeNull();
  }, 240_000);

  it('loses nothing when PostgreSQL crashes while its node removes journal records: what is removed was flushed first', async () => {
    // Node 2 applies with synchronous_commit = off; a crash loses what PostgreSQL had not flushed, and replay
    // can only bring back what the journal still holds. Crash it three times while the writer fills segments.
    let writing = true;
    let next = 200_000;
    const writer = (async () => {
      while (writing) {
        await write(next, 4);
        next += 80;
      }
    })();
    for (let crash = 0; crash < 3; crash += 1) {
      const before = (await node(2).status()).journal.start;
      await eventually(async () => expect((await node(2).status()).journal.start[1] ?? 0).toBeGreaterThan(before[1] ?? 0), 'node 2 removed records since the last crash', 30_000);
      await node(2).pg.kill();
      await node(2).pg.start();
    }
    writing = false;
    await writer;
    await eventually(identical, 'every node holds the same rows after node 2\'s PostgreSQL crashed under retention', 60_000);
    expect((await node(2).status()).stuck).toBeNull();
  }, 240_000);
});
