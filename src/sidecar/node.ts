// The sidecar runtime: the one place that awaits, wiring the pure core
// (limbo) to the journal, PostgreSQL, peer links, clients and timers.
//
// Start: open the journal; check and migrate PostgreSQL; reconcile prepared
// transactions with the journal's verdicts; replay what the journal holds
// beyond PostgreSQL's applied vclock; refill the leader's limbo; then serve.
//
// Records from peers go through one queue, in arrival order: drop what the
// journal already holds, refuse an older term (split-brain), append (durable),
// apply to PostgreSQL, then count as applied; acks report that vclock.
import pg from 'pg';
import { AssertionFailed } from '../core/assert.js';
import { QsyncError } from '../core/errors.js';
import { parseGid } from '../core/gid.js';
import { limboCreate, limboStep, type LimboAction, type LimboEvent, type LimboState } from '../core/limbo.js';
import { limits } from '../core/limits.js';
import type { JournalRecord, TableMode } from '../core/record.js';
import { REPLICA_LOCAL, type Lsn, type ReplicaId, type Term } from '../core/types.js';
import { vclockFollow, vclockGet, vclockMerge, vclockFromEntries, type VClock } from '../core/vclock.js';
import { Journal } from '../journal/index.js';
import type { Logger } from '../log.js';
import { RelayServer, Subscriber } from '../net/peer.js';
import {
  Applier, appliedVclock, checkServer, commitPrepared, listPrepared, migrate, reconcile, rollbackPrepared, runLeaderWrite, setTableMode,
} from '../postgres/index.js';
import type { Consistency, Statement } from '../core/client-protocol.js';
import { createHash } from 'node:crypto';
import { ClientServer, type ClientSession, type RequestHandler, type Transaction } from './client-server.js';
import type { SidecarConfig } from './config.js';
import { OwnLog } from './own-log.js';
import { readVerdicts } from './verdicts.js';

/** A client authenticated as a PostgreSQL role; its statements run on that role's pool. */
interface RoleSession extends ClientSession {
  readonly pool: pg.Pool;
}

/** Distinct roles with a pool at once; a further one is refused until the node restarts. */
const ROLE_POOLS_MAX = 64;

interface Waiter {
  readonly resolve: () => void;
  readonly reject: (error: QsyncError) => void;
}

export class SidecarNode implements RequestHandler<RoleSession> {
  readonly config: SidecarConfig;
  readonly log: Logger;
  readonly #journal: Journal;
  #admin: pg.Client;
  readonly #pools = new Map<string, pg.Pool>();
  /** Connections for COMMIT/ROLLBACK PREPARED, run in parallel so PostgreSQL group-commits them. */
  readonly #control: pg.Pool;
  #applier: Applier;
  /** Set when a PostgreSQL connection failed: the next apply attempt reconnects first. */
  #pgBroken = false;
  readonly #own: OwnLog;
  readonly #term: Term;
  #limbo: LimboState | null = null;
  #applied: VClock;
  #queue: Promise<void> = Promise.resolve();
  readonly #waiters = new Map<string, Waiter>();
  /** Writes started and not yet in the limbo (or finished): with the limbo's entries, what may become prepared. */
  #beforeLimbo = 0;
  #stopping = false;
  /** Own TXNs that are rolled back: relayed as empty TXNs, so a peer that never had one never will. */
  readonly #withheld = new Set<number>();
  /** Gids this node holds prepared (its PostgreSQL's limbo), so CONFIRM need not list pg_prepared_xacts. */
  readonly #prepared = new Set<string>();
  /** Highest own lsn ever written to any peer. */
  #sentOwnLsn = 0;
  #clock = 0;
  #relay: RelayServer | null = null;
  #subscribers: Subscriber[] = [];
  #clients: ClientServer | null = null;
  #timer: NodeJS.Timeout | null = null;

  private constructor(config: SidecarConfig, log: Logger, journal: Journal, admin: pg.Client, applier: Applier, term: Term) {
    this.config = config;
    this.log = log;
    this.#journal = journal;
    this.#admin = admin;
    this.#applier = applier;
    this.#term = term;
    // COMMIT/ROLLBACK PREPARED here follow a CONFIRM or ROLLBACK (or a quorum) that the journal
    // holds: replay repeats them after a crash, so they need not wait for their own WAL flush.
    this.#control = new pg.Pool({ connectionString: config.pgUrl, max: 8, options: '-c synchronous_commit=off', ...PG_TIMEOUTS });
    this.#control.on('error', (error) => log.warn({ err: error.message }, 'idle PostgreSQL control connection failed'));
    this.#applied = journal.vclock;
    this.#own = new OwnLog(journal, this.#self, config.clusterId, (record) => this.#ownAppended(record));
  }

