// Proves the apply queue's order against a reference (fast-check): records
// leave in journal order; a sync TXN never leaves before the limbo decided it;
// the applied vclock never claims a record that has not left; a queue over
// its byte bound keeps nothing past it and reads it back from the journal
// with nothing lost or repeated; once everything is decided, everything leaves.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ApplyQueue, type Decisions } from '../../src/core/apply-queue.js';
import type { JournalRecord } from '../../src/core/record.js';
import type { Lsn, ReplicaId, Term } from '../../src/core/types.js';
import { vclockFollow, vclockGet, type VClock } from '../../src/core/vclock.js';

const txn = (replica: number, lsn: number, sync: boolean, rows = 10): JournalRecord => ({
  kind: 'txn', replica: replica as ReplicaId, lsn: lsn as Lsn, term: 1 as Term, time: lsn, gid: `qsync:t:${replica}:${lsn}`, sync,
  changes: [{ table: 't', op: 'insert', rows: 'x'.repeat(rows) }], idempotencyKey: null,
});

/** Decisions as a map the test fills in: `replica:lsn` → verdict. */
function decisions(verdicts: Map<string, 'confirmed' | 'rolled-back'>): Decisions {
  return { verdict: (replica, lsn) => verdicts.get(`${replica}:${lsn}`) ?? null, ignored: () => false };
}

const bounds = { recordsMax: 4, bytesMax: 1_000 };

describe('apply queue', () => {
  it('holds a sync TXN, and everything behind it, until the limbo decides it', () => {
    const verdicts = new Map<string, 'confirmed' | 'rolled-back'>();
    const queue = new ApplyQueue(1 << 20, []);
    queue.push(txn(2, 1, false));
    queue.push(txn(2, 2, true));
    queue.push(txn(3, 1, false));
    const first = queue.next(decisions(verdicts), bounds);
    expect(first?.kind === 'txns' && first.records.map((r) => r.lsn)).toEqual([1]);
    queue.done(1);
    expect(queue.next(decisions(verdicts), bounds)).toBeNull();
    expect(queue.appliedVclock([0, 0, 2, 1] as unknown as VClock)).toEqual([0, 0, 1]);
    verdicts.set('2:2', 'confirmed');
    const second = queue.next(decisions(verdicts), bounds);
    expect(second?.kind === 'txns' && second.records.map((r) => `${r.replica}:${r.lsn}`)).toEqual(['2:2', '3:1']);
    expect(queue.next(decisions(verdicts), { ...bounds, undecidedApplied: true })).not.toBeNull();
  });

  it('applies any other record by itself', () => {
    const queue = new ApplyQueue(1 << 20, []);
    queue.push(txn(2, 1, false));
    queue.push({ kind: 'confirm', replica: 2 as ReplicaId, lsn: 2 as Lsn, term: 1 as Term, time: 2, owner: 2 as ReplicaId, confirmedLsn: 1 as Lsn });
    queue.push(txn(2, 3, false));
    const none = decisions(new Map());
    expect(queue.next(none, bounds)?.kind).toBe('txns');
    queue.done(1);
    expect(queue.next(none, bounds)?.kind).toBe('one');
  });

  it('keeps journal order, waits for verdicts and spills past its bound (property)', () => {
    fc.assert(fc.property(
      fc.array(fc.record({ replica: fc.integer({ min: 1, max: 3 }), sync: fc.boolean(), rows: fc.integer({ min: 1, max: 300 }), decideAfter: fc.integer({ min: 0, max: 6 }), verdict: fc.constantFrom('confirmed' as const, 'rolled-back' as const) }), { maxLength: 60 }),
      fc.integer({ min: 200, max: 5_000 }),
      (specs, bytesMax) => {
        const journal: JournalRecord[] = [];
        let tail: VClock = [];
        const verdicts = new Map<string, 'confirmed' | 'rolled-back'>();
        const pendingDecisions: Array<{ at: number; key: string; verdict: 'confirmed' | 'rolled-back' }> = [];
        const queue = new ApplyQueue(bytesMax, []);
        const left: JournalRecord[] = [];
        const d = decisions(verdicts);
        const step = (): void => {
          for (;;) {
            if (queue.length === 0 && queue.spilled) {
              for (const record of journal) if (!queue.refill(record, true)) break;
              queue.refilled(tail);
              if (queue.length === 0) return;
            }
            const next = queue.next(d, bounds);
            if (next === null) return;
            const records = next.kind === 'one' ? [next.record] : next.records;
            for (const record of records) {
              const key = `${record.replica}:${record.lsn}`;
              if (record.kind === 'txn' && record.sync) expect(verdicts.has(key), `${key} left undecided`).toBe(true);
            }
            left.push(...records);
            queue.done(records.length);
            // The applied vclock claims only records that left.
            const applied = queue.appliedVclock(tail);
            for (const record of journal) {
              if (record.lsn <= vclockGet(applied, record.replica)) expect(left).toContain(record);
            }
          }
        };
        specs.forEach((spec, i) => {
          const lsn = vclockGet(tail, spec.replica as ReplicaId) + 1;
          const record = txn(spec.replica, lsn, spec.sync, spec.rows);
          journal.push(record);
          tail = vclockFollow(tail, record.replica, record.lsn);
          queue.push(record);
          if (spec.sync) pendingDecisions.push({ at: i + spec.decideAfter, key: `${record.replica}:${record.lsn}`, verdict: spec.verdict });
          for (const p of pendingDecisions.filter((p) => p.at <= i)) verdicts.set(p.key, p.verdict);
          // Past its bound the queue keeps nothing more: at most the one record that crossed it (up to 396 bytes here).
          expect(queue.bytes).toBeLessThan(bytesMax + 397);
          step();
        });
        for (const p of pendingDecisions) verdicts.set(p.key, p.verdict);
        step();
        // Everything left, once each, in journal order.
        expect(left).toEqual(journal);
        expect(queue.appliedVclock(tail)).toEqual(tail);
      },
    ));
  });
});
