// Table modes: local (no triggers), async (capture), sync (capture + fence).
//
// Setting a mode checks that qsync can replicate the table: a plain,
// permanent, non-partitioned table with a primary key whose columns all
// survive a round trip through jsonb. Each refusal names the table and the fix.
import { StringDecoder } from 'node:string_decoder';
import type pg from 'pg';
import { to as copyTo } from 'pg-copy-streams';
import { assert } from '../core/assert.js';
import { QsyncError } from '../core/errors.js';
import type { TableMode, TableShape } from '../core/record.js';
import type { Lsn } from '../core/types.js';

export class TableError extends QsyncError<'PG_TABLE'> {
  constructor(table: string, reason: string) {
    super('PG_TABLE', `qsync cannot replicate table ${table}: ${reason}`, { table, reason });
  }
}

export interface TableInfo {
  /** format('%I.%I', schema, table): safe to put into SQL as is. */
  readonly name: string;
  /** Primary-key columns, quoted for SQL. */
  readonly keyColumns: readonly string[];
  /** Primary-key columns as jsonb row images name them. */
  readonly keyNames: readonly string[];
  /** Columns an INSERT may name (not generated, not dropped), quoted. */
  readonly columns: readonly string[];
  /** Every column and its type, and the key: what must be the same on every node. */
  readonly shape: TableShape;
  /** Every column as a row image (to_jsonb) names it, generated ones included. */
  readonly imageNames: ReadonlySet<string>;
  readonly mode: TableMode;
}

/**
 * Types whose jsonb form does not come back as the same value on another node:
 * money follows lc_monetary, json is normalised by to_jsonb (key order,
 * whitespace, duplicate keys), and reg* types are OIDs local to one database.
 */
const UNSAFE_TYPES: Readonly<Record<string, string>> = {
  money: 'money is formatted by the lc_monetary setting; use numeric',
  json: 'json loses key order and whitespace in jsonb; use jsonb or text',
};

const TRIGGERS = ['qsync_capture_insert', 'qsync_capture_update', 'qsync_capture_delete', 'qsync_refuse_truncate', 'qsync_fence'];

type Described = Omit<TableInfo, 'mode'>;

/** Resolve and check a table; throws TableError naming the reason. */
export async function describeTable(client: pg.ClientBase, table: string): Promise<Described> {
  const { rows } = await client.query<{ oid: number; name: string; relkind: string; relpersistence: string }>(
    `SELECT c.oid, format('%I.%I', n.nspname, c.relname) AS name, c.relkind, c.relpersistence
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)`, [table]);
  const rel = rows[0];
  if (rel === undefined) throw new TableError(table, 'it does not exist (check the name and the search_path, or qualify it as schema.table)');
  if (rel.relkind === 'p') throw new TableError(rel.name, 'it is partitioned; mark each partition instead');
  if (rel.relkind !== 'r') throw new TableError(rel.name, 'it is not a plain table (views, foreign tables and sequences are not replicated)');
  if (rel.relpersistence === 't') throw new TableError(rel.name, 'it is temporary; temporary tables cannot take part in a prepared transaction');
  if (rel.relpersistence === 'u') throw new TableError(rel.name, 'it is unlogged, so a crash empties it; ALTER TABLE ... SET LOGGED first');

  const key = await client.query<{ column: string; name: string }>(
    `SELECT quote_ident(a.attname) AS column, a.attname AS name FROM pg_index i
       JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true
       JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
      WHERE i.indrelid = $1 AND i.indisprimary ORDER BY k.ord`, [rel.oid]);
  if (key.rows.length === 0) throw new TableError(rel.name, `it has no primary key, and qsync replicates rows by primary key; add one: ALTER TABLE ${rel.name} ADD PRIMARY KEY (...)`);

  const columns = await client.query<{ column: string; name: string; type: string; generated: string; typtype: string; base: string | null }>(
    `SELECT quote_ident(a.attname) AS column, a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type, a.attgenerated AS generated, t.typtype,
            bt.typname AS base
       FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
       LEFT JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype WHEN t.typcategory = 'A' THEN t.typelem ELSE t.oid END
      WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`, [rel.oid]);
  for (const column of columns.rows) {
    const base = column.base ?? column.type;
    const unsafe = UNSAFE_TYPES[base] ?? (base.startsWith('reg') ? `${base} holds OIDs that differ between databases; store the name as text` : undefined);
    if (unsafe !== undefined) throw new TableError(rel.name, `column ${column.column} has type ${column.type}, which does not round-trip through jsonb: ${unsafe}`);
    if (column.typtype === 'p') throw new TableError(rel.name, `column ${column.column} has pseudo-type ${column.type}`);
  }
  return {
    name: rel.name,
    keyColumns: key.rows.map((r) => r.column),
    keyNames: key.rows.map((r) => r.name),
    columns: columns.rows.filter((c) => c.generated === '').map((c) => c.column),
    shape: { columns: columns.rows.map((c) => [c.column, c.type] as [string, string]), key: key.rows.map((r) => r.column) },
    imageNames: new Set(columns.rows.map((c) => c.name)),
  };
}

