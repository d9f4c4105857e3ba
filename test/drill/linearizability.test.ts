// The register checker on hand-made histories, linearizable and not, with
// unknown outcomes, and on random histories that are linearizable by
// construction; a budget that runs out says unknown, never valid.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { checkRegisters, type RegisterOp } from '../../src/drill/linearizability.js';

let next = 0;
const op = (f: RegisterOp['f'], value: RegisterOp['value'], output: number | null, invokeMs: number, completeMs: number | null, key = 'x'): RegisterOp => ({ id: next++, key, f, value, output, invokeMs, completeMs });
const w = (v: number, at: number, until: number | null, key?: string): RegisterOp => op('write', v, null, at, until, key);
const r = (seen: number, at: number, until: number | null, key?: string): RegisterOp => op('read', null, seen, at, until, key);
const cas = (from: number, to: number, seen: number, at: number, until: number | null): RegisterOp => op('cas', [from, to], seen, at, until);

describe('linearizability of registers', () => {
  it.each([
    ['a write then a read of it', [w(1, 0, 10), r(1, 20, 30)]],
    ['a read overlapping a write sees the old value', [w(1, 0, 30), r(0, 10, 20)]],
    ['a read overlapping a write sees the new value', [w(1, 0, 30), r(1, 10, 20)]],
    ['a write whose outcome is unknown took effect', [w(1, 0, null), r(1, 50, 60)]],
    ['a write whose outcome is unknown never happened', [w(1, 0, null), r(0, 50, 60), r(0, 70, 80)]],
    ['a cas that matched, then one that did not', [cas(0, 1, 0, 0, 10), cas(0, 2, 1, 20, 30), r(1, 40, 50)]],
    ['two concurrent cas, one wins', [cas(0, 1, 0, 0, 30), cas(0, 2, 1, 5, 25), r(1, 40, 50)]],
    ['keys are independent', [w(1, 0, 10, 'a'), w(2, 0, 10, 'b'), r(1, 20, 30, 'a'), r(2, 20, 30, 'b')]],
  ])('valid: %s', (_name, history) => {
    expect(checkRegisters(history).valid).toBe(true);
  });

  it.each([
    ['a read after a finished write sees the old value', [w(1, 0, 10), r(0, 20, 30)], 'x'],
    ['a value goes back (stale read after a newer one)', [w(1, 0, 10), r(1, 11, 12), r(0, 13, 14)], 'x'],
    ['a value nobody wrote', [w(1, 0, 10), r(2, 20, 30)], 'x'],
    ['two cas both matched the same value in sequence', [cas(0, 1, 0, 0, 10), cas(0, 2, 0, 20, 30)], 'x'],
    ['an unknown write cannot explain a value it did not write', [w(1, 0, null), r(3, 50, 60)], 'x'],
    ['one bad key among good ones', [w(1, 0, 10, 'a'), r(1, 20, 30, 'a'), w(5, 0, 10, 'b'), r(0, 20, 30, 'b')], 'b'],
  ])('not valid: %s', (_name, history, key) => {
    const verdict = checkRegisters(history);
    expect(verdict.valid).toBe(false);
    expect(verdict).toMatchObject({ key });
  });

  it('names the operation that cannot be placed', () => {
    const stale = r(0, 20, 30);
    const verdict = checkRegisters([w(1, 0, 10), stale]);
    expect(verdict).toMatchObject({ valid: false, op: stale });
  });

  it('a search that runs out of budget says unknown, never valid', () => {
    // Many concurrent writes of distinct values and one read: a wide search.
    const history = [...Array.from({ length: 14 }, (_, i) => w(i + 1, 0, 100)), r(0, 200, 210)];
    const verdict = checkRegisters(history, { stepsMax: 50 });
    expect(verdict.valid).toBe('unknown');
    expect(verdict).toMatchObject({ reason: expect.stringContaining('budget of 50 steps exhausted') });
  });

  it('random histories made from a real register, with overlapping windows and lost answers, are valid', () => {
    fc.assert(fc.property(fc.array(fc.record({
      f: fc.constantFrom('read', 'write', 'cas'), a: fc.integer({ min: 0, max: 3 }), b: fc.integer({ min: 0, max: 3 }),
      before: fc.integer({ min: 0, max: 30 }), after: fc.integer({ min: 0, max: 30 }), lost: fc.boolean(),
    }), { maxLength: 25 }), (plan) => {
      // Each operation takes effect at time 100*i, inside a window around it.
      let value = 0;
      const history = plan.map((p, i) => {
        const at = 100 * i;
        const seen = value;
        if (p.f === 'write') value = p.a;
        if (p.f === 'cas' && value === p.a) value = p.b;
        const lost = p.lost && p.f !== 'read';
        return op(p.f as RegisterOp['f'], p.f === 'write' ? p.a : p.f === 'cas' ? [p.a, p.b] : null, p.f === 'write' || lost ? null : seen, at - p.before, lost ? null : at + p.after);
      });
      expect(checkRegisters(history).valid).toBe(true);
    }), { seed: 7, numRuns: 300 });
  });
});
