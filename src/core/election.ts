// Raft leader election (Raft §5.2, §5.4.1; thesis §9.6 pre-vote, §4.2.3
// stickiness, §6.2 check-quorum), not Raft log replication: the log is the
// journal, and "up to date" means the candidate's vclock is not behind the
// voter's on any replicated component.
//
//               timeout (mode candidate, or manual after promote)
//   follower ──────────────────────────────► pre-candidate ── a quorum would vote ──► candidate
//      ▲  ▲                                      │  (term unchanged)                     │ term+1, vote self
//      │  └──── heartbeat / higher term ──────────┘                                       │
//      │                                                        a quorum voted            ▼
//      └──── higher term, or no quorum heard within the election timeout ─────────────── leader
//
// Pure: time (`nowMs`), the node's vclock and randomness (a seed, advanced as
// a xorshift generator in the state) come in as inputs; nothing here reads a
// clock, a timer or the network. Every step returns, in the order the shell
// must carry them out:
//   1. `persist`: term and vote to make durable (a RAFT record, fsynced);
//   2. `messages`: only after (1) is durable, since they may promise it.
// The shell compares roles, terms and leaders before and after a step to act
// on a change (PROMOTE on winning, stop writes on losing).
import { assert } from './assert.js';
import type { ReplicaId, Term } from './types.js';
import type { VClock } from './vclock.js';

export type ElectionMode = 'candidate' | 'voter' | 'manual' | 'off';
export type ElectionRole = 'follower' | 'precandidate' | 'candidate' | 'leader';

export const NO_REPLICA = 0 as ReplicaId;

export interface ElectionConfig {
  readonly self: ReplicaId;
  /** Every member, self included. */
  readonly members: readonly ReplicaId[];
  readonly quorum: number;
  /** candidate: votes and campaigns; voter: votes only; manual: votes, campaigns on promote; off: neither. */
  readonly mode: ElectionMode;
  readonly electionTimeoutMs: number;
  readonly heartbeatMs: number;
}

export type ElectionMessage =
  /** pre: a poll for term `term` that changes no one's term; force: a transfer or promote, past stickiness. */
  | { readonly type: 'vote'; readonly term: Term; readonly vclock: VClock; readonly pre: boolean; readonly force: boolean }
  /** term: the term voted in (pre: the proposed one) or, refused, the voter's own. */
  | { readonly type: 'voteReply'; readonly term: Term; readonly granted: boolean; readonly pre: boolean }
  /**
   * sentMs: the leader's clock when sent, echoed back so it can time its lease by its own clock.
   * seq: the leader's count of heartbeat rounds, echoed back, so that a read index knows which round an answer is to (absent: 0).
   */
  | { readonly type: 'heartbeat'; readonly term: Term; readonly sentMs: number; readonly seq?: number }
  /** vclock: what the follower holds durably, so a new leader knows when a quorum holds its journal. */
  | { readonly type: 'heartbeatReply'; readonly term: Term; readonly sentMs: number; readonly vclock: VClock; readonly seq?: number }
  /** Leadership transfer: campaign now, without pre-vote (etcd's MsgTimeoutNow). */
  | { readonly type: 'timeoutNow'; readonly term: Term };

export interface ElectionState {
  readonly config: ElectionConfig;
  /** Durable. Invariant: never decreases, also across restarts. */
  readonly term: Term;
  /** Durable: whom this node voted for in `term`; NO_REPLICA for nobody. Invariant: set at most once per term. */
  readonly vote: ReplicaId;
  readonly role: ElectionRole;
  /** The leader of `term` if known; NO_REPLICA otherwise. */
  readonly leader: ReplicaId;
  /** Last time a live leader (or this node, leading) was heard: votes are refused within the election timeout of it. */
  readonly heardAtMs: number;
  /** When a follower or candidate next starts a campaign (if its mode lets it). */
  readonly deadlineMs: number;
  /** Votes granted to this node in the current (pre-)campaign, self included. */
  readonly votes: ReadonlySet<ReplicaId>;
  /** Whether the current campaign skips pre-vote and stickiness (promote, transfer). */
  readonly forced: boolean;
  /** Leader only: for each member, the send time of the latest heartbeat it answered. */
  readonly answeredAtMs: ReadonlyMap<ReplicaId, number>;
  readonly leaderSinceMs: number;
  readonly heartbeatDueMs: number;
  /** Heartbeat rounds sent since this node started: stamps each round (in memory; a restarted node counts from 0). */
  readonly heartbeatSeq: number;
  /** manual mode: a promote armed campaigning until leadership is next lost. */
  readonly armed: boolean;
  /** xorshift32 state; never 0. */
  readonly random: number;
}

