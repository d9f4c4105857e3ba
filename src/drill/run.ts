// One drill: clients run the workloads while the nemesis injects a scenario's
// fault (DESIGN.md §10), then everything heals, the nodes converge, and the
// checkers judge the history. Faults use real parts: signals to real
// processes, PostgreSQL's postmaster killed, link proxies between sidecars.
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { connect, type Db } from '../client/index.js';
import type { NodeStatus } from '../sidecar/status.js';
import { checkAsync, checkBank, checkRegister, checkReplicas, checkSet, type CheckResult, type NodeImage } from './checkers.js';
import type { DrillNode, DrillTarget } from './target.js';
import { Rng } from '../core/rng.js';
import { classify, perform, plan, setUp, WORKLOADS, type Op, type Workload } from './workload.js';

export const SCENARIOS = ['kill-leader', 'kill-postgres', 'partition-leader', 'partition-majorities-ring', 'pause-leader', 'rolling-restart', 'switchover', 'random'] as const;
export type Scenario = (typeof SCENARIOS)[number];

export interface DrillOptions {
  readonly scenario: Scenario;
  /** How long the clients run, all repetitions included; longer if a fault is still going (they stop 1.5 s after it ends). */
  readonly durationMs: number;
  /** Operations per second, all clients together. */
  readonly rate: number;
  readonly clients: number;
  readonly seed: number;
  readonly repetitions: number;
  /** How long a fault lasts before it heals (a kill: how long the process stays down at most). */
  readonly faultMs: number;
  /** Wait this long after the clients stop for the nodes to converge. */
  readonly convergeMs?: number;
  readonly workloads?: readonly Workload[];
  /** A client gives up on an answer after this long (a frozen node keeps its sockets open): unknown outcome. Default 3000. */
  readonly requestTimeoutMs?: number;
}

export const DRILL_DEFAULTS = { durationMs: 20_000, rate: 60, clients: 8, seed: 1, repetitions: 1, faultMs: 3_000 } as const;

/** One injected fault: when, on whom, and what the cluster did about it. */
export interface FaultWindow {
  readonly scenario: Exclude<Scenario, 'random'>;
  description: string;
  readonly startMs: number;
  endMs: number;
  readonly leaderBefore: number | null;
  readonly termBefore: number;
  /** Fault → first successful sync write invoked after it, on a leader of a newer term when there was an election. */
  failoverMs?: number | null;
  newLeader?: number | null;
  newTerm?: number | null;
  /** Longest stretch from the fault on (until the next) with no successful sync write. */
  unavailableMs?: number;
}

export interface Sample {
  readonly atMs: number;
  readonly replica: number;
  readonly up: boolean;
  readonly role?: string;
  readonly term?: number;
  readonly writable?: boolean;
}

export interface DrillResult {
  readonly scenario: Scenario;
  readonly options: DrillOptions;
  readonly run: string;
  readonly startedAt: string;
  readonly ops: readonly Op[];
  readonly faults: readonly FaultWindow[];
  readonly samples: readonly Sample[];
  readonly checks: readonly CheckResult[];
  readonly valid: boolean | 'unknown';
  readonly counts: { readonly ok: number; readonly fail: number; readonly rolledBack: number; readonly unknown: number };
  /** Per node: prepared transactions its PROMOTEs committed and rolled back during the drill. */
  readonly promoted: ReadonlyArray<{ readonly replica: number; readonly committed: number; readonly rolledBack: number }>;
  readonly convergedMs: number | null;
}

export interface Progress {
  readonly phase: 'setup' | 'running' | 'converging' | 'checking';
  readonly elapsedMs: number;
  readonly durationMs: number;
  readonly ok: number;
  readonly fail: number;
  readonly unknown: number;
  readonly fault: string | null;
}

/** The clients run at least this long after the last fault ends. */
const AFTER_FAULT_MS = 1_500;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function status(node: DrillNode): Promise<NodeStatus | null> {
  try {
    const response = await fetch(`http://${node.adminAddress}/status`, { signal: AbortSignal.timeout(1_000) });
    return (await response.json()) as NodeStatus;
  } catch {
    return null;
  }
}

