-- qsync schema, version 1: node state, table modes, applied lsns, the change
-- buffer, idempotency keys, async row versions and the conflict log.

-- The node's view of the cluster. One row. The fencing trigger reads it.
CREATE TABLE qsync.node (
  singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  replica_id integer NOT NULL DEFAULT 0 CHECK (replica_id BETWEEN 0 AND 31),
  cluster_id text NOT NULL DEFAULT '',
  term bigint NOT NULL DEFAULT 0 CHECK (term >= 0),
  role text NOT NULL DEFAULT 'follower' CHECK (role IN ('follower', 'candidate', 'leader')),
  leader_id integer NOT NULL DEFAULT 0 CHECK (leader_id BETWEEN 0 AND 31),
  leader_address text NOT NULL DEFAULT ''
);
INSERT INTO qsync.node DEFAULT VALUES;

-- Replicated tables and their mode. table_name is format('%I.%I', schema, table).
CREATE TABLE qsync.tables (
  table_name text PRIMARY KEY,
  mode text NOT NULL CHECK (mode IN ('local', 'async', 'sync')),
  key_columns text[] NOT NULL,
  changed_at timestamptz NOT NULL DEFAULT now()
);

-- Applied records, one row per (replica, lsn), written in the same transaction
-- as the change it records. Insert-only on purpose: a single row per replica
-- would be locked by every prepared (limbo) transaction and stall the next
-- apply until CONFIRM. The applied vclock is max(lsn) per replica; older rows
-- are compacted away.
CREATE TABLE qsync.applied (
  replica_id integer NOT NULL CHECK (replica_id BETWEEN 1 AND 31),
  lsn bigint NOT NULL CHECK (lsn > 0),
  PRIMARY KEY (replica_id, lsn)
);

-- Row images captured by the triggers, per transaction and statement. The
-- sidecar takes (deletes) its own transaction's rows right before PREPARE or
-- COMMIT. Unlogged: a crash loses only transactions that were never prepared.
CREATE UNLOGGED TABLE qsync.changes (
  txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
  seq bigint GENERATED ALWAYS AS IDENTITY,
  table_name text NOT NULL,
  op "char" NOT NULL CHECK (op IN ('i', 'u', 'd')),
  rows jsonb NOT NULL,
  old_keys jsonb,
  PRIMARY KEY (txid, seq)
);

-- Idempotency keys of committed transactions: a key is here exactly when its
-- transaction committed (it is written inside that transaction).
CREATE TABLE qsync.idempotency (
  key text PRIMARY KEY,
  replica_id integer NOT NULL,
  lsn bigint NOT NULL,
  committed_at timestamptz NOT NULL DEFAULT now()
);

-- Last writer of each key of an async table, for last-writer-wins by
-- (hybrid time, replica id). Deleted keys keep their row as a tombstone.
CREATE TABLE qsync.row_versions (
  table_name text NOT NULL,
  key jsonb NOT NULL,
  time bigint NOT NULL,
  replica_id integer NOT NULL,
  PRIMARY KEY (table_name, key)
);

-- Async writes that lost last-writer-wins on this node, kept for the operator.
CREATE TABLE qsync.conflicts (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  table_name text NOT NULL,
  op text NOT NULL,
  key jsonb NOT NULL,
  lost jsonb NOT NULL,
  lost_replica integer NOT NULL,
  lost_time bigint NOT NULL,
  kept_replica integer NOT NULL,
  kept_time bigint NOT NULL,
  recorded_at timestamptz NOT NULL DEFAULT now()
);

-- The key image of a row image.
CREATE FUNCTION qsync.key_of(img jsonb, key_columns text[]) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT jsonb_object_agg(k, img -> k) FROM unnest(key_columns) AS k
$$;

-- Capture triggers: statement-level, with transition tables, one per event
-- (PostgreSQL allows transition tables only on single-event triggers).
-- TG_ARGV holds the primary-key columns. Rows are named qsync_new.* and
-- qsync_old.*, never by a short alias: an alias that matches a column name
-- (say n) would make to_jsonb(n) capture that column instead of the row.
CREATE FUNCTION qsync.capture_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO qsync.changes (table_name, op, rows)
  SELECT format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME), 'i', jsonb_agg(to_jsonb(qsync_new.*))
  FROM qsync_new HAVING count(*) > 0;
  RETURN NULL;
END $$;

CREATE FUNCTION qsync.capture_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO qsync.changes (table_name, op, rows, old_keys)
  SELECT format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME), 'u',
         (SELECT jsonb_agg(to_jsonb(qsync_new.*)) FROM qsync_new),
         jsonb_agg(qsync.key_of(to_jsonb(qsync_old.*), TG_ARGV))
  FROM qsync_old HAVING count(*) > 0;
  RETURN NULL;
END $$;

CREATE FUNCTION qsync.capture_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO qsync.changes (table_name, op, rows)
  SELECT format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME), 'd', jsonb_agg(qsync.key_of(to_jsonb(qsync_old.*), TG_ARGV))
  FROM qsync_old HAVING count(*) > 0;
  RETURN NULL;
END $$;

-- TRUNCATE has no transition table, so it cannot be replicated row by row.
CREATE FUNCTION qsync.refuse_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'qsync: TRUNCATE of replicated table %.% is not replicated', TG_TABLE_SCHEMA, TG_TABLE_NAME
    USING ERRCODE = 'QS004', HINT = 'Use DELETE, or make the table local first (qsync table local <table>).';
END $$;

-- The PostgreSQL term fence (third fence): a write to a sync table needs this
-- node to be leader and the session's qsync.term to equal its term. Replication
-- apply runs with session_replication_role = replica, where this trigger does
-- not fire.
CREATE FUNCTION qsync.fence() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  n qsync.node;
  session_term text := nullif(current_setting('qsync.term', true), '');
  leader text;
BEGIN
  SELECT * INTO STRICT n FROM qsync.node;
  leader := CASE WHEN n.leader_id = 0 THEN 'unknown' ELSE format('node %s at %s', n.leader_id, nullif(n.leader_address, '')) END;
  IF n.role <> 'leader' THEN
    RAISE EXCEPTION 'qsync: node % is not the leader (term %); leader is %', n.replica_id, n.term, leader
      USING ERRCODE = 'QS001', HINT = 'Write sync tables through the leader''s qsync sidecar.';
  END IF;
  IF session_term IS NULL THEN
    RAISE EXCEPTION 'qsync: write to sync table %.% without qsync.term (current term %); leader is %', TG_TABLE_SCHEMA, TG_TABLE_NAME, n.term, leader
      USING ERRCODE = 'QS003', HINT = 'Write sync tables through the qsync sidecar, which sets qsync.term.';
  END IF;
  IF session_term <> n.term::text THEN
    RAISE EXCEPTION 'qsync: stale term % (current %); leader is %', session_term, n.term, leader
      USING ERRCODE = 'QS002';
  END IF;
  RETURN NULL;
END $$;
