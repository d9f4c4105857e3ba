// The client port: framed msgpack requests with ids, answered as they finish
// (pipelining). A malformed request closes that connection with a logged
// reason; an operating error is answered with its code and the connection
// stays open. Before it authenticates, a connection may send only what an
// auth request needs, and logins are gated (net/guard.ts): a stranger can
// neither swell the process nor exhaust PostgreSQL's connection slots.
import { createServer, type Server, type Socket } from 'node:net';
import { decodeRequest, encodeResponse, type ClientErrorBody, type ClientRequest, type ClientResponse, type Consistency, type Statement } from '../core/client-protocol.js';
import { AssertionFailed } from '../core/assert.js';
import { QsyncError } from '../core/errors.js';
import type { TableMode } from '../core/record.js';
import type { Term } from '../core/types.js';
import type { Logger } from '../log.js';
import { AuthGate, PortGuard, type Admission, type RefusalObserver } from '../net/guard.js';
import { FramedLink, LinkClosed } from '../net/link.js';
import { listen } from '../net/listen.js';

/** An authenticated client: the PostgreSQL role its statements run as. */
export interface ClientSession {
  readonly user: string;
}

export interface RequestHandler<S extends ClientSession = ClientSession> {
  /** Check the credentials with PostgreSQL itself; throws QsyncError AUTH when refused. */
  authenticate(user: string, password: string): Promise<S>;
  execute(session: S, statements: readonly Statement[], idempotencyKey: string | null, term: Term | null, forward: boolean): Promise<unknown>;
  query(session: S, sql: string, params: readonly unknown[], consistency: Consistency): Promise<unknown>;
  outcome(idempotencyKey: string): Promise<unknown>;
  setTableMode(session: S, table: string, mode: TableMode): Promise<unknown>;
  /** A schema change on every node, as the session's role. */
  clientDdl(session: S, sql: string): Promise<unknown>;
  begin(session: S, idempotencyKey: string | null, term: Term | null): Transaction;
}

export interface Transaction {
  query(sql: string, params: readonly unknown[]): Promise<unknown>;
  commit(): Promise<void>;
  rollback(): Promise<void>;
}

/** Interactive transactions one connection may hold open at once. */
const TRANSACTIONS_MAX = 16;

/** Requests one connection may have in progress; past this it is read no further until one finishes. */
const IN_FLIGHT_MAX = 256;
const AUTH_TIMEOUT_MS = 10_000;

export class ClientServer {
  readonly #handler: RequestHandler<ClientSession>;
  readonly #log: Logger;
  readonly #server: Server;
  readonly #links = new Set<FramedLink<ClientRequest, ClientResponse>>();
  readonly #guard: PortGuard;
  readonly #logins: AuthGate;

  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- the node's session type is its own
  constructor(handler: RequestHandler<any>, log: Logger, observe?: RefusalObserver) {
    this.#handler = handler;
    this.#log = log.child({ port: 'client' });
    this.#guard = new PortGuard('client', this.#log, observe);
    this.#logins = new AuthGate(observe);
    this.#server = createServer((socket) => this.#accept(socket));
    this.#server.on('error', (error) => this.#log.error({ err: error }, 'client server error'));
  }

  #accept(socket: Socket): void {
    const admission = this.#guard.admit(socket);
    if (admission === null) return;
    const link = new FramedLink(socket, this.#log, { decode: decodeRequest, encode: encodeResponse }, { handshake: true });
    // Whatever goes wrong while serving one connection ends that connection, never the process.
    this.#serve(link, admission).catch((error: unknown) => link.close(`serving the connection failed: ${(error as Error).message}`, 'error'));
  }

