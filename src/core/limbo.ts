// The limbo: the leader's sync transactions that are prepared but not yet
// confirmed (Tarantool's txn_limbo, over PostgreSQL prepared transactions).
//
//            append                  a quorum holds lsn
//   (none) ─────────► pending ──────────────────────────► confirmed   (write CONFIRM,
//                        │                                              COMMIT PREPARED, answer OK)
//                        │ oldest pending older than the synchro timeout
//                        ▼
//                   rolling back ── a quorum holds the ROLLBACK ──► rolled back (answer RolledBack:
//                        │          record                            certain)
//                        └──── leadership lost first ───────────────► unknown (answer OutcomeUnknown)
//
// Pure: time comes in as `nowMs`, acks as lsns of the owner's component. The
// owner (this node, the leader) counts itself once its own journal write and
// PREPARE are durable (`durable`). Entries are confirmed as a prefix, in lsn
// order, by one CONFIRM; a timeout rolls back the oldest pending entry and
// every one after it (they were prepared after it, and one ROLLBACK record
// covers "from lsn on").
//
// A client is told RolledBack only once the ROLLBACK record itself is held by
// a quorum: a ROLLBACK that only this leader holds could be overturned by a
// new leader that holds the entry (Tarantool learned this the hard way).
import { assert } from './assert.js';
import { limits } from './limits.js';
import { quorumValue } from './quorum.js';
import type { Lsn, ReplicaId } from './types.js';

export interface LimboEntry {
  readonly lsn: Lsn;
  readonly gid: string;
  readonly createdAtMs: number;
}

export interface LimboConfig {
  readonly owner: ReplicaId;
  /** Every member of the cluster, the owner included. */
  readonly members: readonly ReplicaId[];
  readonly quorum: number;
  readonly synchroTimeoutMs: number;
}

export interface RollingBack {
  readonly fromLsn: Lsn;
  readonly gids: readonly string[];
  /** Lsn of the ROLLBACK record once journaled; null until then. */
  readonly recordLsn: Lsn | null;
}

export interface LimboState {
  readonly config: LimboConfig;
  /** Pending entries, lsn ascending. Invariant: every lsn > confirmedLsn. */
  readonly entries: readonly LimboEntry[];
  readonly confirmedLsn: Lsn;
  /** Highest owner lsn each member holds durably (journal and PostgreSQL); the owner's own via `durable`. */
  readonly held: ReadonlyMap<ReplicaId, Lsn>;
  /** Rollbacks whose ROLLBACK record is not yet held by a quorum, oldest first. */
  readonly rollingBack: readonly RollingBack[];
}

export type LimboEvent =
  | { readonly kind: 'append'; readonly entry: LimboEntry }
  | { readonly kind: 'durable'; readonly lsn: Lsn }
  | { readonly kind: 'ack'; readonly replica: ReplicaId; readonly lsn: Lsn }
  | { readonly kind: 'tick'; readonly nowMs: number }
  | { readonly kind: 'rollbackJournaled'; readonly fromLsn: Lsn; readonly recordLsn: Lsn }
  /** Leadership lost: nothing pending can be answered with certainty any more. */
  | { readonly kind: 'abandon' }
  /** A membership change took effect: quorums are counted among the new members from here on. */
  | { readonly kind: 'members'; readonly members: readonly ReplicaId[]; readonly quorum: number };

export type LimboAction =
  /** Write CONFIRM(confirmedLsn), COMMIT PREPARED the gids, answer their clients. */
  | { readonly kind: 'confirm'; readonly confirmedLsn: Lsn; readonly gids: readonly string[] }
  /** Write ROLLBACK(fromLsn), ROLLBACK PREPARED the gids; answer nobody yet. */
  | { readonly kind: 'rollback'; readonly fromLsn: Lsn; readonly gids: readonly string[] }
  /** The ROLLBACK is held by a quorum: answer RolledBack. */
  | { readonly kind: 'rolledBack'; readonly gids: readonly string[] }
  /** Answer OutcomeUnknown: the clients resolve it later by idempotency key. */
  | { readonly kind: 'unknown'; readonly gids: readonly string[] }
  /** The append was refused: the limbo is full (back-pressure). */
  | { readonly kind: 'full'; readonly gid: string };

export interface LimboStep {
  readonly state: LimboState;
  readonly actions: readonly LimboAction[];
}

