// What the node's duties share: its ports (clock, journal, PostgreSQL,
// network), its state, and the small helpers every duty uses. The duties are
// modules of their own, each writing the state it owns:
//
//   driver.ts       start and stop, the node's public face       stopping, recovered (at start)
//   intake.ts       records from peers, acknowledgements          splitBrainRecords, hybrid (seen)
//   apply.ts        the apply queue: journal order to PostgreSQL  promoted
//   recovery.ts     PostgreSQL against the journal                history, exactTo (at start), replayOwn, resyncPending
//   leadership.ts   election, PROMOTE, transfer, qsync.node       election, peerVclocks, peerHeardAt
//   own-limbo.ts    this leader's limbo and its decisions         waiters, limbo (through Leadership's calls)
//   members.ts      membership changes                            (its own fields)
//   rejoin.ts       snapshots, joining                            history, exactTo (after a snapshot), rejoin
//   retention.ts    journal trims                                 exactTo (cleared)
//   writes.ts       the leader's write path                       (its own fields)
//   held.ts         sync writes held open (RFC 0027)              (its own fields)
//
// Shared by several writers, each named where the field is declared. Every
// other field of a duty is private to it.
import { AssertionFailed } from '../core/assert.js';
import { NO_REPLICA, type ElectionState } from '../core/election.js';
import { QsyncError } from '../core/errors.js';
import type { LimboHistory, RevivedRange } from '../core/history.js';
import type { LimboEvent } from '../core/limbo.js';
import type { ElectionEvent } from '../core/election.js';
import { ApplyQueue } from '../core/apply-queue.js';
import { limits } from '../core/limits.js';
import type { Membership } from '../core/membership.js';
import type { JournalRecord, Member, TxnRecord } from '../core/record.js';
import type { ReplicaId, Term, Lsn } from '../core/types.js';
import { vclockFromEntries, vclockMerge, type VClock } from '../core/vclock.js';
import type { Logger } from '../log.js';
import type { SidecarConfig } from './config.js';
import type { Clock, Database, HeldSession, JournalStore, NodeEvent, NodeObserver, PlantedBugs, Transport } from './io.js';
import type { OwnLog } from './own-log.js';
import { UnfitRecords } from './unfit.js';

export interface Waiter {
  readonly resolve: () => void;
  readonly reject: (error: QsyncError) => void;
}

// ---- what each duty offers the others: the calls between duties, all of them ----

/** intake.ts */
export interface IntakeDuty {
  readonly splitBrainRecords: number;
  acknowledged(): VClock;
  liftUnfit(): void;
  recheckUnfit(force: boolean): Promise<void>;
}

/** apply.ts */
export interface ApplyDuty {
  readonly promoted: { readonly committed: number; readonly rolledBack: number };
  /** Chain a drain of the apply queue on the apply connection. */
  kick(): void;
  applyUntilDone(record: JournalRecord): Promise<void>;
}

/** recovery.ts */
export interface RecoveryDuty {
  replay(): Promise<number>;
  resyncIfLost(): Promise<boolean>;
  revive(ranges: readonly RevivedRange[]): Promise<void>;
}

/** leadership.ts */
export interface LeadershipDuty {
  readonly writable: boolean;
  readonly promotedTerm: Term | null;
  elect(event: ElectionEvent): void;
  membersChanged(members: ReplicaId[], quorum: number): void;
  stepDown(reason: string): void;
  holding(target: VClock, members: readonly ReplicaId[]): number;
  publish(): Promise<void>;
  settled(): Promise<void>;
  postgresFailed(error: unknown): void;
}

/** own-limbo.ts */
export interface LimboDuty {
  readonly pending: number;
  readonly view: { readonly oldestCreatedAtMs: number | undefined; readonly confirmedLsn: number };
  sentOwnLsn: number;
  open(lsn: Lsn, quorum: number): void;
  abandon(): number;
  step(event: LimboEvent): void;
  ownAppended(record: JournalRecord): void;
  ownDurable(): void;
  preparedOf(owner: ReplicaId, from: number, to: number): string[];
  memberGid(gid: string, held: boolean): void;
  waitFor(gid: string): Promise<void>;
  commitsUnderWay(): Promise<unknown>;
}

