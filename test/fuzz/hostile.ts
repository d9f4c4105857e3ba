// A stranger on the same network, and a peer or client gone bad, against a
// running cluster: random, truncated, oversized and wrong-shaped frames,
// msgpack values of every type (64-bit integers, deep nesting, huge declared
// lengths, extension types), wrong-HMAC, replayed and foreign handshakes,
// garbage after a successful handshake or login, malformed HTTP, hostile
// PostgreSQL protocol, idle floods and login floods, on the peer, client,
// admin and SQL ports of every node, while
// a writer keeps committing sync writes. From one seed: the same run again.
//
// It reports what a test or the command line (cli.ts) checks: that every
// process lives and answers, that role, term, leader and the other nodes'
// vclock components did not move, that every sync write succeeded, that the
// tables are identical, that no request was answered 500, and each sidecar's
// peak RSS.
import { readFile } from 'node:fs/promises';
import { connect as netConnect, type Socket } from 'node:net';
import { Packr } from 'msgpackr';
import pg from 'pg';
import type { ClusterNode, LocalCluster } from '../../src/cli/cluster.js';
import { connect, type Db } from '../../src/client/index.js';
import { encodeRequest } from '../../src/core/client-protocol.js';
import { decodeMessage, encodeMessage, NONCE_BYTES, PROOF_BYTES, PROTOCOL_VERSION } from '../../src/core/messages.js';
import { Rng } from '../../src/core/rng.js';
import type { ReplicaId } from '../../src/core/types.js';
import { encodeFrame, readFrame } from '../../src/journal/frame.js';
import { proof } from '../../src/net/auth.js';
import { rowsOn } from '../support/cluster.js';

export interface HostileOptions {
  readonly seed: number;
  /** Inputs sent to each port kind (peer, client, admin), spread over the nodes. */
  readonly inputs: number;
  /** Idle connections opened at once to each port of the leader, and how long they are held. */
  readonly idle: number;
  readonly idleHoldMs: number;
  /** Concurrent logins with a wrong password on the leader's client port. */
  readonly logins: number;
  /** Connections to the leader's peer and client ports that each send 4 MiB of one large frame before authenticating. */
  readonly swell: number;
  /** The sync table the writer inserts into: (id bigint primary key, note text). */
  readonly table: string;
  /** Connections in flight per port kind. */
  readonly concurrency?: number;
  readonly progress?: (line: string) => void;
}

export interface NodeState {
  readonly replica: number;
  readonly role: string;
  readonly term: number;
  readonly leader: number | null;
  readonly vclock: readonly number[];
}

export interface HostileReport {
  readonly seed: number;
  readonly inputs: Record<'peer' | 'client' | 'admin' | 'sql', { sent: number; byKind: Record<string, number> }>;
  /** Answers of the admin port by status class, and the 500s among them (each a failure). */
  readonly http: Record<string, number>;
  readonly http500: readonly string[];
  readonly idle: Record<'peer' | 'client' | 'admin' | 'sql', { opened: number; closedByServer: number }>;
  /** Wrong passwords on the leader's SQL port, all at once: PostgreSQL's 28P01 each, or closed at a cap. */
  readonly sqlLogins: { refused: number; closed: number; other: number };
  readonly logins: { refused: number; closed: number; other: number; tooManyClients: number };
  /** Swelling connections the server closed (peer port, client port). */
  readonly swelled: readonly number[];
  readonly writes: { ok: number; failed: number; errors: readonly string[] };
  /** Sidecars that exited during the run. */
  readonly crashes: readonly string[];
  readonly before: readonly NodeState[];
  readonly after: readonly NodeState[];
  /** What moved that must not: role, term, leader, a vclock component other than the writer's leader. */
  readonly stateChanges: readonly string[];
  readonly tablesIdentical: boolean;
  /** Peak resident set per sidecar, MiB (VmHWM at the end, and the highest VmRSS sampled). */
  readonly rssPeakMiB: Record<number, number>;
  /** Inputs this harness failed to make or send (its own faults, not the cluster's). */
  readonly harnessFaults: readonly string[];
  readonly durationMs: number;
}

/** Packs what qsync itself never writes: BigInts as 64-bit integers. */
const hostilePack = new Packr({ useRecords: false, variableMapSize: true });
const KEYS = ['m', 'i', 'o', 'x', 'v', 'c', 'r', 'n', 'p', 's', 't', 'k', 'l', 'y', 'vc', 'e', 'g', 'j', 'f', 'h', 'cl', 'u', 'q', 'ts', 'tb', '__proto__'];

function frame(body: Uint8Array): Buffer {
  return encodeFrame(body, 2 ** 32 - 1);
}

function randomBytes(rng: Rng, max: number): Buffer {
  return Buffer.from(Array.from({ length: rng.int(1, max) }, () => rng.int(0, 255)));
}

