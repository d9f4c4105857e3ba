// This leader's limbo (DESIGN.md §5): the pure state machine (core/limbo.ts)
// stepped with this node's own records as they are appended and made durable,
// and with peers' acks; its decisions carried out. A CONFIRM commits at once
// (a quorum holds the entries); a ROLLBACK withholds what no peer received and
// rolls it back once durable; the rest waits for a quorum or a PROMOTE. Also
// answers the clients waiting on each gid.
import { AssertionFailed } from '../core/assert.js';
import { QsyncError } from '../core/errors.js';
import { gidFor, parseGid } from '../core/gid.js';
import { limboCreate, limboStep, type LimboAction, type LimboEvent, type LimboState } from '../core/limbo.js';
import type { ConfigRecord, JournalRecord, TxnRecord } from '../core/record.js';
import type { Lsn, ReplicaId } from '../core/types.js';
import { vclockGet } from '../core/vclock.js';
import { isWithheld } from '../core/withheld.js';
import type { NodeContext } from './context.js';

export class OwnLimbo<S, W> {
  readonly #n: NodeContext<S, W>;
  /** The limbo while this node leads (opened by Leadership once its PROMOTE is applied, abandoned when it steps down). */
  #limbo: LimboState | null = null;
  /** COMMIT PREPARED of confirmed own entries under way: a linearizable read waits for those begun before it. */
  readonly #commitsUnderWay = new Set<Promise<void>>();
  /** Gids standing for membership records in the limbo: no prepared transaction is behind them. */
  readonly #memberGids = new Set<string>();
  /**
   * This leader's sync TXNs that stand for prepared transactions (syncHold prepare, or SERIALIZABLE
   * writes: held.ts holds the others), from their append until their verdict is being carried out:
   * what a step-down hands to HeldWrites.releasePrepared.
   */
  readonly #preparedTxns = new Map<string, TxnRecord>();
  /** Highest own lsn ever written to any peer (the transport tells). */
  sentOwnLsn = 0;

  constructor(n: NodeContext<S, W>) {
    this.#n = n;
  }

  /** Entries waiting for a quorum. */
  get pending(): number {
    return this.#limbo?.entries.length ?? 0;
  }

  /** What status shows: the oldest entry's creation time, and the highest lsn confirmed. */
  get view(): { readonly oldestCreatedAtMs: number | undefined; readonly confirmedLsn: number } {
    return { oldestCreatedAtMs: this.#limbo?.entries[0]?.createdAtMs, confirmedLsn: this.#limbo?.confirmedLsn ?? 0 };
  }

  /** Take the limbo over from `lsn` (this node's PROMOTE). */
  open(lsn: Lsn, quorum: number): void {
    const n = this.#n;
    this.#limbo = limboCreate({ owner: n.self, members: n.memberIds, quorum, synchroTimeoutMs: n.config.synchroTimeoutMs }, lsn);
  }

  /**
   * Leadership lost: the next PROMOTE decides the entries pending (their
   * clients hear OUTCOME_UNKNOWN); those prepared are rolled back here and
   * left to the journal, as held ones are (held.ts). Returns how many were pending.
   */
  abandon(): number {
    const pending = this.pending;
    this.step({ kind: 'abandon' });
    this.#limbo = null;
    this.#n.held.releasePrepared(this.#takePrepared([...this.#preparedTxns.keys()]));
    return pending;
  }

  /** The prepared TXNs of `gids`, which leave the set. */
  #takePrepared(gids: readonly string[]): TxnRecord[] {
    const records: TxnRecord[] = [];
    for (const gid of gids) {
      const record = this.#preparedTxns.get(gid);
      if (record === undefined) continue;
      this.#preparedTxns.delete(gid);
      records.push(record);
    }
    return records;
  }

