// Simulated storage: a journal whose unsynced writes a crash may lose (a torn
// tail is cut at recovery, which is the same loss), and a model of
// PostgreSQL: committed rows, prepared transactions (durable, invisible until
// committed, surviving crashes), the applied vclock, idempotency keys, the
// node row its fence follows. Both outlive a node's crash; the handles the
// driver holds belong to one life of it. PostgreSQL also crashes on its own:
// it loses what was committed without waiting for its flush (applies, COMMIT
// and ROLLBACK PREPARED, the node row: a suffix of its WAL), every open
// session, and for a while answers nothing.
//
// The model also keeps row locks: a client session's transaction locks its
// keys from its statements until it commits or ends (with its session, the
// sidecar, or the server), a prepared one until it is finished, and
// statements and applies that touch a locked key wait. And transaction ids,
// whose status capture checks when the leader holds writes open (RFC 0027).
import type { JournalRecord, TxnRecord } from '../../src/core/record.js';
import { REPLICA_LOCAL, type Lsn, type ReplicaId, type Term } from '../../src/core/types.js';
import { vclockFollow, vclockGet, type VClock } from '../../src/core/vclock.js';
import { gidFor, parseGid } from '../../src/core/gid.js';
import type { ApplyOutcome, Captured, LeaderTransaction, PreparedEntry, TableModeChange, WriteOpening } from '../../src/postgres/index.js';
import type { Database, JournalStore, NodeRow, PlantedBugs } from '../../src/sidecar/io.js';
import { judgedByLww } from '../../src/core/lww.js';
import type { Life, Rng, Scheduler } from './scheduler.js';

// ---- the journal ----------------------------------------------------------------

/** What survives a crash: the records that reached the disk, in order. */
export class SimDisk {
  readonly records: JournalRecord[] = [];
  /** Called as records become durable (relays follow the journal). */
  readonly listeners = new Set<() => void>();
}

interface Pending {
  readonly record: JournalRecord;
  readonly resolve: () => void;
}

export class SimJournal implements JournalStore {
  readonly #disk: SimDisk;
  readonly #scheduler: Scheduler;
  readonly #life: Life;
  readonly #rng: Rng;
  #vclock: VClock = [];
  #tail: VClock = [];
  readonly raft: { term: number; vote: number } | null = null;
  #pending: Pending[] = [];
  #flushing = false;
  /** How long the next group commit's fsync takes. */
  readonly #fsyncMs: () => number;

  constructor(disk: SimDisk, scheduler: Scheduler, life: Life, rng: Rng, fsyncMs: () => number) {
    this.#disk = disk;
    this.#scheduler = scheduler;
    this.#life = life;
    this.#rng = rng;
    this.#fsyncMs = fsyncMs;
    for (const record of disk.records) {
      this.#vclock = vclockFollow(this.#vclock, record.replica, record.lsn);
      if (record.kind === 'raft') this.raft = { term: record.term, vote: record.vote };
    }
    this.#tail = this.#vclock;
  }

  get vclock(): VClock {
    return this.#vclock;
  }

  get tailVclock(): VClock {
    return this.#tail;
  }

