// PostgreSQL against the journal: at start (reconcile prepared transactions
// with the journal's verdicts; replay what the journal holds beyond
// PostgreSQL's applied vclock), and again whenever PostgreSQL alone crashed
// or restarted under the running node (resync, RFC 0007). Also re-applies
// entries a later PROMOTE revived, and rolls back PREPAREs whose answer was
// lost (RFC 0016).
import { AssertionFailed } from '../core/assert.js';
import { parseGid } from '../core/gid.js';
import type { TxnRecord } from '../core/record.js';
import type { RevivedRange } from '../core/history.js';
import { REPLICA_LOCAL, type Lsn, type ReplicaId } from '../core/types.js';
import { vclockEntries, vclockFromEntries, vclockGet, vclockMerge } from '../core/vclock.js';
import { reconcile } from '../postgres/twophase.js';
import type { NodeContext } from './context.js';
import { readCheckpointState, readVerdicts } from './verdicts.js';

/**
 * How many of its own records below PostgreSQL's highest applied one a node
 * checks one by one when it replays its journal: its writes commit
 * concurrently, so one may have failed while later ones committed. Far more
 * than the writes a node has in flight at once.
 */
const OWN_RECHECK_RECORDS = 10_000;

export class Recovery<S, W> {
  readonly #n: NodeContext<S, W>;
  /**
   * Gids of own writes that failed after their PREPARE was sent and before their TXN was journaled
   * (writes.ts): PostgreSQL may hold them prepared, and only a ROLLBACK PREPARED is right for them,
   * whatever a later CONFIRM covering their filled lsn says. Kept for the process's life, since a
   * PostgreSQL crash may undo a rollback the simulator models as unflushed; one per PREPARE whose
   * answer a crash took, which is rare. After a restart the journal says the same (verdicts.ts).
   */
  readonly #orphans = new Set<string>();

  constructor(n: NodeContext<S, W>) {
    this.#n = n;
  }

