// The order in which journaled records reach PostgreSQL on a node
// (docs/rfc/0012-followers-hold-the-limbo.md). Records join in journal order
// once durable; they leave from the head, in steps the driver applies:
//
//   push (durable) ──► [ head … tail ] ──► next(): a run of TXNs, or one other record
//        │                    ▲                   │ applied
//        │ past bytesMax      └── a sync TXN the  ┘ done(n)
//        ▼                        limbo has not decided waits at the head
//   spilled: left in the journal, read back (refill) once the queue runs empty
//
// A follower holds the limbo in its journal and here, never in PostgreSQL: a
// sync TXN is applied (committed) only once the history says CONFIRM, or
// skipped once it says ROLLBACK; until then it waits at the head, and every
// record behind it waits too, so PostgreSQL holds a prefix of each replica's
// records and its applied vclock says where replay starts. The queue never
// holds more than its byte bound: past it, records stay in the journal only
// and are read back in order, so a long wait for the limbo costs disk, not
// memory. Nothing here reads the clock or does I/O.
import { recordBytes, type JournalRecord } from './record.js';
import type { Lsn, ReplicaId } from './types.js';
import { vclockCovers, vclockEntries, vclockFollow, vclockFromEntries, vclockGet, type VClock } from './vclock.js';

/** What the limbo's history decided about an entry (null: nothing yet). */
export interface Decisions {
  verdict(replica: ReplicaId, lsn: Lsn): 'confirmed' | 'rolled-back' | null;
  /** A stale limbo record taken without effect: nothing waits for it. */
  ignored(record: JournalRecord): boolean;
}

/**
 * What to apply next: a run of TXNs in journal order (one PostgreSQL
 * transaction), with the inert records among them, which leave with it; or
 * one other record by itself.
 */
export type ApplyStep =
  | { readonly kind: 'txns'; readonly records: readonly JournalRecord[] }
  | { readonly kind: 'one'; readonly record: JournalRecord };

export interface StepBounds {
  readonly recordsMax: number;
  readonly bytesMax: number;
  /**
   * A record other than a TXN that needs no PostgreSQL work here (a CONFIRM
   * when this node holds nothing prepared): a run of TXNs goes on past it, so
   * the entries of several CONFIRMs share one transaction.
   */
  readonly inert?: (record: JournalRecord) => boolean;
  /** Planted bug (simulator): an undecided sync TXN does not wait. */
  readonly undecidedApplied?: boolean;
}

export class ApplyQueue {
  readonly #bytesMax: number;
  #records: JournalRecord[] = [];
  #head = 0;
  #bytes = 0;
  /** CONFIG records queued, not yet applied (a table mode or a schema change still to come). */
  #configs = 0;
  /** Every record taken: queued, applied, or let go as not this queue's (refill). Invariant: a prefix of the journal per replica. */
  #held: VClock = [];
  /**
   * Past the byte bound, records are no longer kept here: the journal holds
   * them, and once the queue runs empty the driver reads them back from
   * #held on (refill). Until then, pushes are let go.
   */
  #spilled = false;

  constructor(bytesMax: number, held: VClock) {
    this.#bytesMax = bytesMax;
    this.#held = held;
  }

  /** Bytes of the records kept here (at most about bytesMax: one record may go past it). */
  get bytes(): number {
    return this.#bytes;
  }

  get length(): number {
    return this.#records.length - this.#head;
  }

  /** A CONFIG record waits in the queue, or may (spilled): the tables will change before what follows it is applied. */
  get schemaPending(): boolean {
    return this.#configs > 0 || this.#spilled;
  }

  /** Records past #held are in the journal only: read them back with refill once the queue runs empty. */
  get spilled(): boolean {
    return this.#spilled;
  }

  /** Where a refill reads the journal from. */
  get held(): VClock {
    return this.#held;
  }

