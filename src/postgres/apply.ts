// Apply a TXN record to PostgreSQL: one transaction with
// session_replication_role = replica (so capture and fence triggers stay
// quiet), one set-based statement per table and operation (prepared once
// per connection: apply-sql.ts), the applied (replica, lsn) written in the
// same transaction, ending in COMMIT or in PREPARE TRANSACTION (the limbo).
//
// Exactly once: a record whose lsn is covered by the applied vclock, or whose
// gid is already prepared, is skipped. Async changes go through
// last-writer-wins by (hybrid time, replica id); a losing row is skipped on
// this node and recorded in qsync.conflicts.
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import { assert } from '../core/assert.js';
import { QsyncError } from '../core/errors.js';
import { judgedByLww } from '../core/lww.js';
import type { Change, TxnRecord } from '../core/record.js';
import type { Lsn, ReplicaId } from '../core/types.js';
import { vclockEntries, vclockFromEntries, vclockGet, type VClock } from '../core/vclock.js';
import { BatchStatements, PreparedOnConnection } from './apply-sql.js';
import { loadTables, type TableInfo } from './tables.js';

export class ApplyError extends QsyncError<'PG_APPLY'> {
  constructor(message: string, context: Record<string, unknown>, options?: { cause?: unknown }) {
    super('PG_APPLY', message, context, options);
  }
}

export type ApplyOutcome = 'applied' | 'prepared' | 'skipped';

export class Applier {
  readonly #client: pg.ClientBase;
  #tables: Map<string, TableInfo>;
  /** The statements prepared on the connection (apply-sql.ts). */
  readonly #prepared = new PreparedOnConnection();

  private constructor(client: pg.ClientBase, tables: Map<string, TableInfo>) {
    this.#client = client;
    this.#tables = tables;
  }

  /**
   * An applier on a dedicated connection; reload() after table modes change.
   * The connection stays a replica session (capture and fence triggers
   * quiet): each batch still says so with SET LOCAL, but a change of
   * session_replication_role empties PostgreSQL's plan cache, so switching
   * it per transaction made every statement be planned again (RFC 0022).
   */
  static async create(client: pg.ClientBase): Promise<Applier> {
    await client.query('SET session_replication_role = replica');
    return new Applier(client, await loadTables(client));
  }

  async reload(): Promise<void> {
    this.#tables = await loadTables(this.#client);
  }

  /** The applier's connection (the node watches it for failures). */
  get client(): pg.ClientBase {
    return this.#client;
  }

