// The node driver: the sidecar's logic above the I/O shells, the same code in
// production (node.ts gives it files, TCP and PostgreSQL) and in the
// simulator (test/sim gives it a simulated clock, network, journal store and
// PostgreSQL, all driven by one seed). It wires the pure core (election,
// limbo, history) to those interfaces (io.ts) and is the only place that
// awaits them.
//
// Start: recover (reconcile prepared transactions with the journal's
// verdicts; replay what the journal holds beyond PostgreSQL's applied
// vclock); then serve, as a follower until elected. When PostgreSQL alone
// crashes or restarts, the same is done again once it is back (#resync).
//
// Records from peers, in arrival order: drop what the journal already holds,
// refuse a gap, take a limbo record of an older term without effect
// (split-brain), append; once durable and checked against this node's tables
// they are acknowledged and join the apply queue, which brings them to
// PostgreSQL in journal order, a sync TXN once the limbo decided it
// (docs/rfc/0012-followers-hold-the-limbo.md).
//
// Writes: the leader's write path is writes.ts, which runs the order of
// duties in leader-write.ts; the driver gives it the limbo's answers
// (waitFor) and its apply queue (inQueue).
//
// Leadership (DESIGN.md §6): the election core decides who leads; the winner
// waits until a quorum holds its journal, writes PROMOTE, and accepts sync
// writes only once a quorum holds the PROMOTE too (`#writable`). Losing
// leadership stops writes at once; PostgreSQL's fence follows qsync.node.
import { ApplyQueue, type StepBounds } from '../core/apply-queue.js';
import { AssertionFailed } from '../core/assert.js';
import { electionCreate, electionStep, NO_REPLICA, type ElectionEvent, type ElectionState } from '../core/election.js';
import { QsyncError, RecordInvalid } from '../core/errors.js';
import { parseGid } from '../core/gid.js';
import { historyStateParse, LimboHistory, type HistoryState, type RevivedRange } from '../core/history.js';
import { limboCreate, limboStep, type LimboAction, type LimboEvent, type LimboState } from '../core/limbo.js';
import { limits } from '../core/limits.js';
import { membershipChange, membershipSettled, type Membership, type MembershipChange } from '../core/membership.js';
import type { ConfigRecord, JournalRecord, Member, TableMode, TxnRecord } from '../core/record.js';
import { gidFor } from '../core/gid.js';
import { REPLICA_LOCAL, type Lsn, type ReplicaId, type Term } from '../core/types.js';
import { vclockCovers, vclockEntries, vclockFromEntries, vclockGet, vclockMerge, vclockPlace, type VClock } from '../core/vclock.js';
import { emptied, isWithheld } from '../core/withheld.js';
import type { Logger } from '../log.js';
import { reconcile } from '../postgres/twophase.js';
import type { LeaderTransaction, WriteOpening } from '../postgres/leader.js';
import type { SidecarConfig } from './config.js';
import type { Clock, Database, JournalRetention, JournalStore, NodeEvent, NodeObserver, PlantedBugs, SnapshotBegin, SnapshotOffer, SnapshotSink, Transport } from './io.js';
import { LagSampler } from './lag.js';
import { OwnLog } from './own-log.js';
import { ReadIndex } from './read-index.js';
import { UnfitRecords } from './unfit.js';
import { Writes, type WritesHost } from './writes.js';
import { checkpointState, readCheckpointState, readVerdicts } from './verdicts.js';

export interface DriverOptions<S, W> {
  readonly config: SidecarConfig;
  readonly log: Logger;
  readonly clock: Clock;
  readonly journal: JournalStore;
  readonly db: Database<S, W>;
  readonly transport: Transport;
  /** Seeds the election's randomised timeouts. */
  readonly seed: number;
  /** Something the node cannot go on from (a journal write failed): production exits. */
  readonly onFatal: (what: string, error: unknown) => void;
  readonly bugs?: PlantedBugs;
  /** Told of commits, elections, step-downs, timeouts and refusals (metrics, Redis events). */
  readonly observe?: NodeObserver;
  /** A new node (qsync join): its first sync is a snapshot; `done` once one is loaded. */
  readonly joining?: { readonly done: () => void };
}

interface Waiter {
  readonly resolve: () => void;
  readonly reject: (error: QsyncError) => void;
}

export class NodeDriver<S, W> {
  readonly config: SidecarConfig;
  readonly log: Logger;
  readonly #clock: Clock;
  readonly #journal: JournalStore;
  readonly #db: Database<S, W>;
  readonly #transport: Transport;
  readonly #onFatal: (what: string, error: unknown) => void;
  readonly #bugs: PlantedBugs;
  readonly #own: OwnLog;
  #election: ElectionState;
  /** Every message the election sends waits for the RAFT records written before it. */
  #raftDurable: Promise<void> = Promise.resolve();
  /**
   * The limbo's history, fed every record as it is appended (journal order):
   * its owner and term (limbo records of an older term are refused), what it
   * decided about each entry, and this node's withheld records.
   */
  #history: LimboHistory;
  /** Ranges a PROMOTE revived that the next PROMOTE applied here re-applies from the journal. */
  #revived: RevivedRange[] = [];
  /** Leader, PROMOTE held by a quorum, qsync.node says so: sync writes are accepted. */
  #writable = false;
  /** A leadership transfer in progress: new writes wait for it. */
  #transfer: Promise<void> | null = null;
  /** What each peer is known to hold (acks and heartbeat replies). */
  readonly #peerVclocks = new Map<ReplicaId, VClock>();
  /** Records refused for an older term (split-brain), since start. */
  splitBrainRecords = 0;
  /** Prepared transactions of a previous owner that PROMOTEs applied here committed and rolled back (since start). */
  readonly promoted = { committed: 0, rolledBack: 0 };
  #limbo: LimboState | null = null;
  /**
   * Journaled records on their way to PostgreSQL, in journal order: a sync
   * TXN waits at the head until the history decides it (RFC 0012). #admit
   * pushes, #drain applies, #replay starts it over from PostgreSQL's applied
   * vclock.
   */
  readonly #applyQueue = new ApplyQueue(limits.applyQueueBytesMax, []);
  /** A #drain is chained on #queue or running. */
  #draining = false;
  /** This node's own records a replay brings back into the apply queue: lsns in (from, to]. */
  #replayOwn = { from: 0, to: 0 };
  /** The last record from a peer taken in: a duplicate of one is done when it is. */
  #intake: Promise<void> = Promise.resolve();
  /** Records durable here that this node could not apply when they came: acknowledgements stop before them (unfit.ts). */
  readonly #unfit = new UnfitRecords();
  #unfitCheckedAtMs = 0;
  /** Serialises everything on the apply connection: the apply queue's steps, resync, snapshot loads. */
  #queue: Promise<void> = Promise.resolve();
  readonly #waiters = new Map<string, Waiter>();
  #stopping = false;
  /** Work the journal decided that keeps failing (an apply, a check of PostgreSQL), for status. */
  #retrying: { readonly what: string; readonly error: string } | null = null;
  /** Writes wait for this: verdicts read at start must not miss a TXN journaled while they are applied. */
  #recovered = false;
  /** How many times PostgreSQL went away under the running node (retention cuts nothing across one). */
  #losses = 0;
  /** PostgreSQL went away since it was last checked against the journal: #resync before the next apply. */
  #resyncPending = false;
  /** Gids this node holds prepared (its PostgreSQL's limbo), so CONFIRM need not list pg_prepared_xacts. */
  readonly #prepared = new Set<string>();
  /** Highest own lsn ever written to any peer. */
  #sentOwnLsn = 0;
  /** The hybrid clock: never behind any record seen. */
  #hybrid = 0;
  /** Writes of qsync.node, in order: the PostgreSQL fence follows the election through them. */
  #published: Promise<void> = Promise.resolve();
  /** The term whose PROMOTE a quorum holds, while this node leads it. */
  #promotedTerm: Term | null = null;
  #stopTicks: (() => void) | null = null;
  readonly #observe: NodeObserver;
  /** When each peer last acknowledged or answered a heartbeat. */
  readonly #peerHeardAt = new Map<ReplicaId, number>();
  /** Samples of the journal's tail over time, to tell how old the oldest record a peer lacks is. */
  readonly #lag = new LagSampler();
  /** The leader's write path (writes.ts): its writes before the limbo and its own async writes in flight. */
  readonly #writes: Writes<S, W>;
  /** Linearizable reads (read-index.ts). */
  readonly #reads: ReadIndex;
  /** COMMIT PREPARED of confirmed own entries under way: a linearizable read waits for those begun before it. */
  readonly #commitsUnderWay = new Set<Promise<void>>();
  /**
   * Gids of own writes that failed after their PREPARE was sent and before their TXN was journaled
   * (writes.ts): PostgreSQL may hold them prepared, and only a ROLLBACK PREPARED is right for them,
   * whatever a later CONFIRM covering their filled lsn says. Kept for the process's life, since a
   * PostgreSQL crash may undo a rollback the simulator models as unflushed; one per PREPARE whose
   * answer a crash took, which is rare. After a restart the journal says the same (verdicts.ts).
   */
  readonly #orphans = new Set<string>();
  /** A trim in progress (one at a time). */
  #retaining = false;
  #stopRetention: (() => void) | null = null;
  #stopTablesRefresh: (() => void) | null = null;
  #tablesRefreshing = false;
  /** A rejoin by snapshot in progress, from this peer. */
  #rejoin: { readonly peer: ReplicaId } | null = null;
  /** Why this node needs a rejoin it does not take by itself (rejoin manual), or why the last one failed; for status. */
  #gap: string | null = null;
  /** The operator asked for a rejoin (qsync rejoin): subscriptions ask for a snapshot. */
  #rejoinAllowed = false;
  /**
   * After a rejoin: records up to here came with the snapshot's applied marks,
   * which have holes (entries the source held prepared, its writes in flight),
   * so each is checked by its own lsn, not by the highest applied.
   */
  #exactTo: VClock = [];
  /** The membership version the election, the limbo and the transport were last told of (0: the static configuration). */
  #membersVersion = 0;
  /** Gids standing for membership records in the limbo: no prepared transaction is behind them. */
  readonly #memberGids = new Set<string>();
  /** A membership change this leader is making (one at a time). */
  #changingMembers = false;
  /** A new node that has not loaded its first snapshot yet. */
  #joining: { readonly done: () => void } | null;
  /** The peer a joining node asks for its snapshot, and since when (another is tried after JOIN_ASK_MS). */
  #joinAsked: { readonly peer: ReplicaId; readonly sinceMs: number } | null = null;
  /**
   * The last membership change this leader made, up to its CONFIRM: the next
   * one waits until a quorum of its members holds that. (A new leader needs
   * no such wait: its PROMOTE, held by a quorum, follows the CONFIRM.)
   */
  #membersTarget: { readonly version: number; readonly lsn: Lsn; readonly before: Membership } | null = null;
  /** The members the settings name (--peers, member.json): version 0, in effect until a change is confirmed. */
  readonly #configured: Membership;