  listen(port: number, host = '127.0.0.1'): Promise<number> {
    return listen(this.#server, port, host);
  }

  async close(): Promise<void> {
    for (const link of this.#links) link.close('node stopping', 'info');
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  async #serve(link: FramedLink<ClientRequest, ClientResponse>, admission: Admission): Promise<void> {
    this.#links.add(link);
    let inFlight = 0;
    let slot: (() => void) | null = null;
    const transactions = new Map<number, Transaction>();
    const reply = (response: ClientResponse): void => {
      try {
        link.send(response);
      } catch (error) {
        // A result that cannot be encoded (or is over the frame limit) is answered as an error instead.
        link.send({ id: response.id, error: { code: 'BAD_REQUEST', message: `the answer could not be sent: ${(error as Error).message}` } });
      }
    };
    try {
      const session = await this.#authenticate(link);
      link.authenticated();
      admission.authenticated();
      for (;;) {
        const request = await link.next();
        inFlight += 1;
        void this.#answer(session, request, transactions).then(reply, (error: unknown) => link.close(`answering request ${request.id} failed: ${(error as Error).message}`, 'error')).finally(() => {
          inFlight -= 1;
          slot?.();
        });
        if (inFlight >= IN_FLIGHT_MAX) await new Promise<void>((resolve) => (slot = resolve));
      }
    } catch (error) {
      if (!(error instanceof LinkClosed)) throw error;
    } finally {
      this.#links.delete(link);
      // A connection that goes away takes its open transactions with it.
      for (const tx of transactions.values()) void tx.rollback().catch(() => undefined);
    }
  }

  /** The first request must authenticate; a refusal is answered, logged, and the connection closed. */
  async #authenticate(link: FramedLink<ClientRequest, ClientResponse>): Promise<ClientSession> {
    const request = await link.next(AUTH_TIMEOUT_MS);
    if (request.op !== 'auth') {
      link.send({ id: request.id, error: { code: 'AUTH', message: 'authenticate first: send auth with a PostgreSQL role and password' } });
      link.close(`${request.op} before auth`);
      throw new LinkClosed(`${request.op} before auth`);
    }
    try {
      const session = await this.#logins.run(link.socket.remoteAddress ?? 'unknown', () => this.#handler.authenticate(request.user, request.password));
      link.send({ id: request.id, result: { user: session.user } });
      return session;
    } catch (error) {
      if (!(error instanceof QsyncError)) throw error;
      link.send({ id: request.id, error: errorBody(error) });
      link.close(`authentication of ${request.user} refused: ${error.message}`);
      throw new LinkClosed('authentication refused');
    }
  }

  async #answer(session: ClientSession, request: ClientRequest, transactions: Map<number, Transaction>): Promise<ClientResponse> {
    const txOf = (id: number): Transaction => {
      const tx = transactions.get(id);
      if (tx === undefined) throw new QsyncError('BAD_REQUEST', `no open transaction ${id} on this connection`);
      return tx;
    };
    try {
      switch (request.op) {
        case 'begin': {
          if (transactions.size >= TRANSACTIONS_MAX) throw new QsyncError('BAD_REQUEST', `at most ${TRANSACTIONS_MAX} open transactions per connection`);
          transactions.set(request.id, this.#handler.begin(session, request.idempotencyKey, request.term));
          return { id: request.id, result: { tx: request.id } };
        }
        case 'tquery':
          return { id: request.id, result: await txOf(request.tx).query(request.sql, request.params) };
        case 'commit':
        case 'rollback': {
          const tx = txOf(request.tx);
          transactions.delete(request.tx);
          await (request.op === 'commit' ? tx.commit() : tx.rollback());
          return { id: request.id, result: { [request.op === 'commit' ? 'committed' : 'rolledBack']: true } };
        }
        case 'execute':
          return { id: request.id, result: await this.#handler.execute(session, request.statements, request.idempotencyKey, request.term, request.forward === true) };
        case 'query':
          return { id: request.id, result: await this.#handler.query(session, request.sql, request.params, request.consistency) };
        case 'outcome':
          return { id: request.id, result: await this.#handler.outcome(request.idempotencyKey) };
        case 'table':
          return { id: request.id, result: await this.#handler.setTableMode(session, request.table, request.mode) };
        case 'ddl':
          return { id: request.id, result: await this.#handler.clientDdl(session, request.sql) };
        case 'auth':
          throw new QsyncError('AUTH', 'already authenticated on this connection');
      }
    } catch (error) {
      if (error instanceof AssertionFailed) throw error;
      return { id: request.id, error: errorBody(error) };
    }
  }
}

function errorBody(error: unknown): ClientErrorBody {
  if (error instanceof QsyncError) {
    const { sqlstate, leader, term } = error.context as { sqlstate?: string; leader?: string; term?: number };
    return { code: error.code, message: error.message, ...(sqlstate === undefined ? {} : { sqlstate }), ...(leader === undefined ? {} : { leader }), ...(term === undefined ? {} : { term }) };
  }
  return { code: 'PG_ERROR', message: (error as Error).message };
}
