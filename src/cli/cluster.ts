// A local cluster on embedded PostgreSQL: N PostgreSQL servers and N sidecar
// processes on free (or given) ports. `qsync cluster up` and the end-to-end
// tests both use it, so the tests run what a user runs.
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { chmod, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { freePorts, launchPostgres, migrate, setTableMode, type PgServer } from '../postgres/index.js';

const BIN = fileURLToPath(new URL('../../bin/qsync.js', import.meta.url));

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
  readonly secret?: string;
  /** Tables to create on every node and mark, before the sidecars start. */
  readonly tables?: ReadonlyArray<{ readonly ddl: string; readonly name: string; readonly mode: 'sync' | 'async' }>;
}

export interface ClusterNode {
  readonly replica: number;
  readonly pg: PgServer;
  readonly peerPort: number;
  readonly clientPort: number;
  readonly clientAddress: string;
  readonly dataDir: string;
  /** The sidecar process, while it runs. */
  process: ChildProcess | null;
  startSidecar(): Promise<void>;
  /** SIGTERM and wait (clean stop). */
  stopSidecar(): Promise<void>;
  /** SIGKILL the sidecar: a crash. */
  killSidecar(): Promise<void>;
  /** A connection to this node's PostgreSQL, as the test or operator. */
  sql(): Promise<pg.Client>;
}

export interface LocalCluster {
  readonly nodes: readonly ClusterNode[];
  readonly clientAddresses: readonly string[];
  /** The embedded servers' superuser, for clients of a local cluster. */
  readonly credentials: { readonly user: string; readonly password: string };
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
  const secret = options.secret ?? 'local-cluster-secret-0123456789';
  let ports = await nodePorts(count);
  const servers = await Promise.all(Array.from({ length: count }, (_, i) => launchPostgres({ dataDir: join(root, `node${i + 1}`, 'pg') })));
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
      const own = ports[i] as { peer: number; client: number };
      const peers = ports.map((p, j) => `${j + 1}@127.0.0.1:${p.peer}+${p.client}`).filter((_, j) => j !== i).join(',');
      return [
        '--import', 'tsx', BIN, 'start', '--replica-id', String(replica), '--cluster-id', 'local', '--peers', peers,
        '--pg-url', server.connectionString, '--data-dir', dataDir, '--secret', secret, '--leader', '1',
        '--peer-port', String(own.peer), '--client-port', String(own.client), '--synchro-timeout-ms', String(options.synchroTimeoutMs ?? 5_000),
      ];
    };
    const node: ClusterNode = {
      replica, pg: server, dataDir, process: null,
      get peerPort() {
        return (ports[i] as { peer: number }).peer;
      },
      get clientPort() {
        return (ports[i] as { client: number }).client;
      },
      get clientAddress() {
        return `127.0.0.1:${(ports[i] as { client: number }).client}`;
      },
      startSidecar: async () => {
        const child = spawn(process.execPath, args(), { stdio: ['ignore', 'pipe', 'pipe'] });
        track(child);
        node.process = child;
        const log = createWriteStream(join(root, `node${replica}`, 'sidecar.log'), { flags: 'a' });
        child.stderr.pipe(log);
        await new Promise<void>((ready, failed) => {
          const lines = createInterface({ input: child.stdout });
          lines.on('line', (line) => {
            log.write(`${line}\n`);
            if (line.includes('"qsync node ready"')) ready();
          });
          child.once('exit', (code, signal) => failed(new Error(`sidecar ${replica} exited (${code ?? signal}) before it was ready; see ${join(root, `node${replica}`, 'sidecar.log')}`)));
        });
      },
      stopSidecar: async () => stopChild(node, 'SIGTERM'),
      killSidecar: async () => stopChild(node, 'SIGKILL'),
      sql: async () => {
        const client = new pg.Client({ connectionString: server.connectionString });
        client.on('error', () => undefined);
        await client.connect();
        return client;
      },
    };
    return node;
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
  return {
    nodes,
    clientAddresses: nodes.map((n) => n.clientAddress),
    credentials: { user: servers[0]?.user ?? 'postgres', password: servers[0]?.password ?? '' },
    stop: async () => {
      await Promise.all(nodes.map((n) => n.stopSidecar()));
      await Promise.all(nodes.map((n) => n.pg.destroy()));
      if (temporary) await rm(root, { recursive: true, force: true });
    },
  };
}

async function nodePorts(count: number): Promise<Array<{ peer: number; client: number }>> {
  const ports = await freePorts(count * 2);
  return Array.from({ length: count }, (_, i) => ({ peer: ports[2 * i] as number, client: ports[2 * i + 1] as number }));
}

async function stopChild(node: ClusterNode, signal: NodeJS.Signals): Promise<void> {
  const child = node.process;
  if (child === null || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill(signal);
  await exited;
  node.process = null;
}
