-- qsync schema, version 5: what the SQL port (src/front, docs/rfc/0014-sql-front.md)
-- needs of PostgreSQL.
--
-- 1. A transaction's outcome by its idempotency key, from SQL: a client of
--    the SQL port that lost its connection during COMMIT asks with
--    SELECT * FROM qsync.outcome('key'), as the client library asks the
--    sidecar. A key is in qsync.idempotency exactly when its transaction
--    committed on this node.
CREATE FUNCTION qsync.outcome(idempotency_key text)
RETURNS TABLE (committed boolean, replica_id integer, lsn bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  SELECT true, i.replica_id, i.lsn FROM qsync.idempotency i WHERE i.key = idempotency_key
  UNION ALL
  SELECT false, NULL, NULL WHERE NOT EXISTS (SELECT 1 FROM qsync.idempotency i WHERE i.key = idempotency_key)
$$;
REVOKE ALL ON FUNCTION qsync.outcome(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION qsync.outcome(text) TO PUBLIC;

-- 2. A schema change to a replicated table sent through the SQL port is
--    refused: run on this node alone it would make the replicas differ. It
--    goes through qsync ddl, which runs it on every node in journal order.
--    The SQL port opens each session with qsync.via_front = on (a startup
--    parameter, which RESET keeps); sessions that reach PostgreSQL directly
--    are the operator's, as before. Apply runs as a replica session, where
--    event triggers do not fire.
CREATE FUNCTION qsync.refuse_front_ddl() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  hit text;
BEGIN
  IF current_setting('qsync.via_front', true) IS DISTINCT FROM 'on' THEN
    RETURN;
  END IF;
  IF TG_EVENT = 'sql_drop' THEN
    SELECT d.object_identity INTO hit FROM pg_event_trigger_dropped_objects() d
      JOIN qsync.tables t ON t.table_name = d.object_identity AND t.mode <> 'local'
     WHERE d.object_type = 'table' LIMIT 1;
  ELSE
    SELECT c.object_identity INTO hit FROM pg_event_trigger_ddl_commands() c
      JOIN qsync.tables t ON t.table_name = c.object_identity AND t.mode <> 'local'
     WHERE c.object_type = 'table' LIMIT 1;
  END IF;
  IF hit IS NOT NULL THEN
    RAISE EXCEPTION 'qsync: % of replicated table % through the SQL port would change it on this node only', TG_TAG, hit
      USING ERRCODE = '0A000', HINT = 'Run schema changes to replicated tables with qsync ddl, which applies them on every node in order.';
  END IF;
END $$;

CREATE EVENT TRIGGER qsync_front_ddl ON ddl_command_end EXECUTE FUNCTION qsync.refuse_front_ddl();
CREATE EVENT TRIGGER qsync_front_drop ON sql_drop EXECUTE FUNCTION qsync.refuse_front_ddl();
