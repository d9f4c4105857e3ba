// The simulated cluster: 3 or 5 nodes, each the production node driver
// (src/sidecar/driver.ts) over simulated clock, journal, network and
// PostgreSQL; clients writing and reading; faults drawn from the seed. The
// invariants of DESIGN.md §2 are checked after every event.
//
//   safety phase    faults and load for `faultMs`: crashes of a node, or of
//                   its PostgreSQL alone, or of one of the leader's client
//                   sessions alone; partitions; forced elections
//   heal            partitions lifted, crashed nodes restarted
//   liveness phase  a leader must appear and a sync write succeed
//   quiesce         clients stop; every node converges to the same rows,
//                   every acknowledged write is on every node, nothing is
//                   left prepared
import { Writable } from 'node:stream';
import { pino } from 'pino';
import type { ElectionMessage } from '../../src/core/election.js';
import { QsyncError } from '../../src/core/errors.js';
import type { ReplicaId } from '../../src/core/types.js';
import { vclockCovers, vclockFromEntries, vclockGet, type VClock } from '../../src/core/vclock.js';
import { configSchema, type SidecarConfig } from '../../src/sidecar/config.js';
import { NodeDriver } from '../../src/sidecar/driver.js';
import type { Clock, PlantedBugs } from '../../src/sidecar/io.js';
import { SimNetwork } from './network.js';
import { Rng, Scheduler, type Life } from './scheduler.js';
import { SimDatabase, SimDisk, SimJournal, SimPg, type Put, type SimSession } from './storage.js';

export const PLANTED_BUGS = ['voteIgnoresVclock', 'quorumOffByOne', 'raftUnsynced', 'gapAccepted', 'ackBeforeDurable', 'applyBeforeConfirm', 'batchMarksApart', 'syncTxnSkipsLww', 'relayDropsThirdParty', 'journalBeforePrepare', 'commitBeforeJournal', 'readIndexUnconfirmed', 'readIndexNotApplied', 'orphanKept', 'heldUnchecked', 'lostForgotten', 'preparedKept'] as const;

/** The planted bugs of the path that holds sync writes open: only a run in that mode can catch them. */
export const HELD_BUGS: readonly PlantedBug[] = ['heldUnchecked', 'lostForgotten'];

/** A relay leaves a gap in one record of 500 on half the seeds (from a generator of its own). */
function gapsOf(seed: number): { gapRate: number; gaps: Rng } {
  const gaps = new Rng(seed ^ 0x6a9);
  return { gapRate: gaps.chance(0.5) ? 0.002 : 0, gaps };
}
export type PlantedBug = (typeof PLANTED_BUGS)[number];

export interface SimOptions {
  readonly seed: number;
  readonly bug?: PlantedBug;
  /** How the leader holds sync writes (the syncHold setting); default prepare. Open also aims session kills at shared rows. */
  readonly hold?: 'prepare' | 'open';
  /** Length of the safety phase, simulated ms. */
  readonly faultMs?: number;
  /** Lines of trace kept for a failure report. */
  readonly traceLines?: number;
}

export interface SimResult {
  readonly seed: number;
  readonly ok: boolean;
  readonly violation: string | null;
  /** The last events before the end (or the violation). */
  readonly trace: readonly string[];
  readonly stats: { nodes: number; events: number; simulatedMs: number; acked: number; rolledBack: number; unknown: number; crashes: number; pgCrashes: number; sessionKills: number; leaders: number; linearizableReads: number };
}

class Violation extends Error {}

const CLUSTER = 'sim';
const ELECTION_TIMEOUT_MS = 1_000;
const SYNCHRO_TIMEOUT_MS = 1_500;
const CLIENT_TIMEOUT_MS = 4_000;
/** How soon a follower cut from the leader holds its records through a relay (relay phase). */
const RELAYED_WITHIN_MS = 5_000;

type WriteStatus = 'pending' | 'acked' | 'rolled-back' | 'unknown' | 'refused';

interface SimNode {
  readonly id: number;
  readonly disk: SimDisk;
  readonly pg: SimPg;
  readonly rate: number;
  readonly offsetMs: number;
  life: Life;
  journal: SimJournal | null;
  driver: NodeDriver<SimSession, readonly Put[]> | null;
  /** Set while the node is down: when it comes back. */
  restartAt: number | null;
}

export async function simulate(options: SimOptions): Promise<SimResult> {
  const world = new World(options);
  return world.run();
}

class World {
  readonly #options: SimOptions;
  readonly #rng: Rng;
  readonly #scheduler = new Scheduler();
  readonly #network: SimNetwork;
  readonly #nodes: SimNode[] = [];
  readonly #quorum: number;
  readonly #trace: string[] = [];
  readonly #traceMax: number;
  readonly #bugs: PlantedBugs;
  readonly #hold: 'prepare' | 'open';
  /** Term -> the one leader seen in it. */
  readonly #leaders = new Map<number, number>();
  /** "node:term" -> candidate voted for. */
  readonly #votes = new Map<string, number>();
  /** Sync writes by value: what clients were told, and what PostgreSQL decided anywhere. */
  readonly #status = new Map<string, WriteStatus>();
  readonly #decided = new Map<string, 'committed' | 'rolled-back'>();
  /** Acknowledged async writes to keys of their own: no later write may hide their loss. */
  readonly #asyncAcked = new Set<string>();
  /** Sync writes acknowledged so far: a linearizable read must see each one acknowledged before it was sent. */
  readonly #syncAcked = new Set<string>();
  #readsServed = 0;
  #violation: string | null = null;
  #crashes = 0;
  #pgCrashes = 0;
  #writes = 0;
  #clientsOn = true;
  #faultUntil = 0;
  /** An operator's removals of a node asked for. */
  #removals = 0;
  /** Per node: the highest term its messages carried, and the vote it granted in it. */
  readonly #told = new Map<number, { term: number; vote: number }>();

