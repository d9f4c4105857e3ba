// The limbo's history: what the journal, read in order, decided about every
// owner's sync entries, who owns the limbo now and in which term, and which of
// this node's own records it must relay as empty TXNs. One fold serves both
// recovery (over the whole journal) and the running node (record by record,
// as each is appended), so the two can never decide differently.
//
//   CONFIRM(owner, lsn)     owner's entries up to lsn are committed
//   ROLLBACK(owner, from)   owner's entries from `from` up to the record are rolled back
//   PROMOTE(prev, kept)     prev's entries up to kept are committed, every later one rolled
//                           back (also those that arrive after the PROMOTE, until prev
//                           writes a PROMOTE itself); prev's ROLLBACKs past kept are void
//                           (never held by a quorum, or the winner would hold them); the
//                           limbo passes to the PROMOTE's leader and term
// A standing rollback wins over a later confirmation of a prefix: CONFIRM and
// PROMOTE commit what is still pending. This node's own sync writes made
// after a PROMOTE deposed it, until it next writes a PROMOTE, are void.
//
// A peer's limbo record from a term older than the limbo's is stale (a leader
// deposed while it wrote, heard only now): it is journaled, so the writer's
// stream goes on, but it decides nothing. A stale CONFIRM, ROLLBACK or
// PROMOTE is ignored; a stale sync TXN is rolled back unless a PROMOTE kept
// it. Why that is safe: docs/rfc/0003-stale-records.md.
//
// Mutable and pure: no I/O, no clock; recovery folds thousands of records.
import { MEMBERSHIP_NONE, membershipNote, membershipSettle, membershipStateParse, type Membership, type MembershipState } from './membership.js';
import type { JournalRecord } from './record.js';
import type { HistoryVerdict, Lsn, ReplicaId, Term } from './types.js';
import { isSynchro, type WithheldRange } from './withheld.js';

interface RolledBack {
  readonly from: number;
  /** Exclusive: the ROLLBACK record's own lsn (or one past the owner's last entry, for a PROMOTE). */
  readonly until: number;
  /** A stale TXN's: no record decided it, so a later PROMOTE that keeps it voids it. */
  readonly voidable?: true;
}

/** Entries of `owner` from `from` to `to` (inclusive) that were rolled back and are confirmed now. */
export interface RevivedRange {
  readonly owner: ReplicaId;
  readonly from: Lsn;
  readonly to: Lsn;
}

/**
 * A history as plain data: what a journal checkpoint keeps of the records it
 * removed (journal/journal.ts trim), and what a snapshot hands a rejoining
 * node with the rows (DESIGN.md §4, docs/rfc/0009-retention-and-rejoin.md).
 */
export interface HistoryState {
  readonly synchro: { readonly owner: ReplicaId; readonly term: Term };
  readonly confirmed: ReadonlyArray<readonly [number, number]>;
  readonly rolledBack: ReadonlyArray<readonly [number, ReadonlyArray<{ readonly from: number; readonly until: number; readonly voidable?: true }>]>;
  readonly withheld: readonly WithheldRange[];
  readonly ignored: readonly string[];
  /** Absent in checkpoints written before membership changes: none. */
  readonly membership?: MembershipState;
  /** The highest lsn of this node's own records taken so far. Absent in older checkpoints: 0. */
  readonly ownTail?: number;
}

const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;
const isPair = (v: unknown): v is [number, number] => Array.isArray(v) && v.length === 2 && isCount(v[0]) && isCount(v[1]);

/** Check a history state read from disk or a peer; a sentence saying what is wrong, or the state. */
export function historyStateParse(value: unknown): HistoryState | string {
  if (typeof value !== 'object' || value === null) return 'history: expected a map';
  const v = value as Record<string, unknown>;
  const synchro = v.synchro as Record<string, unknown> | undefined;
  if (typeof synchro !== 'object' || synchro === null || !isCount(synchro.owner) || synchro.owner > 31 || !isCount(synchro.term)) return 'history.synchro: expected an owner and a term';
  if (!Array.isArray(v.confirmed) || !v.confirmed.every(isPair)) return 'history.confirmed: expected [owner, lsn] pairs';
  const ranges = (r: unknown): boolean => Array.isArray(r) && r.every((x) => typeof x === 'object' && x !== null && isCount((x as RolledBack).from) && isCount((x as RolledBack).until));
  if (!Array.isArray(v.rolledBack) || !v.rolledBack.every((e: unknown) => Array.isArray(e) && e.length === 2 && isCount(e[0]) && ranges(e[1]))) return 'history.rolledBack: expected [owner, ranges] pairs';
  if (!Array.isArray(v.withheld) || !v.withheld.every((w: unknown) => typeof w === 'object' && w !== null && isCount((w as WithheldRange).from) && isCount((w as WithheldRange).to)
    && ['rolledBack', 'deposed'].includes((w as WithheldRange).reason))) return 'history.withheld: expected ranges';
  if (!Array.isArray(v.ignored) || !v.ignored.every((i: unknown) => typeof i === 'string' && /^\d+:\d+$/.test(i))) return 'history.ignored: expected replica:lsn strings';
  const membership = membershipStateParse(v.membership);
  if (typeof membership === 'string') return `history.${membership}`;
  if (v.ownTail !== undefined && !isCount(v.ownTail)) return 'history.ownTail: expected an lsn';
  return value as HistoryState;
}

