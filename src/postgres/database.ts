// This node's PostgreSQL as the driver sees it (sidecar/io.ts Database): the
// admin and apply connections, a pool for COMMIT/ROLLBACK PREPARED, and the
// reconnection after PostgreSQL crashed or restarted. A failed call marks the
// connections broken; the next call reconnects first (the driver retries).
import pg from 'pg';
import { QsyncError } from '../core/errors.js';
import type { JournalRecord, TableMode, TxnRecord } from '../core/record.js';
import type { Lsn, ReplicaId } from '../core/types.js';
import type { VClock } from '../core/vclock.js';
import type { Logger } from '../log.js';
import type { Database, NodeRow } from '../sidecar/io.js';
import { Applier, appliedLsns, appliedVclock, compactApplied, type ApplyOutcome } from './apply.js';
import { readCaptureKey } from './capture.js';
import { corkWrites } from './cork.js';
import { PgLeaderTransaction, type LeaderTransaction, type PgWork, type WriteOpening } from './leader.js';
import { keptStatementsLost } from './pipeline.js';
import { loadSnapshot, readSnapshot, type SnapshotLoad, type SnapshotPart, type SnapshotTable } from './snapshot.js';
import { runDdl, setTableMode, type TableModeChange, type TableModeOptions } from './tables.js';
import { finishPipelined, listPrepared, type PreparedEntry } from './twophase.js';

/** A client session: the pool of the role it authenticated as. */
export interface PgSession {
  readonly pool: pg.Pool;
}

export type { PgWork } from './leader.js';

/**
 * Bounds for the sidecar's own connections: a connection caught by a
 * PostgreSQL crash must fail, not wait forever (pg has no timeout by default).
 */
const PG_TIMEOUTS = { connectionTimeoutMillis: 10_000, query_timeout: 60_000 } as const;

/** COMMIT/ROLLBACK PREPARED run on this many connections at once, so PostgreSQL group-commits them. */
const FINISH_PARALLEL = 8;

export class PgDatabase implements Database<PgSession, PgWork> {
  readonly #url: string;
  readonly #cluster: string;
  readonly #log: Logger;
  /** Proves to PostgreSQL that this sidecar takes a write's changes (the third fence, migrations/0003). */
  readonly #captureKey: string;
  #admin: pg.Client;
  #applier: Applier;
  /** Connections for COMMIT/ROLLBACK PREPARED, run in parallel so PostgreSQL group-commits them. */
  readonly #control: pg.Pool;
  /** Set when a PostgreSQL connection failed: the next call reconnects first. */
  #broken = false;
  #closing = false;
  readonly #lost = new Set<() => void>();
  /** The listeners heard of the current connections' loss already. */
  #lostTold = false;

