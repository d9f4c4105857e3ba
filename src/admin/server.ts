// The admin interface: HTTP with JSON answers, on its own port (--admin-port),
// bound to loopback unless --admin-host says otherwise.
//
//   GET  /status              this node: election, limbo, vclocks, peers and their lag, PostgreSQL
//   GET  /cluster             every node, as this one sees it (their /status where reachable)
//   GET  /health/leader       200 while this node accepts sync writes, else 503 (load balancers)
//   GET  /health/replica      200 while it follows a known leader with a working PostgreSQL,
//                             else 503; ?lag=N also needs at most N records of lag
//   GET  /metrics             Prometheus text format
//   GET  /tables              replicated tables and their modes
//   POST /promote             campaign now; answers once this node accepts writes       (token)
//   POST /demote              the leader steps down                                      (token)
//   POST /transfer?to=N       switchover: hand leadership to replica N                   (token)
//   POST /rejoin              take a peer's snapshot if this node lacks records every
//                             peer removed (setting rejoin manual)                       (token)
//   PUT  /tables/:name        set a table's mode on every node: {"mode": "sync"}         (token)
//   POST /members             add a node: {"peer": "host:port", "client": ..., "admin": ...};
//                             answers its replica id and the members (leader only)       (token)
//   DELETE /members/:id       remove a node (leader only)                                 (token)
//
// Mutating requests need `Authorization: Bearer <--admin-token>`; a node
// started without a token refuses them. Errors answer with a status code and
// { error: { code, message } }; nothing a request carries can stop the node.
import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { splitAddress } from '../core/address.js';
import { QsyncError, type ErrorCode } from '../core/errors.js';
import { limits } from '../core/limits.js';
import type { TableMode } from '../core/record.js';
import { isReplicaId, type ReplicaId } from '../core/types.js';
import { vclockMissing } from '../core/vclock.js';
import type { Logger } from '../log.js';
import { listen } from '../net/listen.js';
import type { SidecarStatus } from '../sidecar/status.js';
import type { ClusterView } from './view.js';

/** What the admin interface drives: the sidecar node. */
export interface AdminTarget {
  status(): SidecarStatus;
  cluster(): Promise<ClusterView>;
  promote(): Promise<unknown>;
  demote(): unknown;
  /** Let this node take a peer's snapshot when it lacks records its peers removed. */
  rejoin(): unknown;
  transfer(to: ReplicaId): Promise<unknown>;
  tables(): Promise<Array<{ table: string; mode: TableMode }>>;
  changeTableMode(table: string, mode: TableMode): Promise<{ table: string; mode: TableMode; copiedRows: number }>;
  /** Run a schema change on every node (leader only). */
  runDdl(sql: string): Promise<{ lsn: number }>;
  /** Add a node (leader only): its replica id and the members after. */
  addMember(member: { address: string; client?: string; admin?: string }): Promise<unknown>;
  /** Remove a node (leader only). */
  removeMember(replica: ReplicaId): Promise<unknown>;
  metrics(): Promise<{ contentType: string; text: string }>;
}

const STATUS_OF: Partial<Record<ErrorCode, number>> = {
  BAD_REQUEST: 400, PG_TABLE: 400, PG_ERROR: 400, AUTH: 401, FORBIDDEN: 403, NOT_LEADER: 409, STALE_TERM: 409,
};

const BODY_BYTES_MAX = limits.adminBodyBytesMax;

/** A plain-text answer, not JSON (metrics). */
class Text {
  constructor(readonly contentType: string, readonly text: string, readonly status = 200) {}
}

/** A JSON answer with a status other than 200 (health checks). */
class Answer {
  constructor(readonly status: number, readonly body: unknown) {}
}

export class AdminServer {
  readonly #server: Server;
  /** Connections with a request being answered: the idle timeout leaves them alone. */
  readonly #busy = new WeakSet<Socket>();

