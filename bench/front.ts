// What the SQL port costs over PostgreSQL itself (`npm run bench -- front`):
// one-row reads by primary key on the leader, straight to its PostgreSQL and
// through its SQL port, with the same load generator (pg, a named prepared
// SELECT per call, one connection per client), runs alternating direct and
// port. The port's own CPU per read is the leader sidecar's CPU during the
// run, less what it spends idle (measured just before), per read: on a read,
// everything the sidecar does is the relay. The port's reads run a second
// time with qsync.read = 'linearizable', for what the leader's read index
// adds (a round of heartbeats per batch of reads). Beside them, the
// reference the port is held to: a minimal relay, a Node process of its own
// that pipes bytes both ways to the leader's PostgreSQL over TCP and reads
// nothing, with its CPU per read. Then the same for sync writes
// through the SQL port against the client library, for the front's share
// of a commit. Last, where Debian's pgbench is at hand, the same reads and
// sync writes from pgbench (libpq, prepared statements): a load generator in
// C, which leaves more of the two cores to the systems measured.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { startLocalCluster, type ClusterNode, type LocalCluster } from '../src/cli/cluster.js';
import { connect, type Db } from '../src/client/index.js';
import { closedLoop, cpuSeconds, tree } from './stats.js';

export interface FrontBenchOptions {
  readonly seconds: number;
  readonly rounds: number;
  readonly clients: readonly number[];
}

export interface FrontRun {
  readonly kind: 'read' | 'write';
  readonly path: 'direct' | 'relay' | 'port' | 'linearizable' | 'client library';
  readonly clients: number;
  readonly round: number;
  readonly perSec: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly errors: number;
  /** Leader sidecar CPU per operation, idle rate taken off, µs (path relay: the minimal relay's CPU). */
  readonly sidecarUsPerOp: number;
  /** Leader PostgreSQL CPU per operation, µs. */
  readonly postgresUsPerOp: number;
}

const ROWS = 10_000;

/** The minimal relay: every connection piped both ways to PostgreSQL's TCP port; prints its own port. */
const MINIMAL_RELAY = `const net = require('node:net');
const server = net.createServer((c) => {
  const b = net.connect(Number(process.env.RELAY_TO), '127.0.0.1');
  c.setNoDelay(true); b.setNoDelay(true);
  c.pipe(b); b.pipe(c);
  c.on('error', () => b.destroy()); b.on('error', () => c.destroy());
  c.on('close', () => b.destroy()); b.on('close', () => c.destroy());
});
server.listen(0, '127.0.0.1', () => console.log(server.address().port));`;

async function minimalRelay(pgPort: number): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(process.execPath, ['-e', MINIMAL_RELAY], { env: { ...process.env, RELAY_TO: String(pgPort) }, stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).once('line', (line) => resolve(Number(line)));
    child.once('exit', (code) => reject(new Error(`the minimal relay exited (${code})`)));
  });
  return { child, port };
}

const treeCpu = (pid: number | null | undefined): number => (pid === null || pid === undefined ? 0 : tree(pid).reduce((sum, p) => sum + cpuSeconds(p), 0));

async function sidecarIdleRate(leader: ClusterNode): Promise<number> {
  const before = treeCpu(leader.process?.pid);
  await new Promise((r) => setTimeout(r, 2_000));
  return (treeCpu(leader.process?.pid) - before) / 2;
}