  get #self(): ReplicaId {
    return this.config.replicaId as ReplicaId;
  }

  get isLeader(): boolean {
    return this.config.leader === this.config.replicaId;
  }

  static async start(config: SidecarConfig, log: Logger): Promise<SidecarNode> {
    const journal = await Journal.open({ dir: config.dataDir });
    for (const cut of journal.recovery.cuts) log.error({ cut }, 'journal tail was cut at recovery');
    const admin = await connectPg(config.pgUrl, log, () => undefined);
    await checkServer(admin, { preparedNeeded: limits.limboEntriesMax });
    await migrate(admin);
    const term = Math.max(journal.raft?.term ?? 0, 1) as Term;
    if (journal.raft === null) {
      await journal.append({ kind: 'raft', replica: REPLICA_LOCAL, lsn: (vclockGet(journal.tailVclock, REPLICA_LOCAL) + 1) as Lsn, term, time: Date.now(), vote: 0 as ReplicaId });
    }
    const leader = config.peers.find((p) => p.replica === config.leader);
    await admin.query(`UPDATE qsync.node SET replica_id = $1, cluster_id = $2, term = $3, role = $4, leader_id = $5, leader_address = $6`, [
      config.replicaId, config.clusterId, term, config.leader === config.replicaId ? 'leader' : 'follower', config.leader,
      leader === undefined ? `${config.clientHost}:${config.clientPort}` : `${leader.host}:${leader.port}`,
    ]);
    const node = new SidecarNode(config, log, journal, admin, await Applier.create(await connectPg(config.pgUrl, log, () => undefined)), term);
    node.#watch(admin);
    node.#watch(node.#applier.client);
    await node.#recover();
    await node.#serve();
    return node;
  }

  /** Make PostgreSQL agree with the journal, then apply what it lacks; refill the limbo. */
  async #recover(): Promise<void> {
    const verdicts = await readVerdicts(this.#journal);
    const report = await reconcile(this.#admin, this.config.clusterId, verdicts.verdict);
    this.log.info({ ...report, vclock: this.#journal.vclock }, 'reconciled prepared transactions with the journal');
    for (const entry of await listPrepared(this.#admin, this.config.clusterId)) this.#prepared.add(entry.gid);
    let replayed = 0;
    for await (const record of this.#journal.cursor(await appliedVclock(this.#admin))) {
      await this.#apply(record);
      replayed += 1;
    }
    this.#applied = this.#journal.vclock;
    if (replayed > 0) this.log.info({ replayed }, 'replayed journal records PostgreSQL lacked');
    for (const { lsn } of verdicts.rolledBack(this.#self)) this.#withheld.add(lsn);
    if (this.isLeader) {
      const members = [this.#self, ...this.config.peers.map((p) => p.replica as ReplicaId)];
      this.#limbo = limboCreate({ owner: this.#self, members, quorum: this.config.quorum, synchroTimeoutMs: this.config.synchroTimeoutMs }, verdicts.confirmedLsn(this.#self));
      for (const entry of verdicts.pending(this.#self)) this.#step({ kind: 'append', entry: { ...entry, createdAtMs: Date.now() } });
      this.#step({ kind: 'durable', lsn: vclockGet(this.#journal.vclock, this.#self) });
    }
  }

  async #serve(): Promise<void> {
    const { config, log } = this;
    const identity = { cluster: config.clusterId, replica: this.#self, secret: config.secret ?? `insecure:${config.clusterId}` };
    this.#relay = new RelayServer({
      identity, journal: this.#journal, log,
      onAck: (replica, vclock) => this.#step({ kind: 'ack', replica, lsn: vclockGet(vclock, this.#self) }),
      outgoing: (record) => (record.kind === 'txn' && record.replica === this.#self && this.#withheld.has(record.lsn)
        ? { ...record, sync: false, changes: [], idempotencyKey: null }
        : record),
      onSent: (record) => {
        if (record.replica === this.#self) this.#sentOwnLsn = Math.max(this.#sentOwnLsn, record.lsn);
      },
    });
    await this.#relay.listen(config.peerPort, config.peerHost);
    this.#subscribers = config.peers.map((peer) => new Subscriber({
      identity, peer: { replica: peer.replica as ReplicaId, host: peer.host, port: peer.port }, log,
      vclock: () => this.#journal.tailVclock,
      onRecord: (record) => this.#enqueue(record),
      ack: () => ({ vclock: vclockMerge(this.#applied, vclockFromEntries([[this.#self, vclockGet(this.#journal.vclock, this.#self)]])), term: this.#term }),
    }));
    for (const subscriber of this.#subscribers) subscriber.start();
    this.#clients = new ClientServer(this, log);
    await this.#clients.listen(config.clientPort, config.clientHost);
    this.#timer = setInterval(() => this.#step({ kind: 'tick', nowMs: Date.now() }), Math.max(10, Math.min(100, config.synchroTimeoutMs / 10)));
    log.info({ role: this.isLeader ? 'leader' : 'follower', term: this.#term, vclock: this.#journal.vclock, peerPort: config.peerPort, clientPort: config.clientPort }, 'qsync node ready');
  }

  async stop(): Promise<void> {
    this.#stopping = true;
    if (this.#timer !== null) clearInterval(this.#timer);
    await this.#clients?.close();
    await Promise.all(this.#subscribers.map((s) => s.stop()));
    await this.#relay?.close();
    await this.#queue.catch(() => undefined);
    for (const [gid, waiter] of this.#waiters) waiter.reject(new QsyncError('OUTCOME_UNKNOWN', `node stopping before ${gid} was decided; ask for its outcome by idempotency key`));
    await Promise.all([...this.#pools.values(), this.#control].map((p) => p.end()));
    await this.#admin.end();
    await this.#journal.close();
  }

  // ---- records from peers ------------------------------------------------------

  /**
   * Take a record from a peer. Synchronously, in arrival order: drop a
   * duplicate, refuse an older term, and queue the journal append, so that a
   * burst shares one fsync. Apply runs in journal order behind it; the record
   * counts as applied (and is acknowledged) once both are done.
   */
  #enqueue(record: JournalRecord): Promise<void> {
    if (record.replica === this.#self || record.replica === REPLICA_LOCAL) return Promise.resolve();
    // A duplicate from another relay: done when everything before it is.
    if (record.lsn <= vclockGet(this.#journal.tailVclock, record.replica)) return this.#queue;
    if ((record.kind === 'txn' || record.kind === 'confirm' || record.kind === 'rollback') && record.term < this.#term) {
      this.log.error({ replica: record.replica, lsn: record.lsn, term: record.term, current: this.#term }, 'split-brain: record from an older term refused');
      return Promise.reject(new QsyncError('STALE_TERM', `record ${record.replica}:${record.lsn} has term ${record.term}, older than ${this.#term}`));
    }
    this.#clock = Math.max(this.#clock, record.time);
    const durable = this.#journal.append(record);
    durable.catch((error: unknown) => this.#fatal('journaling a record from a peer', error));
    const run = this.#queue.then(async () => {
      await this.#applyUntilDone(record);
      await durable;
      this.#applied = vclockFollow(this.#applied, record.replica, record.lsn);
    });
    this.#queue = run.catch(() => undefined);
    return run;
  }

  /**
   * A journaled record must reach PostgreSQL before anything after it: the
   * journal already holds it, so a peer will not send it again. Transient
   * failures (a deadlock with a local writer on an async table, a restarting
   * PostgreSQL) are retried with backoff; the queue waits, and acks stop.
   */
  async #applyUntilDone(record: JournalRecord): Promise<void> {
    for (let attempt = 1; ; attempt += 1) {
      try {
        if (this.#pgBroken) await this.#reconnect();
        await this.#apply(record);
        return;
      } catch (error) {
        if (error instanceof AssertionFailed || this.#stopping) throw error;
        this.#pgBroken = true; // whatever failed, the next attempt starts on fresh connections
        const delayMs = Math.min(5_000, 10 * 2 ** Math.min(attempt, 9));
        this.log[attempt < 4 ? 'info' : 'error']({ replica: record.replica, lsn: record.lsn, attempt, delayMs, err: (error as Error).message }, 'applying a record failed; retrying');
        await new Promise((r) => setTimeout(r, delayMs));
      }
    }
  }

  /** Apply one journaled record to PostgreSQL (DESIGN.md §5). Idempotent: replay runs it again after a crash. */
  async #apply(record: JournalRecord): Promise<void> {
    switch (record.kind) {
      case 'txn':
        if (record.changes.length > 0 || record.replica !== this.#self) {
          const outcome = await this.#applier.apply(record, { prepare: record.sync });
          if (record.sync && outcome !== 'applied') this.#prepared.add(record.gid);
        }
        return;
      case 'confirm':
        await this.#finish(commitPrepared, this.#preparedOf(record.owner, 1, record.confirmedLsn), (gid) => this.#prepared.delete(gid));
        return;
      case 'rollback':
        await this.#finish(rollbackPrepared, this.#preparedOf(record.owner, record.fromLsn, record.lsn - 1), (gid) => this.#prepared.delete(gid));
        return;
      case 'config':
        for (const [table, mode] of Object.entries(record.tables ?? {})) await setTableMode(this.#admin, table, mode);
        await this.#applier.reload();
        return;
      case 'promote':
      case 'demote':
      case 'raft':
        return; // elections arrive with the election work
    }
  }

  /** Mark the node's PostgreSQL connections broken when this one fails (a crashed or restarted server). */
  #watch(client: pg.ClientBase): void {
    client.on('error', () => {
      this.#pgBroken = true;
    });
    client.on('end', () => {
      if (!this.#stopping) this.#pgBroken = true;
    });
  }

  /** New admin and apply connections; throws while PostgreSQL is still down (the caller retries). */
  async #reconnect(): Promise<void> {
    const admin = await connectPg(this.config.pgUrl, this.log, () => undefined);
    const applier = await Applier.create(await connectPg(this.config.pgUrl, this.log, () => undefined));
    // Not awaited: end() on a connection that already died may never settle.
    void this.#admin.end().catch(() => undefined);
    void this.#applier.close().catch(() => undefined);
    this.#admin = admin;
    this.#applier = applier;
    this.#watch(admin);
    this.#watch(applier.client);
    this.#pgBroken = false;
    this.log.info('reconnected to PostgreSQL');
  }

  // ---- the limbo -----------------------------------------------------------------

  #step(event: LimboEvent): void {
    if (this.#limbo === null) return;
    const { state, actions } = limboStep(this.#limbo, event);
    this.#limbo = state;
    for (const action of actions) this.#act(action);
  }

  #act(action: LimboAction): void {
    switch (action.kind) {
      case 'confirm': {
        // A quorum holds these entries, so they are safe before CONFIRM is durable here: commit and
        // answer at once. (After a crash the journal lacks the CONFIRM; the entry is found committed.)
        const { durable } = this.#own.append((lsn) => ({ kind: 'confirm', replica: this.#self, lsn, term: this.#term, time: this.#now(), owner: this.#self, confirmedLsn: action.confirmedLsn }));
        void durable.then(() => this.#ownDurable()).catch((error: unknown) => this.#fatal('journaling CONFIRM', error));
        void this.#finish(commitPrepared, action.gids, (gid) => this.#settle(gid, null)).catch((error: unknown) => this.#fatal('confirming', error));
        return;
      }
      case 'rollback': {
        const { lsn, durable } = this.#own.append((l) => ({ kind: 'rollback', replica: this.#self, lsn: l, term: this.#term, time: this.#now(), owner: this.#self, fromLsn: action.fromLsn }));
        this.log.warn({ fromLsn: action.fromLsn, transactions: action.gids.length }, 'no quorum within the synchro timeout: rolling back');
        this.#rollingBack(action.gids);
        void durable.then(async () => {
          await this.#finish(rollbackPrepared, action.gids);
          this.#step({ kind: 'rollbackJournaled', fromLsn: action.fromLsn, recordLsn: lsn });
          this.#ownDurable();
        }).catch((error: unknown) => this.#fatal('rolling back', error));
        return;
      }
      case 'rolledBack':
        for (const gid of action.gids) this.#settle(gid, new QsyncError('ROLLED_BACK', `transaction ${gid} was rolled back: no quorum held it within ${this.config.synchroTimeoutMs} ms`));
        return;
      case 'unknown':
        for (const gid of action.gids) this.#settle(gid, new QsyncError('OUTCOME_UNKNOWN', `the outcome of ${gid} is not known; ask for it by idempotency key`));
        return;
      case 'full':
        this.#settle(action.gid, new QsyncError('OUTCOME_UNKNOWN', `the limbo was full when ${action.gid} arrived`));
    }
  }

  /**
   * Decide what the clients of rolled-back entries can be told. An entry no
   * peer ever received is certainly rolled back: from now on it is relayed
   * only as an empty TXN. The others are certain once a quorum holds the
   * ROLLBACK record (the limbo says rolledBack); failing that, unknown.
   */
  #rollingBack(gids: readonly string[]): void {
    const uncertain: string[] = [];
    for (const gid of gids) {
      const lsn = parseGid(this.config.clusterId, gid)?.lsn ?? 0;
      this.#withheld.add(lsn);
      if (lsn > this.#sentOwnLsn) this.#settle(gid, new QsyncError('ROLLED_BACK', `transaction ${gid} was rolled back: no quorum held it within ${this.config.synchroTimeoutMs} ms, and no peer received it`));
      else uncertain.push(gid);
    }
    if (uncertain.length === 0) return;
    setTimeout(() => {
      for (const gid of uncertain) this.#settle(gid, new QsyncError('OUTCOME_UNKNOWN', `transaction ${gid} was rolled back here, but a peer may hold it and no quorum confirmed the rollback; ask for its outcome by idempotency key`));
    }, this.config.synchroTimeoutMs).unref();
  }

  /** The prepared gids of `owner` with lsn in [from, to]; each leaves the set once it is finished. */
  #preparedOf(owner: ReplicaId, from: number, to: number): string[] {
    return [...this.#prepared].filter((gid) => {
      const entry = parseGid(this.config.clusterId, gid);
      return entry !== null && entry.replica === owner && entry.lsn >= from && entry.lsn <= to;
    });
  }

  /** COMMIT or ROLLBACK PREPARED the gids, several at once; `each` runs as each one finishes. */
  async #finish(verb: (client: pg.ClientBase, gid: string) => Promise<boolean>, gids: readonly string[], each?: (gid: string) => void): Promise<void> {
    let next = 0;
    const worker = async (): Promise<void> => {
      const client = await this.#control.connect();
      try {
        for (let i = next++; i < gids.length; i = next++) {
          const gid = gids[i] as string;
          await verb(client, gid);
          each?.(gid);
        }
      } finally {
        client.release();
      }
    };
    await Promise.all(Array.from({ length: Math.min(8, gids.length) }, worker));
  }

  #ownAppended(record: JournalRecord): void {
    if (record.kind === 'txn' && record.sync) this.#step({ kind: 'append', entry: { lsn: record.lsn, gid: record.gid, createdAtMs: Date.now() } });
  }

  #ownDurable(): void {
    this.#step({ kind: 'durable', lsn: vclockGet(this.#journal.vclock, this.#self) });
  }

  #settle(gid: string, error: QsyncError | null): void {
    const waiter = this.#waiters.get(gid);
    if (waiter === undefined) return;
    this.#waiters.delete(gid);
    if (error === null) waiter.resolve();
    else waiter.reject(error);
  }

  #fatal(what: string, error: unknown): void {
    this.log.fatal({ err: (error as Error).message }, `${what} failed; the node cannot go on safely`);
    process.exitCode = 1;
    void this.stop().finally(() => process.exit(1));
  }

  /** A hybrid clock: wall time, never behind anything seen, strictly increasing. */
  #now(): number {
    this.#clock = Math.max(this.#clock + 1, Date.now());
    return this.#clock;
  }

  // ---- clients -------------------------------------------------------------------

  /**
   * Check a client's role and password by connecting as it: PostgreSQL
   * itself decides. Its statements then run with exactly its privileges.
   */
  async authenticate(user: string, password: string): Promise<RoleSession> {
    const key = `${user}\0${createHash('sha256').update(password).digest('hex')}`;
    const existing = this.#pools.get(key);
    if (existing !== undefined) return { user, pool: existing };
    if (this.#pools.size >= ROLE_POOLS_MAX) throw new QsyncError('AUTH', `this node serves ${ROLE_POOLS_MAX} roles already`);
    const url = new URL(this.config.pgUrl);
    url.username = encodeURIComponent(user);
    url.password = encodeURIComponent(password);
    const pool = new pg.Pool({ connectionString: url.toString(), max: 16 });
    pool.on('error', (error) => this.log.warn({ user, err: error.message }, 'idle PostgreSQL connection failed'));
    try {
      await pool.query('SELECT 1');
    } catch (error) {
      await pool.end();
      const pgError = error as { code?: string; message?: string };
      throw new QsyncError('AUTH', `PostgreSQL refused role ${user}: ${pgError.message ?? String(error)}`, { sqlstate: pgError.code });
    }
    this.#pools.set(key, pool);
    return { user, pool };
  }

  /** One transaction, one round trip: run the statements, then commit through qsync. */
  async execute(session: RoleSession, statements: readonly Statement[], idempotencyKey: string | null, term: Term | null): Promise<unknown> {
    const results: Array<{ rows: unknown[]; rowCount: number }> = [];
    await this.#write(session, idempotencyKey, term, async (c) => {
      for (const s of statements) {
        const r = await c.query({ text: s.sql, values: [...s.params] });
        results.push({ rows: r.rows, rowCount: r.rowCount ?? 0 });
      }
    });
    return results;
  }

  /**
   * An interactive transaction: the client sends statements one by one, then
   * commit or rollback. It holds one PostgreSQL session until then.
   */
  begin(session: RoleSession, idempotencyKey: string | null, term: Term | null): Transaction {
    let connection: pg.ClientBase | null = null;
    let opened!: () => void;
    let failedToOpen!: (error: Error) => void;
    const open = new Promise<void>((resolve, reject) => {
      opened = resolve;
      failedToOpen = reject;
    });
    open.catch(() => undefined); // reported to the next query, if any
    let finished = false;
    let decide!: (commit: boolean) => void;
    const decided = new Promise<boolean>((resolve) => (decide = resolve));
    const finish = (commit: boolean): void => {
      finished = true;
      decide(commit);
    };
    const done = this.#write(session, idempotencyKey, term, async (c) => {
      connection = c;
      opened();
      if (!(await decided)) throw new QsyncError('ROLLED_BACK', 'rolled back by the client');
    });
    done.catch((error: unknown) => failedToOpen(error as Error));
    return {
      query: async (sql, params) => {
        await open;
        if (finished) throw new QsyncError('BAD_REQUEST', 'this transaction is finished');
        try {
          const r = await (connection as pg.ClientBase).query({ text: sql, values: [...params] });
          return { rows: r.rows, rowCount: r.rowCount ?? 0 };
        } catch (error) {
          finish(false);
          await done.catch(() => undefined);
          throw this.#clientError(error);
        }
      },
      commit: async () => {
        finish(true);
        await done;
      },
      rollback: async () => {
        finish(false);
        await done.catch((error: unknown) => {
          if (!(error instanceof QsyncError && error.code === 'ROLLED_BACK')) throw error;
        });
      },
    };
  }

  /**
   * The write path shared by execute and interactive transactions: run `body`
   * in a qsync transaction on the role's session, journal it in lsn order,
   * and for a sync transaction wait until the limbo decides it.
   */
  async #write(session: RoleSession, idempotencyKey: string | null, term: Term | null, body: (client: pg.ClientBase) => Promise<void>): Promise<void> {
    if (term !== null && term < this.#term) throw this.#notLeader('STALE_TERM', `stale term ${term} (current ${this.#term})`);
    if (this.isLeader && (this.#limbo?.entries.length ?? 0) + this.#beforeLimbo >= limits.limboEntriesMax) {
      throw new QsyncError('LIMBO_FULL', `the limbo holds ${limits.limboEntriesMax} transactions waiting for a quorum; retry later`);
    }
    const client = await session.pool.connect();
    let reserved: Lsn | null = null;
    let journaled = false;
    let waiting: Promise<void> | null = null;
    let counted = true;
    const uncount = (): void => {
      if (counted) this.#beforeLimbo -= 1;
      counted = false;
    };
    this.#beforeLimbo += 1;
    try {
      const outcome = await runLeaderWrite(client, {
        term: this.#term, replica: this.#self, idempotencyKey,
        // One time per write, read at capture: it stamps the async keys' versions and travels
        // in the TXN, so last-writer-wins compares the same value on every node.
        reserve: () => {
          const r = this.#own.reserve();
          reserved = r.lsn;
          return { ...r, time: this.#now() };
        },
        journal: async ({ lsn, gid, time, sync, changes }) => {
          journaled = true;
          uncount(); // from here on the limbo counts it
          if (sync) waiting = new Promise<void>((resolve, reject) => this.#waiters.set(gid, { resolve, reject }));
          await this.#own.submit({ kind: 'txn', replica: this.#self, lsn, term: this.#term, time, gid, sync, changes, idempotencyKey });
          this.#ownDurable();
        },
      }, body);
      // Nothing replicated was written: a plain local commit, and the lsn goes back.
      if (outcome.kind === 'empty') this.#own.release(outcome.lsn, this.#term, this.#now());
      if (waiting !== null) await waiting;
    } catch (error) {
      if (reserved !== null && !journaled) this.#own.release(reserved, this.#term, this.#now());
      throw this.#clientError(error);
    } finally {
      uncount();
      client.release();
    }
  }

  async query(session: RoleSession, sql: string, params: readonly unknown[], consistency: Consistency): Promise<unknown> {
    if (consistency === 'linearizable') {
      throw new QsyncError('BAD_REQUEST', 'linearizable reads need a read index, which comes with leader election; use leader (reads on the current leader) for now');
    }
    if (consistency === 'leader' && !this.isLeader) throw this.#notLeader('NOT_LEADER', `node ${this.config.replicaId} is not the leader; leader reads go to node ${this.config.leader}`);
    try {
      const r = await session.pool.query({ text: sql, values: [...params] });
      return { rows: r.rows, rowCount: r.rowCount ?? 0 };
    } catch (error) {
      throw this.#clientError(error);
    }
  }

  async outcome(idempotencyKey: string): Promise<unknown> {
    const { rows } = await this.#admin.query<{ replica_id: number; lsn: string }>('SELECT replica_id, lsn FROM qsync.idempotency WHERE key = $1', [idempotencyKey]);
    return rows[0] === undefined ? { committed: false } : { committed: true, replica: rows[0].replica_id, lsn: Number(rows[0].lsn) };
  }

  /**
   * Set a table's mode on every node: here first (checked as setTableMode
   * checks it), then through a CONFIG record that each node applies in
   * journal order. Only the leader does it, for a role that owns the table.
   */
  async setTableMode(session: RoleSession, table: string, mode: TableMode): Promise<unknown> {
    if (!this.isLeader) throw this.#notLeader('NOT_LEADER', `node ${this.config.replicaId} is not the leader; change table modes through node ${this.config.leader}`);
    const { rows } = await session.pool.query<{ owns: boolean | null }>(
      `SELECT pg_has_role(c.relowner, 'USAGE') AS owns FROM pg_class c WHERE c.oid = to_regclass($1)`, [table]);
    if (rows[0] !== undefined && rows[0].owns !== true) throw new QsyncError('PG_ERROR', `role ${session.user} does not own table ${table}; only its owner may change its mode`, { sqlstate: '42501' });
    const name = await setTableMode(this.#admin, table, mode);
    await this.#applier.reload();
    const { durable } = this.#own.append((lsn) => ({ kind: 'config', replica: this.#self, lsn, term: this.#term, time: this.#now(), tables: { [name]: mode } }));
    await durable;
    this.#ownDurable();
    return { table: name, mode };
  }

  #leaderAddress(): string | undefined {
    const leader = this.config.peers.find((p) => p.replica === this.config.leader);
    return leader?.client;
  }

  #notLeader(code: 'NOT_LEADER' | 'STALE_TERM', message: string): QsyncError {
    const leader = this.#leaderAddress();
    return new QsyncError(code, message, { term: this.#term, ...(leader === undefined ? {} : { leader }) });
  }

  #clientError(error: unknown): QsyncError {
    if (error instanceof QsyncError) return error;
    const pgError = error as { code?: string; message?: string };
    if (pgError.code === 'QS001') return this.#notLeader('NOT_LEADER', `node ${this.config.replicaId} is not the leader; write sync tables through node ${this.config.leader}`);
    if (pgError.code === 'QS002') return this.#notLeader('STALE_TERM', pgError.message ?? 'stale term');
    return new QsyncError('PG_ERROR', pgError.message ?? String(error), { sqlstate: pgError.code });
  }
}

/**
 * Bounds for the sidecar's own connections: a connection caught by a
 * PostgreSQL crash must fail, not wait forever (pg has no timeout by default).
 */
const PG_TIMEOUTS = { connectionTimeoutMillis: 10_000, query_timeout: 60_000 } as const;

/** A connected client whose errors are logged, never thrown at the event loop. */
async function connectPg(url: string, log: Logger, onError: () => void): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url, ...PG_TIMEOUTS });
  client.on('error', (error) => {
    log.warn({ err: error.message }, 'PostgreSQL connection failed');
    onError();
  });
  await client.connect();
  return client;
}
