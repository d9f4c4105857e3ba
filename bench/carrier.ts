// What PostgreSQL's own logical replication would cost as qsync's carrier
// (docs/rfc/0026-postgres-as-the-carrier.md): a question for whoever plans,
// answered before anything is built. Three ways, one-row INSERTs from the
// same load generator, alternating, on the same embedded binaries:
//
//   physical    PostgreSQL's own synchronous replication (bench/native.ts):
//               streaming standbys, ANY 1 (s1, s2), as the compare bench
//   logical     a publication and two subscriptions (two_phase = true,
//               synchronous_commit = on), the primary's synchronous_standby_names
//               ANY 1 (sub1, sub2): a plain commit waits for one subscriber
//   logical 2pc the same, each INSERT prepared and then committed, as a limbo
//               on PostgreSQL's own replication would be: PREPARE TRANSACTION
//               and COMMIT PREPARED each wait for one subscriber
//
// CPU per transaction: the primary's processes, the standbys' or subscribers'
// (walsenders and apply workers included), and this process's.
import pg from 'pg';
import { launchPostgres, type PgServer } from '../src/postgres/index.js';
import { startNativeCluster } from './native.js';
import { closedLoop, cpuSeconds, tree } from './stats.js';

export interface CarrierBenchOptions {
  readonly seconds: number;
  readonly clients: readonly number[];
  readonly rounds: number;
}

export interface CarrierRow {
  readonly carrier: 'physical' | 'logical' | 'logical 2pc';
  readonly clients: number;
  readonly round: number;
  readonly txPerSec: number;
  readonly p50Ms: number;
  readonly cpuUsPerTx: { readonly primary: number; readonly replicas: number; readonly loadGenerator: number };
}

const DDL = 'CREATE TABLE carrier_items (id bigint PRIMARY KEY, payload text)';
const LOGICAL = { wal_level: 'logical', max_wal_senders: 10, max_replication_slots: 10, max_prepared_transactions: 200, max_connections: 200 } as const;

async function sql(server: PgServer, text: string): Promise<pg.QueryResult> {
  const client = new pg.Client({ connectionString: server.connectionString });
  await client.connect();
  try {
    return await client.query(text);
  } finally {
    await client.end();
  }
}

