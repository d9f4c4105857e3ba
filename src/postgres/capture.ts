// Capture: inside the session's own transaction, take the row images the
// triggers buffered for it (deleting them from the buffer) in statement
// order, stamp the async keys it wrote with this write's version for
// last-writer-wins, and, when anything was captured, record the applied lsn
// and the idempotency key in the same transaction. One round trip, run right
// before PREPARE or COMMIT: every sync write pays it.
import type pg from 'pg';
import type { Change, ChangeOp } from '../core/record.js';
import type { Lsn, ReplicaId } from '../core/types.js';

const OPS: Readonly<Record<string, ChangeOp>> = { i: 'insert', u: 'update', d: 'delete' };

// qsync.capture() (migrations/0003, 0004, 0007) deletes this transaction's rows from the
// buffer, stamps async keys, records the applied lsn and idempotency key, and
// checks deferred constraints (an async write is journaled before its COMMIT);
// it runs as the schema owner, so the client's role needs no privilege on qsync.
// It takes the node's capture key first: a client that calls it cannot take
// its own changes, and a change not taken cannot commit (the third fence).
export const CAPTURE_SQL = 'SELECT table_name, op, rows, old_keys, mode FROM qsync.capture($1, $2, $3, $4, $5)';

// qsync.capture_held() (migrations/0006) for a write the leader may hold open
// (RFC 0027): the same, after checking that none of the transactions it holds
// open has ended; each row also says the transaction's id and whether it is
// SERIALIZABLE. $6 is the held transactions' ids.
export const CAPTURE_HELD_SQL = 'SELECT table_name, op, rows, old_keys, mode, tx, serializable FROM qsync.capture_held($1, $2, $3, $4, $5, $6)';

/** SQLSTATE of capture_held's refusal: a held transaction ended; its DETAIL lists their ids. */
export const HELD_ENDED = 'QS006';

/** This node's capture key, which only the sidecar's own connections can read. */
export async function readCaptureKey(client: pg.ClientBase): Promise<string> {
  const { rows } = await client.query<{ key: string }>('SELECT key FROM qsync.capture_key');
  const key = rows[0]?.key;
  if (key === undefined) throw new Error('qsync.capture_key is empty: the schema was not migrated to version 3');
  return key;
}

/** What the captured transaction will be in the journal. */
export interface CaptureStamp {
  /** The proof that the sidecar takes the changes (readCaptureKey). */
  readonly captureKey: string;
  /** Hybrid time: orders the write against concurrent async writes on other nodes. */
  readonly time: number;
  readonly replica: ReplicaId;
  /** The lsn its TXN record will have, recorded as applied when anything was captured. */
  readonly lsn: Lsn;
  readonly idempotencyKey: string | null;
}

export interface Captured {
  readonly changes: Change[];
  /** True when a change touches a sync table: the transaction goes through the limbo. */
  readonly sync: boolean;
  /** Taken by capture_held (a write that may be held open): its transaction id, and whether that may hold it open (not SERIALIZABLE). */
  readonly held?: { readonly xid: string; readonly holdable: boolean };
}

/** One row of qsync.capture(), as text. */
export interface CapturedRow {
  readonly table_name: string;
  readonly op: string;
  readonly rows: string;
  readonly old_keys: string | null;
  readonly mode: string | null;
  /** capture_held only. */
  readonly tx?: string | null;
  readonly serializable?: string | boolean | null;
}

/** CAPTURE_SQL's parameters, in order; with `held` (the ids of the transactions held open), CAPTURE_HELD_SQL's. */
export function captureValues(stamp: CaptureStamp, held: readonly string[] | null = null): unknown[] {
  const values = [stamp.captureKey, stamp.time, stamp.replica, stamp.lsn, stamp.idempotencyKey];
  return held === null ? values : [...values, `{${held.join(',')}}`];
}

/** `held`: the ids of the transactions this leader holds open, checked first (capture_held); null for a write that will be prepared. */
export async function capture(client: pg.ClientBase, stamp: CaptureStamp, held: readonly string[] | null = null): Promise<Captured> {
  const { rows } = held === null
    ? await client.query<CapturedRow>({ name: 'qsync_capture', text: CAPTURE_SQL, values: captureValues(stamp) })
    : await client.query<CapturedRow>({ name: 'qsync_capture_held', text: CAPTURE_HELD_SQL, values: captureValues(stamp, held) });
  return captured(rows);
}

/** The held transaction ids capture_held's refusal names (its DETAIL), or null when `error` is not that refusal. */
export function heldEnded(error: unknown): string[] | null {
  const e = error as { code?: string; detail?: string };
  if (e?.code !== HELD_ENDED) return null;
  return (e.detail ?? '').split(',').filter((x) => /^\d+$/.test(x));
}

/** The changes capture took, in statement order, and whether any is to a sync table. */
export function captured(rows: readonly CapturedRow[]): Captured {
  let sync = false;
  const changes = rows.map((row): Change => {
    const op = OPS[row.op];
    if (op === undefined) throw new Error(`qsync.changes holds unknown op ${row.op}`);
    if (row.mode === 'sync') sync = true;
    return row.old_keys === null ? { table: row.table_name, op, rows: row.rows } : { table: row.table_name, op, rows: row.rows, oldKeys: row.old_keys };
  });
  const first = rows[0];
  if (first?.tx === undefined || first.tx === null) return { changes, sync };
  // Text on the SQL port, a boolean through node-postgres.
  const serializable = first.serializable === true || first.serializable === 't';
  return { changes, sync, held: { xid: first.tx, holdable: !serializable } };
}
