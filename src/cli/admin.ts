// The operator commands: `qsync status`, `table`, `promote`, `demote`,
// `transfer`, over the nodes' admin interfaces (like patronictl over
// Patroni's REST API). Which node: --admin host:port, else QSYNC_ADMIN, else
// the local cluster's file (--cluster-dir, default .qsync/cluster). The
// token for mutating requests: --token-file, else QSYNC_ADMIN_TOKEN, else that
// file; never --token, since ps shows a command line to every local user.
//
// Exit codes: 0 done; 1 refused or failed (the message says why); 2 usage;
// 3 no node reachable. `status` exits 1 when the cluster is degraded: no
// leader, or a node that does not answer or has no PostgreSQL.
import { parseArgs } from 'node:util';
import { adminRequest } from '../admin/server.js';
import type { ClusterView } from '../admin/view.js';
import { connect } from '../client/index.js';
import { QsyncError } from '../core/errors.js';
import { readClusterFile } from '../drill/target.js';
import { readSecretFile } from '../sidecar/config.js';
import type { SidecarStatus } from '../sidecar/status.js';

export const EXIT = { ok: 0, failed: 1, usage: 2, unreachable: 3 } as const;

/** A failure with the exit code it should end the command with. */
export class CliFailure extends Error {
  constructor(message: string, readonly exitCode: number) {
    super(message);
  }
}

const COMMON = { admin: { type: 'string' }, token: { type: 'string' }, 'token-file': { type: 'string' }, 'cluster-dir': { type: 'string', default: '.qsync/cluster' }, json: { type: 'boolean' } } as const;

export const ADMIN_HELP: Readonly<Record<string, string>> = {
  status: `usage: qsync status [--admin host:port] [--json]

Every node of the cluster as one node sees it: role, term, state, lag behind
the leader (records and seconds) and limbo length. --json prints the whole
view. Exit 0: a leader and every node running; 1: degraded (no leader, a
node unreachable or without PostgreSQL, or a node whose apply keeps failing,
shown under the table); 3: no node answered.`,
  table: `usage: qsync table <sync|async|local> <table> [--admin host:port] [--token-file F]
       qsync table list [--admin host:port] [--json]
       QSYNC_PASSWORD=P qsync table <sync|async|local> <table> --node host:port --user U

Set a table's mode on every node, through the leader (found for you), or list
the tables qsync knows and their modes. With --node/--user (password in
QSYNC_PASSWORD) the mode
is set as that PostgreSQL role through the client port instead of the admin
interface; the role must own the table. A table that holds rows on the
leader when it becomes replicated brings them to every node (the other nodes'
tables should be empty; their columns must match, or that node says which
column differs and waits until it is fixed).`,
  ddl: `usage: qsync ddl "<sql>" [--admin host:port] [--token-file F]

Run a schema change (ALTER TABLE ... ADD COLUMN, CREATE INDEX, CREATE TABLE)
on every node: on the leader (found for you) in a transaction of its own, then
on each other node at the same point of the journal, so replicated tables keep
the same shape. Leave out BEGIN/COMMIT; the SQL must give the same result on
every node (no now() or random() defaults on a table with rows). To drop a
replicated table, make it local first.`,
  promote: `usage: qsync promote [<node>] [--admin host:port] [--token-file F]

Make <node> (default: the node at --admin) campaign now; returns once it
accepts writes. For election mode manual, or as an override.`,
  demote: `usage: qsync demote [--admin host:port] [--token-file F]

The current leader (found for you) steps down and stays quiet for two
election timeouts; another node is elected.`,
  rejoin: `usage: qsync rejoin <node> [--admin host:port] [--token-file F]

For a node started with rejoin manual that lacks journal records every peer
has removed (qsync status says so): let it replace its replicated tables with
a peer's snapshot. Its local tables stay. A node with rejoin auto (the
default) does this by itself.`,
  remove: `usage: qsync remove <node> [--admin host:port] [--token-file F]

Remove <node> from the cluster, through the leader (found for you): a CONFIG
record confirmed by a quorum changes the members and the quorum (a majority
of the members left). One node at a time; the leader cannot remove itself
(qsync transfer first). The removed node stops voting and campaigning; stop
its sidecar afterwards. Its PostgreSQL keeps its data.`,
  leave: `usage: qsync leave [--admin host:port of the leaving node] [--token-file F]

The node at --admin leaves the cluster: as qsync remove <its id>, asked of
the leader. Stop its sidecar afterwards.`,
  transfer: `usage: qsync transfer <node> [--admin host:port] [--token-file F]

Switchover: the current leader (found for you) holds new writes, waits until
<node> holds its whole journal, and hands leadership over; no write fails.`,
};

