// Capture: inside the session's own transaction, take the row images the
// triggers buffered for it (deleting them from the buffer) in statement
// order, and stamp the async keys it wrote with this write's version for
// last-writer-wins. One round trip, run right before PREPARE or COMMIT.
import type pg from 'pg';
import type { Change, ChangeOp } from '../core/record.js';
import type { ReplicaId } from '../core/types.js';

const OPS: Readonly<Record<string, ChangeOp>> = { i: 'insert', u: 'update', d: 'delete' };

const CAPTURE_SQL = `
WITH taken AS (
  DELETE FROM qsync.changes WHERE txid = pg_current_xact_id_if_assigned()
  RETURNING seq, table_name, op, rows, old_keys
), stamped AS (
  INSERT INTO qsync.row_versions (table_name, key, time, replica_id)
  SELECT DISTINCT ON (c.table_name, k.key) c.table_name, k.key, $1, $2
    FROM taken c JOIN qsync.tables t ON t.table_name = c.table_name AND t.mode = 'async'
    CROSS JOIN LATERAL (
      SELECT qsync.key_of(r, t.key_columns) AS key
        FROM jsonb_array_elements(CASE c.op WHEN 'd' THEN c.rows ELSE c.rows || coalesce(c.old_keys, '[]') END) AS r) k
  ON CONFLICT (table_name, key) DO UPDATE SET time = excluded.time, replica_id = excluded.replica_id
)
SELECT c.table_name, c.op, c.rows::text AS rows, c.old_keys::text AS old_keys, t.mode
  FROM taken c LEFT JOIN qsync.tables t ON t.table_name = c.table_name ORDER BY c.seq`;

/**
 * Keys of the capture: the write's hybrid time and replica, which order it
 * against concurrent writes to async tables on other nodes.
 */
export interface CaptureStamp {
  readonly time: number;
  readonly replica: ReplicaId;
}

export interface Captured {
  readonly changes: Change[];
  /** True when a change touches a sync table: the transaction goes through the limbo. */
  readonly sync: boolean;
}

export async function capture(client: pg.ClientBase, stamp: CaptureStamp): Promise<Captured> {
  const { rows } = await client.query<{ table_name: string; op: string; rows: string; old_keys: string | null; mode: string | null }>(CAPTURE_SQL, [stamp.time, stamp.replica]);
  let sync = false;
  const changes = rows.map((row): Change => {
    const op = OPS[row.op];
    if (op === undefined) throw new Error(`qsync.changes holds unknown op ${row.op}`);
    if (row.mode === 'sync') sync = true;
    return row.old_keys === null ? { table: row.table_name, op, rows: row.rows } : { table: row.table_name, op, rows: row.rows, oldKeys: row.old_keys };
  });
  return { changes, sync };
}
