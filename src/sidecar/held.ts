// Sync writes this leader holds open through their quorum wait instead of
// preparing them (RFC 0027, `syncHold: open`). Each is still a transaction on
// its client's connection: as invisible, and holding the same row locks, as
// a prepared one. The limbo's decision is carried out on that connection:
// COMMIT (without its own WAL flush: the journal holds the TXN durably) or
// ROLLBACK.
//
// Unlike a prepared transaction, an open one dies with its session
// (pg_terminate_backend, a PostgreSQL restart, the sidecar's own end), and
// PostgreSQL then releases its row locks at once. Three rules keep that safe:
//
//   1. Capture checks the ids of every entry here (xids) and refuses a write
//      if one has ended: a write that took a dead entry's rows never reaches
//      the journal (migrations/0006).
//   2. An entry found dead is lost: a COMMIT decided for it applies its TXN
//      from the journal instead, on the apply connection; a ROLLBACK has
//      nothing left to do. Its id stays in the check until then, and new
//      writes wait (whenNoneLost) while any entry is lost.
//   3. Recovery registers the own sync TXNs PostgreSQL neither applied nor
//      holds prepared, as lost entries (no session), so that their verdict is
//      carried out the same way.
//   4. A node that does not lead holds no row lock for an undecided entry of
//      its own: at a step-down the held ones are rolled back, and so are the
//      prepared ones (syncHold prepare, SERIALIZABLE writes): ROLLBACK
//      PREPARED, and each becomes a lost entry. Kept prepared, its locks could
//      stall the apply queue on an apply that needs its rows (another node's
//      async write journaled before the next PROMOTE) ahead of the PROMOTE
//      that decides it.
//
// Production and the simulator both run this module; only the sessions under
// it differ.
import { AssertionFailed } from '../core/assert.js';
import type { TxnRecord } from '../core/record.js';
import type { Lsn, ReplicaId } from '../core/types.js';
import type { FinishPlace, HeldDuty, NodeContext } from './context.js';
import type { HeldSession } from './io.js';

interface Held {
  readonly record: TxnRecord;
  /** PostgreSQL's id of the transaction; null for an entry recovery found lost (its session is gone). */
  readonly xid: string | null;
  /** Null once the session is gone: the entry is lost. */
  session: HeldSession | null;
  /** The write is told its transaction has ended and its connection is free. */
  readonly ended: () => void;
  /** The decision's COMMIT or ROLLBACK on the session, once begun: true when it carried the decision out. */
  ending: Promise<boolean> | null;
  /** A prepared write released when this node stopped leading (rule 4): PostgreSQL may still hold it prepared. */
  readonly prepared: boolean;
}

const LOST: Promise<boolean> = Promise.resolve(false);

export class HeldWrites<S, W> implements HeldDuty {
  readonly #n: NodeContext<S, W>;
  readonly #entries = new Map<string, Held>();
  #lost = 0;

  constructor(n: NodeContext<S, W>) {
    this.#n = n;
  }

  /** Entries held now, lost ones included. */
  get size(): number {
    return this.#entries.size;
  }

  /** Entries whose session is gone and whose verdict is not carried out yet. */
  get lost(): number {
    return this.#lost;
  }

  has(gid: string): boolean {
    return this.#entries.has(gid);
  }

