// What the node driver (driver.ts) needs from the world, as interfaces: a
// clock and timers, the journal's storage, the peer network, and PostgreSQL.
// Production passes the real ones (node.ts: files, TCP, pg); the simulator
// (test/sim) passes simulated ones driven by one seed. The driver itself is
// the same code in both, so what the simulator finds is in production.
import type { ElectionMessage } from '../core/election.js';
import type { JournalRecord, Member, TableMode, TxnRecord } from '../core/record.js';
import type { Lsn, ReplicaId, Term } from '../core/types.js';
import type { VClock } from '../core/vclock.js';
import type { ApplyOutcome, LeaderTransaction, PreparedStore, SnapshotLoad, SnapshotPart, SnapshotTable, TableModeChange, TableModeOptions, WriteOpening } from '../postgres/index.js';

export interface Clock {
  /** Wall-clock milliseconds as this node sees them (the simulator gives each node its own drift). */
  nowMs(): number;
  /** Resolves after `ms`. */
  sleep(ms: number): Promise<void>;
  /** Run `fn` every `ms` until the returned function is called. */
  every(ms: number, fn: () => void): () => void;
  /** Run `fn` once after `ms`; it does not keep a stopping process alive. */
  after(ms: number, fn: () => void): void;
}

/** The journal as the driver uses it (src/journal/journal.ts is the real one). */
export interface JournalStore {
  /** Everything durable. */
  readonly vclock: VClock;
  /** Everything appended, durable or not. */
  readonly tailVclock: VClock;
  /** The last RAFT record's term and vote, as recovered at open. */
  readonly raft: { readonly term: number; readonly vote: number } | null;
  /** Resolves once the record is durable (fsynced); records become durable in append order. */
  append(record: JournalRecord): Promise<void>;
  /** Durable records not covered by `from`, in journal order (local RAFT records left out). */
  cursor(from: VClock): AsyncIterable<JournalRecord>;
  close(): Promise<void>;
  /**
   * Retention (journal/journal.ts; docs/rfc/0009-retention-and-rejoin.md).
   * A store without it keeps every record and never rejoins by snapshot (the
   * simulator's, for now).
   */
  readonly retention?: JournalRetention;
}

export interface JournalRetention {
  /** Where the journal starts: records before it were removed. */
  readonly oldestVclock: VClock;
  /** What the removed records decided (the driver's checkpoint state), from the last trim or rebase. */
  readonly checkpoint: { readonly vclock: VClock; readonly state: unknown } | null;
  /** Where each segment after the first starts: the points a trim can cut at. */
  readonly segmentStarts: readonly VClock[];
  readonly sizeBytes: number;
  /** Remove the records before the segment that starts at `start`; `state` is what they decided. */
  trim(start: VClock, state: unknown): Promise<unknown>;
  /** Start over at `start` with `keep` (records of this node), after a rejoin by snapshot. */
  rebase(start: VClock, keep: readonly JournalRecord[], state: unknown): Promise<void>;
}