async function waitForLeader(target: DrillTarget, timeoutMs: number, exclude: number | null = null): Promise<NodeStatus | null> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const statuses = await Promise.all(target.nodes.map(status));
    const leader = statuses.find((s) => s?.writable === true && s.replica !== exclude);
    if (leader !== undefined && leader !== null) return leader;
    await sleep(100);
  }
  return null;
}

export async function runDrill(target: DrillTarget, options: DrillOptions, onProgress: (p: Progress) => void = () => undefined): Promise<DrillResult> {
  const run = `${options.scenario}-${randomBytes(3).toString('hex')}`;
  const startedAt = new Date().toISOString();
  const random = new Rng(options.seed);
  const workloads = options.workloads ?? WORKLOADS;
  const addresses = target.nodes.map((n) => n.clientAddress);
  const replicaAt = new Map(target.nodes.map((n) => [n.clientAddress, n.replica]));
  onProgress({ phase: 'setup', elapsedMs: 0, durationMs: options.durationMs, ok: 0, fail: 0, unknown: 0, fault: null });
  if ((await waitForLeader(target, 30_000)) === null) throw new Error('no node accepts writes: is the cluster up? (qsync status)');
  const admin = await connect(addresses, { ...target.credentials, leaderWaitMs: 30_000 });
  const clients: Db[] = [];
  try {
    await setUp(target.nodes, admin, run);
    for (let i = 0; i < options.clients; i += 1) clients.push(await connect(addresses, { ...target.credentials, leaderWaitMs: 5_000, requestTimeoutMs: options.requestTimeoutMs ?? 3_000, leaderCheckMs: 500 }));
    const promotedBefore = await Promise.all(target.nodes.map(status));

    const t0 = Date.now();
    const now = (): number => Date.now() - t0;
    const ops: Op[] = [];
    const samples: Sample[] = [];
    const faults: FaultWindow[] = [];
    let stopped = false;
    let current: string | null = null;

    // The term each node reported last: an operation's term is its node's term when it completed.
    const terms = new Map<number, number>();
    let polling = true;
    const poller = (async () => {
      while (polling) {
        const at = now();
        const statuses = await Promise.all(target.nodes.map(status));
        statuses.forEach((s, i) => {
          const replica = (target.nodes[i] as DrillNode).replica;
          if (s === null) samples.push({ atMs: at, replica, up: false });
          else {
            samples.push({ atMs: at, replica, up: true, role: s.role, term: s.term, writable: s.writable });
            terms.set(replica, s.term);
          }
        });
        await sleep(200);
      }
    })();

    const counts = (): { ok: number; fail: number; unknown: number } => ({
      ok: ops.filter((o) => o.result === 'ok').length, fail: ops.filter((o) => o.result === 'fail').length, unknown: ops.filter((o) => o.result === 'unknown').length,
    });
    const ticker = setInterval(() => onProgress({ phase: 'running', elapsedMs: now(), durationMs: options.durationMs, ...counts(), fault: current }), 250);

    // Clients: each paced at rate/clients, on its workload (round robin over the chosen ones).
    const intervalMs = (1_000 * options.clients) / Math.max(1, options.rate);
    const running = clients.map(async (db, client) => {
      const workload = workloads[client % workloads.length] as Workload;
      const mine = new Rng(options.seed * 1_000 + client);
      for (let seq = 0; !stopped; seq += 1) {
        const began = Date.now();
        const planned = plan(workload, run, client, seq, mine);
        const op: Op = { id: ops.length, client, ...planned, output: null, invokeMs: now(), completeMs: null, result: 'pending' };
        ops.push(op);
        try {
          op.output = await perform(db, run, planned);
          op.result = 'ok';
          op.completeMs = now();
        } catch (error) {
          op.result = classify(error);
          op.error = `${(error as Error).name}: ${(error as Error).message}`;
          op.completeMs = op.result === 'unknown' ? null : now();
          if (op.result === 'unknown') op.error = `${op.error} (at ${now()} ms)`;
        }
        const node = replicaAt.get(db.address);
        if (node !== undefined) {
          op.node = node;
          const term = terms.get(node);
          if (term !== undefined) op.term = term;
        }
        await sleep(Math.max(0, intervalMs - (Date.now() - began)));
      }
    });

    // The nemesis: each repetition's fault starts 30% into its slice of the run.
    const nemesis = (async () => {
      const slice = options.durationMs / options.repetitions;
      for (let rep = 0; rep < options.repetitions; rep += 1) {
        await sleep(Math.max(0, rep * slice + 0.3 * slice - now()));
        const scenario = options.scenario === 'random' ? random.pick(SCENARIOS.filter((s) => s !== 'random')) : options.scenario;
        const leader = await waitForLeader(target, 20_000);
        const window: FaultWindow = { scenario, description: '', startMs: now(), endMs: now(), leaderBefore: leader?.replica ?? null, termBefore: leader?.term ?? 0 };
        faults.push(window);
        current = scenario;
        window.description = await inject(target, scenario, leader, options.faultMs, random);
        window.endMs = now();
        current = null;
      }
    })();

    nemesis.catch(() => undefined); // awaited below; a failure must not go unhandled meanwhile
    try {
      await sleep(options.durationMs);
      await nemesis;
      // A fault can end near the end of the run (three restarts take most of a short one): the
      // clients go on after it, or its failover is cut off and a write from before it is measured.
      await sleep(Math.max(0, (faults.at(-1)?.endMs ?? 0) + AFTER_FAULT_MS - now()));
    } finally {
      // Also when the nemesis failed: stop the clients, or nothing ends.
      stopped = true;
      clearInterval(ticker);
      // In-flight operations get a while to finish; what is still open stays unknown. The poller
      // samples until they have: the term of one that completes meanwhile is known.
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([Promise.all(running), new Promise<void>((resolve) => (timer = setTimeout(resolve, 10_000)))]);
      clearTimeout(timer);
      polling = false;
      for (const op of ops) {
        if (op.result === 'pending') {
          op.result = 'unknown';
          op.error = 'no answer before the drill ended';
        }
      }
      await poller;
    }

    onProgress({ phase: 'converging', elapsedMs: now(), durationMs: options.durationMs, ...counts(), fault: null });
    await target.heal();
    const convergeStart = Date.now();
    const images = await converge(target.nodes, run, options.convergeMs ?? 60_000);
    const convergedMs = images.converged ? Date.now() - convergeStart : null;

    onProgress({ phase: 'checking', elapsedMs: now(), durationMs: options.durationMs, ...counts(), fault: null });
    const promotedAfter = await Promise.all(target.nodes.map(status));
    const checks = [
      ...(workloads.includes('register') ? [checkRegister(ops)] : []),
      ...(workloads.includes('set') || workloads.includes('mixed') ? [checkSet(ops, images.images)] : []),
      ...(workloads.includes('bank') ? [checkBank(ops, images.images)] : []),
      ...(workloads.includes('mixed') ? [checkAsync(ops, images.images)] : []),
      checkReplicas(images.images),
    ];
    for (const [i, window] of faults.entries()) measure(window, ops, samples, faults[i + 1]?.startMs ?? Number.POSITIVE_INFINITY);
    const writes = ops.filter((o) => o.f !== 'balance');
    return {
      scenario: options.scenario, options, run, startedAt, ops, faults, samples, checks,
      valid: checks.some((c) => c.valid === false) ? false : checks.some((c) => c.valid === 'unknown') ? 'unknown' : true,
      counts: {
        ok: writes.filter((o) => o.result === 'ok').length, fail: writes.filter((o) => o.result === 'fail').length,
        rolledBack: writes.filter((o) => o.error?.startsWith('RolledBack') === true).length, unknown: writes.filter((o) => o.result === 'unknown').length,
      },
      promoted: target.nodes.map((n, i) => {
        const before = promotedBefore[i]?.promoted ?? { committed: 0, rolledBack: 0 };
        const after = promotedAfter[i]?.promoted ?? { committed: 0, rolledBack: 0 };
        // A restarted sidecar counts from zero again.
        const restarted = after.committed < before.committed || after.rolledBack < before.rolledBack;
        return { replica: n.replica, committed: after.committed - (restarted ? 0 : before.committed), rolledBack: after.rolledBack - (restarted ? 0 : before.rolledBack) };
      }),
      convergedMs,
    };
  } finally {
    for (const db of clients) db.close();
    admin.close();
  }
}

