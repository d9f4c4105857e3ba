// Journal records (DESIGN.md §4) and their msgpack encoding.
//
// Every record has a header (replica, lsn, term, time) and a kind. On disk and
// on the wire a record is a msgpack map with short keys; `decodeRecord`
// checks every field and returns a typed `RecordInvalid` for anything it does
// not recognise, never a crash and never a half-checked object.
//
//   kind      payload                                          replicated
//   txn       gid, sync, changes, idempotency key               yes
//   confirm   owner, lsn: owner's entries <= lsn are committed   yes
//   rollback  owner, lsn: owner's entries >= lsn are rolled back yes
//   promote   previous owner, its last lsn kept, new leader     yes (header term = the new term)
//   demote    the owner's last confirmed lsn                   yes
//   config    table modes, membership, quorum, timeouts        yes
//   raft      vote (header term = current term)                no: replica 0, local only
import { Packr } from 'msgpackr';
import { RecordInvalid } from './errors.js';
import { limits } from './limits.js';
import { isLsn, isReplicaId, isTerm, REPLICA_LOCAL, type Lsn, type ReplicaId, type Term } from './types.js';

export type RecordKind = 'txn' | 'confirm' | 'rollback' | 'promote' | 'demote' | 'config' | 'raft';
export type TableMode = 'local' | 'async' | 'sync';
/** copy: rows a table held when it became replicated, in COPY text format (RFC 0008). */
export type ChangeOp = 'insert' | 'update' | 'delete' | 'copy';
/**
 * Row images travel as PostgreSQL's own jsonb text (a JSON array of row
 * objects), never parsed in Node: JSON.parse would round a bigint or a
 * numeric(30,10) to a double, and the follower hands the text straight back
 * to jsonb_populate_recordset.
 */
export type RowsJson = string;

export interface RecordHeader {
  readonly replica: ReplicaId;
  readonly lsn: Lsn;
  readonly term: Term;
  /** Hybrid timestamp given by the shell; orders async conflicts (last writer wins). */
  readonly time: number;
}

export interface Change {
  readonly table: string;
  readonly op: ChangeOp;
  /** New row images for insert and update; key images for delete. */
  readonly rows: RowsJson;
  /**
   * For an update, the key images of the updated rows before the statement, as
   * a set (not paired with rows): keys that no longer exist after it are
   * deleted, so that a primary-key change replicates.
   */
  readonly oldKeys?: RowsJson;
  /**
   * For a copy, the columns of each COPY line (quoted as quote_ident does), in
   * order; `rows` is then PostgreSQL's COPY text, not JSON: read ten times
   * faster than row images on the leader, and loaded three times faster.
   */
  readonly columns?: readonly string[];
}

export interface TxnRecord extends RecordHeader {
  readonly kind: 'txn';
  readonly gid: string;
  readonly sync: boolean;
  readonly changes: readonly Change[];
  readonly idempotencyKey: string | null;
}

export interface ConfirmRecord extends RecordHeader {
  readonly kind: 'confirm';
  readonly owner: ReplicaId;
  /** Every entry of `owner` with lsn <= confirmedLsn is committed. */
  readonly confirmedLsn: Lsn;
}

export interface RollbackRecord extends RecordHeader {
  readonly kind: 'rollback';
  readonly owner: ReplicaId;
  /** Every entry of `owner` with lsn >= fromLsn is rolled back. */
  readonly fromLsn: Lsn;
  /**
   * Entries from this lsn on had reached no peer when rolled back: their
   * clients were told RolledBack, and the owner relays them as empty TXNs
   * ever after. Absent when every rolled-back entry had been sent.
   */
  readonly withheldFromLsn?: Lsn;
}

export interface PromoteRecord extends RecordHeader {
  readonly kind: 'promote';
  /** The limbo owner before this promotion (0: there was none). */
  readonly prevOwner: ReplicaId;
  /** The last lsn of prevOwner that is kept (confirmed); later ones are rolled back. */
  readonly prevLsn: Lsn;
  readonly leader: ReplicaId;
}

