// The applier's statements (apply.ts), written once per table and run as
// SQL-level prepared statements: PostgreSQL plans each once per connection,
// and a batch stays one simple query of EXECUTEs whose one argument is an
// escaped JSON literal (docs/rfc/0022-applier-plans-once.md). Planning the
// last-writer-wins statement alone cost more than running it: about 1.3 ms
// per batch, whatever its size.
//
// Every statement takes its changes as one jsonb argument, built with
// JSON.stringify, so a row image from a peer can never change the statement:
// it is a JSON string until PostgreSQL casts it to jsonb, which refuses it if
// it is not JSON.
import { createHash } from 'node:crypto';
import type pg from 'pg';
import { assert } from '../core/assert.js';
import type { Change, TxnRecord } from '../core/record.js';
import type { TableInfo } from './tables.js';

/** A prepared statement: its name on the connection and the PREPARE that makes it. */
interface Statement {
  readonly name: string;
  readonly prepare: string;
}

const statements = new WeakMap<TableInfo, Map<string, Statement>>();

/** The statement of `kind` for `table`, made once per TableInfo (a reload makes new ones). */
function statement(table: TableInfo, kind: string, text: () => string): Statement {
  let byKind = statements.get(table);
  if (byKind === undefined) {
    byKind = new Map();
    statements.set(table, byKind);
  }
  let made = byKind.get(kind);
  if (made === undefined) {
    const body = text();
    // Named by its text: a table whose shape changed gets a new statement, never an old plan's columns.
    const name = `qsync_apply_${createHash('sha256').update(body).digest('hex').slice(0, 24)}`;
    made = { name, prepare: `PREPARE ${name} (jsonb) AS ${body}` };
    byKind.set(kind, made);
  }
  return made;
}

function keyList(table: TableInfo, alias = ''): string {
  return table.keyColumns.map((k) => `${alias}${k}`).join(', ');
}

function onConflict(table: TableInfo): string {
  const others = table.columns.filter((c) => !table.keyColumns.includes(c));
  return `ON CONFLICT (${keyList(table)}) ${others.length === 0 ? 'DO NOTHING' : `DO UPDATE SET ${others.map((c) => `${c} = excluded.${c}`).join(', ')}`}`;
}

/** Upsert the row images `source` (SQL of a jsonb array) yields. */
function upsertFrom(table: TableInfo, source: string): string {
  const columns = table.columns.join(', ');
  return `INSERT INTO ${table.name} (${columns}) OVERRIDING SYSTEM VALUE
    SELECT ${columns} FROM jsonb_populate_recordset(NULL::${table.name}, ${source})
    ${onConflict(table)}`;
}

/** Key columns of the images in `jsonb` (SQL of a jsonb array). */
function keysOf(table: TableInfo, jsonb: string): string {
  return `SELECT ${keyList(table)} FROM jsonb_populate_recordset(NULL::${table.name}, ${jsonb})`;
}

/** $1: the row images of one change (a JSON array). */
function upsert(table: TableInfo): Statement {
  return statement(table, 'upsert', () => upsertFrom(table, '$1'));
}

/** $1: the row images of several changes (a JSON array of their JSON texts): per key the last image, as in order. */
function mergedUpsert(table: TableInfo): Statement {
  return statement(table, 'merged', () => {
    const columns = table.columns.join(', ');
    return `INSERT INTO ${table.name} (${columns}) OVERRIDING SYSTEM VALUE
    SELECT ${columns} FROM (
      SELECT DISTINCT ON (${keyList(table, 'k.')}) k.* FROM (
        SELECT p.*, a.n AS qsync_n, e.i AS qsync_i
          FROM jsonb_array_elements($1) WITH ORDINALITY AS a(images, n),
               jsonb_array_elements((a.images #>> '{}')::jsonb) WITH ORDINALITY AS e(value, i),
               LATERAL jsonb_populate_record(NULL::${table.name}, e.value) AS p
      ) k ORDER BY ${keyList(table, 'k.')}, k.qsync_n DESC, k.qsync_i DESC
    ) last
    ${onConflict(table)}`;
  });
}

/** $1: key images (a JSON array). */
function remove(table: TableInfo): Statement {
  return statement(table, 'delete', () => `DELETE FROM ${table.name} WHERE (${keyList(table)}) IN (${keysOf(table, '$1')})`);
}

/** $1: [old keys, new images] of an update: deletes the keys it moved away from. */
function removeMoved(table: TableInfo): Statement {
  return statement(table, 'moved', () => `DELETE FROM ${table.name} WHERE (${keyList(table)}) IN (
    ${keysOf(table, "(($1->>0)::jsonb)")} EXCEPT ${keysOf(table, "(($1->>1)::jsonb)")})`);
}