export class LimboHistory {
  readonly self: ReplicaId;
  #synchro: { readonly owner: ReplicaId; readonly term: Term } = { owner: 0 as ReplicaId, term: 0 as Term };
  readonly #confirmed = new Map<number, number>();
  /** Standing rollbacks by owner. */
  readonly #rolledBack = new Map<number, RolledBack[]>();
  #withheld: WithheldRange[] = [];
  /** Stale records ignored, by replica:lsn (rare: one per deposed leader's in-flight record). */
  readonly #ignored = new Set<string>();
  /** Membership records and the one in effect (core/membership.ts). */
  #membership: MembershipState = MEMBERSHIP_NONE;
  /**
   * The highest lsn of this node's own records taken so far: a PROMOTE that
   * deposes this node withholds only what comes after it (#promote).
   */
  #ownTail = 0;

  constructor(self: ReplicaId) {
    this.self = self;
  }

  /** A history that goes on from `state`, as node `self` sees it. */
  static fromState(self: ReplicaId, state: HistoryState): LimboHistory {
    const history = new LimboHistory(self);
    history.#synchro = { ...state.synchro };
    for (const [owner, lsn] of state.confirmed) history.#confirmed.set(owner, lsn);
    for (const [owner, ranges] of state.rolledBack) history.#rolledBack.set(owner, ranges.map((r) => ({ from: r.from, until: r.until, ...(r.voidable === true ? { voidable: true as const } : {}) })));
    history.#withheld = state.withheld.map((r) => ({ ...r }));
    for (const key of state.ignored) history.#ignored.add(key);
    history.#membership = state.membership ?? MEMBERSHIP_NONE;
    history.#ownTail = state.ownTail ?? 0;
    return history;
  }

