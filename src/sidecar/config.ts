// Sidecar configuration: a JSON file, then QSYNC_* environment variables,
// then flags (later sources win), validated at once with every problem listed.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { QsyncError } from '../core/errors.js';
import { checkQuorum, quorumDefault } from '../core/quorum.js';
import { notPrivate } from '../os/files.js';

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|localhost|::1)$/;

const peerSchema = z.object({
  replica: z.number().int().min(1).max(31), host: z.string().min(1), port: z.number().int().min(1).max(65535),
  /** The peer's client address, given to clients with NOT_LEADER. */
  client: z.string().optional(),
  /** The peer's admin HTTP address, for GET /cluster. */
  admin: z.string().optional(),
  /** The peer's SQL port (host:port), named in the hint of a sync write refused on a follower. */
  sql: z.string().optional(),
}).strict();

export const configSchema = z.object({
  replicaId: z.number().int().min(1).max(31),
  clusterId: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, '1-64 of A-Z a-z 0-9 _ . -'),
  peers: z.array(peerSchema).max(30),
  pgUrl: z.string().url(),
  dataDir: z.string().min(1),
  secret: z.string().min(16, 'at least 16 characters').optional(),
  insecure: z.boolean().default(false),
  electionMode: z.enum(['candidate', 'voter', 'manual', 'off']).default('candidate'),
  electionTimeoutMs: z.number().int().min(50).max(60_000).default(1_000),
  /** Default: a tenth of the election timeout. */
  heartbeatIntervalMs: z.number().int().min(5).max(30_000).optional(),
  quorum: z.number().int().min(1).optional(),
  quorumForce: z.boolean().default(false),
  synchroTimeoutMs: z.number().int().min(10).max(600_000).default(5_000),
  /**
   * How the leader holds a sync write while its quorum is awaited: open (its
   * transaction stays open on its connection, then COMMIT; RFC 0027) or
   * prepare (PREPARE TRANSACTION, then COMMIT PREPARED).
   */
  syncHold: z.enum(['prepare', 'open']).default('open'),
  peerHost: z.string().default('127.0.0.1'),
  peerPort: z.number().int().min(0).max(65535),
  clientHost: z.string().default('127.0.0.1'),
  clientPort: z.number().int().min(0).max(65535),
  /**
   * PostgreSQL connections one role's pool of the client library may hold
   * (postgres connections for clients are a budget shared by roles; each
   * pool takes this much of it, or what is left). A sync write held open
   * keeps its connection through its quorum wait (RFC 0027), so this also
   * bounds the sync writes of one role in flight.
   */
  clientPoolConnections: z.number().int().min(1).max(1000).default(64),
  sqlHost: z.string().default('127.0.0.1'),
  /** The SQL port: PostgreSQL's own protocol in front of the node (front/server.ts); absent: none. */
  sqlPort: z.number().int().min(0).max(65535).optional(),
  /** TLS on the SQL port: a server certificate and its key (PEM files), both or neither. */
  sqlTlsCert: z.string().min(1).optional(),
  sqlTlsKey: z.string().min(1).optional(),
  adminHost: z.string().default('127.0.0.1'),
  /** The admin HTTP interface; absent: none. */
  adminPort: z.number().int().min(0).max(65535).optional(),
  /** Bearer token the admin interface's mutating requests need; without one they are refused. */
  adminToken: z.string().min(16, 'at least 16 characters').optional(),
  /** Mutual TLS on peer links under the cluster CA (net/tls.ts): PEM files, all three or none. */
  peerTlsCert: z.string().min(1).optional(),
  peerTlsKey: z.string().min(1).optional(),
  peerTlsCa: z.string().min(1).optional(),
  /** Redis for discovery and events (optional): redis://host:port/db. */
  redisUrl: z.string().regex(/^rediss?:\/\/.+/, 'a redis:// or rediss:// URL').optional(),
  /** How often the status key in Redis is refreshed; it expires after three times this. */
  redisStatusIntervalMs: z.number().int().min(100).max(60_000).default(1_000),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace']).default('info'),
  /** A journal segment that reaches this size is closed and a new one started; whole segments are what retention removes. */
  journalSegmentBytes: z.number().int().min(64 * 1024).max(1024 * 1024 * 1024).default(64 * 1024 * 1024),
  /** Past this size, the journal no longer keeps records for a peer that lacks them (it will rejoin by snapshot). */
  journalRetainBytes: z.number().int().min(0).default(1024 * 1024 * 1024),
  /** A node behind every peer's journal start: auto takes a snapshot from a peer; manual waits for qsync rejoin. */
  rejoin: z.enum(['auto', 'manual']).default('auto'),
}).strict();

