// Membership (docs/rfc/0010-membership.md): a CONFIG record is a limbo entry;
// confirmed by a quorum of the members before it, it takes effect on each
// node as that node learns so (follow). The leader makes one change at a
// time, one node at a time, and answers once a quorum of the new members
// holds the confirmation too.
import { QsyncError } from '../core/errors.js';
import { gidFor } from '../core/gid.js';
import { membershipChange, membershipSettled, type Membership, type MembershipChange } from '../core/membership.js';
import type { ConfigRecord, Member } from '../core/record.js';
import { REPLICA_LOCAL, type Lsn, type ReplicaId } from '../core/types.js';
import { vclockEntries, vclockFromEntries, vclockGet } from '../core/vclock.js';
import type { SidecarConfig } from './config.js';
import type { NodeContext } from './context.js';

export class Members<S, W> {
  readonly #n: NodeContext<S, W>;
  /** The membership version the election, the limbo and the transport were last told of (0: the static configuration). */
  #version = 0;
  /** A membership change this leader is making (one at a time). */
  #changing = false;
  /**
   * The last membership change this leader made, up to its CONFIRM: the next
   * one waits until a quorum of its members holds that. (A new leader needs
   * no such wait: its PROMOTE, held by a quorum, follows the CONFIRM.)
   */
  #target: { readonly version: number; readonly lsn: Lsn; readonly before: Membership } | null = null;

  constructor(n: NodeContext<S, W>) {
    this.#n = n;
  }