export function limboCreate(config: LimboConfig, confirmedLsn: Lsn = 0 as Lsn): LimboState {
  assert(config.members.includes(config.owner), 'the owner is a member');
  assert(config.quorum >= 1 && config.quorum <= config.members.length, `quorum ${config.quorum} of ${config.members.length}`);
  return { config, entries: [], confirmedLsn, held: new Map([[config.owner, confirmedLsn]]), rollingBack: [] };
}

export function limboStep(state: LimboState, event: LimboEvent): LimboStep {
  switch (event.kind) {
    case 'append':
      return append(state, event.entry);
    case 'durable':
      return settle(hold(state, state.config.owner, event.lsn));
    case 'ack':
      return state.config.members.includes(event.replica) && event.replica !== state.config.owner ? settle(hold(state, event.replica, event.lsn)) : { state, actions: [] };
    case 'tick':
      return timeout(settle(state), event.nowMs);
    case 'rollbackJournaled':
      return settle({ ...state, rollingBack: state.rollingBack.map((r) => (r.fromLsn === event.fromLsn ? { ...r, recordLsn: event.recordLsn } : r)) });
    case 'members': {
      assert(event.members.includes(state.config.owner), 'the owner stays a member');
      assert(event.quorum >= 1 && event.quorum <= event.members.length, `quorum ${event.quorum} of ${event.members.length}`);
      return settle({ ...state, config: { ...state.config, members: event.members, quorum: event.quorum } });
    }
    case 'abandon': {
      const gids = [...state.rollingBack.flatMap((r) => r.gids), ...state.entries.map((e) => e.gid)];
      return { state: { ...state, entries: [], rollingBack: [] }, actions: gids.length > 0 ? [{ kind: 'unknown', gids }] : [] };
    }
  }
}

function append(state: LimboState, entry: LimboEntry): LimboStep {
  const last = state.entries.at(-1)?.lsn ?? state.confirmedLsn;
  assert(entry.lsn > last, `limbo entry ${entry.lsn} does not follow ${last}`);
  if (state.entries.length >= limits.limboEntriesMax) return { state, actions: [{ kind: 'full', gid: entry.gid }] };
  // Settle at once: acks that raced ahead of the append already count.
  return settle({ ...state, entries: [...state.entries, entry] });
}

function hold(state: LimboState, replica: ReplicaId, lsn: Lsn): LimboState {
  if (lsn <= (state.held.get(replica) ?? 0)) return state; // acks only move forward
  const held = new Map(state.held);
  held.set(replica, lsn);
  return { ...state, held };
}

/** The highest owner lsn a quorum of members holds. */
export function limboQuorumLsn(state: LimboState): Lsn {
  return quorumValue(state.config.members.map((m) => state.held.get(m) ?? 0), state.config.quorum) as Lsn;
}

/** Confirm the pending prefix a quorum holds; finish rollbacks whose record a quorum holds. */
function settle(state: LimboState): LimboStep {
  const quorumLsn = limboQuorumLsn(state);
  const actions: LimboAction[] = [];
  let next = state;
  const held = state.entries.filter((e) => e.lsn <= quorumLsn);
  if (held.length > 0) {
    const confirmedLsn = (held.at(-1) as LimboEntry).lsn;
    next = { ...next, entries: state.entries.slice(held.length), confirmedLsn };
    actions.push({ kind: 'confirm', confirmedLsn, gids: held.map((e) => e.gid) });
  }
  const done = next.rollingBack.filter((r) => r.recordLsn !== null && r.recordLsn <= quorumLsn);
  if (done.length > 0) {
    next = { ...next, rollingBack: next.rollingBack.filter((r) => !done.includes(r)) };
    actions.push({ kind: 'rolledBack', gids: done.flatMap((r) => r.gids) });
  }
  return { state: next, actions };
}

function timeout(step: LimboStep, nowMs: number): LimboStep {
  const { state } = step;
  const oldest = state.entries[0];
  if (oldest === undefined || nowMs - oldest.createdAtMs < state.config.synchroTimeoutMs) return step;
  const gids = state.entries.map((e) => e.gid);
  const rollingBack: RollingBack = { fromLsn: oldest.lsn, gids, recordLsn: null };
  return {
    state: { ...state, entries: [], rollingBack: [...state.rollingBack, rollingBack] },
    actions: [...step.actions, { kind: 'rollback', fromLsn: oldest.lsn, gids }],
  };
}