export interface DemoteRecord extends RecordHeader {
  readonly kind: 'demote';
  /** The owner's last confirmed lsn; the limbo is empty when it gives it up. */
  readonly confirmedLsn: Lsn;
}

export interface Member {
  readonly replica: ReplicaId;
  /** The peer address, host:port. */
  readonly address: string;
  /** The client address, given to clients with NOT_LEADER. */
  readonly client?: string;
  /** The admin HTTP address. */
  readonly admin?: string;
}

/** A replicated table's columns (quoted name, type) and primary key: what every node must agree on. */
export interface TableShape {
  readonly columns: ReadonlyArray<readonly [string, string]>;
  readonly key: readonly string[];
}

export interface ConfigRecord extends RecordHeader {
  readonly kind: 'config';
  readonly tables?: Readonly<Record<string, TableMode>>;
  /** The leader's shape of each table in `tables` made replicated: a node whose table differs refuses it. */
  readonly shapes?: Readonly<Record<string, TableShape>>;
  /** A schema change every node runs at this point of the journal (`qsync ddl`). */
  readonly ddl?: string;
  /** The role the schema change runs as on every node (a client library call); absent: the sidecar's own. */
  readonly ddlRole?: string;
  /** A membership change (core/membership.ts): every member after it, the quorum, and the version it becomes. */
  readonly members?: readonly Member[];
  readonly quorum?: number;
  readonly membersVersion?: number;
  readonly synchroTimeoutMs?: number;
  readonly electionTimeoutMs?: number;
}

export interface RaftRecord extends RecordHeader {
  readonly kind: 'raft';
  /** The candidate voted for in `term`; 0 when none. */
  readonly vote: ReplicaId;
}

export type JournalRecord =
  | TxnRecord
  | ConfirmRecord
  | RollbackRecord
  | PromoteRecord
  | DemoteRecord
  | ConfigRecord
  | RaftRecord;

export type DecodeResult = { readonly ok: true; readonly record: JournalRecord } | { readonly ok: false; readonly error: RecordInvalid };

const KIND_CODES: Readonly<Record<RecordKind, number>> = { txn: 1, confirm: 2, rollback: 3, promote: 4, demote: 5, config: 6, raft: 7 };
const KIND_BY_CODE = new Map(Object.entries(KIND_CODES).map(([kind, code]) => [code, kind as RecordKind]));
const OP_CODES: Readonly<Record<ChangeOp, number>> = { insert: 1, update: 2, delete: 3, copy: 4 };
const OP_BY_CODE = new Map(Object.entries(OP_CODES).map(([op, code]) => [code, op as ChangeOp]));
const TABLE_MODES: ReadonlySet<string> = new Set<TableMode>(['local', 'async', 'sync']);

/**
 * One codec for the journal and the wire. `useRecords: false` keeps every
 * frame self-contained: no structure shared between frames that a reader
 * starting mid-stream would lack. `int64AsType: 'number'`: a 64-bit integer
 * decodes as a Number (imprecise past 2^53, so every isSafeInteger check
 * refuses it), never as a BigInt that arithmetic and JSON would throw on.
 */
export const codec = new Packr({ useRecords: false, variableMapSize: true, int64AsType: 'number' });

/**
 * Encode a record. The wire form is checked by the same validation the
 * decoder runs, so that nothing is ever written that recovery would refuse to
 * read back (an undecodable record in the journal would be cut as corruption).
 * Throws `RecordInvalid` naming the field.
 */
export function encodeRecord(record: JournalRecord): Uint8Array {
  const wire = recordToWire(record);
  const checked = parseRecord(wire);
  if (!checked.ok) throw checked.error;
  return codec.pack(wire);
}

export function decodeRecord(bytes: Uint8Array): DecodeResult {
  const decoded = decodeOne(bytes, 'body', fromWire);
  return decoded.ok ? { ok: true, record: decoded.value } : decoded;
}

/**
 * Unpack exactly one msgpack value from `bytes` and build a T from it with
 * `parse`, which throws RecordInvalid naming the bad field. Every decoder of
 * peer, client and journal input goes through here: a typed error, never a throw.
 */
