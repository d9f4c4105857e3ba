// Cluster benchmark: one-row INSERT transactions through the client library on
// a local 3-node cluster (3 embedded PostgreSQL, 3 sidecar processes, quorum
// 2), into a sync table and into an async table, at 1, 16 and 64 concurrent
// clients (one connection each). Prints throughput and p50/p99 latency.
import { startLocalCluster } from '../src/cli/cluster.js';
import { connect, type Db } from '../src/client/index.js';
import { closedLoop } from './stats.js';

export interface ClusterBenchOptions {
  readonly seconds: number;
  readonly clients: readonly number[];
}

export interface ClusterBenchRow {
  readonly table: 'sync' | 'async';
  readonly clients: number;
  readonly txPerSec: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly errors: number;
}

export async function runClusterBench(options: ClusterBenchOptions): Promise<ClusterBenchRow[]> {
  const cluster = await startLocalCluster({
    tables: [
      { ddl: 'CREATE TABLE bench_sync (id bigint PRIMARY KEY, payload text)', name: 'bench_sync', mode: 'sync' },
      { ddl: 'CREATE TABLE bench_async (id bigint PRIMARY KEY, payload text)', name: 'bench_async', mode: 'async' },
    ],
  });
  const rows: ClusterBenchRow[] = [];
  let nextId = 0;
  try {
    console.log(`3-node cluster (quorum 2), one-row INSERT through the client library, ${options.seconds}s each`);
    console.log('table   clients       tx/s   p50 ms   p99 ms  errors');
    for (const clients of options.clients) {
      const dbs: Db[] = await Promise.all(Array.from({ length: clients }, () => connect(cluster.nodes[0]?.clientAddress ?? '', cluster.credentials)));
      for (const table of ['sync', 'async'] as const) {
        let errors = 0;
        const run = await closedLoop(clients, options.seconds, async (caller) => {
          try {
            await (dbs[caller] as Db).execute([[`INSERT INTO bench_${table} VALUES ($1, $2)`, [(nextId += 1), 'payload']]]);
          } catch {
            errors += 1; // counted and reported: a benchmark must not hide failures
          }
        });
        const row = { table, clients, txPerSec: (run.ops - errors) / run.seconds, p50Ms: run.latency.p50Ms(), p99Ms: run.latency.p99Ms(), errors };
        rows.push(row);
        console.log(`${table.padEnd(6)}  ${String(clients).padStart(7)}  ${row.txPerSec.toFixed(0).padStart(9)}  ${row.p50Ms.toFixed(2).padStart(7)}  ${row.p99Ms.toFixed(2).padStart(7)}  ${String(errors).padStart(6)}`);
      }
      for (const db of dbs) db.close();
    }
    return rows;
  } finally {
    await cluster.stop();
  }
}
