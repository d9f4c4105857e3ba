// Membership through the journal (RFC 0010): a membership record takes effect
// on a node when the node learns it is confirmed, the highest confirmed
// version wins whatever order the records and their verdicts arrive in, a
// record a PROMOTE did not keep never takes effect, and the leader's change
// rules (one node at a time, never itself, fresh replica ids) hold. The
// election and the limbo count quorums among the new members.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { electionCreate, electionStep, NO_REPLICA } from '../../src/core/election.js';
import { LimboHistory } from '../../src/core/history.js';
import { limboCreate, limboStep } from '../../src/core/limbo.js';
import { MEMBERSHIP_NONE, membershipChange, membershipNote, membershipSettle, membershipSettled, membershipStateParse, type Membership } from '../../src/core/membership.js';
import type { ConfigRecord, JournalRecord, Member } from '../../src/core/record.js';
import type { Lsn, ReplicaId, Term } from '../../src/core/types.js';

const r = (n: number): ReplicaId => n as ReplicaId;
const l = (n: number): Lsn => n as Lsn;
const member = (n: number): Member => ({ replica: r(n), address: `127.0.0.1:${7400 + n}` });
const three: Membership = { members: [1, 2, 3].map(member), quorum: 2, version: 0 };

function change(replica: number, lsn: number, ids: readonly number[], version: number, term = 1): ConfigRecord {
  return { kind: 'config', replica: r(replica), lsn: l(lsn), term: term as Term, time: lsn, members: ids.map(member), quorum: Math.floor(ids.length / 2) + 1, membersVersion: version };
}
const confirm = (replica: number, lsn: number, upTo: number, term = 1): JournalRecord => ({ kind: 'confirm', replica: r(replica), lsn: l(lsn), term: term as Term, time: lsn, owner: r(replica), confirmedLsn: l(upTo) });
const promote = (replica: number, lsn: number, prevOwner: number, prevLsn: number, term: number): JournalRecord => ({ kind: 'promote', replica: r(replica), lsn: l(lsn), term: term as Term, time: lsn, prevOwner: r(prevOwner), prevLsn: l(prevLsn), leader: r(replica) });
const ids = (m: Membership | null): number[] | null => m?.members.map((x) => x.replica) ?? null;

describe('membership records', () => {
  it('take effect once confirmed, not when journaled', () => {
    const history = new LimboHistory(r(1));
    history.apply(change(1, 5, [1, 2, 3, 4], 1));
    expect(history.membership).toBeNull();
    history.apply(confirm(1, 6, 5));
    expect(ids(history.membership)).toEqual([1, 2, 3, 4]);
    expect(history.membership?.quorum).toBe(3);
  });

  it('never take effect when the next leader did not keep them', () => {
    const history = new LimboHistory(r(3));
    history.apply(promote(1, 1, 0, 0, 1));
    history.apply(change(1, 5, [1, 2, 3, 4], 1));
    // Node 2 took over holding node 1's records up to lsn 4: the change (lsn 5) is rolled back...
    history.apply(promote(2, 1, 1, 4, 2));
    expect(history.membership).toBeNull();
    // ...and a CONFIRM from the deposed node 1 (stale) does not bring it back.
    history.apply(confirm(1, 6, 5, 1));
    expect(history.membership).toBeNull();
    // The new leader's own change of the same version is the one in effect.
    history.apply(change(2, 2, [1, 2, 3, 5], 1, 2));
    history.apply(confirm(2, 3, 2, 2));
    expect(ids(history.membership)).toEqual([1, 2, 3, 5]);
  });

  it('take effect when a PROMOTE keeps them, as for any limbo entry', () => {
    const history = new LimboHistory(r(3));
    history.apply(change(1, 5, [1, 2, 3, 4], 1));
    history.apply(promote(2, 1, 1, 5, 2));
    expect(ids(history.membership)).toEqual([1, 2, 3, 4]);
  });

  it('end in the same membership whatever order a node learns them in', () => {
    // Two changes of one leader and their confirmations, delivered in any order that keeps each after its change.
    const records: ConfigRecord[] = [change(1, 1, [1, 2, 3, 4], 1), change(1, 3, [1, 2, 4], 2)];
    const verdicts = new Map<string, 'confirmed'>();
    fc.assert(fc.property(fc.shuffledSubarray([0, 1, 2, 3], { minLength: 4, maxLength: 4 }), (order) => {
      let state = MEMBERSHIP_NONE;
      verdicts.clear();
      const seen = new Set<number>();
      for (const step of order) {
        // 0, 1: the records; 2, 3: their confirmations (a confirmation before its record waits for it).
        if (step < 2) {
          state = membershipNote(state, records[step] as ConfigRecord);
          seen.add(step);
        } else {
          verdicts.set(`1:${(records[step - 2] as ConfigRecord).lsn}`, 'confirmed');
        }
        state = membershipSettle(state, (replica, lsn) => verdicts.get(`${replica}:${lsn}`) ?? null);
      }
      expect(ids(state.current)).toEqual([1, 2, 4]);
      expect(state.current?.version).toBe(2);
      expect(state.candidates).toEqual([]);
    }));
  });

  it('survive the state round trip and refuse malformed states', () => {
    const state = membershipSettle(membershipNote(MEMBERSHIP_NONE, change(1, 1, [1, 2], 1)), () => 'confirmed');
    expect(membershipStateParse(JSON.parse(JSON.stringify(state)))).toEqual(state);
    expect(membershipStateParse(undefined)).toEqual(MEMBERSHIP_NONE);
    expect(membershipStateParse({ current: { members: [], quorum: 1, version: 1 }, candidates: [] })).toMatch(/membership.current/);
    expect(membershipStateParse({ current: null, candidates: 'x' })).toMatch(/membership.candidates/);
  });
});

