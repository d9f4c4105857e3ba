// Messages between sidecars (DESIGN.md §5), as msgpack maps with a numeric
// `m` code, checked field by field like records: anything malformed is a
// typed `RecordInvalid` naming the field, never a crash.
//
//   subscriber                                relay (peer)
//      │ ◄──────── hello(version, cluster, replica, nonce) ─┤
//      ├── hello(version, cluster, replica, nonce, proof) ─► │  proof = HMAC(secret, ...)
//      │ ◄──────────────────────── welcome(proof) | refuse ──┤  mutual: the peer proves it too
//      ├── subscribe(vclock) ──────────────────────────────► │
//      │ ◄──────────────────────────────────── record ... ───┤  from the journal, then live
//      ├── ack(vclock, term) ──────────────────────────────► │  after journal and PostgreSQL are durable
//
//   A subscriber behind the relay's journal start: refuse, or (when it asked
//   for one) snapshot(floor, history, tables), snapshotPart ..., snapshotEnd,
//   then the records from the floor on (docs/rfc/0009-retention-and-rejoin.md).
//      │ ◄─────────────────────────────── raft(election) ───► │  either way, on whichever link is up
import type { ElectionMessage } from './election.js';
import { RecordInvalid } from './errors.js';
import { limits } from './limits.js';
import { codec, decodeOne, parseRecord, recordToWire, shown, type JournalRecord, type TableShape } from './record.js';
import { isReplicaId, isTerm, type ReplicaId, type Term } from './types.js';
import { vclockParse, type VClock } from './vclock.js';

/** A replicated table as a snapshot announces it (postgres/snapshot.ts). */
export interface SnapshotTable {
  readonly name: string;
  readonly mode: 'sync' | 'async';
  readonly shape: TableShape;
}

export const PROTOCOL_VERSION = 1;
export const NONCE_BYTES = 32;
export const PROOF_BYTES = 32;

export type PeerMessage =
  | { readonly kind: 'hello'; readonly version: number; readonly cluster: string; readonly replica: ReplicaId; readonly nonce: Uint8Array; readonly proof: Uint8Array | null }
  | { readonly kind: 'welcome'; readonly proof: Uint8Array }
  /** `gap`: the subscriber is behind the relay's journal start and did not ask for a snapshot. */
  | { readonly kind: 'refuse'; readonly reason: string; readonly gap?: boolean }
  /** snapshot: take one when behind the relay's start; join: a new node, whose first sync is always a snapshot. */
  | { readonly kind: 'subscribe'; readonly vclock: VClock; readonly snapshot: boolean; readonly join?: boolean }
  | { readonly kind: 'snapshot'; readonly floor: VClock; readonly history: unknown; readonly tables: readonly SnapshotTable[] }
  /** rows: COPY text lines of `columns`. */
  | { readonly kind: 'snapshotPart'; readonly table: string; readonly columns: readonly string[]; readonly rows: string; readonly count: number }
  | { readonly kind: 'snapshotEnd'; readonly parts: number }
  | { readonly kind: 'record'; readonly record: JournalRecord }
  | { readonly kind: 'ack'; readonly vclock: VClock; readonly term: Term }
  | { readonly kind: 'raft'; readonly message: ElectionMessage };

export type MessageResult = { readonly ok: true; readonly message: PeerMessage } | { readonly ok: false; readonly error: RecordInvalid };

const CODES = { hello: 1, welcome: 2, refuse: 3, subscribe: 4, record: 5, ack: 6, raft: 7, snapshot: 8, snapshotPart: 9, snapshotEnd: 10 } as const;
const RAFT_CODES = { vote: 1, voteReply: 2, heartbeat: 3, heartbeatReply: 4, timeoutNow: 5 } as const;

