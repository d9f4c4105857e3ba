// Leadership (DESIGN.md §6): the election core decides who leads; this module
// persists its term and vote before its messages leave, and acts on a change
// of role. The winner waits until a quorum holds its journal, writes PROMOTE,
// and accepts sync writes only once a quorum holds the PROMOTE too
// (`writable`). Losing leadership stops writes at once; PostgreSQL's fence
// follows qsync.node, which this module writes. Also the operator's controls:
// promote, demote, transfer.
import { electionStep, NO_REPLICA, type ElectionEvent } from '../core/election.js';
import { QsyncError } from '../core/errors.js';
import type { JournalRecord } from '../core/record.js';
import { REPLICA_LOCAL, type Lsn, type ReplicaId, type Term } from '../core/types.js';
import { vclockCovers, vclockEntries, vclockFromEntries, vclockGet, vclockMerge, type VClock } from '../core/vclock.js';
import type { NodeContext } from './context.js';

export class Leadership<S, W> {
  readonly #n: NodeContext<S, W>;
  /** Every message the election sends waits for the RAFT records written before it. */
  #raftDurable: Promise<void> = Promise.resolve();
  /** Leader, PROMOTE held by a quorum, qsync.node says so: sync writes are accepted. */
  #writable = false;
  /** The term whose PROMOTE a quorum holds, while this node leads it. */
  #promotedTerm: Term | null = null;
  /** A leadership transfer in progress: new writes wait for it. */
  #transfer: Promise<void> | null = null;
  /** Writes of qsync.node, in order: the PostgreSQL fence follows the election through them. */
  #published: Promise<void> = Promise.resolve();

  constructor(n: NodeContext<S, W>) {
    this.#n = n;
  }

  /** Accepting sync writes: elected, and its PROMOTE is held by a quorum. */
  get writable(): boolean {
    return this.#writable;
  }

  /** The term this node leads with its PROMOTE held by a quorum, or null. */
  get promotedTerm(): Term | null {
    return this.#promotedTerm;
  }

  /**
   * Step the election: persist its term and vote (a RAFT record), send its
   * messages only once that is durable, then act on a change of role, term or
   * leader.
   */
  elect(event: ElectionEvent): void {
    const n = this.#n;
    if (n.stopping) return;
    if (event.kind === 'message' && event.message.type === 'heartbeatReply' && event.message.term === n.term) this.#heard(event.from, event.message.vclock);
    const before = n.election;
    const planted = n.bugs.voteIgnoresVclock === true && event.kind === 'message' && event.message.type === 'vote';
    // Records this node could not apply count as not held, in its votes and its candidacy: it acknowledged
    // none of them, so no quorum counted it for them, and a leader must be able to apply what it holds.
    const step = electionStep(before, event, { nowMs: n.clock.nowMs(), vclock: planted ? [] : n.unfit.cap(n.journal.vclock) });
    n.election = step.state;
    if (step.persist !== null) {
      const { term, vote } = step.persist;
      const lsn = (vclockGet(n.journal.tailVclock, REPLICA_LOCAL) + 1) as Lsn;
      this.#raftDurable = n.journal.append({ kind: 'raft', replica: REPLICA_LOCAL, lsn, term, time: n.clock.nowMs(), vote })
        .catch((error: unknown) => n.fatal('persisting the term and vote', error));
    }
    const { messages } = step;
    const beat = messages.find((m) => m.message.type === 'heartbeat')?.message;
    if (beat?.type === 'heartbeat' && beat.seq !== undefined) n.reads.sent(beat.seq);
    const send = (): void => messages.forEach(({ to, message }) => n.transport.sendRaft(to, message));
    if (messages.length > 0) {
      if (n.bugs.raftUnsynced === true) send();
      else void this.#raftDurable.then(send);
    }
    const after = step.state;
    if (event.kind === 'message' && event.message.type === 'heartbeatReply') n.reads.answered(event.from, event.message.term, event.message.seq ?? 0);
    if (before.role === after.role && before.term === after.term && before.leader === after.leader) return;
    n.log.info({ role: after.role, term: after.term, leader: after.leader, vote: after.vote, reason: event.kind === 'message' ? `${event.message.type} from ${event.from}` : event.kind, was: { role: before.role, term: before.term, leader: before.leader } }, `election: ${after.role} in term ${after.term}`);
    if (after.role === 'candidate' && (before.role !== 'candidate' || before.term !== after.term)) n.emit({ kind: 'campaign', term: after.term });
    if (before.leader !== after.leader || (after.leader !== NO_REPLICA && before.term !== after.term)) {
      n.emit({ kind: 'leaderChanged', term: after.term, leader: after.leader === NO_REPLICA ? null : after.leader });
    }
    if (before.role === 'leader' && (after.role !== 'leader' || after.term !== before.term)) {
      this.stepDown(after.term !== before.term ? `term ${after.term} seen` : event.kind === 'tick' ? 'no quorum heard within the election timeout' : event.kind);
    }
    if (after.role === 'leader' && (before.role !== 'leader' || before.term !== after.term)) {
      void this.#takeOver(after.term).catch((error: unknown) => n.fatal('promoting', error));
    }
    void this.publish();
  }

