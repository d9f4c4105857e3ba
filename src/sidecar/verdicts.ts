// What the journal decided about each limbo entry, read at start to reconcile
// PostgreSQL's prepared transactions: the limbo history (core/history.ts)
// folded over the whole journal, plus which TXNs the journal holds at all.
import { QsyncError } from '../core/errors.js';
import { historyStateParse, LimboHistory, type HistoryState, type RevivedRange } from '../core/history.js';
import { VCLOCK_EMPTY, vclockGet, vclockParse, type VClock } from '../core/vclock.js';
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
  const checkpoint = readCheckpointState(journal);
  const history = checkpoint === null ? new LimboHistory(self) : LimboHistory.fromState(self, checkpoint.history);
  const floor = checkpoint?.vclock ?? VCLOCK_EMPTY;
  const journaled = new Set<string>();
  /** Lsns whose TXN is not a sync write (empty, async, a copy): nothing prepared under their gid may commit. */
  const unprepared = new Set<string>();
  const revived: RevivedRange[] = [];
  for await (const record of journal.cursor(floor)) {
    if (record.kind === 'txn') {
      const key = `${record.replica}:${record.lsn}`;
      journaled.add(key);
      if (!record.sync || record.changes.length === 0) unprepared.add(key);
    }
    revived.push(...history.apply(record));
  }
  return {
    history, revived,
    verdict: ({ replica, lsn }) => {
      const key = `${replica}:${lsn}`;
      // A gid prepared whose write then failed (the PREPARE's answer lost to a crash): its lsn was filled with
      // an empty TXN, which a later CONFIRM covers; what PostgreSQL holds under it is an orphan (writes.ts).
      if (unprepared.has(key)) return 'rolled-back';
      // Before the journal's start, every entry was decided and applied before its records went (retention): kept.
      return history.verdict(replica, lsn) ?? (journaled.has(key) || lsn <= vclockGet(floor, replica) ? 'pending' : 'unknown');
    },
  };
}

/**
 * What the driver keeps in the journal's checkpoint: the limbo history at the
 * journal's start, and after a rejoin by snapshot how far the snapshot's
 * applied marks reach (records up to there are checked by their own lsn).
 */
export interface CheckpointState {
  readonly vclock: VClock;
  readonly history: HistoryState;
  readonly exactTo: VClock;
}

export function checkpointState(history: HistoryState, exactTo: VClock): unknown {
  return { h: history, x: exactTo };
}

/** The journal's checkpoint as the driver wrote it; null when no record was ever removed. */
export function readCheckpointState(journal: JournalStore): CheckpointState | null {
  const checkpoint = journal.retention?.checkpoint ?? null;
  if (checkpoint === null) return null;
  const state = checkpoint.state as { h?: unknown; x?: unknown } | null;
  const history = historyStateParse(state?.h);
  const exactTo = vclockParse(state?.x ?? []);
  if (typeof history === 'string' || typeof exactTo === 'string') {
    throw new QsyncError('JOURNAL_CORRUPT', `the journal's checkpoint holds no valid limbo history (${typeof history === 'string' ? history : exactTo}); restore the data directory, or move it aside and let the node rejoin by snapshot`);
  }
  return { vclock: checkpoint.vclock, history, exactTo };
}