  constructor(target: AdminTarget, token: string | undefined, log: Logger) {
    const tokenHash = token === undefined ? null : sha256(token);
    // Bounded like every port: slow or idle connections are closed (headers, whole request, keep-alive),
    // and past the cap a new connection is closed at once. requestTimeout bounds receiving a request, not
    // answering it: a table copy may take minutes.
    this.#server = createServer({
      headersTimeout: limits.adminHeadersTimeoutMs, requestTimeout: limits.adminRequestTimeoutMs,
      keepAliveTimeout: limits.adminKeepAliveTimeoutMs, connectionsCheckingInterval: 1_000,
    }, (request, response) => {
      const socket = request.socket;
      this.#busy.add(socket);
      response.once('close', () => this.#busy.delete(socket));
      void route(target, tokenHash, request).then(
        (body) => {
          if (body instanceof Text) {
            response.writeHead(body.status, { 'content-type': body.contentType });
            response.end(body.text);
          } else if (body instanceof Answer) {
            answer(response, body.status, body.body);
          } else {
            answer(response, 200, body);
          }
        },
        (error: unknown) => {
          if (error instanceof QsyncError) {
            answer(response, STATUS_OF[error.code as ErrorCode] ?? 500, { error: { ...error.context, code: error.code, message: error.message } });
            return;
          }
          log.error({ err: (error as Error).message, url: request.url }, 'admin request failed');
          answer(response, 500, { error: { code: 'INTERNAL', message: (error as Error).message } });
        },
      );
    });
  }

  listen(port: number, host: string): Promise<number> {
    this.#server.maxConnections = limits.adminConnectionsMax;
    // Node's timeouts start with a request's first byte: a connection that sends nothing is closed here.
    this.#server.on('connection', (socket: Socket) => socket.setTimeout(limits.adminHeadersTimeoutMs, () => {
      if (!this.#busy.has(socket)) socket.destroy();
    }));
    return listen(this.#server, port, host);
  }

  close(): Promise<void> {
    this.#server.closeAllConnections();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}

function authorise(tokenHash: Buffer | null, request: IncomingMessage, what: string): void {
  if (tokenHash === null) throw new QsyncError('FORBIDDEN', `${what} is refused: this node was started without --admin-token (QSYNC_ADMIN_TOKEN), so it takes no mutating admin requests`);
  const header = request.headers.authorization ?? '';
  const match = /^Bearer (.+)$/.exec(header);
  if (match === null) throw new QsyncError('AUTH', `${what} needs the admin token: send Authorization: Bearer <token> (the CLI takes --token or QSYNC_ADMIN_TOKEN)`);
  if (!timingSafeEqual(sha256(match[1] as string), tokenHash)) throw new QsyncError('AUTH', `${what}: wrong admin token`);
}

async function readBody(request: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let bytes = 0;
  for await (const chunk of request) {
    bytes += (chunk as Buffer).length;
    if (bytes > BODY_BYTES_MAX) throw new QsyncError('BAD_REQUEST', `request body over ${BODY_BYTES_MAX} bytes`);
    chunks.push(chunk as Buffer);
  }
  if (bytes === 0) return {};
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
  } catch (error) {
    throw new QsyncError('BAD_REQUEST', `request body is not JSON: ${(error as Error).message}`);
  }
}

const MODES: readonly TableMode[] = ['sync', 'async', 'local'];

/** The request's target as a URL; a malformed one is the client's error (400), not the server's. */
function targetOf(request: IncomingMessage): URL {
  try {
    return new URL(request.url ?? '/', 'http://admin');
  } catch {
    throw new QsyncError('BAD_REQUEST', `the request target ${JSON.stringify((request.url ?? '').slice(0, 200))} is not a valid path`);
  }
}

function decodedSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw new QsyncError('BAD_REQUEST', `the path segment ${JSON.stringify(segment.slice(0, 200))} is not valid percent-encoding`);
  }
}

