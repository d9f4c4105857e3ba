// Proves the election core: examples for pre-vote, stickiness, the vclock
// vote rule, check-quorum fencing, transfer and modes; and, with fast-check,
// that under message loss, reordering, duplication and crashes (state rebuilt
// from what was persisted) there are never two leaders in one term and no
// node votes twice in one term.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  electionCreate, electionStep, NO_REPLICA, type ElectionConfig, type ElectionEvent, type ElectionMessage, type ElectionMode, type ElectionState, type Outgoing,
} from '../../src/core/election.js';
import type { Lsn, ReplicaId, Term } from '../../src/core/types.js';
import type { VClock } from '../../src/core/vclock.js';

const r = (n: number): ReplicaId => n as ReplicaId;
const t = (n: number): Term => n as Term;
const vc = (...lsns: number[]): VClock => [0, ...lsns] as Lsn[];

const TIMEOUT = 1000;

function config(self: number, members = 3, mode: ElectionMode = 'candidate'): ElectionConfig {
  return { self: r(self), members: Array.from({ length: members }, (_, i) => r(i + 1)), quorum: Math.floor(members / 2) + 1, mode, electionTimeoutMs: TIMEOUT, heartbeatMs: 100 };
}

/** One node and a function stepping it at a time, returning its messages. */
function node(self: number, options: { members?: number; mode?: ElectionMode; vclock?: VClock; term?: number; vote?: number } = {}) {
  let state = electionCreate(config(self, options.members, options.mode), { term: t(options.term ?? 1), vote: r(options.vote ?? 0) }, self * 7919, 0);
  const vclock = options.vclock ?? vc();
  let persisted: Array<{ term: Term; vote: ReplicaId }> = [];
  const run = (event: ElectionEvent, nowMs: number): readonly Outgoing[] => {
    const step = electionStep(state, event, { nowMs, vclock });
    state = step.state;
    if (step.persist !== null) persisted = [...persisted, step.persist];
    return step.messages;
  };
  return { run, state: () => state, persisted: () => persisted };
}

const voteFrom = (term: number, vclock: VClock, pre = false, force = false): ElectionMessage => ({ type: 'vote', term: t(term), vclock, pre, force });