// Last-writer-wins for a run of changes to one async table, in journal order,
// as one statement: for each key the image of the highest version (time, then
// replica; among a TXN's own changes, its last) is written if that version is
// at least the key's latest committed one, and becomes the key's version; an
// entry that a version before it outranked is recorded as lost, as applying
// the changes one by one would. The version upsert is conditional, so
// PostgreSQL judges each key against its latest committed version, waiting for
// a local writer that holds it: a judgement from this statement's snapshot
// alone could let an older write overwrite a newer one that was still
// uncommitted. A version equal to the key's is this very TXN (a replica's
// hybrid time never repeats), so its later change to a key applies over its
// earlier one. Versions are compared as time * 32 + replica (replicas are 1 to
// 31). An update's keys that it moved away from are judged as deletes, before
// its images: only those (judging a key that stayed would bump its version,
// and the image would then lose to it). Each key's held version is looked up
// by its own index probe (LATERAL, LIMIT 1 so that the planner keeps it one):
// a join read every version of the table for each batch.
//
// $1: a JSON array of [op, version, row images as JSON text, old keys as JSON text or null].
function lww(table: TableInfo): Statement {
  return statement(table, 'lww', () => {
    const name = `'${table.name.replaceAll("'", "''")}'`;
    const keyNames = `ARRAY[${table.keyNames.map((k) => `'${k.replaceAll("'", "''")}'`).join(', ')}]::text[]`;
    const winners = (deletes: boolean): string => `(SELECT coalesce(jsonb_agg(img), '[]') FROM judged WHERE wins AND rank = 1 AND ${deletes ? "op = 'delete'" : "op <> 'delete'"})`;
    // Named qsync_moved.*, never by a short alias: an alias that matches a column name (say k) would make
    // to_jsonb(k) take that column instead of the row.
    return `WITH changes AS (
  SELECT x.n, x.c->>0 AS op, (x.c->>1)::bigint AS version, (x.c->>2)::jsonb AS rows, (x.c->>3)::jsonb AS old_keys
    FROM jsonb_array_elements($1) WITH ORDINALITY AS x(c, n)
), entries AS (
  SELECT c.n, 0 AS part, 'delete' AS op, c.version,
         (SELECT coalesce(jsonb_agg(to_jsonb(qsync_moved.*)), '[]') FROM (${keysOf(table, 'c.old_keys')} EXCEPT ${keysOf(table, 'c.rows')}) qsync_moved) AS rows
    FROM changes c WHERE c.op = 'update' AND c.old_keys IS NOT NULL
  UNION ALL
  SELECT c.n, 1, c.op, c.version, c.rows FROM changes c
), incoming AS (
  SELECT c.n, c.part, e.i, c.op, c.version, e.img, qsync.key_of(e.img, ${keyNames}) AS key
    FROM entries c CROSS JOIN LATERAL jsonb_array_elements(c.rows) WITH ORDINALITY AS e(img, i)
), ranked AS (
  SELECT i.op, i.version, i.img, i.key,
         max(i.version) OVER (PARTITION BY i.key ORDER BY i.n, i.part, i.i ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before,
         row_number() OVER (PARTITION BY i.key ORDER BY i.version DESC, i.n DESC, i.part DESC, i.i DESC) AS rank
    FROM incoming i
), won AS (
  INSERT INTO qsync.row_versions (table_name, key, time, replica_id)
  SELECT ${name}, key, version / 32, version % 32 FROM ranked WHERE rank = 1
  ON CONFLICT (table_name, key) DO UPDATE SET time = excluded.time, replica_id = excluded.replica_id
    WHERE (qsync.row_versions.time, qsync.row_versions.replica_id) <= (excluded.time, excluded.replica_id)
  RETURNING key
), judged AS (
  SELECT r.*, r.key IN (SELECT key FROM won) AS wins, coalesce(v.time * 32 + v.replica_id, 0) AS held
    FROM ranked r LEFT JOIN LATERAL (SELECT h.time, h.replica_id FROM qsync.row_versions h WHERE h.table_name = ${name} AND h.key = r.key LIMIT 1) v ON true
), logged AS (
  INSERT INTO qsync.conflicts (table_name, op, key, lost, lost_replica, lost_time, kept_replica, kept_time)
  SELECT ${name}, op, key, img, version % 32, version / 32, kept % 32, kept / 32
    FROM (SELECT j.*, CASE WHEN wins THEN greatest(held, coalesce(before, 0)) ELSE held END AS kept FROM judged j) j
   WHERE NOT wins OR version < greatest(held, coalesce(before, 0))
), removed AS (
  DELETE FROM ${table.name} WHERE (${keyList(table)}) IN (${keysOf(table, winners(true))})
)
${upsertFrom(table, winners(false))}`;
  });
}

