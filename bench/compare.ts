// qsync against PostgreSQL's own synchronous replication, side by side, in
// one run on one machine (`npm run bench -- compare`).
//
// (a) native: a primary and two streaming standbys, `ANY 1 (s1, s2)`
//     (bench/native.ts); (b) qsync: 3 PostgreSQL + 3 sidecars, quorum 2.
// Same binaries, same settings (the launcher's), same load generator:
// one-row INSERT transactions from N closed-loop clients, one connection
// each. Native: pg with synchronous_commit = on (sync), then local (async);
// qsync: the client library on a sync table, then an async one; sql: the
// same qsync cluster through its SQL port, driven by pg exactly as native
// is (a named prepared INSERT per transaction). Runs go native, qsync, sql,
// native, qsync, sql ... (`--pairs` rounds per case), after a warm-up of
// each system. Per round, the ratios to native; the medians of those are
// the figures. Also: WAL and journal fsyncs per commit,
// and the sidecars' peak resident memory during the 64-client runs.
// qsync and sql run with the leader holding sync writes open (the default,
// RFC 0027); prepared: the client library on the same cluster with its
// sidecars restarted with `--sync-hold prepare` (PREPARE TRANSACTION and
// COMMIT PREPARED), and restarted back before the next qsync run, so each
// round measures both ways on the same servers.
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import pg from 'pg';
import { startLocalCluster, type ClusterNode, type LocalCluster } from '../src/cli/cluster.js';
import { connect, type Db } from '../src/client/index.js';
import { vclockCovers, type VClock } from '../src/core/vclock.js';
import { startNativeCluster, type NativeCluster } from './native.js';
import { walFsyncs } from './postgres.js';
import { closedLoop, contextSwitches, cpuSeconds, tree } from './stats.js';

export interface CompareOptions {
  readonly seconds: number;
  readonly pairs: number;
  readonly clients: readonly number[];
  readonly warmupSeconds: number;
  /** Where the SVG chart goes. */
  readonly chartPath: string;
}

type System = 'native' | 'qsync' | 'sql' | 'prepared';

/**
 * Each run first drives its own sessions this long, unmeasured. Without it
 * the runs were not alike: the client library's and the prepared runs came
 * right after a restart of the sidecars (the hold mode changes), with V8 yet
 * to compile their hot paths, and the client library's pool, idle past its
 * 10 s timeout, opened its PostgreSQL connections inside the measured
 * seconds; the SQL port's runs came after them, warm.
 */
const RUN_WARMUP_SECONDS = 2;
const SYSTEMS: readonly System[] = ['native', 'qsync', 'sql', 'prepared'];
type Mode = 'sync' | 'async';

export interface CompareRun {
  readonly system: System;
  readonly mode: Mode;
  readonly clients: number;
  readonly pair: number;
  readonly txPerSec: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly errors: number;
  /** WAL fsyncs per commit on the primary (native) or the leader (qsync). */
  readonly walFsyncsPerTx: number;
  /** qsync only: journal fsyncs per commit on the leader. */
  readonly journalFsyncsPerTx: number | null;
  /** CPU milliseconds per commit, by part: where the time goes on a 2-core machine. */
  readonly cpuMsPerTx: Readonly<Record<string, number>>;
  /** Context switches per commit, by part: how often a commit wakes each process. */
  readonly switchesPerTx: Readonly<Record<string, number>>;
  /** CPU milliseconds per second the other system's processes used during the run: near 0 on an idle machine. */
  readonly otherCpuMsPerSec: number;
  /** How long the run waited for the machine to be idle first (the other system caught up, checkpoints done). */
  readonly settleMs: number;
  /** Transactions that failed in the run's unmeasured warm-up (RUN_WARMUP_SECONDS). */
  readonly warmupErrors: number;
}

