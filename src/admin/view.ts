// GET /cluster: every node as the answering node can see it. Peers' own
// /status when their admin address is known and they answer within a second;
// otherwise what this node knows of them (link up, acknowledged vclock).
// Lag is the leader's view when the leader answered (it is what a quorum
// waits on), else the answering node's.
import type { SidecarStatus } from '../sidecar/status.js';

export interface ClusterMember {
  readonly replica: number;
  /** running: answered; unreachable: its admin interface did not; postgres down: it answered without a PostgreSQL; unknown: no admin address. */
  readonly state: 'running' | 'postgres down' | 'unreachable' | 'unknown';
  readonly role: string | null;
  readonly term: number | null;
  readonly leader: number | null;
  readonly writable: boolean;
  readonly client: string | null;
  readonly admin: string | null;
  readonly lagRecords: number | null;
  readonly lagMs: number | null;
  readonly limbo: number | null;
  readonly status: SidecarStatus | null;
}

export interface ClusterView {
  readonly cluster: string;
  /** The node that answered. */
  readonly via: number;
  /** The node accepting sync writes, if one answered as such. */
  readonly leader: number | null;
  readonly term: number;
  readonly members: readonly ClusterMember[];
}

export async function clusterView(
  self: SidecarStatus,
  peers: ReadonlyArray<{ readonly replica: number; readonly client?: string | undefined; readonly admin?: string | undefined }>,
  fetchStatus: (admin: string) => Promise<SidecarStatus>,
): Promise<ClusterView> {
  const answers = await Promise.all(peers.map(async (p) => ({ peer: p, status: p.admin === undefined ? null : await fetchStatus(p.admin).catch(() => null) })));
  const statuses = [self, ...answers.flatMap((a) => (a.status === null ? [] : [a.status]))];
  const leaderStatus = statuses.filter((s) => s.writable).sort((a, b) => b.term - a.term)[0];
  const lagView = leaderStatus ?? self;
  const lagOf = (replica: number): { records: number | null; ms: number | null } => {
    if (replica === lagView.replica) return { records: 0, ms: 0 };
    const seen = lagView.peers.find((p) => p.replica === replica);
    return seen === undefined ? { records: null, ms: null } : { records: seen.lagRecords, ms: seen.lagMs };
  };
  const member = (status: SidecarStatus): ClusterMember => {
    const lag = lagOf(status.replica);
    return {
      replica: status.replica, state: status.postgres.reachable ? 'running' : 'postgres down', role: status.role, term: status.term, leader: status.leader,
      writable: status.writable, client: status.addresses.client, admin: status.addresses.admin, lagRecords: lag.records, lagMs: lag.ms, limbo: status.limbo.pending, status,
    };
  };
  const members: ClusterMember[] = [member(self)];
  for (const { peer, status } of answers) {
    if (status !== null) {
      members.push(member(status));
      continue;
    }
    const lag = lagOf(peer.replica);
    members.push({
      replica: peer.replica, state: peer.admin === undefined ? 'unknown' : 'unreachable', role: null, term: null, leader: null, writable: false,
      client: peer.client ?? null, admin: peer.admin ?? null, lagRecords: lag.records, lagMs: lag.ms, limbo: null, status: null,
    });
  }
  members.sort((a, b) => a.replica - b.replica);
  return { cluster: self.cluster, via: self.replica, leader: leaderStatus?.replica ?? null, term: Math.max(...statuses.map((s) => s.term)), members };
}