/** What the driver hands the network when it starts. */
export interface TransportHandlers {
  /** Where subscriptions to peers start: the journal's tail vclock. */
  readonly subscribeFrom: () => VClock;
  /**
   * A record relayed by a peer, in arrival order per link; resolves once it
   * is durable (or was a duplicate), rejects to close the link. Applying it
   * comes later, in the apply queue (RFC 0012).
   */
  readonly onRecord: (record: JournalRecord) => Promise<void>;
  /** What to acknowledge to a relay: the durable vclock, short of records this node could not apply, and the term. */
  readonly ack: () => { vclock: VClock; term: Term };
  /** A subscriber acknowledged holding `vclock`. */
  readonly onAck: (replica: ReplicaId, vclock: VClock, term: Term) => void;
  /** Whether subscriptions ask for a snapshot when the peer lacks records this node needs (a rejoin). */
  readonly takesSnapshot: () => boolean;
  /**
   * A new node (qsync join) that has not loaded its first snapshot: `join`,
   * the subscription to this peer asks for one; `wait`, another peer's is
   * asked or loading, do not subscribe yet; `no`, not joining.
   */
  readonly joining: (peer: ReplicaId) => 'join' | 'wait' | 'no';
  /** A peer lacks records this node needs and no snapshot was asked for: why, for status. */
  readonly onGap: (peer: ReplicaId, reason: string) => void;
  /** A subscriber this journal cannot serve asked for a snapshot: where it starts and its parts (null: refused). */
  readonly serveSnapshot: (subscriber: ReplicaId) => SnapshotOffer | null;
  /** A peer sends a snapshot: where the load goes (null: refused, one rejoin at a time). */
  readonly takeSnapshot: (peer: ReplicaId, begin: SnapshotBegin) => SnapshotSink | null;
  readonly onRaft: (from: ReplicaId, message: ElectionMessage) => void;
  /** What to relay for a journal record (a withheld TXN of this node goes as an empty one). */
  readonly outgoing: (record: JournalRecord) => JournalRecord;
  /** A record was handed to a subscriber's link. */
  readonly onSent: (record: JournalRecord) => void;
}

/** What a snapshot starts with: the source journal's start, what it decided until there, the replicated tables. */
export interface SnapshotBegin {
  readonly floor: VClock;
  readonly history: unknown;
  readonly tables: readonly SnapshotTable[];
}

export interface SnapshotOffer {
  /** Where the relay goes on from, once the parts are sent: the journal's start when the snapshot was taken. */
  readonly floor: VClock;
  /** Read once the relay's cursor at `floor` is open (it keeps the segments from a trim). */
  begin(): Promise<{ readonly begin: SnapshotBegin; readonly parts: AsyncIterable<SnapshotPart> }>;
}

export interface SnapshotSink {
  part(part: SnapshotPart): Promise<void>;
  end(parts: number): Promise<void>;
  abort(reason: string): Promise<void>;
}

/** The peer links: relay this journal to every subscriber, subscribe to every peer. */
export interface Transport {
  start(handlers: TransportHandlers): Promise<void>;
  sendRaft(to: ReplicaId, message: ElectionMessage): void;
  /** The other members changed: subscribe to new ones, drop the links to those gone. Before start: the peers to start with. */
  setPeers(peers: readonly Member[]): void;
  connected(replica: ReplicaId): boolean;
  stop(): Promise<void>;
}

/** The fields of a leader write the driver fills in (postgres/leader.ts LeaderWrite). */
/** What qsync.node says, which PostgreSQL's fence follows. */
export interface NodeRow {
  readonly term: Term;
  readonly role: 'leader' | 'follower' | 'candidate';
  readonly leader: ReplicaId;
  readonly leaderAddress: string;
}

/**
 * This node's PostgreSQL as a state machine: tables, prepared transactions
 * (durable, invisible until committed), the applied vclock. `S` is a client
 * session, `W` the work a write runs (statements, in production).
 */
