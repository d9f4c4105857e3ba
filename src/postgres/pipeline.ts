// Pipelined queries (docs/rfc/0013-leader-round-trips.md). A client made
// with node-postgres' `pipeline: true` sends a query without waiting for the
// answer to the one before; PostgreSQL still runs them one after another, in
// order, and each has its own Sync, so a failure fails that query (and, in a
// transaction, every later one with "current transaction is aborted"). With
// the cork (cork.ts) the queries of one turn leave in one write: a write's
// BEGIN and its statements cost one round trip instead of one each.
import { createHash } from 'node:crypto';
import type pg from 'pg';

/** Whether the client sends queries before earlier ones are answered. */
export function pipelines(client: pg.ClientBase): boolean {
  return (client as { pipeline?: unknown }).pipeline === true;
}

/**
 * Run queries in order and answer their results in order, or the first
 * failure. On a pipelining client they all leave at once; on another one by
 * one, as before.
 */
export async function queryAll(client: pg.ClientBase, queries: readonly pg.QueryConfig[]): Promise<pg.QueryResult[]> {
  if (!pipelines(client)) {
    const results: pg.QueryResult[] = [];
    for (const query of queries) results.push(await client.query(query));
    return results;
  }
  const sent = queries.map((query) => client.query(query));
  // Every promise gets a handler at once: the failures after the first are its consequence.
  const settled = await Promise.allSettled(sent);
  return settled.map((s) => {
    if (s.status === 'rejected') throw s.reason;
    return s.value;
  });
}

/** Client statements one connection keeps parsed (statementName); past this, the rest run unnamed. */
export const STATEMENTS_KEPT_MAX = 32;
const kept = new WeakMap<pg.ClientBase, Set<string>>();
/** A statement that starts with INSERT, UPDATE or DELETE (one that starts with WITH runs unnamed). */
const CHANGES = /^\s*(insert|update|delete)\s/i;
/**
 * Texts already judged, with their name (null: unnamed), so that a write does
 * not hash its statements again: at most JUDGED_MAX texts of at most
 * JUDGED_TEXT_MAX characters, so that what a client sends cannot swell it.
 */
const judged = new Map<string, string | null>();
const JUDGED_MAX = 1024;
const JUDGED_TEXT_MAX = 4096;

function nameOf(sql: string): string | null {
  const known = judged.get(sql);
  if (known !== undefined) return known;
  const name = !CHANGES.test(sql) || /\breturning\b/i.test(sql) ? null : `qsync_c_${createHash('sha256').update(sql).digest('base64url').slice(0, 32)}`;
  if (judged.size < JUDGED_MAX && sql.length <= JUDGED_TEXT_MAX) judged.set(sql, name);
  return name;
}

/**
 * A name under which a client's statement is parsed once on this connection
 * and reused, or undefined to run it unnamed (parsed and planned each time).
 * Only a change without RETURNING is named: it answers no rows, so a later
 * schema change cannot alter the shape of its answer, which PostgreSQL
 * refuses for a statement it keeps ("cached plan must not change result
 * type"); it re-plans the rest on its own. At most STATEMENTS_KEPT_MAX a
 * connection, so that a client sending ever new texts cannot swell the
 * server's memory through a pooled session.
 */
export function statementName(client: pg.ClientBase, sql: string): string | undefined {
  const name = nameOf(sql);
  if (name === null) return undefined;
  let names = kept.get(client);
  if (names === undefined) kept.set(client, (names = new Set()));
  if (names.has(name)) return name;
  if (names.size >= STATEMENTS_KEPT_MAX) return undefined;
  names.add(name);
  return name;
}

/** SQLSTATE of a statement name the server does not know: the connection's kept statements were dropped. */
const STATEMENT_UNKNOWN = '26000';

/**
 * Whether a failure says the connection lost the statements it kept (its own
 * and capture's): a client ran DEALLOCATE, which no transaction undoes. The
 * driver still believes them parsed, so every later use on that connection
 * would fail too: it must be closed, not given to the next write.
 */
export function keptStatementsLost(error: unknown): boolean {
  return (error as { code?: unknown } | null)?.code === STATEMENT_UNKNOWN;
}