  append(record: JournalRecord): Promise<void> {
    const expected = vclockGet(this.#tail, record.replica) + 1;
    if (record.lsn !== expected) return Promise.reject(new Error(`record ${record.replica}:${record.lsn} is out of order: the journal expects lsn ${expected} next`));
    this.#tail = vclockFollow(this.#tail, record.replica, record.lsn);
    return new Promise((resolve) => {
      this.#pending.push({ record, resolve });
      if (!this.#flushing) {
        this.#flushing = true;
        this.#scheduler.after(this.#fsyncMs(), () => this.#flush(), this.#life);
      }
    });
  }

  /** Group commit: everything pending reaches the disk at once. */
  #flush(): void {
    const batch = this.#pending;
    this.#pending = [];
    this.#flushing = false;
    for (const { record } of batch) {
      this.#disk.records.push(record);
      this.#vclock = vclockFollow(this.#vclock, record.replica, record.lsn);
    }
    for (const { resolve } of batch) resolve();
    for (const listener of this.#disk.listeners) listener();
  }

  /** The crash: a prefix of what was written but not synced may have reached the disk; the rest is lost. */
  crash(): number {
    const kept = this.#rng.int(0, this.#pending.length);
    for (const { record } of this.#pending.slice(0, kept)) this.#disk.records.push(record);
    const lost = this.#pending.length - kept;
    this.#pending = [];
    return lost;
  }

  async *cursor(from: VClock): AsyncIterable<JournalRecord> {
    const snapshot = this.#disk.records.slice();
    for (const record of snapshot) {
      if (record.replica === REPLICA_LOCAL) continue;
      if (record.lsn > vclockGet(from, record.replica)) yield record;
    }
  }

  async close(): Promise<void> {
    // Nothing to release.
  }
}

// ---- PostgreSQL -----------------------------------------------------------------

/** One write of the simulated workload: a key put in the sync table `s` or the async table `a`. */
export interface Put {
  readonly table: 's' | 'a';
  readonly key: string;
  /** Unique per write: which write a visible row came from. */
  readonly value: string;
}

export interface SimSession {
  readonly client: number;
}

interface Row {
  readonly value: string;
  readonly time: number;
  readonly replica: number;
}

interface Prepared {
  readonly replica: ReplicaId;
  readonly lsn: Lsn;
  readonly puts: readonly Put[];
  readonly time: number;
  readonly idempotencyKey: string | null;
}

/** What the invariants hear from every PostgreSQL. */
export interface PgObserver {
  decided(node: number, verdict: 'committed' | 'rolled-back', gid: string, puts: readonly Put[]): void;
  /** A prepared write rolled back as a release, not a decision (held.ts, rule 4). */
  released(node: number, gid: string, puts: readonly Put[]): void;
}

/** A node's PostgreSQL: it lives on across the sidecar's crashes. */
export class SimPg {
  readonly node: number;
  readonly rows = new Map<string, Row>();
  readonly prepared = new Map<string, Prepared>();
  applied: VClock = [];
  /** Every applied (replica, lsn), as qsync.applied's rows. */
  readonly appliedExact = new Set<string>();
  readonly idempotency = new Map<string, { replica: number; lsn: number }>();
  row: NodeRow = { term: 0 as Term, role: 'follower', leader: 0 as ReplicaId, leaderAddress: '' };
  /** Bumped by every crash: a session or call that spans one fails. */
  epoch = 0;
  /** Set: the next PREPARE is made and then the server crashes before it answers (back at this time). */
  crashAfterPrepareUntil: number | null = null;
  /** Set: the next client session is terminated alone, at its `killArmed`-th step (terminatedAt). */
  killArmed: number | null = null;
  /** Per doomed session, the step it dies at. */
  readonly #doomed = new Map<number, number>();
  /** Client sessions terminated alone (pg_terminate_backend) while the server and its other sessions went on. */
  sessionsKilled = 0;
  #nextSession = 0;
  /**
   * An armed session kill waits for a session that writes a shared key of the
   * sync table, or one another write waits on (runs that hold writes open:
   * RFC 0027); otherwise it takes the next session opened.
   */
  killsOnLocks = false;
  /** Client sessions' transactions, by id (the session's number). */
  readonly #xacts = new Map<number, { readonly epoch: number; readonly life: Life; state: 'open' | 'committed' | 'aborted' }>();
  /** Transactions captured to be held open (capture_held answered with their id). */
  readonly heldOpen = new Set<number>();
  /** Sessions terminated alone at a time rather than at a step (one held open while it waited). */
  readonly #terminated = new Set<number>();
  /** A key's lock: the id of the client transaction, or the gid of the prepared one, that holds it. */
  readonly #locks = new Map<string, number | string>();
  /** Until when a crashed server answers nothing. */
  downUntil = 0;
  /** Told of every crash (the driver's handles subscribe through SimDatabase.onLost). */
  readonly lostListeners = new Set<() => void>();
  /** How to undo each commit not flushed yet, oldest first: a crash undoes a suffix. */
  #unflushed: Array<() => void> = [];
  readonly #observer: PgObserver;

  constructor(node: number, observer: PgObserver) {
    this.node = node;
    this.#observer = observer;
  }

  /** A new client session's number. */
  openSession(): number {
    this.#nextSession += 1;
    if (this.killArmed !== null && !this.killsOnLocks) {
      this.#doomed.set(this.#nextSession, this.killArmed);
      this.killArmed = null;
    }
    return this.#nextSession;
  }

  /**
   * Session `id` reaches its `step`-th point where PostgreSQL could end it: true
   * when pg_terminate_backend ends it there (killArmed). Its open transaction is
   * then rolled back, a prepared one stays, and every other session goes on.
   */
  terminatedAt(id: number, step: number): boolean {
    if (this.#terminated.has(id)) return true;
    const at = this.#doomed.get(id);
    if (at === undefined || step < at) return false;
    if (step === at) {
      this.sessionsKilled += 1;
      this.#terminated.add(id);
    }
    return true;
  }

  /**
   * Held open, the kill waits for a session that writes a shared
   * key of the sync table, whose death another write waiting for that key
   * may see: `keys` are the session's.
   */
  armOn(id: number, keys: readonly string[]): void {
    if (!this.killsOnLocks || this.killArmed === null || this.killArmed > 2 || !keys.some((key) => key.startsWith('s:x'))) return;
    this.#doomed.set(id, this.killArmed);
    this.killArmed = null;
  }

  /**
   * Held open, a kill armed for step 3 or 4 waits instead for a
   * session that another one waits on (`keys` are the waiter's): it dies
   * while it holds the row, most often held open for its quorum.
   */
  killWaitedOn(keys: readonly string[], waiter: number): void {
    if (!this.killsOnLocks || this.killArmed === null || this.killArmed <= 2) return;
    for (const key of keys.filter((k) => k.startsWith('s:x'))) {
      const holder = this.#locks.get(key);
      if (typeof holder !== 'number' || holder === waiter || !this.heldOpen.has(holder) || this.xactStatus(holder) !== 'in progress') continue;
      this.killArmed = null;
      this.terminate(holder);
      return;
    }
  }

  /** pg_terminate_backend of session `id` now, wherever it is. */
  terminate(id: number): void {
    if (this.#terminated.has(id)) return;
    this.#terminated.add(id);
    this.sessionsKilled += 1;
  }

  /** A client session's transaction begins (BEGIN, in the sidecar's life `life`). */
  begin(id: number, life: Life): void {
    this.#xacts.set(id, { epoch: this.epoch, life, state: 'open' });
  }

  /** pg_xact_status: a transaction whose session, sidecar or server died is aborted. */
  xactStatus(id: number): 'in progress' | 'committed' | 'aborted' {
    const xact = this.#xacts.get(id);
    if (xact === undefined) return 'aborted';
    if (xact.state === 'open' && (xact.epoch !== this.epoch || !xact.life.alive || this.#terminated.has(id))) xact.state = 'aborted';
    return xact.state === 'open' ? 'in progress' : xact.state;
  }

  /** The transaction ended (COMMIT or ROLLBACK): its locks go. */
  end(id: number, state: 'committed' | 'aborted'): void {
    const xact = this.#xacts.get(id);
    if (xact !== undefined && xact.state === 'open') xact.state = state;
    for (const [key, holder] of this.#locks) if (holder === id) this.#locks.delete(key);
  }

  /** Client transactions still open (in progress) now. */
  get openXacts(): number {
    return [...this.#xacts.keys()].filter((id) => this.xactStatus(id) === 'in progress').length;
  }

  /** One of `keys` is locked by a live transaction other than `self`. */
  locked(keys: readonly string[], self: number | null): boolean {
    return keys.some((key) => {
      const holder = this.#locks.get(key);
      if (holder === undefined || holder === self) return false;
      return typeof holder === 'string' ? this.prepared.has(holder) : this.xactStatus(holder) === 'in progress';
    });
  }

  lock(keys: readonly string[], id: number): void {
    for (const key of keys) this.#locks.set(key, id);
  }

  /** PREPARE TRANSACTION: the session's locks pass to the prepared transaction. */
  lockPrepared(id: number, gid: string): void {
    for (const [key, holder] of this.#locks) if (holder === id) this.#locks.set(key, gid);
  }

  /** COMMIT or ROLLBACK PREPARED, as the sidecar runs them: without waiting for the flush. */
  commit(gid: string): boolean {
    const entry = this.prepared.get(gid);
    if (entry === undefined) return false;
    const undo = this.#undoPoint(entry.puts, entry.replica, entry.lsn, entry.idempotencyKey);
    this.prepared.delete(gid);
    this.#unflushed.push(() => {
      undo();
      this.prepared.set(gid, entry);
    });
    // Judged by last-writer-wins (a sync write may carry an async change): in PostgreSQL the prepared
    // transaction holds the key's row and version, so a peer's write applied meanwhile waits for this
    // commit and is then judged against the version capture stamped; the same end.
    this.#write(entry.puts, entry.time, entry.replica, true);
    this.#mark(entry.replica, entry.lsn, entry.idempotencyKey);
    this.#observer.decided(this.node, 'committed', gid, entry.puts);
    return true;
  }

  rollback(gid: string): boolean {
    const entry = this.prepared.get(gid);
    if (entry === undefined) return false;
    this.prepared.delete(gid);
    this.#unflushed.push(() => this.prepared.set(gid, entry));
    this.#observer.decided(this.node, 'rolled-back', gid, entry.puts);
    return true;
  }

  /**
   * ROLLBACK PREPARED of an undecided write of a node that stopped leading:
   * its journal keeps the TXN, and the verdict applies it from there. Not a
   * decision, so the observer does not hear it; the end checks that every
   * acknowledged write is on every node.
   */
  release(gid: string): void {
    const entry = this.prepared.get(gid);
    if (entry === undefined) return;
    this.prepared.delete(gid);
    this.#unflushed.push(() => this.prepared.set(gid, entry));
    this.#observer.released(this.node, gid, entry.puts);
  }

  /** PREPARE TRANSACTION: flushed before it answers, with everything before it. */
  prepare(gid: string, entry: Prepared): void {
    if (this.prepared.has(gid)) throw pgError('42710', `transaction identifier "${gid}" is already in use`);
    this.prepared.set(gid, entry);
    this.flush();
  }

  /**
   * One transaction of the apply queue: several records' puts and applied
   * marks, committed without waiting for the flush, so a crash undoes the
   * whole batch or none of it. `marksApart` (a planted bug): the marks commit
   * first, by themselves, and a crash may keep them and lose the rows.
   */
  commitBatch(items: ReadonlyArray<{ readonly gid: string; readonly puts: readonly Put[]; readonly time: number; readonly replica: ReplicaId; readonly lsn: Lsn; readonly idempotencyKey: string | null; readonly sync: boolean }>, marksApart: boolean, skipSync = false): void {
    if (marksApart) {
      for (const item of items) this.#unflushed.push(this.#undoPoint([], item.replica, item.lsn, item.idempotencyKey));
      for (const item of items) this.#mark(item.replica, item.lsn, item.idempotencyKey);
    }
    const undos = items.map((item) => {
      const undo = this.#undoPoint(item.puts, item.replica, item.lsn, item.idempotencyKey);
      this.#write(item.puts, item.time, item.replica, true, item.sync, skipSync);
      this.#mark(item.replica, item.lsn, item.idempotencyKey);
      return undo;
    });
    this.#unflushed.push(() => {
      for (const undo of undos.reverse()) undo();
    });
    for (const item of items) if (item.puts.some((p) => p.table === 's')) this.#observer.decided(this.node, 'committed', item.gid, item.puts);
  }

  /**
   * Commit puts at once (an async transaction). `lww`: a peer's write, judged
   * by last-writer-wins. `flushed`: a client session's COMMIT, which waits for
   * the flush; the applier's does not.
   */
  commitNow(gid: string, puts: readonly Put[], time: number, replica: ReplicaId, lsn: Lsn, idempotencyKey: string | null, lww: boolean, flushed: boolean, txnSync = false, skipSync = false): void {
    const undo = this.#undoPoint(puts, replica, lsn, idempotencyKey);
    this.#write(puts, time, replica, lww, txnSync, skipSync);
    this.#mark(replica, lsn, idempotencyKey);
    if (flushed) this.flush();
    else this.#unflushed.push(undo);
    if (puts.some((p) => p.table === 's')) this.#observer.decided(this.node, 'committed', gid, puts);
  }

  /** qsync.node, written without waiting for the flush. */
  publish(row: NodeRow): void {
    const before = this.row;
    this.row = row;
    this.#unflushed.push(() => {
      this.row = before;
    });
  }

  /** The WAL reached the disk: nothing before now can be lost. */
  flush(): void {
    this.#unflushed = [];
  }

  /** The server dies: a suffix of the unflushed commits is lost, sessions end; back at `upAt`. Returns how many were lost. */
  crash(lost: number, upAt: number): number {
    const undone = Math.min(lost, this.#unflushed.length);
    for (const undo of this.#unflushed.splice(this.#unflushed.length - undone).reverse()) undo();
    this.#unflushed = [];
    this.epoch += 1;
    this.downUntil = upAt;
    for (const listener of this.lostListeners) listener();
    return undone;
  }

  get unflushed(): number {
    return this.#unflushed.length;
  }

  /** What a commit of these puts changes, to put back. */
  #undoPoint(puts: readonly Put[], replica: ReplicaId, lsn: Lsn, idempotencyKey: string | null): () => void {
    const rows = puts.map((p) => [`${p.table}:${p.key}`, this.rows.get(`${p.table}:${p.key}`)] as const);
    const applied = this.applied;
    const exact = `${replica}:${lsn}`;
    const hadExact = this.appliedExact.has(exact);
    const hadKey = idempotencyKey === null || this.idempotency.has(idempotencyKey);
    return () => {
      for (const [key, row] of rows.slice().reverse()) {
        if (row === undefined) this.rows.delete(key);
        else this.rows.set(key, row);
      }
      this.applied = applied;
      if (!hadExact) this.appliedExact.delete(exact);
      if (!hadKey && idempotencyKey !== null) this.idempotency.delete(idempotencyKey);
    };
  }

  /**
   * `lww`: a write applied, judged as core/lww.ts says (table a is the async
   * one); `txnSync` is its TXN's kind, `skipSync` the planted bug
   * syncTxnSkipsLww.
   */
  #write(puts: readonly Put[], time: number, replica: number, lww: boolean, txnSync = false, skipSync = false): void {
    for (const put of puts) {
      const key = `${put.table}:${put.key}`;
      const current = this.rows.get(key);
      const judged = lww && judgedByLww(put.table === 'a' ? 'async' : 'sync', txnSync, skipSync);
      if (judged && current !== undefined && (current.time > time || (current.time === time && current.replica > replica))) continue;
      this.rows.set(key, { value: put.value, time, replica });
    }
  }

  #mark(replica: ReplicaId, lsn: Lsn, idempotencyKey: string | null): void {
    if (lsn > vclockGet(this.applied, replica)) this.applied = vclockFollow(this.applied, replica, lsn);
    this.appliedExact.add(`${replica}:${lsn}`);
    if (idempotencyKey !== null && !this.idempotency.has(idempotencyKey)) this.idempotency.set(idempotencyKey, { replica, lsn });
  }
}

const keysOf = (puts: readonly Put[]): string[] => puts.map((p) => `${p.table}:${p.key}`);

const encodePuts = (puts: readonly Put[]): string => JSON.stringify(puts.map((p) => ({ k: p.key, v: p.value })));

function decodePuts(record: TxnRecord): Put[] {
  return record.changes.flatMap((change) => (JSON.parse(change.rows) as Array<{ k: string; v: string }>).map((r) => ({ table: change.table as 's' | 'a', key: r.k, value: r.v })));
}

/** A PostgreSQL error as pg reports it (code = SQLSTATE), for the fence. */
function pgError(code: string, message: string): Error {
  return Object.assign(new Error(message), { code });
}

/**
 * The driver's handle on its PostgreSQL for one life of the sidecar. Each call
 * takes effect at once and answers after a latency: a crash of the sidecar in
 * between leaves PostgreSQL changed and the sidecar unaware, as with a real
 * connection; a crash of PostgreSQL in between fails the call, whether or not
 * its effect survived. While PostgreSQL is down every call fails.
 */
export class SimDatabase implements Database<SimSession, readonly Put[]> {
  readonly #pg: SimPg;
  readonly #cluster: string;
  readonly #sleep: (ms: number) => Promise<void>;
  readonly #now: () => number;
  readonly #rng: Rng;
  readonly #life: Life;
  readonly #failureRate: number;
  readonly #bugs: PlantedBugs;

  constructor(pg: SimPg, cluster: string, sleep: (ms: number) => Promise<void>, now: () => number, rng: Rng, life: Life, failureRate: number, bugs: PlantedBugs = {}) {
    this.#bugs = bugs;
    this.#pg = pg;
    this.#cluster = cluster;
    this.#sleep = sleep;
    this.#now = now;
    this.#rng = rng;
    this.#life = life;
    this.#failureRate = failureRate;
  }

  // The simulated journal keeps every record (no retention), so no peer ever needs a snapshot.
  async compactApplied(): Promise<void> {
    this.#up('compactApplied');
  }

  readSnapshot(): Promise<never> {
    return Promise.reject(new Error('snapshots are not simulated: the simulated journal keeps every record'));
  }

  loadSnapshot(): Promise<never> {
    return Promise.reject(new Error('snapshots are not simulated: the simulated journal keeps every record'));
  }

  onLost(listener: () => void): void {
    const pg = this.#pg;
    const once = (): void => {
      if (this.#life.alive) listener();
      else pg.lostListeners.delete(once);
    };
    pg.lostListeners.add(once);
  }

  /** The server answers: the epoch the call starts in. */
  #up(what: string): number {
    if (this.#now() < this.#pg.downUntil) throw pgError('57P03', `the database system is starting up (${what})`);
    return this.#pg.epoch;
  }

  /** The answer after a latency; a PostgreSQL crash meanwhile ends the connection instead. */
  async #answer<T>(value: T, epoch: number): Promise<T> {
    await this.#sleep(this.#rng.range(0.1, 2));
    if (this.#pg.epoch !== epoch) throw pgError('57P01', 'terminating connection due to a PostgreSQL crash');
    return value;
  }

  /** An apply's rows wait for the transactions that lock them, open or prepared. */
  async #unlocked(puts: readonly Put[], epoch: number): Promise<void> {
    const keys = keysOf(puts);
    while (this.#pg.locked(keys, null)) {
      await this.#sleep(this.#rng.range(0.5, 2));
      if (this.#pg.epoch !== epoch) throw pgError('57P01', 'terminating connection due to a PostgreSQL crash');
    }
  }

  /** A transient failure (a deadlock, a restarting server): nothing happened, the caller retries. */
  #flaky(what: string): void {
    if (this.#rng.chance(this.#failureRate)) throw pgError('40P01', `simulated transient failure in ${what}`);
  }

  #list(): PreparedEntry[] {
    const entries: PreparedEntry[] = [];
    for (const gid of this.#pg.prepared.keys()) {
      const parsed = parseGid(this.#cluster, gid);
      if (parsed !== null) entries.push({ gid, ...parsed });
    }
    return entries.sort((a, b) => a.replica - b.replica || a.lsn - b.lsn);
  }

  async listPrepared(): Promise<PreparedEntry[]> {
    const epoch = this.#up('listing prepared transactions');
    return this.#answer(this.#list(), epoch);
  }

  async appliedVclock(): Promise<VClock> {
    const epoch = this.#up('reading the applied vclock');
    return this.#answer(this.#pg.applied, epoch);
  }

  async appliedLsns(replica: ReplicaId, above: Lsn): Promise<ReadonlySet<Lsn>> {
    const epoch = this.#up('reading applied lsns');
    const lsns = new Set<Lsn>();
    for (const exact of this.#pg.appliedExact) {
      const [r, l] = exact.split(':').map(Number) as [number, number];
      if (r === replica && l > above) lsns.add(l as Lsn);
    }
    return this.#answer(lsns, epoch);
  }

  async apply(record: TxnRecord, options: { prepare: boolean; exact?: boolean }): Promise<ApplyOutcome> {
    const epoch = this.#up(`applying ${record.replica}:${record.lsn}`);
    this.#flaky(`applying ${record.replica}:${record.lsn}`);
    const pg = this.#pg;
    const applied = options.exact === true ? pg.appliedExact.has(`${record.replica}:${record.lsn}`) : vclockGet(pg.applied, record.replica) >= record.lsn;
    if (applied || pg.prepared.has(record.gid)) return this.#answer('skipped', epoch);
    const puts = decodePuts(record);
    await this.#unlocked(puts, epoch);
    if (options.prepare) {
      pg.prepare(record.gid, { replica: record.replica, lsn: record.lsn, puts, time: record.time, idempotencyKey: record.idempotencyKey });
      return this.#answer('prepared', epoch);
    }
    pg.commitNow(record.gid, puts, record.time, record.replica, record.lsn, record.idempotencyKey, true, false, record.sync, this.#bugs.syncTxnSkipsLww === true);
    return this.#answer('applied', epoch);
  }

  async applyBatch(records: readonly TxnRecord[], options: { exactTo: VClock; checked: boolean }): Promise<void> {
    const first = records[0];
    if (first === undefined) return;
    const epoch = this.#up(`applying ${records.length} records from ${first.replica}:${first.lsn}`);
    this.#flaky(`applying ${records.length} records from ${first.replica}:${first.lsn}`);
    const pg = this.#pg;
    await this.#unlocked(records.flatMap(decodePuts), epoch);
    // Unchecked, a record applied already fails the batch on its mark, as qsync.applied's primary key does.
    const unchecked = !options.checked && records.every((r) => r.lsn > vclockGet(options.exactTo, r.replica));
    if (unchecked && records.some((r) => pg.appliedExact.has(`${r.replica}:${r.lsn}`))) throw pgError('23505', 'duplicate key value violates unique constraint "applied_pkey"');
    const fresh = unchecked ? records : records.filter((r) => !pg.prepared.has(r.gid) && (r.lsn <= vclockGet(options.exactTo, r.replica)
      ? !pg.appliedExact.has(`${r.replica}:${r.lsn}`)
      : r.lsn > vclockGet(pg.applied, r.replica)));
    pg.commitBatch(fresh.map((r) => ({ gid: r.gid, puts: decodePuts(r), time: r.time, replica: r.replica, lsn: r.lsn, idempotencyKey: r.idempotencyKey, sync: r.sync })),
      this.#bugs.batchMarksApart === true, this.#bugs.syncTxnSkipsLww === true);
    await this.#answer(undefined, epoch);
  }

  unfit(): string | null {
    // The simulated tables are the same on every node.
    return null;
  }

  async reloadTables(): Promise<void> {
    // No latency drawn: reading the tables does not change the seeds' draws.
    this.#up('reading the tables');
  }

  /** ROLLBACK PREPARED as a release (held.ts, rule 4): the same in PostgreSQL, but not a decision. */
  async release(gids: readonly string[]): Promise<void> {
    for (const gid of gids) {
      const epoch = this.#up('rollback prepared');
      this.#flaky(`ROLLBACK PREPARED ${gid}`);
      this.#pg.release(gid);
      await this.#answer(undefined, epoch);
    }
  }

  async finish(verb: 'commit' | 'rollback', gids: readonly string[], each?: (gid: string, finished: boolean) => void): Promise<void> {
    for (const gid of gids) {
      const epoch = this.#up(`${verb} prepared`);
      // Also here: a leader whose COMMIT PREPARED fails answers its clients and steps down (driver.ts).
      this.#flaky(`${verb === 'commit' ? 'COMMIT' : 'ROLLBACK'} PREPARED ${gid}`);
      const finished = verb === 'commit' ? this.#pg.commit(gid) : this.#pg.rollback(gid);
      await this.#answer(undefined, epoch);
      each?.(gid, finished);
    }
  }

  runDdl(): Promise<{ readonly applied: boolean; readonly lsn: Lsn }> {
    return Promise.reject(new Error('the simulation has no schema changes'));
  }

  setTableMode(): Promise<TableModeChange> {
    return Promise.reject(new Error('the simulation has fixed table modes'));
  }

  async publish(row: NodeRow): Promise<void> {
    const epoch = this.#up('writing qsync.node');
    this.#pg.publish(row);
    await this.#answer(undefined, epoch);
  }

  /**
   * A client session's transaction: the driver's order of duties
   * (src/sidecar/leader-write.ts) runs over its primitives. The session is
   * one connection: a PostgreSQL crash at any point before the COMMIT
   * answers ends the transaction.
   */
  async write<T>(_session: SimSession, opening: WriteOpening, order: (tx: LeaderTransaction<readonly Put[]>) => Promise<T>): Promise<T> {
    const epoch = this.#up('a client session');
    return order(new SimLeaderTransaction(this.#pg, epoch, opening, this.#cluster, this.#sleep, this.#rng, this.#life));
  }

  async outcome(idempotencyKey: string): Promise<{ committed: false } | { committed: true; replica: number; lsn: number }> {
    const epoch = this.#up('reading an outcome');
    const found = this.#pg.idempotency.get(idempotencyKey);
    return this.#answer(found === undefined ? { committed: false } : { committed: true, ...found }, epoch);
  }

  async close(): Promise<void> {
    // Nothing to release.
  }
}

/** One client transaction on a simulated PostgreSQL: the primitives under the leader's order of duties. */
class SimLeaderTransaction implements LeaderTransaction<readonly Put[]> {
  readonly #pg: SimPg;
  readonly #epoch: number;
  readonly #opening: WriteOpening;
  readonly #cluster: string;
  readonly #sleep: (ms: number) => Promise<void>;
  readonly #rng: Rng;
  readonly #life: Life;
  #puts: readonly Put[] = [];
  #stamp: { readonly lsn: Lsn; readonly time: number } | null = null;
  /** This session's number in its PostgreSQL (SimPg.openSession). */
  readonly #id: number;
  /** Points so far where PostgreSQL could have ended the session (#session). */
  #steps = 0;

  constructor(pg: SimPg, epoch: number, opening: WriteOpening, cluster: string, sleep: (ms: number) => Promise<void>, rng: Rng, life: Life) {
    this.#pg = pg;
    this.#epoch = epoch;
    this.#opening = opening;
    this.#cluster = cluster;
    this.#sleep = sleep;
    this.#rng = rng;
    this.#life = life;
    this.#id = pg.openSession();
    pg.begin(this.#id, life);
  }

  #session(): void {
    if (this.#pg.epoch !== this.#epoch) throw pgError('57P01', 'terminating connection due to a PostgreSQL crash');
    this.#steps += 1;
    if (this.#pg.terminatedAt(this.#id, this.#steps)) throw pgError('57P01', 'terminating connection due to administrator command');
  }

  /** BEGIN and the puts: the fence checks a sync table's write against qsync.node. */
  async run(puts: readonly Put[]): Promise<void> {
    await this.#sleep(this.#rng.range(0.2, 3));
    this.#pg.armOn(this.#id, keysOf(puts));
    this.#session();
    const sync = puts.some((p) => p.table === 's');
    if (sync && this.#pg.row.role !== 'leader') throw pgError('QS001', 'qsync: this node is not the leader');
    if (sync && this.#pg.row.term !== this.#opening.term) throw pgError('QS002', `qsync: stale term ${this.#opening.term} (node term ${this.#pg.row.term})`);
    // Each statement waits for the transactions that lock its rows; then its transaction locks them.
    const keys = keysOf(puts);
    while (this.#pg.locked(keys, this.#id)) {
      this.#pg.killWaitedOn(keys, this.#id);
      await this.#sleep(this.#rng.range(0.5, 2));
      if (!this.#life.alive) return new Promise(() => undefined);
      if (this.#pg.xactStatus(this.#id) !== 'in progress') throw pgError('57P01', 'terminating connection: the session ended while it waited for a lock');
    }
    this.#pg.lock(keys, this.#id);
    this.#puts = puts;
  }

  async capture(stamp: { readonly lsn: Lsn; readonly time: number }, held: readonly string[] | null): Promise<Captured> {
    this.#session();
    // capture_held (migrations/0006): refused if a transaction held open before this one has ended.
    const ended = (held ?? []).filter((xid) => this.#pg.xactStatus(Number(xid)) === 'aborted');
    if (ended.length > 0) throw Object.assign(pgError('QS006', 'qsync: a write this node holds open for its quorum ended before its commit'), { detail: ended.join(',') });
    this.#stamp = stamp;
    const puts = this.#puts;
    const changes = [...new Set(puts.map((p) => p.table))].map((table) => ({ table, op: 'insert' as const, rows: encodePuts(puts.filter((p) => p.table === table)) }));
    const sync = puts.some((p) => p.table === 's');
    if (held === null) return { changes, sync };
    // Every fifth session's write is SERIALIZABLE: prepared even where writes are held open (RFC 0027), and
    // released like any prepared write when its node stops leading (RFC 0029). Chosen by number, not drawn.
    const holdable = this.#id % 5 !== 0;
    if (sync && holdable) this.#pg.heldOpen.add(this.#id);
    // Armed for the next PREPARE: held open, the server crashes while the write waits for its quorum instead.
    if (this.#pg.crashAfterPrepareUntil !== null) {
      const upAt = this.#pg.crashAfterPrepareUntil;
      this.#pg.crashAfterPrepareUntil = null;
      void this.#sleep(this.#rng.range(0.1, 3)).then(() => this.#pg.crash(0, upAt));
    }
    return { changes, sync, held: { xid: String(this.#id), holdable } };
  }

  /**
   * PREPARE TRANSACTION's round trip: PostgreSQL prepares (and flushes) it
   * before it answers, so a crash of PostgreSQL, or of the sidecar, while the
   * answer is on its way leaves it prepared though the sidecar never hears so.
   */
  async prepare(gid: string): Promise<void> {
    const { lsn, time } = this.#stamped();
    await this.#sleep(this.#rng.range(0.1, 1));
    if (!this.#life.alive) return new Promise(() => undefined);
    this.#session();
    this.#pg.prepare(gid, { replica: this.#opening.replica, lsn, puts: this.#puts, time, idempotencyKey: this.#opening.idempotencyKey });
    this.#pg.lockPrepared(this.#id, gid);
    this.#pg.end(this.#id, 'committed');
    if (this.#pg.crashAfterPrepareUntil !== null) {
      const upAt = this.#pg.crashAfterPrepareUntil;
      this.#pg.crashAfterPrepareUntil = null;
      this.#pg.crash(0, upAt);
    }
    await this.#sleep(this.#rng.range(0.1, 1));
    if (!this.#life.alive) return new Promise(() => undefined);
    // Killed alone while the answer was on its way: prepared, and the sidecar hears only the error.
    this.#session();
  }

  async commit(journaled: boolean): Promise<void> {
    if (this.#puts.length === 0) {
      this.#pg.end(this.#id, 'committed');
      return;
    }
    const { lsn, time } = this.#stamped();
    // The COMMIT's round trip: other sessions' COMMITs may overtake it, and either crash may end it.
    await this.#sleep(this.#rng.range(0.1, 2));
    // The session died with the sidecar: PostgreSQL rolled the transaction back; replay applies the journaled TXN.
    if (!this.#life.alive) return new Promise(() => undefined);
    this.#session();
    // Judged by last-writer-wins too: in PostgreSQL the local write holds the row's lock, so a peer's
    // write applied meanwhile waits for this commit and is then judged against its version; the same end.
    // Journaled: not flushed (synchronous_commit off), and replay repairs a lost COMMIT.
    const gid = gidFor(this.#cluster, this.#opening.replica, lsn);
    this.#pg.commitNow(gid, this.#puts, time, this.#opening.replica, lsn, this.#opening.idempotencyKey, true, !journaled);
    this.#pg.end(this.#id, 'committed');
  }

  async rollback(): Promise<void> {
    // Nothing of an unprepared transaction outlives it.
    this.#pg.end(this.#id, 'aborted');
  }

  #stamped(): { readonly lsn: Lsn; readonly time: number } {
    if (this.#stamp === null) throw new Error('a simulated write was prepared or committed before its capture');
    return this.#stamp;
  }
}
