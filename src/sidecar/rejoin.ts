// Snapshots (docs/rfc/0009-retention-and-rejoin.md, RFC 0010): a node that
// lacks records its peers no longer keep, or a new node, takes a peer's
// replicated tables and starts its journal over at the snapshot's floor; a
// node offers one to a subscriber that lacks what its journal removed.
import { historyStateParse, LimboHistory, type HistoryState } from '../core/history.js';
import type { JournalRecord } from '../core/record.js';
import type { Lsn, ReplicaId } from '../core/types.js';
import { vclockEntries, vclockFromEntries, vclockGet } from '../core/vclock.js';
import type { NodeContext } from './context.js';
import type { JournalRetention, SnapshotBegin, SnapshotOffer, SnapshotSink } from './io.js';
import { checkpointState, readCheckpointState } from './verdicts.js';

/** How long a joining node waits for the peer it asked for a snapshot before it asks another. */
const JOIN_ASK_MS = 10_000;

export class Rejoin<S, W> {
  readonly #n: NodeContext<S, W>;
  /** Why this node needs a rejoin it does not take by itself (rejoin manual), or why the last one failed; for status. */
  gap: string | null = null;
  /** The operator asked for a rejoin (qsync rejoin): subscriptions ask for a snapshot. */
  #allowed = false;
  /** A new node that has not loaded its first snapshot yet. */
  #joining: { readonly done: () => void } | null;
  /** The peer a joining node asks for its snapshot, and since when (another is tried after JOIN_ASK_MS). */
  #joinAsked: { readonly peer: ReplicaId; readonly sinceMs: number } | null = null;

  constructor(n: NodeContext<S, W>, joining: { readonly done: () => void } | null) {
    this.#n = n;
    this.#joining = joining;
  }

  /** qsync rejoin: let subscriptions ask for a snapshot (rejoin manual); a peer that lacks nothing sends none. */
  allow(): void {
    this.#allowed = true;
  }

  /** Whether subscriptions ask for a snapshot when a peer lacks records this node needs. */
  takesSnapshot(): boolean {
    return this.#n.rejoining === null && (this.#n.config.rejoin === 'auto' || this.#allowed);
  }

