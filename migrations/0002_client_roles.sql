-- qsync schema, version 2: clients write as their own PostgreSQL roles.
--
-- Client statements run with the client's role and privileges. What qsync
-- does inside those transactions (buffer row images, read the node state for
-- the fence, take the captured rows, record the applied lsn and idempotency
-- key) runs as the schema's owner through SECURITY DEFINER functions with a
-- fixed search_path, so a client role needs no privilege on qsync's tables.

GRANT USAGE ON SCHEMA qsync TO PUBLIC;

ALTER FUNCTION qsync.capture_insert() SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION qsync.capture_update() SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION qsync.capture_delete() SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION qsync.fence() SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION qsync.refuse_truncate() SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

-- Take this transaction's captured changes (see src/postgres/capture.ts).
CREATE FUNCTION qsync.capture(write_time bigint, write_replica integer, write_lsn bigint, idempotency_key text)
RETURNS TABLE (table_name text, op "char", rows text, old_keys text, mode text)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
WITH taken AS (
  DELETE FROM qsync.changes WHERE txid = pg_current_xact_id_if_assigned()
  RETURNING seq, table_name, op, rows, old_keys
), stamped AS (
  INSERT INTO qsync.row_versions (table_name, key, time, replica_id)
  SELECT DISTINCT ON (c.table_name, k.key) c.table_name, k.key, write_time, write_replica
    FROM taken c JOIN qsync.tables t ON t.table_name = c.table_name AND t.mode = 'async'
    CROSS JOIN LATERAL (
      SELECT qsync.key_of(r, t.key_columns) AS key
        FROM jsonb_array_elements(CASE c.op WHEN 'd' THEN c.rows ELSE c.rows || coalesce(c.old_keys, '[]') END) AS r) k
  ON CONFLICT ON CONSTRAINT row_versions_pkey DO UPDATE SET time = excluded.time, replica_id = excluded.replica_id
), applied AS (
  INSERT INTO qsync.applied (replica_id, lsn) SELECT write_replica, write_lsn WHERE EXISTS (SELECT 1 FROM taken)
), keyed AS (
  INSERT INTO qsync.idempotency (key, replica_id, lsn) SELECT idempotency_key, write_replica, write_lsn
   WHERE idempotency_key IS NOT NULL AND EXISTS (SELECT 1 FROM taken)
)
SELECT c.table_name, c.op, c.rows::text, c.old_keys::text, t.mode
  FROM taken c LEFT JOIN qsync.tables t ON t.table_name = c.table_name ORDER BY c.seq
$$;
REVOKE ALL ON FUNCTION qsync.capture(bigint, integer, bigint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION qsync.capture(bigint, integer, bigint, text) TO PUBLIC;
