// A local cluster on embedded PostgreSQL: N PostgreSQL servers and N sidecar
// processes on free (or given) ports. `qsync cluster up` and the end-to-end
// tests both use it, so the tests run what a user runs.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { adminRequest } from '../admin/server.js';
import { LinkProxy } from '../drill/proxy.js';
import { freePorts, launchPostgres, migrate, setTableMode, type PgServer } from '../postgres/index.js';
import { MEMBER_FILE } from '../sidecar/config.js';
import type { SidecarStatus } from '../sidecar/status.js';

const BIN = fileURLToPath(new URL('../../bin/qsync.js', import.meta.url));

/**
 * Node's flags for a sidecar: a young generation of 4 MiB semi-spaces instead
 * of 16. A sidecar's garbage is short-lived frames and rows, and V8 otherwise
 * keeps up to 48 MiB of young generation resident: with it a sidecar peaks
 * near 160 MiB after a few thousand writes, with this near 125 MiB (the README
 * says so for sidecars started by hand: NODE_OPTIONS). The old generation's
 * growth the sidecar sets itself (cli/main.ts).
 */
export const SIDECAR_NODE_ARGS: readonly string[] = ['--max-semi-space-size=4'];

/** Sidecars this process started: killed on exit, so none outlives a failed test or launcher. */
const children = new Set<ChildProcess>();
let exitHookInstalled = false;
function track(child: ChildProcess): void {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once('exit', () => {
      for (const c of children) c.kill('SIGKILL');
    });
  }
  children.add(child);
  child.once('exit', () => children.delete(child));
}

export interface ClusterOptions {
  readonly nodes?: number;
  /** Where the nodes' data goes; default a temporary directory removed by stop(). */
  readonly dir?: string;
  readonly synchroTimeoutMs?: number;
  readonly electionTimeoutMs?: number;
  /** Election mode per replica (default candidate for all). */
  readonly electionModes?: Readonly<Record<number, 'candidate' | 'voter' | 'manual' | 'off'>>;
  /** Put a LinkProxy on every directed peer link, so that tests can partition nodes. */
  readonly proxies?: boolean;
  /** Wait until a leader accepts writes before returning (default true). */
  readonly waitForLeader?: boolean;
  readonly secret?: string;
  /** Tables to create on every node and mark, before the sidecars start. */
  readonly tables?: ReadonlyArray<{ readonly ddl: string; readonly name: string; readonly mode: 'sync' | 'async' }>;
  /** The admin interfaces' token (default: a random one; null: none, so the nodes refuse mutating admin requests). */
  readonly adminToken?: string | null;
  /** Redis for discovery and events (optional). */
  readonly redisUrl?: string;
  /** Each line a sidecar logs, besides its sidecar.log (`cluster up` shows them in a terminal). */
  readonly onLog?: (replica: number, line: string) => void;
  readonly logLevel?: string;
  /** Extra settings for a node's sidecar (flags), read each time it starts. */
  readonly sidecarArgs?: (replica: number) => readonly string[];
  /** Extra node options for the sidecar processes (e.g. --cpu-prof, to see where a benchmark's time goes). */
  readonly nodeArgs?: readonly string[];
  /** Start a sidecar again, a second later, when it exits by itself (not stopped or killed through its handle): qsync cluster up. */
  readonly restartSidecars?: boolean;
}

