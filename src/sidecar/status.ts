// What `qsync status` and the admin interface show of a node, read from the
// duties' state; and the journal's tail sampled over time, to tell how old
// the oldest record a peer lacks is.
import { NO_REPLICA } from '../core/election.js';
import type { Member } from '../core/record.js';
import type { VClock } from '../core/vclock.js';
import type { NodeContext } from './context.js';
import { LagSampler } from './lag.js';

/** The node's status as the admin interface shows it: the driver's (NodeStatus), plus what only production has (node.ts). */
export interface SidecarStatus extends NodeStatus {
  readonly cluster: string;
  readonly addresses: { readonly client: string; readonly admin: string | null; readonly peer: string };
  /** The last health probe of this node's PostgreSQL (every second): it answered, and its prepared transactions. */
  readonly postgres: { readonly reachable: boolean; readonly prepared: number | null; readonly error: string | null; readonly checkedAgoMs: number | null };
  readonly uptimeMs: number;
}

/** What POST /members and DELETE /members/:id answer: the node added or removed, and the members after. */
export interface JoinAnswer {
  readonly replica: number;
  readonly cluster: string;
  readonly version: number;
  readonly quorum: number;
  readonly members: readonly Member[];
}

/** What `qsync status` and the admin interface show. */
export interface NodeStatus {
  readonly replica: number;
  readonly term: number;
  readonly role: string;
  readonly leader: number | null;
  readonly leaderAddress: string | null;
  readonly vote: number;
  readonly electionMode: string;
  readonly writable: boolean;
  /** The limbo's owner and term (last PROMOTE), its pending entries (on the leader) and how old the oldest is, and what CONFIRMs cover. */
  readonly limbo: { readonly owner: number; readonly term: number; readonly pending: number; readonly oldestAgeMs: number; readonly confirmedLsn: number };
  readonly vclock: VClock;
  readonly applied: VClock;
  /** Where the journal starts (records before it were removed: a peer that lacks them rejoins by snapshot) and its size. */
  readonly journal: { readonly start: VClock; readonly bytes: number | null };
  readonly splitBrainRecords: number;
  readonly promoted: { readonly committed: number; readonly rolledBack: number };
  /** Work the journal decided that has failed 4 times in a row and is still retried (a table that differs from the leader's, PostgreSQL away); null when none. */
  readonly stuck: string | null;
  /** The membership in effect: version 0 is the static configuration (--peers), each change adds one. */
  readonly members: { readonly version: number; readonly quorum: number; readonly nodes: readonly Member[] };
  /** Per peer: its link is up, what it acknowledged, how far behind this journal's tail it is, when it was last heard. */
  readonly peers: ReadonlyArray<{
    readonly replica: number; readonly connected: boolean; readonly vclock: VClock;
    readonly lagRecords: number; readonly lagMs: number; readonly heardAgoMs: number | null;
  }>;
}

export class StatusView<S, W> {
  readonly #n: NodeContext<S, W>;
  /** Samples of the journal's tail over time, to tell how old the oldest record a peer lacks is. */
  readonly #lag = new LagSampler();

  constructor(n: NodeContext<S, W>) {
    this.#n = n;
  }

  /** Sample the journal's tail (every tick). */
  note(): void {
    this.#lag.note(this.#n.journal.tailVclock, this.#n.clock.nowMs());
  }

  status(): NodeStatus {
    const n = this.#n;
    const e = n.election;
    const now = n.clock.nowMs();
    const tail = n.journal.tailVclock;
    this.#lag.note(tail, now);
    const writable = n.leadership.writable;
    const limbo = n.limbo.view;
    const { owner, term } = n.history.synchro;
    const unfit = n.unfit.first;
    return {
      replica: n.self, term: e.term, role: writable ? 'leader' : e.role, leader: e.leader === NO_REPLICA ? null : e.leader,
      leaderAddress: n.leaderAddress() ?? null, vote: e.vote, electionMode: n.config.electionMode, writable,
      limbo: {
        owner, term, pending: n.limbo.pending, oldestAgeMs: limbo.oldestCreatedAtMs === undefined ? 0 : now - limbo.oldestCreatedAtMs,
        confirmedLsn: owner === NO_REPLICA ? 0 : Math.max(n.history.confirmedLsn(owner), limbo.confirmedLsn),
      },
      vclock: n.journal.vclock, applied: n.applied,
      journal: { start: n.journal.retention?.oldestVclock ?? [], bytes: n.journal.retention?.sizeBytes ?? null },
      splitBrainRecords: n.intake.splitBrainRecords, promoted: { ...n.apply.promoted },
      stuck: n.retrying !== null ? `${n.retrying.what} keeps failing: ${n.retrying.error}`
        : unfit !== undefined ? `not acknowledging records of node ${unfit.replica} from lsn ${unfit.lsn}: this node could not apply them: ${unfit.reason}`
          : n.rejoining !== null ? `rejoining by snapshot from node ${n.rejoining.peer}` : n.rejoin.gap,
      members: { version: n.membership.version, quorum: n.quorum, nodes: n.membership.members },
      peers: n.peers.map((p) => {
        const replica = p.replica;
        const vclock = n.peerVclocks.get(replica) ?? [];
        const heardAt = n.peerHeardAt.get(replica);
        const lag = this.#lag.lag(vclock, tail, now);
        return {
          replica, connected: n.transport.connected(replica), vclock, lagRecords: lag.records, lagMs: lag.ms,
          heardAgoMs: heardAt === undefined ? null : now - heardAt,
        };
      }),
    };
  }
}
