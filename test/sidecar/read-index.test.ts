// The read index's rules (src/sidecar/read-index.ts), step by step with a
// host whose timers the test moves: only answers to a round of heartbeats
// sent after the read arrived count; reads that arrive together share a
// round, and one arriving while a round is out gets the next at once; a lost
// leadership, rounds no quorum answers and a PostgreSQL still catching up
// each hold or refuse the read. The simulator checks the same
// rules against the real driver (planted bugs readIndexUnconfirmed and
// readIndexNotApplied).
import { describe, expect, it } from 'vitest';
import { QsyncError } from '../../src/core/errors.js';
import type { ReplicaId, Term } from '../../src/core/types.js';
import { ReadIndex } from '../../src/sidecar/read-index.js';

const r = (n: number): ReplicaId => n as ReplicaId;

function harness(options: { members?: number } = {}) {
  const members = options.members ?? 3;
  let now = 1_000;
  let timers: Array<{ at: number; fn: () => void }> = [];
  let leading: Term | null = 5 as Term;
  /** The rounds sent, by number. */
  const beats: number[] = [];
  let seq = 0;
  let caughtUp: Promise<void> = Promise.resolve();
  const reads = new ReadIndex({
    after: (ms, fn) => timers.push({ at: now + ms, fn }),
    leading: () => leading,
    heartbeat: () => {
      seq += 1;
      beats.push(seq);
      reads.sent(seq);
    },
    isQuorum: (answered) => 1 + [...answered].filter((m) => m >= 1 && m <= members).length >= Math.floor(members / 2) + 1,
    caughtUp: () => caughtUp,
    leaderName: () => 'node 1',
  }, { timeoutMs: 1_000, retryMs: 100 });
  const advance = async (ms: number): Promise<void> => {
    now += ms;
    const due = timers.filter((t) => t.at <= now);
    timers = timers.filter((t) => t.at > now);
    for (const t of due) t.fn();
    await settle();
  };
  return {
    reads, beats, advance,
    lose: () => (leading = null),
    holdCatchUp: (p: Promise<void>) => (caughtUp = p),
    /** A tick's round, sent by the election on its own. */
    tick: () => {
      seq += 1;
      reads.sent(seq);
      return seq;
    },
  };
}

const settle = async (): Promise<void> => {
  for (let i = 0; i < 5; i += 1) await Promise.resolve();
};

/** A promise's state, without waiting for it. */
function track(p: Promise<void>): { state: () => 'pending' | 'ok' | QsyncError } {
  let state: 'pending' | 'ok' | QsyncError = 'pending';
  p.then(() => (state = 'ok'), (e: QsyncError) => (state = e));
  return { state: () => state };
}

describe('read index', () => {
  it('runs a read only after a quorum answers a round sent after it arrived', async () => {
    const h = harness();
    const before = h.tick(); // a tick's round, just before the read
    const read = track(h.reads.request());
    // Its answer does not count: it may have been given before the read arrived.
    h.reads.answered(r(2), 5 as Term, before);
    await settle();
    expect(read.state()).toBe('pending');
    await h.advance(0); // the read's own round
    expect(h.beats).toEqual([2]);
    h.reads.answered(r(2), 4 as Term, 2); // another term's answer
    await settle();
    expect(read.state()).toBe('pending');
    h.reads.answered(r(3), 5 as Term, 2);
    await settle();
    expect(read.state()).toBe('ok');
  });

  it('reads that arrive together share a round; one arriving while it is out gets the next at once', async () => {
    const h = harness();
    const a = track(h.reads.request());
    const b = track(h.reads.request());
    await h.advance(0);
    expect(h.beats).toEqual([1]);
    const c = track(h.reads.request());
    await h.advance(0);
    expect(h.beats).toEqual([1, 2]);
    h.reads.answered(r(2), 5 as Term, 1);
    await settle();
    expect([a.state(), b.state(), c.state()]).toEqual(['ok', 'ok', 'pending']);
    h.reads.answered(r(3), 5 as Term, 2);
    await settle();
    expect(c.state()).toBe('ok');
    // A fourth read: node 3 answered round 2 before it arrived, so it waits for round 3.
    const d = track(h.reads.request());
    await h.advance(0);
    expect(h.beats).toEqual([1, 2, 3]);
    expect(d.state()).toBe('pending');
    h.reads.answered(r(2), 5 as Term, 3);
    await settle();
    expect(d.state()).toBe('ok');
  });

  it('refuses at once when the node does not lead, and refuses waiting reads when it stops', async () => {
    const h = harness();
    const read = track(h.reads.request());
    await h.advance(0);
    h.lose();
    h.reads.lost();
    await settle();
    expect(read.state()).toBeInstanceOf(QsyncError);
    expect((read.state() as QsyncError).code).toBe('NOT_LEADER');
    await expect(h.reads.request()).rejects.toMatchObject({ code: 'NOT_LEADER' });
  });

  it('sends a round again while no quorum answers, and refuses the read when none does in time', async () => {
    const h = harness();
    const read = track(h.reads.request());
    await h.advance(0);
    await h.advance(100);
    expect(h.beats).toEqual([1, 2]);
    for (let i = 0; i < 9; i += 1) await h.advance(100);
    expect(h.beats.length).toBeGreaterThan(5);
    expect(read.state()).toBeInstanceOf(QsyncError);
    expect((read.state() as QsyncError).message).toMatch(/no quorum confirmed its leadership within 1000 ms/);
    // The next read is served as soon as a quorum answers the heartbeat sent for it.
    const late = track(h.reads.request());
    await h.advance(0);
    const sent = h.beats.at(-1) as number;
    h.reads.answered(r(3), 5 as Term, sent);
    await settle();
    expect(late.state()).toBe('ok');
  });

  it('waits for PostgreSQL to hold what the journal held when the read arrived', async () => {
    const h = harness();
    let release!: () => void;
    h.holdCatchUp(new Promise<void>((resolve) => (release = resolve)));
    const read = track(h.reads.request());
    await h.advance(0);
    h.reads.answered(r(2), 5 as Term, 1);
    await settle();
    expect(read.state()).toBe('pending');
    release();
    await settle();
    expect(read.state()).toBe('ok');
  });

  it('needs no answer in a cluster of one', async () => {
    const h = harness({ members: 1 });
    const read = track(h.reads.request());
    await h.advance(0);
    expect(read.state()).toBe('ok');
  });
});