/** Run `during`, then `undo` whatever happened: a drill that fails must not leave a node down or a link cut. */
async function undoing(during: () => Promise<unknown>, undo: () => Promise<void>): Promise<void> {
  try {
    await during();
  } finally {
    await undo();
  }
}

/** Inject one fault and heal it; returns what was done, for the report. */
async function inject(target: DrillTarget, scenario: Exclude<Scenario, 'random'>, leader: NodeStatus | null, faultMs: number, random: Rng): Promise<string> {
  if (leader === null) throw new Error(`no leader to inject ${scenario} on within 20 s`);
  const l = leader.replica;
  const followers = target.nodes.map((n) => n.replica).filter((r) => r !== l);
  const cut = async (a: number, b: number): Promise<void> => {
    await target.link(a, b, { kind: 'blackhole', direction: 'both' });
    await target.link(b, a, { kind: 'blackhole', direction: 'both' });
  };
  switch (scenario) {
    case 'kill-leader': {
      await target.act(l, 'kill-sidecar');
      await undoing(() => waitForLeader(target, faultMs, l), () => target.act(l, 'start-sidecar'));
      return `SIGKILL of node ${l}'s sidecar (leader, term ${leader.term}); restarted once another node led, or after ${faultMs} ms`;
    }
    case 'kill-postgres':
      await target.act(l, 'kill-postgres');
      await undoing(() => sleep(faultMs), () => target.act(l, 'start-postgres'));
      return `SIGKILL of node ${l}'s PostgreSQL postmaster (leader, term ${leader.term}); restarted after ${faultMs} ms`;
    case 'partition-leader':
      await undoing(async () => {
        for (const f of followers) await cut(l, f);
        await sleep(faultMs);
      }, () => target.heal());
      return `node ${l} (leader, term ${leader.term}) cut off from ${followers.map((f) => `node ${f}`).join(' and ')} for ${faultMs} ms (black hole both ways)`;
    case 'partition-majorities-ring': {
      // Each node still sees a majority, but no two see the same one. With 3 nodes: the leader loses one
      // follower. With more: nodes in a ring keep only their links to neighbours within k steps.
      const ring = [l, ...followers];
      const n = ring.length;
      const k = Math.ceil(Math.floor(n / 2) / 2);
      const other = followers[random.int(0, followers.length - 1)] as number;
      const pairs: Array<readonly [number, number]> = [];
      for (let i = 0; i < n; i += 1) {
        for (let j = i + 1; j < n; j += 1) {
          const far = n === 3 ? ring[i] === l && ring[j] === other : Math.min(j - i, n - (j - i)) > k;
          if (far) pairs.push([ring[i] as number, ring[j] as number]);
        }
      }
      await undoing(async () => {
        for (const [x, y] of pairs) await cut(x, y);
        await sleep(faultMs);
      }, () => target.heal());
      const lost = pairs.map(([x, y]) => `${x}-${y}`);
      return `majorities ring around node ${l} (leader, term ${leader.term}): links ${lost.join(', ')} cut for ${faultMs} ms`;
    }
    case 'pause-leader':
      await target.act(l, 'pause');
      await undoing(() => sleep(faultMs), () => target.act(l, 'resume'));
      return `SIGSTOP of node ${l}'s sidecar (leader, term ${leader.term}) for ${faultMs} ms, then SIGCONT`;
    case 'rolling-restart': {
      for (const r of [...followers, l]) {
        await target.act(r, 'stop-sidecar');
        await target.act(r, 'start-sidecar');
        await waitForLeader(target, 15_000);
      }
      return `rolling restart (SIGTERM, start) of nodes ${[...followers, l].join(', ')}, the leader (node ${l}) last`;
    }
    case 'switchover': {
      // A transfer waits for the target to catch up; under load it may give up: try again, as an operator would.
      const to = random.pick(followers);
      const node = target.nodes.find((n) => n.replica === l) as DrillNode;
      const refusals: string[] = [];
      for (let attempt = 1; attempt <= 3; attempt += 1) {
        const response = await fetch(`http://${node.adminAddress}/transfer?to=${to}`, { method: 'POST', headers: { authorization: `Bearer ${target.adminToken}` }, signal: AbortSignal.timeout(30_000) });
        const body = (await response.json()) as { error?: { message: string } };
        if (body.error === undefined) return `switchover (transfer) from node ${l} (term ${leader.term}) to node ${to}${refusals.length > 0 ? ` after ${refusals.length} refusal(s): ${refusals.join('; ')}` : ''}`;
        refusals.push(body.error.message);
        await sleep(500);
      }
      return `switchover from node ${l} to node ${to} refused 3 times: ${refusals.join('; ')}`;
    }
  }
}

