// What the journal decided about each limbo entry, read at start to reconcile
// PostgreSQL's prepared transactions; and what the journal says of the limbo
// now (its owner and term) and of this node's withheld records.
//
// Read in journal order:
//   CONFIRM(owner, lsn)      owner's entries up to lsn are committed
//   ROLLBACK(owner, from)    owner's entries from `from` up to the record are rolled back
//   PROMOTE(prev, kept)      prev's entries up to kept are committed, the rest rolled back,
//                            and prev's ROLLBACK records past kept are void (never held by
//                            a quorum, or the new leader would hold them)
// A rollback that stands wins over a later confirmation of a prefix: CONFIRM
// and PROMOTE commit what is still pending.
import type { WithheldRange } from '../core/withheld.js';
import type { JournalVerdict, PreparedEntry } from '../postgres/index.js';
import type { Journal } from '../journal/index.js';
import type { Lsn, ReplicaId, Term } from '../core/types.js';

export interface Verdicts {
  verdict(entry: { replica: ReplicaId; lsn: Lsn }): JournalVerdict;
  /** The limbo owner and its term, from the last PROMOTE (owner 0, term 0: none yet). */
  readonly synchro: { readonly owner: ReplicaId; readonly term: Term };
  /** This node's own records that it relays as empty TXNs. */
  readonly withheld: readonly WithheldRange[];
  /** The ROLLBACK records that stand (no later PROMOTE voided them), by owner. */
  readonly rollbacks: ReadonlyMap<number, readonly Rollback[]>;
}

export interface Rollback {
  readonly from: number;
  /** The ROLLBACK record's own lsn: entries from `from` to before it are rolled back. */
  readonly record: number;
}

export async function readVerdicts(journal: Journal, self: ReplicaId): Promise<Verdicts> {
  const confirmed = new Map<number, number>();
  const rollbacks = new Map<number, Rollback[]>();
  const last = new Map<number, number>();
  const journaled = new Set<string>();
  const withheld: WithheldRange[] = [];
  let synchro = { owner: 0 as ReplicaId, term: 0 as Term };
  for await (const record of journal.cursor([])) {
    last.set(record.replica, record.lsn);
    if (record.kind === 'txn') {
      journaled.add(`${record.replica}:${record.lsn}`);
    } else if (record.kind === 'confirm') {
      confirmed.set(record.owner, Math.max(confirmed.get(record.owner) ?? 0, record.confirmedLsn));
    } else if (record.kind === 'rollback') {
      rollbacks.set(record.owner, [...(rollbacks.get(record.owner) ?? []), { from: record.fromLsn, record: record.lsn }]);
      if (record.owner === self && record.withheldFromLsn !== undefined) withheld.push({ from: record.withheldFromLsn, to: (record.lsn - 1) as Lsn, reason: 'rolledBack' });
    } else if (record.kind === 'promote') {
      const prev = record.prevOwner;
      const lastOfPrev = record.replica === prev ? record.lsn - 1 : last.get(prev) ?? 0;
      const standing = (rollbacks.get(prev) ?? []).filter((r) => r.record <= record.prevLsn);
      rollbacks.set(prev, record.prevLsn < lastOfPrev ? [...standing, { from: record.prevLsn + 1, record: lastOfPrev + 1 }] : standing);
      confirmed.set(prev, Math.max(confirmed.get(prev) ?? 0, record.prevLsn));
      // Deposed: this node's limbo records past the lsn kept are void until it next writes a PROMOTE.
      if (prev === self && record.leader !== self) withheld.push({ from: (record.prevLsn + 1) as Lsn, to: Number.MAX_SAFE_INTEGER as Lsn, reason: 'deposed' });
      if (record.replica === self) {
        for (const [i, r] of withheld.entries()) if (r.reason === 'deposed' && r.to >= record.lsn) withheld[i] = { ...r, to: (record.lsn - 1) as Lsn };
      }
      synchro = { owner: record.leader, term: record.term };
    }
  }
  const rolledBack = (owner: number, lsn: number): boolean => (rollbacks.get(owner) ?? []).some((r) => lsn >= r.from && lsn < r.record);
  // This node's own sync TXNs written after a PROMOTE deposed it are void.
  const void_ = (replica: number, lsn: number): boolean => replica === self && withheld.some((r) => r.reason === 'deposed' && lsn >= r.from && lsn <= r.to);
  const verdict = ({ replica, lsn }: Pick<PreparedEntry, 'replica' | 'lsn'>): JournalVerdict => {
    if (rolledBack(replica, lsn) || void_(replica, lsn)) return 'rolled-back';
    if (lsn <= (confirmed.get(replica) ?? 0)) return 'confirmed';
    return journaled.has(`${replica}:${lsn}`) ? 'pending' : 'unknown';
  };
  return { verdict, synchro, withheld, rollbacks };
}

