// Capture: inside the session's own transaction, take the row images the
// triggers buffered for it (deleting them from the buffer) in statement
// order, stamp the async keys it wrote with this write's version for
// last-writer-wins, and, when anything was captured, record the applied lsn
// and the idempotency key in the same transaction. One round trip with a
// cached plan, run right before PREPARE or COMMIT: every sync write pays it.
import type pg from 'pg';
import type { Change, ChangeOp } from '../core/record.js';
import type { Lsn, ReplicaId } from '../core/types.js';

const OPS: Readonly<Record<string, ChangeOp>> = { i: 'insert', u: 'update', d: 'delete' };

const CAPTURE_SQL = `
WITH taken AS (
  DELETE FROM qsync.changes WHERE txid = pg_current_xact_id_if_assigned()
  RETURNING seq, table_name, op, rows, old_keys
), stamped AS (
  INSERT INTO qsync.row_versions (table_name, key, time, replica_id)
  SELECT DISTINCT ON (c.table_name, k.key) c.table_name, k.key, $1::bigint, $2::integer
    FROM taken c JOIN qsync.tables t ON t.table_name = c.table_name AND t.mode = 'async'
    CROSS JOIN LATERAL (
      SELECT qsync.key_of(r, t.key_columns) AS key
        FROM jsonb_array_elements(CASE c.op WHEN 'd' THEN c.rows ELSE c.rows || coalesce(c.old_keys, '[]') END) AS r) k
  ON CONFLICT (table_name, key) DO UPDATE SET time = excluded.time, replica_id = excluded.replica_id
), applied AS (
  INSERT INTO qsync.applied (replica_id, lsn) SELECT $2::integer, $3::bigint WHERE EXISTS (SELECT 1 FROM taken)
), keyed AS (
  INSERT INTO qsync.idempotency (key, replica_id, lsn) SELECT $4::text, $2, $3 WHERE $4::text IS NOT NULL AND EXISTS (SELECT 1 FROM taken)
)
SELECT c.table_name, c.op, c.rows::text AS rows, c.old_keys::text AS old_keys, t.mode
  FROM taken c LEFT JOIN qsync.tables t ON t.table_name = c.table_name ORDER BY c.seq`;

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