function exactBytes(rng: Rng, length: number): Buffer {
  return Buffer.from(Array.from({ length }, () => rng.int(0, 255)));
}

function randomValue(rng: Rng, depth: number): unknown {
  const kind = rng.int(0, depth > 0 ? 11 : 8);
  switch (kind) {
    case 0: return null;
    case 1: return rng.chance(0.5);
    case 2: return rng.int(-5, 12);
    case 3: return rng.int(-(2 ** 31), 2 ** 31);
    case 4: return 2n ** 63n + BigInt(rng.int(0, 2 ** 31)) * 2n ** 31n; // past the safe integers
    case 5: return rng.range(-1e300, 1e300);
    case 6: return randomBytes(rng, 12).toString('latin1');
    case 7: return randomBytes(rng, 40);
    case 8: return new Date(rng.int(0, 2 ** 40));
    case 9: return Array.from({ length: rng.int(0, 4) }, () => randomValue(rng, depth - 1));
    default: {
      // Own properties, even one named __proto__ (an assignment would set the prototype instead).
      const map: Record<string, unknown> = {};
      for (let i = rng.int(0, 5); i > 0; i -= 1) Object.defineProperty(map, rng.pick(KEYS), { value: randomValue(rng, depth - 1), enumerable: true, writable: true, configurable: true });
      return map;
    }
  }
}

/** A message map around a valid code with random fields: what a decoder must check field by field. */
function shaped(rng: Rng, codeKey: 'm' | 'o'): Record<string, unknown> {
  const map = randomValue(rng, 2);
  return { ...(typeof map === 'object' && map !== null && !Array.isArray(map) ? map : {}), [codeKey]: rng.int(0, 11), i: rng.int(0, 5), y: rng.int(0, 6) };
}

/** One connection's worth of hostile bytes for a framed port, and its kind. */
export function framedInput(rng: Rng, codeKey: 'm' | 'o'): { kind: string; bytes: Buffer } {
  const kinds = ['bytes', 'truncated', 'oversized', 'value', 'shaped', 'bigint', 'deep', 'ext', 'declared', 'flood', 'zero'] as const;
  const kind = rng.pick(kinds);
  switch (kind) {
    case 'bytes': return { kind, bytes: randomBytes(rng, 256) };
    case 'truncated': {
      const whole = frame(hostilePack.pack(shaped(rng, codeKey)));
      return { kind, bytes: whole.subarray(0, rng.int(1, whole.length - 1)) };
    }
    case 'oversized': {
      const header = Buffer.alloc(8);
      header.writeUInt32BE(rng.pick([2_049, 16 * 1024 * 1024, 16 * 1024 * 1024 + 1, 2 ** 31, 2 ** 32 - 1]), 0);
      return { kind, bytes: Buffer.concat([header, randomBytes(rng, 64)]) };
    }
    case 'value': return { kind, bytes: frame(hostilePack.pack(randomValue(rng, 4))) };
    case 'shaped': return { kind, bytes: frame(hostilePack.pack(shaped(rng, codeKey))) };
    case 'bigint': return { kind, bytes: frame(hostilePack.pack({ [codeKey]: 2n ** 64n - 1n - BigInt(rng.int(0, 1000)), i: 1 })) };
    case 'deep': {
      const depth = rng.int(100, 1_900);
      return { kind, bytes: frame(Buffer.concat([Buffer.alloc(depth, rng.chance(0.5) ? 0x91 : 0x81), Buffer.from(rng.chance(0.5) ? [0xc0] : [0xa1, 0x6d, 0x01])])) };
    }
    case 'ext': {
      const body = randomBytes(rng, 16);
      return { kind, bytes: frame(Buffer.concat([Buffer.from([0x82, 0xa1, codeKey.charCodeAt(0), 0x05, 0xa1, 0x78, 0xc7, body.length, rng.int(0, 255)]), body])) };
    }
    case 'declared': {
      const marker = rng.pick([0xc6, 0xc9, 0xdb, 0xdd, 0xdf]);
      return { kind, bytes: frame(Buffer.concat([Buffer.from([0x81, 0xa1, codeKey.charCodeAt(0), marker, 0xff, 0xff, 0xff, 0xf0]), randomBytes(rng, 32)])) };
    }
    case 'flood': {
      // Small well-formed frames, more of them than a connection may send before it authenticates.
      const one = frame(hostilePack.pack({ [codeKey]: 99, i: 1 }));
      return { kind, bytes: Buffer.concat(Array.from({ length: Math.ceil(3_000 / one.length) }, () => one)) };
    }
    case 'zero': return { kind, bytes: Buffer.alloc(rng.int(8, 64)) };
  }
}