export type SidecarConfig = z.infer<typeof configSchema> & { readonly quorum: number; readonly heartbeatIntervalMs: number };

export class ConfigError extends QsyncError<'CONFIG'> {
  constructor(readonly problems: readonly string[]) {
    super('CONFIG', `invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`, { problems });
  }
}

/** Settings, their flag, environment variable and meaning: the README's reference is drawn from this. */
export const SETTINGS: ReadonlyArray<{ key: keyof z.input<typeof configSchema> | 'secretFile' | 'adminTokenFile'; flag: string; env: string; kind: 'int' | 'string' | 'bool' | 'peers'; help: string; secret?: true }> = [
  { key: 'replicaId', flag: 'replica-id', env: 'QSYNC_REPLICA_ID', kind: 'int', help: 'this node\'s replica id, 1-31, unique in the cluster' },
  { key: 'clusterId', flag: 'cluster-id', env: 'QSYNC_CLUSTER_ID', kind: 'string', help: 'the cluster\'s name; peers with another one are refused' },
  { key: 'peers', flag: 'peers', env: 'QSYNC_PEERS', kind: 'peers', help: 'the other nodes: replica@host:peerPort[+clientPort[+adminPort[+sqlPort]]], e.g. 2@127.0.0.1:7402+7502+7602+7702,3@127.0.0.1:7403+7503+7603+7703' },
  { key: 'pgUrl', flag: 'pg-url', env: 'QSYNC_PG_URL', kind: 'string', help: 'connection string of this node\'s PostgreSQL (a role that may create the qsync schema and set session_replication_role)' },
  { key: 'dataDir', flag: 'data-dir', env: 'QSYNC_DATA_DIR', kind: 'string', help: 'where the journal lives' },
  { key: 'secret', flag: 'secret', env: 'QSYNC_SECRET', kind: 'string', secret: true, help: 'the cluster secret peers prove with HMAC-SHA256; at least 16 characters. From the environment or the config file, never a flag; or from a file (secretFile)' },
  { key: 'secretFile', flag: 'secret-file', env: 'QSYNC_SECRET_FILE', kind: 'string', help: 'a file holding the cluster secret (mode 0600 or stricter: a file others may read is refused)' },
  { key: 'insecure', flag: 'insecure', env: 'QSYNC_INSECURE', kind: 'bool', help: 'run without a secret; allowed only when every address is loopback' },
  { key: 'electionMode', flag: 'election-mode', env: 'QSYNC_ELECTION_MODE', kind: 'string', help: 'candidate (votes and campaigns; default), voter (votes only), manual (votes; campaigns after qsync promote), off (neither)' },
  { key: 'electionTimeoutMs', flag: 'election-timeout-ms', env: 'QSYNC_ELECTION_TIMEOUT_MS', kind: 'int', help: 'how long without a leader before a node campaigns (randomised up to 1.5x); a leader that hears no quorum for this long steps down; default 1000' },
  { key: 'heartbeatIntervalMs', flag: 'heartbeat-interval-ms', env: 'QSYNC_HEARTBEAT_INTERVAL_MS', kind: 'int', help: 'how often the leader sends heartbeats; default a tenth of the election timeout' },
  { key: 'quorum', flag: 'quorum', env: 'QSYNC_QUORUM', kind: 'int', help: 'nodes that must hold a sync transaction before it commits; default a majority' },
  { key: 'quorumForce', flag: 'quorum-force', env: 'QSYNC_QUORUM_FORCE', kind: 'bool', help: 'allow a quorum below a majority (unsafe under partitions)' },
  { key: 'synchroTimeoutMs', flag: 'synchro-timeout-ms', env: 'QSYNC_SYNCHRO_TIMEOUT_MS', kind: 'int', help: 'how long a sync transaction waits for its quorum before it is rolled back; default 5000' },
  { key: 'syncHold', flag: 'sync-hold', env: 'QSYNC_SYNC_HOLD', kind: 'string', help: 'how the leader holds a sync write while it waits for its quorum: open (default: the transaction stays open on its connection and commits without a WAL flush of its own; SERIALIZABLE writes are still prepared) or prepare (PREPARE TRANSACTION, then COMMIT PREPARED); docs/rfc/0027' },
  { key: 'peerHost', flag: 'peer-host', env: 'QSYNC_PEER_HOST', kind: 'string', help: 'address the peer port binds to; default 127.0.0.1' },
  { key: 'peerPort', flag: 'peer-port', env: 'QSYNC_PEER_PORT', kind: 'int', help: 'port for other sidecars' },
  { key: 'clientHost', flag: 'client-host', env: 'QSYNC_CLIENT_HOST', kind: 'string', help: 'address the client port binds to; default 127.0.0.1' },
  { key: 'clientPort', flag: 'client-port', env: 'QSYNC_CLIENT_PORT', kind: 'int', help: 'port for client connections' },
  { key: 'clientPoolConnections', flag: 'client-pool-connections', env: 'QSYNC_CLIENT_POOL_CONNECTIONS', kind: 'int', help: 'PostgreSQL connections the client library\'s writes and reads of one role may hold at once on this node; a sync write held open keeps its connection through its quorum wait; each role takes this many from the budget below max_connections; default 64' },
  { key: 'sqlHost', flag: 'sql-host', env: 'QSYNC_SQL_HOST', kind: 'string', help: 'address the SQL port binds to; default 127.0.0.1' },
  { key: 'sqlPort', flag: 'sql-port', env: 'QSYNC_SQL_PORT', kind: 'int', help: 'port speaking PostgreSQL\'s own protocol: psql, drivers and ORMs connect here as their PostgreSQL roles and write sync tables unmodified; none when unset' },
  { key: 'sqlTlsCert', flag: 'sql-tls-cert', env: 'QSYNC_SQL_TLS_CERT', kind: 'string', help: 'PEM file of the SQL port\'s server certificate (with sqlTlsKey): clients that ask for SSL get TLS, as PostgreSQL\'s ssl_cert_file' },
  { key: 'sqlTlsKey', flag: 'sql-tls-key', env: 'QSYNC_SQL_TLS_KEY', kind: 'string', help: 'PEM file of that certificate\'s private key (mode 0600)' },
  { key: 'adminHost', flag: 'admin-host', env: 'QSYNC_ADMIN_HOST', kind: 'string', help: 'address the admin HTTP interface binds to; default 127.0.0.1' },
  { key: 'adminPort', flag: 'admin-port', env: 'QSYNC_ADMIN_PORT', kind: 'int', help: 'port of the admin HTTP interface (status, health, metrics, promote, demote, transfer, tables); none when unset' },
  { key: 'adminToken', flag: 'admin-token', env: 'QSYNC_ADMIN_TOKEN', kind: 'string', secret: true, help: 'bearer token for the admin interface\'s mutating requests (promote, demote, transfer, table modes), at least 16 characters; without one they are refused. From the environment or the config file, never a flag; or from a file (adminTokenFile)' },
  { key: 'adminTokenFile', flag: 'admin-token-file', env: 'QSYNC_ADMIN_TOKEN_FILE', kind: 'string', help: 'a file holding the admin token (mode 0600 or stricter)' },
  { key: 'peerTlsCert', flag: 'peer-tls-cert', env: 'QSYNC_PEER_TLS_CERT', kind: 'string', help: 'PEM file of this node\'s certificate, signed by the cluster CA: peer links use mutual TLS (with peerTlsKey and peerTlsCa)' },
  { key: 'peerTlsKey', flag: 'peer-tls-key', env: 'QSYNC_PEER_TLS_KEY', kind: 'string', help: 'PEM file of that certificate\'s private key (mode 0600)' },
  { key: 'peerTlsCa', flag: 'peer-tls-ca', env: 'QSYNC_PEER_TLS_CA', kind: 'string', help: 'PEM file of the cluster CA\'s certificate: only peers with a certificate it signed are accepted, either way' },
  { key: 'redisUrl', flag: 'redis-url', env: 'QSYNC_REDIS_URL', kind: 'string', help: 'Redis for discovery and events (optional): status keys, the term-fenced leader key, an event channel' },
  { key: 'redisStatusIntervalMs', flag: 'redis-status-interval-ms', env: 'QSYNC_REDIS_STATUS_INTERVAL_MS', kind: 'int', help: 'how often the node writes its status key to Redis (it expires after 3 intervals); default 1000' },
  { key: 'journalSegmentBytes', flag: 'journal-segment-bytes', env: 'QSYNC_JOURNAL_SEGMENT_BYTES', kind: 'int', help: 'size at which a journal segment is closed and a new one started (retention removes whole segments); default 67108864 (64 MiB)' },
  { key: 'journalRetainBytes', flag: 'journal-retain-bytes', env: 'QSYNC_JOURNAL_RETAIN_BYTES', kind: 'int', help: 'up to this size the journal keeps every record some peer lacks; past it, records a quorum holds are removed even if a peer lacks them (that peer rejoins by snapshot); default 1073741824 (1 GiB)' },
  { key: 'rejoin', flag: 'rejoin', env: 'QSYNC_REJOIN', kind: 'string', help: 'a node that lacks records every peer has removed: auto (default) replaces its replicated tables with a peer\'s snapshot; manual waits for qsync rejoin' },
  { key: 'logLevel', flag: 'log-level', env: 'QSYNC_LOG_LEVEL', kind: 'string', help: 'fatal, error, warn, info (default), debug (one line per record) or trace' },
];