interface Where {
  readonly addresses: readonly string[];
  readonly token: string | undefined;
}

/** The admin token from --token-file or QSYNC_ADMIN_TOKEN; --token is refused with where to put it instead. */
export function adminTokenOf(values: { token?: string | undefined; 'token-file'?: string | undefined }): string | undefined {
  if (values.token !== undefined) throw new CliFailure('--token: a secret is never taken from the command line, where ps shows it to every local user; put it in a file (--token-file F, mode 0600) or in QSYNC_ADMIN_TOKEN', EXIT.usage);
  const file = values['token-file'];
  if (file === undefined) return process.env.QSYNC_ADMIN_TOKEN === '' ? undefined : process.env.QSYNC_ADMIN_TOKEN;
  const read = readSecretFile(file);
  if (!read.ok) throw new CliFailure(`--token-file: ${read.problem}`, EXIT.usage);
  return read.value;
}

async function where(values: { admin?: string | undefined; token?: string | undefined; 'token-file'?: string | undefined; 'cluster-dir'?: string | undefined }): Promise<Where> {
  const given = (...texts: Array<string | undefined>): string | undefined => texts.find((t) => t !== undefined && t !== '');
  const token = adminTokenOf(values);
  const admin = given(values.admin, process.env.QSYNC_ADMIN);
  if (admin !== undefined) return { addresses: [admin], token };
  try {
    const file = await readClusterFile(values['cluster-dir'] ?? '.qsync/cluster');
    return { addresses: file.nodes.map((n) => n.adminAddress), token: token ?? file.adminToken };
  } catch {
    return { addresses: ['127.0.0.1:7601'], token };
  }
}

/** GET `path` from the first node that answers; a node's refusal is final, an unreachable node is skipped. */
async function firstAnswer<T>(at: Where, path: string): Promise<T> {
  const errors: string[] = [];
  for (const address of at.addresses) {
    try {
      return await adminRequest<T>(address, 'GET', path, { timeoutMs: 5_000 });
    } catch (error) {
      if (error instanceof QsyncError) throw new CliFailure(error.message, EXIT.failed);
      errors.push(`${address}: ${describe(error)}`);
    }
  }
  throw new CliFailure(`no node's admin interface answers (${errors.join('; ')}); is the node started with --admin-port? pass --admin host:port`, EXIT.unreachable);
}

/** The cluster view from the first node that answers. */
function view(at: Where): Promise<ClusterView> {
  return firstAnswer<ClusterView>(at, '/cluster');
}

function describe(error: unknown): string {
  const e = error as Error & { code?: string };
  return e.code === 'ECONNREFUSED' ? 'connection refused' : e.message;
}

function adminOf(v: ClusterView, replica: number): string {
  const member = v.members.find((m) => m.replica === replica);
  if (member === undefined) throw new CliFailure(`node ${replica} is not in cluster ${v.cluster} (nodes ${v.members.map((m) => m.replica).join(', ')})`, EXIT.failed);
  if (member.admin === null) throw new CliFailure(`node ${replica}'s admin address is unknown: give it in --peers as replica@host:peerPort+clientPort+adminPort, or pass --admin`, EXIT.failed);
  return member.admin;
}