/** Connect, optionally converse, write; then wait for the server to close or `holdMs`, and hang up. */
function probe(port: number, converse: (socket: Socket, received: () => Buffer) => Promise<Buffer | null>, holdMs: number): Promise<'closed' | 'held'> {
  return new Promise((resolve) => {
    const socket = netConnect({ host: '127.0.0.1', port });
    let buffer = Buffer.alloc(0);
    let done = false;
    const finish = (how: 'closed' | 'held'): void => {
      if (done) return;
      done = true;
      socket.destroy();
      resolve(how);
    };
    socket.on('error', () => finish('closed'));
    socket.on('close', () => finish('closed'));
    socket.on('data', (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]).subarray(-65_536);
    });
    socket.once('connect', () => {
      void converse(socket, () => buffer).then((bytes) => {
        if (bytes !== null && !socket.destroyed) socket.write(bytes);
        setTimeout(() => finish('held'), holdMs);
      }, () => finish('closed'));
    });
  });
}

/** The relay's first frame on the peer port, its hello (with the nonce to answer). */
async function relayHello(received: () => Buffer): Promise<{ replica: ReplicaId; nonce: Uint8Array; cluster: string }> {
  for (let waited = 0; waited < 2_000; waited += 10) {
    const read = readFrame(received(), 0);
    if (read.kind === 'frame') {
      const decoded = decodeMessage(read.body);
      if (decoded.ok && decoded.message.kind === 'hello') return decoded.message;
      throw new Error('no hello');
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error('no hello in time');
}

interface Target {
  readonly node: ClusterNode;
  readonly peerPort: number;
  readonly clientPort: number;
  readonly adminPort: number;
  readonly sqlPort: number;
}

function targetsOf(cluster: LocalCluster): Target[] {
  return cluster.nodes.map((node) => ({ node, peerPort: node.peerPort, clientPort: node.clientPort, adminPort: Number(node.adminAddress.split(':')[1]), sqlPort: node.sqlPort }));
}

/** Peer-port inputs: hostile frames before the handshake, bad handshakes, and garbage after a good one. */
function peerInput(rng: Rng, secret: string, cluster: string, staleNonce: { value: Uint8Array | null }): { kind: string; converse: (socket: Socket, received: () => Buffer) => Promise<Buffer | null> } {
  const choice = rng.int(0, 9);
  const stranger = 30 as ReplicaId;
  const hello = (relay: { replica: ReplicaId; nonce: Uint8Array }, mine: Uint8Array, proofBytes: Uint8Array, clusterId = cluster): Buffer =>
    frame(encodeMessage({ kind: 'hello', version: PROTOCOL_VERSION, cluster: clusterId, replica: stranger, nonce: mine, proof: proofBytes }));
  const nonce = exactBytes(rng, NONCE_BYTES);
  if (choice === 0) {
    const wrong = exactBytes(rng, PROOF_BYTES);
    return { kind: 'hello-wrong-proof', converse: async (_s, received) => hello(await relayHello(received), nonce, wrong) };
  }
  if (choice === 1) {
    // A proof made with the real secret, but over an earlier connection's nonce: a replay.
    return {
      kind: 'hello-replayed', converse: async (_s, received) => {
        const relay = await relayHello(received);
        const stale = staleNonce.value ?? Buffer.alloc(NONCE_BYTES, 7);
        staleNonce.value = relay.nonce;
        return hello(relay, nonce, proof(secret, 'subscriber', cluster, stranger, relay.replica, nonce, stale));
      },
    };
  }
  if (choice === 2) {
    return { kind: 'hello-foreign-cluster', converse: async (_s, received) => hello(await relayHello(received), nonce, Buffer.alloc(PROOF_BYTES), 'not-this-cluster') };
  }
  if (choice === 3) {
    // Past a good handshake (the secret is known): garbage where a subscribe should come.
    const garbage = framedInput(rng, 'm');
    return {
      kind: `after-handshake-${garbage.kind}`, converse: async (_s, received) => {
        const relay = await relayHello(received);
        return Buffer.concat([hello(relay, nonce, proof(secret, 'subscriber', cluster, stranger, relay.replica, nonce, relay.nonce)), garbage.bytes]);
      },
    };
  }
  const input = framedInput(rng, 'm');
  return { kind: input.kind, converse: () => Promise.resolve(input.bytes) };
}

/** Client-port inputs: hostile frames before auth, requests before auth, wrong passwords, and garbage after a good login. */
export function clientInput(rng: Rng, credentials: { user: string; password: string }, table: string): { kind: string; converse: () => Promise<Buffer | null> } {
  const choice = rng.int(0, 9);
  const auth = (password: string): Buffer => frame(encodeRequest({ id: 1, op: 'auth', user: credentials.user, password }));
  if (choice === 0) return { kind: 'auth-wrong', converse: () => Promise.resolve(auth(`wrong-${rng.int(0, 1e9)}`)) };
  if (choice === 1) return { kind: 'request-before-auth', converse: () => Promise.resolve(frame(encodeRequest({ id: 1, op: 'execute', statements: [{ sql: `INSERT INTO ${table} VALUES (-1, 'x')`, params: [] }], idempotencyKey: null, term: null }))) };
  if (choice === 2 || choice === 3) {
    // Logged in: wrong-shaped requests, bad SQL, and writes through the read API (which runs READ ONLY).
    const after = rng.pick([
      () => framedInput(rng, 'o').bytes,
      () => frame(encodeRequest({ id: 2, op: 'execute', statements: [{ sql: `SELEC ${randomBytes(rng, 8).toString('hex')}`, params: [] }], idempotencyKey: null, term: null })),
      () => frame(encodeRequest({ id: 2, op: 'query', sql: `INSERT INTO ${table} VALUES (-2, 'through the read API')`, params: [], consistency: 'local' })),
      () => frame(encodeRequest({ id: 2, op: 'query', sql: `SET default_transaction_read_only = off; INSERT INTO ${table} VALUES (-3, 'x')`, params: [], consistency: 'local' })),
      () => frame(encodeRequest({ id: 2, op: 'tquery', tx: 12345, sql: 'SELECT 1', params: [] })),
      () => frame(hostilePack.pack({ i: 2, o: 1, s: [[`INSERT INTO ${table} VALUES ($1, 'x')`, [2n ** 63n]]] })),
    ])();
    return { kind: 'after-login', converse: () => Promise.resolve(Buffer.concat([auth(credentials.password), after])) };
  }
  const input = framedInput(rng, 'o');
  return { kind: input.kind, converse: () => Promise.resolve(input.bytes) };
}

/** A PostgreSQL protocol message: type, int32 length, body. */
function pgMessage(type: string, body: Buffer): Buffer {
  const header = Buffer.alloc(5);
  header.write(type, 0, 'latin1');
  header.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([header, body]);
}

/** A startup-phase packet: int32 length, int32 code, body. */
function startupPacket(code: number, body: Buffer, declared?: number): Buffer {
  const head = Buffer.alloc(8);
  head.writeInt32BE(declared ?? body.length + 8, 0);
  head.writeInt32BE(code, 4);
  return Buffer.concat([head, body]);
}

const cstrings = (...parts: string[]): Buffer => Buffer.from(`${parts.join('\0')}\0\0`);

/**
 * SQL-port inputs: hostile startup packets (lengths out of bounds, unknown
 * protocols, no user, too many parameters, SSL and cancel requests with
 * garbage), bad authentication, and after a good login (pg's own SCRAM)
 * garbage messages, lengths past the cap, unknown types, malformed bodies and
 * bad SQL. None writes a row: the writer's count is checked against the table.
 */
export function sqlInput(rng: Rng, credentials: { user: string; password: string }): { kind: string; converse: (socket: Socket, received: () => Buffer) => Promise<Buffer | null> } | { kind: string; afterLogin: Buffer; password: string } {
  const kinds = ['bytes', 'huge-length', 'oversized-startup', 'short-startup', 'ssl-then-garbage', 'gss-then-garbage', 'cancel-random', 'protocol-4', 'protocol-3.9', 'no-user',
    'many-params', 'password-garbage', 'wrong-password', 'after-login'] as const;
  const kind = rng.pick(kinds);
  const v3 = 3 << 16;
  const plain = (bytes: Buffer): { kind: string; converse: () => Promise<Buffer> } => ({ kind, converse: () => Promise.resolve(bytes) });
  switch (kind) {
    case 'bytes': return plain(randomBytes(rng, 512));
    case 'huge-length': return plain(Buffer.concat([startupPacket(v3, cstrings('user', credentials.user), 2 ** 31 - 1), randomBytes(rng, 64)]));
    case 'oversized-startup': return plain(startupPacket(v3, Buffer.alloc(rng.int(10_001, 40_000), 0x61)));
    case 'short-startup': return plain(startupPacket(v3, Buffer.alloc(0), rng.int(0, 7)));
    case 'ssl-then-garbage': return plain(Buffer.concat([startupPacket(80877103, Buffer.alloc(0)), randomBytes(rng, 256)]));
    case 'gss-then-garbage': return plain(Buffer.concat([startupPacket(80877104, Buffer.alloc(0)), startupPacket(80877104, Buffer.alloc(0)), startupPacket(80877104, Buffer.alloc(0)), randomBytes(rng, 64)]));
    case 'cancel-random': return plain(startupPacket(80877102, exactBytes(rng, 8)));
    case 'protocol-4': return plain(startupPacket(4 << 16, cstrings('user', credentials.user)));
    case 'protocol-3.9': return plain(startupPacket(v3 | 9, cstrings('user', credentials.user, '_pq_.anything', 'x')));
    case 'no-user': return plain(startupPacket(v3, cstrings('database', 'postgres')));
    case 'many-params': return plain(startupPacket(v3, cstrings('user', credentials.user, ...Array.from({ length: 200 }, (_, i) => [`application_name${i}`, 'x']).flat())));
    case 'password-garbage': return plain(Buffer.concat([startupPacket(v3, cstrings('user', credentials.user, 'database', 'postgres')), pgMessage('p', randomBytes(rng, 200))]));
    case 'wrong-password': return { kind, afterLogin: Buffer.alloc(0), password: `wrong-${rng.int(0, 1e9)}` };
    default: {
      const body = rng.pick([
        () => randomBytes(rng, 300),
        () => pgMessage(String.fromCharCode(rng.int(0x41, 0x7a)), randomBytes(rng, 100)),
        () => Buffer.concat([Buffer.from('Q'), Buffer.from([0x7f, 0xff, 0xff, 0xff])]),
        () => pgMessage('Q', Buffer.from(`SELEC ${randomBytes(rng, 8).toString('hex')}\0`)),
        () => pgMessage('Q', Buffer.from('BEGIN; SELECT 1/0; COMMIT\0')),
        () => pgMessage('Q', Buffer.from('no terminator')),
        () => pgMessage('P', Buffer.from('stmt\0SELECT 1')),
        () => Buffer.concat([pgMessage('B', Buffer.from('\0nonexistent\0\0\0\0\0\0\0')), pgMessage('E', Buffer.from('\0\0\0\0\0')), pgMessage('S', Buffer.alloc(0))]),
        () => Buffer.concat([pgMessage('B', Buffer.concat([Buffer.from('\0\0'), Buffer.from([0x7f, 0xff])])), pgMessage('S', Buffer.alloc(0))]),
        () => Buffer.concat([pgMessage('d', randomBytes(rng, 50)), pgMessage('c', Buffer.alloc(0))]),
        () => Buffer.concat(Array.from({ length: 500 }, () => pgMessage('S', Buffer.alloc(0)))),
        () => pgMessage('C', Buffer.from('Xname\0')),
      ])();
      return { kind, afterLogin: body, password: credentials.password };
    }
  }
}

/** Log in to the SQL port with pg (SCRAM), send `garbage` on the session's socket, and wait for the server to close it or `holdMs`. */
async function sqlAfterLogin(port: number, credentials: { user: string; password: string }, password: string, garbage: Buffer, holdMs: number): Promise<'refused' | 'closed' | 'held'> {
  const client = new pg.Client({ host: '127.0.0.1', port, user: credentials.user, password, database: 'postgres', connectionTimeoutMillis: 10_000 });
  client.on('error', () => undefined);
  try {
    await client.connect();
  } catch {
    return 'refused';
  }
  const socket = (client as unknown as { connection: { stream: Socket } }).connection.stream;
  const closed = new Promise<'closed'>((resolve) => socket.once('close', () => resolve('closed')));
  socket.write(garbage);
  const how = await Promise.race([closed, new Promise<'held'>((resolve) => setTimeout(() => resolve('held'), holdMs))]);
  socket.destroy();
  return how;
}

/** Wrong passwords on the SQL port, all at once (pg's SCRAM); how each ended. */
async function sqlLoginFlood(port: number, count: number, user: string): Promise<{ refused: number; closed: number; other: number }> {
  const tally = { refused: 0, closed: 0, other: 0 };
  await Promise.all(Array.from({ length: count }, async (_, i) => {
    const client = new pg.Client({ host: '127.0.0.1', port, user, password: `flood-${i}`, database: 'postgres', connectionTimeoutMillis: 20_000 });
    client.on('error', () => undefined);
    try {
      await client.connect();
      tally.other += 1;
      await client.end();
    } catch (error) {
      const code = (error as { code?: string }).code;
      if (code === '28P01') tally.refused += 1;
      else if (code === undefined || code === 'ECONNRESET') tally.closed += 1;
      else tally.other += 1;
    }
  }));
  return tally;
}

/** Admin-port inputs: malformed HTTP, bad targets, wrong tokens on mutating routes, oversized headers and bodies. */
export function adminInput(rng: Rng): { kind: string; bytes: Buffer } {
  const method = rng.pick(['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'GE T', '\u0000GET']);
  const target = rng.pick([
    '/status', '/cluster', '/health/leader', '/health/replica?lag=-1', '/health/replica?lag=x', '/metrics', '/tables', '/tables/%ZZ', '/tables/%',
    'http://[', 'http://admin/status', '*', '//', `/tables/${'a'.repeat(rng.int(1, 5_000))}`, '/members/99999999999999999999', '/members/0', '/transfer?to=abc',
    '/promote', '/demote', '/ddl', '/rejoin', '/members', `/${randomBytes(rng, 20).toString('latin1').replace(/[\r\n ]/g, '')}`,
  ]);
  const kind = rng.int(0, 5);
  if (kind === 0) return { kind: 'bytes', bytes: randomBytes(rng, 300) };
  const headers = [`Host: admin`, ...(rng.chance(0.5) ? [`Authorization: Bearer ${rng.chance(0.5) ? 'wrong-token-0123456789' : randomBytes(rng, 20).toString('hex')}`] : [])];
  if (kind === 1) headers.push(`X-Big: ${'b'.repeat(rng.int(8_000, 40_000))}`);
  const body = kind === 2 ? rng.pick(['{', '{"sql": 1}', '{"mode": "sideways"}', JSON.stringify({ peer: 'x:y' }), '[[[[[[[[[['.repeat(50), randomBytes(rng, 100).toString('latin1')]) : '';
  if (kind === 3) headers.push('Content-Length: 99999999');
  else if (body !== '') headers.push(`Content-Length: ${Buffer.byteLength(body, 'latin1')}`);
  const text = `${method} ${target} HTTP/1.1\r\n${headers.join('\r\n')}\r\n\r\n${body}`;
  return { kind: ['bytes', 'big-header', 'bad-body', 'lying-length', 'request', 'request'][kind] as string, bytes: Buffer.from(text, 'latin1') };
}

/** Run `count` tasks, `width` at a time; a task that throws (a fault of this harness) is noted, and the rest go on. */
async function pool(count: number, width: number, task: (i: number) => Promise<void>, faults: string[]): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(width, count) }, async () => {
    for (let i = next++; i < count; i = next++) {
      await task(i).catch((error: unknown) => {
        if (faults.length < 10) faults.push(`input ${i}: ${(error as Error).stack ?? String(error)}`);
      });
    }
  }));
}

