// Records from peers, in arrival order per link (RFC 0012): drop what the
// journal already holds, refuse a gap, take a limbo record of an older term
// without effect (split-brain), append; once durable and checked against this
// node's tables they join the apply queue and are acknowledged. Records this
// node could not apply are not acknowledged (unfit.ts) until they fit or are
// passed.
import { QsyncError, RecordInvalid } from '../core/errors.js';
import type { JournalRecord, TxnRecord } from '../core/record.js';
import { REPLICA_LOCAL } from '../core/types.js';
import { vclockGet, vclockPlace, type VClock } from '../core/vclock.js';
import type { NodeContext } from './context.js';

/** How often unfit records are checked against the tables read again. */
const UNFIT_RECHECK_MS = 1_000;

export class Intake<S, W> {
  readonly #n: NodeContext<S, W>;
  /** The last record from a peer taken in: a duplicate of one is done when it is. */
  #last: Promise<void> = Promise.resolve();
  #unfitCheckedAtMs = 0;
  /** Records refused for an older term (split-brain), since start. */
  splitBrainRecords = 0;

  constructor(n: NodeContext<S, W>) {
    this.#n = n;
  }

  /**
   * Take a record from a peer. Synchronously, in arrival order: drop a
   * duplicate, refuse a gap, take an older term without effect, and queue the
   * journal append, so that a burst shares one fsync. Once durable, the
   * record is checked against this node's tables and joins the apply queue;
   * from then on it is acknowledged (RFC 0012). It reaches PostgreSQL in
   * journal order, a sync TXN once the limbo has decided it.
   */
  take(record: JournalRecord): Promise<void> {
    const n = this.#n;
    if (record.replica === n.self || record.replica === REPLICA_LOCAL) return Promise.resolve();
    if (n.rejoining !== null) return Promise.reject(new QsyncError('REJOINING', `node ${n.self} is taking a snapshot from node ${n.rejoining.peer}; it subscribes again once that is done`));
    const place = vclockPlace(n.journal.tailVclock, record.replica, record.lsn);
    // A duplicate from another relay: done when everything before it is.
    if (place === 'held') return this.#last;
    if (place === 'gap' && n.bugs.gapAccepted !== true) {
      // Refused before the history, the journal or PostgreSQL sees any of it: the link closes, the node
      // goes on, and the peer resends from this node's vclock when it subscribes again.
      const held = vclockGet(n.journal.tailVclock, record.replica);
      return Promise.reject(new RecordInvalid('lsn', `record ${record.replica}:${record.lsn} does not follow lsn ${held} of replica ${record.replica}, the last this node holds: a gap`));
    }
    if (n.history.isStale(record)) {
      // Journaled, so the writer's later records still arrive; decides nothing (docs/rfc/0003-stale-records.md).
      this.splitBrainRecords += 1;
      const synchro = n.history.synchro;
      n.log.warn({ replica: record.replica, lsn: record.lsn, kind: record.kind, recordTerm: record.term, limboTerm: synchro.term, owner: synchro.owner }, 'split-brain: a limbo record from an older term taken without effect');
      n.emit({ kind: 'splitBrain', term: n.term, from: record.replica, recordTerm: record.term, lsn: record.lsn });
    }
    n.revived.push(...n.history.apply(record));
    n.members.follow();
    n.hybrid = Math.max(n.hybrid, record.time);
    const durable = n.journal.append(record);
    durable.catch((error: unknown) => n.fatal('journaling a record from a peer', error));
    // Journal, then apply: PostgreSQL never holds a record the journal may lose (a row applied and
    // then refused by the journal would stay on this node alone).
    const taken = durable.then(() => this.#admit(record));
    this.#last = taken.catch(() => undefined);
    return n.bugs.ackBeforeDurable === true ? Promise.resolve() : taken;
  }

  /** A durable record from a peer: checked against this node's tables, then queued for PostgreSQL. */
  #admit(record: JournalRecord): void {
    const n = this.#n;
    // Behind a table mode or schema change not applied yet, the tables here say nothing yet: judged by apply.
    if (record.kind === 'txn' && record.changes.length > 0 && !n.applyQueue.schemaPending) {
      const reason = n.db.unfit(record);
      if (reason !== null) this.#noteUnfit(record, reason);
    }
    n.applyQueue.push(record);
    n.apply.kick();
  }

  #noteUnfit(record: TxnRecord, reason: string): void {
    if (this.#n.unfit.note(record, reason)) {
      this.#n.log.error({ replica: record.replica, lsn: record.lsn, reason }, `node ${this.#n.self} cannot apply record ${record.replica}:${record.lsn} and does not acknowledge it, nor what follows it from node ${record.replica}: ${reason}`);
    }
  }

  /**
   * What this node acknowledges: what its journal holds durably, short of the
   * first record of each replica it could not apply. Acknowledged records
   * count towards a quorum; applying them waits for the limbo's verdict.
   */
  acknowledged(): VClock {
    const n = this.#n;
    return n.unfit.cap(n.bugs.ackBeforeDurable === true ? n.journal.tailVclock : n.journal.vclock);
  }

  liftUnfit(): void {
    const n = this.#n;
    n.unfit.lift(n.applied, (replica, lsn) => n.history.verdict(replica, lsn) === 'rolled-back');
  }

  /**
   * Lift the unfit entries the queue passed or the limbo rolled back; at most
   * once a second, and after a schema change applied, read the tables again
   * and drop those that now fit.
   */
  async recheckUnfit(force: boolean): Promise<void> {
    const n = this.#n;
    this.liftUnfit();
    const now = n.clock.nowMs();
    if (n.unfit.none || (!force && now - this.#unfitCheckedAtMs < UNFIT_RECHECK_MS)) return;
    this.#unfitCheckedAtMs = now;
    try {
      await n.db.reloadTables();
    } catch (error) {
      // PostgreSQL away: the apply queue's next step finds out and resyncs; this is tried again.
      n.log.debug({ err: (error as Error).message }, 'reading the tables again failed');
      return;
    }
    n.unfit.recheck((record) => n.db.unfit(record));
  }
}