/**
 * Failover time and unavailability of one fault, from the history. The new
 * leader is the first node seen accepting writes in a newer term (status
 * samples, every 200 ms); the failover ends with the first successful sync
 * write it answered that was invoked after the fault began. Without an election,
 * the first successful write invoked after the fault. The unavailability
 * counts until the next fault begins.
 */
function measure(window: FaultWindow, ops: readonly Op[], samples: readonly Sample[], untilMs: number): void {
  // Sync writes only: an async insert may succeed on any node, leader or not.
  const writes = ops.filter((o) => o.result === 'ok' && o.f !== 'balance' && o.f !== 'insert-async' && o.completeMs !== null).sort((a, b) => (a.completeMs as number) - (b.completeMs as number));
  const after = writes.filter((o) => o.invokeMs >= window.startMs);
  const leading = samples.filter((s) => s.writable === true && (s.term ?? 0) > window.termBefore && s.atMs >= window.startMs);
  const newTermOf = (o: Op): number | undefined => leading.find((s) => s.replica === o.node && s.atMs <= (o.completeMs as number) + 250)?.term;
  const elected = after.find((o) => newTermOf(o) !== undefined);
  const first = elected ?? after[0];
  window.failoverMs = first === undefined ? null : (first.completeMs as number) - window.startMs;
  window.newLeader = first?.node ?? null;
  window.newTerm = first === undefined ? null : newTermOf(first) ?? first.term ?? null;
  let previous = window.startMs;
  let gap = 0;
  for (const o of writes) {
    const at = o.completeMs as number;
    if (at < window.startMs) continue;
    if (at > untilMs) break;
    gap = Math.max(gap, at - previous);
    previous = at;
  }
  window.unavailableMs = gap;
}