export function decodeOne<T>(bytes: Uint8Array, what: string, parse: (value: unknown) => T): { ok: true; value: T } | { ok: false; error: RecordInvalid } {
  let values: unknown[];
  try {
    values = codec.unpackMultiple(bytes as Buffer) as unknown[];
  } catch (cause) {
    // msgpackr throws plain errors for any malformed input: that is exactly the case handled here.
    return { ok: false, error: new RecordInvalid(what, 'not valid msgpack', { cause }) };
  }
  if (values.length !== 1) return { ok: false, error: new RecordInvalid(what, `holds ${values.length} msgpack values, expected 1`) };
  try {
    return { ok: true, value: parse(values[0]) };
  } catch (error) {
    if (error instanceof RecordInvalid) return { ok: false, error };
    // A parser that meets a value it did not foresee (an exotic msgpack extension, a getter that
    // throws) has still been given bad input: the decoder's contract is its own error, nothing else.
    return { ok: false, error: new RecordInvalid(what, `could not be read (${(error as Error).name})`, { cause: error }) };
  }
}

/**
 * About how many bytes a record takes: its rows' text (a TXN's bulk) and the
 * SQL of a schema change, plus a little for the rest. For flow control, not
 * for framing.
 */
export function recordBytes(record: JournalRecord): number {
  let bytes = 64;
  if (record.kind === 'txn') for (const change of record.changes) bytes += change.rows.length + ('oldKeys' in change && change.oldKeys !== undefined ? change.oldKeys.length : 0) + 32;
  if (record.kind === 'config' && record.ddl !== undefined) bytes += record.ddl.length;
  return bytes;
}

/** Check a decoded msgpack value and build a record from it. */
export function parseRecord(value: unknown): DecodeResult {
  try {
    return { ok: true, record: fromWire(value) };
  } catch (error) {
    if (error instanceof RecordInvalid) return { ok: false, error };
    throw error;
  }
}

// ---- encoding ----------------------------------------------------------------

/** The msgpack map of a record, for embedding in a wire message. */
export function recordToWire(r: JournalRecord): Record<string, unknown> {
  const wire: Record<string, unknown> = { k: KIND_CODES[r.kind], r: r.replica, l: r.lsn, t: r.term, ts: r.time };
  switch (r.kind) {
    case 'txn':
      wire.g = r.gid;
      wire.s = r.sync;
      wire.c = r.changes.map((c) => ({ t: c.table, o: OP_CODES[c.op], r: c.rows, ...(c.oldKeys === undefined ? {} : { ok: c.oldKeys }), ...(c.columns === undefined ? {} : { cl: c.columns }) }));
      wire.i = r.idempotencyKey;
      break;
    case 'confirm':
      wire.o = r.owner;
      wire.u = r.confirmedLsn;
      break;
    case 'rollback':
      wire.o = r.owner;
      wire.f = r.fromLsn;
      if (r.withheldFromLsn !== undefined) wire.w = r.withheldFromLsn;
      break;
    case 'promote':
      wire.o = r.prevOwner;
      wire.p = r.prevLsn;
      wire.ld = r.leader;
      break;
    case 'demote':
      wire.u = r.confirmedLsn;
      break;
    case 'config':
      if (r.tables !== undefined) wire.tb = r.tables;
      if (r.ddl !== undefined) wire.dd = r.ddl;
      if (r.ddlRole !== undefined) wire.dr = r.ddlRole;
      if (r.shapes !== undefined) wire.sh = Object.fromEntries(Object.entries(r.shapes).map(([t, shape]) => [t, { c: shape.columns, k: shape.key }]));
      if (r.members !== undefined) wire.m = r.members.map((m) => ({ r: m.replica, a: m.address, ...(m.client === undefined ? {} : { c: m.client }), ...(m.admin === undefined ? {} : { ad: m.admin }) }));
      if (r.quorum !== undefined) wire.q = r.quorum;
      if (r.membersVersion !== undefined) wire.mv = r.membersVersion;
      if (r.synchroTimeoutMs !== undefined) wire.st = r.synchroTimeoutMs;
      if (r.electionTimeoutMs !== undefined) wire.et = r.electionTimeoutMs;
      break;
    case 'raft':
      wire.v = r.vote;
      break;
  }
  return wire;
}

