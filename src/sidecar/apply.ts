// The apply queue's runner (RFC 0012): journaled records reach PostgreSQL in
// journal order, on the apply connection, a run of TXNs as one transaction
// and any other record by itself; a sync TXN once the limbo decided it. A
// CONFIRM or ROLLBACK finishes what this node holds prepared (its own entries,
// from when it led); a PROMOTE decides a deposed owner's (DESIGN.md §5).
import type { StepBounds } from '../core/apply-queue.js';
import { NO_REPLICA } from '../core/election.js';
import { QsyncError } from '../core/errors.js';
import type { JournalRecord, TxnRecord } from '../core/record.js';
import { limits } from '../core/limits.js';
import { vclockGet } from '../core/vclock.js';
import type { NodeContext } from './context.js';

export class ApplyPipeline<S, W> {
  readonly #n: NodeContext<S, W>;
  /** A drain is chained on the queue or running. */
  #draining = false;
  /** Prepared transactions of a previous owner that PROMOTEs applied here committed and rolled back (since start). */
  readonly promoted = { committed: 0, rolledBack: 0 };

  constructor(n: NodeContext<S, W>) {
    this.#n = n;
  }

  /** Chain a drain on the apply connection's queue, unless one is chained or running. */
  kick(): void {
    const n = this.#n;
    if (this.#draining || n.stopping) return;
    this.#draining = true;
    const run = n.queue.then(() => this.#drain());
    n.queue = run.then(() => {
      this.#draining = false;
      // Something may have come between the drain's last look and now.
      if (this.#drainable()) this.kick();
    }, (error: unknown) => {
      this.#draining = false;
      n.fatal('applying journaled records', error);
    });
  }

  #drainable(): boolean {
    const queue = this.#n.applyQueue;
    return (queue.length === 0 && queue.spilled) || queue.next(this.#n.history, this.#stepBounds) !== null;
  }

  get #stepBounds(): StepBounds {
    const n = this.#n;
    return {
      recordsMax: limits.applyBatchRecordsMax, bytesMax: limits.applyBatchBytesMax,
      // A CONFIRM finishes only what this node holds prepared (its own entries, from when it led).
      inert: (record) => record.kind === 'raft' || record.kind === 'demote' || (record.kind === 'confirm' && n.prepared.size === 0),
      ...(n.bugs.applyBeforeConfirm === true ? { undecidedApplied: true } : {}),
    };
  }

  /**
   * Apply from the queue's head until it is empty or waits for the limbo: a
   * run of TXNs as one PostgreSQL transaction, any other record by itself.
   * A record applied is durable in the journal, so a peer will not send it
   * again: transient failures are retried with backoff, and the queue waits.
   */
  async #drain(): Promise<void> {
    const n = this.#n;
    const queue = n.applyQueue;
    let schemaChanged = false;
    while (!n.stopping && n.rejoining === null) {
      if (queue.length === 0 && queue.spilled) {
        await this.#refill();
        if (queue.length === 0) break;
      }
      const step = queue.next(n.history, this.#stepBounds);
      if (step === null) break;
      const first = step.kind === 'one' ? step.record : step.records[0] as JournalRecord;
      let attempts = 0;
      const outcome = await n.untilDone('applying a record', async () => {
        attempts += 1;
        if (await n.recovery.resyncIfLost()) return 'started over' as const;
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
    await n.intake.recheckUnfit(schemaChanged);
  }

  /** The queue ran empty with records left in the journal only: read them back, up to the queue's bound. */
  async #refill(): Promise<void> {
    const n = this.#n;
    const queue = n.applyQueue;
    for await (const record of n.journal.cursor(queue.held)) {
      const queued = record.replica !== n.self || (record.lsn > n.replayOwn.from && record.lsn <= n.replayOwn.to);
      if (!queue.refill(record, queued)) return;
    }
    queue.refilled(n.journal.vclock);
  }

  /**
   * A run of TXNs from the queue, each as the history decided it: a sync TXN
   * reaches here confirmed (or rolled back: skipped). Prepared here, it is an
   * entry of this node's own, from when it led: finished by its verdict.
   */
  async #applyRun(records: ReadonlyArray<TxnRecord>, options: { checked: boolean }): Promise<void> {
    const n = this.#n;
    const apply: TxnRecord[] = [];
    const finish = { commit: [] as string[], rollback: [] as string[] };
    for (const record of records) {
      if (n.history.ignored(record) || (record.changes.length === 0 && record.replica === n.self)) continue;
      const verdict = record.sync ? n.history.verdict(record.replica, record.lsn) : null;
      if (n.prepared.has(record.gid)) {
        if (verdict !== null) finish[verdict === 'confirmed' ? 'commit' : 'rollback'].push(record.gid);
      } else if (verdict !== 'rolled-back') {
        apply.push(record);
      }
    }
    if (finish.rollback.length > 0) await n.held.finish('rollback', finish.rollback, 'in queue', this.forget);
    if (finish.commit.length > 0) await n.held.finish('commit', finish.commit, 'in queue', this.forget);
    if (apply.length === 0) return;
    try {
      await n.db.applyBatch(apply, { exactTo: n.exactApply, checked: options.checked });
    } catch (error) {
      if (apply.length === 1 || !(error instanceof QsyncError && error.code === 'PG_APPLY')) throw error;
      // One of them fails: one transaction each, in order, so that the error names it (each skips what is applied).
      for (const record of apply) {
        const exact = record.lsn <= vclockGet(n.exactApply, record.replica);
        await n.db.apply(record, { prepare: false, ...(exact ? { exact } : {}) });
      }
    }
  }

  /** A prepared transaction finished: no longer this node's to decide. */
  readonly forget = (gid: string): void => {
    this.#n.prepared.delete(gid);
  };

  /** Apply one record outside the queue's order (this node's PROMOTE): retried like a step of the queue. */
  applyUntilDone(record: JournalRecord): Promise<void> {
    return this.#n.untilDone('applying a record', async () => {
      await this.#n.recovery.resyncIfLost();
      await this.#apply(record);
    }, { replica: record.replica, lsn: record.lsn });
  }

  /**
   * Apply one journaled record to PostgreSQL (DESIGN.md §5, RFC 0012): a
   * CONFIRM or ROLLBACK finishes what this node holds prepared (its own
   * entries, from when it led); a PROMOTE decides a deposed owner's.
   * Idempotent: replay runs it again after a crash.
   */
  async #apply(record: JournalRecord): Promise<void> {
    const n = this.#n;
    if (n.history.ignored(record)) return;
    if (n.log.isLevelEnabled('debug')) {
      n.log.debug({ replica: record.replica, lsn: record.lsn, kind: record.kind, recordTerm: record.term, ...(record.kind === 'txn' ? { sync: record.sync, changes: record.changes.length } : {}) }, 'applying a record');
    }
    const forget = this.forget;
    switch (record.kind) {
      case 'txn':
        await this.#applyRun([record], { checked: true });
        return;
      case 'confirm':
        await n.held.finish('commit', n.limbo.preparedOf(record.owner, 1, record.confirmedLsn), 'in queue', forget);
        return;
      case 'rollback': {
        const gids = n.limbo.preparedOf(record.owner, record.fromLsn, record.lsn - 1);
        await n.held.finish('rollback', gids, 'in queue', forget);
        if (record.replica !== n.self) n.log.info({ owner: record.owner, fromLsn: record.fromLsn, transactions: gids.length, recordTerm: record.term }, 'limbo rollback applied: the leader had no quorum in time');
        return;
      }
      case 'config':
        if (record.ddl !== undefined && (await n.db.runDdl(record.ddl, record.replica, record.lsn, record.ddlRole)).applied && record.replica !== n.self) {
          n.log.info({ leader: record.replica, lsn: record.lsn }, 'schema change applied');
        }
        for (const [table, mode] of Object.entries(record.tables ?? {})) {
          const expect = record.shapes?.[table];
          await n.db.setTableMode(table, mode, expect === undefined ? {} : { expect });
        }
        return;
      case 'promote':
        await this.#applyPromote(record);
        return;
      case 'demote':
      case 'raft':
        return;
    }
  }