  /**
   * The ids capture checks: every entry's, lost ones until their verdict is
   * carried out (rule 1). The planted bug `lostForgotten` drops a lost
   * entry's id at once.
   */
  xids(): string[] {
    const xids: string[] = [];
    for (const entry of this.#entries.values()) {
      if (entry.xid === null) continue;
      if (entry.session === null && this.#n.bugs.lostForgotten === true) continue;
      xids.push(entry.xid);
    }
    return xids;
  }

  /** This owner's held entries. */
  entriesOf(owner: ReplicaId): Array<{ readonly gid: string; readonly lsn: Lsn }> {
    return [...this.#entries.values()].filter((e) => e.record.replica === owner).map((e) => ({ gid: e.record.gid, lsn: e.record.lsn }));
  }

  /**
   * Hold a write's open transaction until the limbo decides it. Called before
   * its TXN is journaled (a decision may come as it is appended); resolves
   * once the transaction has ended, so that its connection can be reused.
   */
  hold(record: TxnRecord, xid: string, session: HeldSession): Promise<void> {
    return new Promise<void>((ended) => {
      this.#entries.set(record.gid, { record, xid, session, ended, ending: null, prepared: false });
    });
  }

  /** The TXN of a write held was not journaled after all: forget it (its write rolls it back). */
  unhold(gid: string): void {
    const entry = this.#entries.get(gid);
    if (entry === undefined) return;
    this.#remove(gid, entry);
  }

  /** Recovery found an own sync TXN that PostgreSQL neither applied nor holds prepared, undecided: lost (rule 3). */
  lostAtStart(record: TxnRecord): void {
    if (this.#entries.has(record.gid)) return;
    this.#entries.set(record.gid, { record, xid: null, session: null, ended: () => undefined, ending: null, prepared: false });
    this.#lost += 1;
  }

  /**
   * Leadership lost with own sync writes prepared and undecided (rule 4):
   * each becomes a lost entry now, before any decision can be applied here,
   * and is rolled back in PostgreSQL, retried until done. Its verdict
   * finishes it where PostgreSQL still holds it prepared (the rollback not
   * done yet, or undone by a crash) and otherwise applies a COMMIT from the
   * journal.
   */
  releasePrepared(records: readonly TxnRecord[]): void {
    const n = this.#n;
    if (n.bugs.preparedKept === true) return;
    const fresh = records.filter((record) => !this.#entries.has(record.gid));
    for (const record of fresh) {
      this.#entries.set(record.gid, { record, xid: null, session: null, ended: () => undefined, ending: LOST, prepared: true });
      this.#lost += 1;
      n.prepared.add(record.gid);
    }
    if (fresh.length > 0) n.log.warn({ transactions: fresh.length }, 'not the leader: its undecided prepared writes are rolled back, and the next PROMOTE decides each from the journal');
    this.#release(fresh.map((record) => record.gid));
  }

  /** PostgreSQL lists these prepared again after a crash of its own (their rollback was not flushed): released again. */
  releaseAgain(gids: readonly string[]): void {
    this.#release(gids.filter((gid) => this.#entries.get(gid)?.prepared === true));
  }

  #release(gids: readonly string[]): void {
    const n = this.#n;
    if (gids.length === 0) return;
    const what = 'rolling back the prepared writes of a node that does not lead';
    void n.untilDone(what, () => n.db.release(gids), { transactions: gids.length }).catch((error: unknown) => {
      if (error instanceof AssertionFailed) n.fatal(what, error);
    });
  }

  /** Capture named these held transactions as ended (its refusal's detail): their sessions are gone. */
  ended(xids: readonly string[]): void {
    for (const entry of this.#entries.values()) {
      if (entry.xid !== null && xids.includes(entry.xid)) this.#toLost(entry, 'capture found its transaction ended');
    }
  }

  /**
   * Leadership lost: every entry not being finished is rolled back now and
   * lost, and the next leader's PROMOTE decides it from the journal. A deposed
   * node holds no row locks for it, then: an apply here that needs one of its
   * rows (another node's async write, journaled before that PROMOTE) would
   * otherwise wait for a decision that is queued behind it.
   */
  stepDown(): void {
    this.#allLost('leadership lost');
  }

  /**
   * PostgreSQL went away (a crash, a restart, the connection to it): every
   * held session is gone with it, or is ended now. A crash may even hand a
   * lost transaction's id to a new one, so none of them is trusted again.
   * Returns how many were held: a leader then steps down, as one whose
   * COMMIT PREPARED fails does.
   */
  postgresLost(): number {
    const held = this.#entries.size;
    this.#allLost('PostgreSQL went away');
    return held;
  }

  /** The node stops: every held transaction is rolled back, and the journal decides each at the next start. */
  stopping(): void {
    this.#allLost('the node is stopping');
  }

  #allLost(why: string): void {
    for (const entry of this.#entries.values()) if (entry.ending === null) this.#toLost(entry, why);
  }

  /** Resolves once no entry is lost; rejects after the synchro timeout (a write must not wait for ever). */
  async whenNoneLost(): Promise<void> {
    const n = this.#n;
    if (this.#lost === 0) return;
    const deadline = n.clock.nowMs() + n.config.synchroTimeoutMs;
    if (!(await n.until(() => this.#lost === 0, () => !n.stopping && n.clock.nowMs() < deadline))) {
      throw n.notLeader('NOT_LEADER', `node ${n.self} is applying ${this.#lost} held write(s) whose sessions ended from its journal; it takes writes again once they are applied: retry`);
    }
  }

  /**
   * Carry out a decision: COMMIT or ROLLBACK the held ones among `gids` on
   * their sessions (a lost one's COMMIT applies its TXN from the journal),
   * and finish the rest as prepared transactions. `each` hears each gid
   * finished, as PreparedStore.finish says. Throws the first failure after
   * every gid was tried; the caller retries (each step is idempotent).
   */
  async finish(verb: 'commit' | 'rollback', gids: readonly string[], place: FinishPlace, each?: (gid: string, finished: boolean) => void): Promise<void> {
    // A PROMOTE names a released prepared write twice until its rollback is done: PostgreSQL lists it too.
    const held = [...new Set(gids)].filter((gid) => this.#entries.has(gid));
    if (held.length === 0) return this.#n.db.finish(verb, gids, each);
    const prepared = gids.filter((gid) => !this.#entries.has(gid));
    const work: Array<Promise<void>> = held.map((gid) => this.#finishOne(verb, gid, place).then(() => each?.(gid, true)));
    if (prepared.length > 0) work.push(this.#n.db.finish(verb, prepared, each));
    const settled = await Promise.allSettled(work);
    const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed !== undefined) throw failed.reason;
  }

  /** Roll back every held entry (a rejoin replaces the tables; the node stops). */
  async rollbackAll(): Promise<void> {
    await this.finish('rollback', [...this.#entries.keys()], 'in queue');
  }

  async #finishOne(verb: 'commit' | 'rollback', gid: string, place: FinishPlace): Promise<void> {
    const entry = this.#entries.get(gid);
    if (entry === undefined) return;
    // Two paths may carry out one decision at once (the limbo's CONFIRM, a CONFIRM record applied): the
    // session ends once, and each path may then apply a lost entry from the journal, which is idempotent.
    // A path inside the apply queue never waits for one outside it that waits for the queue.
    entry.ending ??= this.#endSession(verb, gid, entry);
    if (await entry.ending) return;
    if (!this.#entries.has(gid)) return;
    // Released (rule 4) but still prepared: the verdict finishes it there; no apply races its rows.
    let finished = false;
    if (entry.prepared) await this.#n.db.finish(verb, [gid], (_gid, done) => (finished = done));
    if (verb === 'commit' && !finished) {
      const apply = (): Promise<unknown> => this.#n.db.apply(entry.record, { prepare: false, exact: true });
      const outcome = place === 'in queue' ? await apply() : await this.#n.inQueue('applying a held write whose session ended', apply, { gid });
      if (outcome === 'applied') this.#n.log.warn({ gid }, 'applied a confirmed write from the journal: its held transaction had ended');
    }
    this.#remove(gid, entry);
  }

  /** COMMIT or ROLLBACK on the held session: true when that carried the decision out, false when the entry is lost. */
  async #endSession(verb: 'commit' | 'rollback', gid: string, entry: Held): Promise<boolean> {
    const session = entry.session;
    if (session === null) return false;
    try {
      await (verb === 'commit' ? session.commit() : session.rollback());
      this.#remove(gid, entry);
      return true;
    } catch (error) {
      // The session ended, or its COMMIT failed: PostgreSQL rolled the transaction back either way.
      this.#toLost(entry, (error as Error).message);
      return false;
    }
  }

  #toLost(entry: Held, why: string): void {
    const session = entry.session;
    if (session === null) return;
    entry.session = null;
    this.#lost += 1;
    this.#n.log.warn({ gid: entry.record.gid, xid: entry.xid, why }, 'a held write\'s transaction ended before its verdict: the journal decides it, and new writes wait until it is carried out');
    // Should its session still live (it was only unreachable, or leadership was lost), ROLLBACK ends it:
    // a lost entry holds no row lock. Then the write may give its connection back.
    void session.rollback().catch(() => undefined).finally(entry.ended);
  }

  #remove(gid: string, entry: Held): void {
    if (this.#entries.get(gid) !== entry) return;
    this.#entries.delete(gid);
    if (entry.session === null) this.#lost -= 1;
    entry.ended();
  }
}