describe('election, by example', () => {
  it('a follower campaigns after its randomised timeout with a pre-vote that raises no term', () => {
    const n = node(1);
    expect(n.run({ kind: 'tick' }, TIMEOUT - 1)).toEqual([]);
    const out = n.run({ kind: 'tick' }, 2 * TIMEOUT);
    expect(n.state().role).toBe('precandidate');
    expect(n.state().term).toBe(1);
    expect(n.persisted()).toEqual([]);
    expect(out.map((o) => [o.to, o.message.type, (o.message as { pre: boolean }).pre, o.message.term])).toEqual([[2, 'vote', true, 2], [3, 'vote', true, 2]]);
  });

  it('wins with a quorum: pre-vote, then a durable self-vote in term + 1, then heartbeats', () => {
    const n = node(1);
    n.run({ kind: 'tick' }, 2 * TIMEOUT);
    const votes = n.run({ kind: 'message', from: r(2), message: { type: 'voteReply', term: t(2), granted: true, pre: true } }, 2 * TIMEOUT + 1);
    expect(n.state()).toMatchObject({ role: 'candidate', term: 2, vote: 1 });
    expect(n.persisted()).toEqual([{ term: 2, vote: 1 }]);
    expect(votes.every((o) => o.message.type === 'vote' && !o.message.pre)).toBe(true);
    const beats = n.run({ kind: 'message', from: r(3), message: { type: 'voteReply', term: t(2), granted: true, pre: false } }, 2 * TIMEOUT + 2);
    expect(n.state()).toMatchObject({ role: 'leader', leader: 1 });
    expect(beats.map((o) => o.message.type)).toEqual(['heartbeat', 'heartbeat']);
  });

  it('a leader sends a round of heartbeats at once when asked (a read index), stamped with the time and the next round number; a follower echoes the number; others send nothing', () => {
    const n = node(1);
    n.run({ kind: 'tick' }, 2 * TIMEOUT);
    n.run({ kind: 'message', from: r(2), message: { type: 'voteReply', term: t(2), granted: true, pre: true } }, 2 * TIMEOUT + 1);
    n.run({ kind: 'message', from: r(3), message: { type: 'voteReply', term: t(2), granted: true, pre: false } }, 2 * TIMEOUT + 2);
    const beats = n.run({ kind: 'heartbeat' }, 2 * TIMEOUT + 7);
    // Round 1 went out as the node won; this is round 2.
    expect(beats.map((o) => [o.to, o.message])).toEqual([[2, { type: 'heartbeat', term: 2, sentMs: 2 * TIMEOUT + 7, seq: 2 }], [3, { type: 'heartbeat', term: 2, sentMs: 2 * TIMEOUT + 7, seq: 2 }]]);
    expect(n.state().heartbeatDueMs).toBe(2 * TIMEOUT + 7 + 100);
    const follower = node(2);
    expect(follower.run({ kind: 'heartbeat' }, 10)).toEqual([]);
    const answer = follower.run({ kind: 'message', from: r(1), message: { type: 'heartbeat', term: t(3), sentMs: 10, seq: 41 } }, 10);
    expect(answer[0]?.message).toMatchObject({ type: 'heartbeatReply', term: 3, sentMs: 10, seq: 41 });
  });

  it('votes once per term, only for a candidate not behind its vclock, and persists the vote first', () => {
    const n = node(2, { vclock: vc(5, 3) });
    n.run({ kind: 'tick' }, 5 * TIMEOUT); // no leader heard: not sticky
    const behind = n.run({ kind: 'message', from: r(1), message: voteFrom(2, vc(5, 2)) }, 5 * TIMEOUT);
    expect(behind).toEqual([{ to: 1, message: { type: 'voteReply', term: 2, granted: false, pre: false } }]);
    const granted = n.run({ kind: 'message', from: r(3), message: voteFrom(2, vc(5, 3, 9)) }, 5 * TIMEOUT);
    expect(granted[0]?.message).toMatchObject({ granted: true });
    expect(n.persisted().at(-1)).toEqual({ term: 2, vote: 3 });
    const again = n.run({ kind: 'message', from: r(1), message: voteFrom(2, vc(9, 9)) }, 5 * TIMEOUT);
    expect(again[0]?.message).toMatchObject({ granted: false });
  });

  it('a restarted node keeps its durable vote', () => {
    const n = node(2, { term: 4, vote: 3 });
    n.run({ kind: 'tick' }, 5 * TIMEOUT);
    expect(n.run({ kind: 'message', from: r(1), message: voteFrom(4, vc()) }, 5 * TIMEOUT)[0]?.message).toMatchObject({ granted: false });
    expect(n.run({ kind: 'message', from: r(3), message: voteFrom(4, vc()) }, 5 * TIMEOUT)[0]?.message).toMatchObject({ granted: true });
  });

  it('is sticky: while a live leader is heard, vote requests are ignored and pre-votes refused', () => {
    const n = node(2);
    n.run({ kind: 'message', from: r(1), message: { type: 'heartbeat', term: t(1), sentMs: 10 } }, 10);
    expect(n.state().leader).toBe(1);
    expect(n.run({ kind: 'message', from: r(3), message: voteFrom(7, vc(), false) }, 500)).toEqual([]);
    expect(n.state().term).toBe(1);
    expect(n.run({ kind: 'message', from: r(3), message: voteFrom(2, vc(), true) }, 500)[0]?.message).toMatchObject({ granted: false, term: 1 });
    // A forced request (transfer) passes stickiness.
    expect(n.run({ kind: 'message', from: r(3), message: voteFrom(2, vc(), false, true) }, 500)[0]?.message).toMatchObject({ granted: true, term: 2 });
  });

  it('a leader that hears no quorum within the election timeout steps down (fencing)', () => {
    const n = node(1);
    n.run({ kind: 'promote' }, 0);
    n.run({ kind: 'message', from: r(2), message: { type: 'voteReply', term: t(2), granted: true, pre: false } }, 1);
    expect(n.state().role).toBe('leader');
    n.run({ kind: 'message', from: r(2), message: { type: 'heartbeatReply', term: t(2), sentMs: 1, vclock: vc() } }, 5);
    n.run({ kind: 'tick' }, 900);
    expect(n.state().role).toBe('leader');
    n.run({ kind: 'tick' }, 1001);
    expect(n.state()).toMatchObject({ role: 'follower', leader: NO_REPLICA, term: 2 });
  });

  it('a higher term in any message makes a leader a follower at once', () => {
    const n = node(1);
    n.run({ kind: 'promote' }, 0);
    n.run({ kind: 'message', from: r(2), message: { type: 'voteReply', term: t(2), granted: true, pre: false } }, 1);
    n.run({ kind: 'term', term: t(3) }, 2);
    expect(n.state()).toMatchObject({ role: 'follower', term: 3, vote: 0 });
    expect(n.persisted().at(-1)).toEqual({ term: 3, vote: 0 });
  });

  it('transfer: the leader sends TimeoutNow, and the target campaigns at once without pre-vote', () => {
    const target = node(2);
    target.run({ kind: 'message', from: r(1), message: { type: 'heartbeat', term: t(1), sentMs: 0 } }, 0);
    const out = target.run({ kind: 'message', from: r(1), message: { type: 'timeoutNow', term: t(1) } }, 10);
    expect(target.state()).toMatchObject({ role: 'candidate', term: 2 });
    expect(out.every((o) => o.message.type === 'vote' && o.message.force && !o.message.pre)).toBe(true);
  });

  it.each<[ElectionMode, boolean, boolean]>([['candidate', true, true], ['manual', false, true], ['voter', false, true], ['off', false, false]])(
    'mode %s: campaigns on its own %s, votes %s', (mode, campaigns, votes) => {
      const n = node(1, { mode });
      n.run({ kind: 'tick' }, 3 * TIMEOUT);
      expect(n.state().role === 'precandidate').toBe(campaigns);
      const m = node(2, { mode });
      m.run({ kind: 'tick' }, 3 * TIMEOUT);
      expect(m.run({ kind: 'message', from: r(1), message: voteFrom(2, vc()) }, 3 * TIMEOUT)[0]?.message).toMatchObject({ granted: votes });
    });

  it('manual mode campaigns after promote, and again after a failed campaign, until it loses leadership', () => {
    const n = node(1, { mode: 'manual' });
    n.run({ kind: 'promote' }, 0);
    expect(n.state()).toMatchObject({ role: 'candidate', term: 2, armed: true });
    n.run({ kind: 'tick' }, 3 * TIMEOUT);
    expect(n.state().role).toBe('precandidate');
  });
});