function parsePeers(text: string): unknown {
  return text.split(',').filter((p) => p.trim() !== '').map((p) => {
    const match = /^(\d+)@(.+):(\d+)(?:\+(\d+))?(?:\+(\d+))?(?:\+(\d+))?$/.exec(p.trim());
    if (match === null) return p;
    const peer: Record<string, unknown> = { replica: Number(match[1]), host: match[2], port: Number(match[3]) };
    if (match[4] !== undefined) peer.client = `${match[2]}:${match[4]}`;
    if (match[5] !== undefined) peer.admin = `${match[2]}:${match[5]}`;
    if (match[6] !== undefined) peer.sql = `${match[2]}:${match[6]}`;
    return peer;
  });
}

function convert(kind: string, text: string): unknown {
  if (kind === 'int') return /^-?\d+$/.test(text) ? Number(text) : text;
  if (kind === 'bool') return text === '' || text === 'true' || text === '1';
  if (kind === 'peers') return parsePeers(text);
  return text;
}

/** The JSON config file: an object whose keys are the settings' names (the README's first column). */
function readConfigFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new ConfigError([`--config: cannot read ${file}: ${(error as Error).message}`]);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new ConfigError([`--config: ${file} is not valid JSON: ${(error as Error).message}`]);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new ConfigError([`--config: ${file} must hold one JSON object, e.g. {"replicaId": 1, "clusterId": "prod"}`]);
  return parsed as Record<string, unknown>;
}