/** How this node's table differs from the shape the leader sent, naming the column; null when they agree. */
export function shapeMismatch(local: TableShape, source: TableShape): string | null {
  const here = new Map(local.columns);
  const there = new Map(source.columns);
  for (const [column, type] of source.columns) {
    const mine = here.get(column);
    if (mine === undefined) return `column ${column} (${type}) is missing here; ALTER TABLE ... ADD COLUMN ${column} ${type}`;
    if (mine !== type) return `column ${column} is ${mine} here but ${type} on the leader`;
  }
  for (const [column] of local.columns) if (!there.has(column)) return `column ${column} exists here but not on the leader`;
  if (local.key.join(',') !== source.key.join(',')) return `the primary key is (${local.key.join(', ')}) here but (${source.key.join(', ')}) on the leader`;
  return null;
}

/** A chunk of a table's existing rows, copied through the journal as a TXN at `lsn`. */
export interface CopiedChunk {
  readonly lsn: Lsn;
  readonly gid: string;
  /** COPY text lines of `columns`, each ending in a newline. */
  readonly rows: string;
  readonly columns: readonly string[];
  readonly count: number;
}

export interface TableModeChange {
  readonly name: string;
  readonly shape: TableShape;
  /** On the leader: the CONFIG record's lsn, reserved once the triggers' lock was held. */
  readonly lsn: Lsn | null;
  /** The rows the table held when it became replicated (leader only, from local to async or sync). */
  readonly copied: readonly CopiedChunk[];
}

export interface TableModeOptions {
  /** On a node applying the leader's CONFIG: the table must have this shape. */
  readonly expect?: TableShape;
  /**
   * On the leader: `reserve` gives the CONFIG record's lsn once the new
   * triggers' lock is held (see runDdl: what it waited for comes first), then
   * one lsn per chunk of the rows the table held, when it becomes replicated,
   * read while that lock keeps writers out and marked applied here.
   */
  readonly leader?: { readonly replica: number; readonly reserve: () => { lsn: Lsn; gid: string } };
}

/** A chunk of rows ends at this many rows or bytes, whichever comes first (a journal frame holds 16 MB). */
const CHUNK_ROWS = 50_000;
const CHUNK_BYTES = 4 * 1024 * 1024;

/**
 * Set a table's mode in one transaction: check the table (and its shape
 * against the leader's), replace qsync's triggers, record the mode, and on
 * the leader copy the rows a table held before it became replicated.
 */
