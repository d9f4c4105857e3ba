// Journal retention (docs/rfc/0009-retention-and-rejoin.md): remove the
// segments nothing needs any more, with what they decided kept in the
// checkpoint.
import { AssertionFailed } from '../core/assert.js';
import { LimboHistory } from '../core/history.js';
import type { Lsn, ReplicaId } from '../core/types.js';
import { vclockCovers, vclockEntries, vclockFromEntries, vclockGet, type VClock } from '../core/vclock.js';
import type { NodeContext } from './context.js';
import { checkpointState, readCheckpointState } from './verdicts.js';

export class Retention<S, W> {
  readonly #n: NodeContext<S, W>;
  /** A trim in progress (one at a time). */
  #retaining = false;

  constructor(n: NodeContext<S, W>) {
    this.#n = n;
  }

  /**
   * Remove the journal segments nothing needs any more: every record in them
   * is applied here and durable in PostgreSQL (the compaction below waits for
   * a WAL flush that covers every commit before it), decided (no prepared
   * entry, no write of this node still committing), and held by every peer,
   * or, once the journal is past journalRetainBytes, by a quorum: a peer that
   * lacks them then rejoins by snapshot. What they decided goes into the
   * checkpoint first.
   */
  async retain(): Promise<void> {
    const n = this.#n;
    const retention = n.journal.retention;
    if (retention === undefined || this.#retaining || n.rejoining !== null || !n.recovered || n.stopping || n.resyncPending) return;
    // What the apply queue says is applied holds only while PostgreSQL has not gone away since: a crash takes
    // the commits it had not flushed, and until the resync the queue still counts them (a cut made on that
    // count lost rows in the e2e test of retention under PostgreSQL crashes).
    const losses = n.losses;
    const unchanged = (): boolean => n.losses === losses && !n.resyncPending;
    const starts = retention.segmentStarts;
    if (starts.length === 0) return;
    this.#retaining = true;
    try {
      const applied = n.applied;
      const peers = n.peers.map((p) => n.peerVclocks.get(p.replica) ?? []);
      const holders = retention.sizeBytes > n.config.journalRetainBytes ? n.quorum - 1 : peers.length;
      const bound = new Map<number, number>(vclockEntries(applied));
      bound.set(n.self, Math.min(vclockGet(n.journal.vclock, n.self), Math.min(...n.writes.ownInFlight, Number.MAX_SAFE_INTEGER) - 1));
      for (const [replica, lsn] of bound) {
        const held = peers.map((v) => vclockGet(v, replica as ReplicaId) as number).sort((a, b) => b - a);
        bound.set(replica, Math.min(lsn, holders === 0 ? lsn : held[holders - 1] ?? 0));
      }
      const cutAt = (): VClock | undefined => {
        const limit = vclockFromEntries([...bound].filter(([, lsn]) => lsn > 0) as Array<[ReplicaId, Lsn]>);
        return starts.filter((start) => vclockCovers(limit, start, { ignoreLocal: true })).at(-1);
      };
      // Only when something could go does PostgreSQL hear of it: the prepared entries, then the flush.
      if (cutAt() === undefined) return;
      for (const entry of await n.db.listPrepared()) bound.set(entry.replica, Math.min(bound.get(entry.replica) ?? 0, entry.lsn - 1));
      const cut = cutAt();
      if (cut === undefined) return;
      await n.db.compactApplied(retention.oldestVclock);
      if (!unchanged()) return;
      const history = await this.#historyAt(cut);
      if (!unchanged()) return;
      const exactTo = vclockCovers(cut, n.exactTo, { ignoreLocal: true }) ? [] : n.exactTo;
      const removed = await retention.trim(cut, checkpointState(history.toState(), exactTo));
      if (exactTo.length === 0) n.exactTo = [];
      n.log.debug({ removed, start: cut }, 'journal segments removed');
    } catch (error) {
      if (error instanceof AssertionFailed) throw error;
      n.log.warn({ err: (error as Error).message }, 'journal retention failed; it tries again');
    } finally {
      this.#retaining = false;
    }
  }

  /** The limbo history as of `vclock` (a segment's start): the checkpoint's, folded over the records up to there. */
  async #historyAt(vclock: VClock): Promise<LimboHistory> {
    const n = this.#n;
    const checkpoint = readCheckpointState(n.journal);
    const history = checkpoint === null ? new LimboHistory(n.self) : LimboHistory.fromState(n.self, checkpoint.history);
    for await (const record of n.journal.cursor(checkpoint?.vclock ?? [])) {
      if (record.lsn > vclockGet(vclock, record.replica)) break;
      history.apply(record);
    }
    return history;
  }
}