export interface Database<S, W> extends PreparedStore {
  /**
   * ROLLBACK PREPARED of this node's undecided writes when it stops leading
   * (held.ts, rule 4): not a decision, for the journal keeps each TXN and its
   * verdict applies it from there.
   */
  release(gids: readonly string[]): Promise<void>;
  appliedVclock(): Promise<VClock>;
  /** The lsns of `replica` above `above` that PostgreSQL holds as applied (each one, not the highest). */
  appliedLsns(replica: ReplicaId, above: Lsn): Promise<ReadonlySet<Lsn>>;
  /**
   * Apply a peer's (or replayed) record; idempotent by the applied vclock.
   * `exact`: skipped only if this very lsn is applied or prepared, not any lsn
   * up to it (an entry rolled back too early, a write of this node whose
   * COMMIT failed). Throws on a transient failure: the driver retries.
   */
  apply(record: JournalRecord & { kind: 'txn' }, options: { prepare: boolean; exact?: boolean }): Promise<ApplyOutcome>;
  /**
   * Apply TXNs of peers (or replayed ones) in journal order in one
   * transaction, each with its applied mark in the same commit; idempotent
   * like apply. Records at or below `exactTo` are skipped only if their very
   * lsn is applied. Unless `checked`, records above it are taken as not
   * applied yet (the caller knows: the apply queue's first attempt), which
   * saves a round trip; one applied after all fails the batch on its mark.
   * Throws with nothing applied on any failure.
   */
  applyBatch(records: readonly TxnRecord[], options: { exactTo: VClock; checked: boolean }): Promise<void>;
  /**
   * Why this node could not apply `record`, from what it knows of its tables
   * (a table not replicated here, a column it lacks); null when it can.
   * Synchronous: it runs as each record arrives, before it is acknowledged.
   */
  unfit(record: TxnRecord): string | null;
  /** Read the tables' shapes again (unfit said no: the operator may have fixed them). */
  reloadTables(): Promise<void>;
  /**
   * `listener` runs each time PostgreSQL goes away under the running node (it
   * crashed or restarted): what it committed without waiting for the flush
   * may be gone, and prepared transactions finished since may be back.
   */
  onLost(listener: () => void): void;
  /** Set a table's mode here (postgres/tables.ts setTableMode): its qualified name, shape, and on the leader the rows copied. */
  setTableMode(table: string, mode: TableMode, options?: TableModeOptions): Promise<TableModeChange>;
  /** Run a schema change, marked applied under (replica, lsn) in its transaction: skipped when it already ran (postgres/tables.ts runDdl). */
  runDdl(sql: string, replica: ReplicaId, lsn: Lsn | (() => Lsn), role?: string): Promise<{ readonly applied: boolean; readonly lsn: Lsn }>;
  publish(row: NodeRow): Promise<void>;
  /** Drop applied marks at or below `below` (each replica's highest stays); on return, every commit before the call is durable. */
  compactApplied(below: VClock): Promise<void>;
  /** The replicated tables and qsync's state, from one snapshot, for a rejoining peer (postgres/snapshot.ts). */
  readSnapshot(): Promise<{ tables: SnapshotTable[]; parts: AsyncIterable<SnapshotPart> }>;
  /** Replace the replicated tables and qsync's state with a peer's snapshot; local tables stay. */
  loadSnapshot(tables: readonly SnapshotTable[]): Promise<SnapshotLoad>;
  /**
   * Run the leader's order of duties (leader-write.ts) on a transaction of the
   * session: production checks out one of the role's connections and gives
   * it back once `order` is done.
   */
  write<T>(session: S, opening: WriteOpening, order: (tx: LeaderTransaction<W>) => Promise<T>): Promise<T>;
  outcome(idempotencyKey: string): Promise<{ committed: false } | { committed: true; replica: number; lsn: number }>;
  close(): Promise<void>;
}

/**
 * Bugs planted on purpose, for the simulator to prove it catches them
 * (test/sim). Production never sets any.
 */
/** The open transaction of a sync write the leader holds open (held.ts), on its own connection. */
export interface HeldSession {
  /** COMMIT; the journal holds the TXN, so without waiting for the WAL flush. */
  commit(): Promise<void>;
  rollback(): Promise<void>;
}