/** members.ts */
export interface MembersDuty {
  follow(): void;
}

/** rejoin.ts */
export interface RejoinDuty {
  readonly gap: string | null;
}

/** writes.ts */
export interface WritesDuty {
  readonly beforeLimbo: number;
  readonly ownInFlight: ReadonlySet<Lsn>;
}

/** Where a held write's TXN is applied from when its session is gone: inside the apply queue's turn already, or queued behind it. */
export type FinishPlace = 'in queue' | 'outside';

/** held.ts: sync writes held open, and every decision on this node's own limbo entries. */
export interface HeldDuty {
  readonly size: number;
  readonly lost: number;
  has(gid: string): boolean;
  xids(): string[];
  entriesOf(owner: ReplicaId): Array<{ readonly gid: string; readonly lsn: Lsn }>;
  hold(record: TxnRecord, xid: string, session: HeldSession): Promise<void>;
  unhold(gid: string): void;
  lostAtStart(record: TxnRecord): void;
  releasePrepared(records: readonly TxnRecord[]): void;
  releaseAgain(gids: readonly string[]): void;
  ended(xids: readonly string[]): void;
  stepDown(): void;
  postgresLost(): number;
  stopping(): void;
  whenNoneLost(): Promise<void>;
  finish(verb: 'commit' | 'rollback', gids: readonly string[], place: FinishPlace, each?: (gid: string, finished: boolean) => void): Promise<void>;
  rollbackAll(): Promise<void>;
}

/** read-index.ts */
export interface ReadsDuty {
  sent(seq: number): void;
  answered(from: ReplicaId, term: Term, seq: number): void;
  lost(): void;
}

/** The node's ports, as the driver is given them (node.ts: files, TCP, pg; the simulator: its own). */
export interface NodePorts<S, W> {
  readonly config: SidecarConfig;
  readonly log: Logger;
  readonly clock: Clock;
  readonly journal: JournalStore;
  readonly db: Database<S, W>;
  readonly transport: Transport;
  /** Something the node cannot go on from (a journal write failed): production exits. */
  readonly onFatal: (what: string, error: unknown) => void;
}

interface ContextPorts<S, W> extends NodePorts<S, W> {
  readonly bugs: PlantedBugs;
  readonly observe: NodeObserver;
  /** The members the settings name (version 0). */
  readonly configured: Membership;
  readonly history: LimboHistory;
  readonly election: ElectionState;
}

export class NodeContext<S, W> {
  readonly config: SidecarConfig;
  readonly log: Logger;
  readonly clock: Clock;
  readonly journal: JournalStore;
  readonly db: Database<S, W>;
  readonly transport: Transport;
  readonly bugs: PlantedBugs;
  readonly #observe: NodeObserver;
  readonly #onFatal: (what: string, error: unknown) => void;
  /** The members the settings name (--peers, member.json): version 0, in effect until a change is confirmed. */
  readonly configured: Membership;

  // ---- the duties, each set once by the driver's constructor ----
  own!: OwnLog;
  intake!: IntakeDuty;
  apply!: ApplyDuty;
  recovery!: RecoveryDuty;
  leadership!: LeadershipDuty;
  limbo!: LimboDuty;
  members!: MembersDuty;
  rejoin!: RejoinDuty;
  writes!: WritesDuty;
  reads!: ReadsDuty;
  /** Sync writes held open, and every decision on this node's limbo entries goes through it (held.ts). */
  held!: HeldDuty;

