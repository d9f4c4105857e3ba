// The qsync client library: connect to any sidecar, run transactions, read.
//
//   const db = await connect(['127.0.0.1:7501', '127.0.0.1:7502'], { user: 'app', password: '...' });
//   await db.execute([['INSERT INTO demo VALUES ($1, $2)', [1, 'hello']]], { idempotencyKey: 'order-1' });
//   const { rows } = await db.query('SELECT * FROM demo');
//
// Requests are pipelined on one connection. A NOT_LEADER answer (nothing was
// done) is followed to the leader it names, once. Errors are typed:
// NotLeader, StaleTerm, RolledBack (certain: the transaction is visible
// nowhere, ever), OutcomeUnknown (ask outcome(key) later), LimboFull, PgError.
import { connect as netConnect } from 'node:net';
import { decodeResponse, encodeRequest, type ClientErrorBody, type ClientRequest, type ClientResponse, type Consistency, type ResultSet } from '../core/client-protocol.js';
import type { Term } from '../core/types.js';
import { createLogger } from '../log.js';
import { FramedLink, LinkClosed } from '../net/link.js';

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
export class OutcomeUnknown extends QsyncClientError {}
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
}

type Pending = { resolve: (value: unknown) => void; reject: (error: Error) => void; op: ClientRequest['op'] };

class Connection {
  readonly address: string;
  readonly #link: FramedLink<ClientResponse, ClientRequest>;
  readonly #pending = new Map<number, Pending>();
  #nextId = 1;

  private constructor(address: string, link: FramedLink<ClientResponse, ClientRequest>) {
    this.address = address;
    this.#link = link;
    void this.#read();
  }

  /** Open and authenticate. */
  static async open(address: string, credentials: Credentials, timeoutMs: number): Promise<Connection> {
    const connection = await Connection.#connect(address, timeoutMs);
    try {
      await connection.request((id) => ({ id, op: 'auth', user: credentials.user, password: credentials.password }));
    } catch (error) {
      connection.close();
      throw error;
    }
    return connection;
  }

