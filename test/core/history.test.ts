// The limbo history as plain data (RFC 0009): a history taken to its state and
// back at any point of a journal decides everything after that point as the
// history that folded the whole journal does, through msgpack too (the
// checkpoint file and the snapshot message), and the parser refuses what is
// malformed. Adopting a peer's history keeps this node's own withheld records.
// A deposed writer withholds only what it writes after it hears of its
// deposition, so a later PROMOTE that keeps its earlier entries is applied
// whole by every node, the writer too.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { historyStateParse, LimboHistory } from '../../src/core/history.js';
import { codec, type JournalRecord } from '../../src/core/record.js';
import type { Lsn, ReplicaId, Term } from '../../src/core/types.js';

/** A journal of limbo records from replicas 1-3: sync TXNs, CONFIRMs, ROLLBACKs and PROMOTEs, in lsn order per replica. */
const journals = fc.array(fc.record({ replica: fc.integer({ min: 1, max: 3 }), kind: fc.constantFrom('txn', 'txn', 'confirm', 'rollback', 'promote', 'members'), back: fc.integer({ min: 0, max: 4 }), term: fc.integer({ min: 1, max: 4 }), withheld: fc.boolean() }), { maxLength: 60 })
  .map((steps) => {
    const lsns = [0, 0, 0, 0];
    let version = 0;
    return steps.map(({ replica, kind, back, term, withheld }): JournalRecord => {
      const lsn = ((lsns[replica] as number) + 1) as Lsn;
      lsns[replica] = lsn;
      const header = { replica: replica as ReplicaId, lsn, term: term as Term, time: lsn };
      const before = Math.max(1, lsn - back) as Lsn;
      switch (kind) {
        case 'txn':
          return { ...header, kind: 'txn', gid: `g${replica}-${lsn}`, sync: true, changes: [], idempotencyKey: null };
        case 'confirm':
          return { ...header, kind: 'confirm', owner: replica as ReplicaId, confirmedLsn: before };
        case 'members':
          // A membership change (RFC 0010): every one a version higher than the last, 2 to 4 members.
          version += 1;
          return { ...header, kind: 'config', members: Array.from({ length: 2 + (version % 3) }, (_, i) => ({ replica: (i + 1) as ReplicaId, address: `127.0.0.1:${7401 + i}` })), quorum: 2, membersVersion: version };
        case 'rollback':
          return { ...header, kind: 'rollback', owner: replica as ReplicaId, fromLsn: before, ...(withheld ? { withheldFromLsn: before } : {}) };
        default:
          return { ...header, kind: 'promote', prevOwner: ((replica % 3) + 1) as ReplicaId, prevLsn: before, leader: replica as ReplicaId };
      }
    });
  });

function decisions(history: LimboHistory, upTo: number): unknown {
  const verdicts: string[] = [];
  for (let replica = 1; replica <= 3; replica += 1) {
    for (let lsn = 1; lsn <= upTo; lsn += 1) verdicts.push(String(history.verdict(replica as ReplicaId, lsn as Lsn)));
  }
  return { verdicts, synchro: history.synchro, withheld: history.withheld, membership: history.membership };
}