  // ---- shared state ----
  /** Written by leadership.ts only. */
  election: ElectionState;
  /**
   * The limbo's history, fed every record as it is appended (journal order):
   * its owner and term (limbo records of an older term are refused), what it
   * decided about each entry, and this node's withheld records. Replaced by
   * recovery (at start) and rejoin (after a snapshot); fed by intake (peers'
   * records) and own-limbo (this node's).
   */
  history: LimboHistory;
  /** Ranges a PROMOTE revived that the next PROMOTE applied here re-applies: pushed as the history takes records, taken by apply.ts. */
  revived: RevivedRange[] = [];
  /** What each peer is known to hold (acks and heartbeat replies). Written by leadership.ts. */
  readonly peerVclocks = new Map<ReplicaId, VClock>();
  /** When each peer last acknowledged or answered a heartbeat. Written by leadership.ts. */
  readonly peerHeardAt = new Map<ReplicaId, number>();
  /**
   * Journaled records on their way to PostgreSQL, in journal order: a sync
   * TXN waits at the head until the history decides it (RFC 0012). Intake
   * pushes, apply.ts drains, recovery starts it over from PostgreSQL's
   * applied vclock.
   */
  readonly applyQueue = new ApplyQueue(limits.applyQueueBytesMax, []);
  /** Records durable here that this node could not apply when they came: acknowledgements stop before them (unfit.ts). Intake's. */
  readonly unfit = new UnfitRecords();
  /**
   * Serialises everything on the apply connection: the apply queue's steps,
   * resync, snapshot loads, table reads, the write path's schema changes.
   * Each duty that runs there chains onto it.
   */
  queue: Promise<void> = Promise.resolve();
  /** Gids this node holds prepared (its PostgreSQL's limbo): added by recovery and rejoin, removed as each is finished. */
  readonly prepared = new Set<string>();
  /** Clients waiting for the limbo's verdict on a gid: set by the write path and members.ts, settled by own-limbo.ts. */
  readonly waiters = new Map<string, Waiter>();
  /** Set by driver.ts's stop. */
  stopping = false;
  /** Writes wait for this: verdicts read at start must not miss a TXN journaled while they are applied. The driver sets it; a rejoin clears it while it loads. */
  recovered = false;
  /** PostgreSQL went away since it was last checked against the journal: a resync before the next apply. Recovery's. */
  resyncPending = false;
  /** How many times PostgreSQL went away under the running node (retention cuts nothing across one). Recovery's. */
  losses = 0;
  /** This node's own records a replay brings back into the apply queue: lsns in (from, to]. Recovery's. */
  replayOwn = { from: 0, to: 0 };
  /**
   * After a rejoin: records up to here came with the snapshot's applied marks,
   * which have holes (entries the source held prepared, its writes in flight),
   * so each is checked by its own lsn, not by the highest applied. Set by
   * recovery and rejoin, cleared by retention.
   */
  exactTo: VClock = [];
  /** A rejoin by snapshot in progress, from this peer. Rejoin's. */
  rejoining: { readonly peer: ReplicaId } | null = null;
  /** Work the journal decided that keeps failing (an apply, a check of PostgreSQL), for status. untilDone's. */
  retrying: { readonly what: string; readonly error: string } | null = null;
  /** The hybrid clock: never behind any record seen (intake), strictly increasing (now). */
  hybrid = 0;

  constructor(ports: ContextPorts<S, W>) {
    this.config = ports.config;
    this.log = ports.log;
    this.clock = ports.clock;
    this.journal = ports.journal;
    this.db = ports.db;
    this.transport = ports.transport;
    this.bugs = ports.bugs;
    this.#observe = ports.observe;
    this.#onFatal = ports.onFatal;
    this.configured = ports.configured;
    this.history = ports.history;
    this.election = ports.election;
  }

  get self(): ReplicaId {
    return this.config.replicaId as ReplicaId;
  }

  get term(): Term {
    return this.election.term;
  }

  /** The membership in effect: the last confirmed membership record, or the static configuration (version 0). */
  get membership(): Membership {
    return this.history.membership ?? this.configured;
  }

  /** The members' replica ids. */
  get memberIds(): ReplicaId[] {
    return this.membership.members.map((m) => m.replica);
  }

  get quorum(): number {
    return this.membership.quorum;
  }

