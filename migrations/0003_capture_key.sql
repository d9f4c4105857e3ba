-- qsync schema, version 3: a fence a client cannot forge (docs/rfc/0011-hostile-input.md).
--
-- Before this, the third fence rested on qsync.term, a setting any session may
-- SET: a role allowed to INSERT into a sync table could copy the term from an
-- error message and commit on the leader alone, with no journal record and no
-- quorum. Now every change to a replicated table must be taken by qsync
-- before its transaction commits or prepares:
--
--   * the capture triggers buffer row images in qsync.changes, as before;
--   * qsync.capture() takes (deletes) them, and only with this node's capture
--     key, which lives in a table no client role can read and reaches
--     PostgreSQL only as a bound parameter of the sidecar's own statement;
--   * a deferred constraint trigger on qsync.changes refuses to commit (or
--     PREPARE) a transaction whose captured rows are still there.
--
-- Whatever a client SETs, a change it makes to a replicated table commits
-- only through qsync. Apply runs as a replica session, where none of these
-- triggers fire.

CREATE TABLE qsync.capture_key (
  key text NOT NULL CHECK (length(key) >= 32),
  only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row)
);
REVOKE ALL ON qsync.capture_key FROM PUBLIC;
INSERT INTO qsync.capture_key (key)
  VALUES (replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''));

DROP FUNCTION qsync.capture(bigint, integer, bigint, text);

-- Take this transaction's captured changes (see src/postgres/capture.ts); the
-- caller proves it is the sidecar with the capture key.
CREATE FUNCTION qsync.capture(capture_key text, write_time bigint, write_replica integer, write_lsn bigint, idempotency_key text)
RETURNS TABLE (table_name text, op "char", rows text, old_keys text, mode text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
  IF NOT EXISTS (SELECT 1 FROM qsync.capture_key k WHERE k.key = capture_key) THEN
    RAISE EXCEPTION 'qsync: only the qsync sidecar takes captured changes'
      USING ERRCODE = '42501', HINT = 'Write replicated tables through the qsync sidecar.';
  END IF;
  RETURN QUERY
  WITH taken AS (
    DELETE FROM qsync.changes c WHERE c.txid = pg_current_xact_id_if_assigned()
    RETURNING c.seq, c.table_name, c.op, c.rows, c.old_keys
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
    FROM taken c LEFT JOIN qsync.tables t ON t.table_name = c.table_name ORDER BY c.seq;
END $$;
REVOKE ALL ON FUNCTION qsync.capture(text, bigint, integer, bigint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION qsync.capture(text, bigint, integer, bigint, text) TO PUBLIC;

-- At COMMIT or PREPARE TRANSACTION: a captured row still in the buffer was
-- not taken by qsync, so the change would commit on this node alone.
CREATE FUNCTION qsync.refuse_untaken() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM qsync.changes c WHERE c.txid = NEW.txid AND c.seq = NEW.seq) THEN
    RAISE EXCEPTION 'qsync: a change to replicated table % was not made through qsync and cannot commit here', NEW.table_name
      USING ERRCODE = 'QS005', HINT = 'Write replicated tables through the qsync sidecar (its client port), which replicates the change; on this node alone it would make the replicas differ.';
  END IF;
  RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER qsync_changes_taken AFTER INSERT ON qsync.changes
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION qsync.refuse_untaken();

-- The fence's errors say what to do, and no longer print the current term.
CREATE OR REPLACE FUNCTION qsync.fence() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  n qsync.node;
  session_term text := nullif(current_setting('qsync.term', true), '');
  leader text;
BEGIN
  SELECT * INTO STRICT n FROM qsync.node;
  leader := CASE WHEN n.leader_id = 0 THEN 'unknown' ELSE format('node %s at %s', n.leader_id, nullif(n.leader_address, '')) END;
  IF n.role <> 'leader' THEN
    RAISE EXCEPTION 'qsync: node % is not the leader; leader is %', n.replica_id, leader
      USING ERRCODE = 'QS001', HINT = 'Write sync tables through the leader''s qsync sidecar.';
  END IF;
  IF session_term IS NULL THEN
    RAISE EXCEPTION 'qsync: write to sync table %.% outside qsync; leader is %', TG_TABLE_SCHEMA, TG_TABLE_NAME, leader
      USING ERRCODE = 'QS003', HINT = 'Write sync tables through the qsync sidecar (its client port).';
  END IF;
  IF session_term <> n.term::text THEN
    RAISE EXCEPTION 'qsync: this write names a term that is not the current one; leader is %', leader
      USING ERRCODE = 'QS002', HINT = 'The leader changed while the write ran: retry it through the qsync sidecar.';
  END IF;
  RETURN NULL;
END $$;