// ---- the property: a cluster on a hostile network ------------------------------

interface Wire { readonly from: ReplicaId; readonly to: ReplicaId; readonly message: ElectionMessage }

interface Cluster {
  nowMs: number;
  nodes: Map<ReplicaId, ElectionState | null>; // null: crashed
  disk: Map<ReplicaId, { term: Term; vote: ReplicaId }>;
  inFlight: Wire[];
  leaders: Map<number, ReplicaId>; // term -> leader
  votes: Map<string, ReplicaId>; // `${node}:${term}` -> vote
  vclocks: Map<ReplicaId, VClock>;
}

type Command =
  | { kind: 'tick'; advanceMs: number; node: number }
  | { kind: 'deliver'; index: number; duplicate: boolean }
  | { kind: 'drop'; index: number }
  | { kind: 'crash'; node: number }
  | { kind: 'restart'; node: number; seed: number }
  | { kind: 'promote'; node: number }
  | { kind: 'transfer'; node: number; to: number }
  | { kind: 'write'; node: number };

function stepNode(cluster: Cluster, id: ReplicaId, event: ElectionEvent): void {
  const state = cluster.nodes.get(id);
  if (state === null || state === undefined) return;
  const step = electionStep(state, event, { nowMs: cluster.nowMs, vclock: cluster.vclocks.get(id) ?? vc() });
  // Order of duties: persist, then send. (A crash between them only loses the messages.)
  if (step.persist !== null) {
    const before = cluster.disk.get(id) as { term: Term; vote: ReplicaId };
    if (step.persist.term < before.term) throw new Error(`node ${id} persisted term ${step.persist.term} below ${before.term}`);
    if (step.persist.vote !== NO_REPLICA) {
      const key = `${id}:${step.persist.term}`;
      const earlier = cluster.votes.get(key);
      if (earlier !== undefined && earlier !== step.persist.vote) throw new Error(`node ${id} voted for ${earlier} and ${step.persist.vote} in term ${step.persist.term}`);
      cluster.votes.set(key, step.persist.vote);
    }
    cluster.disk.set(id, step.persist);
  }
  cluster.nodes.set(id, step.state);
  if (step.state.role === 'leader') {
    const other = cluster.leaders.get(step.state.term);
    if (other !== undefined && other !== id) throw new Error(`two leaders in term ${step.state.term}: ${other} and ${id}`);
    cluster.leaders.set(step.state.term, id);
  }
  for (const out of step.messages) cluster.inFlight.push({ from: id, to: out.to, message: out.message });
  if (cluster.inFlight.length > 200) cluster.inFlight.splice(0, cluster.inFlight.length - 200);
}

