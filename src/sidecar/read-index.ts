// Linearizable reads on the leader: a read index (Raft thesis §6.4, as etcd's
// ReadIndex and sorock's). A read may run once
//
//   1. this node leads and takes writes in term t (its PROMOTE is held by a
//      quorum and applied, so every entry a previous leader had acknowledged
//      is in its PostgreSQL: leadership.ts, which takes the limbo over);
//   2. a quorum, this node included, answered heartbeats of term t that this
//      node sent after the read arrived: no other node led a newer term at
//      that moment, so no write was acknowledged elsewhere that this node
//      lacks;
//   3. this node's PostgreSQL holds everything its journal held when the read
//      arrived: the apply queue has passed it, no resync after a PostgreSQL
//      crash is pending, and every own entry confirmed by then is committed
//      (a client is told COMMIT only after that, but one whose PostgreSQL
//      failed at COMMIT PREPARED is answered early).
//
// "Sent after the read arrived" is judged by round numbers, not clocks: every
// round of heartbeats the election sends carries the next number
// (core/election.ts heartbeatSeq), and answers echo it. A read notes the
// number of the latest round sent before it arrived (`after`); only answers
// to later rounds count for it. No clock is trusted for safety, only for the
// timeout.
//
// Reads arriving in one turn share one round; a read that arrives while one
// is out gets the next, sent at once: rounds overlap, so a read waits about
// one round trip to the nearest quorum.
import { QsyncError } from '../core/errors.js';
import type { ReplicaId, Term } from '../core/types.js';

/** What a read index asks of the node. */
export interface ReadIndexHost {
  after(ms: number, fn: () => void): void;
  /** The term in which this node leads and takes writes; null when it does not. */
  leading(): Term | null;
  /** Send a round of heartbeats of the current term to every peer now (the driver notes its number through `sent`). */
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
  /** A round is sent again for reads still waiting this long after the last (a heartbeat or its answer may be lost). */
  readonly retryMs: number;
  /** Planted bug for the simulator: a read runs as soon as this node leads, no quorum asked. */
  readonly unconfirmed?: boolean;
}

interface Read {
  readonly term: Term;
  /** The number of the latest round sent before the read arrived: only answers to later ones count for it. */
  readonly after: number;
  readonly resolve: () => void;
  readonly reject: (error: QsyncError) => void;
  done: boolean;
}

export class ReadIndex {
  readonly #host: ReadIndexHost;
  readonly #options: ReadIndexOptions;
  #waiting: Read[] = [];
  /** Per peer: the latest round it answered, and in which term. */
  readonly #answered = new Map<ReplicaId, { readonly term: Term; readonly seq: number }>();
  /** The number of the latest round this node sent, for any reason (a tick's, or one for reads). */
  #lastSent = 0;
  /** A round for waiting reads is due on the next turn. */
  #sendDue = false;
  /** A check that sends again for reads still waiting is due. */
  #retryDue = false;

  constructor(host: ReadIndexHost, options: ReadIndexOptions) {
    this.#host = host;
    this.#options = options;
  }

  /** How many reads wait for their index. */
  get waiting(): number {
    return this.#waiting.length;
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
    const read: Read = { term, after: this.#lastSent, resolve: resolveRead, reject: rejectRead, done: false };
    if (this.#options.unconfirmed === true) {
      this.#end(read, null);
    } else {
      this.#waiting.push(read);
      this.#check();
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
        this.#waiting = this.#waiting.filter((r) => !r.done);
      });
      Promise.all([confirmed, caughtUp]).then(() => end(null), (error: unknown) => end(error instanceof QsyncError ? error : this.#refused(String(error))));
    });
    if (this.#host.leading() !== term) throw this.#refused('leadership changed while the read waited');
  }

  /** The driver sent round `seq` of heartbeats (a tick's, or one for reads). */
  sent(seq: number): void {
    this.#lastSent = Math.max(this.#lastSent, seq);
  }

  /** A peer answered round `seq` of heartbeats of `term`. */
  answered(from: ReplicaId, term: Term, seq: number): void {
    const known = this.#answered.get(from);
    if (known !== undefined && (known.term > term || (known.term === term && known.seq >= seq))) return;
    this.#answered.set(from, { term, seq });
    if (this.#waiting.length > 0) this.#check();
  }

  /** Leadership is lost: no waiting read may run here. */
  lost(): void {
    const reads = this.#waiting;
    this.#waiting = [];
    for (const read of reads) this.#end(read, this.#refused('this node stopped leading while the read waited'));
  }

  /** Let every read a quorum has confirmed run; ask for heartbeats for the others. */
  #check(): void {
    const term = this.#host.leading();
    for (const read of this.#waiting) {
      if (read.done) continue;
      if (term !== read.term) {
        this.#end(read, this.#refused('leadership changed while the read waited'));
        continue;
      }
      const answered = new Set<ReplicaId>();
      for (const [peer, a] of this.#answered) if (a.term === read.term && a.seq > read.after) answered.add(peer);
      if (this.#host.isQuorum(answered)) this.#end(read, null);
    }
    this.#waiting = this.#waiting.filter((r) => !r.done);
    this.#next();
  }

  /**
   * Rounds for waiting reads: on the next turn for reads no round left after
   * (so that reads arriving together share it); again after `retryMs` for
   * reads still waiting.
   */
  #next(): void {
    if (this.#waiting.length === 0) return;
    const fresh = this.#waiting.some((r) => r.after >= this.#lastSent);
    if (fresh && !this.#sendDue) {
      this.#sendDue = true;
      this.#host.after(0, () => {
        this.#sendDue = false;
        this.#send();
      });
    }
    if (!fresh && !this.#retryDue) {
      this.#retryDue = true;
      const sent = this.#lastSent;
      this.#host.after(this.#options.retryMs, () => {
        this.#retryDue = false;
        this.#waiting = this.#waiting.filter((r) => !r.done);
        if (this.#waiting.length === 0) return;
        // No round left since: send again (a heartbeat or its answer may be lost).
        if (this.#lastSent === sent) this.#send();
        else this.#next();
      });
    }
  }

  #send(): void {
    this.#waiting = this.#waiting.filter((r) => !r.done);
    if (this.#waiting.length === 0) return;
    if (this.#host.leading() === null) {
      this.lost();
      return;
    }
    const before = this.#lastSent;
    this.#host.heartbeat();
    if (this.#lastSent <= before) {
      this.lost();
      return;
    }
    this.#check();
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