export interface CompareCase {
  readonly mode: Mode;
  readonly clients: number;
  readonly native: { readonly txPerSec: number; readonly p50Ms: number; readonly p99Ms: number };
  readonly qsync: { readonly txPerSec: number; readonly p50Ms: number; readonly p99Ms: number };
  /** qsync through its SQL port, with native's load generator. */
  readonly sql: { readonly txPerSec: number; readonly p50Ms: number; readonly p99Ms: number };
  /** qsync's client library with the leader preparing its sync writes (syncHold prepare, RFC 0027). */
  readonly prepared: { readonly txPerSec: number; readonly p50Ms: number; readonly p99Ms: number };
  /** Medians over the rounds of prepared/native. */
  readonly preparedRatio: { readonly txPerSec: number; readonly p50Ms: number; readonly p99Ms: number };
  /** Medians over the rounds of sql/native. */
  readonly sqlRatio: { readonly txPerSec: number; readonly p50Ms: number; readonly p99Ms: number };
  /** Medians over the pairs of qsync/native. */
  readonly ratio: { readonly txPerSec: number; readonly p50Ms: number; readonly p99Ms: number };
  readonly ratios: ReadonlyArray<{ readonly txPerSec: number; readonly p50Ms: number; readonly p99Ms: number }>;
}

export interface CompareResult {
  readonly options: Omit<CompareOptions, 'chartPath'>;
  readonly machine: { readonly cpus: number; readonly node: string };
  readonly runs: readonly CompareRun[];
  readonly cases: readonly CompareCase[];
  /** Peak resident memory of each sidecar during the qsync runs at the most clients, MB. */
  readonly sidecarPeakRssMb: Readonly<Record<string, number>>;
  readonly targets: ReadonlyArray<{ readonly what: string; readonly target: string; readonly value: number; readonly met: boolean }>;
}

const median = (values: readonly number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid] as number : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
};

/** CPU seconds and context switches so far, by part. */
interface Usage {
  readonly cpu: Record<string, number>;
  readonly switches: Record<string, number>;
}

/** CPU seconds and context switches of named groups of process trees, plus this process (the load generator). */
async function usageByPart(parts: Record<string, Array<() => Promise<number | null>>>): Promise<Usage> {
  const cpu: Record<string, number> = {};
  const switches: Record<string, number> = {};
  for (const [name, roots] of Object.entries(parts)) {
    cpu[name] = 0;
    switches[name] = 0;
    for (const root of roots) {
      const pid = await root();
      if (pid === null) continue;
      for (const p of tree(pid)) {
        cpu[name] += cpuSeconds(p);
        switches[name] += contextSwitches(p);
      }
    }
  }
  const own = process.cpuUsage();
  cpu['load generator'] = (own.user + own.system) / 1e6;
  switches['load generator'] = contextSwitches(process.pid);
  return { cpu, switches };
}

/** Per commit, by part, between two readings. */
const perCommit = (before: Record<string, number>, after: Record<string, number>, commits: number, scale = 1): Record<string, number> =>
  Object.fromEntries(Object.entries(after).map(([part, value]) => [part, ((value - (before[part] ?? 0)) * scale) / commits]));

/** Resident memory of a process, MB (Linux /proc). */
function rssMb(pid: number): number {
  const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return match === null ? 0 : Number(match[1]) / 1024;
}

interface Target {
  /** Connections for `clients` callers of `mode`. */
  open(mode: Mode, clients: number): Promise<{ op: (caller: number) => Promise<void>; close: () => Promise<void> }>;
  walFsyncs(): Promise<number>;
  journalFsyncs(): Promise<number | null>;
  /** CPU seconds and context switches so far, by part. */
  usage(): Promise<Usage>;
  /** Wait until this system has no work left from the runs before (replicas caught up), then CHECKPOINT every server. */
  settle(): Promise<void>;
}

/** CHECKPOINT on a server: a run does not pay for the dirty pages of the runs before it. */
async function checkpoint(connectionString: string): Promise<void> {
  const c = new pg.Client({ connectionString });
  await c.connect();
  try {
    await c.query('CHECKPOINT');
  } finally {
    await c.end();
  }
}

const SETTLE_MS_MAX = 60_000;