function raftToWire(e: ElectionMessage): Record<string, unknown> {
  const wire: Record<string, unknown> = { m: CODES.raft, y: RAFT_CODES[e.type], t: e.term };
  switch (e.type) {
    case 'vote':
      return { ...wire, vc: e.vclock, p: e.pre, f: e.force };
    case 'voteReply':
      return { ...wire, g: e.granted, p: e.pre };
    case 'heartbeat':
      return { ...wire, s: e.sentMs, ...(e.seq === undefined ? {} : { n: e.seq }) };
    case 'heartbeatReply':
      return { ...wire, s: e.sentMs, vc: e.vclock, ...(e.seq === undefined ? {} : { n: e.seq }) };
    case 'timeoutNow':
      return wire;
  }
}

export function encodeMessage(message: PeerMessage): Uint8Array {
  switch (message.kind) {
    case 'hello':
      return codec.pack(message.proof === null
        ? { m: CODES.hello, v: message.version, c: message.cluster, r: message.replica, n: message.nonce }
        : { m: CODES.hello, v: message.version, c: message.cluster, r: message.replica, n: message.nonce, p: message.proof });
    case 'welcome':
      return codec.pack({ m: CODES.welcome, p: message.proof });
    case 'refuse':
      return codec.pack(message.gap === true ? { m: CODES.refuse, e: message.reason, g: true } : { m: CODES.refuse, e: message.reason });
    case 'subscribe':
      return codec.pack({ m: CODES.subscribe, vc: message.vclock, ...(message.snapshot ? { s: true } : {}), ...(message.join === true ? { j: true } : {}) });
    case 'snapshot':
      return codec.pack({ m: CODES.snapshot, f: message.floor, h: message.history, t: message.tables.map((t) => ({ n: t.name, o: t.mode, c: t.shape.columns, k: t.shape.key })) });
    case 'snapshotPart':
      return codec.pack({ m: CODES.snapshotPart, n: message.table, cl: message.columns, r: message.rows, c: message.count });
    case 'snapshotEnd':
      return codec.pack({ m: CODES.snapshotEnd, c: message.parts });
    case 'record':
      return codec.pack({ m: CODES.record, x: recordToWire(message.record) });
    case 'ack':
      return codec.pack({ m: CODES.ack, vc: message.vclock, t: message.term });
    case 'raft':
      return codec.pack(raftToWire(message.message));
  }
}

function fail(field: string, reason: string): never {
  throw new RecordInvalid(field, reason);
}

function bytes(value: unknown, field: string, length: number): Uint8Array {
  if (!(value instanceof Uint8Array) || value.length !== length) fail(field, `expected ${length} bytes`);
  return value;
}

function vclock(value: unknown): VClock {
  const parsed = vclockParse(value);
  if (typeof parsed === 'string') fail('vclock', parsed);
  return parsed;
}

function flag(value: unknown, field: string): boolean {
  if (typeof value !== 'boolean') fail(field, 'expected a boolean');
  return value;
}

function sentMs(value: unknown): number {
  if (!Number.isSafeInteger(value) || (value as number) < 0) fail('sentMs', 'expected a non-negative integer');
  return value as number;
}

/** A heartbeat's round, when the sender counts them (an older peer does not: no read index counts its answers). */
function seq(value: unknown): { seq?: number } {
  if (value === undefined) return {};
  if (!Number.isSafeInteger(value) || (value as number) < 0) fail('seq', 'expected a non-negative integer');
  return { seq: value as number };
}

function parseRaft(w: Record<string, unknown>): ElectionMessage {
  if (!isTerm(w.t)) fail('term', 'expected a non-negative integer');
  const term = w.t;
  switch (w.y) {
    case RAFT_CODES.vote:
      return { type: 'vote', term, vclock: vclock(w.vc), pre: flag(w.p, 'pre'), force: flag(w.f, 'force') };
    case RAFT_CODES.voteReply:
      return { type: 'voteReply', term, granted: flag(w.g, 'granted'), pre: flag(w.p, 'pre') };
    case RAFT_CODES.heartbeat:
      return { type: 'heartbeat', term, sentMs: sentMs(w.s), ...seq(w.n) };
    case RAFT_CODES.heartbeatReply:
      return { type: 'heartbeatReply', term, sentMs: sentMs(w.s), vclock: vclock(w.vc), ...seq(w.n) };
    case RAFT_CODES.timeoutNow:
      return { type: 'timeoutNow', term };
    default:
      return fail('type', `unknown election message type ${shown(w.y)}`);
  }
}