/** What qsync join writes into the data directory: the id the node joined as, its cluster and the members then. */
export const MEMBER_FILE = 'member.json';
/** Present from qsync join until the node has loaded its first snapshot. */
export const JOINING_FILE = 'joining';

/**
 * A data directory a node joined with (qsync join) supplies the replica id,
 * the cluster id and the first peers; a setting given otherwise must agree.
 */
function readMemberFile(raw: Record<string, unknown>): void {
  if (typeof raw.dataDir !== 'string') return;
  const file = join(raw.dataDir, MEMBER_FILE);
  if (!existsSync(file)) return;
  let member: { replicaId?: unknown; clusterId?: unknown; peers?: unknown };
  try {
    member = JSON.parse(readFileSync(file, 'utf8')) as typeof member;
  } catch (error) {
    throw new ConfigError([`--data-dir: ${file} (written by qsync join) cannot be read: ${(error as Error).message}`]);
  }
  const problems: string[] = [];
  for (const key of ['replicaId', 'clusterId'] as const) {
    if (raw[key] !== undefined && raw[key] !== member[key]) problems.push(`--${key === 'replicaId' ? 'replica-id' : 'cluster-id'}: ${JSON.stringify(raw[key])} differs from ${JSON.stringify(member[key])}, which this data directory joined as (${file}); leave it out`);
    raw[key] ??= member[key];
  }
  raw.peers ??= member.peers;
  if (problems.length > 0) throw new ConfigError(problems);
}

