// Cluster membership through the journal (docs/rfc/0010-membership.md).
//
//   leader (its own term's PROMOTE held by a quorum, no change pending)
//     │ CONFIG {members, quorum, version n+1}: one node more or one fewer than version n
//     ▼
//   candidate ── its lsn confirmed (CONFIRM, or a PROMOTE that keeps it) ──► in effect on this node
//     │
//     └── rolled back (a ROLLBACK, or a PROMOTE that does not keep it) ──► no effect (unless a
//         later PROMOTE revives it, as for any limbo entry)
//
// A membership record is a limbo entry of its leader: it takes effect on each
// node when the node learns it is confirmed, exactly as a sync write commits
// there. Of the confirmed records the highest version wins, so two nodes that
// learn of two changes in another order end with the same membership; lower
// versions are dropped. Without any record, the static configuration holds.
//
// Pure: no I/O, no clock. The limbo history (history.ts) keeps this state and
// feeds it, so a checkpoint and a snapshot carry it with the rest.
import { assert } from './assert.js';
import { quorumDefault } from './quorum.js';
import type { ConfigRecord, Member } from './record.js';
import { isReplicaId, type HistoryVerdict, type Lsn, type ReplicaId } from './types.js';

export interface Membership {
  /** Every member, the leader included, by replica id ascending. */
  readonly members: readonly Member[];
  readonly quorum: number;
  /** 1 for the first change; each change is one more than the membership it changes. */
  readonly version: number;
}

/** A membership record seen and not yet in effect. */
export interface MembershipCandidate {
  readonly replica: ReplicaId;
  readonly lsn: Lsn;
  readonly membership: Membership;
}

export interface MembershipState {
  /** In effect; null: the static configuration (no record was ever confirmed). */
  readonly current: Membership | null;
  /** Invariant: every candidate's version is above current's. */
  readonly candidates: readonly MembershipCandidate[];
}

export const MEMBERSHIP_NONE: MembershipState = { current: null, candidates: [] };

/** The membership a CONFIG record proposes, or null when it carries none. */
export function membershipOf(record: ConfigRecord): Membership | null {
  if (record.members === undefined || record.quorum === undefined || record.membersVersion === undefined) return null;
  return { members: record.members, quorum: record.quorum, version: record.membersVersion };
}

/** Take a record in journal order: a membership record becomes a candidate. */
export function membershipNote(state: MembershipState, record: ConfigRecord): MembershipState {
  const membership = membershipOf(record);
  if (membership === null || membership.version <= (state.current?.version ?? 0)) return state;
  if (state.candidates.some((c) => c.replica === record.replica && c.lsn === record.lsn)) return state;
  return { ...state, candidates: [...state.candidates, { replica: record.replica, lsn: record.lsn, membership }] };
}

/**
 * Put into effect the confirmed candidate of the highest version, if it is
 * above the current one. Rolled-back candidates stay (a later PROMOTE may
 * revive them) until a higher version is in effect.
 */
export function membershipSettle(state: MembershipState, verdict: (replica: ReplicaId, lsn: Lsn) => HistoryVerdict): MembershipState {
  if (state.candidates.length === 0) return state;
  let best: Membership | null = null;
  for (const c of state.candidates) {
    if (verdict(c.replica, c.lsn) === 'confirmed' && c.membership.version > (best?.version ?? state.current?.version ?? 0)) best = c.membership;
  }
  if (best === null) return state;
  const version = best.version;
  return { current: best, candidates: state.candidates.filter((c) => c.membership.version > version) };
}

/** A change an operator asks the leader for: one node more, or one fewer. */
export type MembershipChange =
  | { readonly kind: 'add'; readonly member: Omit<Member, 'replica'> }
  | { readonly kind: 'remove'; readonly replica: ReplicaId };

/**
 * The membership after `change`, or a sentence saying why it is refused.
 * `taken` holds every replica id that ever wrote (the journal's vclock): a
 * new node gets the lowest id above all of them and every member, so that
 * no record of a removed node can be taken for the new one's.
 */
export function membershipChange(current: Membership, change: MembershipChange, taken: readonly ReplicaId[], self: ReplicaId): Membership | string {
  const ids = current.members.map((m) => m.replica);
  let members: Member[];
  if (change.kind === 'add') {
    const address = change.member.address;
    const clash = current.members.find((m) => m.address === address);
    if (clash !== undefined) return `node ${clash.replica} already has the peer address ${address}`;
    const replica = Math.max(0, ...ids, ...taken) + 1;
    if (!isReplicaId(replica)) return `no replica id is left: ids 1 to 31 have all been used (vclocks have 31 components)`;
    members = [...current.members, { ...change.member, replica: replica as ReplicaId }];
  } else {
    if (!ids.includes(change.replica)) return `node ${change.replica} is not a member (members: ${ids.join(', ')})`;
    if (change.replica === self) return `node ${self} is the leader and cannot remove itself: hand leadership over first (qsync transfer), then remove it from the new leader`;
    if (current.members.length === 1) return 'the last member cannot be removed';
    members = current.members.filter((m) => m.replica !== change.replica);
  }
  members.sort((a, b) => a.replica - b.replica);
  const next = { members, quorum: quorumDefault(members.length), version: current.version + 1 };
  assert(Math.abs(next.members.length - current.members.length) === 1, 'one node at a time');
  return next;
}

/**
 * Whether the last change, from `before` to `after`, may be followed by
 * another: a quorum of `after` and a quorum of `before` hold its CONFIRM
 * (`holds`). Until then some node may still count quorums among `before`,
 * and one more change would let it meet a membership two nodes away, whose
 * quorums need not intersect its own (4 -> 3: two of the three left are not
 * three of the four). Null when it may; else why not.
 */
export function membershipSettled(before: Membership, after: Membership, holds: (replica: ReplicaId) => boolean): string | null {
  const holders = (m: Membership): number => m.members.filter((x) => holds(x.replica)).length;
  if (holders(after) >= after.quorum && holders(before) >= before.quorum) return null;
  return `the last membership change (version ${after.version}) is held by ${holders(after)} of its ${after.members.length} members (quorum ${after.quorum}) and ${holders(before)} of the ${before.members.length} before it (quorum ${before.quorum}): the next change waits for a quorum of both`;
}

/** Check a membership state read from a checkpoint or a peer; a sentence saying what is wrong, or the state. */
export function membershipStateParse(value: unknown): MembershipState | string {
  if (value === undefined) return MEMBERSHIP_NONE;
  if (typeof value !== 'object' || value === null) return 'membership: expected a map';
  const v = value as Record<string, unknown>;
  const parseOne = (m: unknown): Membership | null => {
    if (typeof m !== 'object' || m === null) return null;
    const { members, quorum, version } = m as Record<string, unknown>;
    if (!Array.isArray(members) || members.length === 0 || members.length > 31) return null;
    if (!members.every((x: unknown) => typeof x === 'object' && x !== null && isReplicaId((x as Member).replica) && (x as Member).replica > 0 && typeof (x as Member).address === 'string')) return null;
    if (!Number.isSafeInteger(quorum) || (quorum as number) < 1 || (quorum as number) > members.length || !Number.isSafeInteger(version) || (version as number) < 1) return null;
    return m as Membership;
  };
  const current = v.current === null ? null : parseOne(v.current);
  if (v.current !== null && current === null) return 'membership.current: expected members, a quorum and a version';
  if (!Array.isArray(v.candidates) || !v.candidates.every((c: unknown) => typeof c === 'object' && c !== null && parseOne((c as MembershipCandidate).membership) !== null)) {
    return 'membership.candidates: expected candidates';
  }
  return value as MembershipState;
}