export async function setTableMode(client: pg.ClientBase, table: string, mode: TableMode, options: TableModeOptions = {}): Promise<TableModeChange> {
  await client.query('BEGIN');
  try {
    const info = mode === 'local' ? { ...(await resolveOnly(client, table)), keyNames: [], columns: [], shape: { columns: [], key: [] }, imageNames: new Set<string>() } : await describeTable(client, table);
    if (mode !== 'local' && options.expect !== undefined) {
      const mismatch = shapeMismatch(info.shape, options.expect);
      if (mismatch !== null) throw new TableError(info.name, `its columns differ from the leader's: ${mismatch}`);
    }
    const { rows: before } = await client.query<{ mode: TableMode }>('SELECT mode FROM qsync.tables WHERE table_name = $1', [info.name]);
    for (const trigger of TRIGGERS) await client.query(`DROP TRIGGER IF EXISTS ${trigger} ON ${info.name}`);
    if (mode !== 'local') {
      // Trigger arguments are the key columns, unquoted, as to_jsonb names them.
      const keys = info.keyNames.map((k) => `'${k.replace(/'/g, "''")}'`).join(', ');
      await client.query(`CREATE TRIGGER qsync_capture_insert AFTER INSERT ON ${info.name} REFERENCING NEW TABLE AS qsync_new FOR EACH STATEMENT EXECUTE FUNCTION qsync.capture_insert(${keys})`);
      await client.query(`CREATE TRIGGER qsync_capture_update AFTER UPDATE ON ${info.name} REFERENCING OLD TABLE AS qsync_old NEW TABLE AS qsync_new FOR EACH STATEMENT EXECUTE FUNCTION qsync.capture_update(${keys})`);
      await client.query(`CREATE TRIGGER qsync_capture_delete AFTER DELETE ON ${info.name} REFERENCING OLD TABLE AS qsync_old FOR EACH STATEMENT EXECUTE FUNCTION qsync.capture_delete(${keys})`);
      await client.query(`CREATE TRIGGER qsync_refuse_truncate BEFORE TRUNCATE ON ${info.name} FOR EACH STATEMENT EXECUTE FUNCTION qsync.refuse_truncate()`);
    }
    if (mode === 'sync') {
      await client.query(`CREATE TRIGGER qsync_fence BEFORE INSERT OR UPDATE OR DELETE ON ${info.name} FOR EACH STATEMENT EXECUTE FUNCTION qsync.fence()`);
    }
    if (mode === 'local') {
      await client.query('DELETE FROM qsync.tables WHERE table_name = $1', [info.name]);
    } else {
      await client.query(
        `INSERT INTO qsync.tables (table_name, mode, key_columns) VALUES ($1, $2, $3)
         ON CONFLICT (table_name) DO UPDATE SET mode = excluded.mode, key_columns = excluded.key_columns, changed_at = now()`,
        [info.name, mode, info.keyNames]);
    }
    const lsn = options.leader?.reserve().lsn ?? null;
    const copied = mode !== 'local' && before.length === 0 && options.leader !== undefined ? await copyRows(client, info.name, info.columns, options.leader) : [];
    await client.query('COMMIT');
    return { name: info.name, shape: info.shape, lsn, copied };
  } catch (error) {
    await client.query('ROLLBACK');
    throw error;
  }
}

/**
 * Read a table's rows into chunks, inside the transaction whose CREATE
 * TRIGGER holds the lock that keeps writers out: no write is both in the copy
 * and captured. Each chunk's lsn is marked applied here, so replay on this
 * node never applies it again.
 */
async function copyRows(client: pg.ClientBase, table: string, columns: readonly string[], copy: NonNullable<TableModeOptions['leader']>): Promise<CopiedChunk[]> {
  const chunks: CopiedChunk[] = [];
  for await (const chunk of copyChunks(client, `COPY ${table} (${columns.join(', ')}) TO STDOUT`)) {
    const { lsn, gid } = copy.reserve();
    chunks.push({ lsn, gid, columns, ...chunk });
  }
  if (chunks.length > 0) {
    await client.query('INSERT INTO qsync.applied (replica_id, lsn) SELECT $1, unnest($2::bigint[])', [copy.replica, chunks.map((c) => c.lsn)]);
  }
  return chunks;
}

/**
 * The lines of a COPY ... TO STDOUT in text format, in chunks of whole lines
 * (a line is a row: a newline inside a value is written as \\n). The stream
 * is decoded as UTF-8 across its pieces, which may cut a character.
 */