  /** A new membership is in effect: the election counts its members and quorum from now on. */
  membersChanged(members: ReplicaId[], quorum: number): void {
    const n = this.#n;
    n.election = electionStep(n.election, { kind: 'members', members, quorum, mode: n.config.electionMode }, { nowMs: n.clock.nowMs(), vclock: n.journal.vclock }).state;
  }

  #heard(replica: ReplicaId, vclock: VClock): void {
    const n = this.#n;
    n.peerHeardAt.set(replica, n.clock.nowMs());
    n.peerVclocks.set(replica, vclockMerge(n.peerVclocks.get(replica) ?? [], vclock));
  }

  onAck(replica: ReplicaId, vclock: VClock, term: Term): void {
    // A newer term makes a leader a follower at once, and its ack counts for nothing (DESIGN.md §5).
    if (term > this.#n.term) {
      this.elect({ kind: 'term', term });
      return;
    }
    this.#heard(replica, vclock);
    this.#n.limbo.step({ kind: 'ack', replica, lsn: vclockGet(vclock, this.#n.self) });
  }

  /** Leadership lost: stop accepting writes; what is pending is the next PROMOTE's to decide, from the journal (held.ts). */
  stepDown(reason: string): void {
    const n = this.#n;
    this.#writable = false;
    this.#promotedTerm = null;
    n.reads.lost();
    const pending = n.limbo.abandon();
    n.held.stepDown();
    n.log.warn({ term: n.term, pending, reason }, 'no longer the leader: sync writes refused from now on');
    n.emit({ kind: 'steppedDown', term: n.term, pending, reason });
  }

  /**
   * Won an election: take the limbo over (DESIGN.md §6). Wait until a quorum
   * holds this journal, write PROMOTE (the previous owner's entries up to the
   * lsn this node holds are kept, later ones rolled back), apply it, and
   * accept writes once a quorum holds the PROMOTE and PostgreSQL's fence says
   * leader. Abandoned as soon as leadership is lost.
   */
  async #takeOver(term: Term): Promise<void> {
    const n = this.#n;
    const started = n.clock.nowMs();
    const still = (): boolean => !n.stopping && n.election.role === 'leader' && n.election.term === term;
    await n.queue; // what peers sent is journaled and applied here
    const target = n.journal.vclock;
    if (!(await n.until(() => this.quorumHolds(target), still))) return;
    const prevOwner = n.history.synchro.owner;
    const prevLsn = prevOwner === NO_REPLICA ? 0 as Lsn : vclockGet(target, prevOwner);
    let record!: JournalRecord & { kind: 'promote' };
    const { lsn, durable } = n.own.append((l) => (record = { kind: 'promote', replica: n.self, lsn: l, term, time: n.now(), prevOwner, prevLsn, leader: n.self }));
    await durable;
    n.limbo.ownDurable();
    const applied = n.queue.then(() => n.apply.applyUntilDone(record));
    n.queue = applied.catch(() => undefined);
    await applied;
    // The previous owner's entries the PROMOTE keeps reach PostgreSQL through the apply queue (RFC 0012):
    // this node takes writes only once they are there.
    if (!(await n.until(() => vclockCovers(n.applied, vclockFromEntries([...vclockEntries(target).filter(([r]) => r !== n.self && r !== REPLICA_LOCAL)])), still))) return;
    if (!still()) return;
    const quorum = n.quorum - (n.bugs.quorumOffByOne === true ? 1 : 0);
    n.limbo.open(lsn, quorum);
    n.limbo.ownDurable();
    if (!(await n.until(() => this.quorumHolds(vclockFromEntries([[n.self, lsn]])), still))) return;
    this.#promotedTerm = term;
    await this.publish();
    if (!still()) return;
    this.#writable = true;
    n.log.info({ term, prevOwner, prevLsn, promoteLsn: lsn, ms: n.clock.nowMs() - started }, 'leader: a quorum holds the PROMOTE; accepting sync writes');
    n.emit({ kind: 'elected', term, ms: n.clock.nowMs() - started });
  }

  quorumHolds(target: VClock): boolean {
    return this.holding(target, this.#n.memberIds) >= this.#n.quorum;
  }

  /** How many of `members` are known to hold `target` durably (this node: its journal; peers: their acks). */
  holding(target: VClock, members: readonly ReplicaId[]): number {
    const n = this.#n;
    return members.filter((m) => vclockCovers(m === n.self ? n.journal.vclock : n.peerVclocks.get(m) ?? [], target)).length;
  }

  /** Write the election's state to qsync.node, in order, retrying while PostgreSQL is away. */
  publish(): Promise<void> {
    const n = this.#n;
    const run = this.#published.then(async () => {
      for (let attempt = 1; !n.stopping; attempt += 1) {
        try {
          const e = n.election;
          const role = e.role === 'leader' && this.#promotedTerm === e.term ? 'leader' : e.role === 'follower' ? 'follower' : 'candidate';
          await n.db.publish({ term: e.term, role, leader: e.leader, leaderAddress: n.leaderAddress() ?? '' });
          return;
        } catch (error) {
          n.log.warn({ attempt, err: (error as Error).message }, 'writing qsync.node failed; retrying');
          await n.clock.sleep(Math.min(1_000, 50 * attempt));
        }
      }
    });
    this.#published = run;
    return run;
  }

  /** Before a write: wait out a transfer, or a PROMOTE this node is completing (bounded). */
  async settled(): Promise<void> {
    const n = this.#n;
    const deadline = n.clock.nowMs() + 4 * n.config.electionTimeoutMs;
    while (n.clock.nowMs() < deadline && (this.#transfer !== null || (n.election.role === 'leader' && !this.#writable))) {
      await n.clock.sleep(5);
    }
  }

  /** Campaign now (election mode manual, or an operator override); resolves once this node accepts writes. */
  async promote(): Promise<void> {
    const n = this.#n;
    if (n.config.electionMode === 'off') throw new QsyncError('BAD_REQUEST', `node ${n.self} has election mode off and cannot be promoted; set --election-mode manual or candidate`);
    if (!this.#writable) this.elect({ kind: 'promote' });
    const deadline = n.clock.nowMs() + 3 * n.config.electionTimeoutMs;
    await n.until(() => this.#writable, () => !n.stopping && n.clock.nowMs() < deadline);
    if (!this.#writable) throw new QsyncError('NOT_LEADER', `node ${n.self} did not win the election within ${3 * n.config.electionTimeoutMs} ms (term ${n.term}); see its log`, { term: n.term });
  }

  /** Step down; another node is elected (this one stays quiet for two election timeouts). */
  demote(): void {
    const n = this.#n;
    if (n.election.role !== 'leader') throw n.notLeader('NOT_LEADER', `node ${n.self} is not the leader; nothing to demote`);
    this.elect({ kind: 'demote' });
  }

  /**
   * Switchover to `to`: hold new writes, wait until the limbo is empty and `to`
   * holds this whole journal, then TimeoutNow; `to` wins at once with no
   * failed write. Resolves once `to` leads; gives up after three election
   * timeouts (catching up under load takes more than one).
   */
  async transfer(to: ReplicaId): Promise<void> {
    const n = this.#n;
    if (!this.#writable) throw n.notLeader('NOT_LEADER', `node ${n.self} is not the leader; transfer from the leader`);
    if (!n.peers.some((p) => p.replica === to)) throw new QsyncError('BAD_REQUEST', `replica ${to} is not a peer of node ${n.self}`);
    if (this.#transfer !== null) throw new QsyncError('BAD_REQUEST', 'a transfer is already in progress');
    const term = n.term;
    const budgetMs = 3 * n.config.electionTimeoutMs;
    const deadline = n.clock.nowMs() + budgetMs;
    const within = (): boolean => !n.stopping && n.clock.nowMs() < deadline && n.election.term === term;
    let done!: () => void;
    this.#transfer = new Promise<void>((resolve) => (done = resolve));
    try {
      // The tail, not the durable vclock: a CONFIRM still being written would leave `to` behind, and refused.
      const caughtUp = await n.until(() => n.writes.beforeLimbo === 0 && n.limbo.pending === 0 && vclockCovers(n.peerVclocks.get(to) ?? [], n.journal.tailVclock), within);
      if (!caughtUp) throw new QsyncError('BAD_REQUEST', `replica ${to} did not catch up within ${budgetMs} ms; leadership stays with node ${n.self}`);
      this.elect({ kind: 'transfer', to });
      await n.until(() => n.election.leader === to, () => !n.stopping && n.clock.nowMs() < deadline);
      if (n.election.leader !== to) throw new QsyncError('BAD_REQUEST', `replica ${to} did not take over within ${budgetMs} ms (leader: ${n.election.leader})`);
    } finally {
      this.#transfer = null;
      done();
    }
  }

  /**
   * This node's PostgreSQL failed under a write: a leader steps down, so that
   * a node with a working PostgreSQL takes the writes (it may win a later
   * election again once its PostgreSQL is back).
   */
  postgresFailed(error: unknown): void {
    const n = this.#n;
    if (n.election.role !== 'leader' || n.stopping) return;
    n.log.warn({ err: (error as Error).message }, 'PostgreSQL failed under a write: stepping down so that a node with a working PostgreSQL leads');
    this.elect({ kind: 'demote' });
  }
}
