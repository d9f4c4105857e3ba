// The leader's order of duties for one client transaction (DESIGN.md §8),
// top to bottom, over PostgreSQL's primitives (postgres/leader.ts) and the
// driver's steps. Production and the simulator both run this function; only
// the primitives under it differ.
//
//   run the statements              BEGIN under the write's term: the fence checks it
//   reserve the TXN's lsn and time  as late as possible: lsns are journaled in order, and
//                                   the time must pass every record applied before it
//   capture
//   nothing captured                COMMIT; the lsn goes back
//   a sync table touched, held      hold, then journal, then wait until the decision is carried out on
//   open (RFC 0027)                 this transaction (held.ts): capture checked that no transaction held
//                                   before it had ended, and its deferred constraints; the limbo entry
//                                   is registered before any peer hears of it
//   a sync table touched            PREPARE, then journal: the limbo entry exists in PostgreSQL
//                                   before any peer hears of it; the caller then waits for the quorum.
//                                   A PREPARE that fails may still have prepared (its answer lost to a
//                                   crash): the caller is told it was sent (steps.prepareSent)
//   async tables only               journal, then COMMIT (without its own WAL flush): a crash can
//                                   never leave a committed write the journal does not know, and
//                                   replay repairs a COMMIT that PostgreSQL lost (RFC 0007, RFC 0013)
import type { Change } from '../core/record.js';
import type { Lsn } from '../core/types.js';
import type { LeaderOutcome, LeaderTransaction } from '../postgres/index.js';
import type { HeldSession, PlantedBugs } from './io.js';

/** What the driver does for a write at its points in the order. */
export interface WriteSteps {
  /** The lsn, gid and hybrid time the write's TXN record will have. */
  reserve(): { readonly lsn: Lsn; readonly gid: string; readonly time: number };
  /** Journal the TXN; resolves when durable. */
  journal(txn: { lsn: Lsn; gid: string; time: number; sync: boolean; changes: Change[] }): Promise<void>;
  /** PREPARE TRANSACTION `gid` is being sent: if the write fails from here on, PostgreSQL may hold it prepared. */
  prepareSent(gid: string): void;
  /** The ids of the transactions held open, for capture to check; null when this node prepares its sync writes. */
  held(): readonly string[] | null;
  /** Hold the open transaction until the limbo's decision is carried out on it (held.ts); resolves once it has ended. */
  hold(txn: { lsn: Lsn; gid: string; time: number; changes: Change[] }, xid: string, session: HeldSession): Promise<void>;
  /** The held write's TXN was not journaled: forget it. */
  unhold(gid: string): void;
}

/** The steps of a node that prepares every sync write (nothing is held open). */
export const PREPARING: Pick<WriteSteps, 'held' | 'hold' | 'unhold'> = {
  held: () => null,
  hold: () => Promise.reject(new Error('this write path prepares its sync writes; nothing is held open')),
  unhold: () => undefined,
};

export async function leaderWrite<W>(tx: LeaderTransaction<W>, steps: WriteSteps, work: W, bugs: PlantedBugs = {}): Promise<LeaderOutcome> {
  let open = true;
  try {
    await tx.run(work);
    const { lsn, gid, time } = steps.reserve();
    const { changes, sync, held } = await tx.capture({ lsn, time }, steps.held());
    if (changes.length === 0) {
      await tx.commit(false);
      open = false;
      return { kind: 'empty', lsn, gid };
    }
    const txn = { lsn, gid, time, sync, changes };
    if (sync && held?.holdable === true) {
      const ended = steps.hold(txn, held.xid, { commit: () => tx.commit(true), rollback: () => tx.rollback() });
      try {
        await steps.journal(txn);
      } catch (error) {
        steps.unhold(gid);
        throw error;
      }
      // From here on the held entry ends the transaction, as the limbo decides.
      open = false;
      await ended;
      return { kind: 'held', lsn, gid, changes };
    }
    if (sync) {
      if (bugs.journalBeforePrepare === true) await steps.journal(txn);
      steps.prepareSent(gid);
      await tx.prepare(gid);
      open = false;
      if (bugs.journalBeforePrepare !== true) await steps.journal(txn);
      return { kind: 'prepared', lsn, gid, changes };
    }
    if (bugs.commitBeforeJournal === true) {
      await tx.commit(true);
      open = false;
    }
    await steps.journal(txn);
    if (open) await tx.commit(true);
    open = false;
    return { kind: 'committed', lsn, gid, changes };
  } catch (error) {
    if (open) await tx.rollback();
    throw error;
  }
}
