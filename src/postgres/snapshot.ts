// Snapshots for a rejoin (docs/rfc/0009-retention-and-rejoin.md): a node
// whose peers removed the journal records it lacks takes a peer's replicated
// tables whole instead.
//
// The source reads them in one REPEATABLE READ transaction: the replicated
// tables' rows, and with them qsync's own state that must agree with those
// rows (the applied lsns, the async tables' row versions, the idempotency
// keys). The rejoining node checks its tables' shapes against the source's,
// sets the same modes, and replaces all of it in one transaction; its local
// tables are not touched.
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import { QsyncError } from '../core/errors.js';
import type { SnapshotTable } from '../core/messages.js';
import type { TableMode } from '../core/record.js';
import { copyChunks, describeTable, setTableMode, shapeMismatch, TableError } from './tables.js';

export type { SnapshotTable };

/** A chunk of one table's rows: COPY text lines of `columns` (as the initial copy sends them, RFC 0008). */
export interface SnapshotPart {
  readonly table: string;
  readonly columns: readonly string[];
  readonly rows: string;
  readonly count: number;
}

/** qsync's tables that travel with the rows; qsync.applied first (the rejoining node reads it back). */
const STATE_TABLES = ['qsync.applied', 'qsync.row_versions', 'qsync.idempotency'] as const;

/**
 * The source side, on a connection of its own: the replicated tables and
 * their shapes, then every chunk, all from one snapshot. The transaction
 * begins when the tables are read: what the caller must hold before that
 * (its journal cursor) it opens before calling.
 */