function nativeTarget(cluster: NativeCluster, nextId: () => number): Target {
  const monitor = new pg.Client({ connectionString: cluster.primary.connectionString });
  monitor.on('error', () => undefined); // the cluster stops under it at the end
  const ready = monitor.connect();
  return {
    open: async (mode, clients) => {
      const conns = await Promise.all(Array.from({ length: clients }, async () => {
        const c = new pg.Client({ connectionString: cluster.primary.connectionString });
        await c.connect();
        await c.query(`SET synchronous_commit = ${mode === 'sync' ? 'on' : 'local'}`);
        return c;
      }));
      return {
        op: async (caller) => {
          await (conns[caller] as pg.Client).query({ name: 'insert', text: 'INSERT INTO bench VALUES ($1, $2)', values: [nextId(), 'payload'] });
        },
        close: async () => {
          await Promise.all(conns.map((c) => c.end()));
        },
      };
    },
    walFsyncs: async () => {
      await ready;
      return walFsyncs(monitor);
    },
    journalFsyncs: async () => null,
    usage: () => usageByPart({ 'primary PostgreSQL': [() => cluster.primary.pid()], 'standby PostgreSQLs': cluster.standbys.map((s) => () => s.pid()) }),
    settle: async () => {
      await ready;
      const deadline = Date.now() + SETTLE_MS_MAX;
      // Every standby has replayed everything the primary wrote.
      for (;;) {
        const { rows } = await monitor.query<{ behind: number }>(`SELECT count(*)::int AS behind FROM pg_stat_replication WHERE replay_lsn IS DISTINCT FROM pg_current_wal_lsn()`);
        if (rows[0]?.behind === 0 || Date.now() > deadline) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      for (const server of [cluster.primary, ...cluster.standbys]) await checkpoint(server.connectionString);
    },
  };
}

/** `through`: the client library on the client port, or pg on the SQL port (as native is driven). */
function qsyncTarget(cluster: LocalCluster, leader: () => ClusterNode, nextId: () => number, through: 'client' | 'sql'): Target {
  return {
    open: async (mode, clients) => {
      if (through === 'sql') {
        const conns = await Promise.all(Array.from({ length: clients }, async () => {
          const c = new pg.Client({ host: '127.0.0.1', port: leader().sqlPort, ...cluster.credentials, database: 'postgres' });
          await c.connect();
          return c;
        }));
        return {
          op: async (caller) => {
            await (conns[caller] as pg.Client).query({ name: 'insert', text: `INSERT INTO bench_${mode} VALUES ($1, $2)`, values: [nextId(), 'payload'] });
          },
          close: async () => {
            await Promise.all(conns.map((c) => c.end()));
          },
        };
      }
      const dbs: Db[] = await Promise.all(Array.from({ length: clients }, () => connect(leader().clientAddress, cluster.credentials)));
      return {
        op: async (caller) => {
          await (dbs[caller] as Db).execute([[`INSERT INTO bench_${mode} VALUES ($1, $2)`, [nextId(), 'payload']]]);
        },
        close: async () => {
          for (const db of dbs) db.close();
        },
      };
    },
    walFsyncs: async () => {
      const c = await leader().sql();
      try {
        return await walFsyncs(c);
      } finally {
        await c.end();
      }
    },
    journalFsyncs: async () => {
      const metrics = await fetch(`http://${leader().adminAddress}/metrics`).then((r) => r.text());
      const match = /^qsync_journal_fsync_seconds_count\{[^}]*\} (\d+)/m.exec(metrics);
      return match === null ? null : Number(match[1]);
    },
    usage: () => {
      const followers = cluster.nodes.filter((n) => n !== leader());
      const sidecar = (n: ClusterNode) => async (): Promise<number | null> => n.process?.pid ?? null;
      return usageByPart({
        'leader sidecar': [sidecar(leader())], 'follower sidecars': followers.map(sidecar),
        'leader PostgreSQL': [() => leader().pg.pid()], 'follower PostgreSQLs': followers.map((n) => () => n.pg.pid()),
      });
    },
    settle: async () => {
      const deadline = Date.now() + SETTLE_MS_MAX;
      // Every follower has applied everything the leader holds, and nothing waits in the limbo.
      for (;;) {
        const statuses = await Promise.all(cluster.nodes.map(async (n) => (await fetch(`http://${n.adminAddress}/status`).then((r) => r.json())) as { vclock: VClock; applied: VClock; limbo: { pending: number } }));
        const held = statuses[cluster.nodes.indexOf(leader())]?.vclock ?? [];
        if (statuses.every((st) => st.limbo.pending === 0 && vclockCovers(st.applied, held, { ignoreLocal: true })) || Date.now() > deadline) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      for (const n of cluster.nodes) await checkpoint(n.pg.connectionString);
    },
  };
}

export async function runCompareBench(options: CompareOptions): Promise<CompareResult> {
  let id = 0;
  const nextId = (): number => (id += 1);
  console.log('starting a native cluster (primary + 2 standbys, ANY 1 (s1, s2)) and a qsync cluster (3 nodes, quorum 2)...');
  const native = await startNativeCluster(['CREATE TABLE bench (id bigint PRIMARY KEY, payload text)']);
  let qsync: LocalCluster | null = null;
  try {
    // The sidecars read their settings each time they start: the prepared runs restart them preparing sync writes.
    let hold: 'prepare' | 'open' = 'open';
    qsync = await startLocalCluster({
      sidecarArgs: () => ['--sync-hold', hold],
      tables: [
        { ddl: 'CREATE TABLE bench_sync (id bigint PRIMARY KEY, payload text)', name: 'bench_sync', mode: 'sync' },
        { ddl: 'CREATE TABLE bench_async (id bigint PRIMARY KEY, payload text)', name: 'bench_async', mode: 'async' },
      ],
    });
    let leaderNode = await qsync.leader();
    const cluster = qsync;
    const targets: Record<System, Target> = {
      native: nativeTarget(native, nextId), qsync: qsyncTarget(qsync, () => leaderNode, nextId, 'client'), sql: qsyncTarget(qsync, () => leaderNode, nextId, 'sql'),
      prepared: qsyncTarget(qsync, () => leaderNode, nextId, 'client'),
    };
    /** Restart the sidecars holding sync writes as `system` needs, and find the leader again. */
    const holdFor = async (system: System): Promise<void> => {
      const wanted = system === 'prepared' ? 'prepare' : 'open';
      if (system === 'native' || wanted === hold) return;
      hold = wanted;
      await Promise.all(cluster.nodes.map((n) => n.stopSidecar()));
      await Promise.all(cluster.nodes.map((n) => n.startSidecar()));
      leaderNode = await cluster.leader(30_000);
    };
    const runs: CompareRun[] = [];
    const peak: Record<string, number> = {};
    const most = Math.max(...options.clients);

    const measure = async (system: System, mode: Mode, clients: number, pair: number, seconds: number): Promise<CompareRun> => {
      await holdFor(system);
      const target = targets[system];
      const other = targets[system === 'native' ? 'qsync' : 'native'];
      const session = await target.open(mode, clients);
      let warmupErrors = 0;
      await closedLoop(clients, RUN_WARMUP_SECONDS, (caller) => session.op(caller).catch(() => {
        warmupErrors += 1;
      }));
      // Each run starts on an idle machine: the other system caught up with the run before (a qsync follower
      // still applying an async backlog took the cores from the native run after it), this one with its
      // warm-up, both checkpointed.
      const settleStart = Date.now();
      await other.settle();
      await target.settle();
      const settleMs = Date.now() - settleStart;
      const otherBefore = (await other.usage()).cpu;
      const walBefore = await target.walFsyncs();
      const journalBefore = await target.journalFsyncs();
      const usageBefore = await target.usage();
      let errors = 0;
      // The sidecars' memory, sampled through the busiest runs.
      const sampler = system !== 'native' && clients === most ? setInterval(() => {
        for (const n of (qsync as LocalCluster).nodes) {
          if (n.process?.pid === undefined) continue;
          const key = `node${n.replica}${n === leaderNode ? ' (leader)' : ''}`;
          peak[key] = Math.max(peak[key] ?? 0, rssMb(n.process.pid));
        }
      }, 200) : null;
      const result = await closedLoop(clients, seconds, async (caller) => {
        try {
          await session.op(caller);
        } catch {
          errors += 1; // counted and reported: a benchmark must not hide failures
        }
      });
      if (sampler !== null) clearInterval(sampler);
      const commits = Math.max(1, result.ops - errors);
      const usageAfter = await target.usage();
      const otherAfter = (await other.usage()).cpu;
      const otherSeconds = Object.entries(otherAfter).filter(([part]) => part !== 'load generator').reduce((sum, [part, v]) => sum + v - (otherBefore[part] ?? 0), 0);
      const walAfter = await target.walFsyncs();
      const journalAfter = await target.journalFsyncs();
      await session.close();
      return {
        system, mode, clients, pair, txPerSec: (result.ops - errors) / result.seconds, p50Ms: result.latency.p50Ms(), p99Ms: result.latency.p99Ms(), errors,
        walFsyncsPerTx: (walAfter - walBefore) / commits,
        journalFsyncsPerTx: journalBefore === null || journalAfter === null ? null : (journalAfter - journalBefore) / commits,
        cpuMsPerTx: perCommit(usageBefore.cpu, usageAfter.cpu, commits, 1000),
        switchesPerTx: perCommit(usageBefore.switches, usageAfter.switches, commits),
        otherCpuMsPerSec: (otherSeconds * 1000) / result.seconds, settleMs, warmupErrors,
      };
    };

    console.log(`warm-up: ${options.warmupSeconds} s of sync inserts at 16 clients on each system`);
    for (const system of SYSTEMS) await measure(system, 'sync', 16, 0, options.warmupSeconds);
    console.log(`\n${options.pairs} rounds of ${options.seconds} s runs per case: native, qsync (client library), sql (qsync's SQL port, driven as native is), prepared (client library, sync writes prepared instead of held open)\n`);
    console.log('mode   clients  pair  system      tx/s   p50 ms   p99 ms  errors  WAL fsyncs/tx  journal fsyncs/tx');
    for (const mode of ['sync', 'async'] as const) {
      for (const clients of options.clients) {
        for (let pair = 1; pair <= options.pairs; pair += 1) {
          for (const system of SYSTEMS) {
            const r = await measure(system, mode, clients, pair, options.seconds);
            runs.push(r);
            console.log(`${mode.padEnd(5)}  ${String(clients).padStart(7)}  ${String(pair).padStart(4)}  ${system.padEnd(6)}  ${r.txPerSec.toFixed(0).padStart(8)}  ${r.p50Ms.toFixed(2).padStart(7)}  ${r.p99Ms.toFixed(2).padStart(7)}  ${String(r.errors).padStart(6)}  ${r.walFsyncsPerTx.toFixed(2).padStart(13)}  ${r.journalFsyncsPerTx === null ? '-'.padStart(17) : r.journalFsyncsPerTx.toFixed(2).padStart(17)}  cpu ms/tx: ${Object.entries(r.cpuMsPerTx).map(([k, v]) => `${k} ${v.toFixed(2)}`).join(', ')}; switches/tx: ${Object.entries(r.switchesPerTx).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', ')}; other system ${r.otherCpuMsPerSec.toFixed(0)} ms/s; settled in ${r.settleMs} ms${r.warmupErrors > 0 ? `; ${r.warmupErrors} errors in its warm-up` : ''}`);
          }
        }
      }
    }

    const cases: CompareCase[] = [];
    for (const mode of ['sync', 'async'] as const) {
      for (const clients of options.clients) {
        const of = (system: System): CompareRun[] => runs.filter((r) => r.system === system && r.mode === mode && r.clients === clients).sort((a, b) => a.pair - b.pair);
        const n = of('native');
        type Triple = { txPerSec: number; p50Ms: number; p99Ms: number };
        const ratiosOf = (list: CompareRun[]): Triple[] => n.map((nr, i) => {
          const qr = list[i] as CompareRun;
          return { txPerSec: qr.txPerSec / nr.txPerSec, p50Ms: qr.p50Ms / nr.p50Ms, p99Ms: qr.p99Ms / nr.p99Ms };
        });
        const ratios = ratiosOf(of('qsync'));
        const med = (list: readonly Triple[]): Triple => ({ txPerSec: median(list.map((r) => r.txPerSec)), p50Ms: median(list.map((r) => r.p50Ms)), p99Ms: median(list.map((r) => r.p99Ms)) });
        cases.push({ mode, clients, native: med(n), qsync: med(of('qsync')), sql: med(of('sql')), prepared: med(of('prepared')), ratios, ratio: med(ratios), sqlRatio: med(ratiosOf(of('sql'))), preparedRatio: med(ratiosOf(of('prepared'))) });
      }
    }
    const caseOf = (mode: Mode, clients: number): CompareCase | undefined => cases.find((c) => c.mode === mode && c.clients === clients);
    const fewest = Math.min(...options.clients);
    // CPU per commit of every process of the system (the load generator left out: the same for both), median of the pairs.
    const cpuPerCommit = (system: System, mode: Mode, clients: number): number => median(runs.filter((r) => r.system === system && r.mode === mode && r.clients === clients)
      .map((r) => Object.entries(r.cpuMsPerTx).filter(([part]) => part !== 'load generator').reduce((sum, [, v]) => sum + v, 0)));
    const middle = options.clients.filter((c) => c !== most && c !== fewest).at(-1) ?? most;
    const ratioOf = (mode: Mode, clients: number): number => caseOf(mode, clients)?.ratio.txPerSec ?? 0;
    const targetsMet = [
      { what: `sync throughput, ${most} clients, qsync/native`, target: '>= 0.5 (never below 0.3; goal 1.0)', value: ratioOf('sync', most), met: ratioOf('sync', most) >= 0.5 },
      { what: `sync throughput, ${middle} clients, qsync/native`, target: '>= 0.4', value: ratioOf('sync', middle), met: ratioOf('sync', middle) >= 0.4 },
      { what: `sync p50 latency, ${fewest} client, qsync/native`, target: '<= 2.5', value: caseOf('sync', fewest)?.ratio.p50Ms ?? Infinity, met: (caseOf('sync', fewest)?.ratio.p50Ms ?? Infinity) <= 2.5 },
      ...options.clients.filter((c) => c !== fewest).map((c) => ({ what: `async throughput, ${c} clients, qsync/native`, target: '>= 0.6', value: ratioOf('async', c), met: ratioOf('async', c) >= 0.6 })),
      { what: `CPU per sync commit at ${most} clients, all qsync processes, ms (native: ${cpuPerCommit('native', 'sync', most).toFixed(2)})`, target: '<= 0.5', value: cpuPerCommit('qsync', 'sync', most), met: cpuPerCommit('qsync', 'sync', most) <= 0.5 },
      { what: `sidecar peak RSS during the ${most}-client runs, MB`, target: '<= 150', value: Math.max(0, ...Object.values(peak)), met: Math.max(0, ...Object.values(peak)) <= 150 },
      ...options.clients.map((c) => {
        const k = caseOf('sync', c);
        const value = k === undefined ? 0 : k.sqlRatio.txPerSec / k.ratio.txPerSec;
        return { what: `sync throughput, ${c} clients, SQL port / client library`, target: '>= 1.0', value, met: value >= 1 };
      }),
    ];

    console.log('\nmedians over the pairs; ratio = median of the per-pair qsync/native ratios\n');
    console.log('mode   clients   native tx/s   qsync tx/s  ratio     sql tx/s  ratio  prepared tx/s  ratio   native p50  qsync p50  ratio  sql p50  ratio  prep p50  ratio   native p99  qsync p99  ratio');
    for (const c of cases) {
      const f = (v: number, d = 0, w = 11): string => v.toFixed(d).padStart(w);
      console.log(`${c.mode.padEnd(5)}  ${String(c.clients).padStart(7)}  ${f(c.native.txPerSec, 0, 12)}  ${f(c.qsync.txPerSec)}  ${f(c.ratio.txPerSec, 2, 5)}  ${f(c.sql.txPerSec)}  ${f(c.sqlRatio.txPerSec, 2, 5)}  ${f(c.prepared.txPerSec, 0, 13)}  ${f(c.preparedRatio.txPerSec, 2, 5)}  ${f(c.native.p50Ms, 2, 11)}  ${f(c.qsync.p50Ms, 2, 9)}  ${f(c.ratio.p50Ms, 2, 5)}  ${f(c.sql.p50Ms, 2, 7)}  ${f(c.sqlRatio.p50Ms, 2, 5)}  ${f(c.prepared.p50Ms, 2, 8)}  ${f(c.preparedRatio.p50Ms, 2, 5)}  ${f(c.native.p99Ms, 2, 11)}  ${f(c.qsync.p99Ms, 2, 9)}  ${f(c.ratio.p99Ms, 2, 5)}`);
    }
    console.log(`\nsidecar peak RSS during the ${most}-client runs: ${Object.entries(peak).map(([k, v]) => `${k} ${v.toFixed(0)} MB`).join(', ')}`);
    console.log('\ntargets:');
    for (const t of targetsMet) console.log(`  ${t.met ? 'met    ' : 'NOT MET'}  ${t.what}: ${t.value.toFixed(2)} (target ${t.target})`);

    const result: CompareResult = {
      options: { seconds: options.seconds, pairs: options.pairs, clients: options.clients, warmupSeconds: options.warmupSeconds },
      machine: { cpus: (await import('node:os')).cpus().length, node: process.version },
      runs, cases, sidecarPeakRssMb: peak, targets: targetsMet,
    };
    await writeFile(options.chartPath, chart(result));
    console.log(`chart: ${options.chartPath}`);
    return result;
  } finally {
    await qsync?.stop();
    await native.stop();
  }
}

/** Throughput and p99 against clients, both systems, sync and async: one SVG with two panels. */
export function chart(result: CompareResult): string {
  const width = 420;
  const height = 260;
  const pad = { left: 60, right: 16, top: 30, bottom: 40 };
  const clients = result.options.clients;
  const colors: Record<System, [string, string]> = { native: ['#1f77b4', '#9ecae1'], qsync: ['#d62728', '#fc9272'], sql: ['#6a3d9a', '#cab2d6'], prepared: ['#2ca02c', '#a1d99b'] };
  const series = SYSTEMS.flatMap((system) => (['sync', 'async'] as const).map((mode) => ({
    system, mode, color: colors[system][mode === 'sync' ? 0 : 1], dash: mode === 'async' ? '6 4' : '',
    points: clients.map((c) => result.cases.find((k) => k.mode === mode && k.clients === c)?.[system]),
  })));
  const panel = (x0: number, title: string, value: (p: { txPerSec: number; p99Ms: number }) => number, unit: string): string => {
    const values = series.flatMap((s) => s.points.map((p) => (p === undefined ? 0 : value(p))));
    const max = Math.max(1, ...values) * 1.1;
    const px = (i: number): number => x0 + pad.left + (clients.length === 1 ? 0 : (i / (clients.length - 1)) * (width - pad.left - pad.right));
    const py = (v: number): number => pad.top + (1 - v / max) * (height - pad.top - pad.bottom);
    const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => f * max);
    return [
      `<text x="${x0 + width / 2}" y="18" text-anchor="middle" font-weight="bold">${title}</text>`,
      ...ticks.map((t) => `<line x1="${x0 + pad.left}" x2="${x0 + width - pad.right}" y1="${py(t)}" y2="${py(t)}" stroke="#eee"/><text x="${x0 + pad.left - 6}" y="${py(t) + 4}" text-anchor="end">${t >= 100 ? t.toFixed(0) : t.toFixed(1)}</text>`),
      ...clients.map((c, i) => `<text x="${px(i)}" y="${height - pad.bottom + 16}" text-anchor="middle">${c}</text>`),
      `<text x="${x0 + width / 2}" y="${height - 6}" text-anchor="middle">clients</text>`,
      `<text x="${x0 + 14}" y="${height / 2}" transform="rotate(-90 ${x0 + 14} ${height / 2})" text-anchor="middle">${unit}</text>`,
      ...series.map((s) => {
        const pts = s.points.map((p, i) => (p === undefined ? null : `${px(i)},${py(value(p))}`)).filter((p) => p !== null);
        return `<polyline fill="none" stroke="${s.color}" stroke-width="2" stroke-dasharray="${s.dash}" points="${pts.join(' ')}"/>${pts.map((p) => `<circle cx="${p?.split(',')[0] ?? 0}" cy="${p?.split(',')[1] ?? 0}" r="3" fill="${s.color}"/>`).join('')}`;
      }),
    ].join('\n');
  };
  const legend = series.map((s, i) => `<line x1="${10 + i * 104}" x2="${36 + i * 104}" y1="${height + 20}" y2="${height + 20}" stroke="${s.color}" stroke-width="2" stroke-dasharray="${s.dash}"/><text x="${40 + i * 104}" y="${height + 24}">${s.system} ${s.mode}</text>`).join('\n');
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${2 * width}" height="${height + 40}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
${panel(0, 'Throughput (tx/s, median of pairs)', (p) => p.txPerSec, 'tx/s')}
${panel(width, 'p99 latency (ms, median of pairs)', (p) => p.p99Ms, 'ms')}
${legend}
</svg>
`;
}