// ---- decoding and validation ---------------------------------------------------

type Wire = Readonly<Record<string, unknown>>;

function fail(field: string, reason: string): never {
  throw new RecordInvalid(field, reason);
}

function isPlainObject(value: unknown): value is Wire {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Uint8Array);
}

function field<T>(wire: Wire, key: string, name: string, check: (v: unknown) => v is T, expected: string): T {
  const value = wire[key];
  if (!check(value)) fail(name, value === undefined ? `missing (expected ${expected})` : `expected ${expected}, got ${describe(value)}`);
  return value;
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value === 'bigint') return 'an integer outside the safe range';
  if (Array.isArray(value)) return 'an array';
  if (value instanceof Uint8Array) return 'binary';
  return typeof value === 'number' && !Number.isSafeInteger(value) ? `the number ${value}` : typeof value;
}

/**
 * A decoded value as an error message may show it: a short string or a safe
 * integer as itself, anything else by its kind. Never throws: decoded input
 * can be a BigInt, an object of any depth or an exotic msgpack extension
 * (JSON.stringify throws on the first).
 */
export function shown(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 64 ? `${value.slice(0, 64)}…` : value);
  if (typeof value === 'number' && Number.isSafeInteger(value)) return String(value);
  if (typeof value === 'boolean' || value === undefined) return String(value);
  return describe(value);
}

function isPositiveLsn(v: unknown): v is Lsn {
  return isLsn(v) && v > 0;
}
function isReplicatedId(v: unknown): v is ReplicaId {
  return isReplicaId(v) && v > 0;
}
function isBoolean(v: unknown): v is boolean {
  return typeof v === 'boolean';
}
function isSafeNonNegative(v: unknown): v is number {
  return Number.isSafeInteger(v) && (v as number) >= 0;
}
function isPositiveInt(v: unknown): v is number {
  return Number.isSafeInteger(v) && (v as number) > 0;
}
function boundedString(bytesMax: number): (v: unknown) => v is string {
  return (v: unknown): v is string => typeof v === 'string' && v.length > 0 && Buffer.byteLength(v) <= bytesMax;
}

// Records are built field by field: object spread of several sources costs
// V8 microseconds per record, and this runs for every append and every read.
function fromWire(value: unknown): JournalRecord {
  if (!isPlainObject(value)) fail('body', `expected a map, got ${describe(value)}`);
  const kindCode = value.k;
  const kind = typeof kindCode === 'number' ? KIND_BY_CODE.get(kindCode) : undefined;
  if (kind === undefined) fail('kind', `unknown record kind ${shown(kindCode)}`);
  const replica = field(value, 'r', 'replica', isReplicaId, 'a replica id 0..31');
  const lsn = field(value, 'l', 'lsn', isPositiveLsn, 'a positive integer');
  const term = field(value, 't', 'term', isTerm, 'a non-negative integer');
  const time = field(value, 'ts', 'time', isSafeNonNegative, 'a non-negative integer');
  const local = replica === REPLICA_LOCAL;
  if (kind === 'raft' && !local) fail('replica', 'a raft record belongs to replica 0 (local only)');
  if (kind !== 'raft' && local) fail('replica', `a ${kind} record cannot belong to replica 0`);
  switch (kind) {
    case 'txn':
      return parseTxn(value, replica, lsn, term, time);
    case 'confirm':
      return { kind, replica, lsn, term, time, owner: field(value, 'o', 'owner', isReplicatedId, 'a replica id 1..31'), confirmedLsn: field(value, 'u', 'confirmedLsn', isLsn, 'an lsn') };
    case 'rollback': {
      const rollback = { kind, replica, lsn, term, time, owner: field(value, 'o', 'owner', isReplicatedId, 'a replica id 1..31'), fromLsn: field(value, 'f', 'fromLsn', isPositiveLsn, 'a positive lsn') };
      return value.w === undefined ? rollback : { ...rollback, withheldFromLsn: field(value, 'w', 'withheldFromLsn', isPositiveLsn, 'a positive lsn') };
    }
    case 'promote':
      return {
        kind, replica, lsn, term, time,
        prevOwner: field(value, 'o', 'prevOwner', isReplicaId, 'a replica id 0..31'),
        prevLsn: field(value, 'p', 'prevLsn', isLsn, 'an lsn'),
        leader: field(value, 'ld', 'leader', isReplicatedId, 'a replica id 1..31'),
      };
    case 'demote':
      return { kind, replica, lsn, term, time, confirmedLsn: field(value, 'u', 'confirmedLsn', isLsn, 'an lsn') };
    case 'config':
      return parseConfig(value, { kind, replica, lsn, term, time });
    case 'raft':
      return { kind, replica, lsn, term, time, vote: field(value, 'v', 'vote', isReplicaId, 'a replica id 0..31') };
  }
}