export interface ClusterNode {
  readonly replica: number;
  readonly pg: PgServer;
  readonly peerPort: number;
  readonly clientPort: number;
  readonly clientAddress: string;
  readonly adminAddress: string;
  /** The node's SQL port: PostgreSQL's own protocol (front/server.ts). */
  readonly sqlPort: number;
  /** A postgresql:// URL of the SQL port, as the cluster's superuser (psql, drivers). */
  readonly sqlUrl: string;
  readonly dataDir: string;
  /** The sidecar process, while it runs. */
  process: ChildProcess | null;
  startSidecar(): Promise<void>;
  /** SIGTERM and wait (clean stop). */
  stopSidecar(): Promise<void>;
  /** SIGKILL the sidecar: a crash. */
  killSidecar(): Promise<void>;
  /** SIGSTOP / SIGCONT the sidecar: a frozen process (a long GC pause, a stalled VM). */
  pause(): void;
  resume(): void;
  /** The node's admin status. */
  status(): Promise<SidecarStatus>;
  /** A request to the node's admin interface, with the cluster's token. */
  admin<T = unknown>(method: 'GET' | 'POST' | 'PUT' | 'DELETE', path: string, body?: unknown): Promise<T>;
  /** A connection to this node's PostgreSQL, as the test or operator. */
  sql(): Promise<pg.Client>;
}

export interface LocalCluster {
  readonly nodes: readonly ClusterNode[];
  readonly clientAddresses: readonly string[];
  /** The embedded servers' superuser, for clients of a local cluster. */
  readonly credentials: { readonly user: string; readonly password: string };
  /** The token of the nodes' admin interfaces (mutating requests); '' when started without one. */
  readonly adminToken: string;
  /** The file holding the cluster secret (mode 0600). */
  readonly secretFile: string;
  readonly redisUrl: string | undefined;
  /** The node accepting sync writes, once there is one (throws after `timeoutMs`). */
  leader(timeoutMs?: number, exclude?: readonly number[]): Promise<ClusterNode>;
  /**
   * A new node with an empty embedded PostgreSQL, started with qsync join
   * --from node `from`'s admin address (default 1). Resolves once its sidecar
   * is ready (its snapshot may still be loading); it joins `nodes`.
   */
  join(options?: { readonly from?: number; readonly args?: readonly string[] }): Promise<ClusterNode>;
  /** Cut every peer link to and from `replica` (needs `proxies`). */
  isolate(replica: number): void;
  /** Heal every cut link. */
  heal(): void;
  /** The proxy on node `from`'s link to node `to` (needs `proxies`). */
  proxy(from: number, to: number): LinkProxy;
  stop(): Promise<void>;
}

export async function startLocalCluster(options: ClusterOptions = {}): Promise<LocalCluster> {
  const temporary = options.dir === undefined;
  const root = options.dir === undefined ? await mkdtemp(join(tmpdir(), 'qsync-cluster-')) : resolve(options.dir);
  try {
    return await startIn(root, temporary, options);
  } catch (error) {
    // A cluster that fails to start leaves nothing behind in a directory it created.
    if (temporary) await rm(root, { recursive: true, force: true });
    throw error;
  }
}