  /** Everything this history holds, as plain data (fromState reads it back). */
  toState(): HistoryState {
    return {
      synchro: { ...this.#synchro },
      confirmed: [...this.#confirmed],
      rolledBack: [...this.#rolledBack].map(([owner, ranges]) => [owner, ranges.map((r) => ({ ...r }))] as const),
      withheld: this.#withheld.map((r) => ({ ...r })),
      ignored: [...this.#ignored],
      membership: this.#membership,
      ownTail: this.#ownTail,
    };
  }

  /**
   * Another node's history taken over by this one (a rejoin by snapshot):
   * its decisions, owner and term, with this node's own withheld records
   * kept, and everything of this node past a PROMOTE that deposed it
   * withheld as a deposed range.
   */
  adopt(other: HistoryState): LimboHistory {
    const deposed = (other.rolledBack.find(([owner]) => owner === this.self)?.[1] ?? [])
      .filter((r) => r.until === Number.MAX_SAFE_INTEGER).map((r) => ({ from: r.from as Lsn, to: Number.MAX_SAFE_INTEGER as Lsn, reason: 'deposed' as const }));
    const history = LimboHistory.fromState(this.self, { ...other, withheld: this.#withheld, ownTail: this.#ownTail });
    for (const range of deposed) history.withhold(range);
    return history;
  }

  /** The limbo owner and its term, from the last PROMOTE (owner 0, term 0: none yet). */
  get synchro(): { readonly owner: ReplicaId; readonly term: Term } {
    return this.#synchro;
  }

  /** The highest lsn of `owner` a CONFIRM covers (0: none). */
  confirmedLsn(owner: ReplicaId): Lsn {
    return (this.#confirmed.get(owner) ?? 0) as Lsn;
  }

  /** The membership in effect: the confirmed membership record of the highest version; null: the static configuration. */
  get membership(): Membership | null {
    return this.#membership.current;
  }

  /** This node's own records that it relays as empty TXNs. */
  get withheld(): readonly WithheldRange[] {
    return this.#withheld;
  }

  /**
   * Take the next record in journal order. Returns the ranges of entries this
   * record revives: rolled back by a ROLLBACK or PROMOTE that this PROMOTE
   * voids, and now confirmed. A node that rolled them back in PostgreSQL
   * applies them again from its journal.
   */
  apply(record: JournalRecord): RevivedRange[] {
    if (record.kind === 'config' && record.members !== undefined) this.#membership = membershipNote(this.#membership, record);
    const revived = this.#decide(record);
    if (record.replica === this.self) this.#ownTail = Math.max(this.#ownTail, record.lsn);
    if (this.#membership.candidates.length > 0) this.#membership = membershipSettle(this.#membership, (replica, lsn) => this.verdict(replica, lsn));
    return revived;
  }

  #decide(record: JournalRecord): RevivedRange[] {
    if (this.isStale(record)) {
      if (record.kind === 'txn') {
        if (this.verdict(record.replica, record.lsn) === null) this.#rollBack(record.replica, record.lsn, record.lsn + 1, true);
      } else if (record.kind !== 'config') {
        this.#ignored.add(`${record.replica}:${record.lsn}`);
      }
      return [];
    }
    if (record.kind === 'promote') return this.#promote(record);
    switch (record.kind) {
      case 'confirm':
        this.#confirmed.set(record.owner, Math.max(this.#confirmed.get(record.owner) ?? 0, record.confirmedLsn));
        break;
      case 'rollback':
        this.#rollBack(record.owner, record.fromLsn, record.lsn);
        if (record.owner === this.self && record.withheldFromLsn !== undefined) this.withhold({ from: record.withheldFromLsn, to: (record.lsn - 1) as Lsn, reason: 'rolledBack' });
        break;
      default:
        break;
    }
    return [];
  }

  /**
   * Withhold a range of this node's records from now on. The running node
   * calls it as soon as it decides a rollback, before the ROLLBACK record is
   * appended: no relay may send those TXNs in between. Idempotent.
   */
  withhold(range: WithheldRange): void {
    if (!this.#withheld.some((r) => r.from === range.from && r.reason === range.reason)) this.#withheld.push(range);
  }

  /** A peer's limbo record from a term older than the limbo's: taken, but it decides nothing. */
  isStale(record: JournalRecord): boolean {
    return record.replica !== this.self && isSynchro(record) && record.term < this.#synchro.term;
  }

  /** A stale CONFIRM, ROLLBACK, PROMOTE or DEMOTE this history took without effect: apply must skip it too. */
  ignored(record: JournalRecord): boolean {
    return this.#ignored.size > 0 && this.#ignored.has(`${record.replica}:${record.lsn}`);
  }

  /** What the history decided about an owner's entry so far; null: still pending. */
  verdict(replica: ReplicaId, lsn: Lsn): HistoryVerdict {
    if ((this.#rolledBack.get(replica) ?? []).some((r) => lsn >= r.from && lsn < r.until)) return 'rolled-back';
    if (replica === this.self && this.#withheld.some((r) => r.reason === 'deposed' && lsn >= r.from && lsn <= r.to)) return 'rolled-back';
    return lsn <= (this.#confirmed.get(replica) ?? 0) ? 'confirmed' : null;
  }

  #rollBack(owner: number, from: number, until: number, voidable = false): void {
    this.#rolledBack.set(owner, [...(this.#rolledBack.get(owner) ?? []), { from, until, ...(voidable ? { voidable } : {}) }]);
  }

  #promote(record: JournalRecord & { kind: 'promote' }): RevivedRange[] {
    const prev = record.prevOwner;
    const ranges = this.#rolledBack.get(prev) ?? [];
    const voided = (r: RolledBack): boolean => r.from <= record.prevLsn && (r.until > record.prevLsn || r.voidable === true);
    const revived = ranges.filter(voided).map((r) => ({ owner: prev, from: r.from as Lsn, to: Math.min(r.until - 1, record.prevLsn) as Lsn }));
    this.#rolledBack.set(prev, ranges.filter((r) => !voided(r) && r.until <= record.prevLsn));
    // Everything of prev past the lsn kept, including entries that reach this node only later (written
    // by prev before it learned it was deposed), until prev itself writes a PROMOTE.
    if (prev !== 0) this.#rollBack(prev, record.prevLsn + 1, Number.MAX_SAFE_INTEGER);
    // The new leader's entries before this PROMOTE that were rolled back stay so; from here on it owns the limbo.
    this.#rolledBack.set(record.replica, (this.#rolledBack.get(record.replica) ?? []).map((r) => (r.until > record.lsn ? { ...r, until: record.lsn } : r)));
    this.#confirmed.set(prev, Math.max(this.#confirmed.get(prev) ?? 0, record.prevLsn));
    if (record.term > this.#synchro.term) this.#synchro = { owner: record.leader, term: record.term };
    if (record.replica === this.self) {
      // Leading again: this node's limbo records from here on are real.
      this.#withheld = this.#withheld.map((r) => (r.reason === 'deposed' && r.to >= record.lsn ? { ...r, to: (record.lsn - 1) as Lsn } : r));
    } else if (prev === this.self) {
      // Deposed: what this node writes from now on is void, and relayed emptied, so that no later PROMOTE
      // can keep it with its changes (its client hears RolledBack at once). Not what it wrote before it
      // heard of this PROMOTE, past the lsn kept: some of it may have reached peers whole, and a later
      // PROMOTE that voids this one may keep it; every node then applies it whole, this one too
      // (simulator seed 37122: the writer kept its rollback while its peers committed the entry).
      this.withhold({ from: (Math.max(record.prevLsn, this.#ownTail) + 1) as Lsn, to: Number.MAX_SAFE_INTEGER as Lsn, reason: 'deposed' });
    }
    return revived;
  }
}