/** Wait until every node holds the same replicated tables and nothing prepared; then read what each holds. */
async function converge(nodes: readonly DrillNode[], run: string, timeoutMs: number): Promise<{ converged: boolean; images: NodeImage[] }> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const images = await Promise.all(nodes.map((n) => image(n, run).catch(() => null)));
    const complete = images.filter((i): i is NodeImage => i !== null);
    const same = complete.length === nodes.length && complete.every((i) => i.prepared.length === 0 && JSON.stringify(i.hashes) === JSON.stringify(complete[0]?.hashes));
    if (same || Date.now() > deadline) return { converged: same, images: complete };
    await sleep(250);
  }
}

async function image(node: DrillNode, run: string): Promise<NodeImage> {
  const client = new pg.Client({ connectionString: node.pgUrl, connectionTimeoutMillis: 2_000 });
  client.on('error', () => undefined);
  await client.connect();
  try {
    const ids = async (table: string): Promise<string[]> => (await client.query<{ id: string }>(`SELECT id FROM ${table} WHERE run = $1 ORDER BY id`, [run])).rows.map((r) => r.id);
    const tables = (await client.query<{ table_name: string; key_columns: string[] }>(`SELECT table_name, key_columns FROM qsync.tables WHERE mode IN ('sync', 'async') ORDER BY table_name`)).rows;
    const hashes: Record<string, string> = {};
    for (const t of tables) {
      const order = t.key_columns.map((c) => `t.${pg.escapeIdentifier(c)}`).join(', ');
      const name = t.table_name.split('.').map((part) => pg.escapeIdentifier(part)).join('.');
      hashes[t.table_name] = (await client.query<{ h: string }>(`SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY ${order}), '')) AS h FROM ${name} t`)).rows[0]?.h ?? '';
    }
    return {
      replica: node.replica,
      setIds: await ids('drill_set'),
      asyncIds: await ids('drill_async'),
      bank: (await client.query<{ id: string; balance: string }>('SELECT id, balance FROM drill_bank WHERE run = $1 ORDER BY id', [run])).rows.map((r) => ({ id: r.id, balance: Number(r.balance) })),
      hashes,
      prepared: (await client.query<{ gid: string }>('SELECT gid FROM pg_prepared_xacts ORDER BY gid')).rows.map((r) => r.gid),
    };
  } finally {
    await client.end();
  }
}
