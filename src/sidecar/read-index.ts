// Linearizable reads on the leader: a read index (Raft thesis §6.4, as etcd's
// ReadIndex and sorock's). A read may run once
//
//   1. this node leads and takes writes in term t (its PROMOTE is held by a
//      quorum and applied, so every entry a previous leader had acknowledged
//      is in its PostgreSQL: driver.ts #promote);
//   2. a quorum, this node included, answered a heartbeat of term t that this
//      node sent after the read arrived: no other node led a newer term at
//      that moment, so no write was acknowledged elsewhere that this node
//      lacks;
//   3. this node's PostgreSQL holds everything its journal held when the read
//      arrived: the apply queue has passed it, no resync after a PostgreSQL
//      crash is pending, and every own entry confirmed by then is committed
//      (a client is told COMMIT only after that, but one whose PostgreSQL
//      failed at COMMIT PREPARED is answered early).
//
// Reads arriving in one turn share one round of heartbeats; a read that
// arrives while a round is out waits for the next one, so the cost is at most
// two round trips, and one heartbeat per peer per round however many read.
//
// "Sent after the read arrived" is judged by the heartbeat's send time, which
// its answer echoes: a round's send time is above that of every heartbeat
// sent before it (the round waits for the clock to move on if it must), and
// only answers carrying exactly that time count for it. A wall clock that
// steps back only delays reads until it passes the last send time again.
import { QsyncError } from '../core/errors.js';
import type { ReplicaId, Term } from '../core/types.js';

/** What a read index asks of the node. */
export interface ReadIndexHost {
  nowMs(): number;
  after(ms: number, fn: () => void): void;
  /** The term in which this node leads and takes writes; null when it does not. */
  leading(): Term | null;
  /** Send heartbeats of the current term to every peer now (the driver notes their send time through `sent`). */
  heartbeat(): void;
  /** Whether `answered`, with this node, is a quorum of the current members. */
  isQuorum(answered: ReadonlySet<ReplicaId>): boolean;
  /** Settles once this node's PostgreSQL holds what its journal holds now (3 above). */
  caughtUp(): Promise<void>;
  /** Who to ask instead, for an error. */
  leaderName(): string;
}

export interface ReadIndexOptions {
  /** A read not confirmed within this is refused (NOT_LEADER: the client may try the leader again). */
  readonly timeoutMs: number;
  /** A round not answered by a quorum within this is sent again (a heartbeat may be lost). */
  readonly retryMs: number;
  /** Planted bug for the simulator: a read runs as soon as this node leads, no quorum asked. */
  readonly unconfirmed?: boolean;
}

interface Read {
  readonly term: Term;
  readonly resolve: () => void;
  readonly reject: (error: QsyncError) => void;
  done: boolean;
}

interface Round {
  readonly term: Term;
  readonly sentMs: number;
  readonly answered: Set<ReplicaId>;
  readonly reads: Read[];
}

export class ReadIndex {
  readonly #host: ReadIndexHost;
  readonly #options: ReadIndexOptions;
  /** Reads that arrived after the round under way was sent: they wait for the next. */
  #waiting: Read[] = [];
  #round: Round | null = null;
  /** The send time of the latest heartbeat this node sent, for any reason. */
  #lastSentMs = -Infinity;
  /** A round is due once the clock passes #lastSentMs. */
  #scheduled = false;

  constructor(host: ReadIndexHost, options: ReadIndexOptions) {
    this.#host = host;
    this.#options = options;
  }

  /** How many reads wait for their index. */
  get waiting(): number {
    return this.#waiting.length + (this.#round?.reads.length ?? 0);
  }

