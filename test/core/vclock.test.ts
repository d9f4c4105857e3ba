// Proves the vclock laws the journal, the relay and the vote rule rely on:
// compare is a partial order consistent with merge, and sum tracks records.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Lsn, ReplicaId } from '../../src/core/types.js';
import {
  VCLOCK_EMPTY, vclockCompare, vclockCovers, vclockFollow, vclockFromEntries, vclockGet, vclockMerge, vclockMissing, vclockParse, vclockSum, type VClock,
} from '../../src/core/vclock.js';
import { vclockArb } from '../support/arbitraries.js';

const vc = (o: Record<number, number>): VClock => vclockFromEntries(Object.entries(o).map(([r, l]) => [Number(r) as ReplicaId, l as Lsn]));
const all = { ignoreLocal: false } as const;

describe('vclock compare, table', () => {
  const cases: Array<[string, VClock, VClock, string, string]> = [
    ['empty vs empty', VCLOCK_EMPTY, VCLOCK_EMPTY, 'equal', 'equal'],
    ['one ahead', vc({ 1: 3 }), vc({ 1: 2 }), 'after', 'after'],
    ['missing component is zero', vc({ 2: 1 }), VCLOCK_EMPTY, 'after', 'after'],
    ['concurrent', vc({ 1: 3, 2: 1 }), vc({ 1: 2, 2: 5 }), 'concurrent', 'concurrent'],
    ['local component only differs', vc({ 0: 9, 1: 2 }), vc({ 1: 2 }), 'equal', 'after'],
    ['local ahead, replicated behind', vc({ 0: 9, 1: 1 }), vc({ 1: 2 }), 'before', 'concurrent'],
  ];
  it.each(cases)('%s', (_name, a, b, ignoringLocal, withLocal) => {
    expect([vclockCompare(a, b), vclockCompare(a, b, all)]).toEqual([ignoringLocal, withLocal]);
  });
});

describe('vclock laws (fast-check)', () => {
  const opposite = { equal: 'equal', before: 'after', after: 'before', concurrent: 'concurrent' } as const;

  it('compare is antisymmetric', () => {
    fc.assert(fc.property(vclockArb, vclockArb, (a, b) => vclockCompare(a, b, all) === opposite[vclockCompare(b, a, all)]));
  });

  it('equal means the same representation', () => {
    fc.assert(fc.property(vclockArb, vclockArb, (a, b) => (vclockCompare(a, b, all) === 'equal') === (JSON.stringify(a) === JSON.stringify(b))));
  });

  it('covers is transitive', () => {
    fc.assert(fc.property(vclockArb, vclockArb, vclockArb, (a, b, c) => !(vclockCovers(a, b, all) && vclockCovers(b, c, all)) || vclockCovers(a, c, all)));
  });

  it('merge is the least upper bound: commutative, idempotent, covers both', () => {
    fc.assert(
      fc.property(vclockArb, vclockArb, vclockArb, (a, b, c) => {
        const m = vclockMerge(a, b);
        expect(m).toEqual(vclockMerge(b, a));
        expect(vclockMerge(a, a)).toEqual(a);
        expect(vclockMerge(m, c)).toEqual(vclockMerge(a, vclockMerge(b, c)));
        expect(vclockCovers(m, a, all) && vclockCovers(m, b, all)).toBe(true);
        // least: any clock covering both covers the merge
        if (vclockCovers(c, a, all) && vclockCovers(c, b, all)) expect(vclockCovers(c, m, all)).toBe(true);
      }),
    );
  });

  it('covers(a, b) iff merge(a, b) equals a', () => {
    fc.assert(fc.property(vclockArb, vclockArb, (a, b) => vclockCovers(a, b, all) === (JSON.stringify(vclockMerge(a, b)) === JSON.stringify(a))));
  });

  it('follow moves exactly one component and the sum by the lsn step', () => {
    fc.assert(
      fc.property(vclockArb, fc.integer({ min: 0, max: 31 }), fc.integer({ min: 1, max: 5 }), (a, r, step) => {
        const replica = r as ReplicaId;
        const next = vclockFollow(a, replica, (vclockGet(a, replica) + step) as Lsn);
        expect(vclockCompare(next, a, all)).toBe('after');
        expect(vclockSum(next) - vclockSum(a)).toBe(step);
      }),
    );
  });

  it('parse accepts every normalised clock and nothing else', () => {
    fc.assert(fc.property(vclockArb, (a) => { expect(vclockParse(JSON.parse(JSON.stringify(a)))).toEqual(a); }));
    for (const bad of [null, {}, [1, -1], [1.5], [0, 2, 0], Array.from({ length: 33 }, () => 1), ['1']]) {
      expect(typeof vclockParse(bad)).toBe('string');
    }
  });

  it('follow refuses to go backwards', () => {
    expect(() => vclockFollow(vc({ 1: 3 }), 1 as ReplicaId, 3 as Lsn)).toThrow(/does not move past/);
  });
});

describe('vclockMissing (lag in records)', () => {
  it('counts what want holds beyond have, leaving the local component out; zero exactly when have covers want', () => {
    expect(vclockMissing(vc({ 1: 5, 2: 3 }), vc({ 0: 9, 1: 7, 2: 1, 3: 4 }))).toBe(2 + 4);
    fc.assert(fc.property(vclockArb, vclockArb, (a, b) => {
      const missing = vclockMissing(a, b);
      expect(missing >= 0).toBe(true);
      expect(missing === 0).toBe(vclockCovers(a, b));
      // Merging in what was missing leaves nothing missing, and merge never adds a lag.
      expect(vclockMissing(vclockMerge(a, b), b)).toBe(0);
      expect(vclockMissing(vclockMerge(a, b), vclockMerge(a, b))).toBe(0);
    }));
  });
});
