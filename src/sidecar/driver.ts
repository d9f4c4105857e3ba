// The node driver: the sidecar's logic above the I/O shells, the same code in
// production (node.ts gives it files, TCP and PostgreSQL) and in the
// simulator (test/sim gives it a simulated clock, network, journal store and
// PostgreSQL, all driven by one seed). It builds the node's duties over one
// shared context (context.ts says which duty writes which state), starts and
// stops them, and is the node's public face.
//
// Start: recover (recovery.ts: reconcile prepared transactions with the
// journal's verdicts; replay what the journal holds beyond PostgreSQL's
// applied vclock); then serve, as a follower until elected.
//
// The duties:
//   intake.ts       records from peers: journal, check, acknowledge (RFC 0012)
//   apply.ts        the apply queue: journal order into PostgreSQL
//   recovery.ts     PostgreSQL against the journal, at start and after a PostgreSQL crash
//   leadership.ts   election, PROMOTE, qsync.node, transfer (DESIGN.md §6)
//   own-limbo.ts    this leader's limbo and its decisions (DESIGN.md §5)
//   members.ts      membership changes (RFC 0010)
//   rejoin.ts       snapshots (RFC 0009)
//   retention.ts    journal trims (RFC 0009)
//   writes.ts       the leader's write path, over leader-write.ts's order of duties
//   read-index.ts   linearizable reads (RFC 0015)
//   status.ts       what qsync status shows
import { electionCreate, type ElectionState } from '../core/election.js';
import { QsyncError } from '../core/errors.js';
import { LimboHistory } from '../core/history.js';
import type { Membership, MembershipChange } from '../core/membership.js';
import type { TableMode } from '../core/record.js';
import type { Lsn, ReplicaId, Term } from '../core/types.js';
import { vclockCovers } from '../core/vclock.js';
import { emptied, isWithheld } from '../core/withheld.js';
import type { Logger } from '../log.js';
import type { LeaderTransaction, WriteOpening } from '../postgres/leader.js';
import { ApplyPipeline } from './apply.js';
import { HeldWrites } from './held.js';
import type { SidecarConfig } from './config.js';
import { NodeContext, type NodePorts } from './context.js';
import { Intake } from './intake.js';
import type { NodeObserver, PlantedBugs } from './io.js';
import { Leadership } from './leadership.js';
import { configuredMembership, Members } from './members.js';
import { OwnLimbo } from './own-limbo.js';
import { OwnLog } from './own-log.js';
import { ReadIndex } from './read-index.js';
import { Recovery } from './recovery.js';
import { Rejoin } from './rejoin.js';
import { Retention } from './retention.js';
import { StatusView, type NodeStatus } from './status.js';
import { Writes, type WritesHost } from './writes.js';

export type { NodeStatus } from './status.js';

export interface DriverOptions<S, W> extends NodePorts<S, W> {
  /** Seeds the election's randomised timeouts. */
  readonly seed: number;
  readonly bugs?: PlantedBugs;
  /** Told of commits, elections, step-downs, timeouts and refusals (metrics, Redis events). */
  readonly observe?: NodeObserver;
  /** A new node (qsync join): its first sync is a snapshot; `done` once one is loaded. */
  readonly joining?: { readonly done: () => void };
}

/** How often the journal looks for segments it can remove. */
const RETENTION_CHECK_MS = 1_000;

/** How often the tables' shapes are read again, for the check of records as they arrive. */
const TABLES_REFRESH_MS = 1_000;

export class NodeDriver<S, W> {
  readonly config: SidecarConfig;
  readonly log: Logger;
  readonly #n: NodeContext<S, W>;
  // The duties, as the driver calls them (the context offers each only what the others call).
  readonly #intake: Intake<S, W>;
  readonly #recovery: Recovery<S, W>;
  readonly #leadership: Leadership<S, W>;
  readonly #members: Members<S, W>;
  readonly #rejoin: Rejoin<S, W>;
  readonly #writes: Writes<S, W>;
  readonly #reads: ReadIndex;
  readonly #retention: Retention<S, W>;
  readonly #view: StatusView<S, W>;
  #stopTicks: (() => void) | null = null;
  #stopRetention: (() => void) | null = null;
  #stopTablesRefresh: (() => void) | null = null;
  #tablesRefreshing = false;