  /** Resolves when a read may run on this node's PostgreSQL; NOT_LEADER when it may not. */
  async request(): Promise<void> {
    const term = this.#host.leading();
    if (term === null) throw this.#refused('this node does not lead');
    const caughtUp = this.#host.caughtUp();
    let resolveRead!: () => void;
    let rejectRead!: (error: QsyncError) => void;
    const confirmed = new Promise<void>((resolve, reject) => {
      resolveRead = resolve;
      rejectRead = reject;
    });
    const read: Read = { term, resolve: resolveRead, reject: rejectRead, done: false };
    if (this.#options.unconfirmed === true) {
      this.#end(read, null);
    } else {
      this.#waiting.push(read);
      this.#next();
    }
    await new Promise<void>((resolve, reject) => {
      let done = false;
      const end = (error: QsyncError | null): void => {
        if (done) return;
        done = true;
        if (error === null) resolve();
        else reject(error);
      };
      this.#host.after(this.#options.timeoutMs, () => {
        const error = this.#refused(`no quorum confirmed its leadership within ${this.#options.timeoutMs} ms`);
        this.#end(read, error);
        end(error);
        this.#drop();
      });
      Promise.all([confirmed, caughtUp]).then(() => end(null), (error: unknown) => end(error instanceof QsyncError ? error : this.#refused(String(error))));
    });
    if (this.#host.leading() !== term) throw this.#refused('leadership changed while the read waited');
  }

  /** The driver sent heartbeats stamped `sentMs` (a tick's, or a round's). */
  sent(sentMs: number): void {
    this.#lastSentMs = Math.max(this.#lastSentMs, sentMs);
  }

  /** A peer answered a heartbeat of `term` sent at `sentMs`. */
  answered(from: ReplicaId, term: Term, sentMs: number): void {
    const round = this.#round;
    if (round === null || term !== round.term || sentMs !== round.sentMs) return;
    round.answered.add(from);
    if (!this.#host.isQuorum(round.answered)) return;
    this.#round = null;
    const still = this.#host.leading() === round.term;
    for (const read of round.reads) {
      if (still && read.term === round.term) this.#end(read, null);
      else this.#end(read, this.#refused('leadership changed while the read waited'));
    }
    this.#next();
  }

  /** Leadership is lost: no waiting read may run here. */
  lost(): void {
    const reads = [...(this.#round?.reads ?? []), ...this.#waiting];
    this.#round = null;
    this.#waiting = [];
    for (const read of reads) this.#end(read, this.#refused('this node stopped leading while the read waited'));
  }

  /** Reads whose caller stopped waiting leave the queues (the round they are in still completes). */
  #drop(): void {
    this.#waiting = this.#waiting.filter((r) => !r.done);
  }

  /**
   * Send the next round if reads wait and none is out: on the next turn, so
   * that reads arriving together share it, and once the clock has passed the
   * last heartbeat's send time.
   */
  #next(): void {
    if (this.#round !== null || this.#scheduled) return;
    this.#drop();
    if (this.#waiting.length === 0) return;
    this.#scheduled = true;
    this.#host.after(Math.max(0, this.#lastSentMs + 1 - this.#host.nowMs()), () => {
      this.#scheduled = false;
      this.#send();
    });
  }

  #send(): void {
    if (this.#round !== null) return;
    this.#drop();
    if (this.#waiting.length === 0) return;
    const term = this.#host.leading();
    if (term === null) {
      this.lost();
      return;
    }
    // A heartbeat already left in this millisecond, perhaps before these reads arrived: its answers
    // could not be told apart from the round's.
    if (this.#host.nowMs() <= this.#lastSentMs) {
      this.#next();
      return;
    }
    const before = this.#lastSentMs;
    this.#host.heartbeat();
    if (this.#lastSentMs <= before) {
      this.lost();
      return;
    }
    const round: Round = { term, sentMs: this.#lastSentMs, answered: new Set(), reads: this.#waiting };
    this.#waiting = [];
    this.#round = round;
    if (this.#host.isQuorum(round.answered)) {
      // A cluster of one.
      this.answered(0 as ReplicaId, term, round.sentMs);
      return;
    }
    this.#host.after(this.#options.retryMs, () => {
      if (this.#round !== round) return;
      // Unanswered (a heartbeat or its answer lost): its reads go first in the next round.
      this.#round = null;
      this.#waiting = [...round.reads, ...this.#waiting];
      this.#next();
    });
  }

  #end(read: Read, error: QsyncError | null): void {
    if (read.done) return;
    read.done = true;
    if (error === null) read.resolve();
    else read.reject(error);
  }

  #refused(why: string): QsyncError {
    return new QsyncError('NOT_LEADER', `a linearizable read runs on the leader after a quorum confirms it, and ${why}; the leader is ${this.#host.leaderName()}`);
  }
}
