// Which journal records a relay sends one subscriber, and when
// (docs/rfc/0012-followers-hold-the-limbo.md). The relay's own records go at
// once. A third node's records (the leader's, seen from a follower) usually
// reach the subscriber straight from that node, so the relay holds each for
// a delay and then sends it only if the subscriber has not acknowledged it
// meanwhile: no copy in the common case, and the record still arrives, one
// delay late, when the subscriber's own link to its writer is down (a
// partition in a ring). The subscriber's own records never go back to it.
//
//   offer(record) ──► own record of the relay ──► send held, then it, now
//                ├──► the subscriber's record ──────────────► drop
//                └──► a third node's ──► held (FIFO, bounded)
//                                         │ due after delayMs, or pushed out
//                                         ▼
//                          acked covers it? ─ yes ─► drop
//                                         └── no ──► send
//
// Order: records leave in journal order, with only those the subscriber holds
// taken out (the held queue is first-in first-out, and the relay's own record
// sends everything held before it), so the subscriber sees what it would
// have seen from a relay that sends everything: no reordering across nodes.
// Time comes in as `nowMs`; nothing here reads a clock.
import type { JournalRecord } from './record.js';
import type { ReplicaId } from './types.js';
import { vclockGet, vclockMerge, type VClock } from './vclock.js';

export interface RelayFilterOptions {
  readonly relay: ReplicaId;
  readonly subscriber: ReplicaId;
  /** How long a third node's record waits for the subscriber's ack before it is sent anyway. */
  readonly delayMs: number;
  /** Records held at most; past it the oldest is due at once. */
  readonly heldMax: number;
  /** Planted bug (simulator): a third node's record is dropped, never sent late. */
  readonly thirdPartyDropped?: boolean;
}

export class RelayFilter {
  readonly #options: RelayFilterOptions;
  #acked: VClock = [];
  #held: Array<{ readonly record: JournalRecord; readonly dueMs: number }> = [];
  #head = 0;

  constructor(options: RelayFilterOptions) {
    this.#options = options;
  }

  /** The subscriber acknowledged holding `vclock` (acks only grow). */
  acked(vclock: VClock): void {
    this.#acked = vclockMerge(this.#acked, vclock);
  }

  /** Whether the subscriber holds `record`, by its acks. */
  #holds(record: JournalRecord): boolean {
    return vclockGet(this.#acked, record.replica) >= record.lsn;
  }

  /** A record read from the journal, in journal order: what to send now, in order. */
  offer(record: JournalRecord, nowMs: number): JournalRecord[] {
    const { relay, subscriber } = this.#options;
    if (record.replica === subscriber) return [];
    // Everything held goes first (what the subscriber lacks): the stream stays in journal order, with only
    // records the subscriber holds taken out. Order across nodes matters to it: a PROMOTE of this relay read
    // before the records it keeps would otherwise find the subscriber without them (simulator seed 25).
    if (record.replica === relay) return [...this.due(Infinity), record];
    if (this.#options.thirdPartyDropped === true) return this.due(nowMs);
    this.#held.push({ record, dueMs: nowMs + this.#options.delayMs });
    return this.due(nowMs);
  }

  /** The held records due by `nowMs` (or pushed out by the bound) that the subscriber lacks, in order. */
  due(nowMs: number): JournalRecord[] {
    const out: JournalRecord[] = [];
    while (this.#head < this.#held.length) {
      const entry = this.#held[this.#head] as { record: JournalRecord; dueMs: number };
      const over = this.#held.length - this.#head > this.#options.heldMax;
      if (!over && entry.dueMs > nowMs && !this.#holds(entry.record)) break;
      this.#head += 1;
      if (!this.#holds(entry.record)) out.push(entry.record);
    }
    if (this.#head > 1024 && this.#head * 2 > this.#held.length) {
      this.#held = this.#held.slice(this.#head);
      this.#head = 0;
    }
    return out;
  }

  /** When the oldest held record falls due (null: none held). */
  get nextDueMs(): number | null {
    return this.#held[this.#head]?.dueMs ?? null;
  }
}
