// Records this node holds durably but could not apply when they came (a
// table missing here, a column it lacks): it acknowledges none of them, nor
// anything after them from the same node, so it counts in no quorum for them
// and cannot win an election with a journal it cannot apply
// (docs/rfc/0012-followers-hold-the-limbo.md). The driver notes them as they
// arrive, lifts them as the apply queue passes them or the limbo rolls them
// back, and checks them again against the tables read anew.
import type { TxnRecord } from '../core/record.js';
import type { Lsn, ReplicaId } from '../core/types.js';
import { vclockEntries, vclockFromEntries, vclockGet, type VClock } from '../core/vclock.js';

/** Unfit records kept whole, to be checked again once the tables change (the first of each replica is always noted). */
const KEPT_MAX = 256;

interface Entry {
  readonly replica: ReplicaId;
  readonly lsn: Lsn;
  /** Null past KEPT_MAX: lifted only once applied or rolled back. */
  readonly record: TxnRecord | null;
  readonly reason: string;
}

export class UnfitRecords {
  #entries: Entry[] = [];

  get none(): boolean {
    return this.#entries.length === 0;
  }

  /** The first, for status: why this node holds acknowledgements back. */
  get first(): Entry | undefined {
    return this.#entries[0];
  }

  /** A record that arrived and does not fit; true when it is the first of its replica (worth a log line). */
  note(record: TxnRecord, reason: string): boolean {
    const first = !this.#entries.some((u) => u.replica === record.replica);
    if (first || this.#entries.length < KEPT_MAX) {
      this.#entries.push({ replica: record.replica, lsn: record.lsn, record: this.#entries.length < KEPT_MAX ? record : null, reason });
    }
    return first;
  }

  /** `durable` short of the first unfit record of each replica: what this node may acknowledge. */
  cap(durable: VClock): VClock {
    if (this.#entries.length === 0) return durable;
    return vclockFromEntries(vclockEntries(durable).map(([replica, lsn]) => {
      const cap = Math.min(lsn, ...this.#entries.filter((u) => u.replica === replica).map((u) => u.lsn - 1));
      return [replica, cap as Lsn] as const;
    }).filter(([, lsn]) => lsn > 0));
  }

  /**
   * Entries stop holding acknowledgements back once PostgreSQL holds their
   * record (the apply queue passed it) or the limbo rolled it back: nothing of
   * it will be applied, and the ROLLBACK after it must be acknowledged for the
   * leader to hear a quorum hold it.
   */
  lift(applied: VClock, rolledBack: (replica: ReplicaId, lsn: Lsn) => boolean): void {
    if (this.#entries.length === 0) return;
    this.#entries = this.#entries.filter((u) => vclockGet(applied, u.replica) < u.lsn && !rolledBack(u.replica, u.lsn));
  }

  /** After the tables were read again: drop the entries that fit now. */
  recheck(unfit: (record: TxnRecord) => string | null): void {
    this.#entries = this.#entries.filter((u) => u.record === null || unfit(u.record) !== null);
  }
}