async function route(target: AdminTarget, tokenHash: Buffer | null, request: IncomingMessage): Promise<unknown> {
  const url = targetOf(request);
  const method = request.method ?? 'GET';
  const key = `${method} ${url.pathname}`;
  const mutating = (what: string): void => authorise(tokenHash, request, what);
  const table = /^\/tables\/([^/]+)$/.exec(url.pathname);
  if (table !== null && method === 'PUT') {
    const name = decodedSegment(table[1] as string);
    mutating(`PUT /tables/${name}`);
    const body = await readBody(request);
    const mode = url.searchParams.get('mode') ?? (typeof body === 'object' && body !== null ? (body as { mode?: unknown }).mode : undefined);
    if (typeof mode !== 'string' || !MODES.includes(mode as TableMode)) throw new QsyncError('BAD_REQUEST', `PUT /tables/${name} needs a mode: body {"mode": "sync"|"async"|"local"}, got ${JSON.stringify(mode ?? null)}`);
    return target.changeTableMode(name, mode as TableMode);
  }
  const member = /^\/members\/([^/]+)$/.exec(url.pathname);
  if (member !== null && method === 'DELETE') {
    const replica = Number(member[1]);
    mutating(`DELETE /members/${member[1] as string}`);
    if (!isReplicaId(replica) || replica === 0) throw new QsyncError('BAD_REQUEST', `DELETE /members/<replica id 1..31>, got ${JSON.stringify(member[1])}`);
    return target.removeMember(replica);
  }
  if (key === 'POST /members') {
    mutating('POST /members');
    const body = await readBody(request);
    const fields = typeof body === 'object' && body !== null ? body as Record<string, unknown> : {};
    const address = (name: string, required: boolean): string | undefined => {
      const value = fields[name];
      if (value === undefined && !required) return undefined;
      if (typeof value !== 'string' || !/^[^\s:]+:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$/.test(value)) {
        throw new QsyncError('BAD_REQUEST', `POST /members needs ${required ? '' : 'an optional '}"${name}": "host:port", got ${JSON.stringify(value ?? null)}; body {"peer": "10.0.0.4:7401", "client": "10.0.0.4:7501", "admin": "10.0.0.4:7601"}`);
      }
      return value;
    };
    const peer = address('peer', true) as string;
    const client = address('client', false);
    const admin = address('admin', false);
    return target.addMember({ address: peer, ...(client === undefined ? {} : { client }), ...(admin === undefined ? {} : { admin }) });
  }
  if (key === 'POST /ddl') {
    mutating('POST /ddl');
    const body = await readBody(request);
    const sql = typeof body === 'object' && body !== null ? (body as { sql?: unknown }).sql : undefined;
    if (typeof sql !== 'string') throw new QsyncError('BAD_REQUEST', `POST /ddl needs the SQL: body {"sql": "ALTER TABLE ..."}, got ${JSON.stringify(sql ?? null)}`);
    return target.runDdl(sql);
  }
  switch (key) {
    case 'GET /status':
      return target.status();
    case 'GET /cluster':
      return target.cluster();
    case 'GET /health/leader': {
      const s = target.status();
      const ok = s.writable && s.postgres.reachable;
      return new Answer(ok ? 200 : 503, { healthy: ok, role: s.role, term: s.term, leader: s.leader, postgres: s.postgres.reachable });
    }
    case 'GET /health/replica': {
      const s = target.status();
      const lagText = url.searchParams.get('lag');
      const lagMax = lagText === null ? null : Number(lagText);
      if (lagMax !== null && !(Number.isInteger(lagMax) && lagMax >= 0)) throw new QsyncError('BAD_REQUEST', `?lag must be a number of records, got ${JSON.stringify(lagText)}`);
      const leaderView = s.peers.find((p) => p.replica === s.leader);
      const behind = leaderView === undefined ? null : vclockMissing(s.applied, leaderView.vclock);
      const ok = !s.writable && s.role === 'follower' && s.leader !== null && s.postgres.reachable && (lagMax === null || (behind !== null && behind <= lagMax));
      return new Answer(ok ? 200 : 503, { healthy: ok, role: s.role, term: s.term, leader: s.leader, postgres: s.postgres.reachable, lagRecords: behind });
    }
    case 'GET /metrics': {
      const { contentType, text } = await target.metrics();
      return new Text(contentType, text);
    }
    case 'GET /tables':
      return target.tables();
    case 'POST /promote':
      mutating('POST /promote');
      return target.promote();
    case 'POST /demote':
      mutating('POST /demote');
      return target.demote();
    case 'POST /rejoin':
      mutating('POST /rejoin');
      return target.rejoin();
    case 'POST /transfer': {
      mutating('POST /transfer');
      const to = Number(url.searchParams.get('to'));
      if (!isReplicaId(to) || to === 0) throw new QsyncError('BAD_REQUEST', `transfer needs ?to=<replica id 1..31>, got ${JSON.stringify(url.searchParams.get('to'))}`);
      return target.transfer(to);
    }
    default:
      throw new QsyncError('BAD_REQUEST', `no such admin request: ${key}; try GET /status, /cluster, /health/leader, /health/replica, /metrics, /tables; POST /promote, /demote, /rejoin, /transfer?to=N, /members; PUT /tables/<name>; DELETE /members/<id>`);
  }
}

