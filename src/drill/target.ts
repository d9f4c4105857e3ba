// What a drill drives: a cluster whose processes it may kill, pause and
// restart, and whose peer links it may cut. Two kinds: a LocalCluster in this
// process (tests), and the control interface that `qsync cluster up` serves
// on loopback, with a token, so that `qsync drill` in another process can
// drive it. Fault injection is never on a sidecar's own admin port.
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { join } from 'node:path';
import { multiHostUrl, type LocalCluster } from '../cli/cluster.js';
import { listen } from '../net/listen.js';
import type { LinkFault } from './proxy.js';

export interface DrillNode {
  readonly replica: number;
  readonly clientAddress: string;
  readonly adminAddress: string;
  readonly pgUrl: string;
  /** The node's SQL port as a postgresql:// URL (PostgreSQL's own protocol, through qsync), when it has one. */
  readonly sqlUrl?: string;
}

export type NodeAction = 'kill-sidecar' | 'start-sidecar' | 'stop-sidecar' | 'pause' | 'resume' | 'kill-postgres' | 'start-postgres';
const NODE_ACTIONS: readonly NodeAction[] = ['kill-sidecar', 'start-sidecar', 'stop-sidecar', 'pause', 'resume', 'kill-postgres', 'start-postgres'];

export interface DrillTarget {
  readonly nodes: readonly DrillNode[];
  readonly credentials: { readonly user: string; readonly password: string };
  readonly cluster: string;
  /** The nodes' admin token (transfer). */
  readonly adminToken: string;
  /** Where drill start and end events go, if the cluster uses Redis. */
  readonly redisUrl: string | undefined;
  act(replica: number, action: NodeAction): Promise<void>;
  /** Set the fault on node `from`'s link to node `to`. */
  link(from: number, to: number, fault: LinkFault): Promise<void>;
  /** Every link back to none. */
  heal(): Promise<void>;
}

/** A cluster started in this process with proxies. */
export function localTarget(cluster: LocalCluster): DrillTarget {
  const node = (replica: number): LocalCluster['nodes'][number] => {
    const found = cluster.nodes.find((n) => n.replica === replica);
    if (found === undefined) throw new RangeError(`no node ${replica} in this cluster (nodes ${cluster.nodes.map((n) => n.replica).join(', ')})`);
    return found;
  };
  return {
    nodes: cluster.nodes.map((n) => ({ replica: n.replica, clientAddress: n.clientAddress, adminAddress: n.adminAddress, pgUrl: n.pg.connectionString, sqlUrl: n.sqlUrl })),
    credentials: cluster.credentials,
    cluster: 'local',
    adminToken: cluster.adminToken,
    redisUrl: cluster.redisUrl,
    act: async (replica, action) => {
      const n = node(replica);
      switch (action) {
        case 'kill-sidecar': return n.killSidecar();
        case 'start-sidecar': return n.process === null ? n.startSidecar() : undefined;
        case 'stop-sidecar': return n.stopSidecar();
        case 'pause': return n.pause();
        case 'resume': return n.resume();
        case 'kill-postgres': return n.pg.kill();
        case 'start-postgres': return n.pg.start();
      }
    },
    link: async (from, to, fault) => cluster.proxy(from, to).set(fault),
    heal: async () => cluster.heal(),
  };
}

/** What `qsync cluster up` writes beside its nodes, for `qsync drill`. */
export interface ClusterFile {
  readonly cluster: string;
  readonly nodes: readonly DrillNode[];
  readonly credentials: { readonly user: string; readonly password: string };
  readonly control: { readonly address: string; readonly token: string };
  readonly adminToken: string;
  readonly redisUrl?: string;
  /** One postgresql:// URL naming every node's SQL port, with target_session_attrs=read-write: it reaches the leader. */
  readonly sqlUrl?: string;
  /** The `qsync cluster up` process (`qsync cluster down` stops it). */
  readonly pid: number;
}