export type ElectionEvent =
  | { readonly kind: 'tick' }
  | { readonly kind: 'message'; readonly from: ReplicaId; readonly message: ElectionMessage }
  /** A term seen outside election messages (an ACK): a higher one makes this node a follower. */
  | { readonly kind: 'term'; readonly term: Term }
  /** Operator: campaign now, skipping pre-vote and stickiness. */
  | { readonly kind: 'promote' }
  /** Operator: a leader steps down and does not campaign for one election timeout. */
  | { readonly kind: 'demote' }
  /** Leader: hand leadership to `to` (the shell checked it is up to date). */
  | { readonly kind: 'transfer'; readonly to: ReplicaId }
  /** Leader: send heartbeats now, not at the next tick (a read index asks a quorum whether this node still leads). */
  | { readonly kind: 'heartbeat' }
  /**
   * A membership change took effect (core/membership.ts). A node no longer
   * among `members` neither votes nor campaigns (mode off) and, leading,
   * steps down; `mode` is the node's configured mode, for when it is a member.
   */
  | { readonly kind: 'members'; readonly members: readonly ReplicaId[]; readonly quorum: number; readonly mode: ElectionMode };

/** What the shell knows at the time of a step. */
export interface ElectionContext {
  readonly nowMs: number;
  /** The node's journal vclock: sent with votes, and compared with candidates'. */
  readonly vclock: VClock;
}

export interface Outgoing {
  readonly to: ReplicaId;
  readonly message: ElectionMessage;
}

export interface ElectionStep {
  readonly state: ElectionState;
  /** 1. Make durable before anything below leaves the node. */
  readonly persist: { readonly term: Term; readonly vote: ReplicaId } | null;
  /** 2. Then send. */
  readonly messages: readonly Outgoing[];
}

export function electionCreate(config: ElectionConfig, durable: { term: Term; vote: ReplicaId }, seed: number, nowMs: number): ElectionState {
  assert(config.members.includes(config.self), 'self is a member');
  assert(config.quorum >= 1 && config.quorum <= config.members.length, `quorum ${config.quorum} of ${config.members.length}`);
  assert(config.heartbeatMs > 0 && config.heartbeatMs < config.electionTimeoutMs, 'heartbeat below the election timeout');
  const state: ElectionState = {
    config, term: durable.term, vote: durable.vote, role: 'follower', leader: NO_REPLICA,
    // A restarted node waits one timeout before it campaigns or votes for anyone but a leader it hears.
    heardAtMs: nowMs, deadlineMs: nowMs, votes: new Set(), forced: false,
    answeredAtMs: new Map(), leaderSinceMs: 0, heartbeatDueMs: 0, heartbeatSeq: 0, armed: false,
    random: (seed >>> 0) || 0x9e3779b9,
  };
  return resetDeadline(state, nowMs);
}

