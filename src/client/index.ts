// The qsync client library: connect to any sidecar, run transactions, read.
//
//   const db = await connect(['127.0.0.1:7501', '127.0.0.1:7502'], { user: 'app', password: '...' });
//   await db.execute([['INSERT INTO demo VALUES ($1, $2)', [1, 'hello']]], { idempotencyKey: 'order-1' });
//   const { rows } = await db.query('SELECT * FROM demo');
//
// Requests are pipelined on one connection. A NOT_LEADER answer (nothing was
// done) is followed to the leader it names; while no leader is known (an
// election), and when the connection is found closed before a request is
// sent, the client tries the nodes in turn for up to `leaderWaitMs`. A
// request whose answer was lost is never resent. Errors are typed:
// NotLeader, StaleTerm, RolledBack (certain: the transaction is visible
// nowhere, ever), OutcomeUnknown (ask outcome(key) later), LimboFull, PgError.
import { connect as netConnect } from 'node:net';
import { splitAddress } from '../core/address.js';
import { decodeResponse, encodeRequest, type ClientErrorBody, type ClientRequest, type ClientResponse, type Consistency, type ResultSet } from '../core/client-protocol.js';
import type { Term } from '../core/types.js';
import { createLogger } from '../log.js';
import { FramedLink, LinkClosed, PEER_CLOSED } from '../net/link.js';

export class QsyncClientError extends Error {
  readonly code: string;
  readonly sqlstate: string | undefined;
  readonly leader: string | undefined;
  readonly term: number | undefined;
  constructor(body: ClientErrorBody) {
    super(body.message);
    this.name = new.target.name;
    this.code = body.code;
    this.sqlstate = body.sqlstate;
    this.leader = body.leader;
    this.term = body.term;
  }
}
export class NotLeader extends QsyncClientError {}
export class StaleTerm extends QsyncClientError {}
export class RolledBack extends QsyncClientError {}
/** The transaction may or may not have committed: ask outcome(idempotencyKey), when it had one. */
export class OutcomeUnknown extends QsyncClientError {
  idempotencyKey: string | undefined;
}
export class LimboFull extends QsyncClientError {}
export class PgError extends QsyncClientError {}

export class AuthFailed extends QsyncClientError {}

const CLASSES: Record<string, new (body: ClientErrorBody) => QsyncClientError> = {
  AUTH: AuthFailed, NOT_LEADER: NotLeader, STALE_TERM: StaleTerm, ROLLED_BACK: RolledBack, OUTCOME_UNKNOWN: OutcomeUnknown, LIMBO_FULL: LimboFull, PG_ERROR: PgError,
};

function typed(body: ClientErrorBody): QsyncClientError {
  return new (CLASSES[body.code] ?? QsyncClientError)(body);
}

export type StatementInput = string | readonly [string, readonly unknown[]];

/** The handle an interactive transaction's function gets. */
export interface Tx {
  query(sql: string, params?: readonly unknown[]): Promise<ResultSet>;
}

export interface ExecuteOptions {
  /** Makes a retry after an unknown outcome safe, and lets outcome() find the transaction. */
  readonly idempotencyKey?: string;
  /** The term the client believes current; an older one is refused with StaleTerm. */
  readonly term?: number;
  /**
   * Let the node this client is connected to relay the transaction to the
   * leader and the answer back, instead of answering NotLeader (one-shot
   * execute only). For clients that can reach one node but not the leader.
   */
  readonly forward?: boolean;
}

type Pending = { resolve: (value: unknown) => void; reject: (error: Error) => void; op: ClientRequest['op']; idempotencyKey: string | null };

/** Requests whose lost answer may hide a commit: their outcome is unknown, never a plain failure. */
const MAY_HAVE_COMMITTED: ReadonlySet<ClientRequest['op']> = new Set(['execute', 'commit', 'ddl', 'table']);

/** An OutcomeUnknown carries the idempotency key to ask with, and its message says how. */
function withKey(error: unknown, idempotencyKey: string | null): unknown {
  if (error instanceof OutcomeUnknown) error.idempotencyKey ??= idempotencyKey ?? undefined;
  return error;
}

class Connection {
  readonly address: string;
  readonly #link: FramedLink<ClientResponse, ClientRequest>;
  readonly #pending = new Map<number, Pending>();
  readonly #requestTimeoutMs: number;
  #nextId = 1;
  /** The client moved to another node: close once the last answer is in. */
  #closing = false;