  constructor(options: DriverOptions<S, W>) {
    const { config, journal } = options;
    this.config = config;
    this.log = options.log;
    this.#clock = options.clock;
    this.#journal = journal;
    this.#db = options.db;
    this.#transport = options.transport;
    this.#onFatal = options.onFatal;
    this.#bugs = options.bugs ?? {};
    this.#observe = options.observe ?? (() => undefined);
    this.#joining = options.joining ?? null;
    this.#configured = configuredMembership(config);
    this.#history = new LimboHistory(this.#self);
    const durable = { term: (journal.raft?.term ?? 0) as Term, vote: (journal.raft?.vote ?? 0) as ReplicaId };
    this.#election = electionCreate({
      self: this.#self, members: this.#members, quorum: config.quorum,
      mode: config.electionMode, electionTimeoutMs: config.electionTimeoutMs, heartbeatMs: config.heartbeatIntervalMs,
    }, durable, options.seed, this.#clock.nowMs());
    this.#own = new OwnLog(journal, this.#self, config.clusterId, (record) => this.#ownAppended(record));
    this.#writes = new Writes(this.#writesHost(), this.#db, this.#own, this.#clock, this.#bugs);
    this.#reads = new ReadIndex({
      after: (ms, fn) => this.#clock.after(ms, fn),
      leading: () => (this.#election.role === 'leader' && (this.#bugs.readIndexNotApplied === true || (this.#writable && this.#promotedTerm === this.#election.term)) ? this.#election.term : null),
      heartbeat: () => this.#elect({ kind: 'heartbeat' }),
      isQuorum: (answered) => this.#members.filter((m) => m === this.#self || answered.has(m)).length >= this.#quorum,
      caughtUp: () => this.#caughtUp(),
      leaderName: () => this.leaderName(),
    }, { timeoutMs: config.electionTimeoutMs, retryMs: config.heartbeatIntervalMs, unconfirmed: this.#bugs.readIndexUnconfirmed === true });
    this.#db.onLost(() => this.#lost());
  }