  async close(): Promise<void> {
    await (this.#client as pg.Client).end();
  }

  /**
   * Apply one TXN: commit it, or with `prepare` leave it prepared under its
   * gid. Three round trips for a one-change record: a follower applies in
   * journal order, one record at a time, so its round trips bound the
   * cluster's sync throughput. Values inlined into the batched statements are
   * validated integers and escaped literals.
   */
  async apply(record: TxnRecord, options: { prepare: boolean; exact?: boolean }): Promise<ApplyOutcome> {
    const client = this.#client;
    assert(Number.isSafeInteger(record.replica) && Number.isSafeInteger(record.lsn), 'record header is not integers');
    const gid = client.escapeLiteral(record.gid);
    // The record is in the journal before it is acknowledged, and its applied marker commits
    // with it: if PostgreSQL loses an asynchronous commit in a crash, it loses both, and the
    // sidecar applies the record again (at its start, or when PostgreSQL comes back: RFC 0007).
    // So a plain commit need not wait for its own WAL flush.
    // PREPARE always flushes: it is the limbo.
    const head = `BEGIN; SET LOCAL session_replication_role = replica;${options.prepare ? '' : ' SET LOCAL synchronous_commit = off;'}
      SELECT ${options.exact === true
    // A revived entry, or a write of this node whose COMMIT failed, lies below later applied ones: only this very lsn counts.
    ? `EXISTS (SELECT 1 FROM qsync.applied WHERE replica_id = ${record.replica} AND lsn = ${record.lsn})`
    : `coalesce((SELECT max(lsn) FROM qsync.applied WHERE replica_id = ${record.replica}), 0) >= ${record.lsn}`}
          OR EXISTS (SELECT 1 FROM pg_prepared_xacts WHERE gid = ${gid} AND database = current_database()) AS skip`;
    try {
      const results = (await client.query(head)) as unknown as Array<{ rows: Array<{ skip: boolean }> }>;
      if (results.at(-1)?.rows[0]?.skip === true) {
        await client.query('ROLLBACK');
        return 'skipped';
      }
      for (const [index, change] of record.changes.entries()) await this.#applyChange(record, change, index);
      const key = record.idempotencyKey === null ? '' : `INSERT INTO qsync.idempotency (key, replica_id, lsn) VALUES (${client.escapeLiteral(record.idempotencyKey)}, ${record.replica}, ${record.lsn}) ON CONFLICT (key) DO NOTHING; `;
      await client.query(`${key}INSERT INTO qsync.applied (replica_id, lsn) VALUES (${record.replica}, ${record.lsn}); ${options.prepare ? `PREPARE TRANSACTION ${gid}` : 'COMMIT'}`);
      return options.prepare ? 'prepared' : 'applied';
    } catch (error) {
      await client.query('ROLLBACK');
      if (error instanceof ApplyError) throw error;
      const pgError = error as { code?: string; message?: string };
      throw new ApplyError(`applying ${record.replica}:${record.lsn} failed: ${pgError.message ?? String(error)}`,
        { replica: record.replica, lsn: record.lsn, sqlstate: pgError.code }, { cause: error });
    }
  }

  /**
   * Apply TXNs in journal order in one transaction that commits without
   * waiting for its WAL flush (the journal repairs a lost tail: RFC 0007),
   * each with its applied mark, so the rows and the marks of the whole batch
   * commit or vanish together. Two round trips when every change is an
   * upsert or delete, last-writer-wins ones included (the statements go as
   * one simple query of EXECUTEs); copies add theirs. Skips each record already
   * applied: by its own lsn when at or below `exactTo`, else by the highest.
   * Unless `checked`, records above `exactTo` are taken as not applied yet
   * (the apply queue's first attempt) and the whole batch is one round trip;
   * one applied after all fails it on its mark's primary key.
   * Throws on any failure with nothing applied: the caller retries, or
   * applies the records one by one to find the one that fails.
   */
  async applyBatch(records: readonly TxnRecord[], exactTo: VClock, checked = true): Promise<number> {
    const client = this.#client;
    if (records.length === 0) return 0;
    for (const r of records) assert(Number.isSafeInteger(r.replica) && Number.isSafeInteger(r.lsn), 'record header is not integers');
    const replicas = [...new Set(records.map((r) => r.replica))];
    const exact = records.filter((r) => r.lsn <= vclockGet(exactTo, r.replica));
    const begin = 'BEGIN; SET LOCAL session_replication_role = replica; SET LOCAL synchronous_commit = off; ';
    const head = `${begin}
      SELECT replica_id, max(lsn)::text AS lsn FROM qsync.applied WHERE replica_id IN (${replicas.join(', ')}) GROUP BY replica_id;
      SELECT replica_id, lsn::text AS lsn FROM qsync.applied WHERE ${exact.length === 0 ? 'false' : `(replica_id, lsn) IN (${exact.map((r) => `(${r.replica}, ${r.lsn})`).join(', ')})`};
      SELECT gid FROM pg_prepared_xacts WHERE database = current_database() AND gid IN (${records.map((r) => client.escapeLiteral(r.gid)).join(', ')})`;
    let opened = false;
    try {
      let fresh = records;
      if (checked || exact.length > 0) {
        const results = (await client.query(head)) as unknown as Array<{ rows: Array<Record<string, string | number>> }>;
        opened = true;
        const [highest, exactHeld, prepared] = results.slice(-3).map((r) => r.rows);
        const top = new Map((highest ?? []).map((row) => [Number(row.replica_id), Number(row.lsn)]));
        const held = new Set((exactHeld ?? []).map((row) => `${row.replica_id}:${row.lsn}`));
        const preparedGids = new Set((prepared ?? []).map((row) => String(row.gid)));
        fresh = records.filter((r) => !preparedGids.has(r.gid) && (r.lsn <= vclockGet(exactTo, r.replica) ? !held.has(`${r.replica}:${r.lsn}`) : r.lsn > (top.get(r.replica) ?? 0)));
      }
      // What goes first: the BEGIN of a batch not opened by its checks.
      let prefix = opened ? '' : begin;
      const statements = new BatchStatements(client);
      for (const record of fresh) {
        for (const [index, change] of record.changes.entries()) {
          const table = await this.#tableFor(record, change, index);
          if (change.op !== 'copy') {
            statements.add(table, record, change, judgedByLww(table.mode, record.sync));
            continue;
          }
          await this.#send(prefix, statements.take(), '');
          prefix = '';
          await this.#applyChange(record, change, index);
        }
      }
      let marks = '';
      const keyed = fresh.filter((r) => r.idempotencyKey !== null);
      if (keyed.length > 0) marks += `INSERT INTO qsync.idempotency (key, replica_id, lsn) VALUES ${keyed.map((r) => `(${client.escapeLiteral(r.idempotencyKey as string)}, ${r.replica}, ${r.lsn})`).join(', ')} ON CONFLICT (key) DO NOTHING; `;
      if (fresh.length > 0) marks += `INSERT INTO qsync.applied (replica_id, lsn) VALUES ${fresh.map((r) => `(${r.replica}, ${r.lsn})`).join(', ')}; `;
      await this.#send(prefix, statements.take(), `${marks}COMMIT`);
      return fresh.length;
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      if (error instanceof ApplyError) throw error;
      const pgError = error as { code?: string; message?: string };
      const first = records[0] as TxnRecord;
      throw new ApplyError(`applying ${records.length} records from ${first.replica}:${first.lsn} failed: ${pgError.message ?? String(error)}`,
        { replica: first.replica, lsn: first.lsn, records: records.length, sqlstate: pgError.code }, { cause: error });
    }
  }

  /**
   * Why this node could not apply `record`, from the tables it knows (null:
   * it can): a table not replicated here, or row images with a column the
   * table lacks. Checked when a record arrives, before it is acknowledged:
   * a node that acknowledged what it cannot apply would count in a quorum and
   * could then win an election it cannot complete (RFC 0012).
   */
  unfit(record: TxnRecord): string | null {
    for (const change of record.changes) {
      const table = this.#tables.get(change.table);
      if (table === undefined) return `${change.table} is not replicated on this node; create it and run: qsync table ${record.sync ? 'sync' : 'async'} ${change.table}`;
      const unknown = unknownColumns(change, table);
      if (unknown.length > 0) return `the rows from node ${record.replica} carry column ${unknown.join(', ')}, which ${table.name} lacks here: make the table the same here (ALTER TABLE ${table.name} ADD COLUMN ...)`;
    }
    return null;
  }

  /** The table a change is for, or ApplyError saying why it cannot be applied here. */
  async #tableFor(record: TxnRecord, change: Change, index: number): Promise<TableInfo> {
    let table = this.#tables.get(change.table);
    if (table === undefined) {
      throw new ApplyError(`applying ${record.replica}:${record.lsn} failed: change ${index} is for ${change.table}, which is not replicated on this node; create it and run: qsync table ${record.sync ? 'sync' : 'async'} ${change.table}`,
        { replica: record.replica, lsn: record.lsn, table: change.table });
    }
    if (unknownColumns(change, table).length > 0) {
      // The operator may have fixed the table since the last try: look again before refusing.
      this.#tables = await loadTables(this.#client);
      table = this.#tables.get(change.table) ?? table;
      const unknown = unknownColumns(change, table);
      if (unknown.length > 0) {
        throw new ApplyError(`applying ${record.replica}:${record.lsn} failed: the rows from node ${record.replica} carry column ${unknown.join(', ')}, which ${table.name} lacks here, so their values would be lost: the table was changed outside qsync (a plain ALTER TABLE on one node). Make it the same here (ALTER TABLE ${table.name} ADD COLUMN ...), and change replicated tables with qsync ddl from now on`,
          { replica: record.replica, lsn: record.lsn, table: table.name, columns: unknown });
      }
    }
    return table;
  }