export async function readSnapshot(client: pg.ClientBase): Promise<{ tables: SnapshotTable[]; parts: AsyncGenerator<SnapshotPart> }> {
  await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  try {
    const { rows } = await client.query<{ table_name: string; mode: Exclude<TableMode, 'local'> }>('SELECT table_name, mode FROM qsync.tables ORDER BY table_name');
    const tables: SnapshotTable[] = [];
    for (const row of rows) tables.push({ name: row.table_name, mode: row.mode, shape: (await describeTable(client, row.table_name)).shape });
    return { tables, parts: chunks(client, [...tables.map((t) => t.name), ...STATE_TABLES]) };
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
}

async function* chunks(client: pg.ClientBase, tables: readonly string[]): AsyncGenerator<SnapshotPart> {
  try {
    for (const table of tables) {
      const { columns } = await describeTable(client, table);
      for await (const chunk of copyChunks(client, `COPY ${table} (${columns.join(', ')}) TO STDOUT`)) yield { table, columns, ...chunk };
    }
    await client.query('COMMIT');
  } finally {
    // Ended early (the subscriber went away): the snapshot's transaction goes.
    await client.query('ROLLBACK').catch(() => undefined);
  }
}

export interface SnapshotLoad {
  part(part: SnapshotPart): Promise<void>;
  /** Commit the whole load; returns the rows of replicated tables it loaded. */
  commit(): Promise<number>;
  abort(): Promise<void>;
}

/** An identifier as quote_ident writes it, and a type as format_type does: what a peer's shape may carry into SQL. */
const IDENT = /^(?:[a-z_][a-z0-9_$]*|"(?:[^"]|"")+")$/;
const QUALIFIED = /^(?:[a-z_][a-z0-9_$]*|"(?:[^"]|"")+")\.(?:[a-z_][a-z0-9_$]*|"(?:[^"]|"")+")$/;
const TYPE = /^[A-Za-z_][A-Za-z0-9_ .,()"[\]]*$/;

/**
 * A table the snapshot announces and this node lacks (a node joining):
 * created with the peer's columns, types and primary key. Defaults,
 * constraints and indexes are not part of a shape: create the tables before
 * joining to have them.
 */
async function createMissing(client: pg.ClientBase, table: SnapshotTable): Promise<void> {
  const { rows } = await client.query<{ found: boolean }>('SELECT to_regclass($1) IS NOT NULL AS found', [table.name]);
  if (rows[0]?.found === true) return;
  const { columns, key } = table.shape;
  const safe = QUALIFIED.test(table.name) && columns.length > 0 && columns.every(([c, t]) => IDENT.test(c) && TYPE.test(t) && !t.includes('--')) && key.length > 0 && key.every((k) => IDENT.test(k));
  if (!safe) throw new TableError(table.name, 'it does not exist here, and the peer\'s description of it cannot be made into a CREATE TABLE safely; create it as on the peer');
  const schema = table.name.slice(0, table.name.search(/\.(?=(?:[a-z_][a-z0-9_$]*|"(?:[^"]|"")+")$)/));
  await client.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
  await client.query(`CREATE TABLE ${table.name} (${columns.map(([c, t]) => `${c} ${t}`).join(', ')}, PRIMARY KEY (${key.join(', ')}))`);
}

/**
 * The rejoining side, on `client` (a connection of its own): check each
 * table against the source's shape (a difference names the column), set the
 * source's modes (a table replicated here but not there becomes local, its
 * rows kept), then in one transaction empty the replicated tables and qsync's
 * state and take the source's. Prepared transactions must be gone first:
 * they hold locks on the rows.
 */
export async function loadSnapshot(client: pg.ClientBase, tables: readonly SnapshotTable[]): Promise<SnapshotLoad> {
  // The peer's names, resolved here: only this node's canonical names (format('%I.%I')) go into SQL.
  const canonical = new Map<string, string>(STATE_TABLES.map((t) => [t, t]));
  const columnsOf = new Map<string, readonly string[]>();
  for (const table of tables) {
    await createMissing(client, table);
    const here = await describeTable(client, table.name).catch((error: unknown) => {
      throw error instanceof TableError ? new TableError(table.name, `the rejoin needs it here as on the peer: ${error.message}`) : error;
    });
    const mismatch = shapeMismatch(here.shape, table.shape);
    if (mismatch !== null) throw new TableError(here.name, `its columns differ from the peer's it rejoins from: ${mismatch.replace('on the leader', 'on the peer')}`);
    canonical.set(table.name, here.name);
    columnsOf.set(here.name, here.columns);
  }
  const { rows: replicated } = await client.query<{ table_name: string }>('SELECT table_name FROM qsync.tables');
  const kept = new Set(canonical.values());
  for (const { table_name: name } of replicated) if (!kept.has(name)) await setTableMode(client, name, 'local');
  for (const table of tables) await setTableMode(client, table.name, table.mode, { expect: table.shape });

  // The columns COPY may name here (generated ones are not), by the peer's name of the table.
  const targets = new Map<string, { readonly name: string; readonly columns: ReadonlySet<string> }>();
  for (const [announced, name] of canonical) targets.set(announced, { name, columns: new Set(columnsOf.get(name) ?? (await describeTable(client, name)).columns) });
  await client.query('BEGIN');
  let loaded = 0;
  try {
    await client.query('SET LOCAL session_replication_role = replica');
    for (const name of kept) await client.query(`DELETE FROM ${name}`);
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
  return {
    async part(part) {
      const target = targets.get(part.table);
      if (target === undefined) throw new QsyncError('BAD_REQUEST', `the snapshot sent rows of ${part.table}, which is not one of the tables it announced`);
      const unknown = part.columns.find((c) => !target.columns.has(c));
      if (unknown !== undefined || part.columns.length === 0) throw new TableError(target.name, `the snapshot's rows carry column ${unknown ?? '(none)'}, which it lacks here`);
      // The tables were emptied above: COPY straight in (only names this node resolved go into SQL).
      await pipeline(Readable.from([part.rows]), client.query(copyFrom(`COPY ${target.name} (${part.columns.join(', ')}) FROM STDIN`)));
      if (!(STATE_TABLES as readonly string[]).includes(part.table)) loaded += part.count;
    },
    async commit() {
      await client.query('COMMIT');
      return loaded;
    },
    async abort() {
      await client.query('ROLLBACK').catch(() => undefined);
    },
  };
}