async function stateOf(cluster: LocalCluster): Promise<NodeState[]> {
  return Promise.all(cluster.nodes.map(async (n) => {
    const s = await n.status();
    return { replica: s.replica, role: s.role, term: s.term, leader: s.leader, vclock: [...s.vclock] };
  }));
}

function rssMiB(pid: number | undefined, field: 'VmRSS' | 'VmHWM'): Promise<number> {
  if (pid === undefined) return Promise.resolve(0);
  return readFile(`/proc/${pid}/status`, 'utf8').then((text) => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(text)?.[1] ?? 0) / 1024, () => 0);
}

/** Idle connections: opened together, held, closed; counts those the server closed first. */
async function idleFlood(port: number, count: number, holdMs: number): Promise<{ opened: number; closedByServer: number }> {
  let closedByServer = 0;
  const sockets = await Promise.all(Array.from({ length: count }, () => new Promise<Socket>((resolve) => {
    const socket = netConnect({ host: '127.0.0.1', port });
    socket.on('error', () => undefined);
    socket.once('close', () => {
      if (!(socket as Socket & { ours?: boolean }).ours) closedByServer += 1;
    });
    socket.once('connect', () => resolve(socket));
    socket.once('error', () => resolve(socket));
  })));
  await new Promise((r) => setTimeout(r, holdMs));
  for (const socket of sockets) {
    (socket as Socket & { ours?: boolean }).ours = true;
    socket.destroy();
  }
  return { opened: count, closedByServer };
}