  /** The other members. */
  get peers(): readonly Member[] {
    return this.membership.members.filter((m) => m.replica !== this.self);
  }

  /** What PostgreSQL holds: everything durable in the journal up to each replica's first record still in the apply queue. */
  get applied(): VClock {
    return this.applyQueue.appliedVclock(this.journal.vclock);
  }

  /**
   * Records checked by their own lsn when applied: a rejoin's (exactTo), and
   * this node's own that a replay brought back, since its later writes commit
   * concurrently with the queue and may already be applied above them
   * (simulator seed 3133).
   */
  get exactApply(): VClock {
    return this.replayOwn.to > 0 ? vclockMerge(this.exactTo, vclockFromEntries([[this.self, this.replayOwn.to as Lsn]])) : this.exactTo;
  }

  /** A hybrid clock: wall time, never behind anything seen, strictly increasing. */
  now(): number {
    this.hybrid = Math.max(this.hybrid + 1, this.clock.nowMs());
    return this.hybrid;
  }

  emit(event: NodeEvent): void {
    try {
      this.#observe(event);
    } catch (error) {
      this.log.error({ err: (error as Error).message, event: event.kind }, 'an observer failed; the node goes on');
    }
  }

  fatal(what: string, error: unknown): void {
    if (this.stopping) return;
    this.log.fatal({ err: (error as Error).message }, `${what} failed; the node cannot go on safely`);
    this.#onFatal(what, error);
  }

  /** Run `work` on the apply connection, in its turn, until it succeeds (untilDone). */
  inQueue<T>(what: string, work: () => Promise<T>, context: Record<string, unknown>): Promise<T> {
    const run = this.queue.then(() => this.untilDone(what, work, context));
    this.queue = run.then(() => undefined, () => undefined);
    return run;
  }

  /**
   * Run idempotent PostgreSQL work until it succeeds, with backoff; an
   * assertion or a stop ends it. `firstFailure` runs once, on the first.
   */
  async untilDone<T>(what: string, work: () => Promise<T>, context: Record<string, unknown>, firstFailure?: (error: unknown) => void): Promise<T> {
    for (let attempt = 1; ; attempt += 1) {
      try {
        const done = await work();
        if (this.retrying?.what === what) this.retrying = null;
        return done;
      } catch (error) {
        if (error instanceof AssertionFailed || this.stopping) throw error;
        if (attempt === 1) firstFailure?.(error);
        if (attempt >= 4) this.retrying = { what, error: (error as Error).message };
        const delayMs = retryDelayMs(attempt);
        this.log[attempt < 4 ? 'info' : 'error']({ ...context, attempt, delayMs, err: (error as Error).message }, `${what} failed; retrying`);
        await this.clock.sleep(delayMs);
      }
    }
  }

  /** Poll until `done` (true) or until `still` stops holding (false). */
  async until(done: () => boolean, still: () => boolean): Promise<boolean> {
    while (still()) {
      if (done()) return true;
      await this.clock.sleep(5);
    }
    return false;
  }

  /** The leader's client address, if a leader is known. */
  leaderAddress(): string | undefined {
    const leader = this.election.leader;
    if (leader === NO_REPLICA) return undefined;
    if (leader === this.self) return `${this.config.clientHost}:${this.config.clientPort}`;
    return this.peers.find((p) => p.replica === leader)?.client;
  }

  leaderName(): string {
    const leader = this.election.leader;
    return leader === NO_REPLICA ? 'the leader (none is known yet: an election is under way)' : `node ${leader}`;
  }

  notLeader(code: 'NOT_LEADER' | 'STALE_TERM', message: string): QsyncError {
    const leader = this.leaderAddress();
    return new QsyncError(code, message, { term: this.term, ...(leader === undefined ? {} : { leader }) });
  }
}

/** Backoff between retries of work the journal already decided (apply, COMMIT/ROLLBACK PREPARED): 20 ms doubling to 1 s. */
function retryDelayMs(attempt: number): number {
  return Math.min(1_000, 10 * 2 ** Math.min(attempt, 9));
}