  /**
   * After the history took records: if they put a new membership into effect,
   * tell the election, the limbo and the peer links.
   */
  follow(): void {
    const n = this.#n;
    const membership = n.history.membership;
    if (membership === null || membership.version === this.#version) return;
    this.#version = membership.version;
    const members = membership.members.map((m) => m.replica);
    n.leadership.membersChanged(members, membership.quorum);
    if (members.includes(n.self)) n.limbo.step({ kind: 'members', members, quorum: membership.quorum });
    n.transport.setPeers(n.peers);
    const removed = !members.includes(n.self);
    n.log[removed ? 'error' : 'info']({ version: membership.version, members, quorum: membership.quorum }, removed
      ? `node ${n.self} is no longer a member of the cluster: it neither votes nor campaigns; stop its sidecar (its PostgreSQL keeps its data)`
      : `membership version ${membership.version} in effect: nodes ${members.join(', ')}, quorum ${membership.quorum}`);
    if (removed && n.leadership.writable) n.leadership.stepDown('removed from the cluster');
    if (removed) void n.leadership.publish();
    n.emit({ kind: 'membership', term: n.term, version: membership.version, members, quorum: membership.quorum });
  }

  /**
   * Add a node or remove one: only a leader whose own term's PROMOTE a quorum
   * holds (it has confirmed an entry of its term), one change at a time, one
   * node at a time. Resolves once a quorum of the new members holds the
   * confirmation too, so that the next change cannot meet a node still
   * counting quorums among the members before this one.
   */
  async change(change: MembershipChange): Promise<{ membership: Membership; replica: ReplicaId }> {
    const n = this.#n;
    if (!n.leadership.writable) throw n.notLeader('NOT_LEADER', `node ${n.self} is not the leader; change membership through ${n.leaderName()}`);
    if (this.#changing) throw new QsyncError('BAD_REQUEST', 'a membership change is in progress; one node at a time: retry once it is done');
    const current = n.membership;
    if (change.kind === 'add') {
      // A join retried (its first answer was lost): the node is a member already.
      const same = current.members.find((m) => m.address === change.member.address && m.client === change.member.client && m.admin === change.member.admin);
      if (same !== undefined) return { membership: current, replica: same.replica };
    }
    const held = this.#held();
    if (held !== null) throw new QsyncError('BAD_REQUEST', held);
    const taken = vclockEntries(n.journal.tailVclock).map(([replica]) => replica).filter((r) => r !== REPLICA_LOCAL);
    const next = membershipChange(current, change, taken, n.self);
    if (typeof next === 'string') throw new QsyncError('BAD_REQUEST', next);
    const replica = change.kind === 'remove' ? change.replica : (next.members.find((m) => !current.members.some((c) => c.replica === m.replica)) as Member).replica;
    this.#changing = true;
    try {
      let gid = '';
      const decided = new Promise<void>((resolve, reject) => {
        const { lsn } = n.own.reserve();
        gid = gidFor(n.config.clusterId, n.self, lsn);
        n.limbo.memberGid(gid, true);
        n.waiters.set(gid, { resolve, reject: (error) => reject(membersOutcome(error, next.version)) });
        const record: ConfigRecord = { kind: 'config', replica: n.self, lsn, term: n.term, time: n.now(), members: next.members, quorum: next.quorum, membersVersion: next.version };
        n.own.submit(record).then(() => n.limbo.ownDurable(), (error: unknown) => n.fatal('journaling a membership change', error));
      });
      n.log.info({ change: change.kind, replica, version: next.version, members: next.members.map((m) => m.replica), quorum: next.quorum }, `membership change: ${change.kind === 'add' ? `adding node ${replica}` : `removing node ${replica}`}`);
      await decided.finally(() => n.limbo.memberGid(gid, false));
      // The CONFIRM was appended before the entry was answered.
      this.#target = { version: next.version, lsn: vclockGet(n.journal.tailVclock, n.self), before: current };
      const term = n.term;
      const inTime = n.clock.nowMs() + n.config.synchroTimeoutMs;
      const settled = await n.until(() => this.#held() === null, () => !n.stopping && n.election.term === term && n.clock.nowMs() < inTime);
      if (!settled) {
        throw new QsyncError('OUTCOME_UNKNOWN', `the membership change to version ${next.version} is confirmed, but a quorum of the new members did not hold it within ${n.config.synchroTimeoutMs} ms; the next change waits for that (see qsync status)`);
      }
      return { membership: next, replica };
    } finally {
      this.#changing = false;
    }
  }

  /** Why the membership is not yet safe to change again (this leader's last change not held by a quorum of its members), or null. */
  #held(): string | null {
    const n = this.#n;
    const target = this.#target;
    if (target === null) return null;
    const membership = n.membership;
    if (membership.version < target.version) return `membership version ${target.version} is not in effect here yet`;
    const confirm = vclockFromEntries([[n.self, target.lsn]]);
    const why = membership.version > target.version ? null : membershipSettled(target.before, membership, (m) => n.leadership.holding(confirm, [m]) === 1);
    if (why === null) this.#target = null;
    return why;
  }
}

/** The members the settings name, this node included. */
export function configuredMembership(config: SidecarConfig): Membership {
  const self: Member = { replica: config.replicaId as ReplicaId, address: `${config.peerHost}:${config.peerPort}`, client: `${config.clientHost}:${config.clientPort}`, ...(config.adminPort === undefined ? {} : { admin: `${config.adminHost}:${config.adminPort}` }) };
  const peers = config.peers.map((p): Member => ({ replica: p.replica as ReplicaId, address: `${p.host}:${p.port}`, ...(p.client === undefined ? {} : { client: p.client }), ...(p.admin === undefined ? {} : { admin: p.admin }) }));
  return { members: [self, ...peers].sort((a, b) => a.replica - b.replica), quorum: config.quorum, version: 0 };
}

/** What the operator hears when a membership entry is not confirmed: the limbo's answer, told of the change. */
function membersOutcome(error: QsyncError, version: number): QsyncError {
  return new QsyncError(error.code, error.code === 'ROLLED_BACK'
    ? `the membership change to version ${version} was rolled back: no quorum held it in time; nothing changed`
    : `the outcome of the membership change to version ${version} is not known yet: the next leader keeps it if it holds it; qsync status shows the members in effect`);
}