function leaderOf(v: ClusterView): number {
  if (v.leader === null) throw new CliFailure(`cluster ${v.cluster} has no leader right now (an election may be under way); see qsync status`, EXIT.failed);
  return v.leader;
}

async function mutate<T>(address: string, method: 'POST' | 'PUT' | 'DELETE', path: string, token: string | undefined, body?: unknown): Promise<T> {
  try {
    return await adminRequest<T>(address, method, path, { ...(token === undefined ? {} : { token }), ...(body === undefined ? {} : { body }) });
  } catch (error) {
    if (error instanceof QsyncError) throw new CliFailure(error.message, EXIT.failed);
    throw new CliFailure(`node at ${address} does not answer: ${describe(error)}`, EXIT.unreachable);
  }
}

function parse(command: string, argv: readonly string[], extra: Record<string, { type: 'string' | 'boolean' }> = {}): { values: Record<string, string | boolean | undefined>; positionals: string[] } {
  try {
    return parseArgs({ args: [...argv], allowPositionals: true, options: { ...COMMON, ...extra } }) as { values: Record<string, string | boolean | undefined>; positionals: string[] };
  } catch (error) {
    throw new CliFailure(`${(error as Error).message}\n\n${ADMIN_HELP[command] ?? ''}`, EXIT.usage);
  }
}

const str = (v: string | boolean | undefined): string | undefined => (typeof v === 'string' ? v : undefined);

export async function status(argv: readonly string[]): Promise<number> {
  const { values } = parse('status', argv);
  const v = await view(await where({ admin: str(values.admin), 'cluster-dir': str(values['cluster-dir']) }));
  console.log(values.json === true ? JSON.stringify(v, null, 2) : formatView(v));
  const degraded = v.leader === null || v.members.some((m) => m.state !== 'running' || (m.status?.stuck ?? null) !== null);
  return degraded ? EXIT.failed : EXIT.ok;
}

/** A table like patronictl list. */
export function formatView(v: ClusterView): string {
  const header = ['Node', 'Client', 'Role', 'State', 'Term', 'Lag (records)', 'Lag (s)', 'Limbo'];
  const rows = v.members.map((m) => [
    String(m.replica) + (m.replica === v.via ? '*' : ''), m.client ?? '-', m.writable ? 'leader' : m.role ?? '-', m.state, m.term === null ? '-' : String(m.term),
    m.lagRecords === null ? '-' : String(m.lagRecords), m.lagMs === null ? '-' : (m.lagMs / 1000).toFixed(1), m.limbo === null ? '-' : String(m.limbo),
  ]);
  const title = `Cluster: ${v.cluster} (${v.leader === null ? 'NO LEADER' : `leader ${v.leader}`}, term ${v.term}; * answered)`;
  const stuck = v.members.flatMap((m) => {
    const reason = m.status?.stuck ?? null;
    return reason === null ? [] : [`node ${m.replica}: ${reason}`];
  });
  return [`${title}\n${table(header, rows)}`, ...stuck].join('\n');
}

export function table(header: readonly string[], rows: ReadonlyArray<readonly string[]>): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = `+${widths.map((w) => '-'.repeat(w + 2)).join('+')}+`;
  const row = (cells: readonly string[]): string => `| ${cells.map((c, i) => c.padEnd(widths[i] as number)).join(' | ')} |`;
  return [line, row(header), line, ...rows.map(row), line].join('\n');
}