  /**
   * Records checked by their own lsn when applied: a rejoin's (#exactTo), and
   * this node's own that a replay brought back, since its later writes commit
   * concurrently with the queue and may already be applied above them
   * (simulator seed 3133).
   */
  get #exactApply(): VClock {
    return this.#replayOwn.to > 0 ? vclockMerge(this.#exactTo, vclockFromEntries([[this.#self, this.#replayOwn.to as Lsn]])) : this.#exactTo;
  }

  /** What PostgreSQL holds: everything durable in the journal up to each replica's first record still in the apply queue. */
  get #applied(): VClock {
    return this.#applyQueue.appliedVclock(this.#journal.vclock);
  }

  get #self(): ReplicaId {
    return this.config.replicaId as ReplicaId;
  }

  /** Accepting sync writes: elected, and its PROMOTE is held by a quorum. */
  get isLeader(): boolean {
    return this.#writable;
  }

  get term(): Term {
    return this.#election.term;
  }

  /** The membership in effect: the last confirmed membership record, or the static configuration (version 0). */
  get membership(): Membership {
    return this.#history.membership ?? this.#configured;
  }

  get #members(): ReplicaId[] {
    return this.membership.members.map((m) => m.replica);
  }

  get #quorum(): number {
    return this.membership.quorum;
  }

  /** The other members. */
  get #peers(): readonly Member[] {
    return this.membership.members.filter((m) => m.replica !== this.#self);
  }

  /**
   * After the history took records: if they put a new membership into effect,
   * tell the election, the limbo and the peer links.
   */
  #membershipFollow(): void {
    const membership = this.#history.membership;
    if (membership === null || membership.version === this.#membersVersion) return;
    this.#membersVersion = membership.version;
    const members = membership.members.map((m) => m.replica);
    this.#election = electionStep(this.#election, { kind: 'members', members, quorum: membership.quorum, mode: this.config.electionMode }, { nowMs: this.#clock.nowMs(), vclock: this.#journal.vclock }).state;
    if (this.#limbo !== null && members.includes(this.#self)) this.#step({ kind: 'members', members, quorum: membership.quorum });
    this.#transport.setPeers(this.#peers);
    const removed = !members.includes(this.#self);
    this.log[removed ? 'error' : 'info']({ version: membership.version, members, quorum: membership.quorum }, removed
      ? `node ${this.#self} is no longer a member of the cluster: it neither votes nor campaigns; stop its sidecar (its PostgreSQL keeps its data)`
      : `membership version ${membership.version} in effect: nodes ${members.join(', ')}, quorum ${membership.quorum}`);
    if (removed && this.#writable) this.#stepDown('removed from the cluster');
    if (removed) void this.#publish();
    this.#emit({ kind: 'membership', term: this.term, version: membership.version, members, quorum: membership.quorum });
  }

  /** Recover, then serve: peer links and the tick. */
  async start(): Promise<void> {
    await this.#recover();
    this.#recovered = true;
    this.#membershipFollow();
    // qsync.node may still say what a previous life of this node was (a leader): it starts as a follower.
    void this.#publish();
    const { config } = this;
    await this.#transport.start({
      subscribeFrom: () => this.#journal.tailVclock,
      onRecord: (record) => this.#enqueue(record),
      ack: () => ({ vclock: this.#acknowledged(), term: this.term }),
      onAck: (replica, vclock, term) => this.#onAck(replica, vclock, term),
      onRaft: (from, message) => this.#elect({ kind: 'message', from, message }),
      outgoing: (record) => (record.replica === this.#self && isWithheld(this.#history.withheld, record) ? emptied(config.clusterId, record) : record),
      onSent: (record) => {
        if (record.replica === this.#self) this.#sentOwnLsn = Math.max(this.#sentOwnLsn, record.lsn);
      },
      takesSnapshot: () => this.#rejoin === null && (config.rejoin === 'auto' || this.#rejoinAllowed),
      joining: (peer) => this.#joinFrom(peer),
      onGap: (peer, reason) => {
        if (this.#rejoin !== null) return; // a subscription made while one peer's snapshot loads
        if (this.#gap === null) this.log.error({ peer, reason }, 'this node lacks records its peers no longer keep: it needs a rejoin by snapshot (qsync rejoin)');
        this.#gap = `node ${peer}: ${reason}`;
      },
      serveSnapshot: (subscriber) => this.#offerSnapshot(subscriber),
      takeSnapshot: (peer, begin) => this.#takeSnapshot(peer, begin),
    });
    if (this.#journal.retention !== undefined) this.#stopRetention = this.#clock.every(RETENTION_CHECK_MS, () => void this.#retain());
    // The tables as they are now: a change made outside qsync (a column dropped on one node) is seen within a
    // second, so records it makes unfit are not acknowledged (RFC 0012). On the apply connection, in its turn.
    this.#stopTablesRefresh = this.#clock.every(TABLES_REFRESH_MS, () => {
      if (this.#tablesRefreshing || this.#stopping) return;
      this.#tablesRefreshing = true;
      const run = this.#queue.then(() => this.#db.reloadTables()).catch((error: unknown) => {
        this.log.debug({ err: (error as Error).message }, 'reading the tables again failed');
      }).finally(() => {
        this.#tablesRefreshing = false;
      });
      this.#queue = run;
    });
    const tickMs = Math.max(5, Math.min(25, config.heartbeatIntervalMs / 4, config.synchroTimeoutMs / 10));
    this.#stopTicks = this.#clock.every(tickMs, () => {
      this.#elect({ kind: 'tick' });
      this.#step({ kind: 'tick', nowMs: this.#clock.nowMs() });
      this.#lag.note(this.#journal.tailVclock, this.#clock.nowMs());
      if (!this.#unfit.none) {
        this.#liftUnfit();
        this.#kick();
      }
    });
  }

  /**
   * Make PostgreSQL agree with the journal, then apply what it lacks. Entries
   * still pending stay prepared: the next PROMOTE decides them.
   */
  async #recover(): Promise<void> {
    const verdicts = await readVerdicts(this.#journal, this.#self);
    this.#history = verdicts.history;
    this.#exactTo = readCheckpointState(this.#journal)?.exactTo ?? [];
    // Both idempotent: a transient PostgreSQL failure is retried, not a failed start (simulator seeds 44, 219).
    const report = await this.#untilDone('reconciling prepared transactions', () => reconcile(this.#db, verdicts.verdict), {});
    this.log.info({ ...report, vclock: this.#journal.vclock }, 'reconciled prepared transactions with the journal');
    // Retried too: a PostgreSQL crash right here failed the start (simulator seed 21154).
    for (const entry of await this.#untilDone('listing prepared transactions', () => this.#db.listPrepared(), {})) this.#prepared.add(entry.gid);
    const replayed = await this.#untilDone('replaying the journal into PostgreSQL', () => this.#replay(), {});
    if (replayed > 0) this.log.info({ replayed }, 'applied journaled writes of this node whose COMMIT had not reached PostgreSQL');
    // After the replay has set where the apply queue starts: what lies past it, the queue applies.
    await this.#untilDone('applying again entries a PROMOTE revived', () => this.#revive(verdicts.revived), {});
    this.#kick();
  }

  /**
   * Start the apply queue over from what PostgreSQL holds: the journaled
   * records it lacks are read back in journal order (RFC 0012: through the
   * queue, so a sync TXN still waits for its verdict). Peers' records reach
   * PostgreSQL in journal order, so it holds a prefix of each peer's: its
   * applied vclock says where to start. This node's own writes commit
   * concurrently, each in its session, so one may have failed at COMMIT
   * (PostgreSQL or the sidecar died) while later ones committed: the own
   * records below the highest applied are checked one by one, and an async
   * write missing is applied from its TXN here; returns how many were.
   * Idempotent.
   */
  async #replay(): Promise<number> {
    const applied = await this.#db.appliedVclock();
    // Nothing before the journal's start is replayed: it was applied and durable before its records went.
    const floor = this.#journal.retention?.oldestVclock ?? [];
    const ownApplied = vclockGet(applied, this.#self);
    const recheckFrom = Math.max(0, ownApplied - OWN_RECHECK_RECORDS, vclockGet(floor, this.#self)) as Lsn;
    const ownHeld = ownApplied > 0 ? await this.#db.appliedLsns(this.#self, recheckFrom) : new Set<Lsn>();
    let replayed = 0;
    if (ownApplied > recheckFrom) {
      const others = vclockEntries(this.#journal.tailVclock).filter(([replica]) => replica !== this.#self);
      for await (const record of this.#journal.cursor(vclockFromEntries([...others, [this.#self, recheckFrom]]))) {
        if (record.replica !== this.#self || record.lsn > ownApplied) continue;
        // Sync entries are prepared before they are journaled; only an async write can be missing.
        if (record.kind !== 'txn' || record.sync || record.changes.length === 0 || ownHeld.has(record.lsn)) continue;
        if ((await this.#db.apply(record, { prepare: false, exact: true })) === 'applied') {
          this.log.warn({ lsn: record.lsn }, 'applied a journaled write of this node whose COMMIT had not reached PostgreSQL');
          replayed += 1;
        }
      }
    }
    // A peer's records: from what PostgreSQL applied, never before the journal's start. After a rejoin, while the
    // snapshot's marks (which have holes) reach past the start, from the start: each record is checked by its own lsn.
    const fromOf = (replica: ReplicaId): Lsn => {
      const start = vclockGet(floor, replica);
      return vclockGet(this.#exactTo, replica) > start ? start : Math.max(vclockGet(applied, replica), start) as Lsn;
    };
    const peers = vclockEntries(vclockMerge(applied, floor)).map(([replica]) => replica).filter((replica) => replica !== this.#self && replica !== REPLICA_LOCAL);
    // This node's records past the highest applied (its CONFIRMs, ROLLBACKs, a write whose COMMIT failed) go
    // through the queue as well; those it writes from now on do not.
    this.#replayOwn = { from: ownApplied, to: vclockGet(this.#journal.tailVclock, this.#self) };
    this.#applyQueue.reset(vclockFromEntries([...peers.map((replica) => [replica, fromOf(replica)] as const).filter(([, lsn]) => lsn > 0), ...(ownApplied > 0 ? [[this.#self, ownApplied] as const] : [])]));
    return replayed;
  }

  /**
   * PostgreSQL went away under the running node: once it is back, check it
   * against the journal before anything else is applied (a record applied
   * first would move the applied vclock past what was lost). The next step of
   * the apply queue does it, or this one if the queue is idle.
   */
  #lost(): void {
    if (this.#stopping) return;
    if (!this.#resyncPending) this.log.warn('lost the connection to PostgreSQL: once it is back, it is checked against the journal');
    this.#resyncPending = true;
    this.#losses += 1;
    const run = this.#queue.then(() => this.#untilDone('checking PostgreSQL against the journal', async () => {
      await this.#resyncIfLost();
    }, {}));
    this.#queue = run.catch((error: unknown) => this.#fatal('checking PostgreSQL against the journal', error));
  }

  /** Resync if PostgreSQL went away since; true when it did (the apply queue started over). */
  async #resyncIfLost(): Promise<boolean> {
    if (!this.#resyncPending) return false;
    this.#resyncPending = false;
    try {
      await this.#resync();
      return true;
    } catch (error) {
      this.#resyncPending = true;
      throw error;
    }
  }

  /**
   * What #recover does at start, for what a crash of PostgreSQL alone undoes:
   * commits made without waiting for the flush (applied records, COMMIT and
   * ROLLBACK PREPARED, qsync.node) may be gone. Prepared transactions the
   * history has decided are finished again; undecided ones stay, and so does
   * one the journal does not hold yet (a write of this node between its
   * PREPARE and its TXN's append). Records PostgreSQL lost are applied again,
   * and qsync.node is written again. Runs in the apply queue; idempotent.
   */
  async #resync(): Promise<void> {
    // An orphaned PREPARE's lsn holds an empty TXN, which a later CONFIRM covers: it is rolled back, never committed.
    const report = await reconcile(this.#db, (entry) => (this.#orphans.has(entry.gid) ? 'rolled-back' : this.#history.verdict(entry.replica, entry.lsn) ?? 'pending'));
    for (const entry of await this.#db.listPrepared()) this.#prepared.add(entry.gid);
    const replayed = await this.#replay();
    void this.#publish();
    this.#kick();
    this.log.info({ committed: report.committed.length, rolledBack: report.rolledBack.length, kept: report.kept.length, replayed }, 'PostgreSQL is back and agrees with the journal');
  }

  /** Stop serving; clients still waiting hear OutcomeUnknown. The caller closes the journal and PostgreSQL. */
  async stop(): Promise<void> {
    this.#stopping = true;
    this.#stopTicks?.();
    this.#stopRetention?.();
    this.#stopTablesRefresh?.();
    await this.#transport.stop();
    await this.#queue.catch(() => undefined);
    for (const [gid, waiter] of this.#waiters) waiter.reject(new QsyncError('OUTCOME_UNKNOWN', `node stopping before ${gid} was decided; ask for its outcome by idempotency key`));
  }

  // ---- records from peers ------------------------------------------------------

  /**
   * Take a record from a peer. Synchronously, in arrival order: drop a
   * duplicate, refuse a gap, take an older term without effect, and queue the
   * journal append, so that a burst shares one fsync. Once durable, the
   * record is checked against this node's tables and joins the apply queue;
   * from then on it is acknowledged (RFC 0012). It reaches PostgreSQL in
   * journal order, a sync TXN once the limbo has decided it.
   */
  #enqueue(record: JournalRecord): Promise<void> {
    if (record.replica === this.#self || record.replica === REPLICA_LOCAL) return Promise.resolve();
    if (this.#rejoin !== null) return Promise.reject(new QsyncError('REJOINING', `node ${this.#self} is taking a snapshot from node ${this.#rejoin.peer}; it subscribes again once that is done`));
    const place = vclockPlace(this.#journal.tailVclock, record.replica, record.lsn);
    // A duplicate from another relay: done when everything before it is.
    if (place === 'held') return this.#intake;
    if (place === 'gap' && this.#bugs.gapAccepted !== true) {
      // Refused before the history, the journal or PostgreSQL sees any of it: the link closes, the node
      // goes on, and the peer resends from this node's vclock when it subscribes again.
      const held = vclockGet(this.#journal.tailVclock, record.replica);
      return Promise.reject(new RecordInvalid('lsn', `record ${record.replica}:${record.lsn} does not follow lsn ${held} of replica ${record.replica}, the last this node holds: a gap`));
    }
    if (this.#history.isStale(record)) {
      // Journaled, so the writer's later records still arrive; decides nothing (docs/rfc/0003-stale-records.md).
      this.splitBrainRecords += 1;
      const synchro = this.#history.synchro;
      this.log.warn({ replica: record.replica, lsn: record.lsn, kind: record.kind, recordTerm: record.term, limboTerm: synchro.term, owner: synchro.owner }, 'split-brain: a limbo record from an older term taken without effect');
      this.#emit({ kind: 'splitBrain', term: this.term, from: record.replica, recordTerm: record.term, lsn: record.lsn });
    }
    this.#revived.push(...this.#history.apply(record));
    this.#membershipFollow();
    this.#hybrid = Math.max(this.#hybrid, record.time);
    const durable = this.#journal.append(record);
    durable.catch((error: unknown) => this.#fatal('journaling a record from a peer', error));
    // Journal, then apply: PostgreSQL never holds a record the journal may lose (a row applied and
    // then refused by the journal would stay on this node alone).
    const taken = durable.then(() => this.#admit(record));
    this.#intake = taken.catch(() => undefined);
    return this.#bugs.ackBeforeDurable === true ? Promise.resolve() : taken;
  }

  /** A durable record from a peer: checked against this node's tables, then queued for PostgreSQL. */
  #admit(record: JournalRecord): void {
    // Behind a table mode or schema change not applied yet, the tables here say nothing yet: judged by apply.
    if (record.kind === 'txn' && record.changes.length > 0 && !this.#applyQueue.schemaPending) {
      const reason = this.#db.unfit(record);
      if (reason !== null) this.#noteUnfit(record, reason);
    }
    this.#applyQueue.push(record);
    this.#kick();
  }

  #noteUnfit(record: TxnRecord, reason: string): void {
    if (this.#unfit.note(record, reason)) {
      this.log.error({ replica: record.replica, lsn: record.lsn, reason }, `node ${this.#self} cannot apply record ${record.replica}:${record.lsn} and does not acknowledge it, nor what follows it from node ${record.replica}: ${reason}`);
    }
  }

  /**
   * What this node acknowledges: what its journal holds durably, short of the
   * first record of each replica it could not apply. Acknowledged records
   * count towards a quorum; applying them waits for the limbo's verdict.
   */
  #acknowledged(): VClock {
    return this.#unfit.cap(this.#bugs.ackBeforeDurable === true ? this.#journal.tailVclock : this.#journal.vclock);
  }

  #liftUnfit(): void {
    this.#unfit.lift(this.#applied, (replica, lsn) => this.#history.verdict(replica, lsn) === 'rolled-back');
  }

  /**
   * Lift the unfit entries the queue passed or the limbo rolled back; at most
   * once a second, and after a schema change applied, read the tables again
   * and drop those that now fit.
   */
  async #recheckUnfit(force: boolean): Promise<void> {
    this.#liftUnfit();
    const now = this.#clock.nowMs();
    if (this.#unfit.none || (!force && now - this.#unfitCheckedAtMs < UNFIT_RECHECK_MS)) return;
    this.#unfitCheckedAtMs = now;
    try {
      await this.#db.reloadTables();
    } catch (error) {
      // PostgreSQL away: the apply queue's next step finds out and resyncs; this is tried again.
      this.log.debug({ err: (error as Error).message }, 'reading the tables again failed');
      return;
    }
    this.#unfit.recheck((record) => this.#db.unfit(record));
  }

  // ---- the apply queue (RFC 0012) ------------------------------------------------

  /** Chain a #drain on the apply connection's queue, unless one is chained or running. */
  #kick(): void {
    if (this.#draining || this.#stopping) return;
    this.#draining = true;
    const run = this.#queue.then(() => this.#drain());
    this.#queue = run.then(() => {
      this.#draining = false;
      // Something may have come between the drain's last look and now.
      if (this.#drainable()) this.#kick();
    }, (error: unknown) => {
      this.#draining = false;
      this.#fatal('applying journaled records', error);
    });
  }

  #drainable(): boolean {
    const queue = this.#applyQueue;
    return (queue.length === 0 && queue.spilled) || queue.next(this.#history, this.#stepBounds) !== null;
  }

  get #stepBounds(): StepBounds {
    return {
      recordsMax: limits.applyBatchRecordsMax, bytesMax: limits.applyBatchBytesMax,
      // A CONFIRM finishes only what this node holds prepared (its own entries, from when it led).
      inert: (record) => record.kind === 'raft' || record.kind === 'demote' || (record.kind === 'confirm' && this.#prepared.size === 0),
      ...(this.#bugs.applyBeforeConfirm === true ? { undecidedApplied: true } : {}),
    };
  }

  /**
   * Apply from the queue's head until it is empty or waits for the limbo: a
   * run of TXNs as one PostgreSQL transaction, any other record by itself.
   * A record applied is durable in the journal, so a peer will not send it
   * again: transient failures are retried with backoff, and the queue waits.
   */
  async #drain(): Promise<void> {
    const queue = this.#applyQueue;
    let schemaChanged = false;
    while (!this.#stopping && this.#rejoin === null) {
      if (queue.length === 0 && queue.spilled) {
        await this.#refill();
        if (queue.length === 0) break;
      }
      const step = queue.next(this.#history, this.#stepBounds);
      if (step === null) break;
      const first = step.kind === 'one' ? step.record : step.records[0] as JournalRecord;
      let attempts = 0;
      const outcome = await this.#untilDone('applying a record', async () => {
        attempts += 1;
        if (await this.#resyncIfLost()) return 'started over' as const;
        if (step.kind === 'one') await this.#apply(step.record);
        // The queue starts at what PostgreSQL holds and applies in order: on a first attempt its records are
        // not applied yet, and the batch skips the checks. A retry checks (a commit whose answer was lost).
        else await this.#applyRun(step.records.filter((r): r is TxnRecord => r.kind === 'txn'), { checked: attempts > 1 });
        return 'applied' as const;
      }, { replica: first.replica, lsn: first.lsn, ...(step.kind === 'txns' ? { records: step.records.length } : {}) });
      if (outcome === 'started over') continue;
      queue.done(step.kind === 'one' ? 1 : step.records.length);
      if (step.kind === 'one' && step.record.kind === 'config') schemaChanged = true;
    }
    await this.#recheckUnfit(schemaChanged);
  }

  /** The queue ran empty with records left in the journal only: read them back, up to the queue's bound. */
  async #refill(): Promise<void> {
    const queue = this.#applyQueue;
    for await (const record of this.#journal.cursor(queue.held)) {
      const queued = record.replica !== this.#self || (record.lsn > this.#replayOwn.from && record.lsn <= this.#replayOwn.to);
      if (!queue.refill(record, queued)) return;
    }
    queue.refilled(this.#journal.vclock);
  }

  /**
   * A run of TXNs from the queue, each as the history decided it: a sync TXN
   * reaches here confirmed (or rolled back: skipped). Prepared here, it is an
   * entry of this node's own, from when it led: finished by its verdict.
   */
  async #applyRun(records: ReadonlyArray<TxnRecord>, options: { checked: boolean }): Promise<void> {
    const apply: TxnRecord[] = [];
    const finish = { commit: [] as string[], rollback: [] as string[] };
    for (const record of records) {
      if (this.#history.ignored(record) || (record.changes.length === 0 && record.replica === this.#self)) continue;
      const verdict = record.sync ? this.#history.verdict(record.replica, record.lsn) : null;
      if (this.#prepared.has(record.gid)) {
        if (verdict !== null) finish[verdict === 'confirmed' ? 'commit' : 'rollback'].push(record.gid);
      } else if (verdict !== 'rolled-back') {
        apply.push(record);
      }
    }
    if (finish.rollback.length > 0) await this.#db.finish('rollback', finish.rollback, this.#forget);
    if (finish.commit.length > 0) await this.#db.finish('commit', finish.commit, this.#forget);
    if (apply.length === 0) return;
    try {
      await this.#db.applyBatch(apply, { exactTo: this.#exactApply, checked: options.checked });
    } catch (error) {
      if (apply.length === 1 || !(error instanceof QsyncError && error.code === 'PG_APPLY')) throw error;
      // One of them fails: one transaction each, in order, so that the error names it (each skips what is applied).
      for (const record of apply) {
        const exact = record.lsn <= vclockGet(this.#exactApply, record.replica);
        await this.#db.apply(record, { prepare: false, ...(exact ? { exact } : {}) });
      }
    }
  }

  /** A prepared transaction finished: no longer this node's to decide. */
  readonly #forget = (gid: string): void => {
    this.#prepared.delete(gid);
  };

  /** Apply one record outside the queue's order (this node's PROMOTE): retried like a step of the queue. */
  #applyUntilDone(record: JournalRecord): Promise<void> {
    return this.#untilDone('applying a record', async () => {
      await this.#resyncIfLost();
      await this.#apply(record);
    }, { replica: record.replica, lsn: record.lsn });
  }

  /**
   * Run idempotent PostgreSQL work until it succeeds, with backoff; an
   * assertion or a stop ends it. `firstFailure` runs once, on the first.
   */
  async #untilDone<T>(what: string, work: () => Promise<T>, context: Record<string, unknown>, firstFailure?: (error: unknown) => void): Promise<T> {
    for (let attempt = 1; ; attempt += 1) {
      try {
        const done = await work();
        if (this.#retrying?.what === what) this.#retrying = null;
        return done;
      } catch (error) {
        if (error instanceof AssertionFailed || this.#stopping) throw error;
        if (attempt === 1) firstFailure?.(error);
        if (attempt >= 4) this.#retrying = { what, error: (error as Error).message };
        const delayMs = retryDelayMs(attempt);
        this.log[attempt < 4 ? 'info' : 'error']({ ...context, attempt, delayMs, err: (error as Error).message }, `${what} failed; retrying`);
        await this.#clock.sleep(delayMs);
      }
    }
  }

  /**
   * Apply one journaled record to PostgreSQL (DESIGN.md §5, RFC 0012): a
   * CONFIRM or ROLLBACK finishes what this node holds prepared (its own
   * entries, from when it led); a PROMOTE decides a deposed owner's.
   * Idempotent: replay runs it again after a crash.
   */
  async #apply(record: JournalRecord): Promise<void> {
    if (this.#history.ignored(record)) return;
    if (this.log.isLevelEnabled('debug')) {
      this.log.debug({ replica: record.replica, lsn: record.lsn, kind: record.kind, recordTerm: record.term, ...(record.kind === 'txn' ? { sync: record.sync, changes: record.changes.length } : {}) }, 'applying a record');
    }
    const forget = this.#forget;
    switch (record.kind) {
      case 'txn':
        await this.#applyRun([record], { checked: true });
        return;
      case 'confirm':
        await this.#db.finish('commit', this.#preparedOf(record.owner, 1, record.confirmedLsn), forget);
        return;
      case 'rollback': {
        const gids = this.#preparedOf(record.owner, record.fromLsn, record.lsn - 1);
        await this.#db.finish('rollback', gids, forget);
        if (record.replica !== this.#self) this.log.info({ owner: record.owner, fromLsn: record.fromLsn, transactions: gids.length, recordTerm: record.term }, 'limbo rollback applied: the leader had no quorum in time');
        return;
      }
      case 'config':
        if (record.ddl !== undefined && (await this.#db.runDdl(record.ddl, record.replica, record.lsn, record.ddlRole)).applied && record.replica !== this.#self) {
          this.log.info({ leader: record.replica, lsn: record.lsn }, 'schema change applied');
        }
        for (const [table, mode] of Object.entries(record.tables ?? {})) {
          const expect = record.shapes?.[table];
          await this.#db.setTableMode(table, mode, expect === undefined ? {} : { expect });
        }
        return;
      case 'promote':
        // The previous owner's entries up to the lsn kept are committed, the rest rolled back (DESIGN.md §5).
        // PostgreSQL's own list: a deposed leader's prepared transactions were never in #prepared.
        if (record.prevOwner !== NO_REPLICA) {
          const owned = (await this.#db.listPrepared()).filter((e) => e.replica === record.prevOwner);
          // As the history (which has taken this PROMOTE) decides: kept, or past the lsn kept, under a
          // ROLLBACK in the kept history, or this node's own void writes. Still pending: written after
          // this PROMOTE by its own leader, which replay after a crash meets here; left in the limbo.
          const decided = (verdict: 'confirmed' | 'rolled-back'): string[] => owned.filter((e) => this.#history.verdict(record.prevOwner, e.lsn) === verdict).map((e) => e.gid);
          const commit = decided('confirmed');
          const rollback = decided('rolled-back');
          await this.#db.finish('commit', commit, forget);
          this.promoted.committed += commit.length;
          await this.#db.finish('rollback', rollback, forget);
          this.promoted.rolledBack += rollback.length;
          if (commit.length + rollback.length > 0 || record.replica !== this.#self) {
            this.log.info({ leader: record.replica, recordTerm: record.term, prevOwner: record.prevOwner, prevLsn: record.prevLsn, committed: commit.length, rolledBack: rollback.length }, `PROMOTE of node ${record.replica} applied: the previous leader's pending transactions decided`);
          }
        } else if (record.replica !== this.#self) {
          this.log.info({ leader: record.replica, recordTerm: record.term }, `PROMOTE of node ${record.replica} applied`);
        }
        {
          const ranges = this.#revived.splice(0);
          // A failed attempt is retried whole: the ranges must still be there.
          await this.#revive(ranges).catch((error: unknown) => {
            this.#revived.unshift(...ranges);
            throw error;
          });
        }
        return;
      case 'demote':
      case 'raft':
        return;
    }
  }

  /**
   * Apply again the confirmed entries in `ranges` that PostgreSQL rolled back
   * too early (on a ROLLBACK or PROMOTE that a later PROMOTE voided): the
   * journal still holds their TXNs. Skips what is prepared or applied.
   */
  async #revive(ranges: readonly RevivedRange[]): Promise<void> {
    if (ranges.length === 0) return;
    // One pass over the journal from the lowest lsn of each owner concerned.
    const lowest = new Map<ReplicaId, number>();
    for (const r of ranges) lowest.set(r.owner, Math.min(lowest.get(r.owner) ?? Infinity, r.from));
    const from = vclockMerge(this.#journal.retention?.oldestVclock ?? [], vclockFromEntries(vclockEntries(this.#journal.tailVclock).map(([replica, lsn]) => [replica, lowest.has(replica) ? (lowest.get(replica) as number) - 1 as Lsn : lsn] as const)));
    let revived = 0;
    // Past what the apply queue has passed, it is still to come: the queue applies it, confirmed now, in its
    // turn. Applied here first, its mark would make the queue skip the records before it (simulator seed 4).
    const passed = this.#applied;
    for await (const record of this.#journal.cursor(from)) {
      if (record.kind !== 'txn' || !record.sync || record.changes.length === 0) continue;
      if (record.lsn > vclockGet(passed, record.replica)) continue;
      if (!ranges.some((r) => r.owner === record.replica && record.lsn >= r.from && record.lsn <= r.to)) continue;
      if (this.#history.verdict(record.replica, record.lsn) !== 'confirmed') continue;
      if ((await this.#db.apply(record, { prepare: false, exact: true })) === 'applied') revived += 1;
    }
    if (revived > 0) this.log.warn({ revived, ranges }, 'applied again entries rolled back too early: a later PROMOTE confirmed them');
  }

  // ---- retention and rejoin (docs/rfc/0009-retention-and-rejoin.md) ---------------

  /**
   * Remove the journal segments nothing needs any more: every record in them
   * is applied here and durable in PostgreSQL (the compaction below waits for
   * a WAL flush that covers every commit before it), decided (no prepared
   * entry, no write of this node still committing), and held by every peer,
   * or, once the journal is past journalRetainBytes, by a quorum: a peer that
   * lacks them then rejoins by snapshot. What they decided goes into the
   * checkpoint first.
   */
  async #retain(): Promise<void> {
    const retention = this.#journal.retention;
    if (retention === undefined || this.#retaining || this.#rejoin !== null || !this.#recovered || this.#stopping || this.#resyncPending) return;
    // What the apply queue says is applied holds only while PostgreSQL has not gone away since: a crash takes
    // the commits it had not flushed, and until the resync the queue still counts them (a cut made on that
    // count lost rows in the e2e test of retention under PostgreSQL crashes).
    const losses = this.#losses;
    const unchanged = (): boolean => this.#losses === losses && !this.#resyncPending;
    const starts = retention.segmentStarts;
    if (starts.length === 0) return;
    this.#retaining = true;
    try {
      const applied = this.#applied;
      const peers = this.#peers.map((p) => this.#peerVclocks.get(p.replica) ?? []);
      const holders = retention.sizeBytes > this.config.journalRetainBytes ? this.#quorum - 1 : peers.length;
      const bound = new Map<number, number>(vclockEntries(applied));
      bound.set(this.#self, Math.min(vclockGet(this.#journal.vclock, this.#self), Math.min(...this.#writes.ownInFlight, Number.MAX_SAFE_INTEGER) - 1));
      for (const [replica, lsn] of bound) {
        const held = peers.map((v) => vclockGet(v, replica as ReplicaId) as number).sort((a, b) => b - a);
        bound.set(replica, Math.min(lsn, holders === 0 ? lsn : held[holders - 1] ?? 0));
      }
      const cutAt = (): VClock | undefined => {
        const limit = vclockFromEntries([...bound].filter(([, lsn]) => lsn > 0) as Array<[ReplicaId, Lsn]>);
        return starts.filter((start) => vclockCovers(limit, start, { ignoreLocal: true })).at(-1);
      };
      // Only when something could go does PostgreSQL hear of it: the prepared entries, then the flush.
      if (cutAt() === undefined) return;
      for (const entry of await this.#db.listPrepared()) bound.set(entry.replica, Math.min(bound.get(entry.replica) ?? 0, entry.lsn - 1));
      const cut = cutAt();
      if (cut === undefined) return;
      await this.#db.compactApplied(retention.oldestVclock);
      if (!unchanged()) return;
      const history = await this.#historyAt(cut);
      if (!unchanged()) return;
      const exactTo = vclockCovers(cut, this.#exactTo, { ignoreLocal: true }) ? [] : this.#exactTo;
      const removed = await retention.trim(cut, checkpointState(history.toState(), exactTo));
      if (exactTo.length === 0) this.#exactTo = [];
      this.log.debug({ removed, start: cut }, 'journal segments removed');
    } catch (error) {
      if (error instanceof AssertionFailed) throw error;
      this.log.warn({ err: (error as Error).message }, 'journal retention failed; it tries again');
    } finally {
      this.#retaining = false;
    }
  }

  /** The limbo history as of `vclock` (a segment's start): the checkpoint's, folded over the records up to there. */
  async #historyAt(vclock: VClock): Promise<LimboHistory> {
    const checkpoint = readCheckpointState(this.#journal);
    const history = checkpoint === null ? new LimboHistory(this.#self) : LimboHistory.fromState(this.#self, checkpoint.history);
    for await (const record of this.#journal.cursor(checkpoint?.vclock ?? [])) {
      if (record.lsn > vclockGet(vclock, record.replica)) break;
      history.apply(record);
    }
    return history;
  }

  /**
   * A subscriber lacks records this journal no longer holds: offer the
   * replicated tables as of the journal's start. Everything before it is in
   * PostgreSQL (retention removes nothing else), and the relay's cursor,
   * opened at the start before the snapshot is read, brings the rest; the
   * snapshot's applied marks say which of those records it holds already.
   */
  #offerSnapshot(subscriber: ReplicaId): SnapshotOffer | null {
    if (this.#rejoin !== null || !this.#recovered || this.#stopping) return null;
    // A journal that never removed a record starts at nothing, with nothing decided (a node joining).
    const checkpoint = readCheckpointState(this.#journal) ?? { vclock: [], history: new LimboHistory(this.#self).toState(), exactTo: [] };
    this.log.info({ subscriber, floor: checkpoint.vclock }, `node ${subscriber} needs a snapshot (it joins, or lacks records this journal no longer holds): sending one`);
    return {
      floor: checkpoint.vclock,
      begin: async () => {
        const { tables, parts } = await this.#db.readSnapshot();
        return { begin: { floor: checkpoint.vclock, history: checkpoint.history, tables }, parts };
      },
    };
  }

  /**
   * Take a peer's snapshot (a rejoin): in the apply queue, once this node's
   * own writes are done, roll back what PostgreSQL holds prepared (the
   * snapshot has what was decided), replace the replicated tables, then
   * start the journal over at the snapshot's floor with this node's own
   * records after it, and the peer's limbo history. Writes are refused
   * meanwhile, and records from other links too (they come again).
   */
  #takeSnapshot(peer: ReplicaId, begin: SnapshotBegin): SnapshotSink | null {
    if (this.#rejoin !== null || this.#stopping || this.#journal.retention === undefined) return null;
    const history = historyStateParse(begin.history);
    if (typeof history === 'string') {
      this.log.error({ peer, reason: history }, 'a snapshot came with a malformed limbo history; refused');
      return null;
    }
    this.#rejoin = { peer };
    this.#recovered = false;
    const tables = begin.tables.map((t) => t.name);
    if (this.#joining === null) this.log.warn({ peer, floor: begin.floor, tables }, `rejoining by snapshot from node ${peer}: this node lacks records its peers no longer keep; its replicated tables are replaced (local tables stay)`);
    else this.log.info({ peer, floor: begin.floor, tables }, `joining: taking a snapshot from node ${peer}; tables missing here are created with its columns and primary key`);
    let finish!: () => void;
    const finished = new Promise<void>((resolve) => (finish = resolve));
    const load = this.#queue.then(async () => {
      await this.#until(() => this.#writes.beforeLimbo === 0 && this.#writes.ownInFlight.size === 0, () => !this.#stopping);
      const prepared = await this.#db.listPrepared();
      await this.#db.finish('rollback', prepared.map((e) => e.gid));
      this.#prepared.clear();
      return this.#db.loadSnapshot(begin.tables);
    });
    load.catch(() => undefined);
    this.#queue = load.then(() => finished, () => finished);
    const done = (failure: string | null): void => {
      this.#rejoin = null;
      this.#recovered = true;
      this.#gap = failure === null ? null : `the rejoin by snapshot from node ${peer} failed: ${failure}`;
      finish();
    };
    return {
      part: async (part) => (await load).part(part),
      end: async (parts) => {
        let rows: number;
        try {
          rows = await (await load).commit();
        } catch (error) {
          done((error as Error).message);
          throw error;
        }
        try {
          await this.#startOver(begin, history);
        } catch (error) {
          // The old journal may be gone and the new one not whole: only a restart sorts that out.
          done((error as Error).message);
          this.#fatal('starting the journal over after a snapshot', error);
          throw error;
        }
        this.log.info({ peer, rows, parts, vclock: this.#journal.vclock }, `${this.#joining === null ? 'rejoined' : 'joined'} by snapshot from node ${peer}: its records from the snapshot's point on follow`);
        done(null);
        this.#joining?.done();
        this.#joining = null;
        void this.#publish();
      },
      abort: async (reason) => {
        this.log.warn({ peer, reason }, 'the rejoin by snapshot was cut short; nothing of it stays, and it starts again');
        await load.then((l) => l.abort(), () => undefined);
        done(reason);
      },
    };
  }

  /** After a snapshot is loaded: the journal starts at its floor, with this node's own later records kept. */
  async #startOver(begin: SnapshotBegin, history: HistoryState): Promise<void> {
    const retention = this.#journal.retention as JournalRetention;
    const self = this.#self;
    const ownFrom = Math.max(vclockGet(begin.floor, self), vclockGet(retention.oldestVclock, self)) as Lsn;
    const keep: JournalRecord[] = [];
    for await (const record of this.#journal.cursor(vclockFromEntries([...vclockEntries(this.#journal.vclock).filter(([r]) => r !== self), [self, ownFrom]]))) {
      if (record.replica === self) keep.push(record);
    }
    const start = vclockFromEntries([...vclockEntries(begin.floor).filter(([r]) => r !== self), ...(ownFrom > 0 ? [[self, ownFrom] as const] : [])]);
    const adopted = this.#history.adopt(history);
    const exactTo = vclockFromEntries(vclockEntries(await this.#db.appliedVclock()).filter(([r]) => r !== self));
    await retention.rebase(start, keep, checkpointState(adopted.toState(), exactTo));
    for (const record of keep) adopted.apply(record);
    this.#history = adopted;
    this.#membershipFollow();
    this.#exactTo = exactTo;
    this.#revived = [];
    await this.#untilDone('applying this node\'s own records after the snapshot', () => this.#replay(), {});
    for (const entry of await this.#db.listPrepared()) this.#prepared.add(entry.gid);
  }

  /**
   * A joining node's subscription to `peer`: one peer at a time is asked for
   * the snapshot (each would read every replicated table for it); the others
   * wait, and while it loads. A peer that has not begun one within
   * JOIN_ASK_MS gives its turn to the next that asks.
   */
  #joinFrom(peer: ReplicaId): 'join' | 'wait' | 'no' {
    if (this.#joining === null) return 'no';
    if (this.#rejoin !== null) return 'wait';
    const now = this.#clock.nowMs();
    const asked = this.#joinAsked;
    if (asked !== null && asked.peer !== peer && now - asked.sinceMs < JOIN_ASK_MS) return 'wait';
    if (asked?.peer !== peer) this.#joinAsked = { peer, sinceMs: now };
    return 'join';
  }

  /** qsync rejoin: let subscriptions ask for a snapshot (rejoin manual); a peer that lacks nothing sends none. */
  allowRejoin(): NodeStatus {
    this.#rejoinAllowed = true;
    return this.status();
  }

  // ---- leadership ----------------------------------------------------------------

  /**
   * Step the election: persist its term and vote (a RAFT record), send its
   * messages only once that is durable, then act on a change of role, term or
   * leader.
   */
  #elect(event: ElectionEvent): void {
    if (this.#stopping) return;
    if (event.kind === 'message' && event.message.type === 'heartbeatReply' && event.message.term === this.term) this.#heard(event.from, event.message.vclock);
    const before = this.#election;
    const planted = this.#bugs.voteIgnoresVclock === true && event.kind === 'message' && event.message.type === 'vote';
    // Records this node could not apply count as not held, in its votes and its candidacy: it acknowledged
    // none of them, so no quorum counted it for them, and a leader must be able to apply what it holds.
    const step = electionStep(before, event, { nowMs: this.#clock.nowMs(), vclock: planted ? [] : this.#unfit.cap(this.#journal.vclock) });
    this.#election = step.state;
    if (step.persist !== null) {
      const { term, vote } = step.persist;
      const lsn = (vclockGet(this.#journal.tailVclock, REPLICA_LOCAL) + 1) as Lsn;
      this.#raftDurable = this.#journal.append({ kind: 'raft', replica: REPLICA_LOCAL, lsn, term, time: this.#clock.nowMs(), vote })
        .catch((error: unknown) => this.#fatal('persisting the term and vote', error));
    }
    const { messages } = step;
    const beat = messages.find((m) => m.message.type === 'heartbeat')?.message;
    if (beat?.type === 'heartbeat' && beat.seq !== undefined) this.#reads.sent(beat.seq);
    const send = (): void => messages.forEach(({ to, message }) => this.#transport.sendRaft(to, message));
    if (messages.length > 0) {
      if (this.#bugs.raftUnsynced === true) send();
      else void this.#raftDurable.then(send);
    }
    const after = step.state;
    if (event.kind === 'message' && event.message.type === 'heartbeatReply') this.#reads.answered(event.from, event.message.term, event.message.seq ?? 0);
    if (before.role === after.role && before.term === after.term && before.leader === after.leader) return;
    this.log.info({ role: after.role, term: after.term, leader: after.leader, vote: after.vote, reason: event.kind === 'message' ? `${event.message.type} from ${event.from}` : event.kind, was: { role: before.role, term: before.term, leader: before.leader } }, `election: ${after.role} in term ${after.term}`);
    if (after.role === 'candidate' && (before.role !== 'candidate' || before.term !== after.term)) this.#emit({ kind: 'campaign', term: after.term });
    if (before.leader !== after.leader || (after.leader !== NO_REPLICA && before.term !== after.term)) {
      this.#emit({ kind: 'leaderChanged', term: after.term, leader: after.leader === NO_REPLICA ? null : after.leader });
    }
    if (before.role === 'leader' && (after.role !== 'leader' || after.term !== before.term)) {
      this.#stepDown(after.term !== before.term ? `term ${after.term} seen` : event.kind === 'tick' ? 'no quorum heard within the election timeout' : event.kind);
    }
    if (after.role === 'leader' && (before.role !== 'leader' || before.term !== after.term)) {
      void this.#promote(after.term).catch((error: unknown) => this.#fatal('promoting', error));
    }
    void this.#publish();
  }

  #heard(replica: ReplicaId, vclock: VClock): void {
    this.#peerHeardAt.set(replica, this.#clock.nowMs());
    this.#peerVclocks.set(replica, vclockMerge(this.#peerVclocks.get(replica) ?? [], vclock));
  }

  #onAck(replica: ReplicaId, vclock: VClock, term: Term): void {
    // A newer term makes a leader a follower at once, and its ack counts for nothing (DESIGN.md §5).
    if (term > this.term) {
      this.#elect({ kind: 'term', term });
      return;
    }
    this.#heard(replica, vclock);
    this.#step({ kind: 'ack', replica, lsn: vclockGet(vclock, this.#self) });
  }

  /** Leadership lost: stop accepting writes; what is pending stays prepared for the next PROMOTE to decide. */
  #stepDown(reason: string): void {
    this.#writable = false;
    this.#promotedTerm = null;
    this.#reads.lost();
    const pending = this.#limbo?.entries.length ?? 0;
    this.#step({ kind: 'abandon' });
    this.#limbo = null;
    this.log.warn({ term: this.term, pending, reason }, 'no longer the leader: sync writes refused from now on');
    this.#emit({ kind: 'steppedDown', term: this.term, pending, reason });
  }

  /**
   * Won an election: take the limbo over (DESIGN.md §6). Wait until a quorum
   * holds this journal, write PROMOTE (the previous owner's entries up to the
   * lsn this node holds are kept, later ones rolled back), apply it, and
   * accept writes once a quorum holds the PROMOTE and PostgreSQL's fence says
   * leader. Abandoned as soon as leadership is lost.
   */
  async #promote(term: Term): Promise<void> {
    const started = this.#clock.nowMs();
    const still = (): boolean => !this.#stopping && this.#election.role === 'leader' && this.#election.term === term;
    await this.#queue; // what peers sent is journaled and applied here
    const target = this.#journal.vclock;
    if (!(await this.#until(() => this.#quorumHolds(target), still))) return;
    const prevOwner = this.#history.synchro.owner;
    const prevLsn = prevOwner === NO_REPLICA ? 0 as Lsn : vclockGet(target, prevOwner);
    let record!: JournalRecord & { kind: 'promote' };
    const { lsn, durable } = this.#own.append((l) => (record = { kind: 'promote', replica: this.#self, lsn: l, term, time: this.#now(), prevOwner, prevLsn, leader: this.#self }));
    await durable;
    this.#ownDurable();
    const applied = this.#queue.then(() => this.#applyUntilDone(record));
    this.#queue = applied.catch(() => undefined);
    await applied;
    // The previous owner's entries the PROMOTE keeps reach PostgreSQL through the apply queue (RFC 0012):
    // this node takes writes only once they are there.
    if (!(await this.#until(() => vclockCovers(this.#applied, vclockFromEntries([...vclockEntries(target).filter(([r]) => r !== this.#self && r !== REPLICA_LOCAL)])), still))) return;
    if (!still()) return;
    const quorum = this.#quorum - (this.#bugs.quorumOffByOne === true ? 1 : 0);
    this.#limbo = limboCreate({ owner: this.#self, members: this.#members, quorum, synchroTimeoutMs: this.config.synchroTimeoutMs }, lsn);
    this.#ownDurable();
    if (!(await this.#until(() => this.#quorumHolds(vclockFromEntries([[this.#self, lsn]])), still))) return;
    this.#promotedTerm = term;
    await this.#publish();
    if (!still()) return;
    this.#writable = true;
    this.log.info({ term, prevOwner, prevLsn, promoteLsn: lsn, ms: this.#clock.nowMs() - started }, 'leader: a quorum holds the PROMOTE; accepting sync writes');
    this.#emit({ kind: 'elected', term, ms: this.#clock.nowMs() - started });
  }

  #quorumHolds(target: VClock): boolean {
    return this.#holding(target, this.#members) >= this.#quorum;
  }

  /** How many of `members` are known to hold `target` durably (this node: its journal; peers: their acks). */
  #holding(target: VClock, members: readonly ReplicaId[]): number {
    return members.filter((m) => vclockCovers(m === this.#self ? this.#journal.vclock : this.#peerVclocks.get(m) ?? [], target)).length;
  }

  /** Poll until `done` (true) or until `still` stops holding (false). */
  async #until(done: () => boolean, still: () => boolean): Promise<boolean> {
    while (still()) {
      if (done()) return true;
      await this.#clock.sleep(5);
    }
    return false;
  }

  /** Write the election's state to qsync.node, in order, retrying while PostgreSQL is away. */
  #publish(): Promise<void> {
    const run = this.#published.then(async () => {
      for (let attempt = 1; !this.#stopping; attempt += 1) {
        try {
          const e = this.#election;
          const role = e.role === 'leader' && this.#promotedTerm === e.term ? 'leader' : e.role === 'follower' ? 'follower' : 'candidate';
          await this.#db.publish({ term: e.term, role, leader: e.leader, leaderAddress: this.leaderAddress() ?? '' });
          return;
        } catch (error) {
          this.log.warn({ attempt, err: (error as Error).message }, 'writing qsync.node failed; retrying');
          await this.#clock.sleep(Math.min(1_000, 50 * attempt));
        }
      }
    });
    this.#published = run;
    return run;
  }

  /** Before a write: wait out a transfer, or a PROMOTE this node is completing (bounded). */
  async settled(): Promise<void> {
    const deadline = this.#clock.nowMs() + 4 * this.config.electionTimeoutMs;
    while (this.#clock.nowMs() < deadline && (this.#transfer !== null || (this.#election.role === 'leader' && !this.#writable))) {
      await this.#clock.sleep(5);
    }
  }

  // ---- operator control -----------------------------------------------------------

  status(): NodeStatus {
    const e = this.#election;
    const now = this.#clock.nowMs();
    const tail = this.#journal.tailVclock;
    this.#lag.note(tail, now);
    const oldest = this.#limbo?.entries[0];
    const { owner, term } = this.#history.synchro;
    return {
      replica: this.#self, term: e.term, role: this.#writable ? 'leader' : e.role, leader: e.leader === NO_REPLICA ? null : e.leader,
      leaderAddress: this.leaderAddress() ?? null, vote: e.vote, electionMode: this.config.electionMode, writable: this.#writable,
      limbo: {
        owner, term, pending: this.#limbo?.entries.length ?? 0, oldestAgeMs: oldest === undefined ? 0 : now - oldest.createdAtMs,
        confirmedLsn: owner === NO_REPLICA ? 0 : Math.max(this.#history.confirmedLsn(owner), this.#limbo?.confirmedLsn ?? 0),
      },
      vclock: this.#journal.vclock, applied: this.#applied,
      journal: { start: this.#journal.retention?.oldestVclock ?? [], bytes: this.#journal.retention?.sizeBytes ?? null },
      splitBrainRecords: this.splitBrainRecords, promoted: { ...this.promoted },
      stuck: this.#retrying !== null ? `${this.#retrying.what} keeps failing: ${this.#retrying.error}`
        : this.#unfit.first !== undefined ? `not acknowledging records of node ${this.#unfit.first.replica} from lsn ${this.#unfit.first.lsn}: this node could not apply them: ${this.#unfit.first.reason}`
          : this.#rejoin !== null ? `rejoining by snapshot from node ${this.#rejoin.peer}` : this.#gap,
      members: { version: this.membership.version, quorum: this.#quorum, nodes: this.membership.members },
      peers: this.#peers.map((p) => {
        const replica = p.replica;
        const vclock = this.#peerVclocks.get(replica) ?? [];
        const heardAt = this.#peerHeardAt.get(replica);
        const lag = this.#lag.lag(vclock, tail, now);
        return {
          replica, connected: this.#transport.connected(replica), vclock, lagRecords: lag.records, lagMs: lag.ms,
          heardAgoMs: heardAt === undefined ? null : now - heardAt,
        };
      }),
    };
  }

  /** What every log line carries besides the node. */
  logContext(): { term: number; role: string } {
    return { term: this.#election.term, role: this.#writable ? 'leader' : this.#election.role };
  }

  #emit(event: NodeEvent): void {
    try {
      this.#observe(event);
    } catch (error) {
      this.log.error({ err: (error as Error).message, event: event.kind }, 'an observer failed; the node goes on');
    }
  }

  /** The election's state, for the simulator's invariants. */
  get election(): ElectionState {
    return this.#election;
  }

  /** Campaign now (election mode manual, or an operator override); resolves once this node accepts writes. */
  async promote(): Promise<NodeStatus> {
    if (this.config.electionMode === 'off') throw new QsyncError('BAD_REQUEST', `node ${this.#self} has election mode off and cannot be promoted; set --election-mode manual or candidate`);
    if (!this.#writable) this.#elect({ kind: 'promote' });
    const deadline = this.#clock.nowMs() + 3 * this.config.electionTimeoutMs;
    await this.#until(() => this.#writable, () => !this.#stopping && this.#clock.nowMs() < deadline);
    if (!this.#writable) throw new QsyncError('NOT_LEADER', `node ${this.#self} did not win the election within ${3 * this.config.electionTimeoutMs} ms (term ${this.term}); see its log`, { term: this.term });
    return this.status();
  }

  /** Step down; another node is elected (this one stays quiet for two election timeouts). */
  demote(): NodeStatus {
    if (this.#election.role !== 'leader') throw this.notLeader('NOT_LEADER', `node ${this.#self} is not the leader; nothing to demote`);
    this.#elect({ kind: 'demote' });
    return this.status();
  }

  /**
   * Switchover to `to`: hold new writes, wait until the limbo is empty and `to`
   * holds this whole journal, then TimeoutNow; `to` wins at once with no
   * failed write. Resolves once `to` leads; gives up after three election
   * timeouts (catching up under load takes more than one).
   */
  async transfer(to: ReplicaId): Promise<NodeStatus> {
    if (!this.#writable) throw this.notLeader('NOT_LEADER', `node ${this.#self} is not the leader; transfer from the leader`);
    if (!this.#peers.some((p) => p.replica === to)) throw new QsyncError('BAD_REQUEST', `replica ${to} is not a peer of node ${this.#self}`);
    if (this.#transfer !== null) throw new QsyncError('BAD_REQUEST', 'a transfer is already in progress');
    const term = this.term;
    const budgetMs = 3 * this.config.electionTimeoutMs;
    const deadline = this.#clock.nowMs() + budgetMs;
    const within = (): boolean => !this.#stopping && this.#clock.nowMs() < deadline && this.#election.term === term;
    let done!: () => void;
    this.#transfer = new Promise<void>((resolve) => (done = resolve));
    try {
      // The tail, not the durable vclock: a CONFIRM still being written would leave `to` behind, and refused.
      const caughtUp = await this.#until(() => this.#writes.beforeLimbo === 0 && (this.#limbo?.entries.length ?? 0) === 0 && vclockCovers(this.#peerVclocks.get(to) ?? [], this.#journal.tailVclock), within);
      if (!caughtUp) throw new QsyncError('BAD_REQUEST', `replica ${to} did not catch up within ${budgetMs} ms; leadership stays with node ${this.#self}`);
      this.#elect({ kind: 'transfer', to });
      await this.#until(() => this.#election.leader === to, () => !this.#stopping && this.#clock.nowMs() < deadline);
      if (this.#election.leader !== to) throw new QsyncError('BAD_REQUEST', `replica ${to} did not take over within ${budgetMs} ms (leader: ${this.#election.leader})`);
      return this.status();
    } finally {
      this.#transfer = null;
      done();
    }
  }

  /**
   * Add a node or remove one (docs/rfc/0010-membership.md): only a leader
   * whose own term's PROMOTE a quorum holds (it has confirmed an entry of its
   * term), one change at a time, one node at a time. The CONFIG record is a
   * limbo entry: confirmed by a quorum of the members before it, it takes
   * effect on each node as that node learns so. Resolves once a quorum of the
   * new members holds the confirmation too, so that the next change cannot
   * meet a node still counting quorums among the members before this one.
   */
  async changeMembers(change: MembershipChange): Promise<{ membership: Membership; replica: ReplicaId }> {
    if (!this.#writable) throw this.notLeader('NOT_LEADER', `node ${this.#self} is not the leader; change membership through ${this.leaderName()}`);
    if (this.#changingMembers) throw new QsyncError('BAD_REQUEST', 'a membership change is in progress; one node at a time: retry once it is done');
    const current = this.membership;
    if (change.kind === 'add') {
      // A join retried (its first answer was lost): the node is a member already.
      const same = current.members.find((m) => m.address === change.member.address && m.client === change.member.client && m.admin === change.member.admin);
      if (same !== undefined) return { membership: current, replica: same.replica };
    }
    const held = this.#membersHeld();
    if (held !== null) throw new QsyncError('BAD_REQUEST', held);
    const taken = vclockEntries(this.#journal.tailVclock).map(([replica]) => replica).filter((r) => r !== REPLICA_LOCAL);
    const next = membershipChange(current, change, taken, this.#self);
    if (typeof next === 'string') throw new QsyncError('BAD_REQUEST', next);
    const replica = change.kind === 'remove' ? change.replica : (next.members.find((m) => !current.members.some((c) => c.replica === m.replica)) as Member).replica;
    this.#changingMembers = true;
    try {
      let gid = '';
      const decided = new Promise<void>((resolve, reject) => {
        const { lsn } = this.#own.reserve();
        gid = gidFor(this.config.clusterId, this.#self, lsn);
        this.#memberGids.add(gid);
        this.#waiters.set(gid, { resolve, reject: (error) => reject(membersOutcome(error, next.version)) });
        const record: ConfigRecord = { kind: 'config', replica: this.#self, lsn, term: this.term, time: this.#now(), members: next.members, quorum: next.quorum, membersVersion: next.version };
        this.#own.submit(record).then(() => this.#ownDurable(), (error: unknown) => this.#fatal('journaling a membership change', error));
      });
      this.log.info({ change: change.kind, replica, version: next.version, members: next.members.map((m) => m.replica), quorum: next.quorum }, `membership change: ${change.kind === 'add' ? `adding node ${replica}` : `removing node ${replica}`}`);
      await decided.finally(() => this.#memberGids.delete(gid));
      // The CONFIRM was appended before the entry was answered.
      this.#membersTarget = { version: next.version, lsn: vclockGet(this.#journal.tailVclock, this.#self), before: current };
      const term = this.term;
      const inTime = this.#clock.nowMs() + this.config.synchroTimeoutMs;
      const settled = await this.#until(() => this.#membersHeld() === null, () => !this.#stopping && this.#election.term === term && this.#clock.nowMs() < inTime);
      if (!settled) {
        throw new QsyncError('OUTCOME_UNKNOWN', `the membership change to version ${next.version} is confirmed, but a quorum of the new members did not hold it within ${this.config.synchroTimeoutMs} ms; the next change waits for that (see qsync status)`);
      }
      return { membership: next, replica };
    } finally {
      this.#changingMembers = false;
    }
  }

  /** Why the membership is not yet safe to change again (this leader's last change not held by a quorum of its members), or null. */
  #membersHeld(): string | null {
    const target = this.#membersTarget;
    if (target === null) return null;
    const membership = this.membership;
    if (membership.version < target.version) return `membership version ${target.version} is not in effect here yet`;
    const confirm = vclockFromEntries([[this.#self, target.lsn]]);
    const why = membership.version > target.version ? null : membershipSettled(target.before, membership, (m) => this.#holding(confirm, [m]) === 1);
    if (why === null) this.#membersTarget = null;
    return why;
  }

  /** A membership record this leader wrote: a limbo entry with no prepared transaction behind it. */
  #memberEntry(record: ConfigRecord): void {
    const gid = gidFor(this.config.clusterId, this.#self, record.lsn);
    if (this.#limbo === null) {
      this.#settle(gid, new QsyncError('OUTCOME_UNKNOWN', `node ${this.#self} lost leadership while the membership change was written`));
      return;
    }
    this.#step({ kind: 'append', entry: { lsn: record.lsn, gid, createdAtMs: this.#clock.nowMs() } });
  }

  // ---- the limbo -----------------------------------------------------------------

  #step(event: LimboEvent): void {
    if (this.#limbo === null) return;
    const { state, actions } = limboStep(this.#limbo, event);
    this.#limbo = state;
    for (const action of actions) this.#act(action);
  }

  #act(action: LimboAction): void {
    switch (action.kind) {
      case 'confirm': {
        // A quorum holds these entries, so they are safe before CONFIRM is durable here: commit and
        // answer at once. (After a crash the journal lacks the CONFIRM; the entry is found committed.)
        const { durable } = this.#own.append((lsn) => ({ kind: 'confirm', replica: this.#self, lsn, term: this.term, time: this.#now(), owner: this.#self, confirmedLsn: action.confirmedLsn }));
        void durable.then(() => this.#ownDurable()).catch((error: unknown) => this.#fatal('journaling CONFIRM', error));
        this.#finishUntilDone('commit', action.gids, (gid) => {
          this.#prepared.delete(gid);
          this.#settle(gid, null);
        }, (gid) => this.#settle(gid, null));
        return;
      }
      case 'rollback':
        this.#rollBack(action.fromLsn, action.gids);
        return;
      case 'rolledBack':
        // A quorum holds the ROLLBACK: no new leader can commit these any more.
        this.#finishUntilDone('rollback', action.gids, (gid) => {
          this.#prepared.delete(gid);
          this.#settle(gid, new QsyncError('ROLLED_BACK', `transaction ${gid} was rolled back: no quorum held it within ${this.config.synchroTimeoutMs} ms`));
        });
        return;
      case 'unknown':
        for (const gid of action.gids) this.#settle(gid, new QsyncError('OUTCOME_UNKNOWN', `the outcome of ${gid} is not known; ask for it by idempotency key`));
        return;
      case 'full':
        this.#settle(action.gid, new QsyncError('OUTCOME_UNKNOWN', `the limbo was full when ${action.gid} arrived`));
    }
  }

  /**
   * A synchro timeout: write ROLLBACK(fromLsn). Entries no peer has received
   * are certain: withheld from now on (before any relay can send them), they
   * are rolled back and answered RolledBack once the record is durable. The
   * others stay prepared until a quorum holds the ROLLBACK (`rolledBack`) or a
   * PROMOTE decides them, since a new leader may hold them and commit them;
   * their clients hear OutcomeUnknown if that takes longer than the timeout.
   */
  #rollBack(fromLsn: Lsn, gids: readonly string[]): void {
    const lsnOf = (gid: string): number => parseGid(this.config.clusterId, gid)?.lsn ?? 0;
    const unsent = gids.filter((gid) => lsnOf(gid) > this.#sentOwnLsn);
    const sent = gids.filter((gid) => lsnOf(gid) <= this.#sentOwnLsn);
    const withheldFrom = unsent.length > 0 ? lsnOf(unsent[0] as string) as Lsn : undefined;
    const { lsn, durable } = this.#own.append((l) => ({
      kind: 'rollback', replica: this.#self, lsn: l, term: this.term, time: this.#now(), owner: this.#self, fromLsn,
      ...(withheldFrom === undefined ? {} : { withheldFromLsn: withheldFrom }),
    }));
    // At once, not when the record reaches the journal: no relay may send these TXNs in between.
    if (withheldFrom !== undefined) this.#history.withhold({ from: withheldFrom, to: (lsn - 1) as Lsn, reason: 'rolledBack' });
    this.log.warn({ fromLsn, transactions: gids.length, unsent: unsent.length }, 'no quorum within the synchro timeout: rolling back');
    this.#emit({ kind: 'limboTimeout', term: this.term, fromLsn, transactions: gids.length });
    void durable.then(async () => {
      this.#step({ kind: 'rollbackJournaled', fromLsn, recordLsn: lsn });
      this.#ownDurable();
      this.#finishUntilDone('rollback', unsent, (gid) => {
        this.#prepared.delete(gid);
        this.#settle(gid, new QsyncError('ROLLED_BACK', `transaction ${gid} was rolled back: no quorum held it within ${this.config.synchroTimeoutMs} ms, and no peer received it`));
      });
    }).catch((error: unknown) => this.#fatal('journaling ROLLBACK', error));
    if (sent.length === 0) return;
    this.#clock.after(this.config.synchroTimeoutMs, () => {
      for (const gid of sent) this.#settle(gid, new QsyncError('OUTCOME_UNKNOWN', `transaction ${gid} is being rolled back, but a peer holds it and no quorum has confirmed the rollback yet; ask for its outcome by idempotency key`));
    });
  }

  /** The prepared gids of `owner` with lsn in [from, to]; each leaves the set once it is finished. */
  #preparedOf(owner: ReplicaId, from: number, to: number): string[] {
    return [...this.#prepared].filter((gid) => {
      const entry = parseGid(this.config.clusterId, gid);
      return entry !== null && entry.replica === owner && entry.lsn >= from && entry.lsn <= to;
    });
  }

  #ownAppended(record: JournalRecord): void {
    this.#revived.push(...this.#history.apply(record));
    this.#membershipFollow();
    // A PROMOTE of this node decides the entries waiting in the apply queue.
    if (record.kind === 'promote') this.#kick();
    if (record.kind === 'config' && record.members !== undefined) {
      this.#memberEntry(record);
      return;
    }
    if (record.kind !== 'txn' || !record.sync) return;
    if (isWithheld(this.#history.withheld, record)) {
      // Written after a PROMOTE deposed this node: void, relayed to no one as written. Certain.
      this.#finishUntilDone('rollback', [record.gid], (gid) => {
        this.#prepared.delete(gid);
        this.#settle(gid, new QsyncError('ROLLED_BACK', `transaction ${gid} was rolled back: node ${this.#self} had been deposed by a new leader when it was written`));
      });
      return;
    }
    if (this.#limbo === null) {
      // Leadership was lost while this write ran: it stays prepared, and the next PROMOTE decides it.
      this.#settle(record.gid, new QsyncError('OUTCOME_UNKNOWN', `node ${this.#self} lost leadership while ${record.gid} was being written; it stays prepared until the next leader decides it: ask for its outcome by idempotency key`));
      return;
    }
    this.#step({ kind: 'append', entry: { lsn: record.lsn, gid: record.gid, createdAtMs: this.#clock.nowMs() } });
  }

  #ownDurable(): void {
    this.#step({ kind: 'durable', lsn: vclockGet(this.#journal.vclock, this.#self) });
  }

  #settle(gid: string, error: QsyncError | null): void {
    const waiter = this.#waiters.get(gid);
    if (waiter === undefined) return;
    this.#waiters.delete(gid);
    if (error === null) waiter.resolve();
    else waiter.reject(error);
  }

  /**
   * COMMIT or ROLLBACK PREPARED of decided entries, retried until PostgreSQL
   * takes it: the journal holds the decision, so a PostgreSQL crash costs
   * time, not the node. A leader whose PostgreSQL fails here steps down, so
   * that a node with a working PostgreSQL takes the writes. `answerEarly`
   * answers the waiting clients at the first failure: a confirmed entry is
   * final once a quorum holds it, whatever this PostgreSQL does.
   */
  #finishUntilDone(verb: 'commit' | 'rollback', gids: readonly string[], each: (gid: string) => void, answerEarly?: (gid: string) => void): void {
    // A membership entry has no prepared transaction behind it: decided here and now.
    const prepared = gids.filter((gid) => !this.#memberGids.has(gid));
    for (const gid of gids) if (this.#memberGids.has(gid)) each(gid);
    if (prepared.length === 0) return;
    const left = new Set(prepared);
    const finish = (): Promise<void> => this.#db.finish(verb, [...left], (gid) => {
      left.delete(gid);
      each(gid);
    });
    const firstFailure = (error: unknown): void => {
      this.postgresFailed(error);
      for (const gid of left) answerEarly?.(gid);
    };
    const what = `${verb === 'commit' ? 'COMMIT' : 'ROLLBACK'} PREPARED of decided entries`;
    const done = this.#untilDone(what, finish, { verb, transactions: prepared.length }, firstFailure).then(() => undefined, (error: unknown) => {
      if (error instanceof AssertionFailed) this.#fatal(what, error);
    });
    if (verb !== 'commit') return;
    this.#commitsUnderWay.add(done);
    void done.finally(() => this.#commitsUnderWay.delete(done));
  }


  /**
   * This node's PostgreSQL failed under a write: a leader steps down, so that
   * a node with a working PostgreSQL takes the writes (it may win a later
   * election again once its PostgreSQL is back).
   */
  postgresFailed(error: unknown): void {
    if (this.#election.role !== 'leader' || this.#stopping) return;
    this.log.warn({ err: (error as Error).message }, 'PostgreSQL failed under a write: stepping down so that a node with a working PostgreSQL leads');
    this.#elect({ kind: 'demote' });
  }

  #fatal(what: string, error: unknown): void {
    if (this.#stopping) return;
    this.log.fatal({ err: (error as Error).message }, `${what} failed; the node cannot go on safely`);
    this.#onFatal(what, error);
  }

  /** A hybrid clock: wall time, never behind anything seen, strictly increasing. */
  #now(): number {
    this.#hybrid = Math.max(this.#hybrid + 1, this.#clock.nowMs());
    return this.#hybrid;
  }

  // ---- writes (writes.ts) -----------------------------------------------------------

  /** What the write path reads and asks of the node. */
  #writesHost(): WritesHost {
    return {
      log: this.log,
      self: this.#self,
      term: () => this.term,
      isLeader: () => this.isLeader,
      recovered: () => this.#recovered,
      limboEntries: () => this.#limbo?.entries.length ?? 0,
      settled: () => this.settled(),
      notLeader: (code, message) => this.notLeader(code, message),
      leaderName: () => this.leaderName(),
      now: () => this.#now(),
      emit: (event) => this.#emit(event),
      waitFor: (gid) => new Promise<void>((resolve, reject) => this.#waiters.set(gid, { resolve, reject })),
      ownDurable: () => this.#ownDurable(),
      inQueue: (what, work, context) => {
        const run = this.#queue.then(() => this.#untilDone(what, work, context));
        this.#queue = run.then(() => undefined, () => undefined);
        return run;
      },
      orphaned: (gid) => {
        this.#orphans.add(gid);
        // Retried until PostgreSQL answers (it may be down: that is how the answer was lost); a gid it does not hold is done.
        this.#untilDone('rolling back a PREPARE whose write failed', () => this.#db.finish('rollback', [gid]), { gid }).catch((error: unknown) => {
          if (error instanceof AssertionFailed) this.#fatal('rolling back a PREPARE whose write failed', error);
        });
      },
    };
  }

  /**
   * The write path: run `work` in a qsync transaction on the session, journal
   * it in lsn order, and for a sync transaction wait until the limbo decides it.
   */
  write(session: S, idempotencyKey: string | null, term: Term | null, work: W): Promise<void> {
    return this.#writes.write(session, idempotencyKey, term, work);
  }

  /** The write path for a transaction a client already ran on its own session (writes.ts, the SQL front). */
  commitOpen<X>(open: (opening: WriteOpening) => LeaderTransaction<X>, work: X, idempotencyKey: string | null, term: Term): Promise<void> {
    return this.#writes.commitOpen(open, work, idempotencyKey, term);
  }

  /**
   * Settles once PostgreSQL holds what the journal holds now: the records
   * ahead of it in the apply queue, a resync after a PostgreSQL crash, and
   * own confirmed entries whose COMMIT PREPARED is under way.
   */
  async #caughtUp(): Promise<void> {
    // Planted bug readIndexNotApplied: a read runs as soon as the node wins, before its PostgreSQL has what it decided.
    if (this.#bugs.readIndexNotApplied === true) return;
    const target = this.#journal.vclock;
    const commits = Promise.all([...this.#commitsUnderWay]);
    await this.#until(() => !this.#resyncPending && vclockCovers(this.#applied, target), () => !this.#stopping);
    await commits;
  }

  /** Resolves when a linearizable read may run on this node's PostgreSQL (read-index.ts); NOT_LEADER when not. */
  async readIndex(): Promise<void> {
    const started = this.#clock.nowMs();
    try {
      await this.#reads.request();
      this.#emit({ kind: 'readIndex', outcome: 'served', ms: this.#clock.nowMs() - started });
    } catch (error) {
      this.#emit({ kind: 'readIndex', outcome: 'refused', ms: this.#clock.nowMs() - started });
      throw error;
    }
  }

  outcome(idempotencyKey: string): Promise<unknown> {
    return this.#writes.outcome(idempotencyKey);
  }

  /** Set a table's mode on every node (writes.ts); only the leader does it. */
  setTableMode(table: string, mode: TableMode): Promise<{ table: string; mode: TableMode; copiedRows: number }> {
    return this.#writes.setTableMode(table, mode);
  }

  /** Run a schema change on every node (writes.ts); only the leader does it. */
  runDdl(sql: string, role?: string): Promise<{ lsn: Lsn }> {
    return this.#writes.runDdl(sql, role);
  }

  /** The leader's client address, if a leader is known. */
  leaderAddress(): string | undefined {
    const leader = this.#election.leader;
    if (leader === NO_REPLICA) return undefined;
    if (leader === this.#self) return `${this.config.clientHost}:${this.config.clientPort}`;
    return this.#peers.find((p) => p.replica === leader)?.client;
  }

  leaderName(): string {
    const leader = this.#election.leader;
    return leader === NO_REPLICA ? 'the leader (none is known yet: an election is under way)' : `node ${leader}`;
  }

  notLeader(code: 'NOT_LEADER' | 'STALE_TERM', message: string): QsyncError {
    const leader = this.leaderAddress();
    return new QsyncError(code, message, { term: this.term, ...(leader === undefined ? {} : { leader }) });
  }
}

/** What `qsync status` and the admin interface show. */
export interface NodeStatus {
  readonly replica: number;
  readonly term: number;
  readonly role: string;
  readonly leader: number | null;
  readonly leaderAddress: string | null;
  readonly vote: number;
  readonly electionMode: string;
  readonly writable: boolean;
  /** The limbo's owner and term (last PROMOTE), its pending entries (on the leader) and how old the oldest is, and what CONFIRMs cover. */
  readonly limbo: { readonly owner: number; readonly term: number; readonly pending: number; readonly oldestAgeMs: number; readonly confirmedLsn: number };
  readonly vclock: VClock;
  readonly applied: VClock;
  /** Where the journal starts (records before it were removed: a peer that lacks them rejoins by snapshot) and its size. */
  readonly journal: { readonly start: VClock; readonly bytes: number | null };
  readonly splitBrainRecords: number;
  readonly promoted: { readonly committed: number; readonly rolledBack: number };
  /** Work the journal decided that has failed 4 times in a row and is still retried (a table that differs from the leader's, PostgreSQL away); null when none. */
  readonly stuck: string | null;
  /** The membership in effect: version 0 is the static configuration (--peers), each change adds one. */
  readonly members: { readonly version: number; readonly quorum: number; readonly nodes: readonly Member[] };
  /** Per peer: its link is up, what it acknowledged, how far behind this journal's tail it is, when it was last heard. */
  readonly peers: ReadonlyArray<{
    readonly replica: number; readonly connected: boolean; readonly vclock: VClock;
    readonly lagRecords: number; readonly lagMs: number; readonly heardAgoMs: number | null;
  }>;
}

/**
 * How many of its own records below PostgreSQL's highest applied one a node
 * checks one by one when it replays its journal: its writes commit
 * concurrently, so one may have failed while later ones committed. Far more
 * than the writes a node has in flight at once.
 */
const OWN_RECHECK_RECORDS = 10_000;

/** How often unfit records are checked against the tables read again. */
const UNFIT_RECHECK_MS = 1_000;

/** How often the tables' shapes are read again, for the check of records as they arrive. */
const TABLES_REFRESH_MS = 1_000;

/** The members the settings name, this node included. */
function configuredMembership(config: SidecarConfig): Membership {
  const self: Member = { replica: config.replicaId as ReplicaId, address: `${config.peerHost}:${config.peerPort}`, client: `${config.clientHost}:${config.clientPort}`, ...(config.adminPort === undefined ? {} : { admin: `${config.adminHost}:${config.adminPort}` }) };
  const peers = config.peers.map((p): Member => ({ replica: p.replica as ReplicaId, address: `${p.host}:${p.port}`, ...(p.client === undefined ? {} : { client: p.client }), ...(p.admin === undefined ? {} : { admin: p.admin }) }));
  return { members: [self, ...peers].sort((a, b) => a.replica - b.replica), quorum: config.quorum, version: 0 };
}

/** What the operator hears when a membership entry is not confirmed: the limbo's answer, told of the change. */
function membersOutcome(error: QsyncError, version: number): QsyncError {
  return new QsyncError(error.code, error.code === 'ROLLED_BACK'
    ? `the membership change to version ${version} was rolled back: no quorum held it in time; nothing changed`
    : `the outcome of the membership change to version ${version} is not known yet: the next leader keeps it if it holds it; qsync status shows the members in effect`);
}

/** How long a joining node waits for the peer it asked for a snapshot before it asks another. */
const JOIN_ASK_MS = 10_000;

/** How often the journal looks for segments it can remove. */
const RETENTION_CHECK_MS = 1_000;

/** Backoff between retries of work the journal already decided (apply, COMMIT/ROLLBACK PREPARED): 20 ms doubling to 1 s. */
function retryDelayMs(attempt: number): number {
  return Math.min(1_000, 10 * 2 ** Math.min(attempt, 9));
}
