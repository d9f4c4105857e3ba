// Own records a node relays as empty TXNs instead of as written.
//
// Two cases, both "no peer may ever take this record as written":
//   - `rolledBack`: sync TXNs rolled back before any peer had them. Their
//     clients were told RolledBack with certainty (DESIGN.md §2.2); sending
//     them later, even followed by the ROLLBACK, would let a peer that got the
//     TXN and not the ROLLBACK commit it as a new leader.
//   - `deposed`: everything limbo-related this node wrote past the lsn that the
//     PROMOTE deposing it kept. Peers refuse those records (an older term), so
//     sent as written they would block the link; sent empty they fill the lsn
//     gap and change nothing. Async TXNs in that range are relayed as written:
//     they are master-master writes, valid in any term.
import { gidFor } from './gid.js';
import type { JournalRecord } from './record.js';
import type { Lsn } from './types.js';

export interface WithheldRange {
  readonly from: Lsn;
  /** Inclusive. */
  readonly to: Lsn;
  readonly reason: 'rolledBack' | 'deposed';
}

/** Records that only the limbo owner writes: fenced by term, voided by a PROMOTE. */
export function isSynchro(record: JournalRecord): boolean {
  return record.kind === 'txn' ? record.sync : record.kind !== 'raft';
}

export function isWithheld(ranges: readonly WithheldRange[], record: JournalRecord): boolean {
  for (const r of ranges) {
    if (record.lsn < r.from || record.lsn > r.to) continue;
    if (r.reason === 'deposed' ? isSynchro(record) : record.kind === 'txn' && record.sync) return true;
  }
  return false;
}

/** The empty TXN sent in place of a withheld record: same replica, lsn and term; no changes. */
export function emptied(clusterId: string, record: JournalRecord): JournalRecord {
  return { kind: 'txn', replica: record.replica, lsn: record.lsn, term: record.term, time: record.time, gid: gidFor(clusterId, record.replica, record.lsn), sync: false, changes: [], idempotencyKey: null };
}