/** Read file, environment and flags into one raw object (not yet validated). */
export function gatherConfig(argv: readonly string[], env: NodeJS.ProcessEnv): Record<string, unknown> {
  const options: Record<string, { type: 'string' | 'boolean' }> = { config: { type: 'string' } };
  for (const s of SETTINGS) options[s.flag] = { type: s.kind === 'bool' ? 'boolean' : 'string' };
  const { values } = parseArgs({ args: [...argv], options, allowPositionals: true, strict: true });
  const raw: Record<string, unknown> = {};
  const file = values.config ?? env.QSYNC_CONFIG;
  if (typeof file === 'string') Object.assign(raw, readConfigFile(file));
  const problems: string[] = [];
  for (const s of SETTINGS) {
    const fromEnv = env[s.env];
    if (fromEnv !== undefined) raw[s.key] = convert(s.kind, fromEnv);
    const fromFlag = values[s.flag];
    if (fromFlag === undefined) continue;
    // The command line is public: ps shows it to every local user.
    if (s.secret === true) problems.push(`--${s.flag}: a secret is never taken from the command line, where ps shows it to every local user; put it in a file (--${s.flag}-file, mode 0600), in ${s.env}, or in the config file`);
    else if (s.key === 'pgUrl' && typeof fromFlag === 'string' && urlPassword(fromFlag)) problems.push('--pg-url: carries a password, which ps shows to every local user; leave it out of the URL and set PGPASSWORD or a ~/.pgpass file, or give the whole URL in QSYNC_PG_URL or the config file');
    else raw[s.key] = typeof fromFlag === 'boolean' ? fromFlag : convert(s.kind, fromFlag);
  }
  for (const [fileKey, key] of [['secretFile', 'secret'], ['adminTokenFile', 'adminToken']] as const) {
    const file = raw[fileKey];
    delete raw[fileKey];
    if (typeof file !== 'string') continue;
    const read = readSecretFile(file);
    if (read.ok) raw[key] = read.value;
    else problems.push(`--${fileKey === 'secretFile' ? 'secret-file' : 'admin-token-file'}: ${read.problem}`);
  }
  if (problems.length > 0) throw new ConfigError(problems);
  readMemberFile(raw);
  return raw;
}

function urlPassword(url: string): boolean {
  try {
    return new URL(url).password !== '';
  } catch {
    return false; // validation names a malformed URL
  }
}