  private constructor(url: string, cluster: string, log: Logger, admin: pg.Client, applier: Applier, captureKey: string) {
    this.#url = url;
    this.#captureKey = captureKey;
    this.#cluster = cluster;
    this.#log = log;
    this.#admin = admin;
    this.#applier = applier;
    // COMMIT/ROLLBACK PREPARED here follow a CONFIRM or ROLLBACK (or a quorum) that the journal
    // holds: replay repeats them after a crash, so they need not wait for their own WAL flush.
    this.#control = new pg.Pool({ connectionString: url, max: FINISH_PARALLEL, options: '-c synchronous_commit=off', pipeline: true, ...PG_TIMEOUTS });
    guardPool(this.#control, log, 'control');
    this.#watch(admin);
    this.#watch(applier.client);
  }

  /** Connect; `prepare` runs on the admin connection first (checks, migrations, the node row). */
  static async connect(url: string, cluster: string, log: Logger, prepare: (admin: pg.Client) => Promise<void>): Promise<PgDatabase> {
    const admin = await connectPg(url, log);
    try {
      await prepare(admin);
      const captureKey = await readCaptureKey(admin);
      return new PgDatabase(url, cluster, log, admin, await Applier.create(await connectPg(url, log)), captureKey);
    } catch (error) {
      await admin.end().catch(() => undefined);
      throw error;
    }
  }

  /** The admin connection, for what only production does (the session's pool checks a table's owner). */
  get admin(): pg.Client {
    return this.#admin;
  }

  listPrepared(): Promise<PreparedEntry[]> {
    return this.#guarded(() => listPrepared(this.#admin, this.#cluster));
  }

  appliedVclock(): Promise<VClock> {
    return this.#guarded(() => appliedVclock(this.#admin));
  }

  appliedLsns(replica: ReplicaId, above: Lsn): Promise<ReadonlySet<Lsn>> {
    return this.#guarded(() => appliedLsns(this.#admin, replica, above));
  }

  onLost(listener: () => void): void {
    this.#lost.add(listener);
  }

  apply(record: JournalRecord & { kind: 'txn' }, options: { prepare: boolean; exact?: boolean }): Promise<ApplyOutcome> {
    return this.#guarded(() => this.#applier.apply(record, options));
  }

  async applyBatch(records: readonly TxnRecord[], options: { exactTo: VClock; checked: boolean }): Promise<void> {
    await this.#guarded(() => this.#applier.applyBatch(records, options.exactTo, options.checked));
  }

  unfit(record: TxnRecord): string | null {
    return this.#applier.unfit(record);
  }

  reloadTables(): Promise<void> {
    return this.#guarded(() => this.#applier.reload());
  }

  release(gids: readonly string[]): Promise<void> {
    return this.finish('rollback', gids);
  }

  finish(verb: 'commit' | 'rollback', gids: readonly string[], each?: (gid: string, finished: boolean) => void): Promise<void> {
    return this.#guarded(async () => {
      // Spread over up to FINISH_PARALLEL connections, so that PostgreSQL group-commits them, and on each
      // pipelined: its share leaves in one write and comes back in one read (RFC 0022).
      const shares = Array.from({ length: Math.min(FINISH_PARALLEL, gids.length) }, (_, i) => gids.filter((_gid, j) => j % FINISH_PARALLEL === i));
      await Promise.all(shares.map(async (share) => {
        const client = await this.#control.connect();
        try {
          await finishPipelined(client, verb, share, each);
        } finally {
          client.release();
        }
      }));
    });
  }

  setTableMode(table: string, mode: TableMode, options?: TableModeOptions): Promise<TableModeChange> {
    return this.#guarded(async () => {
      const change = await setTableMode(this.#admin, table, mode, options);
      await this.#applier.reload();
      return change;
    });
  }

  runDdl(sql: string, replica: ReplicaId, lsn: Lsn | (() => Lsn), role?: string): Promise<{ readonly applied: boolean; readonly lsn: Lsn }> {
    return this.#guarded(async () => {
      const done = await runDdl(this.#admin, sql, replica, lsn, role);
      await this.#applier.reload();
      return done;
    });
  }

  /**
   * Drop the applied marks at or below `below` (each replica's highest
   * stays: it is the applied vclock) in a transaction that waits for its WAL
   * flush, so everything committed before it is durable when it returns.
   */
  compactApplied(below: VClock): Promise<void> {
    return this.#guarded(async () => {
      await this.#admin.query('BEGIN; SET LOCAL synchronous_commit = on; SELECT pg_current_xact_id()');
      try {
        await compactApplied(this.#admin, below);
        await this.#admin.query('COMMIT');
      } catch (error) {
        await this.#admin.query('ROLLBACK').catch(() => undefined);
        throw error;
      }
    });
  }

  /** A snapshot of the replicated tables for a rejoining peer, on a connection of its own that ends with it. */
  async readSnapshot(): Promise<{ tables: SnapshotTable[]; parts: AsyncGenerator<SnapshotPart> }> {
    const client = await connectPg(this.#url, this.#log);
    try {
      const { tables, parts } = await readSnapshot(client);
      async function* closing(): AsyncGenerator<SnapshotPart> {
        try {
          yield* parts;
        } finally {
          await client.end().catch(() => undefined);
        }
      }
      return { tables, parts: closing() };
    } catch (error) {
      await client.end().catch(() => undefined);
      throw error;
    }
  }

  /** Replace the replicated tables with a peer's snapshot, on a connection of its own (postgres/snapshot.ts). */
  async loadSnapshot(tables: readonly SnapshotTable[]): Promise<SnapshotLoad> {
    const client = await connectPg(this.#url, this.#log);
    let load: SnapshotLoad;
    try {
      load = await loadSnapshot(client, tables);
    } catch (error) {
      await client.end().catch(() => undefined);
      throw error;
    }
    const end = async (): Promise<void> => {
      await client.end().catch(() => undefined);
      await this.#applier.reload().catch(() => undefined);
    };
    return {
      part: (part) => load.part(part),
      commit: async () => {
        try {
          return await load.commit();
        } finally {
          await end();
        }
      },
      abort: async () => {
        await load.abort();
        await end();
      },
    };
  }

  async publish(row: NodeRow): Promise<void> {
    await this.#control.query('UPDATE qsync.node SET term = $1, role = $2, leader_id = $3, leader_address = $4', [row.term, row.role, row.leader, row.leaderAddress]);
  }

  async write<T>(session: PgSession, opening: WriteOpening, order: (tx: LeaderTransaction<PgWork>) => Promise<T>): Promise<T> {
    const client = await session.pool.connect();
    let lost = false;
    try {
      return await order(new PgLeaderTransaction(client, opening, this.#captureKey));
    } catch (error) {
      // A client's DEALLOCATE dropped the connection's kept statements: it goes, and the next write gets another.
      lost = keptStatementsLost(error);
      throw error;
    } finally {
      client.release(lost);
    }
  }

  /** This node's capture key (capture.ts), for the SQL front's sessions. */
  get captureKey(): string {
    return this.#captureKey;
  }

  /**
   * A role's stored password verifier, for the SQL front (front/auth.ts):
   * null when the role does not exist, may not log in, has expired or has no
   * password, which the front answers as a wrong password.
   */
  async roleVerifier(role: string): Promise<string | null> {
    const { rows } = await this.#control.query<{ verifier: string | null }>(
      `SELECT rolpassword AS verifier FROM pg_authid WHERE rolname = $1 AND rolcanlogin AND (rolvaliduntil IS NULL OR rolvaliduntil > now())`, [role]);
    return rows[0]?.verifier ?? null;
  }

  /** A health probe on its own connection: PostgreSQL answers, and how many transactions it holds prepared. */
  async probe(timeoutMs: number): Promise<{ prepared: number }> {
    const { rows } = await this.#control.query<{ prepared: number }>({ text: 'SELECT count(*)::int AS prepared FROM pg_prepared_xacts', query_timeout: timeoutMs } as pg.QueryConfig);
    return { prepared: rows[0]?.prepared ?? 0 };
  }

  /** The tables qsync replicates (or keeps local on purpose) and their modes, by name. */
  async tables(): Promise<Array<{ table: string; mode: TableMode }>> {
    const { rows } = await this.#control.query<{ table: string; mode: TableMode }>('SELECT table_name AS table, mode FROM qsync.tables ORDER BY table_name');
    return rows;
  }

  async outcome(idempotencyKey: string): Promise<{ committed: false } | { committed: true; replica: number; lsn: number }> {
    const { rows } = await this.#admin.query<{ replica_id: number; lsn: string }>('SELECT replica_id, lsn FROM qsync.idempotency WHERE key = $1', [idempotencyKey]);
    return rows[0] === undefined ? { committed: false } : { committed: true, replica: rows[0].replica_id, lsn: Number(rows[0].lsn) };
  }

  async close(): Promise<void> {
    this.#closing = true;
    await this.#control.end();
    await this.#admin.end();
    await this.#applier.close().catch(() => undefined);
  }

  /**
   * Run `fn` on healthy connections; a failure marks them broken. The call
   * that finds them broken reconnects and fails: PostgreSQL may have lost what
   * it had not flushed, and the node checks it against the journal (told
   * through onLost) before it retries anything.
   */
  async #guarded<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#broken) {
      await this.#reconnect();
      throw new QsyncError('PG_ERROR', 'reconnected to PostgreSQL: the node checks it against the journal before it goes on');
    }
    try {
      return await fn();
    } catch (error) {
      // A statement PostgreSQL refused leaves the connection usable; anything else, and the next
      // attempt starts on fresh connections.
      if (!isStatementError(error)) this.#broken = true;
      throw error;
    }
  }

  /**
   * Mark the connections broken when this one fails (a crashed or restarted
   * server), while it is still in use: the old connections that #reconnect
   * ends must not mark the new ones broken (that made every call reconnect).
   */
  #watch(client: pg.ClientBase): void {
    const current = (): boolean => client === this.#admin || client === this.#applier.client;
    const lost = (): void => {
      if (this.#closing || !current()) return;
      this.#broken = true;
      this.#tellLost();
    };
    client.on('error', lost);
    client.on('end', lost);
  }

  /** Tell the node, once per pair of connections, that they broke. */
  #tellLost(): void {
    if (this.#lostTold) return;
    this.#lostTold = true;
    for (const listener of this.#lost) listener();
  }

  /** New admin and apply connections; throws while PostgreSQL is still down (the caller retries). */
  async #reconnect(): Promise<void> {
    const admin = await connectPg(this.#url, this.#log);
    const applier = await Applier.create(await connectPg(this.#url, this.#log));
    // A broken call may be all that showed the loss (the old connections' events come later, or never).
    this.#tellLost();
    // Not awaited: end() on a connection that already died may never settle.
    void this.#admin.end().catch(() => undefined);
    void this.#applier.close().catch(() => undefined);
    this.#admin = admin;
    this.#applier = applier;
    this.#watch(admin);
    this.#watch(applier.client);
    this.#broken = false;
    this.#lostTold = false;
    this.#log.info('reconnected to PostgreSQL');
  }
}

/**
 * PostgreSQL refused a statement (a SQLSTATE outside the classes that mean
 * the connection or the server is going away): the connection is still good.
 * A timeout, a closed socket or a server shutting down are not.
 */
function isStatementError(error: unknown): boolean {
  // qsync's own refusal (a table not replicated here, a bad table name), or wrapping what PostgreSQL said.
  if (error instanceof QsyncError) return error.cause === undefined || isStatementError(error.cause);
  const code = (error as { code?: unknown }).code;
  if (typeof code !== 'string' || !/^[0-9A-Z]{5}$/.test(code)) return false;
  return !['08', '57', '53', 'XX'].includes(code.slice(0, 2));
}

/**
 * Log a pool's connection failures instead of crashing: pg-pool handles an
 * idle client's error, but a client that is checked out and between queries
 * (a COMMIT PREPARED loop, an interactive transaction waiting for its client)
 * emits 'error' itself when PostgreSQL dies, and an unhandled 'error' event
 * ends the process. The failed query still rejects where it is awaited.
 */
export function guardPool(pool: pg.Pool, log: Logger, name: string): void {
  pool.on('error', (error) => log.warn({ pool: name, err: error.message }, 'idle PostgreSQL connection failed'));
  pool.on('connect', (client) => {
    client.on('error', (error) => log.warn({ pool: name, err: error.message }, 'PostgreSQL connection failed'));
    corkWrites(client);
  });
}

/** A connected client whose errors are logged, never thrown at the event loop. */
async function connectPg(url: string, log: Logger): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url, ...PG_TIMEOUTS });
  client.on('error', (error) => log.warn({ err: error.message }, 'PostgreSQL connection failed'));
  await client.connect();
  corkWrites(client);
  return client;
}
