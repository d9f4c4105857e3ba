// This node's own records in lsn order. An lsn is reserved when a record is
// about to exist (for a transaction, right before capture: its gid and
// applied marker name it), but transactions finish in any order and may fail.
// Submitted records wait here until every lower lsn is submitted, then go to
// the journal in order; an lsn whose transaction failed is filled with an
// empty TXN, so the journal never sees a gap.
import { gidFor } from '../core/gid.js';
import type { JournalRecord, TxnRecord } from '../core/record.js';
import type { Lsn, ReplicaId, Term } from '../core/types.js';
import { vclockGet } from '../core/vclock.js';
import type { JournalStore } from './io.js';

interface Waiting {
  readonly record: JournalRecord;
  readonly resolve: () => void;
  readonly reject: (error: Error) => void;
}

export class OwnLog {
  readonly #journal: JournalStore;
  readonly #replica: ReplicaId;
  readonly #cluster: string;
  readonly #onAppend: (record: JournalRecord) => void;
  #nextReserved: number;
  #nextAppended: number;
  readonly #waiting = new Map<number, Waiting>();

  /** `onAppend` runs synchronously as each record enters the journal, in lsn order. */
  constructor(journal: JournalStore, replica: ReplicaId, cluster: string, onAppend: (record: JournalRecord) => void) {
    this.#journal = journal;
    this.#replica = replica;
    this.#cluster = cluster;
    this.#onAppend = onAppend;
    this.#nextReserved = vclockGet(journal.tailVclock, replica) + 1;
    this.#nextAppended = this.#nextReserved;
  }

  reserve(): { lsn: Lsn; gid: string } {
    const lsn = this.#nextReserved as Lsn;
    this.#nextReserved += 1;
    return { lsn, gid: gidFor(this.#cluster, this.#replica, lsn) };
  }

  /** Submit the record for a reserved lsn; resolves when it is durable. */
  submit(record: JournalRecord): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#waiting.set(record.lsn, { record, resolve, reject });
      this.#drain();
    });
  }

  /** Reserve and submit in one step (CONFIRM, ROLLBACK, CONFIG). */
  append(make: (lsn: Lsn) => JournalRecord): { lsn: Lsn; durable: Promise<void> } {
    const { lsn } = this.reserve();
    return { lsn, durable: this.submit(make(lsn)) };
  }

  /**
   * Give back a reserved lsn whose transaction produced no record: possible
   * while no later lsn was reserved (then it is simply reused); otherwise
   * it is filled with an empty TXN so the journal has no gap.
   */
  release(lsn: Lsn, term: Term, time: number): void {
    if (lsn === this.#nextReserved - 1 && !this.#waiting.has(lsn)) {
      this.#nextReserved -= 1;
      return;
    }
    void this.fill(lsn, term, time);
  }

  /** Fill a reserved lsn whose transaction produced no record. */
  fill(lsn: Lsn, term: Term, time: number): Promise<void> {
    const empty: TxnRecord = { kind: 'txn', replica: this.#replica, lsn, term, time, gid: gidFor(this.#cluster, this.#replica, lsn), sync: false, changes: [], idempotencyKey: null };
    return this.submit(empty);
  }

  #drain(): void {
    for (let next = this.#waiting.get(this.#nextAppended); next !== undefined; next = this.#waiting.get(this.#nextAppended)) {
      this.#waiting.delete(this.#nextAppended);
      this.#nextAppended += 1;
      this.#journal.append(next.record).then(next.resolve, next.reject);
      this.#onAppend(next.record);
    }
  }
}