export function electionStep(state: ElectionState, event: ElectionEvent, ctx: ElectionContext): ElectionStep {
  switch (event.kind) {
    case 'tick':
      return tick(state, ctx);
    case 'message':
      return receive(state, event.from, event.message, ctx);
    case 'term':
      return event.term > state.term ? becomeFollower(state, event.term, NO_REPLICA, ctx.nowMs, false) : idle(state);
    case 'promote':
      if (state.config.mode === 'off' || state.role === 'leader') return idle(state);
      return campaign({ ...state, armed: state.config.mode === 'manual' || state.armed, forced: true }, ctx);
    case 'demote':
      if (state.role !== 'leader') return idle(state);
      // Stay quiet for a full timeout, so that another node wins.
      return { state: { ...resetDeadline({ ...state, role: 'follower', leader: NO_REPLICA, armed: false, heardAtMs: ctx.nowMs }, ctx.nowMs), deadlineMs: ctx.nowMs + 2 * state.config.electionTimeoutMs }, persist: null, messages: [] };
    case 'transfer':
      if (state.role !== 'leader' || event.to === state.config.self || !state.config.members.includes(event.to)) return idle(state);
      return { state, persist: null, messages: [{ to: event.to, message: { type: 'timeoutNow', term: state.term } }] };
    case 'members':
      return reconfigure(state, event.members, event.quorum, event.mode);
    case 'heartbeat':
      return state.role === 'leader' ? heartbeats(state, ctx.nowMs) : idle(state);
  }
}

function reconfigure(state: ElectionState, members: readonly ReplicaId[], quorum: number, mode: ElectionMode): ElectionStep {
  assert(quorum >= 1 && quorum <= members.length, `quorum ${quorum} of ${members.length}`);
  const member = members.includes(state.config.self);
  const config: ElectionConfig = { ...state.config, members, quorum, mode: member ? mode : 'off' };
  const kept = <V>(map: ReadonlyMap<ReplicaId, V>): Map<ReplicaId, V> => new Map([...map].filter(([m]) => members.includes(m)));
  const next: ElectionState = { ...state, config, votes: new Set([...state.votes].filter((m) => members.includes(m))), answeredAtMs: kept(state.answeredAtMs) };
  if (member || state.role === 'follower') return idle(next);
  return idle({ ...next, role: 'follower', leader: NO_REPLICA, armed: false, votes: new Set() });
}

/** Whether this node may campaign on its own. */
function campaigns(state: ElectionState): boolean {
  return state.config.mode === 'candidate' || (state.config.mode === 'manual' && state.armed);
}

function idle(state: ElectionState): ElectionStep {
  return { state, persist: null, messages: [] };
}

function others(state: ElectionState): ReplicaId[] {
  return state.config.members.filter((m) => m !== state.config.self);
}

/** xorshift32: deterministic from the seed, so a simulation replays exactly. */
function nextRandom(x: number): number {
  let r = x;
  r ^= r << 13;
  r ^= r >>> 17;
  r ^= r << 5;
  return r >>> 0;
}

/** A new randomised deadline in [timeout, 1.5 × timeout): rarely two candidates at once. */
function resetDeadline(state: ElectionState, nowMs: number): ElectionState {
  const random = nextRandom(state.random);
  const spread = Math.floor(state.config.electionTimeoutMs / 2);
  return { ...state, random, deadlineMs: nowMs + state.config.electionTimeoutMs + (spread === 0 ? 0 : random % spread) };
}

function tick(state: ElectionState, ctx: ElectionContext): ElectionStep {
  const { nowMs } = ctx;
  if (state.role === 'leader') {
    // Check quorum (fencing): the lease runs from the send time of the heartbeats a quorum answered.
    const since = nowMs - state.config.electionTimeoutMs;
    const live = state.config.members.filter((m) => m === state.config.self || (state.answeredAtMs.get(m) ?? -Infinity) > since).length;
    if (live < state.config.quorum && nowMs - state.leaderSinceMs >= state.config.electionTimeoutMs) {
      return { state: resetDeadline({ ...state, role: 'follower', leader: NO_REPLICA, armed: false }, nowMs), persist: null, messages: [] };
    }
    if (nowMs < state.heartbeatDueMs) return idle(state);
    return heartbeats(state, nowMs);
  }
  if (nowMs < state.deadlineMs) return idle(state);
  // The leader (if any) was not heard within the timeout.
  const quiet = { ...state, leader: state.role === 'follower' && nowMs - state.heardAtMs < state.config.electionTimeoutMs ? state.leader : NO_REPLICA };
  if (!campaigns(quiet)) return idle(resetDeadline(quiet, nowMs));
  return preCampaign(quiet, ctx);
}

