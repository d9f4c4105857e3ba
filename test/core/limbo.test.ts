// Proves the limbo's safety against a reference model (fast-check): no entry
// is both confirmed and rolled back; confirmations come in lsn order; an entry
// is confirmed exactly when a quorum holds it (necessary and sufficient);
// RolledBack is answered only once a quorum holds the ROLLBACK record; a
// timeout leaves nothing older than the synchro timeout pending.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { limboCreate, limboStep, type LimboAction, type LimboEvent, type LimboState } from '../../src/core/limbo.js';
import { checkQuorum, quorumDefault, quorumValue } from '../../src/core/quorum.js';
import type { Lsn, ReplicaId } from '../../src/core/types.js';

const r = (n: number): ReplicaId => n as ReplicaId;
const l = (n: number): Lsn => n as Lsn;

describe('quorum maths', () => {
  it.each([
    [[5, 3, 9], 2, 5], [[5, 3, 9], 1, 9], [[5, 3, 9], 3, 3], [[4], 2, 0], [[7, 7, 1, 0, 2], 3, 2],
  ])('quorumValue(%j, %i) = %i', (values, quorum, expected) => {
    expect(quorumValue(values, quorum)).toBe(expected);
  });

  it.each([[1, 1], [2, 2], [3, 2], [4, 3], [5, 3]])('default quorum of %i members is %i', (members, quorum) => {
    expect(quorumDefault(members)).toBe(quorum);
  });

  it('refuses a quorum below a majority unless forced, and one above the membership', () => {
    expect(checkQuorum(1, 3, false)).toMatch(/below a majority of 3 members \(2\).*force/);
    expect(checkQuorum(1, 3, true)).toBeNull();
    expect(checkQuorum(4, 3, true)).toMatch(/more than the 3 members/);
    expect(checkQuorum(2, 3, false)).toBeNull();
  });
});

describe('limbo, by example', () => {
  const config = { owner: r(1), members: [r(1), r(2), r(3)], quorum: 2, synchroTimeoutMs: 1000 };
  /** A limbo and a function that steps it, returning the actions. */
  const stepper = (): { run: (event: LimboEvent) => readonly LimboAction[]; state: () => LimboState } => {
    let state = limboCreate(config);
    return {
      run: (event) => {
        const step = limboStep(state, event);
        state = step.state;
        return step.actions;
      },
      state: () => state,
    };
  };

  it('confirms once the leader and one follower hold an entry, as a prefix in one CONFIRM', () => {
    const { run, state } = stepper();
    run({ kind: 'append', entry: { lsn: l(1), gid: 'a', createdAtMs: 0 } });
    run({ kind: 'append', entry: { lsn: l(3), gid: 'b', createdAtMs: 0 } });
    run({ kind: 'append', entry: { lsn: l(4), gid: 'c', createdAtMs: 0 } });
    expect(run({ kind: 'ack', replica: r(2), lsn: l(3) })).toEqual([]); // the leader itself is not durable yet
    expect(run({ kind: 'durable', lsn: l(4) })).toEqual([{ kind: 'confirm', confirmedLsn: 3, gids: ['a', 'b'] }]);
    expect(run({ kind: 'ack', replica: r(9), lsn: l(9) })).toEqual([]); // not a member
    expect(run({ kind: 'ack', replica: r(3), lsn: l(4) })).toEqual([{ kind: 'confirm', confirmedLsn: 4, gids: ['c'] }]);
    expect(state().entries).toEqual([]);
  });

  it('rolls back from the oldest timed-out entry, and answers RolledBack only when a quorum holds the ROLLBACK', () => {
    const { run } = stepper();
    run({ kind: 'append', entry: { lsn: l(1), gid: 'a', createdAtMs: 0 } });
    run({ kind: 'append', entry: { lsn: l(2), gid: 'b', createdAtMs: 500 } });
    run({ kind: 'durable', lsn: l(2) });
    expect(run({ kind: 'tick', nowMs: 999 })).toEqual([]);
    expect(run({ kind: 'tick', nowMs: 1000 })).toEqual([{ kind: 'rollback', fromLsn: 1, gids: ['a', 'b'] }]);
    expect(run({ kind: 'ack', replica: r(2), lsn: l(2) })).toEqual([]); // too late: no confirm after rollback
    expect(run({ kind: 'rollbackJournaled', fromLsn: l(1), recordLsn: l(3) })).toEqual([]);
    expect(run({ kind: 'durable', lsn: l(3) })).toEqual([]);
    expect(run({ kind: 'ack', replica: r(3), lsn: l(3) })).toEqual([{ kind: 'rolledBack', gids: ['a', 'b'] }]);
  });

  it('answers unknown for everything pending when leadership is lost', () => {
    const base = limboStep(limboCreate(config), { kind: 'append', entry: { lsn: l(1), gid: 'a', createdAtMs: 0 } }).state;
    expect(limboStep(base, { kind: 'abandon' }).actions).toEqual([{ kind: 'unknown', gids: ['a'] }]);
  });

  it('refuses an entry when full, with back-pressure, not growth', () => {
    let state = limboCreate(config);
    for (let i = 1; i <= 100; i += 1) state = limboStep(state, { kind: 'append', entry: { lsn: l(i), gid: `g${i}`, createdAtMs: 0 } }).state;
    expect(limboStep(state, { kind: 'append', entry: { lsn: l(101), gid: 'g101', createdAtMs: 0 } }).actions).toEqual([{ kind: 'full', gid: 'g101' }]);
  });
});