function answer(response: ServerResponse, status: number, body: unknown): void {
  response.writeHead(status, { 'content-type': 'application/json' });
  response.end(JSON.stringify(body));
}

/** Call a node's admin interface (the CLI and tests); a refusal throws with the node's code and message. */
export async function adminRequest<T = SidecarStatus>(address: string, method: 'GET' | 'POST' | 'PUT' | 'DELETE', path: string, options: { token?: string; body?: unknown; timeoutMs?: number } = {}): Promise<T> {
  const headers: Record<string, string> = {};
  if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`;
  const payload = options.body === undefined ? null : Buffer.from(JSON.stringify(options.body));
  if (payload !== null) {
    headers['content-type'] = 'application/json';
    headers['content-length'] = String(payload.length);
  }
  const text = await httpText(address, method, path, headers, payload, options.timeoutMs ?? 30_000);
  let body: T & { error?: { code: string; message: string } & Record<string, unknown> };
  try {
    body = JSON.parse(text) as typeof body;
  } catch {
    throw new QsyncError('BAD_REQUEST', `${address}${path} did not answer JSON: ${text.slice(0, 200)}`);
  }
  if (body.error !== undefined) {
    const { code, message, ...context } = body.error;
    // The node's own code, so callers can tell NOT_LEADER from BAD_REQUEST; an unknown one stays BAD_REQUEST.
    throw new QsyncError((code in STATUS_OF ? code : 'BAD_REQUEST') as ErrorCode, message, context);
  }
  return body;
}

/**
 * One HTTP request with node:http, its body as text. Not fetch: a sidecar
 * asks its peers' admin interfaces (GET /cluster), and undici, loaded on
 * first use, costs a sidecar some 20 MiB of resident memory.
 */
function httpText(address: string, method: string, path: string, headers: Record<string, string>, payload: Buffer | null, timeoutMs: number): Promise<string> {
  const { host, port } = splitAddress(address);
  return new Promise((resolve, reject) => {
    const request = httpRequest({ host, port, method, path, headers, timeout: timeoutMs, agent: false }, (response) => {
      const chunks: Buffer[] = [];
      let bytes = 0;
      response.on('data', (chunk: Buffer) => {
        bytes += chunk.length;
        if (bytes > ANSWER_BYTES_MAX) request.destroy(new Error(`the answer of ${address}${path} is over ${ANSWER_BYTES_MAX} bytes`));
        else chunks.push(chunk);
      });
      response.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
      response.on('error', reject);
    });
    request.on('timeout', () => request.destroy(new Error(`${address} did not answer ${method} ${path} within ${timeoutMs} ms`)));
    request.on('error', reject);
    request.end(payload ?? undefined);
  });
}

/** An admin answer larger than this is refused (a status or cluster view is a few KiB; metrics some tens). */
const ANSWER_BYTES_MAX = 16 * 1024 * 1024;