function heartbeats(state: ElectionState, nowMs: number): ElectionStep {
  const seq = state.heartbeatSeq + 1;
  return {
    state: { ...state, heartbeatDueMs: nowMs + state.config.heartbeatMs, heardAtMs: nowMs, heartbeatSeq: seq },
    persist: null,
    messages: others(state).map((to) => ({ to, message: { type: 'heartbeat', term: state.term, sentMs: nowMs, seq } })),
  };
}

/**
 * Ask whether a quorum would vote in term + 1, without raising anyone's term.
 * A poll disturbs no one, so a refused one is retried after a heartbeat or
 * two, not a whole timeout: the usual refusal after a leader dies is "you are
 * behind me", which the relays mend within milliseconds.
 */
function preCampaign(state: ElectionState, ctx: ElectionContext): ElectionStep {
  const random = nextRandom(state.random);
  const retryMs = state.config.heartbeatMs + (random % state.config.heartbeatMs);
  const next = { ...state, role: 'precandidate' as const, leader: NO_REPLICA, votes: new Set([state.config.self]), forced: false, random, deadlineMs: ctx.nowMs + retryMs };
  if (next.votes.size >= next.config.quorum) return campaign(next, ctx);
  const proposed = (state.term + 1) as Term;
  return { state: next, persist: null, messages: others(state).map((to) => ({ to, message: { type: 'vote', term: proposed, vclock: ctx.vclock, pre: true, force: false } })) };
}

/** Raise the term, vote for self (durably), and ask for votes. */
function campaign(state: ElectionState, ctx: ElectionContext): ElectionStep {
  const term = (state.term + 1) as Term;
  const next = resetDeadline({ ...state, role: 'candidate', term, vote: state.config.self, leader: NO_REPLICA, votes: new Set([state.config.self]) }, ctx.nowMs);
  if (next.votes.size >= next.config.quorum) return { ...becomeLeader(next, ctx.nowMs), persist: { term, vote: state.config.self } };
  return {
    state: next,
    persist: { term, vote: state.config.self },
    messages: others(state).map((to) => ({ to, message: { type: 'vote', term, vclock: ctx.vclock, pre: false, force: state.forced } })),
  };
}

function becomeLeader(state: ElectionState, nowMs: number): ElectionStep {
  const leader = { ...state, role: 'leader' as const, leader: state.config.self, leaderSinceMs: nowMs, answeredAtMs: new Map<ReplicaId, number>(), forced: false, votes: new Set<ReplicaId>() };
  return heartbeats(leader, nowMs);
}

function becomeFollower(state: ElectionState, term: Term, leader: ReplicaId, nowMs: number, heard: boolean): ElectionStep {
  const raised = term > state.term;
  const lost = state.role === 'leader';
  const next = resetDeadline({
    ...state, term, vote: raised ? NO_REPLICA : state.vote, role: 'follower', leader, forced: false, votes: new Set(),
    heardAtMs: heard ? nowMs : state.heardAtMs, armed: lost ? false : state.armed,
  }, nowMs);
  return { state: next, persist: raised ? { term, vote: NO_REPLICA } : null, messages: [] };
}

/** True when the candidate's vclock is behind the voter's on some replicated component. */
function behind(candidate: VClock, voter: VClock): boolean {
  for (let i = 1; i < voter.length; i += 1) if ((candidate[i] ?? 0) < (voter[i] ?? 0)) return true;
  return false;
}

/** A live leader was heard within the election timeout (stickiness). */
function sticky(state: ElectionState, nowMs: number): boolean {
  return state.role === 'leader' || (state.leader !== NO_REPLICA && nowMs - state.heardAtMs < state.config.electionTimeoutMs);
}