  async #applyChange(record: TxnRecord, change: Change, index: number): Promise<void> {
    const table = await this.#tableFor(record, change, index);
    const lww = judgedByLww(table.mode, record.sync);
    if (change.op === 'copy') {
      const rows = await this.#copyIn(table, change, lww);
      if (rows !== null) await this.#applyChange(record, { table: change.table, op: 'insert', rows }, index);
      return;
    }
    const statements = new BatchStatements(this.#client);
    statements.add(table, record, change, lww);
    await this.#send('', statements.take(), '');
  }

  /**
   * One simple query: `prefix`, the PREPAREs the statements need on this
   * connection, the statements, then `suffix`. Nothing is sent when all
   * three are empty.
   */
  async #send(prefix: string, taken: ReturnType<BatchStatements['take']>, suffix: string): Promise<void> {
    const prepares = await this.#prepared.missing(this.#client, taken.uses);
    const sql = `${prefix}${prepares}${taken.sql}${suffix}`;
    if (sql === '') return;
    try {
      await this.#client.query(sql);
    } catch (error) {
      this.#prepared.unsure();
      throw error;
    }
    this.#prepared.prepared(taken.uses);
  }

  /**
   * The rows a table held when it became replicated, as COPY text: loaded
   * with COPY straight into the table (three times faster than row images)
   * when none of their keys is here yet, the case the initial copy expects.
   * Otherwise (a key exists here, or an async table, whose rows go through
   * last-writer-wins) they are read back as row images, for the caller to
   * apply as an insert; returns those, or null when loaded.
   */
  async #copyIn(table: TableInfo, change: Change, lww: boolean): Promise<string | null> {
    const client = this.#client;
    const columns = (change.columns ?? []).join(', ');
    if (!lww) {
      await client.query('SAVEPOINT qsync_copy');
      try {
        await pipeline(Readable.from([change.rows]), client.query(copyFrom(`COPY ${table.name} (${columns}) FROM STDIN`)));
        await client.query('RELEASE SAVEPOINT qsync_copy');
        return null;
      } catch (error) {
        if ((error as { code?: string }).code !== UNIQUE_VIOLATION) throw error;
        await client.query('ROLLBACK TO SAVEPOINT qsync_copy');
      }
    }
    // A copy is never prepared (its TXN is async), so a temporary table may take part.
    // A failure rolls the whole transaction back, the temporary table with it.
    await client.query(`CREATE TEMPORARY TABLE qsync_copy_in (LIKE ${table.name}) ON COMMIT DROP`);
    await pipeline(Readable.from([change.rows]), client.query(copyFrom(`COPY qsync_copy_in (${columns}) FROM STDIN`)));
    const { rows } = await client.query<{ rows: string }>(`SELECT coalesce(jsonb_agg(to_jsonb(c)), '[]')::text AS rows FROM qsync_copy_in c`);
    await client.query('DROP TABLE qsync_copy_in');
    return rows[0]?.rows ?? '[]';
  }
}

