// The client protocol: msgpack maps in the journal's frames, with request ids
// so that a client can pipeline requests on one connection.
//
//   auth     {i, o: 4, u: user, p: password}     first: a PostgreSQL role, checked by PostgreSQL
//   execute  {i, o: 1, s: [[sql, params], ...], k?: idempotency key, t?: term, f?: forward to the leader}
//            one transaction, one round trip
//   query    {i, o: 2, q: sql, p: params, c?: consistency}   a read: local (default), leader, linearizable
//   outcome  {i, o: 3, k: idempotency key}         did that transaction commit?
//   table    {i, o: 5, n: table, m: mode}          set a table's mode cluster-wide (table owner)
//   ddl      {i, o: 10, q: sql}                    a schema change on every node, as the client's role
//   begin    {i, o: 6, k?: key, t?: term}          an interactive transaction: answers {x: its id}
//   tquery   {i, o: 7, x, q: sql, p: params}       a statement in it
//   commit   {i, o: 8, x}   rollback {i, o: 9, x}
//
//   answer   {i, r: result} | {i, e: {c: code, m: message, s?: sqlstate, l?: leader, t?: term}}
import { RecordInvalid, type ErrorCode } from './errors.js';
import { limits } from './limits.js';
import { codec, decodeOne, shown, type TableMode } from './record.js';
import { isTerm, type Term } from './types.js';

export interface Statement {
  readonly sql: string;
  readonly params: readonly unknown[];
}

export type ClientRequest =
  | { readonly id: number; readonly op: 'auth'; readonly user: string; readonly password: string }
  | { readonly id: number; readonly op: 'execute'; readonly statements: readonly Statement[]; readonly idempotencyKey: string | null; readonly term: Term | null; readonly forward?: boolean }
  | { readonly id: number; readonly op: 'query'; readonly sql: string; readonly params: readonly unknown[]; readonly consistency: Consistency }
  | { readonly id: number; readonly op: 'outcome'; readonly idempotencyKey: string }
  | { readonly id: number; readonly op: 'table'; readonly table: string; readonly mode: TableMode }
  | { readonly id: number; readonly op: 'ddl'; readonly sql: string }
  | { readonly id: number; readonly op: 'begin'; readonly idempotencyKey: string | null; readonly term: Term | null }
  | { readonly id: number; readonly op: 'tquery'; readonly tx: number; readonly sql: string; readonly params: readonly unknown[] }
  | { readonly id: number; readonly op: 'commit' | 'rollback'; readonly tx: number };

/** local: this node's committed data; leader: read on the leader; linearizable: leader with a read index (with elections). */
export type Consistency = 'local' | 'leader' | 'linearizable';
const CONSISTENCIES: ReadonlySet<string> = new Set<Consistency>(['local', 'leader', 'linearizable']);

export interface ResultSet {
  readonly rows: readonly Record<string, unknown>[];
  readonly rowCount: number;
}

export interface ClientErrorBody {
  readonly code: ErrorCode;
  readonly message: string;
  readonly sqlstate?: string;
  /** The leader's client address, with NOT_LEADER and STALE_TERM. */
  readonly leader?: string;
  readonly term?: number;
}

export type ClientResponse =
  | { readonly id: number; readonly result: unknown }
  | { readonly id: number; readonly error: ClientErrorBody };

const OPS = { execute: 1, query: 2, outcome: 3, auth: 4, table: 5, begin: 6, tquery: 7, commit: 8, rollback: 9, ddl: 10 } as const;
const MODES: ReadonlySet<string> = new Set(['local', 'async', 'sync']);
export const STATEMENTS_MAX = 1_000;

export function encodeRequest(request: ClientRequest): Uint8Array {
  switch (request.op) {
    case 'execute': {
      const wire: Record<string, unknown> = { i: request.id, o: OPS.execute, s: request.statements.map((s) => [s.sql, s.params]) };
      if (request.idempotencyKey !== null) wire.k = request.idempotencyKey;
      if (request.term !== null) wire.t = request.term;
      if (request.forward === true) wire.f = true;
      return codec.pack(wire);
    }
    case 'query':
      return codec.pack(request.consistency === 'local'
        ? { i: request.id, o: OPS.query, q: request.sql, p: request.params }
        : { i: request.id, o: OPS.query, q: request.sql, p: request.params, c: request.consistency });
    case 'outcome':
      return codec.pack({ i: request.id, o: OPS.outcome, k: request.idempotencyKey });
    case 'auth':
      return codec.pack({ i: request.id, o: OPS.auth, u: request.user, p: request.password });
    case 'table':
      return codec.pack({ i: request.id, o: OPS.table, n: request.table, m: request.mode });
    case 'ddl':
      return codec.pack({ i: request.id, o: OPS.ddl, q: request.sql });
    case 'begin': {
      const wire: Record<string, unknown> = { i: request.id, o: OPS.begin };
      if (request.idempotencyKey !== null) wire.k = request.idempotencyKey;
      if (request.term !== null) wire.t = request.term;
      return codec.pack(wire);
    }
    case 'tquery':
      return codec.pack({ i: request.id, o: OPS.tquery, x: request.tx, q: request.sql, p: request.params });
    case 'commit':
    case 'rollback':
      return codec.pack({ i: request.id, o: OPS[request.op], x: request.tx });
  }
}

function fail(field: string, reason: string): never {
  throw new RecordInvalid(field, reason);
}

function statement(value: unknown, index: number): Statement {
  if (!Array.isArray(value) || value.length !== 2 || typeof value[0] !== 'string' || !Array.isArray(value[1])) fail(`statements[${index}]`, 'expected [sql, params]');
  return { sql: value[0], params: value[1] as unknown[] };
}