async function startIn(root: string, temporary: boolean, options: ClusterOptions): Promise<LocalCluster> {
  const count = options.nodes ?? 3;
  await mkdir(root, { recursive: true });
  await chmod(root, 0o755); // PostgreSQL runs as the postgres OS user under root and must reach its directory
  // A random secret per cluster, in its directory, readable by its owner only; sidecars read the
  // file (--secret-file), so the secret is never on a command line where ps shows it.
  const secretFile = join(root, SECRET_FILE);
  await writeFile(secretFile, `${options.secret ?? randomBytes(24).toString('hex')}\n`, { mode: 0o600 });
  await chmod(secretFile, 0o600);
  const adminToken = options.adminToken === undefined ? randomBytes(16).toString('hex') : options.adminToken;
  let ports = await nodePorts(count);
  // proxies[i][j]: node i+1's connection to node j+1's peer port.
  const proxies = new Map<string, LinkProxy>();
  if (options.proxies === true) {
    for (let i = 0; i < count; i += 1) {
      for (let j = 0; j < count; j += 1) {
        if (i === j) continue;
        const proxy = new LinkProxy(() => ({ host: '127.0.0.1', port: (ports[j] as { peer: number }).peer }));
        await proxy.listen();
        proxies.set(`${i + 1}>${j + 1}`, proxy);
      }
    }
  }
  // One superuser password for the cluster's servers (random; kept in each data directory): a
  // client's credentials must work on whichever node it reaches.
  const password = randomBytes(18).toString('base64url');
  const servers = await Promise.all(Array.from({ length: count }, (_, i) => launchPostgres({ dataDir: join(root, `node${i + 1}`, 'pg'), password })));
  for (const server of servers) {
    const client = new pg.Client({ connectionString: server.connectionString });
    await client.connect();
    await migrate(client);
    for (const table of options.tables ?? []) {
      await client.query(table.ddl);
      await setTableMode(client, table.name, table.mode);
    }
    await client.end();
  }
  const nodes: ClusterNode[] = servers.map((server, i) => {
    const replica = i + 1;
    const dataDir = join(root, `node${replica}`, 'journal');
    const args = (): string[] => {
      const own = ports[i] as NodePorts;
      const peerPort = (p: { peer: number }, j: number): number => proxies.get(`${replica}>${j + 1}`)?.port ?? p.peer;
      const peers = ports.map((p, j) => `${j + 1}@127.0.0.1:${peerPort(p, j)}+${p.client}+${p.admin}+${p.sql}`).filter((_, j) => j !== i).join(',');
      return [
        ...SIDECAR_NODE_ARGS, ...(options.nodeArgs ?? []), BIN, 'start', '--replica-id', String(replica), '--cluster-id', 'local', '--peers', peers,
        '--data-dir', dataDir, '--secret-file', secretFile,
        '--peer-port', String(own.peer), '--client-port', String(own.client), '--admin-port', String(own.admin), '--sql-port', String(own.sql),
        '--synchro-timeout-ms', String(options.synchroTimeoutMs ?? 5_000), '--election-timeout-ms', String(options.electionTimeoutMs ?? 1_000),
        '--election-mode', options.electionModes?.[replica] ?? 'candidate',
        ...(options.redisUrl === undefined ? [] : ['--redis-url', options.redisUrl]),
        ...(options.logLevel === undefined ? [] : ['--log-level', options.logLevel]),
        ...(options.sidecarArgs?.(replica) ?? []),
      ];
    };
    return nodeHandle({ replica: () => replica, server, dataDir, dir: join(root, `node${replica}`), args, ports: () => ports[i] as NodePorts, adminToken, onLog: options.onLog, restart: options.restartSidecars === true });
  });
  // A free port can be taken between our probe and the sidecar's bind: start again on new ports.
  for (let attempt = 1; ; attempt += 1) {
    try {
      await Promise.all(nodes.map((n) => n.startSidecar()));
      break;
    } catch (error) {
      await Promise.all(nodes.map((n) => n.stopSidecar()));
      if (attempt >= 3) {
        await Promise.all(servers.map((s) => s.destroy()));
        throw error;
      }
      ports = await nodePorts(count);
    }
  }
  const leader = async (timeoutMs = 15_000, exclude: readonly number[] = []): Promise<ClusterNode> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const candidates = nodes.filter((n) => n.process !== null && !exclude.includes(n.replica));
      const statuses = await Promise.all(candidates.map((n) => n.status().catch(() => null)));
      const found = candidates.find((_, k) => statuses[k]?.writable === true);
      if (found !== undefined) return found;
      if (Date.now() > deadline) throw new Error(`no leader accepting writes within ${timeoutMs} ms: ${JSON.stringify(statuses.map((s) => s && { replica: s.replica, role: s.role, term: s.term, leader: s.leader }))}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  const proxy = (from: number, to: number): LinkProxy => {
    const found = proxies.get(`${from}>${to}`);
    if (found === undefined) throw new Error(`no proxy on link ${from}>${to}: start the cluster with proxies: true`);
    return found;
  };
  if (options.waitForLeader !== false) await leader();
  return {
    nodes,
    clientAddresses: nodes.map((n) => n.clientAddress),
    credentials: { user: servers[0]?.user ?? 'postgres', password: servers[0]?.password ?? '' },
    adminToken: adminToken ?? '',
    secretFile,
    redisUrl: options.redisUrl,
    leader,
    proxy,
    join: async ({ from = 1, args: extra = [] } = {}) => {
      const dir = join(root, `node${nodes.length + 1}`);
      const server = await launchPostgres({ dataDir: join(dir, 'pg'), password: servers[0]?.password ?? password });
      const [own] = await nodePorts(1) as [NodePorts];
      const dataDir = join(dir, 'journal');
      const source = nodes.find((n) => n.replica === from);
      if (source === undefined) throw new Error(`no node ${from} to join from`);
      let replica = 0;
      const args = (): string[] => [
        ...SIDECAR_NODE_ARGS, ...(options.nodeArgs ?? []), BIN, 'join', '--from', source.adminAddress, '--cluster-id', 'local',
        '--data-dir', dataDir, '--secret-file', secretFile,
        '--peer-port', String(own.peer), '--client-port', String(own.client), '--admin-port', String(own.admin), '--sql-port', String(own.sql),
        '--synchro-timeout-ms', String(options.synchroTimeoutMs ?? 5_000), '--election-timeout-ms', String(options.electionTimeoutMs ?? 1_000),
        ...(options.logLevel === undefined ? [] : ['--log-level', options.logLevel]),
        ...extra,
      ];
      const node = nodeHandle({ replica: () => replica, server, dataDir, dir, args, ports: () => own, adminToken, onLog: options.onLog, restart: options.restartSidecars === true });
      nodes.push(node);
      await node.startSidecar();
      replica = (JSON.parse(await readFile(join(dataDir, MEMBER_FILE), 'utf8')) as { replicaId: number }).replicaId;
      return node;
    },
    isolate: (replica) => {
      for (const n of nodes) {
        if (n.replica === replica) continue;
        proxy(replica, n.replica).cut();
        proxy(n.replica, replica).cut();
      }
    },
    heal: () => {
      for (const p of proxies.values()) p.heal();
    },
    stop: async () => {
      for (const n of nodes) if (n.process !== null) n.resume();
      await Promise.all(nodes.map((n) => n.stopSidecar()));
      await Promise.all([...proxies.values()].map((p) => p.close()));
      await Promise.all(nodes.map((n) => n.pg.destroy()));
      if (temporary) await rm(root, { recursive: true, force: true });
    },
  };
}

/** One libpq URL naming every node's SQL port, that finds whichever leads (target_session_attrs=read-write). */
export function multiHostUrl(urls: readonly string[]): string {
  const parsed = urls.map((u) => new URL(u));
  const first = parsed[0];
  if (first === undefined) return '';
  const hosts = parsed.map((u) => `${u.hostname}:${u.port}`).join(',');
  return `postgresql://${first.username}:${first.password}@${hosts}${first.pathname}?target_session_attrs=read-write`;
}

type NodePorts = { readonly peer: number; readonly client: number; readonly admin: number; readonly sql: number };

/** The cluster secret's file in the cluster's directory (mode 0600). */
export const SECRET_FILE = 'secret';

/** One node of a local cluster: its PostgreSQL and how its sidecar starts and is reached. */
function nodeHandle({ replica, server, dataDir, dir, args, ports, adminToken, onLog, restart = false }: {
  /** The replica id; a node that joins learns it from the leader, so it is asked for each time. */
  replica: () => number; server: PgServer; dataDir: string; dir: string; args: () => string[]; ports: () => NodePorts; adminToken: string | null;
  onLog: ((replica: number, line: string) => void) | undefined;
  /** Start the sidecar again when it exits by itself. */
  restart?: boolean;
}): ClusterNode {
  /** The sidecar is being stopped or killed through this handle: its exit is expected. */
  let stopping = false;
  const ending = async (signal: NodeJS.Signals): Promise<void> => {
    stopping = true;
    try {
      await stopChild(node, signal);
    } finally {
      stopping = false;
    }
  };
  const node: ClusterNode = {
    get replica() {
      return replica();
    },
    pg: server, dataDir, process: null,
    get peerPort() {
      return ports().peer;
    },
    get clientPort() {
      return ports().client;
    },
    get clientAddress() {
      return `127.0.0.1:${ports().client}`;
    },
    get adminAddress() {
      return `127.0.0.1:${ports().admin}`;
    },
    get sqlPort() {
      return ports().sql;
    },
    get sqlUrl() {
      return `postgresql://${encodeURIComponent(server.user)}:${encodeURIComponent(server.password)}@127.0.0.1:${ports().sql}/${server.database}`;
    },
    startSidecar: async () => {
      // The token and PostgreSQL's URL (it holds a password) go by environment, not on the command
      // line where ps shows them to every local user.
      // Over the Unix socket when there is one: the sidecar's many small queries cost less than over TCP.
      const env: NodeJS.ProcessEnv = { ...process.env, QSYNC_PG_URL: server.localConnectionString ?? server.connectionString };
      delete env.QSYNC_ADMIN_TOKEN;
      if (adminToken !== null) env.QSYNC_ADMIN_TOKEN = adminToken;
      const child = spawn(process.execPath, args(), { stdio: ['ignore', 'pipe', 'pipe'], env });
      track(child);
      node.process = child;
      const log = createWriteStream(join(dir, 'sidecar.log'), { flags: 'a' });
      child.stderr.pipe(log);
      await new Promise<void>((ready, failed) => {
        const lines = createInterface({ input: child.stdout });
        lines.on('line', (line) => {
          log.write(`${line}\n`);
          onLog?.(node.replica, line);
          if (line.includes('"qsync node ready"')) ready();
        });
        child.once('exit', (code, signal) => failed(new Error(`sidecar ${node.replica} exited (${code ?? signal}) before it was ready; see ${join(dir, 'sidecar.log')}`)));
      });
      if (restart) {
        child.once('exit', (code, signal) => {
          if (stopping || node.process !== child) return;
          node.process = null;
          log.write(`${JSON.stringify({ level: 50, time: Date.now(), node: node.replica, code, signal, msg: 'the sidecar exited by itself; starting it again in 1 s' })}\n`);
          onLog?.(node.replica, JSON.stringify({ level: 50, time: Date.now(), node: node.replica, msg: `sidecar exited by itself (${code ?? signal}); starting it again in 1 s` }));
          setTimeout(() => {
            if (!stopping && node.process === null) void node.startSidecar().catch(() => undefined);
          }, 1_000).unref();
        });
      }
    },
    stopSidecar: async () => ending('SIGTERM'),
    killSidecar: async () => ending('SIGKILL'),
    pause: () => node.process?.kill('SIGSTOP'),
    resume: () => node.process?.kill('SIGCONT'),
    status: () => adminRequest<SidecarStatus>(node.adminAddress, 'GET', '/status'),
    admin: <T>(method: 'GET' | 'POST' | 'PUT' | 'DELETE', path: string, body?: unknown) => adminRequest<T>(node.adminAddress, method, path, { ...(adminToken === null ? {} : { token: adminToken }), ...(body === undefined ? {} : { body }) }),
    sql: async () => {
      const client = new pg.Client({ connectionString: server.connectionString });
      client.on('error', () => undefined);
      await client.connect();
      return client;
    },
  };
  return node;
}

async function nodePorts(count: number): Promise<NodePorts[]> {
  const ports = await freePorts(count * 4);
  return Array.from({ length: count }, (_, i) => ({ peer: ports[4 * i] as number, client: ports[4 * i + 1] as number, admin: ports[4 * i + 2] as number, sql: ports[4 * i + 3] as number }));
}

async function stopChild(node: ClusterNode, signal: NodeJS.Signals): Promise<void> {
  const child = node.process;
  if (child === null || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill(signal);
  await exited;
  node.process = null;
}