/** A primary publishing carrier_items, and two subscribers it waits for as ANY 1. */
async function startLogical(): Promise<{ primary: PgServer; subscribers: PgServer[]; stop: () => Promise<void> }> {
  const primary = await launchPostgres({ settings: { ...LOGICAL, synchronous_standby_names: 'ANY 1 (sub1, sub2)', synchronous_commit: 'on' } });
  const subscribers: PgServer[] = [];
  const stop = async (): Promise<void> => {
    for (const server of [...subscribers, primary]) await server.destroy().catch(() => undefined);
  };
  try {
    // No subscriber yet: a commit waiting for one would wait for ever.
    await sql(primary, `SET synchronous_commit = local; ${DDL}; CREATE PUBLICATION carrier FOR TABLE carrier_items`);
    for (const name of ['sub1', 'sub2']) {
      const subscriber = await launchPostgres({ settings: LOGICAL });
      subscribers.push(subscriber);
      await sql(subscriber, DDL);
      await sql(subscriber, `CREATE SUBSCRIPTION ${name} CONNECTION 'host=127.0.0.1 port=${primary.port} user=${primary.user} password=${primary.password} dbname=postgres'
        PUBLICATION carrier WITH (two_phase = true, copy_data = false, synchronous_commit = 'on')`);
    }
    const deadline = Date.now() + 60_000;
    for (;;) {
      const { rows } = await sql(primary, 'SELECT state, sync_state FROM pg_stat_replication');
      if (rows.filter((r) => r.state === 'streaming' && r.sync_state === 'quorum').length === 2) break;
      if (Date.now() > deadline) throw new Error(`the subscribers do not stream within 60 s: ${JSON.stringify(rows)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    return { primary, subscribers, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

async function cpuOf(servers: readonly PgServer[]): Promise<number> {
  let total = 0;
  for (const server of servers) {
    const pid = await server.pid();
    if (pid === null) continue;
    for (const p of tree(pid)) {
      try {
        total += cpuSeconds(p);
      } catch {
        // the process ended between the listing and the read
      }
    }
  }
  return total;
}

export async function runCarrierBench(options: CarrierBenchOptions): Promise<CarrierRow[]> {
  const logical = await startLogical();
  const native = await startNativeCluster([DDL]);
  const rows: CarrierRow[] = [];
  let id = 0;
  const insert = async (c: pg.Client): Promise<void> => {
    await c.query('INSERT INTO carrier_items VALUES ($1, $2)', [(id += 1), 'payload']);
  };
  const prepared = async (c: pg.Client): Promise<void> => {
    const mine = (id += 1);
    await c.query('BEGIN');
    await c.query('INSERT INTO carrier_items VALUES ($1, $2)', [mine, 'payload']);
    await c.query(`PREPARE TRANSACTION 'carrier-${mine}'`);
    await c.query(`COMMIT PREPARED 'carrier-${mine}'`);
  };
  const cases = [
    { carrier: 'physical', primary: native.primary, replicas: native.standbys, op: insert },
    { carrier: 'logical', primary: logical.primary, replicas: logical.subscribers, op: insert },
    { carrier: 'logical 2pc', primary: logical.primary, replicas: logical.subscribers, op: prepared },
  ] as const;
  console.log(`carriers: one-row INSERTs, ${options.seconds} s each, alternating; CPU per transaction in us`);
  console.log('carrier        clients    tx/s   p50 ms   primary   replicas   load gen');
  try {
    for (const clients of options.clients) {
      for (let round = 1; round <= options.rounds; round += 1) {
        for (const c of cases) {
          const sessions = await Promise.all(Array.from({ length: clients }, async () => {
            const client = new pg.Client({ connectionString: c.primary.connectionString });
            await client.connect();
            return client;
          }));
          try {
            await closedLoop(clients, 1, (k) => c.op(sessions[k] as pg.Client)); // warm-up
            const before = { primary: await cpuOf([c.primary]), replicas: await cpuOf(c.replicas), me: process.cpuUsage() };
            const run = await closedLoop(clients, options.seconds, (k) => c.op(sessions[k] as pg.Client));
            const me = process.cpuUsage(before.me);
            const per = (seconds: number): number => (seconds * 1e6) / Math.max(1, run.ops);
            const row: CarrierRow = {
              carrier: c.carrier, clients, round, txPerSec: run.ops / run.seconds, p50Ms: run.latency.p50Ms(),
              cpuUsPerTx: { primary: per((await cpuOf([c.primary])) - before.primary), replicas: per((await cpuOf(c.replicas)) - before.replicas), loadGenerator: per((me.user + me.system) / 1e6) },
            };
            rows.push(row);
            console.log(`${c.carrier.padEnd(13)}  ${String(clients).padStart(7)}  ${row.txPerSec.toFixed(0).padStart(6)}  ${row.p50Ms.toFixed(2).padStart(7)}  ${row.cpuUsPerTx.primary.toFixed(0).padStart(8)}  ${row.cpuUsPerTx.replicas.toFixed(0).padStart(9)}  ${row.cpuUsPerTx.loadGenerator.toFixed(0).padStart(9)}`);
          } finally {
            await Promise.all(sessions.map((s) => s.end()));
          }
        }
      }
    }
    // Every subscriber holds what the primary committed: the runs replicated, not just ran.
    const [{ n: published }] = (await sql(logical.primary, 'SELECT count(*)::int AS n FROM carrier_items')).rows as [{ n: number }];
    for (const subscriber of logical.subscribers) {
      const deadline = Date.now() + 30_000;
      for (;;) {
        const [{ n }] = (await sql(subscriber, 'SELECT count(*)::int AS n FROM carrier_items')).rows as [{ n: number }];
        if (n === published) break;
        if (Date.now() > deadline) throw new Error(`a subscriber holds ${n} rows of the primary's ${published}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    console.log(`both subscribers hold the primary's ${published} rows`);
  } finally {
    await native.stop();
    await logical.stop();
  }
  return rows;
}