  constructor(options: DriverOptions<S, W>) {
    const { config, journal } = options;
    this.config = config;
    this.log = options.log;
    const self = config.replicaId as ReplicaId;
    const configured = configuredMembership(config);
    const durable = { term: (journal.raft?.term ?? 0) as Term, vote: (journal.raft?.vote ?? 0) as ReplicaId };
    const n = new NodeContext<S, W>({
      config, log: options.log, clock: options.clock, journal, db: options.db, transport: options.transport,
      bugs: options.bugs ?? {}, observe: options.observe ?? (() => undefined), onFatal: options.onFatal, configured,
      history: new LimboHistory(self),
      election: electionCreate({
        self, members: configured.members.map((m) => m.replica), quorum: config.quorum,
        mode: config.electionMode, electionTimeoutMs: config.electionTimeoutMs, heartbeatMs: config.heartbeatIntervalMs,
      }, durable, options.seed, options.clock.nowMs()),
    });
    this.#n = n;
    n.intake = this.#intake = new Intake(n);
    n.apply = new ApplyPipeline(n);
    n.recovery = this.#recovery = new Recovery(n);
    n.leadership = this.#leadership = new Leadership(n);
    n.limbo = new OwnLimbo(n);
    n.members = this.#members = new Members(n);
    n.rejoin = this.#rejoin = new Rejoin(n, options.joining ?? null);
    n.own = new OwnLog(journal, self, config.clusterId, (record) => n.limbo.ownAppended(record));
    n.held = new HeldWrites(n);
    n.writes = this.#writes = new Writes(this.#writesHost(), n.db, n.own, n.clock, n.bugs);
    n.reads = this.#reads = new ReadIndex({
      after: (ms, fn) => n.clock.after(ms, fn),
      leading: () => (n.election.role === 'leader' && (n.bugs.readIndexNotApplied === true || (n.leadership.writable && n.leadership.promotedTerm === n.election.term)) ? n.election.term : null),
      heartbeat: () => n.leadership.elect({ kind: 'heartbeat' }),
      isQuorum: (answered) => n.memberIds.filter((m) => m === self || answered.has(m)).length >= n.quorum,
      caughtUp: () => this.#caughtUp(),
      leaderName: () => n.leaderName(),
    }, { timeoutMs: config.electionTimeoutMs, retryMs: config.heartbeatIntervalMs, unconfirmed: n.bugs.readIndexUnconfirmed === true });
    this.#retention = new Retention(n);
    this.#view = new StatusView(n);
    n.db.onLost(() => this.#recovery.lost());
  }

  /** Accepting sync writes: elected, and its PROMOTE is held by a quorum. */
  get isLeader(): boolean {
    return this.#n.leadership.writable;
  }

  get term(): Term {
    return this.#n.term;
  }

  /** The membership in effect: the last confirmed membership record, or the static configuration (version 0). */
  get membership(): Membership {
    return this.#n.membership;
  }

  /** The election's state, for the simulator's invariants. */
  get election(): ElectionState {
    return this.#n.election;
  }

  /** Recover, then serve: peer links and the tick. */
  async start(): Promise<void> {
    const n = this.#n;
    await this.#recovery.recover();
    n.recovered = true;
    n.members.follow();
    // qsync.node may still say what a previous life of this node was (a leader): it starts as a follower.
    void n.leadership.publish();
    const { config } = this;
    await n.transport.start({
      subscribeFrom: () => n.journal.tailVclock,
      onRecord: (record) => this.#intake.take(record),
      ack: () => ({ vclock: n.intake.acknowledged(), term: n.term }),
      onAck: (replica, vclock, term) => this.#leadership.onAck(replica, vclock, term),
      onRaft: (from, message) => n.leadership.elect({ kind: 'message', from, message }),
      outgoing: (record) => (record.replica === n.self && isWithheld(n.history.withheld, record) ? emptied(config.clusterId, record) : record),
      onSent: (record) => {
        if (record.replica === n.self) n.limbo.sentOwnLsn = Math.max(n.limbo.sentOwnLsn, record.lsn);
      },
      takesSnapshot: () => this.#rejoin.takesSnapshot(),
      joining: (peer) => this.#rejoin.joinFrom(peer),
      onGap: (peer, reason) => this.#rejoin.onGap(peer, reason),
      serveSnapshot: (subscriber) => this.#rejoin.offer(subscriber),
      takeSnapshot: (peer, begin) => this.#rejoin.take(peer, begin),
    });
    if (n.journal.retention !== undefined) this.#stopRetention = n.clock.every(RETENTION_CHECK_MS, () => void this.#retention.retain());
    // The tables as they are now: a change made outside qsync (a column dropped on one node) is seen within a
    // second, so records it makes unfit are not acknowledged (RFC 0012). On the apply connection, in its turn.
    this.#stopTablesRefresh = n.clock.every(TABLES_REFRESH_MS, () => {
      if (this.#tablesRefreshing || n.stopping) return;
      this.#tablesRefreshing = true;
      const run = n.queue.then(() => n.db.reloadTables()).catch((error: unknown) => {
        this.log.debug({ err: (error as Error).message }, 'reading the tables again failed');
      }).finally(() => {
        this.#tablesRefreshing = false;
      });
      n.queue = run;
    });
    const tickMs = Math.max(5, Math.min(25, config.heartbeatIntervalMs / 4, config.synchroTimeoutMs / 10));
    this.#stopTicks = n.clock.every(tickMs, () => {
      n.leadership.elect({ kind: 'tick' });
      n.limbo.step({ kind: 'tick', nowMs: n.clock.nowMs() });
      this.#view.note();
      if (!n.unfit.none) {
        n.intake.liftUnfit();
        n.apply.kick();
      }
    });
  }

  /** Stop serving; clients still waiting hear OutcomeUnknown. The caller closes the journal and PostgreSQL. */
  async stop(): Promise<void> {
    const n = this.#n;
    n.stopping = true;
    this.#stopTicks?.();
    this.#stopRetention?.();
    this.#stopTablesRefresh?.();
    await n.transport.stop();
    await n.queue.catch(() => undefined);
    // Writes held open end with the node: their connections go back, and the next start's recovery finds them.
    n.held.stopping();
    for (const [gid, waiter] of n.waiters) waiter.reject(new QsyncError('OUTCOME_UNKNOWN', `node stopping before ${gid} was decided; ask for its outcome by idempotency key`));
  }

  allowRejoin(): NodeStatus {
    this.#rejoin.allow();
    return this.status();
  }

  /** Before a write: wait out a transfer, or a PROMOTE this node is completing (bounded). */
  settled(): Promise<void> {
    return this.#n.leadership.settled();
  }

  status(): NodeStatus {
    return this.#view.status();
  }

  /** What every log line carries besides the node. */
  logContext(): { term: number; role: string } {
    const n = this.#n;
    return { term: n.election.term, role: n.leadership.writable ? 'leader' : n.election.role };
  }

  /** Campaign now (election mode manual, or an operator override); resolves once this node accepts writes. */
  async promote(): Promise<NodeStatus> {
    await this.#leadership.promote();
    return this.status();
  }

  /** Step down; another node is elected (this one stays quiet for two election timeouts). */
  demote(): NodeStatus {
    this.#leadership.demote();
    return this.status();
  }

  /** Switchover to `to` (leadership.ts); resolves once `to` leads. */
  async transfer(to: ReplicaId): Promise<NodeStatus> {
    await this.#leadership.transfer(to);
    return this.status();
  }

  /** Add a node or remove one (members.ts, docs/rfc/0010-membership.md). */
  changeMembers(change: MembershipChange): Promise<{ membership: Membership; replica: ReplicaId }> {
    return this.#members.change(change);
  }

  /** This node's PostgreSQL failed under a write: a leader steps down (leadership.ts). */
  postgresFailed(error: unknown): void {
    this.#n.leadership.postgresFailed(error);
  }

  // ---- writes (writes.ts) -----------------------------------------------------------

  /** What the write path reads and asks of the node. */
  #writesHost(): WritesHost {
    const n = this.#n;
    return {
      log: this.log,
      self: n.self,
      term: () => n.term,
      isLeader: () => n.leadership.writable,
      recovered: () => n.recovered,
      limboEntries: () => n.limbo.pending,
      settled: () => n.leadership.settled(),
      notLeader: (code, message) => n.notLeader(code, message),
      leaderName: () => n.leaderName(),
      now: () => n.now(),
      emit: (event) => n.emit(event),
      waitFor: (gid) => n.limbo.waitFor(gid),
      ownDurable: () => n.limbo.ownDurable(),
      inQueue: (what, work, context) => n.inQueue(what, work, context),
      orphaned: (gid) => this.#recovery.orphaned(gid),
      held: this.config.syncHold === 'open' ? n.held : null,
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
    const n = this.#n;
    // Planted bug readIndexNotApplied: a read runs as soon as the node wins, before its PostgreSQL has what it decided.
    if (n.bugs.readIndexNotApplied === true) return;
    const target = n.journal.vclock;
    const commits = n.limbo.commitsUnderWay();
    await n.until(() => !n.resyncPending && vclockCovers(n.applied, target), () => !n.stopping);
    await commits;
  }

  /** Resolves when a linearizable read may run on this node's PostgreSQL (read-index.ts); NOT_LEADER when not. */
  async readIndex(): Promise<void> {
    const n = this.#n;
    const started = n.clock.nowMs();
    try {
      await this.#reads.request();
      n.emit({ kind: 'readIndex', outcome: 'served', ms: n.clock.nowMs() - started });
    } catch (error) {
      n.emit({ kind: 'readIndex', outcome: 'refused', ms: n.clock.nowMs() - started });
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
    return this.#n.leaderAddress();
  }

  leaderName(): string {
    return this.#n.leaderName();
  }

  notLeader(code: 'NOT_LEADER' | 'STALE_TERM', message: string): QsyncError {
    return this.#n.notLeader(code, message);
  }
}