  /**
   * Make PostgreSQL agree with the journal, then apply what it lacks. Own
   * entries still pending are rolled back there and left to the journal: the
   * next PROMOTE decides them (held.ts, rule 4).
   */
  async recover(): Promise<void> {
    const n = this.#n;
    const verdicts = await readVerdicts(n.journal, n.self);
    n.history = verdicts.history;
    n.exactTo = readCheckpointState(n.journal)?.exactTo ?? [];
    // Both idempotent: a transient PostgreSQL failure is retried, not a failed start (simulator seeds 44, 219).
    const report = await n.untilDone('reconciling prepared transactions', () => reconcile(n.db, verdicts.verdict), {});
    n.log.info({ ...report, vclock: n.journal.vclock }, 'reconciled prepared transactions with the journal');
    // Retried too: a PostgreSQL crash right here failed the start (simulator seed 21154).
    for (const entry of await n.untilDone('listing prepared transactions', () => n.db.listPrepared(), {})) n.prepared.add(entry.gid);
    // A node starts as a follower: its own undecided prepared writes hold no row locks either (held.ts, rule 4).
    n.held.releasePrepared(await this.#ownTxns(report.kept));
    const replayed = await n.untilDone('replaying the journal into PostgreSQL', () => this.replay(), {});
    if (replayed > 0) n.log.info({ replayed }, 'applied journaled writes of this node whose COMMIT had not reached PostgreSQL');
    // After the replay has set where the apply queue starts: what lies past it, the queue applies.
    await n.untilDone('applying again entries a PROMOTE revived', () => this.revive(verdicts.revived), {});
    n.apply.kick();
  }

  /** This node's sync TXNs the journal holds under `gids` (those of other owners, or not journaled, are left out). */
  async #ownTxns(gids: readonly string[]): Promise<TxnRecord[]> {
    const n = this.#n;
    const wanted = new Set(gids.filter((gid) => parseGid(n.config.clusterId, gid)?.replica === n.self));
    if (wanted.size === 0) return [];
    const lowest = Math.min(...[...wanted].map((gid) => parseGid(n.config.clusterId, gid)?.lsn ?? 1));
    const others = vclockEntries(n.journal.tailVclock).filter(([replica]) => replica !== n.self);
    const found: TxnRecord[] = [];
    for await (const record of n.journal.cursor(vclockFromEntries([...others, [n.self, (lowest - 1) as Lsn]]))) {
      if (record.kind === 'txn' && record.replica === n.self && record.sync && wanted.has(record.gid)) found.push(record);
    }
    return found;
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
   * write missing is applied from its TXN here; returns how many were. So is
   * a sync write the journal confirmed: one held open whose session ended, or
   * whose COMMIT a PostgreSQL crash lost (RFC 0027). One still undecided that
   * PostgreSQL does not hold prepared was held open: it becomes a lost held
   * entry, and its verdict is carried out like a prepared one's (held.ts).
   * Idempotent.
   */
  async replay(): Promise<number> {
    const n = this.#n;
    const self = n.self;
    const applied = await n.db.appliedVclock();
    // Nothing before the journal's start is replayed: it was applied and durable before its records went.
    const floor = n.journal.retention?.oldestVclock ?? [];
    const ownApplied = vclockGet(applied, self);
    const recheckFrom = Math.max(0, ownApplied - OWN_RECHECK_RECORDS, vclockGet(floor, self)) as Lsn;
    const ownHeld = ownApplied > 0 ? await n.db.appliedLsns(self, recheckFrom) : new Set<Lsn>();
    let replayed = 0;
    if (ownApplied > recheckFrom) {
      const others = vclockEntries(n.journal.tailVclock).filter(([replica]) => replica !== self);
      for await (const record of n.journal.cursor(vclockFromEntries([...others, [self, recheckFrom]]))) {
        if (record.replica !== self || record.lsn > ownApplied) continue;
        if (record.kind !== 'txn' || record.changes.length === 0 || ownHeld.has(record.lsn)) continue;
        if (record.sync) {
          // Prepared, or held open by this life of the node: decided as such.
          if (n.prepared.has(record.gid) || n.held.has(record.gid)) continue;
          const verdict = n.history.verdict(self, record.lsn);
          if (verdict === 'rolled-back') continue;
          if (verdict === null) {
            n.held.lostAtStart(record);
            n.prepared.add(record.gid);
            continue;
          }
        }
        if ((await n.db.apply(record, { prepare: false, exact: true })) === 'applied') {
          n.log.warn({ lsn: record.lsn }, 'applied a journaled write of this node whose COMMIT had not reached PostgreSQL');
          replayed += 1;
        }
      }
    }
    // A peer's records: from what PostgreSQL applied, never before the journal's start. After a rejoin, while the
    // snapshot's marks (which have holes) reach past the start, from the start: each record is checked by its own lsn.
    const fromOf = (replica: ReplicaId): Lsn => {
      const start = vclockGet(floor, replica);
      return vclockGet(n.exactTo, replica) > start ? start : Math.max(vclockGet(applied, replica), start) as Lsn;
    };
    const peers = vclockEntries(vclockMerge(applied, floor)).map(([replica]) => replica).filter((replica) => replica !== self && replica !== REPLICA_LOCAL);
    // This node's records past the highest applied (its CONFIRMs, ROLLBACKs, a write whose COMMIT failed) go
    // through the queue as well; those it writes from now on do not.
    n.replayOwn = { from: ownApplied, to: vclockGet(n.journal.tailVclock, self) };
    n.applyQueue.reset(vclockFromEntries([...peers.map((replica) => [replica, fromOf(replica)] as const).filter(([, lsn]) => lsn > 0), ...(ownApplied > 0 ? [[self, ownApplied] as const] : [])]));
    return replayed;
  }

  /**
   * PostgreSQL went away under the running node: once it is back, check it
   * against the journal before anything else is applied (a record applied
   * first would move the applied vclock past what was lost). The next step of
   * the apply queue does it, or this one if the queue is idle.
   */
  lost(): void {
    const n = this.#n;
    if (n.stopping) return;
    if (!n.resyncPending) n.log.warn('lost the connection to PostgreSQL: once it is back, it is checked against the journal');
    n.resyncPending = true;
    n.losses += 1;
    // Writes held open ended with it: a leader steps down, so that a node with a working PostgreSQL leads.
    if (n.held.postgresLost() > 0) n.leadership.postgresFailed(new Error('PostgreSQL went away while writes were held open'));
    const run = n.queue.then(() => n.untilDone('checking PostgreSQL against the journal', async () => {
      await this.resyncIfLost();
    }, {}));
    n.queue = run.catch((error: unknown) => n.fatal('checking PostgreSQL against the journal', error));
  }

  /** Resync if PostgreSQL went away since; true when it did (the apply queue started over). */
  async resyncIfLost(): Promise<boolean> {
    const n = this.#n;
    if (!n.resyncPending) return false;
    n.resyncPending = false;
    try {
      await this.#resync();
      return true;
    } catch (error) {
      n.resyncPending = true;
      throw error;
    }
  }

  /**
   * What recover does at start, for what a crash of PostgreSQL alone undoes:
   * commits made without waiting for the flush (applied records, COMMIT and
   * ROLLBACK PREPARED, qsync.node) may be gone. Prepared transactions the
   * history has decided are finished again; undecided ones stay, and so does
   * one the journal does not hold yet (a write of this node between its
   * PREPARE and its TXN's append), but those this node had released when it
   * stopped leading are released again (held.ts, rule 4). Records PostgreSQL lost are applied again,
   * and qsync.node is written again. Runs in the apply queue; idempotent.
   */
  async #resync(): Promise<void> {
    const n = this.#n;
    // An orphaned PREPARE's lsn holds an empty TXN, which a later CONFIRM covers: it is rolled back, never committed.
    const report = await reconcile(n.db, (entry) => (this.#orphans.has(entry.gid) ? 'rolled-back' : n.history.verdict(entry.replica, entry.lsn) ?? 'pending'));
    for (const entry of await n.db.listPrepared()) n.prepared.add(entry.gid);
    n.held.releaseAgain(report.kept);
    const replayed = await this.replay();
    void n.leadership.publish();
    n.apply.kick();
    n.log.info({ committed: report.committed.length, rolledBack: report.rolledBack.length, kept: report.kept.length, replayed }, 'PostgreSQL is back and agrees with the journal');
  }

  /** A write failed after its PREPARE was sent and before its TXN was journaled (writes.ts): roll the gid back. */
  orphaned(gid: string): void {
    const n = this.#n;
    this.#orphans.add(gid);
    // Retried until PostgreSQL answers (it may be down: that is how the answer was lost); a gid it does not hold is done.
    n.untilDone('rolling back a PREPARE whose write failed', () => n.db.finish('rollback', [gid]), { gid }).catch((error: unknown) => {
      if (error instanceof AssertionFailed) n.fatal('rolling back a PREPARE whose write failed', error);
    });
  }

  /**
   * Apply again the confirmed entries in `ranges` that PostgreSQL rolled back
   * too early (on a ROLLBACK or PROMOTE that a later PROMOTE voided): the
   * journal still holds their TXNs. Skips what is prepared or applied.
   */
  async revive(ranges: readonly RevivedRange[]): Promise<void> {
    const n = this.#n;
    if (ranges.length === 0) return;
    // One pass over the journal from the lowest lsn of each owner concerned.
    const lowest = new Map<ReplicaId, number>();
    for (const r of ranges) lowest.set(r.owner, Math.min(lowest.get(r.owner) ?? Infinity, r.from));
    const from = vclockMerge(n.journal.retention?.oldestVclock ?? [], vclockFromEntries(vclockEntries(n.journal.tailVclock).map(([replica, lsn]) => [replica, lowest.has(replica) ? (lowest.get(replica) as number) - 1 as Lsn : lsn] as const)));
    let revived = 0;
    // Past what the apply queue has passed, it is still to come: the queue applies it, confirmed now, in its
    // turn. Applied here first, its mark would make the queue skip the records before it (simulator seed 4).
    const passed = n.applied;
    for await (const record of n.journal.cursor(from)) {
      if (record.kind !== 'txn' || !record.sync || record.changes.length === 0 || n.held.has(record.gid)) continue;
      if (record.lsn > vclockGet(passed, record.replica)) continue;
      if (!ranges.some((r) => r.owner === record.replica && record.lsn >= r.from && record.lsn <= r.to)) continue;
      if (n.history.verdict(record.replica, record.lsn) !== 'confirmed') continue;
      if ((await n.db.apply(record, { prepare: false, exact: true })) === 'applied') revived += 1;
    }
    if (revived > 0) n.log.warn({ revived, ranges }, 'applied again entries rolled back too early: a later PROMOTE confirmed them');
  }
}