export async function tableCommand(argv: readonly string[]): Promise<number> {
  const { values, positionals } = parse('table', argv, { node: { type: 'string' }, user: { type: 'string' }, password: { type: 'string' } });
  const [verb, name] = positionals;
  const at = await where({ admin: str(values.admin), token: str(values.token), 'token-file': str(values['token-file']), 'cluster-dir': str(values['cluster-dir']) });
  if (verb === 'list') {
    const tables = await firstAnswer<Array<{ table: string; mode: string }>>(at, '/tables');
    console.log(values.json === true ? JSON.stringify(tables, null, 2) : tables.length === 0 ? 'no tables are replicated yet: qsync table sync <table>' : table(['Table', 'Mode'], tables.map((t) => [t.table, t.mode])));
    return EXIT.ok;
  }
  if ((verb !== 'sync' && verb !== 'async' && verb !== 'local') || name === undefined) throw new CliFailure(`which mode and table?\n\n${ADMIN_HELP.table as string}`, EXIT.usage);
  if (values.password !== undefined) throw new CliFailure('--password: a password is never taken from the command line, where ps shows it to every local user; set QSYNC_PASSWORD', EXIT.usage);
  if (values.node !== undefined || values.user !== undefined) {
    // As a PostgreSQL role through the client port (the role must own the table).
    let db;
    try {
      db = await connect(str(values.node) ?? process.env.QSYNC_NODE ?? '127.0.0.1:7501', { user: str(values.user) ?? process.env.QSYNC_USER ?? 'postgres', password: str(values.password) ?? process.env.QSYNC_PASSWORD ?? '' });
    } catch (error) {
      throw new CliFailure((error as Error).message, EXIT.unreachable);
    }
    try {
      const result = await db.setTableMode(name, verb);
      console.log(tableChanged(result));
      return EXIT.ok;
    } catch (error) {
      throw new CliFailure((error as Error).message, EXIT.failed);
    } finally {
      db.close();
    }
  }
  const v = await view(at);
  const result = await mutate<{ table: string; mode: string; copiedRows?: number }>(adminOf(v, leaderOf(v)), 'PUT', `/tables/${encodeURIComponent(name)}`, at.token, { mode: verb });
  console.log(tableChanged(result));
  return EXIT.ok;
}

function tableChanged(result: { table: string; mode: string; copiedRows?: number }): string {
  const copied = result.copiedRows ?? 0;
  return `${result.table} is now ${result.mode} on every node${copied > 0 ? `; its ${copied} existing rows were copied to every node` : ''}`;
}

export async function ddlCommand(argv: readonly string[]): Promise<number> {
  const { values, positionals } = parse('ddl', argv);
  const [sql] = positionals;
  if (sql === undefined || positionals.length > 1) throw new CliFailure(`give the SQL as one quoted argument\n\n${ADMIN_HELP.ddl as string}`, EXIT.usage);
  const at = await where({ admin: str(values.admin), token: str(values.token), 'token-file': str(values['token-file']), 'cluster-dir': str(values['cluster-dir']) });
  const v = await view(at);
  const result = await mutate<{ lsn: number }>(adminOf(v, leaderOf(v)), 'POST', '/ddl', at.token, { sql });
  console.log(`schema change applied on node ${leaderOf(v)} and journaled at lsn ${result.lsn}; every node runs it in journal order`);
  return EXIT.ok;
}

/** What the leader answers a membership change (sidecar/node.ts JoinAnswer). */
export interface MembersAnswer {
  readonly replica: number;
  readonly cluster: string;
  readonly version: number;
  readonly quorum: number;
  readonly members: ReadonlyArray<{ readonly replica: number; readonly address: string; readonly client?: string; readonly admin?: string }>;
}

/** qsync remove <node> and qsync leave. */
export async function membersCommand(command: 'remove' | 'leave', argv: readonly string[]): Promise<number> {
  const { values, positionals } = parse(command, argv);
  const at = await where({ admin: str(values.admin), token: str(values.token), 'token-file': str(values['token-file']), 'cluster-dir': str(values['cluster-dir']) });
  let target = positionals[0];
  if (command === 'remove' && (target === undefined || !/^\d+$/.test(target))) throw new CliFailure(`remove which node (a replica id)?\n\n${ADMIN_HELP.remove as string}`, EXIT.usage);
  if (command === 'leave') {
    if (positionals.length > 0) throw new CliFailure(`qsync leave takes no node: the node at --admin leaves\n\n${ADMIN_HELP.leave as string}`, EXIT.usage);
    target = String((await firstAnswer<SidecarStatus>({ addresses: at.addresses.slice(0, 1), token: at.token }, '/status')).replica);
  }
  const v = await view(at);
  const result = await mutate<MembersAnswer>(adminOf(v, leaderOf(v)), 'DELETE', `/members/${target as string}`, at.token);
  if (values.json === true) console.log(JSON.stringify(result, null, 2));
  else console.log(`node ${target as string} is no longer a member of cluster ${result.cluster}: members ${result.members.map((m) => m.replica).join(', ')}, quorum ${result.quorum} (version ${result.version}); stop its sidecar now`);
  return EXIT.ok;
}