  constructor(options: SimOptions) {
    this.#options = options;
    this.#rng = new Rng(options.seed);
    this.#traceMax = options.traceLines ?? 40;
    this.#bugs = options.bug === undefined ? {} : { [options.bug]: true };
    this.#hold = options.hold ?? 'prepare';
    const count = this.#rng.chance(0.7) ? 3 : 5;
    this.#quorum = Math.floor(count / 2) + 1;
    const latencyMsMin = this.#rng.range(0.5, 5);
    this.#network = new SimNetwork(this.#scheduler, new Rng(this.#rng.fork()), {
      latencyMsMin, latencyMsMax: latencyMsMin + this.#rng.range(1, 40),
      dropRate: this.#rng.range(0, 0.1), duplicateRate: this.#rng.range(0, 0.05),
      // Its own generator, so that the seeds' other draws stay as they were: half the seeds have gaps.
      ...gapsOf(options.seed),
      ...(options.bug === 'relayDropsThirdParty' ? { thirdPartyDropped: true } : {}),
    }, {
      sent: (from, to, message) => this.#sent(from, to, message),
      trace: (line) => this.#note(line),
    });
    for (let id = 1; id <= count; id += 1) {
      const disk = new SimDisk();
      this.#nodes.push({
        id, disk, pg: new SimPg(id, {
          decided: (node, verdict, gid, puts) => this.#pgDecided(node, verdict, gid, puts),
          released: (node, gid, puts) => {
            if (this.#watched(gid, puts)) this.#note(`n${node} released ${gid} ${puts.map((p) => p.value).join(',')}`);
          },
        }),
        rate: this.#rng.range(0.98, 1.02), offsetMs: this.#rng.range(0, 10_000),
        life: { alive: false }, journal: null, driver: null, restartAt: null,
      });
      (this.#nodes.at(-1) as SimNode).pg.killsOnLocks = this.#hold === 'open';
    }
  }

  async run(): Promise<SimResult> {
    const faultMs = this.#options.faultMs ?? 20_000;
    this.#faultUntil = faultMs;
    try {
      this.#note(`seed ${this.#options.seed}: ${this.#nodes.length} nodes, quorum ${this.#quorum}, sync writes held ${this.#hold === 'open' ? 'open' : 'prepared'}${this.#options.bug === undefined ? '' : `, planted bug ${this.#options.bug}`}`);
      for (const node of this.#nodes) this.#start(node);
      for (let c = 1; c <= 3; c += 1) this.#client(c);
      this.#faults(faultMs);
      this.#walWriter();
      await this.#runUntil(faultMs);
      this.#heal();
      await this.#liveness();
      await this.#relayed();
      this.#clientsOn = false;
      await this.#runUntil(this.#scheduler.now + CLIENT_TIMEOUT_MS);
      await this.#linearizableReads();
      await this.#prepareAnswerLost();
      await this.#heldSessionKilled('x9', false);
      await this.#heldSessionKilled('x8', true);
      await this.#runUntil(this.#scheduler.now + 3 * SYNCHRO_TIMEOUT_MS + CLIENT_TIMEOUT_MS);
      this.#converged();
    } catch (error) {
      if (!(error instanceof Violation)) {
        this.#violation = `the simulation itself failed: ${(error as Error).stack ?? String(error)}`;
      }
    } finally {
      for (const node of this.#nodes) node.life.alive = false;
    }
    const statuses = [...this.#status.values()];
    return {
      seed: this.#options.seed, ok: this.#violation === null, violation: this.#violation, trace: this.#trace.slice(),
      stats: {
        nodes: this.#nodes.length, events: this.#scheduler.events, simulatedMs: Math.round(this.#scheduler.now),
        acked: statuses.filter((s) => s === 'acked').length, rolledBack: statuses.filter((s) => s === 'rolled-back').length,
        unknown: statuses.filter((s) => s === 'unknown').length, crashes: this.#crashes, pgCrashes: this.#pgCrashes, sessionKills: this.#nodes.reduce((sum, n) => sum + n.pg.sessionsKilled, 0), leaders: this.#leaders.size, linearizableReads: this.#readsServed,
      },
    };
  }

  async #runUntil(until: number): Promise<void> {
    await this.#scheduler.run(until, () => {
      this.#check();
      return this.#violation === null;
    });
    if (this.#violation !== null) throw new Violation(this.#violation);
  }

  #note(line: string): void {
    // The trace ends at the violation: what the run does after it (links closing, a heal) is noise.
    if (this.#violation !== null && !line.startsWith('VIOLATION: ')) return;
    this.#trace.push(`${(this.#scheduler.now / 1000).toFixed(3).padStart(8)}s ${line}`);
    if (this.#trace.length > this.#traceMax) this.#trace.shift();
  }

  #fail(message: string): void {
    if (this.#violation !== null) return;
    this.#violation = message;
    this.#note(`VIOLATION: ${message}`);
  }

  // ---- nodes ---------------------------------------------------------------------

  #config(node: SimNode): SidecarConfig {
    const parsed = configSchema.parse({
      replicaId: node.id, clusterId: CLUSTER, pgUrl: 'postgres://sim/sim', dataDir: '/sim', insecure: true, peerPort: 0, clientPort: 0,
      peers: this.#nodes.filter((n) => n !== node).map((n) => ({ replica: n.id, host: `n${n.id}`, port: 1, client: `n${n.id}` })),
      electionTimeoutMs: ELECTION_TIMEOUT_MS, synchroTimeoutMs: SYNCHRO_TIMEOUT_MS,
    });
    return { ...parsed, quorum: this.#quorum, heartbeatIntervalMs: ELECTION_TIMEOUT_MS / 10, syncHold: this.#hold };
  }

  #clock(node: SimNode, life: Life): Clock {
    const scheduler = this.#scheduler;
    const wait = (ms: number): number => Math.max(0, ms) / node.rate;
    return {
      nowMs: () => node.offsetMs + scheduler.now * node.rate,
      sleep: (ms) => new Promise((resolve) => scheduler.after(wait(ms), resolve, life)),
      every: (ms, fn) => {
        let on = true;
        const again = (): void => scheduler.after(wait(ms), () => {
          if (!on) return;
          fn();
          again();
        }, life);
        again();
        return () => {
          on = false;
        };
      },
      after: (ms, fn) => scheduler.after(wait(ms), fn, life),
    };
  }

  #start(node: SimNode): void {
    const life: Life = { alive: true };
    node.life = life;
    node.restartAt = null;
    const rng = new Rng(this.#rng.fork());
    const clock = this.#clock(node, life);
    // Mostly quick; now and then the disk stalls.
    const journal = new SimJournal(node.disk, this.#scheduler, life, rng, () => (rng.chance(0.05) ? rng.range(20, 120) : rng.range(0.5, 4)));
    node.journal = journal;
    const log = pino({ level: process.env.SIM_LOG ?? 'warn', base: { n: node.id } }, new Writable({
      write: (chunk: Buffer, _encoding, done) => {
        const line = JSON.parse(chunk.toString()) as { msg?: string; err?: string; kind?: string; replica?: number; lsn?: number; term?: number };
        const record = line.kind === undefined ? '' : ` (${line.kind} ${line.replica}:${line.lsn} term ${line.term})`;
        if (life.alive) this.#note(`n${node.id} ${line.msg ?? ''}${record}${line.err === undefined ? '' : `: ${line.err}`}`);
        done();
      },
    }));
    const driver = new NodeDriver<SimSession, readonly Put[]>({
      config: this.#config(node), log, clock, journal,
      db: new SimDatabase(node.pg, CLUSTER, clock.sleep, () => this.#scheduler.now, rng, life, 0.02, this.#bugs),
      transport: this.#network.transport(node.id, this.#nodes.filter((n) => n !== node).map((n) => n.id), life, node.disk),
      seed: rng.fork(), bugs: this.#bugs,
      onFatal: (what, error) => this.#fail(`node ${node.id}: ${what} failed: ${(error as Error).message}`),
    });
    node.driver = driver;
    this.#note(`n${node.id} starts (term ${journal.raft?.term ?? 0})`);
    const told = this.#told.get(node.id);
    const raft = journal.raft ?? { term: 0, vote: 0 };
    if (told !== undefined && (raft.term < told.term || (raft.term === told.term && told.vote !== 0 && raft.vote !== told.vote))) {
      this.#fail(`node ${node.id} restarted with term ${raft.term} vote ${raft.vote}, but before the crash it had sent term ${told.term}${told.vote === 0 ? '' : ` and a vote for ${told.vote}`}: the RAFT record was not durable first`);
    }
    driver.start().catch((error: unknown) => {
      if (life.alive) this.#fail(`node ${node.id} failed to start: ${(error as Error).message}`);
    });
  }

  #crash(node: SimNode, downMs: number): void {
    if (!node.life.alive) return;
    node.life.alive = false;
    const lost = node.journal?.crash() ?? 0;
    this.#network.crashed(node.id);
    node.driver = null;
    node.journal = null;
    node.restartAt = this.#scheduler.now + downMs;
    this.#crashes += 1;
    this.#note(`n${node.id} crashes (${lost} unsynced journal writes lost); back in ${Math.round(downMs)} ms`);
    this.#scheduler.after(downMs, () => {
      if (node.restartAt !== null && !node.life.alive) this.#start(node);
    });
  }

  // ---- faults --------------------------------------------------------------------

  #faults(untilMs: number): void {
    const ids = this.#nodes.map((n) => n.id);
    const step = (): void => {
      if (this.#scheduler.now >= untilMs) return;
      const roll = this.#rng.next();
      if (roll < 0.25) {
        const victim = this.#rng.pick(this.#nodes);
        this.#crash(victim, this.#rng.range(50, 3_000));
      } else if (roll < 0.45) {
        const alone = this.#rng.pick(ids);
        this.#cut(ids.filter((i) => i !== alone).flatMap((i) => [[alone, i], [i, alone]] as Array<[number, number]>), `n${alone} isolated`);
      } else if (roll < 0.55) {
        const from = this.#rng.pick(ids);
        const to = this.#rng.pick(ids.filter((i) => i !== from));
        this.#cut([[from, to]], `asymmetric: n${from} cannot reach n${to}`);
      } else if (roll < 0.65) {
        const shuffled = [...ids].sort(() => this.#rng.next() - 0.5);
        const minority = shuffled.slice(0, Math.floor(ids.length / 2));
        const majority = shuffled.slice(Math.floor(ids.length / 2));
        this.#cut(minority.flatMap((a) => majority.flatMap((b) => [[a, b], [b, a]] as Array<[number, number]>)), `split: [${minority.join(',')}] | [${majority.join(',')}]`);
      } else if (roll < 0.72 && ids.length === 5) {
        // Majorities ring: each node reaches only its two neighbours; every majority overlaps, none is whole.
        const cut = ids.flatMap((a, i) => ids.filter((_, j) => Math.abs(i - j) === 2 || Math.abs(i - j) === 3).map((b) => [a, b] as [number, number]));
        this.#cut(cut, 'majorities ring');
      } else if (roll < 0.78) {
        // An operator's promote: a forced campaign, past stickiness (a switchover, a drill).
        const node = this.#rng.pick(this.#nodes);
        if (node.driver !== null) {
          this.#note(`operator: promote n${node.id}`);
          node.driver.promote().catch(() => undefined);
        }
      } else if (roll < 0.85) {
        this.#cut([], 'healed');
      } else if (roll < 0.88 && this.#removals < (ids.length === 5 ? 2 : 1)) {
        // An operator removes a node that is not the leader (RFC 0010), under whatever faults are on: once a run,
        // twice with 5 nodes (5 -> 4 -> 3 changes the quorum from 3 to 2).
        const leader = this.#nodes.find((n) => n.driver?.isLeader === true);
        const members = leader?.driver?.membership.members.map((m) => m.replica as number) ?? [];
        const victim = this.#rng.pick(this.#nodes.filter((n) => n !== leader && members.includes(n.id)));
        if (leader !== undefined && leader.driver !== null) {
          this.#removals += 1;
          this.#note(`operator: remove n${victim.id} (asked of n${leader.id})`);
          leader.driver.changeMembers({ kind: 'remove', replica: victim.id as ReplicaId }).then(
            ({ membership }) => this.#note(`n${victim.id} removed: members ${membership.members.map((m) => m.replica).join(',')}, quorum ${membership.quorum}`),
            (error: unknown) => {
              this.#note(`removing n${victim.id} failed: ${(error as Error).message}`);
              // Refused before anything was written: another try may come.
              if ((error as { code?: string }).code === 'NOT_LEADER' || (error as { code?: string }).code === 'BAD_REQUEST') this.#removals -= 1;
            },
          );
        }
      } else if (roll < 0.92) {
        // PostgreSQL alone: the sidecar stays up and must make it agree with the journal again.
        const victim = this.#rng.pick(this.#nodes);
        const downMs = this.#rng.range(50, 3_000);
        const lost = victim.pg.crash(this.#rng.int(0, victim.pg.unflushed), this.#scheduler.now + downMs);
        this.#pgCrashes += 1;
        this.#note(`n${victim.id}'s PostgreSQL crashes (${lost} unflushed commits lost); back in ${Math.round(downMs)} ms`);
      } else if (roll >= 0.96) {
        // One backend dies alone (pg_terminate_backend): the leader's next client session, at one of its steps
        // (BEGIN and the statements, capture, PREPARE or COMMIT, PREPARE's answer), and everything else goes on.
        // Chosen from the roll, not from a new draw of the random stream, which every seed's schedule depends on.
        const leader = this.#nodes.find((n) => n.driver?.isLeader === true);
        if (leader !== undefined) {
          leader.pg.killArmed = 1 + (Math.floor(roll * 1e6) % 4);
          this.#note(`n${leader.id}'s PostgreSQL will terminate its next client session alone, at step ${leader.pg.killArmed}`);
        }
      } else {
        // Let it run without a new fault.
      }
      this.#scheduler.after(this.#rng.range(200, 2_000), step);
    };
    this.#scheduler.after(this.#rng.range(500, 1_500), step);
  }

  /** PostgreSQL's WAL writer: what was committed without a flush reaches the disk within 200 ms. */
  #walWriter(): void {
    this.#scheduler.after(200, () => {
      for (const node of this.#nodes) node.pg.flush();
      this.#walWriter();
    });
  }

  #cut(blocked: Array<[number, number]>, what: string): void {
    this.#network.partition(blocked);
    this.#note(`network: ${what}`);
  }

  #heal(): void {
    this.#cut([], 'healed for the liveness phase');
    for (const node of this.#nodes) if (!node.life.alive) this.#start(node);
  }

  // ---- clients -------------------------------------------------------------------

  #client(client: number): void {
    const loop = (): void => {
      if (!this.#clientsOn) return;
      const roll = this.#rng.next();
      if (roll < 0.7) this.#syncWrite(client, null).finally(() => this.#scheduler.after(this.#rng.range(1, 80), loop));
      else if (roll < 0.9) this.#asyncWrite().finally(() => this.#scheduler.after(this.#rng.range(1, 80), loop));
      else {
        this.#read();
        this.#scheduler.after(this.#rng.range(1, 80), loop);
      }
    };
    this.#scheduler.after(this.#rng.range(0, 100), loop);
  }

  /** A node to send a write to: mostly one that believes it leads. */
  #target(): SimNode | null {
    const live = this.#nodes.filter((n) => n.driver !== null);
    if (live.length === 0) return null;
    const leaders = live.filter((n) => n.driver?.election.role === 'leader');
    return leaders.length > 0 && this.#rng.chance(0.85) ? this.#rng.pick(leaders) : this.#rng.pick(live);
  }

  /** Resolves with the client's answer, or 'timeout' when none came in time (the node died, or is cut off). */
  #call(node: SimNode, puts: readonly Put[], key: string): Promise<'ok' | QsyncError | 'timeout'> {
    const driver = node.driver as NodeDriver<SimSession, readonly Put[]>;
    return new Promise((resolve) => {
      let done = false;
      this.#scheduler.after(CLIENT_TIMEOUT_MS, () => {
        if (!done) resolve('timeout');
        done = true;
      });
      driver.write({ client: 0 }, key, null, puts).then(() => {
        if (!done) resolve('ok');
        done = true;
      }, (error: unknown) => {
        if (!(error instanceof QsyncError) && !(error instanceof Error && 'code' in error)) {
          this.#fail(`a write failed with an untyped error: ${(error as Error).stack ?? String(error)}`);
        }
        if (!done) resolve(error instanceof QsyncError ? error : new QsyncError('PG_ERROR', (error as Error).message));
        done = true;
      });
    });
  }

  async #syncWrite(client: number, onto: SimNode | null, sharedKey?: string): Promise<boolean> {
    const node = onto ?? this.#target();
    if (node === null) return false;
    const value = `w${++this.#writes}`;
    this.#status.set(value, 'pending');
    // Every third sync write also writes a shared key of the async table, as a transaction that touches both does:
    // last-writer-wins judges that change too on every node (core/lww.ts). Chosen by count, not drawn: the seeds'
    // draws stay the same.
    const mixed = this.#writes % 3 === 0 ? [{ table: 'a' as const, key: `k${this.#writes % 5}`, value }] : [];
    // Held open, every other one also writes a shared key of the sync table: writes wait on each other's
    // row locks, which is what a held write's lost session must not let another take unchecked (RFC 0027).
    const shared = sharedKey !== undefined ? [{ table: 's' as const, key: sharedKey, value }]
      : this.#hold === 'open' && this.#writes % 2 === 0 ? [{ table: 's' as const, key: `x${this.#writes % 3}`, value }] : [];
    const answer = await this.#call(node, [{ table: 's', key: value, value }, ...shared, ...mixed], value);
    if (answer === 'ok') {
      this.#status.set(value, 'acked');
      this.#syncAcked.add(value);
      if (this.#decided.get(value) === 'rolled-back') this.#fail(`${value} was acknowledged, but a node had rolled it back`);
      return true;
    }
    if (answer === 'timeout' || answer.code === 'OUTCOME_UNKNOWN') {
      this.#status.set(value, 'unknown');
      return false;
    }
    if (answer.code === 'ROLLED_BACK') {
      this.#status.set(value, 'rolled-back');
      this.#note(`client ${client}: ${value} on n${node.id} rolled back`);
      if (this.#decided.get(value) === 'committed') this.#fail(`${value} was answered RolledBack, but a node had committed it`);
      return false;
    }
    // Refused before anything was written (not the leader, stale term, a full limbo): it must never appear.
    this.#status.set(value, 'refused');
    if (this.#decided.get(value) === 'committed') this.#fail(`${value} was refused (${answer.code}), but a node had committed it`);
    return false;
  }

  async #asyncWrite(): Promise<void> {
    const node = this.#target();
    if (node === null) return;
    const value = `a${++this.#writes}`;
    // Shared keys exercise last-writer-wins; a key of its own shows a write lost on one node.
    const key = this.#rng.chance(0.5) ? `k${this.#rng.int(0, 4)}` : value;
    const answer = await this.#call(node, [{ table: 'a', key, value }], value);
    if (answer === 'ok' && key === value) {
      this.#asyncAcked.add(value);
      // Read your own write: an async write is acknowledged once it committed on the node that took it.
      if (node.pg.rows.get(`a:${value}`)?.value !== value) this.#fail(`async write ${value} was acknowledged by n${node.id} before its PostgreSQL held it`);
    }
  }

  /** A read on a live node: every sync row visible must be one no client was told is rolled back. */
  #read(): void {
    const node = this.#rng.pick(this.#nodes);
    for (const [key, row] of node.pg.rows) {
      if (!key.startsWith('s:')) continue;
      const status = this.#status.get(row.value);
      if (status === 'rolled-back' || status === 'refused') this.#fail(`a read on n${node.id} sees ${row.value}, which its client was told is ${status}`);
    }
  }

  /**
   * A linearizable read (driver.readIndex, then the rows of that node's
   * PostgreSQL): it must see every sync write acknowledged before it was
   * sent. Refused, or on a PostgreSQL that is down, it reads nothing.
   */
  async #linearizableRead(node: SimNode): Promise<boolean> {
    const driver = node.driver;
    if (driver === null) return false;
    const before = [...this.#syncAcked];
    const term = driver.election.term;
    const allowed = await new Promise<boolean>((resolve) => {
      this.#scheduler.after(CLIENT_TIMEOUT_MS, () => resolve(false));
      driver.readIndex().then(() => resolve(true), (error: unknown) => {
        if (!(error instanceof QsyncError)) this.#fail(`a read index failed with an untyped error: ${(error as Error).stack ?? String(error)}`);
        resolve(false);
      });
    });
    if (!allowed || node.driver !== driver || this.#scheduler.now < node.pg.downUntil) return false;
    this.#readsServed += 1;
    const missing = before.filter((value) => node.pg.rows.get(`s:${value}`)?.value !== value);
    if (missing.length > 0) this.#fail(`a linearizable read on n${node.id} (term ${term}) misses ${missing.length} write(s) acknowledged before it was sent, first ${missing[0]}`);
    return true;
  }

  // ---- invariants ------------------------------------------------------------------

  #sent(from: number, to: number, message: ElectionMessage): void {
    // What a message tells its receiver is durable on the sender (DESIGN.md §6): its term, and a vote it grants.
    const pre = (message.type === 'vote' || message.type === 'voteReply') && message.pre;
    if (!pre) {
      const told = this.#told.get(from) ?? { term: 0, vote: 0 };
      if (message.term > told.term) this.#told.set(from, { term: message.term, vote: 0 });
    }
    if (message.type !== 'voteReply' || !message.granted || message.pre) return;
    this.#told.set(from, { term: message.term, vote: to });
    const key = `${from}:${message.term}`;
    const candidate = to;
    const earlier = this.#votes.get(key);
    if (earlier !== undefined && earlier !== candidate) this.#fail(`node ${from} voted twice in term ${message.term}: for ${earlier} and for ${candidate}`);
    this.#votes.set(key, candidate);
    // Crash at an interesting moment: right after a vote left, while the safety phase lasts.
    const voter = this.#nodes[from - 1] as SimNode;
    if (this.#clientsOn && this.#scheduler.now < this.#faultUntil && this.#rng.chance(0.2)) {
      this.#scheduler.after(this.#rng.range(0, 1), () => this.#crash(voter, this.#rng.range(10, 500)));
    }
  }

  /** SIM_WATCH names this write or gid: its PostgreSQL decisions go in the trace. */
  #watched(gid: string, puts: readonly Put[]): boolean {
    const watch = process.env.SIM_WATCH;
    return watch !== undefined && (gid.endsWith(watch) || puts.some((p) => p.value === watch));
  }

  #pgDecided(node: number, verdict: 'committed' | 'rolled-back', gid: string, puts: readonly Put[]): void {
    if (this.#watched(gid, puts)) this.#note(`n${node} ${verdict} ${gid} ${puts.map((p) => p.value).join(",")}`);
    const [replica, lsn] = gid.split(':').slice(-2).map(Number);
    const holds = (n: SimNode): boolean => n.disk.records.some((r) => r.kind === 'txn' && r.replica === replica && r.lsn === lsn && r.changes.length > 0);
    // Recovery rolls back a prepared transaction its journal lost (it was applied before the journal
    // write was durable, and the crash took the write): not a decision, the peer sends it again.
    if (verdict === 'rolled-back' && !holds(this.#nodes[node - 1] as SimNode)) return;
    for (const put of puts) {
      if (put.table !== 's') continue;
      // A node may roll back an entry that a later PROMOTE confirms (the ROLLBACK was void) and apply it
      // again from its journal: that is allowed, for no client was told either way. Convergence at the
      // end checks that every node ends in the same state.
      if (verdict === 'committed' || this.#decided.get(put.value) === undefined) this.#decided.set(put.value, verdict);
      const status = this.#status.get(put.value);
      if (verdict === 'rolled-back' && status === 'acked') this.#fail(`acknowledged write ${put.value} (${gid}) was rolled back on node ${node}`);
      if (verdict === 'committed' && (status === 'rolled-back' || status === 'refused')) this.#fail(`${put.value} (${gid}) was committed on node ${node}, but its client was told ${status}`);
    }
    if (verdict === 'committed' && puts.some((p) => p.table === 's')) {
      // Commit only what every quorum holds a copy of: count the journals whose disk has this TXN with its
      // changes. With static members that is a quorum of them. After a membership change (RFC 0010) an entry
      // confirmed by a quorum of the members before it may be held by fewer of the members after it, yet by
      // one of every quorum of them: the members and quorum in effect as the entry's writer (or this node) sees them.
      const view = ((this.#nodes[(replica as number) - 1] as SimNode).driver ?? (this.#nodes[node - 1] as SimNode).driver)?.membership;
      const members = view?.members.map((m) => m.replica as number) ?? this.#nodes.map((n) => n.id);
      const quorum = view?.quorum ?? this.#quorum;
      const holders = this.#nodes.filter((n) => members.includes(n.id) && holds(n)).length;
      if (holders + quorum <= members.length) this.#fail(`node ${node} committed ${gid} while only ${holders} journal(s) of members ${members.join(',')} held it durably: a quorum of ${quorum} without it could elect a leader`);
    }
  }

  #check(): void {
    for (const node of this.#nodes) {
      const election = node.driver?.election;
      if (election === undefined || election.role !== 'leader') continue;
      const leader = this.#leaders.get(election.term);
      if (leader === undefined) {
        this.#leaders.set(election.term, node.id);
        this.#note(`n${node.id} leads term ${election.term}`);
      } else if (leader !== node.id) {
        this.#fail(`two leaders in term ${election.term}: ${leader} and ${node.id}`);
      }
    }
  }

  /** With every node up and the network whole, a leader appears and takes a sync write. */
  async #liveness(): Promise<void> {
    const deadline = this.#scheduler.now + 20 * ELECTION_TIMEOUT_MS;
    let ok = false;
    while (!ok && this.#scheduler.now < deadline) {
      const leader = this.#nodes.find((n) => n.driver?.isLeader === true);
      if (leader !== undefined) {
        const probe = this.#syncWrite(0, leader).then((acked) => (ok = acked));
        await this.#runUntil(this.#scheduler.now + CLIENT_TIMEOUT_MS + 10);
        await probe;
      } else {
        await this.#runUntil(this.#scheduler.now + 100);
      }
    }
    if (!ok) this.#fail(`liveness: no sync write succeeded within ${20 * ELECTION_TIMEOUT_MS} ms of a healthy cluster (leaders: ${this.#nodes.map((n) => `n${n.id}=${n.driver?.election.role ?? 'down'}/${n.driver?.election.term ?? '-'}`).join(' ')})`);
    if (this.#violation !== null) throw new Violation(this.#violation);
  }

  /**
   * With the leader and one follower cut apart (each hears the other only
   * through a third node, as in a ring of majorities), the follower still
   * gets every record the leader writes, a relay delay late (within
   * RELAYED_WITHIN_MS, which leaves room for gaps to heal): a relay that
   * drops a third node's records instead of sending them late fails here.
   */
  async #relayed(): Promise<void> {
    const leader = this.#nodes.find((n) => n.driver?.isLeader === true);
    // A member subscribes only to members (RFC 0010): a removed node relays to none, so a cut needs a third member.
    const members = leader?.driver?.membership.members.map((m) => m.replica as number) ?? [];
    const live = this.#nodes.filter((n) => n !== leader && members.includes(n.id) && n.driver !== null && n.life.alive);
    const [cut] = live;
    if (leader === undefined || cut === undefined || live.length < 2) return;
    this.#network.partition([[leader.id, cut.id], [cut.id, leader.id]]);
    this.#note(`network: n${leader.id} and n${cut.id} cut apart, to check relays`);
    const writes = [0, 1, 2].map(() => this.#syncWrite(0, leader));
    await this.#runUntil(this.#scheduler.now + CLIENT_TIMEOUT_MS + 10);
    await Promise.all(writes);
    const written = leader.disk.records.filter((r) => r.replica === leader.id);
    // Long enough for links closed by the relays' simulated gaps to subscribe again, more than once.
    await this.#runUntil(this.#scheduler.now + RELAYED_WITHIN_MS);
    const missing = written.filter((w) => !cut.disk.records.some((r) => r.replica === w.replica && r.lsn === w.lsn));
    if (missing.length > 0) this.#fail(`node ${cut.id}, cut from leader ${leader.id} but linked to the others, lacks ${missing.length} of its records after ${RELAYED_WITHIN_MS / 1000} s (first ${missing[0]?.replica}:${missing[0]?.lsn}): nothing relayed them`);
    if (this.#violation !== null) throw new Violation(this.#violation);
    this.#heal();
  }

  /**
   * Linearizable reads where a read index is easiest to get wrong, then one
   * on a healthy cluster, which must be served. Each read must see every
   * sync write acknowledged before it was sent, or be refused.
   */
  async #linearizableReads(): Promise<void> {
    await this.#readOnDeposed();
    this.#heal();
    await this.#readOnWinner();
    this.#heal();
    let served = false;
    const deadline = this.#scheduler.now + 20 * ELECTION_TIMEOUT_MS;
    while (!served && this.#scheduler.now < deadline) {
      const leader = this.#nodes.find((n) => n.driver?.isLeader === true);
      if (leader === undefined) {
        await this.#runUntil(this.#scheduler.now + 100);
        continue;
      }
      const probe = this.#linearizableRead(leader).then((ok) => (served = ok));
      await this.#runUntil(this.#scheduler.now + CLIENT_TIMEOUT_MS + 10);
      await probe;
    }
    if (!served) this.#fail(`liveness: no linearizable read was served within ${20 * ELECTION_TIMEOUT_MS} ms of a healthy cluster`);
    if (this.#violation !== null) throw new Violation(this.#violation);
  }

  /**
   * The leader's PostgreSQL prepares a write and crashes before it answers,
   * while other writes go on around it: the client hears a failure, so what
   * PostgreSQL holds under that gid must be rolled back, never committed
   * (not even once a CONFIRM covers its lsn), and the gid never reused.
   */
  async #prepareAnswerLost(): Promise<void> {
    await this.#until(() => this.#nodes.some((n) => n.driver?.isLeader === true), 10 * ELECTION_TIMEOUT_MS);
    const leader = this.#nodes.find((n) => n.driver?.isLeader === true);
    if (leader === undefined) return;
    leader.pg.crashAfterPrepareUntil = this.#scheduler.now + this.#rng.range(20, 200);
    this.#note(`n${leader.id}'s PostgreSQL will crash after its next PREPARE, before it answers`);
    const writes = Array.from({ length: 6 }, (_, i) => new Promise<void>((resolve) => this.#scheduler.after(i * 2, () => void this.#syncWrite(0, leader).finally(resolve))));
    await this.#runUntil(this.#scheduler.now + CLIENT_TIMEOUT_MS + 10);
    await Promise.all(writes);
    // More writes wherever the leader is now, so that CONFIRMs pass the lost PREPARE's lsn.
    await this.#until(() => this.#nodes.some((n) => n.driver?.isLeader === true), 10 * ELECTION_TIMEOUT_MS);
    const after = this.#nodes.find((n) => n.driver?.isLeader === true);
    if (after === undefined) return;
    const more = [0, 1, 2].map(() => this.#syncWrite(0, after));
    await this.#runUntil(this.#scheduler.now + CLIENT_TIMEOUT_MS + 10);
    await Promise.all(more);
    if (this.#violation !== null) throw new Violation(this.#violation);
  }

  /**
   * Held open (RFC 0027): a write E holds row `key` open for its quorum; a
   * second write F waits for that row, and E's session is terminated while F
   * waits (pg_terminate_backend), so F gets the row at once; with `third`, a
   * write G follows F on the same row. Whatever E's verdict, every node must
   * end with the same row: F and G must not commit over a row that E's
   * re-apply from the journal then overwrites on the leader alone. (G would
   * hide F's divergence by writing the row again everywhere: each case has a
   * row of its own.)
   */
  async #heldSessionKilled(key: string, third: boolean): Promise<void> {
    if (this.#hold !== 'open') return;
    await this.#until(() => this.#nodes.some((n) => n.driver?.isLeader === true), 10 * ELECTION_TIMEOUT_MS);
    const leader = this.#nodes.find((n) => n.driver?.isLeader === true);
    if (leader === undefined) return;
    const e = this.#syncWrite(0, leader, key);
    await this.#runUntil(this.#scheduler.now + 0.5);
    leader.pg.killArmed = 3;
    this.#note(`n${leader.id}'s PostgreSQL will terminate the session of a held write that another write waits on`);
    const fg = this.#syncWrite(0, leader, key).then(() => (third ? this.#syncWrite(0, leader, key) : false));
    await this.#runUntil(this.#scheduler.now + 2 * CLIENT_TIMEOUT_MS + 10);
    await Promise.all([e, fg]);
    if (this.#violation !== null) throw new Violation(this.#violation);
  }

  /** Run until `done`, or for `ms`. */
  async #until(done: () => boolean, ms: number): Promise<void> {
    const deadline = this.#scheduler.now + ms;
    while (!done() && this.#scheduler.now < deadline) await this.#runUntil(this.#scheduler.now + 1);
  }

  #othersOf(leader: SimNode): SimNode[] {
    const members = leader.driver?.membership.members.map((m) => m.replica as number) ?? [];
    return this.#nodes.filter((n) => n !== leader && n.driver !== null && members.includes(n.id));
  }

  /** An operator's promote of a node other than `leader`: at random, or the one that holds most of its records. */
  #promoteOther(leader: SimNode, ahead: boolean): SimNode | null {
    const others = this.#othersOf(leader);
    if (others.length === 0) return null;
    const held = (n: SimNode): number => vclockGet(n.journal?.vclock ?? [], leader.id as ReplicaId);
    const other = ahead ? others.reduce((a, b) => (held(b) > held(a) ? b : a)) : this.#rng.pick(others);
    this.#note(`operator: promote n${other.id} (read index phase)`);
    other.driver?.promote().catch(() => undefined);
    return other;
  }

  /**
   * A leader cut off from every peer after another node was promoted and
   * acknowledged a write: it believes it leads until its check-quorum
   * notices, but no quorum can confirm it.
   */
  async #readOnDeposed(): Promise<void> {
    await this.#until(() => this.#nodes.some((n) => n.driver?.isLeader === true), 10 * ELECTION_TIMEOUT_MS);
    const old = this.#nodes.find((n) => n.driver?.isLeader === true);
    if (old === undefined) return;
    // Followers that hold all the leader wrote win a forced election at once.
    const own = (): VClock => vclockFromEntries([[old.id as ReplicaId, vclockGet(old.journal?.vclock ?? [], old.id as ReplicaId)]]);
    await this.#until(() => this.#othersOf(old).every((n) => vclockCovers(n.journal?.vclock ?? [], own())), ELECTION_TIMEOUT_MS);
    this.#cut(this.#nodes.filter((n) => n !== old).flatMap((n) => [[old.id, n.id], [n.id, old.id]] as Array<[number, number]>), `n${old.id} isolated (read index phase)`);
    const next = this.#promoteOther(old, false);
    if (next === null) return;
    await this.#until(() => next.driver?.isLeader === true, 3 * ELECTION_TIMEOUT_MS);
    let written = false;
    const write = this.#syncWrite(0, next).finally(() => (written = true));
    await this.#until(() => written, CLIENT_TIMEOUT_MS + 10);
    await write;
    if (old.driver?.election.role !== 'leader') return;
    const read = this.#linearizableRead(old);
    await this.#runUntil(this.#scheduler.now + CLIENT_TIMEOUT_MS + 10);
    await read;
  }

  /**
   * A node the moment it wins an election forced right after a burst of
   * acknowledged writes, before its PROMOTE and the entries it keeps are
   * applied, and whose PostgreSQL then crashes and loses what it applied
   * without a flush.
   */
  async #readOnWinner(): Promise<void> {
    await this.#until(() => this.#nodes.some((n) => n.driver?.isLeader === true), 10 * ELECTION_TIMEOUT_MS);
    const leader = this.#nodes.find((n) => n.driver?.isLeader === true);
    if (leader === undefined) return;
    // Every journal alike first, so that the promoted node is behind no voter but on the burst's own records.
    const alike = (): boolean => {
      const live = this.#nodes.filter((n) => n.driver !== null);
      return this.#nodes.every((r) => live.every((n) => vclockGet(n.journal?.vclock ?? [], r.id as ReplicaId) === vclockGet(leader.journal?.vclock ?? [], r.id as ReplicaId)));
    };
    await this.#until(alike, 2 * ELECTION_TIMEOUT_MS);
    const burst = [0, 1, 2, 3, 4].map(() => this.#syncWrite(0, leader));
    let settled = 0;
    for (const w of burst) void w.finally(() => (settled += 1));
    // At once, before the followers hear every CONFIRM.
    await this.#until(() => settled === burst.length, CLIENT_TIMEOUT_MS);
    const term = leader.driver?.election.term ?? 0;
    if (this.#promoteOther(leader, true) === null) return;
    // Whoever wins (a voter ahead of the promoted node elects another): read there the moment it leads.
    const winner = (): SimNode | undefined => this.#nodes.find((n) => n.driver?.election.role === 'leader' && n.driver.election.term > term);
    await this.#until(() => winner() !== undefined, 3 * ELECTION_TIMEOUT_MS);
    const won = winner();
    if (won === undefined) return;
    const lost = won.pg.crash(won.pg.unflushed, this.#scheduler.now + 2);
    this.#pgCrashes += 1;
    this.#note(`n${won.id}'s PostgreSQL crashes as it wins (${lost} unflushed commits lost); back in 2 ms`);
    const read = this.#linearizableRead(won);
    await this.#runUntil(this.#scheduler.now + CLIENT_TIMEOUT_MS + 10);
    await read;
  }

  /** After quiescing: the same rows everywhere, every acknowledged write on every node, no limbo left. */
  #converged(): void {
    const rowsOf = (node: SimNode): string => [...node.pg.rows].map(([k, r]) => `${k}=${r.value}`).sort().join(' ');
    const first = this.#nodes[0] as SimNode;
    for (const node of this.#nodes) {
      for (const [value, status] of this.#status) {
        if (status === 'acked' && node.pg.rows.get(`s:${value}`)?.value !== value) this.#fail(`acknowledged write ${value} is missing on node ${node.id}`);
      }
      for (const value of this.#asyncAcked) {
        if (node.pg.rows.get(`a:${value}`)?.value !== value) this.#fail(`acknowledged async write ${value} is missing on node ${node.id}`);
      }
      if (node.pg.prepared.size > 0) this.#fail(`node ${node.id} still holds prepared transactions after quiescing: ${[...node.pg.prepared.keys()].slice(0, 5).join(', ')}`);
      if (node.pg.openXacts > 0) this.#fail(`node ${node.id} still holds ${node.pg.openXacts} transaction(s) open after quiescing`);
      if (node !== first && rowsOf(node) !== rowsOf(first)) {
        const a = new Set(rowsOf(first).split(' '));
        const b = new Set(rowsOf(node).split(' '));
        const diff = [...[...a].filter((x) => !b.has(x)).map((x) => `-${x}`), ...[...b].filter((x) => !a.has(x)).map((x) => `+${x}`)].slice(0, 8);
        this.#fail(`node ${node.id} did not converge with node ${first.id}: ${diff.join(' ')}`);
      }
    }
    if (this.#violation !== null) throw new Violation(this.#violation);
  }
}