export async function runFrontBench(options: FrontBenchOptions): Promise<{ runs: FrontRun[]; summary: Record<string, unknown> }> {
  let cluster: LocalCluster | null = null;
  let relay: { child: ChildProcess; port: number } | null = null;
  try {
    cluster = await startLocalCluster({ tables: [{ ddl: 'CREATE TABLE bench_sync (id bigint PRIMARY KEY, payload text)', name: 'bench_sync', mode: 'sync' }] });
    const leader = await cluster.leader();
    const credentials = cluster.credentials;
    const seed = await connect(leader.clientAddress, credentials);
    for (let from = 1; from <= ROWS; from += 1000) {
      await seed.execute([[`INSERT INTO bench_sync SELECT g, 'payload' FROM generate_series($1::bigint, $2::bigint) g`, [from, from + 999]]]);
    }
    seed.close();
    let nextId = ROWS;
    const runs: FrontRun[] = [];
    relay = await minimalRelay(leader.pg.port);
    const relayPid = relay.child.pid ?? null;
    const pgClients = async (port: number, n: number, options?: string): Promise<pg.Client[]> => Promise.all(Array.from({ length: n }, async () => {
      const c = new pg.Client({ host: '127.0.0.1', port, ...credentials, database: 'postgres', ...(options === undefined ? {} : { options }) });
      await c.connect();
      return c;
    }));
    const measure = async (kind: FrontRun['kind'], path: FrontRun['path'], clients: number, round: number): Promise<FrontRun> => {
      const idle = path === 'relay' ? 0 : await sidecarIdleRate(leader);
      // Whose CPU is the relay's: the leader sidecar, or the minimal relay.
      const relayCpu = (): number => (path === 'relay' ? treeCpu(relayPid) : treeCpu(leader.process?.pid));
      let op: (caller: number) => Promise<void>;
      let close: () => Promise<void>;
      if (path === 'client library') {
        const dbs: Db[] = await Promise.all(Array.from({ length: clients }, () => connect(leader.clientAddress, credentials)));
        op = async (caller) => {
          await (dbs[caller] as Db).execute([['INSERT INTO bench_sync VALUES ($1, $2)', [(nextId += 1), 'payload']]]);
        };
        close = async () => dbs.forEach((d) => d.close());
      } else {
        const port = path === 'direct' ? leader.pg.port : path === 'relay' ? (relay as { port: number }).port : leader.sqlPort;
        const conns = await pgClients(port, clients, path === 'linearizable' ? '-c qsync.read=linearizable' : undefined);
        op = kind === 'read'
          ? async (caller) => {
            await (conns[caller] as pg.Client).query({ name: 'read', text: 'SELECT payload FROM bench_sync WHERE id = $1', values: [1 + Math.floor(Math.random() * ROWS)] });
          }
          : async (caller) => {
            await (conns[caller] as pg.Client).query({ name: 'write', text: 'INSERT INTO bench_sync VALUES ($1, $2)', values: [(nextId += 1), 'payload'] });
          };
        close = async () => {
          await Promise.all(conns.map((c) => c.end()));
        };
      }
      const sidecarBefore = relayCpu();
      const postgresBefore = treeCpu(await leader.pg.pid());
      let errors = 0;
      const result = await closedLoop(clients, options.seconds, async (caller) => {
        try {
          await op(caller);
        } catch {
          errors += 1;
        }
      });
      const sidecarSeconds = relayCpu() - sidecarBefore - idle * result.seconds;
      const postgresSeconds = treeCpu(await leader.pg.pid()) - postgresBefore;
      await close();
      const done = Math.max(1, result.ops - errors);
      return {
        kind, path, clients, round, perSec: done / result.seconds, p50Ms: result.latency.p50Ms(), p99Ms: result.latency.p99Ms(), errors,
        sidecarUsPerOp: (Math.max(0, sidecarSeconds) * 1e6) / done, postgresUsPerOp: (postgresSeconds * 1e6) / done,
      };
    };
    console.log('kind   path            clients  round    ops/s   p50 ms   p99 ms  errors   relay CPU µs/op  leader PostgreSQL µs/op');
    const plan: Array<[FrontRun['kind'], ReadonlyArray<FrontRun['path']>]> = [['read', ['direct', 'relay', 'port', 'linearizable']], ['write', ['client library', 'port']]];
    for (const [kind, paths] of plan) {
      for (const clients of options.clients) {
        for (let round = 1; round <= options.rounds; round += 1) {
          for (const path of paths) {
            const r = await measure(kind, path, clients, round);
            runs.push(r);
            console.log(`${kind.padEnd(5)}  ${path.padEnd(14)}  ${String(clients).padStart(7)}  ${String(round).padStart(5)}  ${r.perSec.toFixed(0).padStart(7)}  ${r.p50Ms.toFixed(2).padStart(7)}  ${r.p99Ms.toFixed(2).padStart(7)}  ${String(r.errors).padStart(6)}  ${r.sidecarUsPerOp.toFixed(1).padStart(20)}  ${r.postgresUsPerOp.toFixed(1).padStart(23)}`);
          }
        }
      }
    }
    const median = (xs: number[]): number => {
      const s = [...xs].sort((a, b) => a - b);
      return s.length % 2 === 1 ? s[(s.length - 1) / 2] as number : ((s[s.length / 2 - 1] as number) + (s[s.length / 2] as number)) / 2;
    };
    const summary: Record<string, unknown> = {};
    console.log('\nmedians over the rounds');
    for (const clients of options.clients) {
      const of = (kind: FrontRun['kind'], path: FrontRun['path']): FrontRun[] => runs.filter((r) => r.kind === kind && r.clients === clients && r.path === path).sort((a, b) => a.round - b.round);
      const direct = of('read', 'direct');
      const port = of('read', 'port');
      const readRatio = median(port.map((p, i) => p.perSec / (direct[i] as FrontRun).perSec));
      const minimal = of('read', 'relay');
      const minimalRatio = median(minimal.map((p, i) => p.perSec / (direct[i] as FrontRun).perSec));
      const linearizable = of('read', 'linearizable');
      const linearizableRatio = median(linearizable.map((p, i) => p.perSec / (port[i] as FrontRun).perSec));
      const library = of('write', 'client library');
      const portWrites = of('write', 'port');
      const writeRatio = median(portWrites.map((p, i) => p.perSec / (library[i] as FrontRun).perSec));
      // Against the minimal relay in the same rounds: what a relay in Node can reach on this machine.
      const portOverRelay = median(port.map((p, i) => p.perSec / (minimal[i] as FrontRun).perSec));
      const cpuOverRelay = median(port.map((p, i) => p.sidecarUsPerOp / Math.max(1e-9, (minimal[i] as FrontRun).sidecarUsPerOp)));
      summary[`${clients} clients`] = {
        readsPortOverDirect: readRatio, portUsPerRead: median(port.map((r) => r.sidecarUsPerOp)),
        readsPortOverMinimalRelay: portOverRelay, portCpuOverMinimalRelay: cpuOverRelay,
        readsMinimalRelayOverDirect: minimalRatio, minimalRelayUsPerRead: median(minimal.map((r) => r.sidecarUsPerOp)),
        linearizableOverLocalReads: linearizableRatio, linearizableP50Ms: median(linearizable.map((r) => r.p50Ms)), sidecarUsPerLinearizableRead: median(linearizable.map((r) => r.sidecarUsPerOp)),
        syncWritesPortOverClientLibrary: writeRatio, sidecarUsPerWrite: { port: median(portWrites.map((r) => r.sidecarUsPerOp)), clientLibrary: median(library.map((r) => r.sidecarUsPerOp)) },
      };
      console.log(`${String(clients).padStart(3)} clients: reads through the port ${readRatio.toFixed(2)}x direct (target >= 0.8 at 16), the port's CPU ${median(port.map((r) => r.sidecarUsPerOp)).toFixed(1)} µs per read (target <= 25 per transaction); `
        + `through the minimal relay ${minimalRatio.toFixed(2)}x direct, its CPU ${median(minimal.map((r) => r.sidecarUsPerOp)).toFixed(1)} µs per read `
        + `(the port: ${portOverRelay.toFixed(2)}x the relay's reads, ${cpuOverRelay.toFixed(2)}x its CPU); `
        + `linearizable reads ${linearizableRatio.toFixed(2)}x local ones through the port (p50 ${median(linearizable.map((r) => r.p50Ms)).toFixed(2)} ms, leader sidecar ${median(linearizable.map((r) => r.sidecarUsPerOp)).toFixed(1)} µs per read); `
        + `sync writes through the port ${writeRatio.toFixed(2)}x the client library (target >= 1.0), leader sidecar ${median(portWrites.map((r) => r.sidecarUsPerOp)).toFixed(0)} vs ${median(library.map((r) => r.sidecarUsPerOp)).toFixed(0)} µs per commit`);
    }
    summary.pgbench = await pgbenchRuns(leader, credentials, options);
    return { runs, summary };
  } finally {
    relay?.child.kill();
    await cluster?.stop();
  }
}

