-- qsync schema, version 6: capture for a write the leader holds open through
-- its quorum wait instead of preparing it (docs/rfc/0027-held-open-writes.md).
--
-- qsync.capture_held() does what qsync.capture() does, and first checks the
-- transactions the sidecar still holds open: if one of them has ended without
-- the sidecar committing it (its session was terminated, PostgreSQL
-- restarted), its row locks are gone, and this write may have taken one of
-- its rows; it is refused, with the ended transaction ids in the DETAIL, and
-- rolls back before it is journaled. With `held` NULL (a write that will be
-- prepared) nothing is checked, as before. After a crash of PostgreSQL every
-- transaction held reads as ended, even one whose id the crash took back
-- before its WAL was written.
--
-- A held write must not end on its own while it waits: the server's
-- idle_in_transaction_session_timeout and transaction_timeout are turned off
-- for the rest of the transaction. Its deferred constraints are checked here,
-- after the captured rows are taken: a failure after the quorum holds the
-- write could no longer be told to its client. Each row also carries the
-- transaction's id and whether it is SERIALIZABLE (whose COMMIT can still
-- fail a serialization check: the sidecar prepares those instead).
CREATE FUNCTION qsync.capture_held(capture_key text, write_time bigint, write_replica integer, write_lsn bigint, idempotency_key text, held xid8[])
RETURNS TABLE (table_name text, op "char", rows text, old_keys text, mode text, tx text, serializable boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  ended text;
  one xid8;
BEGIN
  IF held IS NOT NULL AND cardinality(held) > 0 THEN
    BEGIN
      -- Too old to look up (NULL): ended.
      SELECT string_agg(h::text, ',') INTO ended FROM unnest(held) h WHERE coalesce(pg_xact_status(h), 'ended') NOT IN ('in progress', 'committed');
    EXCEPTION WHEN invalid_parameter_value THEN
      -- pg_xact_status raises for an id past the next one to be assigned: one a crash took back before
      -- its WAL was written. Ended; each id is looked at alone to name them.
      ended := NULL;
      FOREACH one IN ARRAY held LOOP
        BEGIN
          IF coalesce(pg_xact_status(one), 'ended') NOT IN ('in progress', 'committed') THEN
            ended := concat_ws(',', ended, one::text);
          END IF;
        EXCEPTION WHEN invalid_parameter_value THEN
          ended := concat_ws(',', ended, one::text);
        END;
      END LOOP;
    END;
    IF ended IS NOT NULL THEN
      RAISE EXCEPTION 'qsync: a write this node holds open for its quorum ended before its commit; this write may have taken its rows, so it is rolled back'
        USING ERRCODE = 'QS006', DETAIL = ended, HINT = 'Retry the transaction: the sidecar applies the ended write from its journal first.';
    END IF;
  END IF;
  RETURN QUERY
  SELECT c.table_name, c.op, c.rows, c.old_keys, c.mode, pg_current_xact_id_if_assigned()::text, current_setting('transaction_isolation') = 'serializable'
    FROM qsync.capture(capture_key, write_time, write_replica, write_lsn, idempotency_key) c;
  IF FOUND AND held IS NOT NULL THEN
    PERFORM set_config('idle_in_transaction_session_timeout', '0', true);
    IF current_setting('server_version_num')::integer >= 170000 THEN
      PERFORM set_config('transaction_timeout', '0', true);
    END IF;
    SET CONSTRAINTS ALL IMMEDIATE;
  END IF;
END $$;
REVOKE ALL ON FUNCTION qsync.capture_held(text, bigint, integer, bigint, text, xid8[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION qsync.capture_held(text, bigint, integer, bigint, text, xid8[]) TO PUBLIC;