/** The cluster file in `dir`; a clear error if there is none. */
export async function readClusterFile(dir: string): Promise<ClusterFile> {
  try {
    return JSON.parse(await readFile(join(dir, CLUSTER_FILE), 'utf8')) as ClusterFile;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new Error(`no running local cluster: ${join(dir, CLUSTER_FILE)} is missing; start one with qsync cluster up (or pass --cluster-dir)`);
    throw error;
  }
}

export const CLUSTER_FILE = 'cluster.json';

/** Serve a local cluster's fault injection on loopback and write the cluster file; returns a stop function. */
export async function serveControl(cluster: LocalCluster, dir: string): Promise<() => Promise<void>> {
  const target = localTarget(cluster);
  const token = randomBytes(16).toString('hex');
  const server: Server = createServer((request, response) => {
    void control(target, token, request).then(
      () => {
        response.writeHead(204).end();
      },
      (error: unknown) => {
        response.writeHead(error instanceof RangeError || error instanceof SyntaxError ? 400 : 500, { 'content-type': 'application/json' });
        response.end(JSON.stringify({ error: (error as Error).message }));
      },
    );
  });
  const port = await listen(server, 0, '127.0.0.1');
  const file: ClusterFile = {
    cluster: target.cluster, nodes: target.nodes, credentials: target.credentials, control: { address: `127.0.0.1:${port}`, token },
    adminToken: target.adminToken, ...(target.redisUrl === undefined ? {} : { redisUrl: target.redisUrl }), sqlUrl: multiHostUrl(cluster.nodes.map((n) => n.sqlUrl)), pid: process.pid,
  };
  await writeFile(join(dir, CLUSTER_FILE), `${JSON.stringify(file, null, 2)}\n`, { mode: 0o600 });
  return () => new Promise((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  });
}

async function control(target: DrillTarget, token: string, request: IncomingMessage): Promise<void> {
  if (request.headers.authorization !== `Bearer ${token}`) throw new RangeError('wrong or missing control token: read it from the cluster file');
  const url = new URL(request.url ?? '/', 'http://control');
  let body = '';
  for await (const chunk of request) body += String(chunk);
  const nodeAction = /^\/nodes\/(\d+)\/([a-z-]+)$/.exec(url.pathname);
  if (request.method === 'POST' && nodeAction !== null) {
    const action = nodeAction[2] as NodeAction;
    if (!NODE_ACTIONS.includes(action)) throw new RangeError(`unknown node action ${action}; one of ${NODE_ACTIONS.join(', ')}`);
    return target.act(Number(nodeAction[1]), action);
  }
  if (request.method === 'POST' && url.pathname === '/links') {
    const { from, to, fault } = JSON.parse(body) as { from: number; to: number; fault: LinkFault };
    return target.link(from, to, fault);
  }
  if (request.method === 'POST' && url.pathname === '/heal') return target.heal();
  throw new RangeError(`no such control request: ${request.method ?? ''} ${url.pathname}`);
}

/** Drive the cluster that `qsync cluster up` runs, from its cluster file. */
export async function remoteTarget(dir: string): Promise<DrillTarget> {
  const file = await readClusterFile(dir);
  const call = async (path: string, body?: unknown): Promise<void> => {
    let response: Response;
    try {
      response = await fetch(`http://${file.control.address}${path}`, {
        method: 'POST', headers: { authorization: `Bearer ${file.control.token}`, 'content-type': 'application/json' },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }), signal: AbortSignal.timeout(60_000),
      });
    } catch (error) {
      throw new Error(`the cluster's control interface at ${file.control.address} does not answer (${(error as Error).message}); is qsync cluster up still running?`, { cause: error });
    }
    if (!response.ok) throw new Error(`control ${path}: ${((await response.json()) as { error: string }).error}`);
  };
  return {
    nodes: file.nodes,
    credentials: file.credentials,
    cluster: file.cluster,
    adminToken: file.adminToken,
    redisUrl: file.redisUrl,
    act: (replica, action) => call(`/nodes/${replica}/${action}`),
    link: (from, to, fault) => call('/links', { from, to, fault }),
    heal: () => call('/heal'),
  };
}
