// What the journal decided about each limbo entry: read at start to reconcile
// PostgreSQL's prepared transactions and to refill the leader's limbo.
import type { JournalVerdict, PreparedEntry } from '../postgres/index.js';
import type { Journal } from '../journal/index.js';
import type { Lsn, ReplicaId } from '../core/types.js';

export interface Verdicts {
  verdict(entry: { replica: ReplicaId; lsn: Lsn }): JournalVerdict;
  /** Sync TXNs of `owner` still pending (journaled, neither confirmed nor rolled back), lsn ascending. */
  pending(owner: ReplicaId): Array<{ lsn: Lsn; gid: string }>;
  confirmedLsn(owner: ReplicaId): Lsn;
  /** Sync TXNs of `owner` that a ROLLBACK (or PROMOTE) rolled back. */
  rolledBack(owner: ReplicaId): Array<{ lsn: Lsn; gid: string }>;
}

export async function readVerdicts(journal: Journal): Promise<Verdicts> {
  const confirmed = new Map<number, number>();
  const rollbacks = new Map<number, Array<[number, number]>>(); // owner -> [from, recordLsn)
  const syncTxns = new Map<number, Array<{ lsn: Lsn; gid: string }>>();
  const journaled = new Set<string>();
  for await (const record of journal.cursor([])) {
    if (record.kind === 'txn') {
      journaled.add(`${record.replica}:${record.lsn}`);
      if (record.sync) syncTxns.set(record.replica, [...(syncTxns.get(record.replica) ?? []), { lsn: record.lsn, gid: record.gid }]);
    } else if (record.kind === 'confirm') {
      confirmed.set(record.owner, Math.max(confirmed.get(record.owner) ?? 0, record.confirmedLsn));
    } else if (record.kind === 'rollback') {
      rollbacks.set(record.owner, [...(rollbacks.get(record.owner) ?? []), [record.fromLsn, record.lsn]]);
    } else if (record.kind === 'promote') {
      confirmed.set(record.prevOwner, Math.max(confirmed.get(record.prevOwner) ?? 0, record.prevLsn));
      rollbacks.set(record.prevOwner, [...(rollbacks.get(record.prevOwner) ?? []), [record.prevLsn + 1, Number.MAX_SAFE_INTEGER]]);
    }
  }
  const rolledBack = (owner: number, lsn: number): boolean => (rollbacks.get(owner) ?? []).some(([from, to]) => lsn >= from && lsn < to);
  const verdict = ({ replica, lsn }: Pick<PreparedEntry, 'replica' | 'lsn'>): JournalVerdict => {
    if (lsn <= (confirmed.get(replica) ?? 0)) return 'confirmed';
    if (rolledBack(replica, lsn)) return 'rolled-back';
    return journaled.has(`${replica}:${lsn}`) ? 'pending' : 'unknown';
  };
  return {
    verdict,
    pending: (owner) => (syncTxns.get(owner) ?? []).filter((t) => verdict({ replica: owner, lsn: t.lsn }) === 'pending'),
    confirmedLsn: (owner) => (confirmed.get(owner) ?? 0) as Lsn,
    rolledBack: (owner) => (syncTxns.get(owner) ?? []).filter((t) => verdict({ replica: owner, lsn: t.lsn }) === 'rolled-back'),
  };
}