/** Ask the leader of the cluster that `from` (a node's admin address) is in to add a node with these addresses. */
export async function requestJoin(from: string, token: string | undefined, member: { address: string; client: string; admin?: string }): Promise<MembersAnswer> {
  const v = await view({ addresses: [from], token });
  return mutate<MembersAnswer>(adminOf(v, leaderOf(v)), 'POST', '/members', token, { peer: member.address, client: member.client, ...(member.admin === undefined ? {} : { admin: member.admin }) });
}

export async function control(command: 'promote' | 'demote' | 'transfer' | 'rejoin', argv: readonly string[]): Promise<number> {
  const { values, positionals } = parse(command, argv);
  const target = positionals[0];
  if (target !== undefined && !/^\d+$/.test(target)) throw new CliFailure(`<node> is a replica id, got ${JSON.stringify(target)}\n\n${ADMIN_HELP[command] as string}`, EXIT.usage);
  if (command === 'transfer' && target === undefined) throw new CliFailure(`transfer to which node?\n\n${ADMIN_HELP.transfer as string}`, EXIT.usage);
  if (command === 'rejoin' && target === undefined) throw new CliFailure(`rejoin which node?\n\n${ADMIN_HELP.rejoin as string}`, EXIT.usage);
  const at = await where({ admin: str(values.admin), token: str(values.token), 'token-file': str(values['token-file']), 'cluster-dir': str(values['cluster-dir']) });
  // --json: the node's status after the change, and nothing else on stdout.
  const say = (text: string): void => {
    if (values.json !== true) console.log(text);
  };
  let result: SidecarStatus;
  if (command === 'promote') {
    const address = target === undefined ? (at.addresses[0] as string) : adminOf(await view(at), Number(target));
    result = await mutate<SidecarStatus>(address, 'POST', '/promote', at.token);
    say(`node ${result.replica} leads in term ${result.term}`);
  } else if (command === 'rejoin') {
    result = await mutate<SidecarStatus>(adminOf(await view(at), Number(target)), 'POST', '/rejoin', at.token);
    say(`node ${result.replica} takes a peer's snapshot when it next subscribes; qsync status shows it until it is done`);
  } else if (command === 'demote') {
    const v = await view(at);
    const leader = leaderOf(v);
    result = await mutate<SidecarStatus>(adminOf(v, leader), 'POST', '/demote', at.token);
    say(`node ${leader} stepped down in term ${result.term}; another node is being elected (qsync status)`);
  } else {
    const v = await view(at);
    if (!v.members.some((m) => m.replica === Number(target))) throw new CliFailure(`node ${target as string} is not in cluster ${v.cluster} (nodes ${v.members.map((m) => m.replica).join(', ')})`, EXIT.failed);
    const leader = leaderOf(v);
    if (leader === Number(target)) {
      say(`node ${leader} leads already`);
      return EXIT.ok;
    }
    result = await mutate<SidecarStatus>(adminOf(v, leader), 'POST', `/transfer?to=${target as string}`, at.token);
    say(`node ${result.leader ?? '?'} leads now, in term ${result.term} (was node ${leader})`);
  }
  if (values.json === true) console.log(JSON.stringify(result, null, 2));
  return EXIT.ok;
}
