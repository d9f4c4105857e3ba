// What a client of the client port asks of a node (client-server.ts's
// RequestHandler): sign in as a PostgreSQL role, run one-shot and interactive
// transactions through the write path, read, ask an outcome, change a table's
// mode or schema. Each role's statements run on a pool of its own, as that
// role; all the pools share one budget below PostgreSQL's max_connections.
// A one-shot transaction sent to a follower may be relayed to the leader.
import pg from 'pg';
import { createHash } from 'node:crypto';
import { connect as connectClient, QsyncClientError, type Db } from '../client/index.js';
import type { Consistency, Statement } from '../core/client-protocol.js';
import { QsyncError } from '../core/errors.js';
import type { TableMode } from '../core/record.js';
import type { Term } from '../core/types.js';
import type { Logger } from '../log.js';
import { queryAll, statementName } from '../postgres/index.js';
import { guardPool, type PgWork } from '../postgres/database.js';
import type { ClientSession, RequestHandler, Transaction } from './client-server.js';
import type { SidecarConfig } from './config.js';
import type { NodeDriver } from './driver.js';

/** A client authenticated as a PostgreSQL role; its statements run on that role's pool. */
export interface RoleSession extends ClientSession {
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

export class ClientRequests implements RequestHandler<RoleSession> {
  readonly #config: SidecarConfig;
  readonly #log: Logger;
  readonly #driver: NodeDriver<RoleSession, PgWork>;
  /** The fence refused a write under a stale term (a metric). */
  readonly #onStaleTerm: () => void;
  readonly #pools = new Map<string, pg.Pool>();
  /** PostgreSQL connections the role pools may still take (clientConnectionBudget, read from the server at start). */
  #clientConnectionsLeft: number;

  constructor(config: SidecarConfig, log: Logger, driver: NodeDriver<RoleSession, PgWork>, clientConnections: number, onStaleTerm: () => void) {
    this.#config = config;
    this.#log = log;
    this.#driver = driver;
    this.#clientConnectionsLeft = clientConnections;
    this.#onStaleTerm = onStaleTerm;
  }