/**
 * The changes of a batch (all but copies) as EXECUTEs of prepared
 * statements, in order: a delete; an update that moved keys deletes those
 * first; a run of consecutive upserts into one table is one statement that
 * keeps, per key, the last image (as applying them one after the other
 * would); a run of consecutive async changes to one table is one
 * last-writer-wins statement. take() also says which statements they use.
 */
export class BatchStatements {
  readonly #client: pg.ClientBase;
  #sql = '';
  readonly #used = new Map<string, Statement>();
  #run: { readonly table: TableInfo; readonly images: string[] } | null = null;
  #lww: { readonly table: TableInfo; readonly entries: unknown[] } | null = null;

  constructor(client: pg.ClientBase) {
    this.#client = client;
  }

  /** Add a change of `record` to `table`, applied through last-writer-wins when `lwwApplies`. */
  add(table: TableInfo, record: TxnRecord, change: Change, lwwApplies: boolean): void {
    assert(change.op !== 'copy', 'a copy is not a statement of a batch');
    if (lwwApplies) {
      if (this.#lww?.table !== table) this.#close();
      const version = record.time * 32 + record.replica;
      assert(Number.isSafeInteger(version) && record.replica >= 1 && record.replica <= 31, `version ${record.time}/${record.replica} is out of range`);
      this.#lww ??= { table, entries: [] };
      this.#lww.entries.push([change.op, version, change.rows, change.op === 'update' ? change.oldKeys ?? null : null]);
      return;
    }
    const moves = change.op === 'update' && change.oldKeys !== undefined;
    if (change.op === 'delete' || moves || this.#run?.table !== table) this.#close();
    if (change.op === 'delete') {
      this.#execute(remove(table), change.rows);
      return;
    }
    if (moves) {
      this.#execute(removeMoved(table), JSON.stringify([change.oldKeys, change.rows]));
      this.#execute(upsert(table), change.rows);
      return;
    }
    this.#run ??= { table, images: [] };
    this.#run.images.push(change.rows);
  }

  /** The statements so far as SQL, and the statements they use; the builder starts empty again. */
  take(): { readonly sql: string; readonly uses: readonly Statement[] } {
    this.#close();
    const taken = { sql: this.#sql, uses: [...this.#used.values()] };
    this.#sql = '';
    this.#used.clear();
    return taken;
  }

  #execute(made: Statement, json: string): void {
    this.#used.set(made.name, made);
    this.#sql += `EXECUTE ${made.name}(${this.#client.escapeLiteral(json)}); `;
  }

  #close(): void {
    const run = this.#run;
    const lwwRun = this.#lww;
    this.#run = null;
    this.#lww = null;
    if (lwwRun !== null) this.#execute(lww(lwwRun.table), JSON.stringify(lwwRun.entries));
    if (run === null) return;
    const [only] = run.images;
    if (run.images.length === 1 && only !== undefined) this.#execute(upsert(run.table), only);
    else this.#execute(mergedUpsert(run.table), JSON.stringify(run.images));
  }
}

/**
 * Which statements are prepared on one connection. After a failure it does
 * not know (a PREPARE may have run in a query that failed later) and asks
 * PostgreSQL once before the next batch.
 */
export class PreparedOnConnection {
  #known: Set<string> | null = new Set();

  /** The PREPAREs `uses` needs first, as one query (empty: none). */
  async missing(client: pg.ClientBase, uses: readonly Statement[]): Promise<string> {
    if (uses.length === 0) return '';
    if (this.#known === null) {
      const { rows } = await client.query<{ name: string }>(`SELECT name FROM pg_prepared_statements WHERE starts_with(name, 'qsync_apply_')`);
      this.#known = new Set(rows.map((r) => r.name));
    }
    const known = this.#known;
    return uses.filter((s) => !known.has(s.name)).map((s) => `${s.prepare}; `).join('');
  }

  /** The query that carried `uses` (and their PREPAREs) succeeded. */
  prepared(uses: readonly Statement[]): void {
    for (const s of uses) this.#known?.add(s.name);
  }

  /** A query failed: whether its PREPAREs ran is not known. */
  unsure(): void {
    this.#known = null;
  }
}