/**
 * Connections that declare an 8 MiB frame and send 4 MiB of it without
 * authenticating, held open together: a sidecar that buffered a stranger's
 * frame held 16 MiB per connection (issue 19, finding 3). Resolves with how
 * many the server closed before this side gave up on them (10 s).
 */
async function swell(port: number, count: number): Promise<number> {
  const header = Buffer.alloc(8);
  header.writeUInt32BE(8 * 1024 * 1024, 0);
  const body = Buffer.alloc(4 * 1024 * 1024, 0x61);
  const closed = await Promise.all(Array.from({ length: count }, () => new Promise<boolean>((resolve) => {
    const socket = netConnect({ host: '127.0.0.1', port });
    let ours = false;
    socket.on('error', () => undefined);
    const timer = setTimeout(() => {
      ours = true;
      socket.destroy();
    }, 10_000);
    socket.once('connect', () => {
      socket.write(header);
      socket.write(body);
    });
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(!ours);
    });
  })));
  return closed.filter(Boolean).length;
}

/** Wrong-password logins, all at once; how each ended. */
async function loginFlood(port: number, count: number, user: string): Promise<{ refused: number; closed: number; other: number; tooManyClients: number }> {
  const tally = { refused: 0, closed: 0, other: 0, tooManyClients: 0 };
  await Promise.all(Array.from({ length: count }, (_, i) => new Promise<void>((resolve) => {
    const socket = netConnect({ host: '127.0.0.1', port });
    let buffer = Buffer.alloc(0);
    const timer = setTimeout(() => socket.destroy(), 20_000);
    socket.on('error', () => undefined);
    socket.on('data', (chunk: Buffer) => (buffer = Buffer.concat([buffer, chunk])));
    socket.once('connect', () => socket.write(frame(encodeRequest({ id: 1, op: 'auth', user, password: `flood-${i}` }))));
    socket.once('close', () => {
      clearTimeout(timer);
      const text = buffer.toString('latin1');
      // PostgreSQL out of connection slots: what a legitimate client would meet too.
      if (text.includes('too many clients')) tally.tooManyClients += 1;
      if (text.includes('AUTH')) tally.refused += 1;
      else if (buffer.length === 0) tally.closed += 1;
      else tally.other += 1;
      resolve();
    });
  })));
  return tally;
}