export interface PlantedBugs {
  /** Votes ignore the candidate's vclock. */
  readonly voteIgnoresVclock?: boolean;
  /** The limbo confirms with one ack fewer than a quorum. */
  readonly quorumOffByOne?: boolean;
  /** Election messages leave before the RAFT record with the term and vote is durable. */
  readonly raftUnsynced?: boolean;
  /** A record from a peer past a gap in this node's vclock is taken (and fails to journal) instead of refused. */
  readonly gapAccepted?: boolean;
  /** Acknowledgements count records appended but not yet durable in the journal. */
  readonly ackBeforeDurable?: boolean;
  /** A follower applies a sync TXN as soon as it is durable, before the limbo decides it. */
  readonly applyBeforeConfirm?: boolean;
  /** A batch of applied TXNs commits its applied marks in a transaction apart from its rows (marks first). */
  readonly batchMarksApart?: boolean;
  /** A sync TXN's changes to an async table are applied without last-writer-wins (core/lww.ts; the simulator's PostgreSQL runs it). */
  readonly syncTxnSkipsLww?: boolean;
  /** Relays drop a third node's records instead of sending them late (core/relay-filter.ts; the simulator's network runs it). */
  readonly relayDropsThirdParty?: boolean;
  /** The leader journals a sync TXN before its PREPARE (leader-write.ts). */
  readonly journalBeforePrepare?: boolean;
  /** The leader COMMITs an async write before its TXN is journaled (leader-write.ts). */
  readonly commitBeforeJournal?: boolean;
  /** A write whose PREPARE failed gives its lsn back as if nothing were prepared: no orphan rolled back (writes.ts). */
  readonly orphanKept?: boolean;
  /** A linearizable read runs on a node that believes it leads, with no quorum asked (read-index.ts). */
  readonly readIndexUnconfirmed?: boolean;
  /** A linearizable read runs as soon as the node wins its election, before its PostgreSQL holds what it decided (read-index.ts). */
  readonly readIndexNotApplied?: boolean;
  /** Capture of a write held open does not check the transactions held before it (writes.ts, RFC 0027). */
  readonly heldUnchecked?: boolean;
  /** A held write found lost leaves capture's check and stops new writes no more, before its verdict is carried out (held.ts). */
  readonly lostForgotten?: boolean;
  /** A deposed leader keeps its undecided sync writes prepared, with their row locks, until a PROMOTE decides them (held.ts). */
  readonly preparedKept?: boolean;
}

/**
 * What the driver reports as it happens, for metrics, discovery and events
 * (src/admin/metrics.ts, src/discovery/redis.ts). Observers must not throw
 * or wait: the driver calls them inline and goes on.
 */
export type NodeEvent =
  /** A write finished; `mode` is what it touched (none: refused before it ran). */
  | { readonly kind: 'commit'; readonly mode: 'sync' | 'async' | 'local' | 'none'; readonly outcome: 'committed' | 'rolledBack' | 'unknown' | 'failed'; readonly limboMs: number | null }
  /** This node started campaigning for `term`. */
  | { readonly kind: 'campaign'; readonly term: Term }
  /** The leader known here changed (null: none known). */
  | { readonly kind: 'leaderChanged'; readonly term: Term; readonly leader: ReplicaId | null }
  /** This node accepts sync writes: a quorum holds its PROMOTE. */
  | { readonly kind: 'elected'; readonly term: Term; readonly ms: number }
  | { readonly kind: 'steppedDown'; readonly term: Term; readonly pending: number; readonly reason: string }
  /** No quorum within the synchro timeout: a ROLLBACK is written. */
  | { readonly kind: 'limboTimeout'; readonly term: Term; readonly fromLsn: Lsn; readonly transactions: number }
  /** A limbo record of an older term, taken without effect. */
  | { readonly kind: 'splitBrain'; readonly term: Term; readonly from: ReplicaId; readonly recordTerm: Term; readonly lsn: Lsn }
  /** A write that named an older term than this node's, refused. */
  | { readonly kind: 'staleTerm'; readonly term: Term; readonly given: Term }
  /** A linearizable read's index: served (the read may run here) or refused, after waiting `ms`. */
  | { readonly kind: 'readIndex'; readonly outcome: 'served' | 'refused'; readonly ms: number }
  /** A membership change took effect here. */
  | { readonly kind: 'membership'; readonly term: Term; readonly version: number; readonly members: readonly ReplicaId[]; readonly quorum: number };

export type NodeObserver = (event: NodeEvent) => void;
