// The production sidecar: the node driver (driver.ts) given real parts (the
// journal's files, TCP peer links, PostgreSQL, the wall clock and timers),
// plus what stands in front of it: the client port (its requests:
// client-requests.ts), the SQL port, the admin HTTP interface, discovery.
//
// Start: open the journal; check and migrate PostgreSQL; mark the node a
// follower in qsync.node (the fence refuses sync writes until elected); then
// the driver recovers and serves.
import { randomInt } from 'node:crypto';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { Metrics } from '../admin/metrics.js';
import { adminRequest, AdminServer } from '../admin/server.js';
import { clusterView, type ClusterView } from '../admin/view.js';
import { RedisDiscovery } from '../discovery/redis.js';
import { limits } from '../core/limits.js';
import type { MembershipChange } from '../core/membership.js';
import type { TableMode } from '../core/record.js';
import type { ReplicaId } from '../core/types.js';
import { Journal } from '../journal/index.js';
import type { Logger } from '../log.js';
import { loadPeerTls, loadSqlTls, type PeerTls } from '../net/tls.js';
import { TcpTransport } from '../net/transport.js';
import { checkServer, migrate } from '../postgres/index.js';
import { PgDatabase, type PgWork } from '../postgres/database.js';
import { parseVerifier } from '../front/auth.js';
import { targetOf } from '../front/backend.js';
import { SqlFront } from '../front/server.js';
import { ClientRequests, clientConnectionBudget, type RoleSession } from './client-requests.js';
import { ClientServer } from './client-server.js';
import { JOINING_FILE, type SidecarConfig } from './config.js';
import { NodeDriver } from './driver.js';
import type { Clock, NodeEvent } from './io.js';
import type { JoinAnswer, NodeStatus, SidecarStatus } from './status.js';

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

export class SidecarNode {
  readonly config: SidecarConfig;
  readonly log: Logger;
  readonly #driver: NodeDriver<RoleSession, PgWork>;
  readonly #journal: Journal;
  readonly #db: PgDatabase;
  /** What clients of the client port ask (and the SQL port's COMMITs and linearizable reads). */
  #requests: ClientRequests | null = null;
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
    const requests = new ClientRequests(config, log, node.#driver, await clientConnectionBudget(db.admin, config.clientPoolConnections), () => metrics.fenceStaleTerm());
    node.#requests = requests;
    logContext(() => node.logContext());
    await node.#driver.start();
    await node.#probe();
    node.#probeTimer = setInterval(() => void node.#probe(), PROBE_EVERY_MS);
    node.#probeTimer.unref();
    node.#clients = new ClientServer(requests, log, (port, reason) => metrics.refused(port, reason));
    await node.#clients.listen(config.clientPort, config.clientHost);
    if (config.sqlPort !== undefined) {
      node.#sql = node.#sqlFront(requests, metrics);
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
        await this.#requests?.close();
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
  #sqlFront(requests: ClientRequests, metrics: Metrics): SqlFront {
    const driver = this.#driver;
    return new SqlFront({
      log: this.log,
      target: targetOf(this.config.pgUrl),
      tls: this.config.sqlTlsCert === undefined || this.config.sqlTlsKey === undefined ? null : loadSqlTls({ cert: this.config.sqlTlsCert, key: this.config.sqlTlsKey }),
      term: () => driver.term,
      isLeader: () => driver.isLeader,
      leaderSql: () => this.#leaderSql(),
      captureKey: () => this.#db.captureKey,
      readIndex: () => requests.readIndex(),
      verifier: async (role) => parseVerifier(await this.#db.roleVerifier(role)),
      commit: async (open, term, idempotencyKey) => {
        try {
          await driver.commitOpen(open, null, idempotencyKey, term);
        } catch (error) {
          throw requests.clientError(error);
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
}