  /** Close every role's pool. */
  async close(): Promise<void> {
    await Promise.all([...this.#pools.values()].map((p) => p.end()));
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
    const url = new URL(this.#config.pgUrl);
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
    const max = Math.min(this.#config.clientPoolConnections, this.#clientConnectionsLeft);
    if (max < 1) throw new QsyncError('AUTH', `this node's PostgreSQL connections for clients are all given to other roles (${this.#config.clientPoolConnections} each); raise max_connections, lower clientPoolConnections, or have clients share fewer roles`);
    this.#clientConnectionsLeft -= max;
    // Pipelining: a write's BEGIN and statements leave in one round trip (postgres/pipeline.ts).
    const pool = new pg.Pool({ connectionString: url.toString(), max, pipeline: true });
    guardPool(pool, this.#log, `role ${user}`);
    this.#pools.set(key, pool);
    return { user, password, pool };
  }

  /** One transaction, one round trip: run the statements, then commit through qsync. */
  async execute(session: RoleSession, statements: readonly Statement[], idempotencyKey: string | null, term: Term | null, forward = false): Promise<unknown> {
    if (forward) {
      await this.#driver.settled();
      if (!this.#driver.isLeader) return this.#forward(session, statements, idempotencyKey, term);
    }
    let results: Array<{ rows: unknown[]; rowCount: number }> = [];
    await this.#write(session, idempotencyKey, term, async (c) => {
      // Pipelined: the statements leave together, behind the write's BEGIN (postgres/pipeline.ts).
      // A change the connection ran before is not parsed and planned again (statementName).
      const answers = await queryAll(c, statements.map((s) => ({ name: statementName(c, s.sql), text: s.sql, values: [...s.params] })));
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
    if (leader === undefined) throw this.#driver.notLeader('NOT_LEADER', `node ${this.#config.replicaId} cannot forward: no leader is known (an election is under way); retry shortly`);
    let db: Db;
    try {
      db = await connectClient(leader, { user: session.user, password: session.password, leaderWaitMs: 0 });
    } catch (error) {
      throw this.#driver.notLeader('NOT_LEADER', `node ${this.#config.replicaId} could not reach the leader at ${leader} to forward: ${(error as Error).message}`);
    }
    try {
      return await db.execute(statements.map((s) => [s.sql, s.params] as const), { ...(idempotencyKey === null ? {} : { idempotencyKey }), ...(term === null ? {} : { term }), retries: 0 });
    } catch (error) {
      if (!(error instanceof QsyncClientError)) throw error;
      const known = ['NOT_LEADER', 'STALE_TERM', 'ROLLED_BACK', 'OUTCOME_UNKNOWN', 'LIMBO_FULL', 'PG_ERROR', 'AUTH'] as const;
      const code = known.find((c) => c === error.code) ?? 'OUTCOME_UNKNOWN';
      throw new QsyncError(code, `${error.message} (forwarded by node ${this.#config.replicaId} to ${leader})`, {
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
          throw this.clientError(error);
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
      throw this.clientError(error);
    }
  }

  async query(session: RoleSession, sql: string, params: readonly unknown[], consistency: Consistency): Promise<unknown> {
    if (consistency !== 'local' && !this.#driver.isLeader) throw this.#driver.notLeader('NOT_LEADER', `node ${this.#config.replicaId} is not the leader; ${consistency} reads go to ${this.#driver.leaderName()}`);
    // linearizable: only once a quorum confirmed, after the read arrived, that this node still leads (read-index.ts).
    if (consistency === 'linearizable') await this.readIndex();
    // A read runs in a READ ONLY transaction, as one statement (the extended protocol takes no more):
    // the read API cannot write, whatever the statement SETs.
    const client = await session.pool.connect().catch((error: unknown) => {
      throw this.clientError(error);
    });
    let open = false;
    let broken = false;
    try {
      await client.query('BEGIN READ ONLY');
      open = true;
      const r = await client.query({ text: sql, values: [...params], queryMode: 'extended' } as pg.QueryConfig);
      // DEALLOCATE is allowed in a read and no transaction undoes it: the connection lost what it kept
      // parsed for writes (pipeline.ts), so it is closed rather than given to one.
      if (r.command === 'DEALLOCATE') broken = true;
      await client.query('COMMIT');
      open = false;
      return { rows: r.rows, rowCount: r.rowCount ?? 0 };
    } catch (error) {
      // A connection that cannot even roll back is not given to the next read.
      if (open) await client.query('ROLLBACK').catch(() => (broken = true));
      throw this.clientError(error);
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
    if (!this.#driver.isLeader) throw this.#driver.notLeader('NOT_LEADER', `node ${this.#config.replicaId} is not the leader; change table modes through ${this.#driver.leaderName()}`);
    const { rows } = await session.pool.query<{ owns: boolean | null }>(
      `SELECT pg_has_role(c.relowner, 'USAGE') AS owns FROM pg_class c WHERE c.oid = to_regclass($1)`, [table]);
    if (rows[0] !== undefined && rows[0].owns !== true) throw new QsyncError('PG_ERROR', `role ${session.user} does not own table ${table}; only its owner may change its mode`, { sqlstate: '42501' });
    return this.#driver.setTableMode(table, mode);
  }

  /** A schema change on every node (driver.runDdl) as the session's role: PostgreSQL checks its privileges. */
  clientDdl(session: RoleSession, sql: string): Promise<unknown> {
    return this.#driver.runDdl(sql, session.user);
  }

  /** A failure as the client hears it: the fence's refusals as NOT_LEADER and STALE_TERM, PostgreSQL's errors with their SQLSTATE. */
  clientError(error: unknown): QsyncError {
    if (error instanceof QsyncError) return error;
    const pgError = error as { code?: string; message?: string };
    if (pgError.code === 'QS001') return this.#driver.notLeader('NOT_LEADER', `node ${this.#config.replicaId} is not the leader; write sync tables through ${this.#driver.leaderName()}`);
    if (pgError.code === 'QS002') {
      this.#onStaleTerm();
      return this.#driver.notLeader('STALE_TERM', pgError.message ?? 'stale term');
    }
    // Could not even connect: nothing was done here. Send the client on, as to a node that does not lead.
    if (pgError.code !== undefined && UNREACHABLE.has(pgError.code)) {
      this.#driver.postgresFailed(error);
      return this.#driver.notLeader('NOT_LEADER', `node ${this.#config.replicaId} cannot reach its PostgreSQL (${pgError.message ?? pgError.code}); nothing was done; send the transaction to ${this.#driver.leaderName()}`);
    }
    return new QsyncError('PG_ERROR', pgError.message ?? String(error), { sqlstate: pgError.code });
  }
}


/**
 * How many PostgreSQL connections the clients' role pools may hold in all:
 * the server's max_connections, less the slots it reserves for superusers
 * and for pg_use_reserved_connections, less the sidecar's own.
 */
export async function clientConnectionBudget(admin: pg.Client, poolConnections: number): Promise<number> {
  const { rows } = await admin.query<{ max: number; reserved: number }>(`
    SELECT current_setting('max_connections')::int AS max,
           current_setting('superuser_reserved_connections')::int + coalesce(nullif(current_setting('reserved_connections', true), '')::int, 0) AS reserved`);
  const { max, reserved } = rows[0] as { max: number; reserved: number };
  // At least one role's pool, however small the server: the first client role can always connect.
  return Math.max(poolConnections, max - reserved - OWN_CONNECTIONS_RESERVED);
}

/** Errors of a connection attempt to PostgreSQL (errno, or the server refusing sessions): the request never started. */
const UNREACHABLE = new Set(['ECONNREFUSED', 'ENOENT', 'EHOSTUNREACH', 'ETIMEDOUT', '57P03']);

