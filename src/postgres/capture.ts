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

// qsync.capture() (migrations/0002) deletes this transaction's rows from the
// buffer, stamps async keys, and records the applied lsn and idempotency key;
// it runs as the schema owner, so the client's role needs no privilege on qsync.
const CAPTURE_SQL = 'SELECT table_name, op, rows, old_keys, mode FROM qsync.capture($1, $2, $3, $4)';

/** What the captured transaction will be in the journal. */
export interface CaptureStamp {
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
}

export async function capture(client: pg.ClientBase, stamp: CaptureStamp): Promise<Captured> {
  const { rows } = await client.query<{ table_name: string; op: string; rows: string; old_keys: string | null; mode: string | null }>({
    name: 'qsync_capture', text: CAPTURE_SQL, values: [stamp.time, stamp.replica, stamp.lsn, stamp.idempotencyKey],
  });
  let sync = false;
  const changes = rows.map((row): Change => {
    const op = OPS[row.op];
    if (op === undefined) throw new Error(`qsync.changes holds unknown op ${row.op}`);
    if (row.mode === 'sync') sync = true;
    return row.old_keys === null ? { table: row.table_name, op, rows: row.rows } : { table: row.table_name, op, rows: row.rows, oldKeys: row.old_keys };
  });
  return { changes, sync };
}