// ---- model-based properties ------------------------------------------------------

type Op =
  | { kind: 'append'; gap: number; dt: number }
  | { kind: 'durable'; upTo: number }
  | { kind: 'ack'; replica: number; upTo: number }
  | { kind: 'tick'; dt: number }
  | { kind: 'journalRollback' };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant('append' as const), gap: fc.integer({ min: 1, max: 3 }), dt: fc.integer({ min: 0, max: 300 }) }),
  fc.record({ kind: fc.constant('durable' as const), upTo: fc.integer({ min: 0, max: 40 }) }),
  fc.record({ kind: fc.constant('ack' as const), replica: fc.integer({ min: 1, max: 6 }), upTo: fc.integer({ min: 0, max: 40 }) }),
  fc.record({ kind: fc.constant('tick' as const), dt: fc.integer({ min: 0, max: 800 }) }),
  fc.constant({ kind: 'journalRollback' as const }),
);

describe('limbo properties (fast-check)', () => {
  it('is safe and live against the reference model', () => {
    fc.assert(fc.property(fc.integer({ min: 1, max: 5 }), fc.array(opArb, { maxLength: 120 }), (n, ops) => {
      const members = Array.from({ length: n }, (_, i) => r(i + 1));
      const quorum = Math.floor(n / 2) + 1;
      let state: LimboState = limboCreate({ owner: r(1), members, quorum, synchroTimeoutMs: 1000 });
      let now = 0;
      let lsn = 0;
      const held = new Map<number, number>(); // reference: max owner lsn held per member
      const lsnOf = new Map<string, number>();
      const confirmed = new Set<string>();
      const rolledBack = new Set<string>();
      const answeredRolledBack = new Set<string>();
      const rollbackRecord = new Map<string, number>(); // gid -> lsn of its ROLLBACK record
      let lastConfirmed = 0;
      const holders = (x: number): number => members.filter((m) => (held.get(m) ?? 0) >= x).length;

      for (const op of ops) {
        let event: LimboEvent;
        if (op.kind === 'append') {
          lsn += op.gap;
          now += op.dt;
          const gid = `g${lsn}`;
          lsnOf.set(gid, lsn);
          event = { kind: 'append', entry: { lsn: l(lsn), gid, createdAtMs: now } };
        } else if (op.kind === 'durable') {
          event = { kind: 'durable', lsn: l(Math.min(op.upTo, lsn + 1)) };
        } else if (op.kind === 'ack') {
          event = { kind: 'ack', replica: r(op.replica), lsn: l(op.upTo) };
        } else if (op.kind === 'tick') {
          now += op.dt;
          event = { kind: 'tick', nowMs: now };
        } else {
          const pending = state.rollingBack.find((x) => x.recordLsn === null);
          if (pending === undefined) continue;
          lsn += 1;
          for (const gid of pending.gids) rollbackRecord.set(gid, lsn);
          event = { kind: 'rollbackJournaled', fromLsn: pending.fromLsn, recordLsn: l(lsn) };
        }
        if (event.kind === 'durable' && members.includes(r(1))) held.set(1, Math.max(held.get(1) ?? 0, event.lsn));
        if (event.kind === 'ack' && members.includes(event.replica) && event.replica !== 1) held.set(event.replica, Math.max(held.get(event.replica) ?? 0, event.lsn));

        const step = limboStep(state, event);
        state = step.state;
        for (const action of step.actions) {
          if (action.kind === 'confirm') {
            expect(action.confirmedLsn).toBeGreaterThan(lastConfirmed); // lsn order
            lastConfirmed = action.confirmedLsn;
            for (const gid of action.gids) {
              expect(rolledBack.has(gid)).toBe(false);
              expect(holders(lsnOf.get(gid) ?? Infinity)).toBeGreaterThanOrEqual(quorum); // necessary
              confirmed.add(gid);
            }
          }
          if (action.kind === 'rollback') for (const gid of action.gids) {
            expect(confirmed.has(gid)).toBe(false);
            rolledBack.add(gid);
          }
          if (action.kind === 'rolledBack') for (const gid of action.gids) {
            expect(rolledBack.has(gid)).toBe(true);
            expect(holders(rollbackRecord.get(gid) ?? Infinity)).toBeGreaterThanOrEqual(quorum); // certain
            answeredRolledBack.add(gid);
          }
        }
        // Sufficient: nothing a quorum holds stays pending.
        for (const entry of state.entries) expect(holders(entry.lsn)).toBeLessThan(quorum);
        // Timeout: after a tick nothing pending is older than the synchro timeout.
        if (event.kind === 'tick') for (const entry of state.entries) expect(now - entry.createdAtMs).toBeLessThan(1000);
        // Confirmed entries are a prefix by lsn: none pending below the confirmed lsn.
        for (const entry of state.entries) expect(entry.lsn).toBeGreaterThan(state.confirmedLsn);
      }
    }), { numRuns: 300 });
  });
});
