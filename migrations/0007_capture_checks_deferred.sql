-- qsync schema, version 7: every capture checks deferred constraints
-- (docs/rfc/0028-one-client-hop-by-hop.md).
--
-- An async write is journaled before its COMMIT. Until now only a write the
-- leader may hold open (capture_held, version 6) had its deferred constraints
-- checked at capture; with syncHold prepare, an async write whose deferred
-- foreign key failed at its COMMIT was already journaled, and was then
-- applied from the journal as a replica session, where foreign keys do not
-- fire: it committed on every node in spite of the constraint. Now
-- qsync.capture() checks them once it has taken the captured rows, so a
-- write that would fail them fails here, before it is journaled, and its
-- client hears PostgreSQL's error. A sync write that will be prepared fails
-- here instead of at PREPARE TRANSACTION: the same error, at the same point
-- of the order (before the journal).
CREATE OR REPLACE FUNCTION qsync.capture(capture_key text, write_time bigint, write_replica integer, write_lsn bigint, idempotency_key text)
RETURNS TABLE (table_name text, op "char", rows text, old_keys text, mode text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
  this_tx xid8 := pg_current_xact_id_if_assigned();
BEGIN
  IF NOT EXISTS (SELECT 1 FROM qsync.capture_key k WHERE k.key = capture_key) THEN
    RAISE EXCEPTION 'qsync: only the qsync sidecar takes captured changes'
      USING ERRCODE = '42501', HINT = 'Write replicated tables through the qsync sidecar.';
  END IF;
  -- No transaction id: nothing was written, so nothing was captured.
  IF this_tx IS NULL THEN
    RETURN;
  END IF;
  IF EXISTS (SELECT 1 FROM qsync.tables t WHERE t.mode = 'async') THEN
    INSERT INTO qsync.row_versions (table_name, key, time, replica_id)
    SELECT DISTINCT ON (c.table_name, k.key) c.table_name, k.key, write_time, write_replica
      FROM qsync.changes c JOIN qsync.tables t ON t.table_name = c.table_name AND t.mode = 'async'
      CROSS JOIN LATERAL (
        SELECT qsync.key_of(r, t.key_columns) AS key
          FROM jsonb_array_elements(CASE c.op WHEN 'd' THEN c.rows ELSE c.rows || coalesce(c.old_keys, '[]') END) AS r) k
     WHERE c.txid = this_tx
    ON CONFLICT ON CONSTRAINT row_versions_pkey DO UPDATE SET time = excluded.time, replica_id = excluded.replica_id;
  END IF;
  RETURN QUERY
  WITH taken AS (
    DELETE FROM qsync.changes c WHERE c.txid = this_tx
    RETURNING c.seq, c.table_name, c.op, c.rows, c.old_keys
  )
  SELECT c.table_name, c.op, c.rows::text, c.old_keys::text, t.mode
    FROM taken c LEFT JOIN qsync.tables t ON t.table_name = c.table_name ORDER BY c.seq;
  IF FOUND THEN
    INSERT INTO qsync.applied (replica_id, lsn) VALUES (write_replica, write_lsn);
    IF idempotency_key IS NOT NULL THEN
      INSERT INTO qsync.idempotency (key, replica_id, lsn) VALUES (idempotency_key, write_replica, write_lsn);
    END IF;
    -- The captured rows are gone from qsync.changes, so its own deferred check passes here.
    SET CONSTRAINTS ALL IMMEDIATE;
  END IF;
END $$;