/**
 * Columns the change's row images carry that the table lacks here: a shape
 * changed outside qsync. Every image of one change comes from the same table
 * on the writer, so the first one tells.
 */
function unknownColumns(change: Change, table: TableInfo): string[] {
  if (change.columns !== undefined) return change.columns.filter((c) => !table.columns.includes(c));
  const rows = change.rows;
  const end = rows.indexOf('}, {');
  let first: unknown = null;
  for (const text of end > 0 ? [`${rows.slice(0, end + 1)}]`, rows] : [rows]) {
    try {
      first = (JSON.parse(text) as unknown[])[0];
      break;
    } catch {
      // Cut inside a value: the whole text; not JSON at all: PostgreSQL says so with its SQLSTATE.
    }
  }
  if (typeof first !== 'object' || first === null || Array.isArray(first)) return [];
  return Object.keys(first).filter((name) => !table.imageNames.has(name));
}

const UNIQUE_VIOLATION = '23505';

/** The lsns of `replica` above `above` in qsync.applied. */
export async function appliedLsns(client: pg.ClientBase, replica: ReplicaId, above: Lsn): Promise<Set<Lsn>> {
  const { rows } = await client.query<{ lsn: string }>('SELECT lsn FROM qsync.applied WHERE replica_id = $1 AND lsn > $2', [replica, above]);
  return new Set(rows.map((r) => Number(r.lsn) as Lsn));
}

/** The vclock of committed applied records. */
export async function appliedVclock(client: pg.ClientBase): Promise<VClock> {
  const { rows } = await client.query<{ replica_id: number; lsn: string }>('SELECT replica_id, max(lsn) AS lsn FROM qsync.applied GROUP BY replica_id');
  return vclockFromEntries(rows.map((r) => [r.replica_id as ReplicaId, Number(r.lsn) as Lsn]));
}

/**
 * Drop applied rows below each replica's highest (at or below `below` only,
 * when given: the journal's start, under which nothing is replayed or checked
 * one by one any more); the vclock stays the same. Returns the rows dropped.
 */
export async function compactApplied(client: pg.ClientBase, below?: VClock): Promise<number> {
  if (below === undefined) {
    const { rowCount } = await client.query(
      'DELETE FROM qsync.applied a USING (SELECT replica_id, max(lsn) AS top FROM qsync.applied GROUP BY replica_id) m WHERE a.replica_id = m.replica_id AND a.lsn < m.top');
    return rowCount ?? 0;
  }
  const floor = vclockEntries(below).filter(([replica]) => replica !== 0);
  if (floor.length === 0) return 0;
  // By primary-key range per replica, each one's highest found by the index: no scan of the whole table.
  const { rowCount } = await client.query(
    `DELETE FROM qsync.applied a USING unnest($1::int[], $2::bigint[]) AS f(replica_id, lsn)
      WHERE a.replica_id = f.replica_id AND a.lsn <= f.lsn
        AND a.lsn < (SELECT max(m.lsn) FROM qsync.applied m WHERE m.replica_id = f.replica_id)`,
    [floor.map(([r]) => r), floor.map(([, l]) => l)]);
  return rowCount ?? 0;
}