function run(members: number, commands: readonly Command[]): Cluster {
  const ids = Array.from({ length: members }, (_, i) => r(i + 1));
  const cluster: Cluster = { nowMs: 0, nodes: new Map(), disk: new Map(), inFlight: [], leaders: new Map(), votes: new Map(), vclocks: new Map() };
  for (const id of ids) {
    cluster.disk.set(id, { term: t(1), vote: NO_REPLICA });
    cluster.nodes.set(id, electionCreate(config(id, members), { term: t(1), vote: NO_REPLICA }, id, 0));
    cluster.vclocks.set(id, vc());
  }
  const pick = (n: number): ReplicaId => ids[n % ids.length] as ReplicaId;
  for (const c of commands) {
    switch (c.kind) {
      case 'tick':
        cluster.nowMs += c.advanceMs;
        stepNode(cluster, pick(c.node), { kind: 'tick' });
        break;
      case 'deliver': {
        if (cluster.inFlight.length === 0) break;
        const i = c.index % cluster.inFlight.length;
        const wire = cluster.inFlight[i] as Wire;
        if (!c.duplicate) cluster.inFlight.splice(i, 1);
        stepNode(cluster, wire.to, { kind: 'message', from: wire.from, message: wire.message });
        break;
      }
      case 'drop':
        if (cluster.inFlight.length > 0) cluster.inFlight.splice(c.index % cluster.inFlight.length, 1);
        break;
      case 'crash':
        cluster.nodes.set(pick(c.node), null);
        break;
      case 'restart': {
        const id = pick(c.node);
        if (cluster.nodes.get(id) === null) cluster.nodes.set(id, electionCreate(config(id, members), cluster.disk.get(id) as { term: Term; vote: ReplicaId }, c.seed, cluster.nowMs));
        break;
      }
      case 'promote':
        stepNode(cluster, pick(c.node), { kind: 'promote' });
        break;
      case 'transfer':
        stepNode(cluster, pick(c.node), { kind: 'transfer', to: pick(c.to) });
        break;
      case 'write': {
        // A leader's journal grows: its vclock moves ahead on its own component.
        const id = pick(c.node);
        if (cluster.nodes.get(id)?.role !== 'leader') break;
        const v = [...(cluster.vclocks.get(id) as VClock)] as Lsn[];
        v[id] = ((v[id] ?? 0) + 1) as Lsn;
        cluster.vclocks.set(id, v);
        break;
      }
    }
  }
  return cluster;
}

const command: fc.Arbitrary<Command> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('tick' as const), advanceMs: fc.integer({ min: 0, max: 700 }), node: fc.nat() }) },
  { weight: 10, arbitrary: fc.record({ kind: fc.constant('deliver' as const), index: fc.nat(), duplicate: fc.boolean() }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('drop' as const), index: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('crash' as const), node: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('restart' as const), node: fc.nat(), seed: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('promote' as const), node: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('transfer' as const), node: fc.nat(), to: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('write' as const), node: fc.nat() }) },
);

describe('election, as a property under a hostile network', () => {
  it.each([3, 5])('never two leaders in one term, never two votes in one term (%i nodes)', (members) => {
    fc.assert(fc.property(fc.array(command, { minLength: 100, maxLength: 600, size: 'max' }), (commands) => {
      run(members, commands); // throws on a violation
    }), { numRuns: 400, verbose: 1 });
  });

  it('elects a leader when messages flow, so the safety runs above are not vacuous', () => {
    fc.assert(fc.property(fc.integer({ min: 1, max: 1_000_000 }), (seed) => {
      const commands: Command[] = [];
      for (let i = 0; i < 60; i += 1) {
        commands.push({ kind: 'tick', advanceMs: 100, node: (seed + i) % 3 });
        for (let j = 0; j < 6; j += 1) commands.push({ kind: 'deliver', index: 0, duplicate: false });
      }
      const cluster = run(3, commands);
      return cluster.leaders.size > 0;
    }), { numRuns: 50 });
  });
});