function parseRequest(value: unknown): ClientRequest {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail('request', 'expected a map');
  const w = value as Record<string, unknown>;
  const id = w.i;
  if (!Number.isSafeInteger(id) || (id as number) < 0) fail('id', 'expected a non-negative integer');
  switch (w.o) {
    case OPS.execute: {
      if (!Array.isArray(w.s) || w.s.length === 0 || w.s.length > STATEMENTS_MAX) fail('statements', `expected 1..${STATEMENTS_MAX} statements`);
      if (w.k !== undefined && (typeof w.k !== 'string' || w.k.length === 0 || w.k.length > 256)) fail('idempotencyKey', 'expected a string of 1..256 characters');
      if (w.t !== undefined && !isTerm(w.t)) fail('term', 'expected a non-negative integer');
      if (w.f !== undefined && typeof w.f !== 'boolean') fail('forward', 'expected a boolean');
      const execute = { id: id as number, op: 'execute' as const, statements: w.s.map(statement), idempotencyKey: (w.k as string | undefined) ?? null, term: (w.t as Term | undefined) ?? null };
      return w.f === true ? { ...execute, forward: true } : execute;
    }
    case OPS.query:
      if (typeof w.q !== 'string') fail('sql', 'expected a string');
      if (!Array.isArray(w.p)) fail('params', 'expected an array');
      if (w.c !== undefined && (typeof w.c !== 'string' || !CONSISTENCIES.has(w.c))) fail('consistency', 'expected local, leader or linearizable');
      return { id: id as number, op: 'query', sql: w.q, params: w.p as unknown[], consistency: (w.c as Consistency | undefined) ?? 'local' };
    case OPS.outcome:
      if (typeof w.k !== 'string' || w.k.length === 0) fail('idempotencyKey', 'expected a string');
      return { id: id as number, op: 'outcome', idempotencyKey: w.k };
    case OPS.auth:
      if (typeof w.u !== 'string' || w.u.length === 0 || w.u.length > 63) fail('user', 'expected a role name');
      if (typeof w.p !== 'string' || w.p.length > 1024) fail('password', 'expected a string');
      return { id: id as number, op: 'auth', user: w.u, password: w.p };
    case OPS.begin:
      if (w.k !== undefined && (typeof w.k !== 'string' || w.k.length === 0 || w.k.length > 256)) fail('idempotencyKey', 'expected a string of 1..256 characters');
      if (w.t !== undefined && !isTerm(w.t)) fail('term', 'expected a non-negative integer');
      return { id: id as number, op: 'begin', idempotencyKey: (w.k as string | undefined) ?? null, term: (w.t as Term | undefined) ?? null };
    case OPS.tquery:
      if (!Number.isSafeInteger(w.x)) fail('tx', 'expected a transaction id');
      if (typeof w.q !== 'string') fail('sql', 'expected a string');
      if (!Array.isArray(w.p)) fail('params', 'expected an array');
      return { id: id as number, op: 'tquery', tx: w.x as number, sql: w.q, params: w.p as unknown[] };
    case OPS.commit:
    case OPS.rollback:
      if (!Number.isSafeInteger(w.x)) fail('tx', 'expected a transaction id');
      return { id: id as number, op: w.o === OPS.commit ? 'commit' : 'rollback', tx: w.x as number };
    case OPS.table:
      if (typeof w.n !== 'string' || w.n.length === 0 || w.n.length > 256) fail('table', 'expected a table name');
      if (typeof w.m !== 'string' || !MODES.has(w.m)) fail('mode', 'expected local, async or sync');
      return { id: id as number, op: 'table', table: w.n, mode: w.m as TableMode };
    case OPS.ddl:
      if (typeof w.q !== 'string' || w.q.length === 0 || w.q.length > limits.ddlBytesMax) fail('sql', `expected SQL of 1..${limits.ddlBytesMax} characters`);
      return { id: id as number, op: 'ddl', sql: w.q };
    default:
      return fail('op', `unknown operation ${shown(w.o)}`);
  }
}

function decodeWith<T>(body: Uint8Array, parse: (value: unknown) => T): { ok: true; message: T } | { ok: false; error: RecordInvalid } {
  const decoded = decodeOne(body, 'request', parse);
  return decoded.ok ? { ok: true, message: decoded.value } : decoded;
}

export function decodeRequest(body: Uint8Array): { ok: true; message: ClientRequest } | { ok: false; error: RecordInvalid } {
  return decodeWith(body, parseRequest);
}

export function encodeResponse(response: ClientResponse): Uint8Array {
  return 'error' in response
    ? codec.pack({ i: response.id, e: { c: response.error.code, m: response.error.message, s: response.error.sqlstate, l: response.error.leader, t: response.error.term } })
    : codec.pack({ i: response.id, r: response.result });
}

export function decodeResponse(body: Uint8Array): { ok: true; message: ClientResponse } | { ok: false; error: RecordInvalid } {
  return decodeWith(body, (value) => {
    const w = value as Record<string, unknown> | null;
    if (typeof w !== 'object' || w === null || !Number.isSafeInteger(w.i)) fail('response', 'expected a map with an id');
    if (w.e === undefined) return { id: w.i as number, result: w.r };
    const e = w.e as Record<string, unknown>;
    if (typeof e !== 'object' || e === null || typeof e.c !== 'string' || typeof e.m !== 'string') fail('error', 'expected {c, m}');
    const error: ClientErrorBody = { code: e.c as ErrorCode, message: e.m, ...(typeof e.s === 'string' ? { sqlstate: e.s } : {}), ...(typeof e.l === 'string' ? { leader: e.l } : {}), ...(typeof e.t === 'number' ? { term: e.t } : {}) };
    return { id: w.i as number, error };
  });
}