  /** A PROMOTE: the previous owner's entries up to the lsn kept are committed, the rest rolled back (DESIGN.md §5). */
  async #applyPromote(record: JournalRecord & { kind: 'promote' }): Promise<void> {
    const n = this.#n;
    const forget = this.forget;
    // PostgreSQL's own list: a deposed leader's prepared transactions were never in `prepared`.
    if (record.prevOwner !== NO_REPLICA) {
      // And the previous owner's writes held open here (this node was that owner: held.ts).
      const owned = [...(await n.db.listPrepared()).filter((e) => e.replica === record.prevOwner),
        ...n.held.entriesOf(record.prevOwner)];
      // As the history (which has taken this PROMOTE) decides: kept, or past the lsn kept, under a
      // ROLLBACK in the kept history, or this node's own void writes. Still pending: written after
      // this PROMOTE by its own leader, which replay after a crash meets here; left in the limbo.
      const decided = (verdict: 'confirmed' | 'rolled-back'): string[] => owned.filter((e) => n.history.verdict(record.prevOwner, e.lsn) === verdict).map((e) => e.gid);
      const commit = decided('confirmed');
      const rollback = decided('rolled-back');
      await n.held.finish('commit', commit, 'in queue', forget);
      this.promoted.committed += commit.length;
      await n.held.finish('rollback', rollback, 'in queue', forget);
      this.promoted.rolledBack += rollback.length;
      if (commit.length + rollback.length > 0 || record.replica !== n.self) {
        n.log.info({ leader: record.replica, recordTerm: record.term, prevOwner: record.prevOwner, prevLsn: record.prevLsn, committed: commit.length, rolledBack: rollback.length }, `PROMOTE of node ${record.replica} applied: the previous leader's pending transactions decided`);
      }
    } else if (record.replica !== n.self) {
      n.log.info({ leader: record.replica, recordTerm: record.term }, `PROMOTE of node ${record.replica} applied`);
    }
    const ranges = n.revived.splice(0);
    // A failed attempt is retried whole: the ranges must still be there.
    await n.recovery.revive(ranges).catch((error: unknown) => {
      n.revived.unshift(...ranges);
      throw error;
    });
  }
}