  /** The settles of COMMIT PREPAREDs under way now. */
  commitsUnderWay(): Promise<unknown> {
    return Promise.all([...this.#commitsUnderWay]);
  }

  /** A client waits for the limbo's verdict on `gid`. */
  waitFor(gid: string): Promise<void> {
    return new Promise<void>((resolve, reject) => this.#n.waiters.set(gid, { resolve, reject }));
  }

  /** A membership entry: no prepared transaction stands behind `gid`. */
  memberGid(gid: string, held: boolean): void {
    if (held) this.#memberGids.add(gid);
    else this.#memberGids.delete(gid);
  }

  step(event: LimboEvent): void {
    if (this.#limbo === null) return;
    const { state, actions } = limboStep(this.#limbo, event);
    this.#limbo = state;
    for (const action of actions) this.#act(action);
  }

  #act(action: LimboAction): void {
    const n = this.#n;
    switch (action.kind) {
      case 'confirm': {
        // A quorum holds these entries, so they are safe before CONFIRM is durable here: commit and
        // answer at once. (After a crash the journal lacks the CONFIRM; the entry is found committed.)
        const { durable } = n.own.append((lsn) => ({ kind: 'confirm', replica: n.self, lsn, term: n.term, time: n.now(), owner: n.self, confirmedLsn: action.confirmedLsn }));
        void durable.then(() => this.ownDurable()).catch((error: unknown) => n.fatal('journaling CONFIRM', error));
        this.#finishUntilDone('commit', action.gids, (gid) => {
          n.prepared.delete(gid);
          this.settle(gid, null);
        }, (gid) => this.settle(gid, null));
        return;
      }
      case 'rollback':
        this.#rollBack(action.fromLsn, action.gids);
        return;
      case 'rolledBack':
        // A quorum holds the ROLLBACK: no new leader can commit these any more.
        this.#finishUntilDone('rollback', action.gids, (gid) => {
          n.prepared.delete(gid);
          this.settle(gid, new QsyncError('ROLLED_BACK', `transaction ${gid} was rolled back: no quorum held it within ${n.config.synchroTimeoutMs} ms`));
        });
        return;
      case 'unknown':
        for (const gid of action.gids) this.settle(gid, new QsyncError('OUTCOME_UNKNOWN', `the outcome of ${gid} is not known; ask for it by idempotency key`));
        return;
      case 'full':
        this.settle(action.gid, new QsyncError('OUTCOME_UNKNOWN', `the limbo was full when ${action.gid} arrived`));
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
    const n = this.#n;
    const lsnOf = (gid: string): number => parseGid(n.config.clusterId, gid)?.lsn ?? 0;
    const unsent = gids.filter((gid) => lsnOf(gid) > this.sentOwnLsn);
    const sent = gids.filter((gid) => lsnOf(gid) <= this.sentOwnLsn);
    const withheldFrom = unsent.length > 0 ? lsnOf(unsent[0] as string) as Lsn : undefined;
    const { lsn, durable } = n.own.append((l) => ({
      kind: 'rollback', replica: n.self, lsn: l, term: n.term, time: n.now(), owner: n.self, fromLsn,
      ...(withheldFrom === undefined ? {} : { withheldFromLsn: withheldFrom }),
    }));
    // At once, not when the record reaches the journal: no relay may send these TXNs in between.
    if (withheldFrom !== undefined) n.history.withhold({ from: withheldFrom, to: (lsn - 1) as Lsn, reason: 'rolledBack' });
    n.log.warn({ fromLsn, transactions: gids.length, unsent: unsent.length }, 'no quorum within the synchro timeout: rolling back');
    n.emit({ kind: 'limboTimeout', term: n.term, fromLsn, transactions: gids.length });
    void durable.then(async () => {
      this.step({ kind: 'rollbackJournaled', fromLsn, recordLsn: lsn });
      this.ownDurable();
      this.#finishUntilDone('rollback', unsent, (gid) => {
        n.prepared.delete(gid);
        this.settle(gid, new QsyncError('ROLLED_BACK', `transaction ${gid} was rolled back: no quorum held it within ${n.config.synchroTimeoutMs} ms, and no peer received it`));
      });
    }).catch((error: unknown) => n.fatal('journaling ROLLBACK', error));
    if (sent.length === 0) return;
    n.clock.after(n.config.synchroTimeoutMs, () => {
      for (const gid of sent) this.settle(gid, new QsyncError('OUTCOME_UNKNOWN', `transaction ${gid} is being rolled back, but a peer holds it and no quorum has confirmed the rollback yet; ask for its outcome by idempotency key`));
    });
  }

  /** The prepared gids of `owner` with lsn in [from, to]; each leaves the set once it is finished. */
  preparedOf(owner: ReplicaId, from: number, to: number): string[] {
    const n = this.#n;
    return [...n.prepared].filter((gid) => {
      const entry = parseGid(n.config.clusterId, gid);
      return entry !== null && entry.replica === owner && entry.lsn >= from && entry.lsn <= to;
    });
  }

  /** One of this node's records was appended (OwnLog): the history takes it, and a sync TXN or membership record enters the limbo. */
  ownAppended(record: JournalRecord): void {
    const n = this.#n;
    n.revived.push(...n.history.apply(record));
    n.members.follow();
    // A PROMOTE of this node decides the entries waiting in the apply queue.
    if (record.kind === 'promote') n.apply.kick();
    if (record.kind === 'config' && record.members !== undefined) {
      this.#memberEntry(record);
      return;
    }
    if (record.kind !== 'txn' || !record.sync) return;
    if (isWithheld(n.history.withheld, record)) {
      // Written after a PROMOTE deposed this node: void, relayed to no one as written. Certain.
      this.#finishUntilDone('rollback', [record.gid], (gid) => {
        n.prepared.delete(gid);
        this.settle(gid, new QsyncError('ROLLED_BACK', `transaction ${gid} was rolled back: node ${n.self} had been deposed by a new leader when it was written`));
      });
      return;
    }
    if (!n.held.has(record.gid) && record.changes.length > 0) this.#preparedTxns.set(record.gid, record);
    if (this.#limbo === null) {
      // Leadership was lost while this write ran: the next PROMOTE decides it. Held open or prepared, it is
      // rolled back and lost, as at a step-down (held.ts): a node that does not lead holds no row lock for an
      // undecided entry, which an apply queued before that PROMOTE could wait for.
      n.held.stepDown();
      n.held.releasePrepared(this.#takePrepared([record.gid]));
      this.settle(record.gid, new QsyncError('OUTCOME_UNKNOWN', `node ${n.self} lost leadership while ${record.gid} was being written; the next leader decides it: ask for its outcome by idempotency key`));
      return;
    }
    this.step({ kind: 'append', entry: { lsn: record.lsn, gid: record.gid, createdAtMs: n.clock.nowMs() } });
  }

  /** A membership record this leader wrote: a limbo entry with no prepared transaction behind it. */
  #memberEntry(record: ConfigRecord): void {
    const n = this.#n;
    const gid = gidFor(n.config.clusterId, n.self, record.lsn);
    if (this.#limbo === null) {
      this.settle(gid, new QsyncError('OUTCOME_UNKNOWN', `node ${n.self} lost leadership while the membership change was written`));
      return;
    }
    this.step({ kind: 'append', entry: { lsn: record.lsn, gid, createdAtMs: n.clock.nowMs() } });
  }

  ownDurable(): void {
    this.step({ kind: 'durable', lsn: vclockGet(this.#n.journal.vclock, this.#n.self) });
  }

  settle(gid: string, error: QsyncError | null): void {
    const waiter = this.#n.waiters.get(gid);
    if (waiter === undefined) return;
    this.#n.waiters.delete(gid);
    if (error === null) waiter.resolve();
    else waiter.reject(error);
  }

  /**
   * COMMIT or ROLLBACK of decided entries (prepared, or held open: held.ts), retried until PostgreSQL
   * takes it: the journal holds the decision, so a PostgreSQL crash costs
   * time, not the node. A leader whose PostgreSQL fails here steps down, so
   * that a node with a working PostgreSQL takes the writes. `answerEarly`
   * answers the waiting clients at the first failure: a confirmed entry is
   * final once a quorum holds it, whatever this PostgreSQL does.
   */
  #finishUntilDone(verb: 'commit' | 'rollback', gids: readonly string[], each: (gid: string) => void, answerEarly?: (gid: string) => void): void {
    const n = this.#n;
    // Its verdict is being carried out: no step-down releases it any more.
    this.#takePrepared(gids);
    // A membership entry has no prepared transaction behind it: decided here and now.
    const prepared = gids.filter((gid) => !this.#memberGids.has(gid));
    for (const gid of gids) if (this.#memberGids.has(gid)) each(gid);
    if (prepared.length === 0) return;
    const left = new Set(prepared);
    const finish = (): Promise<void> => n.held.finish(verb, [...left], 'outside', (gid) => {
      left.delete(gid);
      each(gid);
    });
    const firstFailure = (error: unknown): void => {
      n.leadership.postgresFailed(error);
      for (const gid of left) answerEarly?.(gid);
    };
    const what = `${verb === 'commit' ? 'COMMIT' : 'ROLLBACK'} PREPARED of decided entries`;
    const done = n.untilDone(what, finish, { verb, transactions: prepared.length }, firstFailure).then(() => undefined, (error: unknown) => {
      if (error instanceof AssertionFailed) n.fatal(what, error);
    });
    if (verb !== 'commit') return;
    this.#commitsUnderWay.add(done);
    void done.finally(() => this.#commitsUnderWay.delete(done));
  }
}