export async function attack(cluster: LocalCluster, options: HostileOptions): Promise<HostileReport> {
  const started = Date.now();
  const rng = new Rng(options.seed);
  const say = options.progress ?? (() => undefined);
  const secret = (await readFile(cluster.secretFile, 'utf8')).trim();
  const targets = targetsOf(cluster);
  const leader = await cluster.leader();
  const leaderTarget = targets.find((t) => t.node === leader) as Target;
  const clusterId = 'local';
  const before = await stateOf(cluster);
  const width = options.concurrency ?? 8;
  const crashes: string[] = [];
  for (const t of targets) t.node.process?.once('exit', (code, signal) => crashes.push(`node ${t.node.replica} exited (${code ?? signal})`));

  // Peak memory, sampled through the run.
  const rssPeakMiB: Record<number, number> = {};
  const sampler = setInterval(() => {
    for (const t of targets) void rssMiB(t.node.process?.pid, 'VmRSS').then((mib) => (rssPeakMiB[t.node.replica] = Math.max(rssPeakMiB[t.node.replica] ?? 0, mib)));
  }, 100);

  // The writer: sync writes all through the attack; every one must succeed.
  const db: Db = await connect(cluster.clientAddresses, cluster.credentials);
  const writes = { ok: 0, failed: 0, errors: [] as string[] };
  let writing = true;
  const writer = (async () => {
    for (let id = 1; writing; id += 1) {
      try {
        await db.execute([[`INSERT INTO ${options.table} VALUES ($1, $2)`, [options.seed * 1_000_000 + id, 'during the attack']]]);
        writes.ok += 1;
      } catch (error) {
        writes.failed += 1;
        if (writes.errors.length < 10) writes.errors.push((error as Error).message);
      }
    }
  })();

  const inputs = {
    peer: { sent: 0, byKind: {} as Record<string, number> }, client: { sent: 0, byKind: {} as Record<string, number> }, admin: { sent: 0, byKind: {} as Record<string, number> }, sql: { sent: 0, byKind: {} as Record<string, number> },
  };
  const count = (port: 'peer' | 'client' | 'admin' | 'sql', kind: string): void => {
    inputs[port].sent += 1;
    inputs[port].byKind[kind] = (inputs[port].byKind[kind] ?? 0) + 1;
  };
  const http: Record<string, number> = {};
  const http500: string[] = [];
  const staleNonce = { value: null as Uint8Array | null };
  const peerRng = new Rng(rng.fork());
  const clientRng = new Rng(rng.fork());
  const adminRng = new Rng(rng.fork());
  const sqlRng = new Rng(rng.fork());
  const every = Math.max(1, Math.floor(options.inputs / 10));
  const harnessFaults: string[] = [];

  const peers = pool(options.inputs, width, async (i) => {
    const t = targets[i % targets.length] as Target;
    const input = peerInput(peerRng, secret, clusterId, staleNonce);
    count('peer', input.kind);
    await probe(t.peerPort, input.converse, 60);
    if ((i + 1) % every === 0) say(`peer ${i + 1}/${options.inputs}`);
  }, harnessFaults);
  const clients = pool(options.inputs, width, async (i) => {
    const t = targets[i % targets.length] as Target;
    const input = clientInput(clientRng, cluster.credentials, options.table);
    count('client', input.kind);
    await probe(t.clientPort, () => input.converse(), 60);
    if ((i + 1) % every === 0) say(`client ${i + 1}/${options.inputs}`);
  }, harnessFaults);
  const admins = pool(options.inputs, width, async (i) => {
    const t = targets[i % targets.length] as Target;
    const input = adminInput(adminRng);
    count('admin', input.kind);
    let answer: Buffer = Buffer.alloc(0);
    await probe(t.adminPort, (socket, received) => {
      socket.once('close', () => (answer = received()));
      return Promise.resolve(input.bytes);
    }, 150);
    const status = /^HTTP\/1\.1 (\d{3})/.exec(answer.toString('latin1'))?.[1];
    const klass = status === undefined ? 'none' : `${status[0] as string}xx`;
    http[klass] = (http[klass] ?? 0) + 1;
    if (status === '500' && http500.length < 20) http500.push(`${input.bytes.toString('latin1').split('\r\n')[0]?.slice(0, 120) ?? ''} -> ${answer.toString('latin1').split('\r\n\r\n')[1]?.slice(0, 200) ?? ''}`);
    if ((i + 1) % every === 0) say(`admin ${i + 1}/${options.inputs}`);
  }, harnessFaults);
  const sqls = pool(options.inputs, width, async (i) => {
    const t = targets[i % targets.length] as Target;
    const input = sqlInput(sqlRng, cluster.credentials);
    count('sql', input.kind);
    if ('afterLogin' in input) await sqlAfterLogin(t.sqlPort, cluster.credentials, input.password, input.afterLogin, 60);
    else await probe(t.sqlPort, input.converse, 60);
    if ((i + 1) % every === 0) say(`sql ${i + 1}/${options.inputs}`);
  }, harnessFaults);
  await Promise.all([peers, clients, admins, sqls]);

  say(`idle floods: ${options.idle} connections to each port of the leader`);
  const [idlePeer, idleClient, idleAdmin, idleSql] = await Promise.all([
    idleFlood(leaderTarget.peerPort, options.idle, options.idleHoldMs),
    idleFlood(leaderTarget.clientPort, options.idle, options.idleHoldMs),
    idleFlood(leaderTarget.adminPort, options.idle, options.idleHoldMs),
    idleFlood(leaderTarget.sqlPort, options.idle, options.idleHoldMs),
  ]);
  say(`swell: ${options.swell} connections each sending 4 MiB of an 8 MiB frame before authenticating, to the leader's peer and client ports`);
  const swelled = await Promise.all([swell(leaderTarget.peerPort, options.swell), swell(leaderTarget.clientPort, options.swell)]);
  say(`login flood: ${options.logins} wrong passwords at once`);
  const logins = await loginFlood(leaderTarget.clientPort, options.logins, cluster.credentials.user);
  say(`SQL login flood: ${options.logins} wrong passwords at once`);
  const sqlLogins = await sqlLoginFlood(leaderTarget.sqlPort, options.logins, cluster.credentials.user);

  writing = false;
  await writer;
  db.close();
  clearInterval(sampler);
  for (const t of targets) {
    const hwm = await rssMiB(t.node.process?.pid, 'VmHWM');
    rssPeakMiB[t.node.replica] = Math.max(rssPeakMiB[t.node.replica] ?? 0, hwm);
  }

  // Every node has what the leader has: wait for the followers to catch up, then compare.
  const digest = `SELECT count(*)::int AS n, md5(coalesce(string_agg(id || ':' || note, ',' ORDER BY id), '')) AS md5 FROM ${options.table}`;
  let tablesIdentical = false;
  for (let waited = 0; waited < 20_000 && !tablesIdentical; waited += 200) {
    const digests = await Promise.all(cluster.nodes.map((n) => rowsOn(n, digest).then((r) => JSON.stringify(r), () => 'unreachable')));
    tablesIdentical = digests.every((d) => d === digests[0]);
    if (!tablesIdentical) await new Promise((r) => setTimeout(r, 200));
  }
  const after = await stateOf(cluster).catch(() => [] as NodeState[]);
  const stateChanges: string[] = [];
  const writerReplica = leader.replica;
  for (const b of before) {
    const a = after.find((x) => x.replica === b.replica);
    if (a === undefined) {
      stateChanges.push(`node ${b.replica} does not answer`);
      continue;
    }
    if (a.role !== b.role || a.term !== b.term || a.leader !== b.leader) stateChanges.push(`node ${b.replica}: ${b.role}/term ${b.term}/leader ${b.leader} became ${a.role}/term ${a.term}/leader ${a.leader}`);
    for (let r = 1; r < Math.max(a.vclock.length, b.vclock.length); r += 1) {
      if (r !== writerReplica && (a.vclock[r] ?? 0) !== (b.vclock[r] ?? 0)) stateChanges.push(`node ${b.replica}: vclock[${r}] moved from ${b.vclock[r] ?? 0} to ${a.vclock[r] ?? 0}`);
    }
  }
  return {
    // A copy: the cluster's own stop, after this report, ends the processes too.
    seed: options.seed, inputs, http, http500, idle: { peer: idlePeer, client: idleClient, admin: idleAdmin, sql: idleSql }, logins, sqlLogins, swelled, writes, crashes: [...crashes],
    before, after, stateChanges, tablesIdentical, rssPeakMiB, harnessFaults, durationMs: Date.now() - started,
  };
}