function parse(value: unknown): PeerMessage {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail('message', 'expected a map');
  const w = value as Record<string, unknown>;
  switch (w.m) {
    case CODES.hello: {
      if (!Number.isSafeInteger(w.v)) fail('version', 'expected an integer');
      if (typeof w.c !== 'string' || w.c.length === 0 || w.c.length > 64) fail('cluster', 'expected a cluster id');
      if (!isReplicaId(w.r) || w.r === 0) fail('replica', 'expected a replica id 1..31');
      return { kind: 'hello', version: w.v as number, cluster: w.c, replica: w.r, nonce: bytes(w.n, 'nonce', NONCE_BYTES), proof: w.p === undefined ? null : bytes(w.p, 'proof', PROOF_BYTES) };
    }
    case CODES.welcome:
      return { kind: 'welcome', proof: bytes(w.p, 'proof', PROOF_BYTES) };
    case CODES.refuse:
      if (typeof w.e !== 'string') fail('reason', 'expected a string');
      return { kind: 'refuse', reason: w.e.slice(0, 1000), gap: w.g === true };
    case CODES.subscribe:
      return { kind: 'subscribe', vclock: vclock(w.vc), snapshot: w.s === true || w.j === true, ...(w.j === true ? { join: true } : {}) };
    case CODES.snapshot: {
      const floor = vclockParse(w.f);
      if (typeof floor === 'string') fail('floor', floor);
      if (!Array.isArray(w.t)) fail('tables', 'expected an array');
      const tables = w.t.map((t: unknown, i: number): SnapshotTable => {
        const x = t as Record<string, unknown>;
        if (typeof x !== 'object' || x === null || typeof x.n !== 'string' || x.n.length > limits.tableNameBytesMax) fail(`tables[${i}].name`, 'expected a table name');
        if (x.o !== 'sync' && x.o !== 'async') fail(`tables[${i}].mode`, 'expected sync or async');
        const pairs = (v: unknown): v is Array<[string, string]> => Array.isArray(v) && v.every((p) => Array.isArray(p) && p.length === 2 && typeof p[0] === 'string' && typeof p[1] === 'string');
        if (!pairs(x.c) || !Array.isArray(x.k) || !x.k.every((k) => typeof k === 'string')) fail(`tables[${i}].shape`, 'expected columns and a key');
        return { name: x.n, mode: x.o, shape: { columns: x.c, key: x.k as string[] } };
      });
      return { kind: 'snapshot', floor, history: w.h, tables };
    }
    case CODES.snapshotPart:
      if (typeof w.n !== 'string' || typeof w.r !== 'string' || !Number.isSafeInteger(w.c)) fail('snapshotPart', 'expected a table, rows and a count');
      if (!Array.isArray(w.cl) || w.cl.length === 0 || w.cl.length > 1_600 || !w.cl.every((c: unknown) => typeof c === 'string' && c.length <= 1_000)) fail('snapshotPart.columns', 'expected the column names of the COPY lines');
      return { kind: 'snapshotPart', table: w.n, columns: w.cl as string[], rows: w.r, count: w.c as number };
    case CODES.snapshotEnd:
      if (!Number.isSafeInteger(w.c)) fail('parts', 'expected an integer');
      return { kind: 'snapshotEnd', parts: w.c as number };
    case CODES.record: {
      const parsed = parseRecord(w.x);
      if (!parsed.ok) throw parsed.error;
      return { kind: 'record', record: parsed.record };
    }
    case CODES.ack:
      if (!isTerm(w.t)) fail('term', 'expected a non-negative integer');
      return { kind: 'ack', vclock: vclock(w.vc), term: w.t };
    case CODES.raft:
      return { kind: 'raft', message: parseRaft(w) };
    default:
      return fail('message', `unknown message code ${shown(w.m)}`);
  }
}

export function decodeMessage(body: Uint8Array): MessageResult {
  const decoded = decodeOne(body, 'message', parse);
  return decoded.ok ? { ok: true, message: decoded.value } : decoded;
}
