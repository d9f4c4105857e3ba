// The reference the compare benchmark measures qsync against must really be
// PostgreSQL's quorum synchronous replication: a sync commit waits for a
// standby, an async (local) one does not. And the chart draws what it is given.
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chart, type CompareResult } from '../../bench/compare.js';
import { startNativeCluster, type NativeCluster } from '../../bench/native.js';

let native: NativeCluster;
beforeAll(async () => {
  native = await startNativeCluster(['CREATE TABLE bench (id bigint PRIMARY KEY, payload text)']);
}, 120_000);
afterAll(async () => {
  await native?.stop();
});

describe('the native reference cluster', () => {
  it('streams to both standbys as a quorum, and a sync commit waits for one of them', async () => {
    const client = new pg.Client({ connectionString: native.primary.connectionString });
    client.on('error', () => undefined);
    await client.connect();
    try {
      const { rows } = await client.query<{ name: string; sync: string }>('SELECT application_name AS name, sync_state AS sync FROM pg_stat_replication ORDER BY 1');
      expect(rows).toEqual([{ name: 's1', sync: 'quorum' }, { name: 's2', sync: 'quorum' }]);
      await client.query("INSERT INTO bench VALUES (1, 'replicated')");
      for (const standby of native.standbys) {
        const s = new pg.Client({ connectionString: standby.connectionString });
        await s.connect();
        try {
          // A standby replays asynchronously after the flush a sync commit waits for: poll.
          for (let i = 0; i < 200 && (await s.query('SELECT count(*)::int AS n FROM bench')).rows[0].n !== 1; i += 1) await new Promise((r) => setTimeout(r, 25));
          expect((await s.query('SELECT payload FROM bench')).rows).toEqual([{ payload: 'replicated' }]);
        } finally {
          await s.end();
        }
      }
      // Both standbys down: a sync commit cannot complete; a local one does.
      for (const standby of native.standbys) await standby.stop('fast');
      const waiting = client.query("INSERT INTO bench VALUES (2, 'waits')").then(() => 'committed');
      const raced = await Promise.race([waiting, new Promise((r) => setTimeout(() => r('still waiting'), 2_000))]);
      expect(raced).toBe('still waiting');
      const local = new pg.Client({ connectionString: native.primary.connectionString });
      await local.connect();
      await local.query('SET synchronous_commit = local');
      await local.query("INSERT INTO bench VALUES (3, 'local')");
      await local.end();
      // One standby back is a quorum of ANY 1: the waiting commit completes.
      await (native.standbys[0] as (typeof native.standbys)[number]).start();
      expect(await waiting).toBe('committed');
    } finally {
      await client.end();
    }
  }, 120_000);
});

describe('the chart', () => {
  it('draws throughput and p99 for the four systems in both modes', () => {
    const point = (tx: number, p99: number): { txPerSec: number; p50Ms: number; p99Ms: number } => ({ txPerSec: tx, p50Ms: p99 / 2, p99Ms: p99 });
    const cases = ([1, 16, 64] as const).flatMap((clients) => (['sync', 'async'] as const).map((mode) => ({
      mode, clients, native: point(1000 * clients, 2), qsync: point(100 * clients, 20), sql: point(120 * clients, 18), prepared: point(150 * clients, 15), ratio: point(0.1, 10), sqlRatio: point(0.12, 9), preparedRatio: point(0.15, 8), ratios: [],
    })));
    const svg = chart({ options: { seconds: 1, pairs: 1, clients: [1, 16, 64], warmupSeconds: 1 }, machine: { cpus: 2, node: 'v20' }, runs: [], cases, sidecarPeakRssMb: {}, targets: [] } as CompareResult);
    expect(svg.startsWith('<svg')).toBe(true);
    // Two panels, eight series each, three points per series.
    expect(svg.match(/<polyline/g)).toHaveLength(16);
    expect(svg.match(/<circle/g)).toHaveLength(48);
    for (const label of ['native sync', 'qsync sync', 'sql sync', 'prepared sync', 'native async', 'qsync async', 'sql async', 'prepared async', 'Throughput', 'p99 latency']) expect(svg).toContain(label);
  });
});