describe('limbo history state', () => {
  it('goes on from its state exactly as the history that folded everything', () => {
    fc.assert(fc.property(journals, fc.nat(), fc.constantFrom(1, 2, 3), (journal, at, self) => {
      const split = journal.length === 0 ? 0 : at % (journal.length + 1);
      const whole = new LimboHistory(self as ReplicaId);
      const first = new LimboHistory(self as ReplicaId);
      journal.slice(0, split).forEach((r) => first.apply(r));
      const state = historyStateParse(codec.unpack(codec.pack(first.toState())));
      if (typeof state === 'string') throw new Error(state);
      const resumed = LimboHistory.fromState(self as ReplicaId, state);
      const revivedWhole = journal.map((r) => whole.apply(r)).slice(split);
      const revivedResumed = journal.slice(split).map((r) => resumed.apply(r));
      expect(revivedResumed).toEqual(revivedWhole);
      expect(decisions(resumed, 62)).toEqual(decisions(whole, 62));
    }), { numRuns: 300 });
  });

  it('refuses a malformed state, naming the part', () => {
    expect(historyStateParse(null)).toMatch(/history: expected a map/);
    expect(historyStateParse({ ...new LimboHistory(1 as ReplicaId).toState(), confirmed: [[1, -1]] })).toMatch(/history.confirmed/);
    expect(historyStateParse({ ...new LimboHistory(1 as ReplicaId).toState(), ignored: ['x'] })).toMatch(/history.ignored/);
  });

  it('adopting a peer\'s history keeps this node\'s withheld records and withholds what a PROMOTE deposed', () => {
    const mine = new LimboHistory(3 as ReplicaId);
    mine.withhold({ from: 4 as Lsn, to: 5 as Lsn, reason: 'rolledBack' });
    const peer = new LimboHistory(1 as ReplicaId);
    peer.apply({ replica: 1 as ReplicaId, lsn: 1 as Lsn, term: 2 as Term, time: 1, kind: 'promote', prevOwner: 3 as ReplicaId, prevLsn: 7 as Lsn, leader: 1 as ReplicaId });
    const adopted = mine.adopt(peer.toState());
    expect(adopted.synchro).toEqual({ owner: 1, term: 2 });
    expect(adopted.withheld).toEqual([{ from: 4, to: 5, reason: 'rolledBack' }, { from: 8, to: Number.MAX_SAFE_INTEGER, reason: 'deposed' }]);
    expect(adopted.verdict(3 as ReplicaId, 7 as Lsn)).toBe('confirmed');
    expect(adopted.verdict(3 as ReplicaId, 8 as Lsn)).toBe('rolled-back');
  });

  it('a deposed writer withholds only what it writes after it hears of the PROMOTE; a later PROMOTE that keeps its earlier entries revives them on the writer too', () => {
    // Simulator seed 37122: node 1's entry 1:2 reached node 3 whole; node 2's PROMOTE (kept 1:1) deposed node 1,
    // then node 3's PROMOTE of a later term (which never took node 2's) kept 1:2 and 1:3. Every node applied 1:2
    // but node 1, which kept its rollback: the replicas differed.
    const header = (replica: number, lsn: number, term: number) => ({ replica: replica as ReplicaId, lsn: lsn as Lsn, term: term as Term, time: lsn });
    const txn = (lsn: number): JournalRecord => ({ ...header(1, lsn, 1), kind: 'txn', gid: `g1-${lsn}`, sync: true, changes: [], idempotencyKey: null });
    const promote = (replica: number, term: number, prevLsn: number): JournalRecord => ({ ...header(replica, 1, term), kind: 'promote', prevOwner: 1 as ReplicaId, prevLsn: prevLsn as Lsn, leader: replica as ReplicaId });
    const writer = new LimboHistory(1 as ReplicaId);
    [txn(1), txn(2)].forEach((r) => writer.apply(r));
    writer.apply(promote(2, 2, 1));
    // 1:2 was written before node 1 heard of its deposition: rolled back for now, but not withheld (it may be whole on peers).
    expect([writer.verdict(1 as ReplicaId, 2 as Lsn), writer.withheld]).toEqual(['rolled-back', [{ from: 3, to: Number.MAX_SAFE_INTEGER, reason: 'deposed' }]]);
    writer.apply(txn(3)); // written after: void, relayed emptied
    const revived = writer.apply(promote(3, 3, 3));
    expect(revived).toEqual([{ owner: 1, from: 2, to: 3 }]);
    expect([1, 2, 3].map((lsn) => writer.verdict(1 as ReplicaId, lsn as Lsn))).toEqual(['confirmed', 'confirmed', 'rolled-back']);
    // Through its state too (a checkpoint): the writer's tail goes with it.
    const resumed = LimboHistory.fromState(1 as ReplicaId, writer.toState());
    resumed.apply(promote(2, 4, 3));
    expect(resumed.withheld.at(-1)).toEqual({ from: 4, to: Number.MAX_SAFE_INTEGER, reason: 'deposed' });
  });
});