  /** A record that just became durable, in journal order. */
  push(record: JournalRecord): void {
    if (this.#spilled || vclockGet(this.#held, record.replica) >= record.lsn) return;
    this.#keep(record);
  }

  /** A record read back from the journal; `queued`: it is this queue's to apply. Returns false once the queue is full. */
  refill(record: JournalRecord, queued: boolean): boolean {
    if (vclockGet(this.#held, record.replica) >= record.lsn) return true;
    if (queued) this.#keep(record);
    else this.#held = vclockFollow(this.#held, record.replica, record.lsn);
    return this.#bytes < this.#bytesMax;
  }

  /** A refill read to the journal's durable end: if nothing was let go meanwhile, pushes are kept again. */
  refilled(durable: VClock): void {
    if (this.#bytes < this.#bytesMax && vclockCovers(this.#held, durable, { ignoreLocal: true })) this.#spilled = false;
  }

  /** Everything after `from` is to be read from the journal again (replay: PostgreSQL holds `from`). */
  reset(from: VClock): void {
    this.#records = [];
    this.#head = 0;
    this.#bytes = 0;
    this.#configs = 0;
    this.#held = from;
    this.#spilled = true;
  }

  #keep(record: JournalRecord): void {
    this.#records.push(record);
    this.#bytes += recordBytes(record);
    if (record.kind === 'config') this.#configs += 1;
    this.#held = vclockFollow(this.#held, record.replica, record.lsn);
    if (this.#bytes >= this.#bytesMax) this.#spilled = true;
  }

  /** Whether `record` is the kind that waits for the limbo: a sync TXN with changes, not yet decided. */
  static waits(record: JournalRecord, decisions: Decisions): boolean {
    return record.kind === 'txn' && record.sync && record.changes.length > 0 && !decisions.ignored(record) && decisions.verdict(record.replica, record.lsn) === null;
  }

  /**
   * The next step from the head, or null when the queue is empty or its head
   * waits for the limbo. A run of TXNs stops before a record that waits, at a
   * record that is not a TXN, or at the bounds (it always holds one).
   */
  next(decisions: Decisions, bounds: StepBounds): ApplyStep | null {
    const first = this.#records[this.#head];
    if (first === undefined) return null;
    const waits = (r: JournalRecord): boolean => bounds.undecidedApplied !== true && ApplyQueue.waits(r, decisions);
    if (waits(first)) return null;
    const rides = (r: JournalRecord): boolean => r.kind === 'txn' || bounds.inert?.(r) === true;
    if (!rides(first)) return { kind: 'one', record: first };
    const run: JournalRecord[] = [first];
    let bytes = recordBytes(first);
    for (let i = this.#head + 1; i < this.#records.length && run.length < bounds.recordsMax; i += 1) {
      const record = this.#records[i] as JournalRecord;
      if (!rides(record) || waits(record)) break;
      bytes += recordBytes(record);
      if (bytes > bounds.bytesMax) break;
      run.push(record);
    }
    return { kind: 'txns', records: run };
  }

  /** The first `n` records were applied (or skipped as rolled back): they leave. */
  done(n: number): void {
    for (let i = 0; i < n; i += 1) {
      const record = this.#records[this.#head] as JournalRecord;
      this.#head += 1;
      this.#bytes -= recordBytes(record);
      if (record.kind === 'config') this.#configs -= 1;
    }
    if (this.#head > 1024 && this.#head * 2 > this.#records.length) {
      this.#records = this.#records.slice(this.#head);
      this.#head = 0;
    }
  }

  /**
   * What PostgreSQL holds, given what the journal holds durably: for each
   * replica, up to the lsn before its first record still queued, and no
   * further than what the queue took (the rest is still to be read back).
   */
  appliedVclock(durable: VClock): VClock {
    const first = new Map<ReplicaId, Lsn>();
    for (let i = this.#head; i < this.#records.length; i += 1) {
      const record = this.#records[i] as JournalRecord;
      if (!first.has(record.replica)) first.set(record.replica, record.lsn);
    }
    return vclockFromEntries(vclockEntries(durable).map(([replica, lsn]) => {
      const queued = first.get(replica);
      const top = Math.min(lsn, queued === undefined ? lsn : queued - 1, this.#spilled ? vclockGet(this.#held, replica) : lsn);
      return [replica, top as Lsn] as const;
    }).filter(([, lsn]) => lsn > 0));
  }
}
