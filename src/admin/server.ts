// The admin interface: HTTP with JSON answers, on its own port (--admin-port).
//
//   GET  /status              the node's election, limbo, vclocks and peers
//   POST /promote             campaign now; answers once this node accepts writes
//   POST /demote              the leader steps down
//   POST /transfer?to=N       switchover: hand leadership to replica N
//
// Errors answer with a status code and { error: { code, message } }; nothing a
// request carries can stop the node.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { QsyncError } from '../core/errors.js';
import { isReplicaId, type ReplicaId } from '../core/types.js';
import type { Logger } from '../log.js';
import { listen } from '../net/listen.js';
import type { NodeStatus } from '../sidecar/node.js';

/** What the admin interface drives: the sidecar node. */
export interface AdminTarget {
  status(): NodeStatus;
  promote(): Promise<NodeStatus>;
  demote(): NodeStatus;
  transfer(to: ReplicaId): Promise<NodeStatus>;
}

const STATUS_OF: Partial<Record<string, number>> = { BAD_REQUEST: 400, NOT_LEADER: 409, STALE_TERM: 409 };

export class AdminServer {
  readonly #server: Server;

  constructor(target: AdminTarget, log: Logger) {
    this.#server = createServer((request, response) => {
      void route(target, request).then(
        (body) => answer(response, 200, body),
        (error: unknown) => {
          if (error instanceof QsyncError) {
            answer(response, STATUS_OF[error.code] ?? 500, { error: { code: error.code, message: error.message, ...error.context } });
            return;
          }
          log.error({ err: (error as Error).message, url: request.url }, 'admin request failed');
          answer(response, 500, { error: { code: 'INTERNAL', message: (error as Error).message } });
        },
      );
    });
  }

  listen(port: number, host: string): Promise<number> {
    return listen(this.#server, port, host);
  }

  close(): Promise<void> {
    this.#server.closeAllConnections();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }
}

async function route(target: AdminTarget, request: IncomingMessage): Promise<unknown> {
  const url = new URL(request.url ?? '/', 'http://admin');
  const key = `${request.method ?? 'GET'} ${url.pathname}`;
  switch (key) {
    case 'GET /status':
      return target.status();
    case 'POST /promote':
      return target.promote();
    case 'POST /demote':
      return target.demote();
    case 'POST /transfer': {
      const to = Number(url.searchParams.get('to'));
      if (!isReplicaId(to) || to === 0) throw new QsyncError('BAD_REQUEST', `transfer needs ?to=<replica id 1..31>, got ${JSON.stringify(url.searchParams.get('to'))}`);
      return target.transfer(to);
    }
    default:
      throw new QsyncError('BAD_REQUEST', `no such admin request: ${key}; try GET /status, POST /promote, POST /demote, POST /transfer?to=N`);
  }
}

function answer(response: ServerResponse, status: number, body: unknown): void {
  response.writeHead(status, { 'content-type': 'application/json' });
  response.end(JSON.stringify(body));
}

/** Call a node's admin interface (the CLI and tests); a refusal throws with the node's message. */
export async function adminRequest(address: string, method: 'GET' | 'POST', path: string): Promise<NodeStatus> {
  const response = await fetch(`http://${address}${path}`, { method, signal: AbortSignal.timeout(30_000) });
  const body = (await response.json()) as NodeStatus & { error?: { code: string; message: string } };
  if (body.error !== undefined) throw new QsyncError(body.error.code === 'NOT_LEADER' ? 'NOT_LEADER' : 'BAD_REQUEST', body.error.message);
  return body;
}