  private constructor(address: string, link: FramedLink<ClientResponse, ClientRequest>, requestTimeoutMs: number) {
    this.address = address;
    this.#link = link;
    this.#requestTimeoutMs = requestTimeoutMs;
    void this.#read();
  }

  /** Open and authenticate. */
  /**
   * Connect and log in. A node closes a connection it takes in over one of
   * its caps (too many logging in at once from this address: a pool opening
   * all its connections together, most often) before it answers: that one is
   * tried again, with backoff, within the timeout.
   */
  static async open(address: string, credentials: Credentials, timeoutMs: number, requestTimeoutMs: number): Promise<Connection> {
    const deadline = Date.now() + timeoutMs;
    for (let delayMs = 20; ; delayMs = Math.min(1_000, delayMs * 2)) {
      const connection = await Connection.#connect(address, Math.max(1, deadline - Date.now()), requestTimeoutMs);
      try {
        await connection.request((id) => ({ id, op: 'auth', user: credentials.user, password: credentials.password }));
        return connection;
      } catch (error) {
        // Wrong credentials are answered (AUTH) before the node closes: final.
        const refused = !(error instanceof QsyncClientError && error.code === 'AUTH') && connection.#link.closeReason === PEER_CLOSED;
        connection.close();
        if (!refused || Date.now() + delayMs >= deadline) throw error;
        await new Promise((resolve) => setTimeout(resolve, delayMs * (0.5 + Math.random())));
      }
    }
  }