// A gid becomes a SQL literal in PREPARE TRANSACTION: printable ASCII, no quotes.
const isGid = (v: unknown): v is string => typeof v === 'string' && v.length > 0 && v.length <= limits.gidBytesMax && /^[\x21-\x7e]+$/.test(v) && !v.includes("'");
const isIdempotencyKey = boundedString(limits.idempotencyKeyBytesMax);
const isTableName = boundedString(limits.tableNameBytesMax);
const isDdl = boundedString(limits.ddlBytesMax);
const isRoleName = boundedString(63);
const isStringList = (v: unknown): v is string[] => Array.isArray(v) && v.length <= 1_600 && v.every((s) => typeof s === 'string' && s.length <= 1_000);
const isColumnList = (v: unknown): v is Array<[string, string]> => Array.isArray(v) && v.length <= 1_600 && v.every((p) => isStringList(p) && p.length === 2);
const isAddress = boundedString(256);

function parseTxn(wire: Wire, replica: ReplicaId, lsn: Lsn, term: Term, time: number): TxnRecord {
  const gid = field(wire, 'g', 'gid', isGid, `1..${limits.gidBytesMax} printable ASCII characters without quotes`);
  const sync = field(wire, 's', 'sync', isBoolean, 'a boolean');
  const idempotencyKey = wire.i;
  if (idempotencyKey !== null && !isIdempotencyKey(idempotencyKey)) {
    fail('idempotencyKey', `expected null or a string of 1..${limits.idempotencyKeyBytesMax} bytes, got ${describe(idempotencyKey)}`);
  }
  const raw = wire.c;
  if (!Array.isArray(raw)) fail('changes', `expected an array, got ${describe(raw)}`);
  if (raw.length > limits.txnChangesMax) fail('changes', `more than ${limits.txnChangesMax} changes`);
  const changes = raw.map((c: unknown, i: number) => parseChange(c, i));
  return { kind: 'txn', replica, lsn, term, time, gid, sync, changes, idempotencyKey };
}

function parseRows(value: unknown, name: string): RowsJson {
  if (typeof value !== 'string' || !value.startsWith('[')) fail(name, `expected the JSON text of an array of rows, got ${describe(value)}`);
  return value;
}

function parseChange(value: unknown, index: number): Change {
  const name = `changes[${index}]`;
  if (!isPlainObject(value)) fail(name, `expected a map, got ${describe(value)}`);
  const table = field(value, 't', `${name}.table`, isTableName, `a string of 1..${limits.tableNameBytesMax} bytes`);
  const op = typeof value.o === 'number' ? OP_BY_CODE.get(value.o) : undefined;
  if (op === undefined) fail(`${name}.op`, `unknown operation ${shown(value.o)}`);
  if (op === 'copy') {
    if (typeof value.r !== 'string') fail(`${name}.rows`, `expected COPY text, got ${describe(value.r)}`);
    const columns = field(value, 'cl', `${name}.columns`, (v: unknown): v is string[] => isStringList(v) && v.length > 0, 'a non-empty array of column names');
    return { table, op, rows: value.r, columns };
  }
  if (value.cl !== undefined) fail(`${name}.columns`, `only a copy carries columns, not ${op}`);
  const rows = parseRows(value.r, `${name}.rows`);
  if (value.ok === undefined) return { table, op, rows };
  if (op !== 'update') fail(`${name}.oldKeys`, `only an update carries old keys, not ${op}`);
  return { table, op, rows, oldKeys: parseRows(value.ok, `${name}.oldKeys`) };
}