function receive(state: ElectionState, from: ReplicaId, message: ElectionMessage, ctx: ElectionContext): ElectionStep {
  if (!state.config.members.includes(from) || from === state.config.self) return idle(state);
  switch (message.type) {
    case 'vote':
      return message.pre ? preVote(state, from, message, ctx) : vote(state, from, message, ctx);
    case 'voteReply':
      return voteReply(state, from, message, ctx);
    case 'heartbeat': {
      if (message.term < state.term) return reply(state, from, { type: 'heartbeatReply', term: state.term, sentMs: message.sentMs, vclock: ctx.vclock, seq: message.seq ?? 0 });
      const step = message.term > state.term || state.role !== 'follower' || state.leader !== from
        ? becomeFollower(state, message.term, from, ctx.nowMs, true)
        : { state: resetDeadline({ ...state, heardAtMs: ctx.nowMs }, ctx.nowMs), persist: null, messages: [] };
      return { ...step, messages: [{ to: from, message: { type: 'heartbeatReply', term: message.term, sentMs: message.sentMs, vclock: ctx.vclock, seq: message.seq ?? 0 } }] };
    }
    case 'heartbeatReply':
      if (message.term > state.term) return becomeFollower(state, message.term, NO_REPLICA, ctx.nowMs, false);
      if (state.role !== 'leader' || message.term < state.term) return idle(state);
      return idle({ ...state, answeredAtMs: new Map(state.answeredAtMs).set(from, Math.max(state.answeredAtMs.get(from) ?? -Infinity, message.sentMs)) });
    case 'timeoutNow':
      if (message.term !== state.term || from !== state.leader || state.config.mode === 'off' || state.config.mode === 'voter') return idle(state);
      return campaign({ ...state, forced: true }, ctx);
  }
}

function reply(state: ElectionState, to: ReplicaId, message: ElectionMessage): ElectionStep {
  return { state, persist: null, messages: [{ to, message }] };
}

function preVote(state: ElectionState, from: ReplicaId, message: ElectionMessage & { type: 'vote' }, ctx: ElectionContext): ElectionStep {
  const grant = state.config.mode !== 'off' && message.term > state.term && !sticky(state, ctx.nowMs) && !behind(message.vclock, ctx.vclock);
  return reply(state, from, { type: 'voteReply', term: grant ? message.term : state.term, granted: grant, pre: true });
}

function vote(state: ElectionState, from: ReplicaId, message: ElectionMessage & { type: 'vote' }, ctx: ElectionContext): ElectionStep {
  // Within the timeout of a live leader, a (non-forced) request is ignored outright: a node that
  // was partitioned away must not make the healthy cluster raise its term (thesis §4.2.3).
  if (message.term > state.term && !message.force && sticky(state, ctx.nowMs)) return idle(state);
  const step = message.term > state.term ? becomeFollower(state, message.term, NO_REPLICA, ctx.nowMs, false) : idle(state);
  const s = step.state;
  const refuse = (): ElectionStep => ({ ...step, messages: [{ to: from, message: { type: 'voteReply', term: s.term, granted: false, pre: false } }] });
  if (message.term < s.term || s.config.mode === 'off' || s.role === 'leader') return refuse();
  if ((s.vote !== NO_REPLICA && s.vote !== from) || behind(message.vclock, ctx.vclock)) return refuse();
  // Grant: durable before the reply leaves, and hold off campaigning for a timeout.
  const granted = resetDeadline({ ...s, vote: from, heardAtMs: s.heardAtMs }, ctx.nowMs);
  return { state: granted, persist: { term: s.term, vote: from }, messages: [{ to: from, message: { type: 'voteReply', term: s.term, granted: true, pre: false } }] };
}

function voteReply(state: ElectionState, from: ReplicaId, message: ElectionMessage & { type: 'voteReply' }, ctx: ElectionContext): ElectionStep {
  if (!message.granted) {
    return message.term > state.term ? becomeFollower(state, message.term, NO_REPLICA, ctx.nowMs, false) : idle(state);
  }
  const wanted = message.pre ? state.role === 'precandidate' && message.term === state.term + 1 : state.role === 'candidate' && message.term === state.term;
  if (!wanted) return idle(state);
  const votes = new Set(state.votes).add(from);
  const next = { ...state, votes };
  if (votes.size < state.config.quorum) return idle(next);
  return message.pre ? campaign(next, ctx) : becomeLeader(next, ctx.nowMs);
}