  /** A peer lacks records this node needs and no snapshot was asked for. */
  onGap(peer: ReplicaId, reason: string): void {
    if (this.#n.rejoining !== null) return; // a subscription made while one peer's snapshot loads
    if (this.gap === null) this.#n.log.error({ peer, reason }, 'this node lacks records its peers no longer keep: it needs a rejoin by snapshot (qsync rejoin)');
    this.gap = `node ${peer}: ${reason}`;
  }

  /**
   * A subscriber lacks records this journal no longer holds: offer the
   * replicated tables as of the journal's start. Everything before it is in
   * PostgreSQL (retention removes nothing else), and the relay's cursor,
   * opened at the start before the snapshot is read, brings the rest; the
   * snapshot's applied marks say which of those records it holds already.
   */
  offer(subscriber: ReplicaId): SnapshotOffer | null {
    const n = this.#n;
    if (n.rejoining !== null || !n.recovered || n.stopping) return null;
    // A journal that never removed a record starts at nothing, with nothing decided (a node joining).
    const checkpoint = readCheckpointState(n.journal) ?? { vclock: [], history: new LimboHistory(n.self).toState(), exactTo: [] };
    n.log.info({ subscriber, floor: checkpoint.vclock }, `node ${subscriber} needs a snapshot (it joins, or lacks records this journal no longer holds): sending one`);
    return {
      floor: checkpoint.vclock,
      begin: async () => {
        const { tables, parts } = await n.db.readSnapshot();
        return { begin: { floor: checkpoint.vclock, history: checkpoint.history, tables }, parts };
      },
    };
  }

  /**
   * Take a peer's snapshot (a rejoin): in the apply queue, once this node's
   * own writes are done, roll back what PostgreSQL holds prepared (the
   * snapshot has what was decided), replace the replicated tables, then
   * start the journal over at the snapshot's floor with this node's own
   * records after it, and the peer's limbo history. Writes are refused
   * meanwhile, and records from other links too (they come again).
   */
  take(peer: ReplicaId, begin: SnapshotBegin): SnapshotSink | null {
    const n = this.#n;
    if (n.rejoining !== null || n.stopping || n.journal.retention === undefined) return null;
    const history = historyStateParse(begin.history);
    if (typeof history === 'string') {
      n.log.error({ peer, reason: history }, 'a snapshot came with a malformed limbo history; refused');
      return null;
    }
    n.rejoining = { peer };
    n.recovered = false;
    const tables = begin.tables.map((t) => t.name);
    if (this.#joining === null) n.log.warn({ peer, floor: begin.floor, tables }, `rejoining by snapshot from node ${peer}: this node lacks records its peers no longer keep; its replicated tables are replaced (local tables stay)`);
    else n.log.info({ peer, floor: begin.floor, tables }, `joining: taking a snapshot from node ${peer}; tables missing here are created with its columns and primary key`);
    let finish!: () => void;
    const finished = new Promise<void>((resolve) => (finish = resolve));
    const load = n.queue.then(async () => {
      await n.until(() => n.writes.beforeLimbo === 0 && n.writes.ownInFlight.size === 0, () => !n.stopping);
      const prepared = await n.db.listPrepared();
      await n.db.finish('rollback', prepared.map((e) => e.gid));
      await n.held.rollbackAll();
      n.prepared.clear();
      return n.db.loadSnapshot(begin.tables);
    });
    load.catch(() => undefined);
    n.queue = load.then(() => finished, () => finished);
    const done = (failure: string | null): void => {
      n.rejoining = null;
      n.recovered = true;
      this.gap = failure === null ? null : `the rejoin by snapshot from node ${peer} failed: ${failure}`;
      finish();
    };
    return {
      part: async (part) => (await load).part(part),
      end: async (parts) => {
        let rows: number;
        try {
          rows = await (await load).commit();
        } catch (error) {
          done((error as Error).message);
          throw error;
        }
        try {
          await this.#startOver(begin, history);
        } catch (error) {
          // The old journal may be gone and the new one not whole: only a restart sorts that out.
          done((error as Error).message);
          n.fatal('starting the journal over after a snapshot', error);
          throw error;
        }
        n.log.info({ peer, rows, parts, vclock: n.journal.vclock }, `${this.#joining === null ? 'rejoined' : 'joined'} by snapshot from node ${peer}: its records from the snapshot's point on follow`);
        done(null);
        this.#joining?.done();
        this.#joining = null;
        void n.leadership.publish();
      },
      abort: async (reason) => {
        n.log.warn({ peer, reason }, 'the rejoin by snapshot was cut short; nothing of it stays, and it starts again');
        await load.then((l) => l.abort(), () => undefined);
        done(reason);
      },
    };
  }

  /** After a snapshot is loaded: the journal starts at its floor, with this node's own later records kept. */
  async #startOver(begin: SnapshotBegin, history: HistoryState): Promise<void> {
    const n = this.#n;
    const retention = n.journal.retention as JournalRetention;
    const self = n.self;
    const ownFrom = Math.max(vclockGet(begin.floor, self), vclockGet(retention.oldestVclock, self)) as Lsn;
    const keep: JournalRecord[] = [];
    for await (const record of n.journal.cursor(vclockFromEntries([...vclockEntries(n.journal.vclock).filter(([r]) => r !== self), [self, ownFrom]]))) {
      if (record.replica === self) keep.push(record);
    }
    const start = vclockFromEntries([...vclockEntries(begin.floor).filter(([r]) => r !== self), ...(ownFrom > 0 ? [[self, ownFrom] as const] : [])]);
    const adopted = n.history.adopt(history);
    const exactTo = vclockFromEntries(vclockEntries(await n.db.appliedVclock()).filter(([r]) => r !== self));
    await retention.rebase(start, keep, checkpointState(adopted.toState(), exactTo));
    for (const record of keep) adopted.apply(record);
    n.history = adopted;
    n.members.follow();
    n.exactTo = exactTo;
    n.revived = [];
    await n.untilDone('applying this node\'s own records after the snapshot', () => n.recovery.replay(), {});
    for (const entry of await n.db.listPrepared()) n.prepared.add(entry.gid);
  }

  /**
   * A joining node's subscription to `peer`: one peer at a time is asked for
   * the snapshot (each would read every replicated table for it); the others
   * wait, and while it loads. A peer that has not begun one within
   * JOIN_ASK_MS gives its turn to the next that asks.
   */
  joinFrom(peer: ReplicaId): 'join' | 'wait' | 'no' {
    const n = this.#n;
    if (this.#joining === null) return 'no';
    if (n.rejoining !== null) return 'wait';
    const now = n.clock.nowMs();
    const asked = this.#joinAsked;
    if (asked !== null && asked.peer !== peer && now - asked.sinceMs < JOIN_ASK_MS) return 'wait';
    if (asked?.peer !== peer) this.#joinAsked = { peer, sinceMs: now };
    return 'join';
  }
}