describe('a membership change', () => {
  it('adds one node with a replica id no node ever wrote with, and a majority quorum', () => {
    const added = membershipChange(three, { kind: 'add', member: { address: '127.0.0.1:7404' } }, [r(1), r(2), r(3), r(5)], r(1));
    expect(added).toMatchObject({ version: 1, quorum: 3 });
    expect(ids(added as Membership)).toEqual([1, 2, 3, 6]);
  });

  it('removes one node, and refuses what it cannot do with what to do instead', () => {
    expect(membershipChange(three, { kind: 'remove', replica: r(3) }, [], r(1))).toMatchObject({ version: 1, quorum: 2, members: [member(1), member(2)] });
    expect(membershipChange(three, { kind: 'remove', replica: r(1) }, [], r(1))).toMatch(/cannot remove itself.*qsync transfer/);
    expect(membershipChange(three, { kind: 'remove', replica: r(7) }, [], r(1))).toMatch(/node 7 is not a member \(members: 1, 2, 3\)/);
    expect(membershipChange(three, { kind: 'add', member: { address: '127.0.0.1:7402' } }, [], r(1))).toMatch(/node 2 already has the peer address/);
    const full: Membership = { members: [member(1)], quorum: 1, version: 3 };
    expect(membershipChange(full, { kind: 'add', member: { address: 'x:1' } }, [r(31)], r(1))).toMatch(/no replica id is left/);
  });
});

describe('the next change', () => {
  const four: Membership = { members: [1, 2, 3, 4].map(member), quorum: 3, version: 1 };
  const held = (...ids: number[]) => (replica: ReplicaId): boolean => ids.includes(replica);

  it('waits until a quorum of the members before the last change holds it too, not only of those after', () => {
    // 4 -> 3 (node 4 removed): nodes 1 and 2 hold the CONFIRM, a quorum of the three left but not of the four.
    const three3 = membershipChange(four, { kind: 'remove', replica: r(4) }, [], r(1)) as Membership;
    expect(membershipSettled(four, three3, held(1, 2))).toMatch(/held by 2 of its 3 members \(quorum 2\) and 2 of the 4 before it \(quorum 3\)/);
    expect(membershipSettled(four, three3, held(1, 2, 4))).toBeNull();
    // 3 -> 4 (node 4 added): a quorum of the four is needed, which the old three alone make up.
    expect(membershipSettled(three, four, held(1, 2))).toMatch(/held by 2 of its 4 members/);
    expect(membershipSettled(three, four, held(1, 2, 3))).toBeNull();
  });
});

describe('the election and the limbo after a change', () => {
  const config = { self: r(1), members: [r(1), r(2), r(3)], quorum: 2, mode: 'candidate' as const, electionTimeoutMs: 1_000, heartbeatMs: 100 };

  it('a node removed neither grants votes nor campaigns', () => {
    let state = electionCreate(config, { term: 1 as Term, vote: NO_REPLICA }, 7, 0);
    state = electionStep(state, { kind: 'members', members: [r(2), r(3)], quorum: 2, mode: 'candidate' }, { nowMs: 0, vclock: [] }).state;
    expect(state.config.mode).toBe('off');
    const later = electionStep(state, { kind: 'tick' }, { nowMs: 10_000, vclock: [] });
    expect(later.state.role).toBe('follower');
    expect(later.messages).toEqual([]);
    const asked = electionStep(state, { kind: 'message', from: r(2), message: { type: 'vote', term: 5 as Term, vclock: [], pre: false, force: true } }, { nowMs: 10_000, vclock: [] });
    expect(asked.messages.map((m) => m.message)).toEqual([{ type: 'voteReply', term: 5, granted: false, pre: false }]);
  });

  it('the limbo confirms only once a quorum of the new members holds an entry', () => {
    let limbo = limboCreate({ owner: r(1), members: [r(1), r(2), r(3)], quorum: 2, synchroTimeoutMs: 1_000 });
    limbo = limboStep(limbo, { kind: 'members', members: [r(1), r(2), r(3), r(4)], quorum: 3 }).state;
    limbo = limboStep(limbo, { kind: 'append', entry: { lsn: l(1), gid: 'g1', createdAtMs: 0 } }).state;
    limbo = limboStep(limbo, { kind: 'durable', lsn: l(1) }).state;
    const two = limboStep(limbo, { kind: 'ack', replica: r(2), lsn: l(1) });
    expect(two.actions).toEqual([]);
    const three4 = limboStep(two.state, { kind: 'ack', replica: r(4), lsn: l(1) });
    expect(three4.actions).toEqual([{ kind: 'confirm', confirmedLsn: 1, gids: ['g1'] }]);
  });
});