  static #connect(address: string, timeoutMs: number): Promise<Connection> {
    const [host, port] = splitAddress(address);
    return new Promise((resolve, reject) => {
      const socket = netConnect({ host, port });
      const timer = setTimeout(() => socket.destroy(new Error(`connecting to ${address} timed out after ${timeoutMs} ms`)), timeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        resolve(new Connection(address, new FramedLink(socket, createLogger({ client: address }, undefined, 'warn'), { decode: decodeResponse, encode: encodeRequest })));
      });
      socket.once('error', (error) => {
        clearTimeout(timer);
        reject(error);
      });
    });
  }

  request(make: (id: number) => ClientRequest): Promise<unknown> {
    const request = make(this.#nextId++);
    return new Promise((resolve, reject) => {
      this.#pending.set(request.id, { resolve, reject, op: request.op });
      if (!this.#link.send(request) && this.#link.closeReason !== null) this.#fail(this.#link.closeReason);
    });
  }

  close(): void {
    this.#link.close('client closed', 'info');
  }

  async #read(): Promise<void> {
    try {
      for (;;) {
        const response = await this.#link.next();
        const pending = this.#pending.get(response.id);
        if (pending === undefined) continue;
        this.#pending.delete(response.id);
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
      const code = pending.op === 'execute' ? 'OUTCOME_UNKNOWN' : 'PG_ERROR';
      pending.reject(typed({ code, message: `connection to ${this.address} lost before the answer (${reason})` } as ClientErrorBody));
    }
  }
}

function splitAddress(address: string): [string, number] {
  const at = address.lastIndexOf(':');
  return [address.slice(0, at), Number(address.slice(at + 1))];
}

/** A PostgreSQL role and its password: the client's statements run with that role's privileges. */
export interface Credentials {
  readonly user: string;
  readonly password: string;
}

export class Db {
  readonly #addresses: readonly string[];
  readonly #timeoutMs: number;
  readonly #credentials: Credentials;
  #connection: Connection;

  constructor(addresses: readonly string[], connection: Connection, credentials: Credentials, timeoutMs: number) {
    this.#addresses = addresses;
    this.#connection = connection;
    this.#credentials = credentials;
    this.#timeoutMs = timeoutMs;
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
        return (await this.#toLeader((id) => ({ id, op: 'execute', statements: normalized, idempotencyKey: options.idempotencyKey ?? null, term: (options.term ?? null) as Term | null }))) as ResultSet[];
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
    try {
      return await this.#transactionOnce(fn, options);
    } catch (error) {
      await this.#followLeader(error);
      return this.#transactionOnce(fn, options);
    }
  }

  async #transactionOnce<T>(fn: (tx: Tx) => Promise<T>, options: ExecuteOptions): Promise<T> {
    const connection = this.#connection;
    const { tx: id } = (await connection.request((rid) => ({ id: rid, op: 'begin', idempotencyKey: options.idempotencyKey ?? null, term: (options.term ?? null) as Term | null }))) as { tx: number };
    const tx: Tx = {
      query: async (sql, params = []) => (await connection.request((rid) => ({ id: rid, op: 'tquery', tx: id, sql, params }))) as ResultSet,
    };
    let result: T;
    try {
      result = await fn(tx);
    } catch (error) {
      await connection.request((rid) => ({ id: rid, op: 'rollback', tx: id })).catch(() => undefined);
      throw error;
    }
    await connection.request((rid) => ({ id: rid, op: 'commit', tx: id }));
    return result;
  }

  /** Send; on NotLeader (nothing was done) follow the leader hint once. */
  async #toLeader(make: (id: number) => ClientRequest): Promise<unknown> {
    try {
      return await this.#connection.request(make);
    } catch (error) {
      await this.#followLeader(error);
      return this.#connection.request(make);
    }
  }

  /** Reconnect to the leader a NotLeader error names (nothing was done); rethrow anything else. */
  async #followLeader(error: unknown): Promise<void> {
    if (!(error instanceof NotLeader) || error.leader === undefined || error.leader === this.address) throw error;
    this.#connection.close();
    this.#connection = await Connection.open(error.leader, this.#credentials, this.#timeoutMs);
  }

  /**
   * A read. `local` (default) reads the connected node's committed data;
   * `leader` reads on the leader (following a NotLeader hint);
   * `linearizable` is refused until leader election brings the read index.
   */
  async query(sql: string, params: readonly unknown[] = [], options: { consistency?: Consistency } = {}): Promise<ResultSet> {
    const consistency = options.consistency ?? 'local';
    const make = (id: number): ClientRequest => ({ id, op: 'query', sql, params, consistency });
    return (await (consistency === 'local' ? this.#connection.request(make) : this.#toLeader(make))) as ResultSet;
  }

  /** Whether the transaction with this idempotency key committed. */
  async outcome(idempotencyKey: string): Promise<{ committed: boolean; replica?: number; lsn?: number }> {
    return (await this.#connection.request((id) => ({ id, op: 'outcome', idempotencyKey }))) as { committed: boolean };
  }

  /** Set a table's mode on every node (through the leader; the role must own the table). */
  async setTableMode(table: string, mode: 'local' | 'async' | 'sync'): Promise<{ table: string; mode: string }> {
    return (await this.#toLeader((id) => ({ id, op: 'table', table, mode }))) as { table: string; mode: string };
  }

  close(): void {
    this.#connection.close();
  }

  get addresses(): readonly string[] {
    return this.#addresses;
  }
}

/** Connect to the first reachable address and authenticate as a PostgreSQL role. */
export async function connect(addresses: string | readonly string[], options: Credentials & { timeoutMs?: number }): Promise<Db> {
  const list = typeof addresses === 'string' ? [addresses] : addresses;
  const timeoutMs = options.timeoutMs ?? 5_000;
  const errors: string[] = [];
  for (const address of list) {
    try {
      return new Db(list, await Connection.open(address, options, timeoutMs), options, timeoutMs);
    } catch (error) {
      // Wrong credentials are final: another node would refuse them too.
      if (error instanceof QsyncClientError && error.code === 'AUTH') throw error;
      errors.push(`${address}: ${(error as Error).message}`);
    }
  }
  throw new Error(`no qsync node reachable: ${errors.join('; ')}`);
}