/** A secret's file: its first line, from a file only its owner may read. */
export function readSecretFile(file: string): { ok: true; value: string } | { ok: false; problem: string } {
  let open: string | null;
  let text: string;
  try {
    open = notPrivate(file);
    text = readFileSync(file, 'utf8');
  } catch (error) {
    return { ok: false, problem: `cannot read ${file}: ${(error as Error).message}` };
  }
  if (open !== null) return { ok: false, problem: open };
  const value = text.split('\n')[0]?.trim() ?? '';
  if (value === '') return { ok: false, problem: `${file} is empty` };
  return { ok: true, value };
}

/** Validate; throws ConfigError listing every problem with the flag that sets it. */
export function validateConfig(raw: Record<string, unknown>): SidecarConfig {
  const parsed = configSchema.safeParse(raw);
  const flagOf = (key: string): string => SETTINGS.find((s) => s.key === key)?.flag ?? key;
  if (!parsed.success) {
    throw new ConfigError(parsed.error.issues.map((i) => {
      if (i.code === 'unrecognized_keys') {
        const where = i.path.length === 0 ? 'the config file' : `--${flagOf(String(i.path[0]))} (${i.path.slice(1).join('.')})`;
        return `${where}: unknown setting${i.keys.length > 1 ? 's' : ''} ${i.keys.join(', ')}; known: ${i.path.length === 0 ? SETTINGS.map((s) => s.key).join(', ') : 'replica, host, port, client, admin'}`;
      }
      return `--${flagOf(String(i.path[0] ?? ''))}${i.path.length > 1 ? ` (${i.path.slice(1).join('.')})` : ''}: ${i.message}`;
    }));
  }
  const c = parsed.data;
  const problems: string[] = [];
  const members = c.peers.length + 1;
  const ids = [c.replicaId, ...c.peers.map((p) => p.replica)];
  if (new Set(ids).size !== ids.length) problems.push(`--peers: replica ids must be unique and differ from --replica-id ${c.replicaId}`);
  const heartbeatIntervalMs = c.heartbeatIntervalMs ?? Math.max(5, Math.floor(c.electionTimeoutMs / 10));
  if (heartbeatIntervalMs * 2 > c.electionTimeoutMs) problems.push(`--heartbeat-interval-ms: ${heartbeatIntervalMs} must be at most half the election timeout (${c.electionTimeoutMs}), or followers campaign between heartbeats`);
  const quorum = c.quorum ?? quorumDefault(members);
  const quorumProblem = checkQuorum(quorum, members, c.quorumForce);
  if (quorumProblem !== null) problems.push(`--quorum: ${quorumProblem}`);
  if (c.secret === undefined && !c.insecure) problems.push('--secret: required (peers prove it with HMAC-SHA256); for a local test cluster on loopback only, pass --insecure');
  const hosts = [c.peerHost, c.clientHost, ...c.peers.map((p) => p.host)];
  if (c.secret === undefined && c.insecure && !hosts.every((h) => LOOPBACK.test(h))) problems.push('--insecure: allowed only when every address is loopback');
  if (c.adminPort !== undefined && c.adminToken === undefined && !LOOPBACK.test(c.adminHost)) problems.push(`--admin-token: required when the admin interface binds to ${c.adminHost}, beyond loopback`);
  const tlsGiven = [c.peerTlsCert, c.peerTlsKey, c.peerTlsCa].filter((f) => f !== undefined).length;
  if (tlsGiven !== 0 && tlsGiven !== 3) problems.push('--peer-tls-cert, --peer-tls-key, --peer-tls-ca: give all three (peer links use mutual TLS) or none');
  if ((c.sqlTlsCert === undefined) !== (c.sqlTlsKey === undefined)) problems.push('--sql-tls-cert, --sql-tls-key: give both (the SQL port\'s certificate and its key) or neither');
  if (c.sqlTlsCert !== undefined && c.sqlPort === undefined) problems.push('--sql-tls-cert: there is no SQL port to use it on; set --sql-port');
  if (problems.length > 0) throw new ConfigError(problems);
  return { ...c, quorum, heartbeatIntervalMs };
}