export async function* copyChunks(client: pg.ClientBase, sql: string): AsyncGenerator<{ readonly rows: string; readonly count: number }> {
  const decoder = new StringDecoder('utf8');
  let lines: string[] = [];
  let bytes = 0;
  let partial = '';
  const take = (): { rows: string; count: number } => {
    const part = { rows: lines.join(''), count: lines.length };
    lines = [];
    bytes = 0;
    return part;
  };
  for await (const data of client.query(copyTo(sql)) as AsyncIterable<Buffer>) {
    const text = partial + decoder.write(data);
    let at = 0;
    for (let next = text.indexOf('\n'); next !== -1; next = text.indexOf('\n', at)) {
      const line = text.slice(at, next + 1);
      if (lines.length >= CHUNK_ROWS || bytes + line.length > CHUNK_BYTES) yield take();
      lines.push(line);
      bytes += line.length;
      at = next + 1;
    }
    partial = text.slice(at);
  }
  assert(partial + decoder.end() === '', 'COPY output ends with a whole line');
  if (lines.length > 0) yield take();
}

/**
 * Run a schema change (`qsync ddl`) in one transaction that also marks
 * (replica, lsn) applied: run again from the journal after a crash, it is
 * skipped. The leader passes `reserve` instead of an lsn: called once the
 * statements hold their locks, so that every transaction the change had to
 * wait for (a prepared one, decided by a CONFIRM) comes before it in the
 * journal; a node applying it in journal order then finds nothing of it left
 * prepared, where it would wait forever for a CONFIRM queued behind it.
 * A failure names the statement's error; the connection stays good.
 */
export async function runDdl(client: pg.ClientBase, sql: string, replica: number, lsn: Lsn | (() => Lsn), role?: string): Promise<{ readonly applied: boolean; readonly lsn: Lsn }> {
  await client.query('BEGIN');
  try {
    if (typeof lsn === 'number') {
      const { rows } = await client.query<{ done: boolean }>('SELECT EXISTS (SELECT 1 FROM qsync.applied WHERE replica_id = $1 AND lsn = $2) AS done', [replica, lsn]);
      if (rows[0]?.done === true) {
        await client.query('ROLLBACK');
        return { applied: false, lsn };
      }
    }
    // As the role that asked (a client library call): PostgreSQL checks its privileges, and what it creates is the role's on every node.
    if (role !== undefined) await client.query(`SET LOCAL ROLE ${client.escapeIdentifier(role)}`);
    await client.query(sql);
    if (role !== undefined) await client.query('RESET ROLE');
    const at = typeof lsn === 'number' ? lsn : lsn();
    await client.query('INSERT INTO qsync.applied (replica_id, lsn) VALUES ($1, $2)', [replica, at]);
    await client.query('COMMIT');
    return { applied: true, lsn: at };
  } catch (error) {
    await client.query('ROLLBACK');
    throw new QsyncError('PG_ERROR', `the schema change failed: ${(error as Error).message}`, { sqlstate: (error as { code?: string }).code }, { cause: error });
  }
}

async function resolveOnly(client: pg.ClientBase, table: string): Promise<{ name: string }> {
  const { rows } = await client.query<{ name: string }>(`SELECT format('%I.%I', n.nspname, c.relname) AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)`, [table]);
  if (rows[0] === undefined) throw new TableError(table, 'it does not exist');
  return rows[0];
}

/** Replicated tables with what apply needs, keyed by canonical name. */
export async function loadTables(client: pg.ClientBase): Promise<Map<string, TableInfo>> {
  const { rows } = await client.query<{ table_name: string; mode: TableMode }>('SELECT table_name, mode FROM qsync.tables');
  const tables = new Map<string, TableInfo>();
  for (const row of rows) {
    const described = await describeTable(client, row.table_name);
    tables.set(row.table_name, { ...described, mode: row.mode });
  }
  return tables;
}