function parseConfig(wire: Wire, header: RecordHeader & { kind: 'config' }): ConfigRecord {
  const config: { -readonly [K in keyof ConfigRecord]: ConfigRecord[K] } = header;
  if (wire.tb !== undefined) {
    if (!isPlainObject(wire.tb)) fail('tables', `expected a map of table to mode, got ${describe(wire.tb)}`);
    for (const [table, mode] of Object.entries(wire.tb)) {
      if (!isTableName(table)) fail('tables', `table name of ${Buffer.byteLength(table)} bytes`);
      if (typeof mode !== 'string' || !TABLE_MODES.has(mode)) fail(`tables.${table}`, `expected local, async or sync, got ${shown(mode)}`);
    }
    config.tables = wire.tb as Record<string, TableMode>;
  }
  if (wire.dd !== undefined) config.ddl = field(wire, 'dd', 'ddl', isDdl, `SQL of 1..${limits.ddlBytesMax} bytes`);
  if (wire.dr !== undefined) config.ddlRole = field(wire, 'dr', 'ddlRole', isRoleName, 'a role name of 1..63 characters');
  if (wire.sh !== undefined) {
    if (!isPlainObject(wire.sh)) fail('shapes', `expected a map of table to shape, got ${describe(wire.sh)}`);
    const shapes: Record<string, TableShape> = {};
    for (const [table, shape] of Object.entries(wire.sh)) {
      if (!isTableName(table)) fail('shapes', `table name of ${Buffer.byteLength(table)} bytes`);
      if (!isPlainObject(shape)) fail(`shapes.${table}`, `expected a map, got ${describe(shape)}`);
      const columns = field(shape, 'c', `shapes.${table}.columns`, isColumnList, 'an array of [name, type] string pairs');
      const key = field(shape, 'k', `shapes.${table}.key`, isStringList, 'an array of strings');
      shapes[table] = { columns, key };
    }
    config.shapes = shapes;
  }
  if (wire.m !== undefined) {
    if (!Array.isArray(wire.m) || wire.m.length > limits.membersMax) fail('members', `expected an array of at most ${limits.membersMax} members`);
    config.members = wire.m.map((m: unknown, i: number) => {
      if (!isPlainObject(m)) fail(`members[${i}]`, `expected a map, got ${describe(m)}`);
      return {
        replica: field(m, 'r', `members[${i}].replica`, isReplicatedId, 'a replica id 1..31'),
        address: field(m, 'a', `members[${i}].address`, isAddress, 'a host:port string'),
        ...(m.c === undefined ? {} : { client: field(m, 'c', `members[${i}].client`, isAddress, 'a host:port string') }),
        ...(m.ad === undefined ? {} : { admin: field(m, 'ad', `members[${i}].admin`, isAddress, 'a host:port string') }),
      };
    });
    if (new Set(config.members.map((m) => m.replica)).size !== config.members.length) fail('members', 'a replica id appears twice');
  }
  if (wire.q !== undefined) config.quorum = field(wire, 'q', 'quorum', isPositiveInt, 'a positive integer');
  if (wire.mv !== undefined) config.membersVersion = field(wire, 'mv', 'membersVersion', isPositiveInt, 'a positive integer');
  if ((config.members === undefined) !== (config.membersVersion === undefined) || (config.members !== undefined && (config.quorum === undefined || config.quorum > config.members.length))) {
    fail('members', 'a membership change carries members, a quorum of at most their number, and a version');
  }
  if (wire.st !== undefined) config.synchroTimeoutMs = field(wire, 'st', 'synchroTimeoutMs', isPositiveInt, 'a positive integer');
  if (wire.et !== undefined) config.electionTimeoutMs = field(wire, 'et', 'electionTimeoutMs', isPositiveInt, 'a positive integer');
  return config;
}
