// The production sidecar: the node driver (driver.ts) given real parts (the
// journal's files, TCP peer links, PostgreSQL, the wall clock and timers),
// plus the client port and the admin HTTP interface in front of it.
//
// Start: open the journal; check and migrate PostgreSQL; mark the node a
// follower in qsync.node (the fence refuses sync writes until elected); then
// the driver recovers and serves.
import pg from 'pg';
import { randomInt, createHash } from 'node:crypto';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { Metrics } from '../admin/metrics.js';
import { adminRequest, AdminServer } from '../admin/server.js';
import { clusterView, type ClusterView } from '../admin/view.js';
import { RedisDiscovery } from '../discovery/redis.js';
import { connect as connectClient, QsyncClientError, type Db } from '../client/index.js';
import type { Consistency, Statement } from '../core/client-protocol.js';
import { QsyncError } from '../core/errors.js';
import { limits } from '../core/limits.js';
import type { MembershipChange } from '../core/membership.js';
import type { Member, TableMode } from '../core/record.js';
import type { ReplicaId, Term } from '../core/types.js';
import { Journal } from '../journal/index.js';
import type { Logger } from '../log.js';
import { loadPeerTls, loadSqlTls, type PeerTls } from '../net/tls.js';
import { TcpTransport } from '../net/transport.js';
import { checkServer, migrate, queryAll } from '../postgres/index.js';
import { guardPool, PgDatabase, type PgWork } from '../postgres/database.js';
import { parseVerifier } from '../front/auth.js';
import { targetOf } from '../front/backend.js';
import { SqlFront } from '../front/server.js';
import { ClientServer, type ClientSession, type RequestHandler, type Transaction } from './client-server.js';
import { JOINING_FILE, type SidecarConfig } from './config.js';
import { NodeDriver, type NodeStatus } from './driver.js';
import type { Clock, NodeEvent } from './io.js';

export type { NodeStatus } from './driver.js';

/** What POST /members and DELETE /members/:id answer: the node added or removed, and the members after. */
export interface JoinAnswer {
  readonly replica: number;
  readonly cluster: string;
  readonly version: number;
  readonly quorum: number;
  readonly members: readonly Member[];
}

/** The node's status as the admin interface shows it: the driver's, plus what only production has. */
export interface SidecarStatus extends NodeStatus {
  readonly cluster: string;
  readonly addresses: { readonly client: string; readonly admin: string | null; readonly peer: string };
  /** The last health probe of this node's PostgreSQL (every second): it answered, and its prepared transactions. */
  readonly postgres: { readonly reachable: boolean; readonly prepared: number | null; readonly error: string | null; readonly checkedAgoMs: number | null };
  readonly uptimeMs: number;
}

interface PostgresProbe {
  readonly reachable: boolean;
  readonly prepared: number | null;
  readonly error: string | null;
  readonly checkedAt: number | null;
}

/** How often the node probes its PostgreSQL for the status, health checks and metrics. */
const PROBE_EVERY_MS = 1_000;
/** How long a clean stop may take before the node gives up waiting (and the process exits). */
const STOP_GRACE_MS = 10_000;

/** A client authenticated as a PostgreSQL role; its statements run on that role's pool. */
interface RoleSession extends ClientSession {
  readonly pool: pg.Pool;
  /** Kept to relay forwarded transactions to the leader as the same role. */
  readonly password: string;
}

/** Distinct roles with a pool at once; a further one is refused until the node restarts. */
const ROLE_POOLS_MAX = 64;
/**
 * PostgreSQL connections kept out of the clients' budget: the sidecar's own
 * (admin, apply, COMMIT/ROLLBACK PREPARED, snapshots) and a few for an operator.
 */
const OWN_CONNECTIONS_RESERVED = 24;

/** The wall clock and Node's timers. */
export const systemClock: Clock = {
  nowMs: () => Date.now(),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
  every: (ms, fn) => {
    const timer = setInterval(fn, ms);
    return () => clearInterval(timer);
  },
  after: (ms, fn) => {
    // At once means on the next turn of the event loop, not after setTimeout's 1 ms floor.
    if (ms <= 0) setImmediate(fn).unref();
    else setTimeout(fn, ms).unref();
  },
};

