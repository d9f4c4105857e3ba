// Initial-copy benchmark: on a local 3-node cluster, a table of narrow rows
// (bigint key, int, text of 8 characters) that exists only on node 1's
// PostgreSQL is marked sync; measures the leader's part (read under the
// triggers' lock, journaled: until `table sync` answers) and the whole copy
// (until both followers hold every row), as rows/s and MB/s of the table's
// heap. Target (issue 10): at least 100,000 rows/s. Then a fourth node joins
// (qsync join, RFC 0010) and loads every table by snapshot: until it holds
// every row.
import { performance } from 'node:perf_hooks';
import { startLocalCluster, type ClusterNode } from '../src/cli/cluster.js';
import { connect } from '../src/client/index.js';

export interface CopyBenchOptions {
  readonly rows: readonly number[];
}

export interface CopyBenchRow {
  readonly rows: number;
  readonly tableMb: number;
  readonly leaderMs: number;
  readonly everyNodeMs: number;
  readonly rowsPerSecond: number;
  readonly mbPerSecond: number;
}

async function count(node: ClusterNode, table: string): Promise<number> {
  const client = await node.sql();
  try {
    return (await client.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table}`)).rows[0]?.n ?? 0;
  } finally {
    await client.end();
  }
}

export interface JoinBenchRow {
  readonly rows: number;
  readonly joinMs: number;
  readonly rowsPerSecond: number;
}

export async function runCopyBench(options: CopyBenchOptions): Promise<{ copy: CopyBenchRow[]; join: JoinBenchRow }> {
  const cluster = await startLocalCluster({ electionModes: { 2: 'voter', 3: 'voter' } });
  const db = await connect(cluster.clientAddresses, cluster.credentials);
  const results: CopyBenchRow[] = [];
  console.log('initial copy: a local table with rows on the leader marked sync; until the command answers, and until both followers hold every row');
  console.log('rows        table MB   leader ms   every node ms   rows/s    MB/s');
  try {
    for (const [i, rows] of options.rows.entries()) {
      const table = `bench_copy_${i}`;
      let tableMb = 0;
      for (const node of cluster.nodes) {
        const client = await node.sql();
        await client.query(`CREATE TABLE ${table} (id bigint PRIMARY KEY, n int NOT NULL, tag text NOT NULL)`);
        if (node.replica === 1) {
          await client.query(`INSERT INTO ${table} SELECT g, g % 1000, md5(g::text)::char(8) FROM generate_series(1, $1) g`, [rows]);
          await client.query(`VACUUM ANALYZE ${table}`);
          tableMb = Number((await client.query<{ bytes: string }>(`SELECT pg_relation_size('${table}') AS bytes`)).rows[0]?.bytes ?? 0) / 1e6;
        }
        await client.end();
      }
      const started = performance.now();
      await db.setTableMode(table, 'sync');
      const leaderMs = performance.now() - started;
      const followers = cluster.nodes.filter((n) => n.replica !== 1);
      while ((await Promise.all(followers.map((n) => count(n, table)))).some((n) => n < rows)) await new Promise((r) => setTimeout(r, 50));
      const everyNodeMs = performance.now() - started;
      const row: CopyBenchRow = { rows, tableMb, leaderMs, everyNodeMs, rowsPerSecond: rows / (everyNodeMs / 1000), mbPerSecond: tableMb / (everyNodeMs / 1000) };
      results.push(row);
      console.log(`${String(rows).padEnd(11)} ${tableMb.toFixed(1).padStart(8)}   ${leaderMs.toFixed(0).padStart(9)}   ${everyNodeMs.toFixed(0).padStart(13)}   ${row.rowsPerSecond.toFixed(0).padStart(7)}   ${row.mbPerSecond.toFixed(1).padStart(5)}`);
    }
    console.log('target: at least 100,000 rows/s to every node');
    // A fourth node joins and takes every table by snapshot.
    const total = options.rows.reduce((a, b) => a + b, 0);
    const started = performance.now();
    const joined = await cluster.join();
    const tables = options.rows.map((_, i) => `bench_copy_${i}`);
    const held = async (): Promise<number> => (await Promise.all(tables.map((t) => count(joined, t).catch(() => 0)))).reduce((a, b) => a + b, 0);
    while ((await held()) < total) await new Promise((r) => setTimeout(r, 50));
    const joinMs = performance.now() - started;
    const join = { rows: total, joinMs, rowsPerSecond: total / (joinMs / 1000) };
    console.log(`a fourth node joins (qsync join) and holds all ${total} rows by snapshot in ${joinMs.toFixed(0)} ms: ${join.rowsPerSecond.toFixed(0)} rows/s`);
    return { copy: results, join };
  } finally {
    db.close();
    await cluster.stop();
  }
}
