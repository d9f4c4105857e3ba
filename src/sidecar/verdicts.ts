// What the journal decided about each limbo entry, read at start to reconcile
// PostgreSQL's prepared transactions: the limbo history (core/history.ts)
// folded over the whole journal, plus which TXNs the journal holds at all.
import { LimboHistory, type RevivedRange } from '../core/history.js';
import type { JournalVerdict, PreparedEntry } from '../postgres/index.js';
import type { JournalStore } from './io.js';
import type { ReplicaId } from '../core/types.js';

export interface Verdicts {
  verdict(entry: Pick<PreparedEntry, 'replica' | 'lsn'>): JournalVerdict;
  /** The history as of the journal's end: the running node goes on from it. */
  readonly history: LimboHistory;
  /** Entries rolled back by a ROLLBACK or PROMOTE that a later PROMOTE voided: PostgreSQL may lack them. */
  readonly revived: readonly RevivedRange[];
}

export async function readVerdicts(journal: JournalStore, self: ReplicaId): Promise<Verdicts> {
  const history = new LimboHistory(self);
  const journaled = new Set<string>();
  const revived: RevivedRange[] = [];
  for await (const record of journal.cursor([])) {
    if (record.kind === 'txn') journaled.add(`${record.replica}:${record.lsn}`);
    revived.push(...history.apply(record));
  }
  return {
    history, revived,
    verdict: ({ replica, lsn }) => history.verdict(replica, lsn) ?? (journaled.has(`${replica}:${lsn}`) ? 'pending' : 'unknown'),
  };
}