export class SidecarNode implements RequestHandler<RoleSession> {
  readonly config: SidecarConfig;
  readonly log: Logger;
  readonly #driver: NodeDriver<RoleSession, PgWork>;
  readonly #journal: Journal;
  readonly #db: PgDatabase;
  readonly #pools = new Map<string, pg.Pool>();
  /** PostgreSQL connections the role pools may still take (read from the server at start). */
  #clientConnectionsLeft = 0;
  #clients: ClientServer | null = null;
  #sql: SqlFront | null = null;
  #adminServer: AdminServer | null = null;
  #discovery: RedisDiscovery | null = null;
  #stopped: Promise<void> | null = null;
  readonly #metrics: Metrics;
  readonly #startedAt = Date.now();
  #postgres: PostgresProbe = { reachable: true, prepared: null, error: null, checkedAt: null };
  #probeTimer: NodeJS.Timeout | null = null;

  private constructor(config: SidecarConfig, log: Logger, journal: Journal, db: PgDatabase, metrics: Metrics, tls: PeerTls | undefined) {
    this.config = config;
    this.log = log;
    this.#journal = journal;
    this.#db = db;
    this.#metrics = metrics;
    const identity = { cluster: config.clusterId, replica: config.replicaId as ReplicaId, secret: config.secret ?? `insecure:${config.clusterId}`, ...(tls === undefined ? {} : { tls }) };
    this.#driver = new NodeDriver({
      config, log, clock: systemClock, journal, db,
      transport: new TcpTransport({ identity, journal, log, listen: { host: config.peerHost, port: config.peerPort }, peers: config.peers, onRefused: (port, reason) => metrics.refused(port, reason) }),
      seed: randomInt(1, 2 ** 32 - 1),
      observe: (event) => this.#observe(event),
      ...(existsSync(join(config.dataDir, JOINING_FILE)) ? { joining: { done: () => rmSync(join(config.dataDir, JOINING_FILE), { force: true }) } } : {}),
      onFatal: () => {
        process.exitCode = 1;
        void this.stop().finally(() => process.exit(1));
      },
    });
  }

  /**
   * Open, check, recover and serve. `logContext` receives what every log line
   * should carry (term and role), as soon as the journal knows the term.
   */
  static async start(config: SidecarConfig, log: Logger, logContext: (context: () => Record<string, unknown>) => void = () => undefined): Promise<SidecarNode> {
    // The TLS files first: a wrong path or an open key fails before anything is opened.
    const tls = config.peerTlsCert === undefined || config.peerTlsKey === undefined || config.peerTlsCa === undefined ? undefined
      : loadPeerTls({ cert: config.peerTlsCert, key: config.peerTlsKey, ca: config.peerTlsCa });
    let created: SidecarNode | null = null;
    const metrics = new Metrics(() => (created as SidecarNode).status(), { cluster: config.clusterId, replica: config.replicaId });
    const journal = await Journal.open({ dir: config.dataDir, segmentBytesMax: config.journalSegmentBytes, onBatch: (b) => metrics.journalBatch(b.records, b.ms) });
    logContext(() => ({ term: journal.raft?.term ?? 0, role: 'starting' }));
    for (const cut of journal.recovery.cuts) log.error({ cut }, 'journal tail was cut at recovery');
    const db = await PgDatabase.connect(config.pgUrl, config.clusterId, log, async (admin) => {
      await checkServer(admin, { preparedNeeded: limits.limboEntriesMax });
      await migrate(admin);
      // Follower until elected: the fence refuses sync writes here from the first moment.
      await admin.query(`UPDATE qsync.node SET replica_id = $1, cluster_id = $2, term = $3, role = 'follower', leader_id = 0, leader_address = ''`, [config.replicaId, config.clusterId, journal.raft?.term ?? 0]);
    });
    const node = new SidecarNode(config, log, journal, db, metrics, tls);
    created = node;
    node.#clientConnectionsLeft = await clientConnectionBudget(db.admin, config.clientPoolConnections);
    logContext(() => node.logContext());
    await node.#driver.start();
    await node.#probe();
    node.#probeTimer = setInterval(() => void node.#probe(), PROBE_EVERY_MS);
    node.#probeTimer.unref();
    node.#clients = new ClientServer(node, log, (port, reason) => metrics.refused(port, reason));
    await node.#clients.listen(config.clientPort, config.clientHost);
    if (config.sqlPort !== undefined) {
      node.#sql = node.#sqlFront(metrics);
      await node.#sql.listen(config.sqlPort, config.sqlHost);
    }
    if (config.adminPort !== undefined) {
      node.#adminServer = new AdminServer(node, config.adminToken, log);
      await node.#adminServer.listen(config.adminPort, config.adminHost);
    }
    if (config.redisUrl !== undefined) {
      node.#discovery = new RedisDiscovery({
        url: config.redisUrl, cluster: config.clusterId, replica: config.replicaId, intervalMs: config.redisStatusIntervalMs, log,
        status: () => {
          const s = node.status();
          return {
            replica: s.replica, term: s.term, role: s.role, writable: s.writable, leader: s.leader, client: s.addresses.client, admin: s.addresses.admin,
            limbo: s.limbo.pending, postgres: s.postgres.reachable, at: Date.now(),
          };
        },
      });
    }
    log.info({ mode: config.electionMode, term: node.#driver.term, vclock: journal.vclock, peerPort: config.peerPort, clientPort: config.clientPort }, 'qsync node ready');
    return node;
  }

  /**
   * Stop serving and release everything, in order. Bounded: a step that
   * waits on something that does not come (an apply blocked in PostgreSQL, a
   * request that does not end) is given up after STOP_GRACE_MS, named in the
   * log, and the process may exit: what was acknowledged is in the journal,
   * and the next start replays it.
   */
  stop(): Promise<void> {
    this.#stopped ??= (async () => {
      let step = 'client port';
      const steps = (async () => {
        if (this.#probeTimer !== null) clearInterval(this.#probeTimer);
        await this.#clients?.close();
        step = 'SQL port';
        await this.#sql?.close();
        step = 'admin interface';
        await this.#adminServer?.close();
        step = 'Redis';
        await this.#discovery?.close();
        step = 'peer links and the apply queue';
        await this.#driver.stop();
        step = 'PostgreSQL connections';
        await Promise.all([...this.#pools.values()].map((p) => p.end()));
        await this.#db.close();
        step = 'journal';
        await this.#journal.close();
      })();
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), STOP_GRACE_MS)));
      const outcome = await Promise.race([steps.then(() => 'done' as const), late]);
      clearTimeout(timer);
      if (outcome === 'late') this.log.error({ step, graceMs: STOP_GRACE_MS }, `stopping took longer than ${STOP_GRACE_MS} ms at: ${step}; stopping anyway (the journal holds everything acknowledged; the next start replays it)`);
    })();
    return this.#stopped;
  }

  /** Accepting sync writes: elected, and its PROMOTE is held by a quorum. */
  get isLeader(): boolean {
    return this.#driver.isLeader;
  }

  status(): SidecarStatus {
    const c = this.config;
    const pgState = this.#postgres;
    return {
      ...this.#driver.status(), cluster: c.clusterId,
      addresses: { client: `${c.clientHost}:${c.clientPort}`, admin: c.adminPort === undefined ? null : `${c.adminHost}:${c.adminPort}`, peer: `${c.peerHost}:${c.peerPort}` },
      postgres: { reachable: pgState.reachable, prepared: pgState.prepared, error: pgState.error, checkedAgoMs: pgState.checkedAt === null ? null : Date.now() - pgState.checkedAt },
      uptimeMs: Date.now() - this.#startedAt,
    };
  }

  /** What every log line carries besides the node: its term and role. */
  logContext(): { term: number; role: string } {
    return this.#driver.logContext();
  }

  cluster(): Promise<ClusterView> {
    const self = this.config.replicaId;
    return clusterView(this.status(), this.#driver.membership.members.filter((m) => m.replica !== self), (admin) => adminRequest<SidecarStatus>(admin, 'GET', '/status', { timeoutMs: 1_000 }));
  }

  tables(): Promise<Array<{ table: string; mode: TableMode }>> {
    return this.#db.tables();
  }

  /** A schema change on every node, for the admin interface (its token is the authority; the leader only). */
  runDdl(sql: string): Promise<{ lsn: number }> {
    return this.#driver.runDdl(sql);
  }

  /** Add a node (leader only): the replica id it takes and the members, for qsync join. */
  addMember(member: { address: string; client?: string; admin?: string }): Promise<JoinAnswer> {
    return this.#changeMembers({ kind: 'add', member });
  }

  removeMember(replica: ReplicaId): Promise<JoinAnswer> {
    return this.#changeMembers({ kind: 'remove', replica });
  }

  async #changeMembers(change: MembershipChange): Promise<JoinAnswer> {
    const { membership, replica } = await this.#driver.changeMembers(change);
    return { replica, cluster: this.config.clusterId, version: membership.version, quorum: membership.quorum, members: membership.members };
  }

  changeTableMode(table: string, mode: TableMode): Promise<{ table: string; mode: TableMode; copiedRows: number }> {
    return this.#driver.setTableMode(table, mode);
  }

  async metrics(): Promise<{ contentType: string; text: string }> {
    return { contentType: this.#metrics.contentType, text: await this.#metrics.text() };
  }

  #observe(event: NodeEvent): void {
    this.#metrics.observe(event);
    this.#discovery?.observe(event);
  }

  /** Probe PostgreSQL; a change of reachability is one log line. */
  async #probe(): Promise<void> {
    let next: PostgresProbe;
    try {
      const { prepared } = await this.#db.probe(PROBE_EVERY_MS);
      next = { reachable: true, prepared, error: null, checkedAt: Date.now() };
    } catch (error) {
      next = { reachable: false, prepared: null, error: (error as Error).message, checkedAt: Date.now() };
    }
    if (next.reachable !== this.#postgres.reachable) {
      if (next.reachable) this.log.info('PostgreSQL answers again');
      else this.log.warn({ err: next.error }, 'PostgreSQL does not answer the health probe');
    }
    this.#postgres = next;
  }

  promote(): Promise<NodeStatus> {
    return this.#driver.promote();
  }

  demote(): NodeStatus {
    return this.#driver.demote();
  }

  rejoin(): NodeStatus {
    return this.#driver.allowRejoin();
  }

  transfer(to: ReplicaId): Promise<NodeStatus> {
    return this.#driver.transfer(to);
  }

  // ---- clients -------------------------------------------------------------------

  /** The SQL port (front/server.ts): sessions as the clients' own roles, their COMMITs through the write path. */
  #sqlFront(metrics: Metrics): SqlFront {
    const driver = this.#driver;
    return new SqlFront({
      log: this.log,
      target: targetOf(this.config.pgUrl),
      tls: this.config.sqlTlsCert === undefined || this.config.sqlTlsKey === undefined ? null : loadSqlTls({ cert: this.config.sqlTlsCert, key: this.config.sqlTlsKey }),
      term: () => driver.term,
      isLeader: () => driver.isLeader,
      leaderSql: () => this.#leaderSql(),
      captureKey: () => this.#db.captureKey,
      readIndex: () => this.readIndex(),
      verifier: async (role) => parseVerifier(await this.#db.roleVerifier(role)),
      commit: async (open, term, idempotencyKey) => {
        try {
          await driver.commitOpen(open, null, idempotencyKey, term);
        } catch (error) {
          throw this.#clientError(error);
        }
      },
    }, (port, reason) => metrics.refused(port, reason));
  }

  /** The leader's SQL address, as this node knows it (its own, or from --peers). */
  #leaderSql(): string | null {
    const leader = this.#driver.status().leader;
    if (leader === null) return null;
    if (leader === this.config.replicaId) return this.config.sqlPort === undefined ? null : `${this.config.sqlHost}:${this.config.sqlPort}`;
    return this.config.peers.find((p) => p.replica === leader)?.sql ?? null;
  }

  /**
   * Check a client's role and password by connecting as it: PostgreSQL
   * itself decides. Its statements then run with exactly its privileges.
   */
  async authenticate(user: string, password: string): Promise<RoleSession> {
    const key = `${user}\0${createHash('sha256').update(password).digest('hex')}`;
    const existing = this.#pools.get(key);
    if (existing !== undefined) return { user, password, pool: existing };
    if (this.#pools.size >= ROLE_POOLS_MAX) throw new QsyncError('AUTH', `this node serves ${ROLE_POOLS_MAX} roles already`);
    const url = new URL(this.config.pgUrl);
    url.username = encodeURIComponent(user);
    url.password = encodeURIComponent(password);
    // The login is checked on one connection of its own: a refused one holds nothing after it.
    const check = new pg.Client({ connectionString: url.toString(), connectionTimeoutMillis: 10_000 });
    check.on('error', () => undefined);
    try {
      await check.connect();
    } catch (error) {
      const pgError = error as { code?: string; message?: string };
      throw new QsyncError('AUTH', `PostgreSQL refused role ${user}: ${pgError.message ?? String(error)}`, { sqlstate: pgError.code });
    } finally {
      await check.end().catch(() => undefined);
    }
    const again = this.#pools.get(key);
    if (again !== undefined) return { user, password, pool: again };
    // Every pool's connections come out of one budget below PostgreSQL's max_connections, so that
    // clients can never take the connections qsync itself needs.
    const max = Math.min(this.config.clientPoolConnections, this.#clientConnectionsLeft);
    if (max < 1) throw new QsyncError('AUTH', `this node's PostgreSQL connections for clients are all given to other roles (${this.config.clientPoolConnections} each); raise max_connections, lower clientPoolConnections, or have clients share fewer roles`);
    this.#clientConnectionsLeft -= max;
    // Pipelining: a write's BEGIN and statements leave in one round trip (postgres/pipeline.ts).
    const pool = new pg.Pool({ connectionString: url.toString(), max, pipeline: true });
    guardPool(pool, this.log, `role ${user}`);
    this.#pools.set(key, pool);
    return { user, password, pool };
  }

  /** One transaction, one round trip: run the statements, then commit through qsync. */
  async execute(session: RoleSession, statements: readonly Statement[], idempotencyKey: string | null, term: Term | null, forward = false): Promise<unknown> {
    if (forward) {
      await this.#driver.settled();
      if (!this.isLeader) return this.#forward(session, statements, idempotencyKey, term);
    }
    let results: Array<{ rows: unknown[]; rowCount: number }> = [];
    await this.#write(session, idempotencyKey, term, async (c) => {
      // Pipelined: the statements leave together, behind the write's BEGIN (postgres/pipeline.ts).
      const answers = await queryAll(c, statements.map((s) => ({ text: s.sql, values: [...s.params] })));
      results = answers.map((r) => ({ rows: r.rows, rowCount: r.rowCount ?? 0 }));
    });
    return results;
  }

  /**
   * Relay a one-shot transaction to the leader as the session's role, over
   * the client protocol (as OVS raft relays commands), and its answer back:
   * errors keep their code, so the client sees what the leader said.
   */
  async #forward(session: RoleSession, statements: readonly Statement[], idempotencyKey: string | null, term: Term | null): Promise<unknown> {
    const leader = this.#driver.leaderAddress();
    if (leader === undefined) throw this.#driver.notLeader('NOT_LEADER', `node ${this.config.replicaId} cannot forward: no leader is known (an election is under way); retry shortly`);
    let db: Db;
    try {
      db = await connectClient(leader, { user: session.user, password: session.password, leaderWaitMs: 0 });
    } catch (error) {
      throw this.#driver.notLeader('NOT_LEADER', `node ${this.config.replicaId} could not reach the leader at ${leader} to forward: ${(error as Error).message}`);
    }
    try {
      return await db.execute(statements.map((s) => [s.sql, s.params] as const), { ...(idempotencyKey === null ? {} : { idempotencyKey }), ...(term === null ? {} : { term }), retries: 0 });
    } catch (error) {
      if (!(error instanceof QsyncClientError)) throw error;
      const known = ['NOT_LEADER', 'STALE_TERM', 'ROLLED_BACK', 'OUTCOME_UNKNOWN', 'LIMBO_FULL', 'PG_ERROR', 'AUTH'] as const;
      const code = known.find((c) => c === error.code) ?? 'OUTCOME_UNKNOWN';
      throw new QsyncError(code, `${error.message} (forwarded by node ${this.config.replicaId} to ${leader})`, {
        ...(error.sqlstate === undefined ? {} : { sqlstate: error.sqlstate }), ...(error.leader === undefined ? {} : { leader: error.leader }), ...(error.term === undefined ? {} : { term: error.term }),
      });
    } finally {
      db.close();
    }
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

  /** The write path shared by execute and interactive transactions; errors reach the client typed. */
  async #write(session: RoleSession, idempotencyKey: string | null, term: Term | null, work: PgWork): Promise<void> {
    try {
      await this.#driver.write(session, idempotencyKey, term, work);
    } catch (error) {
      throw this.#clientError(error);
    }
  }

  async query(session: RoleSession, sql: string, params: readonly unknown[], consistency: Consistency): Promise<unknown> {
    if (consistency !== 'local' && !this.isLeader) throw this.#driver.notLeader('NOT_LEADER', `node ${this.config.replicaId} is not the leader; ${consistency} reads go to ${this.#driver.leaderName()}`);
    // linearizable: only once a quorum confirmed, after the read arrived, that this node still leads (read-index.ts).
    if (consistency === 'linearizable') await this.readIndex();
    // A read runs in a READ ONLY transaction, as one statement (the extended protocol takes no more):
    // the read API cannot write, whatever the statement SETs.
    const client = await session.pool.connect().catch((error: unknown) => {
      throw this.#clientError(error);
    });
    let open = false;
    let broken = false;
    try {
      await client.query('BEGIN READ ONLY');
      open = true;
      const r = await client.query({ text: sql, values: [...params], queryMode: 'extended' } as pg.QueryConfig);
      await client.query('COMMIT');
      open = false;
      return { rows: r.rows, rowCount: r.rowCount ?? 0 };
    } catch (error) {
      // A connection that cannot even roll back is not given to the next read.
      if (open) await client.query('ROLLBACK').catch(() => (broken = true));
      throw this.#clientError(error);
    } finally {
      client.release(broken);
    }
  }

  /** Resolves when a linearizable read may run here (driver.readIndex); NOT_LEADER, with the leader's address, when not. */
  async readIndex(): Promise<void> {
    try {
      await this.#driver.readIndex();
    } catch (error) {
      if (error instanceof QsyncError && error.code === 'NOT_LEADER') throw this.#driver.notLeader('NOT_LEADER', error.message);
      throw error;
    }
  }

  outcome(idempotencyKey: string): Promise<unknown> {
    return this.#driver.outcome(idempotencyKey);
  }

  /**
   * Set a table's mode on every node (driver.setTableMode), for a role that
   * owns the table; only the leader does it.
   */
  async setTableMode(session: RoleSession, table: string, mode: TableMode): Promise<unknown> {
    if (!this.isLeader) throw this.#driver.notLeader('NOT_LEADER', `node ${this.config.replicaId} is not the leader; change table modes through ${this.#driver.leaderName()}`);
    const { rows } = await session.pool.query<{ owns: boolean | null }>(
      `SELECT pg_has_role(c.relowner, 'USAGE') AS owns FROM pg_class c WHERE c.oid = to_regclass($1)`, [table]);
    if (rows[0] !== undefined && rows[0].owns !== true) throw new QsyncError('PG_ERROR', `role ${session.user} does not own table ${table}; only its owner may change its mode`, { sqlstate: '42501' });
    return this.#driver.setTableMode(table, mode);
  }

  /** A schema change on every node (driver.runDdl) as the session's role: PostgreSQL checks its privileges. */
  clientDdl(session: RoleSession, sql: string): Promise<unknown> {
    return this.#driver.runDdl(sql, session.user);
  }

  #clientError(error: unknown): QsyncError {
    if (error instanceof QsyncError) return error;
    const pgError = error as { code?: string; message?: string };
    if (pgError.code === 'QS001') return this.#driver.notLeader('NOT_LEADER', `node ${this.config.replicaId} is not the leader; write sync tables through ${this.#driver.leaderName()}`);
    if (pgError.code === 'QS002') {
      this.#metrics.fenceStaleTerm();
      return this.#driver.notLeader('STALE_TERM', pgError.message ?? 'stale term');
    }
    // Could not even connect: nothing was done here. Send the client on, as to a node that does not lead.
    if (pgError.code !== undefined && UNREACHABLE.has(pgError.code)) {
      this.#driver.postgresFailed(error);
      return this.#driver.notLeader('NOT_LEADER', `node ${this.config.replicaId} cannot reach its PostgreSQL (${pgError.message ?? pgError.code}); nothing was done; send the transaction to ${this.#driver.leaderName()}`);
    }
    return new QsyncError('PG_ERROR', pgError.message ?? String(error), { sqlstate: pgError.code });
  }
}

/**
 * How many PostgreSQL connections the clients' role pools may hold in all:
 * the server's max_connections, less the slots it reserves for superusers
 * and for pg_use_reserved_connections, less the sidecar's own.
 */
async function clientConnectionBudget(admin: pg.Client, poolConnections: number): Promise<number> {
  const { rows } = await admin.query<{ max: number; reserved: number }>(`
    SELECT current_setting('max_connections')::int AS max,
           current_setting('superuser_reserved_connections')::int + coalesce(nullif(current_setting('reserved_connections', true), '')::int, 0) AS reserved`);
  const { max, reserved } = rows[0] as { max: number; reserved: number };
  // At least one role's pool, however small the server: the first client role can always connect.
  return Math.max(poolConnections, max - reserved - OWN_CONNECTIONS_RESERVED);
}

/** Errors of a connection attempt to PostgreSQL (errno, or the server refusing sessions): the request never started. */
const UNREACHABLE = new Set(['ECONNREFUSED', 'ENOENT', 'EHOSTUNREACH', 'ETIMEDOUT', '57P03']);