  static #connect(address: string, timeoutMs: number, requestTimeoutMs: number): Promise<Connection> {
    const { host, port } = splitAddress(address);
    return new Promise((resolve, reject) => {
      const socket = netConnect({ host, port });
      const timer = setTimeout(() => socket.destroy(new Error(`connecting to ${address} timed out after ${timeoutMs} ms`)), timeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        // A library answers with exceptions, not log lines on the application's stdout: only errors are logged.
        resolve(new Connection(address, new FramedLink(socket, createLogger({ client: address }, undefined, 'error'), { decode: decodeResponse, encode: encodeRequest }), requestTimeoutMs));
      });
      socket.once('error', (error) => {
        clearTimeout(timer);
        reject(error);
      });
    });
  }

  /**
   * Send and wait for the answer. A node that does not answer within
   * `timeoutMs` (a frozen process keeps its sockets open) costs the whole
   * connection: every request on it fails as if the connection were lost.
   */
  request(make: (id: number) => ClientRequest, timeoutMs = this.#requestTimeoutMs, idempotencyKey: string | null = null): Promise<unknown> {
    const request = make(this.#nextId++);
    const key = 'idempotencyKey' in request && request.op === 'execute' ? request.idempotencyKey : idempotencyKey;
    const answered = new Promise((resolve, reject) => {
      this.#pending.set(request.id, { resolve, reject: (error) => reject(withKey(error, key) as Error), op: request.op, idempotencyKey: key });
      if (!this.#link.send(request) && this.#link.closeReason !== null) this.#fail(this.#link.closeReason);
    });
    if (!Number.isFinite(timeoutMs)) return answered;
    const timer = setTimeout(() => this.#link.close(`no answer from ${this.address} within ${timeoutMs} ms`), timeoutMs);
    return answered.finally(() => clearTimeout(timer));
  }

  close(reason = 'client closed'): void {
    this.#link.close(reason, 'info');
  }

  /** Close once no request waits for its answer. */
  closeWhenIdle(): void {
    this.#closing = true;
    if (this.#pending.size === 0) this.close('client moved to another node');
  }

  get closed(): boolean {
    return this.#link.closeReason !== null;
  }

  async #read(): Promise<void> {
    try {
      for (;;) {
        const response = await this.#link.next();
        const pending = this.#pending.get(response.id);
        if (pending === undefined) continue;
        this.#pending.delete(response.id);
        if (this.#closing && this.#pending.size === 0) this.close('client moved to another node');
        if ('error' in response) pending.reject(typed(response.error));
        else pending.resolve(response.result);
      }
    } catch (error) {
      if (!(error instanceof LinkClosed)) throw error;
      this.#fail(error.message);
    }
  }

  #fail(reason: string): void {
    for (const [id, pending] of this.#pending) {
      this.#pending.delete(id);
      // A write whose answer was lost may or may not have committed.
      const lost = `connection to ${this.address} lost before the answer (${reason})`;
      if (!MAY_HAVE_COMMITTED.has(pending.op)) {
        pending.reject(typed({ code: 'PG_ERROR', message: lost }));
        continue;
      }
      const ask = pending.idempotencyKey === null ? 'it carried no idempotency key to ask with (pass one to make the outcome knowable)' : `ask outcome(${JSON.stringify(pending.idempotencyKey)}) once a leader answers, or retry with the same key`;
      pending.reject(typed({ code: 'OUTCOME_UNKNOWN', message: `${lost}: the ${pending.op} may have committed; ${ask}` }));
    }
  }
}

/** How long a request waits for its answer; interactive statements (tquery) wait for the application instead. */
const REQUEST_TIMEOUT_MS = 60_000;

/** A PostgreSQL role and its password: the client's statements run with that role's privileges. */
export interface Credentials {
  readonly user: string;
  readonly password: string;
}

export interface ConnectOptions extends Credentials {
  /** Connecting to one node; default 5000. */
  readonly timeoutMs?: number;
  /** How long a write looks for a leader during an election or after losing its node; default 10000. */
  readonly leaderWaitMs?: number;
  /**
   * How long a request waits for its answer before the connection is given
   * up (a frozen node keeps its sockets open); a write that times out has an
   * unknown outcome. Default 60000.
   */
  readonly requestTimeoutMs?: number;
  /**
   * While a request to the leader has waited this long, ask the other nodes
   * whether one of them leads; if one does, give up the connection at once:
   * a frozen or cut-off leader costs about an election, not the request
   * timeout. Off (0) by default: a write that an old leader holds during a
   * switchover, which would end as NotLeader (nothing done), ends as
   * OutcomeUnknown instead when the check fires first.
   */
  readonly leaderCheckMs?: number;
}

export class Db {
  readonly #addresses: readonly string[];
  readonly #timeoutMs: number;
  readonly #leaderWaitMs: number;
  readonly #requestTimeoutMs: number;
  readonly #leaderCheckMs: number;
  readonly #credentials: Credentials;
  #connection: Connection;

  constructor(addresses: readonly string[], connection: Connection, options: ConnectOptions) {
    this.#addresses = addresses;
    this.#connection = connection;
    this.#credentials = { user: options.user, password: options.password };
    this.#timeoutMs = options.timeoutMs ?? 5_000;
    this.#leaderWaitMs = options.leaderWaitMs ?? 10_000;
    this.#requestTimeoutMs = options.requestTimeoutMs ?? REQUEST_TIMEOUT_MS;
    this.#leaderCheckMs = options.leaderCheckMs ?? 0;
  }

  /** The node this client talks to. */
  get address(): string {
    return this.#connection.address;
  }

  /**
   * Run the statements as one transaction, in one round trip. A transaction
   * PostgreSQL aborted for a deadlock or a serialization failure (concurrent
   * writes to one key of an async table on two nodes can cause either) did
   * nothing, and is run again, up to `retries` times.
   */
  async execute(statements: readonly StatementInput[], options: ExecuteOptions & { retries?: number } = {}): Promise<ResultSet[]> {
    const normalized = statements.map((s) => (typeof s === 'string' ? { sql: s, params: [] } : { sql: s[0], params: s[1] }));
    for (let attempt = 0; ; attempt += 1) {
      try {
        const make = (id: number): ClientRequest => ({ id, op: 'execute', statements: normalized, idempotencyKey: options.idempotencyKey ?? null, term: (options.term ?? null) as Term | null, ...(options.forward === true ? { forward: true } : {}) });
        return (await (options.forward === true ? this.#connection.request(make) : this.#toLeader(make))) as ResultSet[];
      } catch (error) {
        const retryable = error instanceof PgError && (error.sqlstate === '40P01' || error.sqlstate === '40001');
        if (!retryable || attempt >= (options.retries ?? 3)) throw error;
      }
    }
  }

  /**
   * An interactive transaction: `fn` runs statements with tx.query and sees
   * their results; the transaction commits through qsync when fn returns, and
   * rolls back when it throws. A sync write on a follower is refused with
   * NotLeader before anything commits: the client then runs fn once more on
   * the leader, so fn should only touch the database through tx.
   */
  async transaction<T>(fn: (tx: Tx) => Promise<T>, options: ExecuteOptions = {}): Promise<T> {
    const deadline = Date.now() + this.#leaderWaitMs;
    for (let attempt = 0; ; attempt += 1) {
      if (this.#connection.closed) await this.#moveTo(undefined, attempt, deadline);
      try {
        return await this.#transactionOnce(fn, options);
      } catch (error) {
        if (!(error instanceof NotLeader) || Date.now() >= deadline) throw error;
        await this.#moveTo(error.leader, attempt, deadline);
      }
    }
  }

  async #transactionOnce<T>(fn: (tx: Tx) => Promise<T>, options: ExecuteOptions): Promise<T> {
    const connection = this.#connection;
    const { tx: id } = (await connection.request((rid) => ({ id: rid, op: 'begin', idempotencyKey: options.idempotencyKey ?? null, term: (options.term ?? null) as Term | null }))) as { tx: number };
    const tx: Tx = {
      query: async (sql, params = []) => (await connection.request((rid) => ({ id: rid, op: 'tquery', tx: id, sql, params }), Infinity)) as ResultSet,
    };
    let result: T;
    try {
      result = await fn(tx);
    } catch (error) {
      await connection.request((rid) => ({ id: rid, op: 'rollback', tx: id })).catch(() => undefined);
      throw error;
    }
    await connection.request((rid) => ({ id: rid, op: 'commit', tx: id }), undefined, options.idempotencyKey ?? null);
    return result;
  }

  /** Send to the leader: on NotLeader (nothing was done) follow the hint, or look for a leader, until leaderWaitMs. */
  async #toLeader(make: (id: number) => ClientRequest): Promise<unknown> {
    const deadline = Date.now() + this.#leaderWaitMs;
    const { term } = make(0) as { term?: number | null };
    const termed = term !== null && term !== undefined;
    for (let attempt = 0; ; attempt += 1) {
      if (this.#connection.closed) await this.#moveTo(undefined, attempt, deadline);
      const used = this.#connection;
      const watch = this.#watchLeader(used);
      try {
        return await used.request(make);
      } catch (error) {
        // A StaleTerm for a request that named no term: the node's fence refused it during a change of
        // leader; nothing was done, as with NotLeader.
        const moved = error instanceof NotLeader || (error instanceof StaleTerm && !termed);
        if (!moved || Date.now() >= deadline) throw error;
        // Another request that was refused the same way has moved the client already: follow it.
        if (this.#connection === used) await this.#moveTo((error as QsyncClientError).leader, attempt, deadline);
      } finally {
        watch();
      }
    }
  }

  /**
   * Every leaderCheckMs while a request waits on `connection`, ask the other
   * nodes whether one of them leads (a read on the leader, refused by a
   * follower). When another node answers as the leader, the waiting one was
   * deposed or is frozen: close its connection, so that the request ends as
   * OutcomeUnknown and the next one goes to the new leader. A hint alone (a
   * follower naming a leader) is not enough: addresses may be spelled
   * differently. Returns the function that stops watching.
   */
  #watchLeader(connection: Connection): () => void {
    if (this.#leaderCheckMs <= 0 || this.#addresses.length < 2) return () => undefined;
    let stopped = false;
    const check = async (): Promise<void> => {
      for (const address of this.#addresses) {
        if (stopped || address === connection.address) continue;
        const other = await Connection.open(address, this.#credentials, this.#timeoutMs, this.#leaderCheckMs).catch(() => null);
        if (other === null) continue;
        const leads = await other.request((id) => ({ id, op: 'query', sql: 'SELECT 1', params: [], consistency: 'leader' })).then(() => true, () => false);
        other.close();
        if (leads && !stopped) {
          connection.close(`node ${address} leads now`);
          return;
        }
      }
    };
    const timer = setInterval(() => void check(), this.#leaderCheckMs);
    return () => {
      stopped = true;
      clearInterval(timer);
    };
  }

  /**
   * Connect to the leader a NotLeader named, or (none named, or this node
   * itself while it takes over) wait a little and try the next nodes in turn.
   */
  async #moveTo(hint: string | undefined, attempt: number, deadline: number): Promise<void> {
    const elsewhere = hint !== undefined && hint !== this.address;
    if (!elsewhere) await new Promise((r) => setTimeout(r, Math.min(100, 10 * 2 ** attempt)));
    const start = this.#addresses.indexOf(this.address);
    const rotation = this.#addresses.map((_, i) => this.#addresses[(start + 1 + i) % this.#addresses.length] as string);
    const order = elsewhere ? [hint, ...rotation.filter((a) => a !== hint)] : hint === this.address && !this.#connection.closed ? [] : rotation;
    const errors: string[] = [];
    for (const address of order) {
      try {
        const connection = await Connection.open(address, this.#credentials, this.#timeoutMs, this.#requestTimeoutMs);
        // Requests still waiting on the old connection get their own answers (most often NotLeader,
        // and they follow): closing it under them would turn each into an unknown outcome.
        this.#connection.closeWhenIdle();
        this.#connection = connection;
        return;
      } catch (error) {
        if (error instanceof AuthFailed) throw error;
        errors.push(`${address}: ${(error as Error).message}`);
      }
    }
    if (order.length > 0 && Date.now() > deadline) throw new Error(`no qsync node reachable: ${errors.join('; ')}`);
  }

  /**
   * A read. `local` (default) reads the connected node's committed data;
   * `leader` reads on the leader (following a NotLeader hint);
   * `linearizable` reads on the leader once a quorum has confirmed, after
   * the read arrived, that it still leads (a read index): it sees every
   * write acknowledged before it was sent.
   */
  async query(sql: string, params: readonly unknown[] = [], options: { consistency?: Consistency } = {}): Promise<ResultSet> {
    const consistency = options.consistency ?? 'local';
    const make = (id: number): ClientRequest => ({ id, op: 'query', sql, params, consistency });
    if (consistency === 'local' && this.#connection.closed) await this.#moveTo(undefined, 0, Date.now() + this.#leaderWaitMs);
    return (await (consistency === 'local' ? this.#connection.request(make) : this.#toLeader(make))) as ResultSet;
  }

  /** Whether the transaction with this idempotency key committed. */
  async outcome(idempotencyKey: string): Promise<{ committed: boolean; replica?: number; lsn?: number }> {
    return (await this.#connection.request((id) => ({ id, op: 'outcome', idempotencyKey }))) as { committed: boolean };
  }

  /** Set a table's mode on every node (through the leader; the role must own the table). */
  async setTableMode(table: string, mode: 'local' | 'async' | 'sync'): Promise<{ table: string; mode: string; copiedRows: number }> {
    return (await this.#toLeader((id) => ({ id, op: 'table', table, mode }))) as { table: string; mode: string; copiedRows: number };
  }

  /**
   * Run a schema change on every node in journal order (as `qsync ddl`), as
   * this connection's role: on the leader first, where PostgreSQL checks the
   * role's privileges, then on each node under the same role (it must exist
   * there too). Resolves with the CONFIG record's lsn.
   */
  async ddl(sql: string): Promise<{ lsn: number }> {
    return (await this.#toLeader((id) => ({ id, op: 'ddl', sql }))) as { lsn: number };
  }

  close(): void {
    this.#connection.close();
  }

  get addresses(): readonly string[] {
    return this.#addresses;
  }
}

/**
 * Find the cluster's nodes in Redis (DESIGN.md §9) and connect, the leader
 * first: for clients that know no node's address. Redis only points the
 * way; the nodes themselves still answer NotLeader to a stale pointer.
 */
export async function connectViaRedis(redisUrl: string, cluster: string, options: ConnectOptions): Promise<Db> {
  const { redisConnection, discover, whenReady } = await import('../discovery/redis.js');
  const redis = redisConnection(redisUrl, null, 'qsync-client');
  let found: Awaited<ReturnType<typeof discover>>;
  try {
    await whenReady(redis, options.timeoutMs ?? 5_000);
    found = await discover(redis, cluster);
  } catch (error) {
    throw new Error(`cannot read cluster ${cluster} from Redis at ${redisUrl.replace(/\/\/[^@]*@/, '//***@')}: ${(error as Error).message}`, { cause: error });
  } finally {
    redis.disconnect();
  }
  const addresses = [...new Set([...(found.leader === null ? [] : [found.leader.client]), ...found.nodes.flatMap((n) => (n.client === null ? [] : [n.client]))])];
  if (addresses.length === 0) throw new Error(`Redis knows no node of cluster ${cluster}: are its sidecars started with --redis-url?`);
  return connect(addresses, options);
}

/** Connect to the first reachable address and authenticate as a PostgreSQL role. */
export async function connect(addresses: string | readonly string[], options: ConnectOptions): Promise<Db> {
  const list = typeof addresses === 'string' ? [addresses] : addresses;
  const timeoutMs = options.timeoutMs ?? 5_000;
  const errors: string[] = [];
  for (const address of list) {
    try {
      return new Db(list, await Connection.open(address, options, timeoutMs, options.requestTimeoutMs ?? REQUEST_TIMEOUT_MS), options);
    } catch (error) {
      // Wrong credentials are final: another node would refuse them too.
      if (error instanceof QsyncClientError && error.code === 'AUTH') throw error;
      errors.push(`${address}: ${(error as Error).message}`);
    }
  }
  throw new Error(`no qsync node reachable: ${errors.join('; ')}`);
}