/** pgbench against the leader's PostgreSQL and its SQL port: transactions per second, by case; null without pgbench. */
async function pgbenchRuns(leader: ClusterNode, credentials: { user: string; password: string }, options: FrontBenchOptions): Promise<Record<string, number> | null> {
  const run = promisify(execFile);
  if (await run('pgbench', ['--version']).then(() => false, () => true)) {
    console.log('\npgbench is not installed (Debian postgresql-client): its cases are left out');
    return null;
  }
  const dir = await mkdtemp(join(tmpdir(), 'qsync-pgbench-'));
  await writeFile(join(dir, 'read.sql'), `\\set id random(1, ${ROWS})\nSELECT payload FROM bench_sync WHERE id = :id;\n`);
  await writeFile(join(dir, 'write.sql'), "\\set id random(100000000, 2000000000)\nINSERT INTO bench_sync VALUES (:id, 'payload') ON CONFLICT DO NOTHING;\n");
  const url = (port: number): string => `postgresql://${encodeURIComponent(credentials.user)}:${encodeURIComponent(credentials.password)}@127.0.0.1:${port}/postgres`;
  const tps = async (script: string, port: number, clients: number): Promise<number> => {
    const { stdout } = await run('pgbench', ['-n', '-M', 'prepared', '-c', String(clients), '-j', '2', '-T', String(options.seconds), '-f', join(dir, script), url(port)], { maxBuffer: 16 * 1024 * 1024 });
    return Number(/tps = ([\d.]+)/.exec(stdout)?.[1] ?? 0);
  };
  const out: Record<string, number> = {};
  console.log('\npgbench (-M prepared), tps, direct to PostgreSQL vs through the SQL port (sync writes only through the port: the fence refuses them direct)');
  for (const clients of options.clients.filter((c) => c > 1)) {
    out[`read direct ${clients}`] = await tps('read.sql', leader.pg.port, clients);
    out[`read port ${clients}`] = await tps('read.sql', leader.sqlPort, clients);
    out[`sync write port ${clients}`] = await tps('write.sql', leader.sqlPort, clients);
    console.log(`  ${String(clients).padStart(3)} clients: reads ${out[`read direct ${clients}`]?.toFixed(0)} direct, ${out[`read port ${clients}`]?.toFixed(0)} through the port; sync writes ${out[`sync write port ${clients}`]?.toFixed(0)} through the port`);
  }
  return out;
}
